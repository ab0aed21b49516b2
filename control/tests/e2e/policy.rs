//! The cabinet drives the resolver (issue "policy link"): the real `qorgan` binary, a local
//! upstream this test starts, real DNS queries from hickory's client over UDP and TCP, and a
//! second process running as a resolver node.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::binary::{call, write_config, Qorgan};
use crate::support::*;
use crate::upstream::{Upstream, V4};

/// The first listed name of the shipped `ads` category (a real list entry).
fn an_ads_name() -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../blocklists/lists/ads");
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            if let (Some("127.0.0.1" | "0.0.0.0"), Some(name)) = (parts.next(), parts.next()) {
                if name.contains('.') && name != "localhost" && !name.starts_with("localhost") {
                    return name.to_owned();
                }
            }
        }
    }
    panic!("no hosts line in blocklists/lists/ads");
}

fn udp(server: SocketAddr, src: &str) -> Client<TokioRuntimeProvider> {
    let src: IpAddr = src.parse().unwrap();
    let conn = UdpClientStream::builder(server, TokioRuntimeProvider::default())
        .with_bind_addr(Some(SocketAddr::new(src, 0)))
        .with_timeout(Some(Duration::from_millis(1500)))
        .build();
    let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(conn);
    tokio::spawn(bg);
    client
}

async fn tcp(server: SocketAddr) -> Client<TokioRuntimeProvider> {
    let (fut, sender) = TcpClientStream::new(
        server,
        None,
        Some(Duration::from_secs(2)),
        TokioRuntimeProvider::default(),
    );
    let stream = fut.await.expect("tcp connect");
    let (client, bg) = Client::<TokioRuntimeProvider>::new(stream, sender);
    tokio::spawn(bg);
    client
}

/// The rcode and A addresses of `name`; `None` when no answer came.
async fn resolve(
    client: &mut Client<TokioRuntimeProvider>,
    name: &str,
) -> Option<(ResponseCode, Vec<String>)> {
    let r = client
        .query(Name::from_ascii(name).unwrap(), DNSClass::IN, RecordType::A)
        .await
        .ok()?;
    let ips = r
        .answers
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    Some((r.metadata.response_code, ips))
}

fn blocked(r: &Option<(ResponseCode, Vec<String>)>) -> bool {
    matches!(r, Some((ResponseCode::NXDomain, _)))
}

fn resolved(r: &Option<(ResponseCode, Vec<String>)>) -> bool {
    matches!(r, Some((ResponseCode::NoError, ips)) if ips == &[V4.to_string()])
}

/// Provisions `number` with `cidr`, registers it and logs in; returns the session token.
pub(crate) async fn customer(
    base: &str,
    sink: &mut SmtpSink,
    number: &str,
    iin: &str,
    cidr: &str,
) -> String {
    let op = Some(OPERATOR_TOKEN);
    let (st, body) = call(
        base,
        Method::POST,
        "/api/v1/operator/accounts",
        op,
        Some(json!({"account_number": number, "contract_number": format!("{number}/1"), "iin_bin": iin, "name": "Клиент"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let (st, body) = call(
        base,
        Method::POST,
        &format!("/api/v1/operator/accounts/{number}/networks"),
        op,
        Some(json!({ "cidr": cidr })),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let email = format!("c{number}@example.kz");
    let (st, body) = call(
        base,
        Method::POST,
        "/api/v1/register",
        None,
        Some(json!({"full_name": "Клиент", "email": email, "phone": "+77010000009", "contract_number": format!("{number}/1"), "iin_bin": iin})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let password = sink
        .next_to(&email, 20)
        .await
        .line_value("Пароль: ")
        .unwrap();
    let (st, body) = call(
        base,
        Method::POST,
        "/api/v1/session",
        None,
        Some(json!({"username": number, "password": password})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

async fn put_list(base: &str, token: &str, kind: &str, text: &str) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .put(format!("{base}/api/v1/dns-filter/{kind}"))
        .bearer_auth(token)
        .header("content-type", "text/plain; charset=utf-8")
        .body(text.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The account's `GET /dns-filter/stats` (the default period: the last 7 days).
async fn get_stats(base: &str, token: &str) -> Value {
    call(
        base,
        Method::GET,
        "/api/v1/dns-filter/stats",
        Some(token),
        None,
    )
    .await
    .1
}

/// Polls `check` every 50 ms for up to `secs`.
async fn eventually<F, Fut>(secs: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn cabinet_edits_reach_real_dns_queries_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let mut sink = SmtpSink::start().await;
    let config = write_config(
        dir.path(),
        "q.toml",
        upstream.addr,
        &dir.path().join("data"),
        &sink.url(),
    );
    let q = Qorgan::start(&config);
    let token = customer(&q.base, &mut sink, "7101", IIN, "127.0.0.0/24").await;
    let other = customer(&q.base, &mut sink, "7102", BIN, "127.0.1.0/24").await;
    let ads = an_ads_name();

    // Before any change: the defaults (ads and malware) apply to the account.
    let mut a = udp(q.dns, "127.0.0.1");
    assert!(
        blocked(&resolve(&mut a, &ads).await),
        "{ads} is in the default categories"
    );

    let (st, body) = call(
        &q.base,
        Method::PUT,
        "/api/v1/dns-filter",
        Some(&token),
        Some(json!({"enabled": true, "categories": ["malware"], "block_mode": "nxdomain"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(
        resolved(&resolve(&mut a, &ads).await),
        "ads turned off: {ads} resolves"
    );

    let (st, body) = put_list(
        &q.base,
        &token,
        "blocklist",
        "||tracker.example^\nbad line!!\n",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["rules"], 1);
    assert_eq!(body["rejected"][0]["line"], 2);
    let (st, body) = put_list(&q.base, &token, "allowlist", "ok.tracker.example\n").await;
    assert_eq!(st, StatusCode::OK, "{body}");

    assert!(
        blocked(&resolve(&mut a, "x.tracker.example").await),
        "own block list, subdomain"
    );
    assert!(blocked(&resolve(&mut a, "tracker.example").await));
    assert!(
        resolved(&resolve(&mut a, "ok.tracker.example").await),
        "allow wins over block"
    );
    let mut t = tcp(q.dns).await;
    assert!(
        blocked(&resolve(&mut t, "x.tracker.example").await),
        "TCP too"
    );

    // The other account (another network) is not affected by these edits.
    let mut b = udp(q.dns, "127.0.1.1");
    assert!(resolved(&resolve(&mut b, "x.tracker.example").await));
    assert!(
        blocked(&resolve(&mut b, &ads).await),
        "the other account keeps the defaults"
    );
    // A source of no account gets nothing at all (unknown_clients = drop).
    let mut outsider = udp(q.dns, "127.0.2.1");
    assert!(resolve(&mut outsider, "tracker.example").await.is_none());

    // Strict uploads reject the whole list and change nothing.
    let r = reqwest::Client::new()
        .put(format!(
            "{}/api/v1/dns-filter/blocklist?strict=true",
            q.base
        ))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("fine.example\n##cosmetic\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(
        blocked(&resolve(&mut a, "tracker.example").await),
        "nothing half-applied"
    );
    assert!(resolved(&resolve(&mut a, "fine.example").await));

    // The statistics show the queries once the counters are drained (every 5 s).
    let stats_ok = eventually(15, || async {
        let s = get_stats(&q.base, &token).await;
        s["blocked"].as_u64().unwrap_or(0) >= 5 && s["queries"].as_u64().unwrap_or(0) >= 8
    })
    .await;
    let stats = get_stats(&q.base, &token).await;
    assert!(stats_ok, "{stats}");
    assert_eq!(stats["days"].as_array().unwrap().len(), 7);
    let top: Vec<&str> = stats["top_blocked"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["domain"].as_str())
        .collect();
    assert!(
        top.contains(&"tracker.example") && top.contains(&"x.tracker.example"),
        "{stats}"
    );
    let (_, audit) = call(
        &q.base,
        Method::GET,
        "/api/v1/dns-filter/audit",
        Some(&token),
        None,
    )
    .await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions, ["allowlist", "blocklist", "settings"], "{audit}");
    let b_stats = get_stats(&q.base, &other).await;
    assert_eq!(
        b_stats["queries"], 2,
        "each account counts its own queries: {b_stats}"
    );
    // The DNS filter service's usage is the same counts.
    let (st, service) = call(
        &q.base,
        Method::POST,
        "/api/v1/operator/accounts/7101/services",
        Some(OPERATOR_TOKEN),
        Some(json!({"kind": "dns_filter", "name": "DNS-фильтр", "monthly_fee_tiyn": 50_000})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{service}");
    let path = format!("/api/v1/services/{}/usage", service["id"]);
    let (_, usage) = call(&q.base, Method::GET, &path, Some(&token), None).await;
    let dns_queries: u64 = usage["dns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["queries"].as_u64().unwrap())
        .sum();
    assert_eq!(dns_queries, stats["queries"].as_u64().unwrap(), "{usage}");
    let before = stats["queries"].as_u64().unwrap();
    q.kill();

    // A restart after kill -9 keeps the settings, the lists and the drained counters.
    let q = Qorgan::start(&config);
    let mut a = udp(q.dns, "127.0.0.1");
    assert!(blocked(&resolve(&mut a, "x.tracker.example").await));
    assert!(resolved(&resolve(&mut a, "ok.tracker.example").await));
    assert!(resolved(&resolve(&mut a, &ads).await));
    let stats = get_stats(&q.base, &token).await;
    assert!(stats["queries"].as_u64().unwrap() >= before, "{stats}");
    q.stop();
}

/// Configs of a control plane (data in `control/`, mail to `smtp`) and of a resolver node
/// (data in `node/`) in `dir`, both forwarding to `upstream`.
fn control_and_node_configs(
    dir: &std::path::Path,
    upstream: SocketAddr,
    smtp: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    (
        write_config(dir, "q.toml", upstream, &dir.join("control"), smtp),
        write_config(dir, "n.toml", upstream, &dir.join("node"), ""),
    )
}

/// The arguments of `qorgan resolver` pulling from `base` as node `node` with `config`.
fn node_args(base: &str, node: &str, config: &std::path::Path) -> Vec<std::ffi::OsString> {
    [
        "resolver",
        "--control",
        base,
        "--token",
        OPERATOR_TOKEN,
        "--node",
        node,
        "--config",
    ]
    .iter()
    .map(std::ffi::OsString::from)
    .chain([config.as_os_str().to_owned()])
    .collect()
}

#[tokio::test]
async fn a_node_follows_the_cabinet_and_keeps_its_policy_while_control_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let mut sink = SmtpSink::start().await;
    let (config, node_config) = control_and_node_configs(dir.path(), upstream.addr, &sink.url());
    let q = Qorgan::start(&config);
    let token = customer(&q.base, &mut sink, "7201", IIN, "127.0.0.0/24").await;
    let args = node_args(&q.base, "edge-1", &node_config);
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(AsRef::as_ref).collect();
    let node = Qorgan::spawn(&refs, false);
    let mut n = udp(node.dns, "127.0.0.1");

    let (st, body) = put_list(&q.base, &token, "blocklist", "edge.example\n").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let started = Instant::now();
    assert!(
        eventually(10, || async {
            blocked(&resolve(&mut udp(node.dns, "127.0.0.1"), "edge.example").await)
        })
        .await,
        "the node enforces the cabinet's edit"
    );
    eprintln!("edit reached the node in {:?}", started.elapsed());
    let (_, nodes) = call(
        &q.base,
        Method::GET,
        "/api/v1/operator/nodes",
        Some(OPERATOR_TOKEN),
        None,
    )
    .await;
    assert_eq!(nodes["nodes"][0]["name"], "edge-1", "{nodes}");

    // The node's queries come back as the customer's statistics.
    assert!(blocked(&resolve(&mut n, "a.edge.example").await));
    let counted = eventually(15, || async {
        let s = get_stats(&q.base, &token).await;
        s["blocked"].as_u64().unwrap_or(0) >= 2
    })
    .await;
    assert!(counted, "node usage reaches the control plane");

    // Control plane killed: the node keeps answering with the last policy, and after a kill -9
    // and a restart of its own.
    q.kill();
    assert!(blocked(&resolve(&mut n, "edge.example").await));
    node.kill();
    let node = Qorgan::spawn(&refs, false);
    let mut n = udp(node.dns, "127.0.0.1");
    assert!(
        blocked(&resolve(&mut n, "edge.example").await),
        "restored from disk"
    );
    assert!(resolved(&resolve(&mut n, "other.example").await));
    node.stop();
}

#[tokio::test]
async fn a_node_hears_of_a_lists_change_on_the_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let lists = dir.path().join("lists");
    std::fs::create_dir_all(lists.join("ads")).unwrap();
    std::fs::write(lists.join("ads/ads.txt"), "first-listed.example\n").unwrap();
    let upstream = Upstream::start().await;
    let mut sink = SmtpSink::start().await;
    let own_lists = |path: std::path::PathBuf| {
        let text = std::fs::read_to_string(&path).unwrap();
        let text: String = text
            .lines()
            .map(|l| match l {
                l if l.starts_with("dir = ") => format!("dir = \"{}\"\n", lists.display()),
                "watch = false" => "watch = true\n".to_owned(),
                l => format!("{l}\n"),
            })
            .collect();
        std::fs::write(&path, text).unwrap();
        path
    };
    let (config, node_config) = control_and_node_configs(dir.path(), upstream.addr, &sink.url());
    let config = own_lists(config);
    let q = Qorgan::start(&config);
    customer(&q.base, &mut sink, "7301", IIN, "127.0.0.0/24").await;
    let args = node_args(&q.base, "edge-2", &node_config);
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(AsRef::as_ref).collect();
    let node = Qorgan::spawn(&refs, false);
    assert!(
        eventually(10, || async {
            blocked(&resolve(&mut udp(node.dns, "127.0.0.1"), "first-listed.example").await)
        })
        .await,
        "the node enforces the control plane's lists"
    );
    assert!(resolved(
        &resolve(&mut udp(node.dns, "127.0.0.1"), "second-listed.example").await
    ));

    // The operator adds a name to the category's file: the control plane recompiles, and the
    // node, holding an unchanged account table, must still hear of the new catalog.
    std::fs::write(
        lists.join("ads/ads.txt"),
        "first-listed.example\nsecond-listed.example\n",
    )
    .unwrap();
    assert!(
        eventually(15, || async {
            blocked(&resolve(&mut udp(node.dns, "127.0.0.1"), "second-listed.example").await)
        })
        .await,
        "a lists change on the control plane reaches the node"
    );
    node.stop();
    q.stop();
}
