//! A local stand-in for Halyk ePay (tests only): an axum server on 127.0.0.1:0 that serves the
//! token endpoint, check-status and the widget script with the documented JSON, and records
//! what it was asked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Form, Json, Router};

use super::halyk::{HalykSettings, SCOPE};

/// The bank's published test merchant (kept in tests, never in code paths).
pub(crate) const CLIENT_ID: &str = "test";
/// The test merchant's secret.
pub(crate) const CLIENT_SECRET: &str = "yF587AV9Ms94qN2QShFzVR3vFnWkhjbAK3sG";
/// The test terminal.
pub(crate) const TERMINAL: &str = "67e34d63-102f-4bd1-898e-370781d0074d";

/// What the bank saw and what it will answer.
#[derive(Default)]
pub(crate) struct Bank {
    /// Every token request's form.
    pub(crate) token_requests: Vec<HashMap<String, String>>,
    /// Tokens issued.
    pub(crate) issued: Vec<String>,
    /// invoiceId → the `transaction` object check-status returns.
    pub(crate) transactions: HashMap<String, serde_json::Value>,
}

/// The shared state.
pub(crate) type Shared = Arc<Mutex<Bank>>;

async fn token(
    State(bank): State<Shared>,
    Form(form): Form<HashMap<String, String>>,
) -> impl IntoResponse {
    let mut bank = bank.lock().expect("lock");
    if form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        || form.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
        || form.get("grant_type").map(String::as_str) != Some("client_credentials")
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({"error": "invalid_client"})),
        );
    }
    let t = format!("TOKEN{}", bank.issued.len());
    bank.issued.push(t.clone());
    bank.token_requests.push(form);
    (
        StatusCode::OK,
        Json(serde_json::json!({
            "access_token": t, "expires_in": 7200, "refresh_token": "",
            "scope": SCOPE, "token_type": "Bearer"
        })),
    )
}

async fn check_status(
    State(bank): State<Shared>,
    Path(invoice): Path<String>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let bank = bank.lock().expect("lock");
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !bank.issued.iter().any(|t| auth == format!("Bearer {t}")) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({"code": 401})),
        );
    }
    match bank.transactions.get(&invoice) {
        Some(t) => (
            StatusCode::OK,
            Json(
                serde_json::json!({"resultCode": "100", "resultMessage": "SUCCESS", "transaction": t}),
            ),
        ),
        None => (
            StatusCode::OK,
            Json(
                serde_json::json!({"resultCode": "101", "resultMessage": "Transaction not found"}),
            ),
        ),
    }
}

/// A running stand-in.
pub(crate) struct StandIn {
    /// Its state.
    pub(crate) bank: Shared,
    /// `http://127.0.0.1:port`.
    pub(crate) base: String,
}

impl StandIn {
    /// Starts the stand-in on 127.0.0.1:0.
    pub(crate) async fn start() -> Self {
        let bank: Shared = Arc::default();
        let app = Router::new()
            .route("/oauth2/token", post(token))
            .route(
                "/check-status/payment/transaction/{invoice}",
                get(check_status),
            )
            .route(
                "/payform/payment-api.js",
                get(|| async { "window.halyk={pay:function(p){}};" }),
            )
            .with_state(bank.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            bank,
            base: format!("http://{addr}"),
        }
    }

    /// Gateway settings pointing at the stand-in, with the given public URL for postLink.
    pub(crate) fn settings(&self, public_url: &str) -> HalykSettings {
        HalykSettings {
            oauth_url: format!("{}/oauth2/token", self.base),
            api_url: self.base.clone(),
            widget_url: format!("{}/payform/payment-api.js", self.base),
            client_id: CLIENT_ID.to_owned(),
            client_secret: CLIENT_SECRET.to_owned(),
            terminal: TERMINAL.to_owned(),
            public_url: public_url.to_owned(),
        }
    }

    /// The bank records a transaction for the invoice (what check-status will say).
    pub(crate) fn settle(
        &self,
        id: &str,
        amount: serde_json::Value,
        status: &str,
        terminal_id: &str,
    ) {
        self.bank.lock().expect("lock").transactions.insert(
            id.to_owned(),
            serde_json::json!({
                "id": "af2089fe-43b1-47eb-a61f-c78dd196e18d",
                "createdDate": "2026-11-24T03:52:17.289853+05:00",
                "invoiceID": id, "amount": amount, "amountBonus": 0, "payoutAmount": 0,
                "approvalCode": "170243", "currency": "KZT", "terminal": "98120001",
                "terminalID": terminal_id, "accountID": "4445", "cardMask": "440043...0128",
                "reference": "227078813195", "statusName": status,
            }),
        );
    }
}

/// The postLink JSON the bank posts (documented fields).
pub(crate) fn post_link(id: &str, amount: serde_json::Value, secret: &str, code: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": "2b3f3a9e-1b0a-4a5e-9d7c-1c2d3e4f5a6b", "dateTime": "2026-11-24T10:00:00+05:00",
        "invoiceId": id, "amount": amount, "currency": "KZT", "terminal": TERMINAL,
        "accountId": "4445", "description": "Пополнение", "language": "rus",
        "cardMask": "440043...0128", "cardType": "VISA", "issuer": "HALYK BANK",
        "reference": "227078813195", "secure": "yes", "tokenRecipient": "",
        "code": code, "reason": if code == "ok" { "success" } else { "Insufficient funds" },
        "reasonCode": if code == "ok" { 0 } else { 454 }, "name": "TEST CARD",
        "email": "owner@example.kz", "phone": "", "ip": "127.0.0.1", "ipCountry": "KZ",
        "ipCity": "", "ipRegion": "", "ipDistrict": "", "ipLongitude": 0, "ipLatitude": 0,
        "cardId": "", "approvalCode": "170243", "secret_hash": secret,
    }))
    .expect("json")
}
