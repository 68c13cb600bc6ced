//! `nodeless token create`: bootstrap tokens for agents to join with (kubeadm's
//! `token create`), and the join command `nodeless server` logs at start.

use std::path::PathBuf;

use anyhow::Context;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use nodeless_apiserver::bootstrap_token::{self, BootstrapToken};

/// `nodeless token ...`.
#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Create a bootstrap token (a Secret in kube-system) and print it.
    Create(TokenCreateArgs),
}

/// `nodeless token create`.
#[derive(clap::Args)]
pub struct TokenCreateArgs {
    /// How long the token is valid, e.g. `24h`, `30m` (`0`: never expires).
    #[arg(long, default_value = "24h", value_parser = crate::parse_grace_period)]
    ttl: std::time::Duration,
    /// A description kept in the token's Secret.
    #[arg(long, default_value = "a token for nodeless agents to join with")]
    description: String,
    /// The server's data dir: its admin kubeconfig is used.
    #[arg(long, default_value = "/var/lib/nodeless", env = "NODELESS_DATA_DIR")]
    data_dir: PathBuf,
    /// An admin kubeconfig to use instead of DATA_DIR/kubeconfig.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

/// Runs a `nodeless token` command.
pub async fn run(command: &TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create(args) => {
            let path = args
                .kubeconfig
                .clone()
                .unwrap_or_else(|| args.data_dir.join("kubeconfig"));
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading the admin kubeconfig {}", path.display()))?;
            let client = crate::component_client(&text).await?;
            let token = create(client, args.ttl, &args.description).await?;
            println!("{token}");
            Ok(())
        }
    }
}

/// Creates a fresh bootstrap token valid for `ttl` (zero: forever).
pub async fn create(
    client: kube::Client,
    ttl: std::time::Duration,
    description: &str,
) -> anyhow::Result<BootstrapToken> {
    let token = BootstrapToken::generate();
    let expiration = bootstrap_token::expiration_after(ttl);
    let secret: Secret =
        serde_json::from_value(token.secret_object(expiration.as_deref(), description))?;
    Api::<Secret>::namespaced(client, bootstrap_token::NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await
        .context("creating the bootstrap token Secret")?;
    Ok(token)
}

/// Creates a 24-hour token and logs the command that joins an agent to this server (k3s
/// prints its join token the same way).
pub async fn announce_join_command(
    client: kube::Client,
    server: std::net::SocketAddr,
    data_dir: PathBuf,
) {
    let ttl = std::time::Duration::from_secs(24 * 3600);
    match create(client, ttl, "made by nodeless server at start").await {
        Ok(token) => {
            let url = if server.ip().is_unspecified() {
                format!("https://THIS-MACHINE:{}", server.port())
            } else {
                format!("https://{server}")
            };
            let ca = data_dir.join("pki").join("ca.crt");
            tracing::info!(
                "join an agent (token valid 24h; `nodeless token create` makes more): \
                 nodeless agent --server {url} --token {token} --ca-cert {ca} \
                 --node-name NAME",
                ca = ca.display(),
            );
        }
        Err(error) => tracing::warn!(%error, "cannot create a bootstrap token for agents"),
    }
}

/// Deletes bootstrap token Secrets whose `expiration` has passed, every minute (upstream's
/// tokencleaner controller); the authenticator refuses them already, this keeps kube-system
/// tidy since every `nodeless server` start makes a token.
pub async fn clean_expired_tokens(client: kube::Client) {
    let api = Api::<Secret>::namespaced(client, bootstrap_token::NAMESPACE);
    loop {
        match api.list(&Default::default()).await {
            Ok(secrets) => {
                for secret in secrets.items.iter().filter(|s| is_expired_token(s)) {
                    let name = secret.metadata.name.as_deref().unwrap_or_default();
                    match api.delete(name, &Default::default()).await {
                        Ok(_) => {
                            tracing::info!(secret = name, "deleted an expired bootstrap token")
                        }
                        Err(error) => {
                            tracing::debug!(%error, secret = name, "deleting an expired token")
                        }
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "listing bootstrap tokens"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    }
}

/// Whether `secret` is a bootstrap token whose expiration has passed.
fn is_expired_token(secret: &Secret) -> bool {
    if secret.type_.as_deref() != Some(bootstrap_token::SECRET_TYPE) {
        return false;
    }
    let Some(expiration) = secret
        .data
        .as_ref()
        .and_then(|d| d.get("expiration"))
        .and_then(|v| std::str::from_utf8(&v.0).ok())
    else {
        return false;
    };
    expiration
        .parse::<k8s_openapi::jiff::Timestamp>()
        .is_ok_and(|at| at < k8s_openapi::jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_secret(expiration: Option<&str>) -> Secret {
        let token = BootstrapToken::generate();
        let mut obj = token.secret_object(expiration, "test");
        // As stored: stringData becomes data.
        let data: serde_json::Map<String, serde_json::Value> = obj["stringData"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                use base64::Engine;
                let encoded = base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap());
                (k.clone(), serde_json::Value::String(encoded))
            })
            .collect();
        obj["data"] = serde_json::Value::Object(data);
        obj.as_object_mut().unwrap().remove("stringData");
        serde_json::from_value(obj).unwrap()
    }

    #[test]
    fn only_expired_bootstrap_tokens_are_cleaned() {
        assert!(is_expired_token(&token_secret(Some(
            "2020-01-01T00:00:00Z"
        ))));
        assert!(!is_expired_token(&token_secret(Some(
            "2999-01-01T00:00:00Z"
        ))));
        assert!(!is_expired_token(&token_secret(None)));
        let mut opaque = token_secret(Some("2020-01-01T00:00:00Z"));
        opaque.type_ = Some("Opaque".into());
        assert!(!is_expired_token(&opaque));
    }
}
