//! Server-side printing (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`), as upstream's
//! `pkg/printers/internalversion/printers.go` (Kubernetes 1.33) and, for kinds without a printer,
//! the generic registry's default table convertor (`Name`, `Created At`).
//!
//! The apiserver always prints wide (upstream calls its printers with `Wide: true`), so
//! [`row_cells`] returns one cell per [`columns`] entry, priority-1 columns included.
//! Column names and types are upstream's; descriptions are upstream's for `Name` and `Age`
//! and short paraphrases of the API documentation elsewhere.

use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime, UtcOffset};

use crate::error::FieldPath;
use crate::selector::LabelSelector;

/// One column of a `meta.k8s.io/v1` Table (upstream's `TableColumnDefinition`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The header, e.g. `Name`, `Ready`, `Nominated Node` (kubectl upper-cases it).
    pub name: &'static str,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: &'static str,
    /// `name` for the object's name column, otherwise empty.
    pub format: &'static str,
    /// What the column shows.
    pub description: &'static str,
    /// 0 for the default view, 1 for columns kubectl shows only with `-o wide`.
    pub priority: i32,
}

impl Column {
    /// This column as a `TableColumnDefinition` JSON object.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.type_,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

/// The columns of every kind as `TableColumnDefinition` JSON objects.
pub fn column_definitions(group: &str, kind: &str) -> Value {
    Value::Array(columns(group, kind).iter().map(Column::to_json).collect())
}

const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const CONTAINERS_DESC: &str = "Names of each container in the template.";
const IMAGES_DESC: &str = "Images referenced by each container in the template.";

const fn col(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 0,
    }
}

const fn wide(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 1,
    }
}

const NAME: Column = Column {
    name: "Name",
    type_: "string",
    format: "name",
    description: NAME_DESC,
    priority: 0,
};
const AGE: Column = col("Age", "string", AGE_DESC);
const CONTAINERS: Column = wide("Containers", "string", CONTAINERS_DESC);
const IMAGES: Column = wide("Images", "string", IMAGES_DESC);

/// The kinds with a printer of their own; everything else gets the default convertor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Printer {
    Namespace,
    Pod,
    Service,
    Endpoints,
    ConfigMap,
    Secret,
    ServiceAccount,
    PersistentVolumeClaim,
    PersistentVolume,
    Event,
    EventsV1Event,
    Node,
    ReplicationController,
    ResourceQuota,
    Deployment,
    ReplicaSet,
    StatefulSet,
    ControllerRevision,
    DaemonSet,
    Job,
    CronJob,
    Lease,
    CertificateSigningRequest,
    StorageClass,
    EndpointSlice,
    PodDisruptionBudget,
    Default,
}

fn printer(group: &str, kind: &str) -> Printer {
    match (group, kind) {
        ("", "Namespace") => Printer::Namespace,
        ("", "Pod") => Printer::Pod,
        ("", "Service") => Printer::Service,
        ("", "Endpoints") => Printer::Endpoints,
        ("", "ConfigMap") => Printer::ConfigMap,
        ("", "Secret") => Printer::Secret,
        ("", "ServiceAccount") => Printer::ServiceAccount,
        ("", "PersistentVolumeClaim") => Printer::PersistentVolumeClaim,
        ("", "PersistentVolume") => Printer::PersistentVolume,
        ("", "Event") => Printer::Event,
        ("events.k8s.io", "Event") => Printer::EventsV1Event,
        ("", "Node") => Printer::Node,
        ("", "ReplicationController") => Printer::ReplicationController,
        ("", "ResourceQuota") => Printer::ResourceQuota,
        ("apps", "Deployment") => Printer::Deployment,
        ("apps", "ReplicaSet") => Printer::ReplicaSet,
        ("apps", "StatefulSet") => Printer::StatefulSet,
        ("apps", "ControllerRevision") => Printer::ControllerRevision,
        ("apps", "DaemonSet") => Printer::DaemonSet,
        ("batch", "Job") => Printer::Job,
        ("batch", "CronJob") => Printer::CronJob,
        ("coordination.k8s.io", "Lease") => Printer::Lease,
        ("certificates.k8s.io", "CertificateSigningRequest") => Printer::CertificateSigningRequest,
        ("storage.k8s.io", "StorageClass") => Printer::StorageClass,
        ("discovery.k8s.io", "EndpointSlice") => Printer::EndpointSlice,
        ("policy", "PodDisruptionBudget") => Printer::PodDisruptionBudget,
        _ => Printer::Default,
    }
}

/// The table columns for a kind, in upstream's order. The first column is `Name`
/// (format `name`) for every kind except core and events.k8s.io Events, whose `Name` is the
/// last (wide) column, as upstream.
pub fn columns(group: &str, kind: &str) -> Vec<Column> {
    match printer(group, kind) {
        Printer::Namespace => vec![NAME, col("Status", "string", "The status of the namespace"), AGE],
        Printer::Pod => vec![
            NAME,
            col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
            col("Status", "string", "The aggregate status of the containers in this pod."),
            col(
                "Restarts",
                "string",
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            AGE,
            wide("IP", "string", "IP address allocated to the pod. Routable at least within the cluster."),
            wide("Node", "string", "NodeName indicates in which node this pod is scheduled."),
            wide("Nominated Node", "string", "nominatedNodeName is set when this pod preempts other pods on the node."),
            wide("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness."),
        ],
        Printer::Service => vec![
            NAME,
            col("Type", "string", "type determines how the Service is exposed."),
            col("Cluster-IP", "string", "clusterIP is the IP address of the service."),
            col("External-IP", "string", "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
            col("Port(s)", "string", "The list of ports that are exposed by this service."),
            AGE,
            wide("Selector", "string", "Route service traffic to pods with label keys and values matching this selector."),
        ],
        Printer::Endpoints => vec![
            NAME,
            col("Endpoints", "string", "The set of all endpoints is the union of all subsets."),
            AGE,
        ],
        Printer::ConfigMap => vec![NAME, col("Data", "string", "Data contains the configuration data."), AGE],
        Printer::Secret => vec![
            NAME,
            col("Type", "string", "Used to facilitate programmatic handling of secret data."),
            col("Data", "string", "Data contains the secret data."),
            AGE,
        ],
        Printer::ServiceAccount => vec![
            NAME,
            col("Secrets", "string", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."),
            AGE,
        ],
        Printer::PersistentVolumeClaim => vec![
            NAME,
            col("Status", "string", "phase represents the current phase of PersistentVolumeClaim."),
            col("Volume", "string", "volumeName is the binding reference to the PersistentVolume backing this claim."),
            col("Capacity", "string", "capacity represents the actual resources of the underlying volume."),
            col("Access Modes", "string", "accessModes contains the actual access modes the volume backing the PVC has."),
            col("StorageClass", "string", "StorageClass of the pvc"),
            col("VolumeAttributesClass", "string", "VolumeAttributesClass of the pvc"),
            AGE,
            wide("VolumeMode", "string", "volumeMode defines what type of volume is required by the claim."),
        ],
        Printer::PersistentVolume => vec![
            NAME,
            col("Capacity", "string", "capacity is the description of the persistent volume's resources and capacity."),
            col("Access Modes", "string", "accessModes contains all ways the volume can be mounted."),
            col("Reclaim Policy", "string", "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim."),
            col("Status", "string", "phase indicates if a volume is available, bound to a claim, or released by a claim."),
            col("Claim", "string", "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim."),
            col("StorageClass", "string", "StorageClass of the pv"),
            col("VolumeAttributesClass", "string", "VolumeAttributesClass of the pv"),
            col("Reason", "string", "reason is a brief CamelCase string that describes any failure."),
            AGE,
            wide("VolumeMode", "string", "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state."),
        ],
        Printer::Event | Printer::EventsV1Event => vec![
            col("Last Seen", "string", "The time at which the most recent occurrence of this event was recorded."),
            col("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future"),
            col("Reason", "string", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
            col("Object", "string", "The object that this event is about."),
            wide("Subobject", "string", "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement."),
            wide("Source", "string", "The component reporting this event."),
            col("Message", "string", "A human-readable description of the status of this operation."),
            wide("First Seen", "string", "The time at which the event was first recorded."),
            wide("Count", "string", "The number of times this event has occurred."),
            Column { priority: 1, ..NAME },
        ],
        Printer::Node => vec![
            NAME,
            col("Status", "string", "The status of the node"),
            col("Roles", "string", "The roles of the node"),
            AGE,
            col("Version", "string", "Kubelet Version reported by the node."),
            wide("Internal-IP", "string", "List of addresses reachable to the node."),
            wide("External-IP", "string", "List of addresses reachable to the node."),
            wide("OS-Image", "string", "OS Image reported by the node from /etc/os-release."),
            wide("Kernel-Version", "string", "Kernel Version reported by the node from 'uname -r'."),
            wide("Container-Runtime", "string", "ContainerRuntime Version reported by the node through runtime remote API."),
        ],
        Printer::ReplicationController => vec![
            NAME,
            col("Desired", "integer", "Replicas is the number of desired replicas."),
            col("Current", "integer", "Replicas is the most recently observed number of replicas."),
            col("Ready", "integer", "The number of ready replicas for this replication controller."),
            AGE,
            CONTAINERS,
            IMAGES,
            wide("Selector", "string", "Selector is a label query over pods that should match the Replicas count."),
        ],
        Printer::ResourceQuota => vec![
            NAME,
            AGE,
            col("Request", "string", "Request represents a minimum amount of cpu/memory that a container may consume."),
            col("Limit", "string", "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."),
        ],
        Printer::Deployment => vec![
            NAME,
            col("Ready", "string", "Number of the pod with ready state"),
            col("Up-to-date", "string", "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
            col("Available", "string", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
            AGE,
            CONTAINERS,
            IMAGES,
            wide("Selector", "string", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment."),
        ],
        Printer::ReplicaSet => vec![
            NAME,
            col("Desired", "integer", "Replicas is the number of desired replicas."),
            col("Current", "integer", "Replicas is the most recently observed number of replicas."),
            col("Ready", "integer", "The number of ready replicas for this replica set."),
            AGE,
            CONTAINERS,
            IMAGES,
            wide("Selector", "string", "Selector is a label query over pods that should match the replica count."),
        ],
        Printer::StatefulSet => vec![NAME, col("Ready", "string", "Number of the pod with ready state"), AGE, CONTAINERS, IMAGES],
        Printer::ControllerRevision => vec![
            NAME,
            col("Controller", "string", "Controller of the object"),
            col("Revision", "string", "Revision indicates the revision of the state represented by Data."),
            AGE,
        ],
        Printer::DaemonSet => vec![
            NAME,
            col("Desired", "integer", "The total number of nodes that should be running the daemon pod."),
            col("Current", "integer", "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod."),
            col("Ready", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready."),
            col("Up-to-date", "integer", "The total number of nodes that are running updated daemon pod"),
            col("Available", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available."),
            col("Node Selector", "string", "NodeSelector is a selector which must be true for the pod to fit on a node."),
            AGE,
            CONTAINERS,
            IMAGES,
            wide("Selector", "string", "A label query over pods that are managed by the daemon set."),
        ],
        Printer::Job => vec![
            NAME,
            col("Status", "string", "Status of the job."),
            col("Completions", "string", "The number of pods which reached phase Succeeded."),
            col("Duration", "string", "Time required to complete the job."),
            AGE,
            CONTAINERS,
            IMAGES,
            wide("Selector", "string", "A label query over pods that should match the pod count."),
        ],
        Printer::CronJob => vec![
            NAME,
            col("Schedule", "string", "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."),
            col("Timezone", "string", "The time zone name for the given schedule."),
            col("Suspend", "boolean", "This flag tells the controller to suspend subsequent executions."),
            col("Active", "integer", "A list of pointers to currently running jobs."),
            col("Last Schedule", "string", "Information when was the last time the job was successfully scheduled."),
            AGE,
            CONTAINERS,
            IMAGES,
            wide("Selector", "string", "A label query over pods that should match the pod count."),
        ],
        Printer::Lease => vec![
            NAME,
            col("Holder", "string", "holderIdentity contains the identity of the holder of a current lease."),
            AGE,
        ],
        Printer::CertificateSigningRequest => vec![
            NAME,
            AGE,
            col("SignerName", "string", "signerName indicates the requested signer."),
            col("Requestor", "string", "username contains the name of the user that created the CertificateSigningRequest."),
            col("RequestedDuration", "string", "expirationSeconds is the requested duration of validity of the issued certificate."),
            col("Condition", "string", "The decision on the request (Approved, Denied, Pending), then Failed and Issued."),
        ],
        Printer::StorageClass => vec![
            NAME,
            col("Provisioner", "string", "provisioner indicates the type of the provisioner."),
            col("ReclaimPolicy", "string", "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class."),
            col("VolumeBindingMode", "string", "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound."),
            col("AllowVolumeExpansion", "string", "allowVolumeExpansion shows whether the storage class allow volume expand."),
            AGE,
        ],
        Printer::EndpointSlice => vec![
            NAME,
            col("AddressType", "string", "addressType specifies the type of address carried by this EndpointSlice."),
            col("Ports", "string", "ports specifies the list of network ports exposed by each endpoint in this slice."),
            col("Endpoints", "string", "endpoints is a list of unique endpoints in this slice."),
            AGE,
        ],
        Printer::PodDisruptionBudget => vec![
            NAME,
            col("Min Available", "string", "The minimum number of pods that must be available."),
            col("Max Unavailable", "string", "The maximum number of pods that may be unavailable."),
            col("Allowed Disruptions", "integer", "Calculated number of pods that may be disrupted at this time."),
            AGE,
        ],
        Printer::Default => vec![NAME, col("Created At", "date", AGE_DESC)],
    }
}

/// The cells of one object's row, one per [`columns`] entry, as upstream's printer computes them
/// at time `now` (ages, durations).
pub fn row_cells(group: &str, kind: &str, obj: &Value, now: OffsetDateTime) -> Vec<Value> {
    let o = Obj(obj);
    let p = Printers { o, now };
    match printer(group, kind) {
        Printer::Namespace => vec![o.name(), o.str(&["status", "phase"]).into(), p.age()],
        Printer::Pod => p.pod(),
        Printer::Service => p.service(),
        Printer::Endpoints => vec![o.name(), format_endpoints(o).into(), p.age()],
        Printer::ConfigMap => {
            let count = o.map_len(&["data"]) + o.map_len(&["binaryData"]);
            vec![o.name(), count.into(), p.age()]
        }
        Printer::Secret => vec![
            o.name(),
            o.str(&["type"]).into(),
            o.map_len(&["data"]).into(),
            p.age(),
        ],
        Printer::ServiceAccount => vec![o.name(), o.arr(&["secrets"]).len().into(), p.age()],
        Printer::PersistentVolumeClaim => p.persistent_volume_claim(),
        Printer::PersistentVolume => p.persistent_volume(),
        Printer::Event => p.event(&EventShape::CORE),
        Printer::EventsV1Event => p.event(&EventShape::EVENTS_V1),
        Printer::Node => p.node(),
        Printer::ReplicationController => {
            let (names, images) = container_cells(o.at(&["spec", "template", "spec"]));
            vec![
                o.name(),
                o.int_or(&["spec", "replicas"], 1).into(),
                o.int(&["status", "replicas"]).into(),
                o.int(&["status", "readyReplicas"]).into(),
                p.age(),
                names.into(),
                images.into(),
                format_labels(o.at(&["spec", "selector"])).into(),
            ]
        }
        Printer::ResourceQuota => p.resource_quota(),
        Printer::Deployment => {
            let (names, images) = container_cells(o.at(&["spec", "template", "spec"]));
            let selector = match LabelSelector::from_json(
                o.at(&["spec", "selector"]).unwrap_or(&Value::Null),
                &FieldPath::default(),
            ) {
                Ok(s) => s.to_string(),
                Err(_) => "<invalid>".to_string(),
            };
            vec![
                o.name(),
                format!(
                    "{}/{}",
                    o.int(&["status", "readyReplicas"]),
                    o.int_or(&["spec", "replicas"], 1)
                )
                .into(),
                o.int(&["status", "updatedReplicas"]).into(),
                o.int(&["status", "availableReplicas"]).into(),
                p.age(),
                names.into(),
                images.into(),
                selector.into(),
            ]
        }
        Printer::ReplicaSet => {
            let (names, images) = container_cells(o.at(&["spec", "template", "spec"]));
            vec![
                o.name(),
                o.int_or(&["spec", "replicas"], 1).into(),
                o.int(&["status", "replicas"]).into(),
                o.int(&["status", "readyReplicas"]).into(),
                p.age(),
                names.into(),
                images.into(),
                format_label_selector(o.at(&["spec", "selector"])).into(),
            ]
        }
        Printer::StatefulSet => {
            let (names, images) = container_cells(o.at(&["spec", "template", "spec"]));
            let ready = format!(
                "{}/{}",
                o.int(&["status", "readyReplicas"]),
                o.int_or(&["spec", "replicas"], 1)
            );
            vec![o.name(), ready.into(), p.age(), names.into(), images.into()]
        }
        Printer::ControllerRevision => {
            vec![
                o.name(),
                controller_of(o).into(),
                o.int(&["revision"]).into(),
                p.age(),
            ]
        }
        Printer::DaemonSet => {
            let (names, images) = container_cells(o.at(&["spec", "template", "spec"]));
            vec![
                o.name(),
                o.int(&["status", "desiredNumberScheduled"]).into(),
                o.int(&["status", "currentNumberScheduled"]).into(),
                o.int(&["status", "numberReady"]).into(),
                o.int(&["status", "updatedNumberScheduled"]).into(),
                o.int(&["status", "numberAvailable"]).into(),
                format_labels(o.at(&["spec", "template", "spec", "nodeSelector"])).into(),
                p.age(),
                names.into(),
                images.into(),
                format_label_selector(o.at(&["spec", "selector"])).into(),
            ]
        }
        Printer::Job => p.job(),
        Printer::CronJob => p.cron_job(),
        Printer::Lease => vec![o.name(), o.str(&["spec", "holderIdentity"]).into(), p.age()],
        Printer::CertificateSigningRequest => {
            let duration = match o.at(&["spec", "expirationSeconds"]).and_then(Value::as_i64) {
                Some(seconds) => human_duration(Duration::seconds(seconds)),
                None => "<none>".to_string(),
            };
            vec![
                o.name(),
                p.age(),
                o.str_or(&["spec", "signerName"], "<none>").into(),
                o.str(&["spec", "username"]).into(),
                duration.into(),
                csr_condition(o).into(),
            ]
        }
        Printer::StorageClass => {
            let mut name = o.str(&["metadata", "name"]);
            if is_default_storage_class(o) {
                name.push_str(" (default)");
            }
            let reclaim = o.str_or(&["reclaimPolicy"], "Delete");
            let binding = o.str_or(&["volumeBindingMode"], "Immediate");
            let expansion = o
                .at(&["allowVolumeExpansion"])
                .and_then(Value::as_bool)
                .unwrap_or(false);
            vec![
                name.into(),
                o.str(&["provisioner"]).into(),
                reclaim.into(),
                binding.into(),
                expansion.into(),
                p.age(),
            ]
        }
        Printer::EndpointSlice => vec![
            o.name(),
            o.str(&["addressType"]).into(),
            format_discovery_ports(o).into(),
            format_discovery_endpoints(o).into(),
            p.age(),
        ],
        Printer::PodDisruptionBudget => vec![
            o.name(),
            int_or_string(o.at(&["spec", "minAvailable"])).into(),
            int_or_string(o.at(&["spec", "maxUnavailable"])).into(),
            o.int(&["status", "disruptionsAllowed"]).into(),
            p.age(),
        ],
        Printer::Default => {
            let created = o
                .time(&["metadata", "creationTimestamp"])
                .map(format_rfc3339)
                .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string());
            vec![o.name(), created.into()]
        }
    }
}

/// The `conditions` of a row, as upstream marks finished pods (`Completed` row condition,
/// which kubectl uses to hide them with `--show-all=false`); empty for everything else.
pub fn row_conditions(group: &str, kind: &str, obj: &Value) -> Vec<Value> {
    if printer(group, kind) != Printer::Pod {
        return Vec::new();
    }
    match Obj(obj).str(&["status", "phase"]).as_str() {
        "Succeeded" => vec![
            json!({"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."}),
        ],
        "Failed" => vec![
            json!({"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}),
        ],
        _ => Vec::new(),
    }
}

/// Upstream's `extractCSRStatus`: the decision (a denial wins), then `,Failed` and `,Issued`.
fn csr_condition(o: Obj<'_>) -> String {
    let has = |t: &str| {
        o.arr(&["status", "conditions"])
            .iter()
            .any(|c| Obj(c).str(&["type"]) == t)
    };
    let mut status = if has("Denied") {
        "Denied"
    } else if has("Approved") {
        "Approved"
    } else {
        "Pending"
    }
    .to_string();
    if has("Failed") {
        status.push_str(",Failed");
    }
    if !o.str(&["status", "certificate"]).is_empty() {
        status.push_str(",Issued");
    }
    status
}

/// A duration the way kubectl shows ages, as upstream's `duration.HumanDuration`:
/// `45s`, `3m2s`, `15m`, `4h5m`, `30h`, `2d3h`, `40d`, `2y10d`, `9y`; `<invalid>` below -1s.
pub fn human_duration(d: Duration) -> String {
    let seconds = d.whole_seconds();
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = d.whole_minutes();
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = d.whole_hours();
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

// ---------------------------------------------------------------------------------------------
// Reading the JSON object.

/// Read-only helpers over an object, treating missing or mistyped fields as Go zero values.
#[derive(Clone, Copy)]
struct Obj<'a>(&'a Value);

impl<'a> Obj<'a> {
    fn at(&self, path: &[&str]) -> Option<&'a Value> {
        path.iter()
            .try_fold(self.0, |v, key| v.get(key))
            .filter(|v| !v.is_null())
    }
    fn str(&self, path: &[&str]) -> String {
        str_of(self.at(path))
    }
    fn str_or(&self, path: &[&str], default: &str) -> String {
        let s = self.str(path);
        if s.is_empty() {
            default.to_string()
        } else {
            s
        }
    }
    fn int(&self, path: &[&str]) -> i64 {
        self.int_or(path, 0)
    }
    fn int_or(&self, path: &[&str], default: i64) -> i64 {
        self.at(path).and_then(Value::as_i64).unwrap_or(default)
    }
    fn arr(&self, path: &[&str]) -> &'a [Value] {
        self.at(path)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
    fn map_len(&self, path: &[&str]) -> usize {
        self.at(path).and_then(Value::as_object).map_or(0, Map::len)
    }
    fn time(&self, path: &[&str]) -> Option<OffsetDateTime> {
        parse_time(self.at(path))
    }
    fn name(&self) -> Value {
        self.str(&["metadata", "name"]).into()
    }
    fn has(&self, path: &[&str]) -> bool {
        self.at(path).is_some()
    }
}

fn str_of(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn parse_time(v: Option<&Value>) -> Option<OffsetDateTime> {
    v.and_then(Value::as_str)
        .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
}

/// `2006-01-02T15:04:05Z`, as Go's `Time.UTC().Format(time.RFC3339)`.
fn format_rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A quantity as printed (`resource.Quantity.String()`): the stored canonical string, `0` when unset.
fn quantity(v: Option<&Value>) -> String {
    let s = str_of(v);
    if s.is_empty() {
        "0".to_string()
    } else {
        s
    }
}

/// Upstream's `labels.FormatLabels`: `a=1,b=2` sorted by key, `<none>` when empty.
fn format_labels(map: Option<&Value>) -> String {
    let Some(map) = map.and_then(Value::as_object).filter(|m| !m.is_empty()) else {
        return "<none>".to_string();
    };
    let mut pairs: Vec<(&String, String)> = map.iter().map(|(k, v)| (k, str_of(Some(v)))).collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Upstream's `metav1.FormatLabelSelector`: the selector string, `<none>` when it selects
/// everything or nothing, `<error>` when it is invalid.
fn format_label_selector(selector: Option<&Value>) -> String {
    match LabelSelector::from_json(selector.unwrap_or(&Value::Null), &FieldPath::default()) {
        Ok(s) => {
            let text = s.to_string();
            if text.is_empty() {
                "<none>".to_string()
            } else {
                text
            }
        }
        Err(_) => "<error>".to_string(),
    }
}

/// Upstream's `layoutContainerCells`: container names and images, comma-separated.
fn container_cells(pod_spec: Option<&Value>) -> (String, String) {
    let containers = pod_spec.map(|s| Obj(s).arr(&["containers"])).unwrap_or(&[]);
    let names: Vec<String> = containers.iter().map(|c| Obj(c).str(&["name"])).collect();
    let images: Vec<String> = containers.iter().map(|c| Obj(c).str(&["image"])).collect();
    (names.join(","), images.join(","))
}

/// An IntOrString as `intstr.String()`, `N/A` when unset.
fn int_or_string(v: Option<&Value>) -> String {
    match v {
        None => "N/A".to_string(),
        Some(v) => str_of(Some(v)),
    }
}

/// `a,b + 2 more...` for lists clipped at `max` entries, `<unset>` for an empty list.
fn list_with_more(list: &[String], count: usize, max: usize) -> String {
    let joined = list.join(",");
    if count > max {
        return format!("{joined} + {} more...", count - max);
    }
    if joined.is_empty() {
        "<unset>".to_string()
    } else {
        joined
    }
}

/// Upstream's `formatEndpoints` with all ports: up to three `ip:port` entries.
fn format_endpoints(o: Obj<'_>) -> String {
    let subsets = o.arr(&["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    const MAX: usize = 3;
    let mut list = Vec::new();
    let mut count = 0;
    for subset in subsets {
        let subset = Obj(subset);
        let addresses = subset.arr(&["addresses"]);
        let ports = subset.arr(&["ports"]);
        if ports.is_empty() {
            for address in addresses {
                if list.len() < MAX {
                    list.push(Obj(address).str(&["ip"]));
                }
                count += 1;
            }
        } else {
            for port in ports {
                let port = Obj(port).int(&["port"]);
                for address in addresses {
                    if list.len() < MAX {
                        list.push(join_host_port(&Obj(address).str(&["ip"]), port));
                    }
                    count += 1;
                }
            }
        }
    }
    let joined = list.join(",");
    if count > MAX {
        format!("{joined} + {} more...", count - MAX)
    } else {
        joined
    }
}

/// Go's `net.JoinHostPort`: brackets around IPv6 addresses.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn format_discovery_ports(o: Obj<'_>) -> String {
    const MAX: usize = 3;
    let ports = o.arr(&["ports"]);
    let list: Vec<String> = ports
        .iter()
        .take(MAX)
        .map(|p| {
            let p = Obj(p);
            if let Some(n) = p.at(&["port"]).and_then(Value::as_i64) {
                n.to_string()
            } else if p.has(&["name"]) {
                p.str(&["name"])
            } else {
                "*".to_string()
            }
        })
        .collect();
    list_with_more(&list, ports.len(), MAX)
}

fn format_discovery_endpoints(o: Obj<'_>) -> String {
    const MAX: usize = 3;
    let addresses: Vec<String> = o
        .arr(&["endpoints"])
        .iter()
        .flat_map(|e| Obj(e).arr(&["addresses"]).iter().map(|a| str_of(Some(a))))
        .collect();
    let list: Vec<String> = addresses.iter().take(MAX).cloned().collect();
    list_with_more(&list, addresses.len(), MAX)
}

/// Upstream's `GetAccessModesAsString`: `RWO,ROX,RWX,RWOP` in that order, without duplicates.
fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(mode, _)| has(mode))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// The storage class of a PV or PVC: the beta annotation wins over `spec.storageClassName`.
fn storage_class(o: Obj<'_>) -> String {
    let annotation = o.str(&[
        "metadata",
        "annotations",
        "volume.beta.kubernetes.io/storage-class",
    ]);
    if o.has(&[
        "metadata",
        "annotations",
        "volume.beta.kubernetes.io/storage-class",
    ]) {
        return annotation;
    }
    o.str(&["spec", "storageClassName"])
}

fn is_default_storage_class(o: Obj<'_>) -> bool {
    [
        "storageclass.kubernetes.io/is-default-class",
        "storageclass.beta.kubernetes.io/is-default-class",
    ]
    .iter()
    .any(|a| o.str(&["metadata", "annotations", a]) == "true")
}

/// `kind.group/name` of the controlling owner (`statefulset.apps/web`), `<none>` without one.
fn controller_of(o: Obj<'_>) -> String {
    let Some(owner) = o
        .arr(&["metadata", "ownerReferences"])
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
    else {
        return "<none>".to_string();
    };
    let owner = Obj(owner);
    let api_version = owner.str(&["apiVersion"]);
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    let kind = owner.str(&["kind"]);
    let name = owner.str(&["name"]);
    if kind.is_empty() && group.is_empty() {
        return name;
    }
    let group_kind = if group.is_empty() {
        kind
    } else {
        format!("{kind}.{group}")
    };
    format!("{}/{name}", group_kind.to_lowercase())
}

fn condition_true(conditions: &[Value], type_: &str) -> bool {
    conditions.iter().any(|c| {
        let c = Obj(c);
        c.str(&["type"]) == type_ && c.str(&["status"]) == "True"
    })
}

/// Where the fields of an Event live in its API version.
struct EventShape {
    involved: &'static str,
    message: &'static str,
    source: &'static str,
    first: &'static str,
    last: &'static str,
    count: &'static str,
}

impl EventShape {
    const CORE: EventShape = EventShape {
        involved: "involvedObject",
        message: "message",
        source: "source",
        first: "firstTimestamp",
        last: "lastTimestamp",
        count: "count",
    };
    const EVENTS_V1: EventShape = EventShape {
        involved: "regarding",
        message: "note",
        source: "deprecatedSource",
        first: "deprecatedFirstTimestamp",
        last: "deprecatedLastTimestamp",
        count: "deprecatedCount",
    };
}

fn first_non_empty(a: String, b: String) -> String {
    if a.is_empty() {
        b
    } else {
        a
    }
}

// ---------------------------------------------------------------------------------------------
// The printers that need more than a line.

struct Printers<'a> {
    o: Obj<'a>,
    now: OffsetDateTime,
}

impl Printers<'_> {
    /// Upstream's `translateTimestampSince`.
    fn since(&self, t: Option<OffsetDateTime>) -> String {
        match t {
            Some(t) => human_duration(self.now - t),
            None => "<unknown>".to_string(),
        }
    }

    fn age(&self) -> Value {
        self.since(self.o.time(&["metadata", "creationTimestamp"]))
            .into()
    }

    fn pod(&self) -> Vec<Value> {
        let o = self.o;
        let spec_containers = o.arr(&["spec", "containers"]);
        let init_specs = o.arr(&["spec", "initContainers"]);
        let is_sidecar = |name: &str| {
            init_specs.iter().any(|c| {
                let c = Obj(c);
                c.str(&["name"]) == name && c.str(&["restartPolicy"]) == "Always"
            })
        };
        let total = spec_containers.len()
            + init_specs
                .iter()
                .filter(|c| Obj(c).str(&["restartPolicy"]) == "Always")
                .count();
        let mut ready = 0usize;
        let mut restarts = 0i64;
        let mut sidecar_restarts = 0i64;
        let mut last_restart: Option<OffsetDateTime> = None;
        let mut last_sidecar_restart: Option<OffsetDateTime> = None;
        let later = |a: Option<OffsetDateTime>, b: Option<OffsetDateTime>| match (a, b) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, y) => x.or(y),
        };

        let phase = o.str(&["status", "phase"]);
        let mut reason = first_non_empty(o.str(&["status", "reason"]), phase.clone());
        let conditions = o.arr(&["status", "conditions"]);
        if conditions.iter().any(|c| {
            Obj(c).str(&["type"]) == "PodScheduled" && Obj(c).str(&["reason"]) == "SchedulingGated"
        }) {
            reason = "SchedulingGated".to_string();
        }

        let mut initializing = false;
        for (i, status) in o
            .arr(&["status", "initContainerStatuses"])
            .iter()
            .enumerate()
        {
            let c = Obj(status);
            restarts += c.int(&["restartCount"]);
            let finished = c.time(&["lastState", "terminated", "finishedAt"]);
            last_restart = later(last_restart, finished);
            let sidecar = is_sidecar(&c.str(&["name"]));
            if sidecar {
                sidecar_restarts += c.int(&["restartCount"]);
                last_sidecar_restart = later(last_sidecar_restart, finished);
            }
            let terminated = c.has(&["state", "terminated"]);
            let waiting_reason = c.str(&["state", "waiting", "reason"]);
            if terminated && c.int(&["state", "terminated", "exitCode"]) == 0 {
                continue;
            }
            if sidecar && c.at(&["started"]).and_then(Value::as_bool) == Some(true) {
                if c.at(&["ready"]).and_then(Value::as_bool) == Some(true) {
                    ready += 1;
                }
                continue;
            }
            if terminated {
                let r = c.str(&["state", "terminated", "reason"]);
                reason = if !r.is_empty() {
                    format!("Init:{r}")
                } else if c.int(&["state", "terminated", "signal"]) != 0 {
                    format!("Init:Signal:{}", c.int(&["state", "terminated", "signal"]))
                } else {
                    format!(
                        "Init:ExitCode:{}",
                        c.int(&["state", "terminated", "exitCode"])
                    )
                };
            } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
                reason = format!("Init:{waiting_reason}");
            } else {
                reason = format!("Init:{i}/{}", init_specs.len());
            }
            initializing = true;
            break;
        }

        if !initializing || condition_true(conditions, "Initialized") {
            restarts = sidecar_restarts;
            last_restart = last_sidecar_restart;
            let mut has_running = false;
            for status in o.arr(&["status", "containerStatuses"]).iter().rev() {
                let c = Obj(status);
                restarts += c.int(&["restartCount"]);
                last_restart = later(
                    last_restart,
                    c.time(&["lastState", "terminated", "finishedAt"]),
                );
                let waiting_reason = c.str(&["state", "waiting", "reason"]);
                let terminated_reason = c.str(&["state", "terminated", "reason"]);
                if !waiting_reason.is_empty() {
                    reason = waiting_reason;
                } else if !terminated_reason.is_empty() {
                    reason = terminated_reason;
                } else if c.has(&["state", "terminated"]) {
                    let signal = c.int(&["state", "terminated", "signal"]);
                    reason = if signal != 0 {
                        format!("Signal:{signal}")
                    } else {
                        format!("ExitCode:{}", c.int(&["state", "terminated", "exitCode"]))
                    };
                } else if c.at(&["ready"]).and_then(Value::as_bool) == Some(true)
                    && c.has(&["state", "running"])
                {
                    has_running = true;
                    ready += 1;
                }
            }
            if reason == "Completed" && has_running {
                reason = if condition_true(conditions, "Ready") {
                    "Running".to_string()
                } else {
                    "NotReady".to_string()
                };
            }
        }

        if o.has(&["metadata", "deletionTimestamp"]) {
            if o.str(&["status", "reason"]) == "NodeLost" {
                reason = "Unknown".to_string();
            } else if phase != "Succeeded" && phase != "Failed" {
                reason = "Terminating".to_string();
            }
        }

        let restarts_cell = match last_restart {
            Some(t) if restarts != 0 => format!("{restarts} ({} ago)", self.since(Some(t))),
            _ => restarts.to_string(),
        };

        let pod_ip = o
            .arr(&["status", "podIPs"])
            .first()
            .map(|ip| Obj(ip).str(&["ip"]))
            .unwrap_or_else(|| o.str(&["status", "podIP"]));
        let none_if_empty = |s: String| {
            if s.is_empty() {
                "<none>".to_string()
            } else {
                s
            }
        };
        let gates = o.arr(&["spec", "readinessGates"]);
        let readiness_gates = if gates.is_empty() {
            "<none>".to_string()
        } else {
            let true_count = gates
                .iter()
                .filter(|g| {
                    let wanted = Obj(g).str(&["conditionType"]);
                    conditions
                        .iter()
                        .find(|c| Obj(c).str(&["type"]) == wanted)
                        .is_some_and(|c| Obj(c).str(&["status"]) == "True")
                })
                .count();
            format!("{true_count}/{}", gates.len())
        };
        vec![
            o.name(),
            format!("{ready}/{total}").into(),
            reason.into(),
            restarts_cell.into(),
            self.age(),
            none_if_empty(pod_ip).into(),
            none_if_empty(o.str(&["spec", "nodeName"])).into(),
            none_if_empty(o.str(&["status", "nominatedNodeName"])).into(),
            readiness_gates.into(),
        ]
    }

    fn service(&self) -> Vec<Value> {
        let o = self.o;
        let svc_type = o.str(&["spec", "type"]);
        let cluster_ip = o
            .arr(&["spec", "clusterIPs"])
            .first()
            .map(|v| str_of(Some(v)))
            .unwrap_or_else(|| o.str(&["spec", "clusterIP"]));
        let cluster_ip = if cluster_ip.is_empty() {
            "<none>".to_string()
        } else {
            cluster_ip
        };
        let external_ips: Vec<String> = o
            .arr(&["spec", "externalIPs"])
            .iter()
            .map(|v| str_of(Some(v)))
            .collect();
        let external = match svc_type.as_str() {
            "ClusterIP" | "NodePort" => {
                if external_ips.is_empty() {
                    "<none>".to_string()
                } else {
                    external_ips.join(",")
                }
            }
            "LoadBalancer" => {
                let mut lb: Vec<String> = o
                    .arr(&["status", "loadBalancer", "ingress"])
                    .iter()
                    .map(|i| first_non_empty(Obj(i).str(&["ip"]), Obj(i).str(&["hostname"])))
                    .filter(|s| !s.is_empty())
                    .collect();
                lb.sort();
                lb.dedup();
                let mut all = lb;
                all.extend(external_ips);
                if all.is_empty() {
                    "<pending>".to_string()
                } else {
                    all.join(",")
                }
            }
            "ExternalName" => o.str(&["spec", "externalName"]),
            _ => "<unknown>".to_string(),
        };
        let ports: Vec<String> = o
            .arr(&["spec", "ports"])
            .iter()
            .map(|p| {
                let p = Obj(p);
                let protocol = p.str_or(&["protocol"], "TCP");
                match p.int(&["nodePort"]) {
                    n if n > 0 => format!("{}:{n}/{protocol}", p.int(&["port"])),
                    _ => format!("{}/{protocol}", p.int(&["port"])),
                }
            })
            .collect();
        let ports = if ports.is_empty() {
            "<none>".to_string()
        } else {
            ports.join(",")
        };
        vec![
            o.name(),
            svc_type.into(),
            cluster_ip.into(),
            external.into(),
            ports.into(),
            self.age(),
            format_labels(o.at(&["spec", "selector"])).into(),
        ]
    }

    fn persistent_volume_claim(&self) -> Vec<Value> {
        let o = self.o;
        let phase = if o.has(&["metadata", "deletionTimestamp"]) {
            "Terminating".to_string()
        } else {
            o.str(&["status", "phase"])
        };
        let volume = o.str(&["spec", "volumeName"]);
        let (capacity, modes) = if volume.is_empty() {
            (String::new(), String::new())
        } else {
            (
                quantity(o.at(&["status", "capacity", "storage"])),
                access_modes(o.arr(&["status", "accessModes"])),
            )
        };
        vec![
            o.name(),
            phase.into(),
            volume.into(),
            capacity.into(),
            modes.into(),
            storage_class(o).into(),
            o.str_or(&["spec", "volumeAttributesClassName"], "<unset>")
                .into(),
            self.age(),
            o.str_or(&["spec", "volumeMode"], "<unset>").into(),
        ]
    }

    fn persistent_volume(&self) -> Vec<Value> {
        let o = self.o;
        let claim = if o.has(&["spec", "claimRef"]) {
            format!(
                "{}/{}",
                o.str(&["spec", "claimRef", "namespace"]),
                o.str(&["spec", "claimRef", "name"])
            )
        } else {
            String::new()
        };
        let phase = if o.has(&["metadata", "deletionTimestamp"]) {
            "Terminating".to_string()
        } else {
            o.str(&["status", "phase"])
        };
        vec![
            o.name(),
            quantity(o.at(&["spec", "capacity", "storage"])).into(),
            access_modes(o.arr(&["spec", "accessModes"])).into(),
            o.str(&["spec", "persistentVolumeReclaimPolicy"]).into(),
            phase.into(),
            claim.into(),
            storage_class(o).into(),
            o.str_or(&["spec", "volumeAttributesClassName"], "<unset>")
                .into(),
            o.str(&["status", "reason"]).into(),
            self.age(),
            o.str_or(&["spec", "volumeMode"], "<unset>").into(),
        ]
    }

    fn event(&self, shape: &EventShape) -> Vec<Value> {
        let o = self.o;
        let first_time = o.time(&[shape.first]);
        let first_seen = match first_time {
            Some(t) => self.since(Some(t)),
            None => self.since(o.time(&["eventTime"])),
        };
        let mut last_seen = match o.time(&[shape.last]) {
            Some(t) => self.since(Some(t)),
            None => first_seen.clone(),
        };
        let mut count = o.int(&[shape.count]);
        if o.has(&["series"]) {
            last_seen = self.since(o.time(&["series", "lastObservedTime"]));
            count = o.int(&["series", "count"]);
        } else if count == 0 {
            count = 1;
        }
        let kind = o.str(&[shape.involved, "kind"]).to_lowercase();
        let involved_name = o.str(&[shape.involved, "name"]);
        let target = if involved_name.is_empty() {
            kind
        } else {
            format!("{kind}/{involved_name}")
        };
        let component = first_non_empty(
            o.str(&[shape.source, "component"]),
            o.str(&["reportingController"]),
        );
        let instance = first_non_empty(
            o.str(&[shape.source, "host"]),
            o.str(&["reportingInstance"]),
        );
        let source = if instance.is_empty() {
            component
        } else {
            format!("{component}, {instance}")
        };
        vec![
            last_seen.into(),
            o.str(&["type"]).into(),
            o.str(&["reason"]).into(),
            target.into(),
            o.str(&[shape.involved, "fieldPath"]).into(),
            source.into(),
            o.str(&[shape.message]).trim().to_string().into(),
            first_seen.into(),
            count.into(),
            o.name(),
        ]
    }

    fn node(&self) -> Vec<Value> {
        let o = self.o;
        let mut status: Vec<String> = Vec::new();
        if let Some(ready) = o
            .arr(&["status", "conditions"])
            .iter()
            .rev()
            .find(|c| Obj(c).str(&["type"]) == "Ready")
        {
            if Obj(ready).str(&["status"]) == "True" {
                status.push("Ready".to_string());
            } else {
                status.push("NotReady".to_string());
            }
        }
        if status.is_empty() {
            status.push("Unknown".to_string());
        }
        if o.at(&["spec", "unschedulable"]).and_then(Value::as_bool) == Some(true) {
            status.push("SchedulingDisabled".to_string());
        }
        let mut roles: Vec<String> = Vec::new();
        if let Some(labels) = o.at(&["metadata", "labels"]).and_then(Value::as_object) {
            for (k, v) in labels {
                if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                    if !role.is_empty() {
                        roles.push(role.to_string());
                    }
                } else if k == "kubernetes.io/role" {
                    let v = str_of(Some(v));
                    if !v.is_empty() {
                        roles.push(v);
                    }
                }
            }
        }
        roles.sort();
        roles.dedup();
        let roles = if roles.is_empty() {
            "<none>".to_string()
        } else {
            roles.join(",")
        };
        let address = |type_: &str| {
            o.arr(&["status", "addresses"])
                .iter()
                .find(|a| Obj(a).str(&["type"]) == type_)
                .map(|a| Obj(a).str(&["address"]))
                .unwrap_or_else(|| "<none>".to_string())
        };
        let info = |field: &str| o.str_or(&["status", "nodeInfo", field], "<unknown>");
        vec![
            o.name(),
            status.join(",").into(),
            roles.into(),
            self.age(),
            o.str(&["status", "nodeInfo", "kubeletVersion"]).into(),
            address("InternalIP").into(),
            address("ExternalIP").into(),
            info("osImage").into(),
            info("kernelVersion").into(),
            info("containerRuntimeVersion").into(),
        ]
    }

    fn resource_quota(&self) -> Vec<Value> {
        let o = self.o;
        let mut requests = Vec::new();
        let mut limits = Vec::new();
        if let Some(hard) = o.at(&["status", "hard"]).and_then(Value::as_object) {
            let mut names: Vec<&String> = hard.keys().collect();
            names.sort();
            for name in names {
                let used = quantity(o.at(&["status", "used", name]));
                let entry = format!("{name}: {used}/{}", quantity(hard.get(name.as_str())));
                let pieces: Vec<&str> = name.split('.').collect();
                if pieces.len() > 1 && pieces[0] == "limits" {
                    limits.push(entry);
                } else {
                    requests.push(entry);
                }
            }
        }
        vec![
            o.name(),
            self.age(),
            requests.join(", ").into(),
            limits.join(", ").into(),
        ]
    }

    fn job(&self) -> Vec<Value> {
        let o = self.o;
        let conditions = o.arr(&["status", "conditions"]);
        let status = if condition_true(conditions, "Complete") {
            "Complete"
        } else if condition_true(conditions, "Failed") {
            "Failed"
        } else if o.has(&["metadata", "deletionTimestamp"]) {
            "Terminating"
        } else if condition_true(conditions, "Suspended") {
            "Suspended"
        } else if condition_true(conditions, "FailureTarget") {
            "FailureTarget"
        } else if condition_true(conditions, "SuccessCriteriaMet") {
            "SuccessCriteriaMet"
        } else {
            "Running"
        };
        let succeeded = o.int(&["status", "succeeded"]);
        let completions = if o.has(&["spec", "completions"]) {
            format!("{succeeded}/{}", o.int(&["spec", "completions"]))
        } else if o.int(&["spec", "parallelism"]) > 1 {
            format!("{succeeded}/1 of {}", o.int(&["spec", "parallelism"]))
        } else {
            format!("{succeeded}/1")
        };
        let duration = match (
            o.time(&["status", "startTime"]),
            o.time(&["status", "completionTime"]),
        ) {
            (None, _) => String::new(),
            (Some(start), None) => human_duration(self.now - start),
            (Some(start), Some(end)) => human_duration(end - start),
        };
        let (names, images) = container_cells(o.at(&["spec", "template", "spec"]));
        vec![
            o.name(),
            status.into(),
            completions.into(),
            duration.into(),
            self.age(),
            names.into(),
            images.into(),
            format_label_selector(o.at(&["spec", "selector"])).into(),
        ]
    }

    fn cron_job(&self) -> Vec<Value> {
        let o = self.o;
        let suspend = match o.at(&["spec", "suspend"]).and_then(Value::as_bool) {
            Some(true) => "True",
            Some(false) => "False",
            None => "<unset>",
        };
        let last_schedule = if o.has(&["status", "lastScheduleTime"]) {
            self.since(o.time(&["status", "lastScheduleTime"]))
        } else {
            "<none>".to_string()
        };
        let job_spec = o.at(&["spec", "jobTemplate", "spec"]);
        let (names, images) =
            container_cells(job_spec.and_then(|s| Obj(s).at(&["template", "spec"])));
        vec![
            o.name(),
            o.str(&["spec", "schedule"]).into(),
            o.str_or(&["spec", "timeZone"], "<none>").into(),
            suspend.into(),
            o.arr(&["status", "active"]).len().into(),
            last_schedule.into(),
            self.age(),
            names.into(),
            images.into(),
            format_label_selector(job_spec.and_then(|s| Obj(s).at(&["selector"]))).into(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2025-06-01 12:00:00 UTC);

    fn cells(group: &str, kind: &str, obj: Value) -> Vec<Value> {
        let cells = row_cells(group, kind, &obj, NOW);
        assert_eq!(
            cells.len(),
            columns(group, kind).len(),
            "{group}/{kind}: one cell per column"
        );
        cells
    }

    fn names(group: &str, kind: &str) -> Vec<&'static str> {
        columns(group, kind).iter().map(|c| c.name).collect()
    }

    #[test]
    fn human_duration_matches_upstream() {
        let cases = [
            (Duration::seconds(-5), "<invalid>"),
            (Duration::milliseconds(-1500), "0s"),
            (Duration::seconds(0), "0s"),
            (Duration::seconds(119), "119s"),
            (Duration::seconds(120), "2m"),
            (Duration::seconds(182), "3m2s"),
            (Duration::minutes(10), "10m"),
            (Duration::minutes(179), "179m"),
            (Duration::hours(3), "3h"),
            (Duration::minutes(4 * 60 + 5), "4h5m"),
            (Duration::hours(8), "8h"),
            (Duration::hours(47), "47h"),
            (Duration::hours(48), "2d"),
            (Duration::hours(51), "2d3h"),
            (Duration::days(8), "8d"),
            (Duration::days(729), "729d"),
            (Duration::days(730), "2y"),
            (Duration::days(740), "2y10d"),
            (Duration::days(365 * 8 + 3), "8y"),
        ];
        for (d, want) in cases {
            assert_eq!(human_duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn namespace_and_default_tables() {
        assert_eq!(names("", "Namespace"), vec!["Name", "Status", "Age"]);
        let ns = json!({"metadata": {"name": "default", "creationTimestamp": "2025-06-01T11:00:00Z"}, "status": {"phase": "Active"}});
        assert_eq!(
            cells("", "Namespace", ns),
            vec![json!("default"), json!("Active"), json!("60m")]
        );

        assert_eq!(names("", "LimitRange"), vec!["Name", "Created At"]);
        assert_eq!(columns("", "LimitRange")[1].type_, "date");
        let lr = json!({"metadata": {"name": "limits", "creationTimestamp": "2025-05-01T10:00:00+02:00"}});
        assert_eq!(
            cells("", "LimitRange", lr),
            vec![json!("limits"), json!("2025-05-01T08:00:00Z")]
        );
        let bare = json!({"metadata": {"name": "x"}});
        assert_eq!(
            cells("example.com", "Widget", bare)[1],
            json!("0001-01-01T00:00:00Z")
        );
    }

    #[test]
    fn name_is_first_except_for_events() {
        for (g, k) in [
            ("", "Pod"),
            ("apps", "Deployment"),
            ("batch", "Job"),
            ("", "Node"),
            ("x", "Y"),
        ] {
            let first = &columns(g, k)[0];
            assert_eq!((first.name, first.format), ("Name", "name"), "{g}/{k}");
        }
        let ev = columns("", "Event");
        assert_eq!(ev[0].name, "Last Seen");
        assert_eq!(
            (ev[9].name, ev[9].format, ev[9].priority),
            ("Name", "name", 1)
        );
    }

    #[test]
    fn running_pod() {
        assert_eq!(
            names("", "Pod"),
            vec![
                "Name",
                "Ready",
                "Status",
                "Restarts",
                "Age",
                "IP",
                "Node",
                "Nominated Node",
                "Readiness Gates"
            ]
        );
        let pod = json!({
            "metadata": {"name": "web-1", "creationTimestamp": "2025-06-01T10:00:00Z"},
            "spec": {"nodeName": "node-a", "containers": [{"name": "web"}, {"name": "log"}]},
            "status": {
                "phase": "Running", "podIPs": [{"ip": "10.0.0.7"}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {"name": "web", "ready": true, "restartCount": 2, "state": {"running": {}},
                     "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2025-06-01T11:55:00Z"}}},
                    {"name": "log", "ready": true, "restartCount": 0, "state": {"running": {}}}
                ]
            }
        });
        assert_eq!(
            cells("", "Pod", pod),
            vec![
                json!("web-1"),
                json!("2/2"),
                json!("Running"),
                json!("2 (5m ago)"),
                json!("120m"),
                json!("10.0.0.7"),
                json!("node-a"),
                json!("<none>"),
                json!("<none>")
            ]
        );
    }

    #[test]
    fn pod_status_reasons() {
        let status = |pod: Value| cells("", "Pod", pod)[2].clone();
        let waiting = json!({
            "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": "Pending", "containerStatuses": [{"name": "c", "state": {"waiting": {"reason": "ContainerCreating"}}}]}
        });
        assert_eq!(status(waiting), json!("ContainerCreating"));
        let crash = json!({
            "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "c", "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
        });
        assert_eq!(status(crash.clone()), json!("CrashLoopBackOff"));
        assert_eq!(cells("", "Pod", crash)[3], json!("4"));
        let init = json!({
            "metadata": {"name": "p"}, "spec": {"initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "c"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [
                {"name": "i1", "state": {"terminated": {"exitCode": 0}}},
                {"name": "i2", "state": {"running": {}}}
            ]}
        });
        assert_eq!(status(init), json!("Init:1/2"));
        let init_failed = json!({
            "metadata": {"name": "p"}, "spec": {"initContainers": [{"name": "i1"}], "containers": [{"name": "c"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [{"name": "i1", "state": {"terminated": {"exitCode": 3}}}]}
        });
        assert_eq!(status(init_failed), json!("Init:ExitCode:3"));
        let completed = json!({
            "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": "Succeeded", "containerStatuses": [{"name": "c", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}
        });
        assert_eq!(status(completed.clone()), json!("Completed"));
        assert_eq!(
            row_conditions("", "Pod", &completed)[0]["type"],
            json!("Completed")
        );
        let mut deleting = completed.clone();
        deleting["status"]["phase"] = json!("Running");
        deleting["metadata"]["deletionTimestamp"] = json!("2025-06-01T11:59:00Z");
        assert_eq!(status(deleting), json!("Terminating"));
        let gated = json!({
            "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}
        });
        assert_eq!(status(gated), json!("SchedulingGated"));
    }

    #[test]
    fn pod_with_sidecar_and_readiness_gates() {
        let pod = json!({
            "metadata": {"name": "p", "creationTimestamp": "2025-06-01T11:59:30Z"},
            "spec": {"initContainers": [{"name": "proxy", "restartPolicy": "Always"}], "containers": [{"name": "app"}],
                     "readinessGates": [{"conditionType": "example.com/lb"}]},
            "status": {"phase": "Running",
                "conditions": [{"type": "Initialized", "status": "True"}, {"type": "example.com/lb", "status": "True"}],
                "initContainerStatuses": [{"name": "proxy", "started": true, "ready": true, "restartCount": 1, "state": {"running": {}}}],
                "containerStatuses": [{"name": "app", "ready": false, "state": {"running": {}}}]}
        });
        let c = cells("", "Pod", pod);
        assert_eq!(c[1], json!("1/2"));
        assert_eq!(c[2], json!("Running"));
        assert_eq!(c[3], json!("1"));
        assert_eq!(c[4], json!("30s"));
        assert_eq!(c[8], json!("1/1"));
    }

    #[test]
    fn services() {
        assert_eq!(
            names("", "Service"),
            vec![
                "Name",
                "Type",
                "Cluster-IP",
                "External-IP",
                "Port(s)",
                "Age",
                "Selector"
            ]
        );
        let svc = json!({
            "metadata": {"name": "web", "creationTimestamp": "2025-05-30T12:00:00Z"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                     "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}, {"port": 53, "protocol": "UDP"}],
                     "selector": {"app": "web", "tier": "fe"}}
        });
        assert_eq!(
            cells("", "Service", svc),
            vec![
                json!("web"),
                json!("NodePort"),
                json!("10.96.0.10"),
                json!("<none>"),
                json!("80:30080/TCP,53/UDP"),
                json!("2d"),
                json!("app=web,tier=fe")
            ]
        );
        let lb = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.11"]}, "status": {}});
        let c = cells("", "Service", lb);
        assert_eq!(
            (c[3].clone(), c[4].clone(), c[5].clone(), c[6].clone()),
            (
                json!("<pending>"),
                json!("<none>"),
                json!("<unknown>"),
                json!("<none>")
            )
        );
        let ext = json!({"metadata": {"name": "x"}, "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        assert_eq!(cells("", "Service", ext)[3], json!("db.example.com"));
    }

    #[test]
    fn endpoints_and_slices() {
        let ep = json!({
            "metadata": {"name": "web"},
            "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "fd00::3"}, {"ip": "10.0.0.4"}], "ports": [{"port": 8080}]}]
        });
        assert_eq!(
            cells("", "Endpoints", ep)[1],
            json!("10.0.0.1:8080,10.0.0.2:8080,[fd00::3]:8080 + 1 more...")
        );
        assert_eq!(
            cells("", "Endpoints", json!({"metadata": {"name": "e"}}))[1],
            json!("<none>")
        );
        assert_eq!(
            names("discovery.k8s.io", "EndpointSlice"),
            vec!["Name", "AddressType", "Ports", "Endpoints", "Age"]
        );
        let slice = json!({
            "metadata": {"name": "web-abc"}, "addressType": "IPv4",
            "ports": [{"port": 8080, "name": "http"}, {"name": "metrics"}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]
        });
        let c = cells("discovery.k8s.io", "EndpointSlice", slice);
        assert_eq!(
            (c[1].clone(), c[2].clone(), c[3].clone()),
            (
                json!("IPv4"),
                json!("8080,metrics"),
                json!("10.0.0.1,10.0.0.2")
            )
        );
        let empty = cells(
            "discovery.k8s.io",
            "EndpointSlice",
            json!({"metadata": {"name": "e"}, "addressType": "IPv4"}),
        );
        assert_eq!(
            (empty[2].clone(), empty[3].clone()),
            (json!("<unset>"), json!("<unset>"))
        );
    }

    #[test]
    fn config_maps_secrets_service_accounts() {
        let cm = json!({"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(cells("", "ConfigMap", cm)[1], json!(3));
        let secret = json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"k": "dg=="}});
        assert_eq!(
            cells("", "Secret", secret)[1..3],
            [json!("Opaque"), json!(1)]
        );
        let sa = json!({"metadata": {"name": "default"}, "secrets": [{"name": "t"}]});
        assert_eq!(cells("", "ServiceAccount", sa)[1], json!(1));
    }

    #[test]
    fn volumes_and_claims() {
        assert_eq!(
            names("", "PersistentVolumeClaim"),
            vec![
                "Name",
                "Status",
                "Volume",
                "Capacity",
                "Access Modes",
                "StorageClass",
                "VolumeAttributesClass",
                "Age",
                "VolumeMode"
            ]
        );
        let pvc = json!({
            "metadata": {"name": "data"},
            "spec": {"volumeName": "pv-1", "storageClassName": "standard", "volumeMode": "Filesystem"},
            "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"]}
        });
        assert_eq!(
            cells("", "PersistentVolumeClaim", pvc),
            vec![
                json!("data"),
                json!("Bound"),
                json!("pv-1"),
                json!("10Gi"),
                json!("RWO,RWX"),
                json!("standard"),
                json!("<unset>"),
                json!("<unknown>"),
                json!("Filesystem")
            ]
        );
        let pending =
            json!({"metadata": {"name": "p"}, "spec": {}, "status": {"phase": "Pending"}});
        assert_eq!(
            cells("", "PersistentVolumeClaim", pending)[3..5],
            [json!(""), json!("")]
        );
        let pv = json!({
            "metadata": {"name": "pv-1", "annotations": {"volume.beta.kubernetes.io/storage-class": "old"}},
            "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Retain",
                     "claimRef": {"namespace": "default", "name": "data"}, "storageClassName": "standard"},
            "status": {"phase": "Bound"}
        });
        let c = cells("", "PersistentVolume", pv);
        assert_eq!(
            c[1..9],
            [
                json!("10Gi"),
                json!("RWO"),
                json!("Retain"),
                json!("Bound"),
                json!("default/data"),
                json!("old"),
                json!("<unset>"),
                json!("")
            ]
        );
    }

    #[test]
    fn core_and_events_v1_events() {
        let core = json!({
            "metadata": {"name": "web-1.17f", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{web}"},
            "reason": "Pulled", "type": "Normal", "message": " Pulled image \"nginx\" \n",
            "source": {"component": "kubelet", "host": "node-a"},
            "firstTimestamp": "2025-06-01T11:50:00Z", "lastTimestamp": "2025-06-01T11:58:00Z", "count": 3
        });
        assert_eq!(
            cells("", "Event", core),
            vec![
                json!("2m"),
                json!("Normal"),
                json!("Pulled"),
                json!("pod/web-1"),
                json!("spec.containers{web}"),
                json!("kubelet, node-a"),
                json!("Pulled image \"nginx\""),
                json!("10m"),
                json!(3),
                json!("web-1.17f")
            ]
        );
        let v1 = json!({
            "metadata": {"name": "e2"}, "regarding": {"kind": "Deployment", "name": "web"},
            "reason": "ScalingReplicaSet", "type": "Normal", "note": "Scaled up", "reportingController": "deployment-controller",
            "eventTime": "2025-06-01T11:59:00.000000Z"
        });
        let c = cells("events.k8s.io", "Event", v1);
        assert_eq!(c[0], json!("60s"));
        assert_eq!(c[3], json!("deployment/web"));
        assert_eq!(c[5], json!("deployment-controller"));
        assert_eq!(c[6], json!("Scaled up"));
        assert_eq!(c[8], json!(1));
        let series = json!({"metadata": {"name": "e3"}, "eventTime": "2025-06-01T11:00:00.000000Z",
                            "series": {"count": 7, "lastObservedTime": "2025-06-01T11:59:50.000000Z"}, "involvedObject": {"kind": "Node"}});
        let c = cells("", "Event", series);
        assert_eq!(
            (c[0].clone(), c[3].clone(), c[7].clone(), c[8].clone()),
            (json!("10s"), json!("node"), json!("60m"), json!(7))
        );
    }

    #[test]
    fn nodes() {
        let node = json!({
            "metadata": {"name": "node-a", "creationTimestamp": "2025-05-31T12:00:00Z",
                         "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "worker", "node-role.kubernetes.io/": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "192.168.1.5"}, {"type": "Hostname", "address": "node-a"}],
                       "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian", "containerRuntimeVersion": "nodeless://0.1"}}
        });
        assert_eq!(
            cells("", "Node", node),
            vec![
                json!("node-a"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,worker"),
                json!("24h"),
                json!("v1.33.0"),
                json!("192.168.1.5"),
                json!("<none>"),
                json!("Debian"),
                json!("<unknown>"),
                json!("nodeless://0.1")
            ]
        );
        let bare = cells("", "Node", json!({"metadata": {"name": "n"}}));
        assert_eq!(
            (bare[1].clone(), bare[2].clone()),
            (json!("Unknown"), json!("<none>"))
        );
    }

    #[test]
    fn workloads() {
        let template = json!({"spec": {"containers": [{"name": "web", "image": "nginx:1.27"}, {"name": "log", "image": "busybox"}]}});
        let deploy = json!({
            "metadata": {"name": "web", "creationTimestamp": "2025-06-01T11:00:00Z"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        assert_eq!(
            names("apps", "Deployment"),
            vec![
                "Name",
                "Ready",
                "Up-to-date",
                "Available",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        assert_eq!(
            cells("apps", "Deployment", deploy),
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("60m"),
                json!("web,log"),
                json!("nginx:1.27,busybox"),
                json!("app=web")
            ]
        );
        let rs = json!({"metadata": {"name": "web-5d"}, "spec": {"replicas": 2, "selector": {}, "template": template},
                        "status": {"replicas": 2, "readyReplicas": 1}});
        let c = cells("apps", "ReplicaSet", rs);
        assert_eq!(c[1..4], [json!(2), json!(2), json!(1)]);
        assert_eq!(c[7], json!("<none>"));
        let sts = json!({"metadata": {"name": "db"}, "spec": {"replicas": 3, "template": template}, "status": {"readyReplicas": 3}});
        assert_eq!(cells("apps", "StatefulSet", sts)[1], json!("3/3"));
        let ds = json!({"metadata": {"name": "agent"},
                        "spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]},
                                 "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}, "containers": []}}},
                        "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1, "updatedNumberScheduled": 2, "numberAvailable": 1}});
        let c = cells("apps", "DaemonSet", ds);
        assert_eq!(
            c[1..7],
            [
                json!(2),
                json!(2),
                json!(1),
                json!(2),
                json!(1),
                json!("kubernetes.io/os=linux")
            ]
        );
        assert_eq!(c[10], json!("app"));
        let rc = json!({"metadata": {"name": "rc"}, "spec": {"selector": {"app": "old"}, "template": template}, "status": {"replicas": 1}});
        let c = cells("", "ReplicationController", rc);
        assert_eq!(
            (c[1].clone(), c[2].clone(), c[3].clone(), c[7].clone()),
            (json!(1), json!(1), json!(0), json!("app=old"))
        );
        let cr = json!({"metadata": {"name": "db-7f", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "controller": true}]},
                        "revision": 4});
        assert_eq!(
            cells("apps", "ControllerRevision", cr)[1..3],
            [json!("statefulset.apps/db"), json!(4)]
        );
        assert_eq!(
            cells(
                "apps",
                "ControllerRevision",
                json!({"metadata": {"name": "x"}})
            )[1],
            json!("<none>")
        );
    }

    #[test]
    fn jobs_and_cron_jobs() {
        assert_eq!(
            names("batch", "Job"),
            vec![
                "Name",
                "Status",
                "Completions",
                "Duration",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let job = json!({
            "metadata": {"name": "pi", "creationTimestamp": "2025-06-01T11:00:00Z"},
            "spec": {"completions": 1, "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u"}},
                     "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}},
            "status": {"succeeded": 1, "startTime": "2025-06-01T11:00:00Z", "completionTime": "2025-06-01T11:00:42Z",
                       "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]}
        });
        assert_eq!(
            cells("batch", "Job", job),
            vec![
                json!("pi"),
                json!("Complete"),
                json!("1/1"),
                json!("42s"),
                json!("60m"),
                json!("pi"),
                json!("perl"),
                json!("batch.kubernetes.io/controller-uid=u")
            ]
        );
        let running = json!({"metadata": {"name": "w"}, "spec": {"parallelism": 3}, "status": {"startTime": "2025-06-01T11:57:00Z"}});
        let c = cells("batch", "Job", running);
        assert_eq!(c[1..4], [json!("Running"), json!("0/1 of 3"), json!("3m")]);
        let not_started = cells(
            "batch",
            "Job",
            json!({"metadata": {"name": "n"}, "spec": {"suspend": true},
            "status": {"conditions": [{"type": "Suspended", "status": "True"}]}}),
        );
        assert_eq!(
            not_started[1..4],
            [json!("Suspended"), json!("0/1"), json!("")]
        );

        assert_eq!(
            names("batch", "CronJob"),
            vec![
                "Name",
                "Schedule",
                "Timezone",
                "Suspend",
                "Active",
                "Last Schedule",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let cron = json!({
            "metadata": {"name": "hello"},
            "spec": {"schedule": "*/5 * * * *", "suspend": false,
                     "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}},
            "status": {"active": [{"name": "hello-1"}], "lastScheduleTime": "2025-06-01T11:55:00Z"}
        });
        let c = cells("batch", "CronJob", cron);
        assert_eq!(
            c[1..6],
            [
                json!("*/5 * * * *"),
                json!("<none>"),
                json!("False"),
                json!(1),
                json!("5m")
            ]
        );
        assert_eq!(c[9], json!("<none>"));
    }

    #[test]
    fn certificate_signing_requests_show_signer_requestor_and_condition() {
        let group = "certificates.k8s.io";
        let kind = "CertificateSigningRequest";
        assert_eq!(
            names(group, kind),
            vec![
                "Name",
                "Age",
                "SignerName",
                "Requestor",
                "RequestedDuration",
                "Condition"
            ]
        );
        let pending = json!({"metadata": {"name": "node-csr-a"},
            "spec": {"signerName": "kubernetes.io/kubelet-serving", "username": "system:node:a"}});
        let c = cells(group, kind, pending);
        assert_eq!(c[2], json!("kubernetes.io/kubelet-serving"));
        assert_eq!(c[3], json!("system:node:a"));
        assert_eq!(c[4], json!("<none>"));
        assert_eq!(c[5], json!("Pending"));
        let issued = json!({"metadata": {"name": "x"}, "spec": {"expirationSeconds": 86400},
            "status": {"certificate": "Q0VSVA==", "conditions": [{"type": "Approved", "status": "True"}]}});
        let c = cells(group, kind, issued);
        assert_eq!(c[4], json!("24h"));
        assert_eq!(c[5], json!("Approved,Issued"));
        let denied = json!({"metadata": {"name": "y"}, "status": {"conditions": [
            {"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"},
            {"type": "Failed", "status": "True"}]}});
        assert_eq!(cells(group, kind, denied)[5], json!("Denied,Failed"));
    }

    #[test]
    fn quotas_leases_storage_classes_budgets() {
        let quota = json!({
            "metadata": {"name": "q"},
            "status": {"hard": {"requests.cpu": "2", "limits.memory": "4Gi", "pods": "10", "limits.cpu": "4"},
                       "used": {"requests.cpu": "500m", "pods": "3", "limits.cpu": "1"}}
        });
        let c = cells("", "ResourceQuota", quota);
        assert_eq!(c[2], json!("pods: 3/10, requests.cpu: 500m/2"));
        assert_eq!(c[3], json!("limits.cpu: 1/4, limits.memory: 0/4Gi"));

        let lease = json!({"metadata": {"name": "kube-scheduler"}, "spec": {"holderIdentity": "node-a_1234"}});
        assert_eq!(
            cells("coordination.k8s.io", "Lease", lease)[1],
            json!("node-a_1234")
        );

        let sc = json!({"metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                        "provisioner": "nodeless.io/local", "volumeBindingMode": "WaitForFirstConsumer"});
        assert_eq!(
            cells("storage.k8s.io", "StorageClass", sc)[..5],
            [
                json!("standard (default)"),
                json!("nodeless.io/local"),
                json!("Delete"),
                json!("WaitForFirstConsumer"),
                json!(false)
            ]
        );

        let pdb = json!({"metadata": {"name": "web"}, "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}});
        assert_eq!(
            cells("policy", "PodDisruptionBudget", pdb)[1..4],
            [json!("50%"), json!("N/A"), json!(1)]
        );
    }

    #[test]
    fn column_definitions_are_table_json() {
        let defs = column_definitions("", "Pod");
        assert_eq!(defs[0]["name"], json!("Name"));
        assert_eq!(defs[0]["format"], json!("name"));
        assert_eq!(defs[5]["priority"], json!(1));
        assert_eq!(defs[3]["type"], json!("string"));
    }
}
