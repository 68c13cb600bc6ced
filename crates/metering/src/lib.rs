//! Metering: pod sandbox lifetimes as vCPU-seconds and GiB-seconds of their provisioned size.
//!
//! The [`meter`] follows pod status as the agent writes it (the `PodReadyToStartContainers`
//! condition) and keeps one durable [`UsageRecord`] per sandbox interval in the cluster's
//! [`Store`](nodeless_store::Store) ([`Ledger`]); [`report`] sums records over a time window
//! by pod, workload or namespace and prices them; [`api`] serves the usage endpoint and
//! `/metrics` through the API server's extension point.

pub mod api;
pub mod ledger;
pub mod meter;
pub mod metrics;
pub mod record;
pub mod report;
pub mod time_format;

#[cfg(test)]
mod tests;

pub use api::MeteringApi;
pub use ledger::Ledger;
pub use meter::{close_node_records, run, Meter, MeterOptions};
pub use record::{UsageRecord, Workload, USAGE_PREFIX};
pub use report::{usage_report, GroupBy, Prices, UsageQuery, UsageReport};

/// Errors of metering.
#[derive(Debug, thiserror::Error)]
pub enum MeteringError {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] nodeless_store::StoreError),
    /// A stored record could not be read.
    #[error("usage record {key}: {source}")]
    Decode {
        /// The record's key.
        key: String,
        /// Why.
        source: serde_json::Error,
    },
    /// A record kept changing under concurrent writers.
    #[error("usage record {key}: too many concurrent updates")]
    Contended {
        /// The record's key.
        key: String,
    },
    /// A query parameter is invalid (a 400).
    #[error("{0}")]
    InvalidQuery(String),
}
