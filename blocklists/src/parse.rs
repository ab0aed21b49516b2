//! List parsers: hosts files, plain domain lists, adblock/AdGuard DNS syntax and RPZ zone
//! files, recognised line by line (with an optional per-file hint), into [`Rule`]s,
//! [`PatternRule`]s and [`Rejected`] lines.
//!
//! One bad line never rejects a file: it becomes a [`Rejected`] with `file:line` and why.
//! Rules are never widened: an adblock modifier the DNS filter cannot honour (`$third-party`,
//! `$domain=`, `$dnstype=`, ...) rejects the line instead of being dropped silently.
//!
//! | line | meaning |
//! | --- | --- |
//! | `0.0.0.0 a.example b.example` (also `127.0.0.1`, `::`, `::1`) | block each name and its subdomains; `localhost`-style names are ignored |
//! | `a.example` | block it and its subdomains |
//! | `*.a.example` | block its subdomains only |
//! | `\|\|a.example^` / `@@\|\|a.example^` | block / allow it and its subdomains |
//! | `\|a.example^` | the name alone |
//! | `\|\|*.a.example^` | subdomains only |
//! | other `*` wildcards, `/regex/` | the bounded pattern matcher |
//! | `$important`, `$badfilter`, `$dnsrewrite=NXDOMAIN` (or `REFUSED`) | honoured |
//! | `a.example CNAME .` (RPZ) | the name alone; `*.a.example CNAME .` its subdomains only; `CNAME rpz-passthru.` allows |
//! | `#`, `!`, `;` comments, `[Adblock Plus]`, `$TTL`, SOA, NS, blank | skipped |

use std::fmt;
use std::net::IpAddr;

use crate::matcher::check_regex;
use crate::name::{normalize, NameError};
use crate::rule::{Action, PatternRule, Rule, Scope};

/// A hint for a whole file, from its name; lines are still recognised one by one, the hint
/// only settles lines that could be read two ways (an RPZ file's relative names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FormatHint {
    /// Recognise every line by itself (the default).
    #[default]
    Auto,
    /// An RPZ zone file (`.rpz`, `.zone`): every record line is an RPZ record.
    Rpz,
}

impl FormatHint {
    /// The hint a file name gives: `*.rpz`, `*.zone`, `*.rpz.txt`, `*.zone.txt` are RPZ.
    pub fn from_file_name(name: &str) -> Self {
        let lower = name.to_ascii_lowercase();
        let stem = lower.strip_suffix(".txt").unwrap_or(&lower);
        if stem.ends_with(".rpz") || stem.ends_with(".zone") || stem.ends_with(".db") {
            Self::Rpz
        } else {
            Self::Auto
        }
    }
}

/// Why a line was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// The name on the line is not a usable domain name.
    InvalidName {
        /// The name as written.
        name: String,
        /// What is wrong with it.
        error: NameError,
    },
    /// An adblock modifier with no meaning for a DNS filter (`$third-party`, `$script`, ...).
    UnsupportedModifier(String),
    /// An adblock modifier that narrows the rule in a way this filter cannot honour
    /// (`$client=`, `$dnstype=`, `$ctag=`, `$denyallow=`): ignoring it would widen the block.
    NarrowingModifier(String),
    /// `$dnsrewrite` to something other than a block (NXDOMAIN, REFUSED).
    DnsRewrite(String),
    /// A cosmetic (element hiding or scriptlet) rule: browsers only.
    Cosmetic,
    /// A rule on a URL path, port or query, not a host name.
    PathRule,
    /// A wildcard or regex that matches every name.
    MatchesEverything,
    /// A `/regex/` the regex engine refuses (look-around, bad syntax).
    BadRegex(String),
    /// A hosts line that maps names to a real address: a redirect, not a block.
    HostsAddress(IpAddr),
    /// A hosts line with an address and no name.
    HostsNoName,
    /// An RPZ record this filter does not act on (local data, other triggers, rewrites).
    Rpz(String),
    /// No supported format reads this line.
    Unrecognized,
    /// More pattern rules than the bounded matcher takes ([`crate::MAX_PATTERNS`]).
    TooManyPatterns,
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidName { name, error } => write!(f, "`{name}`: {error}"),
            Self::UnsupportedModifier(m) => {
                write!(f, "modifier `${m}` has no meaning for a DNS filter")
            }
            Self::NarrowingModifier(m) => write!(
                f,
                "modifier `${m}` is not supported, and ignoring it would widen the rule"
            ),
            Self::DnsRewrite(v) => write!(
                f,
                "`$dnsrewrite={v}` rewrites the answer; only NXDOMAIN or REFUSED (a block) is supported"
            ),
            Self::Cosmetic => write!(f, "cosmetic rule (element hiding) has no DNS meaning"),
            Self::PathRule => write!(f, "rule on a URL path, port or query, not a host name"),
            Self::MatchesEverything => write!(f, "rule would match every name"),
            Self::BadRegex(e) => write!(f, "regular expression not supported: {e}"),
            Self::HostsAddress(ip) => {
                write!(f, "hosts entry maps to {ip}, which is a redirect, not a block")
            }
            Self::HostsNoName => write!(f, "hosts entry without a name"),
            Self::Rpz(what) => write!(f, "RPZ: {what}"),
            Self::Unrecognized => write!(f, "not a rule in any supported list format"),
            Self::TooManyPatterns => write!(
                f,
                "more than {} wildcard/regex rules; this one is not used",
                crate::MAX_PATTERNS
            ),
        }
    }
}

/// A rejected line, reported as `file:line: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The file (or list) label given to the parser.
    pub file: String,
    /// 1-based line number.
    pub line: u32,
    /// Why it was rejected.
    pub reason: RejectReason,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.reason)
    }
}

/// What `$badfilter` cancels: the rule identical to it without `$badfilter`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BadFilter {
    /// A domain rule.
    Domain {
        /// Name.
        name: String,
        /// Scope.
        scope: Scope,
        /// Action.
        action: Action,
        /// `$important`.
        important: bool,
    },
    /// A wildcard/regex rule.
    Pattern {
        /// Its regex.
        regex: String,
        /// Action.
        action: Action,
        /// `$important`.
        important: bool,
    },
}

/// One parsed list (a file, or a customer's own list text).
#[derive(Debug, Clone, Default)]
pub struct ParsedList {
    /// Domain rules, in file order (duplicates kept).
    pub rules: Vec<Rule>,
    /// Wildcard/regex rules.
    pub patterns: Vec<PatternRule>,
    /// `$badfilter` rules (already applied to this list; kept to apply across lists).
    pub badfilters: Vec<BadFilter>,
    /// Rejected lines.
    pub rejected: Vec<Rejected>,
    /// Lines read.
    pub lines: u64,
    /// Comment and blank lines, directives and SOA/NS records.
    pub skipped: u64,
    /// Hosts entries that are not blocks (`localhost`, `broadcasthost`, `ip6-*`, ...).
    pub ignored: u64,
}

impl ParsedList {
    /// Removes every rule a `$badfilter` in `filters` names.
    pub fn apply_badfilters(&mut self, filters: &[BadFilter]) {
        if filters.is_empty() {
            return;
        }
        let set: std::collections::HashSet<&BadFilter> = filters.iter().collect();
        self.rules.retain(|r| {
            !set.contains(&BadFilter::Domain {
                name: r.name.clone(),
                scope: r.scope,
                action: r.action,
                important: r.important,
            })
        });
        self.patterns.retain(|p| {
            !set.contains(&BadFilter::Pattern {
                regex: p.regex.clone(),
                action: p.action,
                important: p.important,
            })
        });
    }
}

/// Names on hosts lines that are the machine's own entries, not blocks.
fn is_local_hosts_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    let n = n.strip_suffix('.').unwrap_or(&n);
    matches!(
        n,
        "localhost"
            | "localhost.localdomain"
            | "localhost4"
            | "localhost4.localdomain4"
            | "localhost6"
            | "localhost6.localdomain6"
            | "local"
            | "broadcasthost"
            | "0.0.0.0"
    ) || n.starts_with("ip6-")
}

enum Parsed {
    Rule(Rule),
    Pattern(PatternRule),
    BadFilter(BadFilter),
}

struct RpzState {
    active: bool,
    origin: Option<String>,
    in_parens: bool,
    last_owner: Option<String>,
}

/// Parses a whole list. `file` labels rejected lines (`file:line: reason`); `hint` comes
/// from [`FormatHint::from_file_name`] for files, or is [`FormatHint::Auto`] for text a
/// customer pasted. The list's own `$badfilter` rules are applied before returning.
pub fn parse_text(text: &str, file: &str, hint: FormatHint) -> ParsedList {
    let mut out = ParsedList::default();
    let mut rpz = RpzState {
        active: hint == FormatHint::Rpz,
        origin: None,
        in_parens: false,
        last_owner: None,
    };
    for (i, raw) in text.lines().enumerate() {
        let line = u32::try_from(i + 1).unwrap_or(u32::MAX);
        out.lines += 1;
        let mut reject = |reason| {
            out.rejected.push(Rejected {
                file: file.to_owned(),
                line,
                reason,
            });
        };
        let raw = raw.strip_prefix('\u{feff}').unwrap_or(raw);
        let t = raw.trim();
        if t.is_empty()
            || t.starts_with('!')
            || t.starts_with(';')
            || (t.starts_with('#') && !t.starts_with("##") && !t.starts_with("#@#"))
            || (t.starts_with('[') && t.ends_with(']'))
        {
            out.skipped += 1;
            continue;
        }
        let upper_start = t.get(..7).map(str::to_ascii_uppercase).unwrap_or_default();
        let is_directive = upper_start.starts_with("$TTL")
            || upper_start.starts_with("$ORIGIN")
            || upper_start.starts_with("$INCLUD")
            || upper_start.starts_with("$GENERA");
        if rpz.in_parens || is_directive || (rpz.active && !looks_adblock(t)) {
            rpz.active = true;
            match parse_rpz(raw, line, &mut rpz) {
                Ok(Some(rule)) => out.rules.push(rule),
                Ok(None) => out.skipped += 1,
                Err(reason) => reject(reason),
            }
            continue;
        }
        if is_cosmetic(t) {
            reject(RejectReason::Cosmetic);
            continue;
        }
        if looks_adblock(t) {
            match parse_adblock(t, line) {
                Ok(Parsed::Rule(r)) => out.rules.push(r),
                Ok(Parsed::Pattern(p)) => out.patterns.push(p),
                Ok(Parsed::BadFilter(b)) => out.badfilters.push(b),
                Err(reason) => reject(reason),
            }
            continue;
        }
        let body = t.split('#').next().unwrap_or("").trim();
        let tokens: Vec<&str> = body.split_whitespace().collect();
        let Some(&first) = tokens.first() else {
            out.skipped += 1;
            continue;
        };
        if let Ok(ip) = first.parse::<IpAddr>() {
            if !(ip.is_unspecified() || ip.is_loopback()) {
                reject(RejectReason::HostsAddress(ip));
                continue;
            }
            if tokens.len() == 1 {
                reject(RejectReason::HostsNoName);
                continue;
            }
            for name in &tokens[1..] {
                if is_local_hosts_name(name) {
                    out.ignored += 1;
                    continue;
                }
                match normalize(name) {
                    Ok(n) => out.rules.push(Rule {
                        name: n,
                        scope: Scope::WithSubdomains,
                        action: Action::Block,
                        important: false,
                        line,
                    }),
                    Err(error) => out.rejected.push(Rejected {
                        file: file.to_owned(),
                        line,
                        reason: RejectReason::InvalidName {
                            name: (*name).to_owned(),
                            error,
                        },
                    }),
                }
            }
            continue;
        }
        if tokens.len() >= 2 {
            if tokens.iter().any(|t| is_rr_type(t)) {
                match parse_rpz(raw, line, &mut rpz) {
                    Ok(Some(rule)) => out.rules.push(rule),
                    Ok(None) => out.skipped += 1,
                    Err(reason) => reject(reason),
                }
            } else {
                reject(RejectReason::Unrecognized);
            }
            continue;
        }
        // A plain domain line: the name and its subdomains; `*.x` its subdomains only.
        let parsed = if first.contains('*') {
            parse_adblock(&format!("|{first}^"), line)
        } else {
            name_rule(first, Scope::WithSubdomains, Action::Block, false, line)
        };
        match parsed {
            Ok(Parsed::Rule(r)) => out.rules.push(r),
            Ok(Parsed::Pattern(p)) => out.patterns.push(p),
            Ok(Parsed::BadFilter(b)) => out.badfilters.push(b),
            Err(reason) => reject(reason),
        }
    }
    let filters = std::mem::take(&mut out.badfilters);
    out.apply_badfilters(&filters);
    out.badfilters = filters;
    out
}

fn looks_adblock(t: &str) -> bool {
    t.starts_with("@@")
        || t.starts_with('|')
        || (t.starts_with('/') && t.len() > 1)
        || t.contains('^')
        || (t.contains('$') && !t.contains(char::is_whitespace))
}

fn is_cosmetic(t: &str) -> bool {
    [
        "##", "#@#", "#?#", "#$#", "#%#", "#@$#", "#@%#", "#@?#", "$$", "$@$",
    ]
    .iter()
    .any(|m| t.contains(m))
}

fn is_rr_type(t: &str) -> bool {
    matches!(
        t.to_ascii_uppercase().as_str(),
        "CNAME" | "SOA" | "NS" | "A" | "AAAA" | "TXT" | "MX" | "PTR" | "SRV" | "DNAME"
    )
}

fn name_rule(
    name: &str,
    scope: Scope,
    action: Action,
    important: bool,
    line: u32,
) -> Result<Parsed, RejectReason> {
    match normalize(name) {
        Ok(name) => Ok(Parsed::Rule(Rule {
            name,
            scope,
            action,
            important,
            line,
        })),
        Err(error) => Err(RejectReason::InvalidName {
            name: name.to_owned(),
            error,
        }),
    }
}

/// Parses one adblock/AdGuard DNS rule.
fn parse_adblock(t: &str, line: u32) -> Result<Parsed, RejectReason> {
    let (action, s) = match t.strip_prefix("@@") {
        Some(rest) => (Action::Allow, rest),
        None => (Action::Block, t),
    };
    // Split the rule body from its modifiers. A regex body ends at its closing slash.
    let (body, mods) = if s.starts_with('/') && s.len() > 1 {
        let close = s
            .rfind('/')
            .filter(|&i| i > 0)
            .ok_or(RejectReason::Unrecognized)?;
        let (b, rest) = s.split_at(close + 1);
        match rest {
            "" => (b, ""),
            r if r.starts_with('$') => (b, &r[1..]),
            _ => return Err(RejectReason::Unrecognized),
        }
    } else {
        match s.split_once('$') {
            Some((b, m)) => (b, m),
            None => (s, ""),
        }
    };
    let mut important = false;
    let mut badfilter = false;
    for m in mods.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let lower = m.to_ascii_lowercase();
        let (key, value) = match lower.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (lower.as_str(), None),
        };
        match (key, value) {
            ("important", None) => important = true,
            ("badfilter", None) => badfilter = true,
            ("dnsrewrite", Some(v)) => {
                let v = v.trim();
                if !(v.eq_ignore_ascii_case("nxdomain") || v.eq_ignore_ascii_case("refused")) {
                    return Err(RejectReason::DnsRewrite(
                        m.split_once('=').map_or(v, |x| x.1).to_owned(),
                    ));
                }
                if action == Action::Allow {
                    // `@@...$dnsrewrite=...` disables a rewrite; there is no allow here.
                    return Err(RejectReason::DnsRewrite(v.to_owned()));
                }
            }
            ("client" | "dnstype" | "ctag" | "denyallow" | "app", _) => {
                return Err(RejectReason::NarrowingModifier(m.to_owned()));
            }
            _ => return Err(RejectReason::UnsupportedModifier(m.to_owned())),
        }
    }
    let built = adblock_body(body, action, important, line)?;
    if !badfilter {
        return Ok(built);
    }
    Ok(Parsed::BadFilter(match built {
        Parsed::Rule(r) => BadFilter::Domain {
            name: r.name,
            scope: r.scope,
            action: r.action,
            important: r.important,
        },
        Parsed::Pattern(p) => BadFilter::Pattern {
            regex: p.regex,
            action: p.action,
            important: p.important,
        },
        Parsed::BadFilter(b) => b,
    }))
}

/// The rule body (without `@@` and modifiers) as a domain rule or a pattern.
fn adblock_body(
    body: &str,
    action: Action,
    important: bool,
    line: u32,
) -> Result<Parsed, RejectReason> {
    let text = body.to_owned();
    if let Some(inner) = body.strip_prefix('/').and_then(|b| b.strip_suffix('/')) {
        if inner.is_empty() {
            return Err(RejectReason::MatchesEverything);
        }
        check_regex(inner).map_err(RejectReason::BadRegex)?;
        return Ok(Parsed::Pattern(PatternRule {
            regex: inner.to_owned(),
            text,
            action,
            important,
            line,
        }));
    }
    #[derive(PartialEq)]
    enum Anchor {
        Domain,
        Start,
        None,
    }
    let (anchor, rest) = if let Some(r) = body.strip_prefix("||") {
        (Anchor::Domain, r)
    } else if let Some(r) = body.strip_prefix('|') {
        (Anchor::Start, r)
    } else {
        (Anchor::None, body)
    };
    let (rest, ended) = match rest.strip_suffix('|') {
        Some(r) => (r.strip_suffix('^').unwrap_or(r), true),
        None => match rest.strip_suffix('^') {
            Some(r) => (r, true),
            None => (rest, false),
        },
    };
    if rest.contains(['/', ':', '?', '=', '&', '^', '|']) {
        return Err(RejectReason::PathRule);
    }
    if rest.chars().all(|c| c == '*' || c == '.') {
        return Err(RejectReason::MatchesEverything);
    }
    let has_star = rest.contains('*');
    if !has_star && ended {
        match anchor {
            Anchor::Domain => {
                return name_rule(rest, Scope::WithSubdomains, action, important, line)
            }
            Anchor::Start => return name_rule(rest, Scope::Exact, action, important, line),
            Anchor::None => {}
        }
    }
    if let Some(parent) = rest.strip_prefix("*.") {
        if anchor != Anchor::None && ended && !parent.contains('*') {
            return name_rule(parent, Scope::SubdomainsOnly, action, important, line);
        }
    }
    // A wildcard (or an unanchored partial name): translate to a regex over the dotted name.
    let lower = rest.to_ascii_lowercase();
    let mut regex = String::with_capacity(lower.len() + 16);
    regex.push_str(match anchor {
        Anchor::Domain => r"(?:^|\.)",
        Anchor::Start => "^",
        Anchor::None => "",
    });
    for part in lower.split('*') {
        // Each literal piece is checked as a name fragment: letters, digits, `-`, `_`, `.`.
        if let Some(c) = part
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
        {
            return Err(RejectReason::InvalidName {
                name: rest.to_owned(),
                error: NameError::BadChar { ch: c },
            });
        }
    }
    let pieces: Vec<String> = lower.split('*').map(|p| p.replace('.', r"\.")).collect();
    regex.push_str(&pieces.join(".*"));
    if ended {
        regex.push('$');
    }
    check_regex(&regex).map_err(RejectReason::BadRegex)?;
    Ok(Parsed::Pattern(PatternRule {
        regex,
        text,
        action,
        important,
        line,
    }))
}

/// Parses one line of an RPZ zone file; `Ok(None)` for directives and records with no
/// policy meaning (SOA, NS).
fn parse_rpz(raw: &str, line: u32, st: &mut RpzState) -> Result<Option<Rule>, RejectReason> {
    let data = raw.split(';').next().unwrap_or("");
    if st.in_parens {
        if data.contains(')') {
            st.in_parens = false;
        }
        return Ok(None);
    }
    let continuation = data.starts_with([' ', '\t']);
    let mut tokens = data.split_whitespace();
    let Some(first) = tokens.next() else {
        return Ok(None);
    };
    let upper = first.to_ascii_uppercase();
    match upper.as_str() {
        "$TTL" => return Ok(None),
        "$ORIGIN" => {
            let origin = tokens
                .next()
                .ok_or(RejectReason::Rpz("$ORIGIN without a name".into()))?;
            st.origin = if origin == "." {
                None
            } else {
                Some(
                    normalize(origin).map_err(|error| RejectReason::InvalidName {
                        name: origin.to_owned(),
                        error,
                    })?,
                )
            };
            return Ok(None);
        }
        "$INCLUDE" | "$GENERATE" => {
            return Err(RejectReason::Rpz(format!("{first} is not supported")));
        }
        _ => {}
    }
    let mut rest: Vec<&str> = Vec::with_capacity(4);
    let owner = if continuation {
        rest.push(first);
        st.last_owner
            .clone()
            .ok_or(RejectReason::Rpz("record without an owner name".into()))?
    } else {
        st.last_owner = Some(first.to_owned());
        first.to_owned()
    };
    rest.extend(tokens);
    // Skip the optional TTL and class, in either order.
    let mut idx = 0;
    while idx < rest.len() && idx < 2 {
        let tok = rest[idx];
        let is_ttl = tok.chars().next().is_some_and(|c| c.is_ascii_digit())
            && tok.chars().all(|c| c.is_ascii_alphanumeric());
        let is_class = matches!(tok.to_ascii_uppercase().as_str(), "IN" | "CH" | "HS" | "CS");
        if is_ttl || is_class {
            idx += 1;
        } else {
            break;
        }
    }
    let rtype = rest
        .get(idx)
        .map(|t| t.to_ascii_uppercase())
        .unwrap_or_default();
    match rtype.as_str() {
        "SOA" => {
            if data.contains('(') && !data.contains(')') {
                st.in_parens = true;
            }
            return Ok(None);
        }
        "NS" => return Ok(None),
        "CNAME" => {}
        other if !is_rr_type(other) => return Err(RejectReason::Unrecognized),
        other => {
            return Err(RejectReason::Rpz(format!(
                "local-data record `{other}` is not supported (only CNAME policy actions)"
            )))
        }
    }
    let target = rest
        .get(idx + 1)
        .ok_or(RejectReason::Rpz("CNAME without a target".into()))?;
    let action = match target.to_ascii_lowercase().as_str() {
        "." | "*." | "rpz-drop." => Action::Block,
        "rpz-passthru." => Action::Allow,
        t => {
            return Err(RejectReason::Rpz(format!(
            "rewrite to `{t}` is not supported (only `.`, `*.`, `rpz-drop.` and `rpz-passthru.`)"
        )))
        }
    };
    // The trigger is the owner name relative to the zone's origin.
    let lower_owner = owner.to_ascii_lowercase();
    let trigger = if lower_owner == "@" {
        return Err(RejectReason::Rpz(
            "a policy on the zone apex is not a name".into(),
        ));
    } else if let Some(abs) = lower_owner.strip_suffix('.') {
        match &st.origin {
            Some(origin) => match abs
                .strip_suffix(origin.as_str())
                .and_then(|h| h.strip_suffix('.'))
            {
                Some(head) => head.to_owned(),
                None if abs == origin => {
                    return Err(RejectReason::Rpz(
                        "a policy on the zone apex is not a name".into(),
                    ))
                }
                None => {
                    return Err(RejectReason::Rpz(format!(
                        "`{owner}` is outside the zone `{origin}`"
                    )))
                }
            },
            None => abs.to_owned(),
        }
    } else {
        lower_owner
    };
    for special in ["rpz-ip", "rpz-nsdname", "rpz-nsip", "rpz-client-ip"] {
        if trigger.ends_with(&format!(".{special}")) || trigger == special {
            return Err(RejectReason::Rpz(format!(
                "`{special}` triggers are not supported"
            )));
        }
    }
    let (name, scope) = match trigger.strip_prefix("*.") {
        Some(parent) => (parent, Scope::SubdomainsOnly),
        None => (trigger.as_str(), Scope::Exact),
    };
    match name_rule(name, scope, action, false, line)? {
        Parsed::Rule(r) => Ok(Some(r)),
        _ => Ok(None),
    }
}
