//! `cargo xtask check-deps`: the pure crates under `crates/` stay free of I/O. Their normal dependency
//! trees must not contain an async runtime, an HTTP stack or kube's client and runtime.

use crate::testenv;
use anyhow::{Result, bail};
use std::collections::{BTreeMap, BTreeSet};
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

/// `cargo tree -p <krate> -e normal --no-dedupe --prefix depth`: every path of the normal dependency tree,
/// one `<depth><name> v<version> …` line per package on it.
fn cargo_tree(krate: &str) -> Result<String> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(testenv::workspace_root())
        .args(["tree", "-p", krate, "-e", "normal", "--no-dedupe"])
        .args(["--prefix", "depth", "--format", "{p}"])
        .output()?;
    if !out.status.success() {
        bail!(
            "cargo tree -p {krate} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// For each forbidden package in a `--prefix depth` tree: the package (`name vX.Y.Z`) and the crate's
/// direct dependencies it comes through (`its own Cargo.toml` when it is one of them).
fn forbidden_in(tree: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut direct = String::new();
    for line in tree.lines() {
        let digits = line.chars().take_while(char::is_ascii_digit).count();
        let Ok(depth) = line[..digits].parse::<usize>() else {
            continue;
        };
        let mut words = line[digits..].split_whitespace();
        let (Some(name), Some(version)) = (words.next(), words.next()) else {
            continue;
        };
        let package = format!("{name} {version}");
        if depth == 1 {
            direct = package.clone();
        }
        if depth >= 1 && FORBIDDEN.contains(&name) {
            let via = if depth == 1 {
                "its own Cargo.toml".to_string()
            } else {
                direct.clone()
            };
            found.entry(package).or_default().insert(via);
        }
    }
    found
}

/// Fails, naming each crate, forbidden package and the direct dependency it comes through, when a pure
/// crate depends on any of [`FORBIDDEN`] (dev-dependencies do not count).
pub fn check() -> Result<()> {
    let mut problems = Vec::new();
    for krate in pure_crates()? {
        let found = forbidden_in(&cargo_tree(&krate)?);
        for (package, via) in &found {
            let via: Vec<&str> = via.iter().map(String::as_str).collect();
            problems.push(format!(
                "{krate} depends on {package} via {}",
                via.join(", ")
            ));
        }
        println!(
            "{krate}: {}",
            if found.is_empty() { "pure" } else { "NOT pure" }
        );
    }
    if !problems.is_empty() {
        bail!(
            "pure crates must not do I/O ({}):\n{}\n(`cargo tree -p <crate> -e normal -i <package>` shows the whole path)",
            FORBIDDEN.join(", "),
            problems.join("\n")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_direct_dependency_a_forbidden_package_comes_through() {
        let tree = "0aim-resolve v0.1.0 (/w/crates/aim-resolve)\n\
                    1aim-hardware v0.1.0 (/w/crates/aim-hardware)\n\
                    2tokio v1.54.1\n\
                    3pin-project-lite v0.2.16\n\
                    1kube v5.0.0\n\
                    2kube-client v5.0.0\n\
                    3tokio v1.54.1\n\
                    1serde v1.0.228\n\
                    1hyper v1.12.0\n";
        let found = forbidden_in(tree);
        let got: Vec<(String, Vec<String>)> = found
            .into_iter()
            .map(|(k, v)| (k, v.into_iter().collect()))
            .collect();
        assert_eq!(
            got,
            [
                ("hyper v1.12.0".into(), vec!["its own Cargo.toml".into()]),
                ("kube-client v5.0.0".into(), vec!["kube v5.0.0".into()]),
                (
                    "tokio v1.54.1".into(),
                    vec!["aim-hardware v0.1.0".into(), "kube v5.0.0".into()]
                ),
            ]
        );
        assert!(forbidden_in("0aim-api v0.1.0 (/w)\n1serde v1.0.228\n").is_empty());
    }
}
