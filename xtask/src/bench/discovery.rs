//! `cargo xtask bench discovery`: templates that all need a discovery, each dry-run pod finishing after
//! a few seconds, against the cluster-wide limit. Watched: never more than the limit of active Jobs,
//! never two for one template, slots handed out oldest first, `queuePosition` in each waiting
//! template's status lagging the true position by how much, writes per template (API server), and the
//! time to drain. The chaos benchmark runs the same with a [`Disturb`] hook.

use super::watch::{self, Jobs, Templates};
use super::{AIM_GROUP, Cluster, Operator, Requests};
use aim_api::TemplatePhase;
use anyhow::{Result, bail};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The cluster-wide limit the operator runs with (its default).
pub const LIMIT: usize = 10;

#[derive(Debug, Clone)]
pub struct Options {
    pub templates: usize,
    /// How long each dry-run pod runs (Go syntax, e.g. `2s`).
    pub complete_after: String,
    pub operator: PathBuf,
    /// Give up when not all are Ready after this long.
    pub timeout: Duration,
}

/// What one run measured.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    pub templates: usize,
    pub complete_after: String,
    pub load_before: f64,
    /// From the (first) operator start until every template was Ready.
    pub seconds_to_drain: f64,
    pub max_active: usize,
    pub max_active_per_template: usize,
    pub jobs_created: usize,
    /// Slots given (after the first `LIMIT`, which go to whoever asks first at start-up) to a template
    /// while an older one still waited.
    pub out_of_order: usize,
    /// The most a waiting template's `queuePosition` lagged behind its true position, in seconds.
    pub max_position_lag: f64,
    pub status_writes_per_template: f64,
    pub event_writes_per_template: f64,
    pub job_creates: f64,
    pub job_deletes: f64,
    pub operator_cpu_seconds: f64,
    pub writes: String,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "discovery: {} templates, dry-runs of {} (load average {:.2} before)",
            self.templates, self.complete_after, self.load_before
        )?;
        writeln!(f, "  drained in {:.1} s", self.seconds_to_drain)?;
        writeln!(
            f,
            "  at most {} active discovery Jobs (limit {LIMIT}), at most {} per template; {} Jobs created",
            self.max_active, self.max_active_per_template, self.jobs_created
        )?;
        writeln!(
            f,
            "  slots handed out of age order: {}; queuePosition lagged the true position by at most {:.1} s",
            self.out_of_order, self.max_position_lag
        )?;
        writeln!(
            f,
            "  status writes per template {:.2}; Event writes per template {:.2}; Job creates {:.0}, deletes {:.0}",
            self.status_writes_per_template,
            self.event_writes_per_template,
            self.job_creates,
            self.job_deletes
        )?;
        writeln!(f, "  operator CPU {:.1} s", self.operator_cpu_seconds)?;
        write!(f, "  writes counted by the API server:\n{}", self.writes)
    }
}

/// Fails when a limit was exceeded: more than [`LIMIT`] active Jobs, two at once for one template, or
/// (with `in_order`) a slot given to a younger template while an older one waited.
pub fn check(f: &Figures, in_order: bool) -> Result<()> {
    anyhow::ensure!(
        f.max_active <= LIMIT,
        "{} discovery Jobs active at once (limit {LIMIT})",
        f.max_active
    );
    anyhow::ensure!(
        f.max_active_per_template <= 1,
        "{} discovery Jobs active at once for one template",
        f.max_active_per_template
    );
    anyhow::ensure!(
        !in_order || f.out_of_order == 0,
        "{} slots handed out of age order",
        f.out_of_order
    );
    Ok(())
}

/// What the hook may look at each tick.
pub struct Progress<'a> {
    pub ready: usize,
    pub templates: usize,
    pub jobs: &'a Jobs,
}

/// Something done to the run while it drains (the chaos benchmark), called every tick with the
/// operator; it fails the run when the operator died without being killed on purpose.
pub trait Disturb {
    fn tick(&mut self, op: &mut Operator, progress: &Progress) -> Result<()>;
    /// Called once all are Ready: fails when the disturbance did not finish during the run.
    fn finish(&mut self, op: &Operator) -> Result<()>;
}

/// No disturbance.
pub struct Calm;

impl Disturb for Calm {
    fn tick(&mut self, op: &mut Operator, _: &Progress) -> Result<()> {
        op.check_alive()
    }
    fn finish(&mut self, _: &Operator) -> Result<()> {
        Ok(())
    }
}

/// A dry-run log as an AIM prints it: banner noise, the JSON array, a trailing line.
const DRY_RUN_OK: &str = r#"AIM runtime 0.8.5 [starting]
[
  {
    "filename": "vllm-mi300x-fp8-tp1-latency.yaml",
    "profile": {
      "model": "Qwen/Qwen3-32B",
      "metadata": { "engine": "vllm", "gpu": "MI300X", "precision": "fp8", "gpu_count": 1, "metric": "latency", "type": "optimized" },
      "engine_args": { "tensor-parallel-size": 1 }
    },
    "models": [ { "name": "Qwen/Qwen3-32B", "source": "hf://Qwen/Qwen3-32B", "size_gb": 16.0 } ]
  }
]
done [ok]
"#;

/// The index of a template named `t<digits>`.
fn index(key: &str) -> usize {
    key.rsplit('/')
        .next()
        .and_then(|n| n.strip_prefix('t'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

/// Slots given to a template while an older one still waited and got its own only later, not counting
/// the first `LIMIT`, which go to whichever templates reconcile first when the operator starts. Slots
/// freed together are handed out together and their Jobs created concurrently, so the watch sees one
/// burst in any order: an older template's Job seen up to `BURST` later does not count.
fn out_of_order(order: &[(String, Instant)]) -> usize {
    order
        .iter()
        .enumerate()
        .skip(LIMIT)
        .filter(|(_, (key, at))| {
            let i = index(key);
            order
                .iter()
                .any(|(k, t)| index(k) < i && t.saturating_duration_since(*at) > BURST)
        })
        .count()
}

/// See [`out_of_order`].
const BURST: Duration = Duration::from_millis(1500);

/// How far each waiting template's `queuePosition` lags behind the truth: a template waits while it
/// has had no Job and is not Ready; its true position is 1 + the older templates that wait. A reported
/// position lags by the time since the truth last had that value (0 while it still has it).
#[derive(Default)]
struct PositionLag {
    /// Per template: the changes of its true position (time, position), the last 60 s.
    truth: HashMap<String, VecDeque<(Instant, usize)>>,
    /// Per template: the position its status shows and since when.
    shown: HashMap<String, (i32, Instant)>,
    max: Duration,
}

impl PositionLag {
    fn sample(&mut self, templates: &Templates, jobs: &Jobs) {
        let now = Instant::now();
        let mut waiting: Vec<(&String, usize)> = templates
            .by_key
            .iter()
            .filter(|(k, t)| {
                t.phase != Some(TemplatePhase::Ready) && !jobs.templates_with_job.contains(*k)
            })
            .map(|(k, _)| (k, index(k)))
            .collect();
        waiting.sort_by_key(|(_, i)| *i);
        let mut still = std::collections::HashSet::new();
        for (pos0, (key, _)) in waiting.iter().enumerate() {
            let pos = pos0 + 1;
            still.insert((*key).clone());
            let h = self.truth.entry((*key).clone()).or_default();
            if h.back().map(|(_, p)| *p) != Some(pos) {
                h.push_back((now, pos));
            }
            while h.len() > 1 && now.duration_since(h[0].0) > Duration::from_secs(60) {
                h.pop_front();
            }
            let Some(shown) = templates.by_key[*key].queue_position else {
                continue;
            };
            let since = match self.shown.get(*key) {
                Some((p, at)) if *p == shown => *at,
                _ => now,
            };
            self.shown.insert((*key).clone(), (shown, since));
            let lag = match h.iter().rposition(|(_, p)| *p as i32 == shown) {
                Some(i) if i + 1 == h.len() => Duration::ZERO,
                Some(i) => now.duration_since(h[i + 1].0),
                None => now.duration_since(since),
            };
            self.max = self.max.max(lag);
        }
        self.truth.retain(|k, _| still.contains(k));
        self.shown.retain(|k, _| still.contains(k));
    }
}

/// Creates the namespace, its canned dry-run, the model and `o.templates` templates `t0000…` in order
/// (so creation time and name agree on their age), all labelled `bench.aim.test/run=<run>`.
fn populate(
    cluster: &Cluster,
    rt: &tokio::runtime::Runtime,
    client: &kube::Client,
    run: &str,
    o: &Options,
) -> Result<()> {
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {run}\n---\n\
         apiVersion: aim.eai.amd.com/v1alpha1\nkind: AIMModel\nmetadata:\n  name: m\n  namespace: {run}\n\
         spec:\n  image: example.test/aim:1\n  discovery:\n    extractMetadata: false\n    createServiceTemplates: false\n\
         \x20 env:\n  - name: AIM_TEST_OUTCOME\n    value: complete-after\n\
         \x20 - name: AIM_TEST_COMPLETE_AFTER\n    value: \"{}\"\n",
        o.complete_after
    ))?;
    rt.block_on(xtask::support::canned_logs(
        client,
        run,
        "discovery",
        DRY_RUN_OK.as_bytes(),
    ));
    let mut yaml = String::new();
    for i in 0..o.templates {
        yaml += &format!(
            "apiVersion: aim.eai.amd.com/v1alpha1\nkind: AIMServiceTemplate\nmetadata:\n  name: t{i:04}\n  namespace: {run}\n\
             \x20 labels:\n    bench.aim.test/run: {run}\n\
             spec:\n  modelName: m\n  hardware:\n    gpu:\n      model: MI300X\n---\n"
        );
    }
    cluster.apply(&yaml)
}

pub fn run(
    cluster: &Cluster,
    o: &Options,
    disturb: &mut dyn Disturb,
    name: &str,
) -> Result<Figures> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let client = rt.block_on(xtask::support::client());
    let run = format!("{name}-{}", std::process::id());
    eprintln!(
        "creating {} templates needing discovery in namespace {run}",
        o.templates
    );
    populate(cluster, &rt, &client, &run, o)?;
    let templates = watch::templates(&rt, client.clone(), &format!("bench.aim.test/run={run}"));
    let jobs = watch::jobs(&rt, client.clone());
    let mut figures = Figures {
        templates: o.templates,
        complete_after: o.complete_after.clone(),
        load_before: super::load_average(),
        ..Default::default()
    };
    let before = cluster.requests()?;
    let log = super::workdir().join(format!("bench-{name}-operator.log"));
    let mut op = Operator::start(&o.operator, &[], &log)?;
    let started = Instant::now();
    let mut lag = PositionLag::default();
    let mut cpu_of_dead = 0.0;
    let mut last_pid = op.pid();
    let deadline = started + o.timeout;
    loop {
        let ready = {
            let t = templates.lock().unwrap();
            let j = jobs.lock().unwrap();
            lag.sample(&t, &j);
            t.ready()
        };
        if ready >= o.templates {
            break;
        }
        {
            let j = jobs.lock().unwrap();
            let progress = Progress {
                ready,
                templates: o.templates,
                jobs: &j,
            };
            // The hook may kill and restart the operator: count the CPU of each process it ran.
            let cpu = super::cpu_seconds(op.pid());
            disturb.tick(&mut op, &progress)?;
            if op.pid() != last_pid {
                cpu_of_dead += cpu;
                last_pid = op.pid();
            }
        }
        if Instant::now() > deadline {
            let t = templates.lock().unwrap();
            let stuck: Vec<String> = {
                let mut v: Vec<_> = t
                    .by_key
                    .iter()
                    .filter(|(_, s)| s.phase != Some(TemplatePhase::Ready))
                    .map(|(k, s)| format!("{k} {:?} position {:?}", s.phase, s.queue_position))
                    .collect();
                v.sort();
                v.truncate(10);
                v
            };
            bail!(
                "{ready} of {} templates Ready after {:?}; not Ready (first 10): {stuck:#?}",
                o.templates,
                o.timeout
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    figures.seconds_to_drain = started.elapsed().as_secs_f64();
    disturb.finish(&op)?;
    op.wait_reconciles_settle(Duration::from_secs(2), Duration::from_secs(120))?;
    figures.operator_cpu_seconds = cpu_of_dead + super::cpu_seconds(op.pid());
    let d: Requests = cluster.requests()?.since(&before);
    let n = o.templates as f64;
    figures.status_writes_per_template = d.writes(AIM_GROUP, "aimservicetemplates", "status") / n;
    figures.event_writes_per_template =
        rt.block_on(super::template_event_writes(&client, |ns| ns == run))? / n;
    let jobs_verb = |verb: &str| -> f64 {
        d.0.iter()
            .filter(|((g, r, s, v), _)| g == "batch" && r == "jobs" && s.is_empty() && v == verb)
            .map(|(_, n)| n)
            .sum()
    };
    figures.job_creates = jobs_verb("POST");
    figures.job_deletes = jobs_verb("DELETE");
    figures.writes = d.describe_writes();
    {
        let j = jobs.lock().unwrap();
        figures.max_active = j.max_active;
        figures.max_active_per_template = j.max_per_template.0;
        figures.jobs_created = j.created.len();
        figures.out_of_order = out_of_order(&j.first_job_order);
        anyhow::ensure!(
            j.active.is_empty(),
            "discovery Jobs still active after all templates were Ready: {:?}",
            j.active
        );
    }
    figures.max_position_lag = lag.max.as_secs_f64();
    op.stop();
    let _ = cluster
        .kubectl()
        .args(["delete", "namespace", &run, "--wait=false"])
        .output();
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_ignores_the_first_slots_and_bursts_and_counts_younger_before_older() {
        let t0 = Instant::now();
        let seq = |v: &[usize], gap_ms: u64| -> Vec<(String, Instant)> {
            v.iter()
                .enumerate()
                .map(|(n, i)| {
                    (
                        format!("ns/t{i:04}"),
                        t0 + Duration::from_millis(n as u64 * gap_ms),
                    )
                })
                .collect()
        };
        let in_order: Vec<usize> = (0..20).rev().take(10).chain(0..10).collect();
        assert_eq!(out_of_order(&seq(&in_order, 1000)), 0);
        let mut swapped: Vec<usize> = (0..20).collect();
        swapped.swap(12, 14);
        assert_eq!(
            out_of_order(&seq(&swapped, 1000)),
            1,
            "t14 before t12, 2 s apart"
        );
        assert_eq!(out_of_order(&seq(&swapped, 100)), 0, "one burst");
    }
}
