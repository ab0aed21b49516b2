//! Card top-ups through a payment gateway (CONTRACT §2 `[payments]`, CABINET.md §2).
//!
//! # Overview of types
//! - [`PaymentGateway`]: what the cabinet needs from a bank — open an order
//!   ([`PaymentGateway::create_order`]), authenticate and confirm a notification
//!   ([`PaymentGateway::verify_callback`]) and ask for an order's state
//!   ([`PaymentGateway::status`], for the reconciler and for `GET /topups/{id}`).
//! - [`Gateway`]: the configured implementation, chosen by `payments.gateway`:
//!   [`sandbox::Sandbox`] (a local page that plays the bank, HMAC-signed JSON callbacks) or
//!   [`halyk::Halyk`] (Halyk ePay: OAuth token per order, payment widget, `postLink` checked by
//!   `secret_hash` and confirmed with the bank's check-status call).
//! - [`OrderRequest`] → [`Checkout`]: what opening an order takes and gives back.
//! - [`ExpectedOrder`]: what the cabinet stored about an order, that a notification must match.
//! - [`Verified`] / [`CallbackRejection`]: the outcome of checking a notification. Nothing is
//!   credited here: crediting is one store transaction, and only a [`Verified`] with
//!   [`Outcome::Paid`] whose amount and currency equal the order's may credit.
//! - [`GatewayError`]: the bank could not be reached or answered nonsense.
//!
//! Why the order is looked up between two steps: a Halyk `postLink` is unsigned, and its only
//! authenticator is the per-order `secret_hash` we sent when opening the order, so the stored
//! order must be known before the notification can be trusted. [`PaymentGateway::callback_key`]
//! reads the order's identifier (and, for the sandbox, already checks the HMAC, which needs no
//! order); [`PaymentGateway::verify_callback`] does the rest against the stored order.

pub mod halyk;
pub mod sandbox;
#[cfg(test)]
pub(crate) mod standin;

use std::future::Future;

use axum::http::HeaderMap;
use qorgan_config::{Config, GatewayName};
use rand::Rng as _;

/// The currency of every order: tenge (ISO 4217 `KZT`, numeric 398).
pub const CURRENCY: &str = "KZT";

/// The path, under the HTTP listener, where gateway `name` posts its notifications.
pub fn callback_path(name: GatewayName) -> String {
    format!("/api/v1/payments/{}/callback", gateway_id(name))
}

/// The gateway's name as it appears in paths and records (`sandbox`, `halyk_epay`).
pub fn gateway_id(name: GatewayName) -> &'static str {
    match name {
        GatewayName::Sandbox => "sandbox",
        GatewayName::HalykEpay => "halyk_epay",
    }
}

/// Parses a gateway name from a path segment; `None` for names no gateway has.
pub fn parse_gateway_id(id: &str) -> Option<GatewayName> {
    match id {
        "sandbox" => Some(GatewayName::Sandbox),
        "halyk_epay" => Some(GatewayName::HalykEpay),
        _ => None,
    }
}

/// Joins the public base URL and an absolute path without doubling the slash.
pub(crate) fn join_url(base: &str, path: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path)
}

/// A fresh per-order secret: 32 random bytes as lower-case hex (Halyk's `secret_hash`).
pub fn new_order_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    hex::encode(bytes)
}

/// Why a gateway call failed. The cabinet answers `502 gateway_unavailable` and changes nothing.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request did not complete (connection refused, timeout, TLS).
    #[error("request to {url} failed")]
    Http {
        /// The URL called (no credentials in it).
        url: String,
        /// reqwest's reason.
        #[source]
        source: reqwest::Error,
    },
    /// The bank answered with a non-success status.
    #[error("{url} answered {status}")]
    Status {
        /// The URL called.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The bank's answer is not of the documented shape.
    #[error("unexpected answer from {url}: {reason}")]
    Shape {
        /// The URL called.
        url: String,
        /// What was wrong with it.
        reason: String,
    },
}

/// What the cabinet asks a gateway to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRequest {
    /// Our order id, digits only, 6–15 of them (Halyk's `invoiceID` rule), unique.
    pub order_id: String,
    /// The amount in tiyn, already validated (> 0, within the configured bounds).
    pub amount_tiyn: i64,
    /// The account number (Halyk's `accountId`).
    pub account_number: String,
    /// The payer's email, shown on the bank page.
    pub email: Option<String>,
    /// Payment purpose shown on the bank page.
    pub description: String,
}

/// Where the customer pays, plus what the cabinet must keep with the order.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkout {
    /// The page to send the customer to (absolute, from `http.public_url`).
    pub payment_url: String,
    /// The per-order secret the bank will echo (Halyk's `secret_hash`); store it with the order.
    pub secret: Option<String>,
    /// Parameters for the bank's payment widget (Halyk `halyk.pay({...})`), stored with the
    /// order to render the payment page. `None` for the sandbox.
    pub widget: Option<serde_json::Value>,
}

/// What the cabinet stored about an order, that a notification must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedOrder {
    /// Our order id (= Halyk `invoiceId`).
    pub order_id: String,
    /// The amount ordered, tiyn.
    pub amount_tiyn: i64,
    /// The per-order secret, when the gateway uses one.
    pub secret: Option<String>,
}

/// The bank's verdict on an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The money was taken.
    Paid,
    /// The payment was declined or failed; carries the bank's reason.
    Declined(String),
}

/// A notification that passed every check against the stored order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Our order id.
    pub order_id: String,
    /// Paid or declined.
    pub outcome: Outcome,
    /// The amount the bank reports, tiyn (equal to the order's when paid).
    pub amount_tiyn: i64,
    /// The currency the bank reports (always [`CURRENCY`] when paid).
    pub currency: String,
    /// The bank's reference of the transaction (unique per gateway; the ledger's idempotency
    /// key together with the order id).
    pub reference: String,
    /// Masked card number, when reported.
    pub card_mask: Option<String>,
    /// Approval code, when reported.
    pub approval_code: Option<String>,
}

/// The bank's view of an order when asked ([`PaymentGateway::status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayStatus {
    /// Paid and confirmed (same checks as a callback).
    Paid(Verified),
    /// Not (yet) paid; the customer may still be on the bank page.
    Pending,
    /// Declined, cancelled or refunded; carries the bank's reason.
    Declined(String),
    /// The gateway keeps no state of its own (the sandbox: only its callback tells).
    Unknown,
}

/// Why a notification was refused. Nothing is credited; the raw body is logged by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackRejection {
    /// No signature / no `secret_hash`.
    Unsigned,
    /// The signature or `secret_hash` does not match.
    BadSignature,
    /// The body is not of the gateway's shape.
    Malformed(String),
    /// The notification names no order of ours.
    UnknownOrder,
    /// Amount, currency, terminal or order id differ from what was ordered.
    Mismatch {
        /// Which field.
        field: &'static str,
        /// What the order says.
        expected: String,
        /// What the notification (or the bank's status) says.
        got: String,
    },
    /// The bank's own status call does not (yet) confirm the payment; carries its words.
    NotConfirmed(String),
    /// The bank's status call failed: try again later (the reconciler will).
    Unavailable(String),
}

impl std::fmt::Display for CallbackRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unsigned => write!(f, "unsigned notification"),
            Self::BadSignature => write!(f, "signature does not match"),
            Self::Malformed(why) => write!(f, "malformed notification: {why}"),
            Self::UnknownOrder => write!(f, "unknown order"),
            Self::Mismatch {
                field,
                expected,
                got,
            } => write!(f, "{field} mismatch: expected {expected}, got {got}"),
            Self::NotConfirmed(why) => write!(f, "not confirmed by the bank: {why}"),
            Self::Unavailable(why) => write!(f, "bank status unavailable: {why}"),
        }
    }
}

/// A payment gateway. Implementations hold their configuration; none touches the store.
pub trait PaymentGateway {
    /// Which gateway this is.
    fn name(&self) -> GatewayName;

    /// Opens an order with the bank (if the bank needs that) and says where the customer pays.
    fn create_order(
        &self,
        order: &OrderRequest,
    ) -> impl Future<Output = Result<Checkout, GatewayError>> + Send;

    /// Reads which order a notification is about, checking what can be checked without the
    /// order (the sandbox's HMAC). Cheap and synchronous: runs before any store lookup.
    fn callback_key(&self, headers: &HeaderMap, body: &[u8]) -> Result<String, CallbackRejection>;

    /// Authenticates a notification against the stored order and confirms it with the bank
    /// where the protocol requires it (Halyk's check-status). Amount and currency mismatches are
    /// refused here, and checked once more by the crediting transaction.
    fn verify_callback(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        order: &ExpectedOrder,
    ) -> impl Future<Output = Result<Verified, CallbackRejection>> + Send;

    /// Asks the bank for the order's state.
    fn status(
        &self,
        order: &ExpectedOrder,
    ) -> impl Future<Output = Result<GatewayStatus, GatewayError>> + Send;
}

/// The configured gateway (`payments.gateway`): a closed set, so a plain enum dispatches.
#[derive(Debug, Clone)]
pub enum Gateway {
    /// The local sandbox.
    Sandbox(sandbox::Sandbox),
    /// Halyk ePay.
    Halyk(halyk::Halyk),
}

impl Gateway {
    /// Builds the gateway named by `payments.gateway`, sharing the app's HTTP client.
    pub fn from_config(config: &Config, client: reqwest::Client) -> Self {
        match config.payments.gateway {
            GatewayName::Sandbox => Self::Sandbox(sandbox::Sandbox::new(
                config.payments.secret.clone(),
                config.http.public_url.clone(),
            )),
            GatewayName::HalykEpay => Self::Halyk(halyk::Halyk::new(
                halyk::HalykSettings::from_config(config),
                client,
            )),
        }
    }
}

impl PaymentGateway for Gateway {
    fn name(&self) -> GatewayName {
        match self {
            Self::Sandbox(g) => g.name(),
            Self::Halyk(g) => g.name(),
        }
    }

    async fn create_order(&self, order: &OrderRequest) -> Result<Checkout, GatewayError> {
        match self {
            Self::Sandbox(g) => g.create_order(order).await,
            Self::Halyk(g) => g.create_order(order).await,
        }
    }

    fn callback_key(&self, headers: &HeaderMap, body: &[u8]) -> Result<String, CallbackRejection> {
        match self {
            Self::Sandbox(g) => g.callback_key(headers, body),
            Self::Halyk(g) => g.callback_key(headers, body),
        }
    }

    async fn verify_callback(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        order: &ExpectedOrder,
    ) -> Result<Verified, CallbackRejection> {
        match self {
            Self::Sandbox(g) => g.verify_callback(headers, body, order).await,
            Self::Halyk(g) => g.verify_callback(headers, body, order).await,
        }
    }

    async fn status(&self, order: &ExpectedOrder) -> Result<GatewayStatus, GatewayError> {
        match self {
            Self::Sandbox(g) => g.status(order).await,
            Self::Halyk(g) => g.status(order).await,
        }
    }
}

/// Compares two secrets in constant time (length leaks, content does not).
pub(crate) fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A JSON number or numeric string as tiyn: banks send amounts as `1500`, `1500.5` or
/// `"1500.00"`; never through a float sum.
pub(crate) fn json_amount_tiyn(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.checked_mul(crate::money::TIYN_PER_TENGE)
            } else {
                crate::money::parse_tenge(&n.to_string()).ok()
            }
        }
        serde_json::Value::String(s) => crate::money::parse_tenge(s).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_ids_round_trip_and_unknown_names_are_refused() {
        for g in [GatewayName::Sandbox, GatewayName::HalykEpay] {
            assert_eq!(parse_gateway_id(gateway_id(g)), Some(g));
        }
        assert_eq!(parse_gateway_id("kkb"), None);
        assert_eq!(
            callback_path(GatewayName::Sandbox),
            "/api/v1/payments/sandbox/callback"
        );
    }

    #[test]
    fn bank_amounts_parse_to_tiyn_without_floats() {
        let j = |s: &str| serde_json::from_str::<serde_json::Value>(s).expect("json");
        assert_eq!(json_amount_tiyn(&j("1500")), Some(150_000));
        assert_eq!(json_amount_tiyn(&j("12.22")), Some(1_222));
        assert_eq!(json_amount_tiyn(&j("1500.0")), Some(150_000));
        assert_eq!(json_amount_tiyn(&j("\"1500.00\"")), Some(150_000));
        assert_eq!(json_amount_tiyn(&j("0.001")), None);
        assert_eq!(json_amount_tiyn(&j("-5")), Some(-500));
        assert_eq!(json_amount_tiyn(&j("null")), None);
    }

    #[test]
    fn secrets_compare_by_content_and_length() {
        assert!(secrets_equal(b"abc", b"abc"));
        assert!(!secrets_equal(b"abc", b"abd"));
        assert!(!secrets_equal(b"abc", b"abcd"));
        let s = new_order_secret();
        assert_eq!(s.len(), 64);
        assert_ne!(s, new_order_secret());
    }

    #[test]
    fn urls_join_without_double_slashes() {
        assert_eq!(join_url("http://h:1/", "/a"), "http://h:1/a");
        assert_eq!(join_url("http://h:1", "/a"), "http://h:1/a");
    }
}
