//! End-to-end: two operator processes elect a leader (O-01); the leader is killed with SIGKILL in the
//! middle of 25 discoveries, the standby takes over within the lease duration, the discovery limit holds
//! throughout (T-23), every template ends Ready, and SIGTERM makes the new leader exit 0 and hand the
//! lease back (O-04).

mod common;

use aim_api::*;
use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use xtask::support::{TestNamespace, WAIT, wait_for};

const LEASE_SECONDS: u64 = 6;
const TEMPLATES: usize = 25;

/// The test cluster's kubeconfig, acting as the chart's ServiceAccount (impersonation), so the replicas
/// have only its RBAC (O-05).
fn service_account_kubeconfig() -> std::path::PathBuf {
    install_operator_rbac();
    let mut config =
        kube::config::Kubeconfig::read_from(xtask::testenv::kubeconfig_path()).unwrap();
    for user in &mut config.auth_infos {
        if let Some(info) = user.auth_info.as_mut() {
            info.impersonate = Some(format!(
                "system:serviceaccount:{SYSTEM_NAMESPACE}:aim-operator"
            ));
            info.impersonate_groups = Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{SYSTEM_NAMESPACE}"),
                "system:authenticated".into(),
            ]);
        }
    }
    let path = xtask::testenv::workdir().join("operator-sa-kubeconfig.yaml");
    std::fs::write(&path, serde_saphyr::to_string(&config).unwrap()).unwrap();
    path
}

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
            .env("KUBECONFIG", service_account_kubeconfig())
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
