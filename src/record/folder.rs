//! A run folder as a whole: its file names, and reading it back — the spec text, the manifest, and every raw
//! record the journal has committed, in the order the run wrote them.

use super::Recorded;
use super::io::{self, RecordError};
use super::journal::{self, Journal};
use super::manifest::Manifest;
use std::path::{Path, PathBuf};

pub const SPEC: &str = "spec.yaml";
pub const PLAN: &str = "plan.json";
pub const MANIFEST: &str = "manifest.json";
pub const JOURNAL: &str = "journal.jsonl";
pub const POINTS: &str = "points.jsonl";
pub const REQUESTS: &str = "requests.jsonl";
pub const SAMPLES: &str = "samples.jsonl";
pub const STARTUP: &str = "startup.json";

/// `servers/<group>/`: the server's log and `startup.json`.
pub fn server_dir(dir: &Path, group: &str) -> PathBuf {
    dir.join("servers").join(group)
}

/// What a run folder holds, as read back.
pub struct RunFolder {
    pub spec_text: String,
    pub manifest: Manifest,
    pub recorded: Recorded,
    pub journal: journal::State,
}

fn read_text(path: &Path) -> Result<String, RecordError> {
    let bytes = std::fs::read(path).map_err(|e| RecordError::io(path, e))?;
    if let Some((line, column)) = io::utf8_error_place(&bytes) {
        return Err(RecordError::Utf8 { path: path.display().to_string(), line, column });
    }
    Ok(String::from_utf8(bytes).unwrap_or_default())
}

fn parse_json<T: serde::de::DeserializeOwned>(path: &Path, bytes: Vec<u8>) -> Result<T, RecordError> {
    if let Some((line, column)) = io::utf8_error_place(&bytes) {
        return Err(RecordError::Utf8 { path: path.display().to_string(), line, column });
    }
    serde_json::from_slice(&bytes).map_err(|e| RecordError::Line {
        path: path.display().to_string(),
        line: e.line(),
        message: e.to_string(),
    })
}

/// A server's `startup.json` (or its packed `.xz`), if the run got that far.
pub fn read_startup<T: serde::de::DeserializeOwned>(server_dir: &Path) -> Result<Option<T>, RecordError> {
    match io::read_doc(&server_dir.join(STARTUP))? {
        Some((path, bytes)) => parse_json(&path, bytes).map(Some),
        None => Ok(None),
    }
}

/// The run's `manifest.json`, plain or packed by `servelab compress`.
pub fn read_manifest(dir: &Path) -> Result<Manifest, RecordError> {
    let plain = dir.join(MANIFEST);
    match io::read_doc(&plain)? {
        Some((path, bytes)) => parse_json(&path, bytes),
        None => Err(RecordError::io(&plain, std::io::ErrorKind::NotFound.into())),
    }
}

pub fn read(dir: &Path) -> Result<RunFolder, RecordError> {
    let manifest = read_manifest(dir)?;
    let spec_text = read_text(&dir.join(SPEC))?;
    let journal = journal::state(&Journal::new(dir).read()?);
    let mut recorded = Recorded { metrics_version: manifest.metrics_version, ..Recorded::default() };
    for group in &manifest.plan.groups {
        let sdir = server_dir(dir, &group.id);
        if let Some(server) = read_startup(&sdir)? {
            recorded.servers.push(server);
        }
        for n in 1.. {
            match io::read_doc(&sdir.join(format!("startup-{n}.json")))? {
                Some((path, bytes)) => recorded.earlier_starts.push(parse_json(&path, bytes)?),
                None => break,
            }
        }
    }
    // Only records whose (point, attempt) the journal committed: a crash between the records and the journal
    // entry must not count them, and a resume measures that point again under a new attempt number.
    let ok = |p: &str, a: u32| journal.is_committed(p, a);
    recorded.points = io::read_raw(&dir.join(POINTS))?;
    recorded.points.retain(|r: &super::PointRecord| ok(&r.point, r.attempt));
    recorded.requests = io::read_raw(&dir.join(REQUESTS))?;
    recorded.requests.retain(|r: &super::RequestRecord| ok(&r.point, r.attempt));
    recorded.samples = io::read_raw(&dir.join(SAMPLES))?;
    recorded.samples.retain(|r: &super::SampleLine| ok(&r.point, r.attempt));
    check_complete(dir, &journal, &recorded)?;
    Ok(RunFolder { spec_text, manifest, recorded, journal })
}

/// Every committed point whose `point_done` says how many request records it wrote has its point record and
/// at least that many request records: a re-render never shows a point whose records are gone as zeros.
fn check_complete(dir: &Path, journal: &journal::State, rec: &Recorded) -> Result<(), RecordError> {
    let mut requests: std::collections::HashMap<(&str, u32), u32> = Default::default();
    for r in &rec.requests {
        *requests.entry((r.point.as_str(), r.attempt)).or_insert(0) += 1;
    }
    for ((point, attempt), &expected) in &journal.expected {
        let has_point = rec.points.iter().any(|p| &p.point == point && p.attempt == *attempt);
        if !has_point {
            let path = dir.join(POINTS).display().to_string();
            let (point, attempt) = (point.clone(), *attempt);
            return Err(RecordError::Missing { path, point, attempt, what: "point record", expected: 1, found: 0 });
        }
        let found = requests.get(&(point.as_str(), *attempt)).copied().unwrap_or(0);
        if found < expected {
            let path = dir.join(REQUESTS).display().to_string();
            let (point, attempt) = (point.clone(), *attempt);
            return Err(RecordError::Missing { path, point, attempt, what: "request records", expected, found });
        }
    }
    Ok(())
}

/// Compresses the folder's raw streams in place (`servelab compress`); returns (file, bytes before, after).
pub fn compress(dir: &Path) -> Result<Vec<(String, u64, u64)>, RecordError> {
    // A folder that lost committed records is refused before anything is rewritten.
    read(dir)?;
    let done = [
        (POINTS, io::compress_raw::<super::PointRecord>(&dir.join(POINTS))?),
        (REQUESTS, io::compress_raw::<super::RequestRecord>(&dir.join(REQUESTS))?),
        (SAMPLES, io::compress_raw::<super::SampleLine>(&dir.join(SAMPLES))?),
    ];
    let mut out: Vec<_> =
        done.into_iter().filter_map(|(name, sizes)| sizes.map(|(b, a)| (name.to_owned(), b, a))).collect();
    // Then the whole documents: the plan twice (plan.json, and inside the manifest), server start records
    // (mostly the memory timeline of the start) and server logs. Every reader takes them plain or packed.
    let docs = [dir.join(PLAN), dir.join(MANIFEST)].into_iter().chain(server_docs(dir)?);
    for doc in docs {
        if let Some((before, after)) = io::compress_doc(&doc)? {
            let name = doc.strip_prefix(dir).unwrap_or(&doc).display().to_string();
            out.push((name, before, after));
        }
    }
    Ok(out)
}

/// Every plain `servers/<group>/startup*.json` and `server*.log` (a resumed run keeps earlier starts as
/// `startup-<n>.json` and `server-<n>.log`).
fn server_docs(dir: &Path) -> Result<Vec<PathBuf>, RecordError> {
    let servers = dir.join("servers");
    let mut docs = Vec::new();
    let Ok(groups) = std::fs::read_dir(&servers) else { return Ok(docs) };
    for group in groups {
        let group = group.map_err(|e| RecordError::io(&servers, e))?.path();
        let Ok(files) = std::fs::read_dir(&group) else { continue };
        for file in files {
            let path = file.map_err(|e| RecordError::io(&group, e))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let doc = (name.starts_with("startup") && name.ends_with(".json"))
                || (name.starts_with("server") && name.ends_with(".log"));
            if doc && path.is_file() {
                docs.push(path);
            }
        }
    }
    docs.sort();
    Ok(docs)
}
