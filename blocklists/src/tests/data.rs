//! The parsers against every real list in the shared data folder: counts of rules kept and
//! rejected per file (the README's numbers where it states them) and known entries.

use std::path::PathBuf;

use crate::parse::{parse_text, FormatHint, ParsedList};
use crate::{Action, Scope};

pub(crate) fn shared_blocklists() -> Option<PathBuf> {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/data/blocklists"
    ));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipped: shared data folder {} is absent", dir.display());
        None
    }
}

struct Expect {
    file: &'static str,
    lines: u64,
    rules: usize,
    patterns: usize,
    rejected: usize,
    /// (name, scope, action) that must be among the rules.
    present: &'static [(&'static str, Scope, Action)],
}

const W: Scope = Scope::WithSubdomains;
const B: Action = Action::Block;

/// Lines are `wc -l` and entries the README's "entries" column. Where rules + patterns +
/// rejected is the README's entry count it is stated so; the splits between them are ours.
const EXPECT: &[Expect] = &[
    // 6,540 entries; `127.0.0.1 localhost` and `::1 localhost` are ignored, not rules.
    Expect {
        file: "adaway.hosts.txt",
        lines: 10_607,
        rules: 6_540,
        patterns: 0,
        rejected: 0,
        present: &[("analytics.163.com", W, B), ("sync.1rx.io", W, B)],
    },
    Expect {
        file: "blocklistproject-basic.hosts.txt",
        lines: 76_049,
        rules: 76_036,
        patterns: 0,
        rejected: 0,
        present: &[
            ("0.0.0.0.beeglivesex.com", W, B),
            ("philadelphia_cbslocal.us.intellitxt.com", W, B),
        ],
    },
    Expect {
        file: "blocklistproject-phishing.domains.txt",
        lines: 190_228,
        rules: 190_215,
        patterns: 0,
        rejected: 0,
        present: &[
            ("0.01.2.13.3.sydneypropertyinvestors.com", W, B),
            ("25h.xn--qee.com", W, B),
        ],
    },
    // 909 allow rules: 851 names, 57 `*` wildcards, and `@@||mtpc.se` (no `^`), which is a
    // partial-name rule (it matches `mtpc.se*`), hence a pattern: 58 patterns.
    Expect {
        file: "hagezi-allowlist-referral.adblock.txt",
        lines: 918,
        rules: 851,
        patterns: 58,
        rejected: 0,
        present: &[
            ("1aurl.io", W, Action::Allow),
            ("7eer.net", W, Action::Allow),
        ],
    },
    Expect {
        file: "hagezi-apple-private-relay.adguard.txt",
        lines: 14,
        rules: 7,
        patterns: 0,
        rejected: 0,
        present: &[("_dns.resolver.arpa", W, B), ("mask.icloud.com", W, B)],
    },
    Expect {
        file: "hagezi-gambling.adblock.txt",
        lines: 209_399,
        rules: 209_386,
        patterns: 0,
        rejected: 0,
        present: &[("000-online-casino.com", W, B)],
    },
    Expect {
        file: "hagezi-light.domains.txt",
        lines: 87_403,
        rules: 87_391,
        patterns: 0,
        rejected: 0,
        present: &[
            ("000webhost.com", W, B),
            ("r1.sn-vgqsrnzz.c.2mdn.net", W, B),
        ],
    },
    Expect {
        file: "hagezi-nsfw.adblock.txt",
        lines: 76_675,
        rules: 76_662,
        patterns: 0,
        rejected: 0,
        present: &[("arlanxeoxxx.com", W, B)],
    },
    Expect {
        file: "hagezi-pro.adblock.txt",
        lines: 168_323,
        rules: 168_310,
        patterns: 0,
        rejected: 0,
        present: &[("0.beer", W, B), ("1nec.xyz", W, B)],
    },
    // 29 rules: the first regex uses look-ahead, which the regex engine does not support.
    Expect {
        file: "hagezi-regex-wildcard-rules.adguard.txt",
        lines: 41,
        rules: 0,
        patterns: 28,
        rejected: 1,
        present: &[],
    },
    Expect {
        file: "hagezi-spam-tlds-aggressive.adblock.txt",
        lines: 452,
        rules: 434,
        patterns: 0,
        rejected: 0,
        present: &[("actor", W, B), ("xn--p1acf", W, B)],
    },
];

fn parse_file(dir: &std::path::Path, file: &str) -> ParsedList {
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    parse_text(&text, file, FormatHint::from_file_name(file))
}

#[test]
fn every_shared_list_parses_to_its_known_counts_and_entries() {
    let Some(dir) = shared_blocklists() else {
        return;
    };
    let mut seen: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    seen.sort();
    let mut expected: Vec<String> = EXPECT.iter().map(|e| e.file.to_owned()).collect();
    expected.sort();
    assert_eq!(seen, expected, "a shared list without pinned counts");
    for e in EXPECT {
        let l = parse_file(&dir, e.file);
        assert_eq!(l.lines, e.lines, "{}: lines", e.file);
        assert_eq!(l.rules.len(), e.rules, "{}: rules", e.file);
        assert_eq!(l.patterns.len(), e.patterns, "{}: patterns", e.file);
        assert_eq!(
            l.rejected.len(),
            e.rejected,
            "{}: rejected {:?}",
            e.file,
            l.rejected
        );
        for (name, scope, action) in e.present {
            assert!(
                l.rules
                    .iter()
                    .any(|r| r.name == *name && r.scope == *scope && r.action == *action),
                "{}: {name} missing",
                e.file
            );
        }
    }
}

#[test]
fn regex_file_rejects_lookahead_at_its_line_and_keeps_the_typosquatting_wildcards() {
    let Some(dir) = shared_blocklists() else {
        return;
    };
    let l = parse_file(&dir, "hagezi-regex-wildcard-rules.adguard.txt");
    assert_eq!(l.rejected[0].line, 9);
    assert!(
        l.rejected[0].to_string().contains("look-around"),
        "{}",
        l.rejected[0]
    );
    assert!(l
        .patterns
        .iter()
        .any(|p| p.text == "|*g00gle*^" && p.regex == "^.*g00gle.*$"));
}

#[test]
fn spam_tlds_keeps_all_151_punycode_tlds() {
    let Some(dir) = shared_blocklists() else {
        return;
    };
    let l = parse_file(&dir, "hagezi-spam-tlds-aggressive.adblock.txt");
    assert_eq!(
        l.rules
            .iter()
            .filter(|r| r.name.starts_with("xn--"))
            .count(),
        151
    );
}

#[test]
fn shared_wildcard_and_regex_rules_all_compile_and_match() {
    let Some(dir) = shared_blocklists() else {
        return;
    };
    let inputs: Vec<crate::ListInput> = [
        ("regex", "hagezi-regex-wildcard-rules.adguard.txt"),
        ("referral", "hagezi-allowlist-referral.adblock.txt"),
        ("ads", "hagezi-pro.adblock.txt"),
    ]
    .iter()
    .map(|(c, f)| crate::ListInput {
        category: (*c).to_owned(),
        path: dir.join(f),
    })
    .collect();
    let (catalog, report) = crate::compile_lists(&inputs).unwrap();
    assert_eq!(catalog.patterns().len(), 28 + 58, "{report}");
    let snapshot = crate::PolicySnapshot::empty(std::sync::Arc::new(catalog));
    let p = crate::AccountPolicy::new(
        crate::AccountId(1),
        crate::CategoryMask::ALL,
        crate::BlockMode::Nxdomain,
    );
    let v = snapshot.decide_dotted(&p, b"login.faceb00k-secure.example");
    let crate::Verdict::Block { by } = v else {
        panic!("{v:?}")
    };
    let crate::RuleRef::Pattern(i) = by.rule else {
        panic!("{by:?}")
    };
    assert!(snapshot.catalog.patterns()[i as usize]
        .text
        .ends_with(":24: |*faceb00k*^"));
    assert!(
        snapshot.decide_dotted(&p, b"94.242.247.25").is_blocked(),
        "IP regex"
    );
    assert!(!snapshot.decide_dotted(&p, b"94.242.247.45").is_blocked());
    assert!(snapshot
        .decide_dotted(&p, b"matomo.stats.example.org")
        .is_blocked());
    assert_eq!(
        snapshot.decide_dotted(&p, b"www.wikipedia.org"),
        crate::Verdict::Allow
    );
}
