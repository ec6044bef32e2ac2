//! The AIM operator: watches templates, models, caches, services and what they depend on, asks
//! `aim-resolve` what must be, and makes it so (status, children, events). All I/O of the project
//! lives here.
//!
//! Four controllers (templates of both scopes, models of both kinds, template caches, services) run on
//! one skeleton ([`controller`]): shared stores and wakers ([`stores`], filled and routed by
//! [`watches`]), one status writer, one event path, one retry policy.

mod caches;
mod client;
mod context;
mod controller;
mod error;
mod events;
mod http;
mod kinds;
mod leader;
mod logs;
mod metrics;
mod models;
mod multi;
mod registry;
mod services;
mod settings;
mod stores;
mod templates;
mod watches;

pub use client::{FIELD_MANAGER, http2_client};
pub use error::Error;
pub use leader::{DEFAULT_LEASE_DURATION_SECONDS, LeaderElection};
pub use registry::RegistrySettings;
pub use settings::{
    DEFAULT_MAX_CONCURRENT_RECONCILES, DEFAULT_METRICS_BIND_ADDRESS, DEFAULT_SYSTEM_NAMESPACE,
    Settings, parse_watch_namespaces,
};

use aim_api::{AIMClusterModel, AIMClusterServiceTemplate, AIMModel, AIMServiceTemplate};
use aim_resolve::children::{job_is_active, job_key, owner_of};
use context::Context;
use kube::Client;
use std::future::Future;
use std::sync::Arc;

/// Makes ring the process's TLS provider (registry reads use it; the API client brings its own).
/// Call once at start; later calls do nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Runs the controllers until `shutdown` completes.
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
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let stop = move || {
        let mut rx = shutdown_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let waiter = tokio::spawn(async move {
        shutdown.await;
        let _ = shutdown_tx.send(true);
    });
    // Health and metrics answer while the watches sync (/readyz says not ready until then).
    let shared: http::Shared = Default::default();
    let server = settings.metrics_address.map(|addr| {
        let (stop, shared) = (stop(), shared.clone());
        tokio::spawn(async move {
            if let Err(e) = http::serve(addr, shared, stop).await {
                tracing::error!(%addr, error = %e, "cannot serve metrics");
            }
        })
    });
    let abort = || {
        waiter.abort();
        if let Some(server) = &server {
            server.abort();
        }
    };
    // O-01: only the leader runs controllers; a standby watches nothing but the Lease.
    let leadership = match settings.leader_election.clone() {
        None => None,
        Some(election) => {
            let standby = shared.clone();
            let acquired = leader::acquire(
                client.clone(),
                &settings.system_namespace,
                &election,
                stop(),
                move || {
                    standby
                        .standby
                        .store(true, std::sync::atomic::Ordering::Relaxed)
                },
            )
            .await;
            match acquired {
                Ok(Some(l)) => Some(l),
                Ok(None) => {
                    // Asked to stop while standing by.
                    abort();
                    return Ok(());
                }
                Err(e) => {
                    // E.g. the system namespace does not exist: the error says what to do.
                    abort();
                    return Err(e);
                }
            }
        }
    };
    shared
        .standby
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let (ctx, triggers) = match start(client, settings).await {
        Ok(started) => started,
        Err(e) => {
            // Give the lease back rather than hold it, idle, until it expires.
            if let Some(leadership) = leadership {
                leadership.release().await;
            }
            abort();
            return Err(e);
        }
    };
    let _ = shared.ctx.set(ctx.clone());
    ctx.metrics
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        active = ctx.queue.lock().expect("queue lock").active(),
        "stores synced; discovery slots rebuilt from running jobs"
    );
    // Every controller on the one skeleton: its store, its wake channel, its reconcile.
    macro_rules! controller {
        ($kind:ident, $reconcile:expr) => {
            controller::run(
                ctx.clone(),
                ctx.stores.$kind.clone(),
                triggers.$kind,
                stop(),
                $reconcile,
            )
        };
    }
    let controllers = async {
        futures::join!(
            // T-01…T-32: templates of both scopes.
            controller!(templates, templates::reconcile::<AIMServiceTemplate>),
            controller!(
                cluster_templates,
                templates::reconcile::<AIMClusterServiceTemplate>
            ),
            // M-01…M-04: models of both kinds.
            controller!(models, models::reconcile::<AIMModel>),
            controller!(cluster_models, models::reconcile::<AIMClusterModel>),
            // C-01…C-03: template caches.
            controller!(caches, caches::reconcile),
            // S-01…S-06: services.
            controller!(services, services::reconcile),
        );
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
    abort();
    ctx.stop();
    result
}

/// Starts every watch, waits until all stores are synced, and rebuilds the discovery slots from the
/// Jobs that are running (T-23) before any controller may create one.
async fn start(
    client: Client,
    settings: Settings,
) -> anyhow::Result<(Arc<Context>, stores::Triggers)> {
    let (stores, writers) = stores::stores();
    let (waker, triggers) = stores::wakers();
    let ctx = Arc::new(Context::new(client, settings, stores, waker));
    ctx.keep(watches::spawn(&ctx, writers));
    ctx.stores.wait_until_ready().await?;
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
    Ok((ctx, triggers))
}
