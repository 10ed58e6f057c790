//! The server process: started in its own process group, stopped with SIGTERM, a grace period, then SIGKILL.
//! A SIGKILL to the API server alone would orphan vLLM's engine core, which keeps its memory (vLLM issue
//! 55510), so signals go to the whole group and to every descendant that left it.
//!
//! Only processes servelab started and still owns are ever signalled:
//! - each process of the server's tree is held by a pidfd, opened when it is first seen and checked against
//!   the start time read with its PID, so a PID that a short-lived child left behind and the kernel gave to an
//!   unrelated process is never signalled (without pidfds: PID and start time are checked right before each
//!   signal). The group is signalled with `killpg` only while the leader is unreaped: a zombie holds its PID,
//!   so the group id cannot have been reused.
//! - servelab is a child subreaper: a descendant that double-forks or calls `setsid` is re-parented to
//!   servelab, not to init, and is adopted when its environment carries the server's marker; adopted orphans
//!   are reaped by PID, never with `waitpid(-1)`.
//! - the server dies with servelab: its parent-death signal is SIGTERM (not SIGKILL, which would orphan the
//!   engine core), set in `pre_exec` with a `getppid()` re-check, from the thread that runs the executor (the
//!   main thread, which lives as long as the run: a parent-death signal fires when the spawning *thread*
//!   exits). Descendants get no parent-death signal, so a watchdog — servelab re-executed, holding a pipe —
//!   stops the group when servelab dies without saying goodbye (SIGKILL, an abort, a second Ctrl-C).

use super::log::ServerLog;
use crate::probe::procfs::{self, ProcEntry};
pub use crate::record::server::StopReport;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The environment variable that marks the server's processes (`SERVELAB_SERVER_OF=<servelab pid>`,
/// inherited by every descendant), so that an orphan re-parented to servelab can be told from servelab's other
/// children.
pub const MARKER: &str = "SERVELAB_SERVER_OF";

/// Which of this servelab's servers a process belongs to (`SERVELAB_SERVER_START=<n>`): with several servers
/// up at once (slots), an orphan is adopted only by the server whose tree it left, never by a neighbour.
pub const START_MARKER: &str = "SERVELAB_SERVER_START";

/// Numbers this servelab's server starts.
static STARTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The hidden subcommand that runs the watchdog (`servelab __watchdog <pgid> <grace ms>`).
pub const WATCHDOG_ARG: &str = "__watchdog";

/// A process servelab owns: known by PID and start time, held by a pidfd where the kernel has them.
struct Owned {
    start: u64,
    fd: Option<OwnedFd>,
}

/// The server's processes as far as servelab has seen them. Pure bookkeeping over a process table, so PID
/// reuse is tested with a made-up table.
#[derive(Default)]
pub struct Ownership {
    owned: BTreeMap<u32, Owned>,
}

impl Ownership {
    /// Adds the server's current tree in `table`: the leader's group, every descendant of the leader, and every
    /// child of servelab (`me`) that `is_ours` accepts (an adopted orphan). Returns the tree's live processes.
    pub fn scan(
        &mut self,
        table: &[ProcEntry],
        leader: u32,
        me: u32,
        is_ours: impl Fn(u32) -> bool,
        open: impl Fn(u32) -> Option<OwnedFd>,
    ) -> BTreeSet<u32> {
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for e in table {
            children.entry(e.ppid).or_default().push(e.pid);
        }
        let mut tree: BTreeSet<u32> = table.iter().filter(|e| e.pgrp == leader).map(|e| e.pid).collect();
        tree.extend(table.iter().filter(|e| e.ppid == me && e.pid != leader && is_ours(e.pid)).map(|e| e.pid));
        let mut stack: Vec<u32> = std::iter::once(leader).chain(tree.iter().copied()).collect();
        while let Some(pid) = stack.pop() {
            for child in children.get(&pid).into_iter().flatten() {
                if tree.insert(*child) {
                    stack.push(*child);
                }
            }
        }
        if table.iter().any(|e| e.pid == leader) {
            tree.insert(leader);
        }
        let by_pid: HashMap<u32, &ProcEntry> = table.iter().map(|e| (e.pid, e)).collect();
        for pid in &tree {
            let Some(e) = by_pid.get(pid) else { continue };
            if e.zombie {
                continue;
            }
            match self.owned.get(pid) {
                Some(o) if o.start == e.start => {}
                // A PID seen before with another start time is a different process: ours is gone.
                _ => {
                    let fd = open(*pid);
                    self.owned.insert(*pid, Owned { start: e.start, fd });
                }
            }
        }
        self.alive(table)
    }

    /// Owned processes that still run: the same PID with the same start time, and not a zombie.
    pub fn alive(&self, table: &[ProcEntry]) -> BTreeSet<u32> {
        let by_pid: HashMap<u32, &ProcEntry> = table.iter().map(|e| (e.pid, e)).collect();
        self.owned
            .iter()
            .filter(|(pid, o)| by_pid.get(pid).is_some_and(|e| e.start == o.start && !e.zombie))
            .map(|(pid, _)| *pid)
            .collect()
    }

    /// Every PID servelab has owned (for the record).
    pub fn pids(&self) -> BTreeSet<u32> {
        self.owned.keys().copied().collect()
    }

    /// (PID, start time) of every owned process.
    fn identities(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.owned.iter().map(|(pid, o)| (*pid, o.start))
    }

    /// Signals every owned process still alive: through its pidfd (the kernel checks identity), or, without
    /// one, by PID after checking its start time in `table`.
    fn signal(&self, table: &[ProcEntry], signal: Signal) {
        let alive = self.alive(table);
        for (pid, o) in &self.owned {
            match &o.fd {
                Some(fd) => seen_by_the_next_scan(rustix::process::pidfd_send_signal(fd, to_rustix(signal))),
                None if alive.contains(pid) => seen_by_the_next_scan(kill(Pid::from_raw(*pid as i32), signal)),
                None => {}
            }
        }
    }
}

/// A signal or a reap whose failure needs no handling here: the process table is read again afterwards (the
/// stop polls until each owned process is gone and records what is left in `StopReport::leftover`; the
/// watchdog polls before its SIGKILL; after `kill_marked` the watchdog stops what servelab missed), so a
/// process the call did not reach is seen there. The usual failure is a process that already exited (ESRCH,
/// ECHILD).
fn seen_by_the_next_scan<T, E>(result: Result<T, E>) {
    // why: the outcome is read from the process table afterwards, never from this result (see above).
    result.ok();
}

/// Orphans of the server's tree come to servelab, not init, so they can be found and stopped; without it,
/// a warning.
fn become_subreaper(warnings: &mut Vec<String>) {
    if let Err(e) = crate::record::failpoint::io("subreaper")
        .and_then(|()| nix::sys::prctl::set_child_subreaper(true).map_err(std::io::Error::from))
    {
        let text = format!(
            "servelab could not become a child subreaper ({e}): a server process that leaves its group and \
             session (setsid, a double fork) is not seen and may outlive the run; check `ps` after it ends"
        );
        warn(warnings, text);
    }
}

/// Pins the server to a slot's cores and, from the main thread, ties it to servelab's life (SIGTERM when
/// servelab dies), both between fork and exec.
fn pin_and_tie(cmd: &mut Command, cpus: &[usize], me: u32) -> std::io::Result<()> {
    // A slot's cores, built here: the child may not allocate between fork and exec.
    let pin = cpu_set(cpus)?;
    let on_main = std::thread::current().name() == Some("main");
    if on_main || pin.is_some() {
        // SAFETY: prctl, getppid and sched_setaffinity are async-signal-safe system calls; nothing is
        // allocated.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(set) = &pin {
                    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), set).map_err(std::io::Error::from)?;
                }
                if on_main {
                    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)?;
                    if nix::unistd::getppid().as_raw() as u32 != me {
                        return Err(std::io::Error::other("servelab exited while the server was starting"));
                    }
                }
                Ok(())
            })
        };
    }
    Ok(())
}

/// The watchdog that stops the server's tree if servelab is killed outright; without it, a warning.
fn start_watchdog(pid: u32, grace: Duration, warnings: &mut Vec<String>) -> Option<Watchdog> {
    match crate::record::failpoint::io("watchdog").and_then(|()| Watchdog::start(pid, grace)) {
        Ok(w) => Some(w),
        Err(e) => {
            let text = format!(
                "the watchdog could not be started ({e}): if servelab is killed outright (SIGKILL, OOM), the \
                 server of this start keeps running; stop it by hand then"
            );
            warn(warnings, text);
            None
        }
    }
}

/// A warning that a run goes on without something that protects it: printed at once and kept for the
/// server's startup record.
fn warn(warnings: &mut Vec<String>, text: String) {
    eprintln!("warning: {text}");
    warnings.push(text);
}

fn to_rustix(signal: Signal) -> rustix::process::Signal {
    match signal {
        Signal::SIGKILL => rustix::process::Signal::KILL,
        _ => rustix::process::Signal::TERM,
    }
}

/// A pidfd for `pid` that is known to refer to the process with start time `start` (checked after opening:
/// the PID may have been reused between reading the table and opening).
fn open_pidfd(pid: u32, start: u64) -> Option<OwnedFd> {
    let raw = rustix::process::Pid::from_raw(pid as i32)?;
    let fd = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty()).ok()?;
    (procfs::entry(pid)?.start == start).then_some(fd)
}

pub struct ServerProcess {
    child: Child,
    pub pid: u32,
    /// The server's output, drained by a thread of its own into `server.log`.
    pub log: ServerLog,
    pub started: Instant,
    ownership: Ownership,
    /// The leader has been reaped: its PID, and so the group id, may belong to someone else now.
    leader_reaped: bool,
    marker: String,
    /// `SERVELAB_SERVER_START=<n>`: this server's own.
    start_marker: String,
    watchdog: Option<Watchdog>,
    stopped: bool,
    /// What this server runs without (the subreaper, the watchdog), for its startup record.
    warnings: Vec<String>,
}

impl ServerProcess {
    /// Starts `argv` with `env` added to servelab's environment; stdout and stderr go through a drained pipe
    /// to `log_path` (engine::log).
    /// `grace` is how long the watchdog waits after SIGTERM before SIGKILL, should servelab die.
    pub fn spawn(
        argv: &[String],
        env: &indexmap::IndexMap<String, String>,
        log_path: &Path,
        grace: Duration,
        cpus: &[usize],
    ) -> std::io::Result<Self> {
        let (program, args) = argv.split_first().ok_or_else(|| std::io::Error::other("empty command"))?;
        let (output, output_writer) = std::io::pipe()?;
        let mut warnings = Vec::new();
        become_subreaper(&mut warnings);
        let me = std::process::id();
        let nth = STARTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(env)
            .env(MARKER, me.to_string())
            .env(START_MARKER, nth.to_string())
            .stdin(Stdio::null())
            .stdout(output_writer.try_clone()?)
            .stderr(output_writer)
            .process_group(0);
        pin_and_tie(&mut cmd, cpus, me)?;
        let log = ServerLog::start(log_path, output)?;
        let child = cmd.spawn()?;
        // Only the server holds the pipe's writing end now, so the drain ends when its last process does.
        drop(cmd);
        let pid = child.id();
        let watchdog = start_watchdog(pid, grace, &mut warnings);
        let mut process = ServerProcess {
            child,
            pid,
            log,
            started: Instant::now(),
            ownership: Ownership::default(),
            leader_reaped: false,
            marker: format!("{MARKER}={me}"),
            start_marker: format!("{START_MARKER}={nth}"),
            watchdog,
            stopped: false,
            warnings,
        };
        process.tree();
        Ok(process)
    }

    /// The exit status, if the server has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.try_wait().ok().flatten();
        self.leader_reaped |= status.is_some();
        status
    }

    /// The server's current processes (group members, descendants, adopted orphans), remembered for the stop.
    pub fn tree(&mut self) -> BTreeSet<u32> {
        let table = procfs::process_table();
        self.reap_adopted(&table);
        let (marker, start_marker) = (&self.marker, &self.start_marker);
        let by_pid: HashMap<u32, u64> = table.iter().map(|e| (e.pid, e.start)).collect();
        let tree = self.ownership.scan(
            &table,
            self.pid,
            std::process::id(),
            |pid| procfs::has_env(pid, marker) && procfs::has_env(pid, start_marker),
            |pid| by_pid.get(&pid).and_then(|start| open_pidfd(pid, *start)),
        );
        if let Some(w) = &mut self.watchdog
            && let Err(e) = w.tell(self.ownership.identities())
        {
            let text = format!(
                "the watchdog is gone ({e}): if servelab is killed outright from now on, the server keeps running"
            );
            warn(&mut self.warnings, text);
            if let Some(w) = self.watchdog.take() {
                w.dismiss();
            }
        }
        tree
    }

    /// What this server ran without, each already printed on stderr.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Orphans re-parented to servelab become its zombies when they exit: reap each by PID (a `waitpid(-1)`
    /// could take the status of a child someone else waits for).
    fn reap_adopted(&self, table: &[ProcEntry]) {
        let me = std::process::id();
        let pids = self.ownership.pids();
        for e in table.iter().filter(|e| e.zombie && e.ppid == me && e.pid != self.pid && pids.contains(&e.pid)) {
            let pid = Pid::from_raw(e.pid as i32);
            seen_by_the_next_scan(nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)));
        }
    }

    /// Whether the server is still serving: its leader alive (a dead engine core makes vLLM exit).
    pub fn alive(&mut self) -> bool {
        self.exited().is_none()
    }

    pub fn seen(&self) -> BTreeSet<u32> {
        self.ownership.pids()
    }

    fn signal_all(&mut self, signal: Signal) {
        if !self.leader_reaped {
            seen_by_the_next_scan(killpg(Pid::from_raw(self.pid as i32), signal));
        }
        self.ownership.signal(&procfs::process_table(), signal);
    }

    fn all_gone(&mut self) -> bool {
        self.exited(); // reap the leader so it does not linger as a zombie
        self.tree().is_empty()
    }

    /// Polls until every owned process is gone or `limit` passes (an absolute deadline; the async sleep lets
    /// the signal handler and the client run meanwhile).
    async fn wait_gone(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if self.all_gone() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.all_gone()
    }

    /// The same for `Drop`, which cannot await; it only runs when the executor left by an error or a panic.
    fn wait_gone_blocking(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline && !self.all_gone() {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.all_gone()
    }

    /// SIGTERM to the group and every owned process, wait up to `grace`, then SIGKILL to what is left.
    pub async fn stop(&mut self, grace: Duration) -> StopReport {
        self.tree();
        let begin = Instant::now();
        self.signal_all(Signal::SIGTERM);
        let clean = self.wait_gone(grace).await;
        let stop_s = begin.elapsed().as_secs_f64();
        if !clean {
            self.signal_all(Signal::SIGKILL);
            self.wait_gone(Duration::from_secs(10)).await;
        }
        let exit = self.child.try_wait().ok().flatten().or_else(|| self.child.wait().ok());
        self.leader_reaped = true;
        self.stopped = true;
        let leftover = self.ownership.alive(&procfs::process_table());
        if let Some(w) = self.watchdog.take() {
            w.dismiss();
        }
        StopReport {
            stop_s,
            escalated: !clean,
            leftover: leftover.into_iter().collect(),
            exit: exit.map(|s| s.to_string()),
        }
    }
}

impl Drop for ServerProcess {
    /// Whatever path leaves the executor (an error, a panic), no server is left behind.
    fn drop(&mut self) {
        if !self.stopped {
            self.signal_all(Signal::SIGKILL);
            self.wait_gone_blocking(Duration::from_secs(5));
            seen_by_the_next_scan(self.child.wait());
            if let Some(w) = self.watchdog.take() {
                w.dismiss();
            }
        }
    }
}

/// Stops at once every process that carries this servelab's marker (the second Ctrl-C): each is pinned with a
/// pidfd and checked for the marker again before SIGKILL, so a PID reused in between is never hit; a marked
/// group leader's whole group goes too (a process that scrubbed its environment stays in its group). Safe
/// from any thread, and needs no record of which server is running.
pub fn kill_marked() {
    let marker = format!("{MARKER}={}", std::process::id());
    for e in procfs::process_table().iter().filter(|e| !e.zombie) {
        let Some(raw) = rustix::process::Pid::from_raw(e.pid as i32) else { continue };
        let Ok(fd) = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty()) else { continue };
        if !procfs::has_env(e.pid, &marker) {
            continue;
        }
        // A process these miss is the watchdog's: it sees servelab's pipe close and stops what it was told of.
        if e.pgrp == e.pid {
            seen_by_the_next_scan(killpg(Pid::from_raw(e.pgrp as i32), Signal::SIGKILL));
        }
        seen_by_the_next_scan(rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL));
    }
}

/// servelab re-executed in a process group of its own, reading a pipe: `P <pid> <start>` lines name the
/// processes servelab owns, `D` means the server was stopped and the watchdog just exits; end of file without
/// `D` means servelab died, and the watchdog stops the group and every process it was told of.
struct Watchdog {
    child: Child,
    pipe: std::io::PipeWriter,
    told: BTreeSet<u32>,
}

impl Watchdog {
    fn start(pgid: u32, grace: Duration) -> std::io::Result<Self> {
        let (read, pipe) = std::io::pipe()?;
        let child = Command::new(std::env::current_exe()?)
            .args([WATCHDOG_ARG, &pgid.to_string(), &grace.as_millis().to_string()])
            .stdin(read)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        Ok(Watchdog { child, pipe, told: BTreeSet::new() })
    }

    /// Tells the watchdog of owned processes it does not know yet; an error means it is gone.
    fn tell(&mut self, identities: impl Iterator<Item = (u32, u64)>) -> std::io::Result<()> {
        let mut lines = String::new();
        for (pid, start) in identities {
            if self.told.insert(pid) {
                lines.push_str(&format!("P {pid} {start}\n"));
            }
        }
        if lines.is_empty() {
            return Ok(());
        }
        crate::record::failpoint::io("watchdog-gone")?;
        self.pipe.write_all(lines.as_bytes())
    }

    /// The server was stopped: the watchdog may exit. A watchdog that missed the word (it died first) sees its
    /// pipe close and finds nothing of the server left to stop, so a failed write changes nothing; the wait
    /// reaps it.
    fn dismiss(mut self) {
        let said = self.pipe.write_all(b"D\n");
        drop(self.pipe);
        let reaped = self.child.wait();
        #[expect(clippy::let_underscore_must_use, reason = "either outcome leaves nothing to do (see above)")]
        let _: std::io::Result<std::process::ExitStatus> = said.and(reaped);
    }
}

/// The watchdog's life (`servelab __watchdog <pgid> <grace ms>`): wait for servelab to dismiss it or die; if it
/// died, SIGTERM to the server's group and to every process it was told of (vLLM shuts its engine core down),
/// then SIGKILL after the grace period to what is left. Terminal signals are ignored: a closed terminal or
/// Ctrl-C must not take the watchdog before servelab.
pub fn watchdog_main(args: &[String]) -> i32 {
    use std::io::BufRead;
    let Some(pgid) = args.first().and_then(|a| a.parse::<i32>().ok()).filter(|p| *p > 1) else { return 2 };
    let grace = Duration::from_millis(args.get(1).and_then(|a| a.parse().ok()).unwrap_or(30_000));
    for sig in [Signal::SIGINT, Signal::SIGHUP, Signal::SIGQUIT] {
        // SAFETY: installing SIG_IGN runs no handler code.
        let ignored = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn) };
        #[expect(
            clippy::let_underscore_must_use,
            reason = "SIG_IGN for these cannot fail (EINVAL is for SIGKILL and SIGSTOP alone); the watchdog \
                      has no stderr to say so and would still work until such a signal came"
        )]
        let _: nix::Result<nix::sys::signal::SigHandler> = ignored;
    }
    let mut owned = Ownership::default();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let mut words = line.split_whitespace();
        match (
            words.next(),
            words.next().and_then(|w| w.parse::<u32>().ok()),
            words.next().and_then(|w| w.parse().ok()),
        ) {
            (Some("D"), ..) => return 0,
            (Some("P"), Some(pid), Some(start)) => {
                // Opened now, while servelab is alive: a process that already exited is not taken for its PID.
                owned.owned.insert(pid, Owned { start, fd: open_pidfd(pid, start) });
            }
            _ => {}
        }
    }
    // The group id is ours while one of our processes is in it (an id in use is never given out again).
    let group = Pid::from_raw(pgid);
    let stop = |o: &Ownership, signal: Signal| {
        let table = procfs::process_table();
        let alive = o.alive(&table);
        if table.iter().any(|e| e.pgrp == pgid as u32 && alive.contains(&e.pid)) {
            seen_by_the_next_scan(killpg(group, signal));
        }
        o.signal(&table, signal);
        !alive.is_empty()
    };
    stop(&owned, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && !owned.alive(&procfs::process_table()).is_empty() {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop(&owned, Signal::SIGKILL);
    0
}

/// The CPU set of `cpus`, None when it is empty (not pinned).
pub fn cpu_set(cpus: &[usize]) -> std::io::Result<Option<nix::sched::CpuSet>> {
    if cpus.is_empty() {
        return Ok(None);
    }
    let mut set = nix::sched::CpuSet::new();
    for &c in cpus {
        set.set(c).map_err(std::io::Error::from)?;
    }
    Ok(Some(set))
}

/// Pins the calling thread to `cpus` (nothing when empty): a slot's client threads run on its own cores.
pub fn pin_current_thread(cpus: &[usize]) -> std::io::Result<()> {
    match cpu_set(cpus)? {
        Some(set) => nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).map_err(std::io::Error::from),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
