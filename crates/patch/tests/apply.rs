//! Server-side apply and managed fields tests.

mod common;

use nodeless_patch::{apply, update_managed_fields, ApplyError, ApplyResult, SchemaRef};
use serde_json::{json, Value};

const T1: &str = "2026-01-01T00:00:00Z";
const T2: &str = "2026-01-01T00:01:00Z";
const IGNORED: &[&str] = &["status"];

fn run_apply(
    live: Option<&Value>,
    config: Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<ApplyResult, ApplyError> {
    let defs = common::definitions();
    let schema = SchemaRef {
        definitions: &defs,
        root: common::DEPLOYMENT,
    };
    apply(
        live, &config, manager, force, &schema, "apps/v1", now, IGNORED,
    )
}

fn run_update(old: Option<&Value>, new: &Value, manager: &str, now: &str) -> Value {
    let defs = common::definitions();
    let schema = SchemaRef {
        definitions: &defs,
        root: common::DEPLOYMENT,
    };
    let managed = update_managed_fields(old, new, manager, &schema, "apps/v1", now, IGNORED);
    let mut object = new.clone();
    object["metadata"]["managedFields"] = managed;
    object
}

fn deployment(replicas: Option<i64>, image: &str) -> Value {
    let mut d = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": image}]}
            }
        }
    });
    if let Some(r) = replicas {
        d["spec"]["replicas"] = json!(r);
    }
    d
}

fn entry<'a>(object: &'a Value, manager: &str, operation: &str) -> Option<&'a Value> {
    object["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
}

#[test]
fn create_by_apply_records_upstream_fields_v1() {
    let out = run_apply(None, deployment(Some(3), "nginx:1.0"), "kubectl", false, T1).unwrap();
    assert_eq!(out.object["spec"]["replicas"], json!(3));
    assert_eq!(
        out.managed_fields,
        json!([{
            "manager": "kubectl",
            "operation": "Apply",
            "apiVersion": "apps/v1",
            "time": T1,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:name": {}}}}
                    }
                }
            }
        }])
    );
    assert_eq!(out.object["metadata"]["managedFields"], out.managed_fields);
}

#[test]
fn fields_dropped_from_the_config_are_pruned() {
    let mut config = deployment(Some(3), "nginx:1.0");
    config["metadata"]["labels"]["tier"] = json!("front");
    let first = run_apply(None, config, "kubectl", false, T1)
        .unwrap()
        .object;
    let second = run_apply(
        Some(&first),
        deployment(None, "nginx:1.1"),
        "kubectl",
        false,
        T2,
    )
    .unwrap();
    assert!(
        second.object["spec"].get("replicas").is_none(),
        "{}",
        second.object
    );
    assert_eq!(second.object["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(second.object["metadata"]["name"], json!("web"));
    assert_eq!(
        second.object["spec"]["template"]["spec"]["containers"],
        json!([{"name": "nginx", "image": "nginx:1.1"}])
    );
    assert_eq!(
        entry(&second.object, "kubectl", "Apply").unwrap()["time"],
        json!(T2)
    );
}

#[test]
fn unowned_fields_set_by_others_survive_and_conflicts_are_reported() {
    let applied = run_apply(None, deployment(Some(3), "nginx:1.0"), "kubectl", false, T1)
        .unwrap()
        .object;

    // An updater (e.g. an autoscaler) changes replicas and so takes it over.
    let mut scaled = applied.clone();
    scaled["spec"]["replicas"] = json!(5);
    let scaled = run_update(Some(&applied), &scaled, "hpa", T2);
    let hpa = entry(&scaled, "hpa", "Update").unwrap();
    assert_eq!(hpa["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
    assert_eq!(hpa["apiVersion"], json!("apps/v1"));
    let kubectl = entry(&scaled, "kubectl", "Apply").unwrap();
    assert!(kubectl["fieldsV1"]["f:spec"].get("f:replicas").is_none());

    // Re-applying without replicas keeps the autoscaler's value.
    let kept = run_apply(
        Some(&scaled),
        deployment(None, "nginx:1.0"),
        "kubectl",
        false,
        T2,
    )
    .unwrap();
    assert_eq!(kept.object["spec"]["replicas"], json!(5));

    // Applying another value conflicts.
    let err = run_apply(
        Some(&scaled),
        deployment(Some(3), "nginx:1.0"),
        "kubectl",
        false,
        T2,
    )
    .unwrap_err();
    let ApplyError::Conflicts(conflicts) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(conflicts.0.len(), 1);
    assert_eq!(conflicts.0[0].manager, "hpa");
    assert_eq!(conflicts.0[0].field, ".spec.replicas");
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"hpa\" using apps/v1: .spec.replicas"
    );

    // Forcing moves the field to the applier; the updater's emptied entry goes away.
    let forced = run_apply(
        Some(&scaled),
        deployment(Some(3), "nginx:1.0"),
        "kubectl",
        true,
        T2,
    )
    .unwrap();
    assert_eq!(forced.object["spec"]["replicas"], json!(3));
    assert!(entry(&forced.object, "hpa", "Update").is_none());
    assert!(
        entry(&forced.object, "kubectl", "Apply").unwrap()["fieldsV1"]["f:spec"]
            .get("f:replicas")
            .is_some()
    );
}

#[test]
fn appliers_share_fields_with_equal_values() {
    let a = run_apply(None, deployment(Some(3), "nginx:1.0"), "alice", false, T1)
        .unwrap()
        .object;
    let b = run_apply(Some(&a), deployment(Some(3), "nginx:1.0"), "bob", false, T2)
        .unwrap()
        .object;
    assert!(entry(&b, "alice", "Apply").is_some());
    assert!(entry(&b, "bob", "Apply").is_some());
    // Alice stops applying replicas; Bob still owns it, so it stays.
    let c = run_apply(Some(&b), deployment(None, "nginx:1.0"), "alice", false, T2)
        .unwrap()
        .object;
    assert_eq!(c["spec"]["replicas"], json!(3));

    // Bob changing the image conflicts with Alice, as an applier (no "using").
    let err = run_apply(Some(&c), deployment(Some(3), "nginx:2"), "bob", false, T2).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"alice\": .spec.template.spec.containers[name=\"nginx\"].image"
    );
}

#[test]
fn several_conflicts_are_grouped_by_manager() {
    let a = run_apply(None, deployment(Some(3), "nginx:1.0"), "alice", false, T1)
        .unwrap()
        .object;
    let err = run_apply(Some(&a), deployment(Some(4), "nginx:2"), "bob", false, T2).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 2 conflicts: conflicts with \"alice\":\n- .spec.replicas\n- .spec.template.spec.containers[name=\"nginx\"].image"
    );
}

#[test]
fn map_lists_merge_by_key_in_upstream_order() {
    let mut live = deployment(None, "x");
    live["spec"]["template"]["spec"]["containers"] =
        json!([{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]);
    let live = run_update(None, &live, "creator", T1);
    let mut config = deployment(None, "x");
    config["spec"]["template"]["spec"]["containers"] =
        json!([{"name": "b", "image": "b"}, {"name": "c", "image": "c"}]);
    let out = run_apply(Some(&live), config, "kubectl", false, T2)
        .unwrap()
        .object;
    let names: Vec<&str> = out["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
}

#[test]
fn update_managed_fields_on_create_mark_new_maps_and_items() {
    let created = run_update(None, &deployment(Some(1), "nginx"), "kubectl-create", T1);
    assert_eq!(
        created["metadata"]["managedFields"],
        json!([{
            "manager": "kubectl-create",
            "operation": "Update",
            "apiVersion": "apps/v1",
            "time": T1,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:name": {}}}}
                    }
                }
            }
        }])
    );
    // A write that changes nothing keeps the entry and its time.
    let same = run_update(Some(&created), &created, "kubectl-create", T2);
    assert_eq!(
        same["metadata"]["managedFields"],
        created["metadata"]["managedFields"]
    );
    // Removing a field removes it from every set.
    let mut smaller = created.clone();
    smaller["spec"].as_object_mut().unwrap().remove("replicas");
    let smaller = run_update(Some(&created), &smaller, "editor", T2);
    let fields = &smaller["metadata"]["managedFields"][0]["fieldsV1"];
    assert!(fields["f:spec"].get("f:replicas").is_none());
    assert_eq!(
        smaller["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn managed_fields_reset_and_client_supplied() {
    let created = run_update(None, &deployment(Some(1), "nginx"), "creator", T1);
    let mut reset = created.clone();
    reset["metadata"]["managedFields"] = json!([{}]);
    assert_eq!(
        run_update(Some(&created), &reset, "creator", T2)["metadata"]["managedFields"],
        json!([])
    );
    // An empty list resets too; the writer then owns only what it changed.
    let mut emptied = created.clone();
    emptied["metadata"]["managedFields"] = json!([]);
    emptied["spec"]["replicas"] = json!(2);
    let reset = run_update(Some(&created), &emptied, "scaler", T2);
    let entries = reset["metadata"]["managedFields"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["manager"], json!("scaler"));
    assert_eq!(
        entries[0]["fieldsV1"],
        json!({"f:spec": {"f:replicas": {}}})
    );
    // Absent managed fields keep the live ones.
    let mut absent = created.clone();
    absent["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    let kept = run_update(Some(&created), &absent, "creator", T2);
    assert_eq!(
        kept["metadata"]["managedFields"],
        created["metadata"]["managedFields"]
    );
    // Client-supplied entries replace the live ones.
    let mut supplied = created.clone();
    supplied["metadata"]["managedFields"] = json!([{
        "manager": "someone", "operation": "Update", "apiVersion": "apps/v1",
        "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}
    }]);
    let replaced = run_update(Some(&created), &supplied, "creator", T2);
    assert_eq!(
        replaced["metadata"]["managedFields"],
        supplied["metadata"]["managedFields"]
    );
}

#[test]
fn ignored_fields_are_never_owned_nor_conflicting() {
    let mut config = deployment(Some(1), "nginx");
    config["status"] = json!({"replicas": 7});
    let out = run_apply(None, config, "kubectl", false, T1).unwrap();
    assert!(out.managed_fields[0]["fieldsV1"].get("f:status").is_none());
}

#[test]
fn sets_are_owned_by_value() {
    let mut config = deployment(None, "nginx");
    config["metadata"]["finalizers"] = json!(["a", "b"]);
    let first = run_apply(None, config, "kubectl", false, T1)
        .unwrap()
        .object;
    assert_eq!(
        entry(&first, "kubectl", "Apply").unwrap()["fieldsV1"]["f:metadata"]["f:finalizers"],
        json!({"v:\"a\"": {}, "v:\"b\"": {}})
    );
    // Someone else adds a finalizer; the applier dropping "b" leaves "c".
    let mut edited = first.clone();
    edited["metadata"]["finalizers"] = json!(["a", "b", "c"]);
    let edited = run_update(Some(&first), &edited, "controller", T2);
    let mut config = deployment(None, "nginx");
    config["metadata"]["finalizers"] = json!(["a"]);
    let out = run_apply(Some(&edited), config, "kubectl", false, T2)
        .unwrap()
        .object;
    assert_eq!(out["metadata"]["finalizers"], json!(["a", "c"]));
}

#[test]
fn live_duplicates_are_tolerated() {
    let mut live = deployment(None, "nginx");
    live["spec"]["template"]["spec"]["containers"][0]["env"] =
        json!([{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]);
    let live = run_update(None, &live, "creator", T1);
    let first = run_apply(
        Some(&live),
        deployment(Some(2), "nginx"),
        "kubectl",
        false,
        T2,
    )
    .unwrap();
    let second = run_apply(
        Some(&first.object),
        deployment(None, "nginx"),
        "kubectl",
        false,
        T2,
    )
    .unwrap();
    assert_eq!(
        second.object["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(second.object["spec"].get("replicas").is_none());
}

#[test]
fn objects_without_managed_fields_belong_to_before_first_apply() {
    let legacy = deployment(Some(2), "nginx");
    let err = run_apply(
        Some(&legacy),
        deployment(Some(3), "nginx"),
        "kubectl",
        false,
        T1,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"before-first-apply\" using apps/v1: .spec.replicas"
    );
    let same = run_apply(
        Some(&legacy),
        deployment(Some(2), "nginx"),
        "kubectl",
        false,
        T1,
    )
    .unwrap();
    assert!(entry(&same.object, "before-first-apply", "Update").is_some());
    assert!(entry(&same.object, "kubectl", "Apply").is_some());
}

#[test]
fn unchanged_objects_keep_the_apply_time() {
    let first = run_apply(None, deployment(Some(1), "nginx"), "kubectl", false, T1)
        .unwrap()
        .object;
    let again = run_apply(
        Some(&first),
        deployment(Some(1), "nginx"),
        "kubectl",
        false,
        T2,
    )
    .unwrap()
    .object;
    assert_eq!(
        entry(&again, "kubectl", "Apply").unwrap()["time"],
        json!(T1)
    );
    assert_eq!(again, first);
}

#[test]
fn invalid_configurations() {
    let mut config = deployment(None, "nginx");
    config["apiVersion"] = json!("apps/v1beta1");
    let err = run_apply(None, config, "kubectl", false, T1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Incorrect version specified in apply patch. Specified patch version: apps/v1beta1, expected: apps/v1"
    );
    let mut config = deployment(None, "nginx");
    config["metadata"]["managedFields"] = json!([{"manager": "x"}]);
    let err = run_apply(None, config, "kubectl", false, T1).unwrap_err();
    assert_eq!(
        err,
        ApplyError::Invalid("metadata.managedFields must be nil".into())
    );

    let mut config = deployment(None, "nginx");
    config["spec"]["template"]["spec"]["containers"] = json!([{"image": "nginx"}]);
    let err = run_apply(None, config, "kubectl", false, T1).unwrap_err();
    assert!(
        matches!(&err, ApplyError::Invalid(m) if m.contains("omits key field \"name\"")),
        "{err:?}"
    );

    let mut config = deployment(None, "nginx");
    config["spec"]["template"]["spec"]["containers"] = json!([{"name": "a"}, {"name": "a"}]);
    assert!(matches!(
        run_apply(None, config, "kubectl", false, T1),
        Err(ApplyError::Invalid(_))
    ));
}

#[test]
fn list_map_keys_use_schema_defaults() {
    let mut config = deployment(None, "nginx");
    config["spec"]["template"]["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80}]);
    let out = run_apply(None, config, "kubectl", false, T1).unwrap();
    let container = &out.managed_fields[0]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]
        ["f:containers"]["k:{\"name\":\"nginx\"}"];
    assert_eq!(
        container["f:ports"],
        json!({"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}})
    );
}
