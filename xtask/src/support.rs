//! What an end-to-end test needs: a client for the test cluster, a namespace of its own (deleted
//! afterwards), fake nodes of its own, waits on conditions with a timeout, canned discovery logs, and
//! images pushed to the test registries (re-exported from [`crate::registry`]).

pub use crate::registry::{Registries, fetch_manifest, push_image, push_index, registries};
use crate::testenv;
use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::wait::{Condition, await_condition};
use kube::{Client, Config, Resource};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Default time a test waits for a condition.
pub const WAIT: Duration = Duration::from_secs(60);

/// A client for the test cluster. Panics with instructions when no cluster is up.
pub async fn client() -> Client {
    try_client().await.unwrap_or_else(|e| {
        panic!(
            "no test cluster: {e:#}\nstart one with `cargo xtask cluster up` (or run everything with `cargo xtask test`)"
        )
    })
}

/// A client for the test cluster that acts as `user` in `groups` (impersonation), e.g. to prove that a
/// ServiceAccount's RBAC is enough.
pub async fn client_as(user: &str, groups: &[&str]) -> Client {
    let mut config = config()
        .await
        .expect("reading the test cluster's kubeconfig");
    config.auth_info.impersonate = Some(user.to_string());
    config.auth_info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
    Client::try_from(config).expect("building an impersonating client")
}

async fn config() -> Result<Config> {
    let path = testenv::kubeconfig_path();
    let kubeconfig =
        Kubeconfig::read_from(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
}

async fn try_client() -> Result<Client> {
    let config = config().await?;
    let client = Client::try_from(config)?;
    client
        .apiserver_version()
        .await
        .context("the API server does not answer")?;
    Ok(client)
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A namespace owned by one test; deleted when dropped.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

impl TestNamespace {
    /// Creates `<prefix>-<pid>-<n>` with the given labels.
    pub async fn new(prefix: &str) -> Self {
        Self::with_labels(prefix, BTreeMap::new()).await
    }

    pub async fn with_labels(prefix: &str, labels: BTreeMap<String, String>) -> Self {
        let client = client().await;
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!(
            "{}-{}-{n}",
            prefix.chars().take(40).collect::<String>(),
            std::process::id()
        );
        let mut ns = Namespace::default();
        ns.metadata.name = Some(name.clone());
        ns.metadata.labels = Some(labels);
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("creating test namespace");
        Self { name, client }
    }

    /// An API for a namespaced kind in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + Debug,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Makes the `discovery` container of every pod in this namespace print `text` (kwok ClusterLogs).
    pub async fn discovery_logs(&self, text: impl AsRef<[u8]>) -> PathBuf {
        canned_logs(&self.client, &self.name, "discovery", text.as_ref()).await
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot await: ask kubectl to delete without waiting; the namespace controller does the rest.
        if let Ok(v) = testenv::Versions::read() {
            let _ = testenv::kubectl(&testenv::bin_dir(&v))
                .args([
                    "delete",
                    "namespace",
                    &self.name,
                    "--wait=false",
                    "--ignore-not-found",
                ])
                .output();
            let _ = testenv::kubectl(&testenv::bin_dir(&v))
                .args([
                    "delete",
                    "clusterlogs.kwok.x-k8s.io",
                    &self.name,
                    "--wait=false",
                    "--ignore-not-found",
                ])
                .output();
        }
    }
}

/// Writes `text` as a CRI log file under `target/testenv/logs/` and points a kwok ClusterLogs object
/// (named after the namespace) at it for `container` in `namespace`. Returns the log file.
pub async fn canned_logs(
    client: &Client,
    namespace: &str,
    container: &str,
    text: &[u8],
) -> PathBuf {
    let dir = testenv::workdir().join("logs");
    std::fs::create_dir_all(&dir).expect("creating log directory");
    let file = dir.join(format!("{namespace}-{container}.log"));
    std::fs::write(&file, cri_log(text)).expect("writing canned log");
    let gvk = GroupVersionKind::gvk("kwok.x-k8s.io", "v1alpha1", "ClusterLogs");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "clusterlogs");
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let obj = serde_json::json!({
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "ClusterLogs",
        "metadata": { "name": namespace },
        "spec": {
            "selector": { "matchNamespaces": [namespace] },
            "logs": [{ "containers": [container], "logsFile": file.to_string_lossy(), "follow": false }],
        },
    });
    api.patch(
        namespace,
        &PatchParams::apply("aim-e2e").force(),
        &Patch::Apply(obj),
    )
    .await
    .expect("applying ClusterLogs");
    file
}

/// Per-template canned logs, while it lives: see [`canned_logs_for_template`]. Dropping it stops the
/// watch; the `Logs` objects already made stay until their namespace goes.
pub struct LogGate {
    task: tokio::task::JoinHandle<()>,
    /// The CRI log file the template's pods print.
    pub file: PathBuf,
}

impl Drop for LogGate {
    fn drop(&mut self) {
        // Aborting the watch also drops its JoinSet, which aborts the per-pod tasks.
        self.task.abort();
    }
}

/// Label that opens the gate of a pod with env `AIM_TEST_LOG_GATE=1` (see `xtask/testenv/kwok.yaml`).
pub const LOG_READY_LABEL: &str = "kwok.aim.test/log-ready";

/// Makes the `discovery` container of every pod labelled `aim.eai.amd.com/template=<template_label>` in
/// `namespace` print `text`, so that templates sharing a namespace print different dry-runs. For each
/// such pod a kwok `Logs` object (named after the pod, owned by it) is created; once `pods/log` serves
/// the canned text for that pod (kwok reads `Logs` from its own watch, so this is checked through the
/// API server, not assumed), the pod is labelled `kwok.aim.test/log-ready=true`. Pods with env
/// `AIM_TEST_LOG_GATE=1` (set it on the model) do not complete before that label, so whoever reads the
/// log after the pod finished reads this text. A pod whose log is not served within [`WAIT`] (e.g. one
/// that never runs) is labelled anyway, so a mismatch shows up as a wrong log rather than a hang.
pub async fn canned_logs_for_template(
    client: &Client,
    namespace: &str,
    template_label: &str,
    text: &[u8],
) -> LogGate {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::{WatchStreamExt, watcher};
    use std::collections::HashSet;
    use std::sync::Arc;
    let dir = testenv::workdir().join("logs");
    std::fs::create_dir_all(&dir).expect("creating log directory");
    let file = dir.join(format!("{namespace}-{template_label}.log"));
    std::fs::write(&file, cri_log(text)).expect("writing canned log");
    // What `pods/log` returns for the file: every line ends in a newline.
    let mut served = text.to_vec();
    if served.last() != Some(&b'\n') {
        served.push(b'\n');
    }
    let served: Arc<[u8]> = served.into();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let gvk = GroupVersionKind::gvk("kwok.x-k8s.io", "v1alpha1", "Logs");
    let logs: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::from_gvk_with_plural(&gvk, "logs"),
    );
    let selector = format!("aim.eai.amd.com/template={template_label}");
    let path = file.to_string_lossy().into_owned();
    let ns = namespace.to_string();
    let task = tokio::spawn(async move {
        let mut handled = HashSet::new();
        let mut per_pod = tokio::task::JoinSet::new();
        let wc = watcher::Config::default().labels(&selector);
        let mut stream = watcher(pods.clone(), wc).applied_objects().boxed();
        while let Some(event) = stream.next().await {
            let Ok(pod) = event else { continue };
            let labelled = pod
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(LOG_READY_LABEL));
            let (Some(name), Some(uid)) = (pod.metadata.name.clone(), pod.metadata.uid.clone())
            else {
                continue;
            };
            if labelled || pod.metadata.deletion_timestamp.is_some() || !handled.insert(uid.clone())
            {
                continue;
            }
            let obj = serde_json::json!({
                "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Logs",
                "metadata": {
                    "name": name, "namespace": ns,
                    "ownerReferences": [{ "apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid }],
                },
                "spec": { "logs": [{ "containers": ["discovery"], "logsFile": path, "follow": false }] },
            });
            let (pods, logs, served) = (pods.clone(), logs.clone(), served.clone());
            per_pod.spawn(async move {
                if let Err(e) = logs
                    .patch(
                        &name,
                        &PatchParams::apply("aim-e2e").force(),
                        &Patch::Apply(obj),
                    )
                    .await
                {
                    eprintln!("canned logs: creating Logs {name}: {e}");
                    return;
                }
                let deadline = tokio::time::Instant::now() + WAIT;
                while tokio::time::Instant::now() < deadline {
                    match serves(&pods, &name, &served).await {
                        Serves::Yes => break,
                        Serves::PodGone => return,
                        Serves::NotYet => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
                let label = serde_json::json!({"metadata": {"labels": {LOG_READY_LABEL: "true"}}});
                let _ = pods
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&label))
                    .await;
            });
            // Reap finished per-pod tasks so the set does not grow with the pods seen.
            while per_pod.try_join_next().is_some() {}
        }
    });
    LogGate { task, file }
}

enum Serves {
    Yes,
    NotYet,
    PodGone,
}

/// Whether `pods/log` of the pod's `discovery` container starts with `want` (the first 4 KiB of it are
/// compared, so large logs are not read over and over).
async fn serves(pods: &Api<k8s_openapi::api::core::v1::Pod>, name: &str, want: &[u8]) -> Serves {
    use futures::AsyncReadExt;
    let limit = want.len().min(4096);
    let params = kube::api::LogParams {
        container: Some("discovery".into()),
        limit_bytes: Some(limit as i64),
        ..Default::default()
    };
    match pods.log_stream(name, &params).await {
        Ok(mut stream) => {
            let mut got = Vec::with_capacity(limit);
            let read = stream.read_to_end(&mut got).await.is_ok();
            if read && got.get(..limit) == Some(&want[..limit]) {
                Serves::Yes
            } else {
                Serves::NotYet
            }
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Serves::PodGone,
        Err(_) => Serves::NotYet,
    }
}

/// A fake kwok node for one test, deleted when dropped (without waiting, like [`TestNamespace`]). kwok
/// manages it (annotation `kwok.x-k8s.io/node: fake`) and makes it Ready; the constructors wait for that.
/// These nodes are not in `xtask/testenv/nodes.yaml` because other tests rely on their GPUs being absent,
/// so use a GPU model no test running at the same time relies on being absent, and a unique suffix.
pub struct FakeNode {
    pub name: String,
}

impl FakeNode {
    /// A node `name` with `labels` (plus `type: kwok` and `kubernetes.io/hostname`) and allocatable cpu,
    /// memory and pods; with `gpus: Some(n)` also `n` allocatable (and capacity) `amd.com/gpu`, with `None`
    /// no `amd.com/gpu` resource at all (no device plugin). Panics when the node cannot be created or does
    /// not become Ready within [`WAIT`].
    pub async fn new(name: &str, labels: BTreeMap<String, String>, gpus: Option<u32>) -> Self {
        use k8s_openapi::api::core::v1::Node;
        let mut labels = labels;
        labels.insert("type".into(), "kwok".into());
        labels.insert("kubernetes.io/hostname".into(), name.into());
        labels
            .entry("kubernetes.io/os".into())
            .or_insert_with(|| "linux".into());
        let mut resources = serde_json::json!({ "cpu": "64", "memory": "512Gi", "pods": "110" });
        if let Some(n) = gpus {
            resources["amd.com/gpu"] = n.to_string().into();
        }
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "annotations": { "kwok.x-k8s.io/node": "fake" },
                "labels": labels,
            },
            "status": { "allocatable": resources, "capacity": resources },
        }))
        .expect("a valid Node");
        let api = Api::<Node>::all(client().await);
        api.create(&PostParams::default(), &node)
            .await
            .unwrap_or_else(|e| panic!("creating node {name}: {e}"));
        // Created before the wait, so a failed wait still deletes it.
        let this = Self {
            name: name.to_string(),
        };
        let ready = |n: Option<&Node>| {
            n.is_some_and(|n| {
                let ready = n
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                let not_ready_taint = n
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.as_ref())
                    .is_some_and(|ts| ts.iter().any(|t| t.key == "node.kubernetes.io/not-ready"));
                ready && !not_ready_taint
            })
        };
        wait_for(&api, name, "the fake node to be Ready", WAIT, ready).await;
        this
    }

    /// `mi355x-<suffix>`: 8 × MI355X (`amd.com/gpu.device-id: "75a3"`).
    pub async fn mi355x(suffix: &str) -> Self {
        Self::new(
            &format!("mi355x-{suffix}"),
            label_map([("amd.com/gpu.device-id", "75a3")]),
            Some(8),
        )
        .await
    }

    /// `mi250x-<suffix>`: 4 GPUs known only by the family label (`amd.com/gpu.family: MI250X`, no
    /// device id), as older labellers write it.
    pub async fn family_only(suffix: &str) -> Self {
        Self::new(
            &format!("mi250x-{suffix}"),
            label_map([("amd.com/gpu.family", "MI250X")]),
            Some(4),
        )
        .await
    }

    /// `v710-<suffix>`: GPU labels (device id `7460`, V710) but no `amd.com/gpu` among allocatable
    /// resources (only cpu, memory and pods): labelled, but no device plugin advertises the GPUs.
    pub async fn no_allocatable(suffix: &str) -> Self {
        Self::new(
            &format!("v710-{suffix}"),
            label_map([("amd.com/gpu.device-id", "7460")]),
            None,
        )
        .await
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        // Drop cannot await: ask kubectl to delete without waiting.
        if let Ok(v) = testenv::Versions::read() {
            let _ = testenv::kubectl(&testenv::bin_dir(&v))
                .args([
                    "delete",
                    "node",
                    &self.name,
                    "--wait=false",
                    "--ignore-not-found",
                ])
                .output();
        }
    }
}

/// A label map from pairs.
pub fn label_map<const N: usize>(pairs: [(&str, &str); N]) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Encodes `text` in the CRI log format kwok serves: one `<time> stdout F <line>` record per line.
pub fn cri_log(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 8);
    let stamp = jiff::Timestamp::now().to_string();
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    for line in body.split(|b| *b == b'\n') {
        out.extend_from_slice(stamp.as_bytes());
        out.extend_from_slice(b" stdout F ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

/// Waits until `cond` holds for the named object, or fails the test after `timeout` with what was seen last.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    cond: impl Condition<K>,
) -> K
where
    K: Resource + Clone + serde::de::DeserializeOwned + Debug + Send + 'static,
{
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(Some(obj))) => obj,
        Ok(Ok(None)) => panic!("waiting for {what}: {name} was deleted"),
        Ok(Err(e)) => panic!("waiting for {what}: watch failed: {e}"),
        Err(_) => {
            let last = api.get_opt(name).await.ok().flatten();
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last:#?}")
        }
    }
}

/// Waits until the named object does not exist, or fails the test after `timeout`.
pub async fn wait_gone<K>(api: &Api<K>, name: &str, what: &str, timeout: Duration)
where
    K: Resource + Clone + serde::de::DeserializeOwned + Debug + Send + 'static,
{
    let gone = |o: Option<&K>| o.is_none();
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, gone)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("waiting for {what}: watch failed: {e}"),
        Err(_) => panic!(
            "timed out after {timeout:?} waiting for {what}; last seen: {:#?}",
            api.get_opt(name).await.ok().flatten()
        ),
    }
}

/// Deletes an object and waits until it is gone.
pub async fn delete_and_wait<K>(api: &Api<K>, name: &str)
where
    K: Resource + Clone + serde::de::DeserializeOwned + Debug + Send + 'static,
{
    let _ = api.delete(name, &DeleteParams::foreground()).await;
    let uid = api
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|o| o.meta().uid.clone());
    if let Some(uid) = uid {
        let gone = kube::runtime::wait::conditions::is_deleted(&uid);
        tokio::time::timeout(WAIT, await_condition(api.clone(), name, gone))
            .await
            .unwrap_or_else(|_| panic!("{name} was not deleted within {WAIT:?}"))
            .expect("watching deletion");
    }
}
