//! The data path: a TCP listener or UDP socket forwarding to a [`Backend`]'s endpoints.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tracing::{debug, warn};

use crate::endpoints::Backend;

/// How long an upstream TCP connect may take before the next endpoint is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How many endpoints one accepted connection tries before it is closed.
const CONNECT_ATTEMPTS: usize = 3;
/// The largest UDP datagram.
const MAX_DATAGRAM: usize = 65_535;

/// Binds a TCP listener for a service address (with `SO_REUSEADDR`, so that an address
/// whose listener just went can be bound again at once).
pub fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Accepts connections forever, forwarding each to an endpoint of `backend`. A connection
/// that finds no endpoint is reset. Connections outlive the listener (they are tasks of
/// their own), so dropping this future closes the port but leaves them alone.
pub async fn serve_tcp(listener: TcpListener, backend: Arc<Backend>) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let backend = backend.clone();
        tokio::spawn(async move { forward_tcp(client, peer, &backend).await });
    }
}

async fn forward_tcp(mut client: TcpStream, peer: SocketAddr, backend: &Backend) {
    let _ = client.set_nodelay(true);
    let mut failed = Vec::new();
    let mut upstream = None;
    while failed.len() < CONNECT_ATTEMPTS {
        let Some(endpoint) = backend.pick_excluding(peer.ip(), Instant::now(), &failed) else {
            break;
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(endpoint)).await {
            Ok(Ok(stream)) => {
                upstream = Some(stream);
                break;
            }
            Ok(Err(error)) => debug!(%endpoint, %error, "endpoint refused a connection"),
            Err(_) => debug!(%endpoint, "endpoint connect timed out"),
        }
        failed.push(endpoint);
    }
    let Some(mut upstream) = upstream else {
        debug!(%peer, "no endpoint for connection; resetting");
        let _ = client.set_zero_linger();
        return;
    };
    let _ = upstream.set_nodelay(true);
    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        debug!(%peer, %error, "forwarded connection ended with an error");
    }
}

/// One UDP client's upstream socket.
struct UdpSession {
    upstream: Arc<UdpSocket>,
    /// The endpoint the upstream socket is connected to.
    endpoint: SocketAddr,
    /// Milliseconds since `epoch` of the last datagram either way.
    last_seen: Arc<AtomicU64>,
}

/// Serves a UDP service socket forever: per client address a connected upstream socket to
/// an endpoint of `backend`, closed after `idle_timeout` without traffic; replies go back
/// from `socket` (so from the service address).
pub async fn serve_udp(socket: UdpSocket, backend: Arc<Backend>, idle_timeout: Duration) {
    let socket = Arc::new(socket);
    let sessions: Arc<Mutex<HashMap<SocketAddr, UdpSession>>> = Arc::default();
    let epoch = Instant::now();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // The sessions' reply relays end with this future (they hold the service socket).
    let mut relays = tokio::task::JoinSet::new();
    loop {
        while relays.try_join_next().is_some() {}
        let (len, client) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(error) => {
                debug!(%error, "UDP receive failed");
                continue;
            }
        };
        let now_ms = epoch.elapsed().as_millis() as u64;
        let existing = {
            let mut sessions = sessions.lock().unwrap_or_else(|e| e.into_inner());
            // A session whose endpoint went away is dropped, so the client moves on (as
            // upstream flushes the conntrack entries of stale UDP endpoints).
            if sessions
                .get(&client)
                .is_some_and(|s| !backend.has_endpoint(s.endpoint))
            {
                sessions.remove(&client);
            }
            sessions.get(&client).map(|s| {
                s.last_seen.store(now_ms, Ordering::Relaxed);
                s.upstream.clone()
            })
        };
        let upstream = match existing {
            Some(upstream) => upstream,
            None => {
                let Some(endpoint) = backend.pick(client.ip(), Instant::now()) else {
                    debug!(%client, "no endpoint for UDP datagram; dropped");
                    continue;
                };
                let upstream = match open_upstream(endpoint).await {
                    Ok(upstream) => Arc::new(upstream),
                    Err(error) => {
                        warn!(%endpoint, %error, "UDP upstream socket failed");
                        continue;
                    }
                };
                let last_seen = Arc::new(AtomicU64::new(now_ms));
                sessions.lock().unwrap_or_else(|e| e.into_inner()).insert(
                    client,
                    UdpSession {
                        upstream: upstream.clone(),
                        endpoint,
                        last_seen: last_seen.clone(),
                    },
                );
                relays.spawn(relay_replies(
                    socket.clone(),
                    upstream.clone(),
                    client,
                    sessions.clone(),
                    last_seen,
                    epoch,
                    idle_timeout,
                ));
                upstream
            }
        };
        if let Err(error) = upstream.send(&buf[..len]).await {
            debug!(%client, %error, "UDP forward failed");
        }
    }
}

async fn open_upstream(endpoint: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = if endpoint.is_ipv4() {
        "0.0.0.0:0".parse().map_err(std::io::Error::other)?
    } else {
        "[::]:0".parse().map_err(std::io::Error::other)?
    };
    let upstream = UdpSocket::bind(local).await?;
    upstream.connect(endpoint).await?;
    Ok(upstream)
}

/// Sends an upstream socket's datagrams back to its client until it has been idle for
/// `idle_timeout`, then forgets the session.
async fn relay_replies(
    service: Arc<UdpSocket>,
    upstream: Arc<UdpSocket>,
    client: SocketAddr,
    sessions: Arc<Mutex<HashMap<SocketAddr, UdpSession>>>,
    last_seen: Arc<AtomicU64>,
    epoch: Instant,
    idle_timeout: Duration,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let idle_for = Duration::from_millis(
            (epoch.elapsed().as_millis() as u64).saturating_sub(last_seen.load(Ordering::Relaxed)),
        );
        let Some(wait) = idle_timeout.checked_sub(idle_for).filter(|w| !w.is_zero()) else {
            break;
        };
        match tokio::time::timeout(wait, upstream.recv(&mut buf)).await {
            Ok(Ok(len)) => {
                last_seen.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                if let Err(error) = service.send_to(&buf[..len], client).await {
                    debug!(%client, %error, "UDP reply failed");
                }
            }
            // ICMP errors (the endpoint is gone) surface here; the session stays until idle.
            Ok(Err(error)) => {
                debug!(%client, %error, "UDP upstream receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => {}
        }
    }
    let mut sessions = sessions.lock().unwrap_or_else(|e| e.into_inner());
    if sessions
        .get(&client)
        .is_some_and(|s| Arc::ptr_eq(&s.upstream, &upstream))
    {
        sessions.remove(&client);
    }
    debug!(%client, "UDP session idle; closed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server(tag: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let _ = s.write_all(format!("{tag}:").as_bytes()).await;
                    let _ = s.write_all(&buf[..n]).await;
                });
            }
        });
        addr
    }

    async fn request(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"hi").await.unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        out
    }

    #[tokio::test]
    async fn tcp_forwards_round_robin_and_resets_without_endpoints() {
        let a = echo_server("a").await;
        let b = echo_server("b").await;
        let backend = Arc::new(Backend::new(vec![a, b], None));
        let listener = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let front = listener.local_addr().unwrap();
        tokio::spawn(serve_tcp(listener, backend.clone()));
        let mut got = vec![request(front).await, request(front).await];
        got.sort();
        assert_eq!(got, vec!["a:hi".to_string(), "b:hi".to_string()]);
        backend.update(Vec::new(), None);
        assert_eq!(request(front).await, "");
    }

    #[tokio::test]
    async fn tcp_skips_an_endpoint_that_refuses() {
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let live = echo_server("live").await;
        let backend = Arc::new(Backend::new(vec![dead, live], None));
        let listener = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let front = listener.local_addr().unwrap();
        tokio::spawn(serve_tcp(listener, backend));
        for _ in 0..3 {
            assert_eq!(request(front).await, "live:hi");
        }
    }

    #[tokio::test]
    async fn udp_replies_come_from_the_service_socket_and_sessions_expire() {
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let seen = peers.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 100];
            loop {
                let (n, from) = upstream.recv_from(&mut buf).await.unwrap();
                seen.lock().unwrap().push(from);
                let mut reply = b"re:".to_vec();
                reply.extend_from_slice(&buf[..n]);
                upstream.send_to(&reply, from).await.unwrap();
            }
        });
        let backend = Arc::new(Backend::new(vec![upstream_addr], None));
        let service = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let service_addr = service.local_addr().unwrap();
        tokio::spawn(serve_udp(service, backend, Duration::from_millis(300)));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buf = [0u8; 100];
        for msg in [&b"one"[..], b"two"] {
            client.send_to(msg, service_addr).await.unwrap();
            let (n, from) =
                tokio::time::timeout(Duration::from_secs(2), client.recv_from(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
            assert_eq!(from, service_addr);
            assert_eq!(&buf[..3], b"re:");
            assert_eq!(&buf[3..n], msg);
        }
        {
            let peers = peers.lock().unwrap();
            assert_eq!(peers.len(), 2);
            assert_eq!(peers[0], peers[1], "one upstream socket per client");
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        client.send_to(b"three", service_addr).await.unwrap();
        tokio::time::timeout(Duration::from_secs(2), client.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let peers = peers.lock().unwrap();
        assert_ne!(
            peers[2], peers[0],
            "an idle session is replaced by a new socket"
        );
    }

    async fn udp_tagged(tag: &'static str) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 100];
            while let Ok((_, from)) = socket.recv_from(&mut buf).await {
                let _ = socket.send_to(tag.as_bytes(), from).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn udp_session_moves_when_its_endpoint_goes() {
        let a = udp_tagged("a").await;
        let b = udp_tagged("b").await;
        let backend = Arc::new(Backend::new(vec![a], None));
        let service = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let service_addr = service.local_addr().unwrap();
        tokio::spawn(serve_udp(service, backend.clone(), Duration::from_secs(30)));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buf = [0u8; 100];
        let mut ask = async || {
            client.send_to(b"x", service_addr).await.unwrap();
            let (n, _) = tokio::time::timeout(Duration::from_secs(2), client.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        assert_eq!(ask().await, "a");
        backend.update(vec![a, b], None);
        assert_eq!(
            ask().await,
            "a",
            "the session stays while its endpoint is there"
        );
        backend.update(vec![b], None);
        assert_eq!(ask().await, "b");
    }
}
