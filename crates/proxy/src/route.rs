//! The AnyIP route that makes every address of the service CIDR local to the host.

use std::process::Command;

use tracing::{info, warn};

use crate::config::Ipv4Cidr;
use crate::ProxyError;

/// `local <cidr> dev lo table local`, installed on creation and removed on drop.
#[derive(Debug)]
pub struct LocalRoute {
    cidr: Ipv4Cidr,
}

impl LocalRoute {
    /// Installs (or replaces) the route.
    pub fn install(cidr: Ipv4Cidr) -> Result<Self, ProxyError> {
        let spec = cidr.to_string();
        run_ip(&[
            "route", "replace", "local", &spec, "dev", "lo", "table", "local",
        ])?;
        info!(cidr = %spec, "service CIDR routed to the host (AnyIP)");
        Ok(Self { cidr })
    }
}

impl Drop for LocalRoute {
    fn drop(&mut self) {
        let spec = self.cidr.to_string();
        match run_ip(&[
            "route", "del", "local", &spec, "dev", "lo", "table", "local",
        ]) {
            Ok(()) => info!(cidr = %spec, "service CIDR route removed"),
            Err(error) => warn!(cidr = %spec, %error, "could not remove the service CIDR route"),
        }
    }
}

fn run_ip(args: &[&str]) -> Result<(), ProxyError> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| ProxyError::Route(format!("ip {}: {e}", args.join(" "))))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ProxyError::Route(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}
