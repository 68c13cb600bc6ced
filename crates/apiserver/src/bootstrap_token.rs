//! Bootstrap tokens, as upstream's `plugin/pkg/auth/authenticator/token/bootstrap`: a bearer
//! token `<id>.<secret>` (`[a-z0-9]{6}.[a-z0-9]{16}`) authenticates when the Secret
//! `kube-system/bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token` holds the same
//! `token-id` and `token-secret`, has `usage-bootstrap-authentication: "true"`, is not being
//! deleted and has not passed its `expiration` (RFC 3339). The user is
//! `system:bootstrap:<id>`, in `system:bootstrappers`, the Secret's valid `auth-extra-groups`
//! and `system:authenticated`. Agents join the cluster with such a token.

use base64::Engine;
use serde_json::Value;

use crate::server::Identity;
use crate::storage::Storage;

/// The namespace bootstrap token Secrets live in.
pub const NAMESPACE: &str = "kube-system";
/// The Secret type of a bootstrap token.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The prefix of a bootstrap token Secret's name, followed by the token id.
pub const SECRET_NAME_PREFIX: &str = "bootstrap-token-";
/// The prefix of the user name a token authenticates as, followed by the token id.
pub const USER_PREFIX: &str = "system:bootstrap:";
/// The group every bootstrap token's user is in.
pub const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers";
/// The group of every authenticated user.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// A token split into its public id and its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    /// The public part, `[a-z0-9]{6}`: names the Secret.
    pub id: String,
    /// The private part, `[a-z0-9]{16}`.
    pub secret: String,
}

fn is_token_part(part: &str, len: usize) -> bool {
    part.len() == len
        && part
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl BootstrapToken {
    /// Parses `<id>.<secret>`; `None` for anything else (the token is then not a bootstrap
    /// token, and other authenticators may still know it).
    pub fn parse(token: &str) -> Option<Self> {
        let (id, secret) = token.split_once('.')?;
        (is_token_part(id, 6) && is_token_part(secret, 16)).then(|| Self {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// A fresh random token.
    pub fn generate() -> Self {
        use rand::Rng;
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::thread_rng();
        let mut pick = |n: usize| -> String {
            (0..n)
                .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
                .collect()
        };
        Self {
            id: pick(6),
            secret: pick(16),
        }
    }

    /// The name of the Secret that holds this token.
    pub fn secret_name(&self) -> String {
        format!("{SECRET_NAME_PREFIX}{}", self.id)
    }

    /// The Secret (JSON, `stringData`) that makes this token valid until `expiration`
    /// (RFC 3339; `None`: never expires), for authentication only, with a description.
    pub fn secret_object(&self, expiration: Option<&str>, description: &str) -> Value {
        let mut data = serde_json::json!({
            "description": description,
            "token-id": self.id,
            "token-secret": self.secret,
            "usage-bootstrap-authentication": "true",
        });
        if let (Some(map), Some(expiration)) = (data.as_object_mut(), expiration) {
            map.insert("expiration".into(), Value::String(expiration.to_string()));
        }
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": self.secret_name(), "namespace": NAMESPACE},
            "type": SECRET_TYPE,
            "stringData": data,
        })
    }
}

impl std::fmt::Display for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

/// The `expiration` of a token made now to last `ttl` (RFC 3339, whole seconds); `None` for
/// a zero `ttl`, which upstream's `kubeadm token create --ttl 0` means as never expiring.
pub fn expiration_after(ttl: std::time::Duration) -> Option<String> {
    if ttl.is_zero() {
        return None;
    }
    let at = time::OffsetDateTime::now_utc() + ttl;
    at.replace_nanosecond(0)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// One `data` value of a Secret, base64-decoded (`stringData` is merged into `data` on write).
fn secret_data(secret: &Value, key: &str) -> Option<String> {
    let encoded = secret.get("data")?.get(key)?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// Compares without stopping at the first difference, so timing does not tell the secret.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `group` is an allowed extra group (`system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]`).
fn is_valid_extra_group(group: &str) -> bool {
    let Some(rest) = group.strip_prefix("system:bootstrappers:") else {
        return false;
    };
    !rest.is_empty()
        && rest.len() <= 256
        && rest
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b':' || b == b'-')
        && rest
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Checks `token` against its Secret at `now`: the identity it stands for, or `None`
/// (wrong type, secret or id, not for authentication, being deleted, expired, bad groups).
pub fn check_secret(
    token: &BootstrapToken,
    secret: &Value,
    now: time::OffsetDateTime,
) -> Option<Identity> {
    let refuse = |why: &str| {
        tracing::debug!(token_id = %token.id, "bootstrap token refused: {why}");
        None
    };
    if secret
        .get("metadata")
        .and_then(|m| m.get("deletionTimestamp"))
        .is_some_and(|t| !t.is_null())
    {
        return refuse("its Secret is being deleted");
    }
    if secret.get("type").and_then(Value::as_str) != Some(SECRET_TYPE) {
        return refuse("its Secret has the wrong type");
    }
    let stored_secret = secret_data(secret, "token-secret").unwrap_or_default();
    if !constant_time_eq(stored_secret.as_bytes(), token.secret.as_bytes()) {
        return refuse("wrong token-secret");
    }
    if secret_data(secret, "token-id").as_deref() != Some(token.id.as_str()) {
        return refuse("wrong token-id");
    }
    if let Some(expiration) = secret_data(secret, "expiration") {
        match time::OffsetDateTime::parse(
            &expiration,
            &time::format_description::well_known::Rfc3339,
        ) {
            Ok(at) if at > now => {}
            Ok(_) => return refuse("expired"),
            Err(_) => return refuse("unreadable expiration"),
        }
    }
    if secret_data(secret, "usage-bootstrap-authentication").as_deref() != Some("true") {
        return refuse("not for authentication");
    }
    let mut groups = vec![BOOTSTRAPPERS_GROUP.to_string()];
    if let Some(extra) = secret_data(secret, "auth-extra-groups") {
        for group in extra.split(',').map(str::trim).filter(|g| !g.is_empty()) {
            if !is_valid_extra_group(group) {
                return refuse("invalid auth-extra-groups");
            }
            if !groups.iter().any(|g| g == group) {
                groups.push(group.to_string());
            }
        }
    }
    groups.push(AUTHENTICATED_GROUP.to_string());
    Some(Identity {
        user: format!("{USER_PREFIX}{}", token.id),
        groups,
    })
}

/// Authenticates a bearer token as a bootstrap token: `None` when it is not one or is not
/// valid (the request is then unauthenticated, 401).
pub async fn authenticate(storage: &Storage, bearer: &str) -> Option<Identity> {
    let token = BootstrapToken::parse(bearer)?;
    let secrets = nodeless_api::registry::by_kind("", "v1", "Secret")?;
    let secret = match storage
        .get(secrets, Some(NAMESPACE), &token.secret_name())
        .await
    {
        Ok(Some(secret)) => secret,
        Ok(None) => {
            tracing::debug!(token_id = %token.id, "no Secret for this bootstrap token");
            return None;
        }
        Err(error) => {
            tracing::warn!(?error, "reading a bootstrap token Secret");
            return None;
        }
    };
    check_secret(&token, &secret, time::OffsetDateTime::now_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn stored(token: &BootstrapToken, extra: &[(&str, &str)]) -> Value {
        let mut data = json!({
            "token-id": b64(&token.id),
            "token-secret": b64(&token.secret),
            "usage-bootstrap-authentication": b64("true"),
        });
        for (k, v) in extra {
            data[*k] = json!(b64(v));
        }
        json!({"metadata": {"name": token.secret_name(), "namespace": NAMESPACE},
               "type": SECRET_TYPE, "data": data})
    }

    fn now() -> time::OffsetDateTime {
        time::macros::datetime!(2026-01-01 12:00 UTC)
    }

    #[test]
    fn parses_only_the_bootstrap_format() {
        let t = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        assert_eq!(t.id, "abcdef");
        assert_eq!(t.secret, "0123456789abcdef");
        assert_eq!(t.to_string(), "abcdef.0123456789abcdef");
        assert_eq!(t.secret_name(), "bootstrap-token-abcdef");
        for bad in [
            "abcdef0123456789abcdef",
            "ABCDEF.0123456789abcdef",
            "abcde.0123456789abcdef",
            "abcdef.0123456789abcde",
            "abcdef.0123456789abcdef0",
            "abcdef.0123456789abcdeF",
            "abc-ef.0123456789abcdef",
            "",
            "5f2d1c0e9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a",
        ] {
            assert!(BootstrapToken::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn generated_tokens_parse_and_differ() {
        let a = BootstrapToken::generate();
        let b = BootstrapToken::generate();
        assert_eq!(BootstrapToken::parse(&a.to_string()), Some(a.clone()));
        assert_ne!(a, b);
    }

    #[test]
    fn a_matching_secret_authenticates_as_the_bootstrapper() {
        let t = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        let id = check_secret(&t, &stored(&t, &[]), now()).unwrap();
        assert_eq!(id.user, "system:bootstrap:abcdef");
        assert_eq!(id.groups, vec![BOOTSTRAPPERS_GROUP, AUTHENTICATED_GROUP]);
        let extra = stored(&t, &[("auth-extra-groups", "system:bootstrappers:worker")]);
        let id = check_secret(&t, &extra, now()).unwrap();
        assert_eq!(
            id.groups,
            vec![
                BOOTSTRAPPERS_GROUP,
                "system:bootstrappers:worker",
                AUTHENTICATED_GROUP
            ]
        );
    }

    #[test]
    fn expiration_is_honoured() {
        let t = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        let future = stored(&t, &[("expiration", "2026-01-02T00:00:00Z")]);
        assert!(check_secret(&t, &future, now()).is_some());
        let past = stored(&t, &[("expiration", "2026-01-01T11:59:59Z")]);
        assert!(check_secret(&t, &past, now()).is_none());
        let garbage = stored(&t, &[("expiration", "tomorrow")]);
        assert!(check_secret(&t, &garbage, now()).is_none());
    }

    #[test]
    fn mismatches_are_refused() {
        let t = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        let wrong_secret = BootstrapToken::parse("abcdef.ffffffffffffffff").unwrap();
        assert!(check_secret(&wrong_secret, &stored(&t, &[]), now()).is_none());
        let other_id = BootstrapToken::parse("zzzzzz.0123456789abcdef").unwrap();
        assert!(check_secret(&other_id, &stored(&t, &[]), now()).is_none());
        let mut wrong_type = stored(&t, &[]);
        wrong_type["type"] = json!("Opaque");
        assert!(check_secret(&t, &wrong_type, now()).is_none());
        let not_for_auth = stored(&t, &[("usage-bootstrap-authentication", "false")]);
        assert!(check_secret(&t, &not_for_auth, now()).is_none());
        let mut deleting = stored(&t, &[]);
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert!(check_secret(&t, &deleting, now()).is_none());
        let bad_group = stored(&t, &[("auth-extra-groups", "system:masters")]);
        assert!(check_secret(&t, &bad_group, now()).is_none());
    }

    #[test]
    fn the_secret_object_round_trips_through_stored_data() {
        let t = BootstrapToken::generate();
        let obj = t.secret_object(Some("2026-01-02T00:00:00Z"), "test");
        assert_eq!(obj["metadata"]["name"], json!(t.secret_name()));
        let mut data = serde_json::Map::new();
        for (k, v) in obj["stringData"].as_object().unwrap() {
            data.insert(k.clone(), json!(b64(v.as_str().unwrap())));
        }
        let as_stored = json!({"type": obj["type"], "metadata": obj["metadata"], "data": data});
        assert!(check_secret(&t, &as_stored, now()).is_some());
    }

    #[test]
    fn expirations_are_rfc3339_in_the_future() {
        assert_eq!(expiration_after(std::time::Duration::ZERO), None);
        let text = expiration_after(std::time::Duration::from_secs(3600)).unwrap();
        let at = time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
            .unwrap();
        assert!(
            at > time::OffsetDateTime::now_utc() + time::Duration::minutes(59),
            "{text}"
        );
        assert!(!text.contains('.'), "{text}");
    }

    #[test]
    fn extra_groups_are_validated() {
        assert!(is_valid_extra_group(
            "system:bootstrappers:kubeadm:default-node-token"
        ));
        assert!(!is_valid_extra_group("system:bootstrappers:"));
        assert!(!is_valid_extra_group("system:bootstrappers:x-"));
        assert!(!is_valid_extra_group("system:nodes"));
    }
}
