//! `cargo xtask bench scale`: an operator binary against the running test cluster with many templates
//! that have static sources. Measures the time from operator start to all Ready, the most TCP
//! connections it held to the API server at one instant, its peak resident memory and its CPU seconds.

use crate::testenv;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What one run measured.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    pub templates: usize,
    pub seconds_to_ready: f64,
    pub max_connections: usize,
    pub peak_rss_mib: f64,
    pub cpu_seconds: f64,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} templates Ready in {:.1} s; at most {} connections to the API server; peak RSS {:.0} MiB; {:.1} CPU s",
            self.templates,
            self.seconds_to_ready,
            self.max_connections,
            self.peak_rss_mib,
            self.cpu_seconds
        )
    }
}

fn kubectl_apply(bin: &Path, yaml: &str) -> Result<()> {
    let mut child = testenv::kubectl(bin)
        .args(["apply", "--server-side", "--force-conflicts", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    use std::io::Write;
    child
        .stdin
        .take()
        .context("kubectl stdin")?
        .write_all(yaml.as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        bail!("kubectl apply failed ({status})");
    }
    Ok(())
}

/// Namespaces `<prefix>-<n>`, one model each, and `templates` static templates spread over them.
fn populate(bin: &Path, prefix: &str, templates: usize, namespaces: usize) -> Result<()> {
    let mut yaml = String::new();
    for n in 0..namespaces {
        yaml += &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {prefix}-{n}\n---\n\
             apiVersion: aim.eai.amd.com/v1alpha1\nkind: AIMModel\nmetadata:\n  name: m\n  namespace: {prefix}-{n}\n\
             spec:\n  image: example.test/aim:1\n  discovery:\n    extractMetadata: false\n    createServiceTemplates: false\n---\n"
        );
    }
    kubectl_apply(bin, &yaml)?;
    for chunk in (0..templates).collect::<Vec<_>>().chunks(500) {
        let mut yaml = String::new();
        for i in chunk {
            yaml += &format!(
                "apiVersion: aim.eai.amd.com/v1alpha1\nkind: AIMServiceTemplate\nmetadata:\n  name: t{i}\n  namespace: {prefix}-{}\n\
                 spec:\n  modelName: m\n  hardware:\n    gpu:\n      model: MI300X\n      requests: 1\n\
                 \x20 modelSources:\n  - name: weights\n    sourceURI: hf://org/model-{i}\n    size: 16Gi\n---\n",
                i % namespaces
            );
        }
        kubectl_apply(bin, &yaml)?;
    }
    Ok(())
}

fn ready_count(bin: &Path, prefix: &str) -> Result<usize> {
    let out = testenv::kubectl(bin)
        .args([
            "get",
            "aimservicetemplates",
            "-A",
            "-o",
            "jsonpath={range .items[*]}{.metadata.namespace} {.status.status}{\"\\n\"}{end}",
        ])
        .output()?;
    let ours = format!("{prefix}-");
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(&ours) && l.ends_with(" Ready"))
        .count())
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

fn rss_kib(pid: u32) -> u64 {
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

fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn api_port() -> Result<u16> {
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

/// Runs `operator` (a built binary) against the cluster with `templates` static templates and
/// measures it. The templates are deleted afterwards.
pub fn run(operator: &Path, templates: usize, namespaces: usize) -> Result<Figures> {
    let bin = testenv::ensure_binaries()?;
    testenv::up()?;
    let port = api_port()?;
    let prefix = format!("scale-{}", std::process::id());
    eprintln!("creating {templates} templates in {namespaces} namespaces {prefix}-*");
    populate(&bin, &prefix, templates, namespaces)?;
    let started = Instant::now();
    let mut child: Child = Command::new(operator)
        .env("KUBECONFIG", testenv::kubeconfig_path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", operator.display()))?;
    let pid = child.id();
    let mut figures = Figures {
        templates,
        ..Default::default()
    };
    let mut last_check = Instant::now() - Duration::from_secs(1);
    let result = loop {
        figures.max_connections = figures.max_connections.max(connections(pid, port));
        figures.peak_rss_mib = figures.peak_rss_mib.max(rss_kib(pid) as f64 / 1024.0);
        if last_check.elapsed() >= Duration::from_millis(500) {
            last_check = Instant::now();
            if ready_count(&bin, &prefix)? >= templates {
                figures.seconds_to_ready = started.elapsed().as_secs_f64();
                break Ok(());
            }
        }
        if started.elapsed() > Duration::from_secs(600) {
            break Err(anyhow::anyhow!("not all Ready after 600 s"));
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(anyhow::anyhow!("the operator exited: {status}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    figures.cpu_seconds = cpu_seconds(pid);
    let _ = child.kill();
    let _ = child.wait();
    // Wait for the deletion, so that a following run does not share the API server with it.
    let mut del = testenv::kubectl(&bin);
    del.args(["delete", "namespace", "--wait=true", "--timeout=300s"]);
    for n in 0..namespaces {
        del.arg(format!("{prefix}-{n}"));
    }
    let _ = del.output();
    result?;
    Ok(figures)
}

/// The operator binary of this workspace, built in release mode.
pub fn build_operator() -> Result<PathBuf> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(testenv::workspace_root())
        .args(["build", "--release", "-p", "aim-operator"])
        .status()?;
    if !status.success() {
        bail!("building the operator failed ({status})");
    }
    Ok(testenv::workspace_root().join("target/release/aim-operator"))
}
