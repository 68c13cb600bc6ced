//! The API objects a pod's inputs come from, read once per resolution (the kubelet caches
//! them the same way within one `makeEnvironmentVariables`).

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{
    ConfigMap, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use kube::Api;

use super::InputError;

/// Reads (and remembers) the config maps, secrets and the Node a pod refers to. Built
/// offline (no client) it answers only from what was put in, which the unit tests use.
pub(crate) struct Sources<'a> {
    client: Option<&'a kube::Client>,
    namespace: String,
    config_maps: HashMap<String, Option<ConfigMap>>,
    secrets: HashMap<String, Option<Secret>>,
    node: Option<Option<Node>>,
    /// Where the Services come from when the agent watches them.
    service_cache: Option<super::ServiceCache>,
}

impl<'a> Sources<'a> {
    /// Sources for `pod`, read through `client`.
    pub(crate) fn new(client: &'a kube::Client, pod: &Pod) -> Self {
        let mut sources = Self::offline(pod.metadata.namespace.as_deref().unwrap_or("default"));
        sources.client = Some(client);
        sources
    }

    /// Sources that answer only from what [`Self::insert_config_map`] and
    /// [`Self::insert_secret`] were given.
    pub(crate) fn offline(namespace: &str) -> Self {
        Self {
            client: None,
            namespace: namespace.to_string(),
            config_maps: HashMap::new(),
            secrets: HashMap::new(),
            node: None,
            service_cache: None,
        }
    }

    /// Makes a config map known (offline sources).
    #[cfg(test)]
    pub(crate) fn insert_config_map(&mut self, cm: ConfigMap) {
        let name = cm.metadata.name.clone().unwrap_or_default();
        self.config_maps.insert(name, Some(cm));
    }

    /// Makes a secret known (offline sources).
    #[cfg(test)]
    pub(crate) fn insert_secret(&mut self, secret: Secret) {
        let name = secret.metadata.name.clone().unwrap_or_default();
        self.secrets.insert(name, Some(secret));
    }

    /// The API client (`None` offline).
    pub(crate) fn client(&self) -> Option<&'a kube::Client> {
        self.client
    }

    /// The pod's namespace.
    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The config map `name` of the pod's namespace, `None` if it does not exist.
    pub(crate) async fn config_map(&mut self, name: &str) -> Result<Option<ConfigMap>, InputError> {
        if let Some(found) = self.config_maps.get(name) {
            return Ok(found.clone());
        }
        let found = match self.client {
            Some(client) => {
                Api::<ConfigMap>::namespaced(client.clone(), &self.namespace)
                    .get_opt(name)
                    .await?
            }
            None => None,
        };
        self.config_maps.insert(name.to_string(), found.clone());
        Ok(found)
    }

    /// The secret `name` of the pod's namespace, `None` if it does not exist.
    pub(crate) async fn secret(&mut self, name: &str) -> Result<Option<Secret>, InputError> {
        if let Some(found) = self.secrets.get(name) {
            return Ok(found.clone());
        }
        let found = match self.client {
            Some(client) => {
                Api::<Secret>::namespaced(client.clone(), &self.namespace)
                    .get_opt(name)
                    .await?
            }
            None => None,
        };
        self.secrets.insert(name.to_string(), found.clone());
        Ok(found)
    }

    /// The claim `name` of the pod's namespace.
    pub(crate) async fn claim(
        &self,
        name: &str,
    ) -> Result<Option<PersistentVolumeClaim>, InputError> {
        match self.client {
            Some(client) => Ok(Api::<PersistentVolumeClaim>::namespaced(
                client.clone(),
                &self.namespace,
            )
            .get_opt(name)
            .await?),
            None => Ok(None),
        }
    }

    /// Reads the Services from `cache` (when it has listed) rather than from the API.
    pub(crate) fn use_service_cache(&mut self, cache: Option<super::ServiceCache>) {
        self.service_cache = cache;
    }

    /// The Services of `namespace` (for the service environment variables): from the
    /// agent's cache, else from the API; none offline.
    pub(crate) async fn services(
        &self,
        namespace: &str,
    ) -> Result<Vec<k8s_openapi::api::core::v1::Service>, InputError> {
        if let Some(cache) = &self.service_cache {
            if let Some(services) = cache.services(namespace).await {
                return Ok(services);
            }
        }
        match self.client {
            Some(client) => Ok(Api::<k8s_openapi::api::core::v1::Service>::namespaced(
                client.clone(),
                namespace,
            )
            .list(&Default::default())
            .await?
            .items),
            None => Ok(Vec::new()),
        }
    }

    /// The persistent volume `name`.
    pub(crate) async fn volume(&self, name: &str) -> Result<Option<PersistentVolume>, InputError> {
        match self.client {
            Some(client) => Ok(Api::<PersistentVolume>::all(client.clone())
                .get_opt(name)
                .await?),
            None => Ok(None),
        }
    }

    /// The Node the pod is bound to.
    async fn node(&mut self, pod: Option<&Pod>) -> Result<Option<Node>, InputError> {
        if let Some(node) = &self.node {
            return Ok(node.clone());
        }
        let name = pod
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.node_name.clone());
        let node = match (self.client, name) {
            (Some(client), Some(name)) => Api::<Node>::all(client.clone()).get_opt(&name).await?,
            _ => None,
        };
        self.node = Some(node.clone());
        Ok(node)
    }

    /// The allocatable resources of the pod's Node (what an unset limit means).
    pub(crate) async fn node_allocatable(
        &mut self,
        pod: &Pod,
    ) -> Result<BTreeMap<String, ApiQuantity>, InputError> {
        Ok(self
            .node(Some(pod))
            .await?
            .and_then(|n| n.status)
            .and_then(|s| s.allocatable)
            .unwrap_or_default())
    }

    /// The host IPs of the pod: its status, or the Node's InternalIP addresses.
    pub(crate) async fn host_ips(&mut self, pod: &Pod) -> Result<Vec<String>, InputError> {
        let status = pod.status.as_ref();
        let mut ips: Vec<String> = status
            .and_then(|s| s.host_ips.as_ref())
            .map(|ips| ips.iter().map(|ip| ip.ip.clone()).collect())
            .unwrap_or_default();
        if ips.is_empty() {
            if let Some(ip) = status.and_then(|s| s.host_ip.clone()) {
                ips.push(ip);
            }
        }
        if ips.is_empty() {
            let node = self.node(Some(pod)).await?;
            ips = node
                .and_then(|n| n.status)
                .and_then(|s| s.addresses)
                .into_iter()
                .flatten()
                .filter(|a| a.type_ == "InternalIP")
                .map(|a| a.address)
                .collect();
        }
        Ok(ips)
    }
}
