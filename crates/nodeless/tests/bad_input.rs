//! End-to-end: malformed and hostile requests get the right `Status` (code, reason, causes),
//! never a crash or a hang; the server keeps answering afterwards.

mod common;

use common::Cluster;
use http::{Method, Request};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

/// Sends a raw request; returns the status code and the body parsed as JSON (or a string).
async fn send(
    client: &Client,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    accept: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = client
        .send(req.body(Body::from(body)).unwrap())
        .await
        .expect("a response");
    let status = resp.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

fn assert_status(got: &(u16, Value), code: u16, reason: &str) {
    assert_eq!(got.0, code, "{}", got.1);
    assert_eq!(got.1["kind"], "Status", "{}", got.1);
    assert_eq!(got.1["code"], code, "{}", got.1);
    assert_eq!(got.1["reason"], reason, "{}", got.1);
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_and_parameters() {
    let c = Cluster::start();
    let client = c.kube_client().await;
    let json_ct = Some("application/json");

    let r = send(
        &client,
        Method::POST,
        CMS,
        json_ct,
        None,
        b"{not json".to_vec(),
    )
    .await;
    assert_status(&r, 400, "BadRequest");
    let r = send(
        &client,
        Method::POST,
        CMS,
        Some("application/yaml"),
        None,
        b"a: [unclosed".to_vec(),
    )
    .await;
    assert_status(&r, 400, "BadRequest");
    let r = send(
        &client,
        Method::POST,
        CMS,
        Some("text/plain"),
        None,
        b"hello".to_vec(),
    )
    .await;
    assert_status(&r, 415, "UnsupportedMediaType");
    let r = send(
        &client,
        Method::POST,
        CMS,
        Some("application/vnd.kubernetes.protobuf"),
        None,
        b"k8s\0\x0a\xff\xff".to_vec(),
    )
    .await;
    assert_status(&r, 400, "BadRequest");

    // A YAML body works as JSON does.
    let r = send(
        &client,
        Method::POST,
        CMS,
        Some("application/yaml"),
        None,
        b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  a: b\n".to_vec(),
    )
    .await;
    assert_eq!(r.0, 201, "{}", r.1);

    // apiVersion or kind that do not match the URL.
    let body = json!({"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
    let r = send(
        &client,
        Method::POST,
        CMS,
        json_ct,
        None,
        body.to_string().into_bytes(),
    )
    .await;
    assert_status(&r, 400, "BadRequest");
    let body = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}});
    let r = send(
        &client,
        Method::POST,
        CMS,
        json_ct,
        None,
        body.to_string().into_bytes(),
    )
    .await;
    assert_status(&r, 400, "BadRequest");
    let r = send(
        &client,
        Method::POST,
        CMS,
        json_ct,
        None,
        b"[1,2,3]".to_vec(),
    )
    .await;
    assert_status(&r, 400, "BadRequest");

    // Invalid names carry a field cause.
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Not_Valid"}});
    let r = send(
        &client,
        Method::POST,
        CMS,
        json_ct,
        None,
        body.to_string().into_bytes(),
    )
    .await;
    assert_status(&r, 422, "Invalid");
    assert_eq!(
        r.1["details"]["causes"][0]["field"], "metadata.name",
        "{}",
        r.1
    );
    assert_eq!(
        r.1["details"]["causes"][0]["reason"], "FieldValueInvalid",
        "{}",
        r.1
    );

    // Over 3 MiB.
    let big = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"a": "x".repeat(3 * 1024 * 1024 + 10)}});
    let r = send(
        &client,
        Method::POST,
        CMS,
        json_ct,
        None,
        big.to_string().into_bytes(),
    )
    .await;
    assert_status(&r, 413, "RequestEntityTooLarge");

    // Unknown resources and paths.
    let r = send(
        &client,
        Method::GET,
        "/api/v1/namespaces/default/widgets",
        None,
        None,
        vec![],
    )
    .await;
    assert_status(&r, 404, "NotFound");
    let r = send(
        &client,
        Method::GET,
        "/apis/nope.example.com/v1/things",
        None,
        None,
        vec![],
    )
    .await;
    assert_status(&r, 404, "NotFound");
    let r = send(
        &client,
        Method::GET,
        &format!("{CMS}/absent"),
        None,
        None,
        vec![],
    )
    .await;
    assert_status(&r, 404, "NotFound");
    let r = send(
        &client,
        Method::DELETE,
        &format!("{CMS}/absent"),
        None,
        None,
        vec![],
    )
    .await;
    assert_status(&r, 404, "NotFound");

    // Nothing it can produce.
    let r = send(
        &client,
        Method::GET,
        CMS,
        None,
        Some("application/xml"),
        vec![],
    )
    .await;
    assert_status(&r, 406, "NotAcceptable");

    // Garbage in query parameters.
    for query in [
        "limit=99999999999999999999999",
        "limit=ten",
        "watch=maybe",
        "resourceVersion=abc",
        "labelSelector=a%20in%20(b",
        "labelSelector=%3D%3D%3D",
        "fieldSelector=spec.nope%3Dx",
        "resourceVersionMatch=Sometimes&resourceVersion=1",
        "continue=%%%",
        "timeoutSeconds=x&watch=true",
        "dryRun=Partly",
        "fieldValidation=Loose",
    ] {
        let method = if query.starts_with("dryRun") || query.starts_with("fieldValidation") {
            Method::POST
        } else {
            Method::GET
        };
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "q"}})
            .to_string()
            .into_bytes();
        let r = send(
            &client,
            method,
            &format!("{CMS}?{query}"),
            json_ct,
            None,
            body,
        )
        .await;
        assert_eq!(r.0, 400, "{query}: {}", r.1);
        assert_eq!(r.1["reason"], "BadRequest", "{query}: {}", r.1);
    }

    // Patches: wrong media type, malformed, inapplicable.
    let name_path = format!("{CMS}/from-yaml");
    let r = send(
        &client,
        Method::PATCH,
        &name_path,
        Some("application/json"),
        None,
        b"{}".to_vec(),
    )
    .await;
    assert_status(&r, 415, "UnsupportedMediaType");
    let r = send(
        &client,
        Method::PATCH,
        &name_path,
        Some("application/json-patch+json"),
        None,
        b"{\"op\":1}".to_vec(),
    )
    .await;
    assert_eq!(r.0, 400, "{}", r.1);
    let r = send(
        &client,
        Method::PATCH,
        &name_path,
        Some("application/json-patch+json"),
        None,
        br#"[{"op":"remove","path":"/data/missing"}]"#.to_vec(),
    )
    .await;
    assert_eq!(r.0, 422, "{}", r.1);
    let r = send(
        &client,
        Method::PATCH,
        &name_path,
        Some("application/apply-patch+yaml"),
        None,
        b"data: {a: c}".to_vec(),
    )
    .await;
    assert_eq!(r.0, 400, "apply without fieldManager: {}", r.1);

    // A stale resourceVersion is 409; a name that does not match the URL is 400.
    let r = send(&client, Method::PUT, &name_path, json_ct, None, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "from-yaml", "resourceVersion": "1"}}).to_string().into_bytes()).await;
    assert_status(&r, 409, "Conflict");
    let r = send(
        &client,
        Method::PUT,
        &name_path,
        json_ct,
        None,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other"}})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_status(&r, 400, "BadRequest");

    // Verbs a path does not offer.
    let r = send(&client, Method::PUT, CMS, json_ct, None, b"{}".to_vec()).await;
    assert_status(&r, 405, "MethodNotAllowed");

    // And the server still answers.
    let r = send(&client, Method::GET, &name_path, None, None, vec![]).await;
    assert_eq!(r.0, 200);
    assert_eq!(r.1["data"]["a"], "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_validation_modes_and_dry_run() {
    let c = Cluster::start();
    let client = c.kube_client().await;
    let typo = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "typo"}, "data": {"a": "b"}, "dataa": {"c": "d"}});
    let r = send(
        &client,
        Method::POST,
        &format!("{CMS}?fieldValidation=Strict"),
        Some("application/json"),
        None,
        typo.to_string().into_bytes(),
    )
    .await;
    assert_status(&r, 400, "BadRequest");
    assert!(
        r.1["message"]
            .as_str()
            .unwrap()
            .contains("unknown field \"dataa\""),
        "{}",
        r.1
    );

    // Warn: created, with a Warning header.
    let req = Request::post(format!("{CMS}?fieldValidation=Warn&dryRun=All"))
        .header("content-type", "application/json")
        .body(Body::from(typo.to_string().into_bytes()))
        .unwrap();
    let resp = client.send(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let warning = resp
        .headers()
        .get("warning")
        .and_then(|w| w.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        warning.contains("unknown field") && warning.contains("dataa"),
        "{warning:?}"
    );
    // dryRun=All stored nothing.
    let r = send(
        &client,
        Method::GET,
        &format!("{CMS}/typo"),
        None,
        None,
        vec![],
    )
    .await;
    assert_status(&r, 404, "NotFound");
    let r = send(
        &client,
        Method::POST,
        &format!("{CMS}?fieldValidation=Ignore"),
        Some("application/json"),
        None,
        typo.to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.0, 201, "{}", r.1);
    assert!(
        r.1.get("dataa").is_none(),
        "unknown fields are dropped: {}",
        r.1
    );
}
