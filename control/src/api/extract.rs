//! Extractors whose rejections are [`ApiError`]s: JSON bodies, paths, queries, the session and
//! the operator token, and the client's address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::secrets::token_hash;
use crate::store::{Account, User};
use crate::{now_secs, App};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "qorgan_session";

/// A JSON body: `Content-Type: application/json` required, size capped by `http.max_body_bytes`,
/// and every parse problem (syntax, bad UTF-8, wrong type, missing or unknown field) reported as
/// a 4xx JSON error naming the field.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<App> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &App) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "ожидается Content-Type: application/json",
            ));
        }
        let limit = app.config().http.max_body_bytes;
        let bytes = read_body(req.into_body(), limit, || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("тело запроса больше {limit} байт"),
            )
        })
        .await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Reads a whole body of at most `limit` bytes; a longer one is `too_large()`.
pub(crate) async fn read_body(
    body: axum::body::Body,
    limit: usize,
    too_large: impl FnOnce() -> ApiError,
) -> Result<axum::body::Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Err(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "body_unreadable",
            "тело запроса не прочитано",
        )),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// Parses JSON into `T`, mapping serde's complaints to API errors with the field's path.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(v) => v,
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner
                .to_string()
                .starts_with("invalid type: floating point")
            {
                if let Some(again) = parse_whole_numbers(bytes) {
                    return again;
                }
            }
            return Err(json_error(&path, &inner));
        }
    };
    if let Err(e) = de.end() {
        return Err(json_error(".", &e));
    }
    Ok(value)
}

/// JSON has one number type: `877.0` is the integer 877 (JSON Schema, and so the OpenAPI
/// document, agrees), but serde reads integer fields from integer spellings only. A body that
/// failed for a float is read again with every whole float within ±2^53 (where a float is
/// exact) written as an integer; `None` when it holds no such float (the first error stands).
fn parse_whole_numbers<T: DeserializeOwned>(bytes: &[u8]) -> Option<Result<T, ApiError>> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if !whole_floats_to_integers(&mut value) {
        return None;
    }
    Some(
        serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
            let path = e.path().to_string();
            json_error(&path, &e.into_inner())
        }),
    )
}

/// Rewrites whole floats as integers in place; true when it changed one. The recursion is
/// bounded by serde_json's nesting limit (128) on the parse that produced the value.
fn whole_floats_to_integers(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    match value {
        Value::Number(n) if n.is_f64() => {
            let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() <= EXACT) else {
                return false;
            };
            // Exact: `f` is whole and within ±2^53.
            #[allow(clippy::cast_possible_truncation)]
            let i = f as i64;
            *value = Value::from(i);
            true
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, v| whole_floats_to_integers(v) | changed),
        Value::Object(map) => map
            .values_mut()
            .fold(false, |changed, v| whole_floats_to_integers(v) | changed),
        _ => false,
    }
}

fn between_backticks(text: &str) -> Option<String> {
    let start = text.find('`')? + 1;
    let len = text[start..].find('`')?;
    Some(text[start..start + len].to_owned())
}

/// `parent.name`, unless serde's path already ends in the name.
fn join_path(path: Option<&str>, name: Option<&str>) -> Option<String> {
    match (path, name) {
        (Some(p), Some(n)) if p == n || p.ends_with(&format!(".{n}")) => Some(p.to_owned()),
        (Some(p), Some(n)) => Some(format!("{p}.{n}")),
        (None, n) => n.map(str::to_owned),
        (p, None) => p.map(str::to_owned),
    }
}

fn json_error(path: &str, e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let text = e.to_string();
    let field = if path == "." || path.is_empty() {
        None
    } else {
        Some(path.to_owned())
    };
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("тело запроса не является корректным JSON в UTF-8: {text}"),
        ),
        Category::Data => {
            let (code, field, message) = if text.starts_with("unknown field") {
                let name = between_backticks(&text);
                let full = join_path(field.as_deref(), name.as_deref());
                (
                    "unknown_field",
                    full,
                    format!("неизвестное поле «{}»", name.unwrap_or_default()),
                )
            } else if text.starts_with("missing field") {
                let name = between_backticks(&text);
                let full = join_path(field.as_deref(), name.as_deref());
                (
                    "missing_field",
                    full,
                    format!(
                        "не заполнено обязательное поле «{}»",
                        name.unwrap_or_default()
                    ),
                )
            } else {
                (
                    "invalid_type",
                    field,
                    format!("неверный тип или значение: {text}"),
                )
            };
            let mut err = ApiError::new(StatusCode::BAD_REQUEST, code, message);
            if let Some(f) = field {
                err = err.with_field(&f);
            }
            err
        }
    }
}

/// A path parameter parsed as `T`; a bad one is a 404 (there is no such resource).
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<App> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, app).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(_) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "не найдено",
            )),
        }
    }
}

/// A query string parsed as `T`; a bad one is a 400 JSON error.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<App> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, app).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(e) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                e.body_text(),
            )),
        }
    }
}

/// The client's address (the TCP peer; behind a reverse proxy every client shares its address,
/// which the per-IP limits then apply to as a whole).
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<App> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _app: &App) -> Result<Self, ApiError> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        Ok(Self(ip))
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The session token a request carries (the bearer token, else the session cookie) and
/// whether it came as the cookie.
fn presented(headers: &HeaderMap) -> Option<(&str, bool)> {
    match bearer(headers) {
        Some(t) => Some((t, false)),
        None => cookie(headers, SESSION_COOKIE).map(|t| (t, true)),
    }
}

/// The hash of the session token a request carries, if any (valid or not). A login revokes
/// it, so that a token planted in the browser or left from before is never carried over.
pub(crate) fn presented_token_hash(headers: &HeaderMap) -> Option<[u8; 32]> {
    presented(headers).map(|(t, _)| token_hash(t))
}

/// How often a session's `last_seen` is written: a tenth of the idle limit, at most a minute,
/// so that a busy session does not cost a store write per request.
fn touch_every(idle_secs: u64) -> i64 {
    i64::try_from((idle_secs / 10).min(60)).unwrap_or(60)
}

/// A logged-in user: from `Authorization: Bearer <token>` or the session cookie. The session
/// must exist, be within its absolute lifetime (`expires_at`) and, unless "remember me", used
/// within the last `auth.session_idle_secs`; it must be of the user's current epoch (a
/// password or permission change voids older sessions), and the user's email confirmed. An
/// expired session is deleted on sight.
pub struct Authed {
    /// The user.
    pub user: User,
    /// The user's account.
    pub account: Account,
    /// The session's token hash (to revoke or keep it).
    pub token_hash: [u8; 32],
    /// True when authenticated by cookie (subject to the CSRF rules).
    pub via_cookie: bool,
}

impl FromRequestParts<App> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let Some((token, via_cookie)) = presented(&parts.headers) else {
            return Err(ApiError::unauthorized());
        };
        if via_cookie && !is_safe(&parts.method) && !super::origin_allowed(app, &parts.headers) {
            return Err(super::csrf_error());
        }
        let hash = token_hash(token);
        let store = app.store();
        let Some(session) = store.session(&hash)? else {
            return Err(ApiError::unauthorized());
        };
        let now = now_secs();
        let idle = app.config().auth.session_idle_secs;
        let idle_out = !session.remember
            && idle > 0
            && now - session.last_active() > i64::try_from(idle).unwrap_or(i64::MAX);
        if session.expires_at <= now || idle_out {
            store.delete_session(&hash)?;
            return Err(ApiError::unauthorized());
        }
        let Some(user) = store.user(session.user_id)? else {
            return Err(ApiError::unauthorized());
        };
        if user.session_epoch != session.epoch || !user.email_confirmed {
            return Err(ApiError::unauthorized());
        }
        let Some(account) = store.account(user.account_id)? else {
            return Err(ApiError::unauthorized());
        };
        if idle > 0 && now - session.last_active() >= touch_every(idle) {
            store.touch_session(&hash, now)?;
        }
        Ok(Self {
            user,
            account,
            token_hash: hash,
            via_cookie,
        })
    }
}

/// True for methods that change nothing.
pub(crate) fn is_safe(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The billing system: `Authorization: Bearer <operator.token>`, compared in constant time.
/// While the token is the shipped placeholder, the operator API is closed (403
/// `operator_token_unset`) unless the app runs in demo mode.
pub struct Operator;

impl FromRequestParts<App> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let configured = &app.config().operator.token;
        if configured == qorgan_config::PLACEHOLDER_SECRET && !app.options().demo {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "operator_token_unset",
                "operator.token still has the placeholder value; set a secret token in the config",
            ));
        }
        let given = bearer(&parts.headers).unwrap_or("");
        // Hash both sides so that the comparison's time does not depend on the lengths.
        let a = token_hash(given);
        let b = token_hash(configured);
        if bool::from(a.ct_eq(&b)) && !given.is_empty() {
            Ok(Self)
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "operator token required",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Amounts {
        amount: i64,
        ids: Vec<u64>,
    }

    #[test]
    fn whole_floats_are_integers_and_fractions_are_not() {
        let a: Amounts = parse_json(br#"{"amount": -877.0, "ids": [1, 2.0, 3e3]}"#).expect("whole");
        assert_eq!((a.amount, a.ids), (-877, vec![1, 2, 3000]));
        let e = parse_json::<Amounts>(br#"{"amount": 877.5, "ids": []}"#).expect_err("fraction");
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::BAD_REQUEST, "invalid_type")
        );
        // Beyond 2^53 a float no longer names one integer.
        let e = parse_json::<Amounts>(br#"{"amount": 1e300, "ids": []}"#).expect_err("huge");
        assert_eq!(e.code(), "invalid_type");
        let e = parse_json::<Amounts>(br#"{"amount": 1.0, "ids": [], "x": 1}"#).expect_err("extra");
        assert_eq!(e.code(), "unknown_field");
    }
}
