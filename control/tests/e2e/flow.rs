//! The whole customer journey over HTTP with a real store and a real SMTP sink.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn operator_register_login_me_password_reset_subusers_logout() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start().await;
    let s = Server::start(&config(dir.path(), &sink.url()), options()).await;

    // --- operator provisions; a retry gets 409 with the stored record
    let created = s.provision("4445", CONTRACT, BIN).await;
    assert_eq!(created.body["account_number"], "4445");
    assert_eq!(created.body["registered"], false);
    let again = s
        .operator(
            Method::POST,
            "/api/v1/operator/accounts",
            Some(json!({"account_number": "4445", "contract_number": CONTRACT, "iin_bin": BIN, "name": "x"})),
        )
        .await;
    again.error(StatusCode::CONFLICT, "account_exists");
    assert_eq!(again.body["account"]["account_number"], "4445");
    assert_eq!(
        again.body["account"]["name"], "ТОО «Тест»",
        "the existing record, unchanged"
    );

    let net = s
        .operator(
            Method::POST,
            "/api/v1/operator/accounts/4445/networks",
            Some(json!({"cidr": "203.0.113.7/24"})),
        )
        .await;
    assert_eq!(net.status, StatusCode::CREATED, "{}", net.text);
    assert_eq!(net.body["cidr"], "203.0.113.0/24");
    let net6 = s
        .operator(
            Method::POST,
            "/api/v1/operator/accounts/4445/networks",
            Some(json!({"cidr": "2001:db8:1::/48"})),
        )
        .await;
    assert_eq!(net6.status, StatusCode::CREATED);
    let svc = s
        .operator(
            Method::POST,
            "/api/v1/operator/accounts/4445/services",
            Some(json!({"kind": "internet", "name": "Бизнес 100", "monthly_fee_tiyn": 1_500_000})),
        )
        .await;
    assert_eq!(svc.status, StatusCode::CREATED, "{}", svc.text);
    let charge = s
        .operator(
            Method::POST,
            "/api/v1/operator/accounts/4445/charges",
            Some(json!({"amount_tiyn": 1_500_000, "description": "Абонплата, ноябрь", "service_id": svc.body["id"], "reference": "INV-2026-11-4445"})),
        )
        .await;
    assert_eq!(charge.status, StatusCode::CREATED, "{}", charge.text);
    assert_eq!(charge.body["balance_tiyn"], -1_500_000);
    // Billing retries the same charge: nothing more is charged.
    let retry = s
        .operator(
            Method::POST,
            "/api/v1/operator/accounts/4445/charges",
            Some(json!({"amount_tiyn": 1_500_000, "description": "Абонплата, ноябрь", "service_id": svc.body["id"], "reference": "INV-2026-11-4445"})),
        )
        .await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.text);
    assert_eq!(retry.body["id"], charge.body["id"]);
    let clash = s
        .operator(
            Method::POST,
            "/api/v1/operator/accounts/4445/charges",
            Some(json!({"amount_tiyn": 1, "description": "x", "reference": "INV-2026-11-4445"})),
        )
        .await;
    clash.error(StatusCode::CONFLICT, "reference_conflict");
    let acc = s
        .operator(Method::GET, "/api/v1/operator/accounts/4445", None)
        .await;
    assert_eq!(acc.status, StatusCode::OK);
    assert_eq!(acc.body["balance_tiyn"], -1_500_000);
    assert_eq!(acc.body["networks"].as_array().unwrap().len(), 2);
    assert_eq!(acc.body["services"][0]["name"], "Бизнес 100");

    // --- register with Latin look-alikes, other case and spacing in the contract number
    let reg = s
        .register(
            "ktc-KTC-14 64440/2/дп-11",
            "940 140 000 385",
            "Aigerim@Example.KZ",
        )
        .await;
    assert_eq!(reg.status, StatusCode::CREATED, "{}", reg.text);
    assert_eq!(reg.body["login"], "4445");
    assert!(reg.body["message"]
        .as_str()
        .unwrap()
        .contains("Регистрация прошла успешно"));

    let welcome = sink.next(10).await;
    assert_eq!(welcome.rcpt, vec!["aigerim@example.kz".to_owned()]);
    assert_eq!(
        welcome.line_value("Имя пользователя: ").as_deref(),
        Some("4445")
    );
    let password = welcome.line_value("Пароль: ").expect("password line");
    assert!(password.chars().count() >= 10);
    assert!(welcome
        .text()
        .contains(&format!("по ссылке: {PUBLIC_URL}/")));
    // The generated password is nowhere in the store once the email is out.
    s.outbox_settled().await;
    let outbox = s.app.store().outbox().unwrap();
    assert!(outbox.iter().all(|e| !e.body.contains(&password)));

    // A second registration of the same contract
    s.register(CONTRACT, BIN, "other@example.kz")
        .await
        .error(StatusCode::CONFLICT, "already_registered");

    // --- login, /me
    let login = s.login("4445", &password).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text);
    let cookie = login
        .headers
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with("qorgan_session="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Max-Age"),
        "without remember_me the cookie lasts the browser session: {cookie}"
    );
    let token = login.body["token"].as_str().unwrap().to_owned();
    let me = s.call(Method::GET, "/api/v1/me", Some(&token), None).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
    assert_eq!(me.body["account_number"], "4445");
    assert_eq!(me.body["contract_number"], CONTRACT);
    assert_eq!(me.body["balance_tiyn"], -1_500_000);
    assert_eq!(me.body["user"]["is_owner"], true);
    assert_eq!(me.body["user"]["can_manage_users"], true);
    assert_eq!(me.body["user"]["email"], "aigerim@example.kz");

    // The cookie works as well as the bearer token.
    let cookie_pair = cookie.split(';').next().unwrap().to_owned();
    let me_cookie = s
        .http
        .get(s.url("/api/v1/me"))
        .header("cookie", &cookie_pair)
        .send()
        .await
        .unwrap();
    assert_eq!(me_cookie.status(), StatusCode::OK);
    // remember_me gives a long-lived cookie
    let remembered = s
        .call(
            Method::POST,
            "/api/v1/session",
            None,
            Some(json!({"username": "4445", "password": password, "remember_me": true})),
        )
        .await;
    assert!(remembered
        .headers
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("Max-Age=2592000"));
    let remembered_token = remembered.body["token"].as_str().unwrap().to_owned();

    // --- change password: the old one stops working; every session dies, this one included,
    // and the caller goes on with the fresh cookie of the answer
    let changed = s
        .call(
            Method::POST,
            "/api/v1/me/password",
            Some(&token),
            Some(json!({"current_password": password, "new_password": "новый-пароль-2026"})),
        )
        .await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT, "{}", changed.text);
    let fresh = session_cookie_token(&changed).expect("a fresh session cookie");
    assert_ne!(fresh, token);
    s.login("4445", &password)
        .await
        .error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    for old in [&token, &remembered_token] {
        s.call(Method::GET, "/api/v1/me", Some(old), None)
            .await
            .error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert_eq!(
        s.call(Method::GET, "/api/v1/me", Some(&fresh), None)
            .await
            .status,
        StatusCode::OK
    );
    let token = s.token("4445", "новый-пароль-2026").await;

    // --- forgot / reset
    let forgot = s
        .call(
            Method::POST,
            "/api/v1/password/forgot",
            None,
            Some(json!({"username": "4445"})),
        )
        .await;
    assert_eq!(forgot.status, StatusCode::ACCEPTED);
    let unknown = s
        .call(
            Method::POST,
            "/api/v1/password/forgot",
            None,
            Some(json!({"username": "nobody@example.kz"})),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::ACCEPTED, "no account probing");
    assert_eq!(unknown.body, forgot.body);
    let reset_mail = sink.next_to("aigerim@example.kz", 10).await;
    let link = reset_mail
        .link(&format!("{PUBLIC_URL}/reset-password?token="))
        .expect("reset link");
    let reset_token = link.split("token=").nth(1).unwrap().to_owned();
    s.call(
        Method::POST,
        "/api/v1/password/reset",
        None,
        Some(json!({"token": reset_token, "new_password": "short"})),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "weak_password");
    let reset = s
        .call(
            Method::POST,
            "/api/v1/password/reset",
            None,
            Some(json!({"token": reset_token, "new_password": "сброшенный-пароль"})),
        )
        .await;
    assert_eq!(reset.status, StatusCode::NO_CONTENT, "{}", reset.text);
    s.call(Method::GET, "/api/v1/me", Some(&token), None)
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    s.call(
        Method::POST,
        "/api/v1/password/reset",
        None,
        Some(json!({"token": reset_token, "new_password": "ещё-один-пароль"})),
    )
    .await
    .error(StatusCode::GONE, "token_invalid");
    let owner = s.token("4445", "сброшенный-пароль").await;

    // --- sub-users
    let a = s
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&owner),
            Some(json!({"email": "a@example.kz", "password": "пароль-для-A-123", "first_name": "Асель", "can_manage_users": true})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(a.body["email_confirmed"], false);
    let a_id = a.body["id"].as_u64().unwrap();
    let a_mail = sink.next_to("a@example.kz", 10).await;
    assert!(
        a_mail.line_value("Пароль: ").is_none(),
        "a typed password is never emailed"
    );
    s.login("a@example.kz", "пароль-для-A-123")
        .await
        .error(StatusCode::FORBIDDEN, "email_unconfirmed");
    let confirm = a_mail
        .link(&format!("{PUBLIC_URL}/confirm-email?token="))
        .expect("confirm link");
    let confirmed = s.http.get(s.confirm_api(&confirm)).send().await.unwrap();
    assert_eq!(confirmed.status(), StatusCode::OK);
    assert_eq!(
        s.http
            .get(s.confirm_api(&confirm))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::GONE,
        "single use"
    );
    let a_token = s.token("A@Example.kz", "пароль-для-A-123").await;

    s.call(
        Method::POST,
        "/api/v1/users",
        Some(&owner),
        Some(json!({"email": "a@example.kz", "generate_password": true})),
    )
    .await
    .error(StatusCode::CONFLICT, "email_taken");

    // A creates B with a generated password
    let b = s
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&a_token),
            Some(json!({"email": "b@example.kz", "generate_password": true})),
        )
        .await;
    assert_eq!(b.status, StatusCode::CREATED, "{}", b.text);
    let b_id = b.body["id"].as_u64().unwrap();
    assert_eq!(b.body["parent_id"].as_u64(), Some(a_id));
    let b_mail = sink.next_to("b@example.kz", 10).await;
    assert_eq!(
        b_mail.line_value("Имя пользователя: ").as_deref(),
        Some("b@example.kz")
    );
    let b_password = b_mail
        .line_value("Пароль: ")
        .expect("generated password is emailed");
    let b_confirm = b_mail
        .link(&format!("{PUBLIC_URL}/confirm-email?token="))
        .unwrap();
    assert_eq!(
        s.http
            .get(s.confirm_api(&b_confirm))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let b_token = s.token("b@example.kz", &b_password).await;

    // B may not add users, nor touch its parent, the owner, or itself
    s.call(
        Method::POST,
        "/api/v1/users",
        Some(&b_token),
        Some(json!({"email": "c@example.kz", "generate_password": true})),
    )
    .await
    .error(StatusCode::FORBIDDEN, "cannot_manage_users");
    s.call(
        Method::PATCH,
        &format!("/api/v1/users/{a_id}"),
        Some(&b_token),
        Some(json!({"first_name": "X"})),
    )
    .await
    .error(StatusCode::FORBIDDEN, "not_in_subtree");
    let owner_id = s
        .call(Method::GET, "/api/v1/me", Some(&owner), None)
        .await
        .body["user"]["id"]
        .as_u64()
        .unwrap();
    s.call(
        Method::DELETE,
        &format!("/api/v1/users/{owner_id}"),
        Some(&b_token),
        None,
    )
    .await
    .error(StatusCode::FORBIDDEN, "not_in_subtree");
    s.call(
        Method::PATCH,
        &format!("/api/v1/users/{b_id}"),
        Some(&b_token),
        Some(json!({"can_manage_users": true})),
    )
    .await
    .error(StatusCode::FORBIDDEN, "not_in_subtree");
    // A may not touch the owner (its parent) or escalate/delete itself
    s.call(
        Method::PATCH,
        &format!("/api/v1/users/{owner_id}"),
        Some(&a_token),
        Some(json!({"can_manage_users": false})),
    )
    .await
    .error(StatusCode::FORBIDDEN, "not_in_subtree");
    s.call(
        Method::DELETE,
        &format!("/api/v1/users/{a_id}"),
        Some(&a_token),
        None,
    )
    .await
    .error(StatusCode::FORBIDDEN, "not_in_subtree");
    s.call(
        Method::DELETE,
        &format!("/api/v1/users/{owner_id}"),
        Some(&owner),
        None,
    )
    .await
    .error(StatusCode::FORBIDDEN, "not_in_subtree");
    s.call(
        Method::PATCH,
        "/api/v1/users/999999999",
        Some(&a_token),
        Some(json!({"first_name": "X"})),
    )
    .await
    .error(StatusCode::NOT_FOUND, "user_not_found");

    // A changes B (below it); the owner sees both; A's list shows only B
    let patched = s
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{b_id}"),
            Some(&a_token),
            Some(json!({"position": "Бухгалтер"})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
    assert_eq!(patched.body["position"], "Бухгалтер");
    let a_list = s
        .call(Method::GET, "/api/v1/users", Some(&a_token), None)
        .await;
    assert_eq!(a_list.body.as_array().unwrap().len(), 1);
    let owner_list = s
        .call(Method::GET, "/api/v1/users", Some(&owner), None)
        .await;
    assert_eq!(owner_list.body.as_array().unwrap().len(), 2);

    // The owner deletes A: B moves up to the owner; A's session dies; A's email is free
    assert_eq!(
        s.call(
            Method::DELETE,
            &format!("/api/v1/users/{a_id}"),
            Some(&owner),
            None
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    s.call(Method::GET, "/api/v1/me", Some(&a_token), None)
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    let owner_list = s
        .call(Method::GET, "/api/v1/users", Some(&owner), None)
        .await;
    let users = owner_list.body.as_array().unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["id"].as_u64(), Some(b_id));
    assert_eq!(users[0]["parent_id"].as_u64(), Some(owner_id));

    // --- logout
    let out = s
        .call(Method::DELETE, "/api/v1/session", Some(&owner), None)
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert!(out
        .headers
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    s.call(Method::GET, "/api/v1/me", Some(&owner), None)
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    s.stop().await;
}

#[tokio::test]
async fn data_survives_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start().await;
    let cfg = config(dir.path(), &sink.url());
    let s = Server::start(&cfg, options()).await;
    let password = s
        .registered_owner(&mut sink, "7001", "Д-7001", "persist@example.kz")
        .await;
    s.operator(
        Method::POST,
        "/api/v1/operator/accounts/7001/charges",
        Some(json!({"amount_tiyn": 250, "description": "x"})),
    )
    .await;
    s.stop().await;

    let s = Server::start(&cfg, options()).await;
    let token = s.token("7001", &password).await;
    let me = s.call(Method::GET, "/api/v1/me", Some(&token), None).await;
    assert_eq!(me.body["balance_tiyn"], -250);
    s.register("Д-7001", BIN, "again@example.kz")
        .await
        .error(StatusCode::CONFLICT, "already_registered");
    s.stop().await;
}

#[tokio::test]
async fn cookie_authenticated_writes_from_another_origin_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start().await;
    let s = Server::start(&config(dir.path(), &sink.url()), options()).await;
    let password = s
        .registered_owner(&mut sink, "7002", "Д-7002", "csrf@example.kz")
        .await;
    let login = s.login("7002", &password).await;
    let cookie = login
        .headers
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let body = json!({"email": "x@example.kz", "generate_password": true}).to_string();

    let evil = s
        .http
        .post(s.url("/api/v1/users"))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(evil.status(), StatusCode::FORBIDDEN);
    let v: serde_json::Value = evil.json().await.unwrap();
    assert_eq!(v["error"]["code"], "csrf_rejected");

    // A form post (not JSON) is refused too, whatever its origin.
    let form = s
        .http
        .post(s.url("/api/v1/users"))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("email=x%40example.kz")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let same = s
        .http
        .post(s.url("/api/v1/users"))
        .header("cookie", &cookie)
        .header("origin", PUBLIC_URL)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), StatusCode::CREATED);
    s.stop().await;
}

// ------------------------------------------------------------------ sessions (RELIABILITY W3)

/// The token of the `qorgan_session` cookie an answer sets (`None` without one, or when it
/// clears the cookie).
pub(crate) fn session_cookie_token(r: &Resp) -> Option<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.split(';').next()?.strip_prefix("qorgan_session="))
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// `GET /me` with a token, as bearer or as the cookie: the status.
async fn me_status(s: &Server, token: &str, as_cookie: bool) -> StatusCode {
    let req = s.http.get(s.url("/api/v1/me"));
    let req = if as_cookie {
        req.header("cookie", format!("qorgan_session={token}"))
    } else {
        req.bearer_auth(token)
    };
    req.send().await.unwrap().status()
}

/// `POST /session` carrying `carried` (as the cookie, or as a bearer token).
async fn login_carrying(
    s: &Server,
    user: &str,
    password: &str,
    carried: &str,
    as_cookie: bool,
) -> Resp {
    let req = s
        .http
        .post(s.url("/api/v1/session"))
        .json(&json!({"username": user, "password": password}));
    let req = if as_cookie {
        req.header("cookie", format!("qorgan_session={carried}"))
    } else {
        req.bearer_auth(carried)
    };
    let r = req.send().await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    Resp {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        text,
    }
}

#[tokio::test]
async fn login_mints_a_new_token_and_revokes_the_one_the_request_carried() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start().await;
    let s = Server::start(&config(dir.path(), &sink.url()), options()).await;
    let password = s
        .registered_owner(&mut sink, "7101", "Д-7101", "rotate@example.kz")
        .await;
    let t1 = s.token("7101", &password).await;
    // 256 random bits as URL-safe base64, different every time.
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&t1)
        .expect("base64url token");
    assert_eq!(raw.len(), 32, "{t1}");

    // Logging in again from a browser that holds T1 (cookie): a new token; T1 is revoked.
    let again = login_carrying(&s, "7101", &password, &t1, true).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    let t2 = again.body["token"].as_str().unwrap().to_owned();
    assert_ne!(t2, t1);
    assert_eq!(session_cookie_token(&again).as_deref(), Some(t2.as_str()));
    assert_eq!(me_status(&s, &t1, true).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me_status(&s, &t2, false).await, StatusCode::OK);
    // The same with a bearer token.
    let t3 = login_carrying(&s, "7101", &password, &t2, false).await.body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(t3, t2);
    assert_eq!(me_status(&s, &t2, false).await, StatusCode::UNAUTHORIZED);
    // Fixation: a token chosen by an attacker and planted as the cookie is never adopted.
    let planted = "attacker-chosen-session-token-0123456789abc";
    let fixed = login_carrying(&s, "7101", &password, planted, true).await;
    assert_eq!(fixed.status, StatusCode::OK);
    let t4 = fixed.body["token"].as_str().unwrap().to_owned();
    assert_ne!(t4, planted);
    assert_eq!(me_status(&s, planted, true).await, StatusCode::UNAUTHORIZED);
    // A failed login logs nobody out.
    login_carrying(&s, "7101", "wrong-password-1", &t4, true)
        .await
        .error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    assert_eq!(me_status(&s, &t4, true).await, StatusCode::OK);
    assert_eq!(
        me_status(&s, &t3, false).await,
        StatusCode::OK,
        "others live"
    );

    // Logout by cookie revokes that session on the server: the token is dead both ways, and
    // the user's other sessions live on.
    let out = s
        .http
        .delete(s.url("/api/v1/session"))
        .header("cookie", format!("qorgan_session={t4}"))
        .header("origin", PUBLIC_URL)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert_eq!(me_status(&s, &t4, true).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me_status(&s, &t4, false).await, StatusCode::UNAUTHORIZED);
    s.call(Method::DELETE, "/api/v1/session", Some(&t4), None)
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(me_status(&s, &t3, false).await, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn password_change_revokes_every_session_and_rotates_the_callers_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start().await;
    let s = Server::start(&config(dir.path(), &sink.url()), options()).await;
    let password = s
        .registered_owner(&mut sink, "7102", "Д-7102", "change@example.kz")
        .await;
    let remembered = s
        .call(
            Method::POST,
            "/api/v1/session",
            None,
            Some(json!({"username": "7102", "password": password, "remember_me": true})),
        )
        .await;
    let caller = remembered.body["token"].as_str().unwrap().to_owned();
    let others: Vec<String> = [
        s.token("7102", &password).await,
        s.token("7102", &password).await,
    ]
    .into();
    let changed = s
        .http
        .post(s.url("/api/v1/me/password"))
        .header("cookie", format!("qorgan_session={caller}"))
        .header("origin", PUBLIC_URL)
        .json(&json!({"current_password": password, "new_password": "сменённый-пароль-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    let cookie = changed
        .headers()
        .get("set-cookie")
        .expect("fresh cookie")
        .to_str()
        .unwrap()
        .to_owned();
    let fresh = cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("qorgan_session=")
        .unwrap()
        .to_owned();
    assert_ne!(fresh, caller);
    // "Remember me" carries over to the fresh cookie, without extending the lifetime.
    let max_age: u64 = cookie
        .split("; ")
        .find_map(|p| p.strip_prefix("Max-Age="))
        .expect("Max-Age kept for a remembered session")
        .parse()
        .unwrap();
    assert!((2_592_000 - 60..=2_592_000).contains(&max_age), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    for old in others.iter().chain([&caller]) {
        assert_eq!(me_status(&s, old, false).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(me_status(&s, &fresh, true).await, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn sessions_end_after_the_idle_limit_and_the_absolute_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start().await;
    let mut cfg = config(dir.path(), &sink.url());
    cfg.auth.session_idle_secs = 2;
    cfg.auth.session_ttl_secs = 6;
    let s = Server::start(&cfg, options()).await;
    let password = s
        .registered_owner(&mut sink, "7103", "Д-7103", "expiry@example.kz")
        .await;
    let active = s.token("7103", &password).await;
    let idle = s.token("7103", &password).await;
    let remembered = s
        .call(
            Method::POST,
            "/api/v1/session",
            None,
            Some(json!({"username": "7103", "password": password, "remember_me": true})),
        )
        .await
        .body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let start = std::time::Instant::now();
    // Times are whole seconds: used every second, `active` never idles (gap ≤ 2 s); its
    // absolute end is login + 6 s, certain to have passed at 7 s and not to have at ≤ 4 s.
    let mut log = Vec::new();
    for second in 1..=7u64 {
        tokio::time::sleep_until((start + Duration::from_secs(second)).into()).await;
        let st = me_status(&s, &active, false).await;
        log.push((second, st.as_u16()));
        if second <= 4 {
            assert_eq!(st, StatusCode::OK, "active at {second} s: {log:?}");
        }
        if second == 3 {
            assert_eq!(
                me_status(&s, &idle, false).await,
                StatusCode::UNAUTHORIZED,
                "unused for 3 s with a 2 s idle limit"
            );
        }
    }
    assert_eq!(
        log.last().map(|l| l.1),
        Some(401),
        "past the absolute lifetime: {log:?}"
    );
    // "Remember me" is not idle-limited: unused for 7 s, it still works.
    assert_eq!(me_status(&s, &remembered, false).await, StatusCode::OK);
    // An ended session is deleted, not only refused.
    use sha2::Digest as _;
    for t in [&idle, &active] {
        let h: [u8; 32] = sha2::Sha256::digest(t.as_bytes()).into();
        assert!(s.app.store().session(&h).unwrap().is_none());
    }
    println!(
        "W3: idle limit 2 s and absolute 6 s enforced; statuses of the active session by second: {log:?}"
    );
    s.stop().await;
}

/// A sub-user created by the holder of `by`, its email confirmed: (id, password).
pub(crate) async fn confirmed_sub_user(
    s: &Server,
    sink: &mut SmtpSink,
    by: &str,
    email: &str,
    can_manage_users: bool,
) -> (u64, String) {
    let password = format!("пароль-{email}");
    let r = s
        .call(
            Method::POST,
            "/api/v1/users",
            Some(by),
            Some(
                json!({"email": email, "password": password, "can_manage_users": can_manage_users}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let mail = sink.next_to(email, 10).await;
    // Whatever the public URL of the server (some tests point it at the listener).
    let text = mail.text();
    let token = text
        .split_whitespace()
        .find_map(|w| w.split_once("/confirm-email?token=").map(|(_, t)| t))
        .expect("confirm link");
    let confirmed = s
        .http
        .get(s.url(&format!("/api/v1/users/confirm?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), StatusCode::OK);
    (r.body["id"].as_u64().unwrap(), password)
}

#[tokio::test]
async fn revoking_a_sub_users_permission_or_deleting_it_ends_its_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start().await;
    let s = Server::start(&config(dir.path(), &sink.url()), options()).await;
    let password = s
        .registered_owner(&mut sink, "7104", "Д-7104", "perm@example.kz")
        .await;
    let owner = s.token("7104", &password).await;
    let (m_id, m_password) = confirmed_sub_user(&s, &mut sink, &owner, "m@example.kz", true).await;
    let m = s.token("m@example.kz", &m_password).await;
    let create = |token: String, email: &'static str| {
        let s = &s;
        async move {
            s.call(
                Method::POST,
                "/api/v1/users",
                Some(&token),
                Some(json!({"email": email, "generate_password": true})),
            )
            .await
        }
    };
    assert_eq!(
        create(m.clone(), "c1@example.kz").await.status,
        StatusCode::CREATED
    );

    let patched = s
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{m_id}"),
            Some(&owner),
            Some(json!({"can_manage_users": false})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
    // The very next request with the old token is refused; nothing more is created with it.
    create(m.clone(), "c2@example.kz")
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    let m2 = s.token("m@example.kz", &m_password).await;
    create(m2.clone(), "c3@example.kz")
        .await
        .error(StatusCode::FORBIDDEN, "cannot_manage_users");
    // A change that is not a permission leaves the sessions alone.
    let renamed = s
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{m_id}"),
            Some(&owner),
            Some(json!({"position": "Инженер"})),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK);
    assert_eq!(me_status(&s, &m2, false).await, StatusCode::OK);
    // Deleting the user ends its sessions and its login.
    let deleted = s
        .call(
            Method::DELETE,
            &format!("/api/v1/users/{m_id}"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(me_status(&s, &m2, false).await, StatusCode::UNAUTHORIZED);
    s.login("m@example.kz", &m_password)
        .await
        .error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    let emails: Vec<String> = s
        .app
        .store()
        .outbox()
        .unwrap()
        .iter()
        .map(|e| e.to.clone())
        .collect();
    assert!(
        !emails
            .iter()
            .any(|e| e == "c2@example.kz" || e == "c3@example.kz"),
        "{emails:?}"
    );
    s.stop().await;
}

// ------------------------------------------------------------------ reset tokens (W5)

/// Every file under `dir` (recursively, at most 8 levels and 10 000 files).
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_owned(), 0)];
    while let Some((d, depth)) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() && depth < 8 {
                stack.push((path, depth + 1));
            } else if path.is_file() && out.len() < 10_000 {
                out.push(path);
            }
        }
    }
    out
}

fn occurrences(hay: &[u8], needle: &[u8]) -> usize {
    if needle.is_empty() || hay.len() < needle.len() {
        return 0;
    }
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// The byte strings a raw token could be stored as: its text, and its decoded 32 bytes.
fn raw_forms(token: &str) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    let mut forms = vec![token.as_bytes().to_vec()];
    if let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token) {
        forms.push(bytes);
    }
    forms
}

/// Scans every file under `dir` for each needle: (files, bytes, occurrences per needle).
fn scan(dir: &std::path::Path, needles: &[Vec<u8>]) -> (usize, usize, Vec<usize>) {
    let files = files_under(dir);
    let mut bytes = 0;
    let mut found = vec![0; needles.len()];
    for f in &files {
        let data = std::fs::read(f).unwrap();
        bytes += data.len();
        for (n, needle) in found.iter_mut().zip(needles) {
            *n += occurrences(&data, needle);
        }
    }
    (files.len(), bytes, found)
}

fn sha256(text: &str) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes()).to_vec()
}

/// W5 and W3 at rest: the reset link is single use, revokes the owner's sessions, logs nobody
/// in and answers alike for unknown names; and no raw token or password is in any file of
/// the data dir, even while the reset email waits for an SMTP server that is down (the
/// worst case: the persisted outbox must keep the link until it is delivered).
#[tokio::test]
async fn password_reset_is_single_use_revokes_sessions_and_no_raw_token_reaches_the_store_files() {
    let dir = tempfile::tempdir().unwrap();
    // The sink's address is fixed so that it can go down and come back.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut sink = SmtpSink::start_on(addr).await;
    let s = Server::start(&config(dir.path(), &sink.url()), options()).await;
    let password = s
        .registered_owner(&mut sink, "7105", "Д-7105", "reset@example.kz")
        .await;
    let owner = s.token("7105", &password).await;
    let remembered = s
        .call(
            Method::POST,
            "/api/v1/session",
            None,
            Some(json!({"username": "7105", "password": password, "remember_me": true})),
        )
        .await
        .body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, sub_password) =
        confirmed_sub_user(&s, &mut sink, &owner, "sub7105@example.kz", false).await;
    let sub = s.token("sub7105@example.kz", &sub_password).await;
    // An unconfirmed sub-user (cannot log in, gets no reset link either).
    let pending = s
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&owner),
            Some(json!({"email": "pending7105@example.kz", "generate_password": true})),
        )
        .await;
    assert_eq!(pending.status, StatusCode::CREATED);
    let invitation = sink.next_to("pending7105@example.kz", 10).await;
    let generated = invitation
        .line_value("Пароль: ")
        .expect("generated password");
    s.outbox_settled().await;

    // SMTP goes down: the reset email stays in the outbox, retried.
    drop(sink);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let forgot = |name: &'static str| {
        let s = &s;
        async move {
            s.call(
                Method::POST,
                "/api/v1/password/forgot",
                None,
                Some(json!({"username": name})),
            )
            .await
        }
    };
    let known = forgot("7105").await;
    assert_eq!(known.status, StatusCode::ACCEPTED);
    // The same answer whoever is named.
    for other in [
        "7199",
        "nobody@example.kz",
        "pending7105@example.kz",
        "  7199  ",
    ] {
        let r = forgot(other).await;
        assert_eq!((r.status, &r.body), (known.status, &known.body), "{other}");
    }
    let mut waiting = None;
    for _ in 0..200 {
        waiting = s.app.store().outbox().unwrap().into_iter().find(|e| {
            e.to == "reset@example.kz"
                && e.status == qorgan_control::store::MailStatus::Pending
                && e.attempts >= 1
        });
        if waiting.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let waiting = waiting.expect("the reset email waits for SMTP after a failed attempt");
    let reset_token = waiting
        .body
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{PUBLIC_URL}/reset-password?token=")))
        .expect("link in the queued body")
        .to_owned();
    assert_eq!(
        raw_forms(&reset_token).last().unwrap().len(),
        32,
        "256 bits"
    );
    s.app.store().flush().unwrap();
    let mut needles = raw_forms(&reset_token);
    needles.push(sha256(&reset_token));
    let (_, _, found) = scan(dir.path(), &needles);
    let raw_waiting: usize = found[..found.len() - 1].iter().sum();
    let hash_waiting = found[found.len() - 1];
    assert!(
        hash_waiting >= 1,
        "the scan must see the stored hash, or it proves nothing"
    );
    assert_eq!(
        raw_waiting, 0,
        "the queued reset link is in the store files in clear"
    );

    // SMTP is back: the link arrives; unknown and unconfirmed names got none.
    let mut sink = SmtpSink::start_on(addr).await;
    let mail = sink.next_to("reset@example.kz", 20).await;
    let link = mail
        .link(&format!("{PUBLIC_URL}/reset-password?token="))
        .expect("reset link built from http.public_url");
    assert_eq!(link.split("token=").nth(1), Some(reset_token.as_str()));
    assert!(
        sink.quiet_for(300).await,
        "no link for unknown or unconfirmed names"
    );

    let reset = |token: String, new_password: &'static str| {
        let s = &s;
        async move {
            s.call(
                Method::POST,
                "/api/v1/password/reset",
                None,
                Some(json!({"token": token, "new_password": new_password})),
            )
            .await
        }
    };
    reset("x".repeat(43), "подобранный-пароль")
        .await
        .error(StatusCode::GONE, "token_invalid");
    let done = reset(reset_token.clone(), "сброшенный-пароль-7105").await;
    assert_eq!(done.status, StatusCode::NO_CONTENT, "{}", done.text);
    // No auto-login: the answer carries no session.
    assert!(done.headers.get("set-cookie").is_none());
    assert!(done.text.is_empty());
    for t in [&owner, &remembered] {
        assert_eq!(me_status(&s, t, false).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        me_status(&s, &sub, false).await,
        StatusCode::OK,
        "only the owner's sessions end"
    );
    reset(reset_token.clone(), "ещё-один-пароль-7105")
        .await
        .error(StatusCode::GONE, "token_invalid");
    s.login("7105", &password)
        .await
        .error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    let fresh = s.token("7105", "сброшенный-пароль-7105").await;

    // Grep every file of the data dir (sled's files and all) for the raw secrets.
    s.outbox_settled().await;
    s.app.store().flush().unwrap();
    let sessions = [&owner, &remembered, &sub, &fresh];
    let mut needles: Vec<Vec<u8>> = Vec::new();
    for t in sessions {
        needles.extend(raw_forms(t));
    }
    let n_sessions = needles.len();
    needles.extend(raw_forms(&reset_token));
    let n_reset = needles.len();
    for p in [
        password.as_str(),
        generated.as_str(),
        "сброшенный-пароль-7105",
        &sub_password,
    ] {
        needles.push(p.as_bytes().to_vec());
    }
    needles.push(sha256(&fresh));
    let (files, bytes, found) = scan(dir.path(), &needles);
    let raw_sessions: usize = found[..n_sessions].iter().sum();
    let raw_reset: usize = found[n_sessions..n_reset].iter().sum();
    let raw_passwords: usize = found[n_reset..needles.len() - 1].iter().sum();
    let hashes = found[needles.len() - 1];
    println!(
        "W5: while the reset email waited for SMTP: raw reset token 0 in the store files (its \
         SHA-256 found {hash_waiting}x); after the reset and a login: {files} files, {bytes} bytes \
         under the data dir: raw session tokens {raw_sessions}, raw reset token {raw_reset}, raw \
         passwords {raw_passwords} (the live session's SHA-256 found {hashes}x)"
    );
    assert!(
        hashes >= 1,
        "the scan must see the stored hash, or it proves nothing"
    );
    assert_eq!(raw_sessions, 0, "a raw session token is in the store files");
    assert_eq!(raw_reset, 0, "the raw reset token is in the store files");
    assert_eq!(raw_passwords, 0, "a password is in the store files");
    s.stop().await;
}

#[tokio::test]
async fn a_reset_token_expires_after_its_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start().await;
    let mut cfg = config(dir.path(), &sink.url());
    cfg.auth.reset_ttl_secs = 1;
    let s = Server::start(&cfg, options()).await;
    let password = s
        .registered_owner(&mut sink, "7106", "Д-7106", "ttl@example.kz")
        .await;
    let r = s
        .call(
            Method::POST,
            "/api/v1/password/forgot",
            None,
            Some(json!({"username": "7106"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let link = sink
        .next_to("ttl@example.kz", 10)
        .await
        .link(&format!("{PUBLIC_URL}/reset-password?token="))
        .unwrap();
    let token = link.split("token=").nth(1).unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    s.call(
        Method::POST,
        "/api/v1/password/reset",
        None,
        Some(json!({"token": token, "new_password": "просроченный-пароль"})),
    )
    .await
    .error(StatusCode::GONE, "token_invalid");
    assert_eq!(s.login("7106", &password).await.status, StatusCode::OK);
    s.stop().await;
}
