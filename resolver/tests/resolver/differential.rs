//! The UDP fast path against the hickory path: the same corpus of raw queries through a
//! resolver with the fast path and one without gives the same replies (IDs aside), and the
//! fast path's hardening rules hold (no reply to short packets, QR=1, outsiders).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::Record;
use qorgan_resolver::FastPathOptions;

use crate::harness::{raw_exchange, Resolver, Rng, Setup, ACCOUNT_1, POLICY};

/// Accounts in every block mode, one source address each; 127.0.0.9 belongs to nobody.
const MODES_POLICY: &str = r#"
[[accounts]]
id = 2
networks = ["127.0.0.2/32"]
categories = ["ads", "malware"]
block_mode = "null_ip"

[[accounts]]
id = 3
networks = ["127.0.0.3/32"]
categories = ["ads"]
block_mode = "custom_ip"
custom_ip = ["192.0.2.80", "2001:db8::80"]

[[accounts]]
id = 4
networks = ["127.0.0.4/32"]
categories = ["malware", "ads"]
block_mode = "refused"
"#;

const SOURCES: [IpAddr; 5] = [
    ACCOUNT_1,
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)),
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4)),
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)),
];

const NAMES: &[&str] = &[
    "ads.test",
    "x.ads.test",
    "deep.sub.ads.test",
    "tracker.blocked.test",
    "a.tracker.blocked.test",
    "banner.test",
    "evil.test",
    "www.evil.test",
    "mine.test",
    "m.mine.test",
    "ok.ads.test",
    "cname.test",
    "cname-ok.test",
    "nx.test",
    "big.test",
    "example.com",
    "www.example.com",
    "mail.example.org",
    "a.b.c.d.e.example.net",
    "xn--80ak6aa92e.com",
    "_dmarc.example.com",
    "test",
];

/// qtypes: A, AAAA, MX, TXT, ANY, HTTPS, NS, SOA.
const QTYPES: [u16; 8] = [1, 28, 15, 16, 255, 65, 2, 6];

fn wire_query(id: u16, name: &str, qtype: u16, flags: u16, edns: Option<(u16, bool)>) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&flags.to_be_bytes());
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    if let Some((payload, dnssec_ok)) = edns {
        q.extend_from_slice(&[0, 0, 41]);
        q.extend_from_slice(&payload.to_be_bytes());
        q.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0]);
        // A cookie option, as dig sends.
        q.extend_from_slice(&[0, 12, 0, 12, 0, 10, 0, 8]);
        q.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    }
    q
}

fn mixed_case(rng: &mut Rng, name: &str) -> String {
    name.chars()
        .map(|c| {
            if rng.below(3) == 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// One corpus entry: who sends it and the bytes.
struct Case {
    src: IpAddr,
    bytes: Vec<u8>,
}

fn corpus(size: usize) -> Vec<Case> {
    let mut rng = Rng(0x5eed_f00d_1234_5678);
    let mut cases = Vec::with_capacity(size);
    for i in 0..size {
        // IDs are unique per case: replies are matched by them.
        let id = i as u16;
        let src = if rng.below(50) == 0 {
            SOURCES[4]
        } else {
            SOURCES[rng.below(4)]
        };
        let base = NAMES[rng.below(NAMES.len())];
        let name = match rng.below(4) {
            0 => format!("h{}.{base}", rng.below(20)),
            1 => mixed_case(&mut rng, base),
            _ => base.to_owned(),
        };
        let qtype = QTYPES[rng.below(QTYPES.len())];
        let edns = match rng.below(4) {
            0 => None,
            1 => Some((512, false)),
            2 => Some((1232, true)),
            _ => Some((4096, rng.below(2) == 0)),
        };
        // RD set mostly; CD sometimes.
        let mut flags: u16 = if rng.below(10) == 0 { 0 } else { 0x0100 };
        if rng.below(10) == 0 {
            flags |= 0x0010;
        }
        let mut bytes = wire_query(id, &name, qtype, flags, edns);
        match rng.below(40) {
            // Malformed or unusual: truncated, QR=1, opcode 2, two questions, junk tail,
            // class CH, EDNS version 1, short.
            0 => bytes.truncate(12 + rng.below(bytes.len() - 12)),
            1 => bytes[2] |= 0x80,
            2 => bytes[2] |= 0x10,
            3 => bytes[5] = 2,
            4 => bytes.extend_from_slice(&[0xde, 0xad]),
            5 => {
                let at = 12 + name.len() + 2 + 2 + 1;
                if at + 1 < bytes.len() {
                    bytes[at] = 3;
                }
            }
            6 if edns.is_some() => {
                let at = 12 + name.len() + 2 + 4 + 6;
                bytes[at] = 1;
            }
            7 => bytes.truncate(rng.below(12)),
            _ => {}
        }
        cases.push(Case { src, bytes });
    }
    cases
}

/// A reply in comparable form: header without the ID, then each section with TTLs zeroed and
/// the TTLs aside (they may differ by the second they were aged at).
#[derive(Debug, PartialEq)]
enum Reply {
    Parsed {
        header: [u8; 10],
        question: Vec<u8>,
        records: Vec<Record>,
        edns: Option<String>,
    },
    Raw(Vec<u8>),
}

fn comparable(bytes: &[u8]) -> (Reply, Vec<u32>) {
    let Ok(message) = Message::from_vec(bytes) else {
        let mut raw = bytes.to_vec();
        raw.iter_mut().take(2).for_each(|b| *b = 0);
        return (Reply::Raw(raw), Vec::new());
    };
    let mut header = [0u8; 10];
    header.copy_from_slice(&bytes[2..12]);
    let mut ttls = Vec::new();
    let records = message
        .answers
        .iter()
        .chain(&message.authorities)
        .chain(&message.additionals)
        .map(|r| {
            ttls.push(r.ttl);
            let mut r = r.clone();
            r.ttl = 0;
            r
        })
        .collect();
    let question = message
        .queries
        .iter()
        .map(|q| format!("{q}"))
        .collect::<Vec<_>>()
        .join(";")
        .into_bytes();
    let edns = message.edns.as_ref().map(|e| format!("{e:?}"));
    (
        Reply::Parsed {
            header,
            question,
            records,
            edns,
        },
        ttls,
    )
}

/// Sends every case from its source and collects replies by (source, ID).
async fn replies(server: SocketAddr, cases: &[Case]) -> HashMap<(IpAddr, u16), Vec<u8>> {
    let got = Arc::new(Mutex::new(HashMap::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut sockets = HashMap::new();
    for src in SOURCES {
        let sock = Arc::new(
            tokio::net::UdpSocket::bind(SocketAddr::new(src, 0))
                .await
                .unwrap(),
        );
        sockets.insert(src, sock.clone());
        let (got, stop) = (got.clone(), stop.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            loop {
                let n = tokio::select! {
                    r = sock.recv_from(&mut buf) => r.unwrap().0,
                    () = stop.cancelled() => return,
                };
                assert!(n >= 2, "a reply shorter than an ID");
                let id = u16::from_be_bytes([buf[0], buf[1]]);
                let old = got.lock().unwrap().insert((src, id), buf[..n].to_vec());
                assert!(old.is_none(), "two replies to one query from {src} id {id}");
            }
        });
    }
    for chunk in cases.chunks(250) {
        for case in chunk {
            sockets[&case.src]
                .send_to(&case.bytes, server)
                .await
                .unwrap();
        }
        // Wait until no reply has come for 150 ms.
        let mut last = usize::MAX;
        let mut quiet = 0;
        while quiet < 5 {
            tokio::time::sleep(Duration::from_millis(30)).await;
            let now = got.lock().unwrap().len();
            quiet = if now == last { quiet + 1 } else { 0 };
            last = now;
        }
    }
    stop.cancel();
    let map = got.lock().unwrap().clone();
    map
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_path_answers_a_10000_query_corpus_like_the_hickory_path() {
    let policy = format!("{POLICY}\n{MODES_POLICY}");
    let fast = Resolver::start(Setup {
        policy: policy.clone(),
        ..Setup::default()
    })
    .await;
    let slow = Resolver::start(Setup {
        policy,
        fast_path: FastPathOptions {
            enabled: false,
            ..FastPathOptions::default()
        },
        ..Setup::default()
    })
    .await;

    let cases = corpus(10_000);
    let (from_fast, from_slow) =
        tokio::join!(replies(fast.addr, &cases), replies(slow.addr, &cases));

    let mut differences = Vec::new();
    let mut answered = 0;
    let mut outsider_formerr = 0;
    for (i, case) in cases.iter().enumerate() {
        let key = (case.src, i as u16);
        let (f, s) = (from_fast.get(&key), from_slow.get(&key));
        let short = case.bytes.len() < 12;
        let qr = !short && case.bytes[2] & 0x80 != 0;
        let outsider = case.src == SOURCES[4];
        if short || qr || outsider {
            assert!(
                f.is_none(),
                "fast path replied to {:?} (short/QR=1/outsider)",
                case.bytes
            );
        }
        match (f, s) {
            (None, None) => {}
            // hickory-server answers FORMERR to an unparseable query before our handler can
            // drop an outsider; the fast path drops outsiders before parsing (the intended fix).
            (None, Some(s)) if outsider && s.len() >= 4 && s[3] & 0x0f == 1 => {
                outsider_formerr += 1;
            }
            (Some(f), Some(s)) => {
                answered += 1;
                assert!(f.len() <= 1232, "fast answer over 1232 bytes");
                let (fc, ft) = comparable(f);
                let (sc, st) = comparable(s);
                // The fast path ages every cached TTL; hickory repeats some unaged (its negative
                // cache, synthesised answers): a fast TTL may be lower, never higher.
                let ttl_ok = ft.len() == st.len() && ft.iter().zip(&st).all(|(a, b)| *a <= b + 2);
                if fc != sc || !ttl_ok {
                    differences.push(format!(
                        "case {i} from {}: {:02x?}\n fast: {fc:?} {ft:?}\n slow: {sc:?} {st:?}",
                        case.src, case.bytes
                    ));
                }
            }
            (f, s) => differences.push(format!(
                "case {i} from {}: {:02x?}: fast {} / hickory {}",
                case.src,
                case.bytes,
                if f.is_some() { "replied" } else { "silent" },
                if s.is_some() { "replied" } else { "silent" },
            )),
        }
    }
    let cache_hits = fast.metric("qorgan_dns_cache_hits_total", &[]);
    println!(
        "{} cases, {answered} answered by both, {} differences, {outsider_formerr} outsider \
         FORMERRs only hickory sent; fast path cache hits {cache_hits}",
        cases.len(),
        differences.len()
    );
    assert!(
        differences.is_empty(),
        "{} differences, first ones:\n{}",
        differences.len(),
        differences
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(answered > 8_000, "only {answered} answered");
    // The comparison is only meaningful if the fast path answered much of it itself.
    assert!(
        fast.metric("qorgan_dns_queries_total", &[("outcome", "blocked")]) > 1_000.0,
        "few blocked answers"
    );
    fast.stop().await;
    slow.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_path_never_replies_to_qr1_garbage_short_packets_or_outsiders() {
    let r = Resolver::start(Setup::default()).await;
    let wait = Duration::from_millis(300);
    // Unparseable with QR=1: hickory-server alone answers FORMERR to this.
    let mut garbage = vec![0x77, 0x77, 0x80, 0x00, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
    garbage.extend_from_slice(&[0xc0, 0xff, 0xc0]);
    assert_eq!(raw_exchange(r.addr, ACCOUNT_1, &garbage, wait).await, None);
    assert_eq!(
        raw_exchange(r.addr, ACCOUNT_1, &[1, 2, 3, 4, 5], wait).await,
        None
    );
    let outsider = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));
    let q = wire_query(7, "example.com", 1, 0x0100, None);
    assert_eq!(raw_exchange(r.addr, outsider, &q, wait).await, None);
    // Unparseable QR=0 from a customer still gets hickory's FORMERR.
    let mut bad = garbage.clone();
    bad[2] = 0x01;
    let reply = raw_exchange(r.addr, ACCOUNT_1, &bad, wait)
        .await
        .expect("FORMERR");
    assert_eq!(reply[3] & 0x0f, 1);
    assert!(r.metric("qorgan_dns_queries_total", &[("outcome", "dropped")]) >= 3.0);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_is_answered_minimally_per_rfc_8482() {
    let r = Resolver::start(Setup::default()).await;
    let before = r.upstream.queries();
    let q = wire_query(9, "example.com", 255, 0x0100, Some((1232, false)));
    let reply = raw_exchange(r.addr, ACCOUNT_1, &q, Duration::from_secs(2))
        .await
        .expect("reply");
    let m = Message::from_vec(&reply).unwrap();
    assert_eq!(m.answers.len(), 1);
    assert_eq!(
        m.answers[0].data.record_type(),
        hickory_proto::rr::RecordType::HINFO
    );
    assert_eq!(r.upstream.queries(), before, "ANY was forwarded");
    r.stop().await;
}
