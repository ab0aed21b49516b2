//! The UDP fast path (`FastPath::process`, bytes in, bytes out, no sockets) on arbitrary
//! datagrams, from sources of every block mode, an account with its filter off, the default
//! policy and an unknown source (RELIABILITY F2). Asserted, for every datagram:
//! - shorter than 12 bytes or QR=1 → `Drop` (never a reply to a reply: reflection);
//! - a `Reply(n)` fits the buffer, is at most 1232 bytes (`MAX_UDP_PAYLOAD`) and at most what
//!   the client announced (512 without EDNS), has QR=1 and the query's ID, and parses.
//!
//! Three flows per input: the input as a query (and, when the fast path asks for it, the
//! hickory path's answer put in the packet cache and the query asked again); the input as a
//! query through a rate limiter that is always over its rate (the TC=1 slip answer); and the
//! input as a cached *answer* to the question it carries (the cache's answer scanner and
//! patcher on hostile bytes).
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};

use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};
use libfuzzer_sys::fuzz_target;
use qorgan_blocklists::parse::{parse_text, FormatHint};
use qorgan_blocklists::{build_own_sets, AccountId, BlockMode};
use qorgan_resolver::answer::MAX_UDP_PAYLOAD;
use qorgan_resolver::{AccountSpec, DnsMetrics, FastOutcome, FastPath, SnapshotStore};

/// Packet cache entries of a per-input fast path (fresh each input: deterministic).
const CACHE: usize = 16;
/// The output buffer: larger than any allowed reply, so the size checks mean something.
const OUT: usize = 4096;

struct World {
    config: qorgan_config::Config,
    store: SnapshotStore,
    metrics: Arc<DnsMetrics>,
    /// Always over its rate after the first answer, every limited answer slips (TC=1).
    limited: std::sync::Mutex<FastPath>,
}

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// The sources asked from: accounts 1..=6, the default policy, an unknown address.
fn sources() -> [IpAddr; 8] {
    [
        v4(1),
        v4(2),
        v4(3),
        v4(4),
        v4(5),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        v4(9),
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
    ]
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        for (category, text) in [
            (
                "ads",
                "ads.test\n||tracker.test^\n|exact.test^\n@@||ok.ads.test^\n\
                 ||*.sub.test^\n0.0.0.0 hosts.test\n|*g00gle*^\n",
            ),
            ("malware", "bad.test\n||evil.test^$important\n"),
        ] {
            std::fs::create_dir_all(dir.path().join(category)).expect("mkdir");
            std::fs::write(dir.path().join(category).join("list.txt"), text).expect("write");
        }
        let (catalog, _) = qorgan_blocklists::compile_dir(dir.path()).expect("compile");
        let mut config = qorgan_config::Config::default();
        config.dns.rate_limit_qps = 0;
        let store = SnapshotStore::new(&config.default_policy);
        store.set_catalog(Arc::new(catalog));
        let block = parse_text(
            "||own.test^\n/^re[0-9]+\\.test$/\n",
            "own",
            FormatHint::Auto,
        );
        let allow = parse_text("allowed.ads.test\n", "own", FormatHint::Auto);
        let (own_block, own_allow) = build_own_sets(
            (&block.rules, &block.patterns),
            (&allow.rules, &allow.patterns),
        )
        .expect("own sets");
        let categories = vec!["ads".to_owned(), "malware".to_owned()];
        let custom = |v6| BlockMode::CustomIp {
            v4: Some(Ipv4Addr::new(192, 0, 2, 10)),
            v6,
        };
        let modes = [
            BlockMode::Nxdomain,
            BlockMode::NullIp,
            custom(Some("2001:db8::10".parse().expect("v6"))),
            BlockMode::Refused,
            custom(None),
        ];
        let mut accounts: Vec<AccountSpec> = modes
            .into_iter()
            .zip(1u8..)
            .map(|(mode, i)| {
                let net = format!("127.0.0.{i}/32").parse().expect("net");
                let mut spec =
                    AccountSpec::new(AccountId(u64::from(i)), vec![net], categories.clone(), mode);
                spec.own_block = own_block.clone();
                spec.own_allow = own_allow.clone();
                spec
            })
            .collect();
        let mut off = AccountSpec::new(
            AccountId(6),
            vec!["::1/128".parse().expect("net")],
            categories,
            BlockMode::Nxdomain,
        );
        off.enabled = false;
        accounts.push(off);
        store.set_accounts(accounts).expect("accounts");
        let metrics = Arc::new(DnsMetrics::new(&prometheus::Registry::new()).expect("metrics"));
        let mut limited_dns = config.dns.clone();
        limited_dns.rate_limit_qps = 1;
        limited_dns.rate_limit_burst = 1;
        limited_dns.rate_limit_slip = 1;
        limited_dns.rate_limit_loopback = true;
        let limited = FastPath::new(&limited_dns, store.clone(), metrics.clone(), 0);
        World {
            config,
            store,
            metrics,
            limited: std::sync::Mutex::new(limited),
        }
    })
}

impl World {
    fn fast_path(&self) -> FastPath {
        FastPath::new(
            &self.config.dns,
            self.store.clone(),
            self.metrics.clone(),
            CACHE,
        )
    }
}

/// The largest answer the client announced: its EDNS payload within 512..=1232, else 512.
/// `None` when hickory cannot read the query (the fast path's own limit is then not checked
/// against an independent reading).
fn client_limit(query: &[u8]) -> Option<usize> {
    let m = Message::from_vec(query).ok()?;
    let payload = m
        .edns
        .as_ref()
        .map_or(512, |e| e.max_payload().clamp(512, MAX_UDP_PAYLOAD));
    Some(usize::from(payload))
}

/// The hardening rules for one outcome; `parses`: the reply must be a DNS message hickory
/// reads (all answers the fast path writes itself, and those cached from hickory).
fn check(query: &[u8], outcome: FastOutcome, out: &[u8], parses: bool) {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        assert_eq!(
            outcome,
            FastOutcome::Drop,
            "short or QR=1 datagrams are dropped"
        );
        return;
    }
    let FastOutcome::Reply(n) = outcome else {
        return;
    };
    assert!(n <= out.len(), "reply of {n} bytes past the buffer");
    assert!(
        n <= usize::from(MAX_UDP_PAYLOAD),
        "reply of {n} bytes over 1232"
    );
    assert!(n >= 12, "reply of {n} bytes has no header");
    if let Some(limit) = client_limit(query) {
        assert!(n <= limit, "reply of {n} bytes over the client's {limit}");
    }
    let reply = &out[..n];
    assert!(reply[2] & 0x80 != 0, "a reply has QR=1");
    assert_eq!(reply[..2], query[..2], "a reply has the query's id");
    if parses {
        let m = match Message::from_vec(reply) {
            Ok(m) => m,
            Err(e) => panic!("reply does not parse: {e}\nreply: {reply:02x?}"),
        };
        assert_eq!(m.metadata.message_type, MessageType::Response);
    }
}

/// What the hickory path would put in the cache for `query`: its question, one A record.
fn hickory_answer(query: &[u8]) -> Option<Vec<u8>> {
    let mut m = Message::from_vec(query).ok()?;
    let name = m.queries.first()?.name().clone();
    m.metadata.message_type = MessageType::Response;
    m.metadata.recursion_available = true;
    m.add_answer(Record::from_rdata(
        name,
        300,
        RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
    ));
    m.to_vec().ok()
}

/// A clean query for the question at the start of `data`'s question section (uncompressed
/// name, type, class IN), with an OPT (payload 4096, DO from the id) when the id is odd.
fn question_query(data: &[u8]) -> Option<Vec<u8>> {
    let mut pos = 12;
    loop {
        let len = usize::from(*data.get(pos)?);
        if len == 0 {
            pos += 1;
            break;
        }
        if len > 63 || pos + 1 + len > 12 + 254 {
            return None;
        }
        pos += 1 + len;
    }
    let qtype = data.get(pos..pos + 2)?;
    let edns = data[1] & 1 == 1;
    let mut q = vec![
        data[0],
        data[1],
        0x01,
        0x00,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        u8::from(edns),
    ];
    q.extend_from_slice(&data[12..pos]);
    q.extend_from_slice(qtype);
    q.extend_from_slice(&[0, 1]);
    if edns {
        let dnssec_ok = if data[1] & 2 != 0 { 0x80 } else { 0 };
        q.extend_from_slice(&[0, 0, 41, 0x10, 0x00, 0, 0, dnssec_ok, 0, 0, 0]);
    }
    Some(q)
}

fuzz_target!(|data: &[u8]| {
    let world = world();
    let mut out = vec![0u8; OUT];

    // 1. The input as a query, from every source; cache the hickory answer when asked to.
    let mut fast = world.fast_path();
    for src in sources() {
        let outcome = fast.process(src, data, &mut out);
        check(data, outcome, &out, true);
        if let FastOutcome::Slow(Some(key)) = outcome {
            if let Some(answer) = hickory_answer(data) {
                fast.fill(key, &answer);
                let again = fast.process(src, data, &mut out);
                check(data, again, &out, true);
            }
        }
    }

    // 2. Over the rate limit: the slip answer (or nothing).
    {
        let mut limited = world.limited.lock().unwrap_or_else(|e| e.into_inner());
        let _ = limited.process(v4(1), data, &mut out);
        let outcome = limited.process(v4(1), data, &mut out);
        check(data, outcome, &out, true);
    }

    // 3. The input as the cached answer to its own question.
    if let Some(query) = data.get(..12).and(question_query(data)) {
        let mut answer = data.to_vec();
        answer[2] |= 0x80;
        let mut fast = world.fast_path();
        let src = v4(1);
        if let FastOutcome::Slow(Some(key)) = fast.process(src, &query, &mut out) {
            fast.fill(key, &answer);
            let outcome = fast.process(src, &query, &mut out);
            check(&query, outcome, &out, false);
        }
    }
});
