//! Which endpoint a URL path names.

use nodeless_api::registry::{self, ResourceKind};

use crate::ApiError;

/// A parsed request path.
#[derive(Debug, PartialEq)]
pub enum Route {
    Health,
    Version,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/{group}`
    Group(String),
    /// `/api/v1`, `/apis/{group}/{version}`
    GroupVersion(String, String),
    OpenApiV2,
    OpenApiV3Index,
    /// `/.well-known/openid-configuration` (service account issuer discovery)
    OpenIdConfiguration,
    /// `/openid/v1/jwks`, the keys that verify service account tokens
    OpenIdKeys,
    /// `/openapi/v3/api/v1`, `/openapi/v3/apis/{group}/{version}`
    OpenApiV3(String, String),
    Resource(ResourcePath),
}

/// A path that names a resource collection, an object or a subresource.
#[derive(Debug, PartialEq)]
pub struct ResourcePath {
    pub kind: &'static ResourceKind,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The deprecated `/watch/` path form.
    pub watch_path: bool,
}

fn not_found(path: &str) -> ApiError {
    ApiError::no_route(format!(
        "the server could not find the requested resource ({path})"
    ))
}

/// Parses a request path.
pub fn parse(path: &str) -> Result<Route, ApiError> {
    let trimmed = path.trim_end_matches('/');
    match trimmed {
        "/healthz" | "/livez" | "/readyz" => return Ok(Route::Health),
        "/version" => return Ok(Route::Version),
        "/api" => return Ok(Route::CoreVersions),
        "/apis" => return Ok(Route::Groups),
        "/openapi/v2" | "/swagger.json" => return Ok(Route::OpenApiV2),
        "/openapi/v3" => return Ok(Route::OpenApiV3Index),
        "/.well-known/openid-configuration" => return Ok(Route::OpenIdConfiguration),
        "/openid/v1/jwks" => return Ok(Route::OpenIdKeys),
        _ => {}
    }
    if trimmed.starts_with("/healthz/")
        || trimmed.starts_with("/livez/")
        || trimmed.starts_with("/readyz/")
    {
        return Ok(Route::Health);
    }
    let segs: Vec<&str> = trimmed.split('/').skip(1).collect();
    match segs.as_slice() {
        ["openapi", "v3", "api", v] => return Ok(Route::OpenApiV3(String::new(), v.to_string())),
        ["openapi", "v3", "apis", g, v] => {
            return Ok(Route::OpenApiV3(g.to_string(), v.to_string()))
        }
        _ => {}
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group] => {
            return if registry::groups().iter().any(|(g, _)| g == group) {
                Ok(Route::Group(group.to_string()))
            } else {
                Err(not_found(path))
            }
        }
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(not_found(path)),
    };
    if !registry::groups()
        .iter()
        .any(|(g, v)| *g == group && *v == version)
    {
        return Err(not_found(path));
    }
    if rest.is_empty() {
        return Ok(Route::GroupVersion(group.to_string(), version.to_string()));
    }
    let (watch_path, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    let lookup =
        |plural: &str| registry::by_plural(group, version, plural).ok_or_else(|| not_found(path));
    let namespace_kind = || lookup("namespaces");
    let (kind, namespace, name, sub) = match rest {
        ["namespaces"] => (namespace_kind()?, None, None, None),
        ["namespaces", name] if group.is_empty() => (namespace_kind()?, None, Some(*name), None),
        ["namespaces", name, sub @ ("status" | "finalize")] if group.is_empty() => {
            (namespace_kind()?, None, Some(*name), Some(*sub))
        }
        ["namespaces", ns, plural] => (lookup(plural)?, Some(*ns), None, None),
        ["namespaces", ns, plural, name] => (lookup(plural)?, Some(*ns), Some(*name), None),
        ["namespaces", ns, plural, name, sub] => {
            (lookup(plural)?, Some(*ns), Some(*name), Some(*sub))
        }
        [plural] => (lookup(plural)?, None, None, None),
        [plural, name] => (lookup(plural)?, None, Some(*name), None),
        [plural, name, sub] => (lookup(plural)?, None, Some(*name), Some(*sub)),
        _ => return Err(not_found(path)),
    };
    // A namespaced kind addressed by name without a namespace, or a cluster-scoped kind
    // under a namespace, names nothing.
    if (kind.namespaced && namespace.is_none() && name.is_some())
        || (!kind.namespaced && namespace.is_some())
    {
        return Err(not_found(path));
    }
    if let Some(sub) = sub {
        let known = match sub {
            "status" => kind.status_subresource,
            "scale" => kind.scale.is_some(),
            "binding" | "log" | "exec" | "attach" | "portforward" => kind.kind == "Pod",
            "finalize" => kind.kind == "Namespace",
            "token" => kind.kind == "ServiceAccount",
            "approval" => kind.kind == "CertificateSigningRequest",
            _ => false,
        };
        if !known {
            return Err(not_found(path));
        }
    }
    Ok(Route::Resource(ResourcePath {
        kind,
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
        subresource: sub.map(str::to_string),
        watch_path,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(path: &str) -> ResourcePath {
        match parse(path).unwrap() {
            Route::Resource(r) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn resource_paths() {
        let r = res("/api/v1/namespaces/default/pods/web/status");
        assert_eq!(
            (
                r.kind.plural,
                r.namespace.as_deref(),
                r.name.as_deref(),
                r.subresource.as_deref()
            ),
            ("pods", Some("default"), Some("web"), Some("status"))
        );
        let r = res("/api/v1/namespaces/kube-system");
        assert_eq!(
            (r.kind.plural, r.name.as_deref()),
            ("namespaces", Some("kube-system"))
        );
        let r = res("/apis/apps/v1/deployments");
        assert_eq!(
            (r.kind.plural, r.namespace, r.name),
            ("deployments", None, None)
        );
        let r = res("/api/v1/watch/namespaces/default/pods");
        assert!(r.watch_path);
        assert_eq!(
            parse("/apis/apps/v1").unwrap(),
            Route::GroupVersion("apps".into(), "v1".into())
        );
    }

    #[test]
    fn nonsense_is_not_found() {
        for p in [
            "/api/v2/pods",
            "/apis/apps/v1/widgets",
            "/api/v1/pods/x",
            "/api/v1/namespaces/a/nodes",
            "/api/v1/namespaces/a/pods/x/scale",
            "/nope",
            "/apis/nope",
        ] {
            assert_eq!(parse(p).unwrap_err().code, 404, "{p}");
        }
    }
}
