//! Request and response plumbing: query parameters, body decoding, content negotiation.

use std::collections::HashMap;

use bytes::Bytes;
use futures::Stream;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::Response;
use serde_json::Value;

use crate::server::Identity;
use crate::ApiError;

/// The response body type: a whole buffer or a stream (watch).
pub type Body = BoxBody<Bytes, std::convert::Infallible>;

/// Upstream's limit on request bodies.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// A request with its body read and its query parsed.
pub struct ApiRequest {
    pub method: Method,
    pub path: String,
    pub query: Query,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub identity: Option<Identity>,
}

impl ApiRequest {
    pub fn new(parts: http::request::Parts, body: Bytes, identity: Option<Identity>) -> Self {
        let query = Query::parse(parts.uri.query().unwrap_or(""));
        Self {
            method: parts.method,
            path: parts.uri.path().to_string(),
            query,
            headers: parts.headers,
            body,
            identity,
        }
    }

    /// A request header as a string, if present and valid.
    pub fn header(&self, name: impl http::header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The media type of the body without parameters, lowercased.
    pub fn content_type(&self) -> String {
        self.header(http::header::CONTENT_TYPE)
            .map(|c| {
                c.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default()
    }

    /// Decodes a JSON or YAML body into a JSON value.
    pub fn decode_body(&self) -> Result<Value, ApiError> {
        let ct = self.content_type();
        decode(&self.body, &ct)
    }

    /// The field manager of a write, defaulted from the user agent as upstream does.
    pub fn field_manager(&self) -> String {
        if let Some(m) = self.query.get("fieldManager") {
            return m.to_string();
        }
        let agent = self.header(http::header::USER_AGENT).unwrap_or("unknown");
        agent.split('/').next().unwrap_or("unknown").to_string()
    }
}

/// Decodes a body of the given media type.
pub fn decode(body: &[u8], content_type: &str) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    match content_type {
        ""
        | "application/json"
        | "application/json-patch+json"
        | "application/merge-patch+json"
        | "application/strategic-merge-patch+json"
        | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("couldn't decode the request body as JSON: {e}"))
        }),
        "application/yaml"
        | "application/apply-patch+yaml"
        | "application/x-yaml"
        | "text/yaml" => {
            let value: serde_yaml::Value = serde_yaml::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("couldn't decode the request body as YAML: {e}"))
            })?;
            serde_json::to_value(value).map_err(|e| {
                ApiError::bad_request(format!("the YAML body is not valid JSON data: {e}"))
            })
        }
        "application/vnd.kubernetes.protobuf" => nodeless_api::protobuf::decode_object(body)
            .map_err(|e| {
                ApiError::bad_request(format!("couldn't decode the protobuf request body: {e}"))
            }),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

/// Parsed query parameters (last value wins, as upstream's decoding of single parameters).
#[derive(Debug, Default, Clone)]
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(raw: &str) -> Self {
        let mut map = HashMap::new();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            map.insert(percent_decode(k), percent_decode(v));
        }
        Self(map)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A boolean parameter: `true`/`1` (upstream also takes `watch=1`).
    pub fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.get(key) {
            None => Ok(false),
            Some("true" | "1" | "True") => Ok(true),
            Some("false" | "0" | "False") => Ok(false),
            Some(other) => Err(ApiError::bad_request(format!(
                "invalid value {other:?} for boolean parameter {key}"
            ))),
        }
    }

    /// An optional integer parameter, validated.
    pub fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                ApiError::bad_request(format!("invalid value {v:?} for integer parameter {key}"))
            }),
        }
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What representation the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Json,
    Yaml,
    /// `meta.k8s.io/v1` `Table`.
    Table,
    /// `meta.k8s.io/v1` `PartialObjectMetadata` (or its list).
    Metadata,
}

/// Picks the representation from the Accept header, or 406.
pub fn negotiate(accept: Option<&str>) -> Result<Output, ApiError> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(Output::Json);
    };
    for item in accept.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let params: HashMap<String, String> = parts
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let as_ = params.get("as").map(String::as_str);
        match (media.as_str(), as_) {
            ("application/json" | "*/*" | "application/*", None) => return Ok(Output::Json),
            ("application/yaml", None) => return Ok(Output::Yaml),
            ("application/json", Some("Table"))
                if params.get("g").map(String::as_str) == Some("meta.k8s.io") =>
            {
                return Ok(Output::Table)
            }
            ("application/json", Some("PartialObjectMetadata" | "PartialObjectMetadataList"))
                if params.get("g").map(String::as_str) == Some("meta.k8s.io") =>
            {
                return Ok(Output::Metadata)
            }
            _ => continue,
        }
    }
    Err(ApiError::not_acceptable(
        "only the following media types are accepted: application/json, application/yaml, application/json;as=Table;v=v1;g=meta.k8s.io",
    ))
}

/// A whole-body response.
pub fn bytes_response(code: u16, content_type: &str, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed());
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

/// A JSON (or YAML) response.
pub fn value_response(code: u16, value: &Value, output: Output) -> Response<Body> {
    if output == Output::Yaml {
        if let Ok(text) = serde_yaml::to_string(value) {
            return bytes_response(code, "application/yaml", text.into_bytes());
        }
    }
    bytes_response(
        code,
        "application/json",
        serde_json::to_vec(value).unwrap_or_default(),
    )
}

/// A `Status` response for an error.
pub fn error_response(err: &ApiError) -> Response<Body> {
    value_response(err.code, &err.to_status(), Output::Json)
}

/// A streaming response (watch), one chunk per item.
pub fn stream_response<S>(content_type: &str, stream: S) -> Response<Body>
where
    S: Stream<Item = Bytes> + Send + Sync + 'static,
{
    use futures::StreamExt;
    let body = StreamBody::new(stream.map(|b| Ok::<_, std::convert::Infallible>(Frame::data(b))));
    let mut resp = Response::new(BodyExt::boxed(body));
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    resp
}

/// Adds `Warning: 299 - "..."` headers, as upstream does for deprecations and unknown fields.
pub fn add_warnings(resp: &mut Response<Body>, warnings: &[String]) {
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            resp.headers_mut().append(http::header::WARNING, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = Query::parse("labelSelector=app%3Dweb%2Ctier+in+(a)&limit=5&watch=1&x=%zz");
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert_eq!(q.int("limit").unwrap(), Some(5));
        assert!(q.flag("watch").unwrap());
        assert_eq!(q.get("x"), Some("%zz"));
        assert!(Query::parse("limit=abc").int("limit").is_err());
    }

    #[test]
    fn negotiation() {
        assert_eq!(negotiate(None).unwrap(), Output::Json);
        assert_eq!(
            negotiate(Some(
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
            ))
            .unwrap(),
            Output::Table
        );
        assert_eq!(
            negotiate(Some(
                "application/vnd.kubernetes.protobuf, application/json"
            ))
            .unwrap(),
            Output::Json
        );
        assert!(negotiate(Some("application/vnd.kubernetes.protobuf")).is_err());
        assert_eq!(negotiate(Some("application/yaml")).unwrap(), Output::Yaml);
    }
}
