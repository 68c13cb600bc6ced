//! create, update, patch, delete and deletecollection: the write pipeline shared by every
//! kind (decode → check → defaults → validation → admission → managed fields → store).

use hyper::Response;
use nodeless_api::registry::ResourceKind;
use serde_json::{json, Map, Value};

use super::filter::Filter;
use super::{model, Ctx};
use crate::admission::{AdmissionRequest, Operation};
use crate::http_util::{self, Body};
use crate::objects;
use crate::ApiError;

/// How many times a write retries when the object changed under it.
pub(super) const MAX_RETRIES: usize = 8;

/// The characters upstream's `generateName` suffixes are made of.
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn generate_suffix() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..5)
        .map(|_| NAME_ALPHABET[rng.gen_range(0..NAME_ALPHABET.len())] as char)
        .collect()
}

/// Parses `dryRun`: only `All` is defined.
pub fn dry_run(ctx: &Ctx<'_>) -> Result<bool, ApiError> {
    match ctx.req.query.get("dryRun") {
        None => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "Invalid dry run value: {other:?}: supported values: \"All\""
        ))),
    }
}

/// Checks the body's apiVersion and kind against the URL, filling them in when absent.
fn check_type(kind: &ResourceKind, obj: &mut Value) -> Result<(), ApiError> {
    let map = obj
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
    let expected_version = kind.api_version();
    match map.get("apiVersion") {
        None | Some(Value::Null) => {
            map.insert("apiVersion".into(), Value::String(expected_version));
        }
        Some(Value::String(v)) if *v == expected_version => {}
        Some(other) => {
            let shown = other
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| other.to_string());
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({shown}) does not match the expected API version ({expected_version})"
            )));
        }
    }
    match map.get("kind") {
        None | Some(Value::Null) => {
            map.insert("kind".into(), Value::String(kind.kind.to_string()));
        }
        Some(Value::String(k)) if k == kind.kind => {}
        Some(other) => {
            let shown = other
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| other.to_string());
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({shown}) does not match the expected kind ({})",
                kind.kind
            )));
        }
    }
    if !map
        .get("metadata")
        .is_none_or(|m| m.is_object() || m.is_null())
    {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    Ok(())
}

/// Makes the object's namespace agree with the URL's.
fn check_namespace(ctx: &Ctx<'_>, obj: &mut Value) -> Result<(), ApiError> {
    let url_ns = ctx.namespace();
    let meta = objects::meta_mut(obj);
    if !ctx.kind().namespaced {
        meta.remove("namespace");
        return Ok(());
    }
    let Some(url_ns) = url_ns else {
        return Err(ApiError::bad_request(
            "a namespace must be given in the URL to write a namespaced object",
        ));
    };
    match meta.get("namespace").and_then(Value::as_str) {
        None | Some("") => {
            meta.insert("namespace".into(), Value::String(url_ns.to_string()));
            Ok(())
        }
        Some(ns) if ns == url_ns => Ok(()),
        Some(_) => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
    }
}

/// The namespace of a new namespaced object must exist and not be terminating.
async fn check_namespace_open(ctx: &Ctx<'_>, name: &str) -> Result<(), ApiError> {
    let Some(ns) = ctx.namespace().filter(|_| ctx.kind().namespaced) else {
        return Ok(());
    };
    let Some(ns_kind) = nodeless_api::registry::by_plural("", "v1", "namespaces") else {
        return Ok(());
    };
    match ctx.state.storage.get(ns_kind, None, ns).await? {
        None => Err(ApiError::not_found(ns_kind, ns)),
        Some(n) if objects::is_deleting(&n) => Err(ApiError::forbidden(
            ctx.kind(),
            name,
            format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// `fieldValidation`: unknown fields are an error (Strict), a warning (Warn, the default) or
/// ignored.
fn field_validation(
    ctx: &Ctx<'_>,
    obj: &mut Value,
    warnings: &mut Vec<String>,
) -> Result<(), ApiError> {
    let mode = ctx.req.query.get("fieldValidation").unwrap_or("Warn");
    let mode = match mode {
        "Strict" | "Warn" | "Ignore" => mode,
        other => {
            return Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Warn\", \"Strict\""
            )))
        }
    };
    let unknown = if mode == "Ignore" {
        Vec::new()
    } else {
        model::unknown_fields(ctx.kind(), obj)
    };
    // Unknown fields are never stored, as decoding into upstream's types drops them.
    model::prune_unknown_fields(ctx.kind(), obj);
    if unknown.is_empty() {
        return Ok(());
    }
    let messages: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    if mode == "Strict" {
        return Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            messages.join(", ")
        )));
    }
    warnings.extend(messages);
    Ok(())
}

/// Removes what clients may not set and fills in what the server owns on create.
fn prepare_new(kind: &ResourceKind, obj: &mut Value) {
    let uid = uuid::Uuid::new_v4().to_string();
    let meta = objects::meta_mut(obj);
    for field in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
        "generation",
    ] {
        meta.remove(field);
    }
    meta.insert("uid".into(), Value::String(uid.clone()));
    meta.insert(
        "creationTimestamp".into(),
        Value::String(objects::now_rfc3339()),
    );
    if kind.tracks_generation {
        meta.insert("generation".into(), json!(1));
    }
    if kind.status_subresource {
        if let Some(map) = obj.as_object_mut() {
            map.remove("status");
        }
    }
    model::apply_defaults(kind, obj);
    model::prepare_for_create(kind, obj, &uid);
}

fn assign_generated_name(kind: &ResourceKind, obj: &mut Value) -> Result<String, ApiError> {
    let meta = objects::meta_mut(obj);
    if let Some(name) = meta
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        return Ok(name.to_string());
    }
    match meta
        .get("generateName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        Some(prefix) => {
            let name = format!("{prefix}{}", generate_suffix());
            meta.insert("name".into(), Value::String(name.clone()));
            Ok(name)
        }
        None => Err(ApiError::invalid(
            kind,
            "",
            &[nodeless_api::error::FieldError::required(
                "metadata.name",
                "name or generateName is required",
            )],
        )),
    }
}

/// Validates and admits a new object, returning the warnings for the client.
async fn admit(
    ctx: &Ctx<'_>,
    op: Operation,
    sub: Option<&str>,
    obj: &mut Value,
    old: Option<&Value>,
    dry_run: bool,
) -> Result<Vec<String>, ApiError> {
    let kind = ctx.kind();
    let name = objects::name(obj).unwrap_or_default().to_string();
    let errors = model::validate(kind, obj, old);
    if !errors.is_empty() {
        return Err(ApiError::invalid(kind, &name, &errors));
    }
    let request = AdmissionRequest {
        kind,
        operation: op,
        subresource: sub,
        old,
        dry_run,
        namespace: ctx.namespace().unwrap_or_default(),
        user: ctx.req.identity.as_ref(),
        storage: &ctx.state.storage,
    };
    ctx.state.admission.admit(&request, obj).await
}

fn created_response(ctx: &Ctx<'_>, code: u16, obj: Value, warnings: &[String]) -> Response<Body> {
    let mut resp = ctx.respond(code, obj);
    http_util::add_warnings(&mut resp, warnings);
    resp
}

/// POST on a collection.
pub async fn create(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let kind = ctx.kind();
    let dry_run = dry_run(ctx)?;
    let mut obj = ctx.req.decode_body()?;
    check_type(kind, &mut obj)?;
    let mut warnings = Vec::new();
    field_validation(ctx, &mut obj, &mut warnings)?;
    check_namespace(ctx, &mut obj)?;
    let manager = ctx.req.field_manager();
    let (obj, more) = create_object(ctx, obj, &manager, dry_run).await?;
    warnings.extend(more);
    Ok(created_response(ctx, 201, obj, &warnings))
}

/// The create path shared by POST and by an apply patch on an absent object.
async fn create_object(
    ctx: &Ctx<'_>,
    mut obj: Value,
    manager: &str,
    dry_run: bool,
) -> Result<(Value, Vec<String>), ApiError> {
    let kind = ctx.kind();
    let name = assign_generated_name(kind, &mut obj)?;
    if objects::resource_version(&obj).is_some() {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    prepare_new(kind, &mut obj);
    crate::certificates::set_requester(kind, &mut obj, ctx.req.identity.as_ref());
    let warnings = admit(ctx, Operation::Create, None, &mut obj, None, dry_run).await?;
    check_namespace_open(ctx, &name).await?;
    if !has_managed_fields(&obj) {
        model::track_update(kind, None, &mut obj, manager);
    }
    let claimed = ctx
        .state
        .service_ips
        .on_create(kind, &mut obj, dry_run)
        .await?;
    if dry_run {
        if ctx
            .state
            .storage
            .get(kind, objects::namespace(&obj), &name)
            .await?
            .is_some()
        {
            return Err(ApiError::already_exists(kind, &name));
        }
        return Ok((obj, warnings));
    }
    match ctx.state.storage.create(kind, &obj).await {
        Ok(stored) => Ok((stored, warnings)),
        Err(e) => {
            ctx.state.service_ips.undo(claimed).await;
            Err(e)
        }
    }
}

fn has_managed_fields(obj: &Value) -> bool {
    obj.get("metadata")
        .and_then(|m| m.get("managedFields"))
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
}

/// Copies what the server owns from the stored object into the new one.
fn keep_system_fields(kind: &ResourceKind, old: &Value, new: &mut Value, sub: Option<&str>) {
    let old_meta = old
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if kind.kind == "CertificateSigningRequest" && matches!(sub, Some("status" | "approval")) {
        crate::certificates::keep_for_subresource(old, new, sub == Some("approval"));
        return;
    }
    if kind.kind == "CertificateSigningRequest" {
        // The request itself is immutable, as upstream's strategy keeps it.
        if let Some(spec) = old.get("spec") {
            objects::set_at(new, &["spec"], spec.clone());
        }
    }
    if sub == Some("status") {
        // A status write changes the status only.
        let status = new.get("status").cloned();
        *new = old.clone();
        match status {
            Some(s) => objects::set_at(new, &["status"], s),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        return;
    }
    let meta = objects::meta_mut(new);
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "selfLink",
    ] {
        match old_meta.get(field) {
            Some(v) => meta.insert(field.into(), v.clone()),
            None => meta.remove(field),
        };
    }
    if sub == Some("finalize") {
        // Namespace finalize writes spec.finalizers only.
        let finalizers = new
            .get("spec")
            .and_then(|s| s.get("finalizers"))
            .cloned()
            .unwrap_or(json!([]));
        *new = old.clone();
        objects::set_at(new, &["spec", "finalizers"], finalizers);
        return;
    }
    if kind.status_subresource {
        match old.get("status") {
            Some(s) => objects::set_at(new, &["status"], s.clone()),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    if kind.tracks_generation && old.get("spec") != new.get("spec") {
        let generation = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        objects::meta_mut(new).insert("generation".into(), json!(generation));
    }
}

/// Whether two versions differ in anything but their resourceVersion and managedFields times.
fn changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        let meta = objects::meta_mut(&mut v);
        meta.remove("resourceVersion");
        if let Some(Value::Array(entries)) = meta.get_mut("managedFields") {
            for e in entries.iter_mut().filter_map(Value::as_object_mut) {
                e.remove("time");
            }
        }
        v
    };
    strip(old) != strip(new)
}

/// Admits `new` as the next version of `old` and writes it (guarded by old's revision).
/// Returns the stored object (or `old` when nothing changed) and the warnings.
async fn update_object(
    ctx: &Ctx<'_>,
    old: &Value,
    mut new: Value,
    sub: Option<&str>,
    manager: &str,
    dry_run: bool,
    track: bool,
) -> Result<(Value, Vec<String>), ApiError> {
    let kind = ctx.kind();
    let name = objects::name(old).unwrap_or_default().to_string();
    let old_rv = objects::resource_version(old)
        .and_then(|r| r.parse::<i64>().ok())
        .unwrap_or(0);
    if let Some(rv) = objects::resource_version(&new) {
        if rv != old_rv.to_string() {
            return Err(ApiError::modified(kind, &name));
        }
    }
    if objects::is_deleting(old) {
        let before = objects::finalizers(old);
        if objects::finalizers(&new)
            .iter()
            .any(|f| !before.contains(f))
            && sub.is_none()
        {
            return Err(ApiError::forbidden(
                kind,
                &name,
                "no new finalizers can be added if the object is being deleted",
            ));
        }
    }
    keep_system_fields(kind, old, &mut new, sub);
    model::apply_defaults(kind, &mut new);
    let warnings = admit(ctx, Operation::Update, sub, &mut new, Some(old), dry_run).await?;
    if track {
        model::track_update(kind, Some(old), &mut new, manager);
    }
    let claimed = ctx
        .state
        .service_ips
        .on_update(kind, old, &mut new, dry_run)
        .await?;
    objects::meta_mut(&mut new).insert("resourceVersion".into(), Value::String(old_rv.to_string()));
    if !changed(old, &new) || dry_run {
        ctx.state.service_ips.undo(claimed).await;
        let result = if changed(old, &new) { new } else { old.clone() };
        return Ok((result, warnings));
    }
    // The last finalizer of an object being deleted is gone: the object goes now.
    if objects::is_deleting(&new) && !kind.has_pending_finalizers(&new) {
        ctx.state.service_ips.undo(claimed).await;
        let deleted = ctx.state.storage.delete(kind, &new, Some(old_rv)).await?;
        log_deleted(kind, &deleted);
        ctx.state.service_ips.after_delete(kind, old).await;
        return Ok((new, warnings));
    }
    match ctx.state.storage.update(kind, &new, old_rv).await {
        Ok(stored) => {
            ctx.state.service_ips.after_update(kind, old, &stored).await;
            Ok((stored, warnings))
        }
        Err(e) => {
            ctx.state.service_ips.undo(claimed).await;
            Err(e)
        }
    }
}

/// PUT on an object (or its status or finalize subresource).
pub async fn update(
    ctx: &Ctx<'_>,
    name: &str,
    sub: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let kind = ctx.kind();
    let dry_run = dry_run(ctx)?;
    let mut new = ctx.req.decode_body()?;
    check_type(kind, &mut new)?;
    let mut warnings = Vec::new();
    field_validation(ctx, &mut new, &mut warnings)?;
    check_namespace(ctx, &mut new)?;
    match objects::name(&new) {
        Some(n) if n == name => {}
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )))
        }
        None => {
            objects::meta_mut(&mut new).insert("name".into(), Value::String(name.to_string()));
        }
    }
    let old = ctx
        .state
        .storage
        .get_existing(kind, ctx.namespace(), name)
        .await?;
    let manager = ctx.req.field_manager();
    let (obj, more) = update_object(ctx, &old, new, sub, &manager, dry_run, true).await?;
    warnings.extend(more);
    Ok(created_response(ctx, 200, obj, &warnings))
}

/// PATCH on an object (or its status subresource), of the four patch types.
pub async fn patch(
    ctx: &Ctx<'_>,
    name: &str,
    sub: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let kind = ctx.kind();
    let dry_run = dry_run(ctx)?;
    let content_type = ctx.req.content_type();
    let patch_type = model::PatchType::from_content_type(&content_type)?;
    let body = ctx.req.decode_body()?;
    let manager = ctx.req.field_manager();
    if patch_type == model::PatchType::Apply && ctx.req.query.get("fieldManager").is_none() {
        return Err(ApiError::bad_request(
            "PATCH, application/apply-patch+yaml requires the fieldManager parameter",
        ));
    }
    let force = ctx.req.query.flag("force")?;
    if force && patch_type != model::PatchType::Apply {
        return Err(ApiError::bad_request(
            "force is only allowed for apply patches",
        ));
    }
    let mut warnings = Vec::new();
    for _ in 0..MAX_RETRIES {
        let old = ctx.state.storage.get(kind, ctx.namespace(), name).await?;
        let Some(old) = old else {
            if patch_type != model::PatchType::Apply || sub.is_some() {
                return Err(ApiError::not_found(kind, name));
            }
            // Server-side apply creates what does not exist.
            let mut applied = body.clone();
            check_type(kind, &mut applied)?;
            field_validation(ctx, &mut applied, &mut warnings)?;
            check_namespace(ctx, &mut applied)?;
            if objects::name(&applied).is_some_and(|n| n != name) {
                return Err(ApiError::bad_request(format!(
                    "the name of the object does not match the name on the URL ({name})"
                )));
            }
            objects::meta_mut(&mut applied).insert("name".into(), Value::String(name.to_string()));
            let result = model::apply(kind, None, &applied, &manager, force)?;
            let (obj, more) = match create_object(ctx, result, &manager, dry_run).await {
                Err(e) if e.code == 409 && e.reason == "AlreadyExists" => continue,
                other => other?,
            };
            warnings.extend(more);
            return Ok(created_response(ctx, 201, obj, &warnings));
        };
        let mut patched = match patch_type {
            model::PatchType::Json => {
                nodeless_patch::json_patch(&old, &body).map_err(patch_error)?
            }
            model::PatchType::Merge => {
                nodeless_patch::merge_patch(&old, &body).map_err(patch_error)?
            }
            model::PatchType::Strategic => {
                model::strategic_merge(kind, &old, &body).map_err(patch_error)?
            }
            model::PatchType::Apply => {
                let mut applied = body.clone();
                check_type(kind, &mut applied)?;
                if objects::name(&applied).is_some_and(|n| n != name) {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object does not match the name on the URL ({name})"
                    )));
                }
                field_validation(ctx, &mut applied, &mut warnings)?;
                model::apply(kind, Some(&old), &applied, &manager, force)?
            }
        };
        check_type(kind, &mut patched)?;
        field_validation(ctx, &mut patched, &mut warnings)?;
        check_namespace(ctx, &mut patched)?;
        if objects::name(&patched) != Some(name) {
            return Err(ApiError::invalid(
                kind,
                name,
                &[nodeless_api::error::FieldError::invalid(
                    "metadata.name",
                    json!(objects::name(&patched)),
                    "field is immutable",
                )],
            ));
        }
        // A patch that does not name a resourceVersion applies to whatever is current.
        let patch_sets_rv = body
            .get("metadata")
            .and_then(|m| m.get("resourceVersion"))
            .is_some()
            || patch_type == model::PatchType::Json
                && body.to_string().contains("/metadata/resourceVersion");
        if !patch_sets_rv {
            objects::meta_mut(&mut patched).remove("resourceVersion");
        }
        let track = patch_type != model::PatchType::Apply;
        match update_object(ctx, &old, patched, sub, &manager, dry_run, track).await {
            Err(e) if e.code == 409 && e.reason == "Conflict" && !patch_sets_rv => continue,
            Err(e) => return Err(e),
            Ok((obj, more)) => {
                warnings.extend(more);
                return Ok(created_response(ctx, 200, obj, &warnings));
            }
        }
    }
    Err(ApiError::conflict(
        kind,
        name,
        "the object kept changing; giving up after several retries",
    ))
}

/// A patch that is malformed is a 400; one that cannot be applied to the object is a 422.
pub fn patch_error(e: nodeless_patch::PatchError) -> ApiError {
    match e {
        nodeless_patch::PatchError::Malformed(m) => ApiError::bad_request(m),
        nodeless_patch::PatchError::Unprocessable(m) => ApiError::unprocessable(m),
    }
}

/// `DeleteOptions` from the body and the query.
struct DeleteOptions {
    grace_period: Option<i64>,
    propagation: String,
    precondition_uid: Option<String>,
    precondition_rv: Option<String>,
    dry_run: bool,
}

fn delete_options(ctx: &Ctx<'_>) -> Result<DeleteOptions, ApiError> {
    let body: Map<String, Value> = if ctx.req.body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match ctx.req.decode_body()? {
            Value::Object(m) => m,
            _ => return Err(ApiError::bad_request("DeleteOptions must be an object")),
        }
    };
    let grace_period = match body.get("gracePeriodSeconds") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::Null) | None => ctx.req.query.int("gracePeriodSeconds")?,
        Some(_) => {
            return Err(ApiError::bad_request(
                "gracePeriodSeconds must be an integer",
            ))
        }
    };
    let orphan = body.get("orphanDependents").and_then(Value::as_bool).or(ctx
        .req
        .query
        .flag("orphanDependents")
        .ok()
        .filter(|b| *b));
    let propagation = body
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| ctx.req.query.get("propagationPolicy").map(str::to_string));
    let propagation = match (propagation.as_deref(), orphan) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("orphanDependents and propagationPolicy cannot both be set"));
        }
        (Some(p @ ("Orphan" | "Background" | "Foreground")), None) => p.to_string(),
        (Some(other), None) => {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
            )))
        }
        (None, Some(true)) => "Orphan".into(),
        (None, _) => "Background".into(),
    };
    let pre = body.get("preconditions");
    let dry_run = match body.get("dryRun").and_then(Value::as_array) {
        Some(a) if a.iter().any(|v| v == "All") => true,
        Some(a) if !a.is_empty() => {
            return Err(ApiError::bad_request(
                "Invalid dry run value: supported values: \"All\"",
            ))
        }
        _ => dry_run(ctx)?,
    };
    Ok(DeleteOptions {
        grace_period,
        propagation,
        precondition_uid: pre
            .and_then(|p| p.get("uid"))
            .and_then(Value::as_str)
            .map(str::to_string),
        precondition_rv: pre
            .and_then(|p| p.get("resourceVersion"))
            .and_then(Value::as_str)
            .map(str::to_string),
        dry_run,
    })
}

/// What a completed delete answers: the object for graceful kinds, a `Status` otherwise.
fn deleted_response(ctx: &Ctx<'_>, obj: Value) -> Response<Body> {
    let kind = ctx.kind();
    if kind.graceful_delete {
        return ctx.respond(200, obj);
    }
    let status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {
            "name": objects::name(&obj),
            "group": kind.group,
            "kind": kind.plural,
            "uid": objects::uid(&obj),
        },
    });
    http_util::value_response(200, &status, ctx.output)
}

/// Logs the removal of an object from the store.
fn log_deleted(kind: &ResourceKind, obj: &Value) {
    tracing::debug!(
        resource = kind.plural,
        namespace = objects::namespace(obj),
        name = objects::name(obj),
        "deleted"
    );
}

/// Deletes one object as DELETE asks: now, or by marking it (finalizers, graceful pods).
/// Returns the object and whether it is gone.
async fn delete_object(
    ctx: &Ctx<'_>,
    name: &str,
    opts: &DeleteOptions,
) -> Result<(Value, bool), ApiError> {
    let kind = ctx.kind();
    for _ in 0..MAX_RETRIES {
        let old = ctx
            .state
            .storage
            .get_existing(kind, ctx.namespace(), name)
            .await?;
        if let Some(uid) = &opts.precondition_uid {
            let actual = objects::uid(&old).unwrap_or_default();
            if actual != uid {
                return Err(ApiError::conflict(kind, name, format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}")));
            }
        }
        if let Some(rv) = &opts.precondition_rv {
            let actual = objects::resource_version(&old).unwrap_or_default();
            if actual != rv {
                return Err(ApiError::conflict(kind, name, format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}")));
            }
        }
        let old_rv = objects::resource_version(&old)
            .and_then(|r| r.parse::<i64>().ok())
            .unwrap_or(0);
        let mut new = old.clone();
        let mut finalizers = objects::finalizers(&old);
        let gc_finalizer = match opts.propagation.as_str() {
            "Orphan" => Some("orphan"),
            "Foreground" => Some("foregroundDeletion"),
            _ => None,
        };
        if let Some(f) = gc_finalizer {
            if !finalizers.iter().any(|x| x == f) {
                finalizers.push(f.to_string());
            }
        }
        let grace = graceful_period(kind, &old, opts.grace_period);
        let must_wait = !finalizers.is_empty() || grace > 0 || kind.has_pending_finalizers(&old);
        if !must_wait {
            if opts.dry_run {
                return Ok((old, true));
            }
            match ctx.state.storage.delete(kind, &old, Some(old_rv)).await {
                Err(e) if e.code == 409 => continue,
                Err(e) => return Err(e),
                Ok(deleted) => {
                    log_deleted(kind, &deleted);
                    ctx.state.service_ips.after_delete(kind, &deleted).await;
                    return Ok((deleted, true));
                }
            }
        }
        let meta = objects::meta_mut(&mut new);
        meta.insert("finalizers".into(), json!(finalizers));
        let already = meta.get("deletionTimestamp").is_some_and(|t| !t.is_null());
        let current_grace = meta
            .get("deletionGracePeriodSeconds")
            .and_then(Value::as_i64);
        if !already || current_grace.is_some_and(|g| grace < g) {
            let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(grace);
            meta.insert(
                "deletionTimestamp".into(),
                Value::String(objects::format_time(at)),
            );
            meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
        }
        if kind.spec_finalizers {
            // A namespace being emptied shows it.
            objects::set_at(&mut new, &["status", "phase"], json!("Terminating"));
        }
        let meta = objects::meta_mut(&mut new);
        if kind.tracks_generation && !already {
            let g = meta.get("generation").and_then(Value::as_i64).unwrap_or(0);
            meta.insert("generation".into(), json!(g + 1));
        }
        if !changed(&old, &new) || opts.dry_run {
            return Ok((new, false));
        }
        match ctx.state.storage.update(kind, &new, old_rv).await {
            Err(e) if e.code == 409 => continue,
            Err(e) => return Err(e),
            Ok(stored) => return Ok((stored, false)),
        }
    }
    Err(ApiError::conflict(
        kind,
        name,
        "the object kept changing; giving up after several retries",
    ))
}

/// The grace period of a deletion: pods bound to a node get theirs (their agent removes
/// them); everything else, and unbound or finished pods, go at once.
fn graceful_period(kind: &ResourceKind, obj: &Value, requested: Option<i64>) -> i64 {
    if !kind.graceful_delete {
        return 0;
    }
    let bound = obj
        .get("spec")
        .and_then(|s| s.get("nodeName"))
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let phase = obj
        .get("status")
        .and_then(|s| s.get("phase"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if !bound || matches!(phase, "Succeeded" | "Failed") {
        return 0;
    }
    let default = obj
        .get("spec")
        .and_then(|s| s.get("terminationGracePeriodSeconds"))
        .and_then(Value::as_i64)
        .unwrap_or(30);
    requested.unwrap_or(default).max(0)
}

/// DELETE on an object.
pub async fn delete(ctx: &Ctx<'_>, name: &str) -> Result<Response<Body>, ApiError> {
    let opts = delete_options(ctx)?;
    let (obj, gone) = delete_object(ctx, name, &opts).await?;
    if gone {
        Ok(deleted_response(ctx, obj))
    } else {
        Ok(ctx.respond(200, obj))
    }
}

/// DELETE on a collection: every selected object, as DELETE on each would.
pub async fn delete_collection(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let filter = Filter::from_query(ctx.kind(), &ctx.req.query)?;
    let opts = delete_options(ctx)?;
    let (items, revision) = super::read::select_all(ctx, &filter).await?;
    let mut deleted = Vec::new();
    for item in items {
        let Some(name) = objects::name(&item) else {
            continue;
        };
        let ns = objects::namespace(&item).map(str::to_string);
        let path = crate::route::ResourcePath {
            kind: ctx.kind(),
            namespace: ns,
            name: Some(name.to_string()),
            subresource: None,
            watch_path: false,
        };
        let item_ctx = Ctx {
            state: ctx.state,
            req: ctx.req,
            path: &path,
            output: ctx.output,
        };
        match delete_object(&item_ctx, name, &opts).await {
            Ok((obj, _)) => deleted.push(obj),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let list = super::output::list(
        ctx.kind(),
        deleted,
        json!({ "resourceVersion": revision.to_string() }),
        ctx.output,
        ctx.include_object(),
    );
    Ok(http_util::value_response(200, &list, ctx.output))
}
