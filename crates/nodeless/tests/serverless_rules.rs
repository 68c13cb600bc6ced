//! End-to-end: what a node-less cluster cannot offer is refused at once, with a message
//! that says what to do instead; every pod gets its provisioned size.

mod common;

use common::Cluster;

fn refused(c: &Cluster, manifest: &str) -> String {
    let out = c.kubectl_with(&c.kubectl, &["apply", "-f", "-"], Some(manifest));
    assert!(!out.status.success(), "accepted:\n{manifest}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: main\n    image: busybox\n";

#[test]
fn host_features_probes_and_daemonsets_are_refused() {
    let c = Cluster::start();
    let hostpath = format!("{POD}    volumeMounts:\n    - name: h\n      mountPath: /h\n  volumes:\n  - name: h\n    hostPath:\n      path: /etc\n");
    let err = refused(&c, &hostpath);
    assert!(
        err.contains("spec.volumes[0].hostPath") && err.contains("emptyDir"),
        "{err}"
    );

    let probe = format!("{POD}    livenessProbe:\n      exec:\n        command: [true]\n");
    let err = refused(&c, &probe);
    assert!(
        err.contains("livenessProbe") && err.contains("no-probes"),
        "{err}"
    );

    let privileged = format!("{POD}    securityContext:\n      privileged: true\n");
    assert!(refused(&c, &privileged).contains("privileged"));
    let caps =
        format!("{POD}    securityContext:\n      capabilities:\n        add: [SYS_ADMIN]\n");
    assert!(refused(&c, &caps).contains("SYS_ADMIN"));
    let host_net = POD.replace("spec:\n", "spec:\n  hostNetwork: true\n");
    assert!(refused(&c, &host_net).contains("hostNetwork"));
    let host_port = format!("{POD}    ports:\n    - containerPort: 80\n      hostPort: 8080\n");
    assert!(refused(&c, &host_port).contains("hostPort"));

    let ds = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: agent\nspec:\n  selector:\n    matchLabels: {app: a}\n  template:\n    metadata:\n      labels: {app: a}\n    spec:\n      containers:\n      - name: a\n        image: busybox\n";
    let err = refused(&c, ds);
    assert!(
        err.contains("Forbidden") && err.contains("sidecar"),
        "{err}"
    );
    // DaemonSets stay discoverable, so the message above is what users see.
    assert!(c.ok(&["api-resources"]).contains("daemonsets"));

    let node_port = "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  type: NodePort\n  ports:\n  - port: 80\n";
    let err = refused(&c, node_port);
    assert!(
        err.contains("NodePort") && err.contains("LoadBalancer"),
        "{err}"
    );

    // Templates are checked too, on create and on patch.
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  selector:\n    matchLabels: {app: d}\n  template:\n    metadata:\n      labels: {app: d}\n    spec:\n      containers:\n      - name: a\n        image: busybox\n";
    c.ok_stdin(&["apply", "-f", "-"], deploy);
    let out = c.kubectl(&[
        "patch",
        "deployment",
        "d",
        "--type=strategic",
        "-p",
        r#"{"spec":{"template":{"spec":{"volumes":[{"name":"h","hostPath":{"path":"/"}}]}}}}"#,
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("spec.template.spec.volumes[0].hostPath"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: cj\nspec:\n  schedule: '*/5 * * * *'\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          hostPID: true\n          containers:\n          - name: a\n            image: busybox\n";
    assert!(refused(&c, job).contains("spec.jobTemplate.spec.template.spec.hostPID"));
}

#[test]
fn pods_are_sized_from_their_limits() {
    let c = Cluster::start();
    let sized = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: sized\nspec:\n  containers:\n  - name: a\n    image: busybox\n    resources:\n      limits: {cpu: 300m, memory: 700Mi}\n  - name: b\n    image: busybox\n    resources:\n      limits: {cpu: 100m, memory: 200Mi}\n";
    let out = c.kubectl_with(&c.kubectl, &["apply", "-f", "-"], Some(sized));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rounded up"),
        "a Warning says the size was rounded: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let size = c.ok(&[
        "get",
        "pod",
        "sized",
        "-o",
        "jsonpath={.metadata.annotations.nodeless\\.io/capacity-provisioned}",
    ]);
    assert_eq!(size, "0.5vCPU 1GiB");

    c.ok_stdin(&["apply", "-f", "-"], "apiVersion: v1\nkind: Pod\nmetadata:\n  name: tiny\nspec:\n  containers:\n  - name: a\n    image: busybox\n");
    let size = c.ok(&[
        "get",
        "pod",
        "tiny",
        "-o",
        "jsonpath={.metadata.annotations.nodeless\\.io/capacity-provisioned}",
    ]);
    assert_eq!(size, "0.25vCPU 0.5GiB");

    let huge = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: huge\nspec:\n  containers:\n  - name: a\n    image: busybox\n    resources:\n      limits: {cpu: '64', memory: 8Gi}\n";
    let err = refused(&c, huge);
    assert!(
        err.contains("16vCPU 120GiB"),
        "the message names the largest size: {err}"
    );
}

#[test]
fn an_operator_can_relax_a_rule() {
    let c = Cluster::start_with(&["--relax-rule", "no-probes"]);
    let probe = format!("{POD}    readinessProbe:\n      exec:\n        command: [true]\n");
    c.ok_stdin(&["apply", "-f", "-"], &probe);
}
