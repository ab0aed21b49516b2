//! The Space-Saving sketch against exact counts: the guarantees of `crate::topk` hold for
//! single sketches and for merges of any depth.

use std::collections::HashMap;

use proptest::prelude::*;

use crate::TopK;

/// A skewed stream: small indices far more often (a few "hot" blocked domains).
fn stream() -> impl Strategy<Value = Vec<u16>> {
    prop::collection::vec(
        prop_oneof![
            4 => 0u16..4,
            3 => 0u16..40,
            2 => 0u16..2000,
        ],
        0..600,
    )
}

fn key(i: u16) -> Vec<u8> {
    format!("d{i}.example").into_bytes()
}

fn exact(streams: &[&[u16]]) -> HashMap<Vec<u8>, u64> {
    let mut m = HashMap::new();
    for s in streams {
        for &i in *s {
            *m.entry(key(i)).or_insert(0) += 1;
        }
    }
    m
}

fn sketch(k: usize, s: &[u16]) -> TopK {
    let mut t = TopK::new(k);
    for &i in s {
        t.offer(&key(i));
    }
    t
}

/// Every guarantee of the module docs, against the exact counts of everything offered.
fn check(t: &TopK, truth: &HashMap<Vec<u8>, u64>) -> Result<(), TestCaseError> {
    let n: u64 = truth.values().sum();
    let k = t.capacity() as u64;
    prop_assert_eq!(t.total(), n);
    prop_assert!(t.floor() * k <= n, "floor {} > N/k = {n}/{k}", t.floor());
    let mut monitored = HashMap::new();
    for (key, count, error) in t.iter() {
        let f = truth.get(key).copied().unwrap_or(0);
        prop_assert!(count >= f, "under-estimate: {count} < {f}");
        prop_assert!(count - error <= f, "lower bound {} > {f}", count - error);
        prop_assert!(error <= t.floor(), "error {error} > floor {}", t.floor());
        prop_assert!(monitored.insert(key.to_vec(), count).is_none(), "key twice");
    }
    for (key, &f) in truth {
        if !monitored.contains_key(key) {
            prop_assert!(f <= t.floor(), "missing key with {f} > floor {}", t.floor());
            prop_assert!(f * k <= n, "missing key with {f} > N/k = {n}/{k}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn single_sketch_holds_the_space_saving_bounds(k in 1usize..24, s in stream()) {
        let t = sketch(k, &s);
        check(&t, &exact(&[&s]))?;
        // top() is sorted by count and agrees with iter().
        let top = t.top(usize::MAX);
        prop_assert_eq!(top.len(), t.len());
        prop_assert!(top.windows(2).all(|w| w[0].1 >= w[1].1));
    }

    #[test]
    fn merged_sketches_keep_the_bounds(k in 1usize..24, a in stream(), b in stream()) {
        let mut ta = sketch(k, &a);
        let tb = sketch(k, &b);
        ta.merge(&tb);
        check(&ta, &exact(&[&a, &b]))?;
    }

    #[test]
    fn merge_trees_and_offers_after_merging_keep_the_bounds(
        k in 1usize..16,
        parts in prop::collection::vec(stream(), 1..6),
        after in stream(),
    ) {
        // A control plane draining worker sketches into a day's accumulator, one at a time,
        // and the accumulator's own offers continuing afterwards.
        let mut acc = TopK::new(k);
        for p in &parts {
            let mut pair = sketch(k, p);
            pair.merge(&sketch(k, &after[..after.len() / 2]));
            acc.merge(&pair);
        }
        for &i in &after {
            acc.offer(&key(i));
        }
        let mut all: Vec<&[u16]> = parts.iter().map(Vec::as_slice).collect();
        for _ in &parts {
            all.push(&after[..after.len() / 2]);
        }
        all.push(&after);
        check(&acc, &exact(&all))?;
    }

    #[test]
    fn restored_sketch_keeps_the_bounds_through_later_offers(
        k in 1usize..16,
        a in stream(),
        b in stream(),
    ) {
        // The control plane keeps a day's sketch on disk between drains: store, restore, offer.
        let t = sketch(k, &a);
        let stored: Vec<(Vec<u8>, u64, u64)> = t.iter().map(|(key, c, e)| (key.to_vec(), c, e)).collect();
        let mut r = TopK::restore(k, t.floor(), t.total(), stored.iter().map(|(key, c, e)| (key.as_slice(), *c, *e)));
        prop_assert_eq!(r.top(usize::MAX), t.top(usize::MAX));
        for &i in &b {
            r.offer(&key(i));
        }
        check(&r, &exact(&[&a, &b]))?;
    }

    #[test]
    fn clear_then_reuse_is_a_fresh_sketch(k in 1usize..16, a in stream(), b in stream()) {
        let mut t = sketch(k, &a);
        t.clear();
        for &i in &b {
            t.offer(&key(i));
        }
        check(&t, &exact(&[&b]))?;
    }
}

#[test]
fn heavy_hitters_survive_many_distinct_keys() {
    // 100 counters; 3 hot keys among 50,000 one-off names: the hot ones stay on top.
    let mut t = TopK::new(100);
    for i in 0..50_000u32 {
        t.offer(format!("once{i}.example").as_bytes());
        if i % 10 == 0 {
            t.offer(b"hot1.example");
        }
        if i % 20 == 0 {
            t.offer(b"hot2.example");
        }
        if i % 40 == 0 {
            t.offer(b"hot3.example");
        }
    }
    let top: Vec<String> = t.top(3).into_iter().map(|(k, _, _)| k).collect();
    assert_eq!(top, ["hot1.example", "hot2.example", "hot3.example"]);
}

#[test]
fn merge_raises_the_floor_to_the_largest_dropped_count() {
    // Two exact sketches (floor 0) whose union does not fit: the keys dropped were seen 5
    // times, so the merged floor must say so, and the bound N/k = 20/2 still holds.
    let mut a = TopK::new(2);
    let mut b = TopK::new(2);
    for _ in 0..5 {
        a.offer(b"a");
        a.offer(b"b");
        b.offer(b"c");
        b.offer(b"d");
    }
    a.merge(&b);
    assert_eq!(a.len(), 2);
    assert_eq!(a.floor(), 5);
    assert_eq!(a.total(), 20);
    let kept: Vec<(String, u64, u64)> = a.top(2);
    assert_eq!(kept, [("a".into(), 5, 0), ("b".into(), 5, 0)]);
}
