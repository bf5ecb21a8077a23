//! The direction of dependencies between the server's modules, checked against the table
//! in docs/architecture.md ("Who may use whom"): every `crate::` path outside tests must be
//! an edge the table allows, and the table itself must have no circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const DOC: &str = "docs/architecture.md";
const TABLE_HEADING: &str = "### Who may use whom";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// module → what it may use: a whole module (`im`) or one of its submodules
/// (`im::delivery`).
fn allowed_edges() -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string(root().join(DOC)).expect("docs/architecture.md");
    let start = doc
        .find(TABLE_HEADING)
        .unwrap_or_else(|| panic!("{DOC} has no '{TABLE_HEADING}' section"));
    let mut table = BTreeMap::new();
    for line in doc[start..].lines().skip(1) {
        let line = line.trim();
        if line.starts_with("###") || line.starts_with("## ") {
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if !line.starts_with('|') || cells.len() < 2 || cells[0].starts_with("---") {
            continue;
        }
        let module = cells[0].trim_matches('`');
        if module == "module" {
            continue;
        }
        let uses: BTreeSet<String> = cells[1]
            .split(',')
            .map(|u| u.trim().trim_matches('`').to_string())
            .filter(|u| !u.is_empty() && u != "—" && u != "-")
            .collect();
        table.insert(module.to_string(), uses);
    }
    assert!(
        !table.is_empty(),
        "the table under '{TABLE_HEADING}' is empty"
    );
    table
}

/// Top-level modules of `src/`: directories with a `mod.rs` and single files.
fn modules() -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(root().join("src")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if name == "lib" || name == "main" {
            continue;
        }
        if path.is_dir() || path.extension().is_some_and(|e| e == "rs") {
            out.insert(name, path);
        }
    }
    out
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            rust_files(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs")
        && path.file_name().is_some_and(|n| n != "tests.rs")
    {
        out.push(path.to_path_buf());
    }
}

/// Lines of code outside test modules and comments, with their numbers.
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((n, line)) = lines.next() {
        let trimmed = line.trim();
        if trimmed == "#[cfg(test)]" {
            let next = lines
                .peek()
                .map(|(_, l)| l.trim().to_string())
                .unwrap_or_default();
            if next.starts_with("mod ") {
                // `mod tests;` lives in a tests.rs (skipped); `mod tests { ... }` is skipped here.
                let (_, first) = lines.next().unwrap();
                let mut depth = brace_balance(first);
                while depth > 0 {
                    let Some((_, l)) = lines.next() else { break };
                    depth += brace_balance(l);
                }
                continue;
            }
        }
        if trimmed.starts_with("//") {
            continue;
        }
        let code = match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        out.push((n + 1, code.to_string()));
    }
    out
}

fn brace_balance(line: &str) -> i64 {
    line.chars().fold(0, |d, c| match c {
        '{' => d + 1,
        '}' => d - 1,
        _ => d,
    })
}

/// Every `crate::a::b` path on a line, as (a, b).
fn crate_paths(line: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue; // e.g. `some_crate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or_default();
            for item in inner.split(',') {
                let mut parts = item.trim().split("::");
                let first = ident(parts.next().unwrap_or_default());
                let second = parts.next().map(ident);
                if !first.is_empty() {
                    out.push((first, second));
                }
            }
            continue;
        }
        let first = ident(rest);
        let second = rest[first.len()..].strip_prefix("::").map(ident);
        if !first.is_empty() {
            out.push((first, second));
        }
    }
    out
}

#[test]
fn every_module_uses_only_what_the_architecture_doc_allows() {
    let table = allowed_edges();
    let modules = modules();
    let mut offences = Vec::new();
    for (module, path) in &modules {
        let Some(allowed) = table.get(module) else {
            offences.push(format!(
                "src/{module} is not in the table of {DOC} ('{TABLE_HEADING}')"
            ));
            continue;
        };
        let mut files = Vec::new();
        rust_files(path, &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in code_lines(&text) {
                for (target, sub) in crate_paths(&line) {
                    if &target == module {
                        continue;
                    }
                    let whole = allowed.contains(&target);
                    let part = sub
                        .as_ref()
                        .is_some_and(|s| allowed.contains(&format!("{target}::{s}")));
                    if !whole && !part {
                        let shown = file.strip_prefix(root()).unwrap_or(&file).display();
                        offences.push(format!(
                            "{shown}:{n}: `{module}` uses `{target}`, which {DOC} does not allow: {}",
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    for module in table.keys() {
        if !modules.contains_key(module) {
            offences.push(format!(
                "{DOC} lists `{module}`, which is not a module of src/"
            ));
        }
    }
    assert!(offences.is_empty(), "\n{}\n", offences.join("\n"));
}

#[test]
fn the_allowed_edges_have_no_circle() {
    let table = allowed_edges();
    // Depth-first search over module-level edges (a submodule edge counts as its module).
    fn visit(
        m: &str,
        table: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut circle = path[i..].to_vec();
            circle.push(m.to_string());
            return Some(circle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for used in table.get(m).into_iter().flatten() {
            let target = used.split("::").next().unwrap();
            if let Some(c) = visit(target, table, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in table.keys() {
        if let Some(circle) = visit(m, &table, &mut Vec::new(), &mut done) {
            panic!("{DOC} allows a circle: {}", circle.join(" → "));
        }
    }
}

#[test]
fn the_check_sees_grouped_and_nested_paths() {
    assert_eq!(
        crate_paths("use crate::{im::roster, xep};"),
        vec![
            ("im".to_string(), Some("roster".to_string())),
            ("xep".to_string(), None)
        ]
    );
    assert_eq!(
        crate_paths("let x = crate::im::delivery::to_bare(a);"),
        vec![("im".to_string(), Some("delivery".to_string()))]
    );
    assert!(crate_paths("use chorus_raft::crate_like::x;").is_empty());
    let lines = code_lines("use crate::a;\n// crate::b\n#[cfg(test)]\nmod tests {\n    use crate::c;\n}\nuse crate::d;");
    let seen: Vec<String> = lines
        .iter()
        .flat_map(|(_, l)| crate_paths(l))
        .map(|p| p.0)
        .collect();
    assert_eq!(seen, vec!["a", "d"]);
}
