//! Objects in the store: the encoding of a kind's objects under their keys, and the
//! resourceVersion, which is the store's mod revision of the key.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use nodeless_api::registry::{self, ResourceKind};
use nodeless_store::{KeyValue, RangeRequest, Revision, Store, StoreError};
use serde_json::{json, Value};

use crate::objects;
use crate::ApiError;

/// Reads and writes objects of any kind.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn Store>,
    /// The objects of the last watch events, shared by every watch of this store.
    recent: Arc<RecentObjects>,
}

/// How many decoded objects [`RecentObjects`] keeps. Watchers of one kind see an event within
/// a few events of one another; one that lags further decodes the object itself.
const RECENT_OBJECTS: usize = 128;

/// The objects of recent watch events, decoded once and encoded once per output for every
/// watch that sends them (a pod event goes to several watchers), oldest dropped first.
#[derive(Default)]
pub(crate) struct RecentObjects {
    state: Mutex<RecentState>,
}

#[derive(Default)]
struct RecentState {
    entries: HashMap<RecentKey, Arc<Decoded>>,
    order: VecDeque<RecentKey>,
}

/// A stored version as one kind shows it, with the resourceVersion it is shown at.
#[derive(Clone, PartialEq, Eq, Hash)]
struct RecentKey {
    group: &'static str,
    kind: &'static str,
    key: String,
    mod_revision: Revision,
    resource_version: Revision,
}

/// A decoded stored object and, once asked for, its JSON and its `PartialObjectMetadata` JSON.
pub(crate) struct Decoded {
    /// The object, as [`Storage::decode`] gives it (with the resourceVersion it was asked at).
    pub object: Value,
    json: OnceLock<Bytes>,
    metadata_json: OnceLock<Bytes>,
}

impl Decoded {
    fn new(object: Value) -> Self {
        Self {
            object,
            json: OnceLock::new(),
            metadata_json: OnceLock::new(),
        }
    }

    /// The object as compact JSON.
    pub fn json(&self) -> &Bytes {
        self.json
            .get_or_init(|| Bytes::from(serde_json::to_vec(&self.object).unwrap_or_default()))
    }

    /// The object's `PartialObjectMetadata`, as compact JSON.
    pub fn metadata_json(&self) -> &Bytes {
        self.metadata_json.get_or_init(|| {
            let partial = crate::handlers::output::partial_metadata(&self.object);
            Bytes::from(serde_json::to_vec(&partial).unwrap_or_default())
        })
    }
}

impl RecentObjects {
    /// The object of `kv` as `kind` at `resource_version`, decoded unless it is among the
    /// recent ones.
    fn get_or_decode(
        &self,
        kind: &ResourceKind,
        kv: &KeyValue,
        resource_version: Revision,
    ) -> Result<Arc<Decoded>, ApiError> {
        let key = RecentKey {
            group: kind.group,
            kind: kind.kind,
            key: kv.key.clone(),
            mod_revision: kv.mod_revision,
            resource_version,
        };
        if let Some(found) = self.lock().entries.get(&key) {
            return Ok(Arc::clone(found));
        }
        // Decoded outside the lock: two watchers may both decode it, which is harmless.
        let mut object = Storage::decode(kind, kv)?;
        if resource_version != kv.mod_revision {
            objects::meta_mut(&mut object).insert(
                "resourceVersion".into(),
                Value::String(resource_version.to_string()),
            );
        }
        Ok(self.insert(key, object))
    }

    /// Keeps `object` (what [`Storage::decode`] gives for `kv`) as the object of the watch
    /// events of `kv`: the write that made it hands it over, so that its watchers need not
    /// decode it.
    fn remember_written(&self, kind: &ResourceKind, kv: &KeyValue, object: &Value) {
        let key = RecentKey {
            group: kind.group,
            kind: kind.kind,
            key: kv.key.clone(),
            mod_revision: kv.mod_revision,
            resource_version: kv.mod_revision,
        };
        self.insert(key, object.clone());
    }

    fn insert(&self, key: RecentKey, object: Value) -> Arc<Decoded> {
        let decoded = Arc::new(Decoded::new(object));
        let mut state = self.lock();
        if state
            .entries
            .insert(key.clone(), Arc::clone(&decoded))
            .is_none()
        {
            state.order.push_back(key);
            while state.order.len() > RECENT_OBJECTS {
                if let Some(oldest) = state.order.pop_front() {
                    state.entries.remove(&oldest);
                }
            }
        }
        decoded
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecentState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One page of a list, its objects as stored (see [`Storage::list_page_stored`]).
pub struct StoredPage {
    pub items: Vec<KeyValue>,
    /// The revision the page was read at.
    pub revision: Revision,
    /// Where the next page starts, if there is one.
    pub next_key: Option<String>,
    /// How many keys remain after this page (before any filtering).
    pub remaining: u64,
}

/// One page of a list.
pub struct Page {
    pub items: Vec<Value>,
    /// The revision the page was read at.
    pub revision: Revision,
    /// Where the next page starts, if there is one.
    pub next_key: Option<String>,
    /// How many keys remain after this page (before any filtering).
    pub remaining: u64,
}

impl Storage {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            recent: Arc::default(),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Decodes a stored object as `kind` and sets its resourceVersion.
    pub fn decode(kind: &ResourceKind, kv: &KeyValue) -> Result<Value, ApiError> {
        let mut obj: Value = serde_json::from_slice(&kv.value)
            .map_err(|e| ApiError::internal(format!("decoding stored object {}: {e}", kv.key)))?;
        nodeless_api::conversion::from_stored(kind.group, kind.kind, &mut obj);
        objects::meta_mut(&mut obj).insert(
            "resourceVersion".into(),
            Value::String(kv.mod_revision.to_string()),
        );
        Ok(obj)
    }

    /// The object of a watch event: `kv` decoded as `kind` and shown at `resource_version`
    /// (its mod revision, or the revision of its deletion), shared with the other watches.
    pub(crate) fn decode_for_watch(
        &self,
        kind: &ResourceKind,
        kv: &KeyValue,
        resource_version: Revision,
    ) -> Result<Arc<Decoded>, ApiError> {
        self.recent.get_or_decode(kind, kv, resource_version)
    }

    /// The stored form of `obj` (no resourceVersion, the stored version's field names) and
    /// its bytes.
    fn encode(kind: &ResourceKind, obj: &Value) -> Result<(Value, Vec<u8>), ApiError> {
        let mut stored = obj.clone();
        objects::meta_mut(&mut stored).remove("resourceVersion");
        nodeless_api::conversion::to_stored(kind.group, kind.kind, &mut stored);
        let bytes = serde_json::to_vec(&stored)
            .map_err(|e| ApiError::internal(format!("encoding object: {e}")))?;
        Ok((stored, bytes))
    }

    /// The object a create or update wrote (see [`Storage::written`]), also kept as the
    /// object of its watch events.
    fn hand_over_written(&self, kind: &ResourceKind, stored: Value, kv: &KeyValue) -> Value {
        let written = Self::written(kind, stored, kv);
        self.recent.remember_written(kind, kv, &written);
        written
    }

    /// What [`Storage::decode`] gives for `kv` when `stored` is the value its bytes were
    /// encoded from: JSON encoding and decoding give back the same value, so the object just
    /// written is not parsed again.
    fn written(kind: &ResourceKind, mut stored: Value, kv: &KeyValue) -> Value {
        nodeless_api::conversion::from_stored(kind.group, kind.kind, &mut stored);
        objects::meta_mut(&mut stored).insert(
            "resourceVersion".into(),
            Value::String(kv.mod_revision.to_string()),
        );
        stored
    }

    pub async fn get(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        match self.store.get(&kind.key(namespace, name), None).await? {
            Some(kv) => Ok(Some(Self::decode(kind, &kv)?)),
            None => Ok(None),
        }
    }

    /// Gets an object or answers 404.
    pub async fn get_existing(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.get(kind, namespace, name)
            .await?
            .ok_or_else(|| ApiError::not_found(kind, name))
    }

    pub async fn create(&self, kind: &ResourceKind, obj: &Value) -> Result<Value, ApiError> {
        let name = objects::name(obj).unwrap_or_default();
        let key = kind.key(objects::namespace(obj), name);
        let (stored, bytes) = Self::encode(kind, obj)?;
        match self.store.create(&key, bytes).await {
            Ok(kv) => Ok(self.hand_over_written(kind, stored, &kv)),
            Err(StoreError::AlreadyExists { .. }) => Err(ApiError::already_exists(kind, name)),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes `obj` if the stored object is still at `expected` revision.
    pub async fn update(
        &self,
        kind: &ResourceKind,
        obj: &Value,
        expected: Revision,
    ) -> Result<Value, ApiError> {
        let name = objects::name(obj).unwrap_or_default();
        let key = kind.key(objects::namespace(obj), name);
        let (stored, bytes) = Self::encode(kind, obj)?;
        match self.store.update(&key, bytes, expected).await {
            Ok(kv) => Ok(self.hand_over_written(kind, stored, &kv)),
            Err(StoreError::Conflict { .. }) => Err(ApiError::modified(kind, name)),
            Err(StoreError::NotFound { .. }) => Err(ApiError::not_found(kind, name)),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the object if it is still at `expected` revision; returns it as it was.
    pub async fn delete(
        &self,
        kind: &ResourceKind,
        obj: &Value,
        expected: Option<Revision>,
    ) -> Result<Value, ApiError> {
        let name = objects::name(obj).unwrap_or_default();
        let key = kind.key(objects::namespace(obj), name);
        match self.store.delete(&key, expected).await {
            Ok((kv, revision)) => {
                let mut deleted = Self::decode(kind, &kv)?;
                objects::meta_mut(&mut deleted).insert(
                    "resourceVersion".into(),
                    Value::String(revision.to_string()),
                );
                Ok(deleted)
            }
            Err(StoreError::Conflict { .. }) => Err(ApiError::modified(kind, name)),
            Err(StoreError::NotFound { .. }) => Err(ApiError::not_found(kind, name)),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads every object of a kind (in one namespace or all), page by page at the revision
    /// of the first page, so that the result is one consistent snapshot.
    pub async fn list_all(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
    ) -> Result<Vec<Value>, ApiError> {
        const PAGE: usize = 500;
        let mut items = Vec::new();
        let mut start: Option<String> = None;
        let mut revision: Option<Revision> = None;
        loop {
            let page = self
                .list_page(kind, namespace, start.as_deref(), Some(PAGE), revision)
                .await?;
            revision = Some(page.revision);
            items.extend(page.items);
            match page.next_key {
                Some(next) => start = Some(next),
                None => return Ok(items),
            }
        }
    }

    /// Reads one page of a kind's objects (in one namespace or all).
    pub async fn list_page(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        start_key: Option<&str>,
        limit: Option<usize>,
        revision: Option<Revision>,
    ) -> Result<Page, ApiError> {
        let page = self
            .list_page_stored(kind, namespace, start_key, limit, revision)
            .await?;
        let items = page
            .items
            .iter()
            .map(|kv| Self::decode(kind, kv))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page {
            items,
            revision: page.revision,
            next_key: page.next_key,
            remaining: page.remaining,
        })
    }

    /// Reads one page as [`Storage::list_page`] does, leaving the objects as stored, so that
    /// a caller can decode (with [`Storage::decode`]) and drop them one at a time.
    pub async fn list_page_stored(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        start_key: Option<&str>,
        limit: Option<usize>,
        revision: Option<Revision>,
    ) -> Result<StoredPage, ApiError> {
        let prefix = kind.namespace_prefix(namespace);
        let result = self
            .store
            .range(RangeRequest {
                prefix: &prefix,
                start_key,
                limit,
                revision,
            })
            .await?;
        let remaining = result.count.saturating_sub(result.kvs.len() as u64);
        let next_key = if result.more {
            result.kvs.last().map(|kv| format!("{}\u{0}", kv.key))
        } else {
            None
        };
        Ok(StoredPage {
            items: result.kvs,
            revision: result.revision,
            next_key,
            remaining,
        })
    }

    pub async fn current_revision(&self) -> Result<Revision, ApiError> {
        Ok(self.store.current_revision().await?)
    }

    /// Creates `default`, `kube-system`, `kube-public` and `kube-node-lease` if missing.
    pub async fn ensure_system_namespaces(&self) -> Result<(), StoreError> {
        let Some(kind) = registry::by_plural("", "v1", "namespaces") else {
            return Ok(());
        };
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let obj = json!({
                "kind": "Namespace",
                "apiVersion": "v1",
                "metadata": {
                    "name": name,
                    "uid": uuid::Uuid::new_v4().to_string(),
                    "creationTimestamp": objects::now_rfc3339(),
                    "labels": { "kubernetes.io/metadata.name": name },
                },
                "spec": { "finalizers": ["kubernetes"] },
                "status": { "phase": "Active" },
            });
            let bytes = serde_json::to_vec(&obj).map_err(|e| StoreError::Backend(e.to_string()))?;
            match self.store.create(&kind.key(None, name), bytes).await {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> &'static ResourceKind {
        registry::by_plural("", "v1", "pods").unwrap()
    }

    fn kv(name: &str, revision: Revision) -> KeyValue {
        let obj = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ns"}});
        KeyValue {
            key: format!("/registry/pods/ns/{name}"),
            value: serde_json::to_vec(&obj).unwrap(),
            create_revision: 1,
            mod_revision: revision,
        }
    }

    #[test]
    fn a_recent_object_is_decoded_once_at_each_resource_version() {
        let recent = RecentObjects::default();
        let first = recent.get_or_decode(pods(), &kv("a", 5), 5).unwrap();
        let again = recent.get_or_decode(pods(), &kv("a", 5), 5).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(first.object["metadata"]["resourceVersion"], "5");
        assert_eq!(
            serde_json::from_slice::<Value>(first.json()).unwrap(),
            first.object
        );
        assert_eq!(
            serde_json::from_slice::<Value>(first.metadata_json()).unwrap(),
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                   "metadata": {"name": "a", "namespace": "ns", "resourceVersion": "5"}})
        );
        // The same version shown at its deletion's revision is another object.
        let deleted = recent.get_or_decode(pods(), &kv("a", 5), 9).unwrap();
        assert_eq!(deleted.object["metadata"]["resourceVersion"], "9");
    }

    #[test]
    fn the_oldest_recent_objects_are_dropped() {
        let recent = RecentObjects::default();
        let first = recent.get_or_decode(pods(), &kv("p0", 1), 1).unwrap();
        for i in 1..=RECENT_OBJECTS as i64 {
            recent
                .get_or_decode(pods(), &kv(&format!("p{i}"), i + 1), i + 1)
                .unwrap();
        }
        assert_eq!(recent.lock().entries.len(), RECENT_OBJECTS);
        let decoded_again = recent.get_or_decode(pods(), &kv("p0", 1), 1).unwrap();
        assert!(!Arc::ptr_eq(&first, &decoded_again));
        assert_eq!(decoded_again.object, first.object);
    }

    #[test]
    fn a_written_object_is_what_decoding_its_stored_bytes_gives() {
        let events = registry::by_plural("events.k8s.io", "v1", "events").unwrap();
        let event = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "ns", "resourceVersion": "3"},
            "note": "pulled \"busybox\" \u{e9}", "reason": "Pulled", "deprecatedCount": 2,
            "regarding": {"kind": "Pod", "name": "p"}, "series": {"count": 1.5}});
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "busybox", "args": ["-1", ""]}],
                     "terminationGracePeriodSeconds": 30, "priority": -5},
            "status": {"phase": "Running", "conditions": []}});
        for (kind, obj) in [(events, event), (pods(), pod)] {
            let (stored, bytes) = Storage::encode(kind, &obj).unwrap();
            let kv = KeyValue {
                key: "/registry/x".into(),
                value: bytes,
                create_revision: 4,
                mod_revision: 8,
            };
            let decoded = Storage::decode(kind, &kv).unwrap();
            assert_eq!(decoded["metadata"]["resourceVersion"], "8");
            let written = Storage::written(kind, stored, &kv);
            assert_eq!(written, decoded);
            // Its watch events take the remembered object (here marked) without decoding.
            let recent = RecentObjects::default();
            let mut marked = written.clone();
            marked["marker"] = json!(1);
            recent.remember_written(kind, &kv, &marked);
            assert_eq!(recent.get_or_decode(kind, &kv, 8).unwrap().object, marked);
            // Shown at another revision (its deletion), it is decoded.
            assert_eq!(
                recent.get_or_decode(kind, &kv, 9).unwrap().object["marker"],
                Value::Null
            );
        }
    }
}
