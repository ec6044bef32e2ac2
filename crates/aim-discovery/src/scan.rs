//! One linear pass over the log that finds where JSON arrays of objects may be.
//!
//! A candidate starts at a `[` that is first on its line (after blanks) or outside any open bracket, and
//! whose next non-blank byte is `{`. Brackets are matched on a stack, tracking JSON strings and escapes
//! inside brackets, so every candidate's closing `]` is found in the same pass, at any depth: an unclosed
//! `[` in the noise does not hide an array that follows it. Every byte is visited once.
//!
//! JSON strings cannot hold raw control characters, so a newline inside a string, or a `}` closing a `[`,
//! proves that every bracket still open is not JSON: the stack is dropped (the outermost candidate on it
//! is kept as a broken one, to report where it broke) and scanning goes on. Strings therefore never
//! reach past a line, and an array starting a line is always scanned from a clean state.

/// Where a candidate array lies in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// Offset of the `[`.
    pub start: usize,
    /// Offset just past the matching `]`, or just past the byte that broke it.
    pub end: usize,
}

/// What the scan found.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Candidate arrays of objects, closed or broken, ordered by `end`.
    pub candidates: Vec<Candidate>,
    /// End of the last `[ ]` (only blanks inside) that would have been a candidate.
    pub last_empty_end: Option<usize>,
}

/// Deepest bracket nesting tracked; far beyond the 128 levels the JSON parser accepts.
const MAX_DEPTH: usize = 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Not a candidate: a nested bracket or a `[` whose content is not an object.
    Plain,
    /// A candidate: `[` followed by blanks and `{`.
    Objects,
    /// `[` followed by blanks and `]`.
    Empty,
}

struct Open {
    byte: u8,
    start: usize,
    kind: Kind,
}

/// Scans `log` once and returns its candidate arrays.
pub(crate) fn scan(log: &[u8]) -> Scan {
    let mut out = Scan::default();
    let mut stack: Vec<Open> = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    let mut line_start = true;

    for (i, &b) in log.iter().enumerate() {
        if in_string {
            if b < 0x20 {
                break_open(&mut stack, i + 1, &mut out);
                in_string = false;
                escaped = false;
            } else if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else {
            match b {
                b'[' => {
                    let kind = if line_start || stack.is_empty() {
                        classify(log, i)
                    } else {
                        Kind::Plain
                    };
                    push(
                        &mut stack,
                        Open {
                            byte: b,
                            start: i,
                            kind,
                        },
                        i,
                        &mut out,
                    );
                }
                b'{' if !stack.is_empty() => {
                    let open = Open {
                        byte: b,
                        start: i,
                        kind: Kind::Plain,
                    };
                    push(&mut stack, open, i, &mut out);
                }
                b']' | b'}' => {
                    if let Some(open) = stack.pop() {
                        let expected = if b == b']' { b'[' } else { b'{' };
                        if open.byte != expected {
                            stack.push(open);
                            break_open(&mut stack, i + 1, &mut out);
                        } else {
                            match open.kind {
                                Kind::Objects => out.candidates.push(Candidate {
                                    start: open.start,
                                    end: i + 1,
                                }),
                                Kind::Empty => out.last_empty_end = Some(i + 1),
                                Kind::Plain => {}
                            }
                        }
                    }
                }
                b'"' if !stack.is_empty() => in_string = true,
                _ => {}
            }
        }
        line_start = b == b'\n' || (line_start && matches!(b, b' ' | b'\t' | b'\r'));
    }
    if !stack.is_empty() {
        break_open(&mut stack, log.len(), &mut out);
    }
    out
}

/// What the `[` at `at` opens, judged by the next non-blank byte. Only blanks are skipped, and those
/// blanks follow this `[` alone, so all calls together stay linear.
fn classify(log: &[u8], at: usize) -> Kind {
    let next = log[at + 1..]
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
    match next {
        Some(b'{') => Kind::Objects,
        Some(b']') => Kind::Empty,
        _ => Kind::Plain,
    }
}

/// Pushes `open` at offset `at`. A stack that reaches [`MAX_DEPTH`] loses its lower half: brackets that
/// deep exceed the JSON parser's nesting limit, so the dropped ones could never open a result (the
/// outermost dropped candidate is kept as a broken one, to report why). This bounds memory for any log.
fn push(stack: &mut Vec<Open>, open: Open, at: usize, out: &mut Scan) {
    if stack.len() >= MAX_DEPTH {
        let dropped = stack.len() / 2;
        if let Some(outer) = stack[..dropped].iter().find(|o| o.kind == Kind::Objects) {
            out.candidates.push(Candidate {
                start: outer.start,
                end: at + 1,
            });
        }
        stack.drain(..dropped);
    }
    stack.push(open);
}

/// Drops every open bracket because the byte before `end` cannot be inside JSON (or the log ended);
/// keeps the outermost open candidate as a broken one ending at `end`.
fn break_open(stack: &mut Vec<Open>, end: usize, out: &mut Scan) {
    if let Some(open) = stack.iter().find(|o| o.kind == Kind::Objects) {
        out.candidates.push(Candidate {
            start: open.start,
            end,
        });
    }
    stack.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(log: &str) -> Vec<(usize, usize)> {
        scan(log.as_bytes())
            .candidates
            .iter()
            .map(|c| (c.start, c.end))
            .collect()
    }

    #[test]
    fn candidates_start_a_line_or_the_top_level() {
        assert_eq!(spans(r#"[{"a":1}]"#), [(0, 9)]);
        assert_eq!(spans("x: [ {}]"), [(3, 8)]);
        assert_eq!(spans("[INFO] [x] [ok]"), []);
        // Inside an open bracket, only a `[` that starts a line is a candidate.
        assert_eq!(spans("[ a [{}] \n  [{}]"), [(12, 16)]);
    }

    #[test]
    fn an_unclosed_bracket_does_not_hide_what_follows() {
        let log = "[worker 3 starting\n[{\"a\": [1]}]\ndone";
        assert_eq!(spans(log), [(19, 31)]);
    }

    #[test]
    fn strings_hide_brackets_and_end_at_the_line() {
        assert_eq!(spans(r#"[{"a": "]}["}]"#), [(0, 14)]);
        assert_eq!(spans(r#"[{"a": "\"]"}]"#), [(0, 14)]);
        // A newline inside a string breaks the candidate; the next line starts clean.
        let log = "[{\"a\": \"cut\n[{}]";
        assert_eq!(spans(log), [(0, 12), (12, 16)]);
    }

    #[test]
    fn mismatched_brackets_break_the_candidate() {
        assert_eq!(spans("[{]\n[{}]"), [(0, 3), (4, 8)]);
    }

    #[test]
    fn unclosed_candidates_end_at_the_end() {
        assert_eq!(spans("noise\n[{\"a\": 1,"), [(6, 15)]);
    }

    #[test]
    fn empty_arrays_are_noted() {
        let found = scan(b"[{}]\n[ ]\n[ok]");
        assert_eq!(found.last_empty_end, Some(8));
        assert!(scan(b"[ok]").last_empty_end.is_none());
    }

    #[test]
    fn nesting_is_bounded() {
        let log = "[{".repeat(10 * MAX_DEPTH);
        let found = scan(log.as_bytes());
        // Only the outermost candidate of each dropped half and the one open at the end are kept.
        assert!(found.candidates.len() <= 20, "{}", found.candidates.len());
        assert!(found.candidates.windows(2).all(|w| w[0].end <= w[1].end));
    }
}
