//! Objects in the store: the encoding of a kind's objects under their keys, and the
//! resourceVersion, which is the store's mod revision of the key.

use std::sync::Arc;

use nodeless_api::registry::{self, ResourceKind};
use nodeless_store::{KeyValue, RangeRequest, Revision, Store, StoreError};
use serde_json::{json, Value};

use crate::objects;
use crate::ApiError;

/// Reads and writes objects of any kind.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn Store>,
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
        Self { store }
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

    fn encode(kind: &ResourceKind, obj: &Value) -> Result<Vec<u8>, ApiError> {
        let mut obj = obj.clone();
        objects::meta_mut(&mut obj).remove("resourceVersion");
        nodeless_api::conversion::to_stored(kind.group, kind.kind, &mut obj);
        serde_json::to_vec(&obj).map_err(|e| ApiError::internal(format!("encoding object: {e}")))
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
        match self.store.create(&key, Self::encode(kind, obj)?).await {
            Ok(kv) => Self::decode(kind, &kv),
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
        match self
            .store
            .update(&key, Self::encode(kind, obj)?, expected)
            .await
        {
            Ok(kv) => Self::decode(kind, &kv),
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
        let items = result
            .kvs
            .iter()
            .map(|kv| Self::decode(kind, kv))
            .collect::<Result<Vec<_>, _>>()?;
        let remaining = result.count.saturating_sub(result.kvs.len() as u64);
        let next_key = if result.more {
            result.kvs.last().map(|kv| format!("{}\u{0}", kv.key))
        } else {
            None
        };
        Ok(Page {
            items,
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
