//! End-to-end: the operator's image resolves registry host names (M-01). The image's own files (the layer
//! of `cargo xtask image`: the static release binary and a CA bundle) are unpacked into an empty root,
//! with the devices every container runtime adds (`/dev/null`, `zero`, `random`, `urandom`), an
//! `/etc/resolv.conf` naming a DNS server this test runs and the test cluster's kubeconfig; the binary runs
//! there, chrooted, as the image's user, with nothing of the build machine's libc or NSS configuration. It reads a model's labels from the test registry addressed by a name only that DNS
//! server knows, and says a name nobody knows cannot be resolved.
//!
//! The image layout comes from `$AIM_E2E_IMAGE`, else `target/image` (`cargo xtask test` builds it
//! first; alone: `cargo xtask image`).

mod common;

use aim_api::conditions::{reasons, types};
use aim_api::*;
use common::*;
use kube::api::Api;
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xtask::support::{TestNamespace, WAIT, wait_for};

/// Where the test's DNS server listens: port 53, as `resolv.conf` cannot name another, on a loopback
/// address nothing else here uses.
const DNS_ADDRESS: &str = "127.0.0.153";
/// The name of the test registry that only the test's DNS server knows.
const REGISTRY_NAME: &str = "registry.aim-e2e.test";
/// The image's user (`image::USER`).
const IMAGE_UID: u32 = 65532;

fn image_layout() -> PathBuf {
    std::env::var_os("AIM_E2E_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| xtask::testenv::workspace_root().join("target/image"))
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "reading {}: {e}; build the image with `cargo xtask image` (`cargo xtask test` does)",
            path.display()
        )
    }))
    .unwrap()
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// An empty directory holding only the image's layers, unpacked.
fn unpack(layout: &Path, root: &Path) {
    let index = json(&layout.join("index.json"));
    let manifest = json(&blob(
        layout,
        index["manifests"][0]["digest"].as_str().unwrap(),
    ));
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root).unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let status = Command::new("tar")
            .arg("-xf")
            .arg(blob(layout, layer["digest"].as_str().unwrap()))
            .arg("-C")
            .arg(root)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "unpacking a layer of {}",
            layout.display()
        );
    }
}

/// The test cluster's kubeconfig as the chart's ServiceAccount, with its certificate files copied into
/// `root/kube` and named by their paths there; returns the kubeconfig's path inside the root.
fn kubeconfig_into(root: &Path) -> &'static str {
    let source = service_account_kubeconfig("image-sa-kubeconfig.yaml");
    let mut config = kube::config::Kubeconfig::read_from(&source).unwrap();
    let dir = root.join("kube");
    std::fs::create_dir_all(&dir).unwrap();
    let mut n = 0;
    let mut copy = |path: &mut Option<String>| {
        if let Some(p) = path.as_mut() {
            n += 1;
            let inside = format!("/kube/file-{n}");
            std::fs::copy(&*p, root.join(inside.trim_start_matches('/'))).unwrap();
            *p = inside;
        }
    };
    for c in &mut config.clusters {
        if let Some(c) = c.cluster.as_mut() {
            copy(&mut c.certificate_authority);
        }
    }
    for a in &mut config.auth_infos {
        if let Some(a) = a.auth_info.as_mut() {
            copy(&mut a.client_certificate);
            copy(&mut a.client_key);
        }
    }
    std::fs::write(
        dir.join("config"),
        serde_saphyr::to_string(&config).unwrap(),
    )
    .unwrap();
    // Readable by the image's user.
    Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&dir)
        .status()
        .unwrap();
    "/kube/config"
}

// --- A DNS server that knows one name. ---

/// The answer to one DNS query (RFC 1035): `A` of `name` for [`REGISTRY_NAME`], no records for its other
/// types, NXDOMAIN for any other name. `None` for what is not a query.
fn dns_answer(query: &[u8], address: [u8; 4]) -> Option<(String, Vec<u8>)> {
    if query.len() < 12 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    // The question: labels, then type and class.
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question = &query[12..at + 4];
    let name = labels.join(".");
    let known = name == REGISTRY_NAME;
    let answers = u16::from(known && qtype == 1);
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&query[..2]);
    // QR, the query's RD, RA; NOERROR or NXDOMAIN.
    out.push(0x80 | (query[2] & 0x01));
    out.push(if known { 0x80 } else { 0x83 });
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&answers.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(question);
    if answers == 1 {
        out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
        out.extend_from_slice(&address);
    }
    Some((name, out))
}

/// Serves [`dns_answer`] over UDP on [`DNS_ADDRESS`]:53; returns the names asked for.
async fn dns_server() -> Arc<Mutex<Vec<String>>> {
    let socket = tokio::net::UdpSocket::bind((DNS_ADDRESS, 53))
        .await
        .unwrap_or_else(|e| panic!("binding {DNS_ADDRESS}:53 for the test's DNS server: {e}"));
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            if let Some((name, reply)) = dns_answer(&buf[..n], [127, 0, 0, 1]) {
                log.lock().unwrap().push(name);
                let _ = socket.send_to(&reply, from).await;
            }
        }
    });
    asked
}

/// The operator process; killed when dropped.
struct Chrooted(Child);

impl Drop for Chrooted {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn metadata_extracted(
    status: &'static str,
    reason: Option<&'static str>,
) -> impl Fn(Option<&AIMModel>) -> bool {
    move |m: Option<&AIMModel>| {
        m.and_then(|m| m.status.as_ref()).is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == types::METADATA_EXTRACTED
                    && c.status == status
                    && reason.is_none_or(|r| c.reason == r)
            })
        })
    }
}

#[tokio::test]
async fn the_image_resolves_registry_names_on_its_own() {
    system_namespace().await;
    let root = xtask::testenv::workdir().join("image-root");
    unpack(&image_layout(), &root);
    assert!(
        root.join("aim-operator").is_file(),
        "the image holds /aim-operator"
    );
    // What every container runtime adds to an image's files (the OCI runtime spec's default devices);
    // the image has no /dev of its own.
    std::fs::create_dir_all(root.join("dev")).unwrap();
    for (name, minor) in [("null", 3), ("zero", 5), ("random", 8), ("urandom", 9)] {
        let status = Command::new("mknod")
            .args(["-m", "666"])
            .arg(root.join("dev").join(name))
            .args(["c", "1", &minor.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "mknod /dev/{name} in the image's root");
    }
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/resolv.conf"),
        format!("nameserver {DNS_ADDRESS}\noptions timeout:2 attempts:2\n"),
    )
    .unwrap();
    let kubeconfig = kubeconfig_into(&root);
    let asked = dns_server().await;

    // The test registry, by a name only the DNS server knows.
    let regs = xtask::registry::registries().expect("test registries (cargo xtask cluster up)");
    let port = regs.anonymous.rsplit(':').next().unwrap().to_string();
    let by_name = format!("{REGISTRY_NAME}:{port}");
    let ns = TestNamespace::new("image-dns").await;
    let repo = format!("aim/{}", ns.name);
    let deployments = serde_json::json!([
        { "gpuModel": "MI300X", "gpuCount": 1, "precision": "fp8", "metric": "latency" }
    ]);
    let labels: BTreeMap<String, String> = [(
        RECOMMENDED_DEPLOYMENTS_LABEL.to_string(),
        deployments.to_string(),
    )]
    .into();
    xtask::registry::push_image(&regs.anonymous, None, &repo, "1", &labels, "amd64")
        .await
        .unwrap();

    let metrics_port = free_port();
    let log_path = xtask::testenv::workdir().join("image-operator.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let chroot_dir = root.clone();
    let mut cmd = Command::new("/aim-operator");
    cmd.args([
        "--system-namespace",
        SYSTEM_NAMESPACE,
        "--leader-elect",
        "false",
        "--metrics-bind-address",
        &format!("127.0.0.1:{metrics_port}"),
        "--insecure-registries",
        &by_name,
    ])
    .env_clear()
    .env("KUBECONFIG", kubeconfig)
    .env("RUST_LOG", "info")
    .stdin(Stdio::null())
    .stdout(log.try_clone().unwrap())
    .stderr(log);
    // SAFETY: only async-signal-safe calls (chroot, chdir, setgroups, setgid, setuid) between fork and
    // exec; the path is converted before the fork.
    let root_c = std::ffi::CString::new(chroot_dir.as_os_str().as_encoded_bytes()).unwrap();
    unsafe {
        cmd.pre_exec(move || {
            let fail = || Err(std::io::Error::last_os_error());
            if libc::chroot(root_c.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                return fail();
            }
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(IMAGE_UID) != 0
                || libc::setuid(IMAGE_UID) != 0
            {
                return fail();
            }
            Ok(())
        });
    }
    let _operator = Chrooted(
        cmd.spawn()
            .expect("starting the image's binary in its root"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(metrics_port, "/readyz").is_none_or(|(code, _)| code != 200) {
        assert!(
            Instant::now() < deadline,
            "the image's operator is not ready; see {}",
            log_path.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A model whose image is addressed by the name, and one by a name nobody knows (labels read, no
    // templates made).
    let api: Api<AIMModel> = ns.api();
    for (name, registry) in [
        ("named", by_name.clone()),
        ("unknown", format!("nowhere.aim-e2e.test:{port}")),
    ] {
        let mut m = common::model(
            &ns.name,
            name,
            &format!("{registry}/{repo}:1"),
            serde_json::json!([]),
        );
        m.spec.common.discovery.extract_metadata = true;
        apply(&api, &m).await;
    }

    let read = wait_for(
        &api,
        "named",
        "the labels read from the registry by name",
        WAIT,
        metadata_extracted("True", None),
    )
    .await;
    let metadata = read.status.unwrap().image_metadata.expect("image metadata");
    assert!(
        serde_json::to_string(&metadata).unwrap().contains("MI300X"),
        "{metadata:?}"
    );
    let failed = wait_for(
        &api,
        "unknown",
        "an unknown name",
        WAIT,
        metadata_extracted("False", Some(reasons::REGISTRY_UNREACHABLE)),
    )
    .await;
    let message = failed
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == types::METADATA_EXTRACTED)
        .unwrap()
        .message;
    assert!(
        message.contains("nowhere.aim-e2e.test"),
        "says which name: {message}"
    );
    let asked = asked.lock().unwrap().clone();
    assert!(
        asked.iter().any(|n| n == REGISTRY_NAME),
        "the operator asked the test's DNS server: {asked:?}"
    );
    eprintln!("names asked of the DNS server: {asked:?}");
}
