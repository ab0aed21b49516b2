//! Forwarding through hickory-resolver (its cache in front), with a connection wrapper that
//! measures every upstream exchange and tells the caller whether its lookup needed one.
//!
//! Cache hit/miss signal: hickory-resolver counts its cache only through the `metrics` crate
//! facade. Instead, every exchange goes through [`MeteredConn::send`], which marks a task-local
//! flag set around each lookup ([`Forwarder::lookup`]). A lookup that finished without marking it
//! was answered from the cache (or joined an identical lookup already in flight, which hickory's
//! pool shares): that is a hit; one that marked it is a miss. Exact, not a latency guess.

use std::cell::Cell;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::Stream;
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::xfer::{DnsExchange, DnsHandle};
use hickory_net::{DnsError, NetError, NoRecords};
use hickory_proto::op::{DnsRequest, DnsResponse, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::{ConnectionProvider, PoolContext, Resolver};

use crate::metrics::{DnsMetrics, UpstreamError};
use crate::ResolverError;

tokio::task_local! {
    /// Set by [`MeteredConn::send`] when the lookup running in this task sent a query upstream.
    static WENT_UPSTREAM: Cell<bool>;
}

/// What the upstream side made of one question.
#[derive(Debug)]
pub(crate) struct Forwarded {
    /// The rcode to give the client: NOERROR, NXDOMAIN, or SERVFAIL for any failure.
    pub(crate) rcode: ResponseCode,
    /// Answer section (CNAME chain included).
    pub(crate) answers: Vec<Record>,
    /// Authority section (the SOA of a negative answer).
    pub(crate) authorities: Vec<Record>,
    /// Additional section (never the upstream's OPT: that is per hop).
    pub(crate) additionals: Vec<Record>,
    /// True when the answer needed no upstream exchange of this task's own.
    pub(crate) cache_hit: bool,
}

/// The forwarder: a hickory `Resolver` over metered connections.
#[derive(Clone)]
pub struct Forwarder {
    resolver: Resolver<MeteredProvider>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").finish_non_exhaustive()
    }
}

impl Forwarder {
    /// Builds the forwarder from `[dns]`: `upstreams` (or `/etc/resolv.conf` when empty), cache size,
    /// min/max TTL, per-try timeout; 0x20 case randomisation on; the server's hosts file never used.
    pub fn new(
        dns: &qorgan_config::DnsConfig,
        metrics: Arc<DnsMetrics>,
    ) -> Result<Self, ResolverError> {
        let timeout = Duration::from_millis(dns.upstream_timeout_ms);
        let provider = MeteredProvider {
            inner: TokioRuntimeProvider::default(),
            metrics,
            timeout,
        };
        let upstreams = dns.upstream_addrs();
        let mut builder = if upstreams.is_empty() {
            Resolver::builder(provider).map_err(|e| ResolverError::Upstream {
                message: e.to_string(),
            })?
        } else {
            Resolver::builder_with_config(
                ResolverConfig::from_name_servers(name_servers(&upstreams)),
                provider,
            )
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = timeout;
        opts.cache_size = u64::try_from(dns.cache_size).unwrap_or(u64::MAX);
        let min_ttl = Some(Duration::from_secs(u64::from(dns.min_ttl)));
        let max_ttl = Some(Duration::from_secs(u64::from(dns.max_ttl)));
        opts.positive_min_ttl = min_ttl;
        opts.negative_min_ttl = min_ttl;
        opts.positive_max_ttl = max_ttl;
        opts.negative_max_ttl = max_ttl;
        // RFC 5452 hardening: random query ID and port are hickory's defaults; 0x20 is not.
        opts.case_randomization = true;
        opts.os_port_selection = false;
        // A forwarder must hand the client the CNAME chain (and we check its targets).
        opts.preserve_intermediates = true;
        // The server's own /etc/hosts is no business of customer networks.
        opts.use_hosts_file = ResolveHosts::Never;
        let resolver = builder.build().map_err(|e| ResolverError::Upstream {
            message: e.to_string(),
        })?;
        Ok(Self { resolver })
    }

    /// Resolves one question. Never fails: every failure is folded into SERVFAIL.
    pub(crate) async fn lookup(&self, name: Name, rtype: RecordType) -> Forwarded {
        let (result, chain, went_upstream) = WENT_UPSTREAM
            .scope(Cell::new(false), async {
                let result = self.resolver.lookup(name.clone(), rtype).await;
                // hickory's negative answer drops the CNAME chain that led to it.
                let chain = match &result {
                    Err(NetError::Dns(DnsError::NoRecordsFound(_)))
                        if rtype != RecordType::CNAME =>
                    {
                        self.cname_chain(name).await
                    }
                    _ => Vec::new(),
                };
                (result, chain, WENT_UPSTREAM.with(Cell::get))
            })
            .await;
        let cache_hit = !went_upstream;
        match result {
            Ok(lookup) => {
                let message = lookup.message();
                let rcode = match message.metadata.response_code {
                    // An NXDOMAIN that carries a CNAME chain stays NXDOMAIN, as the upstream said.
                    ResponseCode::NXDomain => ResponseCode::NXDomain,
                    _ => ResponseCode::NoError,
                };
                Forwarded {
                    rcode,
                    answers: message.answers.clone(),
                    authorities: message.authorities.clone(),
                    additionals: message.additionals.clone(),
                    cache_hit,
                }
            }
            Err(NetError::Dns(DnsError::NoRecordsFound(no_records))) => {
                let mut forwarded = negative(no_records, cache_hit);
                if forwarded.rcode != ResponseCode::ServFail {
                    forwarded.answers = chain;
                }
                forwarded
            }
            Err(error) => {
                tracing::debug!(%error, "upstream lookup failed");
                Forwarded {
                    rcode: ResponseCode::ServFail,
                    answers: Vec::new(),
                    authorities: Vec::new(),
                    additionals: Vec::new(),
                    cache_hit,
                }
            }
        }
    }
}

/// Most CNAME links followed to rebuild the chain of a negative answer.
const MAX_CHAIN: usize = 8;

impl Forwarder {
    /// The CNAME chain from `name`, each link asked as a CNAME question (cached like any
    /// other): a NODATA or NXDOMAIN reached through CNAMEs keeps its chain, as the upstream
    /// sent it (RFC 2308 §2), and the handler checks every target against the policy.
    async fn cname_chain(&self, mut name: Name) -> Vec<Record> {
        let mut chain: Vec<Record> = Vec::new();
        for _ in 0..MAX_CHAIN {
            let Ok(lookup) = self.resolver.lookup(name.clone(), RecordType::CNAME).await else {
                break;
            };
            let link = lookup.message().answers.iter().find_map(|r| match &r.data {
                RData::CNAME(target) if r.name == name => Some((r.clone(), target.0.clone())),
                _ => None,
            });
            let Some((record, target)) = link else {
                break;
            };
            if chain.iter().any(|r| r.name == target) {
                break;
            }
            chain.push(record);
            name = target;
        }
        chain
    }
}

/// NXDOMAIN or NODATA (with the upstream's SOA, so clients cache it), or SERVFAIL if the upstream
/// refused or failed.
fn negative(no_records: NoRecords, cache_hit: bool) -> Forwarded {
    let rcode = match no_records.response_code {
        ResponseCode::NXDomain => ResponseCode::NXDomain,
        ResponseCode::NoError => ResponseCode::NoError,
        _ => ResponseCode::ServFail,
    };
    let authorities = match (rcode, no_records.soa) {
        (ResponseCode::ServFail, _) | (_, None) => Vec::new(),
        (_, Some(soa)) => vec![soa.into_record_of_rdata()],
    };
    Forwarded {
        rcode,
        answers: Vec::new(),
        authorities,
        additionals: Vec::new(),
        cache_hit,
    }
}

fn name_servers(upstreams: &[SocketAddr]) -> Vec<NameServerConfig> {
    upstreams
        .iter()
        .map(|addr| {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
        })
        .collect()
}

/// hickory's Tokio provider, with every connection wrapped in a [`MeteredConn`].
#[derive(Clone)]
pub(crate) struct MeteredProvider {
    inner: TokioRuntimeProvider,
    metrics: Arc<DnsMetrics>,
    /// `dns.upstream_timeout_ms`: an exchange abandoned after this long timed out.
    timeout: Duration,
}

type ConnFuture = Pin<Box<dyn Future<Output = Result<MeteredConn, NetError>> + Send + 'static>>;

impl ConnectionProvider for MeteredProvider {
    type Conn = MeteredConn;
    type FutureConn = ConnFuture;
    type RuntimeProvider = TokioRuntimeProvider;

    fn new_connection(
        &self,
        ip: IpAddr,
        config: &ConnectionConfig,
        cx: &PoolContext,
    ) -> Result<Self::FutureConn, NetError> {
        let connecting = self.inner.new_connection(ip, config, cx)?;
        let (metrics, timeout) = (self.metrics.clone(), self.timeout);
        Ok(Box::pin(async move {
            let inner = connecting.await?;
            Ok(MeteredConn {
                inner,
                metrics,
                timeout,
            })
        }))
    }

    fn runtime_provider(&self) -> &Self::RuntimeProvider {
        &self.inner
    }
}

/// One upstream connection; times each exchange and classifies its failures.
#[derive(Clone)]
pub(crate) struct MeteredConn {
    inner: DnsExchange<TokioRuntimeProvider>,
    metrics: Arc<DnsMetrics>,
    timeout: Duration,
}

impl DnsHandle for MeteredConn {
    type Response = MeteredResponse<<DnsExchange<TokioRuntimeProvider> as DnsHandle>::Response>;
    type Runtime = TokioRuntimeProvider;

    fn is_verifying_dnssec(&self) -> bool {
        self.inner.is_verifying_dnssec()
    }

    fn is_using_edns(&self) -> bool {
        self.inner.is_using_edns()
    }

    fn send(&self, request: DnsRequest) -> Self::Response {
        // Outside a `Forwarder::lookup` scope (none today) there is simply nobody to tell.
        let _ = WENT_UPSTREAM.try_with(|flag| flag.set(true));
        self.metrics.record_upstream_sent();
        MeteredResponse {
            inner: self.inner.send(request),
            started: Instant::now(),
            timeout: self.timeout,
            metrics: Some(self.metrics.clone()),
        }
    }
}

/// The response stream of one exchange; records the exchange when its first item arrives.
pub(crate) struct MeteredResponse<S> {
    inner: S,
    started: Instant,
    timeout: Duration,
    /// Taken when the exchange has been recorded, so it counts once.
    metrics: Option<Arc<DnsMetrics>>,
}

impl<S> Stream for MeteredResponse<S>
where
    S: Stream<Item = Result<DnsResponse, NetError>> + Unpin,
{
    type Item = Result<DnsResponse, NetError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(item) = &polled {
            if let Some(metrics) = self.metrics.take() {
                let error = match item {
                    Some(Ok(response)) => match response.metadata.response_code {
                        ResponseCode::ServFail => Some(UpstreamError::Servfail),
                        ResponseCode::Refused => Some(UpstreamError::Refused),
                        _ => None,
                    },
                    Some(Err(NetError::Timeout)) => Some(UpstreamError::Timeout),
                    Some(Err(NetError::Io(_))) => Some(UpstreamError::Io),
                    Some(Err(_)) => Some(UpstreamError::Other),
                    // hickory's UDP exchange ends its stream without an item when its timer
                    // fires: that is a timeout, not a protocol error.
                    None if self.started.elapsed() >= self.timeout.mul_f32(0.9) => {
                        Some(UpstreamError::Timeout)
                    }
                    None => Some(UpstreamError::Other),
                };
                metrics.record_upstream_done(Some(self.started.elapsed().as_secs_f64()), error);
            }
        }
        polled
    }
}

impl<S> Drop for MeteredResponse<S> {
    /// hickory's pool drops an exchange when its deadline passes (before the socket's own
    /// timeout reports), or when a parallel exchange to another server answered first. Only the
    /// first is a failure of this upstream.
    fn drop(&mut self) {
        if let Some(metrics) = self.metrics.take() {
            if self.started.elapsed() >= self.timeout.mul_f32(0.9) {
                metrics.record_upstream_done(None, Some(UpstreamError::Timeout));
            }
        }
    }
}
