//! `servelab merge` and `servelab export`: joining shards of a run, and the cluster job files that run them.

use crate::exit::{self, Error};
use crate::record::io::write_atomic;
use std::path::PathBuf;

/// `servelab export`: the job files written (shell scripts executable), then what each job asks for.
pub(super) fn export(target: &crate::cluster::Target) -> Result<(), Error> {
    let e = crate::cluster::export(target).map_err(|e| Error::Usage(e.to_string()))?;
    let io = |path: &std::path::Path, e: std::io::Error| Error::Output(format!("{}: {e}", path.display()));
    for (path, bytes) in &e.files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        write_atomic(path, bytes).map_err(|e| Error::Output(e.to_string()))?;
        if path.extension().is_some_and(|x| x == "sh") {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(|e| io(path, e))?;
        }
    }
    out!("{}", e.summary);
    Ok(())
}

/// `servelab merge`: what is missing is said before anything is written; an incomplete merge is written all
/// the same (what was measured is worth reading) and exits 3.
pub(super) fn merge(
    out: &std::path::Path,
    runs: &[PathBuf],
    prefer: Option<&crate::shard::owners::Prefer>,
) -> Result<i32, Error> {
    let p = crate::shard::merge::prepare(runs, prefer).map_err(|e| Error::Usage(e.to_string()))?;
    let list = |v: &[String]| {
        if v.len() > 8 { format!("{} … ({} in all)", v[..8].join(", "), v.len()) } else { v.join(", ") }
    };
    if !p.missing_shards.is_empty() {
        let shards: Vec<String> = p.missing_shards.iter().map(usize::to_string).collect();
        eprintln!(
            "missing shards: {} (re-run each with `servelab run SPEC --shard I/N`, then merge again)",
            shards.join(", ")
        );
    }
    if !p.missing_points.is_empty() {
        eprintln!("missing points: {}", list(&p.missing_points));
    }
    if !p.failed_points.is_empty() {
        eprintln!("failed points (latest attempt): {} (re-run their shard with --resume)", list(&p.failed_points));
    }
    let files = p.write(out).map_err(|e| match e {
        crate::shard::merge::MergeError::Out { .. } | crate::shard::merge::MergeError::Write(_) => {
            Error::Output(e.to_string())
        }
        other => Error::Usage(other.to_string()),
    })?;
    outln!("merged {} runs into {}: {} derived files ({})", p.runs(), out.display(), files.len(), files.join(", "));
    Ok(if p.complete() { exit::OK } else { exit::POINT_FAILED })
}
