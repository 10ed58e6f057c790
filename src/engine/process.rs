//! The server process: started in its own process group with its output in a log file, stopped with SIGTERM
//! to the group, a grace period, then SIGKILL to the group. A SIGKILL to the API server alone would orphan
//! vLLM's engine core, which keeps its memory (vLLM issue 55510), so signals always go to the whole group,
//! and to any descendant that left it.

use crate::probe::procfs;
pub use crate::record::server::StopReport;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The process group of the server running now (0: none), for a second Ctrl-C that must stop it at once.
pub static CURRENT_GROUP: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Kills the current server's group immediately (the second Ctrl-C); safe to call from any thread.
pub fn kill_current_group() {
    let pgid = CURRENT_GROUP.swap(0, std::sync::atomic::Ordering::SeqCst);
    if pgid > 0 {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

pub struct ServerProcess {
    child: Child,
    pub pid: u32,
    pub started: Instant,
    /// Every process ever seen in the server's tree; all must be gone after stop.
    seen: BTreeSet<u32>,
    stopped: bool,
}

impl ServerProcess {
    /// Starts `argv` with `env` added to servelab's environment; stdout and stderr go to `log_path`.
    pub fn spawn(argv: &[String], env: &indexmap::IndexMap<String, String>, log_path: &Path) -> std::io::Result<Self> {
        let (program, args) = argv.split_first().ok_or_else(|| std::io::Error::other("empty command"))?;
        let log = File::create(log_path)?;
        let child = Command::new(program)
            .args(args)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()?;
        let pid = child.id();
        CURRENT_GROUP.store(pid as i32, std::sync::atomic::Ordering::SeqCst);
        Ok(ServerProcess { child, pid, started: Instant::now(), seen: [pid].into(), stopped: false })
    }

    /// The exit status, if the server has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The server's current process tree (group members and descendants), remembered for the final check.
    pub fn tree(&mut self) -> BTreeSet<u32> {
        let tree = procfs::server_tree(self.pid);
        self.seen.extend(&tree);
        tree
    }

    /// Whether the server is still serving: its leader alive (a dead engine core makes vLLM exit).
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    pub fn seen(&self) -> &BTreeSet<u32> {
        &self.seen
    }

    fn signal_all(&self, signal: Signal) {
        let _ = killpg(Pid::from_raw(self.pid as i32), signal);
        for pid in procfs::alive(&self.seen) {
            let _ = kill(Pid::from_raw(pid as i32), signal);
        }
    }

    fn all_gone(&mut self) -> bool {
        let _ = self.child.try_wait(); // reap the leader so it does not linger as a zombie
        self.tree();
        procfs::alive(&self.seen).is_empty()
    }

    fn wait_gone(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.all_gone() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.all_gone()
    }

    /// SIGTERM to the group, wait up to `grace`, then SIGKILL to the group and every straggler.
    pub fn stop(&mut self, grace: Duration) -> StopReport {
        self.tree();
        let begin = Instant::now();
        self.signal_all(Signal::SIGTERM);
        let clean = self.wait_gone(grace);
        let stop_s = begin.elapsed().as_secs_f64();
        if !clean {
            self.signal_all(Signal::SIGKILL);
            self.wait_gone(Duration::from_secs(10));
        }
        let exit = self.child.try_wait().ok().flatten().or_else(|| self.child.wait().ok());
        self.stopped = true;
        let _ = CURRENT_GROUP.compare_exchange(
            self.pid as i32,
            0,
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
        );
        StopReport {
            stop_s,
            escalated: !clean,
            leftover: procfs::alive(&self.seen).into_iter().collect(),
            exit: exit.map(|s| s.to_string()),
        }
    }
}

impl Drop for ServerProcess {
    /// Whatever path leaves the executor (an error, a panic), no server is left behind.
    fn drop(&mut self) {
        if !self.stopped {
            self.signal_all(Signal::SIGKILL);
            self.wait_gone(Duration::from_secs(5));
            let _ = self.child.wait();
        }
    }
}
