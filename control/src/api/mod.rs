//! The HTTP API of CONTRACT §4 (base path `/api/v1`) plus `GET /health`.
//!
//! Every response that is not a success is the JSON error object, whatever produced it: a
//! handler ([`ApiError`]), an extractor, routing (404/405), the request timeout (408) or a panic
//! (500): the last two are rewritten by the outer layers.
//!
//! CSRF: state-changing requests (`POST`, `PUT`, `PATCH`, `DELETE`) that carry an `Origin`
//! header — or, without one, a `Referer` — must come from the origin of `http.public_url`;
//! bodies must be `Content-Type: application/json`, which a cross-site HTML form cannot send
//! without a CORS preflight that this API never grants. The session cookie is also
//! `SameSite=Lax`. Bearer-token clients send no cookie and are not exposed to CSRF.

pub mod account;
pub mod billing;
pub mod dnsfilter;
mod error;
pub mod extract;
pub mod operator;
pub mod users;

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use serde::Serialize;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

pub use error::{ApiError, ErrorBody, ErrorDetail, CONTRACT_HINT};
pub use extract::SESSION_COOKIE;

use crate::App;

/// The OpenAPI document, generated from the handlers' annotations and the DTOs' schemas.
#[derive(OpenApi)]
#[openapi(
    info(title = "Qorgan cabinet API", description = "Customer cabinet and operator (billing) API"),
    paths(
        health,
        operator::create_account,
        operator::get_account,
        operator::add_network,
        operator::add_service,
        operator::post_charge,
        operator::reconciliation,
        account::captcha,
        account::register,
        account::login,
        account::logout,
        account::forgot,
        account::reset,
        account::change_password,
        account::me,
        users::list,
        users::create,
        users::update,
        users::delete,
        users::confirm,
        billing::services,
        billing::usage,
        billing::disconnect,
        billing::connect,
        billing::service_requests,
        billing::create_stats,
        billing::list_stats,
        billing::payments,
        billing::invoices,
        billing::invoice,
        billing::invoice_pdf,
        billing::create_topup,
        billing::get_topup,
        billing::callback,
        billing::post_invoice,
        billing::post_payment,
        billing::post_usage,
        billing::operator_requests,
        dnsfilter::get_filter,
        dnsfilter::put_filter,
        dnsfilter::get_blocklist,
        dnsfilter::put_blocklist,
        dnsfilter::get_allowlist,
        dnsfilter::put_allowlist,
        dnsfilter::categories,
        dnsfilter::networks,
        dnsfilter::stats,
        dnsfilter::audit,
        dnsfilter::operator_filter,
        dnsfilter::operator_put_limits,
        dnsfilter::operator_networks,
        dnsfilter::node_snapshot,
        dnsfilter::node_catalog,
        dnsfilter::node_usage,
        dnsfilter::nodes,
    ),
    components(schemas(ErrorBody, ErrorDetail, Health)),
    modifiers(&Security, &ExtractorErrors),
    tags(
        (name = "operator", description = "Billing integration: `Authorization: Bearer <operator.token>`"),
        (name = "customer", description = "The cabinet: session cookie or `Authorization: Bearer <session token>`"),
        (name = "gateway", description = "Payment gateways' notifications (sandbox: X-Signature HMAC; Halyk ePay: postLink with secret_hash)"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "operator",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Documents the errors the shared extractors answer on every operation that uses them, so
/// that no handler's annotation can forget one: a JSON body ([`extract::ApiJson`]) may be
/// malformed (400), too large (413) or of another media type (415); a session
/// ([`extract::Authed`]) may be missing (401); the operator token ([`extract::Operator`]) may
/// be wrong (401) or still the placeholder (403).
struct ExtractorErrors;

impl ExtractorErrors {
    fn add(op: &mut utoipa::openapi::path::Operation, status: &str, description: &str) {
        use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| {
                RefOr::T(
                    ResponseBuilder::new()
                        .description(description)
                        .content(
                            "application/json",
                            Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                        )
                        .build(),
                )
            });
    }

    /// True when the operation requires the named security scheme.
    fn requires(op: &utoipa::openapi::path::Operation, scheme: &str) -> bool {
        op.security
            .iter()
            .flatten()
            .any(|r| serde_json::to_value(r).is_ok_and(|v| v.get(scheme).is_some()))
    }
}

impl Modify for ExtractorErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().filter_map(Option::as_mut) {
                let json_body = op
                    .request_body
                    .as_ref()
                    .is_some_and(|b| b.content.contains_key("application/json"));
                if json_body {
                    Self::add(
                        op,
                        "400",
                        "malformed_json, invalid_type, missing_field, unknown_field",
                    );
                    Self::add(op, "413", "payload_too_large");
                    Self::add(
                        op,
                        "415",
                        "unsupported_media_type: the body must be application/json",
                    );
                }
                if Self::requires(op, "session") {
                    Self::add(op, "401", "unauthorized: no valid session");
                }
                if Self::requires(op, "operator") {
                    Self::add(op, "401", "unauthorized: operator token required");
                    Self::add(op, "403", "operator_token_unset");
                }
            }
        }
    }
}

/// The OpenAPI document as JSON text (computed once at startup), with the bounds that come
/// from the configuration filled in: a client (or a fuzzer) reading the schema then knows the
/// top-up amounts this server accepts.
pub fn openapi_json(config: &qorgan_config::Config) -> String {
    let mut doc = ApiDoc::openapi();
    let topup = doc
        .components
        .as_mut()
        .and_then(|c| c.schemas.get_mut("TopupBody"));
    if let Some(utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(body))) = topup {
        if let Some(utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(amount))) =
            body.properties.get_mut("amount_tiyn")
        {
            amount.minimum = Some(config.payments.min_topup_tiyn.max(1).into());
            amount.maximum = Some(config.payments.max_topup_tiyn.into());
        }
    }
    doc.to_pretty_json().unwrap_or_else(|_| "{}".to_owned())
}

/// The routes, with the state and the outer layers (CSRF guard, JSON errors, timeout, panic).
pub(crate) fn router(app: App) -> Router {
    let api = Router::new()
        .route("/openapi.json", get(openapi))
        .route("/health", get(health))
        .route("/operator/accounts", post(operator::create_account))
        .route(
            "/operator/accounts/{account_number}",
            get(operator::get_account),
        )
        .route(
            "/operator/accounts/{account_number}/networks",
            post(operator::add_network).get(dnsfilter::operator_networks),
        )
        .route(
            "/operator/accounts/{account_number}/dns-filter",
            get(dnsfilter::operator_filter),
        )
        .route(
            "/operator/accounts/{account_number}/dns-filter/limits",
            put(dnsfilter::operator_put_limits),
        )
        .route("/operator/reconciliation", get(operator::reconciliation))
        .route("/operator/nodes", get(dnsfilter::nodes))
        .route("/operator/nodes/snapshot", get(dnsfilter::node_snapshot))
        .route(
            "/operator/nodes/catalog/{hash}",
            get(dnsfilter::node_catalog),
        )
        .route("/operator/nodes/usage", post(dnsfilter::node_usage))
        .route(
            "/dns-filter",
            get(dnsfilter::get_filter).put(dnsfilter::put_filter),
        )
        .route(
            "/dns-filter/blocklist",
            get(dnsfilter::get_blocklist).put(dnsfilter::put_blocklist),
        )
        .route(
            "/dns-filter/allowlist",
            get(dnsfilter::get_allowlist).put(dnsfilter::put_allowlist),
        )
        .route("/dns-filter/categories", get(dnsfilter::categories))
        .route("/dns-filter/networks", get(dnsfilter::networks))
        .route("/dns-filter/stats", get(dnsfilter::stats))
        .route("/dns-filter/audit", get(dnsfilter::audit))
        .route(
            "/operator/accounts/{account_number}/services",
            post(operator::add_service),
        )
        .route(
            "/operator/accounts/{account_number}/charges",
            post(operator::post_charge),
        )
        .route("/captcha", get(account::captcha))
        .route("/register", post(account::register))
        .route("/session", post(account::login).delete(account::logout))
        .route("/password/forgot", post(account::forgot))
        .route("/password/reset", post(account::reset))
        .route("/me/password", post(account::change_password))
        .route("/me", get(account::me))
        .route("/users", get(users::list).post(users::create))
        .route("/users/confirm", get(users::confirm))
        .route("/users/{id}", patch(users::update).delete(users::delete))
        .route("/services", get(billing::services))
        .route("/services/{id}/usage", get(billing::usage))
        .route(
            "/services/{id}/disconnect-request",
            post(billing::disconnect),
        )
        .route(
            "/service-requests",
            get(billing::service_requests).post(billing::connect),
        )
        .route(
            "/stats-requests",
            get(billing::list_stats).post(billing::create_stats),
        )
        .route("/payments", get(billing::payments))
        .route("/payments/{gateway}/callback", post(billing::callback))
        .route("/invoices", get(billing::invoices))
        .route("/invoices/{id}", get(billing::invoice))
        .route("/invoices/{id}/pdf", get(billing::invoice_pdf))
        .route("/topups", post(billing::create_topup))
        .route("/topups/{order_id}", get(billing::get_topup))
        .route(
            "/operator/accounts/{account_number}/invoices",
            post(billing::post_invoice),
        )
        .route(
            "/operator/accounts/{account_number}/payments",
            post(billing::post_payment),
        )
        .route(
            "/operator/accounts/{account_number}/services/{id}/usage",
            post(billing::post_usage),
        )
        .route(
            "/operator/accounts/{account_number}/service-requests",
            get(billing::operator_requests),
        );
    let timeout = Duration::from_secs(app.config().http.request_timeout_secs);
    Router::new()
        .route("/health", get(health))
        .nest("/api/v1", api)
        .route(
            "/sandbox/pay/{order_id}",
            get(billing::sandbox_page).post(billing::sandbox_press),
        )
        .route("/pay/halyk/{order_id}", get(billing::halyk_page))
        .merge(crate::web::routes(app.config()))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), csrf_guard))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(middleware::map_response(json_errors))
        .layer(CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                tracing::error!("a request handler panicked");
                ApiError::internal().into_response()
            },
        ))
        .with_state(app)
}

async fn not_found() -> ApiError {
    let (code, message) = error::code_for_status(StatusCode::NOT_FOUND);
    ApiError::new(StatusCode::NOT_FOUND, code, message)
}

/// Rewrites any error response without a JSON body (405 from routing, 408 from the timeout)
/// into the JSON error object.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let (code, message) = error::code_for_status(status);
    let mut out = ApiError::new(status, code, message).into_response();
    if let Some(allow) = resp.headers().get(header::ALLOW) {
        out.headers_mut().insert(header::ALLOW, allow.clone());
    }
    out
}

/// The origin (`scheme://host[:port]`, lower case) of `http.public_url`.
fn public_origin(app: &App) -> String {
    let url = app.config().http.public_url.to_ascii_lowercase();
    match url.find("://") {
        Some(i) => {
            let rest = &url[i + 3..];
            let end = rest.find('/').map_or(url.len(), |j| i + 3 + j);
            url[..end].to_owned()
        }
        None => url,
    }
}

/// True when the request's `Origin` (or, lacking it, `Referer`) is the public origin, or when
/// it carries neither (not a browser, or a browser that sends them for every cross-site write).
pub(crate) fn origin_allowed(app: &App, headers: &HeaderMap) -> bool {
    let origin = public_origin(app);
    if let Some(o) = headers.get(header::ORIGIN) {
        return o.to_str().is_ok_and(|o| o.eq_ignore_ascii_case(&origin));
    }
    if let Some(r) = headers.get(header::REFERER) {
        return r.to_str().is_ok_and(|r| {
            let r = r.to_ascii_lowercase();
            r == origin || r.starts_with(&format!("{origin}/"))
        });
    }
    true
}

pub(crate) fn csrf_error() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "csrf_rejected",
        "запрос с чужого сайта отклонён (Origin/Referer не совпадает с адресом кабинета)",
    )
}

async fn csrf_guard(State(app): State<App>, req: Request, next: Next) -> Response {
    if !extract::is_safe(req.method()) && !origin_allowed(&app, req.headers()) {
        return csrf_error().into_response();
    }
    next.run(req).await
}

async fn openapi(State(app): State<App>) -> Response {
    let mut resp = app.openapi().to_owned().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `GET /health` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` when the store answers.
    pub status: &'static str,
}

/// Liveness and store check.
#[utoipa::path(get, path = "/health", tag = "operator",
    responses((status = 200, body = Health), (status = 500, body = ErrorBody)))]
async fn health(State(app): State<App>) -> Result<Json<Health>, ApiError> {
    app.store().account_by_number("")?;
    Ok(Json(Health { status: "ok" }))
}

/// The schema of a `u64` request field: utoipa writes `format: int64`, which caps it at
/// `i64::MAX` and so would call the upper half of the values the server takes invalid.
pub(crate) fn u64_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Integer)
        .minimum(Some(0))
        .maximum(Some(u64::MAX))
        .build()
}

/// RFC 3339 text of unix seconds.
pub(crate) fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
