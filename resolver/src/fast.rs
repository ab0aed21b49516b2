//! The UDP fast path's per-packet work: bytes in, bytes out, no allocation, no lock.
//!
//! [`FastPath::process`] reads only the header, the question and the OPT record of a datagram
//! in place, drops what must get no reply (short packets, QR=1, sources outside every account
//! under `unknown_clients = "drop"`), decides the name by the source's account, and answers
//! blocked names in the account's block mode and allowed names from a packet cache, straight
//! from bytes. Everything else ([`FastOutcome::Slow`]) goes to the hickory path
//! ([`crate::DnsHandler`]), whose encoded answer fills the cache ([`FastPath::fill`]).
//!
//! The answers are meant to be the hickory path's answers byte for byte in meaning (same
//! rcode, flags, records, OPT and EDE); the differential test in `tests/fast_path` checks it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use hickory_proto::rr::RecordType;
use qorgan_blocklists::{AccountPolicy, BlockMode, ClientPolicy, ListRef, PolicySnapshot, Verdict};
use qorgan_config::UnknownClients;

use crate::answer::{EDE_BLOCKED, EDE_OPTION_CODE, MAX_UDP_PAYLOAD};
use crate::metrics::{DnsMetrics, Outcome, Proto, QtypeClass};
use crate::rrl::{refused_answer, truncated_answer, RateDecision, RateLimitOptions, RateLimiter};
use crate::store::SnapshotStore;
use crate::usage::BlockedSample;

/// DNS header length.
const HEADER: usize = 12;
/// Record type of OPT (RFC 6891).
const TYPE_OPT: u16 = 41;
/// Record type of SOA.
const TYPE_SOA: u16 = 6;
/// Class IN.
const CLASS_IN: u16 = 1;
/// Wire form of the synthesised SOA's MNAME, `qorgan.invalid.` (see [`crate::answer`]).
const SOA_MNAME: &[u8] = b"\x06qorgan\x07invalid\x00";
/// Wire form of its RNAME, `blocked.qorgan.invalid.`.
const SOA_RNAME: &[u8] = b"\x07blocked\x06qorgan\x07invalid\x00";
/// Answer payload limit of a client without EDNS (RFC 1035).
const PLAIN_UDP_PAYLOAD: u16 = 512;
/// Ways of each of the packet cache's buckets (an entry may live in either of two buckets).
const WAYS: usize = 4;
/// Most TTL/name patch points an answer may have to be cached (more: served by hickory).
const MAX_PATCHES: usize = 64;
/// TTL of a stale answer (RFC 8767 §4 recommends 30 s: clients come back soon, when the
/// upstreams may answer again).
const STALE_TTL: u32 = 30;

/// How the fast path is run: from `[dns]` (`fast_path`, `fast_path_workers`,
/// `packet_cache_size`); the default is the config's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastPathOptions {
    /// Serve UDP from the fast path; `false` leaves UDP to hickory-server as before.
    pub enabled: bool,
    /// Worker threads (one `SO_REUSEPORT` socket each per listen address); 0 = the cores this
    /// process may run on.
    pub workers: usize,
    /// Packet cache entries over all workers (each worker owns `cache_size / workers`);
    /// 0 disables the packet cache.
    pub cache_size: usize,
    /// Interrupt coalescing window of each worker (`dns.fast_path_coalesce_us`); zero: off.
    pub coalesce: std::time::Duration,
}

impl Default for FastPathOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            workers: 0,
            cache_size: 100_000,
            coalesce: std::time::Duration::from_micros(50),
        }
    }
}

impl FastPathOptions {
    /// The options `config` asks for (`dns.fast_path`, `dns.fast_path_workers`,
    /// `dns.packet_cache_size`).
    pub fn from_config(config: &qorgan_config::Config) -> Self {
        Self {
            enabled: config.dns.fast_path,
            workers: config.dns.fast_path_workers,
            cache_size: config.dns.packet_cache_size,
            coalesce: std::time::Duration::from_micros(u64::from(config.dns.fast_path_coalesce_us)),
        }
    }

    /// The number of workers to start: `workers`, or the cores available to this process.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    }
}

/// What to do with one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastOutcome {
    /// Send nothing (counted).
    Drop,
    /// Send the first `n` bytes of the output buffer.
    Reply(usize),
    /// Hand the datagram to the hickory path; when its answer is cacheable, give it to
    /// [`FastPath::fill`] with this key.
    Slow(Option<FillKey>),
    /// Hand the datagram to the hickory path as `Slow(Some(key))`; the first `len` bytes of the
    /// output buffer hold the expired cached answer with TTLs of 30 s, to send instead of a
    /// SERVFAIL if the upstreams fail (RFC 8767 serve-stale, `dns.serve_stale_secs`).
    Stale {
        /// The fill key of the fresh answer.
        key: FillKey,
        /// Length of the stale answer in the output buffer.
        len: usize,
    },
}

/// What the cache needs, besides the answer itself, to store an answer of the hickory path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillKey {
    policy: u64,
    /// The policy's [`qorgan_blocklists::AccountPolicy::revision`]: another account's edit
    /// (a new snapshot generation) keeps this account's cached answers valid.
    revision: u64,
    flags: u8,
}

/// The cache key bits that are not in the name: EDNS present, DO set.
const KEY_EDNS: u8 = 1;
const KEY_DO: u8 = 2;
/// Not a key bit (lookups ignore it): the name was allowed by an exception rule
/// ([`Verdict::Allowed`]), so a hit counts as an override, as the walk would have.
const ENTRY_OVERRIDDEN: u8 = 0x80;

impl FillKey {
    /// The key as a lookup sees it (what the hash covers and a hit compares).
    fn with_lookup_flags(self) -> Self {
        Self {
            flags: self.flags & !ENTRY_OVERRIDDEN,
            ..self
        }
    }

    /// The key of an answer to store, marked when an exception allowed the name.
    fn overridden(self, overridden: bool) -> Self {
        if overridden {
            Self {
                flags: self.flags | ENTRY_OVERRIDDEN,
                ..self
            }
        } else {
            self
        }
    }
}

/// The question and OPT of a parsed query (offsets into the datagram).
struct Parsed {
    /// End of the question name (offset just past its root label).
    name_end: usize,
    qtype: u16,
    /// Client's EDNS payload size, if it sent an OPT.
    edns_payload: Option<u16>,
    dnssec_ok: bool,
    /// Offsets of the labels' length bytes, in order (at most 127).
    labels: [u8; 128],
    label_count: usize,
}

impl Parsed {
    fn labels_rev<'s, 'q: 's>(
        &'s self,
        query: &'q [u8],
    ) -> impl Iterator<Item = &'q [u8]> + Clone + 's {
        self.labels[..self.label_count].iter().rev().map(move |&s| {
            let s = usize::from(s);
            let len = usize::from(query[s]);
            &query[s + 1..s + 1 + len]
        })
    }

    /// Largest answer this client takes over UDP.
    fn limit(&self) -> usize {
        usize::from(self.answer_payload().unwrap_or(PLAIN_UDP_PAYLOAD))
    }

    /// The payload our OPT announces (the hickory path's [`crate::answer::response_edns`]).
    fn answer_payload(&self) -> Option<u16> {
        self.edns_payload
            .map(|p| p.clamp(PLAIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD))
    }
}

/// Reads the header, question and OPT; `None` when anything is unusual (the hickory path
/// answers those: several questions, compression in the question, other classes, opcodes,
/// EDNS versions, records in answer/authority, trailing bytes).
fn parse(query: &[u8]) -> Option<Parsed> {
    let opcode = (query[2] >> 3) & 0x0f;
    let tc = query[2] & 0x02 != 0;
    let counts = |i: usize| u16::from_be_bytes([query[4 + 2 * i], query[5 + 2 * i]]);
    if opcode != 0 || tc || counts(0) != 1 || counts(1) != 0 || counts(2) != 0 || counts(3) > 1 {
        return None;
    }
    let mut labels = [0u8; 128];
    let mut label_count = 0;
    let mut pos = HEADER;
    loop {
        let len = *query.get(pos)?;
        if len == 0 {
            pos += 1;
            break;
        }
        // A name is at most 255 octets with its root label (RFC 1035 2.3.4): its other labels
        // end by 254 (256 were taken, and echoed in answers that no parser reads).
        if len > 63 || label_count == labels.len() || pos + 1 + usize::from(len) > HEADER + 254 {
            return None;
        }
        labels[label_count] = u8::try_from(pos).ok()?;
        label_count += 1;
        pos += 1 + usize::from(len);
    }
    let name_end = pos;
    let fixed = query.get(pos..pos + 4)?;
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let qclass = u16::from_be_bytes([fixed[2], fixed[3]]);
    if qclass != CLASS_IN || qtype == TYPE_OPT {
        return None;
    }
    pos += 4;
    let mut edns_payload = None;
    let mut dnssec_ok = false;
    if counts(3) == 1 {
        // Root owner, type OPT, class = payload, TTL = ext-rcode, version, flags; rdata.
        let opt = query.get(pos..pos + 11)?;
        if opt[0] != 0 || u16::from_be_bytes([opt[1], opt[2]]) != TYPE_OPT || opt[6] != 0 {
            return None;
        }
        edns_payload = Some(u16::from_be_bytes([opt[3], opt[4]]));
        dnssec_ok = opt[7] & 0x80 != 0;
        let rdlen = usize::from(u16::from_be_bytes([opt[9], opt[10]]));
        pos += 11;
        let end = pos + rdlen;
        // Options must be well-formed TLVs (the hickory path ignores their content).
        while pos < end {
            let head = query.get(pos..pos + 4)?;
            pos += 4 + usize::from(u16::from_be_bytes([head[2], head[3]]));
        }
        if pos != end {
            return None;
        }
    }
    if pos != query.len() {
        return None;
    }
    Some(Parsed {
        name_end,
        qtype,
        edns_payload,
        dnssec_ok,
        labels,
        label_count,
    })
}

/// The fast path of one worker: shared policy and metrics, its own packet cache.
#[derive(Debug)]
pub struct FastPath {
    store: SnapshotStore,
    metrics: Arc<DnsMetrics>,
    unknown_clients: UnknownClients,
    block_ttl: u32,
    cache: PacketCache,
    epoch: Instant,
    rrl: RateLimiter,
}

impl FastPath {
    /// A fast path reading policy from `store`, counting in `metrics`, with `unknown_clients`
    /// and `block_ttl` from `[dns]` and a packet cache of `cache_entries` (0: no cache).
    pub fn new(
        dns: &qorgan_config::DnsConfig,
        store: SnapshotStore,
        metrics: Arc<DnsMetrics>,
        cache_entries: usize,
    ) -> Self {
        Self {
            store,
            metrics,
            unknown_clients: dns.unknown_clients,
            block_ttl: dns.block_ttl,
            cache: PacketCache::new(cache_entries, u64::from(dns.serve_stale_secs)),
            epoch: Instant::now(),
            rrl: RateLimiter::new(RateLimitOptions::from_config(dns), 1),
        }
    }

    /// This worker enforces `1 / workers` of the configured per-prefix rate (the sources'
    /// datagrams spread over the workers' `SO_REUSEPORT` sockets).
    #[must_use]
    pub fn with_rate_share(mut self, dns: &qorgan_config::DnsConfig, workers: usize) -> Self {
        self.rrl = RateLimiter::new(RateLimitOptions::from_config(dns), workers);
        self
    }

    /// Seconds since this fast path started (the cache's clock).
    fn now_secs(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    /// Answers one datagram from `src` into `out` (at least [`MAX_UDP_PAYLOAD`] bytes), or says
    /// to drop it or to hand it to the hickory path. Takes no lock; allocates only the cache
    /// entry that remembers a blocked name the first time this worker walks it under a policy
    /// revision (as a fill allocates one for an allowed name).
    pub fn process(&mut self, src: IpAddr, query: &[u8], out: &mut [u8]) -> FastOutcome {
        let started = Instant::now();
        // Before any parsing: too short for a header, or not a query (reflection, T3).
        if query.len() < HEADER || query[2] & 0x80 != 0 {
            self.metrics
                .record_query(Proto::Udp, QtypeClass::Other, Outcome::Dropped, 0.0);
            return FastOutcome::Drop;
        }
        let snapshot = self.store.load();
        let policy = match snapshot.client_policy(src) {
            ClientPolicy::Account(p) | ClientPolicy::DefaultNetwork(p) => p,
            ClientPolicy::Unknown => match (self.unknown_clients, &snapshot.default_policy) {
                (UnknownClients::Default, Some(p)) => p,
                (UnknownClients::Drop, _) => {
                    self.metrics
                        .record_query(Proto::Udp, QtypeClass::Other, Outcome::Dropped, 0.0);
                    return FastOutcome::Drop;
                }
                // REFUSED is rare enough for the hickory path.
                (UnknownClients::Refuse | UnknownClients::Default, _) => {
                    return FastOutcome::Slow(None)
                }
            },
        };
        let now_ms =
            u64::try_from(started.duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX);
        match self.rrl.check(src, now_ms) {
            RateDecision::Pass => {}
            RateDecision::Slip => {
                self.metrics.record_rate_limited(true);
                return match parse(query).and_then(|p| truncated_answer(query, p.name_end + 4, out))
                {
                    Some(n) => FastOutcome::Reply(n),
                    None => FastOutcome::Drop,
                };
            }
            RateDecision::Drop => {
                self.metrics.record_rate_limited(false);
                return FastOutcome::Drop;
            }
        }
        let Some(parsed) = parse(query) else {
            return FastOutcome::Slow(None);
        };
        let qtype = QtypeClass::of(RecordType::from(parsed.qtype));
        if !policy.admit(unix_secs) {
            self.metrics.record_account_limited();
            self.metrics.record_query(
                Proto::Udp,
                qtype,
                Outcome::Refused,
                started.elapsed().as_secs_f64(),
            );
            return match refused_answer(query, parsed.name_end + 4, out) {
                Some(n) => FastOutcome::Reply(n),
                None => FastOutcome::Drop,
            };
        }
        // The packet cache first: entries are only ever filled for names the policy allowed,
        // keyed by the policy's revision (rebuilt on every edit of the account and every
        // catalog swap), so a hit is that same verdict without the walk through the lists
        // (an fst walk is a chain of cache misses; a hit costs one or two).
        let mut flags = 0;
        if parsed.edns_payload.is_some() {
            flags |= KEY_EDNS;
        }
        if parsed.dnssec_ok {
            flags |= KEY_DO;
        }
        let key = FillKey {
            policy: policy.id.0,
            revision: policy.revision,
            flags,
        };
        let now = started.duration_since(self.epoch).as_secs();
        match self.cache.serve(key, query, &parsed, now, out) {
            Some(Hit {
                len,
                fresh: true,
                overridden,
            }) => {
                policy.counters.record_allowed(overridden);
                self.metrics.record_cache(true);
                self.metrics.record_query(
                    Proto::Udp,
                    qtype,
                    Outcome::Allowed,
                    started.elapsed().as_secs_f64(),
                );
                return FastOutcome::Reply(len);
            }
            Some(Hit {
                len,
                fresh: false,
                overridden,
            }) => {
                return FastOutcome::Stale {
                    key: key.overridden(overridden),
                    len,
                };
            }
            None => {}
        }
        // Then a blocked name's remembered verdict (same revision rule), else the walk. Half
        // the names a filtering resolver answers are blocked, and with their walk skipped a
        // query at saturation costs ~5.4 µs instead of ~7 (one core, the 753k-name union).
        let name = &query[HEADER..parsed.name_end];
        let list = if let Some(list) = self.cache.verdict(key, name) {
            list
        } else {
            match snapshot.decide_labels_rev(policy, parsed.labels_rev(query)) {
                Verdict::Block { by } => {
                    self.cache
                        .insert_verdict(key, name, by.list, now, self.block_ttl);
                    by.list
                }
                verdict => {
                    let key = key.overridden(matches!(verdict, Verdict::Allowed { .. }));
                    return FastOutcome::Slow(self.cache.enabled().then_some(key));
                }
            }
        };
        let Some(n) = self.blocked(query, &parsed, &snapshot, policy, list, out) else {
            return FastOutcome::Slow(None);
        };
        policy.counters.record_blocked(list);
        self.store.sample_blocked(BlockedSample::from_labels_rev(
            policy.id,
            parsed.labels_rev(query),
        ));
        self.metrics.record_query(
            Proto::Udp,
            qtype,
            Outcome::Blocked,
            started.elapsed().as_secs_f64(),
        );
        FastOutcome::Reply(n)
    }

    /// Stores the hickory path's `answer` to a query the fast path handed over with `key`
    /// when it is cacheable (NOERROR/NXDOMAIN, no TC, every record with a TTL > 0).
    pub fn fill(&mut self, key: FillKey, answer: &[u8]) {
        let now = self.now_secs();
        self.cache.insert(key, answer, now);
    }

    /// Entries in the packet cache (tests and metrics).
    pub fn cache_len(&self) -> usize {
        self.cache.len
    }

    /// Writes the block answer; `None` when it does not fit the client's limit.
    fn blocked(
        &self,
        query: &[u8],
        parsed: &Parsed,
        snapshot: &PolicySnapshot,
        policy: &AccountPolicy,
        list: ListRef,
        out: &mut [u8],
    ) -> Option<usize> {
        let ttl = self.block_ttl;
        let limit = parsed.limit().min(out.len());
        let mut w = Writer {
            buf: &mut out[..limit],
            pos: 0,
        };
        let question = &query[HEADER..parsed.name_end + 4];
        let v4;
        let v6;
        let (rcode, address): (u8, Option<&[u8]>) = match (policy.block_mode, parsed.qtype) {
            (BlockMode::Nxdomain, _) => (3, None),
            (BlockMode::Refused, _) => (5, None),
            (BlockMode::NullIp, 1) => (0, Some(&[0u8; 4][..])),
            (BlockMode::NullIp, 28) => (0, Some(&[0u8; 16][..])),
            (BlockMode::CustomIp { v4: Some(ip), .. }, 1) => {
                v4 = ip.octets();
                (0, Some(&v4[..]))
            }
            (BlockMode::CustomIp { v6: Some(ip), .. }, 28) => {
                v6 = ip.octets();
                (0, Some(&v6[..]))
            }
            _ => (0, None),
        };
        let soa = rcode != 5 && address.is_none();
        let edns = parsed.answer_payload();
        // Header: the id, QR, the query's opcode and RD, RA; CD copied; the rcode.
        w.put(&query[0..2])?;
        w.put(&[0x80 | (query[2] & 0x79), 0x80 | (query[3] & 0x10) | rcode])?;
        w.put(&[0, 1, 0, u8::from(address.is_some()), 0, u8::from(soa)])?;
        w.put(&[0, u8::from(edns.is_some())])?;
        w.put(question)?;
        if let Some(addr) = address {
            w.put(&[0xc0, 0x0c])?;
            w.put(&parsed.qtype.to_be_bytes())?;
            w.put(&CLASS_IN.to_be_bytes())?;
            w.put(&ttl.to_be_bytes())?;
            w.put(&u16::try_from(addr.len()).ok()?.to_be_bytes())?;
            w.put(addr)?;
        }
        if soa {
            w.put(&[0xc0, 0x0c])?;
            w.put(&TYPE_SOA.to_be_bytes())?;
            w.put(&CLASS_IN.to_be_bytes())?;
            w.put(&ttl.to_be_bytes())?;
            let rdlen = SOA_MNAME.len() + SOA_RNAME.len() + 20;
            w.put(&u16::try_from(rdlen).ok()?.to_be_bytes())?;
            w.put(SOA_MNAME)?;
            w.put(SOA_RNAME)?;
            for v in [1u32, 1800, 900, 604_800, ttl] {
                w.put(&v.to_be_bytes())?;
            }
        }
        if let Some(payload) = edns {
            let text = ede_text(snapshot, list).as_bytes();
            let option_len = u16::try_from(2 + text.len()).ok()?;
            w.put(&[0])?;
            w.put(&TYPE_OPT.to_be_bytes())?;
            w.put(&payload.to_be_bytes())?;
            // Extended rcode, version 0, the DO bit copied (RFC 3225 §3), the other flags 0.
            w.put(&[0, 0, if parsed.dnssec_ok { 0x80 } else { 0 }, 0])?;
            w.put(&(option_len + 4).to_be_bytes())?;
            w.put(&EDE_OPTION_CODE.to_be_bytes())?;
            w.put(&option_len.to_be_bytes())?;
            w.put(&EDE_BLOCKED.to_be_bytes())?;
            w.put(text)?;
        }
        Some(w.pos)
    }
}

/// Seconds of Unix time: the window of the accounts' query-rate limits, the same for every
/// worker and the hickory path (a vDSO clock read, no system call).
pub(crate) fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The EDE extra text of a block by `list`, on both paths: the category's name or the own list.
pub(crate) fn ede_text(snapshot: &PolicySnapshot, list: ListRef) -> &str {
    match list {
        ListRef::Category(c) => snapshot
            .catalog
            .categories()
            .get(usize::from(c))
            .map_or("category", |info| info.name.as_str()),
        ListRef::OwnBlock => "own block list",
        ListRef::OwnAllow => "",
    }
}

/// A bounds-checked cursor over the output buffer.
struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.pos + bytes.len();
        self.buf.get_mut(self.pos..end)?.copy_from_slice(bytes);
        self.pos = end;
        Some(())
    }
}

/// One cached answer packed in a single allocation: a fixed head (offsets `E_*`), the TTL
/// patch points (offset `u16`, original TTL `u32`), the owner-name patch points (offset
/// `u16`), then the wire answer as the hickory path sent it. A boxed struct with three boxed
/// slices cost ~280 bytes per A answer in four allocations; this is ~110 in one, which is most
/// of a resolver's memory after its lists.
#[derive(Debug)]
struct Entry(Box<[u8]>);

const E_HASH: usize = 0;
const E_POLICY: usize = 8;
const E_REVISION: usize = 16;
/// Seconds since the fast path's epoch (`u32`: 136 years).
const E_INSERTED: usize = 24;
const E_EXPIRES: usize = 28;
const E_QTYPE: usize = 32;
const E_FLAGS: usize = 34;
const E_NAME_LEN: usize = 35;
const E_TTLS: usize = 36;
const E_NAMES: usize = 37;
/// Offset of the OPT's payload field in the answer; 0: no OPT (the header is there).
const E_OPT: usize = 38;
/// 0: a cached answer; else a blocked name's verdict ([`list_code`]), whose "wire" is only a
/// zero header and the name (the block answer is written again for each query).
const E_BLOCKED: usize = 40;
const E_HEAD: usize = 41;
const TTL_PATCH: usize = 6;
const NAME_PATCH: usize = 2;

fn read<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

impl Entry {
    /// Packs a scanned answer with its key and times.
    fn pack(scan: &Scanned, answer: &[u8], hash: u64, key: FillKey, now: u32) -> Self {
        let ttls = &scan.ttls[..scan.n_ttls];
        let names = &scan.names[..scan.n_names];
        let mut b = Vec::with_capacity(
            E_HEAD + ttls.len() * TTL_PATCH + names.len() * NAME_PATCH + answer.len(),
        );
        b.extend_from_slice(&hash.to_le_bytes());
        b.extend_from_slice(&key.policy.to_le_bytes());
        b.extend_from_slice(&key.revision.to_le_bytes());
        b.extend_from_slice(&now.to_le_bytes());
        b.extend_from_slice(&now.saturating_add(scan.min_ttl).to_le_bytes());
        b.extend_from_slice(&scan.qtype.to_le_bytes());
        // Both counts are at most MAX_PATCHES and a name at most 255 octets (scan_answer).
        #[allow(clippy::cast_possible_truncation)]
        b.extend_from_slice(&[
            key.flags,
            scan.name_len as u8,
            ttls.len() as u8,
            names.len() as u8,
        ]);
        b.extend_from_slice(&scan.opt_payload.unwrap_or(0).to_le_bytes());
        b.push(0);
        for &(at, ttl) in ttls {
            b.extend_from_slice(&at.to_le_bytes());
            b.extend_from_slice(&ttl.to_le_bytes());
        }
        for &at in names {
            b.extend_from_slice(&at.to_le_bytes());
        }
        b.extend_from_slice(answer);
        Self(b.into_boxed_slice())
    }

    /// A blocked name's verdict under `key` (its policy and revision), kept for `ttl` seconds:
    /// the head, a zero header and the name as the query spelled it.
    fn pack_blocked(name: &[u8], hash: u64, key: FillKey, code: u8, now: u32, ttl: u32) -> Self {
        let mut b = Vec::with_capacity(E_HEAD + HEADER + name.len());
        b.extend_from_slice(&hash.to_le_bytes());
        b.extend_from_slice(&key.policy.to_le_bytes());
        b.extend_from_slice(&key.revision.to_le_bytes());
        b.extend_from_slice(&now.to_le_bytes());
        b.extend_from_slice(&now.saturating_add(ttl.max(1)).to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        // A question name is at most 255 octets (parse).
        #[allow(clippy::cast_possible_truncation)]
        b.extend_from_slice(&[key.flags, name.len() as u8, 0, 0, 0, 0, code]);
        b.extend_from_slice(&[0; HEADER]);
        b.extend_from_slice(name);
        Self(b.into_boxed_slice())
    }

    fn hash(&self) -> u64 {
        u64::from_le_bytes(read(&self.0, E_HASH))
    }

    /// The list that blocked the name, for a blocked name's entry.
    fn blocked_by(&self) -> Option<ListRef> {
        list_of_code(self.0[E_BLOCKED])
    }

    fn key(&self) -> FillKey {
        FillKey {
            policy: u64::from_le_bytes(read(&self.0, E_POLICY)),
            revision: u64::from_le_bytes(read(&self.0, E_REVISION)),
            flags: self.0[E_FLAGS],
        }
    }

    fn inserted(&self) -> u64 {
        u64::from(u32::from_le_bytes(read(&self.0, E_INSERTED)))
    }

    fn expires(&self) -> u64 {
        u64::from(u32::from_le_bytes(read(&self.0, E_EXPIRES)))
    }

    fn qtype(&self) -> u16 {
        u16::from_le_bytes(read(&self.0, E_QTYPE))
    }

    fn name_len(&self) -> usize {
        usize::from(self.0[E_NAME_LEN])
    }

    fn opt_payload(&self) -> Option<usize> {
        let at = usize::from(u16::from_le_bytes(read(&self.0, E_OPT)));
        (at != 0).then_some(at)
    }

    /// `(offset, original TTL)` of every TTL field.
    fn ttl_patches(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        let n = usize::from(self.0[E_TTLS]);
        self.0[E_HEAD..E_HEAD + n * TTL_PATCH]
            .chunks_exact(TTL_PATCH)
            .map(|p| {
                (
                    usize::from(u16::from_le_bytes(read(p, 0))),
                    u32::from_le_bytes(read(p, 2)),
                )
            })
    }

    /// Offsets of owner names spelled like the question.
    fn name_patches(&self) -> impl Iterator<Item = usize> + '_ {
        let start = E_HEAD + usize::from(self.0[E_TTLS]) * TTL_PATCH;
        let n = usize::from(self.0[E_NAMES]);
        self.0[start..start + n * NAME_PATCH]
            .chunks_exact(NAME_PATCH)
            .map(|p| usize::from(u16::from_le_bytes(read(p, 0))))
    }

    /// The wire answer.
    fn wire(&self) -> &[u8] {
        let start = E_HEAD
            + usize::from(self.0[E_TTLS]) * TTL_PATCH
            + usize::from(self.0[E_NAMES]) * NAME_PATCH;
        &self.0[start..]
    }
}

/// A fixed-size, set-associative cache owned by one worker: no lock; lookups allocate nothing.
/// It holds the hickory path's answers to allowed names and, in the same slots, which list
/// blocked a name ([`PacketCache::verdict`]: one entry per name, whatever the type).
///
/// Each key has two candidate buckets of [`WAYS`] slots (from two halves of its hash) and is
/// stored in the one with room ("two choices"). With one bucket per key, 50k answers in the
/// 131,072 slots of the default 100k-entry cache overflowed ~2 % of buckets: 3 % of the
/// allowed names of the side-by-side run evicted each other on every pass and went to the
/// hickory path (~580 hand-overs a second at 40k QPS, each ~50x a fast answer's cost). With
/// two choices an overflow needs both buckets full.
#[derive(Debug)]
struct PacketCache {
    slots: Box<[Option<Entry>]>,
    /// Per slot, the [`tag_of`] its entry's hash (0: empty). A lookup reads the tags of its
    /// buckets, contiguous, and follows only a matching slot's pointer: probing the entries
    /// themselves was one cache miss per occupied way (9 % of the fast path's CPU at 40k QPS).
    tags: Box<[u32]>,
    mask: usize,
    len: usize,
    /// Seconds past its expiry an entry is kept to be served stale (0: never).
    stale_window: u64,
}

/// A packet cache answer written to the output buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hit {
    /// Its length.
    len: usize,
    /// Within its TTL: send it; else expired but within the stale window: send it only if
    /// the upstreams fail.
    fresh: bool,
    /// An exception rule allowed the name ([`ENTRY_OVERRIDDEN`]).
    overridden: bool,
}

/// FNV-1a over the lower-cased name, then the type (a hash, not a defence: the key is compared).
fn key_hash(name: &[u8], qtype: u16, key: FillKey) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name.iter().chain(&qtype.to_be_bytes()).chain(&[key.flags]) {
        h ^= u64::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ key.policy.rotate_left(17) ^ key.revision.rotate_left(41)
}

/// The slot tag of a hash: 32 bits other than the bucket indices' (never 0, the empty tag).
fn tag_of(hash: u64) -> u32 {
    // The high half of a multiplicative remix: every bit of the hash moves it.
    #[allow(clippy::cast_possible_truncation)]
    let tag = (hash.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32;
    tag | 1
}

impl PacketCache {
    fn new(entries: usize, stale_window: u64) -> Self {
        if entries == 0 {
            return Self {
                slots: Box::new([]),
                tags: Box::new([]),
                mask: 0,
                len: 0,
                stale_window,
            };
        }
        let size = entries.next_power_of_two().max(WAYS);
        let mut slots = Vec::with_capacity(size);
        slots.resize_with(size, || None);
        Self {
            slots: slots.into_boxed_slice(),
            tags: vec![0; size].into_boxed_slice(),
            mask: size - 1,
            len: 0,
            stale_window,
        }
    }

    fn enabled(&self) -> bool {
        !self.slots.is_empty()
    }

    /// The key's two candidate buckets (the same one when the table is a single bucket).
    fn buckets(&self, hash: u64) -> [std::ops::Range<usize>; 2] {
        let at = |h: u64| {
            // The mask keeps the value below the slot count, which is a usize.
            #[allow(clippy::cast_possible_truncation)]
            let start = (h as usize) & self.mask & !(WAYS - 1);
            start..start + WAYS
        };
        [at(hash), at(hash.rotate_right(32))]
    }

    /// Whether `e` is the entry of this lookup; `verdict`: a blocked name's entry is wanted,
    /// not an answer.
    fn matches(e: &Entry, hash: u64, key: FillKey, qtype: u16, name: &[u8], verdict: bool) -> bool {
        e.hash() == hash
            && (e.0[E_BLOCKED] != 0) == verdict
            && e.key().with_lookup_flags() == key.with_lookup_flags()
            && e.qtype() == qtype
            && e.name_len() == name.len()
            && e.wire()[HEADER..HEADER + name.len()].eq_ignore_ascii_case(name)
    }

    /// Writes the cached answer to `query` into `out`, patched (TTLs lowered by its age, or
    /// [`STALE_TTL`] when stale); `None` on a miss, an entry past its stale window, or an answer
    /// larger than the client takes.
    fn serve(
        &self,
        key: FillKey,
        query: &[u8],
        parsed: &Parsed,
        now: u64,
        out: &mut [u8],
    ) -> Option<Hit> {
        let name = &query[HEADER..parsed.name_end];
        let hash = key_hash(name, parsed.qtype, key.with_lookup_flags());
        let entry = self.lookup(hash, key, parsed.qtype, name, false)?;
        let expires = entry.expires();
        let fresh = now < expires;
        let wire = entry.wire();
        if !fresh && now >= expires.saturating_add(self.stale_window)
            || wire.len() > parsed.limit().min(out.len())
        {
            return None;
        }
        let n = wire.len();
        let out = &mut out[..n];
        out.copy_from_slice(wire);
        out[0..2].copy_from_slice(&query[0..2]);
        out[2] = (out[2] & !0x01) | (query[2] & 0x01);
        out[3] = (out[3] & !0x10) | (query[3] & 0x10);
        out[HEADER..parsed.name_end].copy_from_slice(name);
        for at in entry.name_patches() {
            out[at..at + name.len()].copy_from_slice(name);
        }
        let age = now.saturating_sub(entry.inserted());
        for (at, ttl) in entry.ttl_patches() {
            let ttl = if fresh {
                u32::try_from(u64::from(ttl).saturating_sub(age)).unwrap_or(0)
            } else {
                STALE_TTL
            };
            out[at..at + 4].copy_from_slice(&ttl.to_be_bytes());
        }
        if let (Some(at), Some(payload)) = (entry.opt_payload(), parsed.answer_payload()) {
            out[at..at + 2].copy_from_slice(&payload.to_be_bytes());
        }
        Some(Hit {
            len: n,
            fresh,
            overridden: entry.key().flags & ENTRY_OVERRIDDEN != 0,
        })
    }

    fn insert(&mut self, key: FillKey, answer: &[u8], now: u64) {
        if !self.enabled() {
            return;
        }
        let Some(scan) = scan_answer(answer) else {
            return;
        };
        let name = &answer[HEADER..HEADER + scan.name_len];
        let hash = key_hash(name, scan.qtype, key.with_lookup_flags());
        let victim = self.victim(hash, now, |e| {
            Self::matches(e, hash, key, scan.qtype, name, false)
        });
        let now = u32::try_from(now).unwrap_or(u32::MAX);
        self.put(victim, hash, Entry::pack(&scan, answer, hash, key, now));
    }

    /// The key of a blocked name's verdict: the policy and its revision, no query bits (the
    /// verdict is the name's, whatever the type and EDNS; the answer is written per query).
    fn verdict_key(key: FillKey) -> FillKey {
        FillKey { flags: 0, ..key }
    }

    /// The list that blocked `name` under `key`'s policy revision, if this worker walked it
    /// before. The revision changes with every edit of the account and every catalog swap,
    /// so a remembered verdict is the one the walk would give.
    fn verdict(&self, key: FillKey, name: &[u8]) -> Option<ListRef> {
        let key = Self::verdict_key(key);
        let hash = key_hash(name, 0, key);
        self.lookup(hash, key, 0, name, true)?.blocked_by()
    }

    /// The entry of a lookup (see [`Self::matches`]): only slots whose tag matches are followed.
    fn lookup(
        &self,
        hash: u64,
        key: FillKey,
        qtype: u16,
        name: &[u8],
        verdict: bool,
    ) -> Option<&Entry> {
        if !self.enabled() {
            return None;
        }
        let tag = tag_of(hash);
        self.buckets(hash)
            .into_iter()
            .flatten()
            .filter(|&i| self.tags[i] == tag)
            .filter_map(|i| self.slots[i].as_ref())
            .find(|e| Self::matches(e, hash, key, qtype, name, verdict))
    }

    /// Remembers that `list` blocks `name` under `key`'s policy revision; the entry counts as
    /// live for `ttl` seconds (the block answer's TTL) when a slot is wanted.
    fn insert_verdict(&mut self, key: FillKey, name: &[u8], list: ListRef, now: u64, ttl: u32) {
        let Some(code) = list_code(list) else {
            return;
        };
        if !self.enabled() || name.len() > usize::from(u8::MAX) {
            return;
        }
        let key = Self::verdict_key(key);
        let hash = key_hash(name, 0, key);
        let victim = self.victim(hash, now, |e| Self::matches(e, hash, key, 0, name, true));
        let now = u32::try_from(now).unwrap_or(u32::MAX);
        self.put(
            victim,
            hash,
            Entry::pack_blocked(name, hash, key, code, now, ttl),
        );
    }

    /// The slot for an entry of `hash`: the same key's (`same`, a refresh); else a free or
    /// dead slot of the emptier bucket; else, both buckets full of live entries, the one
    /// expiring first of the eight.
    fn victim(&self, hash: u64, now: u64, same: impl Fn(&Entry) -> bool) -> usize {
        let stale_window = self.stale_window;
        let [first, second] = self.buckets(hash);
        let slots = &self.slots;
        let live = |i: &usize| {
            slots[*i]
                .as_ref()
                .is_some_and(|e| e.expires().saturating_add(stale_window) > now)
        };
        let candidates = || first.clone().chain(second.clone());
        let same = candidates().find(|&i| slots[i].as_ref().is_some_and(&same));
        let free = || {
            let busy = |b: &std::ops::Range<usize>| b.clone().filter(|i| live(i)).count();
            let (a, b) = if busy(&second) < busy(&first) {
                (second.clone(), first.clone())
            } else {
                (first.clone(), second.clone())
            };
            a.chain(b).find(|i| !live(i))
        };
        same.or_else(free)
            .or_else(|| candidates().min_by_key(|&i| slots[i].as_ref().map_or(0, Entry::expires)))
            .unwrap_or(first.start)
    }

    fn put(&mut self, victim: usize, hash: u64, entry: Entry) {
        if self.slots[victim].is_none() {
            self.len += 1;
        }
        self.slots[victim] = Some(entry);
        self.tags[victim] = tag_of(hash);
    }
}

/// A blocking list as one byte of a cache entry (0 is an answer's): a category's index plus
/// one, or 255 for the account's own block list.
fn list_code(list: ListRef) -> Option<u8> {
    match list {
        ListRef::Category(c) => c.checked_add(1).filter(|&code| code != u8::MAX),
        ListRef::OwnBlock => Some(u8::MAX),
        ListRef::OwnAllow => None,
    }
}

fn list_of_code(code: u8) -> Option<ListRef> {
    match code {
        0 => None,
        u8::MAX => Some(ListRef::OwnBlock),
        c => Some(ListRef::Category(c - 1)),
    }
}

/// What [`scan_answer`] finds in a cacheable answer: where to patch it, on the stack.
struct Scanned {
    qtype: u16,
    /// Length of the question name (the name is the answer's bytes at 12..12+name_len).
    name_len: usize,
    /// The smallest TTL of the records (the entry's lifetime).
    min_ttl: u32,
    ttls: [(u16, u32); MAX_PATCHES],
    n_ttls: usize,
    names: [u16; MAX_PATCHES],
    n_names: usize,
    opt_payload: Option<u16>,
}

/// Reads a hickory answer: cacheable only with one question, NOERROR/NXDOMAIN, no TC, a
/// positive smallest TTL, and few enough patch points.
fn scan_answer(answer: &[u8]) -> Option<Scanned> {
    if answer.len() < HEADER || answer.len() > usize::from(u16::MAX) {
        return None;
    }
    let rcode = answer[3] & 0x0f;
    let tc = answer[2] & 0x02 != 0;
    let count = |i: usize| usize::from(u16::from_be_bytes([answer[4 + 2 * i], answer[5 + 2 * i]]));
    if tc || !(rcode == 0 || rcode == 3) || count(0) != 1 {
        return None;
    }
    let mut pos = HEADER;
    loop {
        let len = usize::from(*answer.get(pos)?);
        if len == 0 {
            pos += 1;
            break;
        }
        if len > 63 {
            return None;
        }
        pos += 1 + len;
    }
    let name_len = pos - HEADER;
    let name = answer.get(HEADER..pos)?;
    if name_len > usize::from(u8::MAX) {
        return None;
    }
    let qtype = u16::from_be_bytes([*answer.get(pos)?, *answer.get(pos + 1)?]);
    pos += 4;
    let mut scan = Scanned {
        qtype,
        name_len,
        min_ttl: u32::MAX,
        ttls: [(0, 0); MAX_PATCHES],
        n_ttls: 0,
        names: [0; MAX_PATCHES],
        n_names: 0,
        opt_payload: None,
    };
    for _ in 0..count(1) + count(2) + count(3) {
        let owner = pos;
        // Owner name: labels, ending at a root label or a compression pointer.
        loop {
            let len = *answer.get(pos)?;
            if len & 0xc0 == 0xc0 {
                pos += 2;
                break;
            }
            if len == 0 {
                pos += 1;
                break;
            }
            if len > 63 {
                return None;
            }
            pos += 1 + usize::from(len);
        }
        if pos - owner == name_len && answer.get(owner..pos)?.eq_ignore_ascii_case(name) {
            *scan.names.get_mut(scan.n_names)? = u16::try_from(owner).ok()?;
            scan.n_names += 1;
        }
        let fixed = answer.get(pos..pos + 10)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        if rtype == TYPE_OPT {
            scan.opt_payload = Some(u16::try_from(pos + 2).ok()?);
        } else {
            scan.min_ttl = scan.min_ttl.min(ttl);
            *scan.ttls.get_mut(scan.n_ttls)? = (u16::try_from(pos + 4).ok()?, ttl);
            scan.n_ttls += 1;
        }
        pos += 10 + rdlen;
    }
    if pos != answer.len()
        || scan.min_ttl == 0
        || scan.min_ttl == u32::MAX
        || scan.n_ttls + scan.n_names > MAX_PATCHES
    {
        return None;
    }
    Some(scan)
}

/// The FORMERR hickory-server sends to a query whose header reads but whose body does not:
/// the id, QR, the opcode, RD and CD copied, no sections.
pub(crate) fn formerr(query: &[u8], out: &mut [u8; HEADER]) -> Option<()> {
    let head = query.get(..HEADER)?;
    out.fill(0);
    out[0..2].copy_from_slice(&head[0..2]);
    out[2] = 0x80 | (head[2] & 0x79);
    out[3] = (head[3] & 0x10) | 1;
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[&str], qtype: u16, edns: Option<u16>) -> Vec<u8> {
        let mut q = vec![
            0x12,
            0x34,
            0x01,
            0x00,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            u8::from(edns.is_some()),
        ];
        for l in name {
            q.push(u8::try_from(l.len()).expect("label"));
            q.extend_from_slice(l.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        if let Some(p) = edns {
            q.extend_from_slice(&[0, 0, 41]);
            q.extend_from_slice(&p.to_be_bytes());
            q.extend_from_slice(&[0, 0, 0x80, 0, 0, 0]);
        }
        q
    }

    #[test]
    fn parse_reads_the_question_and_the_opt() {
        let q = query(&["WWW", "example", "com"], 28, Some(4096));
        let p = parse(&q).expect("parsed");
        assert_eq!(p.qtype, 28);
        assert_eq!(p.edns_payload, Some(4096));
        assert!(p.dnssec_ok);
        assert_eq!(p.limit(), 1232);
        let labels: Vec<&[u8]> = p.labels_rev(&q).collect();
        assert_eq!(labels, vec![&b"com"[..], b"example", b"WWW"]);
    }

    #[test]
    fn parse_refuses_what_the_hickory_path_must_answer() {
        let mut q = query(&["a", "test"], 1, None);
        q[5] = 2; // two questions
        assert!(parse(&q).is_none());
        let mut q = query(&["a", "test"], 1, None);
        q[2] |= 0x10; // opcode 2
        assert!(parse(&q).is_none());
        let mut q = query(&["a", "test"], 1, None);
        q.push(0); // trailing byte
        assert!(parse(&q).is_none());
        let mut q = query(&["a", "test"], 1, Some(1232));
        let v = q.len() - 5;
        q[v] = 1; // EDNS version 1
        assert!(parse(&q).is_none());
        let mut q = query(&["a", "test"], 1, None);
        q[12] = 0xc0; // compression pointer in the question
        assert!(parse(&q).is_none());
    }

    #[test]
    fn parse_takes_names_of_255_octets_and_not_256() {
        // 63 + 63 + 63 + 61 bytes, four length bytes and the root: 255 octets.
        let (a, b, c) = ("a".repeat(63), "b".repeat(63), "c".repeat(63));
        let q = query(&[&a, &b, &c, "d".repeat(61).as_str()], 1, None);
        assert_eq!(parse(&q).expect("a 255-octet name").name_end, HEADER + 255);
        let q = query(&[&a, &b, &c, "d".repeat(62).as_str()], 1, None);
        assert!(
            parse(&q).is_none(),
            "a 256-octet name goes to the hickory path"
        );
    }

    #[test]
    fn formerr_copies_id_opcode_rd_and_cd() {
        let mut out = [0u8; HEADER];
        formerr(&[0xab, 0xcd, 0x01, 0x10, 0, 0, 0, 0, 0, 0, 0, 0], &mut out).expect("header");
        assert_eq!(out, [0xab, 0xcd, 0x81, 0x11, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    /// The query `q` answered with one A record of TTL 300 (and the OPT when `q` has one).
    fn a_answer(q: &[u8]) -> Vec<u8> {
        let p = parse(q).expect("parsed");
        let mut a = q[..p.name_end + 4].to_vec();
        a[2] |= 0x80;
        a[7] = 1;
        a.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x01, 0x2c, 0, 4, 192, 0, 2, 1]);
        a.extend_from_slice(&q[p.name_end + 4..]);
        a
    }

    #[test]
    fn a_cache_half_full_serves_every_answer_it_took() {
        // 1,024 slots (256 buckets of 4) and 512 answers: with one bucket per key some
        // buckets overflow (a Poisson(2) bucket holds 5 or more 5 % of the time) and evict
        // answers that still fit in the table; with two candidate buckets none is lost.
        let mut cache = PacketCache::new(1024, 0);
        let key = FillKey {
            policy: 1,
            revision: 1,
            flags: 0,
        };
        let names: Vec<String> = (0..512).map(|i| format!("host{i}")).collect();
        for n in &names {
            cache.insert(key, &a_answer(&query(&[n, "example", "com"], 1, None)), 10);
        }
        assert_eq!(cache.len, 512);
        let mut out = [0u8; 512];
        let served = names
            .iter()
            .filter(|n| {
                let q = query(&[n, "example", "com"], 1, None);
                let p = parse(&q).expect("parsed");
                matches!(
                    cache.serve(key, &q, &p, 11, &mut out),
                    Some(Hit { fresh: true, .. })
                )
            })
            .count();
        assert_eq!(served, 512);
        // A refresh of a cached key replaces it instead of taking a second slot.
        cache.insert(
            key,
            &a_answer(&query(&["host7", "example", "com"], 1, None)),
            20,
        );
        assert_eq!(cache.len, 512);
    }

    #[test]
    fn a_cached_answer_is_one_small_allocation_patched_for_each_client() {
        let mut cache = PacketCache::new(16, 0);
        let key = FillKey {
            policy: 7,
            revision: 3,
            flags: KEY_EDNS,
        };
        let q = query(&["www", "example", "com"], 1, Some(1232));
        let answer = a_answer(&q);
        cache.insert(key, &answer, 10);
        assert_eq!(cache.len, 1);
        let entry = cache.slots.iter().flatten().next().expect("cached");
        // Head, one TTL patch, the answer: about half what four allocations took.
        assert_eq!(entry.0.len(), E_HEAD + TTL_PATCH + answer.len());
        assert!(entry.0.len() < 120, "{} bytes", entry.0.len());

        // Another client, other id and case, 100 s later: its id and case, TTL 200.
        let mut q2 = query(&["WWW", "Example", "com"], 1, Some(1232));
        q2[0..2].copy_from_slice(&[0xbe, 0xef]);
        let p2 = parse(&q2).expect("parsed");
        let mut out = [0u8; 512];
        let hit = cache.serve(key, &q2, &p2, 110, &mut out);
        assert_eq!(
            hit,
            Some(Hit {
                len: answer.len(),
                fresh: true,
                overridden: false
            })
        );
        assert_eq!(&out[0..2], &[0xbe, 0xef]);
        assert_eq!(&out[HEADER..p2.name_end], &q2[HEADER..p2.name_end]);
        let ttl_at = p2.name_end + 4 + 6;
        assert_eq!(&out[ttl_at..ttl_at + 4], &200u32.to_be_bytes());
        // Another policy revision: a miss.
        let other = FillKey { revision: 4, ..key };
        assert_eq!(cache.serve(other, &q2, &p2, 110, &mut out), None);
        // Past its TTL without a stale window: a miss.
        assert_eq!(cache.serve(key, &q2, &p2, 310, &mut out), None);
    }

    #[test]
    fn an_answer_allowed_by_an_exception_is_found_by_a_lookup_that_does_not_know_it() {
        let mut cache = PacketCache::new(16, 0);
        let key = FillKey {
            policy: 7,
            revision: 3,
            flags: KEY_EDNS,
        };
        let q = query(&["ads", "example", "com"], 1, Some(1232));
        cache.insert(key.overridden(true), &a_answer(&q), 10);
        let p = parse(&q).expect("parsed");
        let mut out = [0u8; 512];
        let hit = cache.serve(key, &q, &p, 11, &mut out).expect("a hit");
        assert!(hit.fresh && hit.overridden, "{hit:?}");
        // The key bits still count: without EDNS it is another entry.
        let plain = FillKey { flags: 0, ..key };
        assert_eq!(cache.serve(plain, &q, &p, 11, &mut out), None);
    }

    #[test]
    fn a_blocked_names_verdict_is_one_entry_for_every_type_and_only_under_its_revision() {
        let mut cache = PacketCache::new(16, 0);
        let key = FillKey {
            policy: 7,
            revision: 3,
            flags: KEY_EDNS | KEY_DO,
        };
        let q = query(&["Ads", "example", "com"], 1, Some(1232));
        let p = parse(&q).expect("parsed");
        let name = &q[HEADER..p.name_end];
        cache.insert_verdict(key, name, ListRef::Category(4), 10, 300);
        assert_eq!(cache.len, 1);
        // Another type, no EDNS, other case: the same verdict, from the same entry.
        let plain = FillKey { flags: 0, ..key };
        let aaaa = query(&["ads", "EXAMPLE", "com"], 28, None);
        let pa = parse(&aaaa).expect("parsed");
        assert_eq!(
            cache.verdict(plain, &aaaa[HEADER..pa.name_end]),
            Some(ListRef::Category(4))
        );
        // Past the block TTL the verdict still holds (it is the revision's), though its slot
        // may be taken.
        assert_eq!(cache.verdict(key, name), Some(ListRef::Category(4)));
        // Another revision or policy: not known.
        assert_eq!(cache.verdict(FillKey { revision: 4, ..key }, name), None);
        assert_eq!(cache.verdict(FillKey { policy: 8, ..key }, name), None);
        // A verdict is no answer, and an answer no verdict: both can be cached for a name.
        let mut out = [0u8; 512];
        assert_eq!(cache.serve(key, &q, &p, 11, &mut out), None);
        cache.insert(key, &a_answer(&q), 11);
        assert_eq!(cache.len, 2);
        assert!(cache.serve(key, &q, &p, 12, &mut out).is_some());
        assert_eq!(cache.verdict(key, name), Some(ListRef::Category(4)));
        // A refresh replaces the verdict instead of taking another slot.
        cache.insert_verdict(key, name, ListRef::OwnBlock, 20, 300);
        assert_eq!(cache.len, 2);
        assert_eq!(cache.verdict(key, name), Some(ListRef::OwnBlock));
    }

    #[test]
    fn every_blocking_list_fits_the_entrys_byte_and_reads_back() {
        for list in [
            ListRef::Category(0),
            ListRef::Category(63),
            ListRef::Category(253),
            ListRef::OwnBlock,
        ] {
            assert_eq!(list_code(list).and_then(list_of_code), Some(list));
        }
        assert_eq!(
            list_code(ListRef::Category(254)),
            None,
            "255 is the own list's"
        );
        assert_eq!(
            list_code(ListRef::OwnAllow),
            None,
            "an allow list blocks nothing"
        );
        assert_eq!(list_of_code(0), None, "0 marks an answer");
    }
}
