//! The captcha widget's side of registration: `GET /api/v1/captcha` tells the page what to show
//! (public values only), and the page's Content-Security-Policy lets the widget's script in
//! only when a captcha is on.

use qorgan_config::CaptchaProvider;
use qorgan_control::web::CONTENT_SECURITY_POLICY;
use reqwest::{Method, StatusCode};

use crate::support::*;

/// A script URL no real browser ever loads: only its text ends up in the policy.
const SCRIPT_URL: &str = "http://127.0.0.1:9/stand-in/recaptcha/api.js";
const SCRIPT_SOURCE: &str = "http://127.0.0.1:9/stand-in/recaptcha/";
const SECRET: &str = "e2e-captcha-secret-never-shown";

fn csp(r: &Resp) -> String {
    r.headers["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned()
}

fn directive<'a>(policy: &'a str, name: &str) -> &'a str {
    policy
        .split(';')
        .map(str::trim)
        .find(|d| d.split(' ').next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} in {policy}"))
}

#[tokio::test]
async fn without_a_captcha_the_page_is_told_none_and_its_policy_stays_strict() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "");
    cfg.captcha.script_url = SCRIPT_URL.into();
    cfg.captcha.site_key = "unused-site-key".into();
    cfg.captcha.secret = SECRET.into();
    let s = Server::start(&cfg, options()).await;

    let r = s.call(Method::GET, "/api/v1/captcha", None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["provider"], "none");
    assert_eq!(r.body["site_key"], "");
    assert_eq!(r.body["script_url"], "");
    assert!(!r.text.contains(SECRET), "{}", r.text);

    for path in ["/", "/assets/auth.js", "/reset-password?token=x"] {
        let page = s.call(Method::GET, path, None, None).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert_eq!(csp(&page), CONTENT_SECURITY_POLICY, "{path}");
        assert!(!csp(&page).contains("127.0.0.1:9"), "{path}");
    }
    s.stop().await;
}

#[tokio::test]
async fn with_recaptcha_the_page_gets_the_site_key_and_a_policy_that_admits_the_script() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "");
    cfg.captcha.provider = CaptchaProvider::Recaptcha;
    cfg.captcha.site_key = "e2e-site-key".into();
    cfg.captcha.secret = SECRET.into();
    cfg.captcha.verify_url = "http://127.0.0.1:9/siteverify".into();
    cfg.captcha.script_url = SCRIPT_URL.into();
    cfg.validate().expect("a valid config");
    let s = Server::start(&cfg, options()).await;

    // Public: no session, no token.
    let r = s.call(Method::GET, "/api/v1/captcha", None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["provider"], "recaptcha");
    assert_eq!(r.body["site_key"], "e2e-site-key");
    assert_eq!(r.body["script_url"], SCRIPT_URL);
    assert_eq!(r.body.as_object().unwrap().len(), 3, "{}", r.text);
    assert!(!r.text.contains(SECRET), "the secret leaked: {}", r.text);
    assert!(!r.text.contains("siteverify"), "{}", r.text);

    for path in ["/", "/assets/auth.js", "/confirm-email?token=x"] {
        let page = s.call(Method::GET, path, None, None).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        let policy = csp(&page);
        assert_eq!(
            directive(&policy, "script-src"),
            format!("script-src 'self' {SCRIPT_SOURCE}"),
            "{path}"
        );
        assert_eq!(
            directive(&policy, "frame-src"),
            format!("frame-src 'self' {SCRIPT_SOURCE}"),
            "{path}"
        );
        // Everything else is the strict policy's, unchanged.
        for d in CONTENT_SECURITY_POLICY.split("; ") {
            if !d.starts_with("script-src") {
                assert!(policy.contains(d), "{path}: {d} missing from {policy}");
            }
        }
        assert_eq!(
            directive(&policy, "frame-ancestors"),
            "frame-ancestors 'none'"
        );
        assert_eq!(directive(&policy, "connect-src"), "connect-src 'self'");
        assert!(!policy.contains("unsafe-"), "{policy}");
    }

    let doc = s
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert!(
        doc.body["paths"]["/api/v1/captcha"]["get"].is_object(),
        "GET /api/v1/captcha missing from openapi"
    );
    assert!(doc.body["components"]["schemas"]["CaptchaInfo"].is_object());
    s.stop().await;
}
