use serde_json::{json, Value};

use super::*;
use crate::RULES;

/// A pod spec that passes every rule.
fn clean_spec() -> Value {
    json!({
        "containers": [{
            "name": "app",
            "image": "nginx",
            "ports": [{"containerPort": 80}],
            "securityContext": {
                "allowPrivilegeEscalation": true,
                "privileged": false,
                "capabilities": {"add": ["NET_BIND_SERVICE", "cap_chown"], "drop": ["ALL"]}
            }
        }],
        "initContainers": [{"name": "init", "image": "busybox"}],
        "volumes": [
            {"name": "scratch", "emptyDir": {}},
            {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}
        ],
        "hostNetwork": false,
        "hostPID": false,
        "hostIPC": false
    })
}

/// Where each workload kind keeps its pod spec, as (group, kind, JSON pointer, field path).
const WORKLOADS: &[(&str, &str, &str, &str)] = &[
    ("", "Pod", "/spec", "spec"),
    ("", "PodTemplate", "/template/spec", "template.spec"),
    (
        "",
        "ReplicationController",
        "/spec/template/spec",
        "spec.template.spec",
    ),
    (
        "apps",
        "ReplicaSet",
        "/spec/template/spec",
        "spec.template.spec",
    ),
    (
        "apps",
        "Deployment",
        "/spec/template/spec",
        "spec.template.spec",
    ),
    (
        "apps",
        "StatefulSet",
        "/spec/template/spec",
        "spec.template.spec",
    ),
    ("batch", "Job", "/spec/template/spec", "spec.template.spec"),
    (
        "batch",
        "CronJob",
        "/spec/jobTemplate/spec/template/spec",
        "spec.jobTemplate.spec.template.spec",
    ),
];

/// An object of `kind` with `spec` at `pointer`.
fn wrap(pointer: &str, spec: Value) -> Value {
    let mut obj = json!({"metadata": {"name": "x"}});
    let mut parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    let last = parts.pop().unwrap();
    let mut cursor = &mut obj;
    for part in parts {
        cursor = cursor
            .as_object_mut()
            .unwrap()
            .entry(part)
            .or_insert_with(|| json!({}));
    }
    cursor[last] = spec;
    obj
}

/// Sets `value` at `pointer` inside `spec` (an array index one past the end appends).
fn with(mut spec: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    match spec.pointer_mut(parent).unwrap() {
        Value::Array(items) => {
            let index: usize = key.parse().unwrap();
            if index == items.len() {
                items.push(value);
            } else {
                items[index] = value;
            }
        }
        object => object[key] = value,
    }
    spec
}

/// Each pod rule's violating change, as (rule, JSON pointer in the spec, value, field suffix).
fn pod_cases() -> Vec<(&'static str, &'static str, Value, &'static str)> {
    vec![
        (NO_HOST_NETWORK, "/hostNetwork", json!(true), "hostNetwork"),
        (NO_HOST_PID, "/hostPID", json!(true), "hostPID"),
        (NO_HOST_IPC, "/hostIPC", json!(true), "hostIPC"),
        (
            NO_HOST_PATH,
            "/volumes/1",
            json!({"name": "host", "hostPath": {"path": "/var/run"}}),
            "volumes[1].hostPath",
        ),
        (
            NO_PROBES,
            "/containers/0/livenessProbe",
            json!({"httpGet": {"path": "/", "port": 80}}),
            "containers[0].livenessProbe",
        ),
        (
            NO_PROBES,
            "/containers/0/readinessProbe",
            json!({"tcpSocket": {"port": 80}}),
            "containers[0].readinessProbe",
        ),
        (
            NO_PROBES,
            "/containers/0/startupProbe",
            json!({"exec": {"command": ["true"]}}),
            "containers[0].startupProbe",
        ),
        (
            NO_PRIVILEGED,
            "/containers/0/securityContext/privileged",
            json!(true),
            "containers[0].securityContext.privileged",
        ),
        (
            NO_PRIVILEGED,
            "/containers/0/securityContext/windowsOptions",
            json!({"hostProcess": true}),
            "containers[0].securityContext.windowsOptions.hostProcess",
        ),
        (
            NO_PRIVILEGED,
            "/securityContext",
            json!({"windowsOptions": {"hostProcess": true}}),
            "securityContext.windowsOptions.hostProcess",
        ),
        (
            NO_EXTRA_CAPABILITIES,
            "/containers/0/securityContext/capabilities/add",
            json!(["CHOWN", "SYS_ADMIN"]),
            "containers[0].securityContext.capabilities.add[1]",
        ),
        (
            NO_HOST_PORT,
            "/containers/0/ports/0/hostPort",
            json!(8080),
            "containers[0].ports[0].hostPort",
        ),
        (
            NO_HOST_PORT,
            "/initContainers/0/ports",
            json!([{"containerPort": 53, "hostPort": 53}]),
            "initContainers[0].ports[0].hostPort",
        ),
    ]
}

fn rules_and_fields(violations: &[Violation]) -> Vec<(&'static str, String)> {
    violations
        .iter()
        .map(|v| (v.rule, v.field.clone()))
        .collect()
}

#[test]
fn clean_workloads_pass() {
    for (group, kind, pointer, _) in WORKLOADS {
        let obj = wrap(pointer, clean_spec());
        assert_eq!(
            check_object(group, kind, &obj, &Policy::default()),
            vec![],
            "{kind}"
        );
    }
}

#[test]
fn every_pod_rule_is_refused_in_every_workload_kind() {
    for (group, kind, pointer, prefix) in WORKLOADS {
        for (rule, spec_pointer, value, suffix) in pod_cases() {
            let obj = wrap(pointer, with(clean_spec(), spec_pointer, value));
            let violations = check_object(group, kind, &obj, &Policy::default());
            assert_eq!(
                rules_and_fields(&violations),
                vec![(rule, format!("{prefix}.{suffix}"))],
                "{kind} {spec_pointer}"
            );
            assert!(!violations[0].forbidden);
            let detail = violations[0].detail();
            assert!(
                detail.contains("is not available") || detail.contains("are not available"),
                "{detail}"
            );
            assert!(
                detail.ends_with(&format!("(serverless rule {rule})")),
                "{detail}"
            );
        }
    }
}

#[test]
fn relaxed_rules_are_not_reported() {
    for (rule, spec_pointer, value, _) in pod_cases() {
        let spec = with(clean_spec(), spec_pointer, value);
        let mut policy = Policy::default();
        policy.relax(rule).unwrap();
        assert_eq!(
            check_pod_spec(&spec, &FieldPath::root("spec"), &policy),
            vec![],
            "{rule}"
        );
    }
}

#[test]
fn probes_on_sidecar_and_ephemeral_containers_are_refused() {
    let spec = json!({
        "initContainers": [{"name": "sidecar", "image": "envoy", "restartPolicy": "Always",
                            "readinessProbe": {"tcpSocket": {"port": 9901}}}],
        "containers": [{"name": "app", "image": "nginx"}],
        "ephemeralContainers": [{"name": "debug", "image": "busybox",
                                 "startupProbe": {"exec": {"command": ["true"]}}}]
    });
    let violations = check_pod_spec(&spec, &FieldPath::root("spec"), &Policy::default());
    assert_eq!(
        rules_and_fields(&violations),
        vec![
            (
                NO_PROBES,
                "spec.initContainers[0].readinessProbe".to_string()
            ),
            (
                NO_PROBES,
                "spec.ephemeralContainers[0].startupProbe".to_string()
            ),
        ]
    );
}

#[test]
fn null_probe_and_zero_host_port_are_absent() {
    let spec = json!({
        "containers": [{"name": "app", "image": "nginx", "livenessProbe": null,
                        "ports": [{"containerPort": 80, "hostPort": 0}]}],
        "volumes": [{"name": "v", "hostPath": null, "emptyDir": {}}]
    });
    assert_eq!(
        check_pod_spec(&spec, &FieldPath::root("spec"), &Policy::default()),
        vec![]
    );
}

#[test]
fn every_violation_in_a_spec_is_reported() {
    let spec = json!({
        "hostNetwork": true,
        "containers": [
            {"name": "a", "image": "x", "securityContext": {"privileged": true}},
            {"name": "b", "image": "x", "livenessProbe": {"exec": {"command": ["true"]}},
             "ports": [{"containerPort": 1, "hostPort": 1}, {"containerPort": 2, "hostPort": 2}]}
        ],
        "volumes": [{"name": "h", "hostPath": {"path": "/"}}]
    });
    let violations = check_pod_spec(&spec, &FieldPath::root("spec"), &Policy::default());
    assert_eq!(
        rules_and_fields(&violations),
        vec![
            (NO_HOST_NETWORK, "spec.hostNetwork".to_string()),
            (NO_HOST_PATH, "spec.volumes[0].hostPath".to_string()),
            (
                NO_PRIVILEGED,
                "spec.containers[0].securityContext.privileged".to_string()
            ),
            (NO_PROBES, "spec.containers[1].livenessProbe".to_string()),
            (
                NO_HOST_PORT,
                "spec.containers[1].ports[0].hostPort".to_string()
            ),
            (
                NO_HOST_PORT,
                "spec.containers[1].ports[1].hostPort".to_string()
            ),
        ]
    );
}

#[test]
fn capabilities_allowed_set() {
    for allowed in [
        "CHOWN",
        "cap_net_bind_service",
        "CAP_KILL",
        "SYS_CHROOT",
        " setuid ",
    ] {
        assert!(is_allowed_capability(allowed), "{allowed}");
    }
    for refused in [
        "SYS_ADMIN",
        "NET_ADMIN",
        "SYS_MODULE",
        "SYS_PTRACE",
        "SYS_RAWIO",
        "SYS_BOOT",
        "SYS_TIME",
        "ALL",
        "NET_RAW",
        "CAP_BPF",
        "",
    ] {
        assert!(!is_allowed_capability(refused), "{refused}");
    }
    let spec = json!({"containers": [{"name": "a", "image": "x", "securityContext": {
        "capabilities": {"add": ["SYS_ADMIN", "CHOWN", "ALL", 7], "drop": ["SYS_ADMIN", "ALL"]}}}]});
    let violations = check_pod_spec(&spec, &FieldPath::root("spec"), &Policy::default());
    let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "spec.containers[0].securityContext.capabilities.add[0]",
            "spec.containers[0].securityContext.capabilities.add[2]",
            "spec.containers[0].securityContext.capabilities.add[3]",
        ]
    );
    assert!(
        violations[0].message.contains("\"SYS_ADMIN\""),
        "{}",
        violations[0].message
    );
    assert!(violations[0].message.contains("NET_BIND_SERVICE"));
}

#[test]
fn messages_say_what_to_do_instead() {
    let spec = with(
        clean_spec(),
        "/volumes/0",
        json!({"name": "h", "hostPath": {"path": "/data"}}),
    );
    let violations = check_pod_spec(&spec, &FieldPath::root("spec"), &Policy::default());
    assert_eq!(
        violations[0].message,
        "hostPath volumes are not available: there is no host in a serverless cluster; use an \
         emptyDir or a PersistentVolumeClaim instead"
    );
    let error = violations[0].field_error();
    assert_eq!(
        error.message(),
        "spec.volumes[0].hostPath: Forbidden: hostPath volumes are not available: there is no \
         host in a serverless cluster; use an emptyDir or a PersistentVolumeClaim instead \
         (serverless rule no-host-path)"
    );
    assert_eq!(error.cause()["reason"], "FieldValueForbidden");
    assert_eq!(error.cause()["field"], "spec.volumes[0].hostPath");
}

#[test]
fn daemonset_kind_is_refused_and_checked_when_relaxed() {
    let daemonset = wrap(
        "/spec/template/spec",
        with(clean_spec(), "/hostNetwork", json!(true)),
    );
    let violations = check_object("apps", "DaemonSet", &daemonset, &Policy::default());
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].rule, NO_DAEMONSET);
    assert_eq!(violations[0].field, "kind");
    assert!(violations[0].forbidden);
    assert_eq!(
        violations[0].message,
        "DaemonSets are not available: a serverless cluster has no nodes to run one pod per node \
         on; run the daemon as a sidecar container in the pods that need it, or as a Deployment"
    );

    let mut policy = Policy::default();
    policy.relax(NO_DAEMONSET).unwrap();
    assert_eq!(
        rules_and_fields(&check_object("apps", "DaemonSet", &daemonset, &policy)),
        vec![(
            NO_HOST_NETWORK,
            "spec.template.spec.hostNetwork".to_string()
        )]
    );
    let clean = wrap("/spec/template/spec", clean_spec());
    assert_eq!(check_object("apps", "DaemonSet", &clean, &policy), vec![]);
}

#[test]
fn services() {
    let policy = Policy::default();
    let cluster_ip = json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80}]}});
    let untyped = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}]}});
    let load_balancer = json!({"spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": true,
                                        "ports": [{"port": 80}]}});
    for ok in [&cluster_ip, &untyped, &load_balancer] {
        assert_eq!(check_object("", "Service", ok, &policy), vec![], "{ok}");
    }

    let node_port =
        json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}});
    assert_eq!(
        rules_and_fields(&check_object("", "Service", &node_port, &policy)),
        vec![
            (NO_NODE_PORT, "spec.type".to_string()),
            (NO_NODE_PORT, "spec.ports[0].nodePort".to_string()),
        ]
    );
    let load_balancer_ports = json!({"spec": {"type": "LoadBalancer", "healthCheckNodePort": 31000,
        "ports": [{"port": 80}, {"port": 443, "nodePort": 30443}, {"port": 8080, "nodePort": 0}]}});
    assert_eq!(
        rules_and_fields(&check_object("", "Service", &load_balancer_ports, &policy)),
        vec![
            (NO_NODE_PORT, "spec.ports[1].nodePort".to_string()),
            (NO_NODE_PORT, "spec.healthCheckNodePort".to_string()),
        ]
    );
    let mut relaxed = Policy::default();
    relaxed.relax(NO_NODE_PORT).unwrap();
    assert_eq!(check_object("", "Service", &node_port, &relaxed), vec![]);
}

#[test]
fn other_kinds_and_groups_are_not_checked() {
    let spec = with(clean_spec(), "/hostNetwork", json!(true));
    let obj = wrap("/spec/template/spec", spec.clone());
    assert_eq!(
        check_object("", "ConfigMap", &obj, &Policy::default()),
        vec![]
    );
    // A custom resource named Deployment in another group is not ours to judge.
    assert_eq!(
        check_object("example.com", "Deployment", &obj, &Policy::default()),
        vec![]
    );
    // A workload without a template yet has nothing to check.
    assert_eq!(
        check_object(
            "apps",
            "Deployment",
            &json!({"spec": {}}),
            &Policy::default()
        ),
        vec![]
    );
}

#[test]
fn every_rule_has_a_test_case() {
    let mut covered: Vec<&str> = pod_cases().iter().map(|c| c.0).collect();
    covered.extend([NO_DAEMONSET, NO_NODE_PORT]);
    for rule in RULES {
        assert!(covered.contains(&rule.name), "{}", rule.name);
    }
}

#[test]
fn pod_spec_of_every_workload_kind() {
    for (group, kind, pointer, prefix) in WORKLOADS {
        let obj = wrap(pointer, clean_spec());
        let (path, spec) = pod_spec_of(group, kind, &obj).unwrap();
        assert_eq!(path.as_str(), *prefix, "{kind}");
        assert_eq!(spec, &clean_spec());
    }
    let daemonset = wrap("/spec/template/spec", clean_spec());
    assert_eq!(
        pod_spec_of("apps", "DaemonSet", &daemonset)
            .unwrap()
            .0
            .as_str(),
        "spec.template.spec"
    );
    assert!(pod_spec_of("", "Service", &json!({"spec": {}})).is_none());
    assert!(pod_spec_of("apps", "Deployment", &json!({"spec": {"template": {}}})).is_none());
    assert!(pod_spec_of("", "Pod", &json!({"spec": "not an object"})).is_none());
}
