//! Why a dry-run log gave no usable result (T-19).

const MIB: usize = 1024 * 1024;

/// Why a dry-run log could not be turned into a result. Every message says what was wrong and where,
/// with a short printable excerpt where one helps, and contains nothing that varies between runs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The log is longer than the byte limit. Its real size is unknown: reading stops past the limit.
    #[error(
        "the dry-run log is longer than the limit of {limit} bytes ({}); reading stopped there (the operator's --discovery-log-limit)",
        mib(*limit)
    )]
    TooLarge {
        /// Bytes seen (more than `limit`; the log may be longer still).
        size: usize,
        /// The byte limit.
        limit: usize,
    },
    /// No JSON array of results anywhere in the log.
    #[error(
        "no JSON array of results in the dry-run log ({size} bytes); it starts with: \"{excerpt}\""
    )]
    NoArray {
        /// Bytes in the log.
        size: usize,
        /// The start of the log, printable, at most 120 characters.
        excerpt: String,
    },
    /// The result is `[]`: the image found no profile for these inputs.
    #[error(
        "the dry-run result is an empty JSON array `[]` (ending on line {line} of the log): the image found no profile for these inputs"
    )]
    Empty {
        /// 1-based line of the log where the last `[]` ends.
        line: usize,
    },
    /// The result array is not valid JSON (for example cut short).
    #[error(
        "the dry-run result is not valid JSON: {message} at line {line}, column {column} (byte {offset}) of the log, near \"{excerpt}\""
    )]
    InvalidJson {
        /// What the JSON parser found wrong, e.g. `EOF while parsing a list`.
        message: String,
        /// Byte offset in the log where it broke.
        offset: usize,
        /// 1-based line of the log where it broke.
        line: usize,
        /// 1-based column (in bytes) where it broke.
        column: usize,
        /// Printable text around the break, at most 120 characters, the break marked `<HERE>`.
        excerpt: String,
    },
    /// The first element is valid JSON but too large to keep: a real result is a few KiB, and a template
    /// status must fit in one Kubernetes object.
    #[error(
        "the first dry-run result is too large: once parsed it would take more than {limit} bytes ({}) of memory; a dry-run result is a few KiB, and a template status must fit in one Kubernetes object (about 1.5 MiB)",
        mib(*limit)
    )]
    ResultTooLarge {
        /// The memory limit of the parsed result, in bytes.
        limit: usize,
    },
    /// The first element lacks something it must have (`profile`, `models`, a source's `name`, …).
    #[error("the first dry-run result is malformed: {message}")]
    InvalidElement {
        /// What is missing or of the wrong kind, with its path, e.g. `` `models[0].name` is missing ``.
        message: String,
    },
    /// A value outside what the API allows, e.g. `profile.metadata.metric`.
    #[error("the dry-run result has `{field}` = {value}, which is not allowed; allowed: {allowed}")]
    InvalidValue {
        /// Path of the value, e.g. `profile.metadata.metric`.
        field: String,
        /// The value as JSON, cut to a readable length.
        value: String,
        /// What the API allows there.
        allowed: String,
    },
    /// A model source URI that the API server would reject.
    #[error(
        "model source \"{name}\" of the dry-run result has source URI \"{uri}\", which is not hf://… or s3://… without whitespace"
    )]
    InvalidSourceUri {
        /// Name of the model source.
        name: String,
        /// Its URI, printable, cut to a readable length.
        uri: String,
    },
    /// A `size_gb` that is no size: negative, not a number, or too large for bytes in an int64.
    #[error("model source \"{name}\" of the dry-run result has size_gb = {value}: {reason}")]
    InvalidSize {
        /// Name of the model source.
        name: String,
        /// The `size_gb` value as JSON.
        value: String,
        /// Why it is no size.
        reason: String,
    },
}

impl ParseError {
    /// Short CamelCase cause, for messages and events.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::TooLarge { .. } => "LogTooLarge",
            ParseError::NoArray { .. } => "NoResult",
            ParseError::Empty { .. } => "EmptyResult",
            ParseError::InvalidJson { .. } => "InvalidJSON",
            ParseError::ResultTooLarge { .. } => "ResultTooLarge",
            ParseError::InvalidElement { .. } => "InvalidElement",
            ParseError::InvalidValue { .. } => "InvalidValue",
            ParseError::InvalidSourceUri { .. } => "InvalidSourceURI",
            ParseError::InvalidSize { .. } => "InvalidSize",
        }
    }

    /// Coarse class, for metrics labels: `too_large`, `no_result`, `malformed` or `invalid_content`.
    pub fn category(&self) -> &'static str {
        match self {
            ParseError::TooLarge { .. } | ParseError::ResultTooLarge { .. } => "too_large",
            ParseError::NoArray { .. } | ParseError::Empty { .. } => "no_result",
            ParseError::InvalidJson { .. } | ParseError::InvalidElement { .. } => "malformed",
            ParseError::InvalidValue { .. }
            | ParseError::InvalidSourceUri { .. }
            | ParseError::InvalidSize { .. } => "invalid_content",
        }
    }
}

fn mib(bytes: usize) -> String {
    if bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{:.2} MiB", bytes as f64 / MIB as f64)
    }
}
