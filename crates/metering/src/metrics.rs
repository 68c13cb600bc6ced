//! Prometheus text exposition (format 0.0.4) of the usage records.

use std::collections::BTreeMap;
use std::fmt::Write;

use time::OffsetDateTime;

use crate::record::UsageRecord;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Counters `nodeless_pod_vcpu_seconds_total` and `nodeless_pod_gib_seconds_total` per pod
/// (labels `namespace`, `pod`, `workload_kind`, `workload`; every interval, open ones until
/// `now`), and the gauge `nodeless_running_sandboxes` per provisioned `size`.
pub fn prometheus_text(records: &[UsageRecord], now: OffsetDateTime) -> String {
    let mut per_pod: BTreeMap<(&str, &str, &str, &str), (f64, f64)> = BTreeMap::new();
    let mut running: BTreeMap<&str, u64> = BTreeMap::new();
    for record in records {
        let seconds = crate::time_format::seconds_between(record.start, record.effective_end(now));
        let size = record.provisioned();
        let row = per_pod
            .entry((
                &record.namespace,
                &record.pod,
                &record.workload.kind,
                &record.workload.name,
            ))
            .or_default();
        row.0 += size.vcpu() * seconds;
        row.1 += size.gib() * seconds;
        if record.is_open() {
            *running.entry(&record.size).or_default() += 1;
        }
    }
    let mut out = String::new();
    let counter = |out: &mut String, name: &str, help: &str, pick: fn(&(f64, f64)) -> f64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for ((namespace, pod, kind, workload), value) in &per_pod {
            let _ = writeln!(
                out,
                "{name}{{namespace=\"{}\",pod=\"{}\",workload_kind=\"{}\",workload=\"{}\"}} {}",
                escape(namespace),
                escape(pod),
                escape(kind),
                escape(workload),
                pick(value)
            );
        }
    };
    counter(
        &mut out,
        "nodeless_pod_vcpu_seconds_total",
        "vCPU-seconds of provisioned size the pod's sandboxes ran for.",
        |v| v.0,
    );
    counter(
        &mut out,
        "nodeless_pod_gib_seconds_total",
        "GiB-seconds of provisioned size the pod's sandboxes ran for.",
        |v| v.1,
    );
    let _ = writeln!(
        out,
        "# HELP nodeless_running_sandboxes Pod sandboxes running now, per provisioned size."
    );
    let _ = writeln!(out, "# TYPE nodeless_running_sandboxes gauge");
    for (size, count) in &running {
        let _ = writeln!(
            out,
            "nodeless_running_sandboxes{{size=\"{}\"}} {count}",
            escape(size)
        );
    }
    out
}

/// Escapes a label value (backslash, double quote, line feed).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
