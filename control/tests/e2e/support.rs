//! Test support: an in-process SMTP sink, the app served on 127.0.0.1:0 with a real sled store
//! in a temp dir, a small JSON HTTP client, and email parsing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use qorgan_config::Config;
use qorgan_control::{App, AppOptions, ControlError};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub const OPERATOR_TOKEN: &str = "test-operator-token-0123456789";
/// Links in emails must be built from this, never from the Host the test connects to.
pub const PUBLIC_URL: &str = "https://cabinet.example.kz";

/// A valid BIN and IIN from CABINET.md §1.
pub const BIN: &str = "940140000385";
pub const IIN: &str = "871008401427";
pub const CONTRACT: &str = "КТС-КТС-14 644 40/2/ ДП-11";

// ------------------------------------------------------------------ SMTP sink

/// One message as the sink received it.
#[derive(Debug, Clone)]
pub struct Mail {
    pub rcpt: Vec<String>,
    pub raw: String,
}

impl Mail {
    /// A header's value (unfolded), by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.raw.split("\r\n\r\n").next()?;
        let mut unfolded: Vec<String> = Vec::new();
        for line in head.split("\r\n") {
            if line.starts_with(' ') || line.starts_with('\t') {
                if let Some(last) = unfolded.last_mut() {
                    last.push_str(line.trim_start());
                }
            } else {
                unfolded.push(line.to_owned());
            }
        }
        unfolded.iter().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    /// The decoded text/plain body.
    pub fn text(&self) -> String {
        let body = self.raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let cte = self
            .header("Content-Transfer-Encoding")
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(
            self.header("Content-Type")
                .unwrap_or_default()
                .to_ascii_lowercase()
                .starts_with("text/plain; charset=utf-8"),
            "not text/plain utf-8: {}",
            self.raw
        );
        match cte.as_str() {
            "base64" => {
                let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .expect("base64 body");
                String::from_utf8(bytes)
                    .expect("utf-8 body")
                    .replace("\r\n", "\n")
            }
            _ => body.replace("\r\n", "\n"),
        }
    }

    /// The value of the line `<prefix><value>`.
    pub fn line_value(&self, prefix: &str) -> Option<String> {
        self.text()
            .lines()
            .find_map(|l| l.strip_prefix(prefix).map(str::to_owned))
    }

    /// The first URL in the body that starts with `start`.
    pub fn link(&self, start: &str) -> Option<String> {
        self.text()
            .split_whitespace()
            .find(|w| w.starts_with(start))
            .map(str::to_owned)
    }
}

/// A tiny SMTP server: enough of RFC 5321 (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) to
/// accept lettre's mail and hand over the raw messages.
pub struct SmtpSink {
    pub addr: SocketAddr,
    rx: mpsc::UnboundedReceiver<Mail>,
    stop: CancellationToken,
}

impl SmtpSink {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind smtp sink");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let stop2 = stop.clone();
        tokio::spawn(async move {
            loop {
                let (sock, _) = tokio::select! {
                    () = stop2.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => return },
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = smtp_session(sock, tx).await;
                });
            }
        });
        Self { addr, rx, stop }
    }

    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// The next message, waiting at most `secs`.
    pub async fn next(&mut self, secs: u64) -> Mail {
        tokio::time::timeout(Duration::from_secs(secs), self.rx.recv())
            .await
            .expect("no email arrived in time")
            .expect("sink closed")
    }

    /// The next message to `to` (others are skipped).
    pub async fn next_to(&mut self, to: &str, secs: u64) -> Mail {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = tokio::time::timeout(left, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no email to {to} in time"))
                .expect("sink closed");
            if m.rcpt.iter().any(|r| r.eq_ignore_ascii_case(to)) {
                return m;
            }
        }
    }

    /// True when nothing more arrives within `millis`.
    pub async fn quiet_for(&mut self, millis: u64) -> bool {
        tokio::time::timeout(Duration::from_millis(millis), self.rx.recv())
            .await
            .is_err()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn smtp_session(
    sock: tokio::net::TcpStream,
    tx: mpsc::UnboundedSender<Mail>,
) -> std::io::Result<()> {
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 sink.test ESMTP ready\r\n").await?;
    let mut rcpt = Vec::new();
    let mut line = String::new();
    for _ in 0..10_000 {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_ascii_uppercase();
        if cmd.starts_with("EHLO") {
            w.write_all(b"250-sink.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
                .await?;
        } else if cmd.starts_with("HELO") || cmd.starts_with("NOOP") {
            w.write_all(b"250 ok\r\n").await?;
        } else if cmd.starts_with("MAIL FROM") || cmd.starts_with("RSET") {
            rcpt.clear();
            w.write_all(b"250 ok\r\n").await?;
        } else if cmd.starts_with("RCPT TO") {
            let addr = line.trim_end()[8..]
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned();
            rcpt.push(addr);
            w.write_all(b"250 ok\r\n").await?;
        } else if cmd == "DATA" {
            w.write_all(b"354 go ahead\r\n").await?;
            let mut data = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                let l = line.strip_prefix('.').unwrap_or(&line);
                data.push_str(l);
            }
            let _ = tx.send(Mail {
                rcpt: std::mem::take(&mut rcpt),
                raw: data,
            });
            w.write_all(b"250 queued\r\n").await?;
        } else if cmd.starts_with("QUIT") {
            w.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            w.write_all(b"502 not implemented\r\n").await?;
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ the app

/// A config for tests: data in `dir`, mail to `smtp` ("" = mail folder), loopback only.
pub fn config(dir: &std::path::Path, smtp: &str) -> Config {
    let mut c = Config::default();
    c.storage.data_dir = dir.to_owned();
    c.mail.smtp = smtp.to_owned();
    c.mail.from = "Qorgan <noreply@cabinet.example.kz>".to_owned();
    c.operator.token = OPERATOR_TOKEN.to_owned();
    c.http.public_url = PUBLIC_URL.to_owned();
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.metrics.listen = "127.0.0.1:0".parse().unwrap();
    c
}

/// Options for tests: fast mail retries, generous per-IP limits (every test client is 127.0.0.1).
pub fn options() -> AppOptions {
    AppOptions {
        mail_backoff: Duration::from_millis(100),
        register_limit: qorgan_control::RateLimit {
            max: 1000,
            window: Duration::from_secs(60),
        },
        forgot_limit: qorgan_control::RateLimit {
            max: 1000,
            window: Duration::from_secs(60),
        },
        ..AppOptions::default()
    }
}

/// The app served over real HTTP on 127.0.0.1.
pub struct Server {
    pub base: String,
    pub app: App,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ControlError>>,
    pub http: reqwest::Client,
}

impl Server {
    pub async fn start(config: &Config, options: AppOptions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, config, options).await
    }

    /// Serves on a listener the caller bound (so that the config can name its address, e.g. as
    /// `http.public_url` for the sandbox bank's callback).
    pub async fn start_on(listener: TcpListener, config: &Config, options: AppOptions) -> Self {
        let registry = prometheus::Registry::new();
        let app = App::open_with(config, &registry, options).expect("open app");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(qorgan_control::serve_http(
            app.clone(),
            listener,
            shutdown.clone(),
        ));
        Self {
            base,
            app,
            shutdown,
            task,
            http: reqwest::Client::new(),
        }
    }

    /// Stops serving and closes the store (so it can be reopened).
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("join").expect("serve_http");
        drop(self.app);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Turns an emailed link (built from PUBLIC_URL) into one on this server.
    pub fn local(&self, link: &str) -> String {
        assert!(
            link.starts_with(PUBLIC_URL),
            "link not built from http.public_url: {link}"
        );
        link.replacen(PUBLIC_URL, &self.base, 1)
    }

    /// The API call behind an emailed confirmation page link
    /// (`{PUBLIC_URL}/confirm-email?token=…`, a page of the web cabinet).
    pub fn confirm_api(&self, link: &str) -> String {
        let token = self
            .local(link)
            .split("token=")
            .nth(1)
            .expect("token in link")
            .to_owned();
        self.url(&format!("/api/v1/users/confirm?token={token}"))
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Resp::from(req.send().await.expect("request")).await
    }

    /// Sends raw bytes with an explicit content type.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Resp {
        let mut req = self.http.request(method, self.url(path)).body(body);
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        Resp::from(req.send().await.expect("request")).await
    }

    pub async fn operator(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        self.call(method, path, Some(OPERATOR_TOKEN), body).await
    }

    /// Provisions an account through the operator API.
    pub async fn provision(&self, number: &str, contract: &str, iin_bin: &str) -> Resp {
        let r = self
            .operator(
                Method::POST,
                "/api/v1/operator/accounts",
                Some(json!({"account_number": number, "contract_number": contract, "iin_bin": iin_bin, "name": "ТОО «Тест»"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r
    }

    pub async fn register(&self, contract: &str, iin_bin: &str, email: &str) -> Resp {
        self.call(
            Method::POST,
            "/api/v1/register",
            None,
            Some(json!({
                "full_name": "Айгерим Нурланова", "company": "ТОО «Тест»", "email": email,
                "phone": "+7 701 234 56 78", "contract_number": contract, "iin_bin": iin_bin
            })),
        )
        .await
    }

    pub async fn login(&self, username: &str, password: &str) -> Resp {
        self.call(
            Method::POST,
            "/api/v1/session",
            None,
            Some(json!({"username": username, "password": password})),
        )
        .await
    }

    /// Logs in and returns the bearer token (panics unless 200).
    pub async fn token(&self, username: &str, password: &str) -> String {
        let r = self.login(username, password).await;
        assert_eq!(r.status, StatusCode::OK, "login {username}: {:?}", r.body);
        r.body["token"].as_str().unwrap().to_owned()
    }

    /// Provisions and registers an account; returns its owner's emailed password.
    pub async fn registered_owner(
        &self,
        sink: &mut SmtpSink,
        number: &str,
        contract: &str,
        email: &str,
    ) -> String {
        self.provision(number, contract, BIN).await;
        let r = self.register(contract, BIN, email).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let mail = sink.next_to(email, 10).await;
        mail.line_value("Пароль: ").expect("password line")
    }

    /// Waits until the outbox has no pending email (so the store stops changing).
    pub async fn outbox_settled(&self) {
        for _ in 0..500 {
            let pending = self
                .app
                .store()
                .outbox()
                .unwrap()
                .iter()
                .any(|e| e.status == qorgan_control::store::MailStatus::Pending);
            if !pending {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("outbox never settled");
    }
}

/// A response: status, headers, JSON body (Null when empty).
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    async fn from(r: reqwest::Response) -> Self {
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        Self {
            status,
            headers,
            body,
            text,
        }
    }

    /// Asserts the JSON error object with this status and code; returns the error part.
    pub fn error(&self, status: StatusCode, code: &str) -> &Value {
        assert_eq!(self.status, status, "body: {}", self.text);
        assert!(
            self.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json")),
            "error without JSON content type: {:?}",
            self.headers
        );
        let e = &self.body["error"];
        assert_eq!(e["code"], code, "body: {}", self.text);
        assert!(
            e["message"].as_str().is_some_and(|m| !m.is_empty()),
            "no message: {}",
            self.text
        );
        assert!(
            e.get("field").is_some(),
            "field member missing: {}",
            self.text
        );
        e
    }
}
