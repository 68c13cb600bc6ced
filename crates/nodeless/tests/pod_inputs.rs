//! End-to-end: what the agent resolves for a container before it starts
//! (`nodeless_agent::inputs`), against objects made through the real API server with
//! kubectl: env from config maps, secrets, fields and resources; configMap, secret,
//! downwardAPI, projected, emptyDir and claimed volumes on the host, refreshed in place;
//! image pull credentials. (Secrets are written with `data`: the API server does not fold
//! `stringData` into `data` yet.)

mod common;

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use common::{eventually, Cluster};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use nodeless_agent::inputs::{self, InputError};
use nodeless_agent::runtime::{ContainerInputs, RegistryAuth};

const LONG: Duration = Duration::from_secs(60);

const OBJECTS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: app-config}
data:
  MODE: fast
  app.conf: "listen 80"
  old: "goes away"
---
apiVersion: v1
kind: Secret
metadata: {name: app-secret}
data:
  PASSWORD: aHVudGVyMg==
---
apiVersion: v1
kind: Secret
metadata: {name: registry}
type: kubernetes.io/dockerconfigjson
data:
  .dockerconfigjson: eyJhdXRocyI6eyJodHRwczovL2luZGV4LmRvY2tlci5pby92MS8iOnsidXNlcm5hbWUiOiJhbGljZSIsInBhc3N3b3JkIjoicHcifSwiMTI3LjAuMC4xOjUwMDAiOnsiYXV0aCI6IlltOWlPbk5sWTNKbGRBPT0ifX19
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
"#;

fn pod_manifest(name: &str, config_map: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: web}}
spec:
  imagePullSecrets: [{{name: registry}}, {{name: not-there}}]
  containers:
  - name: app
    image: busybox
    resources:
      limits: {{cpu: 500m, memory: 128Mi}}
    envFrom:
    - configMapRef: {{name: {config_map}}}
      prefix: CFG_
    env:
    - name: POD
      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
    - name: IP
      valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}
    - name: GREETING
      value: "$(POD) at $(IP), $$(POD)"
    - name: PASSWORD
      valueFrom: {{secretKeyRef: {{name: app-secret, key: PASSWORD}}}}
    - name: MEMORY_MI
      valueFrom: {{resourceFieldRef: {{resource: limits.memory, divisor: 1Mi}}}}
    - name: CPU
      valueFrom: {{resourceFieldRef: {{resource: limits.cpu}}}}
    volumeMounts:
    - {{name: config, mountPath: /etc/app}}
    - {{name: secret, mountPath: /etc/secret}}
    - {{name: info, mountPath: /etc/podinfo}}
    - {{name: all, mountPath: /etc/all}}
    - {{name: scratch, mountPath: /scratch}}
    - {{name: data, mountPath: /data, subPathExpr: "$(POD)"}}
  volumes:
  - name: config
    configMap: {{name: {config_map}}}
  - name: secret
    secret: {{secretName: app-secret, defaultMode: 0400}}
  - name: info
    downwardAPI:
      items:
      - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
  - name: all
    projected:
      sources:
      - configMap: {{name: {config_map}, items: [{{key: MODE, path: mode}}]}}
      - secret: {{name: app-secret}}
      - downwardAPI: {{items: [{{path: name, fieldRef: {{fieldPath: metadata.name}}}}]}}
  - name: scratch
    emptyDir: {{}}
  - name: data
    persistentVolumeClaim: {{claimName: data}}
"#
    )
}

async fn prepare(
    client: &kube::Client,
    state: &Path,
    pod: &Pod,
) -> Result<ContainerInputs, InputError> {
    let container = pod.spec.as_ref().unwrap().containers[0].clone();
    let ip: IpAddr = "10.1.2.3".parse().unwrap();
    inputs::prepare(client, None, state, pod, ip, &container, 0).await
}

fn mount<'a>(inputs: &'a ContainerInputs, path: &str) -> &'a nodeless_agent::runtime::Mount {
    inputs
        .mounts
        .iter()
        .find(|m| m.container_path == path)
        .unwrap_or_else(|| panic!("no mount {path}: {:?}", inputs.mounts))
}

fn env<'a>(inputs: &'a ContainerInputs, name: &str) -> &'a str {
    inputs
        .env
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no env {name}: {:?}", inputs.env))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_come_from_the_api() {
    let c = Cluster::start();
    c.ok_stdin(&["apply", "-f", "-"], OBJECTS);
    eventually(&c, LONG, "claim bound", || {
        (c.get_json(&["pvc", "data"])["status"]["phase"] == "Bound").then_some(())
    });
    c.ok_stdin(&["apply", "-f", "-"], &pod_manifest("web", "app-config"));
    let client = c.kube_client().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pod = pods.get("web").await.unwrap();
    let state = tempfile::tempdir().unwrap();

    let got = prepare(&client, state.path(), &pod).await.unwrap();
    assert_eq!(env(&got, "CFG_MODE"), "fast");
    assert_eq!(env(&got, "CFG_app.conf"), "listen 80");
    assert_eq!(env(&got, "POD"), "web");
    assert_eq!(env(&got, "IP"), "10.1.2.3");
    assert_eq!(env(&got, "GREETING"), "web at 10.1.2.3, $(POD)");
    assert_eq!(env(&got, "PASSWORD"), "hunter2");
    assert_eq!(env(&got, "MEMORY_MI"), "128");
    assert_eq!(env(&got, "CPU"), "1");
    assert_eq!(
        got.pull_auth,
        vec![
            RegistryAuth {
                registry: "docker.io".into(),
                username: "alice".into(),
                password: "pw".into()
            },
            RegistryAuth {
                registry: "127.0.0.1:5000".into(),
                username: "bob".into(),
                password: "secret".into()
            },
        ]
    );

    let config = mount(&got, "/etc/app");
    assert!(config.read_only);
    let read = |dir: &Path, file: &str| std::fs::read_to_string(dir.join(file)).unwrap();
    assert_eq!(read(&config.host_path, "app.conf"), "listen 80");
    assert_eq!(
        read(&mount(&got, "/etc/secret").host_path, "PASSWORD"),
        "hunter2"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let secret_file = mount(&got, "/etc/secret").host_path.join("PASSWORD");
        let mode = std::fs::metadata(secret_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o400);
    }
    assert_eq!(
        read(&mount(&got, "/etc/podinfo").host_path, "labels"),
        "app=\"web\""
    );
    let all = &mount(&got, "/etc/all").host_path;
    assert_eq!(read(all, "mode"), "fast");
    assert_eq!(read(all, "PASSWORD"), "hunter2");
    assert_eq!(read(all, "name"), "web");
    assert!(!mount(&got, "/scratch").read_only);

    // The claim's folder is under state/volumes/<handle>, the subPath under it.
    let pv = c.get_json(&["pvc", "data"])["spec"]["volumeName"]
        .as_str()
        .unwrap()
        .to_string();
    let data = mount(&got, "/data");
    let claim_dir = state.path().join("volumes").join(&pv);
    assert_eq!(
        data.host_path,
        claim_dir.canonicalize().unwrap().join("web")
    );
    std::fs::write(data.host_path.join("kept"), "yes").unwrap();

    // A config map update reaches the volume on refresh; removed keys disappear.
    c.ok(&["patch", "configmap", "app-config", "--type=json", "-p",
        r#"[{"op":"replace","path":"/data/app.conf","value":"listen 8080"},{"op":"remove","path":"/data/old"}]"#]);
    assert!(config.host_path.join("old").exists());
    inputs::refresh(&client, state.path(), &pod).await.unwrap();
    assert_eq!(read(&config.host_path, "app.conf"), "listen 8080");
    assert!(std::fs::symlink_metadata(config.host_path.join("old")).is_err());

    // Labels changed on the pod reach its downwardAPI volume.
    c.ok(&["label", "pod", "web", "tier=front"]);
    let pod = pods.get("web").await.unwrap();
    inputs::refresh(&client, state.path(), &pod).await.unwrap();
    assert_eq!(
        read(&mount(&got, "/etc/podinfo").host_path, "labels"),
        "app=\"web\"\ntier=\"front\""
    );

    // Cleanup removes the pod's folder, never the claim's.
    let uid = pod.metadata.uid.clone().unwrap();
    inputs::cleanup(state.path(), &uid).unwrap();
    assert!(!state.path().join("pods").join(&uid).exists());
    assert_eq!(read(&claim_dir, "web/kept"), "yes");
    // The pod started again reuses the claim's content.
    let again = prepare(&client, state.path(), &pod).await.unwrap();
    assert_eq!(read(&mount(&again, "/data").host_path, "kept"), "yes");
    inputs::cleanup(state.path(), &uid).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_objects_are_reported_like_upstream() {
    let c = Cluster::start();
    c.ok_stdin(&["apply", "-f", "-"], OBJECTS);
    c.ok_stdin(
        &["apply", "-f", "-"],
        &pod_manifest("lost", "no-such-config"),
    );
    let client = c.kube_client().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pod = pods.get("lost").await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let err = prepare(&client, state.path(), &pod).await.unwrap_err();
    assert!(matches!(err, InputError::Missing(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "MountVolume.SetUp failed for volume \"config\" : configmap \"no-such-config\" not found"
    );

    // A claim that does not exist.
    let claimless =
        pod_manifest("claimless", "app-config").replace("claimName: data", "claimName: nothing");
    c.ok_stdin(&["apply", "-f", "-"], &claimless);
    let pod = pods.get("claimless").await.unwrap();
    let err = prepare(&client, state.path(), &pod).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "MountVolume.SetUp failed for volume \"data\" : persistentvolumeclaim \"nothing\" not found"
    );
}
