//! The containerd runtime of the agent.
//!
//! - [`supervisor`]: launches and supervises a containerd of the agent's own (config, root,
//!   state and socket under the data dir, the k3s way), so it never touches a system
//!   containerd; checks first that containerd, runc and the CNI plugins are installed.
//! - [`cni`]: the CNI network of the node (a bridge with host-local IPAM on the pod CIDR).
//! - [`pause`]: the sandbox image, built from the project's own tiny static binary and imported
//!   at start, so no registry is needed for it.
//! - [`cri`]: the gRPC connection to containerd's CRI (`runtime.v1`) over its unix socket.
//! - [`runtime`]: [`ContainerdRuntime`], the agent's [`nodeless_agent::Runtime`] over CRI.
//! - [`pool`]: the warm sandbox pool that pod starts take their sandbox from.

pub mod cgroups;
pub mod cni;
pub mod cri;
pub mod pause;
pub mod pool;
pub mod runtime;
pub mod supervisor;

pub use runtime::ContainerdRuntime;

/// Errors of the containerd runtime.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    /// A program or plugin the runtime needs is not installed.
    #[error(
        "{what} not found; install the Debian package `{package}` (apt-get install {package})"
    )]
    Missing {
        /// What is missing (`containerd`, `runc`, `the CNI bridge plugin`).
        what: String,
        /// The Debian package that provides it.
        package: String,
    },
    /// A file or folder could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// containerd did not start or stopped answering.
    #[error("containerd: {0}")]
    Start(String),
    /// The connection to containerd's socket failed.
    #[error("connecting to containerd: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A CRI call failed.
    #[error("CRI: {0}")]
    Cri(#[from] tonic::Status),
    /// The configuration is not usable.
    #[error("configuration: {0}")]
    Config(String),
}

impl ContainerdError {
    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
