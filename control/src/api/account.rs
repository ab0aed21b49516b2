//! Registration, sessions, passwords and the top bar (`/me`).

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use qorgan_config::CaptchaProvider;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{presented_token_hash, ApiJson, Authed, ClientIp, SESSION_COOKIE};
use super::rfc3339;
use crate::secrets::{generate_password, new_token, token_hash};
use crate::store::{NewOwner, Session, Throttle, TokenKind, User};
use crate::{mail, now_secs, validate, App, ControlError, LimitKind};

const NAME_MAX: usize = 200;

/// `POST /register` body: the seed's registration form.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// ФИО.
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub full_name: Option<String>,
    /// Company name.
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub company: Option<String>,
    /// Email: the welcome email goes there.
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    /// Mobile phone, KZ (`+7 7xx …`, `8 7xx …`).
    #[schema(pattern = r"^(?:\+7|8|7)(?:70[0-25-8]|747|76[0-4]|77[15-8]|785)[0-9]{7}$")]
    pub phone: String,
    /// № договора, as printed on the invoice (Section E, item 27.3).
    #[schema(
        max_length = 64,
        pattern = r"^[ №]*[0-9A-Za-z\u0400-\u0481\u048a-\u04ff/._-][0-9A-Za-z\u0400-\u0481\u048a-\u04ff/._№ -]*$"
    )]
    pub contract_number: String,
    /// ИИН/БИН, 12 digits.
    #[schema(pattern = r"^[0-9]{12}$")]
    pub iin_bin: String,
    /// reCAPTCHA response token (required when the captcha is on).
    #[schema(max_length = 4096)]
    pub captcha: Option<String>,
}

/// `POST /register` answer (seed Рисунок 5).
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisterResponse {
    /// The login: the account number.
    pub login: String,
    /// The success notice.
    pub message: String,
}

async fn verify_captcha(
    app: &App,
    token: Option<&str>,
    ip: std::net::IpAddr,
) -> Result<(), ApiError> {
    let c = &app.config().captcha;
    if c.provider == CaptchaProvider::None {
        return Ok(());
    }
    let failed = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "captcha_failed",
            "подтвердите, что Вы не робот",
        )
        .with_field("captcha")
    };
    let token = token
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 4096)
        .ok_or_else(failed)?;
    let form = [
        ("secret", c.secret.as_str()),
        ("response", token),
        ("remoteip", &ip.to_string()),
    ];
    let resp = app
        .http_client()
        .post(&c.verify_url)
        .form(&form)
        .send()
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "captcha verification unreachable");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "captcha_unavailable",
                "проверка капчи недоступна; попробуйте позже",
            )
        })?;
    #[derive(Deserialize)]
    struct Verdict {
        success: bool,
    }
    let verdict: Verdict = resp.json().await.map_err(|e| {
        tracing::warn!(error = %e, "captcha verification answered nonsense");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "captcha_unavailable",
            "проверка капчи недоступна; попробуйте позже",
        )
    })?;
    if verdict.success {
        Ok(())
    } else {
        Err(failed())
    }
}

/// `GET /captcha` answer: what the registration page needs to show the captcha widget. Only
/// public values: the secret never leaves the server.
#[derive(Debug, Serialize, ToSchema)]
pub struct CaptchaInfo {
    /// `none` (no widget: `POST /register` needs no `captcha`) or `recaptcha`.
    #[schema(example = "recaptcha")]
    pub provider: &'static str,
    /// The public site key for `grecaptcha.render` (empty with `none`).
    pub site_key: String,
    /// The widget script to load (empty with `none`); the page adds
    /// `render=explicit&onload=…` to its query.
    #[schema(example = "https://www.google.com/recaptcha/api.js")]
    pub script_url: String,
}

/// Whether registration needs a captcha, with its public site key and script (no session).
#[utoipa::path(get, path = "/api/v1/captcha", tag = "customer",
    responses((status = 200, body = CaptchaInfo)))]
pub(crate) async fn captcha(State(app): State<App>) -> Response {
    let c = &app.config().captcha;
    let info = match c.provider {
        CaptchaProvider::None => CaptchaInfo {
            provider: "none",
            site_key: String::new(),
            script_url: String::new(),
        },
        CaptchaProvider::Recaptcha => CaptchaInfo {
            provider: "recaptcha",
            site_key: c.site_key.clone(),
            script_url: c.script_url.clone(),
        },
    };
    let mut resp = Json(info).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// Registers the cabinet of a provisioned contract; the welcome email carries the password.
#[utoipa::path(post, path = "/api/v1/register", tag = "customer", request_body = RegisterRequest,
    responses(
        (status = 201, body = RegisterResponse),
        (status = 400, body = ErrorBody, description = "invalid field, captcha_failed, malformed body"),
        (status = 409, body = ErrorBody, description = "already_registered"),
        (status = 422, body = ErrorBody, description = "contract_not_matched"),
        (status = 429, body = ErrorBody, description = "too many registrations from this address"),
    ))]
pub(crate) async fn register(
    State(app): State<App>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>), ApiError> {
    app.rate_limit(LimitKind::Register, ip)
        .map_err(ApiError::too_many)?;
    let full_name = validate::optional_text(body.full_name.as_deref(), NAME_MAX)
        .map_err(|r| ApiError::field("full_name", r))?;
    let company = validate::optional_text(body.company.as_deref(), NAME_MAX)
        .map_err(|r| ApiError::field("company", r))?;
    let email = validate::email(&body.email).map_err(|r| ApiError::field("email", r))?;
    let phone = validate::phone(&body.phone).map_err(|r| ApiError::field("phone", r))?;
    let key = validate::contract_key(&body.contract_number)
        .map_err(|r| ApiError::field("contract_number", r))?;
    let (iin_bin, _) =
        validate::iin_bin(&body.iin_bin).map_err(|r| ApiError::field("iin_bin", r))?;
    verify_captcha(&app, body.captcha.as_deref(), ip).await?;

    let password = generate_password();
    let password_hash = app.hash_password(password.clone()).await?;
    let public_url = app.config().http.public_url.clone();
    let owner = NewOwner {
        email: email.clone(),
        full_name: full_name.clone(),
        phone,
        company,
        password_hash,
    };
    let (account, _user) = app.store().register(
        &key,
        &iin_bin,
        owner,
        |acc| mail::welcome(&email, &public_url, &acc.account_number, &password),
        now_secs(),
    )?;
    app.wake_mailer();
    app.metrics().registrations.inc();
    let greeting = match &full_name {
        Some(n) => format!("Уважаемый(ая) {n}, спасибо за регистрацию! "),
        None => "Спасибо за регистрацию! ".to_owned(),
    };
    Ok((
        StatusCode::CREATED,
        Json(RegisterResponse {
            message: format!(
                "{greeting}Регистрация прошла успешно! Ваш логин: {login}. Письмо с логином и паролем \
                 отправлено на e-mail, который Вы указали в форме регистрации. В целях безопасности \
                 рекомендуем Вам сменить пароль в разделе «Мой профиль» -> «Сменить пароль».",
                login = account.account_number
            ),
            login: account.account_number,
        }),
    ))
}

/// `POST /session` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The account number (owner) or a sub-user's email.
    #[schema(max_length = 254)]
    pub username: String,
    /// Password.
    #[schema(max_length = 128)]
    pub password: String,
    /// «Запомни меня»: a long-lived session.
    #[serde(default)]
    pub remember_me: bool,
}

/// `POST /session` answer; the same token is also set as the session cookie.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// Bearer token for API clients.
    pub token: String,
    /// RFC 3339.
    pub expires_at: String,
}

/// The login name of a user: the account number for the owner, the email for a sub-user.
pub(crate) fn login_of(app: &App, user: &User) -> Result<String, ApiError> {
    if user.is_owner() {
        let account = app
            .store()
            .account(user.account_id)?
            .ok_or(ControlError::NotFound("account"))?;
        Ok(account.account_number)
    } else {
        Ok(user.email.clone())
    }
}

fn find_login(app: &App, username: &str) -> Result<Option<User>, ApiError> {
    let name = username.trim();
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
        Ok(app.store().owner_by_account_number(name)?.map(|(_, u)| u))
    } else {
        Ok(app.store().user_by_email(&name.to_lowercase())?)
    }
}

/// Seconds until `t` unlocks, if it is locked now.
fn locked_for(t: &Throttle, now: i64) -> Option<u64> {
    (t.locked_until > now).then(|| u64::try_from(t.locked_until - now).unwrap_or(1))
}

/// Failures older than this start a new run.
const FAILURE_RUN_SECS: i64 = 3600;
/// Longest lock.
const MAX_LOCK_SECS: u64 = 86_400;

fn record_failure(app: &App, key: &str, threshold: u32, now: i64) -> Result<(), ApiError> {
    let store = app.store();
    let mut t = store.throttle(key)?;
    if t.locked_until <= now && now - t.last_failure > FAILURE_RUN_SECS {
        t.failures = 0;
    }
    t.failures = t.failures.saturating_add(1);
    t.last_failure = now;
    if t.failures >= threshold {
        let doublings = (t.failures - threshold).min(16);
        let secs = app
            .config()
            .auth
            .lockout_secs
            .saturating_mul(1u64 << doublings)
            .min(MAX_LOCK_SECS);
        t.locked_until = now + i64::try_from(secs).unwrap_or(86_400);
    }
    store.set_throttle(key, t)?;
    Ok(())
}

fn session_cookie(app: &App, token: &str, max_age: Option<u64>) -> HeaderValue {
    let mut c = format!("{SESSION_COOKIE}={token}; HttpOnly; SameSite=Lax; Path=/");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if app.config().http.secure_cookies {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c)
        .unwrap_or_else(|_| HeaderValue::from_static("qorgan_session=; Max-Age=0; Path=/"))
}

/// Logs in. Failures are throttled per login name and per source address: after
/// `auth.max_failed_logins` failures (× 4 for an address) the key is locked for
/// `auth.lockout_secs`, doubling with every further failure; a locked key gets 429 with
/// `Retry-After` without the password being checked.
///
/// Every login mints a new token (session fixation, RELIABILITY W3): a token the request
/// already carries (cookie or bearer) is never adopted, and once the password is right the
/// session it names, if any, is revoked.
#[utoipa::path(post, path = "/api/v1/session", tag = "customer", request_body = LoginRequest,
    responses(
        (status = 200, body = LoginResponse, headers(("Set-Cookie" = String, description = "qorgan_session; HttpOnly; SameSite=Lax"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody, description = "invalid_credentials"),
        (status = 403, body = ErrorBody, description = "email_unconfirmed"),
        (status = 429, body = ErrorBody, description = "too_many_requests, with Retry-After"),
    ))]
pub(crate) async fn login(
    State(app): State<App>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    if body.username.chars().count() > validate::EMAIL_MAX {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "too_long",
            "имя пользователя слишком длинное",
        )
        .with_field("username"));
    }
    let now = now_secs();
    let store = app.store();
    let auth = &app.config().auth;
    let user_key = format!("u:{}", body.username.trim().to_lowercase());
    let ip_key = format!("ip:{ip}");
    for key in [&user_key, &ip_key] {
        if let Some(secs) = locked_for(&store.throttle(key)?, now) {
            app.metrics().logins.with_label_values(&["throttled"]).inc();
            return Err(ApiError::too_many(secs));
        }
    }
    let user = find_login(&app, &body.username)?;
    let password_ok = body.password.chars().count() <= validate::PASSWORD_MAX_CHARS;
    let ok = app
        .verify_password(
            if password_ok {
                body.password.clone()
            } else {
                String::new()
            },
            user.as_ref().map(|u| u.password_hash.clone()),
        )
        .await?
        && password_ok;
    let Some(user) = user.filter(|_| ok) else {
        record_failure(&app, &user_key, auth.max_failed_logins, now)?;
        record_failure(
            &app,
            &ip_key,
            auth.max_failed_logins
                .saturating_mul(app.options().ip_failure_factor),
            now,
        )?;
        app.metrics().logins.with_label_values(&["failed"]).inc();
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "неверное имя пользователя или пароль",
        ));
    };
    if !user.email_confirmed {
        app.metrics()
            .logins
            .with_label_values(&["unconfirmed"])
            .inc();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "email_unconfirmed",
            "email не подтверждён: перейдите по ссылке из письма",
        ));
    }
    store.clear_throttle(&user_key)?;
    if let Some(previous) = presented_token_hash(&headers) {
        store.delete_session(&previous)?;
    }
    let ttl = if body.remember_me {
        auth.remember_ttl_secs
    } else {
        auth.session_ttl_secs
    };
    let (token, hash) = new_token();
    let expires_at = now + i64::try_from(ttl).unwrap_or(i64::MAX / 4);
    store.create_session(
        hash,
        &Session {
            user_id: user.id,
            epoch: user.session_epoch,
            created_at: now,
            expires_at,
            remember: body.remember_me,
            last_seen: now,
        },
    )?;
    app.metrics().logins.with_label_values(&["ok"]).inc();
    let cookie = session_cookie(&app, &token, body.remember_me.then_some(ttl));
    let mut resp = Json(LoginResponse {
        token,
        expires_at: rfc3339(expires_at),
    })
    .into_response();
    resp.headers_mut().insert(header::SET_COOKIE, cookie);
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Logs out: revokes this session and clears the cookie.
#[utoipa::path(delete, path = "/api/v1/session", tag = "customer", security(("session" = [])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "csrf_rejected")))]
pub(crate) async fn logout(State(app): State<App>, authed: Authed) -> Result<Response, ApiError> {
    app.store().delete_session(&authed.token_hash)?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let mut clear = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0");
    if app.config().http.secure_cookies {
        clear.push_str("; Secure");
    }
    if let Ok(v) = HeaderValue::from_str(&clear) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

/// `POST /password/forgot` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgotRequest {
    /// Account number or sub-user email.
    #[schema(max_length = 254)]
    pub username: String,
}

/// A plain acknowledgement.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// What happens next.
    pub message: String,
}

/// Starts a password reset. Always 202, whether or not the login exists (no account probing);
/// when it does, an email with a single-use link goes to the user's address.
#[utoipa::path(post, path = "/api/v1/password/forgot", tag = "customer", request_body = ForgotRequest,
    responses((status = 202, body = Accepted), (status = 400, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn forgot(
    State(app): State<App>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<ForgotRequest>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    app.rate_limit(LimitKind::Forgot, ip)
        .map_err(ApiError::too_many)?;
    if body.username.chars().count() > validate::EMAIL_MAX {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "too_long",
            "имя пользователя слишком длинное",
        )
        .with_field("username"));
    }
    if let Some(user) = find_login(&app, &body.username)?.filter(|u| u.email_confirmed) {
        let (token, hash) = new_token();
        let ttl = app.config().auth.reset_ttl_secs;
        let now = now_secs();
        let email = mail::reset(&user.email, &app.config().http.public_url, &token, ttl);
        app.store().create_reset(
            user.id,
            hash,
            now + i64::try_from(ttl).unwrap_or(3600),
            email,
            now,
        )?;
        app.wake_mailer();
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            message: "Если такой пользователь есть, на его email отправлено письмо со ссылкой для смены пароля."
                .to_owned(),
        }),
    ))
}

/// `POST /password/reset` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// The token from the emailed link.
    #[schema(max_length = 128)]
    pub token: String,
    /// The new password (≥ 10 characters, not the login).
    #[schema(min_length = 10, max_length = 128)]
    pub new_password: String,
}

/// Sets a new password with a reset token; every session of the user is revoked.
#[utoipa::path(post, path = "/api/v1/password/reset", tag = "customer", request_body = ResetRequest,
    responses((status = 204), (status = 400, body = ErrorBody, description = "weak_password"),
        (status = 410, body = ErrorBody, description = "token_invalid")))]
pub(crate) async fn reset(
    State(app): State<App>,
    ApiJson(body): ApiJson<ResetRequest>,
) -> Result<StatusCode, ApiError> {
    if body.token.len() > 128 {
        return Err(ControlError::TokenInvalid.into());
    }
    // Length rules first (they do not depend on whose token it is), the login rule below.
    validate::password(&body.new_password, "").map_err(|r| ApiError::field("new_password", r))?;
    let hash = token_hash(body.token.trim());
    let user = app
        .store()
        .valid_token(TokenKind::Reset, &hash, now_secs())?;
    let login = login_of(&app, &user)?;
    validate::password(&body.new_password, &login)
        .map_err(|r| ApiError::field("new_password", r))?;
    let new_hash = app.hash_password(body.new_password).await?;
    app.store().reset_password(&hash, new_hash, now_secs())?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /me/password` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    /// The current password.
    #[schema(max_length = 128)]
    pub current_password: String,
    /// The new password (≥ 10 characters, not the login).
    #[schema(min_length = 10, max_length = 128)]
    pub new_password: String,
}

/// Changes the caller's password («Мой профиль» → «Сменить пароль»). Every session of the user
/// is revoked, the caller's own token too: the caller goes on with a fresh token, sent as the
/// session cookie (same lifetime and "remember me" as the old one), so the browser stays
/// logged in while a stolen copy of the old token is dead. A bearer client logs in again.
#[utoipa::path(post, path = "/api/v1/me/password", tag = "customer", request_body = ChangePasswordRequest,
    security(("session" = [])),
    responses((status = 204, headers(("Set-Cookie" = String, description = "the fresh qorgan_session; the old token is revoked"))),
        (status = 400, body = ErrorBody, description = "weak_password"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "wrong_password")))]
pub(crate) async fn change_password(
    State(app): State<App>,
    authed: Authed,
    ApiJson(body): ApiJson<ChangePasswordRequest>,
) -> Result<Response, ApiError> {
    let login = login_of(&app, &authed.user)?;
    validate::password(&body.new_password, &login)
        .map_err(|r| ApiError::field("new_password", r))?;
    let current_ok = body.current_password.chars().count() <= validate::PASSWORD_MAX_CHARS
        && app
            .verify_password(
                body.current_password,
                Some(authed.user.password_hash.clone()),
            )
            .await?;
    if !current_ok {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong_password",
            "текущий пароль введён неверно",
        )
        .with_field("current_password"));
    }
    let new_hash = app.hash_password(body.new_password).await?;
    let store = app.store();
    let old = store
        .session(&authed.token_hash)?
        .ok_or_else(ApiError::unauthorized)?;
    let now = now_secs();
    let (token, hash) = new_token();
    let fresh = store.change_password(
        authed.user.id,
        new_hash,
        &authed.token_hash,
        (
            hash,
            Session {
                created_at: now,
                last_seen: now,
                ..old
            },
        ),
    )?;
    let max_age = fresh
        .remember
        .then(|| u64::try_from(fresh.expires_at - now).unwrap_or(0));
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&app, &token, max_age));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// The user part of `/me`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeUser {
    /// User id.
    pub id: u64,
    /// Email.
    pub email: String,
    /// ФИО (owner) or first and last name (sub-user).
    pub full_name: Option<String>,
    /// True for the account's owner.
    pub is_owner: bool,
    /// May add users.
    pub can_manage_users: bool,
}

/// `GET /me`: the top bar (seed Рисунок 10).
#[derive(Debug, Serialize, ToSchema)]
pub struct MeResponse {
    /// Лицевой счёт №.
    pub account_number: String,
    /// № договора.
    pub contract_number: String,
    /// Баланс, tiyn.
    pub balance_tiyn: i64,
    /// The logged-in user.
    pub user: MeUser,
}

/// The top bar: account number, contract number, balance, the user's flags.
#[utoipa::path(get, path = "/api/v1/me", tag = "customer", security(("session" = [])),
    responses((status = 200, body = MeResponse), (status = 401, body = ErrorBody)))]
pub(crate) async fn me(
    State(app): State<App>,
    authed: Authed,
) -> Result<Json<MeResponse>, ApiError> {
    let u = &authed.user;
    let full_name = u.full_name.clone().or_else(|| {
        let parts: Vec<&str> = [u.first_name.as_deref(), u.last_name.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    });
    Ok(Json(MeResponse {
        account_number: authed.account.account_number.clone(),
        contract_number: authed.account.contract_number.clone(),
        balance_tiyn: app.store().balance(authed.account.id)?,
        user: MeUser {
            id: u.id,
            email: u.email.clone(),
            full_name,
            is_owner: u.is_owner(),
            can_manage_users: u.can_manage_users,
        },
    }))
}
