//! A Space-Saving sketch: the most frequent keys of a stream (top blocked domains of an
//! account per day) in memory fixed at construction.
//!
//! # Guarantees
//!
//! With `k` counters and `N` offers in total (over this sketch and every sketch merged into
//! it, in any order and merge tree), for every key `x` with true count `f(x)`:
//!
//! - a reported count never under-estimates: `count(x) >= f(x)`;
//! - `count(x) - error(x) <= f(x)`, and `error(x) <= floor() <= N / k`;
//! - a key that is not monitored has `f(x) <= floor()`; so every key with `f(x) > N / k` is
//!   in the sketch.
//!
//! Offers are the classic algorithm (Metwally, Agrawal, El Abbadi 2005): a monitored key
//! counts up; a new key takes the slot of the smallest count `m` with count `m + 1` and error
//! `m`. [`TopK::merge`] is the mergeable-summaries merge (Agarwal et al. 2012, for the
//! isomorphic Misra-Gries summary): a key's merged count is the sum of its counts, a sketch
//! that does not monitor it contributing its [`TopK::floor`] (an upper bound of what it may
//! have missed); the `k` largest are kept and the new floor is the largest count dropped (or
//! the sum of the floors). Why the `N / k` bound survives every merge: with `g = count -
//! floor`, both offers and merges keep `sum(g) + k * floor <= N` (a merge subtracts the
//! `(k+1)`-th largest `g` from at least `k + 1` keys), and `g >= 0`.
//!
//! # Use on the DNS path
//!
//! [`TopK::offer`] takes no lock and allocates nothing: keys live inline in their slot (up
//! to [`MAX_KEY_LEN`] bytes; longer keys are cut there, and no domain name is longer), the
//! slot index is a fixed open-addressing table with a per-sketch random hash seed, and the counts sit in a binary min-heap (O(log k) per
//! offer). So each worker thread owns its sketches; the control plane [`TopK::merge`]s them
//! when it drains counters (a worker hands over a full sketch and continues on a
//! [`TopK::clear`]ed one, or merges into an accumulator), which keeps the guarantees above.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;

/// The longest key kept, in bytes: the longest domain name.
pub const MAX_KEY_LEN: usize = crate::name::MAX_NAME_LEN;

const EMPTY: u32 = u32::MAX;

/// A cheap keyed hash of a key (8 bytes per step, then a full avalanche). Not a
/// cryptographic PRF: a client that found colliding names would only lengthen probes in a
/// table of `2 * capacity` entries; counts stay exact.
#[inline]
fn hash_key(seed: u64, key: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = seed ^ (key.len() as u64).wrapping_mul(K);
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(b)).wrapping_mul(K).rotate_left(31);
    }
    let rest = chunks.remainder();
    let mut b = [0u8; 8];
    b[..rest.len()].copy_from_slice(rest);
    h = (h ^ u64::from_le_bytes(b)).wrapping_mul(K);
    // murmur3's fmix64: every input bit reaches the low bits the table uses.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// A slot index as stored in the heap and the table (capacity is capped far below u32::MAX).
#[inline]
fn idx(s: usize) -> u32 {
    u32::try_from(s).unwrap_or(EMPTY)
}

/// The table position a hash starts probing at: the low bits of the hash, on purpose.
#[inline]
#[allow(clippy::cast_possible_truncation)]
fn home(hash: u64, mask: usize) -> usize {
    (hash as usize) & mask
}

#[derive(Clone)]
struct Slot {
    key: [u8; MAX_KEY_LEN],
    len: u8,
    count: u64,
    error: u64,
    hash: u64,
}

impl Slot {
    fn key(&self) -> &[u8] {
        &self.key[..usize::from(self.len)]
    }
}

/// A Space-Saving sketch of fixed capacity (see the module docs for its guarantees).
#[derive(Clone)]
pub struct TopK {
    slots: Box<[Slot]>,
    used: usize,
    /// Min-heap of (count, slot index): counts are copied here so that sifting touches only
    /// this small array and `heap_pos`, not the 290-byte slots.
    heap: Box<[(u64, u32)]>,
    /// Where each slot sits in the heap.
    heap_pos: Box<[u32]>,
    /// Open addressing (linear probing) from key hash to slot index; a power of two, at
    /// least twice the capacity.
    table: Box<[u32]>,
    /// The per-sketch random hash seed.
    seed: u64,
    floor: u64,
    total: u64,
}

impl fmt::Debug for TopK {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopK")
            .field("capacity", &self.capacity())
            .field("used", &self.used)
            .field("total", &self.total)
            .field("floor", &self.floor)
            .finish_non_exhaustive()
    }
}

impl TopK {
    /// A sketch of `capacity` counters (at least 1; 64 or 128 fit a per-day top list). All its
    /// memory, about `capacity * 290` bytes, is allocated here and never again.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, 1 << 24);
        let slot = Slot {
            key: [0; MAX_KEY_LEN],
            len: 0,
            count: 0,
            error: 0,
            hash: 0,
        };
        let table_len = (capacity * 2).next_power_of_two();
        Self {
            slots: vec![slot; capacity].into_boxed_slice(),
            used: 0,
            heap: vec![(0, 0); capacity].into_boxed_slice(),
            heap_pos: vec![0; capacity].into_boxed_slice(),
            table: vec![EMPTY; table_len].into_boxed_slice(),
            seed: RandomState::new().hash_one(0x5eed_u64),
            floor: 0,
            total: 0,
        }
    }

    /// The number of counters.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// How many keys are monitored.
    pub fn len(&self) -> usize {
        self.used
    }

    /// True before the first offer (or after [`Self::clear`]).
    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// Offers counted, including those of merged sketches.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The most a key that is not monitored may have been offered (0 until the sketch is full).
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Forgets everything (a new day), keeping the memory.
    pub fn clear(&mut self) {
        self.used = 0;
        self.floor = 0;
        self.total = 0;
        self.table.fill(EMPTY);
    }

    /// Counts one occurrence of `key`: no allocation, no lock.
    #[inline]
    pub fn offer(&mut self, key: &[u8]) {
        self.offer_weighted(key, 1);
    }

    /// Counts `weight` occurrences of `key` at once.
    pub fn offer_weighted(&mut self, key: &[u8], weight: u64) {
        if weight == 0 {
            return;
        }
        let key = key.get(..MAX_KEY_LEN).unwrap_or(key);
        self.total = self.total.saturating_add(weight);
        let hash = hash_key(self.seed, key);
        if let Some(s) = self.find(key, hash) {
            let slot = &mut self.slots[s];
            slot.count = slot.count.saturating_add(weight);
            let pos = self.heap_pos[s] as usize;
            self.heap[pos].0 = slot.count;
            self.sift_down(pos);
            return;
        }
        if self.used < self.slots.len() {
            let s = self.used;
            self.used += 1;
            let floor = self.floor;
            let count = floor.saturating_add(weight);
            self.fill(s, key, hash, count, floor);
            self.heap[s] = (count, idx(s));
            self.heap_pos[s] = idx(s);
            self.sift_up(s);
            self.table_insert(s, hash);
            return;
        }
        // Evict the smallest count: its key may have been offered up to `min` times.
        let (min, s) = self.heap[0];
        let s = s as usize;
        self.table_remove(s);
        self.floor = self.floor.max(min);
        let count = min.saturating_add(weight);
        self.fill(s, key, hash, count, min);
        self.heap[0].0 = count;
        self.table_insert(s, hash);
        self.sift_down(0);
    }

    /// The `n` keys of highest count, highest first (ties by key): `(key, count, error)`; the
    /// key's true count lies in `count - error ..= count`.
    pub fn top(&self, n: usize) -> Vec<(String, u64, u64)> {
        let mut all: Vec<&Slot> = self.slots[..self.used].iter().collect();
        all.sort_unstable_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key().cmp(b.key())));
        all.into_iter()
            .take(n)
            .map(|s| {
                (
                    String::from_utf8_lossy(s.key()).into_owned(),
                    s.count,
                    s.error,
                )
            })
            .collect()
    }

    /// Every monitored key with its count and error, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], u64, u64)> + '_ {
        self.slots[..self.used]
            .iter()
            .map(|s| (s.key(), s.count, s.error))
    }

    /// Adds `other`'s counts into this sketch (e.g. a worker's sketch drained by the control
    /// plane), keeping this sketch's capacity and the guarantees of the module docs (the
    /// `N / k` bound assumes sketches of equal capacity; a smaller `other` brings its own
    /// larger floor). Allocates a temporary table of both sketches' keys: not for the DNS path.
    pub fn merge(&mut self, other: &Self) {
        if other.total == 0 && other.used == 0 {
            return;
        }
        // What an unmonitored key may have been offered: 0 in a sketch that never evicted.
        let (fa, fb) = (self.floor, other.floor);
        // key -> (upper bound, lower bound)
        let mut union: HashMap<&[u8], (u64, u64, bool, bool)> =
            HashMap::with_capacity(self.used + other.used);
        for s in &self.slots[..self.used] {
            union.insert(s.key(), (s.count, s.count - s.error, true, false));
        }
        for s in &other.slots[..other.used] {
            let e = union.entry(s.key()).or_insert((0, 0, false, false));
            e.0 = e.0.saturating_add(s.count);
            e.1 = e.1.saturating_add(s.count - s.error);
            e.3 = true;
        }
        let mut merged: Vec<(Vec<u8>, u64, u64)> = union
            .into_iter()
            .map(|(k, (mut hi, lo, in_a, in_b))| {
                if !in_a {
                    hi = hi.saturating_add(fa);
                }
                if !in_b {
                    hi = hi.saturating_add(fb);
                }
                (k.to_vec(), hi, lo)
            })
            .collect();
        merged.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let k = self.slots.len();
        let mut floor = fa.saturating_add(fb);
        if let Some(dropped) = merged.get(k) {
            floor = floor.max(dropped.1);
        }
        merged.truncate(k);
        let total = self.total.saturating_add(other.total);
        self.clear();
        self.floor = floor;
        self.total = total;
        for (i, (key, hi, lo)) in merged.iter().enumerate() {
            let hash = hash_key(self.seed, key);
            self.fill(i, key, hash, *hi, hi - lo);
            self.heap[i] = (*hi, idx(i));
            self.heap_pos[i] = idx(i);
            self.table_insert(i, hash);
        }
        self.used = merged.len();
        for pos in (0..self.used / 2).rev() {
            self.sift_down(pos);
        }
    }

    /// A sketch in exactly the state that [`Self::iter`], [`Self::floor`] and [`Self::total`]
    /// described (a sketch kept on disk between drains). Entries beyond `capacity`, duplicate
    /// keys and entries whose error exceeds their count are dropped: a stored sketch is input,
    /// and a damaged one must not break the guarantees of those that remain.
    pub fn restore<'a, I>(capacity: usize, floor: u64, total: u64, entries: I) -> Self
    where
        I: IntoIterator<Item = (&'a [u8], u64, u64)>,
    {
        let mut sketch = Self::new(capacity);
        sketch.floor = floor;
        sketch.total = total;
        for (key, count, error) in entries {
            if sketch.used == sketch.slots.len() || error > count {
                continue;
            }
            let key = key.get(..MAX_KEY_LEN).unwrap_or(key);
            let hash = hash_key(sketch.seed, key);
            if sketch.find(key, hash).is_some() {
                continue;
            }
            let i = sketch.used;
            sketch.fill(i, key, hash, count, error);
            sketch.heap[i] = (count, idx(i));
            sketch.heap_pos[i] = idx(i);
            sketch.table_insert(i, hash);
            sketch.used += 1;
        }
        for pos in (0..sketch.used / 2).rev() {
            sketch.sift_down(pos);
        }
        sketch
    }

    // ---- internals ----

    fn fill(&mut self, s: usize, key: &[u8], hash: u64, count: u64, error: u64) {
        let slot = &mut self.slots[s];
        slot.key[..key.len()].copy_from_slice(key);
        slot.len = u8::try_from(key.len()).unwrap_or(u8::MAX);
        slot.count = count;
        slot.error = error;
        slot.hash = hash;
    }

    #[inline]
    fn mask(&self) -> usize {
        self.table.len() - 1
    }

    #[inline]
    fn find(&self, key: &[u8], hash: u64) -> Option<usize> {
        let mask = self.mask();
        let mut i = home(hash, mask);
        loop {
            let s = self.table[i];
            if s == EMPTY {
                return None;
            }
            let slot = &self.slots[s as usize];
            if slot.hash == hash && slot.key() == key {
                return Some(s as usize);
            }
            i = (i + 1) & mask;
        }
    }

    fn table_insert(&mut self, s: usize, hash: u64) {
        let mask = self.mask();
        let mut i = home(hash, mask);
        while self.table[i] != EMPTY {
            i = (i + 1) & mask;
        }
        self.table[i] = idx(s);
    }

    /// Removes slot `s` from the table by backward-shift deletion (no tombstones, so
    /// lookups stay short however many keys were evicted).
    fn table_remove(&mut self, s: usize) {
        let mask = self.mask();
        let mut i = home(self.slots[s].hash, mask);
        while self.table[i] != idx(s) {
            if self.table[i] == EMPTY {
                return;
            }
            i = (i + 1) & mask;
        }
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let t = self.table[j];
            if t == EMPTY {
                break;
            }
            let h = home(self.slots[t as usize].hash, mask);
            // Move `t` into the hole when its home is not cyclically in (hole, j].
            let dist_home = j.wrapping_sub(h) & mask;
            let dist_hole = j.wrapping_sub(hole) & mask;
            if dist_home >= dist_hole {
                self.table[hole] = t;
                hole = j;
            }
        }
        self.table[hole] = EMPTY;
    }

    #[inline]
    fn count_at(&self, pos: usize) -> u64 {
        self.heap[pos].0
    }

    #[inline]
    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        let (sa, sb) = (self.heap[a].1 as usize, self.heap[b].1 as usize);
        self.heap_pos[sa] = idx(a);
        self.heap_pos[sb] = idx(b);
    }

    fn sift_down(&mut self, mut pos: usize) {
        let n = self.used;
        loop {
            let l = 2 * pos + 1;
            if l >= n {
                return;
            }
            let r = l + 1;
            let c = if r < n && self.count_at(r) < self.count_at(l) {
                r
            } else {
                l
            };
            if self.count_at(c) >= self.count_at(pos) {
                return;
            }
            self.swap(pos, c);
            pos = c;
        }
    }

    fn sift_up(&mut self, mut pos: usize) {
        while pos > 0 {
            let parent = (pos - 1) / 2;
            if self.count_at(parent) <= self.count_at(pos) {
                return;
            }
            self.swap(pos, parent);
            pos = parent;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn counts_exactly_while_keys_fit() {
        let mut t = TopK::new(4);
        for k in ["a", "b", "a", "c", "a", "b"] {
            t.offer(k.as_bytes());
        }
        assert_eq!(
            t.top(10),
            vec![("a".into(), 3, 0), ("b".into(), 2, 0), ("c".into(), 1, 0)]
        );
        assert_eq!(t.floor(), 0);
        assert_eq!(t.total(), 6);
    }

    #[test]
    fn new_key_takes_the_smallest_slot_with_its_count_as_error() {
        let mut t = TopK::new(2);
        for k in ["a", "a", "a", "b", "c"] {
            t.offer(k.as_bytes());
        }
        // "b" (count 1) was evicted by "c": c = 1 + 1 with error 1.
        assert_eq!(t.top(2), vec![("a".into(), 3, 0), ("c".into(), 2, 1)]);
        assert_eq!(t.floor(), 1);
    }

    #[test]
    fn clear_forgets_everything() {
        let mut t = TopK::new(2);
        t.offer(b"a");
        t.offer(b"b");
        t.offer(b"c");
        t.clear();
        assert!(t.is_empty());
        assert_eq!((t.total(), t.floor()), (0, 0));
        t.offer(b"b");
        assert_eq!(t.top(5), vec![("b".into(), 1, 0)]);
    }

    #[test]
    fn keys_longer_than_a_name_are_cut() {
        let mut t = TopK::new(2);
        let long = vec![b'x'; 400];
        t.offer(&long);
        t.offer(&long[..MAX_KEY_LEN]);
        assert_eq!(t.top(1)[0].1, 2);
        assert_eq!(t.top(1)[0].0.len(), MAX_KEY_LEN);
    }
}
