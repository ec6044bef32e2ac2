//! End-to-end: `/metrics`, `/healthz` and `/readyz` of a running operator (O-02), scraped over HTTP.

mod common;

use aim_api::*;
use common::*;
use std::time::{Duration, Instant};
use xtask::support::{TestNamespace, WAIT, wait_for};

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
    let port = free_port();
    let operator = RunningOperator::start(aim_operator::Settings {
        system_namespace: SYSTEM_NAMESPACE.into(),
        backoff_base: BACKOFF_BASE,
        metrics_address: Some(([127, 0, 0, 1], port).into()),
        registry: test_registry_settings(),
        ..Default::default()
    });
    // Ready once the watches synced (the operator returns from start after that).
    let deadline = Instant::now() + WAIT;
    loop {
        if http_get(port, "/readyz").is_some_and(|(c, _)| c == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(http_get(port, "/healthz").map(|(c, _)| c), Some(200));

    let ns = TestNamespace::new("metrics").await;
    model_m(&ns, serde_json::json!([])).await;
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
        let (code, body) = http_get(port, "/metrics").expect("scraping /metrics");
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

    // M-01/O-02: a model whose registry does not answer is counted by category.
    let unreachable: AIMModel = serde_json::from_value(serde_json::json!({
        "apiVersion": "aim.eai.amd.com/v1alpha1", "kind": "AIMModel",
        "metadata": { "name": "unreachable", "namespace": ns.name },
        "spec": { "image": format!("{}/aim/x:1", closed_registry()) },
    }))
    .unwrap();
    apply(&ns.api::<AIMModel>(), &unreachable).await;
    let deadline = Instant::now() + WAIT;
    let body = loop {
        let (_, body) = http_get(port, "/metrics").expect("scraping /metrics");
        let failed = sample(
            &body,
            "aim_registry_failures_total{category=\"unreachable\"}",
        );
        if failed.is_some_and(|n| n >= 1.0) {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no registry failure counted: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        sample(&body, "aim_registry_reads_total").is_some_and(|n| n >= 1.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            "aim_registry_failures_total{category=\"unauthorized\"}"
        ),
        Some(0.0),
        "every category exists at zero: {body}"
    );
    operator.stop();
    assert!(
        http_get(port, "/healthz").is_none(),
        "the server stops with the operator"
    );
}
