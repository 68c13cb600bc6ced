//! Throughput and latency figures of the SQLite store (plain `main`, no criterion).
//!
//! Run with `cargo bench -p nodeless-store --bench store_bench`. The database lives in
//! `STORE_BENCH_DIR` if set, else in Cargo's target temporary directory (a real disk, so the
//! figures include fsync).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use nodeless_store::{RangeRequest, SqliteStore, Store, WatchEvent, WatchOptions};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<40} p50 {:>9.3} ms   p99 {:>9.3} ms   ({} samples)",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.len()
    );
}

fn rate(name: &str, operations: usize, elapsed: Duration) {
    println!(
        "{name:<40} {:>10.0} ops/s   ({operations} in {:.2} s)",
        operations as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let base =
        std::env::var("STORE_BENCH_DIR").unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").to_owned());
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("bench.db")).unwrap());
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
    rate(
        "create, sequential (1 KiB values)",
        SEQUENTIAL,
        start.elapsed(),
    );

    // 16 concurrent writers: group commit.
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
    rate(
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
    rate("get, sequential", GETS, start.elapsed());
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
    rate("get, 16 concurrent readers", GETS, start.elapsed());

    // Range of 1000 keys (the first 1000 of a 2000-key prefix, with count).
    let mut samples = Vec::new();
    for _ in 0..100 {
        let start = Instant::now();
        let result = store
            .range(RangeRequest {
                prefix: "/seq/",
                limit: Some(1000),
                ..RangeRequest::default()
            })
            .await
            .unwrap();
        samples.push(start.elapsed());
        assert_eq!(result.kvs.len(), 1000);
    }
    report("range 1000 of 2000 keys (limit, count)", samples);
    let mut samples = Vec::new();
    for _ in 0..100 {
        let start = Instant::now();
        let result = store
            .range(RangeRequest {
                prefix: "/conc/03/",
                limit: Some(1000),
                ..RangeRequest::default()
            })
            .await
            .unwrap();
        samples.push(start.elapsed());
        assert_eq!(result.kvs.len(), 1000);
    }
    report("range 1000 keys of a 32000-key store", samples);

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
    report("create acknowledged (sequential)", acknowledged);
    report("create issued -> watch event", latencies);
}
