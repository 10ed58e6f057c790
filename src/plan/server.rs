//! Renders the engine section at one grid point into a server configuration: argv, env, URLs.

use super::check::{at_point, render_at, render_int};
use super::render::Renderer;
use super::{PlanError, ServerConfig, key};
use crate::spec::{ArgValue, EngineKind, Scalar, Seg, Spec};
use indexmap::IndexMap;
use minijinja::Value;
use minijinja::value::ValueKind;

/// The default command of a `vllm` engine.
pub const VLLM_COMMAND: [&str; 3] = ["vllm", "serve", "{{ model }}"];

/// Template context: the grid point plus `host`, `port` and `model` as far as they are known.
fn ctx_of(vars: &IndexMap<String, Scalar>, extra: &[(&str, Value)]) -> Value {
    let mut map: IndexMap<String, Value> = vars.iter().map(|(k, v)| (k.clone(), Value::from_serialize(v))).collect();
    for (k, v) in extra {
        map.insert((*k).to_owned(), v.clone());
    }
    Value::from_serialize(&map)
}

/// The context the load section is rendered in.
pub fn context(vars: &IndexMap<String, Scalar>, server: &ServerConfig) -> Value {
    let model = server.model.clone().map(Value::from).unwrap_or(Value::from(()));
    ctx_of(vars, &[("host", Value::from(server.host.clone())), ("port", Value::from(server.port)), ("model", model)])
}

/// What makes two server configurations the same server (timeouts do not). A config file counts by its
/// content: the path after `--config` is replaced by the content's hash (a file moved keeps its server's id,
/// another file at the same path gets a new one); without one the value is what it always was.
pub fn identity(server: &ServerConfig) -> serde_json::Value {
    let env: std::collections::BTreeMap<&String, &String> = server.env.iter().collect();
    let mut argv = server.argv.clone();
    if let Some(c) = &server.config_file
        && let Some(i) = argv.windows(2).position(|w| w[0] == "--config" && w[1] == c.path)
    {
        argv[i + 1] = format!("content:{}", c.content);
    }
    serde_json::json!({ "kind": server.kind, "argv": argv, "env": env, "base_url": server.base_url, "ready_url": server.ready_url })
}

fn render_string(
    renderer: &Renderer,
    ctx: &Value,
    vars: &IndexMap<String, Scalar>,
    path: Vec<Seg>,
    text: &str,
) -> Result<String, PlanError> {
    Ok(value_text(&render_at(renderer, ctx, vars, path, text)?))
}

fn value_text(v: &Value) -> String {
    v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())
}

/// An http(s) URL with a host: what a server's address must be (not `not a url`, not `file://`).
pub fn is_http_url(text: &str) -> bool {
    reqwest::Url::parse(text)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty()))
}

pub fn render(spec: &Spec, vars: &IndexMap<String, Scalar>, renderer: &Renderer) -> Result<ServerConfig, PlanError> {
    render_on(spec, vars, renderer, None)
}

/// `render` with the port a slot gives the server instead of the spec's own.
fn render_on(
    spec: &Spec,
    vars: &IndexMap<String, Scalar>,
    renderer: &Renderer,
    port_override: Option<u16>,
) -> Result<ServerConfig, PlanError> {
    let e = &spec.engine;
    let ctx0 = ctx_of(vars, &[]);
    let host = render_string(renderer, &ctx0, vars, key(&["engine", "host"]), &e.host)?;
    let port = render_int(renderer, &ctx0, vars, &["engine", "port"], &e.port, 1)?;
    let port = u16::try_from(port).map_err(|_| {
        PlanError::at(key(&["engine", "port"]), format!("port {port} is above 65535"), "use a port from 1 to 65535")
    })?;
    let port = port_override.unwrap_or(port);
    let ctx1 = ctx_of(vars, &[("host", Value::from(host.clone())), ("port", Value::from(port))]);
    let model = match &e.model {
        Some(m) => Some(render_string(renderer, &ctx1, vars, key(&["engine", "model"]), m)?),
        None => None,
    };
    let ctx = ctx_of(
        vars,
        &[
            ("host", Value::from(host.clone())),
            ("port", Value::from(port)),
            ("model", model.clone().map(Value::from).unwrap_or(Value::from(()))),
        ],
    );
    let mut argv = render_command(spec, renderer, &ctx, vars)?;
    let args = render_args(&e.args, renderer, &ctx, vars)?;
    let config = config_file(spec, renderer, &ctx, vars, (&args, &argv))?;
    let max_model_len = max_model_len(&args, config.as_ref(), vars)?;
    let served_model_name = arg_value(&args, &["served-model-name", "served_model_name"])
        .or_else(|| config.as_ref().and_then(|c| super::config_file::value(c, &["served-model-name"])))
        .or(model.clone());
    if let Some(c) = &config {
        argv.extend(["--config".to_owned(), c.file.path.clone()]);
    }
    argv.extend(args_to_argv(&args));
    if e.kind == EngineKind::Vllm {
        // vLLM must listen where servelab connects; add the address unless the spec set it.
        if arg_value(&args, &["host"]).is_none() {
            argv.extend(["--host".to_owned(), host.clone()]);
        }
        if arg_value(&args, &["port"]).is_none() {
            argv.extend(["--port".to_owned(), port.to_string()]);
        }
    }
    let mut env = IndexMap::new();
    for (k, v) in &e.env {
        let text = match v {
            Scalar::Str(t) => render_string(renderer, &ctx, vars, key(&["engine", "env", k]), t)?,
            other => other.to_string(),
        };
        env.insert(k.clone(), text);
    }
    let base_url = base_url_of(spec, renderer, &ctx, vars, (&host, port))?;
    check_exec_words(&argv, &env, vars)?;
    let ready_path = render_string(renderer, &ctx, vars, key(&["engine", "ready_path"]), &e.ready_path)?;
    if !ready_path.starts_with('/') {
        return Err(PlanError::at(
            key(&["engine", "ready_path"]),
            format!("ready_path `{ready_path}`{} must start with `/`", at_point(vars)),
            "write it like `/health`",
        ));
    }
    Ok(ServerConfig {
        kind: e.kind,
        argv: if e.kind == EngineKind::External { Vec::new() } else { argv },
        env,
        ready_url: format!("{base_url}{ready_path}"),
        base_url,
        host,
        port,
        model,
        served_model_name,
        max_model_len,
        ready_timeout_s: e.ready_timeout.0.as_secs_f64(),
        stop_timeout_s: e.stop_timeout.0.as_secs_f64(),
        cpus: Vec::new(),
        gpus: Vec::new(),
        config_file: config.map(|c| c.file),
    })
}

/// `engine.config_file` rendered, read and checked against the flags the command line sets (`vllm` only).
fn config_file(
    spec: &Spec,
    renderer: &Renderer,
    ctx: &Value,
    vars: &IndexMap<String, Scalar>,
    (args, command): (&RenderedArgs, &[String]),
) -> Result<Option<super::config_file::Loaded>, PlanError> {
    let Some(text) = &spec.engine.config_file else { return Ok(None) };
    if spec.engine.kind != EngineKind::Vllm {
        return Err(PlanError::at(
            key(&["engine", "config_file"]),
            "`config_file` is vLLM's `--config`, for `kind: vllm` only",
            "for a `command` engine, pass the file in `command`; or set `kind: vllm`",
        ));
    }
    let path = render_string(renderer, ctx, vars, key(&["engine", "config_file"]), text)?;
    let loaded = super::config_file::read(&path, vars)?;
    let set: Vec<&str> = args.iter().filter(|(_, v)| v.is_some()).map(|(k, _)| k.as_str()).collect();
    super::config_file::conflicts(&loaded, &set, command)?;
    Ok(Some(loaded))
}

/// The server's address: an external engine's `base_url` as given, else built from host and port; plain
/// http only.
fn base_url_of(
    spec: &Spec,
    renderer: &Renderer,
    ctx: &Value,
    vars: &IndexMap<String, Scalar>,
    (host, port): (&str, u16),
) -> Result<String, PlanError> {
    let base_url = match (&spec.engine.kind, &spec.engine.base_url) {
        (EngineKind::External, Some(url)) => {
            render_string(renderer, ctx, vars, key(&["engine", "base_url"]), url)?.trim_end_matches('/').to_owned()
        }
        _ if host.contains(':') => format!("http://[{host}]:{port}"),
        _ => format!("http://{host}:{port}"),
    };
    if !is_http_url(&base_url) {
        return Err(PlanError::at(
            key(&["engine", "base_url"]),
            format!("`{base_url}`{} is not an http:// URL with a host", at_point(vars)),
            "write the server's address, e.g. `http://127.0.0.1:8000`",
        ));
    }
    if base_url.starts_with("https://") {
        return Err(PlanError::at(
            key(&["engine", "base_url"]),
            format!("`{base_url}`: TLS is not built in (servelab measures servers over plain HTTP)"),
            "use the server's http:// address (on this host or through an SSH tunnel), or a local TLS-terminating proxy",
        ));
    }
    Ok(base_url)
}

/// A NUL byte cannot pass through exec(2): it would cut the argument or variable short.
fn check_exec_words(
    argv: &[String],
    env: &IndexMap<String, String>,
    vars: &IndexMap<String, Scalar>,
) -> Result<(), PlanError> {
    match argv.iter().chain(env.keys()).chain(env.values()).find(|a| a.contains('\0')) {
        Some(bad) => Err(PlanError::at(
            key(&["engine"]),
            format!("{:?}{} contains a NUL byte, which no command line or environment can hold", bad, at_point(vars)),
            "remove the NUL (\\0) from the engine's command, args and env",
        )),
        None => Ok(()),
    }
}

fn render_command(
    spec: &Spec,
    renderer: &Renderer,
    ctx: &Value,
    vars: &IndexMap<String, Scalar>,
) -> Result<Vec<String>, PlanError> {
    let default: Vec<String> = VLLM_COMMAND.iter().map(|s| (*s).to_owned()).collect();
    let command = match (&spec.engine.command, spec.engine.kind) {
        (Some(c), _) => c.clone(),
        (None, EngineKind::Vllm) => default,
        (None, _) => Vec::new(),
    };
    command
        .iter()
        .enumerate()
        .map(|(i, t)| {
            render_string(
                renderer,
                ctx,
                vars,
                vec![Seg::Key("engine".into()), Seg::Key("command".into()), Seg::Index(i)],
                t,
            )
        })
        .collect()
}

/// A rendered argument: `None` omits it; several values repeat the flag.
type RenderedArgs = Vec<(String, Option<Vec<Value>>)>;

fn render_args(
    args: &IndexMap<String, ArgValue>,
    renderer: &Renderer,
    ctx: &Value,
    vars: &IndexMap<String, Scalar>,
) -> Result<RenderedArgs, PlanError> {
    let mut out = Vec::new();
    for (k, v) in args {
        let render_one = |s: &Scalar, path: Vec<Seg>| -> Result<Value, PlanError> {
            match s {
                Scalar::Str(t) => render_at(renderer, ctx, vars, path, t),
                other => Ok(Value::from_serialize(other)),
            }
        };
        let path = key(&["engine", "args", k]);
        let values = match v {
            ArgValue::Null => None,
            ArgValue::Scalar(s) => {
                let value = render_one(s, path)?;
                match value.kind() {
                    ValueKind::None | ValueKind::Undefined => None,
                    ValueKind::Seq => Some(value.try_iter().map(|it| it.collect()).unwrap_or_default()),
                    _ => Some(vec![value]),
                }
            }
            ArgValue::List(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let mut p = path.clone();
                        p.push(Seg::Index(i));
                        render_one(s, p)
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        out.push((k.clone(), values));
    }
    Ok(out)
}

/// `k: v` → `--k v`; `true` → `--k`; `false` → `--no-k`; null → omitted; list → repeated.
fn args_to_argv(args: &RenderedArgs) -> Vec<String> {
    let mut argv = Vec::new();
    for (k, values) in args {
        for v in values.iter().flatten() {
            match v.kind() {
                ValueKind::Bool if v.is_true() => argv.push(format!("--{k}")),
                ValueKind::Bool => argv.push(format!("--no-{k}")),
                ValueKind::None | ValueKind::Undefined => {}
                _ => argv.extend([format!("--{k}"), value_text(v)]),
            }
        }
    }
    argv
}

fn arg_value(args: &RenderedArgs, names: &[&str]) -> Option<String> {
    args.iter().find(|(k, _)| names.contains(&k.as_str())).and_then(|(_, v)| v.as_ref()?.first().map(value_text))
}

/// The rendered `max-model-len` arg, else the config file's.
fn max_model_len(
    args: &RenderedArgs,
    config: Option<&super::config_file::Loaded>,
    vars: &IndexMap<String, Scalar>,
) -> Result<Option<u64>, PlanError> {
    let (text, at) = match arg_value(args, &["max-model-len", "max_model_len"]) {
        Some(text) => (text, key(&["engine", "args", "max-model-len"])),
        None => match config.and_then(|c| super::config_file::value(c, &["max-model-len"])) {
            Some(text) => (text, key(&["engine", "config_file"])),
            None => return Ok(None),
        },
    };
    match text.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(PlanError::at(
            at,
            format!("max-model-len `{text}`{} is not a positive integer", at_point(vars)),
            "write the length in tokens, e.g. `max-model-len: 4096`",
        )),
    }
}

/// The server of `group` as it runs in `lease`: the spec's port plus the slot's number (rendered again, so
/// `{{ port }}` in the command and the URLs follow), `CUDA_VISIBLE_DEVICES` for its GPUs, the slot's cores
/// (and, for vLLM on CPU, its OpenMP binding to them). The group's id is the plan's: none of this is in it.
pub fn slotted(
    spec: &Spec,
    group: &super::ServerGroup,
    lease: &super::slots::Lease,
    cpu_engine: bool,
) -> Result<ServerConfig, PlanError> {
    let mut server = group.server.clone();
    if lease.slot > 0 {
        let port = u16::try_from(usize::from(group.server.port) + lease.slot).map_err(|_| {
            PlanError::at(
                key(&["engine", "port"]),
                format!("slot {} would listen above port 65535", lease.slot),
                "use a lower `engine.port`",
            )
        })?;
        let expanded = super::tune::expand(spec)?.map(|t| t.spec);
        let vars = group.points.first().map_or(&group.vars, |p| &p.vars);
        server = render_on(expanded.as_ref().unwrap_or(spec), vars, &Renderer::default(), Some(port))?;
        if server.argv == group.server.argv && server.env == group.server.env && server.kind != EngineKind::External {
            return Err(PlanError::at(
                key(&["engine", "command"]),
                format!("the server's command line does not change with its port ({})", group.server.port),
                "write the port as `{{ port }}` in `command` or `args` (servelab gives each slot its own), or run without --parallel/--gpus",
            ));
        }
    }
    if !lease.gpus.is_empty() {
        let ids: Vec<String> = lease.gpus.iter().map(|g| g.index.to_string()).collect();
        // NVML counts GPUs in PCI bus order; CUDA's default order is fastest first. One order for both.
        server.env.insert("CUDA_DEVICE_ORDER".to_owned(), "PCI_BUS_ID".to_owned());
        server.env.insert("CUDA_VISIBLE_DEVICES".to_owned(), ids.join(","));
    }
    if !lease.cpus.is_empty() && cpu_engine && server.kind == EngineKind::Vllm {
        let ids: Vec<String> = lease.cpus.iter().map(usize::to_string).collect();
        server.env.insert("VLLM_CPU_OMP_THREADS_BIND".to_owned(), ids.join(","));
    }
    server.cpus = lease.cpus.clone();
    server.gpus = lease.gpus.iter().map(|g| g.index).collect();
    Ok(server)
}
