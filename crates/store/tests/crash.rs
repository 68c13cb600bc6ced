//! Every acknowledged write survives SIGKILL of the process that wrote it.
//!
//! The test re-executes its own binary as the writer (selected by an environment variable):
//! the child writes keys from several tasks as fast as it can and prints `ACK <key> <revision>`
//! after each write returned. The parent kills it with SIGKILL after a few hundred
//! acknowledgements, reopens the database and checks every acknowledged key.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use nodeless_store::{SqliteStore, Store};

/// Set to the database path when the binary runs as the crashing writer.
const CHILD_ENV: &str = "NODELESS_STORE_CRASH_WRITER_DB";
const WRITER_TASKS: usize = 8;
const KILL_AFTER_ACKS: usize = 400;

fn value_for(key: &str) -> Vec<u8> {
    format!("value of {key}").into_bytes()
}

/// The child: writes until killed (or, as a safety net, for at most a minute).
#[test]
fn crash_writer_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = Arc::new(SqliteStore::open(&path).unwrap());
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut tasks = Vec::new();
        for task in 0..WRITER_TASKS {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    if tokio::time::Instant::now() > deadline {
                        break;
                    }
                    let key = format!("/crash/{task}/{i:06}");
                    let kv = store.create(&key, value_for(&key)).await.unwrap();
                    let mut stdout = std::io::stdout().lock();
                    writeln!(stdout, "ACK {key} {}", kv.mod_revision).unwrap();
                    stdout.flush().unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_writer_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut acked = BTreeMap::new();
    let mut killed = false;
    for line in stdout.lines() {
        let line = line.unwrap();
        let Some(ack) = line.strip_prefix("ACK ") else {
            continue;
        };
        let (key, revision) = ack.split_once(' ').unwrap();
        acked.insert(key.to_owned(), revision.parse::<i64>().unwrap());
        if !killed && acked.len() >= KILL_AFTER_ACKS {
            child.kill().unwrap(); // SIGKILL
            killed = true;
        }
        // Lines already in the pipe were acknowledged before the kill: keep reading them.
    }
    let status = child.wait().unwrap();
    assert!(killed, "the writer exited on its own: {status:?}");
    assert!(!status.success(), "the writer was not killed: {status:?}");
    assert!(acked.len() >= KILL_AFTER_ACKS);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open(&path).unwrap();
        let max_acked = *acked.values().max().unwrap();
        let current = store.current_revision().await.unwrap();
        assert!(
            current >= max_acked,
            "revision went back: {current} < {max_acked}"
        );
        for (key, revision) in &acked {
            let kv = store
                .get(key, None)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("acknowledged key {key} is lost"));
            assert_eq!(kv.value, value_for(key));
            assert_eq!(kv.mod_revision, *revision);
        }
        // The store still works and the revision continues.
        let next = store.create("/after/crash", b"ok".to_vec()).await.unwrap();
        assert_eq!(next.mod_revision, current + 1);
        let range = store
            .range(nodeless_store::RangeRequest {
                prefix: "/crash/",
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(range.count as usize >= acked.len());
        eprintln!(
            "{} acknowledged, {} committed before SIGKILL",
            acked.len(),
            range.count
        );
    });
}
