//! The server's output: stdout and stderr go through a pipe that a dedicated thread drains at once, whatever
//! the server writes, so a chatty or endless log never stalls vLLM (a full pipe would block its writes) and
//! never fills the disk or servelab's memory. The first [`HEAD`] bytes go to `server.log` as they arrive (the
//! startup lines the log parser reads are there); after that only the last [`TAIL`] bytes are kept, and are
//! appended to the file, after a line saying how much was left out, when the server has stopped.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Bytes of the log's beginning written to `server.log` as they come.
pub const HEAD: usize = 8 << 20;
/// Bytes of the log's end kept after the head is full.
pub const TAIL: usize = 2 << 20;

#[derive(Default)]
struct State {
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    omitted: u64,
    /// Set when the server has stopped: the thread writes no more to the file (it still drains the pipe
    /// while a process that escaped the stop holds it open).
    closed: bool,
    /// The first failed write of the head (a full disk): the drain goes on, `close` reports it.
    write_error: Option<std::io::Error>,
}

/// A handle on the drained log, shared with the draining thread.
#[derive(Clone)]
pub struct ServerLog {
    path: PathBuf,
    state: Arc<Mutex<State>>,
}

impl ServerLog {
    /// Creates `path` and starts draining `pipe` into it.
    pub fn start(path: &Path, pipe: std::io::PipeReader) -> std::io::Result<ServerLog> {
        let file = File::create(path)?;
        let log = ServerLog { path: path.to_owned(), state: Arc::default() };
        let state = log.state.clone();
        std::thread::Builder::new().name("server-log".into()).spawn(move || drain(pipe, file, &state))?;
        Ok(log)
    }

    /// The file the log goes to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The log as kept so far: head, a line for what was left out, tail.
    pub fn text(&self) -> String {
        let s = self.lock();
        let mut bytes = s.head.clone();
        if s.omitted > 0 {
            bytes.extend_from_slice(omitted_line(s.omitted).as_bytes());
        }
        bytes.extend(s.tail.iter());
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// After the server stopped: appends the omitted-bytes line and the tail to the file; the file is final.
    pub fn close(&self) -> std::io::Result<()> {
        let mut s = self.lock();
        if s.closed {
            return Ok(());
        }
        s.closed = true;
        if let Some(e) = s.write_error.take() {
            return Err(std::io::Error::new(e.kind(), format!("a write of the log's head failed: {e}")));
        }
        if s.omitted == 0 {
            return Ok(());
        }
        let mut file = std::fs::OpenOptions::new().append(true).open(&self.path)?;
        file.write_all(omitted_line(s.omitted).as_bytes())?;
        let (a, b) = s.tail.as_slices();
        file.write_all(a)?;
        file.write_all(b)?;
        file.sync_all()
    }
}

fn omitted_line(bytes: u64) -> String {
    format!("\n[servelab: {bytes} bytes of the server's output left out here; the first and last are kept]\n")
}

fn drain(mut pipe: std::io::PipeReader, mut file: File, state: &Mutex<State>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let room = HEAD.saturating_sub(s.head.len()).min(n);
        if room > 0 && !s.closed {
            // A failed write (disk full) loses log lines, never the measurement: the pipe keeps draining, and
            // the stop reports the loss in the server's record.
            if let Err(e) = file.write_all(&buf[..room])
                && s.write_error.is_none()
            {
                s.write_error = Some(e);
            }
            s.head.extend_from_slice(&buf[..room]);
        }
        s.tail.extend(&buf[room..n]);
        let over = s.tail.len().saturating_sub(TAIL);
        s.tail.drain(..over);
        s.omitted += over as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_log_keeps_its_head_and_tail_and_never_blocks_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.log");
        let (read, mut write) = std::io::pipe().unwrap();
        let log = ServerLog::start(&path, read).unwrap();
        let line = b"INFO a line of a chatty server\n";
        let total = HEAD + TAIL + 3 * 1024 * 1024;
        let mut written = 0;
        while written < total {
            write.write_all(line).unwrap();
            written += line.len();
        }
        write.write_all(b"LAST LINE\n").unwrap();
        drop(write);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !log.text().ends_with("LAST LINE\n") {
            assert!(std::time::Instant::now() < deadline, "the drain fell behind");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        log.close().unwrap();
        let file = std::fs::read_to_string(&path).unwrap();
        assert!(file.len() < HEAD + TAIL + 200, "{}", file.len());
        assert!(file.starts_with("INFO a line") && file.ends_with("LAST LINE\n"));
        assert!(file.contains("bytes of the server's output left out here"));
        assert_eq!(file, log.text());
    }
}
