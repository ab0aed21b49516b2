//! Reloading on change: the lists folder (compiled aside, then swapped in) and the policy file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::DnsMetrics;
use crate::source::load_policy_file;
use crate::store::SnapshotStore;
use crate::ResolverError;

/// Quiet time after the last change before a reload starts: a `cp -r` or an editor's save is
/// many events, and one compile should follow them all.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// Loads the lists folder through the compiled cache and swaps the catalog in. On failure the
/// store keeps its catalog; the reason is logged and counted.
pub(crate) async fn reload_lists(
    dir: &Path,
    cache_dir: &Path,
    store: &SnapshotStore,
    metrics: &DnsMetrics,
) -> bool {
    let (d, c) = (dir.to_owned(), cache_dir.to_owned());
    let result =
        tokio::task::spawn_blocking(move || qorgan_blocklists::load_or_compile(&d, &c)).await;
    match result {
        Ok(Ok((catalog, report))) => {
            let domains: u64 = catalog.categories().iter().map(|c| c.domains).sum();
            tracing::info!(
                dir = %dir.display(),
                categories = catalog.categories().len(),
                domains,
                mapped = catalog.is_mapped(),
                "lists catalog loaded"
            );
            tracing::debug!("{report}");
            store.set_catalog(Arc::new(catalog));
            metrics.record_list_reload(true);
            true
        }
        Ok(Err(error)) => {
            tracing::error!(dir = %dir.display(), %error, "lists failed to compile; keeping the previous catalog");
            metrics.record_list_reload(false);
            false
        }
        Err(join_error) => {
            tracing::error!(dir = %dir.display(), error = %join_error, "lists compile panicked; keeping the previous catalog");
            metrics.record_list_reload(false);
            false
        }
    }
}

/// Reloads the policy file into the store; on failure the previous accounts stay.
pub(crate) fn reload_policy(
    path: &Path,
    store: &SnapshotStore,
    metrics: &DnsMetrics,
) -> Result<(), ResolverError> {
    let result = load_policy_file(path).and_then(|accounts| {
        let n = accounts.len();
        store.set_accounts(accounts).map(|()| n)
    });
    match result {
        Ok(n) => {
            tracing::info!(path = %path.display(), accounts = n, "policy file loaded");
            metrics.record_policy_reload(true);
            Ok(())
        }
        Err(error) => {
            metrics.record_policy_reload(false);
            Err(error)
        }
    }
}

/// A notify watcher feeding a "something changed" signal (capacity 1: one pending reload is
/// enough however many events arrive).
pub(crate) struct ChangeSignal {
    _watcher: RecommendedWatcher,
    rx: mpsc::Receiver<()>,
}

impl ChangeSignal {
    /// Watches `path` (recursively for a folder). When `only_name` is set, only events on a
    /// path with that file name count (a policy file watched through its parent folder, since
    /// editors replace files by renaming).
    pub(crate) fn watch(
        path: &Path,
        recursive: bool,
        only_name: Option<std::ffi::OsString>,
    ) -> Result<Self, ResolverError> {
        let (tx, rx) = mpsc::channel(1);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                // Our own compile opens and reads every file; only changes matter.
                let relevant = match event.kind {
                    EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
                    EventKind::Access(_) => false,
                    EventKind::Any
                    | EventKind::Create(_)
                    | EventKind::Modify(_)
                    | EventKind::Remove(_)
                    | EventKind::Other => true,
                };
                let ours = only_name.as_ref().is_none_or(|name| {
                    event
                        .paths
                        .iter()
                        .any(|p| p.file_name() == Some(name.as_os_str()))
                });
                if relevant && ours {
                    let _ = tx.try_send(());
                }
            })
            .map_err(|source| ResolverError::Watch {
                path: path.to_owned(),
                source,
            })?;
        let mode = if recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        watcher
            .watch(path, mode)
            .map_err(|source| ResolverError::Watch {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            _watcher: watcher,
            rx,
        })
    }

    /// Waits for a change followed by [`DEBOUNCE`] of quiet; `false` when `stop` fired.
    pub(crate) async fn changed(&mut self, stop: &CancellationToken) -> bool {
        tokio::select! {
            got = self.rx.recv() => if got.is_none() { return false },
            () = stop.cancelled() => return false,
        }
        loop {
            tokio::select! {
                got = tokio::time::timeout(DEBOUNCE, self.rx.recv()) => match got {
                    Ok(Some(())) => continue,
                    Ok(None) => return false,
                    Err(_quiet) => return true,
                },
                () = stop.cancelled() => return false,
            }
        }
    }
}

/// Reloads the lists on every change until `stop`.
pub(crate) async fn watch_lists(
    mut signal: ChangeSignal,
    dir: PathBuf,
    cache_dir: PathBuf,
    store: SnapshotStore,
    metrics: Arc<DnsMetrics>,
    stop: CancellationToken,
) {
    while signal.changed(&stop).await {
        reload_lists(&dir, &cache_dir, &store, &metrics).await;
    }
}

/// Reloads the policy file on every change until `stop`.
pub(crate) async fn watch_policy(
    mut signal: ChangeSignal,
    path: PathBuf,
    store: SnapshotStore,
    metrics: Arc<DnsMetrics>,
    stop: CancellationToken,
) {
    while signal.changed(&stop).await {
        if let Err(error) = reload_policy(&path, &store, &metrics) {
            tracing::error!(%error, "policy file rejected; keeping the previous accounts");
        }
    }
}
