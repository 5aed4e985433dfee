#!/usr/bin/env bash
# Runs one fuzz target on stable Rust, seeded with the committed corpus.
#
#   fuzz/run.sh <response|engine|sim> [seconds=60] [extra libFuzzer flags...]
#
# Stable works because the coverage instrumentation libFuzzer needs is plain `-C` flags
# (-Cpasses=sancov-module, -Cllvm-args=-sanitizer-coverage-*), which cargo-fuzz passes for us; only a
# sanitizer needs `-Z`. So by default we run with `--sanitizer none` (panics, overflow checks and
# debug assertions still abort the run). FUZZ_SANITIZER=address adds AddressSanitizer through
# RUSTC_BOOTSTRAP=1 (lets stable rustc accept -Zsanitizer; finwatch itself is #![forbid(unsafe_code)],
# so this only matters for dependencies' unsafe code).
#
# New inputs go to fuzz/corpus/<target> (gitignored); crashes to fuzz/artifacts/<target>/. A crash
# becomes a test by copying it to fuzz/regressions/<target>/ (run by `cargo test --test regressions`).
# Reproduce one input: fuzz/run.sh <target> 0 fuzz/artifacts/<target>/crash-...
set -euo pipefail

target=${1:?usage: fuzz/run.sh <response|engine|sim> [seconds] [libFuzzer flags...]}
secs=${2:-60}
shift $(( $# < 2 ? $# : 2 ))
sanitizer=${FUZZ_SANITIZER:-none}

cd "$(dirname "$0")/.."

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
if [ "$sanitizer" != none ]; then
    export RUSTC_BOOTSTRAP=1
fi

# A single input file as the first argument after the seconds: just run it (reproduce a crash).
if [ $# -gt 0 ] && [ -f "$1" ]; then
    exec cargo fuzz run --sanitizer "$sanitizer" "$target" "$@"
fi

mkdir -p "fuzz/corpus/$target"
exec cargo fuzz run --sanitizer "$sanitizer" "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$secs" -max_len=4096 -timeout=10 -print_final_stats=1 "$@"
