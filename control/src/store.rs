//! The store: the only module that touches sled.
//!
//! One tree per entity, big-endian `u64` keys (so scans run in id order), and every value is a
//! schema-version byte followed by JSON. Changes that belong together are one multi-tree
//! transaction: registration claims the account, creates the owner and queues the welcome email
//! at once; a charge writes the ledger entry and the cached balance at once.
//!
//! Unique indexes are trees of their own: account number → account, contract key → account,
//! sub-user email → user. The methods are use cases (`register`, `post_charge`,
//! `delete_user`), not a key-value pass-through, so that a replicated database can later stand
//! behind the same interface.
//!
//! Outbox bodies written here (passwords, one-time links) are sealed before they reach sled
//! ([`crate::seal`]); sessions and one-time tokens are keyed by their SHA-256 only.
//!
//! Writes that must first scan (network overlap, re-parenting children) take `scan_lock`, a
//! std mutex held only for synchronous sled calls, so two of them cannot interleave.

use std::path::Path;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use crate::error::ControlError;

/// Record ids (accounts, users, services, ledger entries, outbox emails).
pub type Id = u64;

const VERSION: u8 = 1;

/// The outbox key's file in the store directory ([`crate::seal`]): not part of sled's files.
pub const OUTBOX_KEY: &str = "outbox.key";

/// Account status as billing reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    /// Served.
    Active,
    /// Temporarily not served (debt).
    Suspended,
    /// Contract ended.
    Closed,
}

/// A provisioned customer account (лицевой счёт) with its contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Internal id.
    pub id: Id,
    /// The account number: the owner's login, unique.
    pub account_number: String,
    /// The contract number as billing has it.
    pub contract_number: String,
    /// The matching key of the contract number (unique).
    pub contract_key: String,
    /// The holder's IIN or BIN, 12 digits.
    pub iin_bin: String,
    /// The holder's name (ФИО or the organisation's name).
    pub name: String,
    /// The company, when there is one.
    pub company: Option<String>,
    /// Billing status.
    pub status: AccountStatus,
    /// The owner user, once the cabinet is claimed by registration.
    pub owner_user_id: Option<Id>,
    /// When the cabinet was claimed (unix seconds).
    pub registered_at: Option<i64>,
    /// When the operator provisioned it (unix seconds).
    pub created_at: i64,
}

/// What the operator provides to create an account (already validated).
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// Account number (digits).
    pub account_number: String,
    /// Contract number as billing has it.
    pub contract_number: String,
    /// Its matching key.
    pub contract_key: String,
    /// IIN/BIN.
    pub iin_bin: String,
    /// Holder name.
    pub name: String,
    /// Company.
    pub company: Option<String>,
}

/// A network mapped to an account: DNS queries from it are the account's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Internal id.
    pub id: Id,
    /// The account.
    pub account_id: Id,
    /// The network, host bits cleared.
    pub cidr: IpNet,
    /// Unix seconds.
    pub created_at: i64,
}

/// Service status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStatus {
    /// In service.
    Active,
    /// The customer asked for a disconnection.
    DisconnectRequested,
    /// Ended.
    Disconnected,
}

/// A service on an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Internal id.
    pub id: Id,
    /// The account.
    pub account_id: Id,
    /// Kind, e.g. `internet`, `dns_filter`.
    pub kind: String,
    /// Tariff name as shown to the customer.
    pub name: String,
    /// Monthly fee in tiyn.
    pub monthly_fee_tiyn: i64,
    /// Status.
    pub status: ServiceStatus,
    /// Unix seconds.
    pub created_at: i64,
}

/// What a ledger entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    /// A charge posted by billing (negative amount).
    Charge,
    /// A payment (positive amount).
    Payment,
}

/// One row of an account's append-only ledger; the balance is their sum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Internal id.
    pub id: Id,
    /// The account.
    pub account_id: Id,
    /// Signed amount in tiyn: charges are negative.
    pub amount_tiyn: i64,
    /// Kind.
    pub kind: LedgerKind,
    /// Text from billing.
    pub description: String,
    /// The service charged, if any.
    pub service_id: Option<Id>,
    /// Unix seconds.
    pub at: i64,
}

/// A cabinet user: the account's owner (no parent) or a sub-user below some user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Internal id.
    pub id: Id,
    /// The account.
    pub account_id: Id,
    /// The user that created this one; `None` for the owner.
    pub parent_id: Option<Id>,
    /// Email (lower case). Unique among sub-users, who log in with it; the owner logs in with
    /// the account number and may share an email with other accounts' owners.
    pub email: String,
    /// ФИО as given at registration (owner).
    pub full_name: Option<String>,
    /// Sub-user first name.
    pub first_name: Option<String>,
    /// Sub-user last name.
    pub last_name: Option<String>,
    /// Sub-user position.
    pub position: Option<String>,
    /// E.164 phone (owner).
    pub phone: Option<String>,
    /// Company typed in the registration form (owner); billing's name stays on the account.
    #[serde(default)]
    pub company: Option<String>,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// May create, change and delete users below it.
    pub can_manage_users: bool,
    /// Sub-users must confirm their email before they can log in; the owner is confirmed.
    pub email_confirmed: bool,
    /// Bumped on every password change/reset: sessions of an older epoch are void.
    pub session_epoch: u64,
    /// Unix seconds.
    pub created_at: i64,
}

impl User {
    /// True for the account's owner.
    pub fn is_owner(&self) -> bool {
        self.parent_id.is_none()
    }
}

/// A login session, stored under the SHA-256 of its token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Whose.
    pub user_id: Id,
    /// The user's `session_epoch` at login; a later password change voids the session.
    pub epoch: u64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// Long-lived ("remember me"): exempt from the idle limit, only `expires_at` ends it.
    pub remember: bool,
    /// Unix seconds of the last request made with it (for the idle limit); 0 in records
    /// written before it existed, which then count from `created_at`.
    #[serde(default)]
    pub last_seen: i64,
}

impl Session {
    /// When the session was last used: `last_seen`, or `created_at` for an old record.
    pub fn last_active(&self) -> i64 {
        self.last_seen.max(self.created_at)
    }
}

/// What a one-time token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// Password reset link.
    Reset,
    /// Sub-user email confirmation link.
    Confirm,
}

/// A single-use token, stored under the SHA-256 of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OneTimeToken {
    /// Purpose.
    pub kind: TokenKind,
    /// Whose.
    pub user_id: Id,
    /// Unix seconds.
    pub expires_at: i64,
    /// Set when used; a used token never works again.
    pub used_at: Option<i64>,
}

/// Delivery state of an outbox email.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailStatus {
    /// Waiting for (another) attempt.
    Pending,
    /// Delivered to the SMTP server or written to the mail folder.
    Sent,
    /// Gave up after `mail.max_attempts`.
    Failed,
}

/// An email waiting in (or delivered from) the persisted outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEmail {
    /// Internal id (also the `.eml` file name).
    pub id: Id,
    /// Recipient address.
    pub to: String,
    /// Subject.
    pub subject: String,
    /// Plain-text body (UTF-8).
    pub body: String,
    /// Delivery state.
    pub status: MailStatus,
    /// Attempts made.
    pub attempts: u32,
    /// Next attempt, unix milliseconds.
    pub next_attempt_ms: i64,
    /// The last delivery error.
    pub last_error: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub sent_at: Option<i64>,
}

/// An email to queue: recipient, subject, body.
#[derive(Debug, Clone)]
pub struct NewEmail {
    /// Recipient.
    pub to: String,
    /// Subject.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

/// Failed-login state of one key (a login name or a source address).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throttle {
    /// Consecutive failures in the current run.
    pub failures: u32,
    /// Unix seconds of the last failure.
    pub last_failure: i64,
    /// Refuse attempts until then (unix seconds).
    pub locked_until: i64,
}

/// Fields of a sub-user to create.
#[derive(Debug, Clone)]
pub struct NewSubUser {
    /// Lower-case, validated email.
    pub email: String,
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// Position.
    pub position: Option<String>,
    /// Argon2id hash.
    pub password_hash: String,
    /// May manage users below it.
    pub can_manage_users: bool,
}

/// The owner created by registration.
#[derive(Debug, Clone)]
pub struct NewOwner {
    /// Email given in the form.
    pub email: String,
    /// ФИО.
    pub full_name: Option<String>,
    /// E.164 mobile phone.
    pub phone: String,
    /// Company typed in the form (kept on the user; the account keeps billing's).
    pub company: Option<String>,
    /// Argon2id hash of the generated password.
    pub password_hash: String,
}

/// The typed store over one sled database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    accounts: sled::Tree,
    idx_account_number: sled::Tree,
    idx_contract_key: sled::Tree,
    networks: sled::Tree,
    services: sled::Tree,
    ledger: sled::Tree,
    balances: sled::Tree,
    ledger_refs: sled::Tree,
    users: sled::Tree,
    idx_email: sled::Tree,
    account_users: sled::Tree,
    sessions: sled::Tree,
    tokens: sled::Tree,
    outbox: sled::Tree,
    throttle: sled::Tree,
    scan_lock: Arc<Mutex<()>>,
    /// Seals outbox bodies (passwords, one-time links) before they reach sled.
    seal: crate::seal::SealKey,
    billing: crate::billing::Billing,
    filters: crate::filter::Filters,
}

pub(crate) type TxResult<T> = Result<T, ConflictableTransactionError<ControlError>>;

pub(crate) fn be(id: Id) -> [u8; 8] {
    id.to_be_bytes()
}

pub(crate) fn pair(a: Id, b: Id) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&a.to_be_bytes());
    k[8..].copy_from_slice(&b.to_be_bytes());
    k
}

pub(crate) fn id_of(bytes: &[u8]) -> Option<Id> {
    bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
}

pub(crate) fn enc<T: Serialize>(value: &T) -> Result<Vec<u8>, ControlError> {
    let mut out = vec![VERSION];
    serde_json::to_writer(&mut out, value).map_err(ControlError::Encode)?;
    Ok(out)
}

pub(crate) fn dec<T: DeserializeOwned>(
    tree: &'static str,
    bytes: &[u8],
) -> Result<T, ControlError> {
    match bytes.split_first() {
        Some((&VERSION, rest)) => {
            serde_json::from_slice(rest).map_err(|source| ControlError::Corrupt { tree, source })
        }
        Some((&version, _)) => Err(ControlError::UnknownVersion { tree, version }),
        None => Err(ControlError::UnknownVersion { tree, version: 0 }),
    }
}

pub(crate) fn abort<T>(e: ControlError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

pub(crate) fn tx_enc<T: Serialize>(value: &T) -> TxResult<Vec<u8>> {
    enc(value).map_err(ConflictableTransactionError::Abort)
}

fn tx_dec<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> TxResult<T> {
    dec(tree, bytes).map_err(ConflictableTransactionError::Abort)
}

pub(crate) fn tx_get<T: DeserializeOwned>(
    t: &TransactionalTree,
    tree: &'static str,
    key: &[u8],
) -> TxResult<Option<T>> {
    match t.get(key)? {
        Some(v) => Ok(Some(tx_dec(tree, &v)?)),
        None => Ok(None),
    }
}

pub(crate) fn from_tx<T>(r: Result<T, TransactionError<ControlError>>) -> Result<T, ControlError> {
    r.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => ControlError::Storage(e),
    })
}

impl From<ControlError> for ConflictableTransactionError<ControlError> {
    fn from(e: ControlError) -> Self {
        Self::Abort(e)
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`. sled may briefly refuse a database that was just
    /// closed in the same process (its file lock), so the open is retried for up to a second.
    /// The outbox key ([`OUTBOX_KEY`] in `dir`) is read, or created on the first open; without
    /// it, emails queued before cannot be sent.
    pub fn open(dir: &Path) -> Result<Self, ControlError> {
        let mut last = None;
        for _ in 0..20 {
            match sled::Config::new().path(dir).open() {
                Ok(db) => {
                    let seal = crate::seal::SealKey::load_or_create(&dir.join(OUTBOX_KEY))?;
                    return Self::from_db(db, seal);
                }
                Err(e) => {
                    last = Some(e);
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        }
        Err(ControlError::Storage(
            last.unwrap_or(sled::Error::Unsupported("open".into())),
        ))
    }

    /// A store that lives in a temporary directory and vanishes on drop (tests).
    pub fn temporary() -> Result<Self, ControlError> {
        Self::from_db(
            sled::Config::new().temporary(true).open()?,
            crate::seal::SealKey::ephemeral(),
        )
    }

    fn from_db(db: sled::Db, seal: crate::seal::SealKey) -> Result<Self, ControlError> {
        Ok(Self {
            accounts: db.open_tree("accounts")?,
            idx_account_number: db.open_tree("idx_account_number")?,
            idx_contract_key: db.open_tree("idx_contract_key")?,
            networks: db.open_tree("networks")?,
            services: db.open_tree("services")?,
            ledger: db.open_tree("ledger")?,
            balances: db.open_tree("balances")?,
            ledger_refs: db.open_tree("ledger_refs")?,
            users: db.open_tree("users")?,
            idx_email: db.open_tree("idx_email")?,
            account_users: db.open_tree("account_users")?,
            sessions: db.open_tree("sessions")?,
            tokens: db.open_tree("tokens")?,
            outbox: db.open_tree("outbox")?,
            throttle: db.open_tree("throttle")?,
            scan_lock: Arc::new(Mutex::new(())),
            seal,
            billing: crate::billing::Billing::open(&db)?,
            filters: crate::filter::Filters::open(&db)?,
            db,
        })
    }

    /// The billing part of the store (orders, payments, invoices, requests, usage), over the
    /// same database and sharing the ledger, balances, services and outbox trees.
    pub fn billing(&self) -> &crate::billing::Billing {
        &self.billing
    }

    /// The DNS filter part of the store (settings, own lists, audit log, usage).
    pub fn filters(&self) -> &crate::filter::Filters {
        &self.filters
    }

    /// A fresh id (never 0).
    fn next_id(&self) -> Result<Id, ControlError> {
        Ok(self.db.generate_id()? + 1)
    }

    /// Writes everything to disk; returns when it is durable (as far as sled promises).
    pub fn flush(&self) -> Result<(), ControlError> {
        self.db.flush()?;
        Ok(())
    }

    /// A CRC over every key and value: equal before and after means nothing changed (tests).
    pub fn checksum(&self) -> Result<u32, ControlError> {
        Ok(self.db.checksum()?)
    }

    /// Reads a tree's value by key.
    fn get<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        name: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, ControlError> {
        tree.get(key)?.map(|v| dec(name, &v)).transpose()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // A poisoned lock guards no data (the unit value); carry on.
        self.scan_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    // ---------------------------------------------------------------- accounts

    /// Provisions an account. The same account number again gives
    /// [`ControlError::AccountExists`] with the stored record (billing retries are harmless);
    /// a contract number whose key another account holds gives [`ControlError::ContractTaken`].
    pub fn create_account(&self, new: NewAccount, now: i64) -> Result<Account, ControlError> {
        let id = self.next_id()?;
        let account = Account {
            id,
            account_number: new.account_number,
            contract_number: new.contract_number,
            contract_key: new.contract_key,
            iin_bin: new.iin_bin,
            name: new.name,
            company: new.company,
            status: AccountStatus::Active,
            owner_user_id: None,
            registered_at: None,
            created_at: now,
        };
        let value = enc(&account)?;
        let r = (
            &self.accounts,
            &self.idx_account_number,
            &self.idx_contract_key,
        )
            .transaction(|(accounts, by_number, by_contract)| {
                if let Some(existing) = by_number.get(account.account_number.as_bytes())? {
                    let Some(existing_id) = id_of(&existing) else {
                        return abort(ControlError::NotFound("account"));
                    };
                    let Some(acc) = tx_get::<Account>(accounts, "accounts", &be(existing_id))?
                    else {
                        return abort(ControlError::NotFound("account"));
                    };
                    return abort(ControlError::AccountExists(Box::new(acc)));
                }
                if let Some(other) = by_contract.get(account.contract_key.as_bytes())? {
                    let other_number = id_of(&other)
                        .map(|oid| tx_get::<Account>(accounts, "accounts", &be(oid)))
                        .transpose()?
                        .flatten()
                        .map(|a| a.account_number)
                        .unwrap_or_default();
                    return abort(ControlError::ContractTaken {
                        account_number: other_number,
                    });
                }
                accounts.insert(&be(id), value.clone())?;
                by_number.insert(account.account_number.as_bytes(), &be(id))?;
                by_contract.insert(account.contract_key.as_bytes(), &be(id))?;
                Ok(())
            });
        from_tx(r)?;
        Ok(account)
    }

    /// The account with this number.
    pub fn account_by_number(&self, number: &str) -> Result<Option<Account>, ControlError> {
        match self.idx_account_number.get(number.as_bytes())? {
            Some(id) => match id_of(&id) {
                Some(id) => self.account(id),
                None => Ok(None),
            },
            None => Ok(None),
        }
    }

    /// The account with this id.
    pub fn account(&self, id: Id) -> Result<Option<Account>, ControlError> {
        self.get(&self.accounts, "accounts", &be(id))
    }

    // ---------------------------------------------------------------- networks

    /// Maps a network to an account (host bits are cleared). The same network on the same
    /// account again returns the stored record (`Ok((network, false))`); overlapping any other
    /// network — another account's or a different one of the same account — is refused with
    /// [`ControlError::NetworkOverlap`] naming the holder.
    pub fn add_network(
        &self,
        account_id: Id,
        cidr: IpNet,
        now: i64,
    ) -> Result<(Network, bool), ControlError> {
        let cidr = cidr.trunc();
        let _guard = self.lock();
        for item in self.networks.iter() {
            let (_, v) = item?;
            let n: Network = dec("networks", &v)?;
            if n.cidr == cidr && n.account_id == account_id {
                return Ok((n, false));
            }
            if n.cidr.contains(&cidr) || cidr.contains(&n.cidr) {
                let holder = self
                    .account(n.account_id)?
                    .map(|a| a.account_number)
                    .unwrap_or_default();
                return Err(ControlError::NetworkOverlap {
                    cidr: cidr.to_string(),
                    other_cidr: n.cidr.to_string(),
                    account_number: holder,
                });
            }
        }
        let network = Network {
            id: self.next_id()?,
            account_id,
            cidr,
            created_at: now,
        };
        self.networks.insert(be(network.id), enc(&network)?)?;
        Ok((network, true))
    }

    /// The account's networks.
    pub fn networks(&self, account_id: Id) -> Result<Vec<Network>, ControlError> {
        Ok(self
            .all_networks()?
            .into_iter()
            .filter(|n| n.account_id == account_id)
            .collect())
    }

    /// Every mapped network of every account (input of the resolver's client map).
    pub fn all_networks(&self) -> Result<Vec<Network>, ControlError> {
        self.networks
            .iter()
            .map(|item| dec("networks", &item?.1))
            .collect()
    }

    // ---------------------------------------------------------------- services and ledger

    /// Adds a service to an account.
    pub fn add_service(
        &self,
        account_id: Id,
        kind: String,
        name: String,
        monthly_fee_tiyn: i64,
        now: i64,
    ) -> Result<Service, ControlError> {
        let service = Service {
            id: self.next_id()?,
            account_id,
            kind,
            name,
            monthly_fee_tiyn,
            status: ServiceStatus::Active,
            created_at: now,
        };
        self.services
            .insert(pair(account_id, service.id), enc(&service)?)?;
        Ok(service)
    }

    /// The account's services, oldest first.
    pub fn services(&self, account_id: Id) -> Result<Vec<Service>, ControlError> {
        self.services
            .scan_prefix(be(account_id))
            .map(|item| dec("services", &item?.1))
            .collect()
    }

    /// Posts a charge: appends a negative ledger entry and updates the cached balance in one
    /// transaction. A `service_id` must name one of the account's services. With a billing
    /// `reference`, a retry is harmless: the same reference on the same account returns the
    /// entry already posted (`fresh == false`) and charges nothing.
    pub fn post_charge(
        &self,
        account_id: Id,
        amount_tiyn: i64,
        description: String,
        service_id: Option<Id>,
        reference: Option<&str>,
        now: i64,
    ) -> Result<(LedgerEntry, i64, bool), ControlError> {
        if let Some(sid) = service_id {
            if self.services.get(pair(account_id, sid))?.is_none() {
                return Err(ControlError::NotFound("service"));
            }
        }
        let entry = LedgerEntry {
            id: self.next_id()?,
            account_id,
            amount_tiyn: -amount_tiyn,
            kind: LedgerKind::Charge,
            description,
            service_id,
            at: now,
        };
        let Some(reference) = reference else {
            let balance = self.append_ledger(&entry)?;
            return Ok((entry, balance, true));
        };
        let mut ref_key = be(account_id).to_vec();
        ref_key.extend_from_slice(b"charge:");
        ref_key.extend_from_slice(reference.as_bytes());
        let value = enc(&entry)?;
        let r = (&self.ledger, &self.balances, &self.ledger_refs).transaction(
            |(ledger, balances, refs)| {
                let current = match balances.get(be(account_id))? {
                    Some(v) => tx_dec::<i64>("balances", &v)?,
                    None => 0,
                };
                if let Some(existing) = refs.get(ref_key.as_slice())?.as_deref().and_then(id_of) {
                    let Some(e) =
                        tx_get::<LedgerEntry>(ledger, "ledger", &pair(account_id, existing))?
                    else {
                        return abort(ControlError::NotFound("ledger entry"));
                    };
                    return Ok((e, current, false));
                }
                let Some(next) = current.checked_add(entry.amount_tiyn) else {
                    return abort(ControlError::Conflict);
                };
                ledger.insert(&pair(account_id, entry.id), value.clone())?;
                balances.insert(&be(account_id), tx_enc(&next)?)?;
                refs.insert(ref_key.as_slice(), &be(entry.id))?;
                Ok((entry.clone(), next, true))
            },
        );
        from_tx(r)
    }

    fn append_ledger(&self, entry: &LedgerEntry) -> Result<i64, ControlError> {
        let value = enc(entry)?;
        let r = (&self.ledger, &self.balances).transaction(|(ledger, balances)| {
            let current = match balances.get(be(entry.account_id))? {
                Some(v) => tx_dec::<i64>("balances", &v)?,
                None => 0,
            };
            let Some(next) = current.checked_add(entry.amount_tiyn) else {
                return abort(ControlError::Conflict);
            };
            ledger.insert(&pair(entry.account_id, entry.id), value.clone())?;
            balances.insert(&be(entry.account_id), tx_enc(&next)?)?;
            Ok(next)
        });
        from_tx(r)
    }

    /// The account's balance in tiyn (the cached sum of its ledger).
    pub fn balance(&self, account_id: Id) -> Result<i64, ControlError> {
        Ok(self
            .get(&self.balances, "balances", &be(account_id))?
            .unwrap_or(0))
    }

    /// The account's ledger, oldest first.
    pub fn ledger(&self, account_id: Id) -> Result<Vec<LedgerEntry>, ControlError> {
        self.ledger
            .scan_prefix(be(account_id))
            .map(|item| dec("ledger", &item?.1))
            .collect()
    }

    // ---------------------------------------------------------------- registration and users

    /// Claims a provisioned account for a cabinet: in one transaction, checks that the contract
    /// key and IIN/BIN name the same unclaimed account, creates the owner user and queues the
    /// welcome email. Mismatch → [`ControlError::ContractNotMatched`] (one error for both
    /// "unknown contract" and "wrong IIN/BIN"); already claimed → [`ControlError::AlreadyRegistered`].
    pub fn register(
        &self,
        contract_key: &str,
        iin_bin: &str,
        owner: NewOwner,
        welcome: impl Fn(&Account) -> NewEmail,
        now: i64,
    ) -> Result<(Account, User), ControlError> {
        let user_id = self.next_id()?;
        let mail_id = self.next_id()?;
        let r = (
            &self.accounts,
            &self.idx_contract_key,
            &self.users,
            &self.account_users,
            &self.outbox,
        )
            .transaction(|(accounts, by_contract, users, account_users, outbox)| {
                let Some(id) = by_contract
                    .get(contract_key.as_bytes())?
                    .as_deref()
                    .and_then(id_of)
                else {
                    return abort(ControlError::ContractNotMatched);
                };
                let Some(mut account) = tx_get::<Account>(accounts, "accounts", &be(id))? else {
                    return abort(ControlError::ContractNotMatched);
                };
                if account.iin_bin != iin_bin {
                    return abort(ControlError::ContractNotMatched);
                }
                if account.owner_user_id.is_some() {
                    return abort(ControlError::AlreadyRegistered);
                }
                account.owner_user_id = Some(user_id);
                account.registered_at = Some(now);
                let user = User {
                    id: user_id,
                    account_id: account.id,
                    parent_id: None,
                    email: owner.email.clone(),
                    full_name: owner.full_name.clone(),
                    first_name: None,
                    last_name: None,
                    position: None,
                    phone: Some(owner.phone.clone()),
                    company: owner.company.clone(),
                    password_hash: owner.password_hash.clone(),
                    can_manage_users: true,
                    email_confirmed: true,
                    session_epoch: 0,
                    created_at: now,
                };
                let email = self.sealed(outbox_record(mail_id, welcome(&account), now));
                accounts.insert(&be(account.id), tx_enc(&account)?)?;
                users.insert(&be(user_id), tx_enc(&user)?)?;
                account_users.insert(&pair(account.id, user_id), &[])?;
                outbox.insert(&be(mail_id), tx_enc(&email)?)?;
                Ok((account, user))
            });
        from_tx(r)
    }

    /// The user with this id.
    pub fn user(&self, id: Id) -> Result<Option<User>, ControlError> {
        self.get(&self.users, "users", &be(id))
    }

    /// The sub-user who logs in with this (lower-case) email.
    pub fn user_by_email(&self, email: &str) -> Result<Option<User>, ControlError> {
        match self
            .idx_email
            .get(email.as_bytes())?
            .as_deref()
            .and_then(id_of)
        {
            Some(id) => self.user(id),
            None => Ok(None),
        }
    }

    /// The owner of the account with this number, with the account.
    pub fn owner_by_account_number(
        &self,
        number: &str,
    ) -> Result<Option<(Account, User)>, ControlError> {
        let Some(account) = self.account_by_number(number)? else {
            return Ok(None);
        };
        let Some(owner_id) = account.owner_user_id else {
            return Ok(None);
        };
        Ok(self.user(owner_id)?.map(|u| (account, u)))
    }

    /// Every user of an account, in creation order.
    pub fn account_users(&self, account_id: Id) -> Result<Vec<User>, ControlError> {
        let mut out = Vec::new();
        for item in self.account_users.scan_prefix(be(account_id)) {
            let (k, _) = item?;
            if let Some(uid) = k.get(8..).and_then(id_of) {
                if let Some(u) = self.user(uid)? {
                    out.push(u);
                }
            }
        }
        Ok(out)
    }

    /// Creates a sub-user below `parent`, with its confirmation token and its email(s), in one
    /// transaction. A taken email gives [`ControlError::EmailTaken`].
    pub fn create_sub_user(
        &self,
        parent: &User,
        new: NewSubUser,
        confirm_token_hash: [u8; 32],
        confirm_expires_at: i64,
        email: impl Fn(Id) -> NewEmail,
        now: i64,
    ) -> Result<User, ControlError> {
        let user = User {
            id: self.next_id()?,
            account_id: parent.account_id,
            parent_id: Some(parent.id),
            email: new.email,
            full_name: None,
            first_name: new.first_name,
            last_name: new.last_name,
            position: new.position,
            phone: None,
            company: None,
            password_hash: new.password_hash,
            can_manage_users: new.can_manage_users,
            email_confirmed: false,
            session_epoch: 0,
            created_at: now,
        };
        let mail = self.sealed(outbox_record(self.next_id()?, email(user.id), now));
        let token = OneTimeToken {
            kind: TokenKind::Confirm,
            user_id: user.id,
            expires_at: confirm_expires_at,
            used_at: None,
        };
        let r = (
            &self.users,
            &self.idx_email,
            &self.account_users,
            &self.tokens,
            &self.outbox,
        )
            .transaction(|(users, by_email, account_users, tokens, outbox)| {
                if by_email.get(user.email.as_bytes())?.is_some() {
                    return abort(ControlError::EmailTaken);
                }
                // The parent must still exist (it may have been deleted meanwhile).
                if users.get(be(parent.id))?.is_none() {
                    return abort(ControlError::NotFound("user"));
                }
                users.insert(&be(user.id), tx_enc(&user)?)?;
                by_email.insert(user.email.as_bytes(), &be(user.id))?;
                account_users.insert(&pair(user.account_id, user.id), &[])?;
                tokens.insert(&confirm_token_hash, tx_enc(&token)?)?;
                outbox.insert(&be(mail.id), tx_enc(&mail)?)?;
                Ok(())
            });
        from_tx(r)?;
        Ok(user)
    }

    /// Replaces a user record, optionally queueing an email in the same transaction. Refuses
    /// with [`ControlError::Conflict`] if the stored record is no longer `before` (another
    /// request changed it first).
    pub fn update_user(
        &self,
        before: &User,
        after: &User,
        email: Option<NewEmail>,
        now: i64,
    ) -> Result<(), ControlError> {
        let mail = match email {
            Some(e) => Some(self.sealed(outbox_record(self.next_id()?, e, now))),
            None => None,
        };
        let before_bytes = enc(before)?;
        let r = (&self.users, &self.outbox).transaction(|(users, outbox)| {
            match users.get(be(before.id))? {
                Some(current) if *current == *before_bytes => {}
                Some(_) => return abort(ControlError::Conflict),
                None => return abort(ControlError::NotFound("user")),
            }
            users.insert(&be(after.id), tx_enc(after)?)?;
            if let Some(m) = &mail {
                outbox.insert(&be(m.id), tx_enc(m)?)?;
            }
            Ok(())
        });
        from_tx(r)
    }

    /// Deletes a sub-user: its children are re-parented to its parent, its email index, its
    /// sessions are voided (the user record is gone). The owner cannot be deleted.
    pub fn delete_user(&self, id: Id) -> Result<(), ControlError> {
        let _guard = self.lock();
        let Some(user) = self.user(id)? else {
            return Err(ControlError::NotFound("user"));
        };
        let Some(new_parent) = user.parent_id else {
            return Err(ControlError::NotFound("user"));
        };
        let children: Vec<User> = self
            .account_users(user.account_id)?
            .into_iter()
            .filter(|u| u.parent_id == Some(id))
            .collect();
        let r = (&self.users, &self.idx_email, &self.account_users).transaction(
            |(users, by_email, account_users)| {
                for child in &children {
                    let mut c: User = match tx_get(users, "users", &be(child.id))? {
                        Some(c) => c,
                        None => continue,
                    };
                    c.parent_id = Some(new_parent);
                    users.insert(&be(c.id), tx_enc(&c)?)?;
                }
                users.remove(&be(id))?;
                by_email.remove(user.email.as_bytes())?;
                account_users.remove(&pair(user.account_id, id))?;
                Ok(())
            },
        );
        from_tx(r)
    }

    // ---------------------------------------------------------------- sessions

    /// Stores a session under its token hash.
    pub fn create_session(
        &self,
        token_hash: [u8; 32],
        session: &Session,
    ) -> Result<(), ControlError> {
        self.sessions.insert(token_hash, enc(session)?)?;
        Ok(())
    }

    /// The session stored under this token hash.
    pub fn session(&self, token_hash: &[u8; 32]) -> Result<Option<Session>, ControlError> {
        self.get(&self.sessions, "sessions", token_hash)
    }

    /// Revokes one session.
    pub fn delete_session(&self, token_hash: &[u8; 32]) -> Result<(), ControlError> {
        self.sessions.remove(token_hash)?;
        Ok(())
    }

    /// Records a request made with a session (for the idle limit). Does nothing when the
    /// session is gone meanwhile (a concurrent logout is not undone).
    pub fn touch_session(&self, token_hash: &[u8; 32], now: i64) -> Result<(), ControlError> {
        self.sessions.update_and_fetch(token_hash, |old| {
            let old = old?;
            match dec::<Session>("sessions", old) {
                Ok(mut s) if s.last_seen < now => {
                    s.last_seen = now;
                    enc(&s).ok().or_else(|| Some(old.to_vec()))
                }
                _ => Some(old.to_vec()),
            }
        })?;
        Ok(())
    }

    /// Sets a user's password hash and bumps its session epoch, which voids every session of
    /// the user, the caller's `old` one included (it is also deleted); `fresh` (a new token's
    /// hash and record) is stored at the new epoch, so the caller goes on with a rotated token.
    /// Returns the stored fresh session.
    pub fn change_password(
        &self,
        user_id: Id,
        password_hash: String,
        old: &[u8; 32],
        fresh: ([u8; 32], Session),
    ) -> Result<Session, ControlError> {
        let (fresh_hash, fresh) = fresh;
        let r = (&self.users, &self.sessions).transaction(|(users, sessions)| {
            let Some(mut user) = tx_get::<User>(users, "users", &be(user_id))? else {
                return abort(ControlError::NotFound("user"));
            };
            user.password_hash.clone_from(&password_hash);
            user.session_epoch += 1;
            users.insert(&be(user_id), tx_enc(&user)?)?;
            sessions.remove(old)?;
            let mut s = fresh.clone();
            s.user_id = user_id;
            s.epoch = user.session_epoch;
            sessions.insert(&fresh_hash, tx_enc(&s)?)?;
            Ok(s)
        });
        from_tx(r)
    }

    /// Removes expired sessions and tokens, throttle entries quiet for a day, and emails
    /// delivered more than 30 days ago (failed ones stay for the operator). Returns how many
    /// records went.
    pub fn purge_expired(&self, now: i64) -> Result<usize, ControlError> {
        let mut n = 0;
        for item in self.outbox.iter() {
            let (k, v) = item?;
            if dec::<OutboxEmail>("outbox", &v).is_ok_and(|e| {
                e.status == MailStatus::Sent && e.sent_at.is_some_and(|t| t + 30 * 86_400 <= now)
            }) {
                self.outbox.remove(k)?;
                n += 1;
            }
        }
        for item in self.sessions.iter() {
            let (k, v) = item?;
            if dec::<Session>("sessions", &v).map_or(true, |s| s.expires_at <= now) {
                self.sessions.remove(k)?;
                n += 1;
            }
        }
        for item in self.tokens.iter() {
            let (k, v) = item?;
            if dec::<OneTimeToken>("tokens", &v).map_or(true, |t| t.expires_at <= now) {
                self.tokens.remove(k)?;
                n += 1;
            }
        }
        for item in self.throttle.iter() {
            let (k, v) = item?;
            if dec::<Throttle>("throttle", &v).map_or(true, |t| {
                t.locked_until <= now && t.last_failure + 86_400 <= now
            }) {
                self.throttle.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
    }

    // ---------------------------------------------------------------- one-time tokens

    /// Stores a password reset token and queues the email carrying its link, in one transaction.
    pub fn create_reset(
        &self,
        user_id: Id,
        token_hash: [u8; 32],
        expires_at: i64,
        email: NewEmail,
        now: i64,
    ) -> Result<(), ControlError> {
        let mail = self.sealed(outbox_record(self.next_id()?, email, now));
        let token = OneTimeToken {
            kind: TokenKind::Reset,
            user_id,
            expires_at,
            used_at: None,
        };
        let r = (&self.tokens, &self.outbox).transaction(|(tokens, outbox)| {
            tokens.insert(&token_hash, tx_enc(&token)?)?;
            outbox.insert(&be(mail.id), tx_enc(&mail)?)?;
            Ok(())
        });
        from_tx(r)
    }

    /// The unused, unexpired token of this kind stored under the hash, with its user.
    pub fn valid_token(
        &self,
        kind: TokenKind,
        token_hash: &[u8; 32],
        now: i64,
    ) -> Result<User, ControlError> {
        let Some(t) = self.get::<OneTimeToken>(&self.tokens, "tokens", token_hash)? else {
            return Err(ControlError::TokenInvalid);
        };
        if t.kind != kind || t.used_at.is_some() || t.expires_at <= now {
            return Err(ControlError::TokenInvalid);
        }
        self.user(t.user_id)?.ok_or(ControlError::TokenInvalid)
    }

    /// Uses a reset token: in one transaction marks it used, sets the new password hash and
    /// bumps the session epoch (every session of the user is void).
    pub fn reset_password(
        &self,
        token_hash: &[u8; 32],
        password_hash: String,
        now: i64,
    ) -> Result<User, ControlError> {
        let r = (&self.tokens, &self.users).transaction(|(tokens, users)| {
            let Some(mut t) = tx_get::<OneTimeToken>(tokens, "tokens", token_hash)? else {
                return abort(ControlError::TokenInvalid);
            };
            if t.kind != TokenKind::Reset || t.used_at.is_some() || t.expires_at <= now {
                return abort(ControlError::TokenInvalid);
            }
            let Some(mut user) = tx_get::<User>(users, "users", &be(t.user_id))? else {
                return abort(ControlError::TokenInvalid);
            };
            t.used_at = Some(now);
            user.password_hash.clone_from(&password_hash);
            user.session_epoch += 1;
            tokens.insert(token_hash, tx_enc(&t)?)?;
            users.insert(&be(user.id), tx_enc(&user)?)?;
            Ok(user)
        });
        from_tx(r)
    }

    /// Uses a confirmation token: marks it used and the user's email confirmed.
    pub fn confirm_email(&self, token_hash: &[u8; 32], now: i64) -> Result<User, ControlError> {
        let r = (&self.tokens, &self.users).transaction(|(tokens, users)| {
            let Some(mut t) = tx_get::<OneTimeToken>(tokens, "tokens", token_hash)? else {
                return abort(ControlError::TokenInvalid);
            };
            if t.kind != TokenKind::Confirm || t.used_at.is_some() || t.expires_at <= now {
                return abort(ControlError::TokenInvalid);
            }
            let Some(mut user) = tx_get::<User>(users, "users", &be(t.user_id))? else {
                return abort(ControlError::TokenInvalid);
            };
            t.used_at = Some(now);
            user.email_confirmed = true;
            tokens.insert(token_hash, tx_enc(&t)?)?;
            users.insert(&be(user.id), tx_enc(&user)?)?;
            Ok(user)
        });
        from_tx(r)
    }

    // ---------------------------------------------------------------- outbox

    /// Queues an email on its own (when there is no other change to report with it).
    pub fn queue_email(&self, email: NewEmail, now: i64) -> Result<OutboxEmail, ControlError> {
        let record = outbox_record(self.next_id()?, email, now);
        self.outbox
            .insert(be(record.id), enc(&self.sealed(record.clone()))?)?;
        Ok(record)
    }

    /// Pending emails whose next attempt is due, oldest first, at most `limit`; also the
    /// earliest future attempt time among the rest (to sleep until).
    pub fn due_emails(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<(Vec<OutboxEmail>, Option<i64>), ControlError> {
        let mut due = Vec::new();
        let mut next = None::<i64>;
        for item in self.outbox.iter() {
            let (_, v) = item?;
            let e: OutboxEmail = dec("outbox", &v)?;
            if e.status != MailStatus::Pending {
                continue;
            }
            if e.next_attempt_ms <= now_ms && due.len() < limit {
                match self.opened(e.clone()) {
                    Some(e) => due.push(e),
                    None => {
                        // Sealed under another key (the key file was replaced): it can never
                        // be sent, so it fails instead of blocking the queue.
                        tracing::error!(
                            id = e.id,
                            "outbox email cannot be unsealed: marked failed"
                        );
                        let failed = OutboxEmail {
                            status: MailStatus::Failed,
                            last_error: Some("body sealed under another outbox.key".to_owned()),
                            ..e
                        };
                        self.outbox.insert(be(failed.id), enc(&failed)?)?;
                    }
                }
            } else {
                next = Some(next.map_or(e.next_attempt_ms, |n| n.min(e.next_attempt_ms)));
            }
        }
        Ok((due, next))
    }

    /// Every outbox email (operators and tests), bodies unsealed (one that cannot be is shown
    /// as stored).
    pub fn outbox(&self) -> Result<Vec<OutboxEmail>, ControlError> {
        self.outbox
            .iter()
            .map(|item| {
                let e: OutboxEmail = dec("outbox", &item?.1)?;
                Ok(self.opened(e.clone()).unwrap_or(e))
            })
            .collect()
    }

    /// Stores an outbox email's new delivery state (its body sealed again).
    pub fn update_email(&self, email: &OutboxEmail) -> Result<(), ControlError> {
        self.outbox
            .insert(be(email.id), enc(&self.sealed(email.clone()))?)?;
        Ok(())
    }

    /// The email with its body sealed for storage ([`crate::seal`]).
    fn sealed(&self, mut e: OutboxEmail) -> OutboxEmail {
        e.body = self.seal.seal(&e.body);
        e
    }

    /// The stored email with its body unsealed; `None` if it does not open.
    fn opened(&self, mut e: OutboxEmail) -> Option<OutboxEmail> {
        e.body = self.seal.open(&e.body)?;
        Some(e)
    }

    // ---------------------------------------------------------------- throttle

    /// The failed-login state of a key.
    pub fn throttle(&self, key: &str) -> Result<Throttle, ControlError> {
        Ok(self
            .get(&self.throttle, "throttle", key.as_bytes())?
            .unwrap_or_default())
    }

    /// Stores the failed-login state of a key.
    pub fn set_throttle(&self, key: &str, state: Throttle) -> Result<(), ControlError> {
        self.throttle.insert(key.as_bytes(), enc(&state)?)?;
        Ok(())
    }

    /// Forgets a key's failures (after a successful login).
    pub fn clear_throttle(&self, key: &str) -> Result<(), ControlError> {
        self.throttle.remove(key.as_bytes())?;
        Ok(())
    }
}

fn outbox_record(id: Id, e: NewEmail, now: i64) -> OutboxEmail {
    OutboxEmail {
        id,
        to: e.to,
        subject: e.subject,
        body: e.body,
        status: MailStatus::Pending,
        attempts: 0,
        next_attempt_ms: now.saturating_mul(1000),
        last_error: None,
        created_at: now,
        sent_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(store: &Store, number: &str, contract: &str) -> Account {
        store
            .create_account(
                NewAccount {
                    account_number: number.to_owned(),
                    contract_number: contract.to_owned(),
                    contract_key: contract.to_owned(),
                    iin_bin: "940140000385".to_owned(),
                    name: "ТОО Тест".to_owned(),
                    company: None,
                },
                1,
            )
            .expect("create")
    }

    fn owner() -> NewOwner {
        NewOwner {
            email: "o@example.kz".to_owned(),
            full_name: None,
            phone: "+77012345678".to_owned(),
            company: None,
            password_hash: "h".to_owned(),
        }
    }

    fn mail(_: &Account) -> NewEmail {
        NewEmail {
            to: "o@example.kz".to_owned(),
            subject: "s".to_owned(),
            body: "b".to_owned(),
        }
    }

    #[test]
    fn second_provisioning_of_an_account_number_returns_the_existing_record() {
        let s = Store::temporary().expect("store");
        let first = account(&s, "4445", "K1");
        let err = s
            .create_account(
                NewAccount {
                    account_number: "4445".to_owned(),
                    contract_number: "K2".to_owned(),
                    contract_key: "K2".to_owned(),
                    iin_bin: "940140000385".to_owned(),
                    name: "x".to_owned(),
                    company: None,
                },
                2,
            )
            .expect_err("duplicate");
        match err {
            ControlError::AccountExists(existing) => assert_eq!(*existing, first),
            other => panic!("{other:?}"),
        }
        assert!(s.account_by_number("K2").expect("read").is_none());
    }

    #[test]
    fn registration_claims_the_account_once_and_queues_the_email_atomically() {
        let s = Store::temporary().expect("store");
        account(&s, "4445", "K1");
        assert!(matches!(
            s.register("K1", "990140004654", owner(), mail, 5),
            Err(ControlError::ContractNotMatched)
        ));
        assert!(matches!(
            s.register("NOPE", "940140000385", owner(), mail, 5),
            Err(ControlError::ContractNotMatched)
        ));
        assert!(
            s.outbox().expect("outbox").is_empty(),
            "a refused registration queues nothing"
        );
        let (acc, user) = s
            .register("K1", "940140000385", owner(), mail, 5)
            .expect("register");
        assert_eq!(acc.owner_user_id, Some(user.id));
        assert_eq!(s.outbox().expect("outbox").len(), 1);
        assert!(matches!(
            s.register("K1", "940140000385", owner(), mail, 6),
            Err(ControlError::AlreadyRegistered)
        ));
        assert_eq!(s.outbox().expect("outbox").len(), 1);
    }

    #[test]
    fn overlapping_networks_are_refused_naming_the_holder() {
        let s = Store::temporary().expect("store");
        let a = account(&s, "1", "A");
        let b = account(&s, "2", "B");
        let (n, fresh) = s
            .add_network(a.id, "10.0.0.7/24".parse().expect("net"), 1)
            .expect("add");
        assert!(fresh);
        assert_eq!(n.cidr.to_string(), "10.0.0.0/24");
        let (again, fresh) = s
            .add_network(a.id, "10.0.0.0/24".parse().expect("net"), 2)
            .expect("again");
        assert!(!fresh);
        assert_eq!(again.id, n.id);
        match s.add_network(b.id, "10.0.0.128/25".parse().expect("net"), 3) {
            Err(ControlError::NetworkOverlap { account_number, .. }) => {
                assert_eq!(account_number, "1")
            }
            other => panic!("{other:?}"),
        }
        s.add_network(b.id, "2001:db8::/48".parse().expect("net"), 4)
            .expect("v6");
        assert_eq!(s.all_networks().expect("all").len(), 2);
    }

    #[test]
    fn charges_lower_the_balance_which_equals_the_ledger_sum() {
        let s = Store::temporary().expect("store");
        let a = account(&s, "1", "A");
        let svc = s
            .add_service(
                a.id,
                "internet".to_owned(),
                "Бизнес 100".to_owned(),
                1_500_000,
                1,
            )
            .expect("svc");
        s.post_charge(a.id, 1_500_000, "ноябрь".to_owned(), Some(svc.id), None, 2)
            .expect("charge");
        let (first, bal, fresh) = s
            .post_charge(a.id, 25, "x".to_owned(), None, Some("INV-1"), 3)
            .expect("charge");
        assert!(fresh);
        assert_eq!(bal, -1_500_025);
        let (again, bal, fresh) = s
            .post_charge(a.id, 25, "x".to_owned(), None, Some("INV-1"), 4)
            .expect("retried charge");
        assert!(!fresh, "a retried reference charges nothing");
        assert_eq!(again, first);
        assert_eq!(bal, -1_500_025);
        assert_eq!(
            s.balance(a.id).expect("bal"),
            s.ledger(a.id)
                .expect("l")
                .iter()
                .map(|e| e.amount_tiyn)
                .sum::<i64>()
        );
        assert!(matches!(
            s.post_charge(a.id, 1, "x".to_owned(), Some(999_999), None, 4),
            Err(ControlError::NotFound(_))
        ));
    }

    #[test]
    fn outbox_survives_reopening_the_store() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let s = Store::open(dir.path()).expect("open");
            s.queue_email(
                NewEmail {
                    to: "a@b.kz".to_owned(),
                    subject: "s".to_owned(),
                    body: "тело".to_owned(),
                },
                7,
            )
            .expect("queue");
            s.flush().expect("flush");
        }
        let s = Store::open(dir.path()).expect("reopen");
        let (due, _) = s.due_emails(7_000, 10).expect("due");
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].body, "тело");
        assert_eq!(due[0].status, MailStatus::Pending);
    }

    #[test]
    fn deleting_a_user_reparents_its_children_and_frees_its_email() {
        let s = Store::temporary().expect("store");
        account(&s, "1", "A");
        let (_, root) = s
            .register("A", "940140000385", owner(), mail, 1)
            .expect("reg");
        let sub = |parent: &User, email: &str| {
            s.create_sub_user(
                parent,
                NewSubUser {
                    email: email.to_owned(),
                    first_name: None,
                    last_name: None,
                    position: None,
                    password_hash: "h".to_owned(),
                    can_manage_users: true,
                },
                rand_hash(email),
                100,
                |_| NewEmail {
                    to: email.to_owned(),
                    subject: "s".to_owned(),
                    body: "b".to_owned(),
                },
                1,
            )
        };
        let mid = sub(&root, "mid@example.kz").expect("mid");
        let leaf = sub(&mid, "leaf@example.kz").expect("leaf");
        assert!(matches!(
            sub(&root, "mid@example.kz"),
            Err(ControlError::EmailTaken)
        ));
        s.delete_user(mid.id).expect("delete");
        assert_eq!(
            s.user(leaf.id).expect("read").expect("leaf").parent_id,
            Some(root.id)
        );
        assert!(s.user_by_email("mid@example.kz").expect("read").is_none());
        assert!(
            matches!(s.delete_user(root.id), Err(ControlError::NotFound(_))),
            "owner is not deletable"
        );
    }

    fn rand_hash(seed: &str) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(seed.as_bytes()).into()
    }

    #[test]
    fn reset_token_is_single_use_and_voids_sessions() {
        let s = Store::temporary().expect("store");
        account(&s, "1", "A");
        let (_, u) = s
            .register("A", "940140000385", owner(), mail, 1)
            .expect("reg");
        let h = rand_hash("t");
        s.create_reset(
            u.id,
            h,
            100,
            NewEmail {
                to: "x@y.kz".into(),
                subject: "s".into(),
                body: "b".into(),
            },
            1,
        )
        .expect("reset");
        assert!(
            matches!(
                s.reset_password(&h, "new".into(), 100),
                Err(ControlError::TokenInvalid)
            ),
            "expired"
        );
        let user = s.reset_password(&h, "new".into(), 50).expect("use");
        assert_eq!(user.session_epoch, 1);
        assert!(
            matches!(
                s.reset_password(&h, "again".into(), 51),
                Err(ControlError::TokenInvalid)
            ),
            "used"
        );
    }

    #[test]
    fn unknown_schema_version_is_an_error_not_a_panic() {
        let s = Store::temporary().expect("store");
        s.throttle.insert(b"k", vec![9, b'{', b'}']).expect("raw");
        assert!(matches!(
            s.throttle("k"),
            Err(ControlError::UnknownVersion { version: 9, .. })
        ));
    }
}
