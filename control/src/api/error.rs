//! `ApiError`: every failure of the HTTP API as the JSON error object of CONTRACT §4,
//! `{"error": {"code", "message", "field"}}`. A 4xx carries the user's message; a 5xx is generic
//! and the details go to the log only.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ControlError;
use crate::validate::Rejection;

/// The error object's inner part.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A `snake_case` code that programs can match on.
    pub code: String,
    /// What went wrong, for a person (Russian).
    pub message: String,
    /// The request field at fault, when there is one.
    pub field: Option<String>,
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// An HTTP API failure: status, code, message, optional field; plus `Retry-After` for 429 and
/// an optional extra top-level member (the existing record of an idempotent 409).
/// Boxed so that `Result<_, ApiError>` stays small on the happy path.
#[derive(Debug)]
pub struct ApiError(Box<Repr>);

#[derive(Debug)]
struct Repr {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    retry_after: Option<u64>,
    extra: Option<(&'static str, serde_json::Value)>,
}

impl ApiError {
    /// An error with a status, a code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self(Box::new(Repr {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
            extra: None,
        }))
    }

    /// 400 for a field's bad value.
    pub fn field(field: &str, rejection: Rejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, rejection.code, rejection.message).with_field(field)
    }

    /// Names the field at fault.
    #[must_use]
    pub fn with_field(mut self, field: &str) -> Self {
        self.0.field = Some(field.to_owned());
        self
    }

    /// Adds `Retry-After` (seconds).
    #[must_use]
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.0.retry_after = Some(secs.max(1));
        self
    }

    /// Adds a top-level member beside `error`.
    #[must_use]
    pub fn with_extra(mut self, key: &'static str, value: serde_json::Value) -> Self {
        self.0.extra = Some((key, value));
        self
    }

    /// 401 without a valid session.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "требуется вход в личный кабинет",
        )
    }

    /// 429 with `Retry-After`.
    pub fn too_many(secs: u64) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            format!("слишком много попыток; повторите через {} с", secs.max(1)),
        )
        .with_retry_after(secs)
    }

    /// 500 without details (the cause is logged by the caller).
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "внутренняя ошибка; попробуйте позже",
        )
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    /// The code.
    pub fn code(&self) -> &'static str {
        self.0.code
    }
}

/// The message of `contract_not_matched`: where to find the contract number (seed Рисунок 8).
pub const CONTRACT_HINT: &str =
    "Договор с таким номером и ИИН/БИН не найден или данные не совпадают. \
Номер договора Вы можете посмотреть в счёт-фактуре за услуги: Раздел E, пункт 27.3 \
(invoice, Section E, item 27.3).";

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::AccountExists(_) => {
                Self::new(StatusCode::CONFLICT, "account_exists", "лицевой счёт уже заведён")
            }
            ControlError::ContractTaken { account_number } => Self::new(
                StatusCode::CONFLICT,
                "contract_taken",
                format!("этот номер договора уже принадлежит лицевому счёту {account_number}"),
            )
            .with_field("contract_number"),
            ControlError::NetworkOverlap { cidr, other_cidr, account_number } => Self::new(
                StatusCode::CONFLICT,
                "network_overlap",
                format!("сеть {cidr} пересекается с сетью {other_cidr} лицевого счёта {account_number}"),
            )
            .with_field("cidr"),
            ControlError::NotFound(what) => {
                Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what}: не найдено"))
            }
            ControlError::ContractNotMatched => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "contract_not_matched", CONTRACT_HINT)
                    .with_field("contract_number")
            }
            ControlError::AlreadyRegistered => Self::new(
                StatusCode::CONFLICT,
                "already_registered",
                "для этого договора личный кабинет уже зарегистрирован; воспользуйтесь входом или восстановлением пароля",
            ),
            ControlError::EmailTaken => {
                Self::new(StatusCode::CONFLICT, "email_taken", "этот email уже используется")
                    .with_field("email")
            }
            ControlError::TokenInvalid => Self::new(
                StatusCode::GONE,
                "token_invalid",
                "ссылка недействительна: она уже использована или её срок истёк",
            )
            .with_field("token"),
            ControlError::Conflict => Self::new(
                StatusCode::CONFLICT,
                "concurrent_change",
                "запись изменена другим запросом; повторите",
            ),
            ControlError::AlreadyRequested(_) => Self::new(
                StatusCode::CONFLICT,
                "already_requested",
                "заявка на отключение этой услуги уже подана и ещё не обработана",
            ),
            ControlError::TooManyOpen { max, .. } => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                format!("не больше {max} запросов статистики в очереди; дождитесь ответа на прежние"),
            ),
            ControlError::Duplicate { what, key } => Self::new(
                StatusCode::CONFLICT,
                "duplicate",
                format!("{what} {key} уже есть с другим содержимым"),
            ),
            ControlError::Gateway(e) => {
                tracing::warn!(error = %Chain(&e), "payment gateway unavailable");
                Self::new(
                    StatusCode::BAD_GATEWAY,
                    "gateway_unavailable",
                    "платёжный шлюз недоступен; попробуйте позже",
                )
            }
            other => {
                tracing::error!(error = %Chain(&other), "request failed");
                Self::internal()
            }
        }
    }
}

/// Displays an error with its whole `source()` chain.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cur = self.0.source();
        while let Some(e) = cur {
            write!(f, ": {e}")?;
            cur = e.source();
        }
        Ok(())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let r = *self.0;
        let mut body = serde_json::json!({
            "error": { "code": r.code, "message": r.message, "field": r.field }
        });
        if let (Some((k, v)), Some(obj)) = (r.extra, body.as_object_mut()) {
            obj.insert(k.to_owned(), v);
        }
        let mut resp = (r.status, axum::Json(body)).into_response();
        if let Some(secs) = r.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

/// The code a bare status gets when something below the handlers (routing, timeouts, limits)
/// answered without a JSON body.
pub(crate) fn code_for_status(status: StatusCode) -> (&'static str, &'static str) {
    match status {
        StatusCode::NOT_FOUND => ("not_found", "нет такого адреса API"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "метод не поддерживается по этому адресу",
        ),
        StatusCode::REQUEST_TIMEOUT => ("request_timeout", "запрос не уложился во время"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "тело запроса слишком большое"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "ожидается Content-Type: application/json",
        ),
        s if s.is_server_error() => ("internal_error", "внутренняя ошибка; попробуйте позже"),
        _ => ("bad_request", "некорректный запрос"),
    }
}
