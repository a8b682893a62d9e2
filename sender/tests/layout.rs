//! The shape of `sender/src`: the modules' `use crate::…` graph has no
//! cycle, so every module has one place in the layering (DESIGN.md), and
//! `main.rs` stays a few lines that hand over to `cli/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level library module a file belongs to (`None`: lib.rs, main.rs, cli/).
fn module_of(root: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(root).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
    (!matches!(name.as_str(), "lib" | "main" | "cli")).then_some(name)
}

/// Code without comments and without the unit tests at the bottom.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// Every `crate::name` a text refers to, with `use crate::{a, b::c}` groups.
fn references(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for part in group.split(',') {
                let name: String = part.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                out.insert(name);
            }
        } else {
            out.insert(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(&root, f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    for file in &files {
        let Some(from) = module_of(&root, file) else { continue };
        let text = code(&std::fs::read_to_string(file).unwrap());
        for to in references(&text) {
            if to != from && modules.contains(&to) {
                edges.get_mut(&from).unwrap().insert(to);
            }
        }
    }
    edges
}

/// A cycle through `start`, if any, as the path of modules.
fn cycle_from(edges: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_owned(), vec![start.to_owned()])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in &edges[&node] {
            if next == start {
                let mut p = path;
                p.push(start.to_owned());
                return Some(p);
            }
            if seen.insert(next.clone()) {
                let mut p = path.clone();
                p.push(next.clone());
                stack.push((next.clone(), p));
            }
        }
    }
    None
}

#[test]
fn the_module_graph_has_no_cycle() {
    let edges = graph();
    assert!(edges.contains_key("runbook") && edges["aws"].contains("runbook"), "the graph was read: {edges:?}");
    let cycles: Vec<String> = edges.keys().filter_map(|m| cycle_from(&edges, m)).map(|p| p.join(" -> ")).collect();
    assert!(cycles.is_empty(), "module cycles in sender/src:\n{}", cycles.join("\n"));
}

#[test]
fn a_cycle_would_be_found() {
    let mut edges = graph();
    edges.get_mut("audience").unwrap().insert("session".into());
    assert!(cycle_from(&edges, "audience").is_some());
}

#[test]
fn main_only_hands_over_to_cli() {
    let main = std::fs::read_to_string(src().join("main.rs")).unwrap();
    assert!(main.lines().count() < 80, "main.rs has {} lines", main.lines().count());
    assert!(!main.contains("#[path"), "cli/ is a normal module");
}

#[test]
fn files_stay_small_enough_to_have_one_job() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            let lines = text.split("#[cfg(test)]").next().unwrap_or("").lines().count();
            (lines > 700).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    assert!(files.len() > 50, "the sources were read: {} files", files.len());
    assert!(long.is_empty(), "files over 700 lines before their unit tests:\n{}", long.join("\n"));
}

/// How many `Result<T, String>` a line names (generics in `T` allowed).
fn string_results(line: &str) -> usize {
    line.match_indices("Result<")
        .filter(|(i, m)| {
            let rest = &line[i + m.len()..];
            let mut depth = 0;
            for (j, c) in rest.char_indices() {
                match c {
                    '<' | '(' => depth += 1,
                    ')' => depth -= 1,
                    '>' if depth == 0 => return rest[..j].trim_end().ends_with(", String"),
                    '>' => depth -= 1,
                    _ => {}
                }
            }
            false
        })
        .count()
}

#[test]
fn string_results_are_counted() {
    assert_eq!(string_results("fn f() -> Result<(String, u8), String> {"), 1);
    assert_eq!(string_results("fn f(a: HashMap<K, String>) -> Result<u8, AwsError> {"), 0);
    assert_eq!(string_results("type Item = Result<Cow<'a, str>, String>;"), 1);
}

#[test]
fn library_errors_are_typed() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let root = src();
    let stringly: Vec<String> = files
        .iter()
        .filter(|f| module_of(&root, f).is_some())
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            code(&text).lines().filter(|l| string_results(l) > 0).map(|l| format!("{}: {}", f.display(), l.trim())).collect::<Vec<_>>()
        })
        .collect();
    assert!(stringly.len() <= 5, "at most 5 `Result<_, String>` in the library, each with a reason:\n{}", stringly.join("\n"));
}
