//! `qorgan`: the one binary. Thin on purpose: parse the CLI, load and validate the config before
//! binding anything (exit 64 on a bad config), then wire the planes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use qorgan_config::Config;
use tokio_util::sync::CancellationToken;

/// Exit code for a bad configuration (sysexits' EX_USAGE), as linkerd and friends do.
const EX_USAGE: u8 = 64;

/// The config file `serve` reads when `--config` is not given and the file exists.
const DEFAULT_CONFIG_PATH: &str = "config/qorgan.toml";

#[derive(Parser)]
#[command(
    name = "qorgan",
    version,
    about = "DNS-filtering resolver and customer cabinet"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// DNS resolver + cabinet API + store in one process (the default).
    Serve {
        /// The TOML config; default `config/qorgan.toml` when it exists, else built-in defaults.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Like `serve`, but first provisions a demo customer contract mapped to loopback.
    Demo {
        /// The TOML config, as for `serve`.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// A resolver-only node: pulls policy from a control plane and serves DNS, keeping its
    /// last policy while the control plane is away.
    Resolver {
        /// The control plane's base URL, e.g. `http://10.0.0.1:8080`.
        #[arg(long)]
        control: String,
        /// The control plane's operator token.
        #[arg(long)]
        token: String,
        /// This node's name as the control plane lists it (default: the host name).
        #[arg(long)]
        node: Option<String>,
        /// The TOML config (`[dns]`, `[metrics]`, `[storage]`, `[default_policy]` apply).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Parse and compile a lists folder and print what each category holds.
    CompileLists {
        /// One sub-folder per category; every file in it is a list.
        dir: PathBuf,
    },
    /// Validate a config file and print the effective configuration.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve { config: None }) {
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(config) => {
                print!("{}", config.to_toml());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("invalid configuration: {e}");
                ExitCode::from(EX_USAGE)
            }
        },
        Command::CompileLists { dir } => compile_lists(&dir),
        Command::Serve { config } => run_server(config.as_deref(), false),
        Command::Demo { config } => run_server(config.as_deref(), true),
        Command::Resolver {
            control,
            token,
            node,
            config,
        } => run_node(config.as_deref(), control, token, node),
    }
}

/// jemalloc instead of glibc's malloc: under the resolver's load glibc kept ~50 MiB of freed,
/// fragmented memory it could not return (113 MiB RSS against 66 MiB with jemalloc, measured by
/// `benches/load/side-by-side.sh`; `malloc_trim` released none of it). The DNS fast path does
/// not allocate per packet, so the allocator's speed matters less than what it gives back.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options (read at its first allocation): a background thread returns freed
/// pages to the system after a second (the default is ten, and only on later allocations);
/// two arenas (the fast path's workers and tokio's threads allocate little and rarely).
/// `_RJEM_MALLOC_CONF` in the environment still applies on top.
#[cfg(not(target_env = "msvc"))]
#[allow(non_upper_case_globals, unsafe_code)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8; 70] =
    b"background_thread:true,narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn compile_lists(dir: &Path) -> ExitCode {
    let started = Instant::now();
    match qorgan_blocklists::compile_dir(dir) {
        Ok((_catalog, report)) => {
            print!("{report}");
            println!("total time: {:.3} s", started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the config for `serve`/`demo`: the named file, else the default path when present,
/// else the built-in defaults.
fn load_config(path: Option<&Path>) -> Result<Config, qorgan_config::ConfigError> {
    match path {
        Some(p) => Config::load(p),
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
            Config::load(Path::new(DEFAULT_CONFIG_PATH))
        }
        None => Ok(Config::default()),
    }
}

fn run_server(path: Option<&Path>, demo: bool) -> ExitCode {
    let config = match load_config(path).and_then(|c| refuse_placeholders(c, demo)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("invalid configuration: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    init_tracing(&config.log.level);
    block_on(serve(config, demo))
}

/// Runs a plane on a fresh multi-threaded runtime; its error is logged and printed.
fn block_on(planes: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(planes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A node name from `--node` or the host name: `[a-zA-Z0-9._-]`, at most 64 characters.
fn node_name(given: Option<String>) -> String {
    let raw = given.unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default()
    });
    let clean: String = raw
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(64)
        .collect();
    if clean.is_empty() {
        "node".to_owned()
    } else {
        clean
    }
}

fn run_node(path: Option<&Path>, control: String, token: String, node: Option<String>) -> ExitCode {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("invalid configuration: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let url_ok = control.starts_with("http://") || control.starts_with("https://");
    if !url_ok || token.trim().is_empty() {
        eprintln!(
            "invalid arguments: --control must be an http:// or https:// URL and --token non-empty"
        );
        return ExitCode::from(EX_USAGE);
    }
    init_tracing(&config.log.level);
    let pull = qorgan_resolver::pull::PullConfig {
        url: control,
        token,
        node: node_name(node),
        usage_interval: std::time::Duration::from_secs(5),
    };
    block_on(serve_node(config, pull))
}

async fn serve_node(config: Config, pull: qorgan_resolver::pull::PullConfig) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let registry = prometheus::Registry::new();
    let dns = qorgan_resolver::DnsListeners::bind(&config.dns.listen)
        .context("binding the DNS listeners")?;
    let metrics = tokio::net::TcpListener::bind(config.metrics.listen)
        .await
        .with_context(|| format!("binding the metrics listener {}", config.metrics.listen))?;
    for addr in dns.local_addrs() {
        tracing::info!(%addr, "DNS listening (UDP and TCP)");
    }
    tracing::info!(addr = %metrics.local_addr()?, "metrics listening");
    tracing::info!(control = %pull.url, node = %pull.node, "resolver node pulling policy");
    let store = qorgan_resolver::SnapshotStore::new(&config.default_policy);
    let mut tasks = tokio::task::JoinSet::new();
    {
        let (registry, shutdown) = (registry.clone(), shutdown.clone());
        tasks.spawn(async move {
            qorgan_resolver::run(
                &config,
                dns,
                store,
                qorgan_resolver::PolicySource::Pull(pull),
                &registry,
                shutdown,
            )
            .await
            .context("DNS resolver")
        });
    }
    run_planes(tasks, metrics, registry, &shutdown).await
}

/// Adds the metrics listener and the signal handler to the planes in `tasks`, then waits:
/// the first plane to stop (error or shutdown) stops the others.
async fn run_planes(
    mut tasks: tokio::task::JoinSet<anyhow::Result<()>>,
    metrics: tokio::net::TcpListener,
    registry: prometheus::Registry,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    {
        let shutdown = shutdown.clone();
        tasks.spawn(async move { serve_metrics(metrics, registry, shutdown).await });
    }
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            shutdown.cancel();
        });
    }
    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        shutdown.cancel();
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) if result.is_ok() => result = Err(e),
            Ok(Err(e)) => tracing::error!("{e:#}"),
            Err(e) if result.is_ok() => result = Err(anyhow::anyhow!("a task failed: {e}")),
            Err(e) => tracing::error!("a task failed: {e}"),
        }
    }
    result
}

/// The shipped placeholder secrets are tolerated only while every listener is on loopback.
fn refuse_placeholders(config: Config, demo: bool) -> Result<Config, qorgan_config::ConfigError> {
    let public = |a: &SocketAddr| !a.ip().is_loopback();
    let exposed = config.dns.listen.iter().any(public) || public(&config.http.listen);
    if exposed && !demo && config.uses_placeholder_secrets() {
        return Err(qorgan_config::ConfigError::Invalid {
            problems: vec![qorgan_config::Problem {
                location: "<config>".to_owned(),
                field: "operator.token".to_owned(),
                message: "operator.token and payments.secret must be changed from \"change-me\" \
                          before listening beyond loopback"
                    .to_owned(),
            }],
        });
    }
    Ok(config)
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(quiet_libraries(level)))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

/// hickory logs every answered query at `info`; a provider's log would drown in it.
fn quiet_libraries(level: &str) -> String {
    format!("{level},hickory_server=warn,hickory_resolver=warn,hickory_net=warn,hickory_proto=warn")
}

async fn serve(config: Config, demo: bool) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let registry = prometheus::Registry::new();

    // Bind everything first, so a taken port fails before any state changes.
    let dns = qorgan_resolver::DnsListeners::bind(&config.dns.listen)
        .context("binding the DNS listeners")?;
    let http = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding the HTTP listener {}", config.http.listen))?;
    let metrics = tokio::net::TcpListener::bind(config.metrics.listen)
        .await
        .with_context(|| format!("binding the metrics listener {}", config.metrics.listen))?;
    for addr in dns.local_addrs() {
        tracing::info!(%addr, "DNS listening (UDP and TCP)");
    }
    tracing::info!(addr = %http.local_addr()?, "cabinet listening");
    tracing::info!(addr = %metrics.local_addr()?, "metrics listening");

    let app = qorgan_control::App::open(&config, &registry, demo).context("opening the store")?;
    if demo {
        let d = app
            .provision_demo()
            .context("provisioning the demo contract")?;
        println!("{d}");
    }
    // The cabinet's accounts are already published into the resolver's snapshot store.
    let store = app.policy().snapshots().clone();
    let mut tasks = tokio::task::JoinSet::new();
    {
        let (config, store, registry, shutdown) = (
            config.clone(),
            store.clone(),
            registry.clone(),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            qorgan_resolver::run(
                &config,
                dns,
                store,
                qorgan_resolver::PolicySource::InProcess,
                &registry,
                shutdown,
            )
            .await
            .context("DNS resolver")
        });
    }
    {
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            qorgan_control::serve_http(app, http, shutdown)
                .await
                .context("cabinet HTTP server")
        });
    }
    run_planes(tasks, metrics, registry, &shutdown).await
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Prometheus text format on its own listener (never on the public cabinet port).
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    registry: prometheus::Registry,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    use axum::response::IntoResponse as _;
    use axum::routing::get;
    let router = axum::Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                let mut body = String::new();
                let encoder = prometheus::TextEncoder::new();
                match encoder.encode_utf8(&registry.gather(), &mut body) {
                    Ok(()) => (
                        [(axum::http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
                        body,
                    )
                        .into_response(),
                    Err(e) => {
                        tracing::error!("encoding metrics: {e}");
                        (
                            [(axum::http::header::CONTENT_TYPE, "text/plain")],
                            String::from("# metrics unavailable\n"),
                        )
                            .into_response()
                    }
                }
            }
        }),
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("metrics server")
}
