//! Names and label values made from object names stay within the API server's limits, whatever the
//! name (T-14, M-02, S-05, T-31): any valid object name, up to 253 characters with dots.

use aim_api::labels;
use aim_resolve::events::event_name;
use aim_resolve::model::{ModelRef, desired_templates};
use aim_resolve::names::{
    MAX_LABEL, MAX_SUBDOMAIN, dns_label, fit, is_dns1035_label, is_label_value, label_value,
};
use aim_resolve::service::{service_label_value, service_of, workload_name};
use proptest::prelude::*;

/// A DNS subdomain: what the API server accepts as the name of a custom resource (dot-separated DNS
/// labels, up to 253 characters).
fn subdomain() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", 1..8)
        .prop_map(|parts| parts.join("."))
        .prop_filter("at most 253 characters", |s| s.len() <= MAX_SUBDOMAIN)
}

fn is_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_SUBDOMAIN && s.split('.').all(aim_discovery::is_dns1123_label)
}

proptest! {
    // M-02, S-05: every name gives a valid label value, the name itself when it is one already.
    #[test]
    fn label_values_are_valid_and_keep_names_that_fit(name in subdomain()) {
        let v = label_value(&name);
        prop_assert!(is_label_value(&v) && !v.is_empty() && v.len() <= MAX_LABEL, "{}", v);
        if name.len() <= MAX_LABEL {
            prop_assert_eq!(&v, &name);
        }
        prop_assert_eq!(label_value(&name), v, "deterministic");
    }

    // S-05: the Deployment and Service of any AIMService are named by a DNS-1035 label.
    #[test]
    fn workload_names_are_dns_labels(name in subdomain()) {
        let w = workload_name(&name);
        prop_assert!(is_dns1035_label(&w), "{}", w);
        if is_dns1035_label(&name) {
            prop_assert_eq!(&w, &name);
        }
        prop_assert!(is_label_value(&service_label_value(&name)));
    }

    // T-31: the Event of an object of any name has a name within 253 characters.
    #[test]
    fn event_names_are_subdomains(name in subdomain(), nanos in 0i128..i128::from(i64::MAX) * 1000) {
        let e = event_name(&name, nanos);
        prop_assert!(is_subdomain(&e), "{} ({})", e, e.len());
    }

    // Names cut to a limit stay subdomains within it.
    #[test]
    fn fitted_names_stay_subdomains(name in subdomain(), max in 9usize..253) {
        let f = fit(&name, max);
        prop_assert!(f.len() <= max && is_subdomain(&f), "{} ({})", f, f.len());
    }

    // Distinct names stay apart (with overwhelming probability: 32 bits of hash on top of the prefix).
    #[test]
    fn distinct_names_give_distinct_values(a in subdomain(), b in subdomain()) {
        prop_assume!(a != b);
        prop_assert_ne!(label_value(&a), label_value(&b));
        prop_assert_ne!(dns_label(&a), dns_label(&b));
        prop_assert_ne!(event_name(&a, 1), event_name(&b, 1));
    }

    // M-02: the templates of a model of any name carry valid labels and DNS-label names.
    #[test]
    fn model_templates_have_valid_labels(name in subdomain()) {
        let model = ModelRef { kind: "AIMModel", name: &name, namespace: Some("ns"), uid: "u" };
        let deps: Vec<aim_api::RecommendedDeployment> = serde_json::from_str(
            r#"[{"gpuModel":"MI300X","gpuCount":1,"precision":"fp8","metric":"latency"}]"#,
        ).unwrap();
        let (want, _) = desired_templates(&model, &deps);
        for d in want {
            prop_assert!(aim_discovery::is_dns1123_label(&d.name), "{}", d.name);
            for v in d.labels.values() {
                prop_assert!(is_label_value(v), "{}", v);
            }
            let full = d.annotations.get(labels::MODEL_NAME).unwrap_or(&d.labels[labels::MODEL]);
            prop_assert_eq!(full, &name);
        }
    }
}

// Names long in the same first characters, and names differing only by a dot, stay apart.
#[test]
fn near_names_stay_apart() {
    let base = "a".repeat(100);
    assert_ne!(
        label_value(&format!("{base}1")),
        label_value(&format!("{base}2"))
    );
    assert_ne!(dns_label("a.b"), dns_label("a-b"));
    assert_ne!(
        workload_name(&format!("{base}.x")),
        workload_name(&format!("{base}-x"))
    );
}

// S-05: a pod finds its service by the annotation when the label was shortened, by the label else.
#[test]
fn the_service_of_a_pod_is_found_by_annotation_or_label() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    let long = format!("{}.svc", "s".repeat(80));
    let doc = |name: &str| -> ObjectMeta {
        let labels = aim_resolve::service::workload::workload_labels(name, "t");
        let mut meta = ObjectMeta {
            labels: Some(labels),
            ..Default::default()
        };
        if service_label_value(name) != name {
            meta.annotations = Some(
                [(
                    aim_resolve::service::workload::SERVICE_NAME_ANNOTATION.to_string(),
                    name.to_string(),
                )]
                .into(),
            );
        }
        meta
    };
    assert_eq!(service_of(&doc("short")), Some("short"));
    assert_eq!(service_of(&doc(&long)), Some(long.as_str()));
}
