//! Bound DNS sockets, handed to [`crate::run`] so that the caller (and tests) choose the ports.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, UdpSocket};

use crate::ResolverError;

/// How often a port-0 address retries when the kernel's UDP port is taken for TCP.
const PORT_ZERO_ATTEMPTS: usize = 32;

/// One UDP socket and one TCP listener per configured address, bound on the same port.
///
/// Binding happens before [`crate::run`], so a bad address fails before anything starts, and a
/// test can bind `127.0.0.1:0` and learn the port from [`DnsListeners::local_addrs`].
#[derive(Debug)]
pub struct DnsListeners {
    pub(crate) pairs: Vec<(UdpSocket, TcpListener)>,
}

impl DnsListeners {
    /// Binds UDP and TCP on every address. Port 0 picks a free port that is free for both
    /// protocols (UDP first, then TCP on the same port, retrying when TCP's port is taken).
    pub fn bind(addrs: &[SocketAddr]) -> Result<Self, ResolverError> {
        let mut pairs = Vec::with_capacity(addrs.len());
        for &addr in addrs {
            pairs.push(bind_pair(addr)?);
        }
        Ok(Self { pairs })
    }

    /// The addresses actually bound (UDP and TCP share each one), in the order given to `bind`.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.pairs
            .iter()
            .filter_map(|(udp, _)| udp.local_addr().ok())
            .collect()
    }
}

/// A UDP socket with `SO_REUSEPORT` (where the platform has it), so that the UDP fast path can
/// add one socket per worker on the same port. Only sockets of the same user join the group.
fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        None,
    )?;
    #[cfg(all(unix, not(target_os = "solaris"), not(target_os = "illumos")))]
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), ResolverError> {
    let attempts = if addr.port() == 0 {
        PORT_ZERO_ATTEMPTS
    } else {
        1
    };
    let mut last_error = None;
    for _ in 0..attempts {
        let udp = bind_udp(addr).map_err(|source| ResolverError::Bind {
            protocol: "udp",
            addr,
            source,
        })?;
        let bound = udp.local_addr().map_err(|source| ResolverError::Bind {
            protocol: "udp",
            addr,
            source,
        })?;
        match TcpListener::bind(bound) {
            Ok(tcp) => {
                for (protocol, result) in [
                    ("udp", udp.set_nonblocking(true)),
                    ("tcp", tcp.set_nonblocking(true)),
                ] {
                    result.map_err(|source| ResolverError::Bind {
                        protocol,
                        addr: bound,
                        source,
                    })?;
                }
                return Ok((udp, tcp));
            }
            // Only a port the kernel chose may be retried; a fixed port is the operator's choice.
            Err(e) if addr.port() == 0 && e.kind() == ErrorKind::AddrInUse => last_error = Some(e),
            Err(source) => {
                return Err(ResolverError::Bind {
                    protocol: "tcp",
                    addr: bound,
                    source,
                })
            }
        }
    }
    Err(ResolverError::Bind {
        protocol: "tcp",
        addr,
        source: last_error.unwrap_or_else(|| ErrorKind::AddrInUse.into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_binds_udp_and_tcp_on_the_same_port() {
        let listeners = DnsListeners::bind(&["127.0.0.1:0".parse().expect("addr")]).expect("bind");
        let (udp, tcp) = &listeners.pairs[0];
        assert_ne!(udp.local_addr().expect("udp").port(), 0);
        assert_eq!(
            udp.local_addr().expect("udp"),
            tcp.local_addr().expect("tcp")
        );
        assert_eq!(
            listeners.local_addrs(),
            vec![udp.local_addr().expect("udp")]
        );
    }

    #[test]
    fn taken_fixed_port_is_an_error_naming_the_address() {
        let first = DnsListeners::bind(&["127.0.0.1:0".parse().expect("addr")]).expect("bind");
        let taken = first.local_addrs()[0];
        let err = DnsListeners::bind(&[taken]).expect_err("port in use");
        assert!(err.to_string().contains(&taken.to_string()), "{err}");
    }

    #[test]
    fn ipv6_loopback_binds_both_protocols_when_the_host_has_it() {
        if UdpSocket::bind("[::1]:0").is_err() {
            eprintln!("skipped: this host has no IPv6 loopback");
            return;
        }
        let listeners = DnsListeners::bind(&["[::1]:0".parse().expect("addr")]).expect("bind");
        let addr = listeners.local_addrs()[0];
        assert!(addr.is_ipv6() && addr.port() != 0);
    }
}
