//! The control plane: the customer cabinet and operator API over HTTP (axum), the sled store,
//! authentication, and the mail outbox.
//!
//! # Overview of types and modules
//! - [`App`]: the opened control plane (config, [`store::Store`], the mail sender task, rate
//!   limiters). Clone it freely; [`App::close`] stops the sender and flushes the store
//!   ([`serve_http`] calls it when it returns).
//! - [`serve_http`]: serves the API on an already-bound listener until a
//!   [`CancellationToken`] fires (header-read timeout, connection cap, graceful shutdown).
//! - [`api`]: the routes of CONTRACT §4 for operators and customers, the JSON error object
//!   ([`api::ApiError`]) and the OpenAPI document ([`api::ApiDoc`]).
//! - [`store`]: the only module that touches sled; typed use cases in multi-tree transactions.
//! - [`validate`]: IIN/BIN, phone, contract key, email and password rules.
//! - [`secrets`]: Argon2id passwords, 256-bit tokens stored as SHA-256.
//! - [`mail`]: the Russian email texts and the outbox sender (SMTP or `.eml` files).
//! - [`metrics`]: Prometheus counters, registered in the binary's registry.
//! - [`ControlError`]: the crate's one error type.
//!
//! # Example
//! ```no_run
//! # async fn run() -> Result<(), qorgan_control::ControlError> {
//! let config = qorgan_config::Config::default();
//! let registry = prometheus::Registry::new();
//! let app = qorgan_control::App::open(&config, &registry, false)?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(qorgan_control::ControlError::Serve)?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! qorgan_control::serve_http(app, listener, shutdown).await?; // closes the app when done
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod api;
pub mod billing;
mod error;
pub mod filter;
pub mod invoice_pdf;
pub mod mail;
pub mod metrics;
pub mod money;
pub mod payments;
pub mod policy;
mod seal;
pub mod secrets;
mod server;
pub mod stats_csv;
pub mod store;
pub mod topup;
pub mod usage;
pub mod validate;
pub mod web;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use error::ControlError;
pub use server::serve_http;

use metrics::Metrics;
use store::{NewAccount, Store};

/// Unix seconds now.
pub(crate) fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

/// At most `max` events per `window` from one source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Events allowed per window.
    pub max: u32,
    /// The window.
    pub window: Duration,
}

/// Knobs that are not (yet) config keys: demo mode, retry pacing and per-IP limits. The
/// defaults are what `serve` uses; tests tighten or loosen them.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// Opened by `qorgan demo`: the operator API accepts the placeholder token.
    pub demo: bool,
    /// First mail retry delay; doubles per attempt (capped at an hour). Default 2 s.
    pub mail_backoff: Duration,
    /// Registrations per source address. Default 10 per 10 minutes.
    pub register_limit: RateLimit,
    /// Password-reset requests per source address. Default 5 per 10 minutes.
    pub forgot_limit: RateLimit,
    /// A source address is locked after `auth.max_failed_logins × ip_failure_factor` failed
    /// logins (it may serve many people behind NAT). Default 4.
    pub ip_failure_factor: u32,
    /// How often the resolver's per-account counters are drained into the store. Default 5 s.
    pub usage_interval: Duration,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            demo: false,
            mail_backoff: Duration::from_secs(2),
            register_limit: RateLimit {
                max: 10,
                window: Duration::from_secs(600),
            },
            forgot_limit: RateLimit {
                max: 5,
                window: Duration::from_secs(600),
            },
            ip_failure_factor: 4,
            usage_interval: Duration::from_secs(5),
        }
    }
}

/// What a per-IP limiter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum LimitKind {
    Register,
    Forgot,
}

pub(crate) struct Inner {
    config: qorgan_config::Config,
    options: AppOptions,
    store: Store,
    metrics: Metrics,
    mail_notify: Arc<Notify>,
    http_client: reqwest::Client,
    dummy_hash: String,
    hash_slots: Semaphore,
    limits: Mutex<HashMap<(LimitKind, IpAddr), (Instant, u32)>>,
    mail_cancel: CancellationToken,
    mail_task: Mutex<Option<JoinHandle<()>>>,
    openapi_json: String,
    topups: topup::Topups,
    stats_notify: Arc<Notify>,
    billing_task: Mutex<Option<JoinHandle<()>>>,
    policy: Arc<policy::PolicyBook>,
    usage_task: Mutex<Option<JoinHandle<()>>>,
}

/// The opened control plane. Cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

/// The demo customer that `qorgan demo` provisions (CONTRACT §1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoAccount {
    /// Login of the owner once registered.
    pub account_number: String,
    /// To type in the registration form.
    pub contract_number: String,
    /// To type in the registration form.
    pub iin_bin: String,
    /// Networks mapped to it (loopback).
    pub networks: Vec<IpNet>,
    /// False when it was already provisioned by an earlier start.
    pub created: bool,
}

impl std::fmt::Display for DemoAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nets: Vec<String> = self.networks.iter().map(ToString::to_string).collect();
        writeln!(
            f,
            "Demo contract {}:",
            if self.created {
                "provisioned"
            } else {
                "already provisioned"
            }
        )?;
        writeln!(f, "  account number (login): {}", self.account_number)?;
        writeln!(f, "  contract number:        {}", self.contract_number)?;
        writeln!(f, "  IIN:                    {}", self.iin_bin)?;
        write!(f, "  networks:               {}", nets.join(", "))
    }
}

impl App {
    /// Opens the store at `<data_dir>/store`, registers the metrics in `registry` and starts
    /// the mail sender task. `demo` (set by `qorgan demo`) lets the operator API accept the
    /// placeholder token. Must be called inside a Tokio runtime.
    pub fn open(
        config: &qorgan_config::Config,
        registry: &prometheus::Registry,
        demo: bool,
    ) -> Result<Self, ControlError> {
        Self::open_with(
            config,
            registry,
            AppOptions {
                demo,
                ..AppOptions::default()
            },
        )
    }

    /// Like [`App::open`], with explicit [`AppOptions`] (demo mode, limits).
    pub fn open_with(
        config: &qorgan_config::Config,
        registry: &prometheus::Registry,
        options: AppOptions,
    ) -> Result<Self, ControlError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ControlError::NoRuntime)?;
        let dir = config.storage.data_dir.join("store");
        std::fs::create_dir_all(&dir).map_err(|source| ControlError::Io {
            path: dir.clone(),
            source,
        })?;
        let store = Store::open(&dir)?;
        let metrics = Metrics::new(registry)?;
        let mail_notify = Arc::new(Notify::new());
        let sender = mail::MailSender::new(
            config,
            store.clone(),
            mail_notify.clone(),
            options.mail_backoff,
            metrics.clone(),
        )?;
        let http_client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(ControlError::HttpClient)?;
        // A real hash to verify against when the login names nobody, so that unknown and known
        // logins take the same time.
        let dummy_hash = secrets::hash_password(&secrets::generate_password())?;
        let slots = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get) * 2;
        let mail_cancel = CancellationToken::new();
        let task = runtime.spawn(sender.run(mail_cancel.clone()));
        let topups = topup::Topups::new(config, http_client.clone());
        let book = Arc::new(policy::PolicyBook::new(
            qorgan_resolver::SnapshotStore::new(&config.default_policy),
            config.default_policy.clone(),
        ));
        let published = book.load_all(&store)?;
        tracing::info!(accounts = published, "account policies published");
        // Ends with the other background tasks; it only bumps the generation.
        runtime.spawn(
            book.clone()
                .follow_catalog(store.clone(), mail_cancel.clone()),
        );
        let usage_task = runtime.spawn(usage::drain_loop(
            store.clone(),
            book.snapshots().clone(),
            options.usage_interval,
            mail_cancel.clone(),
        ));
        let stats_notify = Arc::new(Notify::new());
        let billing_task = runtime.spawn(topup::run_jobs(
            store.clone(),
            store.billing().clone(),
            topups.clone(),
            config.http.public_url.clone(),
            stats_notify.clone(),
            mail_notify.clone(),
            mail_cancel.clone(),
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                config: config.clone(),
                options,
                store,
                metrics,
                mail_notify,
                http_client,
                dummy_hash,
                hash_slots: Semaphore::new(slots),
                limits: Mutex::new(HashMap::new()),
                mail_cancel,
                mail_task: Mutex::new(Some(task)),
                openapi_json: api::openapi_json(config),
                topups,
                stats_notify,
                billing_task: Mutex::new(Some(billing_task)),
                policy: book,
                usage_task: Mutex::new(Some(usage_task)),
            }),
        })
    }

    /// The configuration the app was opened with.
    pub fn config(&self) -> &qorgan_config::Config {
        &self.inner.config
    }

    /// The options the app was opened with.
    pub fn options(&self) -> &AppOptions {
        &self.inner.options
    }

    /// The store (for the binary's wiring, the policy builder and tests).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The HTTP routes (for in-process tests with `tower::ServiceExt::oneshot`).
    pub fn router(&self) -> axum::Router {
        api::router(self.clone())
    }

    /// The published account policies (and the resolver's snapshot store they feed).
    pub fn policy(&self) -> &policy::PolicyBook {
        &self.inner.policy
    }

    /// Republishes one account's policy after a change of its filter or networks (`edited`:
    /// the own list an upload just stored and compiled, see [`policy::PolicyBook::publish`]).
    pub(crate) fn publish_policy(
        &self,
        account: store::Id,
        edited: Option<policy::EditedList<'_>>,
    ) -> Result<u64, ControlError> {
        self.inner
            .policy
            .publish(&self.inner.store, account, edited)
    }

    /// The billing part of the store.
    pub fn billing(&self) -> &billing::Billing {
        self.inner.store.billing()
    }

    /// The top-up use cases over the configured payment gateway.
    pub fn topups(&self) -> &topup::Topups {
        &self.inner.topups
    }

    /// Wakes the billing job (after queueing a statistics request).
    pub fn wake_stats(&self) {
        self.inner.stats_notify.notify_one();
    }

    /// Wakes the mail sender (after queueing an email).
    pub fn wake_mailer(&self) {
        self.inner.mail_notify.notify_one();
    }

    /// Stops the mail sender (waiting for an attempt in progress) and flushes the store. Call
    /// it once serving has stopped; the store closes when the last clone of the app is dropped.
    pub async fn close(&self) -> Result<(), ControlError> {
        self.inner.mail_cancel.cancel();
        let task = self
            .inner
            .mail_task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.await.map_err(ControlError::Join)?;
        }
        let billing_task = self
            .inner
            .billing_task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = billing_task {
            task.await.map_err(ControlError::Join)?;
        }
        let usage_task = self
            .inner
            .usage_task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = usage_task {
            task.await.map_err(ControlError::Join)?;
        }
        self.inner.store.flush()
    }

    /// Provisions the demo customer of `qorgan demo`: account `4445`, contract `4445/10` (the
    /// seed's own example), a synthetic IIN with a valid check digit, and the loopback networks.
    /// Idempotent: a second start finds and returns it.
    pub fn provision_demo(&self) -> Result<DemoAccount, ControlError> {
        let number = "4445";
        let contract = "4445/10";
        let iin = "900101300811";
        let networks: Vec<IpNet> = ["127.0.0.0/8", "::1/128"]
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        let store = self.store();
        let key = validate::contract_key(contract)
            .map_err(|_| ControlError::NotFound("demo contract"))?;
        let (account, created) = match store.create_account(
            NewAccount {
                account_number: number.to_owned(),
                contract_number: contract.to_owned(),
                contract_key: key,
                iin_bin: iin.to_owned(),
                name: "Демо Клиент".to_owned(),
                company: Some("ТОО «Демо»".to_owned()),
            },
            now_secs(),
        ) {
            Ok(a) => (a, true),
            Err(ControlError::AccountExists(a)) => (*a, false),
            Err(e) => return Err(e),
        };
        for net in &networks {
            store.add_network(account.id, *net, now_secs())?;
        }
        self.publish_policy(account.id, None)?;
        Ok(DemoAccount {
            account_number: account.account_number,
            contract_number: account.contract_number,
            iin_bin: account.iin_bin,
            networks,
            created,
        })
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub(crate) fn http_client(&self) -> &reqwest::Client {
        &self.inner.http_client
    }

    pub(crate) fn openapi(&self) -> &str {
        &self.inner.openapi_json
    }

    /// Counts one event for `ip`; `Err(seconds)` when over the limit (seconds until the window
    /// resets).
    pub(crate) fn rate_limit(&self, kind: LimitKind, ip: IpAddr) -> Result<(), u64> {
        let limit = match kind {
            LimitKind::Register => self.inner.options.register_limit,
            LimitKind::Forgot => self.inner.options.forgot_limit,
        };
        let now = Instant::now();
        let mut map = self
            .inner
            .limits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() > 100_000 {
            map.retain(|_, (start, _)| now.duration_since(*start) < limit.window);
        }
        let entry = map.entry((kind, ip)).or_insert((now, 0));
        if now.duration_since(entry.0) >= limit.window {
            *entry = (now, 0);
        }
        if entry.1 >= limit.max {
            let left = limit.window.saturating_sub(now.duration_since(entry.0));
            return Err(left.as_secs().max(1));
        }
        entry.1 += 1;
        Ok(())
    }

    /// Hashes a password on a blocking thread, at most a few at a time (each takes 19 MiB).
    pub(crate) async fn hash_password(&self, password: String) -> Result<String, ControlError> {
        let _slot = self
            .inner
            .hash_slots
            .acquire()
            .await
            .map_err(|_| ControlError::NoRuntime)?;
        tokio::task::spawn_blocking(move || secrets::hash_password(&password))
            .await
            .map_err(ControlError::Join)?
    }

    /// Verifies a password on a blocking thread; `None` verifies against the dummy hash (and
    /// returns false) so that unknown users cost the same time.
    pub(crate) async fn verify_password(
        &self,
        password: String,
        phc: Option<String>,
    ) -> Result<bool, ControlError> {
        let _slot = self
            .inner
            .hash_slots
            .acquire()
            .await
            .map_err(|_| ControlError::NoRuntime)?;
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.inner.dummy_hash.clone());
        let ok = tokio::task::spawn_blocking(move || secrets::verify_password(&password, &phc))
            .await
            .map_err(ControlError::Join)?;
        Ok(ok && known)
    }
}
