//! Shared state of the controllers: the reflector stores, the discovery queue, and the way to wake a
//! template.

use crate::Settings;
use crate::watches;
use aim_api::{
    AIMClusterModel, AIMClusterRuntimeConfig, AIMClusterServiceTemplate, AIMModel,
    AIMRuntimeConfig, AIMServiceTemplate, AIMTemplateCache, ServiceTemplateStatus,
    TemplateCacheStatus, TemplateScope,
};
use aim_resolve::DiscoveryQueue;
use aim_resolve::children::{TemplateRef, job_is_active, job_key, owner_of};
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Node, PersistentVolumeClaim, Pod};
use kube::Client;
use kube::runtime::reflector::{ObjectRef, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;

/// Read-only views of everything a template depends on.
#[derive(Clone)]
pub struct Stores {
    pub templates: Store<AIMServiceTemplate>,
    pub cluster_templates: Store<AIMClusterServiceTemplate>,
    pub models: Store<AIMModel>,
    pub cluster_models: Store<AIMClusterModel>,
    pub configs: Store<AIMRuntimeConfig>,
    pub cluster_configs: Store<AIMClusterRuntimeConfig>,
    pub nodes: Store<Node>,
    pub jobs: Store<Job>,
    pub pods: Store<Pod>,
    /// `FailedCreate` events of Jobs.
    pub job_events: Store<CoreEvent>,
    /// Templates made by models (label `aim.eai.amd.com/origin=auto-generated`): the model controller
    /// reads its templates' status here, where it is fresh when the change wakes the model.
    pub auto_templates: Store<AIMServiceTemplate>,
    pub auto_cluster_templates: Store<AIMClusterServiceTemplate>,
    /// Template caches (C-01…C-03), and what they make: volumes, download Jobs and their pods (label
    /// selected), and the Events of PersistentVolumeClaims (why one does not bind).
    pub caches: Store<AIMTemplateCache>,
    pub cache_volumes: Store<PersistentVolumeClaim>,
    pub download_jobs: Store<Job>,
    pub download_pods: Store<Pod>,
    pub volume_events: Store<CoreEvent>,
}

/// Streams of templates to reconcile, fed by the mappers.
pub struct Triggers {
    pub namespaced: UnboundedReceiver<ObjectRef<AIMServiceTemplate>>,
    pub cluster: UnboundedReceiver<ObjectRef<AIMClusterServiceTemplate>>,
    pub models: UnboundedReceiver<ObjectRef<AIMModel>>,
    pub cluster_models: UnboundedReceiver<ObjectRef<AIMClusterModel>>,
    pub caches: UnboundedReceiver<ObjectRef<AIMTemplateCache>>,
}

/// Wakes templates by key.
#[derive(Clone)]
pub struct Waker {
    namespaced: UnboundedSender<ObjectRef<AIMServiceTemplate>>,
    cluster: UnboundedSender<ObjectRef<AIMClusterServiceTemplate>>,
    models: UnboundedSender<ObjectRef<AIMModel>>,
    cluster_models: UnboundedSender<ObjectRef<AIMClusterModel>>,
    caches: UnboundedSender<ObjectRef<AIMTemplateCache>>,
}

impl Waker {
    pub fn wake(&self, scope: TemplateScope, namespace: Option<&str>, name: &str) {
        match scope {
            TemplateScope::Namespace => {
                let _ = self
                    .namespaced
                    .unbounded_send(ObjectRef::new(name).within(namespace.unwrap_or_default()));
            }
            TemplateScope::Cluster => {
                let _ = self.cluster.unbounded_send(ObjectRef::new(name));
            }
        }
    }

    /// Wakes a model: an AIMModel with a namespace, an AIMClusterModel without.
    pub fn wake_model(&self, namespace: Option<&str>, name: &str) {
        match namespace {
            Some(ns) => {
                let _ = self.models.unbounded_send(ObjectRef::new(name).within(ns));
            }
            None => {
                let _ = self.cluster_models.unbounded_send(ObjectRef::new(name));
            }
        }
    }

    /// Wakes a template cache.
    pub fn wake_cache(&self, namespace: &str, name: &str) {
        let _ = self
            .caches
            .unbounded_send(ObjectRef::new(name).within(namespace));
    }

    /// Wakes a template by its queue key (`Scope/namespace/name`).
    pub fn wake_key(&self, key: &str) {
        if let Some(t) = TemplateRef::from_key(key) {
            self.wake(t.scope, t.namespace.as_deref(), &t.name);
        }
    }
}

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub stores: Stores,
    pub queue: Mutex<DiscoveryQueue>,
    pub waker: Waker,
    pub recorder: crate::events::EventPublisher,
    pub metrics: crate::metrics::Metrics,
    /// Last status written per template UID, with the resourceVersion the write produced: a reconcile
    /// that runs before the watch delivers our own write uses this instead of the older cached status.
    pub written: Mutex<HashMap<String, (u64, ServiceTemplateStatus)>>,
    /// The same for models.
    pub model_written: Mutex<HashMap<String, (u64, aim_api::ModelStatus)>>,
    /// The same for template caches (a failed download must not be counted twice).
    pub cache_written: Mutex<HashMap<String, (u64, TemplateCacheStatus)>>,
    /// Consecutive failed reconciles per template key, for the retry delay.
    failures: Mutex<HashMap<String, u32>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Context {
    /// Starts every watch, waits until all stores are synced, and rebuilds the discovery slots from the
    /// Jobs that are running (T-23) before any controller may create one.
    pub async fn start(
        client: Client,
        settings: Settings,
        templates: Store<AIMServiceTemplate>,
        cluster_templates: Store<AIMClusterServiceTemplate>,
        template_changes: UnboundedReceiver<TemplateRef>,
    ) -> anyhow::Result<(Arc<Self>, Triggers)> {
        let (ns_tx, ns_rx) = unbounded();
        let (cl_tx, cl_rx) = unbounded();
        let (m_tx, m_rx) = unbounded();
        let (cm_tx, cm_rx) = unbounded();
        let (c_tx, c_rx) = unbounded();
        let waker = Waker {
            namespaced: ns_tx,
            cluster: cl_tx,
            models: m_tx,
            cluster_models: cm_tx,
            caches: c_tx,
        };
        let (stores, writers) = watches::stores(templates, cluster_templates);
        let ctx = Arc::new(Self {
            recorder: crate::events::EventPublisher::new(
                client.clone(),
                crate::FIELD_MANAGER,
                std::env::var("POD_NAME").ok(),
            ),
            client,
            metrics: crate::metrics::Metrics::default(),
            queue: Mutex::new(DiscoveryQueue::new(settings.max_concurrent_discoveries)),
            settings,
            stores,
            waker,
            written: Mutex::new(HashMap::new()),
            model_written: Mutex::new(HashMap::new()),
            cache_written: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
        });
        let tasks = watches::spawn(ctx.clone(), writers, template_changes);
        ctx.tasks.lock().expect("tasks lock").extend(tasks);
        let s = &ctx.stores;
        tokio::try_join!(
            s.models.wait_until_ready(),
            s.cluster_models.wait_until_ready(),
            s.configs.wait_until_ready(),
            s.cluster_configs.wait_until_ready(),
            s.nodes.wait_until_ready(),
            s.jobs.wait_until_ready(),
            s.pods.wait_until_ready(),
            s.job_events.wait_until_ready(),
            s.auto_templates.wait_until_ready(),
            s.auto_cluster_templates.wait_until_ready(),
            s.caches.wait_until_ready(),
            s.cache_volumes.wait_until_ready(),
            s.download_jobs.wait_until_ready(),
            s.download_pods.wait_until_ready(),
            s.volume_events.wait_until_ready(),
        )?;
        {
            let mut queue = ctx.queue.lock().expect("queue lock");
            for job in ctx.stores.jobs.state() {
                if job_is_active(&job)
                    && let Some(owner) = owner_of(&job.metadata)
                {
                    queue.occupy(&job_key(&job), &owner.key());
                }
            }
        }
        Ok((
            ctx,
            Triggers {
                namespaced: ns_rx,
                cluster: cl_rx,
                models: m_rx,
                cluster_models: cm_rx,
                caches: c_rx,
            },
        ))
    }

    /// Whether the template of a queue key still exists.
    pub fn template_exists(&self, key: &str) -> bool {
        match TemplateRef::from_key(key) {
            Some(t) if t.scope == TemplateScope::Namespace => self
                .stores
                .templates
                .get(&ObjectRef::new(&t.name).within(t.namespace.as_deref().unwrap_or_default()))
                .is_some(),
            Some(t) => self
                .stores
                .cluster_templates
                .get(&ObjectRef::new(&t.name))
                .is_some(),
            None => false,
        }
    }

    /// The create request of a Job with a reserved slot answered: the Job exists.
    pub fn confirm_slot(&self, job_key: &str) {
        self.queue.lock().expect("queue lock").confirm(job_key);
    }

    /// The delay before retrying a failed reconcile of `key`: 1 s, doubling, at most 5 min.
    pub fn backoff_next(&self, key: &str) -> std::time::Duration {
        let mut failures = self.failures.lock().expect("failures lock");
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        let (first, max) = crate::reconcile::ERROR_BACKOFF;
        first.saturating_mul(1u32 << (*n - 1).min(16)).min(max)
    }

    /// A reconcile of `key` succeeded: the next failure starts the delay afresh.
    pub fn backoff_reset(&self, key: &str) {
        let mut failures = self.failures.lock().expect("failures lock");
        if !failures.is_empty() {
            failures.remove(key);
        }
    }

    /// Gives back a Job's slot and wakes whoever may take it.
    pub fn release_slot(&self, job_key: &str) {
        let wake = {
            let mut queue = self.queue.lock().expect("queue lock");
            if !queue.holds(job_key) {
                return;
            }
            queue.release(job_key, |k| self.template_exists(k))
        };
        for key in wake {
            self.waker.wake_key(&key);
        }
    }

    pub fn stop(&self) {
        for t in self.tasks.lock().expect("tasks lock").drain(..) {
            t.abort();
        }
    }
}
