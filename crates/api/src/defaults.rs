//! Defaulting: the fields upstream fills in when an object is decoded (`SetDefaults_*` of
//! `pkg/apis/*/v1/defaults.go` and the declarative `+default` markers), and what the registry
//! strategies do on create (`PrepareForCreate`).
//!
//! Every function works on the whole object as JSON and only fills in fields that are absent
//! (or `null`), so defaulting is idempotent. Values of the wrong JSON type are left alone for
//! validation to report.

use serde_json::{json, Map, Value};

type Object = Map<String, Value>;

/// A Secret: `type` Opaque, and `stringData` (write-only) merged into `data`, each value
/// base64-encoded, a key in both taking the `stringData` value (upstream's conversion).
fn default_secret(root: &mut Object) {
    use base64::Engine as _;
    set_if_absent(root, "type", json!("Opaque"));
    let Some(Value::Object(string_data)) = root.get("stringData").cloned() else {
        if root.get("stringData").is_some_and(Value::is_null) {
            root.remove("stringData");
        }
        return;
    };
    if !root.get("data").is_some_and(Value::is_object) {
        root.insert("data".to_string(), json!({}));
    }
    if let Some(Value::Object(data)) = root.get_mut("data") {
        for (key, value) in string_data {
            if let Value::String(text) = value {
                let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
                data.insert(key, Value::String(encoded));
            }
        }
    }
    root.remove("stringData");
}

/// Fills in upstream's defaults for an object of kind `(group, kind)`. Unknown kinds are left
/// untouched. Applying it twice gives the same result as applying it once.
pub fn apply_defaults(group: &str, kind: &str, obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    match (group, kind) {
        ("", "Pod") => default_pod(root),
        ("", "PodTemplate") => default_template_at(root, &["template"]),
        ("", "ReplicationController") => default_replication_controller(root),
        ("", "Service") => default_service(root),
        ("", "Secret") => default_secret(root),
        ("", "PersistentVolumeClaim") => default_pvc(root),
        ("", "PersistentVolume") => default_pv(root),
        ("", "Namespace") => default_namespace(root),
        ("", "Endpoints") => default_endpoints(root),
        ("", "Node") => default_node(root),
        ("", "LimitRange") => default_limit_range(root),
        ("apps", "Deployment") => default_deployment(root),
        ("apps", "ReplicaSet") => default_replica_set(root),
        ("apps", "StatefulSet") => default_stateful_set(root),
        ("apps", "DaemonSet") => default_daemon_set(root),
        ("batch", "Job") => default_job(root),
        ("batch", "CronJob") => default_cron_job(root),
        ("discovery.k8s.io", "EndpointSlice") => default_endpoint_slice(root),
        ("storage.k8s.io", "StorageClass") => {
            set_if_absent(root, "reclaimPolicy", json!("Delete"));
            set_if_absent(root, "volumeBindingMode", json!("Immediate"));
        }
        _ => {}
    }
}

/// What upstream's registry strategies do to a new object beyond defaulting: reset the status,
/// set `metadata.generation` to 1 for kinds that track it, generate a Job's selector and labels
/// from `uid` (the object's new `metadata.uid`), and compute a Pod's initial status. Also fills
/// in what the default admission plugins add to a Pod (`Priority`, `DefaultTolerationSeconds`).
/// Call it after [`apply_defaults`].
pub fn prepare_for_create(group: &str, kind: &str, obj: &mut Value, uid: &str) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    match (group, kind) {
        ("", "Pod") => prepare_pod(root),
        ("", "Namespace") => {
            if let Some(spec) = child_object(root, "spec") {
                let finalizers = spec.entry("finalizers").or_insert_with(|| json!([]));
                if let Some(list) = finalizers.as_array_mut() {
                    if !list.iter().any(|f| f == "kubernetes") {
                        list.push(json!("kubernetes"));
                    }
                }
            }
            root.insert("status".into(), json!({"phase": "Active"}));
        }
        ("", "Service") => {
            root.insert("status".into(), json!({"loadBalancer": {}}));
        }
        ("", "PersistentVolumeClaim") | ("", "PersistentVolume") => {
            root.insert("status".into(), json!({"phase": "Pending"}));
        }
        ("", "ReplicationController")
        | ("apps", "Deployment")
        | ("apps", "ReplicaSet")
        | ("apps", "StatefulSet")
        | ("apps", "DaemonSet")
        | ("batch", "CronJob")
        | ("policy", "PodDisruptionBudget") => {
            root.insert("status".into(), json!({}));
            set_generation_one(root);
        }
        ("batch", "Job") => {
            root.insert("status".into(), json!({}));
            set_generation_one(root);
            generate_job_selector(root, uid);
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Inserts `value` under `key` when the key is absent or `null`.
fn set_if_absent(map: &mut Object, key: &str, value: Value) {
    match map.get(key) {
        None | Some(Value::Null) => {
            map.insert(key.to_string(), value);
        }
        Some(_) => {}
    }
}

/// The object under `key`, created empty when absent or `null`; `None` when it is not an object.
fn child_object<'a>(map: &'a mut Object, key: &str) -> Option<&'a mut Object> {
    set_if_absent(map, key, json!({}));
    map.get_mut(key).and_then(Value::as_object_mut)
}

/// The object under `key` only if it already exists.
fn existing_object<'a>(map: &'a mut Object, key: &str) -> Option<&'a mut Object> {
    map.get_mut(key).and_then(Value::as_object_mut)
}

/// The object at a path of keys, only if every step exists.
fn existing_path<'a>(map: &'a mut Object, path: &[&str]) -> Option<&'a mut Object> {
    let mut current = map;
    for key in path {
        current = existing_object(current, key)?;
    }
    Some(current)
}

/// The object elements of the array under `key` (non-objects are skipped).
fn objects_in<'a>(map: &'a mut Object, key: &str) -> impl Iterator<Item = &'a mut Object> {
    map.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flat_map(|items| items.iter_mut().filter_map(Value::as_object_mut))
}

/// Whether the value under `key` is absent, `null`, or an empty object/array/string.
fn is_empty_at(map: &Object, key: &str) -> bool {
    match map.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::String(s)) => s.is_empty(),
        Some(_) => false,
    }
}

fn set_generation_one(root: &mut Object) {
    if let Some(meta) = child_object(root, "metadata") {
        meta.insert("generation".into(), json!(1));
    }
}

// ---------------------------------------------------------------------------------------------
// core/v1: pods and pod templates.

fn default_pod(root: &mut Object) {
    let Some(spec) = existing_object(root, "spec") else {
        return;
    };
    default_pod_spec(spec);
    // SetDefaults_Pod: only on pods, not on templates.
    for key in ["containers", "initContainers"] {
        for container in objects_in(spec, key) {
            default_requests_from_limits(container);
        }
    }
    set_if_absent(spec, "enableServiceLinks", json!(true));
    if spec.get("hostNetwork") == Some(&json!(true)) {
        for key in ["containers", "initContainers"] {
            for container in objects_in(spec, key) {
                for port in objects_in(container, "ports") {
                    let host_port = port.get("hostPort").and_then(Value::as_i64).unwrap_or(0);
                    if host_port == 0 {
                        if let Some(container_port) = port.get("containerPort").cloned() {
                            port.insert("hostPort".into(), container_port);
                        }
                    }
                }
            }
        }
    }
}

/// Requests default to limits for every resource that has a limit but no request.
fn default_requests_from_limits(container: &mut Object) {
    let Some(resources) = existing_object(container, "resources") else {
        return;
    };
    let Some(limits) = resources.get("limits").and_then(Value::as_object).cloned() else {
        return;
    };
    if limits.is_empty() {
        return;
    }
    let Some(requests) = child_object(resources, "requests") else {
        return;
    };
    for (name, value) in limits {
        requests.entry(name).or_insert(value);
    }
}

/// Defaults the pod spec of the template at `path` (e.g. `spec.template`).
fn default_template_at(root: &mut Object, path: &[&str]) {
    if let Some(template) = existing_path(root, path) {
        if let Some(spec) = existing_object(template, "spec") {
            default_pod_spec(spec);
        }
    }
}

/// SetDefaults_PodSpec and everything the generated defaulters apply inside a pod spec.
fn default_pod_spec(spec: &mut Object) {
    set_if_absent(spec, "dnsPolicy", json!("ClusterFirst"));
    set_if_absent(spec, "restartPolicy", json!("Always"));
    set_if_absent(spec, "securityContext", json!({}));
    set_if_absent(spec, "terminationGracePeriodSeconds", json!(30));
    set_if_absent(spec, "schedulerName", json!("default-scheduler"));
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        for container in objects_in(spec, key) {
            default_container(container);
        }
    }
    for volume in objects_in(spec, "volumes") {
        default_volume(volume);
    }
}

fn default_container(container: &mut Object) {
    if is_empty_at(container, "imagePullPolicy") {
        let image = container.get("image").and_then(Value::as_str).unwrap_or("");
        let policy = if image_tag(image) == Some("latest") {
            "Always"
        } else {
            "IfNotPresent"
        };
        container.insert("imagePullPolicy".into(), json!(policy));
    }
    set_if_absent(
        container,
        "terminationMessagePath",
        json!("/dev/termination-log"),
    );
    set_if_absent(container, "terminationMessagePolicy", json!("File"));
    set_if_absent(container, "resources", json!({}));
    for port in objects_in(container, "ports") {
        set_if_absent(port, "protocol", json!("TCP"));
    }
    for env in objects_in(container, "env") {
        if let Some(field_ref) = existing_path(env, &["valueFrom", "fieldRef"]) {
            set_if_absent(field_ref, "apiVersion", json!("v1"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(probe) = existing_object(container, probe) {
            set_if_absent(probe, "timeoutSeconds", json!(1));
            set_if_absent(probe, "periodSeconds", json!(10));
            set_if_absent(probe, "successThreshold", json!(1));
            set_if_absent(probe, "failureThreshold", json!(3));
            default_http_get(probe);
        }
    }
    if let Some(lifecycle) = existing_object(container, "lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(handler) = existing_object(lifecycle, hook) {
                default_http_get(handler);
            }
        }
    }
}

fn default_http_get(handler: &mut Object) {
    if let Some(http_get) = existing_object(handler, "httpGet") {
        set_if_absent(http_get, "path", json!("/"));
        set_if_absent(http_get, "scheme", json!("HTTP"));
    }
}

/// The tag of an image reference as upstream's `parsers.ParseImageName` sees it: `latest` when
/// there is neither tag nor digest, `None` when there is only a digest.
fn image_tag(image: &str) -> Option<&str> {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    let last_component = name.rsplit('/').next().unwrap_or(name);
    match last_component.split_once(':') {
        Some((_, tag)) => Some(tag),
        None if digest.is_some() => None,
        None => Some("latest"),
    }
}

/// The volume source fields a volume may have; a volume with none of them becomes an emptyDir.
pub(crate) const VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

fn default_volume(volume: &mut Object) {
    let has_source = VOLUME_SOURCES
        .iter()
        .any(|s| !matches!(volume.get(*s), None | Some(Value::Null)));
    if !has_source {
        volume.insert("emptyDir".into(), json!({}));
    }
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(source) = existing_object(volume, source) {
            set_if_absent(source, "defaultMode", json!(420));
        }
    }
    if let Some(projected) = existing_object(volume, "projected") {
        for projection in objects_in(projected, "sources") {
            if let Some(token) = existing_object(projection, "serviceAccountToken") {
                set_if_absent(token, "expirationSeconds", json!(3600));
            }
            if let Some(downward) = existing_object(projection, "downwardAPI") {
                default_downward_items(downward);
            }
        }
    }
    if let Some(downward) = existing_object(volume, "downwardAPI") {
        default_downward_items(downward);
    }
    if let Some(host_path) = existing_object(volume, "hostPath") {
        set_if_absent(host_path, "type", json!(""));
    }
    if let Some(iscsi) = existing_object(volume, "iscsi") {
        set_if_absent(iscsi, "iscsiInterface", json!("default"));
    }
    if let Some(rbd) = existing_object(volume, "rbd") {
        set_if_absent(rbd, "pool", json!("rbd"));
        set_if_absent(rbd, "user", json!("admin"));
        set_if_absent(rbd, "keyring", json!("/etc/ceph/keyring"));
    }
    if let Some(image) = existing_object(volume, "image") {
        if is_empty_at(image, "pullPolicy") {
            let reference = image.get("reference").and_then(Value::as_str).unwrap_or("");
            let policy = if image_tag(reference) == Some("latest") {
                "Always"
            } else {
                "IfNotPresent"
            };
            image.insert("pullPolicy".into(), json!(policy));
        }
    }
    if let Some(ephemeral) = existing_path(volume, &["ephemeral", "volumeClaimTemplate", "spec"]) {
        set_if_absent(ephemeral, "volumeMode", json!("Filesystem"));
    }
}

fn default_downward_items(downward: &mut Object) {
    for item in objects_in(downward, "items") {
        if let Some(field_ref) = existing_object(item, "fieldRef") {
            set_if_absent(field_ref, "apiVersion", json!("v1"));
        }
    }
}

fn prepare_pod(root: &mut Object) {
    let qos = root.get("spec").map(pod_qos_class).unwrap_or("BestEffort");
    root.insert(
        "status".into(),
        json!({"phase": "Pending", "qosClass": qos}),
    );
    let Some(spec) = existing_object(root, "spec") else {
        return;
    };
    // Priority admission: pods without a priority class get the default priority 0.
    if is_empty_at(spec, "priorityClassName") {
        set_if_absent(spec, "priority", json!(0));
    }
    set_if_absent(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    // Default tolerations are the DefaultTolerationSeconds admission plugin's (crates/admission).
}

/// The QoS class of a pod spec (`Guaranteed`, `Burstable` or `BestEffort`), as upstream's
/// `GetPodQOS` computes it from the CPU and memory requests and limits of all containers.
pub fn pod_qos_class(spec: &Value) -> &'static str {
    use crate::quantity::Quantity;
    const COMPUTE: [&str; 2] = ["cpu", "memory"];
    let parse = |v: &Value| {
        v.as_str()
            .and_then(|s| Quantity::parse(s).ok())
            .or_else(|| {
                v.as_f64()
                    .and_then(|f| Quantity::parse(&f.to_string()).ok())
            })
    };
    let mut requests: Vec<(&str, crate::quantity::Quantity)> = Vec::new();
    let mut limits: Vec<(&str, crate::quantity::Quantity)> = Vec::new();
    let mut guaranteed = true;
    let containers = ["initContainers", "containers"]
        .into_iter()
        .filter_map(|key| spec.get(key).and_then(Value::as_array))
        .flatten();
    for container in containers {
        let resources = container.get("resources");
        let list = |name: &str| {
            resources
                .and_then(|r| r.get(name))
                .and_then(Value::as_object)
        };
        let mut limited = 0;
        for resource in COMPUTE {
            if let Some(q) = list("requests")
                .and_then(|m| m.get(resource))
                .and_then(parse)
            {
                if !q.is_zero() {
                    add_quantity(&mut requests, resource, q);
                }
            }
            if let Some(q) = list("limits").and_then(|m| m.get(resource)).and_then(parse) {
                if !q.is_zero() {
                    limited += 1;
                    add_quantity(&mut limits, resource, q);
                }
            }
        }
        if limited < COMPUTE.len() {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    if guaranteed {
        let equal = requests.len() == limits.len()
            && requests
                .iter()
                .all(|(name, req)| limits.iter().any(|(n, lim)| n == name && lim == req));
        if equal {
            return "Guaranteed";
        }
    }
    "Burstable"
}

fn add_quantity<'a>(
    list: &mut Vec<(&'a str, crate::quantity::Quantity)>,
    name: &'a str,
    q: crate::quantity::Quantity,
) {
    match list.iter_mut().find(|(n, _)| *n == name) {
        Some((_, existing)) => {
            let sum = existing.to_nanos() + q.to_nanos();
            if let Ok(total) = crate::quantity::Quantity::parse(&format!("{sum}n")) {
                *existing = total;
            }
        }
        None => list.push((name, q)),
    }
}

// ---------------------------------------------------------------------------------------------
// core/v1: other kinds.

fn default_replication_controller(root: &mut Object) {
    let template_labels = root
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"))
        .filter(|l| l.is_object())
        .cloned();
    if let Some(labels) = template_labels {
        if let Some(spec) = existing_object(root, "spec") {
            if is_empty_at(spec, "selector") {
                spec.insert("selector".into(), labels.clone());
            }
        }
        if let Some(meta) = child_object(root, "metadata") {
            if is_empty_at(meta, "labels") {
                meta.insert("labels".into(), labels);
            }
        }
    }
    if let Some(spec) = existing_object(root, "spec") {
        set_if_absent(spec, "replicas", json!(1));
    }
    default_template_at(root, &["spec", "template"]);
}

fn default_service(root: &mut Object) {
    let Some(spec) = child_object(root, "spec") else {
        return;
    };
    set_if_absent(spec, "sessionAffinity", json!("None"));
    match spec.get("sessionAffinity").and_then(Value::as_str) {
        Some("None") => {
            spec.remove("sessionAffinityConfig");
        }
        Some("ClientIP") => {
            let has_timeout = spec
                .get("sessionAffinityConfig")
                .and_then(|c| c.get("clientIP"))
                .and_then(|c| c.get("timeoutSeconds"))
                .is_some_and(|t| !t.is_null());
            if !has_timeout {
                spec.insert(
                    "sessionAffinityConfig".into(),
                    json!({"clientIP": {"timeoutSeconds": 10800}}),
                );
            }
        }
        _ => {}
    }
    set_if_absent(spec, "type", json!("ClusterIP"));
    for port in objects_in(spec, "ports") {
        set_if_absent(port, "protocol", json!("TCP"));
        let target_unset = match port.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s.is_empty(),
            Some(_) => false,
        };
        if target_unset {
            if let Some(p) = port.get("port").cloned() {
                port.insert("targetPort".into(), p);
            }
        }
    }
    let service_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let externally_accessible = service_type == "LoadBalancer"
        || service_type == "NodePort"
        || (service_type == "ClusterIP" && !is_empty_at(spec, "externalIPs"));
    if externally_accessible {
        set_if_absent(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if matches!(
        service_type.as_str(),
        "ClusterIP" | "NodePort" | "LoadBalancer"
    ) {
        set_if_absent(spec, "internalTrafficPolicy", json!("Cluster"));
        // What the IP allocator of a single-stack IPv4 cluster fills in.
        let headless_without_selector = spec.get("clusterIP").and_then(Value::as_str)
            == Some("None")
            && is_empty_at(spec, "selector");
        let policy = if headless_without_selector {
            "RequireDualStack"
        } else {
            "SingleStack"
        };
        set_if_absent(spec, "ipFamilyPolicy", json!(policy));
        if is_empty_at(spec, "ipFamilies") {
            spec.insert("ipFamilies".into(), json!(["IPv4"]));
        }
    }
    if service_type == "LoadBalancer" {
        set_if_absent(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
}

fn default_pvc(root: &mut Object) {
    if let Some(spec) = existing_object(root, "spec") {
        set_if_absent(spec, "volumeMode", json!("Filesystem"));
    }
    if let Some(status) = child_object(root, "status") {
        set_if_absent(status, "phase", json!("Pending"));
    }
}

fn default_pv(root: &mut Object) {
    if let Some(spec) = child_object(root, "spec") {
        set_if_absent(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
        set_if_absent(spec, "volumeMode", json!("Filesystem"));
    }
    if let Some(status) = child_object(root, "status") {
        set_if_absent(status, "phase", json!("Pending"));
    }
}

fn default_namespace(root: &mut Object) {
    if let Some(meta) = child_object(root, "metadata") {
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if !name.is_empty() {
            if let Some(labels) = child_object(meta, "labels") {
                labels.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }
    }
    if let Some(status) = child_object(root, "status") {
        set_if_absent(status, "phase", json!("Active"));
    }
}

fn default_endpoints(root: &mut Object) {
    for subset in objects_in(root, "subsets") {
        for port in objects_in(subset, "ports") {
            set_if_absent(port, "protocol", json!("TCP"));
        }
    }
}

fn default_endpoint_slice(root: &mut Object) {
    for port in objects_in(root, "ports") {
        set_if_absent(port, "name", json!(""));
        set_if_absent(port, "protocol", json!("TCP"));
    }
}

fn default_node(root: &mut Object) {
    if let Some(status) = existing_object(root, "status") {
        if let Some(capacity) = status.get("capacity").filter(|c| c.is_object()).cloned() {
            set_if_absent(status, "allocatable", capacity);
        }
    }
}

fn default_limit_range(root: &mut Object) {
    let Some(spec) = existing_object(root, "spec") else {
        return;
    };
    for item in objects_in(spec, "limits") {
        if item.get("type").and_then(Value::as_str) != Some("Container") {
            continue;
        }
        let list = |item: &Object, key: &str| {
            item.get(key)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };
        let mut default = list(item, "default");
        let mut default_request = list(item, "defaultRequest");
        for (k, v) in list(item, "max") {
            default.entry(k).or_insert(v);
        }
        for (k, v) in &default {
            default_request.entry(k.clone()).or_insert(v.clone());
        }
        for (k, v) in list(item, "min") {
            default_request.entry(k).or_insert(v);
        }
        if !default.is_empty() {
            item.insert("default".into(), Value::Object(default));
        }
        if !default_request.is_empty() {
            item.insert("defaultRequest".into(), Value::Object(default_request));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// apps/v1.

fn default_deployment(root: &mut Object) {
    if let Some(spec) = existing_object(root, "spec") {
        set_if_absent(spec, "replicas", json!(1));
        if let Some(strategy) = child_object(spec, "strategy") {
            if is_empty_at(strategy, "type") {
                strategy.insert("type".into(), json!("RollingUpdate"));
            }
            if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                if let Some(rolling) = child_object(strategy, "rollingUpdate") {
                    set_if_absent(rolling, "maxUnavailable", json!("25%"));
                    set_if_absent(rolling, "maxSurge", json!("25%"));
                }
            }
        }
        set_if_absent(spec, "revisionHistoryLimit", json!(10));
        set_if_absent(spec, "progressDeadlineSeconds", json!(600));
    }
    default_template_at(root, &["spec", "template"]);
}

fn default_replica_set(root: &mut Object) {
    if let Some(spec) = existing_object(root, "spec") {
        set_if_absent(spec, "replicas", json!(1));
    }
    default_template_at(root, &["spec", "template"]);
}

fn default_stateful_set(root: &mut Object) {
    if let Some(spec) = existing_object(root, "spec") {
        set_if_absent(spec, "podManagementPolicy", json!("OrderedReady"));
        if let Some(strategy) = child_object(spec, "updateStrategy") {
            if is_empty_at(strategy, "type") {
                strategy.insert("type".into(), json!("RollingUpdate"));
                set_if_absent(strategy, "rollingUpdate", json!({}));
            }
            if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                if let Some(rolling) = existing_object(strategy, "rollingUpdate") {
                    set_if_absent(rolling, "partition", json!(0));
                }
            }
        }
        if let Some(policy) = child_object(spec, "persistentVolumeClaimRetentionPolicy") {
            set_if_absent(policy, "whenDeleted", json!("Retain"));
            set_if_absent(policy, "whenScaled", json!("Retain"));
        }
        set_if_absent(spec, "replicas", json!(1));
        set_if_absent(spec, "revisionHistoryLimit", json!(10));
        for claim in objects_in(spec, "volumeClaimTemplates") {
            default_pvc(claim);
        }
    }
    default_template_at(root, &["spec", "template"]);
}

fn default_daemon_set(root: &mut Object) {
    if let Some(spec) = existing_object(root, "spec") {
        if let Some(strategy) = child_object(spec, "updateStrategy") {
            if is_empty_at(strategy, "type") {
                strategy.insert("type".into(), json!("RollingUpdate"));
            }
            if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                if let Some(rolling) = child_object(strategy, "rollingUpdate") {
                    set_if_absent(rolling, "maxUnavailable", json!(1));
                    set_if_absent(rolling, "maxSurge", json!(0));
                }
            }
        }
        set_if_absent(spec, "revisionHistoryLimit", json!(10));
    }
    default_template_at(root, &["spec", "template"]);
}

// ---------------------------------------------------------------------------------------------
// batch/v1.

fn default_job(root: &mut Object) {
    let template_labels = root
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"))
        .filter(|l| l.is_object())
        .cloned();
    if let Some(spec) = existing_object(root, "spec") {
        let absent = |spec: &Object, key: &str| matches!(spec.get(key), None | Some(Value::Null));
        if absent(spec, "completions") && absent(spec, "parallelism") {
            spec.insert("completions".into(), json!(1));
            spec.insert("parallelism".into(), json!(1));
        }
        set_if_absent(spec, "parallelism", json!(1));
        if absent(spec, "backoffLimit") {
            let limit = if absent(spec, "backoffLimitPerIndex") {
                6
            } else {
                i32::MAX
            };
            spec.insert("backoffLimit".into(), json!(limit));
        }
        set_if_absent(spec, "completionMode", json!("NonIndexed"));
        set_if_absent(spec, "suspend", json!(false));
        let has_failure_policy = !absent(spec, "podFailurePolicy");
        if let Some(policy) = existing_object(spec, "podFailurePolicy") {
            for rule in objects_in(policy, "rules") {
                for pattern in objects_in(rule, "onPodConditions") {
                    if is_empty_at(pattern, "status") {
                        pattern.insert("status".into(), json!("True"));
                    }
                }
            }
        }
        let replacement = if has_failure_policy {
            "Failed"
        } else {
            "TerminatingOrFailed"
        };
        set_if_absent(spec, "podReplacementPolicy", json!(replacement));
    }
    if let Some(labels) = template_labels {
        if let Some(meta) = child_object(root, "metadata") {
            if is_empty_at(meta, "labels") {
                meta.insert("labels".into(), labels);
            }
        }
    }
    default_template_at(root, &["spec", "template"]);
}

fn default_cron_job(root: &mut Object) {
    if let Some(spec) = existing_object(root, "spec") {
        set_if_absent(spec, "concurrencyPolicy", json!("Allow"));
        set_if_absent(spec, "suspend", json!(false));
        set_if_absent(spec, "successfulJobsHistoryLimit", json!(3));
        set_if_absent(spec, "failedJobsHistoryLimit", json!(1));
    }
    default_template_at(root, &["spec", "jobTemplate", "spec", "template"]);
}

/// The label a Job's generated selector uses, with the Job's uid as value.
pub const JOB_CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// The legacy form of [`JOB_CONTROLLER_UID_LABEL`], still set on pod templates.
pub const LEGACY_JOB_CONTROLLER_UID_LABEL: &str = "controller-uid";
/// The label carrying the Job's name on its pods.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// The legacy form of [`JOB_NAME_LABEL`].
pub const LEGACY_JOB_NAME_LABEL: &str = "job-name";

/// Upstream's `generateSelector`: unless `spec.manualSelector` is true, the selector is the
/// controller-uid label and the template gets the uid and job-name labels.
fn generate_job_selector(root: &mut Object, uid: &str) {
    let name = root
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let Some(spec) = existing_object(root, "spec") else {
        return;
    };
    if spec.get("manualSelector") == Some(&json!(true)) {
        return;
    }
    if let Some(labels) = child_object(spec, "template")
        .and_then(|t| child_object(t, "metadata"))
        .and_then(|m| child_object(m, "labels"))
    {
        for (key, value) in [
            (LEGACY_JOB_CONTROLLER_UID_LABEL, uid),
            (JOB_CONTROLLER_UID_LABEL, uid),
            (LEGACY_JOB_NAME_LABEL, name.as_str()),
            (JOB_NAME_LABEL, name.as_str()),
        ] {
            labels.entry(key).or_insert_with(|| json!(value));
        }
    }
    if is_empty_at(spec, "selector") {
        spec.insert(
            "selector".into(),
            json!({"matchLabels": {JOB_CONTROLLER_UID_LABEL: uid}}),
        );
    } else if let Some(selector) = existing_object(spec, "selector") {
        if let Some(match_labels) = child_object(selector, "matchLabels") {
            match_labels
                .entry(JOB_CONTROLLER_UID_LABEL)
                .or_insert_with(|| json!(uid));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaulted(group: &str, kind: &str, obj: Value) -> Value {
        let mut once = obj;
        apply_defaults(group, kind, &mut once);
        let mut twice = once.clone();
        apply_defaults(group, kind, &mut twice);
        assert_eq!(once, twice, "defaulting {kind} must be idempotent");
        once
    }

    fn pod_spec() -> Value {
        json!({"containers": [{"name": "app", "image": "nginx"}]})
    }

    #[test]
    fn pod_spec_and_container_defaults() {
        let pod = defaulted(
            "",
            "Pod",
            json!({"metadata": {"name": "p"}, "spec": {
                "containers": [{"name": "a", "image": "nginx:1.25", "ports": [{"containerPort": 80}],
                    "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                    "readinessProbe": {"httpGet": {"port": 80}}}],
                "initContainers": [{"name": "i", "image": "busybox"}],
            }}),
        );
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["securityContext"], json!({}));
        assert_eq!(spec["enableServiceLinks"], true);
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["resources"], json!({}));
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        let probe = &c["readinessProbe"];
        assert_eq!(probe["periodSeconds"], 10);
        assert_eq!(probe["timeoutSeconds"], 1);
        assert_eq!(probe["successThreshold"], 1);
        assert_eq!(probe["failureThreshold"], 3);
        assert_eq!(probe["httpGet"]["path"], "/");
        assert_eq!(probe["httpGet"]["scheme"], "HTTP");
        assert_eq!(spec["initContainers"][0]["imagePullPolicy"], "Always");
    }

    #[test]
    fn explicit_values_are_kept() {
        let pod = defaulted(
            "",
            "Pod",
            json!({"spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
            "enableServiceLinks": false,
            "containers": [{"name": "a", "image": "x:latest", "imagePullPolicy": "Never"}]}}),
        );
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 0);
        assert_eq!(pod["spec"]["enableServiceLinks"], false);
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Never");
    }

    #[test]
    fn image_pull_policy_follows_the_tag() {
        assert_eq!(image_tag("nginx"), Some("latest"));
        assert_eq!(image_tag("nginx:latest"), Some("latest"));
        assert_eq!(image_tag("localhost:5000/app"), Some("latest"));
        assert_eq!(image_tag("localhost:5000/app:v1"), Some("v1"));
        assert_eq!(image_tag("app@sha256:abc"), None);
        assert_eq!(image_tag("app:v2@sha256:abc"), Some("v2"));
    }

    #[test]
    fn pod_requests_default_from_limits_but_templates_do_not() {
        let container = json!({"name": "a", "image": "x:1", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}});
        let pod = defaulted(
            "",
            "Pod",
            json!({"spec": {"containers": [container.clone()]}}),
        );
        assert_eq!(
            pod["spec"]["containers"][0]["resources"]["requests"],
            json!({"cpu": "500m", "memory": "1Gi"})
        );
        let deploy = defaulted(
            "apps",
            "Deployment",
            json!({"spec": {"template": {"spec": {"containers": [container]}}}}),
        );
        let template = &deploy["spec"]["template"]["spec"];
        assert_eq!(
            template["containers"][0]["resources"]["requests"],
            json!({"cpu": "500m"})
        );
        assert!(template.get("enableServiceLinks").is_none());
        assert_eq!(template["restartPolicy"], "Always");
    }

    #[test]
    fn host_network_defaults_host_ports() {
        let pod = defaulted(
            "",
            "Pod",
            json!({"spec": {"hostNetwork": true, "containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 8080}]}]}}),
        );
        assert_eq!(pod["spec"]["containers"][0]["ports"][0]["hostPort"], 8080);
    }

    #[test]
    fn volume_defaults() {
        let pod = defaulted(
            "",
            "Pod",
            json!({"spec": {"containers": [], "volumes": [
                {"name": "empty"},
                {"name": "cm", "configMap": {"name": "c"}},
                {"name": "s", "secret": {"secretName": "s", "defaultMode": 256}},
                {"name": "p", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
                {"name": "h", "hostPath": {"path": "/x"}},
            ]}}),
        );
        let v = &pod["spec"]["volumes"];
        assert_eq!(v[0]["emptyDir"], json!({}));
        assert_eq!(v[1]["configMap"]["defaultMode"], 420);
        assert_eq!(v[2]["secret"]["defaultMode"], 256);
        assert!(v[2].get("emptyDir").is_none());
        assert_eq!(v[3]["projected"]["defaultMode"], 420);
        assert_eq!(
            v[3]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
            3600
        );
        assert_eq!(v[4]["hostPath"]["type"], "");
    }

    #[test]
    fn workload_templates_are_defaulted() {
        let template = json!({"metadata": {"labels": {"app": "a"}}, "spec": pod_spec()});
        for (group, kind, obj, path) in [
            (
                "",
                "ReplicationController",
                json!({"spec": {"template": template.clone()}}),
                "/spec/template/spec",
            ),
            (
                "",
                "PodTemplate",
                json!({"template": template.clone()}),
                "/template/spec",
            ),
            (
                "apps",
                "ReplicaSet",
                json!({"spec": {"template": template.clone()}}),
                "/spec/template/spec",
            ),
            (
                "apps",
                "StatefulSet",
                json!({"spec": {"template": template.clone()}}),
                "/spec/template/spec",
            ),
            (
                "apps",
                "DaemonSet",
                json!({"spec": {"template": template.clone()}}),
                "/spec/template/spec",
            ),
            (
                "batch",
                "Job",
                json!({"spec": {"template": template.clone()}}),
                "/spec/template/spec",
            ),
            (
                "batch",
                "CronJob",
                json!({"spec": {"jobTemplate": {"spec": {"template": template.clone()}}}}),
                "/spec/jobTemplate/spec/template/spec",
            ),
        ] {
            let out = defaulted(group, kind, obj);
            let spec = out.pointer(path).unwrap();
            assert_eq!(spec["dnsPolicy"], "ClusterFirst", "{kind}");
            assert_eq!(spec["containers"][0]["imagePullPolicy"], "Always", "{kind}");
        }
    }

    #[test]
    fn deployment_defaults() {
        let d = defaulted(
            "apps",
            "Deployment",
            json!({"spec": {"template": {"spec": pod_spec()}}}),
        );
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        let recreate = defaulted(
            "apps",
            "Deployment",
            json!({"spec": {"replicas": 0, "strategy": {"type": "Recreate"}}}),
        );
        assert_eq!(recreate["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(recreate["spec"]["replicas"], 0);
    }

    #[test]
    fn replication_controller_selector_and_labels_from_template() {
        let rc = defaulted(
            "",
            "ReplicationController",
            json!({"metadata": {"name": "r"}, "spec": {"template": {"metadata": {"labels": {"app": "a"}}, "spec": pod_spec()}}}),
        );
        assert_eq!(rc["spec"]["selector"], json!({"app": "a"}));
        assert_eq!(rc["metadata"]["labels"], json!({"app": "a"}));
        assert_eq!(rc["spec"]["replicas"], 1);
        let kept = defaulted(
            "",
            "ReplicationController",
            json!({"metadata": {"labels": {"x": "y"}}, "spec": {"selector": {"app": "b"}, "template": {"metadata": {"labels": {"app": "a"}}}}}),
        );
        assert_eq!(kept["spec"]["selector"], json!({"app": "b"}));
        assert_eq!(kept["metadata"]["labels"], json!({"x": "y"}));
        let rs = defaulted("apps", "ReplicaSet", json!({"spec": {}}));
        assert_eq!(rs["spec"]["replicas"], 1);
    }

    #[test]
    fn stateful_set_defaults() {
        let s = defaulted(
            "apps",
            "StatefulSet",
            json!({"spec": {"volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]}}),
        );
        let spec = &s["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(spec["podManagementPolicy"], "OrderedReady");
        assert_eq!(
            spec["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(
            spec["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        assert_eq!(
            spec["volumeClaimTemplates"][0]["spec"]["volumeMode"],
            "Filesystem"
        );
        assert_eq!(
            spec["volumeClaimTemplates"][0]["status"]["phase"],
            "Pending"
        );
        let on_delete = defaulted(
            "apps",
            "StatefulSet",
            json!({"spec": {"updateStrategy": {"type": "OnDelete"}}}),
        );
        assert_eq!(
            on_delete["spec"]["updateStrategy"],
            json!({"type": "OnDelete"})
        );
    }

    #[test]
    fn daemon_set_defaults() {
        let d = defaulted("apps", "DaemonSet", json!({"spec": {}}));
        assert_eq!(
            d["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    }

    #[test]
    fn job_defaults() {
        let j = defaulted(
            "batch",
            "Job",
            json!({"metadata": {"name": "j"}, "spec": {"template": {"metadata": {"labels": {"app": "a"}}, "spec": pod_spec()}}}),
        );
        let spec = &j["spec"];
        assert_eq!(spec["completions"], 1);
        assert_eq!(spec["parallelism"], 1);
        assert_eq!(spec["backoffLimit"], 6);
        assert_eq!(spec["completionMode"], "NonIndexed");
        assert_eq!(spec["suspend"], false);
        assert_eq!(spec["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(j["metadata"]["labels"], json!({"app": "a"}));

        let parallel = defaulted(
            "batch",
            "Job",
            json!({"spec": {"parallelism": 3, "backoffLimitPerIndex": 1, "completionMode": "Indexed",
            "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}}}),
        );
        assert!(parallel["spec"].get("completions").is_none());
        assert_eq!(parallel["spec"]["parallelism"], 3);
        assert_eq!(parallel["spec"]["backoffLimit"], i32::MAX);
        assert_eq!(parallel["spec"]["podReplacementPolicy"], "Failed");
        assert_eq!(
            parallel["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["status"],
            "True"
        );
    }

    #[test]
    fn cron_job_defaults() {
        let c = defaulted(
            "batch",
            "CronJob",
            json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": pod_spec()}}}}}),
        );
        let spec = &c["spec"];
        assert_eq!(spec["concurrencyPolicy"], "Allow");
        assert_eq!(spec["suspend"], false);
        assert_eq!(spec["successfulJobsHistoryLimit"], 3);
        assert_eq!(spec["failedJobsHistoryLimit"], 1);
        assert!(spec["jobTemplate"]["spec"].get("backoffLimit").is_none());
    }

    #[test]
    fn service_defaults() {
        let s = defaulted(
            "",
            "Service",
            json!({"spec": {"selector": {"app": "a"}, "ports": [{"port": 80}, {"port": 443, "targetPort": "https", "protocol": "UDP"}]}}),
        );
        let spec = &s["spec"];
        assert_eq!(spec["type"], "ClusterIP");
        assert_eq!(spec["sessionAffinity"], "None");
        assert_eq!(spec["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["ports"][0]["targetPort"], 80);
        assert_eq!(spec["ports"][1]["targetPort"], "https");
        assert_eq!(spec["ports"][1]["protocol"], "UDP");
        assert_eq!(spec["internalTrafficPolicy"], "Cluster");
        assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
        assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
        assert!(spec.get("externalTrafficPolicy").is_none());

        let lb = defaulted(
            "",
            "Service",
            json!({"spec": {"type": "LoadBalancer", "sessionAffinity": "ClientIP", "ports": [{"port": 80}]}}),
        );
        assert_eq!(lb["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
        assert_eq!(
            lb["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
            10800
        );

        let headless = defaulted("", "Service", json!({"spec": {"clusterIP": "None"}}));
        assert_eq!(headless["spec"]["ipFamilyPolicy"], "RequireDualStack");
        let external = defaulted(
            "",
            "Service",
            json!({"spec": {"type": "ExternalName", "externalName": "example.com"}}),
        );
        assert!(external["spec"].get("ipFamilies").is_none());
        assert!(external["spec"].get("internalTrafficPolicy").is_none());
    }

    #[test]
    fn core_kind_defaults() {
        assert_eq!(defaulted("", "Secret", json!({}))["type"], "Opaque");
        let merged = defaulted(
            "",
            "Secret",
            json!({"data": {"a": "b2xk", "keep": "eA=="}, "stringData": {"a": "new", "b": "hello"}}),
        );
        assert_eq!(
            merged["data"],
            json!({"a": "bmV3", "keep": "eA==", "b": "aGVsbG8="})
        );
        assert!(merged.get("stringData").is_none());
        assert_eq!(
            defaulted("", "Secret", json!({"type": "kubernetes.io/tls"}))["type"],
            "kubernetes.io/tls"
        );
        let pvc = defaulted("", "PersistentVolumeClaim", json!({"spec": {}}));
        assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
        assert_eq!(pvc["status"]["phase"], "Pending");
        let pv = defaulted("", "PersistentVolume", json!({"spec": {}}));
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(pv["spec"]["volumeMode"], "Filesystem");
        let ns = defaulted("", "Namespace", json!({"metadata": {"name": "team"}}));
        assert_eq!(
            ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "team"
        );
        assert_eq!(ns["status"]["phase"], "Active");
        let ep = defaulted(
            "",
            "Endpoints",
            json!({"subsets": [{"ports": [{"port": 80}]}]}),
        );
        assert_eq!(ep["subsets"][0]["ports"][0]["protocol"], "TCP");
        let slice = defaulted(
            "discovery.k8s.io",
            "EndpointSlice",
            json!({"ports": [{"port": 80}]}),
        );
        assert_eq!(
            slice["ports"][0],
            json!({"port": 80, "name": "", "protocol": "TCP"})
        );
        let node = defaulted("", "Node", json!({"status": {"capacity": {"cpu": "4"}}}));
        assert_eq!(node["status"]["allocatable"], json!({"cpu": "4"}));
        let sc = defaulted(
            "storage.k8s.io",
            "StorageClass",
            json!({"provisioner": "p"}),
        );
        assert_eq!(sc["reclaimPolicy"], "Delete");
        assert_eq!(sc["volumeBindingMode"], "Immediate");
    }

    #[test]
    fn limit_range_defaults() {
        let lr = defaulted(
            "",
            "LimitRange",
            json!({"spec": {"limits": [
                {"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}},
                {"type": "Pod", "max": {"cpu": "4"}},
            ]}}),
        );
        let item = &lr["spec"]["limits"][0];
        assert_eq!(item["default"], json!({"cpu": "2"}));
        assert_eq!(
            item["defaultRequest"],
            json!({"cpu": "2", "memory": "64Mi"})
        );
        assert!(lr["spec"]["limits"][1].get("default").is_none());
    }

    #[test]
    fn unknown_kinds_are_untouched() {
        let obj = json!({"spec": {"replicas": null}});
        assert_eq!(defaulted("example.com", "Widget", obj.clone()), obj);
    }

    #[test]
    fn job_selector_is_generated_on_create() {
        let mut job = defaulted(
            "batch",
            "Job",
            json!({"metadata": {"name": "pi"}, "spec": {"template": {"spec": pod_spec()}}}),
        );
        prepare_for_create("batch", "Job", &mut job, "u-1");
        assert_eq!(
            job["spec"]["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
        );
        let labels = &job["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels["controller-uid"], "u-1");
        assert_eq!(labels["batch.kubernetes.io/controller-uid"], "u-1");
        assert_eq!(labels["job-name"], "pi");
        assert_eq!(labels["batch.kubernetes.io/job-name"], "pi");
        assert_eq!(job["metadata"]["generation"], 1);
        assert_eq!(job["status"], json!({}));

        let mut manual = json!({"metadata": {"name": "m"}, "spec": {"manualSelector": true, "selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}}}});
        prepare_for_create("batch", "Job", &mut manual, "u-2");
        assert_eq!(
            manual["spec"]["selector"],
            json!({"matchLabels": {"a": "b"}})
        );
        assert_eq!(
            manual["spec"]["template"]["metadata"]["labels"],
            json!({"a": "b"})
        );
    }

    #[test]
    fn pod_status_and_admission_defaults_on_create() {
        let mut pod = defaulted("", "Pod", json!({"spec": pod_spec()}));
        prepare_for_create("", "Pod", &mut pod, "u");
        assert_eq!(
            pod["status"],
            json!({"phase": "Pending", "qosClass": "BestEffort"})
        );
        assert_eq!(pod["spec"]["priority"], 0);
        assert_eq!(pod["spec"]["preemptionPolicy"], "PreemptLowerPriority");
        let mut named = json!({"spec": {"containers": [], "priorityClassName": "high"}});
        prepare_for_create("", "Pod", &mut named, "u");
        assert!(named["spec"].get("priority").is_none());
    }

    #[test]
    fn qos_classes() {
        let with =
            |resources: Value| json!({"containers": [{"name": "a", "resources": resources}]});
        assert_eq!(pod_qos_class(&with(json!({}))), "BestEffort");
        assert_eq!(
            pod_qos_class(&with(json!({"requests": {"cpu": "100m"}}))),
            "Burstable"
        );
        let equal = json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1000m", "memory": "1Gi"}});
        assert_eq!(pod_qos_class(&with(equal)), "Guaranteed");
        let unequal = json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m", "memory": "1Gi"}});
        assert_eq!(pod_qos_class(&with(unequal)), "Burstable");
        let cpu_only = json!({"limits": {"cpu": "1"}, "requests": {"cpu": "1"}});
        assert_eq!(pod_qos_class(&with(cpu_only)), "Burstable");
    }

    #[test]
    fn other_create_preparations() {
        let mut ns = json!({"metadata": {"name": "n"}, "spec": {"finalizers": ["custom"]}});
        prepare_for_create("", "Namespace", &mut ns, "u");
        assert_eq!(ns["spec"]["finalizers"], json!(["custom", "kubernetes"]));
        assert_eq!(ns["status"]["phase"], "Active");
        let mut svc =
            json!({"spec": {}, "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}});
        prepare_for_create("", "Service", &mut svc, "u");
        assert_eq!(svc["status"], json!({"loadBalancer": {}}));
        let mut deploy = json!({"metadata": {"name": "d"}, "spec": {}, "status": {"replicas": 3}});
        prepare_for_create("apps", "Deployment", &mut deploy, "u");
        assert_eq!(deploy["status"], json!({}));
        assert_eq!(deploy["metadata"]["generation"], 1);
    }
}
