//! Two OCI registries of the test environment (the CNCF distribution registry, built like the control
//! plane) and what a test needs to push small images to them.
//!
//! `cargo xtask cluster up` starts both on 127.0.0.1 with free ports, each with its filesystem storage
//! under `target/testenv/registry/<instance>/`, and writes their addresses to
//! `target/testenv/registry.json`:
//!
//! - `anonymous`: no authentication at all;
//! - `auth`: HTTP basic authentication (htpasswd, bcrypt) with the fixed user [`USERNAME`] and password
//!   [`PASSWORD`], over plain HTTP.
//!
//! Tests read the addresses with [`registries`] and push with [`push_image`] and [`push_index`]:
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use xtask::registry::{push_image, push_index, registries};
//! use xtask::support::label_map;
//!
//! let r = registries()?;
//! let labels = label_map([(aim_api::model::RECOMMENDED_DEPLOYMENTS_LABEL, "[]")]);
//! let digest = push_image(&r.anonymous, None, "models/llama", "v1", &labels, "amd64").await?;
//! let index = push_index(
//!     &r.auth,
//!     Some(r.credentials()),
//!     "models/llama",
//!     "multi",
//!     &[("arm64", label_map([("other", "labels")])), ("amd64", labels.clone())],
//! )
//! .await?;
//! # let _ = (digest, index);
//! # Ok(())
//! # }
//! ```

use crate::testenv;
use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The instance without authentication.
pub const ANONYMOUS: &str = "anonymous";
/// The instance with basic authentication.
pub const AUTH: &str = "auth";
/// The user the `auth` instance accepts.
pub const USERNAME: &str = "aim";
/// That user's password.
pub const PASSWORD: &str = "aim-test-password";
/// Environment variable naming another addresses file than `target/testenv/registry.json`.
pub const REGISTRIES_ENV: &str = "AIM_E2E_REGISTRIES";

/// OCI media types the helpers push.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Addresses (`127.0.0.1:PORT`) of the two registries and the credentials of the `auth` one, as written
/// to `target/testenv/registry.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registries {
    pub anonymous: String,
    pub auth: String,
    pub username: String,
    pub password: String,
}

impl Registries {
    /// `(username, password)` of the `auth` instance, as the push helpers take it.
    pub fn credentials(&self) -> (&str, &str) {
        (&self.username, &self.password)
    }
}

/// The file with the registries' addresses.
pub fn addresses_path() -> PathBuf {
    std::env::var_os(REGISTRIES_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| testenv::workdir().join("registry.json"))
}

/// The running registries, read from [`addresses_path`].
pub fn registries() -> Result<Registries> {
    let path = addresses_path();
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {}: no test registries; start them with `cargo xtask cluster up`",
            path.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

// ---------------------------------------------------------------------------------------------------
// The processes.

fn base_dir() -> PathBuf {
    testenv::workdir().join("registry")
}

fn instance_dir(instance: &str) -> PathBuf {
    base_dir().join(instance)
}

fn config_path(instance: &str) -> PathBuf {
    instance_dir(instance).join("config.yml")
}

fn pid_path(instance: &str) -> PathBuf {
    instance_dir(instance).join("registry.pid")
}

/// What `GET /v2/` answers on a ready instance.
fn ready_status(instance: &str) -> u16 {
    if instance == AUTH { 401 } else { 200 }
}

/// The pid of the instance's process, when it still runs (its command line names its config file).
fn running_pid(instance: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_path(instance))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    cmdline
        .contains(&*config_path(instance).to_string_lossy())
        .then_some(pid)
}

/// The status code of `GET /v2/` at `addr`, if anything answers.
fn probe(addr: &str) -> Option<u16> {
    let mut stream =
        TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A bcrypt htpasswd line for the test user (cost 4: every request checks it, and the password is
/// public anyway).
fn htpasswd_line() -> Result<String> {
    let hash = bcrypt::hash_with_result(PASSWORD, 4)?.format_for_version(bcrypt::Version::TwoY);
    Ok(format!("{USERNAME}:{hash}\n"))
}

fn config_yaml(instance: &str, addr: &str) -> Result<String> {
    let dir = instance_dir(instance);
    let quote = |p: PathBuf| serde_json::to_string(&p.to_string_lossy());
    let mut yaml = format!(
        "# Written by `cargo xtask cluster up`.\n\
         version: 0.1\n\
         log:\n  level: info\n  formatter: text\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: {addr}\n  secret: aim-test-{instance}\n",
        quote(dir.join("data"))?
    );
    if instance == AUTH {
        yaml += &format!(
            "auth:\n  htpasswd:\n    realm: aim-test\n    path: {}\n",
            quote(dir.join("htpasswd"))?
        );
    }
    Ok(yaml)
}

/// Starts one instance on a free port and waits until it answers; returns its address.
fn start_instance(bin: &Path, instance: &str) -> Result<String> {
    let dir = instance_dir(instance);
    std::fs::create_dir_all(dir.join("data"))?;
    if instance == AUTH {
        std::fs::write(dir.join("htpasswd"), htpasswd_line()?)?;
    }
    let mut last_error = None;
    // A free port can be taken between finding and binding it; try a few.
    for _ in 0..3 {
        let addr = format!("127.0.0.1:{}", free_port()?);
        std::fs::write(config_path(instance), config_yaml(instance, &addr)?)?;
        let log_path = dir.join("registry.log");
        let log = std::fs::File::create(&log_path)?;
        let mut child = Command::new(bin)
            .arg("serve")
            .arg(config_path(instance))
            // The registry exports traces over OTLP unless told otherwise (its image sets this too).
            .env("OTEL_TRACES_EXPORTER", "none")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: outlives xtask and does not get the terminal's Ctrl-C.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        std::fs::write(pid_path(instance), child.id().to_string())?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                last_error = Some(format!(
                    "registry {instance} exited ({status}); {}:\n{log}",
                    log_path.display()
                ));
                break;
            }
            match probe(&addr) {
                Some(code) if code == ready_status(instance) => return Ok(addr),
                Some(code) => {
                    let _ = child.kill();
                    bail!(
                        "registry {instance} at {addr} answered GET /v2/ with {code}, expected {}",
                        ready_status(instance)
                    );
                }
                None if Instant::now() > deadline => {
                    let _ = child.kill();
                    bail!(
                        "registry {instance} at {addr} did not answer within 30 s; see {}",
                        log_path.display()
                    );
                }
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    bail!(last_error.unwrap_or_default())
}

/// Starts both registries (reusing instances that still run and answer) and writes
/// `target/testenv/registry.json`.
pub(crate) fn start(bin: &Path) -> Result<Registries> {
    let previous = registries().ok();
    let mut addrs = BTreeMap::new();
    for instance in [ANONYMOUS, AUTH] {
        let known = previous.as_ref().map(|r| match instance {
            ANONYMOUS => r.anonymous.clone(),
            _ => r.auth.clone(),
        });
        if let Some(addr) = known
            && running_pid(instance).is_some()
            && probe(&addr) == Some(ready_status(instance))
        {
            eprintln!("registry {instance} already running at {addr}");
            addrs.insert(instance, addr);
            continue;
        }
        stop_instance(instance)?;
        let addr = start_instance(bin, instance)?;
        eprintln!("registry {instance} listening at {addr}");
        addrs.insert(instance, addr);
    }
    let registries = Registries {
        anonymous: addrs[ANONYMOUS].clone(),
        auth: addrs[AUTH].clone(),
        username: USERNAME.to_string(),
        password: PASSWORD.to_string(),
    };
    let path = testenv::workdir().join("registry.json");
    std::fs::write(&path, serde_json::to_string_pretty(&registries)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(registries)
}

fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(signal)
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

fn stop_instance(instance: &str) -> Result<()> {
    if let Some(pid) = running_pid(instance) {
        signal(pid, "-TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while running_pid(instance).is_some() {
            if Instant::now() > deadline {
                signal(pid, "-KILL");
            }
            if Instant::now() > deadline + Duration::from_secs(5) {
                bail!("registry {instance} (pid {pid}) survived SIGKILL");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = std::fs::remove_file(pid_path(instance));
    Ok(())
}

/// Stops both registries (by their pid files) and forgets what they stored; the configs and logs stay
/// until the next start.
pub(crate) fn stop() -> Result<()> {
    for instance in [ANONYMOUS, AUTH] {
        stop_instance(instance)?;
        let data = instance_dir(instance).join("data");
        if data.exists() {
            std::fs::remove_dir_all(&data)?;
        }
    }
    let _ = std::fs::remove_file(testenv::workdir().join("registry.json"));
    Ok(())
}

/// One line per running instance: name, address, pid.
pub(crate) fn describe() -> String {
    let known = registries().ok();
    let mut s = String::new();
    for instance in [ANONYMOUS, AUTH] {
        let addr = known.as_ref().map_or("?", |r| match instance {
            ANONYMOUS => &r.anonymous,
            _ => &r.auth,
        });
        s += &match running_pid(instance) {
            Some(pid) => format!("registry {instance}: {addr} (pid {pid})\n"),
            None => format!("registry {instance}: not running\n"),
        };
    }
    s
}

// ---------------------------------------------------------------------------------------------------
// Pushing through the OCI distribution API.

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// An empty tar archive (two zero blocks), gzipped.
pub fn empty_layer() -> (Vec<u8>, String) {
    let tar = [0u8; 1024];
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).expect("writing to a Vec");
    (gz.finish().expect("writing to a Vec"), digest(&tar))
}

/// A reference to pushed content: digest and size, as manifests and indexes name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: &'static str,
    pub digest: String,
    pub size: usize,
}

impl Descriptor {
    fn json(&self) -> serde_json::Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.size })
    }
}

/// A client for one repository of one registry, with basic authentication on every request when given.
struct Repository {
    http: reqwest::Client,
    base: String,
    auth: Option<(String, String)>,
}

impl Repository {
    fn new(registry: &str, auth: Option<(&str, &str)>, repository: &str) -> Result<Self> {
        // Needed when reqwest is built with TLS (a workspace build unifies the operator's features);
        // harmless otherwise. Installing twice is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            base: format!("http://{registry}/v2/{repository}"),
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
        })
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, url);
        match &self.auth {
            Some((user, password)) => req.basic_auth(user, Some(password)),
            None => req,
        }
    }

    async fn push_blob(&self, media_type: &'static str, bytes: Vec<u8>) -> Result<Descriptor> {
        let digest = digest(&bytes);
        let size = bytes.len();
        let what = format!("starting a blob upload to {}", self.base);
        let started = self
            .request(
                reqwest::Method::POST,
                &format!("{}/blobs/uploads/", self.base),
            )
            .send()
            .await
            .with_context(|| what.clone())?;
        let started = check(started, &what).await?;
        let location = started
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .with_context(|| format!("{what}: no Location header"))?;
        let mut url = if location.starts_with('/') {
            let host = self.base.split("/v2/").next().unwrap_or_default();
            format!("{host}{location}")
        } else {
            location.to_string()
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url += &format!("digest={digest}");
        let what = format!("uploading blob {digest} to {}", self.base);
        let done = self
            .request(reqwest::Method::PUT, &url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .with_context(|| what.clone())?;
        check(done, &what).await?;
        Ok(Descriptor {
            media_type,
            digest,
            size,
        })
    }

    async fn put_manifest(
        &self,
        reference: &str,
        media_type: &'static str,
        bytes: Vec<u8>,
    ) -> Result<Descriptor> {
        let digest = digest(&bytes);
        let size = bytes.len();
        let what = format!("pushing manifest {}:{reference}", self.base);
        let res = self
            .request(
                reqwest::Method::PUT,
                &format!("{}/manifests/{reference}", self.base),
            )
            .header(reqwest::header::CONTENT_TYPE, media_type)
            .body(bytes)
            .send()
            .await
            .with_context(|| what.clone())?;
        let res = check(res, &what).await?;
        if let Some(answered) = res
            .headers()
            .get("docker-content-digest")
            .and_then(|d| d.to_str().ok())
        {
            ensure!(
                answered == digest,
                "{what}: the registry says {answered}, we computed {digest}"
            );
        }
        Ok(Descriptor {
            media_type,
            digest,
            size,
        })
    }

    /// Pushes the layer and config of an image and returns its manifest (not pushed yet).
    async fn push_image_blobs(
        &self,
        labels: &BTreeMap<String, String>,
        arch: &str,
    ) -> Result<Vec<u8>> {
        let (layer, diff_id) = empty_layer();
        let layer = self.push_blob(LAYER_MEDIA_TYPE, layer).await?;
        let config = json!({
            "architecture": arch,
            "os": "linux",
            "config": { "Labels": labels },
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        });
        let config = self
            .push_blob(CONFIG_MEDIA_TYPE, serde_json::to_vec(&config)?)
            .await?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": config.json(),
            "layers": [layer.json()],
        });
        Ok(serde_json::to_vec(&manifest)?)
    }
}

/// The response when it is a success, else an error naming `what`, the status (e.g. `401
/// Unauthorized`) and the body.
async fn check(res: reqwest::Response, what: &str) -> Result<reqwest::Response> {
    let status = res.status();
    if status.is_success() {
        return Ok(res);
    }
    let body = res.text().await.unwrap_or_default();
    bail!("{what}: {status}: {body}")
}

/// Pushes a single-platform image to `repository:tag` at `registry` (`127.0.0.1:PORT`): one empty
/// layer and an OCI image config with `architecture`, `os: linux` and `config.Labels`. `auth` is
/// `(username, password)` for basic authentication (e.g. [`Registries::credentials`]). Returns the
/// manifest's digest.
pub async fn push_image(
    registry: &str,
    auth: Option<(&str, &str)>,
    repository: &str,
    tag: &str,
    labels: &BTreeMap<String, String>,
    arch: &str,
) -> Result<String> {
    let repo = Repository::new(registry, auth, repository)?;
    let manifest = repo.push_image_blobs(labels, arch).await?;
    Ok(repo
        .put_manifest(tag, MANIFEST_MEDIA_TYPE, manifest)
        .await?
        .digest)
}

/// Pushes one image per `(architecture, labels)` (by digest) and an OCI image index naming them with
/// their platforms (`os: linux`), in the given order, as `repository:tag`. Returns the index's digest.
pub async fn push_index(
    registry: &str,
    auth: Option<(&str, &str)>,
    repository: &str,
    tag: &str,
    platforms: &[(&str, BTreeMap<String, String>)],
) -> Result<String> {
    let repo = Repository::new(registry, auth, repository)?;
    let mut manifests = Vec::new();
    for (arch, labels) in platforms {
        let manifest = repo.push_image_blobs(labels, arch).await?;
        let pushed = repo
            .put_manifest(&digest(&manifest), MANIFEST_MEDIA_TYPE, manifest)
            .await?;
        let mut entry = pushed.json();
        entry["platform"] = json!({ "architecture": arch, "os": "linux" });
        manifests.push(entry);
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": manifests,
    });
    Ok(repo
        .put_manifest(tag, INDEX_MEDIA_TYPE, serde_json::to_vec(&index)?)
        .await?
        .digest)
}

/// Pushes `blobs` (their media types do not matter to the registry) and then `manifest` as
/// `repository:tag`. Returns the manifest's digest.
pub async fn push_manifest_with_blobs(
    registry: &str,
    auth: Option<(&str, &str)>,
    repository: &str,
    tag: &str,
    blobs: Vec<Vec<u8>>,
    media_type: &'static str,
    manifest: Vec<u8>,
) -> Result<String> {
    let repo = Repository::new(registry, auth, repository)?;
    for b in blobs {
        repo.push_blob("application/octet-stream", b).await?;
    }
    Ok(repo.put_manifest(tag, media_type, manifest).await?.digest)
}

/// Reads a blob (`GET /v2/<repository>/blobs/<digest>`).
pub async fn fetch_blob(
    registry: &str,
    auth: Option<(&str, &str)>,
    repository: &str,
    digest: &str,
) -> Result<Vec<u8>> {
    let repo = Repository::new(registry, auth, repository)?;
    let what = format!("fetching blob {digest} from {}", repo.base);
    let res = repo
        .request(
            reqwest::Method::GET,
            &format!("{}/blobs/{digest}", repo.base),
        )
        .send()
        .await
        .with_context(|| what.clone())?;
    Ok(check(res, &what).await?.bytes().await?.to_vec())
}

/// What `GET /v2/<repository>/manifests/<reference>` answered.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub status: u16,
    /// The `Docker-Content-Digest` header.
    pub digest: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// Reads a manifest or index back (accepting both OCI media types); any status is returned, not an
/// error.
pub async fn fetch_manifest(
    registry: &str,
    auth: Option<(&str, &str)>,
    repository: &str,
    reference: &str,
) -> Result<FetchedManifest> {
    let repo = Repository::new(registry, auth, repository)?;
    let res = repo
        .request(
            reqwest::Method::GET,
            &format!("{}/manifests/{reference}", repo.base),
        )
        .header(
            reqwest::header::ACCEPT,
            format!("{MANIFEST_MEDIA_TYPE}, {INDEX_MEDIA_TYPE}"),
        )
        .send()
        .await
        .with_context(|| format!("fetching {}:{reference}", repo.base))?;
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Ok(FetchedManifest {
        status: res.status().as_u16(),
        digest: header("docker-content-digest"),
        content_type: header("content-type"),
        body: res.bytes().await?.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn the_empty_layer_is_an_empty_tar() {
        let (gz, diff_id) = empty_layer();
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(tar, vec![0u8; 1024]);
        // The well-known diff id of the empty layer.
        assert_eq!(
            diff_id,
            "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
        );
    }

    #[test]
    fn the_htpasswd_line_verifies() {
        let line = htpasswd_line().unwrap();
        let (user, hash) = line.trim_end().split_once(':').unwrap();
        assert_eq!(user, USERNAME);
        assert!(hash.starts_with("$2y$04$"));
        assert!(bcrypt::verify(PASSWORD, hash).unwrap());
        assert!(!bcrypt::verify("wrong", hash).unwrap());
    }

    #[test]
    fn the_auth_config_names_the_htpasswd_file() {
        let yaml = config_yaml(AUTH, "127.0.0.1:5000").unwrap();
        assert!(yaml.contains("addr: 127.0.0.1:5000"));
        assert!(yaml.contains("htpasswd:"));
        assert!(
            !config_yaml(ANONYMOUS, "127.0.0.1:5000")
                .unwrap()
                .contains("auth:")
        );
    }
}
