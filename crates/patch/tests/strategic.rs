//! Strategic merge patch table tests, after the upstream strategicpatch test cases.

mod common;

use nodeless_patch::{strategic_merge_patch, PatchError, SchemaRef};
use serde_json::{json, Value};

fn smp(doc: Value, patch: Value) -> Result<Value, PatchError> {
    let defs = common::definitions();
    let schema = SchemaRef {
        definitions: &defs,
        root: common::DEPLOYMENT,
    };
    strategic_merge_patch(&doc, &patch, &schema)
}

fn pod_spec(spec: Value) -> Value {
    json!({"spec": {"template": {"spec": spec}}})
}

fn containers(doc: &Value) -> &Value {
    &doc["spec"]["template"]["spec"]["containers"]
}

#[test]
fn containers_merge_by_name_keeping_other_fields_and_order() {
    let doc = pod_spec(json!({"containers": [
        {"name": "nginx", "image": "nginx:1.0", "args": ["a"]},
        {"name": "sidecar", "image": "busybox"}
    ]}));
    let out = smp(
        doc,
        pod_spec(json!({"containers": [{"name": "nginx", "image": "nginx:1.1"}]})),
    )
    .unwrap();
    assert_eq!(
        containers(&out),
        &json!([
            {"name": "nginx", "image": "nginx:1.1", "args": ["a"]},
            {"name": "sidecar", "image": "busybox"}
        ])
    );
}

#[test]
fn new_list_items_go_first_without_set_element_order_and_where_it_says_with_it() {
    let doc = pod_spec(json!({"containers": [{"name": "a"}, {"name": "b"}]}));
    let out = smp(
        doc.clone(),
        pod_spec(json!({"containers": [{"name": "c"}]})),
    )
    .unwrap();
    assert_eq!(
        containers(&out),
        &json!([{"name": "c"}, {"name": "a"}, {"name": "b"}])
    );

    let patch = pod_spec(json!({
        "$setElementOrder/containers": [{"name": "a"}, {"name": "c"}, {"name": "b"}],
        "containers": [{"name": "c"}]
    }));
    let out = smp(doc, patch).unwrap();
    assert_eq!(
        containers(&out),
        &json!([{"name": "a"}, {"name": "c"}, {"name": "b"}])
    );
}

#[test]
fn kubectl_apply_style_patch() {
    let doc = json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"replicas": 1, "template": {"spec": {"containers": [
            {"name": "nginx", "image": "nginx:1.0", "ports": [{"containerPort": 80, "protocol": "TCP"}]},
            {"name": "log", "image": "fluent"}
        ]}}}
    });
    let patch = json!({
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"replicas": 3, "template": {"spec": {
            "$setElementOrder/containers": [{"name": "nginx"}, {"name": "log"}],
            "containers": [{"image": "nginx:1.2", "name": "nginx"}, {"$patch": "delete", "name": "gone"}]
        }}}
    });
    let out = smp(doc, patch).unwrap();
    assert_eq!(out["spec"]["replicas"], json!(3));
    assert_eq!(
        containers(&out),
        &json!([
            {"name": "nginx", "image": "nginx:1.2", "ports": [{"containerPort": 80, "protocol": "TCP"}]},
            {"name": "log", "image": "fluent"}
        ])
    );
    assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(
        out["metadata"]["annotations"],
        json!({"kubectl.kubernetes.io/last-applied-configuration": "{}"})
    );
}

#[test]
fn env_merge_by_name_and_delete_directive() {
    let doc = pod_spec(json!({"containers": [{"name": "app", "env": [
        {"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "value": "3"}
    ]}]}));
    let patch = pod_spec(json!({"containers": [{"name": "app", "env": [
        {"name": "B", "value": "20"}, {"name": "C", "$patch": "delete"}
    ]}]}));
    let out = smp(doc, patch).unwrap();
    assert_eq!(
        containers(&out)[0]["env"],
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "20"}])
    );
}

#[test]
fn ports_merge_by_container_port_comparing_numbers_numerically() {
    let doc = pod_spec(json!({"containers": [{"name": "app", "ports": [
        {"containerPort": 80, "name": "http"}, {"containerPort": 443}
    ]}]}));
    let patch = pod_spec(json!({"containers": [{"name": "app", "ports": [
        {"containerPort": 80.0, "name": "web"}
    ]}]}));
    let out = smp(doc, patch).unwrap();
    let ports = containers(&out)[0]["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 2);
    assert_eq!(ports[0]["containerPort"].as_f64(), Some(80.0));
    assert_eq!(ports[0]["name"], json!("web"));
    assert_eq!(ports[1], json!({"containerPort": 443}));
}

#[test]
fn volumes_merge_by_name_with_retain_keys() {
    let doc = pod_spec(json!({"volumes": [
        {"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "a"}}
    ]}));
    let patch = pod_spec(json!({"volumes": [
        {"$retainKeys": ["configMap", "name"], "name": "data", "configMap": {"name": "b"}}
    ]}));
    let out = smp(doc, patch).unwrap();
    assert_eq!(
        out["spec"]["template"]["spec"]["volumes"],
        json!([{"name": "data", "configMap": {"name": "b"}}, {"name": "cfg", "configMap": {"name": "a"}}])
    );
}

#[test]
fn retain_keys_on_deployment_strategy() {
    let doc = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}}}});
    let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
    assert_eq!(
        smp(doc.clone(), patch).unwrap(),
        json!({"spec": {"strategy": {"type": "Recreate"}}})
    );

    // Without the directive the map merges.
    let out = smp(
        doc.clone(),
        json!({"spec": {"strategy": {"type": "Recreate"}}}),
    )
    .unwrap();
    assert_eq!(
        out["spec"]["strategy"]["rollingUpdate"],
        json!({"maxSurge": "25%"})
    );

    // A key set by the patch but missing from $retainKeys is an error.
    let err = smp(
        doc.clone(),
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}}),
    )
    .unwrap_err();
    assert_eq!(
        err,
        PatchError::Malformed("invalid patch format of retainKeys".into())
    );
    let err = smp(doc, json!({"spec": {"strategy": {"$retainKeys": "type"}}})).unwrap_err();
    assert_eq!(
        err,
        PatchError::Malformed("invalid patch format of retainKeys".into())
    );
}

#[test]
fn primitive_lists_with_merge_strategy_are_unions() {
    let doc = json!({"metadata": {"finalizers": ["a", "b"]}});
    let out = smp(doc.clone(), json!({"metadata": {"finalizers": ["b", "c"]}})).unwrap();
    assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));

    let out = smp(
        doc.clone(),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
    )
    .unwrap();
    assert_eq!(out["metadata"]["finalizers"], json!(["b"]));

    let out = smp(
        doc.clone(),
        json!({"metadata": {"$setElementOrder/finalizers": ["c", "a"], "finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["b"]}}),
    )
    .unwrap();
    assert_eq!(out["metadata"]["finalizers"], json!(["c", "a"]));

    // Deleting from a list the original lacks does nothing.
    let out = smp(
        json!({"metadata": {}}),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
    )
    .unwrap();
    assert_eq!(out, json!({"metadata": {}}));

    let err = smp(
        doc,
        json!({"metadata": {"$deleteFromPrimitiveList": ["a"]}}),
    )
    .unwrap_err();
    assert_eq!(
        err,
        PatchError::Malformed("invalid patch format of primitive list".into())
    );
}

#[test]
fn lists_without_merge_strategy_are_replaced() {
    let doc =
        pod_spec(json!({"containers": [{"name": "app", "args": ["a", "b"], "command": ["x"]}]}));
    let patch = pod_spec(json!({"containers": [{"name": "app", "args": ["c"]}]}));
    let out = smp(doc, patch).unwrap();
    assert_eq!(
        containers(&out),
        &json!([{"name": "app", "args": ["c"], "command": ["x"]}])
    );
}

#[test]
fn maps_merge_recursively_and_null_deletes() {
    let doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"replicas": 2}});
    let patch = json!({"metadata": {"labels": {"a": null, "c": "3"}}, "spec": {"replicas": null, "paused": null}});
    assert_eq!(
        smp(doc, patch).unwrap(),
        json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": {}})
    );
    // Nulls inside new subtrees are dropped too.
    let out = smp(
        json!({}),
        json!({"metadata": {"labels": {"a": "1", "b": null}}}),
    )
    .unwrap();
    assert_eq!(out, json!({"metadata": {"labels": {"a": "1"}}}));
}

#[test]
fn map_directives() {
    let doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
    let out = smp(
        doc.clone(),
        json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}}),
    )
    .unwrap();
    assert_eq!(out, json!({"metadata": {"labels": {"c": "3"}}}));
    let out = smp(
        doc.clone(),
        json!({"metadata": {"labels": {"$patch": "delete"}}}),
    )
    .unwrap();
    assert_eq!(out, json!({"metadata": {"labels": {}}}));
    let out = smp(doc.clone(), json!({"$patch": "replace", "kind": "X"})).unwrap();
    assert_eq!(out, json!({"kind": "X"}));

    let err = smp(
        doc.clone(),
        json!({"metadata": {"labels": {"$patch": "merge", "c": "3"}}}),
    )
    .unwrap_err();
    assert_eq!(
        err.message(),
        "unknown patch type: merge in map: map[$patch:merge c:3]"
    );
    let err = smp(doc, json!({"metadata": {"$patch": "frobnicate"}})).unwrap_err();
    assert_eq!(
        err.message(),
        "unknown patch type: frobnicate in map: map[$patch:frobnicate]"
    );
}

#[test]
fn list_directives() {
    let doc = pod_spec(json!({"containers": [{"name": "a", "image": "x"}, {"name": "b"}]}));
    let out = smp(
        doc.clone(),
        pod_spec(json!({"containers": [{"name": "c"}, {"$patch": "replace"}]})),
    )
    .unwrap();
    assert_eq!(containers(&out), &json!([{"name": "c"}]));

    let out = smp(
        doc.clone(),
        pod_spec(json!({"containers": [{"name": "a", "$patch": "delete"}]})),
    )
    .unwrap();
    assert_eq!(containers(&out), &json!([{"name": "b"}]));

    let err = smp(
        doc.clone(),
        pod_spec(json!({"containers": [{"name": "a", "$patch": "merge"}]})),
    )
    .unwrap_err();
    assert_eq!(
        err.message(),
        "merging lists cannot yet be specified in the patch"
    );

    let err = smp(
        doc.clone(),
        pod_spec(json!({"containers": [{"$patch": "delete"}]})),
    )
    .unwrap_err();
    assert_eq!(
        err.message(),
        "map: map[$patch:delete] does not contain declared merge key: name"
    );

    let err = smp(
        doc.clone(),
        pod_spec(json!({"containers": [{"image": "x"}]})),
    )
    .unwrap_err();
    assert_eq!(
        err.message(),
        "map: map[image:x] does not contain declared merge key: name"
    );

    let err = smp(
        doc,
        pod_spec(json!({"containers": [{"name": "a", "$patch": "bogus"}]})),
    )
    .unwrap_err();
    assert_eq!(
        err.message(),
        "unknown patch type: bogus in map: map[$patch:bogus name:a]"
    );
}

#[test]
fn set_element_order_validation() {
    let doc = pod_spec(json!({"containers": [{"name": "a"}, {"name": "b"}]}));
    let patch = pod_spec(json!({
        "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
        "containers": [{"name": "b"}, {"name": "a"}]
    }));
    let err = smp(doc.clone(), patch).unwrap_err();
    assert!(
        err.message().starts_with("the order in patch list:"),
        "{err}"
    );

    // Reordering only.
    let patch = pod_spec(json!({"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}));
    let out = smp(doc.clone(), patch).unwrap();
    assert_eq!(containers(&out), &json!([{"name": "b"}, {"name": "a"}]));

    let patch = pod_spec(json!({"$setElementOrder/containers": {"name": "b"}}));
    assert!(smp(doc, patch).is_err());
}

#[test]
fn values_of_a_different_kind_replace() {
    let doc = json!({"spec": {"template": {"spec": {"containers": "oops"}}}});
    let out = smp(
        doc,
        pod_spec(json!({"containers": [{"name": "a", "$patch": "delete"}, {"name": "b"}]})),
    )
    .unwrap();
    assert_eq!(containers(&out), &json!([{"name": "b"}]));
}

#[test]
fn directives_in_new_values_are_removed() {
    // A new map carrying $patch is dropped, as upstream's removeDirectives does.
    let out = smp(
        json!({"metadata": {}}),
        json!({"metadata": {"labels": {"$patch": "replace", "a": "1"}}}),
    )
    .unwrap();
    assert_eq!(out, json!({"metadata": {}}));
    // New lists lose their $patch items, whatever the strategy.
    let out = smp(
        pod_spec(json!({})),
        pod_spec(json!({"containers": [{"name": "a", "$patch": "bogus"}, {"name": "b", "env": [{"name": "X", "$patch": "delete"}]}]})),
    )
    .unwrap();
    assert_eq!(containers(&out), &json!([{"name": "b", "env": []}]));
    // Other directives in new subtrees are processed rather than stored.
    let out = smp(
        json!({}),
        pod_spec(
            json!({"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}], "containers": [{"name": "a"}, {"name": "b"}]}),
        ),
    );
    assert!(
        out.is_err(),
        "the order of the patch list contradicts $setElementOrder"
    );
    let out = smp(
        json!({}),
        pod_spec(json!({"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}], "containers": [{"name": "a"}, {"name": "b"}]})),
    )
    .unwrap();
    assert_eq!(
        out,
        pod_spec(json!({"containers": [{"name": "a"}, {"name": "b"}]}))
    );
}

#[test]
fn lists_of_lists_are_rejected() {
    let doc = json!({"metadata": {"finalizers": [["a"]]}});
    let err = smp(doc, json!({"metadata": {"finalizers": [["b"]]}})).unwrap_err();
    assert_eq!(
        err,
        PatchError::Unprocessable("lists of lists are not supported".into())
    );
}

#[test]
fn unknown_schema_falls_back_to_merge_patch() {
    let defs = common::definitions();
    for root in ["io.k8s.apiextensions.FreeForm", "no.such.Definition"] {
        let schema = SchemaRef {
            definitions: &defs,
            root,
        };
        let doc = json!({"spec": {"items": [{"name": "a"}], "keep": 1}});
        let patch = json!({"spec": {"items": [{"name": "b"}], "drop": null}});
        let out = strategic_merge_patch(&doc, &patch, &schema).unwrap();
        assert_eq!(out, json!({"spec": {"items": [{"name": "b"}], "keep": 1}}));
    }
}

#[test]
fn patch_must_be_an_object() {
    let err = smp(json!({}), json!([1])).unwrap_err();
    assert!(matches!(err, PatchError::Malformed(_)));
    assert_eq!(smp(json!({"a": 1}), Value::Null).unwrap(), json!({"a": 1}));
}

#[test]
fn nested_lists_merge_inside_matched_items() {
    let doc = pod_spec(json!({"containers": [{"name": "app", "volumeMounts": [
        {"mountPath": "/a", "name": "x"}
    ]}]}));
    let patch = pod_spec(json!({"containers": [{"name": "app", "volumeMounts": [
        {"mountPath": "/b", "name": "y"}
    ]}], "initContainers": [{"name": "init", "env": [{"name": "E", "$patch": "delete"}, {"name": "F", "value": "1"}]}]}));
    let out = smp(doc, patch).unwrap();
    assert_eq!(
        containers(&out)[0]["volumeMounts"],
        json!([{"mountPath": "/b", "name": "y"}, {"mountPath": "/a", "name": "x"}])
    );
    assert_eq!(
        out["spec"]["template"]["spec"]["initContainers"],
        json!([{"name": "init", "env": [{"name": "F", "value": "1"}]}])
    );
}
