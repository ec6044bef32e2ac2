//! End-to-end: the API layer on the real kube-apiserver. CRDs are installed by `cargo xtask cluster up`.

use aim_api::*;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::conditions;
use std::collections::BTreeMap;
use xtask::support::{TestNamespace, WAIT, client, wait_for};

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/../../crates/aim-api/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn value(yaml: &str) -> serde_json::Value {
    serde_saphyr::from_str(yaml).unwrap()
}

#[tokio::test]
async fn every_crd_is_accepted_and_established() {
    let crds: Api<CustomResourceDefinition> = Api::all(client().await);
    for crd in aim_api::crds() {
        let name = crd.metadata.name.clone().unwrap();
        let served = wait_for(
            &crds,
            &name,
            "CRD established",
            WAIT,
            conditions::is_crd_established(),
        )
        .await;
        // The server stored the schema we generated: no field was dropped as non-structural.
        let stored = served.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap();
        let ours = crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap();
        assert_eq!(
            stored
                .properties
                .as_ref()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ours.properties.as_ref().unwrap().keys().collect::<Vec<_>>()
        );
        let non_structural = served
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_ == "NonStructuralSchema");
        assert!(non_structural.is_none(), "{name}: {non_structural:?}");
    }
}

/// Creates an object from a JSON value in `ns` with the given kind's API, returning the server's answer.
async fn create<K>(api: &Api<K>, obj: serde_json::Value) -> Result<K, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let typed: K = serde_json::from_value(obj).expect("test object deserialises");
    api.create(&PostParams::default(), &typed).await
}

async fn create_raw(ns: &TestNamespace, obj: serde_json::Value) -> Result<(), String> {
    // Raw JSON, so that values the Rust types would refuse still reach the server.
    let gvk = kube::core::GroupVersionKind::gvk(GROUP, VERSION, obj["kind"].as_str().unwrap());
    let ar = kube::core::ApiResource::from_gvk(&gvk);
    let api: Api<kube::api::DynamicObject> = if obj["kind"].as_str().unwrap().contains("Cluster") {
        Api::all_with(ns.client.clone(), &ar)
    } else {
        Api::namespaced_with(ns.client.clone(), &ns.name, &ar)
    };
    let obj: kube::api::DynamicObject = serde_json::from_value(obj).unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn seed_examples_are_accepted() {
    let ns = TestNamespace::new("seed").await;
    for file in [
        "seed-aimservicetemplate-qwen3-32b-throughput.yaml",
        "seed-aimservicetemplate-qwen3-32b-static.yaml",
        "upstream-spelling-static.yaml",
    ] {
        let mut obj = value(&fixture(file));
        obj["metadata"]["namespace"] = ns.name.clone().into();
        obj["metadata"]["name"] = file.trim_end_matches(".yaml").replace('.', "-").into();
        create(&ns.api::<AIMServiceTemplate>(), obj)
            .await
            .unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    let mut cluster = value(&fixture(
        "seed-aimclusterservicetemplate-qwen3-32b-latency.yaml",
    ));
    cluster["metadata"]["name"] = format!("{}-latency", ns.name).into();
    let api: Api<AIMClusterServiceTemplate> = Api::all(ns.client.clone());
    let created = create(&api, cluster)
        .await
        .expect("cluster template accepted");
    api.delete(&created.metadata.name.unwrap(), &Default::default())
        .await
        .unwrap();
}

fn template(ns: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "aim.eai.amd.com/v1alpha1",
        "kind": "AIMServiceTemplate",
        "metadata": { "name": name, "namespace": ns },
        "spec": spec,
    })
}

#[tokio::test]
async fn invalid_templates_are_rejected_with_clear_messages() {
    // T-33: every rule rejects with its message.
    let ns = TestNamespace::new("reject").await;
    let cases = [
        (
            "unknown-metric",
            serde_json::json!({"modelName": "m", "metric": "fastest"}),
            "Unsupported value: \"fastest\"",
        ),
        (
            "unknown-precision",
            serde_json::json!({"modelName": "m", "precision": "fp64"}),
            "Unsupported value: \"fp64\"",
        ),
        (
            "model-and-vram",
            serde_json::json!({"modelName": "m", "hardware": {"gpu": {"model": "MI300X", "minVram": "128Gi"}}}),
            "gpu.model and gpu.minVram are mutually exclusive",
        ),
        (
            "no-gpu-no-cpu",
            serde_json::json!({"modelName": "m", "hardware": {}}),
            "hardware must set gpu, cpu, or both",
        ),
        (
            "bad-uri",
            serde_json::json!({"modelName": "m", "modelSources": [{"name": "w", "sourceURI": "https://example.com/w"}]}),
            "should match '^(hf|s3)://\\S+$'",
        ),
        (
            "both-spellings",
            serde_json::json!({"modelName": "m", "modelSources": [{"name": "w", "modelId": "w", "sourceURI": "hf://a/b"}]}),
            "set exactly one of name or modelId",
        ),
        (
            "no-uri",
            serde_json::json!({"modelName": "m", "modelSources": [{"name": "w"}]}),
            "set exactly one of sourceURI or sourceUri",
        ),
        (
            "negative-gpus",
            serde_json::json!({"modelName": "m", "hardware": {"gpu": {"requests": -1}}}),
            "should be greater than or equal to 0",
        ),
    ];
    for (name, spec, message) in cases {
        let err = create_raw(&ns, template(&ns.name, name, spec))
            .await
            .expect_err(name);
        assert!(
            err.contains(message),
            "{name}: expected {message:?} in {err}"
        );
    }
    let err = create_raw(
        &ns,
        serde_json::json!({
            "apiVersion": "aim.eai.amd.com/v1alpha1", "kind": "AIMService",
            "metadata": {"name": "both", "namespace": ns.name},
            "spec": {"model": {"name": "a", "image": "b"}},
        }),
    )
    .await
    .expect_err("service with name and image");
    assert!(
        err.contains("set exactly one of model.name or model.image"),
        "{err}"
    );
}

#[tokio::test]
async fn immutable_fields_cannot_change() {
    // T-33: an edit of an immutable field is rejected.
    let ns = TestNamespace::new("immutable").await;
    let api = ns.api::<AIMServiceTemplate>();
    create_raw(
        &ns,
        template(
            &ns.name,
            "t",
            serde_json::json!({
                "modelName": "m", "metric": "latency", "precision": "fp8",
                "hardware": {"gpu": {"requests": 1, "model": "MI300X"}},
            }),
        ),
    )
    .await
    .unwrap();
    let pp = PatchParams::default();
    for (patch, message) in [
        (
            serde_json::json!({"spec": {"modelName": "other"}}),
            "modelName is immutable",
        ),
        (
            serde_json::json!({"spec": {"metric": "throughput"}}),
            "metric is immutable once set",
        ),
        (
            serde_json::json!({"spec": {"metric": null}}),
            "metric is immutable once set",
        ),
        (
            serde_json::json!({"spec": {"precision": "fp16"}}),
            "precision is immutable once set",
        ),
        (
            serde_json::json!({"spec": {"hardware": {"gpu": {"requests": 2}}}}),
            "hardware is immutable once set",
        ),
    ] {
        let err = api
            .patch("t", &pp, &Patch::Merge(&patch))
            .await
            .expect_err(&patch.to_string())
            .to_string();
        assert!(
            err.contains(message),
            "{patch}: expected {message:?} in {err}"
        );
    }
    // Mutable fields still change.
    api.patch(
        "t",
        &pp,
        &Patch::Merge(serde_json::json!({"spec": {"profileId": "p1"}})),
    )
    .await
    .expect("profileId is mutable");
    // A runtime parameter left unset may be set once.
    create_raw(
        &ns,
        template(&ns.name, "unset", serde_json::json!({"modelName": "m"})),
    )
    .await
    .unwrap();
    api.patch(
        "unset",
        &pp,
        &Patch::Merge(serde_json::json!({"spec": {"metric": "throughput"}})),
    )
    .await
    .expect("first set");
}

fn job(ns: &str, name: &str, labels: BTreeMap<String, String>) -> Job {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": { "name": name, "namespace": ns },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": { "labels": labels },
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{ "name": "discovery", "image": "example.test/aim:1", "args": ["dry-run", "--format=json"] }],
                },
            },
        },
    }))
    .unwrap()
}

fn job_finished(type_: &'static str) -> impl kube::runtime::wait::Condition<Job> {
    move |j: Option<&Job>| {
        j.and_then(|j| j.status.as_ref()?.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
    }
}

#[tokio::test]
async fn a_job_pod_prints_canned_logs_and_completes() {
    let ns = TestNamespace::new("logs").await;
    let text = "banner line\n[{\"filename\": \"x.yaml\"}]\ndone [ok]\n";
    ns.discovery_logs(text).await;
    let jobs = ns.api::<Job>();
    jobs.create(
        &PostParams::default(),
        &job(&ns.name, "canned", BTreeMap::new()),
    )
    .await
    .unwrap();
    wait_for(
        &jobs,
        "canned",
        "job Complete",
        WAIT,
        job_finished("Complete"),
    )
    .await;
    let pods = ns.api::<Pod>();
    let pod = pods
        .list(&ListParams::default().labels("job-name=canned"))
        .await
        .unwrap()
        .items
        .remove(0);
    let log = pods
        .logs(
            pod.metadata.name.as_deref().unwrap(),
            &LogParams {
                container: Some("discovery".into()),
                ..Default::default()
            },
        )
        .await
        .expect("pods/log through kwok");
    assert_eq!(log, text);
}

#[tokio::test]
async fn a_pod_with_the_failure_label_fails() {
    let ns = TestNamespace::new("fail").await;
    let jobs = ns.api::<Job>();
    let labels = BTreeMap::from([("kwok.aim.test/outcome".to_string(), "fail".to_string())]);
    jobs.create(&PostParams::default(), &job(&ns.name, "failing", labels))
        .await
        .unwrap();
    wait_for(&jobs, "failing", "job Failed", WAIT, job_finished("Failed")).await;
    let pods = ns.api::<Pod>();
    let pod = pods
        .list(&ListParams::default().labels("job-name=failing"))
        .await
        .unwrap()
        .items
        .remove(0);
    let status = pod.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    let term = status.container_statuses.unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .terminated
        .clone()
        .unwrap();
    assert_eq!(term.exit_code, 1);
}

#[tokio::test]
async fn claims_of_the_default_class_become_bound() {
    // The test control plane binds PersistentVolumeClaims (kwok volume stages), for the cache tests.
    let ns = TestNamespace::new("pvc").await;
    let pvcs = ns.api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>();
    let pvc: k8s_openapi::api::core::v1::PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "weights", "namespace": ns.name },
        "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } },
    }))
    .unwrap();
    pvcs.create(&PostParams::default(), &pvc).await.unwrap();
    let bound = |p: Option<&k8s_openapi::api::core::v1::PersistentVolumeClaim>| {
        p.and_then(|p| p.status.as_ref()?.phase.as_deref()) == Some("Bound")
    };
    let p = wait_for(&pvcs, "weights", "PVC Bound", WAIT, bound).await;
    assert_eq!(
        p.spec.unwrap().storage_class_name.as_deref(),
        Some("kwok-volume")
    );
}
