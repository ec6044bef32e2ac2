//! The inputs hash: one short value that changes exactly when the dry-run would see something else.

use crate::inputs::DiscoveryInputs;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Version tag at the start of the hashed encoding; bump it when the encoding changes.
pub const INPUTS_HASH_VERSION: &str = "aim-discovery/inputs/v2";
/// The first encoding, which also covered the deadline; recognised so that an upgrade re-discovers nothing.
const INPUTS_HASH_VERSION_V1: &str = "aim-discovery/inputs/v1";
/// Length of [`inputs_hash`]'s result in hex characters.
pub const INPUTS_HASH_LEN: usize = 16;

/// Hash of every input that affects the dry-run: 16 lowercase hex characters (a SHA-256 prefix).
///
/// Covered, in this order: template scope (a namespace and a cluster template of the same name may share
/// the operator namespace, and must not share a Job name), job namespace (secrets resolve there), image,
/// env (in order; `valueFrom` as canonical JSON of the Kubernetes type), pull secrets, service account,
/// metric, precision, GPU model, GPU count and profile id, each as its effective value
/// (see [`DiscoveryInputs`]). Not covered: the template name and uid, which identify the template rather
/// than describe its dry-run, and what only shapes the Job (deadline, resources, labels): changing a
/// timeout must not re-discover every template. Each field is tagged and length-prefixed, so no two
/// inputs encode alike.
pub fn inputs_hash(inputs: &DiscoveryInputs) -> String {
    encode(inputs, INPUTS_HASH_VERSION)
}

/// The hash as the first release computed it (it also covered the deadline, and the GPU count as given).
/// A status holding this value describes the same inputs as one holding [`inputs_hash`]: an upgrade
/// rewrites the hash instead of running discovery again.
pub fn legacy_inputs_hash(inputs: &DiscoveryInputs) -> String {
    encode(inputs, INPUTS_HASH_VERSION_V1)
}

fn encode(inputs: &DiscoveryInputs, version: &str) -> String {
    let v1 = version == INPUTS_HASH_VERSION_V1;
    let mut enc = Encoder::default();
    enc.field("version", Some(version.as_bytes()));
    enc.field(
        "templateScope",
        Some(inputs.template_scope.as_str().as_bytes()),
    );
    enc.field("jobNamespace", Some(inputs.job_namespace.as_bytes()));
    enc.field("image", Some(inputs.image.as_bytes()));
    enc.list("env", &inputs.env);
    enc.list("imagePullSecrets", &inputs.image_pull_secrets);
    enc.field(
        "serviceAccountName",
        inputs.effective_service_account().map(str::as_bytes),
    );
    enc.field("metric", inputs.metric.map(|m| m.as_str().as_bytes()));
    enc.field("precision", inputs.precision.map(|p| p.as_str().as_bytes()));
    enc.field("gpuModel", inputs.effective_gpu_model().map(str::as_bytes));
    let gpu_count = if v1 {
        inputs.gpu_count
    } else {
        inputs.effective_gpu_count()
    }
    .map(i32::to_be_bytes);
    enc.field("gpuCount", gpu_count.as_ref().map(|b| &b[..]));
    enc.field(
        "profileId",
        inputs.effective_profile_id().map(str::as_bytes),
    );
    if v1 {
        let deadline = inputs.effective_deadline_seconds().to_be_bytes();
        enc.field("activeDeadlineSeconds", Some(&deadline));
    }
    let digest = enc.hasher.finalize();
    hex(&digest[..INPUTS_HASH_LEN / 2])
}

/// 8 lowercase hex characters of the SHA-256 of `text`; used to keep shortened names apart.
pub(crate) fn short_hash(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes())[..4])
}

/// Lower-case hex of the bytes, two characters a byte (every hash in names and annotations).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Tagged, length-prefixed encoding fed straight into the hasher.
#[derive(Default)]
struct Encoder {
    hasher: Sha256,
}

impl Encoder {
    fn len(&mut self, n: usize) {
        self.hasher.update((n as u64).to_be_bytes());
    }

    fn tag(&mut self, tag: &str) {
        self.len(tag.len());
        self.hasher.update(tag.as_bytes());
    }

    /// `tag`, then 0 for an unset value or 1, length and bytes for a set one.
    fn field(&mut self, tag: &str, value: Option<&[u8]>) {
        self.tag(tag);
        match value {
            None => self.hasher.update([0u8]),
            Some(bytes) => {
                self.hasher.update([1u8]);
                self.len(bytes.len());
                self.hasher.update(bytes);
            }
        }
    }

    /// `tag`, the number of items, then each item as its JSON (k8s-openapi serialises fields in a fixed
    /// order and leaves unset ones out, so this is canonical).
    fn list<T: Serialize>(&mut self, tag: &str, items: &[T]) {
        self.tag(tag);
        self.len(items.len());
        for item in items {
            // Serialising these types cannot fail; the error text keeps the encoding total anyway.
            let json = serde_json::to_vec(item).unwrap_or_else(|e| e.to_string().into_bytes());
            self.field("item", Some(&json));
        }
    }
}
