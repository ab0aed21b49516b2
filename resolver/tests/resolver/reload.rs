//! Changes on disk take effect without a restart, and a broken change keeps what works.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::harness::{
    ask, eventually, query, rcode, write, Resolver, Setup, ACCOUNT_1, ADS_LIST, POLICY,
};

#[tokio::test]
async fn list_file_changed_on_disk_blocks_the_new_name_while_queries_keep_being_answered() {
    // One worker: the allowed answer asked twice is in its packet cache, which the fast path
    // reads before the lists, so the swap must invalidate it.
    let r = Resolver::start(Setup::one_worker()).await;
    let mut c = r.udp(ACCOUNT_1).await;
    let handovers = || r.metric("qorgan_dns_fast_path_handovers_total", &[]);
    let before = handovers();
    for _ in 0..2 {
        assert_eq!(
            rcode(&ask(&mut c, "fresh.test.", RecordType::A).await),
            ResponseCode::NoError
        );
    }
    assert_eq!(
        handovers(),
        before + 1.0,
        "the second answer came from the packet cache"
    );
    let generation = r.store.generation();

    // A query loop on another client for the whole change: every query must be answered.
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut loop_client = r.udp(ACCOUNT_1).await;
    let looper = {
        let (stop, answered, failed) = (stop.clone(), answered.clone(), failed.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(4);
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                i += 1;
                let name = if i.is_multiple_of(2) {
                    "ads.test.".to_owned()
                } else {
                    format!("n{i}.loop.test.")
                };
                match query(&mut loop_client, &name, RecordType::A).await {
                    Ok(resp)
                        if matches!(
                            rcode(&resp),
                            ResponseCode::NoError | ResponseCode::NXDomain
                        ) =>
                    {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        })
    };

    tokio::time::sleep(Duration::from_millis(300)).await;
    write(
        &r.lists_dir().join("ads").join("ads.txt"),
        &format!("{ADS_LIST}fresh.test\n"),
    );
    let blocked = eventually(10, || {
        let addr = r.addr;
        async move {
            let mut c = crate::harness::udp_client(addr, ACCOUNT_1, true);
            matches!(query(&mut c, "fresh.test.", RecordType::A).await, Ok(resp) if rcode(&resp) == ResponseCode::NXDomain)
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    looper.await.unwrap();

    assert!(blocked, "the new list entry took effect without a restart");
    assert_eq!(
        rcode(&ask(&mut c, "fresh.test.", RecordType::A).await),
        ResponseCode::NXDomain,
        "the answer cached before the swap is not served after it"
    );
    assert!(r.store.generation() > generation);
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "queries failed during the reload"
    );
    assert!(
        answered.load(Ordering::SeqCst) > 20,
        "the loop ran: {}",
        answered.load(Ordering::SeqCst)
    );
    assert!(r.metric("qorgan_lists_reloads_total", &[]) >= 2.0);
    assert_eq!(r.metric("qorgan_lists_reload_failures_total", &[]), 0.0);
}

#[tokio::test]
async fn broken_lists_folder_keeps_the_previous_catalog_and_counts_the_failure() {
    let r = Resolver::start(Setup::default()).await;
    let mut c = r.udp(ACCOUNT_1).await;
    assert_eq!(
        rcode(&ask(&mut c, "ads.test.", RecordType::A).await),
        ResponseCode::NXDomain
    );
    assert_eq!(
        r.metric("qorgan_lists_domains", &[("category", "ads")]),
        3.0
    );

    // A folder whose name is no category name makes the whole folder fail to compile.
    std::fs::create_dir(r.lists_dir().join("Not A Category")).unwrap();
    assert!(
        eventually(10, || async {
            r.metric("qorgan_lists_reload_failures_total", &[]) >= 1.0
        })
        .await
    );
    assert_eq!(
        rcode(&ask(&mut c, "ads.test.", RecordType::A).await),
        ResponseCode::NXDomain,
        "old catalog kept"
    );

    // Fixing the folder is picked up too.
    std::fs::remove_dir(r.lists_dir().join("Not A Category")).unwrap();
    write(
        &r.lists_dir().join("ads").join("ads.txt"),
        "ads.test\nlater.test\n",
    );
    assert!(eventually(10, || async {
        let mut c = crate::harness::udp_client(r.addr, ACCOUNT_1, true);
        matches!(query(&mut c, "later.test.", RecordType::A).await, Ok(resp) if rcode(&resp) == ResponseCode::NXDomain)
    })
    .await);
}

#[tokio::test]
async fn a_name_unblocked_by_an_edit_is_answered_although_the_worker_remembered_its_block() {
    // One worker: the fast path remembers which list blocked a name it walked, under the
    // policy's revision; the edit must make it walk again.
    let r = Resolver::start(Setup::one_worker()).await;
    let mut c = r.udp(ACCOUNT_1).await;
    let blocked = || r.metric("qorgan_dns_queries_total", &[("outcome", "blocked")]);
    let before = blocked();
    for rtype in [RecordType::A, RecordType::AAAA, RecordType::A] {
        assert_eq!(
            rcode(&ask(&mut c, "x.tracker.blocked.test.", rtype).await),
            ResponseCode::NXDomain
        );
    }
    assert_eq!(blocked(), before + 3.0, "each remembered block is counted");

    write(
        &r.policy_path(),
        &POLICY.replace("categories = [\"ads\"]", "categories = []"),
    );
    assert!(
        eventually(10, || async {
            let mut c = crate::harness::udp_client(r.addr, ACCOUNT_1, true);
            matches!(query(&mut c, "x.tracker.blocked.test.", RecordType::A).await, Ok(resp) if rcode(&resp) == ResponseCode::NoError)
        })
        .await,
        "the edit took the category off, and the remembered block with it"
    );
    assert_eq!(
        rcode(&ask(&mut c, "x.tracker.blocked.test.", RecordType::AAAA).await),
        ResponseCode::NoError
    );
}

#[tokio::test]
async fn policy_file_change_applies_and_a_broken_edit_keeps_the_previous_accounts() {
    let r = Resolver::start(Setup::default()).await;
    let mut c = r.udp(ACCOUNT_1).await;
    assert_eq!(
        rcode(&ask(&mut c, "evil.test.", RecordType::A).await),
        ResponseCode::NoError
    );

    write(
        &r.policy_path(),
        &POLICY.replace(
            "categories = [\"ads\"]",
            "categories = [\"ads\", \"malware\"]",
        ),
    );
    assert!(eventually(10, || async {
        let mut c = crate::harness::udp_client(r.addr, ACCOUNT_1, true);
        matches!(query(&mut c, "evil.test.", RecordType::A).await, Ok(resp) if rcode(&resp) == ResponseCode::NXDomain)
    })
    .await);

    write(
        &r.policy_path(),
        "[[accounts]]\nid = 1\nnetworks = [\"nonsense\"]\n",
    );
    assert!(
        eventually(10, || async {
            r.metric("qorgan_policy_reload_failures_total", &[]) >= 1.0
        })
        .await
    );
    assert_eq!(
        rcode(&ask(&mut c, "evil.test.", RecordType::A).await),
        ResponseCode::NXDomain,
        "previous accounts kept"
    );
}
