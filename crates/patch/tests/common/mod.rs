//! Hand-written OpenAPI v2 definitions shaped like the API server's, for the tests.
#![allow(dead_code)]

use serde_json::{json, Map, Value};

fn r(name: &str) -> Value {
    json!({"$ref": format!("#/definitions/{name}")})
}

/// A trimmed-down set of core/apps definitions carrying the upstream patch metadata.
pub fn definitions() -> Map<String, Value> {
    let defs = json!({
        "io.k8s.api.apps.v1.Deployment": {
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": r("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
                "spec": r("io.k8s.api.apps.v1.DeploymentSpec"),
                "status": r("io.k8s.api.apps.v1.DeploymentStatus")
            }
        },
        "io.k8s.api.apps.v1.DeploymentStatus": {
            "type": "object",
            "properties": {"replicas": {"type": "integer"}}
        },
        "io.k8s.api.apps.v1.DeploymentSpec": {
            "type": "object",
            "properties": {
                "replicas": {"type": "integer"},
                "selector": r("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"),
                "strategy": {
                    "$ref": "#/definitions/io.k8s.api.apps.v1.DeploymentStrategy",
                    "x-kubernetes-patch-strategy": "retainKeys"
                },
                "template": r("io.k8s.api.core.v1.PodTemplateSpec")
            }
        },
        "io.k8s.api.apps.v1.DeploymentStrategy": {
            "type": "object",
            "properties": {
                "type": {"type": "string"},
                "rollingUpdate": r("io.k8s.api.apps.v1.RollingUpdateDeployment")
            }
        },
        "io.k8s.api.apps.v1.RollingUpdateDeployment": {
            "type": "object",
            "properties": {
                "maxSurge": {"type": "string"},
                "maxUnavailable": {"type": "string"}
            }
        },
        "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector": {
            "type": "object",
            "properties": {
                "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}
            },
            "x-kubernetes-map-type": "atomic"
        },
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "uid": {"type": "string"},
                "resourceVersion": {"type": "string"},
                "generation": {"type": "integer"},
                "creationTimestamp": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                "finalizers": {
                    "type": "array",
                    "items": {"type": "string"},
                    "x-kubernetes-list-type": "set",
                    "x-kubernetes-patch-strategy": "merge"
                },
                "ownerReferences": {
                    "type": "array",
                    "items": r("io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference"),
                    "x-kubernetes-list-map-keys": ["uid"],
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-patch-merge-key": "uid",
                    "x-kubernetes-patch-strategy": "merge"
                },
                "managedFields": {
                    "type": "array",
                    "items": {"type": "object"}
                }
            }
        },
        "io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference": {
            "type": "object",
            "properties": {
                "uid": {"type": "string"},
                "name": {"type": "string"},
                "kind": {"type": "string"}
            }
        },
        "io.k8s.api.core.v1.PodTemplateSpec": {
            "type": "object",
            "properties": {
                "metadata": r("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
                "spec": r("io.k8s.api.core.v1.PodSpec")
            }
        },
        "io.k8s.api.core.v1.PodSpec": {
            "type": "object",
            "required": ["containers"],
            "properties": {
                "containers": {
                    "type": "array",
                    "items": r("io.k8s.api.core.v1.Container"),
                    "x-kubernetes-list-map-keys": ["name"],
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-patch-merge-key": "name",
                    "x-kubernetes-patch-strategy": "merge"
                },
                "initContainers": {
                    "type": "array",
                    "items": r("io.k8s.api.core.v1.Container"),
                    "x-kubernetes-patch-merge-key": "name",
                    "x-kubernetes-patch-strategy": "merge"
                },
                "volumes": {
                    "type": "array",
                    "items": r("io.k8s.api.core.v1.Volume"),
                    "x-kubernetes-list-map-keys": ["name"],
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-patch-merge-key": "name",
                    "x-kubernetes-patch-strategy": "merge,retainKeys"
                },
                "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}, "x-kubernetes-map-type": "atomic"},
                "restartPolicy": {"type": "string"},
                "tolerations": {
                    "type": "array",
                    "items": {"type": "object"},
                    "x-kubernetes-list-type": "atomic"
                }
            }
        },
        "io.k8s.api.core.v1.Container": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "image": {"type": "string"},
                "args": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "atomic"},
                "command": {"type": "array", "items": {"type": "string"}},
                "env": {
                    "type": "array",
                    "items": r("io.k8s.api.core.v1.EnvVar"),
                    "x-kubernetes-list-map-keys": ["name"],
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-patch-merge-key": "name",
                    "x-kubernetes-patch-strategy": "merge"
                },
                "ports": {
                    "type": "array",
                    "items": r("io.k8s.api.core.v1.ContainerPort"),
                    "x-kubernetes-list-map-keys": ["containerPort", "protocol"],
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-patch-merge-key": "containerPort",
                    "x-kubernetes-patch-strategy": "merge"
                },
                "volumeMounts": {
                    "type": "array",
                    "items": r("io.k8s.api.core.v1.VolumeMount"),
                    "x-kubernetes-patch-merge-key": "mountPath",
                    "x-kubernetes-patch-strategy": "merge"
                },
                "resources": r("io.k8s.api.core.v1.ResourceRequirements")
            }
        },
        "io.k8s.api.core.v1.ResourceRequirements": {
            "type": "object",
            "properties": {
                "limits": {"type": "object", "additionalProperties": {"type": "string"}},
                "requests": {"type": "object", "additionalProperties": {"type": "string"}}
            }
        },
        "io.k8s.api.core.v1.EnvVar": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "value": {"type": "string"}}
        },
        "io.k8s.api.core.v1.ContainerPort": {
            "type": "object",
            "properties": {
                "containerPort": {"type": "integer"},
                "name": {"type": "string"},
                "protocol": {"type": "string", "default": "TCP"}
            }
        },
        "io.k8s.api.core.v1.VolumeMount": {
            "type": "object",
            "properties": {"mountPath": {"type": "string"}, "name": {"type": "string"}}
        },
        "io.k8s.api.core.v1.Volume": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "emptyDir": {"type": "object", "properties": {"medium": {"type": "string"}}},
                "configMap": {"type": "object", "properties": {"name": {"type": "string"}}},
                "secret": {"type": "object", "properties": {"secretName": {"type": "string"}}}
            }
        },
        "io.k8s.apiextensions.FreeForm": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true
        }
    });
    match defs {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

pub const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";
