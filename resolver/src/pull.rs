//! A resolver node's policy source: pull the versioned snapshot from a control plane
//! (`qorgan resolver --control URL --token T`), keep the last good one on disk, start from it
//! when the control plane is away, and send the per-account usage back.
//!
//! # The exchange (all under `{control}/api/v1/operator/nodes/`, bearer operator token,
//! `X-Qorgan-Node: <name>`)
//!
//! - `GET snapshot?after=G&wait=25`: long polling. The control plane answers `304` while its
//!   generation is still `G` (after waiting up to 25 s for a change), else the snapshot in the
//!   wire format of [`qorgan_blocklists::wire`] (header with magic, version, generation and a
//!   SHA-256 over it all). Every answer carries `X-Qorgan-Generation`: the node's lag metric
//!   is that minus what it holds.
//! - `GET catalog/{hash}`: the lists catalog a snapshot names, fetched only when the node's own
//!   differs (category automata are never re-sent for a customer's edit).
//! - `POST usage` `{seq, report}`: counter deltas and blocked names; the control plane applies
//!   each `(node, seq)` once, so a report whose answer was lost is resent as it was, never
//!   merged into a newer one (that would count it twice).
//!
//! # Durability
//!
//! A snapshot is applied only after it decoded and its checksum matched; it is then written to
//! `<data_dir>/node/snapshot.qsnap` (temporary file, fsync, rename) and the catalog to
//! `<data_dir>/node/catalog/<hash>.qcat` ([`qorgan_blocklists::store_catalog`]). A corrupt or
//! truncated answer is rejected and counted; the node keeps what it has.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounter, IntGauge, Registry};
use qorgan_blocklists::{wire, SnapshotWire};
use tokio_util::sync::CancellationToken;

use crate::store::{AccountSpec, SnapshotStore};
use crate::usage::UsageReport;
use crate::ResolverError;

/// Where a node keeps its last good snapshot under `storage.data_dir`.
pub const NODE_DIR: &str = "node";
const SNAPSHOT_FILE: &str = "snapshot.qsnap";
const CATALOG_DIR: &str = "catalog";
/// Seconds the control plane may hold a poll open.
const POLL_WAIT_SECS: u64 = 25;
/// The header naming the node.
const NODE_HEADER: &str = "x-qorgan-node";
/// The header carrying the control plane's generation.
const GENERATION_HEADER: &str = "x-qorgan-generation";

/// How a node reaches its control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullConfig {
    /// The control plane's base URL, e.g. `http://10.0.0.1:8080`.
    pub url: String,
    /// The operator token.
    pub token: String,
    /// This node's name (`[a-zA-Z0-9._-]`, ≤ 64): the host name by default.
    pub node: String,
    /// How often usage is sent.
    pub usage_interval: Duration,
}

struct NodeMetrics {
    generation: IntGauge,
    lag: IntGauge,
    pull_errors: IntCounter,
    rejected: IntCounter,
    usage_errors: IntCounter,
}

impl NodeMetrics {
    fn new(registry: &Registry) -> Result<Self, ResolverError> {
        let gauge = |n: &str, h: &str| {
            let g = IntGauge::new(n, h).map_err(ResolverError::Metrics)?;
            registry
                .register(Box::new(g.clone()))
                .map_err(ResolverError::Metrics)?;
            Ok::<_, ResolverError>(g)
        };
        let counter = |n: &str, h: &str| {
            let c = IntCounter::new(n, h).map_err(ResolverError::Metrics)?;
            registry
                .register(Box::new(c.clone()))
                .map_err(ResolverError::Metrics)?;
            Ok::<_, ResolverError>(c)
        };
        Ok(Self {
            generation: gauge(
                "qorgan_node_generation",
                "Policy generation this node enforces",
            )?,
            lag: gauge(
                "qorgan_node_lag_generations",
                "Generations this node is behind its control plane (as of the last answer)",
            )?,
            pull_errors: counter(
                "qorgan_node_pull_errors_total",
                "Snapshot polls that failed (control plane unreachable or erroring)",
            )?,
            rejected: counter(
                "qorgan_node_snapshots_rejected_total",
                "Snapshots or catalogs received but rejected (corrupt, truncated, older)",
            )?,
            usage_errors: counter(
                "qorgan_node_usage_errors_total",
                "Usage reports the control plane did not acknowledge (resent later)",
            )?,
        })
    }
}

fn io_error(path: &Path, source: std::io::Error) -> ResolverError {
    ResolverError::Read {
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename, fsync of the folder).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ResolverError> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| io_error(&tmp, e))?;
    f.write_all(bytes).map_err(|e| io_error(&tmp, e))?;
    f.sync_all().map_err(|e| io_error(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The node's state on disk.
struct NodeDisk {
    dir: PathBuf,
}

impl NodeDisk {
    fn snapshot_path(&self) -> PathBuf {
        self.dir.join(SNAPSHOT_FILE)
    }

    fn catalog_dir(&self) -> PathBuf {
        self.dir.join(CATALOG_DIR)
    }
}

/// Applies a decoded snapshot (and its catalog) to the store.
fn apply(
    store: &SnapshotStore,
    snapshot: SnapshotWire,
    catalog: Option<qorgan_blocklists::Catalog>,
) -> Result<u64, ResolverError> {
    if let Some(c) = catalog {
        store.set_catalog(Arc::new(c));
    }
    let generation = snapshot.generation;
    let specs: Vec<AccountSpec> = snapshot
        .accounts
        .into_iter()
        .map(AccountSpec::from)
        .collect();
    store.set_accounts(specs)?;
    Ok(generation)
}

/// Loads the last good snapshot and its catalog from disk into `store` (a start while the
/// control plane may be down). Returns the generation, or 0 when there is none (or it is
/// damaged: then the node starts empty and says so).
fn load_last_good(disk: &NodeDisk, store: &SnapshotStore) -> u64 {
    let path = disk.snapshot_path();
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!("no saved policy snapshot yet; waiting for the control plane");
            return 0;
        }
        Err(error) => {
            tracing::error!(path = %path.display(), %error, "cannot read the saved policy snapshot");
            return 0;
        }
    };
    let snapshot = match wire::decode(&bytes) {
        Ok(s) => s,
        Err(error) => {
            tracing::error!(path = %path.display(), %error, "saved policy snapshot is damaged; ignored");
            return 0;
        }
    };
    let catalog = if snapshot.catalog_hash.is_empty() {
        None
    } else {
        match qorgan_blocklists::load_cached_catalog(&disk.catalog_dir(), &snapshot.catalog_hash) {
            Ok(c) => Some(c),
            Err(error) => {
                tracing::error!(%error, "saved lists catalog missing or damaged; filtering by own lists only until the control plane answers");
                None
            }
        }
    };
    match apply(store, snapshot, catalog) {
        Ok(g) => {
            tracing::info!(generation = g, "policy snapshot restored from disk");
            g
        }
        Err(error) => {
            tracing::error!(%error, "saved policy snapshot not applied");
            0
        }
    }
}

/// The pull and usage loops of a node, until `shutdown`.
pub(crate) struct Node {
    config: PullConfig,
    disk: NodeDisk,
    store: SnapshotStore,
    metrics: NodeMetrics,
    http: reqwest::Client,
}

impl Node {
    /// Prepares the node and restores its last good snapshot from `<data_dir>/node`.
    pub(crate) fn start(
        config: PullConfig,
        data_dir: &Path,
        store: SnapshotStore,
        registry: &Registry,
    ) -> Result<(Arc<Self>, u64), ResolverError> {
        let metrics = NodeMetrics::new(registry)?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(POLL_WAIT_SECS + 10))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ResolverError::Upstream {
                message: format!("control plane client: {e}"),
            })?;
        let disk = NodeDisk {
            dir: data_dir.join(NODE_DIR),
        };
        let generation = load_last_good(&disk, &store);
        metrics
            .generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        Ok((
            Arc::new(Self {
                config,
                disk,
                store,
                metrics,
                http,
            }),
            generation,
        ))
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/api/v1/operator/nodes/{path}",
            self.config.url.trim_end_matches('/')
        )
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.config.token)
            .header(NODE_HEADER, &self.config.node)
    }

    /// Polls for snapshots until `shutdown`; `held` is the generation restored from disk.
    pub(crate) async fn pull_loop(self: Arc<Self>, mut held: u64, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(500);
        loop {
            let result = tokio::select! {
                r = self.poll_once(held) => r,
                () = shutdown.cancelled() => return,
            };
            match result {
                Ok(g) => {
                    held = g;
                    backoff = Duration::from_millis(500);
                    continue;
                }
                Err(error) => {
                    self.metrics.pull_errors.inc();
                    tracing::warn!(%error, retry_in = ?backoff, "policy pull failed; serving generation {held}");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// One long poll; returns the generation held afterwards.
    async fn poll_once(&self, held: u64) -> Result<u64, String> {
        let resp = self
            .request(
                reqwest::Method::GET,
                &format!("snapshot?after={held}&wait={POLL_WAIT_SECS}"),
            )
            .send()
            .await
            .map_err(|e| format!("control plane unreachable: {e}"))?;
        let control_generation = resp
            .headers()
            .get(GENERATION_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_MODIFIED {
            self.set_lag(control_generation, held);
            return Ok(held);
        }
        if !status.is_success() {
            return Err(format!("control plane answered {status}"));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("snapshot body: {e}"))?;
        let snapshot = match wire::decode(&bytes) {
            Ok(s) => s,
            Err(e) => {
                self.metrics.rejected.inc();
                return Err(format!("snapshot rejected: {e}"));
            }
        };
        if snapshot.generation <= held {
            self.metrics.rejected.inc();
            return Err(format!(
                "snapshot generation {} is not above {held}",
                snapshot.generation
            ));
        }
        let catalog = self.catalog_for(&snapshot.catalog_hash).await?;
        let generation = snapshot.generation;
        let path = self.disk.snapshot_path();
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            write_atomic(&path, &bytes)?;
            apply(&store, snapshot, catalog)
        })
        .await
        .map_err(|e| format!("applying the snapshot: {e}"))?
        .map_err(|e| format!("applying the snapshot: {e}"))?;
        tracing::info!(generation, "policy snapshot applied");
        self.metrics
            .generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        self.set_lag(control_generation, generation);
        Ok(generation)
    }

    fn set_lag(&self, control: Option<u64>, held: u64) {
        if let Some(c) = control {
            self.metrics
                .lag
                .set(i64::try_from(c.saturating_sub(held)).unwrap_or(i64::MAX));
        }
    }

    /// The catalog a snapshot names: `None` when the node already has it (or none is named).
    async fn catalog_for(&self, hash: &str) -> Result<Option<qorgan_blocklists::Catalog>, String> {
        if hash.is_empty() || self.store.catalog().hash() == hash {
            return Ok(None);
        }
        let dir = self.disk.catalog_dir();
        let cached = {
            let (dir, hash) = (dir.clone(), hash.to_owned());
            tokio::task::spawn_blocking(move || {
                qorgan_blocklists::load_cached_catalog(&dir, &hash).ok()
            })
            .await
            .ok()
            .flatten()
        };
        if let Some(c) = cached {
            return Ok(Some(c));
        }
        let resp = self
            .request(reqwest::Method::GET, &format!("catalog/{hash}"))
            .send()
            .await
            .map_err(|e| format!("catalog: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("catalog: control plane answered {}", resp.status()));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("catalog body: {e}"))?;
        let expected = hash.to_owned();
        let stored = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            qorgan_blocklists::store_catalog(&dir, &bytes).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("catalog: {e}"))?;
        match stored {
            Ok(c) if c.hash() == expected => Ok(Some(c)),
            Ok(c) => {
                self.metrics.rejected.inc();
                Err(format!("catalog {} received for {expected}", c.hash()))
            }
            Err(e) => {
                self.metrics.rejected.inc();
                Err(format!("catalog rejected: {e}"))
            }
        }
    }

    /// Sends usage every interval until `shutdown` (and once more then). A report stays
    /// pending with its sequence number until the control plane acknowledges it.
    pub(crate) async fn usage_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut pending: Option<(u64, UsageReport)> = None;
        let mut accumulated = UsageReport::default();
        let mut last_seq = 0u64;
        loop {
            let stop = tokio::select! {
                () = tokio::time::sleep(self.config.usage_interval) => false,
                () = shutdown.cancelled() => true,
            };
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let fresh = self
                .store
                .take_usage(i64::try_from(now_ms / 1000).unwrap_or(0));
            accumulated.merge(&fresh);
            if pending.is_none() && !accumulated.is_empty() {
                // Milliseconds since the epoch: increasing across restarts of the node too.
                last_seq = now_ms.max(last_seq + 1);
                pending = Some((last_seq, std::mem::take(&mut accumulated)));
            }
            if let Some((seq, report)) = &pending {
                let send = self.send_usage(*seq, report);
                // At shutdown, do not hold the stop up for long: an undelivered report is lost
                // with the process (as counts since the last drain are on a crash).
                let sent = if stop {
                    tokio::time::timeout(Duration::from_secs(3), send)
                        .await
                        .unwrap_or_else(|_| Err("timed out at shutdown".to_owned()))
                } else {
                    send.await
                };
                match sent {
                    Ok(()) => pending = None,
                    Err(error) => {
                        self.metrics.usage_errors.inc();
                        tracing::warn!(%error, "usage not delivered; kept for the next attempt");
                    }
                }
            }
            if stop {
                return;
            }
        }
    }

    async fn send_usage(&self, seq: u64, report: &UsageReport) -> Result<(), String> {
        let body = serde_json::json!({ "seq": seq, "report": report });
        let resp = self
            .request(reqwest::Method::POST, "usage")
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("control plane answered {}", resp.status()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qorgan_blocklists::{AccountId, AccountWire, BlockMode, ClientPolicy, DomainSet};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A control plane stand-in on 127.0.0.1 that answers every request with `body` (200).
    async fn answering(body: Vec<u8>, generation: u64) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-qorgan-generation: {generation}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
                let _ = s.shutdown().await;
            }
        });
        format!("http://{addr}")
    }

    fn node(url: String, dir: &Path) -> (Arc<Node>, u64, SnapshotStore) {
        let store = SnapshotStore::new(&qorgan_config::DefaultPolicyConfig {
            networks: Vec::new(),
            ..Default::default()
        });
        let config = PullConfig {
            url,
            token: "t".into(),
            node: "n1".into(),
            usage_interval: Duration::from_secs(60),
        };
        let (node, held) = Node::start(config, dir, store.clone(), &Registry::new()).expect("node");
        (node, held, store)
    }

    fn snapshot(generation: u64) -> Vec<u8> {
        let parsed = qorgan_blocklists::parse::parse_text(
            "node-test.example\n",
            "t",
            qorgan_blocklists::parse::FormatHint::Auto,
        );
        let (own_block, _) =
            qorgan_blocklists::build_own_sets((&parsed.rules, &parsed.patterns), (&[], &[]))
                .expect("sets");
        wire::encode(&SnapshotWire {
            generation,
            catalog_hash: String::new(),
            accounts: vec![AccountWire {
                id: AccountId(9),
                enabled: true,
                networks: vec!["10.8.0.0/16".parse().expect("net")],
                categories: Vec::new(),
                block_mode: BlockMode::Nxdomain,
                own_block,
                own_allow: DomainSet::default(),
                qps_limit: 0,
            }],
        })
    }

    fn enforced(store: &SnapshotStore) -> bool {
        let snap = store.load();
        match snap.client_policy("10.8.0.1".parse().expect("ip")) {
            ClientPolicy::Account(p) => snap.decide_dotted(p, b"node-test.example").is_blocked(),
            _ => false,
        }
    }

    #[tokio::test]
    async fn a_good_snapshot_is_applied_kept_on_disk_and_restored_at_start() {
        let dir = tempfile::tempdir().expect("dir");
        let url = answering(snapshot(7), 7).await;
        let (n, held, store) = node(url.clone(), dir.path());
        assert_eq!(held, 0, "nothing saved yet");
        assert_eq!(n.poll_once(0).await, Ok(7));
        assert!(enforced(&store));
        assert_eq!(n.metrics.generation.get(), 7);
        // A restart while the control plane is gone starts from the saved snapshot.
        let (_, held, store) = node("http://127.0.0.1:9".into(), dir.path());
        assert_eq!(held, 7);
        assert!(enforced(&store));
    }

    #[tokio::test]
    async fn a_corrupt_truncated_or_older_snapshot_is_rejected_and_the_policy_stays() {
        let dir = tempfile::tempdir().expect("dir");
        let good = snapshot(7);
        let (n, _, store) = node(answering(good.clone(), 7).await, dir.path());
        assert_eq!(n.poll_once(0).await, Ok(7));
        let saved = std::fs::read(n.disk.snapshot_path()).expect("saved");

        let mut flipped = snapshot(8);
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        let truncated = snapshot(9)[..100].to_vec();
        let cases = [
            ("flipped byte", flipped, 8),
            ("truncated", truncated, 9),
            ("not a snapshot", b"<html>proxy error</html>".to_vec(), 10),
            ("older generation", snapshot(5), 7),
        ];
        for (what, body, generation) in cases {
            let mut bad = n.config.clone();
            bad.url = answering(body, generation).await;
            let liar = Node {
                config: bad,
                disk: NodeDisk {
                    dir: n.disk.dir.clone(),
                },
                store: store.clone(),
                metrics: NodeMetrics::new(&Registry::new()).expect("metrics"),
                http: n.http.clone(),
            };
            assert!(liar.poll_once(7).await.is_err(), "{what} accepted");
            assert_eq!(liar.metrics.rejected.get(), 1, "{what} counted");
            assert!(enforced(&store), "{what}: the policy stays");
            assert_eq!(
                std::fs::read(n.disk.snapshot_path()).expect("saved"),
                saved,
                "{what}: the saved snapshot stays"
            );
        }
    }

    #[test]
    fn a_damaged_saved_snapshot_is_ignored_at_start() {
        let dir = tempfile::tempdir().expect("dir");
        let disk = NodeDisk {
            dir: dir.path().join(NODE_DIR),
        };
        let mut bytes = snapshot(3);
        bytes[40] ^= 1;
        write_atomic(&disk.snapshot_path(), &bytes).expect("write");
        let store = SnapshotStore::new(&qorgan_config::DefaultPolicyConfig::default());
        assert_eq!(load_last_good(&disk, &store), 0);
        assert!(!enforced(&store));
    }
}
