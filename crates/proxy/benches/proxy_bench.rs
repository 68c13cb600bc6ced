//! The service proxy's data path against direct traffic, in one run on loopback: small HTTP
//! requests to a local backend, one request per connection and many requests over a
//! persistent connection, each straight to the backend and through a proxy listener
//! (`forward::serve_tcp`). Prints requests/s and p50/p99 latency of both and the ratios.
//!
//! `cargo bench -p nodeless-proxy --bench proxy_bench`; `PROXY_BENCH_REQUESTS` (per case,
//! default 4000) and `PROXY_BENCH_WORKERS` (concurrent clients, default 4) change the load.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodeless_proxy::endpoints::Backend;
use nodeless_proxy::forward::{bind_tcp, serve_tcp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
/// Every request of a case must finish within this, or the bench stops.
const CASE_LIMIT: Duration = Duration::from_secs(120);

/// A minimal HTTP/1.1 server: one fixed response per request, keep-alive.
async fn backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("backend addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut filled = 0;
                loop {
                    let Ok(n) = stream.read(&mut buf[filled..]).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    filled += n;
                    while let Some(end) = find_end(&buf[..filled]) {
                        if stream.write_all(RESPONSE).await.is_err() {
                            return;
                        }
                        buf.copy_within(end..filled, 0);
                        filled -= end;
                    }
                    if filled == buf.len() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn find_end(data: &[u8]) -> Option<usize> {
    data.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
}

/// Sends one request on `stream` and reads the fixed-size response.
async fn request(stream: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<()> {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        .await?;
    stream.read_exact(&mut buf[..RESPONSE.len()]).await?;
    Ok(())
}

/// The result of one case: throughput and latency percentiles.
struct Figures {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

/// Runs `requests` requests against `target` over `workers` concurrent clients, a new
/// connection per request or one persistent connection per worker.
async fn run_case(
    target: SocketAddr,
    requests: usize,
    workers: usize,
    persistent: bool,
) -> Figures {
    let per_worker = requests / workers;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_worker);
            let mut buf = vec![0u8; 256];
            let mut conn = None;
            for _ in 0..per_worker {
                let t = Instant::now();
                if persistent {
                    if conn.is_none() {
                        let s = TcpStream::connect(target).await.expect("connect");
                        s.set_nodelay(true).expect("nodelay");
                        conn = Some(s);
                    }
                    if let Some(s) = conn.as_mut() {
                        request(s, &mut buf).await.expect("request");
                    }
                } else {
                    let mut s = TcpStream::connect(target).await.expect("connect");
                    s.set_nodelay(true).expect("nodelay");
                    request(&mut s, &mut buf).await.expect("request");
                }
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::with_capacity(requests);
    for task in tasks {
        let latencies = tokio::time::timeout(CASE_LIMIT, task)
            .await
            .expect("case within its time limit")
            .expect("worker");
        all.extend(latencies);
    }
    let elapsed = started.elapsed();
    all.sort();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Figures {
        per_second: all.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let requests = env_usize("PROXY_BENCH_REQUESTS", 4000);
    let workers = env_usize("PROXY_BENCH_WORKERS", 4);
    let direct = backend().await;
    let listener = bind_tcp("127.0.0.1:0".parse().expect("addr")).expect("bind proxy");
    let proxied = listener.local_addr().expect("proxy addr");
    tokio::spawn(serve_tcp(
        listener,
        Arc::new(Backend::new(vec![direct], None)),
    ));

    println!(
        "proxy_bench: {requests} HTTP requests per case, {workers} concurrent clients, loopback"
    );
    for (label, persistent) in [
        ("new connection per request", false),
        ("persistent connection", true),
    ] {
        // Warm up both paths.
        run_case(direct, 200, workers, persistent).await;
        run_case(proxied, 200, workers, persistent).await;
        let d = run_case(direct, requests, workers, persistent).await;
        let p = run_case(proxied, requests, workers, persistent).await;
        println!("{label}:");
        println!(
            "  direct:  {:>9.0} req/s  p50 {:>7.1} us  p99 {:>7.1} us",
            d.per_second,
            micros(d.p50),
            micros(d.p99)
        );
        println!(
            "  proxied: {:>9.0} req/s  p50 {:>7.1} us  p99 {:>7.1} us",
            p.per_second,
            micros(p.p50),
            micros(p.p99)
        );
        println!(
            "  ratio proxied/direct: throughput {:.2}, p99 latency {:.2}",
            p.per_second / d.per_second,
            micros(p.p99) / micros(d.p99)
        );
    }
}
