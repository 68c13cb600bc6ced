//! A container's environment, as the kubelet's `makeEnvironmentVariables` builds it: `envFrom`
//! first (a later source overrides an earlier one), then `env` in order, each `value` expanded
//! against the variables defined so far, each `valueFrom` resolved from the API or the pod.
//! Also the field and resource selectors that downwardAPI volumes share with `env`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceFieldSelector};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use nodeless_api::quantity::Quantity;

use super::expand::expand;
use super::sources::Sources;
use super::{InputError, InputWarning};

/// Environment variables in the order they were first defined; redefining one keeps its
/// place and replaces its value.
#[derive(Debug, Default)]
pub(crate) struct Environment {
    vars: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl Environment {
    /// Defines or redefines `name`.
    pub(crate) fn set(&mut self, name: String, value: String) {
        match self.index.get(&name) {
            Some(&at) => self.vars[at].1 = value,
            None => {
                self.index.insert(name.clone(), self.vars.len());
                self.vars.push((name, value));
            }
        }
    }

    /// The value of `name`, if defined.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&at| self.vars[at].1.as_str())
    }

    /// The variables, in order.
    pub(crate) fn into_vars(self) -> Vec<(String, String)> {
        self.vars
    }
}

/// Whether `name` may be an environment variable: the rule the API server validates
/// (`RelaxedEnvironmentVariableValidation`, on by default since 1.32): printable ASCII other
/// than `=`.
pub(crate) fn is_env_var_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b'=')
}

/// Resolves the environment of `container`; the warnings are events upstream records
/// (`InvalidEnvironmentVariableNames`).
pub(crate) async fn resolve(
    sources: &mut Sources<'_>,
    pod: &Pod,
    pod_ip: IpAddr,
    container: &Container,
) -> Result<(Environment, Vec<InputWarning>), InputError> {
    let namespace = sources.namespace().to_string();
    let mut env = Environment::default();
    let mut warnings = Vec::new();
    let namespace_services = sources.services(&namespace).await?;
    let default_services = if namespace == "default" {
        namespace_services.clone()
    } else {
        sources.services("default").await?
    };
    let service_env: Vec<(String, String)> = super::service_links::variables(
        &super::service_links::selected(pod, &namespace_services, &default_services),
    );
    let service_value = |name: &str| {
        service_env
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let (kind, name, data) = if let Some(r) = &from.config_map_ref {
            let data = match sources.config_map(&r.name).await? {
                Some(cm) => cm.data.unwrap_or_default(),
                None if r.optional == Some(true) => continue,
                None => {
                    return Err(InputError::Missing(format!(
                        "configmap {:?} not found",
                        r.name
                    )))
                }
            };
            ("configMap", r.name.clone(), data)
        } else if let Some(r) = &from.secret_ref {
            let data = match sources.secret(&r.name).await? {
                Some(s) => s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect(),
                None if r.optional == Some(true) => continue,
                None => {
                    return Err(InputError::Missing(format!(
                        "secret {:?} not found",
                        r.name
                    )))
                }
            };
            ("secret", r.name.clone(), data)
        } else {
            continue;
        };
        let mut invalid = Vec::new();
        for (key, value) in data {
            let key = format!("{prefix}{key}");
            if is_env_var_name(&key) {
                env.set(key, value);
            } else {
                invalid.push(key);
            }
        }
        if !invalid.is_empty() {
            invalid.sort();
            warnings.push(InputWarning {
                reason: "InvalidEnvironmentVariableNames",
                message: format!(
                    "Keys [{}] from the EnvFrom {kind} {namespace}/{name} were skipped since they are considered invalid environment variable names.",
                    invalid.join(", ")
                ),
            });
        }
    }

    for var in container.env.iter().flatten() {
        let value = var.value.as_deref().unwrap_or("");
        let resolved = if !value.is_empty() {
            expand(value, |name| {
                env.get(name)
                    .map(str::to_string)
                    .or_else(|| service_value(name))
            })
        } else if let Some(from) = &var.value_from {
            if let Some(field) = &from.field_ref {
                field_value(sources, pod, Some(pod_ip), &field.field_path).await?
            } else if let Some(resource) = &from.resource_field_ref {
                let allocatable = sources.node_allocatable(pod).await?;
                container_resource_value(resource, container, pod, &allocatable)?
            } else if let Some(r) = &from.config_map_key_ref {
                let optional = r.optional == Some(true);
                let Some(cm) = sources.config_map(&r.name).await? else {
                    if optional {
                        continue;
                    }
                    return Err(InputError::Missing(format!(
                        "configmap {:?} not found",
                        r.name
                    )));
                };
                match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                    Some(v) => v.clone(),
                    None if optional => continue,
                    None => {
                        return Err(InputError::Missing(format!(
                            "couldn't find key {} in ConfigMap {namespace}/{}",
                            r.key, r.name
                        )))
                    }
                }
            } else if let Some(r) = &from.secret_key_ref {
                let optional = r.optional == Some(true);
                let Some(secret) = sources.secret(&r.name).await? else {
                    if optional {
                        continue;
                    }
                    return Err(InputError::Missing(format!(
                        "secret {:?} not found",
                        r.name
                    )));
                };
                match secret.data.as_ref().and_then(|d| d.get(&r.key)) {
                    Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                    None if optional => continue,
                    None => {
                        return Err(InputError::Missing(format!(
                            "couldn't find key {} in Secret {namespace}/{}",
                            r.key, r.name
                        )))
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        env.set(var.name.clone(), resolved);
    }
    // The service variables come last and never override the container's own.
    for (name, value) in &service_env {
        if env.get(name).is_none() {
            env.set(name.clone(), value.clone());
        }
    }
    Ok((env, warnings))
}

/// The value of a `fieldRef` (env) or a downwardAPI item: the kubelet's runtime fields
/// (`spec.nodeName`, `status.podIP`…) and upstream's `ExtractFieldPathAsString` for metadata.
pub(crate) async fn field_value(
    sources: &mut Sources<'_>,
    pod: &Pod,
    pod_ip: Option<IpAddr>,
    path: &str,
) -> Result<String, InputError> {
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let pod_ips = || -> Vec<String> {
        let from_status: Vec<String> = status
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| ips.iter().map(|ip| ip.ip.clone()).collect())
            .unwrap_or_default();
        match pod_ip {
            // The sandbox's IP comes first; the status may not carry it yet.
            Some(ip) => {
                let ip = ip.to_string();
                let mut all = vec![ip.clone()];
                all.extend(from_status.into_iter().filter(|other| *other != ip));
                all
            }
            None => from_status,
        }
    };
    Ok(match path {
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" => pod_ips().into_iter().next().unwrap_or_default(),
        "status.podIPs" => pod_ips().join(","),
        "status.hostIP" => sources
            .host_ips(pod)
            .await?
            .into_iter()
            .next()
            .unwrap_or_default(),
        "status.hostIPs" => sources.host_ips(pod).await?.join(","),
        _ => metadata_field(pod, path)?,
    })
}

/// Upstream's `ExtractFieldPathAsString` for the metadata a pod exposes.
pub(crate) fn metadata_field(pod: &Pod, path: &str) -> Result<String, InputError> {
    let meta = &pod.metadata;
    let unsupported = || InputError::Invalid(format!("unsupported fieldPath: {path}"));
    if let Some((map, rest)) = path.split_once('[') {
        let key = rest
            .strip_suffix(']')
            .and_then(|k| k.strip_prefix('\'').and_then(|k| k.strip_suffix('\'')))
            .ok_or_else(unsupported)?;
        let values = match map {
            "metadata.annotations" => meta.annotations.as_ref(),
            "metadata.labels" => meta.labels.as_ref(),
            _ => return Err(unsupported()),
        };
        return Ok(values.and_then(|m| m.get(key)).cloned().unwrap_or_default());
    }
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        _ => return Err(unsupported()),
    })
}

/// Upstream's `fieldpath.FormatMap`: `key="value"` lines in key order, Go-quoted values.
pub(crate) fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A string quoted as Go's `%q` does (printable characters kept, others escaped).
fn go_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => {
                let code = c as u32;
                if code <= 0xffff {
                    out.push_str(&format!("\\u{code:04x}"))
                } else {
                    out.push_str(&format!("\\U{code:08x}"))
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The value of a `resourceFieldRef` as upstream's `ExtractContainerResourceValue`: cpu in
/// whole divisor units rounded up, memory and ephemeral-storage likewise; an unset limit is
/// the pod-level limit or else the node's allocatable, as the kubelet merges them.
pub(crate) fn container_resource_value(
    selector: &ResourceFieldSelector,
    container: &Container,
    pod: &Pod,
    allocatable: &BTreeMap<String, ApiQuantity>,
) -> Result<String, InputError> {
    let divisor = match selector
        .divisor
        .as_ref()
        .map(|d| parse_quantity(&d.0))
        .transpose()?
    {
        Some(d) if !d.is_zero() => d,
        _ => parse_quantity("1")?,
    };
    let (kind, resource) = selector
        .resource
        .split_once('.')
        .ok_or_else(|| unsupported_resource(&selector.resource))?;
    if !matches!(resource, "cpu" | "memory" | "ephemeral-storage") {
        return Err(unsupported_resource(&selector.resource));
    }
    let resources = container.resources.as_ref();
    let value = match kind {
        "limits" => resources
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get(resource))
            .or_else(|| {
                pod.spec
                    .as_ref()
                    .and_then(|s| s.resources.as_ref())
                    .and_then(|r| r.limits.as_ref())
                    .and_then(|l| l.get(resource))
            })
            .or_else(|| allocatable.get(resource)),
        "requests" => resources
            .and_then(|r| r.requests.as_ref())
            .and_then(|l| l.get(resource)),
        _ => return Err(unsupported_resource(&selector.resource)),
    };
    let value = match value {
        Some(q) => parse_quantity(&q.0)?,
        None => parse_quantity("0")?,
    };
    let (amount, per) = if resource == "cpu" {
        (value.to_millis(), divisor.to_millis())
    } else {
        (value.to_bytes(), divisor.to_bytes())
    };
    if per <= 0 {
        return Err(InputError::Invalid(format!(
            "invalid divisor {:?} for {}",
            divisor.original(),
            selector.resource
        )));
    }
    Ok(div_ceil(amount, per).to_string())
}

fn div_ceil(value: i128, divisor: i128) -> i128 {
    let q = value / divisor;
    if value % divisor > 0 {
        q + 1
    } else {
        q
    }
}

fn unsupported_resource(resource: &str) -> InputError {
    InputError::Invalid(format!("unsupported container resource : {resource}"))
}

fn parse_quantity(text: &str) -> Result<Quantity, InputError> {
    Quantity::parse(text).map_err(|e| InputError::Invalid(format!("quantity {text:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use kube::api::ObjectMeta;

    fn container(limits: &[(&str, &str)], requests: &[(&str, &str)]) -> Container {
        let map = |pairs: &[(&str, &str)]| {
            (!pairs.is_empty()).then(|| {
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), ApiQuantity(v.to_string())))
                    .collect()
            })
        };
        Container {
            name: "app".into(),
            resources: Some(ResourceRequirements {
                limits: map(limits),
                requests: map(requests),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn resource(container: &Container, name: &str, divisor: Option<&str>) -> String {
        let allocatable = BTreeMap::from([
            ("cpu".to_string(), ApiQuantity("8".into())),
            ("memory".to_string(), ApiQuantity("16Gi".into())),
        ]);
        let selector = ResourceFieldSelector {
            resource: name.into(),
            divisor: divisor.map(|d| ApiQuantity(d.into())),
            container_name: None,
        };
        container_resource_value(&selector, container, &Pod::default(), &allocatable).unwrap()
    }

    #[test]
    fn resource_divisors_round_up() {
        let c = container(&[("cpu", "250m"), ("memory", "64Mi")], &[("cpu", "100m")]);
        assert_eq!(resource(&c, "limits.cpu", None), "1");
        assert_eq!(resource(&c, "limits.cpu", Some("1m")), "250");
        assert_eq!(resource(&c, "limits.cpu", Some("100m")), "3");
        assert_eq!(resource(&c, "requests.cpu", Some("1m")), "100");
        assert_eq!(resource(&c, "limits.memory", None), "67108864");
        assert_eq!(resource(&c, "limits.memory", Some("1Mi")), "64");
        assert_eq!(resource(&c, "limits.memory", Some("1M")), "68");
        assert_eq!(resource(&c, "limits.memory", Some("0")), "67108864");
        assert_eq!(resource(&c, "requests.memory", None), "0");
    }

    #[test]
    fn unset_limits_fall_back_to_allocatable() {
        let c = container(&[], &[]);
        assert_eq!(resource(&c, "limits.cpu", None), "8");
        assert_eq!(resource(&c, "limits.memory", Some("1Gi")), "16");
    }

    #[test]
    fn unknown_resource_is_refused() {
        let c = container(&[], &[]);
        let selector = ResourceFieldSelector {
            resource: "limits.gpu".into(),
            ..Default::default()
        };
        let err = container_resource_value(&selector, &c, &Pod::default(), &BTreeMap::new());
        assert_eq!(
            err.unwrap_err().to_string(),
            "unsupported container resource : limits.gpu"
        );
    }

    #[test]
    fn metadata_fields() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                uid: Some("u-1".into()),
                labels: Some(BTreeMap::from([
                    ("b".to_string(), "two \"q\"".to_string()),
                    ("a".to_string(), "one".to_string()),
                ])),
                annotations: Some(BTreeMap::from([("x/y".to_string(), "z".to_string())])),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(metadata_field(&pod, "metadata.name").unwrap(), "web");
        assert_eq!(metadata_field(&pod, "metadata.namespace").unwrap(), "shop");
        assert_eq!(metadata_field(&pod, "metadata.uid").unwrap(), "u-1");
        assert_eq!(
            metadata_field(&pod, "metadata.labels").unwrap(),
            "a=\"one\"\nb=\"two \\\"q\\\"\""
        );
        assert_eq!(metadata_field(&pod, "metadata.labels['a']").unwrap(), "one");
        assert_eq!(metadata_field(&pod, "metadata.labels['none']").unwrap(), "");
        assert_eq!(
            metadata_field(&pod, "metadata.annotations['x/y']").unwrap(),
            "z"
        );
        assert_eq!(
            metadata_field(&pod, "spec.containers")
                .unwrap_err()
                .to_string(),
            "unsupported fieldPath: spec.containers"
        );
    }

    #[test]
    fn environment_keeps_first_position_and_last_value() {
        let mut env = Environment::default();
        env.set("A".into(), "1".into());
        env.set("B".into(), "2".into());
        env.set("A".into(), "3".into());
        assert_eq!(env.get("A"), Some("3"));
        assert_eq!(
            env.into_vars(),
            vec![("A".into(), "3".into()), ("B".into(), "2".into())]
        );
    }

    #[test]
    fn env_var_names() {
        assert!(is_env_var_name("FOO_1"));
        assert!(is_env_var_name("1badkey"));
        assert!(is_env_var_name("app.properties"));
        assert!(!is_env_var_name(""));
        assert!(!is_env_var_name("A=B"));
        assert!(!is_env_var_name("tab\there"));
    }
}
