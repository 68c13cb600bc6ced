//! The Kubernetes HTTP API server.
