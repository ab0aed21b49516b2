//! The web cabinet (CONTRACT §1 "web cabinet", seed sections 1–5): a single page of plain HTML,
//! CSS and JavaScript modules under `control/web/`, compiled into the binary with
//! `include_bytes!` so that the one `qorgan` file serves it with no build step and no files on
//! disk.
//!
//! Routes: `GET /` (the page), `GET /reset-password` and `GET /confirm-email` (the same page: the
//! links in the emails land there and the script reads the `token` query), and
//! `GET /assets/{file}` (the page's scripts, style sheet and images).
//!
//! Every answer carries a strict Content-Security-Policy (`default-src 'self'`, no inline script
//! or style, `frame-ancestors 'none'`; with `captcha.provider = "recaptcha"` it also lets in
//! the widget's script and frames, see [`content_security_policy`]),
//! `X-Content-Type-Options: nosniff` and `Referrer-Policy: same-origin`. `same-origin` rather
//! than `no-referrer` on purpose: under `no-referrer` a browser sends `Origin: null` on
//! same-origin `POST`s, which the API's CSRF guard (rightly) refuses. Files are revalidated on
//! every load (`Cache-Control: no-cache` with a content `ETag`, `304` when it matches), so an
//! upgraded binary is picked up at once while an unchanged page costs a round trip and no bytes.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use axum::Router;
use sha2::{Digest, Sha256};

use qorgan_config::{CaptchaProvider, Config};

use crate::api::ApiError;
use crate::App;

/// The Content-Security-Policy of every page and asset when no captcha widget is shown
/// (`captcha.provider = "none"`).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// [`CONTENT_SECURITY_POLICY`] as directives, in its order, for [`content_security_policy`]
/// to extend (a unit test proves the two agree).
const DIRECTIVES: &[(&str, &str)] = &[
    ("default-src", "'self'"),
    ("script-src", "'self'"),
    ("style-src", "'self'"),
    ("img-src", "'self' data:"),
    ("connect-src", "'self'"),
    ("font-src", "'self'"),
    ("form-action", "'self'"),
    ("frame-ancestors", "'none'"),
    ("base-uri", "'none'"),
    ("object-src", "'none'"),
];

/// The Content-Security-Policy of the page for `config`, computed once when the routes are
/// built. With `captcha.provider = "none"` it is [`CONTENT_SECURITY_POLICY`], byte for byte.
/// With `"recaptcha"`, `script-src` and a `frame-src` (which otherwise falls back to
/// `default-src 'self'`) also allow the origin and folder of `captcha.script_url`
/// (`https://www.google.com/recaptcha/` by default), plus, for Google's own hosts, what their
/// `api.js` pulls in: the widget code from `https://www.gstatic.com/recaptcha/` and the
/// challenge frames from `https://recaptcha.google.com/recaptcha/` (the sources Google's
/// reCAPTCHA FAQ gives for a CSP). `connect-src` stays `'self'`: the v2 checkbox does its
/// requests from inside its frames. Every other directive, `frame-ancestors 'none'` included,
/// is unchanged.
pub fn content_security_policy(config: &Config) -> String {
    let captcha = &config.captcha;
    let source = match (captcha.provider, captcha.script_source()) {
        (CaptchaProvider::Recaptcha, Some(source)) => source,
        (CaptchaProvider::Recaptcha, None) => {
            tracing::warn!(
                script_url = %captcha.script_url,
                "captcha.script_url is not a usable URL: the page's policy will block the widget"
            );
            return CONTENT_SECURITY_POLICY.to_owned();
        }
        (CaptchaProvider::None, _) => return CONTENT_SECURITY_POLICY.to_owned(),
    };
    let mut scripts = vec![source.clone()];
    let mut frames = vec![source.clone()];
    if source.starts_with("https://www.google.com/")
        || source.starts_with("https://www.recaptcha.net/")
    {
        scripts.push("https://www.gstatic.com/recaptcha/".to_owned());
    }
    if source.starts_with("https://www.google.com/") {
        frames.push("https://recaptcha.google.com/recaptcha/".to_owned());
    }
    let mut parts = Vec::with_capacity(DIRECTIVES.len() + 1);
    for &(name, value) in DIRECTIVES {
        match name {
            "script-src" => parts.push(format!("{name} {value} {}", scripts.join(" "))),
            "form-action" => {
                // frame-src joins the other fetch directives, before the navigation ones.
                parts.push(format!("frame-src 'self' {}", frames.join(" ")));
                parts.push(format!("{name} {value}"));
            }
            _ => parts.push(format!("{name} {value}")),
        }
    }
    parts.join("; ")
}

/// The headers computed once per router from the configuration.
#[derive(Clone)]
struct PageHeaders {
    csp: HeaderValue,
}

/// One embedded file.
struct Asset {
    /// The name under `/assets/` (`index.html` is served at the page routes instead).
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $ct:expr) => {
        Asset {
            name: $name,
            content_type: $ct,
            body: include_bytes!(concat!("../web/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the page. A file missing here is a compile error, not a runtime 404.
static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("i18n.js", JS),
    asset!("format.js", JS),
    asset!("auth.js", JS),
    asset!("shell.js", JS),
    asset!("users.js", JS),
    asset!("profile.js", JS),
    asset!("sections.js", JS),
    asset!("dnsfilter.js", JS),
    asset!("logo.svg", "image/svg+xml"),
    asset!("favicon.svg", "image/svg+xml"),
];

/// The strong `ETag` of each asset, in `ASSETS` order (computed once).
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = Sha256::digest(a.body);
                format!("\"{}\"", hex::encode(&digest[..12]))
            })
            .collect()
    })
}

/// The page's routes, merged into the API router (which adds the state and the outer layers).
/// The Content-Security-Policy is computed here, once, from `config`.
pub(crate) fn routes(config: &Config) -> Router<App> {
    let csp = HeaderValue::from_str(&content_security_policy(config))
        .unwrap_or_else(|_| HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    Router::new()
        .route("/", get(page))
        .route("/reset-password", get(page))
        .route("/confirm-email", get(page))
        .route("/assets/{file}", get(asset))
        .layer(Extension(PageHeaders { csp }))
}

async fn page(Extension(page): Extension<PageHeaders>, headers: HeaderMap) -> Response {
    serve("index.html", &headers, &page)
}

async fn asset(
    Extension(page): Extension<PageHeaders>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    if file == "index.html" {
        return not_found();
    }
    serve(&file, &headers, &page)
}

fn not_found() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "нет такого файла").into_response()
}

/// Answers with the named asset, or `304` when the client's `If-None-Match` already names it.
fn serve(name: &str, headers: &HeaderMap, page: &PageHeaders) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        return not_found();
    };
    let a = &ASSETS[i];
    let etag = etags().get(i).map(String::as_str).unwrap_or_default();
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = a.body.into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(a.content_type),
        );
        r
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, page.csp.clone());
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_the_page_imports_is_embedded() {
        let names: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        for a in ASSETS {
            let text = std::str::from_utf8(a.body).expect("utf-8 asset");
            for part in text.split("from \"./").skip(1) {
                let file = part.split('"').next().expect("quoted import");
                assert!(names.contains(&file), "{} imports missing {file}", a.name);
            }
            for part in text.split("\"/assets/").skip(1) {
                let file = part.split('"').next().expect("quoted asset");
                assert!(names.contains(&file), "{} links missing {file}", a.name);
            }
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let html = std::str::from_utf8(ASSETS[0].body).expect("utf-8");
        assert!(
            !html.contains("<style"),
            "inline <style> would be blocked by the CSP"
        );
        assert!(!html.contains(" style=\""), "inline style attribute");
        for tag in html.split("<script").skip(1) {
            let open = tag.split('>').next().unwrap_or_default();
            assert!(
                open.contains("src="),
                "inline <script> would be blocked by the CSP"
            );
        }
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(a.body).expect("utf-8");
            assert!(
                !text.contains("innerHTML"),
                "{}: innerHTML (XSS risk)",
                a.name
            );
            assert!(
                !text.contains("eval("),
                "{}: eval is blocked by the CSP",
                a.name
            );
        }
    }

    async fn get(app: &App, path: &str, if_none_match: Option<&str>) -> Response {
        use tower::ServiceExt as _;
        let mut req = axum::http::Request::get(path);
        if let Some(tag) = if_none_match {
            req = req.header(header::IF_NONE_MATCH, tag);
        }
        app.router()
            .oneshot(req.body(axum::body::Body::empty()).expect("request"))
            .await
            .expect("infallible")
    }

    fn test_app(dir: &std::path::Path) -> App {
        let mut config = Config::default();
        config.storage.data_dir = dir.to_owned();
        App::open(&config, &prometheus::Registry::new(), true).expect("open app")
    }

    #[tokio::test]
    async fn the_page_and_the_email_link_routes_serve_the_same_html_with_a_strict_policy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = test_app(dir.path());
        for path in ["/", "/reset-password?token=abc", "/confirm-email?token=abc"] {
            let resp = get(&app, path, None).await;
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            let h = resp.headers();
            assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[header::REFERRER_POLICY], "same-origin");
            assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        }
        assert!(CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'"));
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe-"));
        app.close().await.expect("close");
    }

    #[test]
    fn the_policy_opens_for_the_captcha_script_only_with_recaptcha() {
        let joined: Vec<String> = DIRECTIVES.iter().map(|(n, v)| format!("{n} {v}")).collect();
        assert_eq!(joined.join("; "), CONTENT_SECURITY_POLICY);

        let mut config = Config::default();
        config.captcha.script_url = "http://127.0.0.1:4567/stand-in/api.js".to_owned();
        assert_eq!(content_security_policy(&config), CONTENT_SECURITY_POLICY);

        config.captcha.provider = CaptchaProvider::Recaptcha;
        let local = content_security_policy(&config);
        assert_eq!(
            local,
            "default-src 'self'; script-src 'self' http://127.0.0.1:4567/stand-in/; \
             style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
             frame-src 'self' http://127.0.0.1:4567/stand-in/; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
        );

        config.captcha.script_url = qorgan_config::CaptchaConfig::default().script_url;
        let google = content_security_policy(&config);
        assert!(google.contains(
            "script-src 'self' https://www.google.com/recaptcha/ https://www.gstatic.com/recaptcha/;"
        ));
        assert!(google.contains(
            "frame-src 'self' https://www.google.com/recaptcha/ https://recaptcha.google.com/recaptcha/;"
        ));
        assert!(google.contains("frame-ancestors 'none'"));
        assert!(!google.contains("unsafe-"));
        assert!(HeaderValue::from_str(&google).is_ok());

        // An unusable URL (never past validation) opens nothing.
        config.captcha.script_url = "https://x.example/a.js; script-src *".to_owned();
        assert_eq!(content_security_policy(&config), CONTENT_SECURITY_POLICY);
    }

    #[tokio::test]
    async fn assets_have_their_content_type_and_revalidate_with_the_etag() {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = test_app(dir.path());
        let resp = get(&app, "/assets/app.js", None).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], JS);
        let tag = resp.headers()[header::ETAG]
            .to_str()
            .expect("ascii")
            .to_owned();
        let again = get(&app, "/assets/app.js", Some(&tag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        let other = get(&app, "/assets/style.css", Some(&tag)).await;
        assert_eq!(
            other.status(),
            StatusCode::OK,
            "another file's tag does not match"
        );
        assert_eq!(
            other.headers()[header::CONTENT_TYPE],
            "text/css; charset=utf-8"
        );
        for missing in [
            "/assets/nope.js",
            "/assets/index.html",
            "/assets/..%2Fweb.rs",
        ] {
            let resp = get(&app, missing, None).await;
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{missing}");
            assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        }
        app.close().await.expect("close");
    }

    #[test]
    fn etags_differ_for_different_files() {
        let tags = etags();
        assert_eq!(tags.len(), ASSETS.len());
        let mut sorted = tags.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), tags.len());
    }
}
