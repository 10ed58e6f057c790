//! The run folder's format: the bottom layer. Every file a run writes and every type those files hold — the
//! plan, the manifest, server, point, sample and request records, the journal — and the rules for reading
//! and writing them (`io`). It depends on no other module of servelab: the planner produces its plan types,
//! the executor appends its records, and `stats` and `report` read them, without ever depending on the
//! executor.

pub mod capacity;
pub mod failpoint;
pub mod folder;
pub mod io;
pub mod journal;
pub mod manifest;
pub mod memory;
pub mod plan;
pub mod point;
pub mod request;
pub mod server;
pub mod trace;
pub mod tracefile;
pub mod values;

pub use memory::{GpuReading, MIB, MemSample, Source};
pub use point::{PointRecord, SampleLine, Snapshot};
pub use request::{ErrorKind, RequestError, RequestRecord};
pub use server::{ServerRecord, Status};

use sha2::{Digest, Sha256};

/// The first 12 hex digits of SHA-256: ids of points and servers, hashes of specs and model configs.
pub fn short_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Everything a run recorded and committed, in memory; the files hold the same.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    /// Each group's latest server start, in plan order.
    pub servers: Vec<ServerRecord>,
    /// Earlier starts of a group started again (a resumed run, a tune's confirmation): `startup-N.json`.
    pub earlier_starts: Vec<ServerRecord>,
    pub points: Vec<PointRecord>,
    pub requests: Vec<RequestRecord>,
    pub samples: Vec<SampleLine>,
    /// The run's `Manifest::metrics_version`: what its figures mean (0 where no manifest says).
    pub metrics_version: u32,
}

impl Recorded {
    /// The servers servelab started (an `external` endpoint has no startup to report).
    pub fn started_servers(&self) -> Vec<ServerRecord> {
        self.servers.iter().filter(|s| !s.argv.is_empty()).cloned().collect()
    }
}

/// Raw records of one kind grouped by (point, attempt), built once per analysis, so each point finds its own
/// in constant time instead of scanning every request of the run (a 12,000-request trace has as many
/// points to look up).
pub struct ByPoint<'a, T> {
    map: std::collections::HashMap<&'a str, std::collections::BTreeMap<u32, Vec<&'a T>>>,
}

impl<'a, T> ByPoint<'a, T> {
    /// Groups `items` by `key`, keeping their order within each (point, attempt).
    pub fn new(items: impl IntoIterator<Item = &'a T>, key: impl Fn(&'a T) -> (&'a str, u32)) -> Self {
        let mut map: std::collections::HashMap<&'a str, std::collections::BTreeMap<u32, Vec<&'a T>>> =
            Default::default();
        for item in items {
            let (point, attempt) = key(item);
            map.entry(point).or_default().entry(attempt).or_default().push(item);
        }
        ByPoint { map }
    }

    /// The records of one attempt at a point, in the order they were given.
    pub fn get(&self, point: &str, attempt: u32) -> &[&'a T] {
        self.map.get(point).and_then(|m| m.get(&attempt)).map_or(&[], Vec::as_slice)
    }
}
