//! End-to-end: the operator does its work with only the RBAC in `deploy/manifests/` (O-05), acting as
//! the `aim-operator` ServiceAccount; and, installed for a list of namespaces (`watchNamespaces`), with
//! only the Roles the chart renders for them, acting as that install's ServiceAccount. Its own binary,
//! because it runs its own operators.

mod common;

use aim_api::*;
use common::*;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
use xtask::support::{TestNamespace, WAIT, wait_for, wait_gone};

/// Both tests run an operator that reconciles cluster templates, and the first one every namespace:
/// one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn the_deployed_cluster_role_is_enough() {
    let _serial = SERIAL.lock().await;
    system_namespace().await;
    install_operator_rbac();
    // With leader election, as deployed: the Role in aim-system must be enough for the Lease.
    let mut election = aim_operator::LeaderElection::new(Some("rbac-test".into()));
    election.lease_duration = 6;
    election.renew_grace = 2;
    let settings = aim_operator::Settings {
        system_namespace: SYSTEM_NAMESPACE.into(),
        backoff_base: BACKOFF_BASE,
        leader_election: Some(election),
        ..Default::default()
    };
    let operator = RunningOperator::start_as(settings, Some((SYSTEM_NAMESPACE, "aim-operator")));

    // Discovery end to end: watch everything, create a Job, read its pod's log, write status, record events.
    let ns = TestNamespace::new("rbac").await;
    ns.discovery_logs(DRY_RUN_OK).await;
    apply(
        &ns.api(),
        &model(&ns.name, "m", "example.test/aim:1", serde_json::json!([])),
    )
    .await;
    let api = ns.api::<AIMServiceTemplate>();
    apply(&api, &template(&ns.name, "ok", on_mi300x("m"))).await;
    wait_for(
        &api,
        "ok",
        "Ready as the ServiceAccount",
        WAIT,
        phase(TemplatePhase::Ready),
    )
    .await;
    assert_events_recorded(&ns).await;

    // A failing discovery: the failed Job is deleted when its retry is due.
    apply(
        &ns.api(),
        &model(
            &ns.name,
            "bad",
            "example.test/aim:1",
            serde_json::json!([{"name": "AIM_TEST_OUTCOME", "value": "fail"}]),
        ),
    )
    .await;
    apply(&api, &template(&ns.name, "bad", on_mi300x("bad"))).await;
    let t = wait_for(&api, "bad", "Failed", WAIT, discovery_failed()).await;
    let job = t.status.unwrap().discovery.unwrap().job.unwrap().name;
    wait_gone(&ns.api::<Job>(), &job, "failed job deleted", WAIT).await;

    // Cluster templates: discovery in the operator namespace, which enforces the restricted standard.
    let name = format!("{}-cl", ns.name);
    let models: Api<AIMClusterModel> = Api::all(ns.client.clone());
    let cm = cluster_model(&name, "example.test/aim:1");
    apply(&models, &cm).await;
    let cl: Api<AIMClusterServiceTemplate> = Api::all(ns.client.clone());
    let t = cluster_template(&name, on_mi300x(&name));
    apply(&cl, &t).await;
    wait_for(
        &cl,
        &name,
        "cluster template Ready as the ServiceAccount",
        WAIT,
        phase(TemplatePhase::Ready),
    )
    .await;
    cl.delete(&name, &Default::default()).await.unwrap();
    models.delete(&name, &Default::default()).await.unwrap();
    operator.stop();

    // O-05: what the role lacks is really denied. Secrets: the operator may get a pull secret a model
    // names (M-01), but never list or watch them, so it cannot go looking.
    let sa = service_account_client("aim-operator").await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(sa.clone(), &ns.name);
    forbidden(
        secrets.list(&ListParams::default()).await.map(|_| ()),
        "listing secrets",
    );
    forbidden(
        secrets
            .watch(&kube::api::WatchParams::default(), "0")
            .await
            .map(|_| ()),
        "watching secrets",
    );
    forbidden(
        secrets.delete("any", &Default::default()).await.map(|_| ()),
        "deleting a secret",
    );
    let configs: Api<AIMRuntimeConfig> = Api::namespaced(sa.clone(), &ns.name);
    forbidden(
        configs
            .delete("default", &Default::default())
            .await
            .map(|_| ()),
        "deleting a runtime config",
    );
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(sa);
    forbidden(
        nodes
            .delete("mi300x-0", &Default::default())
            .await
            .map(|_| ()),
        "deleting a node",
    );
}

/// The namespaced install of the chart: its release name and ServiceAccount, apart from the default
/// install's (`aim-operator`) so that the two sets of RBAC never mix.
const NAMESPACED_RELEASE: &str = "aim-ns";
const NAMESPACED_SA: &str = "aim-operator-namespaced";

/// Applies the ServiceAccount and RBAC the chart renders with `watchNamespaces` set to `namespaces`.
fn install_namespaced_rbac(namespaces: &[&str]) {
    let helm = xtask::testenv::ensure_helm().expect("building helm");
    let out = std::process::Command::new(helm)
        .args(["template", NAMESPACED_RELEASE])
        .arg(xtask::testenv::workspace_root().join("deploy/helm/aim-operator"))
        .args(["--namespace", SYSTEM_NAMESPACE])
        .args(["--show-only", "templates/serviceaccount.yaml"])
        .args(["--show-only", "templates/rbac.yaml"])
        .args(["--set", &format!("serviceAccount.name={NAMESPACED_SA}")])
        .args([
            "--set",
            &format!("watchNamespaces={{{}}}", namespaces.join(",")),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout).unwrap();
    // The namespaced rendering: Roles in every listed namespace, no cluster-wide grant of Jobs or Secrets.
    for ns in namespaces.iter().chain([&SYSTEM_NAMESPACE]) {
        assert!(
            rendered.contains(&format!("kind: Role\nmetadata:\n  name: {NAMESPACED_RELEASE}-aim-operator\n  namespace: {ns}\n")),
            "no Role in {ns}: {rendered}"
        );
    }
    let bin = xtask::testenv::bin_dir(&xtask::testenv::Versions::read().unwrap());
    let mut kubectl = xtask::testenv::kubectl(&bin)
        .args(["apply", "--server-side", "--force-conflicts", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = kubectl.stdin.take().unwrap();
        stdin.write_all(rendered.as_bytes()).unwrap();
    }
    let out = kubectl.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "applying the namespaced RBAC: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The values of every sample of `metric` in an OpenMetrics text.
fn samples(body: &str, metric: &str) -> Vec<(String, f64)> {
    body.lines()
        .filter(|l| l.starts_with(metric))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn a_namespaced_install_reconciles_only_its_namespaces() {
    let _serial = SERIAL.lock().await;
    system_namespace().await;
    let a = TestNamespace::new("rbac-ns-a").await;
    let b = TestNamespace::new("rbac-ns-b").await;
    let c = TestNamespace::new("rbac-ns-c").await;
    for ns in [&a, &b, &c] {
        // c's discovery would work too: only the operator's namespaces keep it out.
        ns.discovery_logs(DRY_RUN_OK).await;
    }
    install_namespaced_rbac(&[&a.name, &b.name]);
    let port = free_port();
    let mut election = aim_operator::LeaderElection::new(Some("rbac-namespaced-test".into()));
    election.lease_duration = 6;
    election.renew_grace = 2;
    let settings = aim_operator::Settings {
        system_namespace: SYSTEM_NAMESPACE.into(),
        backoff_base: BACKOFF_BASE,
        leader_election: Some(election),
        metrics_address: Some(([127, 0, 0, 1], port).into()),
        watch_namespaces: Some(vec![a.name.clone(), b.name.clone()]),
        ..Default::default()
    };
    let operator = RunningOperator::start_as(settings, Some((SYSTEM_NAMESPACE, NAMESPACED_SA)));

    for ns in [&a, &b, &c] {
        apply(
            &ns.api(),
            &model(&ns.name, "m", "example.test/aim:1", serde_json::json!([])),
        )
        .await;
        apply(&ns.api(), &template(&ns.name, "ok", on_mi300x("m"))).await;
    }
    // A cluster template: the cluster kinds are still watched, and discovery runs in the system namespace.
    let name = format!("{}-cl", a.name);
    let models: Api<AIMClusterModel> = Api::all(a.client.clone());
    apply(&models, &cluster_model(&name, "example.test/aim:1")).await;
    let cl: Api<AIMClusterServiceTemplate> = Api::all(a.client.clone());
    apply(&cl, &cluster_template(&name, on_mi300x(&name))).await;

    for ns in [&a, &b] {
        wait_for(
            &ns.api::<AIMServiceTemplate>(),
            "ok",
            &format!("Ready in the watched namespace {}", ns.name),
            WAIT,
            phase(TemplatePhase::Ready),
        )
        .await;
    }
    wait_for(
        &cl,
        &name,
        "cluster template Ready as the namespaced install",
        WAIT,
        phase(TemplatePhase::Ready),
    )
    .await;
    assert_events_recorded(&a).await;

    // c is outside the list: by the time a's and b's templates settled, nothing of c was touched.
    let t = c.api::<AIMServiceTemplate>().get("ok").await.unwrap();
    assert!(
        t.status.is_none(),
        "template in {} reconciled: {t:?}",
        c.name
    );
    let m = c.api::<AIMModel>().get("m").await.unwrap();
    assert!(m.status.is_none(), "model in {} reconciled: {m:?}", c.name);
    let jobs = c.api::<Job>().list(&ListParams::default()).await.unwrap();
    assert!(jobs.items.is_empty(), "jobs in {}: {jobs:?}", c.name);
    let events: Api<k8s_openapi::api::events::v1::Event> = c.api();
    let recorded = events.list(&ListParams::default()).await.unwrap();
    assert!(
        recorded.items.is_empty(),
        "events in {}: {recorded:?}",
        c.name
    );

    // Nothing the Roles lack was needed: no reconcile failed on the API (a Forbidden would).
    let (code, body) = http_get(port, "/metrics").expect("scraping /metrics");
    assert_eq!(code, 200);
    let errors: Vec<_> = samples(&body, "aim_reconcile_errors_total{")
        .into_iter()
        .filter(|(series, n)| series.contains("category=\"api\"") && *n > 0.0)
        .collect();
    assert!(errors.is_empty(), "reconciles failed: {errors:?}");

    cl.delete(&name, &Default::default()).await.unwrap();
    models.delete(&name, &Default::default()).await.unwrap();
    operator.stop();

    // What a namespaced install must not do: anything namespaced outside its namespaces.
    let sa = service_account_client(NAMESPACED_SA).await;
    let lp = ListParams::default();
    forbidden(
        Api::<Job>::all(sa.clone()).list(&lp).await.map(|_| ()),
        "listing jobs in every namespace",
    );
    forbidden(
        Api::<Job>::namespaced(sa.clone(), "kube-system")
            .list(&lp)
            .await
            .map(|_| ()),
        "listing jobs in kube-system",
    );
    forbidden(
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(sa.clone(), &c.name)
            .get("any")
            .await
            .map(|_| ()),
        "getting a secret outside the watched namespaces",
    );
    forbidden(
        Api::<AIMServiceTemplate>::namespaced(sa.clone(), &c.name)
            .list(&lp)
            .await
            .map(|_| ()),
        "listing templates outside the watched namespaces",
    );
    forbidden(
        Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(
            sa.clone(),
            "kube-system",
        )
        .delete("any", &Default::default())
        .await
        .map(|_| ()),
        "deleting a claim in kube-system",
    );
    // And what it may: the same in a watched namespace (a missing object, not a refusal).
    match Api::<k8s_openapi::api::core::v1::Secret>::namespaced(sa, &a.name)
        .get("any")
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        other => panic!(
            "getting a secret in a watched namespace: {:?}",
            other.map(|_| ())
        ),
    }
}

/// `aim-view` and `aim-edit` (deploy/manifests/25-aggregated-roles.yaml) reach the built-in roles: `view`
/// reads AIM kinds and writes none, `edit` and `admin` also create, patch and delete the namespaced ones.
#[tokio::test]
async fn the_aggregated_roles_reach_view_edit_and_admin() {
    let bin = xtask::testenv::bin_dir(&xtask::testenv::Versions::read().unwrap());
    let file = xtask::testenv::workspace_root().join("deploy/manifests/25-aggregated-roles.yaml");
    let out = xtask::testenv::kubectl(&bin)
        .args(["apply", "--server-side", "--force-conflicts", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> =
        Api::all(xtask::support::client().await);
    let grants = |role: &k8s_openapi::api::rbac::v1::ClusterRole, resource: &str, verb: &str| {
        role.rules.iter().flatten().any(|r| {
            r.api_groups
                .iter()
                .flatten()
                .any(|g| g == "aim.eai.amd.com")
                && r.resources.iter().flatten().any(|x| x == resource)
                && r.verbs.iter().any(|v| v == verb)
        })
    };
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let view = roles.get("view").await.unwrap();
        let edit = roles.get("edit").await.unwrap();
        let admin = roles.get("admin").await.unwrap();
        let done = grants(&view, "aimservices", "get")
            && grants(&view, "aimclusterservicetemplates", "list")
            && grants(&edit, "aimservices", "create")
            && grants(&edit, "aimservicetemplates", "watch")
            && grants(&admin, "aimtemplatecaches", "delete")
            && grants(&admin, "aimruntimeconfigs", "patch");
        if done {
            assert!(
                !grants(&view, "aimservices", "create"),
                "view must not write"
            );
            assert!(
                !grants(&edit, "aimclusterservicetemplates", "create"),
                "cluster kinds stay with cluster admins"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "AIM rules never aggregated: view {:?}, edit {:?}",
            view.rules,
            edit.rules
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The operator recorded Events in `ns` (its RBAC lets it).
async fn assert_events_recorded(ns: &TestNamespace) {
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    assert!(
        !events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "events were recorded in {}",
        ns.name
    );
}

/// A client acting as the ServiceAccount `name` of the system namespace.
async fn service_account_client(name: &str) -> kube::Client {
    xtask::support::client_as(
        &format!("system:serviceaccount:{SYSTEM_NAMESPACE}:{name}"),
        &["system:serviceaccounts", "system:authenticated"],
    )
    .await
}

/// `r` is the API server's 403.
fn forbidden<T>(r: Result<T, kube::Error>, what: &str) {
    match r {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what} must be forbidden, got {:?}", other.map(|_| ())),
    }
}
