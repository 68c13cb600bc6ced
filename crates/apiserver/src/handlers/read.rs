//! get and list.

use base64::Engine;
use hyper::Response;
use nodeless_store::Revision;
use serde_json::{json, Value};

use super::filter::Filter;
use super::{output, Ctx};
use crate::http_util::Body;
use crate::storage::Storage;
use crate::ApiError;

pub async fn get(ctx: &Ctx<'_>, name: &str) -> Result<Response<Body>, ApiError> {
    let obj = ctx
        .state
        .storage
        .get_existing(ctx.kind(), ctx.namespace(), name)
        .await?;
    Ok(ctx.respond(200, obj))
}

/// Where a chunked list goes on: the revision of its first page and the next key.
struct ContinueToken {
    revision: Revision,
    start: String,
}

const EXPIRED_CONTINUE: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.";

impl ContinueToken {
    fn encode(&self) -> String {
        let json = json!({ "v": "meta.k8s.io/v1", "rv": self.revision, "start": self.start });
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string())
    }

    fn decode(token: &str) -> Result<Self, ApiError> {
        let bad = || ApiError::bad_request("continue key is not valid: the token is malformed");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.trim_end_matches('='))
            .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
            .map_err(|_| bad())?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        let revision = v
            .get("rv")
            .and_then(Value::as_i64)
            .filter(|r| *r > 0)
            .ok_or_else(bad)?;
        let start = v
            .get("start")
            .and_then(Value::as_str)
            .ok_or_else(bad)?
            .to_string();
        if start.contains("..") || start.starts_with('/') {
            return Err(bad());
        }
        Ok(Self { revision, start })
    }
}

/// The revision a list (or the initial state of a watch) reads at, from `resourceVersion`
/// and `resourceVersionMatch`, as upstream: unset or "0" is the latest; `Exact` reads that
/// revision; `NotOlderThan` (the default for a number) reads the latest, which must not be
/// older than the number.
pub async fn read_revision(ctx: &Ctx<'_>, paged: bool) -> Result<Option<Revision>, ApiError> {
    let rv = ctx.req.query.get("resourceVersion");
    let matching = ctx.req.query.get("resourceVersionMatch");
    let parsed = match rv {
        None => None,
        Some(s) => Some(
            s.parse::<Revision>()
                .ok()
                .filter(|r| *r >= 0)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "invalid resource version {s:?}: must be a non-negative integer"
                    ))
                })?,
        ),
    };
    let not_older_than = |r: Revision| async move {
        let current = ctx.state.storage.current_revision().await?;
        if r > current {
            return Err(ApiError::timeout(format!(
                "Too large resource version: {r}, current: {current}"
            )));
        }
        Ok(None)
    };
    match matching {
        None => match parsed {
            None | Some(0) => Ok(None),
            // A paged list at a given version reads exactly that version, as upstream.
            Some(r) if paged => Ok(Some(r)),
            Some(r) => not_older_than(r).await,
        },
        Some("NotOlderThan") => match parsed {
            None => Err(ApiError::bad_request("resourceVersionMatch is forbidden unless resourceVersion is provided")),
            Some(0) => Ok(None),
            Some(r) => not_older_than(r).await,
        },
        Some("Exact") => match parsed {
            Some(r) if r > 0 => Ok(Some(r)),
            _ => Err(ApiError::bad_request("resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\" or unset")),
        },
        Some(other) => Err(ApiError::bad_request(format!(
            "resourceVersionMatch: Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\""
        ))),
    }
}

/// Every object matching the request's selectors, at one revision (used by deletecollection).
pub async fn select_all(
    ctx: &Ctx<'_>,
    filter: &Filter,
) -> Result<(Vec<Value>, Revision), ApiError> {
    let page = ctx
        .state
        .storage
        .list_page(ctx.kind(), ctx.namespace(), None, None, None)
        .await?;
    Ok((
        page.items
            .into_iter()
            .filter(|o| filter.matches(o))
            .collect(),
        page.revision,
    ))
}

pub async fn list(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let filter = Filter::from_query(ctx.kind(), &ctx.req.query)?;
    let limit = match ctx.req.query.int("limit")? {
        Some(l) if l > 0 => Some(l as usize),
        _ => None,
    };
    let token = ctx
        .req
        .query
        .get("continue")
        .map(ContinueToken::decode)
        .transpose()?;
    let prefix = ctx.kind().namespace_prefix(ctx.namespace());
    let (mut revision, mut start_key) = match &token {
        Some(t) => {
            if ctx
                .req
                .query
                .get("resourceVersion")
                .is_some_and(|rv| rv != "0")
            {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            (Some(t.revision), Some(format!("{prefix}{}", t.start)))
        }
        None => (read_revision(ctx, limit.is_some()).await?, None),
    };

    // Each object is decoded, filtered and converted on its own (see `output::ListItems`).
    let mut items = output::ListItems::new(ctx.kind(), ctx.output, ctx.include_object());
    let mut next: Option<String> = None;
    let mut remaining: Option<u64> = None;
    let read_rev;
    loop {
        // Read a bit more than needed when filtering, and stop exactly at the last item used.
        let want =
            limit.map(|l| (l - items.len()).max(if filter.is_everything() { 0 } else { 64 }));
        let page = match ctx
            .state
            .storage
            .list_page_stored(
                ctx.kind(),
                ctx.namespace(),
                start_key.as_deref(),
                want,
                revision,
            )
            .await
        {
            Err(e) if e.code == 410 && token.is_some() => {
                return Err(ApiError::gone(EXPIRED_CONTINUE))
            }
            other => other?,
        };
        revision = Some(page.revision);
        let total = page.items.len();
        let mut consumed = 0;
        let mut last_key = None;
        for stored in page.items {
            consumed += 1;
            let item = Storage::decode(ctx.kind(), &stored)?;
            if filter.matches(&item) {
                items.push(item)?;
            }
            last_key = Some(stored.key);
            if limit.is_some_and(|l| items.len() >= l) {
                break;
            }
        }
        let more_in_page = consumed < total;
        if limit.is_some_and(|l| items.len() >= l) {
            if more_in_page || page.next_key.is_some() {
                next = last_key.map(|k| format!("{k}\u{0}"));
                if filter.is_everything() {
                    remaining = Some(page.remaining + (total - consumed) as u64);
                }
            }
            read_rev = page.revision;
            break;
        }
        match page.next_key {
            Some(k) => start_key = Some(k),
            None => {
                read_rev = page.revision;
                break;
            }
        }
    }

    let mut meta = json!({ "resourceVersion": read_rev.to_string() });
    if let Some(next) = next {
        let start = next.strip_prefix(&prefix).unwrap_or(&next).to_string();
        meta["continue"] = Value::String(
            ContinueToken {
                revision: read_rev,
                start,
            }
            .encode(),
        );
        if let Some(r) = remaining.filter(|r| *r > 0) {
            meta["remainingItemCount"] = json!(r);
        }
    }
    Ok(items.into_response(meta))
}
