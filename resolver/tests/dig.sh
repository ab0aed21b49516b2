#!/usr/bin/env bash
# Script test: the real `qorgan serve` binary answering `dig` (Debian bind9-dnsutils) over UDP
# and TCP, with a local upstream (nsd serving a wildcard root zone) on 127.0.0.1.
#
# Run with:  resolver/tests/dig.sh          (needs: dig nsd curl python3; builds qorgan in debug)
#            QORGAN_BIN=target/release/qorgan resolver/tests/dig.sh
#
# Every server it starts is killed by PID on exit; all traffic stays on 127.0.0.0/8; every dig
# is bounded by +time/+tries. Exit status 0 means every check passed.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
for tool in dig nsd curl python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install bind9-dnsutils nsd curl python3)" >&2; exit 2; }
done

if [ -z "${QORGAN_BIN:-}" ]; then
  (cd "$root" && cargo build -q -p qorgan-control --bin qorgan)
  QORGAN_BIN="$root/target/debug/qorgan"
fi

work=$(mktemp -d)
pids=()
cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ -f "$work/qorgan.log" ]; then
    # A failure before the checks' own report (set -e: a dig without a reply exits 9).
    echo "dig.sh stopped with status $rc; qorgan log:"; tail -n 30 "$work/qorgan.log"
    [ -f "$work/nsd.log" ] && { echo "nsd log:"; tail -n 10 "$work/nsd.log"; }
  fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Four free loopback ports, below the ephemeral range (tests/lib/free_ports.py says why).
read -r DNS_PORT UP_PORT HTTP_PORT METRICS_PORT < <(python3 "$root/tests/lib/free_ports.py" 4)

# The upstream: every name has an A and an AAAA; cnametest. points at a blocked name (a
# top-level name, so that no explicit node shadows the wildcard for *.example).
cat > "$work/root.zone" <<'ZONE'
$TTL 3600
.                IN SOA ns.invalid. hostmaster.invalid. 1 3600 600 86400 3600
.                IN NS  ns.invalid.
*.               IN A   192.0.2.1
*.               IN AAAA 2001:db8::1
cnametest.       IN CNAME tracker.blocked.example.
ZONE
cat > "$work/nsd.conf" <<CONF
server:
  ip-address: 127.0.0.1@$UP_PORT
  username: ""
  zonesdir: "$work"
  database: ""
  zonelistfile: "$work/zone.list"
  xfrdfile: "$work/xfrd.state"
  pidfile: "$work/nsd.pid"
  logfile: "$work/nsd.log"
  server-count: 1
  verbosity: 0
remote-control:
  control-enable: no
zone:
  name: "."
  zonefile: "root.zone"
CONF
nsd -d -c "$work/nsd.conf" &
pids+=($!)

mkdir -p "$work/lists/ads" "$work/lists/malware"
printf 'blocked.example\n||tracker.blocked.example^\n' > "$work/lists/ads/test.txt"
printf 'evil.example\n' > "$work/lists/malware/test.txt"
cat > "$work/qorgan.toml" <<CONF
[dns]
listen = ["127.0.0.1:$DNS_PORT"]
upstreams = ["127.0.0.1:$UP_PORT"]
unknown_clients = "drop"
[http]
listen = "127.0.0.1:$HTTP_PORT"
[metrics]
listen = "127.0.0.1:$METRICS_PORT"
[storage]
data_dir = "$work/data"
[lists]
dir = "$work/lists"
[default_policy]
networks = ["127.0.0.1/32"]
categories = ["ads", "malware"]
block_mode = "nxdomain"
CONF
"$QORGAN_BIN" serve --config "$work/qorgan.toml" > "$work/qorgan.log" 2>&1 &
pids+=($!)

q() { dig @127.0.0.1 -p "$DNS_PORT" +time=2 +tries=1 "$@"; }

# Ready when an allowed name resolves (bounded: 30 s; a debug build on a loaded machine).
for _ in $(seq 1 300); do
  if q ready.example A +short 2>/dev/null | grep -q 192.0.2.1; then break; fi
  sleep 0.1
done

fails=0
check() { # name, then a command that must succeed
  local what=$1; shift
  if "$@"; then echo "ok   $what"; else echo "FAIL $what"; fails=$((fails + 1)); fi
}
has() { grep -q -- "$1" <<<"$2"; }

out=$(q blocked.example A)
check "blocked name: NXDOMAIN" has "status: NXDOMAIN" "$out"
check "blocked name: EDE 15 (Blocked)" has "EDE: 15 (Blocked)" "$out"
check "subdomain of a blocked name: NXDOMAIN" has "status: NXDOMAIN" "$(q a.b.blocked.example A)"
check "malware category: NXDOMAIN" has "status: NXDOMAIN" "$(q evil.example A)"
check "allowed name: upstream's A" has "192.0.2.1" "$(q www.allowed.example A +short)"
check "allowed name: upstream's AAAA" has "2001:db8::1" "$(q www.allowed.example AAAA +short)"
out=$(q cnametest A)
check "CNAME to a blocked name: NXDOMAIN" has "status: NXDOMAIN" "$out"
check "CNAME to a blocked name: EDE (our block, not the upstream's answer)" has "EDE: 15 (Blocked)" "$out"
check "TCP: blocked" has "status: NXDOMAIN" "$(q +tcp blocked.example A)"
check "TCP: allowed" has "192.0.2.1" "$(q +tcp www.allowed.example A +short)"
out=$(q +noedns blocked.example A)
check "no EDNS: still NXDOMAIN" has "status: NXDOMAIN" "$out"
check "no EDNS: no OPT, so no EDE" bash -c '! grep -q "EDE:" <<<"$1"' _ "$out"
# 127.0.0.2 belongs to no account and is outside default_policy.networks: no reply at all.
check "unknown client: no reply" bash -c '! dig @127.0.0.1 -p "$1" -b 127.0.0.2 +time=1 +tries=1 www.allowed.example A >/dev/null' _ "$DNS_PORT"
metrics=$(curl -s --max-time 5 "http://127.0.0.1:$METRICS_PORT/metrics")
check "metrics: blocked queries counted" has 'qorgan_dns_queries_total{outcome="blocked",protocol="udp",qtype="a"}' "$metrics"
check "metrics: dropped query counted" has 'outcome="dropped"' "$metrics"

if [ "$fails" -ne 0 ]; then
  echo "$fails check(s) failed; qorgan log:"
  tail -n 30 "$work/qorgan.log"
  exit 1
fi
echo "all dig checks passed"
