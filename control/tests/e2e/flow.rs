//! The whole customer journey over HTTP with a real store and a real SMTP sink.

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

    // --- change password: the old one stops working; this session stays, the other one dies
    let changed = s
        .call(
            Method::POST,
            "/api/v1/me/password",
            Some(&token),
            Some(json!({"current_password": password, "new_password": "новый-пароль-2026"})),
        )
        .await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT, "{}", changed.text);
    s.login("4445", &password)
        .await
        .error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    assert_eq!(
        s.call(Method::GET, "/api/v1/me", Some(&token), None)
            .await
            .status,
        StatusCode::OK
    );
    s.call(Method::GET, "/api/v1/me", Some(&remembered_token), None)
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
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
