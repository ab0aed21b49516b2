#!/usr/bin/env bash
# Script test D3 (RELIABILITY.md): ISC genreport's DNS compliance probes (dns, aa, ad, cd, ra, rd,
# tc, zflag, opcode, type666, tcp, edns, edns1, edns@512, ednsopt, edns1opt, do, ednsflags,
# optlist, cookie, subnet, ednstcp, ...) sent to the real `qorgan serve`, which forwards to a
# local nsd serving compliance.example.; tests/compliance.py builds and judges them (RFC 8906, 6891).
# When Unbound is installed, the same probes go to it too, for reference only.
#
# Run with:  tests/compliance.sh             (needs: nsd python3-dnspython; unbound optional;
#                                             builds qorgan in debug)
#            QORGAN_BIN=target/debug/qorgan tests/compliance.sh
#
# Prints `D3: n/N probes compliant` and each failing probe with its query in hex. Every server it
# starts is killed by PID on exit; all traffic stays on 127.0.0.1; every query has a timeout.
# Exit status 0: every probe compliant.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
command -v nsd >/dev/null || { echo "missing nsd (apt-get install nsd python3-dnspython)" >&2; exit 2; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=lib/dns-servers.sh
. "$root/tests/lib/dns-servers.sh"
PY=$(dns_python)

if [ -z "${QORGAN_BIN:-}" ]; then
  (cd "$root" && cargo build -q -p qorgan-control --bin qorgan)
  QORGAN_BIN="$root/target/debug/qorgan"
fi

read -r UP_PORT QORGAN_PORT UNBOUND_PORT < <(free_ports 3)
[ -z "${DEBUG_PORTS:-}" ] || echo "ports: nsd $UP_PORT qorgan $QORGAN_PORT unbound $UNBOUND_PORT" >&2
"$PY" "$root/tests/compliance.py" zone "$work/compliance.example.zone"
start_nsd "$UP_PORT" "$work/compliance.example.zone"
mkdir -p "$work/lists/ads"
echo "blocked.compliance.example" > "$work/lists/ads/list.txt"
start_qorgan "$QORGAN_PORT" "$UP_PORT" "$work/lists" '"ads"'
servers=("$QORGAN_PORT")
if command -v unbound >/dev/null; then
  start_unbound "$UNBOUND_PORT" "$UP_PORT"
  servers+=("$UNBOUND_PORT")
fi
for port in "$UP_PORT" "${servers[@]}"; do
  wait_answer "$port" ns.compliance.example || { tail -n 20 "$work/qorgan.log"; exit 1; }
done

status=0
"$PY" "$root/tests/compliance.py" run "$QORGAN_PORT" || status=$?
if [ ${#servers[@]} -gt 1 ]; then
  echo "reference (not gating):"
  "$PY" "$root/tests/compliance.py" run "$UNBOUND_PORT" "Unbound $(unbound -V | awk 'NR==1 {print $2}')" | sed 's/^/  /' || true
fi
exit "$status"
