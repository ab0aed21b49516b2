//! Response-rate limiting (RELIABILITY D5): a flood "from" one source prefix gets at most the
//! configured rate back, every second answer over it as an empty TC=1 answer and the rest
//! dropped, so the bytes sent back stay below the bytes received; another prefix is served.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::harness::*;

/// Account 1 is 127.0.0.1/32; this policy adds a second account in another /24.
const TWO_PREFIXES: &str = r#"
[[accounts]]
id = 1
networks = ["127.0.0.1/32"]
block = ["||mine.test^"]

[[accounts]]
id = 2
networks = ["127.0.5.0/24"]
block = ["||mine.test^"]
"#;

#[tokio::test]
async fn a_flood_from_one_prefix_is_limited_with_slip_and_amplification_below_one() {
    flood_from_one_prefix(true).await;
}

#[tokio::test]
async fn without_the_fast_path_hickorys_udp_is_rate_limited_the_same_way() {
    flood_from_one_prefix(false).await;
}

async fn flood_from_one_prefix(fast_path: bool) {
    let r = Resolver::start(Setup {
        policy: TWO_PREFIXES.to_owned(),
        fast_path: qorgan_resolver::FastPathOptions {
            enabled: fast_path,
            ..Setup::default().fast_path
        },
        dns: |dns| {
            dns.rate_limit_qps = 200;
            dns.rate_limit_burst = 50;
            dns.rate_limit_slip = 2;
            dns.rate_limit_loopback = true;
        },
        ..Setup::default()
    })
    .await;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    // A blocked name: the fast path answers it at once (no upstream in the way), and its
    // unlimited answer (NXDOMAIN with an SOA) is larger than the query.
    let query = query_bytes("x.mine.test", false);
    let sent = 2_000usize;
    let started = Instant::now();
    let reader = {
        let sock = sock.try_clone().unwrap();
        std::thread::spawn(move || {
            let (mut replies, mut bytes, mut truncated) = (0usize, 0usize, 0usize);
            let mut buf = [0u8; 1500];
            while let Ok((n, _)) = sock.recv_from(&mut buf) {
                replies += 1;
                bytes += n;
                if n >= 3 && buf[2] & 0x02 != 0 {
                    truncated += 1;
                }
            }
            (replies, bytes, truncated)
        })
    };
    for i in 0..sent {
        sock.send_to(&query, r.addr).unwrap();
        if i % 100 == 99 {
            // Paced a little, so the client's own receive buffer keeps up.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let elapsed = started.elapsed();
    let (replies, bytes, truncated) = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    let slipped = r.metric("qorgan_dns_rate_limited_slipped_total", &[]) as usize;
    let dropped = r.metric("qorgan_dns_rate_limited_dropped_total", &[]) as usize;
    // Full answers the server sent (datagrams the kernel dropped before the server read them
    // are neither answered nor limited).
    let answered = r.metric("qorgan_dns_queries_total", &[("outcome", "blocked")]) as usize;
    // A full answer's size, from a prefix that is not limited.
    let other: SocketAddr = "127.0.5.9:0".parse().unwrap();
    let full_reply = raw_exchange(r.addr, other.ip(), &query, Duration::from_secs(1))
        .await
        .expect("the other prefix is answered");
    assert!(
        full_reply.len() > query.len(),
        "unlimited, the answer outgrows the query"
    );
    // What the server sent, whether or not the client's socket kept every datagram.
    let bytes_out = answered * full_reply.len() + slipped * query.len();
    let bytes_in = sent * query.len();
    let amplification = bytes_out as f64 / bytes_in as f64;
    eprintln!(
        "D5 (fast path {fast_path}): {sent} queries in {elapsed:?}: {answered} answered, {slipped} TC=1, {dropped} dropped; \
         {bytes_out} bytes out / {bytes_in} in = amplification {amplification:.3} \
         (client received {replies} datagrams, {truncated} TC=1, {bytes} bytes)"
    );
    // At most the burst plus the rate over the flood's duration.
    let allowed = 50.0 + 200.0 * (elapsed.as_secs_f64() + 0.1);
    assert!(
        (answered as f64) <= allowed,
        "{answered} full answers > {allowed}"
    );
    assert!(
        slipped > 0 && dropped > 0,
        "slipped {slipped}, dropped {dropped}"
    );
    assert!(
        truncated > 0 && truncated <= slipped,
        "TC=1 answers arrive ({truncated} of {slipped})"
    );
    assert!(
        slipped.abs_diff(dropped) <= 2,
        "slip 2: every second limited answer is TC=1 ({slipped} slipped, {dropped} dropped)"
    );
    assert!(amplification <= 1.0, "amplification {amplification}");

    // Another prefix is unaffected meanwhile.
    assert_eq!(full_reply[3] & 0x0f, 3, "NXDOMAIN for the blocked name");
    assert_eq!(full_reply[2] & 0x02, 0, "not truncated");
}

/// Account 1 may send 50 queries a second; account 2 has no limit.
const ACCOUNT_LIMIT: &str = r#"
[[accounts]]
id = 1
networks = ["127.0.0.1/32"]
block = ["||mine.test^"]
qps_limit = 50

[[accounts]]
id = 2
networks = ["127.0.5.0/24"]
block = ["||mine.test^"]
"#;

/// Sends `count` copies of `query` from `src` (paced a little so the client's receive buffer
/// keeps up; within one second at most) and counts the answers by rcode: (noerror or
/// nxdomain, refused).
fn burst(server: SocketAddr, src: &str, query: &[u8], count: usize) -> (usize, usize) {
    let sock = std::net::UdpSocket::bind(src).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let reader = {
        let sock = sock.try_clone().unwrap();
        std::thread::spawn(move || {
            let (mut answered, mut refused) = (0usize, 0usize);
            let mut buf = [0u8; 1500];
            while let Ok((n, _)) = sock.recv_from(&mut buf) {
                match (n >= 4).then(|| buf[3] & 0x0f) {
                    Some(5) => refused += 1,
                    Some(_) => answered += 1,
                    None => {}
                }
            }
            (answered, refused)
        })
    };
    let started = Instant::now();
    for i in 0..count {
        if started.elapsed() > Duration::from_secs(1) {
            break;
        }
        sock.send_to(query, server).unwrap();
        if i % 25 == 24 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    reader.join().unwrap()
}

async fn account_limit_holds(fast_path: bool) {
    let r = Resolver::start(Setup {
        policy: ACCOUNT_LIMIT.to_owned(),
        fast_path: qorgan_resolver::FastPathOptions {
            enabled: fast_path,
            workers: 2,
            ..qorgan_resolver::FastPathOptions::default()
        },
        ..Setup::default()
    })
    .await;
    let query = query_bytes("x.mine.test", false);
    let addr = r.addr;
    let q = query.clone();
    let (answered, refused) =
        tokio::task::spawn_blocking(move || burst(addr, "127.0.0.1:0", &q, 400))
            .await
            .unwrap();
    let limited = r.metric("qorgan_dns_account_limited_total", &[]) as usize;
    println!(
        "per-account limit 50/s (fast path {fast_path}): 400 queries → {answered} answered, \
         {refused} REFUSED, {limited} counted"
    );
    // 50 a second; a burst may straddle a second boundary and get two windows' worth.
    assert!((50..=100).contains(&answered), "answered {answered}");
    assert_eq!(refused, limited, "every refusal is counted");
    assert!(
        answered + refused >= 390,
        "answers lost: {answered} + {refused}"
    );
    // The other account, with no limit, is served in full at the same moment.
    let (other_answered, other_refused) =
        tokio::task::spawn_blocking(move || burst(addr, "127.0.5.9:0", &query, 200))
            .await
            .unwrap();
    assert_eq!((other_answered, other_refused), (200, 0));
}

#[tokio::test]
async fn an_account_over_its_query_rate_is_refused_on_the_fast_path_and_others_are_not() {
    account_limit_holds(true).await;
}

#[tokio::test]
async fn an_account_over_its_query_rate_is_refused_on_the_hickory_path_too() {
    account_limit_holds(false).await;
}
