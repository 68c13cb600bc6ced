//! Patches and server-side apply on JSON documents, driven by OpenAPI v2 definitions.
//!
//! The four patch kinds the Kubernetes API server accepts are implemented on
//! [`serde_json::Value`] documents with upstream semantics:
//!
//! - [`json_patch`]: RFC 6902 JSON patch,
//! - [`merge_patch`]: RFC 7386 JSON merge patch,
//! - [`strategic_merge_patch`]: the Kubernetes strategic merge patch
//!   (`k8s.io/apimachinery/pkg/util/strategicpatch`),
//! - [`apply`]: server-side apply with managed fields
//!   (`sigs.k8s.io/structured-merge-diff`).
#![deny(missing_docs)]

mod apply;
mod fieldpath;
mod json_patch;
mod merge_patch;
mod schema;
mod strategic;
mod util;

pub use apply::{apply, update_managed_fields, ApplyError, ApplyResult, Conflict, Conflicts};
pub use json_patch::json_patch;
pub use merge_patch::merge_patch;
pub use schema::SchemaRef;
pub use strategic::strategic_merge_patch;

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch document itself is malformed (upstream answers 400 Bad Request).
    #[error("{0}")]
    Malformed(String),
    /// The patch is well formed but cannot be applied to this document
    /// (upstream answers 422 Unprocessable Entity).
    #[error("{0}")]
    Unprocessable(String),
}

impl PatchError {
    /// The message, without the classification.
    pub fn message(&self) -> &str {
        match self {
            PatchError::Malformed(m) | PatchError::Unprocessable(m) => m,
        }
    }
}
