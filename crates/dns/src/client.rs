//! A small stub client: one question to one server, over UDP with a TCP retry when the answer
//! is truncated. The forwarder uses it for upstream resolvers; tests and the benchmark use it
//! to ask the cluster DNS server.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_server::proto::op::{Edns, Message, Query};
use hickory_server::proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::DnsError;

/// The UDP payload size advertised to upstream servers (the DNS flag day 2020 value).
pub const EDNS_PAYLOAD: u16 = 1232;

/// The transport of one exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// UDP, retried over TCP when the answer comes back truncated.
    Udp,
    /// TCP only.
    Tcp,
}

/// Asks `server` for `name`/`rtype` (recursion desired) and returns its answer.
pub async fn query(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    transport: Transport,
    timeout: Duration,
) -> Result<Message, DnsError> {
    let name = Name::from_ascii(name)
        .map_err(|e| DnsError::InvalidDomain(name.to_string(), e.to_string()))?;
    exchange(server, Query::query(name, rtype), transport, timeout).await
}

/// Sends one query to `server` and waits at most `timeout` (per transport) for its answer.
pub async fn exchange(
    server: SocketAddr,
    query: Query,
    transport: Transport,
    timeout: Duration,
) -> Result<Message, DnsError> {
    let mut request = Message::query();
    request.metadata.id = rand::random();
    request.metadata.recursion_desired = true;
    request.add_query(query);
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    request.set_edns(edns);
    let bytes = request
        .to_vec()
        .map_err(|e| DnsError::Protocol(e.to_string()))?;
    if transport == Transport::Udp {
        let answer = tokio::time::timeout(timeout, exchange_udp(server, &request, &bytes))
            .await
            .map_err(|_| DnsError::Timeout(server))??;
        if !answer.metadata.truncation {
            return Ok(answer);
        }
    }
    tokio::time::timeout(timeout, exchange_tcp(server, &request, &bytes))
        .await
        .map_err(|_| DnsError::Timeout(server))?
}

async fn exchange_udp(
    server: SocketAddr,
    request: &Message,
    bytes: &[u8],
) -> Result<Message, DnsError> {
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let io = |e| DnsError::Upstream(server, e);
    let socket = UdpSocket::bind(local).await.map_err(io)?;
    socket.connect(server).await.map_err(io)?;
    socket.send(bytes).await.map_err(io)?;
    let mut buffer = vec![0u8; 65535];
    loop {
        let len = socket.recv(&mut buffer).await.map_err(io)?;
        // Anything that is not the answer to this question is ignored (spoofing, stragglers).
        if let Ok(answer) = Message::from_vec(&buffer[..len]) {
            if answers(request, &answer) {
                return Ok(answer);
            }
        }
    }
}

async fn exchange_tcp(
    server: SocketAddr,
    request: &Message,
    bytes: &[u8],
) -> Result<Message, DnsError> {
    let io = |e| DnsError::Upstream(server, e);
    let length = u16::try_from(bytes.len())
        .map_err(|_| DnsError::Protocol("query too long for TCP".to_string()))?;
    let mut stream = TcpStream::connect(server).await.map_err(io)?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await.map_err(io)?;
    loop {
        let length = stream.read_u16().await.map_err(io)?;
        let mut buffer = vec![0u8; usize::from(length)];
        stream.read_exact(&mut buffer).await.map_err(io)?;
        let answer = Message::from_vec(&buffer).map_err(|e| DnsError::Protocol(e.to_string()))?;
        if answers(request, &answer) {
            return Ok(answer);
        }
    }
}

/// Whether `answer` is the response to `request` (same id, same question).
fn answers(request: &Message, answer: &Message) -> bool {
    answer.metadata.id == request.metadata.id
        && answer.metadata.message_type == hickory_server::proto::op::MessageType::Response
        && answer.queries.len() == request.queries.len()
        && answer.queries.iter().zip(&request.queries).all(|(a, q)| {
            a.query_type() == q.query_type()
                && a.query_class() == q.query_class()
                && a.name() == q.name()
        })
}
