//! End-to-end: images from a registry that serves only HTTPS with a private CA, on the
//! supervised containerd. With `--registry-ca HOST=FILE` pods pull through a TLS mirror
//! (`--registry-mirror docker.io=https://…`) and straight from the registry; without it the
//! same pull fails on the certificate, with the reason in the pod's status.

mod common;

use std::time::Duration;

use common::registry::Registry;
use common::{eventually, Cluster};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(90);

fn pod(name: &str, image: &str) -> String {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "image": image,
                "command": ["sh", "-c", "echo pulled over TLS"],
                "resources": {"limits": {"cpu": "100m", "memory": "32Mi"}}
            }]
        }
    })
    .to_string()
}

fn pod_json(c: &Cluster, name: &str) -> Value {
    c.get_json(&["pod", name])
}

fn succeeds(c: &Cluster, name: &str) {
    let deadline = std::time::Instant::now() + LIMIT;
    let phase = loop {
        let p = pod_json(c, name);
        let phase = p["status"]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if matches!(phase.as_str(), "Succeeded" | "Failed") {
            break phase;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pod {name} did not finish: {}\nevents:\n{}",
            p["status"],
            c.ok(&[
                "get",
                "events",
                "--field-selector",
                &format!("involvedObject.name={name}")
            ])
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(phase, "Succeeded", "{}", pod_json(c, name));
    assert_eq!(c.ok(&["logs", name]).trim(), "pulled over TLS");
}

#[test]
fn pods_pull_from_a_tls_registry_with_its_ca_and_not_without() {
    let registry = Registry::start_tls();
    registry.push_busybox("library/busybox", "latest");
    let host = registry.host();
    let ca = registry.ca_file().expect("a TLS registry has a CA file");
    let direct_image = format!("{host}/library/busybox:latest");

    let mirror = format!("docker.io=https://{host}");
    let ca_flag = format!("{host}={}", ca.display());
    let with_ca = Cluster::start_containerd(
        None,
        &["--registry-mirror", &mirror, "--registry-ca", &ca_flag],
    );
    // A short name through the TLS mirror, and the registry's own name.
    with_ca.ok_stdin(&["apply", "-f", "-"], &pod("mirrored", "busybox"));
    with_ca.ok_stdin(&["apply", "-f", "-"], &pod("direct", &direct_image));
    succeeds(&with_ca, "mirrored");
    succeeds(&with_ca, "direct");
    drop(with_ca);

    // The same registry, asked for over TLS, without its CA: the pull fails on the
    // certificate, and says so. (Without any flag containerd would try a loopback registry
    // over plain HTTP.)
    let tls_without_ca = format!("{host}=https://{host}");
    let without_ca = Cluster::start_containerd(None, &["--registry-mirror", &tls_without_ca]);
    without_ca.ok_stdin(&["apply", "-f", "-"], &pod("untrusted", &direct_image));
    let waiting = eventually(&without_ca, LIMIT, "the untrusted pull to fail", || {
        let p = pod_json(&without_ca, "untrusted");
        let w = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        (w["reason"] == "ErrImagePull" || w["reason"] == "ImagePullBackOff").then_some(w)
    });
    let message = waiting["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("x509") || message.contains("certificate"),
        "the reason names the certificate: {waiting}"
    );
}

#[test]
fn a_bad_registry_ca_flag_stops_the_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nodeless"))
        .args(["up", "--runtime", "containerd", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--registry-ca", "127.0.0.1:5443=/no/such/ca.pem"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--registry-ca 127.0.0.1:5443=/no/such/ca.pem"),
        "{stderr}"
    );
    assert!(stderr.contains("cannot open /no/such/ca.pem"), "{stderr}");
}
