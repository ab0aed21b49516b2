//! The decision rules of CONTRACT §3 and the client map.

use std::net::IpAddr;
use std::sync::Arc;

use crate::parse::{parse_text, FormatHint};
use crate::{
    build_own_sets, compile_dir, AccountId, AccountPolicy, Action, BlockMode, BlocklistError,
    CategoryMask, ClientMap, ClientPolicy, DomainSet, ListRef, PolicySnapshot, Rule, RuleRef,
    Scope, Verdict,
};

fn snapshot(files: &[(&str, &str)]) -> PolicySnapshot {
    let dir = tempfile::tempdir().unwrap();
    for (rel, text) in files {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let (catalog, _) = compile_dir(dir.path()).unwrap();
    PolicySnapshot::empty(Arc::new(catalog))
}

fn own(policy: &mut AccountPolicy, block: &str, allow: &str) {
    let b = parse_text(block, "block", FormatHint::Auto);
    let a = parse_text(allow, "allow", FormatHint::Auto);
    let (ob, oa) = build_own_sets((&b.rules, &b.patterns), (&a.rules, &a.patterns)).unwrap();
    policy.own_block = ob;
    policy.own_allow = oa;
}

#[test]
fn important_block_beats_the_lists_exception_but_not_the_own_allow_list() {
    let s = snapshot(&[("ads/l.txt", "||x.example^$important\n@@||x.example^\n||y.example^\n@@||y.example^\n||z.example^$important\n@@||z.example^$important\n")]);
    let mut p = AccountPolicy::new(AccountId(1), CategoryMask::ALL, BlockMode::Nxdomain);
    assert!(s.decide_dotted(&p, b"a.x.example").is_blocked());
    assert!(matches!(
        s.decide_dotted(&p, b"y.example"),
        Verdict::Allowed { .. }
    ));
    assert!(matches!(
        s.decide_dotted(&p, b"z.example"),
        Verdict::Allowed { .. }
    ));
    own(&mut p, "", "x.example\n");
    let v = s.decide_dotted(&p, b"a.x.example");
    assert!(
        matches!(v, Verdict::Allowed { by } if by.list == ListRef::OwnAllow),
        "{v:?}"
    );
}

#[test]
fn disabled_filter_allows_everything() {
    let s = snapshot(&[("ads/l.txt", "x.example\n")]);
    let mut p = AccountPolicy::new(AccountId(1), CategoryMask::ALL, BlockMode::Nxdomain);
    own(&mut p, "y.example\n", "");
    assert!(s.decide_dotted(&p, b"x.example").is_blocked());
    p.enabled = false;
    assert_eq!(s.decide_dotted(&p, b"x.example"), Verdict::Allow);
    assert_eq!(s.decide_dotted(&p, b"y.example"), Verdict::Allow);
}

#[test]
fn only_enabled_categories_block() {
    let s = snapshot(&[
        ("ads/l.txt", "ads.example\n"),
        ("adult/l.txt", "adult.example\n"),
    ]);
    let mask = s.catalog.category_mask(["adult"]).unwrap();
    let p = AccountPolicy::new(AccountId(1), mask, BlockMode::Nxdomain);
    assert_eq!(s.decide_dotted(&p, b"ads.example"), Verdict::Allow);
    let v = s.decide_dotted(&p, b"www.adult.example");
    let Verdict::Block { by } = v else {
        panic!("{v:?}")
    };
    assert_eq!(
        by.list,
        ListRef::Category(s.catalog.category_index("adult").unwrap())
    );
    assert_eq!(
        by.rule,
        RuleRef::Domain {
            labels: 2,
            scope: Scope::WithSubdomains
        }
    );
    assert_eq!(by.matched_name("www.adult.example."), Some("adult.example"));
    assert_eq!(
        s.catalog.category_mask(["ads", "nope"]).unwrap_err(),
        vec!["nope".to_owned()]
    );
}

#[test]
fn own_block_list_blocks_and_its_exceptions_allow() {
    let s = snapshot(&[("ads/l.txt", "cat.example\n")]);
    let mut p = AccountPolicy::new(AccountId(1), CategoryMask::NONE, BlockMode::Nxdomain);
    own(
        &mut p,
        "||mine.example^\n@@||ok.mine.example^\n|*casino*^\n",
        "",
    );
    let v = s.decide_dotted(&p, b"a.mine.example");
    assert!(
        matches!(v, Verdict::Block { by } if by.list == ListRef::OwnBlock),
        "{v:?}"
    );
    assert!(matches!(
        s.decide_dotted(&p, b"ok.mine.example"),
        Verdict::Allowed { .. }
    ));
    let v = s.decide_dotted(&p, b"best-casino.example");
    assert!(
        matches!(v, Verdict::Block { by } if by.rule == RuleRef::Pattern(0)),
        "{v:?}"
    );
    assert_eq!(p.own_block.patterns(), &["|*casino*^".to_owned()]);
    assert_eq!(s.decide_dotted(&p, b"cat.example"), Verdict::Allow);
}

#[test]
fn labels_in_reverse_any_case_decide_like_the_dotted_name() {
    let s = snapshot(&[("ads/l.txt", "||tracker.example^\n")]);
    let p = AccountPolicy::new(AccountId(1), CategoryMask::ALL, BlockMode::Nxdomain);
    let labels: [&[u8]; 3] = [b"EXAMPLE", b"Tracker", b"cdn"];
    assert!(s.decide_labels_rev(&p, labels.iter().copied()).is_blocked());
    let odd: [&[u8]; 2] = [b"example", b"tracker.x"];
    assert_eq!(
        s.decide_labels_rev(&p, odd.iter().copied()),
        Verdict::Allow,
        "a dot inside a label matches nothing"
    );
    assert_eq!(s.decide_dotted(&p, b"."), Verdict::Allow);
    assert_eq!(s.decide_dotted(&p, b""), Verdict::Allow);
}

#[test]
fn counters_count_queries_blocks_and_categories() {
    let s = snapshot(&[("ads/l.txt", "x.example\n")]);
    let p = AccountPolicy::new(AccountId(1), CategoryMask::ALL, BlockMode::Nxdomain);
    for n in [&b"x.example"[..], b"y.example", b"a.x.example"] {
        p.counters.record(&s.decide_dotted(&p, n));
    }
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(p.counters.queries.load(Relaxed), 3);
    assert_eq!(p.counters.blocked.load(Relaxed), 2);
    assert_eq!(p.counters.blocked_by_category[0].load(Relaxed), 2);
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn client_map_takes_the_longest_prefix_for_v4_v6_and_mapped_v4() {
    let m = ClientMap::build(
        [
            ("10.0.0.0/8".parse().unwrap(), 1u64),
            ("10.1.2.0/24".parse().unwrap(), 2),
            ("10.1.0.0/16".parse().unwrap(), 2),
            ("2001:db8::/32".parse().unwrap(), 3),
            ("2001:db8:1::/48".parse().unwrap(), 3),
        ],
        |v| *v,
    );
    // 10.1.2.0/24 nests in 10.0.0.0/8 of another owner: refused, naming both.
    let err = m.unwrap_err();
    assert!(matches!(err, BlocklistError::OverlappingNetworks { .. }));
    let text = err.to_string();
    assert!(
        text.contains("10.0.0.0/8") && text.contains("of 1") && text.contains("of 2"),
        "{text}"
    );

    let m = ClientMap::build(
        [
            ("10.0.0.0/8".parse().unwrap(), 1u64),
            ("10.1.2.7/24".parse().unwrap(), 1),
            ("192.168.0.0/16".parse().unwrap(), 2),
            ("2001:db8::/32".parse().unwrap(), 3),
            ("2001:db8:1::/48".parse().unwrap(), 3),
            ("10.0.0.0/8".parse().unwrap(), 1),
        ],
        |v| *v,
    )
    .unwrap();
    assert_eq!(m.len(), 5);
    assert_eq!(m.lookup(ip("10.1.2.3")), Some(&1));
    assert_eq!(m.lookup(ip("192.168.5.5")), Some(&2));
    assert_eq!(m.lookup(ip("::ffff:192.168.5.5")), Some(&2));
    assert_eq!(m.lookup(ip("2001:db8:1::1")), Some(&3));
    assert_eq!(m.lookup(ip("2001:db9::1")), None);
    assert_eq!(m.lookup(ip("11.0.0.1")), None);
}

#[test]
fn same_network_for_two_owners_is_an_error() {
    let err = ClientMap::build(
        [
            ("10.0.0.0/24".parse().unwrap(), "a"),
            ("10.0.0.0/24".parse().unwrap(), "b"),
        ],
        |v| *v,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "network 10.0.0.0/24 of b overlaps network 10.0.0.0/24 of a"
    );
}

#[test]
fn default_networks_apply_only_where_no_account_is() {
    let mut s = snapshot(&[("ads/l.txt", "x.example\n")]);
    let acct = Arc::new(AccountPolicy::new(
        AccountId(5),
        CategoryMask::ALL,
        BlockMode::Refused,
    ));
    let dflt = Arc::new(AccountPolicy::new(
        AccountId(0),
        CategoryMask::NONE,
        BlockMode::Nxdomain,
    ));
    s.policies = vec![acct];
    s.clients =
        Arc::new(ClientMap::build([("127.0.0.2/32".parse().unwrap(), 0u32)], |i| *i).unwrap());
    s.default_networks = ClientMap::build([("127.0.0.0/8".parse().unwrap(), ())], |_| 0).unwrap();
    s.default_policy = Some(dflt);
    assert!(
        matches!(s.client_policy(ip("127.0.0.2")), ClientPolicy::Account(p) if p.id == AccountId(5))
    );
    assert!(
        matches!(s.client_policy(ip("127.0.0.1")), ClientPolicy::DefaultNetwork(p) if p.id == AccountId(0))
    );
    assert!(matches!(s.client_policy(ip("::1")), ClientPolicy::Unknown));
}

fn wire(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for l in name.split('.').filter(|l| !l.is_empty()) {
        out.push(u8::try_from(l.len()).unwrap());
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
    out
}

#[test]
fn wire_format_and_fresh_iterators_decide_like_the_dotted_name() {
    let s = snapshot(&[("ads/l.txt", "||tracker.example^\n|exact.example^\n")]);
    let p = AccountPolicy::new(AccountId(1), CategoryMask::ALL, BlockMode::Nxdomain);
    for name in [
        "cdn.TRACKER.example",
        "tracker.example.",
        "exact.example",
        "a.exact.example",
        "other.example",
        ".",
    ] {
        let dotted = s.decide_dotted(&p, name.as_bytes());
        assert_eq!(s.decide_wire(&p, &wire(name)), dotted, "{name}");
        let labels: Vec<&[u8]> = crate::name::labels_rev(name.as_bytes()).collect();
        assert_eq!(
            s.decide_with(&p, || labels.iter().copied()),
            dotted,
            "{name}"
        );
    }
    // Malformed wire names match nothing: a compression pointer, a truncated label, no root.
    assert_eq!(s.decide_wire(&p, &[0xc0, 0x0c]), Verdict::Allow);
    assert_eq!(s.decide_wire(&p, &[7, b't', b'r']), Verdict::Allow);
    assert_eq!(
        s.decide_wire(&p, &wire("tracker.example")[..16]),
        Verdict::Allow
    );
}

#[test]
fn small_and_large_own_lists_cover_the_same_names() {
    // Up to SORTED_MAX names a set is a sorted array; above it, an fst. Both must agree.
    let rule = |name: String, scope| Rule {
        name,
        scope,
        action: Action::Block,
        important: false,
        line: 1,
    };
    let base = vec![
        rule("ads.example".into(), Scope::WithSubdomains),
        rule("exact.example".into(), Scope::Exact),
        rule("below.example".into(), Scope::SubdomainsOnly),
        rule("a.b.c.example".into(), Scope::WithSubdomains),
    ];
    let mut large = base.clone();
    large.extend(
        (0..crate::matcher::SORTED_MAX).map(|i| rule(format!("n{i}.filler.test"), Scope::Exact)),
    );
    let small = DomainSet::from_rules(&base, &[]).unwrap();
    let large = DomainSet::from_rules(&large, &[]).unwrap();
    for q in [
        "ads.example",
        "x.ads.example",
        "ADS.Example.",
        "exact.example",
        "x.exact.example",
        "below.example",
        "x.below.example",
        "c.example",
        "b.c.example",
        "a.b.c.example",
        "z.a.b.c.example",
        "example",
        "ads.example.org",
        "nads.example",
        "",
    ] {
        assert_eq!(
            small.covers_dotted(q.as_bytes()),
            large.covers_dotted(q.as_bytes()),
            "{q}"
        );
    }
    assert!(small.covers_dotted(b"x.ads.example") && !small.covers_dotted(b"below.example"));
    assert!(large.covers_dotted(b"n7.filler.test") && !large.covers_dotted(b"x.n7.filler.test"));
}

#[test]
fn an_accounts_query_rate_window_admits_its_limit_per_second_and_counts_the_rest() {
    let mut p = AccountPolicy::new(AccountId(1), CategoryMask::ALL, BlockMode::Nxdomain);
    // No limit: the clock is never read.
    assert!(p.admit(|| panic!("no clock without a limit")));
    p.qps_limit = 2;
    let at = |s: u64| move || s;
    assert!(p.admit(at(100)) && p.admit(at(100)));
    assert!(!p.admit(at(100)), "third in the same second");
    assert!(p.admit(at(101)), "a new second starts a new window");
    assert_eq!(
        p.counters
            .rate_limited
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn the_deciding_rule_is_the_deepest_listed_parent_however_many_are_listed() {
    // Ten listed ancestors: more keys than one walk records, so the explanation walks again;
    // with three it reads what the first walk met. Both name the deepest rule of the category.
    let deep = "l9.l8.l7.l6.l5.l4.l3.l2.l1.example";
    let labels: Vec<&str> = deep.split('.').collect();
    let mut list = String::new();
    for i in 0..labels.len() - 1 {
        list.push_str(&format!("{}\n", labels[i..].join(".")));
    }
    let s = snapshot(&[
        ("ads/l.txt", &list),
        ("adult/l.txt", "l1.example\n@@l2.l1.example\n"),
    ]);
    let p = AccountPolicy::new(AccountId(1), CategoryMask::ALL, BlockMode::Nxdomain);
    for (name, depth) in [
        (format!("www.{deep}"), 10u8),
        ("x.l3.l2.l1.example".to_owned(), 4),
    ] {
        let v = s.decide_dotted(&p, name.as_bytes());
        let Verdict::Block { by } = v else {
            panic!("{name}: {v:?}")
        };
        assert_eq!(
            by.list,
            ListRef::Category(s.catalog.category_index("ads").unwrap())
        );
        assert_eq!(
            by.rule,
            RuleRef::Domain {
                labels: depth,
                scope: Scope::WithSubdomains
            },
            "{name}"
        );
    }
}
