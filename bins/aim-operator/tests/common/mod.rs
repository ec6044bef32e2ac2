//! One operator per test binary, run in-process on its own runtime, plus fixtures shared by the
//! template end-to-end tests.
#![allow(dead_code)]

use aim_api::*;
use futures::TryStreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::wait::Condition;
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use xtask::support::{TestNamespace, WAIT, client};

/// Operator namespace of the in-process operator.
pub const SYSTEM_NAMESPACE: &str = "aim-system";
/// Retry delay of the in-process operator (production: 60 s).
pub const BACKOFF_BASE: Duration = Duration::from_secs(2);

static OPERATOR: OnceLock<()> = OnceLock::new();

/// An operator this test controls: it runs on its own thread and runtime until [`RunningOperator::stop`].
pub struct RunningOperator {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningOperator {
    /// Starts an operator as the chart's ServiceAccount (O-05: every end-to-end test runs the operator
    /// with only the RBAC of `deploy/manifests/`, rendered from the chart).
    pub fn start(settings: aim_operator::Settings) -> Self {
        install_operator_rbac();
        Self::start_as(settings, Some((SYSTEM_NAMESPACE, "aim-operator")))
    }

    /// Starts an operator acting as the ServiceAccount `(namespace, name)` (impersonation), so that it
    /// has only that account's RBAC.
    pub fn start_as(
        settings: aim_operator::Settings,
        service_account: Option<(&str, &str)>,
    ) -> Self {
        Self::start_via(settings, service_account, None)
    }

    /// [`RunningOperator::start_as`], talking to the API server through `front` (a plain-HTTP URL that
    /// forwards to it) when given.
    pub fn start_via(
        settings: aim_operator::Settings,
        service_account: Option<(&str, &str)>,
        front: Option<String>,
    ) -> Self {
        let identity = service_account.map(|(ns, name)| service_account_identity(ns, name));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let client = match front {
                    None => operator_client(identity).await,
                    Some(url) => operator_client_via(identity, &url).await,
                };
                aim_operator::run(client, settings, async move {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
            });
        });
        Self {
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Stops it (graceful shutdown) and waits until it is gone.
    pub fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().expect("operator thread");
        }
    }
}

/// The client the operator runs with: the test cluster's kubeconfig over HTTP/2, as in production, acting
/// as `identity` (user, groups) when given.
pub async fn operator_client(identity: Option<(String, Vec<String>)>) -> kube::Client {
    let path = xtask::testenv::kubeconfig_path();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("reading the kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kubeconfig");
    if let Some((user, groups)) = identity {
        config.auth_info.impersonate = Some(user);
        config.auth_info.impersonate_groups = Some(groups);
    }
    aim_operator::http2_client(config).expect("building the operator's client")
}

/// [`operator_client`], sending every request to `url` instead of the API server.
pub async fn operator_client_via(
    identity: Option<(String, Vec<String>)>,
    url: &str,
) -> kube::Client {
    let mut config = kube::Config::new(url.parse().expect("front URL"));
    if let Some((user, groups)) = identity {
        config.auth_info.impersonate = Some(user);
        config.auth_info.impersonate_groups = Some(groups);
    }
    aim_operator::http2_client(config).expect("building the operator's client")
}

/// The user and groups of the ServiceAccount `namespace/name`, for impersonation.
pub fn service_account_identity(namespace: &str, name: &str) -> (String, Vec<String>) {
    (
        format!("system:serviceaccount:{namespace}:{name}"),
        vec![
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".to_string(),
        ],
    )
}

/// The test cluster's kubeconfig acting as the chart's ServiceAccount (impersonation), written to
/// `file` in the test cluster's directory, so that an operator process has only its RBAC (O-05).
pub fn service_account_kubeconfig(file: &str) -> std::path::PathBuf {
    install_operator_rbac();
    let mut config =
        kube::config::Kubeconfig::read_from(xtask::testenv::kubeconfig_path()).unwrap();
    let (user, groups) = service_account_identity(SYSTEM_NAMESPACE, "aim-operator");
    for auth in &mut config.auth_infos {
        if let Some(info) = auth.auth_info.as_mut() {
            info.impersonate = Some(user.clone());
            info.impersonate_groups = Some(groups.clone());
        }
    }
    let path = xtask::testenv::workdir().join(file);
    std::fs::write(&path, serde_saphyr::to_string(&config).unwrap()).unwrap();
    path
}

/// Applies the operator's namespace, ServiceAccount and RBAC from `deploy/manifests/`.
pub fn install_operator_rbac() {
    let bin = xtask::testenv::bin_dir(&xtask::testenv::Versions::read().unwrap());
    let manifests = xtask::testenv::workspace_root().join("deploy/manifests");
    for file in [
        "00-namespace.yaml",
        "10-serviceaccount.yaml",
        "20-rbac.yaml",
    ] {
        let out = xtask::testenv::kubectl(&bin)
            .args(["apply", "--server-side", "--force-conflicts", "-f"])
            .arg(manifests.join(file))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Makes sure the operator namespace exists and its discovery pods print [`DRY_RUN_OK`].
pub async fn system_namespace() {
    let client = client().await;
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": SYSTEM_NAMESPACE}}))
            .unwrap();
    Api::<Namespace>::all(client.clone())
        .patch(
            SYSTEM_NAMESPACE,
            &PatchParams::apply("aim-e2e"),
            &Patch::Apply(&ns),
        )
        .await
        .unwrap();
    xtask::support::canned_logs(
        &client,
        SYSTEM_NAMESPACE,
        "discovery",
        DRY_RUN_OK.as_bytes(),
    )
    .await;
}

/// Starts the operator once for this test binary; it runs on its own thread and runtime, so it outlives
/// each test's runtime, until the test process exits.
pub fn operator() {
    OPERATOR.get_or_init(|| {
        start_for_binary(aim_operator::Settings {
            system_namespace: SYSTEM_NAMESPACE.into(),
            backoff_base: BACKOFF_BASE,
            registry: test_registry_settings(),
            ..Default::default()
        })
    });
}

/// The test registries speak plain HTTP (M-01); empty when none runs. [`closed_registry`] is listed too,
/// so that reading it is refused by the port, not by the egress rules.
pub fn test_registry_settings() -> aim_operator::RegistrySettings {
    aim_operator::install_crypto_provider();
    let mut insecure = xtask::registry::registries()
        .map(|r| vec![r.anonymous, r.auth])
        .unwrap_or_default();
    insecure.push(closed_registry().to_string());
    aim_operator::RegistrySettings {
        insecure,
        ..Default::default()
    }
}

/// A registry address nothing listens on (`127.0.0.1:PORT`, a port found free once per test process):
/// reading an image there is `RegistryUnreachable`.
pub fn closed_registry() -> &'static str {
    static CLOSED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CLOSED.get_or_init(|| format!("127.0.0.1:{}", free_port()))
}

/// What a test binary's one operator needs: test logging, the operator namespace whose pods print
/// [`DRY_RUN_OK`], and the operator itself, left running until the process exits. Call it once (from a
/// `OnceLock`).
pub fn start_for_binary(settings: aim_operator::Settings) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    // Cluster templates discover in the operator namespace: its pods print the standard result.
    // (A thread of its own: the caller is inside a test's runtime.)
    std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(system_namespace())
    })
    .join()
    .expect("preparing the operator namespace");
    std::mem::forget(RunningOperator::start(settings));
}

/// The template is Pending because its discovery pod cannot start (quota, scheduling, service account).
pub fn discovery_blocked<K: HasTemplateStatus>() -> impl Condition<K> {
    phase_with(
        TemplatePhase::Pending,
        aim_api::conditions::types::DISCOVERED,
        aim_api::conditions::reasons::DISCOVERY_BLOCKED,
    )
}

/// A dry-run log as an AIM prints it: banner noise, the JSON array, a trailing line.
pub const DRY_RUN_OK: &str = r#"AIM runtime 0.8.5 [starting]
[INFO] selecting profile [ok]
[
  {
    "filename": "vllm-mi300x-fp8-tp1-latency.yaml",
    "profile": {
      "model": "Qwen/Qwen3-32B",
      "quantized_model": "",
      "metadata": { "engine": "vllm", "gpu": "MI300X", "precision": "fp8", "gpu_count": 1, "metric": "latency", "type": "optimized" },
      "engine_args": { "tensor-parallel-size": 1, "max-num-seqs": 256, "enable-chunked-prefill": true },
      "env_vars": { "VLLM_USE_TRITON_FLASH_ATTN": "0" },
      "extra_key": { "kept": true }
    },
    "models": [
      { "name": "Qwen/Qwen3-32B", "source": "hf://Qwen/Qwen3-32B", "size_gb": 16.0 },
      { "name": "Qwen/Qwen3-32B-tokenizer", "source": "hf://Qwen/Qwen3-32B/tokenizer.json", "size_gb": 0.001953125 }
    ]
  }
]
done [ok]
"#;

pub fn model(ns: &str, name: &str, image: &str, env: serde_json::Value) -> AIMModel {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "aim.eai.amd.com/v1alpha1", "kind": "AIMModel",
        "metadata": { "name": name, "namespace": ns },
        "spec": { "image": image, "env": env, "discovery": { "extractMetadata": false, "createServiceTemplates": false } },
    }))
    .unwrap()
}

pub fn cluster_model(name: &str, image: &str) -> AIMClusterModel {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "aim.eai.amd.com/v1alpha1", "kind": "AIMClusterModel",
        "metadata": { "name": name },
        "spec": { "image": image, "discovery": { "extractMetadata": false, "createServiceTemplates": false } },
    }))
    .unwrap()
}

pub fn cluster_template(name: &str, spec: serde_json::Value) -> AIMClusterServiceTemplate {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "aim.eai.amd.com/v1alpha1", "kind": "AIMClusterServiceTemplate",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .unwrap()
}

pub fn template(ns: &str, name: &str, spec: serde_json::Value) -> AIMServiceTemplate {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "aim.eai.amd.com/v1alpha1", "kind": "AIMServiceTemplate",
        "metadata": { "name": name, "namespace": ns },
        "spec": spec,
    }))
    .unwrap()
}

pub async fn apply<K>(api: &Api<K>, obj: &K) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap();
    api.patch(
        &name,
        &PatchParams::apply("aim-e2e").force(),
        &Patch::Apply(obj),
    )
    .await
    .unwrap_or_else(|e| panic!("applying {name}: {e}"))
}

/// Spec of a template for `model_name` needing one MI300X, discovering its sources.
pub fn on_mi300x(model_name: &str) -> serde_json::Value {
    serde_json::json!({ "modelName": model_name, "hardware": { "gpu": { "model": "MI300X" } } })
}

/// The template failed discovery (T-19, T-20).
pub fn discovery_failed<K: HasTemplateStatus>() -> impl Condition<K> {
    phase_with(
        TemplatePhase::Failed,
        aim_api::conditions::types::DISCOVERED,
        aim_api::conditions::reasons::DISCOVERY_FAILED,
    )
}

/// The template has this phase.
pub fn phase<K: HasTemplateStatus>(p: TemplatePhase) -> impl Condition<K> {
    move |t: Option<&K>| {
        t.and_then(|t| t.template_status())
            .is_some_and(|s| s.status == p)
    }
}

/// The template has this phase and a condition of this type with this reason.
pub fn phase_with<K: HasTemplateStatus>(
    p: TemplatePhase,
    type_: &'static str,
    reason: &'static str,
) -> impl Condition<K> {
    move |t: Option<&K>| {
        t.and_then(|t| t.template_status()).is_some_and(|s| {
            s.status == p
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == type_ && c.reason == reason)
        })
    }
}

pub trait HasTemplateStatus {
    fn template_status(&self) -> Option<&ServiceTemplateStatus>;
}
impl HasTemplateStatus for AIMServiceTemplate {
    fn template_status(&self) -> Option<&ServiceTemplateStatus> {
        self.status.as_ref()
    }
}
impl HasTemplateStatus for AIMClusterServiceTemplate {
    fn template_status(&self) -> Option<&ServiceTemplateStatus> {
        self.status.as_ref()
    }
}

pub fn condition<'a>(
    s: &'a ServiceTemplateStatus,
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {s:#?}"))
}

/// A namespace for one test, with the operator running and discovery pods printing `log`.
pub async fn setup(prefix: &str, log: &str) -> TestNamespace {
    operator();
    let ns = TestNamespace::new(prefix).await;
    ns.discovery_logs(log).await;
    ns
}

/// Watches every discovery Job in the cluster and records the most that were active at one instant.
#[derive(Default)]
pub struct JobWatch {
    pub active: BTreeSet<String>,
    pub max: usize,
    pub created: Vec<String>,
}

/// The operator's own definition (a discovery slot is held until the Job finished or is being deleted).
pub fn active(job: &Job) -> bool {
    aim_resolve::children::job_is_active(job)
}

pub fn spawn_job_watch(client: kube::Client) -> Arc<Mutex<JobWatch>> {
    spawn_job_watch_of(Api::all(client))
}

/// [`spawn_job_watch`] of the discovery Jobs `jobs` lists (e.g. one namespace's).
pub fn spawn_job_watch_of(jobs: Api<Job>) -> Arc<Mutex<JobWatch>> {
    let state = Arc::new(Mutex::new(JobWatch::default()));
    let s = state.clone();
    tokio::spawn(async move {
        let cfg = watcher::Config::default().labels("app.kubernetes.io/component=discovery");
        let mut stream = std::pin::pin!(watcher(jobs, cfg).default_backoff());
        while let Ok(Some(ev)) = stream.try_next().await {
            let mut w = s.lock().unwrap();
            match ev {
                watcher::Event::Apply(j) | watcher::Event::InitApply(j) => {
                    let key = format!(
                        "{}/{}",
                        j.metadata.namespace.clone().unwrap_or_default(),
                        j.metadata.name.clone().unwrap_or_default()
                    );
                    if active(&j) {
                        if w.active.insert(key.clone()) {
                            w.created.push(key);
                        }
                    } else {
                        w.active.remove(&key);
                    }
                    w.max = w.max.max(w.active.len());
                }
                watcher::Event::Delete(j) => {
                    let key = format!(
                        "{}/{}",
                        j.metadata.namespace.clone().unwrap_or_default(),
                        j.metadata.name.clone().unwrap_or_default()
                    );
                    w.active.remove(&key);
                }
                _ => {}
            }
        }
    });
    state
}

/// Templates whose status satisfies `pred`.
pub async fn count(
    api: &Api<AIMServiceTemplate>,
    pred: impl Fn(&ServiceTemplateStatus) -> bool,
) -> usize {
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|t| t.status.as_ref().is_some_and(&pred))
        .count()
}

/// Waits until the Job watch has seen exactly `n` active Jobs (it may lag behind the statuses).
pub async fn wait_active(watch: &Arc<Mutex<JobWatch>>, n: usize) {
    let deadline = std::time::Instant::now() + WAIT;
    while watch.lock().unwrap().active.len() != n {
        assert!(
            std::time::Instant::now() < deadline,
            "{} active discovery jobs, expected {n}",
            watch.lock().unwrap().active.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The namespace's runtime config `default` with this spec.
pub fn default_runtime_config(ns: &str, spec: serde_json::Value) -> AIMRuntimeConfig {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "aim.eai.amd.com/v1alpha1", "kind": "AIMRuntimeConfig",
        "metadata": { "name": "default", "namespace": ns },
        "spec": spec,
    }))
    .unwrap()
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:`port`: (status code, body); `None` when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text.split_once("\r\n\r\n")?.1.to_string()))
}

/// Applies the AIMModel `m` (image `example.test/aim-qwen:1`, this env) in the test's namespace.
pub async fn model_m(ns: &TestNamespace, env: serde_json::Value) {
    apply(
        &ns.api(),
        &model(&ns.name, "m", "example.test/aim-qwen:1", env),
    )
    .await;
}

/// Every event of the namespace's template `name`, collected from a watch until `until` holds for the
/// list or `window` passes without it: (type, reason, note, series count).
pub async fn events_of(
    ns: &TestNamespace,
    name: &str,
    window: Duration,
    until: impl Fn(&[(String, String, String, i32)]) -> bool,
) -> Vec<(String, String, String, i32)> {
    let api: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    let mut seen: std::collections::BTreeMap<String, (String, String, String, i32)> =
        std::collections::BTreeMap::new();
    let collect = async {
        let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()).applied_objects());
        while let Some(e) = stream.try_next().await.unwrap() {
            if e.regarding.as_ref().and_then(|r| r.name.as_deref()) != Some(name) {
                continue;
            }
            seen.insert(
                e.metadata.name.clone().unwrap_or_default(),
                (
                    e.type_.clone().unwrap_or_default(),
                    e.reason.clone().unwrap_or_default(),
                    e.note.clone().unwrap_or_default(),
                    e.series.as_ref().map(|s| s.count).unwrap_or(1),
                ),
            );
            let list: Vec<_> = seen.values().cloned().collect();
            if until(&list) {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(window, collect).await;
    seen.into_values().collect()
}

/// A template of model `m` on `count` × `gpu`, with static sources (Ready without discovery).
pub fn static_template(ns: &str, name: &str, gpu: &str, count: i32) -> AIMServiceTemplate {
    template(
        ns,
        name,
        serde_json::json!({
            "modelName": "m",
            "hardware": { "gpu": { "model": gpu, "requests": count } },
            "modelSources": [{ "name": "w", "sourceURI": "hf://org/m", "size": "1Gi" }],
        }),
    )
}

/// An AIMService `name` of `model` (`{"name": …}`, `{"image": …}`).
pub fn aim_service(ns: &str, name: &str, model: serde_json::Value) -> AIMService {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "aim.eai.amd.com/v1alpha1", "kind": "AIMService",
        "metadata": { "name": name, "namespace": ns },
        "spec": { "model": model },
    }))
    .unwrap()
}

/// An AIMModel with inline metadata recommending one MI300X deployment (no registry involved).
pub fn inline_model(ns: &str, name: &str) -> AIMModel {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "aim.eai.amd.com/v1alpha1", "kind": "AIMModel",
        "metadata": { "name": name, "namespace": ns },
        "spec": { "image": "example.test/aim-qwen:1", "imageMetadata": { "recommendedDeployments": [
            {"gpuModel": "MI300X", "gpuCount": 1, "precision": "fp8", "metric": "latency"}
        ] } },
    }))
    .unwrap()
}
