#!/usr/bin/env bash
# Script test (RELIABILITY A4): the real `qorgan serve` under a slowloris attack
# (slowhttptest, Debian) and a body bomb.
#
# - 200 slow-header connections (a header line every second for 12 s) against a server with
#   `http.header_timeout_secs = 2`: the server closes them, each within the timeout + 1 s,
#   and /api/v1/health answers in the middle of the attack;
# - a 10 MB body to a JSON endpoint: 413 with the JSON error object.
#
# Run with:  tests/slowhttp.sh          (needs: slowhttptest curl python3; builds qorgan in debug)
#            QORGAN_BIN=target/debug/qorgan tests/slowhttp.sh
#
# The server is killed by PID on exit; all traffic stays on 127.0.0.1; every client is bounded
# in time (slowhttptest -l, curl --max-time, python socket timeouts). Exit status 0 means every
# check passed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
for tool in slowhttptest curl python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install slowhttptest curl python3)" >&2; exit 2; }
done

if [ -z "${QORGAN_BIN:-}" ]; then
  (cd "$root" && cargo build -q -p qorgan-control --bin qorgan)
  QORGAN_BIN="$root/target/debug/qorgan"
fi

HEADER_TIMEOUT=2
CONNECTIONS=200

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Three free loopback ports, below the ephemeral range (tests/lib/free_ports.py says why).
read -r DNS_PORT HTTP_PORT METRICS_PORT < <(python3 "$root/tests/lib/free_ports.py" 3)

mkdir -p "$work/lists"
cat > "$work/qorgan.toml" <<CONF
[dns]
listen = ["127.0.0.1:$DNS_PORT"]
upstreams = ["127.0.0.1:9"]
[http]
listen = "127.0.0.1:$HTTP_PORT"
header_timeout_secs = $HEADER_TIMEOUT
[metrics]
listen = "127.0.0.1:$METRICS_PORT"
[storage]
data_dir = "$work/data"
[lists]
dir = "$work/lists"
CONF
"$QORGAN_BIN" serve --config "$work/qorgan.toml" > "$work/qorgan.log" 2>&1 &
pids+=($!)

base="http://127.0.0.1:$HTTP_PORT"
health() { curl -s --max-time 3 "$base/api/v1/health"; }

# Ready when /health answers (bounded: 20 s).
for _ in $(seq 1 200); do
  if health 2>/dev/null | grep -q '"ok"'; then break; fi
  sleep 0.1
done

fails=0
check() { # name, then a command that must succeed
  local what=$1; shift
  if "$@"; then echo "ok   $what"; else echo "FAIL $what"; fails=$((fails + 1)); fi
}
has() { grep -q -- "$1" <<<"$2"; }

check "server up: /health answers" has '"ok"' "$(health || true)"

# --- time to close, measured per connection: 10 slow clients each send a header line every
# 0.5 s and never finish; the time from connect to the server's close is the figure.
closing=$(python3 - "$HTTP_PORT" "$HEADER_TIMEOUT" <<'PY'
import socket, sys, threading, time
port, timeout = int(sys.argv[1]), float(sys.argv[2])
results = []
def slow():
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    start = time.monotonic()
    s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    closed = None
    for i in range(int((timeout + 5) / 0.5)):   # bounded: at most timeout + 5 s
        try:
            s.settimeout(0.5)
            data = s.recv(4096)
            if not data:
                closed = time.monotonic() - start
                break
        except socket.timeout:
            pass
        except OSError:
            closed = time.monotonic() - start
            break
        try:
            s.sendall(b"X-Slow-%d: x\r\n" % i)
        except OSError:
            closed = time.monotonic() - start
            break
    s.close()
    results.append(closed)
threads = [threading.Thread(target=slow) for _ in range(10)]
for t in threads: t.start()
for t in threads: t.join()
done = [r for r in results if r is not None]
print(len(done), len(results), f"{max(done):.2f}" if done else "inf")
PY
)
read -r closed_n total_n worst <<<"$closing"
echo "A4: $closed_n of $total_n slow-header connections closed by the server, the last after ${worst} s (header timeout ${HEADER_TIMEOUT} s)"
check "every slow-header connection is closed by the server" test "$closed_n" -eq "$total_n"
check "closed within header timeout + 1 s" python3 -c "import sys; sys.exit(0 if float('$worst') <= $HEADER_TIMEOUT + 1 else 1)"

# --- slowhttptest: 200 connections, 100 per second, a follow-up header every second, for at
# most 12 s. It stops early once the server has closed every connection.
slowhttptest -c "$CONNECTIONS" -H -i 1 -r 100 -l 12 -p 3 -g -o "$work/slow" \
  -u "$base/api/v1/health" > "$work/slow.out" 2>&1 &
attack=$!
pids+=($attack)
# In the middle of the attack (the connections are open by then; they close after 2 s).
sleep 1.5
running_mid=no
kill -0 "$attack" 2>/dev/null && running_mid=yes
mid_start=$(date +%s.%N)
mid=$(health || true)
mid_secs=$(python3 -c "import time; print(f'{time.time() - $mid_start:.3f}')")
check "the attack is still running at 1.5 s" test "$running_mid" = yes
check "/health answers in the middle of the attack (in ${mid_secs} s)" has '"ok"' "$mid"
# slowhttptest stops by itself (-l 12; bounded wait: 30 s).
for _ in $(seq 1 300); do
  kill -0 "$attack" 2>/dev/null || break
  sleep 0.1
done
wait "$attack" || true
out=$(tr -d '\r' < "$work/slow.out" | sed 's/\x1b\[[0-9;]*[A-Za-z]//g')
ended=$(sed -n 's/^Test ended on \([0-9]*\).* second.*/\1/p' <<<"$out" | tail -n 1)
exit_status=$(sed -n 's/^Exit status: *//p' <<<"$out" | tail -n 1)
# The per-second CSV: seconds, closed, pending, connected, service available (the probe's status).
csv="$work/slow.csv"
max_open=$(awk -F, 'NR > 1 && $4 > m { m = $4 } END { print m + 0 }' "$csv" 2>/dev/null || echo 0)
last_row=$(awk -F, 'NR > 1 { c = $2; s = $1 } END { print c + 0 " closed at second " s + 0 }' "$csv" 2>/dev/null || echo "none")
unavailable=$(awk -F, 'NR > 1 && $5 + 0 == 0 { u++ } END { print u + 0 }' "$csv" 2>/dev/null || echo 0)
deadline=$((CONNECTIONS / 100 + HEADER_TIMEOUT + 1))
echo "A4: slowhttptest -c $CONNECTIONS -H -i 1 -r 100 -l 12: \"$exit_status\" on second ${ended:-?} of 12" \
  "(connections opened over $((CONNECTIONS / 100)) s, at most $max_open open at once; last CSV row: $last_row);" \
  "service unavailable for $unavailable s"
check "slowhttptest: the server closed every connection" has "No open connections left" "$exit_status"
check "slowhttptest: all closed by second $deadline (open time + timeout + 1 s)" test "${ended:-99}" -le "$deadline"
check "slowhttptest: the probe was served throughout" test "$unavailable" -eq 0

# --- body bomb: 10 MB of JSON to a JSON endpoint.
python3 -c 'import sys; sys.stdout.write("{\"username\": \"" + "a" * (10 * 1024 * 1024) + "\", \"password\": \"x\"}")' > "$work/big.json"
code=$(curl -s --max-time 20 -o "$work/big.out" -w '%{http_code} %{content_type}' \
  -H 'content-type: application/json' --data-binary "@$work/big.json" "$base/api/v1/session" || true)
echo "A4: 10 MB JSON body -> $code $(head -c 200 "$work/big.out" 2>/dev/null || true)"
check "10 MB body: 413" has "^413 application/json" "$code"
check "10 MB body: the JSON error object" has '"code":"payload_too_large"' "$(cat "$work/big.out" 2>/dev/null || true)"
check "server still up after the attack" has '"ok"' "$(health || true)"

if [ "$fails" -ne 0 ]; then
  echo "$fails check(s) failed; slowhttptest said:"
  tail -n 25 "$work/slow.out" || true
  echo "qorgan log:"
  tail -n 30 "$work/qorgan.log"
  exit 1
fi
echo "all slowhttp checks passed"
