//! The host's resolvers, from resolv.conf.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use crate::DnsError;

/// Where the host's resolver configuration lives.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

/// The `nameserver` addresses of a resolv.conf file, port 53.
pub fn read_nameservers(path: impl AsRef<Path>) -> Result<Vec<SocketAddr>, DnsError> {
    let path = path.as_ref();
    let text =
        std::fs::read_to_string(path).map_err(|e| DnsError::ResolvConf(path.to_path_buf(), e))?;
    Ok(parse_nameservers(&text))
}

/// The `nameserver` addresses of resolv.conf text, port 53 (IPv6 zone suffixes are dropped;
/// lines that do not parse are skipped, as the C library does).
pub fn parse_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next()? != "nameserver" {
                return None;
            }
            let address = words.next()?;
            let address = address.split('%').next()?;
            address.parse::<IpAddr>().ok()
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_are_read_in_order_and_junk_is_skipped() {
        let text = "# generated\nsearch example.com\nnameserver 10.0.0.2\n\
                    nameserver   fe80::1%eth0\nnameserver bogus\noptions ndots:2\n\
                    ;nameserver 1.1.1.1\nnameserver 127.0.0.53 # stub\n";
        let servers = parse_nameservers(text);
        assert_eq!(
            servers,
            vec![
                "10.0.0.2:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap(),
                "127.0.0.53:53".parse().unwrap(),
            ]
        );
    }

    #[test]
    fn a_missing_file_is_an_error() {
        assert!(matches!(
            read_nameservers("/nonexistent/resolv.conf"),
            Err(DnsError::ResolvConf(..))
        ));
    }
}
