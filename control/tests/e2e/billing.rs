//! Billing over HTTP (issue 5): services and usage, disconnect and connect requests, the
//! statistics email with its CSV at the SMTP sink, charges and invoices of all four kinds with
//! filters and a real PDF, payment history, card top-up through the sandbox page with the
//! callback replayed 50 times (some concurrently), and the Halyk flow against a local stand-in
//! for the bank, forged `secret_hash` included.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::net::TcpListener;

use crate::support::*;

/// The sandbox gateway's HMAC secret in these tests (also in the binary's config).
pub(crate) const SANDBOX_SECRET: &str = "sandbox-secret-for-tests";

/// Config with the public URL pointing at the listener itself (the sandbox page posts its
/// callback there, as a bank would).
async fn server_with(
    dir: &std::path::Path,
    smtp: &str,
    tweak: impl FnOnce(&mut qorgan_config::Config),
) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut c = config(dir, smtp);
    c.http.public_url = format!("http://{}", listener.local_addr().unwrap());
    c.payments.secret = SANDBOX_SECRET.to_owned();
    tweak(&mut c);
    Server::start_on(listener, &c, options()).await
}

pub(crate) fn sign(body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SANDBOX_SECRET.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

async fn post_callback(s: &Server, gateway: &str, body: &[u8], sig: Option<&str>) -> Resp {
    let mut req = s
        .http
        .post(s.url(&format!("/api/v1/payments/{gateway}/callback")))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(sig) = sig {
        req = req.header("x-signature", sig);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    Resp {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

/// The parts of a MIME message: (headers, decoded body) of each leaf part.
fn mime_parts(raw: &str) -> Vec<(String, Vec<u8>)> {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    let ct = unfolded
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("content-type:"))
        .unwrap_or("")
        .to_owned();
    if let Some(i) = ct.find("boundary=") {
        let b = ct[i + 9..]
            .trim_matches(|c| c == '"' || c == ';' || c == ' ')
            .split(['"', ';'])
            .next()
            .unwrap()
            .to_owned();
        let delim = format!("--{b}");
        return body
            .split(&delim)
            .skip(1)
            .filter(|p| !p.starts_with("--"))
            .flat_map(|p| mime_parts(p.trim_start_matches("\r\n")))
            .collect();
    }
    let b64 = unfolded
        .to_ascii_lowercase()
        .contains("content-transfer-encoding: base64");
    let decoded = if b64 {
        let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact)
            .unwrap()
    } else {
        body.as_bytes().to_vec()
    };
    vec![(unfolded, decoded)]
}

/// Text of a PDF through poppler's pdftotext, or `None` when it is not installed.
fn pdftotext(pdf: &[u8]) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("invoice.pdf");
    std::fs::write(&path, pdf).unwrap();
    let out = std::process::Command::new("pdftotext")
        .args(["-enc", "UTF-8"])
        .arg(&path)
        .arg("-")
        .output()
        .ok()?;
    assert!(out.status.success(), "pdftotext failed on our PDF");
    Some(String::from_utf8(out.stdout).unwrap())
}

#[tokio::test]
async fn services_requests_statistics_invoices_pdf_and_payment_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start().await;
    let s = server_with(dir.path(), &sink.url(), |_| {}).await;
    let password = s
        .registered_owner(&mut sink, "4445", CONTRACT, "owner@example.kz")
        .await;
    let token = s.token("4445", &password).await;
    let t = Some(token.as_str());
    // Another account, to prove isolation.
    let other_pw = s
        .registered_owner(&mut sink, "5556", "ДП-77/1", "other@example.kz")
        .await;
    let other = s.token("5556", &other_pw).await;

    // --- services and usage
    let svc = s
        .operator(
            Method::POST,
            "/api/v1/operator/accounts/4445/services",
            Some(json!({"kind": "internet", "name": "Бизнес 100", "monthly_fee_tiyn": 1_500_000})),
        )
        .await;
    assert_eq!(svc.status, StatusCode::CREATED, "{}", svc.text);
    let sid = svc.body["id"].as_u64().unwrap();
    for (from, to, bytes, amount) in [
        ("2026-09-01", "2026-09-30", 1_000, 100),
        ("2026-10-01", "2026-10-31", 2_000, 200),
    ] {
        let r = s
            .operator(
                Method::POST,
                &format!("/api/v1/operator/accounts/4445/services/{sid}/usage"),
                Some(
                    json!({"period_from": from, "period_to": to, "bytes_in": bytes, "bytes_out": 5,
                    "amount_tiyn": amount, "description": "трафик"}),
                ),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let list = s.call(Method::GET, "/api/v1/services", t, None).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body.as_array().unwrap().len(), 1);
    let u = s
        .call(
            Method::GET,
            &format!("/api/v1/services/{sid}/usage?from=2026-10-01&to=2026-10-31"),
            t,
            None,
        )
        .await;
    assert_eq!(u.status, StatusCode::OK, "{}", u.text);
    assert_eq!(u.body["records"].as_array().unwrap().len(), 1);
    assert_eq!(u.body["bytes_in"], 2_000);
    assert_eq!(u.body["amount_tiyn"], 200);
    s.call(
        Method::GET,
        &format!("/api/v1/services/{sid}/usage?from=2026-10-31&to=2026-10-01"),
        t,
        None,
    )
    .await
    .error(StatusCode::BAD_REQUEST, "bad_period");
    s.call(
        Method::GET,
        &format!("/api/v1/services/{sid}/usage?from=2024-01-01&to=2026-10-01"),
        t,
        None,
    )
    .await
    .error(StatusCode::BAD_REQUEST, "bad_period");
    s.call(
        Method::GET,
        &format!("/api/v1/services/{sid}/usage?from=2026-13-01&to=2026-10-01"),
        t,
        None,
    )
    .await
    .error(StatusCode::BAD_REQUEST, "bad_date");
    s.call(
        Method::GET,
        &format!("/api/v1/services/{sid}/usage"),
        Some(&other),
        None,
    )
    .await
    .error(StatusCode::NOT_FOUND, "not_found");

    // --- disconnect (second open → 409) and connect requests
    let path = format!("/api/v1/services/{sid}/disconnect-request");
    let d = s
        .call(Method::POST, &path, t, Some(json!({"comment": "переезд"})))
        .await;
    assert_eq!(d.status, StatusCode::CREATED, "{}", d.text);
    assert_eq!(d.body["kind"], "disconnect");
    s.call(Method::POST, &path, t, Some(json!({})))
        .await
        .error(StatusCode::CONFLICT, "already_requested");
    let c = s
        .call(
            Method::POST,
            "/api/v1/service-requests",
            t,
            Some(json!({"configuration": {"tariff": "Бизнес 200", "static_ip": true}})),
        )
        .await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.text);
    assert_eq!(c.body["account_number"], "4445");
    s.call(
        Method::POST,
        "/api/v1/service-requests",
        t,
        Some(json!({"configuration": []})),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_configuration");
    let ops = s
        .operator(
            Method::GET,
            "/api/v1/operator/accounts/4445/service-requests",
            None,
        )
        .await;
    assert_eq!(ops.body.as_array().unwrap().len(), 2, "{}", ops.text);

    // --- statistics request → email with the CSV attachment
    let st = s
        .call(
            Method::POST,
            "/api/v1/stats-requests",
            t,
            Some(json!({"service_id": sid, "from": "2026-09-01", "to": "2026-10-31"})),
        )
        .await;
    assert_eq!(st.status, StatusCode::ACCEPTED, "{}", st.text);
    let mail = sink.next_to("owner@example.kz", 10).await;
    let parts = mime_parts(&mail.raw);
    let csv = parts
        .iter()
        .find(|(h, _)| h.contains("usage-"))
        .unwrap_or_else(|| panic!("no CSV attachment in {}", mail.raw));
    let csv = String::from_utf8(csv.1.clone()).unwrap();
    assert!(csv.starts_with("period_start,period_end,service"), "{csv}");
    assert!(
        csv.contains("2026-09-01,2026-09-30,Бизнес 100,трафик,1000,5,100,1.00"),
        "{csv}"
    );
    assert!(
        csv.contains("2026-10-01,2026-10-31,Бизнес 100,трафик,2000,5,200,2.00"),
        "{csv}"
    );
    let mut state = Value::Null;
    for _ in 0..100 {
        let l = s.call(Method::GET, "/api/v1/stats-requests", t, None).await;
        state = l.body[0]["status"].clone();
        if state == "sent" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state, "sent");
    s.call(
        Method::POST,
        "/api/v1/stats-requests",
        t,
        Some(json!({"service_id": sid, "from": "2026-09-01", "to": "2999-01-01"})),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "bad_period");

    // --- charges and invoices of the four kinds
    let ch = s
        .operator(
            Method::POST,
            "/api/v1/operator/accounts/4445/charges",
            Some(json!({"amount_tiyn": 1_500_000, "description": "Абонплата, октябрь", "service_id": sid})),
        )
        .await;
    assert_eq!(ch.status, StatusCode::CREATED, "{}", ch.text);
    let mut ids = HashMap::new();
    for (kind, number, issued) in [
        ("notice", "СИ-1001", "2026-11-01"),
        ("invoice", "1002", "2026-11-05"),
        ("one_time", "1003", "2026-10-15"),
        ("correction", "1004", "2026-11-20"),
    ] {
        let mut body = json!({"kind": kind, "number": number, "issued_on": issued,
            "period_from": "2026-10-01", "period_to": "2026-10-31", "amount_tiyn": 1_500_000,
            "lines": [{"description": "Доступ в интернет «Бизнес 100», октябрь 2026", "amount_tiyn": 1_500_000}]});
        if kind == "correction" {
            body["corrects_number"] = json!("1002");
        }
        let r = s
            .operator(
                Method::POST,
                "/api/v1/operator/accounts/4445/invoices",
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        ids.insert(kind, r.body["id"].as_u64().unwrap());
        let again = s
            .operator(
                Method::POST,
                "/api/v1/operator/accounts/4445/invoices",
                Some(body),
            )
            .await;
        assert_eq!(again.status, StatusCode::OK, "an identical retry");
    }
    s.operator(
        Method::POST,
        "/api/v1/operator/accounts/4445/invoices",
        Some(
            json!({"kind": "invoice", "number": "1002", "issued_on": "2026-11-06",
            "period_from": "2026-10-01", "period_to": "2026-10-31", "amount_tiyn": 1, "lines": []}),
        ),
    )
    .await
    .error(StatusCode::CONFLICT, "duplicate");
    s.operator(
        Method::POST,
        "/api/v1/operator/accounts/4445/invoices",
        Some(
            json!({"kind": "bill", "number": "9", "issued_on": "2026-11-06",
            "period_from": "2026-10-01", "period_to": "2026-10-31", "amount_tiyn": 1, "lines": []}),
        ),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_kind");
    let all = s.call(Method::GET, "/api/v1/invoices", t, None).await;
    assert_eq!(all.body.as_array().unwrap().len(), 4, "{}", all.text);
    let notices = s
        .call(Method::GET, "/api/v1/invoices?kind=notice", t, None)
        .await;
    assert_eq!(notices.body.as_array().unwrap().len(), 1);
    assert_eq!(notices.body[0]["title"], "Счёт-извещение");
    let nov = s
        .call(
            Method::GET,
            "/api/v1/invoices?from=2026-11-01&to=2026-11-30",
            t,
            None,
        )
        .await;
    let numbers: Vec<&str> = nov
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["number"].as_str().unwrap())
        .collect();
    assert_eq!(numbers, vec!["1004", "1002", "СИ-1001"]);
    s.call(Method::GET, "/api/v1/invoices?kind=bill", t, None)
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_kind");
    let one = s
        .call(
            Method::GET,
            &format!("/api/v1/invoices/{}", ids["correction"]),
            t,
            None,
        )
        .await;
    assert_eq!(one.body["corrects_number"], "1002");
    for kind in ["notice", "invoice", "one_time", "correction"] {
        let r = s
            .http
            .get(s.url(&format!("/api/v1/invoices/{}/pdf", ids[kind])))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "application/pdf");
        let cd = r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(cd.starts_with("attachment;"), "{cd}");
        let pdf = r.bytes().await.unwrap();
        assert!(pdf.starts_with(b"%PDF-"));
        match pdftotext(&pdf) {
            Some(text) => {
                assert!(text.contains("ТОО «Тест»"), "{text}");
                assert!(text.contains("ДП-11"), "the contract number: {text}");
                let number = one_number(kind);
                assert!(text.contains(number), "{kind}: {text}");
            }
            None => {
                eprintln!("pdftotext not installed (Debian poppler-utils): PDF text not checked")
            }
        }
    }
    for path in [
        format!("/api/v1/invoices/{}", ids["notice"]),
        format!("/api/v1/invoices/{}/pdf", ids["notice"]),
    ] {
        s.call(Method::GET, &path, Some(&other), None)
            .await
            .error(StatusCode::NOT_FOUND, "not_found");
    }

    // --- payment history with sources
    for (source, amount, reference) in [
        ("bank_transfer", 1_000_000, "ПП-17"),
        ("cash", 20_000, "КО-5"),
        ("correction", -500, "К-1"),
    ] {
        let r = s
            .operator(
                Method::POST,
                "/api/v1/operator/accounts/4445/payments",
                Some(json!({"amount_tiyn": amount, "source": source, "reference": reference})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let again = s
        .operator(
            Method::POST,
            "/api/v1/operator/accounts/4445/payments",
            Some(
                json!({"amount_tiyn": 1_000_000, "source": "bank_transfer", "reference": "ПП-17"}),
            ),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "a retry is harmless");
    let hist = s.call(Method::GET, "/api/v1/payments", t, None).await;
    assert_eq!(hist.status, StatusCode::OK, "{}", hist.text);
    let sources: Vec<&str> = hist
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["source"].as_str().unwrap())
        .collect();
    assert_eq!(
        sources,
        vec!["correction", "cash", "bank_transfer"],
        "newest first"
    );
    let me = s.call(Method::GET, "/api/v1/me", t, None).await;
    assert_eq!(
        me.body["balance_tiyn"],
        -1_500_000 + 1_000_000 + 20_000 - 500
    );
    let none = s
        .call(Method::GET, "/api/v1/payments", Some(&other), None)
        .await;
    assert_eq!(none.body.as_array().unwrap().len(), 0);
    s.stop().await;
}

fn one_number(kind: &str) -> &'static str {
    match kind {
        "notice" => "СИ-1001",
        "invoice" => "1002",
        "one_time" => "1003",
        _ => "1004",
    }
}

/// Balance from the API and the ledger's sum from the store agree.
async fn balance(s: &Server, token: &str) -> i64 {
    let me = s.call(Method::GET, "/api/v1/me", Some(token), None).await;
    me.body["balance_tiyn"].as_i64().unwrap()
}

#[tokio::test]
async fn sandbox_top_up_credits_exactly_once_under_50_replays_some_concurrent() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start().await;
    let s = server_with(dir.path(), &sink.url(), |_| {}).await;
    let password = s
        .registered_owner(&mut sink, "4445", CONTRACT, "owner@example.kz")
        .await;
    let token = s.token("4445", &password).await;
    let t = Some(token.as_str());

    // Bad amounts: nothing is opened.
    for amount in [
        json!(0),
        json!(-100),
        json!(5_000),
        json!(100_000_001),
        json!(1.5),
        json!("100"),
    ] {
        let r = s
            .call(
                Method::POST,
                "/api/v1/topups",
                t,
                Some(json!({"amount_tiyn": amount})),
            )
            .await;
        assert!(r.status.is_client_error(), "{amount}: {}", r.text);
    }
    s.call(
        Method::POST,
        "/api/v1/topups",
        t,
        Some(json!({"amount_tiyn": 0})),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "bad_amount");

    // Top-up through the sandbox page: the page's button makes the server play the bank.
    let o = s
        .call(
            Method::POST,
            "/api/v1/topups",
            t,
            Some(json!({"amount_tiyn": 150_000})),
        )
        .await;
    assert_eq!(o.status, StatusCode::CREATED, "{}", o.text);
    let order_id = o.body["order_id"].as_str().unwrap().to_owned();
    let pay_url = o.body["payment_url"].as_str().unwrap().to_owned();
    assert!(
        pay_url.ends_with(&format!("/sandbox/pay/{order_id}")),
        "{pay_url}"
    );
    let page = s.http.get(&pay_url).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("value=\"pay\""));
    let pressed = s
        .http
        .post(&pay_url)
        .form(&[("action", "pay")])
        .send()
        .await
        .unwrap();
    assert_eq!(pressed.status(), StatusCode::OK);
    assert!(pressed.text().await.unwrap().contains("Оплата проведена"));
    assert_eq!(balance(&s, &token).await, 150_000);
    let st = s
        .call(Method::GET, &format!("/api/v1/topups/{order_id}"), t, None)
        .await;
    assert_eq!(st.body["status"], "paid", "{}", st.text);
    let receipt = sink.next_to("owner@example.kz", 10).await;
    assert!(receipt.text().contains("зачислен"), "{}", receipt.text());

    // A second order: the bank's callback delivered 50 times, 25 of them at once.
    let o2 = s
        .call(
            Method::POST,
            "/api/v1/topups",
            t,
            Some(json!({"amount_tiyn": 70_000})),
        )
        .await;
    let id2 = o2.body["order_id"].as_str().unwrap().to_owned();
    let body = format!(
        r#"{{"order_id": "{id2}", "amount_tiyn": 70000, "status": "paid", "reference": "SBX-E2E-1"}}"#
    );
    let sig = sign(body.as_bytes());
    let mut results = Vec::new();
    for _ in 0..25 {
        results.push(post_callback(&s, "sandbox", body.as_bytes(), Some(&sig)).await);
    }
    let url = s.url("/api/v1/payments/sandbox/callback");
    let tasks: Vec<_> = (0..25)
        .map(|_| {
            let (http, url, body, sig) = (s.http.clone(), url.clone(), body.clone(), sig.clone());
            tokio::spawn(async move {
                let r = http
                    .post(url)
                    .header("content-type", "application/json")
                    .header("x-signature", sig)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = r.status();
                let headers = r.headers().clone();
                let text = r.text().await.unwrap();
                Resp {
                    status,
                    headers,
                    body: serde_json::from_str(&text).unwrap_or(Value::Null),
                    text,
                }
            })
        })
        .collect();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    assert!(
        results.iter().all(|r| r.status == StatusCode::OK),
        "every delivery is acknowledged"
    );
    let credited = results
        .iter()
        .filter(|r| r.body["result"] == "credited")
        .count();
    assert_eq!(credited, 1, "exactly one delivery credits");
    assert_eq!(balance(&s, &token).await, 150_000 + 70_000);

    // Forged, unsigned, malformed, mismatched, unknown: JSON errors, nothing moves.
    let forged = sign(b"something else");
    post_callback(&s, "sandbox", body.as_bytes(), Some(&forged))
        .await
        .error(StatusCode::UNAUTHORIZED, "bad_signature");
    post_callback(&s, "sandbox", body.as_bytes(), None)
        .await
        .error(StatusCode::UNAUTHORIZED, "unsigned_callback");
    let o3 = s
        .call(
            Method::POST,
            "/api/v1/topups",
            t,
            Some(json!({"amount_tiyn": 30_000})),
        )
        .await;
    let id3 = o3.body["order_id"].as_str().unwrap().to_owned();
    let cheap =
        format!(r#"{{"order_id":"{id3}","amount_tiyn":1,"status":"paid","reference":"X1"}}"#);
    post_callback(
        &s,
        "sandbox",
        cheap.as_bytes(),
        Some(&sign(cheap.as_bytes())),
    )
    .await
    .error(StatusCode::UNPROCESSABLE_ENTITY, "callback_mismatch");
    let ghost = r#"{"order_id":"123456789012","amount_tiyn":1,"status":"paid","reference":"X2"}"#;
    post_callback(
        &s,
        "sandbox",
        ghost.as_bytes(),
        Some(&sign(ghost.as_bytes())),
    )
    .await
    .error(StatusCode::NOT_FOUND, "unknown_order");
    let shape = r#"{"order_id": 5}"#;
    post_callback(
        &s,
        "sandbox",
        shape.as_bytes(),
        Some(&sign(shape.as_bytes())),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "malformed_callback");
    post_callback(&s, "halyk_epay", body.as_bytes(), Some(&sig))
        .await
        .error(StatusCode::NOT_FOUND, "gateway_not_enabled");
    post_callback(&s, "kkb", body.as_bytes(), Some(&sig))
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(balance(&s, &token).await, 220_000);
    let ledger: i64 = s
        .app
        .store()
        .ledger(s.app.store().account_by_number("4445").unwrap().unwrap().id)
        .unwrap()
        .iter()
        .map(|e| e.amount_tiyn)
        .sum();
    assert_eq!(ledger, 220_000, "balance == sum of the ledger");
    // Another account cannot see the order.
    let other_pw = s
        .registered_owner(&mut sink, "5556", "ДП-77/1", "other@example.kz")
        .await;
    let other = s.token("5556", &other_pw).await;
    s.call(
        Method::GET,
        &format!("/api/v1/topups/{order_id}"),
        Some(&other),
        None,
    )
    .await
    .error(StatusCode::NOT_FOUND, "not_found");
    s.stop().await;
}

// ------------------------------------------------------------------ Halyk stand-in

#[derive(Default)]
struct Bank {
    token_forms: Vec<HashMap<String, String>>,
    issued: Vec<String>,
    charged: HashMap<String, Value>,
}

type SharedBank = Arc<Mutex<Bank>>;

const TERMINAL: &str = "67e34d63-102f-4bd1-898e-370781d0074d";

async fn bank_token(
    State(b): State<SharedBank>,
    Form(form): Form<HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    let mut b = b.lock().unwrap();
    if form.get("client_id").map(String::as_str) != Some("test")
        || form.get("client_secret").map(String::as_str) != Some("bank-secret")
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        );
    }
    let token = format!("T{}", b.issued.len());
    b.issued.push(token.clone());
    b.token_forms.push(form);
    (
        StatusCode::OK,
        Json(
            json!({"access_token": token, "expires_in": 7200, "refresh_token": "",
            "scope": "webapi usermanagement email_send verification statement statistics payment",
            "token_type": "Bearer"}),
        ),
    )
}

async fn bank_status(
    State(b): State<SharedBank>,
    Path(invoice): Path<String>,
    headers: axum::http::HeaderMap,
) -> (StatusCode, Json<Value>) {
    let b = b.lock().unwrap();
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !b.issued.iter().any(|t| auth == format!("Bearer {t}")) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"code": 401})));
    }
    match b.charged.get(&invoice) {
        Some(tx) => (
            StatusCode::OK,
            Json(json!({"resultCode": "100", "resultMessage": "SUCCESS", "transaction": tx})),
        ),
        None => (
            StatusCode::OK,
            Json(json!({"resultCode": "101", "resultMessage": "not found"})),
        ),
    }
}

async fn start_bank() -> (SharedBank, String) {
    let bank: SharedBank = Arc::default();
    let app = Router::new()
        .route("/oauth2/token", post(bank_token))
        .route(
            "/check-status/payment/transaction/{invoice}",
            get(bank_status),
        )
        .route(
            "/payform/payment-api.js",
            get(|| async { "window.halyk={pay:function(){}};" }),
        )
        .with_state(bank.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (bank, base)
}

fn post_link(invoice: &str, amount: Value, secret: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": "2b3f3a9e", "dateTime": "2026-11-24T10:00:00+05:00", "invoiceId": invoice,
        "amount": amount, "currency": "KZT", "terminal": TERMINAL, "accountId": "4445",
        "description": "Пополнение", "language": "rus", "cardMask": "440043...0128",
        "cardType": "VISA", "issuer": "HALYK BANK", "reference": "227078813195",
        "secure": "yes", "code": "ok", "reason": "success", "reasonCode": 0,
        "approvalCode": "170243", "secret_hash": secret,
    }))
    .unwrap()
}

#[tokio::test]
async fn halyk_flow_against_a_local_bank_refuses_a_forged_secret_hash_and_credits_once() {
    let (bank, bank_url) = start_bank().await;
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start().await;
    let s = server_with(dir.path(), &sink.url(), |c| {
        c.payments.gateway = qorgan_config::GatewayName::HalykEpay;
        c.payments.halyk_oauth_url = format!("{bank_url}/oauth2/token");
        c.payments.halyk_api_url = bank_url.clone();
        c.payments.halyk_widget_url = format!("{bank_url}/payform/payment-api.js");
        c.payments.halyk_client_id = "test".to_owned();
        c.payments.halyk_client_secret = "bank-secret".to_owned();
        c.payments.halyk_terminal = TERMINAL.to_owned();
    })
    .await;
    let password = s
        .registered_owner(&mut sink, "4445", CONTRACT, "owner@example.kz")
        .await;
    let token = s.token("4445", &password).await;
    let t = Some(token.as_str());
    let o = s
        .call(
            Method::POST,
            "/api/v1/topups",
            t,
            Some(json!({"amount_tiyn": 150_000})),
        )
        .await;
    assert_eq!(o.status, StatusCode::CREATED, "{}", o.text);
    let invoice = o.body["order_id"].as_str().unwrap().to_owned();
    assert!((6..=15).contains(&invoice.len()));
    let form = bank.lock().unwrap().token_forms[0].clone();
    assert_eq!(form["invoiceID"], invoice);
    assert_eq!(form["amount"], "1500.00");
    assert_eq!(form["currency"], "KZT");
    assert!(form["postLink"].ends_with("/api/v1/payments/halyk_epay/callback"));
    let secret = form["secret_hash"].clone();
    let pay_url = o.body["payment_url"].as_str().unwrap().to_owned();
    let anonymous = s.http.get(&pay_url).send().await.unwrap();
    assert_eq!(
        anonymous.status(),
        StatusCode::UNAUTHORIZED,
        "the widget page needs the session"
    );
    let page = s
        .http
        .get(&pay_url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("halyk.pay(") && page.contains("payment-api.js"),
        "{page}"
    );

    // The bank charged the card.
    bank.lock().unwrap().charged.insert(
        invoice.clone(),
        json!({"invoiceID": invoice, "amount": 1500, "currency": "KZT", "terminal": "98120001",
            "terminalID": TERMINAL, "reference": "227078813195", "approvalCode": "170243",
            "cardMask": "440043...0128", "statusName": "CHARGE"}),
    );
    // A forged secret_hash: 200 (what the bank expects) but no money.
    let forged = post_link(&invoice, json!(1500), &"ab".repeat(32));
    let r = post_callback(&s, "halyk_epay", &forged, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["result"], "refused");
    assert_eq!(balance(&s, &token).await, 0);
    // The wrong amount with the right secret: refused too.
    let r = post_callback(
        &s,
        "halyk_epay",
        &post_link(&invoice, json!(15), &secret),
        None,
    )
    .await;
    assert_eq!(r.body["result"], "refused");
    assert_eq!(balance(&s, &token).await, 0);
    // The genuine postLink, replayed: credited once.
    let genuine = post_link(&invoice, json!(1500), &secret);
    let mut credited = 0;
    for _ in 0..5 {
        let r = post_callback(&s, "halyk_epay", &genuine, None).await;
        assert_eq!(r.status, StatusCode::OK);
        if r.body["result"] == "credited" {
            credited += 1;
        }
    }
    assert_eq!(credited, 1);
    assert_eq!(balance(&s, &token).await, 150_000);
    let st = s
        .call(Method::GET, &format!("/api/v1/topups/{invoice}"), t, None)
        .await;
    assert_eq!(st.body["status"], "paid");
    s.stop().await;
}

/// Callback throughput: distinct orders credited (each flushed before the answer) and
/// replays. Run with
/// `cargo test -p qorgan-control --release --test e2e -- --ignored --nocapture callback_throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement"]
async fn callback_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start().await;
    let s = server_with(dir.path(), &sink.url(), |c| {
        c.payments.max_topup_tiyn = 100_000_000;
    })
    .await;
    let password = s
        .registered_owner(&mut sink, "4445", CONTRACT, "owner@example.kz")
        .await;
    let token = s.token("4445", &password).await;
    let n = 300;
    let mut bodies = Vec::new();
    for i in 0..n {
        let o = s
            .call(
                Method::POST,
                "/api/v1/topups",
                Some(&token),
                Some(json!({"amount_tiyn": 10_000})),
            )
            .await;
        let id = o.body["order_id"].as_str().unwrap().to_owned();
        bodies.push(format!(
            r#"{{"order_id":"{id}","amount_tiyn":10000,"status":"paid","reference":"T{i}"}}"#
        ));
    }
    let start = Instant::now();
    for b in &bodies {
        let r = post_callback(&s, "sandbox", b.as_bytes(), Some(&sign(b.as_bytes()))).await;
        assert_eq!(r.body["result"], "credited");
    }
    let fresh = start.elapsed();
    let start = Instant::now();
    for b in &bodies {
        let r = post_callback(&s, "sandbox", b.as_bytes(), Some(&sign(b.as_bytes()))).await;
        assert_eq!(r.body["result"], "duplicate");
    }
    let replay = start.elapsed();
    println!(
        "callbacks: {:.0}/s crediting ({n} in {fresh:?}), {:.0}/s replays ({n} in {replay:?}), one client, sequential",
        f64::from(n) / fresh.as_secs_f64(),
        f64::from(n) / replay.as_secs_f64()
    );
    assert_eq!(balance(&s, &token).await, 10_000 * i64::from(n));
    s.stop().await;
}

#[tokio::test]
async fn openapi_lists_the_billing_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&config(dir.path(), ""), options()).await;
    let doc = s
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    let paths = doc.body["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/services", "get"),
        ("/api/v1/services/{id}/usage", "get"),
        ("/api/v1/services/{id}/disconnect-request", "post"),
        ("/api/v1/service-requests", "post"),
        ("/api/v1/service-requests", "get"),
        ("/api/v1/stats-requests", "post"),
        ("/api/v1/stats-requests", "get"),
        ("/api/v1/payments", "get"),
        ("/api/v1/invoices", "get"),
        ("/api/v1/invoices/{id}", "get"),
        ("/api/v1/invoices/{id}/pdf", "get"),
        ("/api/v1/topups", "post"),
        ("/api/v1/topups/{order_id}", "get"),
        ("/api/v1/payments/{gateway}/callback", "post"),
        (
            "/api/v1/operator/accounts/{account_number}/invoices",
            "post",
        ),
        (
            "/api/v1/operator/accounts/{account_number}/payments",
            "post",
        ),
        (
            "/api/v1/operator/accounts/{account_number}/services/{id}/usage",
            "post",
        ),
        (
            "/api/v1/operator/accounts/{account_number}/service-requests",
            "get",
        ),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from openapi"
        );
    }
    let schemas = doc.body["components"]["schemas"].as_object().unwrap();
    for name in [
        "InvoiceView",
        "TopupView",
        "PaymentView",
        "PostInvoice",
        "UsageView",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
    s.stop().await;
}
