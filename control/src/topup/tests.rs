//! Top-ups through both gateways: the sandbox (also over real HTTP, as its page does) and Halyk
//! against the local bank stand-in.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::post;
use axum::Router;

use super::*;
use crate::payments::sandbox::{Sandbox, SIGNATURE_HEADER};
use crate::payments::standin::{post_link, StandIn, TERMINAL};
use crate::payments::{halyk::Halyk, Gateway};
use crate::store::AccountStatus;

fn account() -> Account {
    Account {
        id: 11,
        account_number: "4445".to_owned(),
        contract_number: "4445/10".to_owned(),
        contract_key: "4445/10".to_owned(),
        iin_bin: "900101300811".to_owned(),
        name: "Демо".to_owned(),
        company: None,
        status: AccountStatus::Active,
        owner_user_id: Some(12),
        registered_at: Some(1),
        created_at: 1,
    }
}

fn billing() -> Billing {
    let db = sled::Config::new().temporary(true).open().expect("db");
    Billing::open(&db).expect("billing")
}

fn receipt(o: &PaymentOrder) -> Option<NewEmail> {
    Some(NewEmail {
        to: "owner@example.kz".to_owned(),
        subject: format!("Оплата по заказу {}", o.order_id),
        body: "Спасибо".to_owned(),
    })
}

fn sandbox(public_url: &str) -> Topups {
    Topups::with_gateway(
        Gateway::Sandbox(Sandbox::new(
            "sandbox-secret".to_owned(),
            public_url.to_owned(),
        )),
        reqwest::Client::new(),
        String::new(),
    )
}

async fn call(
    t: &Topups,
    b: &Billing,
    gateway: GatewayName,
    h: &HeaderMap,
    body: &[u8],
) -> CallbackAnswer {
    t.handle_callback(b, gateway, h, body, &receipt, 200)
        .await
        .expect("callback")
}

fn signed(gw: &Topups, order: &PaymentOrder, amount: i64, paid: bool) -> (HeaderMap, Vec<u8>) {
    let Gateway::Sandbox(s) = &gw.gateway else {
        panic!("sandbox expected")
    };
    let (body, sig) = s.bank_callback(&order.order_id, amount, paid);
    let mut h = HeaderMap::new();
    h.insert(SIGNATURE_HEADER, HeaderValue::from_str(&sig).expect("hex"));
    (h, body)
}

#[tokio::test]
async fn sandbox_top_up_credits_once_and_refuses_forgeries_with_the_json_error_codes() {
    let b = billing();
    let t = sandbox("http://127.0.0.1:1");
    let o = t
        .create(&b, &account(), 12, None, 150_000, 100)
        .await
        .expect("create");
    assert_eq!(o.status, OrderStatus::Pending);
    assert_eq!(
        o.payment_url.as_deref(),
        Some(format!("http://127.0.0.1:1/sandbox/pay/{}", o.order_id).as_str())
    );
    let (h, body) = signed(&t, &o, 150_000, true);
    assert_eq!(
        call(&t, &b, GatewayName::Sandbox, &h, &body).await,
        CallbackAnswer::Ok("credited")
    );
    assert_eq!(
        call(&t, &b, GatewayName::Sandbox, &h, &body).await,
        CallbackAnswer::Ok("duplicate")
    );
    assert_eq!(b.balance(11).expect("bal"), 150_000);

    let code = |a: CallbackAnswer| match a {
        CallbackAnswer::Refused { status, code, .. } => (status, code),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        code(call(&t, &b, GatewayName::Sandbox, &HeaderMap::new(), &body).await),
        (401, "unsigned_callback")
    );
    let mut forged = h.clone();
    forged.insert(SIGNATURE_HEADER, HeaderValue::from_static("00"));
    assert_eq!(
        code(call(&t, &b, GatewayName::Sandbox, &forged, &body).await),
        (401, "bad_signature")
    );
    let o2 = t
        .create(&b, &account(), 12, None, 5_000, 100)
        .await
        .expect("create");
    let (h2, cheap) = signed(&t, &o2, 4_999, true);
    assert_eq!(
        code(call(&t, &b, GatewayName::Sandbox, &h2, &cheap).await),
        (422, "callback_mismatch")
    );
    let ghost = PaymentOrder {
        order_id: "999999999".to_owned(),
        ..o2.clone()
    };
    let (h3, body3) = signed(&t, &ghost, 5_000, true);
    assert_eq!(
        code(call(&t, &b, GatewayName::Sandbox, &h3, &body3).await),
        (404, "unknown_order")
    );
    assert_eq!(
        code(
            t.handle_callback(&b, GatewayName::HalykEpay, &h, &body, &receipt, 1)
                .await
                .expect("cb")
        ),
        (404, "gateway_not_enabled")
    );
    assert_eq!(b.balance(11).expect("bal"), 150_000, "nothing else moved");
    let (h4, declined) = signed(&t, &o2, 5_000, false);
    assert_eq!(
        call(&t, &b, GatewayName::Sandbox, &h4, &declined).await,
        CallbackAnswer::Ok("declined")
    );
    assert_eq!(
        b.order(&o2.order_id).expect("r").expect("o").status,
        OrderStatus::Failed
    );
}

/// The callback route of a minimal server, as the API wires it.
async fn callback(
    State((t, b)): State<(Arc<Topups>, Billing)>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    match t
        .handle_callback(&b, GatewayName::Sandbox, &headers, &body, &receipt, 5)
        .await
        .expect("callback")
    {
        CallbackAnswer::Ok(_) => StatusCode::OK,
        CallbackAnswer::Refused { status, .. } => StatusCode::from_u16(status).expect("status"),
    }
}

#[tokio::test]
async fn the_sandbox_page_posts_a_signed_callback_over_http_that_credits() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let public = format!("http://{}", listener.local_addr().expect("addr"));
    let t = Arc::new(sandbox(&public));
    let b = billing();
    let app = Router::new()
        .route("/api/v1/payments/sandbox/callback", post(callback))
        .with_state((t.clone(), b.clone()));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let o = t
        .create(&b, &account(), 12, None, 25_000, 1)
        .await
        .expect("create");
    let page = t
        .payment_page(&b, &o.order_id, |_| Some("4445".to_owned()))
        .expect("page")
        .expect("some");
    assert!(page.contains("value=\"pay\"") && page.contains("4445"));
    assert_eq!(
        t.sandbox_press(&b, &o.order_id, true).await.expect("press"),
        Some(200)
    );
    assert_eq!(b.balance(11).expect("bal"), 25_000);
    // Pressing again: another reference, same order: no second credit.
    assert_eq!(
        t.sandbox_press(&b, &o.order_id, true).await.expect("press"),
        Some(200)
    );
    assert_eq!(b.balance(11).expect("bal"), 25_000);
    assert_eq!(
        t.sandbox_press(&b, "424242424", true).await.expect("press"),
        None
    );
    let page = t
        .payment_page(&b, &o.order_id, |_| None)
        .expect("page")
        .expect("some");
    assert!(!page.contains("<button"), "a paid order shows no buttons");
}

fn halyk(bank: &StandIn) -> Topups {
    Topups::with_gateway(
        Gateway::Halyk(Halyk::new(
            bank.settings("http://127.0.0.1:8080"),
            reqwest::Client::new(),
        )),
        reqwest::Client::new(),
        format!("{}/payform/payment-api.js", bank.base),
    )
}

#[tokio::test]
async fn halyk_post_links_credit_once_after_confirmation_and_forgeries_get_200_but_no_money() {
    let bank = StandIn::start().await;
    let t = halyk(&bank);
    let b = billing();
    let o = t
        .create(
            &b,
            &account(),
            12,
            Some("o@example.kz".to_owned()),
            150_000,
            10,
        )
        .await
        .expect("create");
    let secret = o.secret.clone().expect("secret stored with the order");
    let page = t
        .payment_page(&b, &o.order_id, |_| None)
        .expect("page")
        .expect("some");
    assert!(page.contains("payment-api.js") && page.contains(&o.order_id));
    let h = HeaderMap::new();
    let forged = post_link(&o.order_id, serde_json::json!(1500), &"0".repeat(64), "ok");
    bank.settle(&o.order_id, serde_json::json!(1500), "CHARGE", TERMINAL);
    assert_eq!(
        call(&t, &b, GatewayName::HalykEpay, &h, &forged).await,
        CallbackAnswer::Ok("refused")
    );
    assert_eq!(b.balance(11).expect("bal"), 0);
    assert!(b
        .order(&o.order_id)
        .expect("r")
        .expect("o")
        .last_error
        .is_some_and(|e| e.contains("signature")));
    let wrong_amount = post_link(&o.order_id, serde_json::json!(1), &secret, "ok");
    assert_eq!(
        call(&t, &b, GatewayName::HalykEpay, &h, &wrong_amount).await,
        CallbackAnswer::Ok("refused")
    );
    assert_eq!(b.balance(11).expect("bal"), 0);
    let genuine = post_link(&o.order_id, serde_json::json!(1500), &secret, "ok");
    assert_eq!(
        call(&t, &b, GatewayName::HalykEpay, &h, &genuine.clone()).await,
        CallbackAnswer::Ok("credited")
    );
    assert_eq!(
        call(&t, &b, GatewayName::HalykEpay, &h, &genuine).await,
        CallbackAnswer::Ok("duplicate")
    );
    assert_eq!(b.balance(11).expect("bal"), 150_000);
}

#[tokio::test]
async fn polling_and_the_reconciler_credit_confirmed_orders_and_expire_stale_ones() {
    let bank = StandIn::start().await;
    let t = halyk(&bank);
    let b = billing();
    let paid = t
        .create(&b, &account(), 12, None, 7_700, 0)
        .await
        .expect("create");
    let stale = t
        .create(&b, &account(), 12, None, 1_000, 0)
        .await
        .expect("create");
    // The customer polls while the bank has nothing: still pending.
    let s = t
        .order_status(&b, 11, &paid.order_id, &receipt, 5)
        .await
        .expect("status")
        .expect("order");
    assert_eq!(s.status, OrderStatus::Pending);
    assert!(t
        .order_status(&b, 99, &paid.order_id, &receipt, 5)
        .await
        .expect("status")
        .is_none());
    bank.settle(&paid.order_id, serde_json::json!(77), "CHARGE", TERMINAL);
    let s = t
        .order_status(&b, 11, &paid.order_id, &receipt, 6)
        .await
        .expect("status")
        .expect("order");
    assert_eq!(s.status, OrderStatus::Paid);
    assert_eq!(b.balance(11).expect("bal"), 7_700);
    assert_eq!(
        t.reconcile(&b, &receipt, RECONCILE_AFTER_SECS)
            .await
            .expect("r"),
        0
    );
    assert_eq!(
        t.reconcile(&b, &receipt, ORDER_TTL_SECS).await.expect("r"),
        1
    );
    assert_eq!(
        b.order(&stale.order_id).expect("r").expect("o").status,
        OrderStatus::Expired
    );
    assert_eq!(b.balance(11).expect("bal"), 7_700);
}

#[tokio::test]
async fn an_unreachable_bank_fails_the_order_with_a_gateway_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let bank = StandIn {
        bank: Arc::default(),
        base: dead,
    };
    let t = halyk(&bank);
    let b = billing();
    let err = t
        .create(&b, &account(), 12, None, 100, 0)
        .await
        .expect_err("down");
    assert!(matches!(err, ControlError::Gateway(_)), "{err:?}");
    let orders = b.open_orders().expect("open");
    assert!(orders.is_empty(), "the reserved order is failed, not open");
}
