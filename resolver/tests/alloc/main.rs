//! The UDP fast path allocates nothing per packet: a counting global allocator around a burst
//! of blocked answers and cache hits, driven through `FastPath::process` (bytes in, bytes out).
#![allow(clippy::unwrap_used, missing_docs, unreachable_pub)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use qorgan_blocklists::{AccountId, BlockMode};
use qorgan_resolver::{AccountSpec, DnsMetrics, FastOutcome, FastPath, SnapshotStore};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: forwards to the system allocator; only counts on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made on this thread while `f` runs.
fn allocations_in(f: impl FnOnce()) -> usize {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    f();
    COUNTING.with(|on| on.set(false));
    ALLOCATIONS.with(Cell::get)
}

fn query(id: u16, name: &str, rtype: RecordType, edns: bool) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if edns {
        let mut e = hickory_proto::op::Edns::new();
        e.set_max_payload(1232);
        m.edns = Some(e);
    }
    m.to_vec().unwrap()
}

fn fast_path() -> FastPath {
    let dir = tempfile::tempdir().unwrap();
    let ads = dir.path().join("ads");
    std::fs::create_dir_all(&ads).unwrap();
    std::fs::write(ads.join("ads.txt"), "ads.test\n||tracker.test^\n").unwrap();
    let (catalog, _) = qorgan_blocklists::compile_dir(dir.path()).unwrap();
    let config = qorgan_config::Config::default();
    let store = SnapshotStore::new(&config.default_policy);
    store.set_catalog(Arc::new(catalog));
    store
        .set_accounts(vec![AccountSpec::new(
            AccountId(1),
            vec!["127.0.0.0/8".parse().unwrap()],
            vec!["ads".to_owned()],
            BlockMode::Nxdomain,
        )])
        .unwrap();
    let metrics = Arc::new(DnsMetrics::new(&prometheus::Registry::new()).unwrap());
    FastPath::new(&config.dns, store, metrics, 1024)
}

#[test]
fn fast_path_allocates_nothing_for_blocked_answers_and_cache_hits() {
    let mut fast = fast_path();
    let src = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut out = vec![0u8; 1280];

    // Fill the cache with the answer the hickory path would give for www.example.com A.
    let allowed = query(1, "www.example.com.", RecordType::A, true);
    let FastOutcome::Slow(Some(key)) = fast.process(src, &allowed, &mut out) else {
        panic!("an allowed name not in the cache goes to the hickory path with a fill key");
    };
    let mut answer = Message::from_vec(&allowed).unwrap();
    answer.metadata.message_type = MessageType::Response;
    answer.metadata.recursion_available = true;
    answer.add_answer(Record::from_rdata(
        Name::from_ascii("www.example.com.").unwrap(),
        300,
        RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
    ));
    fast.fill(key, &answer.to_vec().unwrap());
    assert_eq!(fast.cache_len(), 1);

    let queries = [
        query(2, "ads.test.", RecordType::A, false),
        query(3, "x.Tracker.TEST.", RecordType::AAAA, true),
        query(4, "WWW.example.COM.", RecordType::A, true),
        query(5, "www.example.com.", RecordType::A, true),
    ];
    // Warm-up: thread-locals of arc-swap and the metrics are set up on first use.
    for q in &queries {
        assert!(matches!(
            fast.process(src, q, &mut out),
            FastOutcome::Reply(_)
        ));
    }
    assert_eq!(
        fast.cache_len(),
        3,
        "the answer and the two blocked names' verdicts (remembered on first sight)"
    );
    assert!(
        allocations_in(|| drop(std::hint::black_box(vec![1u8]))) >= 1,
        "the counting allocator counts"
    );
    let mut replies = 0;
    let allocations = allocations_in(|| {
        for _ in 0..2_500 {
            for q in &queries {
                if let FastOutcome::Reply(n) = fast.process(src, q, &mut out) {
                    replies += usize::from(n > 12);
                }
            }
        }
    });
    assert_eq!(
        replies, 10_000,
        "every query of the burst is answered by the fast path"
    );
    assert_eq!(
        allocations, 0,
        "allocations during 10,000 fast-path answers"
    );

    // The cache hit carries the client's ID and case.
    let FastOutcome::Reply(n) = fast.process(src, &queries[2], &mut out) else {
        panic!("cache hit");
    };
    let hit = Message::from_vec(&out[..n]).unwrap();
    assert_eq!(hit.metadata.id, 4);
    assert_eq!(hit.queries[0].name().to_ascii(), "WWW.example.COM.");
    assert_eq!(
        hit.answers[0].data,
        RData::A(A(Ipv4Addr::new(192, 0, 2, 1)))
    );
}
