//! The usage endpoint and `/metrics`, served through the API server's extension point.
//!
//! - `GET /apis/metering.nodeless.io/v1/usage` and
//!   `GET /apis/metering.nodeless.io/v1/namespaces/{ns}/usage` with `by=pod|workload|namespace`,
//!   `start=`, `end=` (RFC 3339): a [`UsageReport`];
//! - `GET /metrics`: [`prometheus_text`].

use nodeless_apiserver::extension::{ApiExtension, ExtensionRequest, ExtensionResponse};
use nodeless_apiserver::ApiError;
use time::OffsetDateTime;

use crate::ledger::Ledger;
use crate::metrics::{prometheus_text, CONTENT_TYPE};
use crate::report::{usage_report, Prices, UsageQuery};
use crate::{time_format, MeteringError};

/// The API group's path.
pub const GROUP_PATH: &str = "/apis/metering.nodeless.io";

/// The usage endpoint and the metrics, over the stored records.
pub struct MeteringApi {
    ledger: Ledger,
    prices: Prices,
}

impl MeteringApi {
    /// Serves the records of `ledger`, priced at `prices`.
    pub fn new(ledger: Ledger, prices: Prices) -> Self {
        Self { ledger, prices }
    }
}

/// Which usage path was asked for: `Some(namespace)` for a namespaced one.
fn usage_path(path: &str) -> Option<Option<&str>> {
    let rest = path.strip_prefix(GROUP_PATH)?.strip_prefix("/v1/")?;
    let rest = rest.trim_end_matches('/');
    if rest == "usage" {
        return Some(None);
    }
    let namespace = rest.strip_prefix("namespaces/")?.strip_suffix("/usage")?;
    (!namespace.is_empty() && !namespace.contains('/')).then_some(Some(namespace))
}

/// Parses the query of the usage endpoint.
pub fn parse_usage_query(
    namespace: Option<&str>,
    query: &std::collections::HashMap<String, String>,
) -> Result<UsageQuery, MeteringError> {
    let value = |key: &str| query.get(key).map(String::as_str).filter(|v| !v.is_empty());
    let time = |key: &str| -> Result<Option<OffsetDateTime>, MeteringError> {
        value(key)
            .map(|text| {
                time_format::parse(text).map_err(|error| {
                    MeteringError::InvalidQuery(format!(
                        "invalid value {text:?} for {key}: expected an RFC 3339 time such as 2026-01-02T15:04:05Z ({error})"
                    ))
                })
            })
            .transpose()
    };
    Ok(UsageQuery {
        namespace: namespace.map(str::to_string),
        group_by: value("by").map(str::parse).transpose()?.unwrap_or_default(),
        start: time("start")?,
        end: time("end")?,
    })
}

fn api_error(error: MeteringError) -> ApiError {
    match error {
        MeteringError::InvalidQuery(message) => ApiError::bad_request(message),
        other => ApiError::internal(other.to_string()),
    }
}

#[async_trait::async_trait]
impl ApiExtension for MeteringApi {
    fn claims(&self, path: &str) -> bool {
        path == "/metrics" || path == GROUP_PATH || path.starts_with(&format!("{GROUP_PATH}/"))
    }

    async fn get(&self, request: ExtensionRequest<'_>) -> Result<ExtensionResponse, ApiError> {
        let now = OffsetDateTime::now_utc();
        if request.path == "/metrics" {
            let records = self.ledger.list(None).await.map_err(api_error)?;
            return Ok(ExtensionResponse::Text {
                content_type: CONTENT_TYPE.to_string(),
                body: prometheus_text(&records, now),
            });
        }
        let Some(namespace) = usage_path(request.path) else {
            return Err(ApiError::no_route(format!(
                "the server could not find the requested resource: {} serves {GROUP_PATH}/v1/usage and {GROUP_PATH}/v1/namespaces/{{namespace}}/usage",
                request.path
            )));
        };
        let query = parse_usage_query(namespace, &request.query).map_err(api_error)?;
        let records = self.ledger.list(namespace).await.map_err(api_error)?;
        let report = usage_report(&records, &query, &self.prices, now).map_err(api_error)?;
        serde_json::to_value(report)
            .map(ExtensionResponse::Json)
            .map_err(|error| ApiError::internal(error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::GroupBy;

    #[test]
    fn usage_paths() {
        assert_eq!(
            usage_path("/apis/metering.nodeless.io/v1/usage"),
            Some(None)
        );
        assert_eq!(
            usage_path("/apis/metering.nodeless.io/v1/namespaces/team-a/usage"),
            Some(Some("team-a"))
        );
        assert_eq!(
            usage_path("/apis/metering.nodeless.io/v1/namespaces//usage"),
            None
        );
        assert_eq!(usage_path("/apis/metering.nodeless.io/v1/pods"), None);
        assert_eq!(usage_path("/api/v1/usage"), None);
    }

    #[test]
    fn bad_query_values_are_refused_with_their_name() {
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let error = parse_usage_query(None, &q(&[("by", "node")])).unwrap_err();
        assert!(error.to_string().contains("by"), "{error}");
        let error = parse_usage_query(None, &q(&[("start", "yesterday")])).unwrap_err();
        assert!(error.to_string().contains("start"), "{error}");
        let ok = parse_usage_query(
            Some("a"),
            &q(&[("by", "workload"), ("end", "2026-01-01T00:00:00Z")]),
        )
        .unwrap();
        assert_eq!(ok.group_by, GroupBy::Workload);
        assert_eq!(ok.namespace.as_deref(), Some("a"));
        assert!(ok.start.is_none() && ok.end.is_some());
    }
}
