#!/usr/bin/env bash
# finwatch against HTTP servers no one on the team wrote (nginx, Apache, lighttpd, BusyBox httpd,
# Python's http.server, a Python device that closes idle connections, Node.js), and over TLS
# (nginx `ssl`, `openssl s_server -WWW` in TLS 1.3 and 1.2, certificates made by the run with the
# openssl command), with the loopback traffic captured by tcpdump and checked: every answer
# right, and no request byte after a server's FIN. Built with `--features tls`. Installs the
# servers, openssl and tcpdump (Debian packages) if missing; the capture needs
# root, so the run goes through sudo when not root (without it, only the answers are checked).
#   interop/run.sh            (INTEROP_KEEP=1 keeps the capture and the servers' logs)
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then sudo="sudo"; fi

need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v lighttpd >/dev/null || [ -x /usr/sbin/lighttpd ] || need+=(lighttpd)
command -v apache2 >/dev/null || [ -x /usr/sbin/apache2 ] || need+=(apache2)
command -v busybox >/dev/null || need+=(busybox)
command -v python3 >/dev/null || need+=(python3)
command -v node >/dev/null || command -v nodejs >/dev/null || need+=(nodejs)
command -v openssl >/dev/null || need+=(openssl)
command -v tcpdump >/dev/null || [ -x /usr/bin/tcpdump ] || [ -x /usr/sbin/tcpdump ] || need+=(tcpdump)
if [ ${#need[@]} -gt 0 ]; then
    echo "interop/run.sh: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -qq "${need[@]}" >/dev/null \
        || { $sudo apt-get update -qq && $sudo apt-get install -y -qq "${need[@]}" >/dev/null; }
fi
# The nginx package starts a system-wide server on port 80 where it can; this run starts its
# own on a port of its own and leaves that one alone.

cargo build --quiet --release --features tls --example interop
exec $sudo ${INTEROP_KEEP:+env INTEROP_KEEP=1} target/release/examples/interop "$@"
