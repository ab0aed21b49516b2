// Run with: cargo bench -p qorgan-benches --bench wire -- --warm-up-time 1 --measurement-time 5
//
// The snapshot wire format (qorgan_blocklists::wire) at the scale: 100,000 accounts
// with 100 own block rules and 10 own allow rules each (synthetic names, each account its
// own), one network each. Printed first, timed once: building the table, its encoded size,
// encode and decode (decode rebuilds every account's own-list fsts: what a resolver node
// pays to load a full snapshot). Then criterion: encode and decode of 10,000 such accounts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    missing_docs
)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use qorgan_blocklists::parse::{parse_text, FormatHint};
use qorgan_blocklists::wire::{decode, encode};
use qorgan_blocklists::{build_own_sets, AccountId, AccountWire, BlockMode, SnapshotWire};

fn table(accounts: u32) -> SnapshotWire {
    let mut out = Vec::with_capacity(accounts as usize);
    for a in 0..accounts {
        let mut block = String::new();
        for r in 0..100 {
            block.push_str(&format!("||t{r}.cust{a}-tracker.example{}.com^\n", r % 7));
        }
        let mut allow = String::new();
        for r in 0..10 {
            allow.push_str(&format!("||ok{r}.cust{a}.example.org^\n"));
        }
        let b = parse_text(&block, "block", FormatHint::Auto);
        let l = parse_text(&allow, "allow", FormatHint::Auto);
        let (own_block, own_allow) =
            build_own_sets((&b.rules, &b.patterns), (&l.rules, &l.patterns)).unwrap();
        let [x, y, z, _] = (a + 1).to_be_bytes();
        out.push(AccountWire {
            id: AccountId(u64::from(a) + 1),
            enabled: true,
            networks: vec![format!("10.{y}.{z}.0/24").parse().unwrap()],
            categories: vec!["ads".into(), "malware".into()],
            block_mode: if x == 0 {
                BlockMode::Nxdomain
            } else {
                BlockMode::NullIp
            },
            own_block,
            own_allow,
            qps_limit: 0,
        });
    }
    SnapshotWire {
        generation: 1,
        catalog_hash: String::new(),
        accounts: out,
    }
}

fn bench(c: &mut Criterion) {
    let t = Instant::now();
    let big = table(100_000);
    let built = t.elapsed();
    let t = Instant::now();
    let bytes = encode(&big);
    let enc = t.elapsed();
    let t = Instant::now();
    let back = decode(&bytes).unwrap();
    let dec = t.elapsed();
    assert_eq!(back.accounts.len(), 100_000);
    eprintln!(
        "100,000 accounts x 110 own rules: built in {built:.2?}, encoded {} bytes ({:.1} bytes/rule) in {enc:.2?}, decoded in {dec:.2?}",
        bytes.len(),
        bytes.len() as f64 / 11_000_000.0
    );
    drop((big, back));

    let small = table(10_000);
    let bytes = encode(&small);
    let mut g = c.benchmark_group("wire_10k_accounts");
    g.sample_size(10);
    g.bench_function("encode", |b| b.iter(|| encode(black_box(&small))));
    g.bench_function("decode", |b| b.iter(|| decode(black_box(&bytes)).unwrap()));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
