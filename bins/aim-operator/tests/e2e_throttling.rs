//! End-to-end: the operator throttled by API Priority and Fairness. A FlowSchema sends every request of a
//! ServiceAccount that only this test uses to a priority level with one concurrency share that rejects
//! whatever it cannot serve at once (429 with `Retry-After`). An operator acting as that account, started
//! with 20 static templates waiting, still settles every one: Ready, no reconcile error, no Failed (or
//! other error) status along the way, every template's Ready event recorded.

mod common;

use aim_api::*;
use common::*;
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::flowcontrol::v1::{FlowSchema, PriorityLevelConfiguration};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use xtask::support::{TestNamespace, client, wait_for};

/// Templates waiting when the throttled operator starts.
const TEMPLATES: usize = 20;
/// How long they may take to settle: throttled requests wait up to 60 s each (`client.rs`).
const SETTLE: Duration = Duration::from_secs(180);

/// The FlowSchema, priority level and ClusterRoleBinding of one throttled ServiceAccount, all named
/// after it. Deleted on drop, and owned by the test namespace too: deleting the namespace of a killed
/// run removes them.
struct Throttle {
    name: String,
}

impl Throttle {
    /// Throttles the ServiceAccount `ns/name` (created here) and binds it to the chart's ClusterRole.
    async fn install(admin: &Client, ns: &TestNamespace, name: &str) -> Self {
        install_operator_rbac();
        let this = Self { name: name.into() };
        let uid = Api::<Namespace>::all(admin.clone())
            .get(&ns.name)
            .await
            .unwrap()
            .metadata
            .uid
            .unwrap();
        let metadata = serde_json::json!({
            "name": name,
            "labels": { "app.kubernetes.io/part-of": "aim-e2e-throttling" },
            "ownerReferences": [{ "apiVersion": "v1", "kind": "Namespace", "name": ns.name, "uid": uid }],
        });
        let pp = PostParams::default();
        let sa: ServiceAccount = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "namespace": ns.name },
        }))
        .unwrap();
        ns.api::<ServiceAccount>().create(&pp, &sa).await.unwrap();
        let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
            "metadata": metadata,
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "aim-operator" },
            "subjects": [{ "kind": "ServiceAccount", "name": name, "namespace": ns.name }],
        }))
        .unwrap();
        Api::<ClusterRoleBinding>::all(admin.clone())
            .create(&pp, &binding)
            .await
            .unwrap();
        // One share of the server's 600 seats (3 seats), nothing borrowed, no queue: a request that
        // finds them taken is refused at once.
        let level: PriorityLevelConfiguration = serde_json::from_value(serde_json::json!({
            "metadata": metadata,
            "spec": { "type": "Limited", "limited": {
                "nominalConcurrencyShares": 1, "lendablePercent": 0, "borrowingLimitPercent": 0,
                "limitResponse": { "type": "Reject" },
            } },
        }))
        .unwrap();
        Api::<PriorityLevelConfiguration>::all(admin.clone())
            .create(&pp, &level)
            .await
            .unwrap();
        // Before `service-accounts` (9000), after every system schema.
        let schema: FlowSchema = serde_json::from_value(serde_json::json!({
            "metadata": metadata,
            "spec": {
                "priorityLevelConfiguration": { "name": name },
                "matchingPrecedence": 1000,
                "distinguisherMethod": { "type": "ByUser" },
                "rules": [{
                    "subjects": [{ "kind": "ServiceAccount", "serviceAccount": { "name": name, "namespace": ns.name } }],
                    "resourceRules": [{ "verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "clusterScope": true, "namespaces": ["*"] }],
                    "nonResourceRules": [{ "verbs": ["*"], "nonResourceURLs": ["*"] }],
                }],
            },
        }))
        .unwrap();
        let schemas = Api::<FlowSchema>::all(admin.clone());
        schemas.create(&pp, &schema).await.unwrap();
        // The API server's flow-control configuration has taken it when it marks it not dangling.
        wait_for(
            &schemas,
            name,
            "the FlowSchema in use",
            Duration::from_secs(30),
            |fs: Option<&FlowSchema>| {
                fs.and_then(|fs| fs.status.as_ref())
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter()
                            .any(|c| c.type_ == "Dangling" && c.status.as_deref() == Some("False"))
                    })
            },
        )
        .await;
        this
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        // Drop cannot await: kubectl, without waiting (as `TestNamespace` does).
        if let Ok(v) = xtask::testenv::Versions::read() {
            let _ = xtask::testenv::kubectl(&xtask::testenv::bin_dir(&v))
                .args(["delete", "--wait=false", "--ignore-not-found"])
                .arg(format!(
                    "flowschemas.flowcontrol.apiserver.k8s.io/{}",
                    self.name
                ))
                .arg(format!(
                    "prioritylevelconfigurations.flowcontrol.apiserver.k8s.io/{}",
                    self.name
                ))
                .arg(format!(
                    "clusterrolebindings.rbac.authorization.k8s.io/{}",
                    self.name
                ))
                .output();
        }
    }
}

/// Sum of the API server's samples of `metric` whose labels include `label`.
async fn apiserver_metric(admin: &Client, metric: &str, label: &str) -> f64 {
    let req = hyper::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = admin.request_text(req).await.unwrap();
    sum_samples(&text, metric, label)
}

fn sum_samples(text: &str, metric: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_throttled_operator_settles_every_template_without_errors() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    let admin = client().await;
    let ns = TestNamespace::new("throttled").await;
    let account = format!("aim-e2e-throttled-{}", std::process::id());
    let throttle = Throttle::install(&admin, &ns, &account).await;
    let level = format!("priority_level=\"{}\"", throttle.name);
    let rejected_before = apiserver_metric(
        &admin,
        "apiserver_flowcontrol_rejected_requests_total",
        &level,
    )
    .await;

    // Everything waits for the operator: a model and TEMPLATES templates with static sources.
    model_m(&ns, serde_json::json!([])).await;
    let api = ns.api::<AIMServiceTemplate>();
    let spec = serde_json::json!({ "modelName": "m", "hardware": { "gpu": { "model": "MI300X" } },
        "modelSources": [{ "name": "w", "sourceURI": "hf://a/b" }] });
    let names: BTreeSet<String> = (0..TEMPLATES).map(|i| format!("t{i:02}")).collect();
    for name in &names {
        apply(&api, &template(&ns.name, name, spec.clone())).await;
    }

    // Every phase each template shows, from a watch that runs from before the operator starts.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watch = tokio::spawn({
        let api = api.clone();
        async move {
            let stream = watcher(api, watcher::Config::default()).applied_objects();
            let mut stream = std::pin::pin!(stream);
            while let Ok(Some(t)) = stream.try_next().await {
                let phase = t.status.as_ref().map(|s| s.status);
                if tx
                    .send((t.metadata.name.unwrap_or_default(), phase))
                    .is_err()
                {
                    return;
                }
            }
        }
    });

    // The watch has listed every template before the operator starts, so no phase goes unseen.
    let mut listed = BTreeSet::new();
    while listed.len() < TEMPLATES {
        let (name, _) = rx.recv().await.expect("the template watch");
        listed.insert(name);
    }

    let metrics_port = free_port();
    let started = Instant::now();
    let operator = RunningOperator::start_as(
        aim_operator::Settings {
            system_namespace: SYSTEM_NAMESPACE.into(),
            backoff_base: BACKOFF_BASE,
            registry: test_registry_settings(),
            metrics_address: Some(([127, 0, 0, 1], metrics_port).into()),
            ..Default::default()
        },
        Some((&ns.name, &account)),
    );

    let mut last: BTreeMap<String, TemplatePhase> = BTreeMap::new();
    let mut bad: Vec<(String, TemplatePhase, Duration)> = Vec::new();
    let settled = tokio::time::timeout(SETTLE, async {
        while let Some((name, phase)) = rx.recv().await {
            let Some(phase) = phase else { continue };
            if !matches!(
                phase,
                TemplatePhase::Pending | TemplatePhase::Progressing | TemplatePhase::Ready
            ) {
                bad.push((name.clone(), phase, started.elapsed()));
            }
            last.insert(name, phase);
            let ready = last
                .values()
                .filter(|p| **p == TemplatePhase::Ready)
                .count();
            if ready == names.len() {
                return started.elapsed();
            }
        }
        panic!("the template watch ended");
    })
    .await;
    watch.abort();

    // Each template's one Ready event (T-31): a throttled event write is not lost either.
    let mut with_event = BTreeSet::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        let stream = watcher(ns.api::<Event>(), watcher::Config::default()).applied_objects();
        let mut stream = std::pin::pin!(stream);
        while let Ok(Some(e)) = stream.try_next().await {
            if e.reason.as_deref() == Some("Ready")
                && let Some(r) = e.regarding
                && r.kind.as_deref() == Some("AIMServiceTemplate")
                && let Some(name) = r.name
            {
                with_event.insert(name);
            }
            if with_event.is_superset(&names) {
                return;
            }
        }
    })
    .await;

    let rejected = apiserver_metric(
        &admin,
        "apiserver_flowcontrol_rejected_requests_total",
        &level,
    )
    .await
        - rejected_before;
    let dispatched = apiserver_metric(
        &admin,
        "apiserver_flowcontrol_dispatched_requests_total",
        &level,
    )
    .await;
    let (_, metrics) = http_get(metrics_port, "/metrics").expect("the operator's /metrics");
    let errors: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("aim_reconcile_errors_total{") && !l.ends_with(" 0"))
        .collect();
    operator.stop();

    eprintln!(
        "throttled operator: {rejected} requests refused with 429, {dispatched} served; settled in {settled:?}; \
         {} of {TEMPLATES} Ready events; reconcile errors: {errors:?}; error phases seen: {bad:?}",
        with_event.len()
    );
    assert!(
        rejected > 0.0,
        "the priority level refused nothing: the test throttled nothing"
    );
    // Every operator a test starts reconciles the whole cluster: make sure this one did the writing
    // (a status patch and an event per template, besides its lists and watches).
    assert!(
        dispatched >= (2 * TEMPLATES) as f64,
        "the throttled operator was served only {dispatched} requests: another operator (another test \
         binary's, against this cluster) settled the templates, so this run proves nothing"
    );
    let settled = settled.unwrap_or_else(|_| {
        panic!("not every template Ready within {SETTLE:?}; last phases: {last:?}")
    });
    assert!(
        bad.is_empty(),
        "error phases seen along the way (name, phase, after): {bad:?}"
    );
    assert!(
        errors.is_empty(),
        "throttling became reconcile errors: {errors:?}"
    );
    let missing: Vec<_> = names.difference(&with_event).collect();
    assert!(
        missing.is_empty(),
        "templates without their Ready event: {missing:?}"
    );
    assert!(settled < SETTLE);
    drop(throttle);
}
