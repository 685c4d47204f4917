#!/usr/bin/env bash
# make fuzz: runs every fuzz target of the project for a bounded time each
# (default 20s; make fuzz FUZZTIME=5m). New failing inputs are written to the
# package's testdata/fuzz/<Target>/ and replayed by every later `go test`.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-20s}
status=0
for file in $(grep -rl --include='*_test.go' '^func Fuzz' pkg cmd internal 2>/dev/null); do
	pkg=./$(dirname "$file")
	for name in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$file"); do
		echo "== $pkg $name ($t)"
		if ! go test "$pkg" -run '^$' -fuzz "^${name}\$" -fuzztime "$t"; then
			status=1
		fi
	done
done
exit $status
