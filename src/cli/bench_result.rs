//! `servelab bench --save-result`: vLLM's result JSON of each point, read back from the run folder's records
//! (so it says what `servelab report` would) and written where `vllm bench serve` would write it.

use super::bench::{Backend, BenchArgs, percentile_metrics, percentiles};
use crate::exit::Error;
use crate::record::io::write_atomic;
use crate::report::vllm_result::{Goodput, Setup, vllm_result};
use std::path::{Path, PathBuf};

/// What `--save-result` asks for, checked before anything runs.
pub(super) struct Save {
    setup: Setup,
    dir: Option<PathBuf>,
    filename: Option<String>,
    /// The prefix of the default file name: `--label`, else `--backend` as given.
    label: String,
    /// `--max-concurrency` was given: a closed loop's level is vLLM's cap, not "every request at once".
    capped: bool,
    /// `--dataset-name mooncake`: the trace sets the requests and their pace.
    trace: bool,
}

/// Python's `str(float)` of a rate, as vLLM's file name has it: `10.0`, `2.5`, `inf`.
fn py_float(x: f64) -> String {
    if x.is_infinite() {
        "inf".to_owned()
    } else if x.fract() == 0.0 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

impl Save {
    /// None without `--save-result`; an error for flags the result cannot honour.
    pub(super) fn from_args(b: &BenchArgs) -> Result<Option<Save>, Error> {
        let goodput = b
            .goodput
            .iter()
            .map(|g| Goodput::parse(g).map_err(|e| Error::Usage(format!("--goodput: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let (metrics, percentiles) = (percentile_metrics(b)?, percentiles(b)?);
        if !b.save_result {
            return Ok(None);
        }
        if b.repeats != 1 {
            return Err(Error::Usage(
                "--save-result writes one result per point, as vLLM does: run it with --repeats 1 (the run \
                 folder's reports give the repeats' intervals)"
                    .to_owned(),
            ));
        }
        let label = match b.backend {
            Backend::Vllm => "vllm",
            Backend::Openai => "openai",
            Backend::OpenaiChat => "openai-chat",
        };
        let metadata = b
            .metadata
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => Ok((k.trim().to_owned(), v.trim().to_owned())),
                None => Err(Error::Usage(format!("--metadata {kv}: write KEY=VALUE"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let setup = Setup {
            backend: label.to_owned(),
            label: b.label.clone(),
            metadata,
            model_id: b.model.clone().unwrap_or_default(),
            num_prompts: b.num_prompts.unwrap_or(1000),
            request_rate: b.request_rate.is_finite().then_some(b.request_rate),
            burstiness: b.burstiness,
            max_concurrency: None,
            percentile_metrics: metrics,
            percentiles,
            goodput,
        };
        let (dir, filename) = (b.result_dir.clone(), b.result_filename.clone());
        let label = b.label.clone().unwrap_or_else(|| label.to_owned());
        let (capped, trace) = (!b.max_concurrency.is_empty(), b.dataset_name == super::bench::DatasetName::Mooncake);
        Ok(Some(Save { setup, dir, filename, label, capped, trace }))
    }

    /// One result per point of the run in `run`, each named as vLLM names it (`-concurrency{N}` tells points
    /// apart; an explicit `--result-filename` gains it only when there are several points).
    pub(super) fn write(&self, run: &Path) -> Result<(), Error> {
        let (_, _, rec) = crate::report::open_run(run).map_err(|e| Error::Output(e.to_string()))?;
        let many = rec.points.len() > 1;
        for point in &rec.points {
            let requests: Vec<_> =
                rec.requests.iter().filter(|r| r.point == point.point && r.attempt == point.attempt).collect();
            let mut setup = self.setup.clone();
            let cap = |k: &str| point.vars.get(k).and_then(crate::record::values::Scalar::as_f64).map(|c| c as u32);
            setup.max_concurrency =
                if self.capped { cap("max_concurrency").or_else(|| cap("concurrency")) } else { None };
            if self.trace {
                // The trace window's requests and mean rate stand for --num-prompts and --request-rate.
                setup.num_prompts = point.client.requests;
                setup.request_rate = point.client.open_loop.as_ref().map(|o| o.rate);
            }
            if setup.model_id.is_empty() {
                setup.model_id = point.model.clone();
            }
            let value = vllm_result(&point.started_at, &requests, &setup);
            let date = value["date"].as_str().unwrap_or_default().to_owned();
            let name = self.file_name(&setup, &date, many, cap("client_threads"));
            let path = self.dir.as_ref().map_or_else(|| PathBuf::from(&name), |d| d.join(&name));
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Error::Output(format!("--result-dir {}: {e}", parent.display())))?;
            }
            let text = serde_json::to_string(&value).map_err(|e| Error::Internal(e.to_string()))?;
            write_atomic(&path, text.as_bytes()).map_err(|e| Error::Output(e.to_string()))?;
            eprintln!("result: {}", path.display());
        }
        Ok(())
    }

    /// `threads`: the point's `--client-threads` value, when that flag made a grid axis of it.
    fn file_name(&self, setup: &Setup, date: &str, many: bool, threads: Option<u32>) -> String {
        let mut conc = setup.max_concurrency.map(|c| format!("-concurrency{c}")).unwrap_or_default();
        if let Some(n) = threads {
            conc.push_str(&format!("-threads{n}"));
        }
        match &self.filename {
            Some(f) if many => match f.rsplit_once('.') {
                Some((stem, ext)) => format!("{stem}{conc}.{ext}"),
                None => format!("{f}{conc}"),
            },
            Some(f) => f.clone(),
            None => {
                let rate = py_float(setup.request_rate.unwrap_or(f64::INFINITY));
                let model = setup.model_id.rsplit('/').next().unwrap_or_default();
                format!("{}-{rate}qps{conc}-{model}-{date}.json", self.label)
            }
        }
    }
}
