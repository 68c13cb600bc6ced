//! Who may use the agent's API. The TLS handshake already proved that the client holds a
//! certificate of the cluster CA; that is authentication. Authorization is upstream's answer
//! for a cluster without RBAC bindings for the kubelet API: only `system:masters` (the API
//! server's kubelet client `kube-apiserver-kubelet-client`, and admins) may read logs, exec,
//! attach or port-forward. Other certificates of the CA, notably the agents' own
//! `system:node:<name>` client certificates, are refused with a 403, so that one agent's
//! credentials do not open the pods of the others.

/// The group that may use the agent's API.
pub const ALLOWED_GROUP: &str = "system:masters";

/// The user and groups of a client certificate (its CN and O, as upstream reads them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The certificate's common name.
    pub user: String,
    /// The certificate's organizations.
    pub groups: Vec<String>,
}

impl PeerIdentity {
    /// The identity in a DER client certificate; `None` if it cannot be parsed or has no CN.
    pub fn from_certificate(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = cert.subject();
        let user = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
        let groups = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(str::to_owned))
            .collect();
        Some(Self { user, groups })
    }
}

/// `Ok` if `peer` may call the agent's API, or the message of the 403 (upstream's form,
/// naming the user and what was asked).
pub fn authorize(peer: Option<&PeerIdentity>, method: &http::Method) -> Result<(), String> {
    match peer {
        Some(peer) if peer.groups.iter().any(|g| g == ALLOWED_GROUP) => Ok(()),
        Some(peer) => Err(format!(
            "Forbidden (user={}, verb={}, resource=nodes, subresource=proxy): only {ALLOWED_GROUP} may use the agent's API",
            peer.user,
            verb(method)
        )),
        None => Err(format!(
            "Forbidden (user=unknown, verb={}, resource=nodes, subresource=proxy): the client certificate names no user",
            verb(method)
        )),
    }
}

/// The authorization verb of an HTTP method, as the kubelet maps it.
fn verb(method: &http::Method) -> &'static str {
    match *method {
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "get",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(user: &str, groups: &[&str]) -> PeerIdentity {
        PeerIdentity {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn masters_are_allowed_and_nodes_are_not() {
        let api_server = identity("kube-apiserver-kubelet-client", &["system:masters"]);
        assert_eq!(authorize(Some(&api_server), &http::Method::GET), Ok(()));
        let node = identity("system:node:b", &["system:nodes"]);
        let refusal = authorize(Some(&node), &http::Method::POST).unwrap_err();
        assert!(
            refusal.starts_with(
                "Forbidden (user=system:node:b, verb=create, resource=nodes, subresource=proxy)"
            ),
            "{refusal}"
        );
        assert!(authorize(None, &http::Method::GET)
            .unwrap_err()
            .contains("user=unknown, verb=get"));
    }

    #[test]
    fn the_identity_is_the_certificates_cn_and_organizations() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:a");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:nodes");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            PeerIdentity::from_certificate(cert.der()),
            Some(identity("system:node:a", &["system:nodes"]))
        );
        assert_eq!(PeerIdentity::from_certificate(b"not a certificate"), None);
    }
}
