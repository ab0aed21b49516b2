//! Qorgan's domain lists: names, list parsers, the fst compiler and matcher, and the policy
//! types that the control plane builds and the resolver reads.
//!
//! Pure and synchronous: no sockets, no async runtime, no I/O beyond the list files it is
//! given and the compiled cache file it writes and maps.
//!
//! # Overview of types
//!
//! - [`name`]: normalising list entries ([`name::normalize`]) and the reversed-label key.
//! - [`parse`]: one parser for every supported list format, auto-detected per line
//!   ([`parse::parse_text`], [`parse::ParsedList`], [`Rejected`]).
//! - [`Rule`], [`PatternRule`], [`Scope`], [`Action`]: what a line means.
//! - [`Catalog`]: every category list compiled into ONE `fst` (keys: reversed names; values:
//!   an index into a small table of per-category bits), built by [`compile_dir`] or mapped
//!   from the on-disk cache by [`load_or_compile`]; [`CompileReport`] says what was read.
//! - [`DomainSet`]: a small compiled set for an account's own block or allow list.
//! - [`AccountPolicy`], [`AccountCounters`], [`CategoryMask`], [`BlockMode`], [`AccountId`]:
//!   one account's filter.
//! - [`ClientMap`]: longest-prefix match from a source address to an account.
//! - [`wire`]: the versioned, checksummed snapshot format resolver nodes pull
//!   ([`SnapshotWire`], [`AccountWire`], [`wire::encode`], [`wire::decode`]); catalogs travel
//!   as their cache-file bytes ([`Catalog::to_bytes`], [`store_catalog`], [`load_cached_catalog`]).
//! - [`TopK`]: a fixed-memory Space-Saving sketch for the top blocked domains.
//! - [`PolicySnapshot`]: what the resolver holds; [`PolicySnapshot::decide_dotted`] and
//!   [`PolicySnapshot::decide_labels_rev`] return a [`Verdict`] with its [`MatchSource`].
//!
//! # Rule scopes
//!
//! `||x^`, plain-domain lines **and hosts-file lines** cover `x` and every subdomain of `x`.
//! Hosts files cannot express "and subdomains", which is the only reason they list `a.x`,
//! `b.x` one by one; a DNS filter's users expect a listed tracker to be blocked under every
//! sub-name too. `|x^` and RPZ `x CNAME .` cover `x` alone; `||*.x^` and RPZ `*.x CNAME .`
//! only the subdomains of `x`. `localhost`-style entries on hosts lines are ignored.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use qorgan_blocklists::parse::{parse_text, FormatHint};
//! use qorgan_blocklists::*;
//!
//! let own = parse_text("||ads.example^\n|exact.example^\n", "own block list", FormatHint::Auto);
//! let (own_block, own_allow) = build_own_sets((&own.rules, &own.patterns), (&[], &[])).unwrap();
//! let mut policy = AccountPolicy::new(AccountId(1), CategoryMask::NONE, BlockMode::Nxdomain);
//! policy.own_block = own_block;
//! policy.own_allow = own_allow;
//! let snapshot = PolicySnapshot::empty(Arc::new(Catalog::empty()));
//! assert!(snapshot.decide_dotted(&policy, b"Cdn.Ads.Example.").is_blocked());
//! assert!(!snapshot.decide_dotted(&policy, b"sub.exact.example").is_blocked());
//! ```
//!
//! # The hot path
//!
//! A decision walks the reversed query name through the catalog's fst once, lower-casing on
//! the fly; each final node met at a label boundary is a listed parent (its "subdomains"
//! bits apply) or the name itself (its "itself" bits apply). The cost is O(length of the
//! name), whatever the number of lists or categories, with no allocation and no lock.
//! Wildcard and regex rules run in one bounded multi-pattern DFA, only when some exist.
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod catalog;
mod compile;
mod error;
mod matcher;
pub mod name;
pub mod parse;
mod policy;
mod rule;
#[cfg(test)]
mod tests;
pub mod topk;
pub mod wire;

pub use catalog::{
    Catalog, CatalogPattern, CategoryInfo, FileStats, MAX_CATEGORIES, MAX_REJECTED_SAMPLES,
};
pub use compile::{
    compile_dir, compile_lists, input_hash, load_cached_catalog, load_or_compile, store_catalog,
    CacheOutcome, CompileReport, ListInput,
};
pub use error::BlocklistError;
pub use matcher::{DomainSet, RuleRef, MAX_PATTERNS, MAX_PATTERN_DFA_BYTES};
pub use parse::{RejectReason, Rejected};
pub use policy::{
    build_own_sets, AccountCounters, AccountId, AccountPolicy, BlockMode, CategoryMask, ClientMap,
    ClientPolicy, ListRef, MatchSource, PolicySnapshot, Verdict,
};
pub use rule::{Action, PatternRule, Rule, Scope};
pub use topk::TopK;
pub use wire::{AccountWire, SnapshotWire};
