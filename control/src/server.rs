//! The HTTP/1.1 accept loop. `axum::serve` has no header-read timeout (RELIABILITY.md W8), so
//! connections are served by hyper directly with a timer: a client that does not finish its
//! headers within `http.header_timeout_secs` is dropped, at most `http.max_connections` are
//! served at once, and shutdown lets requests in flight finish (for up to 10 s).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::{App, ControlError};

/// Serves the cabinet and operator API on `listener` until `shutdown` is cancelled, then
/// waits (at most 10 s) for requests in flight and closes the app ([`App::close`]: the mail
/// sender stops, the store is flushed). On start it reconciles the ledger once in the
/// background (RELIABILITY W9; it logs and reports, serving does not wait for it).
pub async fn serve_http(
    app: App,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ControlError> {
    let reconciliation = tokio::spawn({
        let app = app.clone();
        async move {
            if let Err(e) = crate::api::operator::reconcile(&app).await {
                tracing::error!(error = %e, "ledger reconciliation failed");
            }
        }
    });
    let router = app.router();
    let header_timeout = Duration::from_secs(app.config().http.header_timeout_secs);
    let slots = Arc::new(Semaphore::new(app.config().http.max_connections));
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        let router = router.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                router.clone().oneshot(req.map(axum::body::Body::new))
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                }
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.as_mut().await;
                }
            }
        });
    }
    drop(listener);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        connections.abort_all();
    }
    // It holds a clone of the app: the store must not outlive this call.
    let _ = reconciliation.await;
    app.close().await
}
