//! Qorgan's filtering DNS resolver: hickory-server on UDP and TCP, a per-query decision by the
//! account that owns the source address, blocked names answered at once, everything else
//! forwarded through hickory-resolver with its cache.
//!
//! # Overview of types
//!
//! - [`DnsListeners`]: UDP + TCP sockets bound before anything starts (tests bind port 0).
//! - [`SnapshotStore`]: the current [`qorgan_blocklists::PolicySnapshot`] behind an `ArcSwap`;
//!   the lists watcher sets its catalog, a [`PolicySource`] or the control plane its accounts
//!   ([`AccountSpec`]). Each change publishes a whole new snapshot atomically.
//! - [`PolicySource`]: a policy file (reloaded on change) or the in-process control plane.
//! - [`DnsHandler`]: hickory's `RequestHandler`: client → account (drop/refuse/default for
//!   unknown sources), decision, block answer (with an RFC 8914 EDE) or forward, CNAME check.
//! - [`Forwarder`]: hickory-resolver over metered upstream connections (latency, errors, and an
//!   exact cache hit/miss signal).
//! - [`DnsMetrics`]: the Prometheus metrics, closed label sets.
//! - [`answer`]: block-mode answers, the EDE option, the response OPT (UDP capped at 1232).
//! - [`run`]: everything together until a [`CancellationToken`] fires.
//!
//! # What stock hickory-server 0.26.3 does that we rely on (or work around)
//!
//! - It parses each message before our handler; a message that parses with QR=1 is dropped
//!   without a reply, but one that fails to parse gets FORMERR even if QR=1 (hardening issue).
//! - A UDP answer is encoded to the response OPT's payload size with TC=1 above it; we set that
//!   payload to `min(client's, 1232)` (512 without EDNS).
//! - When our handler never calls the response handle, nothing is sent: that is how
//!   `unknown_clients = "drop"` sends no reply.
//! - It logs every answered request at `info` (`hickory_server::server`): run with
//!   `hickory_server=warn` in the log filter in production.

use std::sync::Arc;

use hickory_server::Server;
use tokio_util::sync::CancellationToken;

pub mod answer;
mod caps;
mod error;
mod fast;
mod handler;
mod listeners;
pub mod metrics;
pub mod pull;
pub mod rrl;
mod source;
mod store;
mod tcp;
mod udp;
mod upstream;
pub mod usage;
mod watch;

pub use error::ResolverError;
pub use fast::{FastOutcome, FastPath, FastPathOptions, FillKey};
pub use handler::DnsHandler;
pub use listeners::DnsListeners;
pub use metrics::DnsMetrics;
pub use source::{load_policy_file, parse_policy, PolicySource};
pub use store::{block_mode_from_config, AccountSpec, SnapshotStore, DEFAULT_POLICY_ID};
pub use upstream::Forwarder;

/// Where the compiled lists cache lives under `storage.data_dir`.
pub const LISTS_CACHE_DIR: &str = "lists-cache";

/// Serves DNS on `listeners` until `shutdown` fires, then stops gracefully.
///
/// Before the first query is answered: the metrics are registered in `metrics`, the policy
/// source is read (a bad policy file is an error), and the lists in `config.lists.dir` are
/// loaded through `<data_dir>/lists-cache` (a failure there is logged and counted, and the
/// store keeps its catalog, so the server still answers). Then, with `config.lists.watch`,
/// changes to the lists folder and to the policy file are reloaded without a restart.
///
/// UDP is served by the fast path ([`FastPath`], one thread per worker) unless
/// [`FastPathOptions::from_config`] disables it; [`run_with`] takes the options explicitly.
pub async fn run(
    config: &qorgan_config::Config,
    listeners: DnsListeners,
    store: SnapshotStore,
    source: PolicySource,
    metrics: &prometheus::Registry,
    shutdown: CancellationToken,
) -> Result<(), ResolverError> {
    let fast = FastPathOptions::from_config(config);
    run_with(config, listeners, store, source, metrics, shutdown, fast).await
}

/// [`run`] with explicit fast-path options (tests and benches compare both paths).
pub async fn run_with(
    config: &qorgan_config::Config,
    listeners: DnsListeners,
    store: SnapshotStore,
    source: PolicySource,
    metrics: &prometheus::Registry,
    shutdown: CancellationToken,
    fast: FastPathOptions,
) -> Result<(), ResolverError> {
    let background = shutdown.child_token();
    let mut tasks = tokio::task::JoinSet::new();
    if let PolicySource::Pull(pull) = &source {
        let (node, held) = pull::Node::start(
            pull.clone(),
            &config.storage.data_dir,
            store.clone(),
            metrics,
        )?;
        tasks.spawn(node.clone().pull_loop(held, background.clone()));
        tasks.spawn(node.usage_loop(background.clone()));
    }
    let metrics = Arc::new(DnsMetrics::new(metrics)?);
    store.attach_metrics(metrics.clone());

    if let PolicySource::File(path) = &source {
        watch::reload_policy(path, &store, &metrics)?;
        if config.lists.watch {
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let signal =
                watch::ChangeSignal::watch(parent, false, path.file_name().map(ToOwned::to_owned))?;
            tasks.spawn(watch::watch_policy(
                signal,
                path.clone(),
                store.clone(),
                metrics.clone(),
                background.clone(),
            ));
        }
    }

    let lists_dir = config.lists.dir.clone();
    let cache_dir = config.storage.data_dir.join(LISTS_CACHE_DIR);
    // A node's catalog comes with its snapshots, not from a lists folder of its own.
    let own_lists = !matches!(source, PolicySource::Pull(_));
    // Watch before the first load so that a change during it is not missed.
    let lists_signal = if config.lists.watch && own_lists {
        match watch::ChangeSignal::watch(&lists_dir, true, None) {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::error!(%error, "lists folder changes will not be picked up");
                None
            }
        }
    } else {
        None
    };
    if own_lists {
        watch::reload_lists(&lists_dir, &cache_dir, &store, &metrics).await;
    }
    if let Some(signal) = lists_signal {
        tasks.spawn(watch::watch_lists(
            signal,
            lists_dir,
            cache_dir,
            store.clone(),
            metrics.clone(),
            background.clone(),
        ));
    }

    let forwarder = Forwarder::new(&config.dns, metrics.clone())?;
    let handler = Arc::new(DnsHandler::new(
        &config.dns,
        store.clone(),
        forwarder,
        metrics.clone(),
    ));
    let mut server = Server::new(handler::SharedHandler(handler.clone()));
    let mut fast_sockets = Vec::new();
    let tcp_limits = tcp::TcpLimits::from_config(&config.dns);
    for (udp, tcp) in listeners.pairs {
        let addr = udp.local_addr().map_err(|source| ResolverError::Register {
            protocol: "udp",
            addr: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
        tracing::info!(%addr, fast_path = fast.enabled, "serving DNS on UDP and TCP");
        if fast.enabled {
            fast_sockets.push(udp);
        } else {
            let udp =
                tokio::net::UdpSocket::from_std(udp).map_err(|source| ResolverError::Register {
                    protocol: "udp",
                    addr,
                    source,
                })?;
            server.register_socket(udp);
        }
        let tcp =
            tokio::net::TcpListener::from_std(tcp).map_err(|source| ResolverError::Register {
                protocol: "tcp",
                addr,
                source,
            })?;
        tasks.spawn(tcp::serve(
            tcp,
            handler.clone(),
            tcp_limits,
            metrics.clone(),
            background.clone(),
        ));
    }
    let workers = if fast.enabled {
        Some(udp::start(
            udp::WorkerSetup {
                dns: &config.dns,
                options: fast,
                store,
                metrics,
                handler,
                runtime: tokio::runtime::Handle::current(),
            },
            fast_sockets,
        )?)
    } else {
        None
    };

    let server_token = server.shutdown_token().clone();
    let stop = background.clone();
    tasks.spawn(async move {
        stop.cancelled().await;
        server_token.cancel();
    });
    // hickory-server serves UDP only without the fast path; TCP is ours ([`tcp`]).
    let result = if fast.enabled {
        background.cancelled().await;
        Ok(())
    } else {
        server.block_until_done().await
    };
    if let Some(workers) = workers {
        // Joining blocks for up to one receive timeout: not on a runtime thread.
        let _ = tokio::task::spawn_blocking(move || workers.stop()).await;
    }
    // The server ended (shutdown, or a socket failed): stop the watchers too.
    background.cancel();
    while tasks.join_next().await.is_some() {}
    tracing::info!("DNS server stopped");
    result.map_err(|e| ResolverError::Server {
        message: e.to_string(),
    })
}
