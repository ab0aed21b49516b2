//! What the upstream says, passed through: NXDOMAIN, SERVFAIL, the cache, truncation.

use std::time::Duration;

use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, RecordType};

use crate::harness::{ask, query_bytes, raw_exchange, rcode, rdata, Resolver, Setup, ACCOUNT_1};
use crate::upstream::{SHORT_TTL, V4};

#[tokio::test]
async fn upstream_nxdomain_passes_through_with_its_soa() {
    let r = Resolver::start(Setup::default()).await;
    let mut c = r.udp(ACCOUNT_1).await;
    let resp = ask(&mut c, "nx.test.", RecordType::A).await;
    assert_eq!(rcode(&resp), ResponseCode::NXDomain);
    assert!(
        matches!(
            resp.authorities.first().map(|a| &a.data),
            Some(RData::SOA(_))
        ),
        "{:?}",
        resp.authorities
    );
    assert_eq!(
        r.metric("qorgan_dns_queries_total", &[("outcome", "allowed")]),
        1.0
    );
    // NODATA passes through as NOERROR without answers.
    let nodata = ask(&mut c, "www.example.test.", RecordType::NS).await;
    assert_eq!(
        (rcode(&nodata), nodata.answers.len()),
        (ResponseCode::NoError, 0)
    );
}

#[tokio::test]
async fn upstream_failure_becomes_servfail_and_is_counted() {
    let r = Resolver::start(Setup::default()).await;
    let mut c = r.udp(ACCOUNT_1).await;
    let resp = ask(&mut c, "servfail.test.", RecordType::A).await;
    assert_eq!(rcode(&resp), ResponseCode::ServFail);
    assert_eq!(
        r.metric("qorgan_dns_queries_total", &[("outcome", "servfail")]),
        1.0
    );
    assert!(r.metric("qorgan_dns_upstream_errors_total", &[("kind", "servfail")]) >= 1.0);
}

#[tokio::test]
async fn repeated_question_is_answered_from_the_cache() {
    let r = Resolver::start(Setup::default()).await;
    let mut c = r.udp(ACCOUNT_1).await;
    assert_eq!(
        rdata(&ask(&mut c, "cached.test.", RecordType::A).await),
        vec![RData::A(A(V4))]
    );
    let upstream_after_first = r.upstream.queries();
    assert!(upstream_after_first >= 1);
    let second = ask(&mut c, "cached.test.", RecordType::A).await;
    assert_eq!(rdata(&second), vec![RData::A(A(V4))]);
    assert!(second.answers[0].ttl <= 60);
    assert_eq!(
        r.upstream.queries(),
        upstream_after_first,
        "second answer came from the cache"
    );
    assert_eq!(r.metric("qorgan_dns_cache_misses_total", &[]), 1.0);
    assert_eq!(r.metric("qorgan_dns_cache_hits_total", &[]), 1.0);
    assert_eq!(
        r.metric("qorgan_dns_upstream_queries_total", &[]),
        upstream_after_first as f64
    );
    assert!(r.metric("qorgan_dns_upstream_duration_seconds", &[]) >= 1.0);
}

#[tokio::test]
async fn expired_answers_are_served_stale_while_the_upstream_fails() {
    let r = Resolver::start(Setup::one_worker()).await;
    let mut c = r.udp(ACCOUNT_1).await;
    let fresh = ask(&mut c, "short.test.", RecordType::A).await;
    assert_eq!(rdata(&fresh), vec![RData::A(A(V4))]);
    // The packet cache is filled just after the answer went out.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        rdata(&ask(&mut c, "short.test.", RecordType::A).await),
        vec![RData::A(A(V4))]
    );
    assert_eq!(r.metric("qorgan_dns_cache_hits_total", &[]), 1.0);
    r.upstream.set_failing(true);
    tokio::time::sleep(Duration::from_millis(u64::from(SHORT_TTL) * 1000 + 1100)).await;
    let stale = ask(&mut c, "short.test.", RecordType::A).await;
    assert_eq!(rcode(&stale), ResponseCode::NoError);
    assert_eq!(rdata(&stale), vec![RData::A(A(V4))]);
    assert_eq!(
        stale.answers[0].ttl, 30,
        "RFC 8767: stale answers carry TTL 30"
    );
    assert_eq!(r.metric("qorgan_dns_stale_answers_total", &[]), 1.0);
    // A name never cached has nothing stale to give.
    let never = ask(&mut c, "never-cached.test.", RecordType::A).await;
    assert_eq!(rcode(&never), ResponseCode::ServFail);
    // The upstream is back: the next query gets a fresh answer with the real TTL.
    r.upstream.set_failing(false);
    let back = ask(&mut c, "short.test.", RecordType::A).await;
    assert_eq!(rdata(&back), vec![RData::A(A(V4))]);
    assert!(back.answers[0].ttl <= SHORT_TTL, "{:?}", back.answers);
    assert_eq!(r.metric("qorgan_dns_stale_answers_total", &[]), 1.0);
}

#[tokio::test]
async fn without_serve_stale_an_expired_answer_is_a_servfail_when_the_upstream_fails() {
    let r = Resolver::start(Setup {
        dns: |dns| dns.serve_stale_secs = 0,
        ..Setup::one_worker()
    })
    .await;
    let mut c = r.udp(ACCOUNT_1).await;
    assert_eq!(
        rdata(&ask(&mut c, "short.test.", RecordType::A).await),
        vec![RData::A(A(V4))]
    );
    r.upstream.set_failing(true);
    tokio::time::sleep(Duration::from_millis(u64::from(SHORT_TTL) * 1000 + 1100)).await;
    let expired = ask(&mut c, "short.test.", RecordType::A).await;
    assert_eq!(rcode(&expired), ResponseCode::ServFail);
    assert_eq!(r.metric("qorgan_dns_stale_answers_total", &[]), 0.0);
}

#[tokio::test]
async fn udp_answers_are_capped_at_1232_bytes_with_tc_and_tcp_gets_everything() {
    let r = Resolver::start(Setup::default()).await;
    // A client offering a 65535-byte buffer still gets at most 1232 bytes (~4.5 kB cut, TC=1).
    let mut request = Message::from_vec(&query_bytes("big.test.", false)).unwrap();
    request.queries[0].set_query_type(RecordType::TXT);
    let mut edns = Edns::new();
    edns.set_max_payload(65_535);
    request.set_edns(edns);
    let reply = raw_exchange(
        r.addr,
        ACCOUNT_1,
        &request.to_vec().unwrap(),
        Duration::from_secs(3),
    )
    .await
    .unwrap();
    assert!(reply.len() <= 1232, "UDP answer of {} bytes", reply.len());
    let cut = Message::from_vec(&reply).unwrap();
    assert!(cut.metadata.truncation, "TC=1 expected");
    assert_eq!(
        cut.edns.as_ref().map(Edns::max_payload),
        Some(1232),
        "the OPT advertises our cap"
    );
    let mut tcp = r.tcp(ACCOUNT_1).await;
    let full = ask(&mut tcp, "big.test.", RecordType::TXT).await;
    assert!(!full.metadata.truncation);
    assert_eq!(full.answers.len(), 40);
}

#[tokio::test]
async fn server_stops_gracefully_when_cancelled() {
    let r = Resolver::start(Setup::default()).await;
    let addr = r.addr;
    r.stop().await;
    // The port is free again: both sockets were closed.
    std::net::UdpSocket::bind(addr).unwrap();
    std::net::TcpListener::bind(addr).unwrap();
}

#[tokio::test]
async fn a_random_subdomain_flood_fills_only_its_zones_outstanding_slots() {
    // An upstream that never answers holds every lookup until its timeout.
    let black_hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let r = Resolver::start(Setup {
        upstream_override: Some(black_hole.local_addr().unwrap()),
        dns: |dns| {
            dns.max_upstream_per_zone = 4;
            dns.max_upstream_per_client = 8;
            dns.upstream_timeout_ms = 1500;
        },
        ..Setup::default()
    })
    .await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let started = std::time::Instant::now();
    for i in 0..12u16 {
        let mut q = query_bytes(&format!("r{i}.victim.test."), false);
        q[..2].copy_from_slice(&i.to_be_bytes());
        sock.send_to(&q, r.addr).await.unwrap();
    }
    // The 8 over the zone's cap are answered SERVFAIL at once; 4 wait for the upstream.
    let mut fast_servfails = 0;
    let mut buf = [0u8; 512];
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_millis(400), sock.recv_from(&mut buf)).await
    {
        assert!(n >= 4 && buf[3] & 0x0f == 2, "SERVFAIL");
        fast_servfails += 1;
    }
    assert!(started.elapsed() < Duration::from_millis(1400));
    assert_eq!(fast_servfails, 8);
    assert_eq!(
        r.metric("qorgan_dns_upstream_capped_total", &[("by", "zone")]),
        8.0
    );
    // Another zone from the same client still gets a lookup slot (the client cap is 8)...
    for (i, zone) in [
        "a.other.test.",
        "b.third.test.",
        "c.fourth.test.",
        "d.fifth.test.",
    ]
    .iter()
    .enumerate()
    {
        let mut q = query_bytes(zone, false);
        q[..2].copy_from_slice(&(100 + u16::try_from(i).unwrap()).to_be_bytes());
        sock.send_to(&q, r.addr).await.unwrap();
    }
    let got = tokio::time::timeout(Duration::from_millis(300), sock.recv_from(&mut buf)).await;
    assert!(got.is_err(), "admitted lookups wait for the upstream");
    // ...until the client itself holds 8: the next one is refused by the client cap.
    let q = query_bytes("e.sixth.test.", false);
    sock.send_to(&q, r.addr).await.unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_millis(400), sock.recv_from(&mut buf))
        .await
        .expect("an answer at once")
        .unwrap();
    assert!(n >= 4 && buf[3] & 0x0f == 2);
    assert_eq!(
        r.metric("qorgan_dns_upstream_capped_total", &[("by", "client")]),
        1.0
    );
    drop(black_hole);
}

#[tokio::test]
async fn silent_upstream_gives_servfail_in_bounded_time_and_counts_timeouts() {
    // A socket that reads queries and never answers.
    let black_hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let setup = Setup {
        upstream_override: Some(black_hole.local_addr().unwrap()),
        ..Setup::default()
    };
    let r = Resolver::start(setup).await;
    let mut c = r.udp(ACCOUNT_1).await;
    let started = std::time::Instant::now();
    let resp = ask(&mut c, "www.example.test.", RecordType::A).await;
    assert_eq!(rcode(&resp), ResponseCode::ServFail);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(r.metric("qorgan_dns_upstream_errors_total", &[("kind", "timeout")]) >= 1.0);
    // Blocked names do not depend on the upstream at all.
    assert_eq!(
        rcode(&ask(&mut c, "ads.test.", RecordType::A).await),
        ResponseCode::NXDomain
    );
    drop(black_hole);
}
