//! The model test: for random rule sets and random names, the fst matcher's verdict equals a
//! naive walk over every parent domain in plain `HashSet`s.

use std::collections::HashSet;
use std::fs;

use proptest::prelude::*;

use crate::parse::{parse_text, FormatHint};
use crate::{
    build_own_sets, AccountId, AccountPolicy, BlockMode, CategoryMask, ListInput, ListRef,
    PolicySnapshot, RuleRef, Scope, Verdict,
};

const LABELS: &[&str] = &["a", "b", "ads", "x-y", "_t", "xn--p1ai", "0"];

fn name_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(LABELS), 1..=4).prop_map(|l| l.join("."))
}

#[derive(Debug, Clone)]
struct ModelRule {
    name: String,
    scope: Scope,
    allow: bool,
    important: bool,
    category: u8,
}

fn rule_strategy(categories: u8) -> impl Strategy<Value = ModelRule> {
    (
        name_strategy(),
        prop::sample::select(vec![
            Scope::Exact,
            Scope::WithSubdomains,
            Scope::SubdomainsOnly,
        ]),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.2),
        0..categories,
    )
        .prop_map(|(name, scope, allow, important, category)| ModelRule {
            name,
            scope,
            allow,
            important,
            category,
        })
}

fn adblock_line(r: &ModelRule) -> String {
    let body = match r.scope {
        Scope::Exact => format!("|{}^", r.name),
        Scope::WithSubdomains => format!("||{}^", r.name),
        Scope::SubdomainsOnly => format!("||*.{}^", r.name),
    };
    format!(
        "{}{}{}",
        if r.allow { "@@" } else { "" },
        body,
        if r.important { "$important" } else { "" }
    )
}

/// Names a rule set covers, kept the naive way: the name itself in `self_`, parents in `sub`.
#[derive(Default)]
struct Naive {
    self_: HashSet<String>,
    sub: HashSet<String>,
}

impl Naive {
    fn add(&mut self, name: &str, scope: Scope) {
        if scope.covers_self() {
            self.self_.insert(name.to_owned());
        }
        if scope.covers_subdomains() {
            self.sub.insert(name.to_owned());
        }
    }

    /// Walks every parent domain of `q` (and `q` itself) through the sets.
    fn covers(&self, q: &str) -> bool {
        if self.self_.contains(q) {
            return true;
        }
        let mut rest = q;
        while let Some((_, parent)) = rest.split_once('.') {
            if self.sub.contains(parent) {
                return true;
            }
            rest = parent;
        }
        false
    }
}

const CATS: u8 = 3;

fn check_case(
    rules: &[ModelRule],
    own_block: &[(String, Scope)],
    own_allow: &[(String, Scope)],
    enabled: u64,
    query: &str,
    upper: bool,
) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut inputs = Vec::new();
    for c in 0..CATS {
        let text: String = rules
            .iter()
            .filter(|r| r.category == c)
            .map(|r| adblock_line(r) + "\n")
            .collect();
        let path = dir.path().join(format!("c{c}.txt"));
        fs::write(&path, text).unwrap();
        inputs.push(ListInput {
            category: format!("c{c}"),
            path,
        });
    }
    let (catalog, _) = crate::compile_lists(&inputs).unwrap();
    let own = |list: &[(String, Scope)]| {
        let text: String = list
            .iter()
            .map(|(n, s)| match s {
                Scope::Exact => format!("|{n}^\n"),
                Scope::WithSubdomains => format!("{n}\n"),
                Scope::SubdomainsOnly => format!("*.{n}\n"),
            })
            .collect();
        parse_text(&text, "own", FormatHint::Auto)
    };
    let (b, a) = (own(own_block), own(own_allow));
    let (own_block_set, own_allow_set) =
        build_own_sets((&b.rules, &b.patterns), (&a.rules, &a.patterns)).unwrap();
    let mut policy = AccountPolicy::new(AccountId(1), CategoryMask(enabled), BlockMode::Nxdomain);
    policy.own_block = own_block_set;
    policy.own_allow = own_allow_set;
    let snapshot = PolicySnapshot::empty(std::sync::Arc::new(catalog));
    let asked = if upper {
        query.to_ascii_uppercase() + "."
    } else {
        query.to_owned()
    };
    let got = snapshot.decide_dotted(&policy, asked.as_bytes());

    // The model.
    let mut per_cat: Vec<[Naive; 4]> = (0..CATS).map(|_| Default::default()).collect();
    for r in rules {
        let kind = usize::from(r.allow) + 2 * usize::from(r.important);
        per_cat[usize::from(r.category)][kind].add(&r.name, r.scope);
    }
    let mut ob = Naive::default();
    own_block.iter().for_each(|(n, s)| ob.add(n, *s));
    let mut oa = Naive::default();
    own_allow.iter().for_each(|(n, s)| oa.add(n, *s));
    let mut blocked_cats = Vec::new();
    let mut cancelled_cats = Vec::new();
    for (c, sets) in per_cat.iter().enumerate() {
        if enabled & (1 << c) == 0 {
            continue;
        }
        let [b, a, ib, ia] = [0, 1, 2, 3].map(|k| sets[k].covers(query));
        let blocked = !ia && (ib || (b && !a));
        if blocked {
            blocked_cats.push(c);
        } else if b || ib {
            cancelled_cats.push(c);
        }
    }
    let own_blocked = ob.covers(query);
    match got {
        Verdict::Block { by } => {
            prop_assert!(
                own_blocked || !blocked_cats.is_empty(),
                "blocked without a rule"
            );
            prop_assert!(!oa.covers(query), "own allow did not win");
            if own_blocked {
                prop_assert_eq!(by.list, ListRef::OwnBlock);
            } else {
                prop_assert_eq!(
                    by.list,
                    ListRef::Category(u8::try_from(blocked_cats[0]).unwrap())
                );
            }
            // The reported rule is a real listed name that covers the query.
            let RuleRef::Domain { .. } = by.rule else {
                return Err(TestCaseError::fail("a domain rule expected"));
            };
            let matched = by.matched_name(query).unwrap();
            let dotted_parent = format!(".{}", matched);
            prop_assert!(query == matched || query.ends_with(&dotted_parent));
        }
        Verdict::Allowed { by } => {
            if own_blocked || !blocked_cats.is_empty() {
                prop_assert!(oa.covers(query));
                prop_assert_eq!(by.list, ListRef::OwnAllow);
            } else {
                prop_assert!(!cancelled_cats.is_empty());
                prop_assert_eq!(
                    by.list,
                    ListRef::Category(u8::try_from(cancelled_cats[0]).unwrap())
                );
            }
        }
        Verdict::Allow => {
            prop_assert!(
                !own_blocked && blocked_cats.is_empty(),
                "a block was missed"
            );
            prop_assert!(
                cancelled_cats.is_empty(),
                "a cancelled block was not reported"
            );
        }
    }
    Ok(())
}

fn own_strategy() -> impl Strategy<Value = Vec<(String, Scope)>> {
    prop::collection::vec(
        (
            name_strategy(),
            prop::sample::select(vec![
                Scope::Exact,
                Scope::WithSubdomains,
                Scope::SubdomainsOnly,
            ]),
        ),
        0..3,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn fst_verdict_equals_naive_parent_walk(
        rules in prop::collection::vec(rule_strategy(CATS), 0..14),
        own_block in own_strategy(),
        own_allow in own_strategy(),
        enabled in 0u64..8,
        query in name_strategy(),
        upper in any::<bool>(),
    ) {
        check_case(&rules, &own_block, &own_allow, enabled, &query, upper)?;
    }
}
