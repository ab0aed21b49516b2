//! Operator (billing integration) endpoints: provision accounts, map networks, add services,
//! post charges, reconcile the ledger. Retried calls are harmless: the same account number
//! again answers 409 with the stored record, the same network on the same account answers 200
//! with it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, Operator};
use super::rfc3339;
use crate::billing::{LedgerReconciliation, OrphanKind};
use crate::store::{
    Account, AccountStatus, LedgerEntry, Network, NewAccount, Service, ServiceStatus,
};
use crate::{now_secs, validate, App};

/// Longest holder name / company / description.
const TEXT_MAX: usize = 200;

/// `POST /operator/accounts` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    /// Лицевой счёт: 1–20 digits; the owner's login.
    #[schema(pattern = r"^[0-9]{1,20}$")]
    pub account_number: String,
    /// The contract number as billing has it (1–64 characters).
    #[schema(
        max_length = 64,
        pattern = r"^[ №]*[0-9A-Za-z\u0400-\u0481\u048a-\u04ff/._-][0-9A-Za-z\u0400-\u0481\u048a-\u04ff/._№ -]*$"
    )]
    pub contract_number: String,
    /// IIN or BIN, 12 digits with a valid check digit.
    #[schema(pattern = r"^[0-9]{12}$")]
    pub iin_bin: String,
    /// Holder name (ФИО or organisation).
    #[schema(
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub name: String,
    /// Company name.
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub company: Option<String>,
}

/// A network as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct NetworkView {
    /// Id.
    pub id: u64,
    /// CIDR, host bits cleared.
    pub cidr: String,
    /// RFC 3339.
    pub created_at: String,
}

impl From<&Network> for NetworkView {
    fn from(n: &Network) -> Self {
        Self {
            id: n.id,
            cidr: n.cidr.to_string(),
            created_at: rfc3339(n.created_at),
        }
    }
}

/// A service as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceView {
    /// Id.
    pub id: u64,
    /// Kind, e.g. `internet`.
    pub kind: String,
    /// Tariff name.
    pub name: String,
    /// Monthly fee in tiyn.
    pub monthly_fee_tiyn: i64,
    /// `active`, `disconnect_requested` or `disconnected`.
    #[schema(value_type = String)]
    pub status: ServiceStatus,
    /// RFC 3339.
    pub created_at: String,
}

impl From<&Service> for ServiceView {
    fn from(s: &Service) -> Self {
        Self {
            id: s.id,
            kind: s.kind.clone(),
            name: s.name.clone(),
            monthly_fee_tiyn: s.monthly_fee_tiyn,
            status: s.status,
            created_at: rfc3339(s.created_at),
        }
    }
}

/// An account with its networks, services and balance.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    /// Лицевой счёт.
    pub account_number: String,
    /// Contract number as billing has it.
    pub contract_number: String,
    /// IIN/BIN.
    pub iin_bin: String,
    /// Holder name.
    pub name: String,
    /// Company.
    pub company: Option<String>,
    /// `active`, `suspended` or `closed`.
    #[schema(value_type = String)]
    pub status: AccountStatus,
    /// True once the customer registered the cabinet.
    pub registered: bool,
    /// When it was registered (RFC 3339).
    pub registered_at: Option<String>,
    /// Balance in tiyn (sum of the ledger).
    pub balance_tiyn: i64,
    /// Mapped networks.
    pub networks: Vec<NetworkView>,
    /// Services.
    pub services: Vec<ServiceView>,
    /// RFC 3339.
    pub created_at: String,
}

pub(crate) fn account_view(app: &App, a: &Account) -> Result<AccountView, ApiError> {
    let store = app.store();
    Ok(AccountView {
        account_number: a.account_number.clone(),
        contract_number: a.contract_number.clone(),
        iin_bin: a.iin_bin.clone(),
        name: a.name.clone(),
        company: a.company.clone(),
        status: a.status,
        registered: a.owner_user_id.is_some(),
        registered_at: a.registered_at.map(rfc3339),
        balance_tiyn: store.balance(a.id)?,
        networks: store
            .networks(a.id)?
            .iter()
            .map(NetworkView::from)
            .collect(),
        services: store
            .services(a.id)?
            .iter()
            .map(ServiceView::from)
            .collect(),
        created_at: rfc3339(a.created_at),
    })
}

pub(crate) fn find(app: &App, number: &str) -> Result<Account, ApiError> {
    app.store().account_by_number(number)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "account_not_found",
            format!("лицевой счёт {number} не найден"),
        )
    })
}

fn required_text(field: &str, value: &str) -> Result<String, ApiError> {
    validate::optional_text(Some(value), TEXT_MAX)
        .map_err(|r| ApiError::field(field, r))?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing_field",
                format!("поле «{field}» не заполнено"),
            )
            .with_field(field)
        })
}

/// Provisions an account (idempotent on the account number).
#[utoipa::path(post, path = "/api/v1/operator/accounts", tag = "operator", request_body = CreateAccount,
    security(("operator" = [])),
    responses(
        (status = 201, body = AccountView),
        (status = 400, body = ErrorBody, description = "invalid field"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "operator_token_unset"),
        (status = 409, body = ErrorBody, description = "account_exists (with the stored `account`) or contract_taken"),
    ))]
pub(crate) async fn create_account(
    State(app): State<App>,
    _op: Operator,
    ApiJson(body): ApiJson<CreateAccount>,
) -> Result<(StatusCode, Json<AccountView>), ApiError> {
    let account_number = validate::account_number(&body.account_number)
        .map_err(|r| ApiError::field("account_number", r))?;
    let contract_key = validate::contract_key(&body.contract_number)
        .map_err(|r| ApiError::field("contract_number", r))?;
    let (iin_bin, _) =
        validate::iin_bin(&body.iin_bin).map_err(|r| ApiError::field("iin_bin", r))?;
    let name = required_text("name", &body.name)?;
    let company = validate::optional_text(body.company.as_deref(), TEXT_MAX)
        .map_err(|r| ApiError::field("company", r))?;
    let new = NewAccount {
        account_number,
        contract_number: body.contract_number.trim().to_owned(),
        contract_key,
        iin_bin,
        name,
        company,
    };
    match app.store().create_account(new, now_secs()) {
        Ok(a) => Ok((StatusCode::CREATED, Json(account_view(&app, &a)?))),
        Err(crate::ControlError::AccountExists(existing)) => {
            let view = account_view(&app, &existing)?;
            let value = serde_json::to_value(&view).unwrap_or_default();
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "account_exists",
                format!("лицевой счёт {} уже заведён", existing.account_number),
            )
            .with_field("account_number")
            .with_extra("account", value))
        }
        Err(e) => Err(e.into()),
    }
}

/// One account with its networks, services and balance.
#[utoipa::path(get, path = "/api/v1/operator/accounts/{account_number}", tag = "operator",
    security(("operator" = [])),
    params(("account_number" = String, Path, description = "лицевой счёт")),
    responses((status = 200, body = AccountView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_account(
    State(app): State<App>,
    _op: Operator,
    ApiPath(number): ApiPath<String>,
) -> Result<Json<AccountView>, ApiError> {
    let a = find(&app, &number)?;
    Ok(Json(account_view(&app, &a)?))
}

/// `POST /operator/accounts/{n}/networks` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddNetwork {
    /// IPv4 or IPv6 network in CIDR form, e.g. `203.0.113.0/24` or `2001:db8::/48`.
    #[schema(
        pattern = r"^(?:(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])/(?:3[0-2]|[12]?[0-9])|(?:(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}|(?:[0-9A-Fa-f]{1,4}:){1,7}:|(?:[0-9A-Fa-f]{1,4}:){1,6}:[0-9A-Fa-f]{1,4}|(?:[0-9A-Fa-f]{1,4}:){1,5}(?::[0-9A-Fa-f]{1,4}){1,2}|(?:[0-9A-Fa-f]{1,4}:){1,4}(?::[0-9A-Fa-f]{1,4}){1,3}|(?:[0-9A-Fa-f]{1,4}:){1,3}(?::[0-9A-Fa-f]{1,4}){1,4}|(?:[0-9A-Fa-f]{1,4}:){1,2}(?::[0-9A-Fa-f]{1,4}){1,5}|[0-9A-Fa-f]{1,4}:(?::[0-9A-Fa-f]{1,4}){1,6}|:(?:(?::[0-9A-Fa-f]{1,4}){1,7}|:))/(?:12[0-8]|1[01][0-9]|[1-9]?[0-9]))$"
    )]
    pub cidr: String,
}

/// Maps a network to the account (201; 200 when the same network was already mapped to it).
#[utoipa::path(post, path = "/api/v1/operator/accounts/{account_number}/networks", tag = "operator",
    security(("operator" = [])), request_body = AddNetwork,
    params(("account_number" = String, Path, description = "лицевой счёт")),
    responses((status = 201, body = NetworkView), (status = 200, body = NetworkView, description = "already mapped"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "network_overlap: names the other account")))]
pub(crate) async fn add_network(
    State(app): State<App>,
    _op: Operator,
    ApiPath(number): ApiPath<String>,
    ApiJson(body): ApiJson<AddNetwork>,
) -> Result<(StatusCode, Json<NetworkView>), ApiError> {
    let account = find(&app, &number)?;
    let cidr: IpNet = body.cidr.trim().parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_cidr",
            "ожидается сеть вида 203.0.113.0/24 или 2001:db8::/48",
        )
        .with_field("cidr")
    })?;
    let (network, fresh) = app.store().add_network(account.id, cidr, now_secs())?;
    if fresh {
        app.publish_policy(account.id, None)?;
    }
    let status = if fresh {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(NetworkView::from(&network))))
}

/// `POST /operator/accounts/{n}/services` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddService {
    /// Kind: `a-z`, `0-9`, `_`, `-`, 1–32 characters (e.g. `internet`, `dns_filter`).
    #[schema(pattern = r"^[a-z0-9_-]{1,32}$")]
    pub kind: String,
    /// Tariff name.
    #[schema(
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub name: String,
    /// Monthly fee in tiyn (≥ 0).
    #[schema(minimum = 0)]
    pub monthly_fee_tiyn: i64,
}

/// Adds a service to the account.
#[utoipa::path(post, path = "/api/v1/operator/accounts/{account_number}/services", tag = "operator",
    security(("operator" = [])), request_body = AddService,
    params(("account_number" = String, Path, description = "лицевой счёт")),
    responses((status = 201, body = ServiceView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn add_service(
    State(app): State<App>,
    _op: Operator,
    ApiPath(number): ApiPath<String>,
    ApiJson(body): ApiJson<AddService>,
) -> Result<(StatusCode, Json<ServiceView>), ApiError> {
    let account = find(&app, &number)?;
    let kind = body.kind.trim();
    if !qorgan_config::is_category_name(kind) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_kind",
            "вид услуги: a-z, 0-9, - и _, до 32 символов",
        )
        .with_field("kind"));
    }
    let name = required_text("name", &body.name)?;
    if body.monthly_fee_tiyn < 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_amount",
            "сумма не может быть отрицательной",
        )
        .with_field("monthly_fee_tiyn"));
    }
    let s = app.store().add_service(
        account.id,
        kind.to_owned(),
        name,
        body.monthly_fee_tiyn,
        now_secs(),
    )?;
    Ok((StatusCode::CREATED, Json(ServiceView::from(&s))))
}

/// `POST /operator/accounts/{n}/charges` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostCharge {
    /// Amount in tiyn, positive; lowers the balance by it.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub amount_tiyn: i64,
    /// What it is for.
    #[schema(
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub description: String,
    /// The service charged (one of the account's).
    pub service_id: Option<u64>,
    /// Billing's id of this charge (≤ 64 characters). A retry with the same reference answers
    /// 200 with the charge already posted instead of charging twice.
    #[schema(max_length = 64, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub reference: Option<String>,
}

/// A posted charge and the balance after it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChargeView {
    /// Ledger entry id.
    pub id: u64,
    /// The charged amount (positive) in tiyn.
    pub amount_tiyn: i64,
    /// Description.
    pub description: String,
    /// The service, if any.
    pub service_id: Option<u64>,
    /// RFC 3339.
    pub at: String,
    /// Balance after the charge, in tiyn.
    pub balance_tiyn: i64,
}

fn charge_view(e: &LedgerEntry, balance: i64) -> ChargeView {
    ChargeView {
        id: e.id,
        amount_tiyn: -e.amount_tiyn,
        description: e.description.clone(),
        service_id: e.service_id,
        at: rfc3339(e.at),
        balance_tiyn: balance,
    }
}

/// Posts a charge (lowers the balance).
#[utoipa::path(post, path = "/api/v1/operator/accounts/{account_number}/charges", tag = "operator",
    security(("operator" = [])), request_body = PostCharge,
    params(("account_number" = String, Path, description = "лицевой счёт")),
    responses((status = 201, body = ChargeView), (status = 200, body = ChargeView, description = "retry of a posted reference"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "reference_conflict")))]
pub(crate) async fn post_charge(
    State(app): State<App>,
    _op: Operator,
    ApiPath(number): ApiPath<String>,
    ApiJson(body): ApiJson<PostCharge>,
) -> Result<(StatusCode, Json<ChargeView>), ApiError> {
    let account = find(&app, &number)?;
    if body.amount_tiyn <= 0 || body.amount_tiyn > 1_000_000_000_000 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_amount",
            "сумма должна быть положительной (в тиынах)",
        )
        .with_field("amount_tiyn"));
    }
    let description = required_text("description", &body.description)?;
    let reference = validate::optional_text(body.reference.as_deref(), 64)
        .map_err(|r| ApiError::field("reference", r))?;
    let (entry, balance, fresh) = app
        .store()
        .post_charge(
            account.id,
            body.amount_tiyn,
            description,
            body.service_id,
            reference.as_deref(),
            now_secs(),
        )
        .map_err(|e| match e {
            crate::ControlError::NotFound(_) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "unknown_service",
                "у этого лицевого счёта нет такой услуги",
            )
            .with_field("service_id"),
            other => other.into(),
        })?;
    if !fresh {
        if -entry.amount_tiyn != body.amount_tiyn || entry.service_id != body.service_id {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "reference_conflict",
                "this reference was already posted with another amount or service",
            )
            .with_field("reference")
            .with_extra(
                "charge",
                serde_json::to_value(charge_view(&entry, balance)).unwrap_or_default(),
            ));
        }
        return Ok((StatusCode::OK, Json(charge_view(&entry, balance))));
    }
    Ok((StatusCode::CREATED, Json(charge_view(&entry, balance))))
}

/// A balance that differs from its ledger.
#[derive(Debug, Serialize, ToSchema)]
pub struct MismatchView {
    /// Лицевой счёт (`id N` when the account record itself is missing).
    pub account: String,
    /// The cached balance, tiyn.
    pub balance_tiyn: i64,
    /// The sum of the account's ledger entries, tiyn.
    pub ledger_sum_tiyn: i64,
}

/// A payment, paid order or ledger row without its counterpart.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrphanView {
    /// What is wrong, e.g. `payment_without_ledger`, `ledger_without_payment`.
    pub kind: OrphanKind,
    /// Лицевой счёт (`id N` when the account record itself is missing).
    pub account: String,
    /// The record, e.g. `payment 17`, `order 000000000123`.
    pub record: String,
    /// Why, in a few words.
    pub detail: String,
}

/// `GET /operator/reconciliation` answer: empty lists when the books agree.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReconciliationView {
    /// Accounts whose balance was compared with their ledger.
    pub checked_accounts: usize,
    /// Cached balances that differ from the sum of their ledger.
    pub mismatches: Vec<MismatchView>,
    /// Payments and orders without exactly one ledger row, and ledger rows without a payment.
    pub orphans: Vec<OrphanView>,
    /// RFC 3339.
    pub checked_at: String,
}

impl From<&LedgerReconciliation> for ReconciliationView {
    fn from(r: &LedgerReconciliation) -> Self {
        Self {
            checked_accounts: r.checked_accounts,
            mismatches: r
                .mismatches
                .iter()
                .map(|m| MismatchView {
                    account: m.account(),
                    balance_tiyn: m.balance_tiyn,
                    ledger_sum_tiyn: m.ledger_sum_tiyn,
                })
                .collect(),
            orphans: r
                .orphans
                .iter()
                .map(|o| OrphanView {
                    kind: o.kind,
                    account: o.account(),
                    record: o.record.clone(),
                    detail: o.detail.clone(),
                })
                .collect(),
            checked_at: rfc3339(r.checked_at),
        }
    }
}

/// Runs the ledger reconciliation on a blocking thread (it scans every ledger, payment and
/// order), logs what it found and sets `qorgan_ledger_mismatches`. Reports, never repairs.
/// Called once at start-up ([`crate::serve_http`]) and by `GET /operator/reconciliation`.
pub(crate) async fn reconcile(app: &App) -> Result<LedgerReconciliation, crate::ControlError> {
    let billing = app.billing().clone();
    let report = tokio::task::spawn_blocking(move || billing.reconcile_ledger(now_secs()))
        .await
        .map_err(crate::ControlError::Join)??;
    report.log();
    app.metrics()
        .ledger_mismatches
        .set(i64::try_from(report.problems()).unwrap_or(i64::MAX));
    Ok(report)
}

/// Reconciles the ledger now: every cached balance against the sum of its ledger, every
/// payment and paid order against its one ledger row. Reports only; nothing is repaired.
#[utoipa::path(get, path = "/api/v1/operator/reconciliation", tag = "operator",
    security(("operator" = [])),
    responses((status = 200, body = ReconciliationView), (status = 401, body = ErrorBody)))]
pub(crate) async fn reconciliation(
    State(app): State<App>,
    _op: Operator,
) -> Result<Json<ReconciliationView>, ApiError> {
    let report = reconcile(&app).await?;
    Ok(Json(ReconciliationView::from(&report)))
}
