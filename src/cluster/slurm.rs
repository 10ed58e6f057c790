//! `servelab export slurm`: `shards.sbatch` (a job array, one shard per task), `merge.sbatch` (checks which
//! shards left a run folder, says which are missing, merges the rest) and `submit.sh` (the array, then the
//! merge with `afterany`: with `afterok` one failed shard would leave the merge pending for ever).

use super::{ExportError, Resources, SlurmArgs, absolute, sh_quote, spec_args};
use std::path::PathBuf;

/// A value written into an `#SBATCH` line, where no shell quoting applies: no whitespace, no `%` (Slurm's
/// file-name patterns), no quote.
fn sbatch_safe(what: &'static str, value: &str) -> Result<(), ExportError> {
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || matches!(c, '%' | '"' | '\'' | '\\')) {
        return Err(ExportError::Unsafe {
            what,
            value: value.to_owned(),
            fix: "use a path or name without spaces, quotes or '%'",
        });
    }
    Ok(())
}

pub fn files(a: &SlurmArgs, r: &Resources) -> Result<Vec<(PathBuf, Vec<u8>)>, ExportError> {
    let c = &a.common;
    let shared = absolute(a.shared.as_deref().unwrap_or(std::path::Path::new("out")))?;
    let workdir = absolute(std::path::Path::new("."))?;
    let dir = absolute(&c.dir)?;
    let (shared, workdir, dir) =
        (shared.display().to_string(), workdir.display().to_string(), dir.display().to_string());
    sbatch_safe("--shared", &shared)?;
    sbatch_safe("the folder servelab export runs in", &workdir)?;
    sbatch_safe("the spec's name", &r.name)?;
    if let Some(p) = &a.partition {
        sbatch_safe("--partition", p)?;
    }
    let spec = absolute(&c.spec)?.display().to_string();
    let run_args = spec_args(&spec, &c.set);
    Ok(vec![
        (PathBuf::from("shards.sbatch"), shards(a, r, &shared, &workdir, &run_args).into_bytes()),
        (PathBuf::from("merge.sbatch"), merge(a, r, &shared, &workdir, &dir).into_bytes()),
        (PathBuf::from("submit.sh"), submit(r, &shared).into_bytes()),
    ])
}

fn header(r: &Resources, job: &str, shared: &str, workdir: &str, log: &str) -> String {
    let mut s = String::from("#!/bin/bash\n");
    putln!(s, "# Written by `servelab export slurm`; see docs/slurm.md. Submit with submit.sh beside it.");
    putln!(s, "#SBATCH --job-name=servelab-{}{job}", r.name);
    putln!(s, "#SBATCH --chdir={workdir}");
    putln!(s, "#SBATCH --output={shared}/{}/logs/{log}", r.name);
    s
}

fn shards(a: &SlurmArgs, r: &Resources, shared: &str, workdir: &str, run_args: &str) -> String {
    let (n, name) = (r.shards.len(), &r.name);
    let mut s = header(r, "", shared, workdir, "shard-%a.out");
    putln!(s, "#SBATCH --array=0-{}", n - 1);
    putln!(s, "#SBATCH --cpus-per-task={}", r.cpus);
    if r.gpus > 0 {
        putln!(s, "#SBATCH --gres=gpu:{}", r.gpus);
    }
    putln!(s, "#SBATCH --time={}", r.minutes);
    if let Some(p) = &a.partition {
        putln!(s, "#SBATCH --partition={p}");
    }
    let servelab = sh_quote(&a.common.servelab);
    s.push_str(&format!(
        "set -euo pipefail
# One shard per array task; a shard whose run folder exists is resumed in place, so submitting a task again
# measures only what it lacks (points not yet measured ok).
RUNS={runs}
I=\"$SLURM_ARRAY_TASK_ID\"
DIR=\"$RUNS/{name}/shard-$I-of-{n}\"
if [ -f \"$DIR/manifest.json\" ] || [ -f \"$DIR/manifest.json.xz\" ]; then
  exec {servelab} run {run_args} --shard \"$I/{n}\" --resume \"$DIR\"
fi
# A folder without a manifest (plain, or packed by `servelab compress`) was cut before anything was measured in it: start the shard afresh.
rm -rf \"$DIR\"
exec {servelab} run {run_args} --shard \"$I/{n}\" --out \"$RUNS\" --run-id \"shard-$I-of-{n}\"
",
        runs = sh_quote(shared)
    ));
    s
}

/// The merge job's own check for missing shards, shared with the Kubernetes merge Job (POSIX sh).
pub fn merge_body(servelab: &str, runs: &str, name: &str, n: usize, rerun: &str) -> String {
    format!(
        "RUNS={runs}
have=''
missing=''
i=0
while [ \"$i\" -lt {n} ]; do
  d=\"$RUNS/{name}/shard-$i-of-{n}\"
  if [ -f \"$d/manifest.json\" ] || [ -f \"$d/manifest.json.xz\" ]; then have=\"$have $d\"; else missing=\"$missing $i\"; fi
  i=$((i + 1))
done
if [ -n \"$missing\" ]; then
  echo \"missing shards:$missing (no run folder); {rerun}\" >&2
fi
if [ -z \"$have\" ]; then
  echo \"no shard left a run folder under $RUNS/{name}\" >&2
  exit 3
fi
# Word splitting of $have is intended: the folders are $RUNS/{name}/shard-I-of-{n}, without spaces.
# shellcheck disable=SC2086
exec {servelab} merge --out \"$RUNS/{name}/merged\" $have
",
        runs = sh_quote(runs),
        servelab = sh_quote(servelab)
    )
}

fn merge(a: &SlurmArgs, r: &Resources, shared: &str, workdir: &str, dir: &str) -> String {
    let mut s = header(r, "-merge", shared, workdir, "merge.out");
    putln!(s, "#SBATCH --cpus-per-task=1");
    putln!(s, "#SBATCH --time=60");
    if let Some(p) = &a.partition {
        putln!(s, "#SBATCH --partition={p}");
    }
    putln!(s, "set -u");
    let rerun = format!("re-run them with {}/submit.sh LIST (e.g. 1,3)", dir);
    s.push_str(&merge_body(&a.common.servelab, shared, &r.name, r.shards.len(), &rerun));
    s
}

fn submit(r: &Resources, shared: &str) -> String {
    format!(
        "#!/bin/bash
# Submits every shard as a job array and the merge job after it (afterany: the merge runs even when a shard
# failed, and says which are missing). `submit.sh 1,3` re-runs only shards 1 and 3 (each resumes its run
# folder) and merges again; the merged folder is replaced.
set -euo pipefail
here=\"$(cd \"$(dirname \"$0\")\" && pwd)\"
mkdir -p {logs}
array=()
if [ $# -gt 0 ]; then array=(\"--array=$1\"); fi
jid=\"$(sbatch --parsable \"${{array[@]}}\" \"$here/shards.sbatch\")\"
jid=\"${{jid%%;*}}\"
mid=\"$(sbatch --parsable --dependency=\"afterany:$jid\" \"$here/merge.sbatch\")\"
echo \"shards: job $jid; merge: job ${{mid%%;*}}; result: \"{merged}
",
        logs = sh_quote(&format!("{shared}/{}/logs", r.name)),
        merged = sh_quote(&format!("{shared}/{}/merged", r.name)),
    )
}
