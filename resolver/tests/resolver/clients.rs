//! Source address → account, and what unknown sources get (`dns.unknown_clients`).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, RecordType};
use qorgan_config::UnknownClients;

use crate::harness::{ask, query_bytes, raw_exchange, rcode, rdata, Resolver, Setup, ACCOUNT_1};
use crate::upstream::V4;

const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

#[tokio::test]
async fn unknown_source_gets_no_reply_at_all_when_drop() {
    let r = Resolver::start(Setup::default()).await;
    let reply = raw_exchange(
        r.addr,
        STRANGER,
        &query_bytes("www.example.test.", false),
        Duration::from_millis(1500),
    )
    .await;
    assert_eq!(
        reply, None,
        "an unknown source must get nothing, not even an error"
    );
    assert_eq!(
        r.metric("qorgan_dns_queries_total", &[("outcome", "dropped")]),
        1.0
    );
    assert_eq!(r.upstream.queries(), 0);
    // The same query from the account's address is answered (the drop is about the source).
    let reply = raw_exchange(
        r.addr,
        ACCOUNT_1,
        &query_bytes("www.example.test.", false),
        Duration::from_secs(2),
    )
    .await;
    let reply = Message::from_vec(&reply.expect("account source answered")).unwrap();
    assert_eq!(reply.metadata.id, 0x5151);
}

#[tokio::test]
async fn unknown_source_gets_refused_when_refuse() {
    let r = Resolver::start(Setup {
        unknown_clients: UnknownClients::Refuse,
        ..Setup::default()
    })
    .await;
    let mut c = r.udp(STRANGER).await;
    let resp = ask(&mut c, "www.example.test.", RecordType::A).await;
    assert_eq!(rcode(&resp), ResponseCode::Refused);
    assert!(resp.answers.is_empty());
    assert_eq!(
        r.metric("qorgan_dns_queries_total", &[("outcome", "refused")]),
        1.0
    );
    assert_eq!(r.upstream.queries(), 0);
}

#[tokio::test]
async fn unknown_source_gets_the_default_policy_when_default() {
    let r = Resolver::start(Setup {
        unknown_clients: UnknownClients::Default,
        ..Setup::default()
    })
    .await;
    let mut c = r.udp(STRANGER).await;
    // [default_policy] categories = ["malware"] in the harness.
    assert_eq!(
        rcode(&ask(&mut c, "evil.test.", RecordType::A).await),
        ResponseCode::NXDomain
    );
    assert_eq!(
        rdata(&ask(&mut c, "ads.test.", RecordType::A).await),
        vec![RData::A(A(V4))]
    );
}

#[tokio::test]
async fn default_networks_get_the_default_policy_and_account_networks_win_over_them() {
    let r = Resolver::start(Setup {
        default_networks: vec!["127.0.0.0/8"],
        ..Setup::default()
    })
    .await;
    // 127.0.0.3 is only in the default networks: default policy (malware), even with drop.
    let mut stranger = r.udp(STRANGER).await;
    assert_eq!(
        rcode(&ask(&mut stranger, "evil.test.", RecordType::A).await),
        ResponseCode::NXDomain
    );
    assert_eq!(
        rdata(&ask(&mut stranger, "ads.test.", RecordType::A).await),
        vec![RData::A(A(V4))]
    );
    // 127.0.0.1 is account 1's (ads), inside the default /8: the account's policy applies.
    let mut account = r.udp(ACCOUNT_1).await;
    assert_eq!(
        rcode(&ask(&mut account, "ads.test.", RecordType::A).await),
        ResponseCode::NXDomain
    );
    assert_eq!(
        rdata(&ask(&mut account, "evil.test.", RecordType::A).await),
        vec![RData::A(A(V4))]
    );
}

#[tokio::test]
async fn a_message_with_qr_set_gets_no_reply() {
    let r = Resolver::start(Setup::default()).await;
    let reply = raw_exchange(
        r.addr,
        ACCOUNT_1,
        &query_bytes("www.example.test.", true),
        Duration::from_millis(1500),
    )
    .await;
    assert_eq!(reply, None, "answering a response invites reflection loops");
}

#[tokio::test]
async fn non_query_opcode_gets_notimp_and_unknown_sources_still_get_nothing() {
    let r = Resolver::start(Setup::default()).await;
    let mut status = Message::from_vec(&query_bytes("www.example.test.", false)).unwrap();
    status.metadata.op_code = hickory_proto::op::OpCode::Status;
    let bytes = status.to_vec().unwrap();
    let reply = raw_exchange(r.addr, ACCOUNT_1, &bytes, Duration::from_secs(2))
        .await
        .expect("answered");
    assert_eq!(
        Message::from_vec(&reply).unwrap().metadata.response_code,
        ResponseCode::NotImp
    );
    assert_eq!(
        raw_exchange(r.addr, STRANGER, &bytes, Duration::from_millis(800)).await,
        None
    );
}

#[tokio::test]
async fn edns_version_above_zero_gets_badvers() {
    let r = Resolver::start(Setup::default()).await;
    let mut m = Message::from_vec(&query_bytes("www.example.test.", false)).unwrap();
    let mut edns = hickory_proto::op::Edns::new();
    edns.set_version(1);
    m.set_edns(edns);
    let reply = raw_exchange(
        r.addr,
        ACCOUNT_1,
        &m.to_vec().unwrap(),
        Duration::from_secs(2),
    )
    .await
    .expect("answered");
    let reply = Message::from_vec(&reply).unwrap();
    // BADVERS is 16 (4 low bits in the header, the rest in the OPT); hickory decodes 16 as
    // BADSIG, which shares the value, so compare numbers.
    assert_eq!(u16::from(reply.metadata.response_code), 16);
    assert_eq!(reply.edns.as_ref().map(|e| e.version()), Some(0));
    assert_eq!(r.upstream.queries(), 0);
}
