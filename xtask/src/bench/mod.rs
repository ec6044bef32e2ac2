//! `cargo xtask bench scale|discovery|chaos|services|smoke`: the operator binary against a cluster of the
//! benchmarks' own (`target/bench-testenv`, brought up and down by the benchmark), so that neither the
//! shared test cluster nor the operators other tests run there see the benchmark's objects or disturb
//! its figures.
//!
//! This module holds what the benchmarks share: that cluster, the operator process and what is sampled
//! from it (`/proc`, its `/metrics`), and the API server's own request counters.

pub mod chaos;
pub mod discovery;
pub mod scale;
pub mod services;
pub mod watch;

use anyhow::{Context as _, Result, bail};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};
use xtask::testenv;

/// `cargo xtask bench <kind>`: selects the benchmark cluster, brings it up, runs, prints the figures
/// and fails when a correctness check fails (timings are reported, never asserted).
pub fn main(kind: crate::BenchKind) -> Result<()> {
    use crate::BenchKind as K;
    testenv::use_workdir(workdir());
    match kind {
        K::Scale {
            templates,
            namespaces,
            nodes,
            node_updates,
            node_images,
            common,
        } => {
            let operator = operator_of(&common, true)?;
            let cluster = Cluster::up(common.keep_cluster)?;
            eprintln!("{}", machine(&operator));
            let f = scale::run(
                &cluster,
                &scale::Options {
                    templates,
                    namespaces,
                    nodes,
                    node_updates,
                    node_images,
                    operator,
                },
            )?;
            println!("{f}");
            scale::check(&f)
        }
        K::Discovery {
            templates,
            complete_after,
            common,
        } => {
            let operator = operator_of(&common, true)?;
            let cluster = Cluster::up(common.keep_cluster)?;
            eprintln!("{}", machine(&operator));
            let o = discovery::Options {
                templates,
                complete_after,
                operator,
                timeout: Duration::from_secs(600),
            };
            let f = discovery::run(&cluster, &o, &mut discovery::Calm, "discovery")?;
            println!("{f}");
            discovery::check(&f, true)
        }
        K::Chaos {
            templates,
            complete_after,
            kills,
            seed,
            common,
        } => {
            let operator = operator_of(&common, true)?;
            let cluster = Cluster::up(common.keep_cluster)?;
            eprintln!("{}", machine(&operator));
            let (f, report) = chaos::run(
                &cluster,
                &chaos_options(templates, complete_after, kills, seed, operator),
            )?;
            println!("{f}\n{report}");
            discovery::check(&f, false)
        }
        K::Services {
            services,
            namespaces,
            nodes,
            idle_seconds,
            common,
        } => {
            let operator = operator_of(&common, true)?;
            let cluster = Cluster::up(common.keep_cluster)?;
            eprintln!("{}", machine(&operator));
            let o = services::Options::new(services, namespaces, nodes, idle_seconds, operator);
            let f = services::run(&cluster, &o)?;
            println!("{f}");
            services::check(&f)
        }
        K::Smoke { common } => {
            // The parser's criterion benchmark once per input, in test mode: it asserts that every
            // log parses, and does not time.
            let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .current_dir(testenv::workspace_root())
                .args(["test", "-p", "aim-discovery", "--bench", "parse"])
                .status()?;
            anyhow::ensure!(status.success(), "the parser benchmark failed ({status})");
            let operator = operator_of(&common, false)?;
            let cluster = Cluster::up(common.keep_cluster)?;
            eprintln!("{}", machine(&operator));
            let f = scale::run(
                &cluster,
                &scale::Options {
                    templates: 100,
                    namespaces: 5,
                    nodes: 5,
                    node_updates: 100,
                    node_images: 3,
                    operator: operator.clone(),
                },
            )?;
            println!("{f}");
            scale::check(&f)?;
            let o = discovery::Options {
                templates: 25,
                complete_after: "1s".into(),
                operator: operator.clone(),
                timeout: Duration::from_secs(180),
            };
            let f = discovery::run(&cluster, &o, &mut discovery::Calm, "discovery")?;
            println!("{f}");
            discovery::check(&f, false)?;
            let (f, report) =
                // 60 templates: the API server restart comes at most ~16 s in (two kills, each up to 5 s
                // after a restart up to 1 s after a kill), and the run must not have drained by then.
                chaos::run(&cluster, &chaos_options(60, "2s".into(), 2, None, operator.clone()))?;
            println!("{f}\n{report}");
            discovery::check(&f, false)?;
            let f = services::run(&cluster, &services::Options::new(20, 2, None, 5, operator))?;
            println!("{f}");
            services::check(&f)?;
            println!("bench smoke: scale, discovery, chaos and services correct");
            Ok(())
        }
    }
}

fn chaos_options(
    templates: usize,
    complete_after: String,
    kills: usize,
    seed: Option<u64>,
    operator: PathBuf,
) -> chaos::Options {
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    chaos::Options {
        discovery: discovery::Options {
            templates,
            complete_after,
            operator,
            timeout: Duration::from_secs(900),
        },
        kills,
        seed,
    }
}

fn operator_of(common: &crate::BenchCommon, release: bool) -> Result<PathBuf> {
    match &common.operator {
        Some(o) => Ok(o.clone()),
        None => build_operator(release),
    }
}

/// Machine, load and versions, for the record.
fn machine(operator: &Path) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")?
                    .split_whitespace()
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let v = testenv::Versions::read().ok();
    format!(
        "machine: {cores} cores, {mem_gib:.1} GiB; load average {:.2}; kubernetes {}, etcd {}, kwok {}; operator {}",
        load_average(),
        v.as_ref().map_or("?", |v| &v.kubernetes),
        v.as_ref().map_or("?", |v| &v.etcd),
        v.as_ref().map_or("?", |v| &v.kwok),
        operator.display()
    )
}

/// kwokctl's working directory of the benchmarks' cluster.
pub fn workdir() -> PathBuf {
    testenv::workspace_root().join("target/bench-testenv")
}

/// The benchmarks' own control plane, brought down when dropped unless kept.
pub struct Cluster {
    pub bin: PathBuf,
    keep: bool,
}

impl Cluster {
    /// Brings up the control plane (no registries) in [`workdir`]; `testenv::use_workdir` must have
    /// pointed there before anything else ran.
    pub fn up(keep: bool) -> Result<Self> {
        anyhow::ensure!(
            testenv::workdir() == workdir(),
            "the benchmark cluster's workdir was not selected first"
        );
        let bin = testenv::ensure_binaries()?;
        testenv::up_control_plane()?;
        Ok(Self { bin, keep })
    }

    pub fn kubectl(&self) -> Command {
        testenv::kubectl(&self.bin)
    }

    /// `kubectl apply --server-side -f -` of a YAML stream.
    pub fn apply(&self, yaml: &str) -> Result<()> {
        let mut child = self
            .kubectl()
            .args(["apply", "--server-side", "--force-conflicts", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(yaml.as_bytes())?;
        let status = child.wait()?;
        anyhow::ensure!(status.success(), "kubectl apply failed ({status})");
        Ok(())
    }

    /// The API server's port, from the kubeconfig.
    pub fn api_port(&self) -> Result<u16> {
        let text = std::fs::read_to_string(testenv::kubeconfig_path())?;
        let server = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("server:"))
            .context("no server in the kubeconfig")?
            .trim();
        server
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .context("no port in the server URL")
    }

    /// The API server's request counters now.
    pub fn requests(&self) -> Result<Requests> {
        let out = self.kubectl().args(["get", "--raw", "/metrics"]).output()?;
        anyhow::ensure!(
            out.status.success(),
            "reading the API server's metrics: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Requests::parse(&String::from_utf8_lossy(&out.stdout)))
    }

    /// Creates `n` fake GPU nodes `bench-gpu-<i>` (8 × MI300X each, labelled `bench.aim.test/node`) and
    /// waits until kwok made them Ready.
    pub fn gpu_nodes(&self, n: usize) -> Result<()> {
        self.gpu_nodes_with_images(n, 0)
    }

    /// [`Self::gpu_nodes`], each node listing `images` container images in its status (two names and a
    /// size each, as a kubelet reports them).
    pub fn gpu_nodes_with_images(&self, n: usize, images: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let mut image_list = String::new();
        if images > 0 {
            image_list.push_str("  images:\n");
            for k in 0..images {
                image_list += &format!(
                    "  - names: [\"registry.example.com/team/inference-image-{k}@sha256:{k:064x}\", \
                     \"registry.example.com/team/inference-image-{k}:v1.{k}.0\"]\n    sizeBytes: {}\n",
                    1_000_000_000 + k
                );
            }
        }
        let mut yaml = String::new();
        for i in 0..n {
            yaml += &format!(
                "apiVersion: v1\nkind: Node\nmetadata:\n  name: bench-gpu-{i}\n\
                 \x20 annotations:\n    kwok.x-k8s.io/node: fake\n\
                 \x20 labels:\n    type: kwok\n    kubernetes.io/os: linux\n    kubernetes.io/hostname: bench-gpu-{i}\n\
                 \x20   bench.aim.test/node: \"true\"\n    amd.com/gpu.device-id: \"74a1\"\n\
                 \x20   amd.com/gpu.family: MI300X\n    amd.com/gpu.vram: 192G\n\
                 status:\n  allocatable: {{cpu: \"64\", memory: 512Gi, pods: \"110\", amd.com/gpu: \"8\"}}\n\
                 \x20 capacity: {{cpu: \"64\", memory: 512Gi, pods: \"110\", amd.com/gpu: \"8\"}}\n{image_list}---\n"
            );
        }
        self.apply(&yaml)?;
        let out = self
            .kubectl()
            .args([
                "wait",
                "--for=condition=Ready",
                "node",
                "-l",
                "bench.aim.test/node=true",
                "--timeout=180s",
            ])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "fake nodes not Ready: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Deletes a run's namespaces and the fake GPU nodes of [`Self::gpu_nodes`], without waiting.
    pub fn clean_up(&self, namespaces: impl IntoIterator<Item = String>) {
        let mut delete = self.kubectl();
        delete.args(["delete", "namespace", "--wait=false"]);
        delete.args(namespaces);
        let _ = delete.output();
        let _ = self
            .kubectl()
            .args([
                "delete",
                "node",
                "-l",
                "bench.aim.test/node=true",
                "--wait=false",
            ])
            .output();
    }

    /// Waits until no namespace is being deleted (what an earlier run left is gone), at most `within`.
    pub fn wait_no_terminating_namespaces(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let out = self
                .kubectl()
                .args([
                    "get",
                    "namespaces",
                    "-o",
                    "jsonpath={.items[*].status.phase}",
                ])
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "listing namespaces: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let terminating = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter(|p| *p == "Terminating")
                .count();
            if terminating == 0 {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{terminating} namespaces still being deleted after {within:?}"
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// A namespace `ns` and its model `m` (no registry read, no templates of its own).
pub fn namespace_with_model(ns: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n---\n\
         apiVersion: aim.eai.amd.com/v1alpha1\nkind: AIMModel\nmetadata:\n  name: m\n  namespace: {ns}\n\
         spec:\n  image: example.test/aim:1\n  discovery:\n    extractMetadata: false\n    createServiceTemplates: false\n---\n"
    )
}

/// A namespace template `name` of model `m` on one MI300X with a static source `uri` (Ready without
/// discovery), labelled `bench.aim.test/run=<run>`.
pub fn static_template(run: &str, ns: &str, name: &str, uri: &str) -> String {
    format!(
        "apiVersion: aim.eai.amd.com/v1alpha1\nkind: AIMServiceTemplate\nmetadata:\n  name: {name}\n  namespace: {ns}\n\
         \x20 labels:\n    bench.aim.test/run: {run}\n\
         spec:\n  modelName: m\n  hardware:\n    gpu:\n      model: MI300X\n      requests: 1\n\
         \x20 modelSources:\n  - name: weights\n    sourceURI: {uri}\n    size: 16Gi\n---\n"
    )
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.keep {
            eprintln!(
                "benchmark cluster kept: {}",
                testenv::kubeconfig_path().display()
            );
        } else if let Err(e) = testenv::down() {
            eprintln!("bringing the benchmark cluster down: {e:#}");
        }
    }
}

/// Key of an API server request counter: (group, resource, subresource, verb).
pub type RequestKey = (String, String, String, String);

/// `apiserver_request_total`, summed over codes, scopes and versions.
#[derive(Debug, Clone, Default)]
pub struct Requests(pub BTreeMap<RequestKey, f64>);

impl Requests {
    pub fn parse(text: &str) -> Self {
        let mut out = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let label = |name: &str| {
                labels
                    .split("\",")
                    .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                    .map(|v| v.trim_end_matches('"').to_string())
                    .unwrap_or_default()
            };
            let key = (
                label("group"),
                label("resource"),
                label("subresource"),
                label("verb"),
            );
            *out.entry(key).or_insert(0.0) += value;
        }
        Self(out)
    }

    /// What happened between `before` and `self`: only counters that moved.
    pub fn since(&self, before: &Requests) -> Requests {
        Requests(
            self.0
                .iter()
                .filter_map(|(k, v)| {
                    let d = v - before.0.get(k).copied().unwrap_or(0.0);
                    (d > 0.0).then(|| (k.clone(), d))
                })
                .collect(),
        )
    }

    /// The requests whose key `keep` accepts.
    pub fn sum(&self, keep: impl Fn(&RequestKey) -> bool) -> f64 {
        self.0
            .iter()
            .filter(|(k, _)| keep(k))
            .map(|(_, n)| n)
            .sum::<f64>()
            + 0.0 // an empty float sum is -0.0
    }

    /// Writes (create, update, patch, apply, delete) of `resource` (and `subresource`, `""` for the
    /// object itself) in `group`.
    pub fn writes(&self, group: &str, resource: &str, subresource: &str) -> f64 {
        self.sum(|(g, r, s, v)| g == group && r == resource && s == subresource && is_write(v))
    }

    /// Writes of `resource` in `group`, subresources included.
    pub fn all_writes(&self, group: &str, resource: &str) -> f64 {
        self.sum(|(g, r, _, v)| g == group && r == resource && is_write(v))
    }

    /// One line per moved write counter, e.g. `aim.eai.amd.com aimservicetemplates/status APPLY 5000`.
    pub fn describe_writes(&self) -> String {
        self.describe(|(_, _, _, v)| is_write(v), None)
    }

    /// One line per moved counter that `keep` accepts, with the count divided by `per` after it when
    /// given (e.g. per service).
    pub fn describe(&self, keep: impl Fn(&RequestKey) -> bool, per: Option<f64>) -> String {
        let mut s = String::new();
        for (k @ (g, r, sub, v), n) in &self.0 {
            if !keep(k) {
                continue;
            }
            let group = if g.is_empty() { "core" } else { g };
            let res = if sub.is_empty() {
                r.clone()
            } else {
                format!("{r}/{sub}")
            };
            s += &format!("    {group:<18} {res:<34} {v:<7} {n:>7.0}");
            if let Some(per) = per {
                s += &format!(" ({:.2} each)", n / per);
            }
            s += "\n";
        }
        s
    }
}

/// Whether a request verb writes.
pub fn is_write(verb: &str) -> bool {
    matches!(
        verb,
        "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE" | "DELETECOLLECTION"
    )
}

/// The group of the operator's CRDs.
pub const AIM_GROUP: &str = "aim.eai.amd.com";

/// An operator process started by a benchmark, talking to the benchmark cluster as its admin (no leader
/// election: it is the only one), serving `/metrics` on a port of its own.
pub struct Operator {
    binary: PathBuf,
    extra: Vec<String>,
    log: PathBuf,
    child: Child,
    pub metrics_port: u16,
    /// When the current process was started.
    pub started: Instant,
}

impl Operator {
    pub fn start(binary: &Path, extra: &[&str], log: &Path) -> Result<Self> {
        let metrics_port = free_port()?;
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let child = spawn_operator(binary, &extra, log, metrics_port)?;
        Ok(Self {
            binary: binary.to_path_buf(),
            extra,
            log: log.to_path_buf(),
            child,
            metrics_port,
            started: Instant::now(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the operator exited ({status}); see {}", self.log.display());
        }
        Ok(())
    }

    /// SIGKILL, then wait for the exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (graceful shutdown), then wait for the exit.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }

    /// Starts the process again (same binary, flags and metrics port) after [`Self::kill`] or
    /// [`Self::stop`].
    pub fn restart(&mut self) -> Result<()> {
        self.child = spawn_operator(&self.binary, &self.extra, &self.log, self.metrics_port)?;
        self.started = Instant::now();
        Ok(())
    }

    /// The operator's `/metrics`, `None` while it does not answer.
    pub fn metrics(&self) -> Option<String> {
        http_get(self.metrics_port, "/metrics")
            .filter(|(code, _)| *code == 200)
            .map(|(_, body)| body)
    }

    /// The value of one series of its `/metrics` (e.g. `aim_reconciles_total{controller="AIMServiceTemplate"}`);
    /// 0 when the series is absent, `None` when the operator does not answer.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let body = self.metrics()?;
        Some(
            body.lines()
                .find_map(|l| {
                    l.strip_prefix(series)?
                        .strip_prefix(' ')?
                        .trim()
                        .parse()
                        .ok()
                })
                .unwrap_or(0.0),
        )
    }

    /// Template reconciles this process has run.
    pub fn template_reconciles(&self) -> Option<f64> {
        self.metric("aim_reconciles_total{controller=\"AIMServiceTemplate\"}")
    }

    /// Service reconciles this process has run.
    pub fn service_reconciles(&self) -> Option<f64> {
        self.metric("aim_reconciles_total{controller=\"AIMService\"}")
    }

    /// Reconciles of every controller this process has run.
    pub fn all_reconciles(&self) -> Option<f64> {
        let body = self.metrics()?;
        Some(
            body.lines()
                .filter(|l| l.starts_with("aim_reconciles_total{"))
                .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
                .sum::<f64>()
                + 0.0,
        )
    }

    /// Waits until `/readyz` answers 200 (every watch synced), at most `within`.
    pub fn wait_ready(&mut self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            self.check_alive()?;
            if http_get(self.metrics_port, "/readyz").is_some_and(|(c, _)| c == 200) {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the operator not ready after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the template reconcile counter has not moved for `quiet`, at most `within`; returns it.
    pub fn wait_reconciles_settle(&mut self, quiet: Duration, within: Duration) -> Result<f64> {
        self.wait_settled(Self::template_reconciles, quiet, within)
    }

    /// Waits until the counter `count` reads has not moved for `quiet`, at most `within`; returns it.
    pub fn wait_settled(
        &mut self,
        count: impl Fn(&Self) -> Option<f64>,
        quiet: Duration,
        within: Duration,
    ) -> Result<f64> {
        let deadline = Instant::now() + within;
        let mut last = (count(self).unwrap_or(0.0), Instant::now());
        loop {
            self.check_alive()?;
            std::thread::sleep(Duration::from_millis(100));
            let now = count(self).unwrap_or(0.0);
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() >= quiet {
                return Ok(now);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "reconciles still running after {within:?}"
            );
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_operator(binary: &Path, extra: &[String], log: &Path, port: u16) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    Command::new(binary)
        .env("KUBECONFIG", testenv::kubeconfig_path())
        .env_remove(testenv::KUBECONFIG_ENV)
        .env(
            "RUST_LOG",
            std::env::var("AIM_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .args([
            "--leader-elect=false",
            "--metrics-bind-address",
            &format!("127.0.0.1:{port}"),
        ])
        .args(extra)
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))
}

/// A port nothing listens on right now.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `GET path` on 127.0.0.1:`port`: (status code, body); `None` when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text.split_once("\r\n\r\n")?.1.to_string()))
}

/// What a sampler saw of the operator process(es).
#[derive(Debug, Default, Clone, Copy)]
pub struct Peaks {
    /// Most established TCP connections to the API server at one instant.
    pub connections: usize,
    pub rss_mib: f64,
}

/// Samples the process whose pid is in `pid` every 20 ms on a thread of its own: TCP connections to
/// the API server's port and resident memory. [`Sampler::finish`] returns the peaks.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Peaks>>,
}

impl Sampler {
    pub fn start(pid: Arc<AtomicU32>, api_port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peaks = Peaks::default();
            while !s.load(Ordering::Relaxed) {
                let p = pid.load(Ordering::Relaxed);
                peaks.connections = peaks.connections.max(connections(p, api_port));
                peaks.rss_mib = peaks.rss_mib.max(rss_kib(p) as f64 / 1024.0);
                std::thread::sleep(Duration::from_millis(20));
            }
            peaks
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> Peaks {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

/// TCP connections of `pid` to `port` (established), from /proc.
pub fn connections(pid: u32, port: u16) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    let inodes: std::collections::HashSet<String> = fds
        .flatten()
        .filter_map(|f| std::fs::read_link(f.path()).ok())
        .filter_map(|l| {
            l.to_string_lossy()
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .map(str::to_string)
        })
        .collect();
    let port_hex = format!(":{port:04X}");
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).ok())
        .flat_map(|s| s.lines().skip(1).map(str::to_string).collect::<Vec<_>>())
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 9 && f[2].ends_with(&port_hex) && f[3] == "01" && inodes.contains(f[9])
        })
        .count()
}

/// Resident memory of `pid` in KiB (0 when it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) `pid` has used.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// CPU seconds of the control plane's processes (kube-apiserver, etcd, …) by name.
pub fn control_plane_cpu() -> BTreeMap<String, f64> {
    testenv::processes()
        .into_iter()
        .map(|(pid, cmd, _)| {
            let name = cmd
                .split_whitespace()
                .next()
                .and_then(|p| p.rsplit('/').next())
                .unwrap_or("?")
                .to_string();
            (name, cpu_seconds(pid))
        })
        .collect()
}

/// CPU seconds each control plane process used since `before` (a [`control_plane_cpu`] reading).
pub fn control_plane_cpu_since(before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    control_plane_cpu()
        .into_iter()
        .map(|(name, now)| {
            let then = before.get(&name).copied().unwrap_or(0.0);
            (name, now - then)
        })
        .collect()
}

/// The machine's 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The operator binary of this workspace, built with cargo (`release` or the dev profile).
pub fn build_operator(release: bool) -> Result<PathBuf> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(testenv::workspace_root()).args([
        "build",
        "-p",
        "aim-operator",
        "--bin",
        "aim-operator",
    ]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status()?;
    anyhow::ensure!(status.success(), "building the operator failed ({status})");
    Ok(testenv::workspace_root()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("aim-operator"))
}

/// A small deterministic random number generator (xorshift64*), so that a chaos run can be repeated
/// with its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A duration uniformly in `[lo, hi)`.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = (hi - lo).as_millis().max(1) as u64;
        lo + Duration::from_millis(self.next() % span)
    }
}

/// Event writes about namespace templates in the namespaces `ns` accepts. (The API server's counter
/// covers every Event; this tells the templates' from, say, their models'.)
pub async fn template_event_writes(
    client: &kube::Client,
    ns: impl Fn(&str) -> bool,
) -> Result<f64> {
    stored_event_writes(client, |e| {
        e.metadata.namespace.as_deref().is_some_and(&ns)
            && e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("AIMServiceTemplate")
    })
    .await
}

/// Every Event write the operator made that is still stored, in any namespace and about any object.
/// The difference of two readings is what it wrote in between, without the other components' Events
/// that the API server's counter holds.
pub async fn operator_event_writes(client: &kube::Client) -> Result<f64> {
    stored_event_writes(client, |e| {
        e.reporting_controller.as_deref() == Some("aim-operator")
    })
    .await
}

/// The writes behind the stored Events that `keep` accepts: each Event object is one create, and each
/// repeat counted in its series one patch.
async fn stored_event_writes(
    client: &kube::Client,
    keep: impl Fn(&k8s_openapi::api::events::v1::Event) -> bool,
) -> Result<f64> {
    let events: kube::Api<k8s_openapi::api::events::v1::Event> = kube::Api::all(client.clone());
    let list = events.list(&kube::api::ListParams::default()).await?;
    Ok(list
        .items
        .iter()
        .filter(|e| keep(e))
        .map(|e| e.series.as_ref().map_or(1.0, |s| f64::from(s.count.max(1))))
        .sum::<f64>()
        + 0.0)
}
