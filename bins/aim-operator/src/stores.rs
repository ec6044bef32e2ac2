//! The shared reflector stores every controller reads, and the wakers that queue a reconcile of one
//! object. The watches ([`crate::watches`]) fill the stores and decide, with the wake rules of
//! [`aim_resolve::wake`], whom a change wakes.

use aim_api::{
    AIMClusterModel, AIMClusterRuntimeConfig, AIMClusterServiceTemplate, AIMModel,
    AIMRuntimeConfig, AIMService, AIMServiceTemplate, AIMTemplateCache, RuntimeConfigCommon,
    TemplateScope,
};
use aim_resolve::ConfigCandidate;
use aim_resolve::children::TemplateRef;
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Node, PersistentVolumeClaim, Pod, Service};
use kube::Resource;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use std::sync::Arc;

/// Declares the stores once: the `Stores` of read handles, the `Writers` the watches fill, and the
/// constructor pairing them.
macro_rules! stores {
    ($($(#[$doc:meta])* $name:ident: $kind:ty,)*) => {
        /// Read-only views of every kind a controller reads.
        #[derive(Clone)]
        pub struct Stores {
            $($(#[$doc])* pub $name: Store<$kind>,)*
        }

        /// The write halves of [`Stores`], one per watch.
        pub struct Writers {
            $(pub $name: Writer<$kind>,)*
        }

        /// Empty stores and their writers.
        pub fn stores() -> (Stores, Writers) {
            $(let $name = reflector::store::<$kind>();)*
            (
                Stores { $($name: $name.0.clone(),)* },
                Writers { $($name: $name.1,)* },
            )
        }

        impl Stores {
            /// Waits until every store holds its first complete list.
            pub async fn wait_until_ready(&self) -> Result<(), reflector::store::WriterDropped> {
                $(self.$name.wait_until_ready().await?;)*
                Ok(())
            }
        }
    };
}

stores! {
    templates: AIMServiceTemplate,
    cluster_templates: AIMClusterServiceTemplate,
    models: AIMModel,
    cluster_models: AIMClusterModel,
    configs: AIMRuntimeConfig,
    cluster_configs: AIMClusterRuntimeConfig,
    /// Nodes, for the GPU inventory (T-08…T-11).
    nodes: Node,
    /// Discovery Jobs and their pods (label selected).
    jobs: Job,
    pods: Pod,
    /// `FailedCreate` events of Jobs.
    job_events: CoreEvent,
    /// Template caches (C-01…C-03), and what they make: volumes, download Jobs and their pods (label
    /// selected), and the Events of PersistentVolumeClaims (why one does not bind).
    caches: AIMTemplateCache,
    cache_volumes: PersistentVolumeClaim,
    download_jobs: Job,
    download_pods: Pod,
    volume_events: CoreEvent,
    /// Services (S-01…S-06) and their workloads: Deployments, Services and pods (label selected).
    services: AIMService,
    deployments: Deployment,
    workload_services: Service,
    workload_pods: Pod,
}

impl Stores {
    /// The runtime config of `name` a decision reads: the AIMRuntimeConfig in `namespace` (none for a
    /// cluster-scoped reader) and the AIMClusterRuntimeConfig. Every controller looks configs up here;
    /// [`aim_resolve::resolve_runtime_config`] merges them.
    pub fn configs(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> (
        Option<Arc<AIMRuntimeConfig>>,
        Option<Arc<AIMClusterRuntimeConfig>>,
    ) {
        (
            namespace.and_then(|ns| self.configs.get(&ObjectRef::new(name).within(ns))),
            self.cluster_configs.get(&ObjectRef::new(name)),
        )
    }
}

/// A runtime config object as the decisions take it.
pub fn config_candidate<K>(config: &K) -> ConfigCandidate<'_>
where
    K: Resource + HasConfigSpec,
{
    let meta = config.meta();
    ConfigCandidate {
        name: meta.name.as_deref().unwrap_or_default(),
        namespace: meta.namespace.as_deref(),
        uid: meta.uid.as_deref(),
        spec: config.config_spec(),
    }
}

/// The two runtime config kinds share their spec.
pub trait HasConfigSpec {
    fn config_spec(&self) -> &RuntimeConfigCommon;
}

impl HasConfigSpec for AIMRuntimeConfig {
    fn config_spec(&self) -> &RuntimeConfigCommon {
        &self.spec.common
    }
}

impl HasConfigSpec for AIMClusterRuntimeConfig {
    fn config_spec(&self) -> &RuntimeConfigCommon {
        &self.spec.common
    }
}

/// Declares the wake channels once: the `Waker` that sends and the `Triggers` each controller reads.
macro_rules! wakers {
    ($($name:ident: $kind:ty,)*) => {
        /// Queues reconciles, one channel per controller.
        #[derive(Clone)]
        pub struct Waker {
            $($name: UnboundedSender<ObjectRef<$kind>>,)*
        }

        /// What each controller reconciles next, fed by the [`Waker`].
        pub struct Triggers {
            $(pub $name: UnboundedReceiver<ObjectRef<$kind>>,)*
        }

        /// A waker and the triggers it feeds.
        pub fn wakers() -> (Waker, Triggers) {
            $(let $name = unbounded::<ObjectRef<$kind>>();)*
            (Waker { $($name: $name.0,)* }, Triggers { $($name: $name.1,)* })
        }
    };
}

wakers! {
    templates: AIMServiceTemplate,
    cluster_templates: AIMClusterServiceTemplate,
    models: AIMModel,
    cluster_models: AIMClusterModel,
    caches: AIMTemplateCache,
    services: AIMService,
}

impl Waker {
    /// Wakes a template of either scope.
    pub fn template(&self, scope: TemplateScope, namespace: Option<&str>, name: &str) {
        match scope {
            TemplateScope::Namespace => {
                let r = ObjectRef::new(name).within(namespace.unwrap_or_default());
                let _ = self.templates.unbounded_send(r);
            }
            TemplateScope::Cluster => {
                let _ = self.cluster_templates.unbounded_send(ObjectRef::new(name));
            }
        }
    }

    /// Wakes a template by its discovery queue key (`Scope/namespace/name`).
    pub fn template_key(&self, key: &str) {
        if let Some(t) = TemplateRef::from_key(key) {
            self.template(t.scope, t.namespace.as_deref(), &t.name);
        }
    }

    /// Wakes a model: an AIMModel with a namespace, an AIMClusterModel without.
    pub fn model(&self, namespace: Option<&str>, name: &str) {
        match namespace {
            Some(ns) => {
                let _ = self.models.unbounded_send(ObjectRef::new(name).within(ns));
            }
            None => {
                let _ = self.cluster_models.unbounded_send(ObjectRef::new(name));
            }
        }
    }

    pub fn cache(&self, namespace: &str, name: &str) {
        let _ = self
            .caches
            .unbounded_send(ObjectRef::new(name).within(namespace));
    }

    pub fn service(&self, namespace: &str, name: &str) {
        let _ = self
            .services
            .unbounded_send(ObjectRef::new(name).within(namespace));
    }
}

/// The objects of `store` in `namespace`.
pub fn in_namespace<K>(store: &Store<K>, namespace: &str) -> Vec<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    store
        .state()
        .into_iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(namespace))
        .collect()
}

/// The Events of `store` about one of the objects of `uids`.
pub fn events_about(store: &Store<CoreEvent>, uids: &[&str]) -> Vec<Arc<CoreEvent>> {
    store
        .state()
        .into_iter()
        .filter(|e| {
            e.involved_object
                .uid
                .as_deref()
                .is_some_and(|u| uids.contains(&u))
        })
        .collect()
}
