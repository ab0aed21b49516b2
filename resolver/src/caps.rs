//! Caps on the lookups one client, and one zone, may have outstanding at once (RELIABILITY T7,
//! "water torture"): a flood of random names under one victim zone, or from one infected host,
//! fills its own slots and gets SERVFAIL at once, while everybody else's lookups still reach
//! the upstreams. Unbound (`ratelimit`) and PowerDNS Recursor (`max-qperq`, per-client
//! concurrency) defend the same way.
//!
//! Counting is lock-free: a fixed table of atomic counters per dimension, indexed by a hash of
//! the client address (a /64 for IPv6) or of the zone (the name's last two labels, lower-cased).
//! Two keys that share a slot share its cap; with 4,096 slots that only makes the cap tighter
//! for the rare colliding pair, never looser.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use hickory_proto::rr::Name;

/// Slots per dimension (a power of two).
const SLOTS: usize = 4096;

/// Which cap a lookup ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CappedBy {
    /// Its client already had `dns.max_upstream_per_client` lookups outstanding.
    Client,
    /// Its zone already had `dns.max_upstream_per_zone` lookups outstanding.
    Zone,
}

impl CappedBy {
    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Zone => "zone",
        }
    }
}

/// The outstanding-lookup counters of one resolver.
#[derive(Debug)]
pub(crate) struct OutstandingCaps {
    per_client: u32,
    per_zone: u32,
    clients: Box<[AtomicU32]>,
    zones: Box<[AtomicU32]>,
}

/// One admitted lookup; its slots are released when it is dropped (also on cancellation).
#[derive(Debug)]
pub(crate) struct Outstanding<'a> {
    caps: &'a OutstandingCaps,
    client: Option<usize>,
    zone: Option<usize>,
}

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.client {
            self.caps.clients[i].fetch_sub(1, Ordering::AcqRel);
        }
        if let Some(i) = self.zone {
            self.caps.zones[i].fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl OutstandingCaps {
    /// Caps of `per_client` and `per_zone` lookups at once; 0 turns a cap off.
    pub(crate) fn new(per_client: u32, per_zone: u32) -> Self {
        let table = || (0..SLOTS).map(|_| AtomicU32::new(0)).collect();
        Self {
            per_client,
            per_zone,
            clients: table(),
            zones: table(),
        }
    }

    /// Admits one lookup of `name` for `client`, or says which cap it hit (nothing is taken).
    pub(crate) fn admit(&self, client: IpAddr, name: &Name) -> Result<Outstanding<'_>, CappedBy> {
        let mut admitted = Outstanding {
            caps: self,
            client: None,
            zone: None,
        };
        if self.per_client > 0 {
            let i = slot(client_hash(client));
            take(&self.clients[i], self.per_client)
                .then_some(())
                .ok_or(CappedBy::Client)?;
            admitted.client = Some(i);
        }
        if self.per_zone > 0 {
            let i = slot(zone_hash(name));
            // On failure `admitted` is dropped and gives the client slot back.
            take(&self.zones[i], self.per_zone)
                .then_some(())
                .ok_or(CappedBy::Zone)?;
            admitted.zone = Some(i);
        }
        Ok(admitted)
    }
}

/// Increments `counter` unless it is at `cap`.
fn take(counter: &AtomicU32, cap: u32) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < cap).then_some(n + 1)
        })
        .is_ok()
}

fn slot(hash: u64) -> usize {
    // The mask keeps the value below SLOTS.
    #[allow(clippy::cast_possible_truncation)]
    let i = (hash as usize) & (SLOTS - 1);
    i
}

/// FNV-1a, then a final mix (the low bits index the table).
fn fnv(bytes: impl Iterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ (h >> 29)
}

/// The client's key: its IPv4 address, or the /64 of its IPv6 address (one host or LAN).
fn client_hash(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => fnv(v4.octets().into_iter()),
        IpAddr::V6(v6) => fnv(v6.octets().into_iter().take(8).chain([6])),
    }
}

/// The zone's key: the last two labels of `name`, lower-cased (`a.b.victim.example` →
/// `victim.example`) — where a random-subdomain flood varies, it varies to the left of these.
fn zone_hash(name: &Name) -> u64 {
    fnv(name
        .iter()
        .rev()
        .take(2)
        .flat_map(|l| l.iter().map(u8::to_ascii_lowercase).chain([b'.'])))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn a_zone_at_its_cap_refuses_more_until_a_lookup_ends() {
        let caps = OutstandingCaps::new(0, 2);
        let client = IpAddr::from([192, 0, 2, 1]);
        let a = caps.admit(client, &name("r1.victim.example.")).unwrap();
        let _b = caps.admit(client, &name("R2.Victim.Example.")).unwrap();
        assert_eq!(
            caps.admit(client, &name("r3.victim.example.")).unwrap_err(),
            CappedBy::Zone
        );
        assert!(caps.admit(client, &name("www.other.example.")).is_ok());
        drop(a);
        assert!(caps
            .admit(client, &name("r4.deeper.victim.example."))
            .is_ok());
    }

    #[test]
    fn a_client_at_its_cap_is_refused_and_a_zone_refusal_gives_its_client_slot_back() {
        let caps = OutstandingCaps::new(2, 1);
        let host = IpAddr::from([192, 0, 2, 1]);
        let _a = caps.admit(host, &name("a.one.example.")).unwrap();
        // The zone is full: refused, and the client's slot it took is returned.
        assert_eq!(
            caps.admit(host, &name("b.one.example.")).unwrap_err(),
            CappedBy::Zone
        );
        let _c = caps.admit(host, &name("c.two.example.")).unwrap();
        assert_eq!(
            caps.admit(host, &name("d.three.example.")).unwrap_err(),
            CappedBy::Client
        );
        // Another host is not affected; an IPv6 host's whole /64 is one client.
        assert!(caps
            .admit(IpAddr::from([192, 0, 2, 2]), &name("e.four.example."))
            .is_ok());
        let v6a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2::ffff".parse().unwrap();
        let _x = caps.admit(v6a, &name("x.five.example.")).unwrap();
        let _y = caps.admit(v6b, &name("y.six.example.")).unwrap();
        assert_eq!(
            caps.admit(v6a, &name("z.seven.example.")).unwrap_err(),
            CappedBy::Client
        );
    }

    #[test]
    fn zero_turns_both_caps_off() {
        let caps = OutstandingCaps::new(0, 0);
        let host = IpAddr::from([192, 0, 2, 1]);
        let held: Vec<_> = (0..100)
            .map(|i| {
                caps.admit(host, &name(&format!("r{i}.victim.example.")))
                    .unwrap()
            })
            .collect();
        assert_eq!(held.len(), 100);
    }
}
