//! The DNS filter of the cabinet (seed §5.2.5 "DNS-фильтрация", CONTRACT §4 `/dns-filter*`):
//! settings, own block and allow lists, networks, statistics and the audit log; the operator's
//! view of an account's filter; and the node endpoints resolver nodes pull policy from.
//!
//! Every change is stored with its audit entry and then published to the resolver before the
//! answer leaves: when the client sees `200`, the resolver already enforces the change.
//! Sub-users see and edit the filter like the owner (seed: users act for the account).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use qorgan_config::BlockModeName;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::billing::{query_period, today, PeriodQuery};
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, Authed, Operator};
use super::operator::NetworkView;
use super::rfc3339;
use crate::filter::{AuditEntry, FilterSettings, ListKind, StoredList};
use crate::policy::{compile_list, EditedList, LineError, ListProblem, MAX_OWN_RULES};
use crate::store::{Account, User};
use crate::usage::ALMATY_OFFSET_SECS;
use crate::{now_secs, App};

/// Audit entries shown at most.
const AUDIT_MAX: usize = 200;
/// Top blocked domains shown.
const TOP_SHOWN: usize = 20;
/// Rejected lines reported at most (the count is always exact).
const REJECTED_SHOWN: usize = 1000;

/// The filter settings as the API shows them.
#[derive(Debug, Serialize, ToSchema)]
pub struct FilterView {
    /// Filtering on or off.
    pub enabled: bool,
    /// Enabled categories.
    pub categories: Vec<String>,
    /// `nxdomain`, `null_ip`, `refused` or `custom_ip`.
    #[schema(value_type = BlockMode)]
    pub block_mode: BlockModeName,
    /// Block page addresses (custom_ip).
    pub custom_ip: Vec<String>,
    /// Rules in the own block list.
    pub blocklist_rules: u64,
    /// Rules in the own allow list.
    pub allowlist_rules: u64,
    /// Last change (RFC 3339), `null` while the account has the defaults.
    pub updated_at: Option<String>,
    /// Queries per second the account's networks may send (set by the operator); 0 = no limit.
    pub qps_limit: u32,
}

/// `PUT /operator/accounts/{account_number}/dns-filter/limits` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutLimits {
    /// Queries per second the account's networks may send; 0 = no limit; at most 10,000,000.
    #[schema(maximum = 10_000_000)]
    pub qps_limit: u32,
}

/// How blocked names are answered (the schema of `block_mode`; the config crate's
/// `BlockModeName` has no schema of its own).
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // only its schema is used
enum BlockMode {
    Nxdomain,
    NullIp,
    Refused,
    CustomIp,
}

/// `PUT /dns-filter` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutFilter {
    /// Filtering on or off.
    pub enabled: bool,
    /// Categories to enable (names from `GET /dns-filter/categories`).
    pub categories: Vec<String>,
    /// `nxdomain`, `null_ip`, `refused` or `custom_ip`.
    #[schema(value_type = BlockMode)]
    pub block_mode: BlockModeName,
    /// Block page addresses: at most one IPv4 and one IPv6; required for `custom_ip`.
    #[serde(default)]
    #[schema(max_items = 2)]
    pub custom_ip: Vec<String>,
}

/// One rejected line of an uploaded list.
#[derive(Debug, Serialize, ToSchema)]
pub struct LineErrorView {
    /// 1-based line number.
    pub line: u32,
    /// The line (cut at 200 characters).
    pub text: String,
    /// Why it was rejected.
    pub reason: String,
}

impl From<&LineError> for LineErrorView {
    fn from(e: &LineError) -> Self {
        Self {
            line: e.line,
            text: e.text.clone(),
            reason: e.reason.clone(),
        }
    }
}

/// The answer to a list upload.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListSaved {
    /// Rules kept and now enforced.
    pub rules: u64,
    /// Lines rejected (at most 1,000 shown).
    pub rejected: Vec<LineErrorView>,
    /// How many lines were rejected in all.
    pub rejected_count: usize,
}

/// `?strict=true` on a list upload: any rejected line rejects the whole upload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrictQuery {
    /// Reject the whole upload when a line is rejected.
    #[serde(default)]
    pub strict: bool,
}

/// A category of the lists catalog.
#[derive(Debug, Serialize, ToSchema)]
pub struct CategoryView {
    /// Folder name (`ads`, `malware`, ...).
    pub name: String,
    /// Distinct domain names listed.
    pub domains: u64,
    /// Wildcard/regex rules.
    pub patterns: u64,
}

/// `GET /dns-filter/categories` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct CategoriesView {
    /// Every category, in name order.
    pub categories: Vec<CategoryView>,
}

/// `GET /dns-filter/networks` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct NetworksView {
    /// The networks mapped to the account.
    pub networks: Vec<NetworkView>,
}

/// One day of statistics.
#[derive(Debug, Serialize, ToSchema)]
pub struct DayStats {
    /// The day (Asia/Almaty).
    pub date: String,
    /// Queries.
    pub queries: u64,
    /// Blocked.
    pub blocked: u64,
}

/// One hour of statistics.
#[derive(Debug, Serialize, ToSchema)]
pub struct HourStats {
    /// The hour's start, RFC 3339 in +05:00.
    pub hour: String,
    /// Queries.
    pub queries: u64,
    /// Blocked.
    pub blocked: u64,
}

/// Blocked queries of one category (`own_blocklist` for the account's own list).
#[derive(Debug, Serialize, ToSchema)]
pub struct CategoryStats {
    /// Category name.
    pub category: String,
    /// Blocked queries.
    pub blocked: u64,
}

/// A blocked domain and how often.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopDomain {
    /// The name.
    pub domain: String,
    /// Blocked queries (an upper bound within the sketch's error; exact for the top names).
    pub count: u64,
}

/// `GET /dns-filter/stats` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsView {
    /// First day.
    pub from: String,
    /// Last day.
    pub to: String,
    /// Queries in the period.
    pub queries: u64,
    /// Blocked in the period.
    pub blocked: u64,
    /// Every day of the period, zeros included.
    pub days: Vec<DayStats>,
    /// Hours with queries.
    pub hours: Vec<HourStats>,
    /// Blocked per category.
    pub by_category: Vec<CategoryStats>,
    /// Most blocked domains.
    pub top_blocked: Vec<TopDomain>,
}

/// One audit entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    /// RFC 3339.
    pub at: String,
    /// The account number (owner) or the sub-user's email.
    pub user: String,
    /// `settings`, `blocklist` or `allowlist`.
    pub action: String,
    /// What changed.
    pub summary: String,
}

/// `GET /dns-filter/audit` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditListView {
    /// Newest first.
    pub entries: Vec<AuditView>,
}

fn settings_of(app: &App, account: &Account) -> Result<FilterSettings, ApiError> {
    Ok(app
        .store()
        .filters()
        .settings(account.id)?
        .unwrap_or_else(|| FilterSettings::defaults(&app.config().default_policy)))
}

fn filter_view(app: &App, account: &Account) -> Result<FilterView, ApiError> {
    let s = settings_of(app, account)?;
    let filters = app.store().filters();
    Ok(FilterView {
        enabled: s.enabled,
        categories: s.categories,
        block_mode: s.block_mode,
        custom_ip: s.custom_ip.iter().map(ToString::to_string).collect(),
        blocklist_rules: filters.list(account.id, ListKind::Blocklist)?.rules,
        allowlist_rules: filters.list(account.id, ListKind::Allowlist)?.rules,
        updated_at: s.updated_at.map(rfc3339),
        qps_limit: s.qps_limit,
    })
}

fn user_label(account: &Account, user: &User) -> String {
    if user.is_owner() {
        account.account_number.clone()
    } else {
        user.email.clone()
    }
}

fn audit_entry(
    app: &App,
    authed: &Authed,
    action: ListOrSettings,
    summary: String,
) -> Result<AuditEntry, ApiError> {
    Ok(AuditEntry {
        id: app.store().filters().next_audit_id()?,
        at: now_secs(),
        user_id: authed.user.id,
        user: user_label(&authed.account, &authed.user),
        action: action.as_str().to_owned(),
        summary,
    })
}

#[derive(Clone, Copy)]
enum ListOrSettings {
    Settings,
    List(ListKind),
}

impl ListOrSettings {
    fn as_str(self) -> &'static str {
        match self {
            Self::Settings => "settings",
            Self::List(k) => k.as_str(),
        }
    }
}

/// "1 правило", "3 правила", "5 правил", "21 правило".
fn rules_ru(n: u64) -> String {
    let word = match (n % 10, n % 100) {
        (1, r) if r != 11 => "правило",
        (2..=4, r) if !(12..=14).contains(&r) => "правила",
        _ => "правил",
    };
    format!("{n} {word}")
}

fn mode_name(m: BlockModeName) -> &'static str {
    match m {
        BlockModeName::Nxdomain => "nxdomain",
        BlockModeName::NullIp => "null_ip",
        BlockModeName::Refused => "refused",
        BlockModeName::CustomIp => "custom_ip",
    }
}

/// "фильтр выключен; категории: +adult −ads; режим: nxdomain → null_ip".
fn settings_summary(old: &FilterSettings, new: &FilterSettings) -> String {
    let mut parts = Vec::new();
    if old.enabled != new.enabled {
        parts.push(if new.enabled {
            "фильтр включён".to_owned()
        } else {
            "фильтр выключен".to_owned()
        });
    }
    let added: Vec<String> = new
        .categories
        .iter()
        .filter(|c| !old.categories.contains(c))
        .map(|c| format!("+{c}"))
        .collect();
    let removed: Vec<String> = old
        .categories
        .iter()
        .filter(|c| !new.categories.contains(c))
        .map(|c| format!("−{c}"))
        .collect();
    if !added.is_empty() || !removed.is_empty() {
        parts.push(format!(
            "категории: {}",
            [added, removed].concat().join(" ")
        ));
    }
    if old.block_mode != new.block_mode {
        parts.push(format!(
            "режим: {} → {}",
            mode_name(old.block_mode),
            mode_name(new.block_mode)
        ));
    }
    if old.custom_ip != new.custom_ip {
        let ips: Vec<String> = new.custom_ip.iter().map(ToString::to_string).collect();
        parts.push(format!("адрес страницы блокировки: {}", ips.join(", ")));
    }
    if parts.is_empty() {
        "без изменений".to_owned()
    } else {
        parts.join("; ")
    }
}

/// The account's DNS filter settings.
#[utoipa::path(get, path = "/api/v1/dns-filter", tag = "customer", security(("session" = [])),
    responses((status = 200, body = FilterView), (status = 401, body = ErrorBody)))]
pub(crate) async fn get_filter(
    State(app): State<App>,
    authed: Authed,
) -> Result<Json<FilterView>, ApiError> {
    Ok(Json(filter_view(&app, &authed.account)?))
}

/// Changes the filter settings; enforced by the resolver when this answers.
#[utoipa::path(put, path = "/api/v1/dns-filter", tag = "customer", security(("session" = [])),
    request_body = PutFilter,
    responses((status = 200, body = FilterView),
        (status = 400, body = ErrorBody, description = "unknown_category, invalid_custom_ip, custom_ip_required"),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn put_filter(
    State(app): State<App>,
    authed: Authed,
    ApiJson(body): ApiJson<PutFilter>,
) -> Result<Json<FilterView>, ApiError> {
    let catalog = app.policy().snapshots().catalog();
    let mut categories: Vec<String> = Vec::new();
    for c in &body.categories {
        let c = c.trim();
        if catalog.category_index(c).is_none() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "unknown_category",
                format!("категории «{c}» нет; список: GET /api/v1/dns-filter/categories"),
            )
            .with_field("categories"));
        }
        if !categories.iter().any(|k| k == c) {
            categories.push(c.to_owned());
        }
    }
    let mut custom_ip: Vec<IpAddr> = Vec::new();
    for ip in &body.custom_ip {
        let parsed: IpAddr = ip.trim().parse().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_custom_ip",
                format!("«{ip}» не IPv4- или IPv6-адрес"),
            )
            .with_field("custom_ip")
        })?;
        if custom_ip.iter().any(|o| o.is_ipv4() == parsed.is_ipv4()) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_custom_ip",
                "не больше одного IPv4- и одного IPv6-адреса",
            )
            .with_field("custom_ip"));
        }
        custom_ip.push(parsed);
    }
    if body.block_mode == BlockModeName::CustomIp && custom_ip.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "custom_ip_required",
            "для режима custom_ip укажите адрес страницы блокировки",
        )
        .with_field("custom_ip"));
    }
    let old = settings_of(&app, &authed.account)?;
    let new = FilterSettings {
        enabled: body.enabled,
        categories,
        block_mode: body.block_mode,
        custom_ip,
        updated_at: Some(now_secs()),
        qps_limit: old.qps_limit,
    };
    let entry = audit_entry(
        &app,
        &authed,
        ListOrSettings::Settings,
        settings_summary(&old, &new),
    )?;
    app.store()
        .filters()
        .save_settings(authed.account.id, &new, entry)?;
    app.publish_policy(authed.account.id, None)?;
    Ok(Json(filter_view(&app, &authed.account)?))
}

/// The account's own list as `text/plain`.
fn list_response(app: &App, authed: &Authed, kind: ListKind) -> Result<Response, ApiError> {
    let stored = app.store().filters().list(authed.account.id, kind)?;
    let mut resp = stored.text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}

/// The own block list as text.
#[utoipa::path(get, path = "/api/v1/dns-filter/blocklist", tag = "customer", security(("session" = [])),
    responses((status = 200, body = String, content_type = "text/plain"), (status = 401, body = ErrorBody)))]
pub(crate) async fn get_blocklist(
    State(app): State<App>,
    authed: Authed,
) -> Result<Response, ApiError> {
    list_response(&app, &authed, ListKind::Blocklist)
}

/// The own allow list as text.
#[utoipa::path(get, path = "/api/v1/dns-filter/allowlist", tag = "customer", security(("session" = [])),
    responses((status = 200, body = String, content_type = "text/plain"), (status = 401, body = ErrorBody)))]
pub(crate) async fn get_allowlist(
    State(app): State<App>,
    authed: Authed,
) -> Result<Response, ApiError> {
    list_response(&app, &authed, ListKind::Allowlist)
}

/// Replaces the own block list (text, one rule a line, any supported list format).
#[utoipa::path(put, path = "/api/v1/dns-filter/blocklist", tag = "customer", security(("session" = [])),
    params(("strict" = Option<bool>, Query, description = "reject the whole upload when a line is rejected")),
    request_body(content = String, content_type = "text/plain"),
    responses((status = 200, body = ListSaved),
        (status = 400, body = ErrorBody, description = "invalid_list (binary, not UTF-8), list_rejected (strict)"),
        (status = 413, body = ErrorBody, description = "list_too_large"),
        (status = 415, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn put_blocklist(
    State(app): State<App>,
    authed: Authed,
    ApiQuery(q): ApiQuery<StrictQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ListSaved>, ApiError> {
    put_list(app, authed, ListKind::Blocklist, q.strict, &headers, body).await
}

/// Replaces the own allow list (text, one rule a line, any supported list format).
#[utoipa::path(put, path = "/api/v1/dns-filter/allowlist", tag = "customer", security(("session" = [])),
    params(("strict" = Option<bool>, Query, description = "reject the whole upload when a line is rejected")),
    request_body(content = String, content_type = "text/plain"),
    responses((status = 200, body = ListSaved),
        (status = 400, body = ErrorBody, description = "invalid_list (binary, not UTF-8), list_rejected (strict)"),
        (status = 413, body = ErrorBody, description = "list_too_large"),
        (status = 415, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn put_allowlist(
    State(app): State<App>,
    authed: Authed,
    ApiQuery(q): ApiQuery<StrictQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ListSaved>, ApiError> {
    put_list(app, authed, ListKind::Allowlist, q.strict, &headers, body).await
}

fn invalid_list(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_list", message)
}

async fn put_list(
    app: App,
    authed: Authed,
    kind: ListKind,
    strict: bool,
    headers: &HeaderMap,
    body: Body,
) -> Result<Json<ListSaved>, ApiError> {
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if essence.as_deref() != Some("text/plain") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "ожидается Content-Type: text/plain; charset=utf-8 (одно правило на строку)",
        ));
    }
    let limit = app.config().http.max_list_bytes;
    let bytes = super::extract::read_body(body, limit, || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "list_too_large",
            format!("список больше {limit} байт"),
        )
    })
    .await?;
    if bytes.contains(&0) {
        return Err(invalid_list("это не текстовый список (двоичные данные)"));
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| invalid_list("список должен быть текстом в UTF-8"))?
        .to_owned();
    let compiled =
        tokio::task::spawn_blocking(move || compile_list(kind, &text).map(|c| (c, text)))
            .await
            .map_err(|_| ApiError::internal())?;
    let (compiled, text) = compiled.map_err(|p| match p {
        ListProblem::TooManyRules(n) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "list_too_large",
            format!("в списке {n} правил; допускается не больше {MAX_OWN_RULES}"),
        ),
        ListProblem::Compile(reason) => invalid_list(format!("список не собран: {reason}")),
    })?;
    if strict && !compiled.rejected.is_empty() {
        let lines: Vec<String> = compiled
            .rejected
            .iter()
            .take(20)
            .map(|e| format!("строка {}: {}", e.line, e.reason))
            .collect();
        let first = compiled.rejected.first().map_or(0, |e| e.line);
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "list_rejected",
            format!(
                "{} строк отклонено, список не сохранён: {}",
                compiled.rejected.len(),
                lines.join("; ")
            ),
        )
        .with_field(&format!("line {first}"))
        .with_extra(
            "rejected",
            serde_json::to_value(
                compiled
                    .rejected
                    .iter()
                    .take(REJECTED_SHOWN)
                    .map(LineErrorView::from)
                    .collect::<Vec<_>>(),
            )
            .unwrap_or_default(),
        ));
    }
    let filters = app.store().filters();
    let before = filters.list(authed.account.id, kind)?.rules;
    let rules = u64::try_from(compiled.rules).unwrap_or(u64::MAX);
    let stored = StoredList {
        text,
        rules,
        updated_at: now_secs(),
    };
    let entry = audit_entry(
        &app,
        &authed,
        ListOrSettings::List(kind),
        format!("{} (было {before})", rules_ru(rules)),
    )?;
    filters.save_list(authed.account.id, kind, &stored, entry)?;
    app.publish_policy(
        authed.account.id,
        Some(EditedList {
            kind,
            text: &stored.text,
            set: &compiled.set,
        }),
    )?;
    Ok(Json(ListSaved {
        rules,
        rejected_count: compiled.rejected.len(),
        rejected: compiled
            .rejected
            .iter()
            .take(REJECTED_SHOWN)
            .map(LineErrorView::from)
            .collect(),
    }))
}

/// The categories of the lists catalog with their sizes.
#[utoipa::path(get, path = "/api/v1/dns-filter/categories", tag = "customer", security(("session" = [])),
    responses((status = 200, body = CategoriesView), (status = 401, body = ErrorBody)))]
pub(crate) async fn categories(
    State(app): State<App>,
    _authed: Authed,
) -> Result<Json<CategoriesView>, ApiError> {
    let catalog = app.policy().snapshots().catalog();
    Ok(Json(CategoriesView {
        categories: catalog
            .categories()
            .iter()
            .map(|c| CategoryView {
                name: c.name.clone(),
                domains: c.domains,
                patterns: c.patterns,
            })
            .collect(),
    }))
}

/// The networks mapped to the account (the operator maps them).
#[utoipa::path(get, path = "/api/v1/dns-filter/networks", tag = "customer", security(("session" = [])),
    responses((status = 200, body = NetworksView), (status = 401, body = ErrorBody)))]
pub(crate) async fn networks(
    State(app): State<App>,
    authed: Authed,
) -> Result<Json<NetworksView>, ApiError> {
    Ok(Json(NetworksView {
        networks: app
            .store()
            .networks(authed.account.id)?
            .iter()
            .map(NetworkView::from)
            .collect(),
    }))
}

/// Days since the epoch of a date.
fn epoch_day(d: time::Date) -> i64 {
    i64::from(d.to_julian_day()) - 2_440_588
}

/// The period's first and last second (unix), Asia/Almaty days.
fn period_secs(period: crate::billing::Period) -> (i64, i64) {
    let (first, last) = (epoch_day(period.from), epoch_day(period.to));
    (
        first * 86_400 - ALMATY_OFFSET_SECS,
        (last + 1) * 86_400 - ALMATY_OFFSET_SECS,
    )
}

/// Queries and blocked queries of every day of the period (zeros included), Asia/Almaty.
pub(crate) fn daily(
    app: &App,
    account: crate::store::Id,
    period: crate::billing::Period,
) -> Result<Vec<DayStats>, ApiError> {
    let (first, last) = (epoch_day(period.from), epoch_day(period.to));
    let (start, end) = period_secs(period);
    let mut days: BTreeMap<i64, (u64, u64)> = (first..=last).map(|d| (d, (0, 0))).collect();
    for (hour, b) in &app.store().filters().usage(account, start, end)? {
        let e = days
            .entry((hour + ALMATY_OFFSET_SECS).div_euclid(86_400))
            .or_default();
        e.0 += b.queries;
        e.1 += b.blocked;
    }
    Ok(days
        .into_iter()
        .map(|(d, (queries, blocked))| DayStats {
            date: time::Date::from_julian_day(i32::try_from(d + 2_440_588).unwrap_or_default())
                .map(|d| d.to_string())
                .unwrap_or_default(),
            queries,
            blocked,
        })
        .collect())
}

/// Query statistics for a period (default: the last 7 days, Asia/Almaty).
#[utoipa::path(get, path = "/api/v1/dns-filter/stats", tag = "customer", security(("session" = [])),
    params(("from" = Option<String>, Query, format = Date, description = "first day, ISO; default 6 days before `to`"),
        ("to" = Option<String>, Query, format = Date, description = "last day, ISO; default today")),
    responses((status = 200, body = StatsView), (status = 400, body = ErrorBody, description = "bad_period, bad_date"),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn stats(
    State(app): State<App>,
    authed: Authed,
    ApiQuery(q): ApiQuery<PeriodQuery>,
) -> Result<Json<StatsView>, ApiError> {
    let default_from = match &q.from {
        Some(_) => None,
        None => {
            let to = match q.to.as_deref() {
                Some(t) => {
                    crate::billing::parse_date("to", t).map_err(|r| ApiError::field("to", r))?
                }
                None => today(),
            };
            Some(to.saturating_sub(time::Duration::days(6)).to_string())
        }
    };
    let period = query_period(
        q.from.as_deref().or(default_from.as_deref()),
        q.to.as_deref(),
        false,
    )?;
    let (first, last) = (epoch_day(period.from), epoch_day(period.to));
    let days = daily(&app, authed.account.id, period)?;
    let filters = app.store().filters();
    let (start, end) = period_secs(period);
    let mut by_category: BTreeMap<String, u64> = BTreeMap::new();
    let mut hours = Vec::new();
    let offset =
        time::UtcOffset::from_whole_seconds(i32::try_from(ALMATY_OFFSET_SECS).unwrap_or_default())
            .unwrap_or(time::UtcOffset::UTC);
    for (hour, b) in &filters.usage(authed.account.id, start, end)? {
        for (c, n) in &b.by_category {
            *by_category.entry(c.clone()).or_default() += n;
        }
        if b.blocked_own > 0 {
            *by_category.entry("own_blocklist".to_owned()).or_default() += b.blocked_own;
        }
        let at = time::OffsetDateTime::from_unix_timestamp(*hour)
            .map(|t| t.to_offset(offset))
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        hours.push(HourStats {
            hour: at,
            queries: b.queries,
            blocked: b.blocked,
        });
    }
    let mut by_category: Vec<CategoryStats> = by_category
        .into_iter()
        .map(|(category, blocked)| CategoryStats { category, blocked })
        .collect();
    by_category.sort_by(|a, b| b.blocked.cmp(&a.blocked).then(a.category.cmp(&b.category)));
    Ok(Json(StatsView {
        from: period.from.to_string(),
        to: period.to.to_string(),
        queries: days.iter().map(|d| d.queries).sum(),
        blocked: days.iter().map(|d| d.blocked).sum(),
        days,
        hours,
        by_category,
        top_blocked: filters
            .top_blocked(authed.account.id, first, last, TOP_SHOWN)?
            .into_iter()
            .map(|(domain, count)| TopDomain { domain, count })
            .collect(),
    }))
}

/// Who changed the filter, when, and what (newest first).
#[utoipa::path(get, path = "/api/v1/dns-filter/audit", tag = "customer", security(("session" = [])),
    responses((status = 200, body = AuditListView), (status = 401, body = ErrorBody)))]
pub(crate) async fn audit(
    State(app): State<App>,
    authed: Authed,
) -> Result<Json<AuditListView>, ApiError> {
    Ok(Json(AuditListView {
        entries: app
            .store()
            .filters()
            .audit(authed.account.id, AUDIT_MAX)?
            .into_iter()
            .map(|e| AuditView {
                at: rfc3339(e.at),
                user: e.user,
                action: e.action,
                summary: e.summary,
            })
            .collect(),
    }))
}

// ---------------------------------------------------------------------------- operator

/// An account's filter, as the operator sees it.
#[utoipa::path(get, path = "/api/v1/operator/accounts/{account_number}/dns-filter", tag = "operator",
    security(("operator" = [])),
    params(("account_number" = String, Path, description = "лицевой счёт")),
    responses((status = 200, body = FilterView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn operator_filter(
    State(app): State<App>,
    _op: Operator,
    ApiPath(number): ApiPath<String>,
) -> Result<Json<FilterView>, ApiError> {
    let account = super::operator::find(&app, &number)?;
    Ok(Json(filter_view(&app, &account)?))
}

/// Highest `qps_limit` an operator may set: far above what one resolver answers, so a typo
/// with an extra digit is refused rather than silently meaning "no limit".
const MAX_QPS_LIMIT: u32 = 10_000_000;

/// Sets an account's query-rate limit (its tariff); enforced by the resolver when this answers.
#[utoipa::path(put, path = "/api/v1/operator/accounts/{account_number}/dns-filter/limits", tag = "operator",
    security(("operator" = [])),
    params(("account_number" = String, Path, description = "лицевой счёт")),
    request_body = PutLimits,
    responses((status = 200, body = FilterView),
        (status = 400, body = ErrorBody, description = "invalid_qps_limit"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn operator_put_limits(
    State(app): State<App>,
    _op: Operator,
    ApiPath(number): ApiPath<String>,
    ApiJson(body): ApiJson<PutLimits>,
) -> Result<Json<FilterView>, ApiError> {
    let account = super::operator::find(&app, &number)?;
    if body.qps_limit > MAX_QPS_LIMIT {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_qps_limit",
            format!("не больше {MAX_QPS_LIMIT} запросов в секунду (0 — без ограничения)"),
        )
        .with_field("qps_limit"));
    }
    let old = settings_of(&app, &account)?;
    let new = FilterSettings {
        qps_limit: body.qps_limit,
        updated_at: Some(now_secs()),
        ..old.clone()
    };
    let limit = |q: u32| {
        if q == 0 {
            "без ограничения".to_owned()
        } else {
            format!("{q} запросов/с")
        }
    };
    let entry = AuditEntry {
        id: app.store().filters().next_audit_id()?,
        at: now_secs(),
        user_id: 0,
        user: "оператор".to_owned(),
        action: ListOrSettings::Settings.as_str().to_owned(),
        summary: format!(
            "лимит запросов: {} → {}",
            limit(old.qps_limit),
            limit(new.qps_limit)
        ),
    };
    app.store()
        .filters()
        .save_settings(account.id, &new, entry)?;
    app.publish_policy(account.id, None)?;
    Ok(Json(filter_view(&app, &account)?))
}

/// The networks mapped to an account.
#[utoipa::path(get, path = "/api/v1/operator/accounts/{account_number}/networks", tag = "operator",
    security(("operator" = [])),
    params(("account_number" = String, Path, description = "лицевой счёт")),
    responses((status = 200, body = NetworksView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn operator_networks(
    State(app): State<App>,
    _op: Operator,
    ApiPath(number): ApiPath<String>,
) -> Result<Json<NetworksView>, ApiError> {
    let account = super::operator::find(&app, &number)?;
    Ok(Json(NetworksView {
        networks: app
            .store()
            .networks(account.id)?
            .iter()
            .map(NetworkView::from)
            .collect(),
    }))
}

/// `GET /operator/nodes/snapshot` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SnapshotQuery {
    /// The generation the node holds; the answer is 304 while nothing newer exists.
    #[serde(default)]
    #[param(schema_with = super::u64_schema)]
    pub after: u64,
    /// Seconds to wait for a newer generation before answering 304 (long polling; at most 60,
    /// and short of `http.request_timeout_secs`).
    #[serde(default)]
    #[param(schema_with = super::u64_schema)]
    pub wait: u64,
}

/// The header naming a node (`[a-zA-Z0-9._-]`, at most 64 characters).
pub const NODE_HEADER: &str = "x-qorgan-node";
/// The header carrying the control plane's current generation.
pub const GENERATION_HEADER: &str = "x-qorgan-generation";

fn node_name(headers: &HeaderMap) -> Result<String, ApiError> {
    let name = headers
        .get(NODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(name.to_owned())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_node",
            "заголовок X-Qorgan-Node: имя узла из a-z, 0-9, ., _, - (до 64 символов)",
        )
        .with_field(NODE_HEADER))
    }
}

fn with_generation(mut resp: Response, generation: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&generation.to_string()) {
        resp.headers_mut().insert(GENERATION_HEADER, v);
    }
    resp
}

/// The policy snapshot for resolver nodes (wire format of `qorgan_blocklists::wire`): 304
/// while the node's `after` generation is current, after waiting up to `wait` seconds.
#[utoipa::path(get, path = "/api/v1/operator/nodes/snapshot", tag = "operator",
    security(("operator" = [])),
    params(SnapshotQuery,
        ("X-Qorgan-Node" = String, Header, pattern = r"^[a-zA-Z0-9._-]{1,64}$", description = "the node's name")),
    responses((status = 200, description = "the snapshot", content_type = "application/octet-stream"),
        (status = 304, description = "unchanged"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn node_snapshot(
    State(app): State<App>,
    _op: Operator,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<SnapshotQuery>,
) -> Result<Response, ApiError> {
    let node = node_name(&headers)?;
    let book = app.policy();
    book.node_seen(&node, q.after);
    // At most 60 s, and always short of the request timeout, which would answer 408 instead.
    let most = app
        .config()
        .http
        .request_timeout_secs
        .saturating_sub(1)
        .min(60);
    let wait = Duration::from_secs(q.wait.min(most));
    let generation = if q.after >= book.generation() && !wait.is_zero() {
        book.changed_after(q.after, wait).await
    } else {
        book.generation()
    };
    if generation <= q.after {
        return Ok(with_generation(
            StatusCode::NOT_MODIFIED.into_response(),
            generation,
        ));
    }
    let (generation, bytes) = tokio::task::spawn_blocking({
        let app = app.clone();
        move || app.policy().encoded()
    })
    .await
    .map_err(|_| ApiError::internal())?;
    let mut resp = Body::from(bytes.as_ref().clone()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(with_generation(resp, generation))
}

/// The lists catalog the snapshot names (`.qcat` bytes), fetched by a node that lacks it.
#[utoipa::path(get, path = "/api/v1/operator/nodes/catalog/{hash}", tag = "operator",
    security(("operator" = [])),
    params(("hash" = String, Path, description = "the catalog hash of the snapshot")),
    responses((status = 200, description = "the catalog", content_type = "application/octet-stream"),
        (status = 404, body = ErrorBody, description = "no longer the current catalog"), (status = 401, body = ErrorBody)))]
pub(crate) async fn node_catalog(
    State(app): State<App>,
    _op: Operator,
    ApiPath(hash): ApiPath<String>,
) -> Result<Response, ApiError> {
    let catalog = app.policy().snapshots().catalog();
    if catalog.hash() != hash || hash.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "catalog_not_found",
            "this catalog is not the current one; fetch the snapshot again",
        ));
    }
    let bytes = tokio::task::spawn_blocking(move || catalog.to_bytes())
        .await
        .map_err(|_| ApiError::internal())?;
    let mut resp = Body::from(bytes).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(resp)
}

/// `POST /operator/nodes/usage` body: a node's usage report with its sequence number.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeUsage {
    /// Increases with every report of the node (a retry repeats it).
    #[schema(schema_with = super::u64_schema)]
    pub seq: u64,
    /// The report.
    #[schema(value_type = UsageReportSchema)]
    pub report: qorgan_resolver::usage::UsageReport,
}

/// Largest count one report may carry: far beyond what a node answers between two drains
/// (seconds), small enough that adding up reports never overflows.
const REPORT_COUNT_MAX: u64 = 1 << 40;
/// Latest report time accepted (9999-12-31T23:59:59Z).
const REPORT_AT_MAX: i64 = 253_402_300_799;

/// The schema of `qorgan_resolver::usage::UsageReport` (the resolver crate has no OpenAPI).
#[derive(ToSchema)]
#[allow(dead_code)] // only its schema is used
struct UsageReportSchema {
    /// Unix seconds of the drain that produced it.
    #[schema(minimum = 0, maximum = 253_402_300_799_i64)]
    at: i64,
    /// Per account id (decimal).
    #[schema(schema_with = accounts_schema)]
    accounts: BTreeMap<String, AccountUsageSchema>,
    /// Samples dropped because the queue was full.
    #[schema(maximum = 1_099_511_627_776_u64)]
    samples_dropped: u64,
}

/// The schema of `qorgan_resolver::usage::AccountUsage`.
#[derive(ToSchema)]
#[allow(dead_code)] // only its schema is used
struct AccountUsageSchema {
    /// Queries counted.
    #[schema(maximum = 1_099_511_627_776_u64)]
    queries: u64,
    /// Of those, blocked.
    #[schema(maximum = 1_099_511_627_776_u64)]
    blocked: u64,
    /// Blocked by the account's own block list.
    #[schema(maximum = 1_099_511_627_776_u64)]
    blocked_own: u64,
    /// Blocked per category name.
    #[schema(schema_with = counts_schema)]
    by_category: BTreeMap<String, u64>,
    /// Blocked names seen, with how many samples each.
    #[schema(schema_with = counts_schema)]
    blocked_names: BTreeMap<String, u64>,
}

/// `{"<account id>": AccountUsage}`: the keys are decimal `u64`s, without leading zeros (serde
/// reads them as JSON numbers).
fn accounts_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    let mut o = ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::RefOr(
            <AccountUsageSchema as utoipa::PartialSchema>::schema(),
        )))
        .build();
    o.property_names = Some(Box::new(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^(?:0|[1-9][0-9]{0,18})$"))
            .build()
            .into(),
    ));
    o
}

/// `{"<name>": count}` with counts within [`REPORT_COUNT_MAX`].
fn counts_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::RefOr(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0))
                .maximum(Some(REPORT_COUNT_MAX))
                .build()
                .into(),
        )))
        .build()
}

/// Refuses a report whose numbers no node can produce: they would overflow the sums.
fn check_report(r: &qorgan_resolver::usage::UsageReport) -> Result<(), ApiError> {
    let counts_ok = |u: &qorgan_resolver::usage::AccountUsage| {
        [u.queries, u.blocked, u.blocked_own]
            .into_iter()
            .chain(u.by_category.values().copied())
            .chain(u.blocked_names.values().copied())
            .all(|n| n <= REPORT_COUNT_MAX)
    };
    let ok = (0..=REPORT_AT_MAX).contains(&r.at)
        && r.samples_dropped <= REPORT_COUNT_MAX
        && r.accounts.values().all(counts_ok);
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_report",
            format!(
                "report: at within 0..={REPORT_AT_MAX}, every count at most {REPORT_COUNT_MAX}"
            ),
        )
        .with_field("report"))
    }
}

/// `POST /operator/nodes/usage` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageAck {
    /// False when this `seq` was applied before (a retry): nothing was counted twice.
    pub applied: bool,
}

/// A node's per-account counters; applied once per `(node, seq)`, durable when this answers.
#[utoipa::path(post, path = "/api/v1/operator/nodes/usage", tag = "operator",
    security(("operator" = [])), request_body = NodeUsage,
    params(("X-Qorgan-Node" = String, Header, pattern = r"^[a-zA-Z0-9._-]{1,64}$", description = "the node's name")),
    responses((status = 200, body = UsageAck), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn node_usage(
    State(app): State<App>,
    _op: Operator,
    headers: HeaderMap,
    ApiJson(body): ApiJson<NodeUsage>,
) -> Result<Json<UsageAck>, ApiError> {
    let node = node_name(&headers)?;
    check_report(&body.report)?;
    let store = app.store().clone();
    let applied = tokio::task::spawn_blocking(move || {
        crate::usage::apply(&store, &body.report, Some((&node, body.seq)))
    })
    .await
    .map_err(|_| ApiError::internal())??;
    Ok(Json(UsageAck { applied }))
}

/// A resolver node as last seen.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeView {
    /// Its name.
    pub name: String,
    /// The generation it holds.
    pub generation: u64,
    /// Generations behind the control plane.
    pub lag: u64,
    /// When it last polled (RFC 3339).
    pub last_seen: String,
}

/// `GET /operator/nodes` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodesView {
    /// The control plane's generation.
    pub generation: u64,
    /// Nodes that polled since this process started.
    pub nodes: Vec<NodeView>,
}

/// Resolver nodes and how far behind they are.
#[utoipa::path(get, path = "/api/v1/operator/nodes", tag = "operator",
    security(("operator" = [])),
    responses((status = 200, body = NodesView), (status = 401, body = ErrorBody)))]
pub(crate) async fn nodes(State(app): State<App>, _op: Operator) -> Json<NodesView> {
    let book = app.policy();
    let generation = book.generation();
    Json(NodesView {
        generation,
        nodes: book
            .nodes()
            .into_iter()
            .map(|(name, held, seen)| NodeView {
                name,
                generation: held,
                lag: generation.saturating_sub(held),
                last_seen: rfc3339(seen),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_counts_take_the_russian_plural() {
        let words: Vec<String> = [0, 1, 2, 5, 11, 12, 21, 22, 25, 101, 111]
            .iter()
            .map(|n| rules_ru(*n))
            .collect();
        assert_eq!(
            words,
            [
                "0 правил",
                "1 правило",
                "2 правила",
                "5 правил",
                "11 правил",
                "12 правил",
                "21 правило",
                "22 правила",
                "25 правил",
                "101 правило",
                "111 правил"
            ]
        );
    }
}
