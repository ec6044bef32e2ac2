//! The test control plane itself, against the running cluster (`cargo xtask cluster up`): the kwok
//! outcomes the end-to-end tests rely on, per-template canned logs, fake nodes, the admission plugin and
//! the two test registries.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams, LogParams, PostParams};
use std::time::{Duration, Instant};
use xtask::registry::{INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
use xtask::support::{
    FakeNode, TestNamespace, WAIT, canned_logs_for_template, client, client_as, fetch_manifest,
    label_map, push_image, push_index, registries, wait_for, wait_gone,
};

fn pod(name: &str, extra: serde_json::Value) -> Pod {
    let mut pod = serde_json::json!({
        "metadata": { "name": name },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{ "name": "discovery", "image": "example.test/aim/dry-run:1" }],
        },
    });
    merge(&mut pod, extra);
    serde_json::from_value(pod).expect("a valid Pod")
}

/// A Job whose pods carry `pod_labels` and whose first container has `env`.
fn job(name: &str, pod_labels: serde_json::Value, env: serde_json::Value) -> Job {
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": name },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": { "labels": pod_labels },
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{ "name": "discovery", "image": "example.test/aim/dry-run:1", "env": env }],
                },
            },
        },
    }))
    .expect("a valid Job")
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn waiting(p: &Pod) -> (String, String) {
    let w = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.waiting.as_ref());
    (
        w.and_then(|w| w.reason.clone()).unwrap_or_default(),
        w.and_then(|w| w.message.clone()).unwrap_or_default(),
    )
}

/// The one pod of a Job, once it exists.
async fn job_pod(pods: &Api<Pod>, job: &str) -> Pod {
    let deadline = Instant::now() + WAIT;
    loop {
        let list = pods
            .list(&ListParams::default().labels(&format!("job-name={job}")))
            .await
            .expect("listing pods");
        if let Some(p) = list.items.into_iter().next() {
            return p;
        }
        assert!(Instant::now() < deadline, "no pod for Job {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the pod runs, then measures how long until it succeeds.
async fn runs_then_succeeds(pods: &Api<Pod>, name: &str) -> Duration {
    wait_for(pods, name, "the pod to run", WAIT, |p: Option<&Pod>| {
        p.is_some_and(|p| phase(p) == "Running")
    })
    .await;
    let running = Instant::now();
    wait_for(pods, name, "the pod to succeed", WAIT, |p: Option<&Pod>| {
        p.is_some_and(|p| phase(p) == "Succeeded")
    })
    .await;
    running.elapsed()
}

#[tokio::test]
async fn complete_after_by_annotation_and_by_env() {
    let ns = TestNamespace::new("testenv-complete-after").await;
    let pods: Api<Pod> = ns.api();
    // A hand-made pod (no Job): label and annotation.
    let hand = pod(
        "hand",
        serde_json::json!({ "metadata": {
            "labels": { "kwok.aim.test/outcome": "complete-after" },
            "annotations": { "kwok.aim.test/complete-after": "3s" },
        }}),
    );
    pods.create(&PostParams::default(), &hand).await.unwrap();
    // A Job's pod: env vars on the first container, as the operator's discovery Jobs carry them.
    let env = serde_json::json!([
        { "name": "AIM_TEST_OUTCOME", "value": "complete-after" },
        { "name": "AIM_TEST_COMPLETE_AFTER", "value": "3s" },
    ]);
    ns.api::<Job>()
        .create(
            &PostParams::default(),
            &job("by-env", serde_json::json!({}), env),
        )
        .await
        .unwrap();
    let by_env = job_pod(&pods, "by-env").await;
    let by_env = by_env.metadata.name.unwrap();
    let (hand, env) = tokio::join!(
        runs_then_succeeds(&pods, "hand"),
        runs_then_succeeds(&pods, &by_env)
    );
    // kwok's plain pod-complete would finish the Job's pod at once; the delay is 3 s from Running.
    for (what, took) in [("annotation", hand), ("env", env)] {
        assert!(
            took >= Duration::from_millis(2500) && took < Duration::from_secs(10),
            "complete-after by {what} took {took:?}"
        );
    }
}

#[tokio::test]
async fn pull_auth_error_reads_as_credentials() {
    let ns = TestNamespace::new("testenv-pull-auth").await;
    let pods: Api<Pod> = ns.api();
    let by_label = pod(
        "by-label",
        serde_json::json!({ "metadata": { "labels": { "kwok.aim.test/outcome": "pull-auth-error" } } }),
    );
    pods.create(&PostParams::default(), &by_label)
        .await
        .unwrap();
    let by_env = pod(
        "by-env",
        serde_json::json!({ "spec": { "containers": [{
            "name": "discovery", "image": "example.test/aim/dry-run:1",
            "env": [{ "name": "AIM_TEST_OUTCOME", "value": "pull-auth-error" }],
        }]}}),
    );
    pods.create(&PostParams::default(), &by_env).await.unwrap();
    let not_found = pod(
        "not-found",
        serde_json::json!({ "metadata": { "labels": { "kwok.aim.test/outcome": "pull-error" } } }),
    );
    pods.create(&PostParams::default(), &not_found)
        .await
        .unwrap();
    let backoff = |p: Option<&Pod>| p.is_some_and(|p| waiting(p).0 == "ImagePullBackOff");
    for name in ["by-label", "by-env"] {
        let p = wait_for(&pods, name, "ImagePullBackOff", WAIT, backoff).await;
        assert_eq!(phase(&p), "Pending");
        let (_, message) = waiting(&p);
        assert!(
            message.contains("example.test/aim/dry-run:1") && message.contains("401 Unauthorized"),
            "{message}"
        );
    }
    let p = wait_for(&pods, "not-found", "ImagePullBackOff", WAIT, backoff).await;
    let (_, message) = waiting(&p);
    assert!(
        message.ends_with(": not found") && !message.contains("401"),
        "{message}"
    );
}

#[tokio::test]
async fn log_gate_gives_each_template_its_own_log() {
    let ns = TestNamespace::new("testenv-log-gate").await;
    let c = client().await;
    let jobs: Api<Job> = ns.api();
    let pods: Api<Pod> = ns.api();
    let gated = serde_json::json!([{ "name": "AIM_TEST_LOG_GATE", "value": "1" }]);
    let text_a = b"dry-run of template a\n{\"profile\": \"a\"}\n".as_slice();
    let text_b = b"dry-run of template b\n{\"profile\": \"b\"}".as_slice();
    let _a = canned_logs_for_template(&c, &ns.name, "tmpl-a", text_a).await;
    let _b = canned_logs_for_template(&c, &ns.name, "tmpl-b", text_b).await;
    for (name, template) in [
        ("job-a", "tmpl-a"),
        ("job-b", "tmpl-b"),
        ("job-c", "tmpl-c"),
    ] {
        let labels = serde_json::json!({ "aim.eai.amd.com/template": template });
        jobs.create(&PostParams::default(), &job(name, labels, gated.clone()))
            .await
            .unwrap();
    }
    for (job, want) in [("job-a", text_a), ("job-b", text_b)] {
        let name = job_pod(&pods, job).await.metadata.name.unwrap();
        let p = wait_for(
            &pods,
            &name,
            "the gated pod to succeed",
            WAIT,
            |p: Option<&Pod>| p.is_some_and(|p| phase(p) == "Succeeded"),
        )
        .await;
        let labels = p.metadata.labels.unwrap_or_default();
        assert_eq!(
            labels.get("kwok.aim.test/log-ready").map(String::as_str),
            Some("true")
        );
        let log = pods
            .logs(
                &name,
                &LogParams {
                    container: Some("discovery".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let want = String::from_utf8_lossy(want);
        assert_eq!(log.trim_end(), want.trim_end(), "log of {job}");
    }
    // No gate opener for tmpl-c: its pod runs and does not complete.
    let name = job_pod(&pods, "job-c").await.metadata.name.unwrap();
    let p = wait_for(
        &pods,
        &name,
        "the ungated pod to run",
        WAIT,
        |p: Option<&Pod>| p.is_some_and(|p| phase(p) == "Running"),
    )
    .await;
    assert!(
        !p.metadata
            .labels
            .unwrap_or_default()
            .contains_key("kwok.aim.test/log-ready")
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(phase(&pods.get(&name).await.unwrap()), "Running");
}

fn allocatable_gpus(n: &Node) -> Option<String> {
    n.status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .and_then(|a| a.get("amd.com/gpu"))
        .map(|q| q.0.clone())
}

#[tokio::test]
async fn fake_nodes_come_and_go() {
    let suffix = format!("testenv-{}", std::process::id());
    let nodes: Api<Node> = Api::all(client().await);
    let mi355x = FakeNode::mi355x(&suffix).await;
    let family = FakeNode::family_only(&suffix).await;
    let v710 = FakeNode::no_allocatable(&suffix).await;
    let custom = FakeNode::new(
        &format!("custom-{suffix}"),
        label_map([("amd.com/gpu.device-id", "74a1"), ("example", "yes")]),
        Some(2),
    )
    .await;

    let n = nodes.get(&mi355x.name).await.unwrap();
    let l = n.metadata.labels.clone().unwrap();
    assert_eq!(l["amd.com/gpu.device-id"], "75a3");
    assert_eq!(l["type"], "kwok");
    assert_eq!(
        n.metadata.annotations.clone().unwrap()["kwok.x-k8s.io/node"],
        "fake"
    );
    assert_eq!(allocatable_gpus(&n).as_deref(), Some("8"));

    let n = nodes.get(&family.name).await.unwrap();
    let l = n.metadata.labels.clone().unwrap();
    assert_eq!(l["amd.com/gpu.family"], "MI250X");
    assert!(!l.keys().any(|k| k.ends_with("gpu.device-id")));
    assert_eq!(allocatable_gpus(&n).as_deref(), Some("4"));

    let n = nodes.get(&v710.name).await.unwrap();
    assert_eq!(
        n.metadata.labels.clone().unwrap()["amd.com/gpu.device-id"],
        "7460"
    );
    assert_eq!(allocatable_gpus(&n), None);
    let mut keys: Vec<_> = n.status.unwrap().allocatable.unwrap().into_keys().collect();
    keys.sort();
    assert_eq!(keys, ["cpu", "memory", "pods"]);

    let n = nodes.get(&custom.name).await.unwrap();
    assert_eq!(n.metadata.labels.clone().unwrap()["example"], "yes");
    assert_eq!(allocatable_gpus(&n).as_deref(), Some("2"));

    // The scheduler places a pod asking for 8 × MI355X on it.
    let ns = TestNamespace::new("testenv-fake-nodes").await;
    let pods: Api<Pod> = ns.api();
    let p = pod(
        "gpu",
        serde_json::json!({ "spec": {
            "nodeSelector": { "amd.com/gpu.device-id": "75a3" },
            "tolerations": [{ "operator": "Exists" }],
            "containers": [{ "name": "discovery", "image": "example.test/aim/dry-run:1",
                "resources": { "limits": { "amd.com/gpu": "8" } } }],
        }}),
    );
    pods.create(&PostParams::default(), &p).await.unwrap();
    let p = wait_for(
        &pods,
        "gpu",
        "the GPU pod to run",
        WAIT,
        |p: Option<&Pod>| p.is_some_and(|p| phase(p) == "Running"),
    )
    .await;
    assert_eq!(
        p.spec.unwrap().node_name.as_deref(),
        Some(mi355x.name.as_str())
    );

    let names = [
        mi355x.name.clone(),
        family.name.clone(),
        v710.name.clone(),
        custom.name.clone(),
    ];
    drop((mi355x, family, v710, custom));
    for name in names {
        wait_gone(&nodes, &name, "the fake node to be deleted", WAIT).await;
    }
}

#[tokio::test]
async fn owner_references_need_finalizers_permission() {
    let ns = TestNamespace::new("testenv-owner-refs").await;
    let pp = PostParams::default();
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({ "metadata": { "name": "creator" } })).unwrap();
    ns.api::<ServiceAccount>().create(&pp, &sa).await.unwrap();
    // May create Jobs and read ServiceAccounts (the owner), but not update their finalizers.
    let role: Role = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "creator" },
        "rules": [
            { "apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"] },
            { "apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get"] },
        ],
    }))
    .unwrap();
    ns.api::<Role>().create(&pp, &role).await.unwrap();
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "creator" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "creator" },
        "subjects": [{ "kind": "ServiceAccount", "name": "creator", "namespace": ns.name }],
    }))
    .unwrap();
    ns.api::<RoleBinding>().create(&pp, &binding).await.unwrap();
    let owner = ns.api::<ServiceAccount>().get("creator").await.unwrap();
    let owned = |name: &str, block: bool| {
        let mut j = job(name, serde_json::json!({}), serde_json::json!([]));
        j.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "v1".into(),
                kind: "ServiceAccount".into(),
                name: "creator".into(),
                uid: owner.metadata.uid.clone().unwrap(),
                controller: Some(true),
                block_owner_deletion: Some(block),
            },
        ]);
        j
    };
    let user = format!("system:serviceaccount:{}:creator", ns.name);
    let as_sa = client_as(&user, &["system:serviceaccounts", "system:authenticated"]).await;
    let jobs: Api<Job> = Api::namespaced(as_sa, &ns.name);
    // RBAC allows the create; the admission plugin refuses blockOwnerDeletion without finalizers.
    match jobs.create(&pp, &owned("blocking", true)).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 403, "{e:?}");
            assert!(e.message.contains("cannot set blockOwnerDeletion"), "{e:?}");
        }
        other => panic!("expected the admission plugin to refuse the Job, got {other:?}"),
    }
    jobs.create(&pp, &owned("not-blocking", false))
        .await
        .expect("an owner reference without blockOwnerDeletion needs no finalizers permission");
}

#[tokio::test]
async fn registries_take_images_and_indexes_and_the_auth_one_wants_credentials() {
    let r = registries().unwrap();
    let repo = format!("aim-test/pushed-{}", std::process::id());
    let amd64 = label_map([(aim_api::model::RECOMMENDED_DEPLOYMENTS_LABEL, "[]")]);
    let arm64 = label_map([(
        aim_api::model::RECOMMENDED_DEPLOYMENTS_LABEL,
        "wrong platform",
    )]);
    for (addr, auth) in [(&r.anonymous, None), (&r.auth, Some(r.credentials()))] {
        let image = push_image(addr, auth, &repo, "single", &amd64, "amd64")
            .await
            .unwrap_or_else(|e| panic!("pushing to {addr}: {e:#}"));
        let got = fetch_manifest(addr, auth, &repo, "single").await.unwrap();
        assert_eq!(
            got.status,
            200,
            "{addr}: {}",
            String::from_utf8_lossy(&got.body)
        );
        assert_eq!(got.digest.as_deref(), Some(image.as_str()));
        assert_eq!(got.content_type.as_deref(), Some(MANIFEST_MEDIA_TYPE));
        assert_eq!(xtask::registry::digest(&got.body), image);

        let index = push_index(
            addr,
            auth,
            &repo,
            "multi",
            &[("arm64", arm64.clone()), ("amd64", amd64.clone())],
        )
        .await
        .unwrap_or_else(|e| panic!("pushing an index to {addr}: {e:#}"));
        let got = fetch_manifest(addr, auth, &repo, "multi").await.unwrap();
        assert_eq!(got.status, 200);
        assert_eq!(got.digest.as_deref(), Some(index.as_str()));
        assert_eq!(got.content_type.as_deref(), Some(INDEX_MEDIA_TYPE));
        let body: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
        let entries = body["manifests"].as_array().unwrap();
        let archs: Vec<_> = entries
            .iter()
            .map(|m| m["platform"]["architecture"].as_str().unwrap())
            .collect();
        assert_eq!(archs, ["arm64", "amd64"]);
        // Each platform's image is there by digest (and only the amd64 one is the single image).
        for entry in entries {
            let digest = entry["digest"].as_str().unwrap();
            let child = fetch_manifest(addr, auth, &repo, digest).await.unwrap();
            assert_eq!(child.status, 200);
            assert_eq!(child.digest.as_deref(), Some(digest));
        }
        assert_eq!(entries[1]["digest"].as_str(), Some(image.as_str()));
        assert_ne!(entries[0]["digest"].as_str(), Some(image.as_str()));
    }

    // The auth instance refuses anonymous and wrong-password clients, to read and to push.
    let wrong = Some((r.username.as_str(), "not-the-password"));
    for auth in [None, wrong] {
        let got = fetch_manifest(&r.auth, auth, &repo, "single")
            .await
            .unwrap();
        assert_eq!(got.status, 401, "{auth:?}");
        let err = push_image(&r.auth, auth, &repo, "refused", &amd64, "amd64")
            .await
            .expect_err("pushing without the right credentials");
        assert!(format!("{err:#}").contains("401 Unauthorized"), "{err:#}");
    }
    // A tag nobody pushed is a 404.
    let missing = fetch_manifest(&r.anonymous, None, &repo, "absent")
        .await
        .unwrap();
    assert_eq!(missing.status, 404);
}
