//! Usage over a time window: clipping, grouping and pricing, as a `UsageReport`.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::record::{UsageRecord, API_VERSION};
use crate::{time_format, MeteringError};

/// AWS Fargate's Linux/x86 price per vCPU-hour in us-east-1 (USD), the default.
pub const DEFAULT_PRICE_VCPU_HOUR: f64 = 0.04048;
/// AWS Fargate's Linux/x86 price per GiB-hour in us-east-1 (USD), the default.
pub const DEFAULT_PRICE_GIB_HOUR: f64 = 0.004445;

/// What usage is summed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GroupBy {
    /// Per pod (namespace and name: a pod re-created under its name, as a StatefulSet's,
    /// is one row).
    #[default]
    Pod,
    /// Per workload (the pods' controllers, resolved through ownerReferences).
    Workload,
    /// Per namespace.
    Namespace,
}

impl FromStr for GroupBy {
    type Err = MeteringError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "pod" => Ok(GroupBy::Pod),
            "workload" => Ok(GroupBy::Workload),
            "namespace" => Ok(GroupBy::Namespace),
            other => Err(MeteringError::InvalidQuery(format!(
                "invalid value {other:?} for by: must be pod, workload or namespace"
            ))),
        }
    }
}

/// Operator-set prices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prices {
    /// The currency of the prices (`USD`).
    pub currency: String,
    /// Price of one vCPU for one hour.
    pub vcpu_hour: f64,
    /// Price of one GiB of memory for one hour.
    pub gib_hour: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Self {
            currency: "USD".to_string(),
            vcpu_hour: DEFAULT_PRICE_VCPU_HOUR,
            gib_hour: DEFAULT_PRICE_GIB_HOUR,
        }
    }
}

impl Prices {
    /// The cost of this much usage.
    pub fn cost(&self, vcpu_seconds: f64, gib_seconds: f64) -> f64 {
        vcpu_seconds / 3600.0 * self.vcpu_hour + gib_seconds / 3600.0 * self.gib_hour
    }
}

/// What a report covers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UsageQuery {
    /// Only this namespace (`None`: all).
    pub namespace: Option<String>,
    /// What to sum by.
    pub group_by: GroupBy,
    /// The window's start (`None`: the earliest record's start).
    pub start: Option<OffsetDateTime>,
    /// The window's end, exclusive (`None`: now).
    pub end: Option<OffsetDateTime>,
}

/// The time window `[start, end)` of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Inclusive start.
    #[serde(with = "time_format::rfc3339")]
    pub start: OffsetDateTime,
    /// Exclusive end.
    #[serde(with = "time_format::rfc3339")]
    pub end: OffsetDateTime,
}

/// One row of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageItem {
    /// The namespace (for a namespace row, the namespace itself).
    pub namespace: String,
    /// The pod's, workload's or namespace's name.
    pub name: String,
    /// `Pod`, the workload's kind, or `Namespace`.
    pub kind: String,
    /// vCPU-seconds of provisioned size in the window.
    pub vcpu_seconds: f64,
    /// GiB-seconds of provisioned size in the window.
    pub gib_seconds: f64,
    /// What it costs at the report's prices.
    pub cost: f64,
}

/// Totals of a report.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageTotal {
    /// vCPU-seconds.
    pub vcpu_seconds: f64,
    /// GiB-seconds.
    pub gib_seconds: f64,
    /// Cost.
    pub cost: f64,
}

/// The answer of the usage endpoint (`metering.nodeless.io/v1`, kind `UsageReport`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    /// `metering.nodeless.io/v1`.
    pub api_version: String,
    /// `UsageReport`.
    pub kind: String,
    /// The namespace the report is limited to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// What the rows are.
    pub group_by: GroupBy,
    /// The window.
    pub window: Window,
    /// The prices costs are computed with.
    pub prices: Prices,
    /// The rows, sorted by namespace, kind and name; rows without usage are left out.
    pub items: Vec<UsageItem>,
    /// The sum of the rows.
    pub total: UsageTotal,
}

/// Sums `records` over the query's window (each interval clipped to it; open intervals run
/// until `now`), by pod, workload or namespace, and prices it.
pub fn usage_report(
    records: &[UsageRecord],
    query: &UsageQuery,
    prices: &Prices,
    now: OffsetDateTime,
) -> Result<UsageReport, MeteringError> {
    let in_scope = |r: &&UsageRecord| query.namespace.as_ref().is_none_or(|ns| &r.namespace == ns);
    let end = query.end.unwrap_or(now);
    let start = match query.start {
        Some(start) => start,
        None => records
            .iter()
            .filter(in_scope)
            .map(|r| r.start)
            .min()
            .unwrap_or(end)
            .min(end),
    };
    if start > end {
        return Err(MeteringError::InvalidQuery(format!(
            "the window's start {} is after its end {}",
            time_format::format(start),
            time_format::format(end)
        )));
    }
    let mut rows: BTreeMap<(String, String, String), (f64, f64)> = BTreeMap::new();
    for record in records.iter().filter(in_scope) {
        let seconds = record.seconds_within(start, end, now);
        if seconds <= 0.0 {
            continue;
        }
        let size = record.provisioned();
        let key = match query.group_by {
            GroupBy::Pod => (
                record.namespace.clone(),
                "Pod".to_string(),
                record.pod.clone(),
            ),
            GroupBy::Workload => (
                record.namespace.clone(),
                record.workload.kind.clone(),
                record.workload.name.clone(),
            ),
            GroupBy::Namespace => (
                record.namespace.clone(),
                "Namespace".to_string(),
                record.namespace.clone(),
            ),
        };
        let row = rows.entry(key).or_default();
        row.0 += size.vcpu() * seconds;
        row.1 += size.gib() * seconds;
    }
    let mut total = UsageTotal::default();
    let items = rows
        .into_iter()
        .map(|((namespace, kind, name), (vcpu_seconds, gib_seconds))| {
            let cost = prices.cost(vcpu_seconds, gib_seconds);
            total.vcpu_seconds += vcpu_seconds;
            total.gib_seconds += gib_seconds;
            total.cost += cost;
            UsageItem {
                namespace,
                name,
                kind,
                vcpu_seconds,
                gib_seconds,
                cost,
            }
        })
        .collect();
    Ok(UsageReport {
        api_version: API_VERSION.to_string(),
        kind: "UsageReport".to_string(),
        namespace: query.namespace.clone(),
        group_by: query.group_by,
        window: Window { start, end },
        prices: prices.clone(),
        items,
        total,
    })
}

/// The report as a kubectl-style table: NAMESPACE, NAME, KIND, VCPU-SECONDS, GIB-SECONDS,
/// COST (in the report's currency).
pub fn render_table(report: &UsageReport) -> String {
    let mut rows: Vec<[String; 6]> = vec![[
        "NAMESPACE".into(),
        "NAME".into(),
        "KIND".into(),
        "VCPU-SECONDS".into(),
        "GIB-SECONDS".into(),
        format!("COST({})", report.prices.currency),
    ]];
    for item in &report.items {
        rows.push([
            item.namespace.clone(),
            item.name.clone(),
            item.kind.clone(),
            format!("{:.2}", item.vcpu_seconds),
            format!("{:.2}", item.gib_seconds),
            format!("{:.6}", item.cost),
        ]);
    }
    let mut widths = [0usize; 6];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, width))| {
                if i == 5 {
                    cell.clone()
                } else {
                    format!("{cell:<width$}")
                }
            })
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}
