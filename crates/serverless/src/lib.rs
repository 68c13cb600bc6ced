//! The rules that make the cluster serverless, shared by admission, the scheduler, the agent and
//! metering:
//!
//! - [restrictions](check_object): the pod features a sandbox cannot offer (DaemonSets,
//!   hostPath, probes, privileged containers, extra capabilities, node ports, host namespaces and
//!   host ports), each a named [`Rule`] that an operator may relax with a [`Policy`];
//! - [sizing](SizeTable): how a pod's limits (or requests) become a provisioned [`Size`] from a
//!   size table, written to the pod's [`ANNOTATION`];
//! - [quota usage](quota): what an object counts against a ResourceQuota, pods counted in their
//!   provisioned size.
#![deny(missing_docs)]

mod error;
mod policy;
pub mod quota;
mod restrictions;
mod sizing;

pub use error::ServerlessError;
pub use policy::{
    rule, Policy, Rule, NO_DAEMONSET, NO_EXTRA_CAPABILITIES, NO_HOST_IPC, NO_HOST_NETWORK,
    NO_HOST_PATH, NO_HOST_PID, NO_HOST_PORT, NO_NODE_PORT, NO_PRIVILEGED, NO_PROBES, RULES,
};
pub use restrictions::{
    check_object, check_pod_spec, is_allowed_capability, pod_spec_of, Violation,
    ALLOWED_CAPABILITIES,
};
pub use sizing::{
    demand, demand_at, provision, rounding_warning, Demand, Provisioned, Size, SizeClass,
    SizeTable, ANNOTATION, DEFAULT_TABLE,
};
