#!/usr/bin/env bash
# Side-by-side DNS load test: qorgan and Unbound with the same ~750k-domain union of the shared
# blocklists, the same local upstream (nsd with a wildcard root zone), the server pinned to core 0
# and dnsperf to core 1, half blocked and half allowed names from the shared popular lists.
#
# Run with:  benches/load/side-by-side.sh            (needs: dnsperf unbound nsd dig taskset python3)
#            DURATION=20 QPS=50000 benches/load/side-by-side.sh
#
# Prints, for each server: CPU microseconds per query at a fixed offered load (the fair cost
# figure: dnsperf itself saturates near 150k QPS here), saturation QPS and latency, RSS after
# load, and start-up time (qorgan: cold, then warm from the compiled-lists cache), then the ratios.
# All traffic stays on 127.0.0.1; every dnsperf run is bounded by -l.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
shared=${QORGAN_SHARED:-$root/../shared}/data
DURATION=${DURATION:-15}
QPS=${QPS:-50000}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
UPSTREAM_PORT=${UPSTREAM_PORT:-15399}
QORGAN_PORT=${QORGAN_PORT:-15301}
UNBOUND_PORT=${UNBOUND_PORT:-15302}

for tool in dnsperf unbound nsd dig taskset python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install dnsperf unbound nsd bind9-dnsutils util-linux)" >&2; exit 2; }
done
[ -d "$shared/blocklists" ] || { echo "no shared data at $shared: nothing to measure" >&2; exit 2; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== building qorgan (release)"
(cd "$root" && cargo build --release -q -p qorgan-control --bin qorgan)
qorgan=$root/target/release/qorgan

echo "== preparing lists, union and queries in $work"
mkdir -p "$work/lists"
for f in "$shared"/blocklists/*.txt; do
  base=$(basename "$f"); cat=${base%%.*}
  mkdir -p "$work/lists/$cat"; ln -s "$f" "$work/lists/$cat/$base"
done
python3 - "$shared" "$work" <<'PY'
import os, random, re, sys
shared, work = sys.argv[1], sys.argv[2]
name_re = re.compile(r'^[a-z0-9_-]+(\.[a-z0-9_-]+)+$')
union = set()
for fn in sorted(os.listdir(f"{shared}/blocklists")):
    if 'allowlist' in fn:
        continue
    for line in open(f"{shared}/blocklists/{fn}", encoding='utf-8', errors='replace'):
        line = line.strip().lower()
        if not line or line[0] in '#!;':
            continue
        names = []
        if line.startswith('||') and line.endswith('^'):
            names = [line[2:-1]]
        elif ' ' in line or '\t' in line:
            parts = line.split()
            if parts[0] in ('0.0.0.0', '127.0.0.1', '::1', '::'):
                names = parts[1:]
        else:
            names = [line]
        for n in names:
            n = n.rstrip('.')
            if name_re.match(n) and n not in ('localhost', 'localhost.localdomain'):
                union.add(n)
with open(f"{work}/unbound-zones.conf", 'w') as out:
    for n in sorted(union):
        out.write(f'local-zone: "{n}." always_nxdomain\n')
def covered(n):
    labels = n.split('.')
    return any('.'.join(labels[i:]) in union for i in range(len(labels)))
allowed = []
for fn in ('umbrella-top-100k.txt', 'tranco-top-100k.txt'):
    for line in open(f"{shared}/popular/{fn}", encoding='utf-8', errors='replace'):
        n = line.strip().split(',')[-1].lower().rstrip('.')
        if name_re.match(n) and not covered(n):
            allowed.append(n)
allowed = list(dict.fromkeys(allowed))
rnd = random.Random(1)
blocked = rnd.sample(sorted(union), min(50000, len(union)))
allowed = allowed[:50000]
with open(f"{work}/queries.txt", 'w') as out:
    for b, a in zip(blocked, allowed):
        out.write(f"{b} A\n{a} A\n")
print(f"union: {len(union)} domains; queries: {2*min(len(blocked), len(allowed))} (half blocked)")
PY

cat > "$work/root.zone" <<'EOF'
$TTL 3600
.   IN SOA ns.invalid. hostmaster.invalid. 1 3600 600 86400 3600
.   IN NS  ns.invalid.
*.  IN A   192.0.2.1
*.  IN AAAA 2001:db8::1
EOF
cat > "$work/nsd.conf" <<EOF
server:
  ip-address: 127.0.0.1@$UPSTREAM_PORT
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
EOF
taskset -c "$CLIENT_CPU" nsd -d -c "$work/nsd.conf" &
pids+=($!)

cat > "$work/unbound.conf" <<EOF
server:
  interface: 127.0.0.1@$UNBOUND_PORT
  port: $UNBOUND_PORT
  username: ""
  chroot: ""
  directory: "$work"
  pidfile: "$work/unbound.pid"
  use-syslog: no
  logfile: ""
  verbosity: 0
  num-threads: 1
  module-config: "iterator"
  do-not-query-localhost: no
  access-control: 127.0.0.0/8 allow
  include: "$work/unbound-zones.conf"
remote-control:
  control-enable: no
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@$UPSTREAM_PORT
EOF

cats=$(ls "$work/lists" | sed 's/.*/"&"/' | paste -sd, -)
cat > "$work/qorgan.toml" <<EOF
[dns]
listen = ["127.0.0.1:$QORGAN_PORT"]
upstreams = ["127.0.0.1:$UPSTREAM_PORT"]
unknown_clients = "default"
[http]
listen = "127.0.0.1:0"
[metrics]
listen = "127.0.0.1:0"
[storage]
data_dir = "$work/qdata"
[lists]
dir = "$work/lists"
watch = false
[default_policy]
networks = ["127.0.0.0/8"]
categories = [$cats]
EOF

# wait_answer PORT: seconds until the server answers a query (any rcode).
wait_answer() {
  local port=$1 start end
  start=$(date +%s.%N)
  for _ in $(seq 1 6000); do
    if dig @127.0.0.1 -p "$port" +tries=1 +time=1 +short startup.probe.example A >/dev/null 2>&1; then
      end=$(date +%s.%N); python3 -c "print(f'{$end-$start:.3f}')"; return 0
    fi
    sleep 0.01
  done
  echo "timeout"; return 1
}
# cpu_ns PID: nanoseconds on CPU of every thread of PID.
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{s+=$1} END {print s}'; }
rss_mib() { awk '/VmRSS/ {printf "%.1f", $2/1024}' /proc/"$1"/status; }
# run_dnsperf PORT ARGS...: prints "completed lost qps avg_latency_ms"
run_dnsperf() {
  local port=$1; shift
  taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries.txt" -T 1 -c 8 "$@" > "$work/dnsperf.out" 2>&1 || true
  python3 - "$work/dnsperf.out" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def g(p, d='0'):
    m = re.search(p, t); return m.group(1) if m else d
print(g(r'Queries completed:\s+(\d+)'), g(r'Queries lost:\s+(\d+)'), g(r'Queries per second:\s+([\d.]+)'),
      f"{float(g(r'Average Latency \(s\):\s+([\d.]+)'))*1000:.3f}")
PY
}

declare -A R
measure() {
  local name=$1 port=$2 pid=$3
  run_dnsperf "$port" -l 3 >/dev/null   # warm the caches
  local c0 t0 c1 t1 out
  c0=$(cpu_ns "$pid"); t0=$(date +%s%N)
  out=$(run_dnsperf "$port" -l "$DURATION" -Q "$QPS")
  c1=$(cpu_ns "$pid"); t1=$(date +%s%N)
  read -r done lost qps lat <<<"$out"
  R[$name.fixed_us]=$(python3 -c "print(f'{($c1-$c0)/1000/max($done,1):.2f}')")
  R[$name.fixed_qps]=$qps; R[$name.fixed_lost]=$lost
  c0=$(cpu_ns "$pid"); t0=$(date +%s%N)
  out=$(run_dnsperf "$port" -l "$DURATION" -q 500)
  c1=$(cpu_ns "$pid"); t1=$(date +%s%N)
  read -r done lost qps lat <<<"$out"
  R[$name.sat_qps]=$qps; R[$name.sat_lat]=$lat; R[$name.sat_lost]=$lost
  R[$name.sat_cpu]=$(python3 -c "print(f'{($c1-$c0)/($t1-$t0)*100:.0f}')")
  R[$name.rss]=$(rss_mib "$pid")
}

echo "== unbound"
taskset -c "$SERVER_CPU" unbound -d -c "$work/unbound.conf" &
upid=$!; pids+=($upid)
R[unbound.start]=$(wait_answer "$UNBOUND_PORT")
measure unbound "$UNBOUND_PORT" "$upid"
kill "$upid"; wait "$upid" 2>/dev/null || true

echo "== qorgan (cold start: empty compiled-lists cache)"
taskset -c "$SERVER_CPU" "$qorgan" serve --config "$work/qorgan.toml" > "$work/qorgan.log" 2>&1 &
qpid=$!; pids+=($qpid)
R[qorgan.cold]=$(wait_answer "$QORGAN_PORT")
kill "$qpid"; wait "$qpid" 2>/dev/null || true
echo "== qorgan (warm start)"
taskset -c "$SERVER_CPU" "$qorgan" serve --config "$work/qorgan.toml" >> "$work/qorgan.log" 2>&1 &
qpid=$!; pids+=($qpid)
R[qorgan.start]=$(wait_answer "$QORGAN_PORT")
measure qorgan "$QORGAN_PORT" "$qpid"

printf '\n%-8s | %-12s | %-10s | %-10s | %-9s | %-8s | %-9s | %-9s\n' server "µs/query@$QPS" "lost@fix" "sat QPS" "sat lat ms" "sat CPU%" "RSS MiB" "start s"
for s in unbound qorgan; do
  printf '%-8s | %-12s | %-10s | %-10s | %-9s | %-8s | %-9s | %-9s\n' "$s" "${R[$s.fixed_us]}" "${R[$s.fixed_lost]}" \
    "${R[$s.sat_qps]}" "${R[$s.sat_lat]}" "${R[$s.sat_cpu]}" "${R[$s.rss]}" "${R[$s.start]}"
done
echo "qorgan cold start (compiling the lists): ${R[qorgan.cold]} s"
python3 - "${R[qorgan.fixed_us]}" "${R[unbound.fixed_us]}" "${R[qorgan.sat_qps]}" "${R[unbound.sat_qps]}" "${R[qorgan.rss]}" "${R[unbound.rss]}" <<'PY'
import sys
q_us, u_us, q_qps, u_qps, q_rss, u_rss = map(float, sys.argv[1:])
print(f"ratios qorgan/unbound: CPU per query {q_us/u_us:.2f}, saturated QPS {q_qps/u_qps:.2f}, RSS {q_rss/u_rss:.2f}")
PY
