//! The CNI network of the node: a Linux bridge with host-local IPAM on the node's pod CIDR,
//! written as one `.conflist` into containerd's CNI `conf_dir`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::ContainerdError;

/// The CNI spec version written; the reference plugins 1.1.x accept it.
pub const CNI_VERSION: &str = "1.0.0";

/// The longest name of a Linux network interface (IFNAMSIZ - 1).
const MAX_INTERFACE_NAME: usize = 15;

/// The node's pod network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkOptions {
    /// The name of the Linux bridge (at most 15 characters), e.g. `nodeless0`.
    pub bridge: String,
    /// The node's pod CIDR (IPv4), e.g. `10.244.0.0/24`; pods get addresses from it and the
    /// bridge gets its first address as the pods' gateway.
    pub subnet: String,
    /// The name of the CNI network (the conflist's `name`), e.g. `nodeless`.
    pub network_name: String,
}

impl Default for NetworkOptions {
    fn default() -> Self {
        Self {
            bridge: "nodeless0".to_string(),
            subnet: "10.244.0.0/24".to_string(),
            network_name: "nodeless".to_string(),
        }
    }
}

/// An IPv4 subnet, `address/prefix`, with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// The network address.
    pub network: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
}

impl Subnet {
    /// Parses `10.244.0.0/24`; the prefix must leave room for a gateway and pods (≤ 30).
    pub fn parse(text: &str) -> Result<Self, ContainerdError> {
        let invalid = |why: &str| {
            ContainerdError::Config(format!(
                "pod subnet {text:?}: {why} (expected an IPv4 CIDR such as 10.244.0.0/24)"
            ))
        };
        let (address, prefix) = text.split_once('/').ok_or_else(|| invalid("no /prefix"))?;
        let network: Ipv4Addr = address
            .parse()
            .map_err(|_| invalid("not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| invalid("the prefix is not a number"))?;
        if prefix > 30 {
            return Err(invalid("the prefix must be at most 30"));
        }
        if prefix < 8 {
            return Err(invalid("the prefix must be at least 8"));
        }
        let mask = u32::MAX << (32 - u32::from(prefix));
        if u32::from(network) & !mask != 0 {
            let base = Ipv4Addr::from(u32::from(network) & mask);
            return Err(invalid(&format!(
                "host bits are set (the network is {base}/{prefix})"
            )));
        }
        Ok(Self { network, prefix })
    }

    /// Whether `address` is in the subnet.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - u32::from(self.prefix));
        u32::from(address) & mask == u32::from(self.network)
    }

    /// The first host address (the gateway on the bridge).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Checks a Linux bridge name: 1 to 15 characters of letters, digits, `-`, `_` and `.`.
pub fn validate_bridge_name(name: &str) -> Result<(), ContainerdError> {
    let invalid = |why: &str| ContainerdError::Config(format!("bridge name {name:?}: {why}"));
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > MAX_INTERFACE_NAME {
        return Err(invalid(
            "longer than 15 characters (the limit of Linux interface names)",
        ));
    }
    if name == "." || name == ".." {
        return Err(invalid("not a usable interface name"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(invalid(
            "only letters, digits, '-', '_' and '.' are allowed",
        ));
    }
    Ok(())
}

/// Checks a CNI network name (letters, digits, `-`, `_`, `.`; not empty).
fn validate_network_name(name: &str) -> Result<(), ContainerdError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ContainerdError::Config(format!(
            "CNI network name {name:?}: use letters, digits, '-', '_' and '.'"
        )));
    }
    Ok(())
}

/// The conflist of the network: bridge (the pods' gateway, hairpin) with host-local IPAM whose
/// leases live in `ipam_data_dir`. Loopback is set up by containerd's CRI itself. No portmap:
/// `hostPort` is refused by the serverless rules, and each plugin in the chain costs a process
/// start on every sandbox.
pub fn conflist(opts: &NetworkOptions, ipam_data_dir: &Path) -> Result<Value, ContainerdError> {
    validate_bridge_name(&opts.bridge)?;
    validate_network_name(&opts.network_name)?;
    let subnet = Subnet::parse(&opts.subnet)?;
    Ok(json!({
        "cniVersion": CNI_VERSION,
        "name": opts.network_name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": opts.bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": subnet.to_string(), "gateway": subnet.gateway().to_string() }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "dataDir": ipam_data_dir,
                },
            },
        ],
    }))
}

/// Writes the network's conflist into `conf_dir` (created if needed) as
/// `10-<network_name>.conflist`, with host-local's leases in `<conf_dir>/../ipam`; returns
/// the file's path.
pub fn write_config(conf_dir: &Path, opts: &NetworkOptions) -> Result<PathBuf, ContainerdError> {
    let ipam_data_dir = conf_dir.parent().unwrap_or(conf_dir).join("ipam");
    let config = conflist(opts, &ipam_data_dir)?;
    std::fs::create_dir_all(conf_dir)
        .map_err(|error| ContainerdError::io(format!("creating {}", conf_dir.display()), error))?;
    let path = conf_dir.join(format!("10-{}.conflist", opts.network_name));
    let text = serde_json::to_string_pretty(&config)
        .map_err(|error| ContainerdError::Config(format!("encoding the CNI config: {error}")))?;
    // Written beside and renamed, so containerd never reads half a file.
    let partial = conf_dir.join(format!(".{}.conflist.partial", opts.network_name));
    std::fs::write(&partial, text)
        .map_err(|error| ContainerdError::io(format!("writing {}", partial.display()), error))?;
    std::fs::rename(&partial, &path)
        .map_err(|error| ContainerdError::io(format!("writing {}", path.display()), error))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(bridge: &str, subnet: &str) -> NetworkOptions {
        NetworkOptions {
            bridge: bridge.to_string(),
            subnet: subnet.to_string(),
            network_name: "nodeless".to_string(),
        }
    }

    #[test]
    fn the_conflist_has_the_bridge_with_host_local() {
        let config = conflist(
            &options("nodeless0", "10.244.3.0/24"),
            Path::new("/data/ipam"),
        )
        .unwrap();
        assert_eq!(config["cniVersion"], "1.0.0");
        assert_eq!(config["name"], "nodeless");
        let plugins = config["plugins"].as_array().unwrap();
        assert_eq!(plugins.len(), 1);
        let bridge = &plugins[0];
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["bridge"], "nodeless0");
        assert_eq!(bridge["isGateway"], true);
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["hairpinMode"], true);
        let ipam = &bridge["ipam"];
        assert_eq!(ipam["type"], "host-local");
        assert_eq!(ipam["ranges"][0][0]["subnet"], "10.244.3.0/24");
        assert_eq!(ipam["ranges"][0][0]["gateway"], "10.244.3.1");
        assert_eq!(ipam["routes"], json!([{ "dst": "0.0.0.0/0" }]));
        assert_eq!(ipam["dataDir"], "/data/ipam");
    }

    #[test]
    fn write_config_writes_a_conflist_with_ipam_data_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let conf_dir = dir.path().join("cni/net.d");
        let path = write_config(&conf_dir, &options("nl-test0", "10.99.0.0/16")).unwrap();
        assert_eq!(path, conf_dir.join("10-nodeless.conflist"));
        let written: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            written["plugins"][0]["ipam"]["dataDir"],
            json!(dir.path().join("cni/ipam"))
        );
        assert_eq!(
            std::fs::read_dir(&conf_dir).unwrap().count(),
            1,
            "no partial file is left"
        );
    }

    #[test]
    fn bridge_names_are_checked() {
        assert!(validate_bridge_name("nodeless0").is_ok());
        assert!(validate_bridge_name("a-b_c.d").is_ok());
        assert!(validate_bridge_name("exactly15chars_").is_ok());
        for bad in [
            "",
            "sixteen_chars_xx",
            "has space",
            "slash/no",
            ".",
            "ünicode",
        ] {
            let error = validate_bridge_name(bad).unwrap_err();
            assert!(error.to_string().contains("bridge name"), "{bad}: {error}");
        }
        assert!(conflist(
            &options("way-too-long-bridge", "10.0.0.0/24"),
            Path::new("/x")
        )
        .is_err());
    }

    #[test]
    fn subnets_are_checked() {
        let subnet = Subnet::parse("10.244.0.0/24").unwrap();
        assert_eq!(subnet.gateway(), Ipv4Addr::new(10, 244, 0, 1));
        assert!(subnet.contains(Ipv4Addr::new(10, 244, 0, 200)));
        assert!(!subnet.contains(Ipv4Addr::new(10, 244, 1, 2)));
        assert_eq!(subnet.to_string(), "10.244.0.0/24");
        for (bad, why) in [
            ("10.244.0.0", "no /prefix"),
            (
                "10.244.0.1/24",
                "host bits are set (the network is 10.244.0.0/24)",
            ),
            ("10.244.0.0/31", "at most 30"),
            ("10.0.0.0/4", "at least 8"),
            ("fd00::/64", "not an IPv4 address"),
            ("10.244.0.0/x", "not a number"),
        ] {
            let error = Subnet::parse(bad).unwrap_err().to_string();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }
}
