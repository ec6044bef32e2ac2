//! Short, printable excerpts of log bytes for error messages.

/// Longest excerpt, in characters.
pub(crate) const MAX_EXCERPT_CHARS: usize = 120;
/// Marks where parsing broke inside an excerpt.
pub(crate) const HERE: &str = "<HERE>";

const BEFORE_BYTES: usize = 72;
const AFTER_BYTES: usize = 40;

/// Printable form of `bytes`, at most `max` characters (ending in `…` when cut): invalid UTF-8 becomes
/// `?`, newlines `⏎`, other control characters a space.
pub(crate) fn printable(bytes: &[u8], max: usize) -> String {
    // A character takes at most 4 bytes; looking further is never needed.
    let window = &bytes[..bytes.len().min(max.saturating_mul(4))];
    let text = String::from_utf8_lossy(window);
    let mut chars = text.chars().peekable();
    let mut out = String::new();
    let mut n = 0;
    while let Some(c) = chars.next() {
        n += 1;
        let more = chars.peek().is_some() || window.len() < bytes.len();
        if n >= max && more {
            out.push('…');
            break;
        }
        out.push(sanitize(c));
    }
    out
}

/// Printable text around byte `offset` of `log`, with [`HERE`] at `offset`.
pub(crate) fn around(log: &[u8], offset: usize) -> String {
    let offset = offset.min(log.len());
    let start = offset.saturating_sub(BEFORE_BYTES);
    let end = offset.saturating_add(AFTER_BYTES).min(log.len());
    let before = String::from_utf8_lossy(&log[start..offset]);
    let after = String::from_utf8_lossy(&log[offset..end]);
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    out.extend(before.chars().map(sanitize));
    out.push_str(HERE);
    out.extend(after.chars().map(sanitize));
    if end < log.len() {
        out.push('…');
    }
    out
}

/// Printable form of a JSON value, cut to a readable length.
pub(crate) fn value(v: &serde_json::Value) -> String {
    printable(v.to_string().as_bytes(), 60)
}

fn sanitize(c: char) -> char {
    match c {
        '\n' => '⏎',
        '\u{FFFD}' => '?',
        c if c.is_control() => ' ',
        c => c,
    }
}
