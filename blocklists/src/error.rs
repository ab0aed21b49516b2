//! The crate's one error type.

use std::path::PathBuf;

use ipnet::IpNet;

/// Everything that can go wrong while compiling, caching or loading lists and policies.
///
/// Per-line problems in a list are never errors: they are [`crate::Rejected`] lines in a
/// report, so that one bad line never rejects a file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlocklistError {
    /// A list file, the lists folder or the cache could not be read or written.
    #[error("cannot access {path}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The fst library refused the input or the bytes (a bug or a corrupt file).
    #[error("cannot build or read the compiled domain set")]
    Fst(#[from] fst::Error),
    /// A sub-folder of the lists folder whose name cannot be a category name.
    #[error("{path}: `{name}` is not a category name (a-z, 0-9, - and _, at most 32 characters)")]
    BadCategoryName {
        /// The offending sub-folder.
        path: PathBuf,
        /// Its name as found.
        name: String,
    },
    /// More category folders than a [`crate::CategoryMask`] has bits.
    #[error("{count} categories found, at most {max} are supported")]
    TooManyCategories {
        /// How many were found.
        count: usize,
        /// The limit ([`crate::MAX_CATEGORIES`]).
        max: usize,
    },
    /// Two networks of different owners overlap, so a source address would be ambiguous.
    #[error("network {a} of {a_owner} overlaps network {b} of {b_owner}")]
    OverlappingNetworks {
        /// The first network met.
        a: IpNet,
        /// Who owns it (as the caller's owner function printed it).
        a_owner: String,
        /// The network it overlaps.
        b: IpNet,
        /// Who owns that one.
        b_owner: String,
    },
    /// The wildcard/regex rules of a list could not be compiled into one bounded matcher.
    #[error("wildcard and regex rules cannot be compiled: {reason}")]
    Patterns {
        /// What the regex compiler said (too many patterns, DFA over its memory bound, ...).
        reason: String,
    },
    /// A compiled cache file failed its checks; callers recompile.
    #[error("compiled cache {path} is corrupt: {reason}")]
    CorruptCache {
        /// The cache file.
        path: PathBuf,
        /// Which check failed.
        reason: String,
    },
    /// A snapshot received or stored in the wire format failed its checks; the caller keeps
    /// the snapshot it has.
    #[error("snapshot rejected at byte {offset}: {reason}")]
    Wire {
        /// Where in the encoding the check failed (0 for the header as a whole).
        offset: usize,
        /// Which check failed.
        reason: String,
    },
}

impl BlocklistError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
