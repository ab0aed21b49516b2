//! Crediting, requests and invoices on a temporary sled database.

use proptest::prelude::*;

use super::*;
use crate::store::Service;

fn db() -> (sled::Db, Billing) {
    let db = sled::Config::new().temporary(true).open().expect("db");
    let b = Billing::open(&db).expect("billing");
    (db, b)
}

fn d(s: &str) -> Date {
    parse_date("d", s).expect("date")
}

fn receipt() -> NewEmail {
    NewEmail {
        to: "owner@example.kz".to_owned(),
        subject: "Оплата получена".to_owned(),
        body: "Спасибо".to_owned(),
    }
}

fn paid(order: &PaymentOrder, reference: &str) -> Verified {
    Verified {
        order_id: order.order_id.clone(),
        outcome: Outcome::Paid,
        amount_tiyn: order.amount_tiyn,
        currency: CURRENCY.to_owned(),
        reference: reference.to_owned(),
        card_mask: None,
        approval_code: None,
    }
}

fn open_order(b: &Billing, account: Id, amount: i64) -> PaymentOrder {
    let o = b
        .reserve_order("sandbox", account, 7, amount, 3600, 1_000)
        .expect("reserve");
    b.attach_checkout(&o.order_id, "http://x/pay".to_owned(), None, None)
        .expect("checkout")
}

fn outbox_len(b: &Billing) -> usize {
    b.outbox.len()
}

#[test]
fn a_paid_callback_credits_once_however_often_it_is_replayed() {
    let (_db, b) = db();
    let o = open_order(&b, 1, 150_000);
    let v = paid(&o, "R1");
    match b
        .apply_gateway_result("sandbox", &v, "{}", Some(&receipt()), 2_000)
        .expect("apply")
    {
        CreditOutcome::Credited { balance_tiyn, .. } => assert_eq!(balance_tiyn, 150_000),
        other => panic!("{other:?}"),
    }
    for _ in 0..5 {
        assert_eq!(
            b.apply_gateway_result("sandbox", &v, "{}", Some(&receipt()), 2_001)
                .expect("replay"),
            CreditOutcome::AlreadyCredited
        );
    }
    // A decline arriving after the payment changes nothing.
    let mut late = v.clone();
    late.outcome = Outcome::Declined("timeout".to_owned());
    assert_eq!(
        b.apply_gateway_result("sandbox", &late, "{}", Some(&receipt()), 2_002)
            .expect("late"),
        CreditOutcome::AlreadyCredited
    );
    assert_eq!(b.balance(1).expect("bal"), 150_000);
    assert_eq!(b.ledger_sum(1).expect("sum"), 150_000);
    assert_eq!(b.all_payments(1).expect("p").len(), 1);
    assert_eq!(outbox_len(&b), 1, "one receipt");
    let stored = b.order(&o.order_id).expect("read").expect("order");
    assert_eq!(stored.status, OrderStatus::Paid);
    assert_eq!(stored.reference.as_deref(), Some("R1"));
}

#[test]
fn concurrent_deliveries_of_the_same_callback_credit_exactly_once() {
    let (_db, b) = db();
    let o = open_order(&b, 1, 5_000);
    let v = paid(&o, "R-conc");
    let credited = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|_| {
                s.spawn(|| {
                    b.apply_gateway_result("sandbox", &v, "{}", Some(&receipt()), 3)
                        .expect("apply")
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("join"))
            .filter(|r| matches!(r, CreditOutcome::Credited { .. }))
            .count()
    });
    assert_eq!(credited, 1);
    assert_eq!(b.balance(1).expect("bal"), 5_000);
    assert_eq!(b.ledger_sum(1).expect("sum"), 5_000);
    assert_eq!(outbox_len(&b), 1);
}

#[test]
fn amount_or_currency_mismatch_never_credits_and_is_kept_on_the_order() {
    let (_db, b) = db();
    let o = open_order(&b, 1, 150_000);
    let mut v = paid(&o, "R1");
    v.amount_tiyn = 100;
    assert!(matches!(
        b.apply_gateway_result("sandbox", &v, "raw-1", Some(&receipt()), 5)
            .expect("apply"),
        CreditOutcome::Mismatch(_)
    ));
    let mut v = paid(&o, "R1");
    v.currency = "USD".to_owned();
    assert!(matches!(
        b.apply_gateway_result("sandbox", &v, "raw-2", Some(&receipt()), 5)
            .expect("apply"),
        CreditOutcome::Mismatch(_)
    ));
    let stored = b.order(&o.order_id).expect("read").expect("order");
    assert_eq!(stored.status, OrderStatus::Pending);
    assert_eq!(stored.raw_callback.as_deref(), Some("raw-2"));
    assert!(stored.last_error.is_some());
    assert_eq!(b.balance(1).expect("bal"), 0);
    assert_eq!(b.ledger_sum(1).expect("sum"), 0);
    assert_eq!(outbox_len(&b), 0);
    // The genuine notification still credits afterwards.
    assert!(matches!(
        b.apply_gateway_result("sandbox", &paid(&o, "R1"), "{}", Some(&receipt()), 6)
            .expect("apply"),
        CreditOutcome::Credited { .. }
    ));
}

#[test]
fn a_reference_credited_to_one_order_cannot_credit_another() {
    let (_db, b) = db();
    let o1 = open_order(&b, 1, 100);
    let o2 = open_order(&b, 1, 100);
    assert!(matches!(
        b.apply_gateway_result("sandbox", &paid(&o1, "SAME"), "{}", Some(&receipt()), 1)
            .expect("1"),
        CreditOutcome::Credited { .. }
    ));
    assert!(matches!(
        b.apply_gateway_result("sandbox", &paid(&o2, "SAME"), "{}", Some(&receipt()), 2)
            .expect("2"),
        CreditOutcome::Mismatch(_)
    ));
    assert_eq!(b.balance(1).expect("bal"), 100);
}

#[test]
fn declines_fail_open_orders_and_a_later_confirmed_payment_still_credits() {
    let (_db, b) = db();
    let o = open_order(&b, 1, 700);
    let mut v = paid(&o, "R9");
    v.outcome = Outcome::Declined("insufficient funds".to_owned());
    assert_eq!(
        b.apply_gateway_result("sandbox", &v, "{}", Some(&receipt()), 1)
            .expect("decline"),
        CreditOutcome::Declined
    );
    assert_eq!(
        b.order(&o.order_id).expect("r").expect("o").status,
        OrderStatus::Failed
    );
    assert!(matches!(
        b.apply_gateway_result("sandbox", &paid(&o, "R9"), "{}", Some(&receipt()), 2)
            .expect("pay"),
        CreditOutcome::Credited { .. }
    ));
    assert_eq!(b.balance(1).expect("bal"), 700);
}

#[test]
fn expired_orders_never_credit_and_expiry_spares_paid_ones() {
    let (_db, b) = db();
    let late = open_order(&b, 1, 100);
    let done = open_order(&b, 1, 200);
    b.apply_gateway_result("sandbox", &paid(&done, "D"), "{}", Some(&receipt()), 10)
        .expect("pay");
    assert_eq!(b.expire_orders(1_000 + 3_599).expect("none yet"), 0);
    assert_eq!(b.expire_orders(1_000 + 3_600).expect("expire"), 1);
    assert_eq!(
        b.order(&done.order_id).expect("r").expect("o").status,
        OrderStatus::Paid
    );
    assert!(matches!(
        b.apply_gateway_result("sandbox", &paid(&late, "L"), "{}", Some(&receipt()), 5_000)
            .expect("late"),
        CreditOutcome::Ignored(_)
    ));
    assert_eq!(b.balance(1).expect("bal"), 200);
}

#[test]
fn unknown_orders_and_other_gateways_orders_are_not_found() {
    let (_db, b) = db();
    let o = open_order(&b, 1, 100);
    let mut v = paid(&o, "X");
    assert!(matches!(
        b.apply_gateway_result("halyk_epay", &v, "{}", Some(&receipt()), 1),
        Err(ControlError::NotFound("order"))
    ));
    v.order_id = "999999999".to_owned();
    assert!(matches!(
        b.apply_gateway_result("sandbox", &v, "{}", Some(&receipt()), 1),
        Err(ControlError::NotFound("order"))
    ));
    assert_eq!(b.balance(1).expect("bal"), 0);
}

#[test]
fn order_ids_are_valid_invoice_ids_with_distinct_last_six_digits() {
    let (_db, b) = db();
    let mut suffixes = std::collections::HashSet::new();
    for _ in 0..200 {
        let o = b.reserve_order("halyk_epay", 1, 1, 100, 60, 0).expect("o");
        assert!(crate::payments::halyk::valid_invoice_id(&o.order_id));
        assert!(suffixes.insert(crate::payments::halyk::invoice_suffix(&o.order_id).to_owned()));
    }
}

#[test]
fn order_ids_keep_distinct_last_six_digits_across_restarts() {
    // sled's id generator resumes 2 000 000 ahead after a restart: the same last six digits.
    let dir = tempfile::tempdir().expect("tmp");
    let mut suffixes = std::collections::HashSet::new();
    for start in 0..3 {
        let db = sled::Config::new().path(dir.path()).open().expect("db");
        if start > 0 {
            // The premise: the generator jumped, so its ids bring back used last six digits.
            assert!(db.generate_id().expect("id") >= 2_000_000 * start);
        }
        let b = Billing::open(&db).expect("b");
        for _ in 0..150 {
            let o = b
                .reserve_order("halyk_epay", 1, 1, 100, 60, 0)
                .unwrap_or_else(|e| panic!("start {start}: {e}"));
            assert!(crate::payments::halyk::valid_invoice_id(&o.order_id));
            let suffix = crate::payments::halyk::invoice_suffix(&o.order_id).to_owned();
            assert!(
                suffixes.insert(suffix),
                "start {start}: {} again",
                o.order_id
            );
        }
        db.flush().expect("flush");
    }
}

#[test]
fn a_flushed_credit_survives_reopening() {
    let dir = tempfile::tempdir().expect("tmp");
    let id;
    {
        let db = sled::Config::new().path(dir.path()).open().expect("db");
        let b = Billing::open(&db).expect("b");
        let o = open_order(&b, 3, 4_200);
        id = o.order_id.clone();
        b.apply_gateway_result("sandbox", &paid(&o, "P"), "{}", Some(&receipt()), 1)
            .expect("pay");
        futures_flush(&b);
    }
    let db = sled::Config::new().path(dir.path()).open().expect("reopen");
    let b = Billing::open(&db).expect("b");
    assert_eq!(b.balance(3).expect("bal"), 4_200);
    assert_eq!(
        b.order(&id).expect("r").expect("o").status,
        OrderStatus::Paid
    );
}

fn futures_flush(b: &Billing) {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("rt")
        .block_on(b.flush())
        .expect("flush");
}

#[test]
fn operator_payments_are_idempotent_on_their_reference() {
    let (_db, b) = db();
    let (p, fresh) = b
        .post_payment(
            1,
            10_000,
            PaymentSource::BankTransfer,
            "ПП-17",
            "Платёжное поручение",
            86_400,
        )
        .expect("pay");
    assert!(fresh);
    let (again, fresh) = b
        .post_payment(
            1,
            10_000,
            PaymentSource::BankTransfer,
            "ПП-17",
            "Платёжное поручение",
            86_401,
        )
        .expect("retry");
    assert!(!fresh);
    assert_eq!(again, p);
    assert!(matches!(
        b.post_payment(1, 9_999, PaymentSource::BankTransfer, "ПП-17", "x", 1),
        Err(ControlError::Duplicate { .. })
    ));
    // The same reference from another source is another payment.
    b.post_payment(1, 500, PaymentSource::Cash, "ПП-17", "Касса", 2 * 86_400)
        .expect("cash");
    b.post_payment(
        1,
        -200,
        PaymentSource::Correction,
        "K-1",
        "Корректировка",
        3 * 86_400,
    )
    .expect("corr");
    assert_eq!(b.balance(1).expect("bal"), 10_300);
    let day1 = day_of(86_400);
    let hist = b
        .payments(1, period(day1, day_of(3 * 86_400), None).expect("p"))
        .expect("hist");
    assert_eq!(
        hist.iter().map(|p| p.amount_tiyn).collect::<Vec<_>>(),
        vec![-200, 500, 10_000],
        "newest first"
    );
    let only_first = b
        .payments(1, period(day1, day1, None).expect("p"))
        .expect("h");
    assert_eq!(only_first.len(), 1);
}

fn invoice(kind: InvoiceKind, number: &str, issued: &str) -> NewInvoice {
    NewInvoice {
        kind,
        number: number.to_owned(),
        issued_on: d(issued),
        period: period(d("2026-10-01"), d("2026-10-31"), None).expect("p"),
        amount_tiyn: 1_500_000,
        lines: vec![InvoiceLine {
            description: "Интернет «Бизнес 100», октябрь".to_owned(),
            amount_tiyn: 1_500_000,
        }],
        corrects_number: None,
    }
}

#[test]
fn invoices_filter_by_kind_and_period_and_stay_within_their_account() {
    let (_db, b) = db();
    let (n, _) = b
        .add_invoice(1, invoice(InvoiceKind::Notice, "100", "2026-11-01"), 1)
        .expect("n");
    b.add_invoice(1, invoice(InvoiceKind::Invoice, "101", "2026-11-05"), 1)
        .expect("i");
    b.add_invoice(1, invoice(InvoiceKind::OneTime, "102", "2026-10-15"), 1)
        .expect("o");
    b.add_invoice(1, invoice(InvoiceKind::Correction, "103", "2026-11-20"), 1)
        .expect("c");
    let (other, _) = b
        .add_invoice(2, invoice(InvoiceKind::Notice, "100", "2026-11-01"), 1)
        .expect("other account, same number");
    assert_eq!(b.invoices(1, None, None).expect("all").len(), 4);
    let notices = b.invoices(1, Some(InvoiceKind::Notice), None).expect("k");
    assert_eq!(notices, vec![n.clone()]);
    let nov = period(d("2026-11-01"), d("2026-11-30"), None).expect("p");
    let in_nov: Vec<String> = b
        .invoices(1, None, Some(nov))
        .expect("p")
        .into_iter()
        .map(|i| i.number)
        .collect();
    assert_eq!(in_nov, vec!["103", "101", "100"]);
    assert_eq!(b.invoice(1, n.id).expect("r"), Some(n.clone()));
    assert_eq!(
        b.invoice(1, other.id).expect("r"),
        None,
        "another account's id"
    );
    // Billing retries the same invoice: same record; a different one under the number: refused.
    let (again, fresh) = b
        .add_invoice(1, invoice(InvoiceKind::Notice, "100", "2026-11-01"), 9)
        .expect("retry");
    assert!(!fresh);
    assert_eq!(again.id, n.id);
    assert!(matches!(
        b.add_invoice(1, invoice(InvoiceKind::Notice, "100", "2026-11-02"), 9),
        Err(ControlError::Duplicate { .. })
    ));
}

fn put_service(db: &sled::Db, account: Id, id: Id) {
    let s = Service {
        id,
        account_id: account,
        kind: "internet".to_owned(),
        name: "Бизнес 100".to_owned(),
        monthly_fee_tiyn: 1_500_000,
        status: ServiceStatus::Active,
        created_at: 0,
    };
    db.open_tree("services")
        .expect("tree")
        .insert(pair(account, id), enc(&s).expect("enc"))
        .expect("insert");
}

#[test]
fn a_second_open_disconnection_request_is_refused() {
    let (db, b) = db();
    put_service(&db, 1, 50);
    let r = b
        .request_disconnect(1, "4445", 50, 7, Some("переезд".to_owned()), 1)
        .expect("first");
    assert_eq!(r.kind, RequestKind::Disconnect);
    assert_eq!(r.account_number, "4445");
    assert!(matches!(
        b.request_disconnect(1, "4445", 50, 7, None, 2),
        Err(ControlError::AlreadyRequested(_))
    ));
    assert!(matches!(
        b.request_disconnect(2, "9", 50, 7, None, 2),
        Err(ControlError::NotFound("service")),
    ));
    let svc: Service = dec(
        "services",
        &db.open_tree("services")
            .expect("t")
            .get(pair(1, 50))
            .expect("g")
            .expect("v"),
    )
    .expect("dec");
    assert_eq!(svc.status, ServiceStatus::DisconnectRequested);
    let c = b
        .request_connect(1, "4445", serde_json::json!({"tariff": "Бизнес 200"}), 7, 3)
        .expect("connect");
    assert_eq!(c.kind, RequestKind::Connect);
    assert_eq!(b.service_requests(1).expect("list").len(), 2);
}

#[test]
fn usage_records_are_found_by_overlapping_period() {
    let (_db, b) = db();
    let oct = period(d("2026-10-01"), d("2026-10-31"), None).expect("p");
    let nov = period(d("2026-11-01"), d("2026-11-30"), None).expect("p");
    b.add_usage(5, nov, 10, 20, 300, "трафик".to_owned())
        .expect("u");
    b.add_usage(5, oct, 1, 2, 3, "трафик".to_owned())
        .expect("u");
    b.add_usage(6, oct, 1, 2, 3, "трафик".to_owned())
        .expect("u");
    let q = period(d("2026-10-15"), d("2026-11-02"), None).expect("p");
    let got = b.usage(5, q).expect("usage");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].period_start, "2026-10-01");
    assert!(b
        .usage(
            5,
            period(d("2026-12-01"), d("2026-12-31"), None).expect("p")
        )
        .expect("u")
        .is_empty());
}

#[test]
fn statistics_requests_are_limited_and_finish_once_with_their_email() {
    let (_db, b) = db();
    let p = period(d("2026-10-01"), d("2026-10-31"), None).expect("p");
    for _ in 0..MAX_OPEN_STATS_REQUESTS {
        b.queue_stats_request(1, 7, 5, p, "a@b.kz", 1).expect("q");
    }
    assert!(matches!(
        b.queue_stats_request(1, 7, 5, p, "a@b.kz", 1),
        Err(ControlError::TooManyOpen { .. })
    ));
    b.queue_stats_request(2, 8, 6, p, "c@d.kz", 1)
        .expect("another account has its own limit");
    let queued = b.queued_stats_requests().expect("q");
    assert_eq!(queued.len(), 4);
    let csv = Attachment {
        filename: "usage.csv".to_owned(),
        content_type: "text/csv; charset=utf-8".to_owned(),
        content: "a,b\r\n".to_owned(),
    };
    assert!(b
        .finish_stats_request(&queued[0], Ok((receipt(), vec![csv.clone()])), 5)
        .expect("sent"));
    assert!(!b
        .finish_stats_request(&queued[0], Ok((receipt(), vec![csv.clone()])), 6)
        .expect("again"));
    let mail_id = b.outbox.iter().next().expect("one").expect("read").0;
    let mail_id = id_of(&mail_id).expect("id");
    assert_eq!(b.attachments(mail_id).expect("att"), vec![csv]);
    assert!(b.attachments(mail_id + 1000).expect("none").is_empty());
    assert!(b
        .finish_stats_request(&queued[1], Err("no data".to_owned()), 6)
        .expect("failed"));
    assert_eq!(outbox_len(&b), 1);
    let mine = b.stats_requests(1).expect("mine");
    assert_eq!(mine.len(), 3);
    assert_eq!(
        mine.iter()
            .filter(|r| r.status == StatsStatus::Queued)
            .count(),
        1
    );
    b.queue_stats_request(1, 7, 5, p, "a@b.kz", 1)
        .expect("room again once two are finished");
}

#[test]
fn periods_refuse_reversed_overlong_and_future_spans() {
    assert!(period(d("2026-11-02"), d("2026-11-01"), None).is_err());
    assert!(
        period(d("2025-01-01"), d("2026-01-01"), None).is_ok(),
        "366 days"
    );
    assert!(
        period(d("2025-01-01"), d("2026-01-02"), None).is_err(),
        "367 days"
    );
    assert!(period(d("2026-11-01"), d("2026-11-25"), Some(d("2026-11-24"))).is_err());
    assert!(parse_date("from", "2026-02-30").is_err());
    assert!(parse_date("from", "24.11.2026").is_err());
}

/// One step of the property test.
#[derive(Debug, Clone)]
enum Op {
    /// A correction (negative = charge) posted by billing under a reference.
    Post { amount: i64, reference: u8 },
    /// Open a card order.
    Order { amount: i64 },
    /// The bank's paid callback for order `n % orders`, delivered `times` times.
    Paid { n: usize, times: u8, reference: u8 },
    /// The bank's decline for order `n`.
    Declined { n: usize },
    /// A forged amount for order `n`.
    WrongAmount { n: usize },
    /// Expire everything due.
    Expire,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (-50_000i64..50_000, 0u8..6).prop_map(|(amount, reference)| Op::Post { amount, reference }),
        (1i64..100_000).prop_map(|amount| Op::Order { amount }),
        (0usize..8, 1u8..4, 0u8..6).prop_map(|(n, times, reference)| Op::Paid {
            n,
            times,
            reference
        }),
        (0usize..8).prop_map(|n| Op::Declined { n }),
        (0usize..8).prop_map(|n| Op::WrongAmount { n }),
        Just(Op::Expire),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any interleaving of charges, payments, replayed, declined and forged callbacks: the
    /// balance equals the sum of the ledger, and equals a plain model where each order and
    /// each reference credits at most once.
    #[test]
    fn balance_always_equals_the_ledger_sum_and_the_model(ops in prop::collection::vec(op(), 1..40)) {
        let (_db, b) = db();
        let mut orders: Vec<PaymentOrder> = Vec::new();
        let mut model: i64 = 0;
        let mut posted = std::collections::HashMap::<u8, i64>::new();
        let mut paid_orders = std::collections::HashSet::<String>::new();
        let mut used_refs = std::collections::HashSet::<u8>::new();
        let mut closed = std::collections::HashSet::<String>::new();
        let mut clock = 1_000i64;
        for op in ops {
            clock += 100;
            match op {
                Op::Post { amount, reference } => {
                    match b.post_payment(1, amount, PaymentSource::Correction, &format!("C{reference}"), "x", clock) {
                        Ok((_, true)) => { model += amount; posted.insert(reference, amount); }
                        Ok((_, false)) => prop_assert_eq!(posted.get(&reference), Some(&amount)),
                        Err(ControlError::Duplicate { .. }) => prop_assert!(posted.contains_key(&reference)),
                        Err(e) => return Err(TestCaseError::fail(e.to_string())),
                    }
                }
                Op::Order { amount } => {
                    let o = b.reserve_order("sandbox", 1, 1, amount, 1_000, clock).expect("reserve");
                    orders.push(b.attach_checkout(&o.order_id, "u".into(), None, None).expect("attach"));
                }
                Op::Paid { n, times, reference } if !orders.is_empty() => {
                    let o = orders[n % orders.len()].clone();
                    let v = paid(&o, &format!("R{reference}"));
                    for _ in 0..times {
                        let r = b.apply_gateway_result("sandbox", &v, "{}", Some(&receipt()), clock).expect("apply");
                        if let CreditOutcome::Credited { .. } = r {
                            prop_assert!(!paid_orders.contains(&o.order_id));
                            prop_assert!(!used_refs.contains(&reference));
                            prop_assert!(!closed.contains(&o.order_id));
                            paid_orders.insert(o.order_id.clone());
                            used_refs.insert(reference);
                            model += o.amount_tiyn;
                        }
                    }
                }
                Op::Declined { n } if !orders.is_empty() => {
                    let o = &orders[n % orders.len()];
                    let mut v = paid(o, "D");
                    v.outcome = Outcome::Declined("no".into());
                    b.apply_gateway_result("sandbox", &v, "{}", Some(&receipt()), clock).expect("decline");
                }
                Op::WrongAmount { n } if !orders.is_empty() => {
                    let o = &orders[n % orders.len()];
                    let mut v = paid(o, "W");
                    v.amount_tiyn += 1;
                    let r = b.apply_gateway_result("sandbox", &v, "{}", Some(&receipt()), clock).expect("forged");
                    let credited = matches!(r, CreditOutcome::Credited { .. });
                    prop_assert!(!credited, "a forged amount credited");
                }
                Op::Expire => {
                    b.expire_orders(clock).expect("expire");
                    for o in &orders {
                        if b.order(&o.order_id).expect("r").expect("o").status == OrderStatus::Expired {
                            closed.insert(o.order_id.clone());
                        }
                    }
                }
                _ => {}
            }
            prop_assert_eq!(b.balance(1).expect("bal"), b.ledger_sum(1).expect("sum"));
            prop_assert_eq!(b.balance(1).expect("bal"), model);
        }
    }
}

/// One step of the store-level property test: C's charges and the gateway's callbacks on one
/// database.
#[derive(Debug, Clone)]
enum StoreOp {
    /// An operator charge (`Store::post_charge`), maybe retried under its reference.
    Charge { amount: i64, reference: Option<u8> },
    /// A new card order paid by a callback delivered `times` times.
    Pay { amount: i64, times: u8 },
    /// A replay of the callback of an earlier order `n`.
    Replay { n: usize },
}

fn store_op() -> impl Strategy<Value = StoreOp> {
    prop_oneof![
        (1i64..1_000_000, prop::option::of(0u8..4))
            .prop_map(|(amount, reference)| StoreOp::Charge { amount, reference }),
        (1i64..1_000_000, 1u8..4).prop_map(|(amount, times)| StoreOp::Pay { amount, times }),
        (0usize..16).prop_map(|n| StoreOp::Replay { n }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// With the real store: any interleaving of charges (including retried ones), payments and
    /// replayed callbacks keeps the balance equal to the sum of the ledger and to the model.
    #[test]
    fn store_balance_equals_the_ledger_under_charges_payments_and_replays(
        ops in prop::collection::vec(store_op(), 1..30)
    ) {
        let store = crate::store::Store::temporary().expect("store");
        let b = store.billing();
        let mut model = 0i64;
        let mut charged = std::collections::HashMap::<u8, i64>::new();
        let mut paid: Vec<Verified> = Vec::new();
        for (i, op) in ops.into_iter().enumerate() {
            let now = 1_000 + i64::try_from(i).unwrap_or(0);
            match op {
                StoreOp::Charge { amount, reference } => {
                    let r = reference.map(|r| format!("C{r}"));
                    match store.post_charge(1, amount, "x".to_owned(), None, r.as_deref(), now) {
                        Ok((_, _, true)) => {
                            model -= amount;
                            if let Some(r) = reference { charged.insert(r, amount); }
                        }
                        Ok((_, _, false)) => prop_assert!(reference.is_some_and(|r| charged.contains_key(&r))),
                        Err(_) => prop_assert!(reference.is_some_and(|r| charged.contains_key(&r))),
                    }
                }
                StoreOp::Pay { amount, times } => {
                    let o = b.reserve_order("sandbox", 1, 1, amount, 3_600, now).expect("reserve");
                    let v = paid_for(&o, &format!("R{i}"));
                    for _ in 0..times {
                        if let CreditOutcome::Credited { .. } = b.apply_gateway_result("sandbox", &v, "{}", None, now).expect("apply") {
                            model += amount;
                        }
                    }
                    paid.push(v);
                }
                StoreOp::Replay { n } if !paid.is_empty() => {
                    let v = &paid[n % paid.len()];
                    let r = b.apply_gateway_result("sandbox", v, "{}", None, now).expect("replay");
                    prop_assert_eq!(r, CreditOutcome::AlreadyCredited);
                }
                StoreOp::Replay { .. } => {}
            }
            let ledger: i64 = store.ledger(1).expect("ledger").iter().map(|e| e.amount_tiyn).sum();
            prop_assert_eq!(store.balance(1).expect("balance"), ledger);
            prop_assert_eq!(ledger, model);
        }
    }
}

fn paid_for(order: &PaymentOrder, reference: &str) -> Verified {
    paid(order, reference)
}
