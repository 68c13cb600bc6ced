//! The token of a projected `serviceAccountToken` source, as the kubelet's token manager
//! gets it: a TokenRequest for the pod's service account with the source's audience and
//! lifetime, bound to the pod (kind, name, uid), kept per pod and asked for again once 80%
//! of its lifetime has passed or it is 24 hours old, whichever comes first.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount, ServiceAccountTokenProjection};
use kube::api::{Api, PostParams};

use super::InputError;

/// The longest a token is used before a new one is asked for (the kubelet's `maxTTL`).
const MAX_TOKEN_AGE_SECONDS: i64 = 24 * 60 * 60;
/// The lifetime a source gets when it names none (the API's default).
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

/// What one token is for: a pod, its service account, an audience and a lifetime.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TokenKey {
    pod_uid: String,
    service_account: String,
    audience: String,
    expiration_seconds: i64,
}

/// A token and its validity, in seconds since the epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CachedToken {
    token: String,
    issued_at: i64,
    expires_at: i64,
}

impl CachedToken {
    /// Whether a new token should be asked for at `now`: 80% of the lifetime has passed, or
    /// the token is a day old.
    fn needs_refresh(&self, now: i64) -> bool {
        let lifetime = (self.expires_at - self.issued_at).max(0);
        now >= self.issued_at + MAX_TOKEN_AGE_SECONDS || now >= self.expires_at - lifetime / 5
    }
}

static TOKENS: LazyLock<Mutex<HashMap<TokenKey, CachedToken>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn key_of(pod: &Pod, source: &ServiceAccountTokenProjection) -> TokenKey {
    TokenKey {
        pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
        service_account: pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_string()),
        audience: source.audience.clone().unwrap_or_default(),
        expiration_seconds: source
            .expiration_seconds
            .unwrap_or(DEFAULT_EXPIRATION_SECONDS),
    }
}

fn cached(key: &TokenKey, now: i64) -> Option<String> {
    let tokens = TOKENS.lock().unwrap_or_else(|p| p.into_inner());
    tokens
        .get(key)
        .filter(|t| !t.needs_refresh(now))
        .map(|t| t.token.clone())
}

/// The TokenRequest the kubelet sends for a source of `pod`.
fn token_request(pod: &Pod, key: &TokenKey) -> TokenRequest {
    TokenRequest {
        spec: TokenRequestSpec {
            audiences: if key.audience.is_empty() {
                Vec::new()
            } else {
                vec![key.audience.clone()]
            },
            expiration_seconds: Some(key.expiration_seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".to_string()),
                kind: Some("Pod".to_string()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    }
}

/// The token for a projected source of `pod`: the one kept, or a new one from the API when
/// none is kept or the kept one is due for a refresh. If the refresh fails while the kept
/// token is still valid, the kept one is used (the next refresh tries again).
pub(crate) async fn token(
    client: Option<&kube::Client>,
    pod: &Pod,
    source: &ServiceAccountTokenProjection,
) -> Result<String, InputError> {
    let key = key_of(pod, source);
    let now = now_seconds();
    if let Some(token) = cached(&key, now) {
        return Ok(token);
    }
    let Some(client) = client else {
        return Err(InputError::Invalid(
            "service account tokens need the API".to_string(),
        ));
    };
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let requested = accounts
        .create_token_request(
            &key.service_account,
            &PostParams::default(),
            &token_request(pod, &key),
        )
        .await;
    let status = match requested.map(|r| r.status) {
        Ok(Some(status)) => status,
        result => {
            let error = match result {
                Err(e) => {
                    InputError::Missing(format!("failed to fetch token: {}", kube_message(&e)))
                }
                Ok(_) => {
                    InputError::Missing("failed to fetch token: no token in the answer".into())
                }
            };
            // A token still valid is better than none while the API is away.
            let kept = TOKENS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .cloned();
            return match kept.filter(|t| t.expires_at > now) {
                Some(t) => {
                    tracing::warn!(%error, "refreshing a service account token; the current one is kept");
                    Ok(t.token)
                }
                None => Err(error),
            };
        }
    };
    let expires_at = status.expiration_timestamp.0.as_second();
    tracing::debug!(
        pod = pod.metadata.name.as_deref().unwrap_or(""),
        service_account = %key.service_account,
        expires_at,
        "service account token requested"
    );
    TOKENS.lock().unwrap_or_else(|p| p.into_inner()).insert(
        key,
        CachedToken {
            token: status.token.clone(),
            issued_at: now,
            expires_at,
        },
    );
    Ok(status.token)
}

fn kube_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// Forgets the tokens of a pod (its volumes were removed).
pub(crate) fn forget(pod_uid: &str) {
    TOKENS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|k, _| k.pod_uid != pod_uid);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_at_eighty_percent_or_a_day() {
        let hour = CachedToken {
            token: "t".into(),
            issued_at: 1000,
            expires_at: 1000 + 3600,
        };
        assert!(!hour.needs_refresh(1000));
        assert!(!hour.needs_refresh(1000 + 2879));
        assert!(hour.needs_refresh(1000 + 2880));
        let year = CachedToken {
            token: "t".into(),
            issued_at: 0,
            expires_at: 365 * 86400,
        };
        assert!(!year.needs_refresh(86399));
        assert!(year.needs_refresh(86400));
    }

    #[test]
    fn the_request_binds_the_pod_and_keeps_the_source_settings() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web".into());
        pod.metadata.uid = Some("uid-1".into());
        let source = ServiceAccountTokenProjection {
            audience: Some("vault".into()),
            expiration_seconds: Some(3607),
            path: "token".into(),
        };
        let key = key_of(&pod, &source);
        assert_eq!(key.service_account, "default");
        let request = token_request(&pod, &key);
        assert_eq!(request.spec.audiences, vec!["vault".to_string()]);
        assert_eq!(request.spec.expiration_seconds, Some(3607));
        let bound = request.spec.bound_object_ref.unwrap();
        assert_eq!(
            (
                bound.kind.as_deref(),
                bound.name.as_deref(),
                bound.uid.as_deref()
            ),
            (Some("Pod"), Some("web"), Some("uid-1"))
        );
        let no_audience = ServiceAccountTokenProjection {
            path: "token".into(),
            ..Default::default()
        };
        assert!(token_request(&pod, &key_of(&pod, &no_audience))
            .spec
            .audiences
            .is_empty());
    }

    #[test]
    fn kept_tokens_are_served_until_due_and_forgotten_with_the_pod() {
        let key = TokenKey {
            pod_uid: "uid-kept".into(),
            service_account: "default".into(),
            audience: String::new(),
            expiration_seconds: 3600,
        };
        TOKENS.lock().unwrap().insert(
            key.clone(),
            CachedToken {
                token: "kept".into(),
                issued_at: 100,
                expires_at: 3700,
            },
        );
        assert_eq!(cached(&key, 200).as_deref(), Some("kept"));
        assert_eq!(cached(&key, 3500), None);
        forget("uid-kept");
        assert_eq!(cached(&key, 200), None);
    }
}
