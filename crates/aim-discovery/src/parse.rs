//! From the dry-run log to a result (T-17, T-19), in time linear in the log size.

use crate::error::ParseError;
use crate::excerpt;
use crate::first::{First, RESULT_MEMORY_LIMIT, first_element};
use crate::result::{DryRunResult, element_to_result};
use crate::scan::{Candidate, scan};

/// Default byte limit of a dry-run log: 8 MiB.
pub const DEFAULT_LOG_LIMIT: usize = 8 * 1024 * 1024;

/// Parses the log of a discovery container (format in `dry-run.md`).
///
/// The whole log (blanks trimmed) is tried as a JSON array first; otherwise the last non-empty JSON array
/// of objects in it is used (see the `scan` module for what counts as a candidate), and noise around it,
/// invalid UTF-8 included, is ignored. Only the first element counts, and only it is kept in memory: the
/// others are checked as JSON and skipped, and the first may take at most [`RESULT_MEMORY_LIMIT`] once
/// parsed ([`ParseError::ResultTooLarge`]). Time and memory are linear in the log size. A log longer than
/// `limit` bytes is refused: read it with a limit of `limit + 1` bytes so an over-limit log can be told
/// apart from one that is exactly at the limit.
///
/// When no non-empty array parses, the failure reported is the one that ends last in the log: an array
/// of objects that is not valid JSON (typically cut short) gives [`ParseError::InvalidJson`], a `[]`
/// gives [`ParseError::Empty`]; with neither, [`ParseError::NoArray`].
pub fn parse_dry_run(log: &[u8], limit: usize) -> Result<DryRunResult, ParseError> {
    if log.len() > limit {
        return Err(ParseError::TooLarge {
            size: log.len(),
            limit,
        });
    }
    if let Some(result) = whole_log(log) {
        return result;
    }

    let found = scan(log);
    // Latest-ending failure so far: (end, offset of the break, serde error).
    let mut failure: Option<(usize, usize, serde_json::Error)> = None;
    // Candidates already parsed that may contain later (inner) ones: (start, end, parsed up to).
    let mut tried: Vec<(usize, usize, usize)> = Vec::new();

    for &Candidate { start, end } in found.candidates.iter().rev() {
        while tried.last().is_some_and(|t| t.0 >= end) {
            tried.pop();
        }
        // Bytes an enclosing candidate already parsed are not parsed again: this keeps the total
        // parsing work linear, and an array inside a result that failed is not a result of its own.
        if tried.last().is_some_and(|t| start < t.2) {
            continue;
        }
        let slice = &log[start..end];
        match first_element(slice) {
            Ok(First::Value(first)) => return element_to_result(first),
            Ok(First::TooLarge) => return Err(too_large_result()),
            Ok(First::Empty) => tried.push((start, end, end)),
            Err(err) => {
                // An array starting exactly where this one broke is still tried on its own.
                let at = start + error_offset(slice, &err);
                tried.push((start, end, at));
                if failure.is_none() {
                    failure = Some((end, at, err));
                }
            }
        }
    }

    match (failure, found.last_empty_end) {
        (Some((failed_end, ..)), Some(empty_end)) if empty_end > failed_end => {
            Err(empty(log, empty_end))
        }
        (Some((_, at, err)), _) => Err(invalid_json(log, at, &err)),
        (None, Some(empty_end)) => Err(empty(log, empty_end)),
        (None, None) => Err(ParseError::NoArray {
            size: log.len(),
            excerpt: excerpt::printable(log, excerpt::MAX_EXCERPT_CHARS),
        }),
    }
}

/// The result when the whole log, blanks trimmed, is one JSON array; `None` to go on searching.
fn whole_log(log: &[u8]) -> Option<Result<DryRunResult, ParseError>> {
    let trimmed = log.trim_ascii();
    if trimmed.first() != Some(&b'[') {
        return None;
    }
    Some(match first_element(trimmed).ok()? {
        First::Value(first) => element_to_result(first),
        First::TooLarge => Err(too_large_result()),
        First::Empty => Err(empty(log, log.len())),
    })
}

fn too_large_result() -> ParseError {
    ParseError::ResultTooLarge {
        limit: RESULT_MEMORY_LIMIT,
    }
}

/// Offset in `bytes` of the byte where `err` occurred, from its 1-based line and column.
fn error_offset(bytes: &[u8], err: &serde_json::Error) -> usize {
    let mut line_start = 0;
    if err.line() > 1 {
        let newlines = bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(err.line() - 2);
        line_start = newlines.map_or(bytes.len(), |(i, _)| i + 1);
    }
    (line_start + err.column())
        .saturating_sub(1)
        .min(bytes.len().saturating_sub(1))
}

fn invalid_json(log: &[u8], at: usize, err: &serde_json::Error) -> ParseError {
    let (line, column) = line_column(log, at);
    let text = err.to_string();
    // serde_json appends its own position (relative to the array); ours is relative to the log.
    let message = match text.rfind(" at line ") {
        Some(i) if err.line() > 0 => text[..i].to_string(),
        _ => text,
    };
    ParseError::InvalidJson {
        message,
        offset: at,
        line,
        column,
        excerpt: excerpt::around(log, at),
    }
}

fn empty(log: &[u8], end: usize) -> ParseError {
    let (line, _) = line_column(log, end.saturating_sub(1));
    ParseError::Empty { line }
}

/// 1-based line and column (in bytes) of `offset` in `log`.
fn line_column(log: &[u8], offset: usize) -> (usize, usize) {
    let before = &log[..offset.min(log.len())];
    let line = 1 + before.iter().filter(|b| **b == b'\n').count();
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    (line, before.len() - line_start + 1)
}
