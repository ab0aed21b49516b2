//! The types both planes share: accounts' policies, the client map, the snapshot, and the
//! per-query decision.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ipnet::IpNet;

use crate::catalog::{Catalog, MAX_CATEGORIES};
use crate::error::BlocklistError;
use crate::matcher::{dotted_into, DomainSet, Kind, RuleRef};
use crate::rule::{Action, PatternRule, Rule};

/// An account's identity as the control plane numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(pub u64);

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "account {}", self.0)
    }
}

/// How a blocked name is answered (CONTRACT §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlockMode {
    /// NXDOMAIN (the default).
    #[default]
    Nxdomain,
    /// `0.0.0.0` for A, `::` for AAAA, NODATA for other types.
    NullIp,
    /// REFUSED.
    Refused,
    /// The address of a block page for A/AAAA (NODATA for a family with no address given).
    CustomIp {
        /// The A answer.
        v4: Option<Ipv4Addr>,
        /// The AAAA answer.
        v6: Option<Ipv6Addr>,
    },
}

/// A set of enabled categories: bit `i` is the catalog's category of index `i`
/// ([`Catalog::category_mask`] builds one from names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CategoryMask(pub u64);

impl CategoryMask {
    /// No category enabled.
    pub const NONE: Self = Self(0);
    /// Every category enabled.
    pub const ALL: Self = Self(u64::MAX);

    /// Whether category `index` is enabled.
    pub fn contains(self, index: u8) -> bool {
        index < 64 && self.0 & (1u64 << index) != 0
    }
}

/// An account's query counters since they were last drained (the resolver's usage drain
/// swaps them to zero). Kept in an `Arc` that the builder moves from the old policy into the
/// rebuilt one, so that counts survive a customer's edit.
#[derive(Debug)]
pub struct AccountCounters {
    /// Queries answered for the account.
    pub queries: AtomicU64,
    /// Of those, blocked.
    pub blocked: AtomicU64,
    /// Of those, blocked by the account's own block list.
    pub blocked_own: AtomicU64,
    /// Names an allow rule let through although a block rule covered them.
    pub allowed_override: AtomicU64,
    /// Blocked, per category index.
    pub blocked_by_category: [AtomicU64; MAX_CATEGORIES],
    /// Queries refused because the account went over its `qps_limit`.
    pub rate_limited: AtomicU64,
    /// The second (Unix time) `rate_count` counts queries of.
    rate_window: AtomicU64,
    /// Queries seen in `rate_window`.
    rate_count: AtomicU64,
}

impl Default for AccountCounters {
    fn default() -> Self {
        Self {
            queries: AtomicU64::new(0),
            blocked: AtomicU64::new(0),
            blocked_own: AtomicU64::new(0),
            allowed_override: AtomicU64::new(0),
            blocked_by_category: std::array::from_fn(|_| AtomicU64::new(0)),
            rate_limited: AtomicU64::new(0),
            rate_window: AtomicU64::new(0),
            rate_count: AtomicU64::new(0),
        }
    }
}

impl AccountCounters {
    /// Counts one allowed query whose verdict is not at hand: an answer from the resolver's
    /// packet cache, which remembers whether an exception (`overridden`) allowed the name.
    #[inline]
    pub fn record_allowed(&self, overridden: bool) {
        self.queries.fetch_add(1, Ordering::Relaxed);
        if overridden {
            self.allowed_override.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one query and its verdict (relaxed atomics: counts, not synchronisation).
    #[inline]
    pub fn record(&self, verdict: &Verdict) {
        self.queries.fetch_add(1, Ordering::Relaxed);
        match verdict {
            Verdict::Allow => {}
            Verdict::Allowed { .. } => {
                self.allowed_override.fetch_add(1, Ordering::Relaxed);
            }
            Verdict::Block { by } => self.count_block(by.list),
        }
    }

    /// Counts one query blocked by `list` whose full verdict is not at hand: the resolver
    /// remembers only which list blocked a name it walked before.
    #[inline]
    pub fn record_blocked(&self, list: ListRef) {
        self.queries.fetch_add(1, Ordering::Relaxed);
        self.count_block(list);
    }

    fn count_block(&self, list: ListRef) {
        self.blocked.fetch_add(1, Ordering::Relaxed);
        match list {
            ListRef::Category(c) => {
                if let Some(n) = self.blocked_by_category.get(usize::from(c)) {
                    n.fetch_add(1, Ordering::Relaxed);
                }
            }
            ListRef::OwnBlock => {
                self.blocked_own.fetch_add(1, Ordering::Relaxed);
            }
            ListRef::OwnAllow => {}
        }
    }
}

/// One account's compiled DNS filter: what the resolver applies to its clients.
#[derive(Debug)]
pub struct AccountPolicy {
    /// Whose policy.
    pub id: AccountId,
    /// The filter switch: `false` allows everything (queries are still counted).
    pub enabled: bool,
    /// The enabled categories, as indices of the snapshot's catalog.
    pub categories: CategoryMask,
    /// How blocked names are answered.
    pub block_mode: BlockMode,
    /// The account's own block list.
    pub own_block: DomainSet,
    /// The account's own allow list: wins over every block.
    pub own_allow: DomainSet,
    /// Query counters, carried over from the previous version of this policy.
    pub counters: Arc<AccountCounters>,
    /// Distinct for every build of a policy (the resolver numbers them): answers cached under
    /// one revision are not served under another, so an account's edit invalidates its own
    /// cached answers and nobody else's.
    pub revision: u64,
    /// Queries per second the account's networks may send (its tariff); 0 = no limit. Over
    /// it, queries are refused: one customer's storm (or infected host) cannot take the
    /// resolver's capacity from the others (RELIABILITY T7).
    pub qps_limit: u32,
}

impl AccountPolicy {
    /// A policy with the filter on, the given categories, no own lists and fresh counters.
    pub fn new(id: AccountId, categories: CategoryMask, block_mode: BlockMode) -> Self {
        Self {
            id,
            enabled: true,
            categories,
            block_mode,
            own_block: DomainSet::default(),
            own_allow: DomainSet::default(),
            counters: Arc::new(AccountCounters::default()),
            revision: 0,
            qps_limit: 0,
        }
    }

    /// Whether one more query fits the account's `qps_limit` in the current second
    /// (`now_secs`: Unix time, read only when the account has a limit); counts it in
    /// `rate_limited` when not. A fixed one-second window in the account's counters, shared by
    /// every worker and carried across revisions: two atomics, no lock. Racing threads at a
    /// window's start may let a few extra queries through.
    pub fn admit(&self, now_secs: impl FnOnce() -> u64) -> bool {
        if self.qps_limit == 0 {
            return true;
        }
        let now_secs = now_secs();
        let c = &self.counters;
        let window = c.rate_window.load(Ordering::Relaxed);
        if window != now_secs
            && c.rate_window
                .compare_exchange(window, now_secs, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            c.rate_count.store(0, Ordering::Relaxed);
        }
        if c.rate_count.fetch_add(1, Ordering::Relaxed) < u64::from(self.qps_limit) {
            true
        } else {
            c.rate_limited.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

/// Builds an account's own block and allow sets from its two parsed lists.
///
/// Every rule of the allow list allows, whatever its syntax (`example.com`, `||example.com^`
/// and `@@||example.com^` all mean "allow"). In the block list, block rules block and `@@`
/// exceptions move to the allow set, which is what someone who writes one there means.
pub fn build_own_sets(
    block: (&[Rule], &[PatternRule]),
    allow: (&[Rule], &[PatternRule]),
) -> Result<(DomainSet, DomainSet), BlocklistError> {
    let (block_rules, block_moved): (Vec<Rule>, Vec<Rule>) = block
        .0
        .iter()
        .cloned()
        .partition(|r| r.action == Action::Block);
    let (block_patterns, block_moved_p): (Vec<PatternRule>, Vec<PatternRule>) = block
        .1
        .iter()
        .cloned()
        .partition(|r| r.action == Action::Block);
    let mut allow_rules = allow.0.to_vec();
    allow_rules.extend(block_moved);
    let mut allow_patterns = allow.1.to_vec();
    allow_patterns.extend(block_moved_p);
    Ok((
        DomainSet::from_rules(&block_rules, &block_patterns)?,
        DomainSet::from_rules(&allow_rules, &allow_patterns)?,
    ))
}

/// Which list a matched rule is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListRef {
    /// A category list, by index into [`Catalog::categories`].
    Category(u8),
    /// The account's own block list.
    OwnBlock,
    /// The account's own allow list.
    OwnAllow,
}

/// The rule behind a verdict: which list, and which rule on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MatchSource {
    /// The list.
    pub list: ListRef,
    /// The rule: a listed name (how many labels of the query it is, and its scope) or a
    /// pattern (its index in [`Catalog::patterns`] or [`DomainSet::patterns`]).
    pub rule: RuleRef,
}

impl MatchSource {
    /// The listed name that matched, as the last labels of the query name (dotted); `None`
    /// for a pattern rule.
    pub fn matched_name<'q>(&self, qname: &'q str) -> Option<&'q str> {
        let RuleRef::Domain { labels, .. } = self.rule else {
            return None;
        };
        let q = qname.strip_suffix('.').unwrap_or(qname);
        let mut seen = 0u8;
        for (i, b) in q.bytes().enumerate().rev() {
            if b == b'.' {
                seen += 1;
                if seen == labels {
                    return q.get(i + 1..);
                }
            }
        }
        Some(q)
    }
}

/// The outcome of one name for one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Nothing blocks it.
    Allow,
    /// A block rule covered it but an allow rule overrode it (an own allow rule, or the
    /// category's own `@@` exception).
    Allowed {
        /// The allow rule.
        by: MatchSource,
    },
    /// Blocked: answer in the account's block mode.
    Block {
        /// The block rule.
        by: MatchSource,
    },
}

impl Verdict {
    /// Whether the name is to be blocked.
    pub fn is_blocked(&self) -> bool {
        matches!(self, Self::Block { .. })
    }
}

/// A fast hasher for masked addresses: they come from the operator, not from the network,
/// so hash flooding is no concern, and SipHash would cost more than the rest of the lookup.
#[derive(Debug, Default, Clone, Copy)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(n)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u128(&mut self, n: u128) {
        let lo = u64::try_from(n & u128::from(u64::MAX)).unwrap_or(0);
        let hi = u64::try_from(n >> 64).unwrap_or(0);
        self.0 = (self.0.rotate_left(5) ^ lo).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        self.0 = (self.0.rotate_left(5) ^ hi).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type AddrMap<K, T> = HashMap<K, T, BuildHasherDefault<AddrHasher>>;

/// Longest-prefix match from a source address to a value (an account's policy), IPv4 and
/// IPv6. One hash table per prefix length present, tried longest first: a lookup allocates
/// nothing, takes no lock, and costs at most one probe per distinct prefix length.
#[derive(Debug, Clone)]
pub struct ClientMap<T> {
    v4: Vec<(u8, AddrMap<u32, T>)>,
    v6: Vec<(u8, AddrMap<u128, T>)>,
    len: usize,
}

impl<T> Default for ClientMap<T> {
    fn default() -> Self {
        Self {
            v4: Vec::new(),
            v6: Vec::new(),
            len: 0,
        }
    }
}

fn mask4(addr: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        addr & (u32::MAX << (32 - u32::from(len)))
    }
}

fn mask6(addr: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        addr & (u128::MAX << (128 - u32::from(len)))
    }
}

impl<T> ClientMap<T> {
    /// An empty map: every lookup misses.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds the map. Host bits of a network are ignored (`10.0.0.1/24` is `10.0.0.0/24`).
    /// Networks of the same owner may repeat or nest (the first of a repeat is kept); a
    /// network that equals or nests with one of a different owner is an
    /// [`BlocklistError::OverlappingNetworks`] naming both.
    pub fn build<K, F>(
        entries: impl IntoIterator<Item = (IpNet, T)>,
        owner: F,
    ) -> Result<Self, BlocklistError>
    where
        K: PartialEq + fmt::Display,
        F: Fn(&T) -> K,
    {
        let mut map = Self::default();
        let mut nets: Vec<IpNet> = Vec::new();
        for (net, value) in entries {
            let net = net.trunc();
            if let Some(old) = map.get_exact(net) {
                // The same network twice: fine for one owner, ambiguous between two.
                let (old_owner, new_owner) = (owner(old), owner(&value));
                if old_owner != new_owner {
                    return Err(BlocklistError::OverlappingNetworks {
                        a: net,
                        a_owner: new_owner.to_string(),
                        b: net,
                        b_owner: old_owner.to_string(),
                    });
                }
                continue;
            }
            match net {
                IpNet::V4(n) => {
                    map.table4(n.prefix_len())
                        .insert(u32::from(n.network()), value);
                }
                IpNet::V6(n) => {
                    map.table6(n.prefix_len())
                        .insert(u128::from(n.network()), value);
                }
            }
            nets.push(net);
        }
        // Longest prefix first: the first hit of a lookup is the longest match.
        map.v4.sort_by_key(|e| std::cmp::Reverse(e.0));
        map.v6.sort_by_key(|e| std::cmp::Reverse(e.0));
        map.len = nets.len();
        // Nesting across owners: look each network up among the shorter prefixes present.
        for net in &nets {
            let Some(mine) = map.get_exact(*net) else {
                continue;
            };
            let mine_owner = owner(mine);
            if let Some((outer, theirs)) = map.covering_shorter(*net) {
                let theirs_owner = owner(theirs);
                if theirs_owner != mine_owner {
                    return Err(BlocklistError::OverlappingNetworks {
                        a: *net,
                        a_owner: mine_owner.to_string(),
                        b: outer,
                        b_owner: theirs_owner.to_string(),
                    });
                }
            }
        }
        Ok(map)
    }

    fn table4(&mut self, len: u8) -> &mut AddrMap<u32, T> {
        let pos = match self.v4.iter().position(|(l, _)| *l == len) {
            Some(p) => p,
            None => {
                self.v4.push((len, AddrMap::default()));
                self.v4.len() - 1
            }
        };
        &mut self.v4[pos].1
    }

    fn table6(&mut self, len: u8) -> &mut AddrMap<u128, T> {
        let pos = match self.v6.iter().position(|(l, _)| *l == len) {
            Some(p) => p,
            None => {
                self.v6.push((len, AddrMap::default()));
                self.v6.len() - 1
            }
        };
        &mut self.v6[pos].1
    }

    fn get_exact(&self, net: IpNet) -> Option<&T> {
        match net {
            IpNet::V4(n) => self
                .v4
                .iter()
                .find(|(l, _)| *l == n.prefix_len())
                .and_then(|(_, t)| t.get(&u32::from(n.network()))),
            IpNet::V6(n) => self
                .v6
                .iter()
                .find(|(l, _)| *l == n.prefix_len())
                .and_then(|(_, t)| t.get(&u128::from(n.network()))),
        }
    }

    /// The longest network present that strictly contains `net`.
    fn covering_shorter(&self, net: IpNet) -> Option<(IpNet, &T)> {
        match net {
            IpNet::V4(n) => {
                let addr = u32::from(n.network());
                self.v4
                    .iter()
                    .filter(|(l, _)| *l < n.prefix_len())
                    .find_map(|(l, t)| {
                        let key = mask4(addr, *l);
                        t.get(&key).and_then(|v| {
                            ipnet::Ipv4Net::new(Ipv4Addr::from(key), *l)
                                .ok()
                                .map(|o| (o.into(), v))
                        })
                    })
            }
            IpNet::V6(n) => {
                let addr = u128::from(n.network());
                self.v6
                    .iter()
                    .filter(|(l, _)| *l < n.prefix_len())
                    .find_map(|(l, t)| {
                        let key = mask6(addr, *l);
                        t.get(&key).and_then(|v| {
                            ipnet::Ipv6Net::new(Ipv6Addr::from(key), *l)
                                .ok()
                                .map(|o| (o.into(), v))
                        })
                    })
            }
        }
    }

    /// The value of the longest network containing `ip`. IPv4-mapped IPv6 sources
    /// (`::ffff:a.b.c.d`, as a dual-stack socket reports IPv4 clients) are looked up as IPv4.
    #[inline]
    pub fn lookup(&self, ip: IpAddr) -> Option<&T> {
        match ip.to_canonical() {
            IpAddr::V4(a) => {
                let addr = u32::from(a);
                self.v4.iter().find_map(|(l, t)| t.get(&mask4(addr, *l)))
            }
            IpAddr::V6(a) => {
                let addr = u128::from(a);
                self.v6.iter().find_map(|(l, t)| t.get(&mask6(addr, *l)))
            }
        }
    }

    /// How many networks the map holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the map holds no network.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Who a source address belongs to, in a snapshot.
#[derive(Debug, Clone, Copy)]
pub enum ClientPolicy<'s> {
    /// One of the account's networks contains it.
    Account(&'s Arc<AccountPolicy>),
    /// No account has it, but the default networks (`[default_policy] networks`) do.
    DefaultNetwork(&'s Arc<AccountPolicy>),
    /// Nobody: the resolver applies `dns.unknown_clients` (drop, refuse, or
    /// [`PolicySnapshot::default_policy`]).
    Unknown,
}

/// Everything the resolver needs to decide every query, immutable once published: swapped
/// whole (ArcSwap) when lists, accounts or filters change.
#[derive(Debug)]
pub struct PolicySnapshot {
    /// Increases with every published snapshot.
    pub generation: u64,
    /// The compiled category lists.
    pub catalog: Arc<Catalog>,
    /// Source address → index into `policies`. Shared between snapshots while no network
    /// changes, so that an edit of one account's filter does not rebuild it.
    pub clients: Arc<ClientMap<u32>>,
    /// The accounts' policies, by the index `clients` gives.
    pub policies: Vec<Arc<AccountPolicy>>,
    /// The policy for sources that belong to no account (`[default_policy]`).
    pub default_policy: Option<Arc<AccountPolicy>>,
    /// The sources that get the default policy without an account (`[default_policy]
    /// networks`); accounts' networks take precedence.
    pub default_networks: ClientMap<()>,
}

impl PolicySnapshot {
    /// A snapshot with no account and no default policy over `catalog`.
    pub fn empty(catalog: Arc<Catalog>) -> Self {
        Self {
            generation: 0,
            catalog,
            clients: Arc::new(ClientMap::new()),
            policies: Vec::new(),
            default_policy: None,
            default_networks: ClientMap::new(),
        }
    }

    /// The policy of a source address: its account's, else the default one when the address
    /// is in the default networks, else [`ClientPolicy::Unknown`].
    #[inline]
    pub fn client_policy(&self, ip: IpAddr) -> ClientPolicy<'_> {
        if let Some(p) = self
            .clients
            .lookup(ip)
            .and_then(|&i| self.policies.get(usize::try_from(i).unwrap_or(usize::MAX)))
        {
            return ClientPolicy::Account(p);
        }
        match (&self.default_policy, self.default_networks.lookup(ip)) {
            (Some(p), Some(())) => ClientPolicy::DefaultNetwork(p),
            _ => ClientPolicy::Unknown,
        }
    }

    /// Decides a name given as a dotted name (ASCII bytes, any case, trailing dot optional).
    #[inline]
    pub fn decide_dotted(&self, policy: &AccountPolicy, qname: &[u8]) -> Verdict {
        self.decide_labels_rev(policy, crate::name::labels_rev(qname))
    }

    /// Decides a name given as its labels, last label (TLD) first, any case.
    ///
    /// Blocked when a rule of an enabled category or of the own block list covers the name,
    /// unless an allow rule covers it: the own allow list always wins; a category's `@@`
    /// exceptions cancel that category's blocks unless the block is `$important` (and an
    /// `@@...$important` exception cancels even those). A disabled filter allows all.
    /// Allocates nothing and takes no lock.
    pub fn decide_labels_rev<'a, I>(&self, policy: &AccountPolicy, labels: I) -> Verdict
    where
        I: Iterator<Item = &'a [u8]> + Clone,
    {
        self.decide_with(policy, || labels.clone())
    }

    /// Decides a name in DNS wire format (length-prefixed labels ending with the root label,
    /// uncompressed, as in a question section), any case. A malformed name (a compression
    /// pointer, a label over 63 bytes, no root label within 255 bytes) matches nothing.
    #[inline]
    pub fn decide_wire(&self, policy: &AccountPolicy, wire: &[u8]) -> Verdict {
        let mut starts = [0u8; 128];
        let mut n = 0usize;
        let mut pos = 0usize;
        loop {
            let Some(&len) = wire.get(pos) else {
                return Verdict::Allow;
            };
            if len == 0 {
                break;
            }
            let (Ok(start), true) = (u8::try_from(pos), len <= 63 && n < starts.len()) else {
                return Verdict::Allow;
            };
            if wire.len() < pos + 1 + usize::from(len) {
                return Verdict::Allow;
            }
            starts[n] = start;
            n += 1;
            pos += 1 + usize::from(len);
        }
        let starts = &starts[..n];
        self.decide_with(policy, || {
            starts.iter().rev().map(|&s| {
                let s = usize::from(s);
                let len = usize::from(wire[s]);
                &wire[s + 1..s + 1 + len]
            })
        })
    }

    /// Decides a name whose labels, last (TLD) first, `labels()` yields afresh on each call:
    /// for label iterators that are not `Clone`, such as
    /// `|| hickory_name.iter().rev()`. The decision may walk the labels more than once.
    pub fn decide_with<'a, F, I>(&self, policy: &AccountPolicy, labels: F) -> Verdict
    where
        F: Fn() -> I,
        I: Iterator<Item = &'a [u8]>,
    {
        if !policy.enabled {
            return Verdict::Allow;
        }
        let catalog = &*self.catalog;
        let mut buf = [0u8; 256];
        let dotted = if catalog.has_patterns()
            || policy.own_block.has_patterns()
            || policy.own_allow.has_patterns()
        {
            dotted_into(labels(), &mut buf)
        } else {
            None
        };
        let enabled = policy.categories.0;
        let mut met = crate::catalog::Met::new();
        let hits = if enabled != 0 {
            catalog.hits(labels(), dotted, enabled, &mut met)
        } else {
            crate::matcher::Bits::default()
        };
        let blocking = if policy.own_block.is_empty() {
            None
        } else {
            policy
                .own_block
                .find(labels(), dotted)
                .map(|rule| MatchSource {
                    list: ListRef::OwnBlock,
                    rule,
                })
        };
        let blocking = blocking.or_else(|| {
            let blocked = hits.blocked();
            (blocked != 0).then(|| {
                let cat = lowest_bit(blocked);
                let kind = if hits.imp_block & (1u64 << cat) != 0 {
                    Kind::ImpBlock
                } else {
                    Kind::Block
                };
                MatchSource {
                    list: ListRef::Category(cat),
                    rule: catalog.explain(labels(), &met, dotted, cat, kind),
                }
            })
        });
        if let Some(by) = blocking {
            if !policy.own_allow.is_empty() {
                if let Some(rule) = policy.own_allow.find(labels(), dotted) {
                    return Verdict::Allowed {
                        by: MatchSource {
                            list: ListRef::OwnAllow,
                            rule,
                        },
                    };
                }
            }
            return Verdict::Block { by };
        }
        let cancelled = hits.cancelled();
        if cancelled != 0 {
            let cat = lowest_bit(cancelled);
            let kind = if hits.imp_allow & (1u64 << cat) != 0 {
                Kind::ImpAllow
            } else {
                Kind::Allow
            };
            return Verdict::Allowed {
                by: MatchSource {
                    list: ListRef::Category(cat),
                    rule: catalog.explain(labels(), &met, dotted, cat, kind),
                },
            };
        }
        Verdict::Allow
    }
}

fn lowest_bit(mask: u64) -> u8 {
    // trailing_zeros of a non-zero u64 is below 64, so it fits.
    u8::try_from(mask.trailing_zeros()).unwrap_or(0)
}
