//! The usage records in the store: listing, creating and compare-and-swap updates.

use std::sync::Arc;

use nodeless_store::{RangeRequest, Revision, Store, StoreError};

use crate::record::{namespace_prefix, UsageRecord};
use crate::MeteringError;

/// How many records one range page reads.
const PAGE: usize = 500;

/// The stored usage records, over any [`Store`] backend.
#[derive(Clone)]
pub struct Ledger {
    store: Arc<dyn Store>,
}

impl Ledger {
    /// A ledger over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Every record (of one namespace, or all), with its mod revision, read at one revision.
    pub async fn list_with_revisions(
        &self,
        namespace: Option<&str>,
    ) -> Result<Vec<(UsageRecord, Revision)>, MeteringError> {
        let prefix = namespace_prefix(namespace);
        let mut records = Vec::new();
        let mut start_key: Option<String> = None;
        let mut revision = None;
        loop {
            let page = self
                .store
                .range(RangeRequest {
                    prefix: &prefix,
                    start_key: start_key.as_deref(),
                    limit: Some(PAGE),
                    revision,
                })
                .await?;
            revision = Some(page.revision);
            for kv in &page.kvs {
                match UsageRecord::decode(&kv.value) {
                    Ok(record) => records.push((record, kv.mod_revision)),
                    Err(error) => {
                        tracing::warn!(key = %kv.key, %error, "skipping an unreadable usage record")
                    }
                }
            }
            match (page.more, page.kvs.last()) {
                (true, Some(last)) => start_key = Some(format!("{}\0", last.key)),
                _ => break,
            }
        }
        Ok(records)
    }

    /// Every record (of one namespace, or all).
    pub async fn list(&self, namespace: Option<&str>) -> Result<Vec<UsageRecord>, MeteringError> {
        Ok(self
            .list_with_revisions(namespace)
            .await?
            .into_iter()
            .map(|(record, _)| record)
            .collect())
    }

    /// Stores a new record; `Ok(None)` if its key exists already (the same interval seen
    /// twice), with the stored record in `Some` otherwise.
    pub async fn create(&self, record: &UsageRecord) -> Result<Option<UsageRecord>, MeteringError> {
        match self.store.create(&record.key(), record.encode()).await {
            Ok(_) => Ok(Some(record.clone())),
            Err(StoreError::AlreadyExists { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Reads one record.
    pub async fn get(&self, key: &str) -> Result<Option<(UsageRecord, Revision)>, MeteringError> {
        match self.store.get(key, None).await? {
            Some(kv) => {
                let record =
                    UsageRecord::decode(&kv.value).map_err(|source| MeteringError::Decode {
                        key: key.to_string(),
                        source,
                    })?;
                Ok(Some((record, kv.mod_revision)))
            }
            None => Ok(None),
        }
    }

    /// Applies `change` to the stored record with compare-and-swap, retrying on conflicts;
    /// `change` returns false to leave the record as it is. The record as stored afterwards,
    /// `None` if there is none.
    pub async fn modify(
        &self,
        key: &str,
        mut change: impl FnMut(&mut UsageRecord) -> bool,
    ) -> Result<Option<UsageRecord>, MeteringError> {
        for _ in 0..16 {
            let Some((mut record, revision)) = self.get(key).await? else {
                return Ok(None);
            };
            if !change(&mut record) {
                return Ok(Some(record));
            }
            match self.store.update(key, record.encode(), revision).await {
                Ok(_) => return Ok(Some(record)),
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound { .. }) => return Ok(None),
                Err(error) => return Err(error.into()),
            }
        }
        Err(MeteringError::Contended {
            key: key.to_string(),
        })
    }
}
