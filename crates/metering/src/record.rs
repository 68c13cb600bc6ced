//! The durable usage record: one per pod sandbox interval, and its key layout.
//!
//! Key: `/registry/metering.nodeless.io/usage/<namespace>/<pod uid>/<start RFC 3339>`, so that
//! `nodeless export`/`import` carry the records, a namespace's records are one prefix and a
//! pod's intervals sort by start.

use nodeless_serverless::Size;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::time_format;

/// The prefix of every usage record.
pub const USAGE_PREFIX: &str = "/registry/metering.nodeless.io/usage/";

/// The API version written into records and reports.
pub const API_VERSION: &str = "metering.nodeless.io/v1";

/// What a pod counts for: its controller, resolved through ownerReferences (a ReplicaSet's
/// pod counts for its Deployment, a Job's for its CronJob), or the pod itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    /// The owner's apiVersion (`apps/v1`; `v1` for a bare pod).
    pub api_version: String,
    /// The owner's kind (`Deployment`, `CronJob`, ...; `Pod` for a bare pod).
    pub kind: String,
    /// The owner's name.
    pub name: String,
}

impl Workload {
    /// The workload of a pod without a controller: the pod itself.
    pub fn bare_pod(name: &str) -> Self {
        Self {
            api_version: "v1".to_string(),
            kind: "Pod".to_string(),
            name: name.to_string(),
        }
    }
}

/// One pod sandbox interval, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageRecord {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// Always `UsageRecord`.
    pub kind: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's uid.
    pub uid: String,
    /// What the pod counts for.
    pub workload: Workload,
    /// The node the pod ran on (empty if unknown).
    #[serde(default)]
    pub node: String,
    /// The provisioned size, as the annotation writes it (`0.25vCPU 0.5GiB`).
    pub size: String,
    /// The size's CPU in thousandths of a vCPU.
    pub millicpu: u64,
    /// The size's memory in bytes.
    pub memory_bytes: u64,
    /// When the sandbox came up (`PodReadyToStartContainers` went True).
    #[serde(with = "time_format::rfc3339")]
    pub start: OffsetDateTime,
    /// When it was torn down; `None` while it runs.
    #[serde(with = "time_format::rfc3339_option", default)]
    pub end: Option<OffsetDateTime>,
    /// The last time the meter saw the sandbox running (heartbeat); where an open record is
    /// closed when its pod vanished while the meter was not looking.
    #[serde(with = "time_format::rfc3339")]
    pub last_seen: OffsetDateTime,
}

impl UsageRecord {
    /// A new open record.
    pub fn open(
        namespace: &str,
        pod: &str,
        uid: &str,
        workload: Workload,
        size: Size,
        start: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            api_version: API_VERSION.to_string(),
            kind: "UsageRecord".to_string(),
            namespace: namespace.to_string(),
            pod: pod.to_string(),
            uid: uid.to_string(),
            workload,
            node: String::new(),
            size: size.to_string(),
            millicpu: size.millicpu,
            memory_bytes: size.memory_bytes,
            start,
            end: None,
            last_seen: now.max(start),
        }
    }

    /// The record's key.
    pub fn key(&self) -> String {
        record_key(&self.namespace, &self.uid, self.start)
    }

    /// The provisioned size.
    pub fn provisioned(&self) -> Size {
        Size {
            millicpu: self.millicpu,
            memory_bytes: self.memory_bytes,
        }
    }

    /// Whether the sandbox still runs (as far as the record knows).
    pub fn is_open(&self) -> bool {
        self.end.is_none()
    }

    /// The interval's end for accounting: its end, or `now` while open (never before start).
    pub fn effective_end(&self, now: OffsetDateTime) -> OffsetDateTime {
        self.end.unwrap_or(now).max(self.start)
    }

    /// Seconds of the interval inside `[window_start, window_end)`, with open records running
    /// until `now`.
    pub fn seconds_within(
        &self,
        window_start: OffsetDateTime,
        window_end: OffsetDateTime,
        now: OffsetDateTime,
    ) -> f64 {
        let from = self.start.max(window_start);
        let to = self.effective_end(now).min(window_end);
        if to <= from {
            0.0
        } else {
            time_format::seconds_between(from, to)
        }
    }

    /// Closes the record at `end` (kept at or after its start); last_seen follows if later.
    pub fn close(&mut self, end: OffsetDateTime) {
        let end = end.max(self.start);
        self.end = Some(end);
        self.last_seen = self.last_seen.max(end);
    }

    /// The record as stored.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A stored record.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The key of the record of pod `uid` in `namespace` whose sandbox came up at `start`.
pub fn record_key(namespace: &str, uid: &str, start: OffsetDateTime) -> String {
    format!(
        "{USAGE_PREFIX}{namespace}/{uid}/{}",
        time_format::format(start)
    )
}

/// The prefix of a namespace's records (`None`: every namespace).
pub fn namespace_prefix(namespace: Option<&str>) -> String {
    match namespace {
        Some(namespace) => format!("{USAGE_PREFIX}{namespace}/"),
        None => USAGE_PREFIX.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> OffsetDateTime {
        time_format::parse(text).unwrap()
    }

    fn record() -> UsageRecord {
        UsageRecord::open(
            "default",
            "web-1",
            "u1",
            Workload::bare_pod("web-1"),
            Size::parse("0.25vCPU 0.5GiB").unwrap(),
            at("2026-01-01T00:00:10Z"),
            at("2026-01-01T00:00:12Z"),
        )
    }

    #[test]
    fn record_round_trips_through_its_stored_form() {
        let mut r = record();
        assert_eq!(
            r.key(),
            "/registry/metering.nodeless.io/usage/default/u1/2026-01-01T00:00:10Z"
        );
        let decoded = UsageRecord::decode(&r.encode()).unwrap();
        assert_eq!(decoded, r);
        let json: serde_json::Value = serde_json::from_slice(&r.encode()).unwrap();
        assert_eq!(json["end"], serde_json::Value::Null);
        assert_eq!(json["size"], "0.25vCPU 0.5GiB");
        assert_eq!(json["lastSeen"], "2026-01-01T00:00:12Z");
        r.close(at("2026-01-01T00:01:00Z"));
        let decoded = UsageRecord::decode(&r.encode()).unwrap();
        assert_eq!(decoded.end, Some(at("2026-01-01T00:01:00Z")));
        assert_eq!(
            decoded.provisioned(),
            Size::parse("0.25vCPU 0.5GiB").unwrap()
        );
    }

    #[test]
    fn clipping_to_a_window() {
        let mut r = record();
        r.close(at("2026-01-01T00:01:10Z")); // 60 s
        let s = |a, b| r.seconds_within(at(a), at(b), at("2026-01-01T01:00:00Z"));
        assert_eq!(s("2026-01-01T00:00:00Z", "2026-01-01T00:10:00Z"), 60.0);
        assert_eq!(s("2026-01-01T00:00:40Z", "2026-01-01T00:10:00Z"), 30.0);
        assert_eq!(s("2026-01-01T00:00:00Z", "2026-01-01T00:00:20Z"), 10.0);
        assert_eq!(s("2026-01-01T00:00:20Z", "2026-01-01T00:00:30Z"), 10.0);
        assert_eq!(s("2026-01-01T00:01:10Z", "2026-01-01T00:10:00Z"), 0.0);
        assert_eq!(s("2026-01-01T00:00:00Z", "2026-01-01T00:00:10Z"), 0.0);
    }

    #[test]
    fn open_records_run_until_now_and_closing_never_precedes_start() {
        let mut r = record();
        let now = at("2026-01-01T00:00:40Z");
        assert_eq!(
            r.seconds_within(at("2026-01-01T00:00:00Z"), at("2026-01-02T00:00:00Z"), now),
            30.0
        );
        r.close(at("2026-01-01T00:00:00Z"));
        assert_eq!(r.end, Some(r.start));
    }
}
