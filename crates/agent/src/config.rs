//! The agent's configuration: which Node it registers, what that Node offers, and how often
//! it reports.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use std::time::Duration;

use crate::ipam::PodCidr;

/// Everything the agent needs to register its Node and run its pods.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The Node's name (and its `kubernetes.io/hostname` label).
    pub node_name: String,
    /// CPU capacity, in millicores.
    pub cpu_millis: u64,
    /// Memory capacity, in bytes.
    pub memory_bytes: u64,
    /// How many pods the Node accepts.
    pub max_pods: u32,
    /// The range pod IPs come from.
    pub pod_cidr: PodCidr,
    /// The Node's InternalIP (and the pods' hostIP).
    pub node_ip: IpAddr,
    /// The port of the agent's server ([`crate::server`]) that the Node advertises in
    /// `status.daemonEndpoints.kubeletEndpoint.Port`; 0 when it runs none.
    pub kubelet_port: u16,
    /// How often the Node's Lease is renewed.
    pub lease_renew_interval: Duration,
    /// The Lease's `leaseDurationSeconds`.
    pub lease_duration_seconds: i32,
    /// How often the Node's status (and its Ready heartbeat) is written.
    pub node_status_interval: Duration,
    /// The first restart back-off of a crashed container; doubled on each restart.
    pub restart_backoff_initial: Duration,
    /// The longest restart back-off.
    pub restart_backoff_max: Duration,
    /// How many pod status writes may be in flight at once.
    pub status_write_concurrency: usize,
    /// Where the agent keeps what its pods need on disk: volumes and logs.
    pub state_dir: PathBuf,
    /// How often mounted configMaps, secrets and downward API files are brought up to date.
    pub volume_refresh_interval: Duration,
    /// Settings of the simulated runtime.
    pub simulated: SimulatedConfig,
}

/// Settings of the simulated runtime.
#[derive(Clone, Debug)]
pub struct SimulatedConfig {
    /// How long a container of a `Never`/`OnFailure` pod runs when no annotation says.
    pub default_run_time: Duration,
    /// How long creating a sandbox takes (the ContainerCreating stage).
    pub sandbox_create_delay: Duration,
}

impl Default for SimulatedConfig {
    fn default() -> Self {
        Self {
            default_run_time: Duration::from_secs(1),
            sandbox_create_delay: Duration::ZERO,
        }
    }
}

impl Default for AgentConfig {
    /// A Node named after this machine, offering its cores and memory.
    fn default() -> Self {
        Self {
            node_name: host_name(),
            cpu_millis: host_cpu_millis(),
            memory_bytes: host_memory_bytes(),
            max_pods: 1024,
            pod_cidr: PodCidr::DEFAULT,
            node_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            kubelet_port: 0,
            lease_renew_interval: Duration::from_secs(10),
            lease_duration_seconds: 40,
            node_status_interval: Duration::from_secs(60),
            restart_backoff_initial: Duration::from_secs(10),
            restart_backoff_max: Duration::from_secs(300),
            status_write_concurrency: 16,
            state_dir: PathBuf::from("/var/lib/nodeless/agent"),
            volume_refresh_interval: Duration::from_secs(5),
            simulated: SimulatedConfig::default(),
        }
    }
}

impl AgentConfig {
    /// A virtual node sized for the simulated runtime, whose pods use nothing: 1024 vCPU,
    /// 4 TiB and 2048 pods, so that a thousand pods of the smallest provisioned size
    /// (`0.25vCPU 0.5GiB`) fit; still named after this machine.
    pub fn simulated() -> Self {
        Self {
            cpu_millis: 1024 * 1000,
            memory_bytes: 4 << 40,
            max_pods: 2048,
            ..Self::default()
        }
    }
}

/// This machine's host name, lower-cased as a Node name must be (`localhost` if unknown).
pub fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|n| n.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if name.is_empty() {
        "localhost".to_string()
    } else {
        name
    }
}

/// This machine's cores, in millicores.
pub fn host_cpu_millis() -> u64 {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    cores as u64 * 1000
}

/// This machine's memory in bytes (`MemTotal` of /proc/meminfo; 1 GiB if unknown).
pub fn host_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| parse_mem_total(&text))
        .unwrap_or(1 << 30)
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_read_in_kib() {
        let text = "MemTotal:        8039944 kB\nMemFree:  100 kB\n";
        assert_eq!(parse_mem_total(text), Some(8039944 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB"), None);
    }

    #[test]
    fn defaults_describe_this_machine() {
        let c = AgentConfig::default();
        assert!(!c.node_name.is_empty());
        assert!(c.cpu_millis >= 1000);
        assert_eq!(c.pod_cidr.to_string(), "10.244.0.0/16");
        let sim = AgentConfig::simulated();
        assert!(sim.pod_cidr.pod_addresses() >= sim.max_pods);
        assert_eq!(sim.cpu_millis, 1_024_000);
    }
}
