//! End-to-end: `nodeless up --store etcd` on a real etcd (Debian's etcd-server, started on
//! loopback by the test), driven by kubectl; state survives a restart of nodeless.

mod common;

#[path = "../../store/tests/support/etcd_server.rs"]
mod etcd_server;

use common::Cluster;

#[test]
fn the_cluster_runs_on_etcd() {
    let etcd = etcd_server::EtcdServer::start();
    let endpoint = etcd.endpoint();
    let args = ["--store", "etcd", "--etcd-endpoints", endpoint.as_str()];
    let c = Cluster::start_with(&args);
    c.ok(&["create", "namespace", "on-etcd"]);
    c.ok(&[
        "create",
        "configmap",
        "kept",
        "-n",
        "on-etcd",
        "--from-literal=a=b",
    ]);
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: on-etcd\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: a\n        image: busybox\n";
    c.ok_stdin(&["apply", "-f", "-"], deploy);
    c.ok(&[
        "scale",
        "deployment",
        "web",
        "-n",
        "on-etcd",
        "--replicas=3",
    ]);
    let before = c.get_json(&["cm", "kept", "-n", "on-etcd"]);
    let names = c.ok(&["get", "cm", "-n", "on-etcd", "-o", "name", "--chunk-size=1"]);
    assert!(names.contains("configmap/kept"), "{names}");

    // A restart keeps everything: the state is in etcd, not in the data dir's database.
    let dir = c.stop();
    assert!(
        !dir.path().join("state.db").exists(),
        "nothing is written to SQLite with --store etcd"
    );
    let c = Cluster::start_in(dir, &args);
    let after = c.get_json(&["cm", "kept", "-n", "on-etcd"]);
    assert_eq!(before["metadata"]["uid"], after["metadata"]["uid"]);
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "web",
            "-n",
            "on-etcd",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "3"
    );
    drop(etcd);
}
