//! Card top-ups end to end (seed 5.2.6): open an order with the configured gateway, take the
//! gateway's notification through verification into the crediting transaction, answer the
//! customer's polling, reconcile and expire open orders, and play the bank on the sandbox page.
//!
//! The HTTP handlers are thin wrappers over [`Topups`]; every rule of CABINET.md §2c lives here
//! or in [`crate::billing`]:
//! - money moves only in [`Billing::apply_gateway_result`], after the gateway verified the
//!   notification against the stored order; the store is flushed before the gateway hears 2xx;
//! - the return-to-site link (backLink) is a page, never a credit;
//! - a refused notification changes no money, is logged with its reason, and is kept on the
//!   order for the operator;
//! - the sandbox answers refusals with the JSON error (401 forged/unsigned, 400 malformed,
//!   404 unknown order, 422 mismatch); Halyk always gets 200, as its postLink expects.

use axum::http::HeaderMap;
use qorgan_config::{Config, GatewayName};

use crate::billing::{Billing, CreditOutcome, OrderStatus, PaymentOrder};
use crate::error::ControlError;
use crate::payments::{
    gateway_id, CallbackRejection, ExpectedOrder, Gateway, GatewayStatus, OrderRequest,
    PaymentGateway,
};
use crate::store::{Account, Id, NewEmail};

/// Orders pending longer than this are polled by the reconciler (CABINET.md §2c).
pub const RECONCILE_AFTER_SECS: i64 = 10 * 60;

/// Unpaid orders expire this long after creation (CABINET.md §2c).
pub const ORDER_TTL_SECS: i64 = 24 * 60 * 60;

/// What the callback endpoint answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackAnswer {
    /// 200 with `{"result": ...}`: `credited`, `duplicate`, `declined`, `ignored`, or — for
    /// Halyk, which must always get 200 — `refused`.
    Ok(&'static str),
    /// The JSON error (sandbox only).
    Refused {
        /// HTTP status.
        status: u16,
        /// Error code.
        code: &'static str,
        /// Message.
        message: String,
    },
}

/// Builds the receipt email of a credited order (the caller knows users and their emails).
pub type ReceiptFn<'a> = &'a (dyn Fn(&PaymentOrder) -> Option<NewEmail> + Send + Sync);

/// The top-up use cases over the billing store and the configured gateway.
#[derive(Debug, Clone)]
pub struct Topups {
    gateway: Gateway,
    client: reqwest::Client,
    widget_url: String,
}

impl Topups {
    /// The gateway named by `payments.gateway`, over `client` (the app's HTTP client).
    pub fn new(config: &Config, client: reqwest::Client) -> Self {
        Self {
            gateway: Gateway::from_config(config, client.clone()),
            client,
            widget_url: config.payments.halyk_widget_url.clone(),
        }
    }

    /// With an explicit gateway (tests point Halyk at a local stand-in).
    pub fn with_gateway(gateway: Gateway, client: reqwest::Client, widget_url: String) -> Self {
        Self {
            gateway,
            client,
            widget_url,
        }
    }

    /// The configured gateway's name.
    pub fn gateway_name(&self) -> GatewayName {
        self.gateway.name()
    }

    /// Opens an order for a validated amount: reserves it, asks the gateway, stores the
    /// checkout. A gateway failure marks the order failed and is returned
    /// ([`ControlError::Gateway`], HTTP 502).
    pub async fn create(
        &self,
        billing: &Billing,
        account: &Account,
        user_id: Id,
        email: Option<String>,
        amount_tiyn: i64,
        now: i64,
    ) -> Result<PaymentOrder, ControlError> {
        let gateway = gateway_id(self.gateway.name());
        let order = billing.reserve_order(
            gateway,
            account.id,
            user_id,
            amount_tiyn,
            ORDER_TTL_SECS,
            now,
        )?;
        let request = OrderRequest {
            order_id: order.order_id.clone(),
            amount_tiyn,
            account_number: account.account_number.clone(),
            email,
            description: format!("Пополнение лицевого счёта {}", account.account_number),
        };
        match self.gateway.create_order(&request).await {
            Ok(c) => billing.attach_checkout(&order.order_id, c.payment_url, c.secret, c.widget),
            Err(e) => {
                tracing::warn!(order = %order.order_id, error = %e, "gateway refused to open an order");
                billing.fail_order(&order.order_id, "gateway unavailable")?;
                Err(ControlError::Gateway(e))
            }
        }
    }

    fn refused(&self, status: u16, code: &'static str, message: String) -> CallbackAnswer {
        match self.gateway.name() {
            GatewayName::Sandbox => CallbackAnswer::Refused {
                status,
                code,
                message,
            },
            GatewayName::HalykEpay => CallbackAnswer::Ok("refused"),
        }
    }

    fn rejection_answer(&self, r: &CallbackRejection) -> CallbackAnswer {
        let (status, code) = match r {
            CallbackRejection::Unsigned => (401, "unsigned_callback"),
            CallbackRejection::BadSignature => (401, "bad_signature"),
            CallbackRejection::Malformed(_) => (400, "malformed_callback"),
            CallbackRejection::UnknownOrder => (404, "unknown_order"),
            CallbackRejection::Mismatch { .. } => (422, "callback_mismatch"),
            CallbackRejection::NotConfirmed(_) => (409, "not_confirmed"),
            CallbackRejection::Unavailable(_) => (503, "gateway_unavailable"),
        };
        self.refused(status, code, r.to_string())
    }

    /// Handles a gateway notification posted to `/payments/{gateway}/callback`: verifies it
    /// against the stored order, applies it in one transaction, flushes, and says what to
    /// answer. `gateway` is the path's gateway; a gateway that is not configured is refused.
    pub async fn handle_callback(
        &self,
        billing: &Billing,
        gateway: GatewayName,
        headers: &HeaderMap,
        body: &[u8],
        receipt: ReceiptFn<'_>,
        now: i64,
    ) -> Result<CallbackAnswer, ControlError> {
        let raw = String::from_utf8_lossy(body);
        if gateway != self.gateway.name() {
            return Ok(CallbackAnswer::Refused {
                status: 404,
                code: "gateway_not_enabled",
                message: format!("платёжный шлюз {} не включён", gateway_id(gateway)),
            });
        }
        let key = match self.gateway.callback_key(headers, body) {
            Ok(k) => k,
            Err(r) => {
                tracing::warn!(gateway = gateway_id(gateway), reason = %r, body = %raw, "payment notification refused");
                return Ok(self.rejection_answer(&r));
            }
        };
        let order = billing
            .order(&key)?
            .filter(|o| o.gateway == gateway_id(gateway));
        let Some(order) = order else {
            tracing::warn!(gateway = gateway_id(gateway), order = %key, body = %raw, "payment notification for an unknown order");
            return Ok(self.rejection_answer(&CallbackRejection::UnknownOrder));
        };
        let expected = ExpectedOrder {
            order_id: order.order_id.clone(),
            amount_tiyn: order.amount_tiyn,
            secret: order.secret.clone(),
        };
        let verified = match self.gateway.verify_callback(headers, body, &expected).await {
            Ok(v) => v,
            Err(r) => {
                tracing::warn!(gateway = gateway_id(gateway), order = %key, reason = %r, "payment notification refused");
                billing.note_refused_callback(&order.order_id, &r.to_string(), &raw)?;
                billing.flush().await?;
                return Ok(self.rejection_answer(&r));
            }
        };
        let mail = receipt(&order);
        let outcome = billing.apply_gateway_result(
            gateway_id(gateway),
            &verified,
            &raw,
            mail.as_ref(),
            now,
        )?;
        // Durable before the gateway hears 2xx (RELIABILITY S1).
        billing.flush().await?;
        Ok(match outcome {
            CreditOutcome::Credited { .. } => {
                tracing::info!(order = %order.order_id, amount_tiyn = order.amount_tiyn, "top-up credited");
                CallbackAnswer::Ok("credited")
            }
            CreditOutcome::AlreadyCredited => CallbackAnswer::Ok("duplicate"),
            CreditOutcome::Declined => CallbackAnswer::Ok("declined"),
            CreditOutcome::Ignored(why) => {
                tracing::warn!(order = %order.order_id, reason = %why, "payment notification ignored");
                CallbackAnswer::Ok("ignored")
            }
            CreditOutcome::Mismatch(why) => {
                tracing::error!(order = %order.order_id, reason = %why, "payment notification does not match its order: not credited");
                self.refused(422, "callback_mismatch", why)
            }
        })
    }

    /// The account's order (another account's id is not found). A pending order is polled at
    /// the gateway, and a confirmed payment is credited through the same transaction as a
    /// callback.
    pub async fn order_status(
        &self,
        billing: &Billing,
        account_id: Id,
        order_id: &str,
        receipt: ReceiptFn<'_>,
        now: i64,
    ) -> Result<Option<PaymentOrder>, ControlError> {
        let Some(order) = billing
            .order(order_id)?
            .filter(|o| o.account_id == account_id)
        else {
            return Ok(None);
        };
        if order.status == OrderStatus::Pending {
            self.poll(billing, &order, receipt, now).await?;
            return billing.order(order_id);
        }
        Ok(Some(order))
    }

    /// Asks the gateway about one order and applies a definite answer.
    async fn poll(
        &self,
        billing: &Billing,
        order: &PaymentOrder,
        receipt: ReceiptFn<'_>,
        now: i64,
    ) -> Result<(), ControlError> {
        if order.gateway != gateway_id(self.gateway.name()) {
            return Ok(());
        }
        let expected = ExpectedOrder {
            order_id: order.order_id.clone(),
            amount_tiyn: order.amount_tiyn,
            secret: order.secret.clone(),
        };
        match self.gateway.status(&expected).await {
            Ok(GatewayStatus::Paid(v)) => {
                let mail = receipt(order);
                billing.apply_gateway_result(&order.gateway, &v, "", mail.as_ref(), now)?;
                billing.flush().await?;
            }
            Ok(GatewayStatus::Declined(why)) => {
                billing.fail_order(&order.order_id, &why)?;
            }
            Ok(GatewayStatus::Pending | GatewayStatus::Unknown) => {}
            Err(e) => {
                tracing::warn!(order = %order.order_id, error = %e, "gateway status unavailable");
            }
        }
        Ok(())
    }

    /// One reconciler pass: polls orders pending longer than [`RECONCILE_AFTER_SECS`], then
    /// expires the unpaid ones past their time. Returns how many expired.
    pub async fn reconcile(
        &self,
        billing: &Billing,
        receipt: ReceiptFn<'_>,
        now: i64,
    ) -> Result<usize, ControlError> {
        for order in billing.open_orders()? {
            if order.status == OrderStatus::Pending
                && now.saturating_sub(order.created_at) >= RECONCILE_AFTER_SECS
            {
                self.poll(billing, &order, receipt, now).await?;
            }
        }
        billing.expire_orders(now)
    }

    /// The sandbox page's button: plays the bank by posting the signed callback for the order
    /// to our own callback URL over HTTP. Returns the cabinet's HTTP status, or `None` when the
    /// sandbox is not the configured gateway or the order is not a sandbox order.
    pub async fn sandbox_press(
        &self,
        billing: &Billing,
        order_id: &str,
        paid: bool,
    ) -> Result<Option<u16>, ControlError> {
        let Gateway::Sandbox(sandbox) = &self.gateway else {
            return Ok(None);
        };
        let Some(order) = billing.order(order_id)?.filter(|o| o.gateway == "sandbox") else {
            return Ok(None);
        };
        let status = sandbox
            .play_bank(&self.client, &order.order_id, order.amount_tiyn, paid)
            .await?;
        Ok(Some(status))
    }

    /// The payment page of an order (sandbox: the pretend bank; Halyk: the widget page), or
    /// `None` for unknown orders.
    pub fn payment_page(
        &self,
        billing: &Billing,
        order_id: &str,
        account_number: impl Fn(Id) -> Option<String>,
    ) -> Result<Option<String>, ControlError> {
        let Some(order) = billing.order(order_id)? else {
            return Ok(None);
        };
        Ok(match (&self.gateway, order.widget.as_ref()) {
            (Gateway::Sandbox(_), _) if order.gateway == "sandbox" => {
                Some(crate::payments::sandbox::pay_page(
                    &order.order_id,
                    &account_number(order.account_id).unwrap_or_default(),
                    order.amount_tiyn,
                    order.status.as_str(),
                ))
            }
            (Gateway::Halyk(_), Some(widget))
                if order.gateway == "halyk_epay" && order.status.is_open() =>
            {
                Some(crate::payments::halyk::payment_page(
                    &self.widget_url,
                    widget,
                ))
            }
            _ => None,
        })
    }
}

/// How often the background job reconciles open orders.
pub const RECONCILE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The billing background job, until `cancel` fires: builds and mails queued statistics
/// requests (woken by `stats` when one is queued) and, every [`RECONCILE_EVERY`], reconciles
/// and expires open top-up orders. Wakes the mail sender (`mail`) when it queued email.
pub async fn run_jobs(
    store: crate::store::Store,
    billing: Billing,
    topups: Topups,
    public_url: String,
    stats: std::sync::Arc<tokio::sync::Notify>,
    mail: std::sync::Arc<tokio::sync::Notify>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut last_reconcile = std::time::Instant::now();
    loop {
        let now = crate::now_secs();
        match crate::stats_csv::run_queued(&store, &billing, now) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(requests = n, "statistics requests finished");
                mail.notify_one();
            }
            Err(e) => tracing::error!(error = %e, "statistics job failed"),
        }
        if last_reconcile.elapsed() >= RECONCILE_EVERY {
            last_reconcile = std::time::Instant::now();
            let receipt = |o: &PaymentOrder| {
                store
                    .user(o.user_id)
                    .ok()
                    .flatten()
                    .map(|u| receipt_email(&u.email, &public_url, o))
            };
            match topups.reconcile(&billing, &receipt, now).await {
                Ok(expired) => {
                    if expired > 0 {
                        tracing::info!(expired, "unpaid top-up orders expired");
                    }
                    mail.notify_one();
                }
                Err(e) => tracing::error!(error = %e, "top-up reconciliation failed"),
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = stats.notified() => {}
            () = tokio::time::sleep(RECONCILE_EVERY) => {}
        }
    }
}

/// The receipt email of a credited top-up (text/plain, Russian).
pub fn receipt_email(to: &str, public_url: &str, order: &PaymentOrder) -> NewEmail {
    NewEmail {
        to: to.to_owned(),
        subject: format!("Оплата получена: заказ {}", order.order_id),
        body: format!(
            "Здравствуйте!\n\nПлатёж картой на сумму {} зачислен на лицевой счёт.\n\
Заказ: {}\nСсылка банка: {}\n\nИстория платежей: {}/\n\n\
Это письмо отправлено автоматически.\n",
            crate::money::format_tenge_human(order.amount_tiyn),
            order.order_id,
            order.reference.as_deref().unwrap_or("—"),
            public_url.trim_end_matches('/'),
        ),
    }
}

#[cfg(test)]
mod tests;
