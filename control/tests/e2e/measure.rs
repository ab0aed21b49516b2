//! Measurements, not checks (ignored by default). Run with:
//! `cargo test -p qorgan-control --release --test e2e -- --ignored --nocapture login_throughput`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::support::*;

/// Successful logins per second over real HTTP on loopback, 16 concurrent clients, 10 s.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement"]
async fn login_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start().await;
    let s = Arc::new(Server::start(&config(dir.path(), &sink.url()), options()).await);
    let password = s
        .registered_owner(&mut sink, "9901", "Д-9901", "load@example.kz")
        .await;
    let ok = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(10);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (s, ok, password) = (s.clone(), ok.clone(), password.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let r = s.login("9901", &password).await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.text);
                ok.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let n = ok.load(Ordering::Relaxed);
    println!(
        "login throughput: {n} logins in {secs:.1} s = {:.1} req/s (16 clients, loopback)",
        n as f64 / secs
    );
}
