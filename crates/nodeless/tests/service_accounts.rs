//! End-to-end: service accounts and their tokens. `kubectl create token` (1.27 and 1.33)
//! issues tokens that authenticate as the service account until they are tampered with, meant
//! for someone else, or outlive what they name; every namespace gets its `default` service
//! account and `kube-root-ca.crt`; pods get the `kube-api-access` volume; and on containerd a
//! pod finds its token, CA and namespace at the in-cluster path, with a token the agent asked
//! for that authenticates against the API.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::registry::Registry;
use common::{eventually, kubectl_versions, Cluster};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);
const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A kubeconfig with the cluster's address and CA and the bearer token only (no client
/// certificate, which would authenticate on its own).
fn token_kubeconfig(c: &Cluster, token: &str) -> PathBuf {
    let server = c.ok(&[
        "config",
        "view",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    let ca = c.dir.path().join("pki/ca.crt");
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = c.dir.path().join(format!("token-{n}.kubeconfig"));
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n",
        ca.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// kubectl with only `token` as credentials.
fn with_token(c: &Cluster, token: &str, args: &[&str]) -> Output {
    let kubeconfig = token_kubeconfig(c, token);
    let out = Command::new(&c.kubectl)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(args)
        .env("HOME", c.dir.path())
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run kubectl");
    let _ = std::fs::remove_file(kubeconfig);
    out
}

fn authenticates(c: &Cluster, token: &str) -> bool {
    with_token(c, token, &["get", "pods"]).status.success()
}

fn unauthorized(c: &Cluster, token: &str) -> bool {
    let out = with_token(c, token, &["get", "pods"]);
    !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Unauthorized")
}

fn create_token(c: &Cluster, args: &[&str]) -> String {
    let mut full = vec!["create", "token"];
    full.extend_from_slice(args);
    c.ok(&full).trim().to_string()
}

fn uid(c: &Cluster, args: &[&str]) -> String {
    c.get_json(args)["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn tokens_authenticate_until_tampered_or_revoked() {
    let c = Cluster::start();
    eventually(&c, LIMIT, "the default service account", || {
        c.kubectl(&["get", "sa", "default"])
            .status
            .success()
            .then_some(())
    });
    for kubectl in kubectl_versions() {
        let out = c.kubectl_with(&kubectl, &["create", "token", "default"], None);
        assert!(
            out.status.success(),
            "{kubectl:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(token.split('.').count(), 3, "{token}");
        assert!(authenticates(&c, &token), "{kubectl:?}");
    }
    let token = create_token(&c, &["default"]);
    // One changed character of the signature, or of the claims.
    let mut tampered = token.clone();
    let last = if tampered.ends_with('A') { "B" } else { "A" };
    tampered.replace_range(tampered.len() - 1.., last);
    assert!(unauthorized(&c, &tampered));
    let parts: Vec<&str> = token.split('.').collect();
    let claims = format!("{}.{}x.{}", parts[0], parts[1], parts[2]);
    assert!(unauthorized(&c, &claims));
    // Meant for someone else.
    let vault = create_token(&c, &["default", "--audience", "vault"]);
    assert!(unauthorized(&c, &vault));
    let both = create_token(
        &c,
        &[
            "default",
            "--audience",
            "vault",
            "--audience",
            "https://kubernetes.default.svc.cluster.local",
        ],
    );
    assert!(authenticates(&c, &both));
    // Lifetimes below ten minutes and missing accounts are refused as upstream.
    let short = c.fails(&["create", "token", "default", "--duration", "5m"]);
    assert!(
        short.contains("may not specify a duration less than 10 minutes"),
        "{short}"
    );
    let missing = c.fails(&["create", "token", "nobody"]);
    assert!(
        missing.contains("serviceaccounts \"nobody\" not found"),
        "{missing}"
    );
    assert!(c
        .raw("/api/v1")
        .to_string()
        .contains("serviceaccounts/token"));
    // Issuer discovery: the issuer and the key that verifies its tokens.
    let discovery = c.raw("/.well-known/openid-configuration");
    assert_eq!(
        discovery["issuer"],
        "https://kubernetes.default.svc.cluster.local"
    );
    let keys = c.raw("/openid/v1/jwks");
    assert_eq!(keys["keys"][0]["alg"], "ES256");

    // A token of a deleted (and recreated) account, or of a deleted bound pod, is revoked.
    c.ok(&["create", "serviceaccount", "robot"]);
    let robot = create_token(&c, &["robot", "--duration", "20m"]);
    assert!(authenticates(&c, &robot));
    c.ok(&["delete", "serviceaccount", "robot"]);
    c.ok(&["create", "serviceaccount", "robot"]);
    assert!(unauthorized(&c, &robot));
    c.ok(&["run", "bound", "--image=busybox", "--", "sleep", "3600"]);
    let bound = create_token(
        &c,
        &[
            "default",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "bound",
        ],
    );
    assert!(authenticates(&c, &bound));
    let wrong_account = c.fails(&[
        "create",
        "token",
        "robot",
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        "bound",
    ]);
    assert!(
        wrong_account.contains("cannot bind token"),
        "{wrong_account}"
    );
    c.ok(&["delete", "pod", "bound", "--wait=true"]);
    eventually(&c, LIMIT, "the bound token to be revoked", || {
        unauthorized(&c, &bound).then_some(())
    });
}

#[test]
fn namespaces_get_an_account_and_the_ca_and_pods_the_token_volume() {
    let c = Cluster::start();
    c.ok(&["create", "namespace", "team"]);
    // Right after the namespace exists, a pod waits briefly for its default account.
    c.ok(&[
        "run",
        "-n",
        "team",
        "first",
        "--image=busybox",
        "--",
        "sleep",
        "3600",
    ]);
    let first = c.get_json(&["pod", "-n", "team", "first"]);
    assert_eq!(first["spec"]["serviceAccountName"], "default");

    let ca = std::fs::read_to_string(c.dir.path().join("pki/ca.crt")).unwrap();
    let cm = eventually(&c, LIMIT, "kube-root-ca.crt", || {
        let out = c.kubectl(&["get", "cm", "-n", "team", "kube-root-ca.crt", "-o", "json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
    });
    assert_eq!(cm["data"]["ca.crt"], ca.as_str());
    // Deleted or changed, both come back.
    let old_uid = uid(&c, &["sa", "-n", "team", "default"]);
    c.ok(&["delete", "sa", "-n", "team", "default"]);
    eventually(&c, LIMIT, "the default account to be recreated", || {
        let out = c.kubectl(&[
            "get",
            "sa",
            "-n",
            "team",
            "default",
            "-o",
            "jsonpath={.metadata.uid}",
        ]);
        let new_uid = String::from_utf8_lossy(&out.stdout).to_string();
        (out.status.success() && !new_uid.is_empty() && new_uid != old_uid).then_some(())
    });
    c.ok(&[
        "patch",
        "cm",
        "-n",
        "team",
        "kube-root-ca.crt",
        "--type=merge",
        "-p",
        r#"{"data":{"ca.crt":"nope"}}"#,
    ]);
    eventually(&c, LIMIT, "kube-root-ca.crt to be put back", || {
        let out = c.kubectl(&["get", "cm", "-n", "team", "kube-root-ca.crt", "-o", "json"]);
        let cm: Value = serde_json::from_slice(&out.stdout).ok()?;
        (cm["data"]["ca.crt"] == ca.as_str()).then_some(())
    });

    // The token volume, its mount, and the cases that skip or refuse it.
    let volumes = first["spec"]["volumes"].as_array().unwrap();
    let volume = volumes
        .iter()
        .find(|v| {
            v["name"]
                .as_str()
                .unwrap_or("")
                .starts_with("kube-api-access-")
        })
        .unwrap_or_else(|| panic!("no kube-api-access volume: {volumes:?}"));
    let sources = volume["projected"]["sources"].as_array().unwrap();
    assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3607);
    assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
    let mount = &first["spec"]["containers"][0]["volumeMounts"][0];
    assert_eq!(mount["mountPath"], MOUNT_PATH);
    assert_eq!(mount["name"], volume["name"]);
    assert_eq!(mount["readOnly"], true);

    c.ok(&[
        "run",
        "-n",
        "team",
        "quiet",
        "--image=busybox",
        r#"--overrides={"spec":{"automountServiceAccountToken":false}}"#,
    ]);
    let quiet = c.get_json(&["pod", "-n", "team", "quiet"]);
    assert!(quiet["spec"].get("volumes").is_none(), "{quiet}");
    let refused = c.fails(&[
        "run",
        "-n",
        "team",
        "lost",
        "--image=busybox",
        r#"--overrides={"spec":{"serviceAccountName":"ghost"}}"#,
    ]);
    assert!(
        refused.contains(
            "pods \"lost\" is forbidden: error looking up service account team/ghost: serviceaccount \"ghost\" not found"
        ),
        "{refused}"
    );
}

/// `kubectl exec` in a default-namespace pod: stdout when the command succeeded.
fn exec(c: &Cluster, pod: &str, command: &[&str]) -> Option<String> {
    let mut args = vec!["exec", pod, "--"];
    args.extend_from_slice(command);
    let out = c.kubectl(&args);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_real_pod_talks_to_the_api_with_its_projected_token() {
    let registry = Registry::start();
    registry.push_busybox("library/busybox", "latest");
    let c = Cluster::start_containerd(Some(&registry.host()), &[]);
    eventually(&c, LIMIT, "the default service account", || {
        c.kubectl(&["get", "sa", "default"])
            .status
            .success()
            .then_some(())
    });
    c.ok(&["run", "api", "--image=busybox", "--", "sleep", "3600"]);
    eventually(&c, Duration::from_secs(120), "the pod to run", || {
        let out = c.kubectl(&["get", "pod", "api", "-o", "jsonpath={.status.phase}"]);
        (String::from_utf8_lossy(&out.stdout) == "Running").then_some(())
    });
    let token = exec(&c, "api", &["cat", &format!("{MOUNT_PATH}/token")]).expect("token file");
    let ca = exec(&c, "api", &["cat", &format!("{MOUNT_PATH}/ca.crt")]).expect("ca.crt file");
    let namespace =
        exec(&c, "api", &["cat", &format!("{MOUNT_PATH}/namespace")]).expect("namespace file");
    assert_eq!(namespace, "default");
    assert_eq!(
        ca,
        std::fs::read_to_string(c.dir.path().join("pki/ca.crt")).unwrap()
    );
    let env = exec(&c, "api", &["env"]).unwrap_or_default();
    assert!(env.contains("KUBERNETES_SERVICE_HOST="), "{env}");
    // The mount is read-only.
    assert!(exec(
        &c,
        "api",
        &["sh", "-c", &format!("echo x > {MOUNT_PATH}/token")]
    )
    .is_none());
    // The token the agent asked for is the pod's service account's, and bound to the pod.
    let token = token.trim();
    let out = with_token(&c, token, &["get", "pod", "api", "-o", "name"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pod/api");
    c.ok(&["delete", "pod", "api", "--wait=true"]);
    eventually(&c, LIMIT, "the pod's token to be revoked", || {
        unauthorized(&c, token).then_some(())
    });
}
