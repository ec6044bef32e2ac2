//! `cargo xtask render-manifests`: `deploy/manifests/` rendered from the Helm chart with its default
//! values (namespace `aim-system`), one file per chart template, so the plain manifests and the chart never
//! drift apart (`--check` fails when they did). `00-namespace.yaml` is written by hand: a chart does not
//! create its namespace.

use crate::testenv;
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;

const HEADER: &str =
    "# Rendered by `cargo xtask render-manifests` from deploy/helm/aim-operator. Do not edit.\n";

/// Order of application: identity, permissions, then what runs.
fn file_name(template: &str) -> String {
    let order = match template {
        "serviceaccount.yaml" => 10,
        "rbac.yaml" => 20,
        "aggregated-roles.yaml" => 25,
        "service.yaml" => 30,
        "deployment.yaml" => 40,
        _ => 50,
    };
    format!("{order}-{template}")
}

fn rendered() -> Result<BTreeMap<String, String>> {
    let helm = testenv::ensure_helm()?;
    let root = testenv::workspace_root();
    let out = std::process::Command::new(&helm)
        .args(["template", "aim-operator"])
        .arg(root.join("deploy/helm/aim-operator"))
        .args(["--namespace", "aim-system"])
        .output()
        .context("running helm template")?;
    if !out.status.success() {
        bail!(
            "helm template failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8(out.stdout)?;
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for doc in text.split("\n---\n") {
        let doc = doc.trim_start_matches("---\n");
        let Some(source) = doc
            .lines()
            .find_map(|l| l.strip_prefix("# Source: aim-operator/templates/"))
        else {
            continue;
        };
        let body: String = doc
            .lines()
            .filter(|l| !l.starts_with("# Source:"))
            .map(|l| format!("{l}\n"))
            .collect();
        let file = files
            .entry(file_name(source.trim()))
            .or_insert_with(|| HEADER.to_string());
        if file.len() > HEADER.len() {
            file.push_str("---\n");
        }
        file.push_str(&body);
    }
    if files.is_empty() {
        bail!("helm template rendered nothing");
    }
    Ok(files)
}

pub fn run(check: bool) -> Result<()> {
    let dir = testenv::workspace_root().join("deploy/manifests");
    let files = rendered()?;
    let generated = |name: &str| name != "00-namespace.yaml";
    if check {
        let mut stale = Vec::new();
        for (name, content) in &files {
            match std::fs::read_to_string(dir.join(name)) {
                Ok(existing) if &existing == content => {}
                _ => stale.push(name.clone()),
            }
        }
        for entry in std::fs::read_dir(&dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if generated(&name) && !files.contains_key(&name) {
                stale.push(format!("{name} (not rendered from the chart)"));
            }
        }
        if !stale.is_empty() {
            bail!(
                "deploy/manifests/ differs from the chart, run `cargo xtask render-manifests`: {}",
                stale.join(", ")
            );
        }
        println!(
            "deploy/manifests/ matches the chart ({} files)",
            files.len()
        );
        return Ok(());
    }
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        if generated(&entry.file_name().to_string_lossy()) {
            std::fs::remove_file(entry.path())?;
        }
    }
    for (name, content) in &files {
        std::fs::write(dir.join(name), content)?;
    }
    println!("wrote {} files to {}", files.len(), dir.display());
    Ok(())
}
