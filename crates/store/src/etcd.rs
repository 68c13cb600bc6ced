//! The etcd v3 backend of [`Store`].
//!
//! # Mapping
//!
//! * Every store key `k` is the etcd key `prefix + k` (a plain byte concatenation, default
//!   prefix `/registry/`); ranges and watches use `prefix + p` and its
//!   [`prefix_range_end`]. Revisions are etcd's own (etcd starts at revision 1).
//! * [`Store::create`] is `txn(create_revision(k) == 0) put(k) else get(k)`;
//!   [`Store::update`] is `txn(mod_revision(k) == expected && version(k) > 0) put(k, prev_kv)
//!   else get(k)` (no key: `NotFound`, else `Conflict { current }`); guarded
//!   [`Store::delete`] likewise with `delete(k, prev_kv)`, returning the deleted version and the
//!   response header's revision (the delete's revision). Failed compares write nothing, so
//!   they consume no revision, as in etcd.
//! * [`Store::range`] is one etcd range `[prefix + max(prefix, start_key), range_end(prefix))`
//!   with `limit` (`Some(0)` = no limit) and `revision`; etcd's `count` and `more` are exactly
//!   the trait's.
//! * [`Store::watch`] is one etcd watch stream per call (`prev_kv`, `progress_notify`), started
//!   at `after_revision + 1`. With [`WatchOptions::progress_notify`] the stream sends etcd
//!   progress requests (`WatchProgressRequest`) at that period and turns the answers into
//!   [`WatchEvent::Progress`]; see "Bookmarks" below.
//! * [`Store::compact`] is etcd's compact (not physical: etcd marks the revision compacted at
//!   once and frees the space in the background). etcd's errors "mvcc: required revision has
//!   been compacted" and "... is a future revision" become [`StoreError::Compacted`] and
//!   [`StoreError::FutureRevision`].
//! * etcd has no API that returns the compacted revision, so [`Store::compacted_revision`]
//!   finds it by binary search over count-only ranges at a revision (a range below the
//!   compacted revision fails): about `log2(current revision)` tiny requests. The search starts
//!   at the highest compacted revision this client has seen (its own compactions and watch
//!   cancellations), so compactions by other clients (another API server, etcd's
//!   `--auto-compaction`) are found too. A compaction at revision 1 reads as 0 (nothing is
//!   older than revision 1 anyway).
//!
//! # Failures
//!
//! Every request runs under [`EtcdOptions::request_timeout`]: an unreachable etcd (down,
//! partitioned) makes requests fail with [`StoreError::Unavailable`] (immediately when the
//! connection is refused and the channel knows it), one that does not answer in that time
//! (stopped, overloaded) with [`StoreError::Timeout`] (the API server's 503 and 504). The gRPC channel
//! reconnects by itself, so requests succeed again as soon as etcd is back. A watch stream does
//! not fail when etcd goes away: it reconnects with backoff and resumes at the revision after
//! the last event it delivered, skipping anything at or below it, so no event is lost or
//! repeated. If that revision was compacted meanwhile the stream yields
//! [`StoreError::Compacted`] and ends (the API server's `410 Gone`).
//!
//! # Bookmarks
//!
//! etcd 3.4 answers a progress request with the store's current revision through a control
//! channel that is not ordered with the events still queued for the stream (etcd issue #15220,
//! fixed in 3.4.24 / 3.5.8). So a progress answer is only emitted as a bookmark when the next
//! one arrives with no event at or below it in between; an event at or below a pending answer
//! discards it. The resume point only ever advances with delivered events, so even a wrong
//! bookmark cannot lose an event on reconnection.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType,
    GetOptions, KvClient, PutOptions, Txn, TxnOp, TxnOpResponse, WatchClient,
};
use futures::StreamExt;

use crate::{
    prefix_range_end, KeyValue, RangeRequest, RangeResult, Revision, Store, StoreError, WatchEvent,
    WatchOptions, WatchStream,
};

/// Largest gRPC message this client accepts (etcd's own default send limit is `MaxInt32`).
/// How long [`EtcdStore::connect`] waits for an etcd that answers it has no leader (an
/// election at its start, a cluster that is forming).
pub const STARTUP_WAIT: Duration = Duration::from_secs(30);

const MAX_MESSAGE_BYTES: usize = i32::MAX as usize;
/// First delay before a watch reconnects after losing its stream.
const WATCH_RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest delay between two reconnection attempts of a watch.
const WATCH_RETRY_MAX: Duration = Duration::from_secs(2);

/// PEM files of a TLS client: the CA that signed etcd's certificate and the client's own
/// certificate and key (etcd's `--client-cert-auth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate(s) to verify the etcd servers with.
    pub ca: PathBuf,
    /// The client certificate.
    pub cert: PathBuf,
    /// The client certificate's private key.
    pub key: PathBuf,
}

/// How to reach etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// Client URLs of the etcd members (`http://host:2379`, or `https://` with [`Self::tls`]).
    pub endpoints: Vec<String>,
    /// Prepended to every store key (default `/registry/`).
    pub prefix: String,
    /// TLS client certificates, for `https://` endpoints.
    pub tls: Option<TlsFiles>,
    /// Longest time one request may take before it fails with [`StoreError::Unavailable`].
    pub request_timeout: Duration,
}

impl EtcdOptions {
    /// Options for these endpoints with the default prefix, no TLS and a 5 s request timeout.
    pub fn new(endpoints: Vec<String>) -> EtcdOptions {
        EtcdOptions {
            endpoints,
            ..EtcdOptions::default()
        }
    }
}

impl Default for EtcdOptions {
    fn default() -> EtcdOptions {
        EtcdOptions {
            endpoints: Vec::new(),
            prefix: "/registry/".to_owned(),
            tls: None,
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// A [`Store`] on an etcd v3 cluster; see the [module documentation](self).
#[derive(Clone)]
pub struct EtcdStore {
    shared: Arc<Shared>,
}

struct Shared {
    kv: KvClient,
    watch: WatchClient,
    prefix: Vec<u8>,
    timeout: Duration,
    /// The highest compacted revision this client has seen (a lower bound of etcd's).
    known_compacted: AtomicI64,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &String::from_utf8_lossy(&self.shared.prefix))
            .finish_non_exhaustive()
    }
}

/// Maps an etcd client error to the store's error.
fn map_error(error: etcd_client::Error) -> StoreError {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message();
            if message.contains("required revision has been compacted") {
                // The caller fills the revisions in (see `EtcdStore::fill_compacted`).
                StoreError::Compacted {
                    compact_revision: 0,
                    current_revision: 0,
                }
            } else if message.contains("required revision is a future revision") {
                StoreError::FutureRevision {
                    requested: 0,
                    current_revision: 0,
                }
            } else {
                classify_status(status.code() as i32, message, || status.to_string())
            }
        }
        etcd_client::Error::TransportError(error) => {
            StoreError::Unavailable(format!("etcd transport: {error}"))
        }
        etcd_client::Error::IoError(error) => StoreError::Unavailable(format!("etcd I/O: {error}")),
        etcd_client::Error::WatchError(error) => {
            StoreError::Unavailable(format!("etcd watch: {error}"))
        }
        etcd_client::Error::InvalidArgs(error) => StoreError::InvalidArgument(error),
        other => StoreError::Backend(format!("etcd: {other}")),
    }
}

/// gRPC status codes by number (`tonic::Code` without depending on tonic directly).
/// Maps a gRPC status from etcd (other than the revision errors) by its code and message:
/// a request etcd gave up on (`DEADLINE_EXCEEDED`, "request timed out") may have been applied
/// and is a [`StoreError::Timeout`]; an etcd that cannot serve (no leader, transport, cancelled)
/// is [`StoreError::Unavailable`]. `describe` renders the whole status for other errors.
fn classify_status(code: i32, message: &str, describe: impl FnOnce() -> String) -> StoreError {
    use tonic_code::*;
    match code {
        DEADLINE_EXCEEDED => StoreError::Timeout(format!("etcd: {message}")),
        UNAVAILABLE | CANCELLED | ABORTED => StoreError::Unavailable(format!("etcd: {message}")),
        INVALID_ARGUMENT | OUT_OF_RANGE | FAILED_PRECONDITION => {
            StoreError::InvalidArgument(format!("etcd: {message}"))
        }
        // Leader loss and request timeouts inside etcd come as `Unknown`.
        _ if message.contains("timed out") => StoreError::Timeout(format!("etcd: {message}")),
        // A broken connection comes from tonic as `Internal` or `Unknown` ("h2 protocol error:
        // http2 error" when the stream or connection was reset, for example after etcd was
        // frozen): etcd did not refuse the request, it never got an answer through.
        _ if is_connection_failure(message) => StoreError::Unavailable(format!("etcd: {message}")),
        _ if message.contains("leader") => StoreError::Unavailable(format!("etcd: {message}")),
        _ => StoreError::Backend(format!("etcd: {}", describe())),
    }
}

/// Whether a gRPC status message says the connection to etcd failed rather than etcd itself.
fn is_connection_failure(message: &str) -> bool {
    const MARKERS: [&str; 6] = [
        "transport",
        "h2 protocol error",
        "http2 error",
        "connection",
        "broken pipe",
        "stream closed",
    ];
    let message = message.to_ascii_lowercase();
    MARKERS.iter().any(|marker| message.contains(marker))
}

/// Runs `request` for at most `timeout`; past it the request is abandoned with
/// [`StoreError::Timeout`] (etcd may still apply a write it already received).
async fn within<T>(
    timeout: Duration,
    request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, request).await {
        Ok(result) => result.map_err(map_error),
        Err(_) => Err(StoreError::Timeout(format!(
            "etcd did not answer within {timeout:?}"
        ))),
    }
}

mod tonic_code {
    pub const CANCELLED: i32 = 1;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const ABORTED: i32 = 10;
    pub const OUT_OF_RANGE: i32 = 11;
    pub const UNAVAILABLE: i32 = 14;
}

impl Shared {
    /// The etcd key of a store key.
    fn etcd_key(&self, key: &str) -> Vec<u8> {
        let mut full = self.prefix.clone();
        full.extend_from_slice(key.as_bytes());
        full
    }

    /// The store key of an etcd key (`None` if it is outside the prefix or not UTF-8).
    fn store_key(&self, key: &[u8]) -> Result<String, StoreError> {
        let rest = key
            .strip_prefix(self.prefix.as_slice())
            .ok_or_else(|| StoreError::Backend("etcd returned a key outside the prefix".into()))?;
        String::from_utf8(rest.to_vec())
            .map_err(|_| StoreError::Backend("etcd returned a key that is not UTF-8".into()))
    }

    fn key_value(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
        Ok(KeyValue {
            key: self.store_key(kv.key())?,
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        })
    }

    /// The etcd range `[start, end)` of a store prefix.
    fn prefix_range(&self, prefix: &str) -> (Vec<u8>, Vec<u8>) {
        let start = self.etcd_key(prefix);
        // etcd's "every key" is `["\0", "\0")`; an end of "\0" means "to the end".
        let end = prefix_range_end(&start).unwrap_or_else(|| vec![0]);
        let start = if start.is_empty() { vec![0] } else { start };
        (start, end)
    }

    /// A key for count-only probes (etcd rejects empty keys).
    fn probe_key(&self) -> Vec<u8> {
        if self.prefix.is_empty() {
            vec![0]
        } else {
            self.prefix.clone()
        }
    }

    /// Runs one request under the request timeout.
    async fn call<T>(
        &self,
        request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        within(self.timeout, request).await
    }

    /// etcd's current revision (a linearizable count-only range).
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let mut kv = self.kv.clone();
        let key = self.probe_key();
        let response = self
            .call(kv.get(key, Some(GetOptions::new().with_count_only())))
            .await?;
        Ok(response.header().map_or(0, |header| header.revision()))
    }

    /// Whether a read at `revision` is allowed (not compacted); `FutureRevision` errors pass.
    async fn readable_at(&self, revision: Revision) -> Result<bool, StoreError> {
        let mut kv = self.kv.clone();
        let key = self.probe_key();
        match self
            .call(kv.get(
                key,
                Some(GetOptions::new().with_count_only().with_revision(revision)),
            ))
            .await
        {
            Ok(_) => Ok(true),
            Err(StoreError::Compacted { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// The compacted revision, by binary search (see the module documentation).
    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        let current = self.current_revision().await?;
        let known = self.known_compacted.load(Ordering::SeqCst).max(1);
        if known > current {
            return Ok(known);
        }
        // Invariant: reads at `high` succeed; reads below `low` fail.
        let (mut low, mut high) = (known, current.max(known));
        if self.readable_at(low).await? {
            high = low;
        }
        while low < high {
            let middle = low + (high - low) / 2;
            if self.readable_at(middle).await? {
                high = middle;
            } else {
                low = middle + 1;
            }
        }
        let compacted = if high <= 1 { 0 } else { high };
        self.known_compacted.fetch_max(compacted, Ordering::SeqCst);
        Ok(compacted)
    }

    /// Fills in the revisions of a `Compacted` or `FutureRevision` error from `map_error`.
    async fn fill(&self, error: StoreError, requested: Revision) -> StoreError {
        match error {
            StoreError::Compacted { .. } => {
                let compact_revision = self
                    .compacted_revision()
                    .await
                    .unwrap_or_else(|_| self.known_compacted.load(Ordering::SeqCst));
                let current_revision = self.current_revision().await.unwrap_or(0);
                StoreError::Compacted {
                    compact_revision,
                    current_revision,
                }
            }
            StoreError::FutureRevision { .. } => StoreError::FutureRevision {
                requested,
                current_revision: self.current_revision().await.unwrap_or(0),
            },
            other => other,
        }
    }

    /// The current version of a key after a failed compare.
    fn current_from(
        &self,
        key: &str,
        responses: Vec<TxnOpResponse>,
    ) -> Result<Option<KeyValue>, StoreError> {
        for response in responses {
            if let TxnOpResponse::Get(get) = response {
                return get.kvs().first().map(|kv| self.key_value(kv)).transpose();
            }
        }
        Err(StoreError::Backend(format!(
            "etcd transaction on {key:?} returned no read"
        )))
    }
}

impl EtcdStore {
    /// Connects to etcd and checks that it answers (one read, under the request timeout).
    /// An etcd that answers but has no leader yet is waited for, at most [`STARTUP_WAIT`].
    pub async fn connect(options: EtcdOptions) -> Result<EtcdStore, StoreError> {
        if options.endpoints.is_empty() {
            return Err(StoreError::InvalidArgument("no etcd endpoints".into()));
        }
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(options.request_timeout)
            // HTTP/2 pings detect a dead or frozen etcd under open watches; etcd refuses pings
            // more often than every 5 s (`--grpc-keepalive-min-time`).
            .with_keep_alive(
                Duration::from_secs(10),
                options.request_timeout.max(Duration::from_secs(1)),
            )
            .with_keep_alive_while_idle(true);
        if let Some(tls) = &options.tls {
            let read = |path: &PathBuf| {
                std::fs::read(path).map_err(|error| {
                    StoreError::InvalidArgument(format!("cannot read {}: {error}", path.display()))
                })
            };
            let tls_options = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(read(&tls.ca)?))
                .identity(etcd_client::Identity::from_pem(
                    read(&tls.cert)?,
                    read(&tls.key)?,
                ));
            connect = connect.with_tls(tls_options);
        }
        let client = match tokio::time::timeout(
            options.request_timeout,
            Client::connect(&options.endpoints, Some(connect)),
        )
        .await
        {
            Ok(client) => client.map_err(map_error)?,
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "etcd did not answer within {:?}",
                    options.request_timeout
                )))
            }
        };
        let store = EtcdStore {
            shared: Arc::new(Shared {
                kv: client
                    .kv_client()
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
                watch: client
                    .watch_client()
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
                prefix: options.prefix.into_bytes(),
                timeout: options.request_timeout,
                known_compacted: AtomicI64::new(0),
            }),
        };
        // A starting etcd answers "leader changed" or "no leader" until its election ends:
        // wait for that, not longer than STARTUP_WAIT (an etcd that does not answer, or
        // refuses us, fails at once as before).
        let deadline = tokio::time::Instant::now() + STARTUP_WAIT;
        loop {
            match store.shared.current_revision().await {
                Ok(_) => return Ok(store),
                Err(StoreError::Unavailable(why))
                    if is_not_ready(&why) && tokio::time::Instant::now() < deadline =>
                {
                    tracing::info!(%why, "etcd is not ready yet; trying again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The etcd key prefix of this store.
    pub fn prefix(&self) -> &[u8] {
        &self.shared.prefix
    }
}

/// Whether an unavailable etcd answered that it is not ready (no leader yet, or a leader
/// changing), rather than not answering at all or refusing us (TLS): only the former is worth
/// waiting for at the start.
fn is_not_ready(why: &str) -> bool {
    why.contains("leader")
}

fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::InvalidArgument("empty key".into()));
    }
    Ok(())
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Revision {
    header.map_or(0, |header| header.revision())
}

#[async_trait]
impl Store for EtcdStore {
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.shared.current_revision().await
    }

    async fn get(
        &self,
        key: &str,
        revision: Option<Revision>,
    ) -> Result<Option<KeyValue>, StoreError> {
        check_key(key)?;
        let shared = &self.shared;
        let mut kv = shared.kv.clone();
        let mut options = GetOptions::new();
        if let Some(revision) = revision {
            options = options.with_revision(revision.max(1));
        }
        let response = match shared
            .call(kv.get(shared.etcd_key(key), Some(options)))
            .await
        {
            Ok(response) => response,
            Err(error) => return Err(shared.fill(error, revision.unwrap_or(0)).await),
        };
        response
            .kvs()
            .first()
            .map(|kv| shared.key_value(kv))
            .transpose()
    }

    async fn range(&self, req: RangeRequest<'_>) -> Result<RangeResult, StoreError> {
        let shared = &self.shared;
        let (prefix_start, end) = shared.prefix_range(req.prefix);
        let start = match req.start_key {
            Some(start_key) => shared.etcd_key(start_key).max(prefix_start),
            None => prefix_start,
        };
        let mut options = GetOptions::new().with_range(end);
        if let Some(limit) = req.limit.filter(|&limit| limit > 0) {
            options = options.with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        if let Some(revision) = req.revision {
            options = options.with_revision(revision.max(1));
        }
        let mut kv = shared.kv.clone();
        let response = match shared.call(kv.get(start, Some(options))).await {
            Ok(response) => response,
            Err(error) => return Err(shared.fill(error, req.revision.unwrap_or(0)).await),
        };
        let kvs = response
            .kvs()
            .iter()
            .map(|kv| shared.key_value(kv))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RangeResult {
            kvs,
            more: response.more(),
            count: u64::try_from(response.count()).unwrap_or(0),
            revision: req
                .revision
                .unwrap_or_else(|| header_revision(response.header())),
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        check_key(key)?;
        let shared = &self.shared;
        let etcd_key = shared.etcd_key(key);
        let txn = Txn::new()
            .when([Compare::create_revision(
                etcd_key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(etcd_key.clone(), value.clone(), None)])
            .or_else([TxnOp::get(etcd_key, None)]);
        let mut kv = shared.kv.clone();
        let response = shared.call(kv.txn(txn)).await?;
        if !response.succeeded() {
            return Err(StoreError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        let revision = header_revision(response.header());
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision: revision,
            mod_revision: revision,
        })
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: Revision,
    ) -> Result<KeyValue, StoreError> {
        check_key(key)?;
        let shared = &self.shared;
        let etcd_key = shared.etcd_key(key);
        let txn = Txn::new()
            .when([
                Compare::version(etcd_key.clone(), CompareOp::Greater, 0),
                Compare::mod_revision(etcd_key.clone(), CompareOp::Equal, expected_mod_revision),
            ])
            .and_then([TxnOp::put(
                etcd_key.clone(),
                value.clone(),
                Some(PutOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(etcd_key, None)]);
        let mut kv = shared.kv.clone();
        let response = shared.call(kv.txn(txn)).await?;
        let responses = response.op_responses();
        if !response.succeeded() {
            return match shared.current_from(key, responses)? {
                Some(current) => Err(StoreError::Conflict { current }),
                None => Err(StoreError::NotFound {
                    key: key.to_owned(),
                }),
            };
        }
        let create_revision = responses
            .iter()
            .find_map(|response| match response {
                TxnOpResponse::Put(put) => put.prev_key().map(|prev| prev.create_revision()),
                _ => None,
            })
            .ok_or_else(|| StoreError::Backend("etcd put returned no previous value".into()))?;
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision,
            mod_revision: header_revision(response.header()),
        })
    }

    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
    ) -> Result<(KeyValue, Revision), StoreError> {
        check_key(key)?;
        let shared = &self.shared;
        let etcd_key = shared.etcd_key(key);
        let mut compares = vec![Compare::version(etcd_key.clone(), CompareOp::Greater, 0)];
        if let Some(expected) = expected_mod_revision {
            compares.push(Compare::mod_revision(
                etcd_key.clone(),
                CompareOp::Equal,
                expected,
            ));
        }
        let txn = Txn::new()
            .when(compares)
            .and_then([TxnOp::delete(
                etcd_key.clone(),
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(etcd_key, None)]);
        let mut kv = shared.kv.clone();
        let response = shared.call(kv.txn(txn)).await?;
        let responses = response.op_responses();
        if !response.succeeded() {
            return match shared.current_from(key, responses)? {
                Some(current) => Err(StoreError::Conflict { current }),
                None => Err(StoreError::NotFound {
                    key: key.to_owned(),
                }),
            };
        }
        let deleted = responses
            .iter()
            .find_map(|response| match response {
                TxnOpResponse::Delete(delete) => delete.prev_kvs().first().cloned(),
                _ => None,
            })
            .ok_or_else(|| StoreError::Backend("etcd delete returned no previous value".into()))?;
        Ok((
            shared.key_value(&deleted)?,
            header_revision(response.header()),
        ))
    }

    async fn watch(
        &self,
        prefix: &str,
        after_revision: Revision,
        opts: WatchOptions,
    ) -> Result<WatchStream, StoreError> {
        let shared = Arc::clone(&self.shared);
        let after = after_revision.max(0);
        // A compacted start fails the call itself (etcd would cancel the watch later).
        match shared.readable_at(after.max(1)).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(shared
                    .fill(
                        StoreError::Compacted {
                            compact_revision: 0,
                            current_revision: 0,
                        },
                        after,
                    )
                    .await)
            }
            // Watching from the future is allowed: it delivers the events after it.
            Err(StoreError::FutureRevision { .. }) => {}
            Err(error) => return Err(error),
        }
        let (start, end) = shared.prefix_range(prefix);
        let watch = EtcdWatch {
            shared,
            start,
            end,
            last_delivered: after,
            stream: None,
            pending: VecDeque::new(),
            candidate_bookmark: None,
            ticker: opts.progress_notify.map(|period| {
                let mut ticker =
                    tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticker
            }),
            retry_delay: WATCH_RETRY_MIN,
            finished: false,
        };
        Ok(futures::stream::unfold(watch, |mut watch| async move {
            watch.next_item().await.map(|item| (item, watch))
        })
        .boxed())
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let shared = &self.shared;
        let mut kv = shared.kv.clone();
        match shared
            .call(kv.compact(revision, Some(CompactionOptions::new())))
            .await
        {
            Ok(_) => {
                shared.known_compacted.fetch_max(revision, Ordering::SeqCst);
                Ok(())
            }
            Err(error) => Err(shared.fill(error, revision).await),
        }
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        self.shared.compacted_revision().await
    }
}

/// The state of one [`Store::watch`] stream on etcd.
struct EtcdWatch {
    shared: Arc<Shared>,
    start: Vec<u8>,
    end: Vec<u8>,
    /// The revision of the last event delivered (or the start); the stream resumes after it.
    last_delivered: Revision,
    stream: Option<etcd_client::WatchStream>,
    pending: VecDeque<WatchEvent>,
    /// A progress answer waiting for the next one to confirm it (see "Bookmarks").
    candidate_bookmark: Option<Revision>,
    ticker: Option<tokio::time::Interval>,
    retry_delay: Duration,
    finished: bool,
}

/// What one etcd watch response means for the stream.
enum Received {
    Events(Vec<WatchEvent>),
    Progress(Revision),
    Compacted {
        compact_revision: Revision,
        current_revision: Revision,
    },
    Nothing,
    Lost(String),
    Failed(StoreError),
}

impl EtcdWatch {
    async fn next_item(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        loop {
            if self.finished {
                return None;
            }
            if let Some(event) = self.pending.pop_front() {
                if !matches!(event, WatchEvent::Progress { .. }) {
                    self.last_delivered = event.revision();
                }
                return Some(Ok(event));
            }
            if self.stream.is_none() {
                if let Err(error) = self.open().await {
                    if !error.is_transient() {
                        self.finished = true;
                        return Some(Err(error));
                    }
                    tracing::warn!(%error, "etcd watch: cannot reopen, retrying");
                    tokio::time::sleep(self.retry_delay).await;
                    self.retry_delay = (self.retry_delay * 2).min(WATCH_RETRY_MAX);
                    continue;
                }
            }
            let received = self.receive().await;
            match received {
                Received::Events(events) => {
                    // An event at or below a pending progress answer proves it premature.
                    if let (Some(candidate), Some(first)) =
                        (self.candidate_bookmark, events.first())
                    {
                        if first.revision() <= candidate {
                            self.candidate_bookmark = None;
                        }
                    }
                    self.pending.extend(events);
                }
                Received::Progress(revision) => {
                    if let Some(confirmed) = self.candidate_bookmark.replace(revision) {
                        if confirmed >= self.last_delivered && self.ticker.is_some() {
                            self.pending.push_back(WatchEvent::Progress {
                                revision: confirmed,
                            });
                        }
                    }
                }
                Received::Compacted {
                    compact_revision,
                    current_revision,
                } => {
                    self.finished = true;
                    return Some(Err(StoreError::Compacted {
                        compact_revision,
                        current_revision,
                    }));
                }
                Received::Nothing => {}
                Received::Failed(error) => {
                    self.finished = true;
                    return Some(Err(error));
                }
                Received::Lost(reason) => {
                    tracing::warn!(%reason, resume_after = self.last_delivered, "etcd watch lost its stream, reconnecting");
                    self.stream = None;
                    self.candidate_bookmark = None;
                    tokio::time::sleep(self.retry_delay).await;
                    self.retry_delay = (self.retry_delay * 2).min(WATCH_RETRY_MAX);
                }
            }
        }
    }

    /// Opens an etcd watch that starts after the last delivered revision.
    async fn open(&mut self) -> Result<(), StoreError> {
        let options = etcd_client::WatchOptions::new()
            .with_range(self.end.clone())
            .with_start_revision(self.last_delivered + 1)
            .with_prev_key()
            .with_progress_notify();
        let mut client = self.shared.watch.clone();
        let stream = self
            .shared
            .call(client.watch(self.start.clone(), Some(options)))
            .await?;
        self.stream = Some(stream);
        Ok(())
    }

    /// Waits for the next etcd response (sending progress requests on the ticker meanwhile).
    async fn receive(&mut self) -> Received {
        let Some(stream) = self.stream.as_mut() else {
            return Received::Lost("no stream".into());
        };
        let message = loop {
            let tick = async {
                match self.ticker.as_mut() {
                    Some(ticker) => {
                        ticker.tick().await;
                    }
                    None => futures::future::pending::<()>().await,
                }
            };
            tokio::select! {
                message = stream.message() => break message,
                () = tick => {
                    if let Err(error) = stream.request_progress().await {
                        return Received::Lost(error.to_string());
                    }
                }
            }
        };
        let response = match message {
            Ok(Some(response)) => response,
            Ok(None) => return Received::Lost("etcd closed the watch stream".into()),
            Err(error) => return Received::Lost(error.to_string()),
        };
        self.retry_delay = WATCH_RETRY_MIN;
        let revision = header_revision(response.header());
        if response.compact_revision() > 0 {
            self.shared
                .known_compacted
                .fetch_max(response.compact_revision(), Ordering::SeqCst);
            return Received::Compacted {
                compact_revision: response.compact_revision(),
                current_revision: revision,
            };
        }
        if response.canceled() {
            return Received::Lost(format!(
                "etcd cancelled the watch: {}",
                response.cancel_reason()
            ));
        }
        if response.created() {
            return Received::Nothing;
        }
        if response.events().is_empty() {
            return Received::Progress(revision);
        }
        let mut events = Vec::with_capacity(response.events().len());
        for event in response.events() {
            match self.convert(event) {
                Ok(Some(event)) if event.revision() > self.last_delivered => events.push(event),
                Ok(_) => {}
                Err(error) => return Received::Failed(error),
            }
        }
        Received::Events(events)
    }

    fn convert(&self, event: &etcd_client::Event) -> Result<Option<WatchEvent>, StoreError> {
        let Some(kv) = event.kv() else {
            return Ok(None);
        };
        let prev = event
            .prev_kv()
            .map(|prev| self.shared.key_value(prev))
            .transpose()?;
        Ok(Some(match event.event_type() {
            EventType::Put => WatchEvent::Put {
                kv: self.shared.key_value(kv)?,
                prev,
            },
            EventType::Delete => WatchEvent::Delete {
                prev: prev.ok_or_else(|| {
                    StoreError::Backend("etcd delete event without its previous value".into())
                })?,
                revision: kv.mod_revision(),
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_etcd_without_a_leader_is_waited_for() {
        assert!(is_not_ready("etcd: etcdserver: leader changed"));
        assert!(is_not_ready("etcd: etcdserver: no leader"));
        assert!(!is_not_ready("etcd: transport error"));
        assert!(!is_not_ready("etcd did not answer within 5s"));
    }

    #[test]
    fn statuses_map_to_timeout_unavailable_or_backend() {
        let describe = || "full status".to_string();
        let timeout = classify_status(tonic_code::DEADLINE_EXCEEDED, "deadline", describe);
        assert!(matches!(timeout, StoreError::Timeout(_)), "{timeout:?}");
        let inside = classify_status(2, "etcdserver: request timed out", describe);
        assert!(matches!(inside, StoreError::Timeout(_)), "{inside:?}");
        let leaderless = classify_status(2, "etcdserver: no leader", describe);
        assert!(
            matches!(leaderless, StoreError::Unavailable(_)),
            "{leaderless:?}"
        );
        let down = classify_status(tonic_code::UNAVAILABLE, "connection refused", describe);
        assert!(matches!(down, StoreError::Unavailable(_)), "{down:?}");
        for (code, message) in [
            (13, "h2 protocol error: http2 error"),
            (2, "h2 protocol error: http2 error"),
            (
                13,
                "h2 protocol error: stream error received: stream no longer needed",
            ),
            (2, "error reading a body from connection"),
            (2, "Broken pipe (os error 32)"),
        ] {
            let broken = classify_status(code, message, describe);
            assert!(
                matches!(broken, StoreError::Unavailable(_)),
                "{code} {message}: {broken:?}"
            );
        }
        let other = classify_status(2, "something else", describe);
        assert!(
            matches!(&other, StoreError::Backend(m) if m.contains("full status")),
            "{other:?}"
        );
        assert!(timeout.is_transient() && down.is_transient() && !other.is_transient());
    }

    #[tokio::test]
    async fn a_request_without_answer_times_out() {
        let start = std::time::Instant::now();
        let error = within::<()>(
            Duration::from_millis(50),
            futures::future::pending::<Result<(), etcd_client::Error>>(),
        )
        .await
        .unwrap_err();
        assert!(matches!(error, StoreError::Timeout(_)), "{error:?}");
        assert!(start.elapsed() >= Duration::from_millis(50));
        let answered = within(Duration::from_millis(50), async { Ok(7) }).await;
        assert_eq!(answered.unwrap(), 7);
    }
}
