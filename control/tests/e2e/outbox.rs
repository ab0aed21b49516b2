//! The outbox under an SMTP outage, and reCAPTCHA against a local stand-in for Google.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use qorgan_config::CaptchaProvider;
use qorgan_control::store::MailStatus;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn email_waits_in_the_outbox_while_smtp_is_down_and_is_delivered_when_it_comes_up() {
    // Reserve a port, then free it: nothing listens there until the sink starts.
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let smtp_addr = probe.local_addr().unwrap();
    drop(probe);

    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &config(dir.path(), &format!("smtp://{smtp_addr}")),
        options(),
    )
    .await;
    s.provision("8001", "Д-8001", BIN).await;
    let r = s.register("Д-8001", BIN, "late@example.kz").await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "registration does not wait for SMTP: {}",
        r.text
    );

    // At least two failed attempts, still pending.
    let mut attempts = 0;
    for _ in 0..100 {
        let outbox = s.app.store().outbox().unwrap();
        let e = &outbox[0];
        assert_eq!(e.status, MailStatus::Pending);
        attempts = e.attempts;
        if attempts >= 2 {
            assert!(e.last_error.is_some());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(attempts >= 2, "the sender retries");

    let mut sink = SmtpSink::start_on(smtp_addr).await;
    let mail = sink.next(20).await;
    assert_eq!(
        mail.line_value("Имя пользователя: ").as_deref(),
        Some("8001")
    );
    let password = mail.line_value("Пароль: ").unwrap();
    s.outbox_settled().await;
    assert_eq!(s.app.store().outbox().unwrap()[0].status, MailStatus::Sent);
    assert!(sink.quiet_for(500).await, "delivered exactly once");
    assert_eq!(s.login("8001", &password).await.status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn pending_email_survives_a_restart_and_is_sent_after_it() {
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let smtp_addr = probe.local_addr().unwrap();
    drop(probe);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &format!("smtp://{smtp_addr}"));
    let s = Server::start(&cfg, options()).await;
    s.provision("8002", "Д-8002", BIN).await;
    assert_eq!(
        s.register("Д-8002", BIN, "restart@example.kz").await.status,
        StatusCode::CREATED
    );
    s.stop().await;

    let mut sink = SmtpSink::start_on(smtp_addr).await;
    let s = Server::start(&cfg, options()).await;
    let mail = sink.next(20).await;
    assert_eq!(mail.rcpt, vec!["restart@example.kz".to_owned()]);
    assert!(mail.line_value("Пароль: ").is_some());
    s.stop().await;
}

#[derive(Default)]
struct Seen {
    forms: Vec<Vec<(String, String)>>,
}

/// Stands in for https://www.google.com/recaptcha/api/siteverify: `success` only for the
/// right secret and the token "good-token".
async fn fake_google() -> (String, Arc<Mutex<Seen>>) {
    use axum::routing::post;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen2 = seen.clone();
    let app = axum::Router::new().route(
        "/recaptcha/api/siteverify",
        post(move |body: String| {
            let seen = seen2.clone();
            async move {
                let form: Vec<(String, String)> = body
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.replace("%2F", "/").replace("%3A", ":")))
                    .collect();
                let ok = form.contains(&("secret".into(), "test-secret".into()))
                    && form.contains(&("response".into(), "good-token".into()));
                seen.lock().unwrap().forms.push(form);
                axum::Json(json!({"success": ok, "hostname": "cabinet.example.kz"}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/recaptcha/api/siteverify",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test]
async fn recaptcha_is_verified_server_side_before_registration() {
    let (verify_url, seen) = fake_google().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "");
    cfg.captcha.provider = CaptchaProvider::Recaptcha;
    cfg.captcha.site_key = "test-site-key".into();
    cfg.captcha.secret = "test-secret".into();
    cfg.captcha.verify_url = verify_url;
    let s = Server::start(&cfg, options()).await;
    s.provision("8101", "Д-8101", BIN).await;
    let body = |captcha: Option<&str>| {
        let mut v = json!({"email": "c@example.kz", "phone": "87012345678", "contract_number": "Д-8101", "iin_bin": BIN});
        if let Some(c) = captcha {
            v["captcha"] = json!(c);
        }
        v
    };
    s.call(Method::POST, "/api/v1/register", None, Some(body(None)))
        .await
        .error(StatusCode::BAD_REQUEST, "captcha_failed");
    s.call(
        Method::POST,
        "/api/v1/register",
        None,
        Some(body(Some("bad-token"))),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "captcha_failed");
    assert!(s
        .app
        .store()
        .account_by_number("8101")
        .unwrap()
        .unwrap()
        .owner_user_id
        .is_none());
    let ok = s
        .call(
            Method::POST,
            "/api/v1/register",
            None,
            Some(body(Some("good-token"))),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.text);

    let forms = seen.lock().unwrap().forms.clone();
    assert_eq!(
        forms.len(),
        2,
        "a missing token is refused without asking Google"
    );
    let last = forms.last().unwrap();
    assert!(
        last.contains(&("remoteip".into(), "127.0.0.1".into())),
        "{last:?}"
    );
    s.stop().await;
}

#[tokio::test]
async fn unreachable_captcha_service_is_a_clear_gateway_error() {
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = probe.local_addr().unwrap();
    drop(probe);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "");
    cfg.captcha.provider = CaptchaProvider::Recaptcha;
    cfg.captcha.site_key = "k".into();
    cfg.captcha.secret = "s".into();
    cfg.captcha.verify_url = format!("http://{dead}/siteverify");
    let s = Server::start(&cfg, options()).await;
    s.provision("8102", "Д-8102", BIN).await;
    let r = s
        .call(
            Method::POST,
            "/api/v1/register",
            None,
            Some(json!({"email": "c@example.kz", "phone": "87012345678", "contract_number": "Д-8102", "iin_bin": BIN, "captcha": "x"})),
        )
        .await;
    r.error(StatusCode::BAD_GATEWAY, "captcha_unavailable");
    s.stop().await;
}
