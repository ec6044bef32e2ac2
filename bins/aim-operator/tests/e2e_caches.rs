//! End-to-end: template caches (T-26…T-28, C-01…C-03) against the test control plane. Claims of the
//! default class `kwok-volume` are bound by kwok's volume stages; download pods complete, or fail when
//! their env asks for it (`AIM_TEST_OUTCOME=fail`, see `xtask/testenv/kwok.yaml`).

mod common;

use aim_api::conditions::{reasons, types};
use aim_api::*;
use common::*;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use xtask::support::{TestNamespace, WAIT, wait_for, wait_gone};

static OPERATOR: OnceLock<u16> = OnceLock::new();

/// The operator of this binary (backoff 2 s, `/metrics` on a port of its own), and a namespace whose
/// discovery pods print [`DRY_RUN_OK`] (16 GiB of weights and a 2 MiB tokenizer).
async fn setup(prefix: &str) -> (TestNamespace, u16) {
    let port = *OPERATOR.get_or_init(|| {
        let port = free_port();
        start_for_binary(aim_operator::Settings {
            system_namespace: SYSTEM_NAMESPACE.into(),
            backoff_base: BACKOFF_BASE,
            metrics_address: Some(([127, 0, 0, 1], port).into()),
            ..Default::default()
        });
        port
    });
    let ns = TestNamespace::new(prefix).await;
    ns.discovery_logs(DRY_RUN_OK).await;
    (ns, port)
}

const WEIGHTS: &str = "hf://Qwen/Qwen3-32B";
const TOKENIZER: &str = "hf://Qwen/Qwen3-32B/tokenizer.json";

fn cache_phase(p: CachePhase) -> impl Fn(Option<&AIMTemplateCache>) -> bool {
    move |c: Option<&AIMTemplateCache>| {
        c.and_then(|c| c.status.as_ref())
            .is_some_and(|s| s.status == p)
    }
}

fn cache_condition<'a>(
    c: &'a AIMTemplateCache,
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    let st = c.status.as_ref().expect("a status");
    st.conditions
        .iter()
        .find(|x| x.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} in {st:#?}"))
}

fn hand_made_cache(ns: &str, name: &str, template: &str, scope: &str) -> AIMTemplateCache {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "aim.eai.amd.com/v1alpha1", "kind": "AIMTemplateCache",
        "metadata": { "name": name, "namespace": ns },
        "spec": { "templateName": template, "templateScope": scope },
    }))
    .unwrap()
}

/// A template of model `m` on one MI300X with static sources: no discovery, Ready at once.
fn static_spec(sources: serde_json::Value, caching: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "modelName": "m",
        "hardware": { "gpu": { "model": "MI300X" } },
        "modelSources": sources,
        "caching": caching,
    })
}

fn volume_of(uri: &str) -> String {
    aim_resolve::cache::volume_name(uri)
}

fn owners(pvc: &PersistentVolumeClaim) -> Vec<String> {
    pvc.metadata
        .owner_references
        .iter()
        .flatten()
        .map(|o| format!("{}/{}", o.kind, o.name))
        .collect()
}

fn bound(p: Option<&PersistentVolumeClaim>) -> bool {
    p.and_then(|p| p.status.as_ref()?.phase.as_deref()) == Some("Bound")
}

/// The value of the first sample whose line starts with `series`.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn a_cached_template_warms_and_becomes_ready() {
    // T-26, T-27, C-01, C-02, C-03: the warm path, end to end.
    let (ns, _) = setup("cache-warm").await;
    model_m(&ns, serde_json::json!([])).await;
    let templates = ns.api::<AIMServiceTemplate>();
    let caches = ns.api::<AIMTemplateCache>();
    let volumes = ns.api::<PersistentVolumeClaim>();
    let jobs = ns.api::<Job>();
    let mut spec = on_mi300x("m");
    spec["env"] = serde_json::json!([{ "name": "HF_TOKEN", "valueFrom": { "secretKeyRef": { "name": "hf", "key": "token" } } }]);
    spec["caching"] = serde_json::json!({ "enabled": true });
    let started = Instant::now();
    let t = apply(&templates, &template(&ns.name, "tpl", spec.clone())).await;

    // T-26: the cache of the template's name, owned by it, with the template's env.
    let cache = wait_for(
        &caches,
        "tpl",
        "cache Warm",
        WAIT,
        cache_phase(CachePhase::Warm),
    )
    .await;
    let warm_after = started.elapsed();
    let owner = cache.metadata.owner_references.as_ref().unwrap();
    assert_eq!(owner.len(), 1);
    assert_eq!(
        (owner[0].kind.as_str(), owner[0].uid.as_str()),
        ("AIMServiceTemplate", t.metadata.uid.as_deref().unwrap())
    );
    assert_eq!(owner[0].controller, Some(true));
    assert_eq!(cache.spec.template_scope, TemplateScope::Namespace);
    assert_eq!(cache.spec.env[0].name, "HF_TOKEN");
    assert!(cache.spec.env[0].value_from.is_some());
    let st = cache.status.as_ref().unwrap();
    assert_eq!(st.sources.len(), 2);
    assert!(
        st.sources
            .iter()
            .all(|s| s.state == CacheSourceState::Ready),
        "{st:#?}"
    );
    assert_eq!(cache_condition(&cache, types::READY).reason, reasons::WARM);

    // C-01/C-02: a bound volume per source, named from its URI, sized with 10 % headroom, owned by the
    // cache (not as controller), in the default class.
    for (uri, size) in [(WEIGHTS, "18023Mi"), (TOKENIZER, "3Mi")] {
        let pvc = volumes.get(&volume_of(uri)).await.unwrap();
        assert!(bound(Some(&pvc)), "{pvc:#?}");
        let spec = pvc.spec.as_ref().unwrap();
        assert_eq!(
            spec.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
            size
        );
        assert_eq!(spec.storage_class_name.as_deref(), Some("kwok-volume"));
        assert_eq!(owners(&pvc), ["AIMTemplateCache/tpl"]);
        assert_ne!(
            pvc.metadata.owner_references.as_ref().unwrap()[0].controller,
            Some(true)
        );
        let job = jobs
            .get(&aim_resolve::cache::download_job_name(uri))
            .await
            .unwrap();
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[labels::COMPONENT], labels::COMPONENT_CACHE_DOWNLOAD);
        assert_eq!(job.spec.as_ref().unwrap().backoff_limit, Some(0));
    }

    // T-27: the template is Ready once its cache is Warm.
    let t = wait_for(
        &templates,
        "tpl",
        "template Ready",
        WAIT,
        phase(TemplatePhase::Ready),
    )
    .await;
    let c = condition(t.status.as_ref().unwrap(), types::CACHE_READY);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", reasons::CACHE_WARM)
    );
    println!(
        "cache Warm {warm_after:?} after the template was created (discovery included), template Ready after {:?}",
        started.elapsed()
    );

    // T-26: a later edit of caching.env reaches the cache.
    spec["caching"] = serde_json::json!({ "enabled": true, "env": [{ "name": "HF_ENDPOINT", "value": "https://mirror.example" }] });
    apply(&templates, &template(&ns.name, "tpl", spec.clone())).await;
    wait_for(
        &caches,
        "tpl",
        "the new caching env",
        WAIT,
        |c: Option<&AIMTemplateCache>| {
            c.is_some_and(|c| c.spec.env.len() == 1 && c.spec.env[0].name == "HF_ENDPOINT")
        },
    )
    .await;

    // Turning caching off removes the cache, and with its last owner go the volumes.
    spec["caching"] = serde_json::json!({ "enabled": false });
    apply(&templates, &template(&ns.name, "tpl", spec)).await;
    wait_gone(&caches, "tpl", "cache deleted", WAIT).await;
    wait_gone(
        &volumes,
        &volume_of(WEIGHTS),
        "volume of the weights deleted",
        WAIT,
    )
    .await;
    // CacheReady only with caching.
    wait_for(
        &templates,
        "tpl",
        "template Ready without CacheReady",
        WAIT,
        |t: Option<&AIMServiceTemplate>| {
            t.and_then(|t| t.status.as_ref()).is_some_and(|s| {
                s.status == TemplatePhase::Ready
                    && !s.conditions.iter().any(|c| c.type_ == types::CACHE_READY)
            })
        },
    )
    .await;
}

#[tokio::test]
async fn a_failing_download_degrades_cache_and_template() {
    // C-03, T-27: one source downloads, the other fails (per-source env asks its pod to fail).
    let (ns, port) = setup("cache-fail").await;
    model_m(&ns, serde_json::json!([])).await;
    let templates = ns.api::<AIMServiceTemplate>();
    let caches = ns.api::<AIMTemplateCache>();
    let sources = serde_json::json!([
        { "name": "weights", "sourceURI": "hf://org/failing-weights", "size": "1Gi",
          "env": [{ "name": "AIM_TEST_OUTCOME", "value": "fail" }] },
        { "name": "tokenizer", "sourceURI": "hf://org/fine-tokenizer", "size": "2Mi" },
    ]);
    apply(
        &templates,
        &template(
            &ns.name,
            "tpl",
            static_spec(sources, serde_json::json!({ "enabled": true })),
        ),
    )
    .await;
    // Degraded as soon as the weights failed; the tokenizer's download may still be running then.
    let cache = wait_for(
        &caches,
        "tpl",
        "cache Degraded, the tokenizer Ready",
        WAIT,
        |c: Option<&AIMTemplateCache>| {
            c.and_then(|c| c.status.as_ref()).is_some_and(|s| {
                s.status == CachePhase::Degraded
                    && s.sources
                        .iter()
                        .any(|x| x.name == "tokenizer" && x.state == CacheSourceState::Ready)
            })
        },
    )
    .await;
    let st = cache.status.as_ref().unwrap();
    let failed = st.sources.iter().find(|s| s.name == "weights").unwrap();
    assert_eq!(failed.state, CacheSourceState::Failed);
    let msg = failed.message.as_deref().unwrap();
    // The pod's reason, and the scheduled retry.
    assert!(msg.contains("exited with code 1 (Error)"), "{msg}");
    assert!(msg.contains("retry after a"), "{msg}");
    assert!(failed.next_attempt_time.is_some());
    assert_eq!(
        st.sources
            .iter()
            .find(|s| s.name == "tokenizer")
            .unwrap()
            .state,
        CacheSourceState::Ready
    );
    assert_eq!(
        cache_condition(&cache, types::READY).reason,
        reasons::DOWNLOAD_FAILED
    );

    // T-27: a degraded cache makes the template Degraded.
    let t = wait_for(
        &templates,
        "tpl",
        "template Degraded by its cache",
        WAIT,
        phase_with(
            TemplatePhase::Degraded,
            types::CACHE_READY,
            reasons::CACHE_DEGRADED,
        ),
    )
    .await;
    assert_eq!(
        condition(t.status.as_ref().unwrap(), types::READY).reason,
        reasons::CACHE_DEGRADED
    );

    // The failed download is retried on the backoff (2 s, then 4 s): a second attempt is counted.
    wait_for(
        &caches,
        "tpl",
        "a second failed attempt",
        WAIT,
        |c: Option<&AIMTemplateCache>| {
            c.and_then(|c| c.status.as_ref()).is_some_and(|s| {
                s.sources
                    .iter()
                    .any(|s| s.name == "weights" && s.attempts >= 2)
            })
        },
    )
    .await;
    let (_, body) = http_get(port, "/metrics").expect("scraping /metrics");
    let failures = sample(&body, "aim_cache_download_failures_total").unwrap_or(0.0);
    assert!(failures >= 2.0, "{body}");

    // Every source failing is Failed, and so is CacheReady's reason on the template.
    let sources = serde_json::json!([
        { "name": "weights", "sourceURI": "hf://org/failing-weights", "size": "1Gi",
          "env": [{ "name": "AIM_TEST_OUTCOME", "value": "fail" }] },
    ]);
    apply(
        &templates,
        &template(
            &ns.name,
            "all",
            static_spec(sources, serde_json::json!({ "enabled": true })),
        ),
    )
    .await;
    wait_for(
        &caches,
        "all",
        "cache Failed",
        WAIT,
        cache_phase(CachePhase::Failed),
    )
    .await;
    wait_for(
        &templates,
        "all",
        "template Degraded by its failed cache",
        WAIT,
        phase_with(
            TemplatePhase::Degraded,
            types::CACHE_READY,
            reasons::CACHE_FAILED,
        ),
    )
    .await;
}

#[tokio::test]
async fn two_caches_of_one_source_share_its_volume() {
    // C-01: one volume and one download per source in a namespace; deleting both caches frees it.
    let (ns, _) = setup("cache-share").await;
    model_m(&ns, serde_json::json!([])).await;
    let templates = ns.api::<AIMServiceTemplate>();
    let caches = ns.api::<AIMTemplateCache>();
    let volumes = ns.api::<PersistentVolumeClaim>();
    let shared = "hf://org/shared-model";
    for (name, metric) in [("a", "latency"), ("b", "throughput")] {
        let mut spec = static_spec(
            serde_json::json!([{ "name": "model", "sourceURI": shared, "size": "1Gi" }]),
            serde_json::json!({ "enabled": false }),
        );
        spec["metric"] = serde_json::json!(metric);
        apply(&templates, &template(&ns.name, name, spec)).await;
        apply(
            &caches,
            &hand_made_cache(&ns.name, &format!("cache-{name}"), name, "Namespace"),
        )
        .await;
    }
    for name in ["cache-a", "cache-b"] {
        wait_for(
            &caches,
            name,
            "cache Warm",
            WAIT,
            cache_phase(CachePhase::Warm),
        )
        .await;
    }
    let all = volumes.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(all.len(), 1, "one volume for the shared source: {all:#?}");
    let volume = volume_of(shared);
    wait_for(
        &volumes,
        &volume,
        "owned by both caches",
        WAIT,
        |p: Option<&PersistentVolumeClaim>| {
            p.is_some_and(|p| {
                let mut o = owners(p);
                o.sort();
                o == ["AIMTemplateCache/cache-a", "AIMTemplateCache/cache-b"]
            })
        },
    )
    .await;
    let downloads = ns
        .api::<Job>()
        .list(&ListParams::default().labels(aim_resolve::cache::DOWNLOAD_SELECTOR))
        .await
        .unwrap()
        .items;
    assert_eq!(downloads.len(), 1, "one download for the shared volume");

    // The first cache goes: the volume stays for the second.
    caches
        .delete("cache-a", &DeleteParams::background())
        .await
        .unwrap();
    wait_gone(&caches, "cache-a", "cache-a deleted", WAIT).await;
    wait_for(
        &volumes,
        &volume,
        "owned by cache-b only",
        WAIT,
        |p: Option<&PersistentVolumeClaim>| {
            p.is_some_and(|p| {
                owners(p) == ["AIMTemplateCache/cache-b"] && p.metadata.deletion_timestamp.is_none()
            })
        },
    )
    .await;
    let b = caches.get("cache-b").await.unwrap();
    assert_eq!(b.status.unwrap().status, CachePhase::Warm);
    // The last owner goes: so does the volume.
    caches
        .delete("cache-b", &DeleteParams::background())
        .await
        .unwrap();
    wait_gone(&volumes, &volume, "the shared volume deleted", WAIT).await;
}

#[tokio::test]
async fn a_cluster_template_is_cached_into_a_namespace() {
    // T-28: cluster templates never create caches; a cache with templateScope Cluster caches one.
    let (ns, _) = setup("cache-cluster").await;
    let name = format!("cached-cluster-{}", ns.name);
    let client = ns.client.clone();
    let cluster_models: Api<AIMClusterModel> = Api::all(client.clone());
    let cluster_templates: Api<AIMClusterServiceTemplate> = Api::all(client.clone());
    apply(
        &cluster_models,
        &cluster_model(&name, "example.test/aim-qwen:1"),
    )
    .await;
    let mut spec = static_spec(
        serde_json::json!([{ "name": "model", "sourceURI": format!("hf://org/{name}"), "size": "1Gi" }]),
        serde_json::Value::Null,
    );
    spec["modelName"] = serde_json::json!(name);
    spec.as_object_mut().unwrap().remove("caching");
    apply(&cluster_templates, &cluster_template(&name, spec)).await;
    wait_for(
        &cluster_templates,
        &name,
        "cluster template Ready",
        WAIT,
        phase(TemplatePhase::Ready),
    )
    .await;

    let caches = ns.api::<AIMTemplateCache>();
    // The wrong scope says so.
    apply(
        &caches,
        &hand_made_cache(&ns.name, "wrong", &name, "Namespace"),
    )
    .await;
    let wrong = wait_for(
        &caches,
        "wrong",
        "Failed: wrong scope",
        WAIT,
        cache_phase(CachePhase::Failed),
    )
    .await;
    let c = cache_condition(&wrong, types::TEMPLATE_READY);
    assert_eq!(c.reason, reasons::WRONG_TEMPLATE_SCOPE);
    assert!(
        c.message.contains("set spec.templateScope to Cluster"),
        "{}",
        c.message
    );

    apply(
        &caches,
        &hand_made_cache(&ns.name, "cached", &name, "Cluster"),
    )
    .await;
    wait_for(
        &caches,
        "cached",
        "cache Warm",
        WAIT,
        cache_phase(CachePhase::Warm),
    )
    .await;
    let pvc = ns
        .api::<PersistentVolumeClaim>()
        .get(&volume_of(&format!("hf://org/{name}")))
        .await
        .unwrap();
    assert_eq!(
        pvc.metadata.namespace.as_deref(),
        Some(ns.name.as_str()),
        "in the cache's namespace"
    );
    assert!(bound(Some(&pvc)));

    // No cache anywhere was made for the cluster template itself.
    let all: Api<AIMTemplateCache> = Api::all(client.clone());
    let made = all
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|c| c.spec.template_name == name && c.metadata.owner_references.is_some())
        .count();
    assert_eq!(made, 0);
    let _ = cluster_templates
        .delete(&name, &DeleteParams::background())
        .await;
    let _ = cluster_models
        .delete(&name, &DeleteParams::background())
        .await;
}

#[tokio::test]
async fn the_seed_template_with_caching_enabled_reaches_ready() {
    // T-26, T-27: the seed's namespace template (service-templates.md), with `caching.enabled: true`,
    // its runtime config and its credentials.
    let (ns, _) = setup("cache-seed").await;
    let models = ns.api::<AIMModel>();
    apply(
        &models,
        &model(
            &ns.name,
            "qwen-qwen3-32b",
            "amdenterpriseai/aim-qwen-qwen3-32b:0.8.5",
            serde_json::json!([]),
        ),
    )
    .await;
    let configs = ns.api::<AIMRuntimeConfig>();
    let config: AIMRuntimeConfig = serde_json::from_value(serde_json::json!({
        "apiVersion": "aim.eai.amd.com/v1alpha1", "kind": "AIMRuntimeConfig",
        "metadata": { "name": "ml-research", "namespace": ns.name },
        "spec": { "storage": { "headroomPercent": 15 } },
    }))
    .unwrap();
    apply(&configs, &config).await;
    let seed: AIMServiceTemplate = serde_json::from_value(serde_json::json!({
        "apiVersion": "aim.eai.amd.com/v1alpha1", "kind": "AIMServiceTemplate",
        "metadata": { "name": "qwen3-32b-throughput", "namespace": ns.name },
        "spec": {
            "modelName": "qwen-qwen3-32b",
            "runtimeConfigName": "ml-research",
            "metric": "throughput",
            "precision": "fp8",
            "hardware": { "gpu": { "requests": 2, "model": "MI300X" } },
            "env": [{ "name": "HF_TOKEN", "valueFrom": { "secretKeyRef": { "name": "hf-creds", "key": "token" } } }],
            "caching": { "enabled": true },
        },
    }))
    .unwrap();
    let templates = ns.api::<AIMServiceTemplate>();
    apply(&templates, &seed).await;
    let t = wait_for(
        &templates,
        "qwen3-32b-throughput",
        "seed template Ready",
        WAIT,
        phase(TemplatePhase::Ready),
    )
    .await;
    assert_eq!(
        condition(t.status.as_ref().unwrap(), types::CACHE_READY).status,
        "True"
    );
    let cache = ns
        .api::<AIMTemplateCache>()
        .get("qwen3-32b-throughput")
        .await
        .unwrap();
    assert_eq!(cache.status.unwrap().status, CachePhase::Warm);
    // C-02: the runtime config's 15 % headroom; the credential reaches the download as a reference.
    let pvc = ns
        .api::<PersistentVolumeClaim>()
        .get(&volume_of(WEIGHTS))
        .await
        .unwrap();
    assert_eq!(
        pvc.spec.unwrap().resources.unwrap().requests.unwrap()["storage"].0,
        "18842Mi"
    );
    let job = ns
        .api::<Job>()
        .get(&aim_resolve::cache::download_job_name(WEIGHTS))
        .await
        .unwrap();
    let env = job.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    let token = env.iter().find(|e| e.name == "HF_TOKEN").unwrap();
    assert!(token.value.is_none());
    assert_eq!(
        token
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap()
            .name,
        "hf-creds"
    );
}

#[tokio::test]
async fn a_volume_that_never_binds_says_why_within_a_minute() {
    // C-03 troubleshooting: a storage class that does not exist; the PV controller's warning reaches
    // the cache's status, not only a deadline.
    let (ns, _) = setup("cache-unbound").await;
    model_m(&ns, serde_json::json!([])).await;
    apply(
        &ns.api::<AIMRuntimeConfig>(),
        &default_runtime_config(
            &ns.name,
            serde_json::json!({ "storage": { "storageClassName": "no-such-class" } }),
        ),
    )
    .await;
    let templates = ns.api::<AIMServiceTemplate>();
    apply(
        &templates,
        &template(
            &ns.name,
            "tpl",
            static_spec(
                serde_json::json!([{ "name": "model", "sourceURI": "hf://org/unbound", "size": "1Gi" }]),
                serde_json::json!({ "enabled": true }),
            ),
        ),
    )
    .await;
    let caches = ns.api::<AIMTemplateCache>();
    let started = Instant::now();
    let cache = wait_for(
        &caches,
        "tpl",
        "VolumeNotBound",
        Duration::from_secs(60),
        |c: Option<&AIMTemplateCache>| {
            c.and_then(|c| c.status.as_ref()).is_some_and(|s| {
                s.conditions.iter().any(|x| {
                    x.type_ == types::VOLUMES_READY && x.reason == reasons::VOLUME_NOT_BOUND
                })
            })
        },
    )
    .await;
    println!("unbound volume reported after {:?}", started.elapsed());
    let c = cache_condition(&cache, types::VOLUMES_READY);
    assert!(c.message.contains("no-such-class"), "{}", c.message);
    assert_eq!(cache.status.as_ref().unwrap().status, CachePhase::Pending);
    assert_eq!(
        cache_condition(&cache, types::READY).reason,
        reasons::VOLUME_NOT_BOUND
    );
    let t = templates.get("tpl").await.unwrap();
    assert_eq!(
        t.status.as_ref().unwrap().status,
        TemplatePhase::Progressing
    );
    assert_eq!(
        condition(t.status.as_ref().unwrap(), types::CACHE_READY).reason,
        reasons::WAITING_FOR_CACHE
    );

    // Fixed (the class named by the cache itself, which wins over the runtime config): the claim and
    // its download Job are deleted (docs/caches.md), and the cache makes both again.
    let patch = serde_json::json!({
        "apiVersion": "aim.eai.amd.com/v1alpha1", "kind": "AIMTemplateCache",
        "spec": { "storageClassName": "kwok-volume" },
    });
    caches
        .patch(
            "tpl",
            &PatchParams::apply("aim-e2e-fix"),
            &Patch::Apply(&patch),
        )
        .await
        .unwrap();
    let volume = volume_of("hf://org/unbound");
    ns.api::<PersistentVolumeClaim>()
        .delete(&volume, &DeleteParams::background())
        .await
        .unwrap();
    ns.api::<Job>()
        .delete(
            &aim_resolve::cache::download_job_name("hf://org/unbound"),
            &DeleteParams::background(),
        )
        .await
        .unwrap();
    wait_for(
        &caches,
        "tpl",
        "cache Warm once fixed",
        WAIT,
        cache_phase(CachePhase::Warm),
    )
    .await;
    wait_for(
        &templates,
        "tpl",
        "template Ready",
        WAIT,
        phase(TemplatePhase::Ready),
    )
    .await;
}

#[tokio::test]
async fn a_volume_refused_by_a_quota_is_a_failed_attempt_until_the_quota_allows_it() {
    // C-03: the API server refuses the claim (a quota of zero claims); the source says why, the
    // template is Degraded, and the retry after the backoff succeeds once the quota is gone.
    let (ns, _) = setup("cache-quota").await;
    model_m(&ns, serde_json::json!([])).await;
    let quotas = ns.api::<k8s_openapi::api::core::v1::ResourceQuota>();
    let quota: k8s_openapi::api::core::v1::ResourceQuota =
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "no-claims", "namespace": ns.name },
            "spec": { "hard": { "persistentvolumeclaims": "0" } },
        }))
        .unwrap();
    apply(&quotas, &quota).await;
    // The quota controller must have counted before the API server enforces it.
    wait_for(
        &quotas,
        "no-claims",
        "quota status",
        WAIT,
        |q: Option<&k8s_openapi::api::core::v1::ResourceQuota>| {
            q.and_then(|q| q.status.as_ref()?.hard.as_ref()).is_some()
        },
    )
    .await;
    let templates = ns.api::<AIMServiceTemplate>();
    apply(
        &templates,
        &template(
            &ns.name,
            "tpl",
            static_spec(
                serde_json::json!([{ "name": "model", "sourceURI": "hf://org/quota", "size": "1Gi" }]),
                serde_json::json!({ "enabled": true }),
            ),
        ),
    )
    .await;
    let caches = ns.api::<AIMTemplateCache>();
    let cache = wait_for(
        &caches,
        "tpl",
        "cache Failed",
        WAIT,
        cache_phase(CachePhase::Failed),
    )
    .await;
    let source = &cache.status.as_ref().unwrap().sources[0];
    let msg = source.message.as_deref().unwrap();
    assert!(
        msg.contains("the API server refused volume") && msg.contains("exceeded quota"),
        "{msg}"
    );
    assert!(source.attempts >= 1);
    wait_for(
        &templates,
        "tpl",
        "template Degraded",
        WAIT,
        phase_with(
            TemplatePhase::Degraded,
            types::CACHE_READY,
            reasons::CACHE_FAILED,
        ),
    )
    .await;
    quotas
        .delete("no-claims", &DeleteParams::background())
        .await
        .unwrap();
    wait_for(
        &caches,
        "tpl",
        "cache Warm after a retry",
        WAIT,
        cache_phase(CachePhase::Warm),
    )
    .await;
    wait_for(
        &templates,
        "tpl",
        "template Ready",
        WAIT,
        phase(TemplatePhase::Ready),
    )
    .await;
}

#[tokio::test]
async fn a_download_pod_blocked_on_a_missing_secret_says_why_within_seconds() {
    // C-03: the kubelet cannot create the download container (a Secret behind `valueFrom` is missing;
    // kwok leaves the pod in CreateContainerConfigError when its env asks for it). The source says so
    // within seconds with the kubelet's text, instead of waiting out the download deadline; sampled
    // along the way, it never counts a failed attempt.
    let (ns, _port) = setup("cache-nosecret").await;
    model_m(&ns, serde_json::json!([])).await;
    let sources = serde_json::json!([
        { "name": "weights", "sourceURI": "hf://org/gated-weights", "size": "1Gi",
          "env": [{ "name": "AIM_TEST_OUTCOME", "value": "config-error" }] },
    ]);
    apply(
        &ns.api::<AIMServiceTemplate>(),
        &template(
            &ns.name,
            "tpl",
            static_spec(sources, serde_json::json!({ "enabled": true })),
        ),
    )
    .await;
    let cache = wait_for(
        &ns.api::<AIMTemplateCache>(),
        "tpl",
        "the source says why its pod cannot start",
        Duration::from_secs(30),
        |c: Option<&AIMTemplateCache>| {
            let sources = c.and_then(|c| c.status.as_ref()).map(|s| &s.sources);
            assert!(
                sources
                    .into_iter()
                    .flatten()
                    .all(|s| s.state != CacheSourceState::Failed && s.attempts == 0),
                "a failed attempt was counted: {sources:#?}"
            );
            sources.into_iter().flatten().any(|s| {
                s.message
                    .as_deref()
                    .is_some_and(|m| m.contains("CreateContainerConfigError"))
            })
        },
    )
    .await;
    let source = &cache.status.as_ref().unwrap().sources[0];
    assert_eq!(source.state, CacheSourceState::Pending);
    let msg = source.message.as_deref().unwrap();
    assert!(msg.contains("secret \"hf-token\" not found"), "{msg}");
}
