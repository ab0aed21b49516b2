//! The kernel's floor under a UDP DNS server: a responder that does no DNS work at all. It
//! answers every datagram with its own bytes, QR set and rcode REFUSED, through the same
//! system calls as the resolver's fast path (`recvmmsg` with `MSG_WAITFORONE` and `sendmmsg`,
//! batches of 32, the same 50 µs coalescing pause when datagrams come faster than one per 25
//! µs). Its CPU per query is what receive, send, wake-ups and the client's socket cost on
//! this machine: no server that uses the kernel's UDP stack can cost less. The side-by-side
//! script measures it beside the real servers (`SERVERS=floor`).
//!
//! Run with:  udp-floor 127.0.0.1:15306 [coalesce_us]      (Linux only; stops on SIGTERM)

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    use std::process::ExitCode;

    let mut args = std::env::args().skip(1);
    let Some(addr) = args.next() else {
        eprintln!("usage: udp-floor ADDR:PORT [coalesce_us]");
        return ExitCode::from(2);
    };
    let coalesce_us = match args.next().map(|s| s.parse::<u64>()) {
        None => 50,
        Some(Ok(us)) => us,
        Some(Err(e)) => {
            eprintln!("coalesce_us: {e}");
            return ExitCode::from(2);
        }
    };
    let socket = match std::net::UdpSocket::bind(&addr) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("binding {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match floor::serve(&socket, std::time::Duration::from_micros(coalesce_us)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udp-floor: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("udp-floor needs Linux (recvmmsg/sendmmsg)");
}

#[cfg(target_os = "linux")]
mod floor {
    use std::mem::{size_of, zeroed};
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    const BATCH: usize = 32;
    const BUF: usize = 4096;

    /// Answers until an unrecoverable receive error.
    pub(crate) fn serve(socket: &UdpSocket, window: Duration) -> std::io::Result<()> {
        let fd = socket.as_raw_fd();
        // SAFETY: PR_SET_TIMERSLACK changes only this thread's timer slack (as the fast path).
        unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong);
        }
        let mut bufs = vec![[0u8; BUF]; BATCH];
        // SAFETY: all-zero sockaddr_storage, iovec and mmsghdr are valid (null pointers, 0 lengths).
        let mut names: Vec<libc::sockaddr_storage> =
            (0..BATCH).map(|_| unsafe { zeroed() }).collect();
        let mut iovs: Vec<libc::iovec> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
        let mut hdrs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
        let name_len = libc::socklen_t::try_from(size_of::<libc::sockaddr_storage>()).unwrap_or(0);
        let (mut since, mut datagrams, mut rate) = (Instant::now(), 0u64, 0u64);
        let window_us = u64::try_from(window.as_micros()).unwrap_or(u64::MAX);
        loop {
            for i in 0..BATCH {
                iovs[i].iov_base = bufs[i].as_mut_ptr().cast();
                iovs[i].iov_len = BUF;
                let h = &mut hdrs[i].msg_hdr;
                h.msg_name = std::ptr::from_mut(&mut names[i]).cast();
                h.msg_namelen = name_len;
                h.msg_iov = &mut iovs[i];
                h.msg_iovlen = 1;
            }
            // SAFETY: every header points at live buffers of the stated sizes.
            let got = unsafe {
                libc::recvmmsg(
                    fd,
                    hdrs.as_mut_ptr(),
                    libc::c_uint::try_from(BATCH).unwrap_or(1),
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            let Ok(got) = usize::try_from(got) else {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            };
            for (i, h) in hdrs.iter_mut().enumerate().take(got) {
                let len = usize::try_from(h.msg_len).unwrap_or(0).min(BUF);
                if len >= 4 {
                    bufs[i][2] |= 0x80;
                    bufs[i][3] = (bufs[i][3] & 0xf0) | 5;
                }
                iovs[i].iov_len = len;
            }
            let mut sent = 0;
            while sent < got {
                let rest = libc::c_uint::try_from(got - sent).unwrap_or(1);
                // SAFETY: hdrs[sent..got] point at the received datagrams and their sources.
                let n = unsafe {
                    libc::sendmmsg(fd, hdrs[sent..].as_mut_ptr(), rest, libc::MSG_DONTWAIT)
                };
                sent += usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(1);
            }
            // The fast path's coalescing rule: pause when two or more datagrams are expected
            // within the window and this wake-up did not fill a batch.
            datagrams += u64::try_from(got).unwrap_or(0);
            let elapsed = since.elapsed();
            if elapsed >= Duration::from_millis(10) {
                let micros = u64::try_from(elapsed.as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1);
                rate = datagrams * 1_000_000 / micros;
                (since, datagrams) = (Instant::now(), 0);
            }
            if window_us > 0 && got < BATCH && rate.saturating_mul(window_us) >= 2_000_000 {
                std::thread::sleep(window);
            }
        }
    }
}
