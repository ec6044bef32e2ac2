//! The API client: kube's service stack (base URI, authentication, extra headers) over a connector that
//! negotiates HTTP/2, so every watch and request shares one multiplexed connection to the API server
//! instead of one HTTP/1.1 connection per request in flight.

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use kube::{Client, Config};
use tower::ServiceBuilder;
use tower::util::MapErrLayer;

/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "aim-operator";

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
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .layer(MapErrLayer::new(
            |e: hyper_util::client::legacy::Error| -> BoxError { Box::new(e) },
        ))
        .service(hyper_client);
    Ok(Client::new(service, config.default_namespace))
}
