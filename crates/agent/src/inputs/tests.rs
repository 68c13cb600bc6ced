//! Whole resolutions against offline sources (no API server).

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapEnvSource, ConfigMapKeySelector, ConfigMapVolumeSource, Container,
    DownwardAPIVolumeFile, DownwardAPIVolumeSource, EmptyDirVolumeSource, EnvFromSource, EnvVar,
    EnvVarSource, HostPathVolumeSource, KeyToPath, ObjectFieldSelector, Pod, PodSpec, PodStatus,
    Secret, SecretEnvSource, SecretKeySelector, Volume, VolumeMount,
};
use k8s_openapi::ByteString;
use kube::api::ObjectMeta;

use super::*;

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some("ns".into()),
        ..Default::default()
    }
}

fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: meta(name),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    }
}

fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: meta(name),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

fn value(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn from(name: &str, source: EnvVarSource) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(source),
    }
}

fn field(path: &str) -> EnvVarSource {
    EnvVarSource {
        field_ref: Some(ObjectFieldSelector {
            field_path: path.into(),
            api_version: None,
        }),
        ..Default::default()
    }
}

fn pod(container: Container, volumes: Vec<Volume>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("web-0".into()),
            namespace: Some("ns".into()),
            uid: Some("uid-1".into()),
            labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            volumes: Some(volumes),
            node_name: Some("node-a".into()),
            service_account_name: Some("default".into()),
            ..Default::default()
        }),
        status: Some(PodStatus {
            host_ip: Some("192.0.2.1".into()),
            ..Default::default()
        }),
    }
}

fn sources() -> Sources<'static> {
    let mut sources = Sources::offline("ns");
    sources.insert_config_map(config_map(
        "cfg",
        &[("MODE", "fast"), ("1bad", "x"), ("app.conf", "listen 80\n")],
    ));
    sources.insert_config_map(config_map("other", &[("MODE", "slow"), ("LEVEL", "3")]));
    sources.insert_secret(secret("creds", &[("PASSWORD", "hunter2")]));
    sources
}

const POD_IP: &str = "10.0.0.7";

async fn run(
    sources: &mut Sources<'_>,
    state_dir: &Path,
    pod: &Pod,
) -> Result<PreparedInputs, InputError> {
    let container = pod.spec.as_ref().unwrap().containers[0].clone();
    let ip: IpAddr = POD_IP.parse().unwrap();
    resolve(sources, state_dir, pod, ip, &container, 0).await
}

#[tokio::test]
async fn env_order_precedence_and_expansion() {
    let container = Container {
        name: "app".into(),
        env_from: Some(vec![
            EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "cfg".into(),
                    optional: None,
                }),
                prefix: None,
                secret_ref: None,
            },
            EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "other".into(),
                    optional: None,
                }),
                prefix: Some("O_".into()),
                secret_ref: None,
            },
            EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: "creds".into(),
                    optional: None,
                }),
                ..Default::default()
            },
            EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "absent".into(),
                    optional: Some(true),
                }),
                ..Default::default()
            },
        ]),
        env: Some(vec![
            value("MODE", "$(MODE)-override"),
            value("GREETING", "hello $(POD) $$(POD) $(UNKNOWN)"),
            from("POD", field("metadata.name")),
            value("LATER", "$(POD)"),
            from("IP", field("status.podIP")),
            from("IPS", field("status.podIPs")),
            from("HOST", field("status.hostIP")),
            from("NODE", field("spec.nodeName")),
            from("SA", field("spec.serviceAccountName")),
            from("APP", field("metadata.labels['app']")),
            from(
                "LEVEL",
                EnvVarSource {
                    config_map_key_ref: Some(ConfigMapKeySelector {
                        name: "other".into(),
                        key: "LEVEL".into(),
                        optional: None,
                    }),
                    ..Default::default()
                },
            ),
            from(
                "SKIPPED",
                EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: "creds".into(),
                        key: "none".into(),
                        optional: Some(true),
                    }),
                    ..Default::default()
                },
            ),
            value("EMPTY", ""),
        ]),
        ..Default::default()
    };
    let pod = pod(container, Vec::new());
    let dir = tempfile::tempdir().unwrap();
    let prepared = run(&mut sources(), dir.path(), &pod).await.unwrap();
    let env: Vec<(&str, &str)> = prepared
        .inputs
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        env,
        vec![
            // envFrom in order, keys sorted within a source; `env` overrides in place.
            ("1bad", "x"),
            ("MODE", "fast-override"),
            ("app.conf", "listen 80\n"),
            ("O_LEVEL", "3"),
            ("O_MODE", "slow"),
            ("PASSWORD", "hunter2"),
            // POD is not defined yet when GREETING is expanded.
            ("GREETING", "hello $(POD) $(POD) $(UNKNOWN)"),
            ("POD", "web-0"),
            ("LATER", "web-0"),
            ("IP", POD_IP),
            ("IPS", POD_IP),
            ("HOST", "192.0.2.1"),
            ("NODE", "node-a"),
            ("SA", "default"),
            ("APP", "web"),
            ("LEVEL", "3"),
            ("EMPTY", ""),
        ]
    );
    assert!(prepared.warnings.is_empty());
    assert!(prepared.inputs.log_path.ends_with("app/0.log"));
}

#[tokio::test]
async fn missing_references_have_upstream_messages() {
    let cases = [
        (
            EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: "x".into(),
                    key: "k".into(),
                    optional: None,
                }),
                ..Default::default()
            },
            "configmap \"x\" not found",
        ),
        (
            EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: "cfg".into(),
                    key: "k".into(),
                    optional: None,
                }),
                ..Default::default()
            },
            "couldn't find key k in ConfigMap ns/cfg",
        ),
        (
            EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: "nope".into(),
                    key: "k".into(),
                    optional: None,
                }),
                ..Default::default()
            },
            "secret \"nope\" not found",
        ),
        (
            EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: "creds".into(),
                    key: "k".into(),
                    optional: None,
                }),
                ..Default::default()
            },
            "couldn't find key k in Secret ns/creds",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (source, message) in cases {
        let container = Container {
            name: "app".into(),
            env: Some(vec![from("V", source)]),
            ..Default::default()
        };
        let err = run(&mut sources(), dir.path(), &pod(container, Vec::new()))
            .await
            .unwrap_err();
        assert!(matches!(err, InputError::Missing(_)), "{err:?}");
        assert_eq!(err.to_string(), message);
    }
}

#[tokio::test]
async fn envfrom_skips_keys_that_cannot_be_names() {
    let mut sources = Sources::offline("ns");
    sources.insert_secret(secret("s", &[("GOOD", "1"), ("a=b", "2")]));
    let container = Container {
        name: "app".into(),
        env_from: Some(vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: "s".into(),
                optional: None,
            }),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let prepared = run(&mut sources, dir.path(), &pod(container, Vec::new()))
        .await
        .unwrap();
    assert_eq!(
        prepared.inputs.env,
        vec![("GOOD".to_string(), "1".to_string())]
    );
    assert_eq!(
        prepared.warnings,
        vec![InputWarning {
            reason: "InvalidEnvironmentVariableNames",
            message: "Keys [a=b] from the EnvFrom secret ns/s were skipped since they are considered invalid environment variable names.".into(),
        }]
    );
}

fn volume(name: &str) -> Volume {
    Volume {
        name: name.into(),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn volumes_are_laid_out_and_mounted() {
    let volumes = vec![
        Volume {
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..volume("scratch")
        },
        Volume {
            config_map: Some(ConfigMapVolumeSource {
                name: "cfg".into(),
                items: Some(vec![KeyToPath {
                    key: "app.conf".into(),
                    path: "conf/app.conf".into(),
                    mode: Some(0o600),
                }]),
                ..Default::default()
            }),
            ..volume("config")
        },
        Volume {
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![DownwardAPIVolumeFile {
                    path: "labels".into(),
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.labels".into(),
                        api_version: None,
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..volume("info")
        },
    ];
    let container = Container {
        name: "app".into(),
        volume_mounts: Some(vec![
            mount("scratch", "/scratch"),
            VolumeMount {
                sub_path: Some("conf/app.conf".into()),
                ..mount("config", "/etc/app.conf")
            },
            mount("info", "/etc/podinfo"),
        ]),
        ..Default::default()
    };
    let pod = pod(container, volumes);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    let prepared = run(&mut sources(), state, &pod).await.unwrap();
    let mounts = &prepared.inputs.mounts;
    let base = state.join("pods/uid-1/volumes");
    assert_eq!(
        mounts[0].host_path,
        base.join("kubernetes.io~empty-dir/scratch")
    );
    assert!(!mounts[0].read_only);
    assert!(mounts[0].host_path.is_dir());
    // The subPath resolves through the user-visible symlink into `..data`.
    let conf = &mounts[1].host_path;
    assert!(
        conf.to_string_lossy()
            .contains("kubernetes.io~configmap/config/.."),
        "{conf:?}"
    );
    assert_eq!(std::fs::read_to_string(conf).unwrap(), "listen 80\n");
    assert!(mounts[1].read_only);
    let info = &mounts[2].host_path;
    assert_eq!(
        std::fs::read_to_string(info.join("labels")).unwrap(),
        "app=\"web\""
    );

    // Restarting a container keeps what the emptyDir holds.
    std::fs::write(mounts[0].host_path.join("state"), "kept").unwrap();
    run(&mut sources(), state, &pod).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(mounts[0].host_path.join("state")).unwrap(),
        "kept"
    );

    cleanup(state, "uid-1").unwrap();
    assert!(!state.join("pods/uid-1").exists());
}

#[tokio::test]
async fn volume_errors() {
    let dir = tempfile::tempdir().unwrap();
    let container = Container {
        name: "app".into(),
        ..Default::default()
    };
    let missing = Volume {
        config_map: Some(ConfigMapVolumeSource {
            name: "absent".into(),
            ..Default::default()
        }),
        ..volume("cfg")
    };
    let err = run(
        &mut sources(),
        dir.path(),
        &pod(container.clone(), vec![missing]),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "MountVolume.SetUp failed for volume \"cfg\" : configmap \"absent\" not found"
    );
    let optional = Volume {
        config_map: Some(ConfigMapVolumeSource {
            name: "absent".into(),
            optional: Some(true),
            ..Default::default()
        }),
        ..volume("cfg")
    };
    run(
        &mut sources(),
        dir.path(),
        &pod(container.clone(), vec![optional]),
    )
    .await
    .unwrap();
    let host_path = Volume {
        host_path: Some(HostPathVolumeSource {
            path: "/etc".into(),
            type_: None,
        }),
        ..volume("host")
    };
    let err = run(
        &mut sources(),
        dir.path(),
        &pod(container.clone(), vec![host_path]),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "volume \"host\": unsupported volume type hostPath"
    );
    let traversal = Volume {
        secret: Some(k8s_openapi::api::core::v1::SecretVolumeSource {
            secret_name: Some("creds".into()),
            items: Some(vec![KeyToPath {
                key: "PASSWORD".into(),
                path: "../../escape".into(),
                mode: None,
            }]),
            ..Default::default()
        }),
        ..volume("s")
    };
    assert!(
        run(&mut sources(), dir.path(), &pod(container, vec![traversal]))
            .await
            .is_err()
    );
}

#[test]
fn cleanup_except_removes_only_the_pods_not_listed() {
    let state = tempfile::tempdir().unwrap();
    assert!(cleanup_except(state.path(), &HashSet::new()).is_empty());
    for uid in ["live-pod", "deleted-pod", "other-deleted"] {
        let volume = state.path().join("pods").join(uid).join("volumes/x");
        std::fs::create_dir_all(&volume).unwrap();
        std::fs::write(volume.join("file"), "data").unwrap();
    }
    std::fs::write(state.path().join("pods/not-a-dir"), "").unwrap();
    let live: HashSet<String> = ["live-pod".to_string()].into_iter().collect();
    let cleaned = cleanup_except(state.path(), &live);
    assert_eq!(cleaned, ["deleted-pod", "other-deleted"]);
    assert!(state.path().join("pods/live-pod/volumes/x/file").exists());
    assert!(!state.path().join("pods/deleted-pod").exists());
    assert!(!state.path().join("pods/other-deleted").exists());
    assert!(state.path().join("pods/not-a-dir").exists());
    assert!(cleanup_except(state.path(), &live).is_empty());
}
