use serde_json::{json, Value};

use super::*;

fn size(text: &str) -> Size {
    Size::parse(text).unwrap()
}

/// A container with the given limits and requests (`null` leaves one out).
fn container(limits: Value, requests: Value) -> Value {
    let mut resources = serde_json::Map::new();
    if !limits.is_null() {
        resources.insert("limits".into(), limits);
    }
    if !requests.is_null() {
        resources.insert("requests".into(), requests);
    }
    json!({"name": "c", "image": "x", "resources": resources})
}

fn limits(cpu: &str, memory: &str) -> Value {
    container(json!({"cpu": cpu, "memory": memory}), Value::Null)
}

fn pod(containers: Vec<Value>, init_containers: Vec<Value>) -> Value {
    json!({"containers": containers, "initContainers": init_containers})
}

fn fit(spec: &Value) -> String {
    SizeTable::default()
        .fit(&demand(spec).unwrap())
        .unwrap()
        .to_string()
}

#[test]
fn size_display_and_parse() {
    let cases = [
        (250, 512, "0.25vCPU 0.5GiB"),
        (500, 1024, "0.5vCPU 1GiB"),
        (2000, 16 * 1024, "2vCPU 16GiB"),
        (125, 256, "0.125vCPU 0.25GiB"),
        (16000, 120 * 1024, "16vCPU 120GiB"),
        (1500, 1536, "1.5vCPU 1.5GiB"),
        (1, 1, "0.001vCPU 0.0009765625GiB"),
    ];
    for (millicpu, mib, text) in cases {
        let value = Size {
            millicpu,
            memory_bytes: mib * MIB,
        };
        assert_eq!(value.to_string(), text);
        assert_eq!(Size::parse(text).unwrap(), value, "{text}");
    }
    assert_eq!(size("0.5vCPU 1GiB").vcpu(), 0.5);
    assert_eq!(size("0.5vCPU 1.5GiB").gib(), 1.5);
    // Extra whitespace around the two parts is tolerated; trailing zeros parse.
    assert_eq!(size("  0.50vCPU   1.0GiB "), size("0.5vCPU 1GiB"));
}

#[test]
fn size_parse_errors() {
    for bad in [
        "",
        "0.5vCPU",
        "0.5 vCPU 1GiB",
        "0.5vCPU 1GB",
        "0.5cpu 1GiB",
        "0.0001vCPU 1GiB",
        "-1vCPU 1GiB",
        ".5vCPU 1GiB",
        "1.vCPU 1GiB",
        "1e3vCPU 1GiB",
        "1vCPU 0.1GiB",
        "1vCPU 2GiB extra",
    ] {
        assert!(
            matches!(Size::parse(bad), Err(ServerlessError::SizeFormat { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn default_table_is_the_documented_one() {
    let table = SizeTable::default();
    assert_eq!(SizeTable::parse(DEFAULT_TABLE).unwrap(), table);
    let classes: Vec<(String, String, String, usize)> = table
        .classes()
        .iter()
        .map(|c| {
            let gib = |b: u64| format_exact(u128::from(b), u128::from(GIB));
            (
                format_exact(u128::from(c.millicpu), 1000),
                gib(c.memory_options[0]),
                gib(*c.memory_options.last().unwrap()),
                c.memory_options.len(),
            )
        })
        .collect();
    let expected = [
        ("0.25", "0.5", "2", 3),
        ("0.5", "1", "4", 4),
        ("1", "2", "8", 7),
        ("2", "4", "16", 13),
        ("4", "8", "30", 23),
        ("8", "16", "60", 12),
        ("16", "32", "120", 12),
    ];
    assert_eq!(
        classes,
        expected
            .iter()
            .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), *d))
            .collect::<Vec<_>>()
    );
    assert_eq!(table.sizes().count(), 74);
    let smallest: Vec<String> = table.sizes().take(4).map(|s| s.to_string()).collect();
    assert_eq!(
        smallest,
        [
            "0.25vCPU 0.5GiB",
            "0.25vCPU 1GiB",
            "0.25vCPU 2GiB",
            "0.5vCPU 1GiB"
        ]
    );
    assert_eq!(table.largest().to_string(), "16vCPU 120GiB");
    assert!(table.contains(&size("8vCPU 20GiB")));
    assert!(!table.contains(&size("8vCPU 18GiB")));
    assert!(!table.contains(&size("3vCPU 8GiB")));
}

#[test]
fn every_default_size_round_trips_through_the_annotation() {
    for value in SizeTable::default().sizes() {
        assert_eq!(Size::parse(&value.to_string()).unwrap(), value);
    }
}

#[test]
fn table_display_round_trips() {
    let table = SizeTable::default();
    let text = table.to_string();
    assert!(text.contains("\n0.25    0.5, 1, 2\n"), "{text}");
    assert!(text.contains("\n8       16-60/4\n"), "{text}");
    assert_eq!(SizeTable::parse(&text).unwrap(), table);
    let custom = SizeTable::parse("0.5 1, 2\n1 2, 3, 5, 7, 9\n").unwrap();
    assert!(custom.to_string().contains("1       2, 3-9/2"), "{custom}");
    assert_eq!(SizeTable::parse(&custom.to_string()).unwrap(), custom);
}

#[test]
fn operator_table_from_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sizes.txt");
    std::fs::write(
        &path,
        "# small cluster\n0.5 0.5-2/0.5   # half GiB steps\n\n2 4,8\n",
    )
    .unwrap();
    let table = SizeTable::from_file(&path).unwrap();
    let sizes: Vec<String> = table.sizes().map(|s| s.to_string()).collect();
    assert_eq!(
        sizes,
        [
            "0.5vCPU 0.5GiB",
            "0.5vCPU 1GiB",
            "0.5vCPU 1.5GiB",
            "0.5vCPU 2GiB",
            "2vCPU 4GiB",
            "2vCPU 8GiB"
        ]
    );
    let d = Demand {
        millicpu: 100,
        memory_bytes: 3 * GIB,
    };
    assert_eq!(table.fit(&d).unwrap().to_string(), "2vCPU 4GiB");
    assert!(matches!(
        SizeTable::from_file(&dir.path().join("missing")),
        Err(ServerlessError::Read { .. })
    ));
}

#[test]
fn table_parse_errors_name_the_line() {
    let cases = [
        ("", 0),
        ("# only comments\n", 0),
        ("1 2\n0.5 1\n", 2),
        ("1 2\n1 4\n", 2),
        ("1\n", 1),
        ("0 1\n", 1),
        ("1 2,2\n", 1),
        ("1 3,2\n", 1),
        ("1 2-8/4\n", 1),
        ("1 2-8/0\n", 1),
        ("1 8-2/1\n", 1),
        ("1 2-8\n", 1),
        ("1 2,,3\n", 1),
        ("1 0\n", 1),
        ("x 1\n", 1),
        ("1 0.1\n", 1),
        ("1 1-100000/0.0009765625\n", 1),
        ("0.25 0.5\n1 2\n2 abc\n", 3),
    ];
    for (text, line) in cases {
        match SizeTable::parse(text) {
            Err(ServerlessError::TableFormat { line: got, .. }) => {
                assert_eq!(got, line, "{text:?}")
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }
}

#[test]
fn fitting_at_and_around_the_boundaries() {
    // (cpu limit, memory limit, provisioned size)
    let cases = [
        // Exactly on the smallest size, then just above in cpu (cpu-driven) and memory.
        ("250m", "512Mi", "0.25vCPU 0.5GiB"),
        ("0.25", "512Mi", "0.25vCPU 0.5GiB"),
        ("251m", "512Mi", "0.5vCPU 1GiB"),
        ("250m", "513Mi", "0.25vCPU 1GiB"),
        ("100m", "128Mi", "0.25vCPU 0.5GiB"),
        // Memory-driven: more memory than the class offers moves to the next class.
        ("250m", "2Gi", "0.25vCPU 2GiB"),
        ("250m", "2049Mi", "0.5vCPU 3GiB"),
        ("250m", "1.5Gi", "0.25vCPU 2GiB"),
        ("250m", "1G", "0.25vCPU 1GiB"),
        ("500m", "4Gi", "0.5vCPU 4GiB"),
        ("500m", "4097Mi", "1vCPU 5GiB"),
        ("1", "8Gi", "1vCPU 8GiB"),
        ("1", "8193Mi", "2vCPU 9GiB"),
        ("1001m", "1Gi", "2vCPU 4GiB"),
        ("2", "16Gi", "2vCPU 16GiB"),
        ("2", "17Gi", "4vCPU 17GiB"),
        ("4", "30Gi", "4vCPU 30GiB"),
        ("4", "31Gi", "8vCPU 32GiB"),
        ("4001m", "1Gi", "8vCPU 16GiB"),
        ("8", "17Gi", "8vCPU 20GiB"),
        ("8", "60Gi", "8vCPU 60GiB"),
        ("8", "61Gi", "16vCPU 64GiB"),
        ("16", "33Gi", "16vCPU 40GiB"),
        ("16", "120Gi", "16vCPU 120GiB"),
    ];
    for (cpu, memory, expected) in cases {
        assert_eq!(
            fit(&pod(vec![limits(cpu, memory)], vec![])),
            expected,
            "{cpu} {memory}"
        );
    }
}

#[test]
fn above_the_largest_size_is_refused_with_both_sizes() {
    for (cpu, memory, shown) in [
        ("16001m", "1Gi", "16.001 vCPU 1GiB"),
        ("32", "64Gi", "32 vCPU 64GiB"),
        ("1", "121Gi", "1 vCPU 121GiB"),
        ("250m", "120.5Gi", "0.25 vCPU 120.5GiB"),
    ] {
        let err = SizeTable::default()
            .fit(&demand(&pod(vec![limits(cpu, memory)], vec![])).unwrap())
            .unwrap_err();
        assert!(matches!(err, ServerlessError::TooLarge { .. }));
        let message = err.to_string();
        assert!(message.contains(shown), "{message}");
        assert!(message.contains("16vCPU 120GiB"), "{message}");
    }
}

#[test]
fn no_limits_or_requests_get_the_smallest_size_without_warning() {
    for spec in [
        json!({}),
        json!({"containers": [{"name": "a", "image": "x"}]}),
        pod(vec![container(json!({}), json!({}))], vec![]),
    ] {
        let provisioned = provision(&spec, &SizeTable::default()).unwrap();
        assert_eq!(provisioned.demand, Demand::default());
        assert_eq!(provisioned.size.to_string(), "0.25vCPU 0.5GiB");
        assert_eq!(provisioned.warning, None);
    }
}

#[test]
fn app_containers_are_summed() {
    let spec = pod(
        vec![limits("300m", "700Mi"), limits("200m", "300Mi")],
        vec![],
    );
    assert_eq!(
        demand(&spec).unwrap(),
        Demand {
            millicpu: 500,
            memory_bytes: 1000 * MIB
        }
    );
    assert_eq!(fit(&spec), "0.5vCPU 1GiB");
}

#[test]
fn init_container_larger_than_app_containers() {
    // cpu from the init container, memory from the app containers.
    let spec = pod(
        vec![limits("250m", "512Mi"), limits("250m", "1Gi")],
        vec![limits("2", "1Gi"), limits("1", "256Mi")],
    );
    assert_eq!(
        demand(&spec).unwrap(),
        Demand {
            millicpu: 2000,
            memory_bytes: 1536 * MIB
        }
    );
    assert_eq!(fit(&spec), "2vCPU 4GiB");
    // An init container that needs more memory than all app containers together.
    let spec = pod(vec![limits("1", "1Gi")], vec![limits("500m", "6Gi")]);
    assert_eq!(fit(&spec), "1vCPU 6GiB");
}

#[test]
fn requests_stand_in_for_missing_limits() {
    let requests_only = pod(
        vec![container(
            Value::Null,
            json!({"cpu": "300m", "memory": "700Mi"}),
        )],
        vec![],
    );
    let provisioned = provision(&requests_only, &SizeTable::default()).unwrap();
    assert_eq!(provisioned.demand.to_string(), "0.3 vCPU 700MiB");
    assert_eq!(provisioned.size.to_string(), "0.5vCPU 1GiB");
    assert_eq!(
        provisioned.warning.as_deref(),
        Some(
            "pod resources rounded up from 0.3 vCPU 700MiB to 0.5vCPU 1GiB (the provisioned size)"
        )
    );

    // Per resource: the limit wins where there is one, the request stands in where not.
    let mixed = pod(
        vec![
            container(json!({"cpu": "1"}), json!({"cpu": "100m", "memory": "3Gi"})),
            container(Value::Null, json!({"cpu": "500m"})),
        ],
        vec![],
    );
    assert_eq!(
        demand(&mixed).unwrap(),
        Demand {
            millicpu: 1500,
            memory_bytes: 3 * GIB
        }
    );
}

#[test]
fn sidecar_init_containers_add_to_the_app_containers() {
    let mut sidecar = limits("250m", "512Mi");
    sidecar["restartPolicy"] = json!("Always");
    // app 500m + sidecar 250m = 750m; the init container after the sidecar runs beside it:
    // 1000m + 250m = 1250m, the largest phase.
    let spec = pod(
        vec![limits("500m", "1Gi")],
        vec![sidecar.clone(), limits("1", "256Mi")],
    );
    assert_eq!(
        demand(&spec).unwrap(),
        Demand {
            millicpu: 1250,
            memory_bytes: 1536 * MIB
        }
    );
    // An init container before the sidecar runs alone.
    let spec = pod(
        vec![limits("500m", "1Gi")],
        vec![limits("1", "256Mi"), sidecar],
    );
    assert_eq!(
        demand(&spec).unwrap(),
        Demand {
            millicpu: 1000,
            memory_bytes: 1536 * MIB
        }
    );
}

#[test]
fn pod_level_resources_and_overhead() {
    let mut spec = pod(vec![limits("500m", "1Gi"), limits("500m", "1Gi")], vec![]);
    spec["resources"] = json!({"limits": {"cpu": "2"}, "requests": {"memory": "4Gi"}});
    assert_eq!(fit(&spec), "2vCPU 4GiB");
    spec["resources"] = json!({"requests": {"memory": "1Gi"}});
    assert_eq!(
        demand(&spec).unwrap().memory_bytes,
        2 * GIB,
        "a smaller pod request does not lower the containers' total"
    );
    spec["overhead"] = json!({"cpu": "250m", "memory": "120Mi"});
    assert_eq!(
        demand(&spec).unwrap(),
        Demand {
            millicpu: 1250,
            memory_bytes: 2168 * MIB
        }
    );
}

#[test]
fn quantity_forms() {
    let cases = [
        (json!("250m"), json!("512Mi"), 250, 512 * MIB),
        (json!("0.5"), json!("1.5Gi"), 500, 1536 * MIB),
        (json!(2), json!("1G"), 2000, 1_000_000_000),
        (json!(0.1), json!(1073741824), 100, GIB),
        (json!("1n"), json!("1k"), 1, 1000),
        (json!("1500m"), json!("2e9"), 1500, 2_000_000_000),
    ];
    for (cpu, memory, millicpu, memory_bytes) in cases {
        let spec = pod(
            vec![container(
                json!({"cpu": cpu, "memory": memory}),
                Value::Null,
            )],
            vec![],
        );
        assert_eq!(
            demand(&spec).unwrap(),
            Demand {
                millicpu,
                memory_bytes
            },
            "{cpu} {memory}"
        );
    }
}

#[test]
fn invalid_quantities_name_the_field() {
    let spec = pod(
        vec![
            limits("1", "1Gi"),
            container(json!({"cpu": "lots"}), Value::Null),
        ],
        vec![],
    );
    let err = demand(&spec).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("spec.containers[1].resources.limits[cpu]: invalid quantity \"lots\""),
        "{err}"
    );
    let spec = pod(
        vec![],
        vec![container(Value::Null, json!({"memory": "-1Gi"}))],
    );
    let err = demand(&spec).unwrap_err();
    assert!(
        err.to_string()
            .contains("spec.initContainers[0].resources.requests[memory]"),
        "{err}"
    );
    let spec = pod(
        vec![container(json!({"memory": true}), Value::Null)],
        vec![],
    );
    assert!(matches!(
        demand(&spec),
        Err(ServerlessError::Quantity { .. })
    ));
}

#[test]
fn rounding_warning_only_for_what_was_asked() {
    let exact = Demand {
        millicpu: 500,
        memory_bytes: GIB,
    };
    assert_eq!(rounding_warning(&exact, &size("0.5vCPU 1GiB")), None);
    // Only memory asked for, and it matches: the cpu nobody asked for is not a rounding.
    let memory_only = Demand {
        millicpu: 0,
        memory_bytes: GIB,
    };
    assert_eq!(rounding_warning(&memory_only, &size("0.25vCPU 1GiB")), None);
    let cpu_only = Demand {
        millicpu: 300,
        memory_bytes: 0,
    };
    assert_eq!(
        rounding_warning(&cpu_only, &size("0.5vCPU 1GiB")).as_deref(),
        Some("pod resources rounded up from 0.3 vCPU 0MiB to 0.5vCPU 1GiB (the provisioned size)")
    );
    assert!(memory_only.is_rounded_to(&size("0.25vCPU 2GiB")));
}

#[test]
fn demand_display() {
    let shown = |millicpu, memory_bytes| {
        Demand {
            millicpu,
            memory_bytes,
        }
        .to_string()
    };
    assert_eq!(shown(300, 700 * MIB), "0.3 vCPU 700MiB");
    assert_eq!(shown(2000, 16 * GIB), "2 vCPU 16GiB");
    assert_eq!(shown(250, 1536 * MIB), "0.25 vCPU 1.5GiB");
    assert_eq!(shown(1, 1_000_000_000), "0.001 vCPU 953.68MiB");
    assert_eq!(shown(0, 0), "0 vCPU 0MiB");
}

#[test]
fn annotation_name() {
    assert_eq!(ANNOTATION, "nodeless.io/capacity-provisioned");
}

#[test]
fn demand_at_a_template_path_names_the_template_field() {
    let spec = pod(
        vec![container(json!({"memory": "much"}), Value::Null)],
        vec![],
    );
    let path = FieldPath::root("spec").child("template").child("spec");
    let err = demand_at(&spec, &path).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("spec.template.spec.containers[0].resources.limits[memory]:"),
        "{err}"
    );
    let ok = pod(vec![limits("1", "2Gi")], vec![]);
    assert_eq!(demand_at(&ok, &path).unwrap(), demand(&ok).unwrap());
}
