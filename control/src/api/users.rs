//! Sub-users (seed 5.2.7). The tree rule (CABINET.md §5): U may create, change or delete V
//! only if V is in U's *strict* subtree, and only while U may manage users. So a user's parent
//! and every ancestor are untouchable, nobody changes their own record here (no self-escalation
//! of `can_manage_users`), and the owner, being everybody's ancestor, is never deleted.
//! A deleted user's children move up to its parent.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, Authed};
use super::rfc3339;
use crate::secrets::{generate_password, new_token, token_hash};
use crate::store::{Id, NewSubUser, User};
use crate::{mail, now_secs, validate, App};

const NAME_MAX: usize = 100;

/// True when `target` is strictly below `manager` in the tree described by `parents`
/// (user → parent). Walks up from the target; a cycle (corrupt data) counts as "not below".
pub(crate) fn in_strict_subtree(
    parents: &HashMap<Id, Option<Id>>,
    manager: Id,
    target: Id,
) -> bool {
    let mut cur = parents.get(&target).copied().flatten();
    for _ in 0..=parents.len() {
        match cur {
            Some(p) if p == manager => return true,
            Some(p) => cur = parents.get(&p).copied().flatten(),
            None => return false,
        }
    }
    false
}

/// A sub-user as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    /// Id (use it in `PATCH`/`DELETE /users/{id}`).
    pub id: u64,
    /// Email: the login.
    pub email: String,
    /// Имя.
    pub first_name: Option<String>,
    /// Фамилия.
    pub last_name: Option<String>,
    /// Должность.
    pub position: Option<String>,
    /// «Может добавлять пользователей».
    pub can_manage_users: bool,
    /// Email confirmed (the user can log in).
    pub email_confirmed: bool,
    /// The user above it.
    pub parent_id: Option<u64>,
    /// RFC 3339.
    pub created_at: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id,
            email: u.email.clone(),
            first_name: u.first_name.clone(),
            last_name: u.last_name.clone(),
            position: u.position.clone(),
            can_manage_users: u.can_manage_users,
            email_confirmed: u.email_confirmed,
            parent_id: u.parent_id,
            created_at: rfc3339(u.created_at),
        }
    }
}

fn parents_of(users: &[User]) -> HashMap<Id, Option<Id>> {
    users.iter().map(|u| (u.id, u.parent_id)).collect()
}

/// Lists the users below the caller (its strict subtree).
#[utoipa::path(get, path = "/api/v1/users", tag = "customer", security(("session" = [])),
    responses((status = 200, body = [UserView]), (status = 401, body = ErrorBody)))]
pub(crate) async fn list(
    State(app): State<App>,
    authed: Authed,
) -> Result<Json<Vec<UserView>>, ApiError> {
    let users = app.store().account_users(authed.account.id)?;
    let parents = parents_of(&users);
    Ok(Json(
        users
            .iter()
            .filter(|u| in_strict_subtree(&parents, authed.user.id, u.id))
            .map(UserView::from)
            .collect(),
    ))
}

fn cannot_manage() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "cannot_manage_users",
        "у Вас нет права добавлять и изменять пользователей",
    )
}

fn not_in_subtree() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "not_in_subtree",
        "можно изменять и удалять только пользователей, созданных Вами или ниже Вас; \
         себя, «родительского» пользователя и тех, кто выше, — нельзя",
    )
}

/// Exactly one of a typed password or "generate": the password to set and whether it was
/// generated (then it is emailed).
fn choose_password(
    password: Option<String>,
    generate: bool,
    login: &str,
) -> Result<(String, bool), ApiError> {
    match (password, generate) {
        (Some(_), true) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "password_choice",
            "укажите пароль либо выберите «Сгенерировать», но не то и другое",
        )
        .with_field("password")),
        (Some(p), false) => {
            validate::password(&p, login).map_err(|r| ApiError::field("password", r))?;
            Ok((p, false))
        }
        (None, true) => Ok((generate_password(), true)),
        (None, false) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "password_choice",
            "задайте пароль или выберите «Сгенерировать и выслать пароль автоматически»",
        )
        .with_field("password")),
    }
}

/// `POST /users` body (seed Рисунок 13).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Email: the new user's login; must be confirmed by a link.
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    /// Password set by hand (≥ 10 characters) — or leave it out and set `generate_password`.
    #[schema(min_length = 10, max_length = 128)]
    pub password: Option<String>,
    /// Generate a password and email it.
    #[serde(default)]
    pub generate_password: bool,
    /// Имя.
    #[schema(max_length = 100, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub first_name: Option<String>,
    /// Фамилия.
    #[schema(max_length = 100, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub last_name: Option<String>,
    /// Должность.
    #[schema(max_length = 100, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub position: Option<String>,
    /// «Может добавлять пользователей».
    #[serde(default)]
    pub can_manage_users: bool,
}

fn name(field: &str, v: Option<&str>) -> Result<Option<String>, ApiError> {
    validate::optional_text(v, NAME_MAX).map_err(|r| ApiError::field(field, r))
}

/// Creates a sub-user below the caller; an email with the confirmation link (and the
/// generated password) goes to it.
#[utoipa::path(post, path = "/api/v1/users", tag = "customer", request_body = CreateUser, security(("session" = [])),
    responses((status = 201, body = UserView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "cannot_manage_users"),
        (status = 409, body = ErrorBody, description = "email_taken")))]
pub(crate) async fn create(
    State(app): State<App>,
    authed: Authed,
    ApiJson(body): ApiJson<CreateUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    if !authed.user.can_manage_users {
        return Err(cannot_manage());
    }
    let email = validate::email(&body.email).map_err(|r| ApiError::field("email", r))?;
    let first_name = name("first_name", body.first_name.as_deref())?;
    let last_name = name("last_name", body.last_name.as_deref())?;
    let position = name("position", body.position.as_deref())?;
    let (password, generated) = choose_password(body.password, body.generate_password, &email)?;
    if app.store().user_by_email(&email)?.is_some() {
        return Err(crate::ControlError::EmailTaken.into());
    }
    let password_hash = app.hash_password(password.clone()).await?;
    let (token, hash) = new_token();
    let now = now_secs();
    let expires = now + i64::try_from(app.config().auth.confirm_ttl_secs).unwrap_or(172_800);
    let public_url = app.config().http.public_url.clone();
    let user = app.store().create_sub_user(
        &authed.user,
        NewSubUser {
            email: email.clone(),
            first_name,
            last_name,
            position,
            password_hash,
            can_manage_users: body.can_manage_users,
        },
        hash,
        expires,
        |_| {
            mail::sub_user(
                &email,
                &public_url,
                &token,
                generated.then_some(password.as_str()),
            )
        },
        now,
    )?;
    app.wake_mailer();
    Ok((StatusCode::CREATED, Json(UserView::from(&user))))
}

/// `PATCH /users/{id}` body: only the fields given change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// Имя (empty string clears it).
    #[schema(max_length = 100, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub first_name: Option<String>,
    /// Фамилия.
    #[schema(max_length = 100, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub last_name: Option<String>,
    /// Должность.
    #[schema(max_length = 100, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub position: Option<String>,
    /// «Может добавлять пользователей» (a change revokes the user's sessions).
    pub can_manage_users: Option<bool>,
    /// A new password set by hand (revokes the user's sessions).
    #[schema(min_length = 10, max_length = 128)]
    pub password: Option<String>,
    /// Generate a new password and email it (revokes the user's sessions).
    #[serde(default)]
    pub generate_password: bool,
}

/// Loads `id` and checks the tree rule for the caller.
fn managed_target(app: &App, authed: &Authed, id: Id) -> Result<User, ApiError> {
    let users = app.store().account_users(authed.account.id)?;
    let Some(target) = users.iter().find(|u| u.id == id).cloned() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "user_not_found",
            "пользователь не найден",
        ));
    };
    if !in_strict_subtree(&parents_of(&users), authed.user.id, id) {
        return Err(not_in_subtree());
    }
    if !authed.user.can_manage_users {
        return Err(cannot_manage());
    }
    Ok(target)
}

/// Changes a user below the caller.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "customer", request_body = UpdateUser, security(("session" = [])),
    params(("id" = u64, Path, description = "user id")),
    responses((status = 200, body = UserView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "not_in_subtree (self, parent, ancestors) or cannot_manage_users"),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn update(
    State(app): State<App>,
    authed: Authed,
    ApiPath(id): ApiPath<u64>,
    ApiJson(body): ApiJson<UpdateUser>,
) -> Result<Json<UserView>, ApiError> {
    let before = managed_target(&app, &authed, id)?;
    let mut after = before.clone();
    if let Some(v) = body.first_name.as_deref() {
        after.first_name = name("first_name", Some(v))?;
    }
    if let Some(v) = body.last_name.as_deref() {
        after.last_name = name("last_name", Some(v))?;
    }
    if let Some(v) = body.position.as_deref() {
        after.position = name("position", Some(v))?;
    }
    if let Some(flag) = body.can_manage_users {
        after.can_manage_users = flag;
    }
    // A change of permissions ends the user's sessions (RELIABILITY W3: rotate on privilege
    // change): it logs in again and gets a new token under the new rights.
    if after.can_manage_users != before.can_manage_users {
        after.session_epoch += 1;
    }
    let mut email = None;
    if body.password.is_some() || body.generate_password {
        let (password, generated) =
            choose_password(body.password, body.generate_password, &before.email)?;
        after.password_hash = app.hash_password(password.clone()).await?;
        after.session_epoch = before.session_epoch + 1;
        if generated {
            email = Some(mail::new_password(
                &before.email,
                &app.config().http.public_url,
                &password,
            ));
        }
    }
    let queued = email.is_some();
    app.store()
        .update_user(&before, &after, email, now_secs())?;
    if queued {
        app.wake_mailer();
    }
    Ok(Json(UserView::from(&after)))
}

/// Deletes a user below the caller; its children move up to its parent.
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "customer", security(("session" = [])),
    params(("id" = u64, Path, description = "user id")),
    responses((status = 204), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "not_in_subtree (self, parent, ancestors, the owner)"),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn delete(
    State(app): State<App>,
    authed: Authed,
    ApiPath(id): ApiPath<u64>,
) -> Result<StatusCode, ApiError> {
    let target = managed_target(&app, &authed, id)?;
    if target.is_owner() {
        return Err(not_in_subtree());
    }
    app.store().delete_user(id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /users/confirm` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmQuery {
    /// The token from the emailed link.
    pub token: String,
}

/// Confirmation result.
#[derive(Debug, Serialize, ToSchema)]
pub struct Confirmed {
    /// The confirmed email (now a valid login).
    pub email: String,
    /// What next.
    pub message: String,
}

/// Confirms a sub-user's email (the link in its invitation).
#[utoipa::path(get, path = "/api/v1/users/confirm", tag = "customer", params(("token" = String, Query, description = "the token from the emailed link")),
    responses((status = 200, body = Confirmed), (status = 400, body = ErrorBody),
        (status = 410, body = ErrorBody, description = "token_invalid")))]
pub(crate) async fn confirm(
    State(app): State<App>,
    ApiQuery(q): ApiQuery<ConfirmQuery>,
) -> Result<Json<Confirmed>, ApiError> {
    if q.token.len() > 128 {
        return Err(crate::ControlError::TokenInvalid.into());
    }
    let user = app
        .store()
        .confirm_email(&token_hash(q.token.trim()), now_secs())?;
    Ok(Json(Confirmed {
        email: user.email,
        message: "Email подтверждён. Теперь Вы можете войти в личный кабинет.".to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// owner(1) → a(2) → b(3) → c(4); owner → d(5)
    fn tree() -> HashMap<Id, Option<Id>> {
        [
            (1, None),
            (2, Some(1)),
            (3, Some(2)),
            (4, Some(3)),
            (5, Some(1)),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn a_user_manages_its_whole_strict_subtree() {
        let t = tree();
        assert!(in_strict_subtree(&t, 1, 2));
        assert!(in_strict_subtree(&t, 1, 4));
        assert!(in_strict_subtree(&t, 2, 3));
        assert!(in_strict_subtree(&t, 2, 4));
    }

    #[test]
    fn parent_ancestors_self_and_siblings_are_untouchable() {
        let t = tree();
        assert!(!in_strict_subtree(&t, 3, 2), "parent");
        assert!(!in_strict_subtree(&t, 3, 1), "ancestor (owner)");
        assert!(!in_strict_subtree(&t, 4, 1), "ancestor two levels up");
        assert!(!in_strict_subtree(&t, 2, 2), "self");
        assert!(!in_strict_subtree(&t, 2, 5), "sibling branch");
        assert!(!in_strict_subtree(&t, 5, 3), "cousin");
    }

    proptest::proptest! {
        /// On random trees, "strictly below" is exactly "the manager is a proper ancestor".
        #[test]
        fn strict_subtree_equals_proper_ancestry(
            parents in proptest::collection::vec(0usize..1000, 1..40),
            m in 0usize..40,
            t in 0usize..40,
        ) {
            // user i+1 has parent (parents[i] % (i+1)) + 1; user 1... is the root chain start
            let n = parents.len() + 1;
            let mut map: HashMap<Id, Option<Id>> = HashMap::new();
            map.insert(1, None);
            for (i, p) in parents.iter().enumerate() {
                let id = (i + 2) as Id;
                map.insert(id, Some((p % (i + 1) + 1) as Id));
            }
            let (m, t) = ((m % n + 1) as Id, (t % n + 1) as Id);
            let mut ancestors = Vec::new();
            let mut cur = map[&t];
            while let Some(p) = cur {
                ancestors.push(p);
                cur = map[&p];
            }
            proptest::prop_assert_eq!(in_strict_subtree(&map, m, t), ancestors.contains(&m));
        }
    }

    #[test]
    fn a_corrupt_cycle_grants_nothing() {
        let t: HashMap<Id, Option<Id>> = [(1, Some(2)), (2, Some(1)), (3, None)]
            .into_iter()
            .collect();
        assert!(!in_strict_subtree(&t, 3, 1));
    }

    #[test]
    fn password_choice_needs_exactly_one_way() {
        assert!(choose_password(None, false, "a@b.kz").is_err());
        assert!(choose_password(Some("long enough pw".into()), true, "a@b.kz").is_err());
        assert!(
            !choose_password(Some("long enough pw".into()), false, "a@b.kz")
                .expect("typed")
                .1
        );
        assert!(choose_password(Some("short".into()), false, "a@b.kz").is_err());
        assert!(choose_password(None, true, "a@b.kz").expect("generated").1);
    }
}
