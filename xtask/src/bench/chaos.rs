//! `cargo xtask bench chaos`: the discovery benchmark while the operator is killed with SIGKILL at
//! random moments and started again, and then, with the operator left alone, kube-apiserver is
//! restarted once. Every template must end Ready, the limit of active Jobs and one Job per template must
//! hold throughout, and the operator must carry on after the API server restart without being
//! restarted itself.

use super::discovery::{self, Disturb, Progress};
use super::{Cluster, Operator, Rng};
use anyhow::{Context as _, Result, bail};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use xtask::testenv;

#[derive(Debug, Clone)]
pub struct Options {
    pub discovery: discovery::Options,
    /// SIGKILLs of the operator.
    pub kills: usize,
    pub seed: u64,
}

/// What was done to the run, and what the operator did about the API server restart.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub seed: u64,
    /// Seconds after the first start at which the operator was killed.
    pub kills: Vec<f64>,
    /// When the API server was stopped (seconds after the first start) and how long it was away.
    pub apiserver_restart_at: f64,
    pub apiserver_downtime: f64,
    /// Templates Ready when the API server was stopped.
    pub ready_at_apiserver_restart: usize,
    /// Template reconciles the operator ran after the API server came back.
    pub reconciles_after_apiserver_restart: f64,
    /// Seconds from the API server answering again to the next template turning Ready.
    pub first_ready_after_apiserver: Option<f64>,
    /// Control-plane components that exited while the API server was away (lost leases) and were
    /// started again, as a kubelet would.
    pub restarted_components: Vec<&'static str>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kills: Vec<String> = self.kills.iter().map(|k| format!("{k:.1}")).collect();
        writeln!(
            f,
            "chaos (seed {}): operator killed with SIGKILL at {} s",
            self.seed,
            kills.join(", ")
        )?;
        write!(
            f,
            "  kube-apiserver stopped at {:.1} s with {} templates Ready, back after {:.1} s; the same operator process then ran {:.0} template reconciles",
            self.apiserver_restart_at,
            self.ready_at_apiserver_restart,
            self.apiserver_downtime,
            self.reconciles_after_apiserver_restart
        )?;
        if let Some(s) = self.first_ready_after_apiserver {
            write!(
                f,
                "; next template Ready {s:.1} s after the API server answered"
            )?;
        }
        if !self.restarted_components.is_empty() {
            write!(
                f,
                "; started again after losing their leases: {}",
                self.restarted_components.join(", ")
            )?;
        }
        Ok(())
    }
}

enum Phase {
    /// Killing: the next kill is due at this time.
    Kill { next: Instant },
    /// Killed: start again at this time.
    Down { until: Instant },
    /// The kills are done; the API server is restarted at this time.
    ApiServer { at: Instant },
    /// The API server was restarted; the operator (this pid) must now carry on alone.
    Recovering {
        pid: u32,
        back: Instant,
        ready: usize,
        reconciles: f64,
    },
}

struct Chaos {
    rng: Rng,
    kills_left: usize,
    phase: Phase,
    first_start: Instant,
    report: Report,
}

impl Disturb for Chaos {
    fn tick(&mut self, op: &mut Operator, p: &Progress) -> Result<()> {
        let now = Instant::now();
        let since_start = now.duration_since(self.first_start).as_secs_f64();
        match self.phase {
            Phase::Kill { next } => {
                op.check_alive()?;
                if now >= next {
                    op.kill();
                    self.kills_left -= 1;
                    self.report.kills.push(since_start);
                    eprintln!(
                        "chaos: killed the operator at {since_start:.1} s ({} of {} Ready, {} Jobs active)",
                        p.ready,
                        p.templates,
                        p.jobs.active.len()
                    );
                    let pause = self
                        .rng
                        .between(Duration::ZERO, Duration::from_millis(1000));
                    self.phase = Phase::Down { until: now + pause };
                }
            }
            Phase::Down { until } => {
                if now >= until {
                    op.restart()?;
                    // A kill at any moment: during the start-up sync, amid reconciles, or later.
                    let next = now
                        + self
                            .rng
                            .between(Duration::from_millis(300), Duration::from_millis(5000));
                    self.phase = if self.kills_left > 0 {
                        Phase::Kill { next }
                    } else {
                        Phase::ApiServer {
                            at: now + Duration::from_secs(4),
                        }
                    };
                }
            }
            Phase::ApiServer { at } => {
                op.check_alive()?;
                if now >= at {
                    self.report.apiserver_restart_at = since_start;
                    self.report.ready_at_apiserver_restart = p.ready;
                    eprintln!(
                        "chaos: restarting kube-apiserver at {since_start:.1} s ({} of {} Ready)",
                        p.ready, p.templates
                    );
                    let (down, restarted) = restart_apiserver()?;
                    self.report.apiserver_downtime = down.as_secs_f64();
                    self.report.restarted_components = restarted.clone();
                    eprintln!(
                        "chaos: kube-apiserver answers again after {down:.1?}; started again as a kubelet would: {}",
                        if restarted.is_empty() {
                            "none".to_string()
                        } else {
                            restarted.join(", ")
                        }
                    );
                    self.phase = Phase::Recovering {
                        pid: op.pid(),
                        back: Instant::now(),
                        ready: p.ready,
                        reconciles: op.template_reconciles().unwrap_or(0.0),
                    };
                }
            }
            Phase::Recovering {
                back, ready, pid, ..
            } => {
                op.check_alive()?;
                anyhow::ensure!(op.pid() == pid, "the operator was restarted");
                if self.report.first_ready_after_apiserver.is_none() && p.ready > ready {
                    self.report.first_ready_after_apiserver = Some(back.elapsed().as_secs_f64());
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self, op: &Operator) -> Result<()> {
        let Phase::Recovering {
            pid, reconciles, ..
        } = self.phase
        else {
            bail!(
                "every template was Ready before the chaos was done ({} kills left, API server not restarted): use more templates or longer dry-runs",
                self.kills_left
            );
        };
        anyhow::ensure!(
            op.pid() == pid,
            "the operator was restarted after the API server restart"
        );
        self.report.reconciles_after_apiserver_restart =
            op.template_reconciles().unwrap_or(0.0) - reconciles;
        anyhow::ensure!(
            self.report.reconciles_after_apiserver_restart > 0.0,
            "the operator reconciled nothing after the API server restart"
        );
        Ok(())
    }
}

pub fn run(cluster: &Cluster, o: &Options) -> Result<(discovery::Figures, Report)> {
    let now = Instant::now();
    let mut rng = Rng::new(o.seed);
    let first = now + rng.between(Duration::from_millis(300), Duration::from_millis(5000));
    let mut chaos = Chaos {
        rng,
        kills_left: o.kills,
        phase: if o.kills > 0 {
            Phase::Kill { next: first }
        } else {
            Phase::ApiServer {
                at: now + Duration::from_secs(4),
            }
        },
        first_start: now,
        report: Report {
            seed: o.seed,
            ..Default::default()
        },
    };
    let figures = discovery::run(cluster, &o.discovery, &mut chaos, "chaos")?;
    Ok((figures, chaos.report))
}

fn cluster_dir() -> PathBuf {
    testenv::workdir().join("clusters").join(testenv::CLUSTER)
}

/// Whether a process runs (and is not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.split_whitespace().next() != Some("Z"))
        })
        .unwrap_or(false)
}

/// A control-plane process as kwokctl ran it: its pid file, command line and working directory.
struct Component {
    name: &'static str,
    pid: u32,
    argv: Vec<String>,
    cwd: PathBuf,
}

impl Component {
    fn read(name: &'static str) -> Result<Self> {
        let pid_file = cluster_dir().join(format!("pids/{name}.pid"));
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .with_context(|| format!("reading {}", pid_file.display()))?
            .trim()
            .parse()?;
        let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
            .with_context(|| format!("{name} (pid {pid}) is not running"))?
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        anyhow::ensure!(
            argv.first().is_some_and(|a| a.ends_with(name)),
            "pid {pid} is not {name}: {argv:?}"
        );
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))?;
        Ok(Self {
            name,
            pid,
            argv,
            cwd,
        })
    }

    /// Starts it again with the same command line, log file and pid file (in a process group of its
    /// own, so it outlives nothing it should not).
    fn start_again(&mut self) -> Result<()> {
        let dir = cluster_dir();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(dir.join(format!("logs/{}.log", self.name)))?;
        use std::os::unix::process::CommandExt;
        let child = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {} again", self.name))?;
        self.pid = child.id();
        std::fs::write(
            dir.join(format!("pids/{}.pid", self.name)),
            self.pid.to_string(),
        )?;
        Ok(())
    }
}

/// Stops kube-apiserver (SIGTERM, then SIGKILL if it still drains its watches after 10 s) and starts it
/// again as kwokctl ran it, waits until `/readyz` answers, and then does what a kubelet does for static
/// pods: kube-controller-manager and kube-scheduler exit when they cannot renew their leases while the
/// API server is away, and each that did is started again. Returns the time the API server was away
/// and the components that had to be started again.
pub fn restart_apiserver() -> Result<(Duration, Vec<&'static str>)> {
    let mut apiserver = Component::read("kube-apiserver")?;
    let mut others: Vec<Component> = ["kube-controller-manager", "kube-scheduler"]
        .into_iter()
        .filter_map(|n| Component::read(n).ok())
        .collect();
    let pid = apiserver.pid;
    let stopped = Instant::now();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let deadline = stopped + Duration::from_secs(10);
    while alive(pid) {
        if Instant::now() > deadline {
            Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()?;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    apiserver.start_again()?;
    let bin = testenv::bin_dir(&testenv::Versions::read()?);
    let deadline = Instant::now() + Duration::from_secs(180);
    let down = loop {
        let ok = testenv::kubectl(&bin)
            .args(["get", "--raw", "/readyz", "--request-timeout=5s"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            break stopped.elapsed();
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "kube-apiserver not ready 180 s after its restart"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // They notice within their renew deadline (10 s by default); a kubelet would restart them.
    let settle = Instant::now() + Duration::from_secs(15);
    let mut restarted = Vec::new();
    while Instant::now() < settle && restarted.len() < others.len() {
        for c in others.iter_mut() {
            if !restarted.contains(&c.name) && !alive(c.pid) {
                c.start_again()?;
                restarted.push(c.name);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok((down, restarted))
}
