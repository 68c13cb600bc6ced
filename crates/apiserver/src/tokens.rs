//! Service account tokens: JWTs signed with the cluster's ES256 key (`pki/sa.key`), issued by
//! the TokenRequest subresource (`serviceaccounts/{name}/token`) and accepted as bearer
//! tokens, as upstream's `pkg/serviceaccount` does.
//!
//! A token says who it is for (`sub: system:serviceaccount:NS:NAME`), for whom it is meant
//! (`aud`, by default the API server's own audience, the issuer), when it is valid
//! (`nbf`..`exp`) and, under `kubernetes.io`, the service account's and any bound pod's or
//! secret's name and uid. It authenticates only while its signature, times and audience
//! check out and the objects it names still exist with those uids.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::objects;
use crate::server::{AppState, Identity};
use crate::storage::Storage;

/// The issuer of every token (upstream's usual `--service-account-issuer`); also the API
/// server's one audience.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// How long a TokenRequest's token lives when it does not say (`expirationSeconds`).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest lifetime a TokenRequest may ask for (10 minutes).
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The longest lifetime a TokenRequest may ask for (2^32 seconds).
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;
/// The clock skew tolerated on `exp`, `nbf` and deletion times (go-jose's default leeway).
const LEEWAY_SECONDS: i64 = 60;
/// The group of every service account.
pub const SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";
/// The user name prefix of service accounts.
pub const USER_PREFIX: &str = "system:serviceaccount:";

/// Why a token was not accepted (or could not be made).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url parts of JSON.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// Signed with another algorithm than ES256 (or `none`).
    #[error("unsupported signing algorithm {0:?}")]
    Algorithm(String),
    /// The signature does not verify with the cluster's key.
    #[error("invalid signature")]
    Signature,
    /// Issued by someone else.
    #[error("token issuer {0:?} is not the cluster's")]
    Issuer(String),
    /// Not meant for the API server.
    #[error("token audiences {0:?} are not the API server's")]
    Audience(Vec<String>),
    /// Past `exp`.
    #[error("token has expired")]
    Expired,
    /// Before `nbf`.
    #[error("token is not valid yet")]
    NotYetValid,
    /// The service account or bound object it names is gone or was recreated.
    #[error("{0}")]
    Revoked(String),
    /// The key could not be loaded or could not sign.
    #[error("signing key: {0}")]
    Key(String),
}

/// A name and uid in the `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectClaim {
    /// The object's name.
    pub name: String,
    /// The object's uid.
    pub uid: String,
}

/// The private `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    /// The service account's namespace.
    pub namespace: String,
    /// The service account.
    pub serviceaccount: ObjectClaim,
    /// The pod the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectClaim>,
    /// The secret the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectClaim>,
    /// The node the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectClaim>,
}

/// The claims of a service account token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Subject: `system:serviceaccount:NS:NAME`.
    pub sub: String,
    /// Audiences (a string or a list in JSON).
    #[serde(deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// The token's id (the credential id of audit logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Who the token is for.
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

impl Claims {
    /// The claims of a token for service account `namespace/name` (uid `uid`), valid from
    /// `now` for `expiration_seconds`, for `audiences`, optionally bound to a pod or secret.
    pub fn new(
        namespace: &str,
        name: &str,
        uid: &str,
        audiences: Vec<String>,
        now: i64,
        expiration_seconds: i64,
    ) -> Self {
        Self {
            iss: ISSUER.to_string(),
            sub: format!("{USER_PREFIX}{namespace}:{name}"),
            aud: audiences,
            exp: now.saturating_add(expiration_seconds),
            iat: now,
            nbf: now,
            jti: Some(uuid::Uuid::new_v4().to_string()),
            kubernetes: KubernetesClaims {
                namespace: namespace.to_string(),
                serviceaccount: ObjectClaim {
                    name: name.to_string(),
                    uid: uid.to_string(),
                },
                pod: None,
                secret: None,
                node: None,
            },
        }
    }

    /// The identity the token stands for, as upstream's service account authenticator
    /// gives it.
    pub fn identity(&self) -> Identity {
        let namespace = &self.kubernetes.namespace;
        Identity {
            user: format!(
                "{USER_PREFIX}{namespace}:{}",
                self.kubernetes.serviceaccount.name
            ),
            groups: vec![
                SERVICE_ACCOUNTS_GROUP.to_string(),
                format!("{SERVICE_ACCOUNTS_GROUP}:{namespace}"),
                "system:authenticated".to_string(),
            ],
        }
    }
}

/// Signs and verifies tokens with the cluster's key.
pub struct TokenSigner {
    key_pair: EcdsaKeyPair,
    key_id: String,
    rng: SystemRandom,
    audiences: Vec<String>,
}

impl TokenSigner {
    /// A signer for an ECDSA P-256 key in PKCS#8 DER (see `Pki::service_account_key`).
    pub fn new(pkcs8_der: &[u8]) -> Result<Self, TokenError> {
        let rng = SystemRandom::new();
        let key_pair =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8_der, &rng)
                .map_err(|e| TokenError::Key(e.to_string()))?;
        // Upstream's key id is a hash of the public key, so that verifiers can pick the key.
        let digest = ring::digest::digest(&ring::digest::SHA256, key_pair.public_key().as_ref());
        let key_id = URL_SAFE_NO_PAD.encode(digest.as_ref());
        Ok(Self {
            key_pair,
            key_id,
            rng,
            audiences: vec![ISSUER.to_string()],
        })
    }

    /// The audiences the API server accepts (and that tokens get by default).
    pub fn api_audiences(&self) -> &[String] {
        &self.audiences
    }

    /// The issuer discovery document (`/.well-known/openid-configuration`), as upstream's
    /// ServiceAccountIssuerDiscovery serves it.
    pub fn openid_configuration(&self) -> Value {
        serde_json::json!({
            "issuer": ISSUER,
            "jwks_uri": format!("{ISSUER}/openid/v1/jwks"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }

    /// The public key as a JSON Web Key Set (`/openid/v1/jwks`).
    pub fn jwks(&self) -> Value {
        // An uncompressed P-256 point: 0x04, then X and Y of 32 bytes each.
        let point = self.key_pair.public_key().as_ref();
        let (x, y) = point
            .get(1..)
            .unwrap_or_default()
            .split_at(point.len().saturating_sub(1) / 2);
        serde_json::json!({ "keys": [{
            "use": "sig",
            "kty": "EC",
            "kid": self.key_id,
            "crv": "P-256",
            "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(x),
            "y": URL_SAFE_NO_PAD.encode(y),
        }] })
    }

    /// A signed compact JWT of the claims.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let header = serde_json::json!({ "alg": "ES256", "kid": self.key_id });
        let signing_input = format!("{}.{}", encode_json(&header)?, encode_json(claims)?);
        let sig = self
            .key_pair
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|e| TokenError::Key(e.to_string()))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(sig.as_ref())
        ))
    }

    /// Checks the signature, issuer, audience and validity times of `token` at `now`
    /// (seconds since the epoch) and returns its claims. Whether the objects it names still
    /// exist is [`validate_objects`]'s job.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("not three parts"));
        };
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| TokenError::Malformed("not base64url"))
        };
        let header: Value = serde_json::from_slice(&decode(header)?)
            .map_err(|_| TokenError::Malformed("header is not JSON"))?;
        let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
        if alg != "ES256" {
            return Err(TokenError::Algorithm(alg.to_string()));
        }
        let signing_input_len = token.len() - sig.len() - 1;
        let public = UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.key_pair.public_key().as_ref(),
        );
        public
            .verify(&token.as_bytes()[..signing_input_len], &decode(sig)?)
            .map_err(|_| TokenError::Signature)?;
        let claims: Claims = serde_json::from_slice(&decode(payload)?)
            .map_err(|_| TokenError::Malformed("claims are not those of a service account"))?;
        if claims.iss != ISSUER {
            return Err(TokenError::Issuer(claims.iss));
        }
        if !claims.aud.iter().any(|a| self.audiences.contains(a)) {
            return Err(TokenError::Audience(claims.aud));
        }
        if now > claims.exp.saturating_add(LEEWAY_SECONDS) {
            return Err(TokenError::Expired);
        }
        if now < claims.nbf.saturating_sub(LEEWAY_SECONDS) {
            return Err(TokenError::NotYetValid);
        }
        let expected_sub = format!(
            "{USER_PREFIX}{}:{}",
            claims.kubernetes.namespace, claims.kubernetes.serviceaccount.name
        );
        if claims.sub != expected_sub {
            return Err(TokenError::Malformed(
                "subject does not name the service account",
            ));
        }
        Ok(claims)
    }
}

/// A JWT part: base64url of the JSON.
fn encode_json<T: Serialize>(value: &T) -> Result<String, TokenError> {
    let json = serde_json::to_vec(value).map_err(|e| TokenError::Key(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}

/// Seconds since the epoch.
pub fn now_seconds() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Whether an object's deletion started more than the leeway before `now`.
fn deleted_before_leeway(obj: &Value, now: i64) -> bool {
    objects::meta_str(obj, "deletionTimestamp")
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .is_some_and(|t| t.unix_timestamp() < now - LEEWAY_SECONDS)
}

async fn check_object(
    storage: &Storage,
    plural: &str,
    kind_name: &str,
    namespace: Option<&str>,
    claim: &ObjectClaim,
    now: i64,
) -> Result<(), TokenError> {
    let shown = match namespace {
        Some(ns) => format!("{ns}/{}", claim.name),
        None => claim.name.clone(),
    };
    let kind = nodeless_api::registry::by_plural("", "v1", plural)
        .ok_or_else(|| TokenError::Revoked(format!("no {plural} in this server")))?;
    let obj = storage
        .get(kind, namespace, &claim.name)
        .await
        .map_err(|e| TokenError::Revoked(e.message))?
        .ok_or_else(|| TokenError::Revoked(format!("{kind_name} {shown} not found")))?;
    if objects::uid(&obj) != Some(claim.uid.as_str()) {
        return Err(TokenError::Revoked(format!(
            "{kind_name} UID ({}) does not match claim ({})",
            objects::uid(&obj).unwrap_or(""),
            claim.uid
        )));
    }
    if deleted_before_leeway(&obj, now) {
        return Err(TokenError::Revoked(format!(
            "{kind_name} {shown} has been deleted"
        )));
    }
    Ok(())
}

/// Checks that the service account (and the bound pod, secret or node) of verified claims
/// still exist with the uids of the claims and are not deleted. The node of a pod-bound
/// token is only information, as upstream.
pub async fn validate_objects(
    storage: &Storage,
    claims: &Claims,
    now: i64,
) -> Result<(), TokenError> {
    let k = &claims.kubernetes;
    let ns = Some(k.namespace.as_str());
    let sa = &k.serviceaccount;
    check_object(storage, "serviceaccounts", "ServiceAccount", ns, sa, now).await?;
    if let Some(pod) = &k.pod {
        check_object(storage, "pods", "Pod", ns, pod, now).await?;
    } else if let Some(node) = &k.node {
        check_object(storage, "nodes", "Node", None, node, now).await?;
    }
    if let Some(secret) = &k.secret {
        check_object(storage, "secrets", "Secret", ns, secret, now).await?;
    }
    Ok(())
}

/// Who a bearer token stands for: a component token of `pki/tokens`, or a valid service
/// account token; `None` (401) for anything else.
pub(crate) async fn authenticate_bearer(state: &AppState, token: &str) -> Option<Identity> {
    if let Some(identity) = state.tokens.get(token) {
        return Some(identity.clone());
    }
    let now = now_seconds();
    let verified = match state.service_account_tokens.verify(token, now) {
        Ok(claims) => validate_objects(&state.storage, &claims, now)
            .await
            .map(|()| claims),
        Err(e) => Err(e),
    };
    match verified {
        Ok(claims) => Some(claims.identity()),
        Err(error) => {
            tracing::debug!(%error, "bearer token rejected");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> TokenSigner {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        TokenSigner::new(&key.serialize_der()).unwrap()
    }

    fn claims(now: i64) -> Claims {
        Claims::new(
            "team",
            "builder",
            "uid-1",
            vec![ISSUER.to_string()],
            now,
            3600,
        )
    }

    #[test]
    fn round_trip_keeps_the_claims_and_names_the_service_account() {
        let s = signer();
        let mut c = claims(1000);
        c.kubernetes.pod = Some(ObjectClaim {
            name: "web".into(),
            uid: "pod-uid".into(),
        });
        let token = s.sign(&c).unwrap();
        let verified = s.verify(&token, 1500).unwrap();
        assert_eq!(verified, c);
        let id = verified.identity();
        assert_eq!(id.user, "system:serviceaccount:team:builder");
        assert_eq!(
            id.groups,
            vec![
                "system:serviceaccounts",
                "system:serviceaccounts:team",
                "system:authenticated"
            ]
        );
        // The payload is what upstream's tokens carry.
        let payload: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(payload["kubernetes.io"]["pod"]["uid"], "pod-uid");
        assert_eq!(payload["exp"], 4600);
        assert_eq!(payload["aud"][0], ISSUER);
    }

    #[test]
    fn the_published_key_is_the_signing_key() {
        let s = signer();
        let jwks = s.jwks();
        let key = &jwks["keys"][0];
        assert_eq!(
            (key["kty"].as_str(), key["crv"].as_str()),
            (Some("EC"), Some("P-256"))
        );
        let x = URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap();
        let y = URL_SAFE_NO_PAD.decode(key["y"].as_str().unwrap()).unwrap();
        assert_eq!((x.len(), y.len()), (32, 32));
        // A verifier that knows only the JWKS checks a token.
        let point = [&[4u8][..], &x, &y].concat();
        let token = s.sign(&claims(1000)).unwrap();
        let (input, sig) = token.rsplit_once('.').unwrap();
        UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
            .verify(input.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap())
            .unwrap();
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["kid"], key["kid"]);
        assert_eq!(s.openid_configuration()["issuer"], ISSUER);
    }

    #[test]
    fn expiry_and_not_before_are_enforced_with_leeway() {
        let s = signer();
        let token = s.sign(&claims(1000)).unwrap();
        assert!(s.verify(&token, 1000 + 3600 + 59).is_ok());
        assert_eq!(
            s.verify(&token, 1000 + 3600 + 61).unwrap_err(),
            TokenError::Expired
        );
        assert!(s.verify(&token, 950).is_ok());
        assert_eq!(s.verify(&token, 900).unwrap_err(), TokenError::NotYetValid);
    }

    #[test]
    fn other_audiences_are_refused() {
        let s = signer();
        let mut c = claims(1000);
        c.aud = vec!["vault".into()];
        let token = s.sign(&c).unwrap();
        assert!(matches!(
            s.verify(&token, 1000),
            Err(TokenError::Audience(_))
        ));
        c.aud = vec!["vault".into(), ISSUER.into()];
        assert!(s.verify(&s.sign(&c).unwrap(), 1000).is_ok());
    }

    #[test]
    fn tampering_and_foreign_keys_are_refused() {
        let s = signer();
        let token = s.sign(&claims(1000)).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        // Claims changed to another service account, signature kept.
        let mut forged = claims(1000);
        forged.kubernetes.serviceaccount.name = "admin".into();
        forged.sub = "system:serviceaccount:team:admin".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let tampered = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
        assert_eq!(
            s.verify(&tampered, 1000).unwrap_err(),
            TokenError::Signature
        );
        // One flipped character of the signature.
        let mut sig = parts[2].to_string();
        let last = if sig.ends_with('A') { "B" } else { "A" };
        sig.replace_range(sig.len() - 1.., last);
        let bad_sig = format!("{}.{}.{sig}", parts[0], parts[1]);
        assert!(s.verify(&bad_sig, 1000).is_err());
        // Another cluster's key.
        assert_eq!(
            signer().verify(&token, 1000).unwrap_err(),
            TokenError::Signature
        );
        // `alg: none` and garbage.
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let unsigned = format!("{none_header}.{}.", parts[1]);
        assert_eq!(
            s.verify(&unsigned, 1000).unwrap_err(),
            TokenError::Algorithm("none".into())
        );
        assert!(matches!(
            s.verify("abc", 1000),
            Err(TokenError::Malformed(_))
        ));
        assert!(s.verify("a.b.c", 1000).is_err());
    }

    #[test]
    fn foreign_issuers_are_refused() {
        let s = signer();
        let mut c = claims(1000);
        c.iss = "https://elsewhere".into();
        assert!(matches!(
            s.verify(&s.sign(&c).unwrap(), 1000),
            Err(TokenError::Issuer(_))
        ));
    }

    #[test]
    fn a_single_audience_string_is_accepted() {
        let v = serde_json::json!({
            "iss": ISSUER, "sub": "system:serviceaccount:a:b", "aud": ISSUER,
            "exp": 10, "iat": 0, "nbf": 0,
            "kubernetes.io": { "namespace": "a", "serviceaccount": { "name": "b", "uid": "u" } }
        });
        let c: Claims = serde_json::from_value(v).unwrap();
        assert_eq!(c.aud, vec![ISSUER.to_string()]);
    }

    #[test]
    fn deletion_counts_after_the_leeway() {
        let now = 1_700_000_000;
        let at = |secs: i64| {
            let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
            serde_json::json!({ "metadata": { "deletionTimestamp": objects::format_time(t) } })
        };
        assert!(!deleted_before_leeway(&at(now - 30), now));
        assert!(deleted_before_leeway(&at(now - 120), now));
        assert!(!deleted_before_leeway(&serde_json::json!({}), now));
    }
}
