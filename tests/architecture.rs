//! The module graph: which top-level module of `src/` uses which (from `crate::` paths in the
//! code, tests left out), and a check that calls go one way — no cycle between top-level
//! modules. `cargo test --test architecture -- --nocapture` prints the graph.
//! Also: every metric the code records is described (has HELP text).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level modules, as `lib.rs` declares them.
fn top_level_modules() -> BTreeSet<String> {
    std::fs::read_to_string(src().join("lib.rs"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("mod "))
                .and_then(|rest| rest.strip_suffix(';'))
                .map(str::to_owned)
        })
        .collect()
}

/// A file's code without its `#[cfg(test)]` modules and comments (what production uses).
fn production_code(text: &str) -> String {
    let mut out = String::new();
    let mut skipping_depth: Option<i32> = None;
    let mut depth = 0i32;
    let mut pending_test = false;
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        if skipping_depth.is_none() && code.trim_start().starts_with("#[cfg(test)]") {
            pending_test = true;
            continue;
        }
        let opens = code.matches('{').count() as i32;
        let closes = code.matches('}').count() as i32;
        if pending_test && opens > 0 {
            skipping_depth = Some(depth);
            pending_test = false;
        }
        depth += opens - closes;
        match skipping_depth {
            Some(start) => {
                if depth <= start {
                    skipping_depth = None;
                }
            }
            None => {
                out.push_str(code);
                out.push('\n');
            }
        }
    }
    out
}

fn identifier(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first segments after `crate::`: `crate::store::Store` gives `store`;
/// `crate::{a::B, c}` gives `a` and `c`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let trimmed = rest.trim_start();
        if let Some(group) = trimmed.strip_prefix('{') {
            let mut depth = 1;
            let mut item_start = true;
            let mut i = 0;
            let bytes = group.as_bytes();
            while i < bytes.len() && depth > 0 {
                let c = bytes[i] as char;
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => item_start = true,
                    c if item_start && depth == 1 && (c.is_ascii_alphabetic() || c == '_') => {
                        found.insert(identifier(&group[i..]).to_owned());
                        item_start = false;
                    }
                    _ => {}
                }
                i += 1;
            }
        } else {
            found.insert(identifier(trimmed).to_owned());
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Top-level module → the top-level modules it uses.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = top_level_modules();
    let mut graph: BTreeMap<String, BTreeSet<String>> = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    for file in files {
        let rel = file.strip_prefix(src()).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let owner = first.trim_end_matches(".rs").to_owned();
        if !modules.contains(&owner) {
            continue; // lib.rs, main.rs: the crate root and the binary
        }
        let code = production_code(&std::fs::read_to_string(&file).unwrap());
        for used in crate_paths(&code) {
            if used != owner && modules.contains(&used) {
                graph.get_mut(&owner).unwrap().insert(used);
            }
        }
    }
    graph
}

/// A cycle, if the graph has one (as the modules along it).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        stack.push(node.to_owned());
        for next in &graph[node] {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|m| m == next).unwrap();
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(next, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0
            && let Some(c) = visit(node, graph, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_parser_reads_paths_and_groups() {
    let code = "use crate::{store::{A, B}, model, worker::x};\nlet y = crate::ids::JobId::new();";
    let found: Vec<String> = crate_paths(code).into_iter().collect();
    assert_eq!(found, ["ids", "model", "store", "worker"]);
    let code = production_code(
        "use crate::a;\n#[cfg(test)]\nmod tests {\n use crate::b;\n}\nuse crate::c;",
    );
    assert_eq!(
        crate_paths(&code).into_iter().collect::<Vec<_>>(),
        ["a", "c"]
    );
    let cyclic: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]
    .into();
    assert_eq!(find_cycle(&cyclic).unwrap(), ["a", "b", "a"]);
}

#[test]
fn calls_go_one_way_between_top_level_modules() {
    let graph = module_graph();
    for (module, uses) in &graph {
        println!(
            "{module:<12} -> {}",
            uses.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!("module cycle: {}", cycle.join(" -> "));
    }
}

/// Every `orchestrator_…` name the code records a metric under (`metrics::counter!("…")`,
/// `gauge!`, `histogram!`), and every name `describe_*!` gives HELP text to.
fn metric_names() -> (BTreeSet<String>, BTreeSet<String>) {
    fn names_after(code: &str, macros: &[&str], out: &mut BTreeSet<String>) {
        for m in macros {
            for (at, _) in code.match_indices(m) {
                let rest = code[at + m.len()..].trim_start();
                if let Some(name) = rest.strip_prefix("\"orchestrator_") {
                    let end = name.find('"').unwrap();
                    out.insert(format!("orchestrator_{}", &name[..end]));
                }
            }
        }
    }
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let (mut recorded, mut described) = (BTreeSet::new(), BTreeSet::new());
    for f in files {
        let code = production_code(&std::fs::read_to_string(&f).unwrap());
        names_after(
            &code,
            &["counter!(", "gauge!(", "histogram!("],
            &mut recorded,
        );
        names_after(
            &code,
            &[
                "describe_counter!(",
                "describe_gauge!(",
                "describe_histogram!(",
            ],
            &mut described,
        );
    }
    (recorded, described)
}

#[test]
fn every_metric_the_code_records_has_help_text() {
    let (recorded, described) = metric_names();
    assert!(
        recorded.len() >= 20,
        "the scan finds the metrics: {recorded:?}"
    );
    let missing: Vec<_> = recorded.difference(&described).collect();
    assert!(
        missing.is_empty(),
        "recorded without describe_*!: {missing:?}"
    );
}
