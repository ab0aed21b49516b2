#!/usr/bin/env bash
# Side-by-side DNS load test: qorgan (`serve` with the UDP fast path; a resolver-only node
# `qorgan resolver` pulling from a control plane on the client core; hickory only with
# dns.fast_path = false), Unbound and PowerDNS Recursor with the same ~750k-domain union of the shared blocklists, the
# kernel's floor (udp-floor: every query back as REFUSED through the same system calls, no DNS work), the
# same local upstream (nsd with a wildcard root zone), the server pinned to core 0 and dnsperf to
# core 1, half blocked and half allowed names from the shared popular lists.
#
# Run with:  benches/load/side-by-side.sh     (needs: dnsperf unbound nsd dig taskset python3;
#                                              pdns_recursor from Debian's pdns-recursor, skipped if absent)
#            DURATION=20 QPS="40000 50000" SERVERS="qorgan unbound" benches/load/side-by-side.sh
#
# Prints, for each server: CPU microseconds per query at each fixed offered load (the fair cost
# figure: dnsperf itself saturates near 150-200k QPS here) and the queries lost there,
# saturation QPS (the highest fixed rate it keeps up with, see sat_ladder) with the server's CPU
# share meanwhile (QPS per core = QPS / share), p99 latency
# and loss at half of the server's own saturation QPS, RSS after load (every cache warmed with
# every name twice first), and start-up time
# (qorgan: cold, then warm from the compiled-lists cache), then qorgan's ratios to each peer.
# PowerDNS Recursor blocks through an RPZ file (`x CNAME .` and `*.x CNAME .` per domain).
# All traffic stays on 127.0.0.1; every dnsperf run is bounded by -l.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
shared=${QORGAN_SHARED:-$root/../shared}/data
DURATION=${DURATION:-15}
QPS=${QPS:-40000 50000}
SERVERS=${SERVERS:-unbound pdns qorgan qorgan-node qorgan-hickory floor}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
UPSTREAM_PORT=${UPSTREAM_PORT:-15399}
QORGAN_PORT=${QORGAN_PORT:-15301}
UNBOUND_PORT=${UNBOUND_PORT:-15302}
PDNS_PORT=${PDNS_PORT:-15303}
QORGAN_HICKORY_PORT=${QORGAN_HICKORY_PORT:-15304}
QORGAN_NODE_PORT=${QORGAN_NODE_PORT:-15305}
FLOOR_PORT=${FLOOR_PORT:-15306}
CONTROL_HTTP_PORT=${CONTROL_HTTP_PORT:-15380}

for tool in dnsperf unbound nsd dig taskset python3 curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install dnsperf unbound nsd bind9-dnsutils util-linux)" >&2; exit 2; }
done
[ -d "$shared/blocklists" ] || { echo "no shared data at $shared: nothing to measure" >&2; exit 2; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -z "${KEEP_WORK:-}" ]; then rm -rf "$work"; else echo "kept $work"; fi
}
trap cleanup EXIT

echo "== building qorgan (release)"
(cd "$root" && cargo build --release -q -p qorgan-control --bin qorgan)
(cd "$root" && cargo build --release -q -p qorgan-benches --bin udp-floor)
qorgan=${QORGAN_BIN:-$root/target/release/qorgan}

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
with open(f"{work}/rpz.zone", 'w') as out:
    out.write("$TTL 300\n$ORIGIN rpz.qorgan.invalid.\n")
    out.write("@ SOA localhost. hostmaster.localhost. 1 3600 600 86400 300\n@ NS localhost.\n")
    for n in sorted(union):
        out.write(f"{n} CNAME .\n*.{n} CNAME .\n")
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
  # Debian's nsd is built with response rate limiting (200 answers/s per source by default): every
  # resolver here asks from 127.0.0.1 for names under one wildcard, so RRL dropped most of their
  # cache fills, and PowerDNS Recursor (which waits out each drop) answered a few thousand QPS.
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
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
  # Room for every answer of the run (the 4 MB defaults would evict and re-ask the upstream).
  msg-cache-size: 64m
  rrset-cache-size: 128m
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

mkdir -p "$work/pdns"
cat > "$work/pdns/recursor.conf" <<EOF
local-address=127.0.0.1
local-port=$PDNS_PORT
threads=1
pdns-distributes-queries=no
allow-from=127.0.0.0/8
dont-query=
dnssec=off
forward-zones-recurse=.=127.0.0.1:$UPSTREAM_PORT
lua-config-file=$work/pdns/recursor.lua
socket-dir=$work/pdns
daemon=no
write-pid=no
disable-syslog=yes
quiet=yes
loglevel=4
security-poll-suffix=
EOF
cat > "$work/pdns/recursor.lua" <<EOF
rpzFile("$work/rpz.zone", {policyName="qorgan-union"})
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
# A resolver-only node (what a provider runs per site) pulling from a control plane that runs
# on the client core: the same lists, the same default policy (the node applies the control
# plane's, so it is set there).
cat > "$work/control.toml" <<EOF
[dns]
listen = ["127.0.0.1:0"]
upstreams = ["127.0.0.1:$UPSTREAM_PORT"]
[http]
listen = "127.0.0.1:$CONTROL_HTTP_PORT"
[metrics]
listen = "127.0.0.1:0"
[storage]
data_dir = "$work/control-data"
[lists]
dir = "$work/lists"
watch = false
[operator]
token = "side-by-side-node-token"
[default_policy]
networks = ["127.0.0.0/8"]
categories = [$cats]
EOF
sed -e "s/^listen = \[\"127.0.0.1:$QORGAN_PORT\"\]/listen = [\"127.0.0.1:$QORGAN_NODE_PORT\"]/" \
    -e "s|^data_dir = .*|data_dir = \"$work/node-data\"|" "$work/qorgan.toml" > "$work/node.toml"
# The same server with UDP through hickory-server only (the fast path's baseline).
sed -e "s/^listen = \[\"127.0.0.1:$QORGAN_PORT\"\]/listen = [\"127.0.0.1:$QORGAN_HICKORY_PORT\"]\nfast_path = false\ncache_size = 65536/" \
  "$work/qorgan.toml" > "$work/qorgan-hickory.toml"

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
# anon_mib PID: the anonymous part of the RSS (heap and stacks; the rest is mapped files: the
# binary and, for qorgan, the compiled lists, which the kernel can drop and read again).
anon_mib() { awk '/RssAnon/ {printf "%.1f", $2/1024}' /proc/"$1"/status; }
# run_dnsperf PORT ARGS...: prints "completed lost qps avg_latency_ms"
run_dnsperf() {
  local port=$1; shift
  taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries.txt" -T 1 -c 8 "$@" > "$work/dnsperf.out" 2>&1 || true
  python3 - "$work/dnsperf.out" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def g(p, d='0'):
    m = re.search(p, t); return m.group(1) if m else d
lat_ms = float(g(r'Average Latency \(s\):\s+([\d.]+)')) * 1000
print(g(r'Queries completed:\s+(\d+)'), g(r'Queries lost:\s+(\d+)'), g(r'Queries per second:\s+([\d.]+)'),
      f"{lat_ms:.3f}")
PY
}
# p99_dnsperf PORT QPS: dnsperf -v at a fixed rate (one line per answer with its latency);
# prints "p50_ms p99_ms lost".
p99_dnsperf() {
  local port=$1 qps=$2
  taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries.txt" -T 1 -c 8 \
    -l "$DURATION" -Q "$qps" -v > "$work/dnsperf-v.out" 2>&1 || true
  python3 - "$work/dnsperf-v.out" <<'PY'
import re, sys
lat = []
lost = 0
for line in open(sys.argv[1], errors='replace'):
    if line.startswith('> '):
        try:
            lat.append(float(line.split()[-1]))
        except ValueError:
            pass
    m = re.search(r'Queries lost:\s+(\d+)', line)
    if m:
        lost = int(m.group(1))
lat.sort()
def pct(p):
    return lat[min(len(lat) - 1, int(len(lat) * p))] * 1000 if lat else float('nan')
print(f"{pct(0.50):.3f} {pct(0.99):.3f} {lost}")
PY
}

# sat_ladder PORT PID: the highest fixed rate the server keeps up with: dnsperf -Q R for
# LADDER_SECONDS (5) with 200 in flight, passing when at most 0.5 % is lost and at least 98 %
# of R is answered per second. Rates double from 10k until one fails, then five bisection steps
# between the last pass and the first fail. A ladder of fixed rates instead of `dnsperf -q N`
# (as fast as answers come back): an open-loop rate is what a provider's clients send, and
# a server that falls behind shows it as loss instead of being asked less. dnsperf on its own
# core tops out near 150-200k QPS here: a server that
# passes the top rung (LADDER_MAX, 320k) is reported at it. Prints "qps cpu_percent lost
# avg_latency_ms" of the highest passing rung (0s when even 10k fails).
sat_ladder() {
  local port=$1 pid=$2 secs=${LADDER_SECONDS:-5} max=${LADDER_MAX:-320000}
  local rate=10000 good=0 bad=0 good_line="0 0 0 0" line outstanding=200
  rung() {
    local r=$1 c0 t0 c1 t1 out done lost qps lat
    c0=$(cpu_ns "$pid"); t0=$(date +%s%N)
    out=$(run_dnsperf "$port" -l "$secs" -Q "$r" -q "$outstanding")
    c1=$(cpu_ns "$pid"); t1=$(date +%s%N)
    read -r done lost qps lat <<<"$out"
    local cpu
    cpu=$(python3 -c "print(f'{($c1-$c0)/($t1-$t0)*100:.0f}')")
    line="$qps $cpu $lost $lat"
    python3 -c "import sys; sys.exit(0 if $lost <= 0.005*max($done+$lost,1) and $qps >= 0.98*$r else 1)"
  }
  while [ "$rate" -le "$max" ]; do
    if rung "$rate"; then good=$rate; good_line=$line; rate=$((rate * 2)); else bad=$rate; break; fi
  done
  if [ "$bad" -gt 0 ] && [ "$good" -gt 0 ]; then
    for _ in 1 2 3 4 5; do
      rate=$(((good + bad) / 2))
      if rung "$rate"; then good=$rate; good_line=$line; else bad=$rate; fi
    done
  fi
  echo "$good_line"
}

declare -A R
measure() {
  local name=$1 port=$2 pid=$3
  # Warm every cache with every name, twice (the first pass is mostly upstream misses).
  run_dnsperf "$port" -n 1 -l 60 -Q 20000 >/dev/null
  run_dnsperf "$port" -n 1 -l 60 -Q 30000 >/dev/null
  local c0 t0 c1 t1 out q done lost qps lat half p50 p99 hlost
  for q in $QPS; do
    c0=$(cpu_ns "$pid")
    out=$(run_dnsperf "$port" -l "$DURATION" -Q "$q")
    c1=$(cpu_ns "$pid")
    read -r done lost qps lat <<<"$out"
    R[$name.fixed_us.$q]=$(python3 -c "print(f'{($c1-$c0)/1000/max($done,1):.2f}')")
    R[$name.fixed_lost.$q]=$lost
    # Answered per second: dnsperf keeps at most 100 queries in flight, so a server slower
    # than the offered rate loses nothing and is simply asked less.
    R[$name.fixed_qps.$q]=$(python3 -c "print(f'{float(\"$qps\")/1000:.1f}k')")
  done
  read -r qps cpu lost lat <<<"$(sat_ladder "$port" "$pid")"
  R[$name.sat_qps]=$qps; R[$name.sat_lat]=$lat; R[$name.sat_lost]=$lost; R[$name.sat_cpu]=$cpu
  half=$(python3 -c "print(int(float('$qps')/2))")
  read -r p50 p99 hlost <<<"$(p99_dnsperf "$port" "$half")"
  R[$name.half]=$half; R[$name.p50]=$p50; R[$name.p99]=$p99; R[$name.half_lost]=$hlost
  R[$name.rss]=$(rss_mib "$pid")
  R[$name.anon]=$(anon_mib "$pid")
  # SMAPS_DIR=dir keeps each server's memory map after load (where its RSS is).
  if [ -n "${SMAPS_DIR:-}" ]; then mkdir -p "$SMAPS_DIR"; cat /proc/"$pid"/smaps > "$SMAPS_DIR/$name.smaps"; fi
}

ran=()
for server in $SERVERS; do
  case $server in
    unbound)
      echo "== unbound"
      taskset -c "$SERVER_CPU" unbound -d -c "$work/unbound.conf" &
      spid=$!; pids+=($spid)
      R[unbound.start]=$(wait_answer "$UNBOUND_PORT")
      measure unbound "$UNBOUND_PORT" "$spid"
      kill "$spid"; wait "$spid" 2>/dev/null || true
      ;;
    pdns)
      if ! command -v pdns_recursor >/dev/null; then
        echo "== pdns: skipped (apt-get install pdns-recursor)"; continue
      fi
      echo "== PowerDNS Recursor"
      taskset -c "$SERVER_CPU" pdns_recursor --config-dir="$work/pdns" > "$work/pdns.log" 2>&1 &
      spid=$!; pids+=($spid)
      R[pdns.start]=$(wait_answer "$PDNS_PORT")
      # The RPZ may load after the first answers: wait until a listed name is blocked.
      probe=$(awk 'NR==1 {print $1}' "$work/queries.txt")
      for _ in $(seq 1 600); do
        dig @127.0.0.1 -p "$PDNS_PORT" +tries=1 +time=1 "$probe" A 2>/dev/null | grep -q NXDOMAIN && break
        sleep 0.5
      done
      measure pdns "$PDNS_PORT" "$spid"
      kill "$spid"; wait "$spid" 2>/dev/null || true
      ;;
    qorgan)
      echo "== qorgan (cold start: empty compiled-lists cache)"
      rm -rf "$work/qdata"
      taskset -c "$SERVER_CPU" "$qorgan" serve --config "$work/qorgan.toml" > "$work/qorgan.log" 2>&1 &
      spid=$!; pids+=($spid)
      R[qorgan.cold]=$(wait_answer "$QORGAN_PORT")
      kill "$spid"; wait "$spid" 2>/dev/null || true
      echo "== qorgan (warm start)"
      taskset -c "$SERVER_CPU" "$qorgan" serve --config "$work/qorgan.toml" >> "$work/qorgan.log" 2>&1 &
      spid=$!; pids+=($spid)
      R[qorgan.start]=$(wait_answer "$QORGAN_PORT")
      if [ -n "${PERF_SECONDS:-}" ] && command -v perf >/dev/null; then
        # Profile the fast path under a fixed load (report: perf report -i $PERF_OUT).
        run_dnsperf "$QORGAN_PORT" -l 3 >/dev/null
        ( run_dnsperf "$QORGAN_PORT" -l "$PERF_SECONDS" -Q "${QPS%% *}" >/dev/null ) &
        perf stat -p "$spid" -e task-clock,context-switches,cycles,instructions -- sleep $((PERF_SECONDS - 2)) 2>&1 | tail -12
        wait $!
        ( run_dnsperf "$QORGAN_PORT" -l "$PERF_SECONDS" -Q "${QPS%% *}" >/dev/null ) &
        perf record -g -o "${PERF_OUT:-$root/target/qorgan-fast-path.perf}" -p "$spid" -- sleep $((PERF_SECONDS - 2)) 2>/dev/null
        wait $!
      fi
      measure qorgan "$QORGAN_PORT" "$spid"
      kill "$spid"; wait "$spid" 2>/dev/null || true
      ;;
    qorgan-node)
      echo "== qorgan resolver node (control plane on the client core)"
      rm -rf "$work/node-data" "$work/control-data"
      taskset -c "$CLIENT_CPU" "$qorgan" serve --config "$work/control.toml" > "$work/control.log" 2>&1 &
      cpid=$!; pids+=($cpid)
      for _ in $(seq 1 300); do
        curl -sf "http://127.0.0.1:$CONTROL_HTTP_PORT/api/v1/health" >/dev/null 2>&1 && break
        sleep 0.1
      done
      taskset -c "$SERVER_CPU" "$qorgan" resolver --control "http://127.0.0.1:$CONTROL_HTTP_PORT" \
        --token side-by-side-node-token --node bench --config "$work/node.toml" > "$work/node.log" 2>&1 &
      spid=$!; pids+=($spid)
      R[qorgan-node.start]=$(wait_answer "$QORGAN_NODE_PORT")
      # The catalog arrives after the first answers: wait until a listed name is blocked.
      probe=$(awk 'NR==1 {print $1}' "$work/queries.txt")
      for _ in $(seq 1 600); do
        dig @127.0.0.1 -p "$QORGAN_NODE_PORT" +tries=1 +time=1 "$probe" A 2>/dev/null | grep -q NXDOMAIN && break
        sleep 0.2
      done
      measure qorgan-node "$QORGAN_NODE_PORT" "$spid"
      kill "$spid" "$cpid"; wait "$spid" "$cpid" 2>/dev/null || true
      ;;
    qorgan-hickory)
      echo "== qorgan with dns.fast_path = false (hickory-server serves UDP)"
      taskset -c "$SERVER_CPU" "$qorgan" serve --config "$work/qorgan-hickory.toml" >> "$work/qorgan.log" 2>&1 &
      spid=$!; pids+=($spid)
      R[qorgan-hickory.start]=$(wait_answer "$QORGAN_HICKORY_PORT")
      measure qorgan-hickory "$QORGAN_HICKORY_PORT" "$spid"
      kill "$spid"; wait "$spid" 2>/dev/null || true
      ;;
    floor)
      # No DNS work at all (benches/src/bin/udp-floor.rs): every query back as REFUSED through
      # the fast path's system calls. Its CPU per query is the kernel's share of any server's.
      echo "== floor: udp-floor, the kernel's cost alone"
      taskset -c "$SERVER_CPU" "$root/target/release/udp-floor" "127.0.0.1:$FLOOR_PORT" &
      spid=$!; pids+=($spid)
      R[floor.start]=$(wait_answer "$FLOOR_PORT")
      measure floor "$FLOOR_PORT" "$spid"
      kill "$spid"; wait "$spid" 2>/dev/null || true
      ;;
    *) echo "unknown server $server" >&2; exit 2 ;;
  esac
  ran+=("$server")
done

echo
echo "machine: $(nproc) cores; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
header=$(printf '%-15s' server)
for q in $QPS; do header+=$(printf ' | %-10s | %-8s | %-8s' "µs/q@$q" "lost@$q" "QPS@$q"); done
header+=$(printf ' | %-9s | %-8s | %-8s | %-8s | %-8s | %-7s | %-7s | %-9s | %-7s | %-8s | %-7s' \
  "sat QPS" "sat CPU%" "lost@sat" "QPS/core" "half QPS" "p50 ms" "p99 ms" "lost@half" "RSS MiB" "anon MiB" "start s")
echo "$header"
for s in "${ran[@]}"; do
  line=$(printf '%-15s' "$s")
  for q in $QPS; do line+=$(printf ' | %-10s | %-8s | %-8s' "${R[$s.fixed_us.$q]}" "${R[$s.fixed_lost.$q]}" "${R[$s.fixed_qps.$q]}"); done
  per_core=$(python3 -c "print(f'{float(\"${R[$s.sat_qps]}\")/max(float(\"${R[$s.sat_cpu]}\"),1)*100:.0f}')")
  line+=$(printf ' | %-9.0f | %-8s | %-8s | %-8s | %-8s | %-7s | %-7s | %-9s | %-7s | %-8s | %-7s' "${R[$s.sat_qps]}" "${R[$s.sat_cpu]}" \
    "${R[$s.sat_lost]}" "$per_core" "${R[$s.half]}" "${R[$s.p50]}" "${R[$s.p99]}" "${R[$s.half_lost]}" "${R[$s.rss]}" "${R[$s.anon]}" "${R[$s.start]}")
  echo "$line"
done
if [ -n "${R[floor.sat_qps]:-}" ] && [ -n "${R[pdns.sat_qps]:-}" ]; then
  for q in $QPS; do
    python3 -c "print(f'floor/pdns at $q QPS: CPU per query {float(\"${R[floor.fixed_us.$q]}\")/float(\"${R[pdns.fixed_us.$q]}\"):.2f} (no server on the kernel UDP stack costs less)')"
  done
fi
if [ -n "${R[qorgan.cold]:-}" ]; then echo "qorgan cold start (compiling the lists): ${R[qorgan.cold]} s"; fi
if [ -n "${R[qorgan.sat_qps]:-}" ]; then
  for peer in "${ran[@]}"; do
    [ "$peer" = qorgan ] && continue
    for q in $QPS; do
      python3 -c "print(f'qorgan/$peer at $q QPS: CPU per query {float(\"${R[qorgan.fixed_us.$q]}\")/float(\"${R[$peer.fixed_us.$q]}\"):.2f}')"
    done
    python3 -c "
q = float('${R[qorgan.sat_qps]}') / max(float('${R[qorgan.sat_cpu]}'), 1)
p = float('${R[$peer.sat_qps]}') / max(float('${R[$peer.sat_cpu]}'), 1)
print(f'qorgan/$peer: saturated QPS per core ' + (f'{q/p:.2f}' if p else 'n/a (the peer passed no rung)') + f', RSS {float(\"${R[qorgan.rss]}\")/float(\"${R[$peer.rss]}\"):.2f}')"
  done
fi
