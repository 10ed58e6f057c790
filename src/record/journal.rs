//! `journal.jsonl`: one line per event that matters for resuming, appended and fsynced before the run moves
//! on, so a crash or a power cut loses at most the point in flight.
//!
//! The journal is what commits raw records: a point's records count only once a `point_done` line names its
//! (point, attempt). A `point_start` line is written before a point measures anything, so an attempt whose
//! records reached the disk but whose `point_done` did not (a crash, a full disk) is never measured again
//! under the same attempt number: its stray records stay uncommitted and are ignored.

use super::io::{RecordError, append_jsonl, parse_jsonl};
use super::server::Status;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Entry {
    /// A server process was started (counts starts across resumes); `slot` when the run has slots.
    ServerStart {
        group: String,
        at: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slot: Option<usize>,
    },
    /// A server start is over (stopped, or it never became ready), with its slot: with `ServerStart`, the
    /// interval each slot was busy. Written only by runs with slots.
    ServerEnd { group: String, at: String, slot: usize },
    /// A point is about to be measured under this attempt number.
    PointStart { point: String, group: String, attempt: u32, at: String },
    /// A point finished: measured (ok), or failed with a reason. Its records are committed: its point record
    /// and, when `requests` is given, that many request records (a reader refuses a folder that lost some).
    PointDone {
        point: String,
        group: String,
        attempt: u32,
        status: Status,
        at: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        requests: Option<u32>,
    },
}

pub struct Journal {
    path: PathBuf,
}

impl Journal {
    pub fn new(dir: &Path) -> Self {
        Journal { path: dir.join("journal.jsonl") }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry and fsyncs the file.
    pub fn append(&self, entry: &Entry) -> Result<(), RecordError> {
        append_jsonl(&self.path, std::slice::from_ref(entry), true)
    }

    /// Every entry so far. A torn last line (a crash mid-write) is left out; any other damage is an error
    /// naming file:line, never an empty journal.
    pub fn read(&self) -> Result<Vec<Entry>, RecordError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => Ok(parse_jsonl(&self.path, &bytes)?.items),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(RecordError::io(&self.path, e)),
        }
    }
}

/// What a journal says for resuming: the points done ok, the next attempt number of each point, the
/// committed (point, attempt) pairs, and how many servers were started.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    pub done: BTreeSet<String>,
    pub attempts: BTreeMap<String, u32>,
    pub committed: BTreeSet<(String, u32)>,
    /// Request records each committed (point, attempt) wrote, where its `point_done` says.
    pub expected: BTreeMap<(String, u32), u32>,
    pub server_starts: usize,
}

impl State {
    /// The attempt number the next measurement of `point` uses.
    pub fn next_attempt(&self, point: &str) -> u32 {
        self.attempts.get(point).copied().unwrap_or(0)
    }

    pub fn is_committed(&self, point: &str, attempt: u32) -> bool {
        self.committed.contains(&(point.to_owned(), attempt))
    }
}

pub fn state(entries: &[Entry]) -> State {
    let mut s = State::default();
    for e in entries {
        match e {
            Entry::ServerStart { .. } => s.server_starts += 1,
            Entry::ServerEnd { .. } => {}
            Entry::PointStart { point, attempt, .. } => {
                let a = s.attempts.entry(point.clone()).or_insert(0);
                *a = (*a).max(attempt + 1);
            }
            Entry::PointDone { point, attempt, status, requests, .. } => {
                let a = s.attempts.entry(point.clone()).or_insert(0);
                *a = (*a).max(attempt + 1);
                s.committed.insert((point.clone(), *attempt));
                if let Some(n) = requests {
                    s.expected.insert((point.clone(), *attempt), *n);
                }
                if *status == Status::Ok {
                    s.done.insert(point.clone());
                }
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn done(point: &str, attempt: u32, status: Status) -> Entry {
        Entry::PointDone { point: point.into(), group: "g".into(), attempt, status, at: "t".into(), requests: None }
    }

    #[test]
    fn state_counts_done_points_attempts_and_starts() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path());
        j.append(&Entry::ServerStart { group: "g".into(), at: "t".into(), slot: None }).unwrap();
        j.append(&done("a", 0, Status::Ok)).unwrap();
        j.append(&done("b", 0, Status::Failed)).unwrap();
        // A torn line from a crash mid-write is skipped.
        std::fs::OpenOptions::new().append(true).open(j.path()).unwrap().write_all(b"{\"event\":\"point_do").unwrap();
        let s = state(&j.read().unwrap());
        assert_eq!(s.done, ["a".to_owned()].into());
        assert_eq!(s.next_attempt("b"), 1);
        assert_eq!(s.server_starts, 1);
        assert!(s.is_committed("b", 0) && !s.is_committed("b", 1));
    }

    #[test]
    fn a_started_attempt_without_done_is_never_reused() {
        let start = Entry::PointStart { point: "a".into(), group: "g".into(), attempt: 0, at: "t".into() };
        let s = state(&[start]);
        assert_eq!(s.next_attempt("a"), 1);
        assert!(!s.is_committed("a", 0) && s.done.is_empty());
    }

    #[test]
    fn a_damaged_complete_line_is_an_error_not_an_empty_journal() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path());
        j.append(&done("a", 0, Status::Ok)).unwrap();
        std::fs::OpenOptions::new().append(true).open(j.path()).unwrap().write_all(b"\xff\n").unwrap();
        j.append(&done("b", 0, Status::Ok)).unwrap();
        let e = j.read().unwrap_err().to_string();
        assert!(e.contains("journal.jsonl:2:1: invalid UTF-8"), "{e}");
    }
}
