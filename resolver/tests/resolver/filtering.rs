//! Category, own-list and CNAME decisions, each block mode, EDE, over UDP and TCP.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, RecordType};

use crate::harness::{ask, ede, rcode, rdata, Resolver, Setup, ACCOUNT_1, POLICY};
use crate::upstream::{V4, V6};

#[tokio::test]
async fn blocks_listed_name_with_nxdomain_and_ede_blocked() {
    let r = Resolver::start(Setup::default()).await;
    let mut c = r.udp(ACCOUNT_1).await;
    let resp = ask(&mut c, "ads.test.", RecordType::A).await;
    assert_eq!(rcode(&resp), ResponseCode::NXDomain);
    assert!(resp.answers.is_empty());
    assert_eq!(ede(&resp), vec![(15, "ads".to_owned())]);
    // The negative answer carries a SOA so that caches keep it block_ttl seconds.
    assert_eq!(resp.authorities.len(), 1);
    assert_eq!(resp.authorities[0].ttl, 300);
    assert_eq!(
        r.metric(
            "qorgan_dns_queries_total",
            &[("protocol", "udp"), ("qtype", "a"), ("outcome", "blocked")]
        ),
        1.0
    );
    assert_eq!(
        r.upstream.queries(),
        0,
        "a blocked name never reaches the upstream"
    );
}

#[tokio::test]
async fn blocks_subdomain_of_listed_domain() {
    let r = Resolver::start(Setup::default()).await;
    let mut c = r.udp(ACCOUNT_1).await;
    for name in [
        "x.ads.test.",
        "a.b.c.ads.test.",
        "banner.test.",
        "deep.banner.test.",
    ] {
        assert_eq!(
            rcode(&ask(&mut c, name, RecordType::A).await),
            ResponseCode::NXDomain,
            "{name}"
        );
    }
    // A name that merely ends with the same characters is not a subdomain.
    let resp = ask(&mut c, "notads.test.", RecordType::A).await;
    assert_eq!(rdata(&resp), vec![RData::A(A(V4))]);
}

#[tokio::test]
async fn allowed_name_is_answered_by_the_upstream() {
    let r = Resolver::start(Setup::default()).await;
    let mut c = r.udp(ACCOUNT_1).await;
    let a = ask(&mut c, "www.example.test.", RecordType::A).await;
    assert_eq!(rcode(&a), ResponseCode::NoError);
    assert_eq!(rdata(&a), vec![RData::A(A(V4))]);
    assert!(ede(&a).is_empty());
    assert!(a.metadata.recursion_available);
    // The upstream saw a 0x20-randomised name; the client gets its own spelling back.
    let mixed = ask(&mut c, "WWW.Example.TEST.", RecordType::A).await;
    let sent = hickory_proto::rr::Name::from_ascii("WWW.Example.TEST.").unwrap();
    assert!(
        mixed.answers[0].name.eq_case(&sent),
        "owner {} question {:?}",
        mixed.answers[0].name,
        mixed.queries
    );
    let aaaa = ask(&mut c, "www.example.test.", RecordType::AAAA).await;
    assert_eq!(rdata(&aaaa), vec![RData::AAAA(AAAA(V6))]);
    // Categories the account did not enable do not block.
    let other_category = ask(&mut c, "evil.test.", RecordType::A).await;
    assert_eq!(rdata(&other_category), vec![RData::A(A(V4))]);
    assert_eq!(
        r.metric("qorgan_dns_queries_total", &[("outcome", "allowed")]),
        4.0
    );
}

#[tokio::test]
async fn own_allow_list_wins_over_a_category_block() {
    let r = Resolver::start(Setup::default()).await;
    let mut c = r.udp(ACCOUNT_1).await;
    let allowed = ask(&mut c, "ok.ads.test.", RecordType::A).await;
    assert_eq!(rdata(&allowed), vec![RData::A(A(V4))]);
    // A plain-domain allow line covers its subdomains too, but not its parent or siblings.
    assert_eq!(
        rdata(&ask(&mut c, "sub.ok.ads.test.", RecordType::A).await),
        vec![RData::A(A(V4))]
    );
    assert_eq!(
        rcode(&ask(&mut c, "ads.test.", RecordType::A).await),
        ResponseCode::NXDomain
    );
    assert_eq!(
        rcode(&ask(&mut c, "other.ads.test.", RecordType::A).await),
        ResponseCode::NXDomain
    );
    let counters = r.store.counters(qorgan_blocklists::AccountId(1)).unwrap();
    assert_eq!(
        counters
            .allowed_override
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    assert_eq!(
        counters.blocked.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[tokio::test]
async fn own_block_list_blocks_with_its_own_ede_text() {
    let r = Resolver::start(Setup::default()).await;
    let mut c = r.udp(ACCOUNT_1).await;
    let resp = ask(&mut c, "cdn.mine.test.", RecordType::A).await;
    assert_eq!(rcode(&resp), ResponseCode::NXDomain);
    assert_eq!(ede(&resp), vec![(15, "own block list".to_owned())]);
    let counters = r.store.counters(qorgan_blocklists::AccountId(1)).unwrap();
    assert_eq!(
        counters
            .blocked_own
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn ede_is_absent_when_the_client_sent_no_edns() {
    let r = Resolver::start(Setup::default()).await;
    let mut c = r.udp_no_edns(ACCOUNT_1).await;
    let resp = ask(&mut c, "ads.test.", RecordType::A).await;
    assert_eq!(rcode(&resp), ResponseCode::NXDomain);
    assert!(resp.edns.is_none(), "no OPT to a client that sent none");
}

const MODES: &str = r#"
[[accounts]]
id = 11
networks = ["127.0.0.11/32"]
categories = ["ads"]
block_mode = "null_ip"

[[accounts]]
id = 12
networks = ["127.0.0.12/32"]
categories = ["ads"]
block_mode = "refused"

[[accounts]]
id = 13
networks = ["127.0.0.13/32"]
categories = ["ads"]
block_mode = "custom_ip"
custom_ip = ["192.0.2.80"]

[[accounts]]
id = 14
networks = ["127.0.0.14/32"]
categories = ["ads"]
block_mode = "custom_ip"
custom_ip = ["192.0.2.80", "2001:db8::80"]
"#;

fn src(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

#[tokio::test]
async fn null_ip_mode_answers_unspecified_addresses_and_nodata_for_mx() {
    let r = Resolver::start(Setup {
        policy: format!("{POLICY}{MODES}"),
        ..Setup::default()
    })
    .await;
    let mut c = r.udp(src(11)).await;
    let a = ask(&mut c, "ads.test.", RecordType::A).await;
    assert_eq!(
        (rcode(&a), rdata(&a)),
        (
            ResponseCode::NoError,
            vec![RData::A(A(Ipv4Addr::UNSPECIFIED))]
        )
    );
    assert_eq!(a.answers[0].ttl, 300);
    assert_eq!(ede(&a), vec![(15, "ads".to_owned())]);
    let aaaa = ask(&mut c, "ads.test.", RecordType::AAAA).await;
    assert_eq!(rdata(&aaaa), vec![RData::AAAA(AAAA(Ipv6Addr::UNSPECIFIED))]);
    let mx = ask(&mut c, "ads.test.", RecordType::MX).await;
    assert_eq!(
        (rcode(&mx), mx.answers.len()),
        (ResponseCode::NoError, 0),
        "NODATA"
    );
    assert_eq!(ede(&mx).len(), 1);
}

#[tokio::test]
async fn refused_mode_answers_refused() {
    let r = Resolver::start(Setup {
        policy: format!("{POLICY}{MODES}"),
        ..Setup::default()
    })
    .await;
    let mut c = r.udp(src(12)).await;
    let resp = ask(&mut c, "ads.test.", RecordType::A).await;
    assert_eq!(rcode(&resp), ResponseCode::Refused);
    assert_eq!(ede(&resp).len(), 1);
    // The same account's allowed names still resolve.
    assert_eq!(
        rdata(&ask(&mut c, "fine.test.", RecordType::A).await),
        vec![RData::A(A(V4))]
    );
}

#[tokio::test]
async fn custom_ip_mode_answers_the_block_page_and_nodata_for_a_missing_family() {
    let r = Resolver::start(Setup {
        policy: format!("{POLICY}{MODES}"),
        ..Setup::default()
    })
    .await;
    let page4 = Ipv4Addr::new(192, 0, 2, 80);
    let mut only_v4 = r.udp(src(13)).await;
    assert_eq!(
        rdata(&ask(&mut only_v4, "ads.test.", RecordType::A).await),
        vec![RData::A(A(page4))]
    );
    let aaaa = ask(&mut only_v4, "ads.test.", RecordType::AAAA).await;
    assert_eq!(
        (rcode(&aaaa), aaaa.answers.len()),
        (ResponseCode::NoError, 0)
    );
    let mut both = r.udp(src(14)).await;
    let page6: Ipv6Addr = "2001:db8::80".parse().unwrap();
    assert_eq!(
        rdata(&ask(&mut both, "ads.test.", RecordType::AAAA).await),
        vec![RData::AAAA(AAAA(page6))]
    );
    let txt = ask(&mut both, "ads.test.", RecordType::TXT).await;
    assert_eq!((rcode(&txt), txt.answers.len()), (ResponseCode::NoError, 0));
}

#[tokio::test]
async fn tcp_answers_blocked_and_allowed_names_like_udp() {
    let r = Resolver::start(Setup::default()).await;
    let mut c = r.tcp(ACCOUNT_1).await;
    let blocked = ask(&mut c, "ads.test.", RecordType::A).await;
    assert_eq!(rcode(&blocked), ResponseCode::NXDomain);
    assert_eq!(ede(&blocked), vec![(15, "ads".to_owned())]);
    let allowed = ask(&mut c, "www.example.test.", RecordType::A).await;
    assert_eq!(rdata(&allowed), vec![RData::A(A(V4))]);
    assert_eq!(
        r.metric("qorgan_dns_queries_total", &[("protocol", "tcp")]),
        2.0
    );
    assert_eq!(
        r.metric("qorgan_dns_queries_total", &[("protocol", "udp")]),
        0.0
    );
}

#[tokio::test]
async fn a_negative_answer_through_a_cname_keeps_its_chain_and_a_blocked_target_still_blocks() {
    let r = Resolver::start(Setup::default()).await;
    let mut c = r.udp(ACCOUNT_1).await;
    let nx = ask(&mut c, "cname-nx.test.", RecordType::A).await;
    assert_eq!(rcode(&nx), ResponseCode::NXDomain);
    assert_eq!(nx.answers.len(), 1, "{:?}", nx.answers);
    assert!(
        matches!(&nx.answers[0].data, RData::CNAME(t) if t.0.to_ascii() == "gone.nx-zone.test.")
    );
    assert!(matches!(
        nx.authorities.first().map(|a| &a.data),
        Some(RData::SOA(_))
    ));
    // Asked again: the same chain (from the cache this time).
    let again = ask(&mut c, "cname-nx.test.", RecordType::A).await;
    assert_eq!(
        (rcode(&again), again.answers.len()),
        (ResponseCode::NXDomain, 1)
    );
    // cname.test has no TXT; its CNAME target is listed: the NODATA is a block, not a leak.
    let nodata = ask(&mut c, "cname.test.", RecordType::TXT).await;
    assert_eq!(rcode(&nodata), ResponseCode::NXDomain);
    assert!(nodata.answers.is_empty(), "{:?}", nodata.answers);
    assert_eq!(ede(&nodata), vec![(15, "ads".to_owned())]);
}

#[tokio::test]
async fn cname_to_a_blocked_name_is_blocked() {
    let r = Resolver::start(Setup::default()).await;
    let mut c = r.udp(ACCOUNT_1).await;
    // cname.test is not listed; its upstream answer is a CNAME to tracker.blocked.test, which is.
    let resp = ask(&mut c, "cname.test.", RecordType::A).await;
    assert_eq!(rcode(&resp), ResponseCode::NXDomain);
    assert!(
        resp.answers.is_empty(),
        "nothing of the chain leaks: {:?}",
        resp.answers
    );
    assert_eq!(ede(&resp), vec![(15, "ads".to_owned())]);
    assert_eq!(
        r.metric("qorgan_dns_queries_total", &[("outcome", "blocked")]),
        1.0
    );
    // A CNAME to an allowed name passes with its chain.
    let ok = ask(&mut c, "cname-ok.test.", RecordType::A).await;
    assert_eq!(rcode(&ok), ResponseCode::NoError);
    assert!(
        matches!(ok.answers[0].data, RData::CNAME(_)),
        "{:?}",
        ok.answers
    );
    assert_eq!(
        ok.answers.last().map(|a| a.data.clone()),
        Some(RData::A(A(V4)))
    );
}
