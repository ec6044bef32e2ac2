//! M-01: reads an image's config labels from its registry, with the credentials the kubelet would use
//! (the model's `imagePullSecrets`, `kubernetes.io/dockerconfigjson`). Only the Secrets a model names
//! are read, one `get` each; Secrets are never listed or watched.
//!
//! Whoever may create a model chooses the registry, so nothing a registry sends is trusted ([`fetch`]:
//! every body capped, the whole read under a deadline, few reads at once; [`documents`]: only the
//! fields that matter are kept).

mod documents;
mod egress;
mod fetch;

use aim_resolve::model::{MetadataFailure, RegistryNeed, RegistryRead};
use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use oci_client::Reference;
use oci_client::secrets::RegistryAuth;

/// How the registry is reached.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// Registries (`host[:port]`) spoken to over plain HTTP (`--insecure-registries`). They may also
    /// resolve to loopback and link-local addresses, and use a token realm over plain HTTP.
    pub insecure: Vec<String>,
    /// Registries (`host[:port]`) reached over HTTPS that may resolve to loopback or link-local addresses,
    /// e.g. a node-local mirror (`--local-registries`).
    pub local: Vec<String>,
    /// Whether a registry's redirect to another host is followed: over HTTPS only, without the
    /// registry's credentials (`--registry-cross-host-redirects`, on by default: the large public
    /// registries serve blobs from another host).
    pub cross_host_redirects: bool,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            insecure: Vec::new(),
            local: Vec::new(),
            cross_host_redirects: true,
        }
    }
}

impl RegistrySettings {
    /// Whether `registry` (`host[:port]`) is spoken to over plain HTTP.
    pub fn is_insecure(&self, registry: &str) -> bool {
        self.insecure
            .iter()
            .any(|r| r.eq_ignore_ascii_case(registry))
    }

    /// Whether a read of `registry` may reach loopback and link-local addresses.
    pub fn allows_local(&self, registry: &str) -> bool {
        self.is_insecure(registry) || self.local.iter().any(|r| r.eq_ignore_ascii_case(registry))
    }
}

/// Reads the labels of `need.image` (for an index: of its linux/amd64 image).
pub async fn read_labels(
    client: &Client,
    settings: &RegistrySettings,
    need: &RegistryNeed,
) -> RegistryRead {
    let reference: Reference = match need.image.parse() {
        Ok(r) => r,
        Err(e) => {
            return RegistryRead::Failed(MetadataFailure::NotFound(format!(
                "{:?} is not a valid image reference: {e}",
                need.image
            )));
        }
    };
    let registry = reference.resolve_registry().to_string();
    let auth = match credentials(client, need, &registry).await {
        Ok(a) => a,
        Err(f) => return RegistryRead::Failed(f),
    };
    fetch::read_image(settings, &need.image, &reference, auth, fetch::READ_TIMEOUT).await
}

/// The first of the named pull secrets with an entry for `registry`; anonymous when none has one.
async fn credentials(
    client: &Client,
    need: &RegistryNeed,
    registry: &str,
) -> Result<RegistryAuth, MetadataFailure> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &need.secret_namespace);
    for name in &need.pull_secrets {
        let secret = match api.get_opt(name).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err(MetadataFailure::PullSecret(format!(
                    "pull secret {name:?} does not exist in namespace {:?}",
                    need.secret_namespace
                )));
            }
            Err(kube::Error::Api(s)) if s.code == 403 => {
                return Err(MetadataFailure::PullSecret(format!(
                    "the operator may not read pull secret {name:?} in namespace {:?}: {}",
                    need.secret_namespace, s.message
                )));
            }
            Err(e) => {
                return Err(MetadataFailure::PullSecret(format!(
                    "cannot read pull secret {name:?} in namespace {:?}: {e}",
                    need.secret_namespace
                )));
            }
        };
        let data = secret
            .data
            .as_ref()
            .and_then(|d| d.get(".dockerconfigjson"))
            .map(|b| b.0.clone());
        let Some(data) = data else {
            return Err(MetadataFailure::PullSecret(format!(
                "pull secret {name:?} in namespace {:?} has no .dockerconfigjson (type {}; \
                 kubernetes.io/dockerconfigjson is needed)",
                need.secret_namespace,
                secret.type_.as_deref().unwrap_or("Opaque")
            )));
        };
        match auth_for(&data, registry) {
            Ok(Some(auth)) => return Ok(auth),
            Ok(None) => continue,
            Err(why) => {
                return Err(MetadataFailure::PullSecret(format!(
                    "pull secret {name:?} in namespace {:?}: {why}",
                    need.secret_namespace
                )));
            }
        }
    }
    Ok(RegistryAuth::Anonymous)
}

/// The host part of a `.dockerconfigjson` key: `https://index.docker.io/v1/` → `index.docker.io`.
fn host_of(key: &str) -> String {
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = without_scheme.split('/').next().unwrap_or_default();
    match host {
        "docker.io" | "registry-1.docker.io" => "index.docker.io".to_string(),
        h => h.to_ascii_lowercase(),
    }
}

/// Credentials for `registry` from a `.dockerconfigjson` document, as the kubelet reads it: `auth`
/// (base64 of `user:password`), else `username`/`password`; an identity token is used as a bearer token.
fn auth_for(dockerconfigjson: &[u8], registry: &str) -> Result<Option<RegistryAuth>, String> {
    let doc: serde_json::Value = serde_json::from_slice(dockerconfigjson)
        .map_err(|e| format!(".dockerconfigjson is not JSON: {e}"))?;
    let auths = doc
        .get("auths")
        .and_then(|a| a.as_object())
        .ok_or_else(|| ".dockerconfigjson has no \"auths\" object".to_string())?;
    let want = host_of(registry);
    let Some(entry) = auths
        .iter()
        .find(|(k, _)| host_of(k) == want)
        .map(|(_, v)| v)
    else {
        return Ok(None);
    };
    let text = |k: &str| {
        entry
            .get(k)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
    };
    if let Some(encoded) = text("auth") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| format!("the auth of {want} is not base64: {e}"))?;
        let decoded =
            String::from_utf8(decoded).map_err(|_| format!("the auth of {want} is not UTF-8"))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| format!("the auth of {want} is not user:password"))?;
        return Ok(Some(RegistryAuth::Basic(user.into(), password.into())));
    }
    if let (Some(user), Some(password)) = (text("username"), text("password")) {
        return Ok(Some(RegistryAuth::Basic(user.into(), password.into())));
    }
    if let Some(token) = text("identitytoken").or_else(|| text("registrytoken")) {
        return Ok(Some(RegistryAuth::Bearer(token.into())));
    }
    Err(format!(
        "the entry for {want} has neither auth nor username/password"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    // M-01: the kubelet's reading of a .dockerconfigjson.
    #[test]
    fn credentials_are_matched_by_host() {
        let doc = serde_json::json!({"auths": {
            "https://index.docker.io/v1/": {"auth": b64("hub:pw")},
            "127.0.0.1:5001": {"username": "aim", "password": "secret"},
            "token.example.test": {"identitytoken": "tok"},
        }})
        .to_string();
        assert_eq!(
            auth_for(doc.as_bytes(), "index.docker.io").unwrap(),
            Some(RegistryAuth::Basic("hub".into(), "pw".into()))
        );
        assert_eq!(
            auth_for(doc.as_bytes(), "127.0.0.1:5001").unwrap(),
            Some(RegistryAuth::Basic("aim".into(), "secret".into()))
        );
        assert_eq!(
            auth_for(doc.as_bytes(), "token.example.test").unwrap(),
            Some(RegistryAuth::Bearer("tok".into()))
        );
        assert_eq!(
            auth_for(doc.as_bytes(), "other.example.test").unwrap(),
            None
        );
    }

    #[test]
    fn broken_secrets_say_what_is_wrong() {
        assert!(auth_for(b"nope", "r").unwrap_err().contains("not JSON"));
        assert!(auth_for(b"{}", "r").unwrap_err().contains("auths"));
        let doc = serde_json::json!({"auths": {"r": {"auth": "!!!"}}}).to_string();
        assert!(
            auth_for(doc.as_bytes(), "r")
                .unwrap_err()
                .contains("base64")
        );
        let doc = serde_json::json!({"auths": {"r": {"auth": b64("nocolon")}}}).to_string();
        assert!(
            auth_for(doc.as_bytes(), "r")
                .unwrap_err()
                .contains("user:password")
        );
    }
}
