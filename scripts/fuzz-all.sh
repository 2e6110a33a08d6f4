#!/usr/bin/env bash
# Runs every fuzz target in the module for the given time each (default
# 60s), then prints a summary table (target, time, execs, new interesting
# inputs, result) and writes it to fuzz-out/fuzz-report.txt, so that fuzz
# hours can be recorded. Crashers land in the package's testdata/fuzz and
# become regression tests on the next `go test`.
#
#   FUZZ_PARALLEL=1   workers per target (default: go's, one per core)
#   FUZZ_MATCH=regex  only targets whose "pkgdir.Target" name matches
#   FUZZ_MINIMIZE=10s time to minimize each new input (go's default, 60s,
#                     can take a whole short run on a loaded machine)
set -uo pipefail
t=${1:-60s}
cd "$(dirname "$0")/.."
out=fuzz-out
mkdir -p "$out/logs"
report=$out/fuzz-report.txt
rows=$(mktemp)
trap 'rm -f "$rows"' EXIT
par=()
[ -n "${FUZZ_PARALLEL:-}" ] && par=(-parallel="$FUZZ_PARALLEL")
status=0
# Targets are found by source, not `go test -list`: listing would build
# every test binary in the module first.
for file in $(git ls-files '*_test.go' | xargs grep -l '^func Fuzz' | sort); do
  dir=./$(dirname "$file")
  for target in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$file"); do
    name="${dir#./}.$target"
    [[ -n "${FUZZ_MATCH:-}" && ! "$name" =~ $FUZZ_MATCH ]] && continue
    echo "== $name ($t)"
    log="$out/logs/${name//\//_}.log"
    start=$SECONDS
    go test -run=none -fuzz="^${target}\$" -fuzztime="$t" -fuzzminimizetime="${FUZZ_MINIMIZE:-10s}" "${par[@]}" "$dir" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    secs=$((SECONDS - start))
    # The last progress line holds the totals of the run.
    last=$(grep '^fuzz: elapsed:.*execs:' "$log" | tail -1)
    execs=$(sed -n 's/.*execs: \([0-9]*\).*/\1/p' <<<"$last")
    newi=$(sed -n 's/.*new interesting: \([0-9]*\).*/\1/p' <<<"$last")
    result=ok
    if [ "$rc" -ne 0 ]; then
      status=1
      crasher=$(sed -n 's/.*Failing input written to \(testdata\/fuzz\/[^ ]*\).*/\1/p' "$log" | tail -1)
      result="FAIL${crasher:+ $dir/$crasher}"
    fi
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "${secs}s" "${execs:-0}" "${newi:-0}" "$result" >>"$rows"
  done
done
{
  echo "fuzz run $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD), FUZZTIME=$t, $(nproc) cores${FUZZ_PARALLEL:+, parallel $FUZZ_PARALLEL}"
  echo
  printf 'target\ttime\texecs\tnew\tresult\n' | cat - "$rows" | column -t -s $'\t'
  echo
  awk -F'\t' '{n++; s+=$2; e+=$3; if ($5 != "ok") f++}
    END {printf "%d targets, %dm%02ds, %d execs, %d failed\n", n, s/60, s%60, e, f}' "$rows"
} | tee "$report"
echo "report written to $report"
exit $status
