//! watch: a stream of `WatchEvent`s from the store's watch, filtered by the request's
//! selectors, with the initial state, bookmarks and `timeoutSeconds` as upstream.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use hyper::Response;
use nodeless_api::registry::ResourceKind;
use nodeless_store::{Revision, StoreError, WatchEvent, WatchOptions};
use serde_json::{json, Value};

use super::filter::Filter;
use super::{output, Ctx};
use crate::http_util::{self, Body, Output};
use crate::objects;
use crate::storage::{Decoded, Storage};
use crate::ApiError;

/// How often a watch that allows bookmarks gets one.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(5);

/// Renders the object of an event as the client asked.
struct Encoder {
    kind: &'static ResourceKind,
    output: Output,
    include: String,
}

impl Encoder {
    fn event(&self, type_: &str, obj: Value) -> Bytes {
        let object = match self.output {
            Output::Table => output::table(
                self.kind,
                std::slice::from_ref(&obj),
                json!({ "resourceVersion": objects::resource_version(&obj) }),
                &self.include,
                true,
            ),
            Output::Metadata => output::partial_metadata(&obj),
            Output::Json | Output::Yaml => obj,
        };
        line(&json!({ "type": type_, "object": object }))
    }

    /// An event of an object shared among the watches: its JSON is encoded once.
    fn shared_event(&self, type_: &str, decoded: &Decoded) -> Bytes {
        match self.output {
            Output::Json | Output::Yaml => wrap(type_, decoded.json()),
            Output::Metadata => wrap(type_, decoded.metadata_json()),
            Output::Table => self.event(type_, decoded.object.clone()),
        }
    }

    fn bookmark(&self, revision: Revision, initial_end: bool) -> Bytes {
        let mut meta = json!({ "resourceVersion": revision.to_string() });
        if initial_end {
            meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        line(&json!({
            "type": "BOOKMARK",
            "object": { "kind": self.kind.kind, "apiVersion": self.kind.api_version(), "metadata": meta },
        }))
    }
}

/// `{"type":…,"object":…}` and a newline around an object's JSON (what [`line`] gives for it).
fn wrap(type_: &str, object: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(object.len() + type_.len() + 24);
    out.extend_from_slice(b"{\"type\":");
    // A string always serialises.
    let _ = serde_json::to_writer(&mut out, type_);
    out.extend_from_slice(b",\"object\":");
    out.extend_from_slice(object);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

fn line(v: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(v).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn error_event(err: &ApiError) -> Bytes {
    line(&json!({ "type": "ERROR", "object": err.to_status() }))
}

/// The default lifetime of a watch, spread as upstream does (30 to 60 minutes).
fn default_timeout() -> Duration {
    use rand::Rng;
    Duration::from_secs(rand::thread_rng().gen_range(1800..3600))
}

pub async fn watch(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let kind = ctx.kind();
    let query = &ctx.req.query;
    let filter = Filter::from_query(kind, query)?;
    let pinned_name = ctx.path.name.clone();
    let timeout = match query.int("timeoutSeconds")? {
        Some(s) if s > 0 => Duration::from_secs(s as u64),
        _ => default_timeout(),
    };
    let bookmarks = query.flag("allowWatchBookmarks")?;
    let send_initial = match query.get("sendInitialEvents") {
        None => None,
        Some(_) => Some(query.flag("sendInitialEvents")?),
    };
    let rv = query.get("resourceVersion");
    if send_initial.is_some() {
        if query.get("resourceVersionMatch") != Some("NotOlderThan") {
            return Err(ApiError::invalid(
                kind,
                "",
                &[nodeless_api::error::FieldError::forbidden(
                    "resourceVersionMatch",
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                )],
            ));
        }
        if send_initial == Some(true) && !bookmarks {
            return Err(ApiError::invalid(
                kind,
                "",
                &[nodeless_api::error::FieldError::forbidden(
                    "allowWatchBookmarks",
                    "sendInitialEvents requires setting allowWatchBookmarks to true",
                )],
            ));
        }
    } else if query.get("resourceVersionMatch").is_some() {
        return Err(ApiError::bad_request(
            "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        ));
    }
    let parsed_rv = match rv {
        None => None,
        Some(s) => Some(
            s.parse::<Revision>()
                .ok()
                .filter(|r| *r >= 0)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "invalid resource version {s:?}: must be a non-negative integer"
                    ))
                })?,
        ),
    };
    let storage = ctx.state.storage.clone();
    // Every object matches: an event's previous version need not be decoded to know whether
    // it matched.
    let selects_all = filter.is_everything() && pinned_name.is_none();
    let with_initial = send_initial.unwrap_or(matches!(parsed_rv, None | Some(0)));

    let matches = move |obj: &Value| -> bool {
        filter.matches(obj)
            && pinned_name
                .as_deref()
                .is_none_or(|n| objects::name(obj) == Some(n))
    };

    let (initial, after) = if with_initial {
        let page = storage
            .list_page(kind, ctx.namespace(), None, None, None)
            .await?;
        if let Some(r) = parsed_rv.filter(|r| *r > page.revision) {
            return Err(ApiError::timeout(format!(
                "Too large resource version: {r}, current: {}",
                page.revision
            )));
        }
        (
            page.items
                .into_iter()
                .filter(|o| matches(o))
                .collect::<Vec<_>>(),
            page.revision,
        )
    } else {
        match parsed_rv {
            Some(r) if r > 0 => (Vec::new(), r),
            _ => (Vec::new(), storage.current_revision().await?),
        }
    };
    let prefix = kind.namespace_prefix(ctx.namespace());
    let opts = WatchOptions {
        progress_notify: bookmarks.then_some(BOOKMARK_INTERVAL),
    };
    let mut events = match storage.store().watch(&prefix, after, opts).await {
        Ok(s) => s,
        Err(StoreError::Compacted { .. }) => {
            return Err(ApiError::gone(format!("too old resource version: {after}")));
        }
        Err(e) => return Err(e.into()),
    };

    let encoder = Encoder {
        kind,
        output: ctx.output,
        include: ctx.include_object().to_string(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    let mut shutdown = ctx.state.shutdown.clone();
    let initial_end = send_initial == Some(true);
    let storage = storage.clone();
    tokio::spawn(async move {
        for obj in initial {
            if tx.send(encoder.event("ADDED", obj)).await.is_err() {
                return;
            }
        }
        if initial_end && tx.send(encoder.bookmark(after, true)).await.is_err() {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            let next = tokio::select! {
                _ = &mut deadline => return,
                _ = shutdown.changed() => return,
                _ = tx.closed() => return,
                next = events.next() => next,
            };
            let chunk = match next {
                None => return,
                Some(Err(e)) => {
                    let err = match e {
                        StoreError::Compacted { .. } => ApiError::gone("too old resource version"),
                        other => ApiError::internal(format!("watch ended: {other}")),
                    };
                    let _ = tx.send(error_event(&err)).await;
                    return;
                }
                Some(Ok(event)) => {
                    match convert(&encoder, &storage, event, &matches, selects_all, bookmarks) {
                        Ok(Some(chunk)) => chunk,
                        Ok(None) => continue,
                        Err(err) => {
                            let _ = tx.send(error_event(&err)).await;
                            return;
                        }
                    }
                }
            };
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    let stream = tokio_stream_from(rx);
    Ok(http_util::stream_response("application/json", stream))
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> impl futures::Stream<Item = Bytes> + Send + Sync {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// One store event as the watch event the client sees, if any: an object that starts
/// matching the selectors is ADDED, one that stops matching is DELETED, as upstream.
/// `selects_all` says that `matches` holds for every object.
fn convert(
    encoder: &Encoder,
    storage: &Storage,
    event: WatchEvent,
    matches: &impl Fn(&Value) -> bool,
    selects_all: bool,
    bookmarks: bool,
) -> Result<Option<Bytes>, ApiError> {
    let kind = encoder.kind;
    match event {
        WatchEvent::Put { kv, prev } => {
            let obj = storage.decode_for_watch(kind, &kv, kv.mod_revision)?;
            let now = selects_all || matches(&obj.object);
            let before = match &prev {
                Some(_) if selects_all => Some(true),
                Some(p) => Some(matches(
                    &storage.decode_for_watch(kind, p, p.mod_revision)?.object,
                )),
                None => None,
            };
            let type_ = match (before, now) {
                (None, true) | (Some(false), true) => "ADDED",
                (Some(true), true) => "MODIFIED",
                (Some(true), false) => "DELETED",
                _ => return Ok(None),
            };
            Ok(Some(encoder.shared_event(type_, &obj)))
        }
        WatchEvent::Delete { prev, revision } => {
            let obj = storage.decode_for_watch(kind, &prev, revision)?;
            if !selects_all && !matches(&obj.object) {
                return Ok(None);
            }
            Ok(Some(encoder.shared_event("DELETED", &obj)))
        }
        WatchEvent::Progress { revision } => {
            Ok(bookmarks.then(|| encoder.bookmark(revision, false)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_object_is_the_event_line_of_it() {
        let object = json!({"kind": "Pod", "metadata": {"name": "a", "resourceVersion": "7"}, "note": "ü \"q\""});
        let bytes = serde_json::to_vec(&object).unwrap();
        assert_eq!(
            wrap("MODIFIED", &bytes),
            line(&json!({"type": "MODIFIED", "object": object}))
        );
    }
}
