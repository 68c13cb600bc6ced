//! The Kubernetes HTTP API server.
//!
//! A request goes through [`server`] (TLS, authentication) to [`route`] (which resource the
//! path names) to the generic [`handlers`], which read and write objects through
//! [`storage`] after [`admission`] (defaulting, validation, policy plugins). Nothing here is
//! specific to one kind: kind-specific rules come from `nodeless_api`.

pub mod admission;
pub mod bootstrap_token;
pub mod certificates;
pub mod cluster_ca;
mod discovery;
pub mod extension;
mod handlers;
mod http_util;
mod node_proxy;
mod objects;
pub mod pki;
mod route;
pub mod server;
pub mod services;
mod status;
pub mod storage;
pub mod tokens;

pub use server::{ApiServer, ServerConfig};
pub use status::ApiError;

/// Errors of starting and running the API server (request errors are [`ApiError`]s).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("pki: {0}")]
    Pki(String),
    #[error("tls: {0}")]
    Tls(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("store: {0}")]
    Store(#[from] nodeless_store::StoreError),
}
