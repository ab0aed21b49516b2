#!/usr/bin/env bash
# Script test D8 (RELIABILITY.md): the real `qorgan serve` against Unbound, both forwarding to one
# local nsd, on a corpus of more than 10,000 queries from the shared popular-domain lists and a
# zone with varied answers; every difference that is not a justified protocol difference, and
# every blocked name not answered as the policy says, is listed (tests/differential_unbound.py
# builds the zone and corpus and does the comparison).
#
# Run with:  tests/differential-unbound.sh     (needs: unbound nsd python3-dnspython, the shared
#                                               data beside the repo; builds qorgan in debug)
#            QORGAN_BIN=target/debug/qorgan QORGAN_SHARED=/elsewhere/shared tests/differential-unbound.sh
#            D8_ALL_DIFFS=diffs.txt KEEP_WORK=1 tests/differential-unbound.sh   (every finding; keep the zone)
#
# Prints `D8: N queries, M compared, 0 unexpected differences, B blocked as policy says`.
# Every server it starts is killed by PID on exit; all traffic stays on 127.0.0.1; every query
# has a timeout and at most two tries. Exit status 0: no unexpected difference.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
shared=${QORGAN_SHARED:-$root/../shared}/data
for tool in unbound nsd; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install unbound nsd python3-dnspython)" >&2; exit 2; }
done
if [ ! -d "$shared/popular" ]; then
  echo "D8: skipped: no shared data at $shared/popular (set QORGAN_SHARED)"
  exit 0
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -z "${KEEP_WORK:-}" ]; then rm -rf "$work"; else echo "kept $work"; fi
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
"$PY" "$root/tests/differential_unbound.py" prepare "$work" "$shared/popular"
start_nsd "$UP_PORT" "$work/root.zone"
start_qorgan "$QORGAN_PORT" "$UP_PORT" "$work/lists" '"ads", "malware"'
qorgan_pid=${pids[-1]}
start_unbound "$UNBOUND_PORT" "$UP_PORT"
for port in "$UP_PORT" "$QORGAN_PORT" "$UNBOUND_PORT"; do
  if ! wait_answer "$port" ready.example; then
    tail -n 20 "$work/qorgan.log" "$work/unbound-$UNBOUND_PORT.log" "$work/nsd/nsd.log" 2>/dev/null || true
    exit 1
  fi
done

status=0
"$PY" "$root/tests/differential_unbound.py" run "$work" "$QORGAN_PORT" "$UNBOUND_PORT" "$UP_PORT" || status=$?
if ! kill -0 "$qorgan_pid" 2>/dev/null; then
  echo "qorgan exited during the run; its log:"
  tail -n 20 "$work/qorgan.log"
  status=1
fi
exit "$status"
