#!/usr/bin/env bash
# Installs what the comparison harness needs, builds it in release and runs it:
#   compare/run.sh            full run, writes compare/RESULTS.md (and prints it)
#   compare/run.sh --quick    a short run, prints only
#   compare/run.sh --help     scenarios, clients and counts can be chosen
#   compare/run.sh --link-delay-us 500   # the same across an emulated link (root; writes compare/RESULTS-link.md)
set -euo pipefail
cd "$(dirname "$0")/.."

# The curl crate links the system libcurl, found through pkg-config (Debian's packages).
if ! pkg-config --exists libcurl 2>/dev/null; then
    .ci/apt-install libcurl4-openssl-dev pkg-config
    # A curl-sys built while the headers were missing used its bundled libcurl: rebuild it.
    cargo clean --release -p curl-sys >/dev/null 2>&1 || true
fi

# The machine-independent figures (--profile, on in full runs) count syscalls with strace.
.ci/apt-install strace

cargo build --release -p compare
exec cargo run --quiet --release -p compare -- "$@"
