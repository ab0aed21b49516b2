//! Where the accounts table comes from: a policy file (tests, small deployments) or the
//! control plane in the same process.
//!
//! # Policy file format
//!
//! TOML (or JSON when the file name ends in `.json`), one entry per account:
//!
//! ```toml
//! [[accounts]]
//! id = 7                          # the control plane's account number (>= 1; 0 is the default policy)
//! networks = ["192.0.2.0/24", "2001:db8:7::/48"]
//! categories = ["ads", "malware"] # folder names of lists.dir
//! block_mode = "null_ip"          # nxdomain (default) | null_ip | refused | custom_ip
//! custom_ip = ["192.0.2.80"]      # block page for custom_ip: one IPv4 and/or one IPv6
//! enabled = true                  # default true; false resolves everything
//! block = ["||tracker.example^", "ads.example.org"]  # own block list, any list syntax
//! allow = """
//! @@||cdn.example^
//! """                             # own allow list: a string of lines or an array of lines
//! ```
//!
//! Every problem is reported as an error naming the file (and its line for syntax errors);
//! a file with a problem is not applied at all, so a typo never half-applies a policy.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use qorgan_blocklists::parse::{parse_text, FormatHint};
use qorgan_blocklists::{build_own_sets, AccountId, DomainSet};
use qorgan_config::BlockModeName;
use serde::Deserialize;

use crate::store::{block_mode_from_config, AccountSpec};
use crate::ResolverError;

/// Where accounts come from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicySource {
    /// A resolver node: snapshots pulled from a control plane (and its lists catalog with
    /// them), the last good one kept on disk ([`crate::pull`]).
    Pull(crate::pull::PullConfig),
    /// A policy file (format in this module's docs), read at start and reloaded on change.
    File(PathBuf),
    /// The control plane in this process publishes accounts into the [`crate::SnapshotStore`]
    /// itself ([`crate::SnapshotStore::set_accounts`] and friends).
    InProcess,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    accounts: Vec<AccountEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountEntry {
    id: u64,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
    #[serde(default)]
    networks: Vec<IpNet>,
    #[serde(default)]
    categories: Vec<String>,
    #[serde(default)]
    block_mode: Option<BlockModeName>,
    #[serde(default)]
    custom_ip: Vec<IpAddr>,
    #[serde(default)]
    block: RuleText,
    #[serde(default)]
    allow: RuleText,
    /// Queries per second the account's networks may send; 0 (the default) = no limit.
    #[serde(default)]
    qps_limit: u32,
}

fn enabled_by_default() -> bool {
    true
}

/// A list as one string of lines or an array of lines.
#[derive(Debug, Deserialize, Default)]
#[serde(untagged)]
enum RuleText {
    #[default]
    Empty,
    Text(String),
    Lines(Vec<String>),
}

impl RuleText {
    fn text(&self) -> String {
        match self {
            Self::Empty => String::new(),
            Self::Text(t) => t.clone(),
            Self::Lines(lines) => lines.join("\n"),
        }
    }
}

/// Reads and validates a policy file into account specs.
pub fn load_policy_file(path: &Path) -> Result<Vec<AccountSpec>, ResolverError> {
    let text = std::fs::read_to_string(path).map_err(|source| ResolverError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_policy(&text, path)
}

/// Parses policy text; `path` names it in errors and picks JSON (`.json`) or TOML.
pub fn parse_policy(text: &str, path: &Path) -> Result<Vec<AccountSpec>, ResolverError> {
    let origin = path.display().to_string();
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let file: PolicyFile = if is_json {
        serde_json::from_str(text).map_err(|e| ResolverError::Policy {
            location: format!("{origin}:{}", e.line()),
            message: e.to_string(),
        })?
    } else {
        toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |s| {
                text.get(..s.start)
                    .map_or(1, |h| h.matches('\n').count() + 1)
            });
            ResolverError::Policy {
                location: format!("{origin}:{line}"),
                message: e.message().to_owned(),
            }
        })?
    };

    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    let mut specs = Vec::with_capacity(file.accounts.len());
    for (i, entry) in file.accounts.iter().enumerate() {
        let at = format!("accounts[{i}] (id {})", entry.id);
        if entry.id == 0 {
            problems.push(format!("{at}: id 0 is reserved for [default_policy]"));
        }
        if !seen.insert(entry.id) {
            problems.push(format!("{at}: id {} appears twice", entry.id));
        }
        for c in &entry.categories {
            if !qorgan_config::is_category_name(c) {
                problems.push(format!(
                    "{at}: `{c}` is not a category name (a-z, 0-9, - and _)"
                ));
            }
        }
        let mode = entry.block_mode.unwrap_or(BlockModeName::Nxdomain);
        let v4 = entry.custom_ip.iter().filter(|ip| ip.is_ipv4()).count();
        if v4 > 1 || entry.custom_ip.len() - v4 > 1 {
            problems.push(format!(
                "{at}: custom_ip takes at most one IPv4 and one IPv6 address"
            ));
        }
        if mode == BlockModeName::CustomIp && entry.custom_ip.is_empty() {
            problems.push(format!("{at}: block_mode = \"custom_ip\" needs custom_ip"));
        }
        let (own_block, own_allow) = match own_sets(entry, &origin, &at) {
            Ok(sets) => sets,
            Err(mut list_problems) => {
                problems.append(&mut list_problems);
                (DomainSet::default(), DomainSet::default())
            }
        };
        specs.push(AccountSpec {
            id: AccountId(entry.id),
            enabled: entry.enabled,
            networks: entry.networks.clone(),
            categories: entry.categories.clone(),
            block_mode: block_mode_from_config(mode, &entry.custom_ip),
            own_block,
            own_allow,
            qps_limit: entry.qps_limit,
        });
    }
    if problems.is_empty() {
        Ok(specs)
    } else {
        Err(ResolverError::Policy {
            location: origin,
            message: problems.join("; "),
        })
    }
}

/// Compiles an entry's own lists; every rejected line is a problem (a policy file is
/// configuration: a typo must not silently drop a rule).
fn own_sets(
    entry: &AccountEntry,
    origin: &str,
    at: &str,
) -> Result<(DomainSet, DomainSet), Vec<String>> {
    let block = parse_text(
        &entry.block.text(),
        &format!("{origin} {at} block"),
        FormatHint::Auto,
    );
    let allow = parse_text(
        &entry.allow.text(),
        &format!("{origin} {at} allow"),
        FormatHint::Auto,
    );
    let rejected: Vec<String> = block
        .rejected
        .iter()
        .chain(&allow.rejected)
        .map(ToString::to_string)
        .collect();
    if !rejected.is_empty() {
        return Err(rejected);
    }
    build_own_sets(
        (&block.rules, &block.patterns),
        (&allow.rules, &allow.patterns),
    )
    .map_err(|e| vec![format!("{at}: {e}")])
}

#[cfg(test)]
mod tests {
    use super::*;
    use qorgan_blocklists::BlockMode;

    fn parse(text: &str) -> Result<Vec<AccountSpec>, ResolverError> {
        parse_policy(text, Path::new("policy.toml"))
    }

    #[test]
    fn toml_policy_gives_accounts_with_their_lists_and_modes() {
        let specs = parse(
            r#"
[[accounts]]
id = 7
networks = ["127.0.0.2/32"]
categories = ["ads"]
block_mode = "custom_ip"
custom_ip = ["192.0.2.80"]
block = ["||tracker.example^"]
allow = "good.example\n"
"#,
        )
        .expect("valid");
        assert_eq!(specs.len(), 1);
        let a = &specs[0];
        assert_eq!(a.id, AccountId(7));
        assert_eq!(
            a.block_mode,
            BlockMode::CustomIp {
                v4: Some("192.0.2.80".parse().expect("ip")),
                v6: None
            }
        );
        assert!(a.own_block.covers_dotted(b"x.tracker.example"));
        assert!(a.own_allow.covers_dotted(b"good.example"));
    }

    #[test]
    fn json_policy_is_read_by_extension() {
        let specs = parse_policy(
            r#"{"accounts": [{"id": 3, "networks": ["10.0.0.0/8"], "block_mode": "refused"}]}"#,
            Path::new("p.json"),
        )
        .expect("valid");
        assert_eq!(specs[0].block_mode, BlockMode::Refused);
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let err =
            parse("[[accounts]]\nid = 1\nnetworks = [\"not a net\"]\n").expect_err("bad network");
        assert!(err.to_string().starts_with("policy.toml:3"), "{err}");
    }

    #[test]
    fn every_semantic_problem_is_reported_at_once() {
        let err = parse(
            "[[accounts]]\nid = 0\n[[accounts]]\nid = 2\nblock_mode = \"custom_ip\"\n[[accounts]]\nid = 2\ncategories = [\"Bad\"]\n",
        )
        .expect_err("problems");
        let text = err.to_string();
        for needle in ["reserved", "needs custom_ip", "appears twice", "`Bad`"] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
    }

    #[test]
    fn rejected_own_rule_line_rejects_the_file() {
        let err = parse("[[accounts]]\nid = 1\nblock = [\"bad..name\"]\n").expect_err("bad rule");
        assert!(err.to_string().contains("block"), "{err}");
    }
}
