//! Billing endpoints of CONTRACT §4 (seed 5.2.1–5.2.4, 5.2.6): services and usage, service and
//! statistics requests, payment history, invoices (JSON and PDF), card top-ups and the
//! gateways' callbacks; the operator's invoice, payment and usage imports; and the two payment
//! pages (the sandbox bank, the Halyk widget).
//!
//! The rules live in [`crate::billing`] (store, crediting) and [`crate::topup`] (gateways);
//! handlers validate input and shape output.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::{Form, Json};
use serde::{Deserialize, Serialize};
use time::Date;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, Authed, Operator};
use super::operator::ServiceView;
use super::rfc3339;
use crate::billing::{
    self, InvoiceKind, InvoiceLine, NewInvoice, OrderStatus, Payment, PaymentOrder, PaymentSource,
    Period, RequestKind, RequestStatus, ServiceRequest, StatsRequest, StatsStatus, UsageRecord,
};
use crate::payments::parse_gateway_id;
use crate::store::{Account, Service};
use crate::topup::CallbackAnswer;
use crate::validate::Rejection;
use crate::{money, now_secs, validate, App};

/// Longest free text (comments, descriptions).
const TEXT_MAX: usize = 500;
/// Largest configurator payload, bytes of JSON.
const CONFIG_MAX: usize = 8 * 1024;
/// Most lines on one invoice.
const LINES_MAX: usize = 500;

fn bad(field: &str, r: Rejection) -> ApiError {
    ApiError::field(field, r)
}

/// Kazakhstan has kept one zone, UTC+5 (Asia/Almaty), since 2024; customers' "today" is that
/// calendar day, not UTC's (between 19:00 and 24:00 UTC the two differ).
use crate::usage::ALMATY_OFFSET_SECS;

pub(crate) fn today() -> Date {
    billing::day_of(now_secs() + ALMATY_OFFSET_SECS)
}

/// A period from optional query dates: both given, or the last year up to today by default.
pub(crate) fn query_period(
    from: Option<&str>,
    to: Option<&str>,
    not_after_today: bool,
) -> Result<Period, ApiError> {
    let to = match to {
        Some(t) => billing::parse_date("to", t).map_err(|r| bad("to", r))?,
        None => today(),
    };
    let from = match from {
        Some(f) => billing::parse_date("from", f).map_err(|r| bad("from", r))?,
        None => to.saturating_sub(time::Duration::days(billing::MAX_PERIOD_DAYS - 1)),
    };
    billing::period(from, to, not_after_today.then(today)).map_err(|r| bad("to", r))
}

fn service_of(app: &App, account: &Account, id: u64) -> Result<Service, ApiError> {
    app.store()
        .services(account.id)?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "услуга не найдена"))
}

fn find_account(app: &App, number: &str) -> Result<Account, ApiError> {
    app.store().account_by_number(number)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "account_not_found",
            format!("лицевой счёт {number} не найден"),
        )
    })
}

fn text(field: &str, value: Option<&str>) -> Result<Option<String>, ApiError> {
    validate::optional_text(value, TEXT_MAX).map_err(|r| bad(field, r))
}

fn required(field: &str, value: &str) -> Result<String, ApiError> {
    text(field, Some(value))?.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_field",
            format!("поле «{field}» не заполнено"),
        )
        .with_field(field)
    })
}

// ---------------------------------------------------------------------------- services

/// The account's services.
#[utoipa::path(get, path = "/api/v1/services", tag = "customer", security(("session" = [])),
    responses((status = 200, body = [ServiceView]), (status = 401, body = ErrorBody)))]
pub(crate) async fn services(
    State(app): State<App>,
    authed: Authed,
) -> Result<Json<Vec<ServiceView>>, ApiError> {
    Ok(Json(
        app.store()
            .services(authed.account.id)?
            .iter()
            .map(ServiceView::from)
            .collect(),
    ))
}

/// `from`/`to` query of period endpoints (ISO dates, inclusive).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeriodQuery {
    /// First day, `2026-11-01`; default: a year before `to`.
    pub from: Option<String>,
    /// Last day, `2026-11-30`; default: today.
    pub to: Option<String>,
}

/// Usage of a service over a period.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageView {
    /// The service.
    pub service_id: u64,
    /// First day.
    pub from: String,
    /// Last day.
    pub to: String,
    /// Records that overlap the period.
    pub records: Vec<UsageRecord>,
    /// Sum of `bytes_in`.
    pub bytes_in: u64,
    /// Sum of `bytes_out`.
    pub bytes_out: u64,
    /// Sum of `amount_tiyn`.
    pub amount_tiyn: i64,
    /// For the DNS filter service (kind `dns_filter`): the resolver's counts per day of the
    /// period, as `GET /dns-filter/stats` has them.
    pub dns: Option<Vec<super::dnsfilter::DayStats>>,
}

/// The service kind whose usage is the resolver's query counts.
pub const DNS_FILTER_KIND: &str = "dns_filter";

/// Usage statistics of one service for a period.
#[utoipa::path(get, path = "/api/v1/services/{id}/usage", tag = "customer", security(("session" = [])),
    params(("id" = u64, Path, description = "service id"),
        ("from" = Option<String>, Query, format = Date, description = "first day, ISO; default a year before `to`"),
        ("to" = Option<String>, Query, format = Date, description = "last day, ISO; default today")),
    responses((status = 200, body = UsageView), (status = 400, body = ErrorBody, description = "bad_period, bad_date"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn usage(
    State(app): State<App>,
    authed: Authed,
    ApiPath(id): ApiPath<u64>,
    ApiQuery(q): ApiQuery<PeriodQuery>,
) -> Result<Json<UsageView>, ApiError> {
    let service = service_of(&app, &authed.account, id)?;
    let period = query_period(q.from.as_deref(), q.to.as_deref(), false)?;
    let records = app.billing().usage(service.id, period)?;
    let dns = if service.kind == DNS_FILTER_KIND {
        Some(super::dnsfilter::daily(&app, authed.account.id, period)?)
    } else {
        None
    };
    Ok(Json(UsageView {
        dns,
        service_id: service.id,
        from: period.from.to_string(),
        to: period.to.to_string(),
        bytes_in: records
            .iter()
            .map(|r| r.bytes_in)
            .fold(0, u64::saturating_add),
        bytes_out: records
            .iter()
            .map(|r| r.bytes_out)
            .fold(0, u64::saturating_add),
        amount_tiyn: records
            .iter()
            .map(|r| r.amount_tiyn)
            .fold(0, i64::saturating_add),
        records,
    }))
}

/// `POST /services/{id}/disconnect-request` body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisconnectBody {
    /// Why, or when (free text).
    #[schema(max_length = 500, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub comment: Option<String>,
}

/// A service request as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceRequestView {
    /// Id.
    pub id: u64,
    /// `connect` or `disconnect`.
    pub kind: RequestKind,
    /// The account number (carried on the request).
    pub account_number: String,
    /// The service (disconnect).
    pub service_id: Option<u64>,
    /// The configurator's choices (connect).
    #[schema(value_type = Option<Object>)]
    pub configuration: Option<serde_json::Value>,
    /// Comment.
    pub comment: Option<String>,
    /// `open`, `done` or `rejected`.
    pub status: RequestStatus,
    /// RFC 3339.
    pub created_at: String,
}

impl From<&ServiceRequest> for ServiceRequestView {
    fn from(r: &ServiceRequest) -> Self {
        Self {
            id: r.id,
            kind: r.kind,
            account_number: r.account_number.clone(),
            service_id: r.service_id,
            configuration: r.configuration.clone(),
            comment: r.comment.clone(),
            status: r.status,
            created_at: rfc3339(r.created_at),
        }
    }
}

/// Asks for a service to be disconnected; a second open request for it is refused.
#[utoipa::path(post, path = "/api/v1/services/{id}/disconnect-request", tag = "customer",
    security(("session" = [])), request_body = DisconnectBody,
    params(("id" = u64, Path, description = "service id")),
    responses((status = 201, body = ServiceRequestView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "already_requested")))]
pub(crate) async fn disconnect(
    State(app): State<App>,
    authed: Authed,
    ApiPath(id): ApiPath<u64>,
    ApiJson(body): ApiJson<DisconnectBody>,
) -> Result<(StatusCode, Json<ServiceRequestView>), ApiError> {
    let service = service_of(&app, &authed.account, id)?;
    let comment = text("comment", body.comment.as_deref())?;
    let r = app.billing().request_disconnect(
        authed.account.id,
        &authed.account.account_number,
        service.id,
        authed.user.id,
        comment,
        now_secs(),
    )?;
    Ok((StatusCode::CREATED, Json(ServiceRequestView::from(&r))))
}

/// `POST /service-requests` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectBody {
    /// The configurator's choices: a non-empty JSON object (at most 8 KiB).
    #[schema(schema_with = non_empty_object)]
    pub configuration: serde_json::Value,
}

/// The schema of `ConnectBody::configuration`: any JSON object with at least one member.
fn non_empty_object() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Object)
        .min_properties(Some(1))
        .build()
}

/// Asks for a service to be connected; the request carries the account number.
#[utoipa::path(post, path = "/api/v1/service-requests", tag = "customer", security(("session" = [])),
    request_body = ConnectBody,
    responses((status = 201, body = ServiceRequestView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn connect(
    State(app): State<App>,
    authed: Authed,
    ApiJson(body): ApiJson<ConnectBody>,
) -> Result<(StatusCode, Json<ServiceRequestView>), ApiError> {
    let ok_shape = body
        .configuration
        .as_object()
        .is_some_and(|o| !o.is_empty());
    if !ok_shape || body.configuration.to_string().len() > CONFIG_MAX {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_configuration",
            "configuration: ожидается непустой JSON-объект не больше 8 КиБ",
        )
        .with_field("configuration"));
    }
    let r = app.billing().request_connect(
        authed.account.id,
        &authed.account.account_number,
        body.configuration,
        authed.user.id,
        now_secs(),
    )?;
    Ok((StatusCode::CREATED, Json(ServiceRequestView::from(&r))))
}

/// The account's service requests and their state.
#[utoipa::path(get, path = "/api/v1/service-requests", tag = "customer", security(("session" = [])),
    responses((status = 200, body = [ServiceRequestView]), (status = 401, body = ErrorBody)))]
pub(crate) async fn service_requests(
    State(app): State<App>,
    authed: Authed,
) -> Result<Json<Vec<ServiceRequestView>>, ApiError> {
    Ok(Json(
        app.billing()
            .service_requests(authed.account.id)?
            .iter()
            .map(ServiceRequestView::from)
            .collect(),
    ))
}

// ---------------------------------------------------------------------------- statistics

/// `POST /stats-requests` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatsBody {
    /// The service.
    pub service_id: u64,
    /// First day.
    #[schema(format = Date)]
    pub from: String,
    /// Last day (not after today).
    #[schema(format = Date)]
    pub to: String,
}

/// A statistics request as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsRequestView {
    /// Id.
    pub id: u64,
    /// The service.
    pub service_id: u64,
    /// First day.
    pub from: String,
    /// Last day.
    pub to: String,
    /// Where the CSV goes.
    pub email_to: String,
    /// `queued`, `sent` or `failed`.
    pub status: StatsStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub finished_at: Option<String>,
}

impl From<&StatsRequest> for StatsRequestView {
    fn from(r: &StatsRequest) -> Self {
        Self {
            id: r.id,
            service_id: r.service_id,
            from: r.from.clone(),
            to: r.to.clone(),
            email_to: r.email_to.clone(),
            status: r.status,
            error: r.error.clone(),
            created_at: rfc3339(r.created_at),
            finished_at: r.finished_at.map(rfc3339),
        }
    }
}

/// Asks for detailed statistics of a service; they arrive by email as a CSV attachment.
#[utoipa::path(post, path = "/api/v1/stats-requests", tag = "customer", security(("session" = [])),
    request_body = StatsBody,
    responses((status = 202, body = StatsRequestView), (status = 400, body = ErrorBody, description = "bad_period, bad_date"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "too many queued requests")))]
pub(crate) async fn create_stats(
    State(app): State<App>,
    authed: Authed,
    ApiJson(body): ApiJson<StatsBody>,
) -> Result<(StatusCode, Json<StatsRequestView>), ApiError> {
    let service = service_of(&app, &authed.account, body.service_id)
        .map_err(|e| e.with_field("service_id"))?;
    let period = query_period(Some(&body.from), Some(&body.to), true)?;
    let r = app.billing().queue_stats_request(
        authed.account.id,
        authed.user.id,
        service.id,
        period,
        &authed.user.email,
        now_secs(),
    )?;
    app.wake_stats();
    Ok((StatusCode::ACCEPTED, Json(StatsRequestView::from(&r))))
}

/// The account's statistics requests, newest first.
#[utoipa::path(get, path = "/api/v1/stats-requests", tag = "customer", security(("session" = [])),
    responses((status = 200, body = [StatsRequestView]), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_stats(
    State(app): State<App>,
    authed: Authed,
) -> Result<Json<Vec<StatsRequestView>>, ApiError> {
    Ok(Json(
        app.billing()
            .stats_requests(authed.account.id)?
            .iter()
            .map(StatsRequestView::from)
            .collect(),
    ))
}

// ---------------------------------------------------------------------------- payments

/// A payment as the history shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentView {
    /// Id.
    pub id: u64,
    /// Amount, tiyn (corrections may be negative).
    pub amount_tiyn: i64,
    /// `card`, `bank_transfer`, `cash` or `correction`.
    pub source: PaymentSource,
    /// The bank's or billing's reference.
    pub reference: String,
    /// The top-up order (card payments).
    pub order_id: Option<String>,
    /// Text.
    pub description: String,
    /// RFC 3339.
    pub paid_at: String,
}

impl From<&Payment> for PaymentView {
    fn from(p: &Payment) -> Self {
        Self {
            id: p.id,
            amount_tiyn: p.amount_tiyn,
            source: p.source,
            reference: p.reference.clone(),
            order_id: p.order_id.clone(),
            description: p.description.clone(),
            paid_at: rfc3339(p.paid_at),
        }
    }
}

/// Payment history for a period, newest first.
#[utoipa::path(get, path = "/api/v1/payments", tag = "customer", security(("session" = [])),
    params(("from" = Option<String>, Query, format = Date, description = "first day, ISO; default a year before `to`"),
        ("to" = Option<String>, Query, format = Date, description = "last day, ISO; default today")),
    responses((status = 200, body = [PaymentView]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn payments(
    State(app): State<App>,
    authed: Authed,
    ApiQuery(q): ApiQuery<PeriodQuery>,
) -> Result<Json<Vec<PaymentView>>, ApiError> {
    let period = query_period(q.from.as_deref(), q.to.as_deref(), false)?;
    Ok(Json(
        app.billing()
            .payments(authed.account.id, period)?
            .iter()
            .map(PaymentView::from)
            .collect(),
    ))
}

// ---------------------------------------------------------------------------- invoices

/// An invoice as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceView {
    /// Id.
    pub id: u64,
    /// `notice`, `invoice`, `one_time` or `correction`.
    pub kind: InvoiceKind,
    /// The Russian title of the kind.
    pub title: &'static str,
    /// Billing's number.
    pub number: String,
    /// Issue date.
    pub issued_on: String,
    /// Period start.
    pub period_from: String,
    /// Period end.
    pub period_to: String,
    /// Total, tiyn.
    pub amount_tiyn: i64,
    /// Lines.
    pub lines: Vec<InvoiceLine>,
    /// For a correction: the number it replaces.
    pub corrects_number: Option<String>,
    /// Where to download the PDF.
    pub pdf_url: String,
}

impl From<&billing::Invoice> for InvoiceView {
    fn from(i: &billing::Invoice) -> Self {
        Self {
            id: i.id,
            kind: i.kind,
            title: i.kind.title(),
            number: i.number.clone(),
            issued_on: i.issued_on.clone(),
            period_from: i.period_from.clone(),
            period_to: i.period_to.clone(),
            amount_tiyn: i.amount_tiyn,
            lines: i.lines.clone(),
            corrects_number: i.corrects_number.clone(),
            pdf_url: format!("/api/v1/invoices/{}/pdf", i.id),
        }
    }
}

/// `GET /invoices` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvoiceQuery {
    /// `notice`, `invoice`, `one_time` or `correction`.
    pub kind: Option<String>,
    /// First issue day.
    pub from: Option<String>,
    /// Last issue day.
    pub to: Option<String>,
}

/// The account's invoices, filtered by kind and issue period, newest first.
#[utoipa::path(get, path = "/api/v1/invoices", tag = "customer", security(("session" = [])),
    params(("kind" = Option<InvoiceKind>, Query, description = "notice, invoice, one_time or correction"),
        ("from" = Option<String>, Query, format = Date, description = "first issue day, ISO"),
        ("to" = Option<String>, Query, format = Date, description = "last issue day, ISO")),
    responses((status = 200, body = [InvoiceView]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn invoices(
    State(app): State<App>,
    authed: Authed,
    ApiQuery(q): ApiQuery<InvoiceQuery>,
) -> Result<Json<Vec<InvoiceView>>, ApiError> {
    let kind = match q.kind.as_deref() {
        None => None,
        Some(k) => Some(InvoiceKind::parse(k).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_kind",
                "kind: notice, invoice, one_time или correction",
            )
            .with_field("kind")
        })?),
    };
    let period = if q.from.is_none() && q.to.is_none() {
        None
    } else {
        Some(query_period(q.from.as_deref(), q.to.as_deref(), false)?)
    };
    Ok(Json(
        app.billing()
            .invoices(authed.account.id, kind, period)?
            .iter()
            .map(InvoiceView::from)
            .collect(),
    ))
}

fn invoice_of(app: &App, authed: &Authed, id: u64) -> Result<billing::Invoice, ApiError> {
    app.billing()
        .invoice(authed.account.id, id)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "счёт не найден"))
}

/// One invoice (another account's id is not found).
#[utoipa::path(get, path = "/api/v1/invoices/{id}", tag = "customer", security(("session" = [])),
    params(("id" = u64, Path, description = "invoice id")),
    responses((status = 200, body = InvoiceView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn invoice(
    State(app): State<App>,
    authed: Authed,
    ApiPath(id): ApiPath<u64>,
) -> Result<Json<InvoiceView>, ApiError> {
    Ok(Json(InvoiceView::from(&invoice_of(&app, &authed, id)?)))
}

/// The supplier's name on documents: the display name of `mail.from` ("Qorgan").
fn supplier(app: &App) -> String {
    let from = &app.config().mail.from;
    from.split('<')
        .next()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("Qorgan")
        .trim_matches('"')
        .to_owned()
}

/// One invoice as a PDF download (`Content-Disposition: attachment`).
#[utoipa::path(get, path = "/api/v1/invoices/{id}/pdf", tag = "customer", security(("session" = [])),
    params(("id" = u64, Path, description = "invoice id")),
    responses((status = 200, content_type = "application/pdf", description = "the invoice"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn invoice_pdf(
    State(app): State<App>,
    authed: Authed,
    ApiPath(id): ApiPath<u64>,
) -> Result<Response, ApiError> {
    let inv = invoice_of(&app, &authed, id)?;
    let supplier = supplier(&app);
    let account = authed.account.clone();
    let pdf = tokio::task::spawn_blocking(move || {
        crate::invoice_pdf::render(
            &inv,
            &crate::invoice_pdf::InvoiceParties {
                supplier: &supplier,
                customer_name: account.company.as_deref().unwrap_or(&account.name),
                account_number: &account.account_number,
                contract_number: &account.contract_number,
                iin_bin: &account.iin_bin,
            },
        )
        .map(|bytes| (bytes, inv.number))
    })
    .await
    .map_err(crate::ControlError::Join)??;
    let (bytes, number) = pdf;
    let safe: String = number
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut resp = bytes.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/pdf"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"invoice-{safe}.pdf\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

// ---------------------------------------------------------------------------- top-ups

/// `POST /topups` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopupBody {
    /// Amount in tiyn, within `payments.min_topup_tiyn ..= payments.max_topup_tiyn`.
    pub amount_tiyn: i64,
}

/// A top-up order as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopupView {
    /// The order id.
    pub order_id: String,
    /// `created`, `pending`, `paid`, `failed` or `expired`.
    pub status: OrderStatus,
    /// Amount, tiyn.
    pub amount_tiyn: i64,
    /// Where to pay.
    pub payment_url: Option<String>,
    /// `sandbox` or `halyk_epay`.
    pub gateway: String,
    /// Why it failed.
    pub error: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub expires_at: String,
    /// RFC 3339, once paid.
    pub credited_at: Option<String>,
}

impl From<&PaymentOrder> for TopupView {
    fn from(o: &PaymentOrder) -> Self {
        Self {
            order_id: o.order_id.clone(),
            status: o.status,
            amount_tiyn: o.amount_tiyn,
            payment_url: o.payment_url.clone(),
            gateway: o.gateway.clone(),
            error: (o.status == OrderStatus::Failed)
                .then(|| o.last_error.clone())
                .flatten(),
            created_at: rfc3339(o.created_at),
            expires_at: rfc3339(o.expires_at),
            credited_at: o.credited_at.map(rfc3339),
        }
    }
}

/// Opens a card top-up; answers where to pay.
#[utoipa::path(post, path = "/api/v1/topups", tag = "customer", security(("session" = [])),
    request_body = TopupBody,
    responses((status = 201, body = TopupView), (status = 400, body = ErrorBody, description = "bad_amount"),
        (status = 401, body = ErrorBody), (status = 502, body = ErrorBody, description = "gateway_unavailable")))]
pub(crate) async fn create_topup(
    State(app): State<App>,
    authed: Authed,
    ApiJson(body): ApiJson<TopupBody>,
) -> Result<(StatusCode, Json<TopupView>), ApiError> {
    let p = &app.config().payments;
    let amount = money::check_topup(body.amount_tiyn, p.min_topup_tiyn, p.max_topup_tiyn)
        .map_err(|r| bad("amount_tiyn", r))?;
    let order = app
        .topups()
        .create(
            app.billing(),
            &authed.account,
            authed.user.id,
            Some(authed.user.email.clone()),
            amount,
            now_secs(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(TopupView::from(&order))))
}

/// The order's state (the owner's account only); a pending order is checked with the bank.
#[utoipa::path(get, path = "/api/v1/topups/{order_id}", tag = "customer", security(("session" = [])),
    params(("order_id" = String, Path, description = "order id")),
    responses((status = 200, body = TopupView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_topup(
    State(app): State<App>,
    authed: Authed,
    ApiPath(order_id): ApiPath<String>,
) -> Result<Json<TopupView>, ApiError> {
    let receipt = receipt_fn(&app);
    let order = app
        .topups()
        .order_status(
            app.billing(),
            authed.account.id,
            &order_id,
            &receipt,
            now_secs(),
        )
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "заказ не найден"))?;
    Ok(Json(TopupView::from(&order)))
}

/// The receipt email of a credited order: to the user who paid.
pub(crate) fn receipt_fn(
    app: &App,
) -> impl Fn(&PaymentOrder) -> Option<crate::store::NewEmail> + Send + Sync + 'static {
    let store = app.store().clone();
    let public_url = app.config().http.public_url.clone();
    move |o: &PaymentOrder| {
        let user = store.user(o.user_id).ok().flatten()?;
        Some(crate::topup::receipt_email(&user.email, &public_url, o))
    }
}

/// `{"result": ...}` of a callback.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallbackResult {
    /// `credited`, `duplicate`, `declined`, `ignored`, or `refused` (Halyk, which always gets 200).
    pub result: &'static str,
}

/// A payment gateway's notification: verified, then credited exactly once however often it
/// is replayed. The sandbox gets the JSON error for a forged, unsigned, malformed, mismatched
/// or unknown notification; Halyk always gets 200 (its postLink protocol).
#[utoipa::path(post, path = "/api/v1/payments/{gateway}/callback", tag = "gateway",
    params(("gateway" = String, Path, description = "`sandbox` or `halyk_epay`"),
        ("X-Signature" = Option<String>, Header, description = "sandbox: lower-case hex HMAC-SHA256(payments.secret, raw body)")),
    request_body(content = Object, description = "the gateway's notification (CONTRACT §2 for the sandbox)"),
    responses((status = 200, body = CallbackResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub(crate) async fn callback(
    State(app): State<App>,
    ApiPath(gateway): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<CallbackResult>, ApiError> {
    let Some(gateway) = parse_gateway_id(&gateway) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "нет такого платёжного шлюза",
        ));
    };
    if body.len() > app.config().http.max_body_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "тело запроса слишком большое",
        ));
    }
    let receipt = receipt_fn(&app);
    let answer = app
        .topups()
        .handle_callback(
            app.billing(),
            gateway,
            &headers,
            &body,
            &receipt,
            now_secs(),
        )
        .await?;
    app.wake_mailer();
    match answer {
        CallbackAnswer::Ok(result) => Ok(Json(CallbackResult { result })),
        CallbackAnswer::Refused {
            status,
            code,
            message,
        } => Err(ApiError::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            code,
            message,
        )),
    }
}

// ---------------------------------------------------------------------------- payment pages

/// `GET /sandbox/pay/{order_id}`: the pretend bank's page.
pub(crate) async fn sandbox_page(
    State(app): State<App>,
    ApiPath(order_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let store = app.store().clone();
    let page = app.topups().payment_page(app.billing(), &order_id, |id| {
        store.account(id).ok().flatten().map(|a| a.account_number)
    })?;
    match page {
        Some(html) if app.topups().gateway_name() == qorgan_config::GatewayName::Sandbox => {
            Ok(Html(html).into_response())
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "заказ не найден",
        )),
    }
}

/// The sandbox page's form.
#[derive(Debug, Deserialize)]
pub(crate) struct PressForm {
    action: String,
}

/// `POST /sandbox/pay/{order_id}`: a button press; the server plays the bank.
pub(crate) async fn sandbox_press(
    State(app): State<App>,
    ApiPath(order_id): ApiPath<String>,
    Form(form): Form<PressForm>,
) -> Result<Response, ApiError> {
    let paid = match form.action.as_str() {
        "pay" => true,
        "decline" => false,
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_action",
                "action: pay или decline",
            ))
        }
    };
    match app
        .topups()
        .sandbox_press(app.billing(), &order_id, paid)
        .await?
    {
        Some(status) => Ok(Html(crate::payments::sandbox::result_page(
            &order_id, paid, status,
        ))
        .into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "заказ не найден",
        )),
    }
}

/// `GET /pay/halyk/{order_id}`: the page that opens the Halyk widget. Only for the order's own
/// account: the widget parameters carry the payer's email and the order's token.
pub(crate) async fn halyk_page(
    State(app): State<App>,
    authed: Authed,
    ApiPath(order_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let own = app
        .billing()
        .order(&order_id)?
        .is_some_and(|o| o.account_id == authed.account.id);
    if !own {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "заказ не найден",
        ));
    }
    match app
        .topups()
        .payment_page(app.billing(), &order_id, |_| None)?
    {
        Some(html) if app.topups().gateway_name() == qorgan_config::GatewayName::HalykEpay => {
            Ok(Html(html).into_response())
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "заказ не найден",
        )),
    }
}

// ---------------------------------------------------------------------------- operator

/// `POST /operator/accounts/{n}/invoices` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostInvoice {
    /// `notice`, `invoice`, `one_time` or `correction`.
    #[schema(value_type = InvoiceKind)]
    pub kind: String,
    /// Billing's number (1–30 characters: digits, letters, `-`, `/`).
    #[schema(pattern = r"^[\p{L}\p{N}/_.-]{1,30}$")]
    pub number: String,
    /// Issue date.
    #[schema(format = Date)]
    pub issued_on: String,
    /// Period start.
    #[schema(format = Date)]
    pub period_from: String,
    /// Period end.
    #[schema(format = Date)]
    pub period_to: String,
    /// Total, tiyn (≥ 0; a correction may be negative).
    #[schema(minimum = -1_000_000_000_000_i64, maximum = 1_000_000_000_000_i64)]
    pub amount_tiyn: i64,
    /// Lines.
    #[schema(max_items = 500)]
    pub lines: Vec<InvoiceLine>,
    /// For a correction: the invoice number it replaces (required for `correction`).
    #[schema(pattern = r"^[\p{L}\p{N}/_.-]{1,30}$")]
    pub corrects_number: Option<String>,
}

fn invoice_number(field: &str, n: &str) -> Result<String, ApiError> {
    let n = n.trim();
    let ok = (1..=30).contains(&n.chars().count())
        && n.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '/' | '_' | '.'));
    if ok {
        Ok(n.to_owned())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_number",
            format!("{field}: 1–30 символов: буквы, цифры, - / _ ."),
        )
        .with_field(field))
    }
}

/// Posts an invoice of one of the four kinds (idempotent on the number: an identical retry
/// answers 200 with the stored invoice, a different one under the same number 409).
#[utoipa::path(post, path = "/api/v1/operator/accounts/{account_number}/invoices", tag = "operator",
    security(("operator" = [])), request_body = PostInvoice,
    params(("account_number" = String, Path, description = "лицевой счёт")),
    responses((status = 201, body = InvoiceView), (status = 200, body = InvoiceView, description = "identical retry"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "duplicate")))]
pub(crate) async fn post_invoice(
    State(app): State<App>,
    _op: Operator,
    ApiPath(number): ApiPath<String>,
    ApiJson(body): ApiJson<PostInvoice>,
) -> Result<(StatusCode, Json<InvoiceView>), ApiError> {
    let account = find_account(&app, &number)?;
    let kind = InvoiceKind::parse(&body.kind).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_kind",
            "kind: notice, invoice, one_time или correction",
        )
        .with_field("kind")
    })?;
    let num = invoice_number("number", &body.number)?;
    let issued_on =
        billing::parse_date("issued_on", &body.issued_on).map_err(|r| bad("issued_on", r))?;
    let from =
        billing::parse_date("period_from", &body.period_from).map_err(|r| bad("period_from", r))?;
    let to = billing::parse_date("period_to", &body.period_to).map_err(|r| bad("period_to", r))?;
    let period = billing::period(from, to, None).map_err(|r| bad("period_to", r))?;
    let corrects_number = match (kind, body.corrects_number.as_deref()) {
        (InvoiceKind::Correction, Some(n)) => Some(invoice_number("corrects_number", n)?),
        (InvoiceKind::Correction, None) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing_field",
                "коррекционный счёт-фактура указывает номер исправляемого (corrects_number)",
            )
            .with_field("corrects_number"))
        }
        (_, Some(_)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_field",
                "corrects_number только для kind = correction",
            )
            .with_field("corrects_number"))
        }
        (_, None) => None,
    };
    if body.lines.len() > LINES_MAX {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "too_many_lines",
            format!("не больше {LINES_MAX} строк"),
        )
        .with_field("lines"));
    }
    let mut lines = Vec::with_capacity(body.lines.len());
    for (i, l) in body.lines.iter().enumerate() {
        let field = format!("lines[{i}].description");
        lines.push(InvoiceLine {
            description: required(&field, &l.description)?,
            amount_tiyn: l.amount_tiyn,
        });
    }
    let limit = 1_000_000_000_000_i64;
    if body.amount_tiyn.abs() > limit
        || (body.amount_tiyn < 0 && kind != InvoiceKind::Correction)
        || lines.iter().any(|l| l.amount_tiyn.abs() > limit)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_amount",
            "сумма вне допустимых пределов (в тиынах; отрицательная — только у коррекционного)",
        )
        .with_field("amount_tiyn"));
    }
    let (inv, fresh) = app.billing().add_invoice(
        account.id,
        NewInvoice {
            kind,
            number: num,
            issued_on,
            period,
            amount_tiyn: body.amount_tiyn,
            lines,
            corrects_number,
        },
        now_secs(),
    )?;
    let status = if fresh {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(InvoiceView::from(&inv))))
}

/// The sources billing may post (the schema of `PostPayment::source`): card payments come only
/// through a gateway, so `card` is not offered.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // only its schema is used
enum OperatorPaymentSource {
    BankTransfer,
    Cash,
    Correction,
}

/// `POST /operator/accounts/{n}/payments` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostPayment {
    /// Amount, tiyn (positive; a `correction` may be negative).
    #[schema(minimum = -1_000_000_000_000_i64, maximum = 1_000_000_000_000_i64)]
    pub amount_tiyn: i64,
    /// `bank_transfer`, `cash` or `correction` (card payments come only through a gateway).
    #[schema(value_type = OperatorPaymentSource)]
    pub source: PaymentSource,
    /// Billing's reference, unique per source (a retry with it is harmless).
    #[schema(
        max_length = 500,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub reference: String,
    /// Text for the history.
    #[schema(max_length = 500, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub description: Option<String>,
}

/// Posts a payment that billing received outside the cabinet (idempotent on its reference).
#[utoipa::path(post, path = "/api/v1/operator/accounts/{account_number}/payments", tag = "operator",
    security(("operator" = [])), request_body = PostPayment,
    params(("account_number" = String, Path, description = "лицевой счёт")),
    responses((status = 201, body = PaymentView), (status = 200, body = PaymentView, description = "retry"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "duplicate")))]
pub(crate) async fn post_payment(
    State(app): State<App>,
    _op: Operator,
    ApiPath(number): ApiPath<String>,
    ApiJson(body): ApiJson<PostPayment>,
) -> Result<(StatusCode, Json<PaymentView>), ApiError> {
    let account = find_account(&app, &number)?;
    let sign_ok = match body.source {
        PaymentSource::Card => false,
        PaymentSource::Correction => body.amount_tiyn != 0,
        PaymentSource::BankTransfer | PaymentSource::Cash => body.amount_tiyn > 0,
    };
    if !sign_ok || body.amount_tiyn.abs() > 1_000_000_000_000 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_amount",
            "сумма в тиынах: положительная (корректировка — ненулевая); карта — только через шлюз",
        )
        .with_field("amount_tiyn"));
    }
    let reference = required("reference", &body.reference)?;
    let description = text("description", body.description.as_deref())?
        .unwrap_or_else(|| body.source.label().to_owned());
    let (p, fresh) = app.billing().post_payment(
        account.id,
        body.amount_tiyn,
        body.source,
        &reference,
        &description,
        now_secs(),
    )?;
    let status = if fresh {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(PaymentView::from(&p))))
}

/// `POST /operator/accounts/{n}/services/{id}/usage` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostUsage {
    /// First day.
    #[schema(format = Date)]
    pub period_from: String,
    /// Last day.
    #[schema(format = Date)]
    pub period_to: String,
    /// Bytes received.
    #[serde(default)]
    #[schema(schema_with = super::u64_schema)]
    pub bytes_in: u64,
    /// Bytes sent.
    #[serde(default)]
    #[schema(schema_with = super::u64_schema)]
    pub bytes_out: u64,
    /// Charged for it, tiyn.
    #[serde(default)]
    pub amount_tiyn: i64,
    /// What it is.
    #[schema(
        max_length = 500,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub description: String,
}

/// Imports a usage record of a service.
#[utoipa::path(post, path = "/api/v1/operator/accounts/{account_number}/services/{id}/usage", tag = "operator",
    security(("operator" = [])), request_body = PostUsage,
    params(("account_number" = String, Path, description = "лицевой счёт"), ("id" = u64, Path, description = "service id")),
    responses((status = 201, body = UsageRecord), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn post_usage(
    State(app): State<App>,
    _op: Operator,
    ApiPath((number, id)): ApiPath<(String, u64)>,
    ApiJson(body): ApiJson<PostUsage>,
) -> Result<(StatusCode, Json<UsageRecord>), ApiError> {
    let account = find_account(&app, &number)?;
    let service = service_of(&app, &account, id)?;
    let from =
        billing::parse_date("period_from", &body.period_from).map_err(|r| bad("period_from", r))?;
    let to = billing::parse_date("period_to", &body.period_to).map_err(|r| bad("period_to", r))?;
    let period = billing::period(from, to, None).map_err(|r| bad("period_to", r))?;
    let description = required("description", &body.description)?;
    let r = app.billing().add_usage(
        service.id,
        period,
        body.bytes_in,
        body.bytes_out,
        body.amount_tiyn,
        description,
    )?;
    Ok((StatusCode::CREATED, Json(r)))
}

/// The account's service requests (for billing's staff).
#[utoipa::path(get, path = "/api/v1/operator/accounts/{account_number}/service-requests", tag = "operator",
    security(("operator" = [])),
    params(("account_number" = String, Path, description = "лицевой счёт")),
    responses((status = 200, body = [ServiceRequestView]), (status = 404, body = ErrorBody)))]
pub(crate) async fn operator_requests(
    State(app): State<App>,
    _op: Operator,
    ApiPath(number): ApiPath<String>,
) -> Result<Json<Vec<ServiceRequestView>>, ApiError> {
    let account = find_account(&app, &number)?;
    Ok(Json(
        app.billing()
            .service_requests(account.id)?
            .iter()
            .map(ServiceRequestView::from)
            .collect(),
    ))
}
