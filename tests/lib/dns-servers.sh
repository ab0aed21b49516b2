# Shared by the DNS script tests (tests/differential-unbound.sh, tests/compliance.sh): sourced,
# never run. It finds a Python with dnspython, picks free loopback ports, and starts nsd, qorgan
# and Unbound on 127.0.0.1 in a work directory, recording every PID in the caller's `pids`
# array (the caller's EXIT trap kills them by PID). Nothing here reaches beyond 127.0.0.1.
#
# The caller sets, before sourcing: `root` (the repo), `work` (a mktemp -d) and `pids=()`.

# dns_python: prints a Python 3 that imports dnspython (Debian's python3-dnspython goes with the
# system interpreter, which a pyenv or venv `python3` earlier in PATH may hide).
dns_python() {
  local py
  for py in python3 python3.13 python3.12 python3.11 /usr/bin/python3; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import dns.message, dns.query' 2>/dev/null; then
      command -v "$py"
      return 0
    fi
  done
  echo "no Python 3 with dnspython (apt-get install python3-dnspython)" >&2
  return 1
}

# free_ports N: prints N loopback ports free for UDP and TCP now, below the ephemeral range
# (tests/lib/free_ports.py says why).
free_ports() {
  "$PY" "$root/tests/lib/free_ports.py" "$1"
}

# start_nsd PORT ZONE_FILE...: nsd on 127.0.0.1:PORT (UDP and TCP) serving each file; a file
# named `<origin>zone` (e.g. `root.zone` for ".", `compliance.test.zone`) gives its origin.
start_nsd() {
  local port=$1; shift
  local dir="$work/nsd"
  mkdir -p "$dir"
  {
    cat <<CONF
server:
  ip-address: 127.0.0.1@$port
  username: ""
  zonesdir: "$dir"
  database: ""
  zonelistfile: "$dir/zone.list"
  xfrdfile: "$dir/xfrd.state"
  pidfile: "$dir/nsd.pid"
  logfile: "$dir/nsd.log"
  server-count: 1
  verbosity: 0
  refuse-any: no
  rrl-ratelimit: 0          # no response rate limiting: the tests' bursts are not an attack
remote-control:
  control-enable: no
CONF
    local f base origin
    for f in "$@"; do
      base=$(basename "$f")
      cp "$f" "$dir/$base"
      origin=${base%zone}
      [ "$origin" = root. ] && origin=.
      printf 'zone:\n  name: "%s"\n  zonefile: "%s"\n' "$origin" "$base"
    done
  } > "$dir/nsd.conf"
  nsd -d -c "$dir/nsd.conf" &
  pids+=($!)
}

# start_qorgan DNS_PORT UPSTREAM_PORT LISTS_DIR CATEGORIES: `qorgan serve` on 127.0.0.1:DNS_PORT
# forwarding to 127.0.0.1:UPSTREAM_PORT, unknown clients on the default policy (NXDOMAIN) for
# 127.0.0.0/8 with CATEGORIES (a TOML array body, e.g. `"ads", "malware"`). HTTP and metrics
# take port 0 (any free port).
start_qorgan() {
  local dns_port=$1 up_port=$2 lists=$3 cats=$4
  cat > "$work/qorgan.toml" <<CONF
[dns]
listen = ["127.0.0.1:$dns_port"]
upstreams = ["127.0.0.1:$up_port"]
unknown_clients = "default"
[http]
listen = "127.0.0.1:0"
[metrics]
listen = "127.0.0.1:0"
[storage]
data_dir = "$work/qdata"
[lists]
dir = "$lists"
watch = false
[default_policy]
networks = ["127.0.0.0/8"]
categories = [$cats]
block_mode = "nxdomain"
CONF
  "$QORGAN_BIN" serve --config "$work/qorgan.toml" > "$work/qorgan.log" 2>&1 &
  pids+=($!)
}

# start_unbound PORT UPSTREAM_PORT: Unbound on 127.0.0.1:PORT forwarding everything to
# 127.0.0.1:UPSTREAM_PORT (as benches/load/side-by-side.sh configures it), no DNSSEC validation
# (module-config "iterator"), one thread.
start_unbound() {
  local port=$1 up_port=$2
  cat > "$work/unbound-$port.conf" <<CONF
server:
  interface: 127.0.0.1@$port
  port: $port
  username: ""
  chroot: ""
  directory: "$work"
  pidfile: "$work/unbound-$port.pid"
  use-syslog: no
  logfile: ""
  verbosity: 0
  num-threads: 1
  module-config: "iterator"
  do-not-query-localhost: no
  # allow_snoop: answers RD=0 queries from the cache (tests/compliance.py sends genreport's RD=0).
  access-control: 127.0.0.0/8 allow_snoop
  # Unbound's defaults, spelled out because the differential test normalises around them.
  minimal-responses: yes
  qname-minimisation: no
remote-control:
  control-enable: no
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@$up_port
CONF
  unbound -d -c "$work/unbound-$port.conf" > "$work/unbound-$port.log" 2>&1 &
  pids+=($!)
}

# wait_answer PORT NAME: waits (at most 20 s) until 127.0.0.1:PORT answers NAME/A with NOERROR.
wait_answer() {
  "$PY" - "$1" "$2" <<'PY'
import sys, time
import dns.message, dns.query, dns.rcode
port, name = int(sys.argv[1]), sys.argv[2]
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    try:
        r = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=0.5)
        if r.rcode() == dns.rcode.NOERROR and r.answer:
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.1)
print(f"127.0.0.1:{port} did not answer {name} within 20 s", file=sys.stderr)
sys.exit(1)
PY
}
