//! Tests of the whole decoder: bodies captured from a real kubectl, hand-built messages, and
//! malformed input.

use serde_json::{json, Value};

use super::{decode_object, ProtobufError};

/// A tiny protobuf encoder for building test messages.
#[derive(Default, Clone)]
struct Msg(Vec<u8>);

impl Msg {
    fn new() -> Self {
        Msg::default()
    }

    fn raw_varint(&mut self, mut value: u64) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                self.0.push(byte);
                return;
            }
            self.0.push(byte | 0x80);
        }
    }

    fn tag(&mut self, number: u32, wire_type: u8) {
        self.raw_varint(u64::from(number) << 3 | u64::from(wire_type));
    }

    fn int(mut self, number: u32, value: i64) -> Self {
        self.tag(number, 0);
        self.raw_varint(value as u64);
        self
    }

    fn bytes(mut self, number: u32, data: &[u8]) -> Self {
        self.tag(number, 2);
        self.raw_varint(data.len() as u64);
        self.0.extend_from_slice(data);
        self
    }

    fn string(self, number: u32, text: &str) -> Self {
        self.bytes(number, text.as_bytes())
    }

    fn message(self, number: u32, message: Msg) -> Self {
        self.bytes(number, &message.0)
    }

    fn string_entry(self, number: u32, key: &str, value: &str) -> Self {
        self.message(number, Msg::new().string(1, key).string(2, value))
    }

    fn message_entry(self, number: u32, key: &str, value: Msg) -> Self {
        self.message(number, Msg::new().string(1, key).message(2, value))
    }
}

/// A body: magic, then runtime.Unknown{typeMeta{apiVersion, kind}, raw}.
fn envelope(api_version: &str, kind: &str, object: Msg) -> Vec<u8> {
    let unknown = Msg::new()
        .message(1, Msg::new().string(1, api_version).string(2, kind))
        .message(2, object)
        .string(3, "")
        .string(4, "");
    let mut body = b"k8s\0".to_vec();
    body.extend(unknown.0);
    body
}

fn meta(name: &str) -> Msg {
    // As Go writes it: empty strings and a zero creationTimestamp are present on the wire.
    Msg::new()
        .string(1, name)
        .string(2, "")
        .string(3, "")
        .int(7, 0)
        .message(8, Msg::new())
}

fn quantity(text: &str) -> Msg {
    Msg::new().string(1, text)
}

fn int_or_string_int(value: i32) -> Msg {
    Msg::new().int(1, 0).int(2, i64::from(value)).string(3, "")
}

fn int_or_string_str(text: &str) -> Msg {
    Msg::new().int(1, 1).int(2, 0).string(3, text)
}

/// Removes the `"creationTimestamp": null` Go's JSON encoding writes for zero times.
fn without_null_timestamps(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|key, item| !(key == "creationTimestamp" && item.is_null()));
            map.values_mut().for_each(without_null_timestamps);
        }
        Value::Array(items) => items.iter_mut().for_each(without_null_timestamps),
        _ => {}
    }
}

macro_rules! fixture {
    ($name:literal) => {
        (
            $name,
            include_bytes!(concat!("testdata/", $name, ".pb")).as_slice(),
            include_str!(concat!("testdata/", $name, ".json")),
        )
    };
}

/// Bodies kubectl sent for `kubectl create ...` (captured with a loopback HTTP listener), each
/// with what `kubectl create ... --dry-run=client -o json` prints for the same command: Go's
/// JSON encoding of the same object.
#[test]
fn bodies_captured_from_kubectl_decode_to_its_json_encoding() {
    let fixtures = [
        fixture!("configmap"),
        fixture!("configmap-binary"),
        fixture!("secret-generic"),
        fixture!("secret-docker-registry"),
        fixture!("deployment"),
        fixture!("deployment-two-containers"),
        fixture!("job"),
        fixture!("cronjob"),
        fixture!("job-from-cronjob"),
        fixture!("namespace"),
        fixture!("service-clusterip"),
        fixture!("service-nodeport"),
        fixture!("serviceaccount"),
        fixture!("pdb-min-available"),
        fixture!("pdb-max-unavailable"),
        fixture!("resourcequota"),
    ];
    for (name, body, expected) in fixtures {
        let decoded = decode_object(body).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut expected: Value = serde_json::from_str(expected).unwrap();
        without_null_timestamps(&mut expected);
        assert_eq!(decoded, expected, "{name}");
    }
}

#[test]
fn captured_bodies_keep_empty_map_values_and_render_intorstring() {
    let configmap = decode_object(include_bytes!("testdata/configmap.pb")).unwrap();
    assert_eq!(configmap["data"], json!({"a": "b", "empty": ""}));
    let service = decode_object(include_bytes!("testdata/service-clusterip.pb")).unwrap();
    assert_eq!(service["spec"]["ports"][0]["targetPort"], json!(8080));
    assert_eq!(service["spec"]["ports"][1]["targetPort"], json!("https"));
    let token = decode_object(include_bytes!("testdata/token-request.pb")).unwrap();
    assert_eq!(token["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(token["kind"], "TokenRequest");
    assert_eq!(token["metadata"], json!({}));
    assert_eq!(token["spec"]["expirationSeconds"], 3600);
}

#[test]
fn configmap_with_labels_and_data() {
    let object = Msg::new()
        .message(
            1,
            meta("cm")
                .string(3, "default")
                .string_entry(11, "app", "web")
                .string_entry(11, "tier", ""),
        )
        .string_entry(2, "key", "value")
        .string_entry(2, "blank", "");
    let decoded = decode_object(&envelope("v1", "ConfigMap", object)).unwrap();
    assert_eq!(
        decoded,
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cm", "namespace": "default", "labels": {"app": "web", "tier": ""}},
            "data": {"key": "value", "blank": ""}
        })
    );
}

#[test]
fn deployment_with_containers_ports_env_limits_and_rolling_update() {
    let container = Msg::new()
        .string(1, "web")
        .string(2, "nginx")
        .string(3, "nginx")
        .string(3, "-g")
        .string(5, "")
        .message(
            6,
            Msg::new()
                .string(1, "http")
                .int(2, 0)
                .int(3, 80)
                .string(4, "TCP"),
        )
        .message(7, Msg::new().string(1, "MODE").string(2, "prod"))
        .message(7, Msg::new().string(1, "EMPTY").string(2, ""))
        .message(
            8,
            Msg::new()
                .message_entry(1, "cpu", quantity("500m"))
                .message_entry(1, "memory", quantity("1Gi"))
                .message_entry(2, "cpu", quantity("250m")),
        )
        .message(
            10,
            Msg::new()
                .message(
                    1,
                    Msg::new().message(
                        2,
                        Msg::new()
                            .string(1, "/healthz")
                            .message(2, int_or_string_str("http")),
                    ),
                )
                .int(2, 3)
                .int(3, 0),
        );
    let spec = Msg::new()
        .int(1, 3)
        .message(2, Msg::new().string_entry(1, "app", "web"))
        .message(
            3,
            Msg::new()
                .message(
                    1,
                    Msg::new()
                        .message(8, Msg::new())
                        .string_entry(11, "app", "web"),
                )
                .message(
                    2,
                    Msg::new()
                        .message(
                            1,
                            Msg::new().string(1, "config").message(
                                2,
                                Msg::new()
                                    .message(19, Msg::new().message(1, Msg::new().string(1, "cm"))),
                            ),
                        )
                        .message(2, container),
                ),
        )
        .message(
            4,
            Msg::new().string(1, "RollingUpdate").message(
                2,
                Msg::new()
                    .message(1, int_or_string_int(0))
                    .message(2, int_or_string_str("25%")),
            ),
        )
        .int(5, 0)
        .int(7, 0);
    let object = Msg::new()
        .message(1, meta("web"))
        .message(2, spec)
        .message(3, Msg::new());
    let decoded = decode_object(&envelope("apps/v1", "Deployment", object)).unwrap();
    assert_eq!(
        decoded,
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "volumes": [{"name": "config", "configMap": {"name": "cm"}}],
                        "containers": [{
                            "name": "web",
                            "image": "nginx",
                            "command": ["nginx", "-g"],
                            "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                            "env": [{"name": "MODE", "value": "prod"}, {"name": "EMPTY"}],
                            "resources": {
                                "limits": {"cpu": "500m", "memory": "1Gi"},
                                "requests": {"cpu": "250m"}
                            },
                            "livenessProbe": {
                                "httpGet": {"path": "/healthz", "port": "http"},
                                "initialDelaySeconds": 3
                            }
                        }]
                    }
                },
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}
                }
            },
            "status": {}
        })
    );
}

#[test]
fn secret_bytes_are_base64_and_pointer_bools_are_kept() {
    let object = Msg::new()
        .message(1, meta("creds"))
        .int(5, 0)
        .message(2, Msg::new().string(1, "key").bytes(2, b"\x00\xffsecret"))
        .message(2, Msg::new().string(1, "empty"))
        .string(3, "Opaque");
    let decoded = decode_object(&envelope("v1", "Secret", object)).unwrap();
    assert_eq!(
        decoded,
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "immutable": false,
            "data": {"key": "AP9zZWNyZXQ=", "empty": ""},
            "type": "Opaque"
        })
    );
}

#[test]
fn job_times_render_rfc3339_and_zero_times_are_dropped() {
    let object = Msg::new()
        .message(1, meta("batch").message(9, Msg::new()))
        .message(2, Msg::new().int(1, 2))
        .message(
            3,
            Msg::new()
                // Upstream ignores nanoseconds of a Time read from protobuf.
                .message(2, Msg::new().int(1, 1_704_164_645).int(2, 999))
                .message(3, Msg::new().int(1, -62_135_596_800))
                .int(4, 1)
                .int(5, 0),
        );
    let decoded = decode_object(&envelope("batch/v1", "Job", object)).unwrap();
    assert_eq!(
        decoded,
        json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "batch"},
            "spec": {"parallelism": 2},
            "status": {"startTime": "2024-01-02T03:04:05Z", "active": 1}
        })
    );
}

#[test]
fn events_micro_time_and_lease_pointer_fields() {
    let event = Msg::new()
        .message(1, meta("ev"))
        .message(2, Msg::new().int(1, 1_704_164_645).int(2, 123_456_789))
        .string(4, "kubelet")
        .string(5, "")
        .message(13, Msg::new())
        .int(15, 0);
    let decoded = decode_object(&envelope("events.k8s.io/v1", "Event", event)).unwrap();
    assert_eq!(
        decoded,
        json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": "ev"},
            "eventTime": "2024-01-02T03:04:05.123456Z",
            "reportingController": "kubelet"
        })
    );
    let lease = Msg::new().message(1, meta("l")).message(
        2,
        Msg::new()
            .string(1, "holder")
            .int(2, 0)
            .message(4, Msg::new().int(1, 0).int(2, 5_000)),
    );
    let decoded = decode_object(&envelope("coordination.k8s.io/v1", "Lease", lease)).unwrap();
    assert_eq!(
        decoded["spec"],
        json!({
            "holderIdentity": "holder",
            "leaseDurationSeconds": 0,
            "renewTime": "1970-01-01T00:00:00.000005Z"
        })
    );
}

#[test]
fn raw_extensions_and_fields_v1_hold_json() {
    let managed = Msg::new()
        .string(1, "kubectl")
        .string(2, "Update")
        .message(4, Msg::new().int(1, 0))
        .string(6, "FieldsV1")
        .message(7, Msg::new().bytes(1, br#"{"f:data":{".":{}}}"#));
    let object = Msg::new()
        .message(1, meta("rev").message(17, managed))
        .message(2, Msg::new().bytes(1, br#"{"spec":{"replicas":1}}"#))
        .int(3, 0);
    let decoded = decode_object(&envelope("apps/v1", "ControllerRevision", object)).unwrap();
    assert_eq!(
        decoded,
        json!({
            "apiVersion": "apps/v1",
            "kind": "ControllerRevision",
            "metadata": {
                "name": "rev",
                "managedFields": [{
                    "manager": "kubectl",
                    "operation": "Update",
                    "time": "1970-01-01T00:00:00Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:data": {".": {}}}
                }]
            },
            "data": {"spec": {"replicas": 1}},
            "revision": 0
        })
    );
    let bad = Msg::new()
        .message(1, meta("rev"))
        .message(2, Msg::new().bytes(1, b"{not json"));
    let error = decode_object(&envelope("apps/v1", "ControllerRevision", bad)).unwrap_err();
    assert!(
        matches!(error, ProtobufError::InvalidEmbeddedJson { number: 2, .. }),
        "{error}"
    );
}

#[test]
fn delete_options_decode_in_any_group_version() {
    let options = Msg::new()
        .int(1, 0)
        .message(2, Msg::new().string(1, "uid-1"))
        .string(4, "Foreground")
        .string(5, "All");
    for api_version in ["v1", "apps/v1", "meta.k8s.io/v1"] {
        let decoded = decode_object(&envelope(api_version, "DeleteOptions", options.clone()));
        assert_eq!(
            decoded.unwrap(),
            json!({
                "apiVersion": api_version,
                "kind": "DeleteOptions",
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": "uid-1"},
                "propagationPolicy": "Foreground",
                "dryRun": ["All"]
            })
        );
    }
}

#[test]
fn scale_and_pointer_empty_strings() {
    let scale = Msg::new()
        .message(1, meta("web").string(3, "default").string(6, "42"))
        .message(2, Msg::new().int(1, 5))
        .message(3, Msg::new().int(1, 0).string(2, ""));
    let decoded = decode_object(&envelope("autoscaling/v1", "Scale", scale)).unwrap();
    assert_eq!(
        decoded,
        json!({
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": "42"},
            "spec": {"replicas": 5},
            "status": {"replicas": 0}
        })
    );
    // storageClassName is a *string: an empty one disables the default class and stays.
    let claim = Msg::new()
        .message(1, meta("data"))
        .message(2, Msg::new().string(1, "ReadWriteOnce").string(5, ""));
    let decoded = decode_object(&envelope("v1", "PersistentVolumeClaim", claim)).unwrap();
    assert_eq!(
        decoded["spec"],
        json!({"accessModes": ["ReadWriteOnce"], "storageClassName": ""})
    );
}

#[test]
fn packed_and_unpacked_repeated_numbers_are_both_read() {
    // EndpointSlice.ports[].port is optional; use a Pod's hostPID-free field instead:
    // PodSecurityContext.supplementalGroups (field 4, repeated int64).
    let packed = Msg::new().bytes(4, &[1, 2, 0x96, 0x01]);
    let unpacked = Msg::new().int(4, 1).int(4, 2).int(4, 150);
    for security_context in [packed, unpacked] {
        let object = Msg::new()
            .message(1, meta("p"))
            .message(2, Msg::new().message(14, security_context));
        let decoded = decode_object(&envelope("v1", "Pod", object)).unwrap();
        assert_eq!(
            decoded["spec"]["securityContext"]["supplementalGroups"],
            json!([1, 2, 150])
        );
    }
}

#[test]
fn unknown_fields_are_skipped() {
    let object = Msg::new()
        .message(1, meta("ns"))
        .int(99, 7)
        .string(100, "ignored");
    let decoded = decode_object(&envelope("v1", "Namespace", object)).unwrap();
    assert_eq!(
        decoded,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}})
    );
}

#[test]
fn errors_have_clear_messages() {
    let error = decode_object(b"{\"kind\":\"Pod\"}").unwrap_err();
    assert_eq!(
        error.to_string(),
        "body does not start with the Kubernetes protobuf magic \"k8s\\0\" (found 7b 22 6b 69)"
    );
    let error = decode_object(&envelope("apps/v1", "Gizmo", Msg::new())).unwrap_err();
    assert_eq!(
        error.to_string(),
        "unknown kind \"Gizmo\" in group-version \"apps/v1\""
    );
    let error = decode_object(&envelope("v1", "", Msg::new())).unwrap_err();
    assert!(matches!(error, ProtobufError::MissingKind { .. }));
    // ConfigMap.metadata (field 1) sent as a varint.
    let error = decode_object(&envelope("v1", "ConfigMap", Msg::new().int(1, 5))).unwrap_err();
    assert_eq!(
        error.to_string(),
        "wire-type mismatch for field 1 of message core.v1.ConfigMap: expected length-delimited, found varint"
    );
    // ConfigMap.metadata claims 5 bytes, but only 1 follows.
    let unknown = Msg::new()
        .message(1, Msg::new().string(1, "v1").string(2, "ConfigMap"))
        .bytes(2, &[0x0a, 0x05, b'x']);
    let mut body = b"k8s\0".to_vec();
    body.extend(unknown.0);
    let error = decode_object(&body).unwrap_err();
    assert_eq!(
        error.to_string(),
        "field 1 of message core.v1.ConfigMap claims 5 bytes but only 1 remain"
    );
    let mut body = b"k8s\0".to_vec();
    body.push(0x0a);
    body.push(0xff);
    let error = decode_object(&body).unwrap_err();
    assert_eq!(
        error.to_string(),
        "truncated varint at byte 1 of message runtime.Unknown"
    );
    let invalid_utf8 = Msg::new().message(1, Msg::new().bytes(1, b"\xff"));
    let error = decode_object(&envelope("v1", "ConfigMap", invalid_utf8)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "field 1 of message apis.meta.v1.ObjectMeta is not valid UTF-8"
    );
}

#[test]
fn json_inside_the_envelope_is_accepted() {
    let unknown = Msg::new()
        .message(1, Msg::new().string(1, "v1").string(2, "ConfigMap"))
        .bytes(2, br#"{"metadata":{"name":"j"}}"#)
        .string(4, "application/json");
    let mut body = b"k8s\0".to_vec();
    body.extend(unknown.0);
    assert_eq!(
        decode_object(&body).unwrap(),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "j"}})
    );
}

/// A small deterministic xorshift generator, so the fuzz test needs no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_truncated_and_mutated_bytes_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let seeds: Vec<&[u8]> = vec![
        include_bytes!("testdata/deployment.pb"),
        include_bytes!("testdata/cronjob.pb"),
        include_bytes!("testdata/secret-generic.pb"),
        include_bytes!("testdata/service-clusterip.pb"),
    ];
    for seed in &seeds {
        // Every prefix.
        for length in 0..seed.len() {
            let _ = decode_object(&seed[..length]);
        }
        // Random byte flips, keeping the magic so the decoder gets past it.
        for _ in 0..2000 {
            let mut body = seed.to_vec();
            for _ in 0..(rng.next() % 4 + 1) {
                let index = 4 + (rng.next() as usize) % (body.len() - 4);
                body[index] = rng.next() as u8;
            }
            let _ = decode_object(&body);
        }
    }
    // Pure noise after the magic.
    for _ in 0..5000 {
        let length = (rng.next() % 200) as usize;
        let mut body = b"k8s\0".to_vec();
        body.extend((0..length).map(|_| rng.next() as u8));
        let _ = decode_object(&body);
    }
}

#[test]
fn envelopes_nested_in_raw_extensions_decode_and_are_bounded() {
    fn revision(data: Vec<u8>) -> Vec<u8> {
        let object = Msg::new()
            .message(1, meta("rev"))
            .message(2, Msg::new().bytes(1, &data));
        envelope("apps/v1", "ControllerRevision", object)
    }
    let inner = envelope("v1", "ConfigMap", Msg::new().message(1, meta("inner")));
    let decoded = decode_object(&revision(inner)).unwrap();
    assert_eq!(
        decoded["data"],
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "inner"}})
    );
    let mut body = revision(br#"{"a":1}"#.to_vec());
    for _ in 0..100 {
        body = revision(body);
    }
    assert!(matches!(
        decode_object(&body),
        Err(ProtobufError::TooDeep { limit: 64 })
    ));
}
