//! The CertificateSigningRequest approver and signer of the nodes' two signers
//! (`kubernetes.io/kube-apiserver-client-kubelet`, `kubernetes.io/kubelet-serving`), as
//! upstream's csrapproving and csrsigning controllers: it runs next to the controllers in the
//! server process, which holds the cluster CA, so agents never need the CA key. The rules
//! are in [`nodeless_apiserver::certificates`].

use base64::Engine;
use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use nodeless_apiserver::certificates::{self, Decision};
use nodeless_apiserver::pki::Pki;
use serde_json::{json, Value};

/// Approves and signs node CSRs until the watch ends (it retries with back-off on errors).
pub async fn run(client: kube::Client, pki: std::sync::Arc<Pki>) {
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let events = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(csr) => {
                if let Err(error) = handle(&api, &pki, &csr).await {
                    let name = csr.metadata.name.as_deref().unwrap_or_default();
                    tracing::warn!(%error, csr = name, "handling a certificate signing request");
                }
            }
            Err(error) => tracing::warn!(%error, "watching certificate signing requests"),
        }
    }
}

fn push_condition(obj: &mut Value, condition: Value) {
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({});
    }
    match obj["status"]
        .get_mut("conditions")
        .and_then(Value::as_array_mut)
    {
        Some(conditions) => conditions.push(condition),
        None => obj["status"]["conditions"] = json!([condition]),
    }
}

/// One step for one CSR: approve it, or sign it, or mark it Failed; nothing when it is
/// finished, denied, or not ours.
async fn handle(
    api: &Api<CertificateSigningRequest>,
    pki: &Pki,
    csr: &CertificateSigningRequest,
) -> anyhow::Result<()> {
    let name = csr.metadata.name.clone().unwrap_or_default();
    let mut obj = serde_json::to_value(csr)?;
    if certificates::is_finished(&obj) {
        return Ok(());
    }
    let post = PostParams::default();
    match certificates::decision(&obj) {
        Decision::Denied => {}
        Decision::Pending => {
            if let Some(reason) = certificates::auto_approval(&obj) {
                push_condition(
                    &mut obj,
                    json!({"type": "Approved", "status": "True", "reason": "AutoApproved",
                           "message": reason}),
                );
                ignore_conflict(
                    api.replace_subresource("approval", &name, &post, &obj)
                        .await,
                )?;
                tracing::info!(csr = %name, "approved");
            }
        }
        Decision::Approved => match certificates::sign(pki, &obj) {
            Ok(None) => {}
            Ok(Some(pem)) => {
                obj["status"]["certificate"] =
                    json!(base64::engine::general_purpose::STANDARD.encode(pem));
                let signed: CertificateSigningRequest = serde_json::from_value(obj)?;
                ignore_conflict(api.replace_status(&name, &post, &signed).await)?;
                tracing::info!(csr = %name, "signed");
            }
            Err(error) => {
                push_condition(
                    &mut obj,
                    json!({"type": "Failed", "status": "True",
                           "reason": "SignerValidationFailure", "message": error.to_string()}),
                );
                let failed: CertificateSigningRequest = serde_json::from_value(obj)?;
                ignore_conflict(api.replace_status(&name, &post, &failed).await)?;
                tracing::warn!(csr = %name, %error, "refused to sign");
            }
        },
    }
    Ok(())
}

/// A 409 means another server (or an administrator) wrote first; the watch brings the new
/// version.
fn ignore_conflict<T>(result: kube::Result<T>) -> kube::Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error),
    }
}
