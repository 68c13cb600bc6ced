//! Tests of the image fixtures themselves (tests/common/registry.rs): a loopback registry, the
//! busybox image and its configs, auth.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::registry::{self, ImageConfig, Registry, DEFAULT_PATH};
use serde_json::Value;

/// `skopeo inspect` of `reference` with `extra` flags (e.g. `--config`, `--creds=u:p`).
fn skopeo_inspect(reference: &str, extra: &[&str]) -> Output {
    let no_auth = tempfile::tempdir().unwrap();
    Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .args(extra)
        .arg(format!("docker://{reference}"))
        .env("REGISTRY_AUTH_FILE", no_auth.path().join("auth.json"))
        .output()
        .unwrap()
}

/// The image config (`.config` of the config blob) of `reference`.
fn image_config(reference: &str, extra: &[&str]) -> Value {
    let mut args = vec!["--config"];
    args.extend_from_slice(extra);
    let out = skopeo_inspect(reference, &args);
    assert!(
        out.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let blob: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(blob["os"], "linux");
    assert_eq!(blob["architecture"], "amd64");
    blob["config"].clone()
}

#[test]
fn pushed_busybox_has_cmd_sh_and_path() {
    let registry = Registry::start();
    assert!(registry.host().starts_with("127.0.0.1:"));
    assert_eq!(registry.get_status("/v2/", None), 200);

    let reference = registry.push_busybox("library/busybox", "1.0");
    assert_eq!(
        reference,
        format!("{}/library/busybox:1.0", registry.host())
    );

    let config = image_config(&reference, &[]);
    assert_eq!(config["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(config["Env"], serde_json::json!([DEFAULT_PATH]));
    assert!(config.get("Entrypoint").is_none_or(Value::is_null));

    let out = skopeo_inspect(&reference, &[]);
    let manifest: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(manifest["Layers"].as_array().unwrap().len(), 1);
    assert_eq!(manifest["RepoTags"], serde_json::json!(["1.0"]));
    // The registry serves the manifest under the tag.
    assert_eq!(
        registry.get_status("/v2/library/busybox/manifests/1.0", None),
        200
    );
    assert_eq!(
        registry.get_status("/v2/library/busybox/manifests/2.0", None),
        404
    );
}

#[test]
fn configured_images_carry_their_config_and_leave_the_base_alone() {
    let registry = Registry::start();
    let httpd = ImageConfig {
        entrypoint: Some(vec!["httpd".into(), "-f".into()]),
        cmd: Some(vec!["-p".into(), "8080".into()]),
        env: vec!["GREETING=hello world".into()],
        user: Some("65534:65534".into()),
        working_dir: Some("/tmp".into()),
        host_programs: Vec::new(),
    };
    let web = registry.push_busybox_with("web", "v1", httpd.clone());
    let config = image_config(&web, &[]);
    assert_eq!(config["Entrypoint"], serde_json::json!(["httpd", "-f"]));
    assert_eq!(config["Cmd"], serde_json::json!(["-p", "8080"]));
    assert_eq!(
        config["Env"],
        serde_json::json!([DEFAULT_PATH, "GREETING=hello world"])
    );
    assert_eq!(config["User"], "65534:65534");
    assert_eq!(config["WorkingDir"], "/tmp");

    // An explicit PATH replaces the default one; no cmd means none.
    let own_path = ImageConfig {
        env: vec!["PATH=/bin".into()],
        ..Default::default()
    };
    let bare = registry.push_busybox_with("bare", "v1", own_path);
    let config = image_config(&bare, &[]);
    assert_eq!(config["Env"], serde_json::json!(["PATH=/bin"]));
    assert!(config.get("Cmd").is_none_or(Value::is_null));

    // The same config again reuses its tag in the layout; the base image is unchanged.
    let again = registry.push_busybox_with("web", "v2", httpd);
    assert_eq!(
        image_config(&again, &[])["Entrypoint"],
        serde_json::json!(["httpd", "-f"])
    );
    let plain = registry.push_busybox("plain", "latest");
    assert_eq!(image_config(&plain, &[])["Cmd"], serde_json::json!(["sh"]));
}

#[test]
fn the_layout_holds_a_working_busybox_root_filesystem() {
    let layout = registry::oci_layout_dir();
    assert!(layout.join("oci-layout").is_file());
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let tags: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .collect();
    assert!(tags.contains(&registry::BASE_TAG), "tags: {tags:?}");

    let bundle = tempfile::tempdir().unwrap();
    let unpacked = bundle.path().join("b");
    let out = Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:{}", layout.display(), registry::BASE_TAG))
        .arg(&unpacked)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rootfs = unpacked.join("rootfs");
    let mode = |p: &str| {
        std::fs::symlink_metadata(rootfs.join(p))
            .unwrap()
            .permissions()
            .mode()
    };
    assert_eq!(mode("tmp") & 0o7777, 0o1777);
    assert_eq!(
        std::fs::read_link(rootfs.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert!(rootfs.join("bin/httpd").exists());
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.starts_with("root:x:0:0:"), "{passwd}");
    assert!(passwd.contains("nobody:x:65534:65534:"), "{passwd}");
    let group = std::fs::read_to_string(rootfs.join("etc/group")).unwrap();
    assert!(group.contains("nobody:x:65534:"), "{group}");

    // The binary is the static one: it runs with nothing else from the image.
    let out = Command::new(rootfs.join("bin/sh"))
        .args(["-c", "echo from-the-image"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-the-image\n");
    let file = Command::new("file")
        .arg(rootfs.join("bin/busybox"))
        .output();
    if let Ok(file) = file {
        let desc = String::from_utf8_lossy(&file.stdout);
        assert!(!desc.contains("dynamically linked"), "{desc}");
    }
}

#[test]
fn a_push_is_fast_once_the_layout_exists() {
    let registry = Registry::start();
    let started = Instant::now();
    registry.push_busybox("warm", "up");
    eprintln!(
        "first push (includes the one-time layout build): {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    registry.push_busybox("fresh", "v1");
    let fresh = started.elapsed();
    let started = Instant::now();
    registry.push_busybox("fresh", "v2");
    let same_repo = started.elapsed();
    eprintln!("push to a new repository: {fresh:?}; again to the same one: {same_repo:?}");
    // Generous: this catches a rebuild of the image on every push, not slowness of a shared CPU.
    assert!(fresh < Duration::from_secs(10), "{fresh:?}");
    assert!(same_repo < Duration::from_secs(10), "{same_repo:?}");
}

#[test]
fn a_registry_with_auth_refuses_pulls_without_credentials() {
    let registry = Registry::start_with_auth("alice", "s3cret pass");
    assert_eq!(registry.credentials(), Some(("alice", "s3cret pass")));
    let htpasswd = std::fs::read_to_string(registry.dir.path().join("htpasswd")).unwrap();
    assert!(
        htpasswd.starts_with("alice:$2y$"),
        "bcrypt entry: {htpasswd}"
    );

    assert_eq!(registry.get_status("/v2/", None), 401);
    assert_eq!(registry.get_status("/v2/", Some(("alice", "wrong"))), 401);
    assert_eq!(
        registry.get_status("/v2/", Some(("alice", "s3cret pass"))),
        200
    );

    let reference = registry.push_busybox("private/busybox", "1.0");
    assert_eq!(
        registry.get_status("/v2/private/busybox/manifests/1.0", None),
        401
    );

    let refused = skopeo_inspect(&reference, &["--no-creds"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("unauthorized") || stderr.contains("401"),
        "{stderr}"
    );

    let config = image_config(&reference, &["--creds=alice:s3cret pass"]);
    assert_eq!(config["Cmd"], serde_json::json!(["sh"]));
}

#[test]
fn dropping_a_registry_kills_it() {
    let registry = Registry::start();
    let pid = registry.pid();
    let host = registry.host();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    drop(registry);
    // Reaped by the drop, so the pid is gone (or reused by some other process: not a zombie
    // of ours), and nothing answers on the port.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(!stat.contains("docker-registry"), "{stat}");
    assert!(std::net::TcpStream::connect(host).is_err());
}

#[test]
fn the_docker_archive_is_a_tarball_with_the_named_image() {
    let archive = registry::busybox_archive();
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .arg("manifest.json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        manifest[0]["RepoTags"],
        serde_json::json!(["docker.io/library/busybox:latest"])
    );
}
