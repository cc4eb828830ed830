//! The crate's modules depend on each other without cycles: `error` is at
//! the bottom, the layers above it, the Policy and the integrations on top.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Items the crate root re-exports, and the module each comes from.
const ROOT_REEXPORTS: &[(&str, &str)] = &[
    ("Error", "error"),
    ("IntoError", "error"),
    ("Leaf", "error"),
    ("Refusal", "error"),
    ("ConfigError", "error"),
    ("leaf_error", "error"),
    ("Clock", "clock"),
    ("ResilienceExt", "ext"),
];

/// The top-level module a source file belongs to (`None` for `lib.rs`).
fn module_of(file: &Path, src: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative
        .components()
        .next()?
        .as_os_str()
        .to_str()?
        .to_owned();
    match first.strip_suffix(".rs") {
        Some("lib") => None,
        Some(module) => Some(module.to_owned()),
        None => Some(first),
    }
}

/// The top-level modules a piece of code names through `crate::`.
fn modules_named(code: &str) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        // `use crate::{a::X, b::Y}` names a and b; `crate::a::f()` names a.
        for (at, _) in line.match_indices("crate::") {
            let rest = &line[at + "crate::".len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                Some(group) => group.split(',').map(str::trim).collect(),
                None => vec![rest],
            };
            for name in names {
                let ident: String = name
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if ident.is_empty() {
                    continue;
                }
                let module = ROOT_REEXPORTS
                    .iter()
                    .find(|(item, _)| *item == ident)
                    .map_or(ident.as_str(), |(_, module)| module);
                named.insert(module.to_owned());
            }
        }
    }
    named
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Who depends on whom, between the crate's top-level modules.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let modules: BTreeSet<String> = all.iter().filter_map(|f| module_of(f, &src)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &all {
        let Some(module) = module_of(file, &src) else {
            continue;
        };
        let code = std::fs::read_to_string(file).unwrap();
        let edges = graph.entry(module.clone()).or_default();
        for named in modules_named(&code) {
            if named != module && modules.contains(&named) {
                edges.insert(named);
            }
        }
    }
    graph
}

/// A cycle in `graph`, if it has one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
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
fn no_module_depends_on_itself_through_others() {
    let graph = dependencies();
    assert!(graph.len() >= 10, "every module was read: {graph:?}");
    if let Some(cycle) = cycle(&graph) {
        panic!("import cycle: {}\n{graph:#?}", cycle.join(" -> "));
    }
}

#[test]
fn the_bottom_knows_nothing_of_the_layers() {
    let graph = dependencies();
    let layers = [
        "circuit_breaker",
        "bulkhead",
        "timeout",
        "fallback",
        "policy",
        "blocking",
    ];
    for bottom in ["error", "window", "clock", "sync"] {
        let knows = &graph[bottom];
        for layer in layers {
            assert!(
                !knows.contains(layer),
                "{bottom} depends on {layer}: {knows:?}"
            );
        }
    }
}

#[test]
fn the_reader_finds_dependencies_and_cycles() {
    let named = modules_named(
        "use crate::error::{Error, Leaf};\n\
         // crate::policy in a comment\n\
         let x = crate::window::Window::count(3);\n\
         use crate::{bulkhead::Slot, Clock};",
    );
    assert_eq!(
        named.into_iter().collect::<Vec<_>>(),
        ["bulkhead", "clock", "error", "window"]
    );
    let graph: BTreeMap<String, BTreeSet<String>> =
        [("a", &["b"][..]), ("b", &["c"][..]), ("c", &["a"][..])]
            .into_iter()
            .map(|(n, e)| (n.to_owned(), e.iter().map(|s| s.to_string()).collect()))
            .collect();
    assert_eq!(cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
}
