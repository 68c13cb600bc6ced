//! What a cluster without nodes cannot offer, refused at admission.
//!
//! [`check_object`] finds the pod spec of every workload kind and checks it with
//! [`check_pod_spec`]; it also refuses the DaemonSet kind and node ports on Services.
//!
//! Decisions beyond the list:
//! - `allowPrivilegeEscalation` is allowed: it only controls `no_new_privs` inside the sandbox,
//!   and with privileged containers and extra capabilities refused it gives no access to a host.
//! - Added capabilities must be in [`ALLOWED_CAPABILITIES`], the Pod Security Standards'
//!   baseline set (the container runtime's defaults without `NET_RAW`). Names are compared
//!   case-insensitively and with or without the `CAP_` prefix, as container runtimes accept both.
//!   Dropping capabilities is always allowed.
//! - `nodePort` is refused on every Service port whatever the type, LoadBalancer included, as is
//!   `healthCheckNodePort`: the cluster has no node ports to allocate, so the API server must not
//!   allocate them for LoadBalancer Services either (`allocateLoadBalancerNodePorts` is left as
//!   the user wrote or defaulted it; only ports actually present are refused).
//! - `securityContext.windowsOptions.hostProcess: true` (pod or container) counts as privileged.
//! - `hostPort: 0` means "no host port", as upstream treats it.
//! - A DaemonSet is refused as a kind; when an operator relaxes `no-daemonset`, its pod template
//!   is checked like any other.

use nodeless_api::error::{FieldError, FieldPath};
use serde_json::Value;

use crate::policy::{
    Policy, NO_DAEMONSET, NO_EXTRA_CAPABILITIES, NO_HOST_IPC, NO_HOST_NETWORK, NO_HOST_PATH,
    NO_HOST_PID, NO_HOST_PORT, NO_NODE_PORT, NO_PRIVILEGED, NO_PROBES,
};

/// The capabilities a container may add: the Pod Security Standards' baseline set.
pub const ALLOWED_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// One refused field of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The stable rule name, e.g. `no-host-path` (see [`crate::RULES`]).
    pub rule: &'static str,
    /// The field in upstream path notation, e.g. `spec.template.spec.volumes[0].hostPath`;
    /// `kind` when the kind itself is refused.
    pub field: String,
    /// What is not possible and what to do instead.
    pub message: String,
    /// `true` when the object as a whole is refused (the API answers 403 with reason
    /// `Forbidden`, as upstream admission plugins do); `false` when one field is refused (422
    /// with reason `Invalid` and a `FieldValueForbidden` cause for [`Violation::field`]).
    pub forbidden: bool,
}

impl Violation {
    fn field(rule: &'static str, field: &FieldPath, message: impl Into<String>) -> Self {
        Violation {
            rule,
            field: field.to_string(),
            message: message.into(),
            forbidden: false,
        }
    }

    /// The detail of the `Status` cause: the message followed by the rule's name.
    pub fn detail(&self) -> String {
        format!("{} (serverless rule {})", self.message, self.rule)
    }

    /// This violation as a `FieldValueForbidden` field error, for a 422 `Invalid` status.
    pub fn field_error(&self) -> FieldError {
        FieldError::forbidden(self.field.clone(), self.detail())
    }
}

/// The pod spec an object of a workload kind carries and its field path: `spec` of a Pod,
/// `template.spec` of a PodTemplate, `spec.template.spec` of a ReplicationController,
/// ReplicaSet, Deployment, StatefulSet, DaemonSet or Job, `spec.jobTemplate.spec.template.spec`
/// of a CronJob. `None` for other kinds and for objects without one. `group` is the API group
/// (`""` for the core group).
pub fn pod_spec_of<'a>(group: &str, kind: &str, obj: &'a Value) -> Option<(FieldPath, &'a Value)> {
    let (path, pointer) = match (group, kind) {
        ("", "Pod") => (FieldPath::root("spec"), "/spec"),
        ("", "PodTemplate") => (FieldPath::root("template").child("spec"), "/template/spec"),
        ("", "ReplicationController")
        | ("apps" | "extensions", "ReplicaSet" | "Deployment" | "StatefulSet" | "DaemonSet")
        | ("batch", "Job") => (
            FieldPath::root("spec").child("template").child("spec"),
            "/spec/template/spec",
        ),
        ("batch", "CronJob") => (
            FieldPath::root("spec")
                .child("jobTemplate")
                .child("spec")
                .child("template")
                .child("spec"),
            "/spec/jobTemplate/spec/template/spec",
        ),
        _ => return None,
    };
    obj.pointer(pointer)
        .filter(|spec| spec.is_object())
        .map(|spec| (path, spec))
}

/// Checks an object of any kind: the pod spec of Pods, pod templates and workloads (see
/// [`pod_spec_of`]), the DaemonSet kind, and Services. Other kinds give no violations. `group`
/// is the API group (`""` for the core group).
pub fn check_object(group: &str, kind: &str, obj: &Value, policy: &Policy) -> Vec<Violation> {
    match (group, kind) {
        ("", "Service") => return check_service(obj, policy),
        ("apps" | "extensions", "DaemonSet") if policy.is_enforced(NO_DAEMONSET) => {
            return vec![Violation {
                rule: NO_DAEMONSET,
                field: "kind".to_string(),
                message: "DaemonSets are not available: a serverless cluster has no nodes to run \
                          one pod per node on; run the daemon as a sidecar container in the pods \
                          that need it, or as a Deployment"
                    .to_string(),
                forbidden: true,
            }];
        }
        _ => {}
    }
    match pod_spec_of(group, kind, obj) {
        Some((path, spec)) => check_pod_spec(spec, &path, policy),
        None => Vec::new(),
    }
}

/// Checks a pod spec found at `path` (e.g. `spec` of a Pod, `spec.template.spec` of a
/// Deployment) against every enforced rule.
pub fn check_pod_spec(spec: &Value, path: &FieldPath, policy: &Policy) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut push = |violation: Violation| {
        if policy.is_enforced(violation.rule) {
            out.push(violation);
        }
    };

    for (field, rule, what) in [
        ("hostNetwork", NO_HOST_NETWORK, "the host's network"),
        ("hostPID", NO_HOST_PID, "the host's process namespace"),
        ("hostIPC", NO_HOST_IPC, "the host's IPC namespace"),
    ] {
        if is_true(spec.get(field)) {
            push(Violation::field(
                rule,
                &path.child(field),
                format!(
                    "{field} is not available: there is no host in a serverless cluster, so a \
                     pod cannot share {what}; remove {field} (every pod has its own sandbox)"
                ),
            ));
        }
    }

    if let Some(Value::Array(volumes)) = spec.get("volumes") {
        for (i, volume) in volumes.iter().enumerate() {
            if is_present(volume.get("hostPath")) {
                push(Violation::field(
                    NO_HOST_PATH,
                    &path.child("volumes").index(i).child("hostPath"),
                    "hostPath volumes are not available: there is no host in a serverless \
                     cluster; use an emptyDir or a PersistentVolumeClaim instead",
                ));
            }
        }
    }

    if let Some(Value::Object(pod_security)) = spec.get("securityContext") {
        if is_true(
            pod_security
                .get("windowsOptions")
                .and_then(|w| w.get("hostProcess")),
        ) {
            push(host_process_violation(
                &path
                    .child("securityContext")
                    .child("windowsOptions")
                    .child("hostProcess"),
            ));
        }
    }

    for list in ["initContainers", "containers", "ephemeralContainers"] {
        let Some(Value::Array(containers)) = spec.get(list) else {
            continue;
        };
        for (i, container) in containers.iter().enumerate() {
            check_container(container, &path.child(list).index(i), &mut push);
        }
    }
    out
}

fn check_container(container: &Value, path: &FieldPath, push: &mut impl FnMut(Violation)) {
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if is_present(container.get(probe)) {
            push(Violation::field(
                NO_PROBES,
                &path.child(probe),
                format!(
                    "{probe} is not available: health checks are not offered by a serverless \
                     cluster's container settings; remove the probe and let the application \
                     exit (the container is restarted by its restartPolicy) or report its \
                     health itself"
                ),
            ));
        }
    }

    if let Some(Value::Array(ports)) = container.get("ports") {
        for (k, port) in ports.iter().enumerate() {
            if let Some(host_port) = port.get("hostPort").filter(|p| is_nonzero(p)) {
                push(Violation::field(
                    NO_HOST_PORT,
                    &path.child("ports").index(k).child("hostPort"),
                    format!(
                        "hostPort {host_port} is not available: there is no host in a \
                         serverless cluster; remove hostPort and expose the containerPort \
                         through a Service of type ClusterIP or LoadBalancer"
                    ),
                ));
            }
        }
    }

    let Some(Value::Object(security)) = container.get("securityContext") else {
        return;
    };
    let security_path = path.child("securityContext");
    if is_true(security.get("privileged")) {
        push(Violation::field(
            NO_PRIVILEGED,
            &security_path.child("privileged"),
            "privileged containers are not available: a serverless sandbox gives no access to \
             the host's devices and kernel; remove privileged (or set it to false), and add \
             only the capabilities the application needs",
        ));
    }
    if is_true(
        security
            .get("windowsOptions")
            .and_then(|w| w.get("hostProcess")),
    ) {
        push(host_process_violation(
            &security_path.child("windowsOptions").child("hostProcess"),
        ));
    }
    if let Some(Value::Array(added)) = security.get("capabilities").and_then(|c| c.get("add")) {
        for (k, capability) in added.iter().enumerate() {
            let name = capability.as_str().unwrap_or_default();
            if !is_allowed_capability(name) {
                push(Violation::field(
                    NO_EXTRA_CAPABILITIES,
                    &security_path.child("capabilities").child("add").index(k),
                    format!(
                        "capability {capability} is not available in a serverless sandbox; \
                         remove it from capabilities.add (the capabilities that may be added \
                         are {})",
                        ALLOWED_CAPABILITIES.join(", ")
                    ),
                ));
            }
        }
    }
}

fn host_process_violation(path: &FieldPath) -> Violation {
    Violation::field(
        NO_PRIVILEGED,
        path,
        "host process containers are not available: there is no host in a serverless \
         cluster; remove hostProcess (or set it to false)",
    )
}

fn check_service(service: &Value, policy: &Policy) -> Vec<Violation> {
    if !policy.is_enforced(NO_NODE_PORT) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let Some(spec) = service.get("spec") else {
        return out;
    };
    let spec_path = FieldPath::root("spec");
    if spec.get("type").and_then(Value::as_str) == Some("NodePort") {
        out.push(Violation::field(
            NO_NODE_PORT,
            &spec_path.child("type"),
            "Services of type NodePort are not available: a serverless cluster has no nodes \
             to open ports on; use type ClusterIP inside the cluster or LoadBalancer to expose \
             the Service outside it",
        ));
    }
    if let Some(Value::Array(ports)) = spec.get("ports") {
        for (i, port) in ports.iter().enumerate() {
            if let Some(node_port) = port.get("nodePort").filter(|p| is_nonzero(p)) {
                out.push(Violation::field(
                    NO_NODE_PORT,
                    &spec_path.child("ports").index(i).child("nodePort"),
                    format!(
                        "nodePort {node_port} is not available: a serverless cluster has no \
                         nodes to open ports on; remove nodePort (clients reach the Service on \
                         its port)"
                    ),
                ));
            }
        }
    }
    if let Some(port) = spec.get("healthCheckNodePort").filter(|p| is_nonzero(p)) {
        out.push(Violation::field(
            NO_NODE_PORT,
            &spec_path.child("healthCheckNodePort"),
            format!(
                "healthCheckNodePort {port} is not available: a serverless cluster has no nodes \
                 to open ports on; remove healthCheckNodePort"
            ),
        ));
    }
    out
}

/// Whether `name` (with or without `CAP_`, any case) is in [`ALLOWED_CAPABILITIES`].
pub fn is_allowed_capability(name: &str) -> bool {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    ALLOWED_CAPABILITIES.contains(&bare)
}

fn is_true(value: Option<&Value>) -> bool {
    value.and_then(Value::as_bool) == Some(true)
}

fn is_present(value: Option<&Value>) -> bool {
    value.is_some_and(|v| !v.is_null())
}

fn is_nonzero(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty() && s != "0",
        _ => true,
    }
}

#[cfg(test)]
mod tests;
