"""D8 (RELIABILITY.md): differential test of qorgan against Unbound, both forwarding to one nsd.

Run by tests/differential-unbound.sh, in two steps:

    differential_unbound.py prepare WORK POPULAR_DIR   # writes WORK/root.zone, WORK/lists/, WORK/corpus.json
    differential_unbound.py run WORK QORGAN_PORT UNBOUND_PORT NSD_PORT

`prepare` builds the upstream's zone (a root zone: a wildcard that answers every popular name,
and a few hundred explicit names under `d8.` with CNAME chains, several A/AAAA, MX, TXT up to
1.4 kB, NXDOMAIN subtrees, empty non-terminals and NODATA for AAAA), the block lists, and a
corpus of queries (the names in mixed case, types A/AAAA/MX/TXT/CNAME/ANY, with and without
EDNS, with the DO bit, some CD). `run` sends each query to both servers over UDP (and both again
over TCP when both truncated), then compares them: rcode, the QR/AA/TC/RD/RA flags, the OPT
(present, version, DO, options), the question exactly as sent (case included), the answer
RRsets as sets (TTLs within a tolerance), and the negative answers' SOA. Names on the block list
must instead be answered as the policy says: NXDOMAIN with EDE 15 from qorgan, NOERROR from
Unbound. Every normalisation below is a protocol difference that is allowed, with its reason.

All traffic goes to 127.0.0.1; every query has a timeout and a bounded number of tries.
"""

import json
import os
import random
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype

SEED = 8
# Corpus size: the explicit names with every type, plus popular names, plus repeats.
POPULAR_NAMES = 4500
REPEAT_SHARE = 0.2
# Unbound and qorgan fetch each RRset at their own moment and count its TTL down on their own
# clocks: the same RRset may differ by the seconds between the two fetches.
TTL_TOLERANCE = 10
UDP_TIMEOUT = 3.0
TRIES = 2
WORKERS = 12
EDE_OPTION = 15
EDE_BLOCKED = 15
NAME_RE = re.compile(r"^[a-z0-9-]{1,63}(\.[a-z0-9-]{1,63})+$")

ZONE_HEAD = """$TTL 3600
.                 3600 IN SOA ns.invalid. hostmaster.invalid. 2026120201 3600 600 86400 300
.                 3600 IN NS  ns.invalid.
; Every name outside d8. (the popular names) is answered by the wildcard.
*.                3600 IN A     192.0.2.1
*.                3600 IN A     192.0.2.2
*.                3600 IN AAAA  2001:db8::1
*.                1800 IN MX    10 mx1.d8.
*.                1800 IN MX    20 mx2.d8.
*.                 900 IN TXT   "v=spf1 -all"
mx1.d8.           3600 IN A     192.0.2.25
mx2.d8.           3600 IN A     192.0.2.26
mx2.d8.           3600 IN AAAA  2001:db8::26
; A wildcard inside d8. for CNAME targets.
*.wild.d8.         600 IN A     192.0.2.77
*.wild.d8.         600 IN TXT   "wild"
"""

TTLS = [60, 300, 900, 3600, 86400]


def txt_strings(rng, total):
    """TXT character-strings of up to 200 octets adding up to about `total` octets."""
    out = []
    while total > 0:
        n = min(200, total)
        out.append("".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(n)))
        total -= n
    return " ".join(f'"{s}"' for s in out)


def build_zone(rng, popular_sample):
    """The explicit names: zone lines, and per name its kind (for the report) and whether it
    is blocked (by the list, or through a CNAME to a listed name)."""
    lines = []
    kinds = {}
    n = 30
    for i in range(n):
        ttl = rng.choice(TTLS)
        # Several A, several or no AAAA (NODATA for AAAA when none).
        name = f"a{i}.d8."
        for k in range(rng.randint(1, 6)):
            lines.append(f"{name} {ttl} IN A 198.51.100.{(i * 7 + k) % 250 + 1}")
        for k in range(rng.choice([0, 0, 1, 2, 3])):
            lines.append(f"{name} {ttl} IN AAAA 2001:db8:a::{i:x}:{k + 1:x}")
        kinds[name] = "multi-a"
        # A, AAAA, MX and TXT on one node (ANY, and every type has data).
        name = f"mixed{i}.d8."
        lines += [
            f"{name} 3600 IN A 203.0.113.{i + 1}",
            f"{name} 3600 IN AAAA 2001:db8:b::{i + 1:x}",
            f"{name} 1800 IN MX 5 mx1.d8.",
            f'{name} 900 IN TXT "mixed {i}" "second string"',
        ]
        if i % 5 == 0:
            lines.append(f"{name} 900 IN TXT {txt_strings(rng, 700)}")
        kinds[name] = "mixed"
        # CNAME chains of 1 to 3 links ending at a multi-A name.
        length = i % 3 + 1
        for link in range(length):
            here = f"c{i}.d8." if link == 0 else f"c{i}-{link}.d8."
            there = f"a{(i * 3) % n}.d8." if link == length - 1 else f"c{i}-{link + 1}.d8."
            lines.append(f"{here} {rng.choice(TTLS)} IN CNAME {there}")
            kinds[here] = f"cname-chain-{length - link}"
        # A CNAME to a name that does not exist: NXDOMAIN with the CNAME in the answer.
        lines.append(f"cnx{i}.d8. 300 IN CNAME gone-cnx{i}.d8.")
        kinds[f"cnx{i}.d8."] = "cname-to-nxdomain"
        # A CNAME into the d8 wildcard, and one out to a popular (root wildcard) name.
        lines.append(f"cw{i}.d8. 600 IN CNAME host{i}.wild.d8.")
        kinds[f"cw{i}.d8."] = "cname-to-wildcard"
        lines.append(f"cext{i}.d8. 600 IN CNAME {popular_sample[i]}.")
        kinds[f"cext{i}.d8."] = "cname-to-popular"
        # MX with in-zone targets (additional data from nsd).
        name = f"m{i}.d8."
        for k in range(i % 3 + 1):
            lines.append(f"{name} 3600 IN MX {10 * (k + 1)} mail{k}.m{i}.d8.")
            lines.append(f"mail{k}.m{i}.d8. 3600 IN A 192.0.2.{100 + k}")
        kinds[name] = "mx"
        # TXT: short, or long enough to be truncated without EDNS (700 B), or even with EDNS
        # at 1232 (1400 B, so both servers go to TCP upstream and answer TC=1 over UDP).
        name = f"t{i}.d8."
        size = 1400 if i % 10 == 0 else 700 if i % 3 == 0 else 60
        lines.append(f"{name} 900 IN TXT {txt_strings(rng, size)}")
        if i % 4 == 1:
            lines.append(f'{name} 900 IN TXT "another" "txt"')
        kinds[name] = f"txt-{size}"
        # An empty non-terminal: NODATA for every type.
        lines.append(f"x.ent{i}.d8. 300 IN A 192.0.2.9")
        kinds[f"ent{i}.d8."] = "empty-non-terminal"
        kinds[f"x.ent{i}.d8."] = "below-ent"
        # NXDOMAIN subtrees: nothing at or below these names.
        kinds[f"gone{i}.d8."] = "nxdomain"
        kinds[f"deep.er.gone{i}.d8."] = "nxdomain-deep"
        kinds[f"sub.a{i}.d8."] = "nxdomain-below-a"
        # Blocked by the list (and what the list covers below it), and through a CNAME.
        lines.append(f"blk{i}.d8. 300 IN A 192.0.2.66")
        lines.append(f"*.blk{i}.d8. 300 IN A 192.0.2.67")
        lines.append(f"cb{i}.d8. 300 IN CNAME blk{i}.d8.")
        kinds[f"blk{i}.d8."] = "blocked"
        kinds[f"www.blk{i}.d8."] = "blocked-subdomain"
        kinds[f"cb{i}.d8."] = "blocked-by-cname"
    for i in range(10):
        # 40 A records: a 12 + 40 * 16 byte answer, TC without EDNS.
        name = f"many{i}.d8."
        for k in range(40):
            lines.append(f"{name} 300 IN A 10.{i}.{k}.1")
        kinds[name] = "a-x40"
    return lines, kinds


def popular(popular_dir):
    names = []
    for fn in ("tranco-top-100k.txt", "umbrella-top-100k.txt"):
        path = os.path.join(popular_dir, fn)
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                n = line.strip().split(",")[-1].lower().rstrip(".")
                if NAME_RE.match(n) and not n.endswith((".d8", ".invalid")) and len(n) < 200:
                    names.append(n)
    return list(dict.fromkeys(names))


def covered(name, listed):
    labels = name.rstrip(".").split(".")
    return any(".".join(labels[i:]) in listed for i in range(len(labels)))


def mixed_case(rng, name):
    mode = rng.random()
    if mode < 0.4:
        return name
    if mode < 0.8:
        return "".join(c.upper() if rng.random() < 0.5 else c for c in name)
    return name.upper()


def prepare(work, popular_dir):
    rng = random.Random(SEED)
    names = popular(popular_dir)
    if len(names) < POPULAR_NAMES + 200:
        sys.exit(f"only {len(names)} usable popular names in {popular_dir}")
    chosen = names[:POPULAR_NAMES]
    # The block list: every 40th popular name (so their subdomains in the corpus are blocked
    # too), the blk<i>.d8 names, and one popular name that a cext<i>.d8 CNAME points at.
    listed_popular = chosen[::40]
    cext_targets = [n for n in chosen[1000:] if not covered(n, set(listed_popular))][:30]
    cext_targets[7] = listed_popular[3]
    zone_lines, kinds = build_zone(rng, cext_targets)
    with open(os.path.join(work, "root.zone"), "w") as f:
        f.write(ZONE_HEAD)
        f.write("\n".join(zone_lines) + "\n")
    os.makedirs(os.path.join(work, "lists", "ads"), exist_ok=True)
    os.makedirs(os.path.join(work, "lists", "malware"), exist_ok=True)
    with open(os.path.join(work, "lists", "ads", "d8.txt"), "w") as f:
        f.write("# D8 test list: plain domains cover the name and its subdomains\n")
        f.write("\n".join(listed_popular) + "\n")
    with open(os.path.join(work, "lists", "malware", "d8.txt"), "w") as f:
        f.write("! D8 test list, adblock syntax\n")
        f.write("\n".join(f"||blk{i}.d8^" for i in range(30)) + "\n")
    listed = set(listed_popular) | {f"blk{i}.d8" for i in range(30)}
    # CNAME owners whose chain reaches a listed name (qorgan checks every CNAME target).
    cname_blocked = {"cb%d.d8." % i for i in range(30)} | {"cext7.d8."}

    base = []  # (name, type, kind)
    for name, kind in kinds.items():
        for t in ("A", "AAAA", "MX", "TXT", "CNAME", "ANY"):
            base.append((name, t, kind))
    weights = [("A", 40), ("AAAA", 25), ("MX", 10), ("TXT", 10), ("CNAME", 5), ("ANY", 10)]
    types = [t for t, w in weights for _ in range(w)]
    for n in chosen:
        for t in {rng.choice(types) for _ in range(rng.choice([1, 1, 2]))}:
            base.append((n + ".", t, "popular"))
    rng.shuffle(base)
    repeats = rng.sample(base, int(len(base) * REPEAT_SHARE))
    # Answers larger than 512 (and 1232) octets, asked more often without EDNS or with 512:
    # truncation, then the TCP retry.
    big = [(name, "TXT" if kind.startswith(("txt", "mixed")) else "A", kind)
           for name, kind in kinds.items() if kind in ("txt-700", "txt-1400", "a-x40", "mixed")]
    big = [b for b in big if b[2] != "mixed" or b[0] in {f"mixed{i}.d8." for i in range(0, 30, 5)}]
    plan = [(b, "any") for b in base + repeats] + [(b, e) for b in big for e in (None, None, 512, 1232)]
    rng.shuffle(plan)
    corpus = []
    for (name, qtype, kind), edns in plan:
        if edns == "any":
            r = rng.random()
            edns = None if r < 0.3 else 1232 if r < 0.6 else 4096 if r < 0.85 else 512
        # qorgan answers ANY itself (RFC 8482) without a lookup, so it sees no CNAME to check.
        blocked = covered(name, listed) or (name in cname_blocked and qtype != "ANY")
        corpus.append({
            "name": mixed_case(rng, name),
            "type": qtype,
            "kind": kind,
            "edns": edns,
            "do": edns is not None and rng.random() < 0.3,
            "cd": rng.random() < 0.1,
            "blocked": blocked,
        })
    with open(os.path.join(work, "corpus.json"), "w") as f:
        json.dump(corpus, f)
    print(f"zone: {len(kinds)} explicit names + the wildcard; list: {len(listed)} rules; "
          f"corpus: {len(corpus)} queries ({sum(q['blocked'] for q in corpus)} on blocked names)")


# ---- run -------------------------------------------------------------------------------------

def make_query(q):
    m = dns.message.make_query(
        dns.name.from_text(q["name"]), dns.rdatatype.from_text(q["type"]),
        use_edns=0 if q["edns"] is not None else False,
        payload=q["edns"] or 1232,
        want_dnssec=q["do"],
    )
    m.flags |= dns.flags.RD
    if q["cd"]:
        m.flags |= dns.flags.CD
    return m


def ask(m, port, tcp=False):
    """The server's answer to `m`, or the error text after TRIES tries."""
    last = None
    for _ in range(TRIES):
        try:
            if tcp:
                return dns.query.tcp(m, "127.0.0.1", port=port, timeout=UDP_TIMEOUT)
            return dns.query.udp(m, "127.0.0.1", port=port, timeout=UDP_TIMEOUT,
                                 ignore_trailing=False, raise_on_truncation=False)
        except Exception as e:  # noqa: BLE001 - a timeout or a parse error is a finding
            last = f"{type(e).__name__}: {e}"
    return last


FLAGS = [("QR", dns.flags.QR), ("AA", dns.flags.AA), ("TC", dns.flags.TC),
         ("RD", dns.flags.RD), ("RA", dns.flags.RA)]


def flag_text(r):
    return " ".join(n for n, f in FLAGS if r.flags & f) or "-"


def question_ok(query, r):
    """The answer's question is the query's, byte for byte: name in the client's case."""
    if len(r.question) != 1:
        return f"{len(r.question)} questions"
    a, b = query.question[0], r.question[0]
    if a.name.to_text() != b.name.to_text() or a.rdtype != b.rdtype or a.rdclass != b.rdclass:
        return f"question {b.name} {dns.rdatatype.to_text(b.rdtype)} (asked {a.name})"
    return None


def rrsets(section):
    """A section as {(owner lower-case, type): (ttl, frozenset(rdata text))}. DNS names compare
    case-insensitively (RFC 4343): only the question's echo is compared with its case."""
    out = {}
    for rr in section:
        key = (rr.name.to_text().lower(), dns.rdatatype.to_text(rr.rdtype))
        out[key] = (rr.ttl, frozenset(rd.to_text().lower() for rd in rr))
    return out


def opt_summary(r):
    if r.edns < 0:
        return None
    return {
        "version": r.edns,
        "do": bool(r.ednsflags & dns.flags.DO),
        "flags": r.ednsflags & ~dns.flags.DO & 0xFFFF,
        "options": sorted(o.otype for o in r.options),
    }


def ede_codes(r):
    codes = []
    for o in r.options:
        if int(o.otype) == EDE_OPTION:
            data = o.to_wire() if hasattr(o, "to_wire") else b""
            codes.append(int(o.code) if hasattr(o, "code") else int.from_bytes(data[:2], "big"))
    return codes


UPSTREAM = {"port": 0, "started": 0.0}


def ttl_check(query, section, key, qt, ut, diff):
    """TTLs within TTL_TOLERANCE of each other pass. Further apart, both must lie between the
    authoritative TTL (asked of nsd) and that TTL less the run's age: each cache counts down
    from its own fetch, and Unbound builds answers from RRsets it learnt by other queries (a
    CNAME met in another chain; an NXDOMAIN for the name under another type, RFC 2308 5),
    while qorgan's resolver caches per question and evicts sooner (dns.cache_size entries).
    A TTL above the authoritative one, or older than the run, is a difference."""
    if abs(qt - ut) <= TTL_TOLERANCE:
        return
    m = dns.message.make_query(query.question[0].name, query.question[0].rdtype)
    auth = ask(m, UPSTREAM["port"])
    if not isinstance(auth, str) and auth.flags & dns.flags.TC:
        # A large RRset (the TCP retries of truncated answers): nsd sends it over TCP only.
        auth = ask(m, UPSTREAM["port"], tcp=True)
    if isinstance(auth, str):
        diff(f"{section} {key} TTL qorgan {qt} vs unbound {ut}; nsd: {auth}")
        return
    got = rrsets(getattr(auth, section)).get(key)
    if got is None:
        diff(f"{section} {key} TTL qorgan {qt} vs unbound {ut}; nsd has no such RRset")
        return
    low = got[0] - (time.monotonic() - UPSTREAM["started"]) - TTL_TOLERANCE
    for name, ttl in (("qorgan", qt), ("unbound", ut)):
        if not low <= ttl <= got[0]:
            diff(f"{section} {key} TTL {name} {ttl}, the upstream's {got[0]} (qorgan {qt}, unbound {ut})")


def compare(q, query, qo, ub, diffs, notes, tcp=False):
    """Appends to `diffs` every unexpected difference between qorgan's answer `qo` and
    Unbound's `ub` to `query`."""
    where = f"{q['name']} {q['type']} edns={q['edns']} do={int(q['do'])} cd={int(q['cd'])}" + \
        (" tcp" if tcp else "") + f" [{q['kind']}]"

    def diff(what):
        diffs.append(f"{where}: {what}")

    if isinstance(qo, str) or isinstance(ub, str):
        if isinstance(qo, str):
            diff(f"qorgan: {qo}")
        if isinstance(ub, str):
            diff(f"unbound: {ub}")
        return
    for name, r in (("qorgan", qo), ("unbound", ub)):
        problem = question_ok(query, r)
        if problem:
            diff(f"{name}: {problem}")
        if r.id != query.id:
            diff(f"{name}: id {r.id} != {query.id}")
    if qo.opcode() != ub.opcode():
        diff(f"opcode {qo.opcode()} vs {ub.opcode()}")

    # OPT: present exactly when the query had one (RFC 6891 6.1.1), version 0, DO copied from the
    # query (RFC 3225 3), no unknown flags, the same options. Not compared: the payload size
    # each announces, which is the responder's own UDP limit (qorgan: the client's, between
    # 512 and 1232; Unbound: its edns-buffer-size, 1232), not part of the answer.
    qopt, uopt = opt_summary(qo), opt_summary(ub)
    if qopt != uopt:
        diff(f"OPT qorgan {qopt} vs unbound {uopt}")

    if q["type"] == "ANY":
        # RFC 8482: qorgan answers ANY with one synthesised HINFO "RFC8482" and asks nobody;
        # Unbound forwards ANY and relays what nsd has (every RRset, truncated without EDNS).
        # So rcode, TC and the sections are not comparable; the other flags are.
        for name, f in FLAGS:
            if name != "TC" and bool(qo.flags & f) != bool(ub.flags & f):
                diff(f"flag {name}: qorgan {flag_text(qo)} vs unbound {flag_text(ub)}")
        ok = (qo.rcode() == dns.rcode.NOERROR and len(qo.answer) == 1
              and qo.answer[0].rdtype == dns.rdatatype.HINFO and len(qo.answer[0]) == 1
              and qo.answer[0][0].cpu == b"RFC8482"
              and qo.answer[0].name == query.question[0].name)
        if not ok:
            diff(f"ANY: qorgan did not give the RFC 8482 HINFO: {dns.rcode.to_text(qo.rcode())} "
                 f"{[rr.to_text() for rr in qo.answer]}")
        # Noted, not failed: RFC 8482 4.2 synthesises HINFO "if there is no CNAME present at the
        # owner name"; qorgan synthesises without looking, for NXDOMAIN names and CNAMEs too.
        if ub.rcode() == dns.rcode.NXDOMAIN:
            notes["ANY on a name that does not exist: qorgan NOERROR/HINFO"] += 1
        elif any(rr.rdtype == dns.rdatatype.CNAME for rr in ub.answer):
            notes["ANY on a CNAME owner: qorgan HINFO instead of the CNAME"] += 1
        return

    if qo.rcode() != ub.rcode():
        diff(f"rcode qorgan {dns.rcode.to_text(qo.rcode())} vs unbound {dns.rcode.to_text(ub.rcode())}")
    if (qo.flags & 0x8780) != (ub.flags & 0x8780):  # QR AA TC RD RA
        diff(f"flags qorgan {flag_text(qo)} vs unbound {flag_text(ub)}")
    # AD: neither validates (Unbound runs without its validator, nsd signs nothing), so AD must
    # be clear in both. CD: copied from the query by both (RFC 4035 3.2.2).
    for name, r in (("qorgan", qo), ("unbound", ub)):
        if r.flags & dns.flags.AD:
            diff(f"{name}: AD set on unvalidated data")
        if bool(r.flags & dns.flags.CD) != bool(query.flags & dns.flags.CD):
            diff(f"{name}: CD not copied from the query")
    if qo.flags & dns.flags.TC and ub.flags & dns.flags.TC:
        # RFC 2181 9: a truncated answer is not used, the client asks again over TCP; what each
        # server left in it (Unbound: whole RRsets that fit; hickory: records that fit) is not
        # compared. The TCP retry is.
        return "tc"
    if (qo.flags ^ ub.flags) & dns.flags.TC:
        return None

    qa, ua = rrsets(qo.answer), rrsets(ub.answer)
    if set(qa) != set(ua):
        diff(f"answer RRsets qorgan {sorted(qa)} vs unbound {sorted(ua)}")
    for key in set(qa) & set(ua):
        (qt, qd), (ut, ud) = qa[key], ua[key]
        if qd != ud:
            diff(f"answer {key}: qorgan {sorted(qd)} vs unbound {sorted(ud)}")
        ttl_check(query, "answer", key, qt, ut, diff)
    # Negative answers (NXDOMAIN, or NODATA: no RRset of the type at the end of the chain) carry
    # the zone's SOA in both (RFC 2308 3), with the negative TTL. Authority and additional of
    # positive answers are not compared: Unbound runs with minimal-responses (its default, no NS
    # or glue it does not need), while qorgan relays what the upstream sent.
    rtype = dns.rdatatype.from_text(q["type"])
    positive = any(rr.rdtype == rtype for rr in qo.answer)
    if not positive and qo.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        qs = {k: v for k, v in rrsets(qo.authority).items() if k[1] == "SOA"}
        us = {k: v for k, v in rrsets(ub.authority).items() if k[1] == "SOA"}
        if set(qs) != set(us):
            diff(f"negative answer SOA qorgan {sorted(qs)} vs unbound {sorted(us)}")
        for key in set(qs) & set(us):
            ttl_check(query, "authority", key, qs[key][0], us[key][0], diff)
    return None


def check_blocked(q, query, qo, ub, diffs):
    """A listed name: qorgan answers NXDOMAIN (the default policy's block mode) with EDE 15 when
    the client speaks EDNS, and nothing else; Unbound, which knows no list, NOERROR."""
    where = f"{q['name']} {q['type']} edns={q['edns']} [{q['kind']}, blocked]"
    problems = []
    if isinstance(qo, str):
        problems.append(f"qorgan: {qo}")
    else:
        if qo.rcode() != dns.rcode.NXDOMAIN:
            problems.append(f"qorgan rcode {dns.rcode.to_text(qo.rcode())}, policy says NXDOMAIN")
        if qo.answer:
            problems.append(f"qorgan answer not empty: {[rr.to_text() for rr in qo.answer]}")
        if not any(rr.rdtype == dns.rdatatype.SOA for rr in qo.authority):
            problems.append("qorgan NXDOMAIN without a SOA")
        if (qo.flags & 0x8780) != (dns.flags.QR | dns.flags.RD | dns.flags.RA):
            problems.append(f"qorgan flags {flag_text(qo)}")
        problem = question_ok(query, qo)
        if problem:
            problems.append(f"qorgan: {problem}")
        if q["edns"] is None:
            if qo.edns >= 0:
                problems.append("qorgan sent an OPT to a client without EDNS")
        elif qo.edns < 0:
            problems.append("qorgan answered an EDNS query without an OPT")
        else:
            if EDE_BLOCKED not in ede_codes(qo):
                problems.append(f"qorgan without EDE 15 (options {[int(o.otype) for o in qo.options]})")
            if bool(qo.ednsflags & dns.flags.DO) != q["do"]:
                problems.append("qorgan OPT: DO not copied from the query (RFC 3225 3)")
    if isinstance(ub, str):
        problems.append(f"unbound: {ub}")
    elif ub.rcode() != dns.rcode.NOERROR:
        problems.append(f"unbound rcode {dns.rcode.to_text(ub.rcode())}, the zone has the name")
    diffs.extend(f"{where}: {p}" for p in problems)
    return not problems


def run(work, qport, uport, nsd_port):
    with open(os.path.join(work, "corpus.json")) as f:
        corpus = json.load(f)
    started = time.monotonic()
    UPSTREAM.update(port=nsd_port, started=started)
    notes = {
        "ANY on a name that does not exist: qorgan NOERROR/HINFO": 0,
        "ANY on a CNAME owner: qorgan HINFO instead of the CNAME": 0,
    }

    def one(q):
        query = make_query(q)
        qo, ub = ask(query, qport), ask(query, uport)
        diffs = []
        if q["blocked"]:
            ok = check_blocked(q, query, qo, ub, diffs)
            return ("blocked", ok, diffs, 1)
        local_notes = dict.fromkeys(notes, 0)
        sent = 1
        if compare(q, query, qo, ub, diffs, local_notes) == "tc":
            # Both truncated: the client's retry over TCP must get the same full answer.
            qo, ub = ask(query, qport, tcp=True), ask(query, uport, tcp=True)
            sent += 1
            if not isinstance(qo, str) and qo.flags & dns.flags.TC:
                diffs.append(f"{q['name']} {q['type']} tcp: qorgan TC=1 over TCP")
            compare(q, query, qo, ub, diffs, local_notes, tcp=True)
        return ("compared", local_notes, diffs, sent)

    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(one, corpus))
    sent = compared = blocked = differing = 0
    tcp = sum(n - 1 for _, _, _, n in results)
    diffs = []
    for kind, extra, d, n in results:
        sent += n
        diffs += d
        differing += bool(d)
        if kind == "blocked":
            blocked += extra
        else:
            compared += n
            for k, v in extra.items():
                notes[k] += v
    elapsed = time.monotonic() - started
    print(f"D8: {sent} queries, {compared} compared, {differing} unexpected differences, "
          f"{blocked} blocked as policy says")
    print(f"  ({len(corpus)} over UDP, {tcp} again over TCP after both truncated; "
          f"{len(diffs)} findings; {elapsed:.1f} s)")
    for k, v in notes.items():
        if v:
            print(f"  note (allowed, RFC 8482 4.2 reading): {k}: {v}")

    def what(d):
        """A finding without its names and numbers: what kind of difference it is."""
        text = d.partition("]: ")[2]
        return " ".join(re.sub(r"[\d(){}\[\]'.,<>]+", " ", text).split()[:3])

    # A tally by kind of finding, then the first of each kind and the others in order, 20 in all.
    tally = {}
    for d in diffs:
        tally[what(d)] = tally.get(what(d), 0) + 1
    for key, count in sorted(tally.items(), key=lambda kv: -kv[1]):
        print(f"  {count:6d} x {key} ...")
    firsts, seen = [], set()
    for d in diffs:
        if what(d) not in seen:
            seen.add(what(d))
            firsts.append(d)
    shown = (firsts + [d for d in diffs if d not in set(firsts)])[:20]
    for d in shown:
        print(f"  DIFF {d}")
    if os.environ.get("D8_ALL_DIFFS"):
        with open(os.environ["D8_ALL_DIFFS"], "w") as f:
            f.write("\n".join(diffs) + "\n")
    if len(diffs) > 20:
        print(f"  ... and {len(diffs) - 20} more findings (D8_ALL_DIFFS=FILE writes them all)")
    return 1 if diffs else 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "prepare":
        prepare(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 6 and sys.argv[1] == "run":
        sys.exit(run(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])))
    else:
        sys.exit(__doc__)
