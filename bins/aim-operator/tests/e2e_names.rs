//! End-to-end: long and dotted names. Models, templates, services and caches named up to the API
//! server's limit work: every name and label value the operator derives from them is within its limit
//! (cut and hashed), and what the operator records about them (Events) is stored (M-02, T-14, T-26,
//! S-05, T-31).

mod common;

use aim_api::*;
use aim_resolve::names::{is_dns1035_label, is_label_value, label_value};
use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use std::time::Duration;
use xtask::support::{TestNamespace, WAIT, wait_for};

/// A name of exactly `len` characters: `stem`, then dotted parts of `x`s (a DNS subdomain).
fn long_name(stem: &str, len: usize) -> String {
    let mut s = stem.to_string();
    while s.len() < len {
        let room = len - s.len();
        if room == 1 {
            s.push('x');
        } else {
            let part = (room - 1).min(40);
            s.push('.');
            s.push_str(&"x".repeat(part));
        }
    }
    s
}

fn all_label_values_valid(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    for (k, v) in meta.labels.iter().flatten() {
        assert!(is_label_value(v), "label {k}={v:?} of {:?}", meta.name);
    }
}

fn model_ready(m: Option<&AIMModel>) -> bool {
    m.and_then(|m| m.status.as_ref())
        .is_some_and(|s| s.status == ModelPhase::Ready && s.templates.len() == 1)
}

async fn model_templates_become_ready(ns: &TestNamespace, name: &str) {
    let models: Api<AIMModel> = ns.api();
    apply(&models, &inline_model(&ns.name, name)).await;
    let m = wait_for(&models, name, "model Ready", WAIT, model_ready).await;
    let st = m.status.unwrap();
    let made = &st.templates[0].name;
    assert_eq!(st.templates[0].status, TemplatePhase::Ready);
    let templates: Api<AIMServiceTemplate> = ns.api();
    let t = templates.get(made).await.unwrap();
    assert!(aim_discovery::is_dns1123_label(made), "{made}");
    all_label_values_valid(&t.metadata);
    assert_eq!(t.labels()[labels::MODEL], label_value(name));
    assert_eq!(t.spec.common.model_name, name);
    if name.len() > 63 {
        assert_eq!(t.annotations()[labels::MODEL_NAME], name);
    }
    // The model's label selects its templates (the value is the same transformed name).
    let by_label = templates
        .list(&ListParams::default().labels(&format!("{}={}", labels::MODEL, label_value(name))))
        .await
        .unwrap();
    assert_eq!(by_label.items.len(), 1);
}

// M-02: a model of more than 63 characters, and one with dots, make their templates, which discover and
// become Ready; the model is Ready. (Before: the raw name in the template's label made every apply
// fail, and the model said nothing.)
#[tokio::test]
async fn a_model_with_a_long_or_dotted_name_makes_ready_templates() {
    let ns = setup("names-model", DRY_RUN_OK).await;
    model_templates_become_ready(
        &ns,
        &long_name("qwen3-32b-instruct-with-a-very-long-name", 75),
    )
    .await;
    model_templates_become_ready(&ns, "qwen3.5-32b.instruct").await;
}

// T-14, T-31: a template of 200 characters with dots discovers (its Job's name and labels are cut and
// hashed, the full name in an annotation) and is Ready, and its Events are stored.
#[tokio::test]
async fn a_long_dotted_template_discovers_and_its_events_are_stored() {
    let ns = setup("names-tpl", DRY_RUN_OK).await;
    model_m(&ns, serde_json::json!([])).await;
    let name = long_name("latency-template", 200);
    let api = ns.api::<AIMServiceTemplate>();
    apply(&api, &template(&ns.name, &name, on_mi300x("m"))).await;
    let t = wait_for(&api, &name, "Ready", WAIT, phase(TemplatePhase::Ready)).await;
    let job_name = t.status.unwrap().discovery.unwrap().job.unwrap().name;
    assert!(job_name.len() <= 63, "{job_name}");
    let job = ns.api::<Job>().get(&job_name).await.unwrap();
    all_label_values_valid(&job.metadata);
    assert_eq!(
        job.annotations()[aim_discovery::ANNOTATION_TEMPLATE_NAME],
        name
    );
    // T-31: its Events are stored (their names stay within 253 characters).
    let events = events_of(&ns, &name, Duration::from_secs(10), |e| {
        e.iter().any(|(_, reason, _, _)| reason == "Ready")
    })
    .await;
    assert!(
        events.iter().any(|(_, reason, _, _)| reason == "Ready"),
        "{events:#?}"
    );
}

// T-26, C-01: a template of a long dotted name with caching owns a cache of its name, which warms; the
// template is Ready.
#[tokio::test]
async fn a_long_dotted_template_with_caching_warms_its_cache() {
    let ns = setup("names-cache", DRY_RUN_OK).await;
    model_m(&ns, serde_json::json!([])).await;
    let name = long_name("cached-template", 200);
    let mut spec = on_mi300x("m");
    spec["caching"] = serde_json::json!({ "enabled": true });
    let api = ns.api::<AIMServiceTemplate>();
    apply(&api, &template(&ns.name, &name, spec)).await;
    let caches = ns.api::<AIMTemplateCache>();
    let cache = wait_for(
        &caches,
        &name,
        "cache Warm",
        WAIT,
        |c: Option<&AIMTemplateCache>| {
            c.and_then(|c| c.status.as_ref())
                .is_some_and(|s| s.status == CachePhase::Warm)
        },
    )
    .await;
    all_label_values_valid(&cache.metadata);
    wait_for(&api, &name, "Ready", WAIT, phase(TemplatePhase::Ready)).await;
}

// S-05: an AIMService of a long dotted name, on a template of a long dotted name, runs: its Deployment
// and Service are named by a DNS label of at most 63 characters, their labels are within 63, and the
// pods are selected by the same transformed value.
#[tokio::test]
async fn a_long_dotted_service_runs_on_a_long_dotted_template() {
    let ns = setup("names-svc", DRY_RUN_OK).await;
    model_m(&ns, serde_json::json!([])).await;
    let tname = long_name("static-template", 200);
    let templates = ns.api::<AIMServiceTemplate>();
    apply(&templates, &static_template(&ns.name, &tname, "MI300X", 1)).await;
    wait_for(
        &templates,
        &tname,
        "Ready",
        WAIT,
        phase(TemplatePhase::Ready),
    )
    .await;
    let sname = long_name("chat", 200);
    let services: Api<AIMService> = ns.api();
    apply(
        &services,
        &aim_service(&ns.name, &sname, serde_json::json!({ "name": "m" })),
    )
    .await;
    wait_for(
        &services,
        &sname,
        "service Running",
        WAIT,
        |s: Option<&AIMService>| {
            s.and_then(|s| s.status.as_ref())
                .is_some_and(|st| st.status == ServicePhase::Running)
        },
    )
    .await;
    let workload = aim_resolve::service::workload_name(&sname);
    assert!(
        is_dns1035_label(&workload) && workload.len() <= 63,
        "{workload}"
    );
    let d = ns.api::<Deployment>().get(&workload).await.unwrap();
    all_label_values_valid(&d.metadata);
    assert_eq!(
        d.annotations()[aim_resolve::service::workload::SERVICE_NAME_ANNOTATION],
        sname
    );
    let s = ns.api::<Service>().get(&workload).await.unwrap();
    all_label_values_valid(&s.metadata);
    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default().labels(&format!(
            "{}={}",
            aim_resolve::service::SERVICE_LABEL,
            aim_resolve::service::service_label_value(&sname)
        )))
        .await
        .unwrap()
        .items;
    assert_eq!(pods.len(), 1);
}
