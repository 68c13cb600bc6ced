//! Image pull credentials from `spec.imagePullSecrets`: secrets of type
//! `kubernetes.io/dockerconfigjson` (`.dockerconfigjson`, `{"auths": {...}}`) and the legacy
//! `kubernetes.io/dockercfg` (`.dockercfg`, the `auths` map itself). A missing or unreadable
//! secret is logged and skipped: upstream warns and pulls anonymously.

use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use super::sources::Sources;
use super::InputError;
use crate::runtime::RegistryAuth;

const DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
const DOCKER_CFG: &str = "kubernetes.io/dockercfg";

/// The credentials of every usable pull secret of `pod`, in the order they are listed.
pub(crate) async fn resolve(
    sources: &mut Sources<'_>,
    pod: &Pod,
) -> Result<Vec<RegistryAuth>, InputError> {
    let mut auths = Vec::new();
    let refs = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.as_ref());
    for reference in refs.into_iter().flatten() {
        let name = &reference.name;
        let Some(secret) = sources.secret(name).await? else {
            tracing::warn!(
                namespace = sources.namespace(),
                secret = %name,
                "image pull secret not found; pulling without its credentials"
            );
            continue;
        };
        let data = secret.data.unwrap_or_default();
        let (key, legacy) = match secret.type_.as_deref() {
            Some(DOCKER_CONFIG_JSON) => (".dockerconfigjson", false),
            Some(DOCKER_CFG) => (".dockercfg", true),
            other => {
                tracing::warn!(secret = %name, r#type = ?other, "image pull secret has an unusable type; skipped");
                continue;
            }
        };
        let Some(bytes) = data.get(key) else {
            tracing::warn!(secret = %name, key, "image pull secret has no docker config; skipped");
            continue;
        };
        match parse_docker_config(&bytes.0, legacy) {
            Ok(found) => auths.extend(found),
            Err(why) => tracing::warn!(secret = %name, "image pull secret skipped: {why}"),
        }
    }
    Ok(auths)
}

/// Parses a docker config (`legacy`: the `.dockercfg` shape without `auths`); entries whose
/// `auth` does not decode are an error for the whole config, as upstream's keyring has it.
pub(crate) fn parse_docker_config(bytes: &[u8], legacy: bool) -> Result<Vec<RegistryAuth>, String> {
    let config: Value = serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
    let entries = if legacy {
        config.as_object()
    } else {
        config.get("auths").and_then(Value::as_object)
    };
    let Some(entries) = entries else {
        return Err("no auths".to_string());
    };
    let mut out = Vec::new();
    for (registry, entry) in entries {
        let text = |field: &str| entry.get(field).and_then(Value::as_str).unwrap_or("");
        let (mut username, mut password) =
            (text("username").to_string(), text("password").to_string());
        let auth = text("auth");
        if !auth.is_empty() {
            (username, password) = decode_auth(auth)?;
        }
        out.push(RegistryAuth {
            registry: normalise_registry(registry),
            username,
            password,
        });
    }
    Ok(out)
}

/// `auth` is base64 of `user:password`.
fn decode_auth(auth: &str) -> Result<(String, String), String> {
    let invalid =
        || "unable to parse auth field, must be formatted as base64(username:password)".to_string();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| invalid())?;
    let decoded = String::from_utf8(decoded).map_err(|_| invalid())?;
    let (user, password) = decoded.split_once(':').ok_or_else(invalid)?;
    Ok((user.to_string(), password.to_string()))
}

/// The registry host of a docker config key: no scheme, no path, Docker Hub as `docker.io`.
pub(crate) fn normalise_registry(key: &str) -> String {
    let key = key.trim();
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = without_scheme.split('/').next().unwrap_or("");
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        host => host.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(registry: &str, username: &str, password: &str) -> RegistryAuth {
        RegistryAuth {
            registry: registry.into(),
            username: username.into(),
            password: password.into(),
        }
    }

    #[test]
    fn dockerconfigjson_with_both_shapes() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("bob:s3:cret");
        let config = serde_json::json!({"auths": {
            "https://index.docker.io/v1/": {"username": "alice", "password": "pw"},
            "127.0.0.1:5000": {"auth": encoded},
            "http://registry.example.com:8443/some/path": {"username": "u", "password": "p", "auth": encoded},
        }});
        let got = parse_docker_config(config.to_string().as_bytes(), false).unwrap();
        assert_eq!(
            got,
            vec![
                auth("docker.io", "alice", "pw"),
                auth("127.0.0.1:5000", "bob", "s3:cret"),
                auth("registry.example.com:8443", "bob", "s3:cret"),
            ]
        );
    }

    #[test]
    fn legacy_dockercfg() {
        let config = serde_json::json!({"index.docker.io": {"username": "a", "password": "b"}});
        let got = parse_docker_config(config.to_string().as_bytes(), true).unwrap();
        assert_eq!(got, vec![auth("docker.io", "a", "b")]);
    }

    #[test]
    fn broken_configs_are_errors() {
        assert!(parse_docker_config(b"not json", false).is_err());
        assert!(parse_docker_config(b"{}", false).is_err());
        let bad = serde_json::json!({"auths": {"r": {"auth": "%%%"}}});
        assert!(parse_docker_config(bad.to_string().as_bytes(), false).is_err());
        let no_colon = base64::engine::general_purpose::STANDARD.encode("nocolon");
        let bad = serde_json::json!({"auths": {"r": {"auth": no_colon}}});
        assert!(parse_docker_config(bad.to_string().as_bytes(), false).is_err());
    }

    #[test]
    fn registry_names() {
        assert_eq!(
            normalise_registry("https://index.docker.io/v1/"),
            "docker.io"
        );
        assert_eq!(normalise_registry("index.docker.io"), "docker.io");
        assert_eq!(normalise_registry("docker.io"), "docker.io");
        assert_eq!(normalise_registry("quay.io"), "quay.io");
        assert_eq!(
            normalise_registry("http://localhost:5000/v2/"),
            "localhost:5000"
        );
    }

    #[tokio::test]
    async fn missing_and_foreign_secrets_are_skipped() {
        use k8s_openapi::api::core::v1::{LocalObjectReference, PodSpec, Secret};
        use k8s_openapi::ByteString;
        let mut sources = Sources::offline("ns");
        let config = serde_json::json!({"auths": {"r.io": {"username": "u", "password": "p"}}});
        sources.insert_secret(Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("good".into()),
                ..Default::default()
            },
            type_: Some(DOCKER_CONFIG_JSON.into()),
            data: Some(
                [(
                    ".dockerconfigjson".to_string(),
                    ByteString(config.to_string().into_bytes()),
                )]
                .into(),
            ),
            ..Default::default()
        });
        sources.insert_secret(Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("opaque".into()),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            ..Default::default()
        });
        let reference = |name: &str| LocalObjectReference { name: name.into() };
        let pod = Pod {
            spec: Some(PodSpec {
                image_pull_secrets: Some(vec![
                    reference("missing"),
                    reference("opaque"),
                    reference("good"),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let got = resolve(&mut sources, &pod).await.unwrap();
        assert_eq!(got, vec![auth("r.io", "u", "p")]);
    }
}
