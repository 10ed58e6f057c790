//! Exit codes, one per kind of outcome so scripts and CI can tell them apart.

use crate::spec::SpecError;

/// 0: every point ok.
pub const OK: i32 = 0;
/// 2: the spec or the command line is invalid; nothing ran.
pub const INVALID: i32 = 2;
/// 3: the run finished but some point failed, or the engine could not start.
pub const POINT_FAILED: i32 = 3;
/// 4: a bug in servelab (an internal error or a panic).
pub const INTERNAL: i32 = 4;
/// 5: `compare --fail-on-regression` found B significantly worse than A.
pub const REGRESSION: i32 = 5;
/// 6: an I/O or report error while the run was under way (a full disk, an output removed, a template that
/// fails on the run's data): what was measured up to it is committed in the run folder and `--resume`
/// continues.
pub const RUN_IO: i32 = 6;
/// 7: an I/O error outside a run: `report` or `compress` could not write the run folder, or a command could
/// not write its output (stdout to a full disk; a closed pipe is a quiet exit 0).
pub const OUTPUT_IO: i32 = 7;
/// 8: `report --check` found a derived file, figure or finding that the run's raw records do not support.
pub const CHECK_FAILED: i32 = 8;
/// 128 + the signal: interrupted — 130 for Ctrl-C (SIGINT), 143 for SIGTERM, 129 for SIGHUP, 131 for SIGQUIT —
/// after a graceful stop.
pub const INTERRUPTED: i32 = 130;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Spec(#[from] SpecError),
    #[error("{0}")]
    Usage(String),
    #[error("internal error (a bug in servelab, please report it): {0}")]
    Internal(String),
    #[error(
        "{0}; what was measured before it is committed in the run folder — fix the cause (free the space, fix the folder or the template), then continue with --resume"
    )]
    RunIo(String),
    #[error("{0}")]
    Output(String),
}

impl Error {
    pub fn code(&self) -> i32 {
        match self {
            Error::Spec(_) | Error::Usage(_) => INVALID,
            Error::Internal(_) => INTERNAL,
            Error::RunIo(_) => RUN_IO,
            Error::Output(_) => OUTPUT_IO,
        }
    }
}
