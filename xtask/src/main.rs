//! Developer tasks: `cargo xtask <task>`.

mod bench;
mod crdgen;
mod demo;
mod deps;
mod manifests;

use anyhow::Result;
use clap::{Parser, Subcommand};
use xtask::{image, testenv};

#[derive(Parser)]
#[command(name = "xtask", about = "Developer tasks for aim-operator")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Write one YAML file per CRD into crds/ (or, with --check, fail when crds/ is stale).
    GenCrds {
        /// Compare instead of writing; exit non-zero when a file differs.
        #[arg(long)]
        check: bool,
    },
    /// The local test control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok) and two
    /// OCI registries.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Run the operator on the local cluster with the sample catalog in examples/ and show the templates.
    Demo {
        /// Stop once every template has settled (default: keep the operator running until Ctrl-C).
        #[arg(long)]
        exit_when_settled: bool,
    },
    /// Benchmarks: the criterion benchmarks (the dry-run parser; extra arguments go to criterion), or the
    /// operator on a cluster of the benchmarks' own (`scale`, `discovery`, `chaos`, `services`, and
    /// `smoke`: small sizes of the four, asserting only correctness, for CI).
    Bench {
        #[command(subcommand)]
        what: Option<BenchKind>,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build the test control plane binaries and the registry into the cache (no cluster is started).
    BuildTestenv,
    /// Build a static release binary and write an OCI image layout of it (default target/image).
    Image {
        #[arg(long, default_value = "target/image")]
        out: std::path::PathBuf,
        /// Also push it to a plain-HTTP registry, e.g. `127.0.0.1:5000/aim-operator:dev` (the test registry;
        /// for others push the layout with crane, skopeo or oras).
        #[arg(long)]
        push: Option<String>,
        /// `user:password` for the push (basic authentication).
        #[arg(long, env = "AIM_IMAGE_PUSH_AUTH")]
        push_auth: Option<String>,
    },
    /// Render deploy/manifests/ from the Helm chart (or, with --check, fail when they differ).
    RenderManifests {
        #[arg(long)]
        check: bool,
    },
    /// Fail when a crate under crates/ has tokio, hyper or kube's client/runtime among its normal dependencies.
    CheckDeps,
    /// Run every test: bring the test cluster up, run unit and end-to-end tests, bring it down.
    Test {
        /// Leave the cluster running afterwards.
        #[arg(long)]
        keep: bool,
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
}

#[derive(clap::Args, Clone)]
struct BenchCommon {
    /// An operator binary to measure instead of this workspace's (built in release mode; the smoke run
    /// builds the dev profile).
    #[arg(long)]
    operator: Option<std::path::PathBuf>,
    /// Leave the benchmark cluster (target/bench-testenv) running afterwards.
    #[arg(long)]
    keep_cluster: bool,
}

#[derive(Subcommand)]
enum BenchKind {
    /// Static templates and extra GPU nodes: time to Ready, writes per template, connections, memory,
    /// CPU; then idle: a restart and node updates that must write and reconcile nothing.
    Scale {
        #[arg(long, default_value_t = 5000)]
        templates: usize,
        /// Namespaces to spread them over.
        #[arg(long, default_value_t = 50)]
        namespaces: usize,
        /// Extra fake GPU nodes.
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        /// Node updates without GPU labels in the idle phase.
        #[arg(long, default_value_t = 1000)]
        node_updates: usize,
        /// Container images in each extra node's `status.images`, as a kubelet reports them (a real
        /// node lists dozens; the store keeps none of them).
        #[arg(long, default_value_t = 0)]
        node_images: usize,
        #[command(flatten)]
        common: BenchCommon,
    },
    /// Templates needing discovery against the limit of 10: Jobs at once, order, queue positions,
    /// writes, time to drain.
    Discovery {
        #[arg(long, default_value_t = 200)]
        templates: usize,
        /// How long each dry-run pod runs (Go duration).
        #[arg(long, default_value = "2s")]
        complete_after: String,
        #[command(flatten)]
        common: BenchCommon,
    },
    /// The discovery benchmark while the operator is killed (SIGKILL) and restarted, then
    /// kube-apiserver restarted once.
    Chaos {
        #[arg(long, default_value_t = 200)]
        templates: usize,
        #[arg(long, default_value = "2s")]
        complete_after: String,
        /// SIGKILLs of the operator.
        #[arg(long, default_value_t = 10)]
        kills: usize,
        /// Seed of the kill moments (default: from the clock; printed).
        #[arg(long)]
        seed: Option<u64>,
        #[command(flatten)]
        common: BenchCommon,
    },
    /// AIMServices (one replica each) over static templates on fake GPU nodes: time to all Running,
    /// status, Deployment and Service writes and the GETs and LISTs per service, connections, memory;
    /// then an idle window and a restart, which must write nothing.
    Services {
        #[arg(long, default_value_t = 1000)]
        services: usize,
        /// Namespaces to spread them over (one model and one template each).
        #[arg(long, default_value_t = 10)]
        namespaces: usize,
        /// Extra fake 8-GPU nodes (default: enough for every inference pod).
        #[arg(long)]
        nodes: Option<usize>,
        /// Length of the idle window, in seconds.
        #[arg(long, default_value_t = 10)]
        idle_seconds: u64,
        #[command(flatten)]
        common: BenchCommon,
    },
    /// Small sizes of scale, discovery, chaos and services on one benchmark cluster, asserting only
    /// correctness (all Ready or Running, limits held, nothing written or reconciled while idle). CI
    /// runs it.
    Smoke {
        #[command(flatten)]
        common: BenchCommon,
    },
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Start it (building first when needed), install CRDs and fake nodes, start the registries (their
    /// addresses go to target/testenv/registry.json), print the kubeconfig path.
    Up,
    /// Stop it and leave no process behind.
    Down,
    /// Say what runs.
    Status,
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::GenCrds { check } => {
            // The chart installs the same CRDs (Helm applies a chart's crds/ before its templates).
            let root = testenv::workspace_root();
            crdgen::run(&root.join("crds"), check)?;
            crdgen::run(&root.join("deploy/helm/aim-operator/crds"), check)
        }
        Task::Cluster {
            action: ClusterAction::Up,
        } => {
            let kubeconfig = testenv::up()?;
            println!("{}", kubeconfig.display());
            Ok(())
        }
        Task::Cluster {
            action: ClusterAction::Down,
        } => testenv::down(),
        Task::Cluster {
            action: ClusterAction::Status,
        } => {
            print!("{}", testenv::status()?);
            Ok(())
        }
        Task::Test { keep, args } => test(keep, &args),
        Task::Demo { exit_when_settled } => demo::run(exit_when_settled),
        Task::Bench {
            what: Some(kind), ..
        } => bench::main(kind),
        Task::Bench { what: None, args } => {
            let status = std::process::Command::new(
                std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
            )
            .current_dir(testenv::workspace_root())
            .args(["bench", "-p", "aim-discovery", "--"])
            .args(&args)
            .status()?;
            anyhow::ensure!(status.success(), "benchmarks failed ({status})");
            Ok(())
        }
        Task::CheckDeps => deps::check(),
        Task::Image {
            out,
            push,
            push_auth,
        } => {
            let dir = image::build(&testenv::workspace_root().join(out))?;
            if let Some(target) = push {
                let auth = push_auth
                    .as_deref()
                    .map(|a| a.split_once(':').unwrap_or((a, "")));
                let digest = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(image::push(&dir, &target, auth))?;
                println!("pushed {target} ({digest})");
            }
            Ok(())
        }
        Task::RenderManifests { check } => manifests::run(check),
        Task::BuildTestenv => {
            println!("{}", testenv::ensure_binaries()?.display());
            println!("{}", testenv::ensure_registry()?.display());
            Ok(())
        }
    }
}

/// `cargo xtask test`: unit and end-to-end tests against the real control plane. Ends with one line
/// `total: N passed, M failed` (also written to `target/test-summary.txt`).
fn test(keep: bool, args: &[String]) -> Result<()> {
    use std::io::{BufRead, Write};
    // e2e_image runs the image's own binary in a root of the image's files.
    image::build(&testenv::workspace_root().join("target/image"))?;
    let kubeconfig = testenv::up()?;
    let child =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(testenv::workspace_root())
            .args(["test", "--workspace"])
            .args(args)
            .env(testenv::KUBECONFIG_ENV, &kubeconfig)
            .stdout(std::process::Stdio::piped())
            .spawn();
    let (mut passed, mut failed) = (0u64, 0u64);
    let status = child.and_then(|mut child| {
        let stdout = child.stdout.take().expect("piped stdout");
        let mut out = std::io::stdout().lock();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line?;
            if let Some(rest) = line.strip_prefix("test result: ") {
                let count = |word: &str| {
                    rest.split(';')
                        .find_map(|part| {
                            part.trim()
                                .strip_suffix(word)?
                                .trim()
                                .rsplit(' ')
                                .next()?
                                .parse::<u64>()
                                .ok()
                        })
                        .unwrap_or(0)
                };
                passed += count("passed");
                failed += count("failed");
            }
            writeln!(out, "{line}")?;
        }
        child.wait()
    });
    let down = if keep { Ok(()) } else { testenv::down() };
    let status = status?;
    down?;
    let summary = format!("total: {passed} passed, {failed} failed");
    std::fs::write(
        testenv::workspace_root().join("target/test-summary.txt"),
        format!("{summary}\n"),
    )?;
    println!("{summary}");
    anyhow::ensure!(status.success(), "tests failed ({status})");
    Ok(())
}
