//! A zero-latency OpenAI-compatible endpoint for benchmarking load clients (servelab's own, or
//! `vllm bench serve`): answers `/v1/completions` with vLLM 0.32's exact SSE chunks, one HTTP chunk per
//! event as uvicorn sends them, `max_tokens` tokens per request (default 64), as fast as it can write —
//! or one token every `--itl-us` microseconds, to hold many streams open at once.
//!
//!   servelab-zero-endpoint --port 18500 [--itl-us 0] [--threads 1]
//!
//! It is also the fake engine of the executor's tests (a `kind: command` engine, seconds instead of minutes
//! per server), with faults on request:
//!   --fail-start        print a vLLM-style error line and exit 1 before listening (a server that cannot start)
//!   --never-ready       /health answers 503 forever
//!   --die-after N       exit 1 once N completions have been answered (a server that dies under load)
//!   --child             start a `sleep` child in its process group (stopping must end the whole group)
//!   --ignore-term       ignore SIGTERM (stopping must escalate to SIGKILL)
//!   --http-500          answer every completion with HTTP 500 (every request fails)
//!   --capacity N        stream at most N completions at once, queueing the rest (a server with a limit)
//!   --endless-line      stream one SSE line that never ends (a client must bound what it buffers)
//!   --endless-error     answer HTTP 500 with a body that never ends
//!   --endless-stream    stream valid completion events without end, never [DONE] (a client must stop reading)
//!   --garbage           stream `data:` lines that are not JSON, then [DONE] (garbage is no completion)
//!   --no-tokens         stream completion events with empty text and usage of 0 tokens, then [DONE]
//!   --start-delay-ms N  wait N ms before listening (a start that takes time)
//!   --ttft-us N         wait N µs before a completion's first token (a prefill that takes time)
//!   --record-bodies F   append each completion and chat request's body to F, one line each, in the order
//!                       they arrive (a test checks the prompts a client sent)
//!
//! A chat answer's first token is ` x` and the FNV-1a hash of the request's body in hex, then ` w1`, ` w2`, ...:
//! an answer no client can guess without reading it, so a test can tell that a session resent the real one.
//!   --version-file F    answer /version with the first line of F, read at start (default "zero"): a test
//!                       upgrades "vLLM" between a run and its resume without changing the command line
//!
//! Single-threaded on purpose (pin it to a core of its own); `--threads N` runs N such loops on one port.
#![warn(clippy::too_many_lines)]

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MODEL: &str = "zero";

/// Faults read once at start (the request path must stay as fast as the client benchmark needs).
static DIE_AFTER: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
static NEVER_READY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
static HTTP_500: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
/// `--capacity N`: at most N completions stream at once; the rest wait their turn, as in a server that is full.
static CAPACITY: std::sync::OnceLock<Option<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
static ENDLESS: std::sync::OnceLock<Option<&'static str>> = std::sync::OnceLock::new();
static TTFT: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
/// `--record-bodies`: where completion bodies are appended.
static BODIES: std::sync::OnceLock<Option<std::sync::Mutex<std::fs::File>>> = std::sync::OnceLock::new();
/// The `/version` body.
static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// A chunked response whose body never ends: `prefix` first, then `x` until the client goes away.
async fn endless(stream: &mut TcpStream, status: &str, prefix: &[u8]) -> std::io::Result<()> {
    let head = format!("HTTP/1.1 {status}\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    let mut first = Vec::new();
    chunk(&mut first, prefix);
    stream.write_all(&first).await?;
    let mut block = Vec::new();
    chunk(&mut block, &[b'x'; 65536]);
    loop {
        stream.write_all(&block).await?;
    }
}

/// Valid completion events, one token each, for ever (until the client goes away).
async fn endless_events(stream: &mut TcpStream) -> std::io::Result<()> {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
    stream.write_all(head.as_bytes()).await?;
    let mut block = Vec::new();
    for i in 0..256u64 {
        token_chunk(&mut block, b"cmpl-endless", 1, i, false, Some(8));
    }
    loop {
        stream.write_all(&block).await?;
    }
}

fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn number_after(body: &[u8], key: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(body, key)? + key.len();
    let rest = &body[at..];
    let start = rest.iter().position(|c| c.is_ascii_digit())?;
    let len = rest[start..].iter().take_while(|c| c.is_ascii_digit()).count();
    std::str::from_utf8(&rest[start..start + len]).ok()?.parse().ok()
}

fn chunk(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(format!("{:x}\r\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal at the end of `buf`: the digits, without allocating (a u64 has at most 20).
fn decimal(buf: &mut [u8; 20], mut n: u64) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// `n` in lowercase hexadecimal at the end of `buf` (a u64 has at most 16 digits).
fn hex(buf: &mut [u8; 16], mut n: u64) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b"0123456789abcdef"[(n % 16) as usize];
        n /= 16;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// Appends one token's HTTP chunk (`{len:x}\r\n` + the SSE event + `\r\n`) without allocating.
/// With `usage` (continuous_usage_stats), the chunk carries the running counts as vLLM sends them.
fn token_chunk(out: &mut Vec<u8>, id: &[u8], created: u64, i: u64, last: bool, usage: Option<u64>) {
    let finish: &[u8] = if last { b"\"length\"" } else { b"null" };
    let (mut digits, mut created_digits) = ([0u8; 20], [0u8; 20]);
    let (mut prompt_digits, mut total_digits, mut completion_digits) = ([0u8; 20], [0u8; 20], [0u8; 20]);
    let usage_parts: [&[u8]; 7] = match usage {
        Some(prompt) => [
            b",\"usage\":{\"prompt_tokens\":",
            decimal(&mut prompt_digits, prompt),
            b",\"total_tokens\":",
            decimal(&mut total_digits, prompt + i + 1),
            b",\"completion_tokens\":",
            decimal(&mut completion_digits, i + 1),
            b"}",
        ],
        None => [b""; 7],
    };
    let [u0, u1, u2, u3, u4, u5, u6] = usage_parts;
    let parts: [&[u8]; 17] = [
        b"data: {\"id\":\"",
        id,
        b"\",\"object\":\"text_completion\",\"created\":",
        decimal(&mut created_digits, created),
        b",\"model\":\"zero\",\"choices\":[{\"index\":0,\"text\":\" w",
        decimal(&mut digits, i),
        b"\",\"logprobs\":null,\"finish_reason\":",
        finish,
        b",\"stop_reason\":null,\"prompt_token_ids\":null,\"token_ids\":null}]",
        u0,
        u1,
        u2,
        u3,
        u4,
        u5,
        u6,
        b"}\n\n",
    ];
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut len_digits = [0u8; 16];
    out.extend_from_slice(hex(&mut len_digits, len as u64));
    out.extend_from_slice(b"\r\n");
    for p in parts {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(b"\r\n");
}

fn usage_event(id: &str, created: u64, prompt: u64, n: u64) -> Vec<u8> {
    format!("data: {{\"id\":\"{id}\",\"object\":\"text_completion\",\"created\":{created},\"model\":\"{MODEL}\",\"choices\":[],\"usage\":{{\"prompt_tokens\":{prompt},\"total_tokens\":{},\"completion_tokens\":{n}}},\"system_fingerprint\":\"vllm-0.32.0-zero\"}}\n\n", prompt + n).into_bytes()
}

fn simple(status: &str, ctype: &str, body: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

async fn completion(stream: &mut TcpStream, body: &[u8], seq: u64, itl: Duration) -> std::io::Result<()> {
    let n = number_after(body, b"\"max_tokens\"").unwrap_or(64);
    let prompt = memchr::memchr_iter(b',', body).count() as u64; // rough: ids in a token-id prompt
    let id = format!("cmpl-{seq:016x}");
    let created = 1_795_880_327;
    let streaming = memchr::memmem::find(body, b"\"stream\":true").is_some()
        || memchr::memmem::find(body, b"\"stream\": true").is_some();
    if let Some(ttft) = TTFT.get().filter(|t| !t.is_zero()) {
        tokio::time::sleep(*ttft).await;
    }
    if !streaming {
        let text: String = (0..n).map(|i| format!(" w{i}")).collect();
        let json = format!(
            "{{\"id\":\"{id}\",\"object\":\"text_completion\",\"created\":{created},\"model\":\"{MODEL}\",\"choices\":[{{\"index\":0,\"text\":\"{text}\",\"finish_reason\":\"length\"}}],\"usage\":{{\"prompt_tokens\":{prompt},\"total_tokens\":{},\"completion_tokens\":{n}}}}}",
            prompt + n
        );
        return stream.write_all(&simple("200 OK", "application/json", &json)).await;
    }
    let mut out = Vec::with_capacity(256 * (n as usize + 2));
    out.extend_from_slice(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n",
    );
    let continuous = memchr::memmem::find(body, b"\"continuous_usage_stats\":true").is_some();
    for i in 0..n {
        token_chunk(&mut out, id.as_bytes(), created, i, i + 1 == n, continuous.then_some(prompt));
        // Like a real server, the first token leaves as soon as it exists; later ones follow in one write
        // (or one per interval when pacing).
        if i == 0 || !itl.is_zero() {
            stream.write_all(&out).await?;
            out.clear();
            if !itl.is_zero() {
                tokio::time::sleep(itl).await;
            }
        }
    }
    chunk(&mut out, &usage_event(&id, created, prompt, n));
    chunk(&mut out, b"data: [DONE]\n\n");
    out.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&out).await
}

/// `/v1/chat/completions` as vLLM streams it: a role-only first chunk (`"delta":{"role":"assistant",
/// "content":""}`), one chunk per token in `delta.content`, a usage chunk, `[DONE]`. Not on the benchmark's
/// hot path, so written plainly.
async fn chat_completion(stream: &mut TcpStream, body: &[u8], seq: u64, itl: Duration) -> std::io::Result<()> {
    let n = number_after(body, b"\"max_tokens\"").unwrap_or(64);
    // Rough: words of the messages' text (the template's own tokens are the server's business).
    let prompt = memchr::memchr_iter(b' ', body).count() as u64;
    let id = format!("chatcmpl-{seq:016x}");
    let created = 1_795_880_327;
    let continuous = memchr::memmem::find(body, b"\"continuous_usage_stats\":true").is_some();
    let usage = |k: u64| {
        if continuous {
            format!(
                ",\"usage\":{{\"prompt_tokens\":{prompt},\"total_tokens\":{},\"completion_tokens\":{k}}}",
                prompt + k
            )
        } else {
            String::new()
        }
    };
    let event = |delta: &str, finish: &str, k: u64| {
        format!(
            "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":{created},\"model\":\"{MODEL}\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}]{}}}\n\n",
            usage(k)
        )
    };
    let mut out = Vec::new();
    out.extend_from_slice(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n",
    );
    chunk(&mut out, event("{\"role\":\"assistant\",\"content\":\"\"}", "null", 0).as_bytes());
    let hash = body.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    for i in 0..n {
        let finish = if i + 1 == n { "\"length\"" } else { "null" };
        let token = if i == 0 { format!(" x{hash:016x}") } else { format!(" w{i}") };
        chunk(&mut out, event(&format!("{{\"content\":\"{token}\"}}"), finish, i + 1).as_bytes());
        stream.write_all(&out).await?;
        out.clear();
        if !itl.is_zero() {
            tokio::time::sleep(itl).await;
        }
    }
    let final_usage = format!(
        "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":{created},\"model\":\"{MODEL}\",\"choices\":[],\"usage\":{{\"prompt_tokens\":{prompt},\"total_tokens\":{},\"completion_tokens\":{n}}}}}\n\n",
        prompt + n
    );
    chunk(&mut out, final_usage.as_bytes());
    chunk(&mut out, b"data: [DONE]\n\n");
    out.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&out).await
}

/// `--record-bodies`: appends a request's body as one line.
fn record_body(body: &[u8]) {
    if let Some(file) = BODIES.get().and_then(Option::as_ref) {
        use std::io::Write;
        let mut f = file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = f.write_all(body).and_then(|()| f.write_all(b"\n")) {
            eprintln!("ERROR servelab-zero-endpoint: cannot record a body (--record-bodies): {e}");
        }
    }
}

#[allow(
    clippy::too_many_lines,
    reason = "one match over the endpoint's routes and fault flags, each arm a few lines; split it when a route grows"
)]
async fn serve(mut stream: TcpStream, itl: Duration, seq: std::rc::Rc<std::cell::Cell<u64>>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(8192);
    loop {
        let head_end = loop {
            if let Some(at) = memchr::memmem::find(&buf, b"\r\n\r\n") {
                break at + 4;
            }
            let mut tmp = [0u8; 8192];
            let n = stream.read(&mut tmp).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
        };
        let raw_head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let head = raw_head.to_ascii_lowercase();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut tmp = [0u8; 8192];
            let n = stream.read(&mut tmp).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
        }
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        match path.as_str() {
            "/v1/completions" if ENDLESS.get().copied().flatten() == Some("line") => {
                return endless(&mut stream, "200 OK", b"data: {\"id\":\"").await;
            }
            "/v1/completions" if ENDLESS.get().copied().flatten() == Some("error") => {
                return endless(&mut stream, "500 Internal Server Error", b"{\"error\":").await;
            }
            "/v1/completions" if ENDLESS.get().copied().flatten() == Some("stream") => {
                return endless_events(&mut stream).await;
            }
            "/v1/completions" if matches!(ENDLESS.get().copied().flatten(), Some("garbage" | "no-tokens")) => {
                let garbage = ENDLESS.get().copied().flatten() == Some("garbage");
                let mut out = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
                for i in 0..8 {
                    let event = if garbage {
                        format!("data: garbage {i} <html>\n\n")
                    } else {
                        format!("data: {{\"id\":\"cmpl-0\",\"object\":\"text_completion\",\"choices\":[{{\"index\":0,\"text\":\"\"}}],\"usage\":{{\"prompt_tokens\":{i},\"completion_tokens\":0}}}}\n\n")
                    };
                    chunk(&mut out, event.as_bytes());
                }
                chunk(&mut out, b"data: [DONE]\n\n");
                out.extend_from_slice(b"0\r\n\r\n");
                stream.write_all(&out).await?;
            }
            "/v1/completions" if HTTP_500.get().copied().unwrap_or(false) => {
                // Like a careless server, it echoes the request's Authorization header, in its log and its answer.
                let auth = raw_head.lines().find(|l| l.to_ascii_lowercase().starts_with("authorization:")).unwrap_or("");
                eprintln!("WARNING servelab-zero-endpoint: failing a request with {auth}");
                let message = serde_json::to_string(&format!("fake engine failure (--http-500); {auth}")).unwrap_or_default();
                let body = format!("{{\"error\":{{\"message\":{message}}}}}");
                stream.write_all(&simple("500 Internal Server Error", "application/json", &body)).await?
            }
            "/v1/chat/completions" => {
                seq.set(seq.get() + 1);
                record_body(&body);
                chat_completion(&mut stream, &body, seq.get(), itl).await?;
            }
            "/v1/completions" => {
                seq.set(seq.get() + 1);
                record_body(&body);
                let _slot = match CAPACITY.get().and_then(Option::as_ref) {
                    Some(s) => s.acquire().await.ok(),
                    None => None,
                };
                completion(&mut stream, &body, seq.get(), itl).await?;
                let die_after = DIE_AFTER.get().copied().unwrap_or(0);
                if die_after > 0 && seq.get() >= die_after {
                    eprintln!("ERROR servelab-zero-endpoint: RuntimeError: engine died after {die_after} requests (--die-after)");
                    std::process::exit(1);
                }
            }
            "/v1/models" if ENDLESS.get().copied().flatten() == Some("models") => {
                return endless(&mut stream, "200 OK", b"{\"object\":\"list\",\"data\":[{\"id\":\"").await;
            }
            "/v1/models" => stream.write_all(&simple("200 OK", "application/json", &format!("{{\"object\":\"list\",\"data\":[{{\"id\":\"{MODEL}\",\"object\":\"model\",\"max_model_len\":8192}}]}}"))).await?,
            "/health" if NEVER_READY.get().copied().unwrap_or(false) => {
                stream.write_all(&simple("503 Service Unavailable", "text/plain", "")).await?
            }
            "/health" => stream.write_all(&simple("200 OK", "text/plain", "")).await?,
            "/version" => {
                let version = VERSION.get().map_or("zero", String::as_str);
                let body = serde_json::json!({ "version": version }).to_string();
                stream.write_all(&simple("200 OK", "application/json", &body)).await?
            }
            "/metrics" => stream.write_all(&simple("200 OK", "text/plain", "vllm:num_requests_running 0\nvllm:num_requests_waiting 0\n")).await?,
            _ => stream.write_all(&simple("404 Not Found", "text/plain", "not found")).await?,
        }
    }
}

fn main() -> std::io::Result<()> {
    if flag("--fail-start") {
        eprintln!("ERROR servelab-zero-endpoint: ValueError: fake engine refused to start (--fail-start)");
        std::process::exit(1);
    }
    if flag("--ignore-term") {
        // SAFETY: installing SIG_IGN runs no handler code.
        unsafe { nix::sys::signal::signal(nix::sys::signal::Signal::SIGTERM, nix::sys::signal::SigHandler::SigIgn) }
            .map_err(std::io::Error::other)?;
    }
    let port = arg("--port", 18500) as u16;
    // A server whose start takes time (vLLM's takes a minute): slots are tested on starts that overlap.
    std::thread::sleep(Duration::from_millis(arg("--start-delay-ms", 0)));
    // Kept alive for the endpoint's life: its own process, in the endpoint's process group. Its argument names
    // the port, so a test finds it among other tests' processes.
    let sleep = |secs: &str| format!("{secs}.{port}");
    let _child = flag("--child").then(|| std::process::Command::new("sleep").arg(sleep("600")).spawn()).transpose()?;
    if flag("--endless-log") {
        // A server that logs without end, as fast as its output is taken.
        std::thread::spawn(|| {
            use std::io::Write;
            let line = "INFO servelab-zero-endpoint: a very chatty server logs this line again and again\n".repeat(64);
            // Locked per write, so the endpoint's own lines still get through.
            while std::io::stderr().write_all(line.as_bytes()).is_ok() {}
        });
    }
    if flag("--escape") {
        // A descendant that leaves: a new session (setsid), and its parent (sh) exits at once, so it is an orphan
        // in no group of the server's — what a daemonising helper does.
        let line = format!("setsid sleep {} </dev/null >/dev/null 2>&1 &", sleep("601"));
        std::process::Command::new("sh").args(["-c", &line]).status()?;
    }
    let args: Vec<String> = std::env::args().collect();
    if let Some(file) = args.iter().position(|a| a == "--version-file").and_then(|i| args.get(i + 1)) {
        let text = std::fs::read_to_string(file)?;
        VERSION.get_or_init(|| text.lines().next().unwrap_or("").trim().to_owned());
    }
    let bodies = args.iter().position(|a| a == "--record-bodies").and_then(|i| args.get(i + 1));
    let bodies = bodies.map(|f| std::fs::OpenOptions::new().create(true).append(true).open(f)).transpose()?;
    BODIES.get_or_init(|| bodies.map(std::sync::Mutex::new));
    DIE_AFTER.get_or_init(|| arg("--die-after", 0));
    NEVER_READY.get_or_init(|| flag("--never-ready"));
    HTTP_500.get_or_init(|| flag("--http-500"));
    let capacity = arg("--capacity", 0) as usize;
    CAPACITY.get_or_init(|| (capacity > 0).then(|| tokio::sync::Semaphore::new(capacity)));
    ENDLESS.get_or_init(|| {
        if flag("--endless-line") {
            Some("line")
        } else if flag("--endless-error") {
            Some("error")
        } else if flag("--endless-models") {
            Some("models")
        } else if flag("--endless-stream") {
            Some("stream")
        } else if flag("--garbage") {
            Some("garbage")
        } else if flag("--no-tokens") {
            Some("no-tokens")
        } else {
            None
        }
    });
    let itl = Duration::from_micros(arg("--itl-us", 0));
    TTFT.get_or_init(|| Duration::from_micros(arg("--ttft-us", 0)));
    // --threads N: N single-threaded loops on one port (SO_REUSEPORT), so that a benchmark's endpoint is not
    // the bottleneck on several cores; each loop counts its own completions (--die-after is per loop).
    let threads = arg("--threads", 1).max(1);
    let extra: Vec<_> = (1..threads).map(|_| std::thread::spawn(move || serve_port(port, itl, threads > 1))).collect();
    let main = serve_port(port, itl, threads > 1);
    drop(extra);
    main
}

/// One single-threaded accept-and-serve loop on `port`.
fn serve_port(port: u16, itl: Duration, reuse_port: bool) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(reuse_port)?;
        socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1], port)))?;
        let listener = socket.listen(4096)?;
        eprintln!("servelab-zero-endpoint: listening on 127.0.0.1:{port}, token interval {} µs", itl.as_micros());
        let seq = std::rc::Rc::new(std::cell::Cell::new(0u64));
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::task::spawn_local(serve(stream, itl, seq.clone()));
        }
    })
}
