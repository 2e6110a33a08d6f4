#!/usr/bin/env bash
# Runs every fuzz target in the module for the given time each (default 60s).
set -euo pipefail
t=${1:-60s}
status=0
for pkg in $(go list ./...); do
  for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
    echo "== $pkg $target ($t)"
    if ! go test -run=none -fuzz="^${target}\$" -fuzztime="$t" "$pkg"; then
      status=1
    fi
  done
done
exit $status
