//! One capped read of an image's labels over the OCI distribution API: `GET /v2/` for the
//! authentication it asks for (a bearer token from its realm, or basic credentials), the manifest (for an
//! index, then its linux/amd64 image's), the config blob. Every body (token, manifest, config blob) is
//! read with a cap of [`MAX_RESPONSE_BYTES`]: a length announced above it, by the `Content-Length` or by
//! the manifest's descriptor, is refused before reading, and a body that goes past it is cut off where
//! it does. The whole read has a deadline ([`READ_TIMEOUT`]), and at most [`CONCURRENT_READS`] run at
//! once. Manifests and config blobs are checked against their sha256 digests. Where a read may go is
//! [`super::egress`]'s to say: every address, realm and redirect passes it.

use super::RegistrySettings;
use super::documents::{
    BearerChallenge, ConfigError, Descriptor, MAX_LABEL_BYTES, Manifest, bearer_challenge,
    config_labels, parse_manifest,
};
use super::egress::{self, clip};
use aim_resolve::model::{MetadataFailure, RegistryRead};
use base64::Engine;
use hyper::body::{Body as _, Bytes, Incoming};
use hyper::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, LOCATION, USER_AGENT, WWW_AUTHENTICATE,
};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_rustls::{ConfigBuilderExt, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use oci_client::Reference;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Cap of every body read from a registry: token, manifest, config blob. Real manifests and configs are
/// a few KiB; the CNCF distribution registry itself refuses manifests over 4 MiB.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Deadline of one whole read (authentication, manifests, config blob), every body included: a registry
/// that stops sending mid-body is given up on.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Registry reads running at once in the operator; further reads wait for a turn.
pub const CONCURRENT_READS: usize = 4;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Cap of an error answer's body, read only for its message.
const ERROR_BODY_BYTES: usize = 64 * 1024;
const MAX_REDIRECTS: usize = 5;
const USER_AGENT_VALUE: &str = concat!("aim-operator/", env!("CARGO_PKG_VERSION"));
const MIB: usize = 1024 * 1024;

/// The manifests asked for: image manifests and indexes, OCI and Docker.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

static READS: Semaphore = Semaphore::const_new(CONCURRENT_READS);

/// Reads `reference` with `auth` when its turn comes, within `deadline`.
pub(super) async fn read_image(
    settings: &RegistrySettings,
    image: &str,
    reference: &Reference,
    auth: RegistryAuth,
    deadline: Duration,
) -> RegistryRead {
    let _turn = READS.acquire().await;
    let registry = reference.resolve_registry();
    let stage = Mutex::new("connecting");
    let insecure = settings.is_insecure(registry);
    let allow_local = settings.allows_local(registry);
    let mut read = ImageRead {
        http: http_client(allow_local),
        scheme: if insecure { "http" } else { "https" },
        insecure,
        allow_local,
        cross_host_redirects: settings.cross_host_redirects,
        registry,
        repository: reference.repository(),
        image,
        authenticated: !matches!(auth, RegistryAuth::Anonymous),
        auth,
        authorization: None,
        stage: &stage,
    };
    let result = tokio::time::timeout(deadline, read.labels(reference)).await;
    match result {
        Err(_) => RegistryRead::Failed(MetadataFailure::Unreachable(format!(
            "registry {registry} did not finish the read of image {image} within {}s (it was {}); \
             the read was abandoned",
            deadline.as_secs(),
            stage.lock().map(|s| *s).unwrap_or("reading")
        ))),
        Ok(Err(f)) => RegistryRead::Failed(f),
        Ok(Ok((digest, labels))) => RegistryRead::Read {
            digest: Some(digest),
            labels,
        },
    }
}

type Http =
    hyper_util::client::legacy::Client<HttpsConnector<HttpConnector<egress::Resolver>>, String>;

/// A client for one read: connections are shared within it, never across reads (nor runtimes). Names
/// are resolved by [`egress::Resolver`], which drops local addresses unless `allow_local`.
fn http_client(allow_local: bool) -> Http {
    let mut connector = HttpConnector::new_with_resolver(egress::Resolver::new(allow_local));
    connector.enforce_http(false);
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls_config().clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    hyper_util::client::legacy::Builder::new(TokioExecutor::new()).build(https)
}

/// TLS with the system's trust store (read once), through ring as the API client.
fn tls_config() -> &'static rustls::ClientConfig {
    static TLS: OnceLock<rustls::ClientConfig> = OnceLock::new();
    TLS.get_or_init(|| {
        let builder = || {
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
        };
        match builder().with_native_roots() {
            Ok(b) => b.with_no_client_auth(),
            Err(e) => {
                tracing::warn!(error = %e, "no CA certificates: registries over HTTPS cannot be verified");
                builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            }
        }
    })
}

/// One read of an image's labels.
struct ImageRead<'a> {
    http: Http,
    scheme: &'static str,
    /// Whether the registry is listed in `--insecure-registries`.
    insecure: bool,
    /// Whether the read may reach loopback and link-local addresses (the registry is listed).
    allow_local: bool,
    cross_host_redirects: bool,
    /// `host[:port]`, as the image reference names it.
    registry: &'a str,
    repository: &'a str,
    image: &'a str,
    /// Whether a pull secret gave credentials.
    authenticated: bool,
    auth: RegistryAuth,
    /// The `Authorization` header for the registry, once authentication is settled.
    authorization: Option<String>,
    /// What the read is doing, for the message when the deadline passes.
    stage: &'a Mutex<&'static str>,
}

/// Why a body was refused.
enum BodyError {
    TooLarge,
    Http(hyper::Error),
}

impl ImageRead<'_> {
    /// The digest of the image manifest read and the config's labels.
    async fn labels(
        &mut self,
        reference: &Reference,
    ) -> Result<(String, BTreeMap<String, String>), MetadataFailure> {
        self.authorize().await?;
        let wanted = reference.digest().or(reference.tag()).unwrap_or("latest");
        let (mut manifest, mut digest) = self.manifest(wanted, reference.digest()).await?;
        if let Manifest::Index(entry) = manifest {
            let Some(entry) = entry else {
                return Err(self.not_found("its index has no linux/amd64 image"));
            };
            (manifest, digest) = self.manifest(&entry, Some(&entry)).await?;
        }
        let Manifest::Image(config) = manifest else {
            return Err(self.not_found("the linux/amd64 entry of its index is another index"));
        };
        let blob = self.config_blob(&config).await?;
        let labels = config_labels(&blob).map_err(|e| match e {
            ConfigError::Invalid(why) => MetadataFailure::Registry(format!(
                "the config of image {} cannot be read: {why}",
                self.image
            )),
            ConfigError::LabelsTooLarge => MetadataFailure::TooLarge(format!(
                "the labels of image {} take more than {} KiB (keys and values); the operator keeps \
                 them in the model's status, which must fit in one Kubernetes object",
                self.image,
                MAX_LABEL_BYTES / 1024
            )),
        })?;
        Ok((digest, labels))
    }

    fn at(&self, stage: &'static str) {
        if let Ok(mut s) = self.stage.lock() {
            *s = stage;
        }
    }

    /// Settles the `Authorization` header: an identity token as it is; else what `GET /v2/` asks for (a
    /// bearer token from its realm, with the credentials if any), else basic credentials if any.
    async fn authorize(&mut self) -> Result<(), MetadataFailure> {
        let basic = match &self.auth {
            RegistryAuth::Bearer(token) => {
                self.authorization = Some(format!("Bearer {token}"));
                return Ok(());
            }
            RegistryAuth::Basic(user, password) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )),
            RegistryAuth::Anonymous => None,
        };
        self.at("checking its API version");
        let url = format!("{}://{}/v2/", self.scheme, self.registry);
        let response = self.send(&url, None, None).await?;
        let challenge = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_challenge);
        drop(response);
        self.authorization = match challenge {
            Some(challenge) => {
                self.at("getting a token");
                let token = self.token(&challenge, basic.as_deref()).await?;
                Some(format!("Bearer {token}"))
            }
            None => basic,
        };
        Ok(())
    }

    /// A pull token from the challenge's realm.
    async fn token(
        &self,
        challenge: &BearerChallenge,
        basic: Option<&str>,
    ) -> Result<String, MetadataFailure> {
        egress::realm_allowed(&challenge.realm, self.insecure).map_err(|why| {
            MetadataFailure::NotAllowed(format!(
                "registry {} asks for a token for image {}, but {why}",
                self.registry, self.image
            ))
        })?;
        let mut url = challenge.realm.clone();
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("scope=");
        url.push_str(&query_escape(&format!(
            "repository:{}:pull",
            self.repository
        )));
        if let Some(service) = &challenge.service {
            url.push_str("&service=");
            url.push_str(&query_escape(service));
        }
        let response = self.send(&url, basic, None).await?;
        let response = self.success(response).await?;
        let body = self.body(response, "the token").await?;
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let token: Token = serde_json::from_slice(&body).map_err(|e| {
            MetadataFailure::Registry(format!(
                "the token answer of {} for image {} is not a token: {}",
                clip(&challenge.realm),
                self.image,
                clip(&e.to_string())
            ))
        })?;
        token
            .token
            .or(token.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                MetadataFailure::Registry(format!(
                    "the token answer of {} for image {} holds no token",
                    clip(&challenge.realm),
                    self.image
                ))
            })
    }

    /// The manifest `reference` (a tag or a digest) and its digest, checked against `expected`.
    async fn manifest(
        &self,
        reference: &str,
        expected: Option<&str>,
    ) -> Result<(Manifest, String), MetadataFailure> {
        self.at("reading the manifest");
        if let Some(digest) = expected {
            self.check_digest_form(digest)?;
        }
        let url = format!(
            "{}://{}/v2/{}/manifests/{reference}",
            self.scheme, self.registry, self.repository
        );
        let response = self.get(url, Some(MANIFEST_TYPES)).await?;
        let response = self.success(response).await?;
        let body = self.body(response, "the manifest").await?;
        let digest = sha256(&body);
        if let Some(expected) = expected
            && digest != expected
        {
            return Err(MetadataFailure::Registry(format!(
                "registry {} sent a manifest for image {} whose digest is {digest}, not {expected}",
                self.registry, self.image
            )));
        }
        let manifest = parse_manifest(&body).map_err(|why| {
            MetadataFailure::Registry(format!(
                "the manifest of image {} cannot be read: {why}",
                self.image
            ))
        })?;
        Ok((manifest, digest))
    }

    /// The config blob, refused before reading when its descriptor announces more than the cap, and
    /// checked against its digest.
    async fn config_blob(&self, config: &Descriptor) -> Result<Bytes, MetadataFailure> {
        self.at("reading the config blob");
        if config.size > MAX_RESPONSE_BYTES as u64 {
            return Err(MetadataFailure::TooLarge(format!(
                "the manifest of image {} announces a config blob of {} bytes, more than the cap of \
                 {} on what the operator reads from a registry; it was not read",
                self.image,
                config.size,
                cap_text()
            )));
        }
        self.check_digest_form(&config.digest)?;
        let url = format!(
            "{}://{}/v2/{}/blobs/{}",
            self.scheme, self.registry, self.repository, config.digest
        );
        let response = self.get(url, None).await?;
        let response = self.success(response).await?;
        let body = self.body(response, "the config blob").await?;
        let digest = sha256(&body);
        if digest != config.digest {
            return Err(MetadataFailure::Registry(format!(
                "registry {} sent a config blob for image {} whose digest is {digest}, not the {} \
                 its manifest names",
                self.registry, self.image, config.digest
            )));
        }
        Ok(body)
    }

    /// Only sha256 digests are read (and only well-formed ones go into a URL).
    fn check_digest_form(&self, digest: &str) -> Result<(), MetadataFailure> {
        let hex = digest.strip_prefix("sha256:").unwrap_or_default();
        if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(())
        } else {
            Err(MetadataFailure::Registry(format!(
                "image {} names the digest {:?}; only sha256:<64 hex digits> is read",
                self.image,
                digest.chars().take(100).collect::<String>()
            )))
        }
    }

    /// `GET url`, following redirects (blob stores); the registry's `Authorization` goes to the
    /// registry's host only.
    async fn get(
        &self,
        mut url: String,
        accept: Option<&str>,
    ) -> Result<Response<Incoming>, MetadataFailure> {
        for _ in 0..=MAX_REDIRECTS {
            let own = authority(&url).is_some_and(|a| a.eq_ignore_ascii_case(self.registry));
            let authorization = self.authorization.as_deref().filter(|_| own);
            let response = self.send(&url, authorization, accept).await?;
            let redirect = matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308);
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok());
            match location {
                Some(location) if redirect => {
                    let next = resolve(&url, location);
                    egress::redirect_allowed(&url, &next, self.cross_host_redirects).map_err(
                        |why| {
                            MetadataFailure::NotAllowed(format!(
                                "registry {} was reading image {} and {why}",
                                self.registry, self.image
                            ))
                        },
                    )?;
                    url = next;
                }
                _ => return Ok(response),
            }
        }
        Err(MetadataFailure::Registry(format!(
            "registry {} redirected a read of image {} more than {MAX_REDIRECTS} times",
            self.registry, self.image
        )))
    }

    /// One `GET`.
    async fn send(
        &self,
        url: &str,
        authorization: Option<&str>,
        accept: Option<&str>,
    ) -> Result<Response<Incoming>, MetadataFailure> {
        let invalid = |why: String| {
            MetadataFailure::Registry(format!(
                "reading image {} from registry {}: {why}",
                self.image, self.registry
            ))
        };
        let uri: Uri = url
            .parse()
            .map_err(|e| invalid(format!("{:?} is not a URL: {e}", clip(url))))?;
        if let Some(ip) = uri.host().and_then(egress::literal_address)
            && !self.allow_local
            && egress::is_local(&ip)
        {
            return Err(MetadataFailure::NotAllowed(format!(
                "reading image {}: {}",
                self.image,
                egress::refused_address(uri.host().unwrap_or_default(), &[ip])
            )));
        }
        let mut request = Request::get(uri).header(USER_AGENT, USER_AGENT_VALUE);
        if let Some(a) = authorization {
            request = request.header(AUTHORIZATION, a);
        }
        if let Some(a) = accept {
            request = request.header(ACCEPT, a);
        }
        let request = request
            .body(String::new())
            .map_err(|e| invalid(format!("cannot make the request to {url}: {e}")))?;
        self.http.request(request).await.map_err(|e| {
            if let Some(refused) = egress_refusal(&e) {
                return MetadataFailure::NotAllowed(format!(
                    "reading image {} from registry {}: {refused}",
                    self.image, self.registry
                ));
            }
            MetadataFailure::Unreachable(if e.is_connect() {
                format!("cannot reach registry {}: {}", self.registry, chain(&e))
            } else {
                format!(
                    "request to registry {} failed: {}",
                    self.registry,
                    chain(&e)
                )
            })
        })
    }

    /// `response` if it is a success; else the failure its status and error body say.
    async fn success(
        &self,
        response: Response<Incoming>,
    ) -> Result<Response<Incoming>, MetadataFailure> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = read_capped(response.into_body(), ERROR_BODY_BYTES)
            .await
            .unwrap_or_default();
        Err(self.refusal(status, &body))
    }

    /// The body of `response`, within the cap: refused unread when its length is announced above it, cut
    /// off when more comes.
    async fn body(
        &self,
        response: Response<Incoming>,
        what: &str,
    ) -> Result<Bytes, MetadataFailure> {
        let announced = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(size) = announced.filter(|s| *s > MAX_RESPONSE_BYTES as u64) {
            return Err(MetadataFailure::TooLarge(format!(
                "registry {} announces {size} bytes for {what} of image {}, more than the cap of {} \
                 on what the operator reads from a registry; it was not read",
                self.registry,
                self.image,
                cap_text()
            )));
        }
        match read_capped(response.into_body(), MAX_RESPONSE_BYTES).await {
            Ok(body) => Ok(Bytes::from(body)),
            Err(BodyError::TooLarge) => Err(MetadataFailure::TooLarge(format!(
                "registry {} sent more than the cap of {} for {what} of image {} (the cap on what \
                 the operator reads from a registry); reading stopped there",
                self.registry,
                cap_text(),
                self.image
            ))),
            Err(BodyError::Http(e)) => Err(MetadataFailure::Unreachable(format!(
                "reading {what} of image {} from registry {} failed: {}",
                self.image,
                self.registry,
                chain(&e)
            ))),
        }
    }

    /// Sorts a refusal into the failure a user can act on, by the error codes of the distribution API,
    /// else by the status.
    fn refusal(&self, status: StatusCode, body: &[u8]) -> MetadataFailure {
        #[derive(Deserialize, Default)]
        struct Envelope {
            #[serde(default)]
            errors: Vec<ErrorEntry>,
        }
        #[derive(Deserialize)]
        struct ErrorEntry {
            #[serde(default)]
            code: String,
            #[serde(default)]
            message: String,
        }
        let envelope: Envelope = serde_json::from_slice(body).unwrap_or_default();
        let has = |codes: &[&str]| envelope.errors.iter().any(|e| codes.contains(&&*e.code));
        if has(&["UNAUTHORIZED", "DENIED"]) {
            return self.unauthorized();
        }
        if has(&[
            "MANIFEST_UNKNOWN",
            "NAME_UNKNOWN",
            "NOT_FOUND",
            "BLOB_UNKNOWN",
        ]) {
            let messages: Vec<&str> = envelope.errors.iter().map(|e| &*e.message).collect();
            return self.not_found(&clip(&messages.join("; ")));
        }
        match status.as_u16() {
            401 | 403 => self.unauthorized(),
            404 => self.not_found(&excerpt(body)),
            _ => MetadataFailure::Registry(format!(
                "registry {} answered {status} for {}: {}",
                self.registry,
                self.image,
                excerpt(body)
            )),
        }
    }

    fn unauthorized(&self) -> MetadataFailure {
        let (registry, image) = (self.registry, self.image);
        MetadataFailure::Unauthorized(if self.authenticated {
            format!("registry {registry} refused the credentials of the pull secret for {image}")
        } else {
            format!(
                "registry {registry} requires credentials for {image} and the model names no pull \
                 secret with an entry for it"
            )
        })
    }

    fn not_found(&self, detail: &str) -> MetadataFailure {
        MetadataFailure::NotFound(format!(
            "image {} not found in registry {}: {detail}",
            self.image, self.registry
        ))
    }
}

/// Reads `body` whole, refusing more than `cap` bytes: reading stops at the frame that passes it.
async fn read_capped(mut body: Incoming, cap: usize) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(BodyError::Http)?;
        if let Ok(data) = frame.into_data() {
            if data.len() > cap - out.len() {
                return Err(BodyError::TooLarge);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

fn cap_text() -> String {
    format!(
        "{} MiB ({MAX_RESPONSE_BYTES} bytes)",
        MAX_RESPONSE_BYTES / MIB
    )
}

/// `sha256:<hex>` of `bytes`.
fn sha256(bytes: &Bytes) -> String {
    oci_client::client::Config::new(bytes.clone(), String::new(), None).sha256_digest()
}

/// The start of an error body, printable, for a message.
fn excerpt(body: &[u8]) -> String {
    clip(&String::from_utf8_lossy(
        &body[..body.len().min(4 * egress::REFLECTED_CHARS)],
    ))
}

/// The egress rule's refusal behind a failed request, if that is why it failed: the resolver answers
/// `PermissionDenied` with the reason.
fn egress_refusal(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::PermissionDenied
        {
            return Some(io.to_string());
        }
        cause = c.source();
    }
    None
}

/// `host[:port]` of an absolute URL.
fn authority(url: &str) -> Option<String> {
    url.parse::<Uri>()
        .ok()?
        .authority()
        .map(|a| a.as_str().to_string())
}

/// Where a `Location` header points, from `base`.
fn resolve(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_string();
    }
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    if let Some(rest) = location.strip_prefix("//") {
        return format!("{}{rest}", &base[..scheme_end]);
    }
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    if location.starts_with('/') {
        return format!("{}{location}", &base[..path_start]);
    }
    let dir_end = base[..base.find('?').unwrap_or(base.len())]
        .rfind('/')
        .filter(|i| *i >= path_start)
        .map_or(base.len(), |i| i + 1);
    format!("{}{location}", &base[..dir_end])
}

/// Percent-encodes all but the unreserved characters, for a query value.
fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// An error and its causes, as one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn redirects_resolve_against_the_request() {
        let base = "http://r:5000/v2/a/b/blobs/sha256:1";
        assert_eq!(resolve(base, "https://s3/x?y=1"), "https://s3/x?y=1");
        assert_eq!(resolve(base, "//cdn/x"), "http://cdn/x");
        assert_eq!(resolve(base, "/store/x"), "http://r:5000/store/x");
        assert_eq!(resolve(base, "other"), "http://r:5000/v2/a/b/blobs/other");
        assert_eq!(
            query_escape("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }

    // --- A registry of canned answers, over plain HTTP. ---

    /// What the fake registry sends for one request.
    enum Reply {
        /// Status, headers and a body.
        Full(u16, Vec<(&'static str, String)>, Vec<u8>),
        /// 200 without a length: `n` bytes of `x`, made as they are sent, then the connection closes.
        Endless(usize),
        /// 200 announcing 1000 bytes, sending 10, then nothing.
        Stall,
    }

    fn ok(body: impl Into<Vec<u8>>) -> Reply {
        Reply::Full(200, vec![], body.into())
    }

    fn digest_of(bytes: &[u8]) -> String {
        sha256(&Bytes::copy_from_slice(bytes))
    }

    /// Serves `answer(path, authorization)` on a free port; counts requests per path.
    async fn serve(
        answer: impl Fn(&str, Option<&str>) -> Reply + Send + Sync + 'static,
    ) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (answer, log) = (Arc::new(answer), seen.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let (answer, log) = (answer.clone(), log.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if conn.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let path = head.split(' ').nth(1).unwrap_or_default().to_string();
                    let authorization = head
                        .lines()
                        .find_map(|l| l.strip_prefix("authorization: "))
                        .map(str::to_string);
                    log.lock().unwrap().push(path.clone());
                    let _ = match answer(&path, authorization.as_deref()) {
                        Reply::Full(status, headers, body) => {
                            let mut out = format!(
                                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                                body.len()
                            );
                            for (k, v) in headers {
                                out.push_str(&format!("{k}: {v}\r\n"));
                            }
                            out.push_str("\r\n");
                            let mut out = out.into_bytes();
                            out.extend_from_slice(&body);
                            conn.write_all(&out).await
                        }
                        Reply::Endless(n) => {
                            let mut r = conn
                                .write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n")
                                .await;
                            let chunk = vec![b'x'; 64 * 1024];
                            let mut sent = 0;
                            while r.is_ok() && sent < n {
                                r = conn.write_all(&chunk).await;
                                sent += chunk.len();
                            }
                            r
                        }
                        Reply::Stall => {
                            let _ = conn
                                .write_all(
                                    b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789",
                                )
                                .await;
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            Ok(())
                        }
                    };
                });
            }
        });
        (addr, seen)
    }

    const CONFIG: &str = r#"{"architecture":"amd64","os":"linux","config":{"Labels":{"k":"v"}}}"#;

    fn manifest_for(config_digest: &str, size: u64) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{size}}},"layers":[]}}"#
        )
        .into_bytes()
    }

    async fn read(addr: &str, auth: RegistryAuth, deadline: Duration) -> RegistryRead {
        let settings = RegistrySettings {
            insecure: vec![addr.to_string()],
            ..Default::default()
        };
        let image = format!("{addr}/aim/x:1");
        read_image(&settings, &image, &image.parse().unwrap(), auth, deadline).await
    }

    fn failure(read: RegistryRead) -> MetadataFailure {
        match read {
            RegistryRead::Failed(f) => f,
            other => panic!("{other:?}"),
        }
    }

    // M-01: a bearer challenge is answered with a token from its realm (credentials sent there), the token
    // is used for the manifest, and a blob redirected to another path is followed.
    #[tokio::test]
    async fn a_token_registry_and_a_redirected_blob_are_read() {
        let config_digest = digest_of(CONFIG.as_bytes());
        let manifest = manifest_for(&config_digest, CONFIG.len() as u64);
        let manifest_digest = digest_of(&manifest);
        let realm = Arc::new(OnceLock::<String>::new());
        let r = realm.clone();
        let blob_path = format!("/v2/aim/x/blobs/{config_digest}");
        let (addr, seen) = serve(move |path, auth| match path {
            "/v2/" => Reply::Full(
                401,
                vec![(
                    "www-authenticate",
                    format!(r#"Bearer realm="{}",service="fake""#, r.get().unwrap()),
                )],
                vec![],
            ),
            "/token?scope=repository%3Aaim%2Fx%3Apull&service=fake"
                if auth == Some(&format!("Basic {}", b64("u:p"))) =>
            {
                ok(r#"{"access_token":"tok"}"#)
            }
            "/v2/aim/x/manifests/1" if auth == Some("Bearer tok") => ok(manifest.clone()),
            p if p == blob_path && auth == Some("Bearer tok") => {
                Reply::Full(307, vec![("location", "/store/config".to_string())], vec![])
            }
            "/store/config" => ok(CONFIG),
            _ => Reply::Full(
                404,
                vec![],
                b"{\"errors\":[{\"code\":\"NOT_FOUND\",\"message\":\"nothing here\"}]}".to_vec(),
            ),
        })
        .await;
        realm.set(format!("http://{addr}/token")).unwrap();
        let got = read(
            &addr,
            RegistryAuth::Basic("u".into(), "p".into()),
            READ_TIMEOUT,
        )
        .await;
        let RegistryRead::Read { digest, labels } = got else {
            panic!("{got:?} after {:?}", seen.lock().unwrap())
        };
        assert_eq!(digest, Some(manifest_digest));
        assert_eq!(labels, [("k".to_string(), "v".to_string())].into());
    }

    /// A read of `image` with `settings`.
    async fn read_with(settings: &RegistrySettings, image: &str) -> RegistryRead {
        read_image(
            settings,
            image,
            &image.parse().unwrap(),
            RegistryAuth::Anonymous,
            READ_TIMEOUT,
        )
        .await
    }

    fn not_allowed(read: RegistryRead) -> String {
        match failure(read) {
            MetadataFailure::NotAllowed(m) => m,
            other => panic!("expected NotAllowed, got {other:?}"),
        }
    }

    // M-01 (egress): a registry that is not listed is never reached at a loopback address, whether the
    // image names the address or a name that resolves to it; listed, the same registry is read.
    #[tokio::test]
    async fn unlisted_registries_never_reach_loopback_addresses() {
        let (addr, seen) = serve(|_, _| ok("")).await;
        let port = addr.rsplit(':').next().unwrap().to_string();
        let unlisted = RegistrySettings::default();
        let m = not_allowed(read_with(&unlisted, &format!("{addr}/aim/x:1")).await);
        assert!(
            m.contains("127.0.0.1") && m.contains("--local-registries"),
            "{m}"
        );
        let m = not_allowed(read_with(&unlisted, &format!("localhost:{port}/aim/x:1")).await);
        assert!(m.contains("localhost") && m.contains("loopback"), "{m}");
        // Link-local (the cloud metadata service) likewise, refused before any connection is tried.
        let m = not_allowed(read_with(&unlisted, "169.254.169.254/aim/x:1").await);
        assert!(m.contains("169.254.169.254"), "{m}");
        assert!(
            seen.lock().unwrap().is_empty(),
            "{:?}",
            seen.lock().unwrap()
        );
        // Listed (over HTTPS: `--local-registries`), the connection is made: the fake server speaks
        // plain HTTP, so the TLS handshake never completes (the deadline ends it), and that is not an
        // egress refusal.
        let local = RegistrySettings {
            local: vec![format!("localhost:{port}")],
            ..Default::default()
        };
        let image = format!("localhost:{port}/aim/x:1");
        let anonymous = RegistryAuth::Anonymous;
        let deadline = Duration::from_secs(2);
        let read = read_image(&local, &image, &image.parse().unwrap(), anonymous, deadline).await;
        assert!(
            matches!(failure(read), MetadataFailure::Unreachable(_)),
            "a listed registry is connected to"
        );
    }

    // M-01 (egress): a redirect to another host over plain HTTP is not followed, nor any redirect to
    // another host when cross-host redirects are off; the other host never sees a request.
    #[tokio::test]
    async fn redirects_to_another_host_over_plain_http_are_refused() {
        let config_digest = digest_of(CONFIG.as_bytes());
        let manifest = manifest_for(&config_digest, CONFIG.len() as u64);
        let (other, other_seen) = serve(|_, _| ok(CONFIG)).await;
        let blob_path = format!("/v2/aim/x/blobs/{config_digest}");
        let target = format!("http://{other}/config");
        let (addr, _) = serve(move |path, _| match path {
            "/v2/" => ok(""),
            "/v2/aim/x/manifests/1" => ok(manifest.clone()),
            p if p == blob_path => Reply::Full(307, vec![("location", target.clone())], vec![]),
            _ => Reply::Full(404, vec![], vec![]),
        })
        .await;
        let m = not_allowed(read(&addr, RegistryAuth::Anonymous, READ_TIMEOUT).await);
        assert!(m.contains("another host over plain HTTP"), "{m}");
        assert!(other_seen.lock().unwrap().is_empty());
    }

    // M-01 (egress): what a registry says reaches the status clipped.
    #[tokio::test]
    async fn a_registry_s_own_text_is_clipped() {
        let message = "y".repeat(50_000);
        let body = format!(r#"{{"errors":[{{"code":"MANIFEST_UNKNOWN","message":"{message}"}}]}}"#);
        let (addr, _) = serve(move |path, _| match path {
            "/v2/" => ok(""),
            _ => Reply::Full(404, vec![], body.clone().into_bytes()),
        })
        .await;
        let f = failure(read(&addr, RegistryAuth::Anonymous, READ_TIMEOUT).await);
        assert!(matches!(f, MetadataFailure::NotFound(_)), "{f:?}");
        assert!(
            f.message().len() < 2 * egress::REFLECTED_CHARS + 200,
            "{} characters",
            f.message().len()
        );
    }

    // M-01: a config blob announced above the cap is refused without being asked for.
    #[tokio::test]
    async fn a_config_announced_above_the_cap_is_not_read() {
        let digest = digest_of(b"whatever");
        let manifest = manifest_for(&digest, 1 << 30);
        let (addr, seen) = serve(move |path, _| match path {
            "/v2/" => ok(""),
            "/v2/aim/x/manifests/1" => ok(manifest.clone()),
            _ => Reply::Endless(1 << 30),
        })
        .await;
        let f = failure(read(&addr, RegistryAuth::Anonymous, READ_TIMEOUT).await);
        assert_eq!(f.reason(), "RegistryResponseTooLarge", "{f:?}");
        assert!(
            f.message().contains("1073741824 bytes") && f.message().contains("4 MiB"),
            "{f:?}"
        );
        assert!(
            !seen.lock().unwrap().iter().any(|p| p.contains("/blobs/")),
            "{:?}",
            seen.lock().unwrap()
        );
    }

    // M-01: a registry that sends more than the cap (announcing less, or nothing) is cut off, whichever
    // body it is: token, manifest or config blob.
    #[tokio::test]
    async fn bodies_past_the_cap_are_cut_off() {
        let digest = digest_of(b"small");
        let lying = manifest_for(&digest, 5);
        let (addr, _) = serve(move |path, _| match path {
            "/v2/" => ok(""),
            "/v2/aim/x/manifests/1" => ok(lying.clone()),
            _ => Reply::Endless(64 * MIB),
        })
        .await;
        let f = failure(read(&addr, RegistryAuth::Anonymous, READ_TIMEOUT).await);
        assert_eq!(f.reason(), "RegistryResponseTooLarge", "{f:?}");
        assert!(
            f.message().contains("config blob") && f.message().contains("reading stopped"),
            "{f:?}"
        );

        let (addr, _) = serve(|path, _| match path {
            "/v2/" => ok(""),
            _ => Reply::Endless(64 * MIB),
        })
        .await;
        let f = failure(read(&addr, RegistryAuth::Anonymous, READ_TIMEOUT).await);
        assert_eq!(f.reason(), "RegistryResponseTooLarge", "{f:?}");
        assert!(f.message().contains("the manifest"), "{f:?}");

        let realm = Arc::new(OnceLock::<String>::new());
        let r = realm.clone();
        let (addr, _) = serve(move |path, _| match path {
            "/v2/" => Reply::Full(
                401,
                vec![(
                    "www-authenticate",
                    format!("Bearer realm=\"{}\"", r.get().unwrap()),
                )],
                vec![],
            ),
            _ => Reply::Full(200, vec![], vec![b' '; MAX_RESPONSE_BYTES + 1]),
        })
        .await;
        realm.set(format!("http://{addr}/token")).unwrap();
        let f = failure(read(&addr, RegistryAuth::Anonymous, READ_TIMEOUT).await);
        assert_eq!(f.reason(), "RegistryResponseTooLarge", "{f:?}");
        assert!(
            f.message().contains("the token") && f.message().contains("announces 4194305 bytes"),
            "{f:?}"
        );
    }

    // M-01: a body that never ends is given up on at the deadline, saying what was being read.
    #[tokio::test]
    async fn a_body_that_never_ends_times_out() {
        let digest = digest_of(b"small");
        let manifest = manifest_for(&digest, 5);
        let (addr, _) = serve(move |path, _| match path {
            "/v2/" => ok(""),
            "/v2/aim/x/manifests/1" => ok(manifest.clone()),
            _ => Reply::Stall,
        })
        .await;
        let f = failure(read(&addr, RegistryAuth::Anonymous, Duration::from_secs(1)).await);
        assert_eq!(f.reason(), "RegistryUnreachable", "{f:?}");
        assert!(
            f.message().contains("within 1s") && f.message().contains("reading the config blob"),
            "{f:?}"
        );
    }

    // M-01: content that does not match its digest is refused.
    #[tokio::test]
    async fn a_config_that_is_not_its_digest_is_refused() {
        let digest = digest_of(b"something else");
        let manifest = manifest_for(&digest, CONFIG.len() as u64);
        let requests = Arc::new(AtomicUsize::new(0));
        let n = requests.clone();
        let (addr, _) = serve(move |path, _| {
            n.fetch_add(1, Ordering::SeqCst);
            match path {
                "/v2/" => ok(""),
                "/v2/aim/x/manifests/1" => ok(manifest.clone()),
                _ => ok(CONFIG),
            }
        })
        .await;
        let f = failure(read(&addr, RegistryAuth::Anonymous, READ_TIMEOUT).await);
        assert_eq!(f.reason(), "RegistryError", "{f:?}");
        assert!(f.message().contains("its manifest names"), "{f:?}");
        assert_eq!(requests.load(Ordering::SeqCst), 3);
    }
}
