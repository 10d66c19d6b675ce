#!/usr/bin/env bash
# Builds the h5web viewer of the file pages (/files/view/) into frontend/static/vendor/h5web/ (viewer.js,
# viewer.css; served by our own web server, never from a CDN) from the npm packages package-lock.json locks:
# npm ci (integrity checked) into a temporary folder with install scripts off, then esbuild bundles src/viewer.jsx
# (React, @h5web/app and its styles) minified. To move to newer versions: change package.json, run
# `npm install --package-lock-only --ignore-scripts` here, then this script. Needs Node 18+.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="$here/../static/vendor/h5web"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r "$here/package.json" "$here/package-lock.json" "$here/src" "$tmp/"
(cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
rm -rf "$out" && mkdir -p "$out"
(cd "$tmp" && node_modules/.bin/esbuild src/viewer.jsx --bundle --minify --format=iife --target=es2020 \
  --define:process.env.NODE_ENV='"production"' --jsx=automatic --legal-comments=eof --log-level=warning \
  --outfile="$out/viewer.js")
node -e 'const p=require(process.argv[1]); console.log(p.name + " " + p.version)' \
  "$tmp/node_modules/@h5web/app/package.json" > "$out/VERSION"
echo "built $(cat "$out/VERSION") into frontend/static/vendor/h5web: $(du -sh "$out" | cut -f1)"
