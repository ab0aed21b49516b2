//! Ledger reconciliation (RELIABILITY W9: "balance is a projection, reconciled"): every
//! account's cached balance against the sum of its ledger, and every payment and paid order
//! against the one ledger row it must have. It **reports and never repairs**: a difference
//! means a bug or a damaged store, and only the operator can say what the books should hold.
//!
//! sled has no snapshots, so a scan may race a crediting transaction. The trees are scanned
//! once each (ledger, balances, orders, payments: the cost is one decode per record) in an
//! order those transactions keep consistent: a ledger row or a paid order seen before the
//! payments are scanned has its payment by then (one transaction wrote them). What a later
//! scan finds that an earlier one lacks (a payment credited meanwhile) is read again before it
//! is reported, and a balance that differs from its ledger is read until it holds still.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde::Serialize;

use super::{Billing, OrderStatus, Payment, PaymentOrder, PaymentSource};
use crate::error::ControlError;
use crate::store::{be, dec, id_of, pair, Account, Id, LedgerEntry, LedgerKind};

/// How often a differing balance is read again before it is reported.
const CONFIRM_READS: usize = 20;

/// An account whose cached balance is not the sum of its ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceMismatch {
    /// The account.
    pub account_id: Id,
    /// Its number, when the account record exists.
    pub account_number: Option<String>,
    /// The cached balance (`balances` tree), tiyn.
    pub balance_tiyn: i64,
    /// The sum of its ledger entries, tiyn.
    pub ledger_sum_tiyn: i64,
}

/// What is wrong with an orphaned record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrphanKind {
    /// A payment whose ledger entry is missing, or has another account, amount or kind.
    PaymentWithoutLedger,
    /// A ledger entry of kind payment that no payment points at (money without a payment).
    LedgerWithoutPayment,
    /// Two payments pointing at one ledger entry.
    SharedLedgerEntry,
    /// A second payment for the same gateway order (a double credit).
    DuplicatePayment,
    /// An order marked paid whose payment is missing.
    PaidOrderWithoutPayment,
    /// A card payment whose order is missing, not marked paid, or names another payment.
    PaymentWithoutPaidOrder,
    /// Ledger entries or a cached balance of an account that does not exist.
    UnknownAccount,
}

/// A record that breaks the one-payment-one-ledger-row rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    /// What is wrong.
    pub kind: OrphanKind,
    /// The account the record belongs to.
    pub account_id: Id,
    /// Its number, when the account record exists.
    pub account_number: Option<String>,
    /// The record, e.g. `payment 17`, `ledger 18`, `order 000000000123`.
    pub record: String,
    /// Why, in a few words.
    pub detail: String,
}

/// The result of one reconciliation run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerReconciliation {
    /// Accounts whose balance was compared with their ledger.
    pub checked_accounts: usize,
    /// Balances that differ from their ledger.
    pub mismatches: Vec<BalanceMismatch>,
    /// Payments, orders and ledger rows without their counterpart.
    pub orphans: Vec<Orphan>,
    /// Unix seconds.
    pub checked_at: i64,
}

impl LedgerReconciliation {
    /// Mismatches plus orphans: zero when the books agree.
    pub fn problems(&self) -> usize {
        self.mismatches.len() + self.orphans.len()
    }

    /// Logs one `error!` line per problem (account number and both figures) and a summary.
    pub fn log(&self) {
        for m in &self.mismatches {
            tracing::error!(
                account = %m.account(),
                balance_tiyn = m.balance_tiyn,
                ledger_sum_tiyn = m.ledger_sum_tiyn,
                "ledger reconciliation: the cached balance differs from the sum of the ledger (not repaired)"
            );
        }
        for o in &self.orphans {
            tracing::error!(
                account = %o.account(),
                kind = ?o.kind,
                record = %o.record,
                detail = %o.detail,
                "ledger reconciliation: orphaned record (not repaired)"
            );
        }
        tracing::info!(
            checked_accounts = self.checked_accounts,
            mismatches = self.mismatches.len(),
            orphans = self.orphans.len(),
            "ledger reconciled"
        );
    }
}

/// The account number, or `id N` for an account without a record.
fn shown(account_id: Id, number: Option<&str>) -> String {
    number.map_or_else(|| format!("id {account_id}"), str::to_owned)
}

impl BalanceMismatch {
    /// The account as an operator names it: its number, or `id N` without an account record.
    pub fn account(&self) -> String {
        shown(self.account_id, self.account_number.as_deref())
    }
}

impl Orphan {
    /// The account as an operator names it: its number, or `id N` without an account record.
    pub fn account(&self) -> String {
        shown(self.account_id, self.account_number.as_deref())
    }
}

/// A payment ledger row seen in the ledger scan.
struct PaymentRow {
    amount_tiyn: i64,
}

impl Billing {
    /// Compares every account's cached balance with the sum of its ledger and checks that
    /// every payment and every paid order has exactly one ledger row (see the module docs).
    /// Reads only; `now` is the report's time.
    pub fn reconcile_ledger(&self, now: i64) -> Result<LedgerReconciliation, ControlError> {
        let accounts = self.db.open_tree("accounts")?;
        let mut numbers: BTreeMap<Id, String> = BTreeMap::new();
        for item in accounts.iter() {
            let a: Account = dec("accounts", &item?.1)?;
            numbers.insert(a.id, a.account_number);
        }

        // The ledger first: sums, and the payment rows that must each have a payment.
        let mut sums: BTreeMap<Id, i64> = BTreeMap::new();
        let mut payment_rows: BTreeMap<(Id, Id), PaymentRow> = BTreeMap::new();
        for item in self.ledger.iter() {
            let e: LedgerEntry = dec("ledger", &item?.1)?;
            let sum = sums.entry(e.account_id).or_insert(0);
            *sum = sum.saturating_add(e.amount_tiyn);
            if e.kind == LedgerKind::Payment {
                payment_rows.insert(
                    (e.account_id, e.id),
                    PaymentRow {
                        amount_tiyn: e.amount_tiyn,
                    },
                );
            }
        }
        let mut balances: BTreeMap<Id, i64> = BTreeMap::new();
        for item in self.balances.iter() {
            let (key, value) = item?;
            if let Some(id) = id_of(&key) {
                balances.insert(id, dec("balances", &value)?);
            }
        }

        let mut orphans = Vec::new();
        let mut known: BTreeSet<Id> = numbers.keys().copied().collect();
        for &id in sums.keys().chain(balances.keys()) {
            if known.contains(&id) {
                continue;
            }
            // Created after the accounts scan?
            match accounts.get(be(id))? {
                Some(v) => {
                    let a: Account = dec("accounts", &v)?;
                    numbers.insert(a.id, a.account_number);
                }
                None => orphans.push(Orphan {
                    kind: OrphanKind::UnknownAccount,
                    account_id: id,
                    account_number: None,
                    record: format!("account id {id}"),
                    detail: "ledger entries or a balance without an account record".to_owned(),
                }),
            }
            known.insert(id);
        }

        let mut mismatches = Vec::new();
        for &id in &known {
            let balance = balances.get(&id).copied().unwrap_or(0);
            let sum = sums.get(&id).copied().unwrap_or(0);
            if balance == sum {
                continue;
            }
            if let Some((balance_tiyn, ledger_sum_tiyn)) = self.confirm_mismatch(id)? {
                mismatches.push(BalanceMismatch {
                    account_id: id,
                    account_number: numbers.get(&id).cloned(),
                    balance_tiyn,
                    ledger_sum_tiyn,
                });
            }
        }

        // Orders before payments: a paid order seen here has its payment by the payments scan.
        let mut orders: HashMap<String, (OrderStatus, Option<Id>)> = HashMap::new();
        let mut paid_orders = Vec::new();
        for item in self.orders.iter() {
            let o: PaymentOrder = dec("orders", &item?.1)?;
            if o.status == OrderStatus::Paid {
                paid_orders.push((o.order_id.clone(), o.account_id, o.payment_id));
            }
            orders.insert(o.order_id, (o.status, o.payment_id));
        }

        // Payments: each has its own ledger row, one order, and that order says paid by it.
        // What the earlier scans lack (written since) is read again before it is reported.
        let mut row_owner: HashMap<(Id, Id), Id> = HashMap::new();
        let mut by_order: HashMap<(String, String), Id> = HashMap::new();
        let mut seen: BTreeSet<(Id, Id)> = BTreeSet::new();
        let number = |id: Id| numbers.get(&id).cloned();
        for item in self.payments.iter() {
            let p: Payment = dec("payments", &item?.1)?;
            seen.insert((p.account_id, p.id));
            let record = format!("payment {}", p.id);
            let orphan = |kind: OrphanKind, detail: String| Orphan {
                kind,
                account_id: p.account_id,
                account_number: number(p.account_id),
                record: record.clone(),
                detail,
            };
            let row = match payment_rows.get(&(p.account_id, p.ledger_id)) {
                Some(row) => Some((LedgerKind::Payment, row.amount_tiyn)),
                None => self
                    .ledger
                    .get(pair(p.account_id, p.ledger_id))?
                    .map(|v| dec::<LedgerEntry>("ledger", &v))
                    .transpose()?
                    .map(|e| (e.kind, e.amount_tiyn)),
            };
            match row {
                None => orphans.push(orphan(
                    OrphanKind::PaymentWithoutLedger,
                    format!("ledger entry {} is missing", p.ledger_id),
                )),
                Some((kind, amount)) if kind != LedgerKind::Payment || amount != p.amount_tiyn => {
                    orphans.push(orphan(
                        OrphanKind::PaymentWithoutLedger,
                        format!(
                            "ledger entry {} holds {amount} tiyn ({kind:?}), the payment {}",
                            p.ledger_id, p.amount_tiyn
                        ),
                    ));
                }
                Some(_) => {}
            }
            if let Some(first) = row_owner.insert((p.account_id, p.ledger_id), p.id) {
                orphans.push(orphan(
                    OrphanKind::SharedLedgerEntry,
                    format!(
                        "ledger entry {} also belongs to payment {first}",
                        p.ledger_id
                    ),
                ));
            }
            if p.source != PaymentSource::Card {
                continue;
            }
            let (Some(gateway), Some(order_id)) = (p.gateway.clone(), p.order_id.clone()) else {
                orphans.push(orphan(
                    OrphanKind::PaymentWithoutPaidOrder,
                    "a card payment without its gateway order".to_owned(),
                ));
                continue;
            };
            let paid_by_it =
                |o: &(OrderStatus, Option<Id>)| o.0 == OrderStatus::Paid && o.1 == Some(p.id);
            if !orders.get(&order_id).is_some_and(paid_by_it) {
                match self.order(&order_id)? {
                    Some(o) if paid_by_it(&(o.status, o.payment_id)) => {}
                    Some(o) => orphans.push(orphan(
                        OrphanKind::PaymentWithoutPaidOrder,
                        format!(
                            "order {order_id} is {} with payment {:?}",
                            o.status.as_str(),
                            o.payment_id
                        ),
                    )),
                    None => orphans.push(orphan(
                        OrphanKind::PaymentWithoutPaidOrder,
                        format!("order {order_id} is missing"),
                    )),
                }
            }
            if let Some(first) = by_order.insert((gateway, order_id.clone()), p.id) {
                orphans.push(orphan(
                    OrphanKind::DuplicatePayment,
                    format!("order {order_id} was already credited by payment {first}"),
                ));
            }
        }
        for ((account_id, ledger_id), row) in &payment_rows {
            if !row_owner.contains_key(&(*account_id, *ledger_id)) {
                orphans.push(Orphan {
                    kind: OrphanKind::LedgerWithoutPayment,
                    account_id: *account_id,
                    account_number: number(*account_id),
                    record: format!("ledger {ledger_id}"),
                    detail: format!("{} tiyn credited without a payment", row.amount_tiyn),
                });
            }
        }
        for (order_id, account_id, payment_id) in paid_orders {
            if !payment_id.is_some_and(|pid| seen.contains(&(account_id, pid))) {
                orphans.push(Orphan {
                    kind: OrphanKind::PaidOrderWithoutPayment,
                    account_id,
                    account_number: number(account_id),
                    record: format!("order {order_id}"),
                    detail: format!("payment {payment_id:?} is missing"),
                });
            }
        }

        Ok(LedgerReconciliation {
            checked_accounts: known.len(),
            mismatches,
            orphans,
            checked_at: now,
        })
    }

    /// Re-reads one account's balance around a fresh ledger sum until the balance holds still
    /// (no transaction moved it meanwhile); `Some((balance, sum))` when they still differ.
    fn confirm_mismatch(&self, account_id: Id) -> Result<Option<(i64, i64)>, ControlError> {
        let mut last = None;
        for _ in 0..CONFIRM_READS {
            let before = self.balance(account_id)?;
            let sum = self.ledger_sum(account_id)?;
            if self.balance(account_id)? == before {
                if before == sum {
                    return Ok(None);
                }
                if last == Some((before, sum)) {
                    // The same difference twice while the balance stood still.
                    return Ok(last);
                }
                last = Some((before, sum));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payments::{Outcome, Verified, CURRENCY};
    use crate::store::{enc, NewAccount, Store};

    fn account(store: &Store, number: &str) -> Id {
        store
            .create_account(
                NewAccount {
                    account_number: number.to_owned(),
                    contract_number: format!("{number}/1"),
                    contract_key: format!("{number}/1"),
                    iin_bin: "871008401427".to_owned(),
                    name: "Клиент".to_owned(),
                    company: None,
                },
                1_000,
            )
            .expect("account")
            .id
    }

    /// Two accounts with card and cash payments and a charge: books that agree.
    fn books() -> (Store, Id, Id) {
        let store = Store::temporary().expect("store");
        let a = account(&store, "1001");
        let b = account(&store, "1002");
        let billing = store.billing();
        let o = billing
            .reserve_order("sandbox", a, 7, 150_000, 3_600, 1_000)
            .expect("order");
        let paid = Verified {
            order_id: o.order_id.clone(),
            outcome: Outcome::Paid,
            amount_tiyn: o.amount_tiyn,
            currency: CURRENCY.to_owned(),
            reference: "R1".to_owned(),
            card_mask: None,
            approval_code: None,
        };
        billing
            .apply_gateway_result("sandbox", &paid, "{}", None, 2_000)
            .expect("credit");
        billing
            .post_payment(b, 20_000, PaymentSource::Cash, "C1", "касса", 2_000)
            .expect("cash");
        store
            .post_charge(a, 40_000, "ноябрь".to_owned(), None, None, 2_000)
            .expect("charge");
        (store, a, b)
    }

    #[test]
    fn agreeing_books_report_nothing() {
        let (store, _, _) = books();
        let r = store.billing().reconcile_ledger(3_000).expect("reconcile");
        assert_eq!(r.checked_accounts, 2);
        assert!(r.mismatches.is_empty(), "{:?}", r.mismatches);
        assert!(r.orphans.is_empty(), "{:?}", r.orphans);
        assert_eq!(r.checked_at, 3_000);
    }

    #[test]
    fn a_forged_balance_is_reported_with_both_figures_and_left_unchanged() {
        let (store, a, _) = books();
        let billing = store.billing();
        billing
            .balances
            .insert(be(a), enc(&999_999i64).expect("enc"))
            .expect("forge");
        let before = store.checksum().expect("checksum");
        let r = billing.reconcile_ledger(3_000).expect("reconcile");
        assert_eq!(
            r.mismatches,
            [BalanceMismatch {
                account_id: a,
                account_number: Some("1001".to_owned()),
                balance_tiyn: 999_999,
                ledger_sum_tiyn: 110_000,
            }]
        );
        assert!(
            r.orphans.is_empty(),
            "the payments keep their rows: {:?}",
            r.orphans
        );
        assert_eq!(r.problems(), 1);
        assert_eq!(
            billing.balance(a).expect("balance"),
            999_999,
            "not repaired"
        );
        assert_eq!(
            store.checksum().expect("checksum"),
            before,
            "nothing written"
        );
    }

    #[test]
    fn a_payment_without_its_ledger_row_and_a_row_without_a_payment_are_orphans() {
        let (store, a, b) = books();
        let billing = store.billing();
        let card = &billing.all_payments(a).expect("payments")[0];
        billing
            .ledger
            .remove(pair(a, card.ledger_id))
            .expect("drop the row");
        let stray = LedgerEntry {
            id: 9_999,
            account_id: b,
            amount_tiyn: 5_000,
            kind: LedgerKind::Payment,
            description: "из ниоткуда".to_owned(),
            service_id: None,
            at: 2_500,
        };
        billing
            .ledger
            .insert(pair(b, stray.id), enc(&stray).expect("enc"))
            .expect("stray row");
        let r = billing.reconcile_ledger(3_000).expect("reconcile");
        let kinds: Vec<(OrphanKind, Option<&str>)> = r
            .orphans
            .iter()
            .map(|o| (o.kind, o.account_number.as_deref()))
            .collect();
        assert_eq!(
            kinds,
            [
                (OrphanKind::PaymentWithoutLedger, Some("1001")),
                (OrphanKind::LedgerWithoutPayment, Some("1002")),
            ]
        );
        // And the balances no longer match their (damaged) ledgers either.
        let figures: Vec<(i64, i64)> = r
            .mismatches
            .iter()
            .map(|m| (m.balance_tiyn, m.ledger_sum_tiyn))
            .collect();
        assert_eq!(figures, [(110_000, -40_000), (20_000, 25_000)]);
    }

    #[test]
    fn a_paid_order_whose_payment_vanished_is_an_orphan() {
        let (store, a, _) = books();
        let billing = store.billing();
        let card = billing.all_payments(a).expect("payments")[0].clone();
        billing
            .payments
            .remove(pair(a, card.id))
            .expect("drop the payment");
        let r = billing.reconcile_ledger(3_000).expect("reconcile");
        let kinds: Vec<OrphanKind> = r.orphans.iter().map(|o| o.kind).collect();
        assert_eq!(
            kinds,
            [
                OrphanKind::LedgerWithoutPayment,
                OrphanKind::PaidOrderWithoutPayment
            ]
        );
        assert!(
            r.mismatches.is_empty(),
            "the money itself adds up: {:?}",
            r.mismatches
        );
    }
}
