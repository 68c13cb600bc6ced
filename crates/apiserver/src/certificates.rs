//! `certificates.k8s.io/v1` CertificateSigningRequests: what the API server does with them
//! (the requester recorded on create, the `/status` and `/approval` subresources), and the
//! approve-and-sign rules of the two signers agents use, for the signer controller that
//! holds the CA (`nodeless` runs it next to the controllers):
//!
//! - `kubernetes.io/kube-apiserver-client-kubelet`: the agent's client certificate,
//!   `CN=system:node:<name>, O=system:nodes`, no SANs, client auth. Auto-approved when a
//!   bootstrapper (`system:bootstrappers`) asks, or the node itself (renewal), as upstream's
//!   csrapproving controller does.
//! - `kubernetes.io/kubelet-serving`: the agent's serving certificate, same subject, DNS/IP
//!   SANs only, server auth. Auto-approved when the node itself asks (upstream leaves this to
//!   an external approver; nodeless approves the node's own request).

use base64::Engine;
use serde_json::{json, Value};

use crate::pki::Pki;
use crate::server::Identity;
use crate::ServerError;

/// The signer of agents' client certificates.
pub const CLIENT_KUBELET_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of agents' serving certificates.
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// The group of nodes' client certificates.
pub const NODES_GROUP: &str = "system:nodes";
/// The prefix of a node's user name, followed by the node name.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The longest certificate the signers issue (upstream's default cluster signing duration).
pub const MAX_DURATION: time::Duration = time::Duration::days(365);

const CSR_KIND: &str = "CertificateSigningRequest";

/// On create: records who asks (`spec.username`, `spec.groups`, `spec.uid`), replacing what
/// the client sent, as upstream does. Other kinds are left alone.
pub fn set_requester(
    kind: &nodeless_api::registry::ResourceKind,
    obj: &mut Value,
    user: Option<&Identity>,
) {
    if kind.kind != CSR_KIND || kind.group != "certificates.k8s.io" {
        return;
    }
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.remove("extra");
    spec.remove("uid");
    match user {
        Some(user) => {
            spec.insert("username".into(), json!(user.user));
            spec.insert("groups".into(), json!(user.groups));
        }
        None => {
            spec.remove("username");
            spec.remove("groups");
        }
    }
}

fn conditions(obj: &Value) -> Vec<Value> {
    obj.get("status")
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn is_decision(condition: &Value) -> bool {
    matches!(
        condition.get("type").and_then(Value::as_str),
        Some("Approved" | "Denied")
    )
}

fn stamp(condition: &mut Value) {
    let now = crate::objects::now_rfc3339();
    if let Some(map) = condition.as_object_mut() {
        for field in ["lastUpdateTime", "lastTransitionTime"] {
            if map.get(field).is_none_or(Value::is_null) {
                map.insert(field.into(), json!(now));
            }
        }
    }
}

fn set_status_field(obj: &mut Value, field: &str, value: Option<Value>) {
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({});
    }
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
        match value {
            Some(v) => status.insert(field.to_string(), v),
            None => status.remove(field),
        };
    }
}

/// Builds what a `/status` or `/approval` write stores from the stored object `old` and the
/// written `new`: `/approval` changes the conditions only; `/status` changes the
/// certificate and the conditions other than Approved and Denied, which it keeps.
pub fn keep_for_subresource(old: &Value, new: &mut Value, approval: bool) {
    let mut written = conditions(new);
    written.iter_mut().for_each(stamp);
    let certificate = new
        .get("status")
        .and_then(|s| s.get("certificate"))
        .cloned();
    let mut result = old.clone();
    let merged: Vec<Value> = if approval {
        written
    } else {
        let kept = conditions(old).into_iter().filter(is_decision);
        kept.chain(written.into_iter().filter(|c| !is_decision(c)))
            .collect()
    };
    set_status_field(
        &mut result,
        "conditions",
        (!merged.is_empty()).then(|| json!(merged)),
    );
    if !approval {
        set_status_field(&mut result, "certificate", certificate);
    }
    *new = result;
}

/// Whether the request was approved, denied, or neither yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Pending,
    Approved,
    Denied,
}

/// The decision recorded in a CSR's conditions (a denial wins).
pub fn decision(csr: &Value) -> Decision {
    let conditions = conditions(csr);
    let has = |t: &str| {
        conditions.iter().any(|c| {
            c.get("type").and_then(Value::as_str) == Some(t)
                && c.get("status").and_then(Value::as_str).unwrap_or("True") == "True"
        })
    };
    if has("Denied") {
        Decision::Denied
    } else if has("Approved") {
        Decision::Approved
    } else {
        Decision::Pending
    }
}

/// Whether the CSR is finished: signed, or failed.
pub fn is_finished(csr: &Value) -> bool {
    let has_cert = csr
        .get("status")
        .and_then(|s| s.get("certificate"))
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty());
    has_cert
        || conditions(csr)
            .iter()
            .any(|c| c.get("type").and_then(Value::as_str) == Some("Failed"))
}

/// What a request asks for, read from its PEM and spec.
struct Request {
    signer: String,
    common_name: String,
    organizations: Vec<String>,
    usages: Vec<String>,
    username: String,
    groups: Vec<String>,
    params: rcgen::CertificateSigningRequestParams,
}

fn refuse(message: impl Into<String>) -> ServerError {
    ServerError::Pki(message.into())
}

fn read_request(csr: &Value) -> Result<Request, ServerError> {
    let spec = csr.get("spec").ok_or_else(|| refuse("no spec"))?;
    let text = |field: &str| {
        spec.get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let strings = |field: &str| -> Vec<String> {
        spec.get(field)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let pem_bytes = base64::engine::general_purpose::STANDARD
        .decode(text("request"))
        .map_err(|e| refuse(format!("spec.request is not base64: {e}")))?;
    let pem = String::from_utf8(pem_bytes).map_err(|_| refuse("spec.request is not PEM"))?;
    let params = rcgen::CertificateSigningRequestParams::from_pem(&pem)
        .map_err(|e| refuse(format!("spec.request is not a valid signed CSR: {e}")))?;
    let der = pem_to_der(&pem)?;
    let (_, parsed) = <x509_parser::certification_request::X509CertificationRequest as x509_parser::prelude::FromDer<_>>::from_der(&der)
        .map_err(|e| refuse(format!("parsing the CSR: {e}")))?;
    let subject = &parsed.certification_request_info.subject;
    let common_name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    let organizations = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Ok(Request {
        signer: text("signerName"),
        common_name,
        organizations,
        usages: strings("usages"),
        username: text("username"),
        groups: strings("groups"),
        params,
    })
}

/// Decodes a single PEM block without a PEM crate: the base64 between the armour lines.
fn pem_to_der(pem: &str) -> Result<Vec<u8>, ServerError> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| refuse(format!("spec.request PEM: {e}")))
}

fn is_node_subject(request: &Request) -> bool {
    request.common_name.starts_with(NODE_USER_PREFIX)
        && request.common_name.len() > NODE_USER_PREFIX.len()
        && request.organizations == [NODES_GROUP]
}

/// The reason to auto-approve `csr`, or `None` when it is left to an administrator
/// (`kubectl certificate approve`). Undecided requests only.
pub fn auto_approval(csr: &Value) -> Option<&'static str> {
    if decision(csr) != Decision::Pending {
        return None;
    }
    let request = read_request(csr).ok()?;
    if !is_node_subject(&request) {
        return None;
    }
    let asked_by_the_node = request.username == request.common_name;
    match request.signer.as_str() {
        CLIENT_KUBELET_SIGNER
            if asked_by_the_node
                || request
                    .groups
                    .iter()
                    .any(|g| g == crate::bootstrap_token::BOOTSTRAPPERS_GROUP) =>
        {
            Some("AutoApproved: a node's client certificate, asked for by a bootstrapper or the node")
        }
        KUBELET_SERVING_SIGNER
            if asked_by_the_node && request.groups.iter().any(|g| g == NODES_GROUP) =>
        {
            Some("AutoApproved: a node's serving certificate, asked for by the node")
        }
        _ => None,
    }
}

fn check_usages(request: &Request, needed: &str) -> Result<(), ServerError> {
    let allowed = ["digital signature", "key encipherment", needed];
    if let Some(bad) = request
        .usages
        .iter()
        .find(|u| !allowed.contains(&u.as_str()))
    {
        return Err(refuse(format!(
            "usage {bad:?} is not allowed for {}",
            request.signer
        )));
    }
    if !request.usages.iter().any(|u| u == needed) {
        return Err(refuse(format!(
            "{} needs the usage {needed:?}",
            request.signer
        )));
    }
    Ok(())
}

/// Signs an approved `csr` of one of the two node signers with the CA, now; the
/// certificate (PEM) or why the request cannot be signed (the signer then marks it Failed).
/// `Ok(None)`: the signer is not one of ours, someone else signs it.
pub fn sign(pki: &Pki, csr: &Value) -> Result<Option<String>, ServerError> {
    let now = time::OffsetDateTime::now_utc();
    let request = read_request(csr)?;
    let (needed, purpose) = match request.signer.as_str() {
        CLIENT_KUBELET_SIGNER => ("client auth", rcgen::ExtendedKeyUsagePurpose::ClientAuth),
        KUBELET_SERVING_SIGNER => ("server auth", rcgen::ExtendedKeyUsagePurpose::ServerAuth),
        _ => return Ok(None),
    };
    if !is_node_subject(&request) {
        return Err(refuse(
            "the subject must be CN=system:node:<name>, O=system:nodes",
        ));
    }
    check_usages(&request, needed)?;
    let sans = &request.params.params.subject_alt_names;
    let only_names = sans
        .iter()
        .all(|s| matches!(s, rcgen::SanType::DnsName(_) | rcgen::SanType::IpAddress(_)));
    match request.signer.as_str() {
        CLIENT_KUBELET_SIGNER if !sans.is_empty() => {
            return Err(refuse("a client certificate request may not have SANs"))
        }
        KUBELET_SERVING_SIGNER if sans.is_empty() || !only_names => {
            return Err(refuse(
                "a serving certificate request needs DNS or IP SANs, and only those",
            ))
        }
        _ => {}
    }
    let requested = csr
        .get("spec")
        .and_then(|s| s.get("expirationSeconds"))
        .and_then(Value::as_i64)
        .map(|s| time::Duration::seconds(s.max(600)))
        .unwrap_or(MAX_DURATION);
    let mut params = rcgen::CertificateParams::default();
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, request.common_name.as_str());
    name.push(rcgen::DnType::OrganizationName, NODES_GROUP);
    params.distinguished_name = name;
    params.subject_alt_names = sans.clone();
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.extended_key_usages = vec![purpose];
    params.key_usages = request
        .usages
        .iter()
        .filter_map(|u| match u.as_str() {
            "digital signature" => Some(rcgen::KeyUsagePurpose::DigitalSignature),
            "key encipherment" => Some(rcgen::KeyUsagePurpose::KeyEncipherment),
            _ => None,
        })
        .collect();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + requested.min(MAX_DURATION);
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    let mut to_sign = request.params;
    to_sign.params = params;
    pki.sign_request(to_sign).map(Some)
}

fn random_serial() -> rcgen::SerialNumber {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes[0] &= 0x7f;
    rcgen::SerialNumber::from_slice(&bytes)
}

/// A node's certificate request and its new private key (both PEM), for an agent: subject
/// `CN=system:node:<node_name>, O=system:nodes`, with `sans` (DNS names or IP addresses;
/// empty for a client certificate).
pub fn node_certificate_request(
    node_name: &str,
    sans: &[String],
) -> Result<(String, String), ServerError> {
    let key = rcgen::KeyPair::generate().map_err(|e| refuse(format!("generating a key: {e}")))?;
    let mut params = rcgen::CertificateParams::new(sans.to_vec())
        .map_err(|e| refuse(format!("request SANs: {e}")))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("{NODE_USER_PREFIX}{node_name}"),
    );
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, NODES_GROUP);
    let request = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| refuse(format!("writing the request: {e}")))?;
    Ok((request, key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CSR object as the API server stores it, for a fresh key.
    fn csr_object(
        cn: &str,
        orgs: &[&str],
        sans: &[&str],
        signer: &str,
        usages: &[&str],
        requester: &Identity,
    ) -> Value {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        for o in orgs {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, *o);
        }
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        let mut obj = json!({
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": "csr-1"},
            "spec": {
                "request": base64::engine::general_purpose::STANDARD.encode(pem),
                "signerName": signer,
                "usages": usages,
                "username": "forged",
            }
        });
        let kind = nodeless_api::registry::by_kind("certificates.k8s.io", "v1", CSR_KIND).unwrap();
        set_requester(kind, &mut obj, Some(requester));
        obj
    }

    fn bootstrapper() -> Identity {
        Identity {
            user: "system:bootstrap:abcdef".into(),
            groups: vec!["system:bootstrappers".into(), "system:authenticated".into()],
        }
    }

    fn node(name: &str) -> Identity {
        Identity {
            user: format!("system:node:{name}"),
            groups: vec![NODES_GROUP.into()],
        }
    }

    fn approve(csr: &mut Value) {
        let old = csr.clone();
        let mut written = csr.clone();
        written["status"] =
            json!({"conditions": [{"type": "Approved", "status": "True", "reason": "test"}]});
        keep_for_subresource(&old, &mut written, true);
        *csr = written;
    }

    fn parsed_cert(pem: &str) -> (String, Vec<String>, Vec<String>, String) {
        let der = rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        let orgs = cert
            .subject()
            .iter_organization()
            .map(|o| o.as_str().unwrap().to_string())
            .collect();
        let sans = cert
            .subject_alternative_name()
            .unwrap()
            .map(|s| {
                s.value
                    .general_names
                    .iter()
                    .map(|n| n.to_string())
                    .collect()
            })
            .unwrap_or_default();
        (cn, orgs, sans, cert.issuer().to_string())
    }

    #[test]
    fn agents_requests_are_what_the_signers_accept() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path()).unwrap();
        let (request, key) =
            node_certificate_request("n1", &["n1".into(), "10.0.0.7".into()]).unwrap();
        assert!(key.contains("PRIVATE KEY"));
        let mut csr = json!({"spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(request),
            "signerName": KUBELET_SERVING_SIGNER,
            "usages": ["digital signature", "server auth"],
        }});
        let kind = nodeless_api::registry::by_kind("certificates.k8s.io", "v1", CSR_KIND).unwrap();
        set_requester(kind, &mut csr, Some(&node("n1")));
        assert!(auto_approval(&csr).is_some());
        let (_, _, sans, _) = parsed_cert(&sign(&pki, &csr).unwrap().unwrap());
        assert!(
            sans.iter()
                .any(|s| s.contains("10.0.0.7") || s.contains("0a:00:00:07")),
            "{sans:?}"
        );
    }

    #[test]
    fn the_requester_replaces_what_the_client_sent() {
        let csr = csr_object(
            "system:node:a",
            &[NODES_GROUP],
            &[],
            CLIENT_KUBELET_SIGNER,
            &["client auth"],
            &bootstrapper(),
        );
        assert_eq!(csr["spec"]["username"], json!("system:bootstrap:abcdef"));
        assert_eq!(csr["spec"]["groups"][0], json!("system:bootstrappers"));
    }

    #[test]
    fn bootstrappers_get_client_certificates_approved_and_signed() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path()).unwrap();
        let mut csr = csr_object(
            "system:node:a",
            &[NODES_GROUP],
            &[],
            CLIENT_KUBELET_SIGNER,
            &["digital signature", "client auth"],
            &bootstrapper(),
        );
        assert!(auto_approval(&csr).is_some());
        approve(&mut csr);
        assert_eq!(decision(&csr), Decision::Approved);
        assert!(auto_approval(&csr).is_none(), "decided already");
        let pem = sign(&pki, &csr).unwrap().unwrap();
        let (cn, orgs, sans, issuer) = parsed_cert(&pem);
        assert_eq!(cn, "system:node:a");
        assert_eq!(orgs, vec![NODES_GROUP]);
        assert!(sans.is_empty());
        assert!(issuer.contains("nodeless-ca"), "{issuer}");
    }

    #[test]
    fn serving_certificates_are_approved_for_the_node_itself_only() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path()).unwrap();
        let usages = ["digital signature", "key encipherment", "server auth"];
        let own = csr_object(
            "system:node:a",
            &[NODES_GROUP],
            &["a", "127.0.0.1"],
            KUBELET_SERVING_SIGNER,
            &usages,
            &node("a"),
        );
        assert!(auto_approval(&own).is_some());
        let other = csr_object(
            "system:node:b",
            &[NODES_GROUP],
            &["b"],
            KUBELET_SERVING_SIGNER,
            &usages,
            &node("a"),
        );
        assert!(auto_approval(&other).is_none());
        let by_bootstrapper = csr_object(
            "system:node:a",
            &[NODES_GROUP],
            &["a"],
            KUBELET_SERVING_SIGNER,
            &usages,
            &bootstrapper(),
        );
        assert!(auto_approval(&by_bootstrapper).is_none());
        let pem = sign(&pki, &own).unwrap().unwrap();
        let (cn, _, sans, _) = parsed_cert(&pem);
        assert_eq!(cn, "system:node:a");
        assert!(sans.iter().any(|s| s.contains('a')), "{sans:?}");
        assert_eq!(sans.len(), 2, "{sans:?}");
    }

    #[test]
    fn requests_outside_the_signers_rules_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path()).unwrap();
        let admin = csr_object(
            "admin",
            &["system:masters"],
            &[],
            CLIENT_KUBELET_SIGNER,
            &["client auth"],
            &bootstrapper(),
        );
        assert!(auto_approval(&admin).is_none());
        assert!(sign(&pki, &admin).is_err());
        let with_sans = csr_object(
            "system:node:a",
            &[NODES_GROUP],
            &["a"],
            CLIENT_KUBELET_SIGNER,
            &["client auth"],
            &bootstrapper(),
        );
        assert!(sign(&pki, &with_sans).is_err());
        let wrong_usage = csr_object(
            "system:node:a",
            &[NODES_GROUP],
            &["a"],
            KUBELET_SERVING_SIGNER,
            &["client auth"],
            &node("a"),
        );
        assert!(sign(&pki, &wrong_usage).is_err());
        let no_sans = csr_object(
            "system:node:a",
            &[NODES_GROUP],
            &[],
            KUBELET_SERVING_SIGNER,
            &["server auth"],
            &node("a"),
        );
        assert!(sign(&pki, &no_sans).is_err());
        let foreign = csr_object(
            "system:node:a",
            &[NODES_GROUP],
            &[],
            "example.com/other",
            &["client auth"],
            &node("a"),
        );
        assert!(sign(&pki, &foreign).unwrap().is_none());
        let mut garbage = foreign.clone();
        garbage["spec"]["request"] = json!("bm90IGEgY3Ny");
        assert!(sign(&pki, &garbage).is_err());
    }

    #[test]
    fn status_writes_keep_the_decision_and_approval_writes_keep_the_certificate() {
        let old = json!({"spec": {"signerName": "x"}, "status": {"conditions": [{"type": "Approved", "status": "True"}]}});
        let mut status_write = json!({"spec": {"signerName": "changed"}, "status": {"certificate": "Q0VSVA==", "conditions": [{"type": "Denied", "status": "True"}]}});
        keep_for_subresource(&old, &mut status_write, false);
        assert_eq!(status_write["spec"]["signerName"], json!("x"));
        assert_eq!(status_write["status"]["certificate"], json!("Q0VSVA=="));
        assert_eq!(decision(&status_write), Decision::Approved);
        assert!(is_finished(&status_write));
        let mut approval_write = json!({"status": {"certificate": "other", "conditions": [{"type": "Denied", "status": "True"}]}});
        keep_for_subresource(&status_write, &mut approval_write, true);
        assert_eq!(approval_write["status"]["certificate"], json!("Q0VSVA=="));
        assert_eq!(decision(&approval_write), Decision::Denied);
        assert!(approval_write["status"]["conditions"][0]["lastUpdateTime"].is_string());
    }
}
