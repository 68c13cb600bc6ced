//! The root CA publisher (upstream's `pkg/controller/certificates/rootcacertpublisher`):
//! every active namespace has a ConfigMap `kube-root-ca.crt` whose key `ca.crt` is the
//! cluster CA, the bundle pods use to verify the API server (the admission plugin projects it
//! next to their token). The ConfigMap is recreated when deleted and put back when changed.
//!
//! The CA is the one the binary gives with [`set_root_ca`] (the cluster CA of the data
//! dir); without one the publisher does nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::{ControllerError, RETRY_AFTER};

/// The ConfigMap's name.
pub const CONFIG_MAP_NAME: &str = "kube-root-ca.crt";
/// Its one key.
pub const CA_KEY: &str = "ca.crt";
/// The annotation that says what the ConfigMap is for.
pub const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
/// Upstream's description.
pub const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

static ROOT_CA: OnceLock<String> = OnceLock::new();

/// Sets the CA bundle (PEM) to publish; the first call wins.
pub fn set_root_ca(pem: &str) {
    if ROOT_CA.set(pem.to_string()).is_err() {
        tracing::debug!("the root CA to publish was already set");
    }
}

struct Context {
    client: Client,
    ca_pem: String,
}

/// Runs the publisher with the CA of [`set_root_ca`]; without one it never returns and does
/// nothing.
pub async fn run(client: Client) {
    match ROOT_CA.get() {
        Some(pem) => run_with(client, pem.clone()).await,
        None => {
            tracing::warn!("no root CA to publish: namespaces get no kube-root-ca.crt");
            std::future::pending::<()>().await
        }
    }
}

/// Runs the publisher for `ca_pem` until its watches end.
pub async fn run_with(client: Client, ca_pem: String) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let config_maps: Api<ConfigMap> = Api::all(client.clone());
    let context = Arc::new(Context { client, ca_pem });
    Controller::new(namespaces, watcher::Config::default())
        .watches(
            config_maps,
            watcher::Config::default().fields(&format!("metadata.name={CONFIG_MAP_NAME}")),
            |cm| cm.namespace().map(|ns| ObjectRef::new(&ns)),
        )
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "root CA reconcile");
            }
        })
        .await;
}

fn error_policy(_ns: Arc<Namespace>, error: &ControllerError, _ctx: Arc<Context>) -> Action {
    tracing::debug!(%error, "root CA publisher will retry");
    Action::requeue(RETRY_AFTER)
}

fn wanted_data(ca_pem: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(CA_KEY.to_string(), ca_pem.to_string())])
}

/// The ConfigMap brought to what it should hold, or `None` when it already does.
fn corrected(existing: &ConfigMap, ca_pem: &str) -> Option<ConfigMap> {
    let data = wanted_data(ca_pem);
    let described = existing
        .annotations()
        .get(DESCRIPTION_ANNOTATION)
        .map(String::as_str)
        == Some(DESCRIPTION);
    if existing.data.as_ref() == Some(&data) && existing.binary_data.is_none() && described {
        return None;
    }
    let mut fixed = existing.clone();
    fixed.data = Some(data);
    fixed.binary_data = None;
    fixed
        .annotations_mut()
        .insert(DESCRIPTION_ANNOTATION.into(), DESCRIPTION.into());
    Some(fixed)
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    if !crate::service_account::is_active(&ns) {
        return Ok(Action::await_change());
    }
    let namespace = ns.name_any();
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = match config_maps.get_opt(CONFIG_MAP_NAME).await? {
        Some(existing) => match corrected(&existing, &ctx.ca_pem) {
            Some(fixed) => config_maps
                .replace(CONFIG_MAP_NAME, &PostParams::default(), &fixed)
                .await
                .map(|_| ()),
            None => Ok(()),
        },
        None => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(CONFIG_MAP_NAME.to_string()),
                    namespace: Some(namespace.clone()),
                    annotations: Some(BTreeMap::from([(
                        DESCRIPTION_ANNOTATION.to_string(),
                        DESCRIPTION.to_string(),
                    )])),
                    ..Default::default()
                },
                data: Some(wanted_data(&ctx.ca_pem)),
                ..Default::default()
            };
            config_maps
                .create(&PostParams::default(), &cm)
                .await
                .map(|_| tracing::info!(%namespace, "published the root CA"))
        }
    };
    match result {
        Ok(()) => Ok(Action::await_change()),
        // Made or changed meanwhile (the watch brings it back), or the namespace terminates.
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 403 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_config_map_is_put_back_and_a_right_one_left() {
        let mut cm = ConfigMap {
            data: Some(BTreeMap::from([
                (CA_KEY.to_string(), "old".to_string()),
                ("extra".to_string(), "x".to_string()),
            ])),
            ..Default::default()
        };
        let fixed = corrected(&cm, "PEM").unwrap();
        assert_eq!(fixed.data, Some(wanted_data("PEM")));
        assert_eq!(
            fixed
                .annotations()
                .get(DESCRIPTION_ANNOTATION)
                .map(String::as_str),
            Some(DESCRIPTION)
        );
        assert!(corrected(&fixed, "PEM").is_none());
        cm.data = Some(wanted_data("PEM"));
        // Right data, no description: still corrected.
        assert!(corrected(&cm, "PEM").is_some());
    }
}
