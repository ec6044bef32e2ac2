//! `cargo xtask demo`: the local control plane, the operator, and the sample catalog in `examples/`,
//! with the templates' table printed as they settle.

use anyhow::{Context, Result, bail};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use xtask::testenv;

const NAMESPACES_WITH_DISCOVERY: [&str; 2] = ["aim-system", "ml-research"];

struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

fn table(bin: &std::path::Path) -> Result<String> {
    let out = testenv::kubectl(bin)
        .args(["get", "aimtpl,aimcltpl", "-A"])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn settled(table: &str) -> bool {
    let rows: Vec<&str> = table.lines().filter(|l| l.contains("qwen3-32b")).collect();
    rows.len() >= 4
        && rows.iter().all(|r| {
            !r.contains(" Pending ")
                && !r.contains(" Progressing ")
                && r.split_whitespace().count() > 4
        })
}

pub fn run(exit_when_settled: bool) -> Result<()> {
    let kubeconfig = testenv::up()?;
    let bin = testenv::ensure_binaries()?;
    let root = testenv::workspace_root();
    eprintln!("building the operator");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "--quiet", "-p", "aim-operator"])
        .status()?;
    if !status.success() {
        bail!("building aim-operator failed");
    }
    let mut apply = testenv::kubectl(&bin);
    apply
        .args(["apply", "--server-side", "-f"])
        .arg(root.join("examples/00-namespaces.yaml"));
    let out = apply.output()?;
    if !out.status.success() {
        bail!(
            "creating namespaces: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The simulated discovery pods print the sample dry-run (a real AIM image prints its own).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = xtask::support::client().await;
        for ns in NAMESPACES_WITH_DISCOVERY {
            let file = root.join(format!("examples/dry-run/{ns}.txt"));
            let log =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            xtask::support::canned_logs(&client, ns, "discovery", &log).await;
        }
        anyhow::Ok(())
    })?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let log_file = std::fs::File::create(testenv::workdir().join("operator.log"))?;
    let child = Command::new(target.join("debug/aim-operator"))
        .env("KUBECONFIG", &kubeconfig)
        .env("AIM_SYSTEM_NAMESPACE", "aim-system")
        .args(["--metrics-bind-address", "127.0.0.1:0"])
        .stdout(Stdio::from(log_file.try_clone()?))
        .stderr(Stdio::from(log_file))
        .spawn()
        .context("starting the operator")?;
    let _operator = Operator(child);
    eprintln!(
        "operator running (log: {})",
        testenv::workdir().join("operator.log").display()
    );
    let mut apply = testenv::kubectl(&bin);
    apply
        .args(["apply", "--server-side", "-f"])
        .arg(root.join("examples"));
    let out = apply.output()?;
    if !out.status.success() {
        bail!(
            "applying examples/: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    print!("{}", String::from_utf8_lossy(&out.stdout));
    let started = Instant::now();
    let mut last = String::new();
    let mut done = false;
    loop {
        let now = table(&bin)?;
        if now != last {
            println!("\n--- after {:.1}s\n{now}", started.elapsed().as_secs_f32());
            last = now;
        }
        if settled(&last) && !done {
            done = true;
            println!(
                "all templates settled in {:.1}s",
                started.elapsed().as_secs_f32()
            );
            println!("explore with: export KUBECONFIG={}", kubeconfig.display());
            println!("  kubectl get aimtpl,aimcltpl -A");
            println!("  kubectl describe aimtpl -n ml-research qwen3-32b-throughput");
            println!(
                "  kubectl get aimcltpl qwen3-32b-mi355x -o jsonpath='{{.status.conditions}}'"
            );
            if exit_when_settled {
                return Ok(());
            }
            println!(
                "the operator keeps running; Ctrl-C stops it (`cargo xtask cluster down` stops the cluster)"
            );
        }
        if !done && started.elapsed() > Duration::from_secs(180) {
            bail!(
                "templates did not settle within 3 minutes; see {}",
                testenv::workdir().join("operator.log").display()
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
