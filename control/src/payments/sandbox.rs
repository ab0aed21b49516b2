//! The sandbox gateway (the default): a page on our own HTTP listener plays the bank.
//!
//! The protocol is pinned by CONTRACT §2: the bank posts
//! `POST /api/v1/payments/sandbox/callback` with the JSON body
//! `{"order_id": "...", "amount_tiyn": 150000, "status": "paid", "reference": "..."}` and the
//! header `X-Signature: <lower-case hex HMAC-SHA256(payments.secret, raw body)>`.
//!
//! The page `/sandbox/pay/{order_id}` ([`pay_page`]) shows the order with two buttons; pressing
//! one makes the server act as the bank ([`Sandbox::play_bank`]): it builds the signed callback
//! and posts it over HTTP to `http.public_url` + the callback path, so the very same
//! verification code runs as for a callback from outside.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use qorgan_config::GatewayName;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{
    callback_path, join_url, secrets_equal, CallbackRejection, Checkout, ExpectedOrder,
    GatewayError, GatewayStatus, OrderRequest, Outcome, PaymentGateway, Verified, CURRENCY,
};

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-signature";

/// The callback body of CONTRACT §2 (field order as pinned).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxCallback {
    /// Our order id.
    pub order_id: String,
    /// The amount paid, tiyn.
    pub amount_tiyn: i64,
    /// `paid`, or `declined` / `failed`.
    pub status: String,
    /// The (pretend) bank's transaction reference.
    pub reference: String,
}

/// Lower-case hex HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC-SHA256 takes keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The sandbox gateway: the shared secret and the public base URL. `Debug` leaves the secret
/// out.
#[derive(Clone)]
pub struct Sandbox {
    secret: String,
    public_url: String,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("secret", &"<redacted>")
            .field("public_url", &self.public_url)
            .finish()
    }
}

impl Sandbox {
    /// A sandbox signing with `secret` (`payments.secret`), serving its page under `public_url`.
    pub fn new(secret: String, public_url: String) -> Self {
        Self { secret, public_url }
    }

    /// Checks `X-Signature` against the raw body in constant time.
    fn check_signature(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), CallbackRejection> {
        let Some(given) = headers.get(SIGNATURE_HEADER) else {
            return Err(CallbackRejection::Unsigned);
        };
        let expected = sign(&self.secret, body);
        if secrets_equal(expected.as_bytes(), given.as_bytes()) {
            Ok(())
        } else {
            Err(CallbackRejection::BadSignature)
        }
    }

    /// The signed callback the pretend bank sends for a button press: the body and its
    /// signature. `paid = false` is the decline button.
    pub fn bank_callback(&self, order_id: &str, amount_tiyn: i64, paid: bool) -> (Vec<u8>, String) {
        let mut reference = [0u8; 8];
        rand::Rng::fill(&mut rand::rng(), &mut reference);
        let body = SandboxCallback {
            order_id: order_id.to_owned(),
            amount_tiyn,
            status: if paid { "paid" } else { "declined" }.to_owned(),
            reference: format!("SBX{}", hex::encode_upper(reference)),
        };
        // Serialising a struct of strings and an integer cannot fail.
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let signature = sign(&self.secret, &bytes);
        (bytes, signature)
    }

    /// Plays the bank for a button press on the sandbox page: posts the signed callback to our
    /// own callback URL over HTTP and returns the HTTP status the cabinet answered.
    pub async fn play_bank(
        &self,
        client: &reqwest::Client,
        order_id: &str,
        amount_tiyn: i64,
        paid: bool,
    ) -> Result<u16, GatewayError> {
        let (body, signature) = self.bank_callback(order_id, amount_tiyn, paid);
        let url = join_url(&self.public_url, &callback_path(GatewayName::Sandbox));
        let resp = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .map_err(|source| GatewayError::Http {
                url: url.clone(),
                source,
            })?;
        Ok(resp.status().as_u16())
    }

    fn parse(body: &[u8]) -> Result<SandboxCallback, CallbackRejection> {
        serde_json::from_slice(body).map_err(|e| CallbackRejection::Malformed(e.to_string()))
    }
}

impl PaymentGateway for Sandbox {
    fn name(&self) -> GatewayName {
        GatewayName::Sandbox
    }

    async fn create_order(&self, order: &OrderRequest) -> Result<Checkout, GatewayError> {
        Ok(Checkout {
            payment_url: join_url(
                &self.public_url,
                &format!("/sandbox/pay/{}", order.order_id),
            ),
            secret: None,
            widget: None,
        })
    }

    fn callback_key(&self, headers: &HeaderMap, body: &[u8]) -> Result<String, CallbackRejection> {
        self.check_signature(headers, body)?;
        Ok(Self::parse(body)?.order_id)
    }

    async fn verify_callback(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        order: &ExpectedOrder,
    ) -> Result<Verified, CallbackRejection> {
        self.check_signature(headers, body)?;
        let cb = Self::parse(body)?;
        if cb.order_id != order.order_id {
            return Err(CallbackRejection::Mismatch {
                field: "order_id",
                expected: order.order_id.clone(),
                got: cb.order_id,
            });
        }
        if cb.reference.is_empty() || cb.reference.len() > 128 {
            return Err(CallbackRejection::Malformed(
                "reference must be 1–128 characters".to_owned(),
            ));
        }
        let outcome = match cb.status.as_str() {
            "paid" => Outcome::Paid,
            "declined" | "failed" => Outcome::Declined(cb.status.clone()),
            other => {
                return Err(CallbackRejection::Malformed(format!(
                    "unknown status `{other}`"
                )))
            }
        };
        if outcome == Outcome::Paid && cb.amount_tiyn != order.amount_tiyn {
            return Err(CallbackRejection::Mismatch {
                field: "amount_tiyn",
                expected: order.amount_tiyn.to_string(),
                got: cb.amount_tiyn.to_string(),
            });
        }
        Ok(Verified {
            order_id: cb.order_id,
            outcome,
            amount_tiyn: cb.amount_tiyn,
            currency: CURRENCY.to_owned(),
            reference: cb.reference,
            card_mask: Some("4405...0000".to_owned()),
            approval_code: None,
        })
    }

    async fn status(&self, _order: &ExpectedOrder) -> Result<GatewayStatus, GatewayError> {
        // The pretend bank keeps no books: its callback is the only thing it ever says.
        Ok(GatewayStatus::Unknown)
    }
}

/// Escapes text for HTML element content and attribute values.
pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The pretend bank's page for an order: amount, account and two buttons that post the choice
/// (`action=pay` or `action=decline`) back to the same path. `state` is the order's state, so
/// that a finished order shows no buttons.
pub fn pay_page(order_id: &str, account_number: &str, amount_tiyn: i64, state: &str) -> String {
    let amount = crate::money::format_tenge_human(amount_tiyn);
    let id = html_escape(order_id);
    let account = html_escape(account_number);
    let open = matches!(state, "created" | "pending");
    let buttons = if open {
        format!(
            r#"<form method="post" action="/sandbox/pay/{id}">
<button name="action" value="pay" type="submit">Оплатить {amount}</button>
<button name="action" value="decline" type="submit">Отклонить</button>
</form>"#
        )
    } else {
        format!("<p>Заказ уже обработан: {}.</p>", html_escape(state))
    };
    format!(
        r#"<!doctype html>
<html lang="ru"><head><meta charset="utf-8"><title>Песочница банка — заказ {id}</title></head>
<body>
<h1>Тестовая оплата картой</h1>
<p>Это песочница: настоящие деньги не списываются.</p>
<p>Заказ <b>{id}</b>, лицевой счёт <b>{account}</b>, сумма <b>{amount}</b>.</p>
{buttons}
<p><a href="/">Вернуться в личный кабинет</a></p>
</body></html>
"#
    )
}

/// The page shown after a button press: what the cabinet answered to the bank's callback.
pub fn result_page(order_id: &str, paid: bool, cabinet_status: u16) -> String {
    let id = html_escape(order_id);
    let what = if paid {
        "Оплата проведена"
    } else {
        "Оплата отклонена"
    };
    let note = if (200..300).contains(&cabinet_status) {
        "Кабинет принял уведомление банка.".to_owned()
    } else {
        format!("Кабинет отклонил уведомление банка (HTTP {cabinet_status}).")
    };
    format!(
        r#"<!doctype html>
<html lang="ru"><head><meta charset="utf-8"><title>{what}</title></head>
<body><h1>{what}</h1><p>Заказ {id}. {note}</p><p><a href="/">Вернуться в личный кабинет</a></p></body></html>
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn gw() -> Sandbox {
        Sandbox::new("s3cret-key".to_owned(), "http://127.0.0.1:1".to_owned())
    }

    fn order() -> ExpectedOrder {
        ExpectedOrder {
            order_id: "000000123".to_owned(),
            amount_tiyn: 150_000,
            secret: None,
        }
    }

    fn signed(body: &str, secret: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            SIGNATURE_HEADER,
            HeaderValue::from_str(&sign(secret, body.as_bytes())).expect("hex"),
        );
        h
    }

    #[test]
    fn signature_is_lower_case_hex_hmac_sha256_of_the_raw_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[tokio::test]
    async fn a_signed_paid_callback_of_the_right_amount_verifies() {
        let body = r#"{"order_id": "000000123", "amount_tiyn": 150000, "status": "paid", "reference": "R1"}"#;
        let h = signed(body, "s3cret-key");
        assert_eq!(
            gw().callback_key(&h, body.as_bytes()).expect("key"),
            "000000123"
        );
        let v = gw()
            .verify_callback(&h, body.as_bytes(), &order())
            .await
            .expect("verified");
        assert_eq!(v.outcome, Outcome::Paid);
        assert_eq!(v.reference, "R1");
        assert_eq!(v.amount_tiyn, 150_000);
    }

    #[tokio::test]
    async fn forged_unsigned_reformatted_and_mismatched_callbacks_are_refused() {
        let body =
            r#"{"order_id":"000000123","amount_tiyn":150000,"status":"paid","reference":"R1"}"#;
        let g = gw();
        assert_eq!(
            g.callback_key(&HeaderMap::new(), body.as_bytes()),
            Err(CallbackRejection::Unsigned)
        );
        assert_eq!(
            g.callback_key(&signed(body, "other-key"), body.as_bytes()),
            Err(CallbackRejection::BadSignature)
        );
        // Signature over the body with different whitespace: the raw bytes are what is signed.
        let spaced = body.replace(',', ", ");
        assert_eq!(
            g.callback_key(&signed(body, "s3cret-key"), spaced.as_bytes()),
            Err(CallbackRejection::BadSignature)
        );
        // Upper-case hex is not the pinned form.
        let mut upper = HeaderMap::new();
        upper.insert(
            SIGNATURE_HEADER,
            HeaderValue::from_str(&sign("s3cret-key", body.as_bytes()).to_uppercase())
                .expect("hex"),
        );
        assert_eq!(
            g.callback_key(&upper, body.as_bytes()),
            Err(CallbackRejection::BadSignature)
        );
        let cheap = body.replace("150000", "100");
        let r = g
            .verify_callback(&signed(&cheap, "s3cret-key"), cheap.as_bytes(), &order())
            .await;
        assert!(
            matches!(
                r,
                Err(CallbackRejection::Mismatch {
                    field: "amount_tiyn",
                    ..
                })
            ),
            "{r:?}"
        );
        let other = body.replace("000000123", "000000124");
        let r = g
            .verify_callback(&signed(&other, "s3cret-key"), other.as_bytes(), &order())
            .await;
        assert!(matches!(
            r,
            Err(CallbackRejection::Mismatch {
                field: "order_id",
                ..
            })
        ));
        let extra = r#"{"order_id":"000000123","amount_tiyn":150000,"status":"paid","reference":"R1","x":1}"#;
        assert!(matches!(
            g.callback_key(&signed(extra, "s3cret-key"), extra.as_bytes()),
            Err(CallbackRejection::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn the_pretend_banks_callbacks_verify_and_decline_does_not_pay() {
        let g = gw();
        let (body, sig) = g.bank_callback("000000123", 150_000, true);
        let mut h = HeaderMap::new();
        h.insert(SIGNATURE_HEADER, HeaderValue::from_str(&sig).expect("hex"));
        let v = g.verify_callback(&h, &body, &order()).await.expect("ok");
        assert_eq!(v.outcome, Outcome::Paid);
        let (body, sig) = g.bank_callback("000000123", 150_000, false);
        h.insert(SIGNATURE_HEADER, HeaderValue::from_str(&sig).expect("hex"));
        let v = g.verify_callback(&h, &body, &order()).await.expect("ok");
        assert!(matches!(v.outcome, Outcome::Declined(_)));
        let text = String::from_utf8(body).expect("utf8");
        assert!(text.starts_with(
            r#"{"order_id":"000000123","amount_tiyn":150000,"status":"declined","reference":"SBX"#
        ));
    }

    #[tokio::test]
    async fn checkout_points_at_the_sandbox_page_under_the_public_url() {
        let c = gw()
            .create_order(&OrderRequest {
                order_id: "000000123".to_owned(),
                amount_tiyn: 1,
                account_number: "4445".to_owned(),
                email: None,
                description: "x".to_owned(),
            })
            .await
            .expect("checkout");
        assert_eq!(c.payment_url, "http://127.0.0.1:1/sandbox/pay/000000123");
    }

    #[test]
    fn the_page_escapes_and_hides_buttons_of_finished_orders() {
        let p = pay_page("1<2", "4445", 150_000, "pending");
        assert!(p.contains("1&lt;2") && p.contains("value=\"pay\""));
        assert!(!pay_page("1", "4445", 1, "paid").contains("<button"));
    }
}
