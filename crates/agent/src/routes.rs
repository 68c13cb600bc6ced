//! Routes between the agents' pod CIDRs, as flannel's host-gw backend and kube-router do for
//! agents on one L2 segment: for every other Node, `<its spec.podCIDR> via <its InternalIP>`
//! in this agent's network namespace, so that pods reach each other by their real IPs (no
//! overlay, no NAT).
//!
//! The routes are made with iproute2's `ip` command and tagged with their own routing protocol
//! number, [`ROUTE_PROTOCOL`]. The controller only ever replaces or deletes a route that carries
//! that tag *and* that it recorded as its own (in memory and in a file under the agent's state
//! dir, so a restarted agent still knows them): a route someone else made to the same
//! destination is left alone (with a warning), and so are the tagged routes of another cluster
//! whose agent shares this network namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;

use crate::AgentError;

/// The routing protocol number (`ip route ... proto 78`) that marks the routes this controller
/// made; it is not one of the numbers of iproute2's `rt_protos`.
pub const ROUTE_PROTOCOL: u8 = 78;

/// How often the routes are checked against the Nodes even when no Node changed (a route
/// deleted by hand comes back within this time).
const RESYNC_INTERVAL: Duration = Duration::from_secs(30);

/// An IPv4 prefix with its host bits cleared, such as `10.244.1.0/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Net {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Net {
    /// The prefix of `address`/`prefix` (host bits are cleared); `None` past /32.
    pub fn new(address: Ipv4Addr, prefix: u8) -> Option<Self> {
        if prefix > 32 {
            return None;
        }
        let bits = u32::from(address) & Self::mask(prefix);
        Some(Self {
            network: Ipv4Addr::from(bits),
            prefix,
        })
    }

    fn mask(prefix: u8) -> u32 {
        match prefix {
            0 => 0,
            p => u32::MAX << (32 - u32::from(p)),
        }
    }

    /// Whether `address` is in the prefix.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & Self::mask(self.prefix) == u32::from(self.network)
    }

    /// Whether the two prefixes share an address.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = AgentError;

    /// `a.b.c.d/p`, or a bare address (a /32, as `ip route` prints host routes).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || AgentError::Config(format!("{text:?} is not an IPv4 prefix"));
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, prefix.parse::<u8>().map_err(|_| invalid())?),
            None => (text, 32),
        };
        let address: Ipv4Addr = address.parse().map_err(|_| invalid())?;
        Self::new(address, prefix).ok_or_else(invalid)
    }
}

/// Who this agent is, to leave its own Node out of the routes.
#[derive(Clone, Debug)]
pub struct RouteConfig {
    /// This agent's Node.
    pub node_name: String,
    /// This agent's pod CIDR (its pods are on its bridge; no other node's route may cover it).
    pub pod_cidr: Ipv4Net,
    /// This agent's InternalIP (a route via it would loop).
    pub node_ip: IpAddr,
    /// The file that records the routes this agent made (e.g. `STATE_DIR/pod-routes.json`).
    pub record: PathBuf,
}

/// The pod CIDR and InternalIP of a Node, when it has both (IPv4 only).
fn node_route(node: &Node) -> Option<(Ipv4Net, Ipv4Addr)> {
    let spec = node.spec.as_ref()?;
    let cidr = spec
        .pod_cidr
        .iter()
        .chain(spec.pod_cidrs.iter().flatten())
        .find_map(|c| c.parse::<Ipv4Net>().ok())?;
    let gateway = node
        .status
        .as_ref()?
        .addresses
        .iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse::<Ipv4Addr>().ok())?;
    Some((cidr, gateway))
}

/// The routes this agent should have: one per other Node that has a pod CIDR and an
/// InternalIP. A Node being deleted, one advertising a loopback or unspecified address or this
/// agent's own, and one whose CIDR overlaps this agent's (or an earlier node's, by name) get
/// none.
pub fn desired_routes<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    config: &RouteConfig,
) -> BTreeMap<Ipv4Net, Ipv4Addr> {
    let mut sorted: Vec<&Node> = nodes.into_iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut routes: BTreeMap<Ipv4Net, Ipv4Addr> = BTreeMap::new();
    for node in sorted {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        if name == config.node_name || node.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some((cidr, gateway)) = node_route(node) else {
            continue;
        };
        if gateway.is_loopback() || gateway.is_unspecified() || config.node_ip == gateway {
            tracing::debug!(node = name, %gateway, "no pod route via a local address");
            continue;
        }
        if cidr.overlaps(&config.pod_cidr) || routes.keys().any(|c| c.overlaps(&cidr)) {
            tracing::warn!(node = name, %cidr, "the node's pod CIDR overlaps another; no route");
            continue;
        }
        routes.insert(cidr, gateway);
    }
    routes
}

/// A route of the main table as `ip -json route show` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledRoute {
    /// Its destination.
    pub destination: Ipv4Net,
    /// Its gateway, if it has one.
    pub gateway: Option<Ipv4Addr>,
    /// Its protocol number (`None`: iproute2 left it out, i.e. `boot`).
    pub protocol: Option<u8>,
}

/// One change to the routing table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteChange {
    /// `ip route replace DESTINATION via GATEWAY proto 78`.
    Replace {
        /// The other node's pod CIDR.
        destination: Ipv4Net,
        /// The other node's InternalIP.
        gateway: Ipv4Addr,
    },
    /// `ip route del DESTINATION proto 78`.
    Delete {
        /// A pod CIDR no node has any more (or whose node moved).
        destination: Ipv4Net,
    },
}

/// What to change so that the table has the desired routes: a missing or outdated route of
/// ours is replaced, a route of ours that is no longer desired is deleted, and a route that
/// is not ours (another protocol, or not in `owned`) is never touched, even when it is in the
/// way of a desired one (that destination is left out, with a warning).
pub fn plan(
    desired: &BTreeMap<Ipv4Net, Ipv4Addr>,
    installed: &[InstalledRoute],
    owned: &BTreeSet<Ipv4Net>,
) -> Vec<RouteChange> {
    let is_ours =
        |r: &InstalledRoute| r.protocol == Some(ROUTE_PROTOCOL) && owned.contains(&r.destination);
    let mut changes = Vec::new();
    for (destination, gateway) in desired {
        let present: Vec<&InstalledRoute> = installed
            .iter()
            .filter(|r| r.destination == *destination)
            .collect();
        if present.iter().any(|r| !is_ours(r)) {
            tracing::warn!(
                %destination,
                "a route to this pod CIDR exists that nodeless did not make; leaving it"
            );
            continue;
        }
        if !present.iter().any(|r| r.gateway == Some(*gateway)) {
            changes.push(RouteChange::Replace {
                destination: *destination,
                gateway: *gateway,
            });
        }
    }
    for route in installed {
        if is_ours(route) && !desired.contains_key(&route.destination) {
            changes.push(RouteChange::Delete {
                destination: route.destination,
            });
        }
    }
    changes
}

/// Parses the output of `ip -json -N -4 route show table main` (routes that are not IPv4
/// prefixes, such as `default`, are skipped).
pub fn parse_routes(json: &[u8]) -> Result<Vec<InstalledRoute>, AgentError> {
    let routes: Vec<serde_json::Value> = serde_json::from_slice(json)?;
    Ok(routes
        .iter()
        .filter_map(|route| {
            let destination = route["dst"].as_str()?.parse::<Ipv4Net>().ok()?;
            let gateway = route["gateway"].as_str().and_then(|g| g.parse().ok());
            let protocol = match &route["protocol"] {
                serde_json::Value::String(p) => p.parse().ok(),
                serde_json::Value::Number(p) => p.as_u64().and_then(|p| u8::try_from(p).ok()),
                _ => None,
            };
            Some(InstalledRoute {
                destination,
                gateway,
                protocol,
            })
        })
        .collect())
}

/// Runs `ip ARGS`, with its stderr in the error.
async fn ip(args: &[String]) -> Result<Vec<u8>, AgentError> {
    let output = tokio::process::Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| {
            AgentError::Route(format!(
                "running `ip {}` (is iproute2 installed?): {e}",
                args.join(" ")
            ))
        })?;
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(AgentError::Route(format!(
            "`ip {}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// The routes of the main table.
async fn installed_routes() -> Result<Vec<InstalledRoute>, AgentError> {
    let json = ip(&strings(&[
        "-json", "-N", "-4", "route", "show", "table", "main",
    ]))
    .await?;
    parse_routes(&json)
}

/// Applies one change.
async fn apply(change: &RouteChange) -> Result<(), AgentError> {
    let protocol = ROUTE_PROTOCOL.to_string();
    let args = match change {
        RouteChange::Replace {
            destination,
            gateway,
        } => strings(&[
            "route",
            "replace",
            &destination.to_string(),
            "via",
            &gateway.to_string(),
            "proto",
            &protocol,
            "table",
            "main",
        ]),
        RouteChange::Delete { destination } => strings(&[
            "route",
            "del",
            &destination.to_string(),
            "proto",
            &protocol,
            "table",
            "main",
        ]),
    };
    ip(&args).await.map(|_| ())
}

/// The routes this agent made, kept in a file across restarts.
struct Record {
    path: PathBuf,
    owned: BTreeSet<Ipv4Net>,
}

impl Record {
    fn load(path: PathBuf) -> Self {
        let owned = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Vec<String>>(&bytes).ok())
            .unwrap_or_default()
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect();
        Self { path, owned }
    }

    fn save(&self) {
        let list: Vec<String> = self.owned.iter().map(|c| c.to_string()).collect();
        let written = serde_json::to_vec(&list)
            .map_err(AgentError::from)
            .and_then(|bytes| {
                if let Some(dir) = self.path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| AgentError::Route(e.to_string()))?;
                }
                std::fs::write(&self.path, bytes).map_err(|e| AgentError::Route(e.to_string()))
            });
        if let Err(error) = written {
            tracing::warn!(%error, path = %self.path.display(), "recording the pod routes");
        }
    }
}

/// Brings the table to the desired routes; returns whether every change was made.
async fn reconcile(desired: &BTreeMap<Ipv4Net, Ipv4Addr>, record: &mut Record) -> bool {
    let installed = match installed_routes().await {
        Ok(installed) => installed,
        Err(error) => {
            tracing::warn!(%error, "listing the routes");
            return false;
        }
    };
    let mut complete = true;
    for change in plan(desired, &installed, &record.owned) {
        // Recorded before the route exists, so that a crash in between cannot orphan it.
        if let RouteChange::Replace { destination, .. } = &change {
            if record.owned.insert(*destination) {
                record.save();
            }
        }
        match apply(&change).await {
            Ok(()) => {
                tracing::info!(?change, "pod route changed");
                if let RouteChange::Delete { destination } = &change {
                    record.owned.remove(destination);
                    record.save();
                }
            }
            Err(error) => {
                complete = false;
                tracing::warn!(
                    %error,
                    ?change,
                    "changing a pod route (are the nodes on one L2 segment? \
                     otherwise route the pod CIDRs yourself)"
                );
            }
        }
    }
    // Recorded routes that are neither installed nor desired are forgotten.
    let before = record.owned.len();
    record.owned.retain(|c| {
        desired.contains_key(c)
            || installed
                .iter()
                .any(|r| r.destination == *c && r.protocol == Some(ROUTE_PROTOCOL))
    });
    if record.owned.len() != before {
        record.save();
    }
    complete
}

/// Watches the Nodes and keeps one route per other Node in this network namespace, until the
/// future is dropped. Routes stay when the agent stops (as flannel's do); the next start
/// brings them up to date.
pub async fn run(client: kube::Client, config: RouteConfig) {
    let api: Api<Node> = Api::all(client);
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut record = Record::load(config.record.clone());
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut listing: BTreeMap<String, Node> = BTreeMap::new();
    let mut synced = false;
    let mut applied: Option<BTreeMap<Ipv4Net, Ipv4Addr>> = None;
    let mut resync = tokio::time::interval(RESYNC_INTERVAL);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(node = %config.node_name, "pod route controller started");
    loop {
        let force = tokio::select! {
            event = stream.next() => {
                match event {
                    Some(Ok(Event::Init)) => listing.clear(),
                    Some(Ok(Event::InitApply(node))) => {
                        listing.insert(node.metadata.name.clone().unwrap_or_default(), node);
                    }
                    Some(Ok(Event::InitDone)) => {
                        nodes = std::mem::take(&mut listing);
                        synced = true;
                    }
                    Some(Ok(Event::Apply(node))) => {
                        nodes.insert(node.metadata.name.clone().unwrap_or_default(), node);
                    }
                    Some(Ok(Event::Delete(node))) => {
                        nodes.remove(node.metadata.name.as_deref().unwrap_or_default());
                    }
                    Some(Err(error)) => tracing::warn!(%error, "watching the nodes"),
                    None => return,
                }
                false
            }
            _ = resync.tick() => true,
        };
        if !synced {
            continue;
        }
        let desired = desired_routes(nodes.values(), &config);
        if force || applied.as_ref() != Some(&desired) {
            let complete = reconcile(&desired, &mut record).await;
            // An incomplete pass is retried on the next event or tick.
            applied = complete.then_some(desired);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Ipv4Net {
        text.parse().unwrap()
    }

    fn node(name: &str, cidr: &str, ip: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": [
                {"type": "Hostname", "address": name},
                {"type": "InternalIP", "address": ip}
            ]}
        }))
        .unwrap()
    }

    fn config() -> RouteConfig {
        RouteConfig {
            node_name: "a".into(),
            pod_cidr: net("10.244.1.0/24"),
            node_ip: "192.168.7.2".parse().unwrap(),
            record: PathBuf::from("/nonexistent/pod-routes.json"),
        }
    }

    #[test]
    fn prefixes_parse_with_host_bits_cleared() {
        assert_eq!(net("10.244.1.7/24").to_string(), "10.244.1.0/24");
        assert_eq!(net("10.1.2.3").to_string(), "10.1.2.3/32");
        assert!("10.1.2.0/33".parse::<Ipv4Net>().is_err());
        assert!("default".parse::<Ipv4Net>().is_err());
        assert!(net("10.244.0.0/16").overlaps(&net("10.244.3.0/24")));
        assert!(!net("10.244.1.0/24").overlaps(&net("10.244.2.0/24")));
    }

    #[test]
    fn one_route_per_other_node_and_none_for_itself() {
        let nodes = [
            node("a", "10.244.1.0/24", "192.168.7.2"),
            node("b", "10.244.2.0/24", "192.168.7.3"),
            node("c", "10.244.3.0/24", "192.168.7.4"),
        ];
        let routes = desired_routes(&nodes, &config());
        assert_eq!(
            routes.into_iter().collect::<Vec<_>>(),
            vec![
                (net("10.244.2.0/24"), "192.168.7.3".parse().unwrap()),
                (net("10.244.3.0/24"), "192.168.7.4".parse().unwrap()),
            ]
        );
    }

    #[test]
    fn no_route_via_local_addresses_overlaps_or_deleting_nodes() {
        let mut deleting = node("e", "10.244.5.0/24", "192.168.7.6");
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        let nodes = [
            node("b", "10.244.2.0/24", "127.0.0.1"),
            node("c", "10.244.1.0/25", "192.168.7.4"),
            node("d", "10.244.6.0/24", "192.168.7.2"),
            deleting,
            node("f", "10.244.7.0/24", "192.168.7.7"),
            node("g", "10.244.7.0/24", "192.168.7.8"),
            node("h", "fd00::/64", "192.168.7.9"),
        ];
        let routes = desired_routes(&nodes, &config());
        assert_eq!(
            routes.into_iter().collect::<Vec<_>>(),
            vec![(net("10.244.7.0/24"), "192.168.7.7".parse().unwrap())]
        );
    }

    fn installed(dst: &str, gateway: Option<&str>, protocol: Option<u8>) -> InstalledRoute {
        InstalledRoute {
            destination: net(dst),
            gateway: gateway.map(|g| g.parse().unwrap()),
            protocol,
        }
    }

    #[test]
    fn the_plan_adds_replaces_and_deletes_only_its_own_routes() {
        let desired: BTreeMap<Ipv4Net, Ipv4Addr> = [
            (net("10.244.2.0/24"), "192.168.7.3".parse().unwrap()),
            (net("10.244.3.0/24"), "192.168.7.4".parse().unwrap()),
            (net("10.244.4.0/24"), "192.168.7.5".parse().unwrap()),
            (net("10.244.9.0/24"), "192.168.7.9".parse().unwrap()),
        ]
        .into();
        let table = [
            // Ours and current: kept.
            installed("10.244.2.0/24", Some("192.168.7.3"), Some(ROUTE_PROTOCOL)),
            // Ours, but the node moved: replaced.
            installed("10.244.3.0/24", Some("192.168.7.40"), Some(ROUTE_PROTOCOL)),
            // Ours, the node is gone: deleted.
            installed("10.244.5.0/24", Some("192.168.7.6"), Some(ROUTE_PROTOCOL)),
            // Tagged but another agent's (not recorded): left alone.
            installed("10.244.6.0/24", Some("192.168.7.7"), Some(ROUTE_PROTOCOL)),
            // Someone's static route in the way: left alone, no route of ours.
            installed("10.244.9.0/24", Some("192.168.7.1"), Some(4)),
            installed("192.168.7.0/24", None, Some(2)),
        ];
        let owned: BTreeSet<Ipv4Net> = [
            net("10.244.2.0/24"),
            net("10.244.3.0/24"),
            net("10.244.5.0/24"),
            net("10.244.9.0/24"),
        ]
        .into();
        assert_eq!(
            plan(&desired, &table, &owned),
            vec![
                RouteChange::Replace {
                    destination: net("10.244.3.0/24"),
                    gateway: "192.168.7.4".parse().unwrap()
                },
                RouteChange::Replace {
                    destination: net("10.244.4.0/24"),
                    gateway: "192.168.7.5".parse().unwrap()
                },
                RouteChange::Delete {
                    destination: net("10.244.5.0/24")
                },
            ]
        );
    }

    #[test]
    fn the_record_of_own_routes_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/pod-routes.json");
        let mut record = Record::load(path.clone());
        assert!(record.owned.is_empty());
        record.owned.insert(net("10.244.2.0/24"));
        record.owned.insert(net("10.244.3.0/24"));
        record.save();
        let again = Record::load(path.clone());
        assert_eq!(again.owned, record.owned);
        // A damaged record is an empty one (nothing is deleted on its account).
        std::fs::write(&path, b"not json").unwrap();
        assert!(Record::load(path).owned.is_empty());
    }

    #[test]
    fn ip_json_output_parses() {
        let json = br#"[{"dst":"default","gateway":"192.0.2.1","dev":"eth0","flags":[]},
            {"dst":"192.0.2.0/24","dev":"eth0","protocol":"2","scope":"253","prefsrc":"192.0.2.2","flags":[]},
            {"dst":"10.244.2.0/24","gateway":"192.168.7.3","dev":"veth0","protocol":"78","flags":[]},
            {"dst":"10.9.9.9","gateway":"192.168.7.3","dev":"veth0","protocol":"static","flags":[]}]"#;
        assert_eq!(
            parse_routes(json).unwrap(),
            vec![
                installed("192.0.2.0/24", None, Some(2)),
                installed("10.244.2.0/24", Some("192.168.7.3"), Some(ROUTE_PROTOCOL)),
                installed("10.9.9.9/32", Some("192.168.7.3"), None),
            ]
        );
    }
}
