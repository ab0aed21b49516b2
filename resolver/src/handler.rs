//! The per-query handler hickory-server calls: client → account, decision, answer.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::Guard;
use hickory_net::runtime::Time;
use hickory_net::xfer::Protocol;
use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::HINFO;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use qorgan_blocklists::{AccountPolicy, BlockMode, ClientPolicy, PolicySnapshot, Verdict};
use qorgan_config::UnknownClients;
use tokio::sync::Semaphore;

use crate::answer::{self, BlockAnswer};
use crate::caps::OutstandingCaps;
use crate::metrics::{DnsMetrics, Outcome, Proto, QtypeClass};
use crate::rrl::{RateDecision, RateLimitOptions, RateLimiter};
use crate::store::SnapshotStore;
use crate::upstream::Forwarder;
use crate::usage::BlockedSample;

/// TTL of the RFC 8482 answer to ANY (an hour: the answer never changes).
const ANY_TTL: u32 = 3600;

impl From<BlockMode> for BlockAnswer {
    fn from(mode: BlockMode) -> Self {
        match mode {
            BlockMode::Nxdomain => Self::NxDomain,
            BlockMode::NullIp => Self::NullIp,
            BlockMode::Refused => Self::Refused,
            BlockMode::CustomIp { v4, v6 } => Self::CustomIp { v4, v6 },
        }
    }
}

/// Answers DNS queries by the policy of the account that owns the source address.
///
/// Implements hickory-server's [`RequestHandler`]; [`crate::run`] serves it on every listener,
/// and benches drive it directly with [`Request::from_bytes`] and any [`ResponseHandler`].
/// It never fails: every problem becomes an rcode (or, for unknown sources under
/// `unknown_clients = "drop"`, no reply at all) and a counter.
#[derive(Debug)]
pub struct DnsHandler {
    store: SnapshotStore,
    forwarder: Forwarder,
    metrics: Arc<DnsMetrics>,
    unknown_clients: UnknownClients,
    block_ttl: u32,
    in_flight: Semaphore,
    caps: OutstandingCaps,
    /// Response-rate limiting for UDP that hickory-server receives itself
    /// (`dns.fast_path = false`; the fast path limits its own). One lock per such query: that
    /// path spawns a task per datagram anyway.
    udp_rrl: Mutex<RateLimiter>,
    epoch: Instant,
}

impl DnsHandler {
    /// A handler reading policy from `store`, forwarding through `forwarder`, counting in
    /// `metrics`, with `unknown_clients`, `block_ttl` and `max_in_flight` from `[dns]`.
    pub fn new(
        dns: &qorgan_config::DnsConfig,
        store: SnapshotStore,
        forwarder: Forwarder,
        metrics: Arc<DnsMetrics>,
    ) -> Self {
        Self {
            store,
            forwarder,
            metrics,
            unknown_clients: dns.unknown_clients,
            block_ttl: dns.block_ttl,
            in_flight: Semaphore::new(dns.max_in_flight.clamp(1, Semaphore::MAX_PERMITS)),
            caps: OutstandingCaps::new(dns.max_upstream_per_client, dns.max_upstream_per_zone),
            udp_rrl: Mutex::new(RateLimiter::new(RateLimitOptions::from_config(dns), 1)),
            epoch: Instant::now(),
        }
    }

    async fn answer<R: ResponseHandler>(
        &self,
        request: &Request,
        handle: R,
        proto: Proto,
    ) -> (Outcome, ResponseInfo) {
        // hickory-server drops parsed QR=1 messages itself; this keeps us safe if that changes.
        if request.metadata.message_type != MessageType::Query {
            return (Outcome::Dropped, no_reply(request));
        }
        let Ok(_permit) = self.in_flight.try_acquire() else {
            self.metrics.record_overload();
            if proto == Proto::Udp {
                // A UDP client retries; a flood gets nothing to amplify.
                return (Outcome::Dropped, no_reply(request));
            }
            return (
                Outcome::Servfail,
                send_rcode(handle, request, ResponseCode::ServFail).await,
            );
        };

        let snapshot = self.store.load();
        let policy = match snapshot.client_policy(request.src().ip()) {
            ClientPolicy::Account(p) | ClientPolicy::DefaultNetwork(p) => p.clone(),
            ClientPolicy::Unknown => match (self.unknown_clients, &snapshot.default_policy) {
                (UnknownClients::Default, Some(p)) => p.clone(),
                (UnknownClients::Drop, _) => {
                    tracing::debug!(src = %request.src(), "query from an unknown source dropped");
                    return (Outcome::Dropped, no_reply(request));
                }
                (UnknownClients::Refuse | UnknownClients::Default, _) => {
                    return (
                        Outcome::Refused,
                        send_rcode(handle, request, ResponseCode::Refused).await,
                    );
                }
            },
        };

        if request.metadata.op_code != OpCode::Query {
            return (
                Outcome::Malformed,
                send_rcode(handle, request, ResponseCode::NotImp).await,
            );
        }
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return (
                Outcome::Malformed,
                send_rcode(handle, request, ResponseCode::BADVERS).await,
            );
        }
        let [query] = request.queries.queries() else {
            return (
                Outcome::Malformed,
                send_rcode(handle, request, ResponseCode::FormErr).await,
            );
        };
        if query.query_class() != DNSClass::IN {
            return (
                Outcome::Refused,
                send_rcode(handle, request, ResponseCode::Refused).await,
            );
        }
        if !policy.admit(crate::fast::unix_secs) {
            self.metrics.record_account_limited();
            return (
                Outcome::Refused,
                send_rcode(handle, request, ResponseCode::Refused).await,
            );
        }

        let verdict = snapshot.decide_labels_rev(&policy, RevLabels::of(query.name()).iter());
        if verdict.is_blocked() {
            policy.counters.record(&verdict);
            self.store.sample_blocked(BlockedSample::from_labels_rev(
                policy.id,
                RevLabels::of(query.name()).iter(),
            ));
            let info = self
                .send_blocked(handle, request, &snapshot, &policy, verdict)
                .await;
            return (Outcome::Blocked, info);
        }

        if query.query_type() == RecordType::ANY {
            // RFC 8482 §4.2: one synthesised HINFO instead of everything the name has (ANY is
            // the classic amplification query); nothing is forwarded.
            policy.counters.record(&verdict);
            let hinfo = Record::from_rdata(
                query.original().name().clone(),
                ANY_TTL,
                RData::HINFO(HINFO::new("RFC8482".to_owned(), String::new())),
            );
            let edns = request.edns.as_ref().map(answer::response_edns);
            let info = send(
                handle,
                request,
                edns.as_ref(),
                ResponseCode::NoError,
                &[hinfo],
                &[],
                &[],
            )
            .await;
            return (Outcome::Allowed, info);
        }

        // Keep this snapshot for the CNAME check: the policy's category bits index its catalog.
        let snapshot = Guard::into_inner(snapshot);
        let name = Name::from(query.name().clone());
        let outstanding = match self.caps.admit(request.src().ip(), &name) {
            Ok(admitted) => admitted,
            Err(by) => {
                tracing::debug!(src = %request.src(), %name, by = by.label(), "outstanding-lookup cap");
                self.metrics.record_upstream_capped(by);
                return (
                    Outcome::Servfail,
                    send_rcode(handle, request, ResponseCode::ServFail).await,
                );
            }
        };
        let mut forwarded = self.forwarder.lookup(name, query.query_type()).await;
        drop(outstanding);
        // 0x20: the upstream saw (and echoed) a randomised case; give the client its own back.
        let client_name = query.original().name();
        for record in &mut forwarded.answers {
            if record.name == *client_name && !record.name.eq_case(client_name) {
                record.name = client_name.clone();
            }
        }
        self.metrics.record_cache(forwarded.cache_hit);

        for record in &forwarded.answers {
            if let RData::CNAME(target) = &record.data {
                let cname_verdict =
                    snapshot.decide_labels_rev(&policy, RevLabels::of(&target.0).iter());
                if cname_verdict.is_blocked() {
                    tracing::debug!(name = %query.name(), target = %target.0, "blocked through a CNAME");
                    policy.counters.record(&cname_verdict);
                    self.store.sample_blocked(BlockedSample::from_labels_rev(
                        policy.id,
                        RevLabels::of(query.name()).iter(),
                    ));
                    let info = self
                        .send_blocked(handle, request, &snapshot, &policy, cname_verdict)
                        .await;
                    return (Outcome::Blocked, info);
                }
            }
        }
        policy.counters.record(&verdict);

        let outcome = if forwarded.rcode == ResponseCode::ServFail {
            Outcome::Servfail
        } else {
            Outcome::Allowed
        };
        let edns = request.edns.as_ref().map(answer::response_edns);
        let info = send(
            handle,
            request,
            edns.as_ref(),
            forwarded.rcode,
            &forwarded.answers,
            &forwarded.authorities,
            &forwarded.additionals,
        )
        .await;
        (outcome, info)
    }

    async fn send_blocked<R: ResponseHandler>(
        &self,
        handle: R,
        request: &Request,
        snapshot: &PolicySnapshot,
        policy: &AccountPolicy,
        verdict: Verdict,
    ) -> ResponseInfo {
        let Some(query) = request.queries.queries().first() else {
            return no_reply(request);
        };
        let synth = answer::blocked(
            policy.block_mode.into(),
            query.original().name(),
            query.query_type(),
            self.block_ttl,
        );
        let edns = request.edns.as_ref().map(|req| {
            let mut edns = answer::response_edns(req);
            answer::add_blocked_ede(&mut edns, ede_text(snapshot, verdict));
            edns
        });
        send(
            handle,
            request,
            edns.as_ref(),
            synth.rcode,
            &synth.answers,
            &synth.authorities,
            &[],
        )
        .await
    }
}

/// A name's labels on the stack, to walk TLD first with a `Clone` iterator (hickory's label
/// iterator is not `Clone`, and a dotted copy would allocate per query).
struct RevLabels<'a> {
    labels: [&'a [u8]; 128],
    len: usize,
}

impl<'a> RevLabels<'a> {
    fn of(name: &'a Name) -> Self {
        let mut labels: [&'a [u8]; 128] = [&[]; 128];
        let mut len = 0;
        // A wire name has at most 127 labels; anything beyond would be dropped, not overflow.
        for (slot, label) in labels.iter_mut().zip(name.iter()) {
            *slot = label;
            len += 1;
        }
        Self { labels, len }
    }

    fn iter(&self) -> impl Iterator<Item = &'a [u8]> + Clone + '_ {
        self.labels[..self.len].iter().rev().copied()
    }
}

/// The EDE extra text: which list blocked the name (a category's name, or the own list).
fn ede_text(snapshot: &PolicySnapshot, verdict: Verdict) -> &str {
    match verdict {
        Verdict::Block { by } => crate::fast::ede_text(snapshot, by.list),
        Verdict::Allow | Verdict::Allowed { .. } => "",
    }
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let started = Instant::now();
        let protocol = request.protocol();
        let proto = if protocol == Protocol::Udp {
            Proto::Udp
        } else if protocol == Protocol::Tcp {
            Proto::Tcp
        } else {
            Proto::Other
        };
        let qtype = request
            .queries
            .queries()
            .first()
            .map_or(QtypeClass::Other, |q| QtypeClass::of(q.query_type()));
        let (outcome, info) = match self.rate_limit(request, proto) {
            RateDecision::Pass => self.answer(request, response_handle, proto).await,
            RateDecision::Slip => {
                self.metrics.record_rate_limited(true);
                (
                    Outcome::Dropped,
                    send_truncated(response_handle, request).await,
                )
            }
            RateDecision::Drop => {
                self.metrics.record_rate_limited(false);
                (Outcome::Dropped, no_reply(request))
            }
        };
        self.metrics
            .record_query(proto, qtype, outcome, started.elapsed().as_secs_f64());
        info
    }
}

impl DnsHandler {
    /// The response-rate limiter's word on a UDP query hickory-server received.
    fn rate_limit(&self, request: &Request, proto: Proto) -> RateDecision {
        if proto != Proto::Udp {
            return RateDecision::Pass;
        }
        let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        match self.udp_rrl.lock() {
            Ok(mut rrl) => rrl.check(request.src().ip(), now_ms),
            // A panic elsewhere while holding it: answer rather than go silent.
            Err(_) => RateDecision::Pass,
        }
    }
}

impl DnsHandler {
    /// What [`RequestHandler::handle_request`] does, also telling the outcome (the UDP fast
    /// path caches only `Allowed` answers); for the fast path's hand-overs and our TCP server.
    pub(crate) async fn handle_counted<R: ResponseHandler>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> Outcome {
        let started = Instant::now();
        let qtype = request
            .queries
            .queries()
            .first()
            .map_or(QtypeClass::Other, |q| QtypeClass::of(q.query_type()));
        let proto = if request.protocol() == Protocol::Tcp {
            Proto::Tcp
        } else {
            Proto::Udp
        };
        let (outcome, _) = self.answer(request, response_handle, proto).await;
        self.metrics
            .record_query(proto, qtype, outcome, started.elapsed().as_secs_f64());
        outcome
    }
}

/// A [`DnsHandler`] shared between hickory-server (TCP, and UDP without the fast path) and
/// the fast path's hand-over tasks.
#[derive(Debug, Clone)]
pub(crate) struct SharedHandler(pub(crate) Arc<DnsHandler>);

#[async_trait::async_trait]
impl RequestHandler for SharedHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        self.0
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

/// The info hickory gets when we deliberately send nothing (it only logs it).
fn no_reply(request: &Request) -> ResponseInfo {
    ResponseInfo::from(Header {
        metadata: Metadata::response_from_request(&request.metadata),
        counts: HeaderCounts::default(),
    })
}

/// The empty TC=1 answer of a slipped, rate-limited query (the client may retry over TCP).
async fn send_truncated<R: ResponseHandler>(mut handle: R, request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.recursion_available = true;
    metadata.truncation = true;
    let response = MessageResponseBuilder::new(&request.queries, None).build(
        metadata,
        std::iter::empty(),
        std::iter::empty(),
        std::iter::empty(),
        std::iter::empty(),
    );
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(_) => no_reply(request),
    }
}

async fn send_rcode<R: ResponseHandler>(
    handle: R,
    request: &Request,
    rcode: ResponseCode,
) -> ResponseInfo {
    let edns = request.edns.as_ref().map(answer::response_edns);
    send(handle, request, edns.as_ref(), rcode, &[], &[], &[]).await
}

async fn send<R: ResponseHandler>(
    mut handle: R,
    request: &Request,
    edns: Option<&Edns>,
    rcode: ResponseCode,
    answers: &[Record],
    authorities: &[Record],
    additionals: &[Record],
) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.recursion_available = true;
    metadata.authoritative = false;
    metadata.response_code = rcode;
    let response = MessageResponseBuilder::new(&request.queries, edns).build(
        metadata,
        answers.iter(),
        authorities.iter(),
        std::iter::empty(),
        additionals.iter(),
    );
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(error) => {
            tracing::debug!(%error, src = %request.src(), "cannot send the answer");
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        }
    }
}
