//! Running a plan from the command line: the tokio runtime, the signal handling, the summary and exit code.

use crate::exit::{self, Error};
use crate::plan::Plan;
use crate::run::{self, RunError, RunOptions};
use crate::spec::LoadedSpec;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::AtomicI32;
use std::sync::atomic::{AtomicBool, Ordering};

/// One shutdown path for SIGINT (Ctrl-C), SIGTERM (CI cancel, `timeout`), SIGHUP (a closed terminal) and
/// SIGQUIT: the first stops gracefully (in-flight requests cancelled, the server stopped, partial reports
/// written; the run then exits 128 + the signal's number), the second stops at once — every process
/// carrying this servelab's marker is killed (engine::process::kill_marked), so nothing is left behind. Messages go through `writeln!` on stderr, which cannot panic when
/// the terminal is gone.
async fn shutdown_on_signals(interrupted: Arc<AtomicBool>, which: Arc<AtomicI32>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term), Ok(mut hup), Ok(mut quit)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
        signal(SignalKind::quit()),
    ) else {
        note(format_args!("warning: cannot listen for signals; Ctrl-C will not stop the run cleanly\n"));
        return;
    };
    let mut next = async || -> i32 {
        tokio::select! {
            // why: recv() gives None only once its listener is dropped, which these never are while they wait.
            _ = int.recv() => 2,
            _ = term.recv() => 15,
            _ = hup.recv() => 1,
            _ = quit.recv() => 3,
        }
    };
    let first = next().await;
    which.store(first, Ordering::SeqCst);
    interrupted.store(true, Ordering::SeqCst);
    note(format_args!(
        "interrupted (signal {first}): cancelling in-flight requests, stopping the server, writing partial reports (again to stop at once)\n"
    ));
    let second = next().await;
    crate::engine::process::kill_marked();
    note(format_args!("interrupted twice: killed the server's processes\n"));
    std::process::exit(128 + second);
}

/// A line on stderr where a panic would cost more than the line: in the signal task (a panic there ends the
/// second signal's handling) and after an interrupted run (its exit code must still come out).
fn note(args: std::fmt::Arguments) {
    #[expect(clippy::let_underscore_must_use, reason = "a failed write to stderr has nowhere else to be reported")]
    let _: std::io::Result<()> = std::io::stderr().write_fmt(args);
}

/// Runs the plan on a tokio runtime; Ctrl-C stops the current server before exiting with 130.
pub(super) fn run_experiment(loaded: &LoadedSpec, plan: &Plan, opts: RunOptions) -> Result<i32, Error> {
    run_plan(loaded, plan, opts).map(|(code, _)| code)
}

/// `run_experiment`, also giving the run folder (None when the run was interrupted: its records are partial).
pub(super) fn run_plan(
    loaded: &LoadedSpec,
    plan: &Plan,
    opts: RunOptions,
) -> Result<(i32, Option<std::path::PathBuf>), Error> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| Error::Internal(e.to_string()))?;
    let interrupted = Arc::new(AtomicBool::new(false));
    let signal = Arc::new(AtomicI32::new(0));
    runtime.spawn(shutdown_on_signals(interrupted.clone(), signal.clone()));
    let outcome = runtime.block_on(run::execute(loaded, plan, &opts, &interrupted)).map_err(|e| match e {
        // Before any server started: nothing ran.
        RunError::Output { .. }
        | RunError::Record(_)
        | RunError::Probe(_)
        | RunError::Preflight(_)
        | RunError::Report(_)
        | RunError::Templates { .. }
        | RunError::VllmChanged { .. } => Error::Usage(e.to_string()),
        RunError::Internal(msg) => Error::Internal(msg),
        RunError::HttpClient(_) => Error::Internal(e.to_string()),
        RunError::DuringRun(inner) => Error::RunIo(inner.to_string()),
    })?;
    out!("{}", crate::report::console::after_run(&loaded.spec, &outcome.manifest, &outcome.dir, &outcome.recorded));
    if outcome.interrupted {
        let sig = signal.load(Ordering::SeqCst);
        note(format_args!("interrupted; what was measured is in {}\n", outcome.dir.display()));
        return Ok((if sig > 0 { 128 + sig } else { exit::INTERRUPTED }, None));
    }
    let (failed_servers, failed_points) = (outcome.failed_servers(), outcome.failed_points());
    let (ok_starts, starts) = outcome.starts_ok();
    eprintln!(
        "{ok_starts} of {starts} server starts ok, {failed_points} load points failed; outputs in {}",
        outcome.dir.display()
    );
    let code = if failed_servers + failed_points > 0 { exit::POINT_FAILED } else { exit::OK };
    Ok((code, Some(outcome.dir)))
}
