// Run with: cargo bench -p qorgan-benches --bench matcher -- --warm-up-time 1 --measurement-time 5
//
// The matcher over every shared list (../shared/data/blocklists, ~750k names), one category
// per file: ns per decision over the 100k Umbrella query names, beside a HashSet-of-parents
// baseline; compile time, cache (warm start) time and compiled bytes are printed first.
// Needs ../shared/data beside the repo; prints a message and does nothing when it is absent.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashSet;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qorgan_blocklists::{
    compile_lists, load_or_compile, AccountId, AccountPolicy, BlockMode, CategoryMask, ListInput,
    PolicySnapshot,
};

fn data_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data"))
}

/// One category per shared list file, named after the file (up to its first dot).
fn inputs(dir: &Path, with_patterns: bool) -> Vec<ListInput> {
    let mut out: Vec<ListInput> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            with_patterns || !(n.contains("regex") || n.contains("allowlist"))
        })
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let category = name.split('.').next().unwrap().to_owned();
            ListInput { category, path: p }
        })
        .collect();
    out.sort_by(|a, b| a.category.cmp(&b.category));
    out
}

fn snapshot(inputs: &[ListInput], label: &str) -> PolicySnapshot {
    let start = Instant::now();
    let (catalog, report) = compile_lists(inputs).unwrap();
    println!(
        "[{label}] compiled {} files in {:.2} s: {} distinct names, fst {} bytes ({:.1} MiB), {} patterns (DFA {} bytes)",
        inputs.len(),
        start.elapsed().as_secs_f64(),
        report.names,
        report.fst_bytes,
        report.fst_bytes as f64 / (1024.0 * 1024.0),
        report.patterns,
        report.pattern_bytes
    );
    PolicySnapshot::empty(Arc::new(catalog))
}

fn cache_timings(inputs: &[ListInput]) {
    // Lay the lists out as a lists folder (symlinks), then time a cold and a warm start.
    let lists = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    for i in inputs {
        let d = lists.path().join(&i.category);
        std::fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::symlink(&i.path, d.join(i.path.file_name().unwrap())).unwrap();
    }
    let t = Instant::now();
    let (_, cold) = load_or_compile(lists.path(), cache.path()).unwrap();
    let cold_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let (warm_catalog, warm) = load_or_compile(lists.path(), cache.path()).unwrap();
    let warm_s = t.elapsed().as_secs_f64();
    println!(
        "[cache] cold load_or_compile {:.2} s ({:?}); warm {:.0} ms ({:?}, mapped: {}) — hashing the inputs is most of the warm time",
        cold_s,
        cold.cache,
        warm_s * 1000.0,
        warm.cache,
        warm_catalog.is_mapped()
    );
}

fn bench(c: &mut Criterion) {
    let data = data_dir();
    let lists = data.join("blocklists");
    let names_file = data.join("popular/umbrella-top-100k.txt");
    if !lists.is_dir() || !names_file.is_file() {
        eprintln!("skipped: {} is absent", data.display());
        return;
    }
    let all = inputs(&lists, true);
    let domains_only = inputs(&lists, false);
    cache_timings(&all);
    let snap_all = snapshot(&all, "all lists");
    let snap_domains = snapshot(&domains_only, "domain lists only");
    let policy = AccountPolicy::new(AccountId(1), CategoryMask::ALL, BlockMode::Nxdomain);

    let text = std::fs::read_to_string(&names_file).unwrap();
    let names: Vec<&[u8]> = text.lines().map(str::as_bytes).collect();

    // The baseline: every listed name in a HashSet, and a walk over the query's parents.
    let mut set: HashSet<Vec<u8>> = HashSet::new();
    for i in &domains_only {
        let t = std::fs::read_to_string(&i.path).unwrap();
        let parsed = qorgan_blocklists::parse::parse_text(
            &t,
            "",
            qorgan_blocklists::parse::FormatHint::Auto,
        );
        set.extend(parsed.rules.into_iter().map(|r| r.name.into_bytes()));
    }
    let hash_blocked = |name: &[u8]| -> bool {
        if set.contains(name) {
            return true;
        }
        name.iter()
            .enumerate()
            .any(|(i, &b)| b == b'.' && set.contains(&name[i + 1..]))
    };

    let blocked_all = names
        .iter()
        .filter(|n| snap_all.decide_dotted(&policy, n).is_blocked())
        .count();
    let blocked_dom = names
        .iter()
        .filter(|n| snap_domains.decide_dotted(&policy, n).is_blocked())
        .count();
    let blocked_hash = names.iter().filter(|n| hash_blocked(n)).count();
    println!(
        "[verdicts] of {} Umbrella names blocked: all lists {blocked_all}, domain lists only {blocked_dom}, HashSet baseline {blocked_hash}",
        names.len()
    );

    let mut g = c.benchmark_group("matcher");
    g.throughput(Throughput::Elements(names.len() as u64));
    g.bench_function("fst decide, domain lists only", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for name in &names {
                n += usize::from(
                    snap_domains
                        .decide_dotted(&policy, black_box(name))
                        .is_blocked(),
                );
            }
            n
        })
    });
    g.bench_function("fst decide, all lists incl. 86 wildcard/regex rules", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for name in &names {
                n += usize::from(
                    snap_all
                        .decide_dotted(&policy, black_box(name))
                        .is_blocked(),
                );
            }
            n
        })
    });
    g.bench_function("HashSet of parents baseline", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for name in &names {
                n += usize::from(hash_blocked(black_box(name)));
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
