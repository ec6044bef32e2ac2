//! The watches that fill the shared stores, and the mappers that wake exactly the objects a change
//! affects. Whom a change wakes is decided by the wake rules of [`aim_resolve::wake`]; this module only
//! iterates the stores and sends. Discovery slots are handed on here too (T-23).

use crate::context::Context;
use crate::stores::Writers;
use aim_api::{AIMTemplateCache, TemplateScope};
use aim_resolve::cache::{DOWNLOAD_SELECTOR, VOLUME_EVENT_SELECTOR, VOLUME_SELECTOR};
use aim_resolve::children::{FAILED_CREATE_EVENT_SELECTOR, job_is_active, job_key, owner_of};
use aim_resolve::wake::{
    Changed, cache_config_name, child_wakes_cache, config_wakes_cache, config_wakes_template,
    model_wakes_template, node_wakes_template, template_wakes_cache, wakes_service,
};
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Node, Pod, Service};
use kube::api::ObjectMeta;
use kube::core::{ClusterResourceScope, NamespaceResourceScope};
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// Labels on everything discovery creates.
pub const DISCOVERY_SELECTOR: &str =
    "app.kubernetes.io/managed-by=aim-operator,app.kubernetes.io/component=discovery";

/// Labels on the inference workloads (S-05).
pub const WORKLOAD_SELECTOR: &str =
    "app.kubernetes.io/managed-by=aim-operator,app.kubernetes.io/component=inference";

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
fn trim<K: Resource>(o: &mut K) {
    o.managed_fields_mut().clear();
    if let Some(a) = o.meta_mut().annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// What the node store keeps: the inventory's part of each node (T-11).
fn strip_node(node: &mut Node) {
    trim(node);
    aim_hardware::strip_to_inventory(node);
}

/// What the stores keep of a service's workload: what the service decision reads (S-05). The hash
/// annotation, the owner, the generation and the status of a Deployment; the metadata of a Service; the
/// status of a pod. The specs are most of each object and are written from the decision, never read.
fn strip_deployment(d: &mut Deployment) {
    trim(d);
    d.spec = Default::default();
}

fn strip_service(s: &mut Service) {
    trim(s);
    s.spec = Default::default();
    s.status = Default::default();
}

fn strip_pod(p: &mut Pod) {
    trim(p);
    p.spec = Default::default();
}

/// Where a namespaced kind is watched: across the cluster, or in each watched namespace
/// (`--watch-namespaces`, with the system namespace).
fn namespaced<K>(ctx: &Context) -> Vec<Api<K>>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    match ctx.settings.watched_namespaces() {
        None => vec![Api::all(ctx.client.clone())],
        Some(list) => list
            .iter()
            .map(|ns| Api::namespaced(ctx.client.clone(), ns))
            .collect(),
    }
}

/// A cluster-scoped kind is watched across the cluster, whatever namespaces are watched.
fn cluster<K>(ctx: &Context) -> Vec<Api<K>>
where
    K: Resource<DynamicType = (), Scope = ClusterResourceScope>,
{
    vec![Api::all(ctx.client.clone())]
}

/// A reflected watch of `apis` (one: the plain watcher; several namespaces: merged into the one store
/// by [`crate::multi`]): each change reaches the stream after the store took it (cut down by
/// `modify`), so whoever is woken reads it.
fn watch<K>(
    apis: Vec<Api<K>>,
    wc: watcher::Config,
    writer: Writer<K>,
    modify: fn(&mut K),
) -> impl Stream<Item = Change<K>> + Send
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let reflected = if let [api] = &apis[..] {
        watcher(api.clone(), wc)
            .default_backoff()
            .modify(modify)
            .reflect(writer)
            .left_stream()
    } else {
        let names = apis
            .iter()
            .map(|a| a.namespace().unwrap_or_default().to_string())
            .collect();
        let watches = apis.into_iter().enumerate().map(|(i, api)| {
            watcher(api, wc.clone())
                .default_backoff()
                .modify(modify)
                .map(move |ev| (i, ev))
                .boxed()
        });
        crate::multi::reflect(writer, names, futures::stream::select_all(watches)).right_stream()
    };
    reflected.filter_map(|ev| async move {
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

/// Runs `f(object, deleted)` for each change of a watch of `apis` (re-lists are not passed on).
fn each<K, F>(
    ctx: &Arc<Context>,
    apis: Vec<Api<K>>,
    wc: watcher::Config,
    writer: Writer<K>,
    f: F,
) -> JoinHandle<()>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    F: Fn(&Context, K, bool) + Send + 'static,
{
    each_with(ctx, apis, wc, writer, trim, f)
}

/// [`each`], with the store keeping what `modify` leaves of each object. What the operator remembers
/// of a deleted object (a status written, a retry count) goes with it.
fn each_with<K, F>(
    ctx: &Arc<Context>,
    apis: Vec<Api<K>>,
    wc: watcher::Config,
    writer: Writer<K>,
    modify: fn(&mut K),
    f: F,
) -> JoinHandle<()>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    F: Fn(&Context, K, bool) + Send + 'static,
{
    let c = ctx.clone();
    let stream = watch(apis, wc, writer, modify);
    tokio::spawn(stream.for_each(move |change| {
        match change {
            Change::Applied(o) => f(&c, o, false),
            Change::Deleted(o) => {
                if let Some(uid) = o.meta().uid.as_deref() {
                    c.forget(uid);
                }
                f(&c, o, true)
            }
            Change::Relisted => {}
        }
        std::future::ready(())
    }))
}

/// Starts every watch and the queue position refresh; the tasks run until aborted.
pub fn spawn(ctx: &Arc<Context>, w: Writers) -> Vec<JoinHandle<()>> {
    let all = watcher::Config::default().any_semantic();
    // Lists of 100 rather than kube's 500 for the kinds that come in thousands (templates, nodes, services
    // and their workloads): each page is held twice while it is read (the text, then every object, before
    // it is cut down) next to the store being filled. A restart over 5,000 Ready templates peaked at
    // 83.5 MiB RSS with pages of 500.
    let many = all.clone().page_size(100);
    let discovery = all.clone().labels(DISCOVERY_SELECTOR);
    let downloads = all.clone().labels(DOWNLOAD_SELECTOR);
    let workload = many.clone().labels(WORKLOAD_SELECTOR);
    let mut tasks = vec![
        each(
            ctx,
            namespaced(ctx),
            many.clone(),
            w.templates,
            |c, t, deleted| template_changed(c, TemplateScope::Namespace, &t.metadata, deleted),
        ),
        each(
            ctx,
            cluster(ctx),
            many.clone(),
            w.cluster_templates,
            |c, t, deleted| template_changed(c, TemplateScope::Cluster, &t.metadata, deleted),
        ),
        each(
            ctx,
            namespaced(ctx),
            all.clone(),
            w.models,
            |c, m, deleted| model_changed(c, &m.metadata, deleted),
        ),
        each(
            ctx,
            cluster(ctx),
            all.clone(),
            w.cluster_models,
            |c, m, deleted| model_changed(c, &m.metadata, deleted),
        ),
        each(ctx, namespaced(ctx), all.clone(), w.configs, |c, rc, _| {
            config_changed(c, &rc.metadata)
        }),
        each(
            ctx,
            cluster(ctx),
            all.clone(),
            w.cluster_configs,
            |c, rc, _| config_changed(c, &rc.metadata),
        ),
        node_watch(ctx, many.clone(), w.nodes),
        discovery_job_watch(ctx, discovery.clone(), w.jobs),
        each(ctx, namespaced(ctx), discovery, w.pods, |c, pod, _| {
            wake_template_owner(c, &pod.metadata)
        }),
        // The Job controller's FailedCreate events: a discovery pod refused by quota, admission or a
        // missing service account says so in its template within seconds.
        each(
            ctx,
            namespaced(ctx),
            all.clone().fields(FAILED_CREATE_EVENT_SELECTOR),
            w.job_events,
            |c, ev, deleted| {
                if let Some(job) = involved(&c.stores.jobs, &ev, deleted) {
                    wake_template_owner(c, &job.metadata);
                }
            },
        ),
        // A cache wakes itself, the template of its name (which mirrors its phase, T-27, and makes it
        // again if someone deletes it, T-26) and the services of its namespace (S-05 mounts it).
        each(
            ctx,
            namespaced(ctx),
            all.clone(),
            w.caches,
            |c, cache, deleted| {
                let (ns, name) = (cache.namespace().unwrap_or_default(), cache.name_any());
                if !deleted {
                    c.waker.cache(&ns, &name);
                }
                c.waker.template(TemplateScope::Namespace, Some(&ns), &name);
                wake_services(c, Some(&ns));
            },
        ),
        each(
            ctx,
            namespaced(ctx),
            all.clone().labels(VOLUME_SELECTOR),
            w.cache_volumes,
            |c, pvc, _| wake_caches_of_child(c, &pvc.metadata, pvc.metadata.name.as_deref()),
        ),
        each(
            ctx,
            namespaced(ctx),
            downloads.clone(),
            w.download_jobs,
            |c, job, _| {
                let volume = job.labels().get(aim_api::labels::CACHE_VOLUME).cloned();
                wake_caches_of_child(c, &job.metadata, volume.as_deref());
            },
        ),
        each(
            ctx,
            namespaced(ctx),
            downloads,
            w.download_pods,
            |c, pod, _| {
                // A pod's owner is its Job: the caches are found by the volume it fills.
                let volume = pod.labels().get(aim_api::labels::CACHE_VOLUME).cloned();
                let meta = ObjectMeta {
                    namespace: pod.namespace(),
                    ..Default::default()
                };
                wake_caches_of_child(c, &meta, volume.as_deref());
            },
        ),
        // Why a claim does not bind (the PV controller's events): only for our volumes.
        each(
            ctx,
            namespaced(ctx),
            all.clone().fields(VOLUME_EVENT_SELECTOR),
            w.volume_events,
            |c, ev, deleted| {
                if let Some(v) = involved(&c.stores.cache_volumes, &ev, deleted) {
                    wake_caches_of_child(c, &v.metadata, v.metadata.name.as_deref());
                }
            },
        ),
        each(ctx, namespaced(ctx), many, w.services, |c, s, deleted| {
            if !deleted {
                c.waker
                    .service(&s.namespace().unwrap_or_default(), &s.name_any());
            }
        }),
        // A service's workload wakes the service that owns it.
        each_with(
            ctx,
            namespaced(ctx),
            workload.clone(),
            w.deployments,
            strip_deployment,
            |c, d, _| wake_service_owner(c, &d.metadata),
        ),
        each_with(
            ctx,
            namespaced(ctx),
            workload.clone(),
            w.workload_services,
            strip_service,
            |c, s, _| wake_service_owner(c, &s.metadata),
        ),
        // A pod that cannot be scheduled says why in its service within seconds.
        each_with(
            ctx,
            namespaced(ctx),
            workload,
            w.workload_pods,
            strip_pod,
            |c, p, _| {
                // The full name: the label is shortened for long service names (S-05).
                if let (Some(ns), Some(name)) =
                    (p.namespace(), aim_resolve::service::service_of(&p.metadata))
                {
                    c.waker.service(&ns, name);
                }
            },
        ),
    ];
    tasks.push(position_refresh(ctx.clone()));
    tasks
}

/// A template changed or went: it wakes itself, the model that made it (M-04), the caches that name
/// it (C-01, T-28) and the services that may select it (S-03).
fn template_changed(ctx: &Context, scope: TemplateScope, meta: &ObjectMeta, deleted: bool) {
    let (ns, name) = (
        meta.namespace.as_deref(),
        meta.name.as_deref().unwrap_or_default(),
    );
    if !deleted {
        ctx.waker.template(scope, ns, name);
    }
    let model_owner = meta.owner_references.iter().flatten().find(|o| {
        o.controller == Some(true) && matches!(o.kind.as_str(), "AIMModel" | "AIMClusterModel")
    });
    if let Some(o) = model_owner {
        ctx.waker
            .model(if o.kind == "AIMModel" { ns } else { None }, &o.name);
    }
    for cache in ctx.stores.caches.state() {
        let cache_ns = cache.namespace().unwrap_or_default();
        if template_wakes_cache(scope, ns, name, &cache_ns, &cache.spec.template_name) {
            ctx.waker.cache(&cache_ns, &cache.name_any());
        }
    }
    wake_services(ctx, ns);
}

/// A model changed or went: it wakes itself, the templates that may resolve to it (T-02) and the
/// services of its scope (S-01).
fn model_changed(ctx: &Context, meta: &ObjectMeta, deleted: bool) {
    let changed = Changed::new(
        meta.namespace.as_deref(),
        meta.name.as_deref().unwrap_or_default(),
    );
    if !deleted {
        ctx.waker.model(changed.namespace, changed.name);
    }
    wake_templates(ctx, |scope, ns, spec, _| {
        model_wakes_template(changed, scope, ns, spec)
    });
    wake_services(ctx, changed.namespace);
}

/// A runtime config changed or went: it wakes the templates (T-03, T-04) and caches (C-02) that read
/// it, and the services of its scope, whose workloads carry its env (S-05).
fn config_changed(ctx: &Context, meta: &ObjectMeta) {
    let changed = Changed::new(
        meta.namespace.as_deref(),
        meta.name.as_deref().unwrap_or_default(),
    );
    wake_templates(ctx, |scope, ns, spec, _| {
        config_wakes_template(changed, scope, ns, spec)
    });
    let s = &ctx.stores;
    for cache in s.caches.state() {
        let cache_ns = cache.namespace().unwrap_or_default();
        let template = &cache.spec.template_name;
        let ns_template = s.templates.get(&ObjectRef::new(template).within(&cache_ns));
        let cl_template = s.cluster_templates.get(&ObjectRef::new(template));
        let name = cache_config_name(
            cache.spec.template_scope,
            ns_template.as_deref().map(|t| &t.spec.common),
            cl_template.as_deref().map(|t| &t.spec.common),
        );
        if config_wakes_cache(changed, &cache_ns, name) {
            ctx.waker.cache(&cache_ns, &cache.name_any());
        }
    }
    wake_services(ctx, changed.namespace);
}

/// Wakes every template (of both scopes) that `rule(scope, namespace, spec, status)` names.
fn wake_templates(
    ctx: &Context,
    rule: impl Fn(
        TemplateScope,
        Option<&str>,
        &aim_api::ServiceTemplateCommon,
        Option<&aim_api::ServiceTemplateStatus>,
    ) -> bool,
) {
    for t in ctx.stores.templates.state() {
        let ns = t.namespace();
        if rule(
            TemplateScope::Namespace,
            ns.as_deref(),
            &t.spec.common,
            t.status.as_ref(),
        ) {
            ctx.waker
                .template(TemplateScope::Namespace, ns.as_deref(), &t.name_any());
        }
    }
    for t in ctx.stores.cluster_templates.state() {
        if rule(
            TemplateScope::Cluster,
            None,
            &t.spec.common,
            t.status.as_ref(),
        ) {
            ctx.waker
                .template(TemplateScope::Cluster, None, &t.name_any());
        }
    }
}

/// Wakes the services that read an object of `namespace` (`None`: a cluster-scoped one).
fn wake_services(ctx: &Context, namespace: Option<&str>) {
    for s in ctx.stores.services.state() {
        let ns = s.namespace().unwrap_or_default();
        if wakes_service(namespace, &ns) {
            ctx.waker.service(&ns, &s.name_any());
        }
    }
}

/// The object of `store` a new or changed Event is about.
fn involved<K>(store: &Store<K>, ev: &CoreEvent, deleted: bool) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    let o = &ev.involved_object;
    (!deleted).then(|| {
        store.get(
            &ObjectRef::new(o.name.as_deref().unwrap_or_default())
                .within(o.namespace.as_deref().unwrap_or_default()),
        )
    })?
}

fn wake_template_owner(ctx: &Context, meta: &ObjectMeta) {
    if let Some(t) = owner_of(meta) {
        ctx.waker.template(t.scope, t.namespace.as_deref(), &t.name);
    }
}

fn wake_service_owner(ctx: &Context, meta: &ObjectMeta) {
    let owner = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind == "AIMService");
    if let (Some(o), Some(ns)) = (owner, meta.namespace.as_deref()) {
        ctx.waker.service(ns, &o.name);
    }
}

/// Wakes the caches that own a volume, download Job or pod, or list its volume.
fn wake_caches_of_child(ctx: &Context, meta: &ObjectMeta, volume: Option<&str>) {
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
        let cache: &AIMTemplateCache = &cache;
        let volumes = cache
            .status
            .iter()
            .flat_map(|s| &s.sources)
            .filter_map(|s| s.volume.as_deref());
        if child_wakes_cache(
            ns,
            &owners,
            volume,
            cache.metadata.namespace.as_deref().unwrap_or_default(),
            cache.metadata.uid.as_deref(),
            volumes,
        ) {
            ctx.waker.cache(ns, &cache.name_any());
        }
    }
}

/// T-11: only changes of the GPU inventory wake templates, and only templates that need a GPU. The
/// store, and the copy kept to compare with the next change, hold only the inventory's part of each
/// node.
fn node_watch(ctx: &Arc<Context>, wc: watcher::Config, writer: Writer<Node>) -> JoinHandle<()> {
    let seen: std::sync::Mutex<HashMap<String, Node>> = Default::default();
    each_with(
        ctx,
        cluster(ctx),
        wc,
        writer,
        strip_node,
        move |c, node, deleted| {
            let name = node.name_any();
            let mut seen = seen.lock().expect("nodes lock");
            let changed =
                aim_hardware::alters_gpu_inventory(seen.get(&name), (!deleted).then_some(&node));
            if deleted {
                seen.remove(&name);
            } else {
                seen.insert(name.clone(), node);
            }
            drop(seen);
            if changed {
                tracing::debug!(node = %name, "GPU inventory changed");
                wake_templates(c, |_, _, spec, status| {
                    node_wakes_template(changed, spec, status)
                });
            }
        },
    )
}

/// Discovery Jobs wake their template; a finished or deleted Job frees its slot at once (T-23). After
/// a re-list, slots of Jobs the list did not show are checked with the API server: a Job deleted while
/// the watch was down gave no delete event. (Watching several namespaces, only the first list ends so;
/// a namespace's later re-list deletes the Jobs it no longer shows, which frees their slots.)
fn discovery_job_watch(
    ctx: &Arc<Context>,
    wc: watcher::Config,
    writer: Writer<Job>,
) -> JoinHandle<()> {
    let c = ctx.clone();
    tokio::spawn(
        watch(namespaced(ctx), wc, writer, trim).for_each(move |change| {
            let c = c.clone();
            async move {
                match change {
                    Change::Applied(job) => {
                        let key = job_key(&job);
                        if !job_is_active(&job) {
                            c.release_slot(&key);
                        } else if let Some(owner) = owner_of(&job.metadata) {
                            // T-23: an active Job holding no slot (its create answered with an error
                            // although it was made) counts against the limit from now on.
                            let mut queue = c.queue.lock().expect("queue lock");
                            if !queue.holds(&key) {
                                tracing::warn!(job = %key, "active discovery job without a slot; slot adopted");
                                queue.occupy(&key, &owner.key());
                            }
                        }
                        wake_template_owner(&c, &job.metadata);
                    }
                    Change::Deleted(job) => {
                        c.release_slot(&job_key(&job));
                        wake_template_owner(&c, &job.metadata);
                    }
                    Change::Relisted => verify_unseen_slots(&c).await,
                }
            }
        }),
    )
}

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

/// How often, at most, a waiting template's queue position is rewritten. While a queue drains nearly
/// every waiter's rank changes at each hand-off: `cargo xtask bench discovery` (200 templates, 2 s
/// dry-runs) made 25.6 status writes per template with 2 s.
pub const POSITION_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);
/// How often a few waiters' positions are refreshed (as many as reconciles may run at once).
const POSITION_TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// T-23: waiting templates whose queue position moved are rewritten, each at most every
/// POSITION_REFRESH, never on every hand-off. A few at a time, every POSITION_TICK: woken all at
/// once, a few hundred rewrites filled the controller's queue, which releases what waits in no
/// particular order, and a template just given a slot could wait behind them all.
fn position_refresh(ctx: Arc<Context>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POSITION_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let spacing = (POSITION_REFRESH.as_millis() / POSITION_TICK.as_millis()) as u64;
        let per_tick = usize::from(ctx.settings.max_concurrent_reconciles).max(1);
        loop {
            tick.tick().await;
            let stale = ctx
                .queue
                .lock()
                .expect("queue lock")
                .stale_positions(per_tick, spacing);
            for key in stale {
                ctx.waker.template_key(&key);
            }
        }
    })
}
