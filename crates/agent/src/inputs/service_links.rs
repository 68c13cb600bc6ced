//! The service environment variables upstream injects into every container
//! (`{SVC}_SERVICE_HOST`, `{SVC}_SERVICE_PORT`, the Docker-link style `{SVC}_PORT_…`): for the
//! Services of the pod's namespace when `enableServiceLinks` (default true), and always for the
//! `kubernetes` Service of `default`.

use k8s_openapi::api::core::v1::{Pod, Service};

/// The name of an environment variable derived from a Service name (`my-svc` → `MY_SVC`).
fn variable_name(service: &str) -> String {
    service.to_ascii_uppercase().replace('-', "_")
}

fn cluster_ip(service: &Service) -> Option<String> {
    let ip = service.spec.as_ref()?.cluster_ip.clone()?;
    (!ip.is_empty() && ip != "None").then_some(ip)
}

/// The Services whose variables a pod gets, from its namespace's Services and `default`'s:
/// `(namespace services, default services)`.
pub(crate) fn selected<'a>(
    pod: &Pod,
    namespace_services: &'a [Service],
    default_services: &'a [Service],
) -> Vec<&'a Service> {
    let enable = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut chosen: Vec<&Service> = Vec::new();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    if enable {
        chosen.extend(
            namespace_services
                .iter()
                .filter(|s| cluster_ip(s).is_some()),
        );
    }
    let master = default_services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("kubernetes") && cluster_ip(s).is_some());
    if let Some(master) = master {
        let already = namespace == "default" && enable;
        if !already {
            chosen.push(master);
        }
    }
    chosen.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    chosen
}

/// The variables of the given Services, as upstream's `envvars.FromServices`.
pub(crate) fn variables(services: &[&Service]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for service in services {
        let (Some(ip), Some(spec)) = (cluster_ip(service), service.spec.as_ref()) else {
            continue;
        };
        let prefix = variable_name(service.metadata.name.as_deref().unwrap_or_default());
        let ports = spec.ports.clone().unwrap_or_default();
        let Some(first) = ports.first() else {
            continue;
        };
        out.push((format!("{prefix}_SERVICE_HOST"), ip.clone()));
        out.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        for port in &ports {
            if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!("{prefix}_SERVICE_PORT_{}", variable_name(name)),
                    port.port.to_string(),
                ));
            }
        }
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.clone()
        };
        for (i, port) in ports.iter().enumerate() {
            let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".to_string());
            let lower = protocol.to_ascii_lowercase();
            let url = format!("{lower}://{host}:{}", port.port);
            if i == 0 {
                out.push((format!("{prefix}_PORT"), url.clone()));
            }
            let port_prefix = format!(
                "{prefix}_PORT_{}_{}",
                port.port,
                protocol.to_ascii_uppercase()
            );
            out.push((port_prefix.clone(), url));
            out.push((format!("{port_prefix}_PROTO"), lower));
            out.push((format!("{port_prefix}_PORT"), port.port.to_string()));
            out.push((format!("{port_prefix}_ADDR"), ip.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(namespace: &str, name: &str, ip: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": namespace, "name": name},
            "spec": {"clusterIP": ip, "ports": ports}
        }))
        .unwrap()
    }

    fn pod(namespace: &str, links: Option<bool>) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": namespace, "name": "p"},
            "spec": {"containers": [], "enableServiceLinks": links}
        }))
        .unwrap()
    }

    #[test]
    fn variables_follow_upstream_names() {
        let web = service(
            "shop",
            "web-front",
            "10.96.0.20",
            serde_json::json!([{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns-udp", "port": 53, "protocol": "UDP"}]),
        );
        let vars = variables(&[&web]);
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("WEB_FRONT_SERVICE_HOST"), Some("10.96.0.20"));
        assert_eq!(get("WEB_FRONT_SERVICE_PORT"), Some("80"));
        assert_eq!(get("WEB_FRONT_SERVICE_PORT_HTTP"), Some("80"));
        assert_eq!(get("WEB_FRONT_SERVICE_PORT_DNS_UDP"), Some("53"));
        assert_eq!(get("WEB_FRONT_PORT"), Some("tcp://10.96.0.20:80"));
        assert_eq!(get("WEB_FRONT_PORT_80_TCP"), Some("tcp://10.96.0.20:80"));
        assert_eq!(get("WEB_FRONT_PORT_80_TCP_PROTO"), Some("tcp"));
        assert_eq!(get("WEB_FRONT_PORT_53_UDP"), Some("udp://10.96.0.20:53"));
        assert_eq!(get("WEB_FRONT_PORT_53_UDP_ADDR"), Some("10.96.0.20"));
    }

    #[test]
    fn links_can_be_turned_off_but_the_master_service_stays() {
        let ports = serde_json::json!([{"name": "https", "port": 443}]);
        let shop = [
            service("shop", "web", "10.96.0.20", ports.clone()),
            service("shop", "headless", "None", ports.clone()),
        ];
        let default = [service("default", "kubernetes", "10.96.0.1", ports)];
        let names = |chosen: Vec<&Service>| -> Vec<String> {
            chosen
                .iter()
                .map(|s| s.metadata.name.clone().unwrap_or_default())
                .collect()
        };
        assert_eq!(
            names(selected(&pod("shop", None), &shop, &default)),
            ["kubernetes", "web"]
        );
        assert_eq!(
            names(selected(&pod("shop", Some(false)), &shop, &default)),
            ["kubernetes"]
        );
        assert_eq!(
            names(selected(&pod("default", None), &default, &default)),
            ["kubernetes"]
        );
    }
}
