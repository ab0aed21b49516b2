//! The one error type of this crate.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the resolver could not start, or why a policy source could not be read.
///
/// Nothing on the per-query path returns this: a failing query becomes an rcode and a counter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolverError {
    /// A DNS listener could not be bound.
    #[error("cannot bind {protocol} on {addr}")]
    Bind {
        /// `udp` or `tcp`.
        protocol: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A bound socket could not be handed to the async runtime.
    #[error("cannot register the {protocol} socket on {addr} with the runtime")]
    Register {
        /// `udp` or `tcp`.
        protocol: &'static str,
        /// The socket's address.
        addr: SocketAddr,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The upstream resolver could not be configured (e.g. no usable `/etc/resolv.conf`).
    #[error("cannot configure the upstream resolver: {message}")]
    Upstream {
        /// hickory-resolver's reason.
        message: String,
    },
    /// A metric could not be registered (a name registered twice in one registry).
    #[error("cannot register metric")]
    Metrics(#[source] prometheus::Error),
    /// A file (policy file, lists folder) could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file asked for.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The policy file is not valid; `location` is `file:line` when the parser knows the line.
    #[error("{location}: {message}")]
    Policy {
        /// `file:line`, or the file name alone.
        location: String,
        /// What is wrong.
        message: String,
    },
    /// The lists folder could not be compiled or loaded.
    #[error("cannot load the lists in {dir}: {message}")]
    Lists {
        /// The lists folder.
        dir: PathBuf,
        /// The compiler's reason (with `file:line` where it has one).
        message: String,
    },
    /// The file watcher could not be started.
    #[error("cannot watch {path}")]
    Watch {
        /// The watched path.
        path: PathBuf,
        /// notify's reason.
        #[source]
        source: notify::Error,
    },
    /// The DNS server stopped with an error.
    #[error("dns server failed: {message}")]
    Server {
        /// hickory-server's reason.
        message: String,
    },
}
