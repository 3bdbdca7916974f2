//! The library's modules form layers: no module uses one that uses it back, directly or
//! through others. Read from the sources, so a new `use` that closes a loop fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level modules of `src/` and, for each, the top-level modules it names through
/// `crate::`, outside comments and unit tests. `pub use` re-exports in `lib.rs` are
/// resolved to the module that defines the item.
fn uses() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("read lib.rs");
    let defined_in = reexports(&lib);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in rust_files(&src) {
        let relative = path.strip_prefix(&src).expect("under src");
        let top = relative.components().next().expect("a component");
        let module = top
            .as_os_str()
            .to_str()
            .expect("utf-8")
            .trim_end_matches(".rs");
        if module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read a source file");
        let used = graph.entry(module.to_owned()).or_default();
        for name in crate_paths(&code_of(&text)) {
            let name = defined_in.get(&name).cloned().unwrap_or(name);
            if name != module {
                used.insert(name);
            }
        }
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for used in graph.values_mut() {
        used.retain(|name| modules.contains(name));
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list src") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The text without unit tests and without `//` comments (doc links name modules too).
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every first segment after `crate::`, with the names inside `use crate::{...}` groups.
fn crate_paths(code: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or("");
            // Only the first segment of each path in the group names a module.
            for path in group.split(',') {
                let name = ident(path.trim());
                if !name.is_empty() {
                    names.push(name);
                }
            }
        } else {
            names.push(ident(rest));
        }
    }
    names
}

/// `pub use self::module::{A, B};` in `lib.rs`: each item and the module it comes from.
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut defined_in = BTreeMap::new();
    for line in lib.lines() {
        let Some(path) = line.trim().strip_prefix("pub use self::") else {
            continue;
        };
        let module: String = path
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let items = path.rsplit("::").next().unwrap_or("");
        for item in items.trim_matches(|c| "{};".contains(c)).split(',') {
            let item = item.trim().trim_end_matches(['}', ';']);
            if !item.is_empty() {
                defined_in.insert(item.to_owned(), module.clone());
            }
        }
    }
    defined_in
}

/// A loop of uses through `start`, if there is one.
fn loop_through(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![start.to_owned()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().expect("a path is never empty");
        for next in &graph[last] {
            if next == start {
                let mut cycle = path.clone();
                cycle.push(start.to_owned());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn no_module_uses_one_that_uses_it_back() {
    let graph = uses();
    assert!(graph.len() > 10, "the sources were read: {graph:?}");
    assert!(
        graph["ring"].contains("transport"),
        "uses were found: {graph:?}"
    );
    let loops: Vec<String> = graph
        .keys()
        .filter_map(|module| loop_through(&graph, module))
        .map(|cycle| cycle.join(" -> "))
        .collect();
    assert!(loops.is_empty(), "modules in a loop: {loops:#?}");
}

#[test]
fn the_check_finds_a_loop_when_there_is_one() {
    let mut graph = uses();
    graph
        .get_mut("transport")
        .expect("a transport module")
        .insert("ring".to_owned());
    assert!(loop_through(&graph, "ring").is_some());
}
