//! Server-side apply (placeholder until implemented).
