//! `cargo xtask image`: an OCI image of the operator without Docker. One layer holds the statically linked
//! release binary and the build machine's CA bundle (the operator reads image labels from registries over
//! HTTPS); the image runs the binary as the non-root user 65532 and needs no shell. The result is written
//! as an OCI image layout (a directory `skopeo`, `crane` or `oras` can push), and `--push` sends it to a
//! plain-HTTP registry such as the test registry.

use crate::testenv;
use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Where the binary sits in the image.
pub const ENTRYPOINT: &str = "/aim-operator";
/// User and group the image runs as.
pub const USER: &str = "65532:65532";

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// The digest and size of a blob written to the layout.
#[derive(Debug, Clone)]
pub struct Blob {
    pub digest: String,
    pub size: usize,
}

fn write_blob(dir: &Path, bytes: &[u8]) -> Result<Blob> {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    std::fs::write(blobs.join(&hex), bytes)?;
    Ok(Blob {
        digest: format!("sha256:{hex}"),
        size: bytes.len(),
    })
}

/// Where the CA bundle sits in the image (where rustls' platform verifier and most TLS stacks look).
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A ustar archive with one regular file `name` (mode 0755, owner root, time 0: reproducible).
pub fn tar_one_file(name: &str, content: &[u8]) -> Vec<u8> {
    tar_files(&[(name, content, 0o755)])
}

/// A ustar archive of regular files `(name, content, mode)`, owner root, time 0 (reproducible).
pub fn tar_files(files: &[(&str, &[u8], u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, content, mode) in files {
        out.extend_from_slice(&tar_entry(name, content, *mode));
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn tar_entry(name: &str, content: &[u8], mode: u64) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |field: &mut [u8], value: u64| {
        let text = format!("{value:0width$o}\0", width = field.len() - 1);
        field.copy_from_slice(text.as_bytes());
    };
    octal(&mut header[100..108], mode);
    octal(&mut header[108..116], 0);
    octal(&mut header[116..124], 0);
    octal(&mut header[124..136], content.len() as u64);
    octal(&mut header[136..148], 0);
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u64 = header.iter().map(|b| u64::from(*b)).sum();
    let text = format!("{sum:06o}\0 ");
    header[148..156].copy_from_slice(text.as_bytes());
    let mut out = Vec::with_capacity(512 + content.len() + 512);
    out.extend_from_slice(&header);
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

/// Writes an OCI image layout for `binary` (and the CA bundle, when given) into `dir` (replacing what was
/// there). Returns the manifest.
pub fn layout(binary: &[u8], ca_bundle: Option<&[u8]>, dir: &Path, version: &str) -> Result<Blob> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let mut files: Vec<(&str, &[u8], u64)> =
        vec![(ENTRYPOINT.trim_start_matches('/'), binary, 0o755)];
    if let Some(ca) = ca_bundle {
        files.push((CA_BUNDLE.trim_start_matches('/'), ca, 0o644));
    }
    let layer = write_blob(dir, &tar_files(&files))?;
    let labels = serde_json::json!({
        "org.opencontainers.image.title": "aim-operator",
        "org.opencontainers.image.description": "Kubernetes operator for AMD Inference Microservice templates",
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.licenses": "Apache-2.0",
    });
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "User": USER, "Entrypoint": [ENTRYPOINT], "Labels": labels },
        "rootfs": { "type": "layers", "diff_ids": [layer.digest] },
    });
    let config = write_blob(dir, &serde_json::to_vec(&config)?)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": { "mediaType": CONFIG, "digest": config.digest, "size": config.size },
        "layers": [{ "mediaType": LAYER, "digest": layer.digest, "size": layer.size }],
        "annotations": labels,
    });
    let manifest = write_blob(dir, &serde_json::to_vec(&manifest)?)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": MANIFEST, "digest": manifest.digest, "size": manifest.size,
            "platform": { "architecture": "amd64", "os": "linux" },
            "annotations": { "org.opencontainers.image.ref.name": version },
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(manifest)
}

/// Builds the static release binary (glibc, `crt-static`: the musl target is not installable here) and
/// writes the image layout to `out`.
pub fn build(out: &Path) -> Result<PathBuf> {
    let root = testenv::workspace_root();
    let target = "x86_64-unknown-linux-gnu";
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&root)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .args([
                "build",
                "--release",
                "-p",
                "aim-operator",
                "--target",
                target,
            ])
            .status()?;
    if !status.success() {
        bail!("building the static operator binary failed ({status})");
    }
    let bin = root.join(format!("target/{target}/release/aim-operator"));
    // Symbols are of no use in the image; strip a copy when binutils are there.
    let stripped = root.join(format!("target/{target}/release/aim-operator.stripped"));
    let bin = match std::process::Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(&bin)
        .status()
    {
        Ok(s) if s.success() => stripped,
        _ => bin,
    };
    let bytes = std::fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?;
    if has_interpreter(&bytes) {
        bail!("{} is dynamically linked", bin.display());
    }
    let ca = std::fs::read(CA_BUNDLE).with_context(|| {
        format!("reading {CA_BUNDLE} (install the ca-certificates package): the image needs it to verify registries")
    })?;
    let manifest = layout(&bytes, Some(&ca), out, env!("CARGO_PKG_VERSION"))?;
    println!(
        "wrote {} ({} binary of {:.1} MiB, manifest {})",
        out.display(),
        ENTRYPOINT,
        bytes.len() as f64 / 1048576.0,
        manifest.digest
    );
    Ok(out.to_path_buf())
}

/// Pushes the image of the layout in `dir` to `target` (`host:port/repository:tag`, plain HTTP) through the
/// OCI distribution API. Returns the manifest's digest.
pub async fn push(dir: &Path, target: &str, auth: Option<(&str, &str)>) -> Result<String> {
    let (registry, rest) = target
        .split_once('/')
        .with_context(|| format!("{target:?} is not host:port/repository:tag"))?;
    let (repository, tag) = rest
        .rsplit_once(':')
        .with_context(|| format!("{target:?} has no tag"))?;
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json"))?)?;
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .context("index.json names no manifest")?;
    let blob = |digest: &str| -> Result<Vec<u8>> {
        let hex = digest
            .strip_prefix("sha256:")
            .context("not a sha256 digest")?;
        Ok(std::fs::read(dir.join("blobs/sha256").join(hex))?)
    };
    let manifest_bytes = blob(manifest_digest)?;
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes)?;
    let mut blobs = vec![blob(
        manifest["config"]["digest"].as_str().context("no config")?,
    )?];
    for layer in manifest["layers"].as_array().context("no layers")? {
        blobs.push(blob(
            layer["digest"].as_str().context("a layer without digest")?,
        )?);
    }
    crate::registry::push_manifest_with_blobs(
        registry,
        auth,
        repository,
        tag,
        blobs,
        MANIFEST,
        manifest_bytes,
    )
    .await
}

/// Whether an ELF64 executable names a dynamic loader (a `PT_INTERP` program header).
pub fn has_interpreter(elf: &[u8]) -> bool {
    let read = |at: usize, n: usize| -> Option<u64> {
        let b = elf.get(at..at + n)?;
        Some(
            b.iter()
                .rev()
                .fold(0u64, |acc, x| (acc << 8) | u64::from(*x)),
        )
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (read(0x20, 8), read(0x36, 2), read(0x38, 2))
    else {
        return false;
    };
    (0..phnum).any(|i| {
        let at = usize::try_from(phoff + i * phentsize).unwrap_or(usize::MAX);
        read(at, 4) == Some(3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_json(dir: &Path, digest: &str) -> serde_json::Value {
        let hex = digest.strip_prefix("sha256:").unwrap();
        serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(hex)).unwrap()).unwrap()
    }

    #[test]
    fn a_dynamically_linked_binary_is_told_apart() {
        // This test binary itself is dynamically linked.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(has_interpreter(&me));
        assert!(!has_interpreter(b"\x7fELF"));
    }

    #[test]
    fn the_layout_runs_the_binary_as_a_non_root_user_without_a_shell() {
        let dir = std::env::temp_dir().join(format!("aim-image-test-{}", std::process::id()));
        let binary = b"\x7fELF not really a binary".to_vec();
        let ca = b"-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n".to_vec();
        let manifest = layout(&binary, Some(&ca), &dir, "1.2.3").unwrap();
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"][0]["digest"], manifest.digest.as_str());
        assert_eq!(
            index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
            "1.2.3"
        );
        let m = read_json(&dir, &manifest.digest);
        let config = read_json(&dir, m["config"]["digest"].as_str().unwrap());
        assert_eq!(config["config"]["User"], "65532:65532");
        assert_eq!(
            config["config"]["Entrypoint"],
            serde_json::json!(["/aim-operator"])
        );
        assert_eq!(
            config["config"]["Labels"]["org.opencontainers.image.version"],
            "1.2.3"
        );
        assert_eq!(config["os"], "linux");
        // Every digest is the SHA-256 of its blob, and the layer holds exactly the binary.
        for entry in std::fs::read_dir(dir.join("blobs/sha256")).unwrap() {
            let entry = entry.unwrap();
            let bytes = std::fs::read(entry.path()).unwrap();
            let hex: String = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(entry.file_name().to_string_lossy(), hex);
        }
        let layer_digest = m["layers"][0]["digest"].as_str().unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][0], layer_digest);
        let tar = std::fs::read(
            dir.join("blobs/sha256")
                .join(layer_digest.strip_prefix("sha256:").unwrap()),
        )
        .unwrap();
        assert_eq!(&tar[..12], b"aim-operator");
        assert_eq!(&tar[100..107], b"0000755", "executable");
        assert_eq!(&tar[512..512 + binary.len()], &binary[..]);
        // The CA bundle follows, readable by everyone.
        let second = 512 + binary.len().div_ceil(512) * 512;
        assert_eq!(
            &tar[second..second + 33],
            b"etc/ssl/certs/ca-certificates.crt"
        );
        assert_eq!(&tar[second + 100..second + 107], b"0000644");
        assert_eq!(&tar[second + 512..second + 512 + ca.len()], &ca[..]);
        assert_eq!(tar.len() % 512, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
