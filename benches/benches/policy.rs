//! Policy publishing at provider scale, and a cabinet edit's way to the resolver.
//!
//! Run with: `cargo bench -p qorgan-benches --bench policy` (add `-- --accounts 10000` for a
//! quicker run). Not criterion: the figures are distributions of single events (p50/p99 of
//! 1,000 edits) and one-off builds, printed as a table. Everything stays on 127.0.0.1.
//!
//! 1. 100,000 accounts × 100 own block rules each: time to compile their sets, to publish the
//!    whole table (a start, or a catalog swap), and to publish one account's edit into it
//!    (the ClientMap rebuild every edit costs); the process's RSS in that state.
//! 2. Edit → enforced: the real control plane (axum + sled in a temp dir) and the real resolver
//!    (UDP fast path) in this process, with the same 100,000 accounts loaded; `PUT
//!    /dns-filter/blocklist` with a new name, then DNS queries from 127.0.0.1 until that name
//!    is answered NXDOMAIN. p50/p99 over 1,000 edits, from sending the PUT to the first
//!    blocked answer.
#![allow(missing_docs, clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};
use qorgan_blocklists::{build_own_sets, AccountId, Action, BlockMode, Rule, Scope};
use qorgan_resolver::{AccountSpec, SnapshotStore};

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{label:<44} n={:<5} p50 {:>9.3} ms  p99 {:>9.3} ms  max {:>9.3} ms",
        samples.len(),
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    );
}

/// Account `i`'s network: a /28 of 10.0.0.0/8 (room for 1M accounts, never loopback).
fn network(i: u32) -> IpNet {
    let addr = Ipv4Addr::from(0x0A00_0000 | (i << 4));
    IpNet::V4(Ipv4Net::new(addr, 28).unwrap())
}

/// 100 rules of account `i`: names that share nothing with other accounts' (the worst case
/// for memory; real customers' lists overlap a lot).
fn spec(i: u32, rules: u32) -> AccountSpec {
    let rules: Vec<Rule> = (0..rules)
        .map(|j| Rule {
            name: format!("t{j}.c{i}.example"),
            scope: Scope::WithSubdomains,
            action: Action::Block,
            important: false,
            line: j + 1,
        })
        .collect();
    let (own_block, own_allow) = build_own_sets((&rules, &[]), (&[], &[])).unwrap();
    let mut s = AccountSpec::new(
        AccountId(1_000_000 + u64::from(i)),
        vec![network(i)],
        vec!["ads".to_owned()],
        BlockMode::Nxdomain,
    );
    s.own_block = own_block;
    s.own_allow = own_allow;
    s
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The rcode of the answer to `name`, or `None` on timeout.
fn rcode(sock: &UdpSocket, dns: SocketAddr, id: u16, name: &str) -> Option<u8> {
    sock.send_to(&query(id, name), dns).ok()?;
    let mut buf = [0u8; 1500];
    loop {
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        if n >= 12 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            return Some(buf[3] & 0x0f);
        }
    }
}

/// The generated password from the welcome email the server wrote as an `.eml` file.
async fn welcome_password(dir: &std::path::Path) -> String {
    use base64::Engine as _;
    for _ in 0..100 {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let body: String = text
                .split_once("\r\n\r\n")
                .or_else(|| text.split_once("\n\n"))
                .map(|(_, b)| b.split_whitespace().collect())
                .unwrap_or_default();
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(body)
                .unwrap_or_default();
            if let Some(line) = String::from_utf8_lossy(&decoded)
                .lines()
                .find_map(|l| l.strip_prefix("Пароль: "))
            {
                return line.trim().to_owned();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no welcome email in {}", dir.display());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let accounts: u32 = args
        .iter()
        .position(|a| a == "--accounts")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rules = 100;
    let edits = 1000;
    println!("policy bench: {accounts} accounts × {rules} own rules, {edits} edits");

    let rss0 = rss_mib();
    let t = Instant::now();
    let specs: Vec<AccountSpec> = (0..accounts).map(|i| spec(i, rules)).collect();
    let build = t.elapsed();
    println!(
        "{:<44} {:>9.3} s ({:.1} µs per account)",
        "compile own sets",
        build.as_secs_f64(),
        build.as_secs_f64() * 1e6 / f64::from(accounts)
    );

    let default_policy = qorgan_config::DefaultPolicyConfig {
        networks: Vec::new(),
        ..Default::default()
    };
    let standalone = SnapshotStore::new(&default_policy);
    let t = Instant::now();
    standalone.set_accounts(specs.clone()).unwrap();
    println!(
        "{:<44} {:>9.3} s",
        "publish the whole table (start)",
        t.elapsed().as_secs_f64()
    );
    println!(
        "{:<44} {:>9.1} MiB (was {rss0:.1} MiB before the accounts)",
        "RSS with the table published",
        rss_mib()
    );
    let mut samples = Vec::with_capacity(edits);
    for e in 0..edits {
        let i = (e as u32 * 7919) % accounts;
        let s = spec(i, rules);
        let t = Instant::now();
        standalone.upsert_account(s).unwrap();
        samples.push(t.elapsed());
    }
    summary("publish one account's edit (resolver only)", samples);
    drop(standalone);

    // ---- edit → enforced, through the real API and the real resolver
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(edit_to_enforced(specs, edits));
}

async fn edit_to_enforced(specs: Vec<AccountSpec>, edits: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = qorgan_config::Config::default();
    config.storage.data_dir = dir.path().join("data");
    config.lists.dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../blocklists/lists").into();
    config.lists.watch = false;
    config.dns.upstreams = vec!["127.0.0.1:9".to_owned()];
    config.default_policy.networks = Vec::new();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    let registry = prometheus::Registry::new();
    let app = qorgan_control::App::open_with(
        &config,
        &registry,
        qorgan_control::AppOptions {
            demo: true,
            ..Default::default()
        },
    )
    .unwrap();
    app.provision_demo().unwrap();

    let snapshots = app.policy().snapshots().clone();
    let dns = qorgan_resolver::DnsListeners::bind(&["127.0.0.1:0".parse().unwrap()]).unwrap();
    let dns_addr = dns.local_addrs()[0];
    let shutdown = tokio_util::sync::CancellationToken::new();
    let resolver = {
        let (config, snapshots, registry, shutdown) = (
            config.clone(),
            snapshots.clone(),
            registry.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            qorgan_resolver::run(
                &config,
                dns,
                snapshots,
                qorgan_resolver::PolicySource::InProcess,
                &registry,
                shutdown,
            )
            .await
        })
    };
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", http.local_addr().unwrap());
    let server = tokio::spawn(qorgan_control::serve_http(
        app.clone(),
        http,
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The 100,000 synthetic accounts join the demo account in the resolver's table.
    let demo_id = app.store().account_by_number("4445").unwrap().unwrap().id;
    let demo = AccountSpec::from(app.policy().account(demo_id).unwrap());
    let mut table = specs;
    table.push(demo);
    let t = Instant::now();
    snapshots.set_accounts(table).unwrap();
    println!(
        "{:<44} {:>9.3} s",
        "publish the whole table (in serve)",
        t.elapsed().as_secs_f64()
    );
    println!(
        "{:<44} {:>9.1} MiB",
        "RSS of serve (control + resolver) with it",
        rss_mib()
    );

    let client = reqwest::Client::new();
    let r = client
        .post(format!("{base}/api/v1/register"))
        .json(&serde_json::json!({"full_name": "Бенч", "email": "bench@example.kz", "phone": "+77010000001",
            "contract_number": "4445/10", "iin_bin": "900101300811"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "register: {}", r.status());
    let password = welcome_password(&config.storage.data_dir.join("mail")).await;
    let login: serde_json::Value = client
        .post(format!("{base}/api/v1/session"))
        .json(&serde_json::json!({"username": "4445", "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_owned();
    let sock = UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut enforced = Vec::with_capacity(edits);
    let mut put = Vec::with_capacity(edits);
    for e in 0..edits {
        let name = format!("edit{e}.bench.example");
        let t = Instant::now();
        let r = client
            .put(format!("{base}/api/v1/dns-filter/blocklist"))
            .bearer_auth(&token)
            .header("content-type", "text/plain")
            .body(format!("{name}\n"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        put.push(t.elapsed());
        let mut id = (e as u16).wrapping_mul(31);
        loop {
            id = id.wrapping_add(1);
            let sock = &sock;
            let name = name.clone();
            let code = tokio::task::block_in_place(|| rcode(sock, dns_addr, id, &name));
            if code == Some(3) {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "edit {e} never enforced"
            );
        }
        enforced.push(t.elapsed());
    }
    summary("PUT /dns-filter/blocklist answered", put);
    summary("edit → first NXDOMAIN (PUT + DNS)", enforced);
    println!("{:<44} {:>9.1} MiB", "RSS after the edits", rss_mib());
    shutdown.cancel();
    let _ = server.await;
    let _ = resolver.await;
}
