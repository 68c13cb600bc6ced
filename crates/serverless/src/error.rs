//! The one error type of the crate.

use std::path::PathBuf;

/// Why a policy, a size table, a size or a pod's demand cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ServerlessError {
    /// A policy names a rule that does not exist.
    #[error("unknown serverless rule {name:?}; the known rules are: {known}")]
    UnknownRule {
        /// The name as written.
        name: String,
        /// The known rule names, comma separated.
        known: String,
    },
    /// A policy or size table file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A policy file is neither a JSON list of strings nor a list of names.
    #[error("invalid serverless policy: {0}")]
    PolicyFormat(String),
    /// A line of a size table is malformed.
    #[error("invalid size table, line {line}: {message}")]
    TableFormat {
        /// The 1-based line number (0 when the table as a whole is wrong).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A string is not a size in the annotation form `0.5vCPU 1GiB`.
    #[error("invalid size {value:?}: {message}")]
    SizeFormat {
        /// The string as written.
        value: String,
        /// What is wrong.
        message: String,
    },
    /// A container's limit or request is not a usable quantity.
    #[error("{field}: invalid quantity {value}: {message}")]
    Quantity {
        /// Where, in upstream path notation (`spec.containers[0].resources.limits[cpu]`).
        field: String,
        /// The value as written.
        value: serde_json::Value,
        /// What is wrong.
        message: String,
    },
    /// The pod asks for more than the largest size of the table.
    #[error(
        "the pod's resources ({demand}) exceed the largest size this cluster provisions \
         ({largest}); lower the containers' limits (or requests) to fit"
    )]
    TooLarge {
        /// The pod's demand, formatted as `20 vCPU 8GiB`.
        demand: String,
        /// The largest size of the table, formatted as `16vCPU 120GiB`.
        largest: String,
    },
}
