//! A generic extension point: a component of the binary claims a path prefix and answers the
//! GET requests under it, behind the API server's authentication (e.g. metering's usage
//! endpoint and `/metrics`). The API server knows nothing of what an extension serves.

use std::collections::HashMap;
use std::sync::Arc;

use hyper::Response;

use crate::http_util::{self, Body};
use crate::server::Identity;
use crate::ApiError;

/// A GET request handed to an [`ApiExtension`].
#[derive(Debug)]
pub struct ExtensionRequest<'a> {
    /// The request path (no query).
    pub path: &'a str,
    /// The query parameters, percent-decoded (`+` is a space, as in Go's `url.ParseQuery`);
    /// the last value of a repeated parameter wins.
    pub query: HashMap<String, String>,
    /// The authenticated caller.
    pub user: &'a Identity,
}

/// What an extension answers with.
#[derive(Debug, Clone, PartialEq)]
pub enum ExtensionResponse {
    /// A JSON document with status 200.
    Json(serde_json::Value),
    /// A text body with status 200 and the given content type.
    Text {
        /// The `Content-Type` header.
        content_type: String,
        /// The body.
        body: String,
    },
}

/// A component that serves GET requests under paths it claims.
#[async_trait::async_trait]
pub trait ApiExtension: Send + Sync + 'static {
    /// Whether this extension serves `path` (checked in order; the first claim wins).
    fn claims(&self, path: &str) -> bool;

    /// Answers a GET request for a claimed path; errors become `Status` responses.
    async fn get(&self, request: ExtensionRequest<'_>) -> Result<ExtensionResponse, ApiError>;
}

/// Answers the request if an extension claims its path (`None`: not an extension's path).
pub(crate) async fn dispatch<B>(
    extensions: &[Arc<dyn ApiExtension>],
    identity: &Identity,
    request: &http::Request<B>,
) -> Option<Response<Body>> {
    let path = request.uri().path();
    let extension = extensions.iter().find(|e| e.claims(path))?;
    if request.method() != http::Method::GET {
        let error = ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource: {path} serves GET only"
        ));
        return Some(http_util::error_response(&error));
    }
    let extension_request = ExtensionRequest {
        path,
        query: parse_query(request.uri().query().unwrap_or("")),
        user: identity,
    };
    let response = match extension.get(extension_request).await {
        Ok(ExtensionResponse::Json(value)) => {
            http_util::value_response(200, &value, http_util::Output::Json)
        }
        Ok(ExtensionResponse::Text { content_type, body }) => {
            http_util::bytes_response(200, &content_type, body.into_bytes())
        }
        Err(error) => http_util::error_response(&error),
    };
    Some(response)
}

/// Parses a raw query string into percent-decoded pairs.
pub(crate) fn parse_query(raw: &str) -> HashMap<String, String> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(key), decode_component(value))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+` (a space); malformed escapes are kept as they are.
fn decode_component(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes[i] {
            b'%' => bytes
                .get(i + 1..i + 3)
                .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok()),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, other) => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_percent_decoded() {
        let query =
            parse_query("by=pod&start=2026-01-01T00%3A00%3A00%2B01%3A00&x=a+b&bad=%4&odd=%+1&y");
        assert_eq!(query["by"], "pod");
        assert_eq!(query["start"], "2026-01-01T00:00:00+01:00");
        assert_eq!(query["x"], "a b");
        assert_eq!(query["bad"], "%4");
        assert_eq!(query["odd"], "% 1");
        assert_eq!(query["y"], "");
    }
}
