//! The matcher: one walk of a reversed query name through an fst, and the bounded pattern
//! matcher for wildcard and regex rules.
//!
//! Keys are reversed names (`com.example.ads`). Walking the query's labels TLD first, every
//! final node met at the end of a label is a listed parent (or the name itself): its value
//! says what that entry means for names *below* it ("sub" bits) and for *itself* ("self"
//! bits). The walk lower-cases byte by byte and allocates nothing.

use std::sync::Arc;

use fst::raw::{Fst, Output};
use regex_automata::dfa::{dense, Automaton, OverlappingState};
use regex_automata::util::syntax;
use regex_automata::{Input, MatchKind};

use crate::error::BlocklistError;
use crate::rule::{PatternRule, Rule, Scope};

/// The most wildcard/regex rules one pattern matcher takes; the rest are rejected lines.
pub const MAX_PATTERNS: usize = 1024;
/// The memory bound of one compiled pattern DFA, in bytes.
pub const MAX_PATTERN_DFA_BYTES: usize = 16 << 20;

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
/// shared lists' 86 wildcard/regex rules do not fit in 16 MiB), so the set is split:
/// - rules with a required literal (every `*` wildcard: `(?:^|\.)api.*\.hubapi\.com$` needs
///   `.hubapi.com`) get a small DFA each, run only when one DFA over all the literals
///   (Aho-Corasick-like) finds their literal in the name;
/// - the other rules (most `/regex/` rules) are packed greedily into as few bounded
///   multi-pattern DFAs as fit, and those run on every name.
#[derive(Debug, Clone)]
pub(crate) struct PatternMatcher {
    literals: Option<dense::DFA<Vec<u32>>>,
    /// Literal (DFA pattern id) → the rules that need it.
    literal_rules: Vec<Vec<u32>>,
    /// Per rule: its own DFA when it has a literal.
    singles: Vec<Option<dense::DFA<Vec<u32>>>>,
    /// DFAs that run on every name, with their pattern id → rule index.
    always: Vec<(dense::DFA<Vec<u32>>, Vec<u32>)>,
    memory: usize,
}

fn build_dfa(regexes: &[&str], kind: MatchKind) -> Result<dense::DFA<Vec<u32>>, String> {
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
        .map_err(|e| e.to_string())
}

/// The longest literal every match of `regex` must contain, when the regex is of the plain
/// shape wildcards translate to: `^` or `(?:^|\.)`, literal pieces of name characters and
/// `\.` joined by `.*`, and an optional `$`. `None` for anything else (sound, not complete).
pub(crate) fn required_literal(regex: &str) -> Option<String> {
    let body = regex
        .strip_prefix(r"(?:^|\.)")
        .or_else(|| regex.strip_prefix('^'))
        .unwrap_or(regex);
    let body = body.strip_suffix('$').unwrap_or(body);
    let mut best = String::new();
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
        if lit.len() > best.len() {
            best = lit;
        }
    }
    // Too short a literal would send most names to the rule's own DFA anyway.
    (best.len() >= 3).then_some(best)
}

impl PatternMatcher {
    /// Compiles the regexes (ASCII, matched against the dotted lower-case name). On failure
    /// the error lists the indices of the rules that cannot be compiled even alone.
    pub(crate) fn build(regexes: &[&str]) -> Result<Self, (Vec<usize>, String)> {
        if regexes.len() > MAX_PATTERNS {
            return Err((
                (MAX_PATTERNS..regexes.len()).collect(),
                format!("{} patterns, at most {MAX_PATTERNS}", regexes.len()),
            ));
        }
        let mut failed = Vec::new();
        let mut reason = String::new();
        let mut memory = 0;
        let mut singles: Vec<Option<dense::DFA<Vec<u32>>>> = vec![None; regexes.len()];
        let mut lits: Vec<String> = Vec::new();
        let mut literal_rules: Vec<Vec<u32>> = Vec::new();
        let mut rest: Vec<usize> = Vec::new();
        for (i, re) in regexes.iter().enumerate() {
            let Some(lit) = required_literal(re) else {
                rest.push(i);
                continue;
            };
            match build_dfa(&[re], MatchKind::LeftmostFirst) {
                Ok(dfa) => {
                    memory += dfa.memory_usage();
                    singles[i] = Some(dfa);
                    let idx = u32::try_from(i).unwrap_or(u32::MAX);
                    match lits.iter().position(|l| *l == lit) {
                        Some(p) => literal_rules[p].push(idx),
                        None => {
                            lits.push(lit);
                            literal_rules.push(vec![idx]);
                        }
                    }
                }
                Err(e) => {
                    failed.push(i);
                    reason = e;
                }
            }
        }
        let literals = if lits.is_empty() {
            None
        } else {
            let escaped: Vec<String> = lits.iter().map(|l| l.replace('.', r"\.")).collect();
            let refs: Vec<&str> = escaped.iter().map(String::as_str).collect();
            let dfa = build_dfa(&refs, MatchKind::All)
                .map_err(|e| ((0..regexes.len()).collect::<Vec<_>>(), e))?;
            memory += dfa.memory_usage();
            Some(dfa)
        };
        // Pack the rest greedily: grow a group while it still compiles within the bound.
        let mut always = Vec::new();
        let mut group: Vec<usize> = Vec::new();
        let mut built: Option<dense::DFA<Vec<u32>>> = None;
        for &i in &rest {
            group.push(i);
            let res: Vec<&str> = group.iter().map(|&g| regexes[g]).collect();
            match build_dfa(&res, MatchKind::All) {
                Ok(dfa) => built = Some(dfa),
                Err(e) => {
                    group.pop();
                    if let Some(dfa) = built.take() {
                        memory += dfa.memory_usage();
                        always.push((dfa, to_u32(&group)));
                    }
                    group.clear();
                    match build_dfa(&[regexes[i]], MatchKind::All) {
                        Ok(dfa) => {
                            group.push(i);
                            built = Some(dfa);
                        }
                        Err(_) => {
                            failed.push(i);
                            reason = e;
                        }
                    }
                }
            }
        }
        if let Some(dfa) = built {
            memory += dfa.memory_usage();
            always.push((dfa, to_u32(&group)));
        }
        if !failed.is_empty() {
            failed.sort_unstable();
            return Err((failed, reason));
        }
        Ok(Self {
            literals,
            literal_rules,
            singles,
            always,
            memory,
        })
    }

    /// Calls `f(index)` for every rule that matches `name` (possibly more than once).
    #[inline]
    pub(crate) fn for_each_match(&self, name: &[u8], mut f: impl FnMut(usize)) {
        let input = Input::new(name);
        for (dfa, ids) in &self.always {
            let mut state = OverlappingState::start();
            while dfa.try_search_overlapping_fwd(&input, &mut state).is_ok() {
                let Some(m) = state.get_match() else { break };
                if let Some(&i) = ids.get(m.pattern().as_usize()) {
                    f(i as usize);
                }
            }
        }
        let Some(lits) = &self.literals else { return };
        // Rules whose literal occurs, as a bitset on the stack (at most MAX_PATTERNS rules).
        let mut seen = [0u64; MAX_PATTERNS / 64];
        let mut state = OverlappingState::start();
        while lits.try_search_overlapping_fwd(&input, &mut state).is_ok() {
            let Some(m) = state.get_match() else { break };
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
                if let Some(Some(dfa)) = self.singles.get(r) {
                    if matches!(dfa.try_search_fwd(&input), Ok(Some(_))) {
                        f(r);
                    }
                }
            }
        }
    }

    pub(crate) fn memory_usage(&self) -> usize {
        self.memory
    }
}

fn to_u32(v: &[usize]) -> Vec<u32> {
    v.iter()
        .map(|&i| u32::try_from(i).unwrap_or(u32::MAX))
        .collect()
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

/// A small compiled set of domain rules with their scopes, plus wildcard/regex rules: an
/// account's own block list or own allow list.
///
/// The empty set costs nothing to make (`DomainSet::default()`) and nothing to query.
#[derive(Debug, Clone, Default)]
pub struct DomainSet {
    map: Option<fst::Map<Vec<u8>>>,
    patterns: Option<Arc<(PatternMatcher, Vec<String>)>>,
}

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
        let map = if merged.is_empty() {
            None
        } else {
            Some(fst::Map::from_iter(merged)?)
        };
        let patterns = if patterns.is_empty() {
            None
        } else {
            let regexes: Vec<&str> = patterns.iter().map(|p| p.regex.as_str()).collect();
            let matcher = PatternMatcher::build(&regexes)
                .map_err(|(_, reason)| BlocklistError::Patterns { reason })?;
            Some(Arc::new((
                matcher,
                patterns.iter().map(|p| p.text.clone()).collect(),
            )))
        };
        Ok(Self { map, patterns })
    }

    /// True when the set covers nothing.
    pub fn is_empty(&self) -> bool {
        self.map.is_none() && self.patterns.is_none()
    }

    /// How many distinct listed names (not counting patterns).
    pub fn len(&self) -> usize {
        self.map.as_ref().map_or(0, fst::Map::len)
    }

    /// The wildcard/regex rules as written, indexed by [`RuleRef::Pattern`].
    pub fn patterns(&self) -> &[String] {
        self.patterns.as_ref().map_or(&[], |p| p.1.as_slice())
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
        if let Some(map) = &self.map {
            walk_rev(map.as_fst(), labels, |depth, v, at_end| {
                let hit = if at_end {
                    v & SELF_BIT != 0
                } else {
                    v & SUB_BIT != 0
                };
                if hit {
                    let scope = Scope::from_parts(v & SELF_BIT != 0, v & SUB_BIT != 0)
                        .unwrap_or(Scope::Exact);
                    found = Some(RuleRef::Domain {
                        labels: depth,
                        scope,
                    });
                }
            });
        }
        if found.is_some() {
            return found;
        }
        if let (Some(p), Some(name)) = (&self.patterns, dotted) {
            let mut first: Option<usize> = None;
            p.0.for_each_match(name, |i| {
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
