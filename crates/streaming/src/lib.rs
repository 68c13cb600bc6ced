//! The wire protocols of Kubernetes streaming (`kubectl exec`, `attach`, `port-forward`).
//!
//! - [`spdy`]: SPDY/3.1 framing and client/server sessions (what kubectl ≤ 1.29 and container
//!   runtimes' streaming servers speak after an `Upgrade: SPDY/3.1`), plus the client side of that
//!   HTTP upgrade ([`spdy::spdy_upgrade`]).
//! - [`websocket`]: the `channel.k8s.io` WebSocket protocols (v4 and v5 channel frames), the
//!   WebSocket handshake helpers for a server that does its own HTTP upgrade, and wrappers that
//!   start a WebSocket over an already-upgraded connection.
//! - [`translate`]: WebSocket v5 exec/attach → SPDY v4 toward a runtime, and port-forward's
//!   SPDY-over-WebSocket tunnel → plain SPDY.
//!
//! Wiring in the agent (the runtime's streaming URL comes from CRI Exec/Attach/PortForward):
//!
//! ```text
//! SPDY client (kubectl ≤ 1.29):      answer the upgrade with 101 after spdy_upgrade_url(url,
//!                                    client's X-Stream-Protocol-Version list) succeeded, then
//!                                    tokio::io::copy_bidirectional(client, runtime)
//! WebSocket exec/attach (v5/v4):     websocket::upgrade_response(headers, &[STREAM_PROTOCOL_V5,
//!                                    STREAM_PROTOCOL_V4]) → 101; ws = accept_upgraded(upgraded);
//!                                    (rt, _) = spdy_upgrade_url(url, REMOTE_COMMAND_PROTOCOLS);
//!                                    translate::exec_websocket_to_spdy(ws, rt, streams)
//! WebSocket port-forward tunnel:     upgrade_response(headers, &[PORT_FORWARD_TUNNEL_PROTOCOL]);
//!                                    (rt, _) = spdy_upgrade_url(url, &[PORT_FORWARD_PROTOCOL]);
//!                                    translate::portforward_websocket_to_spdy(ws, rt)
//! ```

#![warn(missing_docs)]

pub mod error;
pub mod spdy;
pub mod translate;
pub mod websocket;

pub use error::StreamingError;
