//! T-17, T-19: reading the dry-run log (`dry-run.md`).

mod common;

use aim_api::{Metric, ModelSourceStatus, Precision, TemplateType};
use aim_discovery::{
    DEFAULT_LOG_LIMIT, DryRunResult, ParseError, ProfileMetadata, RESULT_MEMORY_LIMIT,
    parse_dry_run,
};
use common::{ELEMENT, array_with, clean_array};
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Counts the bytes each thread holds, so a test can tell what parsing allocates (tests run on threads
/// of their own).
struct Counting;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    let _ = HELD.try_with(|held| {
        let now = held.get() + delta;
        held.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is passed on to `System` unchanged; only a thread-local counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// `f`'s result and the most bytes this thread held during `f` beyond what it held before.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = HELD.with(Cell::get);
    PEAK.with(|p| p.set(before));
    let out = f();
    (out, (PEAK.with(Cell::get) - before).max(0) as usize)
}

const MIB: usize = 1024 * 1024;

/// `head` followed by `,1` until the log is `size` bytes, closed by `tail`.
fn padded(head: &str, tail: &str, size: usize) -> Vec<u8> {
    let mut log = Vec::with_capacity(size);
    log.extend_from_slice(head.as_bytes());
    while log.len() + 2 + tail.len() <= size {
        log.extend_from_slice(b",1");
    }
    log.resize(size - tail.len(), b' ');
    log.extend_from_slice(tail.as_bytes());
    log
}

fn parse(log: &str) -> Result<DryRunResult, ParseError> {
    parse_dry_run(log.as_bytes(), DEFAULT_LOG_LIMIT)
}

fn expected() -> DryRunResult {
    parse(&clean_array()).unwrap()
}

fn source(name: &str, uri: &str, size: Option<i64>) -> ModelSourceStatus {
    ModelSourceStatus {
        name: name.into(),
        source: uri.into(),
        size_bytes: size,
    }
}

// --- The examples of dry-run.md, one test each. ---

#[test]
fn clean_array_example() {
    // T-17, T-18
    let result = parse(&common::clean_array()).unwrap();
    assert_eq!(
        result.metadata,
        ProfileMetadata {
            engine: Some("vllm".into()),
            gpu: Some("MI300X".into()),
            precision: Some(Precision::Fp8),
            gpu_count: Some(1),
            metric: Some(Metric::Latency),
            r#type: Some(TemplateType::Optimized),
        }
    );
    assert_eq!(
        result.model_sources,
        vec![
            source(
                "Qwen/Qwen3-32B",
                "hf://Qwen/Qwen3-32B",
                Some(16 * 1024 * 1024 * 1024)
            ),
            source(
                "Qwen/Qwen3-32B-tokenizer",
                "hf://Qwen/Qwen3-32B/tokenizer.json",
                Some(2 * 1024 * 1024)
            ),
        ]
    );
    // T-18: the profile verbatim, unknown keys included.
    let element: serde_json::Value = serde_json::from_str(ELEMENT).unwrap();
    assert_eq!(result.profile, element["profile"]);
    assert_eq!(result.profile["engine_args"]["max-num-seqs"], 256);
    assert_eq!(result.profile["quantized_model"], "");
}

#[test]
fn banner_lines_before() {
    // T-17
    let log = format!(
        "AMD Inference Microservice 0.8.5\n=== starting dry run ===\nINFO: selecting profiles\n{}",
        clean_array()
    );
    assert_eq!(parse(&log).unwrap(), expected());
}

#[test]
fn trailing_done_ok_after() {
    // T-17
    let log = format!("{}done [ok]\n", clean_array());
    assert_eq!(parse(&log).unwrap(), expected());
    let log = format!("banner\n{}done [ok]", clean_array().trim_end());
    assert_eq!(parse(&log).unwrap(), expected());
}

#[test]
fn two_arrays_take_the_last_non_empty_one() {
    // T-17
    let first = array_with(r#"{"metric":"throughput"}"#, "[]");
    let log = format!("{first}\n{}", clean_array());
    assert_eq!(parse(&log).unwrap(), expected());
    let log = format!("{}\n{first}\n", clean_array());
    assert_eq!(
        parse(&log).unwrap().metadata.metric,
        Some(Metric::Throughput)
    );
    // An empty array after the result does not hide it.
    let log = format!("{}[]\ndone [ok]\n", clean_array());
    assert_eq!(parse(&log).unwrap(), expected());
}

#[test]
fn empty_array_only_is_a_failure() {
    // T-19
    for log in ["[]", "[]\n", "  [ ]  ", "banner\n[]\ndone [ok]\n", "[\n]\n"] {
        let err = parse(log).unwrap_err();
        assert!(matches!(err, ParseError::Empty { .. }), "{log:?}: {err}");
        assert!(err.to_string().contains("empty"), "{err}");
        assert_eq!(err.reason(), "EmptyResult");
    }
    assert_eq!(
        parse("banner\n[]\ndone [ok]\n").unwrap_err(),
        ParseError::Empty { line: 2 }
    );
}

#[test]
fn truncated_json_is_a_failure_with_an_excerpt() {
    // T-19: the message says where it broke, with a short excerpt.
    let full = clean_array();
    let cut = &full[..full.find("0.001953125").unwrap()];
    let log = format!("banner\n{cut}");
    let err = parse(&log).unwrap_err();
    let ParseError::InvalidJson {
        line,
        column,
        excerpt,
        offset,
        ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert!(
        excerpt.contains("\"size_gb\": <HERE>") || excerpt.contains("size_gb"),
        "{excerpt}"
    );
    assert!(excerpt.chars().count() <= 120, "{excerpt}");
    assert!(!excerpt.chars().any(char::is_control), "{excerpt:?}");
    assert_eq!(*line, log[..*offset].matches('\n').count() + 1);
    assert!(*column >= 1);
    let text = err.to_string();
    assert!(
        text.contains("not valid JSON") && text.contains("EOF"),
        "{text}"
    );
    assert!(text.contains(&format!("line {line}")), "{text}");
    assert_eq!(err.reason(), "InvalidJSON");

    // Cut short, then the container printed more lines.
    let log = format!("{cut}\ndone [ok]\n");
    let err = parse(&log).unwrap_err();
    assert!(matches!(err, ParseError::InvalidJson { .. }), "{err}");

    // Cut inside a string.
    let cut = &full[..full.find("Qwen3-32B-tok").unwrap()];
    let err = parse(&format!("{cut}\nshutting down\n")).unwrap_err();
    assert!(matches!(err, ParseError::InvalidJson { .. }), "{err}");
}

#[test]
fn log_over_the_limit_is_a_failure_that_says_the_limit() {
    // T-19
    let log = format!("{}{}", " ".repeat(DEFAULT_LOG_LIMIT), clean_array());
    let err = parse(&log).unwrap_err();
    assert_eq!(
        err,
        ParseError::TooLarge {
            size: log.len(),
            limit: DEFAULT_LOG_LIMIT
        }
    );
    let text = err.to_string();
    assert!(
        text.contains("8388608 bytes") && text.contains("8 MiB"),
        "{text}"
    );
    assert!(
        !text.contains(&log.len().to_string()),
        "the real size is unknown to a reader that stops at the limit: {text}"
    );
    assert_eq!(err.reason(), "LogTooLarge");
    // Exactly at the limit is fine.
    let log = clean_array();
    assert!(parse_dry_run(log.as_bytes(), log.len()).is_ok());
    let err = parse_dry_run(log.as_bytes(), log.len() - 1).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("limit of {} bytes", log.len() - 1)),
        "{err}"
    );
}

#[test]
fn invalid_utf8_in_the_noise_is_tolerated() {
    // T-17
    let mut log = b"\xff\xfe banner \xc3\x28 [\xe2\x82] \x80\n".to_vec();
    log.extend_from_slice(clean_array().as_bytes());
    log.extend_from_slice(b"\xf0\x28\x8c\xbc done [\xff]\n");
    assert_eq!(parse_dry_run(&log, DEFAULT_LOG_LIMIT).unwrap(), expected());
}

// --- More noise. ---

#[test]
fn bracket_noise_is_ignored() {
    let noise = "[INFO] [worker 3] ready [ok]\n[2025-01-01T00:00:00Z] [{ts}] starting\n".repeat(50);
    let log = format!("{noise}{}{noise}", clean_array());
    assert_eq!(parse(&log).unwrap(), expected());
}

#[test]
fn unclosed_brackets_and_quotes_before_the_array() {
    let log = format!(
        "[worker 3 starting\n[[[ \"unterminated quote\nsay \"hi\\\n{{ [ {{ oops\n{}done [ok]\n",
        clean_array()
    );
    assert_eq!(parse(&log).unwrap(), expected());
}

#[test]
fn crlf_line_endings() {
    let log = format!(
        "banner\r\n{}\r\ndone [ok]\r\n",
        clean_array().replace('\n', "\r\n")
    );
    assert_eq!(parse(&log).unwrap(), expected());
}

#[test]
fn array_after_a_prefix_on_its_line() {
    let log = format!("result: {}", clean_array());
    assert_eq!(parse(&log).unwrap(), expected());
}

#[test]
fn compact_single_line_array() {
    let compact =
        serde_json::to_string(&serde_json::from_str::<serde_json::Value>(&clean_array()).unwrap())
            .unwrap();
    let log = format!("2025-01-01 INFO boot\n{compact}\n");
    assert_eq!(parse(&log).unwrap(), expected());
}

#[test]
fn no_array_is_a_failure_with_the_start_of_the_log() {
    // T-19
    let err = parse("AIM 0.8.5\n[INFO] no GPU found\nexit\n").unwrap_err();
    let ParseError::NoArray { excerpt, size } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*size, 35);
    assert_eq!(excerpt, "AIM 0.8.5⏎[INFO] no GPU found⏎exit⏎");
    assert_eq!(err.reason(), "NoResult");
    assert_eq!(
        parse("").unwrap_err(),
        ParseError::NoArray {
            size: 0,
            excerpt: String::new()
        }
    );
    let long = "x".repeat(10_000);
    let ParseError::NoArray { excerpt, .. } = parse(&long).unwrap_err() else {
        panic!()
    };
    assert_eq!(excerpt.chars().count(), 120);
    assert!(excerpt.ends_with('…'));
}

#[test]
fn only_the_first_element_is_used() {
    let second = ELEMENT
        .replace("latency", "throughput")
        .replace("hf://", "s3://");
    let log = format!("[{ELEMENT},{second}]");
    assert_eq!(parse(&log).unwrap(), expected());
    // The second element is not checked either.
    let log = format!("[{ELEMENT}, 42]");
    assert_eq!(parse(&log).unwrap(), expected());
}

// T-17: only the first element is kept in memory. An 8 MiB array of small numbers after the result
// (which as a `Vec<Value>` takes over 100 MiB) costs next to nothing, on the whole-log path and the scan's.
#[test]
fn the_elements_after_the_first_take_no_memory() {
    let whole = padded(&format!("[{ELEMENT}"), "]", DEFAULT_LOG_LIMIT);
    let scanned = padded(
        &format!("banner [ok]\n[{ELEMENT}"),
        "]\ndone [ok]\n",
        DEFAULT_LOG_LIMIT,
    );
    for log in [whole, scanned] {
        assert_eq!(log.len(), DEFAULT_LOG_LIMIT);
        let (result, peak) = peak_during(|| parse_dry_run(&log, DEFAULT_LOG_LIMIT));
        assert_eq!(result.unwrap(), expected());
        assert!(peak < MIB, "{peak} bytes held while parsing an 8 MiB log");
    }
}

// T-19: an 8 MiB array of numbers is refused for what its first element is, without holding the rest.
#[test]
fn an_array_of_small_numbers_is_refused_without_holding_it() {
    let log = padded("[1", "]", DEFAULT_LOG_LIMIT);
    let (result, peak) = peak_during(|| parse_dry_run(&log, DEFAULT_LOG_LIMIT));
    let err = result.unwrap_err();
    assert!(
        err.to_string().contains("the first element is a number"),
        "{err}"
    );
    assert!(peak < MIB, "{peak} bytes held while parsing an 8 MiB log");
}

// T-19: a first element too large to keep is a failure that says so, and parsing it holds no more than
// the limit (with the slack of growing vectors), not the 100+ MiB it would take.
#[test]
fn a_first_result_too_large_to_keep_is_a_failure() {
    for (head, tail) in [
        (r#"[{"profile": {"x": [1"#, r#"]}, "models": []}]"#),
        (
            "banner\n[{\"models\": [], \"profile\": {\"x\": [1",
            "]}}]\ndone [ok]\n",
        ),
    ] {
        let log = padded(head, tail, DEFAULT_LOG_LIMIT);
        let (result, peak) = peak_during(|| parse_dry_run(&log, DEFAULT_LOG_LIMIT));
        let err = result.unwrap_err();
        assert_eq!(
            err,
            ParseError::ResultTooLarge {
                limit: RESULT_MEMORY_LIMIT
            }
        );
        assert_eq!(
            (err.reason(), err.category()),
            ("ResultTooLarge", "too_large")
        );
        assert!(err.to_string().contains("4 MiB"), "{err}");
        assert!(
            peak < 3 * RESULT_MEMORY_LIMIT,
            "{peak} bytes held while parsing an 8 MiB log"
        );
    }
    // A cut-short array is still invalid JSON, however large its first element.
    let log = padded(r#"[{"profile": {"x": [1"#, "", DEFAULT_LOG_LIMIT);
    assert!(matches!(
        parse_dry_run(&log, DEFAULT_LOG_LIMIT).unwrap_err(),
        ParseError::InvalidJson { .. }
    ));
}

// --- Values the API would reject are failures (T-19). ---

#[test]
fn bad_enum_values() {
    for (field, metadata) in [
        ("metric", r#"{"metric":"fast"}"#),
        ("metric", r#"{"metric":"Latency"}"#),
        ("precision", r#"{"precision":"fp64"}"#),
        ("precision", r#"{"precision":8}"#),
        ("type", r#"{"type":"tuned"}"#),
        ("gpu_count", r#"{"gpu_count":-1}"#),
        ("gpu_count", r#"{"gpu_count":1.5}"#),
        ("gpu_count", r#"{"gpu_count":"2"}"#),
        ("gpu_count", r#"{"gpu_count":4294967296}"#),
        ("gpu", r#"{"gpu":["MI300X"]}"#),
        ("engine", r#"{"engine":1}"#),
    ] {
        let err = parse(&array_with(metadata, "[]")).unwrap_err();
        let ParseError::InvalidValue { field: f, .. } = &err else {
            panic!("{metadata}: {err:?}")
        };
        assert_eq!(f, &format!("profile.metadata.{field}"));
        assert_eq!(err.reason(), "InvalidValue");
    }
    let err = parse(&array_with(r#"{"metric":"fast"}"#, "[]")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the dry-run result has `profile.metadata.metric` = \"fast\", which is not allowed; allowed: latency, throughput"
    );
    let err = parse(&array_with(r#"{"precision":"fp64"}"#, "[]")).unwrap_err();
    assert!(
        err.to_string()
            .contains("auto, fp4, fp8, fp16, fp32, bf16, int4, int8"),
        "{err}"
    );
}

#[test]
fn absent_and_null_metadata_values_are_none() {
    let r = parse(&array_with(r#"{"metric":null,"gpu_count":2.0}"#, "[]")).unwrap();
    assert_eq!(
        r.metadata,
        ProfileMetadata {
            gpu_count: Some(2),
            ..ProfileMetadata::default()
        }
    );
    assert!(r.model_sources.is_empty());
    let r = parse(&array_with("null", "[]")).unwrap();
    assert_eq!(r.metadata, ProfileMetadata::default());
}

#[test]
fn bad_source_uris() {
    for uri in [
        "http://x/y",
        "hf://",
        "hf://a b",
        "s3:/bucket",
        "HF://Qwen",
        " hf://x",
        "hf://x\n",
    ] {
        let models = serde_json::json!([{ "name": "weights", "source": uri }]).to_string();
        let err = parse(&array_with("{}", &models)).unwrap_err();
        let ParseError::InvalidSourceUri { name, uri: u } = &err else {
            panic!("{uri:?}: {err:?}")
        };
        assert_eq!(name, "weights");
        assert!(!u.chars().any(char::is_control), "{u:?}");
        assert_eq!(err.reason(), "InvalidSourceURI");
        assert!(err.to_string().contains("weights"), "{err}");
    }
    let ok = r#"[{"name":"w","source":"s3://bucket/key"}]"#;
    assert_eq!(
        parse(&array_with("{}", ok)).unwrap().model_sources,
        vec![source("w", "s3://bucket/key", None)]
    );
}

#[test]
fn size_gb_is_gib() {
    // T-18: bytes = round(size_gb × 1024³).
    for (size_gb, bytes) in [
        ("0.5", Some(536_870_912)),
        ("16", Some(17_179_869_184)),
        ("16.0", Some(17_179_869_184)),
        ("0", Some(0)),
        ("-0.0", Some(0)),
        ("1e-9", Some(1)),
        ("1e-10", Some(0)),
        ("0.001953125", Some(2_097_152)),
        ("8589934591", Some(9_223_372_035_781_033_984)),
        ("null", None),
    ] {
        let models = format!(r#"[{{"name":"w","source":"hf://a/b","size_gb":{size_gb}}}]"#);
        let r = parse(&array_with("{}", &models)).unwrap();
        assert_eq!(r.model_sources[0].size_bytes, bytes, "{size_gb}");
    }
    let models = r#"[{"name":"w","source":"hf://a/b"}]"#;
    assert_eq!(
        parse(&array_with("{}", models)).unwrap().model_sources[0].size_bytes,
        None
    );
}

#[test]
fn bad_sizes() {
    for (size_gb, reason) in [
        ("-1", "negative"),
        ("-0.5", "negative"),
        ("8589934592", "too large"),
        ("1e300", "too large"),
        ("\"16\"", "not a number"),
        ("true", "not a number"),
        ("{}", "not a number"),
    ] {
        let models = format!(r#"[{{"name":"w","source":"hf://a/b","size_gb":{size_gb}}}]"#);
        let err = parse(&array_with("{}", &models)).unwrap_err();
        let ParseError::InvalidSize {
            name, reason: r, ..
        } = &err
        else {
            panic!("{size_gb}: {err:?}")
        };
        assert_eq!(name, "w");
        assert!(r.contains(reason), "{size_gb}: {r}");
        assert_eq!(err.reason(), "InvalidSize");
    }
    // Not a JSON number at all: the JSON is invalid.
    for size_gb in ["NaN", "Infinity", "1e400"] {
        let models = format!(r#"[{{"name":"w","source":"hf://a/b","size_gb":{size_gb}}}]"#);
        let err = parse(&array_with("{}", &models)).unwrap_err();
        assert!(
            matches!(err, ParseError::InvalidJson { .. }),
            "{size_gb}: {err:?}"
        );
    }
}

#[test]
fn malformed_elements() {
    for (log, needle) in [
        (r#"[{"models":[]}]"#.to_string(), "`profile` is missing"),
        (r#"[{"profile":{}}]"#.to_string(), "`models` is missing"),
        (
            r#"[{"profile":"x","models":[]}]"#.to_string(),
            "`profile` is a string",
        ),
        (
            r#"[{"profile":{},"models":{}}]"#.to_string(),
            "`models` is an object",
        ),
        (
            r#"[{"profile":{"metadata":[]},"models":[]}]"#.to_string(),
            "`profile.metadata` is an array",
        ),
        (
            r#"[{"profile":{},"models":[1]}]"#.to_string(),
            "`models[0]` is a number",
        ),
        (
            r#"[{"profile":{},"models":[{"source":"hf://a"}]}]"#.to_string(),
            "`models[0].name` is missing",
        ),
        (
            r#"[{"profile":{},"models":[{"name":"","source":"hf://a"}]}]"#.to_string(),
            "`models[0].name` is \"\"",
        ),
        (
            r#"[{"profile":{},"models":[{"name":"n"}]}]"#.to_string(),
            "`models[0].source` (n) is missing",
        ),
        (
            r#"[{"profile":{},"models":[{"name":"n","source":3}]}]"#.to_string(),
            "`models[0].source` (n) is a number",
        ),
        ("[1, 2]".to_string(), "the first element is a number"),
        ("[\"x\"]".to_string(), "the first element is a string"),
    ] {
        let err = parse(&log).unwrap_err();
        assert!(
            matches!(err, ParseError::InvalidElement { .. }),
            "{log}: {err:?}"
        );
        assert!(err.to_string().contains(needle), "{log}: {err}");
        assert_eq!(err.category(), "malformed");
    }
}

#[test]
fn categories() {
    assert_eq!(parse("").unwrap_err().category(), "no_result");
    assert_eq!(parse("[]").unwrap_err().category(), "no_result");
    assert_eq!(parse_dry_run(b"xx", 1).unwrap_err().category(), "too_large");
    assert_eq!(
        parse(&array_with(r#"{"type":"x"}"#, "[]"))
            .unwrap_err()
            .category(),
        "invalid_content"
    );
}

#[test]
fn an_invalid_result_is_not_replaced_by_an_earlier_one() {
    // T-19: the last array is the result; if it is invalid, that is the failure.
    let bad = array_with(r#"{"metric":"fast"}"#, "[]");
    let log = format!("{}\n{bad}\n", clean_array());
    assert!(matches!(
        parse(&log).unwrap_err(),
        ParseError::InvalidValue { .. }
    ));
}

#[test]
fn a_broken_array_after_a_good_one_does_not_hide_it() {
    // T-17: "the last non-empty JSON array" — a cut-short one is no JSON array.
    let log = format!("{}\n[{{\"profile\": {{\"x\": 1", clean_array());
    assert_eq!(parse(&log).unwrap(), expected());
}

#[test]
fn an_array_where_a_noise_fragment_broke_is_still_found() {
    // The fragment `[{` breaks exactly where the array starts; the array is still tried on its own.
    let log = format!("[{{\n{}}}]\n", clean_array());
    assert_eq!(parse(&log).unwrap(), expected());
}

#[test]
fn the_failure_that_ends_last_is_reported() {
    let cut = "[{\"profile\": {";
    let err = parse(&format!("[]\n{cut}")).unwrap_err();
    assert!(matches!(err, ParseError::InvalidJson { .. }), "{err:?}");
    let err = parse(&format!("{cut}\n]\n[]\n")).unwrap_err();
    assert_eq!(err, ParseError::Empty { line: 3 });
}

#[test]
fn failures_are_deterministic() {
    // T-30: the same log gives the same message.
    let full = clean_array();
    let log = format!("x\n{}", &full[..full.len() / 2]);
    assert_eq!(
        parse(&log).unwrap_err().to_string(),
        parse(&log).unwrap_err().to_string()
    );
}

#[test]
fn pathological_logs_finish() {
    // T-17: linear time. Each of these would take hours with a quadratic search (2 MiB each).
    let n = 2 * 1024 * 1024;
    let patterns: [&[u8]; 10] = [
        b"[",
        b"[{",
        b"[\n",
        b"[ {\"a\":",
        b"]",
        b"[\"",
        b"[{\"a\":[{\"b\":1,\n",
        b"[{}]",
        b"[]",
        b"[{\"a\":1}, \n",
    ];
    for p in patterns {
        let mut log = p.repeat(n / p.len());
        log.truncate(n);
        let result = parse_dry_run(&log, DEFAULT_LOG_LIMIT);
        assert!(result.is_err(), "{:?}", String::from_utf8_lossy(p));
        // And a real result after the garbage is still found when it starts a line.
        log.extend_from_slice(b"\n");
        log.extend_from_slice(clean_array().as_bytes());
        let _ = parse_dry_run(&log, DEFAULT_LOG_LIMIT);
    }
    let mut log = "[INFO] [worker 3] ready [ok]\n".repeat(n / 29).into_bytes();
    log.extend_from_slice(clean_array().as_bytes());
    assert_eq!(parse_dry_run(&log, DEFAULT_LOG_LIMIT).unwrap(), expected());
}

// --- Fuzzing. ---

fn noise_without(excluded: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        any::<u8>().prop_filter("excluded byte", move |b| !excluded.contains(b)),
        0..300,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_arbitrary_bytes(log in prop::collection::vec(any::<u8>(), 0..2048)) {
        // T-17: the parser never panics, whatever the bytes.
        let _ = parse_dry_run(&log, DEFAULT_LOG_LIMIT);
        let _ = parse_dry_run(&log, log.len() / 2);
    }

    #[test]
    fn never_panics_on_json_like_bytes(
        log in prop::collection::vec(prop::sample::select(b"[]{}\",:\\ \n\r\tax0-.e\x00\xff".to_vec()), 0..2048)
    ) {
        // Mostly structure, so the scanner's paths are all taken.
        let _ = parse_dry_run(&log, DEFAULT_LOG_LIMIT);
    }

    #[test]
    fn never_panics_around_a_real_array(
        before in prop::collection::vec(any::<u8>(), 0..200),
        cut in 0usize..2000,
        after in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let array = clean_array();
        let mut log = before;
        log.extend_from_slice(&array.as_bytes()[..cut.min(array.len())]);
        log.extend_from_slice(&after);
        let _ = parse_dry_run(&log, DEFAULT_LOG_LIMIT);
    }

    #[test]
    fn finds_the_array_in_noise_without_brackets(
        before in noise_without(b"[]"),
        after in noise_without(b"[]"),
    ) {
        // T-17
        let mut log = before;
        log.extend_from_slice(clean_array().as_bytes());
        log.extend_from_slice(&after);
        prop_assert_eq!(parse_dry_run(&log, DEFAULT_LOG_LIMIT).unwrap(), expected());
    }

    #[test]
    fn finds_the_array_after_lines_of_bracket_noise(
        lines in prop::collection::vec(noise_without(b"{\n"), 0..20),
        after in noise_without(b"[{"),
    ) {
        // T-17: noise lines with any brackets, quotes and bytes (no `{`), the array starting a line,
        // then anything that opens nothing.
        let mut log = Vec::new();
        for line in lines {
            log.extend_from_slice(&line);
            log.push(b'\n');
        }
        log.extend_from_slice(clean_array().as_bytes());
        log.extend_from_slice(&after);
        prop_assert_eq!(parse_dry_run(&log, DEFAULT_LOG_LIMIT).unwrap(), expected());
    }
}
