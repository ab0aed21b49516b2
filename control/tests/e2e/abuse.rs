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

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A3: a wrong password for a known login and any password for an unknown one cost the same
/// (both verify one Argon2id hash: the unknown one against a dummy), so timing tells an
/// attacker nothing about which logins exist. Medians of interleaved samples, so that a busy
/// machine slows both kinds alike.
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
    // Warm-up (connection, first hash).
    s.login("6201", "wrong-password").await;
    s.login("6299", "wrong-password").await;
    const SAMPLES: usize = 41;
    let mut known = Vec::with_capacity(SAMPLES);
    let mut unknown = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        // Alternate the order so that neither kind always runs second.
        let order = if i % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for k in order {
            let t = std::time::Instant::now();
            let r = s
                .login(if k { "6201" } else { "6299" }, "wrong-password")
                .await;
            let took = t.elapsed();
            r.error(StatusCode::UNAUTHORIZED, "invalid_credentials");
            if k {
                known.push(took);
            } else {
                unknown.push(took);
            }
        }
    }
    // Paired: each known sample against the unknown one next to it (same load on the
    // machine). The second request of a pair runs at a different speed than the first, so
    // the pairs are split by order and the two medians averaged: the order effect cancels.
    let rel_diff = |(k, u): (&Duration, &Duration)| {
        let (k, u) = (k.as_secs_f64(), u.as_secs_f64());
        (k - u) / ((k + u) / 2.0)
    };
    let mut by_order: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for (i, pair) in known.iter().zip(&unknown).enumerate() {
        by_order[i % 2].push(rel_diff(pair));
    }
    let [mut known_first, mut unknown_first] = by_order;
    let mid = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a, b) = (mid(&mut known_first), mid(&mut unknown_first));
    let paired_gap = ((a + b) / 2.0).abs();
    let order_effect = ((a - b) / 2.0).abs();
    let (kmin, umin) = (*known.iter().min().unwrap(), *unknown.iter().min().unwrap());
    let (k, u) = (median(&mut known), median(&mut unknown));
    let rel = |a: Duration, b: Duration| {
        (a.as_secs_f64() - b.as_secs_f64()).abs() / a.as_secs_f64().min(b.as_secs_f64())
    };
    let gap = rel(k, u);
    println!(
        "A3: login timing over {SAMPLES} interleaved pairs: known user median {k:?}, unknown user \
         median {u:?}, gap {:.1}% (minima {kmin:?} / {umin:?}, gap {:.1}%; paired difference \
         {:.1}%, order effect {:.1}%)",
        gap * 100.0,
        rel(kmin, umin) * 100.0,
        paired_gap * 100.0,
        order_effect * 100.0
    );
    // Without the dummy hash the unknown name would answer ~100x faster (no Argon2 at all).
    // The 10 % gate is on the paired difference: the medians of the two kinds drift apart by
    // up to 25 % when the rest of the e2e binary hashes passwords on the same 2 cores, while
    // neighbouring samples share the load (measured over five runs of the whole binary:
    // medians 0.1–25 %, paired 0.2–2.2 %, order effect up to 27 %; this test alone: medians
    // under 4 %). The medians keep a loose 50 % gate, still far from the 100x of a missing
    // dummy hash.
    assert!(
        paired_gap < 0.10,
        "paired timing gap {:.1}% ≥ 10%",
        paired_gap * 100.0
    );
    assert!(gap < 0.50, "median timing gap {:.1}% ≥ 50%", gap * 100.0);
    s.stop().await;
}

/// The statuses of `n` login attempts until the first 429: how many passwords were checked
/// (401) before the lock, and how many of all `n` were refused unchecked (429).
async fn attempts_until_locked(
    s: &Server,
    http: &reqwest::Client,
    n: usize,
    name: impl Fn(usize) -> String,
) -> (usize, usize) {
    let mut checked = 0;
    let mut refused = 0;
    for i in 0..n {
        let r = http
            .post(s.url("/api/v1/session"))
            .json(&json!({"username": name(i), "password": format!("wrong-password-{i}")}))
            .send()
            .await
            .unwrap();
        match r.status() {
            StatusCode::UNAUTHORIZED if refused == 0 => checked += 1,
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("attempt {i}: {other} after {checked} checked, {refused} refused"),
        }
    }
    (checked, refused)
}

/// A3: 200 wrong passwords against one account, and 200 from one address over 200 names, with
/// the shipped limits (5 failures per login, × 4 per address, 60 s lock): the lock engages
/// within N attempts and every later attempt is refused without its password being checked
/// (even the right one).
#[tokio::test]
async fn two_hundred_wrong_passwords_engage_the_lock_within_n_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start().await;
    let cfg = config(dir.path(), &sink.url());
    let (per_login, factor) = (
        cfg.auth.max_failed_logins as usize,
        AppOptions::default().ip_failure_factor as usize,
    );
    let s = Server::start(
        &cfg,
        AppOptions {
            ip_failure_factor: factor as u32,
            ..options()
        },
    )
    .await;
    let password = s
        .registered_owner(&mut sink, "6301", "Д-6301", "brute@example.kz")
        .await;
    s.provision("6302", "Д-6302", BIN).await;

    // One account, from 127.0.0.1.
    let (n_login, refused) = attempts_until_locked(&s, &s.http, 200, |_| "6301".to_owned()).await;
    assert!(n_login <= per_login, "{n_login} passwords checked");
    assert_eq!(n_login + refused, 200, "after the lock, all refused");
    s.login("6301", &password)
        .await
        .error(StatusCode::TOO_MANY_REQUESTS, "too_many_requests");

    // One address (127.0.0.2), a different name each time: the address lock engages.
    let other_ip = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let (n_ip, refused_ip) =
        attempts_until_locked(&s, &other_ip, 200, |i| format!("ghost{i}@example.kz")).await;
    assert!(n_ip <= per_login * factor, "{n_ip} passwords checked");
    assert_eq!(n_ip + refused_ip, 200);
    let r = other_ip
        .post(s.url("/api/v1/session"))
        .json(&json!({"username": "6302", "password": "whatever-123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "address locked");
    // The lock is the address's, not everybody's: from 127.0.0.1 another account is checked.
    s.login("6302", "whatever-123")
        .await
        .error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    println!(
        "A3: 200 wrong passwords at one account: lock engaged after N={n_login} checked \
         (max_failed_logins {per_login}), {refused} refused unchecked; 200 from one address \
         over 200 names: N={n_ip} checked (limit {}), {refused_ip} refused unchecked",
        per_login * factor
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
