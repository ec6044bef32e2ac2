//! `cargo xtask check-deps`: the pure crates under `crates/` stay free of I/O. Their normal dependency
//! trees must not contain an async runtime, an HTTP stack or kube's client and runtime.

use crate::testenv;
use anyhow::{Result, bail};
use std::process::Command;

/// Packages that mean I/O.
const FORBIDDEN: [&str; 5] = [
    "tokio",
    "hyper",
    "hyper-util",
    "kube-client",
    "kube-runtime",
];

/// Names of the packages under `crates/`.
fn pure_crates() -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(testenv::workspace_root().join("crates"))? {
        let manifest = entry?.path().join("Cargo.toml");
        if let Ok(text) = std::fs::read_to_string(&manifest)
            && let Some(name) = text.lines().find_map(|l| {
                l.trim()
                    .strip_prefix("name = \"")
                    .and_then(|r| r.strip_suffix('"'))
            })
        {
            out.push(name.to_string());
        }
    }
    out.sort();
    Ok(out)
}

/// Fails with the offending paths when a pure crate depends on any of [`FORBIDDEN`].
pub fn check() -> Result<()> {
    let mut problems = Vec::new();
    for krate in pure_crates()? {
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(testenv::workspace_root())
            .args([
                "tree", "-p", &krate, "-e", "normal", "--prefix", "none", "--format", "{p}",
            ])
            .output()?;
        if !out.status.success() {
            bail!(
                "cargo tree -p {krate} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let tree = String::from_utf8_lossy(&out.stdout);
        let mut found: Vec<&str> = tree
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|name| FORBIDDEN.contains(name))
            .collect();
        found.sort();
        found.dedup();
        if !found.is_empty() {
            problems.push(format!("{krate} depends on {}", found.join(", ")));
        }
        println!(
            "{krate}: {}",
            if found.is_empty() { "pure" } else { "NOT pure" }
        );
    }
    if !problems.is_empty() {
        bail!(
            "pure crates must not do I/O ({}):\n{}\n(`cargo tree -p <crate> -e normal -i <package>` shows the path)",
            FORBIDDEN.join(", "),
            problems.join("\n")
        );
    }
    Ok(())
}
