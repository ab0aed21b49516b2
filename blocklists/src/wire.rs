//! The snapshot wire format: what a resolver node pulls from the control plane
//! (`qorgan resolver --control URL --token T`) and keeps on disk as its last good snapshot.
//!
//! # Layout (version 1; all integers little-endian)
//!
//! ```text
//! header (64 bytes)
//!   0..8    magic            b"QORGSNAP"
//!   8..12   format version   u32 = 1
//!   12..16  reserved         u32 = 0
//!   16..24  generation       u64
//!   24..32  payload length   u64 (exactly the bytes that follow the header)
//!   32..64  SHA-256 of bytes 0..32 followed by the payload
//! payload
//!   catalog hash             u8 length + ASCII (empty, or 64 hex digits)
//!   accounts                 u32 count, then per account (ids unique):
//!     id u64, enabled u8 (0|1)
//!     networks               u32 count; each: family u8 (4|6), 4 or 16 address bytes, prefix u8
//!     categories             u32 count (≤ 64); each: u8 length + name (a-z 0-9 - _, ≤ 32)
//!     block mode             u8: 0 nxdomain, 1 null_ip, 2 refused, 3 custom_ip + u8 flags
//!                            (bit 0: v4 follows, 4 bytes; bit 1: v6 follows, 16 bytes)
//!     own block, own allow   each an own list (below)
//! own list
//!   names                    u32 count; each: u8 bytes shared with the previous key,
//!                            u8 suffix length (≥ 1), the suffix, u8 scope bits (1 self, 2 subdomains, 3 both)
//!   patterns                 u32 count (≤ MAX_PATTERNS); each: u32 length + regex, u32 length + text
//! ```
//!
//! The checksum covers the header fields too, so a flipped generation is caught like a
//! flipped payload byte.
//!
//! # Why own lists travel as rules, not as compiled fst bytes
//!
//! An own list is sent as its canonical content: the reversed keys of its names in increasing
//! order (front-coded: each key stores only what differs from the previous one, so
//! `com.example.a`, `com.example.b` cost a few bytes each) with their scope bits, and its
//! wildcard/regex rules as regex + text. That is lossless — it is exactly what a [`DomainSet`]
//! holds — and a node rebuilds the set from already sorted keys (no sorting, no parsing, no
//! IDNA): a sorted array for lists of up to 4,096 names, one pass of `fst::MapBuilder` above
//! that. Small lists are not fsts because the builder's fixed setup (it allocates and clears
//! a 20,000-cell node registry per build, whatever the key count) cost ~200 µs and heap
//! fragmentation per account (`cargo bench -p qorgan-benches --bench policy`, `--bench wire`).
//! Compiled fst bytes would save that pass but cannot be validated cheaply: the fst library
//! trusts its input and may panic on crafted nodes, and every key and length here is checked
//! instead, so a corrupt or hostile snapshot is an error, never a panic. Pattern rules are
//! recompiled on the node (their DFAs are bounded by [`crate::MAX_PATTERN_DFA_BYTES`]); own
//! lists rarely have any.
//!
//! Categories travel by NAME: the node resolves them against its own catalog, which may be
//! another version. The catalog itself is not in the snapshot: [`SnapshotWire::catalog_hash`]
//! names it, a node that already holds that catalog never fetches it again, and one that does
//! not fetches its `.qcat` bytes ([`crate::Catalog::to_bytes`], checked by
//! [`crate::store_catalog`]).
//!
//! # Hostile input
//!
//! [`decode`] never panics and never allocates more than a small multiple of its input: every
//! count is checked against the bytes that remain before anything is reserved.
//! [`fuzz_decode`] is the entry point for a fuzzer (it also runs the payload parser on the
//! raw input, past the checksum a fuzzer could never forge).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use crate::catalog::MAX_CATEGORIES;
use crate::compile::{is_catalog_hash, is_category_name};
use crate::error::BlocklistError;
use crate::matcher::{check_regex, DomainSet, MAX_PATTERNS};
use crate::name::{MAX_LABEL_LEN, MAX_NAME_LEN};
use crate::policy::{AccountId, BlockMode};

/// The first bytes of every encoded snapshot.
pub const MAGIC: &[u8; 8] = b"QORGSNAP";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 2;
/// The size of the fixed header in front of the payload.
pub const HEADER_LEN: usize = 64;

/// The accounts table of one snapshot generation, as the control plane publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotWire {
    /// The snapshot's generation: increases with every published change.
    pub generation: u64,
    /// [`crate::Catalog::hash`] of the catalog the control plane built this snapshot against
    /// (empty when it has none); a node fetches the catalog only when its own differs.
    pub catalog_hash: String,
    /// Every account with its filter settings; ids are unique.
    pub accounts: Vec<AccountWire>,
}

/// One account's filter as sent to nodes: the same fields as the resolver's `AccountSpec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountWire {
    /// The account.
    pub id: AccountId,
    /// Whether filtering is on.
    pub enabled: bool,
    /// The account's networks (v4 and v6).
    pub networks: Vec<IpNet>,
    /// Enabled categories by name (the node's catalog may number them differently).
    pub categories: Vec<String>,
    /// How blocked names are answered.
    pub block_mode: BlockMode,
    /// The account's own block list.
    pub own_block: DomainSet,
    /// The account's own allow list.
    pub own_allow: DomainSet,
    /// Queries per second its networks may send; 0 = no limit.
    pub qps_limit: u32,
}

/// The fixed header of an encoded snapshot, readable before the payload has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireHeader {
    /// The snapshot's generation.
    pub generation: u64,
    /// The payload's length in bytes (the whole encoding is [`HEADER_LEN`] more).
    pub payload_len: u64,
}

fn err(offset: usize, reason: impl Into<String>) -> BlocklistError {
    BlocklistError::Wire {
        offset,
        reason: reason.into(),
    }
}

// ---- encoding ----

struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// Counts and long strings: u32. Nothing in a snapshot comes near 4 Gi items; an absurd
    /// value would be written as u32::MAX and rejected by the decoder, not wrapped.
    fn count(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    fn short_str(&mut self, s: &str) {
        let n = u8::try_from(s.len()).unwrap_or(u8::MAX);
        self.u8(n);
        self.0
            .extend_from_slice(s.as_bytes().get(..usize::from(n)).unwrap_or_default());
    }
    fn long_str(&mut self, s: &str) {
        self.count(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn own_list(&mut self, set: &DomainSet) {
        let entries = set.entries();
        self.count(entries.len());
        let mut prev: &[u8] = &[];
        for (key, bits) in &entries {
            let shared = prev
                .iter()
                .zip(key.iter())
                .take_while(|(a, b)| a == b)
                .count()
                .min(usize::from(u8::MAX));
            let suffix = key.get(shared..).unwrap_or_default();
            self.u8(u8::try_from(shared).unwrap_or(u8::MAX));
            self.u8(u8::try_from(suffix.len()).unwrap_or(u8::MAX));
            self.0.extend_from_slice(suffix);
            self.u8(u8::try_from(*bits).unwrap_or(u8::MAX));
            prev = key;
        }
        let regexes = set.pattern_regexes();
        let texts = set.patterns();
        self.count(regexes.len());
        for (i, regex) in regexes.iter().enumerate() {
            self.long_str(regex);
            self.long_str(texts.get(i).map_or("", String::as_str));
        }
    }
}

/// Encodes a snapshot: header with generation and checksum, then the payload (see the module
/// docs for the layout). Deterministic: equal snapshots give equal bytes.
pub fn encode(snapshot: &SnapshotWire) -> Vec<u8> {
    let mut w = W(Vec::with_capacity(
        HEADER_LEN + 64 + snapshot.accounts.len() * 64,
    ));
    w.0.extend_from_slice(MAGIC);
    w.u32(FORMAT_VERSION);
    w.u32(0);
    w.u64(snapshot.generation);
    w.u64(0); // payload length, patched below
    w.0.extend_from_slice(&[0u8; 32]); // checksum, patched below
    w.short_str(&snapshot.catalog_hash);
    w.count(snapshot.accounts.len());
    for a in &snapshot.accounts {
        w.u64(a.id.0);
        w.u8(u8::from(a.enabled));
        w.count(a.networks.len());
        for net in &a.networks {
            match net.addr() {
                IpAddr::V4(v4) => {
                    w.u8(4);
                    w.0.extend_from_slice(&v4.octets());
                }
                IpAddr::V6(v6) => {
                    w.u8(6);
                    w.0.extend_from_slice(&v6.octets());
                }
            }
            w.u8(net.prefix_len());
        }
        w.count(a.categories.len());
        for c in &a.categories {
            w.short_str(c);
        }
        match a.block_mode {
            BlockMode::Nxdomain => w.u8(0),
            BlockMode::NullIp => w.u8(1),
            BlockMode::Refused => w.u8(2),
            BlockMode::CustomIp { v4, v6 } => {
                w.u8(3);
                w.u8(u8::from(v4.is_some()) | (u8::from(v6.is_some()) << 1));
                if let Some(v4) = v4 {
                    w.0.extend_from_slice(&v4.octets());
                }
                if let Some(v6) = v6 {
                    w.0.extend_from_slice(&v6.octets());
                }
            }
        }
        w.own_list(&a.own_block);
        w.own_list(&a.own_allow);
        w.u32(a.qps_limit);
    }
    let mut out = w.0;
    let payload_len = (out.len() - HEADER_LEN) as u64;
    out[24..32].copy_from_slice(&payload_len.to_le_bytes());
    let sum = checksum(&out[..32], &out[HEADER_LEN..]);
    out[32..HEADER_LEN].copy_from_slice(&sum);
    out
}

fn checksum(head: &[u8], payload: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(head);
    h.update(payload);
    h.finalize().into()
}

// ---- decoding ----

/// Reads and checks the fixed header (magic, version, reserved bits), without the checksum,
/// which needs the whole payload: lets a node bound a download and skip a generation it has.
pub fn read_header(bytes: &[u8]) -> Result<WireHeader, BlocklistError> {
    let head = bytes.get(..HEADER_LEN).ok_or_else(|| {
        err(
            bytes.len(),
            format!(
                "truncated header: {} of {HEADER_LEN} bytes",
                bytes.len().min(HEADER_LEN)
            ),
        )
    })?;
    if &head[..8] != MAGIC {
        return Err(err(0, "bad magic: not a qorgan snapshot"));
    }
    let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    if version != FORMAT_VERSION {
        return Err(err(
            8,
            format!("format version {version}, this build reads {FORMAT_VERSION}"),
        ));
    }
    if head[12..16] != [0, 0, 0, 0] {
        return Err(err(12, "reserved header bytes are not zero"));
    }
    let mut g = [0u8; 8];
    g.copy_from_slice(&head[16..24]);
    let mut l = [0u8; 8];
    l.copy_from_slice(&head[24..32]);
    Ok(WireHeader {
        generation: u64::from_le_bytes(g),
        payload_len: u64::from_le_bytes(l),
    })
}

/// Decodes and checks a whole encoded snapshot. Rejected with [`BlocklistError::Wire`]:
/// a short or wrong header (magic, version), a length that does not match the bytes, a
/// checksum mismatch, and any payload that breaks the layout (counts beyond the remaining
/// bytes, bad names, duplicate accounts, trailing bytes, ...).
pub fn decode(bytes: &[u8]) -> Result<SnapshotWire, BlocklistError> {
    let header = read_header(bytes)?;
    let payload = &bytes[HEADER_LEN..];
    if header.payload_len != payload.len() as u64 {
        return Err(err(
            24,
            if header.payload_len > payload.len() as u64 {
                format!(
                    "truncated payload: {} of {} bytes",
                    payload.len(),
                    header.payload_len
                )
            } else {
                format!(
                    "{} bytes after the {}-byte payload",
                    payload.len() as u64 - header.payload_len,
                    header.payload_len
                )
            },
        ));
    }
    if checksum(&bytes[..32], payload) != bytes[32..HEADER_LEN] {
        return Err(err(32, "checksum mismatch: the snapshot is corrupt"));
    }
    decode_payload(header.generation, payload)
}

/// The fuzz entry point: decodes `data` as a whole snapshot and also as a bare payload (past
/// the checksum), discarding the results. Must never panic, whatever `data` is.
///
/// ```
/// qorgan_blocklists::wire::fuzz_decode(b"QORGSNAP\x01\0\0\0 any bytes at all");
/// ```
pub fn fuzz_decode(data: &[u8]) {
    let _ = decode(data);
    let _ = decode_payload(0, data);
}

// Smallest encodings, used to cap counts by the bytes that remain.
const MIN_ACCOUNT: usize = 8 + 1 + 4 + 4 + 1 + 2 * MIN_OWN_LIST + 4;
const MIN_OWN_LIST: usize = 4 + 4;
const MIN_NETWORK: usize = 1 + 4 + 1;
const MIN_CATEGORY: usize = 1 + 1;
const MIN_NAME: usize = 1 + 1 + 1 + 1;
const MIN_PATTERN: usize = 4 + 4;

struct Rd<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Rd<'a> {
    fn at(&self) -> usize {
        HEADER_LEN + self.pos
    }
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], BlocklistError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| err(self.at(), format!("truncated {what}")))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8, BlocklistError> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &str) -> Result<u32, BlocklistError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &str) -> Result<u64, BlocklistError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(a))
    }
    /// A count of items of at least `min` bytes each, refused when they cannot fit in what
    /// remains (so no absurd count ever reserves memory).
    fn count(&mut self, min: usize, what: &str) -> Result<usize, BlocklistError> {
        let at = self.at();
        let n = usize::try_from(self.u32(what)?).map_err(|_| err(at, "count overflows"))?;
        if n.checked_mul(min).is_none_or(|b| b > self.remaining()) {
            return Err(err(
                at,
                format!(
                    "{n} {what} cannot fit in the {} bytes left",
                    self.remaining()
                ),
            ));
        }
        Ok(n)
    }
    fn str_of(&mut self, n: usize, what: &str) -> Result<String, BlocklistError> {
        let at = self.at();
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| err(at, format!("{what} is not UTF-8")))
    }
    fn short_str(&mut self, what: &str) -> Result<String, BlocklistError> {
        let n = usize::from(self.u8(what)?);
        self.str_of(n, what)
    }
    fn long_str(&mut self, what: &str) -> Result<String, BlocklistError> {
        let n = self.count(1, what)?;
        self.str_of(n, what)
    }
}

/// Whether `key` is a reversed key of a normalised name: labels of a-z 0-9 - _, none empty,
/// at most 63 bytes each and 253 in all.
fn valid_key(key: &[u8]) -> bool {
    !key.is_empty()
        && key.len() <= MAX_NAME_LEN
        && key.split(|&b| b == b'.').all(|l| {
            !l.is_empty()
                && l.len() <= MAX_LABEL_LEN
                && l.iter().all(|&b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                })
        })
}

fn own_list(r: &mut Rd<'_>, id: AccountId, list: &str) -> Result<DomainSet, BlocklistError> {
    let start = r.at();
    let n = r.count(MIN_NAME, "own list names")?;
    let mut keys: Vec<(Vec<u8>, u64)> = Vec::with_capacity(n);
    let mut prev: Vec<u8> = Vec::new();
    for _ in 0..n {
        let at = r.at();
        let shared = usize::from(r.u8("own list name")?);
        let suffix_len = usize::from(r.u8("own list name")?);
        let suffix = r.take(suffix_len, "own list name")?;
        let bits = r.u8("own list name")?;
        // Canonical front coding only (the shared prefix is the longest one), so that a
        // snapshot has exactly one encoding.
        let maximal = shared == prev.len() || suffix.first() != prev.get(shared);
        if shared > prev.len() || suffix_len == 0 || !maximal {
            return Err(err(at, format!("{id} {list}: bad name encoding")));
        }
        let mut key = Vec::with_capacity(shared + suffix_len);
        key.extend_from_slice(&prev[..shared]);
        key.extend_from_slice(suffix);
        if !valid_key(&key) {
            return Err(err(at, format!("{id} {list}: not a domain name")));
        }
        if key <= prev {
            return Err(err(
                at,
                format!("{id} {list}: names out of order or repeated"),
            ));
        }
        if !(1..=3).contains(&bits) {
            return Err(err(at, format!("{id} {list}: bad scope bits {bits}")));
        }
        prev.clone_from(&key);
        keys.push((key, u64::from(bits)));
    }
    let at = r.at();
    let np = r.count(MIN_PATTERN, "own list patterns")?;
    if np > MAX_PATTERNS {
        return Err(err(
            at,
            format!("{id} {list}: {np} patterns, at most {MAX_PATTERNS}"),
        ));
    }
    let mut regexes = Vec::with_capacity(np);
    let mut texts = Vec::with_capacity(np);
    for _ in 0..np {
        let at = r.at();
        let regex = r.long_str("pattern regex")?;
        check_regex(&regex).map_err(|e| err(at, format!("{id} {list}: bad regex: {e}")))?;
        regexes.push(regex);
        texts.push(r.long_str("pattern text")?);
    }
    DomainSet::from_parts(keys, regexes, texts).map_err(|e| {
        let reason = match e {
            BlocklistError::Patterns { reason } => reason,
            other => other.to_string(),
        };
        err(start, format!("{id} {list}: {reason}"))
    })
}

fn account(r: &mut Rd<'_>) -> Result<AccountWire, BlocklistError> {
    let id = AccountId(r.u64("account id")?);
    let at = r.at();
    let enabled = match r.u8("account")? {
        0 => false,
        1 => true,
        b => return Err(err(at, format!("{id}: enabled flag is {b}, not 0 or 1"))),
    };
    let n = r.count(MIN_NETWORK, "networks")?;
    let mut networks = Vec::with_capacity(n);
    for _ in 0..n {
        let at = r.at();
        let addr = match r.u8("network")? {
            4 => {
                let b = r.take(4, "network")?;
                IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            6 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(r.take(16, "network")?);
                IpAddr::V6(Ipv6Addr::from(a))
            }
            f => return Err(err(at, format!("{id}: address family {f}"))),
        };
        let prefix = r.u8("network")?;
        let net = IpNet::new(addr, prefix)
            .map_err(|_| err(at, format!("{id}: prefix /{prefix} for {addr}")))?;
        networks.push(net);
    }
    let at = r.at();
    let n = r.count(MIN_CATEGORY, "categories")?;
    if n > MAX_CATEGORIES {
        return Err(err(
            at,
            format!("{id}: {n} categories, at most {MAX_CATEGORIES}"),
        ));
    }
    let mut categories = Vec::with_capacity(n);
    for _ in 0..n {
        let at = r.at();
        let name = r.short_str("category name")?;
        if !is_category_name(&name) {
            return Err(err(at, format!("{id}: `{name}` is not a category name")));
        }
        categories.push(name);
    }
    let at = r.at();
    let block_mode = match r.u8("block mode")? {
        0 => BlockMode::Nxdomain,
        1 => BlockMode::NullIp,
        2 => BlockMode::Refused,
        3 => {
            let at = r.at();
            let flags = r.u8("block mode")?;
            if flags & !3 != 0 {
                return Err(err(at, format!("{id}: custom_ip flags {flags:#x}")));
            }
            let v4 = if flags & 1 != 0 {
                let b = r.take(4, "custom_ip")?;
                Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            } else {
                None
            };
            let v6 = if flags & 2 != 0 {
                let mut a = [0u8; 16];
                a.copy_from_slice(r.take(16, "custom_ip")?);
                Some(Ipv6Addr::from(a))
            } else {
                None
            };
            BlockMode::CustomIp { v4, v6 }
        }
        m => return Err(err(at, format!("{id}: block mode {m}"))),
    };
    let own_block = own_list(r, id, "own block list")?;
    let own_allow = own_list(r, id, "own allow list")?;
    let qps_limit = r.u32("qps limit")?;
    Ok(AccountWire {
        id,
        enabled,
        networks,
        categories,
        block_mode,
        own_block,
        own_allow,
        qps_limit,
    })
}

/// Parses a payload (the bytes after the header, checksum already checked).
fn decode_payload(generation: u64, payload: &[u8]) -> Result<SnapshotWire, BlocklistError> {
    let mut r = Rd {
        buf: payload,
        pos: 0,
    };
    let at = r.at();
    let catalog_hash = r.short_str("catalog hash")?;
    if !catalog_hash.is_empty() && !is_catalog_hash(&catalog_hash) {
        return Err(err(at, "catalog hash is not a SHA-256 in hex"));
    }
    let n = r.count(MIN_ACCOUNT, "accounts")?;
    let mut accounts = Vec::with_capacity(n);
    let mut seen = HashSet::with_capacity(n);
    for _ in 0..n {
        let at = r.at();
        let a = account(&mut r)?;
        if !seen.insert(a.id) {
            return Err(err(at, format!("{} appears twice", a.id)));
        }
        accounts.push(a);
    }
    if r.remaining() != 0 {
        return Err(err(r.at(), "trailing bytes after the accounts"));
    }
    Ok(SnapshotWire {
        generation,
        catalog_hash,
        accounts,
    })
}
