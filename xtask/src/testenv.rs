//! The test control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok,
//! built from the Go wrapper modules in `xtask/testenv/` into a versioned cache outside the repo and
//! started with kwokctl on 127.0.0.1; next to it two OCI registries ([`crate::registry`]).

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Name of the kwok cluster.
pub const CLUSTER: &str = "aim";
/// Environment variable that overrides the kubeconfig the end-to-end tests use.
pub const KUBECONFIG_ENV: &str = "AIM_E2E_KUBECONFIG";

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn testenv_src() -> PathBuf {
    workspace_root().join("xtask/testenv")
}

/// Versions of the components, read from the wrapper modules' go.mod files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versions {
    pub kubernetes: String,
    pub etcd: String,
    pub kwok: String,
}

fn required_version(go_mod: &Path, module: &str) -> Result<String> {
    let text =
        std::fs::read_to_string(go_mod).with_context(|| format!("reading {}", go_mod.display()))?;
    text.lines()
        .map(str::trim)
        .map(|l| l.strip_prefix("require ").unwrap_or(l))
        .find_map(|l| {
            l.strip_prefix(module)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.split_whitespace().next().unwrap_or_default().to_string())
        .with_context(|| format!("{} does not require {module}", go_mod.display()))
}

impl Versions {
    pub fn read() -> Result<Self> {
        let src = testenv_src();
        Ok(Self {
            kubernetes: required_version(&src.join("kubernetes/go.mod"), "k8s.io/kubernetes")?,
            etcd: required_version(&src.join("etcd/go.mod"), "go.etcd.io/etcd/server/v3")?,
            kwok: required_version(&src.join("kwok/go.mod"), "sigs.k8s.io/kwok")?,
        })
    }

    /// Cache key: changes whenever a component version changes.
    pub fn key(&self) -> String {
        format!(
            "k8s-{}_etcd-{}_kwok-{}",
            self.kubernetes, self.etcd, self.kwok
        )
    }
}

/// Where built binaries are cached: `$AIM_TESTENV_CACHE`, else `$XDG_CACHE_HOME/aim/testenv`, else
/// `~/.cache/aim/testenv`; one directory per set of versions.
pub fn bin_dir(v: &Versions) -> PathBuf {
    cache_base().join(v.key())
}

fn cache_base() -> PathBuf {
    std::env::var_os("AIM_TESTENV_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
                        .join(".cache")
                })
                .join("aim/testenv")
        })
}

/// `helm`, built from the wrapper module `xtask/testenv/helm` into the cache (`helm-<version>/`) unless
/// it is there already.
pub fn ensure_helm() -> Result<PathBuf> {
    let src = testenv_src().join("helm");
    let version = required_version(&src.join("go.mod"), "helm.sh/helm/v3")?;
    let dir = cache_base().join(format!("helm-{version}"));
    let bin = dir.join("helm");
    if bin.is_file() {
        return Ok(bin);
    }
    eprintln!("building helm {version} into {}", dir.display());
    let tmp = dir.with_extension("partial");
    std::fs::create_dir_all(&tmp)?;
    let ldflags = vec![format!(
        "-s -w -X helm.sh/helm/v3/internal/version.version={version}"
    )];
    go_build(
        &src,
        &tmp,
        &["helm.sh/helm/v3/cmd/helm"],
        &ldflags,
        Some("helm"),
    )?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::rename(&tmp, &dir)?;
    Ok(bin)
}

/// The CNCF distribution registry (`registry`), built from the wrapper module `xtask/testenv/registry`
/// into the cache (`registry-<version>/`) unless it is there already. `cluster up` runs two of them
/// ([`crate::registry`]).
pub fn ensure_registry() -> Result<PathBuf> {
    let src = testenv_src().join("registry");
    let version = registry_version()?;
    let dir = cache_base().join(format!("registry-{version}"));
    let bin = dir.join("registry");
    if bin.is_file() {
        return Ok(bin);
    }
    eprintln!("building the registry {version} into {}", dir.display());
    let started = Instant::now();
    let tmp = dir.with_extension("partial");
    std::fs::create_dir_all(&tmp)?;
    let ldflags = vec![format!(
        "-s -w -X {REGISTRY_MODULE}/version.version={version}"
    )];
    // One package at a time: slower, but leaves the other core to whatever else compiles.
    go_build_jobs(
        &src,
        &tmp,
        &["github.com/distribution/distribution/v3/cmd/registry"],
        &ldflags,
        Some("registry"),
        Some(1),
    )?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::rename(&tmp, &dir)?;
    eprintln!("built the registry in {:.0?}", started.elapsed());
    Ok(bin)
}

const REGISTRY_MODULE: &str = "github.com/distribution/distribution/v3";

/// The registry's version, from `xtask/testenv/registry/go.mod`.
pub fn registry_version() -> Result<String> {
    required_version(&testenv_src().join("registry/go.mod"), REGISTRY_MODULE)
}

const BINARIES: [&str; 7] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "kwokctl",
];

/// Builds the binaries unless the cache already has them all; returns the directory holding them.
pub fn ensure_binaries() -> Result<PathBuf> {
    let v = Versions::read()?;
    let dir = bin_dir(&v);
    if BINARIES.iter().all(|b| dir.join(b).is_file()) {
        return Ok(dir);
    }
    eprintln!(
        "building the test control plane ({}) into {}",
        v.key(),
        dir.display()
    );
    eprintln!("a cold build takes tens of minutes on 2 cores; later runs reuse the cache");
    let tmp = dir.with_extension("partial");
    std::fs::create_dir_all(&tmp)?;
    let started = Instant::now();
    let src = testenv_src();
    go_build(
        &src.join("etcd"),
        &tmp,
        &["go.etcd.io/etcd/server/v3"],
        &[],
        Some("etcd"),
    )?;
    go_build(
        &src.join("kwok"),
        &tmp,
        &["sigs.k8s.io/kwok/cmd/kwok", "sigs.k8s.io/kwok/cmd/kwokctl"],
        &[],
        None,
    )?;
    let minor = v
        .kubernetes
        .trim_start_matches('v')
        .split('.')
        .nth(1)
        .unwrap_or("0")
        .to_string();
    let mut ldflags = vec!["-s".to_string(), "-w".to_string()];
    for pkg in [
        "k8s.io/component-base/version",
        "k8s.io/client-go/pkg/version",
    ] {
        for (k, val) in [
            ("gitVersion", v.kubernetes.as_str()),
            ("gitMajor", "1"),
            ("gitMinor", &minor),
            ("gitTreeState", "clean"),
        ] {
            ldflags.push(format!("-X {pkg}.{k}={val}"));
        }
    }
    go_build(
        &src.join("kubernetes"),
        &tmp,
        &[
            "k8s.io/kubernetes/cmd/kube-apiserver",
            "k8s.io/kubernetes/cmd/kube-controller-manager",
            "k8s.io/kubernetes/cmd/kube-scheduler",
            "k8s.io/kubernetes/cmd/kubectl",
        ],
        &ldflags,
        None,
    )?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::rename(&tmp, &dir)?;
    eprintln!("built the test control plane in {:.0?}", started.elapsed());
    Ok(dir)
}

fn go_build(
    module: &Path,
    out: &Path,
    pkgs: &[&str],
    ldflags: &[String],
    single: Option<&str>,
) -> Result<()> {
    go_build_jobs(module, out, pkgs, ldflags, single, None)
}

/// `go build`, with `-p jobs` when given (packages built at once).
fn go_build_jobs(
    module: &Path,
    out: &Path,
    pkgs: &[&str],
    ldflags: &[String],
    single: Option<&str>,
    jobs: Option<u32>,
) -> Result<()> {
    let mut cmd = Command::new("go");
    cmd.current_dir(module)
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .args(["build", "-trimpath", "-buildvcs=false"]);
    if let Some(jobs) = jobs {
        cmd.arg("-p").arg(jobs.to_string());
    }
    if !ldflags.is_empty() {
        cmd.arg("-ldflags").arg(ldflags.join(" "));
    }
    let target = match single {
        Some(name) => out.join(name),
        None => out.to_path_buf().join(""),
    };
    cmd.arg("-o").arg(&target).args(pkgs);
    let status = cmd
        .status()
        .with_context(|| "running `go build` (is Go installed?)")?;
    if !status.success() {
        bail!("go build in {} failed ({status})", module.display());
    }
    Ok(())
}

/// A working directory set by [`use_workdir`] for the rest of the process.
static WORKDIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Makes every function of this module (and the test support) use the cluster in `dir` instead of the
/// shared one in `target/testenv`, for the rest of the process: the benchmarks run on a cluster of
/// their own. `$AIM_E2E_KUBECONFIG` is ignored from then on. Call it before anything else; a second
/// call has no effect.
pub fn use_workdir(dir: PathBuf) {
    let _ = WORKDIR.set(dir);
}

/// kwokctl's working directory, inside `target/` so nothing outside the repo is touched:
/// `target/testenv`, unless [`use_workdir`] chose another.
pub fn workdir() -> PathBuf {
    WORKDIR
        .get()
        .cloned()
        .unwrap_or_else(|| workspace_root().join("target/testenv"))
}

/// The kubeconfig of the test cluster (certificates by file path).
pub fn kubeconfig_path() -> PathBuf {
    let own = || {
        workdir()
            .join("clusters")
            .join(CLUSTER)
            .join("kubeconfig.yaml")
    };
    if WORKDIR.get().is_some() {
        return own();
    }
    std::env::var_os(KUBECONFIG_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(own)
}

fn tool(bin: &Path, name: &str) -> Command {
    let mut cmd = Command::new(bin.join(name));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![bin.to_path_buf()];
    paths.extend(std::env::split_paths(&path));
    cmd.env(
        "PATH",
        std::env::join_paths(paths).expect("PATH entries are valid"),
    );
    cmd.env("KWOK_WORKDIR", workdir());
    cmd
}

/// `kubectl` of the test control plane, pointed at its kubeconfig.
pub fn kubectl(bin: &Path) -> Command {
    let mut cmd = tool(bin, "kubectl");
    cmd.arg("--kubeconfig").arg(kubeconfig_path());
    cmd
}

fn run(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn api_ready(bin: &Path) -> bool {
    kubeconfig_path().is_file()
        && kubectl(bin)
            .args(["get", "--raw", "/readyz", "--request-timeout=5s"])
            .output()
            .is_ok_and(|o| o.status.success())
}

fn cluster_exists() -> bool {
    workdir().join("clusters").join(CLUSTER).exists()
}

/// Starts the control plane (building it first when needed), installs the CRDs and the standard fake
/// nodes, starts the two test registries, and returns the kubeconfig path. Harmless when the cluster
/// already runs (running registries are reused too).
pub fn up() -> Result<PathBuf> {
    let registry = ensure_registry()?;
    let started = Instant::now();
    let kubeconfig = up_control_plane()?;
    crate::registry::start(&registry)?;
    eprintln!("test cluster ready in {:.1?}", started.elapsed());
    Ok(kubeconfig)
}

/// [`up`] without the registries: the control plane, CRDs and standard nodes.
pub fn up_control_plane() -> Result<PathBuf> {
    let bin = ensure_binaries()?;
    if api_ready(&bin) {
        eprintln!("test cluster already running");
    } else {
        if cluster_exists() {
            eprintln!("removing a stopped test cluster");
            delete_cluster(&bin)?;
        }
        std::fs::create_dir_all(workdir())?;
        let mut cmd = tool(&bin, "kwokctl");
        cmd.args([
            "create",
            "cluster",
            "--name",
            CLUSTER,
            "--kubeconfig",
            "",
            "--wait",
            "3m",
        ])
        .arg("--config")
        .arg(testenv_src().join("kwok.yaml"));
        for (flag, name) in [
            ("--etcd-binary", "etcd"),
            ("--kube-apiserver-binary", "kube-apiserver"),
            (
                "--kube-controller-manager-binary",
                "kube-controller-manager",
            ),
            ("--kube-scheduler-binary", "kube-scheduler"),
            ("--kwok-controller-binary", "kwok"),
        ] {
            cmd.arg(flag).arg(bin.join(name));
        }
        run(cmd, "kwokctl create cluster")?;
    }
    install(&bin)?;
    Ok(kubeconfig_path())
}

/// Applies the CRDs from `crds/` and the standard nodes, and waits until both are usable.
fn install(bin: &Path) -> Result<()> {
    let root = workspace_root();
    let mut apply = kubectl(bin);
    apply
        .args(["apply", "--server-side", "--force-conflicts", "-f"])
        .arg(root.join("crds"));
    run(apply, "installing CRDs")?;
    let mut wait = kubectl(bin);
    wait.args([
        "wait",
        "--for=condition=Established",
        "crd",
        "--all",
        "--timeout=60s",
    ]);
    run(wait, "waiting for CRDs")?;
    let mut nodes = kubectl(bin);
    nodes
        .args(["apply", "--server-side", "--force-conflicts", "-f"])
        .arg(testenv_src().join("nodes.yaml"));
    run(nodes, "creating fake nodes")?;
    let mut ready = kubectl(bin);
    ready.args([
        "wait",
        "--for=condition=Ready",
        "node",
        "--all",
        "--timeout=60s",
    ]);
    run(ready, "waiting for nodes")?;
    Ok(())
}

fn delete_cluster(bin: &Path) -> Result<()> {
    let mut cmd = tool(bin, "kwokctl");
    cmd.args(["delete", "cluster", "--name", CLUSTER]);
    run(cmd, "kwokctl delete cluster")?;
    Ok(())
}

/// Processes of the test control plane: (pid, command line, resident memory in KiB).
pub fn processes() -> Vec<(u32, String, u64)> {
    // With the separator, so that `target/testenv` does not also match `target/testenv-other`.
    let marker = format!("{}/", workdir().to_string_lossy());
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !cmdline.contains(&marker) || cmdline.contains("xtask") {
            continue;
        }
        let rss = std::fs::read_to_string(entry.path().join("status"))
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("VmRSS:")
                        .and_then(|v| v.split_whitespace().next()?.parse().ok())
                })
            })
            .unwrap_or(0);
        out.push((pid, cmdline, rss));
    }
    out
}

/// Stops the control plane and the registries and makes sure no process of them is left.
pub fn down() -> Result<()> {
    let v = Versions::read()?;
    let bin = bin_dir(&v);
    if cluster_exists() && bin.join("kwokctl").is_file() {
        delete_cluster(&bin)?;
    }
    crate::registry::stop()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes();
        if left.is_empty() {
            break;
        }
        let signal = if Instant::now() < deadline {
            "-TERM"
        } else {
            "-KILL"
        };
        for (pid, _, _) in &left {
            let _ = Command::new("kill")
                .arg(signal)
                .arg(pid.to_string())
                .status();
        }
        if Instant::now() > deadline + Duration::from_secs(5) {
            bail!("processes of the test cluster survived SIGKILL: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("test cluster stopped; no process left");
    Ok(())
}

/// Describes what runs.
pub fn status() -> Result<String> {
    let v = Versions::read()?;
    let bin = bin_dir(&v);
    let built = BINARIES.iter().all(|b| bin.join(b).is_file());
    let mut s = format!(
        "versions: kubernetes {}, etcd {}, kwok {}\nbinaries: {} ({})\n",
        v.kubernetes,
        v.etcd,
        v.kwok,
        bin.display(),
        if built { "built" } else { "not built" }
    );
    let procs = processes();
    let state = if !cluster_exists() {
        "absent"
    } else if built && api_ready(&bin) {
        "running"
    } else {
        "stopped"
    };
    s += &format!(
        "cluster {CLUSTER}: {state}\nkubeconfig: {}\n",
        kubeconfig_path().display()
    );
    let mut total = 0;
    for (pid, cmd, rss) in &procs {
        let name = cmd
            .split_whitespace()
            .next()
            .and_then(|p| p.rsplit('/').next())
            .unwrap_or("?");
        s += &format!("  {pid:>7}  {name:<26} {:>6} MiB\n", rss / 1024);
        total += rss;
    }
    if !procs.is_empty() {
        s += &format!("  total resident memory: {} MiB\n", total / 1024);
    }
    s += &crate::registry::describe();
    if state == "running" {
        let mut nodes = kubectl(&bin);
        nodes.args([
            "get",
            "nodes",
            "-L",
            "amd.com/gpu.device-id,beta.amd.com/gpu.device-id",
        ]);
        s += &run(nodes, "kubectl get nodes")?;
    }
    Ok(s)
}
