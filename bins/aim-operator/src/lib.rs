//! The AIM operator: watches templates and what they depend on, asks `aim-resolve` what must be, and
//! makes it so (status, discovery Jobs, events). All I/O of the project lives here.

mod caches;
mod client;
mod context;
mod error;
mod events;
mod kinds;
mod leader;
mod logs;
mod metrics;
mod models;
mod reconcile;
mod registry;
mod services;
mod watches;

pub use client::http2_client;
pub use error::Error;
pub use leader::LeaderElection;
pub use registry::RegistrySettings;

use aim_api::{
    AIMClusterModel, AIMClusterServiceTemplate, AIMModel, AIMServiceTemplate, AIMTemplateCache,
    TemplateScope,
};
use aim_resolve::children::TemplateRef;
use context::Context;
use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use std::future::Future;
use std::time::Duration;

/// Makes ring the process's TLS provider (registry reads use it; the API client brings its own).
/// Call once at start; later calls do nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Field manager of every write.
pub const FIELD_MANAGER: &str = "aim-operator";

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where cluster templates run discovery (`--system-namespace`).
    pub system_namespace: String,
    /// Cluster-wide limit of active discovery Jobs (T-23).
    pub max_concurrent_discoveries: usize,
    /// Byte limit when reading a dry-run log (T-17).
    pub log_limit: usize,
    /// First retry delay after a failed discovery; doubles per attempt up to an hour (T-21).
    pub backoff_base: Duration,
    /// Reconciles running at once, per template kind (`--max-concurrent-reconciles`).
    pub max_concurrent_reconciles: u16,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (`--metrics-bind-address`); `None`: not served.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Leader election on the Lease `aim-operator` in the system namespace; `None`: this process leads.
    pub leader_election: Option<LeaderElection>,
    /// How image registries are reached (M-01).
    pub registry: RegistrySettings,
    /// Image of cache download Jobs (`--cache-download-image`).
    pub cache_download_image: String,
}

/// Default of [`Settings::max_concurrent_reconciles`]: enough to keep a 2-core API server busy, few
/// enough that a start with thousands of templates does not queue thousands of requests at once.
pub const DEFAULT_MAX_CONCURRENT_RECONCILES: u16 = 8;

impl Default for Settings {
    fn default() -> Self {
        Self {
            system_namespace: "aim-system".into(),
            max_concurrent_discoveries: aim_resolve::queue::DEFAULT_MAX_CONCURRENT_DISCOVERIES,
            log_limit: aim_discovery::DEFAULT_LOG_LIMIT,
            backoff_base: aim_resolve::template::DEFAULT_BACKOFF_BASE,
            max_concurrent_reconciles: DEFAULT_MAX_CONCURRENT_RECONCILES,
            metrics_address: None,
            leader_election: None,
            registry: RegistrySettings::default(),
            cache_download_image: aim_resolve::cache::DEFAULT_DOWNLOAD_IMAGE.into(),
        }
    }
}

/// Runs the template controllers until `shutdown` completes.
pub async fn run(
    client: Client,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // One request before anything runs concurrently: the client negotiates HTTP/2 on its first
    // connection, and requests started before that connection is up would each open one of their own
    // (15 connections at the start of `cargo xtask bench scale` without this; 1 with it).
    match client.apiserver_version().await {
        Ok(v) => tracing::info!(version = %v.git_version, "API server reached"),
        Err(e) => tracing::warn!(error = %e, "API server not reached yet; the watches retry"),
    }
    // Lists of 100 rather than kube's 500: each page is held twice while it is read (the text, then
    // every object with its managed fields) next to the store being filled. A restart over 5,000 Ready
    // templates peaked at 83.5 MiB RSS with pages of 500; the 50 requests instead of 10 cost nothing
    // noticeable.
    let wc = watcher::Config::default().any_semantic().page_size(100);
    let config = kube::runtime::controller::Config::default()
        .debounce(Duration::from_millis(100))
        .concurrency(settings.max_concurrent_reconciles.max(1));
    // The template controllers' own watches also report each change, once their store holds it, so that
    // the caches of a template are woken (C-01, T-28).
    let (template_changes, template_changes_rx) = futures::channel::mpsc::unbounded();
    let (ns_store, ns_stream) = template_watch::<AIMServiceTemplate>(
        Api::all(client.clone()),
        wc.clone(),
        TemplateScope::Namespace,
        template_changes.clone(),
    );
    let ns_ctrl = Controller::for_stream(ns_stream, ns_store).with_config(config.clone());
    let (cl_store, cl_stream) = template_watch::<AIMClusterServiceTemplate>(
        Api::all(client.clone()),
        wc,
        TemplateScope::Cluster,
        template_changes,
    );
    let cl_ctrl = Controller::for_stream(cl_stream, cl_store).with_config(config.clone());
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let waiter = tokio::spawn(async move {
        shutdown.await;
        let _ = shutdown_tx.send(true);
    });
    // Health and metrics answer while the watches sync (/readyz says not ready until then).
    let shared: metrics::Shared = Default::default();
    let server = settings.metrics_address.map(|addr| {
        let stop = stop(shutdown_rx.clone());
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(addr, shared, stop).await {
                tracing::error!(%addr, error = %e, "cannot serve metrics");
            }
        })
    });
    // O-01: only the leader runs controllers; a standby watches nothing but the Lease.
    let leadership = match settings.leader_election.clone() {
        None => None,
        Some(election) => {
            let standby = shared.clone();
            let acquired = leader::acquire(
                client.clone(),
                &settings.system_namespace,
                &election,
                stop(shutdown_rx.clone()),
                move || {
                    standby
                        .standby
                        .store(true, std::sync::atomic::Ordering::Relaxed)
                },
            )
            .await?;
            match acquired {
                Some(l) => Some(l),
                None => {
                    // Asked to stop while standing by.
                    waiter.abort();
                    if let Some(server) = server {
                        server.abort();
                    }
                    return Ok(());
                }
            }
        }
    };
    shared
        .standby
        .store(false, std::sync::atomic::Ordering::Relaxed);
    // Slots are rebuilt from the Jobs that exist now, after leadership was gained (T-23).
    let (ctx, triggers) = Context::start(
        client,
        settings,
        ns_ctrl.store(),
        cl_ctrl.store(),
        template_changes_rx,
    )
    .await?;
    let _ = shared.ctx.set(ctx.clone());
    ctx.metrics
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        active = ctx.queue.lock().expect("queue lock").active(),
        "stores synced; discovery slots rebuilt from running jobs"
    );
    let ns = ns_ctrl
        .reconcile_on(triggers.namespaced)
        .graceful_shutdown_on(stop(shutdown_rx.clone()))
        .run(
            reconcile::reconcile::<AIMServiceTemplate>,
            reconcile::error_policy::<AIMServiceTemplate>,
            ctx.clone(),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "namespace template reconcile");
            }
        });
    let cl = cl_ctrl
        .reconcile_on(triggers.cluster)
        .graceful_shutdown_on(stop(shutdown_rx.clone()))
        .run(
            reconcile::reconcile::<AIMClusterServiceTemplate>,
            reconcile::error_policy::<AIMClusterServiceTemplate>,
            ctx.clone(),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "cluster template reconcile");
            }
        });
    // M-01…M-04: models, driven by the model watches (their own changes) and by the templates they made.
    let models = Controller::for_stream(
        futures::stream::pending::<Result<AIMModel, watcher::Error>>(),
        ctx.stores.models.clone(),
    )
    .with_config(config.clone())
    .reconcile_on(triggers.models)
    .graceful_shutdown_on(stop(shutdown_rx.clone()))
    .run(
        models::reconcile::<AIMModel>,
        models::error_policy::<AIMModel>,
        ctx.clone(),
    )
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %e, "model reconcile");
        }
    });
    let cluster_models = Controller::for_stream(
        futures::stream::pending::<Result<AIMClusterModel, watcher::Error>>(),
        ctx.stores.cluster_models.clone(),
    )
    .with_config(config.clone())
    .reconcile_on(triggers.cluster_models)
    .graceful_shutdown_on(stop(shutdown_rx.clone()))
    .run(
        models::reconcile::<AIMClusterModel>,
        models::error_policy::<AIMClusterModel>,
        ctx.clone(),
    )
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %e, "cluster model reconcile");
        }
    });
    // C-01…C-03: template caches, driven by their watch and by what they make (see watches.rs).
    let caches = Controller::for_stream(
        futures::stream::pending::<Result<AIMTemplateCache, watcher::Error>>(),
        ctx.stores.caches.clone(),
    )
    .with_config(config.clone())
    .reconcile_on(triggers.caches)
    .graceful_shutdown_on(stop(shutdown_rx.clone()))
    .run(caches::reconcile, caches::error_policy, ctx.clone())
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %e, "template cache reconcile");
        }
    });
    // S-01…S-06: services.
    let services = services::run(
        services::controller(ctx.client.clone(), config),
        ctx.clone(),
        stop(shutdown_rx.clone()),
    );
    let controllers = async {
        futures::join!(ns, cl, models, cluster_models, caches, services);
    };
    let result = match leadership {
        None => {
            controllers.await;
            Ok(())
        }
        Some(mut leadership) => {
            tokio::select! {
                _ = controllers => {
                    // O-04: stopped on request; hand the lease over at once.
                    leadership.release().await;
                    Ok(())
                }
                _ = leadership.lost() => {
                    tracing::error!("lost the lease; stopping (a restart waits as a standby)");
                    Err(anyhow::anyhow!("lost leadership"))
                }
            }
        }
    };
    waiter.abort();
    if let Some(server) = server {
        server.abort();
    }
    ctx.stop();
    result
}

/// The watch of a template kind, as `Controller::new` makes it (a reflector feeding the controller's
/// store), that also sends the template of every change and deletion to `changes` after the store took
/// it: whoever reads the store then sees the change.
fn template_watch<K>(
    api: Api<K>,
    wc: watcher::Config,
    scope: TemplateScope,
    changes: futures::channel::mpsc::UnboundedSender<TemplateRef>,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    // Managed fields (and kubectl's copy of the last applied object) are dropped before the store
    // keeps a template: nothing reads them, and they are a large part of each object (5,000
    // templates: peak RSS 159 MiB with them). The backoff keeps an unreachable API server from being retried in a tight loop.
    let stream = reflector::reflector(
        writer,
        watcher(api, wc).default_backoff().modify(watches::trim),
    )
    .inspect(move |event| {
        if let Ok(
            watcher::Event::Apply(t) | watcher::Event::InitApply(t) | watcher::Event::Delete(t),
        ) = event
        {
            let _ = changes.unbounded_send(TemplateRef::new(
                scope,
                t.namespace().as_deref(),
                &t.name_any(),
            ));
        }
    })
    .applied_objects();
    (store, stream)
}
