//! Where a registry read may go (M-01, egress). Any user who may create a model names the registry, so the
//! operator must not become a way into addresses the cluster keeps for itself:
//!
//! - loopback, link-local (the cloud metadata service at 169.254.169.254 among them), unspecified,
//!   multicast and broadcast addresses are reached only for registries the settings list
//!   (`--insecure-registries` or `--local-registries`), whether the reference names the address or a
//!   name resolves to it, at every hop: the registry, its token realm, a redirect;
//! - a token realm is HTTPS, unless the registry is listed as insecure;
//! - a redirect never goes from HTTPS to plain HTTP, and to another host only over HTTPS, without the
//!   registry's credentials, and only while `--registry-cross-host-redirects` is on (the default: the
//!   large public registries serve blobs from another host);
//! - what a registry says is clipped before it reaches a status ([`clip`]).
//!
//! Host names are resolved in the process by hickory (`/etc/resolv.conf`, `/etc/hosts`), never through
//! libc's NSS, so the static binary resolves names inside its image; the connector connects only to the
//! addresses this module let through.

use hyper_util::client::legacy::connect::dns::Name;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

/// The most characters of a registry's own text (an error message, a realm, a location) kept in a
/// message.
pub const REFLECTED_CHARS: usize = 200;

/// Whether an address is one a registry read never reaches unless its registry is listed: loopback,
/// link-local, unspecified, multicast, broadcast (IPv4-mapped IPv6 addresses as their IPv4 address).
pub fn is_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_local(&IpAddr::V4(v4));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// The host of an authority (`host[:port]`, `[v6]:port`), as an address when it is one.
pub fn literal_address(host: &str) -> Option<IpAddr> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.parse().ok()
}

/// `s` cut to [`REFLECTED_CHARS`] printable characters, with `…` where it was cut.
pub fn clip(s: &str) -> String {
    let mut out: String = s
        .chars()
        .filter(|c| !c.is_control())
        .take(REFLECTED_CHARS)
        .collect();
    if s.chars()
        .filter(|c| !c.is_control())
        .nth(REFLECTED_CHARS)
        .is_some()
    {
        out.push('…');
    }
    out
}

/// Whether a token realm may be asked for a token: HTTPS, or anything for a registry listed as insecure.
pub fn realm_allowed(realm: &str, registry_insecure: bool) -> Result<(), String> {
    if registry_insecure || realm.starts_with("https://") {
        Ok(())
    } else {
        Err(format!(
            "its token realm {:?} is not HTTPS; credentials and tokens go to a realm over HTTPS only, \
             unless the registry is listed in --insecure-registries",
            clip(realm)
        ))
    }
}

/// Whether a redirect from `from` to `to` (absolute URLs) is followed.
pub fn redirect_allowed(from: &str, to: &str, cross_host: bool) -> Result<(), String> {
    let https = |u: &str| u.starts_with("https://");
    let authority = |u: &str| {
        u.parse::<hyper::Uri>()
            .ok()
            .and_then(|u| u.authority().map(|a| a.as_str().to_ascii_lowercase()))
    };
    if !to.starts_with("http://") && !to.starts_with("https://") {
        return Err(format!(
            "it redirected to {:?}, which is not an HTTP URL",
            clip(to)
        ));
    }
    if https(from) && !https(to) {
        return Err(format!(
            "it redirected from HTTPS to plain HTTP ({:?}); that redirect is not followed",
            clip(to)
        ));
    }
    let (Some(a), Some(b)) = (authority(from), authority(to)) else {
        return Err(format!(
            "it redirected to {:?}, which has no host",
            clip(to)
        ));
    };
    if a != b {
        if !cross_host {
            return Err(format!(
                "it redirected to another host ({:?}), and --registry-cross-host-redirects is off",
                clip(&b)
            ));
        }
        if !https(to) {
            return Err(format!(
                "it redirected to another host over plain HTTP ({:?}); a redirect to another host is \
                 followed over HTTPS only",
                clip(to)
            ));
        }
    }
    Ok(())
}

/// The message of an address refused by the egress rule.
pub fn refused_address(host: &str, addresses: &[IpAddr]) -> String {
    const UNLISTED: &str = "which the operator does not reach for a registry that is not listed in \
                            --local-registries or --insecure-registries";
    if literal_address(host).is_some() {
        return format!(
            "{} is a loopback, link-local or other local address, {UNLISTED}",
            clip(host)
        );
    }
    let list: Vec<String> = addresses.iter().take(4).map(ToString::to_string).collect();
    format!(
        "{} resolves only to loopback, link-local or other local addresses ({}), {UNLISTED}",
        clip(host),
        list.join(", ")
    )
}

/// The connector's resolver for one read: hickory with the system's configuration, dropping the
/// addresses [`is_local`] names unless the read's registry is listed.
#[derive(Clone)]
pub struct Resolver {
    resolver: Option<hickory_resolver::TokioResolver>,
    allow_local: bool,
}

impl Resolver {
    /// A resolver of `/etc/resolv.conf` and `/etc/hosts`; without them every name fails with the reason.
    pub fn new(allow_local: bool) -> Self {
        let resolver = match hickory_resolver::TokioResolver::builder_tokio()
            .and_then(|b| b.build())
        {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "no DNS configuration (/etc/resolv.conf): registry host names cannot be resolved");
                None
            }
        };
        Self {
            resolver,
            allow_local,
        }
    }
}

impl tower::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let Some(resolver) = this.resolver else {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("cannot resolve {host}: no DNS configuration (/etc/resolv.conf)"),
                ));
            };
            let found: Vec<IpAddr> = resolver
                .lookup_ip(host.as_str())
                .await
                .map_err(|e| io::Error::other(format!("cannot resolve {host}: {e}")))?
                .iter()
                .collect();
            let kept: Vec<SocketAddr> = found
                .iter()
                .filter(|ip| this.allow_local || !is_local(ip))
                .map(|ip| SocketAddr::new(*ip, 0))
                .collect();
            if kept.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    refused_address(&host, &found),
                ));
            }
            Ok(kept.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_addresses() {
        for local in [
            "127.0.0.1",
            "127.9.9.9",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "febf::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_local(&local.parse().unwrap()), "{local} is local");
        }
        // Private ranges are where in-cluster registries live: reachable.
        for remote in [
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "8.8.8.8",
            "fd00::1",
            "2001:db8::1",
            "fec0::1",
            "::ffff:10.1.2.3",
        ] {
            assert!(!is_local(&remote.parse().unwrap()), "{remote} is not local");
        }
    }

    #[test]
    fn literal_addresses_of_authorities() {
        assert_eq!(
            literal_address("127.0.0.1"),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(literal_address("[::1]"), Some("::1".parse().unwrap()));
        assert_eq!(literal_address("registry.example"), None);
    }

    #[test]
    fn realms_are_https_unless_the_registry_is_insecure() {
        assert!(realm_allowed("https://auth.example/token", false).is_ok());
        let refused = realm_allowed("http://auth.example/token", false).unwrap_err();
        assert!(refused.contains("not HTTPS"), "{refused}");
        assert!(realm_allowed("file:///etc/passwd", false).is_err());
        assert!(realm_allowed("http://127.0.0.1:5000/token", true).is_ok());
    }

    #[test]
    fn redirects() {
        let r = |from, to, cross| redirect_allowed(from, to, cross);
        // The same host: any path, and plain HTTP stays plain HTTP.
        assert!(
            r(
                "https://reg.example/v2/a",
                "https://reg.example/blobs/x",
                false
            )
            .is_ok()
        );
        assert!(
            r(
                "http://reg.example:5000/v2/a",
                "http://reg.example:5000/b",
                false
            )
            .is_ok()
        );
        // Never down to plain HTTP, even on the same host.
        let e = r("https://reg.example/v2/a", "http://reg.example/b", true).unwrap_err();
        assert!(e.contains("plain HTTP"), "{e}");
        // Another host: over HTTPS, and only while allowed.
        assert!(r("https://reg.example/v2/a", "https://cdn.example/b", true).is_ok());
        let e = r("https://reg.example/v2/a", "https://cdn.example/b", false).unwrap_err();
        assert!(e.contains("another host"), "{e}");
        let e = r("http://reg.example/v2/a", "http://other.example/b", true).unwrap_err();
        assert!(e.contains("another host over plain HTTP"), "{e}");
        // Another port is another host.
        assert!(
            r(
                "http://127.0.0.1:5000/v2/a",
                "http://127.0.0.1:5001/b",
                true
            )
            .is_err()
        );
        // Not HTTP at all.
        assert!(r("https://reg.example/v2/a", "file:///etc/passwd", true).is_err());
    }

    #[test]
    fn reflected_text_is_clipped() {
        let long = "x".repeat(10_000);
        let c = clip(&long);
        assert_eq!(c.chars().count(), REFLECTED_CHARS + 1);
        assert!(c.ends_with('…'));
        assert_eq!(clip("short\nline"), "shortline");
        assert!(refused_address(&long, &["127.0.0.1".parse().unwrap()]).len() < 600);
    }

    // The resolver itself: `localhost` comes from /etc/hosts (or the resolver's own rule for it) as a
    // loopback address, dropped for a registry that is not listed, kept for one that is.
    #[tokio::test]
    async fn names_that_resolve_to_loopback_are_refused_unless_listed() {
        use tower::ServiceExt;
        let name: Name = "localhost".parse().unwrap();
        let refused = Resolver::new(false)
            .oneshot(name.clone())
            .await
            .expect_err("localhost is refused");
        assert_eq!(refused.kind(), io::ErrorKind::PermissionDenied, "{refused}");
        assert!(refused.to_string().contains("127.0.0.1") || refused.to_string().contains("::1"));
        let kept: Vec<SocketAddr> = Resolver::new(true)
            .oneshot(name)
            .await
            .expect("listed: localhost resolves")
            .collect();
        assert!(kept.iter().all(|a| a.ip().is_loopback()), "{kept:?}");
        assert!(!kept.is_empty());
    }
}
