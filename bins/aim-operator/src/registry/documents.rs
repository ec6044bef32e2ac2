//! What is read from a registry's documents, and nothing more: a manifest's config descriptor, an index's
//! first linux/amd64 entry, a config's string labels, a bearer challenge. Every other field is skipped
//! as it is parsed (serde's `IgnoredAny`), so a large document costs no more than its bytes.

use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The image manifest's config descriptor, or an index's linux/amd64 entry (`None`: it has none).
pub(super) enum Manifest {
    Image(Descriptor),
    Index(Option<String>),
}

/// A `WWW-Authenticate: Bearer realm="…",service="…"` challenge.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct BearerChallenge {
    pub realm: String,
    pub service: Option<String>,
}

pub(super) fn bearer_challenge(header: &str) -> Option<BearerChallenge> {
    let (scheme, params) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = auth_params(params);
    Some(BearerChallenge {
        realm: params.remove("realm").filter(|r| !r.is_empty())?,
        service: params.remove("service"),
    })
}

/// `key=value` and `key="quoted value"` pairs, comma-separated; keys in lower case.
fn auth_params(mut rest: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        let Some((key, after)) = rest.split_once('=') else {
            return out;
        };
        let (value, after) = match after.trim_start().strip_prefix('"') {
            Some(quoted) => {
                let mut value = String::new();
                let mut end = quoted.len();
                let mut escaped = false;
                for (i, c) in quoted.char_indices() {
                    match c {
                        _ if escaped => {
                            value.push(c);
                            escaped = false;
                        }
                        '\\' => escaped = true,
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        _ => value.push(c),
                    }
                }
                (value, &quoted[end..])
            }
            None => {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim().to_string(), &after[end..])
            }
        };
        out.insert(key.trim().to_ascii_lowercase(), value);
        rest = after;
    }
}

/// A manifest or index, as far as it matters here; every other field is skipped unread.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDocument {
    schema_version: Option<u32>,
    media_type: Option<String>,
    config: Option<Descriptor>,
    manifests: Option<LinuxAmd64>,
}

/// A content descriptor.
#[derive(Deserialize)]
pub(super) struct Descriptor {
    pub digest: String,
    pub size: u64,
}

pub(super) fn parse_manifest(body: &[u8]) -> Result<Manifest, String> {
    let doc: ManifestDocument = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if doc.schema_version != Some(2) {
        return Err(match doc.schema_version {
            Some(v) => format!("its schemaVersion is {v}, not 2"),
            None => "it has no schemaVersion".into(),
        });
    }
    let index = doc.manifests.is_some()
        || matches!(doc.media_type.as_deref(), Some(OCI_INDEX | DOCKER_LIST));
    match (index, doc.config) {
        (true, _) => Ok(Manifest::Index(doc.manifests.and_then(|m| m.0))),
        (false, Some(config)) => Ok(Manifest::Image(config)),
        (false, None) => Err("it has neither a config nor manifests".into()),
    }
}

/// The digest of an index's first linux/amd64 entry; the entries are looked at one at a time.
struct LinuxAmd64(Option<String>);

impl<'de> Deserialize<'de> for LinuxAmd64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = LinuxAmd64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of manifests")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LinuxAmd64, A::Error> {
                #[derive(Deserialize)]
                struct Entry {
                    digest: String,
                    platform: Option<Platform>,
                }
                #[derive(Deserialize)]
                struct Platform {
                    architecture: String,
                    os: String,
                }
                while let Some(entry) = seq.next_element::<Entry>()? {
                    if entry
                        .platform
                        .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                    {
                        while seq.next_element::<IgnoredAny>()?.is_some() {}
                        return Ok(LinuxAmd64(Some(entry.digest)));
                    }
                }
                Ok(LinuxAmd64(None))
            }
        }
        d.deserialize_seq(Entries)
    }
}

/// Most bytes of labels (keys and string values) an image may carry. The operator keeps them in the
/// model's status, which must fit in one Kubernetes object; Kubernetes allows an object 256 KiB of
/// annotations.
pub(super) const MAX_LABEL_BYTES: usize = 256 * 1024;

/// Why a config's labels were not had.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ConfigError {
    /// Not an image config.
    Invalid(String),
    /// Its labels take more than [`MAX_LABEL_BYTES`].
    LabelsTooLarge,
}

/// `config.Labels` of an image config, string values only, at most [`MAX_LABEL_BYTES`] of them; every
/// other field is skipped unread.
pub(super) fn config_labels(config: &[u8]) -> Result<BTreeMap<String, String>, ConfigError> {
    #[derive(Deserialize)]
    struct ImageConfig {
        config: Option<ContainerConfig>,
    }
    #[derive(Deserialize)]
    struct ContainerConfig {
        #[serde(rename = "Labels")]
        labels: Option<Labels>,
    }
    let doc: ImageConfig =
        serde_json::from_slice(config).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    match doc.config.and_then(|c| c.labels) {
        None => Ok(BTreeMap::new()),
        Some(Labels(Some(labels))) => Ok(labels),
        Some(Labels(None)) => Err(ConfigError::LabelsTooLarge),
    }
}

/// The string labels of a config, collected while they fit in [`MAX_LABEL_BYTES`]; `None` when they do
/// not (the rest is skipped unread).
struct Labels(Option<BTreeMap<String, String>>);

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Labels;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of labels")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Labels, A::Error> {
                let mut labels = BTreeMap::new();
                let mut bytes = 0usize;
                while let Some((key, value)) = map.next_entry::<String, Text>()? {
                    let Some(value) = value.0 else { continue };
                    bytes += key.len() + value.len();
                    if bytes > MAX_LABEL_BYTES {
                        drop(labels);
                        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                        return Ok(Labels(None));
                    }
                    labels.insert(key, value);
                }
                Ok(Labels(Some(labels)))
            }
        }
        d.deserialize_map(V)
    }
}

/// A label value: a string, else `None` (whatever it is, skipped unread).
struct Text(Option<String>);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a label value")
            }
            fn visit_str<E>(self, v: &str) -> Result<Text, E> {
                Ok(Text(Some(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text, E> {
                Ok(Text(Some(v)))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_unit<E>(self) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_the_image_config() {
        let labels = config_labels(
            br#"{"architecture":"amd64","os":"linux","config":{"Labels":{"a":"1","n":2,"o":{"x":[1]},"l":[1],"z":null}},"history":[{"created_by":"x"}]}"#,
        )
        .unwrap();
        assert_eq!(labels, [("a".to_string(), "1".to_string())].into());
        assert!(config_labels(br#"{"os":"linux"}"#).unwrap().is_empty());
        assert!(
            config_labels(br#"{"config":{"Labels":null}}"#)
                .unwrap()
                .is_empty()
        );
        assert!(matches!(config_labels(b"[1"), Err(ConfigError::Invalid(_))));
        assert!(matches!(
            config_labels(br#"{"config":{"Labels":[]}}"#),
            Err(ConfigError::Invalid(_))
        ));
    }

    // M-01: labels are kept in the model's status; more than fits there is refused, without collecting it.
    #[test]
    fn labels_are_bounded() {
        let labels = |n: usize, value: &str| {
            let entries: Vec<String> = (0..n).map(|i| format!(r#""k{i:07}":"{value}""#)).collect();
            format!(r#"{{"config":{{"Labels":{{{}}}}}}}"#, entries.join(","))
        };
        // Exactly at the limit: 8-byte keys and 8-byte values.
        let at = labels(MAX_LABEL_BYTES / 16, "vvvvvvvv");
        assert_eq!(
            config_labels(at.as_bytes()).unwrap().len(),
            MAX_LABEL_BYTES / 16
        );
        let over = labels(MAX_LABEL_BYTES / 16 + 1, "vvvvvvvv");
        assert_eq!(
            config_labels(over.as_bytes()),
            Err(ConfigError::LabelsTooLarge)
        );
        let one = format!(
            r#"{{"config":{{"Labels":{{"k":"{}","n":1}}}}}}"#,
            "x".repeat(MAX_LABEL_BYTES)
        );
        assert_eq!(
            config_labels(one.as_bytes()),
            Err(ConfigError::LabelsTooLarge)
        );
        // Non-string values count for nothing: they are not kept.
        let numbers: Vec<String> = (0..100_000).map(|i| format!(r#""k{i:07}":1"#)).collect();
        let numbers = format!(r#"{{"config":{{"Labels":{{{}}}}}}}"#, numbers.join(","));
        assert!(config_labels(numbers.as_bytes()).unwrap().is_empty());
    }

    #[test]
    fn manifests_and_indexes_are_told_apart() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let image = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{digest}","size":7,"mediaType":"x"}},"layers":[{{"size":1}}]}}"#
        );
        let Manifest::Image(c) = parse_manifest(image.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!((c.digest.as_str(), c.size), (digest.as_str(), 7));
        let index = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {"digest":"sha256:arm","platform":{"architecture":"arm64","os":"linux"}},
            {"digest":"sha256:amd","platform":{"architecture":"amd64","os":"linux"}},
            {"digest":"sha256:amd2","platform":{"architecture":"amd64","os":"linux"}},
            "anything after the match is skipped"]}"#;
        assert!(matches!(
            parse_manifest(index.as_bytes()).unwrap(),
            Manifest::Index(Some(d)) if d == "sha256:amd"
        ));
        let no_amd = r#"{"schemaVersion":2,"manifests":[{"digest":"sha256:arm","platform":{"architecture":"arm64","os":"linux"}}]}"#;
        assert!(matches!(
            parse_manifest(no_amd.as_bytes()).unwrap(),
            Manifest::Index(None)
        ));
        assert!(
            parse_manifest(br#"{"schemaVersion":1}"#)
                .err()
                .unwrap()
                .contains("schemaVersion is 1")
        );
        assert!(
            parse_manifest(br#"{"schemaVersion":2}"#)
                .err()
                .unwrap()
                .contains("neither")
        );
    }

    #[test]
    fn bearer_challenges_are_read() {
        assert_eq!(
            bearer_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull""#
            ),
            Some(BearerChallenge {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
            })
        );
        assert_eq!(
            bearer_challenge(r#"bearer realm=http://h/t, service = "a \"b\"""#),
            Some(BearerChallenge {
                realm: "http://h/t".into(),
                service: Some("a \"b\"".into()),
            })
        );
        assert_eq!(bearer_challenge(r#"Basic realm="aim-test""#), None);
        assert_eq!(bearer_challenge("Bearer service=x"), None);
        assert_eq!(
            bearer_challenge(r#"Bearer realm="unclosed"#).unwrap().realm,
            "unclosed"
        );
    }
}
