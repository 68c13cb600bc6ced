//! The key-value store with etcd v3's model that holds the cluster's state.
//!
//! # Model
//!
//! The store is a map from string keys to byte values with one global, strictly increasing
//! [`Revision`] counter, exactly like etcd v3's MVCC store:
//!
//! * every successful write (create, update, delete) gets the next revision; a key's
//!   `mod_revision` is the revision of its last write and its `create_revision` the revision that
//!   created it (a key deleted and created again gets a new `create_revision`);
//! * [`Store::update`] and guarded [`Store::delete`] are compare-and-swap operations on the key's
//!   mod revision (the API server's `resourceVersion` preconditions);
//! * reads may be served at any revision between the compacted revision and the current one;
//! * [`Store::watch`] delivers every change after a revision, in revision order, without gaps;
//! * [`Store::compact`] drops history older than a revision, keeping the latest version of every
//!   key that is alive at that revision. Reads and watches that need dropped history fail with
//!   [`StoreError::Compacted`] (the API server's `410 Gone`).
//!
//! Prefixes are raw byte prefixes, as in etcd: `/a/b` matches `/a/bc`. The API server always
//! passes prefixes that end in `/`, which makes a prefix select exactly one "directory".
//!
//! Backends: [`sqlite::SqliteStore`] (embedded, the default) and [`etcd::EtcdStore`] (an
//! etcd v3 cluster). Both pass the same [`conformance`] suite ([`store_conformance_suite!`]).
//!
//! # SQLite backend design
//!
//! ## Table layout
//!
//! One append-only log table, modelled on kine's:
//!
//! ```sql
//! CREATE TABLE kv (
//!     id              INTEGER PRIMARY KEY AUTOINCREMENT, -- the revision of this write
//!     name            BLOB    NOT NULL,  -- the key's UTF-8 bytes (BLOB: memcmp ordering)
//!     created         INTEGER NOT NULL,  -- 1 if this write created the key
//!     deleted         INTEGER NOT NULL,  -- 1 if this write is a delete (a tombstone)
//!     create_revision INTEGER NOT NULL,  -- the key's create revision
//!     prev_revision   INTEGER NOT NULL,  -- the mod revision of the previous version, 0 if none
//!     value           BLOB    NOT NULL,  -- the new value (empty for a tombstone)
//!     old_value       BLOB               -- the previous value (NULL when created)
//! );
//! CREATE INDEX kv_name_id ON kv (name, id, deleted);
//! CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL); -- 'compact_revision'
//! ```
//!
//! Every row is one revision, so a row holds everything a watch event needs (new value and the
//! previous value) and a watch replay is a single ordered scan by `id`. `AUTOINCREMENT` makes
//! SQLite keep the highest id ever handed out in `sqlite_sequence`, so revisions never repeat,
//! even when compaction deleted the newest rows, and reopening a database restores the counter.
//! The composite index on `(name, id, deleted)` serves lookups by key (its left prefix), "latest
//! version of a key at or below a revision" (a backwards probe), and range and count queries,
//! which walk it in key order and keep the rows that no later row of the same key at or below
//! the read revision supersedes, without touching the table except to fetch returned values. A
//! separate index on `name` alone would only slow writes down. Reading key `k` at revision `r`
//! is the row with the largest `id <= r` for `name = k`, unless that row is a tombstone.
//!
//! ## Durability
//!
//! The database runs in WAL mode with `synchronous=FULL`: SQLite fsyncs the write-ahead log at
//! every commit, and a write is acknowledged (its future resolves) only after the commit that
//! contains it returned. An acknowledged write is therefore on stable storage and survives
//! `kill -9` and power loss (to the extent that the disk honours fsync); an unacknowledged write
//! may or may not be there, but a transaction is all-or-nothing. `tests/crash.rs` kills a writer
//! process with SIGKILL and checks every acknowledged key.
//!
//! One dedicated writer thread owns the only write connection. Writes queue on a channel; the
//! thread takes every queued write (up to a batch limit), applies them in order in one
//! `BEGIN IMMEDIATE` transaction and commits once (group commit), then answers each caller. So
//! one fsync covers many concurrent writes, while each write still sees the effects of the
//! writes before it. Failed preconditions (already exists, conflict) write nothing; if SQLite
//! itself fails, the whole batch is rolled back and every write in it gets the error. Reads run
//! on a pool of separate connections inside `spawn_blocking`, each read in one read transaction,
//! so a read sees one consistent snapshot and never blocks or is blocked by the writer.
//!
//! ## Watch without gaps
//!
//! After every commit the writer publishes the batch's events to an in-memory hub, in revision
//! order, and records the last published revision, all under the hub's lock. A watch
//! (1) registers its subscriber (a bounded channel) and reads the last published revision `P`
//! under that same lock, then (2) replays the rows with `after < id <= P` from the table, in
//! pages, and (3) forwards live events from its channel, skipping any revision it has already
//! delivered. Every event with revision `<= P` was committed before the subscription (the writer
//! publishes only after commit), so the replay's snapshot holds it; every event `> P` is published
//! after the subscription, so it arrives on the channel. Together they cover every revision once,
//! in order. Each replay page re-checks the compacted revision in its own snapshot: if
//! compaction overtook the replay the stream ends with [`StoreError::Compacted`] instead of
//! skipping events.
//!
//! A watcher that does not keep up fills its channel; the hub then drops it and the stream
//! yields [`StoreError::WatcherTooSlow`] and ends, like etcd cancelling a slow watcher: events
//! are never silently dropped. Progress events are sent on a timer while the watcher is caught
//! up: under the hub lock the watcher checks that its channel is empty and takes the last
//! published revision, so every event at or below it has been delivered.
//!
//! ## Compaction
//!
//! `compact(r)` runs on the writer thread and, in one transaction, deletes every row with
//! `id <= r` that is superseded by a later row of the same key with `id <= r`, and every
//! tombstone with `id <= r`, then records `r` in `meta`. The state at every revision `>= r` and
//! every event after `r` remain readable.

pub mod conformance;
pub mod etcd;
pub mod sqlite;

use std::time::Duration;

pub use etcd::{EtcdOptions, EtcdStore, TlsFiles};
pub use sqlite::{SqliteOptions, SqliteStore};

/// A position in the store's global history; every write gets the next one.
pub type Revision = i64;

/// One version of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value stored at this version.
    pub value: Vec<u8>,
    /// The revision that created the key (new after a delete and re-create).
    pub create_revision: Revision,
    /// The revision of the write that produced this version.
    pub mod_revision: Revision,
}

/// One change delivered by [`Store::watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was created (`prev` is `None`) or updated.
    Put {
        /// The new version.
        kv: KeyValue,
        /// The version it replaced, if the key existed.
        prev: Option<KeyValue>,
    },
    /// A key was deleted.
    Delete {
        /// The version that was deleted.
        prev: KeyValue,
        /// The revision of the delete.
        revision: Revision,
    },
    /// A bookmark: every event with a revision `<=` this one has been delivered on this stream.
    Progress {
        /// The revision the stream has caught up to.
        revision: Revision,
    },
}

impl WatchEvent {
    /// The revision of the change (or the bookmark's revision).
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put { kv, .. } => kv.mod_revision,
            WatchEvent::Delete { revision, .. } | WatchEvent::Progress { revision } => *revision,
        }
    }

    /// The key the event is about; `None` for progress events.
    pub fn key(&self) -> Option<&str> {
        match self {
            WatchEvent::Put { kv, .. } => Some(&kv.key),
            WatchEvent::Delete { prev, .. } => Some(&prev.key),
            WatchEvent::Progress { .. } => None,
        }
    }
}

/// Arguments of [`Store::range`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RangeRequest<'a> {
    /// Raw byte prefix of the keys to return (`""` matches every key).
    pub prefix: &'a str,
    /// First key to return (inclusive), for paging; `None` starts at the prefix.
    pub start_key: Option<&'a str>,
    /// Maximum number of keys to return; `None` returns all.
    pub limit: Option<usize>,
    /// Revision to read at; `None` reads the latest.
    pub revision: Option<Revision>,
}

/// Result of [`Store::range`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResult {
    /// The matching keys in key order, at most `limit` of them.
    pub kvs: Vec<KeyValue>,
    /// Whether more keys match after the last one returned.
    pub more: bool,
    /// How many keys match the prefix from `start_key` at that revision, ignoring `limit`.
    pub count: u64,
    /// The revision the range was read at (pass it back to read the next page consistently).
    pub revision: Revision,
}

/// Options of [`Store::watch`].
#[derive(Debug, Clone, Copy, Default)]
pub struct WatchOptions {
    /// Send a [`WatchEvent::Progress`] this often while the watcher is caught up.
    pub progress_notify: Option<Duration>,
}

/// The stream returned by [`Store::watch`]; it ends after yielding an error.
pub type WatchStream = futures::stream::BoxStream<'static, Result<WatchEvent, StoreError>>;

/// Errors of every store backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `create` of a key that exists.
    #[error("key {key:?} already exists")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// The key does not exist.
    #[error("key {key:?} not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// The key's mod revision differs from the expected one.
    #[error("conflict on key {:?}: its mod revision is {}", current.key, current.mod_revision)]
    Conflict {
        /// The key's current version.
        current: KeyValue,
    },
    /// The requested revision is older than the compacted revision (410 Gone).
    #[error("revision has been compacted (compacted revision {compact_revision}, current revision {current_revision})")]
    Compacted {
        /// The revision history was compacted at.
        compact_revision: Revision,
        /// The store's current revision.
        current_revision: Revision,
    },
    /// A read asked for a revision that does not exist yet.
    #[error("revision {requested} is in the future (current revision {current_revision})")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The store's current revision.
        current_revision: Revision,
    },
    /// The watcher did not consume events fast enough and was cancelled.
    #[error("watcher cancelled: it fell more than {buffered} events behind")]
    WatcherTooSlow {
        /// How many events were buffered for it.
        buffered: usize,
    },
    /// The request's arguments are invalid (e.g. an empty key).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The backend cannot be reached (or has shut down); the request may be retried. A write
    /// already sent when the connection broke may still have been applied.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend did not answer within the request timeout (reachable but hung, or too
    /// slow); a write may still have been applied. The request may be retried.
    #[error("store timed out: {0}")]
    Timeout(String),
    /// The backend failed.
    #[error("store backend error: {0}")]
    Backend(String),
    /// An I/O error.
    #[error("store I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl StoreError {
    /// Whether the backend failed to answer ([`StoreError::Unavailable`] or
    /// [`StoreError::Timeout`]): the same request may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Timeout(_))
    }
}

/// A key-value store with etcd v3's model; see the crate documentation.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The revision of the last committed write.
    async fn current_revision(&self) -> Result<Revision, StoreError>;

    /// The key's version at `revision` (`None` = latest), or `None` if it did not exist then.
    async fn get(
        &self,
        key: &str,
        revision: Option<Revision>,
    ) -> Result<Option<KeyValue>, StoreError>;

    /// The keys with a prefix, in key order, paged by `start_key` and `limit`.
    async fn range(&self, req: RangeRequest<'_>) -> Result<RangeResult, StoreError>;

    /// Creates the key if it is absent; [`StoreError::AlreadyExists`] otherwise.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError>;

    /// Replaces the key's value if its mod revision is `expected_mod_revision`;
    /// [`StoreError::NotFound`] if absent, [`StoreError::Conflict`] if the revision differs.
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: Revision,
    ) -> Result<KeyValue, StoreError>;

    /// Deletes the key (if `expected_mod_revision` is given, only at that mod revision);
    /// returns the deleted version and the delete's revision.
    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
    ) -> Result<(KeyValue, Revision), StoreError>;

    /// Every event with revision `> after_revision` on keys with this prefix, in revision order
    /// with no gaps, then live events. [`StoreError::Compacted`] if `after_revision` is below
    /// the compacted revision. With `progress_notify`, [`WatchEvent::Progress`] bookmarks carry
    /// a revision such that every event at or below it has been delivered.
    async fn watch(
        &self,
        prefix: &str,
        after_revision: Revision,
        opts: WatchOptions,
    ) -> Result<WatchStream, StoreError>;

    /// Drops history older than `revision`; the version of every key alive at `revision` is kept.
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// The revision history was last compacted at (0 if never).
    async fn compacted_revision(&self) -> Result<Revision, StoreError>;
}

/// The smallest key greater than every key with `prefix` as a raw byte prefix, or `None` if no
/// such bound exists (empty prefix, or all bytes 0xff). Etcd's `GetPrefixRangeEnd`.
pub fn prefix_range_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_range_end_increments_last_byte() {
        assert_eq!(prefix_range_end(b"/a/b/"), Some(b"/a/b0".to_vec()));
        assert_eq!(prefix_range_end(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_range_end(b""), None);
        assert_eq!(prefix_range_end(b"\xff"), None);
    }

    #[test]
    fn event_revision_and_key() {
        let kv = KeyValue {
            key: "/k".into(),
            value: vec![],
            create_revision: 3,
            mod_revision: 5,
        };
        let put = WatchEvent::Put {
            kv: kv.clone(),
            prev: None,
        };
        assert_eq!(put.revision(), 5);
        assert_eq!(put.key(), Some("/k"));
        let delete = WatchEvent::Delete {
            prev: kv,
            revision: 9,
        };
        assert_eq!(delete.revision(), 9);
        assert_eq!(WatchEvent::Progress { revision: 7 }.key(), None);
    }
}
