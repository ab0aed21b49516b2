//! Halyk ePay (epay.homebank.kz), the current protocol of CABINET.md §2b.
//!
//! 1. **Token per order**: a form POST to `payments.halyk_oauth_url` with the merchant's
//!    credentials and the order (`invoiceID`, `amount` as "1500.00", `currency=KZT`,
//!    `secret_hash`, `postLink`, `failurePostLink`) gives `{access_token, expires_in}`.
//! 2. **Widget**: our page loads `payments.halyk_widget_url` and calls `halyk.pay({...})` with
//!    the parameters of [`Halyk::create_order`]'s [`Checkout::widget`] ([`payment_page`]).
//! 3. **postLink**: the bank posts unsigned JSON; its only authenticator is the `secret_hash` we
//!    chose for the order, compared in constant time. Then amount, currency and terminal are
//!    compared with the order, and the payment is confirmed with
//!    `GET {halyk_api_url}/check-status/payment/transaction/{invoiceId}` (Bearer token):
//!    `resultCode "100"`, `transaction.statusName "CHARGE"`, the same amount, currency and
//!    terminal. Only then may the order be credited.
//!
//! Credentials and URLs come from config, never from code.

use axum::http::HeaderMap;
use qorgan_config::{Config, GatewayName};
use serde::Deserialize;

use super::{
    callback_path, join_url, json_amount_tiyn, new_order_secret, secrets_equal, CallbackRejection,
    Checkout, ExpectedOrder, GatewayError, GatewayStatus, OrderRequest, Outcome, PaymentGateway,
    Verified, CURRENCY,
};
use crate::money::format_tenge;

/// The OAuth scope the bank documents for payments and status queries.
pub const SCOPE: &str =
    "webapi usermanagement email_send verification statement statistics payment";

/// Everything the Halyk gateway needs from config. `Debug` leaves the client secret out.
#[derive(Clone, PartialEq, Eq)]
pub struct HalykSettings {
    /// `payments.halyk_oauth_url`: the token endpoint.
    pub oauth_url: String,
    /// `payments.halyk_api_url`: base of check-status.
    pub api_url: String,
    /// `payments.halyk_widget_url`: the payment widget script.
    pub widget_url: String,
    /// Merchant id.
    pub client_id: String,
    /// Merchant secret.
    pub client_secret: String,
    /// Terminal id.
    pub terminal: String,
    /// `http.public_url`: base of postLink and backLink.
    pub public_url: String,
}

impl std::fmt::Debug for HalykSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HalykSettings")
            .field("oauth_url", &self.oauth_url)
            .field("api_url", &self.api_url)
            .field("widget_url", &self.widget_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("terminal", &self.terminal)
            .field("public_url", &self.public_url)
            .finish()
    }
}

impl HalykSettings {
    /// Takes the `[payments]` Halyk keys and `http.public_url`.
    pub fn from_config(config: &Config) -> Self {
        let p = &config.payments;
        Self {
            oauth_url: p.halyk_oauth_url.clone(),
            api_url: p.halyk_api_url.clone(),
            widget_url: p.halyk_widget_url.clone(),
            client_id: p.halyk_client_id.clone(),
            client_secret: p.halyk_client_secret.clone(),
            terminal: p.halyk_terminal.clone(),
            public_url: config.http.public_url.clone(),
        }
    }
}

/// Whether `id` is a valid `invoiceID`: 6–15 ASCII digits.
pub fn valid_invoice_id(id: &str) -> bool {
    (6..=15).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit())
}

/// The `invoiceID` of the `seq`-th order: zero-padded to 9 digits (up to 15). The last six
/// digits repeat only after a million orders; the store keeps an index on them and skips taken
/// ones, so the bank's "unique including its last 6 digits" rule holds.
pub fn invoice_id(seq: u64) -> String {
    format!("{:09}", seq % 1_000_000_000_000_000)
}

/// The last six digits of an invoice id (the part the bank requires unique).
pub fn invoice_suffix(id: &str) -> &str {
    id.get(id.len().saturating_sub(6)..).unwrap_or(id)
}

/// The Halyk ePay gateway.
#[derive(Debug, Clone)]
pub struct Halyk {
    settings: HalykSettings,
    client: reqwest::Client,
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
}

/// The postLink body (the fields we use; the bank sends more).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostLink {
    invoice_id: String,
    #[serde(default)]
    amount: serde_json::Value,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    terminal: Option<String>,
    #[serde(default)]
    reference: Option<String>,
    #[serde(default)]
    approval_code: Option<String>,
    #[serde(default)]
    card_mask: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default, rename = "secret_hash")]
    secret_hash: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusAnswer {
    result_code: String,
    #[serde(default)]
    result_message: Option<String>,
    #[serde(default)]
    transaction: Option<StatusTransaction>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusTransaction {
    #[serde(default, rename = "invoiceID")]
    invoice_id: Option<String>,
    #[serde(default)]
    amount: serde_json::Value,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    terminal: Option<String>,
    #[serde(default, rename = "terminalID")]
    terminal_id: Option<String>,
    #[serde(default)]
    reference: Option<String>,
    #[serde(default)]
    approval_code: Option<String>,
    #[serde(default)]
    card_mask: Option<String>,
    #[serde(default)]
    status_name: Option<String>,
}

impl Halyk {
    /// A gateway over `client` (the app's shared client, with its timeout).
    pub fn new(settings: HalykSettings, client: reqwest::Client) -> Self {
        Self { settings, client }
    }

    /// The postLink URL we give the bank.
    pub fn post_link(&self) -> String {
        join_url(
            &self.settings.public_url,
            &callback_path(GatewayName::HalykEpay),
        )
    }

    /// Asks for a token. With `order`, the token is bound to that order (step 1); without, it
    /// is a plain client-credentials token for status queries.
    async fn token(&self, order: Option<(&OrderRequest, &str)>) -> Result<String, GatewayError> {
        let s = &self.settings;
        let mut form: Vec<(&str, String)> = vec![
            ("grant_type", "client_credentials".to_owned()),
            ("scope", SCOPE.to_owned()),
            ("client_id", s.client_id.clone()),
            ("client_secret", s.client_secret.clone()),
            ("terminal", s.terminal.clone()),
        ];
        if let Some((order, secret)) = order {
            form.extend([
                ("invoiceID", order.order_id.clone()),
                ("secret_hash", secret.to_owned()),
                ("amount", format_tenge(order.amount_tiyn)),
                ("currency", CURRENCY.to_owned()),
                ("postLink", self.post_link()),
                ("failurePostLink", self.post_link()),
            ]);
        }
        let url = s.oauth_url.clone();
        let resp = self
            .client
            .post(&url)
            .form(&form)
            .send()
            .await
            .map_err(|source| GatewayError::Http {
                url: url.clone(),
                source,
            })?;
        if !resp.status().is_success() {
            return Err(GatewayError::Status {
                url,
                status: resp.status().as_u16(),
            });
        }
        let answer: TokenAnswer = resp.json().await.map_err(|e| GatewayError::Shape {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        if answer.access_token.is_empty() || answer.expires_in.is_some_and(|e| e <= 0) {
            return Err(GatewayError::Shape {
                url,
                reason: "empty or expired access_token".to_owned(),
            });
        }
        Ok(answer.access_token)
    }

    /// The bank's check-status answer for an invoice.
    async fn check_status(&self, invoice_id: &str) -> Result<StatusAnswer, GatewayError> {
        let token = self.token(None).await?;
        let url = join_url(
            &self.settings.api_url,
            &format!("/check-status/payment/transaction/{invoice_id}"),
        );
        let resp = self
            .client
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|source| GatewayError::Http {
                url: url.clone(),
                source,
            })?;
        if !resp.status().is_success() {
            return Err(GatewayError::Status {
                url,
                status: resp.status().as_u16(),
            });
        }
        resp.json().await.map_err(|e| GatewayError::Shape {
            url,
            reason: e.to_string(),
        })
    }

    /// Reads a check-status answer against the order: `Ok(Some(verified))` when paid and
    /// matching, `Ok(None)` when not (yet) paid, `Err` on a mismatch or a decline.
    fn judge_status(
        &self,
        answer: StatusAnswer,
        order: &ExpectedOrder,
    ) -> Result<Verified, CallbackRejection> {
        if answer.result_code != "100" {
            return Err(CallbackRejection::NotConfirmed(format!(
                "resultCode {} {}",
                answer.result_code,
                answer.result_message.unwrap_or_default()
            )));
        }
        let Some(t) = answer.transaction else {
            return Err(CallbackRejection::NotConfirmed(
                "no transaction in the answer".to_owned(),
            ));
        };
        let status = t.status_name.clone().unwrap_or_default();
        if status != "CHARGE" {
            return Err(CallbackRejection::NotConfirmed(format!(
                "statusName {status}"
            )));
        }
        if let Some(inv) = &t.invoice_id {
            if inv != &order.order_id {
                return Err(CallbackRejection::Mismatch {
                    field: "invoiceID",
                    expected: order.order_id.clone(),
                    got: inv.clone(),
                });
            }
        }
        self.check_fields(&t.amount, t.currency.as_deref(), None, order)?;
        let terminal_ok = [t.terminal_id.as_deref(), t.terminal.as_deref()]
            .into_iter()
            .flatten()
            .any(|x| x == self.settings.terminal);
        if !terminal_ok {
            return Err(CallbackRejection::Mismatch {
                field: "terminal",
                expected: self.settings.terminal.clone(),
                got: t.terminal_id.or(t.terminal).unwrap_or_default(),
            });
        }
        Ok(Verified {
            order_id: order.order_id.clone(),
            outcome: Outcome::Paid,
            amount_tiyn: order.amount_tiyn,
            currency: CURRENCY.to_owned(),
            reference: t.reference.unwrap_or_default(),
            card_mask: t.card_mask,
            approval_code: t.approval_code,
        })
    }

    /// Amount, currency and (when given) terminal against the order.
    fn check_fields(
        &self,
        amount: &serde_json::Value,
        currency: Option<&str>,
        terminal: Option<Option<&str>>,
        order: &ExpectedOrder,
    ) -> Result<(), CallbackRejection> {
        let got = json_amount_tiyn(amount);
        if got != Some(order.amount_tiyn) {
            return Err(CallbackRejection::Mismatch {
                field: "amount",
                expected: format_tenge(order.amount_tiyn),
                got: amount.to_string(),
            });
        }
        if currency != Some(CURRENCY) {
            return Err(CallbackRejection::Mismatch {
                field: "currency",
                expected: CURRENCY.to_owned(),
                got: currency.unwrap_or_default().to_owned(),
            });
        }
        if let Some(terminal) = terminal {
            if terminal != Some(self.settings.terminal.as_str()) {
                return Err(CallbackRejection::Mismatch {
                    field: "terminal",
                    expected: self.settings.terminal.clone(),
                    got: terminal.unwrap_or_default().to_owned(),
                });
            }
        }
        Ok(())
    }

    fn parse(body: &[u8]) -> Result<PostLink, CallbackRejection> {
        let p: PostLink = serde_json::from_slice(body)
            .map_err(|e| CallbackRejection::Malformed(e.to_string()))?;
        if !valid_invoice_id(&p.invoice_id) {
            return Err(CallbackRejection::Malformed(
                "invoiceId is not 6–15 digits".to_owned(),
            ));
        }
        Ok(p)
    }
}

impl PaymentGateway for Halyk {
    fn name(&self) -> GatewayName {
        GatewayName::HalykEpay
    }

    async fn create_order(&self, order: &OrderRequest) -> Result<Checkout, GatewayError> {
        if !valid_invoice_id(&order.order_id) {
            return Err(GatewayError::Shape {
                url: self.settings.oauth_url.clone(),
                reason: format!("invoiceID {} is not 6–15 digits", order.order_id),
            });
        }
        let secret = new_order_secret();
        let token = self.token(Some((order, &secret))).await?;
        let s = &self.settings;
        let back = join_url(&s.public_url, &format!("/#topup/{}", order.order_id));
        let widget = serde_json::json!({
            "invoiceId": order.order_id,
            "terminal": s.terminal,
            "amount": format_tenge(order.amount_tiyn),
            "currency": CURRENCY,
            "auth": { "access_token": token },
            "backLink": back,
            "failureBackLink": back,
            "postLink": self.post_link(),
            "failurePostLink": self.post_link(),
            "language": "rus",
            "description": order.description,
            "accountId": order.account_number,
            "email": order.email.clone().unwrap_or_default(),
            "phone": "",
        });
        Ok(Checkout {
            payment_url: join_url(&s.public_url, &format!("/pay/halyk/{}", order.order_id)),
            secret: Some(secret),
            widget: Some(widget),
        })
    }

    fn callback_key(&self, _headers: &HeaderMap, body: &[u8]) -> Result<String, CallbackRejection> {
        Ok(Self::parse(body)?.invoice_id)
    }

    async fn verify_callback(
        &self,
        _headers: &HeaderMap,
        body: &[u8],
        order: &ExpectedOrder,
    ) -> Result<Verified, CallbackRejection> {
        let p = Self::parse(body)?;
        let Some(given) = p.secret_hash.as_deref() else {
            return Err(CallbackRejection::Unsigned);
        };
        let Some(expected) = order.secret.as_deref() else {
            return Err(CallbackRejection::BadSignature);
        };
        if !secrets_equal(expected.as_bytes(), given.as_bytes()) {
            return Err(CallbackRejection::BadSignature);
        }
        if p.invoice_id != order.order_id {
            return Err(CallbackRejection::Mismatch {
                field: "invoiceId",
                expected: order.order_id.clone(),
                got: p.invoice_id,
            });
        }
        if p.code.as_deref() != Some("ok") {
            return Ok(Verified {
                order_id: order.order_id.clone(),
                outcome: Outcome::Declined(
                    p.reason
                        .unwrap_or_else(|| p.code.unwrap_or_else(|| "error".to_owned())),
                ),
                amount_tiyn: json_amount_tiyn(&p.amount).unwrap_or(0),
                currency: p.currency.unwrap_or_default(),
                reference: p.reference.unwrap_or_default(),
                card_mask: p.card_mask,
                approval_code: p.approval_code,
            });
        }
        self.check_fields(
            &p.amount,
            p.currency.as_deref(),
            Some(p.terminal.as_deref()),
            order,
        )?;
        let answer = self
            .check_status(&order.order_id)
            .await
            .map_err(|e| CallbackRejection::Unavailable(e.to_string()))?;
        let mut verified = self.judge_status(answer, order)?;
        if let Some(reference) = p.reference.filter(|r| !r.is_empty()) {
            if !verified.reference.is_empty() && verified.reference != reference {
                return Err(CallbackRejection::Mismatch {
                    field: "reference",
                    expected: verified.reference,
                    got: reference,
                });
            }
            verified.reference = reference;
        }
        if verified.reference.is_empty() {
            return Err(CallbackRejection::Malformed("no reference".to_owned()));
        }
        verified.card_mask = verified.card_mask.or(p.card_mask);
        verified.approval_code = verified.approval_code.or(p.approval_code);
        Ok(verified)
    }

    async fn status(&self, order: &ExpectedOrder) -> Result<GatewayStatus, GatewayError> {
        let answer = self.check_status(&order.order_id).await?;
        let status_name = answer
            .transaction
            .as_ref()
            .and_then(|t| t.status_name.clone())
            .unwrap_or_default();
        if answer.result_code == "100" {
            match status_name.as_str() {
                "CHARGE" => {}
                "AUTH" | "NEW" | "3D" | "" => return Ok(GatewayStatus::Pending),
                other => return Ok(GatewayStatus::Declined(other.to_owned())),
            }
        } else {
            return Ok(GatewayStatus::Pending);
        }
        match self.judge_status(answer, order) {
            Ok(v) if !v.reference.is_empty() => Ok(GatewayStatus::Paid(v)),
            Ok(_) => Ok(GatewayStatus::Pending),
            Err(CallbackRejection::NotConfirmed(_)) => Ok(GatewayStatus::Pending),
            Err(e) => Ok(GatewayStatus::Declined(e.to_string())),
        }
    }
}

/// The payment page for Halyk: loads the bank's widget script and opens the payment form with
/// the order's stored widget parameters. The parameters go in as JSON with `<` escaped, so a
/// description cannot close the script element.
pub fn payment_page(widget_url: &str, widget: &serde_json::Value) -> String {
    let params = widget.to_string().replace('<', "\\u003c");
    let src = super::sandbox::html_escape(widget_url);
    format!(
        r#"<!doctype html>
<html lang="ru"><head><meta charset="utf-8"><title>Оплата картой — Halyk ePay</title>
<script src="{src}"></script></head>
<body>
<p>Открывается платёжная страница банка…</p>
<script>halyk.pay({params});</script>
</body></html>
"#
    )
}

#[cfg(test)]
mod tests;
