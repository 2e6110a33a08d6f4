#!/usr/bin/env bash
# Simulator scale: `epost sim routing` at growing N, with the wall time,
# events/s and peak RSS of each run, and the per-node state and control
# traffic the scenario reports. Writes bench/results/sim-scale-DATE.json,
# .md and .svg (per-node state and control traffic against N, log axis).
#
# Environment: SIZES ("1000 2000 5000 10000 20000 50000"), SEED (1).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-1000 2000 5000 10000 20000 50000}
SEED=${SEED:-1}
DATE=$(date -u +%Y-%m-%d)
RESULTS=bench/results
mkdir -p "$RESULTS"
TMP=$(mktemp -d /tmp/epost-sim-scale.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

if [ ! -x /usr/bin/time ]; then
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q time >/dev/null
fi
go build -o bin/epost ./cmd/epost

OUT=$RESULTS/sim-scale-$DATE
RAW=$TMP/runs.jsonl
: >"$RAW"
for n in $SIZES; do
	echo "sim-scale.sh: routing --nodes $n" >&2
	/usr/bin/time -v -o "$TMP/time-$n" ./bin/epost sim routing --nodes "$n" --seed "$SEED" --json >"$TMP/out-$n"
	python3 - "$TMP/out-$n" "$TMP/time-$n" "$(cut -d' ' -f1 /proc/loadavg)" >>"$RAW" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
for line in open(sys.argv[2]):
    k, _, v = line.strip().rpartition(": ")
    if k == "Maximum resident set size (kbytes)":
        r["peak_rss_kb"] = int(v)
    elif k.startswith("Elapsed (wall clock) time"):
        secs = 0.0
        for part in v.split(":"):
            secs = secs * 60 + float(part)
        r["process_wall_seconds"] = secs
r["load1_after"] = float(sys.argv[3])
print(json.dumps(r))
EOF
	tail -1 "$RAW" >&2
	# After every size, so a long run stopped early keeps what it measured.
	python3 bench/plot-scale.py "$RAW" "$OUT.json" "$OUT.md" "$OUT.svg"
done
cat "$OUT.md"
echo "sim-scale.sh: wrote $OUT.json, $OUT.md and $OUT.svg" >&2
