// Run with: cargo bench -p qorgan-benches --bench topk -- --warm-up-time 1 --measurement-time 3
//
// The Space-Saving sketch (qorgan_blocklists::TopK) for top blocked domains: ns per offer
// (one criterion iteration = one offer) on a skewed stream of real names (the Umbrella top
// 100k from ../shared/data/popular, or synthetic names when it is absent), where most offers
// hit a monitored key, and on a stream of distinct names, where every offer evicts; and the
// cost of merging two full sketches (what the control plane pays per drained worker sketch).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    missing_docs
)]

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use qorgan_blocklists::TopK;

fn names() -> Vec<Vec<u8>> {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/data/popular/umbrella-top-100k.txt"
    ));
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .lines()
            .map(|l| l.trim().as_bytes().to_vec())
            .filter(|l| !l.is_empty())
            .collect(),
        Err(_) => {
            eprintln!("{} not found: using synthetic names", path.display());
            (0..100_000)
                .map(|i| format!("host{i}.example{}.com", i % 97).into_bytes())
                .collect()
        }
    }
}

/// A deterministic skewed stream: index = n * u^4 for u uniform in [0, 1), so a few names
/// take most of the offers (as blocked ad and tracker domains do). The keys are copied into
/// one buffer in stream order: on the DNS path the name being counted is in the packet just
/// read (hot in cache), which scattered heap strings would not model.
fn skewed(names: &[Vec<u8>], len: usize) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = Vec::new();
    let mut spans = Vec::with_capacity(len);
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let u = (x >> 11) as f64 / (1u64 << 53) as f64;
        let i = ((names.len() as f64) * u.powi(4)) as usize;
        let name = &names[i.min(names.len() - 1)];
        spans.push((buf.len(), buf.len() + name.len()));
        buf.extend_from_slice(name);
    }
    (buf, spans)
}

/// The names in list order, in one buffer (each offered once per pass: every offer evicts).
fn distinct(names: &[Vec<u8>]) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut buf = Vec::new();
    let mut spans = Vec::with_capacity(names.len());
    for name in names {
        spans.push((buf.len(), buf.len() + name.len()));
        buf.extend_from_slice(name);
    }
    (buf, spans)
}

fn bench(c: &mut Criterion) {
    let names = names();
    let (buf, stream) = skewed(&names, 1 << 20);
    let (dbuf, dist) = distinct(&names);
    let mut g = c.benchmark_group("topk");
    for k in [64usize, 128] {
        let mut t = TopK::new(k);
        let mut i = 0usize;
        g.bench_function(format!("offer_skewed_k{k}"), |b| {
            b.iter(|| {
                let (s, e) = stream[i];
                t.offer(black_box(&buf[s..e]));
                i = (i + 1) & (stream.len() - 1);
            })
        });
        let hits = t.top(3);
        eprintln!("k={k}: top 3 after the run: {hits:?}");
        let mut t = TopK::new(k);
        let mut i = 0usize;
        g.bench_function(format!("offer_distinct_k{k}"), |b| {
            b.iter(|| {
                let (s, e) = dist[i];
                t.offer(black_box(&dbuf[s..e]));
                i += 1;
                if i == dist.len() {
                    i = 0;
                }
            })
        });
        let mut a = TopK::new(k);
        let mut other = TopK::new(k);
        for (j, &(s, e)) in stream.iter().take(200_000).enumerate() {
            if j % 2 == 0 {
                a.offer(&buf[s..e]);
            } else {
                other.offer(&buf[s..e]);
            }
        }
        g.bench_function(format!("merge_full_k{k}"), |b| {
            b.iter(|| {
                let mut m = a.clone();
                m.merge(black_box(&other));
                m
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
