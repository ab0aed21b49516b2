//! The pattern matcher's literal prefilter against each rule's own DFA, on random wildcards.

use proptest::prelude::*;

use crate::matcher::{required_literal, required_literals, PatternMatcher};
use crate::parse::{parse_text, FormatHint};

const PIECES: &[&str] = &[
    "ab", "abc", "x-y", "cdn", "a", "b.c", ".", "go", ".cdn.ab", "x.go.b",
];

fn wildcard() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["||", "|", ""]),
        prop::collection::vec((prop::sample::select(PIECES), any::<bool>()), 1..4),
        any::<bool>(),
    )
        .prop_map(|(anchor, parts, end)| {
            let mut s = anchor.to_owned();
            for (p, star) in parts {
                s.push_str(p);
                if star {
                    s.push('*');
                }
            }
            if end {
                s.push('^');
            }
            s
        })
}

fn host() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec!["ab", "abc", "x-y", "cdn", "go", "b", "c"]),
        1..5,
    )
    .prop_map(|l| l.join("."))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn matcher_finds_exactly_the_rules_whose_own_regex_matches(
        rules in prop::collection::vec(wildcard(), 1..8),
        names in prop::collection::vec(host(), 1..6),
    ) {
        let text: String = rules.iter().map(|r| format!("{r}\n")).collect();
        let list = parse_text(&text, "p", FormatHint::Auto);
        let regexes: Vec<&str> = list.patterns.iter().map(|p| p.regex.as_str()).collect();
        if regexes.is_empty() {
            return Ok(());
        }
        let all = PatternMatcher::build(&regexes).unwrap();
        for name in &names {
            let mut got = vec![false; regexes.len()];
            all.for_each_match(name.as_bytes(), |i| got[i] = true);
            for (i, re) in regexes.iter().enumerate() {
                let alone = PatternMatcher::build(&[re]).unwrap();
                let mut hit = false;
                alone.for_each_match(name.as_bytes(), |_| hit = true);
                prop_assert_eq!(got[i], hit, "rule {} ({}) on {}", i, re, name);
            }
        }
    }
}

#[test]
fn required_suffix_is_a_domain_of_two_labels_or_more_under_a_dollar_anchor() {
    use crate::matcher::required_suffix;
    assert_eq!(
        required_suffix(r"(?:^|\.)api.*\.hubapi\.com$").as_deref(),
        Some("hubapi.com")
    );
    assert_eq!(
        required_suffix(r"(?:^|\.).*-go\.kelkoogroup\.net$").as_deref(),
        Some("kelkoogroup.net")
    );
    assert_eq!(
        required_suffix(r"(?:^|\.)click\.microsoft.*\.com$"),
        None,
        "a bare TLD"
    );
    assert_eq!(required_suffix(r"(?:^|\.)adservice\.google\..*$"), None);
    assert_eq!(
        required_suffix(r"(?:^|\.)mtpc\.se"),
        None,
        "not anchored at the end"
    );
}

#[test]
fn required_literal_is_only_taken_from_plain_wildcard_shapes() {
    assert_eq!(
        required_literal(r"(?:^|\.)api.*\.hubapi\.com$").as_deref(),
        Some(".hubapi.com")
    );
    assert_eq!(required_literal("^.*g00gle.*$").as_deref(), Some("g00gle"));
    assert_eq!(required_literal(r"^94\.242\.247\.(2[0-9]|3[0-2])$"), None);
    assert_eq!(
        required_literal("^a.*b$"),
        None,
        "too short to filter anything"
    );
}

#[test]
fn required_literals_take_one_of_an_alternation_and_the_literal_part_of_a_regex() {
    let set = |re: &str| required_literals(re);
    let own = |v: &[&str]| Some(v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
    assert_eq!(
        set(r"(^|.+\-|.+\.)(piwik|matomo|sentry)\d*(\-[^.]+)?\.[^.]+\.[^.]+.*$"),
        own(&["matomo", "piwik", "sentry"])
    );
    assert_eq!(
        set(r"^94\.242\.247\.(2[0-9]|3[0-2])$"),
        own(&["94.242.247."])
    );
    assert_eq!(set(r"(^|\.)Tracker\d+\."), own(&["tracker"]), "lower-cased");
    assert_eq!(
        set(r"(^|\.)[0-9a-f]{8}(-[0-9a-f]{4}){3}\.[a-z]{2,}$"),
        None,
        "classes only"
    );
    assert_eq!(
        set(r"^(ads|x)\.example$"),
        own(&[".example"]),
        "a branch too short"
    );
    assert_eq!(
        set(r"^(ads)?tracker"),
        own(&["tracker"]),
        "an optional part"
    );
    assert_eq!(set(r"^ab(cd|ef)?$"), None);
}

#[test]
fn rules_filed_under_literal_sets_match_as_their_own_regex() {
    let regexes = [
        r"(^|.+\-|.+\.)(piwik|matomo|sentry)\d*(\-[^.]+)?\.[^.]+\.[^.]+.*$",
        r"^94\.242\.247\.(2[0-9]|3[0-2])$",
        r"(^|\.)[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}\.[a-z]{2,}$",
        r"^.*g00gle.*$",
    ];
    let all = PatternMatcher::build(&regexes).unwrap();
    let names = [
        "piwik.example.com",
        "stats-matomo2.example.org",
        "cdn.sentry-x.example.net",
        "piwik.com",
        "mypiwik.example.com",
        "94.242.247.25",
        "94.242.247.33",
        "94.242.247.2",
        "0123abcd-0000-1111-2222-0123456789ab.com",
        "g00gle.example",
        "www.example.com",
        "sentry.example",
    ];
    for name in names {
        let mut got = vec![false; regexes.len()];
        all.for_each_match(name.as_bytes(), |i| got[i] = true);
        for (i, re) in regexes.iter().enumerate() {
            let alone = regex_automata::meta::Regex::new(&format!("(?i){re}")).unwrap();
            assert_eq!(got[i], alone.is_match(name), "rule {re} on {name}");
        }
    }
}
