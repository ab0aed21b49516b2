//! The DNS filter's records in the store: each account's settings and own lists, the audit log
//! of their changes, hourly usage buckets and per-day top blocked domains, and the policy
//! generation that resolver nodes follow.
//!
//! Keys are big-endian (`account id`, then an id, hour or day), so an account's records scan in
//! order. A change of settings or of a list is one transaction with its audit entry: there is
//! never a change without its record of who made it, nor a record of a change that did not
//! happen. Usage reports apply in one transaction per report, together with the reporting
//! node's sequence number, so a report retried after a lost answer is counted once.

use std::collections::BTreeMap;
use std::net::IpAddr;

use qorgan_blocklists::TopK;
use qorgan_config::BlockModeName;
use qorgan_resolver::usage::UsageReport;
use serde::{Deserialize, Serialize};
use sled::Transactional;

use crate::error::ControlError;
use crate::store::{be, dec, enc, from_tx, id_of, pair, tx_enc, tx_get, Id};

/// Capacity of a day's top-blocked sketch (≈ 290 bytes a counter while it is being updated;
/// stored as its entries only).
pub const TOP_CAPACITY: usize = 64;

/// One account's filter settings (CONTRACT §4 `PUT /dns-filter`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterSettings {
    /// The filter switch: off resolves everything (queries are still counted).
    pub enabled: bool,
    /// Enabled categories (folder names of the lists catalog).
    pub categories: Vec<String>,
    /// How blocked names are answered.
    pub block_mode: BlockModeName,
    /// Block page addresses for `custom_ip`: at most one IPv4 and one IPv6.
    pub custom_ip: Vec<IpAddr>,
    /// Unix seconds of the last change; `None` while the account has the defaults.
    pub updated_at: Option<i64>,
    /// Queries per second the account's networks may send (the operator's tariff; the
    /// customer cannot change it); 0 = no limit. Missing in settings stored before it existed.
    #[serde(default)]
    pub qps_limit: u32,
}

impl FilterSettings {
    /// What an account has before its first change: filtering on, the default policy's
    /// categories and block mode.
    pub fn defaults(config: &qorgan_config::DefaultPolicyConfig) -> Self {
        Self {
            enabled: true,
            categories: config.categories.clone(),
            block_mode: config.block_mode,
            custom_ip: config.custom_ip.clone(),
            updated_at: None,
            qps_limit: 0,
        }
    }
}

/// An account's own lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListKind {
    /// Names the account blocks on top of its categories.
    Blocklist,
    /// Names the account always lets through (wins over every block).
    Allowlist,
}

impl ListKind {
    fn key_byte(self) -> u8 {
        match self {
            Self::Blocklist => 0,
            Self::Allowlist => 1,
        }
    }

    /// The name used in paths and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Blocklist => "blocklist",
            Self::Allowlist => "allowlist",
        }
    }
}

/// An own list as stored: the text the customer gave (so it can be shown and edited as
/// written) and how many rules it compiled to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredList {
    /// The text, as uploaded.
    pub text: String,
    /// Rules kept (domain and pattern rules).
    pub rules: u64,
    /// Unix seconds of the upload.
    pub updated_at: i64,
}

/// Who changed the filter, and what (the audit log, seed §5.2.5 with sub-users).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Id (increasing).
    pub id: Id,
    /// Unix seconds.
    pub at: i64,
    /// The user's id.
    pub user_id: Id,
    /// The user as shown: the account number for the owner, the email for a sub-user.
    pub user: String,
    /// `settings`, `blocklist` or `allowlist`.
    pub action: String,
    /// What changed, in words.
    pub summary: String,
}

/// One hour of an account's DNS usage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageBucket {
    /// Queries.
    pub queries: u64,
    /// Blocked queries.
    pub blocked: u64,
    /// Blocked by the own block list.
    pub blocked_own: u64,
    /// Blocked per category.
    pub by_category: BTreeMap<String, u64>,
}

/// A day's top-blocked sketch as stored: its entries, floor and total ([`TopK::restore`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct TopState {
    floor: u64,
    total: u64,
    entries: Vec<(String, u64, u64)>,
}

impl TopState {
    fn sketch(&self) -> TopK {
        TopK::restore(
            TOP_CAPACITY,
            self.floor,
            self.total,
            self.entries.iter().map(|(k, c, e)| (k.as_bytes(), *c, *e)),
        )
    }

    fn of(sketch: &TopK) -> Self {
        Self {
            floor: sketch.floor(),
            total: sketch.total(),
            entries: sketch.top(TOP_CAPACITY),
        }
    }
}

/// The filter part of the store.
#[derive(Clone)]
pub struct Filters {
    db: sled::Db,
    settings: sled::Tree,
    lists: sled::Tree,
    audit: sled::Tree,
    usage: sled::Tree,
    top: sled::Tree,
    meta: sled::Tree,
}

const GENERATION_KEY: &[u8] = b"generation";

fn list_key(account: Id, kind: ListKind) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[..8].copy_from_slice(&be(account));
    k[8] = kind.key_byte();
    k
}

fn node_key(node: &str) -> Vec<u8> {
    let mut k = b"node-seq:".to_vec();
    k.extend_from_slice(node.as_bytes());
    k
}

fn u64_of(bytes: &[u8]) -> u64 {
    <[u8; 8]>::try_from(bytes).map_or(0, u64::from_be_bytes)
}

/// Unix seconds → the hour's start as a key part.
fn hour_of(secs: i64) -> u64 {
    u64::try_from(secs.div_euclid(3600)).unwrap_or(0)
}

impl Filters {
    /// Opens the filter trees of `db`.
    pub fn open(db: &sled::Db) -> Result<Self, ControlError> {
        Ok(Self {
            settings: db.open_tree("dns_settings")?,
            lists: db.open_tree("dns_lists")?,
            audit: db.open_tree("dns_audit")?,
            usage: db.open_tree("dns_usage")?,
            top: db.open_tree("dns_top")?,
            meta: db.open_tree("dns_meta")?,
            db: db.clone(),
        })
    }

    /// The account's settings, `None` while it has the defaults.
    pub fn settings(&self, account: Id) -> Result<Option<FilterSettings>, ControlError> {
        self.settings
            .get(be(account))?
            .map(|v| dec("dns_settings", &v))
            .transpose()
    }

    /// The account's own list (empty when never uploaded).
    pub fn list(&self, account: Id, kind: ListKind) -> Result<StoredList, ControlError> {
        Ok(self
            .lists
            .get(list_key(account, kind))?
            .map(|v| dec("dns_lists", &v))
            .transpose()?
            .unwrap_or_default())
    }

    /// Stores new settings with their audit entry, in one transaction.
    pub fn save_settings(
        &self,
        account: Id,
        settings: &FilterSettings,
        audit: AuditEntry,
    ) -> Result<(), ControlError> {
        let value = enc(settings)?;
        let key = pair(account, audit.id);
        let entry = enc(&audit)?;
        from_tx((&self.settings, &self.audit).transaction(|(s, a)| {
            s.insert(&be(account), value.clone())?;
            a.insert(&key, entry.clone())?;
            Ok(())
        }))?;
        self.db.flush()?;
        Ok(())
    }

    /// Stores an own list with its audit entry, in one transaction.
    pub fn save_list(
        &self,
        account: Id,
        kind: ListKind,
        list: &StoredList,
        audit: AuditEntry,
    ) -> Result<(), ControlError> {
        let value = enc(list)?;
        let key = pair(account, audit.id);
        let entry = enc(&audit)?;
        from_tx((&self.lists, &self.audit).transaction(|(l, a)| {
            l.insert(&list_key(account, kind), value.clone())?;
            a.insert(&key, entry.clone())?;
            Ok(())
        }))?;
        self.db.flush()?;
        Ok(())
    }

    /// A new audit entry id (increasing).
    pub fn next_audit_id(&self) -> Result<Id, ControlError> {
        Ok(self.db.generate_id()? + 1)
    }

    /// The account's audit log, newest first, at most `limit` entries.
    pub fn audit(&self, account: Id, limit: usize) -> Result<Vec<AuditEntry>, ControlError> {
        self.audit
            .scan_prefix(be(account))
            .rev()
            .take(limit)
            .map(|item| dec("dns_audit", &item?.1))
            .collect()
    }

    /// The policy generation: bumped (and persisted) for every change resolver nodes must see,
    /// so that it only ever grows, across restarts too.
    pub fn bump_generation(&self) -> Result<u64, ControlError> {
        let next = self
            .meta
            .update_and_fetch(GENERATION_KEY, |old| {
                let n = old.map_or(0, u64_of).saturating_add(1);
                Some(n.to_be_bytes().to_vec())
            })?
            .map_or(0, |v| u64_of(&v));
        Ok(next)
    }

    /// Adds a usage report to the hourly buckets (the hour of `report.at`) and the day's top
    /// blocked domains (`day` = days since the epoch in the customers' time zone). With
    /// `from = Some((node, seq))`, a report whose `seq` is not above the node's last applied
    /// one is skipped (`Ok(false)`): a retry of a report already counted. Durable on return.
    pub fn add_usage(
        &self,
        report: &UsageReport,
        day: i64,
        from: Option<(&str, u64)>,
    ) -> Result<bool, ControlError> {
        let hour = hour_of(report.at);
        let day = u64::try_from(day).unwrap_or(0);
        let applied = from_tx(
            (&self.usage, &self.top, &self.meta).transaction(|(u, t, m)| {
                if let Some((node, seq)) = from {
                    let last = m.get(node_key(node))?.map_or(0, |v| u64_of(&v));
                    if seq <= last {
                        return Ok(false);
                    }
                    m.insert(node_key(node), &seq.to_be_bytes())?;
                }
                for (&account, usage) in &report.accounts {
                    if usage.queries > 0 || usage.blocked > 0 {
                        let key = pair(account, hour);
                        let mut bucket: UsageBucket =
                            tx_get(u, "dns_usage", &key)?.unwrap_or_default();
                        bucket.queries += usage.queries;
                        bucket.blocked += usage.blocked;
                        bucket.blocked_own += usage.blocked_own;
                        for (c, n) in &usage.by_category {
                            *bucket.by_category.entry(c.clone()).or_default() += n;
                        }
                        u.insert(&key, tx_enc(&bucket)?)?;
                    }
                    if !usage.blocked_names.is_empty() {
                        let key = pair(account, day);
                        let state: TopState = tx_get(t, "dns_top", &key)?.unwrap_or_default();
                        let mut sketch = state.sketch();
                        for (name, n) in &usage.blocked_names {
                            sketch.offer_weighted(name.as_bytes(), *n);
                        }
                        t.insert(&key, tx_enc(&TopState::of(&sketch))?)?;
                    }
                }
                Ok(true)
            }),
        )?;
        if applied {
            self.db.flush()?;
        }
        Ok(applied)
    }

    /// The account's hourly buckets whose hour starts in `from..to` (unix seconds), in order.
    pub fn usage(
        &self,
        account: Id,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, UsageBucket)>, ControlError> {
        let (lo, hi) = (pair(account, hour_of(from)), pair(account, hour_of(to)));
        let mut out = Vec::new();
        for item in self.usage.range(lo..hi) {
            let (k, v) = item?;
            let hour = k.get(8..).and_then(id_of).unwrap_or(0);
            let start = i64::try_from(hour).unwrap_or(0) * 3600;
            out.push((start, dec("dns_usage", &v)?));
        }
        Ok(out)
    }

    /// The account's most blocked names over the days `from..=to` (days since the epoch),
    /// highest first: `(name, count)`, counts being upper bounds within the sketch's error.
    pub fn top_blocked(
        &self,
        account: Id,
        from: i64,
        to: i64,
        n: usize,
    ) -> Result<Vec<(String, u64)>, ControlError> {
        let lo = pair(account, u64::try_from(from).unwrap_or(0));
        let hi = pair(account, u64::try_from(to).unwrap_or(0).saturating_add(1));
        let mut acc = TopK::new(TOP_CAPACITY);
        for item in self.top.range(lo..hi) {
            let state: TopState = dec("dns_top", &item?.1)?;
            acc.merge(&state.sketch());
        }
        Ok(acc
            .top(n)
            .into_iter()
            .map(|(name, count, _)| (name, count))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qorgan_resolver::usage::AccountUsage;

    fn filters() -> Filters {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .expect("temporary db");
        Filters::open(&db).expect("open")
    }

    fn report(at: i64, account: u64, queries: u64, names: &[(&str, u64)]) -> UsageReport {
        let mut u = AccountUsage {
            queries,
            blocked: names.iter().map(|(_, n)| n).sum(),
            ..Default::default()
        };
        for (name, n) in names {
            u.blocked_names.insert((*name).to_owned(), *n);
            *u.by_category.entry("ads".to_owned()).or_default() += n;
        }
        UsageReport {
            at,
            accounts: [(account, u)].into_iter().collect(),
            samples_dropped: 0,
        }
    }

    #[test]
    fn reports_add_up_in_their_hour_and_day() {
        let f = filters();
        f.add_usage(&report(7200, 1, 5, &[("a.example", 2)]), 0, None)
            .expect("add");
        f.add_usage(
            &report(7300, 1, 3, &[("a.example", 1), ("b.example", 1)]),
            0,
            None,
        )
        .expect("add");
        f.add_usage(&report(11_000, 1, 1, &[]), 0, None)
            .expect("add");
        f.add_usage(&report(7200, 2, 100, &[("c.example", 50)]), 0, None)
            .expect("other account");
        let buckets = f.usage(1, 0, 86_400).expect("usage");
        assert_eq!(buckets.len(), 2);
        assert_eq!(buckets[0].0, 7200);
        assert_eq!((buckets[0].1.queries, buckets[0].1.blocked), (8, 4));
        assert_eq!(buckets[0].1.by_category["ads"], 4);
        assert_eq!(buckets[1].1.queries, 1);
        let top = f.top_blocked(1, 0, 0, 10).expect("top");
        assert_eq!(top[0], ("a.example".to_owned(), 3));
        assert_eq!(top.len(), 2, "other accounts' names stay out: {top:?}");
    }

    #[test]
    fn a_node_report_retried_after_a_lost_answer_counts_once() {
        let f = filters();
        let r = report(3600, 9, 4, &[]);
        assert!(f.add_usage(&r, 0, Some(("node-a", 1))).expect("first"));
        assert!(!f.add_usage(&r, 0, Some(("node-a", 1))).expect("retry"));
        assert!(f.add_usage(&r, 0, Some(("node-b", 1))).expect("other node"));
        assert_eq!(f.usage(9, 0, 7200).expect("usage")[0].1.queries, 8);
    }

    #[test]
    fn generation_only_grows() {
        let f = filters();
        let a = f.bump_generation().expect("bump");
        let b = f.bump_generation().expect("bump");
        assert!(b > a && a >= 1);
    }
}
