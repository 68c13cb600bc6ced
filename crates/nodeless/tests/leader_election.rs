//! End-to-end: several `nodeless server` processes on one etcd (Debian's etcd-server, started
//! on loopback by the test). Any server answers any request; a watch on one sees writes made
//! through another; optimistic concurrency holds across servers; the controllers run on one
//! server at a time through the Lease `kube-system/nodeless-controllers`, and another server
//! takes over when the leader is killed, or at once when it shuts down cleanly.

#[path = "../../store/tests/support/etcd_server.rs"]
mod etcd_server;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

/// One `nodeless server` on a free loopback port, in its own data dir.
struct Server {
    child: Child,
    dir: tempfile::TempDir,
    name: &'static str,
}

impl Server {
    /// Starts a server on `etcd` in a data dir of its own: the servers of one etcd share
    /// the cluster's CA through the store, nothing is copied between them.
    fn start(name: &'static str, etcd: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("nodeless.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_nodeless"))
            .args(["server", "--store", "etcd", "--etcd-endpoints", etcd])
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Server { child, dir, name }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nodeless.log")).unwrap_or_default()
    }

    /// A kube-rs client with the admin credentials, once the server answers `/readyz`.
    async fn client(&self) -> kube::Client {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(client) = self.try_client().await {
                let ready = http::Request::get("/readyz").body(Vec::new()).unwrap();
                if client.request_text(ready).await.is_ok() {
                    return client;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("server {} did not become ready:\n{}", self.name, self.log());
    }

    async fn try_client(&self) -> Option<kube::Client> {
        let text = std::fs::read_to_string(self.kubeconfig()).ok()?;
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&text).ok()?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .ok()?;
        kube::Client::try_from(config).ok()
    }

    /// Whether this server's log shows it acquired the Lease as `identity`.
    fn acquired_as(&self, identity: &str) -> bool {
        self.log()
            .lines()
            .any(|l| l.contains("acquired the lease") && l.contains(identity))
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGKILL: the server dies without releasing anything.
    fn kill(&mut self) {
        self.signal("-KILL");
        self.child.wait().unwrap();
    }

    /// SIGTERM, waiting for a clean exit.
    fn terminate(&mut self) {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "{} exited with {status}", self.name);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} did not exit on SIGTERM:\n{}", self.name, self.log());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `check` every 200 ms until it gives a value or `within` passes.
async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The Lease's holder, if it is held.
async fn holder(client: &kube::Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let lease = leases.get_opt("nodeless-controllers").await.ok()??;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

async fn lease_spec(client: &kube::Client) -> k8s_openapi::api::coordination::v1::LeaseSpec {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    leases
        .get("nodeless-controllers")
        .await
        .unwrap()
        .spec
        .unwrap()
}

/// Creates a Deployment through `client` and waits until its ReplicaSet and pods exist (the
/// pods stay Pending: `nodeless server` runs no agent).
async fn deployment_is_rolled_out(client: &kube::Client, namespace: &str, name: &str) {
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "a", "image": "busybox" }] },
            },
        },
    }))
    .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = ListParams::default().labels(&format!("app={name}"));
    let what = format!("the ReplicaSet and pods of deployment {name}");
    eventually(Duration::from_secs(30), &what, || async {
        let sets = replicasets.list(&selector).await.ok()?.items;
        let owned = sets.iter().any(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "Deployment" && o.name == name)
        });
        let pod_count = pods.list(&selector).await.ok()?.items.len();
        (owned && pod_count == 2).then_some(())
    })
    .await;
}

fn configmap(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": name },
        "data": { "v": value },
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_share_state_and_take_turns_running_the_controllers() {
    let etcd = etcd_server::EtcdServer::start();
    let endpoint = etcd.endpoint();
    let mut a = Server::start("A", &endpoint);
    let client_a = a.client().await;
    // A lone server acquires the Lease at once.
    let leader = eventually(Duration::from_secs(15), "A to hold the lease", || async {
        holder(&client_a).await
    })
    .await;
    assert!(a.acquired_as(&leader), "A's log:\n{}", a.log());

    let b = Server::start("B", &endpoint);
    let client_b = b.client().await;
    // B shares A's CA: A's admin kubeconfig, pointed at B, is accepted by B.
    let a_kubeconfig = std::fs::read_to_string(a.kubeconfig()).unwrap();
    let b_kubeconfig = std::fs::read_to_string(b.kubeconfig()).unwrap();
    assert_eq!(
        cluster_ca(&a_kubeconfig),
        cluster_ca(&b_kubeconfig),
        "both servers have one CA"
    );
    let a_credentials_at_b =
        a_kubeconfig.replace(server_line(&a_kubeconfig), server_line(&b_kubeconfig));
    Api::<Namespace>::all(client_from(&a_credentials_at_b).await)
        .list(&ListParams::default())
        .await
        .expect("B trusts A's admin credentials and A's CA trusts B's serving certificate");
    // The service account signing key is shared too: a token that A issues is accepted by B.
    let token = eventually(
        Duration::from_secs(30),
        "a service account token from A",
        || async {
            let out = Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(a.kubeconfig())
                .args(["create", "token", "default", "-n", "default"])
                .output()
                .unwrap();
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        },
    )
    .await;
    let token_at_b = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: b\n  cluster:\n    {}\n    certificate-authority-data: {}\nusers:\n- name: sa\n  user:\n    token: {token}\ncontexts:\n- name: b\n  context:\n    cluster: b\n    user: sa\ncurrent-context: b\n",
        server_line(&b_kubeconfig).trim(),
        cluster_ca(&b_kubeconfig),
    );
    Api::<ConfigMap>::namespaced(client_from(&token_at_b).await, "default")
        .list(&ListParams::default())
        .await
        .expect("B accepts a service account token signed by A");
    // A data dir that holds another cluster's CA is refused, with what to do about it.
    let foreign = tempfile::tempdir().unwrap();
    let foreign_pki = foreign.path().join("pki");
    std::fs::create_dir_all(&foreign_pki).unwrap();
    std::fs::write(foreign_pki.join("ca.crt"), "another cluster's CA").unwrap();
    std::fs::write(foreign_pki.join("ca.key"), "another cluster's key").unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_nodeless"))
        .args(["server", "--store", "etcd", "--etcd-endpoints", &endpoint])
        .arg("--data-dir")
        .arg(foreign.path())
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("belongs to another cluster"), "{stderr}");
    // B waits: the Lease stays A's while A renews it (renewals every 2 s, well past one).
    eventually(
        Duration::from_secs(20),
        "B to see the lease held",
        || async {
            b.log()
                .contains("the lease is held by another server")
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(holder(&client_b).await.as_deref(), Some(leader.as_str()));
    assert!(
        !b.log().contains("acquired the lease"),
        "only one server holds the lease; B's log:\n{}",
        b.log()
    );
    let renewed = lease_spec(&client_b).await;
    assert_eq!(renewed.lease_duration_seconds, Some(10));
    assert_eq!(renewed.lease_transitions, Some(0));
    assert!(renewed.renew_time.unwrap().0 > renewed.acquire_time.unwrap().0);

    let namespace: Namespace =
        serde_json::from_value(json!({ "metadata": { "name": "shared" } })).unwrap();
    Api::<Namespace>::all(client_a.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();

    // A watch opened on B sees a write made through A.
    let cms_a: Api<ConfigMap> = Api::namespaced(client_a.clone(), "shared");
    let cms_b: Api<ConfigMap> = Api::namespaced(client_b.clone(), "shared");
    let listed = cms_b.list(&ListParams::default()).await.unwrap();
    let from = listed.metadata.resource_version.unwrap();
    let mut events = cms_b
        .watch(&WatchParams::default().timeout(30), &from)
        .await
        .unwrap()
        .boxed();
    cms_a
        .create(&PostParams::default(), &configmap("crossed", "1"))
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = events.next().await {
            // The namespace's own kube-root-ca.crt may come first.
            if let WatchEvent::Added(cm) = event.unwrap() {
                if cm.metadata.name.as_deref() == Some("crossed") {
                    return cm;
                }
            }
        }
        panic!("the watch on B ended without the write made through A");
    })
    .await
    .expect("B's watch sees A's write");
    assert_eq!(seen.metadata.name.as_deref(), Some("crossed"));

    // Two updates from the same resourceVersion, one through each server: one 409.
    let base = cms_b.get("crossed").await.unwrap();
    let (mut through_a, mut through_b) = (base.clone(), base.clone());
    through_a.data = Some([("v".to_string(), "from-a".to_string())].into());
    through_b.data = Some([("v".to_string(), "from-b".to_string())].into());
    let params = PostParams::default();
    let (result_a, result_b) = tokio::join!(
        cms_a.replace("crossed", &params, &through_a),
        cms_b.replace("crossed", &params, &through_b),
    );
    let conflicts = [&result_a, &result_b]
        .iter()
        .filter(|r| matches!(r, Err(kube::Error::Api(e)) if e.code == 409))
        .count();
    let successes = [&result_a, &result_b].iter().filter(|r| r.is_ok()).count();
    assert_eq!((successes, conflicts), (1, 1), "{result_a:?}\n{result_b:?}");
    let winner = if result_a.is_ok() { "from-a" } else { "from-b" };
    assert_eq!(
        cms_a.get("crossed").await.unwrap().data.unwrap()["v"],
        winner
    );

    // The controllers run (on A, the leader) for a Deployment created through either server.
    deployment_is_rolled_out(&client_a, "shared", "first").await;
    deployment_is_rolled_out(&client_b, "shared", "second").await;

    // The leader dies without releasing the Lease: B takes it over once it expires.
    a.kill();
    let killed_at = Instant::now();
    let successor = eventually(
        Duration::from_secs(30),
        "B to take over the lease",
        || async { holder(&client_b).await.filter(|h| *h != leader) },
    )
    .await;
    eprintln!("B took over {:?} after A was killed", killed_at.elapsed());
    assert!(b.acquired_as(&successor), "B's log:\n{}", b.log());
    let taken = lease_spec(&client_b).await;
    assert_eq!(taken.lease_transitions, Some(1));
    // The controllers now run on B.
    deployment_is_rolled_out(&client_b, "shared", "third").await;

    // A clean shutdown releases the Lease: C takes it at its next try, without waiting for the
    // Lease to expire (10 s after C last saw it renewed).
    let c = Server::start("C", &endpoint);
    let client_c = c.client().await;
    eventually(
        Duration::from_secs(20),
        "C to see the lease held",
        || async {
            c.log()
                .contains("the lease is held by another server")
                .then_some(())
        },
    )
    .await;
    let mut b = b;
    b.terminate();
    let stopped_at = Instant::now();
    assert!(
        b.log().contains("released the lease"),
        "B's log:\n{}",
        b.log()
    );
    let third = eventually(
        Duration::from_secs(10),
        "C to take the released lease",
        || async { holder(&client_c).await.filter(|h| *h != successor) },
    )
    .await;
    eprintln!("C took over {:?} after B stopped", stopped_at.elapsed());
    assert!(c.acquired_as(&third), "C's log:\n{}", c.log());
    assert_eq!(lease_spec(&client_c).await.lease_transitions, Some(2));
    deployment_is_rolled_out(&client_c, "shared", "fourth").await;
    drop(etcd);
}

/// The `certificate-authority-data` of a kubeconfig.
fn cluster_ca(kubeconfig: &str) -> String {
    kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority-data:"))
        .map(|v| v.trim().to_owned())
        .expect("a CA in the kubeconfig")
}

/// A kube-rs client from a kubeconfig's text.
async fn client_from(kubeconfig: &str) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// The `server:` line of a kubeconfig.
fn server_line(kubeconfig: &str) -> &str {
    kubeconfig
        .lines()
        .find(|l| l.trim().starts_with("server:"))
        .expect("a server in the kubeconfig")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_was_paused_past_its_lease_stops_its_controllers() {
    let etcd = etcd_server::EtcdServer::start();
    let endpoint = etcd.endpoint();
    let a = Server::start("A", &endpoint);
    let client_a = a.client().await;
    let first = eventually(Duration::from_secs(15), "A to hold the lease", || async {
        holder(&client_a).await
    })
    .await;
    let b = Server::start("B", &endpoint);
    let client_b = b.client().await;
    eventually(
        Duration::from_secs(20),
        "B to see the lease held",
        || async {
            b.log()
                .contains("the lease is held by another server")
                .then_some(())
        },
    )
    .await;

    // A is frozen (as by a long pause): it cannot renew, and B takes the Lease once it expires.
    a.signal("-STOP");
    let second = eventually(
        Duration::from_secs(30),
        "B to take over the lease",
        || async { holder(&client_b).await.filter(|h| *h != first) },
    )
    .await;
    assert!(b.acquired_as(&second), "B's log:\n{}", b.log());

    // Woken up, A finds its renew deadline passed: it stops its controllers and waits again,
    // leaving the Lease to B.
    a.signal("-CONT");
    eventually(
        Duration::from_secs(20),
        "A to give up the lease",
        || async { a.log().contains("lost the lease").then_some(()) },
    )
    .await;
    eventually(Duration::from_secs(20), "A to wait for B", || async {
        let log = a.log();
        let after_loss = &log[log.find("lost the lease")?..];
        after_loss
            .contains("the lease is held by another server")
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(holder(&client_a).await.as_deref(), Some(second.as_str()));
    assert_eq!(
        a.log().matches("acquired the lease").count(),
        1,
        "A's log:\n{}",
        a.log()
    );
    // The controllers keep working, on B, for a Deployment created through A.
    deployment_is_rolled_out(&client_a, "default", "after-pause").await;
    drop(etcd);
}
