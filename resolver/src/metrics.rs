//! Prometheus metrics of the DNS plane, registered once and kept as resolved handles.
//!
//! Every label set is closed (protocol, query-type class, outcome, error kind); account ids never
//! become labels. The one open label is the category name of the list-size gauge: categories are
//! the operator's folders, few and slow to change.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::ResolverError;

/// The transport a query came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// Plain DNS over UDP.
    Udp,
    /// Plain DNS over TCP.
    Tcp,
    /// Anything else hickory may hand us (TLS, HTTPS, QUIC once enabled).
    Other,
}

impl Proto {
    const ALL: [Self; 3] = [Self::Udp, Self::Tcp, Self::Other];

    fn label(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Other => "other",
        }
    }
}

/// The query type, folded into a few classes that matter for operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QtypeClass {
    /// A
    A,
    /// AAAA
    Aaaa,
    /// HTTPS and SVCB
    Https,
    /// MX
    Mx,
    /// TXT
    Txt,
    /// PTR
    Ptr,
    /// CNAME
    Cname,
    /// SRV
    Srv,
    /// NS
    Ns,
    /// SOA
    Soa,
    /// ANY
    Any,
    /// Every other type
    Other,
}

impl QtypeClass {
    const ALL: [Self; 12] = [
        Self::A,
        Self::Aaaa,
        Self::Https,
        Self::Mx,
        Self::Txt,
        Self::Ptr,
        Self::Cname,
        Self::Srv,
        Self::Ns,
        Self::Soa,
        Self::Any,
        Self::Other,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::A => "a",
            Self::Aaaa => "aaaa",
            Self::Https => "https",
            Self::Mx => "mx",
            Self::Txt => "txt",
            Self::Ptr => "ptr",
            Self::Cname => "cname",
            Self::Srv => "srv",
            Self::Ns => "ns",
            Self::Soa => "soa",
            Self::Any => "any",
            Self::Other => "other",
        }
    }

    /// Folds a record type into its class.
    pub fn of(rtype: hickory_proto::rr::RecordType) -> Self {
        use hickory_proto::rr::RecordType as T;
        match rtype {
            T::A => Self::A,
            T::AAAA => Self::Aaaa,
            T::HTTPS | T::SVCB => Self::Https,
            T::MX => Self::Mx,
            T::TXT => Self::Txt,
            T::PTR => Self::Ptr,
            T::CNAME => Self::Cname,
            T::SRV => Self::Srv,
            T::NS => Self::Ns,
            T::SOA => Self::Soa,
            T::ANY => Self::Any,
            _ => Self::Other,
        }
    }
}

/// What became of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Resolved through the cache or an upstream (NXDOMAIN and NODATA from upstream included).
    Allowed,
    /// Answered in the account's block mode.
    Blocked,
    /// REFUSED by policy: a source that belongs to no account (`unknown_clients = "refuse"`),
    /// or a query class other than IN. (A block answered in `refused` mode is `Blocked`.)
    Refused,
    /// SERVFAIL: the upstreams failed, or we were overloaded on TCP.
    Servfail,
    /// No reply at all: an unknown source with `unknown_clients = "drop"`, or overload on UDP.
    Dropped,
    /// FORMERR, NOTIMP or BADVERS: the query itself was unusable.
    Malformed,
}

impl Outcome {
    const ALL: [Self; 6] = [
        Self::Allowed,
        Self::Blocked,
        Self::Refused,
        Self::Servfail,
        Self::Dropped,
        Self::Malformed,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Blocked => "blocked",
            Self::Refused => "refused",
            Self::Servfail => "servfail",
            Self::Dropped => "dropped",
            Self::Malformed => "malformed",
        }
    }
}

/// Why an upstream exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// No answer in time.
    Timeout,
    /// A socket error (refused connection, unreachable network...).
    Io,
    /// The upstream answered SERVFAIL.
    Servfail,
    /// The upstream answered REFUSED.
    Refused,
    /// Anything else (malformed answer, protocol error).
    Other,
}

impl UpstreamError {
    const ALL: [Self; 5] = [
        Self::Timeout,
        Self::Io,
        Self::Servfail,
        Self::Refused,
        Self::Other,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Io => "io",
            Self::Servfail => "servfail",
            Self::Refused => "refused",
            Self::Other => "other",
        }
    }
}

/// Latency buckets in seconds, from a cached answer (tens of µs) to a slow upstream.
const LATENCY_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// The DNS plane's metrics. Create one per registry with [`DnsMetrics::new`] and share it.
#[derive(Debug, Clone)]
pub struct DnsMetrics {
    queries: Vec<IntCounter>,
    latency: Vec<Histogram>,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    upstream_queries: IntCounter,
    upstream_errors: Vec<IntCounter>,
    upstream_latency: Histogram,
    overload_drops: IntCounter,
    fast_path_handovers: IntCounter,
    rate_slipped: IntCounter,
    stale_answers: IntCounter,
    account_limited: IntCounter,
    /// By client, by zone.
    upstream_capped: [IntCounter; 2],
    rate_dropped: IntCounter,
    tcp_refused: IntCounter,
    tcp_connections: IntGauge,
    snapshot_generation: IntGauge,
    lists_generation: IntGauge,
    list_domains: IntGaugeVec,
    list_reloads: IntCounter,
    list_reload_failures: IntCounter,
    policy_reloads: IntCounter,
    policy_reload_failures: IntCounter,
}

impl DnsMetrics {
    /// Registers every metric in `registry` and resolves every label combination once, so the
    /// query path only touches atomics.
    pub fn new(registry: &Registry) -> Result<Self, ResolverError> {
        let queries_vec = IntCounterVec::new(
            Opts::new(
                "qorgan_dns_queries_total",
                "DNS queries by protocol, query type class and outcome",
            ),
            &["protocol", "qtype", "outcome"],
        )
        .map_err(ResolverError::Metrics)?;
        let mut queries =
            Vec::with_capacity(Proto::ALL.len() * QtypeClass::ALL.len() * Outcome::ALL.len());
        for p in Proto::ALL {
            for q in QtypeClass::ALL {
                for o in Outcome::ALL {
                    queries.push(queries_vec.with_label_values(&[p.label(), q.label(), o.label()]));
                }
            }
        }
        let latency_vec = prometheus::HistogramVec::new(
            HistogramOpts::new(
                "qorgan_dns_query_duration_seconds",
                "Time from a parsed query to its answer, by outcome",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["outcome"],
        )
        .map_err(ResolverError::Metrics)?;
        let latency = Outcome::ALL
            .iter()
            .map(|o| latency_vec.with_label_values(&[o.label()]))
            .collect();
        let upstream_errors_vec = IntCounterVec::new(
            Opts::new(
                "qorgan_dns_upstream_errors_total",
                "Failed upstream exchanges by kind",
            ),
            &["kind"],
        )
        .map_err(ResolverError::Metrics)?;
        let upstream_errors = UpstreamError::ALL
            .iter()
            .map(|k| upstream_errors_vec.with_label_values(&[k.label()]))
            .collect();
        let upstream_capped_vec = IntCounterVec::new(
            Opts::new(
                "qorgan_dns_upstream_capped_total",
                "Lookups answered SERVFAIL at once: their client or zone had too many outstanding",
            ),
            &["by"],
        )
        .map_err(ResolverError::Metrics)?;
        let upstream_capped = [
            upstream_capped_vec.with_label_values(&["client"]),
            upstream_capped_vec.with_label_values(&["zone"]),
        ];
        let list_domains = IntGaugeVec::new(
            Opts::new(
                "qorgan_lists_domains",
                "Domains compiled per category in the lists catalog in use",
            ),
            &["category"],
        )
        .map_err(ResolverError::Metrics)?;

        let counter =
            |name: &str, help: &str| IntCounter::new(name, help).map_err(ResolverError::Metrics);
        let gauge =
            |name: &str, help: &str| IntGauge::new(name, help).map_err(ResolverError::Metrics);
        let metrics = Self {
            queries,
            latency,
            cache_hits: counter(
                "qorgan_dns_cache_hits_total",
                "Forwarded queries answered without an upstream exchange of their own (cache, or an identical query in flight)",
            )?,
            cache_misses: counter(
                "qorgan_dns_cache_misses_total",
                "Forwarded queries that needed at least one upstream exchange",
            )?,
            upstream_queries: counter("qorgan_dns_upstream_queries_total", "Exchanges sent to upstream servers")?,
            upstream_errors,
            upstream_latency: Histogram::with_opts(
                HistogramOpts::new("qorgan_dns_upstream_duration_seconds", "Round trip of one upstream exchange")
                    .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .map_err(ResolverError::Metrics)?,
            overload_drops: counter(
                "qorgan_dns_overload_drops_total",
                "Queries refused service because dns.max_in_flight queries were already being answered",
            )?,
            fast_path_handovers: counter(
                "qorgan_dns_fast_path_handovers_total",
                "UDP queries the fast path handed to the hickory path (packet-cache misses and what it does not answer from bytes)",
            )?,
            upstream_capped,
            account_limited: counter(
                "qorgan_dns_account_limited_total",
                "Queries refused because their account went over its queries-per-second limit",
            )?,
            stale_answers: counter(
                "qorgan_dns_stale_answers_total",
                "Upstream failures answered from an expired cached answer instead of SERVFAIL (RFC 8767)",
            )?,
            rate_slipped: counter(
                "qorgan_dns_rate_limited_slipped_total",
                "Answers over a source prefix's rate sent as an empty TC=1 answer (slip)",
            )?,
            rate_dropped: counter(
                "qorgan_dns_rate_limited_dropped_total",
                "Answers over a source prefix's rate not sent at all",
            )?,
            tcp_refused: counter(
                "qorgan_dns_tcp_refused_total",
                "TCP connections closed at once: over dns.tcp_max_connections or dns.tcp_max_per_ip",
            )?,
            tcp_connections: gauge("qorgan_dns_tcp_connections", "TCP connections open")?,
            snapshot_generation: gauge(
                "qorgan_policy_snapshot_generation",
                "Generation of the policy snapshot in use (bumped by every list or account change)",
            )?,
            lists_generation: gauge("qorgan_lists_generation", "How many lists catalogs have been swapped in")?,
            list_domains,
            list_reloads: counter("qorgan_lists_reloads_total", "Lists catalogs compiled and swapped in")?,
            list_reload_failures: counter(
                "qorgan_lists_reload_failures_total",
                "Lists folder changes that failed to compile (the previous catalog stays in use)",
            )?,
            policy_reloads: counter("qorgan_policy_reloads_total", "Account tables loaded from the policy source")?,
            policy_reload_failures: counter(
                "qorgan_policy_reload_failures_total",
                "Policy file changes that failed to load (the previous accounts stay in use)",
            )?,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(queries_vec),
            Box::new(latency_vec),
            Box::new(upstream_errors_vec),
            Box::new(upstream_capped_vec),
            Box::new(metrics.list_domains.clone()),
            Box::new(metrics.cache_hits.clone()),
            Box::new(metrics.cache_misses.clone()),
            Box::new(metrics.upstream_queries.clone()),
            Box::new(metrics.upstream_latency.clone()),
            Box::new(metrics.overload_drops.clone()),
            Box::new(metrics.fast_path_handovers.clone()),
            Box::new(metrics.rate_slipped.clone()),
            Box::new(metrics.stale_answers.clone()),
            Box::new(metrics.account_limited.clone()),
            Box::new(metrics.rate_dropped.clone()),
            Box::new(metrics.tcp_refused.clone()),
            Box::new(metrics.tcp_connections.clone()),
            Box::new(metrics.snapshot_generation.clone()),
            Box::new(metrics.lists_generation.clone()),
            Box::new(metrics.list_reloads.clone()),
            Box::new(metrics.list_reload_failures.clone()),
            Box::new(metrics.policy_reloads.clone()),
            Box::new(metrics.policy_reload_failures.clone()),
        ];
        for c in collectors {
            registry.register(c).map_err(ResolverError::Metrics)?;
        }
        Ok(metrics)
    }

    fn query_index(proto: Proto, qtype: QtypeClass, outcome: Outcome) -> usize {
        let p = Proto::ALL.iter().position(|&x| x == proto).unwrap_or(0);
        let q = QtypeClass::ALL
            .iter()
            .position(|&x| x == qtype)
            .unwrap_or(0);
        let o = Outcome::ALL.iter().position(|&x| x == outcome).unwrap_or(0);
        (p * QtypeClass::ALL.len() + q) * Outcome::ALL.len() + o
    }

    /// Counts one answered (or deliberately unanswered) query and its latency.
    pub fn record_query(&self, proto: Proto, qtype: QtypeClass, outcome: Outcome, seconds: f64) {
        if let Some(c) = self.queries.get(Self::query_index(proto, qtype, outcome)) {
            c.inc();
        }
        if let Some(h) = Outcome::ALL
            .iter()
            .position(|&x| x == outcome)
            .and_then(|i| self.latency.get(i))
        {
            h.observe(seconds);
        }
    }

    /// Counts an answer the rate limiter held back: `slipped` when it went out truncated.
    pub fn record_rate_limited(&self, slipped: bool) {
        if slipped {
            self.rate_slipped.inc();
        } else {
            self.rate_dropped.inc();
        }
    }

    /// Counts an upstream failure answered with a stale cached answer (serve-stale).
    pub fn record_stale_answer(&self) {
        self.stale_answers.inc();
    }

    /// Counts a lookup refused by an outstanding-lookup cap (`by` is `client` or `zone`).
    pub(crate) fn record_upstream_capped(&self, by: crate::caps::CappedBy) {
        let i = usize::from(by == crate::caps::CappedBy::Zone);
        self.upstream_capped[i].inc();
    }

    /// Counts a query refused over its account's `qps_limit`.
    pub fn record_account_limited(&self) {
        self.account_limited.inc();
    }

    /// Stale answers sent so far.
    pub fn stale_answers(&self) -> u64 {
        self.stale_answers.get()
    }

    /// Counts a TCP connection refused by a connection cap.
    pub fn record_tcp_refused(&self) {
        self.tcp_refused.inc();
    }

    /// A TCP connection was accepted.
    pub fn tcp_connection_opened(&self) {
        self.tcp_connections.inc();
    }

    /// A TCP connection ended.
    pub fn tcp_connection_closed(&self) {
        self.tcp_connections.dec();
    }

    /// The counter behind one label combination (tests read it).
    pub fn queries(&self, proto: Proto, qtype: QtypeClass, outcome: Outcome) -> u64 {
        self.queries
            .get(Self::query_index(proto, qtype, outcome))
            .map_or(0, IntCounter::get)
    }

    /// Counts a forwarded query by whether it needed its own upstream exchange.
    pub fn record_cache(&self, hit: bool) {
        if hit {
            self.cache_hits.inc();
        } else {
            self.cache_misses.inc();
        }
    }

    /// Cache hits and misses so far.
    pub fn cache_counts(&self) -> (u64, u64) {
        (self.cache_hits.get(), self.cache_misses.get())
    }

    pub(crate) fn record_upstream_sent(&self) {
        self.upstream_queries.inc();
    }

    /// One finished exchange: its round trip, or only its error when it never completed.
    pub(crate) fn record_upstream_done(&self, seconds: Option<f64>, error: Option<UpstreamError>) {
        if let Some(seconds) = seconds {
            self.upstream_latency.observe(seconds);
        }
        if let Some(kind) = error {
            if let Some(c) = UpstreamError::ALL
                .iter()
                .position(|&x| x == kind)
                .and_then(|i| self.upstream_errors.get(i))
            {
                c.inc();
            }
        }
    }

    /// Upstream exchanges sent so far, and how many failed.
    pub fn upstream_counts(&self) -> (u64, u64) {
        (
            self.upstream_queries.get(),
            self.upstream_errors.iter().map(IntCounter::get).sum(),
        )
    }

    pub(crate) fn record_overload(&self) {
        self.overload_drops.inc();
    }

    pub(crate) fn record_handover(&self) {
        self.fast_path_handovers.inc();
    }

    pub(crate) fn set_snapshot_generation(&self, generation: u64) {
        self.snapshot_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    /// Publishes the sizes of a newly swapped-in catalog, removing categories that are gone.
    pub(crate) fn set_list_sizes<'a>(
        &self,
        sizes: impl IntoIterator<Item = (&'a str, u64)>,
        gone: &[String],
    ) {
        for name in gone {
            // A category that disappeared leaves no stale gauge behind.
            let _ = self.list_domains.remove_label_values(&[name.as_str()]);
        }
        for (name, domains) in sizes {
            self.list_domains
                .with_label_values(&[name])
                .set(i64::try_from(domains).unwrap_or(i64::MAX));
        }
    }

    pub(crate) fn record_list_reload(&self, ok: bool) {
        if ok {
            self.list_reloads.inc();
            self.lists_generation.inc();
        } else {
            self.list_reload_failures.inc();
        }
    }

    /// Lists catalogs swapped in and failed reloads so far.
    pub fn list_reload_counts(&self) -> (u64, u64) {
        (self.list_reloads.get(), self.list_reload_failures.get())
    }

    pub(crate) fn record_policy_reload(&self, ok: bool) {
        if ok {
            self.policy_reloads.inc();
        } else {
            self.policy_reload_failures.inc();
        }
    }

    /// Policy loads and failed policy reloads so far.
    pub fn policy_reload_counts(&self) -> (u64, u64) {
        (self.policy_reloads.get(), self.policy_reload_failures.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registering_twice_in_one_registry_is_an_error_not_a_panic() {
        let registry = Registry::new();
        DnsMetrics::new(&registry).expect("first");
        assert!(DnsMetrics::new(&registry).is_err());
    }

    #[test]
    fn each_label_combination_has_its_own_counter() {
        let m = DnsMetrics::new(&Registry::new()).expect("metrics");
        m.record_query(Proto::Tcp, QtypeClass::Aaaa, Outcome::Blocked, 0.001);
        assert_eq!(m.queries(Proto::Tcp, QtypeClass::Aaaa, Outcome::Blocked), 1);
        assert_eq!(m.queries(Proto::Udp, QtypeClass::Aaaa, Outcome::Blocked), 0);
        assert_eq!(m.queries(Proto::Tcp, QtypeClass::A, Outcome::Blocked), 0);
        assert_eq!(m.queries(Proto::Tcp, QtypeClass::Aaaa, Outcome::Allowed), 0);
    }

    #[test]
    fn exposition_has_closed_labels_and_no_account_ids() {
        let registry = Registry::new();
        let m = DnsMetrics::new(&registry).expect("metrics");
        m.record_query(Proto::Udp, QtypeClass::A, Outcome::Allowed, 0.0001);
        let families = registry.gather();
        let names: Vec<_> = families.iter().map(|f| f.name().to_owned()).collect();
        assert!(
            names.contains(&"qorgan_dns_queries_total".to_owned()),
            "{names:?}"
        );
        for f in &families {
            for metric in f.get_metric() {
                for label in metric.get_label() {
                    assert!(
                        ["protocol", "qtype", "outcome", "kind", "category", "by"]
                            .contains(&label.name()),
                        "unexpected label {}",
                        label.name()
                    );
                }
            }
        }
    }
}
