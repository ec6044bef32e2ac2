//! Template caches without a cluster (T-26…T-28, C-01…C-03): a row per rule, snapshots of the volume
//! and the download Job, and properties over random worlds.

use aim_api::conditions::{reasons, types};
use aim_api::*;
use aim_hardware::Inventory;
use aim_resolve::cache::*;
use aim_resolve::template::{LogRead, Observation, Slot, TemplateView};
use aim_resolve::{ConfigCandidate, Decision, decide};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, Event, Node, PersistentVolumeClaim, Pod};
use proptest::prelude::*;
use std::time::Duration;

const NOW: i64 = 1_800_000_000;
const NS: &str = "team";
const QWEN: &str = "hf://Qwen/Qwen3-32B";
const TOKENIZER: &str = "hf://Qwen/Qwen3-32B/tokenizer.json";
const GI: i64 = 1 << 30;

fn ts(at: i64) -> String {
    jiff::Timestamp::from_second(at).unwrap().to_string()
}

fn source(name: &str, uri: &str, size: Option<i64>) -> ModelSourceStatus {
    ModelSourceStatus {
        name: name.into(),
        source: uri.into(),
        size_bytes: size,
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn secret_env(name: &str) -> EnvVar {
    serde_json::from_value(serde_json::json!({
        "name": name, "valueFrom": { "secretKeyRef": { "name": "hf-creds", "key": "token" } }
    }))
    .unwrap()
}

/// A template status as the template controller writes it.
fn template_status(
    phase: TemplatePhase,
    reason: &str,
    sources: Vec<ModelSourceStatus>,
) -> ServiceTemplateStatus {
    serde_json::from_value(serde_json::json!({
        "status": phase.as_str(),
        "conditions": [{ "type": "Ready", "status": if phase == TemplatePhase::Ready { "True" } else { "False" },
            "reason": reason, "message": "why", "lastTransitionTime": ts(NOW - 100) }],
        "modelSources": sources,
    }))
    .unwrap()
}

/// Everything a cache decision sees, owned.
#[derive(Clone, Debug)]
struct World {
    name: String,
    uid: String,
    spec: AIMTemplateCacheSpec,
    status: Option<TemplateCacheStatus>,
    ns_template: Option<(ServiceTemplateCommon, Option<ServiceTemplateStatus>)>,
    cl_template: Option<(ServiceTemplateCommon, Option<ServiceTemplateStatus>)>,
    ns_config: Option<RuntimeConfigCommon>,
    cl_config: Option<RuntimeConfigCommon>,
    volumes: Vec<PersistentVolumeClaim>,
    jobs: Vec<Job>,
    pods: Vec<Pod>,
    events: Vec<Event>,
    refused: std::collections::BTreeMap<String, String>,
    now: i64,
    created: u32,
}

impl World {
    /// A cache of the Ready namespace template `tpl` with a 16 GiB model and a 2 MiB tokenizer.
    fn new() -> Self {
        let sources = vec![
            source("Qwen/Qwen3-32B", QWEN, Some(16 * GI)),
            source("tokenizer", TOKENIZER, Some(2 << 20)),
        ];
        Self {
            name: "tpl".into(),
            uid: "cache-uid".into(),
            spec: AIMTemplateCacheSpec {
                template_name: "tpl".into(),
                template_scope: TemplateScope::Namespace,
                env: vec![secret_env("HF_TOKEN")],
                storage_class_name: None,
            },
            status: None,
            ns_template: Some((
                ServiceTemplateCommon::for_model("m"),
                Some(template_status(TemplatePhase::Ready, "Ready", sources)),
            )),
            cl_template: None,
            ns_config: None,
            cl_config: None,
            volumes: Vec::new(),
            jobs: Vec::new(),
            pods: Vec::new(),
            events: Vec::new(),
            refused: Default::default(),
            now: NOW,
            created: 0,
        }
    }

    fn set_sources(&mut self, sources: Vec<ModelSourceStatus>) {
        let (_, st) = self.ns_template.as_mut().unwrap();
        st.as_mut().unwrap().model_sources = sources;
    }

    fn obs(&self) -> CacheObservation<'_> {
        fn tpl(
            t: &(ServiceTemplateCommon, Option<ServiceTemplateStatus>),
        ) -> (&ServiceTemplateCommon, Option<&ServiceTemplateStatus>) {
            (&t.0, t.1.as_ref())
        }
        CacheObservation {
            cache: CacheView {
                name: &self.name,
                namespace: NS,
                uid: &self.uid,
                generation: Some(1),
                spec: &self.spec,
                status: self.status.as_ref(),
            },
            namespace_template: self.ns_template.as_ref().map(|t| {
                let (spec, status) = tpl(t);
                CachedTemplate {
                    name: &self.spec.template_name,
                    spec,
                    status,
                }
            }),
            cluster_template: self.cl_template.as_ref().map(|t| {
                let (spec, status) = tpl(t);
                CachedTemplate {
                    name: &self.spec.template_name,
                    spec,
                    status,
                }
            }),
            namespace_config: self.ns_config.as_ref().map(|spec| ConfigCandidate {
                name: "default",
                namespace: Some(NS),
                uid: Some("rc"),
                spec,
            }),
            cluster_config: self.cl_config.as_ref().map(|spec| ConfigCandidate {
                name: "default",
                namespace: None,
                uid: Some("crc"),
                spec,
            }),
            volumes: self.volumes.iter().collect(),
            jobs: self.jobs.iter().collect(),
            pods: self.pods.iter().collect(),
            volume_events: self.events.iter().collect(),
            refused: self.refused.clone(),
            download_image: DEFAULT_DOWNLOAD_IMAGE,
            backoff_base: Duration::from_secs(60),
            now: jiff::Timestamp::from_second(self.now).unwrap(),
        }
    }

    fn decide(&self) -> CachePlan {
        decide_cache(&self.obs())
    }

    /// What the operator and Kubernetes do with a plan: objects are created (with uids and a creation
    /// time) or deleted, owners added or removed, and the status written.
    fn apply(&mut self, plan: &CachePlan) {
        let uid = self.uid.clone();
        let owner = cache_owner(&self.name, &self.uid);
        for name in &plan.delete_jobs {
            self.jobs
                .retain(|j| j.metadata.name.as_deref() != Some(name));
            self.pods.retain(|p| {
                !p.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.name == *name)
            });
        }
        for v in &plan.create_volumes {
            let mut v = v.clone();
            self.created += 1;
            v.metadata.uid = Some(format!("pvc-uid-{}", self.created));
            v.metadata.creation_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    jiff::Timestamp::from_second(self.now).unwrap(),
                ));
            self.volumes.push(v);
        }
        for j in &plan.create_jobs {
            let mut j = j.clone();
            self.created += 1;
            j.metadata.uid = Some(format!("job-uid-{}", self.created));
            self.jobs.push(j);
        }
        for change in &plan.children {
            let (kind, name) = match change {
                ChildChange::Adopt { kind, name }
                | ChildChange::Release { kind, name, .. }
                | ChildChange::Delete { kind, name } => (*kind, name.clone()),
            };
            let meta = match kind {
                ChildKind::Volume => self
                    .volumes
                    .iter_mut()
                    .find(|v| v.metadata.name.as_deref() == Some(&name))
                    .map(|v| &mut v.metadata),
                ChildKind::Job => self
                    .jobs
                    .iter_mut()
                    .find(|j| j.metadata.name.as_deref() == Some(&name))
                    .map(|j| &mut j.metadata),
            }
            .unwrap();
            match change {
                ChildChange::Adopt { .. } => meta
                    .owner_references
                    .get_or_insert_with(Vec::new)
                    .push(owner.clone()),
                ChildChange::Release { index, .. } => {
                    let refs = meta.owner_references.as_mut().unwrap();
                    assert_eq!(refs[*index].uid, uid);
                    refs.remove(*index);
                }
                ChildChange::Delete { .. } => {
                    meta.deletion_timestamp =
                        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                            jiff::Timestamp::from_second(self.now).unwrap(),
                        ))
                }
            }
        }
        self.status = Some(plan.status.clone());
    }

    fn volume_mut(&mut self, uri: &str) -> &mut PersistentVolumeClaim {
        let name = volume_name(uri);
        self.volumes
            .iter_mut()
            .find(|v| v.metadata.name.as_deref() == Some(&name))
            .unwrap()
    }

    fn bind(&mut self, uri: &str) {
        self.volume_mut(uri).status =
            Some(serde_json::from_value(serde_json::json!({ "phase": "Bound" })).unwrap());
    }

    fn job_mut(&mut self, uri: &str) -> &mut Job {
        let name = download_job_name(uri);
        self.jobs
            .iter_mut()
            .find(|j| j.metadata.name.as_deref() == Some(&name))
            .unwrap()
    }

    fn finish(&mut self, uri: &str, type_: &str, reason: &str) {
        self.job_mut(uri).status = Some(
            serde_json::from_value(serde_json::json!({
                "conditions": [{ "type": type_, "status": "True", "reason": reason }]
            }))
            .unwrap(),
        );
    }

    fn pod(&mut self, uri: &str, status: serde_json::Value) {
        let job = self.job_mut(uri).clone();
        let name = format!("{}-x", job.metadata.name.clone().unwrap());
        self.pods
            .retain(|p| p.metadata.name.as_deref() != Some(&name));
        self.pods.push(
            serde_json::from_value(serde_json::json!({
                "metadata": { "name": name, "namespace": NS, "ownerReferences": [{
                    "apiVersion": "batch/v1", "kind": "Job",
                    "name": job.metadata.name, "uid": job.metadata.uid }] },
                "status": status,
            }))
            .unwrap(),
        );
    }

    /// Runs the plan loop until nothing more is created (at most a few rounds).
    fn settle(&mut self) -> CachePlan {
        let mut plan = self.decide();
        for _ in 0..4 {
            self.apply(&plan);
            plan = self.decide();
        }
        plan
    }
}

fn cond<'a>(
    st: &'a TemplateCacheStatus,
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    st.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} in {st:#?}"))
}

fn states(st: &TemplateCacheStatus) -> Vec<CacheSourceState> {
    st.sources.iter().map(|s| s.state).collect()
}

// ---------------------------------------------------------------- T-26, T-27: the template's side

fn ns_template_spec(caching: serde_json::Value) -> AIMServiceTemplateSpec {
    serde_json::from_value(serde_json::json!({
        "modelName": "m",
        "env": [{ "name": "HF_TOKEN", "valueFrom": { "secretKeyRef": { "name": "hf-creds", "key": "token" } } }],
        "caching": caching,
    }))
    .unwrap()
}

fn with_sources() -> ServiceTemplateStatus {
    template_status(
        TemplatePhase::Progressing,
        reasons::WAITING_FOR_CACHE,
        vec![source("Qwen/Qwen3-32B", QWEN, Some(16 * GI))],
    )
}

#[test]
fn t26_a_template_with_caching_owns_a_cache_of_its_name() {
    let spec = ns_template_spec(serde_json::json!({ "enabled": true }));
    let d = desired_cache("tpl", NS, "tpl-uid", &spec, &with_sources()).unwrap();
    assert_eq!((d.name.as_str(), d.namespace.as_str()), ("tpl", NS));
    assert_eq!(d.spec.template_name, "tpl");
    assert_eq!(d.spec.template_scope, TemplateScope::Namespace);
    // env = caching.env else env: here the template's env, valueFrom untouched.
    assert_eq!(d.spec.env, spec.env);
    assert_eq!(d.spec.storage_class_name, None);
    assert_eq!(d.owner.kind, "AIMServiceTemplate");
    assert_eq!(d.owner.uid, "tpl-uid");
    assert_eq!(d.owner.controller, Some(true));
    assert_eq!(
        d.labels.get(labels::TEMPLATE).map(String::as_str),
        Some("tpl")
    );

    let spec = ns_template_spec(
        serde_json::json!({ "enabled": true, "env": [{ "name": "HF_ENDPOINT", "value": "https://mirror.example" }] }),
    );
    let d = desired_cache("tpl", NS, "tpl-uid", &spec, &with_sources()).unwrap();
    assert_eq!(
        d.spec.env,
        vec![env("HF_ENDPOINT", "https://mirror.example")]
    );
    // An empty caching.env is set: it wins over the template's env.
    let spec = ns_template_spec(serde_json::json!({ "enabled": true, "env": [] }));
    let d = desired_cache("tpl", NS, "tpl-uid", &spec, &with_sources()).unwrap();
    assert!(d.spec.env.is_empty());
}

#[test]
fn t26_no_cache_without_caching_or_before_the_sources_are_known() {
    let on = ns_template_spec(serde_json::json!({ "enabled": true }));
    let off = ns_template_spec(serde_json::json!({ "enabled": false }));
    let mut none = on.clone();
    none.caching = None;
    let unknown = ServiceTemplateStatus::default();
    for (spec, status, want) in [
        (&on, &with_sources(), true),
        (&off, &with_sources(), false),
        (&none, &with_sources(), false),
        (&on, &unknown, false),
    ] {
        assert_eq!(
            desired_cache("tpl", NS, "u", spec, status).is_some(),
            want,
            "{:?} {:?}",
            spec.caching,
            status.model_sources
        );
    }
}

fn existing<'a>(
    uid: Option<&'a str>,
    labels: &'a std::collections::BTreeMap<String, String>,
    spec: &'a AIMTemplateCacheSpec,
) -> ExistingCache<'a> {
    ExistingCache {
        controller_uid: uid,
        labels: Some(labels),
        spec,
    }
}

#[test]
fn t26_apply_update_delete_or_leave_alone() {
    let spec = ns_template_spec(serde_json::json!({ "enabled": true }));
    let desired = desired_cache("tpl", NS, "tpl-uid", &spec, &with_sources()).unwrap();
    let labels = desired.labels.clone();
    let same = desired.spec.clone();
    let mut edited = desired.spec.clone();
    edited.env = vec![env("HF_TOKEN", "other")];
    let mut with_class = desired.spec.clone();
    with_class.storage_class_name = Some("fast".into());
    let apply = CacheAction::Apply(Box::new(desired.clone()));
    let mine = Some("tpl-uid");
    for (want, found, expected) in [
        (Some(&desired), None, apply.clone()),
        (
            Some(&desired),
            Some(existing(mine, &labels, &same)),
            CacheAction::Keep,
        ),
        // A storage class someone gave the cache is not the template's business.
        (
            Some(&desired),
            Some(existing(mine, &labels, &with_class)),
            CacheAction::Keep,
        ),
        // A later edit of caching.env reaches the cache.
        (
            Some(&desired),
            Some(existing(mine, &labels, &edited)),
            apply.clone(),
        ),
        // Someone else's cache of that name is never touched.
        (
            Some(&desired),
            Some(existing(Some("other"), &labels, &edited)),
            CacheAction::Keep,
        ),
        (
            Some(&desired),
            Some(existing(None, &labels, &edited)),
            CacheAction::Keep,
        ),
        // Caching turned off: the template's cache goes, a hand-made one stays.
        (
            None,
            Some(existing(mine, &labels, &same)),
            CacheAction::Delete,
        ),
        (
            None,
            Some(existing(None, &labels, &same)),
            CacheAction::Keep,
        ),
        (None, None, CacheAction::Keep),
    ] {
        assert_eq!(
            template_cache_action("tpl-uid", want.cloned(), found),
            expected,
            "{want:?} / {found:?}"
        );
    }
}

fn cache_object(
    template: &str,
    scope: TemplateScope,
    phase: Option<CachePhase>,
) -> AIMTemplateCache {
    let mut c = AIMTemplateCache::new(
        "tpl",
        AIMTemplateCacheSpec {
            template_name: template.into(),
            template_scope: scope,
            env: Vec::new(),
            storage_class_name: None,
        },
    );
    c.status = phase.map(|p| TemplateCacheStatus {
        status: p,
        ..Default::default()
    });
    c
}

#[test]
fn t27_the_template_reads_the_phase_of_its_own_cache_only() {
    let ns = TemplateScope::Namespace;
    for (cache, want) in [
        (
            Some(cache_object("tpl", ns, Some(CachePhase::Warm))),
            Some(CachePhase::Warm),
        ),
        (Some(cache_object("tpl", ns, None)), None),
        (
            Some(cache_object("other", ns, Some(CachePhase::Warm))),
            None,
        ),
        (
            Some(cache_object(
                "tpl",
                TemplateScope::Cluster,
                Some(CachePhase::Warm),
            )),
            None,
        ),
        (None, None),
    ] {
        assert_eq!(
            cache_phase_for_template("tpl", cache.as_ref()),
            want,
            "{cache:?}"
        );
    }
}

/// A namespace template with caching and static sources, decided with the cache in `phase`.
fn template_with_cache(phase: Option<CachePhase>) -> ServiceTemplateStatus {
    let node: Node = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "a", "labels": { "amd.com/gpu.device-id": "74a1" } },
        "status": { "allocatable": { "amd.com/gpu": "8" } },
    }))
    .unwrap();
    let inventory = Inventory::from_nodes([&node]);
    let spec: ServiceTemplateCommon = serde_json::from_value(serde_json::json!({
        "modelName": "m", "hardware": { "gpu": { "model": "MI300X" } },
        "modelSources": [{ "name": "Qwen/Qwen3-32B", "sourceURI": QWEN, "size": "16Gi" }],
    }))
    .unwrap();
    let model: ModelCommon = serde_json::from_value(serde_json::json!({ "image": "x:1" })).unwrap();
    let obs = Observation {
        template: TemplateView {
            scope: TemplateScope::Namespace,
            name: "tpl",
            namespace: Some(NS),
            uid: "u",
            generation: Some(1),
            paused: false,
            spec: &spec,
            env: &[],
            caching_enabled: true,
            labels: None,
            status: None,
        },
        namespace_model: Some(aim_resolve::ModelCandidate {
            name: "m",
            namespace: Some(NS),
            uid: Some("mu"),
            spec: &model,
            failure: None,
        }),
        cluster_model: None,
        namespace_config: None,
        cluster_config: None,
        inventory: &inventory,
        jobs: Vec::new(),
        pods: Vec::new(),
        job_events: Vec::new(),
        job_refused: None,
        log: LogRead::NotRead,
        log_limit: 1 << 20,
        slot: Slot::NotAsked,
        cache: phase,
        operator_namespace: "aim-system",
        backoff_base: Duration::from_secs(60),
        now: jiff::Timestamp::from_second(NOW).unwrap(),
    };
    match decide(&obs) {
        Decision::Plan(p) => p.status,
        Decision::Need(n) => panic!("static sources need nothing, asked for {n:?}"),
    }
}

#[test]
fn t27_cache_ready_mirrors_the_cache() {
    use CachePhase as C;
    use TemplatePhase as T;
    for (phase, ok, reason, template) in [
        (Some(C::Warm), "True", reasons::CACHE_WARM, T::Ready),
        (
            Some(C::Warming),
            "False",
            reasons::WAITING_FOR_CACHE,
            T::Progressing,
        ),
        (
            Some(C::Pending),
            "False",
            reasons::WAITING_FOR_CACHE,
            T::Progressing,
        ),
        (None, "False", reasons::WAITING_FOR_CACHE, T::Progressing),
        (
            Some(C::Degraded),
            "False",
            reasons::CACHE_DEGRADED,
            T::Degraded,
        ),
        (Some(C::Failed), "False", reasons::CACHE_FAILED, T::Degraded),
    ] {
        let st = template_with_cache(phase);
        let c = st
            .conditions
            .iter()
            .find(|c| c.type_ == types::CACHE_READY)
            .unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            (ok, reason),
            "{phase:?}"
        );
        assert_eq!(st.status, template, "{phase:?}");
    }
}

// ---------------------------------------------------------------- C-01, C-02: volumes

#[test]
fn c01_volume_names_come_from_the_source_uri() {
    let a = volume_name(QWEN);
    assert_eq!(a, volume_name(QWEN), "deterministic");
    assert_ne!(a, volume_name(TOKENIZER));
    assert!(a.starts_with(VOLUME_PREFIX) && a.len() == 26, "{a}");
    assert!(aim_discovery::is_dns1123_label(&a), "{a}");
    assert_eq!(
        download_job_name(QWEN).rsplit('-').next(),
        a.rsplit('-').next(),
        "the Job is named after its volume"
    );
}

#[test]
fn c02_size_is_the_source_plus_the_headroom() {
    for (bytes, headroom, want) in [
        (16 * GI, 10, "18023Mi"),
        (16 * GI, 0, "16384Mi"),
        (16 * GI, 15, "18842Mi"),
        (2 << 20, 10, "3Mi"),
        (1, 10, "1Mi"),
        (0, 10, "1Mi"),
        (-5, 10, "1Mi"),
        (i64::MAX, 1000, "96757023244288Mi"),
    ] {
        assert_eq!(
            volume_size(bytes, headroom).0,
            want,
            "{bytes} + {headroom}%"
        );
    }
}

#[test]
fn c02_storage_class_from_the_cache_else_the_runtime_config_else_the_default() {
    let config = |class: &str| -> RuntimeConfigCommon {
        serde_json::from_value(
            serde_json::json!({ "storage": { "storageClassName": class, "headroomPercent": 20 } }),
        )
        .unwrap()
    };
    let class_of = |w: &World| {
        let plan = w.decide();
        plan.create_volumes[0]
            .spec
            .as_ref()
            .unwrap()
            .storage_class_name
            .clone()
    };
    let mut w = World::new();
    assert_eq!(class_of(&w), None, "no class: the cluster default");
    w.cl_config = Some(config("cluster-fast"));
    assert_eq!(class_of(&w).as_deref(), Some("cluster-fast"));
    w.ns_config = Some(config("team-fast"));
    assert_eq!(
        class_of(&w).as_deref(),
        Some("team-fast"),
        "the namespace config wins"
    );
    w.spec.storage_class_name = Some("mine".into());
    assert_eq!(class_of(&w).as_deref(), Some("mine"), "the cache wins");
    // The config's headroom: 16 GiB + 20 %.
    let size = w.decide().create_volumes[0]
        .spec
        .clone()
        .unwrap()
        .resources
        .unwrap()
        .requests
        .unwrap()["storage"]
        .clone();
    assert_eq!(size.0, "19661Mi");
}

#[test]
fn c02_a_source_without_a_size_fails_with_a_clear_message() {
    let mut w = World::new();
    w.set_sources(vec![
        source("Qwen/Qwen3-32B", QWEN, Some(16 * GI)),
        source("tokenizer", TOKENIZER, None),
    ]);
    let plan = w.settle();
    let tok = &plan.status.sources[1];
    assert_eq!(tok.state, CacheSourceState::Failed);
    assert_eq!(tok.volume, None);
    let msg = tok.message.as_deref().unwrap();
    assert!(
        msg.contains("\"tokenizer\"") && msg.contains("has no size"),
        "{msg}"
    );
    assert_eq!(w.volumes.len(), 1, "no volume for the sizeless source");
    assert_eq!(w.jobs.len(), 1);
    // Not retried: nothing to wait for.
    assert_eq!(tok.attempts, 0);
    assert!(tok.next_attempt_time.is_none());
}

#[test]
fn c01_volume_and_download_job_documents() {
    let w = World::new();
    let plan = w.decide();
    assert_eq!(plan.create_volumes.len(), 2);
    assert_eq!(plan.create_jobs.len(), 2);
    insta::assert_yaml_snapshot!("volume", plan.create_volumes[0]);
    insta::assert_yaml_snapshot!("download_job", plan.create_jobs[0]);
}

#[test]
fn c01_download_jobs_pass_the_restricted_standard_and_never_read_secrets() {
    let w = World::new();
    let plan = w.decide();
    let job = &plan.create_jobs[0];
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(
        psc.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    assert_eq!(pod.automount_service_account_token, Some(false));
    let c = &pod.containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_string()][..])
    );
    assert_eq!(c.image.as_deref(), Some(DEFAULT_DOWNLOAD_IMAGE));
    let env = c.env.as_ref().unwrap();
    // The credential passes through as a reference; the operator never sees its value.
    let token = env.iter().find(|e| e.name == "HF_TOKEN").unwrap();
    assert!(token.value.is_none() && token.value_from.is_some());
    let get = |n: &str| {
        env.iter()
            .find(|e| e.name == n)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(get("AIM_CACHE_SOURCE_URI").as_deref(), Some(QWEN));
    assert_eq!(get("AIM_CACHE_TARGET_PATH").as_deref(), Some(MOUNT_PATH));
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(spec.backoff_limit, Some(0));
    assert_eq!(
        spec.active_deadline_seconds,
        Some(DOWNLOAD_DEADLINE_SECONDS)
    );
    let labels = job.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[labels::COMPONENT], labels::COMPONENT_CACHE_DOWNLOAD);
    assert_eq!(labels[labels::MANAGED_BY], labels::MANAGED_BY_VALUE);
    // Downloads are not discovery: no label a discovery watch or slot would count.
    assert!(!labels.contains_key(labels::TEMPLATE_SCOPE));
    let claim = pod.volumes.as_ref().unwrap()[0]
        .persistent_volume_claim
        .as_ref()
        .unwrap();
    assert_eq!(claim.claim_name, volume_name(QWEN));
}

#[test]
fn c01_per_source_env_from_static_sources_wins_over_the_cache_env() {
    let mut w = World::new();
    let (spec, _) = w.ns_template.as_mut().unwrap();
    spec.model_sources = vec![
        serde_json::from_value(serde_json::json!({
            "name": "Qwen/Qwen3-32B", "sourceURI": QWEN, "size": "16Gi",
            "env": [{ "name": "HF_TOKEN", "value": "per-source" }]
        }))
        .unwrap(),
    ];
    let plan = w.decide();
    let env = |job: &Job| {
        job.spec.clone().unwrap().template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap()
    };
    let qwen = env(&plan.create_jobs[0]);
    assert_eq!(
        qwen.iter()
            .find(|e| e.name == "HF_TOKEN")
            .unwrap()
            .value
            .as_deref(),
        Some("per-source")
    );
    let tok = env(&plan.create_jobs[1]);
    assert!(
        tok.iter()
            .find(|e| e.name == "HF_TOKEN")
            .unwrap()
            .value_from
            .is_some()
    );
}

// ---------------------------------------------------------------- C-03: status

#[test]
fn c03_phase_from_the_sources() {
    use CachePhase as C;
    use CacheSourceState as S;
    for (states, want) in [
        (vec![], C::Warm),
        (vec![S::Ready, S::Ready], C::Warm),
        (vec![S::Pending, S::Pending], C::Pending),
        (vec![S::Downloading, S::Pending], C::Warming),
        (vec![S::Ready, S::Pending], C::Warming),
        (vec![S::Ready, S::Failed], C::Degraded),
        (vec![S::Downloading, S::Failed], C::Degraded),
        (vec![S::Failed, S::Failed], C::Failed),
        (vec![S::Failed], C::Failed),
    ] {
        assert_eq!(aggregate(&states), want, "{states:?}");
    }
}

#[test]
fn c03_the_warm_path() {
    let mut w = World::new();
    let plan = w.decide();
    assert_eq!(plan.status.status, CachePhase::Pending);
    assert_eq!(plan.events.len(), 1);
    assert_eq!(plan.events[0].reason, "DownloadStarted");
    assert!(plan.events[0].message.contains(&download_job_name(QWEN)));
    w.apply(&plan);
    // Created: nothing more to create, no second event.
    let plan = w.decide();
    assert!(
        plan.create_volumes.is_empty() && plan.create_jobs.is_empty() && plan.children.is_empty()
    );
    assert_eq!(plan.status.status, CachePhase::Pending);
    assert_eq!(
        cond(&plan.status, types::VOLUMES_READY).reason,
        reasons::VOLUME_PENDING
    );
    w.apply(&plan);
    w.bind(QWEN);
    w.bind(TOKENIZER);
    w.pod(QWEN, serde_json::json!({ "phase": "Running" }));
    let plan = w.decide();
    assert_eq!(plan.status.status, CachePhase::Warming);
    assert_eq!(
        states(&plan.status),
        [CacheSourceState::Downloading, CacheSourceState::Pending]
    );
    assert_eq!(plan.events.len(), 1, "{:?}", plan.events);
    w.apply(&plan);
    w.finish(QWEN, "Complete", "Completed");
    w.finish(TOKENIZER, "Complete", "Completed");
    let plan = w.decide();
    assert_eq!(plan.status.status, CachePhase::Warm);
    let ready = cond(&plan.status, types::READY);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", reasons::WARM)
    );
    assert_eq!(
        cond(&plan.status, types::DOWNLOADED).reason,
        reasons::DOWNLOADS_COMPLETE
    );
    assert_eq!(
        cond(&plan.status, types::VOLUMES_READY).reason,
        reasons::VOLUMES_BOUND
    );
    assert_eq!(plan.events.len(), 1);
    assert!(!plan.events[0].warning);
    w.apply(&plan);
    // T-30 style: settled means no change, no event.
    let again = w.decide();
    assert_eq!(again.status, plan.status);
    assert!(again.events.is_empty());
    assert_eq!(again.requeue_after, None);
}

#[test]
fn c03_a_complete_download_on_an_unbound_volume_is_not_warm() {
    let mut w = World::new();
    w.settle();
    w.finish(QWEN, "Complete", "Completed");
    w.finish(TOKENIZER, "Complete", "Completed");
    w.bind(QWEN);
    let plan = w.decide();
    assert_eq!(
        states(&plan.status),
        [CacheSourceState::Ready, CacheSourceState::Pending]
    );
    assert_eq!(plan.status.status, CachePhase::Warming);
}

#[test]
fn c03_the_template_missing_in_the_wrong_scope_or_not_ready() {
    let mut w = World::new();
    w.ns_template = None;
    let plan = w.decide();
    assert_eq!(plan.status.status, CachePhase::Failed);
    let c = cond(&plan.status, types::TEMPLATE_READY);
    assert_eq!(c.reason, reasons::CACHE_TEMPLATE_NOT_FOUND);
    assert!(
        c.message
            .contains("no AIMServiceTemplate \"tpl\" in namespace \"team\""),
        "{}",
        c.message
    );
    assert_eq!(
        cond(&plan.status, types::READY).reason,
        reasons::CACHE_TEMPLATE_NOT_FOUND
    );
    assert!(plan.create_volumes.is_empty() && plan.create_jobs.is_empty());
    assert!(plan.events[0].warning);

    // Only a cluster template of that name: the scope is wrong.
    w.cl_template = World::new().ns_template;
    let plan = w.decide();
    assert_eq!(plan.status.status, CachePhase::Failed);
    let c = cond(&plan.status, types::TEMPLATE_READY);
    assert_eq!(c.reason, reasons::WRONG_TEMPLATE_SCOPE);
    assert!(
        c.message.contains("set spec.templateScope to Cluster"),
        "{}",
        c.message
    );

    // Not Ready: Pending, and the message says why.
    let mut w = World::new();
    w.ns_template.as_mut().unwrap().1 = Some(template_status(
        TemplatePhase::Failed,
        reasons::DISCOVERY_FAILED,
        Vec::new(),
    ));
    let plan = w.decide();
    assert_eq!(plan.status.status, CachePhase::Pending);
    let c = cond(&plan.status, types::TEMPLATE_READY);
    assert_eq!(c.reason, reasons::TEMPLATE_NOT_READY);
    assert!(
        c.message.contains("is Failed (DiscoveryFailed: why)"),
        "{}",
        c.message
    );
    assert!(plan.create_volumes.is_empty());
    assert!(!plan.events[0].warning, "waiting is not trouble");
}

#[test]
fn c01_a_template_that_waits_for_its_own_cache_counts_as_ready() {
    // Otherwise neither could ever become Ready (T-27 keeps the template Progressing until Warm).
    for (phase, reason) in [
        (TemplatePhase::Progressing, reasons::WAITING_FOR_CACHE),
        (TemplatePhase::Degraded, reasons::CACHE_DEGRADED),
        (TemplatePhase::Degraded, reasons::CACHE_FAILED),
    ] {
        let mut w = World::new();
        w.ns_template.as_mut().unwrap().1 = Some(template_status(
            phase,
            reason,
            vec![source("Qwen/Qwen3-32B", QWEN, Some(16 * GI))],
        ));
        let plan = w.decide();
        assert_eq!(plan.create_volumes.len(), 1, "{phase} {reason}");
    }
    let mut w = World::new();
    w.ns_template.as_mut().unwrap().1 = Some(template_status(
        TemplatePhase::Degraded,
        reasons::DISCOVERY_FAILED,
        vec![source("Qwen/Qwen3-32B", QWEN, Some(16 * GI))],
    ));
    assert!(
        w.decide().create_volumes.is_empty(),
        "degraded for another reason"
    );
}

#[test]
fn t28_a_cache_of_a_cluster_template_caches_it_into_its_namespace() {
    let mut w = World::new();
    w.spec.template_scope = TemplateScope::Cluster;
    w.cl_template = w.ns_template.take();
    let plan = w.decide();
    assert_eq!(
        cond(&plan.status, types::TEMPLATE_READY).reason,
        reasons::TEMPLATE_READY
    );
    assert!(
        cond(&plan.status, types::TEMPLATE_READY)
            .message
            .contains("AIMClusterServiceTemplate")
    );
    assert_eq!(plan.create_volumes.len(), 2);
    for v in &plan.create_volumes {
        assert_eq!(v.metadata.namespace.as_deref(), Some(NS));
    }
    for j in &plan.create_jobs {
        assert_eq!(j.metadata.namespace.as_deref(), Some(NS));
    }
    // With a namespace template of the same name also present, the scope decides.
    w.ns_template = Some((
        ServiceTemplateCommon::for_model("m"),
        Some(template_status(
            TemplatePhase::Ready,
            "Ready",
            vec![source("x", "hf://x/y", Some(1))],
        )),
    ));
    assert_eq!(w.decide().create_volumes.len(), 2);
}

#[test]
fn c03_a_failed_download_is_retried_with_the_backoff() {
    let mut w = World::new();
    w.settle();
    w.bind(QWEN);
    w.bind(TOKENIZER);
    w.finish(TOKENIZER, "Complete", "Completed");
    w.pod(
        QWEN,
        serde_json::json!({ "phase": "Failed", "containerStatuses": [{ "name": "download", "image": "i",
            "ready": false, "restartCount": 0, "state": { "terminated": { "exitCode": 1, "reason": "Error",
            "message": "401 Client Error: Unauthorized" } } }] }),
    );
    w.finish(QWEN, "Failed", "BackoffLimitExceeded");
    let plan = w.decide();
    assert_eq!(plan.status.status, CachePhase::Degraded);
    let q = &plan.status.sources[0];
    assert_eq!(q.state, CacheSourceState::Failed);
    assert_eq!(q.attempts, 1);
    let msg = q.message.as_deref().unwrap();
    assert!(
        msg.contains("exited with code 1 (Error): 401 Client Error: Unauthorized"),
        "{msg}"
    );
    assert!(msg.contains("retry after a 1m backoff"), "{msg}");
    assert_eq!(
        q.next_attempt_time.as_ref().unwrap().0.as_second(),
        NOW + 60
    );
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(60)));
    assert_eq!(plan.download_failures, 1);
    assert_eq!(plan.events.len(), 1);
    assert!(plan.events[0].warning && plan.events[0].reason == reasons::DOWNLOAD_FAILED);
    assert!(
        plan.delete_jobs.is_empty(),
        "kept for `kubectl logs` until the retry"
    );
    assert_eq!(
        cond(&plan.status, types::READY).reason,
        reasons::DOWNLOAD_FAILED
    );
    w.apply(&plan);

    // The same failed Job seen again counts once.
    w.now += 10;
    let plan = w.decide();
    assert_eq!(plan.status.sources[0].attempts, 1);
    assert_eq!(plan.download_failures, 0);
    assert!(plan.events.is_empty());
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(50)));
    w.apply(&plan);

    // Backoff over: the failed Job goes, then a new one starts.
    w.now += 50;
    let plan = w.decide();
    assert_eq!(plan.delete_jobs, vec![download_job_name(QWEN)]);
    assert!(plan.create_jobs.is_empty());
    w.apply(&plan);
    let plan = w.decide();
    assert_eq!(plan.create_jobs.len(), 1);
    assert_eq!(plan.status.sources[0].state, CacheSourceState::Pending);
    assert_eq!(
        plan.status.sources[0].attempts, 1,
        "kept until the source is Ready"
    );
    w.apply(&plan);

    // The second failure doubles the wait.
    w.finish(QWEN, "Failed", "DeadlineExceeded");
    let plan = w.decide();
    let q = &plan.status.sources[0];
    assert_eq!(q.attempts, 2);
    let msg = q.message.as_deref().unwrap();
    assert!(
        msg.contains("ran longer than activeDeadlineSeconds"),
        "{msg}"
    );
    assert!(msg.contains("retry after a 2m backoff"), "{msg}");
    w.apply(&plan);

    // Success resets the count.
    w.now += 120;
    w.apply(&w.decide());
    w.apply(&w.decide());
    w.finish(QWEN, "Complete", "Completed");
    let plan = w.decide();
    assert_eq!(plan.status.status, CachePhase::Warm);
    assert_eq!(plan.status.sources[0].attempts, 0);
    assert!(plan.status.sources[0].failed_job.is_none());
}

#[test]
fn c03_all_downloads_failed_is_failed() {
    let mut w = World::new();
    w.settle();
    w.finish(QWEN, "Failed", "BackoffLimitExceeded");
    w.finish(TOKENIZER, "Failed", "BackoffLimitExceeded");
    let plan = w.decide();
    assert_eq!(plan.status.status, CachePhase::Failed);
    assert_eq!(plan.download_failures, 2);
    assert_eq!(plan.events.len(), 2, "a Warning per failed attempt");
}

#[test]
fn c03_a_download_image_that_cannot_be_pulled_fails_at_once() {
    let mut w = World::new();
    w.settle();
    w.bind(QWEN);
    w.pod(
        QWEN,
        serde_json::json!({ "phase": "Pending", "containerStatuses": [{ "name": "download", "image": "i:1",
            "ready": false, "restartCount": 0, "state": { "waiting": { "reason": "ImagePullBackOff",
            "message": "not found" } } }] }),
    );
    let plan = w.decide();
    let q = &plan.status.sources[0];
    assert_eq!(q.state, CacheSourceState::Failed);
    assert!(
        q.message
            .as_deref()
            .unwrap()
            .contains("cannot pull the download image")
    );
    assert_eq!(
        plan.delete_jobs,
        vec![download_job_name(QWEN)],
        "it would hang until the deadline"
    );
    w.apply(&plan);
    // Gone, backing off: still Failed with the same message, no new Job yet.
    let again = w.decide();
    assert_eq!(again.status.sources[0].state, CacheSourceState::Failed);
    assert_eq!(
        again.status.sources[0].message,
        plan.status.sources[0].message
    );
    assert!(again.create_jobs.is_empty());
}

// C-03: a download pod whose container cannot be created (a Secret or key behind `valueFrom` is
// missing) says so at once with the kubelet's text, as Pending: nothing is counted, the Job stays, and
// creating the Secret lets it start.
#[test]
fn c03_a_download_pod_blocked_on_a_missing_secret_says_why() {
    let mut w = World::new();
    w.settle();
    w.bind(QWEN);
    w.pod(
        QWEN,
        serde_json::json!({ "phase": "Pending", "containerStatuses": [{ "name": "download", "image": "i:1",
            "ready": false, "restartCount": 0, "state": { "waiting": { "reason": "CreateContainerConfigError",
            "message": "couldn't find key token in Secret team/hf" } } }] }),
    );
    let plan = w.decide();
    let q = &plan.status.sources[0];
    assert_eq!(q.state, CacheSourceState::Pending);
    let msg = q.message.as_deref().unwrap();
    assert!(
        msg.contains("CreateContainerConfigError") && msg.contains("couldn't find key token"),
        "{msg}"
    );
    assert!(plan.delete_jobs.is_empty());
    assert_eq!(q.attempts, 0);
}

#[test]
fn c03_a_volume_or_job_the_api_server_refuses_is_a_failed_attempt() {
    let mut w = World::new();
    let volume = volume_name(QWEN);
    w.refused.insert(
        volume.clone(),
        "exceeded quota: storage, requested: requests.storage=18023Mi".into(),
    );
    let plan = w.decide();
    let q = &plan.status.sources[0];
    assert_eq!(q.state, CacheSourceState::Failed);
    let msg = q.message.as_deref().unwrap();
    assert!(
        msg.contains(&format!(
            "the API server refused volume {volume}: exceeded quota"
        )),
        "{msg}"
    );
    assert!(msg.contains("retry after a 1m backoff"), "{msg}");
    assert_eq!(q.attempts, 1);
    assert!(q.failed_job.is_none());
    assert_eq!(plan.download_failures, 1);
    assert!(
        plan.events
            .iter()
            .any(|e| e.warning && e.reason == reasons::DOWNLOAD_FAILED)
    );
    // Nothing of the refused source is created; the other source goes on.
    assert_eq!(plan.create_volumes.len(), 1);
    assert_eq!(plan.create_jobs.len(), 1);
    assert_eq!(plan.status.status, CachePhase::Degraded);
    w.apply(&plan);
    w.refused.clear();
    // Not tried again before the backoff ends, then tried again.
    w.now += 30;
    let plan = w.decide();
    assert!(
        !plan
            .create_volumes
            .iter()
            .any(|v| v.metadata.name.as_deref() == Some(volume.as_str()))
    );
    assert_eq!(plan.status.sources[0].state, CacheSourceState::Failed);
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(30)));
    w.apply(&plan);
    w.now += 30;
    let plan = w.decide();
    assert!(
        plan.create_volumes
            .iter()
            .any(|v| v.metadata.name.as_deref() == Some(volume.as_str()))
    );
    // A refused Job the same way.
    let mut w = World::new();
    w.refused.insert(
        download_job_name(TOKENIZER),
        "admission webhook denied it".into(),
    );
    let plan = w.decide();
    let t = &plan.status.sources[1];
    assert_eq!(t.state, CacheSourceState::Failed);
    assert!(
        t.message
            .as_deref()
            .unwrap()
            .contains("refused download job"),
        "{t:?}"
    );
    assert_eq!(plan.create_jobs.len(), 1);
    assert_eq!(
        plan.create_volumes.len(),
        2,
        "its volume is made all the same"
    );
}

#[test]
fn c03_a_volume_that_does_not_bind_says_why() {
    let mut w = World::new();
    w.spec.storage_class_name = Some("nope".into());
    w.settle();
    let plan = w.decide();
    assert_eq!(
        cond(&plan.status, types::VOLUMES_READY).reason,
        reasons::VOLUME_PENDING
    );
    assert_eq!(
        plan.requeue_after,
        Some(VOLUME_BIND_GRACE),
        "looked at again when the grace ends"
    );
    // The PV controller's warning says why at once.
    let pvc = w.volume_mut(QWEN).clone();
    w.events.push(
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "e1", "namespace": NS },
            "involvedObject": { "kind": "PersistentVolumeClaim", "name": pvc.metadata.name, "uid": pvc.metadata.uid },
            "type": "Warning", "reason": "ProvisioningFailed",
            "message": "storageclass.storage.k8s.io \"nope\" not found",
            "lastTimestamp": ts(NOW),
        }))
        .unwrap(),
    );
    let plan = w.decide();
    let c = cond(&plan.status, types::VOLUMES_READY);
    assert_eq!(c.reason, reasons::VOLUME_NOT_BOUND);
    assert!(
        c.message
            .contains("ProvisioningFailed: storageclass.storage.k8s.io \"nope\" not found"),
        "{}",
        c.message
    );
    assert_eq!(
        cond(&plan.status, types::READY).reason,
        reasons::VOLUME_NOT_BOUND
    );
    assert_eq!(plan.status.status, CachePhase::Pending);
    assert!(plan.events[0].warning);
    // Without any warning, the grace period ends in a pointer to `kubectl describe`.
    w.events.clear();
    w.now += VOLUME_BIND_GRACE.as_secs() as i64;
    let plan = w.decide();
    let c = cond(&plan.status, types::VOLUMES_READY);
    assert_eq!(c.reason, reasons::VOLUME_NOT_BOUND);
    assert!(c.message.contains("not bound after 30s"), "{}", c.message);
    assert!(c.message.contains("kubectl describe pvc"), "{}", c.message);
}

#[test]
fn c01_two_caches_share_a_volume_and_its_job() {
    let mut first = World::new();
    first.settle();
    // A second cache (another template with the same sources) in the namespace.
    let mut second = World::new();
    second.name = "other".into();
    second.uid = "other-uid".into();
    second.spec.template_name = "other".into();
    second.volumes = first.volumes.clone();
    second.jobs = first.jobs.clone();
    let plan = second.decide();
    assert!(plan.create_volumes.is_empty(), "shared, not created again");
    assert!(plan.create_jobs.is_empty(), "one download per volume");
    let adopted: Vec<_> = plan
        .children
        .iter()
        .filter(|c| matches!(c, ChildChange::Adopt { .. }))
        .collect();
    assert_eq!(adopted.len(), 4, "{:?}", plan.children);
    second.apply(&plan);
    for v in &second.volumes {
        let owners: Vec<_> = v
            .metadata
            .owner_references
            .iter()
            .flatten()
            .map(|o| o.uid.as_str())
            .collect();
        assert_eq!(owners, ["cache-uid", "other-uid"]);
    }
    assert!(second.decide().children.is_empty(), "adopted once");
}

#[test]
fn c01_volumes_no_source_needs_are_let_go() {
    let mut w = World::new();
    w.settle();
    // Another cache shares the tokenizer's volume and Job.
    let other = cache_owner("other", "other-uid");
    let add = |m: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.owner_references
            .as_mut()
            .unwrap()
            .insert(0, other.clone())
    };
    add(&mut w.volume_mut(TOKENIZER).metadata);
    add(&mut w.job_mut(TOKENIZER).metadata);
    // The template now lists neither source.
    w.set_sources(vec![source("other", "hf://a/b", Some(GI))]);
    let plan = w.decide();
    let tok_volume = volume_name(TOKENIZER);
    let tok_job = download_job_name(TOKENIZER);
    let qwen_volume = volume_name(QWEN);
    let qwen_job = download_job_name(QWEN);
    for want in [
        ChildChange::Delete {
            kind: ChildKind::Volume,
            name: qwen_volume,
        },
        ChildChange::Delete {
            kind: ChildKind::Job,
            name: qwen_job,
        },
        ChildChange::Release {
            kind: ChildKind::Volume,
            name: tok_volume,
            index: 1,
        },
        ChildChange::Release {
            kind: ChildKind::Job,
            name: tok_job,
            index: 1,
        },
    ] {
        assert!(
            plan.children.contains(&want),
            "{want:?} not in {:?}",
            plan.children
        );
    }
    assert_eq!(plan.create_volumes.len(), 1);
}

// ---------------------------------------------------------------- properties

fn arb_world() -> impl Strategy<Value = (World, Vec<u8>)> {
    let sources = proptest::collection::vec(
        (
            "[a-z]{1,8}",
            "[a-z]{1,6}/[a-z0-9.]{1,8}",
            proptest::option::of(0i64..(1 << 40)),
        ),
        0..4,
    );
    (sources, proptest::collection::vec(0u8..8, 0..12)).prop_map(|(sources, steps)| {
        let mut w = World::new();
        let mut seen = std::collections::BTreeSet::new();
        w.set_sources(
            sources
                .into_iter()
                .filter(|(_, uri, _)| seen.insert(uri.clone()))
                .map(|(n, uri, size)| source(&n, &format!("hf://{uri}"), size))
                .collect(),
        );
        (w, steps)
    })
}

/// One thing happening in the world: a volume binds, a pod runs, a Job finishes or fails, time passes.
fn happen(w: &mut World, step: u8) {
    let uris: Vec<String> = w
        .jobs
        .iter()
        .filter_map(|j| {
            j.metadata
                .annotations
                .as_ref()?
                .get(labels::CACHE_SOURCE)
                .cloned()
        })
        .collect();
    let Some(uri) = uris.get(usize::from(step) % uris.len().max(1)).cloned() else {
        w.now += 30;
        return;
    };
    match step % 4 {
        0 => {
            if w.volumes
                .iter()
                .any(|v| v.metadata.name.as_deref() == Some(volume_name(&uri).as_str()))
            {
                w.bind(&uri)
            }
        }
        1 => w.pod(&uri, serde_json::json!({ "phase": "Running" })),
        2 => w.finish(&uri, "Complete", "Completed"),
        _ => {
            w.finish(&uri, "Failed", "BackoffLimitExceeded");
            w.now += 61;
        }
    }
}

proptest! {
    #[test]
    fn decisions_are_deterministic_and_settle((mut w, steps) in arb_world()) {
        for step in steps {
            let plan = w.decide();
            prop_assert_eq!(&plan, &w.decide());
            w.apply(&plan);
            // Applying a plan and deciding again creates nothing twice.
            let again = w.decide();
            for v in &again.create_volumes {
                prop_assert!(!w.volumes.iter().any(|x| x.metadata.name == v.metadata.name));
            }
            for j in &again.create_jobs {
                prop_assert!(!w.jobs.iter().any(|x| x.metadata.name == j.metadata.name));
            }
            happen(&mut w, step);
        }
        let plan = w.decide();
        // C-03: the phase always agrees with the sources, and Ready is True exactly when Warm.
        prop_assert_eq!(plan.status.status, aggregate(&states(&plan.status)));
        let ready = cond(&plan.status, types::READY);
        prop_assert_eq!(ready.status == "True", plan.status.status == CachePhase::Warm);
        // Every volume name is a DNS label of at most 63 characters; sizeless sources have none.
        for s in &plan.status.sources {
            match &s.volume {
                Some(v) => prop_assert!(aim_discovery::is_dns1123_label(v)),
                None => prop_assert_eq!(s.state, CacheSourceState::Failed),
            }
        }
    }

    #[test]
    fn sizes_cover_the_source_and_its_headroom(bytes in 0i64..(1 << 50), headroom in 0i32..1000) {
        let q = volume_size(bytes, headroom);
        let mib: u128 = q.0.strip_suffix("Mi").unwrap().parse().unwrap();
        let need = u128::try_from(bytes).unwrap() * u128::try_from(100 + headroom).unwrap();
        prop_assert!(mib * 1024 * 1024 * 100 >= need);
        prop_assert!(mib == 1 || (mib - 1) * 1024 * 1024 * 100 < need, "rounded up by less than 1Mi");
    }

    #[test]
    fn volume_names_are_short_stable_labels(uri in "(hf|s3)://[ -~]{1,300}") {
        let v = volume_name(&uri);
        prop_assert!(aim_discovery::is_dns1123_label(&v) && v.len() <= 63);
        prop_assert_eq!(&v, &volume_name(&uri));
        prop_assert!(aim_discovery::is_dns1123_label(&download_job_name(&uri)));
    }
}
