//! The real `qorgan` binary: `serve --config FILE` in a temp data dir, driven over HTTP, with
//! the welcome email caught by the SMTP sink; then stopped with SIGTERM and started again on the
//! same data dir.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::billing::SANDBOX_SECRET;
use crate::support::*;

pub(crate) struct Qorgan {
    child: Child,
    /// The cabinet's base URL (`serve`), empty for a resolver node.
    pub(crate) base: String,
    /// The first DNS listener's address.
    pub(crate) dns: SocketAddr,
    _lines: mpsc::Receiver<String>,
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The value of `addr=` in a log line.
fn addr_field(line: &str) -> String {
    line.split("addr=")
        .nth(1)
        .expect("addr field")
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

impl Qorgan {
    /// `qorgan serve --config FILE`, ready once DNS and the cabinet are served.
    pub(crate) fn start(config_file: &Path) -> Self {
        Self::spawn(
            &[
                "serve".as_ref(),
                "--config".as_ref(),
                config_file.as_os_str(),
            ],
            true,
        )
    }

    /// The binary with `args`; waits until the UDP fast path serves (and, with `cabinet`, the
    /// cabinet listens), reading the addresses it bound from its log.
    pub(crate) fn spawn(args: &[&std::ffi::OsStr], cabinet: bool) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_qorgan"))
            .args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start qorgan");
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    let _ = tx.send(strip_ansi(&line));
                }
            });
        }
        let mut seen = Vec::new();
        let (mut base, mut dns, mut serving) = (None, None, false);
        while !(serving && dns.is_some() && (base.is_some() || !cabinet)) {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    if line.contains("cabinet listening") {
                        base = Some(format!("http://{}", addr_field(&line)));
                    } else if line.contains("DNS listening") && dns.is_none() {
                        dns = Some(addr_field(&line).parse().expect("dns addr"));
                    } else if line.contains("UDP fast path serving") {
                        serving = true;
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "qorgan did not report it is serving; output:\n{}",
                        seen.join("\n")
                    );
                }
            }
        }
        Self {
            child,
            base: base.unwrap_or_default(),
            dns: dns.expect("dns"),
            _lines: rx,
        }
    }

    /// SIGKILL (`kill -9`): no shutdown code runs.
    pub(crate) fn kill(mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub(crate) fn stop(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        for _ in 0..300 {
            if let Some(code) = self.child.try_wait().unwrap() {
                assert!(code.success(), "qorgan exited with {code}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("qorgan did not stop within 15 s of SIGTERM");
    }
}

impl Drop for Qorgan {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(crate) async fn call(
    base: &str,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    let mut req = reqwest::Client::new().request(method, format!("{base}{path}"));
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// A config file `name` in `dir` for the binary: every listener on port 0, data in `data`,
/// mail to `smtp` ("" = the mail folder), forwarding to `upstream`, the shipped lists, no
/// default-policy networks (loopback sources belong to whichever account maps them).
pub(crate) fn write_config(
    dir: &Path,
    name: &str,
    upstream: SocketAddr,
    data: &Path,
    smtp: &str,
) -> std::path::PathBuf {
    let lists = concat!(env!("CARGO_MANIFEST_DIR"), "/../blocklists/lists");
    let text = format!(
        r#"
[dns]
listen = ["127.0.0.1:0"]
upstreams = ["{upstream}"]
[http]
listen = "127.0.0.1:0"
public_url = "{PUBLIC_URL}"
[metrics]
listen = "127.0.0.1:0"
[storage]
data_dir = "{data}"
[lists]
dir = "{lists}"
watch = false
[default_policy]
networks = []
[operator]
token = "{OPERATOR_TOKEN}"
[payments]
secret = "{SANDBOX_SECRET}"
[mail]
smtp = "{smtp}"
from = "Qorgan <noreply@cabinet.example.kz>"
"#,
        data = data.display(),
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn the_binary_serves_the_cabinet_and_keeps_data_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start().await;
    let config_file = write_config(
        dir.path(),
        "qorgan.toml",
        "127.0.0.1:9".parse().unwrap(),
        &dir.path().join("data"),
        &sink.url(),
    );

    let q = Qorgan::start(&config_file);
    let op = Some(OPERATOR_TOKEN);
    let (st, body) = call(
        &q.base,
        Method::POST,
        "/api/v1/operator/accounts",
        op,
        Some(json!({"account_number": "9001", "contract_number": "№ 9001/10", "iin_bin": BIN, "name": "ТОО «Бинарь»"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let (st, _) = call(
        &q.base,
        Method::POST,
        "/api/v1/operator/accounts/9001/charges",
        op,
        Some(json!({"amount_tiyn": 142_500, "description": "ноябрь"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, body) = call(
        &q.base,
        Method::POST,
        "/api/v1/register",
        None,
        Some(json!({"full_name": "Айгерим", "email": "bin@example.kz", "phone": "+7 (701) 000-00-01", "contract_number": "9001/10", "iin_bin": BIN})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let mail = sink.next(20).await;
    assert_eq!(
        mail.line_value("Имя пользователя: ").as_deref(),
        Some("9001")
    );
    let password = mail.line_value("Пароль: ").unwrap();
    let (st, body) = call(
        &q.base,
        Method::POST,
        "/api/v1/session",
        None,
        Some(json!({"username": "9001", "password": password})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    let (st, me) = call(&q.base, Method::GET, "/api/v1/me", Some(&token), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(me["balance_tiyn"], -142_500);
    let (st, _) = call(&q.base, Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(st, StatusCode::OK);
    q.stop();

    let q = Qorgan::start(&config_file);
    let (st, body) = call(
        &q.base,
        Method::POST,
        "/api/v1/session",
        None,
        Some(json!({"username": "9001", "password": password})),
    )
    .await;
    assert_eq!(
        st,
        StatusCode::OK,
        "the account and its password survive a restart: {body}"
    );
    let token = body["token"].as_str().unwrap().to_owned();
    let (_, me) = call(&q.base, Method::GET, "/api/v1/me", Some(&token), None).await;
    assert_eq!(me["contract_number"], "№ 9001/10");
    assert_eq!(me["balance_tiyn"], -142_500);
    let (st, body) = call(
        &q.base,
        Method::POST,
        "/api/v1/register",
        None,
        Some(json!({"email": "bin2@example.kz", "phone": "+77010000002", "contract_number": "9001/10", "iin_bin": BIN})),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    assert!(
        sink.quiet_for(300).await,
        "the welcome email is not sent twice after a restart"
    );
    q.stop();
}
