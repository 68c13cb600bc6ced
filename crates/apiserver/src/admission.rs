//! Admission: what happens to an object between decoding and storage. Defaulting and
//! validation are built in; policy plugins (such as the serverless rules) are added by the
//! binary and run on every create and update of every kind, in order.

use std::sync::Arc;

use nodeless_api::registry::ResourceKind;
use serde_json::Value;

pub use crate::storage::{Page, Storage};
use crate::ApiError;

/// The write being admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
}

/// What a plugin sees of a write.
pub struct AdmissionRequest<'a> {
    pub kind: &'a ResourceKind,
    pub operation: Operation,
    /// The subresource written (`status`, `scale`), if any.
    pub subresource: Option<&'a str>,
    /// The object as it is now, for updates.
    pub old: Option<&'a Value>,
    pub dry_run: bool,
    /// The namespace written to (empty for cluster-scoped kinds).
    pub namespace: &'a str,
    /// Who makes the request (`None` for the server's own writes).
    pub user: Option<&'a crate::server::Identity>,
    /// The objects in the store, for plugins that look up others (quotas, service accounts).
    pub storage: &'a Storage,
}

/// An admission plugin: may change the object (mutating), refuse it, and add warnings.
#[async_trait::async_trait]
pub trait AdmissionPlugin: Send + Sync {
    /// A name for logs.
    fn name(&self) -> &'static str;
    /// Admits (and possibly mutates) `obj`; returns warnings for the client.
    async fn admit(
        &self,
        request: &AdmissionRequest<'_>,
        obj: &mut Value,
    ) -> Result<Vec<String>, ApiError>;
}

/// The chain of plugins.
#[derive(Clone, Default)]
pub struct Admission {
    plugins: Vec<Arc<dyn AdmissionPlugin>>,
}

impl Admission {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a plugin at the end of the chain.
    pub fn with(mut self, plugin: Arc<dyn AdmissionPlugin>) -> Self {
        self.plugins.push(plugin);
        self
    }

    /// Runs every plugin; stops at the first refusal.
    pub async fn admit(
        &self,
        request: &AdmissionRequest<'_>,
        obj: &mut Value,
    ) -> Result<Vec<String>, ApiError> {
        let mut warnings = Vec::new();
        for plugin in &self.plugins {
            warnings.extend(plugin.admit(request, obj).await?);
        }
        Ok(warnings)
    }
}
