//! Queries per second of the cluster DNS server: an in-process server over a view of 2,000
//! services (1,000 headless with 3 endpoints each), asked over loopback UDP by concurrent
//! clients, each waiting for its answer before the next question (bounded in count and time).
//!
//! `cargo bench -p nodeless-dns --bench dns_bench` (optionally `-- <queries> <clients>`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nodeless_dns::hickory_server::proto::op::{Message, Query};
use nodeless_dns::hickory_server::proto::rr::{Name, RecordType};
use nodeless_dns::{ClusterView, DnsConfig, DnsServer, SharedView};
use tokio::net::UdpSocket;

const SERVICES: usize = 1000;
const MAX_TIME_PER_SCENARIO: Duration = Duration::from_secs(20);

fn view() -> SharedView {
    let view = ClusterView::shared();
    let mut guard = view.write().unwrap();
    for i in 0..SERVICES {
        let service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("web-{i}"), "namespace": "bench"},
            "spec": {"clusterIP": format!("10.96.{}.{}", i / 250, i % 250 + 1),
                     "ports": [{"name": "http", "port": 80}]}
        }))
        .unwrap();
        guard.upsert_service(&service);
        let headless = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("db-{i}"), "namespace": "bench"},
            "spec": {"clusterIP": "None", "ports": [{"name": "db", "port": 5432}]}
        }))
        .unwrap();
        guard.upsert_service(&headless);
        let endpoints: Vec<_> = (0..3)
            .map(|e| {
                serde_json::json!({"addresses": [format!("10.1.{}.{}", i / 80, (i % 80) * 3 + e + 1)],
                                   "hostname": format!("db-{i}-{e}")})
            })
            .collect();
        let slice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("db-{i}-abcde"), "namespace": "bench",
                         "labels": {"kubernetes.io/service-name": format!("db-{i}")}},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": "db", "port": 5432, "protocol": "TCP"}]
        }))
        .unwrap();
        guard.upsert_slice(&slice);
    }
    drop(guard);
    view
}

fn encode(name: &str, rtype: RecordType, id: u16) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = id;
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    message.to_vec().unwrap()
}

struct Figures {
    answered: usize,
    lost: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

async fn client(
    server: SocketAddr,
    names: Vec<String>,
    rtype: RecordType,
    queries: usize,
    id: u16,
    deadline: Instant,
) -> Figures {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server).await.unwrap();
    let encoded: Vec<Vec<u8>> = names.iter().map(|n| encode(n, rtype, id)).collect();
    let mut buffer = vec![0u8; 4096];
    let mut figures = Figures {
        answered: 0,
        lost: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::with_capacity(queries),
    };
    let started = Instant::now();
    for i in 0..queries {
        if Instant::now() > deadline {
            break;
        }
        let sent = Instant::now();
        socket.send(&encoded[i % encoded.len()]).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buffer)).await {
            Ok(Ok(len)) if len > 12 => {
                figures.answered += 1;
                figures.latencies.push(sent.elapsed());
            }
            _ => figures.lost += 1,
        }
    }
    figures.elapsed = started.elapsed();
    figures
}

async fn scenario(
    server: SocketAddr,
    label: &str,
    names: Vec<String>,
    rtype: RecordType,
    queries: usize,
    clients: usize,
) {
    let deadline = Instant::now() + MAX_TIME_PER_SCENARIO;
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            tokio::spawn(client(
                server,
                names.clone(),
                rtype,
                queries / clients,
                c as u16,
                deadline,
            ))
        })
        .collect();
    let mut answered = 0;
    let mut lost = 0;
    let mut latencies = Vec::new();
    for task in tasks {
        let figures = task.await.unwrap();
        answered += figures.answered;
        lost += figures.lost;
        latencies.extend(figures.latencies);
        let _ = figures.elapsed;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "{label:<28} {answered:>7} answers in {:>6.2} s = {:>8.0} q/s  p50 {:>6.0} µs  p99 {:>6.0} µs  lost {lost}",
        elapsed.as_secs_f64(),
        answered as f64 / elapsed.as_secs_f64(),
        percentile(0.50).as_secs_f64() * 1e6,
        percentile(0.99).as_secs_f64() * 1e6,
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let queries: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let clients: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(16);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut config = DnsConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
        config.upstream = Vec::new();
        let server = DnsServer::start_with_view(config, view()).await.unwrap();
        let address = server.local_addrs()[0];
        println!(
            "cluster DNS bench: {} services, {queries} queries per scenario, {clients} clients, {} cores",
            2 * SERVICES,
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        );
        let names = |f: &dyn Fn(usize) -> String| (0..SERVICES).map(f).collect::<Vec<_>>();
        scenario(
            address,
            "A (ClusterIP service)",
            names(&|i| format!("web-{i}.bench.svc.cluster.local.")),
            RecordType::A,
            queries,
            clients,
        )
        .await;
        scenario(
            address,
            "A (headless, 3 endpoints)",
            names(&|i| format!("db-{i}.bench.svc.cluster.local.")),
            RecordType::A,
            queries,
            clients,
        )
        .await;
        scenario(
            address,
            "SRV (headless, 3 endpoints)",
            names(&|i| format!("_db._tcp.db-{i}.bench.svc.cluster.local.")),
            RecordType::SRV,
            queries,
            clients,
        )
        .await;
        scenario(
            address,
            "A (pod record)",
            names(&|i| format!("10-1-{}-{}.bench.pod.cluster.local.", i / 250, i % 250)),
            RecordType::A,
            queries,
            clients,
        )
        .await;
        scenario(
            address,
            "NXDOMAIN (search path miss)",
            names(&|i| format!("web-{i}.svc.cluster.local.")),
            RecordType::A,
            queries,
            clients,
        )
        .await;
        server.shutdown().await.unwrap();
    });
}
