//! SPDY/3.1 as Kubernetes streaming uses it (moby/spdystream on the Go side).

pub mod frame;
pub mod headers;
pub mod session;
pub mod upgrade;

pub use frame::Frame;
pub use headers::{header_dictionary, Headers};
pub use session::{Role, SpdySession, SpdyStream};
pub use upgrade::{
    is_spdy_upgrade, requested_protocols, spdy_upgrade, spdy_upgrade_url, upgrade_response,
    PrefixedIo,
};

/// The `Upgrade` token of SPDY streaming.
pub const SPDY_UPGRADE: &str = "SPDY/3.1";
/// The header that carries the streaming sub-protocol in the upgrade.
pub const PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";
/// The header naming a stream's role (`error`, `stdin`, `stdout`, `stderr`, `resize`, `data`).
pub const STREAM_TYPE_HEADER: &str = "streamType";
/// The port-forward header naming the container port of a stream pair.
pub const PORT_HEADER: &str = "port";
/// The port-forward header pairing a `data` and an `error` stream.
pub const REQUEST_ID_HEADER: &str = "requestID";
/// The remote-command protocols in preference order (kubectl 1.27 offers these).
pub const REMOTE_COMMAND_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
/// The port-forward protocol.
pub const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";
