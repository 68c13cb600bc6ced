//! The generic handlers: one implementation of every verb, driven by the registry entry of
//! the kind a request names.

pub(crate) mod connect;
mod filter;
mod model;
pub(crate) mod output;
mod read;
mod subresource;
mod token_request;
mod watch;
mod write;

use std::sync::Arc;

use http::Method;
use hyper::Response;
use serde_json::json;

use crate::discovery;
use crate::http_util::{self, negotiate, ApiRequest, Body, Output};
use crate::route::{self, ResourcePath, Route};
use crate::server::AppState;
use crate::ApiError;

/// Answers one request; every failure becomes a `Status` response.
pub async fn dispatch(state: &Arc<AppState>, req: ApiRequest) -> Response<Body> {
    match handle(state, req).await {
        Ok(resp) => resp,
        Err(e) => http_util::error_response(&e),
    }
}

/// The version the server reports; kubectl compares it with its own.
pub fn version_info() -> serde_json::Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": concat!("v1.33.0-nodeless.", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH }),
    })
}

async fn handle(state: &Arc<AppState>, req: ApiRequest) -> Result<Response<Body>, ApiError> {
    if let Some(who) = &req.identity {
        tracing::trace!(user = %who.user, groups = ?who.groups, method = %req.method, path = %req.path, "request");
    }
    let route = route::parse(&req.path)?;
    let read_only = |req: &ApiRequest| -> Result<(), ApiError> {
        if req.method == Method::GET || req.method == Method::HEAD {
            Ok(())
        } else {
            Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({})",
                req.path
            )))
        }
    };
    match route {
        Route::Health => {
            read_only(&req)?;
            Ok(http_util::bytes_response(
                200,
                "text/plain; charset=utf-8",
                b"ok".to_vec(),
            ))
        }
        Route::Version => {
            read_only(&req)?;
            Ok(http_util::value_response(
                200,
                &version_info(),
                Output::Json,
            ))
        }
        Route::CoreVersions => {
            read_only(&req)?;
            if let Some(resp) = discovery::aggregated_core(req.header(http::header::ACCEPT)) {
                return Ok(resp);
            }
            Ok(http_util::value_response(
                200,
                &discovery::core_versions(),
                Output::Json,
            ))
        }
        Route::Groups => {
            read_only(&req)?;
            Ok(discovery::groups_response(req.header(http::header::ACCEPT)))
        }
        Route::Group(group) => {
            read_only(&req)?;
            Ok(http_util::value_response(
                200,
                &discovery::group(&group),
                Output::Json,
            ))
        }
        Route::GroupVersion(group, version) => {
            read_only(&req)?;
            Ok(http_util::value_response(
                200,
                &discovery::resource_list(&group, &version),
                Output::Json,
            ))
        }
        Route::OpenApiV2 => {
            read_only(&req)?;
            discovery::openapi_v2(req.header(http::header::ACCEPT))
        }
        Route::OpenIdConfiguration => {
            read_only(&req)?;
            Ok(http_util::value_response(
                200,
                &state.service_account_tokens.openid_configuration(),
                Output::Json,
            ))
        }
        Route::OpenIdKeys => {
            read_only(&req)?;
            let keys = serde_json::to_vec(&state.service_account_tokens.jwks()).unwrap_or_default();
            Ok(http_util::bytes_response(
                200,
                "application/jwk-set+json",
                keys,
            ))
        }
        Route::OpenApiV3Index => {
            read_only(&req)?;
            Ok(http_util::value_response(
                200,
                discovery::openapi_v3_index(),
                Output::Json,
            ))
        }
        Route::OpenApiV3(group, version) => {
            read_only(&req)?;
            discovery::openapi_v3(
                &group,
                &version,
                req.query.get("hash"),
                req.header(http::header::IF_NONE_MATCH),
            )
        }
        Route::Resource(path) => resource(state, req, path).await,
    }
}

async fn resource(
    state: &Arc<AppState>,
    req: ApiRequest,
    path: ResourcePath,
) -> Result<Response<Body>, ApiError> {
    let output = negotiate(req.header(http::header::ACCEPT))?;
    let ctx = Ctx {
        state,
        req: &req,
        path: &path,
        output,
    };
    let is_watch = path.watch_path || req.query.flag("watch")?;
    match (
        &req.method,
        path.name.as_deref(),
        path.subresource.as_deref(),
    ) {
        (&Method::GET, None, None) if is_watch => watch::watch(&ctx).await,
        (&Method::GET, Some(_), None) if path.watch_path => watch::watch(&ctx).await,
        (&Method::GET, None, None) => read::list(&ctx).await,
        (&Method::POST, None, None) => write::create(&ctx).await,
        (&Method::DELETE, None, None) => write::delete_collection(&ctx).await,
        (&Method::GET, Some(name), None | Some("status") | Some("approval")) => {
            read::get(&ctx, name).await
        }
        (
            &Method::PUT,
            Some(name),
            sub @ (None | Some("status") | Some("finalize") | Some("approval")),
        ) => write::update(&ctx, name, sub).await,
        (&Method::PATCH, Some(name), sub @ (None | Some("status") | Some("approval"))) => {
            write::patch(&ctx, name, sub).await
        }
        (&Method::DELETE, Some(name), None) => write::delete(&ctx, name).await,
        (&Method::GET | &Method::PUT | &Method::PATCH, Some(name), Some("scale")) => {
            subresource::scale(&ctx, name).await
        }
        (&Method::POST, Some(name), Some("binding")) => subresource::binding(&ctx, name).await,
        (&Method::POST, Some(name), Some("token")) => token_request::create(&ctx, name).await,
        (&Method::GET, Some(name), Some("log")) => connect::log(&ctx, name).await,
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({} {})",
            req.method, req.path
        ))),
    }
}

/// What a resource handler works with.
pub(crate) struct Ctx<'a> {
    pub state: &'a Arc<AppState>,
    pub req: &'a ApiRequest,
    pub path: &'a ResourcePath,
    pub output: Output,
}

impl Ctx<'_> {
    pub fn kind(&self) -> &'static nodeless_api::registry::ResourceKind {
        self.path.kind
    }

    pub fn namespace(&self) -> Option<&str> {
        self.path.namespace.as_deref()
    }

    /// `includeObject` of table requests (`Metadata` by default).
    pub fn include_object(&self) -> &str {
        self.req.query.get("includeObject").unwrap_or("Metadata")
    }

    /// Renders one object the way the client asked.
    pub fn respond(&self, code: u16, obj: serde_json::Value) -> Response<Body> {
        let out = output::object(self.kind(), obj, self.output, self.include_object());
        http_util::value_response(code, &out, self.output)
    }
}
