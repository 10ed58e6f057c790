//! The dependency picture of `src/` (DESIGN §4, issue "the run folder as its own layer"): which module may
//! import which, read from the source itself. `record` is the bottom layer; `stats` and `report` read the run
//! folder through it and never depend on the executor (`run`). Test modules (after `#[cfg(test)]`) and
//! comments are not counted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each module and the modules it may use.
const ALLOWED: [(&str, &[&str]); 9] = [
    ("record", &[]),
    ("spec", &["record"]),
    ("plan", &["record", "spec"]),
    ("probe", &["record", "spec"]),
    ("load", &["record", "spec"]),
    ("engine", &["record", "spec", "plan", "probe"]),
    ("run", &["record", "spec", "plan", "probe", "load", "engine"]),
    ("stats", &["record", "spec", "probe"]),
    ("report", &["record", "spec", "plan", "probe", "stats"]),
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `crate::<module>` references outside comments and test modules.
fn uses(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    let mut found = BTreeSet::new();
    for line in code.lines().map(|l| l.trim_start()).filter(|l| !l.starts_with("//")) {
        for (i, _) in line.match_indices("crate::") {
            let name: String = line[i + 7..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            found.insert(name);
        }
    }
    found
}

fn actual() -> BTreeMap<String, BTreeSet<String>> {
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, _) in ALLOWED {
        let mut files = Vec::new();
        rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(module), &mut files);
        assert!(!files.is_empty(), "src/{module}/ has no Rust files");
        let entry = deps.entry(module.to_owned()).or_default();
        for f in files {
            entry.extend(uses(&std::fs::read_to_string(f).unwrap()).into_iter().filter(|m| m != module));
        }
    }
    deps
}

#[test]
fn every_module_imports_only_the_layers_below_it() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.into_iter().collect();
    let mut wrong = Vec::new();
    for (module, used) in actual() {
        for u in used {
            if !allowed[module.as_str()].contains(&u.as_str()) {
                wrong.push(format!("{module} → {u}"));
            }
        }
    }
    assert!(wrong.is_empty(), "imports that break the layering: {wrong:?}");
}

#[test]
fn the_allowed_picture_has_no_cycle() {
    // Kahn's algorithm over ALLOWED: every module must come out.
    let mut left: BTreeMap<&str, BTreeSet<&str>> =
        ALLOWED.iter().map(|(m, d)| (*m, d.iter().copied().collect())).collect();
    while let Some(free) = left.iter().find(|(_, d)| d.is_empty()).map(|(m, _)| *m) {
        left.remove(free);
        left.values_mut().for_each(|d| {
            d.remove(free);
        });
    }
    assert!(left.is_empty(), "cycle among {:?}", left.keys().collect::<Vec<_>>());
}

#[test]
fn the_checker_sees_a_forbidden_import() {
    assert!(uses("use crate::run::Recorded;\n// crate::cli in a comment\n").contains("run"));
    assert!(!uses("// crate::cli\n#[cfg(test)]\nuse crate::engine;").contains("engine"));
}
