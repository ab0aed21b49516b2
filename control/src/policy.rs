//! From the cabinet's records to the resolver's policy: each account's filter settings, own
//! lists and networks become one [`AccountWire`], published into the in-process resolver's
//! [`SnapshotStore`] (only the changed account is rebuilt; the shared category automaton is
//! never touched by a customer's edit) and served to resolver nodes as a versioned snapshot.
//!
//! The [`PolicyBook`] keeps every account that has networks, the current generation (from the
//! store: it only grows, across restarts too) and the last encoded snapshot, so that nodes
//! polling an unchanged generation cost nothing. Nodes wait for a change with
//! [`PolicyBook::changed_after`] (long polling) and so see an edit within one round trip.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use qorgan_blocklists::parse::{parse_text, FormatHint};
use qorgan_blocklists::{
    build_own_sets, AccountId, AccountWire, Action, DomainSet, RejectReason, SnapshotWire,
};
use qorgan_resolver::{block_mode_from_config, AccountSpec, SnapshotStore};
use tokio::sync::watch;

use crate::error::ControlError;
use crate::filter::{FilterSettings, ListKind};
use crate::store::{Id, Store};

/// Most rules (domain and pattern) one own list may hold.
pub const MAX_OWN_RULES: usize = 100_000;

/// One rejected line of an uploaded list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: u32,
    /// The line as given (cut at 200 characters).
    pub text: String,
    /// Why it was rejected.
    pub reason: String,
}

/// An own list compiled from text.
#[derive(Debug, Clone)]
pub struct CompiledList {
    /// The compiled set.
    pub set: DomainSet,
    /// Rules kept (domain and pattern rules, duplicates counted once per line).
    pub rules: usize,
    /// Lines rejected, in order.
    pub rejected: Vec<LineError>,
}

/// Why an uploaded list cannot be used at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListProblem {
    /// More than [`MAX_OWN_RULES`] rules.
    TooManyRules(usize),
    /// The rules could not be compiled (e.g. a pattern set over the automaton bound).
    Compile(String),
}

const EXCEPTION_IN_BLOCKLIST: &str =
    "исключение @@ в чёрном списке ничего не отменяет: перенесите его в белый список";

/// Why a line was rejected, in the cabinet's language (the parser's own texts are English,
/// for operators' logs and `compile-lists`).
fn reason_ru(r: &RejectReason) -> String {
    match r {
        RejectReason::InvalidName { name, error } => {
            format!("«{name}» — не доменное имя ({error})")
        }
        RejectReason::UnsupportedModifier(m) => {
            format!("модификатор ${m} не имеет смысла для DNS-фильтра")
        }
        RejectReason::NarrowingModifier(m) => {
            format!("модификатор ${m} не поддерживается, а без него правило блокировало бы больше")
        }
        RejectReason::DnsRewrite(v) => format!(
            "$dnsrewrite={v} подменяет ответ; поддерживаются только NXDOMAIN и REFUSED (блокировка)"
        ),
        RejectReason::Cosmetic => {
            "косметическое правило (скрытие элементов страницы) не относится к DNS".to_owned()
        }
        RejectReason::PathRule => {
            "правило для пути, порта или параметров URL, а не для имени хоста".to_owned()
        }
        RejectReason::MatchesEverything => "правило подходит под любое имя".to_owned(),
        RejectReason::BadRegex(e) => format!("регулярное выражение не поддерживается: {e}"),
        RejectReason::HostsAddress(ip) => {
            format!("строка hosts перенаправляет на {ip}: это не блокировка")
        }
        RejectReason::HostsNoName => "строка hosts без имени".to_owned(),
        RejectReason::Rpz(what) => format!("RPZ: {what}"),
        RejectReason::Unrecognized => {
            "строка не похожа на правило ни одного поддерживаемого формата".to_owned()
        }
        RejectReason::TooManyPatterns => format!(
            "больше {} правил с * или регулярными выражениями; это правило не используется",
            qorgan_blocklists::MAX_PATTERNS
        ),
        other => other.to_string(),
    }
}

/// Parses and compiles an own list. In a block list an `@@` exception has no meaning (there is
/// nothing of the list's own for it to cancel): it is rejected with a hint to put it in the
/// allow list. In the allow list every rule allows, whatever its syntax.
pub fn compile_list(kind: ListKind, text: &str) -> Result<CompiledList, ListProblem> {
    let parsed = parse_text(text, kind.as_str(), FormatHint::Auto);
    let lines: Vec<&str> = text.lines().collect();
    let line_text = |line: u32| -> String {
        let l = lines
            .get(usize::try_from(line).unwrap_or(0).saturating_sub(1))
            .copied()
            .unwrap_or("");
        l.trim().chars().take(200).collect()
    };
    let mut rejected: Vec<LineError> = parsed
        .rejected
        .iter()
        .map(|r| LineError {
            line: r.line,
            text: line_text(r.line),
            reason: reason_ru(&r.reason),
        })
        .collect();
    let (mut rules, mut patterns) = (parsed.rules, parsed.patterns);
    if kind == ListKind::Blocklist {
        let exceptions: Vec<u32> = rules
            .iter()
            .filter(|r| r.action == Action::Allow)
            .map(|r| r.line)
            .chain(
                patterns
                    .iter()
                    .filter(|p| p.action == Action::Allow)
                    .map(|p| p.line),
            )
            .collect();
        rules.retain(|r| r.action == Action::Block);
        patterns.retain(|p| p.action == Action::Block);
        rejected.extend(exceptions.into_iter().map(|line| LineError {
            line,
            text: line_text(line),
            reason: EXCEPTION_IN_BLOCKLIST.to_owned(),
        }));
    }
    rejected.sort_by_key(|e| e.line);
    let count = rules.len() + patterns.len();
    if count > MAX_OWN_RULES {
        return Err(ListProblem::TooManyRules(count));
    }
    // build_own_sets moves a block list's `@@` rules to the allow set; in the allow list
    // every rule allows. Either way the set wanted is the one of this list's own kind.
    let set = match kind {
        ListKind::Blocklist => build_own_sets((&rules, &patterns), (&[], &[])).map(|(b, _)| b),
        ListKind::Allowlist => build_own_sets((&[], &[]), (&rules, &patterns)).map(|(_, a)| a),
    }
    .map_err(|e| ListProblem::Compile(e.to_string()))?;
    Ok(CompiledList {
        set,
        rules: count,
        rejected,
    })
}

/// An own list an upload just stored, with the set the upload compiled from it.
#[derive(Debug, Clone, Copy)]
pub struct EditedList<'a> {
    /// Which list.
    pub kind: ListKind,
    /// The text stored.
    pub text: &'a str,
    /// What it compiled to.
    pub set: &'a DomainSet,
}

/// The policy of every account with networks, as published.
pub struct PolicyBook {
    snapshots: SnapshotStore,
    default_policy: qorgan_config::DefaultPolicyConfig,
    inner: Mutex<BookInner>,
    generation: watch::Sender<u64>,
    /// Resolver nodes: name → (generation held, unix seconds last seen).
    nodes: Mutex<BTreeMap<String, (u64, i64)>>,
}

/// An account as published, with a fingerprint of the stored text each own list was compiled
/// from: a republish whose stored text did not change reuses the set instead of compiling it.
struct Published {
    wire: AccountWire,
    block_text: u64,
    allow_text: u64,
}

impl Published {
    fn set_of(&self, kind: ListKind) -> (&DomainSet, u64) {
        match kind {
            ListKind::Blocklist => (&self.wire.own_block, self.block_text),
            ListKind::Allowlist => (&self.wire.own_allow, self.allow_text),
        }
    }
}

/// A fingerprint of a list's text (equality within this process; not stored).
fn text_print(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

struct BookInner {
    accounts: BTreeMap<Id, Published>,
    /// The last encoded snapshot and its generation.
    encoded: Option<(u64, Arc<Vec<u8>>)>,
}

impl std::fmt::Debug for PolicyBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyBook")
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

impl PolicyBook {
    /// An empty book publishing into `snapshots`.
    pub fn new(
        snapshots: SnapshotStore,
        default_policy: qorgan_config::DefaultPolicyConfig,
    ) -> Self {
        Self {
            snapshots,
            default_policy,
            inner: Mutex::new(BookInner {
                accounts: BTreeMap::new(),
                encoded: None,
            }),
            generation: watch::channel(0).0,
            nodes: Mutex::new(BTreeMap::new()),
        }
    }

    /// Notes that node `name` polled holding generation `held`. At most 10,000 nodes are
    /// remembered (names come from the operator's nodes, but are still input).
    pub fn node_seen(&self, name: &str, held: u64) {
        let mut nodes = self
            .nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if nodes.len() >= 10_000 && !nodes.contains_key(name) {
            return;
        }
        nodes.insert(name.to_owned(), (held, crate::now_secs()));
    }

    /// Every node seen: `(name, generation held, last seen)`.
    pub fn nodes(&self) -> Vec<(String, u64, i64)> {
        self.nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(n, (g, t))| (n.clone(), *g, *t))
            .collect()
    }

    /// The resolver's snapshot store this book publishes into.
    pub fn snapshots(&self) -> &SnapshotStore {
        &self.snapshots
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, BookInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Builds every account with networks from the store and publishes them all (at start).
    /// Returns how many accounts were published.
    pub fn load_all(&self, store: &Store) -> Result<usize, ControlError> {
        let mut by_account: HashMap<Id, Vec<IpNet>> = HashMap::new();
        for n in store.all_networks()? {
            by_account.entry(n.account_id).or_default().push(n.cidr);
        }
        let mut accounts = BTreeMap::new();
        for (id, networks) in by_account {
            accounts.insert(id, self.build(store, id, networks, None, None)?);
        }
        let specs: Vec<AccountSpec> = accounts
            .values()
            .map(|p: &Published| AccountSpec::from(p.wire.clone()))
            .collect();
        let count = specs.len();
        self.snapshots
            .set_accounts(specs)
            .map_err(|e| ControlError::Policy(e.to_string()))?;
        let mut inner = self.inner();
        inner.accounts = accounts;
        self.announce(store, inner)?;
        Ok(count)
    }

    /// Ends a change nodes must see: forgets the encoded snapshot, bumps the persisted
    /// generation while the book is still locked (generations follow the changes' order) and
    /// wakes the nodes' long polls.
    fn announce(
        &self,
        store: &Store,
        mut inner: std::sync::MutexGuard<'_, BookInner>,
    ) -> Result<u64, ControlError> {
        inner.encoded = None;
        let generation = store.filters().bump_generation()?;
        drop(inner);
        self.generation.send_replace(generation);
        Ok(generation)
    }

    /// Rebuilds one account from the store and publishes it (after an edit of its settings,
    /// lists or networks). An account without networks is removed from the resolver.
    ///
    /// `edited` is the list an upload just stored, already compiled by the caller: it is used
    /// as is when the store still holds that text (a later upload may have overtaken it). A
    /// list whose stored text is unchanged since the last publish keeps its published set, so
    /// an edit compiles nothing twice.
    pub fn publish(
        &self,
        store: &Store,
        id: Id,
        edited: Option<EditedList<'_>>,
    ) -> Result<u64, ControlError> {
        let networks: Vec<IpNet> = store.networks(id)?.into_iter().map(|n| n.cidr).collect();
        let mut inner = self.inner();
        if networks.is_empty() {
            inner.accounts.remove(&id);
            self.snapshots.remove_account(AccountId(id));
        } else {
            let published = self.build(store, id, networks, inner.accounts.get(&id), edited)?;
            self.snapshots
                .upsert_account(AccountSpec::from(published.wire.clone()))
                .map_err(|e| ControlError::Policy(e.to_string()))?;
            inner.accounts.insert(id, published);
        }
        self.announce(store, inner)
    }

    /// One account's policy from its records. An own list whose stored text is the one its
    /// `published` set (or the `edited` set) was compiled from is not compiled again.
    fn build(
        &self,
        store: &Store,
        id: Id,
        networks: Vec<IpNet>,
        published: Option<&Published>,
        edited: Option<EditedList<'_>>,
    ) -> Result<Published, ControlError> {
        let filters = store.filters();
        let settings = filters
            .settings(id)?
            .unwrap_or_else(|| FilterSettings::defaults(&self.default_policy));
        let own = |kind| -> Result<(DomainSet, u64), ControlError> {
            let stored = filters.list(id, kind)?;
            let print = text_print(&stored.text);
            if let Some((set, p)) = published.map(|p| p.set_of(kind)) {
                if p == print {
                    return Ok((set.clone(), print));
                }
            }
            if let Some(e) = edited.filter(|e| e.kind == kind && e.text == stored.text) {
                return Ok((e.set.clone(), print));
            }
            if stored.text.is_empty() {
                return Ok((DomainSet::default(), print));
            }
            // Stored lists were accepted once; one that no longer compiles (a newer parser
            // got stricter) is logged and left out rather than blocking the whole account.
            let set = compile_list(kind, &stored.text).map_or_else(
                |e| {
                    tracing::error!(account = id, list = kind.as_str(), problem = ?e, "stored own list no longer compiles");
                    DomainSet::default()
                },
                |c| c.set,
            );
            Ok((set, print))
        };
        let (own_block, block_text) = own(ListKind::Blocklist)?;
        let (own_allow, allow_text) = own(ListKind::Allowlist)?;
        Ok(Published {
            wire: AccountWire {
                id: AccountId(id),
                enabled: settings.enabled,
                networks,
                categories: settings.categories.clone(),
                block_mode: block_mode_from_config(settings.block_mode, &settings.custom_ip),
                own_block,
                own_allow,
                qps_limit: settings.qps_limit,
            },
            block_text,
            allow_text,
        })
    }

    /// The current snapshot in the wire format, and its generation (encoded once per
    /// generation, outside the book's lock: edits are not held up by a node's poll).
    pub fn encoded(&self) -> (u64, Arc<Vec<u8>>) {
        let (generation, accounts) = {
            let inner = self.inner();
            let generation = self.generation();
            if let Some((g, bytes)) = inner.encoded.as_ref().filter(|(g, _)| *g == generation) {
                return (*g, bytes.clone());
            }
            // Cheap: the sets inside are shared, not copied.
            let accounts: Vec<AccountWire> =
                inner.accounts.values().map(|p| p.wire.clone()).collect();
            (generation, accounts)
        };
        let snapshot = SnapshotWire {
            generation,
            catalog_hash: self.snapshots.catalog().hash().to_owned(),
            accounts,
        };
        let bytes = Arc::new(qorgan_blocklists::wire::encode(&snapshot));
        let mut inner = self.inner();
        if self.generation() == generation {
            inner.encoded = Some((generation, bytes.clone()));
        }
        (generation, bytes)
    }

    /// Publishes a new generation whenever the lists catalog changes (a list folder reload):
    /// the snapshot names the catalog's hash, and a node only fetches a catalog it hears of.
    /// Runs until `cancel`.
    ///
    /// Subscribes when called, not when first polled: a catalog loaded between the spawn and
    /// the task's first run is still seen.
    pub fn follow_catalog(
        self: Arc<Self>,
        store: Store,
        cancel: tokio_util::sync::CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut changes = self.snapshots.catalog_changes();
        async move {
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    changed = changes.changed() => if changed.is_err() { return },
                }
                match self.announce(&store, self.inner()) {
                    Ok(generation) => {
                        let catalog = self.snapshots.catalog();
                        tracing::info!(generation, catalog = %catalog.hash(), "lists catalog changed; published to nodes");
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot publish the new lists catalog to nodes");
                    }
                }
            }
        }
    }

    /// Waits up to `wait` for a generation above `after`; returns the generation then current.
    pub async fn changed_after(&self, after: u64, wait: Duration) -> u64 {
        let mut rx = self.generation.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(|g| *g > after)).await;
        let current = *rx.borrow();
        current
    }

    /// The account's policy as last published (`None` without networks).
    pub fn account(&self, id: Id) -> Option<AccountWire> {
        self.inner().accounts.get(&id).map(|p| p.wire.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::{AuditEntry, StoredList};
    use crate::store::NewAccount;

    /// A store with one account on 10.9.0.0/16 and a book over it.
    fn book_with_account() -> (Store, PolicyBook, Id) {
        let store = Store::temporary().expect("store");
        let account = store
            .create_account(
                NewAccount {
                    account_number: "77".into(),
                    contract_number: "77/1".into(),
                    contract_key: "77/1".into(),
                    iin_bin: "871008401427".into(),
                    name: "Тест".into(),
                    company: None,
                },
                0,
            )
            .expect("account");
        store
            .add_network(account.id, "10.9.0.0/16".parse().expect("net"), 0)
            .expect("network");
        let book = PolicyBook::new(
            SnapshotStore::new(&qorgan_config::DefaultPolicyConfig::default()),
            qorgan_config::DefaultPolicyConfig::default(),
        );
        book.load_all(&store).expect("load");
        (store, book, account.id)
    }

    fn save(store: &Store, id: Id, kind: ListKind, text: &str) {
        let audit = AuditEntry {
            id: store.filters().next_audit_id().expect("id"),
            at: 0,
            user_id: 1,
            user: "77".into(),
            action: kind.as_str().into(),
            summary: String::new(),
        };
        let list = StoredList {
            text: text.into(),
            rules: 1,
            updated_at: 0,
        };
        store
            .filters()
            .save_list(id, kind, &list, audit)
            .expect("save");
    }

    #[test]
    fn publishing_an_edit_uses_the_stored_text_when_a_later_upload_overtook_it() {
        let (store, book, id) = book_with_account();
        save(&store, id, ListKind::Blocklist, "first.example\n");
        let first = compile_list(ListKind::Blocklist, "first.example\n").expect("compiles");
        book.publish(
            &store,
            id,
            Some(EditedList {
                kind: ListKind::Blocklist,
                text: "first.example\n",
                set: &first.set,
            }),
        )
        .expect("publish");
        let published = book.account(id).expect("published");
        assert!(published.own_block.covers_dotted(b"first.example"));

        // A second upload is stored before the first one's publish runs: the store wins.
        save(&store, id, ListKind::Blocklist, "second.example\n");
        book.publish(
            &store,
            id,
            Some(EditedList {
                kind: ListKind::Blocklist,
                text: "first.example\n",
                set: &first.set,
            }),
        )
        .expect("publish");
        let published = book.account(id).expect("published");
        assert!(published.own_block.covers_dotted(b"second.example"));
        assert!(!published.own_block.covers_dotted(b"first.example"));
    }

    #[test]
    fn a_settings_edit_keeps_both_published_lists() {
        let (store, book, id) = book_with_account();
        save(&store, id, ListKind::Allowlist, "ok.example\n");
        book.publish(&store, id, None).expect("publish");
        save(&store, id, ListKind::Blocklist, "bad.example\n");
        let bad = compile_list(ListKind::Blocklist, "bad.example\n").expect("compiles");
        book.publish(
            &store,
            id,
            Some(EditedList {
                kind: ListKind::Blocklist,
                text: "bad.example\n",
                set: &bad.set,
            }),
        )
        .expect("publish");
        book.publish(&store, id, None).expect("settings publish");
        let p = book.account(id).expect("published");
        assert!(p.own_block.covers_dotted(b"bad.example"));
        assert!(p.own_allow.covers_dotted(b"ok.example"));
        // And what the resolver holds is the same.
        let snapshot = book.snapshots().load();
        let qorgan_blocklists::ClientPolicy::Account(policy) =
            snapshot.client_policy("10.9.1.1".parse().expect("ip"))
        else {
            panic!("10.9.0.0/16 is the account's");
        };
        assert!(policy.own_block.covers_dotted(b"bad.example"));
        assert!(policy.own_allow.covers_dotted(b"ok.example"));
    }

    #[test]
    fn blocklist_keeps_valid_rules_and_reports_bad_lines_by_number() {
        let c = compile_list(
            ListKind::Blocklist,
            "ads.example\n||tracker.example^\nnot a domain!\n@@||ok.example^\n",
        )
        .expect("compiles");
        assert_eq!(c.rules, 2);
        assert!(c.set.covers_dotted(b"x.tracker.example"));
        let lines: Vec<u32> = c.rejected.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![3, 4]);
        assert!(
            c.rejected[1].reason.contains("белый список"),
            "{:?}",
            c.rejected[1]
        );
        assert_eq!(c.rejected[0].text, "not a domain!");
    }

    #[test]
    fn allowlist_takes_exceptions_and_plain_rules_alike() {
        let c = compile_list(ListKind::Allowlist, "@@||good.example^\nalso.example\n").expect("ok");
        assert_eq!((c.rules, c.rejected.len()), (2, 0));
        assert!(c.set.covers_dotted(b"a.good.example"));
        assert!(c.set.covers_dotted(b"also.example"));
    }

    #[test]
    fn list_over_the_rule_limit_is_refused_whole() {
        let text: String = (0..=MAX_OWN_RULES)
            .map(|i| format!("n{i}.example\n"))
            .collect();
        assert!(matches!(
            compile_list(ListKind::Blocklist, &text),
            Err(ListProblem::TooManyRules(n)) if n == MAX_OWN_RULES + 1
        ));
    }
}
