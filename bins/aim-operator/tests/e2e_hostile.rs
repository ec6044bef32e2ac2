//! End-to-end: what a user who may create models and templates can make the operator read, and that it
//! stays bounded (M-01, T-17, T-19). A fake registry (here, on plain HTTP) serves a config blob announced
//! at 1 GiB, a config announced small but sent endlessly, a 1 GiB manifest, a 1 GiB token, and a config
//! blob that never finishes; the test registry holds an image with 3.5 MB of labels; discovery pods print
//! 8 MiB adversarial dry-run logs. Every model and template ends with a reason that says why, and the
//! operator — run as its binary, so that its own memory is measured (`VmHWM`, the peak resident set) —
//! stays under [`PEAK_RSS_LIMIT_MIB`].
//!
//! `AIM_E2E_OPERATOR_BIN` runs another build of the operator instead (to measure an older one).

mod common;

use aim_api::conditions::{reasons, types};
use aim_api::*;
use common::*;
use kube::api::Api;
use kube::runtime::wait::Condition;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xtask::support::{TestNamespace, wait_for};

/// The operator's peak resident set may not exceed this, whatever the registries and logs send.
const PEAK_RSS_LIMIT_MIB: u64 = 128;
/// What the hostile registry sends where it sends "everything": 1 GiB, made as it is written.
const GIB: u64 = 1 << 30;
/// The registry read's deadline (`READ_TIMEOUT` in the operator) and some room.
const STALL_WAIT: Duration = Duration::from_secs(150);
const WAIT: Duration = Duration::from_secs(90);

// --- The fake registry. ---

/// A config digest (never the digest of what is sent: nothing here is meant to be read whole).
fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

fn manifest(config_digest: &str, size: u64) -> String {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{size}}},"layers":[]}}"#
    )
}

enum Reply {
    /// 200 with this body.
    Json(String),
    /// 401 with this `WWW-Authenticate`.
    Challenge(String),
    /// 200 with `n` bytes of JSON-looking filler (`{"history":[{},{},…`), generated while it is sent,
    /// with a `Content-Length` when `announce`, else until the connection closes.
    Endless {
        n: u64,
        announce: bool,
    },
    /// 200 announcing 1000 bytes, 10 of them sent, then nothing, for an hour.
    Stall,
    /// 307 to this location.
    Redirect(String),
    NotFound,
}

/// What the registry at `addr` answers for `path`. `/v2/` of the instance `token` asks for a bearer
/// token from a realm that answers with 1 GiB.
fn answer(token: bool, addr: &str, path: &str) -> Reply {
    match path {
        "/v2/" if token => Reply::Challenge(format!(
            r#"Bearer realm="http://{addr}/token",service="hostile""#
        )),
        "/v2/" => Reply::Json("{}".into()),
        p if p.starts_with("/token") => Reply::Endless {
            n: GIB,
            announce: false,
        },
        "/v2/announced/manifests/1" => Reply::Json(manifest(&digest('a'), GIB)),
        "/v2/lying/manifests/1" => Reply::Json(manifest(&digest('b'), 1234)),
        "/v2/stall/manifests/1" => Reply::Json(manifest(&digest('c'), 1000)),
        "/v2/bigmanifest/manifests/1" => Reply::Endless {
            n: GIB,
            announce: false,
        },
        p if p == format!("/v2/announced/blobs/{}", digest('a')) => Reply::Endless {
            n: GIB,
            announce: true,
        },
        p if p == format!("/v2/lying/blobs/{}", digest('b')) => Reply::Endless {
            n: GIB,
            announce: false,
        },
        p if p == format!("/v2/stall/blobs/{}", digest('c')) => Reply::Stall,
        // A blob "moved" to another host (here: another port) over plain HTTP.
        "/v2/elsewhere/manifests/1" => Reply::Json(manifest(&digest('d'), 100)),
        p if p == format!("/v2/elsewhere/blobs/{}", digest('d')) => {
            let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
            Reply::Redirect(format!("http://127.0.0.1:{}/config", port ^ 1))
        }
        _ => Reply::NotFound,
    }
}

async fn respond(
    mut conn: tokio::net::TcpStream,
    token: bool,
    addr: String,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split(' ').nth(1).unwrap_or_default();
    let simple = |status: &str, extra: String, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}",
            body.len()
        )
    };
    match answer(token, &addr, path) {
        Reply::Json(body) => {
            conn.write_all(simple("200 OK", String::new(), &body).as_bytes())
                .await
        }
        Reply::Challenge(c) => {
            conn.write_all(
                simple(
                    "401 Unauthorized",
                    format!("www-authenticate: {c}\r\n"),
                    "{}",
                )
                .as_bytes(),
            )
            .await
        }
        Reply::Redirect(location) => {
            conn.write_all(
                simple(
                    "307 Temporary Redirect",
                    format!("location: {location}\r\n"),
                    "{}",
                )
                .as_bytes(),
            )
            .await
        }
        Reply::NotFound => {
            let body = r#"{"errors":[{"code":"NAME_UNKNOWN","message":"no such repository"}]}"#;
            conn.write_all(simple("404 Not Found", String::new(), body).as_bytes())
                .await
        }
        Reply::Endless { n, announce } => {
            let length = if announce {
                format!("content-length: {n}\r\n")
            } else {
                String::new()
            };
            conn.write_all(
                format!("HTTP/1.1 200 OK\r\n{length}connection: close\r\n\r\n{{\"history\":[")
                    .as_bytes(),
            )
            .await?;
            let chunk = "{},".repeat(64 * 1024 / 3).into_bytes();
            let mut sent = 12;
            while sent < n {
                let part = &chunk[..chunk.len().min((n - sent) as usize)];
                conn.write_all(part).await?;
                sent += part.len() as u64;
            }
            Ok(())
        }
        Reply::Stall => {
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n{\"history\"")
                .await?;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        }
    }
}

/// The two instances (`plain`, `token`), `127.0.0.1:PORT` each, served on a thread of their own for the
/// rest of the test process.
fn registries() -> &'static (String, String) {
    static ADDRS: OnceLock<(String, String)> = OnceLock::new();
    ADDRS.get_or_init(|| {
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let token = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addrs = (
            plain.local_addr().unwrap().to_string(),
            token.local_addr().unwrap().to_string(),
        );
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let serve = |l: std::net::TcpListener, token: bool| async move {
                    l.set_nonblocking(true).unwrap();
                    let l = tokio::net::TcpListener::from_std(l).unwrap();
                    let addr = l.local_addr().unwrap().to_string();
                    while let Ok((conn, _)) = l.accept().await {
                        tokio::spawn(respond(conn, token, addr.clone()));
                    }
                };
                tokio::join!(serve(plain, false), serve(token, true));
            });
        });
        addrs
    })
}

// --- The operator, as a process. ---

struct Operator {
    pid: u32,
    /// Closing it (the test process exiting) makes the guard shell stop the operator.
    _guard: (Child, ChildStdin),
}

/// One operator process for this test binary, reading the fake registries over HTTP, started once and
/// ready (its `/readyz`); stopped when the test process exits, however it exits.
fn operator() -> &'static Operator {
    static OPERATOR: OnceLock<Operator> = OnceLock::new();
    OPERATOR.get_or_init(|| {
        let (plain, token) = registries();
        let test_registries = xtask::registry::registries()
            .map(|r| format!(",{},{}", r.anonymous, r.auth))
            .unwrap_or_default();
        let bin = std::env::var("AIM_E2E_OPERATOR_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_aim-operator").to_string());
        let port = free_port();
        let log = xtask::testenv::workdir().join("hostile-operator.log");
        // The guard shell starts the operator, prints its pid, and kills it once its stdin closes.
        let mut child = Command::new("sh")
            .args([
                "-c",
                r#"log="$1"; shift; "$@" >>"$log" 2>&1 & op=$!; echo "$op"; read -r _; kill "$op"; wait "$op""#,
                "sh",
            ])
            .arg(&log)
            .arg(&bin)
            .args([
                "--system-namespace",
                SYSTEM_NAMESPACE,
                "--leader-elect",
                "false",
                "--discovery-backoff-seconds",
                "5",
                "--metrics-bind-address",
                &format!("127.0.0.1:{port}"),
                "--insecure-registries",
                &format!("{plain},{token}{test_registries}"),
            ])
            .env("KUBECONFIG", service_account_kubeconfig("hostile-sa-kubeconfig.yaml"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the operator");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let pid: u32 = line.trim().parse().expect("the operator's pid");
        let stdin = child.stdin.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(port, "/readyz").is_none_or(|(code, _)| code != 200) {
            assert!(
                Instant::now() < deadline,
                "the operator ({bin}) is not ready; see {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let op = Operator {
            pid,
            _guard: (child, stdin),
        };
        eprintln!(
            "operator {bin} (pid {pid}) ready: {} MiB resident",
            op.status_kib("VmRSS") / 1024
        );
        op
    })
}

impl Operator {
    /// A `kB` field of `/proc/<pid>/status` (0 once the process is gone).
    fn status_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Reports the peak resident set so far and checks it against the limit.
    fn check_peak(&self, after: &str) {
        let (peak, now) = (self.status_kib("VmHWM"), self.status_kib("VmRSS"));
        eprintln!(
            "after {after}: operator peak RSS (VmHWM) {:.1} MiB, now {:.1} MiB",
            peak as f64 / 1024.0,
            now as f64 / 1024.0
        );
        assert!(peak > 0, "the operator (pid {}) is gone", self.pid);
        assert!(
            peak < PEAK_RSS_LIMIT_MIB * 1024,
            "after {after}: the operator's peak RSS is {:.1} MiB, over {PEAK_RSS_LIMIT_MIB} MiB",
            peak as f64 / 1024.0
        );
    }
}

// --- Models. ---

fn hostile_model(ns: &str, name: &str, image: &str) -> AIMModel {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "aim.eai.amd.com/v1alpha1", "kind": "AIMModel",
        "metadata": { "name": name, "namespace": ns },
        "spec": { "image": image },
    }))
    .unwrap()
}

/// The model failed to read its metadata for this reason, with a message that contains `says`. (The
/// message too: an operator of another test binary, which reaches the fake registry over HTTPS, would
/// write another failure.)
fn metadata_failed(reason: &'static str, says: &'static str) -> impl Condition<AIMModel> {
    move |m: Option<&AIMModel>| {
        m.and_then(|m| m.status.as_ref()).is_some_and(|s| {
            s.status == ModelPhase::Failed
                && s.conditions.iter().any(|c| {
                    c.type_ == types::METADATA_EXTRACTED
                        && c.status == "False"
                        && c.reason == reason
                        && c.message.contains(says)
                })
        })
    }
}

/// Applies the models `(name, image, says)` and waits until each failed with `reason` and a message
/// that says `says`; returns each `MetadataExtracted` message.
async fn models_fail(
    prefix: &str,
    models: &[(&str, String, &'static str)],
    reason: &'static str,
    within: Duration,
) -> Vec<String> {
    let ns = TestNamespace::new(prefix).await;
    let api: Api<AIMModel> = ns.api();
    for (name, image, _) in models {
        apply(&api, &hostile_model(&ns.name, name, image)).await;
    }
    let mut messages = Vec::new();
    for (name, _, says) in models {
        let m = wait_for(&api, name, name, within, metadata_failed(reason, says)).await;
        let st = m.status.unwrap();
        let c = st
            .conditions
            .iter()
            .find(|c| c.type_ == types::METADATA_EXTRACTED)
            .unwrap();
        eprintln!("{name}: {}: {}", c.reason, c.message);
        assert!(
            st.templates.is_empty(),
            "{name}: a failed model creates nothing"
        );
        messages.push(c.message.clone());
    }
    messages
}

// M-01 (egress): whoever writes a model cannot point the operator at addresses the cluster keeps for
// itself. The operator lists only the fake and test registries (`127.0.0.1:PORT`): another loopback
// address, a name that resolves to loopback, the link-local metadata address, and a redirect to another
// host over plain HTTP are all refused with `RegistryNotAllowed`, and nothing is read.
#[tokio::test]
async fn registries_cannot_reach_local_addresses_or_redirect_to_plain_http() {
    let op = operator();
    let (plain, _) = registries();
    let port = plain.rsplit(':').next().unwrap();
    let messages = models_fail(
        "hostile-egress",
        &[
            ("loopback", format!("127.0.0.2:{port}/x:1"), "127.0.0.2"),
            ("localhost", format!("localhost:{port}/x:1"), "localhost"),
            (
                "metadata",
                "169.254.169.254/x:1".to_string(),
                "169.254.169.254",
            ),
            (
                "elsewhere",
                format!("{plain}/elsewhere:1"),
                "another host over plain HTTP",
            ),
        ],
        reasons::REGISTRY_NOT_ALLOWED,
        WAIT,
    )
    .await;
    for m in &messages[..3] {
        assert!(m.contains("--local-registries"), "says what to do: {m}");
    }
    op.check_peak("refused egress");
}

// M-01: a manifest announcing a 1 GiB config blob is refused before the blob is read, with the cap.
#[tokio::test]
async fn a_gigabyte_config_blob_is_refused_unread() {
    let op = operator();
    let (plain, _) = registries();
    let messages = models_fail(
        "hostile-gib",
        &[("announced", format!("{plain}/announced:1"), "config blob")],
        reasons::REGISTRY_RESPONSE_TOO_LARGE,
        WAIT,
    )
    .await;
    let m = &messages[0];
    assert!(
        m.contains("config blob of 1073741824 bytes")
            && m.contains("cap of 4 MiB")
            && m.contains("not read"),
        "{m}"
    );
    op.check_peak("a 1 GiB config blob");
}

// M-01: bodies that go past the cap are cut off where they do, whichever they are: a config blob
// announced at 1234 bytes but sent endlessly, a 1 GiB manifest, a 1 GiB token answer.
#[tokio::test]
async fn bodies_past_the_cap_are_cut_off() {
    let op = operator();
    let (plain, token) = registries();
    let messages = models_fail(
        "hostile-cut",
        &[
            ("lying", format!("{plain}/lying:1"), "reading stopped"),
            (
                "bigmanifest",
                format!("{plain}/bigmanifest:1"),
                "reading stopped",
            ),
            ("token", format!("{token}/any:1"), "reading stopped"),
        ],
        reasons::REGISTRY_RESPONSE_TOO_LARGE,
        WAIT,
    )
    .await;
    for (m, what) in messages
        .iter()
        .zip(["the config blob", "the manifest", "the token"])
    {
        assert!(
            m.contains(&format!(
                "sent more than the cap of 4 MiB (4194304 bytes) for {what}"
            )) && m.contains("reading stopped there"),
            "{m}"
        );
    }
    op.check_peak("1 GiB bodies cut off");
}

// M-01: a config blob that never finishes is given up on at the read's deadline, saying so.
#[tokio::test]
async fn a_body_that_never_finishes_times_out() {
    let op = operator();
    let (plain, _) = registries();
    let started = Instant::now();
    let messages = models_fail(
        "hostile-stall",
        &[("stall", format!("{plain}/stall:1"), "did not finish")],
        reasons::REGISTRY_UNREACHABLE,
        STALL_WAIT,
    )
    .await;
    let m = &messages[0];
    assert!(
        m.contains("did not finish the read of image")
            && m.contains("within 60s")
            && m.contains("reading the config blob"),
        "{m}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(55),
        "failed after {:?}, before the deadline",
        started.elapsed()
    );
    op.check_peak("a body that never finishes");
}

// M-01: an image whose config holds 3.5 MB of labels (under the cap, so read) is refused for its labels,
// which the operator would keep in the model's status, without collecting them.
#[tokio::test]
async fn an_image_with_megabytes_of_labels_is_refused() {
    let op = operator();
    let r = xtask::registry::registries().expect("test registries (cargo xtask cluster up)");
    let labels: std::collections::BTreeMap<String, String> = (0..115_000)
        .map(|i| (format!("org.example.label-{i:07}"), String::new()))
        .collect();
    let repo = format!("hostile/labels-{}", std::process::id());
    xtask::registry::push_image(&r.anonymous, None, &repo, "1", &labels, "amd64")
        .await
        .unwrap();
    let messages = models_fail(
        "hostile-labels",
        &[("labels", format!("{}/{repo}:1", r.anonymous), "labels")],
        reasons::REGISTRY_RESPONSE_TOO_LARGE,
        WAIT,
    )
    .await;
    let m = &messages[0];
    assert!(
        m.contains("take more than 256 KiB") && m.contains("model's status"),
        "{m}"
    );
    op.check_peak("3.5 MB of labels");
}

// --- Dry-run logs. ---

/// A log of at most 8 MiB (the default limit), in lines of about 1 KiB: `head`, then `1,` to fill, then
/// `tail`.
fn adversarial_log(head: &str, tail: &str) -> String {
    let size = aim_discovery::DEFAULT_LOG_LIMIT - 4096;
    let line = format!("{}\n", "1,".repeat(511));
    let mut log = String::with_capacity(size);
    log.push_str(head);
    while log.len() + line.len() + 2 + tail.len() <= size {
        log.push_str(&line);
    }
    log.push('1');
    log.push_str(tail);
    log
}

/// A template whose discovery prints `log` fails, and says why.
async fn template_fails(prefix: &str, log: &str) -> String {
    let ns = TestNamespace::new(prefix).await;
    ns.discovery_logs(log).await;
    model_m(&ns, serde_json::json!([])).await;
    let api = ns.api::<AIMServiceTemplate>();
    apply(&api, &template(&ns.name, "t", on_mi300x("m"))).await;
    let t = wait_for(&api, "t", "discovery Failed", WAIT, discovery_failed()).await;
    let st = t.status.unwrap();
    assert!(
        st.profile.is_none() && st.model_sources.is_empty(),
        "nothing partial"
    );
    let message = condition(&st, types::DISCOVERED).message.clone();
    eprintln!("{prefix}: {message}");
    message
}

// T-17, T-19: an 8 MiB array of small numbers (100+ MiB as JSON values) is refused for its first
// element, and an 8 MiB first element is refused as too large to keep; neither is held in memory.
#[tokio::test]
async fn adversarial_dry_run_logs_fail_without_being_held() {
    let op = operator();
    let numbers = adversarial_log("[", "]\n");
    let huge_first = adversarial_log(r#"[{"models": [], "profile": {"x": ["#, "]}}]\n");
    assert!(numbers.len() <= aim_discovery::DEFAULT_LOG_LIMIT && numbers.len() > 8_000_000);
    let (a, b) = tokio::join!(
        template_fails("hostile-log-numbers", &numbers),
        template_fails("hostile-log-first", &huge_first),
    );
    assert!(a.contains("the first element is a number"), "{a}");
    assert!(
        b.contains("the first dry-run result is too large") && b.contains("4 MiB"),
        "{b}"
    );
    op.check_peak("8 MiB adversarial dry-run logs");
}
