//! End-to-end: the cluster-wide discovery limit (T-23, T-24) across operator restarts, and no
//! re-discovery of Ready templates after a restart (T-25). One test, because it stops and starts the
//! operator of this binary.

mod common;

use aim_api::*;
use common::*;
use futures::TryStreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use std::time::Duration;
use xtask::support::{TestNamespace, WAIT, wait_for};

const TEMPLATES: usize = 25;
const LIMIT: usize = 10;

/// Waits until `n` templates satisfy `pred`, by watching the namespace's templates.
async fn wait_count(
    api: &Api<AIMServiceTemplate>,
    n: usize,
    what: &str,
    pred: impl Fn(&ServiceTemplateStatus) -> bool,
) {
    let watch = async {
        let mut seen = std::collections::BTreeMap::new();
        let mut stream =
            std::pin::pin!(watcher(api.clone(), watcher::Config::default()).applied_objects());
        while let Some(t) = stream.try_next().await.unwrap() {
            seen.insert(
                t.metadata.name.clone().unwrap(),
                t.status.as_ref().is_some_and(&pred),
            );
            if seen.values().filter(|v| **v).count() >= n {
                return;
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(120), watch)
        .await
        .is_err()
    {
        panic!(
            "timed out waiting for {n} templates {what}; {} do",
            count(api, &pred).await
        );
    }
}

#[tokio::test]
async fn discovery_limit_holds_across_restarts_and_ready_templates_stay_discovered() {
    system_namespace().await;
    let ns = TestNamespace::new("limit").await;
    ns.discovery_logs(DRY_RUN_OK).await;
    let watch = spawn_job_watch(ns.client.clone());
    let settings = aim_operator::Settings {
        system_namespace: SYSTEM_NAMESPACE.into(),
        backoff_base: BACKOFF_BASE,
        ..Default::default()
    };
    let mut operator = RunningOperator::start(settings.clone());

    // Dry-runs that do not finish, so that slots stay taken.
    let models = ns.api::<AIMModel>();
    apply(
        &models,
        &model(
            &ns.name,
            "m",
            "example.test/aim:1",
            serde_json::json!([{"name": "AIM_TEST_OUTCOME", "value": "hang"}]),
        ),
    )
    .await;
    let api = ns.api::<AIMServiceTemplate>();
    for i in 0..TEMPLATES {
        apply(
            &api,
            &template(&ns.name, &format!("t{i:02}"), on_mi300x("m")),
        )
        .await;
    }
    // T-23: ten run, fifteen wait with a queue position.
    let waiting = |s: &ServiceTemplateStatus| {
        s.status == TemplatePhase::Pending
            && s.discovery
                .as_ref()
                .is_some_and(|d| d.queue_position.is_some())
    };
    wait_count(&api, TEMPLATES - LIMIT, "waiting for a slot", waiting).await;
    wait_active(&watch, LIMIT).await;

    // T-23: a restarted operator rebuilds its accounting before creating any job.
    operator.stop();
    operator = RunningOperator::start(settings.clone());
    wait_count(
        &api,
        TEMPLATES - LIMIT,
        "still waiting after the restart",
        waiting,
    )
    .await;
    wait_active(&watch, LIMIT).await;

    // T-23: two running templates stop needing discovery (static sources); their slots pass on, and
    // every waiting template's position is brought up to date within seconds (not only the two that
    // got a slot).
    let running: Vec<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|t| t.status.as_ref().is_some_and(|s| !waiting(s)))
        .filter_map(|t| t.metadata.name)
        .take(2)
        .collect();
    for name in &running {
        let mut spec = on_mi300x("m");
        spec["modelSources"] = serde_json::json!([{"name": "w", "sourceURI": "hf://a/b"}]);
        apply(&api, &template(&ns.name, name, spec)).await;
    }
    let left = TEMPLATES - LIMIT - 2;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let mut positions: Vec<i32> = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter_map(|t| t.status.as_ref()?.discovery.as_ref()?.queue_position)
            .collect();
        positions.sort();
        if positions == (1..=left as i32).collect::<Vec<_>>() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "queue positions stale: {positions:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Inputs change (the env is an input): old jobs go (T-24), slots pass on, and all reach Ready.
    apply(
        &models,
        &model(&ns.name, "m", "example.test/aim:1", serde_json::json!([])),
    )
    .await;
    wait_count(&api, TEMPLATES, "Ready", |s| {
        s.status == TemplatePhase::Ready
    })
    .await;
    let max = watch.lock().unwrap().max;
    assert!(
        max <= LIMIT,
        "T-23: {max} discovery jobs were active at once"
    );
    let ours = api.list(&ListParams::default()).await.unwrap();
    for t in &ours.items {
        let q = t
            .status
            .as_ref()
            .unwrap()
            .discovery
            .as_ref()
            .and_then(|d| d.queue_position);
        assert_eq!(q, None, "no queue position once discovered");
    }

    // T-25: after a restart, Ready templates are not discovered again.
    operator.stop();
    let created_before = watch.lock().unwrap().created.len();
    let operator = RunningOperator::start(settings);
    apply(&api, &template(&ns.name, "sentinel", on_mi300x("m"))).await;
    wait_for(&api, "sentinel", "Ready", WAIT, phase(TemplatePhase::Ready)).await;
    let new: Vec<String> = watch.lock().unwrap().created[created_before..]
        .iter()
        .filter(|k| !k.contains("sentinel"))
        .cloned()
        .collect();
    assert!(
        new.is_empty(),
        "jobs created for Ready templates after a restart: {new:?}"
    );
    operator.stop();
    let jobs = ns.api::<Job>().list(&ListParams::default()).await.unwrap();
    assert!(
        jobs.items.iter().all(|j| !active(j)),
        "no discovery left running"
    );
}
