//! `journal.jsonl`: one line per event that matters for resuming, appended and fsynced before the run moves
//! on, so a crash or a power cut loses at most the point in flight.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Entry {
    /// A server process was started (counts starts across resumes).
    ServerStart { group: String, at: String },
    /// A point finished: measured (ok), or failed with a reason.
    PointDone { point: String, group: String, attempt: u32, status: String, at: String },
}

pub struct Journal {
    path: PathBuf,
}

impl Journal {
    pub fn new(dir: &Path) -> Self {
        Journal { path: dir.join("journal.jsonl") }
    }

    /// Appends one entry and fsyncs the file.
    pub fn append(&self, entry: &Entry) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        file.write_all(&line)?;
        file.sync_all()
    }

    /// Every entry so far; a torn last line (a crash mid-write) is ignored.
    pub fn read(&self) -> Vec<Entry> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// What a journal says for resuming: the points done ok, and how often each point was attempted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    pub done: BTreeSet<String>,
    pub attempts: BTreeMap<String, u32>,
    pub server_starts: usize,
}

pub fn state(entries: &[Entry]) -> State {
    let mut s = State::default();
    for e in entries {
        match e {
            Entry::ServerStart { .. } => s.server_starts += 1,
            Entry::PointDone { point, attempt, status, .. } => {
                let a = s.attempts.entry(point.clone()).or_insert(0);
                *a = (*a).max(attempt + 1);
                if status == "ok" {
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

    #[test]
    fn state_counts_done_points_attempts_and_starts() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path());
        let at = "t".to_owned();
        j.append(&Entry::ServerStart { group: "g".into(), at: at.clone() }).unwrap();
        j.append(&Entry::PointDone {
            point: "a".into(),
            group: "g".into(),
            attempt: 0,
            status: "ok".into(),
            at: at.clone(),
        })
        .unwrap();
        j.append(&Entry::PointDone {
            point: "b".into(),
            group: "g".into(),
            attempt: 0,
            status: "failed".into(),
            at: at.clone(),
        })
        .unwrap();
        // A torn line from a crash mid-write is skipped.
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("journal.jsonl"))
            .unwrap()
            .write_all(b"{\"event\":\"point_do")
            .unwrap();
        let s = state(&j.read());
        assert_eq!(s.done, ["a".to_owned()].into());
        assert_eq!(s.attempts["b"], 1);
        assert_eq!(s.server_starts, 1);
    }
}
