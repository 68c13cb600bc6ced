//! `certificates.k8s.io/v1`: CertificateSigningRequest, as upstream's
//! `validateCertificateSigningRequest`: a PEM `CERTIFICATE REQUEST`, a qualified signer
//! name, known usages, and at least ten minutes of requested validity.

use base64::Engine;
use serde_json::Value;

use super::{obj_at, Object};
use crate::error::{FieldError, FieldPath};

/// The usages upstream knows (`certificates.KeyUsage`).
const USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

pub(super) fn validate(
    kind: &str,
    obj: &Object,
    _old: Option<&Object>,
    errs: &mut Vec<FieldError>,
) {
    if kind != "CertificateSigningRequest" {
        return;
    }
    let path = FieldPath::root("spec");
    let empty = Object::new();
    let spec = obj_at(obj, "spec").unwrap_or(&empty);
    let request = spec.get("request").and_then(Value::as_str).unwrap_or("");
    if request.is_empty() {
        errs.push(FieldError::required(path.child("request"), ""));
    } else if !is_pem_request(request) {
        errs.push(FieldError::invalid(
            path.child("request"),
            Value::String(request.chars().take(64).collect()),
            "PEM block type must be CERTIFICATE REQUEST",
        ));
    }
    let usages = spec.get("usages").and_then(Value::as_array);
    match usages {
        None => errs.push(FieldError::required(
            path.child("usages"),
            "usages must be provided",
        )),
        Some(list) if list.is_empty() => errs.push(FieldError::required(
            path.child("usages"),
            "usages must be provided",
        )),
        Some(list) => {
            for (i, usage) in list.iter().enumerate() {
                if !usage.as_str().is_some_and(|u| USAGES.contains(&u)) {
                    errs.push(FieldError::not_supported(
                        path.child("usages").index(i),
                        usage.clone(),
                        USAGES,
                    ));
                }
            }
        }
    }
    let signer = spec.get("signerName").and_then(Value::as_str).unwrap_or("");
    if signer.is_empty() {
        errs.push(FieldError::required(path.child("signerName"), ""));
    } else if !is_signer_name(signer) {
        errs.push(FieldError::invalid(
            path.child("signerName"),
            Value::String(signer.to_string()),
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        ));
    }
    if let Some(seconds) = spec.get("expirationSeconds").and_then(Value::as_i64) {
        if seconds < 600 {
            errs.push(FieldError::invalid(
                path.child("expirationSeconds"),
                Value::from(seconds),
                "may not specify a duration less than 600 seconds (10 minutes)",
            ));
        }
    }
}

/// Whether the base64 `request` decodes to a PEM `CERTIFICATE REQUEST` block.
fn is_pem_request(request: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(request)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .is_some_and(|pem| {
            pem.contains("-----BEGIN CERTIFICATE REQUEST-----")
                && pem.contains("-----END CERTIFICATE REQUEST-----")
        })
}

/// `domain/path`: a DNS subdomain, a slash, and a non-empty path without spaces.
fn is_signer_name(name: &str) -> bool {
    let Some((domain, path)) = name.split_once('/') else {
        return false;
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    domain.contains('.')
        && domain.len() <= 253
        && domain.split('.').all(label_ok)
        && !path.is_empty()
        && path.len() <= 571
        && !path.contains(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(spec: Value) -> Vec<String> {
        let obj = json!({"metadata": {"name": "c"}, "spec": spec});
        let mut errs = Vec::new();
        validate(
            "CertificateSigningRequest",
            obj.as_object().unwrap(),
            None,
            &mut errs,
        );
        errs.iter().map(|e| e.field.clone()).collect()
    }

    fn pem() -> String {
        base64::engine::general_purpose::STANDARD.encode(
            "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n",
        )
    }

    #[test]
    fn a_complete_request_is_valid() {
        let spec = json!({"request": pem(), "signerName": "kubernetes.io/kubelet-serving",
                          "usages": ["digital signature", "server auth"], "expirationSeconds": 600});
        assert!(errors(spec).is_empty());
    }

    #[test]
    fn missing_and_malformed_fields_are_named() {
        assert_eq!(
            errors(json!({})),
            vec!["spec.request", "spec.usages", "spec.signerName"]
        );
        let bad = json!({"request": base64::engine::general_purpose::STANDARD.encode("hello"),
                         "signerName": "kubelet", "usages": ["server auth", "flying"],
                         "expirationSeconds": 60});
        assert_eq!(
            errors(bad),
            vec![
                "spec.request",
                "spec.usages[1]",
                "spec.signerName",
                "spec.expirationSeconds"
            ]
        );
        assert!(!is_signer_name("Example.com/x"));
        assert!(!is_signer_name("example.com/"));
        assert!(is_signer_name("example.com/custom"));
    }
}
