//! The gRPC connection to containerd's CRI (`runtime.v1`) over its unix socket, and the
//! generated CRI clients and messages.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::ContainerdError;

/// The CRI messages and services of `runtime.v1` (e.g. `api::VersionRequest`).
pub use k8s_cri::v1 as api;
/// The client of CRI's image service (pull, list, status, remove).
pub use k8s_cri::v1::image_service_client::ImageServiceClient;
/// The client of CRI's runtime service (sandboxes, containers, exec, port-forward).
pub use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;

/// How long connecting to the socket may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to a gRPC server on the unix socket `socket` (containerd's `containerd.sock`).
///
/// The channel reconnects by itself (to the same socket) when containerd restarts.
pub async fn connect(socket: &Path) -> Result<Channel, ContainerdError> {
    let socket: PathBuf = socket.to_path_buf();
    // The URI is not used to connect (the connector opens the socket), but tonic needs one.
    let channel = Endpoint::from_static("http://containerd.sock")
        .connect_timeout(CONNECT_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await?;
    Ok(channel)
}

/// The runtime's name and version as the kubelet reports it in a Node's
/// `containerRuntimeVersion` (e.g. `containerd://1.6.20`), from CRI's `Version` call.
pub async fn runtime_version(channel: Channel) -> Result<String, ContainerdError> {
    let response = RuntimeServiceClient::new(channel)
        .version(api::VersionRequest {
            version: "v1".to_string(),
        })
        .await?
        .into_inner();
    Ok(format!(
        "{}://{}",
        response.runtime_name, response.runtime_version
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connecting_to_a_missing_socket_fails() {
        let dir = tempfile::tempdir().unwrap();
        let error = connect(&dir.path().join("absent.sock")).await.unwrap_err();
        assert!(matches!(error, ContainerdError::Transport(_)), "{error}");
    }
}
