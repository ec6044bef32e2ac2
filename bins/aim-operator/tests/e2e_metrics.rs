//! End-to-end: `/metrics`, `/healthz` and `/readyz` of a running operator (O-02), scraped over HTTP.

mod common;

use aim_api::*;
use common::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use xtask::support::{TestNamespace, WAIT, wait_for};

/// `GET path` on 127.0.0.1:`port`: (status code, body).
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

/// The value of the first sample whose line starts with `series`.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn metrics_and_health_are_served() {
    // O-02
    system_namespace().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let operator = RunningOperator::start(aim_operator::Settings {
        system_namespace: SYSTEM_NAMESPACE.into(),
        backoff_base: BACKOFF_BASE,
        metrics_address: Some(([127, 0, 0, 1], port).into()),
        ..Default::default()
    });
    // Ready once the watches synced (the operator returns from start after that).
    let deadline = Instant::now() + WAIT;
    loop {
        if get(port, "/readyz").is_some_and(|(c, _)| c == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(port, "/healthz").map(|(c, _)| c), Some(200));

    let ns = TestNamespace::new("metrics").await;
    apply(
        &ns.api(),
        &model(
            &ns.name,
            "m",
            "example.test/aim-qwen:1",
            serde_json::json!([]),
        ),
    )
    .await;
    let api = ns.api::<AIMServiceTemplate>();
    apply(
        &api,
        &template(
            &ns.name,
            "t",
            serde_json::json!({ "modelName": "m", "modelSources": [{"name": "w", "sourceURI": "hf://a/b"}] }),
        ),
    )
    .await;
    wait_for(&api, "t", "Ready", WAIT, phase(TemplatePhase::Ready)).await;

    // The reconcile that wrote Ready is counted when it returns (after its event): scrape until then.
    let deadline = Instant::now() + WAIT;
    let body = loop {
        let (code, body) = get(port, "/metrics").expect("scraping /metrics");
        assert_eq!(code, 200);
        let reconciles = sample(
            &body,
            "aim_reconciles_total{controller=\"AIMServiceTemplate\"}",
        );
        if reconciles.is_some_and(|n| n >= 1.0) {
            break body;
        }
        assert!(Instant::now() < deadline, "no reconcile counted: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        body.contains("aim_reconcile_duration_seconds_bucket{")
            && body.contains("controller=\"AIMServiceTemplate\""),
        "{body}"
    );
    let errors = sample(
        &body,
        "aim_reconcile_errors_total{controller=\"AIMServiceTemplate\",category=\"api\"}",
    );
    assert_eq!(errors, Some(0.0), "error series exist at zero: {body}");
    let ready = sample(&body, "aim_templates{scope=\"Namespace\",status=\"Ready\"}");
    assert!(ready.is_some_and(|n| n >= 1.0), "{body}");
    assert!(sample(&body, "aim_discoveries_active").is_some(), "{body}");
    assert!(sample(&body, "aim_discoveries_queued").is_some(), "{body}");
    operator.stop();
    assert!(
        get(port, "/healthz").is_none(),
        "the server stops with the operator"
    );
}
