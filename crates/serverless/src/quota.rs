//! Quota usage: what an object counts against a ResourceQuota, as upstream's evaluators
//! (`pkg/quota/v1/evaluator/core` and the generic `count/<resource>.<group>` evaluator) count
//! it, with one serverless difference: a pod's compute usage (`cpu`, `requests.cpu`,
//! `limits.cpu`, `memory`, `requests.memory`, `limits.memory`) is its provisioned [`Size`]
//! from the [`ANNOTATION`], so that a quota is counted in what the user pays for.
//!
//! Shared by the ResourceQuota admission plugin (which charges a quota when an object is
//! created) and the quota controller (which recomputes `status.used` from the objects).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::SystemTime;

use nodeless_api::quantity::{Quantity, QuantityFormat};
use serde_json::{Map, Value};

use crate::{Size, SizeTable, ANNOTATION, DEFAULT_TABLE};

const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// An amount of a resource, held exactly in nano-units, with the suffix family it is printed
/// in (binary `Ki`/`Mi`/`Gi` or decimal `m`/`k`/`M`), as upstream's canonical quantity form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Amount {
    nanos: i128,
    binary: bool,
}

impl Amount {
    /// A whole count (`pods`, `count/...`), printed in decimal.
    pub fn count(n: i64) -> Amount {
        Amount {
            nanos: i128::from(n) * NANOS_PER_UNIT,
            binary: false,
        }
    }

    /// Thousandths of a unit (milli-CPU), printed in decimal (`250m`, `1`).
    pub fn milli(m: i128) -> Amount {
        Amount {
            nanos: m * 1_000_000,
            binary: false,
        }
    }

    /// Whole bytes, printed in binary (`512Mi`, `1Gi`).
    pub fn bytes(b: i128) -> Amount {
        Amount {
            nanos: b * NANOS_PER_UNIT,
            binary: true,
        }
    }

    /// The value of a parsed quantity, printed in its suffix family.
    pub fn from_quantity(q: &Quantity) -> Amount {
        Amount {
            nanos: q.to_nanos(),
            binary: q.format() == QuantityFormat::BinarySI,
        }
    }

    /// Parses a quantity string or a JSON number (`"500m"`, `"1Gi"`, `2`).
    pub fn from_json(v: &Value) -> Option<Amount> {
        match v {
            Value::String(s) => Quantity::parse(s).ok().map(|q| Amount::from_quantity(&q)),
            Value::Number(n) => n.as_i64().map(Amount::count).or_else(|| {
                n.as_f64()
                    .map(|f| Amount::milli((f * 1000.0).ceil() as i128))
            }),
            _ => None,
        }
    }

    /// The value in nano-units (10^-9).
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    /// Whether the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// The sum; a zero left operand takes the right one's suffix family (as upstream's `Add`).
    pub fn plus(self, other: Amount) -> Amount {
        Amount {
            nanos: self.nanos.saturating_add(other.nanos),
            binary: if self.nanos == 0 {
                other.binary
            } else {
                self.binary
            },
        }
    }

    /// The difference, keeping this amount's suffix family.
    pub fn minus(self, other: Amount) -> Amount {
        Amount {
            nanos: self.nanos.saturating_sub(other.nanos),
            binary: self.binary,
        }
    }
}

/// Upstream's canonical form (`resource.Quantity.String()`): binary amounts of at least 1Ki in
/// whole bytes use the largest power of 1024 that divides them; everything else uses the
/// largest power of 1000 (from `n` to `E`) that keeps the number whole.
impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        let whole = self.nanos % NANOS_PER_UNIT == 0;
        let units = self.nanos / NANOS_PER_UNIT;
        if self.binary && whole && units.abs() >= 1024 {
            const SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
            let mut value = units;
            let mut index = 0;
            while index < SUFFIXES.len() - 1 && value % 1024 == 0 {
                value /= 1024;
                index += 1;
            }
            return write!(f, "{value}{}", SUFFIXES[index]);
        }
        // Suffixes by power of ten of the nano count: 10^0 is `n`, 10^9 is none.
        const DECIMAL: [&str; 10] = ["n", "u", "m", "", "k", "M", "G", "T", "P", "E"];
        let mut value = self.nanos;
        let mut index = 0;
        while index < DECIMAL.len() - 1 && value % 1000 == 0 {
            value /= 1000;
            index += 1;
        }
        write!(f, "{value}{}", DECIMAL[index])
    }
}

/// Amounts by resource name (`cpu`, `requests.memory`, `count/deployments.apps`), sorted.
pub type ResourceList = BTreeMap<String, Amount>;

/// Reads a JSON resource list (`{"cpu": "1", "pods": "10"}`); unparsable values are skipped
/// (validation refuses them before they are stored).
pub fn parse_list(v: Option<&Value>) -> ResourceList {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Amount::from_json(v).map(|a| (k.clone(), a)))
                .collect()
        })
        .unwrap_or_default()
}

/// The JSON form of a list, each amount in its canonical string form.
pub fn list_to_json(list: &ResourceList) -> Value {
    Value::Object(
        list.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.to_string())))
            .collect::<Map<String, Value>>(),
    )
}

/// `a + b`, per resource (a resource in only one of them keeps its amount).
pub fn add(a: &ResourceList, b: &ResourceList) -> ResourceList {
    let mut out = a.clone();
    for (k, v) in b {
        let sum = out.get(k).copied().unwrap_or_default().plus(*v);
        out.insert(k.clone(), sum);
    }
    out
}

/// `a - b` per resource of `a`, never below zero (upstream's `SubtractWithNonNegativeResult`).
pub fn subtract_non_negative(a: &ResourceList, b: &ResourceList) -> ResourceList {
    a.iter()
        .map(|(k, v)| {
            let d = b.get(k).map_or(*v, |o| v.minus(*o));
            let d = if d.nanos < 0 {
                Amount {
                    nanos: 0,
                    binary: d.binary,
                }
            } else {
                d
            };
            (k.clone(), d)
        })
        .collect()
}

/// The entries of `list` whose names are in `names`.
pub fn mask<'a>(list: &ResourceList, names: impl IntoIterator<Item = &'a String>) -> ResourceList {
    names
        .into_iter()
        .filter_map(|k| list.get(k).map(|v| (k.clone(), *v)))
        .collect()
}

/// Upstream's `prettyPrint`: `name=value` pairs sorted by name, joined by commas.
pub fn pretty(list: &ResourceList) -> String {
    list.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The kind (group and plural) whose objects a quota resource counts, or `None` for a name
/// no evaluator counts (such a quota entry is never charged).
pub fn counted_kind(resource: &str) -> Option<(String, String)> {
    let core = |plural: &str| Some((String::new(), plural.to_string()));
    if let Some(rest) = resource.strip_prefix("count/") {
        return Some(match rest.split_once('.') {
            Some((plural, group)) => (group.to_string(), plural.to_string()),
            None => (String::new(), rest.to_string()),
        });
    }
    match resource {
        "pods" | "cpu" | "memory" | "ephemeral-storage" => core("pods"),
        "services" | "services.loadbalancers" | "services.nodeports" => core("services"),
        "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" => core(resource),
        "persistentvolumeclaims" | "requests.storage" => core("persistentvolumeclaims"),
        _ if resource.contains(".storageclass.storage.k8s.io/") => core("persistentvolumeclaims"),
        _ if resource.starts_with("requests.") || resource.starts_with("limits.") => core("pods"),
        _ => None,
    }
}

/// What `obj` (of the kind `group`/`plural`) counts against a quota. A pod that is terminal,
/// or whose deletion grace period has run out at `now`, counts nothing.
pub fn usage(group: &str, plural: &str, obj: &Value, now: SystemTime) -> ResourceList {
    let mut out = ResourceList::new();
    if (group, plural) == ("", "pods") && !pod_counts(obj, now) {
        return out;
    }
    let count_name = if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    };
    out.insert(count_name, Amount::count(1));
    if !group.is_empty() {
        return out;
    }
    match plural {
        "pods" => {
            out.insert("pods".into(), Amount::count(1));
            pod_compute_usage(obj, &mut out);
        }
        "services" => service_usage(obj, &mut out),
        "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" => {
            out.insert(plural.into(), Amount::count(1));
        }
        "persistentvolumeclaims" => claim_usage(obj, &mut out),
        _ => {}
    }
    out
}

/// Upstream's `QuotaV1Pod`: terminal pods, and pods past their deletion grace period, are
/// not charged.
pub fn pod_counts(pod: &Value, now: SystemTime) -> bool {
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return false;
    }
    let deletion = pod
        .pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
        .and_then(parse_time);
    let grace = pod
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64);
    if let (Some(deletion), Some(grace)) = (deletion, grace) {
        let gone_at = deletion + std::time::Duration::from_secs(grace.max(0) as u64);
        if now > gone_at {
            return false;
        }
    }
    true
}

fn parse_time(text: &str) -> Option<SystemTime> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    let nanos = t.unix_timestamp_nanos();
    let since_epoch = std::time::Duration::from_nanos(u64::try_from(nanos).ok()?);
    Some(SystemTime::UNIX_EPOCH + since_epoch)
}

/// The provisioned size of a pod: its annotation, else (a pod admitted without the
/// serverless plugin) what the default table would give it.
pub fn pod_size(pod: &Value) -> Option<Size> {
    let annotated = pod
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ANNOTATION))
        .and_then(Value::as_str)
        .and_then(|s| Size::parse(s).ok());
    annotated.or_else(|| {
        let table = SizeTable::parse(DEFAULT_TABLE).ok()?;
        let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
        crate::provision(&spec, &table).ok().map(|p| p.size)
    })
}

fn pod_compute_usage(pod: &Value, out: &mut ResourceList) {
    if let Some(size) = pod_size(pod) {
        let cpu = Amount::milli(i128::from(size.millicpu));
        let memory = Amount::bytes(i128::from(size.memory_bytes));
        for name in ["cpu", "requests.cpu", "limits.cpu"] {
            out.insert(name.into(), cpu);
        }
        for name in ["memory", "requests.memory", "limits.memory"] {
            out.insert(name.into(), memory);
        }
    }
    // Other resources (ephemeral storage, extended resources) as upstream: the larger of
    // the app containers' sum and the largest init container.
    let spec = pod.get("spec");
    for (field, prefix) in [("requests", "requests."), ("limits", "limits.")] {
        let total = container_total(spec, field);
        for (name, amount) in total {
            if name == "cpu" || name == "memory" {
                continue;
            }
            if name == "ephemeral-storage" && field == "requests" {
                out.insert(name.clone(), amount);
            }
            out.insert(format!("{prefix}{name}"), amount);
        }
    }
}

fn container_total(spec: Option<&Value>, field: &str) -> ResourceList {
    let containers = |key: &str| {
        spec.and_then(|s| s.get(key))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let resources_of = |c: &Value| parse_list(c.get("resources").and_then(|r| r.get(field)));
    let mut sum = ResourceList::new();
    for c in containers("containers") {
        sum = add(&sum, &resources_of(&c));
    }
    for init in containers("initContainers") {
        for (k, v) in resources_of(&init) {
            if sum.get(&k).is_none_or(|s| *s < v) {
                sum.insert(k, v);
            }
        }
    }
    sum
}

fn service_usage(service: &Value, out: &mut ResourceList) {
    out.insert("services".into(), Amount::count(1));
    let spec = service.get("spec");
    let kind = spec
        .and_then(|s| s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    let ports = spec
        .and_then(|s| s.get("ports"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let with_node_port = ports
        .iter()
        .filter(|p| p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0)
        .count();
    match kind {
        "NodePort" => {
            out.insert(
                "services.nodeports".into(),
                Amount::count(ports.len() as i64),
            );
        }
        "LoadBalancer" => {
            out.insert("services.loadbalancers".into(), Amount::count(1));
            let allocate = spec
                .and_then(|s| s.get("allocateLoadBalancerNodePorts"))
                .and_then(Value::as_bool)
                .unwrap_or(true);
            let node_ports = if allocate {
                ports.len()
            } else {
                with_node_port
            };
            out.insert(
                "services.nodeports".into(),
                Amount::count(node_ports as i64),
            );
        }
        _ => {}
    }
}

fn claim_usage(claim: &Value, out: &mut ResourceList) {
    out.insert("persistentvolumeclaims".into(), Amount::count(1));
    let storage = claim
        .pointer("/spec/resources/requests/storage")
        .and_then(Amount::from_json);
    let class = claim
        .pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class")
        .or_else(|| claim.pointer("/spec/storageClassName"))
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty());
    if let Some(class) = class {
        out.insert(
            format!("{class}.storageclass.storage.k8s.io/persistentvolumeclaims"),
            Amount::count(1),
        );
        if let Some(storage) = storage {
            out.insert(
                format!("{class}.storageclass.storage.k8s.io/requests.storage"),
                storage,
            );
        }
    }
    if let Some(storage) = storage {
        out.insert("requests.storage".into(), storage);
    }
}

/// Whether a quota's scopes (`spec.scopes` and `spec.scopeSelector`) select `obj`. A quota
/// without scopes selects every object; a scoped quota selects only pods, as upstream.
pub fn quota_selects(quota: &Value, group: &str, plural: &str, obj: &Value) -> bool {
    let mut requirements: Vec<(String, String, Vec<String>)> = Vec::new();
    if let Some(scopes) = quota.pointer("/spec/scopes").and_then(Value::as_array) {
        for scope in scopes.iter().filter_map(Value::as_str) {
            requirements.push((scope.to_string(), "Exists".into(), Vec::new()));
        }
    }
    if let Some(expressions) = quota
        .pointer("/spec/scopeSelector/matchExpressions")
        .and_then(Value::as_array)
    {
        for e in expressions {
            let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let values = e
                .get("values")
                .and_then(Value::as_array)
                .map(|v| {
                    v.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            requirements.push((text("scopeName"), text("operator"), values));
        }
    }
    if requirements.is_empty() {
        return true;
    }
    if (group, plural) != ("", "pods") {
        return false;
    }
    requirements
        .iter()
        .all(|(scope, operator, values)| pod_in_scope(obj, scope, operator, values))
}

fn pod_in_scope(pod: &Value, scope: &str, operator: &str, values: &[String]) -> bool {
    let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
    let terminating = spec
        .get("activeDeadlineSeconds")
        .and_then(Value::as_i64)
        .is_some_and(|s| s >= 0);
    let best_effort = nodeless_api::defaults::pod_qos_class(&spec) == "BestEffort";
    let matched = match scope {
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "BestEffort" => best_effort,
        "NotBestEffort" => !best_effort,
        "CrossNamespacePodAffinity" => uses_cross_namespace_affinity(&spec),
        "PriorityClass" => {
            let class = spec
                .get("priorityClassName")
                .and_then(Value::as_str)
                .unwrap_or("");
            // Upstream: a pod without a priority class is never in a PriorityClass scope.
            if class.is_empty() {
                return false;
            }
            return match operator {
                "In" => values.iter().any(|v| v == class),
                "NotIn" => !values.iter().any(|v| v == class),
                "DoesNotExist" => false,
                _ => true,
            };
        }
        _ => false,
    };
    if operator == "DoesNotExist" {
        !matched
    } else {
        matched
    }
}

fn uses_cross_namespace_affinity(spec: &Value) -> bool {
    let Some(affinity) = spec.get("affinity") else {
        return false;
    };
    ["podAffinity", "podAntiAffinity"].iter().any(|kind| {
        let Some(a) = affinity.get(*kind) else {
            return false;
        };
        let required = a
            .get("requiredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let preferred: Vec<Value> = a
            .get("preferredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array)
            .map(|terms| {
                terms
                    .iter()
                    .filter_map(|t| t.get("podAffinityTerm").cloned())
                    .collect()
            })
            .unwrap_or_default();
        required.iter().chain(preferred.iter()).any(|term| {
            term.get("namespaces")
                .and_then(Value::as_array)
                .is_some_and(|n| !n.is_empty())
                || term.get("namespaceSelector").is_some_and(|s| !s.is_null())
        })
    })
}

/// A quota's `status.used` being summed: zero for every resource of its `hard`, plus the
/// usage of each object it selects. The quota controller and the ResourceQuota admission
/// plugin read the objects from different places (the API, the storage) and tally alike.
#[derive(Debug, Clone)]
pub struct Tally<'a> {
    quota: &'a Value,
    hard: ResourceList,
    used: ResourceList,
}

impl<'a> Tally<'a> {
    /// An empty tally of `quota` (a ResourceQuota object).
    pub fn new(quota: &'a Value) -> Self {
        let hard = parse_list(quota.pointer("/spec/hard"));
        let used = hard.keys().map(|k| (k.clone(), Amount::count(0))).collect();
        Self { quota, hard, used }
    }

    /// The kinds whose objects count, as `(group, plural)`.
    pub fn kinds(&self) -> BTreeSet<(String, String)> {
        self.hard.keys().filter_map(|k| counted_kind(k)).collect()
    }

    /// Adds an object of `group`/`plural` if the quota selects it.
    pub fn add_object(&mut self, group: &str, plural: &str, obj: &Value, now: SystemTime) {
        if quota_selects(self.quota, group, plural, obj) {
            let usage = usage(group, plural, obj, now);
            self.used = add(&self.used, &mask(&usage, self.hard.keys()));
        }
    }

    /// The sum.
    pub fn used(self) -> ResourceList {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn amount(s: &str) -> Amount {
        Amount::from_json(&json!(s)).unwrap()
    }

    fn now() -> SystemTime {
        SystemTime::now()
    }

    #[test]
    fn canonical_forms_match_upstream() {
        assert_eq!(amount("1").to_string(), "1");
        assert_eq!(amount("1.5").to_string(), "1500m");
        assert_eq!(amount("250m").to_string(), "250m");
        assert_eq!(amount("2000").to_string(), "2k");
        assert_eq!(amount("1Gi").to_string(), "1Gi");
        assert_eq!(amount("1.5Gi").to_string(), "1536Mi");
        assert_eq!(amount("1000Mi").to_string(), "1000Mi");
        assert_eq!(Amount::bytes(1000).to_string(), "1k");
        assert_eq!(Amount::bytes(1500).to_string(), "1500");
        assert_eq!(Amount::count(0).to_string(), "0");
        assert_eq!(Amount::milli(1250).to_string(), "1250m");
    }

    #[test]
    fn sums_keep_the_first_nonzero_family() {
        let cpu = Amount::milli(250).plus(Amount::milli(750));
        assert_eq!(cpu.to_string(), "1");
        let memory = Amount::count(0).plus(Amount::bytes(512 << 20));
        assert_eq!(memory.to_string(), "512Mi");
        let a = ResourceList::from([("cpu".into(), amount("500m"))]);
        let b = ResourceList::from([("cpu".into(), amount("750m")), ("pods".into(), amount("1"))]);
        let sum = add(&a, &b);
        assert_eq!(pretty(&sum), "cpu=1250m,pods=1");
        let back = subtract_non_negative(&a, &b);
        assert_eq!(pretty(&back), "cpu=0");
    }

    #[test]
    fn a_pod_counts_its_provisioned_size_not_its_requests() {
        let pod = json!({
            "metadata": {"annotations": {ANNOTATION: "0.5vCPU 1GiB"}},
            "spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}]},
            "status": {"phase": "Running"},
        });
        let u = usage("", "pods", &pod, now());
        assert_eq!(u["cpu"].to_string(), "500m");
        assert_eq!(u["requests.cpu"].to_string(), "500m");
        assert_eq!(u["limits.cpu"].to_string(), "500m");
        assert_eq!(u["memory"].to_string(), "1Gi");
        assert_eq!(u["limits.memory"].to_string(), "1Gi");
        assert_eq!(u["pods"], Amount::count(1));
        assert_eq!(u["count/pods"], Amount::count(1));
    }

    #[test]
    fn a_pod_without_the_annotation_gets_the_smallest_default_size() {
        let pod = json!({"spec": {"containers": [{"name": "a"}]}});
        let u = usage("", "pods", &pod, now());
        assert_eq!(u["cpu"].to_string(), "250m");
        assert_eq!(u["memory"].to_string(), "512Mi");
    }

    #[test]
    fn terminal_and_expired_pods_count_nothing() {
        for phase in ["Succeeded", "Failed"] {
            let pod = json!({"spec": {}, "status": {"phase": phase}});
            assert!(usage("", "pods", &pod, now()).is_empty(), "{phase}");
        }
        let deleting = |ts: &str| {
            json!({"metadata": {"deletionTimestamp": ts, "deletionGracePeriodSeconds": 30},
                   "spec": {}, "status": {"phase": "Running"}})
        };
        assert!(usage("", "pods", &deleting("2000-01-01T00:00:00Z"), now()).is_empty());
        assert!(!usage("", "pods", &deleting("2999-01-01T00:00:00Z"), now()).is_empty());
    }

    #[test]
    fn other_pod_resources_are_counted_from_containers() {
        let pod = json!({
            "metadata": {"annotations": {ANNOTATION: "0.25vCPU 0.5GiB"}},
            "spec": {
                "containers": [
                    {"name": "a", "resources": {"requests": {"ephemeral-storage": "1Gi"}}},
                    {"name": "b", "resources": {"requests": {"ephemeral-storage": "1Gi"}}},
                ],
                "initContainers": [
                    {"name": "i", "resources": {"requests": {"ephemeral-storage": "3Gi"}}},
                ],
            },
        });
        let u = usage("", "pods", &pod, now());
        assert_eq!(u["requests.ephemeral-storage"].to_string(), "3Gi");
        assert_eq!(u["ephemeral-storage"].to_string(), "3Gi");
        assert_eq!(u["memory"].to_string(), "512Mi");
    }

    #[test]
    fn services_claims_and_generic_counts() {
        let lb = json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}, {"port": 443}]}});
        let u = usage("", "services", &lb, now());
        assert_eq!(u["services"], Amount::count(1));
        assert_eq!(u["services.loadbalancers"], Amount::count(1));
        assert_eq!(u["services.nodeports"], Amount::count(2));
        let cluster_ip = json!({"spec": {"ports": [{"port": 80}]}});
        assert!(!usage("", "services", &cluster_ip, now()).contains_key("services.loadbalancers"));

        let claim = json!({"spec": {"storageClassName": "fast",
                                    "resources": {"requests": {"storage": "5Gi"}}}});
        let u = usage("", "persistentvolumeclaims", &claim, now());
        assert_eq!(u["requests.storage"].to_string(), "5Gi");
        assert_eq!(
            u["fast.storageclass.storage.k8s.io/requests.storage"].to_string(),
            "5Gi"
        );
        assert_eq!(u["persistentvolumeclaims"], Amount::count(1));

        let u = usage("apps", "deployments", &json!({}), now());
        assert_eq!(pretty(&u), "count/deployments.apps=1");
        let u = usage("", "configmaps", &json!({}), now());
        assert_eq!(pretty(&u), "configmaps=1,count/configmaps=1");
    }

    #[test]
    fn quota_resources_name_the_kind_they_count() {
        let kind = |r: &str| counted_kind(r).map(|(g, p)| format!("{g}/{p}"));
        assert_eq!(kind("cpu").as_deref(), Some("/pods"));
        assert_eq!(kind("limits.memory").as_deref(), Some("/pods"));
        assert_eq!(
            kind("requests.storage").as_deref(),
            Some("/persistentvolumeclaims")
        );
        assert_eq!(
            kind("gold.storageclass.storage.k8s.io/requests.storage").as_deref(),
            Some("/persistentvolumeclaims")
        );
        assert_eq!(kind("services.loadbalancers").as_deref(), Some("/services"));
        assert_eq!(
            kind("count/deployments.apps").as_deref(),
            Some("apps/deployments")
        );
        assert_eq!(kind("count/secrets").as_deref(), Some("/secrets"));
        assert_eq!(kind("bogus"), None);
    }

    #[test]
    fn scopes_select_pods_only() {
        let scoped = |scopes: Value| json!({"spec": {"hard": {"pods": "1"}, "scopes": scopes}});
        let best_effort = json!({"spec": {"containers": [{"name": "a"}]}});
        let burstable = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "1"}}}]}});
        let terminating = json!({"spec": {"activeDeadlineSeconds": 10,
                                          "containers": [{"name": "a"}]}});
        let q = scoped(json!(["BestEffort"]));
        assert!(quota_selects(&q, "", "pods", &best_effort));
        assert!(!quota_selects(&q, "", "pods", &burstable));
        assert!(!quota_selects(&q, "", "services", &json!({})));
        let q = scoped(json!(["NotBestEffort"]));
        assert!(quota_selects(&q, "", "pods", &burstable));
        let q = scoped(json!(["Terminating"]));
        assert!(quota_selects(&q, "", "pods", &terminating));
        assert!(!quota_selects(&q, "", "pods", &best_effort));
        let q = scoped(json!(["NotTerminating", "BestEffort"]));
        assert!(quota_selects(&q, "", "pods", &best_effort));
        assert!(!quota_selects(&q, "", "pods", &terminating));
        assert!(quota_selects(
            &json!({"spec": {}}),
            "",
            "services",
            &json!({})
        ));
    }

    #[test]
    fn priority_class_scope_selector() {
        let q = json!({"spec": {"scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}});
        let pod = |class: &str| json!({"spec": {"priorityClassName": class}});
        assert!(quota_selects(&q, "", "pods", &pod("high")));
        assert!(!quota_selects(&q, "", "pods", &pod("low")));
        assert!(!quota_selects(&q, "", "pods", &pod("")));
    }
}
