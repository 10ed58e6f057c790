use super::*;

fn planned(text: &str) -> (crate::spec::LoadedSpec, Plan) {
    let loaded = crate::spec::load_str("spec.yaml", text, &[]).unwrap();
    let plan = crate::plan::build_located(&loaded).unwrap();
    (loaded, plan)
}

const TP2: &str = "name: My.Exp_1\nengine:\n  kind: vllm\n  model: m\n  args:\n    tensor-parallel-size: 2\n    max-model-len: \"{{ len }}\"\ngrid:\n  len: [512, 1024, 2048]\n";

fn common(spec: &str, shards: usize) -> Common {
    Common {
        spec: PathBuf::from(spec),
        set: vec!["engine.model=/m o'del".to_owned()],
        shards,
        dir: PathBuf::from("cluster"),
        dry_run: false,
        servelab: "servelab".to_owned(),
        cpus_per_task: None,
    }
}

#[test]
fn resources_take_gpus_from_the_parallel_size_and_split_every_group_once() {
    let (l, p) = planned(TP2);
    let r = resources(&l.spec, &p, 2, None).unwrap();
    assert_eq!((r.gpus, r.cpus), (2, 16));
    assert_eq!(r.shards.iter().map(|s| s.groups).sum::<usize>(), 3);
    assert_eq!(r.shards.iter().map(|s| s.groups).collect::<Vec<_>>(), [2, 1]);
    assert!(r.minutes >= 10);
    let text = describe(&r, "array task");
    assert!(text.contains("shard 1/2: 1 server groups") && text.contains("2 GPU(s), 16 CPUs"), "{text}");
    assert!(matches!(resources(&l.spec, &p, 0, None), Err(ExportError::NoShards)));
}

#[test]
fn a_command_engine_without_gpus_asks_for_none() {
    let (l, p) =
        planned("name: c\nengine:\n  kind: command\n  command: [x, \"{{ port }}\", \"{{ n }}\"]\ngrid:\n  n: [1, 2]\n");
    assert_eq!(resources(&l.spec, &p, 1, Some(3)).unwrap().gpus, 0);
}

#[test]
fn the_slurm_array_resumes_shards_and_the_merge_runs_afterany_and_checks_for_missing_shards() {
    let (l, p) = planned(TP2);
    let r = resources(&l.spec, &p, 2, None).unwrap();
    let a = SlurmArgs { common: common("s.yaml", 2), shared: Some(PathBuf::from("/shared/runs")), partition: None };
    let files = slurm::files(&a, &r).unwrap();
    let text =
        |name: &str| String::from_utf8(files.iter().find(|f| f.0 == Path::new(name)).unwrap().1.clone()).unwrap();
    let shards = text("shards.sbatch");
    for want in ["#SBATCH --array=0-1", "#SBATCH --gres=gpu:2", "#SBATCH --cpus-per-task=16", "--resume \"$DIR\""] {
        assert!(shards.contains(want), "{want} not in\n{shards}");
    }
    // A quote in a --set value stays inside its shell word.
    assert!(shards.contains(r#"--set 'engine.model=/m o'\''del'"#), "{shards}");
    let merge = text("merge.sbatch");
    assert!(merge.contains("missing shards:") && merge.contains("merge --out \"$RUNS/My.Exp_1/merged\""), "{merge}");
    assert!(text("submit.sh").contains("--dependency=\"afterany:$jid\""));
    // `#SBATCH` lines take no quoting: a shared path with a space is refused.
    let bad = SlurmArgs { shared: Some(PathBuf::from("/a b")), ..a };
    assert!(matches!(slurm::files(&bad, &r), Err(ExportError::Unsafe { .. })));
}

#[test]
fn the_indexed_job_takes_its_shard_from_the_completion_index_and_asks_for_gpus() {
    let (l, p) = planned(TP2);
    let r = resources(&l.spec, &p, 3, None).unwrap();
    let a = K8sArgs {
        common: common("s.yaml", 3),
        image: "img".to_owned(),
        pvc: "claim".to_owned(),
        mount: "/shared".to_owned(),
        namespace: None,
    };
    let (config, shards, merge) = k8s::manifests(&a, &r, "name: x\n");
    assert_eq!(config["data"]["spec.yaml"], "name: x\n");
    assert_eq!(shards["spec"]["completionMode"], "Indexed");
    assert_eq!(shards["spec"]["completions"], 3);
    let pod = &shards["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let c = &pod["containers"][0];
    assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "2");
    assert!(c["command"][2].as_str().unwrap().contains("--shard \"$I/3\""));
    assert!(c["command"][2].as_str().unwrap().contains("I=\"$JOB_COMPLETION_INDEX\""));
    assert_eq!(pod["volumes"][0]["persistentVolumeClaim"]["claimName"], "claim");
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/shared");
    assert!(merge["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu").is_none());
    assert_eq!(shards["metadata"]["name"], "servelab-my-exp-1-shards");
    // Every file is YAML that reads back as the value it was built from.
    for (name, bytes) in k8s::files(&a, &r, "name: x\n").unwrap() {
        if name.extension().is_some_and(|e| e == "yaml") {
            let back: serde_json::Value = serde_saphyr::from_slice(&bytes).unwrap();
            assert!(back == config || back == shards || back == merge, "{}", name.display());
        }
    }
}

#[test]
fn labels_are_dns_names() {
    assert_eq!(k8s::label("My Exp_1"), "my-exp-1");
    assert_eq!(k8s::label("--"), "run");
    assert!(k8s::label(&"a".repeat(90)).len() <= 40);
}

#[test]
fn shell_quoting_survives_quotes() {
    assert_eq!(sh_quote("a'b"), r#"'a'\''b'"#);
}
