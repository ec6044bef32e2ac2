//! End-to-end leader election (O-01, O-04):
//! - two operator processes elect a leader; the leader is killed with SIGKILL in the middle of 25
//!   discoveries, the standby takes over within the lease duration, the discovery limit holds throughout
//!   (T-23), every template ends Ready, and SIGTERM makes the new leader exit 0 and hand the lease back;
//! - ten in-process standbys wait while the leader releases the lease, 20 rounds, and never do two
//!   replicas lead at once (each says so itself, `aim_leader` on its own `/metrics`);
//! - started against a cluster without its namespace, the operator exits 1 with one line saying what to do.

mod common;

use aim_api::*;
use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xtask::support::{TestNamespace, WAIT, wait_for};

const LEASE_SECONDS: u64 = 6;
const TEMPLATES: usize = 25;
/// The election test: standbys waiting for the lease in each round, rounds, and a shorter lease (the
/// standbys notice a released lease at the old one's expiry, so a round lasts about a lease).
const STANDBYS: usize = 10;
const ROUNDS: usize = 20;
const RACE_LEASE_SECONDS: u64 = 4;
const RACE_RENEW_GRACE_SECONDS: u64 = 2;

/// The tests of this file take turns (the tests of one binary run in parallel): they share the Lease
/// `aim-system/aim-operator` and the ServiceAccount's kubeconfig file.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Replica {
    name: &'static str,
    port: u16,
    child: Child,
}

impl Replica {
    fn start(name: &'static str) -> Self {
        let port = free_port();
        let log =
            std::fs::File::create(xtask::testenv::workdir().join(format!("leader-{name}.log")))
                .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_aim-operator"))
            .env(
                "KUBECONFIG",
                service_account_kubeconfig("operator-sa-kubeconfig.yaml"),
            )
            .env("POD_NAME", name)
            .env("RUST_LOG", "info")
            .args([
                "--system-namespace",
                SYSTEM_NAMESPACE,
                "--lease-duration-seconds",
                &LEASE_SECONDS.to_string(),
                "--discovery-backoff-seconds",
                "2",
                "--metrics-bind-address",
                &format!("127.0.0.1:{port}"),
            ])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        Self { name, port, child }
    }

    fn leads(&self) -> bool {
        http_get(self.port, "/metrics").is_some_and(|(_, body)| body.contains("aim_leader 1"))
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn holder(leases: &kube::Api<Lease>) -> Option<String> {
    leases
        .get_opt("aim-operator")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
}

async fn wait_holder(leases: &kube::Api<Lease>, want: Option<&str>, within: Duration) -> Instant {
    let deadline = Instant::now() + within;
    loop {
        let h = holder(leases).await;
        if h.as_deref() == want || (want.is_none() && h.as_deref() == Some("")) {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "lease holder is {h:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_standby_takes_over_from_a_killed_leader_and_the_limit_holds() {
    // O-01, O-04, T-23
    let _turn = TURN.lock().await;
    system_namespace().await;
    let ns = TestNamespace::new("leader").await;
    ns.discovery_logs(DRY_RUN_OK).await;
    let watch = spawn_job_watch(ns.client.clone());
    let leases: kube::Api<Lease> = kube::Api::namespaced(ns.client.clone(), SYSTEM_NAMESPACE);
    // Whoever held the lease before this test has released it or lets it expire.
    let a = Replica::start("op-a");
    wait_holder(&leases, Some("op-a"), WAIT).await;
    let mut b = Replica::start("op-b");
    let deadline = Instant::now() + WAIT;
    while http_get(b.port, "/readyz").map(|(c, _)| c) != Some(200) {
        assert!(Instant::now() < deadline, "the standby never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!b.leads(), "op-b stands by");

    // 25 discoveries of 3 s each, at most 10 at a time.
    model_m(
        &ns,
        serde_json::json!([
            {"name": "AIM_TEST_OUTCOME", "value": "complete-after"},
            {"name": "AIM_TEST_COMPLETE_AFTER", "value": "3s"},
        ]),
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
    wait_active(&watch, 10).await;
    // The standby wrote nothing: it runs no controller and counts no reconcile.
    let (_, body) = http_get(b.port, "/metrics").unwrap();
    assert!(
        body.contains("aim_leader 0") && !body.contains("aim_reconciles_total"),
        "{body}"
    );

    // SIGKILL the leader mid-run: no release; the standby waits out the lease.
    let killed = Instant::now();
    drop(a);
    let took_over = wait_holder(&leases, Some("op-b"), WAIT).await;
    let gap = took_over.duration_since(killed);
    eprintln!("standby took over {gap:?} after the leader was killed (lease {LEASE_SECONDS}s)");
    assert!(
        gap <= Duration::from_secs(LEASE_SECONDS + 3),
        "took over after {gap:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&api, |s| s.status == TemplatePhase::Ready).await < TEMPLATES {
        assert!(Instant::now() < deadline, "not all templates became Ready");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let max = watch.lock().unwrap().max;
    assert!(max <= 10, "T-23: {max} discovery jobs active at once");
    assert!(b.leads());

    // SIGTERM: the leader stops, exits 0 and releases the lease at once.
    let pid = b.child.id();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = b.child.wait().unwrap();
    assert!(status.success(), "{} exited with {status}", b.name);
    wait_holder(&leases, None, Duration::from_secs(3)).await;
    wait_for(
        &api,
        "t00",
        "still Ready",
        WAIT,
        phase(TemplatePhase::Ready),
    )
    .await;
}

/// A replica run in-process (`aim_operator::run`) with its own identity and `/metrics` port, as the
/// chart's ServiceAccount.
struct InProcess {
    name: String,
    port: u16,
    operator: Option<RunningOperator>,
}

impl InProcess {
    fn start(name: String) -> Self {
        let port = free_port();
        let mut election = aim_operator::LeaderElection::new(Some(name.clone()));
        election.lease_duration = RACE_LEASE_SECONDS;
        election.renew_grace = RACE_RENEW_GRACE_SECONDS;
        let operator = RunningOperator::start_as(
            aim_operator::Settings {
                system_namespace: SYSTEM_NAMESPACE.into(),
                backoff_base: BACKOFF_BASE,
                metrics_address: Some(([127, 0, 0, 1], port).into()),
                leader_election: Some(election),
                ..Default::default()
            },
            Some((SYSTEM_NAMESPACE, "aim-operator")),
        );
        Self {
            name,
            port,
            operator: Some(operator),
        }
    }

    /// Waits on a blocking thread until it has stopped (a leader releases the lease first). Panics if
    /// its `run` failed, e.g. with "lost leadership".
    async fn stop(mut self) {
        let operator = self.operator.take().expect("running");
        tokio::task::spawn_blocking(move || operator.stop())
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    }
}

impl Drop for InProcess {
    /// A failed test still stops its replicas, so that they do not hold the lease for the next test.
    fn drop(&mut self) {
        if let Some(operator) = self.operator.take() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| operator.stop()));
        }
    }
}

/// What every replica says of itself (`aim_leader` on its own `/metrics`), read on a thread of its own
/// every 10 ms. A replica leaves the sample before it is asked to stop: a leader that releases the lease
/// still says it leads until it is gone.
#[derive(Default)]
struct Sampler {
    watched: Mutex<Vec<(String, u16)>>,
    sweeps: AtomicU64,
    done: AtomicBool,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    /// Who led in the last sweep.
    leaders: Vec<String>,
    /// Every sweep in which two or more replicas led, with when (since the start) and who.
    overlaps: Vec<(Duration, Vec<String>)>,
}

impl Sampler {
    fn spawn() -> (Arc<Self>, std::thread::JoinHandle<()>) {
        let sampler = Arc::new(Self::default());
        let s = sampler.clone();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            // Bounded: the test ends long before.
            while !s.done.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(900) {
                let watched = s.watched.lock().unwrap().clone();
                let leaders: Vec<String> = watched
                    .iter()
                    .filter(|(_, port)| {
                        http_get(*port, "/metrics")
                            .is_some_and(|(_, body)| body.contains("aim_leader 1"))
                    })
                    .map(|(name, _)| name.clone())
                    .collect();
                {
                    let mut seen = s.seen.lock().unwrap();
                    if leaders.len() > 1 {
                        seen.overlaps.push((started.elapsed(), leaders.clone()));
                    }
                    seen.leaders = leaders;
                }
                s.sweeps.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        (sampler, thread)
    }

    fn watch(&self, r: &InProcess) {
        self.watched.lock().unwrap().push((r.name.clone(), r.port));
    }

    /// Stops sampling `r`, and returns once no sweep that still reads it is under way.
    async fn unwatch(&self, r: &InProcess) {
        self.watched
            .lock()
            .unwrap()
            .retain(|(name, _)| *name != r.name);
        let from = self.sweeps.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.sweeps.load(Ordering::SeqCst) < from + 2 {
            assert!(Instant::now() < deadline, "the sampler is stuck");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn assert_one_leader_at_most(&self) {
        let seen = std::mem::take(&mut self.seen.lock().unwrap().overlaps);
        assert!(
            seen.is_empty(),
            "O-01: two replicas led at once in {} samples, first at {:?}: {:?}",
            seen.len(),
            seen[0].0,
            seen[0].1,
        );
    }

    /// Waits until exactly one watched replica leads and every other one says it stands by (`/readyz`),
    /// failing at once if two ever led.
    async fn wait_settled(&self) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            self.assert_one_leader_at_most();
            let leaders = self.seen.lock().unwrap().leaders.clone();
            // Replicas neither leading nor standing by, with what `/readyz` says (`None`: it is gone,
            // e.g. its `run` failed with "lost leadership").
            let unsettled: Vec<(String, Option<(u16, String)>)> = self
                .watched
                .lock()
                .unwrap()
                .clone()
                .into_iter()
                .filter(|(name, _)| !leaders.contains(name))
                .map(|(name, port)| (name, http_get(port, "/readyz")))
                .filter(|(_, ready)| {
                    !ready
                        .as_ref()
                        .is_some_and(|(code, body)| *code == 200 && body.trim() == "standby")
                })
                .collect();
            if let [leader] = leaders.as_slice()
                && unsettled.is_empty()
            {
                return leader.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no settled leadership: leading {leaders:?}, neither leading nor standing by {unsettled:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Waits until `leader` holds the lease and has renewed it at least once.
async fn wait_renewed(leases: &kube::Api<Lease>, leader: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let spec = leases
            .get("aim-operator")
            .await
            .unwrap()
            .spec
            .unwrap_or_default();
        if spec.holder_identity.as_deref() == Some(leader)
            && spec.renew_time.is_some()
            && spec.renew_time != spec.acquire_time
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{leader} never renewed: {spec:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn standbys_racing_for_a_released_lease_never_lead_two_at_once() {
    // O-01, O-04: each replica applies the Lease under its own field manager, so of the standbys that
    // find it free at once only one takes it (the others get a conflict).
    let _turn = TURN.lock().await;
    system_namespace().await;
    install_operator_rbac();
    let (sampler, sampler_thread) = Sampler::spawn();
    let mut started = 0;
    let mut start = |sampler: &Sampler| {
        started += 1;
        let r = InProcess::start(format!("race-{started:02}"));
        sampler.watch(&r);
        r
    };
    let mut replicas: Vec<InProcess> = (0..=STANDBYS).map(|_| start(&sampler)).collect();
    let leases: kube::Api<Lease> =
        kube::Api::namespaced(xtask::support::client().await, SYSTEM_NAMESPACE);
    let mut leader = sampler.wait_settled().await;
    let mut leaders = vec![leader.clone()];
    for round in 1..=ROUNDS {
        // Once the leader has renewed, every standby sleeps until that renewal's expiry: they all wake
        // at the same moment and find the lease free.
        wait_renewed(&leases, &leader).await;
        let i = replicas.iter().position(|r| r.name == leader).unwrap();
        let stopping = replicas.remove(i);
        sampler.unwatch(&stopping).await;
        stopping.stop().await;
        let released = Instant::now();
        let next = sampler.wait_settled().await;
        assert_ne!(next, leader);
        assert_eq!(holder(&leases).await.as_deref(), Some(next.as_str()));
        eprintln!(
            "round {round}: {leader} released the lease while {} standbys waited; {next} leads after {:?}",
            replicas.len(),
            released.elapsed(),
        );
        leader = next;
        leaders.push(leader.clone());
        replicas.push(start(&sampler));
        sampler.wait_settled().await;
    }
    // A false leader would find out at its next renewal: sample across one more lease duration.
    let quiet = Instant::now() + Duration::from_secs(RACE_LEASE_SECONDS);
    while Instant::now() < quiet {
        sampler.wait_settled().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sampler.assert_one_leader_at_most();
    let sweeps = sampler.sweeps.load(Ordering::SeqCst);
    eprintln!(
        "{sweeps} samples of {} replicas; leaders in turn: {leaders:?}",
        replicas.len()
    );
    // Standbys first, then the leader, which releases the lease for the next test.
    let last = sampler.wait_settled().await;
    replicas.sort_by_key(|r| r.name == last);
    for r in replicas {
        sampler.unwatch(&r).await;
        r.stop().await;
    }
    sampler.done.store(true, Ordering::Relaxed);
    sampler_thread.join().unwrap();
}

/// The operator binary, with this kubeconfig and system namespace; its exit status and output once it
/// exits (it is killed after 30 s).
async fn run_binary(
    kubeconfig: std::path::PathBuf,
    namespace: &str,
    log: &str,
) -> (std::process::ExitStatus, String) {
    let path = xtask::testenv::workdir().join(log);
    let file = std::fs::File::create(&path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_aim-operator"))
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info")
        .env("RUST_BACKTRACE", "1")
        .env("NO_COLOR", "1")
        .args([
            "--system-namespace",
            namespace,
            "--metrics-bind-address",
            "0",
        ])
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the operator still runs after 30 s without its namespace");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    (status, std::fs::read_to_string(path).unwrap())
}

/// The one error line of `output`, which must have no trace of a backtrace or a raw API error.
fn one_error_line(output: &str) -> &str {
    for noise in [
        "backtrace",
        "Caused by",
        "panicked",
        "ApiError",
        "ErrorResponse",
        "Status {",
    ] {
        assert!(!output.contains(noise), "{noise:?} in:\n{output}");
    }
    let errors: Vec<&str> = output.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "one error line expected:\n{output}");
    errors[0]
}

#[tokio::test]
async fn without_its_namespace_the_operator_exits_saying_what_to_do() {
    // O-01: the Lease lives in the system namespace; without it the operator stops at once.
    let _turn = TURN.lock().await;
    let client = xtask::support::client().await;
    let namespace = format!("aim-absent-{}", std::process::id());
    let namespaces: kube::Api<Namespace> = kube::Api::all(client);
    assert!(namespaces.get_opt(&namespace).await.unwrap().is_none());

    // Run by hand with a kubeconfig that may do anything: the API server says the namespace is missing.
    let (status, output) = run_binary(
        xtask::testenv::kubeconfig_path(),
        &namespace,
        "leader-no-namespace.log",
    )
    .await;
    assert_eq!(status.code(), Some(1), "{output}");
    let line = one_error_line(&output);
    assert!(
        line.contains(&format!("namespace \"{namespace}\" does not exist"))
            && line.contains(&format!("kubectl create namespace {namespace}"))
            && line.contains("--leader-elect=false"),
        "{line}"
    );

    // As the chart's ServiceAccount, whose Role is in aim-system only: authorisation fails first, so the
    // line names both causes.
    let (status, output) = run_binary(
        service_account_kubeconfig("operator-sa-kubeconfig.yaml"),
        &namespace,
        "leader-no-namespace-sa.log",
    )
    .await;
    assert_eq!(status.code(), Some(1), "{output}");
    let line = one_error_line(&output);
    assert!(
        line.contains(&format!("check that namespace \"{namespace}\" exists"))
            && line.contains("leases")
            && line.contains("--leader-elect=false"),
        "{line}"
    );
}
