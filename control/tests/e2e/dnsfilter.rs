//! The DNS filter API against hostile input, sub-users and the operator's view (in-process
//! server over real HTTP; the resolver side is `policy.rs`).

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::*;

async fn owner(s: &Server, sink: &mut SmtpSink) -> String {
    let password = s
        .registered_owner(sink, "6101", "6101/1", "f@example.kz")
        .await;
    s.token("6101", &password).await
}

async fn put_text(s: &Server, token: &str, path: &str, body: &[u8]) -> Resp {
    s.raw(
        Method::PUT,
        path,
        Some(token),
        Some("text/plain; charset=utf-8"),
        body.to_vec(),
    )
    .await
}

#[tokio::test]
async fn bad_filter_input_gets_clear_errors_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start().await;
    let s = Server::start(&config(dir.path(), &sink.url()), options()).await;
    let token = owner(&s, &mut sink).await;
    let before = s
        .call(Method::GET, "/api/v1/dns-filter", Some(&token), None)
        .await;
    assert_eq!(before.status, StatusCode::OK);
    assert_eq!(before.body["enabled"], true);

    let put = |body| s.call(Method::PUT, "/api/v1/dns-filter", Some(&token), Some(body));
    put(json!({"enabled": true, "categories": ["no-such-list"], "block_mode": "nxdomain"}))
        .await
        .error(StatusCode::BAD_REQUEST, "unknown_category");
    let r = put(json!({"enabled": true, "categories": [], "block_mode": "custom_ip", "custom_ip": ["999.1.1.1"]})).await;
    assert_eq!(
        r.error(StatusCode::BAD_REQUEST, "invalid_custom_ip")["field"],
        "custom_ip"
    );
    put(json!({"enabled": true, "categories": [], "block_mode": "custom_ip"}))
        .await
        .error(StatusCode::BAD_REQUEST, "custom_ip_required");
    put(json!({"enabled": true, "categories": [], "block_mode": "custom_ip", "custom_ip": ["192.0.2.1", "192.0.2.2"]}))
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_custom_ip");
    let r = put(json!({"enabled": true, "categories": [], "block_mode": "sinkhole"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let after = s
        .call(Method::GET, "/api/v1/dns-filter", Some(&token), None)
        .await;
    assert_eq!(after.body, before.body, "nothing half-applied");

    // Lists: binary garbage, not UTF-8, the wrong media type, over the byte or rule limit.
    let list = "/api/v1/dns-filter/blocklist";
    put_text(&s, &token, list, b"ok.example\n\x00\x01\x02garbage")
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_list");
    put_text(&s, &token, list, b"caf\xe9.example\n")
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_list");
    s.raw(
        Method::PUT,
        list,
        Some(&token),
        Some("application/json"),
        b"[]".to_vec(),
    )
    .await
    .error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let many: String = (0..100_001).map(|i| format!("n{i}.example\n")).collect();
    put_text(&s, &token, list, many.as_bytes())
        .await
        .error(StatusCode::PAYLOAD_TOO_LARGE, "list_too_large");
    let huge = vec![b'a'; 64 * 1024 * 1024];
    put_text(&s, &token, list, &huge)
        .await
        .error(StatusCode::PAYLOAD_TOO_LARGE, "list_too_large");
    let r = s.call(Method::GET, list, Some(&token), None).await;
    assert_eq!(r.text, "", "no list was stored by the refused uploads");

    // A mixed upload keeps the valid rules and names the bad lines; strict keeps nothing.
    let r = put_text(
        &s,
        &token,
        list,
        "# my list\n||ads.example^\nexample.org/path\n0.0.0.0 t.example\n##.banner\n".as_bytes(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["rules"], 2);
    let lines: Vec<u64> = r.body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [3, 5]);
    let r = s
        .raw(
            Method::PUT,
            &format!("{list}?strict=true"),
            Some(&token),
            Some("text/plain"),
            b"new.example\n$$$\n".to_vec(),
        )
        .await;
    assert_eq!(
        r.error(StatusCode::BAD_REQUEST, "list_rejected")["field"],
        "line 2"
    );
    let r = s.call(Method::GET, list, Some(&token), None).await;
    assert!(
        r.text.contains("||ads.example^"),
        "the earlier list stays: {}",
        r.text
    );
    let f = s
        .call(Method::GET, "/api/v1/dns-filter", Some(&token), None)
        .await;
    assert_eq!(f.body["blocklist_rules"], 2);
}

#[tokio::test]
async fn sub_users_edit_the_filter_and_the_audit_log_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start().await;
    let s = Server::start(&config(dir.path(), &sink.url()), options()).await;
    let owner_token = owner(&s, &mut sink).await;
    let r = s
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&owner_token),
            Some(json!({"email": "sub@example.kz", "password": "пароль-сотрудника-1", "can_manage_users": false})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let mail = sink.next_to("sub@example.kz", 10).await;
    let confirm = mail
        .link(&format!("{PUBLIC_URL}/confirm-email?token="))
        .unwrap();
    s.http.get(s.confirm_api(&confirm)).send().await.unwrap();
    let sub = s.token("sub@example.kz", "пароль-сотрудника-1").await;

    let r = put_text(&s, &sub, "/api/v1/dns-filter/allowlist", b"work.example\n").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = s
        .call(
            Method::PUT,
            "/api/v1/dns-filter",
            Some(&owner_token),
            Some(json!({"enabled": false, "categories": [], "block_mode": "refused"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let audit = s
        .call(Method::GET, "/api/v1/dns-filter/audit", Some(&sub), None)
        .await;
    let entries = audit.body["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["user"], "6101");
    assert_eq!(entries[0]["action"], "settings");
    assert!(entries[0]["summary"].as_str().unwrap().contains("выключен"));
    assert_eq!(entries[1]["user"], "sub@example.kz");
    assert_eq!(entries[1]["summary"], "1 правило (было 0)");

    // The operator sees the account's filter; the networks list is the operator's to fill.
    let op = s
        .operator(
            Method::GET,
            "/api/v1/operator/accounts/6101/dns-filter",
            None,
        )
        .await;
    assert_eq!(op.status, StatusCode::OK);
    assert_eq!(op.body["allowlist_rules"], 1);
    assert_eq!(op.body["block_mode"], "refused");
    let r = s
        .operator(
            Method::POST,
            "/api/v1/operator/accounts/6101/networks",
            Some(json!({"cidr": "10.20.30.0/33"})),
        )
        .await;
    assert_eq!(
        r.error(StatusCode::BAD_REQUEST, "invalid_cidr")["field"],
        "cidr"
    );
    let r = s
        .operator(
            Method::POST,
            "/api/v1/operator/accounts/6101/networks",
            Some(json!({"cidr": "2001:db8:61::/48"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let nets = s
        .call(Method::GET, "/api/v1/dns-filter/networks", Some(&sub), None)
        .await;
    assert_eq!(nets.body["networks"][0]["cidr"], "2001:db8:61::/48");
}

#[tokio::test]
async fn node_endpoints_refuse_a_wrong_token_and_serve_a_checksummed_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start().await;
    let s = Server::start(&config(dir.path(), &sink.url()), options()).await;
    let wrong = s
        .http
        .get(s.url("/api/v1/operator/nodes/snapshot"))
        .bearer_auth("not-the-token")
        .header("x-qorgan-node", "n1")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let nameless = s
        .operator(Method::GET, "/api/v1/operator/nodes/snapshot", None)
        .await;
    nameless.error(StatusCode::BAD_REQUEST, "invalid_node");

    let r = s
        .http
        .get(s.url("/api/v1/operator/nodes/snapshot"))
        .bearer_auth(OPERATOR_TOKEN)
        .header("x-qorgan-node", "n1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let generation: u64 = r.headers()["x-qorgan-generation"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = r.bytes().await.unwrap();
    let snapshot = qorgan_blocklists::wire::decode(&bytes).expect("valid snapshot");
    assert_eq!(snapshot.generation, generation);
    let mut flipped = bytes.to_vec();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(qorgan_blocklists::wire::decode(&flipped).is_err());

    let unchanged = s
        .http
        .get(s.url(&format!(
            "/api/v1/operator/nodes/snapshot?after={generation}"
        )))
        .bearer_auth(OPERATOR_TOKEN)
        .header("x-qorgan-node", "n1")
        .send()
        .await
        .unwrap();
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);
    let nodes = s
        .operator(Method::GET, "/api/v1/operator/nodes", None)
        .await;
    assert_eq!(nodes.body["nodes"][0]["name"], "n1");
    assert_eq!(nodes.body["nodes"][0]["lag"], 0);

    // Usage is applied once per sequence number.
    let usage =
        json!({"seq": 5, "report": {"at": 1_796_151_600, "accounts": {}, "samples_dropped": 0}});
    let post = || async {
        s.http
            .post(s.url("/api/v1/operator/nodes/usage"))
            .bearer_auth(OPERATOR_TOKEN)
            .header("x-qorgan-node", "n1")
            .json(&usage)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    assert_eq!(post().await["applied"], true);
    assert_eq!(post().await["applied"], false);

    // A malformed report is refused whole; an unknown catalog hash is a clear 404.
    let bad = s
        .http
        .post(s.url("/api/v1/operator/nodes/usage"))
        .bearer_auth(OPERATOR_TOKEN)
        .header("x-qorgan-node", "n1")
        .header("content-type", "application/json")
        .body(r#"{"seq": 6, "report": {"at": "yesterday"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let six: serde_json::Value = s
        .http
        .post(s.url("/api/v1/operator/nodes/usage"))
        .bearer_auth(OPERATOR_TOKEN)
        .header("x-qorgan-node", "n1")
        .json(&json!({"seq": 6, "report": {"at": 1_796_151_600, "accounts": {}, "samples_dropped": 0}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        six["applied"], true,
        "seq 6 was not taken by the refused report"
    );
    let r = s
        .operator(
            Method::GET,
            &format!("/api/v1/operator/nodes/catalog/{}", "0".repeat(64)),
            None,
        )
        .await;
    r.error(StatusCode::NOT_FOUND, "catalog_not_found");
}

#[tokio::test]
async fn the_operator_sets_an_accounts_query_rate_and_the_customer_cannot_change_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start().await;
    let s = Server::start(&config(dir.path(), &sink.url()), options()).await;
    let token = owner(&s, &mut sink).await;
    let net = s
        .operator(
            Method::POST,
            "/api/v1/operator/accounts/6101/networks",
            Some(json!({"cidr": "10.61.1.0/24"})),
        )
        .await;
    assert_eq!(net.status, StatusCode::CREATED, "{}", net.text);
    let limits = "/api/v1/operator/accounts/6101/dns-filter/limits";
    let r = s
        .operator(Method::PUT, limits, Some(json!({"qps_limit": 20_000_000})))
        .await;
    assert_eq!(
        r.error(StatusCode::BAD_REQUEST, "invalid_qps_limit")["field"],
        "qps_limit"
    );
    let r = s
        .operator(Method::PUT, limits, Some(json!({"qps_limit": -1})))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = s
        .operator(
            Method::PUT,
            "/api/v1/operator/accounts/0000/dns-filter/limits",
            Some(json!({"qps_limit": 5})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);

    let set = s
        .operator(Method::PUT, limits, Some(json!({"qps_limit": 300})))
        .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text);
    assert_eq!(set.body["qps_limit"], 300);
    // Enforced when the operator's call returns: the resolver's policy for the network has it.
    let enforced = |s: &Server| {
        let snapshot = s.app.policy().snapshots().load();
        match snapshot.client_policy("10.61.1.7".parse().unwrap()) {
            qorgan_blocklists::ClientPolicy::Account(p) => p.qps_limit,
            _ => u32::MAX,
        }
    };
    assert_eq!(enforced(&s), 300);

    // The customer sees it but cannot set it: not a field of PUT /dns-filter, and kept by it.
    let view = s
        .call(Method::GET, "/api/v1/dns-filter", Some(&token), None)
        .await;
    assert_eq!(view.body["qps_limit"], 300);
    let sneaky = s
        .call(
            Method::PUT,
            "/api/v1/dns-filter",
            Some(&token),
            Some(json!({"enabled": true, "categories": [], "block_mode": "nxdomain", "qps_limit": 0})),
        )
        .await;
    assert_eq!(sneaky.status, StatusCode::BAD_REQUEST, "{}", sneaky.text);
    let edit = s
        .call(
            Method::PUT,
            "/api/v1/dns-filter",
            Some(&token),
            Some(json!({"enabled": true, "categories": [], "block_mode": "refused"})),
        )
        .await;
    assert_eq!(edit.status, StatusCode::OK, "{}", edit.text);
    assert_eq!(edit.body["qps_limit"], 300);
    assert_eq!(enforced(&s), 300);
    let audit = s
        .call(Method::GET, "/api/v1/dns-filter/audit", Some(&token), None)
        .await;
    let entries = audit.body["entries"].as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["user"] == "оператор"
            && e["summary"] == "лимит запросов: без ограничения → 300 запросов/с"),
        "{entries:?}"
    );
}
