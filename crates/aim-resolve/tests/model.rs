//! The model controller's decisions without a cluster (M-01…M-04).

use aim_api::conditions::{reasons, types};
use aim_api::*;
use aim_resolve::model::{
    MetadataFailure, ModelDecision, ModelObservation, ModelPlan, ModelView, RegistryNeed,
    RegistryRead, TemplateSeen, aggregate, decide_model,
};
use std::collections::BTreeMap;
use std::time::Duration;

const NOW: i64 = 1_800_000_000;
const IMAGE: &str = "registry.example.test/aim/qwen:1";
const TWO: &str = r#"[{"gpuModel":"MI300X","gpuCount":1,"precision":"fp8","metric":"latency"},
                     {"gpuModel":"MI325X","gpuCount":2,"precision":"fp16","metric":"throughput"}]"#;

/// A template as it exists in the world: (name, labels, controller uid, spec, phase).
#[derive(Clone)]
struct Tpl {
    name: String,
    labels: BTreeMap<String, String>,
    controller: Option<String>,
    spec: ServiceTemplateCommon,
    phase: Option<TemplatePhase>,
}

struct World {
    kind: &'static str,
    name: String,
    namespace: Option<&'static str>,
    generation: i64,
    spec: ModelCommon,
    status: Option<ModelStatus>,
    templates: Vec<Tpl>,
    /// What the API server refused of the last plan, by template name.
    refused: BTreeMap<String, String>,
    now: i64,
}

fn labels(value: &str) -> BTreeMap<String, String> {
    [(RECOMMENDED_DEPLOYMENTS_LABEL.to_string(), value.to_string())].into()
}

impl World {
    fn cluster() -> Self {
        Self {
            kind: "AIMClusterModel",
            name: "qwen".into(),
            namespace: None,
            generation: 1,
            spec: serde_json::from_value(serde_json::json!({
                "image": IMAGE, "imagePullSecrets": [{"name": "regcred"}]
            }))
            .unwrap(),
            status: None,
            templates: Vec::new(),
            refused: BTreeMap::new(),
            now: NOW,
        }
    }

    fn obs(&self, registry: RegistryRead) -> ModelObservation<'_> {
        ModelObservation {
            model: ModelView {
                kind: self.kind,
                name: &self.name,
                namespace: self.namespace,
                uid: "model-uid",
                generation: Some(self.generation),
                spec: &self.spec,
                status: self.status.as_ref(),
            },
            templates: self
                .templates
                .iter()
                .map(|t| TemplateSeen {
                    name: &t.name,
                    labels: Some(&t.labels),
                    controller_uid: t.controller.as_deref(),
                    spec: &t.spec,
                    phase: t.phase,
                })
                .collect(),
            registry,
            refused: self.refused.clone(),
            operator_namespace: "aim-system",
            backoff_base: Duration::from_secs(60),
            now: jiff::Timestamp::from_second(self.now).unwrap(),
        }
    }

    fn decide(&self, registry: RegistryRead) -> ModelDecision {
        decide_model(&self.obs(registry))
    }

    /// Decides, answering a registry need with `answer`; applies the plan to the world.
    fn step(&mut self, answer: &RegistryRead) -> ModelPlan {
        let plan = match self.decide(RegistryRead::NotRead) {
            ModelDecision::Plan(p) => *p,
            ModelDecision::Need(_) => match self.decide(answer.clone()) {
                ModelDecision::Plan(p) => *p,
                ModelDecision::Need(n) => panic!("asked twice: {n:?}"),
            },
        };
        self.apply(&plan);
        plan
    }

    fn apply(&mut self, plan: &ModelPlan) {
        self.status = Some(plan.status.clone());
        self.templates.retain(|t| !plan.delete.contains(&t.name));
        for d in &plan.apply {
            self.templates.retain(|t| t.name != d.name);
            self.templates.push(Tpl {
                name: d.name.clone(),
                labels: d.labels.clone(),
                controller: Some(d.owner.uid.clone()),
                spec: d.spec.clone(),
                phase: None,
            });
        }
    }

    fn set_phase(&mut self, prefix: &str, phase: TemplatePhase) {
        for t in &mut self.templates {
            if t.name.starts_with(prefix) {
                t.phase = Some(phase);
            }
        }
    }
}

fn read(value: &str) -> RegistryRead {
    RegistryRead::Read {
        digest: Some("sha256:abc".into()),
        labels: labels(value),
    }
}

fn cond<'a>(
    s: &'a ModelStatus,
    t: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    s.conditions
        .iter()
        .find(|c| c.type_ == t)
        .unwrap_or_else(|| panic!("no {t} condition in {:?}", s.conditions))
}

// M-01: a cluster model asks for its image with its pull secrets, read from the operator namespace.
#[test]
fn m01_asks_the_registry_with_the_models_secrets() {
    let w = World::cluster();
    assert_eq!(
        w.decide(RegistryRead::NotRead),
        ModelDecision::Need(RegistryNeed {
            image: IMAGE.into(),
            pull_secrets: vec!["regcred".into()],
            secret_namespace: "aim-system".into(),
        })
    );
    let mut ns = World::cluster();
    ns.kind = "AIMModel";
    ns.namespace = Some("team");
    match ns.decide(RegistryRead::NotRead) {
        ModelDecision::Need(n) => assert_eq!(n.secret_namespace, "team"),
        other => panic!("{other:?}"),
    }
}

// M-01/M-02: labels read once, cached with the digest; one template per deployment.
#[test]
fn m01_m02_read_once_then_cached() {
    let mut w = World::cluster();
    let p = w.step(&read(TWO));
    let cached = p.status.image_metadata.as_ref().unwrap();
    assert_eq!(
        (cached.image.as_str(), cached.digest.as_deref()),
        (IMAGE, Some("sha256:abc"))
    );
    assert_eq!(cached.metadata.recommended_deployments.len(), 2);
    assert_eq!(p.apply.len(), 2);
    assert!(p.apply.iter().all(|d| d.namespace.is_none()));
    assert_eq!(p.registry_result, Some(Ok(())));
    let c = cond(&p.status, types::METADATA_EXTRACTED);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", reasons::METADATA_READ)
    );
    assert!(p.events.iter().any(|e| e.reason == "TemplatesCreated"));
    // Second decision: no registry read, nothing to apply.
    match w.decide(RegistryRead::NotRead) {
        ModelDecision::Plan(p2) => {
            assert!(p2.apply.is_empty() && p2.delete.is_empty());
            assert_eq!(p2.status, p.status);
            assert!(p2.events.is_empty(), "{:?}", p2.events);
        }
        ModelDecision::Need(n) => panic!("fetched twice: {n:?}"),
    }
    // A new image reference is read again.
    w.spec.image = "registry.example.test/aim/qwen:2".into();
    assert!(matches!(
        w.decide(RegistryRead::NotRead),
        ModelDecision::Need(_)
    ));
}

// M-04: the model follows its templates.
#[test]
fn m04_status_follows_the_templates() {
    let mut w = World::cluster();
    let p = w.step(&read(TWO));
    assert_eq!(p.status.status, ModelPhase::Progressing);
    assert_eq!(p.status.templates.len(), 2);
    assert!(
        p.status
            .templates
            .iter()
            .all(|t| t.status == TemplatePhase::Pending)
    );
    w.set_phase("qwen-1x-mi300x", TemplatePhase::Ready);
    w.set_phase("qwen-2x-mi325x", TemplatePhase::NotAvailable);
    let p = w.step(&RegistryRead::NotRead);
    assert_eq!(p.status.status, ModelPhase::Ready);
    let ready = cond(&p.status, types::READY);
    assert_eq!(ready.message, "2 templates: 1 NotAvailable, 1 Ready");
    assert!(p.events.iter().any(|e| e.reason == "Ready" && !e.warning));
    w.set_phase("qwen-1x-mi300x", TemplatePhase::Failed);
    let p = w.step(&RegistryRead::NotRead);
    assert_eq!(p.status.status, ModelPhase::Degraded);
    assert!(p.events.iter().any(|e| e.reason == "Degraded" && e.warning));
}

// M-03: a deployment that disappears removes its template; user-made templates are never touched or
// counted.
#[test]
fn m03_removed_deployment_removes_only_our_template() {
    let mut w = World::cluster();
    w.templates.push(Tpl {
        name: "users-own".into(),
        labels: BTreeMap::new(),
        controller: None,
        spec: ServiceTemplateCommon::for_model("qwen"),
        phase: Some(TemplatePhase::Failed),
    });
    w.step(&read(TWO));
    w.set_phase("qwen-", TemplatePhase::Ready);
    let p = w.step(&RegistryRead::NotRead);
    assert_eq!(
        p.status.status,
        ModelPhase::Ready,
        "the user's Failed template is not ours"
    );
    w.spec.image = "registry.example.test/aim/qwen:2".into();
    let p = w.step(&read(
        r#"[{"gpuModel":"MI300X","gpuCount":1,"precision":"fp8","metric":"latency"}]"#,
    ));
    assert_eq!(p.delete.len(), 1);
    assert!(p.delete[0].starts_with("qwen-2x-mi325x-tput-fp16-"));
    assert!(p.apply.is_empty());
    assert!(w.templates.iter().any(|t| t.name == "users-own"));
    assert_eq!(p.status.templates.len(), 1);
}

// M-02: a name held by a template the model did not make is left alone and reported.
#[test]
fn m02_a_taken_name_is_reported_not_overwritten() {
    let mut probe = World::cluster();
    let name = probe.step(&read(TWO)).apply[0].name.clone();
    let mut w = World::cluster();
    w.templates.push(Tpl {
        name: name.clone(),
        labels: BTreeMap::new(),
        controller: Some("someone-else".into()),
        spec: ServiceTemplateCommon::for_model("other"),
        phase: None,
    });
    let p = w.step(&read(TWO));
    assert_eq!(p.apply.len(), 1);
    assert!(p.apply.iter().all(|d| d.name != name));
    let c = cond(&p.status, types::TEMPLATES_CREATED);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", reasons::TEMPLATE_NAME_TAKEN)
    );
    assert!(c.message.contains(&name));
}

// M-02: createServiceTemplates: false creates none, and removes those made before.
#[test]
fn m02_creation_off_creates_none() {
    let mut w = World::cluster();
    w.step(&read(TWO));
    w.spec.discovery.create_service_templates = false;
    let p = w.step(&RegistryRead::NotRead);
    assert!(p.apply.is_empty());
    assert_eq!(p.delete.len(), 2);
    assert_eq!(p.status.status, ModelPhase::Ready);
    assert!(p.status.templates.is_empty());
}

// M-01: inline metadata skips the registry entirely.
#[test]
fn m01_inline_metadata_needs_no_registry() {
    let mut w = World::cluster();
    w.spec.image_metadata = Some(ImageMetadata {
        labels: BTreeMap::new(),
        recommended_deployments: vec![RecommendedDeployment {
            gpu_model: Some("MI300X".into()),
            ..Default::default()
        }],
    });
    match w.decide(RegistryRead::NotRead) {
        ModelDecision::Plan(p) => {
            assert_eq!(p.apply.len(), 1);
            assert_eq!(p.registry_result, None);
            assert_eq!(
                cond(&p.status, types::METADATA_EXTRACTED).reason,
                reasons::INLINE_METADATA
            );
        }
        ModelDecision::Need(n) => panic!("contacted the registry: {n:?}"),
    }
    // Extraction off and no inline metadata: nothing to do, Ready.
    let mut off = World::cluster();
    off.spec.discovery.extract_metadata = false;
    match off.decide(RegistryRead::NotRead) {
        ModelDecision::Plan(p) => {
            assert!(p.apply.is_empty());
            assert_eq!(p.status.status, ModelPhase::Ready);
        }
        ModelDecision::Need(n) => panic!("contacted the registry: {n:?}"),
    }
}

// M-01: every failure is a condition that says which, a Warning per attempt, and the scheduled backoff;
// no read during the backoff; a spec change retries at once.
#[test]
fn m01_failures_back_off_and_say_which() {
    for (failure, reason) in [
        (
            MetadataFailure::Unreachable("cannot connect to registry.example.test".into()),
            reasons::REGISTRY_UNREACHABLE,
        ),
        (
            MetadataFailure::Unauthorized("registry.example.test refused the credentials".into()),
            reasons::REGISTRY_UNAUTHORIZED,
        ),
        (
            MetadataFailure::NotFound("tag 1 not found".into()),
            reasons::IMAGE_NOT_FOUND,
        ),
        (
            MetadataFailure::PullSecret("secret regcred not found".into()),
            reasons::PULL_SECRET_INVALID,
        ),
    ] {
        let mut w = World::cluster();
        let p = w.step(&RegistryRead::Failed(failure.clone()));
        assert_eq!(p.status.status, ModelPhase::Failed);
        let c = cond(&p.status, types::METADATA_EXTRACTED);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", reason));
        assert!(c.message.contains(failure.message()), "{}", c.message);
        assert!(
            c.message
                .contains("attempt 1 failed, retry after a 1m backoff"),
            "{}",
            c.message
        );
        assert_eq!(cond(&p.status, types::READY).reason, reason);
        assert_eq!(p.requeue_after, Some(Duration::from_secs(60)));
        assert_eq!(
            p.events.iter().filter(|e| e.warning).count(),
            1,
            "{:?}",
            p.events
        );
        assert!(p.apply.is_empty());
        // During the backoff: no read, no change, no event.
        w.now += 30;
        match w.decide(RegistryRead::NotRead) {
            ModelDecision::Plan(q) => {
                assert_eq!(q.status, p.status);
                assert!(q.events.is_empty());
                assert_eq!(q.requeue_after, Some(Duration::from_secs(30)));
            }
            ModelDecision::Need(n) => panic!("read during the backoff: {n:?}"),
        }
        // Due: read again; the second failure waits twice as long.
        w.now += 30;
        let p = w.step(&RegistryRead::Failed(failure.clone()));
        assert_eq!(p.status.registry.as_ref().unwrap().attempts, 2);
        assert_eq!(p.requeue_after, Some(Duration::from_secs(120)));
        // A changed spec (a fixed pull secret) is tried at once.
        w.generation += 1;
        assert!(matches!(
            w.decide(RegistryRead::NotRead),
            ModelDecision::Need(_)
        ));
        // Success clears the failure.
        let p = w.step(&read(TWO));
        assert!(p.status.registry.is_none());
        assert_eq!(p.status.status, ModelPhase::Progressing);
    }
}

// M-01: a missing and a garbage label fail like registry errors.
#[test]
fn m01_label_problems_fail_the_model() {
    let mut w = World::cluster();
    let p = w.step(&RegistryRead::Read {
        digest: None,
        labels: BTreeMap::new(),
    });
    assert_eq!(
        cond(&p.status, types::METADATA_EXTRACTED).reason,
        reasons::LABEL_MISSING
    );
    assert_eq!(p.registry_result, Some(Err("label_missing")));
    let mut w = World::cluster();
    let p = w.step(&read("{{{ not json"));
    assert_eq!(
        cond(&p.status, types::METADATA_EXTRACTED).reason,
        reasons::LABEL_UNPARSABLE
    );
    assert_eq!(p.status.status, ModelPhase::Failed);
    assert!(
        p.status.image_metadata.is_none(),
        "a bad label is not cached"
    );
}

// M-03: a failed read of a new image keeps the templates of the old one.
#[test]
fn m03_a_failed_read_keeps_existing_templates() {
    let mut w = World::cluster();
    w.step(&read(TWO));
    w.spec.image = "registry.example.test/aim/qwen:404".into();
    let p = w.step(&RegistryRead::Failed(MetadataFailure::NotFound(
        "no such tag".into(),
    )));
    assert!(p.delete.is_empty());
    assert_eq!(w.templates.len(), 2);
}

/// M-04 as the rule reads, one clause after the other.
fn oracle(phases: &[Option<TemplatePhase>]) -> ModelPhase {
    use TemplatePhase as T;
    let all = |f: &dyn Fn(Option<T>) -> bool| phases.iter().all(|p| f(*p));
    let any = |f: &dyn Fn(Option<T>) -> bool| phases.iter().any(|p| f(*p));
    if phases.is_empty() {
        return ModelPhase::Ready;
    }
    if all(&|p| p == Some(T::Ready)) {
        return ModelPhase::Ready;
    }
    if any(&|p| p == Some(T::Ready)) && all(&|p| matches!(p, Some(T::Ready | T::NotAvailable))) {
        return ModelPhase::Ready;
    }
    if all(&|p| p == Some(T::NotAvailable)) {
        return ModelPhase::NotAvailable;
    }
    if all(&|p| p == Some(T::Failed)) {
        return ModelPhase::Failed;
    }
    if any(&|p| matches!(p, Some(T::Failed | T::Degraded))) {
        return ModelPhase::Degraded;
    }
    ModelPhase::Progressing
}

// M-04 over every combination of up to four templates (none yet counts as Pending).
#[test]
fn m04_every_combination() {
    let values: Vec<Option<TemplatePhase>> = std::iter::once(None)
        .chain(TemplatePhase::ALL.iter().copied().map(Some))
        .collect();
    let mut seen = 0;
    for n in 0..=4u32 {
        for code in 0..values.len().pow(n) {
            let mut c = code;
            let phases: Vec<_> = (0..n)
                .map(|_| {
                    let v = values[c % values.len()];
                    c /= values.len();
                    v
                })
                .collect();
            assert_eq!(aggregate(&phases), oracle(&phases), "{phases:?}");
            seen += 1;
        }
    }
    assert_eq!(seen, 1 + 7 + 49 + 343 + 2401);
}

// M-02: a model name longer than a label value holds (or with dots) gives templates whose labels are
// valid: the model label is cut and hashed, the full name is in an annotation; names stay DNS labels.
#[test]
fn m02_long_and_dotted_model_names_give_valid_labels() {
    for name in [
        format!("{}.v1", "very-long-model-name-".repeat(4)),
        "qwen3.5-32b.instruct".to_string(),
        "m".repeat(253),
    ] {
        let mut w = World::cluster();
        w.name = name.clone();
        let p = w.step(&read(TWO));
        assert_eq!(p.apply.len(), 2, "{name}");
        for d in &p.apply {
            assert!(
                aim_resolve::names::is_label_value(&d.labels[labels::MODEL]),
                "{name}"
            );
            assert!(aim_discovery::is_dns1123_label(&d.name), "{}", d.name);
            for v in d.labels.values() {
                assert!(aim_resolve::names::is_label_value(v), "{v}");
            }
            assert_eq!(d.spec.model_name, name);
            if name.len() > 63 {
                assert_eq!(d.annotations[labels::MODEL_NAME], name);
            } else {
                assert_eq!(d.labels[labels::MODEL], name);
                assert!(d.annotations.is_empty());
            }
        }
        // Applied: the labels match, so nothing is written again.
        match w.decide(RegistryRead::NotRead) {
            ModelDecision::Plan(p2) => assert!(p2.apply.is_empty(), "{name}"),
            ModelDecision::Need(n) => panic!("fetched twice: {n:?}"),
        }
    }
}

// M-02 (T-31): a template the API server refuses reaches the model's status with the server's
// message and one Warning; the other templates are still made, the model is retried after the
// backoff, and a repeat of the same refusal says nothing new.
#[test]
fn m02_a_refused_template_reaches_status() {
    let mut w = World::cluster();
    let first = match w.decide(read(TWO)) {
        ModelDecision::Plan(p) => *p,
        ModelDecision::Need(n) => panic!("{n:?}"),
    };
    let refused_name = first.apply[0].name.clone();
    let why = "admission webhook \"deny.example\" denied the request: no";
    w.refused = [(refused_name.clone(), why.to_string())].into();
    let p = w.step(&read(TWO));
    assert!(
        p.apply.iter().all(|d| d.name != refused_name),
        "not applied again"
    );
    assert_eq!(p.apply.len(), 1);
    let c = cond(&p.status, types::TEMPLATES_CREATED);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", reasons::TEMPLATE_REFUSED)
    );
    assert!(
        c.message.contains(&refused_name) && c.message.contains(why),
        "{}",
        c.message
    );
    let warnings: Vec<_> = p
        .events
        .iter()
        .filter(|e| e.reason == reasons::TEMPLATE_REFUSED)
        .collect();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].warning && warnings[0].message.contains(why));
    assert_eq!(p.requeue_after, Some(Duration::from_secs(60)));
    // M-04: the refused template counts as Failed, the other is Pending.
    assert_eq!(p.status.status, ModelPhase::Degraded);
    let st = p
        .status
        .templates
        .iter()
        .find(|t| t.name == refused_name)
        .unwrap();
    assert_eq!(st.status, TemplatePhase::Failed);
    assert!(
        cond(&p.status, types::READY)
            .message
            .contains(&refused_name)
    );
    // The same refusal again: the status is unchanged and no second Warning.
    let again = match w.decide(RegistryRead::NotRead) {
        ModelDecision::Plan(p) => *p,
        ModelDecision::Need(n) => panic!("{n:?}"),
    };
    assert_eq!(again.status, p.status);
    assert!(again.events.is_empty(), "{:?}", again.events);
    // Taken once the refusal is gone.
    w.refused.clear();
    let p = w.step(&RegistryRead::NotRead);
    assert!(p.apply.iter().any(|d| d.name == refused_name));
    let c = cond(&p.status, types::TEMPLATES_CREATED);
    assert_eq!(c.status, "True");
}
