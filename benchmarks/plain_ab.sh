#!/usr/bin/env bash
# A same-machine A/B of the plain fast engines between two commits' reconstruction/ trees, interleaved
# (A B A B) so a machine's drift shows as spread, not as a difference. From the repository root, on the GPU:
#   AB_OLD=848d1cf~1 AB_ALGS=ePIE bash benchmarks/plain_ab.sh
# The old tree must be unpacked beforehand on this machine (the device has no git history):
#   mkdir -p bisect_tmp/old && git archive "$AB_OLD" reconstruction | tar -x -C bisect_tmp/old
# AB_OLD_TREE names another unpacked tree under bisect_tmp/ (default old).
set -u
OUT=${OUT:-benchmarks/out}; mkdir -p "$OUT"
ALGS=${AB_ALGS:-ePIE}; ITERS=${AB_ITERS:-40}; OLD_TREE=${AB_OLD_TREE:-old}
[ -d "bisect_tmp/$OLD_TREE/reconstruction" ] || { echo "no bisect_tmp/$OLD_TREE/reconstruction"; exit 2; }
rm -rf bisect_tmp/head && mkdir -p bisect_tmp/head && cp -r reconstruction bisect_tmp/head/
use() { rm -rf reconstruction && cp -r "bisect_tmp/$1/reconstruction" reconstruction; }
for round in 1 2; do
  for tree in head "$OLD_TREE"; do
    use "$tree"
    timeout 150 python3 benchmarks/engines.py --device gpu --sizes 256 --algs "$ALGS" --iterations "$ITERS" \
      --peers "" --out "$OUT" --tag "ab_${tree}_$round" > "$OUT/ab_${tree}_$round.log" 2>&1
    python3 - "$OUT/bench_ab_${tree}_$round.json" "$tree" "$round" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
rows = rows.get("results", rows) if isinstance(rows, dict) else rows
for r in rows:
    if r.get("impl") == "ptychopy":
        print(f"AB {sys.argv[2]:4s} round {sys.argv[3]} {r['alg']:5s} {r['ms']:.2f} ms/iteration")
PY
  done
done
use head
