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

pub mod error;
pub mod spdy;
pub mod translate;
pub mod websocket;

pub use error::StreamingError;
