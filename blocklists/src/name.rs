//! Domain names: normalisation of list entries, and the reversed-label key encoding.
//!
//! List entries are normalised once, when a list is compiled: trimmed, lower-cased, one
//! trailing dot stripped, Unicode converted to punycode (IDNA, UTS #46), and checked against
//! the RFC 1035 limits (63 bytes a label, 253 a name). Letters, digits, hyphens and
//! underscores are allowed: underscores appear in real lists (`_dns.resolver.arpa`,
//! `philadelphia_cbslocal.us.intellitxt.com`) and in real queries (SRV, DMARC), and hyphens
//! are allowed anywhere because lists and queries carry names that break the hostname rule.
//!
//! Query names are never normalised: the matcher lower-cases them byte by byte while it
//! walks, so the hot path allocates nothing.

use std::fmt;

/// The longest name, in bytes of its dotted text form without the trailing dot (RFC 1035).
pub const MAX_NAME_LEN: usize = 253;
/// The longest label, in bytes (RFC 1035).
pub const MAX_LABEL_LEN: usize = 63;

/// Why a list entry is not a usable domain name.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameError {
    /// Nothing left after trimming and the trailing dot.
    Empty,
    /// Longer than [`MAX_NAME_LEN`].
    TooLong {
        /// The length found.
        len: usize,
    },
    /// A label longer than [`MAX_LABEL_LEN`].
    LabelTooLong {
        /// The length found.
        len: usize,
    },
    /// Two dots in a row, or a leading dot.
    EmptyLabel,
    /// A character that no host name carries (not a letter, digit, `-` or `_`).
    BadChar {
        /// The character.
        ch: char,
    },
    /// Unicode that IDNA (UTS #46) refuses to convert to punycode.
    Idna,
    /// An IPv4 address written where a name belongs (`0.0.0.0` as a "domain").
    IpAddress,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "empty name"),
            Self::TooLong { len } => {
                write!(
                    f,
                    "name is {len} bytes long, at most {MAX_NAME_LEN} allowed"
                )
            }
            Self::LabelTooLong { len } => {
                write!(
                    f,
                    "label is {len} bytes long, at most {MAX_LABEL_LEN} allowed"
                )
            }
            Self::EmptyLabel => write!(f, "empty label (two dots in a row or a leading dot)"),
            Self::BadChar { ch } => write!(f, "character {ch:?} is not allowed in a name"),
            Self::Idna => write!(f, "international name cannot be converted to punycode"),
            Self::IpAddress => write!(f, "an IP address, not a domain name"),
        }
    }
}

impl std::error::Error for NameError {}

/// Normalises one list entry to lower-case ASCII dotted form without the trailing dot.
///
/// ```
/// use qorgan_blocklists::name::normalize;
/// assert_eq!(normalize(" Ads.Example.COM. ").unwrap(), "ads.example.com");
/// assert_eq!(normalize("пример.рф").unwrap(), "xn--e1afmkfd.xn--p1ai");
/// assert!(normalize("a..b").is_err());
/// ```
pub fn normalize(input: &str) -> Result<String, NameError> {
    let s = input.trim();
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    let name = if s.is_ascii() {
        s.to_ascii_lowercase()
    } else {
        // Only names with Unicode pay for IDNA; the bulk of every list is ASCII already.
        let ascii = idna::domain_to_ascii(s).map_err(|_| NameError::Idna)?;
        let ascii = ascii.strip_suffix('.').map(str::to_owned).unwrap_or(ascii);
        if !ascii.is_ascii() {
            return Err(NameError::Idna);
        }
        ascii
    };
    check(&name)?;
    Ok(name)
}

/// Checks an ASCII lower-case dotted name against the limits and the allowed characters.
fn check(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { len: name.len() });
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(NameError::LabelTooLong { len: label.len() });
        }
        if let Some(ch) = label
            .chars()
            .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'))
        {
            return Err(NameError::BadChar { ch });
        }
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(NameError::IpAddress);
    }
    Ok(())
}

/// Appends the key of a normalised name: its labels in reverse order, dot-separated.
///
/// `ads.example.com` becomes `com.example.ads`, so that every parent domain of a name is a
/// prefix of its key ending at a label boundary — which is what lets one walk of the fst
/// find every listed parent.
pub fn push_reversed_key(name: &str, out: &mut Vec<u8>) {
    for (i, label) in name.rsplit('.').enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        out.extend_from_slice(label.as_bytes());
    }
}

/// The reversed key of a normalised name as a new vector (see [`push_reversed_key`]).
pub fn reversed_key(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    push_reversed_key(name, &mut out);
    out
}

/// The labels of a dotted query name, last label first, without allocating.
///
/// One trailing dot is ignored. The empty name and the root (`.`) yield one empty label,
/// which matches nothing.
pub fn labels_rev(dotted: &[u8]) -> impl Iterator<Item = &[u8]> + Clone {
    let trimmed = dotted.strip_suffix(b".").unwrap_or(dotted);
    trimmed.rsplit(|&b| b == b'.')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn normalize_lowercases_and_strips_one_trailing_dot() {
        assert_eq!(normalize("WWW.Example.Com.").unwrap(), "www.example.com");
        assert_eq!(
            normalize("example.com..").unwrap_err(),
            NameError::EmptyLabel
        );
    }

    #[test]
    fn normalize_converts_unicode_to_punycode() {
        assert_eq!(
            normalize("Bücher.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(normalize("xn--p1ai").unwrap(), "xn--p1ai");
    }

    #[test]
    fn normalize_keeps_underscores_and_numeric_labels() {
        assert_eq!(
            normalize("_dns.resolver.arpa").unwrap(),
            "_dns.resolver.arpa"
        );
        assert_eq!(
            normalize("0.0.0.0.beeglivesex.com").unwrap(),
            "0.0.0.0.beeglivesex.com"
        );
    }

    #[test]
    fn normalize_rejects_invalid_names_with_reasons() {
        assert_eq!(normalize("").unwrap_err(), NameError::Empty);
        assert_eq!(normalize(".").unwrap_err(), NameError::Empty);
        assert_eq!(
            normalize(".example.com").unwrap_err(),
            NameError::EmptyLabel
        );
        assert_eq!(
            normalize("exa mple.com").unwrap_err(),
            NameError::BadChar { ch: ' ' }
        );
        assert_eq!(
            normalize("ex/ample.com").unwrap_err(),
            NameError::BadChar { ch: '/' }
        );
        assert_eq!(normalize("0.0.0.0").unwrap_err(), NameError::IpAddress);
        let long_label = format!("{}.com", "a".repeat(64));
        assert_eq!(
            normalize(&long_label).unwrap_err(),
            NameError::LabelTooLong { len: 64 }
        );
        let long_name = vec!["abcdefghi"; 26].join(".");
        assert_eq!(
            normalize(&long_name).unwrap_err(),
            NameError::TooLong { len: 259 }
        );
    }

    #[test]
    fn reversed_key_puts_the_top_level_label_first() {
        assert_eq!(reversed_key("ads.example.com"), b"com.example.ads");
        assert_eq!(reversed_key("actor"), b"actor");
    }

    #[test]
    fn labels_rev_ignores_one_trailing_dot() {
        let labels: Vec<&[u8]> = labels_rev(b"www.Example.com.").collect();
        assert_eq!(labels, vec![&b"com"[..], b"Example", b"www"]);
    }
}
