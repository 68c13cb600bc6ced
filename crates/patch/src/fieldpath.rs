//! Field sets (placeholder).
