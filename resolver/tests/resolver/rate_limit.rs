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
    let r = Resolver::start(Setup {
        policy: TWO_PREFIXES.to_owned(),
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
    let answered = sent - slipped - dropped;
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
        "D5: {sent} queries in {elapsed:?}: {answered} answered, {slipped} TC=1, {dropped} dropped; \
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
