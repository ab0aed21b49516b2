//! RELIABILITY S1 (money durability under `kill -9`) and the W9 start-up ledger reconciliation.
//!
//! S1: the real `qorgan` binary on a temp data dir takes a stream of sandbox top-ups (order,
//! then the signed bank callback) and own block/allow list uploads from concurrent tasks. At a
//! random moment 20–400 ms into the stream it is SIGKILLed, then started again on the same data
//! dir. Every callback answered 2xx must be in `/payments` (its ledger row is checked by the
//! reconciliation), the reconciliation must find no mismatch and no orphan, and each list must
//! hold its last acknowledged upload or a later, unacknowledged one.
//!
//! `QORGAN_CRASH_CYCLES` sets the number of kills (default 100, as CI runs it; 1000 by hand);
//! `QORGAN_CRASH_SEED` replays a run's kill moments (the seed is printed).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::billing::sign;
use crate::binary::{call, write_config, Qorgan};
use crate::policy::customer;
use crate::support::*;

/// Kills per run unless `QORGAN_CRASH_CYCLES` says otherwise.
const DEFAULT_CYCLES: usize = 100;
/// Concurrent top-up streams, and each one's pause after a credit. Every check after a restart
/// reads all payments so far, so the run's cost grows with their count: the pause keeps it
/// near 30 a cycle (1,000 cycles in a debug build in minutes, not hours) while a payment is
/// still in flight at most kills.
const PAYERS: usize = 3;
const PAY_PAUSE: Duration = Duration::from_millis(15);
/// The own lists, each edited by one stream (so that "the last acknowledged" is well defined).
const LISTS: [&str; 2] = ["blocklist", "allowlist"];
/// Bounds of every stream task: requests, and time (the kill ends them long before).
const MAX_REQUESTS: usize = 5_000;
const STREAM_BOUND: Duration = Duration::from_secs(20);
/// Starts attempted per cycle before the run gives up (each failed one is an open failure).
const START_ATTEMPTS: usize = 3;

/// xorshift64*: reproducible kill moments without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// What one top-up stream saw: the orders whose callback was answered 2xx (with amounts), and
/// complete answers from the live server that were not the expected ones.
#[derive(Default)]
struct PayLog {
    acked: Vec<(String, i64)>,
    unexpected: Vec<String>,
}

/// One list's edits over the whole run: uploads are numbered; the stored list must carry a
/// number in `acked..=sent`.
#[derive(Clone, Copy, Default)]
struct ListLog {
    acked: u64,
    sent: u64,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Opens orders and delivers their signed sandbox callbacks until the server goes away.
async fn pay_stream(base: String, token: String, tag: String) -> PayLog {
    let http = client();
    let mut log = PayLog::default();
    let started = Instant::now();
    for n in 0..MAX_REQUESTS {
        if started.elapsed() > STREAM_BOUND {
            log.unexpected
                .push(format!("{tag}: still streaming after the kill"));
            break;
        }
        let amount = 10_000 + i64::try_from(n % 50).unwrap() * 100;
        let Ok(r) = http
            .post(format!("{base}/api/v1/topups"))
            .bearer_auth(&token)
            .json(&json!({ "amount_tiyn": amount }))
            .send()
            .await
        else {
            break;
        };
        let status = r.status();
        let Ok(text) = r.text().await else { break };
        let order: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let Some(order_id) = order["order_id"].as_str().filter(|_| status == 201) else {
            log.unexpected
                .push(format!("POST /topups answered {status}: {text}"));
            break;
        };
        let body = format!(
            r#"{{"order_id":"{order_id}","amount_tiyn":{amount},"status":"paid","reference":"S1-{tag}-{n}"}}"#
        );
        let Ok(r) = http
            .post(format!("{base}/api/v1/payments/sandbox/callback"))
            .header("content-type", "application/json")
            .header("x-signature", sign(body.as_bytes()))
            .body(body)
            .send()
            .await
        else {
            break;
        };
        let status = r.status();
        let Ok(text) = r.text().await else { break };
        if status.is_success() && text.contains(r#""credited""#) {
            log.acked.push((order_id.to_owned(), amount));
            tokio::time::sleep(PAY_PAUSE).await;
        } else {
            log.unexpected
                .push(format!("callback for {order_id} answered {status}: {text}"));
            break;
        }
    }
    log
}

/// The text of upload number `n` of list `kind`.
fn list_text(kind: &str, n: u64) -> String {
    format!("s1-{n}.{kind}.example\n")
}

/// The upload number a stored list carries (0: never uploaded).
fn list_number(kind: &str, text: &str) -> Option<u64> {
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Some(0);
    }
    line.strip_prefix("s1-")?
        .strip_suffix(&format!(".{kind}.example"))?
        .parse()
        .ok()
}

/// Uploads numbered versions of one list, one after the other, until the server goes away.
async fn edit_stream(
    base: String,
    token: String,
    kind: &'static str,
    mut log: ListLog,
) -> (ListLog, Vec<String>) {
    let http = client();
    let mut unexpected = Vec::new();
    let started = Instant::now();
    for _ in 0..MAX_REQUESTS {
        if started.elapsed() > STREAM_BOUND {
            unexpected.push(format!("{kind}: still streaming after the kill"));
            break;
        }
        let n = log.sent + 1;
        log.sent = n;
        let Ok(r) = http
            .put(format!("{base}/api/v1/dns-filter/{kind}"))
            .bearer_auth(&token)
            .header("content-type", "text/plain; charset=utf-8")
            .body(list_text(kind, n))
            .send()
            .await
        else {
            break;
        };
        let status = r.status();
        let Ok(text) = r.text().await else { break };
        if status == StatusCode::OK {
            log.acked = n;
        } else {
            unexpected.push(format!("PUT {kind} answered {status}: {text}"));
            break;
        }
    }
    (log, unexpected)
}

/// What a check after a restart found.
#[derive(Default)]
struct Findings {
    lost_payments: Vec<String>,
    lost_edits: Vec<String>,
    mismatches: Vec<String>,
}

/// After a restart: every acknowledged payment is listed, the balance is their sum and the
/// reconciliation finds nothing, every list holds its last acknowledged upload or a later one.
async fn verify(
    base: &str,
    token: &str,
    acked: &[(String, i64)],
    lists: &[ListLog],
    found: &mut Findings,
) {
    let (st, payments) = call(base, Method::GET, "/api/v1/payments", Some(token), None).await;
    assert_eq!(st, StatusCode::OK, "{payments}");
    let listed: HashMap<&str, i64> = payments
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["order_id"].as_str().unwrap_or(""),
                p["amount_tiyn"].as_i64().unwrap(),
            )
        })
        .collect();
    for (order, amount) in acked {
        if listed.get(order.as_str()) != Some(amount) {
            found
                .lost_payments
                .push(format!("order {order} ({amount} tiyn)"));
        }
    }
    let listed_sum: i64 = listed.values().sum();
    let (st, me) = call(base, Method::GET, "/api/v1/me", Some(token), None).await;
    assert_eq!(st, StatusCode::OK, "{me}");
    if me["balance_tiyn"].as_i64() != Some(listed_sum) {
        found.mismatches.push(format!(
            "balance {} ≠ the {} listed payments' {listed_sum}",
            me["balance_tiyn"],
            listed.len()
        ));
    }
    let (st, rec) = call(
        base,
        Method::GET,
        "/api/v1/operator/reconciliation",
        Some(OPERATOR_TOKEN),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{rec}");
    assert!(rec["checked_accounts"].as_u64().unwrap() >= 1, "{rec}");
    for problem in rec["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rec["orphans"].as_array().unwrap())
    {
        found.mismatches.push(problem.to_string());
    }
    for (kind, log) in LISTS.iter().zip(lists) {
        let r = client()
            .get(format!("{base}/api/v1/dns-filter/{kind}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let text = r.text().await.unwrap();
        match list_number(kind, &text) {
            Some(n) if (log.acked..=log.sent).contains(&n) => {}
            other => found.lost_edits.push(format!(
                "{kind} holds {other:?} ({text:?}); acknowledged {}, sent {}",
                log.acked, log.sent
            )),
        }
    }
}

/// `qorgan serve` on the data dir; a start that fails is counted and tried again.
fn start(config: &std::path::Path, open_failures: &mut usize) -> Qorgan {
    for _ in 0..START_ATTEMPTS {
        match std::panic::catch_unwind(AssertUnwindSafe(|| Qorgan::start(config))) {
            Ok(q) => return q,
            Err(_) => *open_failures += 1,
        }
    }
    panic!("qorgan did not start {START_ATTEMPTS} times in a row on its killed data dir");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_payments_and_filter_edits_survive_kill_9() {
    let cycles: usize = std::env::var("QORGAN_CRASH_CYCLES")
        .ok()
        .map_or(DEFAULT_CYCLES, |v| v.parse().expect("QORGAN_CRASH_CYCLES"));
    let seed: u64 = std::env::var("QORGAN_CRASH_SEED").ok().map_or_else(
        || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        },
        |v| v.parse().expect("QORGAN_CRASH_SEED"),
    );
    eprintln!("S1: seed {seed} (QORGAN_CRASH_SEED to replay)");
    let mut rng = Rng(seed);
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start().await;
    let config = write_config(
        dir.path(),
        "q.toml",
        "127.0.0.1:9".parse().unwrap(),
        &dir.path().join("data"),
        &sink.url(),
    );
    let mut open_failures = 0;

    // The customer, made durable by a clean stop (the stream then writes to it only).
    let q = start(&config, &mut open_failures);
    let token = customer(&q.base, &mut sink, "8801", IIN, "127.0.0.0/24").await;
    q.stop();

    let mut acked: Vec<(String, i64)> = Vec::new();
    let mut lists = [ListLog::default(); 2];
    let mut found = Findings::default();
    let mut unexpected: Vec<String> = Vec::new();
    let mut edits_acked = 0u64;
    let mut kill_ms = Vec::with_capacity(cycles);
    for cycle in 0..=cycles {
        let q = start(&config, &mut open_failures);
        verify(&q.base, &token, &acked, &lists, &mut found).await;
        if cycle % 100 == 0 && cycle > 0 {
            eprintln!(
                "S1: {cycle} cycles, {} payments acknowledged, {:.0} s",
                acked.len(),
                started.elapsed().as_secs_f64()
            );
        }
        if cycle == cycles {
            q.stop();
            break;
        }
        let mut payers = Vec::new();
        for t in 0..PAYERS {
            payers.push(tokio::spawn(pay_stream(
                q.base.clone(),
                token.clone(),
                format!("c{cycle}t{t}"),
            )));
        }
        let mut editors = Vec::new();
        for (kind, log) in LISTS.into_iter().zip(lists) {
            editors.push(tokio::spawn(edit_stream(
                q.base.clone(),
                token.clone(),
                kind,
                log,
            )));
        }
        let after = rng.between(20, 400);
        kill_ms.push(after);
        tokio::time::sleep(Duration::from_millis(after)).await;
        q.kill();
        for p in payers {
            let log = p.await.unwrap();
            acked.extend(log.acked);
            unexpected.extend(log.unexpected);
        }
        for (slot, e) in lists.iter_mut().zip(editors) {
            let (log, odd) = e.await.unwrap();
            edits_acked += log.acked - slot.acked;
            *slot = log;
            unexpected.extend(odd);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "S1: {cycles} cycles, {} payments acknowledged, {} lost, {edits_acked} edits acknowledged, \
         {} lost, {} mismatches, {open_failures} open failures, {secs:.0} s",
        acked.len(),
        found.lost_payments.len(),
        found.lost_edits.len(),
        found.mismatches.len(),
    );
    assert!(
        found.lost_payments.is_empty(),
        "acknowledged payments lost: {:?}",
        found.lost_payments
    );
    assert!(
        found.lost_edits.is_empty(),
        "acknowledged edits lost: {:?}",
        found.lost_edits
    );
    assert!(
        found.mismatches.is_empty(),
        "books disagree: {:?}",
        found.mismatches
    );
    assert_eq!(open_failures, 0, "the store refused to open after a kill");
    assert!(
        unexpected.is_empty(),
        "the live server answered unexpectedly: {unexpected:?}"
    );
    // The harness measured something: the kills fell inside streams that had acknowledged
    // money and edits.
    assert!(
        acked.len() >= cycles / 2 && edits_acked >= cycles as u64 / 2,
        "too few acknowledgements to mean anything (kills after {kill_ms:?} ms)"
    );
}

/// The balance stored for the one account that has one, overwritten in the closed store.
fn forge_balance(store_dir: &std::path::Path, tiyn: i64) {
    for _ in 0..40 {
        // sled may briefly hold its lock after the app closed (RELIABILITY sled caveat 3).
        let Ok(db) = sled::Config::new().path(store_dir).open() else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let balances = db.open_tree("balances").unwrap();
        let keys: Vec<_> = balances.iter().keys().map(Result::unwrap).collect();
        assert_eq!(keys.len(), 1, "one account has a balance");
        // The store's encoding: a schema-version byte, then JSON.
        let mut value = vec![1u8];
        value.extend_from_slice(tiyn.to_string().as_bytes());
        balances.insert(&keys[0], value).unwrap();
        db.flush().unwrap();
        return;
    }
    panic!("the closed store could not be opened");
}

fn gauge(registry: &prometheus::Registry) -> Option<String> {
    let mut text = String::new();
    prometheus::TextEncoder::new()
        .encode_utf8(&registry.gather(), &mut text)
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("qorgan_ledger_mismatches "))
        .map(|l| l["qorgan_ledger_mismatches ".len()..].to_owned())
}

#[tokio::test]
async fn a_forged_balance_is_reported_at_start_up_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start().await;
    let c = config(dir.path(), &sink.url());
    let s = Server::start(&c, options()).await;
    let password = s
        .registered_owner(&mut sink, "8802", "8802/1", "rec@example.kz")
        .await;
    let charge = s
        .operator(
            Method::POST,
            "/api/v1/operator/accounts/8802/charges",
            Some(json!({"amount_tiyn": 42_000, "description": "ноябрь"})),
        )
        .await;
    assert_eq!(charge.status, StatusCode::CREATED, "{}", charge.text);
    let clean = s
        .operator(Method::GET, "/api/v1/operator/reconciliation", None)
        .await;
    assert_eq!(clean.status, StatusCode::OK, "{}", clean.text);
    assert_eq!(clean.body["checked_accounts"], 1, "{}", clean.text);
    assert_eq!(clean.body["mismatches"], json!([]), "{}", clean.text);
    assert_eq!(clean.body["orphans"], json!([]), "{}", clean.text);
    s.call(Method::GET, "/api/v1/operator/reconciliation", None, None)
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    s.stop().await;

    forge_balance(&dir.path().join("store"), 1_000_000);

    // Started again: the start-up run finds it, sets the gauge, and the endpoint reports it.
    let registry = prometheus::Registry::new();
    let app = qorgan_control::App::open_with(&c, &registry, options()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(qorgan_control::serve_http(
        app.clone(),
        listener,
        shutdown.clone(),
    ));
    let mut reported = None;
    for _ in 0..100 {
        reported = gauge(&registry);
        if reported.as_deref() == Some("1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        reported.as_deref(),
        Some("1"),
        "the start-up reconciliation counts the mismatch"
    );
    let (st, rec) = call(
        &base,
        Method::GET,
        "/api/v1/operator/reconciliation",
        Some(OPERATOR_TOKEN),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{rec}");
    assert_eq!(
        rec["mismatches"],
        json!([{"account": "8802", "balance_tiyn": 1_000_000, "ledger_sum_tiyn": -42_000}]),
        "{rec}"
    );
    assert_eq!(rec["orphans"], json!([]), "{rec}");
    assert!(rec["checked_at"].as_str().unwrap().contains('T'), "{rec}");
    let (_, account) = call(
        &base,
        Method::GET,
        "/api/v1/operator/accounts/8802",
        Some(OPERATOR_TOKEN),
        None,
    )
    .await;
    assert_eq!(account["balance_tiyn"], 1_000_000, "reported, not repaired");
    let (st, session) = call(
        &base,
        Method::POST,
        "/api/v1/session",
        None,
        Some(json!({"username": "8802", "password": password})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "the cabinet still serves: {session}");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
