//! Watches of everything templates depend on, and the mappers that wake exactly the templates a change
//! affects (T-02, T-04, T-11) and hand on discovery slots (T-23).

use crate::context::{Context, Stores};
use crate::kinds::template_key;
use aim_api::labels;
use aim_api::{
    AIMClusterModel, AIMClusterRuntimeConfig, AIMClusterServiceTemplate, AIMModel,
    AIMRuntimeConfig, AIMServiceTemplate, TemplateScope,
};
use aim_discovery::ANNOTATION_TEMPLATE_NAME;
use futures::{Stream, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use tokio::task::JoinHandle;

pub struct Writers {
    models: Writer<AIMModel>,
    cluster_models: Writer<AIMClusterModel>,
    configs: Writer<AIMRuntimeConfig>,
    cluster_configs: Writer<AIMClusterRuntimeConfig>,
    nodes: Writer<Node>,
    jobs: Writer<Job>,
    pods: Writer<Pod>,
}

pub fn stores(
    templates: Store<AIMServiceTemplate>,
    cluster_templates: Store<AIMClusterServiceTemplate>,
) -> (Stores, Writers) {
    let (models, models_w) = reflector::store();
    let (cluster_models, cluster_models_w) = reflector::store();
    let (configs, configs_w) = reflector::store();
    let (cluster_configs, cluster_configs_w) = reflector::store();
    let (nodes, nodes_w) = reflector::store();
    let (jobs, jobs_w) = reflector::store();
    let (pods, pods_w) = reflector::store();
    (
        Stores {
            templates,
            cluster_templates,
            models,
            cluster_models,
            configs,
            cluster_configs,
            nodes,
            jobs,
            pods,
        },
        Writers {
            models: models_w,
            cluster_models: cluster_models_w,
            configs: configs_w,
            cluster_configs: cluster_configs_w,
            nodes: nodes_w,
            jobs: jobs_w,
            pods: pods_w,
        },
    )
}

/// Labels on everything discovery creates.
pub const DISCOVERY_SELECTOR: &str =
    "app.kubernetes.io/managed-by=aim-operator,app.kubernetes.io/component=discovery";

/// A reflected watch: `Some((object, deleted))` per change.
fn watch<K>(
    api: Api<K>,
    wc: watcher::Config,
    writer: Writer<K>,
) -> impl Stream<Item = (K, bool)> + Send
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    watcher(api, wc)
        .default_backoff()
        .modify(|o| o.managed_fields_mut().clear())
        .reflect(writer)
        .filter_map(|ev| async move {
            match ev {
                Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => Some((o, false)),
                Ok(watcher::Event::Delete(o)) => Some((o, true)),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "watch error; retrying with backoff");
                    None
                }
            }
        })
}

fn each<K, F>(stream: impl Stream<Item = (K, bool)> + Send + 'static, mut f: F) -> JoinHandle<()>
where
    K: Send + 'static,
    F: FnMut(K, bool) + Send + 'static,
{
    tokio::spawn(stream.for_each(move |(o, deleted)| {
        f(o, deleted);
        std::future::ready(())
    }))
}

fn wake_namespaced(ctx: &Context, pred: impl Fn(&AIMServiceTemplate) -> bool) {
    for t in ctx.stores.templates.state().iter().filter(|t| pred(t)) {
        ctx.waker.wake(
            TemplateScope::Namespace,
            t.namespace().as_deref(),
            &t.name_any(),
        );
    }
}

fn wake_cluster(ctx: &Context, pred: impl Fn(&AIMClusterServiceTemplate) -> bool) {
    for t in ctx
        .stores
        .cluster_templates
        .state()
        .iter()
        .filter(|t| pred(t))
    {
        ctx.waker.wake(TemplateScope::Cluster, None, &t.name_any());
    }
}

/// Starts every watch; the returned tasks run until aborted.
pub fn spawn(ctx: Arc<Context>, w: Writers) -> Vec<JoinHandle<()>> {
    let client = ctx.client.clone();
    let all = watcher::Config::default().any_semantic();
    let discovery = all.clone().labels(DISCOVERY_SELECTOR);
    let mut tasks = Vec::new();

    let c = ctx.clone();
    tasks.push(each(
        watch(Api::<AIMModel>::all(client.clone()), all.clone(), w.models),
        move |m, _| {
            let (ns, name) = (m.namespace(), m.name_any());
            wake_namespaced(&c, |t| {
                t.namespace() == ns && t.spec.common.model_name == name
            });
        },
    ));
    let c = ctx.clone();
    tasks.push(each(
        watch(
            Api::<AIMClusterModel>::all(client.clone()),
            all.clone(),
            w.cluster_models,
        ),
        move |m, _| {
            let name = m.name_any();
            wake_namespaced(&c, |t| t.spec.common.model_name == name);
            wake_cluster(&c, |t| t.spec.common.model_name == name);
        },
    ));
    let c = ctx.clone();
    tasks.push(each(
        watch(
            Api::<AIMRuntimeConfig>::all(client.clone()),
            all.clone(),
            w.configs,
        ),
        move |rc, _| {
            let (ns, name) = (rc.namespace(), rc.name_any());
            wake_namespaced(&c, |t| {
                t.namespace() == ns && t.spec.common.runtime_config_name == name
            });
        },
    ));
    let c = ctx.clone();
    tasks.push(each(
        watch(
            Api::<AIMClusterRuntimeConfig>::all(client.clone()),
            all.clone(),
            w.cluster_configs,
        ),
        move |rc, _| {
            let name = rc.name_any();
            wake_namespaced(&c, |t| t.spec.common.runtime_config_name == name);
            wake_cluster(&c, |t| t.spec.common.runtime_config_name == name);
        },
    ));

    // T-11: only changes of the GPU inventory wake templates, and only templates that need a GPU.
    let c = ctx.clone();
    let mut seen: HashMap<String, Node> = HashMap::new();
    tasks.push(each(
        watch(Api::<Node>::all(client.clone()), all.clone(), w.nodes),
        move |node, deleted| {
            let name = node.name_any();
            let before = seen.get(&name);
            let after = if deleted { None } else { Some(&node) };
            let changed = aim_hardware::alters_gpu_inventory(before, after);
            if deleted {
                seen.remove(&name);
            } else {
                seen.insert(name.clone(), node.clone());
            }
            if changed {
                tracing::debug!(node = %name, "GPU inventory changed");
                let uses_gpu =
                    |spec: &aim_api::ServiceTemplateCommon,
                     status: Option<&aim_api::ServiceTemplateStatus>| {
                        spec.hardware.as_ref().is_some_and(|h| h.gpu.is_some())
                            || status.is_some_and(|s| {
                                s.resolved_hardware
                                    .as_ref()
                                    .is_some_and(|h| h.gpu.is_some())
                            })
                    };
                wake_namespaced(&c, |t| uses_gpu(&t.spec.common, t.status.as_ref()));
                wake_cluster(&c, |t| uses_gpu(&t.spec.common, t.status.as_ref()));
            }
        },
    ));

    // Discovery Jobs: wake their template; a finished or deleted Job frees its slot at once (T-23).
    let c = ctx.clone();
    tasks.push(each(
        watch(Api::<Job>::all(client.clone()), discovery.clone(), w.jobs),
        move |job, deleted| {
            if deleted || !job_is_active(&job) {
                c.release_slot(&job_key(&job));
            }
            wake_owner(&c, &job.metadata);
        },
    ));
    let c = ctx.clone();
    tasks.push(each(
        watch(Api::<Pod>::all(client), discovery, w.pods),
        move |pod, _| {
            wake_owner(&c, &pod.metadata);
        },
    ));
    tasks
}

fn owner(meta: &kube::api::ObjectMeta) -> Option<(TemplateScope, Option<String>, String)> {
    let scope = match meta.labels.as_ref()?.get(labels::TEMPLATE_SCOPE)?.as_str() {
        "Namespace" => TemplateScope::Namespace,
        "Cluster" => TemplateScope::Cluster,
        _ => return None,
    };
    let name = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_TEMPLATE_NAME))
        .or_else(|| meta.labels.as_ref()?.get(labels::TEMPLATE))?
        .clone();
    let namespace = match scope {
        TemplateScope::Namespace => meta.namespace.clone(),
        TemplateScope::Cluster => None,
    };
    Some((scope, namespace, name))
}

fn wake_owner(ctx: &Context, meta: &kube::api::ObjectMeta) {
    if let Some((scope, ns, name)) = owner(meta) {
        ctx.waker.wake(scope, ns.as_deref(), &name);
    }
}

/// Queue key of the template a discovery Job belongs to.
pub fn template_key_of_job(job: &Job) -> Option<String> {
    owner(&job.metadata).map(|(scope, ns, name)| template_key(scope, ns.as_deref(), &name))
}

/// `namespace/name` of a Job.
pub fn job_key(job: &Job) -> String {
    format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any())
}

/// A Job holds a slot until it finished or is being deleted.
pub fn job_is_active(job: &Job) -> bool {
    if job.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let finished = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        });
    !finished
}
