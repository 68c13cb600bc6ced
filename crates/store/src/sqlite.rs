//! The embedded SQLite backend (kine-like append-only log); see the crate documentation for the
//! table layout, the durability argument and the gap-free watch argument.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use futures::StreamExt;
use rusqlite::{
    params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};
use tokio::sync::{mpsc, oneshot};

use crate::{
    prefix_range_end, KeyValue, RangeRequest, RangeResult, Revision, Store, StoreError, WatchEvent,
    WatchOptions, WatchStream,
};

/// Rows read per watch replay query.
const REPLAY_PAGE: usize = 1000;

/// Tuning knobs of [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Events buffered per watcher before it is cancelled as too slow.
    pub watch_buffer: usize,
    /// Most writes committed together in one transaction (group commit).
    pub max_batch: usize,
    /// Read connections kept open for reuse.
    pub max_idle_readers: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            watch_buffer: 10_000,
            max_batch: 512,
            max_idle_readers: 8,
        }
    }
}

/// A [`Store`] in one SQLite database file (WAL mode, `synchronous=FULL`).
///
/// Writes go to one writer thread that commits queued writes together; reads use a pool of
/// read connections on tokio's blocking threads. Dropping the store waits for the writer thread
/// to finish the writes already queued.
pub struct SqliteStore {
    commands: Option<std_mpsc::Sender<Command>>,
    writer: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

/// State shared by the store, its writer thread and its watch streams.
struct Shared {
    path: PathBuf,
    idle_readers: Mutex<Vec<Connection>>,
    hub: Hub,
    options: SqliteOptions,
}

/// A write queued for the writer thread.
struct Command {
    op: Op,
    reply: oneshot::Sender<Result<Reply, StoreError>>,
}

/// The writes the writer thread performs.
enum Op {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    Compact {
        revision: Revision,
    },
}

/// The writer thread's answer to a [`Command`].
enum Reply {
    Written(KeyValue),
    Deleted(KeyValue, Revision),
    Compacted,
}

fn backend(error: rusqlite::Error) -> StoreError {
    StoreError::Backend(error.to_string())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave their data half-updated in a way that
    // matters (a Vec of connections, the hub's subscriber list), so poisoning is ignored.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn validate_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::InvalidArgument("the key is empty".into()));
    }
    Ok(())
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            BLOB    NOT NULL,
    created         INTEGER NOT NULL,
    deleted         INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision   INTEGER NOT NULL,
    value           BLOB    NOT NULL,
    old_value       BLOB
);
CREATE INDEX IF NOT EXISTS kv_name_id ON kv (name, id, deleted);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

/// The store's current revision and compacted revision as seen by a transaction.
fn revisions(conn: &Connection) -> rusqlite::Result<(Revision, Revision)> {
    conn.prepare_cached(
        "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'kv'), 0),
                COALESCE((SELECT value FROM meta WHERE name = 'compact_revision'), 0)",
    )?
    .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
}

/// The revision a read asked for, checked against the snapshot's current and compacted ones.
fn resolve_revision(
    requested: Option<Revision>,
    current: Revision,
    compacted: Revision,
) -> Result<Revision, StoreError> {
    match requested {
        None => Ok(current),
        Some(revision) if revision > current => Err(StoreError::FutureRevision {
            requested: revision,
            current_revision: current,
        }),
        Some(revision) if revision < compacted => Err(StoreError::Compacted {
            compact_revision: compacted,
            current_revision: current,
        }),
        Some(revision) => Ok(revision),
    }
}

fn key_from_blob(bytes: Vec<u8>) -> rusqlite::Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
    })
}

/// The version of `key` at `revision`, if the key was alive then.
fn get_at(conn: &Connection, key: &str, revision: Revision) -> rusqlite::Result<Option<KeyValue>> {
    let row = conn
        .prepare_cached(
            "SELECT id, deleted, create_revision, value FROM kv
             WHERE name = ?1 AND id <= ?2 ORDER BY id DESC LIMIT 1",
        )?
        .query_row(params![key.as_bytes(), revision], |row| {
            Ok((
                row.get::<_, Revision>(0)?,
                row.get::<_, bool>(1)?,
                row.get::<_, Revision>(2)?,
                row.get::<_, Vec<u8>>(3)?,
            ))
        })
        .optional()?;
    Ok(match row {
        Some((id, false, create_revision, value)) => Some(KeyValue {
            key: key.to_owned(),
            value,
            create_revision,
            mod_revision: id,
        }),
        _ => None,
    })
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` with default options.
    ///
    /// Opening does blocking I/O; call it at startup or from a blocking context. Only one
    /// `SqliteStore` (in one process) may use a database file at a time: watchers see only the
    /// writes made through their own store.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with_options(path, SqliteOptions::default())
    }

    /// Opens (creating if needed) the database at `path`.
    pub fn open_with_options(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let conn = Connection::open(&path).map_err(backend)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(backend)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "cannot enable WAL mode on {} (journal mode is {mode})",
                path.display()
            )));
        }
        conn.execute_batch("PRAGMA synchronous = FULL;")
            .map_err(backend)?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(backend)?;
        conn.execute_batch(SCHEMA).map_err(backend)?;
        // SQLite syncs the directory when it creates the WAL file; do the same for a new
        // database file, so that its directory entry is durable too.
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::File::open(parent)?.sync_all()?;
        }
        let (current, compacted) = revisions(&conn).map_err(backend)?;
        tracing::info!(path = %path.display(), current, compacted, "opened sqlite store");

        let shared = Arc::new(Shared {
            path,
            idle_readers: Mutex::new(Vec::new()),
            hub: Hub::new(current),
            options,
        });
        let (commands, receiver) = std_mpsc::channel();
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("sqlite-store-writer".into())
            .spawn(move || Writer::new(conn, writer_shared).run(receiver))?;
        Ok(SqliteStore {
            commands: Some(commands),
            writer: Some(writer),
            shared,
        })
    }

    /// Queues a write for the writer thread and waits for its commit.
    async fn write(&self, op: Op) -> Result<Reply, StoreError> {
        let (reply, answer) = oneshot::channel();
        let closed = || StoreError::Unavailable("the sqlite writer thread has stopped".into());
        self.commands
            .as_ref()
            .ok_or_else(closed)?
            .send(Command { op, reply })
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.commands.take();
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("the sqlite writer thread panicked");
            }
        }
        // Open watch streams end with `Unavailable` instead of waiting forever.
        lock(&self.shared.hub.state).subscribers.clear();
    }
}

impl Shared {
    fn open_reader(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(backend)?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(backend)?;
        Ok(conn)
    }

    /// Runs `read` in one read transaction on a pooled connection, on a blocking thread.
    async fn read<T, F>(self: &Arc<Self>, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let shared = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let pooled = lock(&shared.idle_readers).pop();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => shared.open_reader()?,
            };
            let result = (|| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Deferred)
                    .map_err(backend)?;
                let value = read(&tx)?;
                tx.finish().map_err(backend)?;
                Ok(value)
            })();
            let mut idle = lock(&shared.idle_readers);
            if idle.len() < shared.options.max_idle_readers {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.shared.hub.published())
    }

    async fn get(
        &self,
        key: &str,
        revision: Option<Revision>,
    ) -> Result<Option<KeyValue>, StoreError> {
        validate_key(key)?;
        let key = key.to_owned();
        self.shared
            .read(move |tx| {
                let (current, compacted) = revisions(tx).map_err(backend)?;
                let at = resolve_revision(revision, current, compacted)?;
                get_at(tx, &key, at).map_err(backend)
            })
            .await
    }

    async fn range(&self, req: RangeRequest<'_>) -> Result<RangeResult, StoreError> {
        let prefix = req.prefix.as_bytes().to_vec();
        let upper = prefix_range_end(&prefix);
        let lower = match req.start_key {
            Some(start) if start.as_bytes() > prefix.as_slice() => start.as_bytes().to_vec(),
            _ => prefix,
        };
        let limit = req.limit.filter(|&limit| limit > 0);
        let revision = req.revision;
        self.shared
            .read(move |tx| {
                let (current, compacted) = revisions(tx).map_err(backend)?;
                let at = resolve_revision(revision, current, compacted)?;
                let bound = if upper.is_some() { "AND k.name < ?3" } else { "" };
                // Rows at or below the read revision that no later row (at or below it) of the
                // same key supersedes, minus tombstones: one ordered walk of kv_name_id.
                let live = format!(
                    "FROM kv AS k WHERE k.name >= ?1 {bound} AND k.id <= ?2 AND k.deleted = 0
                     AND NOT EXISTS (SELECT 1 FROM kv AS newer
                        WHERE newer.name = k.name AND newer.id > k.id AND newer.id <= ?2)"
                );
                let select = format!(
                    "SELECT k.name, k.value, k.create_revision, k.id {live} ORDER BY k.name LIMIT ?4"
                );
                let sql_limit = limit.map_or(-1, |limit| limit as i64);
                let mut statement = tx.prepare_cached(&select).map_err(backend)?;
                let bind = |statement: &mut rusqlite::CachedStatement<'_>| -> rusqlite::Result<()> {
                    statement.raw_bind_parameter(1, &lower)?;
                    statement.raw_bind_parameter(2, at)?;
                    if let Some(upper) = &upper {
                        statement.raw_bind_parameter(3, upper)?;
                    }
                    Ok(())
                };
                bind(&mut statement).map_err(backend)?;
                statement
                    .raw_bind_parameter(4, sql_limit)
                    .map_err(backend)?;
                let mut rows = statement.raw_query();
                let mut kvs = Vec::new();
                while let Some(row) = rows.next().map_err(backend)? {
                    kvs.push(KeyValue {
                        key: key_from_blob(row.get(0).map_err(backend)?).map_err(backend)?,
                        value: row.get(1).map_err(backend)?,
                        create_revision: row.get(2).map_err(backend)?,
                        mod_revision: row.get(3).map_err(backend)?,
                    });
                }
                drop(rows);
                let count = match limit {
                    Some(limit) if kvs.len() >= limit => {
                        let count_sql = format!("SELECT COUNT(*) {live}");
                        let mut statement = tx.prepare_cached(&count_sql).map_err(backend)?;
                        bind(&mut statement).map_err(backend)?;
                        let mut rows = statement.raw_query();
                        match rows.next().map_err(backend)? {
                            Some(row) => row.get::<_, i64>(0).map_err(backend)? as u64,
                            None => kvs.len() as u64,
                        }
                    }
                    _ => kvs.len() as u64,
                };
                Ok(RangeResult {
                    more: count > kvs.len() as u64,
                    kvs,
                    count,
                    revision: at,
                })
            })
            .await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        validate_key(key)?;
        match self
            .write(Op::Create {
                key: key.to_owned(),
                value,
            })
            .await?
        {
            Reply::Written(kv) => Ok(kv),
            _ => Err(StoreError::Backend("unexpected reply to create".into())),
        }
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: Revision,
    ) -> Result<KeyValue, StoreError> {
        validate_key(key)?;
        match self
            .write(Op::Update {
                key: key.to_owned(),
                value,
                expected: expected_mod_revision,
            })
            .await?
        {
            Reply::Written(kv) => Ok(kv),
            _ => Err(StoreError::Backend("unexpected reply to update".into())),
        }
    }

    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
    ) -> Result<(KeyValue, Revision), StoreError> {
        validate_key(key)?;
        match self
            .write(Op::Delete {
                key: key.to_owned(),
                expected: expected_mod_revision,
            })
            .await?
        {
            Reply::Deleted(kv, revision) => Ok((kv, revision)),
            _ => Err(StoreError::Backend("unexpected reply to delete".into())),
        }
    }

    async fn watch(
        &self,
        prefix: &str,
        after_revision: Revision,
        opts: WatchOptions,
    ) -> Result<WatchStream, StoreError> {
        let prefix = prefix.as_bytes().to_vec();
        let after = after_revision.max(0);
        let subscription = self
            .shared
            .hub
            .subscribe(prefix.clone(), self.shared.options.watch_buffer);
        let mut watch = Watch {
            shared: Arc::clone(&self.shared),
            prefix_end: prefix_range_end(&prefix),
            prefix,
            last: after,
            replay_until: subscription.published,
            replay_done: false,
            pending: VecDeque::new(),
            subscription,
            ticker: opts.progress_notify.map(|period| {
                let mut ticker =
                    tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticker
            }),
            finished: false,
        };
        // The first page is read here so that a compacted start revision fails the call itself.
        watch.replay_page().await?;
        Ok(futures::stream::unfold(watch, |mut watch| async move {
            watch.next_event().await.map(|event| (event, watch))
        })
        .boxed())
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.write(Op::Compact { revision }).await.map(|_| ())
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        self.shared
            .read(|tx| Ok(revisions(tx).map_err(backend)?.1))
            .await
    }
}

// ---------------------------------------------------------------------------------------------
// Writer thread

/// The writer thread's state: the only write connection.
struct Writer {
    conn: Connection,
    shared: Arc<Shared>,
}

/// One applied write: its reply and the event it produced.
type Applied = Result<(Reply, Option<WatchEvent>), StoreError>;

impl Writer {
    fn new(conn: Connection, shared: Arc<Shared>) -> Writer {
        Writer { conn, shared }
    }

    /// Commits queued writes in batches until every sender is gone.
    fn run(mut self, commands: std_mpsc::Receiver<Command>) {
        while let Ok(first) = commands.recv() {
            let mut batch = vec![first];
            while batch.len() < self.shared.options.max_batch {
                match commands.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
        }
        tracing::debug!("sqlite writer thread stopped");
    }

    /// Applies `batch` in one transaction, commits, publishes the events, then answers.
    fn commit_batch(&mut self, batch: Vec<Command>) {
        let (ops, replies): (Vec<Op>, Vec<_>) = batch
            .into_iter()
            .map(|command| (command.op, command.reply))
            .unzip();
        match self.apply_batch(ops) {
            Ok(results) => {
                let mut events = Vec::new();
                let answers: Vec<_> = results
                    .into_iter()
                    .map(|result| {
                        result.map(|(reply, event)| {
                            events.extend(event);
                            reply
                        })
                    })
                    .collect();
                self.shared.hub.publish(events);
                for (reply, answer) in replies.into_iter().zip(answers) {
                    // The caller may have gone away; its write is committed regardless.
                    let _ = reply.send(answer);
                }
            }
            Err(error) => {
                tracing::error!(%error, "sqlite write batch failed and was rolled back");
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Backend(error.to_string())));
                }
            }
        }
    }

    /// Applies every op in one transaction and commits it.
    fn apply_batch(&mut self, ops: Vec<Op>) -> rusqlite::Result<Vec<Applied>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (mut current, compacted) = revisions(&tx)?;
        let mut compacted = compacted;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            results.push(apply(&tx, op, &mut current, &mut compacted)?);
        }
        tx.commit()?;
        Ok(results)
    }
}

/// The live version of `key`, if any.
fn latest(tx: &Transaction<'_>, key: &str) -> rusqlite::Result<Option<KeyValue>> {
    get_at(tx, key, Revision::MAX)
}

/// Appends one row with the next revision.
#[allow(clippy::too_many_arguments)]
fn append(
    tx: &Transaction<'_>,
    current: &mut Revision,
    key: &str,
    deleted: bool,
    create_revision: Option<Revision>,
    prev_revision: Revision,
    value: &[u8],
    old_value: Option<&[u8]>,
) -> rusqlite::Result<Revision> {
    let revision = *current + 1;
    tx.prepare_cached(
        "INSERT INTO kv (id, name, created, deleted, create_revision, prev_revision, value, old_value)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        revision,
        key.as_bytes(),
        create_revision.is_none(),
        deleted,
        create_revision.unwrap_or(revision),
        prev_revision,
        value,
        old_value,
    ])?;
    *current = revision;
    Ok(revision)
}

/// Applies one op inside the batch's transaction. SQLite errors abort the batch; failed
/// preconditions are the op's own result and write nothing.
fn apply(
    tx: &Transaction<'_>,
    op: Op,
    current: &mut Revision,
    compacted: &mut Revision,
) -> rusqlite::Result<Applied> {
    Ok(match op {
        Op::Create { key, value } => match latest(tx, &key)? {
            Some(_) => Err(StoreError::AlreadyExists { key }),
            None => {
                let revision = append(tx, current, &key, false, None, 0, &value, None)?;
                let kv = KeyValue {
                    key,
                    value,
                    create_revision: revision,
                    mod_revision: revision,
                };
                Ok((
                    Reply::Written(kv.clone()),
                    Some(WatchEvent::Put { kv, prev: None }),
                ))
            }
        },
        Op::Update {
            key,
            value,
            expected,
        } => match latest(tx, &key)? {
            None => Err(StoreError::NotFound { key }),
            Some(prev) if prev.mod_revision != expected => {
                Err(StoreError::Conflict { current: prev })
            }
            Some(prev) => {
                let revision = append(
                    tx,
                    current,
                    &key,
                    false,
                    Some(prev.create_revision),
                    prev.mod_revision,
                    &value,
                    Some(&prev.value),
                )?;
                let kv = KeyValue {
                    key,
                    value,
                    create_revision: prev.create_revision,
                    mod_revision: revision,
                };
                Ok((
                    Reply::Written(kv.clone()),
                    Some(WatchEvent::Put {
                        kv,
                        prev: Some(prev),
                    }),
                ))
            }
        },
        Op::Delete { key, expected } => match latest(tx, &key)? {
            None => Err(StoreError::NotFound { key }),
            Some(prev) if expected.is_some_and(|expected| expected != prev.mod_revision) => {
                Err(StoreError::Conflict { current: prev })
            }
            Some(prev) => {
                let revision = append(
                    tx,
                    current,
                    &key,
                    true,
                    Some(prev.create_revision),
                    prev.mod_revision,
                    &[],
                    Some(&prev.value),
                )?;
                Ok((
                    Reply::Deleted(prev.clone(), revision),
                    Some(WatchEvent::Delete { prev, revision }),
                ))
            }
        },
        Op::Compact { revision } => {
            if revision > *current {
                Err(StoreError::FutureRevision {
                    requested: revision,
                    current_revision: *current,
                })
            } else if revision < *compacted {
                Err(StoreError::Compacted {
                    compact_revision: *compacted,
                    current_revision: *current,
                })
            } else {
                if revision > *compacted {
                    let removed = tx
                        .prepare_cached(
                            "DELETE FROM kv WHERE id <= ?1 AND (deleted = 1 OR EXISTS (
                                SELECT 1 FROM kv AS newer
                                WHERE newer.name = kv.name AND newer.id > kv.id AND newer.id <= ?1))",
                        )?
                        .execute([revision])?;
                    tx.prepare_cached(
                        "INSERT INTO meta (name, value) VALUES ('compact_revision', ?1)
                         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    )?
                    .execute([revision])?;
                    *compacted = revision;
                    tracing::info!(revision, removed, "compacted sqlite store");
                }
                Ok((Reply::Compacted, None))
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Watch hub and streams

/// Fans committed events out to watchers.
struct Hub {
    state: Mutex<HubState>,
}

struct HubState {
    /// The revision of the last published event (the last committed write).
    published: Revision,
    subscribers: Vec<Subscriber>,
}

struct Subscriber {
    prefix: Vec<u8>,
    /// Events are shared: a burst buffered for many slow watchers is held once.
    events: mpsc::Sender<Arc<WatchEvent>>,
    overflowed: Arc<AtomicBool>,
}

/// A watcher's end of the hub.
struct Subscription {
    events: mpsc::Receiver<Arc<WatchEvent>>,
    overflowed: Arc<AtomicBool>,
    /// The last published revision when the subscription was registered.
    published: Revision,
    buffered: usize,
}

impl Hub {
    fn new(published: Revision) -> Hub {
        Hub {
            state: Mutex::new(HubState {
                published,
                subscribers: Vec::new(),
            }),
        }
    }

    fn published(&self) -> Revision {
        lock(&self.state).published
    }

    fn subscribe(&self, prefix: Vec<u8>, buffer: usize) -> Subscription {
        let buffer = buffer.max(1);
        let (sender, events) = mpsc::channel(buffer);
        let overflowed = Arc::new(AtomicBool::new(false));
        let mut state = lock(&self.state);
        state.subscribers.push(Subscriber {
            prefix,
            events: sender,
            overflowed: Arc::clone(&overflowed),
        });
        Subscription {
            events,
            overflowed,
            published: state.published,
            buffered: buffer,
        }
    }

    /// Sends committed events (in revision order) to every matching watcher; a watcher whose
    /// buffer is full is dropped and flagged, so its stream ends with an error.
    fn publish(&self, events: Vec<WatchEvent>) {
        let Some(last) = events.last().map(WatchEvent::revision) else {
            return;
        };
        let events: Vec<Arc<WatchEvent>> = events.into_iter().map(Arc::new).collect();
        let mut state = lock(&self.state);
        state.subscribers.retain(|subscriber| {
            for event in &events {
                let matches = event
                    .key()
                    .is_some_and(|key| key.as_bytes().starts_with(&subscriber.prefix));
                if !matches {
                    continue;
                }
                match subscriber.events.try_send(Arc::clone(event)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        subscriber.overflowed.store(true, Ordering::SeqCst);
                        tracing::warn!("cancelling a watcher that fell behind");
                        return false;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            !subscriber.events.is_closed()
        });
        state.published = last;
    }

    /// The revision a caught-up watcher may report in a progress event, or `None` if it still
    /// has buffered events (or was cancelled).
    fn progress_revision(&self, subscription: &Subscription) -> Option<Revision> {
        let state = lock(&self.state);
        (subscription.events.is_empty() && !subscription.overflowed.load(Ordering::SeqCst))
            .then_some(state.published)
    }
}

/// The state behind one watch stream.
struct Watch {
    shared: Arc<Shared>,
    prefix: Vec<u8>,
    prefix_end: Option<Vec<u8>>,
    /// The revision of the last event delivered (or the watch's start).
    last: Revision,
    /// Replay covers `(start, replay_until]`; later events come from the subscription.
    replay_until: Revision,
    replay_done: bool,
    pending: VecDeque<WatchEvent>,
    subscription: Subscription,
    ticker: Option<tokio::time::Interval>,
    finished: bool,
}

impl Watch {
    /// Reads the next page of history after the last queued event into `pending`.
    async fn replay_page(&mut self) -> Result<(), StoreError> {
        let after = self.pending.back().map_or(self.last, WatchEvent::revision);
        let until = self.replay_until;
        if after >= until {
            self.replay_done = true;
            return Ok(());
        }
        let prefix = self.prefix.clone();
        let prefix_end = self.prefix_end.clone();
        let events = self
            .shared
            .read(move |tx| replay(tx, &prefix, prefix_end.as_deref(), after, until))
            .await?;
        if events.len() < REPLAY_PAGE {
            self.replay_done = true;
        }
        self.pending.extend(events);
        Ok(())
    }

    /// The stream's next item; `None` after an error.
    async fn next_event(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        if self.finished {
            return None;
        }
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.last = event.revision();
                return Some(Ok(event));
            }
            if !self.replay_done {
                if let Err(error) = self.replay_page().await {
                    self.finished = true;
                    return Some(Err(error));
                }
                continue;
            }
            tokio::select! {
                biased;
                event = self.subscription.events.recv() => match event {
                    Some(event) if event.revision() > self.last => {
                        self.last = event.revision();
                        // The last watcher to take it gets it without a copy.
                        return Some(Ok(Arc::try_unwrap(event).unwrap_or_else(|shared| (*shared).clone())));
                    }
                    Some(_) => continue,
                    None => {
                        self.finished = true;
                        return Some(Err(if self.subscription.overflowed.load(Ordering::SeqCst) {
                            StoreError::WatcherTooSlow { buffered: self.subscription.buffered }
                        } else {
                            StoreError::Unavailable("the store was closed".into())
                        }));
                    }
                },
                () = tick(&mut self.ticker) => {
                    if let Some(revision) = self.shared.hub.progress_revision(&self.subscription) {
                        let revision = revision.max(self.last);
                        return Some(Ok(WatchEvent::Progress { revision }));
                    }
                }
            }
        }
    }
}

/// Waits for the next progress tick, forever if progress notifications are off.
async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => futures::future::pending().await,
    }
}

/// Up to [`REPLAY_PAGE`] events with `after < revision <= until` on the prefix, in order.
fn replay(
    tx: &Transaction<'_>,
    prefix: &[u8],
    prefix_end: Option<&[u8]>,
    after: Revision,
    until: Revision,
) -> Result<Vec<WatchEvent>, StoreError> {
    let (current, compacted) = revisions(tx).map_err(backend)?;
    if after < compacted {
        return Err(StoreError::Compacted {
            compact_revision: compacted,
            current_revision: current,
        });
    }
    let sql = if prefix_end.is_some() {
        "SELECT id, name, created, deleted, create_revision, prev_revision, value, old_value
         FROM kv WHERE id > ?1 AND id <= ?2 AND name >= ?3 AND name < ?4 ORDER BY id LIMIT ?5"
    } else {
        "SELECT id, name, created, deleted, create_revision, prev_revision, value, old_value
         FROM kv WHERE id > ?1 AND id <= ?2 AND name >= ?3 AND ?4 IS NULL ORDER BY id LIMIT ?5"
    };
    let mut statement = tx.prepare_cached(sql).map_err(backend)?;
    let rows = statement
        .query_map(
            params![after, until, prefix, prefix_end, REPLAY_PAGE as i64],
            |row| {
                let id: Revision = row.get(0)?;
                let key = key_from_blob(row.get(1)?)?;
                let created: bool = row.get(2)?;
                let deleted: bool = row.get(3)?;
                let create_revision: Revision = row.get(4)?;
                let prev_revision: Revision = row.get(5)?;
                let value: Vec<u8> = row.get(6)?;
                let old_value: Option<Vec<u8>> = row.get(7)?;
                let prev = (!created).then(|| KeyValue {
                    key: key.clone(),
                    value: old_value.unwrap_or_default(),
                    create_revision,
                    mod_revision: prev_revision,
                });
                Ok(match (deleted, prev) {
                    (true, Some(prev)) => WatchEvent::Delete { prev, revision: id },
                    (_, prev) => WatchEvent::Put {
                        kv: KeyValue {
                            key,
                            value,
                            create_revision,
                            mod_revision: id,
                        },
                        prev,
                    },
                })
            },
        )
        .map_err(backend)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(dir.path().join("store.db")).unwrap()
    }

    #[tokio::test]
    async fn reopen_restores_revision_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let (last, compacted_at) = {
            let store = open(&dir);
            let a = store.create("/a", b"1".to_vec()).await.unwrap();
            let a2 = store
                .update("/a", b"2".to_vec(), a.mod_revision)
                .await
                .unwrap();
            store.create("/b", b"1".to_vec()).await.unwrap();
            let (_, deleted_at) = store.delete("/b", None).await.unwrap();
            store.compact(deleted_at).await.unwrap();
            assert_eq!(store.get("/a", None).await.unwrap().unwrap(), a2);
            (deleted_at, deleted_at)
        };
        let store = open(&dir);
        assert_eq!(store.current_revision().await.unwrap(), last);
        assert_eq!(store.compacted_revision().await.unwrap(), compacted_at);
        // The tombstone was the newest row and compaction removed it: the revision must not repeat.
        let c = store.create("/c", vec![]).await.unwrap();
        assert_eq!(c.mod_revision, last + 1);
        assert_eq!(store.get("/a", None).await.unwrap().unwrap().value, b"2");
        assert!(store.get("/b", None).await.unwrap().is_none());
        assert!(matches!(
            store.get("/a", Some(compacted_at - 1)).await,
            Err(StoreError::Compacted { .. })
        ));
    }

    #[tokio::test]
    async fn compaction_removes_superseded_rows_and_tombstones() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let mut kv = store.create("/k", b"0".to_vec()).await.unwrap();
        for i in 1..10u8 {
            kv = store.update("/k", vec![i], kv.mod_revision).await.unwrap();
        }
        store.create("/gone", vec![]).await.unwrap();
        store.delete("/gone", None).await.unwrap();
        let at = store.current_revision().await.unwrap();
        store.compact(at).await.unwrap();
        let rows: i64 = Connection::open(dir.path().join("store.db"))
            .unwrap()
            .query_row("SELECT COUNT(*) FROM kv", [], |row| row.get(0))
            .unwrap();
        assert_eq!(rows, 1);
        assert_eq!(store.get("/k", Some(at)).await.unwrap().unwrap(), kv);
    }

    #[tokio::test]
    async fn tiny_buffer_cancels_a_slow_watcher() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteOptions {
            watch_buffer: 4,
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open_with_options(dir.path().join("store.db"), options).unwrap();
        let mut watch = store.watch("/", 0, WatchOptions::default()).await.unwrap();
        for i in 0..10 {
            store.create(&format!("/k{i}"), vec![]).await.unwrap();
        }
        let mut delivered = 0;
        let error = loop {
            match watch.next().await.unwrap() {
                Ok(event) => {
                    delivered += 1;
                    assert_eq!(event.revision(), delivered);
                }
                Err(error) => break error,
            }
        };
        assert!(matches!(error, StoreError::WatcherTooSlow { buffered: 4 }));
        assert_eq!(delivered, 4);
        assert!(watch.next().await.is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compaction_overtaking_a_replay_ends_the_stream_with_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(&dir));
        let total = REPLAY_PAGE + 200;
        let tasks: Vec<_> = (0..8)
            .map(|writer| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    for i in (writer..total).step_by(8) {
                        store.create(&format!("/k/{i:05}"), vec![]).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let mut watch = store
            .watch("/k/", 0, WatchOptions::default())
            .await
            .unwrap();
        // The first page is already read; compact past it before the rest is replayed.
        store.compact(total as Revision).await.unwrap();
        for expected in 1..=REPLAY_PAGE as Revision {
            assert_eq!(watch.next().await.unwrap().unwrap().revision(), expected);
        }
        assert!(matches!(
            watch.next().await,
            Some(Err(StoreError::Compacted { compact_revision, .. })) if compact_revision == total as Revision
        ));
        assert!(watch.next().await.is_none());
    }

    #[tokio::test]
    async fn dropping_the_store_ends_open_watches() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let mut watch = store.watch("/", 0, WatchOptions::default()).await.unwrap();
        drop(store);
        assert!(matches!(
            watch.next().await,
            Some(Err(StoreError::Unavailable(_)))
        ));
        assert!(watch.next().await.is_none());
    }

    #[tokio::test]
    async fn empty_key_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        assert!(matches!(
            store.create("", vec![]).await,
            Err(StoreError::InvalidArgument(_))
        ));
    }
}
