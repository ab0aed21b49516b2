//! What the upstream says, passed through: NXDOMAIN, SERVFAIL, the cache, truncation.

use std::time::Duration;

use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, RecordType};

use crate::harness::{ask, query_bytes, raw_exchange, rcode, rdata, Resolver, Setup, ACCOUNT_1};
use crate::upstream::V4;

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
