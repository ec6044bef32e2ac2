//! End-to-end: the discovery limit (T-23) holds when a Job create answers with an error although the
//! API server made the Job (a lost answer, a timeout). The operator talks to the API server through a
//! front that forwards every request and answers the first Job creates with a 500 after forwarding
//! them. One test, with an operator of its own.

mod common;

use aim_api::*;
use axum::body::Body as AxumBody;
use common::*;
use kube::api::ListParams;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use xtask::support::{TestNamespace, WAIT};

const LIMIT: usize = 2;
const TEMPLATES: usize = 4;

/// A plain-HTTP front of the API server: every request is forwarded with the test's own client (the
/// impersonation headers of the operator's client go along), and the first `faults` Job creates are
/// answered with a 500 once the API server has made the Job. Returns its URL and how many it faulted.
async fn faulty_front(faults: usize) -> (String, Arc<AtomicUsize>) {
    let client = xtask::support::client().await;
    let faulted = Arc::new(AtomicUsize::new(0));
    let count = faulted.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (client, count) = (client.clone(), count.clone());
        async move {
            let (parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let job_create =
                parts.method == axum::http::Method::POST && parts.uri.path().ends_with("/jobs");
            let mut out = axum::http::Request::builder()
                .method(parts.method.clone())
                .uri(parts.uri.path_and_query().map_or("/", |p| p.as_str()));
            for (k, v) in &parts.headers {
                if k != axum::http::header::HOST && k != axum::http::header::CONTENT_LENGTH {
                    out = out.header(k, v);
                }
            }
            let out = out.body(kube::client::Body::from(bytes.to_vec())).unwrap();
            let answer = client.send(out).await;
            if job_create
                && answer.as_ref().is_ok_and(|r| r.status().is_success())
                && count.fetch_add(1, Ordering::SeqCst) < faults
            {
                return axum::http::Response::builder()
                    .status(500)
                    .header(axum::http::header::CONTENT_TYPE, "application/json")
                    .body(AxumBody::from(
                        r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"the answer was lost","code":500}"#,
                    ))
                    .unwrap();
            }
            match answer {
                Ok(r) => {
                    let (parts, body) = r.into_parts();
                    axum::http::Response::from_parts(parts, AxumBody::new(body))
                }
                Err(e) => axum::http::Response::builder()
                    .status(502)
                    .body(AxumBody::from(e.to_string()))
                    .unwrap(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, faulted)
}

// T-23: Job creates that fail although the Jobs were made keep their slots (and the watch would adopt
// a slot for an active Job holding none): at most LIMIT discovery Jobs run at any moment, every
// template still finishes discovery, and no template fails for it.
#[tokio::test]
async fn a_job_create_that_errors_after_making_the_job_keeps_the_limit() {
    system_namespace().await;
    install_operator_rbac();
    let ns = TestNamespace::new("slot-lost").await;
    ns.discovery_logs(DRY_RUN_OK).await;
    // This namespace's Jobs: other tests may run discovery elsewhere at the same time.
    let watch = spawn_job_watch_of(ns.api());
    let (front, faulted) = faulty_front(LIMIT).await;
    let operator = RunningOperator::start_via(
        aim_operator::Settings {
            system_namespace: SYSTEM_NAMESPACE.into(),
            backoff_base: BACKOFF_BASE,
            max_concurrent_discoveries: LIMIT,
            ..Default::default()
        },
        Some((SYSTEM_NAMESPACE, "aim-operator")),
        Some(front),
    );
    // Dry-runs that take a few seconds, so that Jobs overlap when the limit does not hold.
    apply(
        &ns.api::<AIMModel>(),
        &model(
            &ns.name,
            "m",
            "example.test/aim:1",
            serde_json::json!([
                {"name": "AIM_TEST_OUTCOME", "value": "complete-after"},
                {"name": "AIM_TEST_COMPLETE_AFTER", "value": "4s"},
            ]),
        ),
    )
    .await;
    let api = ns.api::<AIMServiceTemplate>();
    for i in 0..TEMPLATES {
        apply(&api, &template(&ns.name, &format!("t{i}"), on_mi300x("m"))).await;
    }
    // Watch along the way: never more than LIMIT active Jobs, never a Failed template.
    let deadline = std::time::Instant::now() + 2 * WAIT;
    loop {
        let items = api.list(&ListParams::default()).await.unwrap().items;
        let phases: Vec<Option<TemplatePhase>> = items
            .iter()
            .map(|t| t.status.as_ref().map(|s| s.status))
            .collect();
        assert!(
            !phases.contains(&Some(TemplatePhase::Failed)),
            "a template failed: {phases:?}"
        );
        let max = watch.lock().unwrap().max;
        assert!(
            max <= LIMIT,
            "{max} discovery jobs ran at once (limit {LIMIT})"
        );
        if phases.len() == TEMPLATES && phases.iter().all(|p| *p == Some(TemplatePhase::Ready)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "templates did not all become Ready: {phases:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        faulted.load(Ordering::SeqCst) >= LIMIT,
        "the front faulted {} creates",
        faulted.load(Ordering::SeqCst)
    );
    assert!(watch.lock().unwrap().max <= LIMIT);
    operator.stop();
}
