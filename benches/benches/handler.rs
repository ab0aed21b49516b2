// Run with: cargo bench -p qorgan-benches --bench handler

//! Handler time per query without sockets: the bytes of a query become a hickory `Request`
//! (`Request::from_bytes`, as hickory-server builds it), then `DnsHandler::handle_request`
//! decides and encodes the answer into a buffer (a capturing `ResponseHandler` instead of a
//! socket). Two paths: a blocked name (decision + synthesized NXDOMAIN with EDE), and an
//! allowed name answered from hickory-resolver's cache (the cache is filled once from a tiny
//! in-process UDP upstream on 127.0.0.1 before measuring). Then the same two through the UDP
//! fast path's per-packet function (`FastPath::process`, bytes in and out). The catalog is the shared lists
//! (`../shared/data/blocklists`, one category) when present, else a small synthetic list.

// criterion_group! generates an undocumented pub fn.
#![allow(missing_docs)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use hickory_net::runtime::TokioTime;
use hickory_net::xfer::Protocol;
use hickory_net::NetError;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use qorgan_blocklists::{AccountId, BlockMode};
use qorgan_resolver::{
    AccountSpec, DnsHandler, DnsMetrics, FastOutcome, FastPath, Forwarder, SnapshotStore,
};

/// Encodes the answer into a buffer, as the UDP path would before `send_to`.
#[derive(Clone)]
struct Capture;

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(1232);
        let info = response.destructive_emit(&mut encoder)?;
        std::hint::black_box(&bytes);
        Ok(info)
    }
}

/// Answers every question with one A record, TTL one hour (so the cache holds it).
fn start_upstream() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind upstream");
    let addr = socket.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((len, peer)) = socket.recv_from(&mut buf) {
            let Ok(request) = Message::from_vec(&buf[..len]) else {
                continue;
            };
            let Some(query) = request.queries.first().cloned() else {
                continue;
            };
            let mut response = Message::response(request.metadata.id, OpCode::Query);
            response.metadata.recursion_available = true;
            response.add_query(query.clone());
            let a = RData::A(A(Ipv4Addr::new(192, 0, 2, 1)));
            response.add_answer(Record::from_rdata(query.name().clone(), 3600, a));
            if let Ok(bytes) = response.to_vec() {
                let _ = socket.send_to(&bytes, peer);
            }
        }
    });
    addr
}

fn lists_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let category = dir.path().join("ads");
    std::fs::create_dir_all(&category).expect("mkdir");
    let mut synthetic: String = (0..10_000)
        .map(|i| format!("host{i}.ads-bench.test\n"))
        .collect();
    synthetic.push_str("blocked.bench.test\n");
    std::fs::write(category.join("synthetic.txt"), synthetic).expect("write");
    let shared = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/data/blocklists"
    ));
    match std::fs::read_dir(shared) {
        Ok(entries) => {
            for entry in entries.flatten() {
                let _ = std::fs::copy(entry.path(), category.join(entry.file_name()));
            }
        }
        Err(_) => eprintln!(
            "shared lists absent at {}: benching a synthetic 10k-name list",
            shared.display()
        ),
    }
    dir
}

fn query_request(name: &str) -> Request {
    let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(
        Name::from_ascii(name).expect("name"),
        RecordType::A,
    ));
    m.set_edns(Edns::new());
    let src = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40_000);
    Request::from_bytes(m.to_vec().expect("encode"), src, Protocol::Udp).expect("parse")
}

fn handler_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let lists = lists_dir();
    let started = Instant::now();
    let (catalog, _report) = qorgan_blocklists::compile_dir(lists.path()).expect("compile");
    eprintln!(
        "catalog: {} names in {:?}",
        catalog.len(),
        started.elapsed()
    );

    let mut config = qorgan_config::Config::default();
    config.dns.upstreams = vec![start_upstream().to_string()];
    config.default_policy.networks = Vec::new();
    let store = SnapshotStore::new(&config.default_policy);
    store.set_catalog(Arc::new(catalog));
    let account = AccountSpec::new(
        AccountId(1),
        vec!["127.0.0.1/32".parse().expect("net")],
        vec!["ads".to_owned()],
        BlockMode::Nxdomain,
    );
    store.set_accounts(vec![account]).expect("accounts");
    let metrics = Arc::new(DnsMetrics::new(&prometheus::Registry::new()).expect("metrics"));
    let handler = rt.block_on(async {
        let forwarder = Forwarder::new(&config.dns, metrics.clone()).expect("forwarder");
        DnsHandler::new(&config.dns, store.clone(), forwarder, metrics.clone())
    });

    let blocked = query_request("blocked.bench.test.");
    let allowed = query_request("www.allowed.example.");
    rt.block_on(async {
        // Fill the cache, and check both paths do what they are measured for.
        handler
            .handle_request::<_, TokioTime>(&allowed, Capture)
            .await;
        let info = handler
            .handle_request::<_, TokioTime>(&blocked, Capture)
            .await;
        assert_eq!(
            info.response_code,
            hickory_proto::op::ResponseCode::NXDomain
        );
    });
    let (hits_before, misses) = metrics.cache_counts();
    assert_eq!(misses, 1, "the allowed name went upstream once");

    let mut group = c.benchmark_group("handler");
    group.measurement_time(Duration::from_secs(5));
    for (label, request) in [
        ("blocked_nxdomain", &blocked),
        ("allowed_cache_hit", &allowed),
    ] {
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        std::hint::black_box(
                            handler
                                .handle_request::<_, TokioTime>(request, Capture)
                                .await,
                        );
                    }
                    start.elapsed()
                })
            });
        });
    }
    group.finish();
    let (hits, misses_after) = metrics.cache_counts();
    assert!(
        hits > hits_before && misses_after == 1,
        "the allowed path stayed on the cache"
    );

    fast_path_benches(c, &config, store, metrics);
}

fn query_bytes(id: u16, name: &str) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(
        Name::from_ascii(name).expect("name"),
        RecordType::A,
    ));
    m.set_edns(Edns::new());
    m.to_vec().expect("encode")
}

/// The UDP fast path's per-packet function (bytes in, bytes out, no sockets): a blocked name
/// (decision + NXDOMAIN/SOA/EDE written from bytes), a packet-cache hit (ID, case and TTLs
/// patched), and a QR=1 packet dropped before parsing.
fn fast_path_benches(
    c: &mut Criterion,
    config: &qorgan_config::Config,
    store: SnapshotStore,
    metrics: Arc<DnsMetrics>,
) {
    let mut fast = FastPath::new(&config.dns, store, metrics, 1024);
    let src = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut out = vec![0u8; 1280];
    let allowed = query_bytes(7, "www.allowed.example.");
    let FastOutcome::Slow(Some(key)) = fast.process(src, &allowed, &mut out) else {
        panic!("a cache miss goes to the hickory path");
    };
    let mut answer = Message::from_vec(&allowed).expect("parse");
    answer.metadata.message_type = MessageType::Response;
    answer.metadata.recursion_available = true;
    answer.add_answer(Record::from_rdata(
        Name::from_ascii("www.allowed.example.").expect("name"),
        3600,
        RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
    ));
    fast.fill(key, &answer.to_vec().expect("encode"));
    let blocked = query_bytes(8, "blocked.bench.test.");
    let mut qr1 = blocked.clone();
    qr1[2] |= 0x80;
    assert!(matches!(
        fast.process(src, &allowed, &mut out),
        FastOutcome::Reply(_)
    ));
    assert!(matches!(
        fast.process(src, &blocked, &mut out),
        FastOutcome::Reply(_)
    ));

    let mut group = c.benchmark_group("fast_path");
    group.measurement_time(Duration::from_secs(5));
    for (label, query) in [
        ("blocked_nxdomain", &blocked),
        ("cache_hit", &allowed),
        ("qr1_dropped", &qr1),
    ] {
        group.bench_function(label, |b| {
            b.iter(|| std::hint::black_box(fast.process(src, query, &mut out)));
        });
    }
    group.finish();
}

criterion_group!(benches, handler_benches);
criterion_main!(benches);
