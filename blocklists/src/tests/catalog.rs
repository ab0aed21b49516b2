//! The catalog: compiling a folder, the cache (hit, corrupt, changed input), bad folders.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use crate::{
    compile_dir, load_or_compile, AccountId, AccountPolicy, BlockMode, BlocklistError,
    CacheOutcome, ListRef, PolicySnapshot, Verdict,
};

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

fn sample_lists(dir: &Path) {
    write(
        dir,
        "ads/one.hosts",
        "0.0.0.0 ads.example tracker.example\n192.168.0.1 nope.example\n",
    );
    write(
        dir,
        "ads/two.txt",
        "||banner.example^\n@@||ok.banner.example^\n|*g00gle*^\n",
    );
    write(
        dir,
        "malware/list.rpz",
        "$TTL 60\nevil.example CNAME .\n*.bad.example CNAME .\n",
    );
    write(
        dir,
        "README.md",
        "# not a list: files at the top are ignored\n",
    );
}

fn policy_all(snapshot: &PolicySnapshot) -> AccountPolicy {
    let mask = snapshot.catalog.category_mask(["ads", "malware"]).unwrap();
    AccountPolicy::new(AccountId(7), mask, BlockMode::Nxdomain)
}

#[test]
fn compiled_folder_has_sorted_categories_stats_and_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    sample_lists(dir.path());
    let (catalog, report) = compile_dir(dir.path()).unwrap();
    let names: Vec<&str> = catalog
        .categories()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, vec!["ads", "malware"]);
    let ads = &catalog.categories()[0];
    assert_eq!(ads.files.len(), 2);
    assert_eq!(ads.domains, 4);
    assert_eq!(ads.patterns, 1);
    assert_eq!(ads.rejected, 1);
    assert_eq!(
        ads.rejected_samples[0],
        "ads/one.hosts:2: hosts entry maps to 192.168.0.1, which is a redirect, not a block"
    );
    let text = report.to_string();
    assert!(text.contains("ads/one.hosts:2:"), "{text}");
    assert!(text.contains("malware"), "{text}");

    let snapshot = PolicySnapshot::empty(Arc::new(catalog));
    let p = policy_all(&snapshot);
    let d = |n: &str| snapshot.decide_dotted(&p, n.as_bytes());
    assert!(d("x.ads.example").is_blocked());
    assert!(d("www.g00gle.example").is_blocked());
    assert!(
        matches!(d("ok.banner.example"), Verdict::Allowed { by } if by.list == ListRef::Category(0))
    );
    assert!(d("evil.example").is_blocked());
    assert_eq!(
        d("sub.evil.example"),
        Verdict::Allow,
        "RPZ `x CNAME .` is x alone"
    );
    assert_eq!(
        d("bad.example"),
        Verdict::Allow,
        "RPZ `*.x` is subdomains only"
    );
    assert!(d("a.bad.example").is_blocked());
    assert_eq!(d("nope.example"), Verdict::Allow);
}

#[test]
fn cache_hit_maps_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    sample_lists(dir.path());
    let (first, r1) = load_or_compile(dir.path(), cache.path()).unwrap();
    assert_eq!(r1.cache, CacheOutcome::Written);
    assert!(first.is_mapped());
    let (second, r2) = load_or_compile(dir.path(), cache.path()).unwrap();
    assert_eq!(r2.cache, CacheOutcome::Hit);
    assert!(second.is_mapped());
    let (fresh, _) = compile_dir(dir.path()).unwrap();
    assert_eq!(second.fst.as_bytes(), fresh.fst.as_bytes());
    assert_eq!(second.categories(), fresh.categories());
    assert_eq!(second.patterns(), fresh.patterns());
    assert_eq!(second.entries, fresh.entries);
    let snapshot = PolicySnapshot::empty(Arc::new(second));
    let p = policy_all(&snapshot);
    assert!(snapshot
        .decide_dotted(&p, b"www.g00gle.example")
        .is_blocked());
}

#[test]
fn corrupt_cache_is_detected_and_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    sample_lists(dir.path());
    let (c, _) = load_or_compile(dir.path(), cache.path()).unwrap();
    let file = cache.path().join(format!("{}.qcat", c.hash()));
    drop(c);
    let good = fs::read(&file).unwrap();
    // One flipped byte in the fst, one in the metadata, and a truncated file.
    let n = good.len();
    let mut bad_fst = good.clone();
    bad_fst[n - 40] ^= 0x55;
    let mut bad_meta = good.clone();
    bad_meta[20] ^= 0x55;
    for bad in [bad_fst, bad_meta, good[..n / 2].to_vec()] {
        fs::write(&file, &bad).unwrap();
        let (catalog, report) = load_or_compile(dir.path(), cache.path()).unwrap();
        assert!(
            matches!(report.cache, CacheOutcome::Rebuilt(_)),
            "{:?}",
            report.cache
        );
        assert_eq!(catalog.len(), 6);
        assert_eq!(
            fs::read(&file).unwrap(),
            good,
            "the cache file is rewritten whole"
        );
    }
}

#[test]
fn changed_list_misses_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    sample_lists(dir.path());
    let (a, _) = load_or_compile(dir.path(), cache.path()).unwrap();
    write(
        dir.path(),
        "ads/two.txt",
        "||banner.example^\n||more.example^\n",
    );
    let (b, report) = load_or_compile(dir.path(), cache.path()).unwrap();
    assert_ne!(a.hash(), b.hash());
    assert_eq!(report.cache, CacheOutcome::Written);
    assert!(b.patterns().is_empty());
    // The old version's file is gone (one catalog per cache folder), and the old catalog,
    // still mapped, still answers.
    let files: Vec<_> = fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(!a.is_empty() && a.is_mapped());
    let snapshot = PolicySnapshot::empty(Arc::new(a));
    assert!(snapshot
        .decide_dotted(&policy_all(&snapshot), b"ads.example")
        .is_blocked());
}

#[test]
fn folder_with_a_bad_category_name_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    sample_lists(dir.path());
    write(dir.path(), "Bad Name/list.txt", "x.example\n");
    let err = compile_dir(dir.path()).unwrap_err();
    assert!(matches!(&err, BlocklistError::BadCategoryName { name, .. } if name == "Bad Name"));
    assert!(
        err.to_string()
            .contains("`Bad Name` is not a category name"),
        "{err}"
    );
}

#[test]
fn missing_folder_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = compile_dir(&dir.path().join("absent")).unwrap_err();
    assert!(err.to_string().contains("absent"), "{err}");
}

#[test]
fn pattern_set_over_its_memory_bound_is_rejected_but_domains_still_compile() {
    let dir = tempfile::tempdir().unwrap();
    // An exponential DFA: 2^22 states for "an `a` 22 letters before the end".
    write(
        dir.path(),
        "ads/l.txt",
        "||x.example^\n/(?:a|b)*a(?:a|b){22}$/\n",
    );
    let (catalog, report) = compile_dir(dir.path()).unwrap();
    assert!(catalog.patterns().is_empty());
    let ads = &catalog.categories()[0];
    assert_eq!((ads.domains, ads.patterns, ads.rejected), (1, 0, 1));
    assert!(ads.rejected_samples[0].contains("ads/l.txt:2:"), "{report}");
    let snapshot = PolicySnapshot::empty(Arc::new(catalog));
    assert!(snapshot
        .decide_dotted(&policy_one(&snapshot), b"x.example")
        .is_blocked());
}

fn policy_one(snapshot: &PolicySnapshot) -> AccountPolicy {
    let mask = snapshot.catalog.category_mask(["ads"]).unwrap();
    AccountPolicy::new(AccountId(7), mask, BlockMode::Nxdomain)
}

#[test]
fn starter_lists_compile_with_the_default_categories_and_block_real_names() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/lists"));
    let (catalog, report) = compile_dir(dir).unwrap();
    let names: Vec<&str> = catalog
        .categories()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        names,
        vec!["ads", "adult", "gambling", "malware", "phishing"]
    );
    for c in catalog.categories() {
        assert_eq!(c.rejected, 0, "{report}");
        assert!(c.domains > 4_000, "{report}");
    }
    let snapshot = PolicySnapshot::empty(Arc::new(catalog));
    let mask = snapshot.catalog.category_mask(["ads"]).unwrap();
    let p = AccountPolicy::new(AccountId(1), mask, BlockMode::Nxdomain);
    // From the AdAway file, which ships whole.
    assert!(snapshot
        .decide_dotted(&p, b"analytics.163.com")
        .is_blocked());
    assert_eq!(snapshot.decide_dotted(&p, b"localhost"), Verdict::Allow);
}
