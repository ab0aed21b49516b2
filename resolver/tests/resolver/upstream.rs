//! A tiny authoritative server on 127.0.0.1:0 that plays the upstream: fixed answers for any
//! name, a few special names, and a count of the queries it received (so tests can tell a cache
//! hit from an upstream exchange).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

/// The address every A question gets.
pub const V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The address every AAAA question gets.
pub const V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// TTL of every upstream record.
pub const TTL: u32 = 60;
/// TTL of `short.test` (to see answers expire within a test).
pub const SHORT_TTL: u32 = 1;
/// `cname.test` is a CNAME to this name (the tests list it as blocked).
pub const CNAME_TARGET: &str = "tracker.blocked.test.";

pub struct Upstream {
    pub addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
    stop: CancellationToken,
}

impl Upstream {
    /// Starts UDP and TCP on the same port of 127.0.0.1.
    pub async fn start() -> Self {
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()).await {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        let queries = Arc::new(AtomicUsize::new(0));
        let failing = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        let (q, s, f) = (queries.clone(), stop.clone(), failing.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (len, peer) = tokio::select! {
                    r = udp.recv_from(&mut buf) => match r { Ok(x) => x, Err(_) => continue },
                    () = s.cancelled() => return,
                };
                q.fetch_add(1, Ordering::SeqCst);
                if let Some(reply) = answer(&buf[..len], true, f.load(Ordering::SeqCst)) {
                    let _ = udp.send_to(&reply, peer).await;
                }
            }
        });
        let (q, s, f) = (queries.clone(), stop.clone(), failing.clone());
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = tokio::select! {
                    r = tcp.accept() => match r { Ok(x) => x, Err(_) => continue },
                    () = s.cancelled() => return,
                };
                let (q, f) = (q.clone(), f.clone());
                tokio::spawn(async move {
                    loop {
                        let Ok(len) = conn.read_u16().await else {
                            return;
                        };
                        let mut msg = vec![0u8; usize::from(len)];
                        if conn.read_exact(&mut msg).await.is_err() {
                            return;
                        }
                        q.fetch_add(1, Ordering::SeqCst);
                        let Some(reply) = answer(&msg, false, f.load(Ordering::SeqCst)) else {
                            return;
                        };
                        let mut framed = u16::try_from(reply.len()).unwrap().to_be_bytes().to_vec();
                        framed.extend_from_slice(&reply);
                        if conn.write_all(&framed).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            queries,
            failing,
            stop,
        }
    }

    /// From now on answer every question SERVFAIL (`true`), or normally again.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Questions received so far (UDP and TCP).
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn soa(zone: &Name) -> Record {
    let soa = SOA::new(
        Name::from_ascii("ns.test.").unwrap(),
        Name::from_ascii("hostmaster.test.").unwrap(),
        1,
        3600,
        600,
        86_400,
        TTL,
    );
    Record::from_rdata(zone.clone(), TTL, RData::SOA(soa))
}

/// The zone's logic (SERVFAIL for everything while `failing`). The question is echoed byte
/// for byte (the resolver uses 0x20 case randomisation and rejects an answer whose question
/// case differs).
fn answer(bytes: &[u8], udp: bool, failing: bool) -> Option<Vec<u8>> {
    let request = Message::from_vec(bytes).ok()?;
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let query = request.queries.first()?.clone();
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.add_query(query.clone());
    let qname = query.name().clone();
    let lower = qname.to_lowercase().to_ascii();
    let test_zone = Name::from_ascii("test.").unwrap();
    match (lower.as_str(), query.query_type()) {
        _ if failing => response.metadata.response_code = ResponseCode::ServFail,
        ("short.test.", RecordType::A) => {
            response.add_answer(Record::from_rdata(qname, SHORT_TTL, RData::A(A(V4))));
        }
        ("nx.test." | "gone.nx-zone.test.", _) => {
            response.metadata.response_code = ResponseCode::NXDomain;
            response.add_authority(soa(&test_zone));
        }
        ("servfail.test.", _) => response.metadata.response_code = ResponseCode::ServFail,
        // A CNAME into a name that does not exist: NXDOMAIN with the chain (RFC 2308 §2).
        ("cname-nx.test.", t) => {
            let target = Name::from_ascii("gone.nx-zone.test.").unwrap();
            response.add_answer(Record::from_rdata(qname, TTL, RData::CNAME(CNAME(target))));
            if t != RecordType::CNAME {
                response.metadata.response_code = ResponseCode::NXDomain;
                response.add_authority(soa(&test_zone));
            }
        }
        // The blocked CNAME of `cname.test`, asked for itself or for a type its target lacks.
        ("cname.test.", t) if t != RecordType::A => {
            let target = Name::from_ascii(CNAME_TARGET).unwrap();
            response.add_answer(Record::from_rdata(qname, TTL, RData::CNAME(CNAME(target))));
            if t != RecordType::CNAME {
                response.add_authority(soa(&test_zone));
            }
        }
        ("cname.test." | "cname-ok.test.", RecordType::A) => {
            let target = if lower == "cname.test." {
                CNAME_TARGET
            } else {
                "www.ok.test."
            };
            let target = Name::from_ascii(target).unwrap();
            response.add_answer(Record::from_rdata(
                qname,
                TTL,
                RData::CNAME(CNAME(target.clone())),
            ));
            response.add_answer(Record::from_rdata(target, TTL, RData::A(A(V4))));
        }
        (_, RecordType::A) => {
            response.add_answer(Record::from_rdata(qname, TTL, RData::A(A(V4))));
        }
        (_, RecordType::AAAA) => {
            response.add_answer(Record::from_rdata(qname, TTL, RData::AAAA(AAAA(V6))));
        }
        (_, RecordType::MX) => {
            let exchange = Name::from_ascii("mail.test.").unwrap();
            response.add_answer(Record::from_rdata(
                qname,
                TTL,
                RData::MX(MX::new(10, exchange)),
            ));
        }
        ("big.test.", RecordType::TXT) => {
            // ~40 strings of 100 bytes: far above 1232 bytes, so UDP answers must be truncated.
            for i in 0..40 {
                let text = format!("{i:03}{}", "x".repeat(97));
                response.add_answer(Record::from_rdata(
                    qname.clone(),
                    TTL,
                    RData::TXT(TXT::new(vec![text])),
                ));
            }
        }
        _ => {
            response.add_authority(soa(&test_zone));
        }
    }
    let bytes = response.to_vec().ok()?;
    if udp && bytes.len() > usize::from(request.max_payload()) {
        // Too big for the requester's buffer: TC=1, and it retries over TCP.
        return response.truncate().to_vec().ok();
    }
    Some(bytes)
}
