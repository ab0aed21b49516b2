//! Bad input on every endpoint: always the JSON error object with a 4xx, never a 500, HTML or
//! an empty body; and a refused call changes nothing in the store.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::*;

struct Endpoint {
    method: Method,
    path: String,
    auth: Option<String>,
    valid: Value,
    /// A string field whose type we break and whose length we overflow.
    text_field: &'static str,
    /// A required field (None when every field is optional).
    required: Option<&'static str>,
}

async fn fixture() -> (tempfile::TempDir, SmtpSink, Server, String, u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start().await;
    let s = Server::start(&config(dir.path(), &sink.url()), options()).await;
    let password = s
        .registered_owner(&mut sink, "5001", "Д-5001", "owner@example.kz")
        .await;
    let owner = s.token("5001", &password).await;
    let sub = s
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&owner),
            Some(json!({"email": "sub@example.kz", "generate_password": true})),
        )
        .await;
    assert_eq!(sub.status, StatusCode::CREATED);
    let sub_id = sub.body["id"].as_u64().unwrap();
    sink.next_to("sub@example.kz", 10).await;
    s.outbox_settled().await;
    (dir, sink, s, owner, sub_id)
}

fn endpoints(owner: &str, sub_id: u64) -> Vec<Endpoint> {
    let op = Some(OPERATOR_TOKEN.to_owned());
    let me = Some(owner.to_owned());
    vec![
        Endpoint {
            method: Method::POST,
            path: "/api/v1/operator/accounts".into(),
            auth: op.clone(),
            valid: json!({"account_number": "5002", "contract_number": "Д-5002", "iin_bin": BIN, "name": "N"}),
            text_field: "name",
            required: Some("iin_bin"),
        },
        Endpoint {
            method: Method::POST,
            path: "/api/v1/operator/accounts/5001/networks".into(),
            auth: op.clone(),
            valid: json!({"cidr": "198.51.100.0/24"}),
            text_field: "cidr",
            required: Some("cidr"),
        },
        Endpoint {
            method: Method::POST,
            path: "/api/v1/operator/accounts/5001/services".into(),
            auth: op.clone(),
            valid: json!({"kind": "internet", "name": "Тариф", "monthly_fee_tiyn": 100}),
            text_field: "name",
            required: Some("monthly_fee_tiyn"),
        },
        Endpoint {
            method: Method::POST,
            path: "/api/v1/operator/accounts/5001/charges".into(),
            auth: op,
            valid: json!({"amount_tiyn": 100, "description": "x"}),
            text_field: "description",
            required: Some("amount_tiyn"),
        },
        Endpoint {
            method: Method::POST,
            path: "/api/v1/register".into(),
            auth: None,
            valid: json!({"email": "r@example.kz", "phone": "87012345678", "contract_number": "Д-5001", "iin_bin": BIN}),
            text_field: "full_name",
            required: Some("phone"),
        },
        Endpoint {
            method: Method::POST,
            path: "/api/v1/session".into(),
            auth: None,
            valid: json!({"username": "5001", "password": "whatever-123"}),
            text_field: "username",
            required: Some("password"),
        },
        Endpoint {
            method: Method::POST,
            path: "/api/v1/password/forgot".into(),
            auth: None,
            valid: json!({"username": "5001"}),
            text_field: "username",
            required: Some("username"),
        },
        Endpoint {
            method: Method::POST,
            path: "/api/v1/password/reset".into(),
            auth: None,
            valid: json!({"token": "t", "new_password": "long-enough-pw"}),
            text_field: "new_password",
            required: Some("token"),
        },
        Endpoint {
            method: Method::POST,
            path: "/api/v1/me/password".into(),
            auth: me.clone(),
            valid: json!({"current_password": "x", "new_password": "long-enough-pw"}),
            text_field: "new_password",
            required: Some("current_password"),
        },
        Endpoint {
            method: Method::POST,
            path: "/api/v1/users".into(),
            auth: me.clone(),
            valid: json!({"email": "n@example.kz", "generate_password": true}),
            text_field: "first_name",
            required: Some("email"),
        },
        Endpoint {
            method: Method::PATCH,
            path: format!("/api/v1/users/{sub_id}"),
            auth: me,
            valid: json!({"first_name": "X"}),
            text_field: "position",
            required: None,
        },
    ]
}

fn with(valid: &Value, key: &str, value: Value) -> Vec<u8> {
    let mut v = valid.clone();
    v.as_object_mut().unwrap().insert(key.to_owned(), value);
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test]
async fn every_endpoint_answers_bad_bodies_with_the_json_error_and_changes_nothing() {
    let (_dir, _sink, s, owner, sub_id) = fixture().await;
    let before = s.app.store().checksum().unwrap();
    let json_ct = Some("application/json");
    for e in endpoints(&owner, sub_id) {
        let auth = e.auth.as_deref();
        let ctx = format!("{} {}", e.method, e.path);
        let call = |ct: Option<&'static str>, body: Vec<u8>| {
            s.raw(e.method.clone(), &e.path, auth, ct, body)
        };

        call(json_ct, b"{".to_vec())
            .await
            .error(StatusCode::BAD_REQUEST, "malformed_json");
        call(json_ct, b"{,}".to_vec())
            .await
            .error(StatusCode::BAD_REQUEST, "malformed_json");
        call(json_ct, b"not json".to_vec())
            .await
            .error(StatusCode::BAD_REQUEST, "malformed_json");
        call(json_ct, Vec::new())
            .await
            .error(StatusCode::BAD_REQUEST, "malformed_json");
        call(json_ct, b"{\"\xff\xfe\": 1}".to_vec())
            .await
            .error(StatusCode::BAD_REQUEST, "malformed_json");
        call(
            json_ct,
            [serde_json::to_vec(&e.valid).unwrap(), b" trailing".to_vec()].concat(),
        )
        .await
        .error(StatusCode::BAD_REQUEST, "malformed_json");

        let unknown = call(json_ct, with(&e.valid, "bogus", json!(1))).await;
        assert_eq!(
            unknown.error(StatusCode::BAD_REQUEST, "unknown_field")["field"],
            "bogus",
            "{ctx}"
        );

        let wrong = call(json_ct, with(&e.valid, e.text_field, json!(12345))).await;
        assert_eq!(
            wrong.error(StatusCode::BAD_REQUEST, "invalid_type")["field"],
            e.text_field,
            "{ctx}"
        );
        call(json_ct, b"[1,2,3]".to_vec())
            .await
            .error(StatusCode::BAD_REQUEST, "invalid_type");

        let valid = serde_json::to_vec(&e.valid).unwrap();
        call(Some("text/plain"), valid.clone())
            .await
            .error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
        call(None, valid.clone())
            .await
            .error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
        call(Some("application/x-www-form-urlencoded"), b"a=b".to_vec())
            .await
            .error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");

        if let Some(req) = e.required {
            let mut v = e.valid.clone();
            v.as_object_mut().unwrap().remove(req);
            let missing = call(json_ct, serde_json::to_vec(&v).unwrap()).await;
            assert_eq!(
                missing.error(StatusCode::BAD_REQUEST, "missing_field")["field"],
                req,
                "{ctx}"
            );
        }

        // Longer than the field allows but within the body limit: 400 naming the field.
        let long = call(
            json_ct,
            with(&e.valid, e.text_field, json!("я".repeat(1000))),
        )
        .await;
        assert!(
            long.status == StatusCode::BAD_REQUEST,
            "{ctx}: {}",
            long.text
        );
        assert!(
            long.body["error"]["code"].is_string(),
            "{ctx}: {}",
            long.text
        );
        assert_eq!(
            long.body["error"]["field"], e.text_field,
            "{ctx}: {}",
            long.text
        );

        // Beyond http.max_body_bytes: 413.
        call(
            json_ct,
            with(&e.valid, e.text_field, json!("x".repeat(70_000))),
        )
        .await
        .error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    }
    assert_eq!(
        s.app.store().checksum().unwrap(),
        before,
        "a refused call changed the store"
    );
    s.stop().await;
}

#[tokio::test]
async fn registration_field_errors_and_contract_mismatch() {
    let (_dir, _sink, s, _owner, _) = fixture().await;
    s.provision("5003", "Д-5003", IIN).await;
    s.outbox_settled().await;
    let before = s.app.store().checksum().unwrap();
    let base = json!({"email": "r@example.kz", "phone": "87012345678", "contract_number": "Д-5003", "iin_bin": IIN});
    let reg = |key: &'static str, value: Value| {
        let mut v = base.clone();
        v.as_object_mut().unwrap().insert(key.to_owned(), value);
        s.call(Method::POST, "/api/v1/register", None, Some(v))
    };
    for (iin, why) in [
        ("871008401428", "check digit"),
        ("87100840142", "11 digits"),
        ("901301300017", "month 13"),
        ("abc", "letters"),
    ] {
        let r = reg("iin_bin", json!(iin)).await;
        assert_eq!(
            r.error(StatusCode::BAD_REQUEST, "invalid_iin_bin")["field"],
            "iin_bin",
            "{why}"
        );
    }
    assert_eq!(
        reg("phone", json!("+7 727 237 77 77"))
            .await
            .error(StatusCode::BAD_REQUEST, "invalid_phone")["field"],
        "phone"
    );
    assert_eq!(
        reg("email", json!("not-an-email"))
            .await
            .error(StatusCode::BAD_REQUEST, "invalid_email")["field"],
        "email"
    );
    assert_eq!(
        reg("email", json!(format!("{}@example.kz", "a".repeat(250))))
            .await
            .error(StatusCode::BAD_REQUEST, "invalid_email")["field"],
        "email"
    );
    reg("contract_number", json!("Д-5003; DROP"))
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_contract_number");
    reg("contract_number", json!(""))
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_contract_number");

    // A valid IIN of somebody else, and an unknown contract: the same generic answer.
    let wrong_iin = reg("iin_bin", json!("760212350620")).await;
    let msg = wrong_iin.error(StatusCode::UNPROCESSABLE_ENTITY, "contract_not_matched")["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(msg.contains("Section E, item 27.3"), "{msg}");
    assert!(msg.contains("Раздел E, пункт 27.3"), "{msg}");
    let unknown = reg("contract_number", json!("Д-9999")).await;
    unknown.error(StatusCode::UNPROCESSABLE_ENTITY, "contract_not_matched");
    assert_eq!(
        unknown.body, wrong_iin.body,
        "no probing which part was wrong"
    );
    // The account that does exist but with a BIN/IIN mixup of another provisioned account
    let other = reg("contract_number", json!("Д-5001")).await;
    other.error(StatusCode::UNPROCESSABLE_ENTITY, "contract_not_matched");

    assert_eq!(
        s.app.store().checksum().unwrap(),
        before,
        "refused registrations changed the store"
    );
    assert!(s
        .app
        .store()
        .account_by_number("5003")
        .unwrap()
        .unwrap()
        .owner_user_id
        .is_none());
    s.stop().await;
}

#[tokio::test]
async fn operator_errors() {
    let (_dir, _sink, s, owner, _) = fixture().await;
    let before = s.app.store().checksum().unwrap();
    let post = |path: &'static str, body: Value| s.operator(Method::POST, path, Some(body));

    // auth
    let no_token = s
        .call(Method::GET, "/api/v1/operator/accounts/5001", None, None)
        .await;
    no_token.error(StatusCode::UNAUTHORIZED, "unauthorized");
    s.call(
        Method::GET,
        "/api/v1/operator/accounts/5001",
        Some("wrong-token-0123456789"),
        None,
    )
    .await
    .error(StatusCode::UNAUTHORIZED, "unauthorized");
    // A customer's session token is not an operator token.
    s.call(
        Method::GET,
        "/api/v1/operator/accounts/5001",
        Some(&owner),
        None,
    )
    .await
    .error(StatusCode::UNAUTHORIZED, "unauthorized");

    s.operator(Method::GET, "/api/v1/operator/accounts/0000", None)
        .await
        .error(StatusCode::NOT_FOUND, "account_not_found");
    post(
        "/api/v1/operator/accounts",
        json!({"account_number": "50-01", "contract_number": "Д", "iin_bin": BIN, "name": "N"}),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_account_number");
    post("/api/v1/operator/accounts", json!({"account_number": "5009", "contract_number": "Д", "iin_bin": "940140000386", "name": "N"}))
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_iin_bin");
    post(
        "/api/v1/operator/accounts",
        json!({"account_number": "5009", "contract_number": "Д", "iin_bin": BIN, "name": "  "}),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "missing_field");
    let taken = post(
        "/api/v1/operator/accounts",
        json!({"account_number": "5009", "contract_number": "д-5001", "iin_bin": BIN, "name": "N"}),
    )
    .await;
    assert!(
        taken.error(StatusCode::CONFLICT, "contract_taken")["message"]
            .as_str()
            .unwrap()
            .contains("5001")
    );

    post(
        "/api/v1/operator/accounts/5001/networks",
        json!({"cidr": "10.0.0.0/33"}),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_cidr");
    post(
        "/api/v1/operator/accounts/5001/networks",
        json!({"cidr": "example.com"}),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_cidr");
    post(
        "/api/v1/operator/accounts/9999/networks",
        json!({"cidr": "10.0.0.0/8"}),
    )
    .await
    .error(StatusCode::NOT_FOUND, "account_not_found");
    post(
        "/api/v1/operator/accounts/5001/services",
        json!({"kind": "Bad Kind", "name": "x", "monthly_fee_tiyn": 1}),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_kind");
    post(
        "/api/v1/operator/accounts/5001/services",
        json!({"kind": "internet", "name": "x", "monthly_fee_tiyn": -1}),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_amount");
    post(
        "/api/v1/operator/accounts/5001/services",
        json!({"kind": "internet", "name": "x", "monthly_fee_tiyn": 1.5}),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_type");
    post(
        "/api/v1/operator/accounts/5001/charges",
        json!({"amount_tiyn": 0, "description": "x"}),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_amount");
    post(
        "/api/v1/operator/accounts/5001/charges",
        json!({"amount_tiyn": 5, "description": "x", "service_id": 424242}),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "unknown_service");
    assert_eq!(
        s.app.store().checksum().unwrap(),
        before,
        "refused operator calls changed the store"
    );

    // Overlap with another account names it.
    post(
        "/api/v1/operator/accounts/5001/networks",
        json!({"cidr": "192.0.2.0/24"}),
    )
    .await;
    s.provision("5010", "Д-5010", BIN).await;
    let overlap = post(
        "/api/v1/operator/accounts/5010/networks",
        json!({"cidr": "192.0.2.128/25"}),
    )
    .await;
    let msg = overlap.error(StatusCode::CONFLICT, "network_overlap")["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        msg.contains("5001") && msg.contains("192.0.2.0/24"),
        "{msg}"
    );
    let same = post(
        "/api/v1/operator/accounts/5001/networks",
        json!({"cidr": "192.0.2.0/24"}),
    )
    .await;
    assert_eq!(same.status, StatusCode::OK, "a retried mapping is harmless");
    s.stop().await;
}

#[tokio::test]
async fn placeholder_operator_token_closes_the_operator_api_outside_demo() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "");
    cfg.operator.token = qorgan_config::PLACEHOLDER_SECRET.to_owned();
    let s = Server::start(&cfg, options()).await;
    let body = json!({"account_number": "1", "contract_number": "1", "iin_bin": BIN, "name": "N"});
    s.call(
        Method::POST,
        "/api/v1/operator/accounts",
        Some("change-me"),
        Some(body.clone()),
    )
    .await
    .error(StatusCode::FORBIDDEN, "operator_token_unset");
    s.stop().await;

    let demo = qorgan_control::AppOptions {
        demo: true,
        ..options()
    };
    let s = Server::start(&cfg, demo).await;
    let r = s
        .call(
            Method::POST,
            "/api/v1/operator/accounts",
            Some("change-me"),
            Some(body),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let d = s.app.provision_demo().unwrap();
    assert!(d.created);
    assert!(!s.app.provision_demo().unwrap().created, "idempotent");
    // The demo contract registers (mail goes to the folder: mail.smtp is empty).
    let reg = s
        .register(&d.contract_number, &d.iin_bin, "demo@example.kz")
        .await;
    assert_eq!(reg.status, StatusCode::CREATED, "{}", reg.text);
    s.outbox_settled().await;
    let files: Vec<_> = std::fs::read_dir(dir.path().join("mail"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let eml = files
        .iter()
        .find(|p| p.extension().is_some_and(|x| x == "eml"))
        .expect("an .eml file");
    let text = std::fs::read_to_string(eml).unwrap();
    assert!(text.contains("To: demo@example.kz"), "{text}");
    s.stop().await;
}

#[tokio::test]
async fn routing_auth_and_query_errors_are_json() {
    let (_dir, _sink, s, owner, _) = fixture().await;
    s.call(Method::GET, "/api/v1/nope", None, None)
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    s.call(Method::GET, "/nope", None, None)
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    s.call(Method::GET, "/api/v1/register", None, None)
        .await
        .error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    s.call(Method::PUT, "/api/v1/me", Some(&owner), None)
        .await
        .error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    s.call(
        Method::PATCH,
        "/api/v1/users/abc",
        Some(&owner),
        Some(json!({})),
    )
    .await
    .error(StatusCode::NOT_FOUND, "not_found");
    s.call(Method::DELETE, "/api/v1/users/-1", Some(&owner), None)
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    s.call(Method::GET, "/api/v1/me", None, None)
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    s.call(Method::GET, "/api/v1/me", Some("garbage"), None)
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    s.call(Method::GET, "/api/v1/users", None, None)
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    s.call(Method::DELETE, "/api/v1/session", None, None)
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    s.call(Method::GET, "/api/v1/users/confirm", None, None)
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_query");
    s.call(Method::GET, "/api/v1/users/confirm?token=nope", None, None)
        .await
        .error(StatusCode::GONE, "token_invalid");
    s.call(
        Method::POST,
        "/api/v1/password/reset",
        None,
        Some(json!({"token": "nope", "new_password": "long-enough-pw"})),
    )
    .await
    .error(StatusCode::GONE, "token_invalid");
    s.call(
        Method::POST,
        "/api/v1/me/password",
        Some(&owner),
        Some(json!({"current_password": "wrong-one-123", "new_password": "long-enough-pw"})),
    )
    .await
    .error(StatusCode::FORBIDDEN, "wrong_password");
    s.call(
        Method::POST,
        "/api/v1/me/password",
        Some(&owner),
        Some(json!({"current_password": "x", "new_password": "5001"})),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "weak_password");
    s.call(
        Method::POST,
        "/api/v1/users",
        Some(&owner),
        Some(json!({"email": "z@example.kz"})),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "password_choice");
    s.call(
        Method::POST,
        "/api/v1/users",
        Some(&owner),
        Some(json!({"email": "z@example.kz", "password": "z@example.kz"})),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "weak_password");

    let health = s.call(Method::GET, "/health", None, None).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body["status"], "ok");
    s.stop().await;
}

#[tokio::test]
async fn openapi_document_lists_every_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&config(dir.path(), ""), options()).await;
    let doc = s
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc.body["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/operator/accounts", "post"),
        ("/api/v1/operator/accounts/{account_number}", "get"),
        (
            "/api/v1/operator/accounts/{account_number}/networks",
            "post",
        ),
        (
            "/api/v1/operator/accounts/{account_number}/services",
            "post",
        ),
        ("/api/v1/operator/accounts/{account_number}/charges", "post"),
        ("/api/v1/register", "post"),
        ("/api/v1/session", "post"),
        ("/api/v1/session", "delete"),
        ("/api/v1/password/forgot", "post"),
        ("/api/v1/password/reset", "post"),
        ("/api/v1/me/password", "post"),
        ("/api/v1/me", "get"),
        ("/api/v1/users", "get"),
        ("/api/v1/users", "post"),
        ("/api/v1/users/{id}", "patch"),
        ("/api/v1/users/{id}", "delete"),
        ("/api/v1/users/confirm", "get"),
        ("/health", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from openapi"
        );
    }
    let schemas = doc.body["components"]["schemas"].as_object().unwrap();
    assert!(schemas.contains_key("RegisterRequest") && schemas.contains_key("ErrorBody"));
    s.stop().await;
}
