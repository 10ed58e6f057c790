//! The closed-loop load client: `concurrency` workers, each sending its next request as soon as its
//! previous one ends (c = 1 is sequential). Raw instants are recorded where the bytes arrive; figures are
//! derived later by `stats`. A failed request is a record with an error, never an error of the run.

use super::prompt::{Prompt, Scratch, Workload};
use super::sse::{Event, SseParser};
use crate::record::plan::OpenLoop;
use crate::record::{ErrorKind, RequestError, RequestRecord};
use serde::Serialize;
use serde::ser::Serializer;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// What every request of a phase asks for.
#[derive(Clone, Debug)]
pub struct RequestSpec {
    /// Parsed once: the hot path clones it instead of parsing a string per request.
    pub url: reqwest::Url,
    /// `/v1/chat/completions`: the prompt goes as one user message.
    pub chat: bool,
    pub model: String,
    pub ignore_eos: bool,
    pub stream: bool,
    pub timeout: Duration,
    /// Each request's prompt and lengths.
    pub workload: Arc<Workload>,
    /// Output lengths differ between requests: each record keeps the `max_tokens` it asked for.
    pub record_max_tokens: bool,
    /// `Authorization: Bearer` value; never recorded.
    pub api_key: Option<String>,
}

/// One batch of requests at one concurrency: `requests` of them, or as many as fit in `duration`.
#[derive(Clone, Debug)]
pub struct Phase {
    pub point: String,
    pub attempt: u32,
    /// Ignored when `duration` is set.
    pub requests: u32,
    /// A phase by time: dispatch until this long after the start, then keep the concurrency level up with
    /// `tail` requests until every request dispatched in time has finished.
    pub duration: Option<Duration>,
    pub concurrency: u32,
    pub warmup: bool,
    /// Makes this phase's prompts differ from every other phase's.
    pub salt: u64,
    /// Open loop: arrivals on a schedule drawn from `schedule_seed`; `concurrency` is then a cap (0: none).
    pub open_loop: Option<OpenLoop>,
    pub schedule_seed: u64,
    /// OS threads the phase runs on (`load.client_threads`); 1: as before (see `threads`).
    pub threads: u32,
}

#[derive(Clone, Debug)]
pub struct PhaseResult {
    pub records: Vec<RequestRecord>,
    /// From the phase start to the end of its last request.
    pub wall_s: f64,
    /// The phase start: the origin of every instant in `records`.
    pub t0: Instant,
    /// A worker (or the phase's thread) panicked: the phase lost requests, so the point must fail with this.
    pub panicked: Option<String>,
}

/// What a task that did not finish says: its panic message, or that it was cancelled.
pub fn join_error(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            format!("a load task panicked: {msg}")
        }
        Err(_) => "a load task was cancelled".to_owned(),
    }
}

/// A client for load: one pooled connection per concurrent request, Nagle off, no proxy.
pub fn http_client(concurrency: u32) -> reqwest::Client {
    // Redirects are never followed: a load would silently measure another server, and the API key would go
    // along to it. A 3xx is an error naming where it pointed.
    reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency as usize)
        .tcp_nodelay(true)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

struct IdsOrText<'a>(&'a Prompt<'a>);

impl Serialize for IdsOrText<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Prompt::Ids(ids) => ids.serialize(s),
            Prompt::Text(t) => s.serialize_str(t),
        }
    }
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
    /// Every chunk carries the running completion-token count (vLLM honours it only with include_usage), so
    /// tokens per chunk, per-token ITL and TPOT are measured rather than assumed.
    continuous_usage_stats: bool,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: IdsOrText<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt: Option<IdsOrText<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<[Message<'a>; 1]>,
    max_tokens: u32,
    ignore_eos: bool,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

pub async fn run_phase(http: &reqwest::Client, spec: &Arc<RequestSpec>, phase: &Phase) -> PhaseResult {
    if let super::prompt::Source::Sessions(sessions) = &spec.workload.source {
        return super::session::run(http, spec, sessions, phase).await;
    }
    if let Some(o) = &phase.open_loop {
        return super::open::run(spec, phase, o).await;
    }
    if phase.threads > 1 {
        return closed_on_threads(spec, phase).await;
    }
    let t0 = Instant::now();
    let shared = Arc::new(Shared::default());
    let (mut records, panicked) = slots(http, spec, phase, &shared, t0, slots_of(phase)).await;
    records.sort_by_key(|r| r.index);
    let wall_s = records.iter().map(|r| r.end_s).fold(0.0, f64::max);
    PhaseResult { records, wall_s, t0, panicked }
}

/// The closed loop's concurrent slots: its concurrency, or fewer when a phase by count has fewer requests.
fn slots_of(phase: &Phase) -> u32 {
    match phase.duration {
        Some(_) => phase.concurrency.max(1),
        None => phase.concurrency.min(phase.requests).max(1),
    }
}

/// `slots` closed-loop workers on the current runtime; their records, and the first panic among them.
async fn slots(
    http: &reqwest::Client,
    spec: &Arc<RequestSpec>,
    phase: &Phase,
    shared: &Arc<Shared>,
    t0: Instant,
    slots: u32,
) -> (Vec<RequestRecord>, Option<String>) {
    let mut workers = Vec::new();
    for _ in 0..slots {
        let (http, spec, phase, shared) = (http.clone(), spec.clone(), phase.clone(), shared.clone());
        workers.push(tokio::spawn(async move { worker(&http, &spec, &phase, &shared, t0).await }));
    }
    let mut records = Vec::with_capacity(phase.requests as usize);
    let mut panicked = None;
    for w in workers {
        match w.await {
            Ok(r) => records.extend(r),
            Err(e) => panicked = panicked.or(Some(join_error(e))),
        }
    }
    (records, panicked)
}

/// A closed loop on `phase.threads` threads: the slots split across them, the request budget (or the
/// deadline) shared through one counter, so exactly the planned requests are sent, each index once.
async fn closed_on_threads(spec: &Arc<RequestSpec>, phase: &Phase) -> PhaseResult {
    let (n, total) = (phase.threads, slots_of(phase));
    let shared = Arc::new(Shared::default());
    let (spec, phase_) = (spec.clone(), phase.clone());
    let setup = move |k| http_client(super::threads::share(total, n, k));
    let run = move |k, http: reqwest::Client, t0| {
        let (spec, phase, shared) = (spec.clone(), phase_.clone(), shared.clone());
        async move { slots(&http, &spec, &phase, &shared, t0, super::threads::share(total, n, k)).await }
    };
    let (t0, results) = super::threads::on_threads(n, "servelab-client", setup, run).await;
    merge(t0, results)
}

/// What one thread of a phase returns: its records and the first panic among its tasks, or why it gave none.
pub(super) type ThreadResult = Result<(Vec<RequestRecord>, Option<String>), String>;

/// The records of a phase's threads in the order they were sent (ties by index; on one thread that is index
/// order, as it always was), and the first failure.
pub(super) fn merge(t0: Instant, results: Vec<ThreadResult>) -> PhaseResult {
    let one = results.len() == 1;
    let mut records = Vec::new();
    let mut panicked = None;
    for r in results {
        match r {
            Ok((r, p)) => {
                records.extend(r);
                panicked = panicked.or(p);
            }
            Err(e) => panicked = panicked.or(Some(e)),
        }
    }
    if one {
        records.sort_by_key(|r| r.index);
    } else {
        records.sort_by(|a, b| a.start_s.total_cmp(&b.start_s).then(a.index.cmp(&b.index)));
    }
    let wall_s = records.iter().map(|r| r.end_s).fold(0.0, f64::max);
    PhaseResult { records, wall_s, t0, panicked }
}

/// What the workers of one phase share, across threads too.
#[derive(Default)]
struct Shared {
    next: AtomicU32,
    /// Requests dispatched before the deadline and not finished yet (phases by time).
    in_time_open: AtomicU32,
}

impl Shared {
    /// The next request to send and whether it is a tail request, or None when the phase is over.
    fn claim(&self, phase: &Phase, deadline: Option<Instant>) -> Option<(u32, bool)> {
        match deadline {
            None => {
                let index = self.next.fetch_add(1, Ordering::Relaxed);
                (index < phase.requests).then_some((index, false))
            }
            Some(deadline) => {
                let tail = Instant::now() >= deadline;
                if tail && self.in_time_open.load(Ordering::SeqCst) == 0 {
                    return None;
                }
                if !tail {
                    self.in_time_open.fetch_add(1, Ordering::SeqCst);
                }
                Some((self.next.fetch_add(1, Ordering::Relaxed), tail))
            }
        }
    }
}

/// One closed-loop slot: sends its next request as soon as its previous one ends.
async fn worker(
    http: &reqwest::Client,
    spec: &RequestSpec,
    phase: &Phase,
    shared: &Shared,
    t0: Instant,
) -> Vec<RequestRecord> {
    let mut records = Vec::new();
    let mut scratch = Scratch::default();
    let mut scheduled = Instant::now();
    let deadline = phase.duration.map(|d| t0 + d);
    while let Some((index, tail)) = shared.claim(phase, deadline) {
        let body = body_of(spec, phase, index, &mut scratch);
        let mut record = one_request(http, spec, phase, index, body, t0, scheduled).await;
        record.tail = tail;
        if deadline.is_some() && !tail {
            shared.in_time_open.fetch_sub(1, Ordering::SeqCst);
        }
        records.push(record);
        scheduled = Instant::now();
    }
    records
}

/// A request's body, with what the record keeps of how it was built.
pub(super) struct Built {
    pub bytes: Vec<u8>,
    pub max_tokens: u32,
    pub sent_tokens: Option<u32>,
}

/// The JSON body of request `index` of a phase (`scratch` is reused across requests).
pub(super) fn body_of(spec: &RequestSpec, phase: &Phase, index: u32, scratch: &mut Scratch) -> Built {
    let request = spec.workload.get(phase.salt, u64::from(index), scratch);
    let (max_tokens, sent_tokens) = (request.max_tokens, request.sent_tokens);
    let prompt = request.prompt;
    // Sized up front: growing a 100k-id body by doubling copied it over and over (a profile of a trace replay).
    let size = match &prompt {
        Prompt::Ids(ids) => 6 * ids.len(),
        Prompt::Text(t) => t.len() + t.len() / 8,
    };
    let mut bytes = Vec::with_capacity(256 + size);
    let (prompt, messages) = match spec.chat {
        true => (None, Some([Message { role: "user", content: IdsOrText(&prompt) }])),
        false => (Some(IdsOrText(&prompt)), None),
    };
    serde_json::to_writer(
        &mut bytes,
        &Body {
            model: &spec.model,
            prompt,
            messages,
            max_tokens,
            ignore_eos: spec.ignore_eos,
            stream: spec.stream,
            stream_options: spec.stream.then_some(StreamOptions { include_usage: true, continuous_usage_stats: true }),
        },
    )
    .unwrap_or_else(|_| bytes.clear());
    Built { bytes, max_tokens, sent_tokens }
}

fn secs(t0: Instant, t: Instant) -> f64 {
    t.duration_since(t0).as_secs_f64()
}

/// Progress of one response, filled as bytes arrive.
struct Progress {
    first: Option<Instant>,
    chunk_us: Vec<u32>,
    /// Tokens per content chunk from the first non-empty one on (empty without per-chunk usage).
    chunk_tokens: Vec<u32>,
    /// The running completion-token count last seen, and tokens seen before the first non-empty chunk.
    counted: u32,
    before_first: u32,
    chunks: u32,
    usage: (Option<u32>, Option<u32>),
    done: bool,
    error: Option<RequestError>,
    status: Option<u16>,
}

pub(super) async fn one_request(
    http: &reqwest::Client,
    spec: &RequestSpec,
    phase: &Phase,
    index: u32,
    body: Built,
    t0: Instant,
    scheduled: Instant,
) -> RequestRecord {
    one_request_reading(http, spec, phase, (index, body), (t0, scheduled), None).await
}

/// `one_request`, with the answer's text read into `answer` as it streams (a session's next turn resends it).
pub(super) async fn one_request_reading(
    http: &reqwest::Client,
    spec: &RequestSpec,
    phase: &Phase,
    (index, body): (u32, Built),
    (t0, scheduled): (Instant, Instant),
    answer: Option<&mut super::answer::Answer>,
) -> RequestRecord {
    let Built { bytes: body, max_tokens, sent_tokens } = body;
    let mut p = Progress {
        first: None,
        chunk_us: Vec::with_capacity(max_tokens as usize),
        chunk_tokens: Vec::new(),
        counted: 0,
        before_first: 0,
        chunks: 0,
        usage: (None, None),
        done: false,
        error: None,
        status: None,
    };
    let start = Instant::now();
    let outcome = tokio::time::timeout(spec.timeout, exchange(http, spec, body, max_tokens, &mut p, answer)).await;
    let end = Instant::now();
    match outcome {
        Err(_) => {
            p.error = Some(RequestError {
                kind: ErrorKind::Timeout,
                message: format!("no complete response within {:.0} s", spec.timeout.as_secs_f64()),
            })
        }
        Ok(Err(e)) => p.error = Some(e),
        Ok(Ok(())) if spec.stream && !p.done && p.error.is_none() => {
            p.error = Some(RequestError { kind: ErrorKind::Stream, message: "the stream ended without [DONE]".into() })
        }
        Ok(Ok(())) => {}
    }
    // A completion asked to ignore EOS must carry tokens: an answer without any is no completion.
    let tokens = p.usage.1.unwrap_or(p.counted.max(u32::from(p.first.is_some())));
    if p.error.is_none() && spec.ignore_eos && max_tokens > 0 && tokens == 0 {
        p.error = Some(RequestError {
            kind: ErrorKind::Stream,
            message: format!(
                "the server answered without a token although {max_tokens} were asked for with ignore_eos"
            ),
        });
    }
    RequestRecord {
        point: phase.point.clone(),
        attempt: phase.attempt,
        index,
        warmup: phase.warmup,
        scheduled_s: secs(t0, scheduled),
        slot_s: None,
        start_s: secs(t0, start),
        first_token_s: p.first.map(|f| secs(t0, f)),
        end_s: secs(t0, end),
        chunk_us: p.chunk_us,
        chunk_tokens: p.chunk_tokens,
        chunks: p.chunks,
        tail: false,
        prompt_tokens: p.usage.0,
        completion_tokens: p.usage.1,
        sent_tokens,
        max_tokens: spec.record_max_tokens.then_some(max_tokens),
        http_status: p.status,
        error: p.error,
        session: None,
        cached_tokens: None,
    }
}

/// A non-streamed completion longer than this is an error (no real completion comes close).
const MAX_BODY: usize = 64 << 20;
/// An SSE line (one event) longer than this ends the request as a `stream` error.
pub const MAX_SSE_LINE: usize = 4 << 20;

/// Events a stream may carry: one per token asked for, plus the ones around them (vLLM's empty first chunk or
/// chat role chunk, a finish chunk, the usage chunk) with room to spare. Past it the request is a `stream`
/// error and nothing more is read, so a server that streams without end costs bounded memory and record size.
pub fn max_events(max_tokens: u32) -> u32 {
    max_tokens.saturating_add(32 + max_tokens / 10)
}

/// At most `cap` bytes of the body; the rest is not read.
async fn body_prefix(resp: &mut reqwest::Response, cap: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < cap {
        match resp.chunk().await {
            Ok(Some(chunk)) => out.extend_from_slice(&chunk[..chunk.len().min(cap - out.len())]),
            _ => break,
        }
    }
    out
}

fn request_error(e: &reqwest::Error) -> RequestError {
    let kind = if e.is_connect() {
        ErrorKind::Connect
    } else if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_body() || e.is_decode() {
        ErrorKind::Body
    } else {
        ErrorKind::Request
    };
    // reqwest's own text ("error sending request for url ...") hides the cause: name every source.
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    RequestError { kind, message }
}

async fn exchange(
    http: &reqwest::Client,
    spec: &RequestSpec,
    body: Vec<u8>,
    max_tokens: u32,
    p: &mut Progress,
    mut answer: Option<&mut super::answer::Answer>,
) -> Result<(), RequestError> {
    let mut req = http.post(spec.url.clone()).header("content-type", "application/json");
    if let Some(key) = &spec.api_key {
        req = req.bearer_auth(key);
    }
    let mut resp = req.body(body).send().await.map_err(|e| request_error(&e))?;
    let status = resp.status();
    p.status = Some(status.as_u16());
    if status.is_redirection() {
        let to = resp.headers().get(reqwest::header::LOCATION).and_then(|l| l.to_str().ok()).unwrap_or("nowhere");
        let message = format!(
            "redirected to {}: servelab does not follow redirects (the load and the API key would go elsewhere); \
             point the URL at the server itself",
            to.chars().take(200).collect::<String>()
        );
        return Err(RequestError { kind: ErrorKind::Http(status.as_u16()), message });
    }
    if !status.is_success() {
        // An error body is read up to 64 KiB: enough for any message, bounded against an endless one.
        let text = String::from_utf8_lossy(&body_prefix(&mut resp, 64 << 10).await).into_owned();
        let msg = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or(text);
        return Err(RequestError { kind: ErrorKind::Http(status.as_u16()), message: msg.chars().take(300).collect() });
    }
    if !spec.stream {
        let bytes = body_prefix(&mut resp, MAX_BODY + 1).await;
        if bytes.len() > MAX_BODY {
            return Err(RequestError {
                kind: ErrorKind::Body,
                message: format!("response body over {MAX_BODY} bytes"),
            });
        }
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| RequestError { kind: ErrorKind::Body, message: e.to_string() })?;
        if v["choices"].as_array().is_none_or(Vec::is_empty) {
            return Err(RequestError {
                kind: ErrorKind::Body,
                message: "the answer holds no completion (no choices)".into(),
            });
        }
        p.usage = (
            v["usage"]["prompt_tokens"].as_u64().map(|n| n as u32),
            v["usage"]["completion_tokens"].as_u64().map(|n| n as u32),
        );
        if let Some(a) = answer {
            a.whole(&v);
        }
        // Without usage, a non-empty text is at least one token.
        let choice = &v["choices"][0];
        let text = choice["text"].as_str().or(choice["message"]["content"].as_str()).unwrap_or_default();
        p.counted = u32::from(!text.is_empty());
        p.chunks = 1;
        return Ok(());
    }
    let mut parser = SseParser::with_max_line(MAX_SSE_LINE);
    let (cap, mut events) = (max_events(max_tokens), 0u32);
    while let Some(chunk) =
        resp.chunk().await.map_err(|e| RequestError { kind: ErrorKind::Stream, message: e.to_string() })?
    {
        // One timestamp per network read: every event in it arrived at this instant.
        let now = Instant::now();
        parser.feed(&chunk, |event| {
            events += 1;
            on_event(p, event, now);
        });
        if let Some(a) = answer.as_deref_mut() {
            a.feed(&chunk);
        }
        if parser.overflowed() || p.error.is_some() {
            break; // the error is recorded; nothing after it is read
        }
        if events > cap {
            p.error = Some(RequestError {
                kind: ErrorKind::Stream,
                message: format!("more than {cap} events for {max_tokens} tokens: servelab stopped reading"),
            });
            break;
        }
    }
    Ok(())
}

/// Applies one event of a stream to the response's progress (`now`: when its bytes arrived).
fn on_event(p: &mut Progress, event: Event, now: Instant) {
    match event {
        Event::Content { non_empty, completion_tokens } => {
            let tokens = completion_tokens.map(|n| {
                let k = n.saturating_sub(p.counted);
                p.counted = p.counted.max(n);
                k
            });
            if non_empty && p.first.is_none() {
                p.first = Some(now);
                if let Some(k) = tokens {
                    p.chunk_tokens.push(k + p.before_first);
                }
            } else if let Some(first) = p.first {
                p.chunk_us.push(now.duration_since(first).as_micros().min(u128::from(u32::MAX)) as u32);
                if let Some(k) = tokens
                    && p.chunk_tokens.len() == p.chunk_us.len()
                {
                    p.chunk_tokens.push(k);
                }
            } else {
                p.before_first += tokens.unwrap_or(0);
            }
            p.chunks += 1;
        }
        Event::Usage { prompt_tokens, completion_tokens } => p.usage = (prompt_tokens, completion_tokens),
        Event::Done => p.done = true,
        Event::Overflow => {
            p.error.get_or_insert(RequestError {
                kind: ErrorKind::Stream,
                message: format!("an SSE line longer than {MAX_SSE_LINE} bytes: servelab stopped reading"),
            });
        }
        Event::Error(message) | Event::Invalid(message) => {
            p.error.get_or_insert(RequestError { kind: ErrorKind::Stream, message });
        }
    }
}

#[cfg(test)]
mod tests {
    /// A panicked task is reported with its message, never dropped in silence.
    #[test]
    fn a_panicked_task_is_named_with_its_message() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let e = rt.block_on(async { tokio::spawn(async { panic!("boom {}", 7) }).await.unwrap_err() });
        assert_eq!(super::join_error(e), "a load task panicked: boom 7");
    }
}
