//! `cargo xtask demo`: the local control plane and its registry, the operator, and the sample catalog in
//! `examples/`: a cluster model whose image (pushed to the local registry) recommends two deployments,
//! the templates it creates, and a team's own templates, with the table printed as they settle.

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

/// The image `examples/10-models.yaml` names; the demo pushes one of that name to the local registry.
const IMAGE: &str = "amdenterpriseai/aim-qwen-qwen3-32b:0.8.5";

/// The deployments the demo image recommends: one on a GPU the test cluster has (its dry-run is
/// `examples/dry-run/aim-system.txt`), one on a GPU it lacks.
const DEPLOYMENTS: &str = r#"[{"gpuModel":"MI300X","gpuCount":1,"precision":"fp16","metric":"latency","description":"interactive"},
{"gpuModel":"MI355X","gpuCount":1,"precision":"fp4","metric":"latency","description":"needs MI355X"}]"#;

fn table(bin: &std::path::Path) -> Result<String> {
    let out = testenv::kubectl(bin)
        .args(["get", "aimclmdl,aimcltpl,aimtpl,aimtc,aimsvc", "-A"])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The model is Ready with its two templates, the team's two templates have settled too (one of them once
/// its cache is warm), and both services run.
fn settled(table: &str) -> bool {
    let rows: Vec<&str> = table.lines().filter(|l| l.contains("qwen3-32b")).collect();
    let model_ready = rows
        .iter()
        .any(|r| r.starts_with("aimclustermodel") && r.contains(" Ready "));
    let services: Vec<&&str> = rows
        .iter()
        .filter(|r| r.contains("aimservice.aim"))
        .collect();
    let cache_warm = rows
        .iter()
        .any(|r| r.contains("aimtemplatecache.aim") && r.contains(" Warm "));
    rows.len() >= 8
        && model_ready
        && cache_warm
        && services.len() >= 2
        && services.iter().all(|r| r.contains(" Running "))
        && rows.iter().all(|r| {
            !r.contains(" Pending ")
                && !r.contains(" Progressing ")
                && !r.contains(" Starting ")
                && !r.contains(" Warming ")
        })
}

pub fn run(exit_when_settled: bool) -> Result<()> {
    let kubeconfig = testenv::up()?;
    let registry = xtask::registry::registries()?.anonymous;
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
        // The model's image: an empty layer and the labels a real AIM image carries.
        let (repository, tag) = IMAGE.split_once(':').expect("tagged image");
        let labels = [(
            aim_api::RECOMMENDED_DEPLOYMENTS_LABEL.to_string(),
            DEPLOYMENTS.replace('\n', ""),
        )]
        .into();
        let digest =
            xtask::registry::push_image(&registry, None, repository, tag, &labels, "amd64").await?;
        eprintln!("pushed {registry}/{IMAGE} ({digest})");
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
        .args(["--insecure-registries", &registry])
        .stdout(Stdio::from(log_file.try_clone()?))
        .stderr(Stdio::from(log_file))
        .spawn()
        .context("starting the operator")?;
    let _operator = Operator(child);
    eprintln!(
        "operator running (log: {})",
        testenv::workdir().join("operator.log").display()
    );
    // The catalog, with the model's image in the local registry.
    let mut catalog = String::new();
    let mut files: Vec<_> = std::fs::read_dir(root.join("examples"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        catalog.push_str("---\n");
        catalog.push_str(&text.replace(IMAGE, &format!("{registry}/{IMAGE}")));
        catalog.push('\n');
    }
    let mut apply = testenv::kubectl(&bin);
    apply
        .args(["apply", "--server-side", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = apply.spawn()?;
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(catalog.as_bytes())?;
    }
    let out = child.wait_with_output()?;
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
                "the model, its templates and the services settled in {:.1}s",
                started.elapsed().as_secs_f32()
            );
            println!("explore with: export KUBECONFIG={}", kubeconfig.display());
            println!("  kubectl get aimclmdl,aimcltpl,aimtpl,aimtc,aimsvc -A");
            println!("  kubectl get aimtc,pvc,job -n ml-research");
            println!(
                "  kubectl get aimsvc -n ml-apps qwen3-chat -o jsonpath='{{.status.templateCandidates}}'"
            );
            println!("  kubectl get deploy,svc,pods -n ml-apps -o wide");
            println!("  kubectl get aimclmdl qwen-qwen3-32b -o yaml");
            println!("  kubectl describe aimtpl -n ml-research qwen3-32b-throughput");
            println!(
                "  kubectl get aimcltpl -l aim.eai.amd.com/model=qwen-qwen3-32b -o custom-columns=NAME:.metadata.name,STATUS:.status.status,WHY:.status.conditions[-1].message"
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
                "the model and templates did not settle within 3 minutes; see {}",
                testenv::workdir().join("operator.log").display()
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
