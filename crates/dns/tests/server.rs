//! The DNS server over real sockets, with a static view and a fake upstream (no API server).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodeless_dns::client::{query, Transport};
use nodeless_dns::hickory_server::net::runtime::TokioRuntimeProvider;
use nodeless_dns::hickory_server::proto::op::ResponseCode;
use nodeless_dns::hickory_server::proto::rr::rdata::{A, SOA};
use nodeless_dns::hickory_server::proto::rr::{Name, RData, Record, RecordType};
use nodeless_dns::hickory_server::store::in_memory::InMemoryZoneHandler;
use nodeless_dns::hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use nodeless_dns::{ClusterView, DnsConfig, DnsServer, SharedView};

const TIMEOUT: Duration = Duration::from_secs(3);

/// A free loopback port, bound for UDP and TCP (retried when TCP's half is taken).
async fn udp_and_tcp() -> (SocketAddr, tokio::net::UdpSocket, tokio::net::TcpListener) {
    for _ in 0..20 {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = udp.local_addr().unwrap();
        if let Ok(tcp) = tokio::net::TcpListener::bind(address).await {
            return (address, udp, tcp);
        }
    }
    panic!("no free port for UDP and TCP");
}

/// A hickory server on loopback, authoritative for `example.test`: `example.test` A 192.0.2.1
/// and `big.example.test` with 150 A records (too big for UDP).
async fn fake_upstream() -> (SocketAddr, nodeless_dns::hickory_server::Server<Catalog>) {
    let origin = Name::from_ascii("example.test.").unwrap();
    let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
        origin.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
    );
    let soa = SOA::new(
        Name::from_ascii("ns.example.test.").unwrap(),
        Name::from_ascii("admin.example.test.").unwrap(),
        1,
        3600,
        600,
        86400,
        60,
    );
    zone.upsert_mut(Record::from_rdata(origin.clone(), 60, RData::SOA(soa)), 1);
    zone.upsert_mut(
        Record::from_rdata(origin.clone(), 60, RData::A(A(Ipv4Addr::new(192, 0, 2, 1)))),
        1,
    );
    let big = Name::from_ascii("big.example.test.").unwrap();
    for i in 0..150u8 {
        zone.upsert_mut(
            Record::from_rdata(big.clone(), 60, RData::A(A(Ipv4Addr::new(192, 0, 3, i)))),
            1,
        );
    }
    let mut catalog = Catalog::new();
    catalog.upsert(origin.into(), vec![Arc::new(zone)]);
    let (address, udp, tcp) = udp_and_tcp().await;
    let mut server = nodeless_dns::hickory_server::Server::new(catalog);
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 16);
    (address, server)
}

fn view() -> SharedView {
    let view = ClusterView::shared();
    let service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]}
    }))
    .unwrap();
    view.write().unwrap().upsert_service(&service);
    let alias = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "www", "namespace": "shop"},
        "spec": {"type": "ExternalName", "externalName": "web.shop.svc.cluster.local"}
    }))
    .unwrap();
    view.write().unwrap().upsert_service(&alias);
    view
}

async fn start(upstream: Vec<SocketAddr>) -> DnsServer {
    let mut config = DnsConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
    config.upstream = upstream;
    config.upstream_timeout = Duration::from_millis(500);
    DnsServer::start_with_view(config, view()).await.unwrap()
}

fn addresses(records: &[Record]) -> Vec<IpAddr> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn cluster_names_over_udp_and_tcp() {
    let server = start(Vec::new()).await;
    let address = server.local_addrs()[0];
    for transport in [Transport::Udp, Transport::Tcp] {
        // Case does not matter.
        let answer = query(
            address,
            "WEB.shop.svc.Cluster.Local.",
            RecordType::A,
            transport,
            TIMEOUT,
        )
        .await
        .unwrap();
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert!(answer.metadata.authoritative);
        assert_eq!(
            addresses(&answer.answers),
            vec![IpAddr::from([10, 96, 0, 10])]
        );

        let answer = query(
            address,
            "nope.shop.svc.cluster.local.",
            RecordType::A,
            transport,
            TIMEOUT,
        )
        .await
        .unwrap();
        assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(answer.authorities.len(), 1);
        assert_eq!(answer.authorities[0].record_type(), RecordType::SOA);
    }
    let answer = query(
        address,
        "_http._tcp.web.shop.svc.cluster.local.",
        RecordType::SRV,
        Transport::Udp,
        TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(answer.answers.len(), 1);
    assert_eq!(
        addresses(&answer.additionals),
        vec![IpAddr::from([10, 96, 0, 10])]
    );

    // An ExternalName alias of a cluster name is chased in the view.
    let answer = query(
        address,
        "www.shop.svc.cluster.local.",
        RecordType::A,
        Transport::Udp,
        TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(answer.answers[0].record_type(), RecordType::CNAME);
    assert_eq!(
        addresses(&answer.answers),
        vec![IpAddr::from([10, 96, 0, 10])]
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn other_names_are_forwarded_with_tcp_fallback() {
    let (upstream, mut upstream_server) = fake_upstream().await;
    let server = start(vec![upstream]).await;
    let address = server.local_addrs()[0];
    let answer = query(
        address,
        "example.test.",
        RecordType::A,
        Transport::Udp,
        TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(!answer.metadata.authoritative);
    assert!(answer.metadata.recursion_available);
    assert_eq!(
        addresses(&answer.answers),
        vec![IpAddr::from([192, 0, 2, 1])]
    );

    // The upstream's NXDOMAIN (and its SOA) is relayed.
    let answer = query(
        address,
        "missing.example.test.",
        RecordType::A,
        Transport::Udp,
        TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(answer.authorities[0].record_type(), RecordType::SOA);

    // 150 records do not fit in UDP: the server fetched them over TCP, the client retries too.
    let answer = query(
        address,
        "big.example.test.",
        RecordType::A,
        Transport::Udp,
        TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(addresses(&answer.answers).len(), 150);

    // With the upstream gone, answers are served from the cache while their TTL lasts.
    upstream_server.shutdown_gracefully().await.unwrap();
    let answer = query(
        address,
        "example.test.",
        RecordType::A,
        Transport::Udp,
        TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(
        addresses(&answer.answers),
        vec![IpAddr::from([192, 0, 2, 1])]
    );
    let answer = query(
        address,
        "other.example.test.",
        RecordType::A,
        Transport::Udp,
        TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn dead_or_missing_upstreams_give_servfail_quickly() {
    // A port nobody listens on (bound then released), and a black hole that never answers.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_address = silent.local_addr().unwrap();
    for upstream in [vec![], vec![dead], vec![silent_address]] {
        let server = start(upstream.clone()).await;
        let started = Instant::now();
        let answer = query(
            server.local_addrs()[0],
            "example.test.",
            RecordType::A,
            Transport::Udp,
            TIMEOUT,
        )
        .await
        .unwrap();
        assert_eq!(
            answer.metadata.response_code,
            ResponseCode::ServFail,
            "{upstream:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    drop(silent);
}

#[tokio::test]
async fn the_next_upstream_answers_when_the_first_is_dead() {
    let (upstream, _upstream_server) = fake_upstream().await;
    let dead = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server = start(vec![dead, upstream]).await;
    let answer = query(
        server.local_addrs()[0],
        "example.test.",
        RecordType::A,
        Transport::Udp,
        TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(
        addresses(&answer.answers),
        vec![IpAddr::from([192, 0, 2, 1])]
    );
}
