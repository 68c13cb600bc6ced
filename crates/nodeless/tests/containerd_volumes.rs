//! End-to-end: what a real container sees of its inputs on the supervised containerd, checked
//! with `kubectl exec` as a user would: env from config maps, secrets and the downward API,
//! `$(VAR)` in args; configMap and secret volumes with items and modes, refreshed while the pod
//! runs; emptyDir shared between containers, in memory with a size limit; subPath; the
//! security context (user, group, fsGroup, read-only root, dropped capabilities); image pull
//! secrets against a registry that requires a login.

mod common;

use std::time::Duration;

use common::registry::Registry;
use common::{eventually, Cluster};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

/// A registry with `busybox` and a containerd cluster that pulls `docker.io` through it.
fn cluster() -> (Registry, Cluster) {
    let registry = Registry::start();
    registry.push_busybox("library/busybox", "latest");
    let cluster = Cluster::start_containerd(Some(&registry.host()), &[]);
    (registry, cluster)
}

fn pod_json(c: &Cluster, name: &str) -> Value {
    c.get_json(&["pod", name])
}

/// Waits until every container of pod `name` runs, and returns the pod.
fn wait_running(c: &Cluster, name: &str) -> Value {
    eventually(c, LIMIT, &format!("pod {name} to run"), || {
        let p = pod_json(c, name);
        let statuses = p["status"]["containerStatuses"].as_array()?.clone();
        (p["status"]["phase"] == "Running"
            && !statuses.is_empty()
            && statuses.iter().all(|s| s["state"]["running"].is_object()))
        .then_some(p)
    })
}

/// `kubectl exec POD -c CONTAINER -- sh -c SCRIPT`: its exit status, stdout and stderr.
fn exec(c: &Cluster, pod: &str, container: &str, script: &str) -> (bool, String, String) {
    let out = c.kubectl(&["exec", pod, "-c", container, "--", "sh", "-c", script]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `exec` that must succeed; returns stdout.
fn exec_ok(c: &Cluster, pod: &str, container: &str, script: &str) -> String {
    let (ok, out, err) = exec(c, pod, container, script);
    assert!(
        ok,
        "exec {script:?} in {pod}/{container} failed: {err}\n{out}"
    );
    out
}

const INPUTS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: app-config}
data:
  MODE: fast
  GREETING: hello
  app.conf: "listen 80"
  other: "not projected"
---
apiVersion: v1
kind: Pod
metadata:
  name: inputs
  labels: {app: inputs}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: [sh, -c, 'echo "$1" > /tmp/arg; exec sleep 3600', sh]
    args: ["$(POD_NAME)-$(MODE)-$(UNDEFINED)"]
    resources: {limits: {cpu: 250m, memory: 64Mi}}
    envFrom:
    - prefix: CFG_
      configMapRef: {name: app-config}
    env:
    - name: MODE
      valueFrom: {configMapKeyRef: {name: app-config, key: MODE}}
    - name: PASSWORD
      valueFrom: {secretKeyRef: {name: app-secret, key: PASSWORD}}
    - name: POD_IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: MEMORY_LIMIT
      valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}
    - name: COMPOSED
      value: "$(MODE)/$(POD_NAME)"
    volumeMounts:
    - {name: config, mountPath: /etc/config}
    - {name: config, mountPath: /etc/app.conf, subPath: conf/app.conf}
    - {name: secret, mountPath: /etc/secret}
    - {name: scratch, mountPath: /scratch/a, subPath: a}
  volumes:
  - name: config
    configMap:
      name: app-config
      items:
      - {key: app.conf, path: conf/app.conf, mode: 0400}
      - {key: MODE, path: mode}
  - name: secret
    secret: {secretName: app-secret, defaultMode: 0440}
  - name: scratch
    emptyDir: {}
"#;

#[test]
fn env_volumes_and_their_refresh_reach_the_container() {
    let (_registry, c) = cluster();
    c.ok(&[
        "create",
        "secret",
        "generic",
        "app-secret",
        "--from-literal=PASSWORD=hunter2",
    ]);
    c.ok_stdin(&["apply", "-f", "-"], INPUTS);
    let p = wait_running(&c, "inputs");
    let ip = p["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!ip.is_empty(), "{p}");

    let env = exec_ok(&c, "inputs", "main", "env");
    for expected in [
        "MODE=fast".to_string(),
        "PASSWORD=hunter2".to_string(),
        "CFG_GREETING=hello".to_string(),
        "CFG_MODE=fast".to_string(),
        format!("POD_IP={ip}"),
        "POD_NAME=inputs".to_string(),
        "MEMORY_LIMIT=64".to_string(),
        "COMPOSED=fast/inputs".to_string(),
    ] {
        assert!(
            env.lines().any(|l| l == expected),
            "{expected} missing in:\n{env}"
        );
    }
    // `$(VAR)` in args is expanded; an undefined reference stays as written.
    let arg = exec_ok(&c, "inputs", "main", "cat /tmp/arg");
    assert_eq!(arg.trim(), "inputs-fast-$(UNDEFINED)");

    // Items with their paths and modes; only the listed keys are projected.
    let listing = exec_ok(
        &c,
        "inputs",
        "main",
        "cat /etc/config/conf/app.conf; echo; cat /etc/config/mode; echo; \
         stat -L -c %a /etc/config/conf/app.conf /etc/config/mode /etc/secret/PASSWORD; \
         ls /etc/config; cat /etc/secret/PASSWORD; echo; cat /etc/app.conf",
    );
    assert_eq!(
        listing,
        "listen 80\nfast\n400\n644\n440\nconf\nmode\nhunter2\nlisten 80"
    );
    // subPath of an emptyDir: a directory of the volume.
    exec_ok(&c, "inputs", "main", "echo sub > /scratch/a/file");

    // An update of the ConfigMap reaches the mounted file of the running pod (not the
    // subPath mount, as upstream).
    c.ok(&[
        "patch",
        "configmap",
        "app-config",
        "--type=merge",
        "-p",
        r#"{"data":{"MODE":"slow"}}"#,
    ]);
    eventually(
        &c,
        Duration::from_secs(30),
        "the mounted file to change",
        || {
            let (ok, out, _) = exec(&c, "inputs", "main", "cat /etc/config/mode");
            (ok && out == "slow").then_some(())
        },
    );
    let env = exec_ok(&c, "inputs", "main", "echo $MODE");
    assert_eq!(env.trim(), "fast", "env is fixed at the container's start");
}

const SHARED: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: shared}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: writer
    image: busybox
    command: [sh, -c, 'echo from-writer > /shared/message; exec sleep 3600']
    resources: {limits: {cpu: 250m, memory: 64Mi}}
    volumeMounts:
    - {name: shared, mountPath: /shared}
    - {name: memory, mountPath: /mem}
  - name: reader
    image: busybox
    command: [sleep, "3600"]
    resources: {limits: {cpu: 250m, memory: 64Mi}}
    volumeMounts:
    - {name: shared, mountPath: /data}
  volumes:
  - name: shared
    emptyDir: {}
  - name: memory
    emptyDir: {medium: Memory, sizeLimit: 16Mi}
"#;

#[test]
fn empty_dirs_are_shared_and_memory_ones_are_sized_tmpfs() {
    let (_registry, c) = cluster();
    c.ok_stdin(&["apply", "-f", "-"], SHARED);
    wait_running(&c, "shared");
    eventually(&c, LIMIT, "the reader to see the writer's file", || {
        let (ok, out, _) = exec(&c, "shared", "reader", "cat /data/message");
        (ok && out == "from-writer\n").then_some(())
    });
    exec_ok(&c, "shared", "reader", "echo back > /data/reply");
    let reply = exec_ok(&c, "shared", "writer", "cat /shared/reply");
    assert_eq!(reply, "back\n");

    let mounts = exec_ok(&c, "shared", "writer", "grep ' /mem ' /proc/mounts");
    assert!(mounts.starts_with("tmpfs /mem tmpfs "), "{mounts}");
    assert!(mounts.contains("size=16384k"), "{mounts}");
    let df = exec_ok(&c, "shared", "writer", "df -k /mem | tail -1");
    let size: Vec<&str> = df.split_whitespace().collect();
    assert_eq!(size.get(1), Some(&"16384"), "{df}");
    let (ok, _, _) = exec(
        &c,
        "shared",
        "writer",
        "dd if=/dev/zero of=/mem/big bs=1M count=20",
    );
    assert!(!ok, "writing 20 MiB into a 16 MiB tmpfs succeeded");
}

const SECURE: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: secure}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {runAsUser: 65534, runAsGroup: 65534, fsGroup: 2000}
  containers:
  - name: nobody
    image: busybox
    command: [sleep, "3600"]
    resources: {limits: {cpu: 250m, memory: 64Mi}}
    securityContext: {readOnlyRootFilesystem: true}
    volumeMounts:
    - {name: data, mountPath: /data}
  - name: root
    image: busybox
    command: [sh, -c, 'touch /tmp/file; exec sleep 3600']
    resources: {limits: {cpu: 250m, memory: 64Mi}}
    securityContext:
      runAsUser: 0
      runAsGroup: 0
      capabilities: {drop: [ALL]}
  volumes:
  - name: data
    emptyDir: {}
"#;

#[test]
fn the_security_context_is_applied() {
    let (_registry, c) = cluster();
    c.ok_stdin(&["apply", "-f", "-"], SECURE);
    wait_running(&c, "secure");

    let ids = exec_ok(&c, "secure", "nobody", "id -u; id -g; id -G");
    let lines: Vec<&str> = ids.lines().collect();
    assert_eq!(lines[0], "65534", "{ids}");
    assert_eq!(lines[1], "65534", "{ids}");
    assert!(
        lines[2].split_whitespace().any(|g| g == "2000"),
        "fsGroup is a supplementary group: {ids}"
    );
    // fsGroup owns the volume, and the group can write to it.
    let owner = exec_ok(
        &c,
        "secure",
        "nobody",
        "stat -c %g /data; touch /data/mine && echo ok",
    );
    assert_eq!(owner, "2000\nok\n");
    // The root filesystem is read-only.
    let (ok, _, err) = exec(&c, "secure", "nobody", "touch /written");
    assert!(!ok, "writing / succeeded");
    assert!(err.contains("Read-only file system"), "{err}");

    // Root without capabilities cannot chown or read what it does not own.
    let root = exec_ok(&c, "secure", "root", "id -u");
    assert_eq!(root.trim(), "0");
    let (ok, _, err) = exec(&c, "secure", "root", "chown 1:1 /tmp/file");
    assert!(!ok, "chown without CAP_CHOWN succeeded");
    assert!(err.contains("Operation not permitted"), "{err}");
    let caps = exec_ok(&c, "secure", "root", "grep CapEff /proc/self/status");
    assert_eq!(
        caps.split_whitespace().nth(1),
        Some("0000000000000000"),
        "{caps}"
    );
}

/// A registry that wants a login (alice/s3cret) holding `team/app:v1`, its image reference,
/// and a cluster that talks plain HTTP to it (no mirror for `docker.io`).
fn private_registry() -> (Registry, String, Cluster) {
    let registry = Registry::start_with_auth("alice", "s3cret");
    let image = registry.push_busybox("team/app", "v1");
    let host = registry.host();
    let mirror = format!("{host}=http://{host}");
    let c = Cluster::start_containerd(None, &["--registry-mirror", &mirror]);
    (registry, image, c)
}

/// A pod running `image`, with the pull secret `regcred` when `secret`.
fn private_pod(name: &str, image: &str, secret: bool) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  {secrets}
  containers:
  - name: main
    image: {image}
    command: [sleep, "3600"]
    resources: {{limits: {{cpu: 250m, memory: 64Mi}}}}
"#,
        secrets = if secret {
            "imagePullSecrets: [{name: regcred}]"
        } else {
            ""
        }
    )
}

#[test]
fn a_pull_without_credentials_reports_the_registrys_401() {
    let (_registry, image, c) = private_registry();
    c.ok_stdin(
        &["apply", "-f", "-"],
        &private_pod("anonymous", &image, false),
    );
    let waiting = eventually(&c, LIMIT, "the anonymous pull to fail", || {
        let p = pod_json(&c, "anonymous");
        let w = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        (w["reason"] == "ErrImagePull" || w["reason"] == "ImagePullBackOff").then_some(w)
    });
    assert!(
        waiting["message"]
            .as_str()
            .unwrap_or_default()
            .contains("team/app"),
        "{waiting}"
    );
    let events = eventually(&c, LIMIT, "a Failed event with the 401", || {
        let e = c.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=anonymous,reason=Failed",
            "-o",
            "jsonpath={.items[*].message}",
        ]);
        e.contains("401").then_some(e)
    });
    assert!(events.contains(&image), "{events}");
}

#[test]
fn image_pull_secrets_log_in_to_a_private_registry() {
    let (registry, image, c) = private_registry();
    let host = registry.host();
    c.ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server={host}"),
        "--docker-username=alice",
        "--docker-password=s3cret",
    ]);
    c.ok_stdin(&["apply", "-f", "-"], &private_pod("private", &image, true));
    let p = wait_running(&c, "private");
    let image_id = p["status"]["containerStatuses"][0]["imageID"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(image_id.contains("sha256:"), "{p}");
    let out = exec_ok(&c, "private", "main", "echo pulled with a login");
    assert_eq!(out, "pulled with a login\n");
}
