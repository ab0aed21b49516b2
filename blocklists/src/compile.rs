//! The compiler: a lists folder → one [`Catalog`], and the on-disk cache of compiled
//! catalogs keyed by a hash of their input.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fst::raw::Fst;
use sha2::{Digest, Sha256};

use crate::catalog::{
    Catalog, CatalogPattern, CategoryInfo, FileStats, FstBytes, MAX_CATEGORIES,
    MAX_REJECTED_SAMPLES,
};
use crate::error::BlocklistError;
use crate::matcher::{Bits, Entry, Kind, PatternMatcher, MAX_PATTERNS};
use crate::parse::{parse_text, FormatHint, ParsedList, RejectReason, Rejected};

/// Bumped whenever the compiled format or the parsers' meaning changes, so old caches miss.
const FORMAT_VERSION: u32 = 1;
/// Version 3: sparse DFAs per rule, a dense literal DFA (older files are recompiled).
const MAGIC: &[u8; 8] = b"QORGCAT3";
const CACHE_EXT: &str = "qcat";

/// One list file and the category it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListInput {
    /// The category (the sub-folder's name).
    pub category: String,
    /// The file.
    pub path: PathBuf,
}

impl ListInput {
    fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// Whether a catalog came from the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Compiled, no cache involved ([`compile_dir`]).
    NotCached,
    /// The cache had it: the fst is a memory map of the cache file.
    Hit,
    /// Compiled and written to the cache.
    Written,
    /// The cache file was corrupt (the reason), so it was compiled again and rewritten.
    Rebuilt(String),
    /// Compiled, but the cache could not be written (the reason); the catalog is in memory.
    WriteFailed(String),
}

/// What a compile read and produced: the text `qorgan compile-lists DIR` prints.
#[derive(Debug, Clone)]
pub struct CompileReport {
    /// Per category: files, rules read, names kept, rejected lines with samples.
    pub categories: Vec<CategoryInfo>,
    /// Distinct names in the fst.
    pub names: u64,
    /// Compiled fst size, in bytes.
    pub fst_bytes: u64,
    /// Wildcard/regex rules kept, and the memory of their DFA.
    pub patterns: u64,
    /// Memory of the pattern DFA, in bytes.
    pub pattern_bytes: u64,
    /// Hex SHA-256 of the inputs.
    pub hash: String,
    /// Time to hash and compile (or to hash and map the cache).
    pub elapsed: Duration,
    /// Cache hit, written, rebuilt...
    pub cache: CacheOutcome,
}

impl fmt::Display for CompileReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<16} {:>5} {:>11} {:>12} {:>8} {:>9}",
            "category", "files", "rules read", "domains kept", "patterns", "rejected"
        )?;
        for c in &self.categories {
            writeln!(
                f,
                "{:<16} {:>5} {:>11} {:>12} {:>8} {:>9}",
                c.name,
                c.files.len(),
                c.rules_read,
                c.domains,
                c.patterns,
                c.rejected
            )?;
            for s in &c.rejected_samples {
                writeln!(f, "    rejected {s}")?;
            }
            if c.rejected > c.rejected_samples.len() as u64 {
                writeln!(
                    f,
                    "    ... and {} more rejected lines",
                    c.rejected - c.rejected_samples.len() as u64
                )?;
            }
        }
        let cache = match &self.cache {
            CacheOutcome::NotCached => "not cached".to_owned(),
            CacheOutcome::Hit => "cache hit (memory-mapped)".to_owned(),
            CacheOutcome::Written => "compiled, cache written".to_owned(),
            CacheOutcome::Rebuilt(why) => format!("cache was corrupt ({why}), recompiled"),
            CacheOutcome::WriteFailed(why) => format!("compiled, cache not written: {why}"),
        };
        write!(
            f,
            "total: {} distinct names, compiled fst {} bytes, {} patterns (DFA {} bytes), {:.1} ms, {}\ninput hash: {}",
            self.names,
            self.fst_bytes,
            self.patterns,
            self.pattern_bytes,
            self.elapsed.as_secs_f64() * 1000.0,
            cache,
            self.hash
        )
    }
}

/// Whether a folder name can be a category (same rule as the config's category names).
pub(crate) fn is_category_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Lists the inputs of a lists folder: one sub-folder per category, every non-hidden file in
/// it a list. Files directly in `dir` (README, licences) and hidden entries are not lists.
fn scan_dir(dir: &Path) -> Result<Vec<ListInput>, BlocklistError> {
    let mut inputs = Vec::new();
    let mut cats: Vec<(String, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| BlocklistError::io(dir, e))? {
        let entry = entry.map_err(|e| BlocklistError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with('.') || !path.is_dir() {
            continue;
        }
        if !is_category_name(&name) {
            return Err(BlocklistError::BadCategoryName { path, name });
        }
        cats.push((name, path));
    }
    cats.sort();
    if cats.len() > MAX_CATEGORIES {
        return Err(BlocklistError::TooManyCategories {
            count: cats.len(),
            max: MAX_CATEGORIES,
        });
    }
    for (category, path) in cats {
        let mut files = Vec::new();
        for entry in fs::read_dir(&path).map_err(|e| BlocklistError::io(&path, e))? {
            let entry = entry.map_err(|e| BlocklistError::io(&path, e))?;
            let p = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') || !p.is_file() {
                continue;
            }
            files.push(p);
        }
        files.sort();
        inputs.extend(files.into_iter().map(|p| ListInput {
            category: category.clone(),
            path: p,
        }));
    }
    Ok(inputs)
}

/// Reads the inputs (sorted by category then file) and hashes names and contents.
fn read_inputs(inputs: &[ListInput]) -> Result<(Vec<Vec<u8>>, String), BlocklistError> {
    let mut hasher = Sha256::new();
    hasher.update(FORMAT_VERSION.to_le_bytes());
    let mut contents = Vec::with_capacity(inputs.len());
    for input in inputs {
        let bytes = fs::read(&input.path).map_err(|e| BlocklistError::io(&input.path, e))?;
        hasher.update(input.category.as_bytes());
        hasher.update([0]);
        hasher.update(input.file_name().as_bytes());
        hasher.update([0]);
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
        contents.push(bytes);
    }
    Ok((contents, hex::encode(hasher.finalize())))
}

/// The hash of a set of inputs: SHA-256 over the format version and each file's category,
/// name, length and contents (contents, not mtimes: a copy or a touch must not miss, and an
/// edit within the same second must not hit).
pub fn input_hash(inputs: &[ListInput]) -> Result<String, BlocklistError> {
    read_inputs(inputs).map(|(_, h)| h)
}

/// Compiles a lists folder into a catalog in memory.
pub fn compile_dir(dir: &Path) -> Result<(Catalog, CompileReport), BlocklistError> {
    let start = Instant::now();
    let inputs = scan_dir(dir)?;
    let (contents, hash) = read_inputs(&inputs)?;
    let (catalog, mut report) = compile_contents(&inputs, &contents, hash)?;
    report.elapsed = start.elapsed();
    Ok((catalog, report))
}

/// Compiles the given list files (categories are sorted by name; each input's category must
/// be a category name).
pub fn compile_lists(inputs: &[ListInput]) -> Result<(Catalog, CompileReport), BlocklistError> {
    let start = Instant::now();
    let mut inputs = inputs.to_vec();
    inputs.sort_by(|a, b| (&a.category, &a.path).cmp(&(&b.category, &b.path)));
    for i in &inputs {
        if !is_category_name(&i.category) {
            return Err(BlocklistError::BadCategoryName {
                path: i.path.clone(),
                name: i.category.clone(),
            });
        }
    }
    let (contents, hash) = read_inputs(&inputs)?;
    let (catalog, mut report) = compile_contents(&inputs, &contents, hash)?;
    report.elapsed = start.elapsed();
    Ok((catalog, report))
}

/// Per-key flags before merging: bit 0..3 the kind, bit 4 self, bit 5 sub.
fn flags(kind: Kind, self_: bool, sub: bool) -> u8 {
    let k = match kind {
        Kind::Block => 0,
        Kind::Allow => 1,
        Kind::ImpBlock => 2,
        Kind::ImpAllow => 3,
    };
    k | if self_ { 16 } else { 0 } | if sub { 32 } else { 0 }
}

fn apply(entry: &mut Entry, cat: u8, f: u8) {
    let kind = match f & 15 {
        0 => Kind::Block,
        1 => Kind::Allow,
        2 => Kind::ImpBlock,
        _ => Kind::ImpAllow,
    };
    let bit = 1u64 << cat;
    if f & 16 != 0 {
        entry.self_.set(kind, bit);
    }
    if f & 32 != 0 {
        entry.sub.set(kind, bit);
    }
}

fn compile_contents(
    inputs: &[ListInput],
    contents: &[Vec<u8>],
    hash: String,
) -> Result<(Catalog, CompileReport), BlocklistError> {
    let mut names: Vec<String> = inputs.iter().map(|i| i.category.clone()).collect();
    names.dedup();
    if names.len() > MAX_CATEGORIES {
        return Err(BlocklistError::TooManyCategories {
            count: names.len(),
            max: MAX_CATEGORIES,
        });
    }
    let mut categories: Vec<CategoryInfo> = names
        .iter()
        .enumerate()
        .map(|(i, n)| CategoryInfo {
            name: n.clone(),
            index: u8::try_from(i).unwrap_or(u8::MAX),
            ..CategoryInfo::default()
        })
        .collect();
    let index_of: HashMap<&str, u8> = categories
        .iter()
        .map(|c| (c.name.as_str(), c.index))
        .collect();

    // Parse every file; `$badfilter` applies across the whole catalog.
    let mut parsed: Vec<(u8, ParsedList)> = Vec::with_capacity(inputs.len());
    for (input, bytes) in inputs.iter().zip(contents) {
        let text = String::from_utf8_lossy(bytes);
        let file = input.file_name();
        let label = format!("{}/{}", input.category, file);
        let list = parse_text(&text, &label, FormatHint::from_file_name(&file));
        let cat = index_of.get(input.category.as_str()).copied().unwrap_or(0);
        parsed.push((cat, list));
    }
    let filters: Vec<_> = parsed
        .iter()
        .flat_map(|(_, l)| l.badfilters.iter().cloned())
        .collect();

    let mut keys: Vec<(Vec<u8>, u8, u8)> = Vec::new();
    let mut patterns: Vec<CatalogPattern> = Vec::new();
    for ((cat, list), input) in parsed.iter_mut().zip(inputs) {
        let info = &mut categories[usize::from(*cat)];
        info.rules_read += (list.rules.len() + list.patterns.len()) as u64;
        list.apply_badfilters(&filters);
        let mut stats = FileStats {
            name: input.file_name(),
            lines: list.lines,
            rules: list.rules.len() as u64,
            patterns: list.patterns.len() as u64,
            rejected: 0,
        };
        for r in &list.rules {
            let f = flags(
                Kind::of(r.action, r.important),
                r.scope.covers_self(),
                r.scope.covers_subdomains(),
            );
            keys.push((crate::name::reversed_key(&r.name), *cat, f));
        }
        let mut rejected: Vec<Rejected> = std::mem::take(&mut list.rejected);
        for p in &list.patterns {
            if patterns.len() >= MAX_PATTERNS {
                rejected.push(Rejected {
                    file: format!("{}/{}", input.category, stats.name),
                    line: p.line,
                    reason: RejectReason::TooManyPatterns,
                });
                continue;
            }
            patterns.push(CatalogPattern {
                category: *cat,
                action: p.action,
                important: p.important,
                regex: p.regex.clone(),
                text: format!("{}/{}:{}: {}", input.category, stats.name, p.line, p.text),
            });
            info.patterns += 1;
        }
        stats.rejected = rejected.len() as u64;
        info.rejected += stats.rejected;
        for r in rejected {
            if info.rejected_samples.len() < MAX_REJECTED_SAMPLES {
                info.rejected_samples.push(r.to_string());
            }
        }
        info.files.push(stats);
    }

    // A rule the bounded matcher cannot take costs that rule, never the whole catalog: it is
    // reported as rejected and the others compile.
    let mut matcher = None;
    while !patterns.is_empty() {
        let regexes: Vec<&str> = patterns.iter().map(|p| p.regex.as_str()).collect();
        match PatternMatcher::build(&regexes) {
            Ok(m) => {
                matcher = Some(m);
                break;
            }
            Err((failed, reason)) => {
                for &i in failed.iter().rev() {
                    let p = patterns.remove(i);
                    let info = &mut categories[usize::from(p.category)];
                    info.patterns = info.patterns.saturating_sub(1);
                    info.rejected += 1;
                    if info.rejected_samples.len() < MAX_REJECTED_SAMPLES {
                        info.rejected_samples.push(format!(
                            "{}: wildcard/regex rule not compiled: {reason}",
                            p.text
                        ));
                    }
                }
            }
        }
    }

    // Merge the rules of each name into one entry, intern entries, build the fst.
    keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut table: Vec<Entry> = Vec::new();
    let mut interned: HashMap<Entry, u64> = HashMap::new();
    let mut builder = fst::MapBuilder::memory();
    let mut per_cat_domains = vec![0u64; categories.len()];
    let mut i = 0;
    while i < keys.len() {
        let mut j = i;
        let mut entry = Entry::default();
        while j < keys.len() && keys[j].0 == keys[i].0 {
            apply(&mut entry, keys[j].1, keys[j].2);
            j += 1;
        }
        let mut cats = all_bits(&entry.self_) | all_bits(&entry.sub);
        while cats != 0 {
            let c = cats.trailing_zeros() as usize;
            if let Some(n) = per_cat_domains.get_mut(c) {
                *n += 1;
            }
            cats &= cats - 1;
        }
        let next = table.len() as u64;
        let idx = *interned.entry(entry).or_insert_with(|| {
            table.push(entry);
            next
        });
        builder.insert(&keys[i].0, idx)?;
        i = j;
    }
    for (info, n) in categories.iter_mut().zip(per_cat_domains) {
        info.domains = n;
    }
    let bytes = builder.into_inner()?;
    let fst = Fst::new(FstBytes::Owned(bytes))?;
    let catalog = Catalog {
        fst,
        entries: table,
        categories,
        patterns,
        matcher,
        hash,
    };
    let report = report_of(&catalog, Duration::ZERO, CacheOutcome::NotCached);
    Ok((catalog, report))
}

fn all_bits(b: &Bits) -> u64 {
    b.block | b.allow | b.imp_block | b.imp_allow
}

fn report_of(catalog: &Catalog, elapsed: Duration, cache: CacheOutcome) -> CompileReport {
    CompileReport {
        categories: catalog.categories.clone(),
        names: catalog.fst.len() as u64,
        fst_bytes: catalog.fst.size() as u64,
        patterns: catalog.patterns.len() as u64,
        pattern_bytes: catalog.pattern_bytes() as u64,
        hash: catalog.hash.clone(),
        elapsed,
        cache,
    }
}

/// Compiles `dir` unless `cache_dir` already holds the compiled catalog of exactly these
/// inputs, in which case that file is memory-mapped (a restart is a hash of the lists plus a
/// map, not a compile). A corrupt cache file is detected (checksums of the metadata and of
/// the fst) and replaced; a cache that cannot be written leaves the catalog in memory.
pub fn load_or_compile(
    dir: &Path,
    cache_dir: &Path,
) -> Result<(Catalog, CompileReport), BlocklistError> {
    let start = Instant::now();
    let inputs = scan_dir(dir)?;
    let (contents, hash) = read_inputs(&inputs)?;
    let path = cache_dir.join(format!("{hash}.{CACHE_EXT}"));
    let mut rebuilt = None;
    if path.exists() {
        match load_cache(&path, &hash) {
            Ok(catalog) => {
                let report = report_of(&catalog, start.elapsed(), CacheOutcome::Hit);
                return Ok((catalog, report));
            }
            Err(e) => {
                rebuilt = Some(match e {
                    BlocklistError::CorruptCache { reason, .. } => reason,
                    other => other.to_string(),
                });
                let _ = fs::remove_file(&path);
            }
        }
    }
    let (catalog, _) = compile_contents(&inputs, &contents, hash.clone())?;
    let outcome = match write_cache(cache_dir, &path, &catalog) {
        Ok(()) => match load_cache(&path, &hash) {
            Ok(mapped) => {
                remove_stale(cache_dir, &path);
                let cache = rebuilt.map_or(CacheOutcome::Written, CacheOutcome::Rebuilt);
                let report = report_of(&mapped, start.elapsed(), cache);
                return Ok((mapped, report));
            }
            Err(e) => CacheOutcome::WriteFailed(e.to_string()),
        },
        Err(e) => CacheOutcome::WriteFailed(format!("{e}: {}", source_text(&e))),
    };
    let report = report_of(&catalog, start.elapsed(), outcome);
    Ok((catalog, report))
}

/// Removes the cache files of other inputs, so that the folder holds one compiled catalog,
/// not one per edit of the lists. A catalog still mapped by a running process keeps working:
/// unlinking a mapped file does not unmap it.
fn remove_stale(cache_dir: &Path, keep: &Path) {
    let Ok(entries) = fs::read_dir(cache_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let p = entry.path();
        if p != keep && p.extension().is_some_and(|e| e == CACHE_EXT) {
            let _ = fs::remove_file(&p);
        }
    }
}

fn source_text(e: &BlocklistError) -> String {
    std::error::Error::source(e)
        .map(ToString::to_string)
        .unwrap_or_default()
}

// ---- cache file: MAGIC, u64 meta length, meta, SHA-256(meta), fst bytes ----

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
    fn len(&mut self, v: usize) {
        self.u32(u32::try_from(v).unwrap_or(u32::MAX));
    }
    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn bits(&mut self, b: &Bits) {
        for v in [b.block, b.allow, b.imp_block, b.imp_allow] {
            self.u64(v);
        }
    }
}

struct R<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl R<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).ok_or("length overflow")?;
        let s = self.buf.get(self.pos..end).ok_or("metadata truncated")?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn len(&mut self) -> Result<usize, String> {
        usize::try_from(self.u32()?).map_err(|e| e.to_string())
    }
    fn str(&mut self) -> Result<String, String> {
        let n = self.len()?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "bad utf-8 in metadata".to_owned())
    }
    fn bits(&mut self) -> Result<Bits, String> {
        Ok(Bits {
            block: self.u64()?,
            allow: self.u64()?,
            imp_block: self.u64()?,
            imp_allow: self.u64()?,
        })
    }
}

fn encode_meta(c: &Catalog) -> Vec<u8> {
    let mut w = W(Vec::new());
    w.u32(FORMAT_VERSION);
    w.str(&c.hash);
    w.len(c.categories.len());
    for cat in &c.categories {
        w.str(&cat.name);
        w.u8(cat.index);
        w.len(cat.files.len());
        for f in &cat.files {
            w.str(&f.name);
            for v in [f.lines, f.rules, f.patterns, f.rejected] {
                w.u64(v);
            }
        }
        for v in [cat.rules_read, cat.domains, cat.patterns, cat.rejected] {
            w.u64(v);
        }
        w.len(cat.rejected_samples.len());
        for s in &cat.rejected_samples {
            w.str(s);
        }
    }
    w.len(c.entries.len());
    for e in &c.entries {
        w.bits(&e.self_);
        w.bits(&e.sub);
    }
    w.len(c.patterns.len());
    for p in &c.patterns {
        w.u8(p.category);
        w.u8(u8::from(p.action == crate::Action::Allow));
        w.u8(u8::from(p.important));
        w.str(&p.regex);
        w.str(&p.text);
    }
    match &c.matcher {
        Some(m) => {
            let bytes = m.to_bytes();
            w.u64(bytes.len() as u64);
            w.0.extend_from_slice(&bytes);
        }
        None => w.u64(0),
    }
    w.u64(c.fst.size() as u64);
    w.0
}

struct Meta {
    hash: String,
    categories: Vec<CategoryInfo>,
    entries: Vec<Entry>,
    patterns: Vec<CatalogPattern>,
    matcher: Option<PatternMatcher>,
    fst_len: u64,
}

fn decode_meta(buf: &[u8]) -> Result<Meta, String> {
    let mut r = R { buf, pos: 0 };
    if r.u32()? != FORMAT_VERSION {
        return Err("format version differs".into());
    }
    let hash = r.str()?;
    let ncat = r.len()?;
    if ncat > MAX_CATEGORIES {
        return Err("too many categories".into());
    }
    let mut cats = Vec::with_capacity(ncat);
    for _ in 0..ncat {
        let name = r.str()?;
        let index = r.u8()?;
        let nfiles = r.len()?;
        let mut files = Vec::new();
        for _ in 0..nfiles {
            files.push(FileStats {
                name: r.str()?,
                lines: r.u64()?,
                rules: r.u64()?,
                patterns: r.u64()?,
                rejected: r.u64()?,
            });
        }
        let (rules_read, domains, patterns, rejected) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
        let nsamples = r.len()?;
        let mut rejected_samples = Vec::new();
        for _ in 0..nsamples {
            rejected_samples.push(r.str()?);
        }
        cats.push(CategoryInfo {
            name,
            index,
            files,
            rules_read,
            domains,
            patterns,
            rejected,
            rejected_samples,
        });
    }
    let nent = r.len()?;
    let mut entries = Vec::new();
    for _ in 0..nent {
        entries.push(Entry {
            self_: r.bits()?,
            sub: r.bits()?,
        });
    }
    let npat = r.len()?;
    let mut patterns = Vec::new();
    for _ in 0..npat {
        let category = r.u8()?;
        let action = if r.u8()? == 1 {
            crate::Action::Allow
        } else {
            crate::Action::Block
        };
        let important = r.u8()? == 1;
        patterns.push(CatalogPattern {
            category,
            action,
            important,
            regex: r.str()?,
            text: r.str()?,
        });
    }
    let matcher_len = usize::try_from(r.u64()?).map_err(|e| e.to_string())?;
    let matcher = if patterns.is_empty() {
        None
    } else {
        Some(PatternMatcher::from_bytes(
            r.take(matcher_len)?,
            patterns.len(),
        )?)
    };
    let fst_len = r.u64()?;
    if r.pos != buf.len() {
        return Err("trailing bytes in metadata".into());
    }
    Ok(Meta {
        hash,
        categories: cats,
        entries,
        patterns,
        matcher,
        fst_len,
    })
}

fn write_cache(cache_dir: &Path, path: &Path, c: &Catalog) -> Result<(), BlocklistError> {
    fs::create_dir_all(cache_dir).map_err(|e| BlocklistError::io(cache_dir, e))?;
    let meta = encode_meta(c);
    let tmp = cache_dir.join(format!(".{}.tmp-{}", c.hash, std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(MAGIC)?;
        f.write_all(&(meta.len() as u64).to_le_bytes())?;
        f.write_all(&meta)?;
        f.write_all(&Sha256::digest(&meta))?;
        f.write_all(c.fst.as_bytes())?;
        f.sync_all()?;
        // The name says what the contents are, so the rename is the commit: a reader sees
        // either no file or the whole file.
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        BlocklistError::io(path, e)
    })
}

/// Checks a whole cache image (header, metadata checksum, lengths) and returns its metadata
/// and where the fst starts. The fst's own checksum is checked by the caller once mapped.
fn check_image(bytes: &[u8]) -> Result<(Meta, usize), String> {
    let head = bytes.get(..16).ok_or("shorter than its header")?;
    if &head[..8] != MAGIC {
        return Err("bad magic".into());
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&head[8..16]);
    let meta_len = usize::try_from(u64::from_le_bytes(len)).map_err(|e| e.to_string())?;
    let meta_end = 16usize.checked_add(meta_len).ok_or("bad length")?;
    let sum_end = meta_end.checked_add(32).ok_or("bad length")?;
    let meta = bytes.get(16..meta_end).ok_or("metadata truncated")?;
    let sum = bytes.get(meta_end..sum_end).ok_or("checksum truncated")?;
    if Sha256::digest(meta).as_slice() != sum {
        return Err("metadata checksum mismatch".into());
    }
    let meta = decode_meta(meta)?;
    let fst_len = bytes.len() - sum_end;
    if fst_len as u64 != meta.fst_len {
        return Err(format!("fst is {fst_len} bytes, {} expected", meta.fst_len));
    }
    Ok((meta, sum_end))
}

fn load_cache(path: &Path, hash: &str) -> Result<Catalog, BlocklistError> {
    let corrupt = |reason: String| BlocklistError::CorruptCache {
        path: path.to_owned(),
        reason,
    };
    let file = fs::File::open(path).map_err(|e| BlocklistError::io(path, e))?;
    // SAFETY: the cache file is written whole to a temporary name and renamed into place
    // (never modified in place afterwards); its name is the hash of its inputs, so nobody
    // rewrites it with other contents. Every byte read through the map is checked below
    // (metadata checksum, fst checksum) before use. The remaining hazard of any mmap — an
    // outside process truncating the file while mapped — is documented in the crate README.
    #[allow(unsafe_code)]
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| BlocklistError::io(path, e))?;
    let (meta, start) = check_image(&map).map_err(corrupt)?;
    if meta.hash != hash {
        return Err(corrupt("input hash differs from the file name".into()));
    }
    let end = map.len();
    let fst = Fst::new(FstBytes::Mapped { map, start, end }).map_err(|e| corrupt(e.to_string()))?;
    fst.verify()
        .map_err(|e| corrupt(format!("fst checksum: {e}")))?;
    Ok(catalog_of(meta, fst))
}

fn catalog_of(meta: Meta, fst: Fst<FstBytes>) -> Catalog {
    Catalog {
        fst,
        entries: meta.entries,
        categories: meta.categories,
        patterns: meta.patterns,
        matcher: meta.matcher,
        hash: meta.hash,
    }
}

/// Whether `hash` can name a cache file: 64 lower-case hex digits (a SHA-256), so that a
/// hash received from elsewhere can never point outside the cache folder.
pub(crate) fn is_catalog_hash(hash: &str) -> bool {
    hash.len() == 64
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Catalog {
    /// The catalog as the bytes of its cache file (`.qcat`): what a control plane sends to a
    /// resolver node, which checks it with [`Catalog::from_bytes`] or [`store_catalog`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let meta = encode_meta(self);
        let fst = self.fst.as_bytes();
        let mut out = Vec::with_capacity(16 + meta.len() + 32 + fst.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&Sha256::digest(&meta));
        out.extend_from_slice(fst);
        out
    }

    /// Reads what [`Catalog::to_bytes`] wrote, checking the header, the metadata checksum
    /// (SHA-256), the lengths and the fst checksum; the catalog is then held in memory.
    ///
    /// The checksums catch corruption, not a forger: bytes crafted to pass them could still
    /// make the fst library panic during a lookup, so accept catalogs only from the
    /// authenticated control plane (as the cache file itself is trusted on disk).
    pub fn from_bytes(mut bytes: Vec<u8>) -> Result<Self, BlocklistError> {
        let corrupt = |reason: String| BlocklistError::CorruptCache {
            path: PathBuf::from("<received catalog>"),
            reason,
        };
        let (meta, start) = check_image(&bytes).map_err(corrupt)?;
        if !meta.hash.is_empty() && !is_catalog_hash(&meta.hash) {
            return Err(corrupt("catalog hash is not a SHA-256 in hex".into()));
        }
        // Moves the fst to the front without a second buffer of the catalog's size.
        bytes.drain(..start);
        let fst = Fst::new(FstBytes::Owned(bytes)).map_err(|e| corrupt(e.to_string()))?;
        fst.verify()
            .map_err(|e| corrupt(format!("fst checksum: {e}")))?;
        Ok(catalog_of(meta, fst))
    }
}

/// Checks a received catalog image (as [`Catalog::from_bytes`]) and stores it in `cache_dir`
/// under its hash, atomically, so that [`load_cached_catalog`] (e.g. a resolver node restarting
/// while the control plane is down) maps it again; returns the mapped catalog. Cache files of
/// other catalogs in the folder are removed.
pub fn store_catalog(cache_dir: &Path, bytes: &[u8]) -> Result<Catalog, BlocklistError> {
    let received = Catalog::from_bytes(bytes.to_vec())?;
    if !is_catalog_hash(&received.hash) {
        return Err(BlocklistError::CorruptCache {
            path: PathBuf::from("<received catalog>"),
            reason: "a catalog without an input hash cannot be stored".into(),
        });
    }
    let path = cache_dir.join(format!("{}.{CACHE_EXT}", received.hash));
    write_cache(cache_dir, &path, &received)?;
    let mapped = load_cache(&path, &received.hash)?;
    remove_stale(cache_dir, &path);
    Ok(mapped)
}

/// Maps the catalog of `hash` stored in `cache_dir` by [`store_catalog`] or
/// [`load_or_compile`]; a missing file is an `Io` error, a damaged one `CorruptCache`.
pub fn load_cached_catalog(cache_dir: &Path, hash: &str) -> Result<Catalog, BlocklistError> {
    if !is_catalog_hash(hash) {
        return Err(BlocklistError::CorruptCache {
            path: cache_dir.to_owned(),
            reason: format!("`{hash}` is not a catalog hash"),
        });
    }
    load_cache(&cache_dir.join(format!("{hash}.{CACHE_EXT}")), hash)
}
