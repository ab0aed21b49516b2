//! Tenant isolation (RELIABILITY A2, W6): two accounts, each with sub-users, a service,
//! invoices, a payment, a top-up order, a network and its own DNS filter lists. Every route
//! that takes an object id (path, query or body) is called by each of A's users with B's ids:
//! the answer is a 404/403 JSON error and B's data is unchanged. The operator API refuses
//! customer sessions. Within an account, the sub-user rules: no right, no user changes; never
//! the parent, an ancestor or oneself.
//!
//! Not a tenant route: `/sandbox/pay/{order_id}` is the pretend bank of the sandbox gateway
//! (CONTRACT §2), public by design like a bank's page (its "pay" button credits for free, so
//! no production setup runs it); the real gateway's page `/pay/halyk/{order_id}` is checked.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::flow::confirmed_sub_user;
use crate::support::*;

/// One account with one of everything.
struct Tenant {
    number: &'static str,
    owner: String,
    owner_id: u64,
    /// Sub-user with `can_manage_users`.
    manager: String,
    manager_id: u64,
    /// Sub-user without it.
    plain: String,
    plain_id: u64,
    service_id: u64,
    invoice_id: u64,
    order_id: String,
    emails: Vec<String>,
    domain: String,
    cidr: String,
}

async fn tenant(s: &Server, sink: &mut SmtpSink, number: &'static str) -> Tenant {
    let owner_email = format!("owner{number}@example.kz");
    let password = s
        .registered_owner(sink, number, &format!("Д-{number}"), &owner_email)
        .await;
    let owner = s.token(number, &password).await;
    let owner_id = s
        .call(Method::GET, "/api/v1/me", Some(&owner), None)
        .await
        .body["user"]["id"]
        .as_u64()
        .unwrap();
    let manager_email = format!("manager{number}@example.kz");
    let plain_email = format!("plain{number}@example.kz");
    let (manager_id, manager_pw) = confirmed_sub_user(s, sink, &owner, &manager_email, true).await;
    let (plain_id, plain_pw) = confirmed_sub_user(s, sink, &owner, &plain_email, false).await;
    let manager = s.token(&manager_email, &manager_pw).await;
    let plain = s.token(&plain_email, &plain_pw).await;

    let op = |method: Method, path: String, body: Value| async move {
        let r = s.operator(method, &path, Some(body)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{path}: {}", r.text);
        r
    };
    let acc = format!("/api/v1/operator/accounts/{number}");
    let service_id = op(
        Method::POST,
        format!("{acc}/services"),
        json!({"kind": "dns_filter", "name": format!("Фильтр {number}"), "monthly_fee_tiyn": 100_000}),
    )
    .await
    .body["id"]
    .as_u64()
    .unwrap();
    op(
        Method::POST,
        format!("{acc}/services/{service_id}/usage"),
        json!({"period_from": "2026-10-01", "period_to": "2026-10-31", "bytes_in": 7, "bytes_out": 7,
            "amount_tiyn": 1, "description": format!("трафик {number}")}),
    )
    .await;
    let invoice_id = op(
        Method::POST,
        format!("{acc}/invoices"),
        json!({"kind": "invoice", "number": format!("INV-{number}"), "issued_on": "2026-11-05",
            "period_from": "2026-10-01", "period_to": "2026-10-31", "amount_tiyn": 100_000,
            "lines": [{"description": format!("услуга {number}"), "amount_tiyn": 100_000}]}),
    )
    .await
    .body["id"]
        .as_u64()
        .unwrap();
    op(
        Method::POST,
        format!("{acc}/payments"),
        json!({"amount_tiyn": 50_000, "source": "bank_transfer", "reference": format!("ПП-{number}")}),
    )
    .await;
    let cidr = format!("10.{}.0.0/24", &number[..2]);
    op(
        Method::POST,
        format!("{acc}/networks"),
        json!({"cidr": cidr}),
    )
    .await;
    let order = s
        .call(
            Method::POST,
            "/api/v1/topups",
            Some(&owner),
            Some(json!({"amount_tiyn": 150_000})),
        )
        .await;
    assert_eq!(order.status, StatusCode::CREATED, "{}", order.text);
    let order_id = order.body["order_id"].as_str().unwrap().to_owned();
    let domain = format!("only-{number}.example");
    let put = s
        .raw(
            Method::PUT,
            "/api/v1/dns-filter/blocklist",
            Some(&plain),
            Some("text/plain; charset=utf-8"),
            format!("{domain}\n").into_bytes(),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text);
    let allow = s
        .raw(
            Method::PUT,
            "/api/v1/dns-filter/allowlist",
            Some(&owner),
            Some("text/plain; charset=utf-8"),
            format!("allow.{domain}\n").into_bytes(),
        )
        .await;
    assert_eq!(allow.status, StatusCode::OK, "{}", allow.text);
    Tenant {
        number,
        owner,
        owner_id,
        manager,
        manager_id,
        plain,
        plain_id,
        service_id,
        invoice_id,
        order_id,
        emails: vec![owner_email, manager_email, plain_email],
        domain,
        cidr,
    }
}

/// Everything B can see, as B's owner sees it (the views that change by themselves, none here,
/// would be left out).
async fn snapshot(s: &Server, t: &Tenant) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for path in [
        "/api/v1/me".to_owned(),
        "/api/v1/users".to_owned(),
        "/api/v1/services".to_owned(),
        format!(
            "/api/v1/services/{}/usage?from=2026-10-01&to=2026-10-31",
            t.service_id
        ),
        "/api/v1/service-requests".to_owned(),
        "/api/v1/stats-requests".to_owned(),
        "/api/v1/payments?from=2026-01-01".to_owned(),
        "/api/v1/invoices".to_owned(),
        format!("/api/v1/invoices/{}", t.invoice_id),
        format!("/api/v1/topups/{}", t.order_id),
        "/api/v1/dns-filter".to_owned(),
        "/api/v1/dns-filter/blocklist".to_owned(),
        "/api/v1/dns-filter/allowlist".to_owned(),
        "/api/v1/dns-filter/networks".to_owned(),
        "/api/v1/dns-filter/audit".to_owned(),
    ] {
        let r = s.call(Method::GET, &path, Some(&t.owner), None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
        out.push((path, r.text));
    }
    out
}

/// Counts attempts and the ones that got through.
#[derive(Default)]
struct Tally {
    attempts: usize,
    leaks: Vec<String>,
}

impl Tally {
    /// A call that must be refused: 404 or 403 (or 401 on the operator API) as the JSON error.
    fn refused(&mut self, what: &str, r: &Resp, allowed: &[StatusCode]) {
        self.attempts += 1;
        let json = r
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let code = r.body["error"]["code"].as_str().unwrap_or("");
        if !allowed.contains(&r.status) || !json || code.is_empty() {
            self.leaks.push(format!("{what}: {} {}", r.status, r.text));
        }
    }

    /// A list of the caller's own objects: it must not mention any of `foreign`.
    fn clean(&mut self, what: &str, r: &Resp, foreign: &[String]) {
        self.attempts += 1;
        if r.status != StatusCode::OK {
            self.leaks.push(format!("{what}: {} {}", r.status, r.text));
        }
        for f in foreign {
            if r.text.contains(f.as_str()) {
                self.leaks.push(format!("{what} shows «{f}»: {}", r.text));
            }
        }
    }
}

const NOT_YOURS: &[StatusCode] = &[StatusCode::NOT_FOUND, StatusCode::FORBIDDEN];

/// Every id-taking customer route, called with B's ids by `token` (one of A's users).
async fn cross_tenant(s: &Server, token: &str, who: &str, b: &Tenant, tally: &mut Tally) {
    let t = Some(token);
    let mut calls: Vec<(Method, String, Option<Value>)> = Vec::new();
    for id in [b.owner_id, b.manager_id, b.plain_id] {
        let path = format!("/api/v1/users/{id}");
        for body in [
            json!({"first_name": "Взлом"}),
            json!({"can_manage_users": true}),
            json!({"password": "чужой-пароль-123"}),
            json!({"generate_password": true}),
        ] {
            calls.push((Method::PATCH, path.clone(), Some(body)));
        }
        calls.push((Method::DELETE, path, None));
    }
    let (svc, inv, order) = (b.service_id, b.invoice_id, &b.order_id);
    calls.extend([
        (Method::GET, format!("/api/v1/invoices/{inv}"), None),
        (Method::GET, format!("/api/v1/invoices/{inv}/pdf"), None),
        (Method::GET, format!("/api/v1/topups/{order}"), None),
        (Method::GET, format!("/pay/halyk/{order}"), None),
        (Method::GET, format!("/api/v1/services/{svc}/usage"), None),
        (
            Method::GET,
            format!("/api/v1/services/{svc}/usage?from=2026-10-01&to=2026-10-31"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/services/{svc}/disconnect-request"),
            Some(json!({"comment": "чужая услуга"})),
        ),
        (
            Method::POST,
            "/api/v1/stats-requests".to_owned(),
            Some(json!({"service_id": svc, "from": "2026-10-01", "to": "2026-10-31"})),
        ),
    ]);
    for (method, path, body) in calls {
        let r = s.call(method.clone(), &path, t, body).await;
        tally.refused(&format!("{who} {method} {path}"), &r, NOT_YOURS);
    }

    // The operator API takes account numbers: a customer session is not the operator token.
    let acc = format!("/api/v1/operator/accounts/{}", b.number);
    for (method, path, body) in [
        (Method::GET, acc.clone(), None),
        (Method::GET, format!("{acc}/networks"), None),
        (
            Method::POST,
            format!("{acc}/networks"),
            Some(json!({"cidr": "10.250.0.0/24"})),
        ),
        (Method::GET, format!("{acc}/dns-filter"), None),
        (Method::GET, format!("{acc}/service-requests"), None),
        (
            Method::POST,
            format!("{acc}/services"),
            Some(json!({"kind": "internet", "name": "x", "monthly_fee_tiyn": 1})),
        ),
        (
            Method::POST,
            format!("{acc}/charges"),
            Some(json!({"amount_tiyn": 1, "description": "x"})),
        ),
        (
            Method::POST,
            format!("{acc}/payments"),
            Some(json!({"amount_tiyn": 1, "source": "cash", "reference": "x"})),
        ),
        (
            Method::POST,
            format!("{acc}/services/{svc}/usage"),
            Some(
                json!({"period_from": "2026-10-01", "period_to": "2026-10-31", "bytes_in": 1,
                "bytes_out": 1, "amount_tiyn": 1, "description": "x"}),
            ),
        ),
        (Method::GET, "/api/v1/operator/nodes".to_owned(), None),
    ] {
        let r = s.call(method.clone(), &path, t, body).await;
        tally.refused(
            &format!("{who} {method} {path}"),
            &r,
            &[StatusCode::UNAUTHORIZED],
        );
    }

    // A's own lists never show B's objects.
    let foreign: Vec<String> = b
        .emails
        .iter()
        .cloned()
        .chain([
            b.domain.clone(),
            b.cidr.clone(),
            format!("\"{}\"", b.order_id),
            format!("INV-{}", b.number),
            format!("ПП-{}", b.number),
            format!("Фильтр {}", b.number),
        ])
        .collect();
    for path in [
        "/api/v1/me",
        "/api/v1/users",
        "/api/v1/services",
        "/api/v1/service-requests",
        "/api/v1/stats-requests",
        "/api/v1/payments?from=2026-01-01",
        "/api/v1/invoices",
        "/api/v1/dns-filter",
        "/api/v1/dns-filter/blocklist",
        "/api/v1/dns-filter/allowlist",
        "/api/v1/dns-filter/networks",
        "/api/v1/dns-filter/audit",
    ] {
        let r = s.call(Method::GET, path, t, None).await;
        tally.clean(&format!("{who} GET {path}"), &r, &foreign);
    }
}

#[tokio::test]
async fn no_route_lets_one_account_read_or_change_another_accounts_objects() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start().await;
    // The sandbox gateway needs a secret and calls back to the public URL: the listener itself.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = config(dir.path(), &sink.url());
    cfg.http.public_url = format!("http://{}", listener.local_addr().unwrap());
    cfg.payments.secret = "sandbox-secret-for-isolation".to_owned();
    let s = Server::start_on(listener, &cfg, options()).await;
    let a = tenant(&s, &mut sink, "8101").await;
    let b = tenant(&s, &mut sink, "8201").await;
    s.outbox_settled().await;
    let b_before = snapshot(&s, &b).await;
    let mails_before = s.app.store().outbox().unwrap().len();

    let mut tally = Tally::default();
    for (who, token) in [
        ("A.owner", &a.owner),
        ("A.manager", &a.manager),
        ("A.plain", &a.plain),
    ] {
        cross_tenant(&s, token, who, &b, &mut tally).await;
    }
    s.outbox_settled().await;
    let b_after = snapshot(&s, &b).await;
    for ((path, before), (_, after)) in b_before.iter().zip(&b_after) {
        if before != after {
            tally
                .leaks
                .push(format!("B's {path} changed: {before} → {after}"));
        }
    }
    let mails_after = s.app.store().outbox().unwrap().len();
    if mails_after != mails_before {
        tally
            .leaks
            .push(format!("{} emails queued", mails_after - mails_before));
    }
    // B's users still log in with their own passwords untouched: B's manager token still works.
    assert_eq!(
        s.call(Method::GET, "/api/v1/me", Some(&b.manager), None)
            .await
            .status,
        StatusCode::OK
    );
    println!(
        "W6: {} cross-tenant attempts, {} leaks",
        tally.attempts,
        tally.leaks.len()
    );
    assert!(tally.attempts >= 100, "{}", tally.attempts);
    assert!(tally.leaks.is_empty(), "{:#?}", tally.leaks);
    // The positive control: the same calls with A's own ids work, so the 404s above are
    // about ownership, not broken routes.
    for path in [
        format!("/api/v1/invoices/{}", a.invoice_id),
        format!("/api/v1/invoices/{}/pdf", a.invoice_id),
        format!("/api/v1/topups/{}", a.order_id),
        format!("/api/v1/services/{}/usage", a.service_id),
    ] {
        let r = s.call(Method::GET, &path, Some(&a.owner), None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
    }
    let own = s
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{}", a.plain_id),
            Some(&a.manager),
            Some(json!({"position": "Бухгалтер"})),
        )
        .await;
    assert_eq!(own.status, StatusCode::FORBIDDEN, "a sibling: {}", own.text);
    let own = s
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{}", a.plain_id),
            Some(&a.owner),
            Some(json!({"position": "Бухгалтер"})),
        )
        .await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.text);
    s.stop().await;
}

#[tokio::test]
async fn a_sub_user_never_changes_its_parent_or_its_own_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start().await;
    let s = Server::start(&config(dir.path(), &sink.url()), options()).await;
    let password = s
        .registered_owner(&mut sink, "8301", "Д-8301", "tree@example.kz")
        .await;
    let owner = s.token("8301", &password).await;
    let owner_id = s
        .call(Method::GET, "/api/v1/me", Some(&owner), None)
        .await
        .body["user"]["id"]
        .as_u64()
        .unwrap();
    let (m_id, m_pw) = confirmed_sub_user(&s, &mut sink, &owner, "m8301@example.kz", true).await;
    let (p_id, p_pw) = confirmed_sub_user(&s, &mut sink, &owner, "p8301@example.kz", false).await;
    let m = s.token("m8301@example.kz", &m_pw).await;
    let p = s.token("p8301@example.kz", &p_pw).await;
    // M's own child C, with the right to manage (M has it, so it may pass it on).
    let (c_id, c_pw) = confirmed_sub_user(&s, &mut sink, &m, "c8301@example.kz", true).await;
    let c = s.token("c8301@example.kz", &c_pw).await;
    let users_before = s
        .call(Method::GET, "/api/v1/users", Some(&owner), None)
        .await
        .text;

    let mut tally = Tally::default();
    let forbidden = &[StatusCode::FORBIDDEN];
    // Without the right: nothing about users at all.
    let r = s
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&p),
            Some(json!({"email": "x8301@example.kz", "generate_password": true})),
        )
        .await;
    r.error(StatusCode::FORBIDDEN, "cannot_manage_users");
    tally.refused("P creates", &r, forbidden);
    let mut attempts: Vec<(&str, &String, u64, Option<Value>)> = Vec::new();
    for target in [owner_id, m_id, p_id, c_id] {
        attempts.push(("P", &p, target, Some(json!({"first_name": "X"}))));
        attempts.push(("P", &p, target, Some(json!({"can_manage_users": true}))));
        attempts.push(("P", &p, target, None));
    }
    // With the right: never the parent (the owner), an ancestor, oneself or a sibling.
    for target in [owner_id, m_id, p_id] {
        for body in [
            json!({"can_manage_users": false}),
            json!({"can_manage_users": true}),
            json!({"first_name": "X"}),
            json!({"generate_password": true}),
        ] {
            attempts.push(("M", &m, target, Some(body)));
        }
        attempts.push(("M", &m, target, None));
    }
    // Two levels down: C may touch neither M (its parent) nor the owner, nor itself.
    for target in [owner_id, m_id, c_id] {
        attempts.push(("C", &c, target, Some(json!({"can_manage_users": true}))));
        attempts.push(("C", &c, target, None));
    }
    for (who, token, target, body) in attempts {
        let method = if body.is_some() {
            Method::PATCH
        } else {
            Method::DELETE
        };
        let path = format!("/api/v1/users/{target}");
        let r = s.call(method.clone(), &path, Some(token), body).await;
        tally.refused(&format!("{who} {method} {path}"), &r, forbidden);
    }
    let users_after = s
        .call(Method::GET, "/api/v1/users", Some(&owner), None)
        .await
        .text;
    if users_after != users_before {
        tally
            .leaks
            .push(format!("users changed: {users_before} → {users_after}"));
    }
    println!(
        "W6: {} sub-user attempts on the parent, ancestors, siblings, itself or without the \
         right: {} got through (all 403)",
        tally.attempts,
        tally.leaks.len()
    );
    assert!(tally.leaks.is_empty(), "{:#?}", tally.leaks);
    // The positive control: M manages its own child.
    let r = s
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{c_id}"),
            Some(&m),
            Some(json!({"can_manage_users": false})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    s.stop().await;
}
