//! Throughput and latency figures of the store backends (plain `main`, no criterion).
//!
//! Run with `cargo bench -p nodeless-store --bench store_bench`. Every figure is measured on
//! SQLite and, when an etcd binary is available (`ETCD_BIN`, `etcd` on `PATH` or
//! `/usr/bin/etcd`), on a single-member etcd that the benchmark starts on loopback ports; the
//! last table gives the ratios etcd/SQLite. Data lives in `STORE_BENCH_DIR` if set, else in
//! Cargo's target temporary directory (a real disk, so the figures include fsync).

#[path = "../tests/support/etcd_server.rs"]
mod etcd_server;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use nodeless_store::{
    EtcdOptions, EtcdStore, RangeRequest, SqliteStore, Store, WatchEvent, WatchOptions,
};

/// One measured figure: a rate (ops/s) or a latency percentile (ms).
struct Figure {
    name: String,
    value: f64,
    unit: &'static str,
}

#[derive(Default)]
struct Figures(Vec<Figure>);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

impl Figures {
    fn latency(&mut self, name: &str, mut samples: Vec<Duration>) {
        samples.sort();
        for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
            let value = percentile(&samples, p).as_secs_f64() * 1e3;
            println!(
                "  {name:<44} {label} {value:>9.3} ms   ({} samples)",
                samples.len()
            );
            self.0.push(Figure {
                name: format!("{name} {label}"),
                value,
                unit: "ms",
            });
        }
    }

    fn rate(&mut self, name: &str, operations: usize, elapsed: Duration) {
        let value = operations as f64 / elapsed.as_secs_f64();
        println!(
            "  {name:<44} {value:>10.0} ops/s   ({operations} in {:.2} s)",
            elapsed.as_secs_f64()
        );
        self.0.push(Figure {
            name: name.to_owned(),
            value,
            unit: "ops/s",
        });
    }
}

async fn run<S: Store>(store: Arc<S>) -> Figures {
    let mut figures = Figures::default();
    let value = vec![b'x'; 1024];

    // Sequential creates: one fsync per write.
    const SEQUENTIAL: usize = 2_000;
    let start = Instant::now();
    for i in 0..SEQUENTIAL {
        store
            .create(&format!("/seq/{i:08}"), value.clone())
            .await
            .unwrap();
    }
    figures.rate(
        "create, sequential (1 KiB values)",
        SEQUENTIAL,
        start.elapsed(),
    );

    // 16 concurrent writers: group commit (SQLite) / raft batching (etcd).
    const WRITERS: usize = 16;
    const PER_WRITER: usize = 2_000;
    let start = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = Arc::clone(&store);
            let value = value.clone();
            tokio::spawn(async move {
                for i in 0..PER_WRITER {
                    store
                        .create(&format!("/conc/{writer:02}/{i:08}"), value.clone())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    figures.rate(
        "create, 16 concurrent writers",
        WRITERS * PER_WRITER,
        start.elapsed(),
    );

    // Gets of existing keys.
    const GETS: usize = 20_000;
    let start = Instant::now();
    for i in 0..GETS {
        let key = format!("/seq/{:08}", (i * 7919) % SEQUENTIAL);
        assert!(store.get(&key, None).await.unwrap().is_some());
    }
    figures.rate("get, sequential", GETS, start.elapsed());
    let start = Instant::now();
    let tasks: Vec<_> = (0..16)
        .map(|reader| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in 0..GETS / 16 {
                    let key = format!("/seq/{:08}", (i * 7919 + reader) % SEQUENTIAL);
                    assert!(store.get(&key, None).await.unwrap().is_some());
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    figures.rate("get, 16 concurrent readers", GETS, start.elapsed());

    // Range of 1000 keys (the first 1000 of a 2000-key prefix, with count).
    for (name, prefix) in [
        ("range 1000 of 2000 keys (limit, count)", "/seq/"),
        ("range 1000 keys of a 32000-key store", "/conc/03/"),
    ] {
        let mut samples = Vec::new();
        for _ in 0..100 {
            let start = Instant::now();
            let result = store
                .range(RangeRequest {
                    prefix,
                    limit: Some(1000),
                    ..RangeRequest::default()
                })
                .await
                .unwrap();
            samples.push(start.elapsed());
            assert_eq!(result.kvs.len(), 1000);
        }
        figures.latency(name, samples);
    }

    // Write-to-watch-event latency: from calling create to the watcher receiving the event.
    let mut watch = store
        .watch(
            "/lat/",
            store.current_revision().await.unwrap(),
            WatchOptions::default(),
        )
        .await
        .unwrap();
    const WATCHED: usize = 1_000;
    let receiver = tokio::spawn(async move {
        let mut arrivals = HashMap::new();
        while arrivals.len() < WATCHED {
            match watch.next().await {
                Some(Ok(WatchEvent::Put { kv, .. })) => {
                    arrivals.insert(kv.mod_revision, Instant::now());
                }
                other => panic!("unexpected watch item {other:?}"),
            }
        }
        arrivals
    });
    let mut issued = Vec::new();
    let mut acknowledged = Vec::new();
    for i in 0..WATCHED {
        let start = Instant::now();
        let kv = store
            .create(&format!("/lat/{i:08}"), value.clone())
            .await
            .unwrap();
        acknowledged.push(start.elapsed());
        issued.push((kv.mod_revision, start));
    }
    let arrivals = receiver.await.unwrap();
    let latencies = issued
        .iter()
        .map(|(revision, start)| arrivals[revision].duration_since(*start))
        .collect();
    figures.latency("create acknowledged (sequential)", acknowledged);
    figures.latency("create issued -> watch event", latencies);
    figures
}

#[tokio::main]
async fn main() {
    let base =
        std::env::var("STORE_BENCH_DIR").unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").to_owned());
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();

    println!("SQLite:");
    let sqlite = Arc::new(SqliteStore::open(dir.path().join("bench.db")).unwrap());
    let sqlite_figures = run(sqlite).await;

    if etcd_server::etcd_binary().is_none() {
        println!("etcd: no etcd binary, skipped (install etcd-server or set ETCD_BIN)");
        return;
    }
    let server = etcd_server::EtcdServer::start_in(Some(dir.path()));
    let mut options = EtcdOptions::new(vec![server.endpoint()]);
    options.request_timeout = Duration::from_secs(10);
    let deadline = Instant::now() + Duration::from_secs(20);
    let etcd = loop {
        match EtcdStore::connect(options.clone()).await {
            Ok(store) => break store,
            Err(error) if Instant::now() < deadline => {
                eprintln!("etcd not ready yet: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("cannot connect to etcd: {error}"),
        }
    };
    println!("etcd (one member on loopback, same disk):");
    let etcd_figures = run(Arc::new(etcd)).await;

    println!("etcd / SQLite (rates: > 1 means etcd is faster; latencies: > 1 means slower):");
    for (sqlite, etcd) in sqlite_figures.0.iter().zip(&etcd_figures.0) {
        println!(
            "  {:<48} {:>10.2} x   (SQLite {:.3} {unit}, etcd {:.3} {unit})",
            sqlite.name,
            etcd.value / sqlite.value,
            sqlite.value,
            etcd.value,
            unit = sqlite.unit
        );
    }
}
