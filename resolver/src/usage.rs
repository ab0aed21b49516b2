//! Per-account usage leaving the resolver: counter deltas and samples of blocked names.
//!
//! The query path only increments the atomics of the account's
//! [`qorgan_blocklists::AccountCounters`] and, for a blocked name, pushes one fixed-size
//! [`BlockedSample`] into a bounded lock-free queue ([`crossbeam_queue::ArrayQueue`], memory
//! reserved once; a full queue drops the sample and counts it). Every few seconds a drain
//! ([`crate::SnapshotStore::take_usage`]) turns both into a [`UsageReport`]: what each account
//! did since the previous drain, and the blocked names seen. The control plane adds reports to
//! its hourly buckets and its per-day top-K sketches; a resolver node sends them to the control
//! plane and keeps a report that could not be delivered to merge into the next one, so nothing
//! is lost while the control plane is away.

use std::collections::BTreeMap;

use qorgan_blocklists::name::MAX_NAME_LEN;
use qorgan_blocklists::AccountId;
use serde::{Deserialize, Serialize};

/// How many blocked-name samples wait between two drains at most (≈ 2.1 MB reserved).
pub const SAMPLE_QUEUE: usize = 8192;

/// One blocked query's account and lower-case dotted name, inline (no allocation).
#[derive(Clone, Copy)]
pub struct BlockedSample {
    /// The account the query was counted on.
    pub account: AccountId,
    len: u8,
    name: [u8; MAX_NAME_LEN],
}

impl std::fmt::Debug for BlockedSample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockedSample")
            .field("account", &self.account)
            .field("name", &String::from_utf8_lossy(self.name()))
            .finish()
    }
}

impl BlockedSample {
    /// A sample from the query name's labels, last label first (as the matcher walks them);
    /// lower-cased, dotted. A name too long to be valid is cut (it cannot come from a parsed
    /// query).
    #[inline]
    pub fn from_labels_rev<'a, I>(account: AccountId, labels: I) -> Self
    where
        I: Iterator<Item = &'a [u8]>,
    {
        let mut name = [0u8; MAX_NAME_LEN];
        // Written right to left: the last label first ends up at the end.
        let mut pos = MAX_NAME_LEN;
        for (i, label) in labels.enumerate() {
            let need = label.len() + usize::from(i > 0);
            if need > pos {
                break;
            }
            if i > 0 {
                pos -= 1;
                name[pos] = b'.';
            }
            let start = pos - label.len();
            for (dst, &b) in name[start..pos].iter_mut().zip(label) {
                *dst = b.to_ascii_lowercase();
            }
            pos = start;
        }
        let len = MAX_NAME_LEN - pos;
        name.copy_within(pos.., 0);
        Self {
            account,
            len: u8::try_from(len).unwrap_or(u8::MAX),
            name,
        }
    }

    /// The dotted, lower-case name.
    pub fn name(&self) -> &[u8] {
        &self.name[..usize::from(self.len)]
    }
}

/// What one account did between two drains.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountUsage {
    /// Queries counted.
    pub queries: u64,
    /// Of those, blocked.
    pub blocked: u64,
    /// Blocked by the account's own block list.
    pub blocked_own: u64,
    /// Blocked per category name (categories with no blocks are absent).
    pub by_category: BTreeMap<String, u64>,
    /// Blocked names seen, with how many samples each (a sample of the blocked queries: when
    /// the queue overflows between drains, some are not seen).
    pub blocked_names: BTreeMap<String, u64>,
}

impl AccountUsage {
    /// True when nothing happened.
    pub fn is_empty(&self) -> bool {
        self.queries == 0 && self.blocked == 0 && self.blocked_names.is_empty()
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Self) {
        self.queries += other.queries;
        self.blocked += other.blocked;
        self.blocked_own += other.blocked_own;
        for (k, v) in &other.by_category {
            *self.by_category.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.blocked_names {
            *self.blocked_names.entry(k.clone()).or_default() += v;
        }
    }
}

/// Usage of every account since the previous drain (accounts with nothing to say are absent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    /// Unix seconds of the drain that produced it (the hour bucket it lands in).
    pub at: i64,
    /// Per account id; [`crate::DEFAULT_POLICY_ID`] is never included (it is nobody's).
    pub accounts: BTreeMap<u64, AccountUsage>,
    /// Samples dropped because the queue was full.
    pub samples_dropped: u64,
}

impl UsageReport {
    /// True when no account did anything.
    pub fn is_empty(&self) -> bool {
        self.accounts.values().all(AccountUsage::is_empty)
    }

    /// Adds `other` (a later report) into `self`; the time becomes the later one.
    pub fn merge(&mut self, other: &Self) {
        self.at = self.at.max(other.at);
        self.samples_dropped += other.samples_dropped;
        for (id, u) in &other.accounts {
            self.accounts.entry(*id).or_default().merge(u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_is_the_dotted_lower_case_name() {
        let labels: [&[u8]; 3] = [b"COM", b"Example", b"ads"];
        let s = BlockedSample::from_labels_rev(AccountId(3), labels.into_iter());
        assert_eq!(s.name(), b"ads.example.com");
        assert_eq!(s.account, AccountId(3));
    }

    #[test]
    fn sample_of_the_root_is_empty() {
        let s = BlockedSample::from_labels_rev(AccountId(1), std::iter::empty());
        assert_eq!(s.name(), b"");
    }

    #[test]
    fn reports_merge_by_adding_every_count() {
        let mut a = UsageReport::default();
        let mut u = AccountUsage {
            queries: 2,
            blocked: 1,
            ..Default::default()
        };
        u.by_category.insert("ads".into(), 1);
        u.blocked_names.insert("x.example".into(), 1);
        a.accounts.insert(7, u.clone());
        let b = UsageReport {
            at: 10,
            accounts: [(7, u)].into_iter().collect(),
            samples_dropped: 3,
        };
        a.merge(&b);
        let m = &a.accounts[&7];
        assert_eq!(
            (m.queries, m.blocked, a.at, a.samples_dropped),
            (4, 2, 10, 3)
        );
        assert_eq!(m.by_category["ads"], 2);
        assert_eq!(m.blocked_names["x.example"], 2);
    }
}
