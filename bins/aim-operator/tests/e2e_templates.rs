//! End-to-end: service templates against the real control plane, with the operator running in-process.

mod common;

use aim_api::conditions::{reasons, types};
use aim_api::*;
use common::*;
use k8s_openapi::api::batch::v1::Job;
use kube::api::ListParams;
use xtask::support::{WAIT, wait_for};

#[tokio::test]
async fn static_sources_are_ready_without_a_job() {
    // T-12, seed example "qwen3-32b-static".
    let ns = setup("static", DRY_RUN_OK).await;
    apply(
        &ns.api(),
        &model(
            &ns.name,
            "qwen-qwen3-32b",
            "example.test/aim-qwen:1",
            serde_json::json!([]),
        ),
    )
    .await;
    let seed = std::fs::read_to_string(format!(
        "{}/../../crates/aim-api/tests/fixtures/seed-aimservicetemplate-qwen3-32b-static.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let mut t: AIMServiceTemplate = serde_saphyr::from_str(&seed).unwrap();
    t.metadata.namespace = Some(ns.name.clone());
    let api = ns.api::<AIMServiceTemplate>();
    apply(&api, &t).await;
    let t = wait_for(
        &api,
        "qwen3-32b-static",
        "Ready",
        WAIT,
        phase(TemplatePhase::Ready),
    )
    .await;
    let s = t.status.unwrap();
    assert_eq!(
        condition(&s, types::DISCOVERED).reason,
        reasons::INLINE_MODEL_SOURCES
    );
    assert_eq!(s.model_sources[0].size_bytes, Some(17_179_869_184), "16Gi");
    assert_eq!(s.model_sources[1].size_bytes, Some(2_097_152), "2Mi");
    assert_eq!(s.profile.as_ref().unwrap()["metadata"]["precision"], "fp16");
    assert_eq!(s.hardware_summary.as_deref(), Some("1 x MI300X"));
    assert!(s.discovery.is_none());
    let jobs = ns.api::<Job>().list(&ListParams::default()).await.unwrap();
    assert!(jobs.items.is_empty(), "T-12: no discovery job, ever");
}

#[tokio::test]
async fn discovery_through_a_canned_dry_run_reaches_ready() {
    // T-13, T-17, T-18 with the seed's namespace template.
    let ns = setup("discover", DRY_RUN_OK).await;
    apply(
        &ns.api(),
        &model(
            &ns.name,
            "qwen-qwen3-32b",
            "example.test/aim-qwen:1",
            serde_json::json!([]),
        ),
    )
    .await;
    let api = ns.api::<AIMServiceTemplate>();
    apply(
        &api,
        &template(
            &ns.name,
            "qwen3-32b-throughput",
            serde_json::json!({
                "modelName": "qwen-qwen3-32b", "metric": "throughput", "precision": "fp8",
                "hardware": { "gpu": { "requests": 2, "model": "MI300X" } },
            }),
        ),
    )
    .await;
    let t = wait_for(
        &api,
        "qwen3-32b-throughput",
        "Ready",
        WAIT,
        phase(TemplatePhase::Ready),
    )
    .await;
    let s = t.status.unwrap();
    let discovered = condition(&s, types::DISCOVERED);
    assert_eq!(
        (discovered.status.as_str(), discovered.reason.as_str()),
        ("True", reasons::DISCOVERY_COMPLETE)
    );
    assert_eq!(s.model_sources.len(), 2);
    assert_eq!(s.model_sources[0].source, "hf://Qwen/Qwen3-32B");
    assert_eq!(s.model_sources[0].size_bytes, Some(16 * 1024 * 1024 * 1024));
    assert_eq!(s.model_sources[1].size_bytes, Some(2_097_152));
    let profile = s.profile.unwrap();
    assert_eq!(profile["extra_key"]["kept"], true, "profile kept verbatim");
    assert_eq!(profile["engine_args"]["max-num-seqs"], 256);
    // T-10: discovery (1 x MI300X) wins over the spec (2 x MI300X).
    assert_eq!(s.hardware_summary.as_deref(), Some("1 x MI300X"));
    let affinity = serde_json::to_string(&s.resolved_node_affinity.unwrap()).unwrap();
    assert!(
        affinity.contains("74a1") && affinity.contains("beta.amd.com/gpu.device-id"),
        "{affinity}"
    );
    // T-13/T-14: the job ran in the template's namespace, with the template as controller owner.
    let job_ref = s.discovery.unwrap().job.unwrap();
    assert_eq!(job_ref.namespace, ns.name);
    let job = ns.api::<Job>().get(&job_ref.name).await.unwrap();
    let owner = &job.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("AIMServiceTemplate", Some(true))
    );
}
