//! End-to-end: writes the API server refuses reach the status of the object that asked for them, with the
//! server's message, instead of an endless silent retry (M-03, S-05). The refusals are real: object-count
//! ResourceQuotas of zero, as a platform team sets them to keep a namespace from holding a kind.

mod common;

use aim_api::conditions::{reasons, types};
use aim_api::*;
use common::*;
use k8s_openapi::api::core::v1::ResourceQuota;
use kube::api::{Api, PostParams};
use xtask::support::{TestNamespace, WAIT, wait_for};

/// A quota that allows none of `resource` (`count/<plural>.<group>`) in the namespace.
async fn forbid(ns: &TestNamespace, resource: &str) {
    let quota: ResourceQuota = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "none", "namespace": ns.name },
        "spec": { "hard": { resource: "0" } },
    }))
    .unwrap();
    ns.api::<ResourceQuota>()
        .create(&PostParams::default(), &quota)
        .await
        .unwrap();
    // The quota controller must have counted the namespace before admission enforces the limit.
    wait_for(
        &ns.api::<ResourceQuota>(),
        "none",
        "the quota counted",
        WAIT,
        |q: Option<&ResourceQuota>| {
            q.and_then(|q| q.status.as_ref())
                .and_then(|s| s.used.as_ref())
                .is_some_and(|u| u.contains_key(resource))
        },
    )
    .await;
}

// M-03: a template the API server refuses (here: a quota of zero templates) is in the model's status:
// `TemplatesCreated=False/TemplateRefused` with the server's message, a Warning event, and the model is
// not Ready.
#[tokio::test]
async fn a_refused_template_is_in_the_model_s_status() {
    operator();
    let ns = TestNamespace::new("refused-tpl").await;
    forbid(&ns, "count/aimservicetemplates.aim.eai.amd.com").await;
    let models: Api<AIMModel> = ns.api();
    apply(&models, &inline_model(&ns.name, "m")).await;
    let refused = wait_for(
        &models,
        "m",
        "TemplatesCreated=False/TemplateRefused",
        WAIT,
        |m: Option<&AIMModel>| {
            m.and_then(|m| m.status.as_ref()).is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == types::TEMPLATES_CREATED
                        && c.status == "False"
                        && c.reason == reasons::TEMPLATE_REFUSED
                })
            })
        },
    )
    .await;
    let st = refused.status.unwrap();
    let c = st
        .conditions
        .iter()
        .find(|c| c.type_ == types::TEMPLATES_CREATED)
        .unwrap();
    assert!(
        c.message.contains("exceeded quota"),
        "the server's message: {}",
        c.message
    );
    assert_ne!(st.status, ModelPhase::Ready, "{st:?}");
    let refused_warning = |events: &[(String, String, String, i32)]| {
        events
            .iter()
            .any(|(kind, reason, _, _)| kind == "Warning" && reason == reasons::TEMPLATE_REFUSED)
    };
    let events = events_of(&ns, "m", WAIT, refused_warning).await;
    assert!(refused_warning(&events), "a Warning event: {events:?}");
}

// S-05: a Deployment the API server refuses (a quota of zero Deployments) makes the service `Failed`
// with `WorkloadRefused` and the server's message, not `Starting` for ever.
#[tokio::test]
async fn a_refused_workload_is_in_the_service_s_status() {
    operator();
    let ns = setup("refused-wl", DRY_RUN_OK).await;
    forbid(&ns, "count/deployments.apps").await;
    model_m(&ns, serde_json::json!([])).await;
    let templates = ns.api::<AIMServiceTemplate>();
    apply(&templates, &static_template(&ns.name, "t", "MI300X", 1)).await;
    wait_for(&templates, "t", "Ready", WAIT, phase(TemplatePhase::Ready)).await;
    let services: Api<AIMService> = ns.api();
    apply(
        &services,
        &aim_service(&ns.name, "chat", serde_json::json!({ "name": "m" })),
    )
    .await;
    let failed = wait_for(
        &services,
        "chat",
        "Failed with WorkloadRefused",
        WAIT,
        |s: Option<&AIMService>| {
            s.and_then(|s| s.status.as_ref()).is_some_and(|st| {
                st.status == ServicePhase::Failed
                    && st
                        .conditions
                        .iter()
                        .any(|c| c.status == "False" && c.reason == reasons::WORKLOAD_REFUSED)
            })
        },
    )
    .await;
    let st = failed.status.unwrap();
    let c = st
        .conditions
        .iter()
        .find(|c| c.reason == reasons::WORKLOAD_REFUSED)
        .unwrap();
    assert!(
        c.message.contains("exceeded quota"),
        "the server's message: {}",
        c.message
    );
}
