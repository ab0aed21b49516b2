//! Hostile traffic (RELIABILITY D1, D7): a storm of malformed datagrams, and an upstream that
//! lies. Every loop is bounded in count and time; all traffic stays on 127.0.0.0/8.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio_util::sync::CancellationToken;

use crate::harness::*;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One hostile datagram that MAY get an answer (the resolver decides what it is worth).
fn mutated(rng: &mut Rng, valid: &[u8]) -> Vec<u8> {
    let mut q = valid.to_vec();
    match rng.below(7) {
        // Random bytes after a query header.
        0 => {
            q.truncate(12);
            q[2] &= 0x7f;
            let n = rng.below(600);
            q.extend((0..n).map(|_| rng.next() as u8));
        }
        // Truncated question.
        1 => q.truncate(12 + rng.below(q.len() - 12)),
        // A label pointer to itself (compression loop) in the question.
        2 => {
            q.truncate(12);
            q.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        }
        // A pointer past the end.
        3 => {
            q.truncate(12);
            q.extend_from_slice(&[0xc3, 0xff, 0, 1, 0, 1]);
        }
        // Counts that lie (QDCOUNT 0 or many, AN/NS/AR claimed).
        4 => {
            let i = 4 + 2 * rng.below(4);
            q[i] = rng.next() as u8;
            q[i + 1] = rng.next() as u8;
        }
        // A label longer than 63 bytes and a name longer than 255.
        5 => {
            q.truncate(12);
            for _ in 0..5 {
                q.push(63 + rng.below(3) as u8);
                q.extend(std::iter::repeat_n(b'a', 63));
            }
            q.extend_from_slice(&[0, 0, 1, 0, 1]);
        }
        // Random bit flips anywhere but the QR bit.
        _ => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(q.len());
                q[i] ^= 1 << rng.below(8);
            }
            q[2] &= 0x7f;
        }
    }
    q
}

/// One datagram that must NEVER get an answer: shorter than a header, or QR=1.
fn never_answered(rng: &mut Rng, valid: &[u8]) -> Vec<u8> {
    if rng.below(2) == 0 {
        let n = rng.below(12);
        (0..n).map(|_| rng.next() as u8).collect()
    } else {
        let mut q = valid.to_vec();
        q[2] |= 0x80;
        let extra = rng.below(64);
        q.extend((0..extra).map(|_| rng.next() as u8));
        q
    }
}

#[tokio::test]
async fn a_storm_of_100000_malformed_datagrams_crashes_nothing_and_reflects_nothing() {
    let r = Resolver::start(Setup::default()).await;
    let valid = query_bytes("storm.example.test.", false);
    let server = r.addr;
    let rss_before = rss_kib();
    let started = Instant::now();
    let (answerable_sent, silent_sent, silent_replies) = tokio::task::spawn_blocking(move || {
        let mut rng = Rng(0x5eed_1234_abcd_ef01);
        let answerable = UdpSocket::bind("127.0.0.1:0").unwrap();
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        silent.set_nonblocking(true).unwrap();
        answerable.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 2048];
        let (mut a, mut s, mut silent_replies) = (0usize, 0usize, 0usize);
        for i in 0..100_000usize {
            if i % 3 == 0 {
                let _ = silent.send_to(&never_answered(&mut rng, &valid), server);
                s += 1;
            } else {
                let _ = answerable.send_to(&mutated(&mut rng, &valid), server);
                a += 1;
            }
            if i % 500 == 499 {
                // Drain what came back so far; pace the storm a little.
                while answerable.recv_from(&mut buf).is_ok() {}
                while silent.recv_from(&mut buf).is_ok() {
                    silent_replies += 1;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        while silent.recv_from(&mut buf).is_ok() {
            silent_replies += 1;
        }
        (a, s, silent_replies)
    })
    .await
    .unwrap();
    let elapsed = started.elapsed();
    // The health query after the storm.
    let mut c = r.udp(ACCOUNT_1).await;
    let resp = ask(&mut c, "after.example.test.", RecordType::A).await;
    assert_eq!(rcode(&resp), ResponseCode::NoError);
    let growth_mib = rss_kib().saturating_sub(rss_before) / 1024;
    eprintln!(
        "D1: {} datagrams in {elapsed:?} ({answerable_sent} malformed, {silent_sent} short or QR=1): \
         {silent_replies} replies to short/QR=1, health query answered, RSS growth {growth_mib} MiB",
        answerable_sent + silent_sent
    );
    assert_eq!(
        silent_replies, 0,
        "short and QR=1 datagrams are never answered"
    );
    assert!(growth_mib < 64, "RSS grew by {growth_mib} MiB");
}

/// How the lying upstream answers a question, by its first label.
fn lie(query: &Message, bytes: &[u8]) -> Option<Vec<u8>> {
    let q = query.queries.first()?;
    let first = q
        .name()
        .iter()
        .next()
        .map(|l| String::from_utf8_lossy(l).to_lowercase())?;
    let poison = Record::from_rdata(q.name().clone(), 60, RData::A(A(Ipv4Addr::new(6, 6, 6, 6))));
    let mut m = Message::response(query.metadata.id, query.metadata.op_code);
    m.metadata.recursion_available = true;
    m.metadata.recursion_desired = query.metadata.recursion_desired;
    m.add_query(q.clone());
    m.add_answer(poison);
    match first.as_str() {
        "wrongid" => m.metadata.id = query.metadata.id.wrapping_add(1),
        "qr0" => m.metadata.message_type = MessageType::Query,
        "otherquestion" => {
            let mut m2 = Message::response(query.metadata.id, query.metadata.op_code);
            let mut other = q.clone();
            other.set_name(hickory_proto::rr::Name::from_ascii("elsewhere.test.").unwrap());
            m2.add_query(other);
            m2.add_answer(Record::from_rdata(
                hickory_proto::rr::Name::from_ascii("elsewhere.test.").unwrap(),
                60,
                RData::A(A(Ipv4Addr::new(6, 6, 6, 6))),
            ));
            return m2.to_vec().ok();
        }
        "headeronly" => {
            return bytes.get(..12).map(|h| {
                let mut h = h.to_vec();
                h[2] |= 0x80;
                h
            })
        }
        "garbage" => {
            let mut g = bytes.get(..2)?.to_vec();
            g.extend_from_slice(&[0x81, 0x80, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0xc0]);
            return Some(g);
        }
        _ => return None,
    }
    m.to_vec().ok()
}

/// An upstream that answers every question with a lie (see [`lie`]); "spoof" questions get
/// their (well-formed) poisoned answer from another port.
async fn lying_upstream(stop: CancellationToken) -> SocketAddr {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let spoofer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, peer) = tokio::select! {
                r = sock.recv_from(&mut buf) => match r { Ok(x) => x, Err(_) => continue },
                () = stop.cancelled() => return,
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let first = query.queries.first().and_then(|q| {
                q.name()
                    .iter()
                    .next()
                    .map(|l| String::from_utf8_lossy(l).to_lowercase())
            });
            if first.as_deref() == Some("spoof") {
                let mut m = Message::response(query.metadata.id, query.metadata.op_code);
                if let Some(q) = query.queries.first() {
                    m.add_query(q.clone());
                    m.add_answer(Record::from_rdata(
                        q.name().clone(),
                        60,
                        RData::A(A(Ipv4Addr::new(6, 6, 6, 6))),
                    ));
                }
                if let Ok(bytes) = m.to_vec() {
                    let _ = spoofer.send_to(&bytes, peer).await;
                }
                continue;
            }
            if let Some(reply) = lie(&query, &buf[..n]) {
                let _ = sock.send_to(&reply, peer).await;
            }
        }
    });
    addr
}

#[tokio::test]
async fn a_lying_upstream_gives_servfail_and_poisons_nothing() {
    let stop = CancellationToken::new();
    let liar = lying_upstream(stop.clone()).await;
    let r = Resolver::start(Setup {
        upstream_override: Some(liar),
        ..Setup::default()
    })
    .await;
    let poisoned = IpAddr::V4(Ipv4Addr::new(6, 6, 6, 6));
    for case in [
        "wrongid",
        "qr0",
        "otherquestion",
        "headeronly",
        "garbage",
        "spoof",
    ] {
        let name = format!("{case}.poison.test.");
        for attempt in 0..2 {
            // The second query would be answered from the cache if anything had been cached.
            let mut c = r.udp(ACCOUNT_1).await;
            let resp = ask(&mut c, &name, RecordType::A).await;
            let ips: Vec<IpAddr> = rdata(&resp)
                .iter()
                .filter_map(|d| match d {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    _ => None,
                })
                .collect();
            assert!(
                !ips.contains(&poisoned),
                "{name} attempt {attempt}: poisoned answer {ips:?}"
            );
            assert_eq!(
                rcode(&resp),
                ResponseCode::ServFail,
                "{name} attempt {attempt}: a lie becomes SERVFAIL"
            );
        }
    }
    eprintln!("D7: 6 kinds of lying upstream answers × 2 queries: all SERVFAIL, 0 poisoned");
    stop.cancel();
}

/// A raw query: header flags, QDCOUNT, the question `name` A IN (`qdcount` times), and an OPT
/// with `payload` and one unknown option when `edns` is set.
fn raw_query(id: u16, name: &str, qdcount: u16, qtype: u16, edns: Option<u16>) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00]);
    q.extend_from_slice(&qdcount.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    for _ in 0..qdcount {
        for label in name.split('.').filter(|l| !l.is_empty()) {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
    }
    if let Some(payload) = edns {
        q.extend_from_slice(&[0, 0, 41]);
        q.extend_from_slice(&payload.to_be_bytes());
        q.extend_from_slice(&[0, 0, 0, 0]);
        // An option code nobody assigned (65001, local use): must be ignored.
        q.extend_from_slice(&[0, 8, 0xfd, 0xe9, 0, 4, 1, 2, 3, 4]);
    }
    q
}

#[tokio::test]
async fn query_conformance_of_rfc_1035_6891_and_the_1232_byte_cap() {
    let r = Resolver::start(Setup::default()).await;
    let exchange = |bytes: Vec<u8>| {
        let addr = r.addr;
        async move {
            raw_exchange(addr, ACCOUNT_1, &bytes, Duration::from_secs(3))
                .await
                .expect("an answer")
        }
    };
    // QDCOUNT 0 and 2 → FORMERR.
    for qd in [0u16, 2] {
        let reply = exchange(raw_query(0x0101, "www.example.test", qd, 1, None)).await;
        assert_eq!(reply[3] & 0x0f, 1, "QDCOUNT {qd}: FORMERR");
        assert_eq!(&reply[..2], &[0x01, 0x01]);
    }
    // An unknown EDNS option is ignored: a normal answer with our OPT.
    let reply =
        Message::from_vec(&exchange(raw_query(0x0202, "opt.example.test", 1, 1, Some(4096))).await)
            .unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(reply.answers.len(), 1);
    assert!(reply.edns.is_some(), "EDNS answered with EDNS");
    // Without EDNS a large answer is cut at 512 bytes with TC=1.
    let reply = exchange(raw_query(0x0303, "big.test", 1, 16, None)).await;
    assert!(reply.len() <= 512, "{} bytes without EDNS", reply.len());
    assert_ne!(reply[2] & 0x02, 0, "TC=1");
    // A 65,535-byte EDNS buffer still gets at most 1,232 bytes.
    let reply = exchange(raw_query(0x0404, "big.test", 1, 16, Some(65_535))).await;
    assert!(reply.len() <= 1232, "{} bytes", reply.len());
    assert_ne!(reply[2] & 0x02, 0, "TC=1");
    eprintln!(
        "D2: QDCOUNT 0/2 FORMERR, unknown option ignored, 512 without EDNS, 1232 with 65535: ok"
    );
}
