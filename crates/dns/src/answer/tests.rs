use std::net::IpAddr;

use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::{ClusterZone, Outcome, PodRecords};
use crate::view::{ClusterView, ObjectKey};

fn service(value: serde_json::Value) -> Service {
    serde_json::from_value(value).unwrap()
}

fn slice(value: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(value).unwrap()
}

fn name(text: &str) -> Name {
    Name::from_ascii(text).unwrap()
}

/// A view with: web (ClusterIP 10.96.0.10, ports http/80 and an unnamed 8080), ledger (headless,
/// two slices: ledger-0 ready, ledger-1 not ready, an endpoint without hostname, a duplicate of
/// ledger-0 in the second slice), empty (headless, no endpoints), search (ExternalName).
fn view() -> ClusterView {
    let mut view = ClusterView::new();
    view.upsert_service(&service(json!({
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 8080}]}
    })));
    view.upsert_service(&service(json!({
        "metadata": {"name": "ledger", "namespace": "shop"},
        "spec": {"clusterIP": "None", "ports": [{"name": "db", "port": 5432}]}
    })));
    view.upsert_service(&service(json!({
        "metadata": {"name": "empty", "namespace": "shop"},
        "spec": {"clusterIP": "None"}
    })));
    view.upsert_service(&service(json!({
        "metadata": {"name": "search", "namespace": "shop"},
        "spec": {"type": "ExternalName", "externalName": "search.example.com"}
    })));
    view.upsert_slice(&slice(json!({
        "metadata": {"name": "ledger-abc", "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": "ledger"}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.1.0.5"], "hostname": "ledger-0", "conditions": {"ready": true}},
            {"addresses": ["10.1.0.6"], "hostname": "ledger-1", "conditions": {"ready": false}},
            {"addresses": ["10.1.0.7"]}
        ],
        "ports": [{"name": "db", "port": 5432, "protocol": "TCP"}]
    })));
    view.upsert_slice(&slice(json!({
        "metadata": {"name": "ledger-def", "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": "ledger"}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.1.0.5"], "hostname": "ledger-0", "conditions": {"ready": true}}
        ],
        "ports": [{"name": "db", "port": 5432, "protocol": "TCP"}]
    })));
    view
}

fn zone() -> ClusterZone {
    ClusterZone::new("cluster.local", 5, PodRecords::Insecure).unwrap()
}

fn answer_of(outcome: Outcome) -> (Vec<Record>, Vec<Record>) {
    match outcome {
        Outcome::Answer {
            answers,
            additionals,
        } => (answers, additionals),
        other => panic!("expected an answer, got {other:?}"),
    }
}

fn ips(records: &[Record]) -> Vec<IpAddr> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn cluster_ip_service_resolves_to_its_cluster_ip() {
    let query = name("web.shop.svc.cluster.local.");
    let (answers, _) = answer_of(zone().resolve(&view(), &query, RecordType::A));
    assert_eq!(ips(&answers), vec![ip("10.96.0.10")]);
    assert_eq!(answers[0].name, query);
    assert_eq!(answers[0].ttl, 5);
    // Known name, other types: NODATA.
    assert_eq!(
        zone().resolve(&view(), &query, RecordType::AAAA),
        Outcome::NoData
    );
    assert_eq!(
        zone().resolve(&view(), &query, RecordType::MX),
        Outcome::NoData
    );
}

#[test]
fn unknown_names_in_the_zone_are_nxdomain() {
    let view = view();
    for unknown in [
        "nope.shop.svc.cluster.local.",
        "web.other.svc.cluster.local.",
        "a.b.c.d.e.f.svc.cluster.local.",
        "web.shop.cluster.local.",
        "other.cluster.local.",
        "svc.shop.cluster.local.",
    ] {
        assert_eq!(
            zone().resolve(&view, &name(unknown), RecordType::A),
            Outcome::NxDomain,
            "{unknown}"
        );
    }
    // Empty non-terminals exist.
    assert_eq!(
        zone().resolve(&view, &name("svc.cluster.local."), RecordType::A),
        Outcome::NoData
    );
    assert_eq!(
        zone().resolve(&view, &name("shop.svc.cluster.local."), RecordType::A),
        Outcome::NoData
    );
}

#[test]
fn headless_service_resolves_to_ready_endpoints_once_each() {
    let (answers, _) = answer_of(zone().resolve(
        &view(),
        &name("ledger.shop.svc.cluster.local."),
        RecordType::A,
    ));
    assert_eq!(ips(&answers), vec![ip("10.1.0.5"), ip("10.1.0.7")]);
}

#[test]
fn headless_service_without_ready_endpoints_is_nxdomain() {
    assert_eq!(
        zone().resolve(
            &view(),
            &name("empty.shop.svc.cluster.local."),
            RecordType::A
        ),
        Outcome::NxDomain
    );
}

#[test]
fn endpoint_hostnames_resolve_under_their_service() {
    let view = view();
    let (answers, _) = answer_of(zone().resolve(
        &view,
        &name("ledger-0.ledger.shop.svc.cluster.local."),
        RecordType::A,
    ));
    assert_eq!(ips(&answers), vec![ip("10.1.0.5")]);
    // An endpoint without hostname has a generated one: its dashed address.
    let (answers, _) = answer_of(zone().resolve(
        &view,
        &name("10-1-0-7.ledger.shop.svc.cluster.local."),
        RecordType::A,
    ));
    assert_eq!(ips(&answers), vec![ip("10.1.0.7")]);
    // Not ready, unknown: no record.
    for missing in ["ledger-1", "ledger-9"] {
        assert_eq!(
            zone().resolve(
                &view,
                &name(&format!("{missing}.ledger.shop.svc.cluster.local.")),
                RecordType::A
            ),
            Outcome::NxDomain
        );
    }
}

#[test]
fn srv_of_a_cluster_ip_service_targets_the_service() {
    let query = name("_http._tcp.web.shop.svc.cluster.local.");
    let (answers, additionals) = answer_of(zone().resolve(&view(), &query, RecordType::SRV));
    assert_eq!(answers.len(), 1);
    let RData::SRV(srv) = &answers[0].data else {
        panic!("not an SRV: {:?}", answers[0]);
    };
    assert_eq!(srv.port, 80);
    assert_eq!(srv.target, name("web.shop.svc.cluster.local."));
    assert_eq!(additionals.len(), 1);
    assert_eq!(additionals[0].name, name("web.shop.svc.cluster.local."));
    assert_eq!(ips(&additionals), vec![ip("10.96.0.10")]);
    // Wrong protocol or port name, unnamed ports: nothing.
    for missing in [
        "_http._udp.web.shop.svc.cluster.local.",
        "_https._tcp.web.shop.svc.cluster.local.",
        "http.tcp.web.shop.svc.cluster.local.",
    ] {
        assert_eq!(
            zone().resolve(&view(), &name(missing), RecordType::SRV),
            Outcome::NxDomain,
            "{missing}"
        );
    }
}

#[test]
fn srv_of_a_headless_service_has_one_record_per_ready_endpoint() {
    // Sorted by target name; ledger-1 is not ready; ledger-0 appears in two slices.
    let query = name("_db._tcp.ledger.shop.svc.cluster.local.");
    let (answers, additionals) = answer_of(zone().resolve(&view(), &query, RecordType::SRV));
    let targets: Vec<(String, u16)> = answers
        .iter()
        .map(|r| match &r.data {
            RData::SRV(srv) => (srv.target.to_string(), srv.port),
            other => panic!("not an SRV: {other:?}"),
        })
        .collect();
    assert_eq!(
        targets,
        vec![
            ("10-1-0-7.ledger.shop.svc.cluster.local.".to_string(), 5432),
            ("ledger-0.ledger.shop.svc.cluster.local.".to_string(), 5432),
        ]
    );
    let glue: Vec<(String, IpAddr)> = additionals
        .iter()
        .map(|r| (r.name.to_string(), ips(std::slice::from_ref(r))[0]))
        .collect();
    assert_eq!(
        glue,
        vec![
            (
                "10-1-0-7.ledger.shop.svc.cluster.local.".to_string(),
                ip("10.1.0.7")
            ),
            (
                "ledger-0.ledger.shop.svc.cluster.local.".to_string(),
                ip("10.1.0.5")
            ),
        ]
    );
}

#[test]
fn external_name_service_is_an_alias() {
    match zone().resolve(
        &view(),
        &name("search.shop.svc.cluster.local."),
        RecordType::A,
    ) {
        Outcome::Alias { cname, target } => {
            assert_eq!(target, name("search.example.com."));
            assert_eq!(cname.record_type(), RecordType::CNAME);
            assert_eq!(cname.name, name("search.shop.svc.cluster.local."));
        }
        other => panic!("expected an alias, got {other:?}"),
    }
}

#[test]
fn pod_records_insecure_verified_and_disabled() {
    let query = name("10-1-2-3.default.pod.cluster.local.");
    let (answers, _) = answer_of(zone().resolve(&view(), &query, RecordType::A));
    assert_eq!(ips(&answers), vec![ip("10.1.2.3")]);
    let (answers, _) = answer_of(zone().resolve(
        &view(),
        &name("fd00--1.default.pod.cluster.local."),
        RecordType::AAAA,
    ));
    assert_eq!(ips(&answers), vec![ip("fd00::1")]);
    assert_eq!(
        zone().resolve(
            &view(),
            &name("10-1-2.default.pod.cluster.local."),
            RecordType::A
        ),
        Outcome::NxDomain
    );
    assert_eq!(
        zone().resolve(
            &view(),
            &name("10-1-2-300.default.pod.cluster.local."),
            RecordType::A
        ),
        Outcome::NxDomain
    );

    let verified = ClusterZone::new("cluster.local", 5, PodRecords::Verified).unwrap();
    let mut view = view();
    assert_eq!(
        verified.resolve(&view, &query, RecordType::A),
        Outcome::NxDomain
    );
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "default"},
        "status": {"podIP": "10.1.2.3", "podIPs": [{"ip": "10.1.2.3"}]}
    }))
    .unwrap();
    view.upsert_pod(&pod);
    assert!(matches!(
        verified.resolve(&view, &query, RecordType::A),
        Outcome::Answer { .. }
    ));
    // Same IP, other namespace: not verified.
    assert_eq!(
        verified.resolve(
            &view,
            &name("10-1-2-3.other.pod.cluster.local."),
            RecordType::A
        ),
        Outcome::NxDomain
    );
    view.remove_pod(&ObjectKey::new("default", "p"));
    assert_eq!(
        verified.resolve(&view, &query, RecordType::A),
        Outcome::NxDomain
    );

    let disabled = ClusterZone::new("cluster.local", 5, PodRecords::Disabled).unwrap();
    assert_eq!(
        disabled.resolve(&view, &query, RecordType::A),
        Outcome::NxDomain
    );
}

#[test]
fn ptr_for_cluster_ips_and_endpoints_else_forwarded() {
    let view = view();
    let ptr = |text: &str| match zone().resolve(&view, &name(text), RecordType::PTR) {
        Outcome::Answer { answers, .. } => answers
            .iter()
            .map(|r| match &r.data {
                RData::PTR(ptr) => ptr.0.to_string(),
                other => panic!("not a PTR: {other:?}"),
            })
            .collect::<Vec<_>>(),
        other => panic!("expected an answer, got {other:?}"),
    };
    assert_eq!(
        ptr("10.0.96.10.in-addr.arpa."),
        vec!["web.shop.svc.cluster.local."]
    );
    assert_eq!(
        ptr("5.0.1.10.in-addr.arpa."),
        vec!["ledger-0.ledger.shop.svc.cluster.local."]
    );
    assert_eq!(
        ptr("7.0.1.10.in-addr.arpa."),
        vec!["10-1-0-7.ledger.shop.svc.cluster.local."]
    );
    // Not-ready endpoints and unknown addresses go upstream.
    for other in [
        "6.0.1.10.in-addr.arpa.",
        "8.8.8.8.in-addr.arpa.",
        "10.in-addr.arpa.",
    ] {
        assert_eq!(
            zone().resolve(&view, &name(other), RecordType::PTR),
            Outcome::NotOurs
        );
    }
}

#[test]
fn names_outside_the_zone_are_not_ours() {
    for outside in [
        "example.com.",
        "cluster.local.example.com.",
        "local.",
        "xcluster.local.",
    ] {
        assert_eq!(
            zone().resolve(&view(), &name(outside), RecordType::A),
            Outcome::NotOurs,
            "{outside}"
        );
    }
}

#[test]
fn zone_apex_has_soa_and_dns_version() {
    let (answers, _) = answer_of(zone().resolve(&view(), &name("cluster.local."), RecordType::SOA));
    assert_eq!(answers[0].record_type(), RecordType::SOA);
    assert_eq!(
        zone().resolve(&view(), &name("cluster.local."), RecordType::A),
        Outcome::NoData
    );
    let (answers, _) = answer_of(zone().resolve(
        &view(),
        &name("dns-version.cluster.local."),
        RecordType::TXT,
    ));
    let RData::TXT(txt) = &answers[0].data else {
        panic!("not a TXT");
    };
    assert_eq!(txt.to_string(), "1.1.0");
}

#[test]
fn view_follows_slice_changes_and_relists() {
    let mut view = view();
    let ledger = name("ledger.shop.svc.cluster.local.");
    view.remove_slice(&ObjectKey::new("shop", "ledger-abc"));
    let (answers, _) = answer_of(zone().resolve(&view, &ledger, RecordType::A));
    assert_eq!(ips(&answers), vec![ip("10.1.0.5")]);
    // A relist without the remaining slice drops it.
    view.replace_slices(&[]);
    assert_eq!(
        zone().resolve(&view, &ledger, RecordType::A),
        Outcome::NxDomain
    );
    // A service that changes to headless follows.
    view.upsert_service(&service(json!({
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"clusterIP": "None"}
    })));
    assert_eq!(
        zone().resolve(&view, &name("web.shop.svc.cluster.local."), RecordType::A),
        Outcome::NxDomain
    );
    view.replace_services(&[]);
    assert!(view.service("shop", "ledger").is_none());
}

#[test]
fn custom_cluster_domain() {
    let zone = ClusterZone::new("corp.example", 30, PodRecords::Insecure).unwrap();
    let (answers, _) =
        answer_of(zone.resolve(&view(), &name("web.shop.svc.corp.example."), RecordType::A));
    assert_eq!(answers[0].ttl, 30);
    assert_eq!(
        zone.resolve(&view(), &name("web.shop.svc.cluster.local."), RecordType::A),
        Outcome::NotOurs
    );
}
