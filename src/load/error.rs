//! Why a point's prompts cannot be built: a dataset, a prompts file, a tokenizer, a trace or the endpoint URL.
//! Each variant names the file (and the line and column where there is one) and says the fix; the run's
//! preflight stops on it (exit 2) before any server starts, and a point that meets it later fails with it.

use crate::record::tracefile::TraceError;

/// A boxed error of a library that has no error type of its own to name (`tokenizers`, the URL parser).
pub type Boxed = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error(
        "cannot read dataset {path}: {source}; give `load.dataset.path` relative to the folder servelab runs in, or an absolute one"
    )]
    DatasetRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("dataset {path} is empty; give a file with at least one entry")]
    DatasetEmpty { path: String },
    #[error(
        "dataset {path} is {mib} MiB, over the {limit_mib} MiB limit; sample it down first (e.g. `shuf -n 100000`)"
    )]
    DatasetTooLarge { path: String, mib: u64, limit_mib: u64 },
    #[error("dataset {path}: line {line} is longer than {limit_mib} MiB; give one entry a line")]
    LineTooLong { path: String, line: u64, limit_mib: usize },
    #[error(
        "dataset {path}: line {line}, column {column}: {source}; each line must be {{\"prompt\": \"...\", \"output_tokens\": N}}"
    )]
    JsonlLine {
        path: String,
        line: u64,
        column: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "dataset {path}: ShareGPT output lengths are the replies' lengths in the model's tokens, and the model folder has no tokenizer.json; make `engine.model` a local folder with its tokenizer.json, or convert the dataset to jsonl with output_tokens"
    )]
    ShareGptNeedsTokenizer { path: String },
    #[error(
        "dataset {path}: {source}; a ShareGPT file is a JSON array of {{\"conversations\": [{{\"from\": ..., \"value\": ...}}]}} objects"
    )]
    ShareGpt {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "dataset {path} has no usable entry ({skipped} left out); give entries with a non-empty prompt and an output of at least 1 token"
    )]
    NoUsableEntry { path: String, skipped: u64 },
    #[error(
        "dataset {path}: every one of the {drawn} sampled prompts is longer than max-model-len {limit} allows; raise `--max-model-len` or use a dataset of shorter prompts"
    )]
    AllTooLong { path: String, drawn: usize, limit: String },
    #[error("cannot read tokenizer {path}: {source}; restore the file from the model's repository")]
    TokenizerRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tokenizer {path} is larger than {limit_mib} MiB; servelab refuses it unread")]
    TokenizerTooLarge { path: String, limit_mib: u64 },
    #[error("cannot load tokenizer {path}: {source}; restore the file from the model's repository")]
    TokenizerParse {
        path: String,
        #[source]
        source: Boxed,
    },
    #[error("tokenizer {path}: {source}")]
    TokenizerWords {
        path: String,
        #[source]
        source: WordsError,
    },
    #[error(
        "cannot read prompts_file {path}: {source}; give the path of a text file, one prompt a line (relative paths are relative to the folder servelab runs in)"
    )]
    PromptsFileRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("prompts_file {path} has no non-empty line; give one prompt a line")]
    PromptsFileEmpty { path: String },
    #[error(
        "exact text prompts need the model's tokenizer: `engine.model` must be a local folder (or drop `text_prompts` and use the completions endpoint for random token ids)"
    )]
    NeedsLocalModel,
    #[error(
        "sessions build their user messages with the model's tokenizer: `engine.model` must be a local folder (the model's files, not a hub name)"
    )]
    SessionsNeedLocalModel,
    #[error(
        "a trace on the chat endpoint is sent as text made with the model's tokenizer: `engine.model` must be a local folder (the model's files, not a hub name)"
    )]
    ChatTraceNeedsLocalModel,
    #[error("{0}")]
    ChatTemplate(#[from] ChatTemplateError),
    #[error("{0}")]
    Trace(#[from] TraceError),
    #[error(
        "trace {path} changed since it was planned (content {then} then, {now} now); plan the run again, or restore the trace"
    )]
    TraceChanged { path: String, then: String, now: String },
    #[error(
        "bad endpoint URL {url}: {source}; give `engine.host` and `engine.port` (or `engine.base_url` for an external server) that form a valid URL"
    )]
    BadUrl {
        url: String,
        #[source]
        source: Boxed,
    },
    /// The key a workload is remembered by could not be written: a bug in servelab.
    #[error("cannot key the workload (a bug in servelab, please report it): {0}")]
    Key(#[source] serde_json::Error),
}

/// Why a tokenizer cannot make exact-length text, whatever file it came from.
#[derive(Debug, thiserror::Error)]
pub enum WordsError {
    #[error("cannot encode a probe text: {0}; restore the file from the model's repository")]
    Encode(#[source] Boxed),
    #[error(
        "only {0} vocabulary entries are plain words of one token; exact text prompts need at least 16: use random token ids (drop `text_prompts`, use the completions endpoint)"
    )]
    TooFewWords(usize),
}

/// Why the server's chat template cannot be read, parsed or rendered for a trace replay's bound.
#[derive(Debug, thiserror::Error)]
pub enum ChatTemplateError {
    #[error("cannot read the {what} {path}: {why}; give a readable file of at most {cap_mib} MiB")]
    Read { what: &'static str, path: String, why: String, cap_mib: u64 },
    #[error("cannot parse the chat template: {0}; fix the template (minijinja reads Jinja2 templates)")]
    Parse(#[source] minijinja::Error),
    #[error("cannot render the chat template: {0}; fix the template, or pass one with the server's --chat-template")]
    Render(#[source] minijinja::Error),
    #[error("the model's tokenizer cannot encode a replayed prompt; check the model folder's tokenizer.json")]
    Encode,
}
