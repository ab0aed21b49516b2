//! The fast path's sockets and worker threads.
//!
//! Each listen address gets `workers` UDP sockets bound with `SO_REUSEPORT` (the first is the
//! one [`crate::DnsListeners`] bound), each read by its own thread: a dedicated thread blocks in
//! `recvmmsg` for a batch, runs [`FastPath::process`] on each datagram with buffers reused for
//! the whole life of the thread, and sends the answers with one `sendmmsg` (Linux; elsewhere
//! `recv_from`/`send_to`, one datagram at a time). A thread needs no task, no waker and no
//! allocation per packet. Datagrams the fast path hands over become a tokio task running the
//! hickory path ([`DnsHandler`]) — bounded by `dns.max_in_flight`: beyond it they are dropped
//! and counted — which answers through the same socket and fills the worker's packet cache
//! through a channel the worker drains between batches.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_net::xfer::Protocol;
use hickory_net::NetError;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::Record;
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use socket2::{Domain, SockAddr, SockRef, Socket, Type};

use crate::fast::{self, FastOutcome, FastPath, FastPathOptions, FillKey};
use crate::handler::DnsHandler;
use crate::metrics::{DnsMetrics, Outcome, Proto, QtypeClass};
use crate::store::SnapshotStore;
use crate::ResolverError;

/// How long a worker blocks in a receive before it looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);
/// Datagrams per `recvmmsg`/`sendmmsg`.
const BATCH: usize = 32;
/// Receive buffer per datagram: a larger query is truncated by the kernel and dropped.
const RECV_BUF: usize = 4096;
/// Answer buffer per datagram (answers never exceed [`crate::answer::MAX_UDP_PAYLOAD`]).
const SEND_BUF: usize = 1280;

/// A cacheable answer of the hickory path on its way back to the worker's cache.
type Fill = (FillKey, Vec<u8>);

/// Running fast-path workers; [`Workers::stop`] ends them.
#[derive(Debug)]
pub(crate) struct Workers {
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Workers {
    /// Tells every worker to stop and waits until they have (at most one poll interval).
    pub(crate) fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            if thread.join().is_err() {
                tracing::error!("a UDP fast-path worker panicked");
            }
        }
    }
}

/// What every hand-over task of one worker shares.
#[derive(Debug)]
struct SlowContext {
    handler: Arc<DnsHandler>,
    metrics: Arc<DnsMetrics>,
    runtime: tokio::runtime::Handle,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: usize,
    socket: Arc<UdpSocket>,
    fills: Sender<Fill>,
}

/// Everything a worker needs besides its socket.
pub(crate) struct WorkerSetup<'a> {
    pub(crate) dns: &'a qorgan_config::DnsConfig,
    pub(crate) options: FastPathOptions,
    pub(crate) store: SnapshotStore,
    pub(crate) metrics: Arc<DnsMetrics>,
    pub(crate) handler: Arc<DnsHandler>,
    pub(crate) runtime: tokio::runtime::Handle,
}

/// Starts the workers on `sockets` (one per listen address, already bound with
/// `SO_REUSEPORT` by [`crate::DnsListeners`]), adding sockets up to the worker count.
pub(crate) fn start(
    setup: WorkerSetup<'_>,
    sockets: Vec<UdpSocket>,
) -> Result<Workers, ResolverError> {
    let per_addr = setup.options.worker_count().max(1);
    let total = per_addr * sockets.len().max(1);
    let cache_each = setup.options.cache_size / total;
    let stop = Arc::new(AtomicBool::new(false));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::with_capacity(total);
    for first in sockets {
        let addr = first
            .local_addr()
            .map_err(|source| ResolverError::Register {
                protocol: "udp",
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })?;
        let mut group = vec![first];
        for _ in 1..per_addr {
            group.push(reuse_port_socket(addr)?);
        }
        for socket in group {
            prepare(&socket).map_err(|source| ResolverError::Register {
                protocol: "udp",
                addr,
                source,
            })?;
            let socket = Arc::new(socket);
            let (fills, fill_rx) = mpsc::channel();
            let fast = FastPath::new(
                setup.dns,
                setup.store.clone(),
                setup.metrics.clone(),
                cache_each,
            )
            .with_rate_share(setup.dns, per_addr);
            let slow = Arc::new(SlowContext {
                handler: setup.handler.clone(),
                metrics: setup.metrics.clone(),
                runtime: setup.runtime.clone(),
                in_flight: in_flight.clone(),
                max_in_flight: setup.dns.max_in_flight.max(1),
                socket: socket.clone(),
                fills,
            });
            let stop = stop.clone();
            let index = threads.len();
            let coalesce = setup.options.coalesce;
            let thread = std::thread::Builder::new()
                .name(format!("qorgan-udp-{index}"))
                .spawn(move || worker(&socket, fast, &fill_rx, &slow, &stop, coalesce))
                .map_err(|source| ResolverError::Register {
                    protocol: "udp",
                    addr,
                    source,
                })?;
            threads.push(thread);
        }
        tracing::info!(%addr, workers = per_addr, "UDP fast path serving");
    }
    Ok(Workers { threads, stop })
}

/// Another socket on `addr` for the same port group (`SO_REUSEPORT` spreads datagrams across
/// the group by the source's address and port).
fn reuse_port_socket(addr: SocketAddr) -> Result<UdpSocket, ResolverError> {
    let err = |source| ResolverError::Bind {
        protocol: "udp",
        addr,
        source,
    };
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None).map_err(err)?;
    if addr.is_ipv6() {
        // Like std's bind: the kernel default (dual-stack on Linux) for the group's first socket.
        let first_v6only = socket.only_v6().map_err(err)?;
        socket.set_only_v6(first_v6only).map_err(err)?;
    }
    #[cfg(all(unix, not(target_os = "solaris"), not(target_os = "illumos")))]
    socket.set_reuse_port(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    Ok(socket.into())
}

/// Blocking with a receive timeout, so the worker sees the stop flag.
fn prepare(socket: &UdpSocket) -> std::io::Result<()> {
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(STOP_POLL))
}

fn worker(
    socket: &UdpSocket,
    mut fast: FastPath,
    fills: &Receiver<Fill>,
    slow: &Arc<SlowContext>,
    stop: &AtomicBool,
    coalesce: Duration,
) {
    #[cfg(not(target_os = "linux"))]
    let _ = coalesce;
    #[cfg(target_os = "linux")]
    {
        if mmsg::serve(
            socket,
            &mut fast,
            fills,
            slow,
            stop,
            Coalescer::new(coalesce),
        ) {
            return;
        }
        tracing::info!("recvmmsg is not available: one datagram per system call");
    }
    serve_simple(socket, &mut fast, fills, slow, stop);
}

/// How long the rate estimate of a [`Coalescer`] averages over.
const RATE_PERIOD: Duration = Duration::from_millis(10);

/// Interrupt coalescing of one batched worker: from the datagram rate of the last
/// [`RATE_PERIOD`], whether to wait `window` before the next receive. It waits only when at
/// least two datagrams are expected within the window (and the last wake-up did not already
/// fill a batch), so a quiet resolver answers at once and a busy one serves several queries per
/// wake-up and per `recvmmsg`/`sendmmsg` pair.
#[derive(Debug)]
struct Coalescer {
    window: Duration,
    since: std::time::Instant,
    datagrams: u64,
    /// Datagrams per second over the last full period.
    rate: u64,
}

impl Coalescer {
    fn new(window: Duration) -> Self {
        Self {
            window,
            since: std::time::Instant::now(),
            datagrams: 0,
            rate: 0,
        }
    }

    /// Counts one wake-up's `got` datagrams (of at most `batch`); the pause to take now.
    fn after_batch(&mut self, got: usize, batch: usize) -> Option<Duration> {
        if self.window.is_zero() {
            return None;
        }
        self.datagrams += u64::try_from(got).unwrap_or(u64::MAX);
        let elapsed = self.since.elapsed();
        if elapsed >= RATE_PERIOD {
            let micros = u64::try_from(elapsed.as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            self.rate = self.datagrams.saturating_mul(1_000_000) / micros;
            self.datagrams = 0;
            self.since = std::time::Instant::now();
        }
        let window_micros = u64::try_from(self.window.as_micros()).unwrap_or(u64::MAX);
        let expected_x1m = self.rate.saturating_mul(window_micros);
        (got < batch && expected_x1m >= 2_000_000).then_some(self.window)
    }
}

fn drain_fills(fast: &mut FastPath, fills: &Receiver<Fill>) {
    while let Ok((key, answer)) = fills.try_recv() {
        fast.fill(key, &answer);
    }
}

/// The portable loop: one `recv_from` and one `send_to` per datagram.
fn serve_simple(
    socket: &UdpSocket,
    fast: &mut FastPath,
    fills: &Receiver<Fill>,
    slow: &Arc<SlowContext>,
    stop: &AtomicBool,
) {
    let mut buf = vec![0u8; RECV_BUF];
    let mut out = vec![0u8; SEND_BUF];
    while !stop.load(Ordering::Relaxed) {
        let received = socket.recv_from(&mut buf);
        drain_fills(fast, fills);
        let (len, src) = match received {
            Ok(got) => got,
            Err(e) if is_transient(&e) => continue,
            Err(error) => {
                tracing::warn!(%error, "UDP receive failed");
                std::thread::sleep(STOP_POLL);
                continue;
            }
        };
        let Some(query) = buf.get(..len).filter(|_| len < RECV_BUF) else {
            continue;
        };
        match fast.process(src.ip(), query, &mut out) {
            FastOutcome::Drop => {}
            FastOutcome::Reply(n) => {
                if let Err(error) = socket.send_to(&out[..n], src) {
                    tracing::debug!(%error, %src, "cannot send the answer");
                }
            }
            FastOutcome::Slow(key) => hand_over(slow, query, src, key, None),
            FastOutcome::Stale { key, len } => {
                hand_over(slow, query, src, Some(key), out.get(..len))
            }
        }
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::Interrupted
    )
}

/// Runs the hickory path on `query` in a task, unless `dns.max_in_flight` tasks already run
/// (then the datagram is dropped and counted: a flood does not grow the task count, T8).
/// `stale` (an expired cached answer, patched for this query) is sent instead of a SERVFAIL.
fn hand_over(
    slow: &Arc<SlowContext>,
    query: &[u8],
    src: SocketAddr,
    key: Option<FillKey>,
    stale: Option<&[u8]>,
) {
    if slow.in_flight.fetch_add(1, Ordering::AcqRel) >= slow.max_in_flight {
        slow.in_flight.fetch_sub(1, Ordering::AcqRel);
        slow.metrics.record_overload();
        slow.metrics
            .record_query(Proto::Udp, QtypeClass::Other, Outcome::Dropped, 0.0);
        return;
    }
    slow.metrics.record_handover();
    let ctx = slow.clone();
    let bytes = query.to_vec();
    let stale: Option<Arc<[u8]>> = stale.map(Arc::from);
    slow.runtime.spawn(async move {
        let _done = InFlight(&ctx.in_flight);
        let Ok(request) = Request::from_bytes(bytes.clone(), src, Protocol::Udp) else {
            // What hickory-server does with a query whose body does not parse.
            let mut header = [0u8; 12];
            if fast::formerr(&bytes, &mut header).is_some() {
                send_nonblocking(&ctx.socket, &header, src);
                ctx.metrics
                    .record_query(Proto::Udp, QtypeClass::Other, Outcome::Malformed, 0.0);
            }
            return;
        };
        let responder = SocketResponder {
            socket: ctx.socket.clone(),
            dst: src,
            captured: key.map(|_| Arc::new(Mutex::new(None))),
            stale: stale.map(|answer| (answer, ctx.metrics.clone())),
        };
        let outcome = ctx
            .handler
            .handle_counted(&request, responder.clone())
            .await;
        if let (Outcome::Allowed, Some(key), Some(captured)) = (outcome, key, responder.captured) {
            let answer = captured.lock().ok().and_then(|mut c| c.take());
            if let Some(answer) = answer {
                // The worker may be gone at shutdown; then the answer is simply not cached.
                let _ = ctx.fills.send((key, answer));
            }
        }
    });
}

/// Decrements the in-flight count when a hand-over task ends (also when it is cancelled).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn send_nonblocking(socket: &UdpSocket, bytes: &[u8], dst: SocketAddr) {
    #[cfg(unix)]
    let sent =
        SockRef::from(socket).send_to_with_flags(bytes, &SockAddr::from(dst), libc::MSG_DONTWAIT);
    #[cfg(not(unix))]
    let sent = socket.send_to(bytes, dst);
    if let Err(error) = sent {
        tracing::debug!(%error, %dst, "cannot send the answer");
    }
}

/// Sends hickory's answer through the fast path's socket (encoded for UDP: TC=1 above the
/// OPT's payload), keeping a copy when the packet cache may want it.
#[derive(Clone)]
struct SocketResponder {
    socket: Arc<UdpSocket>,
    dst: SocketAddr,
    captured: Option<Arc<Mutex<Option<Vec<u8>>>>>,
    /// An expired cached answer to send instead of a SERVFAIL, and where to count it.
    stale: Option<(Arc<[u8]>, Arc<DnsMetrics>)>,
}

#[async_trait::async_trait]
impl ResponseHandler for SocketResponder {
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
        // hickory's own UDP encoding (`MessageResponse::encode` is crate-private): at most the
        // response OPT's payload (512 without EDNS), TC=1 and fewer records above it.
        let max_size = response.edns().map_or(512, |edns| edns.max_payload());
        let (bytes, info) = crate::answer::encode_response(response, max_size)?;
        if let (ResponseCode::ServFail, Some((stale, metrics))) = (info.response_code, &self.stale)
        {
            send_nonblocking(&self.socket, stale, self.dst);
            metrics.record_stale_answer();
            return Ok(info);
        }
        send_nonblocking(&self.socket, &bytes, self.dst);
        if let Some(captured) = &self.captured {
            if let Ok(mut slot) = captured.lock() {
                *slot = Some(bytes);
            }
        }
        Ok(info)
    }
}

/// `recvmmsg`/`sendmmsg` batching (Linux).
#[cfg(target_os = "linux")]
mod mmsg {
    use std::mem::{size_of, zeroed};
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc::Receiver;
    use std::sync::Arc;

    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

    use super::{drain_fills, hand_over, Coalescer, Fill, SlowContext, BATCH, RECV_BUF, SEND_BUF};
    use crate::fast::{FastOutcome, FastPath};

    /// The source address the kernel wrote (IPv4 or IPv6; anything else is ignored).
    fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
        match libc::c_int::from(storage.ss_family) {
            libc::AF_INET => {
                // SAFETY: ss_family says the storage holds a sockaddr_in (it is large enough
                // and suitably aligned for every socket address type).
                let sin = unsafe { &*std::ptr::from_ref(storage).cast::<libc::sockaddr_in>() };
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                Some(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
            }
            libc::AF_INET6 => {
                // SAFETY: as above, a sockaddr_in6.
                let sin6 = unsafe { &*std::ptr::from_ref(storage).cast::<libc::sockaddr_in6>() };
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// The loop with batched system calls; `false` if the kernel has no `recvmmsg` (then
    /// nothing was received and the caller falls back).
    pub(super) fn serve(
        socket: &UdpSocket,
        fast: &mut FastPath,
        fills: &Receiver<Fill>,
        slow: &Arc<SlowContext>,
        stop: &AtomicBool,
        mut coalescer: Coalescer,
    ) -> bool {
        let fd = socket.as_raw_fd();
        if !coalescer.window.is_zero() {
            // The default 50 µs of timer slack would double a short coalescing pause.
            // SAFETY: PR_SET_TIMERSLACK changes only this thread's timer slack.
            unsafe {
                libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong);
            }
        }
        let mut bufs = vec![[0u8; RECV_BUF]; BATCH].into_boxed_slice();
        let mut outs = vec![[0u8; SEND_BUF]; BATCH].into_boxed_slice();
        // SAFETY: all-zero sockaddr_storage, iovec and mmsghdr are valid (null pointers, 0 lengths).
        let mut names: Box<[libc::sockaddr_storage]> =
            (0..BATCH).map(|_| unsafe { zeroed() }).collect();
        let mut iovs: Box<[libc::iovec]> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
        let mut hdrs: Box<[libc::mmsghdr]> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
        let mut out_iovs: Box<[libc::iovec]> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
        let mut out_hdrs: Box<[libc::mmsghdr]> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
        let name_len = libc::socklen_t::try_from(size_of::<libc::sockaddr_storage>()).unwrap_or(0);
        let batch = libc::c_uint::try_from(BATCH).unwrap_or(1);

        while !stop.load(Ordering::Relaxed) {
            for i in 0..BATCH {
                iovs[i].iov_base = bufs[i].as_mut_ptr().cast();
                iovs[i].iov_len = RECV_BUF;
                let h = &mut hdrs[i].msg_hdr;
                h.msg_name = std::ptr::from_mut(&mut names[i]).cast();
                h.msg_namelen = name_len;
                h.msg_iov = &mut iovs[i];
                h.msg_iovlen = 1;
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
                h.msg_flags = 0;
                hdrs[i].msg_len = 0;
            }
            // SAFETY: every header points at live buffers of the stated sizes, owned by this
            // frame for the duration of the call.
            let got = unsafe {
                libc::recvmmsg(
                    fd,
                    hdrs.as_mut_ptr(),
                    batch,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            // After the wait, not before it: a fill that arrived while the worker slept is
            // in the cache for the datagrams that woke it (a client repeating a question soon
            // after its first answer is served from the cache).
            drain_fills(fast, fills);
            let Ok(got) = usize::try_from(got) else {
                let error = std::io::Error::last_os_error();
                if error.raw_os_error() == Some(libc::ENOSYS) {
                    return false;
                }
                if !super::is_transient(&error) {
                    tracing::warn!(%error, "UDP receive failed");
                    std::thread::sleep(super::STOP_POLL);
                }
                continue;
            };
            let mut replies = 0;
            for i in 0..got.min(BATCH) {
                let len = usize::try_from(hdrs[i].msg_len).unwrap_or(usize::MAX);
                if hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len >= RECV_BUF {
                    continue;
                }
                let Some(src) = socket_addr(&names[i]) else {
                    continue;
                };
                let query = &bufs[i][..len];
                match fast.process(src.ip(), query, &mut outs[replies]) {
                    FastOutcome::Drop => {}
                    FastOutcome::Slow(key) => hand_over(slow, query, src, key, None),
                    FastOutcome::Stale { key, len } => {
                        hand_over(slow, query, src, Some(key), outs[replies].get(..len));
                    }
                    FastOutcome::Reply(n) => {
                        out_iovs[replies].iov_base = outs[replies].as_mut_ptr().cast();
                        out_iovs[replies].iov_len = n;
                        let h = &mut out_hdrs[replies].msg_hdr;
                        h.msg_name = std::ptr::from_mut(&mut names[i]).cast();
                        h.msg_namelen = hdrs[i].msg_hdr.msg_namelen;
                        h.msg_iov = &mut out_iovs[replies];
                        h.msg_iovlen = 1;
                        h.msg_control = std::ptr::null_mut();
                        h.msg_controllen = 0;
                        h.msg_flags = 0;
                        replies += 1;
                    }
                }
            }
            let mut sent = 0;
            while sent < replies {
                let rest = libc::c_uint::try_from(replies - sent).unwrap_or(1);
                // SAFETY: out_hdrs[sent..replies] point at live answer buffers and addresses.
                let n = unsafe {
                    libc::sendmmsg(fd, out_hdrs[sent..].as_mut_ptr(), rest, libc::MSG_DONTWAIT)
                };
                match usize::try_from(n) {
                    Ok(n) if n > 0 => sent += n,
                    _ => {
                        // The first unsent answer failed (e.g. an unreachable source): skip it.
                        let error = std::io::Error::last_os_error();
                        tracing::debug!(%error, "cannot send an answer");
                        sent += 1;
                    }
                }
            }
            if let Some(pause) = coalescer.after_batch(got, BATCH) {
                std::thread::sleep(pause);
            }
        }
        true
    }
}
