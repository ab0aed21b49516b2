//! The Halyk client against a local stand-in for the bank ([`crate::payments::standin`]).

use axum::http::HeaderMap;

use super::*;
use crate::payments::standin::{post_link, StandIn, CLIENT_SECRET, TERMINAL};

struct Stand {
    bank: StandIn,
    gw: Halyk,
}

async fn stand() -> Stand {
    let bank = StandIn::start().await;
    let gw = Halyk::new(
        bank.settings("http://127.0.0.1:8080"),
        reqwest::Client::new(),
    );
    Stand { bank, gw }
}

fn request(id: &str, amount_tiyn: i64) -> OrderRequest {
    OrderRequest {
        order_id: id.to_owned(),
        amount_tiyn,
        account_number: "4445".to_owned(),
        email: Some("owner@example.kz".to_owned()),
        description: "Пополнение лицевого счёта 4445".to_owned(),
    }
}

impl Stand {
    /// Opens an order and returns what the cabinet would store.
    async fn open(&self, id: &str, amount_tiyn: i64) -> (Checkout, ExpectedOrder) {
        let c = self
            .gw
            .create_order(&request(id, amount_tiyn))
            .await
            .expect("checkout");
        let order = ExpectedOrder {
            order_id: id.to_owned(),
            amount_tiyn,
            secret: c.secret.clone(),
        };
        (c, order)
    }
}

#[test]
fn invoice_ids_are_6_to_15_digits_with_distinct_last_six() {
    assert_eq!(invoice_id(1), "000000001");
    assert!(valid_invoice_id(&invoice_id(1)));
    assert!(valid_invoice_id(&invoice_id(999_999_999_999_999)));
    assert_ne!(
        invoice_suffix(&invoice_id(17)),
        invoice_suffix(&invoice_id(18))
    );
    assert_eq!(invoice_suffix("000123456"), "123456");
    for bad in ["12345", "1234567890123456", "12345a", ""] {
        assert!(!valid_invoice_id(bad), "{bad}");
    }
}

#[tokio::test]
async fn create_order_asks_for_a_token_bound_to_the_order_with_the_documented_fields() {
    let s = stand().await;
    let (c, order) = s.open("000000042", 150_000).await;
    let form = s.bank.bank.lock().expect("lock").token_requests[0].clone();
    assert_eq!(form["invoiceID"], "000000042");
    assert_eq!(form["amount"], "1500.00");
    assert_eq!(form["currency"], "KZT");
    assert_eq!(form["terminal"], TERMINAL);
    assert_eq!(form["scope"], SCOPE);
    assert_eq!(
        form["postLink"],
        "http://127.0.0.1:8080/api/v1/payments/halyk_epay/callback"
    );
    assert_eq!(form["failurePostLink"], form["postLink"]);
    let secret = order.secret.clone().expect("secret");
    assert_eq!(form["secret_hash"], secret);
    assert_eq!(secret.len(), 64);
    let w = c.widget.expect("widget");
    assert_eq!(w["invoiceId"], "000000042");
    assert_eq!(w["auth"]["access_token"], "TOKEN0");
    assert_eq!(w["amount"], "1500.00");
    assert_eq!(w["accountId"], "4445");
    assert_eq!(c.payment_url, "http://127.0.0.1:8080/pay/halyk/000000042");
    let page = payment_page(&s.gw.settings.widget_url, &w);
    assert!(page.contains("payment-api.js") && page.contains("halyk.pay({"));
}

#[tokio::test]
async fn wrong_merchant_credentials_are_a_gateway_error() {
    let mut s = stand().await;
    s.gw.settings.client_secret = "wrong".to_owned();
    let err =
        s.gw.create_order(&request("000000042", 100))
            .await
            .expect_err("refused");
    assert!(
        matches!(err, GatewayError::Status { status: 401, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_genuine_post_link_is_credited_only_after_check_status_confirms_it() {
    let s = stand().await;
    let (_, order) = s.open("000000043", 150_000).await;
    let secret = order.secret.clone().expect("secret");
    let body = post_link("000000043", serde_json::json!(1500), &secret, "ok");
    assert_eq!(
        s.gw.callback_key(&HeaderMap::new(), &body).expect("key"),
        "000000043"
    );
    // The bank has not recorded the charge yet: not confirmed, nothing to credit.
    let r = s.gw.verify_callback(&HeaderMap::new(), &body, &order).await;
    assert!(
        matches!(r, Err(CallbackRejection::NotConfirmed(_))),
        "{r:?}"
    );
    s.bank
        .settle("000000043", serde_json::json!(1500), "AUTH", TERMINAL);
    let r = s.gw.verify_callback(&HeaderMap::new(), &body, &order).await;
    assert!(
        matches!(r, Err(CallbackRejection::NotConfirmed(_))),
        "two-stage AUTH is not paid: {r:?}"
    );
    s.bank
        .settle("000000043", serde_json::json!(1500.0), "CHARGE", TERMINAL);
    let v =
        s.gw.verify_callback(&HeaderMap::new(), &body, &order)
            .await
            .expect("verified");
    assert_eq!(v.outcome, Outcome::Paid);
    assert_eq!(v.amount_tiyn, 150_000);
    assert_eq!(v.reference, "227078813195");
    assert_eq!(v.approval_code.as_deref(), Some("170243"));
    assert_eq!(
        s.gw.status(&order).await.expect("status"),
        GatewayStatus::Paid(v)
    );
}

#[tokio::test]
async fn a_forged_or_missing_secret_hash_is_refused_before_asking_the_bank() {
    let s = stand().await;
    let (_, order) = s.open("000000044", 150_000).await;
    s.bank
        .settle("000000044", serde_json::json!(1500), "CHARGE", TERMINAL);
    let before = s.bank.bank.lock().expect("lock").issued.len();
    let mut forged = order.secret.clone().expect("secret");
    forged.replace_range(0..1, if forged.starts_with('0') { "1" } else { "0" });
    let body = post_link("000000044", serde_json::json!(1500), &forged, "ok");
    assert_eq!(
        s.gw.verify_callback(&HeaderMap::new(), &body, &order).await,
        Err(CallbackRejection::BadSignature)
    );
    let mut v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    v.as_object_mut().expect("obj").remove("secret_hash");
    let unsigned = serde_json::to_vec(&v).expect("json");
    assert_eq!(
        s.gw.verify_callback(&HeaderMap::new(), &unsigned, &order)
            .await,
        Err(CallbackRejection::Unsigned)
    );
    assert_eq!(
        s.bank.bank.lock().expect("lock").issued.len(),
        before,
        "a forged postLink costs the bank nothing"
    );
}

#[tokio::test]
async fn amount_currency_and_terminal_mismatches_never_verify() {
    let s = stand().await;
    let (_, order) = s.open("000000045", 150_000).await;
    let secret = order.secret.clone().expect("secret");
    s.bank
        .settle("000000045", serde_json::json!(1500), "CHARGE", TERMINAL);
    // The postLink itself claims another amount.
    let body = post_link("000000045", serde_json::json!(15), &secret, "ok");
    let r = s.gw.verify_callback(&HeaderMap::new(), &body, &order).await;
    assert!(
        matches!(
            r,
            Err(CallbackRejection::Mismatch {
                field: "amount",
                ..
            })
        ),
        "{r:?}"
    );
    // The postLink is right but the bank charged another amount.
    s.bank
        .settle("000000045", serde_json::json!(1499.99), "CHARGE", TERMINAL);
    let body = post_link("000000045", serde_json::json!(1500), &secret, "ok");
    let r = s.gw.verify_callback(&HeaderMap::new(), &body, &order).await;
    assert!(
        matches!(
            r,
            Err(CallbackRejection::Mismatch {
                field: "amount",
                ..
            })
        ),
        "{r:?}"
    );
    // Another terminal.
    s.bank.settle(
        "000000045",
        serde_json::json!(1500),
        "CHARGE",
        "another-terminal",
    );
    let r = s.gw.verify_callback(&HeaderMap::new(), &body, &order).await;
    assert!(
        matches!(
            r,
            Err(CallbackRejection::Mismatch {
                field: "terminal",
                ..
            })
        ),
        "{r:?}"
    );
    // Another currency in the postLink.
    let mut v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    v["currency"] = serde_json::json!("USD");
    let usd = serde_json::to_vec(&v).expect("json");
    let r = s.gw.verify_callback(&HeaderMap::new(), &usd, &order).await;
    assert!(
        matches!(
            r,
            Err(CallbackRejection::Mismatch {
                field: "currency",
                ..
            })
        ),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_declined_post_link_says_so_and_the_status_call_reports_it() {
    let s = stand().await;
    let (_, order) = s.open("000000046", 150_000).await;
    let secret = order.secret.clone().expect("secret");
    let body = post_link("000000046", serde_json::json!(1500), &secret, "error");
    let v =
        s.gw.verify_callback(&HeaderMap::new(), &body, &order)
            .await
            .expect("verified");
    assert_eq!(
        v.outcome,
        Outcome::Declined("Insufficient funds".to_owned())
    );
    assert_eq!(
        s.gw.status(&order).await.expect("status"),
        GatewayStatus::Pending
    );
    s.bank
        .settle("000000046", serde_json::json!(1500), "REJECT", TERMINAL);
    assert_eq!(
        s.gw.status(&order).await.expect("status"),
        GatewayStatus::Declined("REJECT".to_owned())
    );
}

#[tokio::test]
async fn malformed_post_links_are_refused() {
    let s = stand().await;
    for body in [
        &b"not json"[..],
        br#"{"invoiceId": "12"}"#,
        br#"{"amount": 1}"#,
    ] {
        assert!(matches!(
            s.gw.callback_key(&HeaderMap::new(), body),
            Err(CallbackRejection::Malformed(_))
        ));
    }
}

#[tokio::test]
async fn an_unreachable_bank_is_unavailable_not_paid() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let gw = Halyk::new(
        HalykSettings {
            oauth_url: format!("{dead}/oauth2/token"),
            api_url: dead.clone(),
            widget_url: String::new(),
            client_id: "test".to_owned(),
            client_secret: CLIENT_SECRET.to_owned(),
            terminal: TERMINAL.to_owned(),
            public_url: "http://127.0.0.1:8080".to_owned(),
        },
        reqwest::Client::new(),
    );
    let order = ExpectedOrder {
        order_id: "000000047".to_owned(),
        amount_tiyn: 100,
        secret: Some("s".to_owned()),
    };
    let body = post_link("000000047", serde_json::json!(1), "s", "ok");
    let r = gw.verify_callback(&HeaderMap::new(), &body, &order).await;
    assert!(matches!(r, Err(CallbackRejection::Unavailable(_))), "{r:?}");
    assert!(matches!(
        gw.create_order(&request("000000047", 100)).await,
        Err(GatewayError::Http { .. })
    ));
}
