//! Brute force and flooding: login throttling per account and per source address, and the
//! per-address limits on registration and password reset.

use std::time::Duration;

use qorgan_control::{AppOptions, RateLimit};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::*;

fn retry_after(r: &Resp) -> u64 {
    r.headers
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn failed_logins_lock_the_account_with_retry_after_and_the_lock_doubles() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start().await;
    let mut cfg = config(dir.path(), &sink.url());
    cfg.auth.max_failed_logins = 3;
    cfg.auth.lockout_secs = 2;
    let s = Server::start(&cfg, options()).await;
    let password = s
        .registered_owner(&mut sink, "6001", "Д-6001", "t@example.kz")
        .await;

    for _ in 0..3 {
        s.login("6001", "wrong-password")
            .await
            .error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    let locked = s.login("6001", &password).await;
    locked.error(StatusCode::TOO_MANY_REQUESTS, "too_many_requests");
    let wait = retry_after(&locked);
    assert!((1..=2).contains(&wait), "{wait}");
    // Other accounts from the same address are not locked by this account's lock.
    s.provision("6002", "Д-6002", BIN).await;
    s.login("6002", "whatever-123")
        .await
        .error(StatusCode::UNAUTHORIZED, "invalid_credentials");

    tokio::time::sleep(Duration::from_millis(wait * 1000 + 100)).await;
    // One more failure after the lock: locked again, for twice as long.
    s.login("6001", "wrong-password")
        .await
        .error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    let again = s.login("6001", &password).await;
    again.error(StatusCode::TOO_MANY_REQUESTS, "too_many_requests");
    assert!(
        retry_after(&again) >= 3,
        "the lock doubles: {}",
        retry_after(&again)
    );
    tokio::time::sleep(Duration::from_millis(retry_after(&again) * 1000 + 100)).await;
    // The right password works once unlocked, and resets the account's counter.
    assert_eq!(s.login("6001", &password).await.status, StatusCode::OK);
    s.login("6001", "wrong-password")
        .await
        .error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    assert_eq!(s.login("6001", &password).await.status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn failed_logins_from_one_address_lock_that_address_for_every_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start().await;
    let mut cfg = config(dir.path(), &sink.url());
    cfg.auth.max_failed_logins = 2;
    cfg.auth.lockout_secs = 60;
    let s = Server::start(
        &cfg,
        AppOptions {
            ip_failure_factor: 3,
            ..options()
        },
    )
    .await;
    let password = s
        .registered_owner(&mut sink, "6101", "Д-6101", "ip@example.kz")
        .await;
    // 6 failures (2 × 3) spread over unknown names, so no single name is locked.
    for i in 0..6 {
        s.login(&format!("ghost{i}@example.kz"), "wrong-password")
            .await
            .error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    let r = s.login("6101", &password).await;
    r.error(StatusCode::TOO_MANY_REQUESTS, "too_many_requests");
    assert!(retry_after(&r) > 30);
    s.stop().await;
}

#[tokio::test]
async fn unknown_and_known_logins_take_similar_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start().await;
    let mut cfg = config(dir.path(), &sink.url());
    cfg.auth.max_failed_logins = 1000;
    let s = Server::start(
        &cfg,
        AppOptions {
            ip_failure_factor: 1000,
            ..options()
        },
    )
    .await;
    s.registered_owner(&mut sink, "6201", "Д-6201", "time@example.kz")
        .await;
    let mut known = Duration::ZERO;
    let mut unknown = Duration::ZERO;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        s.login("6201", "wrong-password").await;
        known += t.elapsed();
        let t = std::time::Instant::now();
        s.login("6299", "wrong-password").await;
        unknown += t.elapsed();
    }
    let ratio = known.as_secs_f64() / unknown.as_secs_f64();
    // Both verify one Argon2 hash; without the dummy hash the unknown name would be ~100× faster.
    assert!(
        (0.33..3.0).contains(&ratio),
        "known {known:?} vs unknown {unknown:?}"
    );
    s.stop().await;
}

#[tokio::test]
async fn registration_and_password_reset_are_rate_limited_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let opts = AppOptions {
        register_limit: RateLimit {
            max: 2,
            window: Duration::from_secs(60),
        },
        forgot_limit: RateLimit {
            max: 2,
            window: Duration::from_secs(60),
        },
        ..options()
    };
    let s = Server::start(&config(dir.path(), ""), opts).await;
    for _ in 0..2 {
        s.register("Д-0", BIN, "x@example.kz")
            .await
            .error(StatusCode::UNPROCESSABLE_ENTITY, "contract_not_matched");
    }
    let r = s.register("Д-0", BIN, "x@example.kz").await;
    r.error(StatusCode::TOO_MANY_REQUESTS, "too_many_requests");
    assert!(retry_after(&r) >= 1);
    for _ in 0..2 {
        let ok = s
            .call(
                Method::POST,
                "/api/v1/password/forgot",
                None,
                Some(json!({"username": "1"})),
            )
            .await;
        assert_eq!(ok.status, StatusCode::ACCEPTED);
    }
    s.call(
        Method::POST,
        "/api/v1/password/forgot",
        None,
        Some(json!({"username": "1"})),
    )
    .await
    .error(StatusCode::TOO_MANY_REQUESTS, "too_many_requests");
    s.stop().await;
}
