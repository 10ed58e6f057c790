//! The engine lifecycle: start a server in its own process group, wait until it serves, read its startup
//! facts, stop it. Knows nothing of experiments or reports.

pub mod log;
pub mod logargs;
pub mod logparse;
pub mod process;
pub mod ready;

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot start `{program}`: {source}; {hint}")]
    Spawn { program: String, source: std::io::Error, hint: String },
    #[error("port {port} on {host} is already in use; stop whatever listens there or set `engine.port` to a free port")]
    PortInUse { host: String, port: u16 },
    #[error("the server exited during startup ({status}): {failure}\n--- last lines of {log} ---\n{tail}")]
    ExitedEarly { status: String, failure: String, log: String, tail: String },
    #[error("the server was not ready after {:.0} s (polling {url}); raise `engine.ready_timeout` if it is just slow\n--- last lines of {log} ---\n{tail}", .timeout.as_secs_f64())]
    NotReady { timeout: Duration, url: String, log: String, tail: String },
    #[error("interrupted")]
    Interrupted,
}

impl EngineError {
    /// The one line a CSV or report shows for this failure: vLLM's own words when there are some.
    pub fn short(&self) -> String {
        match self {
            EngineError::ExitedEarly { failure, .. } => failure.clone(),
            EngineError::NotReady { timeout, .. } => format!("not ready after {:.0} s", timeout.as_secs_f64()),
            other => other.to_string().lines().next().unwrap_or_default().to_owned(),
        }
    }
}
