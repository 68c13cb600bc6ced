//! End-to-end: the official Kubernetes Python client (PyPI `kubernetes`) against the real
//! binary. scripts/test.sh installs the client.

mod common;

use common::Cluster;

#[test]
fn official_python_client_works() {
    let c = Cluster::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_checks.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(&c.kubeconfig)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python client checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("5 passed, 0 failed"), "{stdout}");
}
