//! The floors of the code look only down: a module of `src/` may name
//! (`crate::...`) only itself and the floors below it. A new top-level
//! module must take a floor here; a path that climbs fails this test with
//! the file and line that does it.

use std::fs;
use std::path::{Path, PathBuf};

/// Bottom to top, as lib.rs and ARCHITECTURE.md draw them.
const FLOORS: &[&str] = &["ground", "storage", "service", "http", "server", "cli"];

fn floor(module: &str) -> Option<usize> {
    FLOORS.iter().position(|f| *f == module)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a line names through `crate::`: `crate::a::b`,
/// and each branch of `crate::{a, b::c}`.
fn named(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Branches at the group's own depth: `a::{x, y}` is one, `a`.
            let (mut depth, mut branch_start) = (0, true);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => branch_start = true,
                    c if branch_start && !c.is_whitespace() => {
                        branch_start = false;
                        let name: String = group[i..]
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        if !name.is_empty() {
                            found.push(name);
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.push(name);
        }
    }
    found
}

#[test]
fn every_floor_looks_only_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut climbs = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let top = top.trim_end_matches(".rs");
        if top == "lib" || top == "main" {
            continue;
        }
        let Some(own) = floor(top) else {
            climbs.push(format!(
                "src/{}: module `{top}` has no floor in tests/layers.rs",
                relative.display()
            ));
            continue;
        };
        for (n, line) in fs::read_to_string(file).unwrap().lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for name in named(line) {
                match floor(&name) {
                    Some(theirs) if theirs > own => climbs.push(format!(
                        "src/{}:{}: `{top}` names `{name}`, a floor above it",
                        relative.display(),
                        n + 1
                    )),
                    Some(_) => {}
                    None => climbs.push(format!(
                        "src/{}:{}: `crate::{name}` is not one of the floors",
                        relative.display(),
                        n + 1
                    )),
                }
            }
        }
    }
    assert!(climbs.is_empty(), "\n{}", climbs.join("\n"));
}

#[test]
fn paths_are_read_as_the_compiler_reads_them() {
    assert_eq!(named("use crate::storage::media;"), ["storage"]);
    assert_eq!(
        named("use crate::{ground::durable, storage::{media, users}};"),
        ["ground", "storage"]
    );
    assert_eq!(
        named("let x = crate::http::body::x(crate::ground::y);"),
        ["http", "ground"]
    );
}
