//! The policy snapshot store: the one place the query path reads policy from.
//!
//! Readers call [`SnapshotStore::load`] (an `arc_swap` guard: no lock, no allocation).
//! Writers (the lists watcher, the policy file watcher, the control plane) change one part
//! (the catalog, or the accounts) and the store rebuilds a whole [`PolicySnapshot`] from the
//! current parts and swaps it in atomically: a query sees the old snapshot or the new one,
//! never a mix, and never waits.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use arc_swap::{ArcSwap, Guard};
use crossbeam_queue::ArrayQueue;
use ipnet::IpNet;
use qorgan_blocklists::{
    AccountCounters, AccountId, AccountPolicy, BlockMode, Catalog, ClientMap, DomainSet,
    PolicySnapshot,
};

use crate::metrics::DnsMetrics;
use crate::usage::{AccountUsage, BlockedSample, UsageReport, SAMPLE_QUEUE};
use crate::ResolverError;

/// The id the `[default_policy]` carries in its [`AccountPolicy`] (control-plane account ids
/// start at 1).
pub const DEFAULT_POLICY_ID: AccountId = AccountId(0);

/// One account as the resolver needs it, with its categories by name: category indices
/// change when categories are added or removed, so the store resolves names against each
/// catalog it publishes.
#[derive(Debug, Clone)]
pub struct AccountSpec {
    /// The account.
    pub id: AccountId,
    /// The filter switch: `false` resolves everything (queries are still counted).
    pub enabled: bool,
    /// Source networks mapped to the account.
    pub networks: Vec<IpNet>,
    /// Enabled categories (folder names of `lists.dir`). Names the catalog does not have are
    /// skipped with a warning.
    pub categories: Vec<String>,
    /// How blocked names are answered.
    pub block_mode: BlockMode,
    /// The account's own block list, compiled ([`qorgan_blocklists::build_own_sets`]).
    pub own_block: DomainSet,
    /// The account's own allow list: wins over every block.
    pub own_allow: DomainSet,
    /// Queries per second the account's networks may send; 0 = no limit
    /// ([`qorgan_blocklists::AccountPolicy::qps_limit`]).
    pub qps_limit: u32,
}

impl AccountSpec {
    /// An enabled account with the given networks and categories, no own lists.
    pub fn new(
        id: AccountId,
        networks: Vec<IpNet>,
        categories: Vec<String>,
        block_mode: BlockMode,
    ) -> Self {
        Self {
            id,
            enabled: true,
            networks,
            categories,
            block_mode,
            own_block: DomainSet::default(),
            own_allow: DomainSet::default(),
            qps_limit: 0,
        }
    }

    /// The `[default_policy]` section as a spec (id [`DEFAULT_POLICY_ID`]).
    pub fn from_default_policy(config: &qorgan_config::DefaultPolicyConfig) -> Self {
        let block_mode = block_mode_from_config(config.block_mode, &config.custom_ip);
        Self::new(
            DEFAULT_POLICY_ID,
            config.networks.clone(),
            config.categories.clone(),
            block_mode,
        )
    }
}

impl From<qorgan_blocklists::AccountWire> for AccountSpec {
    fn from(w: qorgan_blocklists::AccountWire) -> Self {
        Self {
            id: w.id,
            enabled: w.enabled,
            networks: w.networks,
            categories: w.categories,
            block_mode: w.block_mode,
            own_block: w.own_block,
            own_allow: w.own_allow,
            qps_limit: w.qps_limit,
        }
    }
}

/// Maps the config's block mode name and block page addresses to a [`BlockMode`].
pub fn block_mode_from_config(
    mode: qorgan_config::BlockModeName,
    custom_ip: &[IpAddr],
) -> BlockMode {
    use qorgan_config::BlockModeName as N;
    match mode {
        N::Nxdomain => BlockMode::Nxdomain,
        N::NullIp => BlockMode::NullIp,
        N::Refused => BlockMode::Refused,
        N::CustomIp => BlockMode::CustomIp {
            v4: custom_ip.iter().find_map(|ip| match ip {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            }),
            v6: custom_ip.iter().find_map(|ip| match ip {
                IpAddr::V6(v6) => Some(*v6),
                IpAddr::V4(_) => None,
            }),
        },
    }
}

/// Shared handle on the current [`PolicySnapshot`]; clones are cheap and see the same store.
#[derive(Clone)]
pub struct SnapshotStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotStore")
            .field("generation", &self.load().generation)
            .finish_non_exhaustive()
    }
}

struct Inner {
    current: ArcSwap<PolicySnapshot>,
    /// Writers only; the query path never touches it. A std Mutex: nothing awaits while holding it.
    parts: Mutex<Parts>,
    metrics: OnceLock<Arc<DnsMetrics>>,
    /// Blocked names waiting for the next [`SnapshotStore::take_usage`]; bounded, lock-free.
    samples: ArrayQueue<BlockedSample>,
    samples_dropped: AtomicU64,
    /// Counts catalog swaps, for holders that republish when the lists change (the control
    /// plane's snapshots name the catalog's hash; a node must hear of a new one).
    catalog_swaps: tokio::sync::watch::Sender<u64>,
}

struct Parts {
    generation: u64,
    catalog: Arc<Catalog>,
    default_spec: AccountSpec,
    accounts: BTreeMap<AccountId, AccountSpec>,
    /// Policies built against the current catalog; cleared when the catalog changes.
    built: HashMap<AccountId, Arc<AccountPolicy>>,
    /// The default policy built against the current catalog (kept, like `built`, so that its
    /// revision and so its cached answers survive other accounts' edits).
    default_built: Option<Arc<AccountPolicy>>,
    /// Counters outlive rebuilds: an edit or a list reload must not reset an account's counts.
    counters: HashMap<AccountId, Arc<AccountCounters>>,
    /// Category names published to the list-size gauge, to remove the ones that disappear.
    published_categories: Vec<String>,
    /// Source address → slot in `order`; rebuilt only when networks change (an edit of an
    /// account's filter reuses it, which keeps an edit's cost O(accounts) in cheap clones
    /// instead of a rebuild of 100,000 networks' hash tables).
    clients: Arc<ClientMap<u32>>,
    /// The account of each slot of `clients`.
    order: Vec<AccountId>,
    /// `accounts`' networks changed since `clients` was built.
    clients_dirty: bool,
}

impl SnapshotStore {
    /// A store with no accounts, the `[default_policy]` of the config and an empty catalog
    /// (every name resolves until a catalog is set).
    pub fn new(default_policy: &qorgan_config::DefaultPolicyConfig) -> Self {
        let catalog = Arc::new(Catalog::empty());
        let mut parts = Parts {
            generation: 0,
            catalog: catalog.clone(),
            default_spec: AccountSpec::from_default_policy(default_policy),
            accounts: BTreeMap::new(),
            built: HashMap::new(),
            default_built: None,
            counters: HashMap::new(),
            published_categories: Vec::new(),
            clients: Arc::new(ClientMap::new()),
            order: Vec::new(),
            clients_dirty: false,
        };
        let first = match parts.build() {
            Ok(snapshot) => snapshot,
            Err(e) => {
                // Only overlapping default networks can fail here; the config validated them.
                tracing::error!(error = %e, "default_policy.networks overlap; the default policy applies to no network");
                parts.default_spec.networks.clear();
                PolicySnapshot::empty(catalog)
            }
        };
        Self {
            inner: Arc::new(Inner {
                current: ArcSwap::from_pointee(first),
                parts: Mutex::new(parts),
                metrics: OnceLock::new(),
                samples: ArrayQueue::new(SAMPLE_QUEUE),
                samples_dropped: AtomicU64::new(0),
                catalog_swaps: tokio::sync::watch::channel(0).0,
            }),
        }
    }

    /// The current snapshot, for the query path: no lock, no allocation.
    #[inline]
    pub fn load(&self) -> Guard<Arc<PolicySnapshot>> {
        self.inner.current.load()
    }

    /// The current snapshot as an owned `Arc` (for holders that keep it across awaits).
    pub fn load_full(&self) -> Arc<PolicySnapshot> {
        self.inner.current.load_full()
    }

    /// The generation of the current snapshot (bumped by every publish).
    pub fn generation(&self) -> u64 {
        self.load().generation
    }

    /// The current lists catalog (its categories and sizes, for the cabinet).
    pub fn catalog(&self) -> Arc<Catalog> {
        self.load().catalog.clone()
    }

    /// Queues a blocked query's name for the account's top blocked domains. Lock-free, no
    /// allocation; a full queue drops the sample (counted in [`UsageReport::samples_dropped`]).
    /// The default policy is nobody's: its samples are not kept.
    #[inline]
    pub fn sample_blocked(&self, sample: BlockedSample) {
        if sample.account == DEFAULT_POLICY_ID {
            return;
        }
        if self.inner.samples.push(sample).is_err() {
            self.inner.samples_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What every account did since the previous call: counter deltas and the blocked names
    /// sampled, as of `now` (unix seconds). The default policy is not reported. Counts of an
    /// account removed between two calls are lost with it.
    pub fn take_usage(&self, now: i64) -> UsageReport {
        let mut report = UsageReport {
            at: now,
            accounts: Default::default(),
            samples_dropped: self.inner.samples_dropped.swap(0, Ordering::Relaxed),
        };
        {
            let parts = self.parts();
            let names: Vec<String> = parts
                .catalog
                .categories()
                .iter()
                .map(|c| c.name.clone())
                .collect();
            // Drained by swapping each counter to zero: what is read is what happened since
            // the previous drain, and a query counted meanwhile lands in the next report.
            let take = |n: &AtomicU64| n.swap(0, Ordering::Relaxed);
            for (id, c) in parts
                .counters
                .iter()
                .filter(|(id, _)| **id != DEFAULT_POLICY_ID)
            {
                let mut u = AccountUsage {
                    queries: take(&c.queries),
                    blocked: take(&c.blocked),
                    blocked_own: take(&c.blocked_own),
                    ..Default::default()
                };
                for (i, n) in c.blocked_by_category.iter().enumerate() {
                    let delta = take(n);
                    if delta > 0 {
                        let name = names.get(i).cloned().unwrap_or_else(|| format!("#{i}"));
                        *u.by_category.entry(name).or_default() += delta;
                    }
                }
                if !u.is_empty() {
                    report.accounts.insert(id.0, u);
                }
            }
        }
        while let Some(sample) = self.inner.samples.pop() {
            let name = String::from_utf8_lossy(sample.name()).into_owned();
            *report
                .accounts
                .entry(sample.account.0)
                .or_default()
                .blocked_names
                .entry(name)
                .or_default() += 1;
        }
        report
    }

    /// Swaps in a new lists catalog; every account's categories are resolved against it.
    pub fn set_catalog(&self, catalog: Arc<Catalog>) {
        let mut parts = self.parts();
        parts.catalog = catalog;
        parts.built.clear();
        parts.default_built = None;
        // Accounts were valid with the previous catalog and networks do not depend on it.
        if let Err(e) = self.publish(&mut parts) {
            tracing::error!(error = %e, "cannot publish the new catalog");
        }
        drop(parts);
        self.inner.catalog_swaps.send_modify(|n| *n += 1);
    }

    /// A receiver that sees every later [`SnapshotStore::set_catalog`] (a count of swaps).
    pub fn catalog_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.catalog_swaps.subscribe()
    }

    /// Replaces the whole accounts table. Fails, keeping the previous table, when two accounts'
    /// networks overlap (the error names both).
    pub fn set_accounts(&self, accounts: Vec<AccountSpec>) -> Result<(), ResolverError> {
        let mut parts = self.parts();
        let old = std::mem::replace(
            &mut parts.accounts,
            accounts.into_iter().map(|a| (a.id, a)).collect(),
        );
        parts.clients_dirty = true;
        let old_built = std::mem::take(&mut parts.built);
        match self.publish(&mut parts) {
            Ok(()) => {
                let Parts {
                    accounts, counters, ..
                } = &mut *parts;
                counters.retain(|id, _| *id == DEFAULT_POLICY_ID || accounts.contains_key(id));
                Ok(())
            }
            Err(e) => {
                parts.accounts = old;
                parts.built = old_built;
                Err(e)
            }
        }
    }

    /// Adds or replaces one account (a customer's edit): only that account is rebuilt.
    pub fn upsert_account(&self, account: AccountSpec) -> Result<(), ResolverError> {
        let mut parts = self.parts();
        let id = account.id;
        let networks = account.networks.clone();
        let old = parts.accounts.insert(id, account);
        if old.as_ref().is_none_or(|o| o.networks != networks) {
            parts.clients_dirty = true;
        }
        let old_built = parts.built.remove(&id);
        match self.publish(&mut parts) {
            Ok(()) => Ok(()),
            Err(e) => {
                match old {
                    Some(a) => parts.accounts.insert(id, a),
                    None => parts.accounts.remove(&id),
                };
                if let Some(b) = old_built {
                    parts.built.insert(id, b);
                }
                Err(e)
            }
        }
    }

    /// Removes one account; its sources become unknown clients.
    pub fn remove_account(&self, id: AccountId) {
        let mut parts = self.parts();
        if parts.accounts.remove(&id).is_some() {
            parts.clients_dirty = true;
            parts.built.remove(&id);
            parts.counters.remove(&id);
            if let Err(e) = self.publish(&mut parts) {
                tracing::error!(error = %e, "cannot publish after removing an account");
            }
        }
    }

    /// An account's counters (they survive edits and list reloads); `None` for an unknown id.
    /// [`DEFAULT_POLICY_ID`] gives the default policy's.
    pub fn counters(&self, id: AccountId) -> Option<Arc<AccountCounters>> {
        self.parts().counters.get(&id).cloned()
    }

    /// Publishes generation and list sizes to `metrics` from now on (first call wins).
    pub(crate) fn attach_metrics(&self, metrics: Arc<DnsMetrics>) {
        let _ = self.inner.metrics.set(metrics);
        let mut parts = self.parts();
        self.report(&mut parts, self.load().generation);
    }

    fn parts(&self) -> MutexGuard<'_, Parts> {
        // A writer that panicked left the parts as they were before its change: still coherent.
        self.inner
            .parts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn publish(&self, parts: &mut Parts) -> Result<(), ResolverError> {
        let snapshot = parts.build()?;
        let generation = snapshot.generation;
        self.inner.current.store(Arc::new(snapshot));
        self.report(parts, generation);
        tracing::debug!(
            generation,
            accounts = parts.accounts.len(),
            "policy snapshot published"
        );
        Ok(())
    }

    fn report(&self, parts: &mut Parts, generation: u64) {
        let Some(metrics) = self.inner.metrics.get() else {
            return;
        };
        metrics.set_snapshot_generation(generation);
        let names: Vec<String> = parts
            .catalog
            .categories()
            .iter()
            .map(|c| c.name.clone())
            .collect();
        let gone: Vec<String> = parts
            .published_categories
            .iter()
            .filter(|n| !names.contains(n))
            .cloned()
            .collect();
        metrics.set_list_sizes(
            parts
                .catalog
                .categories()
                .iter()
                .map(|c| (c.name.as_str(), c.domains)),
            &gone,
        );
        parts.published_categories = names;
    }
}

impl Parts {
    /// Builds the next snapshot from the parts; changes nothing but the caches on failure.
    fn build(&mut self) -> Result<PolicySnapshot, ResolverError> {
        let default = match &self.default_built {
            Some(p) => p.clone(),
            None => {
                let p = policy_for(&self.catalog, &mut self.counters, &self.default_spec);
                self.default_built = Some(p.clone());
                p
            }
        };
        if self.clients_dirty {
            let order: Vec<AccountId> = self.accounts.keys().copied().collect();
            let entries = self.accounts.values().enumerate().flat_map(|(slot, spec)| {
                let slot = u32::try_from(slot).unwrap_or(u32::MAX);
                spec.networks.iter().map(move |net| (*net, slot))
            });
            let clients = ClientMap::build(entries, |slot: &u32| {
                order
                    .get(usize::try_from(*slot).unwrap_or(usize::MAX))
                    .copied()
                    .unwrap_or(AccountId(0))
            })
            .map_err(|e| ResolverError::Policy {
                location: "accounts".to_owned(),
                message: e.to_string(),
            })?;
            self.clients = Arc::new(clients);
            self.order = order;
            self.clients_dirty = false;
        }
        let mut policies = Vec::with_capacity(self.order.len());
        for id in &self.order {
            let policy = match (self.built.get(id), self.accounts.get(id)) {
                (Some(p), _) => p.clone(),
                (None, Some(spec)) => {
                    let p = policy_for(&self.catalog, &mut self.counters, spec);
                    self.built.insert(spec.id, p.clone());
                    p
                }
                // Not reachable: `order` is rebuilt whenever accounts come or go.
                (None, None) => default.clone(),
            };
            policies.push(policy);
        }
        let default_networks =
            ClientMap::build(self.default_spec.networks.iter().map(|n| (*n, ())), |()| {
                0u8
            })
            .map_err(|e| ResolverError::Policy {
                location: "default_policy.networks".to_owned(),
                message: e.to_string(),
            })?;
        self.generation += 1;
        Ok(PolicySnapshot {
            generation: self.generation,
            catalog: self.catalog.clone(),
            clients: self.clients.clone(),
            policies,
            default_policy: Some(default),
            default_networks,
        })
    }
}

/// Numbers policy builds ([`AccountPolicy::revision`]); 0 is never handed out.
static NEXT_REVISION: AtomicU64 = AtomicU64::new(1);

/// Resolves a spec against a catalog, reusing the account's counters.
fn policy_for(
    catalog: &Catalog,
    counters: &mut HashMap<AccountId, Arc<AccountCounters>>,
    spec: &AccountSpec,
) -> Arc<AccountPolicy> {
    let names = spec.categories.iter().map(String::as_str);
    let categories = match catalog.category_mask(names) {
        Ok(mask) => mask,
        Err(unknown) => {
            if !catalog.categories().is_empty() {
                tracing::warn!(account = %spec.id, ?unknown, "categories not in the lists catalog are ignored");
            }
            let known = spec
                .categories
                .iter()
                .map(String::as_str)
                .filter(|n| !unknown.iter().any(|u| u == n));
            catalog.category_mask(known).unwrap_or_default()
        }
    };
    let counters = counters.entry(spec.id).or_default().clone();
    Arc::new(AccountPolicy {
        id: spec.id,
        enabled: spec.enabled,
        categories,
        block_mode: spec.block_mode,
        own_block: spec.own_block.clone(),
        own_allow: spec.own_allow.clone(),
        counters,
        revision: NEXT_REVISION.fetch_add(1, Ordering::Relaxed),
        qps_limit: spec.qps_limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    use qorgan_blocklists::{ClientPolicy, Verdict};

    fn catalog(lists: &[(&str, &str)]) -> Arc<Catalog> {
        let dir = tempfile::tempdir().expect("tempdir");
        for (category, text) in lists {
            let folder = dir.path().join(category);
            std::fs::create_dir_all(&folder).expect("mkdir");
            std::fs::write(folder.join("list.txt"), text).expect("write");
        }
        Arc::new(
            qorgan_blocklists::compile_dir(dir.path())
                .expect("compile")
                .0,
        )
    }

    fn no_default() -> qorgan_config::DefaultPolicyConfig {
        qorgan_config::DefaultPolicyConfig {
            networks: Vec::new(),
            ..Default::default()
        }
    }

    fn account(id: u64, net: &str, categories: &[&str]) -> AccountSpec {
        AccountSpec::new(
            AccountId(id),
            vec![net.parse().expect("net")],
            categories.iter().map(|c| (*c).to_owned()).collect(),
            BlockMode::Nxdomain,
        )
    }

    fn verdict(store: &SnapshotStore, ip: &str, name: &str) -> Verdict {
        let snap = store.load();
        let ClientPolicy::Account(policy) = snap.client_policy(ip.parse().expect("ip")) else {
            panic!("no account for {ip}");
        };
        snap.decide_dotted(policy, name.as_bytes())
    }

    #[test]
    fn categories_are_resolved_by_name_against_each_new_catalog() {
        let store = SnapshotStore::new(&no_default());
        store
            .set_accounts(vec![account(1, "10.0.0.0/8", &["malware"])])
            .expect("accounts");
        store.set_catalog(catalog(&[
            ("ads", "ads.example\n"),
            ("malware", "evil.example\n"),
        ]));
        assert!(verdict(&store, "10.1.2.3", "evil.example").is_blocked());
        assert!(!verdict(&store, "10.1.2.3", "ads.example").is_blocked());
        // A new category sorts before "malware" and shifts its index: the name still decides.
        store.set_catalog(catalog(&[
            ("ads", "ads.example\n"),
            ("aaa", "x.example\n"),
            ("malware", "evil.example\n"),
        ]));
        assert!(verdict(&store, "10.1.2.3", "evil.example").is_blocked());
        assert!(!verdict(&store, "10.1.2.3", "x.example").is_blocked());
    }

    #[test]
    fn counters_survive_catalog_swaps_and_edits_but_not_removal() {
        let store = SnapshotStore::new(&no_default());
        store
            .set_accounts(vec![account(1, "10.0.0.0/8", &[])])
            .expect("accounts");
        let counters = store.counters(AccountId(1)).expect("counters");
        counters.queries.fetch_add(5, Ordering::Relaxed);
        store.set_catalog(catalog(&[("ads", "ads.example\n")]));
        store
            .upsert_account(account(1, "10.0.0.0/8", &["ads"]))
            .expect("edit");
        let snap = store.load();
        let ClientPolicy::Account(policy) = snap.client_policy("10.0.0.1".parse().expect("ip"))
        else {
            panic!()
        };
        assert_eq!(policy.counters.queries.load(Ordering::Relaxed), 5);
        store.remove_account(AccountId(1));
        assert!(store.counters(AccountId(1)).is_none());
        assert!(matches!(
            store.load().client_policy("10.0.0.1".parse().expect("ip")),
            ClientPolicy::Unknown
        ));
    }

    #[test]
    fn overlapping_accounts_are_rejected_and_the_previous_table_stays() {
        let store = SnapshotStore::new(&no_default());
        store
            .set_accounts(vec![account(1, "10.0.0.0/8", &[])])
            .expect("accounts");
        let generation = store.generation();
        let err = store
            .set_accounts(vec![
                account(1, "10.0.0.0/8", &[]),
                account(2, "10.1.0.0/16", &[]),
            ])
            .expect_err("overlap");
        assert!(err.to_string().contains("10.1.0.0/16"), "{err}");
        assert_eq!(store.generation(), generation, "nothing published");
        let snap = store.load();
        let ClientPolicy::Account(p) = snap.client_policy("10.1.0.1".parse().expect("ip")) else {
            panic!()
        };
        assert_eq!(p.id, AccountId(1));
        assert!(store
            .upsert_account(account(3, "10.2.0.0/16", &[]))
            .is_err());
        assert!(matches!(
            store.load().client_policy("10.2.0.1".parse().expect("ip")),
            ClientPolicy::Account(_)
        ));
    }

    #[test]
    fn an_edit_rebuilds_only_that_account_and_a_catalog_swap_rebuilds_every_policy() {
        let store = SnapshotStore::new(&qorgan_config::DefaultPolicyConfig::default());
        store
            .set_accounts(vec![
                account(1, "10.0.0.0/8", &[]),
                account(2, "192.0.2.0/24", &[]),
            ])
            .expect("accounts");
        let revision = |ip: &str| match store.load().client_policy(ip.parse().expect("ip")) {
            ClientPolicy::Account(p) | ClientPolicy::DefaultNetwork(p) => p.revision,
            ClientPolicy::Unknown => panic!("{ip} unmapped"),
        };
        let (r1, r2, rd) = (
            revision("10.0.0.1"),
            revision("192.0.2.1"),
            revision("127.0.0.1"),
        );
        store
            .upsert_account(account(1, "10.0.0.0/8", &["ads"]))
            .expect("edit");
        assert_ne!(revision("10.0.0.1"), r1, "the edited account is rebuilt");
        assert_eq!(revision("192.0.2.1"), r2, "the other account is not");
        assert_eq!(revision("127.0.0.1"), rd, "nor is the default policy");
        // A catalog swap changes every verdict it may: every policy, the default one too, gets a
        // new revision (the fast path's packet cache, read before the lists, relies on it).
        let (r1, r2, rd) = (
            revision("10.0.0.1"),
            revision("192.0.2.1"),
            revision("127.0.0.1"),
        );
        store.set_catalog(catalog(&[("ads", "ads.example\n")]));
        assert_ne!(revision("10.0.0.1"), r1);
        assert_ne!(revision("192.0.2.1"), r2);
        assert_ne!(revision("127.0.0.1"), rd);
    }

    #[test]
    fn usage_reports_deltas_since_the_previous_drain() {
        let store = SnapshotStore::new(&no_default());
        store
            .set_accounts(vec![account(1, "10.0.0.0/8", &[])])
            .expect("accounts");
        let c = store.counters(AccountId(1)).expect("counters");
        c.queries.fetch_add(3, Ordering::Relaxed);
        c.blocked.fetch_add(1, Ordering::Relaxed);
        let labels: [&[u8]; 2] = [b"example", b"ads"];
        store.sample_blocked(BlockedSample::from_labels_rev(
            AccountId(1),
            labels.into_iter(),
        ));
        store.sample_blocked(BlockedSample::from_labels_rev(
            DEFAULT_POLICY_ID,
            labels.into_iter(),
        ));
        let first = store.take_usage(100);
        let u = &first.accounts[&1];
        assert_eq!((u.queries, u.blocked), (3, 1));
        assert_eq!(u.blocked_names["ads.example"], 1);
        assert_eq!(first.accounts.len(), 1, "the default policy is nobody's");
        c.queries.fetch_add(2, Ordering::Relaxed);
        let second = store.take_usage(105);
        assert_eq!(second.accounts[&1].queries, 2, "only what happened since");
        assert!(store.take_usage(110).is_empty());
    }

    #[test]
    fn every_change_publishes_a_higher_generation() {
        let store = SnapshotStore::new(&no_default());
        let g0 = store.generation();
        store.set_catalog(catalog(&[("ads", "a.example\n")]));
        let g1 = store.generation();
        store.set_accounts(Vec::new()).expect("empty table");
        assert!(g0 < g1 && g1 < store.generation());
    }

    #[test]
    fn default_networks_map_to_the_default_policy_with_its_block_mode() {
        let config = qorgan_config::DefaultPolicyConfig {
            block_mode: qorgan_config::BlockModeName::CustomIp,
            custom_ip: vec![
                "192.0.2.80".parse().expect("ip"),
                "2001:db8::80".parse().expect("ip"),
            ],
            ..Default::default()
        };
        let store = SnapshotStore::new(&config);
        let snap = store.load();
        let ClientPolicy::DefaultNetwork(p) = snap.client_policy("127.0.0.9".parse().expect("ip"))
        else {
            panic!("loopback is a default network");
        };
        assert_eq!(p.id, DEFAULT_POLICY_ID);
        assert_eq!(
            p.block_mode,
            BlockMode::CustomIp {
                v4: Some("192.0.2.80".parse().expect("ip")),
                v6: Some("2001:db8::80".parse().expect("ip"))
            }
        );
    }
}
