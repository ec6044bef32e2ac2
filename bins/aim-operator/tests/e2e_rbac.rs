//! End-to-end: the operator does its work with only the RBAC in `deploy/manifests/` (O-05), acting as
//! the `aim-operator` ServiceAccount. Its own binary, because it runs its own operator.

mod common;

use aim_api::*;
use common::*;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
use xtask::support::{TestNamespace, WAIT, wait_for, wait_gone};

#[tokio::test]
async fn the_deployed_cluster_role_is_enough() {
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
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    assert!(
        !events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "events were recorded"
    );

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
    let sa = xtask::support::client_as(
        &format!("system:serviceaccount:{SYSTEM_NAMESPACE}:aim-operator"),
        &["system:serviceaccounts", "system:authenticated"],
    )
    .await;
    let forbidden = |r: Result<_, kube::Error>, what: &str| match r {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what} must be forbidden, got {:?}", other.map(|_| ())),
    };
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
