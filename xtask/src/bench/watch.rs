//! What the benchmarks watch: templates (phase, queue position, when each became Ready), discovery
//! Jobs (how many are active at once, in all and per template, and in which order they were created)
//! and services (a store of them).
//! All three survive re-lists (an API server restart): a re-list replaces what was known, so a Job
//! deleted while the watch was down does not stay counted.

use aim_api::{AIMService, AIMServiceTemplate, ServicePhase, TemplatePhase};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One template as last seen.
#[derive(Debug, Clone, Default)]
pub struct SeenTemplate {
    pub phase: Option<TemplatePhase>,
    pub queue_position: Option<i32>,
    /// When the watch first saw it Ready.
    pub ready_at: Option<Instant>,
}

/// Templates by `namespace/name`.
#[derive(Debug, Default)]
pub struct Templates {
    pub by_key: HashMap<String, SeenTemplate>,
    /// Events received (adds and updates, re-lists included).
    pub events: u64,
    relisting: Option<HashMap<String, SeenTemplate>>,
}

impl Templates {
    pub fn ready(&self) -> usize {
        self.by_key
            .values()
            .filter(|t| t.phase == Some(TemplatePhase::Ready))
            .count()
    }

    fn seen(&mut self, t: &AIMServiceTemplate, relist: bool) {
        self.events += 1;
        let key = format!(
            "{}/{}",
            t.metadata.namespace.as_deref().unwrap_or_default(),
            t.metadata.name.as_deref().unwrap_or_default()
        );
        let status = t.status.as_ref();
        let phase = status.map(|s| s.status);
        let before = self.by_key.get(&key).and_then(|s| s.ready_at);
        let ready_at = match phase {
            Some(TemplatePhase::Ready) => before.or_else(|| Some(Instant::now())),
            _ => None,
        };
        let seen = SeenTemplate {
            phase,
            queue_position: status
                .and_then(|s| s.discovery.as_ref())
                .and_then(|d| d.queue_position),
            ready_at,
        };
        match (&mut self.relisting, relist) {
            (Some(next), true) => {
                next.insert(key, seen);
            }
            _ => {
                self.by_key.insert(key, seen);
            }
        }
    }
}

/// Watches the templates labelled `selector` in every namespace, on `rt`.
pub fn templates(
    rt: &tokio::runtime::Runtime,
    client: kube::Client,
    selector: &str,
) -> Arc<Mutex<Templates>> {
    let state = Arc::new(Mutex::new(Templates::default()));
    let s = state.clone();
    let api: Api<AIMServiceTemplate> = Api::all(client);
    let cfg = watcher::Config::default().labels(selector).any_semantic();
    rt.spawn(async move {
        let mut stream = std::pin::pin!(watcher(api, cfg).default_backoff());
        loop {
            match stream.try_next().await {
                Ok(Some(ev)) => {
                    let mut w = s.lock().unwrap();
                    match ev {
                        watcher::Event::Init => w.relisting = Some(HashMap::new()),
                        watcher::Event::InitApply(t) => w.seen(&t, true),
                        watcher::Event::InitDone => {
                            if let Some(next) = w.relisting.take() {
                                // Keep when each was first seen Ready.
                                let old = std::mem::replace(&mut w.by_key, next);
                                for (k, t) in w.by_key.iter_mut() {
                                    if t.ready_at.is_some()
                                        && let Some(at) = old.get(k).and_then(|o| o.ready_at)
                                    {
                                        t.ready_at = Some(at);
                                    }
                                }
                            }
                        }
                        watcher::Event::Apply(t) => w.seen(&t, false),
                        watcher::Event::Delete(t) => {
                            w.by_key.remove(&format!(
                                "{}/{}",
                                t.metadata.namespace.as_deref().unwrap_or_default(),
                                t.metadata.name.as_deref().unwrap_or_default()
                            ));
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => {} // retried with backoff
            }
        }
    });
    state
}

/// Discovery Jobs as seen by a watch.
#[derive(Debug, Default)]
pub struct Jobs {
    /// Active Jobs (`namespace/name`) → their template (`namespace/name`).
    pub active: BTreeMap<String, String>,
    /// The most active at one instant.
    pub max_active: usize,
    /// The most active at one instant for one template, and which.
    pub max_per_template: (usize, String),
    /// Templates in the order their first Job was seen (the order slots were handed out), and when.
    pub first_job_order: Vec<(String, std::time::Instant)>,
    /// Every Job ever seen (`namespace/name`), and the templates that had one.
    pub created: BTreeSet<String>,
    pub templates_with_job: BTreeSet<String>,
    relisting: Option<BTreeMap<String, String>>,
}

fn job_key(j: &Job) -> String {
    format!(
        "{}/{}",
        j.metadata.namespace.as_deref().unwrap_or_default(),
        j.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Its controlling template (`namespace/name`), from the owner reference.
fn template_of(j: &Job) -> Option<String> {
    let owner = j
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == "AIMServiceTemplate")?;
    Some(format!(
        "{}/{}",
        j.metadata.namespace.as_deref().unwrap_or_default(),
        owner.name
    ))
}

impl Jobs {
    fn seen(&mut self, j: &Job, relist: bool) {
        let key = job_key(j);
        let Some(template) = template_of(j) else {
            return;
        };
        if self.created.insert(key.clone()) && self.templates_with_job.insert(template.clone()) {
            self.first_job_order
                .push((template.clone(), std::time::Instant::now()));
        }
        let active = match (&mut self.relisting, relist) {
            (Some(next), true) => next,
            _ => &mut self.active,
        };
        if aim_resolve::children::job_is_active(j) {
            active.insert(key, template);
        } else {
            active.remove(&key);
        }
        self.count();
    }

    fn count(&mut self) {
        self.max_active = self.max_active.max(self.active.len());
        let mut per: HashMap<&str, usize> = HashMap::new();
        for t in self.active.values() {
            *per.entry(t).or_default() += 1;
        }
        if let Some((t, n)) = per.into_iter().max_by_key(|(_, n)| *n)
            && n > self.max_per_template.0
        {
            self.max_per_template = (n, t.to_string());
        }
    }
}

/// Watches the discovery Jobs in every namespace, on `rt`.
pub fn jobs(rt: &tokio::runtime::Runtime, client: kube::Client) -> Arc<Mutex<Jobs>> {
    let state = Arc::new(Mutex::new(Jobs::default()));
    let s = state.clone();
    let api: Api<Job> = Api::all(client);
    let cfg = watcher::Config::default()
        .labels("app.kubernetes.io/component=discovery")
        .any_semantic();
    rt.spawn(async move {
        let mut stream = std::pin::pin!(watcher(api, cfg).default_backoff());
        loop {
            match stream.try_next().await {
                Ok(Some(ev)) => {
                    let mut w = s.lock().unwrap();
                    match ev {
                        watcher::Event::Init => w.relisting = Some(BTreeMap::new()),
                        watcher::Event::InitApply(j) => w.seen(&j, true),
                        watcher::Event::InitDone => {
                            if let Some(next) = w.relisting.take() {
                                w.active = next;
                                w.count();
                            }
                        }
                        watcher::Event::Apply(j) => w.seen(&j, false),
                        watcher::Event::Delete(j) => {
                            w.active.remove(&job_key(&j));
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => {}
            }
        }
    });
    state
}

/// A store of the services labelled `selector` in every namespace, kept by a watch on `rt`; returns once
/// it holds the first list.
pub fn services(
    rt: &tokio::runtime::Runtime,
    client: kube::Client,
    selector: &str,
) -> anyhow::Result<Store<AIMService>> {
    let (reader, writer) = reflector::store();
    let cfg = watcher::Config::default().labels(selector).any_semantic();
    let stream = reflector::reflector(writer, watcher(Api::<AIMService>::all(client), cfg))
        .default_backoff();
    rt.spawn(stream.for_each(|_| async {})); // errors are retried with backoff
    rt.block_on(reader.wait_until_ready())?;
    Ok(reader)
}

/// How many services of `store` are Running.
pub fn running(store: &Store<AIMService>) -> usize {
    store
        .state()
        .iter()
        .filter(|s| {
            s.status
                .as_ref()
                .is_some_and(|st| st.status == ServicePhase::Running)
        })
        .count()
}
