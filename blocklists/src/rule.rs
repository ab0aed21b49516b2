//! Parsed rules: what one list line means once its format is understood.

use std::fmt;

/// Which names a domain rule covers, as its format gives it (CONTRACT §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// The name itself only (`|x^`, RPZ `x CNAME .`).
    Exact,
    /// The name and every subdomain (`||x^`, plain domain lines, hosts lines).
    WithSubdomains,
    /// Only the subdomains, not the name (`||*.x^`, RPZ `*.x CNAME .`).
    SubdomainsOnly,
}

impl Scope {
    /// Whether a rule of this scope covers the listed name itself.
    pub fn covers_self(self) -> bool {
        matches!(self, Self::Exact | Self::WithSubdomains)
    }

    /// Whether a rule of this scope covers names below the listed one.
    pub fn covers_subdomains(self) -> bool {
        matches!(self, Self::WithSubdomains | Self::SubdomainsOnly)
    }

    /// The scope a rule has when it covers self and/or subdomains; `None` when neither.
    pub fn from_parts(self_: bool, sub: bool) -> Option<Self> {
        match (self_, sub) {
            (true, true) => Some(Self::WithSubdomains),
            (true, false) => Some(Self::Exact),
            (false, true) => Some(Self::SubdomainsOnly),
            (false, false) => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Exact => "exact name",
            Self::WithSubdomains => "name and subdomains",
            Self::SubdomainsOnly => "subdomains only",
        })
    }
}

/// Whether a rule blocks or allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// The rule blocks what it covers.
    Block,
    /// An exception (`@@`, RPZ `rpz-passthru.`): cancels blocks of the same list.
    Allow,
}

/// A rule on a domain name: what the fst holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// The normalised name (lower-case ASCII, no trailing dot).
    pub name: String,
    /// Which names it covers.
    pub scope: Scope,
    /// Block or allow.
    pub action: Action,
    /// AdGuard's `$important`: within a category list, wins over that list's exceptions.
    pub important: bool,
    /// 1-based line number in its file.
    pub line: u32,
}

/// A rule that is not a name: a `*` wildcard or a `/regex/`, matched over the dotted
/// lower-case query name by the bounded pattern matcher.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PatternRule {
    /// The regular expression it was translated to (regex-automata syntax, ASCII).
    pub regex: String,
    /// The rule as written, for reports and "why was this blocked".
    pub text: String,
    /// Block or allow.
    pub action: Action,
    /// AdGuard's `$important`.
    pub important: bool,
    /// 1-based line number in its file.
    pub line: u32,
}
