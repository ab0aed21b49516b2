//! The matcher: one walk of a reversed query name through an fst, and the bounded pattern
//! matcher for wildcard and regex rules.
//!
//! Keys are reversed names (`com.example.ads`). Walking the query's labels TLD first, every
//! final node met at the end of a label is a listed parent (or the name itself): its value
//! says what that entry means for names *below* it ("sub" bits) and for *itself* ("self"
//! bits). The walk lower-cases byte by byte and allocates nothing.

use std::sync::Arc;

use aho_corasick::AhoCorasick;
use fst::raw::{Fst, Output};
use regex_automata::dfa::{dense, sparse, Automaton};
use regex_automata::util::syntax;
use regex_automata::{Input, MatchKind};

use crate::error::BlocklistError;
use crate::rule::{PatternRule, Rule, Scope};

/// The most wildcard/regex rules one pattern matcher takes; the rest are rejected lines.
pub const MAX_PATTERNS: usize = 1024;
/// The memory bound of one compiled pattern DFA, in bytes.
pub const MAX_PATTERN_DFA_BYTES: usize = 16 << 20;
/// The most literals one rule is filed under in the literal prefilter (see
/// [`required_literals`]): more would select a rule for most names anyway.
const MAX_LITERAL_SET: usize = 16;

/// Walks `labels` (last label first) through `fst`, calling `f(depth, value, at_end)` for every
/// key met at a label boundary: `depth` is how many labels from the right matched, `at_end`
/// whether that key is the whole name (else it is a parent).
///
/// A label that is empty or holds a `.` byte (possible in wire-format names) ends the walk:
/// such a name is no host name, and matching it against dotted keys would be unsound.
#[inline]
pub(crate) fn walk_rev<'a, D, I, F>(fst: &Fst<D>, labels: I, mut f: F)
where
    D: AsRef<[u8]>,
    I: Iterator<Item = &'a [u8]>,
    F: FnMut(u8, u64, bool),
{
    let mut node = fst.root();
    let mut out = Output::zero();
    let mut pending: Option<(u8, u64)> = None;
    let mut depth: u8 = 0;
    for label in labels {
        if let Some((d, v)) = pending.take() {
            f(d, v, false);
        }
        if label.is_empty() {
            return;
        }
        if depth > 0 {
            match node.find_input(b'.') {
                None => return,
                Some(i) => {
                    let t = node.transition(i);
                    out = out.cat(t.out);
                    node = fst.node(t.addr);
                }
            }
        }
        for &b in label {
            if b == b'.' {
                return;
            }
            match node.find_input(b.to_ascii_lowercase()) {
                None => return,
                Some(i) => {
                    let t = node.transition(i);
                    out = out.cat(t.out);
                    node = fst.node(t.addr);
                }
            }
        }
        depth = depth.saturating_add(1);
        if node.is_final() {
            pending = Some((depth, out.cat(node.final_output()).value()));
        }
    }
    if let Some((d, v)) = pending {
        f(d, v, true);
    }
}

/// Category bitsets of one kind of rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct Bits {
    pub(crate) block: u64,
    pub(crate) allow: u64,
    pub(crate) imp_block: u64,
    pub(crate) imp_allow: u64,
}

impl Bits {
    #[inline]
    pub(crate) fn or(&mut self, o: &Self) {
        self.block |= o.block;
        self.allow |= o.allow;
        self.imp_block |= o.imp_block;
        self.imp_allow |= o.imp_allow;
    }

    /// Categories whose verdict is "block": an important allow beats everything, an important
    /// block beats plain allows, a plain allow beats a plain block.
    #[inline]
    pub(crate) fn blocked(&self) -> u64 {
        !self.imp_allow & (self.imp_block | (self.block & !self.allow))
    }

    /// Categories that had a block rule cancelled by their own exception.
    #[inline]
    pub(crate) fn cancelled(&self) -> u64 {
        (self.block | self.imp_block) & !self.blocked()
    }

    pub(crate) fn get(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Block => self.block,
            Kind::Allow => self.allow,
            Kind::ImpBlock => self.imp_block,
            Kind::ImpAllow => self.imp_allow,
        }
    }

    pub(crate) fn set(&mut self, kind: Kind, mask: u64) {
        match kind {
            Kind::Block => self.block |= mask,
            Kind::Allow => self.allow |= mask,
            Kind::ImpBlock => self.imp_block |= mask,
            Kind::ImpAllow => self.imp_allow |= mask,
        }
    }
}

/// The four kinds of category rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Block,
    Allow,
    ImpBlock,
    ImpAllow,
}

impl Kind {
    pub(crate) fn of(action: crate::rule::Action, important: bool) -> Self {
        match (action, important) {
            (crate::rule::Action::Block, false) => Self::Block,
            (crate::rule::Action::Allow, false) => Self::Allow,
            (crate::rule::Action::Block, true) => Self::ImpBlock,
            (crate::rule::Action::Allow, true) => Self::ImpAllow,
        }
    }
}

/// What one catalog key means: for the name itself, and for names below it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct Entry {
    pub(crate) self_: Bits,
    pub(crate) sub: Bits,
}

/// A compiled set of wildcard/regex rules, searched without allocation or lock.
///
/// One multi-pattern DFA over `.*`-rich wildcards grows exponentially with their number (the
/// shared lists' 86 wildcard/regex rules do not fit in 16 MiB), so every rule gets its own
/// small DFA, and:
/// - a rule that can only match below a domain (`(?:^|\.)api.*\.hubapi\.com$` only matches
///   names under `hubapi.com`) runs only when a walk of the name through a small fst of
///   such domains meets it — the same walk as the catalog's, nearly free;
/// - else a rule with a required literal (every `*` wildcard: `(?:^|\.)api.*\.hubapi\.com$`
///   needs `.hubapi.com`; `(piwik|matomo)\.` needs one of two) runs only when an Aho-Corasick
///   search over all the literals finds one of its literals in the name;
/// - the other rules (most `/regex/` rules, usually few) run on every name, stopping at their
///   first match or dead state.
///
/// The DFAs serialise into the catalog cache, so a warm start does not determinise again (the
/// literal automaton is rebuilt from its literals: microseconds).
#[derive(Debug, Clone)]
pub(crate) struct PatternMatcher {
    /// Reversed domain suffixes (`com.hubapi`) that rules require → index into `suffix_rules`.
    suffixes: Option<fst::Map<Vec<u8>>>,
    /// Suffix → the rules that need it.
    suffix_rules: Vec<Vec<u32>>,
    /// The literals of `literal_rules`, in pattern-id order (what the cache stores).
    literal_strings: Vec<String>,
    /// Their search automaton; `None` when no rule has a literal.
    literals: Option<AhoCorasick>,
    /// Literal (pattern id) → the rules that need it.
    literal_rules: Vec<Vec<u32>>,
    /// Every rule's own DFA.
    singles: Vec<Dfa>,
    /// Rules without a literal: run on every name.
    always: Vec<u32>,
}

/// The rules' own DFAs are sparse: the shared lists' 86 rules took 4.3 MB as dense tables (in
/// the catalog file and again on the heap of every process) and take 1.4 MB sparse. A sparse
/// step is slower, but most rules run only for the names their suffix or literal selects; only
/// the rules without either (`always`) run on every name.
type Dfa = sparse::DFA<Vec<u8>>;

/// The literal search runs on every name: Aho-Corasick (its own automaton choice: a 94 KB DFA
/// for the shared lists' 45 literals). As a sparse regex DFA it was 17 % of the fast path's
/// CPU at 40k QPS (`perf`), as a dense one 0.96 MB of tables.
fn literal_searcher(literals: &[String]) -> Result<Option<AhoCorasick>, String> {
    if literals.is_empty() {
        return Ok(None);
    }
    AhoCorasick::builder()
        .match_kind(aho_corasick::MatchKind::Standard)
        .build(literals)
        .map(Some)
        .map_err(|e| format!("literal prefilter: {e}"))
}

fn build_dfa(regexes: &[&str], kind: MatchKind) -> Result<Dfa, String> {
    dense::Builder::new()
        .configure(
            dense::Config::new()
                .match_kind(kind)
                .dfa_size_limit(Some(MAX_PATTERN_DFA_BYTES))
                .determinize_size_limit(Some(2 * MAX_PATTERN_DFA_BYTES)),
        )
        .syntax(syntax_config())
        .thompson(regex_automata::nfa::thompson::Config::new().utf8(false))
        .build_many(regexes)
        .map_err(|e| e.to_string())?
        .to_sparse()
        .map_err(|e| e.to_string())
}

/// The literal pieces of a regex of the plain shape wildcards translate to (`^` or
/// `(?:^|\.)`, pieces of name characters and `\.` joined by `.*`, an optional `$`), and
/// whether it ends with `$`. `None` for any other regex.
fn literal_pieces(regex: &str) -> Option<(Vec<String>, bool)> {
    let body = regex
        .strip_prefix(r"(?:^|\.)")
        .or_else(|| regex.strip_prefix('^'))
        .unwrap_or(regex);
    let (body, anchored_end) = match body.strip_suffix('$') {
        Some(b) => (b, true),
        None => (body, false),
    };
    let mut pieces = Vec::new();
    for piece in body.split(".*") {
        let mut lit = String::with_capacity(piece.len());
        let mut chars = piece.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('.') => lit.push('.'),
                    _ => return None,
                },
                c if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' => {
                    lit.push(c);
                }
                _ => return None,
            }
        }
        pieces.push(lit);
    }
    Some((pieces, anchored_end))
}

/// The longest literal every match of `regex` must contain (see [`literal_pieces`]);
/// `None` when there is none of at least 3 bytes (sound, not complete).
pub(crate) fn required_literal(regex: &str) -> Option<String> {
    let (pieces, _) = literal_pieces(regex)?;
    let best = pieces.into_iter().max_by_key(String::len)?;
    // Too short a literal would send most names to the rule's own DFA anyway.
    (best.len() >= 3).then_some(best)
}

/// Literals of which every match of `regex` must contain at least one, read from its syntax
/// tree: a literal is one such set; an alternation needs a set from every branch (their union);
/// a concatenation, a capture and a repetition of at least one take their parts' best set.
/// Catches what [`required_literal`] cannot: `(^|.+\.)(piwik|matomo)\d*\.[^.]+$` needs
/// `piwik` or `matomo`; `^94\.242\.247\.(2[0-9]|3[0-2])$` needs `94.242.247.`. Parsed
/// case-sensitively and lower-cased: names are matched lower-cased. `None` unless every literal
/// of the set has at least 3 bytes and there are at most [`MAX_LITERAL_SET`] (sound, not
/// complete: a rule without a set runs on every name).
pub(crate) fn required_literals(regex: &str) -> Option<Vec<String>> {
    use regex_syntax::hir::{Hir, HirKind};
    fn usable(set: &[Vec<u8>]) -> bool {
        !set.is_empty() && set.len() <= MAX_LITERAL_SET && set.iter().all(|l| l.len() >= 3)
    }
    fn set_of(hir: &Hir) -> Option<Vec<Vec<u8>>> {
        match hir.kind() {
            HirKind::Literal(lit) => Some(vec![lit.0.to_ascii_lowercase()]),
            HirKind::Capture(c) => set_of(&c.sub),
            HirKind::Repetition(r) if r.min >= 1 => set_of(&r.sub),
            HirKind::Concat(parts) => parts
                .iter()
                .filter_map(set_of)
                .filter(|s| usable(s))
                // The set with the longest shortest literal, then the fewest literals.
                .max_by_key(|s| {
                    let shortest = s.iter().map(Vec::len).min().unwrap_or(0);
                    (shortest, std::cmp::Reverse(s.len()))
                }),
            HirKind::Alternation(branches) => {
                let mut all = Vec::new();
                for b in branches {
                    all.extend(set_of(b)?);
                }
                all.sort_unstable();
                all.dedup();
                Some(all)
            }
            _ => None,
        }
    }
    let hir = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(regex)
        .ok()?;
    let set = set_of(&hir).filter(|s| usable(s))?;
    set.into_iter().map(|l| String::from_utf8(l).ok()).collect()
}

/// The domain every match of `regex` must be a subdomain of, when it ends with a literal
/// `$`-anchored piece that holds a dot: `-go\.kelkoogroup\.net$` → `kelkoogroup.net`.
/// Only domains of two labels or more (a bare TLD would select half of all names).
pub(crate) fn required_suffix(regex: &str) -> Option<String> {
    let (pieces, anchored_end) = literal_pieces(regex)?;
    if !anchored_end {
        return None;
    }
    let last = pieces.last()?;
    let (_, suffix) = last.split_once('.')?;
    let ok = suffix.contains('.') && suffix.split('.').all(|l| !l.is_empty());
    ok.then(|| suffix.to_owned())
}

impl PatternMatcher {
    /// Compiles the regexes (ASCII, matched against the dotted lower-case name). On failure
    /// the error lists the indices of the rules that cannot be compiled.
    pub(crate) fn build(regexes: &[&str]) -> Result<Self, (Vec<usize>, String)> {
        if regexes.len() > MAX_PATTERNS {
            return Err((
                (MAX_PATTERNS..regexes.len()).collect(),
                format!("{} patterns, at most {MAX_PATTERNS}", regexes.len()),
            ));
        }
        let mut failed = Vec::new();
        let mut reason = String::new();
        let mut singles = Vec::with_capacity(regexes.len());
        let mut lits: Vec<String> = Vec::new();
        let mut literal_rules: Vec<Vec<u32>> = Vec::new();
        let mut always: Vec<u32> = Vec::new();
        let mut suffix_keys: Vec<(Vec<u8>, u64)> = Vec::new();
        let mut suffix_rules: Vec<Vec<u32>> = Vec::new();
        for (i, re) in regexes.iter().enumerate() {
            match build_dfa(&[re], MatchKind::LeftmostFirst) {
                Ok(dfa) => singles.push(dfa),
                Err(e) => {
                    failed.push(i);
                    reason = e;
                    continue;
                }
            }
            let idx = u32::try_from(i).unwrap_or(u32::MAX);
            if let Some(suffix) = required_suffix(re) {
                let key = crate::name::reversed_key(&suffix);
                match suffix_keys.iter().position(|(k, _)| *k == key) {
                    Some(p) => suffix_rules[p].push(idx),
                    None => {
                        suffix_keys.push((key, suffix_rules.len() as u64));
                        suffix_rules.push(vec![idx]);
                    }
                }
                continue;
            }
            let Some(needed) = required_literal(re)
                .map(|l| vec![l])
                .or_else(|| required_literals(re))
            else {
                always.push(idx);
                continue;
            };
            for lit in needed {
                match lits.iter().position(|l| *l == lit) {
                    Some(p) => literal_rules[p].push(idx),
                    None => {
                        lits.push(lit);
                        literal_rules.push(vec![idx]);
                    }
                }
            }
        }
        if !failed.is_empty() {
            return Err((failed, reason));
        }
        let literals =
            literal_searcher(&lits).map_err(|e| ((0..regexes.len()).collect::<Vec<_>>(), e))?;
        suffix_keys.sort_unstable();
        let suffixes = if suffix_keys.is_empty() {
            None
        } else {
            Some(
                fst::Map::from_iter(suffix_keys)
                    .map_err(|e| ((0..regexes.len()).collect::<Vec<_>>(), e.to_string()))?,
            )
        };
        Ok(Self {
            suffixes,
            suffix_rules,
            literal_strings: lits,
            literals,
            literal_rules,
            singles,
            always,
        })
    }

    /// Calls `f(index)` for every rule that matches `name` (possibly more than once).
    #[inline]
    pub(crate) fn for_each_match(&self, name: &[u8], mut f: impl FnMut(usize)) {
        // The search API (not a hand-written step loop): it stops at the first match.
        let input = Input::new(name).earliest(true);
        let single = |r: usize| -> bool {
            self.singles
                .get(r)
                .is_some_and(|dfa| matches!(dfa.try_search_fwd(&input), Ok(Some(_))))
        };
        for &r in &self.always {
            let r = r as usize;
            if single(r) {
                f(r);
            }
        }
        if let Some(map) = &self.suffixes {
            walk_rev(
                map.as_fst(),
                crate::name::labels_rev(name),
                |_, v, at_end| {
                    let rules = usize::try_from(v)
                        .ok()
                        .and_then(|v| self.suffix_rules.get(v));
                    if let (false, Some(rules)) = (at_end, rules) {
                        for &r in rules {
                            if single(r as usize) {
                                f(r as usize);
                            }
                        }
                    }
                },
            );
        }
        let Some(lits) = &self.literals else { return };
        // Rules already tried, as a bitset on the stack (at most MAX_PATTERNS rules).
        let mut seen = [0u64; MAX_PATTERNS / 64];
        // Standard match semantics (set at build), so the overlapping search cannot fail.
        let Ok(found) = lits.try_find_overlapping_iter(name) else {
            return;
        };
        for m in found {
            let Some(rules) = self.literal_rules.get(m.pattern().as_usize()) else {
                continue;
            };
            for &r in rules {
                let r = r as usize;
                let (word, bit) = (r / 64, 1u64 << (r % 64));
                let Some(w) = seen.get_mut(word) else {
                    continue;
                };
                if *w & bit != 0 {
                    continue;
                }
                *w |= bit;
                if single(r) {
                    f(r);
                }
            }
        }
    }

    pub(crate) fn memory_usage(&self) -> usize {
        self.singles.iter().map(|d| d.memory_usage()).sum::<usize>()
            + self.literals.as_ref().map_or(0, AhoCorasick::memory_usage)
            + self.suffixes.as_ref().map_or(0, |m| m.as_fst().size())
    }

    /// Serialises the compiled DFAs (little-endian) for the catalog cache.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        fn put(out: &mut Vec<u8>, body: &[u8]) {
            out.extend_from_slice(&(body.len() as u64).to_le_bytes());
            out.extend_from_slice(body);
        }
        let mut out = Vec::new();
        let u32s = |out: &mut Vec<u8>, v: &[u32]| {
            out.extend_from_slice(&(v.len() as u64).to_le_bytes());
            for x in v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
        out.extend_from_slice(&(self.singles.len() as u64).to_le_bytes());
        for d in &self.singles {
            put(&mut out, &d.to_bytes_little_endian());
        }
        out.extend_from_slice(&(self.literal_strings.len() as u64).to_le_bytes());
        for lit in &self.literal_strings {
            put(&mut out, lit.as_bytes());
        }
        out.extend_from_slice(&(self.literal_rules.len() as u64).to_le_bytes());
        for rules in &self.literal_rules {
            u32s(&mut out, rules);
        }
        u32s(&mut out, &self.always);
        let fst_bytes = self
            .suffixes
            .as_ref()
            .map_or(&[][..], |m| m.as_fst().as_bytes());
        out.extend_from_slice(&(fst_bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(fst_bytes);
        out.extend_from_slice(&(self.suffix_rules.len() as u64).to_le_bytes());
        for rules in &self.suffix_rules {
            u32s(&mut out, rules);
        }
        out
    }

    /// Reads what [`Self::to_bytes`] wrote; every DFA is validated by regex-automata.
    pub(crate) fn from_bytes(buf: &[u8], rules: usize) -> Result<Self, String> {
        struct Rd<'a>(&'a [u8]);
        impl Rd<'_> {
            fn take(&mut self, n: usize) -> Result<&[u8], String> {
                if self.0.len() < n {
                    return Err("pattern matcher truncated".into());
                }
                let (a, b) = self.0.split_at(n);
                self.0 = b;
                Ok(a)
            }
            fn u64(&mut self) -> Result<usize, String> {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                usize::try_from(u64::from_le_bytes(a)).map_err(|e| e.to_string())
            }
            fn u32s(&mut self) -> Result<Vec<u32>, String> {
                let n = self.u64()?;
                let b = self.take(n.checked_mul(4).ok_or("bad length")?)?;
                Ok(b.chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect())
            }
            fn dfa(&mut self) -> Result<Dfa, String> {
                let n = self.u64()?;
                let body = self.take(n)?;
                // Validated by regex-automata (a sparse DFA needs no alignment).
                let (dfa, _) =
                    sparse::DFA::from_bytes(body).map_err(|e| format!("pattern DFA: {e}"))?;
                Ok(dfa.to_owned())
            }
            fn string(&mut self) -> Result<String, String> {
                let n = self.u64()?;
                let body = self.take(n)?;
                String::from_utf8(body.to_vec()).map_err(|e| format!("literal: {e}"))
            }
        }
        let mut r = Rd(buf);
        let n = r.u64()?;
        if n != rules {
            return Err(format!("{n} pattern DFAs for {rules} rules"));
        }
        let mut singles = Vec::with_capacity(n);
        for _ in 0..n {
            singles.push(r.dfa()?);
        }
        let nlit = r.u64()?;
        if nlit > MAX_PATTERNS * MAX_LITERAL_SET {
            return Err(format!("{nlit} literals"));
        }
        let mut literal_strings = Vec::with_capacity(nlit);
        for _ in 0..nlit {
            literal_strings.push(r.string()?);
        }
        let literals = literal_searcher(&literal_strings)?;
        let nl = r.u64()?;
        let mut literal_rules = Vec::new();
        for _ in 0..nl {
            literal_rules.push(r.u32s()?);
        }
        let always = r.u32s()?;
        let n = r.u64()?;
        let fst_bytes = r.take(n)?.to_vec();
        let suffixes = if fst_bytes.is_empty() {
            None
        } else {
            Some(fst::Map::new(fst_bytes).map_err(|e| format!("suffix fst: {e}"))?)
        };
        let ns = r.u64()?;
        let mut suffix_rules = Vec::new();
        for _ in 0..ns {
            suffix_rules.push(r.u32s()?);
        }
        if !r.0.is_empty() {
            return Err("trailing bytes after the pattern matcher".into());
        }
        if nl != literal_strings.len() {
            return Err(format!(
                "{nl} literal rule lists for {} literals",
                literal_strings.len()
            ));
        }
        Ok(Self {
            suffixes,
            suffix_rules,
            literal_strings,
            literals,
            literal_rules,
            singles,
            always,
        })
    }
}

/// The regex syntax every pattern is read with: bytes, not Unicode (names are ASCII).
pub(crate) fn syntax_config() -> syntax::Config {
    syntax::Config::new()
        .unicode(false)
        .utf8(false)
        .case_insensitive(true)
}

/// Checks one regex alone, so that a bad one is a rejected line, not a failed build.
pub(crate) fn check_regex(regex: &str) -> Result<(), String> {
    syntax::parse_with(regex, &syntax_config())
        .map(|_| ())
        .map_err(|e| {
            // The first line of regex-syntax's message says what is wrong; the rest is a
            // drawing of the pattern that does not belong in a one-line report.
            let text = e.to_string();
            text.lines()
                .rev()
                .find(|l| l.starts_with("error:"))
                .unwrap_or(&text)
                .to_owned()
        })
}

/// Writes the dotted lower-case name of `labels` (last label first) into `buf`, returning
/// the filled tail, or `None` when it does not fit (no valid name is that long).
#[inline]
pub(crate) fn dotted_into<'b, 'a, I>(labels: I, buf: &'b mut [u8; 256]) -> Option<&'b [u8]>
where
    I: Iterator<Item = &'a [u8]>,
{
    let mut pos = buf.len();
    for (i, label) in labels.enumerate() {
        let need = label.len() + usize::from(i > 0);
        if need > pos {
            return None;
        }
        if i > 0 {
            pos -= 1;
            buf[pos] = b'.';
        }
        let start = pos - label.len();
        for (dst, &b) in buf[start..pos].iter_mut().zip(label) {
            *dst = b.to_ascii_lowercase();
        }
        pos = start;
    }
    Some(&buf[pos..])
}

/// Which rule of a list matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleRef {
    /// A domain rule: the last `labels` labels of the query name are the listed name.
    Domain {
        /// How many labels from the right matched.
        labels: u8,
        /// The matched rule's scope.
        scope: Scope,
    },
    /// A wildcard/regex rule: the index into the list's patterns
    /// ([`crate::Catalog::patterns`] for categories, [`DomainSet::patterns`] for own lists).
    Pattern(u32),
}

const SELF_BIT: u64 = 1;
const SUB_BIT: u64 = 2;

/// Own lists up to this many names are kept as a sorted array instead of an fst. Building an
/// fst has a fixed cost (its builder allocates and clears a node registry of 20,000 cells,
/// ~200 µs, and leaves the heap fragmented), which for 100,000 accounts × 100 rules meant
/// 22 s and 1.1 GB at start; a sorted array of 100 names builds in microseconds, costs its
/// bytes, and answers by one binary search per label of the query.
pub(crate) const SORTED_MAX: usize = 4096;

/// Reversed keys in increasing order, concatenated, with their scope bits.
#[derive(Debug)]
pub(crate) struct SortedKeys {
    bytes: Box<[u8]>,
    /// End offset of each key in `bytes`.
    ends: Box<[u32]>,
    bits: Box<[u8]>,
}

impl SortedKeys {
    fn build(keys: &[(Vec<u8>, u64)]) -> Self {
        let total: usize = keys.iter().map(|(k, _)| k.len()).sum();
        let mut bytes = Vec::with_capacity(total);
        let mut ends = Vec::with_capacity(keys.len());
        let mut bits = Vec::with_capacity(keys.len());
        for (k, v) in keys {
            bytes.extend_from_slice(k);
            ends.push(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
            bits.push(u8::try_from(*v & (SELF_BIT | SUB_BIT)).unwrap_or(0));
        }
        Self {
            bytes: bytes.into_boxed_slice(),
            ends: ends.into_boxed_slice(),
            bits: bits.into_boxed_slice(),
        }
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn key(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.bytes[start..self.ends[i] as usize]
    }

    /// The same walk as [`walk_rev`] over an fst: `f(depth, bits, at_end)` for every listed
    /// parent of the name (at_end false) and for the name itself (at_end true).
    #[inline]
    fn walk<'a, I, F>(&self, labels: I, mut f: F)
    where
        I: Iterator<Item = &'a [u8]>,
        F: FnMut(u8, u64, bool),
    {
        let mut buf = [0u8; 256];
        let mut len = 0usize;
        let mut depth: u8 = 0;
        let mut pending: Option<(u8, u64)> = None;
        for label in labels {
            if let Some((d, v)) = pending.take() {
                f(d, v, false);
            }
            if label.is_empty() || label.len() + usize::from(depth > 0) > buf.len() - len {
                return;
            }
            if depth > 0 {
                buf[len] = b'.';
                len += 1;
            }
            for &b in label {
                if b == b'.' {
                    return;
                }
                buf[len] = b.to_ascii_lowercase();
                len += 1;
            }
            depth = depth.saturating_add(1);
            let prefix = &buf[..len];
            let i = partition_point(self.len(), |j| self.key(j) < prefix);
            if i == self.len() {
                return;
            }
            let k = self.key(i);
            if k == prefix {
                pending = Some((depth, u64::from(self.bits[i])));
            } else if !k.starts_with(prefix) {
                // No listed name lies below this one.
                return;
            }
        }
        if let Some((d, v)) = pending {
            f(d, v, true);
        }
    }
}

/// The first index in `0..n` for which `less` is false (`less` true then false over the range).
fn partition_point(n: usize, less: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if less(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// An own list's names: a sorted array when small, an fst when large.
#[derive(Debug)]
enum Keys {
    Sorted(SortedKeys),
    Fst(fst::Map<Vec<u8>>),
}

impl Keys {
    fn len(&self) -> usize {
        match self {
            Self::Sorted(k) => k.len(),
            Self::Fst(m) => m.len(),
        }
    }

    fn entries(&self) -> Vec<(Vec<u8>, u64)> {
        use fst::Streamer;
        match self {
            Self::Sorted(k) => (0..k.len())
                .map(|i| (k.key(i).to_vec(), u64::from(k.bits[i])))
                .collect(),
            Self::Fst(m) => {
                let mut out = Vec::with_capacity(m.len());
                let mut stream = m.stream();
                while let Some((k, v)) = stream.next() {
                    out.push((k.to_vec(), v));
                }
                out
            }
        }
    }
}

/// A small compiled set of domain rules with their scopes, plus wildcard/regex rules: an
/// account's own block list or own allow list.
///
/// The empty set costs nothing to make (`DomainSet::default()`) and nothing to query.
#[derive(Debug, Clone, Default)]
pub struct DomainSet {
    /// Shared: an account's sets are held by the control plane's book, the snapshot store and
    /// the published policy at once, and a clone must not copy them.
    map: Option<Arc<Keys>>,
    patterns: Option<Arc<OwnPatterns>>,
}

/// The wildcard/regex rules of a [`DomainSet`]: compiled, and as given (the snapshot wire
/// format sends the regexes, so they are kept next to their DFAs).
#[derive(Debug)]
struct OwnPatterns {
    matcher: PatternMatcher,
    regexes: Vec<String>,
    texts: Vec<String>,
}

/// Two sets are equal when they cover the same names with the same scopes and hold the same
/// pattern rules (same regexes and texts, in the same order).
impl PartialEq for DomainSet {
    fn eq(&self, other: &Self) -> bool {
        let fst_eq = match (&self.map, &other.map) {
            (None, None) => true,
            (Some(a), Some(b)) => a.entries() == b.entries(),
            _ => false,
        };
        fst_eq
            && self.pattern_regexes() == other.pattern_regexes()
            && self.patterns() == other.patterns()
    }
}

impl Eq for DomainSet {}

impl DomainSet {
    /// Builds a set from domain rules and pattern rules. The rules' actions are ignored: the
    /// set only says which names it covers, and the caller decides what covering means.
    pub fn from_rules(rules: &[Rule], patterns: &[PatternRule]) -> Result<Self, BlocklistError> {
        let mut keys: Vec<(Vec<u8>, u64)> = rules
            .iter()
            .map(|r| {
                let mut bits = 0;
                if r.scope.covers_self() {
                    bits |= SELF_BIT;
                }
                if r.scope.covers_subdomains() {
                    bits |= SUB_BIT;
                }
                (crate::name::reversed_key(&r.name), bits)
            })
            .collect();
        keys.sort_unstable();
        let mut merged: Vec<(Vec<u8>, u64)> = Vec::with_capacity(keys.len());
        for (k, v) in keys {
            match merged.last_mut() {
                Some((lk, lv)) if *lk == k => *lv |= v,
                _ => merged.push((k, v)),
            }
        }
        Self::from_parts(
            merged,
            patterns.iter().map(|p| p.regex.clone()).collect(),
            patterns.iter().map(|p| p.text.clone()).collect(),
        )
    }

    /// Builds a set from its canonical parts: reversed keys in strictly increasing order with
    /// their scope bits (see [`Self::entries`]), and the pattern rules' regexes and texts.
    pub(crate) fn from_parts(
        keys: Vec<(Vec<u8>, u64)>,
        regexes: Vec<String>,
        texts: Vec<String>,
    ) -> Result<Self, BlocklistError> {
        let map = if keys.is_empty() {
            None
        } else {
            // Strictly increasing keys are the caller's promise (and the fst's check).
            if keys.len() <= SORTED_MAX && keys.windows(2).all(|w| w[0].0 < w[1].0) {
                Some(Arc::new(Keys::Sorted(SortedKeys::build(&keys))))
            } else {
                Some(Arc::new(Keys::Fst(fst::Map::from_iter(keys)?)))
            }
        };
        let patterns = if regexes.is_empty() {
            None
        } else {
            let refs: Vec<&str> = regexes.iter().map(String::as_str).collect();
            let matcher = PatternMatcher::build(&refs)
                .map_err(|(_, reason)| BlocklistError::Patterns { reason })?;
            Some(Arc::new(OwnPatterns {
                matcher,
                regexes,
                texts,
            }))
        };
        Ok(Self { map, patterns })
    }

    /// Every listed name as its reversed key (`com.example.ads`), in increasing order, with
    /// its scope bits (1: the name itself, 2: its subdomains). Used by the snapshot wire
    /// format; not for the hot path.
    pub(crate) fn entries(&self) -> Vec<(Vec<u8>, u64)> {
        self.map.as_ref().map_or_else(Vec::new, |m| m.entries())
    }

    /// The wildcard/regex rules' regexes, in the order of [`Self::patterns`].
    pub fn pattern_regexes(&self) -> &[String] {
        self.patterns.as_ref().map_or(&[], |p| p.regexes.as_slice())
    }

    /// True when the set covers nothing.
    pub fn is_empty(&self) -> bool {
        self.map.is_none() && self.patterns.is_none()
    }

    /// How many distinct listed names (not counting patterns).
    pub fn len(&self) -> usize {
        self.map.as_ref().map_or(0, |m| m.len())
    }

    /// The wildcard/regex rules as written, indexed by [`RuleRef::Pattern`].
    pub fn patterns(&self) -> &[String] {
        self.patterns.as_ref().map_or(&[], |p| p.texts.as_slice())
    }

    /// True when the set has wildcard/regex rules (and so needs the dotted name).
    pub fn has_patterns(&self) -> bool {
        self.patterns.is_some()
    }

    /// The most specific rule covering the name given as labels (last first), and, when the
    /// set has patterns, as its dotted lower-case form; `None` when nothing covers it.
    #[inline]
    pub fn find<'a, I>(&self, labels: I, dotted: Option<&[u8]>) -> Option<RuleRef>
    where
        I: Iterator<Item = &'a [u8]>,
    {
        let mut found = None;
        let visit = |depth: u8, v: u64, at_end: bool| {
            let hit = if at_end {
                v & SELF_BIT != 0
            } else {
                v & SUB_BIT != 0
            };
            if hit {
                let scope =
                    Scope::from_parts(v & SELF_BIT != 0, v & SUB_BIT != 0).unwrap_or(Scope::Exact);
                found = Some(RuleRef::Domain {
                    labels: depth,
                    scope,
                });
            }
        };
        match self.map.as_deref() {
            Some(Keys::Sorted(keys)) => keys.walk(labels, visit),
            Some(Keys::Fst(map)) => walk_rev(map.as_fst(), labels, visit),
            None => {}
        }
        if found.is_some() {
            return found;
        }
        if let (Some(p), Some(name)) = (&self.patterns, dotted) {
            let mut first: Option<usize> = None;
            p.matcher.for_each_match(name, |i| {
                first = Some(first.map_or(i, |f| f.min(i)));
            });
            if let Some(i) = first {
                return Some(RuleRef::Pattern(u32::try_from(i).unwrap_or(u32::MAX)));
            }
        }
        None
    }

    /// Whether the set covers a dotted name (convenience for tests and tools; allocates nothing).
    pub fn covers_dotted(&self, name: &[u8]) -> bool {
        let mut buf = [0u8; 256];
        let dotted = if self.has_patterns() {
            dotted_into(crate::name::labels_rev(name), &mut buf)
        } else {
            None
        };
        self.find(crate::name::labels_rev(name), dotted).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(m: &PatternMatcher, name: &[u8]) -> Vec<usize> {
        let mut found = Vec::new();
        m.for_each_match(name, |r| found.push(r));
        found.sort_unstable();
        found
    }

    #[test]
    fn a_pattern_matcher_image_reads_back_and_a_damaged_one_is_an_error_not_a_panic() {
        let built = PatternMatcher::build(&[
            r"^ads[0-9]+\.",
            r"(^|\.)tracker\.hubapi\.com$",
            r"metrics",
            r"^[a-z]{3}\.bad$",
        ])
        .expect("built");
        let image = built.to_bytes();
        let back = PatternMatcher::from_bytes(&image, 4).expect("the image reads back");
        for name in [
            &b"ads12.example.com"[..],
            b"x.tracker.hubapi.com",
            b"site-metrics.net",
            b"abc.bad",
            b"clean.example",
        ] {
            assert_eq!(matches(&back, name), matches(&built, name), "{name:?}");
        }
        assert_eq!(matches(&back, b"ads12.example.com"), vec![0]);
        assert_eq!(matches(&back, b"abc.bad"), vec![3]);

        // Cut anywhere (the catalog cache on disk or a node's received image): an error.
        let cuts = (0..image.len()).filter(|n| n % 7 == 0 || image.len() - n < 64);
        for len in cuts {
            assert!(
                PatternMatcher::from_bytes(&image[..len], 4).is_err(),
                "cut at {len} of {}",
                image.len()
            );
        }
        let mut longer = image.clone();
        longer.push(0);
        let Err(err) = PatternMatcher::from_bytes(&longer, 4) else {
            panic!("trailing byte");
        };
        assert!(err.contains("trailing"), "{err}");
        let Err(err) = PatternMatcher::from_bytes(&image, 3) else {
            panic!("rule count");
        };
        assert!(err.contains("4 pattern DFAs for 3 rules"), "{err}");
        // A first DFA claiming more bytes than there are.
        let mut long_dfa = image.clone();
        long_dfa[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(PatternMatcher::from_bytes(&long_dfa, 4).is_err());
        // No rules and more literals than any build makes: refused before reading them.
        let mut many = 0u64.to_le_bytes().to_vec();
        let too_many = u64::try_from(MAX_PATTERNS * MAX_LITERAL_SET + 1).expect("fits");
        many.extend_from_slice(&too_many.to_le_bytes());
        let Err(err) = PatternMatcher::from_bytes(&many, 0) else {
            panic!("literal count");
        };
        assert!(err.contains("literals"), "{err}");
    }
}
