//! The admission plugins that the binary puts in the API server's chain, one module each.
//!
//! The chain (in the order `nodeless` builds it): the default tolerations of pods for
//! unreachable nodes ([`default_tolerations`]), LimitRange defaults and limits
//! ([`limit_range`]), the service account defaults and token volume of pods
//! ([`service_account`]), then the serverless rules, which refuse what a node-less cluster
//! cannot offer and size every pod ([`serverless`]), and last ResourceQuota, which charges
//! quotas in provisioned sizes ([`resource_quota`]). Each plugin implements
//! [`nodeless_apiserver::admission::AdmissionPlugin`]; defaulting and validation are built into
//! the API server and run before them.

pub mod default_tolerations;
pub mod limit_range;
pub mod resource_quota;
pub mod serverless;
pub mod service_account;

pub use default_tolerations::DefaultTolerationSeconds;
pub use limit_range::LimitRanger;
pub use resource_quota::ResourceQuotaAdmission;
pub use serverless::ServerlessAdmission;
pub use service_account::ServiceAccountAdmission;
