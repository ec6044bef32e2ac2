//! Watches of everything templates depend on, and the mappers that wake exactly the templates a change
//! affects (T-02, T-04, T-11) and hand on discovery slots (T-23).

use crate::context::{Context, Stores};
use aim_api::{
    AIMClusterModel, AIMClusterRuntimeConfig, AIMClusterServiceTemplate, AIMModel,
    AIMRuntimeConfig, AIMServiceTemplate, AIMTemplateCache, TemplateScope,
};
use aim_resolve::cache::{DOWNLOAD_SELECTOR, VOLUME_EVENT_SELECTOR, VOLUME_SELECTOR};
use aim_resolve::children::{
    FAILED_CREATE_EVENT_SELECTOR, TemplateRef, job_is_active, job_key, owner_of,
    wakes_on_gpu_change,
};
use futures::channel::mpsc::UnboundedReceiver;
use futures::{Stream, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Node, PersistentVolumeClaim, Pod};
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
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
    job_events: Writer<CoreEvent>,
    auto_templates: Writer<AIMServiceTemplate>,
    auto_cluster_templates: Writer<AIMClusterServiceTemplate>,
    caches: Writer<AIMTemplateCache>,
    cache_volumes: Writer<PersistentVolumeClaim>,
    download_jobs: Writer<Job>,
    download_pods: Writer<Pod>,
    volume_events: Writer<CoreEvent>,
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
    let (job_events, job_events_w) = reflector::store();
    let (auto_templates, auto_templates_w) = reflector::store();
    let (auto_cluster_templates, auto_cluster_templates_w) = reflector::store();
    let (caches, caches_w) = reflector::store();
    let (cache_volumes, cache_volumes_w) = reflector::store();
    let (download_jobs, download_jobs_w) = reflector::store();
    let (download_pods, download_pods_w) = reflector::store();
    let (volume_events, volume_events_w) = reflector::store();
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
            job_events,
            auto_templates,
            auto_cluster_templates,
            caches,
            cache_volumes,
            download_jobs,
            download_pods,
            volume_events,
        },
        Writers {
            models: models_w,
            cluster_models: cluster_models_w,
            configs: configs_w,
            cluster_configs: cluster_configs_w,
            nodes: nodes_w,
            jobs: jobs_w,
            pods: pods_w,
            job_events: job_events_w,
            auto_templates: auto_templates_w,
            auto_cluster_templates: auto_cluster_templates_w,
            caches: caches_w,
            cache_volumes: cache_volumes_w,
            download_jobs: download_jobs_w,
            download_pods: download_pods_w,
            volume_events: volume_events_w,
        },
    )
}

/// Labels on everything discovery creates.
pub const DISCOVERY_SELECTOR: &str =
    "app.kubernetes.io/managed-by=aim-operator,app.kubernetes.io/component=discovery";

/// What a reflected watch reports.
enum Change<K> {
    Applied(K),
    Deleted(K),
    /// A (re-)list finished: the store holds exactly what exists. Deletions that happened while the
    /// watch was down gave no event.
    Relisted,
}

/// What no decision reads and the stores need not keep: managed fields, and the copy of the whole
/// object that `kubectl apply` leaves in an annotation.
pub(crate) fn trim<K: Resource>(o: &mut K) {
    o.managed_fields_mut().clear();
    if let Some(a) = o.meta_mut().annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// A reflected watch.
fn watch<K>(
    api: Api<K>,
    wc: watcher::Config,
    writer: Writer<K>,
) -> impl Stream<Item = Change<K>> + Send
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    watcher(api, wc)
        .default_backoff()
        .modify(trim)
        .reflect(writer)
        .filter_map(|ev| async move {
            match ev {
                Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => {
                    Some(Change::Applied(o))
                }
                Ok(watcher::Event::Delete(o)) => Some(Change::Deleted(o)),
                Ok(watcher::Event::InitDone) => Some(Change::Relisted),
                Ok(watcher::Event::Init) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "watch error; retrying with backoff");
                    None
                }
            }
        })
}

/// Runs `f(object, deleted)` for each change of a watch (re-lists are not passed on).
fn each<K, F>(stream: impl Stream<Item = Change<K>> + Send + 'static, mut f: F) -> JoinHandle<()>
where
    K: Send + 'static,
    F: FnMut(K, bool) + Send + 'static,
{
    tokio::spawn(stream.for_each(move |change| {
        match change {
            Change::Applied(o) => f(o, false),
            Change::Deleted(o) => f(o, true),
            Change::Relisted => {}
        }
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

/// Starts every watch; the returned tasks run until aborted. `template_changes` names every template
/// the template controllers' watches saw change or go, after their stores took the change.
pub fn spawn(
    ctx: Arc<Context>,
    w: Writers,
    template_changes: UnboundedReceiver<TemplateRef>,
) -> Vec<JoinHandle<()>> {
    let client = ctx.client.clone();
    let all = watcher::Config::default().any_semantic();
    let discovery = all.clone().labels(DISCOVERY_SELECTOR);
    let mut tasks = Vec::new();

    let c = ctx.clone();
    tasks.push(each(
        watch(Api::<AIMModel>::all(client.clone()), all.clone(), w.models),
        move |m, deleted| {
            let (ns, name) = (m.namespace(), m.name_any());
            wake_namespaced(&c, |t| {
                t.namespace() == ns && t.spec.common.model_name == name
            });
            if !deleted {
                c.waker.wake_model(ns.as_deref(), &name);
            }
        },
    ));
    let c = ctx.clone();
    tasks.push(each(
        watch(
            Api::<AIMClusterModel>::all(client.clone()),
            all.clone(),
            w.cluster_models,
        ),
        move |m, deleted| {
            let name = m.name_any();
            wake_namespaced(&c, |t| t.spec.common.model_name == name);
            wake_cluster(&c, |t| t.spec.common.model_name == name);
            if !deleted {
                c.waker.wake_model(None, &name);
            }
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

    // M-04: a model follows the templates it made (created, changed status, deleted by someone).
    let auto = all.clone().labels(AUTO_GENERATED_SELECTOR);
    let c = ctx.clone();
    tasks.push(each(
        watch(
            Api::<AIMServiceTemplate>::all(client.clone()),
            auto.clone(),
            w.auto_templates,
        ),
        move |t, _| wake_model_owner(&c, &t.metadata, "AIMModel"),
    ));
    let c = ctx.clone();
    tasks.push(each(
        watch(
            Api::<AIMClusterServiceTemplate>::all(client.clone()),
            auto,
            w.auto_cluster_templates,
        ),
        move |t, _| wake_model_owner(&c, &t.metadata, "AIMClusterModel"),
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
                wake_namespaced(&c, |t| {
                    wakes_on_gpu_change(&t.spec.common, t.status.as_ref())
                });
                wake_cluster(&c, |t| {
                    wakes_on_gpu_change(&t.spec.common, t.status.as_ref())
                });
            }
        },
    ));

    // Discovery Jobs: wake their template; a finished or deleted Job frees its slot at once (T-23).
    // After a re-list, slots of Jobs the list did not show are checked with the API server: a Job
    // deleted while the watch was down gave no delete event.
    let c = ctx.clone();
    tasks.push(tokio::spawn(
        watch(Api::<Job>::all(client.clone()), discovery.clone(), w.jobs).for_each(move |change| {
            let c = c.clone();
            async move {
                match change {
                    Change::Applied(job) => {
                        if !job_is_active(&job) {
                            c.release_slot(&job_key(&job));
                        }
                        wake_owner(&c, &job.metadata);
                    }
                    Change::Deleted(job) => {
                        c.release_slot(&job_key(&job));
                        wake_owner(&c, &job.metadata);
                    }
                    Change::Relisted => verify_unseen_slots(&c).await,
                }
            }
        }),
    ));
    let c = ctx.clone();
    tasks.push(each(
        watch(Api::<Pod>::all(client.clone()), discovery, w.pods),
        move |pod, _| {
            wake_owner(&c, &pod.metadata);
        },
    ));
    // The Job controller's FailedCreate events: a discovery pod refused by quota, admission or a
    // missing service account says so in its template within seconds.
    let c = ctx.clone();
    let failed_create = all.clone().fields(FAILED_CREATE_EVENT_SELECTOR);
    tasks.push(each(
        watch(
            Api::<CoreEvent>::all(client.clone()),
            failed_create,
            w.job_events,
        ),
        move |ev, deleted| {
            if deleted {
                return;
            }
            let o = &ev.involved_object;
            let job = c.stores.jobs.get(
                &ObjectRef::new(o.name.as_deref().unwrap_or_default())
                    .within(o.namespace.as_deref().unwrap_or_default()),
            );
            if let Some(job) = job {
                wake_owner(&c, &job.metadata);
            }
        },
    ));
    spawn_cache_watches(
        &ctx,
        &mut tasks,
        w.caches,
        w.cache_volumes,
        w.download_jobs,
        w.download_pods,
        w.volume_events,
        template_changes,
    );
    // T-23: waiting templates whose queue position moved are rewritten, each at most every
    // POSITION_REFRESH, never on every hand-off. A few at a time, every POSITION_TICK: woken all at
    // once, a few hundred rewrites filled the controller's queue, which releases what waits in no
    // particular order, and a template just given a slot could wait behind them all.
    let c = ctx.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(POSITION_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let spacing = (POSITION_REFRESH.as_millis() / POSITION_TICK.as_millis()) as u64;
        let per_tick = usize::from(c.settings.max_concurrent_reconciles).max(1);
        loop {
            tick.tick().await;
            let stale = c
                .queue
                .lock()
                .expect("queue lock")
                .stale_positions(per_tick, spacing);
            for key in stale {
                c.waker.wake_key(&key);
            }
        }
    }));
    tasks
}

/// How often, at most, a waiting template's queue position is rewritten. While a queue drains nearly
/// every waiter's rank changes at each hand-off: `cargo xtask bench discovery` (200 templates, 2 s
/// dry-runs) made 25.6 status writes per template with 2 s.
pub const POSITION_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);
/// How often a few waiters' positions are refreshed (as many as reconciles may run at once).
const POSITION_TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// Gives back the slots of Jobs that the API server says are gone.
async fn verify_unseen_slots(ctx: &Context) {
    let unseen = {
        let queue = ctx.queue.lock().expect("queue lock");
        queue.unseen(|key| {
            let (ns, name) = key.split_once('/').unwrap_or_default();
            ctx.stores
                .jobs
                .get(&ObjectRef::new(name).within(ns))
                .is_some()
        })
    };
    for key in unseen {
        let (ns, name) = key.split_once('/').unwrap_or_default();
        let api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
        match api.get_opt(name).await {
            Ok(None) => {
                tracing::info!(job = %key, "discovery job gone while the watch was down; slot freed");
                ctx.release_slot(&key);
            }
            Ok(Some(job)) if !job_is_active(&job) => ctx.release_slot(&key),
            Ok(Some(_)) => {}
            Err(e) => tracing::warn!(job = %key, error = %e, "cannot check a discovery job"),
        }
    }
}

/// Label selector of the templates models create (M-02).
pub const AUTO_GENERATED_SELECTOR: &str = "aim.eai.amd.com/origin=auto-generated";

/// Wakes the model (of `kind`) that controls a template.
fn wake_model_owner(ctx: &Context, meta: &kube::api::ObjectMeta, kind: &str) {
    let owner = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind == kind);
    if let Some(o) = owner {
        let ns = if kind == "AIMModel" {
            meta.namespace.as_deref()
        } else {
            None
        };
        ctx.waker.wake_model(ns, &o.name);
    }
}

fn wake_owner(ctx: &Context, meta: &kube::api::ObjectMeta) {
    if let Some(t) = owner_of(meta) {
        ctx.waker.wake(t.scope, t.namespace.as_deref(), &t.name);
    }
}

/// C-01…C-03, T-26…T-28: the watches of template caches and of what they make, and the mappers that
/// wake exactly the caches (and templates) a change concerns.
#[allow(clippy::too_many_arguments)]
fn spawn_cache_watches(
    ctx: &Arc<Context>,
    tasks: &mut Vec<JoinHandle<()>>,
    caches: Writer<AIMTemplateCache>,
    volumes: Writer<PersistentVolumeClaim>,
    jobs: Writer<Job>,
    pods: Writer<Pod>,
    events: Writer<CoreEvent>,
    template_changes: UnboundedReceiver<TemplateRef>,
) {
    let client = ctx.client.clone();
    let all = watcher::Config::default().any_semantic();
    // A cache wakes itself, and the template of its name, which mirrors its phase (T-27) and makes it
    // again if someone deletes it (T-26).
    let c = ctx.clone();
    tasks.push(each(
        watch(
            Api::<AIMTemplateCache>::all(client.clone()),
            all.clone(),
            caches,
        ),
        move |cache, deleted| {
            let (ns, name) = (cache.namespace().unwrap_or_default(), cache.name_any());
            if !deleted {
                c.waker.wake_cache(&ns, &name);
            }
            c.waker.wake(TemplateScope::Namespace, Some(&ns), &name);
        },
    ));
    // Volumes, download Jobs and their pods (label selected) wake the caches that own or list them.
    let c = ctx.clone();
    tasks.push(each(
        watch(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            all.clone().labels(VOLUME_SELECTOR),
            volumes,
        ),
        move |pvc, _| wake_volume_caches(&c, &pvc.metadata, pvc.metadata.name.as_deref()),
    ));
    let downloads = all.clone().labels(DOWNLOAD_SELECTOR);
    let c = ctx.clone();
    tasks.push(each(
        watch(Api::<Job>::all(client.clone()), downloads.clone(), jobs),
        move |job, _| {
            let volume = job.labels().get(aim_api::labels::CACHE_VOLUME).cloned();
            wake_volume_caches(&c, &job.metadata, volume.as_deref());
        },
    ));
    let c = ctx.clone();
    tasks.push(each(
        watch(Api::<Pod>::all(client.clone()), downloads, pods),
        move |pod, _| {
            // A pod's owner is its Job: the caches are found by the volume it fills.
            let volume = pod.labels().get(aim_api::labels::CACHE_VOLUME).cloned();
            let meta = kube::api::ObjectMeta {
                namespace: pod.namespace(),
                ..Default::default()
            };
            wake_volume_caches(&c, &meta, volume.as_deref());
        },
    ));
    // Why a claim does not bind (the PV controller's events): only for our volumes.
    let c = ctx.clone();
    tasks.push(each(
        watch(
            Api::<CoreEvent>::all(client),
            all.fields(VOLUME_EVENT_SELECTOR),
            events,
        ),
        move |ev, deleted| {
            if deleted {
                return;
            }
            let o = &ev.involved_object;
            let volume = c.stores.cache_volumes.get(
                &ObjectRef::new(o.name.as_deref().unwrap_or_default())
                    .within(o.namespace.as_deref().unwrap_or_default()),
            );
            if let Some(v) = volume {
                wake_volume_caches(&c, &v.metadata, v.metadata.name.as_deref());
            }
        },
    ));
    // A template that changed or went wakes the caches that name it (C-01, C-03, T-28).
    let c = ctx.clone();
    tasks.push(tokio::spawn(template_changes.for_each(move |t| {
        for cache in c.stores.caches.state() {
            let in_scope = cache.spec.template_scope == TemplateScope::Cluster
                || t.scope == TemplateScope::Cluster
                || cache.namespace() == t.namespace;
            if cache.spec.template_name == t.name && in_scope {
                c.waker
                    .wake_cache(&cache.namespace().unwrap_or_default(), &cache.name_any());
            }
        }
        std::future::ready(())
    })));
}

/// Wakes the caches in the object's namespace that own it or whose status lists `volume`.
fn wake_volume_caches(ctx: &Context, meta: &kube::api::ObjectMeta, volume: Option<&str>) {
    let Some(ns) = meta.namespace.as_deref() else {
        return;
    };
    let owners: Vec<&str> = meta
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.kind == "AIMTemplateCache")
        .map(|o| o.uid.as_str())
        .collect();
    for cache in ctx.stores.caches.state() {
        if cache.namespace().as_deref() != Some(ns) {
            continue;
        }
        let owns = cache
            .metadata
            .uid
            .as_deref()
            .is_some_and(|u| owners.contains(&u));
        let lists = volume.is_some_and(|v| {
            cache
                .status
                .iter()
                .flat_map(|s| &s.sources)
                .any(|s| s.volume.as_deref() == Some(v))
        });
        if owns || lists {
            ctx.waker.wake_cache(ns, &cache.name_any());
        }
    }
}
