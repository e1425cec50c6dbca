//! `cargo xtask house`: the house rules of issue #15, measured. Outside
//! tests (`tests/`, `fuzz/`, and a file's trailing `#[cfg(test)]`
//! module):
//!
//! - no source file over [`MAX_FILE`] lines;
//! - no function over [`MAX_FN`] lines;
//! - no import cycle between the modules of one crate.
//!
//! What is over a limit today is listed in `xtask/house.allow`, one rule
//! per line: a ratchet. The test suite fails on a finding not listed
//! there, and on a listed one that is gone, so the list only shrinks.

use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub const MAX_FILE: usize = 600;
pub const MAX_FN: usize = 80;

/// The crates whose sources are held to the rules.
pub const CRATES: &[&str] = &["format", "sys", "backup", "bundler", "stub", "xtask"];

/// Each finding, as a line of `house.allow` names it, with how far over
/// its limit it is (lines are not part of the name: a listed file may
/// change without the list changing).
pub fn findings(root: &Path) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for krate in CRATES {
        let src = root.join(krate).join("src");
        let mut files = Vec::new();
        walk(&src, &mut files)?;
        let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in &files {
            let text = std::fs::read_to_string(f).with_context(|| format!("{}", f.display()))?;
            let body = without_tests(&text);
            let rel = f.strip_prefix(root).unwrap_or(f).display().to_string();
            let lines = body.lines().count();
            if lines > MAX_FILE {
                out.insert(format!("file {rel}"), format!("{lines} lines"));
            }
            for (name, n) in long_fns(body) {
                out.insert(format!("fn {rel} {name}"), format!("{n} lines"));
            }
            let module = module_of(&src, f);
            uses.entry(module.clone()).or_default().extend(crate_uses(body).into_iter().filter(|m| *m != module));
        }
        for cycle in cycles(&uses) {
            out.insert(format!("cycle {krate} {}", cycle.join(" -> ")), String::new());
        }
    }
    Ok(out)
}

/// The entries of `house.allow`, comments and blank lines aside.
pub fn allowed(root: &Path) -> Result<BTreeSet<String>> {
    let text = std::fs::read_to_string(root.join("xtask/house.allow")).context("xtask/house.allow")?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    Ok(())
}

/// A file without its trailing unit-test module.
fn without_tests(text: &str) -> &str {
    match text.find("\n#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    }
}

/// The top-level module a file belongs to (`run/join.rs` is `run`).
fn module_of(src: &Path, f: &Path) -> String {
    let rel = f.strip_prefix(src).unwrap_or(f);
    let first = rel.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned()).unwrap_or_default();
    first.trim_end_matches(".rs").to_string()
}

/// The top-level modules this text names through `crate::`.
fn crate_uses(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let code: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    let text = code.as_str();
    for (i, _) in text.match_indices("crate::") {
        if i > 0 && (text.as_bytes()[i - 1].is_ascii_alphanumeric() || text.as_bytes()[i - 1] == b'_') {
            continue; // `nxs_crate::`, not ours
        }
        let rest = &text[i + "crate::".len()..];
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let brace = rest.starts_with('{');
        if brace {
            let inner = &rest[1..rest.find('}').unwrap_or(rest.len())];
            for part in inner.split(',') {
                let n: String = part.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if n.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                    out.insert(n);
                }
            }
        } else if rest[name.len()..].starts_with("::") && name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
            out.insert(name);
        }
    }
    out
}

/// Each function longer than [`MAX_FN`], with its length: from its `fn`
/// line to the line of the brace that closes it, at the same indent.
fn long_fns(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let indent = l.len() - t.len();
        let Some(at) = fn_name_at(t) else { continue };
        if t.ends_with(';') {
            continue; // a declaration in a trait
        }
        let close = " ".repeat(indent) + "}";
        if let Some(end) = lines[i + 1..].iter().position(|m| *m == close) {
            let n = end + 2;
            if n > MAX_FN {
                out.push((at, n));
            }
        }
    }
    out
}

fn fn_name_at(t: &str) -> Option<String> {
    let t = t.trim_start_matches("pub ").trim_start_matches("pub(crate) ").trim_start_matches("pub(super) ");
    let t = t.trim_start_matches("const ").trim_start_matches("unsafe ").trim_start_matches("async ");
    let rest = t.strip_prefix("fn ")?;
    Some(rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect())
}

/// Every cycle of the module graph, each once, from its smallest module.
fn cycles(uses: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let mut found = BTreeSet::new();
    for start in uses.keys() {
        let mut path = vec![start.clone()];
        search(uses, start, &mut path, &mut found);
    }
    found.into_iter().collect()
}

fn search(
    uses: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    path: &mut Vec<String>,
    found: &mut BTreeSet<Vec<String>>,
) {
    let last = path.last().expect("never empty").clone();
    for next in uses.get(&last).into_iter().flatten() {
        if next == start {
            // Only the rotation that starts at the smallest module.
            if path.iter().all(|m| m.as_str() >= start) {
                let mut c = path.clone();
                c.push(start.to_string());
                found.insert(c);
            }
        } else if !path.contains(next) && next.as_str() > start && path.len() < 8 {
            path.push(next.clone());
            search(uses, start, path, found);
            path.pop();
        }
    }
}

/// The task: print every finding, say which are new and which listed ones
/// are gone; fail on either.
pub fn run(root: &Path) -> Result<()> {
    let (found, allowed) = (findings(root)?, allowed(root)?);
    for (f, detail) in &found {
        println!("{} {f} {detail}", if allowed.contains(f) { "  listed" } else { "  NEW   " });
    }
    let names: BTreeSet<String> = found.keys().cloned().collect();
    let new: Vec<_> = names.difference(&allowed).collect();
    let gone: Vec<_> = allowed.difference(&names).collect();
    for g in &gone {
        println!("  GONE   {g} (remove it from xtask/house.allow)");
    }
    println!("house: {} finding(s), {} new, {} listed but gone", found.len(), new.len(), gone.len());
    anyhow::ensure!(new.is_empty() && gone.is_empty(), "xtask/house.allow is out of date");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_and_long_functions_are_found() {
        let g = |edges: &[(&str, &str)]| {
            let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (a, b) in edges {
                m.entry(a.to_string()).or_default().insert(b.to_string());
                m.entry(b.to_string()).or_default();
            }
            m
        };
        assert!(cycles(&g(&[("a", "b"), ("b", "c")])).is_empty());
        assert_eq!(cycles(&g(&[("b", "a"), ("a", "b")])), vec![vec!["a", "b", "a"]]);
        assert_eq!(cycles(&g(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")])).len(), 1);
        let body = "fn short() {\n}\n".to_string() + "pub fn long() {\n" + &"    x;\n".repeat(MAX_FN) + "}\n";
        assert_eq!(long_fns(&body), vec![("long".to_string(), MAX_FN + 2)]);
        let uses = crate_uses(
            "use crate::error::{Error};\nuse crate::{fsx, door::Dir};\nlet x = crate::run::go();\nnxs_crate::z::y;",
        );
        assert_eq!(uses.into_iter().collect::<Vec<_>>(), vec!["door", "error", "fsx", "run"]);
        assert_eq!(without_tests("a\n#[cfg(test)]\nmod tests {\n}\n"), "a");
    }
}
