//! The namespace controller: when a namespace is deleted, delete everything in it, then
//! remove the `kubernetes` finalizer through `/finalize` so the namespace itself goes.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use kube::discovery::{verbs, Discovery, Scope};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::{ControllerError, RETRY_AFTER};

/// The finalizer the namespace controller owns (in `spec.finalizers`).
pub const FINALIZER: &str = "kubernetes";

struct Context {
    client: Client,
}

/// Runs the controller until its watch ends.
pub async fn run(client: Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let context = Arc::new(Context { client });
    Controller::new(namespaces, watcher::Config::default())
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "namespace reconcile");
            }
        })
        .await;
}

fn error_policy(_ns: Arc<Namespace>, error: &ControllerError, _ctx: Arc<Context>) -> Action {
    tracing::debug!(%error, "namespace not finalized yet");
    Action::requeue(RETRY_AFTER)
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let finalizers = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default();
    if !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let remaining = delete_content(&ctx.client, &name).await?;
    if remaining > 0 {
        tracing::info!(namespace = %name, remaining, "waiting for the namespace's content to go");
        return Err(ControllerError::NamespaceNotEmpty(name));
    }
    let mut finalized = (*ns).clone();
    if let Some(spec) = finalized.spec.as_mut() {
        spec.finalizers = Some(finalizers.into_iter().filter(|f| f != FINALIZER).collect());
    }
    let body =
        serde_json::to_vec(&finalized).map_err(|e| ControllerError::Discovery(e.to_string()))?;
    let request = http_put(&format!("/api/v1/namespaces/{name}/finalize"), body)?;
    let _: Namespace = ctx.client.request(request).await?;
    tracing::info!(namespace = %name, "namespace finalized");
    Ok(Action::await_change())
}

fn http_put(path: &str, body: Vec<u8>) -> Result<http::Request<Vec<u8>>, ControllerError> {
    http::Request::put(path)
        .header("content-type", "application/json")
        .body(body)
        .map_err(|e| ControllerError::Discovery(e.to_string()))
}

/// Deletes every namespaced object in `namespace`; returns how many objects remain.
async fn delete_content(client: &Client, namespace: &str) -> Result<usize, ControllerError> {
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .map_err(|e| ControllerError::Discovery(e.to_string()))?;
    let mut remaining = 0;
    for group in discovery.groups() {
        for (resource, caps) in group.recommended_resources() {
            if caps.scope != Scope::Namespaced || !caps.supports_operation(verbs::LIST) {
                continue;
            }
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), namespace, &resource);
            if caps.supports_operation(verbs::DELETE_COLLECTION) {
                let _ = api
                    .delete_collection(&DeleteParams::background(), &ListParams::default())
                    .await?;
            }
            remaining += api.list(&ListParams::default().limit(1)).await?.items.len();
        }
    }
    Ok(remaining)
}
