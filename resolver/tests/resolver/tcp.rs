//! DNS over TCP under abuse (RELIABILITY D6; RFC 7766): connection caps, slow senders and bad
//! length prefixes closed within the idle timeout, pipelined queries all answered.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

fn framed(q: &[u8]) -> Vec<u8> {
    let mut f = (q.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(q);
    f
}

/// Reads one framed answer; `None` when the server closed the connection (or 5 s passed).
async fn answer(s: &mut TcpStream) -> Option<Vec<u8>> {
    let read = async {
        let len = s.read_u16().await.ok()?;
        let mut m = vec![0u8; usize::from(len)];
        s.read_exact(&mut m).await.ok()?;
        Some(m)
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .ok()
        .flatten()
}

/// Waits until the server closes `s`; returns how long that took.
async fn closed_after(s: &mut TcpStream, max: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(max, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn tcp_caps_timeouts_and_pipelining_hold() {
    let r = Resolver::start(Setup {
        dns: |dns| {
            dns.tcp_idle_timeout_secs = 2;
            dns.tcp_max_connections = 40;
            dns.tcp_max_per_ip = 20;
        },
        ..Setup::default()
    })
    .await;
    let query = query_bytes("x.mine.test", false);

    // (e) Pipelining: ten queries in one write, ten answers.
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    let mut burst = Vec::new();
    for i in 0..10u16 {
        let mut q = query.clone();
        q[..2].copy_from_slice(&i.to_be_bytes());
        burst.extend(framed(&q));
    }
    s.write_all(&burst).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..10 {
        let a = answer(&mut s).await.expect("pipelined answer");
        ids.push(u16::from_be_bytes([a[0], a[1]]));
        assert_eq!(a[3] & 0x0f, 3, "NXDOMAIN");
    }
    ids.sort_unstable();
    assert_eq!(ids, (0..10).collect::<Vec<u16>>());

    // (a) More idle connections from one address than allowed: the extra ones are closed at
    // once, and the server still answers.
    let mut idle = Vec::new();
    for _ in 0..30 {
        idle.push(TcpStream::connect(r.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut refused = 0;
    for c in &mut idle {
        let mut b = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(50), c.read(&mut b)).await {
            refused += 1;
        }
    }
    // 20 per address, one of them the pipelining connection still open.
    assert!(refused >= 10, "{refused} of 30 idle connections refused");
    assert!(r.metric("qorgan_dns_tcp_refused_total", &[]) >= 10.0);
    drop(idle);
    drop(s);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // (b) A slow sender (one byte at a time) is closed within the idle timeout + 1 s.
    let mut slow = TcpStream::connect(r.addr).await.unwrap();
    let bytes = framed(&query);
    let drip = async {
        for b in &bytes {
            if slow.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    };
    let started = Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(4), drip).await;
    let t = closed_after(&mut slow, Duration::from_secs(4)).await;
    let total = started.elapsed();
    assert!(
        t.is_some() && total <= Duration::from_secs(3) + Duration::from_millis(1500),
        "slowloris closed after {total:?}"
    );

    // (c) Length prefixes: shorter than a header → closed at once; longer than what follows →
    // closed at the idle timeout.
    let mut short = TcpStream::connect(r.addr).await.unwrap();
    short.write_all(&[0, 5, 1, 2, 3, 4, 5]).await.unwrap();
    let t = closed_after(&mut short, Duration::from_secs(2)).await;
    assert!(
        t.is_some_and(|t| t < Duration::from_secs(1)),
        "short prefix: {t:?}"
    );
    let mut long = TcpStream::connect(r.addr).await.unwrap();
    long.write_all(&[4, 0, 1, 2, 3]).await.unwrap();
    let t = closed_after(&mut long, Duration::from_secs(4)).await;
    assert!(
        t.is_some_and(|t| t <= Duration::from_secs(3)),
        "long prefix: {t:?}"
    );

    // (d) Garbage of header size, then a valid query on the same connection: answered.
    let mut g = TcpStream::connect(r.addr).await.unwrap();
    let mut garbage = vec![0xAB; 20];
    garbage[2] = 0x01;
    g.write_all(&framed(&garbage)).await.unwrap();
    g.write_all(&framed(&query)).await.unwrap();
    let mut got_nx = false;
    for _ in 0..2 {
        if let Some(a) = answer(&mut g).await {
            got_nx |= a[..2] == query[..2] && a[3] & 0x0f == 3;
        }
    }
    assert!(got_nx, "the valid query after garbage is answered");
    drop(g);

    // Every connection is given back.
    let gone = eventually(5, || async {
        r.metric("qorgan_dns_tcp_connections", &[]) == 0.0
    })
    .await;
    assert!(
        gone,
        "open TCP connections: {}",
        r.metric("qorgan_dns_tcp_connections", &[])
    );
    eprintln!("D6: pipelining 10/10, {refused}/30 over-cap refused, slowloris closed in {total:?}, bad prefixes closed, garbage then query answered");
}
