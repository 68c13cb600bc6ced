//! `discovery.k8s.io/v1`: EndpointSlice.

use serde_json::Value;

use super::{immutable, obj_at, objects_at, one_of, port_number_errors, str_at, Object};
use crate::error::{FieldError, FieldPath};
use crate::names::{is_dns1123_label, is_dns1123_subdomain};

const ADDRESS_TYPES: &[&str] = &["IPv4", "IPv6", "FQDN"];
/// Upstream's `maxAddresses` per endpoint.
const MAX_ADDRESSES: usize = 100;
/// Upstream's `maxEndpoints` and `maxPorts` per slice.
const MAX_ENDPOINTS: usize = 1000;
const MAX_PORTS: usize = 20000;

pub(super) fn validate(kind: &str, obj: &Object, old: Option<&Object>, errs: &mut Vec<FieldError>) {
    if kind != "EndpointSlice" {
        return;
    }
    let root = FieldPath::default();
    one_of(obj, "addressType", ADDRESS_TYPES, true, &root, errs);
    let address_type = str_at(obj, "addressType");
    let endpoints = objects_at(obj, "endpoints");
    if endpoints.len() > MAX_ENDPOINTS {
        errs.push(FieldError::too_long("endpoints", MAX_ENDPOINTS));
    }
    for (i, endpoint) in endpoints {
        let path = FieldPath::root("endpoints").index(i);
        let addresses = endpoint
            .get("addresses")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if addresses.is_empty() {
            errs.push(FieldError::required(
                path.child("addresses"),
                "must contain at least 1 address",
            ));
        } else if addresses.len() > MAX_ADDRESSES {
            errs.push(FieldError::too_long(path.child("addresses"), MAX_ADDRESSES));
        }
        for (j, address) in addresses.iter().enumerate() {
            let text = address.as_str().unwrap_or("");
            let address_path = path.child("addresses").index(j);
            match address_type {
                "IPv4" if text.parse::<std::net::Ipv4Addr>().is_err() => errs.push(
                    FieldError::invalid(address_path, text.into(), "must be a valid IPv4 address"),
                ),
                "IPv6" if text.parse::<std::net::Ipv6Addr>().is_err() => errs.push(
                    FieldError::invalid(address_path, text.into(), "must be a valid IPv6 address"),
                ),
                "FQDN" => {
                    for msg in is_dns1123_subdomain(text) {
                        errs.push(FieldError::invalid(&address_path, text.into(), msg));
                    }
                }
                _ => {}
            }
        }
        let hostname = str_at(endpoint, "hostname");
        if !hostname.is_empty() {
            for msg in is_dns1123_label(hostname) {
                errs.push(FieldError::invalid(
                    path.child("hostname"),
                    hostname.into(),
                    msg,
                ));
            }
        }
        if let Some(target) = obj_at(endpoint, "targetRef") {
            if str_at(target, "name").is_empty() {
                errs.push(FieldError::required(
                    path.child("targetRef").child("name"),
                    "",
                ));
            }
        }
    }
    let ports = objects_at(obj, "ports");
    if ports.len() > MAX_PORTS {
        errs.push(FieldError::too_long("ports", MAX_PORTS));
    }
    let mut names: Vec<&str> = Vec::new();
    for (i, port) in ports {
        let path = FieldPath::root("ports").index(i);
        let name = str_at(port, "name");
        if !name.is_empty() {
            for msg in is_dns1123_label(name) {
                errs.push(FieldError::invalid(path.child("name"), name.into(), msg));
            }
        }
        if names.contains(&name) {
            errs.push(FieldError::duplicate(path.child("name"), name.into()));
        } else {
            names.push(name);
        }
        if let Some(number) = port.get("port").filter(|p| !p.is_null()) {
            for msg in port_number_errors(number.as_i64().unwrap_or(0)) {
                errs.push(FieldError::invalid(path.child("port"), number.clone(), msg));
            }
        }
        one_of(port, "protocol", &["SCTP", "TCP", "UDP"], true, &path, errs);
    }
    if let Some(old) = old {
        immutable(obj, old, "addressType", &root, errs);
    }
}
