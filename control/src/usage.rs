//! The per-account counters' way into the store: every few seconds the resolver's counters
//! (atomics on the query path) are drained into hourly buckets and the day's top blocked
//! domains. A report the store refused (disk full) is kept and merged into the next one, so a
//! failing drain delays counts instead of losing them. The last drain runs at shutdown.

use std::time::Duration;

use qorgan_resolver::usage::UsageReport;
use qorgan_resolver::SnapshotStore;
use tokio_util::sync::CancellationToken;

use crate::store::Store;
use crate::ControlError;

/// Kazakhstan's one time zone (UTC+5): customers' days and hours are its days.
pub const ALMATY_OFFSET_SECS: i64 = 5 * 3600;

/// Days since the epoch in Asia/Almaty for unix seconds `at`.
pub fn almaty_day(at: i64) -> i64 {
    (at + ALMATY_OFFSET_SECS).div_euclid(86_400)
}

/// Writes one report (from this process's resolver, or from node `from` with its sequence
/// number) into the store; `Ok(false)` for a node's report already applied.
pub fn apply(
    store: &Store,
    report: &UsageReport,
    from: Option<(&str, u64)>,
) -> Result<bool, ControlError> {
    if report.is_empty() && from.is_none() {
        return Ok(true);
    }
    store
        .filters()
        .add_usage(report, almaty_day(report.at), from)
}

/// Drains `snapshots` into `store` every `interval` until `cancel`, then once more.
pub async fn drain_loop(
    store: Store,
    snapshots: SnapshotStore,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut pending: Option<UsageReport> = None;
    loop {
        let stop = tokio::select! {
            () = tokio::time::sleep(interval) => false,
            () = cancel.cancelled() => true,
        };
        let mut report = snapshots.take_usage(crate::now_secs());
        if let Some(mut older) = pending.take() {
            older.merge(&report);
            report = older;
        }
        let store = store.clone();
        let result = tokio::task::spawn_blocking(move || {
            let r = apply(&store, &report, None);
            (r, report)
        })
        .await;
        match result {
            Ok((Ok(_), _)) => {}
            Ok((Err(error), report)) => {
                tracing::error!(%error, "usage not stored; kept for the next drain");
                pending = Some(report);
            }
            Err(error) => tracing::error!(%error, "usage drain task failed"),
        }
        if stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn almaty_day_turns_at_19_utc() {
        // 2026-12-01T18:59:59Z is 23:59:59 in Almaty; a second later it is the 2nd there.
        let before = 1_764_615_599;
        assert_eq!(almaty_day(before + 1), almaty_day(before) + 1);
        assert_eq!(almaty_day(before), (before + 5 * 3600) / 86_400);
    }
}
