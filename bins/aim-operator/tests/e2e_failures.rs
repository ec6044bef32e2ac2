//! End-to-end: every way a discovery fails, as a user sees it in status, Jobs and events, with an
//! operator whose backoff is long enough (10 s) to watch it: the retry is timed from the failure
//! (T-21), the failed Job stays for `kubectl logs` and counts once (T-20), and nothing is retried in a
//! hot loop.

mod common;

use aim_api::conditions::{reasons, types};
use aim_api::*;
use common::*;
use futures::TryStreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};
use kube::runtime::wait::Condition;
use kube::runtime::{WatchStreamExt, watcher};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use xtask::support::{TestNamespace, WAIT, wait_for};

const BACKOFF: Duration = Duration::from_secs(10);
/// The operator's log limit here: large, so that reading an over-limit log takes seconds.
const LOG_LIMIT: usize = 24 << 20;

static OPERATOR: OnceLock<()> = OnceLock::new();

async fn setup(prefix: &str, log: impl AsRef<[u8]>) -> TestNamespace {
    OPERATOR.get_or_init(|| {
        start_for_binary(aim_operator::Settings {
            system_namespace: SYSTEM_NAMESPACE.into(),
            backoff_base: BACKOFF,
            log_limit: LOG_LIMIT,
            ..Default::default()
        })
    });
    let ns = TestNamespace::new(prefix).await;
    ns.discovery_logs(log).await;
    ns
}

fn outcome(o: &str) -> serde_json::Value {
    serde_json::json!([{"name": "AIM_TEST_OUTCOME", "value": o}])
}

fn discovered_message(t: &AIMServiceTemplate) -> String {
    condition(t.status.as_ref().unwrap(), types::DISCOVERED)
        .message
        .clone()
}

/// Watches the namespace's Jobs and returns when one with a different uid than `old` appears.
async fn next_job(ns: &TestNamespace, old: &str) -> Instant {
    let api: Api<Job> = ns.api();
    let stream = watcher(api, watcher::Config::default()).applied_objects();
    let mut stream = std::pin::pin!(stream);
    while let Some(j) = stream.try_next().await.unwrap() {
        if j.metadata.uid.as_deref() != Some(old) {
            return Instant::now();
        }
    }
    unreachable!("the watch ended")
}

#[tokio::test]
async fn a_failed_job_stays_for_its_logs_counts_once_and_retries_after_the_backoff() {
    // T-20, T-21, T-30
    let ns = setup("kept", DRY_RUN_OK).await;
    model_m(&ns, outcome("fail")).await;
    let api = ns.api::<AIMServiceTemplate>();
    apply(&api, &template(&ns.name, "t", on_mi300x("m"))).await;
    let t = wait_for(&api, "t", "Failed", WAIT, discovery_failed()).await;
    let seen_failed = Instant::now();
    let d = t.status.as_ref().unwrap().discovery.clone().unwrap();
    assert_eq!(d.attempts, 1);
    let msg = discovered_message(&t);
    assert!(
        msg.contains("exited with code 1") && msg.contains("retry after a 10s backoff"),
        "{msg}"
    );
    assert!(
        !msg.contains(&jiff::Timestamp::now().strftime("%Y-%m-%d").to_string()),
        "T-30: no timestamp in the message: {msg}"
    );
    let next = d.next_attempt_time.expect("T-21: nextAttemptTime").0;
    let wait = next.duration_since(jiff::Timestamp::now());
    assert!(
        wait > jiff::SignedDuration::from_secs(8),
        "the retry is 10 s after the failure: {wait:?} left"
    );
    // The failed Job and its pod stay, so `kubectl logs job/<name>` works during the backoff.
    let job_ref = d.job.clone().unwrap();
    let job = ns.api::<Job>().get(&job_ref.name).await.unwrap();
    assert_eq!(
        job.metadata.uid, job_ref.uid,
        "the failure is tied to its Job"
    );
    let pods = ns
        .api::<Pod>()
        .list(
            &ListParams::default()
                .labels(&format!("batch.kubernetes.io/job-name={}", job_ref.name)),
        )
        .await
        .unwrap();
    let pod = pods.items[0].metadata.name.clone().unwrap();
    let log = ns
        .api::<Pod>()
        .logs(
            &pod,
            &LogParams {
                container: Some("discovery".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(log.contains("AIM runtime"), "{log}");
    // The same failed Job is not counted again while the operator looks at it during the backoff.
    let job_uid = job.metadata.uid.clone().unwrap();
    let retried = next_job(&ns, &job_uid).await;
    assert!(
        retried.duration_since(seen_failed) >= BACKOFF - Duration::from_secs(2),
        "T-21: retried {:?} after the failure showed",
        retried.duration_since(seen_failed)
    );
    let t = api.get("t").await.unwrap();
    assert!(t.status.unwrap().discovery.unwrap().attempts <= 2);
}

#[tokio::test]
async fn a_slow_over_limit_log_waits_the_whole_backoff() {
    // T-19, T-21: reading 25 MB takes seconds; the backoff starts after it, not before.
    let big = {
        let mut s = String::with_capacity(LOG_LIMIT + (1 << 20));
        while s.len() <= LOG_LIMIT {
            s.push_str(&"x".repeat(99));
            s.push('\n');
        }
        s.push_str(&DRY_RUN_OK[DRY_RUN_OK.find('[').unwrap()..]);
        s
    };
    let ns = setup("biglog", big).await;
    model_m(&ns, serde_json::json!([])).await;
    let api = ns.api::<AIMServiceTemplate>();
    apply(&api, &template(&ns.name, "t", on_mi300x("m"))).await;
    let t = wait_for(&api, "t", "Failed", WAIT, discovery_failed()).await;
    let seen_failed = Instant::now();
    let msg = discovered_message(&t);
    assert!(
        msg.contains(&format!("longer than the limit of {LOG_LIMIT} bytes"))
            && !msg.contains(&(LOG_LIMIT + 1).to_string()),
        "{msg}"
    );
    let s = t.status.unwrap();
    assert!(
        s.model_sources.is_empty() && s.profile.is_none(),
        "nothing partial"
    );
    let d = s.discovery.unwrap();
    let job_uid = d.job.unwrap().uid.unwrap();
    let retried = next_job(&ns, &job_uid).await;
    let shown = retried.duration_since(seen_failed);
    // Reading the log takes seconds here; a backoff timed from before the read is that much short
    // (the tolerance covers this test's own watch latency).
    assert!(
        shown >= BACKOFF - Duration::from_millis(2500),
        "T-21: Failed was visible for only {shown:?} of a {BACKOFF:?} backoff"
    );
    let new_job = ns
        .api::<Job>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|j| j.metadata.uid.as_deref() != Some(job_uid.as_str()))
        .unwrap();
    let created = new_job.metadata.creation_timestamp.unwrap().0;
    let next = d.next_attempt_time.unwrap().0;
    assert!(
        created >= next - jiff::SignedDuration::from_secs(1),
        "created at {created}, before nextAttemptTime {next}"
    );
}

#[tokio::test]
async fn deadline_exceeded_says_which_deadline() {
    // T-20: a dry-run that never ends is stopped by the Job's deadline from the runtime config.
    let ns = setup("deadline", DRY_RUN_OK).await;
    model_m(&ns, outcome("hang")).await;
    let rc = default_runtime_config(
        &ns.name,
        serde_json::json!({ "discovery": { "activeDeadlineSeconds": 2 } }),
    );
    apply(&ns.api(), &rc).await;
    let api = ns.api::<AIMServiceTemplate>();
    apply(&api, &template(&ns.name, "t", on_mi300x("m"))).await;
    let t = wait_for(&api, "t", "Failed", WAIT, discovery_failed()).await;
    let msg = discovered_message(&t);
    assert!(msg.contains("activeDeadlineSeconds (2s)"), "{msg}");
}

#[tokio::test]
async fn an_authentication_pull_error_says_so_and_frees_the_slot() {
    // T-20: the message tells credentials from a missing image; a stuck Job is deleted at once.
    let ns = setup("pullauth", DRY_RUN_OK).await;
    model_m(&ns, outcome("pull-auth-error")).await;
    let api = ns.api::<AIMServiceTemplate>();
    apply(&api, &template(&ns.name, "t", on_mi300x("m"))).await;
    let t = wait_for(&api, "t", "Failed", WAIT, discovery_failed()).await;
    let msg = discovered_message(&t);
    assert!(
        msg.contains("credentials") && msg.contains("imagePullSecrets"),
        "{msg}"
    );
    let job = t.status.unwrap().discovery.unwrap().job.unwrap().name;
    xtask::support::wait_gone(&ns.api::<Job>(), &job, "stuck job deleted", WAIT).await;
}

#[tokio::test]
async fn a_refused_job_is_a_visible_failed_attempt_not_a_hot_loop() {
    // T-31: the API server refuses the Job (here a quota of zero Jobs); status says why, one Warning,
    // and the retry waits for the backoff.
    let ns = setup("quota", DRY_RUN_OK).await;
    let quota: k8s_openapi::api::core::v1::ResourceQuota =
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "no-jobs", "namespace": ns.name },
            "spec": { "hard": { "count/jobs.batch": "0" } },
        }))
        .unwrap();
    apply(&ns.api(), &quota).await;
    // The quota controller must have counted before the API server enforces it.
    wait_for(
        &ns.api::<k8s_openapi::api::core::v1::ResourceQuota>(),
        "no-jobs",
        "quota status",
        WAIT,
        |q: Option<&k8s_openapi::api::core::v1::ResourceQuota>| {
            q.and_then(|q| q.status.as_ref()?.hard.as_ref()).is_some()
        },
    )
    .await;
    model_m(&ns, serde_json::json!([])).await;
    let api = ns.api::<AIMServiceTemplate>();
    apply(&api, &template(&ns.name, "t", on_mi300x("m"))).await;
    let t = wait_for(&api, "t", "Failed", WAIT, discovery_failed()).await;
    let msg = discovered_message(&t);
    assert!(
        msg.contains("refused") && msg.contains("exceeded quota"),
        "{msg}"
    );
    assert_eq!(t.status.unwrap().discovery.unwrap().attempts, 1);
    let warnings = wait_warnings(&ns, "t", |w| !w.is_empty()).await;
    assert_eq!(
        warnings.len(),
        1,
        "one Warning for one refused attempt: {warnings:#?}"
    );
    assert_eq!(warnings[0].2, 1, "not repeated: {warnings:?}");
    assert!(warnings[0].1.contains("exceeded quota"), "{warnings:?}");
}

/// Waits until the template's Warning events satisfy `done` (events are posted right after the status
/// write, so a test that saw the status may list them a moment early): (reason, note, series count).
async fn wait_warnings(
    ns: &TestNamespace,
    name: &str,
    done: impl Fn(&[(String, String, i32)]) -> bool,
) -> Vec<(String, String, i32)> {
    let warnings = |events: &[(String, String, String, i32)]| -> Vec<(String, String, i32)> {
        events
            .iter()
            .filter(|(type_, ..)| type_ == "Warning")
            .map(|(_, reason, note, count)| (reason.clone(), note.clone(), *count))
            .collect()
    };
    let w = warnings(&events_of(ns, name, WAIT, |l| done(&warnings(l))).await);
    assert!(done(&w), "timed out waiting for Warning events; have {w:?}");
    w
}

#[tokio::test]
async fn an_unschedulable_discovery_pod_says_why_within_seconds() {
    // The pod asks for more CPU than any node has: the scheduler's reason shows, long before the deadline.
    let ns = setup("unsched", DRY_RUN_OK).await;
    model_m(&ns, serde_json::json!([])).await;
    let rc = default_runtime_config(
        &ns.name,
        serde_json::json!({ "discovery": { "resources": { "requests": { "cpu": "100000" } } } }),
    );
    apply(&ns.api(), &rc).await;
    let api = ns.api::<AIMServiceTemplate>();
    apply(&api, &template(&ns.name, "t", on_mi300x("m"))).await;
    let t = wait_for(
        &api,
        "t",
        "DiscoveryBlocked",
        Duration::from_secs(15),
        discovery_blocked(),
    )
    .await;
    let msg = discovered_message(&t);
    assert!(
        msg.contains("cannot be scheduled") && msg.contains("Insufficient cpu"),
        "{msg}"
    );
    wait_warnings(&ns, "t", |w| {
        w.iter().any(|(r, _, _)| r == reasons::DISCOVERY_BLOCKED)
    })
    .await;
}

#[tokio::test]
async fn a_missing_service_account_says_why_within_seconds() {
    // The Job controller cannot create the pod: its FailedCreate event reaches the template's message.
    let ns = setup("nosa", DRY_RUN_OK).await;
    model_m(&ns, serde_json::json!([])).await;
    let api = ns.api::<AIMServiceTemplate>();
    let mut spec = on_mi300x("m");
    spec["serviceAccountName"] = "missing".into();
    apply(&api, &template(&ns.name, "t", spec)).await;
    let t = wait_for(
        &api,
        "t",
        "DiscoveryBlocked",
        Duration::from_secs(20),
        discovery_blocked(),
    )
    .await;
    let msg = discovered_message(&t);
    assert!(
        msg.contains("cannot be created") && msg.contains("\"missing\""),
        "{msg}"
    );
}

#[tokio::test]
async fn a_discovery_pod_blocked_on_a_missing_secret_says_why_within_seconds() {
    // T-20: the kubelet cannot create the container (a Secret behind `valueFrom` is missing: the test
    // control plane's kwok leaves the pod in CreateContainerConfigError when its env asks for it). The
    // template says so within seconds, with the kubelet's text, instead of blaming the 600 s deadline;
    // sampled along the way, it never counts a failed attempt.
    let ns = setup("nosecret", DRY_RUN_OK).await;
    model_m(&ns, outcome("config-error")).await;
    let api = ns.api::<AIMServiceTemplate>();
    apply(&api, &template(&ns.name, "t", on_mi300x("m"))).await;
    let t = wait_for(
        &api,
        "t",
        "DiscoveryBlocked",
        Duration::from_secs(20),
        |t: Option<&AIMServiceTemplate>| {
            let st = t.and_then(|t| t.status.as_ref());
            assert!(
                st.is_none_or(|s| s.discovery.as_ref().is_none_or(|d| d.attempts == 0)),
                "a failed attempt was counted: {st:#?}"
            );
            discovery_blocked().matches_object(t)
        },
    )
    .await;
    assert_eq!(t.status.as_ref().unwrap().status, TemplatePhase::Pending);
    let msg = discovered_message(&t);
    assert!(
        msg.contains("CreateContainerConfigError") && msg.contains("secret \"hf-token\" not found"),
        "{msg}"
    );
    wait_warnings(&ns, "t", |w| {
        w.iter().any(|(r, _, _)| r == reasons::DISCOVERY_BLOCKED)
    })
    .await;
}
