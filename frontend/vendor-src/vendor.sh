#!/usr/bin/env bash
# Copies the browser libraries of package-lock.json into frontend/static/vendor/ (served by our own web server,
# never from a CDN). Installs exactly the locked versions (npm ci, integrity checked) into a temporary folder,
# with install scripts off (swagger-ui-dist's @scarf/scarf would otherwise phone home). To move to a newer
# version: change package.json, run `npm install --package-lock-only --ignore-scripts` here, then this script.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="$here/../static/vendor/swagger-ui"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$here/package.json" "$here/package-lock.json" "$tmp/"
(cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
dist="$tmp/node_modules/swagger-ui-dist"
rm -rf "$out" && mkdir -p "$out"
cp "$dist/swagger-ui-bundle.js" "$dist/swagger-ui.css" "$out/"
cp "$dist/LICENSE" "$out/LICENSE.txt"
node -e 'const p=require(process.argv[1]); console.log(p.name + " " + p.version)' "$dist/package.json" > "$out/VERSION"
# both name their source maps, which are not copied: collectstatic's manifest storage would refuse the missing
# files, and a browser's developer tools would ask for them
sed -i '/^\/\/# sourceMappingURL=/d' "$out/swagger-ui-bundle.js"
sed -i 's#/\*\# sourceMappingURL=[^*]*\*/##' "$out/swagger-ui.css"
echo "copied $(cat "$out/VERSION") into frontend/static/vendor/swagger-ui: $(du -sh "$out" | cut -f1)"
