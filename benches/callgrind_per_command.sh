#!/usr/bin/env bash
# Instructions per command on the client thread, by function: a compare/ client under callgrind,
# a run of 2N commands minus a run of N (start-up, warm-up and exit cancel out), divided by N.
#
#   benches/callgrind_per_command.sh [CLIENT] [N] [SCENARIO]
#   benches/callgrind_per_command.sh finwatch-execute 2000 a      # the defaults
#
# Installs valgrind if missing (`.ci/apt-install`). The build is the release one (function names
# only); for lines, build compare with CARGO_PROFILE_RELEASE_DEBUG=line-tables-only into its
# own target dir and point COMPARE at it. Prints the total (the first line) and every function
# of at least 5 instructions per command, the client thread only (callgrind's part -01).
set -euo pipefail
cd "$(dirname "$0")/.."
client=${1:-finwatch-execute}
n=${2:-2000}
scenario=${3:-a}
command -v valgrind >/dev/null || .ci/apt-install valgrind
if [ -z "${COMPARE:-}" ]; then
  cargo build --quiet --release -p compare
  COMPARE=target/release/compare
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for k in 1 2; do
  valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out/cg.$k.%p" \
    "$COMPARE" --scenarios "$scenario" --clients "$client" --rounds 1 --keepalive $((k * n)) \
    --fin $((k * n)) --warmup 100 --no-write --no-profile >/dev/null 2>&1
done
per_function() {
  callgrind_annotate --inclusive=no --threshold=100 "$(ls "$out"/cg."$1".*-01 | head -1)" 2>/dev/null |
    awk '/^ *[0-9,]+ \(/ { v = $1; gsub(",", "", v); sub(/^[^)]*\) +/, ""); sub(/ \[.*/, ""); print v "\t" $0 }' |
    sort -t $'\t' -k2
}
join -t $'\t' -1 2 -2 2 -a2 -e 0 -o 0,1.1,2.1 <(per_function 1) <(per_function 2) |
  awk -F'\t' -v n="$n" '{ d = ($3 - $2) / n; if (d >= 5) printf "%7.0f  %s\n", d, $1 }' | sort -rn
