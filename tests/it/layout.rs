//! The source tree's shape: the top-level modules under `src/` form no import
//! cycle, and the leaf modules import nothing from the crate. Read from the
//! sources (every `crate::…` path, grouped `use crate::{…}` included), so a
//! new cycle fails here before it tangles the next change. Unit tests
//! (`#[cfg(test)] mod …` and `tests.rs` files) are left out: they may use
//! anything.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// Modules every other may use, that must themselves use nothing of ours.
const LEAVES: &[&str] = &["logging", "proto", "status", "util"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The first path segment after each `crate::` in `text`, expanding
/// `crate::{a::x, b, c::{…}}` into `a`, `b`, `c`.
fn crate_references(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut head = String::new();
            let mut in_head = true;
            for c in group.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        in_head = false;
                    }
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        if !head.is_empty() {
                            found.insert(std::mem::take(&mut head));
                        }
                        in_head = true;
                    }
                    c if in_head && (c.is_alphanumeric() || c == '_') => head.push(c),
                    c if in_head && !c.is_whitespace() => {
                        in_head = false;
                    }
                    _ => {}
                }
            }
            if !head.is_empty() {
                found.insert(head);
            }
        } else {
            let head: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !head.is_empty() {
                found.insert(head);
            }
        }
    }
    found
}

/// Top-level module → the top-level modules it refers to.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src");
        let first = relative
            .components()
            .next()
            .expect("a component")
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "bin" {
            continue;
        }
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read source");
        // In-module unit tests may use anything (the emulator, say).
        let text = text.split("#[cfg(test)]\nmod ").next().unwrap_or_default();
        // Doc links are not imports.
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let refs = graph.entry(module.clone()).or_default();
        refs.extend(
            crate_references(&code)
                .into_iter()
                .filter(|r| *r != module && r != "RELEASE"),
        );
    }
    graph
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn grouped_imports_are_read() {
    let refs = crate_references("use crate::{agent::{self, x}, health, task::launch::{A, B}};\nlet x = crate::util::lock(&m);");
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        ["agent", "health", "task", "util"]
    );
    let cyclic: BTreeMap<String, BTreeSet<String>> = [("a", ["b"]), ("b", ["c"]), ("c", ["a"])]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.iter().map(|s| (*s).to_owned()).collect()))
        .collect();
    assert_eq!(
        find_cycle(&cyclic),
        Some(vec![
            "a".to_owned(),
            "b".to_owned(),
            "c".to_owned(),
            "a".to_owned()
        ])
    );
}

#[test]
fn top_level_modules_have_no_import_cycle() {
    let graph = module_graph();
    assert!(graph.len() >= 10, "read the whole tree: {graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import cycle between top-level modules: {}\nwhole graph: {graph:#?}",
            cycle.join(" -> ")
        );
    }
    for leaf in LEAVES {
        let refs = graph
            .get(*leaf)
            .unwrap_or_else(|| panic!("leaf module {leaf} exists"));
        assert!(
            refs.is_empty(),
            "leaf module {leaf} must not use the crate's other modules, uses {refs:?}"
        );
    }
}
