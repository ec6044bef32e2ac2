//! End-to-end: what a person sees of a template besides its phase: events worth reading (T-31), the
//! discovery Job's shape and labels, and inputs that must not re-discover (T-22) or must stay frozen
//! (T-32).

mod common;

use aim_api::conditions::{reasons, types};
use aim_api::*;
use common::*;
use k8s_openapi::api::batch::v1::Job;
use kube::api::ListParams;
use std::time::Duration;
use xtask::support::{WAIT, wait_for};

/// How long a settled namespace is watched for events that should not come.
const QUIET: Duration = Duration::from_secs(4);

#[tokio::test]
async fn a_static_template_records_exactly_one_event_and_none_after_settling() {
    // T-31
    let ns = setup("ev-static", DRY_RUN_OK).await;
    model_m(&ns, serde_json::json!([])).await;
    let api = ns.api::<AIMServiceTemplate>();
    apply(
        &api,
        &template(
            &ns.name,
            "t",
            serde_json::json!({ "modelName": "m", "hardware": { "gpu": { "model": "MI300X" } },
                "modelSources": [{"name": "w", "sourceURI": "hf://a/b"}] }),
        ),
    )
    .await;
    wait_for(&api, "t", "Ready", WAIT, phase(TemplatePhase::Ready)).await;
    // Everything it records, over a window after it settled.
    let events = events_of(&ns, "t", QUIET, |_| false).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let (type_, reason, _, count) = &events[0];
    assert_eq!(
        (type_.as_str(), reason.as_str(), *count),
        ("Normal", "Ready", 1)
    );
}

#[tokio::test]
async fn a_discovery_records_each_step_once_and_a_failure_as_a_warning() {
    // T-31: started, running, Ready; then a failing re-discovery is one Warning; no repeats after.
    let ns = setup("ev-disc", DRY_RUN_OK).await;
    let models = ns.api::<AIMModel>();
    apply(
        &models,
        &model(
            &ns.name,
            "m",
            "example.test/aim-qwen:1",
            serde_json::json!([]),
        ),
    )
    .await;
    let api = ns.api::<AIMServiceTemplate>();
    apply(&api, &template(&ns.name, "t", on_mi300x("m"))).await;
    wait_for(&api, "t", "Ready", WAIT, phase(TemplatePhase::Ready)).await;
    let events = events_of(&ns, "t", WAIT, |l| l.iter().any(|e| e.1 == "Ready")).await;
    let reasons_seen: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    assert!(reasons_seen.contains(&"DiscoveryStarted"), "{events:#?}");
    assert!(
        events.iter().all(|e| e.0 == "Normal" && e.3 == 1),
        "{events:#?}"
    );
    assert!(
        events.len() <= 3,
        "started, maybe running, Ready: {events:#?}"
    );
    // Settled: over a quiet window, nothing more and nothing repeated.
    let later = events_of(&ns, "t", QUIET, |_| false).await;
    assert_eq!(later, events, "no event after settling");
    // A failing re-discovery: Degraded, with one Warning.
    apply(
        &models,
        &model(
            &ns.name,
            "m",
            "example.test/aim-qwen:2",
            serde_json::json!([{"name": "AIM_TEST_OUTCOME", "value": "fail"}]),
        ),
    )
    .await;
    wait_for(&api, "t", "Degraded", WAIT, phase(TemplatePhase::Degraded)).await;
    let events = events_of(&ns, "t", WAIT, |l| {
        l.iter()
            .any(|e| e.0 == "Warning" && e.1 == reasons::DISCOVERY_FAILED)
    })
    .await;
    let warnings: Vec<_> = events.iter().filter(|e| e.0 == "Warning").collect();
    assert_eq!(warnings.len(), 1, "{events:#?}");
    assert!(warnings[0].2.contains("exited with code 1"), "{warnings:?}");
    // It retries with a backoff: a Warning per failed attempt, never more.
    let later = events_of(&ns, "t", QUIET, |_| false).await;
    let attempts = api
        .get("t")
        .await
        .unwrap()
        .status
        .unwrap()
        .discovery
        .unwrap()
        .attempts;
    let warnings: i32 = later.iter().filter(|e| e.0 == "Warning").map(|e| e.3).sum();
    assert!(
        warnings <= attempts,
        "{warnings} Warnings for {attempts} failed attempts: {later:#?}"
    );
}

#[tokio::test]
async fn the_job_carries_the_templates_labels_and_the_configured_resources() {
    // T-14 labels as upstream users expect; api.md `spec.discovery.resources`; a zero GPU count.
    let ns = setup("jobshape", DRY_RUN_OK).await;
    model_m(&ns, serde_json::json!([])).await;
    let rc = default_runtime_config(
        &ns.name,
        serde_json::json!({ "discovery": { "resources": {
            "requests": { "cpu": "500m", "memory": "2Gi" }, "limits": { "memory": "12Gi" } } } }),
    );
    apply(&ns.api(), &rc).await;
    let api = ns.api::<AIMServiceTemplate>();
    let mut t = template(
        &ns.name,
        "t",
        serde_json::json!({ "modelName": "m", "type": "preview",
            "hardware": { "gpu": { "model": "MI300X", "requests": 0 } } }),
    );
    t.metadata.labels = Some(
        [
            ("aim.eai.amd.com/model".to_string(), "qwen3-32b".to_string()),
            ("team".to_string(), "ml".to_string()),
        ]
        .into(),
    );
    apply(&api, &t).await;
    let t = wait_for(&api, "t", "Ready", WAIT, phase(TemplatePhase::Ready)).await;
    let s = t.status.unwrap();
    assert_eq!(
        s.profile.as_ref().unwrap()["metadata"]["type"],
        "preview",
        "spec.type overrides the discovered type"
    );
    let job = ns
        .api::<Job>()
        .get(&s.discovery.unwrap().job.unwrap().name)
        .await
        .unwrap();
    let pod_template = job.spec.unwrap().template;
    for labels in [
        job.metadata.labels.unwrap(),
        pod_template.metadata.unwrap().labels.unwrap(),
    ] {
        assert_eq!(labels["aim.eai.amd.com/model"], "qwen3-32b");
        assert_eq!(labels["app.kubernetes.io/name"], "aim-discovery");
        assert!(
            !labels.contains_key("team"),
            "only aim.eai.amd.com/* labels"
        );
    }
    let c = &pod_template.spec.unwrap().containers[0];
    let r = c.resources.as_ref().unwrap();
    assert_eq!(r.limits.as_ref().unwrap()["memory"].0, "12Gi");
    assert_eq!(r.requests.as_ref().unwrap()["cpu"].0, "500m");
    let names: Vec<&str> = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert!(
        !names.contains(&"AIM_GPU_COUNT"),
        "no AIM_GPU_COUNT=0: {names:?}"
    );
}

#[tokio::test]
async fn a_changed_deadline_does_not_rediscover() {
    // T-22 lists what re-discovers; a runtime config's timeout is not in it.
    let ns = setup("deadline-nochange", DRY_RUN_OK).await;
    model_m(&ns, serde_json::json!([])).await;
    let api = ns.api::<AIMServiceTemplate>();
    apply(&api, &template(&ns.name, "t", on_mi300x("m"))).await;
    let before = wait_for(&api, "t", "Ready", WAIT, phase(TemplatePhase::Ready)).await;
    let hash = before.status.unwrap().discovery.unwrap().inputs_hash;
    let rc = default_runtime_config(
        &ns.name,
        serde_json::json!({ "discovery": { "activeDeadlineSeconds": 1200 } }),
    );
    apply(&ns.api(), &rc).await;
    // The config is seen (status names it) ...
    let t = wait_for(
        &api,
        "t",
        "config resolved",
        WAIT,
        |t: Option<&AIMServiceTemplate>| {
            t.and_then(|t| t.status.as_ref()?.resolved_runtime_config.as_ref())
                .is_some()
        },
    )
    .await;
    // ... and changes nothing else.
    let s = t.status.unwrap();
    assert_eq!(s.status, TemplatePhase::Ready);
    assert_eq!(s.discovery.unwrap().inputs_hash, hash);
    let jobs = ns.api::<Job>().list(&ListParams::default()).await.unwrap();
    assert_eq!(jobs.items.len(), 1, "no second discovery job");
}

#[tokio::test]
async fn pause_freezes_jobs_as_well_as_status() {
    // T-32: a paused template's running discovery is neither replaced nor deleted when its inputs change.
    let ns = setup("pausejobs", DRY_RUN_OK).await;
    let models = ns.api::<AIMModel>();
    let hang = serde_json::json!([{"name": "AIM_TEST_OUTCOME", "value": "hang"}]);
    apply(
        &models,
        &model(&ns.name, "m", "example.test/aim-qwen:1", hang.clone()),
    )
    .await;
    let api = ns.api::<AIMServiceTemplate>();
    let mut t = template(&ns.name, "t", on_mi300x("m"));
    apply(&api, &t).await;
    let running = wait_for(
        &api,
        "t",
        "dry-run running",
        WAIT,
        phase(TemplatePhase::Progressing),
    )
    .await;
    let job = running.status.unwrap().discovery.unwrap().job.unwrap().name;
    t.metadata.annotations = Some(
        [(
            labels::RECONCILIATION_PAUSED.to_string(),
            "true".to_string(),
        )]
        .into(),
    );
    apply(&api, &t).await;
    // A new image is a new input; a sibling on the same model shows the operator acted on it.
    apply(
        &models,
        &model(&ns.name, "m", "example.test/aim-qwen:2", hang),
    )
    .await;
    apply(&api, &template(&ns.name, "sibling", on_mi300x("m"))).await;
    wait_for(
        &api,
        "sibling",
        "running",
        WAIT,
        phase(TemplatePhase::Progressing),
    )
    .await;
    let jobs: Vec<String> = ns
        .api::<Job>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|j| {
            j.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::TEMPLATE))
                .map(String::as_str)
                == Some("t")
                && j.metadata.deletion_timestamp.is_none()
        })
        .filter_map(|j| j.metadata.name)
        .collect();
    assert_eq!(jobs, vec![job], "the paused template's job is untouched");
    let frozen = api.get("t").await.unwrap();
    assert_eq!(frozen.status.unwrap().status, TemplatePhase::Progressing);
    let _ = reasons::READY;
    let _ = types::READY;
}
