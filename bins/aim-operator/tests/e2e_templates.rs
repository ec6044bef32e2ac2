//! End-to-end: service templates against the real control plane, with the operator running in-process.

mod common;

use aim_api::conditions::{reasons, types};
use aim_api::*;
use common::*;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
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

#[tokio::test]
async fn cluster_template_discovers_in_the_operator_namespace() {
    // T-01 (cluster model), T-13: discovery of a cluster template runs in the operator namespace.
    let ns = setup("cluster", DRY_RUN_OK).await;
    let client = ns.client.clone();
    let name = format!("{}-latency", ns.name);
    let models: Api<AIMClusterModel> = Api::all(client.clone());
    apply(&models, &cluster_model(&name, "example.test/aim-qwen:1")).await;
    let api: Api<AIMClusterServiceTemplate> = Api::all(client.clone());
    let t = cluster_template(
        &name,
        serde_json::json!({
            "modelName": name, "metric": "latency", "precision": "fp16", "hardware": { "gpu": { "requests": 1, "model": "MI300X" } },
        }),
    );
    apply(&api, &t).await;
    let t = wait_for(&api, &name, "Ready", WAIT, phase(TemplatePhase::Ready)).await;
    let s = t.status.unwrap();
    assert_eq!(
        s.resolved_model.as_ref().unwrap().scope,
        ReferenceScope::Cluster
    );
    assert_eq!(
        s.discovery.unwrap().job.unwrap().namespace,
        SYSTEM_NAMESPACE
    );
    // Deleting the template deletes its job (owner reference).
    let job_name = {
        let jobs: Api<Job> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
        let l = jobs
            .list(&ListParams::default().labels(&format!("aim.eai.amd.com/template={name}")))
            .await
            .unwrap();
        assert_eq!(l.items.len(), 1);
        l.items[0].metadata.name.clone().unwrap()
    };
    xtask::support::delete_and_wait(&api, &name).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    xtask::support::wait_gone(&jobs, &job_name, "job deleted with its template", WAIT).await;
    models.delete(&name, &Default::default()).await.unwrap();
}

#[tokio::test]
async fn namespace_template_falls_back_to_a_cluster_model() {
    // T-01 (fix): a namespace template may use an AIMClusterModel.
    let ns = setup("fallback", DRY_RUN_OK).await;
    let models: Api<AIMClusterModel> = Api::all(ns.client.clone());
    let name = format!("{}-model", ns.name);
    apply(&models, &cluster_model(&name, "example.test/aim-qwen:1")).await;
    let api = ns.api::<AIMServiceTemplate>();
    apply(&api, &template(&ns.name, "t", on_mi300x(&name))).await;
    let t = wait_for(&api, "t", "Ready", WAIT, phase(TemplatePhase::Ready)).await;
    let r = t.status.unwrap().resolved_model.unwrap();
    assert_eq!(
        (r.kind.as_str(), r.scope, r.namespace),
        ("AIMClusterModel", ReferenceScope::Cluster, None)
    );
    models.delete(&name, &Default::default()).await.unwrap();
}

#[tokio::test]
async fn missing_model_fails_and_heals_when_created() {
    // T-02
    let ns = setup("nomodel", DRY_RUN_OK).await;
    let api = ns.api::<AIMServiceTemplate>();
    apply(&api, &template(&ns.name, "t", on_mi300x("later"))).await;
    let t = wait_for(
        &api,
        "t",
        "Failed/ModelNotFound",
        WAIT,
        phase_with(
            TemplatePhase::Failed,
            types::MODEL_FOUND,
            reasons::MODEL_NOT_FOUND,
        ),
    )
    .await;
    let s = t.status.unwrap();
    assert_eq!(condition(&s, types::READY).reason, reasons::MODEL_NOT_FOUND);
    assert!(
        condition(&s, types::MODEL_FOUND)
            .message
            .contains("no AIMModel \"later\"")
    );
    assert!(
        ns.api::<Job>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "no child object"
    );
    apply(
        &ns.api(),
        &model(
            &ns.name,
            "later",
            "example.test/aim-qwen:1",
            serde_json::json!([]),
        ),
    )
    .await;
    wait_for(
        &api,
        "t",
        "healed to Ready",
        WAIT,
        phase(TemplatePhase::Ready),
    )
    .await;
}

#[tokio::test]
async fn runtime_configs_resolve_and_a_missing_named_one_heals() {
    // T-03, T-04
    let ns = setup("rc", DRY_RUN_OK).await;
    model_m(&ns, serde_json::json!([])).await;
    let api = ns.api::<AIMServiceTemplate>();
    apply(&api, &template(&ns.name, "default-rc", serde_json::json!({ "modelName": "m", "modelSources": [{"name": "w", "sourceURI": "hf://a/b"}] }))).await;
    let t = wait_for(
        &api,
        "default-rc",
        "Ready",
        WAIT,
        phase(TemplatePhase::Ready),
    )
    .await;
    let rc = condition(t.status.as_ref().unwrap(), types::RUNTIME_CONFIG_READY);
    assert_eq!(
        (rc.status.as_str(), rc.reason.as_str()),
        ("True", reasons::DEFAULT_CONFIG_NOT_FOUND)
    );

    apply(&api, &template(&ns.name, "named", serde_json::json!({ "modelName": "m", "runtimeConfigName": "team", "modelSources": [{"name": "w", "sourceURI": "hf://a/b"}] }))).await;
    wait_for(
        &api,
        "named",
        "Failed/RuntimeConfigNotFound",
        WAIT,
        phase_with(
            TemplatePhase::Failed,
            types::RUNTIME_CONFIG_READY,
            reasons::RUNTIME_CONFIG_NOT_FOUND,
        ),
    )
    .await;
    let rc: AIMRuntimeConfig = serde_json::from_value(serde_json::json!({
        "apiVersion": "aim.eai.amd.com/v1alpha1", "kind": "AIMRuntimeConfig",
        "metadata": { "name": "team", "namespace": ns.name },
        "spec": { "env": [{"name": "HF_HOME", "value": "/cache"}] },
    }))
    .unwrap();
    apply(&ns.api(), &rc).await;
    let t = wait_for(
        &api,
        "named",
        "healed to Ready",
        WAIT,
        phase(TemplatePhase::Ready),
    )
    .await;
    let r = t.status.unwrap().resolved_runtime_config.unwrap();
    assert_eq!(
        (r.name.as_str(), r.scope),
        ("team", ReferenceScope::Namespace)
    );
}

#[tokio::test]
async fn absent_gpus_are_not_available_and_recover_when_a_node_appears() {
    // T-06, T-11: a GPU the cluster lacks; a node with it appears, then goes.
    let ns = setup("gpu", DRY_RUN_OK).await;
    model_m(&ns, serde_json::json!([])).await;
    let api = ns.api::<AIMServiceTemplate>();
    apply(
        &api,
        &template(
            &ns.name,
            "mi210",
            serde_json::json!({
                "modelName": "m", "hardware": { "gpu": { "requests": 1, "model": "MI210" } },
                "modelSources": [{"name": "w", "sourceURI": "hf://a/b"}],
            }),
        ),
    )
    .await;
    let t = wait_for(
        &api,
        "mi210",
        "NotAvailable",
        WAIT,
        phase_with(
            TemplatePhase::NotAvailable,
            types::HARDWARE_AVAILABLE,
            reasons::GPU_NOT_AVAILABLE,
        ),
    )
    .await;
    let msg = &condition(t.status.as_ref().unwrap(), types::HARDWARE_AVAILABLE).message;
    assert!(
        msg.contains("the cluster has ")
            && msg.contains("MI300X")
            && msg.contains("MI325X")
            && !msg.contains("node)")
            && !msg.contains("nodes)"),
        "lists what is present, without node counts (a count would rewrite every template when a node comes or goes): {msg}"
    );

    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(ns.client.clone());
    let node_name = format!("mi210-{}", ns.name);
    let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(serde_json::json!({
        "metadata": { "name": node_name, "annotations": { "kwok.x-k8s.io/node": "fake" },
                      "labels": { "amd.com/gpu.device-id.740f": "4", "type": "kwok" } },
        "status": { "allocatable": { "cpu": "32", "memory": "128Gi", "pods": "110", "amd.com/gpu": "4" },
                    "capacity": { "cpu": "32", "memory": "128Gi", "pods": "110", "amd.com/gpu": "4" } },
    }))
    .unwrap();
    nodes.create(&Default::default(), &node).await.unwrap();
    let t = wait_for(
        &api,
        "mi210",
        "Ready once the GPU appears",
        WAIT,
        phase(TemplatePhase::Ready),
    )
    .await;
    let affinity = serde_json::to_string(&t.status.unwrap().resolved_node_affinity).unwrap();
    assert!(
        affinity.contains("amd.com/gpu.device-id.740f"),
        "count-suffixed label form: {affinity}"
    );
    nodes.delete(&node_name, &Default::default()).await.unwrap();
    wait_for(
        &api,
        "mi210",
        "NotAvailable once the node goes",
        WAIT,
        phase(TemplatePhase::NotAvailable),
    )
    .await;

    // T-31: the node comes back, and the template is Ready again. The second Ready is the same event as
    // the first (same reason and note, minutes apart at most): one Event object whose series counts 2,
    // as `kubectl describe` shows it, not a second object.
    nodes.create(&Default::default(), &node).await.unwrap();
    wait_for(
        &api,
        "mi210",
        "Ready again",
        WAIT,
        phase(TemplatePhase::Ready),
    )
    .await;
    nodes.delete(&node_name, &Default::default()).await.unwrap();
    // The event follows the status write; give it the usual time.
    let ready_counts = |events: &[(String, String, String, i32)]| -> Vec<i32> {
        events
            .iter()
            .filter(|(_, reason, _, _)| reason == "Ready")
            .map(|(_, _, _, count)| *count)
            .collect()
    };
    let events = events_of(&ns, "mi210", WAIT, |l| ready_counts(l) == [2]).await;
    assert_eq!(
        ready_counts(&events),
        [2],
        "one Ready event with a series of two (counts per Event object): {events:#?}"
    );
}

#[tokio::test]
async fn vram_and_gpu_count_requirements() {
    // T-07, T-08
    let ns = setup("vram", DRY_RUN_OK).await;
    model_m(&ns, serde_json::json!([])).await;
    let api = ns.api::<AIMServiceTemplate>();
    let sources = serde_json::json!([{"name": "w", "sourceURI": "hf://a/b"}]);
    apply(&api, &template(&ns.name, "big", serde_json::json!({ "modelName": "m", "hardware": { "gpu": { "minVram": "200Gi" } }, "modelSources": sources }))).await;
    // These two would discover (no static sources): NotAvailable must stop that (T-06).
    apply(
        &api,
        &template(
            &ns.name,
            "huge",
            serde_json::json!({ "modelName": "m", "hardware": { "gpu": { "minVram": "300Gi" } } }),
        ),
    )
    .await;
    apply(&api, &template(&ns.name, "many", serde_json::json!({ "modelName": "m", "hardware": { "gpu": { "requests": 16, "model": "MI300X" } } }))).await;
    let t = wait_for(&api, "big", "Ready", WAIT, phase(TemplatePhase::Ready)).await;
    let s = t.status.unwrap();
    assert_eq!(s.hardware_summary.as_deref(), Some("1 x GPU"));
    let affinity = serde_json::to_string(&s.resolved_node_affinity).unwrap();
    assert!(
        affinity.contains("74a5") && !affinity.contains("74a1"),
        "only MI325X has 256Gi: {affinity}"
    );
    let t = wait_for(
        &api,
        "huge",
        "VRAMNotAvailable",
        WAIT,
        phase_with(
            TemplatePhase::NotAvailable,
            types::HARDWARE_AVAILABLE,
            reasons::VRAM_NOT_AVAILABLE,
        ),
    )
    .await;
    assert!(
        condition(t.status.as_ref().unwrap(), types::HARDWARE_AVAILABLE)
            .message
            .contains("256Gi")
    );
    wait_for(
        &api,
        "many",
        "InsufficientGPUsPerNode",
        WAIT,
        phase_with(
            TemplatePhase::NotAvailable,
            types::HARDWARE_AVAILABLE,
            reasons::INSUFFICIENT_GPUS_PER_NODE,
        ),
    )
    .await;
    assert!(
        ns.api::<Job>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "T-06: no discovery while NotAvailable"
    );
}

#[tokio::test]
async fn malformed_dry_run_output_fails_discovery() {
    // T-19
    let ns = setup(
        "malformed",
        "banner\n[{\"profile\": {\"metadata\": {\"metric\": \"latency\"}}, \"models\": [\n",
    )
    .await;
    model_m(&ns, serde_json::json!([])).await;
    let api = ns.api::<AIMServiceTemplate>();
    apply(&api, &template(&ns.name, "t", on_mi300x("m"))).await;
    let t = wait_for(
        &api,
        "t",
        "Failed/DiscoveryFailed",
        WAIT,
        discovery_failed(),
    )
    .await;
    let s = t.status.unwrap();
    let msg = &condition(&s, types::DISCOVERED).message;
    assert!(
        msg.contains("not valid JSON") && msg.contains("retry after a 2s backoff"),
        "{msg}"
    );
    assert!(
        s.model_sources.is_empty() && s.profile.is_none(),
        "nothing partial is written"
    );
    assert_eq!(s.discovery.unwrap().attempts, 1);
}

#[tokio::test]
async fn failing_pod_fails_and_retries_by_itself() {
    // T-20, T-21: the pod exits 1; attempts grow without any outside event.
    let ns = setup("podfail", DRY_RUN_OK).await;
    model_m(
        &ns,
        serde_json::json!([{"name": "AIM_TEST_OUTCOME", "value": "fail"}]),
    )
    .await;
    let api = ns.api::<AIMServiceTemplate>();
    apply(&api, &template(&ns.name, "t", on_mi300x("m"))).await;
    let t = wait_for(&api, "t", "Failed", WAIT, discovery_failed()).await;
    let msg = condition(t.status.as_ref().unwrap(), types::DISCOVERED)
        .message
        .clone();
    assert!(
        msg.contains("exited with code 1") && msg.contains("attempt 1 failed"),
        "{msg}"
    );
    let retried = |t: Option<&AIMServiceTemplate>| {
        t.and_then(|t| t.status.as_ref()?.discovery.as_ref())
            .is_some_and(|d| d.attempts >= 2)
    };
    let t = wait_for(
        &api,
        "t",
        "a second attempt, scheduled by the operator",
        WAIT,
        retried,
    )
    .await;
    let d = t.status.unwrap().discovery.unwrap();
    assert!(d.last_failure.unwrap().contains("exited with code 1"));
}

#[tokio::test]
async fn image_pull_errors_free_the_slot_and_say_why() {
    // T-20: a job stuck on its image is deleted.
    let ns = setup("pull", DRY_RUN_OK).await;
    apply(
        &ns.api(),
        &model(
            &ns.name,
            "m",
            "example.test/missing:1",
            serde_json::json!([{"name": "AIM_TEST_OUTCOME", "value": "pull-error"}]),
        ),
    )
    .await;
    let api = ns.api::<AIMServiceTemplate>();
    apply(&api, &template(&ns.name, "t", on_mi300x("m"))).await;
    let t = wait_for(&api, "t", "Failed", WAIT, discovery_failed()).await;
    let msg = condition(t.status.as_ref().unwrap(), types::DISCOVERED)
        .message
        .clone();
    assert!(
        msg.contains("ImagePullBackOff") && msg.contains("missing image"),
        "{msg}"
    );
    let job = t.status.unwrap().discovery.unwrap().job.unwrap().name;
    xtask::support::wait_gone(&ns.api::<Job>(), &job, "stuck job deleted", WAIT).await;
}

#[tokio::test]
async fn restricted_namespaces_admit_the_discovery_pod() {
    // T-16
    operator();
    let labels = std::collections::BTreeMap::from([(
        "pod-security.kubernetes.io/enforce".to_string(),
        "restricted".to_string(),
    )]);
    let ns = xtask::support::TestNamespace::with_labels("restricted", labels).await;
    ns.discovery_logs(DRY_RUN_OK).await;
    model_m(&ns, serde_json::json!([])).await;
    let api = ns.api::<AIMServiceTemplate>();
    apply(&api, &template(&ns.name, "t", on_mi300x("m"))).await;
    wait_for(&api, "t", "Ready", WAIT, phase(TemplatePhase::Ready)).await;
}

#[tokio::test]
async fn changed_inputs_rediscover_and_a_failed_rediscovery_degrades() {
    // T-22, T-24, T-25
    let ns = setup("rediscover", DRY_RUN_OK).await;
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
    // The spec asks for 2 GPUs; the dry-run found a profile for 1 (T-10: discovery wins).
    let spec = serde_json::json!({ "modelName": "m", "hardware": { "gpu": { "model": "MI300X", "requests": 2 } } });
    apply(&api, &template(&ns.name, "t", spec)).await;
    let first = wait_for(&api, "t", "Ready", WAIT, phase(TemplatePhase::Ready)).await;
    let hardware = |s: &ServiceTemplateStatus| {
        (
            s.hardware_summary.clone(),
            serde_json::to_string(&s.resolved_node_affinity).unwrap(),
            s.resolved_hardware.clone(),
        )
    };
    let in_use = hardware(first.status.as_ref().unwrap());
    assert_eq!(in_use.0.as_deref(), Some("1 x MI300X"));
    // A re-discovery that does not finish: the template stays usable with what it has (T-22).
    apply(
        &models,
        &model(
            &ns.name,
            "m",
            "example.test/aim-qwen:0",
            serde_json::json!([{"name": "AIM_TEST_OUTCOME", "value": "hang"}]),
        ),
    )
    .await;
    let t = wait_for(
        &api,
        "t",
        "re-discovery running",
        WAIT,
        phase_with(
            TemplatePhase::Ready,
            types::DISCOVERED,
            reasons::AWAITING_DISCOVERY,
        ),
    )
    .await;
    let s = t.status.unwrap();
    assert_eq!(condition(&s, types::DISCOVERED).status, "False");
    assert!(
        condition(&s, types::DISCOVERED)
            .message
            .contains("re-discovery")
    );
    assert_eq!(condition(&s, types::READY).status, "True");
    assert_eq!(
        hardware(&s),
        in_use,
        "T-10/T-22: the hardware of the profile in use stays"
    );
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
    wait_for(
        &api,
        "t",
        "discovered again for the first image",
        WAIT,
        phase_with(
            TemplatePhase::Ready,
            types::DISCOVERED,
            reasons::DISCOVERY_COMPLETE,
        ),
    )
    .await;
    let first = api.get("t").await.unwrap();
    let first_hash = first
        .status
        .as_ref()
        .unwrap()
        .discovery
        .as_ref()
        .unwrap()
        .inputs_hash
        .clone()
        .unwrap();
    // A new image is a new input: a new discovery runs and completes.
    apply(
        &models,
        &model(
            &ns.name,
            "m",
            "example.test/aim-qwen:2",
            serde_json::json!([]),
        ),
    )
    .await;
    let rediscovered = |t: Option<&AIMServiceTemplate>| {
        t.and_then(|t| t.status.as_ref()).is_some_and(|s| {
            s.status == TemplatePhase::Ready
                && s.discovery.as_ref().and_then(|d| d.inputs_hash.as_deref())
                    != Some(first_hash.as_str())
                && s.conditions.iter().any(|c| {
                    c.type_ == types::DISCOVERED && c.reason == reasons::DISCOVERY_COMPLETE
                })
        })
    };
    wait_for(
        &api,
        "t",
        "re-discovered for the new image",
        WAIT,
        rediscovered,
    )
    .await;
    let jobs = ns.api::<Job>().list(&ListParams::default()).await.unwrap();
    let live: Vec<_> = jobs
        .items
        .iter()
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .collect();
    assert_eq!(
        live.len(),
        1,
        "T-24: the job of the older inputs was deleted"
    );
    // Now the image fails: the template keeps its results and is Degraded.
    apply(
        &models,
        &model(
            &ns.name,
            "m",
            "example.test/aim-qwen:3",
            serde_json::json!([{"name": "AIM_TEST_OUTCOME", "value": "fail"}]),
        ),
    )
    .await;
    let t = wait_for(
        &api,
        "t",
        "Degraded",
        WAIT,
        phase_with(
            TemplatePhase::Degraded,
            types::DISCOVERED,
            reasons::DISCOVERY_FAILED,
        ),
    )
    .await;
    let s = t.status.unwrap();
    assert_eq!(s.model_sources.len(), 2, "old results kept");
    assert_eq!(hardware(&s), in_use, "and the hardware they were found for");
}

#[tokio::test]
async fn discovery_job_env_pull_secrets_and_service_account() {
    // T-14, T-15: env order, template pull secrets and service account win over the model's.
    let ns = setup("jobenv", DRY_RUN_OK).await;
    let mut m = model(
        &ns.name,
        "m",
        "example.test/aim-qwen:1",
        serde_json::json!([{"name": "MODEL_ONLY", "value": "1"}, {"name": "SHARED", "value": "model"}]),
    );
    m.spec.common.image_pull_secrets = vec![k8s_openapi::api::core::v1::LocalObjectReference {
        name: "model-pull".into(),
    }];
    m.spec.common.service_account_name = Some("model-sa".into());
    apply(&ns.api(), &m).await;
    // The Job controller creates the pod only when its service account exists.
    let sa: k8s_openapi::api::core::v1::ServiceAccount = serde_json::from_value(
        serde_json::json!({"metadata": {"name": "team-sa", "namespace": ns.name}}),
    )
    .unwrap();
    apply(&ns.api(), &sa).await;
    let api = ns.api::<AIMServiceTemplate>();
    apply(&api, &template(&ns.name, "t", serde_json::json!({
        "modelName": "m", "metric": "latency", "precision": "fp8", "profileId": "p-1",
        "hardware": { "gpu": { "requests": 2, "model": "mi300x" } },
        "imagePullSecrets": [{"name": "team-pull"}], "serviceAccountName": "team-sa",
        "env": [{"name": "SHARED", "value": "template"}, {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}],
    }))).await;
    let t = wait_for(&api, "t", "Ready", WAIT, phase(TemplatePhase::Ready)).await;
    let job = ns
        .api::<Job>()
        .get(&t.status.unwrap().discovery.unwrap().job.unwrap().name)
        .await
        .unwrap();
    let labels = job.metadata.labels.clone().unwrap();
    assert_eq!(labels["aim.eai.amd.com/template"], "t");
    assert_eq!(labels["aim.eai.amd.com/template-scope"], "Namespace");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "aim-operator");
    assert_eq!(labels["app.kubernetes.io/component"], "discovery");
    let spec = job.spec.unwrap();
    assert_eq!(
        (
            spec.backoff_limit,
            spec.ttl_seconds_after_finished,
            spec.active_deadline_seconds
        ),
        (Some(0), Some(600), Some(600))
    );
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(pod.service_account_name.as_deref(), Some("team-sa"));
    assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "team-pull");
    let c = &pod.containers[0];
    assert_eq!(
        (c.name.as_str(), c.args.clone().unwrap()),
        (
            "discovery",
            vec!["dry-run".to_string(), "--format=json".to_string()]
        )
    );
    let env: Vec<(String, Option<String>)> = c
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.value))
        .collect();
    let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "AIM_LOG_LEVEL_ROOT",
            "AIM_LOG_LEVEL",
            "MODEL_ONLY",
            "SHARED",
            "HF_TOKEN",
            "AIM_METRIC",
            "AIM_PRECISION",
            "AIM_GPU_MODEL",
            "AIM_GPU_COUNT",
            "AIM_PROFILE_ID"
        ]
    );
    let value = |n: &str| {
        env.iter()
            .find(|(k, _)| k == n)
            .and_then(|(_, v)| v.clone())
    };
    assert_eq!(
        value("SHARED").as_deref(),
        Some("template"),
        "later entries win"
    );
    assert_eq!(value("AIM_GPU_MODEL").as_deref(), Some("MI300X"));
    assert_eq!(value("AIM_GPU_COUNT").as_deref(), Some("2"));
    assert!(
        c.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .is_none_or(|r| !r.contains_key("amd.com/gpu")),
        "no GPU requests"
    );
    assert!(pod.affinity.is_none(), "no node affinity");
}

#[tokio::test]
async fn a_settled_template_is_not_rewritten() {
    // T-30: a Ready template whose world does not change is not written again. A second template that
    // settles afterwards gives any write loop time to show.
    let ns = setup("stable", DRY_RUN_OK).await;
    model_m(&ns, serde_json::json!([])).await;
    let api = ns.api::<AIMServiceTemplate>();
    apply(&api, &template(&ns.name, "a", on_mi300x("m"))).await;
    let a = wait_for(&api, "a", "Ready", WAIT, phase(TemplatePhase::Ready)).await;
    let rv = a.metadata.resource_version.clone();
    // An unrelated metadata change triggers a reconcile that must not write.
    let patch = serde_json::json!({"metadata": {"labels": {"team": "x"}}});
    let labelled = api
        .patch(
            "a",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    apply(&api, &template(&ns.name, "b", on_mi300x("m"))).await;
    wait_for(&api, "b", "Ready", WAIT, phase(TemplatePhase::Ready)).await;
    let a = api.get("a").await.unwrap();
    assert_ne!(rv, labelled.metadata.resource_version);
    assert_eq!(
        a.metadata.resource_version, labelled.metadata.resource_version,
        "status rewritten without a change"
    );
}

#[tokio::test]
async fn paused_templates_are_frozen() {
    // T-32: a paused template keeps its status when its model goes; a sibling shows the change was seen.
    let ns = setup("paused", DRY_RUN_OK).await;
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
    let sources = serde_json::json!([{"name": "w", "sourceURI": "hf://a/b"}]);
    let mut paused = template(
        &ns.name,
        "paused",
        serde_json::json!({ "modelName": "m", "modelSources": sources }),
    );
    apply(&api, &paused).await;
    wait_for(&api, "paused", "Ready", WAIT, phase(TemplatePhase::Ready)).await;
    paused.metadata.annotations = Some(
        [(
            labels::RECONCILIATION_PAUSED.to_string(),
            "true".to_string(),
        )]
        .into(),
    );
    apply(&api, &paused).await;
    apply(
        &api,
        &template(
            &ns.name,
            "sibling",
            serde_json::json!({ "modelName": "m", "modelSources": sources }),
        ),
    )
    .await;
    wait_for(&api, "sibling", "Ready", WAIT, phase(TemplatePhase::Ready)).await;
    models.delete("m", &Default::default()).await.unwrap();
    wait_for(
        &api,
        "sibling",
        "Failed",
        WAIT,
        phase(TemplatePhase::Failed),
    )
    .await;
    let t = api.get("paused").await.unwrap();
    assert_eq!(
        t.status.unwrap().status,
        TemplatePhase::Ready,
        "paused template frozen"
    );
    // Unpaused, it catches up.
    paused.metadata.annotations = Some(
        [(
            labels::RECONCILIATION_PAUSED.to_string(),
            "false".to_string(),
        )]
        .into(),
    );
    apply(&api, &paused).await;
    wait_for(
        &api,
        "paused",
        "Failed once unpaused",
        WAIT,
        phase(TemplatePhase::Failed),
    )
    .await;
}

#[tokio::test]
async fn edge_nodes_mi355x_family_label_and_no_allocatable_gpus() {
    // T-05, T-06, T-08, T-09, T-11 with nodes that only exist during this test.
    // The MI355X template discovers (its dry-run picks an MI355X profile); the others have static sources.
    let ns = setup("edgenodes", &DRY_RUN_OK.replace("MI300X", "MI355X")).await;
    model_m(&ns, serde_json::json!([])).await;
    let api = ns.api::<AIMServiceTemplate>();
    let gpu = |model: &str, requests: i32| {
        serde_json::json!({ "modelName": "m", "hardware": { "gpu": { "model": model, "requests": requests } },
            "modelSources": [{"name": "w", "sourceURI": "hf://a/b"}] })
    };
    let discovering =
        serde_json::json!({ "modelName": "m", "hardware": { "gpu": { "model": "MI355X" } } });
    apply(&api, &template(&ns.name, "mi355x", discovering)).await;
    apply(&api, &template(&ns.name, "mi250x", gpu("MI250X", 1))).await;
    apply(&api, &template(&ns.name, "v710", gpu("V710", 1))).await;
    apply(&api, &template(&ns.name, "v710-shared", gpu("V710", 0))).await;
    for name in ["mi355x", "mi250x", "v710", "v710-shared"] {
        wait_for(
            &api,
            name,
            "NotAvailable",
            WAIT,
            phase(TemplatePhase::NotAvailable),
        )
        .await;
    }
    assert!(
        ns.api::<Job>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "T-06: no discovery while NotAvailable"
    );
    let suffix = ns.name.clone();
    use xtask::support::{FakeNode, label_map};
    let mi355x = FakeNode::mi355x(&suffix).await;
    let _family = FakeNode::family_only(&suffix).await;
    // GPU labels, and a device plugin that reports no allocatable GPU (`amd.com/gpu: 0`).
    let _v710 = FakeNode::new(
        &format!("v710-{suffix}"),
        label_map([("amd.com/gpu.device-id", "7460")]),
        Some(0),
    )
    .await;
    // The MI355X node appears: its template discovers and becomes Ready (T-11).
    let t = wait_for(&api, "mi355x", "Ready", WAIT, phase(TemplatePhase::Ready)).await;
    let affinity = serde_json::to_string(&t.status.unwrap().resolved_node_affinity).unwrap();
    assert!(affinity.contains("75a3"), "{affinity}");
    // A node known only by its family label counts, and the affinity can match it (T-05, T-09).
    let t = wait_for(&api, "mi250x", "Ready", WAIT, phase(TemplatePhase::Ready)).await;
    let affinity =
        serde_json::to_string(&t.status.as_ref().unwrap().resolved_node_affinity).unwrap();
    assert!(
        affinity.contains("amd.com/gpu.family") && affinity.contains("MI250X"),
        "{affinity} {:#?}",
        t.status
    );
    // GPU labels without allocatable GPUs do not run a template that needs one (T-08), but do run one
    // that consumes none.
    let shared = wait_for(
        &api,
        "v710-shared",
        "Ready",
        WAIT,
        phase(TemplatePhase::Ready),
    )
    .await;
    assert_eq!(
        shared.status.unwrap().hardware_summary.as_deref(),
        Some("V710 node"),
        "requests: 0 consumes no GPU"
    );
    let t = wait_for(
        &api,
        "v710",
        "InsufficientGPUsPerNode",
        WAIT,
        phase_with(
            TemplatePhase::NotAvailable,
            types::HARDWARE_AVAILABLE,
            reasons::INSUFFICIENT_GPUS_PER_NODE,
        ),
    )
    .await;
    assert!(
        condition(t.status.as_ref().unwrap(), types::HARDWARE_AVAILABLE)
            .message
            .contains("is 0"),
        "{:?}",
        t.status
    );
    // The MI355X node goes: NotAvailable again.
    drop(mi355x);
    wait_for(
        &api,
        "mi355x",
        "NotAvailable again",
        WAIT,
        phase(TemplatePhase::NotAvailable),
    )
    .await;
}

#[tokio::test]
async fn templates_in_one_namespace_read_their_own_dry_runs() {
    // T-17, T-18: each template's Job prints its own log (per-pod canned logs, not one per namespace).
    operator();
    let ns = xtask::support::TestNamespace::new("perlog").await;
    model_m(
        &ns,
        serde_json::json!([{"name": "AIM_TEST_LOG_GATE", "value": "1"}]),
    )
    .await;
    let _a =
        xtask::support::canned_logs_for_template(&ns.client, &ns.name, "a", DRY_RUN_OK.as_bytes())
            .await;
    let other = DRY_RUN_OK.replace("hf://Qwen/Qwen3-32B\"", "hf://Qwen/Qwen3-32B-FP8\"");
    let _b =
        xtask::support::canned_logs_for_template(&ns.client, &ns.name, "b", other.as_bytes()).await;
    let api = ns.api::<AIMServiceTemplate>();
    apply(&api, &template(&ns.name, "a", on_mi300x("m"))).await;
    apply(&api, &template(&ns.name, "b", on_mi300x("m"))).await;
    let a = wait_for(&api, "a", "Ready", WAIT, phase(TemplatePhase::Ready)).await;
    let b = wait_for(&api, "b", "Ready", WAIT, phase(TemplatePhase::Ready)).await;
    assert_eq!(
        a.status.unwrap().model_sources[0].source,
        "hf://Qwen/Qwen3-32B"
    );
    assert_eq!(
        b.status.unwrap().model_sources[0].source,
        "hf://Qwen/Qwen3-32B-FP8"
    );
}

#[tokio::test]
async fn a_running_dry_run_is_progressing_until_it_completes() {
    // T-29: Progressing while the dry-run runs (here it takes 3 s), then Ready.
    let ns = setup("slowrun", DRY_RUN_OK).await;
    model_m(
        &ns,
        serde_json::json!([
            {"name": "AIM_TEST_OUTCOME", "value": "complete-after"},
            {"name": "AIM_TEST_COMPLETE_AFTER", "value": "3s"},
        ]),
    )
    .await;
    let api = ns.api::<AIMServiceTemplate>();
    apply(&api, &template(&ns.name, "t", on_mi300x("m"))).await;
    let t = wait_for(
        &api,
        "t",
        "Progressing",
        WAIT,
        phase(TemplatePhase::Progressing),
    )
    .await;
    let running_since = std::time::Instant::now();
    assert!(
        condition(t.status.as_ref().unwrap(), types::DISCOVERED)
            .message
            .contains("dry-run running"),
        "{:?}",
        t.status
    );
    wait_for(&api, "t", "Ready", WAIT, phase(TemplatePhase::Ready)).await;
    assert!(
        running_since.elapsed() >= std::time::Duration::from_secs(2),
        "the 3 s dry-run took its time"
    );
}
