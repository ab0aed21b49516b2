"""D3 (RELIABILITY.md): ISC genreport's EDNS and FULL probes, re-implemented with dnspython and
judged by the expectations of RFC 8906, RFC 6891 and RFC 1035 for a recursive resolver.

Run by tests/compliance.sh:

    compliance.py zone FILE                     # writes the upstream's zone compliance.example.
    compliance.py run PORT [LABEL]              # probes 127.0.0.1:PORT, prints D3: n/N
                                                # (a LABEL: a reference server, no packets shown)

genreport asks an authoritative server about its own zone; here the server under test is a
resolver forwarding to nsd, which serves compliance.example. So where genreport expects AA=1 we
expect AA=0 and RA=1 (the answer comes from a cache or the upstream, not from a zone of ours).
Each probe is sent as genreport sends it: over UDP, and over TCP for `tcp` and `ednstcp`. A
probe fails on any violated expectation; the failure shows the exact query in hex.
"""

import base64
import random
import sys

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

ZONE = "compliance.example."
TIMEOUT = 3.0
TRIES = 2
Z_FLAG = 0x0040
UNKNOWN_OPTION = 100
NSID, ECS, EXPIRE, COOKIE = 3, 8, 9, 10
CLIENT_COOKIE = bytes.fromhex("0102030405060708")

# genreport's option blobs (code, data).
OPT_100 = [(UNKNOWN_OPTION, b"")]
OPT_NSID = [(NSID, b"")]
OPT_ECS = [(ECS, b"\x00\x01\x00\x00")]  # IPv4, source /0, scope /0
OPT_EXPIRE = [(EXPIRE, b"")]
OPT_COOKIE = [(COOKIE, CLIENT_COOKIE)]
OPT_LIST = OPT_NSID + OPT_ECS + OPT_EXPIRE + OPT_COOKIE


def zone(path):
    """compliance.example.: a SOA to ask for, and a DNSKEY RRset (three 2048-bit keys, random
    bytes: nothing validates here) that cannot fit 512 octets, for edns@512 and ednstcp."""
    rng = random.Random(3)
    keys = [base64.b64encode(bytes(rng.randrange(256) for _ in range(260))).decode() for _ in range(3)]
    with open(path, "w") as f:
        f.write(f"""$TTL 3600
$ORIGIN {ZONE}
@   IN SOA ns hostmaster 2026120201 3600 600 86400 300
@   IN NS  ns
ns  IN A   127.0.0.1
""")
        for i, k in enumerate(keys):
            f.write(f"@   IN DNSKEY {257 if i == 0 else 256} 3 8 {k}\n")


# name, transport, qtype, header bits, opcode, EDNS (None or dict), expectation
#   header bits: a set of "aa ad cd ra rd tc z"; EDNS: version, payload, flags (16-bit), options.
def P(name, qtype="SOA", bits=(), opcode=0, edns=None, tcp=False, expect="soa"):
    return {"name": name, "qtype": qtype, "bits": set(bits), "opcode": opcode, "edns": edns,
            "tcp": tcp, "expect": expect}


def E(version=0, payload=4096, flags=0, options=()):
    return {"version": version, "payload": payload, "flags": flags, "options": list(options)}


DO = 0x8000
PROBES = [
    # genreport "dns" .. "tcp" (plain DNS, no EDNS)
    P("dns"),
    P("aa", bits={"aa"}),
    P("ad", bits={"ad"}),
    P("cd", bits={"cd"}),
    P("ra", bits={"ra"}),
    P("rd", bits={"rd"}),
    P("tc", bits={"tc"}),
    P("zflag", bits={"z"}),
    P("opcode", qtype=None, opcode=15, expect="notimp"),
    P("opcodeflg", qtype=None, opcode=15, bits={"tc", "rd", "ra", "cd", "ad", "aa", "z"},
      expect="notimp"),
    P("type666", qtype=666, expect="nodata"),
    P("tcp", tcp=True),
    # EDNS
    P("edns", edns=E()),
    P("edns1", edns=E(version=1), expect="badvers"),
    P("edns@512", qtype="DNSKEY", edns=E(payload=512, flags=DO), expect="dnskey-512"),
    P("ednsopt", edns=E(options=OPT_100)),
    P("edns1opt", edns=E(version=1, options=OPT_100), expect="badvers"),
    P("do", edns=E(flags=DO)),
    P("docd", bits={"cd"}, edns=E(flags=DO)),
    P("edns1do", edns=E(version=1, flags=DO), expect="badvers"),
    P("ednsflags", edns=E(flags=0x0080)),
    P("optlist", edns=E(options=OPT_LIST)),
    P("ednsnsid", edns=E(options=OPT_NSID)),
    P("ednscookie", edns=E(options=OPT_COOKIE)),
    P("ednsexpire", edns=E(options=OPT_EXPIRE)),
    P("ednssubnet", edns=E(options=OPT_ECS)),
    P("edns1nsid", edns=E(version=1, options=OPT_NSID), expect="badvers"),
    P("edns1cookie", edns=E(version=1, options=OPT_COOKIE), expect="badvers"),
    P("edns1expire", edns=E(version=1, options=OPT_EXPIRE), expect="badvers"),
    P("edns1subnet", edns=E(version=1, options=OPT_ECS), expect="badvers"),
    P("ednstcp", qtype="DNSKEY", edns=E(payload=512, flags=DO), tcp=True, expect="dnskey"),
    # genreport's COMM probes (what BIND 9.11 and dig 9.11 send)
    P("bind11", edns=E(flags=DO, options=OPT_COOKIE)),
    P("dig11", bits={"rd", "ad"}, edns=E(options=OPT_COOKIE)),
]

BITS = {"aa": dns.flags.AA, "ad": dns.flags.AD, "cd": dns.flags.CD, "ra": dns.flags.RA,
        "rd": dns.flags.RD, "tc": dns.flags.TC, "z": Z_FLAG}


def build(p, qid):
    """The probe's query as wire bytes (dnspython builds it; the header is set bit by bit)."""
    m = dns.message.Message(id=qid)
    if p["qtype"] is not None:
        m.question.append(dns.rrset.RRset(dns.name.from_text(ZONE), dns.rdataclass.IN,
                                          dns.rdatatype.RdataType.make(p["qtype"])))
    flags = dns.opcode.to_flags(p["opcode"])
    for b in p["bits"]:
        flags |= BITS[b]
    m.flags = flags
    e = p["edns"]
    if e is not None:
        m.use_edns(e["version"], e["flags"], e["payload"],
                   options=[dns.edns.GenericOption(code, data) for code, data in e["options"]])
    return m.to_wire()


def send(wire, port, tcp):
    """The raw answer to `wire`, or an error text after TRIES tries (UDP) or one (TCP)."""
    import socket
    import struct
    last = "no answer"
    for _ in range(1 if tcp else TRIES):
        try:
            if tcp:
                with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
                    s.sendall(struct.pack("!H", len(wire)) + wire)
                    head = b""
                    while len(head) < 2:
                        chunk = s.recv(2 - len(head))
                        if not chunk:
                            return "connection closed before an answer"
                        head += chunk
                    n = struct.unpack("!H", head)[0]
                    data = b""
                    while len(data) < n:
                        chunk = s.recv(n - len(data))
                        if not chunk:
                            return f"connection closed after {len(data)} of {n} octets"
                        data += chunk
                    return data
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(TIMEOUT)
                s.sendto(wire, ("127.0.0.1", port))
                while True:
                    data, _ = s.recvfrom(65535)
                    if data[:2] == wire[:2]:
                        return data
        except OSError as e:
            last = f"{type(e).__name__}: {e}"
    return last


def judge(p, wire, data):
    """The list of violated expectations (empty: compliant)."""
    if isinstance(data, str):
        return [f"no answer: {data}"]
    if p["opcode"] != 0:
        return judge_header_only(p, wire, data)
    out = []
    try:
        r = dns.message.from_wire(data)
    except Exception as e:  # noqa: BLE001 - an unparsable answer is the finding
        try:
            r = dns.message.from_wire(data, ignore_trailing=True)
            out.append(f"malformed answer ({type(e).__name__}: {e})")
        except Exception as e2:  # noqa: BLE001
            return [f"unparsable answer: {type(e2).__name__}: {e2}", f"answer {data.hex()}"]
    q = dns.message.from_wire(wire)
    flags = r.flags
    expect = p["expect"]
    # Header (RFC 1035 4.1.1, RFC 6895 2): QR set, ID and opcode copied, RD copied, Z zero.
    if not flags & dns.flags.QR:
        out.append("QR=0")
    if dns.opcode.from_flags(flags) != p["opcode"]:
        out.append(f"opcode {dns.opcode.from_flags(flags)}, asked {p['opcode']}")
    if bool(flags & dns.flags.RD) != ("rd" in p["bits"]):
        out.append("RD not copied")
    if flags & Z_FLAG:
        out.append("Z set in the answer")
    if expect != "notimp":
        # A resolver: recursion available, never authoritative for what it relays, no AD on
        # data it did not validate (RFC 4035 3.2.3), CD copied (RFC 4035 3.2.2).
        if not flags & dns.flags.RA:
            out.append("RA=0 from a resolver")
        if flags & dns.flags.AA:
            out.append("AA=1 on a relayed answer")
        if flags & dns.flags.AD:
            out.append("AD=1 without validation")
        if bool(flags & dns.flags.CD) != ("cd" in p["bits"]):
            out.append("CD not copied")
        if len(r.question) != 1 or r.question[0].to_text() != q.question[0].to_text():
            out.append(f"question not echoed: {[x.to_text() for x in r.question]}")
    # EDNS (RFC 6891 6.1.1, 6.1.3, 7): an OPT answers an OPT, always version 0.
    e = p["edns"]
    if e is None:
        if r.edns >= 0:
            out.append("OPT in the answer to a query without EDNS")
    elif r.edns < 0:
        out.append("no OPT in the answer to an EDNS query")
    else:
        if r.edns != 0:
            out.append(f"OPT version {r.edns}, not 0")
        if expect != "badvers":
            if bool(r.ednsflags & dns.flags.DO) != bool(e["flags"] & DO):
                out.append("DO bit not copied (RFC 3225 3)")
        if r.ednsflags & 0x7FFF:
            out.append(f"unknown EDNS flags {r.ednsflags & 0x7FFF:#06x} set in the answer "
                       "(RFC 6891 6.1.4: ignored, not echoed)")
        codes = [int(o.otype) for o in r.options]
        if UNKNOWN_OPTION in codes:
            out.append("unknown option 100 echoed (RFC 6891 6.1.2: ignored)")
        for o in r.options:
            if int(o.otype) == COOKIE:
                raw = o.to_wire() if hasattr(o, "to_wire") else o.data
                if raw[:8] != CLIENT_COOKIE or len(raw) not in (8, 16, 24, 32, 40):
                    out.append(f"COOKIE answered with {raw.hex()} (RFC 7873 5.2: the client cookie first)")
                if (COOKIE, CLIENT_COOKIE) not in e["options"]:
                    out.append("COOKIE in the answer to a query without one")
            if int(o.otype) == ECS and (ECS, OPT_ECS[0][1]) not in e["options"]:
                out.append("ECS in the answer to a query without one (RFC 7871 7.2.1)")
            if int(o.otype) in (NSID, EXPIRE) and not any(c == int(o.otype) for c, _ in e["options"]):
                out.append(f"option {int(o.otype)} in the answer to a query without it")
    # Rcode and sections.
    rcode = r.rcode()
    tc = bool(flags & dns.flags.TC)
    if expect == "notimp":
        if rcode != dns.rcode.NOTIMP:
            out.append(f"rcode {dns.rcode.to_text(rcode)}, want NOTIMP (RFC 8906 8.1.3)")
        if tc:
            out.append("TC set")
        if flags & dns.flags.AA or flags & dns.flags.AD:
            out.append("AA or AD set on NOTIMP")
    elif expect == "badvers":
        if rcode != dns.rcode.BADVERS:
            out.append(f"rcode {dns.rcode.to_text(rcode)}, want BADVERS (RFC 6891 6.1.3)")
        if r.answer:
            out.append("answer records with BADVERS")
    else:
        if rcode != dns.rcode.NOERROR:
            out.append(f"rcode {dns.rcode.to_text(rcode)}, want NOERROR")
        if expect == "dnskey-512":
            # The DNSKEY RRset cannot fit 512 octets: a truncated answer, within the size the
            # client offered, with the OPT (RFC 6891 7).
            if len(data) > 512:
                out.append(f"{len(data)} octets over UDP to a client offering 512")
            if not tc:
                if sum(len(x) for x in r.answer if x.rdtype == dns.rdatatype.DNSKEY) != 3:
                    out.append("no TC, and not the whole DNSKEY RRset")
        elif tc:
            out.append("TC set on a small answer")
        elif expect == "soa":
            if [x.rdtype for x in r.answer] != [dns.rdatatype.SOA]:
                out.append(f"answer {[x.to_text() for x in r.answer]}, want the SOA")
        elif expect == "nodata":
            if r.answer:
                out.append(f"answer records for TYPE666: {[x.to_text() for x in r.answer]}")
            if not any(x.rdtype == dns.rdatatype.SOA for x in r.authority):
                out.append("NODATA without the SOA (RFC 2308 2.2)")
        elif expect == "dnskey":
            if sum(len(x) for x in r.answer if x.rdtype == dns.rdatatype.DNSKEY) != 3:
                out.append(f"answer {[x.to_text()[:60] for x in r.answer]}, want 3 DNSKEY")
    return out


def judge_header_only(p, wire, data):
    """An unknown opcode's answer, read by hand (dnspython refuses to parse opcode 15): NOTIMP
    (RFC 8906 8.1.3), QR set, ID and opcode copied, RD copied, no AA/TC/Z/AD; no OPT asked."""
    if len(data) < 12:
        return [f"answer of {len(data)} octets, shorter than a header", f"answer {data.hex()}"]
    out = []
    flags = int.from_bytes(data[2:4], "big")
    if data[:2] != wire[:2]:
        out.append("ID not copied")
    if not flags & dns.flags.QR:
        out.append("QR=0")
    if (flags >> 11) & 0xF != p["opcode"]:
        out.append(f"opcode {(flags >> 11) & 0xF}, asked {p['opcode']}")
    if flags & 0xF != dns.rcode.NOTIMP:
        out.append(f"rcode {dns.rcode.to_text(flags & 0xF)}, want NOTIMP (RFC 8906 8.1.3)")
    if bool(flags & dns.flags.RD) != ("rd" in p["bits"]):
        out.append("RD not copied")
    for name, bit in (("AA", dns.flags.AA), ("TC", dns.flags.TC), ("Z", Z_FLAG), ("AD", dns.flags.AD)):
        if flags & bit:
            out.append(f"{name} set on NOTIMP")
    if int.from_bytes(data[10:12], "big") and not p["edns"]:
        out.append("additional records (an OPT?) in the answer to a query without EDNS")
    if out:
        out.append(f"answer {data.hex()}")
    return out


def run(port, label):
    rng = random.Random()
    # genreport asks without RD (it talks to authoritative servers). A resolver answers RD=0
    # from its cache (RFC 1034 4.3.1), so the names are cached first with RD=1.
    for qtype in ("SOA", "DNSKEY", 666):
        send(build(P("prime", qtype=qtype, bits={"rd"}, edns=E()), rng.randrange(1, 65536)),
             port, False)
    failures = []
    for p in PROBES:
        wire = build(p, rng.randrange(1, 65536))
        problems = judge(p, wire, send(wire, port, p["tcp"]))
        if problems:
            failures.append((p, wire, problems))
    ok = len(PROBES) - len(failures)
    print(f"D3: {ok}/{len(PROBES)} probes compliant{label}")
    for p, wire, problems in failures:
        via = "TCP" if p["tcp"] else "UDP"
        print(f"  FAIL {p['name']} ({via}): " + "; ".join(problems))
        if not label:
            print(f"       query {wire.hex()}")
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "zone":
        zone(sys.argv[2])
    elif len(sys.argv) in (3, 4) and sys.argv[1] == "run":
        sys.exit(run(int(sys.argv[2]), f" ({sys.argv[3]})" if len(sys.argv) == 4 else ""))
    else:
        sys.exit(__doc__)
