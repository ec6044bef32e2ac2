//! The template state machine without a cluster: a row per rule, and properties over random worlds.

use aim_api::conditions::{reasons, types};
use aim_api::*;
use aim_hardware::Inventory;
use aim_resolve::template::{LogRead, Observation, Slot, TemplateView};
use aim_resolve::{ConfigCandidate, Decision, ModelCandidate, Need, Plan, decide};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use proptest::prelude::*;
use std::time::Duration;

const NOW: i64 = 1_800_000_000;
const OK_LOG: &str = r#"banner
[{"profile": {"metadata": {"engine": "vllm", "gpu": "MI300X", "precision": "fp8", "gpu_count": 2, "metric": "latency", "type": "optimized"}, "engine_args": {"a": 1}},
  "models": [{"name": "Qwen/Qwen3-32B", "source": "hf://Qwen/Qwen3-32B", "size_gb": 16.0}]}]
done [ok]"#;

/// Everything a template decision sees, owned.
#[derive(Clone, Debug)]
struct World {
    scope: TemplateScope,
    spec: ServiceTemplateCommon,
    env: Vec<k8s_openapi::api::core::v1::EnvVar>,
    paused: bool,
    status: Option<ServiceTemplateStatus>,
    ns_model: Option<ModelCommon>,
    cl_model: Option<ModelCommon>,
    ns_config: Option<RuntimeConfigCommon>,
    cl_config: Option<RuntimeConfigCommon>,
    nodes: Vec<Node>,
    jobs: Vec<Job>,
    pods: Vec<Pod>,
    refused: Option<String>,
    /// The model's metadata failure, if any.
    model_failure: Option<String>,
    /// Jobs created so far (for unique uids).
    created: u32,
    now: i64,
}

fn node(name: &str, device_id: &str) -> Node {
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "labels": { "amd.com/gpu.device-id": device_id } },
        "status": { "allocatable": { "amd.com/gpu": "8" } },
    }))
    .unwrap()
}

fn pod_of(job_uid: &str, name: &str, phase: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "namespace": "team",
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": job_uid}] },
        "status": { "phase": phase },
    }))
    .unwrap()
}

fn model_common(image: &str) -> ModelCommon {
    serde_json::from_value(serde_json::json!({ "image": image })).unwrap()
}

impl World {
    fn new() -> Self {
        let mut spec = ServiceTemplateCommon::for_model("m");
        spec.hardware = Some(
            serde_json::from_value(serde_json::json!({"gpu": {"requests": 1, "model": "MI300X"}}))
                .unwrap(),
        );
        Self {
            scope: TemplateScope::Namespace,
            spec,
            env: Vec::new(),
            paused: false,
            status: None,
            ns_model: Some(model_common("example.test/aim:1")),
            cl_model: None,
            ns_config: None,
            cl_config: None,
            nodes: vec![node("a", "74a1"), node("b", "74a5")],
            jobs: Vec::new(),
            pods: Vec::new(),
            refused: None,
            model_failure: None,
            created: 0,
            now: NOW,
        }
    }

    fn obs<'a>(&'a self, inventory: &'a Inventory, log: LogRead, slot: Slot) -> Observation<'a> {
        let ns = match self.scope {
            TemplateScope::Namespace => Some("team"),
            TemplateScope::Cluster => None,
        };
        Observation {
            template: TemplateView {
                scope: self.scope,
                name: "tpl",
                namespace: ns,
                uid: "uid-1",
                generation: Some(1),
                paused: self.paused,
                spec: &self.spec,
                env: &self.env,
                caching_enabled: false,
                labels: None,
                status: self.status.as_ref(),
            },
            namespace_model: self.ns_model.as_ref().map(|spec| ModelCandidate {
                name: "m",
                namespace: Some("team"),
                uid: Some("mu"),
                spec,
                failure: self.model_failure.as_deref(),
            }),
            cluster_model: self.cl_model.as_ref().map(|spec| ModelCandidate {
                name: "m",
                namespace: None,
                uid: Some("cmu"),
                spec,
                failure: self.model_failure.as_deref(),
            }),
            namespace_config: self.ns_config.as_ref().map(|spec| ConfigCandidate {
                name: "default",
                namespace: Some("team"),
                uid: Some("rc"),
                spec,
            }),
            cluster_config: self.cl_config.as_ref().map(|spec| ConfigCandidate {
                name: "default",
                namespace: None,
                uid: Some("crc"),
                spec,
            }),
            inventory,
            jobs: self.jobs.iter().collect(),
            pods: self.pods.iter().collect(),
            job_events: Vec::new(),
            job_refused: self.refused.clone(),
            log,
            log_limit: 1 << 20,
            slot,
            cache: None,
            operator_namespace: "aim-system",
            backoff_base: Duration::from_secs(60),
            now: jiff::Timestamp::from_second(self.now).unwrap(),
        }
    }

    /// Decides, answering needs with `log` and `slot`.
    fn plan_with(&self, log: &LogRead, slot: Slot) -> Plan {
        let inventory = Inventory::from_nodes(&self.nodes);
        let mut obs = self.obs(&inventory, LogRead::NotRead, Slot::NotAsked);
        for _ in 0..3 {
            match decide(&obs) {
                Decision::Plan(p) => return *p,
                Decision::Need(Need::Log { .. }) => obs.log = log.clone(),
                Decision::Need(Need::Slot { .. }) => obs.slot = slot,
            }
        }
        panic!("decide kept asking")
    }

    fn plan(&self) -> Plan {
        self.plan_with(&LogRead::Text(OK_LOG.as_bytes().to_vec()), Slot::Granted)
    }

    /// Writes the plan's status and applies its job changes, as the operator would.
    fn apply(&mut self, plan: &Plan) {
        self.status = Some(plan.status.clone());
        self.jobs.retain(|j| {
            !plan
                .delete_jobs
                .iter()
                .any(|(_, n)| Some(n) == j.metadata.name.as_ref())
        });
        let uids: Vec<_> = self
            .jobs
            .iter()
            .filter_map(|j| j.metadata.uid.clone())
            .collect();
        self.pods.retain(|p| {
            p.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| uids.contains(&o.uid))
        });
        if let Some(job) = &plan.create_job {
            let mut job = job.clone();
            self.created += 1;
            job.metadata.uid = Some(format!("job-uid-{}", self.created));
            self.jobs.push(job);
        }
    }

    /// Decides (creating the discovery Job), applies, and lets the Job end with `type_`/`reason`.
    fn run_job(&mut self, type_: &str, reason: &str) {
        let p = self.plan();
        self.apply(&p);
        self.finish_job(type_, reason);
    }

    /// The last Job ends with `type_`/`reason`; its pod ended Succeeded or Failed.
    fn finish_job(&mut self, type_: &str, reason: &str) {
        let job = self.jobs.last_mut().expect("a job");
        job.status = Some(
            serde_json::from_value(serde_json::json!({
                "conditions": [{ "type": type_, "status": "True", "reason": reason, "message": "" }]
            }))
            .unwrap(),
        );
        let uid = job.metadata.uid.clone().unwrap();
        let phase = if type_ == "Complete" {
            "Succeeded"
        } else {
            "Failed"
        };
        self.pods.push(pod_of(&uid, &format!("pod-{uid}"), phase));
    }
}

fn cond<'a>(
    s: &'a ServiceTemplateStatus,
    t: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    s.conditions
        .iter()
        .find(|c| c.type_ == t)
        .unwrap_or_else(|| panic!("no {t}: {s:#?}"))
}

fn assert_cond(s: &ServiceTemplateStatus, t: &str, status: &str, reason: &str) {
    let c = cond(s, t);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        (status, reason),
        "{t}: {}",
        c.message
    );
}

#[test]
fn t01_namespace_model_first_then_cluster_model() {
    let mut w = World::new();
    w.cl_model = Some(model_common("example.test/cluster:1"));
    let p = w.plan();
    assert_eq!(
        p.status.resolved_model.as_ref().unwrap().scope,
        ReferenceScope::Namespace
    );
    w.ns_model = None;
    let p = w.plan();
    let r = p.status.resolved_model.unwrap();
    assert_eq!(
        (r.scope, r.kind.as_str(), r.uid.as_deref()),
        (ReferenceScope::Cluster, "AIMClusterModel", Some("cmu"))
    );
}

#[test]
fn t01_cluster_templates_ignore_namespace_models() {
    let mut w = World::new();
    w.scope = TemplateScope::Cluster;
    let p = w.plan();
    assert_eq!(p.status.status, TemplatePhase::Failed);
    assert!(
        cond(&p.status, types::MODEL_FOUND)
            .message
            .contains("no AIMClusterModel")
    );
}

#[test]
fn t02_missing_model_fails_without_children() {
    let mut w = World::new();
    w.ns_model = None;
    w.jobs.push(
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": "discover-tpl-1", "namespace": "team"}}),
        )
        .unwrap(),
    );
    let p = w.plan();
    assert_eq!(p.status.status, TemplatePhase::Failed);
    assert_cond(
        &p.status,
        types::MODEL_FOUND,
        "False",
        reasons::MODEL_NOT_FOUND,
    );
    assert_cond(&p.status, types::READY, "False", reasons::MODEL_NOT_FOUND);
    assert!(p.create_job.is_none());
    assert_eq!(
        p.delete_jobs,
        vec![("team".to_string(), "discover-tpl-1".to_string())]
    );
}

// M-04: a template whose model cannot read its metadata says so, and still runs on the known image.
#[test]
fn a_failed_model_is_named_in_the_templates_condition() {
    let mut w = World::new();
    w.model_failure = Some("registry example.test refused the credentials".into());
    let p = w.plan();
    assert_cond(&p.status, types::MODEL_FOUND, "True", reasons::MODEL_FAILED);
    assert!(
        cond(&p.status, types::MODEL_FOUND)
            .message
            .contains("the model is Failed: registry example.test refused the credentials")
    );
    assert_ne!(p.status.status, TemplatePhase::Failed);
}

#[test]
fn t03_namespace_config_merges_over_cluster_config() {
    let mut w = World::new();
    w.cl_config = Some(serde_json::from_value(serde_json::json!({"env": [{"name": "A", "value": "cluster"}, {"name": "B", "value": "cluster"}]})).unwrap());
    w.ns_config = Some(serde_json::from_value(serde_json::json!({"env": [{"name": "A", "value": "ns"}], "discovery": {"activeDeadlineSeconds": 30}})).unwrap());
    let p = w.plan();
    let r = p.status.resolved_runtime_config.as_ref().unwrap();
    assert_eq!(r.scope, ReferenceScope::Merged);
    let job = p.create_job.unwrap();
    let spec = job.spec.unwrap();
    assert_eq!(spec.active_deadline_seconds, Some(30));
    let env = spec.template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    let get = |n: &str| {
        env.iter()
            .find(|e| e.name == n)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(
        (get("A").as_deref(), get("B").as_deref()),
        (Some("ns"), Some("cluster"))
    );
}

#[test]
fn t04_default_config_may_be_absent_but_a_named_one_may_not() {
    let w = World::new();
    assert_cond(
        &w.plan().status,
        types::RUNTIME_CONFIG_READY,
        "True",
        reasons::DEFAULT_CONFIG_NOT_FOUND,
    );
    let mut w = World::new();
    w.spec.runtime_config_name = "team".into();
    let p = w.plan();
    assert_eq!(p.status.status, TemplatePhase::Failed);
    assert_cond(
        &p.status,
        types::RUNTIME_CONFIG_READY,
        "False",
        reasons::RUNTIME_CONFIG_NOT_FOUND,
    );
    assert!(p.create_job.is_none());
}

#[test]
fn t06_absent_gpu_is_not_available_and_creates_no_job() {
    let mut w = World::new();
    w.spec.hardware =
        Some(serde_json::from_value(serde_json::json!({"gpu": {"model": "MI355X"}})).unwrap());
    let p = w.plan();
    assert_eq!(p.status.status, TemplatePhase::NotAvailable);
    assert_cond(
        &p.status,
        types::HARDWARE_AVAILABLE,
        "False",
        reasons::GPU_NOT_AVAILABLE,
    );
    assert_cond(&p.status, types::READY, "False", reasons::GPU_NOT_AVAILABLE);
    assert!(p.create_job.is_none());
}

#[test]
fn t12_static_sources_are_ready_at_once() {
    let mut w = World::new();
    w.spec.metric = Some(Metric::Latency);
    w.spec.model_sources = vec![
        serde_json::from_value(
            serde_json::json!({"name": "w", "sourceURI": "hf://a/b", "size": "16Gi"}),
        )
        .unwrap(),
    ];
    let inventory = Inventory::from_nodes(&w.nodes);
    let Decision::Plan(p) = decide(&w.obs(&inventory, LogRead::NotRead, Slot::NotAsked)) else {
        panic!("static sources need nothing")
    };
    assert_eq!(p.status.status, TemplatePhase::Ready);
    assert_cond(
        &p.status,
        types::DISCOVERED,
        "True",
        reasons::INLINE_MODEL_SOURCES,
    );
    assert_eq!(p.status.model_sources[0].size_bytes, Some(17_179_869_184));
    assert_eq!(
        p.status.profile.as_ref().unwrap()["metadata"]["metric"],
        "latency"
    );
    assert!(p.create_job.is_none());
}

#[test]
fn t13_t23_discovery_waits_for_a_slot_then_creates_the_job() {
    let w = World::new();
    let p = w.plan_with(
        &LogRead::NotRead,
        Slot::Waiting {
            position: 3,
            max: 10,
        },
    );
    assert_eq!(p.status.status, TemplatePhase::Pending);
    assert_cond(
        &p.status,
        types::DISCOVERED,
        "False",
        reasons::AWAITING_DISCOVERY,
    );
    assert_eq!(p.status.discovery.as_ref().unwrap().queue_position, Some(3));
    assert!(p.create_job.is_none() && p.waiting_for_slot);
    let p = w.plan();
    let job = p.create_job.as_ref().unwrap();
    assert_eq!(job.metadata.namespace.as_deref(), Some("team"));
    assert_eq!(p.status.status, TemplatePhase::Pending);
    let mut w = World::new();
    w.scope = TemplateScope::Cluster;
    w.cl_model = w.ns_model.take();
    assert_eq!(
        w.plan().create_job.unwrap().metadata.namespace.as_deref(),
        Some("aim-system"),
        "T-13"
    );
}

#[test]
fn t18_success_writes_results_and_recomputes_hardware() {
    let mut w = World::new();
    w.run_job("Complete", "CompletionsReached");
    let p = w.plan();
    assert_eq!(p.status.status, TemplatePhase::Ready);
    assert_cond(
        &p.status,
        types::DISCOVERED,
        "True",
        reasons::DISCOVERY_COMPLETE,
    );
    assert_eq!(p.status.model_sources[0].size_bytes, Some(16 << 30));
    assert_eq!(p.status.profile.as_ref().unwrap()["engine_args"]["a"], 1);
    assert_eq!(
        p.status.hardware_summary.as_deref(),
        Some("2 x MI300X"),
        "T-10: discovery wins"
    );
    assert!(p.status.resolved_node_affinity.is_some());
}

#[test]
fn t19_bad_output_fails_and_writes_nothing_partial() {
    for log in [
        "[]",
        "no array here",
        "[{\"profile\": {}, \"models\": [{\"name\": \"x\", \"source\": \"http://x\"}]}]",
        "[{\"profile\": ",
    ] {
        let mut w = World::new();
        let p = w.plan();
        w.apply(&p);
        w.finish_job("Complete", "CompletionsReached");
        let p = w.plan_with(&LogRead::Text(log.as_bytes().to_vec()), Slot::Granted);
        assert_eq!(p.status.status, TemplatePhase::Failed, "{log}");
        assert_cond(
            &p.status,
            types::DISCOVERED,
            "False",
            reasons::DISCOVERY_FAILED,
        );
        assert!(
            p.status.model_sources.is_empty() && p.status.profile.is_none(),
            "{log}"
        );
    }
}

#[test]
fn t20_t21_failed_job_counts_an_attempt_then_backs_off() {
    let mut w = World::new();
    w.run_job("Failed", "BackoffLimitExceeded");
    let p = w.plan();
    assert_eq!(p.status.status, TemplatePhase::Failed);
    let d = p.status.discovery.clone().unwrap();
    assert_eq!(d.attempts, 1);
    assert_eq!(
        d.next_attempt_time.as_ref().map(|t| t.0.as_second()),
        Some(NOW + 60),
        "T-21: the absolute time is in its own field"
    );
    assert_eq!(
        p.requeue_after,
        Some(Duration::from_secs(60)),
        "T-21: the operator schedules the retry"
    );
    assert!(
        p.delete_jobs.is_empty(),
        "the failed job stays for `kubectl logs` until the retry"
    );
    let msg = &cond(&p.status, types::DISCOVERED).message;
    assert!(msg.contains("retry after a 1m backoff"), "{msg}");
    assert!(
        !msg.contains("20"),
        "T-30: no timestamp in the message: {msg}"
    );
    assert_eq!(p.events.len(), 1);
    assert!(p.events[0].warning && p.events[0].reason == reasons::DISCOVERY_FAILED);
    w.apply(&p);
    // 20 s later: still waiting, 40 s left; the failed job is not counted again.
    w.now += 20;
    let p = w.plan();
    assert!(p.create_job.is_none() && p.delete_jobs.is_empty());
    assert_eq!(p.status.discovery.as_ref().unwrap().attempts, 1);
    assert_eq!(p.requeue_after, Some(Duration::from_secs(40)));
    assert!(p.events.is_empty());
    // After the backoff: the failed job goes first, then a new attempt.
    w.now += 40;
    let p = w.plan();
    assert_eq!(p.delete_jobs.len(), 1);
    assert!(p.create_job.is_none());
    assert_eq!(p.status.status, TemplatePhase::Pending);
    w.apply(&p);
    let p = w.plan();
    assert!(p.create_job.is_some());
    w.apply(&p);
    w.finish_job("Failed", "DeadlineExceeded");
    let p = w.plan();
    assert_eq!(p.status.discovery.as_ref().unwrap().attempts, 2);
    assert_eq!(
        p.requeue_after,
        Some(Duration::from_secs(120)),
        "60 s × 2^(2−1)"
    );
    assert!(
        p.status
            .discovery
            .unwrap()
            .last_failure
            .unwrap()
            .contains("activeDeadlineSeconds (600s)")
    );
}

// T-21: from the fifth failure on the backoff (16 min at a 60 s base) outlasts the usual 600 s TTL of a
// finished Job; every Job is still created to stay until its retry replaces it, and the retry deletes
// it itself.
#[test]
fn t21_a_failed_job_stays_until_its_retry_however_long_the_backoff() {
    let mut w = World::new();
    for attempt in 1..=8 {
        let p = w.plan();
        let job = p.create_job.clone().expect("a job for this attempt");
        let ttl = job
            .spec
            .as_ref()
            .unwrap()
            .ttl_seconds_after_finished
            .unwrap();
        w.apply(&p);
        w.finish_job("Failed", "BackoffLimitExceeded");
        let p = w.plan();
        let d = p.status.discovery.clone().unwrap();
        assert_eq!(d.attempts, attempt);
        let wait = p.requeue_after.unwrap().as_secs() as i32;
        assert!(
            ttl > wait,
            "attempt {attempt}: the Job's TTL ({ttl} s) ends before its retry ({wait} s)"
        );
        assert!(ttl >= aim_discovery::JOB_TTL_SECONDS_AFTER_FINISHED);
        assert!(p.delete_jobs.is_empty(), "kept during the backoff");
        w.apply(&p);
        // The retry comes: the failed Job goes first, then the next attempt.
        w.now += i64::from(wait);
        let p = w.plan();
        assert_eq!(
            p.delete_jobs.len(),
            1,
            "attempt {attempt}: the retry deletes the failed Job"
        );
        w.apply(&p);
    }
    assert_eq!(
        aim_resolve::template::job_ttl(Duration::from_secs(60), 0),
        600
    );
}

// T-17/T-19: a log read that fails for now (a 5xx, a broken connection) is no failed attempt: the
// template says so, reads the log again shortly, and the dry-run's result is taken when it comes.
#[test]
fn t19_a_transient_log_read_error_is_retried_not_counted() {
    let mut w = World::new();
    let p = w.plan();
    w.apply(&p);
    w.finish_job("Complete", "Completed");
    let p = w.plan_with(
        &LogRead::Transient("the API server answered 503".into()),
        Slot::Granted,
    );
    assert_eq!(p.status.status, TemplatePhase::Pending);
    let d = p.status.discovery.clone().unwrap_or_default();
    assert_eq!(d.attempts, 0, "not a failed attempt");
    assert!(d.last_failure.is_none());
    assert!(p.delete_jobs.is_empty() && p.create_job.is_none());
    assert_eq!(p.requeue_after, Some(aim_resolve::template::LOG_RETRY));
    assert!(
        p.events.iter().all(|e| !e.warning),
        "no Warning: {:?}",
        p.events
    );
    let msg = &cond(&p.status, types::DISCOVERED).message;
    assert!(msg.contains("retried") && msg.contains("503"), "{msg}");
    w.apply(&p);
    // The next read works: Ready, with the dry-run's result.
    let p = w.plan();
    assert_eq!(p.status.status, TemplatePhase::Ready);
    assert_eq!(p.status.discovery.as_ref().unwrap().attempts, 0);
}

#[test]
fn t20_a_failure_counts_once_even_when_the_cache_lags() {
    // The status write and the Job cache race: the same failed Job seen again is not a second attempt.
    let mut w = World::new();
    w.run_job("Failed", "BackoffLimitExceeded");
    let p = w.plan();
    w.apply(&p);
    for _ in 0..3 {
        let again = w.plan();
        assert_eq!(again.status, p.status);
        assert!(again.events.is_empty());
    }
}

#[test]
fn t21_the_backoff_starts_when_the_failure_is_seen() {
    // A slow log read must not eat the backoff: the time of the decision is when the result was read.
    let mut w = World::new();
    let p = w.plan();
    w.apply(&p);
    w.finish_job("Complete", "CompletionsReached");
    w.now += 25;
    let p = w.plan_with(&LogRead::Text(b"[]".to_vec()), Slot::Granted);
    let d = p.status.discovery.unwrap();
    assert_eq!(
        d.last_attempt_time.unwrap().0.as_second(),
        NOW,
        "the attempt started then"
    );
    assert_eq!(d.next_attempt_time.unwrap().0.as_second(), NOW + 25 + 60);
}

#[test]
fn a_refused_job_is_a_failed_attempt_with_a_warning() {
    // Quota, admission or RBAC refuse the Job: status says so, the retry is scheduled, no hot loop.
    let mut w = World::new();
    w.refused = Some("exceeded quota: jobs, requested: count/jobs.batch=1".into());
    let p = w.plan();
    assert!(p.create_job.is_none());
    assert_eq!(p.status.status, TemplatePhase::Failed);
    let d = p.status.discovery.clone().unwrap();
    assert_eq!(d.attempts, 1);
    assert!(d.last_failure.unwrap().contains("refused"));
    assert_eq!(p.requeue_after, Some(Duration::from_secs(60)));
    assert_eq!(p.events.len(), 1);
    assert!(p.events[0].warning && p.events[0].message.contains("exceeded quota"));
    w.refused = None;
    w.apply(&p);
    assert!(w.plan().create_job.is_none(), "waits out the backoff");
    w.now += 60;
    assert!(w.plan().create_job.is_some(), "then tries again");
}

#[test]
fn an_unschedulable_or_uncreatable_pod_says_why_at_once() {
    let mut w = World::new();
    let p = w.plan();
    w.apply(&p);
    let uid = w.jobs[0].metadata.uid.clone().unwrap();
    let mut pod = pod_of(&uid, "p", "Pending");
    pod.status = Some(
        serde_json::from_value(serde_json::json!({ "phase": "Pending", "conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/4 nodes are available: 4 node(s) had untolerated taint {gpu: only}" }] }))
        .unwrap(),
    );
    w.pods.push(pod);
    let p = w.plan();
    assert_eq!(p.status.status, TemplatePhase::Pending);
    assert_cond(
        &p.status,
        types::DISCOVERED,
        "False",
        reasons::DISCOVERY_BLOCKED,
    );
    assert!(
        cond(&p.status, types::READY)
            .message
            .contains("untolerated taint")
    );
    assert!(
        p.events[0].warning,
        "trouble, not ordinary waiting: {:?}",
        p.events
    );
}

#[test]
fn the_spec_type_overrides_the_discovered_type() {
    let mut w = World::new();
    w.spec.r#type = Some(TemplateType::Preview);
    w.run_job("Complete", "CompletionsReached");
    let p = w.plan();
    let meta = &p.status.profile.as_ref().unwrap()["metadata"];
    assert_eq!(meta["type"], "preview");
    assert_eq!(meta["engine"], "vllm", "the rest stays verbatim");
}

#[test]
fn a_first_release_hash_is_adopted_without_rediscovery() {
    // Upgrading changes the hash encoding; a Ready template must not discover again.
    let mut w = World::new();
    w.run_job("Complete", "CompletionsReached");
    let p = w.plan();
    w.apply(&p);
    w.jobs.clear();
    w.pods.clear();
    let current = p.status.discovery.as_ref().unwrap().inputs_hash.clone();
    // What the first release wrote for the same inputs.
    let legacy = {
        let model = model_common("example.test/aim:1");
        let mut inputs = aim_discovery::DiscoveryInputs::new(
            "tpl",
            TemplateScope::Namespace,
            "uid-1",
            "team",
            model.image.clone(),
        );
        inputs.gpu_model = Some("MI300X".into());
        inputs.gpu_count = Some(1);
        aim_discovery::legacy_inputs_hash(&inputs)
    };
    w.status
        .as_mut()
        .unwrap()
        .discovery
        .as_mut()
        .unwrap()
        .inputs_hash = Some(legacy);
    let p = w.plan();
    assert!(p.create_job.is_none(), "no re-discovery");
    assert_eq!(p.status.status, TemplatePhase::Ready);
    assert_eq!(p.status.discovery.unwrap().inputs_hash, current);
}

#[test]
fn t21_backoff_doubles_and_caps_at_an_hour() {
    let base = Duration::from_secs(60);
    let b: Vec<u64> = (1..=8)
        .map(|a| aim_resolve::backoff(base, a).as_secs())
        .collect();
    assert_eq!(b, vec![60, 120, 240, 480, 960, 1920, 3600, 3600]);
}

#[test]
fn t20_image_pull_errors_delete_the_job_and_say_why() {
    let mut w = World::new();
    let p = w.plan();
    w.apply(&p);
    let job_uid = w.jobs[0].metadata.uid.clone().unwrap();
    w.pods.push(serde_json::from_value(serde_json::json!({
        "metadata": { "name": "p", "namespace": "team", "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": job_uid}] },
        "status": { "phase": "Pending", "containerStatuses": [{ "name": "discovery", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": { "waiting": { "reason": "ErrImagePull", "message": "pull access denied: unauthorized" } } }] },
    })).unwrap());
    let p = w.plan();
    assert_eq!(p.status.status, TemplatePhase::Failed);
    assert_eq!(p.delete_jobs.len(), 1);
    assert!(
        p.status
            .discovery
            .unwrap()
            .last_failure
            .unwrap()
            .contains("credentials")
    );
}

// T-20: a discovery pod whose container cannot be created (a Secret or key behind `valueFrom` is
// missing) says so at once, as DiscoveryBlocked with the kubelet's text; no attempt is counted and the Job
// stays (creating the Secret lets it start).
#[test]
fn t20_a_missing_secret_blocks_discovery_with_the_kubelets_message() {
    for reason in ["CreateContainerConfigError", "CreateContainerError"] {
        let mut w = World::new();
        let p = w.plan();
        w.apply(&p);
        let job_uid = w.jobs[0].metadata.uid.clone().unwrap();
        w.pods.push(serde_json::from_value(serde_json::json!({
            "metadata": { "name": "p", "namespace": "team", "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": job_uid}] },
            "status": { "phase": "Pending", "containerStatuses": [{ "name": "discovery", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": { "waiting": { "reason": reason, "message": "secret \"hf-token\" not found" } } }] },
        })).unwrap());
        let p = w.plan();
        assert_eq!(p.status.status, TemplatePhase::Pending, "{reason}");
        assert_cond(
            &p.status,
            types::DISCOVERED,
            "False",
            reasons::DISCOVERY_BLOCKED,
        );
        let msg = &cond(&p.status, types::DISCOVERED).message;
        assert!(
            msg.contains(reason) && msg.contains("secret \"hf-token\" not found"),
            "{msg}"
        );
        assert!(p.delete_jobs.is_empty() && p.create_job.is_none());
        assert_eq!(p.status.discovery.as_ref().map_or(0, |d| d.attempts), 0);
        assert!(
            p.events.iter().any(|e| e.warning),
            "T-31: a Warning says so"
        );
    }
}

#[test]
fn t22_changed_inputs_rediscover_while_staying_usable() {
    let mut w = World::new();
    w.run_job("Complete", "CompletionsReached");
    let p = w.plan();
    w.apply(&p);
    assert_eq!(p.status.status, TemplatePhase::Ready);
    // A new image: a new job, the old one is stale (T-24), the template stays Ready with its results.
    w.ns_model = Some(model_common("example.test/aim:2"));
    let p = w.plan();
    assert!(p.create_job.is_some());
    assert_eq!(
        p.delete_jobs.len(),
        1,
        "T-24: the job of the older inputs is deleted"
    );
    assert_eq!(p.status.status, TemplatePhase::Ready);
    assert_cond(
        &p.status,
        types::DISCOVERED,
        "False",
        reasons::AWAITING_DISCOVERY,
    );
    assert!(
        cond(&p.status, types::DISCOVERED)
            .message
            .contains("re-discovery")
    );
    assert_eq!(p.status.discovery.as_ref().unwrap().attempts, 0);
    let ready_hw = (
        w.status.as_ref().unwrap().hardware_summary.clone(),
        w.status.as_ref().unwrap().resolved_node_affinity.clone(),
    );
    assert_eq!(ready_hw.0.as_deref(), Some("2 x MI300X"));
    assert_eq!(
        (
            p.status.hardware_summary.clone(),
            p.status.resolved_node_affinity.clone()
        ),
        ready_hw,
        "T-10: the hardware of the profile in use stays while re-discovering"
    );
    w.apply(&p);
    w.finish_job("Failed", "BackoffLimitExceeded");
    let p = w.plan();
    assert_eq!(p.status.status, TemplatePhase::Degraded);
    assert_eq!(p.status.model_sources.len(), 1, "old results kept");
    assert_eq!(
        (p.status.hardware_summary, p.status.resolved_node_affinity),
        ready_hw,
        "and when the re-discovery failed"
    );
}

#[test]
fn t22_a_changed_deadline_does_not_rediscover() {
    let mut w = World::new();
    w.run_job("Complete", "CompletionsReached");
    let p = w.plan();
    w.apply(&p);
    w.ns_config = Some(
        serde_json::from_value(serde_json::json!({"discovery": {"activeDeadlineSeconds": 30}}))
            .unwrap(),
    );
    let p = w.plan();
    assert!(p.create_job.is_none() && p.delete_jobs.is_empty());
    assert_eq!(p.status.status, TemplatePhase::Ready);
}

#[test]
fn t25_ready_templates_are_not_rediscovered() {
    let mut w = World::new();
    for _ in 0..2 {
        let p = w.plan();
        w.apply(&p);
        if !w.jobs.is_empty() && w.jobs[0].status.is_none() {
            w.finish_job("Complete", "CompletionsReached");
        }
    }
    let p = w.plan();
    w.apply(&p);
    w.jobs.clear(); // the TTL controller removed the finished job
    let inventory = Inventory::from_nodes(&w.nodes);
    let Decision::Plan(p) = decide(&w.obs(&inventory, LogRead::NotRead, Slot::NotAsked)) else {
        panic!("a Ready template needs nothing")
    };
    assert!(p.create_job.is_none() && p.delete_jobs.is_empty());
    assert_eq!(p.status.status, TemplatePhase::Ready);
}

#[test]
fn t29_t30_ready_condition_and_stable_transition_times() {
    let mut w = World::new();
    let p = w.plan();
    assert_cond(
        &p.status,
        types::READY,
        "False",
        reasons::AWAITING_DISCOVERY,
    );
    let model_found_since = cond(&p.status, types::MODEL_FOUND)
        .last_transition_time
        .clone();
    w.apply(&p);
    w.finish_job("Complete", "CompletionsReached");
    w.now += 30;
    let p = w.plan();
    assert_cond(&p.status, types::READY, "True", reasons::READY);
    assert_eq!(
        cond(&p.status, types::MODEL_FOUND).last_transition_time,
        model_found_since,
        "unchanged status keeps its time"
    );
    assert_ne!(
        cond(&p.status, types::READY).last_transition_time,
        model_found_since,
        "a flip takes the new time"
    );
    assert_eq!(p.status.observed_generation, Some(1));
}

#[test]
fn t31_a_static_template_records_exactly_one_event() {
    let mut w = World::new();
    w.spec.model_sources = vec![
        serde_json::from_value(serde_json::json!({"name": "w", "sourceURI": "hf://a/b"})).unwrap(),
    ];
    let p = w.plan();
    assert_eq!(p.status.status, TemplatePhase::Ready);
    assert_eq!(p.events.len(), 1, "{:?}", p.events);
    assert_eq!(
        (p.events[0].reason.as_str(), p.events[0].warning),
        ("Ready", false)
    );
    w.apply(&p);
    assert!(w.plan().events.is_empty());
}

#[test]
fn t31_one_event_per_status_or_reason_change_warnings_only_for_trouble() {
    let mut w = World::new();
    let mut seen = Vec::new();
    // Waiting for a slot: ordinary waiting, Normal.
    let p = w.plan_with(
        &LogRead::NotRead,
        Slot::Waiting {
            position: 2,
            max: 10,
        },
    );
    seen.extend(p.events.clone());
    w.apply(&p);
    // The position changes: no event.
    let p = w.plan_with(
        &LogRead::NotRead,
        Slot::Waiting {
            position: 1,
            max: 10,
        },
    );
    assert!(p.events.is_empty(), "{:?}", p.events);
    w.apply(&p);
    // The job starts, runs, completes.
    let p = w.plan();
    assert_eq!(p.events.len(), 1);
    assert_eq!(p.events[0].reason, "DiscoveryStarted");
    seen.extend(p.events.clone());
    w.apply(&p);
    let uid = w.jobs[0].metadata.uid.clone().unwrap();
    w.pods.push(pod_of(&uid, "p", "Running"));
    let p = w.plan();
    seen.extend(p.events.clone());
    w.apply(&p);
    w.pods.clear();
    w.finish_job("Complete", "CompletionsReached");
    let p = w.plan();
    seen.extend(p.events.clone());
    w.apply(&p);
    assert!(w.plan().events.is_empty());
    let summary: Vec<(&str, bool)> = seen
        .iter()
        .map(|e| (e.reason.as_str(), e.warning))
        .collect();
    assert_eq!(
        summary,
        [
            (reasons::AWAITING_DISCOVERY, false),
            ("DiscoveryStarted", false),
            (reasons::AWAITING_DISCOVERY, false),
            ("Ready", false),
        ]
    );
    // The GPU goes: NotAvailable is trouble.
    w.nodes.clear();
    let p = w.plan();
    assert_eq!(p.events.len(), 1);
    assert!(p.events[0].warning && p.events[0].reason == reasons::GPU_NOT_AVAILABLE);
}

#[test]
fn t32_paused_templates_are_frozen() {
    let mut w = World::new();
    w.paused = true;
    w.ns_model = None;
    let p = w.plan();
    assert_eq!(p.status, ServiceTemplateStatus::default());
    assert!(p.create_job.is_none() && p.delete_jobs.is_empty() && p.events.is_empty());
}

fn world() -> impl Strategy<Value = (World, u8, u8, u8)> {
    (
        any::<bool>(),
        prop::option::of(Just(())),
        any::<bool>(),
        prop::sample::select(vec!["MI300X", "MI325X", "MI355X", ""]),
        any::<bool>(),
        0u8..4,
        0u8..3,
        0u8..5,
    )
        .prop_map(
            |(cluster, model, named_config, gpu, static_sources, job_state, slot, log)| {
                let mut w = World::new();
                if cluster {
                    w.scope = TemplateScope::Cluster;
                    w.cl_model = w.ns_model.take();
                }
                if model.is_none() {
                    w.ns_model = None;
                    w.cl_model = None;
                }
                if named_config {
                    w.spec.runtime_config_name = "missing".into();
                }
                w.spec.hardware = if gpu.is_empty() {
                    None
                } else {
                    Some(
                        serde_json::from_value(serde_json::json!({"gpu": {"model": gpu}})).unwrap(),
                    )
                };
                if static_sources {
                    w.spec.model_sources = vec![
                        serde_json::from_value(
                            serde_json::json!({"name": "w", "sourceURI": "hf://a/b"}),
                        )
                        .unwrap(),
                    ];
                }
                (w, job_state, slot, log)
            },
        )
}

fn slot_of(n: u8) -> Slot {
    match n {
        0 => Slot::Granted,
        1 => Slot::Waiting {
            position: 2,
            max: 10,
        },
        _ => Slot::Waiting {
            position: 1,
            max: 10,
        },
    }
}

fn log_of(n: u8) -> LogRead {
    match n {
        0 => LogRead::Text(OK_LOG.as_bytes().to_vec()),
        1 => LogRead::Text(b"[]".to_vec()),
        2 => LogRead::Unavailable("gone".into()),
        3 => LogRead::Transient("503 Service Unavailable".into()),
        _ => LogRead::Text(b"{broken".to_vec()),
    }
}

proptest! {
    // Same observations, same plan; applying a plan and observing again changes nothing more.
    #[test]
    fn decisions_are_deterministic_and_reach_a_fixed_point((mut w, job_state, slot, log) in world()) {
        let (slot, log) = (slot_of(slot), log_of(log));
        let p = w.plan_with(&log, slot);
        prop_assert_eq!(&p, &w.plan_with(&log, slot));
        w.apply(&p);
        match job_state {
            1 if !w.jobs.is_empty() => w.finish_job("Complete", "CompletionsReached"),
            2 if !w.jobs.is_empty() => w.finish_job("Failed", "BackoffLimitExceeded"),
            _ => {}
        }
        // Let the world settle, then one more round must be a no-op.
        for _ in 0..3 {
            let p = w.plan_with(&log, slot);
            w.apply(&p);
        }
        let before = w.status.clone();
        let p = w.plan_with(&log, slot);
        prop_assert_eq!(Some(&p.status), before.as_ref());
        prop_assert!(p.create_job.is_none(), "no new job at the fixed point");
        prop_assert!(p.delete_jobs.is_empty(), "no deletion at the fixed point");
        prop_assert!(p.events.is_empty(), "no event without a transition: {:?}", p.events);
        // T-29: Ready is True exactly when the status is Ready.
        let ready = p.status.conditions.iter().find(|c| c.type_ == types::READY).unwrap();
        prop_assert_eq!(ready.status == "True", p.status.status == TemplatePhase::Ready);
    }
}

#[test]
fn a_job_that_gets_no_pod_says_where_to_look() {
    // T-29: Pending, and after a grace period the message points at the Job's events.
    let mut w = World::new();
    let p = w.plan();
    w.apply(&p);
    w.jobs[0].metadata.creation_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::from_second(NOW).unwrap(),
        ));
    w.now += 10;
    let p = w.plan();
    assert!(
        cond(&p.status, types::DISCOVERED)
            .message
            .contains("waiting for its pod to start")
    );
    assert_eq!(
        p.requeue_after,
        Some(Duration::from_secs(20)),
        "looks again when the grace ends"
    );
    w.now += 20;
    let p = w.plan();
    assert_eq!(p.status.status, TemplatePhase::Pending);
    assert!(
        cond(&p.status, types::DISCOVERED)
            .message
            .contains("has no pod after 30s")
    );
}
