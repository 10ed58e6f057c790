//! Request trace files (`load.trace`): read once while streaming, in bounded memory (one line at a time plus the
//! replayed window), every line checked so a bad one is an error naming it before any server starts.
//!
//! Prompts are token ids built so that prefix sharing is exact by construction: a trace's `hash_ids` name
//! blocks of [`TRACE_BLOCK`] tokens, and two requests with equal leading ids must share exactly those blocks
//! and nothing more. Each block's tokens after the first are seeded by its id; its first token is its rank
//! among the distinct blocks that follow the same prefix in the window (a trie of the window's id paths), so
//! blocks after a common prefix differ from their first token on. A shorter last block is the start of the
//! same seeded block, so two requests whose ids are equal share min(length) tokens of it.

use super::trace::{PrefixBound, TraceFormat, WindowFound};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// Tokens per `hash_ids` block (the Mooncake trace's).
pub const TRACE_BLOCK: u32 = 512;
/// vLLM's default KV block size on GPUs (its CPU backend's is 128).
pub const VLLM_BLOCK: u32 = 16;
/// The KV block sizes the prefix-cache bound is counted at: a report picks the server's own.
pub const BLOCK_SIZES: [u32; 5] = [16, 32, 64, 128, 256];
/// A line longer than this is an error naming it (the longest Mooncake line is a few KiB).
const MAX_LINE: usize = 1 << 20;
/// Decompressed traces longer than this are refused (the Mooncake conversation trace is 3.6 MB).
const MAX_BYTES: u64 = 8 << 30;
/// Prompt or output lengths above this are not a request of any model.
const MAX_LEN: u64 = 10_000_000;
/// Block ids given to a request's tokens beyond its `hash_ids` (or to every block of a trace without them)
/// start here, above any id of a real trace: they are the request's own.
const OWN_IDS: u64 = 1 << 62;

/// A trace that cannot be replayed, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(
        "cannot read trace {path}: {source}; give a path relative to the directory servelab runs in, or an absolute one"
    )]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("trace {path}, line {line}: {why}; {fix}")]
    Line { path: String, line: u64, why: String, fix: String },
    #[error("trace {path} holds no request; give a trace with at least one line")]
    Empty { path: String },
    #[error(
        "trace {path}: the window from {start_s} s{end} holds no request (the trace's requests span {span_s:.1} s from its first timestamp); choose `start` and `duration` inside that span"
    )]
    EmptyWindow { path: String, start_s: f64, end: String, span_s: f64 },
    #[error(
        "trace {path} is longer than {} GiB decompressed; cut a window of it first (e.g. `head -n 100000`)",
        MAX_BYTES >> 30
    )]
    TooLarge { path: String },
}

/// Which requests of a trace are replayed and how long they may be. Recorded in the plan as part of
/// [`super::trace::TracePlan`] under the keys `start_s`, `duration_s`, `max_input_tokens` and
/// `max_output_tokens` (the last three left out when unset), which point ids hash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Select {
    /// Trace seconds from its first timestamp.
    pub start_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    #[serde(rename = "max_input_tokens", default, skip_serializing_if = "Option::is_none")]
    pub max_input: Option<u32>,
    #[serde(rename = "max_output_tokens", default, skip_serializing_if = "Option::is_none")]
    pub max_output: Option<u32>,
}

/// One block of a replayed prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// The trace's hash id, or one of the request's own (≥ 2^62).
    pub id: u64,
    /// Its rank among the distinct blocks following the same prefix in the window: its first token.
    pub rank: u32,
}

/// One replayed request, lengths after caps.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Trace seconds from the window's first arrival (before `speedup`).
    pub at_s: f64,
    pub input: u32,
    pub output: u32,
    pub blocks: Vec<Block>,
}

/// The replayed window of a trace and what reading it found.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    pub requests: Vec<Request>,
    /// SHA-256 of the decompressed content, first 12 hex digits: the trace's identity.
    pub content: String,
    /// Requests in the whole file.
    pub lines: u64,
    /// The span, the caps applied and the bounds at each of [`BLOCK_SIZES`], as the plan records them.
    pub found: WindowFound,
    /// The most distinct blocks following one prefix: above the vocabulary's ids, two of them share a first
    /// token (and prefixes one token more than the ids say, well below a KV block).
    pub max_rank: u32,
}

/// One parsed line.
struct Line {
    t_s: f64,
    input: u64,
    output: u64,
    ids: Vec<u64>,
}

/// Reads and checks a whole trace, keeping the requests of the selected window.
pub fn read(path: &Path, format: TraceFormat, select: &Select) -> Result<Window, TraceError> {
    let name = path.display().to_string();
    let open = |source| TraceError::Open { path: name.clone(), source };
    let file = std::fs::File::open(path).map_err(open)?;
    let mut raw = BufReader::with_capacity(1 << 16, file);
    let magic = raw.fill_buf().map_err(open)?.get(..6).map(<[u8]>::to_vec).unwrap_or_default();
    let plain: Box<dyn Read> = if magic.starts_with(&[0xFD, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(raw))
    } else if magic.starts_with(&[0x1F, 0x8B]) {
        Box::new(flate2::read::MultiGzDecoder::new(raw))
    } else {
        Box::new(raw)
    };
    let mut hashing = Hashing { inner: plain.take(MAX_BYTES + 1), sha: Sha256::new(), bytes: 0 };
    let mut window = Builder::new(select);
    scan(&mut BufReader::with_capacity(1 << 20, &mut hashing), format, &name, &mut window)?;
    if hashing.bytes > MAX_BYTES {
        return Err(TraceError::TooLarge { path: name });
    }
    let content = hashing.sha.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect();
    window.finish(name, content)
}

/// [`read`], once per process for each file state and selection: a run plans every grid point and then
/// replays it, and a trace of 100 MB is read once rather than once per point.
pub fn read_shared(path: &Path, format: TraceFormat, select: &Select) -> Result<std::sync::Arc<Window>, TraceError> {
    use std::sync::{Arc, LazyLock, Mutex};
    type Memo = LazyLock<Mutex<HashMap<String, Arc<Window>>>>;
    static MEMO: Memo = LazyLock::new(Default::default);
    // A file changed in between (same path, another size or time) is read again.
    let stamp = std::fs::metadata(path).ok().map(|m| (m.len(), m.modified().ok()));
    let key = format!("{}\0{format:?}\0{select:?}\0{stamp:?}", path.display());
    if let Some(w) = MEMO.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key) {
        return Ok(w.clone());
    }
    let w = Arc::new(read(path, format, select)?);
    MEMO.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, w.clone());
    Ok(w)
}

/// Hashes what is read through it.
struct Hashing<R> {
    inner: R,
    sha: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Every line of the file, in order: parsed, checked, offered to the window.
fn scan(reader: &mut impl BufRead, format: TraceFormat, name: &str, out: &mut Builder) -> Result<(), TraceError> {
    let (mut buf, mut n, mut prev) = (Vec::new(), 0u64, None::<f64>);
    let mut csv: Option<csv_line::Columns> = None;
    let bad = |line, why: String, fix: &str| TraceError::Line { path: name.to_owned(), line, why, fix: fix.into() };
    loop {
        buf.clear();
        n += 1;
        let read = reader.take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf);
        let read = read.map_err(|e| bad(n, format!("cannot be read: {e}"), "check that the file is complete"))?;
        if read == 0 {
            return Ok(());
        }
        if buf.len() > MAX_LINE {
            let fix = "a trace has one request per line; check that this is a trace file of the format given";
            return Err(bad(n, format!("is longer than {} MiB", MAX_LINE >> 20), fix));
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let line = match format {
            TraceFormat::Mooncake => mooncake(&buf).map_err(|(why, fix)| bad(n, why, fix))?,
            TraceFormat::AzureCsv => match &csv {
                None => {
                    csv = Some(csv_line::header(&buf).map_err(|(why, fix)| bad(n, why, fix))?);
                    continue;
                }
                Some(cols) => cols.parse(&buf).map_err(|(why, fix)| bad(n, why, fix))?,
            },
        };
        if let Some(p) = prev.filter(|p| line.t_s < *p) {
            let why = format!("its timestamp goes back in time ({} s, after {} s on an earlier line)", line.t_s, p);
            return Err(bad(n, why, "a trace must be in arrival order: sort it by timestamp"));
        }
        prev = Some(line.t_s);
        out.offer(line);
    }
}

#[derive(serde::Deserialize)]
struct MooncakeLine {
    timestamp: f64,
    input_length: u64,
    output_length: u64,
    hash_ids: Vec<u64>,
}

const MOONCAKE_SHAPE: &str = "each line must be {\"timestamp\": MS, \"input_length\": N, \"output_length\": N, \"hash_ids\": [ID, ...]} (format: mooncake)";

fn mooncake(buf: &[u8]) -> Result<Line, (String, &'static str)> {
    let l: MooncakeLine = serde_json::from_slice(buf).map_err(|e| {
        // serde's own position counts lines of this one line; the column is what it adds here.
        let text = e.to_string();
        let what = text.rsplit_once(" at line ").map_or(text.as_str(), |(what, _)| what);
        (format!("{what} (column {})", e.column()), MOONCAKE_SHAPE)
    })?;
    let line = Line { t_s: l.timestamp / 1e3, input: l.input_length, output: l.output_length, ids: l.hash_ids };
    checked(line, "timestamp", "input_length", "output_length")
}

/// Lengths of 1 to [`MAX_LEN`] and a finite, non-negative time.
fn checked(line: Line, t: &str, input: &str, output: &str) -> Result<Line, (String, &'static str)> {
    if !(line.t_s.is_finite() && line.t_s >= 0.0) {
        return Err((format!("`{t}` must be 0 or more"), "give times from the trace's start"));
    }
    for (name, v) in [(input, line.input), (output, line.output)] {
        if !(1..=MAX_LEN).contains(&v) {
            return Err((format!("`{name}` is {v}"), "a request needs 1 to 10,000,000 tokens of prompt and of output"));
        }
    }
    Ok(line)
}

/// The Azure LLM inference trace's CSV: columns found by name in the header, no quoting inside fields.
mod csv_line {
    use super::Line;

    pub struct Columns {
        at: usize,
        input: usize,
        output: usize,
        /// The first line's time, the origin of every other.
        first: std::cell::Cell<Option<f64>>,
    }

    const HEADER: &str =
        "the first line must be the header, naming TIMESTAMP, ContextTokens and GeneratedTokens (format: azure_csv)";

    fn fields(buf: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(buf).trim().split(',').map(|f| f.trim().trim_matches('"').to_owned()).collect()
    }

    pub fn header(buf: &[u8]) -> Result<Columns, (String, &'static str)> {
        let f = fields(buf);
        let find = |name: &str| {
            f.iter().position(|x| x.eq_ignore_ascii_case(name)).ok_or_else(|| (format!("no column `{name}`"), HEADER))
        };
        Ok(Columns {
            at: find("TIMESTAMP")?,
            input: find("ContextTokens")?,
            output: find("GeneratedTokens")?,
            first: None.into(),
        })
    }

    impl Columns {
        pub fn parse(&self, buf: &[u8]) -> Result<Line, (String, &'static str)> {
            const SHAPE: &str = "each line must be TIMESTAMP,ContextTokens,GeneratedTokens in the header's order, e.g. `2023-11-16 18:15:46.6805900,374,44`";
            let f = fields(buf);
            let get = |i: usize, name: &str| f.get(i).ok_or_else(|| (format!("no `{name}` field"), SHAPE));
            let stamp = get(self.at, "TIMESTAMP")?;
            let t = chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S%.f")
                .map_err(|e| (format!("`TIMESTAMP` {stamp:?} is not a datetime ({e})"), SHAPE))?;
            let t = t.and_utc().timestamp_micros() as f64 / 1e6;
            let first = self.first.get().unwrap_or(t);
            self.first.set(Some(first));
            let int = |i: usize, name: &str| {
                let v = get(i, name)?;
                v.parse::<u64>().map_err(|_| (format!("`{name}` {v:?} is not a whole number"), SHAPE))
            };
            let line = Line {
                t_s: t - first,
                input: int(self.input, "ContextTokens")?,
                output: int(self.output, "GeneratedTokens")?,
                ids: Vec::new(),
            };
            if line.t_s < 0.0 {
                return Err((
                    format!("its TIMESTAMP {stamp} goes back before the first line's"),
                    "a trace must be in arrival order: sort it by TIMESTAMP",
                ));
            }
            super::checked(line, "TIMESTAMP", "ContextTokens", "GeneratedTokens")
        }
    }
}

/// The window as it is read: the selected requests, capped, their blocks ranked, the bounds counted.
struct Builder {
    select: Select,
    first_s: Option<f64>,
    last_s: f64,
    window_first: Option<f64>,
    lines: u64,
    requests: Vec<Request>,
    capped_input: u32,
    capped_output: u32,
    input_uncapped: u64,
    capped: Trie,
    uncapped: Trie,
    own: u64,
}

impl Builder {
    fn new(select: &Select) -> Self {
        Builder {
            select: *select,
            first_s: None,
            last_s: 0.0,
            window_first: None,
            lines: 0,
            requests: Vec::new(),
            capped_input: 0,
            capped_output: 0,
            input_uncapped: 0,
            capped: Trie::default(),
            uncapped: Trie::default(),
            own: OWN_IDS,
        }
    }

    fn offer(&mut self, mut line: Line) {
        self.lines += 1;
        let first = *self.first_s.get_or_insert(line.t_s);
        let t = line.t_s - first;
        self.last_s = t;
        let s = &self.select;
        if t < s.start_s || s.duration_s.is_some_and(|d| t >= s.start_s + d) {
            return;
        }
        let window_first = *self.window_first.get_or_insert(t);
        // Every token belongs to a block: ids beyond the prompt are dropped, tokens beyond the ids get the
        // request's own blocks.
        let blocks = line.input.div_ceil(u64::from(TRACE_BLOCK)) as usize;
        line.ids.truncate(blocks);
        while line.ids.len() < blocks {
            line.ids.push(self.own);
            self.own += 1;
        }
        let input = line.input as u32;
        self.input_uncapped += line.input;
        self.uncapped.add(&line.ids, input);
        let cap_in = s.max_input.unwrap_or(u32::MAX).max(1);
        let cap_out = s.max_output.unwrap_or(u32::MAX).max(1);
        self.capped_input += u32::from(input > cap_in);
        self.capped_output += u32::from(line.output > u64::from(cap_out));
        let input = input.min(cap_in);
        line.ids.truncate(input.div_ceil(TRACE_BLOCK) as usize);
        let ranks = self.capped.add(&line.ids, input);
        let blocks = line.ids.iter().zip(ranks).map(|(&id, rank)| Block { id, rank }).collect();
        let output = (line.output as u32).min(cap_out);
        self.requests.push(Request { at_s: t - window_first, input, output, blocks });
    }

    fn finish(self, path: String, content: String) -> Result<Window, TraceError> {
        if self.lines == 0 {
            return Err(TraceError::Empty { path });
        }
        if self.requests.is_empty() {
            let s = self.select;
            let end = s.duration_s.map_or_else(String::new, |d| format!(" to {} s", s.start_s + d));
            return Err(TraceError::EmptyWindow { path, start_s: s.start_s, end, span_s: self.last_s });
        }
        let span_s = self.requests.last().map_or(0.0, |r| r.at_s);
        Ok(Window {
            content,
            lines: self.lines,
            found: WindowFound {
                span_s,
                capped_input: self.capped_input,
                capped_output: self.capped_output,
                input_tokens_uncapped: self.input_uncapped,
                bounds: self.capped.bounds(),
                bounds_uncapped: self.uncapped.bounds(),
            },
            max_rank: self.capped.ranks.iter().copied().max().unwrap_or(0),
            requests: self.requests,
        })
    }
}

/// The window's id paths: each node a block following a prefix, with its rank among its siblings and the most
/// tokens of it any request so far had. Counts the prefix-cache bound as requests are added in order.
#[derive(Default)]
struct Trie {
    nodes: HashMap<(u32, u64), u32>,
    /// Per node (node 0 is the empty prefix): its rank, its children so far, its longest use so far.
    ranks: Vec<u32>,
    children: Vec<u32>,
    covered: Vec<u32>,
    hit: [u64; BLOCK_SIZES.len()],
    total: u64,
}

impl Trie {
    /// Adds a request of `input` tokens whose blocks are `ids`; returns each block's rank.
    fn add(&mut self, ids: &[u64], input: u32) -> Vec<u32> {
        if self.children.is_empty() {
            (self.ranks, self.children, self.covered) = (vec![0], vec![0], vec![0]);
        }
        let (mut parent, mut shared, mut matching) = (0u32, 0u64, true);
        let mut ranks = Vec::with_capacity(ids.len());
        for (i, &id) in ids.iter().enumerate() {
            let len = input.saturating_sub(i as u32 * TRACE_BLOCK).min(TRACE_BLOCK);
            let next = self.ranks.len() as u32;
            let node = *self.nodes.entry((parent, id)).or_insert(next);
            if node == next {
                self.ranks.push(self.children[parent as usize]);
                self.children[parent as usize] += 1;
                self.children.push(0);
                self.covered.push(0);
            }
            let seen = self.covered[node as usize];
            if matching {
                shared += u64::from(seen.min(len));
                matching = seen >= len;
            }
            self.covered[node as usize] = seen.max(len);
            ranks.push(self.ranks[node as usize]);
            parent = node;
        }
        // vLLM computes at least a prompt's last token, and caches whole blocks only.
        let usable = shared.min(u64::from(input.saturating_sub(1)));
        for (hit, b) in self.hit.iter_mut().zip(BLOCK_SIZES) {
            *hit += usable / u64::from(b) * u64::from(b);
        }
        self.total += u64::from(input);
        ranks
    }

    fn bounds(&self) -> Vec<PrefixBound> {
        let at = |(b, hit): (u32, &u64)| PrefixBound { block_size: b, hit_tokens: *hit, prompt_tokens: self.total };
        BLOCK_SIZES.into_iter().zip(&self.hit).map(at).collect()
    }
}

impl Window {
    /// Tokens of prefix two requests share by their ids: equal leading blocks, the last of them min(length).
    pub fn shared_by_ids(&self, a: usize, b: usize) -> u32 {
        let (a, b) = (&self.requests[a], &self.requests[b]);
        let mut shared = 0;
        for (i, (x, y)) in a.blocks.iter().zip(&b.blocks).enumerate() {
            if x.id != y.id {
                break;
            }
            let left = |r: &Request| r.input.saturating_sub(i as u32 * TRACE_BLOCK).min(TRACE_BLOCK);
            let (la, lb) = (left(a), left(b));
            shared += la.min(lb);
            if la != lb {
                break;
            }
        }
        shared
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    pub fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    pub fn line(t: u64, input: u32, output: u32, ids: &[u64]) -> String {
        format!(
            "{{\"timestamp\": {t}, \"input_length\": {input}, \"output_length\": {output}, \"hash_ids\": {ids:?}}}\n"
        )
    }

    #[test]
    fn the_bound_counts_whole_vllm_blocks_of_earlier_prefixes() {
        let text =
            [line(0, 1200, 10, &[1, 2, 3]), line(5, 1100, 10, &[1, 2, 4]), line(6, 1030, 10, &[1, 2, 4])].concat();
        let f = file(&text);
        let w = read(f.path(), TraceFormat::Mooncake, &Select::default()).unwrap();
        // 1024 of the second; the third shares 1030 − 1 with the second → 1024 in whole blocks.
        assert_eq!(w.found.bounds[0], PrefixBound { block_size: 16, hit_tokens: 2048, prompt_tokens: 3330 });
        // At vLLM CPU's 128-token blocks: 1024 of the second, 1029 → 1024 of the third.
        assert_eq!(w.found.bounds[3], PrefixBound { block_size: 128, hit_tokens: 2048, prompt_tokens: 3330 });
        let capped =
            read(f.path(), TraceFormat::Mooncake, &Select { max_input: Some(600), ..Select::default() }).unwrap();
        assert_eq!(
            (capped.found.capped_input, capped.found.bounds[0].hit_tokens, capped.found.bounds[0].prompt_tokens),
            (3, 1184, 1800)
        );
        assert_eq!(capped.found.bounds[3].hit_tokens, 1024, "599 → 512 at 128-token blocks, twice");
        assert_eq!(capped.found.bounds_uncapped, w.found.bounds);
    }

    #[test]
    fn the_window_selects_by_time_and_arrivals_start_at_zero() {
        let text: String = (0..10).map(|i| line(i * 1000, 100, 5, &[i])).collect();
        let f = file(&text);
        let s = Select { start_s: 2.0, duration_s: Some(3.0), max_output: Some(3), ..Select::default() };
        let w = read(f.path(), TraceFormat::Mooncake, &s).unwrap();
        assert_eq!(w.requests.iter().map(|r| r.at_s).collect::<Vec<_>>(), [0.0, 1.0, 2.0]);
        assert_eq!((w.lines, w.found.capped_output, w.requests[0].output), (10, 3, 3));
        let none = Select { start_s: 50.0, ..Select::default() };
        let e = read(f.path(), TraceFormat::Mooncake, &none).unwrap_err().to_string();
        assert!(e.contains("holds no request") && e.contains("9.0 s"), "{e}");
    }

    #[test]
    fn compressed_traces_read_as_plain_and_hash_alike() {
        let text: String = (0..50).map(|i| line(i * 10, 600, 5, &[0, i + 1])).collect();
        let plain = file(&text);
        let gz = tempfile::NamedTempFile::new().unwrap();
        let mut enc = flate2::write::GzEncoder::new(gz.reopen().unwrap(), flate2::Compression::fast());
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap();
        let xz = tempfile::NamedTempFile::new().unwrap();
        let mut enc = liblzma::write::XzEncoder::new(xz.reopen().unwrap(), 1);
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap();
        let a = read(plain.path(), TraceFormat::Mooncake, &Select::default()).unwrap();
        for f in [&gz, &xz] {
            assert_eq!(read(f.path(), TraceFormat::Mooncake, &Select::default()).unwrap(), a);
        }
    }

    #[test]
    fn azure_csv_reads_its_documented_header() {
        let f = file(
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n\
             2023-11-16 18:15:50.9951690,396,109\n2023-11-16 18:15:51.2,879,20\n",
        );
        let w = read(f.path(), TraceFormat::AzureCsv, &Select::default()).unwrap();
        let got: Vec<(u32, u32)> = w.requests.iter().map(|r| (r.input, r.output)).collect();
        assert_eq!(got, [(374, 44), (396, 109), (879, 20)]);
        assert!((w.requests[1].at_s - 4.314579).abs() < 1e-6, "{}", w.requests[1].at_s);
        assert!(w.found.bounds.iter().all(|b| b.hit_tokens == 0), "no ids: no sharing");
    }

    fn error_of(text: &str, format: TraceFormat) -> String {
        read(file(text).path(), format, &Select::default()).unwrap_err().to_string()
    }

    #[test]
    fn hostile_traces_are_errors_naming_the_line_and_the_fix() {
        let ok = line(0, 10, 5, &[1]);
        for (text, says) in [
            (format!("{ok}not json at all\n"), "line 2: expected ident (column 2)"),
            (format!("{}{}", line(500, 10, 5, &[1]), line(400, 10, 5, &[2])), "line 2: its timestamp goes back"),
            (
                format!("{ok}{{\"timestamp\": 5, \"input_length\": 3, \"output_length\": 2}}\n"),
                "missing field `hash_ids`",
            ),
            (format!("{ok}{}", line(9, 0, 5, &[1])), "line 2: `input_length` is 0"),
            (String::new(), "holds no request"),
            ("\n \n".to_owned(), "holds no request"),
        ] {
            let e = error_of(&text, TraceFormat::Mooncake);
            assert!(e.contains(says), "{says}: {e}");
        }
        // A 100 MB line is refused after its first MiB: read through a stream, never held.
        let huge = ok.as_bytes().chain(ok.as_bytes()).chain(std::io::repeat(b'x').take(100 << 20));
        let mut b = Builder::new(&Select::default());
        let e = scan(&mut BufReader::new(huge), TraceFormat::Mooncake, "t", &mut b).unwrap_err().to_string();
        assert!(e.contains("line 3: is longer than 1 MiB"), "{e}");
        let e = error_of("TIME,ContextTokens\n", TraceFormat::AzureCsv);
        assert!(e.contains("line 1: no column `TIMESTAMP`") && e.contains("header"), "{e}");
        let e = error_of("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,3,4\n", TraceFormat::AzureCsv);
        assert!(e.contains("line 2") && e.contains("not a datetime"), "{e}");
        let e = error_of("nothing\n", TraceFormat::Mooncake);
        assert!(e.contains("each line must be"), "{e}");
    }
}
