//! `cargo xtask bench scale`: many namespace templates with static sources, plus extra fake GPU nodes.
//! Start-up: time from operator start to all Ready (counted by a watch), status and Event writes per
//! template (from the API server's own `apiserver_request_total`), the most TCP connections the operator
//! held to the API server at one instant, its peak RSS and CPU seconds. Idle: the operator restarted
//! over the Ready templates writes nothing, and node updates that touch no GPU label reconcile no
//! template (the operator's own `aim_reconciles_total`).

use super::{AIM_GROUP, Cluster, Operator, Peaks, Requests, Sampler, watch};
use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Options {
    pub templates: usize,
    pub namespaces: usize,
    /// Extra fake GPU nodes.
    pub nodes: usize,
    /// Node updates that touch no GPU label, in the idle phase.
    pub node_updates: usize,
    /// Images in each extra node's `status.images`.
    pub node_images: usize,
    pub operator: PathBuf,
}

/// What one run measured.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    pub templates: usize,
    pub seconds_to_ready: f64,
    pub status_writes_per_template: f64,
    /// Event writes about the templates, per template.
    pub event_writes_per_template: f64,
    /// Every Event write the API server counted meanwhile (models' too).
    pub all_event_writes: f64,
    /// Writes of the template objects themselves (not their status).
    pub template_writes: f64,
    pub peaks: Peaks,
    pub cpu_seconds: f64,
    /// CPU seconds of the API server and etcd while the operator started.
    pub apiserver_cpu_seconds: f64,
    pub etcd_cpu_seconds: f64,
    pub load_before: f64,
    /// Every write counter that moved during start-up.
    pub writes: String,
    /// Idle: after a restart over the Ready templates.
    pub restart_seconds_to_settled: f64,
    pub restart_reconciles: f64,
    pub restart_writes: f64,
    pub restart_event_writes: f64,
    pub restart_peaks: Peaks,
    /// Idle: node updates without GPU labels, and the template reconciles they caused.
    pub node_updates: usize,
    pub node_update_reconciles: f64,
    pub node_update_seconds: f64,
    /// The control: one GPU node added afterwards, and the reconciles and writes it caused.
    pub control_reconciles: f64,
    pub control_writes: f64,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.templates;
        writeln!(
            f,
            "scale: {n} templates (load average {:.2} before)",
            self.load_before
        )?;
        writeln!(
            f,
            "  start-up: all Ready {:.1} s after the operator started",
            self.seconds_to_ready
        )?;
        writeln!(
            f,
            "  status writes per template {:.2}; Event writes per template {:.2} ({:.0} Event writes in all, models' included); template (non-status) writes {:.0}",
            self.status_writes_per_template,
            self.event_writes_per_template,
            self.all_event_writes,
            self.template_writes
        )?;
        writeln!(
            f,
            "  operator: at most {} connections to the API server; peak RSS {:.1} MiB; {:.1} CPU s",
            self.peaks.connections, self.peaks.rss_mib, self.cpu_seconds
        )?;
        writeln!(
            f,
            "  kube-apiserver {:.1} CPU s, etcd {:.1} CPU s meanwhile",
            self.apiserver_cpu_seconds, self.etcd_cpu_seconds
        )?;
        write!(f, "  writes counted by the API server:\n{}", self.writes)?;
        writeln!(
            f,
            "  idle restart: {:.0} template reconciles, settled {:.1} s after start; {:.0} template writes, {:.0} Events from the operator; at most {} connections, peak RSS {:.1} MiB",
            self.restart_reconciles,
            self.restart_seconds_to_settled,
            self.restart_writes,
            self.restart_event_writes,
            self.restart_peaks.connections,
            self.restart_peaks.rss_mib
        )?;
        writeln!(
            f,
            "  idle node updates: {} updates without GPU labels in {:.1} s: {:.0} template reconciles",
            self.node_updates, self.node_update_seconds, self.node_update_reconciles
        )?;
        write!(
            f,
            "  control: one GPU node added: {:.0} template reconciles, {:.0} template writes",
            self.control_reconciles, self.control_writes
        )
    }
}

/// Fails when the operator wrote or reconciled anything while idle, or when the control shows that
/// the reconcile counter would have seen it.
pub fn check(f: &Figures) -> Result<()> {
    anyhow::ensure!(
        f.restart_writes == 0.0 && f.restart_event_writes == 0.0,
        "a restart over Ready templates wrote {} template and {} Event writes",
        f.restart_writes,
        f.restart_event_writes
    );
    anyhow::ensure!(
        f.node_update_reconciles == 0.0,
        "node updates without GPU labels caused {} template reconciles",
        f.node_update_reconciles
    );
    anyhow::ensure!(
        f.control_reconciles >= f.templates as f64 && f.control_writes == 0.0,
        "the control (a GPU node added) caused {} reconciles and {} writes",
        f.control_reconciles,
        f.control_writes
    );
    Ok(())
}

/// Namespaces `<run>-<n>`, one model each, and `templates` static templates spread over them, labelled
/// `bench.aim.test/run=<run>`.
fn populate(cluster: &Cluster, run: &str, templates: usize, namespaces: usize) -> Result<()> {
    let yaml: String = (0..namespaces)
        .map(|n| super::namespace_with_model(&format!("{run}-{n}")))
        .collect();
    cluster.apply(&yaml)?;
    for chunk in (0..templates).collect::<Vec<_>>().chunks(500) {
        let yaml: String = chunk
            .iter()
            .map(|i| {
                super::static_template(
                    run,
                    &format!("{run}-{}", i % namespaces),
                    &format!("t{i}"),
                    &format!("hf://org/model-{i}"),
                )
            })
            .collect();
        cluster.apply(&yaml)?;
    }
    Ok(())
}

/// Event writes (both APIs) among `r`.
fn event_writes(r: &Requests) -> f64 {
    r.writes("events.k8s.io", "events", "") + r.writes("", "events", "")
}

pub fn run(cluster: &Cluster, o: &Options) -> Result<Figures> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let client = rt.block_on(xtask::support::client());
    let api_port = cluster.api_port()?;
    let run = format!("scale-{}", std::process::id());
    eprintln!("creating {} fake GPU nodes", o.nodes);
    cluster.gpu_nodes_with_images(o.nodes, o.node_images)?;
    eprintln!(
        "creating {} templates in {} namespaces {run}-*",
        o.templates, o.namespaces
    );
    populate(cluster, &run, o.templates, o.namespaces)?;
    let seen = watch::templates(&rt, client.clone(), &format!("bench.aim.test/run={run}"));
    let mut figures = Figures {
        templates: o.templates,
        node_updates: o.node_updates,
        load_before: super::load_average(),
        ..Default::default()
    };

    // Start-up.
    let before = cluster.requests()?;
    let cp_before = super::control_plane_cpu();
    let log = super::workdir().join("bench-scale-operator.log");
    let mut op = Operator::start(&o.operator, &[], &log)?;
    let pid = Arc::new(AtomicU32::new(op.pid()));
    let sampler = Sampler::start(pid.clone(), api_port);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        op.check_alive()?;
        if seen.lock().unwrap().ready() >= o.templates {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {} templates Ready after 600 s",
                seen.lock().unwrap().ready(),
                o.templates
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    figures.seconds_to_ready = op.started.elapsed().as_secs_f64();
    // Events are posted after the status write: let the last reconciles finish.
    op.wait_reconciles_settle(Duration::from_secs(2), Duration::from_secs(120))?;
    let after = cluster.requests()?;
    let cp = super::control_plane_cpu_since(&cp_before);
    figures.cpu_seconds = super::cpu_seconds(op.pid());
    figures.peaks = sampler.finish();
    let d = after.since(&before);
    let n = o.templates as f64;
    figures.status_writes_per_template = d.writes(AIM_GROUP, "aimservicetemplates", "status") / n;
    let prefix = format!("{run}-");
    figures.event_writes_per_template =
        rt.block_on(super::template_event_writes(&client, |ns| {
            ns.starts_with(&prefix)
        }))? / n;
    figures.all_event_writes = event_writes(&d);
    figures.template_writes = d.writes(AIM_GROUP, "aimservicetemplates", "");
    figures.writes = d.describe_writes();
    figures.apiserver_cpu_seconds = cp.get("kube-apiserver").copied().unwrap_or(0.0);
    figures.etcd_cpu_seconds = cp.get("etcd").copied().unwrap_or(0.0);
    eprintln!("start-up measured; restarting the operator over the Ready templates");

    // Idle: a restart over the Ready templates.
    op.stop();
    let before = cluster.requests()?;
    let events_before = rt.block_on(super::operator_event_writes(&client))?;
    op.restart()?;
    pid.store(op.pid(), std::sync::atomic::Ordering::Relaxed);
    let sampler = Sampler::start(pid.clone(), api_port);
    op.wait_ready(Duration::from_secs(120))?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while op.template_reconciles().unwrap_or(0.0) < n {
        op.check_alive()?;
        anyhow::ensure!(
            Instant::now() < deadline,
            "the restarted operator did not reconcile every template"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    figures.restart_reconciles =
        op.wait_reconciles_settle(Duration::from_secs(2), Duration::from_secs(120))?;
    figures.restart_seconds_to_settled = op.started.elapsed().as_secs_f64() - 2.0;
    figures.restart_peaks = sampler.finish();
    let d = cluster.requests()?.since(&before);
    figures.restart_writes = d.all_writes(AIM_GROUP, "aimservicetemplates");
    figures.restart_event_writes =
        rt.block_on(super::operator_event_writes(&client))? - events_before;

    // Idle: node updates that touch no GPU label.
    let nodes: Api<Node> = Api::all(client.clone());
    let names: Vec<String> = if o.nodes > 0 {
        (0..o.nodes).map(|i| format!("bench-gpu-{i}")).collect()
    } else {
        ["mi300x-0", "mi300x-1", "mi325x-0", "cpu-0"]
            .map(String::from)
            .to_vec()
    };
    let r0 = op.template_reconciles().unwrap_or(0.0);
    let started = Instant::now();
    rt.block_on(touch_nodes(&nodes, &names, o.node_updates))?;
    figures.node_update_seconds = started.elapsed().as_secs_f64();
    let r1 = op.wait_reconciles_settle(Duration::from_secs(3), Duration::from_secs(60))?;
    figures.node_update_reconciles = r1 - r0;

    // The control: a GPU node added does wake the templates (and changes none of them).
    let before = cluster.requests()?;
    cluster.apply(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: bench-gpu-control\n\
         \x20 annotations:\n    kwok.x-k8s.io/node: fake\n\
         \x20 labels:\n    type: kwok\n    bench.aim.test/node: \"true\"\n    amd.com/gpu.device-id: \"74a1\"\n\
         status:\n  allocatable: {amd.com/gpu: \"8\", cpu: \"64\", memory: 512Gi, pods: \"110\"}\n",
    )?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while op.template_reconciles().unwrap_or(0.0) < r1 + n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let r2 = op.wait_reconciles_settle(Duration::from_secs(2), Duration::from_secs(120))?;
    figures.control_reconciles = r2 - r1;
    figures.control_writes = cluster
        .requests()?
        .since(&before)
        .all_writes(AIM_GROUP, "aimservicetemplates");
    op.stop();
    cluster.clean_up((0..o.namespaces).map(|n| format!("{run}-{n}")));
    Ok(figures)
}

/// `updates` merge patches of a label no GPU inventory reads (`bench.aim.test/touch`), round-robin
/// over `names`, eight at a time.
async fn touch_nodes(api: &Api<Node>, names: &[String], updates: usize) -> Result<()> {
    use futures::StreamExt;
    let results: Vec<Result<Node, kube::Error>> = futures::stream::iter(0..updates)
        .map(|i| {
            let name = &names[i % names.len()];
            let patch = serde_json::json!({"metadata": {"labels": {"bench.aim.test/touch": i.to_string()}}});
            async move {
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(())
}
