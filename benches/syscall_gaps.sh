#!/usr/bin/env bash
# The keep-alive hot path's user-space time, measured between syscalls: runs
# `examples/hot_path.rs` for finwatch and for the minimal mio loop under bpftrace, and prints,
# for each pair of consecutive syscalls of the client thread, how often it occurred and the
# mean time from the first one's exit to the second one's entry (user space, plus ~1 µs of the
# probes themselves per interval, the same for both clients). Needs root (bpftrace); installs
# bpftrace (Debian) if missing.
#   benches/syscall_gaps.sh [commands, default 30000]
set -euo pipefail
cd "$(dirname "$0")/.."
commands="${1:-30000}"

command -v bpftrace >/dev/null || .ci/apt-install bpftrace
cargo build --quiet --release --example hot_path
bin=target/release/examples/hot_path

# Only the main thread (tid == pid): the device runs on a thread of its own.
script='
tracepoint:raw_syscalls:sys_exit /pid == cpid && tid == pid/ { @exit[tid] = nsecs; @id[tid] = args->id; }
tracepoint:raw_syscalls:sys_enter /pid == cpid && tid == pid && @exit[tid]/ {
    @gap[@id[tid], args->id] = stats(nsecs - @exit[tid]);
}
END { clear(@exit); clear(@id); }'

names() {
    # x86_64 syscall numbers of the hot path; anything else is shown as its number.
    name() {
        case "$(uname -m):$1" in
            x86_64:0) echo read ;; x86_64:1) echo write ;; x86_64:44) echo sendto ;;
            x86_64:45) echo recvfrom ;; x86_64:232) echo epoll_wait ;; x86_64:281) echo epoll_pwait ;;
            x86_64:441) echo epoll_pwait2 ;; *) echo "$1" ;;
        esac
    }
    sed -E 's/@gap\[([0-9]+), ([0-9]+)\]: count ([0-9]+), average ([0-9]+), total [0-9]+/\1 \2 \3 \4/' |
        while read -r a b count avg; do
            printf '  %-12s -> %-12s %8d × %6.2f µs\n' "$(name "$a")" "$(name "$b")" "$count" "$(echo "$avg / 1000" | bc -l)"
        done
}

for client in mio finwatch; do
    echo "$client ($commands commands): from one syscall's exit to the next one's entry, pairs seen at least once per command"
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo bpftrace -q -c "$bin $client $commands" -e "$script" 2>&1 |
        awk -v n="$commands" '/^@gap/ { split($0, a, "count "); split(a[2], b, ","); if (b[1] + 0 >= n * 0.9) print }' |
        names
done
