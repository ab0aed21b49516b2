//! The list parser and the own-list compiler on arbitrary text (RELIABILITY F2): every line
//! through `name::normalize` (whose output must normalise to itself), the whole text through
//! `parse_text` (auto-detected and as RPZ), the rules into an account's own sets (an `Err` is
//! fine, a panic is not), then decisions on those sets: a block list of block rules only
//! blocks every name it lists. Also the matcher on the raw bytes as a dotted and a wire name.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use qorgan_blocklists::parse::{parse_text, FormatHint};
use qorgan_blocklists::{
    build_own_sets, name, AccountId, AccountPolicy, Action, BlockMode, Catalog, CategoryMask,
    PolicySnapshot,
};

/// Most rules checked one by one per input (keeps an execution short).
const CHECKED_RULES: usize = 64;

fn snapshot() -> &'static PolicySnapshot {
    static SNAPSHOT: OnceLock<PolicySnapshot> = OnceLock::new();
    SNAPSHOT.get_or_init(|| PolicySnapshot::empty(Arc::new(Catalog::empty())))
}

fuzz_target!(|data: &[u8]| {
    let snapshot = snapshot();
    let Ok(text) = std::str::from_utf8(data) else {
        let policy = AccountPolicy::new(AccountId(1), CategoryMask::NONE, BlockMode::Nxdomain);
        let _ = snapshot.decide_dotted(&policy, data);
        let _ = snapshot.decide_wire(&policy, data);
        return;
    };
    for line in text.lines() {
        if let Ok(n) = name::normalize(line) {
            assert_eq!(
                name::normalize(&n).as_deref(),
                Ok(n.as_str()),
                "a normalised name normalises to itself ({line:?})"
            );
        }
    }
    let _ = parse_text(text, "fuzz.rpz", FormatHint::Rpz);
    let parsed = parse_text(text, "fuzz", FormatHint::Auto);
    let Ok((own_block, own_allow)) = build_own_sets((&parsed.rules, &parsed.patterns), (&[], &[]))
    else {
        return;
    };
    let mut policy = AccountPolicy::new(AccountId(1), CategoryMask::NONE, BlockMode::Nxdomain);
    policy.own_block = own_block;
    policy.own_allow = own_allow;
    let _ = snapshot.decide_dotted(&policy, data);
    let _ = snapshot.decide_wire(&policy, data);
    let blocks_only = parsed.rules.iter().all(|r| r.action == Action::Block)
        && parsed.patterns.iter().all(|p| p.action == Action::Block);
    for rule in parsed.rules.iter().take(CHECKED_RULES) {
        let itself = snapshot.decide_dotted(&policy, rule.name.as_bytes());
        let below = format!("x.{}", rule.name);
        let sub = snapshot.decide_dotted(&policy, below.as_bytes());
        if !blocks_only {
            continue;
        }
        if rule.scope.covers_self() {
            assert!(itself.is_blocked(), "{rule:?} blocks its own name");
        }
        if rule.scope.covers_subdomains() && below.len() <= 253 {
            assert!(sub.is_blocked(), "{rule:?} blocks {below}");
        }
    }
});
