//! The billing part of the store: payment orders, payments, invoices, service and statistics
//! requests, usage records — over the same sled database as [`crate::store::Store`], whose
//! `ledger`, `balances`, `services` and `outbox` trees it shares (same encoding: a schema
//! version byte, then JSON).
//!
//! # Crediting (CABINET.md §2c, RELIABILITY W9/S3)
//! [`Billing::apply_gateway_result`] is one multi-tree transaction over orders, payments, the
//! two unique indexes, ledger, balances and outbox: the order moves `created`/`pending` →
//! `paid`, the payment and ledger entry are inserted under unique keys `(gateway, order_id)`
//! and `(gateway, reference)`, the cached balance moves, and the receipt email is queued. A
//! replayed, reordered or concurrent notification finds the index entry and changes nothing.
//! An amount or currency that differs from the order never credits (the raw notification is
//! kept on the order for the operator). sled retries the closure on conflict, so it is pure.
//!
//! The balance is the sum of the ledger; the `balances` tree is a cache moved in the same
//! transaction as every ledger append, never edited on its own.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sled::transaction::TransactionalTree;
use sled::Transactional;
use time::Date;

use crate::error::ControlError;
use crate::payments::{Outcome, Verified, CURRENCY};
use crate::store::{
    Id, LedgerEntry, LedgerKind, MailStatus, NewEmail, OutboxEmail, Service, ServiceStatus,
};
use crate::validate::Rejection;

/// Longest period a usage, payments, invoices or statistics query may span, in days.
pub const MAX_PERIOD_DAYS: i64 = 366;

/// Statistics requests an account may have queued at once.
pub const MAX_OPEN_STATS_REQUESTS: usize = 3;

/// The key of the order counter; and how many last-six-digit suffixes there are.
const ORDER_SEQ_KEY: &[u8] = b"last";
const ORDER_SUFFIXES: u32 = 1_000_000;

// ------------------------------------------------------------------------------ dates

/// An inclusive period of dates (CONTRACT §5: periods are inclusive dates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// First day.
    pub from: Date,
    /// Last day.
    pub to: Date,
}

impl Period {
    /// Whether the day is inside.
    pub fn contains(&self, day: Date) -> bool {
        self.from <= day && day <= self.to
    }

    /// Whether `[a, b]` overlaps the period.
    pub fn overlaps(&self, a: Date, b: Date) -> bool {
        a <= self.to && self.from <= b
    }
}

/// Parses an ISO 8601 calendar date (`2026-11-24`).
pub fn parse_date(field: &str, input: &str) -> Result<Date, Rejection> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(input.trim(), &fmt).map_err(|_| Rejection {
        code: "bad_date",
        message: format!("{field}: «{input}» не дата в формате ГГГГ-ММ-ДД"),
    })
}

/// Checks a period: `from ≤ to`, at most [`MAX_PERIOD_DAYS`] days long (inclusive), and, when
/// `not_after` is given, `to` not later than it (statistics cannot be asked for the future).
pub fn period(from: Date, to: Date, not_after: Option<Date>) -> Result<Period, Rejection> {
    if from > to {
        return Err(Rejection {
            code: "bad_period",
            message: "начало периода позже его конца".to_owned(),
        });
    }
    if (to - from).whole_days() + 1 > MAX_PERIOD_DAYS {
        return Err(Rejection {
            code: "bad_period",
            message: format!("период длиннее {MAX_PERIOD_DAYS} дней"),
        });
    }
    if let Some(limit) = not_after {
        if to > limit {
            return Err(Rejection {
                code: "bad_period",
                message: format!("конец периода позже сегодняшнего дня ({limit})"),
            });
        }
    }
    Ok(Period { from, to })
}

/// The UTC date of a unix timestamp (seconds).
pub fn day_of(unix: i64) -> Date {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(time::OffsetDateTime::date)
        .unwrap_or(Date::MIN)
}

// ------------------------------------------------------------------------------ records

/// State of a payment order. Moves forward only: `created` → `pending` → `paid`, or to
/// `failed` / `expired`; a `failed` order may still become `paid` (the customer retried on
/// the bank page and the bank confirmed), a `paid` or `expired` one never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Reserved; the gateway has not been asked yet.
    Created,
    /// The gateway knows it; the customer may be paying.
    Pending,
    /// Paid and credited.
    Paid,
    /// Declined by the bank.
    Failed,
    /// Not paid in time.
    Expired,
}

impl OrderStatus {
    /// The lower-case name (also used on the sandbox page).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Pending => "pending",
            Self::Paid => "paid",
            Self::Failed => "failed",
            Self::Expired => "expired",
        }
    }

    /// Created or pending: a payment may still arrive.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Created | Self::Pending)
    }
}

/// A card top-up order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentOrder {
    /// Our id; digits (it is also Halyk's `invoiceID`).
    pub order_id: String,
    /// `sandbox` or `halyk_epay`.
    pub gateway: String,
    /// The account credited.
    pub account_id: Id,
    /// The user who opened it.
    pub user_id: Id,
    /// Amount, tiyn.
    pub amount_tiyn: i64,
    /// Always `KZT`.
    pub currency: String,
    /// The per-order secret the bank echoes (Halyk `secret_hash`).
    pub secret: Option<String>,
    /// Where the customer pays.
    pub payment_url: Option<String>,
    /// Widget parameters (Halyk).
    pub widget: Option<serde_json::Value>,
    /// State.
    pub status: OrderStatus,
    /// The bank's reference, once paid.
    pub reference: Option<String>,
    /// Masked card.
    pub card_mask: Option<String>,
    /// Approval code.
    pub approval_code: Option<String>,
    /// Why it failed, or the last refused notification's reason.
    pub last_error: Option<String>,
    /// The last notification's raw body (kept for the operator, also when refused).
    pub raw_callback: Option<String>,
    /// The payment created by crediting.
    pub payment_id: Option<Id>,
    /// Unix seconds.
    pub created_at: i64,
    /// Open orders expire then (unix seconds).
    pub expires_at: i64,
    /// When it was credited.
    pub credited_at: Option<i64>,
}

/// Where a payment came from (seed 5.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentSource {
    /// A card top-up through the cabinet.
    Card,
    /// A bank transfer imported by billing.
    BankTransfer,
    /// Cash at an office.
    Cash,
    /// A correction posted by billing (may be negative).
    Correction,
}

impl PaymentSource {
    fn key(self) -> &'static str {
        match self {
            Self::Card => "card",
            Self::BankTransfer => "bank_transfer",
            Self::Cash => "cash",
            Self::Correction => "correction",
        }
    }

    /// Russian name for emails and the web page.
    pub fn label(self) -> &'static str {
        match self {
            Self::Card => "банковская карта",
            Self::BankTransfer => "банковский перевод",
            Self::Cash => "наличные",
            Self::Correction => "корректировка",
        }
    }
}

/// A payment: one ledger entry with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// Internal id.
    pub id: Id,
    /// The account.
    pub account_id: Id,
    /// Signed amount, tiyn (only corrections may be negative).
    pub amount_tiyn: i64,
    /// Source.
    pub source: PaymentSource,
    /// The bank's or billing's reference (unique per gateway / source).
    pub reference: String,
    /// The gateway, for card payments.
    pub gateway: Option<String>,
    /// The order, for card payments.
    pub order_id: Option<String>,
    /// The ledger entry.
    pub ledger_id: Id,
    /// Unix seconds.
    pub paid_at: i64,
    /// Text shown in the history.
    pub description: String,
}

/// What [`Billing::apply_gateway_result`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum CreditOutcome {
    /// Credited now; the new balance.
    Credited {
        /// The payment.
        payment: Payment,
        /// Balance after it.
        balance_tiyn: i64,
    },
    /// This notification (or another for the same order) was credited before: nothing changed.
    AlreadyCredited,
    /// The bank declined; the open order is now `failed`.
    Declined,
    /// Not credited because the order is not open (expired, or a decline after payment); kept.
    Ignored(String),
    /// Amount or currency differ from the order: never credited, recorded on the order.
    Mismatch(String),
}

/// The four invoice kinds of the cabinet (seed 5.2.4, CABINET.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceKind {
    /// Счёт-извещение: the monthly notice (a payment document).
    Notice,
    /// Счёт-фактура: the tax invoice for the period.
    Invoice,
    /// Разовый счёт-фактура: a one-off sale.
    OneTime,
    /// Коррекционный счёт-фактура: replaces an erroneous invoice.
    Correction,
}

impl InvoiceKind {
    /// The Russian title printed on the document.
    pub fn title(self) -> &'static str {
        match self {
            Self::Notice => "Счёт-извещение",
            Self::Invoice => "Счёт-фактура",
            Self::OneTime => "Разовый счёт-фактура",
            Self::Correction => "Коррекционный счёт-фактура",
        }
    }

    /// Parses the API's name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "notice" => Some(Self::Notice),
            "invoice" => Some(Self::Invoice),
            "one_time" => Some(Self::OneTime),
            "correction" => Some(Self::Correction),
            _ => None,
        }
    }
}

/// One line of an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InvoiceLine {
    /// What was sold.
    #[schema(
        max_length = 500,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub description: String,
    /// Amount, tiyn.
    #[schema(minimum = -1_000_000_000_000_i64, maximum = 1_000_000_000_000_i64)]
    pub amount_tiyn: i64,
}

/// An invoice posted by billing (the cabinet is a read model of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    /// Internal id.
    pub id: Id,
    /// The account.
    pub account_id: Id,
    /// Kind.
    pub kind: InvoiceKind,
    /// Billing's number (unique per account).
    pub number: String,
    /// Issue date, ISO.
    pub issued_on: String,
    /// Period start, ISO.
    pub period_from: String,
    /// Period end, ISO.
    pub period_to: String,
    /// Total, tiyn.
    pub amount_tiyn: i64,
    /// Lines.
    pub lines: Vec<InvoiceLine>,
    /// For a correction: the number of the invoice it replaces.
    pub corrects_number: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// An invoice as the operator posts it (validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInvoice {
    /// Kind.
    pub kind: InvoiceKind,
    /// Number.
    pub number: String,
    /// Issue date.
    pub issued_on: Date,
    /// Period.
    pub period: Period,
    /// Total.
    pub amount_tiyn: i64,
    /// Lines.
    pub lines: Vec<InvoiceLine>,
    /// For a correction.
    pub corrects_number: Option<String>,
}

/// Kind of a service request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// Connect a service (from the configurator).
    Connect,
    /// Disconnect a service.
    Disconnect,
}

/// State of a service or statistics request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    /// Waiting for the operator.
    Open,
    /// Done by the operator.
    Done,
    /// Refused by the operator.
    Rejected,
}

/// A connect or disconnect request, visible to the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRequest {
    /// Internal id.
    pub id: Id,
    /// The account.
    pub account_id: Id,
    /// Its number, carried on the record so that the operator needs no lookup.
    pub account_number: String,
    /// Connect or disconnect.
    pub kind: RequestKind,
    /// The service (disconnect).
    pub service_id: Option<Id>,
    /// The configurator's choices (connect).
    pub configuration: Option<serde_json::Value>,
    /// The customer's comment.
    pub comment: Option<String>,
    /// State.
    pub status: RequestStatus,
    /// Who asked.
    pub created_by: Id,
    /// Unix seconds.
    pub created_at: i64,
}

/// Delivery state of a statistics request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatsStatus {
    /// Waiting for the background job.
    Queued,
    /// The email with the CSV is in the outbox.
    Sent,
    /// Could not be built.
    Failed,
}

/// A request for detailed usage statistics, answered by email.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsRequest {
    /// Internal id.
    pub id: Id,
    /// The account.
    pub account_id: Id,
    /// Who asked.
    pub user_id: Id,
    /// The service.
    pub service_id: Id,
    /// First day, ISO.
    pub from: String,
    /// Last day, ISO.
    pub to: String,
    /// Where the CSV goes.
    pub email_to: String,
    /// State.
    pub status: StatsStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub finished_at: Option<i64>,
}

/// Usage of a service over a period, imported by billing (or, for DNS filtering, counted by
/// the resolver).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageRecord {
    /// Internal id.
    pub id: Id,
    /// The service.
    pub service_id: Id,
    /// First day, ISO.
    pub period_start: String,
    /// Last day, ISO.
    pub period_end: String,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Charged for it, tiyn.
    pub amount_tiyn: i64,
    /// What it is ("трафик", "звонки", ...).
    pub description: String,
}

/// A text file sent with an outbox email (the statistics CSV). Stored beside the outbox, under
/// the email's id, written in the same transaction as the email.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// File name.
    pub filename: String,
    /// MIME type, e.g. `text/csv; charset=utf-8`.
    pub content_type: String,
    /// The file's text.
    pub content: String,
}

// ------------------------------------------------------------------------------ encoding

// The store's own record encoding and transaction helpers: both parts share one format.
use crate::store::{abort, be, dec, enc, from_tx, id_of, pair, tx_enc, tx_get, TxResult};

fn ref_key(namespace: &str, reference: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(namespace.len() + 1 + reference.len());
    k.extend_from_slice(namespace.as_bytes());
    k.push(0);
    k.extend_from_slice(reference.as_bytes());
    k
}

/// Appends a ledger entry and moves the cached balance, inside a transaction.
fn tx_append_ledger(
    ledger: &TransactionalTree,
    balances: &TransactionalTree,
    entry: &LedgerEntry,
) -> TxResult<i64> {
    let current = tx_get::<i64>(balances, "balances", &be(entry.account_id))?.unwrap_or(0);
    let Some(next) = current.checked_add(entry.amount_tiyn) else {
        return abort(ControlError::Conflict);
    };
    ledger.insert(&pair(entry.account_id, entry.id), tx_enc(entry)?)?;
    balances.insert(&be(entry.account_id), tx_enc(&next)?)?;
    Ok(next)
}

fn tx_queue_email(outbox: &TransactionalTree, id: Id, email: &NewEmail, now: i64) -> TxResult<()> {
    let record = OutboxEmail {
        id,
        to: email.to.clone(),
        subject: email.subject.clone(),
        body: email.body.clone(),
        status: MailStatus::Pending,
        attempts: 0,
        next_attempt_ms: now.saturating_mul(1000),
        last_error: None,
        created_at: now,
        sent_at: None,
    };
    outbox.insert(&be(id), tx_enc(&record)?)?;
    Ok(())
}

// ------------------------------------------------------------------------------ the store part

/// The billing trees over one sled database (see the module docs).
#[derive(Clone)]
pub struct Billing {
    db: sled::Db,
    orders: sled::Tree,
    idx_order_suffix: sled::Tree,
    /// The last order sequence number, under [`ORDER_SEQ_KEY`].
    order_seq: sled::Tree,
    payments: sled::Tree,
    idx_payment_ref: sled::Tree,
    idx_payment_order: sled::Tree,
    invoices: sled::Tree,
    idx_invoice_number: sled::Tree,
    service_requests: sled::Tree,
    idx_open_disconnect: sled::Tree,
    stats_requests: sled::Tree,
    usage: sled::Tree,
    ledger: sled::Tree,
    balances: sled::Tree,
    services: sled::Tree,
    outbox: sled::Tree,
    outbox_attachments: sled::Tree,
    /// Serialises check-then-insert sequences that scan (open statistics requests); held only
    /// around synchronous sled calls.
    scan_lock: Arc<Mutex<()>>,
}

impl Billing {
    /// Opens the billing trees (and the shared ledger, balances, services and outbox trees) of
    /// `db`.
    pub fn open(db: &sled::Db) -> Result<Self, ControlError> {
        Ok(Self {
            orders: db.open_tree("orders")?,
            idx_order_suffix: db.open_tree("idx_order_suffix")?,
            order_seq: db.open_tree("order_seq")?,
            payments: db.open_tree("payments")?,
            idx_payment_ref: db.open_tree("idx_payment_ref")?,
            idx_payment_order: db.open_tree("idx_payment_order")?,
            invoices: db.open_tree("invoices")?,
            idx_invoice_number: db.open_tree("idx_invoice_number")?,
            service_requests: db.open_tree("service_requests")?,
            idx_open_disconnect: db.open_tree("idx_open_disconnect")?,
            stats_requests: db.open_tree("stats_requests")?,
            usage: db.open_tree("usage")?,
            ledger: db.open_tree("ledger")?,
            balances: db.open_tree("balances")?,
            services: db.open_tree("services")?,
            outbox: db.open_tree("outbox")?,
            outbox_attachments: db.open_tree("outbox_attachments")?,
            scan_lock: Arc::new(Mutex::new(())),
            db: db.clone(),
        })
    }

    fn next_id(&self) -> Result<Id, ControlError> {
        Ok(self.db.generate_id()? + 1)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // A poisoned lock guards no data (the unit value); carry on.
        self.scan_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes every change so far durable; the callback handler awaits it before answering 2xx
    /// (RELIABILITY S1: an acknowledged payment must survive `kill -9`).
    ///
    /// sled 0.34's `flush_async` deadlocks when several run at once (sled issues #1308 and
    /// #1241; seen here as a hung test with concurrent top-up callbacks and logins, every sled
    /// thread parked): the blocking flush, on a blocking thread, does not.
    pub async fn flush(&self) -> Result<(), ControlError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(ControlError::Join)??;
        Ok(())
    }

    // -------------------------------------------------------------- orders

    /// Reserves a new order in state `created` with an id whose last six digits no other order
    /// has (Halyk's rule; harmless for the sandbox). `ttl_secs` later an unpaid order expires.
    ///
    /// Order ids count up from their own counter, moved in the same transaction as the order.
    /// They cannot come from sled's `generate_id`: it resumes 2 000 000 ahead after every
    /// restart, which brings back the last six digits of the orders made since its last
    /// persisted value, so after a few restarts every fresh id was taken (the S1 crash test
    /// found top-ups refused with 409 that way).
    pub fn reserve_order(
        &self,
        gateway: &str,
        account_id: Id,
        user_id: Id,
        amount_tiyn: i64,
        ttl_secs: i64,
        now: i64,
    ) -> Result<PaymentOrder, ControlError> {
        let template = PaymentOrder {
            order_id: String::new(),
            gateway: gateway.to_owned(),
            account_id,
            user_id,
            amount_tiyn,
            currency: CURRENCY.to_owned(),
            secret: None,
            payment_url: None,
            widget: None,
            status: OrderStatus::Created,
            reference: None,
            card_mask: None,
            approval_code: None,
            last_error: None,
            raw_callback: None,
            payment_id: None,
            created_at: now,
            expires_at: now.saturating_add(ttl_secs),
            credited_at: None,
        };
        let r = (&self.orders, &self.idx_order_suffix, &self.order_seq).transaction(
            |(orders, suffixes, seq)| {
                let mut n = seq
                    .get(ORDER_SEQ_KEY)?
                    .as_deref()
                    .and_then(id_of)
                    .unwrap_or(0);
                // A taken suffix (an order from before this counter, or a wrap after a million
                // orders) is skipped; only a full suffix space refuses.
                for _ in 0..ORDER_SUFFIXES {
                    n = n.wrapping_add(1);
                    let order_id = crate::payments::halyk::invoice_id(n);
                    let suffix = crate::payments::halyk::invoice_suffix(&order_id);
                    if suffixes.get(suffix.as_bytes())?.is_some() {
                        continue;
                    }
                    let mut order = template.clone();
                    order.order_id.clone_from(&order_id);
                    orders.insert(order_id.as_bytes(), tx_enc(&order)?)?;
                    suffixes.insert(suffix.as_bytes(), order_id.as_bytes())?;
                    seq.insert(ORDER_SEQ_KEY, &be(n))?;
                    return Ok(order);
                }
                abort(ControlError::Conflict)
            },
        );
        from_tx(r)
    }

    /// Stores what the gateway said when the order was opened and moves it to `pending`.
    pub fn attach_checkout(
        &self,
        order_id: &str,
        payment_url: String,
        secret: Option<String>,
        widget: Option<serde_json::Value>,
    ) -> Result<PaymentOrder, ControlError> {
        self.update_order(order_id, |o| {
            if o.status == OrderStatus::Created {
                o.status = OrderStatus::Pending;
            }
            o.payment_url = Some(payment_url.clone());
            o.secret.clone_from(&secret);
            o.widget.clone_from(&widget);
        })
    }

    /// Marks an open order failed (the gateway could not open it, or the bank declined).
    pub fn fail_order(&self, order_id: &str, reason: &str) -> Result<PaymentOrder, ControlError> {
        self.update_order(order_id, |o| {
            if o.status.is_open() {
                o.status = OrderStatus::Failed;
                o.last_error = Some(reason.to_owned());
            }
        })
    }

    /// Records a refused notification on the order (reason and raw body) without changing its
    /// state: the operator sees what arrived.
    pub fn note_refused_callback(
        &self,
        order_id: &str,
        reason: &str,
        raw: &str,
    ) -> Result<(), ControlError> {
        self.update_order(order_id, |o| {
            o.last_error = Some(reason.to_owned());
            o.raw_callback = Some(raw.to_owned());
        })
        .map(|_| ())
    }

    fn update_order(
        &self,
        order_id: &str,
        change: impl Fn(&mut PaymentOrder),
    ) -> Result<PaymentOrder, ControlError> {
        let r = self.orders.transaction(|orders| {
            let Some(mut o) = tx_get::<PaymentOrder>(orders, "orders", order_id.as_bytes())? else {
                return abort(ControlError::NotFound("order"));
            };
            change(&mut o);
            orders.insert(order_id.as_bytes(), tx_enc(&o)?)?;
            Ok(o)
        });
        from_tx(r)
    }

    /// The order with this id.
    pub fn order(&self, order_id: &str) -> Result<Option<PaymentOrder>, ControlError> {
        self.orders
            .get(order_id.as_bytes())?
            .map(|v| dec("orders", &v))
            .transpose()
    }

    /// Open orders (for the reconciler): created or pending.
    pub fn open_orders(&self) -> Result<Vec<PaymentOrder>, ControlError> {
        let mut out = Vec::new();
        for item in self.orders.iter() {
            let o: PaymentOrder = dec("orders", &item?.1)?;
            if o.status.is_open() {
                out.push(o);
            }
        }
        Ok(out)
    }

    /// Expires open orders whose time is up; returns how many. Each moves in its own
    /// transaction and only if it is still open, so an expiry racing a callback loses cleanly.
    pub fn expire_orders(&self, now: i64) -> Result<usize, ControlError> {
        let mut n = 0;
        for o in self.open_orders()? {
            if o.expires_at > now {
                continue;
            }
            let r = self.orders.transaction(|orders| {
                let Some(mut cur) =
                    tx_get::<PaymentOrder>(orders, "orders", o.order_id.as_bytes())?
                else {
                    return Ok(false);
                };
                if !cur.status.is_open() {
                    return Ok(false);
                }
                cur.status = OrderStatus::Expired;
                orders.insert(o.order_id.as_bytes(), tx_enc(&cur)?)?;
                Ok(true)
            });
            if from_tx(r)? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Applies a verified gateway result to its order: the crediting transaction of the
    /// module docs. `receipt` is the email to queue when (and only when) money is credited
    /// (`None` when the order's user is gone and nobody can be told).
    pub fn apply_gateway_result(
        &self,
        gateway: &str,
        verified: &Verified,
        raw: &str,
        receipt: Option<&NewEmail>,
        now: i64,
    ) -> Result<CreditOutcome, ControlError> {
        let payment_id = self.next_id()?;
        let ledger_id = self.next_id()?;
        let mail_id = self.next_id()?;
        let order_key = verified.order_id.as_bytes();
        let order_idx = ref_key(gateway, &verified.order_id);
        let reference_idx = ref_key(gateway, &verified.reference);
        let r = (
            &self.orders,
            &self.payments,
            &self.idx_payment_ref,
            &self.idx_payment_order,
            &self.ledger,
            &self.balances,
            &self.outbox,
        )
            .transaction(
                |(orders, payments, by_ref, by_order, ledger, balances, outbox)| {
                    let Some(mut order) = tx_get::<PaymentOrder>(orders, "orders", order_key)?
                    else {
                        return abort(ControlError::NotFound("order"));
                    };
                    if order.gateway != gateway {
                        return abort(ControlError::NotFound("order"));
                    }
                    if by_order.get(&order_idx)?.is_some() {
                        return Ok(CreditOutcome::AlreadyCredited);
                    }
                    match &verified.outcome {
                        Outcome::Declined(reason) => {
                            if !order.status.is_open() {
                                return Ok(CreditOutcome::Ignored(format!(
                                    "decline for a {} order",
                                    order.status.as_str()
                                )));
                            }
                            order.status = OrderStatus::Failed;
                            order.last_error = Some(reason.clone());
                            order.raw_callback = Some(raw.to_owned());
                            orders.insert(order_key, tx_enc(&order)?)?;
                            Ok(CreditOutcome::Declined)
                        }
                        Outcome::Paid => {
                            if !matches!(
                                order.status,
                                OrderStatus::Created | OrderStatus::Pending | OrderStatus::Failed
                            ) {
                                return Ok(CreditOutcome::Ignored(format!(
                                    "payment for a {} order",
                                    order.status.as_str()
                                )));
                            }
                            let mismatch = if verified.amount_tiyn != order.amount_tiyn {
                                Some(format!(
                                    "amount {} ≠ ordered {}",
                                    verified.amount_tiyn, order.amount_tiyn
                                ))
                            } else if verified.currency != order.currency {
                                Some(format!(
                                    "currency {} ≠ {}",
                                    verified.currency, order.currency
                                ))
                            } else if verified.reference.is_empty() {
                                Some("empty reference".to_owned())
                            } else if by_ref.get(&reference_idx)?.is_some() {
                                Some(format!(
                                    "reference {} already credited to another order",
                                    verified.reference
                                ))
                            } else {
                                None
                            };
                            if let Some(why) = mismatch {
                                order.last_error = Some(why.clone());
                                order.raw_callback = Some(raw.to_owned());
                                orders.insert(order_key, tx_enc(&order)?)?;
                                return Ok(CreditOutcome::Mismatch(why));
                            }
                            let entry = LedgerEntry {
                                id: ledger_id,
                                account_id: order.account_id,
                                amount_tiyn: order.amount_tiyn,
                                kind: LedgerKind::Payment,
                                description: format!("Пополнение картой, заказ {}", order.order_id),
                                service_id: None,
                                at: now,
                            };
                            let balance = tx_append_ledger(ledger, balances, &entry)?;
                            let payment = Payment {
                                id: payment_id,
                                account_id: order.account_id,
                                amount_tiyn: order.amount_tiyn,
                                source: PaymentSource::Card,
                                reference: verified.reference.clone(),
                                gateway: Some(gateway.to_owned()),
                                order_id: Some(order.order_id.clone()),
                                ledger_id,
                                paid_at: now,
                                description: entry.description.clone(),
                            };
                            payments
                                .insert(&pair(order.account_id, payment_id), tx_enc(&payment)?)?;
                            by_ref.insert(reference_idx.as_slice(), &be(payment_id))?;
                            by_order.insert(order_idx.as_slice(), &be(payment_id))?;
                            order.status = OrderStatus::Paid;
                            order.reference = Some(verified.reference.clone());
                            order.card_mask.clone_from(&verified.card_mask);
                            order.approval_code.clone_from(&verified.approval_code);
                            order.payment_id = Some(payment_id);
                            order.credited_at = Some(now);
                            order.raw_callback = Some(raw.to_owned());
                            order.last_error = None;
                            orders.insert(order_key, tx_enc(&order)?)?;
                            if let Some(receipt) = receipt {
                                tx_queue_email(outbox, mail_id, receipt, now)?;
                            }
                            Ok(CreditOutcome::Credited {
                                payment,
                                balance_tiyn: balance,
                            })
                        }
                    }
                },
            );
        from_tx(r)
    }

    // -------------------------------------------------------------- payments

    /// Posts a payment that did not come through a gateway (bank transfer, cash, correction)
    /// with billing's reference: ledger entry, payment and balance in one transaction. The
    /// same `(source, reference)` again returns the stored payment (`false`) when the amount
    /// matches, and [`ControlError::Duplicate`] when it does not.
    pub fn post_payment(
        &self,
        account_id: Id,
        amount_tiyn: i64,
        source: PaymentSource,
        reference: &str,
        description: &str,
        now: i64,
    ) -> Result<(Payment, bool), ControlError> {
        let payment_id = self.next_id()?;
        let ledger_id = self.next_id()?;
        let key = ref_key(source.key(), reference);
        let r = (
            &self.payments,
            &self.idx_payment_ref,
            &self.ledger,
            &self.balances,
        )
            .transaction(|(payments, by_ref, ledger, balances)| {
                if let Some(existing) = by_ref.get(&key)? {
                    let Some(existing_id) = id_of(&existing) else {
                        return abort(ControlError::NotFound("payment"));
                    };
                    let Some(p) =
                        tx_get::<Payment>(payments, "payments", &pair(account_id, existing_id))?
                    else {
                        return abort(ControlError::Duplicate {
                            what: "payment reference",
                            key: reference.to_owned(),
                        });
                    };
                    if p.amount_tiyn != amount_tiyn {
                        return abort(ControlError::Duplicate {
                            what: "payment reference",
                            key: reference.to_owned(),
                        });
                    }
                    return Ok((p, false));
                }
                let entry = LedgerEntry {
                    id: ledger_id,
                    account_id,
                    amount_tiyn,
                    kind: LedgerKind::Payment,
                    description: description.to_owned(),
                    service_id: None,
                    at: now,
                };
                tx_append_ledger(ledger, balances, &entry)?;
                let payment = Payment {
                    id: payment_id,
                    account_id,
                    amount_tiyn,
                    source,
                    reference: reference.to_owned(),
                    gateway: None,
                    order_id: None,
                    ledger_id,
                    paid_at: now,
                    description: description.to_owned(),
                };
                payments.insert(&pair(account_id, payment_id), tx_enc(&payment)?)?;
                by_ref.insert(key.as_slice(), &be(payment_id))?;
                Ok((payment, true))
            });
        from_tx(r)
    }

    /// The account's payments whose day is in the period, newest first.
    pub fn payments(&self, account_id: Id, period: Period) -> Result<Vec<Payment>, ControlError> {
        let mut out: Vec<Payment> = Vec::new();
        for item in self.payments.scan_prefix(be(account_id)) {
            let p: Payment = dec("payments", &item?.1)?;
            if period.contains(day_of(p.paid_at)) {
                out.push(p);
            }
        }
        out.sort_by(|a, b| b.paid_at.cmp(&a.paid_at).then(b.id.cmp(&a.id)));
        Ok(out)
    }

    /// Every payment of the account (tests, reconciliation).
    pub fn all_payments(&self, account_id: Id) -> Result<Vec<Payment>, ControlError> {
        self.payments
            .scan_prefix(be(account_id))
            .map(|item| dec("payments", &item?.1))
            .collect()
    }

    /// The cached balance (sum of the ledger).
    pub fn balance(&self, account_id: Id) -> Result<i64, ControlError> {
        Ok(self
            .balances
            .get(be(account_id))?
            .map(|v| dec("balances", &v))
            .transpose()?
            .unwrap_or(0))
    }

    /// The sum of the account's ledger, computed (the balance must always equal it).
    pub fn ledger_sum(&self, account_id: Id) -> Result<i64, ControlError> {
        let mut sum = 0i64;
        for item in self.ledger.scan_prefix(be(account_id)) {
            let e: LedgerEntry = dec("ledger", &item?.1)?;
            sum = sum.saturating_add(e.amount_tiyn);
        }
        Ok(sum)
    }

    // -------------------------------------------------------------- invoices

    /// Stores an invoice. The same number again on the same account returns the stored one
    /// (`false`) when the content is the same — billing may retry — and
    /// [`ControlError::Duplicate`] when it differs.
    pub fn add_invoice(
        &self,
        account_id: Id,
        new: NewInvoice,
        now: i64,
    ) -> Result<(Invoice, bool), ControlError> {
        let id = self.next_id()?;
        let invoice = Invoice {
            id,
            account_id,
            kind: new.kind,
            number: new.number,
            issued_on: new.issued_on.to_string(),
            period_from: new.period.from.to_string(),
            period_to: new.period.to.to_string(),
            amount_tiyn: new.amount_tiyn,
            lines: new.lines,
            corrects_number: new.corrects_number,
            created_at: now,
        };
        let mut number_key = be(account_id).to_vec();
        number_key.extend_from_slice(invoice.number.as_bytes());
        let r = (&self.invoices, &self.idx_invoice_number).transaction(|(invoices, by_number)| {
            if let Some(existing) = by_number.get(&number_key)? {
                let old = id_of(&existing)
                    .map(|oid| tx_get::<Invoice>(invoices, "invoices", &pair(account_id, oid)))
                    .transpose()?
                    .flatten();
                return match old {
                    Some(old) if same_invoice(&old, &invoice) => Ok((old, false)),
                    _ => abort(ControlError::Duplicate {
                        what: "invoice",
                        key: invoice.number.clone(),
                    }),
                };
            }
            invoices.insert(&pair(account_id, id), tx_enc(&invoice)?)?;
            by_number.insert(number_key.as_slice(), &be(id))?;
            Ok((invoice.clone(), true))
        });
        from_tx(r)
    }

    /// The account's invoices, filtered by kind and by issue date within the period, newest
    /// first.
    pub fn invoices(
        &self,
        account_id: Id,
        kind: Option<InvoiceKind>,
        period: Option<Period>,
    ) -> Result<Vec<Invoice>, ControlError> {
        let mut out: Vec<Invoice> = Vec::new();
        for item in self.invoices.scan_prefix(be(account_id)) {
            let inv: Invoice = dec("invoices", &item?.1)?;
            if kind.is_some_and(|k| k != inv.kind) {
                continue;
            }
            if let Some(p) = period {
                let from = p.from.to_string();
                let to = p.to.to_string();
                // ISO dates order as strings.
                if inv.issued_on < from || inv.issued_on > to {
                    continue;
                }
            }
            out.push(inv);
        }
        out.sort_by(|a, b| b.issued_on.cmp(&a.issued_on).then(b.id.cmp(&a.id)));
        Ok(out)
    }

    /// One invoice of the account; another account's id is simply not found.
    pub fn invoice(&self, account_id: Id, id: Id) -> Result<Option<Invoice>, ControlError> {
        self.invoices
            .get(pair(account_id, id))?
            .map(|v| dec("invoices", &v))
            .transpose()
    }

    // -------------------------------------------------------------- service requests

    /// Files a disconnection request for one of the account's services and marks the service
    /// `disconnect_requested`, in one transaction. A second open request for the same service
    /// gives [`ControlError::AlreadyRequested`].
    pub fn request_disconnect(
        &self,
        account_id: Id,
        account_number: &str,
        service_id: Id,
        user_id: Id,
        comment: Option<String>,
        now: i64,
    ) -> Result<ServiceRequest, ControlError> {
        let id = self.next_id()?;
        let request = ServiceRequest {
            id,
            account_id,
            account_number: account_number.to_owned(),
            kind: RequestKind::Disconnect,
            service_id: Some(service_id),
            configuration: None,
            comment,
            status: RequestStatus::Open,
            created_by: user_id,
            created_at: now,
        };
        let service_key = pair(account_id, service_id);
        let r = (
            &self.services,
            &self.service_requests,
            &self.idx_open_disconnect,
        )
            .transaction(|(services, requests, open)| {
                let Some(mut service) = tx_get::<Service>(services, "services", &service_key)?
                else {
                    return abort(ControlError::NotFound("service"));
                };
                if open.get(be(service_id))?.is_some() || service.status != ServiceStatus::Active {
                    return abort(ControlError::AlreadyRequested("disconnect"));
                }
                service.status = ServiceStatus::DisconnectRequested;
                services.insert(&service_key, tx_enc(&service)?)?;
                requests.insert(&pair(account_id, id), tx_enc(&request)?)?;
                open.insert(&be(service_id), &be(id))?;
                Ok(())
            });
        from_tx(r)?;
        Ok(request)
    }

    /// Files a connection request carrying the configurator's choices and the account number.
    pub fn request_connect(
        &self,
        account_id: Id,
        account_number: &str,
        configuration: serde_json::Value,
        user_id: Id,
        now: i64,
    ) -> Result<ServiceRequest, ControlError> {
        let request = ServiceRequest {
            id: self.next_id()?,
            account_id,
            account_number: account_number.to_owned(),
            kind: RequestKind::Connect,
            service_id: None,
            configuration: Some(configuration),
            comment: None,
            status: RequestStatus::Open,
            created_by: user_id,
            created_at: now,
        };
        self.service_requests
            .insert(pair(account_id, request.id), enc(&request)?)?;
        Ok(request)
    }

    /// The account's service requests, oldest first.
    pub fn service_requests(&self, account_id: Id) -> Result<Vec<ServiceRequest>, ControlError> {
        self.service_requests
            .scan_prefix(be(account_id))
            .map(|item| dec("service_requests", &item?.1))
            .collect()
    }

    // -------------------------------------------------------------- usage

    /// Stores a usage record of a service (imported by billing).
    pub fn add_usage(
        &self,
        service_id: Id,
        period: Period,
        bytes_in: u64,
        bytes_out: u64,
        amount_tiyn: i64,
        description: String,
    ) -> Result<UsageRecord, ControlError> {
        let record = UsageRecord {
            id: self.next_id()?,
            service_id,
            period_start: period.from.to_string(),
            period_end: period.to.to_string(),
            bytes_in,
            bytes_out,
            amount_tiyn,
            description,
        };
        self.usage
            .insert(pair(service_id, record.id), enc(&record)?)?;
        Ok(record)
    }

    /// The service's usage records that overlap the period, in period order.
    pub fn usage(&self, service_id: Id, period: Period) -> Result<Vec<UsageRecord>, ControlError> {
        let from = period.from.to_string();
        let to = period.to.to_string();
        let mut out: Vec<UsageRecord> = Vec::new();
        for item in self.usage.scan_prefix(be(service_id)) {
            let r: UsageRecord = dec("usage", &item?.1)?;
            if r.period_start <= to && from <= r.period_end {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.period_start.cmp(&b.period_start).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    // -------------------------------------------------------------- statistics requests

    /// Queues a statistics request; refused with [`ControlError::TooManyOpen`] when the account
    /// already has [`MAX_OPEN_STATS_REQUESTS`] queued.
    pub fn queue_stats_request(
        &self,
        account_id: Id,
        user_id: Id,
        service_id: Id,
        period: Period,
        email_to: &str,
        now: i64,
    ) -> Result<StatsRequest, ControlError> {
        let _guard = self.lock();
        let open = self
            .stats_requests(account_id)?
            .iter()
            .filter(|r| r.status == StatsStatus::Queued)
            .count();
        if open >= MAX_OPEN_STATS_REQUESTS {
            return Err(ControlError::TooManyOpen {
                open,
                max: MAX_OPEN_STATS_REQUESTS,
            });
        }
        let request = StatsRequest {
            id: self.next_id()?,
            account_id,
            user_id,
            service_id,
            from: period.from.to_string(),
            to: period.to.to_string(),
            email_to: email_to.to_owned(),
            status: StatsStatus::Queued,
            error: None,
            created_at: now,
            finished_at: None,
        };
        self.stats_requests
            .insert(pair(account_id, request.id), enc(&request)?)?;
        Ok(request)
    }

    /// The account's statistics requests, newest first.
    pub fn stats_requests(&self, account_id: Id) -> Result<Vec<StatsRequest>, ControlError> {
        let mut out: Vec<StatsRequest> = self
            .stats_requests
            .scan_prefix(be(account_id))
            .map(|item| dec("stats_requests", &item?.1))
            .collect::<Result<_, _>>()?;
        out.reverse();
        Ok(out)
    }

    /// Queued statistics requests of every account, oldest first (the background job).
    pub fn queued_stats_requests(&self) -> Result<Vec<StatsRequest>, ControlError> {
        let mut out: Vec<StatsRequest> = Vec::new();
        for item in self.stats_requests.iter() {
            let r: StatsRequest = dec("stats_requests", &item?.1)?;
            if r.status == StatsStatus::Queued {
                out.push(r);
            }
        }
        out.sort_by_key(|r| r.id);
        Ok(out)
    }

    /// Finishes a queued statistics request: with an email, marks it sent and queues the email
    /// and its attachments in the same transaction; without, marks it failed with `error`. A
    /// request that is no longer queued is left alone (`false`).
    pub fn finish_stats_request(
        &self,
        request: &StatsRequest,
        email: Result<(NewEmail, Vec<Attachment>), String>,
        now: i64,
    ) -> Result<bool, ControlError> {
        let mail_id = self.next_id()?;
        let key = pair(request.account_id, request.id);
        let r = (&self.stats_requests, &self.outbox, &self.outbox_attachments).transaction(
            |(requests, outbox, attachments)| {
                let Some(mut cur) = tx_get::<StatsRequest>(requests, "stats_requests", &key)?
                else {
                    return Ok(false);
                };
                if cur.status != StatsStatus::Queued {
                    return Ok(false);
                }
                cur.finished_at = Some(now);
                match &email {
                    Ok((mail, files)) => {
                        if !files.is_empty() {
                            attachments.insert(&be(mail_id), tx_enc(files)?)?;
                        }
                        tx_queue_email(outbox, mail_id, mail, now)?;
                        cur.status = StatsStatus::Sent;
                    }
                    Err(why) => {
                        cur.status = StatsStatus::Failed;
                        cur.error = Some(why.clone());
                    }
                }
                requests.insert(&key, tx_enc(&cur)?)?;
                Ok(true)
            },
        );
        from_tx(r)
    }

    /// Forgets an outbox email's attachments (once delivered: like the body, they are not kept).
    pub fn remove_attachments(&self, mail_id: Id) -> Result<(), ControlError> {
        self.outbox_attachments.remove(be(mail_id))?;
        Ok(())
    }

    /// The attachments of an outbox email (none for most).
    pub fn attachments(&self, mail_id: Id) -> Result<Vec<Attachment>, ControlError> {
        Ok(self
            .outbox_attachments
            .get(be(mail_id))?
            .map(|v| dec("outbox_attachments", &v))
            .transpose()?
            .unwrap_or_default())
    }
}

/// Same invoice content (ignoring id and creation time): a harmless retry by billing.
fn same_invoice(a: &Invoice, b: &Invoice) -> bool {
    a.kind == b.kind
        && a.number == b.number
        && a.issued_on == b.issued_on
        && a.period_from == b.period_from
        && a.period_to == b.period_to
        && a.amount_tiyn == b.amount_tiyn
        && a.lines == b.lines
        && a.corrects_number == b.corrects_number
}

mod reconcile;
pub use reconcile::{BalanceMismatch, LedgerReconciliation, Orphan, OrphanKind};

#[cfg(test)]
mod tests;
