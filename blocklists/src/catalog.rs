//! The catalog: every category list compiled into one fst, with the category table, the
//! pattern rules, and the per-category statistics.

use std::fmt;

use fst::raw::Fst;

use crate::matcher::{walk_rev, Bits, Entry, Kind, PatternMatcher, RuleRef};
use crate::rule::{Action, Scope};

/// The most categories a catalog holds: one bit each in a [`crate::CategoryMask`].
pub const MAX_CATEGORIES: usize = 64;

/// The compiled fst bytes: built in memory, or mapped from the cache file.
pub(crate) enum FstBytes {
    Owned(Vec<u8>),
    Mapped {
        map: memmap2::Mmap,
        start: usize,
        end: usize,
    },
}

impl AsRef<[u8]> for FstBytes {
    fn as_ref(&self) -> &[u8] {
        match self {
            Self::Owned(v) => v,
            Self::Mapped { map, start, end } => map.get(*start..*end).unwrap_or(&[]),
        }
    }
}

impl fmt::Debug for FstBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Owned(v) => write!(f, "Owned({} bytes)", v.len()),
            Self::Mapped { start, end, .. } => write!(f, "Mapped({} bytes)", end - start),
        }
    }
}

/// Statistics of one list file, as compiled.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileStats {
    /// The file name inside its category folder.
    pub name: String,
    /// Lines in the file.
    pub lines: u64,
    /// Domain rules parsed (before de-duplication).
    pub rules: u64,
    /// Wildcard/regex rules parsed.
    pub patterns: u64,
    /// Lines rejected.
    pub rejected: u64,
}

/// One category of the catalog: a folder of lists.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CategoryInfo {
    /// The folder name (`ads`, `malware`, ...), which is what accounts enable.
    pub name: String,
    /// Its bit in a [`crate::CategoryMask`]: categories are sorted by name, so the index of a
    /// category changes only when categories are added or removed.
    pub index: u8,
    /// Its files, sorted by name.
    pub files: Vec<FileStats>,
    /// Rules read (domain and pattern rules, before de-duplication and `$badfilter`).
    pub rules_read: u64,
    /// Distinct names kept in the fst for this category.
    pub domains: u64,
    /// Wildcard/regex rules kept.
    pub patterns: u64,
    /// Lines rejected, in all its files.
    pub rejected: u64,
    /// Up to [`MAX_REJECTED_SAMPLES`] rejected lines as `file:line: reason`.
    pub rejected_samples: Vec<String>,
}

/// How many rejected lines per category are kept as samples.
pub const MAX_REJECTED_SAMPLES: usize = 20;

/// One wildcard/regex rule of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogPattern {
    /// The category it belongs to.
    pub category: u8,
    /// Block or allow.
    pub action: Action,
    /// `$important`.
    pub important: bool,
    /// The regex it was translated to.
    pub regex: String,
    /// `file:line: rule` as written, for "why was this blocked".
    pub text: String,
}

/// All category lists, compiled: what a snapshot shares between every account.
///
/// Immutable once built; shared as `Arc<Catalog>`. Building one is [`crate::compile_dir`] or
/// [`crate::load_or_compile`]; [`Catalog::empty`] blocks nothing.
pub struct Catalog {
    pub(crate) fst: Fst<FstBytes>,
    pub(crate) entries: Vec<Entry>,
    pub(crate) categories: Vec<CategoryInfo>,
    pub(crate) patterns: Vec<CatalogPattern>,
    pub(crate) matcher: Option<PatternMatcher>,
    pub(crate) hash: String,
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Catalog")
            .field("names", &self.fst.len())
            .field("fst_bytes", &self.fst.size())
            .field("categories", &self.categories)
            .field("patterns", &self.patterns.len())
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

impl Catalog {
    /// A catalog with no category: blocks nothing. Useful before the first compile finishes.
    pub fn empty() -> Self {
        let fst = Fst::new(FstBytes::Owned(
            fst::MapBuilder::memory()
                .into_inner()
                .expect("an empty fst always builds"),
        ))
        .expect("an empty fst is valid");
        Self {
            fst,
            entries: Vec::new(),
            categories: Vec::new(),
            patterns: Vec::new(),
            matcher: None,
            hash: String::new(),
        }
    }

    /// The categories, sorted by name; a category's position is its index.
    pub fn categories(&self) -> &[CategoryInfo] {
        &self.categories
    }

    /// The index of a category by name.
    pub fn category_index(&self, name: &str) -> Option<u8> {
        self.categories
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.index)
    }

    /// The mask of the named categories; names the catalog does not have are returned as the
    /// error (all of them), so a caller can report them.
    pub fn category_mask<'n, I>(&self, names: I) -> Result<crate::CategoryMask, Vec<String>>
    where
        I: IntoIterator<Item = &'n str>,
    {
        let mut mask = 0u64;
        let mut unknown = Vec::new();
        for name in names {
            match self.category_index(name) {
                Some(i) => mask |= 1u64 << i,
                None => unknown.push(name.to_owned()),
            }
        }
        if unknown.is_empty() {
            Ok(crate::CategoryMask(mask))
        } else {
            Err(unknown)
        }
    }

    /// The wildcard/regex rules, indexed by [`RuleRef::Pattern`] of category matches.
    pub fn patterns(&self) -> &[CatalogPattern] {
        &self.patterns
    }

    /// Distinct names in the fst (all categories).
    pub fn len(&self) -> usize {
        self.fst.len()
    }

    /// True when the catalog lists nothing.
    pub fn is_empty(&self) -> bool {
        self.fst.is_empty() && self.patterns.is_empty()
    }

    /// Size of the compiled fst, in bytes.
    pub fn fst_bytes(&self) -> usize {
        self.fst.size()
    }

    /// Memory of the pattern DFA, in bytes.
    pub fn pattern_bytes(&self) -> usize {
        self.matcher
            .as_ref()
            .map_or(0, PatternMatcher::memory_usage)
    }

    /// Whether the compiled fst is a memory map of the cache file (else owned in memory).
    pub fn is_mapped(&self) -> bool {
        matches!(self.fst.as_inner(), FstBytes::Mapped { .. })
    }

    /// The hash of the inputs this catalog was compiled from (hex SHA-256), or empty.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// True when some pattern rules exist, so matching needs the dotted name.
    #[inline]
    pub(crate) fn has_patterns(&self) -> bool {
        self.matcher.is_some()
    }

    /// Every category rule bit that covers the name (labels last first; `dotted` when the
    /// catalog has patterns), restricted to `enabled` categories; the keys the walk met go to
    /// `met`, for [`Catalog::explain`].
    #[inline]
    pub(crate) fn hits<'a, I>(
        &self,
        labels: I,
        dotted: Option<&[u8]>,
        enabled: u64,
        met: &mut Met,
    ) -> Bits
    where
        I: Iterator<Item = &'a [u8]>,
    {
        let mut hits = Bits::default();
        let entries = &self.entries;
        walk_rev(&self.fst, labels, |depth, v, at_end| {
            if let Some(e) = usize::try_from(v).ok().and_then(|i| entries.get(i)) {
                hits.or(if at_end { &e.self_ } else { &e.sub });
                met.push(depth, v, at_end);
            }
        });
        if let (Some(m), Some(name)) = (&self.matcher, dotted) {
            let patterns = &self.patterns;
            m.for_each_match(name, |i| {
                if let Some(p) = patterns.get(i) {
                    hits.set(Kind::of(p.action, p.important), 1u64 << p.category);
                }
            });
        }
        hits.block &= enabled;
        hits.allow &= enabled;
        hits.imp_block &= enabled;
        hits.imp_allow &= enabled;
        hits
    }

    /// The most specific rule of `kind` in category `cat` that covers the name, from the keys
    /// [`Catalog::hits`] met (`met`), or a second walk of `labels` when there were more than
    /// a [`Met`] holds.
    pub(crate) fn explain<'a, I>(
        &self,
        labels: I,
        met: &Met,
        dotted: Option<&[u8]>,
        cat: u8,
        kind: Kind,
    ) -> RuleRef
    where
        I: Iterator<Item = &'a [u8]>,
    {
        let bit = 1u64 << cat;
        let mut found = None;
        let entries = &self.entries;
        let mut consider = |depth: u8, v: u64, at_end: bool| {
            if let Some(e) = usize::try_from(v).ok().and_then(|i| entries.get(i)) {
                let applies = if at_end {
                    e.self_.get(kind)
                } else {
                    e.sub.get(kind)
                };
                if applies & bit != 0 {
                    let scope =
                        Scope::from_parts(e.self_.get(kind) & bit != 0, e.sub.get(kind) & bit != 0)
                            .unwrap_or(Scope::Exact);
                    found = Some(RuleRef::Domain {
                        labels: depth,
                        scope,
                    });
                }
            }
        };
        if met.overflowed {
            walk_rev(&self.fst, labels, consider);
        } else {
            for &(depth, v, at_end) in met.keys() {
                consider(depth, v, at_end);
            }
        }
        if let Some(found) = found {
            return found;
        }
        let mut pattern = None;
        if let (Some(m), Some(name)) = (&self.matcher, dotted) {
            let patterns = &self.patterns;
            m.for_each_match(name, |i| {
                if let Some(p) = patterns.get(i) {
                    if p.category == cat && Kind::of(p.action, p.important) == kind {
                        pattern = Some(pattern.map_or(i, |f: usize| f.min(i)));
                    }
                }
            });
        }
        RuleRef::Pattern(
            pattern
                .and_then(|i| u32::try_from(i).ok())
                .unwrap_or(u32::MAX),
        )
    }
}

/// The keys one walk of [`Catalog::hits`] met, parents first (few: a name has at most a handful
/// of listed ancestors), so that saying which rule decided takes no second walk: a walk through
/// the compiled lists is a chain of cache misses, and every blocked name is explained.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Met {
    keys: [(u8, u64, bool); MET_CAP],
    len: usize,
    /// More keys than [`MET_CAP`]: `explain` walks again.
    overflowed: bool,
}

/// The most keys a [`Met`] records.
const MET_CAP: usize = 8;

impl Met {
    pub(crate) fn new() -> Self {
        Self {
            keys: [(0, 0, false); MET_CAP],
            len: 0,
            overflowed: false,
        }
    }

    #[inline]
    fn push(&mut self, depth: u8, value: u64, at_end: bool) {
        match self.keys.get_mut(self.len) {
            Some(slot) => {
                *slot = (depth, value, at_end);
                self.len += 1;
            }
            None => self.overflowed = true,
        }
    }

    fn keys(&self) -> &[(u8, u64, bool)] {
        &self.keys[..self.len]
    }
}
