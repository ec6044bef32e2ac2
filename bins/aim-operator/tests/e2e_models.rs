//! Models end to end (M-01…M-04): images pushed to the test registries, templates created from their
//! labels, discovery (canned logs) to Ready, and every way a metadata read fails.

mod common;

use aim_api::conditions::{reasons, types};
use aim_api::*;
use common::*;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::wait::Condition;
use std::collections::BTreeMap;
use xtask::registry::{Registries, push_image, push_index, registries};
use xtask::support::{TestNamespace, WAIT, wait_for, wait_gone};

fn regs() -> Registries {
    registries().expect("test registries (cargo xtask cluster up)")
}

fn label(key: &str, value: &str) -> BTreeMap<String, String> {
    [(key.to_string(), value.to_string())].into()
}

fn deployments(value: serde_json::Value) -> BTreeMap<String, String> {
    label(RECOMMENDED_DEPLOYMENTS_LABEL, &value.to_string())
}

fn mi300x_fp8() -> serde_json::Value {
    serde_json::json!({"gpuModel": "MI300X", "gpuCount": 1, "precision": "fp8", "metric": "latency"})
}

fn mi355x_fp8() -> serde_json::Value {
    serde_json::json!({"gpuModel": "MI355X", "gpuCount": 1, "precision": "fp8", "metric": "latency"})
}

fn ns_model(ns: &str, name: &str, image: &str, secrets: &[&str]) -> AIMModel {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "aim.eai.amd.com/v1alpha1", "kind": "AIMModel",
        "metadata": { "name": name, "namespace": ns },
        "spec": { "image": image, "imagePullSecrets": secrets.iter().map(|s| serde_json::json!({"name": s})).collect::<Vec<_>>() },
    }))
    .unwrap()
}

fn pull_secret(ns: &str, name: &str, registry: &str, user: &str, password: &str) -> Secret {
    let doc = serde_json::json!({"auths": {registry: {"username": user, "password": password}}});
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": { "name": name, "namespace": ns },
        "stringData": { ".dockerconfigjson": doc.to_string() },
    }))
    .unwrap()
}

trait HasModelStatus {
    fn model_status(&self) -> Option<&ModelStatus>;
}
impl HasModelStatus for AIMModel {
    fn model_status(&self) -> Option<&ModelStatus> {
        self.status.as_ref()
    }
}
impl HasModelStatus for AIMClusterModel {
    fn model_status(&self) -> Option<&ModelStatus> {
        self.status.as_ref()
    }
}

/// The model has this status, and `n` templates when given.
fn model_phase<K: HasModelStatus>(p: ModelPhase, n: Option<usize>) -> impl Condition<K> {
    move |m: Option<&K>| {
        m.and_then(|m| m.model_status())
            .is_some_and(|s| s.status == p && n.is_none_or(|n| s.templates.len() == n))
    }
}

/// The model failed to read its metadata for this reason.
fn metadata_failed<K: HasModelStatus>(reason: &'static str) -> impl Condition<K> {
    move |m: Option<&K>| {
        m.and_then(|m| m.model_status()).is_some_and(|s| {
            s.status == ModelPhase::Failed
                && s.conditions.iter().any(|c| {
                    c.type_ == types::METADATA_EXTRACTED
                        && c.status == "False"
                        && c.reason == reason
                })
        })
    }
}

fn model_condition<'a>(
    s: &'a ModelStatus,
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {s:#?}"))
}

fn by_model(name: &str) -> ListParams {
    ListParams::default().labels(&format!("aim.eai.amd.com/model={name}"))
}

// M-01…M-04: an AIMClusterModel on an image in the registry makes its cluster templates; they discover
// and settle; the model is Ready (one Ready, one NotAvailable); deleting it deletes them.
#[tokio::test]
async fn cluster_model_from_the_registry_creates_its_templates_and_takes_them_away() {
    let ns = setup("mdl-cl", DRY_RUN_OK).await;
    let r = regs();
    let name = format!("{}-cm", ns.name);
    let digest = push_image(
        &r.anonymous,
        None,
        &format!("aim/{name}"),
        "0.8.5",
        &deployments(serde_json::json!([mi300x_fp8(), mi355x_fp8()])),
        "amd64",
    )
    .await
    .unwrap();
    let image = format!("{}/aim/{name}:0.8.5", r.anonymous);
    let models: Api<AIMClusterModel> = Api::all(ns.client.clone());
    let model: AIMClusterModel = serde_json::from_value(serde_json::json!({
        "apiVersion": "aim.eai.amd.com/v1alpha1", "kind": "AIMClusterModel",
        "metadata": { "name": name }, "spec": { "image": image },
    }))
    .unwrap();
    apply(&models, &model).await;
    // M-04: some Ready, the rest NotAvailable → Ready.
    let m = wait_for(
        &models,
        &name,
        "cluster model Ready",
        WAIT,
        model_phase(ModelPhase::Ready, Some(2)),
    )
    .await;
    let st = m.status.clone().unwrap();
    let cached = st.image_metadata.as_ref().unwrap();
    assert_eq!(cached.image, image);
    assert_eq!(
        cached.digest.as_deref(),
        Some(digest.as_str()),
        "M-01: the resolved digest"
    );
    assert_eq!(cached.metadata.recommended_deployments.len(), 2);
    let mut phases: Vec<TemplatePhase> = st.templates.iter().map(|t| t.status).collect();
    phases.sort_by_key(|p| p.as_str());
    assert_eq!(
        phases,
        vec![TemplatePhase::NotAvailable, TemplatePhase::Ready]
    );

    // M-02: cluster templates with the model's labels and a controller reference to it.
    let templates: Api<AIMClusterServiceTemplate> = Api::all(ns.client.clone());
    let made = templates.list(&by_model(&name)).await.unwrap().items;
    assert_eq!(made.len(), 2);
    for t in &made {
        let n = t.name_any();
        assert!(
            n.len() <= 63 && n.starts_with(&format!("{name}-1x-mi3")),
            "{n}"
        );
        assert_eq!(t.labels()["aim.eai.amd.com/origin"], "auto-generated");
        let owner = &t.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("AIMClusterModel", m.uid().unwrap().as_str(), Some(true))
        );
        assert_eq!(t.spec.common.model_name, name);
    }
    // M-01: read once. The model reconciled several times (its templates were created, discovered and
    // settled); the registry served the manifest of this tag exactly once.
    let log =
        std::fs::read_to_string(xtask::testenv::workdir().join("registry/anonymous/registry.log"))
            .unwrap();
    let reads = log
        .lines()
        .filter(|l| l.contains(&format!("\"GET /v2/aim/{name}/manifests/0.8.5 ")))
        .count();
    assert_eq!(reads, 1, "manifest reads of {image}");
    let ready = made
        .iter()
        .find(|t| t.name_any().contains("mi300x"))
        .unwrap();
    assert_eq!(
        ready.status.as_ref().unwrap().status,
        TemplatePhase::Ready,
        "the MI300X template discovered"
    );

    // M-03: deleting the model deletes its templates.
    models
        .delete(&name, &DeleteParams::foreground())
        .await
        .unwrap();
    for t in &made {
        wait_gone(
            &templates,
            &t.name_any(),
            "template of a deleted model",
            WAIT,
        )
        .await;
    }
}

// M-01: the image behind basic auth is read with the model's pull secret; a wrong secret and no secret
// fail, each saying which; a template of a Failed model says so.
#[tokio::test]
async fn pull_secrets_reach_the_authenticated_registry() {
    let ns = setup("mdl-auth", DRY_RUN_OK).await;
    let r = regs();
    let (user, password) = r.credentials();
    let repo = format!("aim/{}", ns.name);
    // The older label key, single quotes and no brackets, as some images carry it.
    push_image(
        &r.auth,
        Some((user, password)),
        &repo,
        "1",
        &label(
            RECOMMENDED_DEPLOYMENTS_LABEL_LEGACY,
            "{'gpuModel': 'MI300X', 'gpuCount': 1, 'precision': 'fp8', 'metric': 'latency'}",
        ),
        "amd64",
    )
    .await
    .unwrap();
    let image = format!("{}/{repo}:1", r.auth);
    let secrets: Api<Secret> = ns.api();
    apply(
        &secrets,
        &pull_secret(&ns.name, "regcred", &r.auth, user, password),
    )
    .await;
    apply(
        &secrets,
        &pull_secret(&ns.name, "badcred", &r.auth, user, "wrong"),
    )
    .await;
    let models: Api<AIMModel> = ns.api();
    apply(&models, &ns_model(&ns.name, "good", &image, &["regcred"])).await;
    apply(&models, &ns_model(&ns.name, "bad", &image, &["badcred"])).await;
    apply(&models, &ns_model(&ns.name, "none", &image, &[])).await;
    apply(&models, &ns_model(&ns.name, "missing", &image, &["nosuch"])).await;

    let good = wait_for(
        &models,
        "good",
        "model Ready with the right secret",
        WAIT,
        model_phase(ModelPhase::Ready, Some(1)),
    )
    .await;
    let tname = &good.status.as_ref().unwrap().templates[0].name;
    let t = ns.api::<AIMServiceTemplate>().get(tname).await.unwrap();
    assert_eq!(t.status.unwrap().status, TemplatePhase::Ready);
    assert_eq!(t.spec.common.precision, Some(Precision::Fp8));

    let bad = wait_for(
        &models,
        "bad",
        "wrong password refused",
        WAIT,
        metadata_failed(reasons::REGISTRY_UNAUTHORIZED),
    )
    .await;
    let c = model_condition(bad.status.as_ref().unwrap(), types::METADATA_EXTRACTED);
    assert!(
        c.message.contains("refused the credentials"),
        "{}",
        c.message
    );
    assert!(c.message.contains("retry after a"), "{}", c.message);
    let none = wait_for(
        &models,
        "none",
        "no secret refused",
        WAIT,
        metadata_failed(reasons::REGISTRY_UNAUTHORIZED),
    )
    .await;
    let c = model_condition(none.status.as_ref().unwrap(), types::METADATA_EXTRACTED);
    assert!(c.message.contains("requires credentials"), "{}", c.message);
    let missing = wait_for(
        &models,
        "missing",
        "a missing secret named",
        WAIT,
        metadata_failed(reasons::PULL_SECRET_INVALID),
    )
    .await;
    let c = model_condition(missing.status.as_ref().unwrap(), types::METADATA_EXTRACTED);
    assert!(
        c.message.contains("\"nosuch\" does not exist"),
        "{}",
        c.message
    );
    assert!(
        bad.status.unwrap().templates.is_empty(),
        "a failed model creates nothing"
    );

    // A cluster model reads its pull secret from the operator's namespace.
    let secret_name = format!("{}-regcred", ns.name);
    let system_secrets: Api<Secret> = Api::namespaced(ns.client.clone(), SYSTEM_NAMESPACE);
    apply(
        &system_secrets,
        &pull_secret(SYSTEM_NAMESPACE, &secret_name, &r.auth, user, password),
    )
    .await;
    let cluster_models: Api<AIMClusterModel> = Api::all(ns.client.clone());
    let cm_name = format!("{}-cm", ns.name);
    let cm: AIMClusterModel = serde_json::from_value(serde_json::json!({
        "apiVersion": "aim.eai.amd.com/v1alpha1", "kind": "AIMClusterModel",
        "metadata": { "name": cm_name },
        "spec": { "image": image, "imagePullSecrets": [{ "name": secret_name }] },
    }))
    .unwrap();
    apply(&cluster_models, &cm).await;
    let m = wait_for(
        &cluster_models,
        &cm_name,
        "cluster model read with the operator namespace's secret",
        WAIT,
        |m: Option<&AIMClusterModel>| {
            m.and_then(|m| m.status.as_ref())
                .is_some_and(|s| s.image_metadata.is_some())
        },
    )
    .await;
    assert_eq!(m.status.unwrap().templates.len(), 1);
    cluster_models
        .delete(&cm_name, &DeleteParams::default())
        .await
        .unwrap();
    system_secrets
        .delete(&secret_name, &DeleteParams::default())
        .await
        .unwrap();

    // A user's template of the failed model names the failure in its own condition.
    let templates: Api<AIMServiceTemplate> = ns.api();
    apply(&templates, &template(&ns.name, "users", on_mi300x("bad"))).await;
    let t = wait_for(
        &templates,
        "users",
        "template of a failed model says so",
        WAIT,
        move |t: Option<&AIMServiceTemplate>| {
            t.and_then(|t| t.status.as_ref()).is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == types::MODEL_FOUND && c.reason == reasons::MODEL_FAILED)
            })
        },
    )
    .await;
    let c = condition(t.status.as_ref().unwrap(), types::MODEL_FOUND);
    assert!(c.message.contains("the model is Failed"), "{}", c.message);
}

// M-01: an index is resolved to linux/amd64; garbage, a missing label, a missing tag and an unreachable
// registry each fail with their own reason; a model for a GPU the cluster lacks is NotAvailable.
#[tokio::test]
async fn labels_are_read_from_the_right_image_and_bad_ones_say_why() {
    let ns = setup("mdl-var", DRY_RUN_OK).await;
    let r = regs();
    let repo = format!("aim/{}", ns.name);
    // arm64 first, with other labels: reading the index's first entry would give an MI325X template.
    let index_digest = push_index(
        &r.anonymous,
        None,
        &repo,
        "multi",
        &[
            (
                "arm64",
                deployments(serde_json::json!([{"gpuModel": "MI325X", "gpuCount": 1}])),
            ),
            ("amd64", deployments(serde_json::json!([mi300x_fp8()]))),
        ],
    )
    .await
    .unwrap();
    push_image(
        &r.anonymous,
        None,
        &repo,
        "garbage",
        &label(RECOMMENDED_DEPLOYMENTS_LABEL, "}}not json at all{{"),
        "amd64",
    )
    .await
    .unwrap();
    push_image(
        &r.anonymous,
        None,
        &repo,
        "nolabel",
        &label("org.opencontainers.image.title", "x"),
        "amd64",
    )
    .await
    .unwrap();
    push_image(
        &r.anonymous,
        None,
        &repo,
        "absent-gpu",
        &deployments(serde_json::json!([mi355x_fp8()])),
        "amd64",
    )
    .await
    .unwrap();
    let img = |tag: &str| format!("{}/{repo}:{tag}", r.anonymous);
    let models: Api<AIMModel> = ns.api();
    apply(&models, &ns_model(&ns.name, "multi", &img("multi"), &[])).await;
    apply(
        &models,
        &ns_model(&ns.name, "garbage", &img("garbage"), &[]),
    )
    .await;
    apply(
        &models,
        &ns_model(&ns.name, "nolabel", &img("nolabel"), &[]),
    )
    .await;
    apply(
        &models,
        &ns_model(&ns.name, "notag", &img("does-not-exist"), &[]),
    )
    .await;
    apply(
        &models,
        &ns_model(&ns.name, "absent", &img("absent-gpu"), &[]),
    )
    .await;
    let closed = format!("{}/x/y:1", closed_registry());
    apply(&models, &ns_model(&ns.name, "unreachable", &closed, &[])).await;

    let multi = wait_for(
        &models,
        "multi",
        "multi-arch model Ready",
        WAIT,
        model_phase(ModelPhase::Ready, Some(1)),
    )
    .await;
    let st = multi.status.unwrap();
    assert!(
        st.templates[0].name.starts_with("multi-1x-mi300x-"),
        "{:?}",
        st.templates
    );
    let digest = st.image_metadata.unwrap().digest.unwrap();
    assert_ne!(
        digest, index_digest,
        "the amd64 image's digest, not the index's"
    );

    for (name, reason, says) in [
        ("garbage", reasons::LABEL_UNPARSABLE, "cannot be read"),
        ("nolabel", reasons::LABEL_MISSING, "has no label"),
        ("notag", reasons::IMAGE_NOT_FOUND, "not found"),
        (
            "unreachable",
            reasons::REGISTRY_UNREACHABLE,
            "reach registry",
        ),
    ] {
        let m = wait_for(&models, name, name, WAIT, metadata_failed(reason)).await;
        let c = model_condition(m.status.as_ref().unwrap(), types::METADATA_EXTRACTED);
        assert!(c.message.contains(says), "{name}: {}", c.message);
        let ready = model_condition(m.status.as_ref().unwrap(), types::READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", reason)
        );
    }
    // M-04: every template NotAvailable → NotAvailable.
    wait_for(
        &models,
        "absent",
        "model for an absent GPU",
        WAIT,
        model_phase(ModelPhase::NotAvailable, Some(1)),
    )
    .await;
}

// M-03: a new tag without a deployment removes that template, and only it; user-made templates of the
// same model are never touched; createServiceTemplates: false creates none; inline metadata needs no
// registry.
#[tokio::test]
async fn a_new_tag_replaces_templates_and_leaves_users_alone() {
    let ns = setup("mdl-tag", DRY_RUN_OK).await;
    let r = regs();
    let repo = format!("aim/{}", ns.name);
    let fp16 = serde_json::json!({"gpuModel": "MI300X", "gpuCount": 1, "precision": "fp16", "metric": "throughput"});
    push_image(
        &r.anonymous,
        None,
        &repo,
        "1",
        &deployments(serde_json::json!([mi300x_fp8(), fp16])),
        "amd64",
    )
    .await
    .unwrap();
    push_image(
        &r.anonymous,
        None,
        &repo,
        "2",
        &deployments(serde_json::json!([mi300x_fp8()])),
        "amd64",
    )
    .await
    .unwrap();
    let img = |tag: &str| format!("{}/{repo}:{tag}", r.anonymous);
    let templates: Api<AIMServiceTemplate> = ns.api();
    apply(&templates, &template(&ns.name, "mine", on_mi300x("qwen"))).await;
    let models: Api<AIMModel> = ns.api();
    apply(&models, &ns_model(&ns.name, "qwen", &img("1"), &[])).await;
    let m = wait_for(
        &models,
        "qwen",
        "two templates",
        WAIT,
        model_phase(ModelPhase::Ready, Some(2)),
    )
    .await;
    let before: BTreeMap<String, String> = templates
        .list(&by_model("qwen"))
        .await
        .unwrap()
        .items
        .iter()
        .map(|t| (t.name_any(), t.uid().unwrap()))
        .collect();
    assert_eq!(before.len(), 2);
    let dropped = before
        .keys()
        .find(|n| n.contains("tput-fp16"))
        .unwrap()
        .clone();
    let kept = before
        .keys()
        .find(|n| n.contains("lat-fp8"))
        .unwrap()
        .clone();

    apply(&models, &ns_model(&ns.name, "qwen", &img("2"), &[])).await;
    wait_gone(
        &templates,
        &dropped,
        "template of a dropped deployment",
        WAIT,
    )
    .await;
    let m2 = wait_for(
        &models,
        "qwen",
        "one template",
        WAIT,
        model_phase(ModelPhase::Ready, Some(1)),
    )
    .await;
    assert_ne!(
        m.status.unwrap().image_metadata.unwrap().digest,
        m2.status.unwrap().image_metadata.unwrap().digest,
        "the new tag was read"
    );
    assert_eq!(
        templates.get(&kept).await.unwrap().uid().unwrap(),
        before[&kept],
        "the kept template is the same object"
    );
    let mine = templates.get("mine").await.unwrap();
    assert!(
        mine.owner_references().is_empty(),
        "the user's template is untouched"
    );
    assert!(!mine.labels().contains_key("aim.eai.amd.com/origin"));

    // createServiceTemplates: false creates none.
    let mut off = ns_model(&ns.name, "off", &img("1"), &[]);
    off.spec.common.discovery.create_service_templates = false;
    apply(&models, &off).await;
    wait_for(
        &models,
        "off",
        "model without templates",
        WAIT,
        model_phase(ModelPhase::Ready, Some(0)),
    )
    .await;
    assert!(
        templates
            .list(&by_model("off"))
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // Inline metadata: the registry (unresolvable here) is never contacted.
    let mut inline = ns_model(&ns.name, "inline", "registry.invalid/aim/x:1", &[]);
    inline.spec.common.image_metadata = Some(ImageMetadata {
        labels: BTreeMap::new(),
        recommended_deployments: vec![serde_json::from_value(mi300x_fp8()).unwrap()],
    });
    apply(&models, &inline).await;
    let m = wait_for(
        &models,
        "inline",
        "inline model",
        WAIT,
        model_phase(ModelPhase::Ready, Some(1)),
    )
    .await;
    let st = m.status.unwrap();
    assert!(st.image_metadata.is_none());
    assert_eq!(
        model_condition(&st, types::METADATA_EXTRACTED).reason,
        reasons::INLINE_METADATA
    );
    let _: &TestNamespace = &ns;
}

// M-04 end to end: when every template of a model fails discovery, the model is Failed (its metadata was
// read fine: the templates are the reason, and the Ready condition says so).
#[tokio::test]
async fn a_model_whose_templates_all_fail_is_failed() {
    let ns = setup("mdl-fail", DRY_RUN_OK).await;
    let r = regs();
    let repo = format!("aim/{}", ns.name);
    push_image(
        &r.anonymous,
        None,
        &repo,
        "1",
        &deployments(serde_json::json!([mi300x_fp8()])),
        "amd64",
    )
    .await
    .unwrap();
    let mut m = ns_model(
        &ns.name,
        "broken",
        &format!("{}/{repo}:1", r.anonymous),
        &[],
    );
    // The model's env reaches its discovery pods: every dry-run fails.
    m.spec.common.env = vec![
        serde_json::from_value(serde_json::json!({"name": "AIM_TEST_OUTCOME", "value": "fail"}))
            .unwrap(),
    ];
    let models: Api<AIMModel> = ns.api();
    apply(&models, &m).await;
    let m = wait_for(
        &models,
        "broken",
        "model Failed by its templates",
        WAIT,
        model_phase(ModelPhase::Failed, Some(1)),
    )
    .await;
    let st = m.status.unwrap();
    assert_eq!(st.templates[0].status, TemplatePhase::Failed);
    let extracted = model_condition(&st, types::METADATA_EXTRACTED);
    assert_eq!(extracted.status, "True", "the metadata is fine");
    let ready = model_condition(&st, types::READY);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "Failed")
    );
    assert_eq!(ready.message, "1 template: 1 Failed");
}
