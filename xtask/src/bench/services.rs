//! `cargo xtask bench services`: many AIMServices, each with one replica, over one static template per
//! namespace, on enough fake 8-GPU nodes for every inference pod. Start-up: time from operator start to
//! all Running, status, Deployment and Service writes per service, the GET and LIST requests the
//! services cost (all from the API server's own `apiserver_request_total`), connections, peak RSS, CPU.
//! Idle: once everything settled, a window in which the operator must write nothing; then a restart over
//! the Running services, which must write nothing either.
//!
//! The API server's counters do not say who made a request. Writes of every kind are counted except
//! those the control plane makes on its own while nothing changes (leases, node heartbeats) and Events,
//! of which the operator's are counted from the stored Event objects instead. The operator runs without
//! leader election, so it writes no lease.

use super::{AIM_GROUP, Cluster, Operator, Peaks, RequestKey, Requests, Sampler, is_write, watch};
use anyhow::{Result, bail};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Options {
    pub services: usize,
    pub namespaces: usize,
    /// Extra fake 8-GPU MI300X nodes.
    pub nodes: usize,
    /// The idle window after start-up.
    pub idle: Duration,
    pub operator: PathBuf,
    /// How long start-up may take until every service is Running.
    pub timeout: Duration,
}

impl Options {
    /// `services` over `namespaces`; `nodes` defaults to enough for every inference pod (one GPU each).
    pub fn new(
        services: usize,
        namespaces: usize,
        nodes: Option<usize>,
        idle_seconds: u64,
        operator: PathBuf,
    ) -> Self {
        Self {
            services,
            namespaces: namespaces.max(1),
            nodes: nodes.unwrap_or(services.div_ceil(8)),
            idle: Duration::from_secs(idle_seconds),
            operator,
            timeout: Duration::from_secs(1200),
        }
    }
}

/// GET and LIST requests of one phase.
#[derive(Debug, Default, Clone)]
pub struct Reads {
    pub deployment_gets: f64,
    pub service_gets: f64,
    pub pod_lists: f64,
    /// Every GET and LIST counter of a resource that moved, with the count per service.
    pub table: String,
}

impl Reads {
    fn of(d: &Requests, n: f64) -> Self {
        let verb = |group: &'static str, resource: &'static str, verb: &'static str| {
            d.sum(|(g, r, s, v)| g == group && r == resource && s.is_empty() && v == verb)
        };
        Self {
            deployment_gets: verb("apps", "deployments", "GET"),
            service_gets: verb("", "services", "GET"),
            pod_lists: verb("", "pods", "LIST"),
            table: d.describe(
                |(_, r, _, v)| !r.is_empty() && (v == "GET" || v == "LIST"),
                Some(n),
            ),
        }
    }
}

/// Writes the operator could have made (see the module's note) and Events it reported, in one phase.
#[derive(Debug, Default, Clone)]
pub struct IdleWrites {
    pub writes: f64,
    pub event_writes: f64,
    pub reconciles: f64,
    /// The counters behind `writes`, and those left out as the control plane's own.
    pub table: String,
    pub left_out: String,
}

impl IdleWrites {
    fn of(d: &Requests, event_writes: f64, reconciles: f64) -> Self {
        let counted = |k: &RequestKey| is_write(&k.3) && !control_plane_own(k);
        Self {
            writes: d.sum(counted),
            event_writes,
            reconciles,
            table: d.describe(counted, None),
            left_out: d.describe(|k| is_write(&k.3) && control_plane_own(k), None),
        }
    }
}

/// Writes the control plane makes while nothing changes (leader-election and node leases, node
/// heartbeats), and Events (anyone's; the operator's are counted from the stored objects).
fn control_plane_own((g, r, _, _): &RequestKey) -> bool {
    (g == "coordination.k8s.io" && r == "leases") || (g.is_empty() && r == "nodes") || r == "events"
}

/// What one run measured.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    pub services: usize,
    pub namespaces: usize,
    pub nodes: usize,
    pub load_before: f64,
    pub seconds_to_running: f64,
    /// When half, and nine in ten, of them were Running.
    pub seconds_to_half: f64,
    pub seconds_to_90: f64,
    /// Running at the end of start-up, and after the restart.
    pub running: usize,
    pub running_after_restart: usize,
    pub service_reconciles: f64,
    pub status_writes_per_service: f64,
    /// Writes of the Deployment and Service objects (not their status, which the control plane writes).
    pub deployment_writes_per_service: f64,
    pub service_writes_per_service: f64,
    pub reads: Reads,
    pub peaks: Peaks,
    pub cpu_seconds: f64,
    /// CPU seconds of each control plane process during start-up.
    pub control_plane_cpu: std::collections::BTreeMap<String, f64>,
    /// Every write counter that moved during start-up.
    pub writes: String,
    pub idle_seconds: f64,
    pub idle: IdleWrites,
    pub restart_seconds_to_settled: f64,
    pub restart: IdleWrites,
    pub restart_reads: Reads,
    pub restart_peaks: Peaks,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.services as f64;
        writeln!(
            f,
            "services: {} services in {} namespaces, {} extra 8-GPU nodes (load average {:.2} before)",
            self.services, self.namespaces, self.nodes, self.load_before
        )?;
        writeln!(
            f,
            "  start-up: {} of {} Running {:.1} s after the operator started (half at {:.1} s, 90 % at {:.1} s); {:.2} service reconciles per service",
            self.running,
            self.services,
            self.seconds_to_running,
            self.seconds_to_half,
            self.seconds_to_90,
            self.service_reconciles / n
        )?;
        writeln!(
            f,
            "  per service: status writes {:.2}; Deployment writes {:.2}; Service writes {:.2}",
            self.status_writes_per_service,
            self.deployment_writes_per_service,
            self.service_writes_per_service
        )?;
        writeln!(
            f,
            "  per service: Deployment GETs {:.2}, Service GETs {:.2}, pod LISTs {:.2}",
            self.reads.deployment_gets / n,
            self.reads.service_gets / n,
            self.reads.pod_lists / n
        )?;
        writeln!(
            f,
            "  operator: at most {} connections to the API server; peak RSS {:.1} MiB; {:.1} CPU s",
            self.peaks.connections, self.peaks.rss_mib, self.cpu_seconds
        )?;
        let cp: Vec<String> = self
            .control_plane_cpu
            .iter()
            .map(|(name, s)| format!("{name} {s:.1} s"))
            .collect();
        writeln!(f, "  control plane CPU meanwhile: {}", cp.join(", "))?;
        write!(f, "  writes counted by the API server:\n{}", self.writes)?;
        write!(
            f,
            "  GETs and LISTs counted by the API server:\n{}",
            self.reads.table
        )?;
        writeln!(
            f,
            "  idle {:.1} s: {:.0} writes, {:.0} Events from the operator, {:.0} reconciles",
            self.idle_seconds, self.idle.writes, self.idle.event_writes, self.idle.reconciles
        )?;
        write!(f, "{}", or_none(&self.idle.table))?;
        write!(
            f,
            "  left out as the control plane's own:\n{}",
            or_none(&self.idle.left_out)
        )?;
        writeln!(
            f,
            "  restart over the Running services: settled {:.1} s after start, {:.0} reconciles; {:.0} writes, {:.0} Events from the operator; {} Running; at most {} connections, peak RSS {:.1} MiB",
            self.restart_seconds_to_settled,
            self.restart.reconciles,
            self.restart.writes,
            self.restart.event_writes,
            self.running_after_restart,
            self.restart_peaks.connections,
            self.restart_peaks.rss_mib
        )?;
        write!(f, "{}", or_none(&self.restart.table))?;
        writeln!(
            f,
            "  after the restart, per service: Deployment GETs {:.2}, Service GETs {:.2}, pod LISTs {:.2}",
            self.restart_reads.deployment_gets / n,
            self.restart_reads.service_gets / n,
            self.restart_reads.pod_lists / n
        )?;
        write!(f, "{}", self.restart_reads.table)
    }
}

/// A table of counters, or a line saying there is none.
fn or_none(table: &str) -> &str {
    if table.is_empty() {
        "    (none)\n"
    } else {
        table
    }
}

/// Fails unless every service ran (and still runs after the restart) and the operator wrote nothing
/// while idle and after its restart.
pub fn check(f: &Figures) -> Result<()> {
    anyhow::ensure!(
        f.running == f.services && f.running_after_restart == f.services,
        "{} of {} services Running at start-up, {} after the restart",
        f.running,
        f.services,
        f.running_after_restart
    );
    anyhow::ensure!(
        f.idle.writes == 0.0 && f.idle.event_writes == 0.0,
        "while idle: {} writes and {} Events:\n{}",
        f.idle.writes,
        f.idle.event_writes,
        f.idle.table
    );
    anyhow::ensure!(
        f.restart.writes == 0.0 && f.restart.event_writes == 0.0,
        "a restart over Running services: {} writes and {} Events:\n{}",
        f.restart.writes,
        f.restart.event_writes,
        f.restart.table
    );
    Ok(())
}

/// Namespaces `<run>-<n>`, each with model `m` and one static template `t`, and `services` services
/// `s<i>` of model `m` with one replica spread over them, labelled `bench.aim.test/run=<run>`.
fn populate(cluster: &Cluster, run: &str, o: &Options) -> Result<()> {
    // The API server's own service range (kube-apiserver's default 10.0.0.0/24) holds 254 addresses: a
    // second range, for the Services of the inference workloads.
    cluster.apply(
        "apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata:\n  name: bench-services\n\
         spec:\n  cidrs: [10.128.0.0/16]\n",
    )?;
    let out = cluster
        .kubectl()
        .args([
            "wait",
            "--for=condition=Ready",
            "servicecidr/bench-services",
            "--timeout=60s",
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "the extra service range not Ready: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml: String = (0..o.namespaces)
        .map(|n| {
            let ns = format!("{run}-{n}");
            super::namespace_with_model(&ns) + &super::static_template(run, &ns, "t", "hf://org/m")
        })
        .collect();
    cluster.apply(&yaml)?;
    for chunk in (0..o.services).collect::<Vec<_>>().chunks(500) {
        let yaml: String = chunk
            .iter()
            .map(|i| {
                format!(
                    "apiVersion: aim.eai.amd.com/v1alpha1\nkind: AIMService\nmetadata:\n  name: s{i}\n  namespace: {run}-{}\n\
                     \x20 labels:\n    bench.aim.test/run: {run}\n\
                     spec:\n  model:\n    name: m\n  replicas: 1\n---\n",
                    i % o.namespaces
                )
            })
            .collect();
        cluster.apply(&yaml)?;
    }
    Ok(())
}

pub fn run(cluster: &Cluster, o: &Options) -> Result<Figures> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let client = rt.block_on(xtask::support::client());
    let api_port = cluster.api_port()?;
    let run = format!("services-{}", std::process::id());
    // What an earlier benchmark deleted would otherwise be deleted during this one's idle phases.
    cluster.wait_no_terminating_namespaces(Duration::from_secs(300))?;
    eprintln!("creating {} fake GPU nodes", o.nodes);
    cluster.gpu_nodes(o.nodes)?;
    eprintln!(
        "creating {} services in {} namespaces {run}-*",
        o.services, o.namespaces
    );
    populate(cluster, &run, o)?;
    let store = watch::services(&rt, client.clone(), &format!("bench.aim.test/run={run}"))?;
    let n = o.services as f64;
    let mut figures = Figures {
        services: o.services,
        namespaces: o.namespaces,
        nodes: o.nodes,
        load_before: super::load_average(),
        ..Default::default()
    };

    // Start-up.
    let before = cluster.requests()?;
    let cp_before = super::control_plane_cpu();
    let log = super::workdir().join("bench-services-operator.log");
    let mut op = Operator::start(&o.operator, &[], &log)?;
    let pid = Arc::new(AtomicU32::new(op.pid()));
    let sampler = Sampler::start(pid.clone(), api_port);
    let deadline = Instant::now() + o.timeout;
    let (mut half, mut ninety) = (None, None);
    loop {
        op.check_alive()?;
        let running = watch::running(&store);
        let at = || Some(op.started.elapsed().as_secs_f64());
        if half.is_none() && running * 2 >= o.services {
            half = at();
        }
        if ninety.is_none() && running * 10 >= o.services * 9 {
            ninety = at();
        }
        if running >= o.services {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {} services Running after {:?}",
                watch::running(&store),
                o.services,
                o.timeout
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    figures.seconds_to_running = op.started.elapsed().as_secs_f64();
    figures.seconds_to_half = half.unwrap_or_default();
    figures.seconds_to_90 = ninety.unwrap_or_default();
    // Settled: no reconcile of any controller for 3 s (the workloads' last status changes included).
    let quiet = Duration::from_secs(3);
    let settle = Duration::from_secs(300);
    op.wait_settled(Operator::all_reconciles, quiet, settle)?;
    let d = cluster.requests()?.since(&before);
    figures.control_plane_cpu = super::control_plane_cpu_since(&cp_before);
    figures.cpu_seconds = super::cpu_seconds(op.pid());
    figures.peaks = sampler.finish();
    figures.running = watch::running(&store);
    figures.service_reconciles = op.service_reconciles().unwrap_or(0.0);
    figures.status_writes_per_service = d.writes(AIM_GROUP, "aimservices", "status") / n;
    figures.deployment_writes_per_service = d.writes("apps", "deployments", "") / n;
    figures.service_writes_per_service = d.writes("", "services", "") / n;
    figures.reads = Reads::of(&d, n);
    figures.writes = d.describe_writes();
    eprintln!("start-up measured; idle for {:?}", o.idle);

    // Idle: nothing changes, so nothing is written.
    let before = cluster.requests()?;
    let events_before = rt.block_on(super::operator_event_writes(&client))?;
    let reconciles_before = op.all_reconciles().unwrap_or(0.0);
    let started = Instant::now();
    while started.elapsed() < o.idle {
        op.check_alive()?;
        std::thread::sleep(Duration::from_millis(100));
    }
    figures.idle_seconds = started.elapsed().as_secs_f64();
    figures.idle = IdleWrites::of(
        &cluster.requests()?.since(&before),
        rt.block_on(super::operator_event_writes(&client))? - events_before,
        op.all_reconciles().unwrap_or(0.0) - reconciles_before,
    );
    eprintln!("idle measured; restarting the operator over the Running services");

    // Idle: a restart over the Running services.
    op.stop();
    let before = cluster.requests()?;
    let events_before = rt.block_on(super::operator_event_writes(&client))?;
    op.restart()?;
    pid.store(op.pid(), Ordering::Relaxed);
    let sampler = Sampler::start(pid.clone(), api_port);
    op.wait_ready(Duration::from_secs(120))?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while op.service_reconciles().unwrap_or(0.0) < n {
        op.check_alive()?;
        anyhow::ensure!(
            Instant::now() < deadline,
            "the restarted operator did not reconcile every service"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let reconciles = op.wait_settled(Operator::all_reconciles, quiet, settle)?;
    figures.restart_seconds_to_settled = op.started.elapsed().as_secs_f64() - quiet.as_secs_f64();
    figures.restart_peaks = sampler.finish();
    let d = cluster.requests()?.since(&before);
    figures.restart = IdleWrites::of(
        &d,
        rt.block_on(super::operator_event_writes(&client))? - events_before,
        reconciles,
    );
    figures.restart_reads = Reads::of(&d, n);
    figures.running_after_restart = watch::running(&store);
    op.stop();
    cluster.clean_up((0..o.namespaces).map(|i| format!("{run}-{i}")));
    Ok(figures)
}
