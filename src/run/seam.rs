//! The seam below the executor: `Engine` starts and stops one server group's server, `Driver` measures one
//! point against it. The executor (`exec`) only sees these two, so its control flow — the journal, resume,
//! fail-fast, a dying server, several groups in flight — runs the same against real processes (`real`) and
//! against the in-process fake (`fake`), which returns scripted records and failures without a port.

use super::load::PointOutput;
use crate::plan::{Point, ServerGroup};
use crate::record::ServerRecord;
use std::future::Future;
use std::path::Path;

/// Starts and stops servers.
pub trait Engine {
    /// A ready server, owned by the executor between steps.
    type Server;
    /// Starts the group's server (its log under `dir`) and waits until it is ready; on failure the record
    /// says why and nothing of it is left running.
    fn start<'s>(
        &'s self,
        group: &'s ServerGroup,
        dir: &'s Path,
    ) -> impl Future<Output = Result<Self::Server, ServerRecord>> + 's;
    /// Stops the server and completes its record (stop report, memory released).
    fn stop<'s>(&'s self, server: Self::Server, group: &'s ServerGroup) -> impl Future<Output = ServerRecord> + 's;
    /// The record so far (ready time, what the server said about itself).
    fn record<'s>(&self, server: &'s Self::Server) -> &'s ServerRecord;
}

/// What measuring one point gave.
pub struct Measured {
    pub out: PointOutput,
    /// The server was found dead after the point: it and the points after it fail.
    pub died: bool,
}

/// Runs load against a ready server.
pub trait Driver {
    type Server;
    /// Load after a start, not measured: how many requests completed, or why it could not run; None when
    /// the spec asks for none.
    fn warmup<'s>(
        &'s self,
        server: &'s mut Self::Server,
        group: &'s ServerGroup,
    ) -> impl Future<Output = Option<Result<usize, super::load::WarmupError>>> + 's;
    /// Measures one point (its warmup requests, then the measured phase).
    fn measure<'s>(
        &'s self,
        server: &'s mut Self::Server,
        group: &'s ServerGroup,
        point: &'s Point,
        attempt: u32,
    ) -> impl Future<Output = Measured> + 's;
}

/// A driver that interrupts the run, as Ctrl-C would, once `after` points were measured: the same hook for
/// the fake and the real side, so a test of resume stops both at the same place.
pub struct StopAfter<'a, D> {
    inner: D,
    after: Option<usize>,
    count: std::sync::atomic::AtomicUsize,
    flag: &'a std::sync::atomic::AtomicBool,
}

impl<'a, D> StopAfter<'a, D> {
    pub fn new(inner: D, after: Option<usize>, flag: &'a std::sync::atomic::AtomicBool) -> Self {
        StopAfter { inner, after, count: Default::default(), flag }
    }
}

impl<D: Driver> Driver for StopAfter<'_, D> {
    type Server = D::Server;

    async fn warmup<'s>(
        &'s self,
        server: &'s mut D::Server,
        group: &'s ServerGroup,
    ) -> Option<Result<usize, super::load::WarmupError>> {
        self.inner.warmup(server, group).await
    }

    async fn measure<'s>(
        &'s self,
        server: &'s mut D::Server,
        group: &'s ServerGroup,
        point: &'s Point,
        attempt: u32,
    ) -> Measured {
        let m = self.inner.measure(server, group, point, attempt).await;
        let n = self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if self.after.is_some_and(|after| n >= after) {
            self.flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        m
    }
}
