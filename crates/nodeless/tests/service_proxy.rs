//! End-to-end: the service proxy (`nodeless-proxy`) against a real API server (simulated
//! runtime), run in the test process with its own service CIDR (10.98.N.0/24, routed to
//! the host by the proxy's AnyIP route) and backends as local TCP/UDP servers on 127.88.N.x
//! listed in hand-made EndpointSlices: TCP and UDP forwarding, round robin spread, an
//! endpoint removed, no ready endpoint, ClientIP affinity, LoadBalancer addresses (status,
//! reachability, `loadBalancerIP`, restart, type change) and a connection from a network
//! namespace through its default route, as a pod makes it.

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::Cluster;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use nodeless_proxy::ProxyConfig;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// A number unique to one test of this process (and, through the pid, mostly unique across
/// processes): the third octet of the test's service CIDR and backend addresses.
fn unique() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    (std::process::id() % 50) * 5 + NEXT.fetch_add(1, Ordering::SeqCst) % 5
}

/// A proxy running in the test process; stops (and removes its route) on drop.
struct RunningProxy {
    task: tokio::task::JoinHandle<Result<(), nodeless_proxy::ProxyError>>,
    cidr: String,
}

impl RunningProxy {
    async fn start(c: &Cluster, n: u32) -> Self {
        let cidr = format!("10.98.{n}.0/24");
        let config = ProxyConfig {
            service_cidr: cidr.clone(),
            load_balancer_range: format!("127.77.{n}.0/24"),
            udp_idle_timeout: Duration::from_secs(5),
            manage_local_route: true,
        };
        let task = tokio::spawn(nodeless_proxy::run(config, c.kube_client().await));
        // Before anything connects to a 10.x address: the route must keep it on this host.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let routes = Command::new("ip")
                .args(["route", "show", "table", "local"])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&routes.stdout).contains(&format!("local {cidr} dev lo")) {
                break;
            }
            assert!(!task.is_finished(), "the proxy stopped: {:?}", task.await);
            assert!(
                Instant::now() < deadline,
                "the proxy did not install its route"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { task, cidr }
    }

    /// Stops the proxy and checks that it removed its route.
    async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
        let routes = Command::new("ip")
            .args(["route", "show", "table", "local"])
            .output()
            .unwrap();
        let routes = String::from_utf8_lossy(&routes.stdout);
        assert!(
            !routes.contains(&format!("local {} dev lo", self.cidr)),
            "the stopped proxy left its route: {routes}"
        );
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = Command::new("ip")
            .args([
                "route", "del", "local", &self.cidr, "dev", "lo", "table", "local",
            ])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// TCP backends on `ips` sharing one port; each answers a connection with its own address
/// (and, for an HTTP request, a minimal HTTP response).
async fn tcp_backends(ips: &[String]) -> u16 {
    let mut port = 0;
    for ip in ips {
        let listener = TcpListener::bind(format!("{ip}:{port}")).await.unwrap();
        port = listener.local_addr().unwrap().port();
        let tag = ip.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let tag = tag.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let reply = if buf[..n].starts_with(b"GET ") {
                        format!(
                            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{tag}",
                            tag.len()
                        )
                    } else {
                        tag
                    };
                    let _ = s.write_all(reply.as_bytes()).await;
                });
            }
        });
    }
    port
}

/// UDP backends on `ips` sharing one port; each answers a datagram with its own address.
async fn udp_backends(ips: &[String]) -> u16 {
    let mut port = 0;
    for ip in ips {
        let socket = UdpSocket::bind(format!("{ip}:{port}")).await.unwrap();
        port = socket.local_addr().unwrap().port();
        let tag = ip.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((_, from)) = socket.recv_from(&mut buf).await {
                let _ = socket.send_to(tag.as_bytes(), from).await;
            }
        });
    }
    port
}

/// One TCP request: the backend's answer, or `None` if the connection was refused, reset
/// or closed without an answer.
async fn ask_tcp(addr: SocketAddr) -> Option<String> {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(b"hello").await.ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        (!out.is_empty()).then_some(out)
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
}

async fn ask_udp(addr: SocketAddr) -> Option<String> {
    let socket = UdpSocket::bind("0.0.0.0:0").await.unwrap();
    socket.send_to(b"hello", addr).await.ok()?;
    let mut buf = [0u8; 1500];
    let (n, from) = tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    assert_eq!(from, addr, "UDP replies come from the service address");
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `limit`.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create_service(client: &kube::Client, spec: Value) -> Service {
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    api.create(
        &PostParams::default(),
        &serde_json::from_value(spec).unwrap(),
    )
    .await
    .unwrap()
}

fn slice_json(service: &str, ports: Value, endpoints: &[(&str, bool)]) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, ready)| json!({"addresses": [ip], "conditions": {"ready": ready}}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-manual"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    })
}

async fn put_slice(client: &kube::Client, slice: Value) {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let name = slice["metadata"]["name"].as_str().unwrap().to_string();
    let params = PatchParams::apply("service-proxy-test").force();
    api.patch(&name, &params, &Patch::Apply(&slice))
        .await
        .unwrap();
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ip_tcp_udp_round_robin_and_endpoint_changes() {
    let c = Cluster::start();
    let n = unique();
    let client = c.kube_client().await;
    let backends: Vec<String> = (1..=3).map(|i| format!("127.88.{n}.{i}")).collect();
    let tcp_port = tcp_backends(&backends).await;
    let udp_port = udp_backends(&backends).await;
    let cluster_ip = format!("10.98.{n}.10");
    create_service(
        &client,
        json!({"metadata": {"name": "web"}, "spec": {"clusterIP": cluster_ip, "ports": [
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "dns", "port": 53, "protocol": "UDP"}]}}),
    )
    .await;
    let ports = json!([{"name": "http", "port": tcp_port, "protocol": "TCP"},
                       {"name": "dns", "port": udp_port, "protocol": "UDP"}]);
    let all: Vec<(&str, bool)> = backends.iter().map(|b| (b.as_str(), true)).collect();
    put_slice(&client, slice_json("web", ports.clone(), &all)).await;
    let proxy = RunningProxy::start(&c, n).await;

    let tcp = addr(&cluster_ip, 80);
    eventually(Duration::from_secs(10), "the ClusterIP to answer", || {
        ask_tcp(tcp)
    })
    .await;
    let mut spread: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        *spread.entry(ask_tcp(tcp).await.unwrap()).or_default() += 1;
    }
    assert_eq!(spread.len(), 3, "every endpoint is used: {spread:?}");
    assert!(
        spread.values().all(|&count| count == 10),
        "round robin: {spread:?}"
    );

    let udp = addr(&cluster_ip, 53);
    let mut udp_seen: Vec<String> = Vec::new();
    for _ in 0..6 {
        // A fresh client socket each time: a new session, so round robin moves on.
        udp_seen.push(ask_udp(udp).await.expect("UDP answer"));
    }
    udp_seen.sort();
    udp_seen.dedup();
    assert_eq!(udp_seen.len(), 3, "UDP sessions spread over the endpoints");

    // The third endpoint goes: within a second it is no longer picked.
    let removed = backends[2].clone();
    put_slice(&client, slice_json("web", ports.clone(), &all[..2])).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..20 {
        let got = ask_tcp(tcp).await.unwrap();
        assert_ne!(got, removed, "a removed endpoint is still used after 1 s");
    }
    // Not ready: the endpoint is skipped as if it was gone.
    put_slice(
        &client,
        slice_json(
            "web",
            ports.clone(),
            &[(&backends[0], true), (&backends[1], false)],
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..5 {
        assert_eq!(ask_tcp(tcp).await.as_deref(), Some(backends[0].as_str()));
    }
    // No ready endpoint: connections are refused (nothing listens; upstream rejects).
    put_slice(
        &client,
        slice_json("web", ports.clone(), &[(&backends[0], false)]),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let refused = TcpStream::connect(tcp).await.map(|_| ()).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    // Ready again: served again.
    put_slice(
        &client,
        slice_json("web", ports.clone(), &[(&backends[0], true)]),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(ask_tcp(tcp).await.as_deref(), Some(backends[0].as_str()));

    // The Service goes: its port is closed.
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    api.delete("web", &Default::default()).await.unwrap();
    eventually(Duration::from_secs(5), "the listener to close", || async {
        TcpStream::connect(tcp).await.is_err().then_some(())
    })
    .await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_affinity_sticks_to_one_endpoint() {
    let c = Cluster::start();
    let n = unique();
    let client = c.kube_client().await;
    let backends: Vec<String> = (1..=3).map(|i| format!("127.88.{n}.{i}")).collect();
    let port = tcp_backends(&backends).await;
    let cluster_ip = format!("10.98.{n}.11");
    create_service(
        &client,
        json!({"metadata": {"name": "sticky"}, "spec": {"clusterIP": cluster_ip,
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
            "ports": [{"port": 80}]}}),
    )
    .await;
    let all: Vec<(&str, bool)> = backends.iter().map(|b| (b.as_str(), true)).collect();
    put_slice(
        &client,
        slice_json("sticky", json!([{"port": port, "protocol": "TCP"}]), &all),
    )
    .await;
    let _proxy = RunningProxy::start(&c, n).await;
    let svc = addr(&cluster_ip, 80);
    let first = eventually(Duration::from_secs(10), "the ClusterIP to answer", || {
        ask_tcp(svc)
    })
    .await;
    for _ in 0..15 {
        assert_eq!(ask_tcp(svc).await.unwrap(), first, "ClientIP affinity");
    }
    // The sticky endpoint goes: the client moves to another one and sticks there.
    let rest: Vec<(&str, bool)> = all.iter().copied().filter(|(ip, _)| *ip != first).collect();
    put_slice(
        &client,
        slice_json("sticky", json!([{"port": port, "protocol": "TCP"}]), &rest),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let moved = ask_tcp(svc).await.unwrap();
    assert_ne!(moved, first);
    for _ in 0..10 {
        assert_eq!(ask_tcp(svc).await.unwrap(), moved);
    }
}

fn ingress_ips(service: &Service) -> Vec<String> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| i.ip)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_addresses_are_assigned_reachable_kept_and_released() {
    let c = Cluster::start();
    let n = unique();
    let client = c.kube_client().await;
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let backends = vec![format!("127.88.{n}.1")];
    let port = tcp_backends(&backends).await;
    let udp_port = udp_backends(&backends).await;
    for (name, host, extra) in [
        ("lb", 20, json!({})),
        (
            "pinned",
            21,
            json!({"loadBalancerIP": format!("127.77.{n}.50")}),
        ),
    ] {
        let mut spec = json!({"type": "LoadBalancer", "clusterIP": format!("10.98.{n}.{host}"),
            "ports": [{"name": "web", "port": 8080}, {"name": "q", "port": 8053, "protocol": "UDP"}]});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        create_service(&client, json!({"metadata": {"name": name}, "spec": spec})).await;
        put_slice(
            &client,
            slice_json(
                name,
                json!([{"name": "web", "port": port, "protocol": "TCP"},
                       {"name": "q", "port": udp_port, "protocol": "UDP"}]),
                &[(&backends[0], true)],
            ),
        )
        .await;
    }
    let proxy = RunningProxy::start(&c, n).await;
    let first = format!("127.77.{n}.1");
    let pinned = format!("127.77.{n}.50");
    for (name, want) in [("lb", &first), ("pinned", &pinned)] {
        eventually(
            Duration::from_secs(10),
            "a LoadBalancer ingress address",
            || async {
                let svc = api.get(name).await.unwrap();
                (ingress_ips(&svc) == vec![want.clone()]).then_some(())
            },
        )
        .await;
        let lb = addr(want, 8080);
        let got = eventually(
            Duration::from_secs(5),
            "the LoadBalancer address to answer",
            || ask_tcp(lb),
        )
        .await;
        assert_eq!(got, backends[0]);
        assert_eq!(
            ask_udp(addr(want, 8053)).await.as_deref(),
            Some(backends[0].as_str())
        );
    }

    // A restarted proxy keeps the address found in the status, even when a new
    // LoadBalancer Service is seen first.
    proxy.stop().await;
    create_service(
        &client,
        json!({"metadata": {"name": "newer"}, "spec": {"type": "LoadBalancer",
            "clusterIP": format!("10.98.{n}.22"), "ports": [{"port": 9090}]}}),
    )
    .await;
    let proxy = RunningProxy::start(&c, n).await;
    let newer = eventually(
        Duration::from_secs(10),
        "an address for the newer Service",
        || async {
            let ips = ingress_ips(&api.get("newer").await.unwrap());
            ips.first().cloned()
        },
    )
    .await;
    assert_eq!(newer, format!("127.77.{n}.2"));
    assert_eq!(
        ingress_ips(&api.get("lb").await.unwrap()),
        vec![first.clone()]
    );
    eventually(Duration::from_secs(5), "the kept address to answer", || {
        ask_tcp(addr(&first, 8080))
    })
    .await;

    // Type change: the address is released (status cleared, port closed).
    api.patch(
        "lb",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"type": "ClusterIP"}})),
    )
    .await
    .unwrap();
    eventually(
        Duration::from_secs(10),
        "the ingress to be cleared",
        || async {
            ingress_ips(&api.get("lb").await.unwrap())
                .is_empty()
                .then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "the LoadBalancer port to close",
        || async {
            TcpStream::connect(addr(&first, 8080))
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    // The ClusterIP still works.
    assert_eq!(
        ask_tcp(addr(&format!("10.98.{n}.20"), 8080))
            .await
            .as_deref(),
        Some(backends[0].as_str())
    );
    proxy.stop().await;
}

/// A network namespace with a veth pair, like a pod's; deleted on drop.
struct PodNetns {
    name: String,
    host_if: String,
}

impl PodNetns {
    fn create(n: u32) -> Self {
        let tag = format!("{}x{n}", std::process::id() % 10_000);
        let netns = Self {
            name: format!("nlpx{tag}"),
            host_if: format!("nlpxh{tag}"),
        };
        let pod_if = format!("nlpxp{tag}");
        let host_ip = format!("10.99.{n}.1");
        let pod_ip = format!("10.99.{n}.2");
        let run = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&["netns", "add", &netns.name]);
        run(&[
            "link",
            "add",
            &netns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &pod_if,
        ]);
        run(&["link", "set", &pod_if, "netns", &netns.name]);
        run(&[
            "addr",
            "add",
            &format!("{host_ip}/30"),
            "dev",
            &netns.host_if,
        ]);
        run(&["link", "set", &netns.host_if, "up"]);
        run(&[
            "-n",
            &netns.name,
            "addr",
            "add",
            &format!("{pod_ip}/30"),
            "dev",
            &pod_if,
        ]);
        run(&["-n", &netns.name, "link", "set", &pod_if, "up"]);
        run(&["-n", &netns.name, "link", "set", "lo", "up"]);
        run(&[
            "-n",
            &netns.name,
            "route",
            "add",
            "default",
            "via",
            &host_ip,
        ]);
        netns
    }
}

impl Drop for PodNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "delete", &self.host_if])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_network_namespace_reaches_the_cluster_ip() {
    let c = Cluster::start();
    let n = unique();
    let client = c.kube_client().await;
    let backend = format!("127.88.{n}.1");
    let port = tcp_backends(std::slice::from_ref(&backend)).await;
    let cluster_ip = format!("10.98.{n}.30");
    create_service(
        &client,
        json!({"metadata": {"name": "http"}, "spec": {"clusterIP": cluster_ip,
            "ports": [{"name": "http", "port": 80}]}}),
    )
    .await;
    put_slice(
        &client,
        slice_json(
            "http",
            json!([{"name": "http", "port": port, "protocol": "TCP"}]),
            &[(&backend, true)],
        ),
    )
    .await;
    let _proxy = RunningProxy::start(&c, n).await;
    eventually(Duration::from_secs(10), "the ClusterIP to answer", || {
        ask_tcp(addr(&cluster_ip, 80))
    })
    .await;
    let netns = PodNetns::create(n);
    // An HTTP request through busybox nc (busybox-static's wget segfaults on this host).
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns.name,
                "busybox",
                "nc",
                "-w",
                "5",
                &cluster_ip,
                "80",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        drop(netns);
        out
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "nc from the netns failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let response = String::from_utf8_lossy(&out.stdout);
    assert!(response.starts_with("HTTP/1.0 200 OK"), "{response}");
    assert!(response.ends_with(&backend), "{response}");
}
