//! Response-rate limiting per source prefix (RELIABILITY T2, T7): a forged-source flood at a
//! customer's address gets at most `rate` answers per second per /24 (v4) or /56 (v6) back,
//! and of the answers over the limit every `slip`-th is a truncated (TC=1) empty answer, the
//! rest are dropped: a real client behind that prefix retries over TCP and is served, a
//! reflection victim receives fewer bytes than the attacker sent.
//!
//! Each fast-path worker owns one limiter (no lock, no atomics, no allocation per packet): a
//! fixed table of token buckets indexed by a keyed hash of the prefix. Two prefixes that share
//! a slot take it over from each other (the newcomer starts with a full bucket), which can
//! only let more through, never block a prefix that is under its rate. With `SO_REUSEPORT`
//! one source's packets spread over the workers, so each worker enforces its share of the
//! rate.

use std::hash::BuildHasher;
use std::net::IpAddr;

/// Buckets per worker (32 bytes each: 512 KiB per worker).
const SLOTS: usize = 16 * 1024;

/// What to do with a datagram's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Under the rate: answer.
    Pass,
    /// Over the rate, the slip's turn: answer with an empty TC=1 response.
    Slip,
    /// Over the rate: send nothing.
    Drop,
}

/// Rate-limit settings (from `[dns]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitOptions {
    /// Answers per second per prefix; 0 turns the limiter off.
    pub rate: u32,
    /// Answers a quiet prefix may get at once.
    pub burst: u32,
    /// Every `slip`-th limited answer is sent truncated (0: none, 1: all).
    pub slip: u32,
    /// IPv4 prefix length sources are grouped by.
    pub v4_prefix: u8,
    /// IPv6 prefix length sources are grouped by.
    pub v6_prefix: u8,
    /// Limit loopback sources too (they cannot be forged; off outside tests).
    pub loopback: bool,
}

impl RateLimitOptions {
    /// The options `config` asks for.
    pub fn from_config(dns: &qorgan_config::DnsConfig) -> Self {
        Self {
            rate: dns.rate_limit_qps,
            burst: dns.rate_limit_burst,
            slip: dns.rate_limit_slip,
            v4_prefix: dns.rate_limit_v4_prefix,
            v6_prefix: dns.rate_limit_v6_prefix,
            loopback: dns.rate_limit_loopback,
        }
    }
}

#[derive(Clone, Copy)]
struct Bucket {
    key: u128,
    /// Thousandths of an answer.
    tokens: u64,
    last_ms: u64,
}

/// One worker's limiter.
pub struct RateLimiter {
    options: RateLimitOptions,
    /// Thousandths of an answer earned per millisecond (= answers per second).
    per_ms: u64,
    capacity: u64,
    slots: Box<[Bucket]>,
    seed: std::collections::hash_map::RandomState,
    limited: u32,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The prefix of `ip` as a table key. IPv4 prefixes sit in the IPv4-mapped range
/// (`::ffff:a.b.c.0`), where no IPv6 /56 of a real source falls.
fn prefix_key(ip: IpAddr, v4_prefix: u8, v6_prefix: u8) -> u128 {
    match ip {
        IpAddr::V4(v4) => {
            let keep = u32::from(v4_prefix.min(32));
            let mask = u32::MAX.checked_shl(32 - keep).unwrap_or(0);
            (0xffff_u128 << 32) | u128::from(u32::from(v4) & mask)
        }
        IpAddr::V6(v6) => {
            let keep = u32::from(v6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
            u128::from(v6) & mask
        }
    }
}

impl RateLimiter {
    /// A limiter for one of `workers` workers: each gets `1 / workers` of the rate and burst.
    pub fn new(options: RateLimitOptions, workers: usize) -> Self {
        let workers = u64::try_from(workers.max(1)).unwrap_or(1);
        let per_ms = (u64::from(options.rate) / workers).max(1);
        let capacity = (u64::from(options.burst.max(1)) * 1000 / workers).max(1000);
        let slots = if options.rate == 0 { 0 } else { SLOTS };
        Self {
            options,
            per_ms,
            capacity,
            slots: vec![
                Bucket {
                    key: 0,
                    tokens: 0,
                    last_ms: 0
                };
                slots
            ]
            .into_boxed_slice(),
            seed: std::collections::hash_map::RandomState::new(),
            limited: 0,
        }
    }

    /// Whether the limiter does anything.
    pub fn is_enabled(&self) -> bool {
        !self.slots.is_empty()
    }

    /// Charges one answer to `src`'s prefix at `now_ms` (a monotonic clock in milliseconds).
    #[inline]
    pub fn check(&mut self, src: IpAddr, now_ms: u64) -> RateDecision {
        if self.slots.is_empty() || (!self.options.loopback && src.is_loopback()) {
            return RateDecision::Pass;
        }
        let key = prefix_key(src, self.options.v4_prefix, self.options.v6_prefix);
        // The slot count is a power of two.
        #[allow(clippy::cast_possible_truncation)]
        let slot = (self.seed.hash_one(key) as usize) & (self.slots.len() - 1);
        let (per_ms, capacity) = (self.per_ms, self.capacity);
        let b = &mut self.slots[slot];
        if b.key != key || b.last_ms == 0 {
            *b = Bucket {
                key,
                tokens: capacity,
                last_ms: now_ms.max(1),
            };
        } else {
            let earned = now_ms.saturating_sub(b.last_ms).saturating_mul(per_ms);
            b.tokens = b.tokens.saturating_add(earned).min(capacity);
            b.last_ms = now_ms.max(b.last_ms);
        }
        if b.tokens >= 1000 {
            b.tokens -= 1000;
            return RateDecision::Pass;
        }
        self.limited = self.limited.wrapping_add(1);
        match self.options.slip {
            0 => RateDecision::Drop,
            s if self.limited.is_multiple_of(s) => RateDecision::Slip,
            _ => RateDecision::Drop,
        }
    }
}

/// Writes into `out` the truncated empty answer to `query` (header and question only, TC=1)
/// whose question ends at `question_end`; returns its length. Never longer than the query.
pub fn truncated_answer(query: &[u8], question_end: usize, out: &mut [u8]) -> Option<usize> {
    bare_answer(query, question_end, 0x02, 0, out)
}

/// Writes a REFUSED answer to `query` (header and question only): what an account over its
/// `qps_limit` gets. Never larger than the query.
pub fn refused_answer(query: &[u8], question_end: usize, out: &mut [u8]) -> Option<usize> {
    bare_answer(query, question_end, 0, 5, out)
}

/// The header and question of `query` as an answer with the `tc` bit (0x02 or 0) and `rcode`.
fn bare_answer(
    query: &[u8],
    question_end: usize,
    tc: u8,
    rcode: u8,
    out: &mut [u8],
) -> Option<usize> {
    let q = query.get(..question_end)?;
    if q.len() < 12 || out.len() < q.len() {
        return None;
    }
    out[..q.len()].copy_from_slice(q);
    // QR=1, keep opcode and RD; TC as asked; AA=0.
    out[2] = 0x80 | (q[2] & 0x79) | tc;
    // RA=1, CD copied, Z/AD cleared, the rcode.
    out[3] = 0x80 | (q[3] & 0x10) | rcode;
    out[4..6].copy_from_slice(&1u16.to_be_bytes());
    out[6..12].fill(0);
    Some(q.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(rate: u32, burst: u32, slip: u32) -> RateLimitOptions {
        RateLimitOptions {
            rate,
            burst,
            slip,
            v4_prefix: 24,
            v6_prefix: 56,
            loopback: false,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_prefix_gets_its_burst_then_its_rate() {
        let mut l = RateLimiter::new(options(100, 10, 0), 1);
        let passed = (0..50)
            .filter(|_| l.check(ip("192.0.2.7"), 1_000) == RateDecision::Pass)
            .count();
        assert_eq!(passed, 10, "the burst");
        // 100 ms later: 10 more earned.
        let passed = (0..50)
            .filter(|_| l.check(ip("192.0.2.200"), 1_100) == RateDecision::Pass)
            .count();
        assert_eq!(passed, 10, "the same /24 shares the bucket");
        assert_eq!(
            l.check(ip("192.0.3.1"), 1_100),
            RateDecision::Pass,
            "another /24 does not"
        );
    }

    #[test]
    fn every_second_limited_answer_slips_with_slip_2() {
        let mut l = RateLimiter::new(options(10, 1, 2), 1);
        assert_eq!(l.check(ip("2001:db8::1"), 5), RateDecision::Pass);
        let limited: Vec<RateDecision> = (0..6).map(|_| l.check(ip("2001:db8::ff"), 5)).collect();
        let slips = limited.iter().filter(|d| **d == RateDecision::Slip).count();
        assert_eq!(slips, 3, "{limited:?}");
        assert!(!limited.contains(&RateDecision::Pass));
        // Another /56 is unaffected; the same /56 is not.
        assert_eq!(l.check(ip("2001:db8:0:100::1"), 5), RateDecision::Pass);
        assert_ne!(l.check(ip("2001:db8:0:ff::1"), 5), RateDecision::Pass);
    }

    #[test]
    fn rate_zero_turns_it_off() {
        let mut l = RateLimiter::new(options(0, 0, 2), 2);
        assert!(!l.is_enabled());
        let mut local = RateLimiter::new(options(1, 1, 0), 1);
        assert!(
            (0..100).all(|_| local.check(ip("127.0.0.1"), 1) == RateDecision::Pass),
            "loopback cannot be forged: not limited by default"
        );
        assert!((0..10_000).all(|_| l.check(ip("192.0.2.1"), 1) == RateDecision::Pass));
    }

    #[test]
    fn truncated_answer_is_the_question_with_tc_and_no_records() {
        // id 0x1234, RD, one question `a.` A IN, plus an OPT record the answer drops.
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
        q.extend_from_slice(&[1, b'a', 0, 0, 1, 0, 1]);
        let question_end = q.len();
        q.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0]);
        let mut out = [0u8; 512];
        let n = truncated_answer(&q, question_end, &mut out).expect("answer");
        assert!(n < q.len());
        assert_eq!(&out[..2], &[0x12, 0x34]);
        assert_eq!(out[2], 0x83, "QR, TC, RD");
        assert_eq!(&out[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
    }
}
