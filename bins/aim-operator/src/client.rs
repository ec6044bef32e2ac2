//! The API client: kube's service stack (base URI, authentication, extra headers) over a connector that
//! negotiates HTTP/2, so every watch and request shares one multiplexed connection to the API server
//! instead of one HTTP/1.1 connection per request in flight.
//!
//! Two layers stand in for what kube's own client stack would do: a request the API server throttles
//! (429, 503, 504, as API Priority and Fairness does) is sent again when the server says it may be
//! ([`RetryThrottled`]), and every request that is not a watch has a deadline ([`Deadline`]), so that
//! neither throttling nor a stalled answer turns into a failed or stuck reconcile.

use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::{Body, ConfigExt};
use kube::{Client, Config};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tower::retry::{Policy, RetryLayer};
use tower::util::MapErrLayer;
use tower::util::rng::{HasherRng, Rng};
use tower::{Layer, Service, ServiceBuilder};

/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "aim-operator";

/// How long a request that is not a watch may take, answer and body, per attempt.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long past its own `timeoutSeconds` a watch may stay open before it is cut.
pub const WATCH_GRACE: Duration = Duration::from_secs(30);
/// Most times one request is sent again after a 429, 503 or 504 (client-go's limit too).
pub const MAX_RETRIES: u32 = 10;
/// Most time one request spends waiting between its attempts. API Priority and Fairness asks for at
/// most 32 s (`Retry-After`); a longer wait is not made, the throttled answer is returned instead.
pub const MAX_TOTAL_WAIT: Duration = Duration::from_secs(60);
/// First wait when the server names none; doubles per retry up to [`BACKOFF_MAX`].
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(8);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client for `config` that speaks HTTP/2 when the API server offers it (kube-apiserver does, over
/// TLS) and HTTP/1.1 otherwise.
pub fn http2_client(config: Config) -> Result<Client, kube::Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(config.connect_timeout);
    let tls = config.rustls_client_config()?;
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let builder = match config.tls_server_name.as_ref() {
        Some(name) => builder.with_server_name_resolver(
            hyper_rustls::FixedServerNameResolver::new(name.clone().try_into().map_err(|e| {
                kube::Error::Service(format!("invalid TLS server name {name:?}: {e}").into())
            })?),
        ),
        None => builder,
    };
    let https = builder.enable_http1().enable_http2().wrap_connector(http);
    let hyper_client: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Builder::new(TokioExecutor::new())
            .http2_keep_alive_interval(std::time::Duration::from_secs(30))
            .http2_keep_alive_while_idle(true)
            .timer(hyper_util::rt::TokioTimer::new())
            .build(https);
    // Retries outside authentication (a retry carries a fresh token), deadlines per attempt.
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .layer(RetryLayer::new(RetryThrottled::default()))
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .layer(DeadlineLayer {
            timeout: REQUEST_TIMEOUT,
        })
        .layer(MapErrLayer::new(
            |e: hyper_util::client::legacy::Error| -> BoxError { Box::new(e) },
        ))
        .service(hyper_client);
    Ok(Client::new(service, config.default_namespace))
}

/// Sends a request again when the API server answered 429, 503 or 504: after its `Retry-After`
/// (seconds) when it gives one, else after a backoff doubling from 250 ms; either with up to half
/// again of random jitter, so that requests throttled together do not come back together. At most
/// [`MAX_RETRIES`] times and [`MAX_TOTAL_WAIT`] of waiting per request; after that the caller gets
/// the throttled answer. Only requests whose body can be sent again (kube's requests carry their
/// whole body) are retried. A watch is retried too when it is refused before it starts: a refused
/// watch has streamed nothing yet.
///
/// Not kube's `RetryPolicy`: it has no bound on the total wait (a large `Retry-After` is slept in
/// full), and its jitter sequence is cloned with the policy into every request, so requests throttled
/// at the same moment retry at the same moments.
#[derive(Clone, Debug, Default)]
pub struct RetryThrottled {
    retries: u32,
    waited: Duration,
}

impl RetryThrottled {
    /// The wait before the next attempt after an answer with `status` and `retry_after`, or `None`
    /// when it is not to be retried; `jitter` is random in `[0, 1)`.
    fn next_wait(
        &mut self,
        status: StatusCode,
        retry_after: Option<&HeaderValue>,
        jitter: f64,
    ) -> Option<Duration> {
        let throttled = matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT
        );
        if !throttled || self.retries >= MAX_RETRIES {
            return None;
        }
        let asked = retry_after
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let base = asked.unwrap_or_else(|| {
            BACKOFF_BASE
                .saturating_mul(1 << self.retries.min(16))
                .min(BACKOFF_MAX)
        });
        let wait = base.saturating_add(base.mul_f64(jitter.clamp(0.0, 1.0) / 2.0));
        let waited = self.waited.saturating_add(wait);
        if waited > MAX_TOTAL_WAIT {
            return None;
        }
        self.retries += 1;
        self.waited = waited;
        Some(wait)
    }
}

impl<B, E> Policy<Request<Body>, Response<B>, E> for RetryThrottled {
    type Future = Sleep;

    fn retry(
        &mut self,
        req: &mut Request<Body>,
        result: &mut Result<Response<B>, E>,
    ) -> Option<Self::Future> {
        let response = result.as_ref().ok()?;
        let wait = self.next_wait(
            response.status(),
            response.headers().get(RETRY_AFTER),
            HasherRng::new().next_f64(),
        )?;
        tracing::debug!(
            method = %req.method(),
            uri = %req.uri(),
            status = response.status().as_u16(),
            retry = self.retries,
            ?wait,
            "throttled by the API server; sending again"
        );
        Some(tokio::time::sleep(wait))
    }

    fn clone_request(&mut self, req: &Request<Body>) -> Option<Request<Body>> {
        let body = req.body().try_clone()?;
        let mut copy = Request::new(body);
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }
}

/// When a request must have been answered, body included: `timeout` from now, except for a watch (its
/// own `timeoutSeconds` and [`WATCH_GRACE`]) and a followed log (none: it streams until the container
/// ends).
fn deadline_of<B>(req: &Request<B>, now: Instant, timeout: Duration) -> Option<Instant> {
    let query = req.uri().query().unwrap_or_default();
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    };
    let streams = |name: &str| matches!(param(name), Some("true" | "1"));
    if streams("follow") {
        None
    } else if streams("watch") {
        let watch_timeout = param("timeoutSeconds")?.parse::<u64>().ok()?;
        Some(now + Duration::from_secs(watch_timeout) + WATCH_GRACE)
    } else {
        Some(now + timeout)
    }
}

/// A request that got no complete answer by its deadline.
#[derive(Debug, thiserror::Error)]
#[error("no complete answer from the API server within {0:?}")]
pub struct TimedOut(Duration);

/// Puts a deadline on each attempt of a request, on its answer and on reading its body
/// ([`deadline_of`]).
#[derive(Clone, Copy, Debug)]
struct DeadlineLayer {
    timeout: Duration,
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            timeout: self.timeout,
        }
    }
}

#[derive(Clone, Debug)]
struct Deadline<S> {
    inner: S,
    timeout: Duration,
}

impl<S, B> Service<Request<Body>> for Deadline<S>
where
    S: Service<Request<Body>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<DeadlineBody<B>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let now = Instant::now();
        let deadline = deadline_of(&req, now, self.timeout);
        let answer = self.inner.call(req);
        Box::pin(async move {
            let response = match deadline {
                None => answer.await.map_err(Into::into)?,
                Some(at) => match tokio::time::timeout_at(at, answer).await {
                    Ok(response) => response.map_err(Into::into)?,
                    Err(_) => return Err(TimedOut(at - now).into()),
                },
            };
            Ok(response.map(|body| DeadlineBody {
                inner: body,
                deadline: deadline.map(|at| (Box::pin(tokio::time::sleep_until(at)), at - now)),
            }))
        })
    }
}

/// A response body that fails with [`TimedOut`] when its deadline passes before it ends.
pub struct DeadlineBody<B> {
    inner: B,
    deadline: Option<(Pin<Box<Sleep>>, Duration)>,
}

impl<B> HttpBody for DeadlineBody<B>
where
    B: HttpBody + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match this.deadline.as_mut() {
            Some((sleep, after)) => match sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(TimedOut(*after).into()))),
                Poll::Pending => Poll::Pending,
            },
            None => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(p: &mut RetryThrottled, status: u16, retry_after: Option<&str>) -> Option<Duration> {
        let header = retry_after.map(|v| HeaderValue::from_str(v).unwrap());
        p.next_wait(StatusCode::from_u16(status).unwrap(), header.as_ref(), 0.0)
    }

    #[test]
    fn only_throttled_answers_are_retried() {
        for status in [200, 201, 400, 401, 403, 404, 409, 410, 422, 500, 502] {
            assert_eq!(
                wait(&mut RetryThrottled::default(), status, Some("1")),
                None
            );
        }
        for status in [429, 503, 504] {
            assert!(wait(&mut RetryThrottled::default(), status, None).is_some());
        }
    }

    #[test]
    fn retry_after_is_honoured_with_jitter_on_top() {
        let mut p = RetryThrottled::default();
        assert_eq!(wait(&mut p, 429, Some("3")), Some(Duration::from_secs(3)));
        let header = HeaderValue::from_static("2");
        let jittered = p.next_wait(StatusCode::TOO_MANY_REQUESTS, Some(&header), 0.999);
        assert!(jittered.is_some_and(|w| w > Duration::from_secs(2) && w < Duration::from_secs(3)));
    }

    #[test]
    fn without_retry_after_the_backoff_doubles_up_to_its_cap() {
        let mut p = RetryThrottled::default();
        let waits: Vec<_> = (0..7).map(|_| wait(&mut p, 503, None).unwrap()).collect();
        assert_eq!(
            waits,
            [250, 500, 1000, 2000, 4000, 8000, 8000].map(Duration::from_millis)
        );
        // An HTTP date is not seconds: the backoff applies.
        let mut p = RetryThrottled::default();
        let date = Some("Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(wait(&mut p, 429, date), Some(BACKOFF_BASE));
    }

    #[test]
    fn retries_and_total_wait_are_bounded() {
        let mut p = RetryThrottled::default();
        for _ in 0..MAX_RETRIES {
            assert!(wait(&mut p, 429, Some("1")).is_some());
        }
        assert_eq!(
            wait(&mut p, 429, Some("1")),
            None,
            "at most {MAX_RETRIES} retries"
        );
        let mut p = RetryThrottled::default();
        assert!(wait(&mut p, 429, Some("32")).is_some());
        assert_eq!(wait(&mut p, 429, Some("32")), None, "past the total wait");
        assert_eq!(
            wait(&mut RetryThrottled::default(), 429, Some("3600")),
            None
        );
    }

    #[tokio::test]
    async fn a_throttled_request_is_sent_again_whole() {
        // Two 429s, then the answer: the caller sees only the answer, and every attempt carried the body.
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = bodies.clone();
        let server = tower::service_fn(move |req: Request<Body>| {
            let seen = seen.clone();
            async move {
                let mut body = req.into_body();
                let mut bytes = Vec::new();
                while let Some(frame) =
                    std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                {
                    bytes.extend_from_slice(&frame?.into_data().unwrap_or_default());
                }
                let mut seen = seen.lock().unwrap();
                seen.push(bytes);
                let status = if seen.len() < 3 { 429 } else { 200 };
                Ok::<_, BoxError>(
                    Response::builder()
                        .status(status)
                        .header("Retry-After", "0")
                        .body(())
                        .unwrap(),
                )
            }
        });
        let mut client = RetryLayer::new(RetryThrottled::default()).layer(server);
        let req = Request::patch("https://k/x?fieldManager=aim-operator")
            .body(Body::from(b"{\"status\":{}}".to_vec()))
            .unwrap();
        let answer = client.call(req).await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(
            *bodies.lock().unwrap(),
            vec![b"{\"status\":{}}".to_vec(); 3]
        );
    }

    #[tokio::test]
    async fn watches_and_followed_logs_keep_their_long_life() {
        let now = Instant::now();
        let at =
            |uri: &str| deadline_of(&Request::get(uri).body(()).unwrap(), now, REQUEST_TIMEOUT);
        assert_eq!(
            at("https://k/apis/aim.eai.amd.com/v1alpha1/aimservicetemplates?limit=500"),
            Some(now + REQUEST_TIMEOUT)
        );
        assert_eq!(
            at("https://k/api/v1/nodes?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true"),
            Some(now + Duration::from_secs(290) + WATCH_GRACE)
        );
        assert_eq!(at("https://k/api/v1/nodes?watch=true"), None);
        assert_eq!(
            at("https://k/api/v1/nodes?watch=false"),
            Some(now + REQUEST_TIMEOUT)
        );
        assert_eq!(
            at("https://k/api/v1/namespaces/n/pods/p/log?follow=true"),
            None
        );
        assert_eq!(
            at("https://k/api/v1/namespaces/n/pods/p/log?container=discovery&limitBytes=10"),
            Some(now + REQUEST_TIMEOUT)
        );
    }

    /// A body that never ends.
    struct Stalled;

    impl HttpBody for Stalled {
        type Data = hyper::body::Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
            Poll::Pending
        }
    }

    const SHORT: Duration = Duration::from_millis(50);

    fn deadline<F, Fut>(answer: F) -> Deadline<tower::util::ServiceFn<F>>
    where
        F: FnMut(Request<Body>) -> Fut,
    {
        DeadlineLayer { timeout: SHORT }.layer(tower::service_fn(answer))
    }

    #[tokio::test]
    async fn a_stalled_answer_times_out() {
        let mut svc = deadline(|_| std::future::pending::<Result<Response<Stalled>, BoxError>>());
        let started = Instant::now();
        let answer = svc
            .call(
                Request::get("https://k/api/v1/nodes")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        let Err(err) = answer else { panic!("answered") };
        assert!(err.is::<TimedOut>(), "{err}");
        assert!(started.elapsed() >= SHORT);
    }

    #[tokio::test]
    async fn a_stalled_body_times_out() {
        let mut svc = deadline(|_| async { Ok::<_, BoxError>(Response::new(Stalled)) });
        let response = svc
            .call(
                Request::get("https://k/api/v1/nodes")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let mut body = response.into_body();
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        let err = frame
            .expect("an error, not the end")
            .expect_err("timed out");
        assert!(err.is::<TimedOut>(), "{err}");
    }

    #[tokio::test]
    async fn a_quiet_watch_is_not_cut_short() {
        let mut svc = deadline(|_| async { Ok::<_, BoxError>(Response::new(Stalled)) });
        let watch = Request::get("https://k/api/v1/nodes?&watch=true&timeoutSeconds=290")
            .body(Body::empty())
            .unwrap();
        let mut body = svc.call(watch).await.unwrap().into_body();
        let read = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
        assert!(
            tokio::time::timeout(SHORT * 4, read).await.is_err(),
            "still open"
        );
    }
}
