//! Names and label values derived from template names, always within Kubernetes' limits.

use crate::hash::short_hash;

/// Prefix of every discovery Job name.
pub const JOB_NAME_PREFIX: &str = "discover-";

/// Longest DNS-1123 label and label value.
const MAX_LABEL: usize = 63;
/// Hex characters of the inputs hash at the end of a Job name.
const JOB_HASH_CHARS: usize = 8;
/// Hex characters of the template-name hash added to a Job name when the name had to change.
const NAME_HASH_CHARS: usize = 6;

/// Name of the discovery Job: `discover-<template name>-<first 8 hex of hash>`, at most 63 characters.
///
/// The result is a DNS-1123 label (and a valid label value): lowercase, invalid characters (such as the
/// dots of a subdomain name) become `-`, runs of `-` collapse, no `-` at either end. When the template
/// name cannot be kept verbatim (too long for the 45 characters left, or changed by that clean-up), it is
/// cut and followed by 6 hex of a hash of the full name, so `a.b` and `a-b`, or two long names sharing
/// their first 38 characters, still get different Jobs. `hash` should come from
/// [`inputs_hash`](crate::inputs_hash); only its ASCII letters and digits are used.
pub fn job_name(template_name: &str, hash: &str) -> String {
    let hash_part: String = hash
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .take(JOB_HASH_CHARS)
        .collect();
    let separator = usize::from(!hash_part.is_empty());
    let budget = MAX_LABEL - JOB_NAME_PREFIX.len() - separator - hash_part.len();

    let clean = dns_label_chars(template_name);
    let name_part = if clean == template_name && clean.len() <= budget {
        clean
    } else {
        let name_hash = &short_hash(template_name)[..NAME_HASH_CHARS];
        let cut = cut_at(&clean, budget - 1 - NAME_HASH_CHARS, |c| c == '-');
        join_dash(&[cut, name_hash])
    };
    format!("{JOB_NAME_PREFIX}{}", join_dash(&[&name_part, &hash_part]))
}

/// Value of the `aim.eai.amd.com/template` label for `template_name`.
///
/// A name that is a valid label value (at most 63 characters, alphanumerics, `-`, `_`, `.`, alphanumeric
/// at both ends: every template name of 63 characters or fewer) is kept verbatim. Any other name becomes
/// its first 54 characters (invalid characters replaced by `-`, trimmed to alphanumeric ends), `-`, and
/// 8 hex of a hash of the full name. The full name is always in the `aim.eai.amd.com/template-name`
/// annotation.
pub fn template_label_value(template_name: &str) -> String {
    if is_valid_label_value(template_name) {
        return template_name.to_string();
    }
    let name_hash = short_hash(template_name);
    let mapped: String = template_name
        .chars()
        .map(|c| if is_label_char(c) { c } else { '-' })
        .collect();
    let cut = cut_at(&mapped, MAX_LABEL - 1 - name_hash.len(), |c| {
        !c.is_ascii_alphanumeric()
    });
    let cut = cut.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    join_dash(&[cut, &name_hash])
}

/// Whether `s` is a DNS-1123 label: 1 to 63 of `a-z`, `0-9`, `-`, alphanumeric at both ends.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_LABEL
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Whether `s` is a valid label value: empty, or up to 63 of `A-Za-z0-9-_.` with alphanumeric ends.
pub fn is_valid_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() {
        return true;
    }
    b.len() <= MAX_LABEL
        && s.chars().all(is_label_char)
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Lowercase; every character outside `a-z0-9` becomes `-`; runs of `-` collapse; no `-` at the ends.
fn dns_label_chars(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed = out.trim_end_matches('-').len();
    out.truncate(trimmed);
    out
}

/// The first `max` bytes of the ASCII string `s`, without trailing characters matching `trim`.
fn cut_at(s: &str, max: usize, trim: impl Fn(char) -> bool) -> &str {
    s.get(..max.min(s.len()))
        .unwrap_or(s)
        .trim_end_matches(trim)
}

/// The non-empty parts joined by `-`.
fn join_dash(parts: &[&str]) -> String {
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("-")
}
