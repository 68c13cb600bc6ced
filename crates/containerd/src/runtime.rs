//! [`ContainerdRuntime`]: the agent's runtime over containerd's CRI.

/// The agent's runtime over CRI.
pub struct ContainerdRuntime {}
