//! Services end to end (S-01…S-06): selection against real templates, and the inference workload placed by
//! the real kube-scheduler on the fake GPU nodes.

mod common;

use aim_api::conditions::{reasons, types};
use aim_api::*;
use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::wait::Condition;
use xtask::support::{FakeNode, TestNamespace, WAIT, label_map, wait_for};

fn service_phase(p: ServicePhase) -> impl Condition<AIMService> {
    move |s: Option<&AIMService>| {
        s.and_then(|s| s.status.as_ref())
            .is_some_and(|st| st.status == p)
    }
}

fn service_with(
    p: ServicePhase,
    type_: &'static str,
    reason: &'static str,
) -> impl Condition<AIMService> {
    move |s: Option<&AIMService>| {
        s.and_then(|s| s.status.as_ref()).is_some_and(|st| {
            st.status == p
                && st
                    .conditions
                    .iter()
                    .any(|c| c.type_ == type_ && c.reason == reason)
        })
    }
}

fn cond<'a>(
    s: &'a AIMService,
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    s.status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {:#?}", s.status))
}

async fn ready_template(ns: &TestNamespace, t: AIMServiceTemplate) {
    let api: Api<AIMServiceTemplate> = ns.api();
    let name = t.metadata.name.clone().unwrap();
    apply(&api, &t).await;
    wait_for(
        &api,
        &name,
        "template Ready",
        WAIT,
        phase(TemplatePhase::Ready),
    )
    .await;
}

// S-03/S-05: the only Ready template is selected; the Deployment runs the model image with GPU limits and the
// template's node affinity, so the scheduler puts its pods on the MI300X nodes only; Running when available.
#[tokio::test]
async fn a_service_runs_on_the_mi300x_nodes_only() {
    let ns = setup("svc-run", DRY_RUN_OK).await;
    model_m(&ns, serde_json::json!([])).await;
    ready_template(&ns, static_template(&ns.name, "lat", "MI300X", 1)).await;
    let services: Api<AIMService> = ns.api();
    let mut svc = aim_service(&ns.name, "chat", serde_json::json!({"name": "m"}));
    svc.spec.replicas = 2;
    svc.spec.env =
        vec![serde_json::from_value(serde_json::json!({"name": "EXTRA", "value": "1"})).unwrap()];
    apply(&services, &svc).await;
    let s = wait_for(
        &services,
        "chat",
        "service Running",
        WAIT,
        service_phase(ServicePhase::Running),
    )
    .await;
    let st = s.status.as_ref().unwrap();
    assert_eq!(st.resolved_template.as_ref().unwrap().name, "lat");
    assert!(
        st.template_candidates
            .iter()
            .any(|c| c.name == "lat" && c.selected)
    );

    let d = ns.api::<Deployment>().get("chat").await.unwrap();
    let pod = d.spec.template.spec.as_ref().unwrap();
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("example.test/aim-qwen:1"));
    let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!(limits["amd.com/gpu"].0, "1");
    assert!(c.env.as_ref().unwrap().iter().any(|e| e.name == "EXTRA"));
    assert!(pod.affinity.as_ref().unwrap().node_affinity.is_some());
    assert_eq!(d.owner_references()[0].kind, "AIMService");
    ns.api::<Service>().get("chat").await.unwrap();
    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default().labels("aim.eai.amd.com/service=chat"))
        .await
        .unwrap()
        .items;
    assert_eq!(pods.len(), 2);
    for p in &pods {
        let node = p
            .spec
            .as_ref()
            .unwrap()
            .node_name
            .clone()
            .unwrap_or_default();
        assert!(
            node.starts_with("mi300x-"),
            "pod {} on {node:?}",
            p.name_any()
        );
    }
}

use kube::ResourceExt;

// S-05: a pod the scheduler cannot place keeps the service Pending with the scheduler's reason.
#[tokio::test]
async fn a_pod_that_cannot_be_placed_says_why() {
    let ns = setup("svc-16", DRY_RUN_OK).await;
    // The only MI308X node has 16 GPUs, one of them taken: the template is available, the pod does not fit.
    let node = FakeNode::new(
        &format!("mi308x-{}", ns.name),
        label_map([("amd.com/gpu.device-id", "74a2")]),
        Some(16),
    )
    .await;
    let filler: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "filler", "namespace": ns.name },
        "spec": { "nodeName": node.name, "containers": [{ "name": "c", "image": "busybox",
            "resources": { "requests": { "amd.com/gpu": "1" }, "limits": { "amd.com/gpu": "1" } } }] },
    }))
    .unwrap();
    ns.api::<Pod>()
        .create(&PostParams::default(), &filler)
        .await
        .unwrap();
    model_m(&ns, serde_json::json!([])).await;
    ready_template(&ns, static_template(&ns.name, "big", "MI308X", 16)).await;
    let services: Api<AIMService> = ns.api();
    apply(
        &services,
        &aim_service(&ns.name, "big", serde_json::json!({"name": "m"})),
    )
    .await;
    let s = wait_for(
        &services,
        "big",
        "service Pending on the scheduler",
        WAIT,
        service_with(
            ServicePhase::Pending,
            types::WORKLOAD_READY,
            reasons::UNSCHEDULABLE,
        ),
    )
    .await;
    let c = cond(&s, types::WORKLOAD_READY);
    assert!(
        c.message.contains("Insufficient amd.com/gpu"),
        "{}",
        c.message
    );
}

// S-03: a GPU the cluster lacks selects nothing and says why.
#[tokio::test]
async fn a_service_for_an_absent_gpu_says_why() {
    let ns = setup("svc-absent", DRY_RUN_OK).await;
    model_m(&ns, serde_json::json!([])).await;
    let api: Api<AIMServiceTemplate> = ns.api();
    apply(&api, &static_template(&ns.name, "mi355x", "MI355X", 1)).await;
    wait_for(
        &api,
        "mi355x",
        "template NotAvailable",
        WAIT,
        phase(TemplatePhase::NotAvailable),
    )
    .await;
    let services: Api<AIMService> = ns.api();
    apply(
        &services,
        &aim_service(&ns.name, "s", serde_json::json!({"name": "m"})),
    )
    .await;
    let s = wait_for(
        &services,
        "s",
        "service NotAvailable",
        WAIT,
        service_with(
            ServicePhase::NotAvailable,
            types::TEMPLATE_SELECTED,
            reasons::NO_USABLE_TEMPLATE,
        ),
    )
    .await;
    let c = cond(&s, types::TEMPLATE_SELECTED);
    assert!(
        c.message
            .contains("AIMServiceTemplate mi355x: NotAvailable"),
        "{}",
        c.message
    );
    assert!(
        ns.api::<Deployment>().get_opt("s").await.unwrap().is_none(),
        "no workload"
    );
}

// S-03: two Ready templates are named, not chosen between; S-06: the template in use stays when another
// becomes Ready, and deleting it makes the service select the other.
#[tokio::test]
async fn ambiguity_is_named_and_a_deleted_template_is_replaced() {
    let ns = setup("svc-pick", DRY_RUN_OK).await;
    model_m(&ns, serde_json::json!([])).await;
    ready_template(&ns, static_template(&ns.name, "a", "MI300X", 1)).await;
    ready_template(&ns, static_template(&ns.name, "b", "MI325X", 1)).await;
    let services: Api<AIMService> = ns.api();
    apply(
        &services,
        &aim_service(&ns.name, "two", serde_json::json!({"name": "m"})),
    )
    .await;
    let s = wait_for(
        &services,
        "two",
        "ambiguous selection",
        WAIT,
        service_with(
            ServicePhase::Failed,
            types::TEMPLATE_SELECTED,
            reasons::AMBIGUOUS_SELECTION,
        ),
    )
    .await;
    let c = cond(&s, types::TEMPLATE_SELECTED);
    assert!(
        c.message.contains("AIMServiceTemplate a") && c.message.contains("AIMServiceTemplate b"),
        "{}",
        c.message
    );

    // Choose "a" by name, then drop the name: "a" is in use and stays (S-06).
    let mut named = aim_service(&ns.name, "two", serde_json::json!({"name": "m"}));
    named.spec.template = Some(ServiceTemplateRef { name: "a".into() });
    apply(&services, &named).await;
    wait_for(
        &services,
        "two",
        "running on a",
        WAIT,
        service_phase(ServicePhase::Running),
    )
    .await;
    apply(
        &services,
        &aim_service(&ns.name, "two", serde_json::json!({"name": "m"})),
    )
    .await;
    let s = wait_for(
        &services,
        "two",
        "generation seen",
        WAIT,
        |s: Option<&AIMService>| {
            s.is_some_and(|s| {
                s.status.as_ref().and_then(|st| st.observed_generation) == s.metadata.generation
            })
        },
    )
    .await;
    assert_eq!(s.status.as_ref().unwrap().status, ServicePhase::Running);
    assert_eq!(
        s.status
            .as_ref()
            .unwrap()
            .resolved_template
            .as_ref()
            .unwrap()
            .name,
        "a"
    );

    // Delete "a": the service selects "b" and its workload follows.
    ns.api::<AIMServiceTemplate>()
        .delete("a", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        &services,
        "two",
        "running on b",
        WAIT,
        |s: Option<&AIMService>| {
            s.and_then(|s| s.status.as_ref()).is_some_and(|st| {
                st.status == ServicePhase::Running
                    && st.resolved_template.as_ref().is_some_and(|t| t.name == "b")
            })
        },
    )
    .await;
    let d = ns.api::<Deployment>().get("two").await.unwrap();
    assert_eq!(d.labels()["aim.eai.amd.com/template"], "b");
}

// S-01: a service by image with no model for it creates one; its templates come from the image's labels
// (the registry), discover, and the service runs.
#[tokio::test]
async fn a_service_by_image_creates_its_model_and_runs() {
    let ns = setup("svc-img", DRY_RUN_OK).await;
    let r = xtask::registry::registries().expect("test registries");
    let repo = format!("aim/{}", ns.name);
    let labels = [(
        RECOMMENDED_DEPLOYMENTS_LABEL.to_string(),
        r#"[{"gpuModel":"MI300X","gpuCount":1,"precision":"fp8","metric":"latency"}]"#.to_string(),
    )]
    .into();
    xtask::registry::push_image(&r.anonymous, None, &repo, "1", &labels, "amd64")
        .await
        .unwrap();
    let image = format!("{}/{repo}:1", r.anonymous);
    let services: Api<AIMService> = ns.api();
    apply(
        &services,
        &aim_service(&ns.name, "by-image", serde_json::json!({"image": image})),
    )
    .await;
    let s = wait_for(
        &services,
        "by-image",
        "service Running",
        WAIT,
        service_phase(ServicePhase::Running),
    )
    .await;
    let model = s.status.as_ref().unwrap().resolved_model.as_ref().unwrap();
    let m = ns.api::<AIMModel>().get(&model.name).await.unwrap();
    assert_eq!(m.spec.common.image, image);
    let d = ns.api::<Deployment>().get("by-image").await.unwrap();
    let c = &d.spec.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(c.image.as_deref(), Some(image.as_str()));
}

// S-05 with T-26/T-27: a service on a cached template mounts the cache's volumes read-only, and runs.
#[tokio::test]
async fn a_service_on_a_cached_template_mounts_its_volumes() {
    let ns = setup("svc-cache", DRY_RUN_OK).await;
    model_m(&ns, serde_json::json!([])).await;
    let mut spec = on_mi300x("m");
    spec["caching"] = serde_json::json!({ "enabled": true });
    ready_template(&ns, template(&ns.name, "cached", spec)).await;
    let cache = ns.api::<AIMTemplateCache>().get("cached").await.unwrap();
    let st = cache.status.unwrap();
    assert_eq!(st.status, CachePhase::Warm);
    let mut claims: Vec<String> = st.sources.iter().filter_map(|s| s.volume.clone()).collect();
    claims.sort();
    assert_eq!(claims.len(), 2, "weights and tokenizer");

    let services: Api<AIMService> = ns.api();
    apply(
        &services,
        &aim_service(&ns.name, "cached", serde_json::json!({"name": "m"})),
    )
    .await;
    wait_for(
        &services,
        "cached",
        "service Running",
        WAIT,
        service_phase(ServicePhase::Running),
    )
    .await;
    let d = ns.api::<Deployment>().get("cached").await.unwrap();
    let pod = d.spec.template.spec.as_ref().unwrap();
    let mut mounted: Vec<String> = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .map(|v| {
            let pvc = v.persistent_volume_claim.as_ref().unwrap();
            assert_eq!(pvc.read_only, Some(true));
            pvc.claim_name.clone()
        })
        .collect();
    mounted.sort();
    assert_eq!(mounted, claims);
    let mounts = pod.containers[0].volume_mounts.as_ref().unwrap();
    assert!(
        mounts
            .iter()
            .all(|m| m.read_only == Some(true) && m.mount_path.starts_with("/cache/"))
    );
}

/// Waits until the service `name` is Running.
async fn running(services: &Api<AIMService>, name: &str) -> AIMService {
    wait_for(
        services,
        name,
        "service Running",
        WAIT,
        service_phase(ServicePhase::Running),
    )
    .await
}

/// Whether the Deployment's inference container has `name=value` in its env.
fn deployment_env(name: &'static str, value: &'static str) -> impl Condition<Deployment> {
    move |d: Option<&Deployment>| {
        d.and_then(|d| d.spec.template.spec.as_ref())
            .and_then(|p| p.containers.first()?.env.as_ref())
            .is_some_and(|env| {
                env.iter()
                    .any(|e| e.name == name && e.value.as_deref() == Some(value))
            })
    }
}

// S-05/T-03: editing a runtime config's env reaches the Deployment of every service whose template
// names it, directly: the templates' status does not change with the env (their resourceVersion is
// checked), so only the runtime config watch of the services can carry the edit. Both kinds: the
// cluster config and the namespace config merged over it.
#[tokio::test]
async fn a_runtime_config_env_edit_reaches_every_service_that_uses_it() {
    let ns = setup("svc-cfg", DRY_RUN_OK).await;
    let config = format!("{}-env", ns.name);
    let cluster_configs: Api<AIMClusterRuntimeConfig> = Api::all(ns.client.clone());
    let cluster_config = |value: &str| -> AIMClusterRuntimeConfig {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "aim.eai.amd.com/v1alpha1", "kind": "AIMClusterRuntimeConfig",
            "metadata": { "name": config },
            "spec": { "env": [{ "name": "SHARED", "value": value }] },
        }))
        .unwrap()
    };
    let ns_config = |value: &str| -> AIMRuntimeConfig {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "aim.eai.amd.com/v1alpha1", "kind": "AIMRuntimeConfig",
            "metadata": { "name": config, "namespace": ns.name },
            "spec": { "env": [{ "name": "TEAM", "value": value }] },
        }))
        .unwrap()
    };
    apply(&cluster_configs, &cluster_config("one")).await;
    apply(&ns.api(), &ns_config("a")).await;
    model_m(&ns, serde_json::json!([])).await;
    for (name, count) in [("one-gpu", 1), ("two-gpu", 2)] {
        let mut t = static_template(&ns.name, name, "MI300X", count);
        t.spec.common.runtime_config_name = config.clone();
        ready_template(&ns, t).await;
    }
    let services: Api<AIMService> = ns.api();
    for (svc, template) in [("first", "one-gpu"), ("second", "two-gpu")] {
        let mut s = aim_service(&ns.name, svc, serde_json::json!({"name": "m"}));
        s.spec.template = Some(ServiceTemplateRef {
            name: template.into(),
        });
        apply(&services, &s).await;
        running(&services, svc).await;
    }
    let deployments: Api<Deployment> = ns.api();
    for svc in ["first", "second"] {
        wait_for(
            &deployments,
            svc,
            "SHARED=one",
            WAIT,
            deployment_env("SHARED", "one"),
        )
        .await;
        wait_for(
            &deployments,
            svc,
            "TEAM=a",
            WAIT,
            deployment_env("TEAM", "a"),
        )
        .await;
    }
    let templates: Api<AIMServiceTemplate> = ns.api();
    let versions = |list: Vec<AIMServiceTemplate>| -> Vec<(String, Option<String>)> {
        list.into_iter()
            .map(|t| (t.name_any(), t.resource_version()))
            .collect()
    };
    let before = versions(templates.list(&ListParams::default()).await.unwrap().items);

    apply(&cluster_configs, &cluster_config("two")).await;
    for svc in ["first", "second"] {
        wait_for(
            &deployments,
            svc,
            "SHARED=two",
            WAIT,
            deployment_env("SHARED", "two"),
        )
        .await;
    }
    apply(&ns.api(), &ns_config("b")).await;
    for svc in ["first", "second"] {
        let d = wait_for(
            &deployments,
            svc,
            "TEAM=b",
            WAIT,
            deployment_env("TEAM", "b"),
        )
        .await;
        assert!(deployment_env("SHARED", "two").matches_object(Some(&d)));
    }
    let after = versions(templates.list(&ListParams::default()).await.unwrap().items);
    assert_eq!(
        before, after,
        "the templates were rewritten: the edit did not reach the services directly"
    );
    // Still Running after the rollout of the new env.
    for svc in ["first", "second"] {
        running(&services, svc).await;
    }
    cluster_configs
        .delete(&config, &DeleteParams::default())
        .await
        .unwrap();
}
