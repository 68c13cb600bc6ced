//! End-to-end: the cluster DNS server (nodeless-dns) watching a real API server: service,
//! endpoint, SRV and pod records, NXDOMAIN, forwarding to a (fake) upstream, SERVFAIL when the
//! upstream is dead, and records that follow changes made through the API.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Cluster;
use nodeless_dns::client::{query, Transport};
use nodeless_dns::hickory_server::net::runtime::TokioRuntimeProvider;
use nodeless_dns::hickory_server::proto::op::{Message, ResponseCode};
use nodeless_dns::hickory_server::proto::rr::rdata::{A, SOA};
use nodeless_dns::hickory_server::proto::rr::{Name, RData, Record, RecordType};
use nodeless_dns::hickory_server::store::in_memory::InMemoryZoneHandler;
use nodeless_dns::hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use nodeless_dns::{DnsConfig, DnsServer};

const TIMEOUT: Duration = Duration::from_secs(3);

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.50
  ports: [{name: http, port: 80, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: search, namespace: shop}
spec: {type: ExternalName, externalName: example.test}
"#;

/// A headless service (no selector) with a hand-made EndpointSlice, as a StatefulSet has.
const LEDGER: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: ledger, namespace: shop}
spec:
  clusterIP: None
  ports: [{name: db, port: 5432, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ledger-abcde
  namespace: shop
  labels: {kubernetes.io/service-name: ledger}
addressType: IPv4
endpoints:
- addresses: [10.1.0.5]
  hostname: ledger-0
  conditions: {ready: true}
- addresses: [10.1.0.6]
  hostname: ledger-1
  conditions: {ready: true}
- addresses: [10.1.0.7]
  hostname: ledger-2
  conditions: {ready: false}
ports: [{name: db, port: 5432, protocol: TCP}]
"#;

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

/// A hickory server on loopback, authoritative for `example.test` (A 192.0.2.1).
async fn fake_upstream() -> (SocketAddr, nodeless_dns::hickory_server::Server<Catalog>) {
    let origin = Name::from_ascii("example.test.").unwrap();
    let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
        origin.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
    );
    let ns = Name::from_ascii("ns.example.test.").unwrap();
    let admin = Name::from_ascii("admin.example.test.").unwrap();
    let soa = SOA::new(ns, admin, 1, 3600, 600, 86400, 60);
    zone.upsert_mut(Record::from_rdata(origin.clone(), 60, RData::SOA(soa)), 1);
    let address = A(Ipv4Addr::new(192, 0, 2, 1));
    zone.upsert_mut(Record::from_rdata(origin.clone(), 60, RData::A(address)), 1);
    let mut catalog = Catalog::new();
    catalog.upsert(origin.into(), vec![Arc::new(zone)]);
    let (local, udp, tcp) = udp_and_tcp().await;
    let mut server = nodeless_dns::hickory_server::Server::new(catalog);
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 16);
    (local, server)
}

async fn start_dns(client: kube::Client, upstream: Vec<SocketAddr>) -> DnsServer {
    let mut config = DnsConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
    config.upstream = upstream;
    config.upstream_timeout = Duration::from_millis(500);
    DnsServer::start(config, client).await.unwrap()
}

async fn ask(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    query(server, name, rtype, Transport::Udp, TIMEOUT)
        .await
        .unwrap()
}

fn addresses(records: &[Record]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|ip| ip.parse().unwrap()).collect()
}

/// Asks until `check` accepts the answer (the watchers deliver changes asynchronously).
async fn until(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    what: &str,
    check: impl Fn(&Message) -> bool,
) -> Message {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = ask(server, name, rtype).await;
        if check(&answer) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_dns_answers_from_the_api() {
    let c = Cluster::start();
    c.ok_stdin(&["apply", "-f", "-"], MANIFESTS);
    let client = c.kube_client().await;
    let (upstream, _upstream_server) = fake_upstream().await;
    let dns = start_dns(client.clone(), vec![upstream]).await;
    let server = dns.local_addrs()[0];

    // Listed before the server started: answered right away.
    let answer = ask(server, "web.shop.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&answer.answers), ips(&["10.96.0.50"]));
    assert_eq!(answer.answers[0].ttl, 5);

    let answer = ask(
        server,
        "_http._tcp.web.shop.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    let RData::SRV(srv) = &answer.answers[0].data else {
        panic!("not an SRV: {answer:?}");
    };
    assert_eq!(srv.port, 80);
    assert_eq!(srv.target.to_string(), "web.shop.svc.cluster.local.");
    assert_eq!(addresses(&answer.additionals), ips(&["10.96.0.50"]));

    // Created while the server runs: the watchers bring it.
    c.ok_stdin(&["apply", "-f", "-"], LEDGER);
    let answer = until(
        server,
        "ledger.shop.svc.cluster.local.",
        RecordType::A,
        "the headless service's endpoints",
        |m| m.metadata.response_code == ResponseCode::NoError,
    )
    .await;
    assert_eq!(
        addresses(&answer.answers),
        ips(&["10.1.0.5", "10.1.0.6"]),
        "ready endpoints only"
    );
    let answer = ask(
        server,
        "ledger-0.ledger.shop.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(addresses(&answer.answers), ips(&["10.1.0.5"]));
    let answer = ask(
        server,
        "ledger-2.ledger.shop.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);

    let answer = ask(
        server,
        "_db._tcp.ledger.shop.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    let mut targets: Vec<String> = answer
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::SRV(srv) => format!("{}:{}", srv.target, srv.port),
            other => panic!("not an SRV: {other:?}"),
        })
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        vec![
            "ledger-0.ledger.shop.svc.cluster.local.:5432",
            "ledger-1.ledger.shop.svc.cluster.local.:5432",
        ]
    );
    assert_eq!(
        addresses(&answer.additionals),
        ips(&["10.1.0.5", "10.1.0.6"])
    );

    // Pod records (insecure, as upstream's default).
    let answer = ask(server, "10-1-0-9.shop.pod.cluster.local.", RecordType::A).await;
    assert_eq!(addresses(&answer.answers), ips(&["10.1.0.9"]));

    // Unknown in the cluster domain: NXDOMAIN with the zone's SOA; known name, other type: NODATA.
    let answer = ask(server, "nope.shop.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(answer.authorities[0].record_type(), RecordType::SOA);
    let answer = ask(server, "web.shop.svc.cluster.local.", RecordType::TXT).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.answers.is_empty());

    // PTR of a cluster IP.
    let answer = ask(server, "50.0.96.10.in-addr.arpa.", RecordType::PTR).await;
    let RData::PTR(ptr) = &answer.answers[0].data else {
        panic!("not a PTR: {answer:?}");
    };
    assert_eq!(ptr.0.to_string(), "web.shop.svc.cluster.local.");

    // Outside the cluster domain: forwarded.
    let answer = ask(server, "example.test.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&answer.answers), ips(&["192.0.2.1"]));

    // ExternalName: the CNAME, with its target chased upstream.
    let answer = ask(server, "search.shop.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answer.answers[0].record_type(), RecordType::CNAME);
    assert_eq!(addresses(&answer.answers), ips(&["192.0.2.1"]));

    // Changes through the API follow: a deleted service disappears, a changed IP moves.
    c.ok(&["delete", "service", "web", "-n", "shop"]);
    until(
        server,
        "web.shop.svc.cluster.local.",
        RecordType::A,
        "the deleted service to disappear",
        |m| m.metadata.response_code == ResponseCode::NXDomain,
    )
    .await;
    c.ok(&["delete", "endpointslice", "ledger-abcde", "-n", "shop"]);
    until(
        server,
        "ledger.shop.svc.cluster.local.",
        RecordType::A,
        "the headless service without endpoints",
        |m| m.metadata.response_code == ResponseCode::NXDomain,
    )
    .await;

    // With a dead upstream: SERVFAIL, promptly, while cluster names still resolve.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let isolated = start_dns(client, vec![dead]).await;
    let started = Instant::now();
    let answer = ask(isolated.local_addrs()[0], "example.test.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
    assert!(started.elapsed() < Duration::from_secs(2));
    let answer = ask(
        isolated.local_addrs()[0],
        "ledger.shop.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
    isolated.shutdown().await.unwrap();
    dns.shutdown().await.unwrap();
}
