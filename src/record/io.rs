//! Reading and writing the files of a run folder. Two disciplines, one per kind of file:
//! - raw records and the journal are JSONL, only ever appended; a crash can leave a torn last line (no
//!   newline), which readers tolerate and the next append sets aside in `<file>.torn` before writing, so a
//!   fragment is never glued to a new line. A complete line that does not parse is an error naming file:line.
//! - everything else (manifest, plan, startup records, derived files) is replaced atomically: written to a
//!   temporary file, fsynced, renamed over the old one, and the folder fsynced.
//!
//! Raw JSONL may also be stored compressed, as xz (`requests.jsonl.xz`, what `servelab compress` writes: a
//! third the size of gzip on per-chunk timings) or gzip (`.gz`, read for folders compressed before): a raw
//! stream is the compressed part, if any, followed by the plain part, if any, so a compressed run can be
//! resumed (new lines go to the plain file) and `servelab compress` folds all parts back into one `.xz`.

use flate2::read::MultiGzDecoder;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot access {path}: {source}; check that the run folder exists and is readable and writable")]
    Io { path: String, source: std::io::Error },
    #[error(
        "{path}:{line}: not a valid record ({message}); the file was edited or corrupted — restore it, or move \
         the line aside to keep the rest"
    )]
    Line { path: String, line: usize, message: String },
    #[error(
        "{path}:{line}:{column}: invalid UTF-8; the file was edited or corrupted — restore it, or remove the \
         damaged line"
    )]
    Utf8 { path: String, line: usize, column: usize },
    #[error(
        "point {point} (attempt {attempt}) is committed in journal.jsonl with {expected} {what}, but {path} holds \
         {found}: the folder lost records (edited, truncated, or copied in part) — restore the file; `--resume` \
         cannot measure a committed point again"
    )]
    Missing { path: String, point: String, attempt: u32, what: &'static str, expected: u32, found: u32 },
    #[error(
        "the API key has {len} characters; servelab redacts it from everything it writes and needs at least \
         {min} to do that safely: use a longer key",
        min = MIN_SECRET_LEN
    )]
    SecretTooShort { len: usize },
}

impl RecordError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        RecordError::Io { path: path.display().to_string(), source }
    }
}

/// Strings that must never reach a run folder (the API key, raw and as it appears inside a JSON string).
/// Registered by the executor before a run starts; every write below replaces them with `[redacted]`, so no
/// path — a server's log tail, an error message a server echoed, a note in a report — can write one down.
static SECRETS: std::sync::RwLock<Vec<Vec<u8>>> = std::sync::RwLock::new(Vec::new());

/// The shortest secret that can be redacted without mangling ordinary text.
pub const MIN_SECRET_LEN: usize = 8;

/// Registers a secret for redaction; one shorter than [`MIN_SECRET_LEN`] is refused.
pub fn forbid(secret: &str) -> Result<(), RecordError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(RecordError::SecretTooShort { len: secret.len() });
    }
    let escaped = serde_json::to_string(secret).unwrap_or_default();
    let forms = [secret.as_bytes().to_vec(), escaped.as_bytes()[1..escaped.len() - 1].to_vec()];
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    for form in forms {
        if !secrets.contains(&form) {
            secrets.push(form);
        }
    }
    Ok(())
}

/// `bytes` with every registered secret replaced.
pub fn redacted(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    let mut out = std::borrow::Cow::Borrowed(bytes);
    for secret in secrets.iter() {
        if memchr::memmem::find(&out, secret).is_some() {
            let mut replaced = Vec::with_capacity(out.len());
            let mut rest: &[u8] = &out;
            while let Some(i) = memchr::memmem::find(rest, secret) {
                replaced.extend_from_slice(&rest[..i]);
                replaced.extend_from_slice(b"[redacted]");
                rest = &rest[i + secret.len()..];
            }
            replaced.extend_from_slice(rest);
            out = std::borrow::Cow::Owned(replaced);
        }
    }
    out
}

/// Rewrites a file that another process wrote (the server's log) with the secrets redacted, reading it in
/// blocks (a log can be large) that overlap by the longest secret, so one split across two blocks is found.
pub fn redact_file(path: &Path) -> Result<(), RecordError> {
    let longest = SECRETS.read().unwrap_or_else(|e| e.into_inner()).iter().map(Vec::len).max().unwrap_or(0);
    if longest == 0 {
        return Ok(());
    }
    let io = |source| RecordError::io(path, source);
    let mut input = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    let tmp = tmp_path(path);
    let mut output = std::io::BufWriter::new(File::create(&tmp).map_err(io)?);
    let mut carry: Vec<u8> = Vec::new();
    let mut block = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut block).map_err(io)?;
        carry.extend_from_slice(&block[..n]);
        let clean = redacted(&carry).into_owned();
        // Keep the last longest-1 bytes back (unless at the end): a secret may continue in the next block.
        let keep = if n == 0 { 0 } else { (longest - 1).min(clean.len()) };
        output.write_all(&clean[..clean.len() - keep]).map_err(io)?;
        carry = clean[clean.len() - keep..].to_vec();
        if n == 0 {
            break;
        }
    }
    output.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

/// The storage fault injector, a seam for what a real disk cannot stage on demand: with
/// `SERVELAB_FAULT_ENOSPC=<file name>:<text>` in the environment, the first write to a file of that name whose
/// bytes contain `<text>` fails with "no space left on device" before writing anything (e.g.
/// `journal.jsonl:point_done`: the disk fills between a point's records and its commit). Read once; inert
/// when unset.
fn injected_fault(path: &Path, bytes: &[u8]) -> Result<(), RecordError> {
    static SPEC: std::sync::OnceLock<Option<(String, String)>> = std::sync::OnceLock::new();
    static FIRED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let spec = SPEC.get_or_init(|| {
        let v = std::env::var("SERVELAB_FAULT_ENOSPC").ok()?;
        let (file, text) = v.split_once(':')?;
        Some((file.to_owned(), text.to_owned()))
    });
    let Some((file, text)) = spec else { return Ok(()) };
    let name_matches = path.file_name().is_some_and(|n| n == file.as_str());
    if name_matches
        && memchr::memmem::find(bytes, text.as_bytes()).is_some()
        && !FIRED.swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        return Err(RecordError::io(path, std::io::Error::from_raw_os_error(28))); // ENOSPC
    }
    Ok(())
}

/// Pretty JSON with a trailing newline: every JSON file servelab writes.
pub fn json_pretty<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Replaces `path` with `bytes`, secrets redacted, so that a crash leaves either the old file or the new one,
/// never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RecordError> {
    write_atomic_raw(path, &redacted(bytes))
}

/// A whole document (`manifest.json`, `plan.json`) written plain, as [`write_atomic`] does, then the packed copy
/// `servelab compress` may have left is removed: a resumed or merged folder never holds two copies of one
/// document, which [`read_doc`] would refuse.
pub fn write_doc(path: &Path, bytes: &[u8]) -> Result<(), RecordError> {
    write_atomic(path, bytes)?;
    for (ext, _) in PACKED {
        remove_if_present(&with_ext(path, ext))?;
    }
    sync_dir(path);
    Ok(())
}

/// Removes `path`; one that is not there is no error.
fn remove_if_present(path: &Path) -> Result<(), RecordError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(RecordError::io(path, e)),
        _ => Ok(()),
    }
}

/// [`write_atomic`] for compressed bytes, which are written as they are (their text was redacted when it was
/// first written).
fn write_atomic_raw(path: &Path, bytes: &[u8]) -> Result<(), RecordError> {
    injected_fault(path, bytes)?;
    let tmp = tmp_path(path);
    let io = |source| RecordError::io(path, source);
    let mut file = File::create(&tmp).map_err(io)?;
    file.write_all(bytes).and_then(|_| file.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    sync_dir(path);
    Ok(())
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Makes a rename durable; best effort (some file systems refuse to open a directory for sync).
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = File::open(dir)
    {
        #[expect(
            clippy::let_underscore_must_use,
            reason = "the file's own data was fsynced before the rename; some file systems refuse a directory \
                      fsync (EINVAL), and the rename itself already succeeded"
        )]
        let _: std::io::Result<()> = d.sync_all();
    }
}

/// Appends one JSON line per item; `sync` fsyncs before returning (the journal does, raw records need not:
/// the journal entry written after them is what commits them).
pub fn append_jsonl<T: Serialize>(path: &Path, items: &[T], sync: bool) -> Result<(), RecordError> {
    let mut buf = Vec::new();
    for item in items {
        serde_json::to_writer(&mut buf, item).map_err(|e| RecordError::io(path, std::io::Error::other(e)))?;
        buf.push(b'\n');
    }
    injected_fault(path, &buf)?;
    set_aside_torn_tail(path)?;
    let io = |source| RecordError::io(path, source);
    let mut file = OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
    file.write_all(&redacted(&buf)).map_err(io)?;
    if sync {
        file.sync_all().map_err(io)?;
    }
    Ok(())
}

/// When the file does not end with a newline (a crash mid-append), moves the fragment after its last newline
/// to `<file>.torn` and truncates the file there. Returns whether anything was set aside.
pub fn set_aside_torn_tail(path: &Path) -> Result<bool, RecordError> {
    let io = |source| RecordError::io(path, source);
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io(e)),
    };
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        return Ok(false);
    }
    // Scan back in blocks for the last newline; a torn line is short, so this reads little.
    let mut end = len;
    let mut keep = 0;
    let mut block = vec![0u8; 64 * 1024];
    'scan: while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start)).map_err(io)?;
        file.read_exact(&mut block[..n]).map_err(io)?;
        if start + n as u64 == len && block[n - 1] == b'\n' {
            return Ok(false);
        }
        if let Some(i) = memchr::memrchr(b'\n', &block[..n]) {
            keep = start + i as u64 + 1;
            break 'scan;
        }
        end = start;
    }
    let mut fragment = Vec::new();
    file.seek(SeekFrom::Start(keep)).map_err(io)?;
    file.read_to_end(&mut fragment).map_err(io)?;
    let mut torn_name = path.file_name().unwrap_or_default().to_os_string();
    torn_name.push(".torn");
    let torn = path.with_file_name(torn_name);
    let mut side = OpenOptions::new().create(true).append(true).open(&torn).map_err(|e| RecordError::io(&torn, e))?;
    fragment.push(b'\n');
    side.write_all(&fragment).and_then(|_| side.sync_all()).map_err(|e| RecordError::io(&torn, e))?;
    file.set_len(keep).and_then(|_| file.sync_all()).map_err(io)?;
    Ok(true)
}

/// Lines of one JSONL file, parsed; `torn` is set when its last line had no newline and did not parse.
pub struct Lines<T> {
    pub items: Vec<T>,
    pub torn: bool,
}

/// The longest raw record line read back (a request with its chunk timings is a few KiB; a line past this
/// is a damaged or hostile file, and reading on would hold it all in memory).
pub const MAX_RECORD_LINE: u64 = 16 << 20;

/// Parses JSONL bytes named `path` (for messages). Empty lines are skipped.
pub fn parse_jsonl<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<Lines<T>, RecordError> {
    parse_reader(path, bytes)
}

/// Parses JSONL as it is read, one line at a time and none longer than [`MAX_RECORD_LINE`], so a file — or a
/// compressed one that unpacks to far more (a decompression bomb) — is read in memory bounded by the records
/// it holds. A last line without its newline that does not parse is a torn write: left out, and said so.
pub fn parse_reader<T: DeserializeOwned>(
    path: &Path,
    mut reader: impl std::io::BufRead,
) -> Result<Lines<T>, RecordError> {
    use std::io::BufRead as _;
    let mut items = Vec::new();
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        let n = (&mut reader)
            .take(MAX_RECORD_LINE + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| RecordError::io(path, e))?;
        if n == 0 {
            break;
        }
        let terminated = line.last() == Some(&b'\n');
        if !terminated && line.len() as u64 > MAX_RECORD_LINE {
            return Err(RecordError::Line {
                path: path.display().to_string(),
                line: number,
                message: format!("a line longer than {} MiB", MAX_RECORD_LINE >> 20),
            });
        }
        let body = if terminated { &line[..line.len() - 1] } else { &line[..] };
        let text = match std::str::from_utf8(body) {
            Ok(t) => t,
            Err(_) if !terminated => return Ok(Lines { items, torn: true }),
            Err(_) => {
                let column = utf8_error_place(body).map_or(1, |(_, c)| c);
                return Err(RecordError::Utf8 { path: path.display().to_string(), line: number, column });
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(text) {
            Ok(item) => items.push(item),
            Err(_) if !terminated => return Ok(Lines { items, torn: true }),
            Err(e) => {
                return Err(RecordError::Line {
                    path: path.display().to_string(),
                    line: number,
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(Lines { items, torn: false })
}

/// Why a bounded read refused a file.
#[derive(Debug)]
pub enum CappedError {
    Io(std::io::Error),
    /// Not a regular file (a device such as /dev/zero, a folder, a pipe).
    NotAFile,
    /// Longer than the cap.
    TooLong,
}

/// Reads a regular file of at most `cap` bytes, never more: a device like `/dev/zero` is refused before a
/// byte is read, and a file that grows past the cap stops the read at cap + 1 bytes.
pub fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, CappedError> {
    let file = File::open(path).map_err(CappedError::Io)?;
    let meta = file.metadata().map_err(CappedError::Io)?;
    if !meta.is_file() {
        return Err(CappedError::NotAFile);
    }
    if meta.len() > cap {
        return Err(CappedError::TooLong);
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(cap + 1).read_to_end(&mut bytes).map_err(CappedError::Io)?;
    if bytes.len() as u64 > cap {
        return Err(CappedError::TooLong);
    }
    Ok(bytes)
}

/// (line, column) of the first invalid UTF-8 byte, both from 1; None for valid UTF-8.
pub fn utf8_error_place(bytes: &[u8]) -> Option<(usize, usize)> {
    let e = std::str::from_utf8(bytes).err()?;
    let valid = &bytes[..e.valid_up_to()];
    let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
    let start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    Some((line, String::from_utf8_lossy(&valid[start..]).chars().count() + 1))
}

/// Reads a whole file, or nothing when it does not exist.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, RecordError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RecordError::io(path, e)),
    }
}

/// `requests.jsonl.<ext>` for `requests.jsonl`.
pub fn with_ext(plain: &Path, ext: &str) -> PathBuf {
    let mut name = plain.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(ext);
    plain.with_file_name(name)
}

/// The compressed containers a raw stream may have, newest format first.
const PACKED: [(&str, Codec); 2] = [("xz", Codec::Xz), ("gz", Codec::Gzip)];

#[derive(Clone, Copy)]
enum Codec {
    Xz,
    Gzip,
}

/// The most a compressed document or stream is unpacked into memory at once (`startup.json`, a stream being
/// compressed again); past it the file is refused as damaged or hostile. Raw streams read for a report are
/// parsed as they unpack instead ([`read_raw`]).
const MAX_UNPACKED: u64 = 2 << 30;

fn decoder<'a>(codec: Codec, bytes: &'a [u8]) -> Box<dyn Read + 'a> {
    match codec {
        Codec::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(bytes)),
        Codec::Gzip => Box::new(MultiGzDecoder::new(bytes)),
    }
}

fn unpack(codec: Codec, path: &Path, bytes: &[u8]) -> Result<Vec<u8>, RecordError> {
    let mut out = Vec::new();
    decoder(codec, bytes).take(MAX_UNPACKED + 1).read_to_end(&mut out).map_err(|e| RecordError::io(path, e))?;
    if out.len() as u64 > MAX_UNPACKED {
        let msg = format!("unpacks to more than {} GiB: a damaged or hostile file", MAX_UNPACKED >> 30);
        return Err(RecordError::io(path, std::io::Error::other(msg)));
    }
    Ok(out)
}

/// `path` and `other` hold the same records: which to read is the user's call.
fn two_copies(path: &Path, other: &Path) -> RecordError {
    let msg = format!("{} is also present: keep one of the two", other.display());
    RecordError::io(path, std::io::Error::other(msg))
}

/// The compressed part of a raw stream, unpacked, and the file it came from. Two compressed files for one
/// stream would make the order of their lines ambiguous, so that is an error.
fn read_packed(plain: &Path) -> Result<Option<(PathBuf, Vec<u8>)>, RecordError> {
    let mut found: Option<(PathBuf, Vec<u8>)> = None;
    for (ext, codec) in PACKED {
        let path = with_ext(plain, ext);
        if let Some(bytes) = read_optional(&path)? {
            if let Some((other, _)) = &found {
                return Err(two_copies(&path, other));
            }
            found = Some((path.clone(), unpack(codec, &path, &bytes)?));
        }
    }
    Ok(found)
}

/// A raw stream: its compressed part (`<plain>.xz` or `<plain>.gz`, if present) then `<plain>` (if present).
pub fn read_raw<T: DeserializeOwned>(plain: &Path) -> Result<Vec<T>, RecordError> {
    let mut items = Vec::new();
    let mut found: Option<PathBuf> = None;
    for (ext, codec) in PACKED {
        let path = with_ext(plain, ext);
        let Some(bytes) = read_optional(&path)? else { continue };
        if let Some(other) = &found {
            return Err(two_copies(&path, other));
        }
        // Parsed as it unpacks: memory holds the records, never the whole unpacked text.
        items.extend(parse_reader(&path, std::io::BufReader::new(decoder(codec, &bytes)))?.items);
        found = Some(path);
    }
    match File::open(plain) {
        Ok(f) => items.extend(parse_reader(plain, std::io::BufReader::new(f))?.items),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(RecordError::io(plain, e)),
    }
    Ok(items)
}

/// A whole document (e.g. `startup.json`) that `servelab compress` may have packed: `<plain>` or its `.xz`/`.gz`,
/// with the file it came from. Both a plain and a packed copy would leave it unclear which one is current.
pub fn read_doc(plain: &Path) -> Result<Option<(PathBuf, Vec<u8>)>, RecordError> {
    let packed = read_packed(plain)?;
    match (read_optional(plain)?, packed) {
        (Some(_), Some((other, _))) => Err(two_copies(plain, &other)),
        (Some(bytes), None) => Ok(Some((plain.to_path_buf(), bytes))),
        (None, packed) => Ok(packed),
    }
}

/// Packs a whole document into `<plain>.xz` (checked by reading it back), then removes `<plain>`. Returns
/// (bytes before, bytes after), or None when there is no plain copy, or when `<plain>.xz` exists already (a
/// log of another start left beside a packed one): that copy is never overwritten, both stay as they are.
pub fn compress_doc(plain: &Path) -> Result<Option<(u64, u64)>, RecordError> {
    let xz = with_ext(plain, "xz");
    if xz.exists() {
        return Ok(None);
    }
    let Some(bytes) = read_optional(plain)? else { return Ok(None) };
    let packed = xz_pack(&xz, &bytes)?;
    write_atomic_raw(&xz, &packed)?;
    std::fs::remove_file(plain).map_err(|e| RecordError::io(plain, e))?;
    sync_dir(plain);
    Ok(Some((bytes.len() as u64, packed.len() as u64)))
}

/// xz at preset 6 "extreme" (about 3% smaller than plain 6 on per-chunk timings, same ~100 MiB of memory),
/// verified by unpacking before anything is replaced.
fn xz_pack(xz: &Path, bytes: &[u8]) -> Result<Vec<u8>, RecordError> {
    let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 6 | 0x8000_0000);
    enc.write_all(bytes).map_err(|e| RecordError::io(xz, e))?;
    let packed = enc.finish().map_err(|e| RecordError::io(xz, e))?;
    if unpack(Codec::Xz, xz, &packed)? != bytes {
        return Err(RecordError::io(xz, std::io::Error::other("compressed copy does not read back identically")));
    }
    Ok(packed)
}

/// Folds a raw stream's parts into one `<plain>.xz`, each line rewritten in the current record format `T`
/// (records always read both forms; this makes a stored folder small). The packed copy is checked by
/// reading it back before the old parts are removed; a torn last line is set aside first (`<plain>.torn`).
/// Returns (bytes before, bytes after), or None when the stream is already one `.xz` or absent.
pub fn compress_raw<T: Serialize + DeserializeOwned>(plain: &Path) -> Result<Option<(u64, u64)>, RecordError> {
    let xz = with_ext(plain, "xz");
    let packed_part = read_packed(plain)?;
    if !plain.exists() && packed_part.as_ref().is_none_or(|(p, _)| *p == xz) {
        return Ok(None);
    }
    set_aside_torn_tail(plain)?;
    let mut before = 0u64;
    let mut lines = Vec::new();
    for (path, bytes) in packed_part.into_iter().chain(read_optional(plain)?.map(|b| (plain.to_path_buf(), b))) {
        before += bytes.len() as u64;
        for item in parse_jsonl::<T>(&path, &bytes)?.items {
            lines.extend(serde_json::to_vec(&item).map_err(|e| RecordError::io(&path, e.into()))?);
            lines.push(b'\n');
        }
    }
    let packed = xz_pack(&xz, &lines)?;
    write_atomic_raw(&xz, &packed)?;
    for old in [with_ext(plain, "gz"), plain.to_path_buf()] {
        remove_if_present(&old)?;
    }
    sync_dir(plain);
    Ok(Some((before, packed.len() as u64)))
}

#[cfg(test)]
mod tests;
