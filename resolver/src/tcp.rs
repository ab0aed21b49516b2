//! DNS over TCP with the limits a public resolver needs (RELIABILITY T6; RFC 7766, RFC 9210):
//! a cap on connections in all and per source address, an idle timeout that a slow sender
//! cannot stretch (each message must arrive whole within it), a cap on queries per
//! connection, and pipelining (queries are read while earlier ones are answered, and answers
//! go out as they are ready). hickory-server's own TCP listener has none of the caps (it
//! accepted 300 idle connections in the probe of RELIABILITY.md), so the resolver runs this
//! one and hands each message to the same [`DnsHandler`] as the UDP hand-over.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_net::xfer::Protocol;
use hickory_net::NetError;
use hickory_proto::rr::Record;
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::handler::DnsHandler;
use crate::metrics::DnsMetrics;

/// Answers of one connection waiting to be written.
const WRITE_QUEUE: usize = 32;
/// Queries of one connection being answered at once (pipelining).
const IN_FLIGHT_PER_CONNECTION: usize = 16;

/// The limits (from `[dns]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpLimits {
    /// Connections open at once, in all.
    pub(crate) max_connections: usize,
    /// Connections open at once from one source address.
    pub(crate) max_per_ip: usize,
    /// A connection must deliver each whole message within this time, or is closed.
    pub(crate) idle_timeout: Duration,
    /// Queries one connection may send before it is closed (after their answers).
    pub(crate) max_queries: usize,
}

impl TcpLimits {
    /// The limits `dns` asks for.
    pub(crate) fn from_config(dns: &qorgan_config::DnsConfig) -> Self {
        Self {
            max_connections: dns.tcp_max_connections,
            max_per_ip: dns.tcp_max_per_ip,
            idle_timeout: Duration::from_secs(dns.tcp_idle_timeout_secs),
            max_queries: dns.tcp_max_queries_per_connection,
        }
    }
}

/// Open connections per source address.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

impl PerIp {
    fn enter(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            map: self.clone(),
            ip,
        })
    }
}

/// One connection's place in [`PerIp`], given back on drop.
struct IpSlot {
    map: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self
            .map
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Accepts connections on `listener` until `shutdown`.
pub(crate) async fn serve(
    listener: TcpListener,
    handler: Arc<DnsHandler>,
    limits: TcpLimits,
    metrics: Arc<DnsMetrics>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_ip = Arc::new(PerIp::default());
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(error) => {
                    tracing::debug!(%error, "TCP accept failed");
                    // Out of file descriptors or similar: do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        while connections.try_join_next().is_some() {}
        let Ok(global) = slots.clone().try_acquire_owned() else {
            metrics.record_tcp_refused();
            drop(stream);
            continue;
        };
        let Some(ip_slot) = per_ip.enter(peer.ip(), limits.max_per_ip.max(1)) else {
            metrics.record_tcp_refused();
            drop(stream);
            continue;
        };
        let (handler, metrics, stop) = (handler.clone(), metrics.clone(), shutdown.clone());
        connections.spawn(async move {
            let _slots = (global, ip_slot);
            metrics.tcp_connection_opened();
            connection(stream, peer, handler, limits, stop).await;
            metrics.tcp_connection_closed();
        });
    }
    connections.shutdown().await;
}

/// Reads one length-prefixed message; `None` at end of stream, on a short length (under a
/// header) or on any read error.
async fn read_message(stream: &mut tokio::net::tcp::OwnedReadHalf) -> Option<Vec<u8>> {
    let len = stream.read_u16().await.ok()?;
    if len < 12 {
        return None;
    }
    let mut message = vec![0u8; usize::from(len)];
    stream.read_exact(&mut message).await.ok()?;
    Some(message)
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    handler: Arc<DnsHandler>,
    limits: TcpLimits,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let (answers, mut queued) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    let write = tokio::spawn(async move {
        while let Some(answer) = queued.recv().await {
            let Ok(len) = u16::try_from(answer.len()) else {
                continue;
            };
            let mut framed = Vec::with_capacity(answer.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&answer);
            if writer.write_all(&framed).await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    });
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_PER_CONNECTION));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..limits.max_queries.max(1) {
        let message = tokio::select! {
            r = tokio::time::timeout(limits.idle_timeout, read_message(&mut reader)) => r,
            () = shutdown.cancelled() => break,
        };
        let Ok(Some(message)) = message else {
            // Idle too long (or too slow), closed, or a length prefix that cannot be DNS.
            break;
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let (handler, answers) = (handler.clone(), answers.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let Ok(request) = Request::from_bytes(message.clone(), peer, Protocol::Tcp) else {
                let mut header = [0u8; 12];
                if crate::fast::formerr(&message, &mut header).is_some() {
                    let _ = answers.send(header.to_vec()).await;
                }
                return;
            };
            let responder = TcpResponder { answers };
            handler.handle_counted(&request, responder).await;
        });
        while tasks.try_join_next().is_some() {}
    }
    // Answer what was asked before closing (bounded by the handler's own timeouts).
    while tasks.join_next().await.is_some() {}
    drop(answers);
    let _ = write.await;
}

/// Queues hickory's answer for the connection's writer.
#[derive(Clone)]
struct TcpResponder {
    answers: mpsc::Sender<Vec<u8>>,
}

#[async_trait::async_trait]
impl ResponseHandler for TcpResponder {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let (bytes, info) = crate::answer::encode_response(response, u16::MAX)?;
        // A closed connection just loses its answer.
        let _ = self.answers.send(bytes).await;
        Ok(info)
    }
}
