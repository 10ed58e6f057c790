//! The dependency picture of `src/` (docs/architecture.md, "The walls"): which module may import which, read
//! from the source itself. `record` is the bottom layer; `stats` and `report` read the run folder through it
//! and never depend on the executor (`run`); `schedule` decides what runs next from the records and sits
//! between `stats` and `run`; `cli` parses and dispatches and never imports `stats`. Test modules (after
//! `#[cfg(test)]`) and comments are not counted. The binaries (`main.rs`, `bin/`) reach the library only
//! through `servelab::cli`, or not at all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each module (a folder, or a single file `src/<name>.rs`) and the modules it may use.
const ALLOWED: [(&str, &[&str]); 16] = [
    ("record", &[]),
    ("draw", &[]),
    ("spec", &["record"]),
    ("exit", &["spec"]),
    ("plan", &["record", "spec"]),
    ("probe", &["record", "spec"]),
    ("load", &["record", "spec"]),
    ("engine", &["record", "spec", "plan", "probe"]),
    ("stats", &["record", "spec", "probe"]),
    ("schedule", &["record", "spec", "plan", "stats"]),
    ("report", &["record", "spec", "plan", "probe", "stats"]),
    ("run", &["record", "draw", "spec", "plan", "probe", "load", "engine", "schedule", "report"]),
    ("shard", &["record", "spec", "plan", "report"]),
    ("cluster", &["record", "spec", "plan", "shard"]),
    ("cli", &["record", "spec", "plan", "probe", "engine", "run", "report", "exit", "shard", "cluster"]),
    ("bin", &[]),
];

/// What the binaries may name of the library (`servelab::…`).
const BINARIES_MAY_USE: &[&str] = &["cli"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The files of a module: its folder, or `src/<name>.rs`.
fn files_of(module: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let dir = src().join(module);
    if dir.is_dir() {
        rust_files(&dir, &mut files);
    }
    let file = src().join(format!("{module}.rs"));
    if file.is_file() {
        files.push(file);
    }
    files
}

fn ident(text: &str) -> String {
    text.chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect()
}

/// The top-level modules a text names through `root` (`crate::` or `servelab::`), outside comments and test
/// modules: `root::a::…` and every name of `root::{a, b::c, …}`.
fn uses_via(text: &str, root: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    let code: String = code.lines().filter(|l| !l.trim_start().starts_with("//")).map(|l| format!("{l}\n")).collect();
    let mut found = BTreeSet::new();
    for (i, _) in code.match_indices(root) {
        let rest = &code[i + root.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // A brace group, nested braces included: the first name of each top-level item.
            let mut depth = 0usize;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        item_start = false;
                        found.insert(ident(&group[j..]));
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found.remove("");
    found.remove("self");
    found
}

fn uses(text: &str) -> BTreeSet<String> {
    uses_via(text, "crate::")
}

/// Whether a file is a test module of its own (`#[cfg(test)] mod tests;` in the file that declares it, which
/// is the folder's `mod.rs` or the file beside the folder): like a test module inline, it is not counted.
fn test_only(file: &Path) -> bool {
    let (Some(dir), Some(name)) = (file.parent(), file.file_stem().and_then(|n| n.to_str())) else { return false };
    let declared = format!("#[cfg(test)]\nmod {name};");
    let parents = [dir.join("mod.rs"), dir.with_extension("rs")];
    parents.iter().any(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains(&declared)))
}

fn actual() -> BTreeMap<String, BTreeSet<String>> {
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, _) in ALLOWED {
        let files = files_of(module);
        assert!(!files.is_empty(), "src/{module} has no Rust files");
        let entry = deps.entry(module.to_owned()).or_default();
        for f in files.into_iter().filter(|f| !test_only(f)) {
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
fn every_module_of_the_crate_is_in_the_picture() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_owned())
        .collect();
    let pictured: BTreeSet<String> = ALLOWED.iter().map(|(m, _)| m.to_string()).filter(|m| m != "bin").collect();
    assert_eq!(declared, pictured, "src/lib.rs declares modules the layering test does not check, or the reverse");
}

#[test]
fn the_binaries_reach_the_library_only_through_the_cli() {
    let mut files = vec![src().join("main.rs")];
    rust_files(&src().join("bin"), &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let used = uses_via(&text, "servelab::");
        let wrong: Vec<_> = used.iter().filter(|m| !BINARIES_MAY_USE.contains(&m.as_str())).collect();
        assert!(wrong.is_empty(), "{} uses servelab::{wrong:?}", f.display());
    }
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
    let braced = uses("use crate::{\n    stats::sweep,\n    plan::{Plan, Point},\n    run,\n};\n");
    assert_eq!(braced, ["plan", "run", "stats"].iter().map(|s| s.to_string()).collect());
    assert!(uses_via("fn main() { servelab::stats::x(); }", "servelab::").contains("stats"));
}

#[test]
fn no_scheduling_policy_is_implemented_in_the_cli() {
    let files = files_of("cli");
    assert!(files.len() > 1, "src/cli/ has its files");
    let mut impls = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        impls.extend(
            code.lines()
                .filter(|l| l.trim_start().starts_with("impl ") && l.contains(" for "))
                .map(|l| format!("{}: {l}", f.display())),
        );
    }
    assert!(impls.is_empty(), "the CLI implements traits of other layers: {impls:?}");
}

/// `run/mod.rs` stays the executor's entry, its loop in `run/exec.rs` and its policy in `schedule`.
#[test]
fn the_executors_entry_stays_small() {
    let text = std::fs::read_to_string(src().join("run/mod.rs")).unwrap();
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    let lines = code.lines().filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("//")).count();
    assert!(lines <= 500, "src/run/mod.rs has {lines} non-test lines, more than 500");
}

/// Every row of docs/reliability.md names at least one test that exists, and every test name it gives
/// (a backticked snake_case name of four words or more, or the last part of a `module::path`) is a function
/// in src/ or tests/.
#[test]
fn every_row_of_the_reliability_table_names_an_existing_test() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/reliability.md")).unwrap();
    let mut sources = String::new();
    for dir in ["src", "tests"] {
        let mut files = Vec::new();
        rust_files(&root.join(dir), &mut files);
        for f in files {
            sources.push_str(&std::fs::read_to_string(f).unwrap());
        }
    }
    let exists = |name: &str| sources.contains(&format!("fn {name}(")) || sources.contains(&format!("fn {name}<"));
    let rows: Vec<&str> =
        doc.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| fault") && !l.starts_with("|---")).collect();
    assert!(rows.len() >= 20, "the table has {} rows", rows.len());
    for row in rows {
        let tests_cell = row.trim_end_matches('|').rsplit('|').next().unwrap_or("");
        let names: Vec<&str> = tests_cell
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|n| n.rsplit("::").next().unwrap_or(n))
            .filter(|n| {
                n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                    && n.matches('_').count() >= 3
            })
            .collect();
        // A benchmark or a test file named by its path counts when the path exists.
        let paths =
            tests_cell.split('`').skip(1).step_by(2).filter(|n| n.contains('/') && root.join(n).exists()).count();
        assert!(!names.is_empty() || paths > 0, "a row of docs/reliability.md names no test: {row}");
        for n in names {
            assert!(exists(n), "docs/reliability.md names the test `{n}`, which does not exist");
        }
    }
}

/// The code of a source file that is not test code: everything before a `#[cfg(test)]` that opens a module
/// (test modules close each file), with `//` comments kept (they are the reasons).
fn non_test_code(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    let end = (0..lines.len())
        .find(|&i| {
            lines[i].trim() == "#[cfg(test)]"
                && lines[i + 1..]
                    .iter()
                    .find(|l| !l.trim().is_empty())
                    .is_some_and(|l| l.trim_start().starts_with("mod "))
        })
        .unwrap_or(lines.len());
    lines[..end].to_vec()
}

/// The code of a line without its `//` comment (a `//` right after `:` is a URL in a string, not a comment).
fn code_of(line: &str) -> &str {
    let bytes = line.as_bytes();
    let at = (0..bytes.len().saturating_sub(1))
        .find(|&i| bytes[i] == b'/' && bytes[i + 1] == b'/' && (i == 0 || bytes[i - 1] != b':'));
    at.map_or(line, |i| &line[..i])
}

/// Whether a line drops a result: `let _ =`, `let _:`, a statement or `select!` arm `_ = …`, or a bare
/// `….ok();` (a statement that only turns the result into an ignored Option).
fn drops_a_result(line: &str, before: &[&str]) -> bool {
    let code = code_of(line);
    let t = code.trim_start();
    if code.contains("let _ =") || code.contains("let _:") || t.starts_with("_ = ") || code.contains("{ _ = ") {
        return true;
    }
    let Some(at) = code.find(".ok();") else { return false };
    // The statement that ends here: back to the last `;`, `{` or `}`, across lines if it started above.
    let mut statement = code[..at].to_owned();
    for above in before.iter().rev() {
        if statement.contains([';', '{', '}']) {
            break;
        }
        statement = format!("{} {statement}", code_of(above));
    }
    let start = statement.rfind([';', '{', '}']).map_or(0, |i| i + 1);
    let statement = statement[start..].replace("==", "").replace("=>", "").replace("!=", "");
    let statement = statement.replace("<=", "").replace(">=", "");
    !statement.contains('=') && !statement.trim_start().starts_with("return")
}

/// Whether a dropped result at line `i` says why: a `//` comment on the line, or above it, through a run of
/// comments, attributes (an `#[expect(.., reason = "..")]` counts) and other dropped results that one
/// comment covers.
fn has_a_reason(lines: &[&str], i: usize) -> bool {
    if code_of(lines[i]).len() < lines[i].len() {
        return true;
    }
    let mut j = i;
    let mut in_attribute = false;
    while j > 0 {
        j -= 1;
        let t = lines[j].trim();
        if t.starts_with("//") || t.contains("reason = \"") {
            return true;
        }
        if t.ends_with(")]") && !t.starts_with("#[") {
            in_attribute = true;
        } else if t.starts_with("#[") {
            in_attribute = false;
        } else if !in_attribute && !drops_a_result(lines[j], &lines[..j]) {
            return false;
        }
    }
    false
}

/// Every result dropped in non-test code of `src/`: (file:line, has a reason).
fn dropped_results() -> Vec<(String, bool)> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut found = Vec::new();
    for f in files.iter().filter(|f| f.file_name().is_none_or(|n| n != "tests.rs")) {
        let text = std::fs::read_to_string(f).unwrap();
        let lines = non_test_code(&text);
        for (i, line) in lines.iter().enumerate() {
            if !line.trim_start().starts_with("//") && drops_a_result(line, &lines[..i]) {
                let place = format!("{}:{}", f.strip_prefix(src()).unwrap().display(), i + 1);
                found.push((place, has_a_reason(&lines, i)));
            }
        }
    }
    found
}

/// A result dropped without a word is a failure nobody hears of: non-test code drops at most 25, each with
/// its reason on the line or above it. The rest propagate, warn, or go through a named helper whose comment
/// says why its results may be dropped.
#[test]
fn ignored_results_are_few_and_each_says_why() {
    let dropped = dropped_results();
    let silent: Vec<&str> = dropped.iter().filter(|(_, why)| !why).map(|(place, _)| place.as_str()).collect();
    assert!(silent.is_empty(), "results dropped without a `// why` comment (or a `reason`): {silent:?}");
    let places: Vec<&str> = dropped.iter().map(|(place, _)| place.as_str()).collect();
    assert!(dropped.len() <= 25, "{} results dropped in src/, more than 25: {places:?}", dropped.len());
}

#[test]
fn the_checker_sees_a_dropped_result_and_its_reason() {
    for line in
        ["let _ = f();", "    let _: io::Result<()> = f();", "_ = rx => {}", "x.send(r).ok();", "=> { _ = f(); }"]
    {
        assert!(drops_a_result(line, &[]), "{line}");
    }
    for line in ["let x = f().ok();", "let _guard = lock();", "if a == b { f().ok() }", "return f().ok();"] {
        assert!(!drops_a_result(line, &[]), "{line}");
    }
    assert!(drops_a_result("        .ok();", &["    tx.send(r)"]));
    assert!(!drops_a_result("        .ok();", &["    let v = tx", "        .send(r)"]));
    assert!(has_a_reason(&["x.ok(); // gone"], 0));
    assert!(has_a_reason(&["// why: gone", "a.ok();", "_ = b => {}"], 2));
    assert!(has_a_reason(
        &["#[expect(", "    clippy::let_underscore_must_use,", "    reason = \"why\"", ")]", "let _ = f();"],
        4
    ));
    assert!(!has_a_reason(&["// a comment", "let y = 1;", "let _ = f();"], 2));
    assert!(!has_a_reason(&["let _ = f();"], 0));
    let text = "fn f() {}\n#[cfg(test)]\nmod tests {\n    let _ = g();\n}\n";
    assert_eq!(non_test_code(text), ["fn f() {}"]);
    assert_eq!(code_of("let u = \"http://x\"; // c"), "let u = \"http://x\"; ");
}

/// A source file holds at most this many lines of non-test code (blank lines and comments counted); a longer
/// one is split along its seams (docs/architecture.md, the module map).
const MAX_FILE_LINES: usize = 600;

/// Files still over [`MAX_FILE_LINES`], each being split by work in flight: none of them may be joined by
/// another, and each leaves this list once it is split.
const STILL_OVER: &[&str] = &[];

/// The files of `src/` with more than [`MAX_FILE_LINES`] lines of non-test code, and how many.
fn long_files() -> Vec<(String, usize)> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut long: Vec<(String, usize)> = files
        .iter()
        .filter(|f| !test_only(f))
        .map(|f| {
            let name = f.strip_prefix(src()).unwrap().to_string_lossy().into_owned();
            (name, non_test_code(&std::fs::read_to_string(f).unwrap()).len())
        })
        .filter(|(_, n)| *n > MAX_FILE_LINES)
        .collect();
    long.sort();
    long
}

#[test]
fn no_source_file_grows_past_600_lines() {
    let long = long_files();
    // Said on every run, so what is left to split stays in sight.
    eprintln!("non-test source files over {MAX_FILE_LINES} lines: {long:?}");
    let new: Vec<&(String, usize)> = long.iter().filter(|(f, _)| !STILL_OVER.contains(&f.as_str())).collect();
    assert!(new.is_empty(), "split these along their seams (at most {MAX_FILE_LINES} non-test lines): {new:?}");
}
