//! The Kubernetes resource model, independent of HTTP and storage: which kinds exist
//! (the registry), their schemas, defaulting, validation, selectors and table printing.
//!
//! Objects are handled as `serde_json::Value` everywhere so that one generic set of
//! handlers serves every kind; kind-specific behaviour is looked up by `(group, kind)`.

pub mod conversion;
pub mod defaults;
pub mod error;
pub mod fields;
pub mod names;
pub mod protobuf;
pub mod quantity;
pub mod registry;
pub mod schema;
pub mod selector;
pub mod table;
pub mod validation;
