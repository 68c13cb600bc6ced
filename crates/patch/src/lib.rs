//! Patches and server-side apply on JSON documents, driven by OpenAPI v2 definitions.
