//! One test per parser quirk.

use crate::parse::{parse_text, FormatHint, ParsedList, RejectReason};
use crate::{Action, Scope};

fn parse(text: &str) -> ParsedList {
    parse_text(text, "list.txt", FormatHint::Auto)
}

fn names(l: &ParsedList) -> Vec<(&str, Scope, Action, bool)> {
    l.rules
        .iter()
        .map(|r| (r.name.as_str(), r.scope, r.action, r.important))
        .collect()
}

#[test]
fn hosts_line_with_several_names_blocks_each_with_subdomains() {
    let l = parse("0.0.0.0 a.example b.example  c.example # trailing comment\n");
    assert_eq!(
        names(&l),
        vec![
            ("a.example", Scope::WithSubdomains, Action::Block, false),
            ("b.example", Scope::WithSubdomains, Action::Block, false),
            ("c.example", Scope::WithSubdomains, Action::Block, false),
        ]
    );
    assert!(l.rejected.is_empty());
}

#[test]
fn hosts_localhost_entries_are_ignored_not_blocked() {
    let l = parse("127.0.0.1  localhost\n::1  localhost ip6-localhost ip6-loopback\n0.0.0.0 broadcasthost\n:: ads.example\n");
    assert_eq!(
        names(&l),
        vec![("ads.example", Scope::WithSubdomains, Action::Block, false)]
    );
    assert_eq!(l.ignored, 5);
    assert!(l.rejected.is_empty());
}

#[test]
fn hosts_line_to_a_real_address_is_rejected_as_a_redirect() {
    let l = parse("192.168.1.1 router.example\n0.0.0.0\n");
    assert!(l.rules.is_empty());
    assert_eq!(l.rejected.len(), 2);
    assert!(matches!(
        l.rejected[0].reason,
        RejectReason::HostsAddress(_)
    ));
    assert_eq!(l.rejected[1].reason, RejectReason::HostsNoName);
}

#[test]
fn hosts_line_keeps_good_names_and_rejects_the_bad_one() {
    let l = parse("0.0.0.0 good.example bad..example\n");
    assert_eq!(l.rules.len(), 1);
    assert_eq!(l.rejected.len(), 1);
    assert_eq!(
        l.rejected[0].to_string(),
        "list.txt:1: `bad..example`: empty label (two dots in a row or a leading dot)"
    );
}

#[test]
fn plain_domain_lines_cover_subdomains_and_star_dot_only_subdomains() {
    let l = parse("Example.COM.\n*.sub.example\n");
    assert_eq!(
        names(&l),
        vec![
            ("example.com", Scope::WithSubdomains, Action::Block, false),
            ("sub.example", Scope::SubdomainsOnly, Action::Block, false),
        ]
    );
}

#[test]
fn adblock_anchors_give_the_three_scopes() {
    let l = parse("||a.example^\n|b.example^\n||*.c.example^\n@@||d.example^\n|e.example|\n");
    assert_eq!(
        names(&l),
        vec![
            ("a.example", Scope::WithSubdomains, Action::Block, false),
            ("b.example", Scope::Exact, Action::Block, false),
            ("c.example", Scope::SubdomainsOnly, Action::Block, false),
            ("d.example", Scope::WithSubdomains, Action::Allow, false),
            ("e.example", Scope::Exact, Action::Block, false),
        ]
    );
}

#[test]
fn adblock_modifiers_without_dns_meaning_are_rejected_with_the_modifier() {
    let l = parse("||a.example^$third-party\n||b.example^$script,important\n||c.example^$domain=x.example\n||d.example^$dnstype=AAAA\n||e.example^$client=10.0.0.1\n");
    assert!(l.rules.is_empty(), "no rule may be widened: {:?}", l.rules);
    let reasons: Vec<String> = l.rejected.iter().map(ToString::to_string).collect();
    assert_eq!(reasons.len(), 5);
    assert!(
        reasons[0].contains("`$third-party` has no meaning"),
        "{}",
        reasons[0]
    );
    assert!(reasons[1].contains("`$script`"), "{}", reasons[1]);
    assert!(reasons[2].contains("`$domain=x.example`"), "{}", reasons[2]);
    assert!(reasons[3].contains("would widen"), "{}", reasons[3]);
    assert!(reasons[4].starts_with("list.txt:5: "), "{}", reasons[4]);
}

#[test]
fn cosmetic_and_path_rules_are_rejected() {
    let l = parse("example.com##.ad-banner\n||example.com/ads/*\n##.generic\n");
    assert_eq!(l.rejected.len(), 3, "{:?}", l.rejected);
    assert_eq!(l.rejected[0].reason, RejectReason::Cosmetic);
    assert_eq!(l.rejected[1].reason, RejectReason::PathRule);
    // A line starting with `##` is a generic cosmetic rule: rejected, not a comment.
    assert_eq!(l.rejected[2].reason, RejectReason::Cosmetic);
    assert_eq!(l.skipped, 0);
}

#[test]
fn dnsrewrite_nxdomain_is_a_block_and_other_rewrites_are_rejected() {
    let l = parse("||mask.icloud.com^$dnsrewrite=NXDOMAIN\n||x.example^$dnsrewrite=1.2.3.4\n");
    assert_eq!(
        names(&l),
        vec![(
            "mask.icloud.com",
            Scope::WithSubdomains,
            Action::Block,
            false
        )]
    );
    assert_eq!(l.rejected.len(), 1);
    assert!(matches!(l.rejected[0].reason, RejectReason::DnsRewrite(_)));
}

#[test]
fn badfilter_cancels_the_identical_rule_only() {
    let l = parse("||a.example^\n||a.example^$badfilter\n|b.example^\n||b.example^$badfilter\n");
    assert_eq!(
        names(&l),
        vec![("b.example", Scope::Exact, Action::Block, false)]
    );
    assert_eq!(l.badfilters.len(), 2);
}

#[test]
fn important_and_exceptions_are_kept_apart() {
    let l = parse("||a.example^$important\n@@||a.example^\n@@||b.example^$important\n");
    assert_eq!(
        names(&l),
        vec![
            ("a.example", Scope::WithSubdomains, Action::Block, true),
            ("a.example", Scope::WithSubdomains, Action::Allow, false),
            ("b.example", Scope::WithSubdomains, Action::Allow, true),
        ]
    );
}

#[test]
fn wildcards_and_regexes_become_patterns_and_lookaround_is_rejected() {
    let l = parse("|*g00gle*^\n||ads*.example^\n/^ad[0-9]+\\./\n/(?=x)y/\n||*^\n");
    assert_eq!(l.patterns.len(), 3);
    assert_eq!(l.patterns[0].regex, "^.*g00gle.*$");
    assert_eq!(l.patterns[1].regex, r"(?:^|\.)ads.*\.example$");
    assert_eq!(l.patterns[2].regex, r"^ad[0-9]+\.");
    assert_eq!(l.rejected.len(), 2);
    assert!(matches!(l.rejected[0].reason, RejectReason::BadRegex(_)));
    assert_eq!(l.rejected[0].line, 4);
    assert_eq!(l.rejected[1].reason, RejectReason::MatchesEverything);
}

#[test]
fn rpz_scopes_origin_and_records() {
    let text = "$TTL 300\n$ORIGIN rpz.example.\n@ SOA ns.example. admin.example. (\n  1 3600 600 86400 300 )\n  NS ns.example.\nads.example CNAME .\n*.track.example 300 IN CNAME .\nok.ads.example CNAME rpz-passthru.\nabs.example.rpz.example. CNAME *.\nfar.example. CNAME .\nredirect.example CNAME walled.example.\nlocal.example A 10.0.0.1\n";
    let l = parse_text(text, "zone.rpz", FormatHint::Rpz);
    assert_eq!(
        names(&l),
        vec![
            ("ads.example", Scope::Exact, Action::Block, false),
            ("track.example", Scope::SubdomainsOnly, Action::Block, false),
            ("ok.ads.example", Scope::Exact, Action::Allow, false),
            ("abs.example", Scope::Exact, Action::Block, false),
        ]
    );
    let lines: Vec<u32> = l.rejected.iter().map(|r| r.line).collect();
    assert_eq!(lines, vec![10, 11, 12], "{:?}", l.rejected);
}

#[test]
fn rpz_records_are_recognised_without_a_hint() {
    let l = parse("$TTL 60\nads.example CNAME .\n");
    assert_eq!(
        names(&l),
        vec![("ads.example", Scope::Exact, Action::Block, false)]
    );
}

#[test]
fn international_names_are_converted_to_punycode() {
    let l = parse("||пример.рф^\n0.0.0.0 bücher.example\n");
    let got: Vec<&str> = l.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(got, vec!["xn--e1afmkfd.xn--p1ai", "xn--bcher-kva.example"]);
}

#[test]
fn comments_headers_and_blank_lines_are_skipped() {
    let l = parse("[Adblock Plus]\n! comment\n# comment\n; comment\n\n   \nreal.example\n");
    assert_eq!(l.rules.len(), 1);
    assert_eq!(l.skipped, 6);
    assert_eq!(l.rules[0].line, 7);
}

#[test]
fn unrecognised_lines_are_rejected_with_file_and_line() {
    let l = parse("ok.example\nthis is not a rule\n");
    assert_eq!(l.rejected.len(), 1);
    assert_eq!(
        l.rejected[0].to_string(),
        "list.txt:2: not a rule in any supported list format"
    );
}
