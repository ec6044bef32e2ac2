//! Names and label values made from the names of objects, always within the API server's limits.
//!
//! An object's name may be a DNS subdomain of up to 253 characters with dots; a label value holds at
//! most 63 characters, a Service's name is a DNS-1035 label of at most 63, and an Event's name is a
//! subdomain of at most 253. Whatever is made from a name therefore goes through one of these
//! functions: a name that already fits is kept as it is (so nothing changes for ordinary names), any
//! other is cut and ends in `-` and 8 hex digits of a hash of the whole name, so two names that differ
//! anywhere still give different results. The full name goes into an annotation wherever a person or
//! the operator needs it back.

use super::hash::sha256_hex;

/// Longest label value, and longest DNS label (a Service's name, a Pod's hostname).
pub const MAX_LABEL: usize = 63;
/// Longest DNS subdomain (most object names, Event names).
pub const MAX_SUBDOMAIN: usize = 253;
/// Hex digits of the hash that ends a shortened name or value.
const HASH_CHARS: usize = 8;

fn name_hash(s: &str) -> String {
    sha256_hex(s.as_bytes(), HASH_CHARS / 2)
}

/// Whether `s` is a valid label value: empty, or up to 63 of `A-Za-z0-9-_.`, alphanumeric at both ends.
pub fn is_label_value(s: &str) -> bool {
    aim_discovery::is_valid_label_value(s)
}

/// The label value that stands for `name`: `name` itself when it is a valid label value (every object
/// name of at most 63 characters), else its first characters (anything outside `A-Za-z0-9-_.` as
/// `-`, alphanumeric at both ends), `-` and 8 hex of a hash of the whole name. Deterministic, so the
/// side that writes a label and the side that selects by it agree when both use it. The same scheme
/// as the discovery Job's `aim.eai.amd.com/template` label (T-14).
pub fn label_value(name: &str) -> String {
    aim_discovery::template_label_value(name)
}

/// `name` (a DNS subdomain, or a DNS label) cut to at most `max` characters: kept when it fits, else
/// its first `max - 9` characters without trailing `-` or `.` (and its last DNS label cut to leave room
/// for the hash), then `-` and 8 hex of a hash of the whole name. What is kept of a valid subdomain
/// (label) stays one. `max` must leave room for the hash
/// (at least 9).
pub fn fit(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    let hash = name_hash(name);
    let room = max.saturating_sub(HASH_CHARS + 1);
    let mut end = room.min(name.len());
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let not_alnum = |c: char| !c.is_ascii_alphanumeric();
    let mut cut = name[..end].trim_end_matches(not_alnum);
    // The hash joins the last DNS label of what is kept, which must stay within 63 characters.
    let last = cut.rfind('.').map_or(0, |i| i + 1);
    if cut.len() - last > MAX_LABEL - HASH_CHARS - 1 {
        cut = cut[..last + MAX_LABEL - HASH_CHARS - 1].trim_end_matches(not_alnum);
    }
    if cut.is_empty() {
        hash
    } else {
        format!("{cut}-{hash}")
    }
}

/// Whether `s` is a DNS-1035 label (a Service's name): 1 to 63 of `a-z0-9-`, a letter first, no `-`
/// last.
pub fn is_dns1035_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_LABEL
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

/// A DNS-1035 label of at most 63 characters made from `name`, valid both as a Service's and as a
/// Deployment's name: `name` itself when it is one already; else lowercase, every other character as
/// `-` (runs collapsed), `aim-` in front when it would not start with a letter, cut, and `-` with 8
/// hex of a hash of the whole name, so `a.b` and `a-b` stay apart.
pub fn dns_label(name: &str) -> String {
    if is_dns1035_label(name) {
        return name.to_string();
    }
    let mut clean = String::with_capacity(name.len());
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            clean.push(c);
        } else if !clean.is_empty() && !clean.ends_with('-') {
            clean.push('-');
        }
    }
    if !clean.starts_with(|c: char| c.is_ascii_lowercase()) {
        clean.insert_str(0, "aim-");
    }
    let hash = name_hash(name);
    let room = MAX_LABEL - HASH_CHARS - 1;
    let cut = clean[..room.min(clean.len())].trim_end_matches('-');
    format!("{cut}-{hash}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_fit_are_kept() {
        assert_eq!(label_value("qwen3-32b"), "qwen3-32b");
        assert_eq!(label_value("a.b_c"), "a.b_c");
        assert_eq!(fit("abc.def", 253), "abc.def");
        assert_eq!(dns_label("svc-1"), "svc-1");
    }

    #[test]
    fn long_or_dotted_names_are_cut_and_hashed() {
        let long = "a".repeat(70);
        let v = label_value(&long);
        assert!(is_label_value(&v) && v.len() <= MAX_LABEL, "{v}");
        assert_ne!(v, label_value(&"a".repeat(71)));
        let f = fit(&format!("{}.x", "b".repeat(250)), 253);
        assert!(f.len() <= 253 && f.starts_with("bbb"), "{f}");
        let d = dns_label("my.service");
        assert!(is_dns1035_label(&d) && d.starts_with("my-service-"), "{d}");
        assert_ne!(dns_label("my.service"), dns_label("my-service"));
        assert!(dns_label("1abc").starts_with("aim-1abc-"));
    }
}
