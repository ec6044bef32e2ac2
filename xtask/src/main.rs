//! Developer tasks: `cargo xtask <task>`.

mod crdgen;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

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
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::GenCrds { check } => crdgen::run(&workspace_root().join("crds"), check),
    }
}
