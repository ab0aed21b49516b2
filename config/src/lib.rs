//! Qorgan's settings: one serde tree with a default for every key, loaded from TOML and
//! validated as a whole before anything binds a socket.
//!
//! # Overview of types
//! - [`Config`]: the whole tree (`[dns]`, `[http]`, `[metrics]`, `[storage]`, `[lists]`,
//!   `[default_policy]`, `[operator]`, `[mail]`, `[payments]`, `[captcha]`, `[auth]`, `[log]`).
//! - [`ConfigError`]: why a file could not be used, with `file:line` wherever the text has one.
//! - [`DEFAULTS_TOML`]: the commented defaults (`config/qorgan.toml`), embedded so that the binary
//!   runs from any directory; a unit test proves it equals [`Config::default`].
//!
//! Validation reports every problem at once (like ripgrep's two-phase flags): a typo in one key
//! should not hide a bad address three lines further down.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The commented defaults file, as shipped in `config/qorgan.toml`.
pub const DEFAULTS_TOML: &str = include_str!("../qorgan.toml");

/// The placeholder secret of the shipped defaults. `serve` refuses it on a non-loopback
/// listener: a provider must never run a cabinet whose operator API answers to a public word.
pub const PLACEHOLDER_SECRET: &str = "change-me";

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read {path}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The text is not TOML of our schema (syntax, unknown key, wrong type).
    #[error("{origin}:{line}: {message}")]
    Parse {
        /// The file name (or `<defaults>`).
        origin: String,
        /// 1-based line of the offending text.
        line: usize,
        /// What the parser said.
        message: String,
    },
    /// The tree parsed but some values make no sense; every problem is listed.
    #[error("{}", Problems(.problems))]
    Invalid {
        /// One entry per bad value.
        problems: Vec<Problem>,
    },
}

/// One invalid value, located as precisely as the text allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `file:line` when the key is in the text, else the file name alone.
    pub location: String,
    /// The dotted key, e.g. `dns.listen`.
    pub field: String,
    /// What is wrong and what would be right.
    pub message: String,
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}: {}", p.location, p.field, p.message)?;
        }
        Ok(())
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The DNS listeners, upstreams and cache.
    pub dns: DnsConfig,
    /// The cabinet HTTP listener.
    pub http: HttpConfig,
    /// The Prometheus listener.
    pub metrics: MetricsConfig,
    /// Where the store and the mail folder live.
    pub storage: StorageConfig,
    /// The category lists folder.
    pub lists: ListsConfig,
    /// The policy for sources that belong to no account.
    pub default_policy: DefaultPolicyConfig,
    /// The operator (billing) API.
    pub operator: OperatorConfig,
    /// Outgoing mail.
    pub mail: MailConfig,
    /// Card top-ups.
    pub payments: PaymentsConfig,
    /// The registration captcha.
    pub captcha: CaptchaConfig,
    /// Sessions, passwords and login throttling.
    pub auth: AuthConfig,
    /// Logging.
    pub log: LogConfig,
}

/// What to do with a query whose source belongs to no account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownClients {
    /// Send no reply at all: not an open resolver, nothing to reflect.
    Drop,
    /// Answer REFUSED.
    Refuse,
    /// Apply `[default_policy]`.
    Default,
}

/// How a blocked name is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockModeName {
    /// NXDOMAIN (the default).
    Nxdomain,
    /// 0.0.0.0 / :: for A/AAAA, NODATA for other types.
    NullIp,
    /// REFUSED.
    Refused,
    /// The address of a block page (`custom_ip`).
    CustomIp,
}

/// Longest coalescing pause a fast-path worker may take (`dns.fast_path_coalesce_us`).
pub const MAX_COALESCE_US: u32 = 1_000;

/// `[dns]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// UDP and TCP on each address. Default `["127.0.0.1:5300"]`.
    pub listen: Vec<SocketAddr>,
    /// Plain DNS upstreams as `ip:port` (port 53 when omitted). Empty: the system's resolvers.
    pub upstreams: Vec<String>,
    /// Sources outside every account's networks. Default `"drop"`.
    pub unknown_clients: UnknownClients,
    /// hickory-resolver's answer cache, in entries. Default 4 096. It backs TCP, the hickory
    /// path and the fast path's misses; the bulk of answers lives in the packet cache
    /// (`packet_cache_size`) at about a sixteenth of the memory per answer (~120 bytes against
    /// ~2 KiB, measured with massif and heaptrack). 1 024 saves ~6 MiB of RSS, but then large
    /// answers that only TCP carries are evicted and asked again within their TTL (D8 saw it).
    /// Raise it with `fast_path = false`.
    pub cache_size: usize,
    /// Lowest TTL an answer is cached for, in seconds. Default 0.
    pub min_ttl: u32,
    /// Highest TTL an answer is cached for, in seconds. Default 86 400.
    pub max_ttl: u32,
    /// TTL of synthesized block answers, in seconds. Default 300.
    pub block_ttl: u32,
    /// How long one upstream may take before the next is tried, in milliseconds. Default 2 000.
    pub upstream_timeout_ms: u64,
    /// Queries being answered at once; beyond it new UDP queries are dropped and counted. Default 4 096.
    pub max_in_flight: usize,
    /// TCP connections idle longer than this are closed, in seconds; a message must also
    /// arrive whole within it (a slow sender cannot stretch it). Default 10.
    pub tcp_idle_timeout_secs: u64,
    /// TCP connections open at once; more are closed at once. Default 1 024.
    pub tcp_max_connections: usize,
    /// TCP connections open at once from one source address. Default 32.
    pub tcp_max_per_ip: usize,
    /// Queries one TCP connection may send; then it is closed after their answers. Default 1 000.
    pub tcp_max_queries_per_connection: usize,
    /// Serve UDP from the resolver's own per-core loop (blocked names and cached answers straight
    /// from bytes); `false` lets hickory-server serve UDP too. Default true.
    pub fast_path: bool,
    /// Fast-path workers (one SO_REUSEPORT socket each); 0 = the cores the process may run on. Default 0.
    pub fast_path_workers: usize,
    /// Entries of the fast path's packet cache (split across workers); 0 disables it. Default 100 000.
    pub packet_cache_size: usize,
    /// Under a steady load (enough datagrams to expect two within it), a fast-path worker
    /// waits this long after a small batch before its next receive, so that one wake-up and two
    /// system calls serve several queries (NIC-style interrupt coalescing: less CPU per query at
    /// moderate load, at most this much added latency; a quiet resolver never waits). In
    /// microseconds (at most 1,000); 0 turns it off. Default 50.
    pub fast_path_coalesce_us: u32,
    /// How long after its TTL ran out a cached answer may still be served (with TTL 30 s) when
    /// the upstreams fail (RFC 8767 serve-stale), in seconds; 0 turns it off. Default 86 400.
    pub serve_stale_secs: u32,
    /// Lookups one client (an IPv4 address, an IPv6 /64) may have outstanding at once; more
    /// get SERVFAIL at once (random-subdomain floods, T7). 0 = no cap. Default 100.
    pub max_upstream_per_client: u32,
    /// Lookups under one zone (a name's last two labels) outstanding at once; more get
    /// SERVFAIL at once. 0 = no cap. Default 200.
    pub max_upstream_per_zone: u32,
    /// UDP answers per second per source prefix (response-rate limiting against reflection
    /// with forged sources); 0 turns it off. Default 1 000: a whole business /24 behind one
    /// prefix stays far below it, a flood at a victim's address does not.
    pub rate_limit_qps: u32,
    /// Answers a quiet prefix may get at once. Default 2 000.
    pub rate_limit_burst: u32,
    /// Every `slip`-th answer over the rate goes out as an empty TC=1 answer (a real client
    /// retries over TCP), the others are dropped; 0 drops them all. Default 2.
    pub rate_limit_slip: u32,
    /// IPv4 sources are limited per prefix of this length. Default 24.
    pub rate_limit_v4_prefix: u8,
    /// IPv6 sources are limited per prefix of this length. Default 56.
    pub rate_limit_v6_prefix: u8,
    /// Limit loopback sources too. Default false: a forged source can never be a loopback
    /// address (the kernel drops such packets from the network), and local tools and load
    /// tests must not be throttled.
    pub rate_limit_loopback: bool,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 5300))],
            upstreams: Vec::new(),
            unknown_clients: UnknownClients::Drop,
            cache_size: 4_096,
            min_ttl: 0,
            max_ttl: 86_400,
            block_ttl: 300,
            upstream_timeout_ms: 2_000,
            max_in_flight: 4_096,
            tcp_idle_timeout_secs: 10,
            tcp_max_connections: 1_024,
            tcp_max_per_ip: 32,
            tcp_max_queries_per_connection: 1_000,
            fast_path: true,
            fast_path_workers: 0,
            packet_cache_size: 100_000,
            fast_path_coalesce_us: 50,
            serve_stale_secs: 86_400,
            max_upstream_per_client: 100,
            max_upstream_per_zone: 200,
            rate_limit_qps: 1_000,
            rate_limit_burst: 2_000,
            rate_limit_slip: 2,
            rate_limit_v4_prefix: 24,
            rate_limit_v6_prefix: 56,
            rate_limit_loopback: false,
        }
    }
}

impl DnsConfig {
    /// The upstreams as socket addresses (validated by [`Config::validate`]; port 53 by default).
    pub fn upstream_addrs(&self) -> Vec<SocketAddr> {
        self.upstreams
            .iter()
            .filter_map(|u| parse_upstream(u).ok())
            .collect()
    }
}

/// Parses `ip:port`, `[v6]:port` or a bare `ip` (port 53).
pub fn parse_upstream(text: &str) -> Result<SocketAddr, String> {
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Ok(sa);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    if text.starts_with("tls://") || text.starts_with("https://") {
        return Err(format!(
            "`{text}`: encrypted upstreams are not supported yet; use plain `ip:port`"
        ));
    }
    Err(format!("`{text}` is not `ip:port`"))
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Cabinet API, web page and `/health`. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// The cabinet's public base URL; every link in an email is built from it, never from the
    /// request's Host header. Default `http://127.0.0.1:8080`.
    pub public_url: String,
    /// Mark the session cookie `Secure` (set it when the cabinet is served over HTTPS). Default false.
    pub secure_cookies: bool,
    /// Largest JSON body, in bytes. Default 65 536.
    pub max_body_bytes: usize,
    /// Largest list upload, in bytes. Default 8 MiB.
    pub max_list_bytes: usize,
    /// Time allowed for a whole request, in seconds. Default 30.
    pub request_timeout_secs: u64,
    /// Time allowed to send the request headers, in seconds. Default 10.
    pub header_timeout_secs: u64,
    /// Connections served at once. Default 1 024.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: "http://127.0.0.1:8080".to_owned(),
            secure_cookies: false,
            max_body_bytes: 64 * 1024,
            max_list_bytes: 8 * 1024 * 1024,
            request_timeout_secs: 30,
            header_timeout_secs: 10,
            max_connections: 1_024,
        }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Prometheus `/metrics` for both planes, on its own listener. Default `127.0.0.1:9153`.
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9153)),
        }
    }
}

/// `[storage]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// The store, the compiled-lists cache and the mail folder live here. Default `./data`.
    pub data_dir: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
        }
    }
}

/// `[lists]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListsConfig {
    /// One sub-folder per category; every file in it is a list. Default `blocklists/lists`.
    pub dir: PathBuf,
    /// Recompile when a file in the folder changes. Default true.
    pub watch: bool,
}

impl Default for ListsConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("blocklists/lists"),
            watch: true,
        }
    }
}

/// `[default_policy]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DefaultPolicyConfig {
    /// Sources that get this policy without an account. Default `127.0.0.0/8` and `::1/128`.
    pub networks: Vec<IpNet>,
    /// Category names (sub-folders of `lists.dir`). Default `["ads", "malware"]`.
    pub categories: Vec<String>,
    /// Default `"nxdomain"`.
    pub block_mode: BlockModeName,
    /// The block page's addresses for `block_mode = "custom_ip"` (one IPv4, one IPv6 at most).
    pub custom_ip: Vec<IpAddr>,
}

impl Default for DefaultPolicyConfig {
    fn default() -> Self {
        Self {
            networks: vec![
                "127.0.0.0/8".parse().expect("literal network"),
                "::1/128".parse().expect("literal network"),
            ],
            categories: vec!["ads".to_owned(), "malware".to_owned()],
            block_mode: BlockModeName::Nxdomain,
            custom_ip: Vec::new(),
        }
    }
}

/// `[operator]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OperatorConfig {
    /// Bearer token for `/api/v1/operator/*`. Default `change-me`, which `serve` accepts only on
    /// loopback.
    pub token: String,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        Self {
            token: PLACEHOLDER_SECRET.to_owned(),
        }
    }
}

/// `[mail]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailConfig {
    /// `smtp://host:port` (plain, or STARTTLS when the server offers it is not attempted) or
    /// `smtps://host:port`. Empty: each email is written as an `.eml` file under `<data_dir>/mail/`.
    pub smtp: String,
    /// The From header. Default `Qorgan <noreply@localhost>`.
    pub from: String,
    /// Delivery attempts before an email is marked failed. Default 10.
    pub max_attempts: u32,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            smtp: String::new(),
            from: "Qorgan <noreply@localhost>".to_owned(),
            max_attempts: 10,
        }
    }
}

/// Which payment gateway serves top-ups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GatewayName {
    /// A local page that plays the bank.
    Sandbox,
    /// Halyk ePay (epay.homebank.kz).
    HalykEpay,
}

/// `[payments]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentsConfig {
    /// Default `"sandbox"`.
    pub gateway: GatewayName,
    /// HMAC secret of the sandbox callback. Default `change-me`.
    pub secret: String,
    /// Smallest top-up, in tiyn. Default 10 000 (100 ₸).
    pub min_topup_tiyn: i64,
    /// Largest top-up, in tiyn. Default 100 000 000 (1 000 000 ₸).
    pub max_topup_tiyn: i64,
    /// Halyk ePay OAuth endpoint.
    pub halyk_oauth_url: String,
    /// Halyk ePay API base (check-status).
    pub halyk_api_url: String,
    /// Halyk ePay payment widget script.
    pub halyk_widget_url: String,
    /// Merchant credentials issued by the bank.
    pub halyk_client_id: String,
    /// Merchant credentials issued by the bank.
    pub halyk_client_secret: String,
    /// The bank's terminal id.
    pub halyk_terminal: String,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        Self {
            gateway: GatewayName::Sandbox,
            secret: PLACEHOLDER_SECRET.to_owned(),
            min_topup_tiyn: 10_000,
            max_topup_tiyn: 100_000_000,
            halyk_oauth_url: "https://test-epay-oauth.epayment.kz/oauth2/token".to_owned(),
            halyk_api_url: "https://test-epay-api.epayment.kz".to_owned(),
            halyk_widget_url: "https://test-epay.homebank.kz/payform/payment-api.js".to_owned(),
            halyk_client_id: String::new(),
            halyk_client_secret: String::new(),
            halyk_terminal: String::new(),
        }
    }
}

/// Which captcha guards registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptchaProvider {
    /// No captcha (development, or registration behind another gate).
    None,
    /// Google reCAPTCHA v2, verified server-side.
    Recaptcha,
}

/// `[captcha]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptchaConfig {
    /// Default `"none"`.
    pub provider: CaptchaProvider,
    /// The site key shown to the page.
    pub site_key: String,
    /// The server-side secret.
    pub secret: String,
    /// The verification endpoint. Default Google's siteverify.
    pub verify_url: String,
    /// The widget script the registration page loads (with `?render=explicit&onload=…`).
    /// `https://`, or `http://` on a loopback host only (a local stand-in in tests). Default
    /// Google's `api.js`. With `provider = "recaptcha"` the page's Content-Security-Policy
    /// allows scripts and frames from its origin and folder.
    pub script_url: String,
}

impl CaptchaConfig {
    /// The Content-Security-Policy source of `script_url`: `scheme://host[:port]/folder/`
    /// (lower-case scheme and host), or `None` when `script_url` is not a usable URL.
    pub fn script_source(&self) -> Option<String> {
        script_source(&self.script_url).ok()
    }
}

/// Checks a captcha script URL and returns its CSP source (`scheme://host[:port]/folder/`).
/// Only `https://` is accepted, or `http://` on a loopback host; no user info, no fragment and
/// none of the characters that would end a CSP source list (`;`, `,`, quotes, spaces).
fn script_source(url: &str) -> Result<String, String> {
    if let Some(c) = url
        .chars()
        .find(|&c| !c.is_ascii_graphic() || ";,'\"<>\\`#^{}|".contains(c))
    {
        return Err(format!(
            "`{url}` contains {c:?}, which a script URL must not"
        ));
    }
    let lower = url.to_ascii_lowercase();
    let (scheme, rest) = if lower.starts_with("https://") {
        ("https", &url[8..])
    } else if lower.starts_with("http://") {
        ("http", &url[7..])
    } else {
        return Err(format!("`{url}` must start with https://"));
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = rest[..authority_end].to_ascii_lowercase();
    let after = &rest[authority_end..];
    let path = &after[..after.find('?').unwrap_or(after.len())];
    if authority.contains('@') {
        return Err(format!("`{url}` must not carry user info"));
    }
    // `host[:port]` or `[v6][:port]`.
    let (host, port, v6) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let Some((inside, tail)) = bracketed.split_once(']') else {
                return Err(format!("`{url}` has an unclosed [IPv6] host"));
            };
            if inside.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("`{url}` has an invalid IPv6 host"));
            }
            match tail.strip_prefix(':') {
                Some(p) => (inside, Some(p), true),
                None if tail.is_empty() => (inside, None, true),
                None => return Err(format!("`{url}` has text after its [IPv6] host")),
            }
        }
        None => match authority.split_once(':') {
            Some((h, p)) => (h, Some(p), false),
            None => (authority.as_str(), None, false),
        },
    };
    let host_ok = v6
        || (!host.is_empty()
            && !host.starts_with(['.', '-'])
            && host
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'));
    if !host_ok {
        return Err(format!("`{url}` has no valid host"));
    }
    if port.is_some_and(|p| p.parse::<u16>().map_or(true, |n| n == 0)) {
        return Err(format!("`{url}` has an invalid port"));
    }
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if scheme == "http" && !loopback {
        return Err(format!(
            "`{url}` must use https:// (http:// only on a loopback host, for tests)"
        ));
    }
    let folder = match path.rfind('/') {
        Some(i) => &path[..=i],
        None => "/",
    };
    Ok(format!("{scheme}://{authority}{folder}"))
}

impl Default for CaptchaConfig {
    fn default() -> Self {
        Self {
            provider: CaptchaProvider::None,
            site_key: String::new(),
            secret: String::new(),
            verify_url: "https://www.google.com/recaptcha/api/siteverify".to_owned(),
            script_url: "https://www.google.com/recaptcha/api.js".to_owned(),
        }
    }
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Lifetime of a session without "remember me", in seconds. Default 43 200 (12 h).
    pub session_ttl_secs: u64,
    /// Lifetime of a "remember me" session, in seconds. Default 2 592 000 (30 days).
    pub remember_ttl_secs: u64,
    /// A session (without "remember me") unused for this long ends, in seconds; 0 turns the
    /// idle limit off. Default 1 800 (30 min).
    pub session_idle_secs: u64,
    /// Password reset link lifetime, in seconds. Default 3 600.
    pub reset_ttl_secs: u64,
    /// Sub-user email confirmation link lifetime, in seconds. Default 172 800 (48 h).
    pub confirm_ttl_secs: u64,
    /// Failed logins (per account or per source) before the delay grows. Default 5.
    pub max_failed_logins: u32,
    /// Lock time after `max_failed_logins`, in seconds; doubles with every further failure. Default 60.
    pub lockout_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            session_ttl_secs: 12 * 3600,
            remember_ttl_secs: 30 * 24 * 3600,
            session_idle_secs: 30 * 60,
            reset_ttl_secs: 3600,
            confirm_ttl_secs: 48 * 3600,
            max_failed_logins: 5,
            lockout_secs: 60,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter (`info`, `qorgan_resolver=debug,info`); `RUST_LOG` overrides it. Default `info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
        }
    }
}

impl Config {
    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            line: e.span().map_or(1, |s| line_of(text, s.start)),
            message: e.message().to_owned(),
        })?;
        config.validate_located(text, origin)?;
        Ok(config)
    }

    /// The effective configuration as TOML (every default filled in).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Checks every value; reports all problems at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_located("", "<config>")
    }

    fn validate_located(&self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut bad = |field: &str, message: String| {
            let (section, key) = field.split_once('.').unwrap_or(("", field));
            let location = match locate_key(text, section, key) {
                Some(line) => format!("{origin}:{line}"),
                None => origin.to_owned(),
            };
            problems.push(Problem {
                location,
                field: field.to_owned(),
                message,
            });
        };

        if self.dns.listen.is_empty() {
            bad("dns.listen", "at least one address is needed".to_owned());
        }
        for u in &self.dns.upstreams {
            if let Err(e) = parse_upstream(u) {
                bad("dns.upstreams", e);
            }
        }
        if self.dns.cache_size == 0 {
            bad("dns.cache_size", "must be at least 1".to_owned());
        }
        if self.dns.min_ttl > self.dns.max_ttl {
            bad(
                "dns.min_ttl",
                format!("{} is above max_ttl {}", self.dns.min_ttl, self.dns.max_ttl),
            );
        }
        if !(100..=60_000).contains(&self.dns.upstream_timeout_ms) {
            bad(
                "dns.upstream_timeout_ms",
                "must be between 100 and 60000".to_owned(),
            );
        }
        if self.dns.max_in_flight == 0 {
            bad("dns.max_in_flight", "must be at least 1".to_owned());
        }
        // A worker sleeps this long per batch: a typo in seconds' magnitude would stall it.
        if self.dns.fast_path_coalesce_us > MAX_COALESCE_US {
            bad(
                "dns.fast_path_coalesce_us",
                format!("must be at most {MAX_COALESCE_US} (microseconds)"),
            );
        }
        for (field, value) in [
            ("dns.tcp_max_connections", self.dns.tcp_max_connections),
            ("dns.tcp_max_per_ip", self.dns.tcp_max_per_ip),
            (
                "dns.tcp_max_queries_per_connection",
                self.dns.tcp_max_queries_per_connection,
            ),
        ] {
            if value == 0 {
                bad(field, "must be at least 1".to_owned());
            }
        }
        if self.dns.rate_limit_qps > 0 && self.dns.rate_limit_burst < self.dns.rate_limit_qps / 10 {
            bad(
                "dns.rate_limit_burst",
                "must be at least a tenth of rate_limit_qps (a second's answers arrive in bursts)"
                    .to_owned(),
            );
        }
        if !(8..=32).contains(&self.dns.rate_limit_v4_prefix) {
            bad(
                "dns.rate_limit_v4_prefix",
                "must be between 8 and 32".to_owned(),
            );
        }
        if !(16..=128).contains(&self.dns.rate_limit_v6_prefix) {
            bad(
                "dns.rate_limit_v6_prefix",
                "must be between 16 and 128".to_owned(),
            );
        }
        if !(1..=3600).contains(&self.dns.tcp_idle_timeout_secs) {
            bad(
                "dns.tcp_idle_timeout_secs",
                "must be between 1 and 3600".to_owned(),
            );
        }
        if !(self.http.public_url.starts_with("http://")
            || self.http.public_url.starts_with("https://"))
        {
            bad(
                "http.public_url",
                format!(
                    "`{}` must start with http:// or https://",
                    self.http.public_url
                ),
            );
        }
        if self.http.max_body_bytes < 1024 {
            bad("http.max_body_bytes", "must be at least 1024".to_owned());
        }
        if self.http.max_list_bytes < self.http.max_body_bytes {
            bad(
                "http.max_list_bytes",
                "must not be below max_body_bytes".to_owned(),
            );
        }
        if self.http.request_timeout_secs == 0 || self.http.header_timeout_secs == 0 {
            bad(
                "http.request_timeout_secs",
                "timeouts must be at least 1 second".to_owned(),
            );
        }
        if self.http.max_connections == 0 {
            bad("http.max_connections", "must be at least 1".to_owned());
        }
        if self.http.listen == self.metrics.listen && self.http.listen.port() != 0 {
            bad("metrics.listen", "must differ from http.listen".to_owned());
        }
        if self.storage.data_dir.as_os_str().is_empty() {
            bad("storage.data_dir", "must not be empty".to_owned());
        }
        if self.lists.dir.as_os_str().is_empty() {
            bad("lists.dir", "must not be empty".to_owned());
        }
        for c in &self.default_policy.categories {
            if !is_category_name(c) {
                bad(
                    "default_policy.categories",
                    format!("`{c}` is not a category name (a-z, 0-9, - and _)"),
                );
            }
        }
        if self.default_policy.block_mode == BlockModeName::CustomIp
            && self.default_policy.custom_ip.is_empty()
        {
            bad(
                "default_policy.custom_ip",
                "block_mode = \"custom_ip\" needs an address".to_owned(),
            );
        }
        let v4 = self
            .default_policy
            .custom_ip
            .iter()
            .filter(|ip| ip.is_ipv4())
            .count();
        if v4 > 1 || self.default_policy.custom_ip.len() - v4 > 1 {
            bad(
                "default_policy.custom_ip",
                "at most one IPv4 and one IPv6 address".to_owned(),
            );
        }
        if self.operator.token.len() < 8 {
            bad("operator.token", "must be at least 8 characters".to_owned());
        }
        if !(self.mail.smtp.is_empty()
            || self.mail.smtp.starts_with("smtp://")
            || self.mail.smtp.starts_with("smtps://"))
        {
            bad(
                "mail.smtp",
                format!(
                    "`{}` must be smtp://host:port or smtps://host:port",
                    self.mail.smtp
                ),
            );
        }
        if !self.mail.from.contains('@') {
            bad(
                "mail.from",
                format!("`{}` is not a mailbox", self.mail.from),
            );
        }
        if self.mail.max_attempts == 0 {
            bad("mail.max_attempts", "must be at least 1".to_owned());
        }
        if self.payments.secret.len() < 8 {
            bad(
                "payments.secret",
                "must be at least 8 characters".to_owned(),
            );
        }
        if self.payments.min_topup_tiyn <= 0
            || self.payments.min_topup_tiyn > self.payments.max_topup_tiyn
        {
            bad(
                "payments.min_topup_tiyn",
                "must be positive and not above max_topup_tiyn".to_owned(),
            );
        }
        if self.payments.gateway == GatewayName::HalykEpay {
            for (k, v) in [
                ("payments.halyk_client_id", &self.payments.halyk_client_id),
                (
                    "payments.halyk_client_secret",
                    &self.payments.halyk_client_secret,
                ),
                ("payments.halyk_terminal", &self.payments.halyk_terminal),
            ] {
                if v.is_empty() {
                    bad(k, "required with gateway = \"halyk_epay\"".to_owned());
                }
            }
        }
        if self.captcha.provider == CaptchaProvider::Recaptcha
            && (self.captcha.secret.is_empty() || self.captcha.site_key.is_empty())
        {
            bad(
                "captcha.secret",
                "provider = \"recaptcha\" needs secret and site_key".to_owned(),
            );
        }
        if let Err(e) = script_source(&self.captcha.script_url) {
            bad("captcha.script_url", e);
        }
        if self.auth.session_ttl_secs == 0
            || self.auth.remember_ttl_secs < self.auth.session_ttl_secs
        {
            bad(
                "auth.remember_ttl_secs",
                "must be at least session_ttl_secs, which must be positive".to_owned(),
            );
        }
        if self.auth.max_failed_logins == 0 {
            bad("auth.max_failed_logins", "must be at least 1".to_owned());
        }

        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid { problems })
        }
    }

    /// True when a placeholder secret is in use (the shipped defaults).
    pub fn uses_placeholder_secrets(&self) -> bool {
        self.operator.token == PLACEHOLDER_SECRET || self.payments.secret == PLACEHOLDER_SECRET
    }
}

/// True for names a category folder may have: `a-z`, `0-9`, `-` and `_`, 1 to 32 characters.
pub fn is_category_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(1, |head| head.bytes().filter(|&b| b == b'\n').count() + 1)
}

/// Finds the line where `key` is set inside `[section]` (1-based), if the text sets it.
fn locate_key(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().to_owned();
            continue;
        }
        if current == section {
            if let Some((k, _)) = line.split_once('=') {
                if k.trim() == key {
                    return Some(i + 1);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_defaults_file_equals_builtin_defaults() {
        let parsed = Config::from_toml(DEFAULTS_TOML, "qorgan.toml").expect("defaults parse");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(
            Config::from_toml("", "x").expect("empty is fine"),
            Config::default()
        );
    }

    #[test]
    fn unknown_key_is_reported_with_its_line() {
        let err = Config::from_toml("[dns]\nlisten = [\"127.0.0.1:53\"]\nlistn = 1\n", "a.toml")
            .expect_err("typo must fail");
        let text = err.to_string();
        assert!(text.starts_with("a.toml:3:"), "{text}");
        assert!(text.contains("listn"), "{text}");
    }

    #[test]
    fn wrong_type_is_reported_with_its_line() {
        let err = Config::from_toml("\n[http]\nlisten = 8080\n", "b.toml").expect_err("must fail");
        assert!(err.to_string().starts_with("b.toml:3:"), "{err}");
    }

    #[test]
    fn every_invalid_value_is_reported_at_once() {
        let text = "[dns]\nupstreams = [\"nonsense\"]\nmin_ttl = 10\nmax_ttl = 5\n[mail]\nsmtp = \"ftp://x\"\n";
        let Err(ConfigError::Invalid { problems }) = Config::from_toml(text, "c.toml") else {
            panic!("expected invalid");
        };
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["dns.upstreams", "dns.min_ttl", "mail.smtp"]);
        assert_eq!(problems[0].location, "c.toml:2");
        assert_eq!(problems[1].location, "c.toml:3");
        assert_eq!(problems[2].location, "c.toml:6");
    }

    #[test]
    fn upstream_without_port_defaults_to_53() {
        assert_eq!(
            parse_upstream("127.0.0.1").expect("ip"),
            SocketAddr::from(([127, 0, 0, 1], 53))
        );
        assert_eq!(parse_upstream("[::1]:5353").expect("v6").port(), 5353);
        assert!(parse_upstream("tls://1.1.1.1").is_err());
    }

    #[test]
    fn a_coalescing_pause_over_a_millisecond_is_refused_with_its_line() {
        let err = Config::from_toml("[dns]\nfast_path_coalesce_us = 50000\n", "c.toml")
            .expect_err("must fail");
        let text = err.to_string();
        assert!(text.contains("dns.fast_path_coalesce_us"), "{text}");
        assert!(text.contains("c.toml:2"), "{text}");
        assert!(Config::from_toml("[dns]\nfast_path_coalesce_us = 1000\n", "c.toml").is_ok());
    }

    #[test]
    fn custom_ip_mode_needs_an_address() {
        let err = Config::from_toml("[default_policy]\nblock_mode = \"custom_ip\"\n", "d.toml")
            .expect_err("must fail");
        assert!(
            err.to_string().contains("default_policy.custom_ip"),
            "{err}"
        );
    }

    #[test]
    fn effective_config_round_trips() {
        let c = Config::default();
        assert_eq!(
            Config::from_toml(&c.to_toml(), "rt").expect("round trip"),
            c
        );
    }

    #[test]
    fn unreadable_file_names_the_path() {
        let err = Config::load(Path::new("/nonexistent/qorgan.toml")).expect_err("no file");
        assert!(err.to_string().contains("/nonexistent/qorgan.toml"));
    }

    #[test]
    fn captcha_script_url_is_https_or_loopback_http() {
        let source = |url: &str| script_source(url);
        assert_eq!(
            Config::default().captcha.script_source().as_deref(),
            Some("https://www.google.com/recaptcha/")
        );
        assert_eq!(
            source("HTTPS://WWW.Recaptcha.net/recaptcha/api.js?hl=ru").as_deref(),
            Ok("https://www.recaptcha.net/recaptcha/")
        );
        assert_eq!(
            source("http://127.0.0.1:8123/api.js").as_deref(),
            Ok("http://127.0.0.1:8123/")
        );
        assert_eq!(
            source("http://localhost:9/x/y/api.js").as_deref(),
            Ok("http://localhost:9/x/y/")
        );
        assert_eq!(
            source("http://[::1]:9/api.js").as_deref(),
            Ok("http://[::1]:9/")
        );
        assert_eq!(
            source("https://captcha.example").as_deref(),
            Ok("https://captcha.example/")
        );
        for bad in [
            "",
            "www.google.com/recaptcha/api.js",
            "http://www.google.com/recaptcha/api.js",
            "http://10.0.0.1/api.js",
            "ftp://127.0.0.1/api.js",
            "https://user@www.google.com/api.js",
            "https:///api.js",
            "https://www.google.com:0/api.js",
            "https://www.google.com:99999/api.js",
            "https://a.example/api.js; script-src *",
            "https://a.example/api.js,x",
            "https://a.example/api.js#x",
            "https://a.example/'unsafe-inline'",
            "https://[::1/api.js",
        ] {
            assert!(source(bad).is_err(), "{bad} must be refused");
        }
        let err = Config::from_toml(
            "[captcha]\nscript_url = \"http://captcha.example/api.js\"\n",
            "e.toml",
        )
        .expect_err("must fail");
        let text = err.to_string();
        assert!(text.starts_with("e.toml:2: captcha.script_url:"), "{text}");
    }

    #[test]
    fn category_names_are_restricted() {
        assert!(is_category_name("ads"));
        assert!(is_category_name("adult-2"));
        assert!(!is_category_name("Ads"));
        assert!(!is_category_name("../etc"));
        assert!(!is_category_name(""));
    }
}
