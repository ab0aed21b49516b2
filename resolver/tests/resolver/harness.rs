//! Starts the resolver over real sockets on 127.0.0.1:0 with a lists folder and a policy file
//! in a temp dir, forwarding to a local [`Upstream`]; DNS clients bound to any 127.0.0.0/8
//! source play the customers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_net::NetError;
use hickory_proto::op::{DnsResponse, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use qorgan_config::{Config, UnknownClients};
use qorgan_resolver::{DnsListeners, FastPathOptions, PolicySource, SnapshotStore};
use tokio_util::sync::CancellationToken;

use crate::upstream::Upstream;

/// The source address of account 1 (most tests' client).
pub const ACCOUNT_1: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));

pub const ADS_LIST: &str =
    "# test ads list\nads.test\n||tracker.blocked.test^\n0.0.0.0 banner.test\n";
pub const MALWARE_LIST: &str = "evil.test\n";

/// Account 1: ads category, an own block list and an own allow list that overrides a block.
pub const POLICY: &str = r#"
[[accounts]]
id = 1
networks = ["127.0.0.1/32"]
categories = ["ads"]
block = ["||mine.test^"]
allow = ["ok.ads.test"]
"#;

pub struct Setup {
    pub lists: Vec<(&'static str, &'static str, String)>,
    pub policy: String,
    pub unknown_clients: UnknownClients,
    pub default_networks: Vec<&'static str>,
    pub default_categories: Vec<&'static str>,
    /// Forward here instead of the local [`Upstream`] (e.g. a socket that never answers).
    pub upstream_override: Option<SocketAddr>,
    /// UDP through the fast path (the default) or through hickory-server only.
    pub fast_path: FastPathOptions,
    /// Last changes to `[dns]` (e.g. rate limits) before the config is validated.
    pub dns: fn(&mut qorgan_config::DnsConfig),
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            lists: vec![
                ("ads", "ads.txt", ADS_LIST.to_owned()),
                ("malware", "bad.txt", MALWARE_LIST.to_owned()),
            ],
            policy: POLICY.to_owned(),
            unknown_clients: UnknownClients::Drop,
            default_networks: Vec::new(),
            default_categories: vec!["malware"],
            upstream_override: None,
            fast_path: FastPathOptions {
                workers: 2,
                ..FastPathOptions::default()
            },
            dns: |_| {},
        }
    }
}

impl Setup {
    /// The default setup with one fast-path worker, for tests that need a packet-cache hit:
    /// hickory's client asks every query from a new port, and `SO_REUSEPORT` may give it to
    /// another worker, whose cache has not seen the name.
    pub fn one_worker() -> Self {
        Self {
            fast_path: FastPathOptions {
                workers: 1,
                ..FastPathOptions::default()
            },
            ..Self::default()
        }
    }
}

pub struct Resolver {
    pub addr: SocketAddr,
    pub registry: prometheus::Registry,
    pub store: SnapshotStore,
    pub upstream: Upstream,
    pub dir: tempfile::TempDir,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), qorgan_resolver::ResolverError>>>,
}

impl Resolver {
    pub async fn start(setup: Setup) -> Self {
        let upstream = Upstream::start().await;
        let dir = tempfile::tempdir().unwrap();
        for (category, file, text) in &setup.lists {
            let folder = dir.path().join("lists").join(category);
            std::fs::create_dir_all(&folder).unwrap();
            std::fs::write(folder.join(file), text).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("lists")).unwrap();
        std::fs::write(dir.path().join("policy.toml"), &setup.policy).unwrap();

        let mut config = Config::default();
        config.dns.listen = vec!["127.0.0.1:0".parse().unwrap()];
        config.dns.upstreams = vec![setup.upstream_override.unwrap_or(upstream.addr).to_string()];
        config.dns.unknown_clients = setup.unknown_clients;
        config.dns.upstream_timeout_ms = if setup.upstream_override.is_some() {
            200
        } else {
            1000
        };
        config.lists.dir = dir.path().join("lists");
        config.storage.data_dir = dir.path().join("data");
        config.default_policy.networks = setup
            .default_networks
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        config.default_policy.categories = setup
            .default_categories
            .iter()
            .map(|c| (*c).to_owned())
            .collect();
        (setup.dns)(&mut config.dns);
        config.validate().unwrap();

        let listeners = DnsListeners::bind(&config.dns.listen).unwrap();
        let addr = listeners.local_addrs()[0];
        let store = SnapshotStore::new(&config.default_policy);
        let registry = prometheus::Registry::new();
        let shutdown = CancellationToken::new();
        let policy = PolicySource::File(dir.path().join("policy.toml"));
        let (s, r, t) = (store.clone(), registry.clone(), shutdown.clone());
        let fast = setup.fast_path;
        let task = tokio::spawn(async move {
            qorgan_resolver::run_with(&config, listeners, s, policy, &r, t, fast).await
        });
        let resolver = Self {
            addr,
            registry,
            store,
            upstream,
            dir,
            shutdown,
            task: Some(task),
        };
        resolver.wait_ready().await;
        resolver
    }

    /// `run` answers once the lists are loaded; until then queries wait in the socket.
    async fn wait_ready(&self) {
        for _ in 0..50 {
            if self.metric("qorgan_lists_reloads_total", &[])
                + self.metric("qorgan_lists_reload_failures_total", &[])
                > 0.0
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("resolver did not load its lists within 5 s");
    }

    pub fn lists_dir(&self) -> PathBuf {
        self.dir.path().join("lists")
    }

    pub fn policy_path(&self) -> PathBuf {
        self.dir.path().join("policy.toml")
    }

    /// A UDP client with source address `src`.
    pub async fn udp(&self, src: IpAddr) -> Client<TokioRuntimeProvider> {
        udp_client(self.addr, src, true)
    }

    /// A UDP client that sends no EDNS.
    pub async fn udp_no_edns(&self, src: IpAddr) -> Client<TokioRuntimeProvider> {
        udp_client(self.addr, src, false)
    }

    /// A TCP client with source address `src`.
    pub async fn tcp(&self, src: IpAddr) -> Client<TokioRuntimeProvider> {
        let (connect, handle) = TcpClientStream::new(
            self.addr,
            Some(SocketAddr::new(src, 0)),
            Some(Duration::from_secs(2)),
            TokioRuntimeProvider::default(),
        );
        let stream = connect.await.unwrap();
        let (client, bg) =
            Client::<TokioRuntimeProvider>::with_timeout(stream, handle, Duration::from_secs(2));
        tokio::spawn(bg);
        client
    }

    /// A metric's value from the registry (sum over series matching `labels`).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut total = 0.0;
        for family in self.registry.gather() {
            if family.name() != name {
                continue;
            }
            for m in family.get_metric() {
                let matches = labels.iter().all(|(k, v)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == *k && l.value() == *v)
                });
                if matches {
                    total += match family.get_field_type() {
                        prometheus::proto::MetricType::COUNTER => m.get_counter().get_value(),
                        prometheus::proto::MetricType::GAUGE => m.get_gauge().get_value(),
                        _ => m.get_histogram().get_sample_count() as f64,
                    };
                }
            }
        }
        total
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("graceful stop")
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn udp_client(server: SocketAddr, src: IpAddr, edns: bool) -> Client<TokioRuntimeProvider> {
    let conn = UdpClientStream::builder(server, TokioRuntimeProvider::default())
        .with_bind_addr(Some(SocketAddr::new(src, 0)))
        .with_timeout(Some(Duration::from_secs(2)))
        .build();
    let (mut client, bg) = Client::<TokioRuntimeProvider>::from_sender(conn);
    if !edns {
        client.disable_edns();
    }
    tokio::spawn(bg);
    client
}

pub async fn query(
    client: &mut Client<TokioRuntimeProvider>,
    name: &str,
    rtype: RecordType,
) -> Result<DnsResponse, NetError> {
    client
        .query(Name::from_ascii(name).unwrap(), DNSClass::IN, rtype)
        .await
}

pub async fn ask(
    client: &mut Client<TokioRuntimeProvider>,
    name: &str,
    rtype: RecordType,
) -> DnsResponse {
    query(client, name, rtype)
        .await
        .unwrap_or_else(|e| panic!("{name} {rtype}: {e}"))
}

pub fn rcode(r: &DnsResponse) -> ResponseCode {
    r.metadata.response_code
}

/// The answer section's data, in order.
pub fn rdata(r: &DnsResponse) -> Vec<RData> {
    r.answers.iter().map(|rec| rec.data.clone()).collect()
}

/// The EDE options of the response: (info code, extra text).
pub fn ede(r: &DnsResponse) -> Vec<(u16, String)> {
    let Some(edns) = r.edns.as_ref() else {
        return Vec::new();
    };
    edns.options()
        .as_ref()
        .iter()
        .filter_map(|(_, option)| match option {
            EdnsOption::Unknown(15, data) if data.len() >= 2 => Some((
                u16::from_be_bytes([data[0], data[1]]),
                String::from_utf8_lossy(&data[2..]).into_owned(),
            )),
            _ => None,
        })
        .collect()
}

pub fn write(path: &Path, text: &str) {
    // Write aside and rename: the watcher sees one complete file, as an operator's tools do.
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Polls `check` every 50 ms for up to `secs` seconds.
pub async fn eventually<F, Fut>(secs: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..secs * 20 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

pub fn query_bytes(name: &str, qr: bool) -> Vec<u8> {
    let mut m = Message::new(
        0x5151,
        if qr {
            MessageType::Response
        } else {
            MessageType::Query
        },
        OpCode::Query,
    );
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

/// Sends raw bytes from `src` and returns whatever datagram comes back within `wait`.
pub async fn raw_exchange(
    server: SocketAddr,
    src: IpAddr,
    bytes: &[u8],
    wait: Duration,
) -> Option<Vec<u8>> {
    let sock = tokio::net::UdpSocket::bind(SocketAddr::new(src, 0))
        .await
        .unwrap();
    sock.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0u8; 65_536];
    match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
        Ok(Ok((len, _))) => Some(buf[..len].to_vec()),
        _ => None,
    }
}

/// A deterministic generator (xorshift), so a failure can be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
