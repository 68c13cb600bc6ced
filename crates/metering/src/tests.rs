//! Unit tests of the meter over a real (SQLite, temporary) store, and of reports.

use std::collections::HashMap;
use std::sync::Arc;

use nodeless_serverless::Size;
use time::OffsetDateTime;

use crate::meter::{resolve_workload, OwnerLookup, OwnerRef, PodView, Sandbox};
use crate::metrics::prometheus_text;
use crate::report::{render_table, usage_report, GroupBy, Prices, UsageQuery};
use crate::{time_format, Ledger, Meter, UsageRecord, Workload};

fn at(seconds: i64) -> OffsetDateTime {
    time_format::parse("2026-01-01T00:00:00Z").unwrap() + time::Duration::seconds(seconds)
}

fn small() -> Size {
    Size::parse("0.25vCPU 0.5GiB").unwrap()
}

fn ledger() -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().unwrap();
    let store = nodeless_store::SqliteStore::open(dir.path().join("db.sqlite")).unwrap();
    (dir, Ledger::new(Arc::new(store)))
}

/// Owners: ReplicaSet `web-1` belongs to Deployment `web`, Job `tick-1` to CronJob `tick`.
struct Owners(HashMap<String, OwnerRef>);

impl Owners {
    fn new() -> Self {
        let mut map = HashMap::new();
        map.insert("web-1".to_string(), owner("apps/v1", "Deployment", "web"));
        map.insert("tick-1".to_string(), owner("batch/v1", "CronJob", "tick"));
        Self(map)
    }
}

#[async_trait::async_trait]
impl OwnerLookup for Owners {
    async fn controller_of(&self, _namespace: &str, owner: &OwnerRef) -> Option<OwnerRef> {
        self.0.get(&owner.name).cloned()
    }
}

fn owner(api_version: &str, kind: &str, name: &str) -> OwnerRef {
    OwnerRef {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
    }
}

fn pod(name: &str, uid: &str, sandbox: Sandbox, controller: Option<OwnerRef>) -> PodView {
    PodView {
        namespace: "default".into(),
        name: name.into(),
        uid: uid.into(),
        size: Some(small()),
        sandbox,
        controller,
        node: "node-a".into(),
    }
}

#[tokio::test]
async fn workloads_resolve_through_owner_references() {
    let owners = Owners::new();
    let rs = pod(
        "web-1-x",
        "u",
        Sandbox::Unknown,
        Some(owner("apps/v1", "ReplicaSet", "web-1")),
    );
    assert_eq!(resolve_workload(&rs, &owners).await.name, "web");
    assert_eq!(resolve_workload(&rs, &owners).await.kind, "Deployment");
    let job = pod(
        "tick-1-x",
        "u",
        Sandbox::Unknown,
        Some(owner("batch/v1", "Job", "tick-1")),
    );
    assert_eq!(resolve_workload(&job, &owners).await.kind, "CronJob");
    let lone_job = pod(
        "pi-x",
        "u",
        Sandbox::Unknown,
        Some(owner("batch/v1", "Job", "pi")),
    );
    let workload = resolve_workload(&lone_job, &owners).await;
    assert_eq!(
        (workload.kind.as_str(), workload.name.as_str()),
        ("Job", "pi")
    );
    let set = pod(
        "db-0",
        "u",
        Sandbox::Unknown,
        Some(owner("apps/v1", "StatefulSet", "db")),
    );
    assert_eq!(resolve_workload(&set, &owners).await.kind, "StatefulSet");
    let bare = pod("lone", "u", Sandbox::Unknown, None);
    assert_eq!(
        resolve_workload(&bare, &owners).await,
        Workload::bare_pod("lone")
    );
}

#[tokio::test]
async fn one_record_per_interval_and_no_double_counting() {
    let (_dir, ledger) = ledger();
    let owners = Owners::new();
    let mut meter = Meter::recover(ledger.clone()).await.unwrap();
    let up = pod("a", "u1", Sandbox::Up(at(10)), None);
    meter.observe(&up, &owners, at(11)).await.unwrap();
    meter.observe(&up, &owners, at(12)).await.unwrap();
    let down = pod("a", "u1", Sandbox::Down(Some(at(70))), None);
    meter.observe(&down, &owners, at(71)).await.unwrap();
    meter.observe(&down, &owners, at(72)).await.unwrap();
    // The same Up seen again (a relist) must not reopen or duplicate the interval.
    meter.observe(&up, &owners, at(73)).await.unwrap();
    let records = ledger.list(None).await.unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!((records[0].start, records[0].end), (at(10), Some(at(70))));
    // A second sandbox of the same pod is a second interval.
    meter
        .observe(
            &pod("a", "u1", Sandbox::Up(at(100)), None),
            &owners,
            at(101),
        )
        .await
        .unwrap();
    assert_eq!(ledger.list(None).await.unwrap().len(), 2);
    // A meter that starts over the same store (a second server) sees the same interval once.
    let mut other = Meter::recover(ledger.clone()).await.unwrap();
    other
        .observe(
            &pod("a", "u1", Sandbox::Up(at(100)), None),
            &owners,
            at(102),
        )
        .await
        .unwrap();
    assert_eq!(ledger.list(None).await.unwrap().len(), 2);
}

#[tokio::test]
async fn deleted_pods_end_when_the_deletion_is_seen() {
    let (_dir, ledger) = ledger();
    let owners = Owners::new();
    let mut meter = Meter::recover(ledger.clone()).await.unwrap();
    meter
        .observe(&pod("a", "u1", Sandbox::Up(at(0)), None), &owners, at(1))
        .await
        .unwrap();
    meter.pod_deleted("u1", at(42)).await.unwrap();
    let records = ledger.list(None).await.unwrap();
    assert_eq!(records[0].end, Some(at(42)));
    assert_eq!(meter.open_records().count(), 0);
}

#[tokio::test]
async fn restart_closes_vanished_pods_at_last_seen_and_continues_running_ones() {
    let (_dir, ledger) = ledger();
    let owners = Owners::new();
    let mut meter = Meter::recover(ledger.clone()).await.unwrap();
    meter
        .observe(&pod("gone", "u1", Sandbox::Up(at(0)), None), &owners, at(1))
        .await
        .unwrap();
    meter
        .observe(
            &pod("stays", "u2", Sandbox::Up(at(5)), None),
            &owners,
            at(6),
        )
        .await
        .unwrap();
    meter.heartbeat(at(30)).await.unwrap();
    drop(meter);

    // The restart: a fresh meter lists the pods; `gone` is not among them any more.
    let mut meter = Meter::recover(ledger.clone()).await.unwrap();
    assert_eq!(meter.open_records().count(), 2);
    meter.list_started();
    meter
        .observe(
            &pod("stays", "u2", Sandbox::Up(at(5)), None),
            &owners,
            at(300),
        )
        .await
        .unwrap();
    meter.list_done().await.unwrap();
    let records: HashMap<String, UsageRecord> = ledger
        .list(None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.pod.clone(), r))
        .collect();
    assert_eq!(records["gone"].end, Some(at(30)));
    assert_eq!(records["stays"].end, None);
    assert_eq!(records.len(), 2);
    // The running pod's heartbeat continues after the restart.
    meter.heartbeat(at(330)).await.unwrap();
    let stays = ledger
        .list(None)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.pod == "stays")
        .unwrap();
    assert_eq!(stays.last_seen, at(330));
}

/// A meter that has seen pod `here` on node-a and pod `there` on node-b, both up since 0.
async fn meter_with_a_pod_on_each_node(ledger: &Ledger) -> Meter {
    let owners = Owners::new();
    let mut meter = Meter::recover(ledger.clone()).await.unwrap();
    meter
        .observe(&pod("here", "u1", Sandbox::Up(at(0)), None), &owners, at(1))
        .await
        .unwrap();
    let mut remote = pod("there", "u2", Sandbox::Up(at(0)), None);
    remote.node = "node-b".into();
    meter.observe(&remote, &owners, at(1)).await.unwrap();
    meter
}

async fn records_by_pod(ledger: &Ledger) -> HashMap<String, UsageRecord> {
    ledger
        .list(None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.pod.clone(), r))
        .collect()
}

#[tokio::test]
async fn shutting_down_closes_the_records_of_the_stopping_node_only() {
    let (_dir, ledger) = ledger();
    let mut meter = meter_with_a_pod_on_each_node(&ledger).await;
    meter.shut_down(Some("node-a"), at(50)).await.unwrap();
    let records = records_by_pod(&ledger).await;
    assert_eq!(records["here"].end, Some(at(50)));
    assert_eq!(records["here"].node, "node-a");
    assert_eq!(records["there"].end, None);
    assert_eq!(records["there"].last_seen, at(50));
}

#[tokio::test]
async fn closing_a_nodes_records_from_the_ledger_leaves_other_nodes_alone() {
    let (_dir, ledger) = ledger();
    drop(meter_with_a_pod_on_each_node(&ledger).await);
    crate::close_node_records(ledger.clone(), "node-a", at(40))
        .await
        .unwrap();
    let records = records_by_pod(&ledger).await;
    assert_eq!(records["here"].end, Some(at(40)));
    assert_eq!(records["there"].end, None);
    assert_eq!(records["there"].last_seen, at(1));
}

#[tokio::test]
async fn a_missed_teardown_ends_the_old_interval_by_the_new_start() {
    let (_dir, ledger) = ledger();
    let owners = Owners::new();
    let mut meter = Meter::recover(ledger.clone()).await.unwrap();
    meter
        .observe(&pod("a", "u1", Sandbox::Up(at(0)), None), &owners, at(1))
        .await
        .unwrap();
    meter.heartbeat(at(20)).await.unwrap();
    meter
        .observe(&pod("a", "u1", Sandbox::Up(at(60)), None), &owners, at(61))
        .await
        .unwrap();
    let mut records = ledger.list(None).await.unwrap();
    records.sort_by_key(|r| r.start);
    assert_eq!(records[0].end, Some(at(20)));
    assert_eq!(records[1].end, None);
}

#[tokio::test]
async fn pods_without_a_size_are_not_metered() {
    let (_dir, ledger) = ledger();
    let mut meter = Meter::recover(ledger.clone()).await.unwrap();
    let mut unsized_pod = pod("a", "u1", Sandbox::Up(at(0)), None);
    unsized_pod.size = None;
    meter
        .observe(&unsized_pod, &Owners::new(), at(1))
        .await
        .unwrap();
    assert!(ledger.list(None).await.unwrap().is_empty());
}

fn closed(
    ns: &str,
    name: &str,
    workload: Workload,
    size: &str,
    start: i64,
    end: Option<i64>,
) -> UsageRecord {
    let mut r = UsageRecord::open(
        ns,
        name,
        &format!("{name}-uid"),
        workload,
        Size::parse(size).unwrap(),
        at(start),
        at(start),
    );
    if let Some(end) = end {
        r.close(at(end));
    }
    r
}

fn sample() -> Vec<UsageRecord> {
    let web = Workload {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: "web".into(),
    };
    vec![
        closed("a", "web-1", web.clone(), "0.25vCPU 0.5GiB", 0, Some(3600)),
        closed("a", "web-2", web, "1vCPU 2GiB", 1800, None),
        closed(
            "b",
            "lone",
            Workload::bare_pod("lone"),
            "0.5vCPU 1GiB",
            0,
            Some(600),
        ),
    ]
}

#[test]
fn grouping_by_pod_workload_and_namespace() {
    let records = sample();
    let now = at(3600);
    let prices = Prices::default();
    let query = |group_by, namespace: Option<&str>| UsageQuery {
        namespace: namespace.map(str::to_string),
        group_by,
        start: None,
        end: None,
    };
    let by_pod = usage_report(&records, &query(GroupBy::Pod, None), &prices, now).unwrap();
    let names: Vec<&str> = by_pod.items.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["web-1", "web-2", "lone"]);
    assert_eq!(by_pod.items[0].vcpu_seconds, 900.0);
    assert_eq!(by_pod.items[0].gib_seconds, 1800.0);
    // The open record runs until now: 1800 s of 1 vCPU.
    assert_eq!(by_pod.items[1].vcpu_seconds, 1800.0);
    assert_eq!(by_pod.window.start, at(0));
    assert_eq!(by_pod.window.end, now);

    let by_workload =
        usage_report(&records, &query(GroupBy::Workload, None), &prices, now).unwrap();
    assert_eq!(by_workload.items.len(), 2);
    assert_eq!(by_workload.items[0].kind, "Deployment");
    assert_eq!(by_workload.items[0].vcpu_seconds, 2700.0);
    assert_eq!(by_workload.items[1].kind, "Pod");

    let by_namespace =
        usage_report(&records, &query(GroupBy::Namespace, None), &prices, now).unwrap();
    let rows: Vec<(&str, f64)> = by_namespace
        .items
        .iter()
        .map(|i| (i.name.as_str(), i.gib_seconds))
        .collect();
    assert_eq!(rows, [("a", 1800.0 + 3600.0), ("b", 600.0)]);

    let only_b = usage_report(&records, &query(GroupBy::Pod, Some("b")), &prices, now).unwrap();
    assert_eq!(only_b.items.len(), 1);
    assert_eq!(only_b.total.vcpu_seconds, 300.0);
}

#[test]
fn windows_clip_intervals_and_bad_windows_are_refused() {
    let records = sample();
    let query = UsageQuery {
        namespace: None,
        group_by: GroupBy::Namespace,
        start: Some(at(1800)),
        end: Some(at(2400)),
    };
    let report = usage_report(&records, &query, &Prices::default(), at(3600)).unwrap();
    // web-1: 600 s × 0.25; web-2: 600 s × 1; lone ended before the window.
    assert_eq!(report.items.len(), 1);
    assert_eq!(report.items[0].vcpu_seconds, 150.0 + 600.0);
    let backwards = UsageQuery {
        start: Some(at(10)),
        end: Some(at(5)),
        ..query
    };
    let error = usage_report(&records, &backwards, &Prices::default(), at(3600)).unwrap_err();
    assert!(error.to_string().contains("after its end"), "{error}");
}

#[test]
fn pricing_per_vcpu_hour_and_gib_hour() {
    let prices = Prices {
        currency: "EUR".into(),
        vcpu_hour: 0.04,
        gib_hour: 0.004,
    };
    assert!((prices.cost(3600.0, 7200.0) - 0.048).abs() < 1e-12);
    let defaults = Prices::default();
    assert_eq!(
        (
            defaults.vcpu_hour,
            defaults.gib_hour,
            defaults.currency.as_str()
        ),
        (0.04048, 0.004445, "USD")
    );
    // One hour of the smallest size: 0.25 × 0.04048 + 0.5 × 0.004445.
    let report = usage_report(&sample()[..1], &UsageQuery::default(), &defaults, at(7200)).unwrap();
    assert!((report.total.cost - (0.25 * 0.04048 + 0.5 * 0.004445)).abs() < 1e-12);
    let table = render_table(&report);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAMESPACE   NAME    KIND   VCPU-SECONDS"),
        "{table}"
    );
    assert!(
        lines[1].contains("web-1") && lines[1].contains("900.00") && lines[1].contains("0.012343"),
        "{table}"
    );
}

#[test]
fn metrics_are_counters_per_pod_and_gauges_per_size() {
    let text = prometheus_text(&sample(), at(3600));
    assert!(text.contains("# TYPE nodeless_pod_vcpu_seconds_total counter"));
    assert!(text.contains(
        "nodeless_pod_vcpu_seconds_total{namespace=\"a\",pod=\"web-1\",workload_kind=\"Deployment\",workload=\"web\"} 900"
    ), "{text}");
    assert!(text.contains(
        "nodeless_pod_gib_seconds_total{namespace=\"b\",pod=\"lone\",workload_kind=\"Pod\",workload=\"lone\"} 600"
    ), "{text}");
    assert!(
        text.contains("nodeless_running_sandboxes{size=\"1vCPU 2GiB\"} 1"),
        "{text}"
    );
    assert!(!text.contains("size=\"0.25vCPU 0.5GiB\""), "{text}");
}
