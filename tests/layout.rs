//! The layout of `src/`, checked: seven layers, each a folder whose `mod.rs` says in its
//! module documentation which layers (or which of their modules) it may use, on a line
//! `May use: ...`; every `crate::` path in the sources keeps to it, points down (or within its
//! own layer) only, and the modules have no circle. Every source file starts with its module
//! documentation. A reader can then trust the layer docs as the map of the code.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, bottom first: a module may use its own layer and those before it.
const LAYERS: [&str; 7] = ["text", "sys", "policy", "observe", "report", "handle", "interpose"];

/// A module: its layer and its name within it (`mod` for the layer's `mod.rs`).
type Module = (String, String);

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module a file defines, or None for `lib.rs`.
fn module_of(path: &Path) -> Option<Module> {
    let rel = path.strip_prefix(src()).unwrap();
    let parts: Vec<&str> = rel.iter().map(|c| c.to_str().unwrap()).collect();
    match parts.as_slice() {
        ["lib.rs"] => None,
        [layer, file] => Some((layer.to_string(), file.trim_end_matches(".rs").to_string())),
        _ => panic!(
            "{}: a source file outside the layer folders (src/LAYER/MODULE.rs)",
            rel.display()
        ),
    }
}

/// The code of a file without its comments (to the end of the line), so that documentation
/// naming a module is not taken for a use of it.
fn code(text: &str) -> String {
    text.lines()
        .map(|l| l.split("//").next().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path that follows `crate::` in `code`, with `use crate::{a::{b, c}, d}` groups
/// expanded: `["a::b", "a::c", "d"]`.
fn crate_paths(code: &str) -> Vec<String> {
    fn skip_space(s: &[u8], i: &mut usize) {
        while *i < s.len() && s[*i].is_ascii_whitespace() {
            *i += 1;
        }
    }
    fn tree(s: &[u8], i: &mut usize, prefix: &str, out: &mut Vec<String>) {
        let mut path = prefix.to_string();
        loop {
            skip_space(s, i);
            if *i < s.len() && s[*i] == b'{' {
                *i += 1;
                loop {
                    while *i < s.len() && (s[*i].is_ascii_whitespace() || s[*i] == b',') {
                        *i += 1;
                    }
                    if *i >= s.len() || s[*i] == b'}' {
                        *i += 1;
                        return;
                    }
                    tree(s, i, &path, out);
                    // `x as y`, `*`: on to the item's end.
                    while *i < s.len() && s[*i] != b',' && s[*i] != b'}' {
                        *i += 1;
                    }
                }
            }
            let start = *i;
            while *i < s.len() && (s[*i].is_ascii_alphanumeric() || s[*i] == b'_') {
                *i += 1;
            }
            let seg = std::str::from_utf8(&s[start..*i]).unwrap();
            if !seg.is_empty() && seg != "self" {
                if !path.is_empty() {
                    path.push_str("::");
                }
                path.push_str(seg);
            }
            skip_space(s, i);
            if !s[*i..].starts_with(b"::") {
                if !path.is_empty() {
                    out.push(path);
                }
                return;
            }
            *i += 2;
        }
    }
    let s = code.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(k) = code[at..].find("crate::") {
        let mut i = at + k + "crate::".len();
        let before = code[..at + k].chars().next_back();
        if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            tree(s, &mut i, "", &mut out);
        }
        at = (at + k + 1).max(i.min(s.len()));
    }
    out
}

struct Layout {
    /// module -> the modules it uses (other than itself)
    uses: BTreeMap<Module, BTreeSet<Module>>,
    /// layer -> its `May use:` entries (`layer` or `layer::module`)
    may_use: BTreeMap<String, Vec<String>>,
    /// files without a module documentation
    undocumented: Vec<String>,
}

fn layout() -> Layout {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    let mut modules: BTreeSet<Module> = BTreeSet::new();
    for f in &files {
        modules.extend(module_of(f));
    }
    let mut uses = BTreeMap::new();
    let mut may_use = BTreeMap::new();
    let mut undocumented = Vec::new();
    for f in &files {
        let text = fs::read_to_string(f).unwrap();
        if !text.starts_with("//!") {
            undocumented.push(f.strip_prefix(src()).unwrap().display().to_string());
        }
        let Some(me) = module_of(f) else { continue };
        if me.1 == "mod" {
            let line = text
                .lines()
                .take_while(|l| l.starts_with("//!"))
                .find_map(|l| l.trim_start_matches("//!").trim().strip_prefix("May use:"))
                .unwrap_or_else(|| panic!("src/{}/mod.rs: no `May use:` line in its documentation", me.0));
            let list: Vec<String> = line
                .split(',')
                .filter_map(|t| {
                    let t = t.trim().trim_end_matches('.');
                    t.strip_prefix('`')
                        .and_then(|t| t.strip_suffix('`'))
                        .map(str::to_string)
                })
                .collect();
            may_use.insert(me.0.clone(), list);
        }
        let mut set = BTreeSet::new();
        for p in crate_paths(&code(&text)) {
            let segs: Vec<&str> = p.split("::").collect();
            let layer = segs[0].to_string();
            // `crate::layer::module::...`, or an item of the layer's mod.rs.
            let module = segs
                .get(1)
                .filter(|m| modules.contains(&(layer.clone(), m.to_string())))
                .map_or("mod".to_string(), |m| m.to_string());
            let target = (layer, module);
            assert!(
                modules.contains(&target) || target.1 == "mod",
                "{}: `crate::{p}` names no module of the layout",
                f.display()
            );
            if target != me {
                set.insert(target);
            }
        }
        uses.insert(me, set);
    }
    Layout {
        uses,
        may_use,
        undocumented,
    }
}

fn rank(layer: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| *l == layer)
        .unwrap_or_else(|| panic!("`{layer}` is not one of the layers {LAYERS:?}"))
}

#[test]
fn path_parser_expands_groups() {
    let p = crate_paths("use crate::{a::{b, c::D}, e as f, g::*};\nlet x = crate::h::i(crate::j::K);");
    assert_eq!(p, ["a::b", "a::c::D", "e", "g", "h::i", "j::K"]);
    assert_eq!(crate_paths("use crate::k::{self, l};"), ["k", "k::l"]);
    assert!(crate_paths("let my_crate::x = 1;").is_empty());
}

#[test]
fn src_is_the_seven_layers_and_every_file_is_documented() {
    let l = layout();
    let found: BTreeSet<&str> = l.uses.keys().map(|(layer, _)| layer.as_str()).collect();
    let expected: BTreeSet<&str> = LAYERS.into_iter().collect();
    assert_eq!(found, expected, "the folders of src/");
    assert!(
        l.undocumented.is_empty(),
        "files without a module doc (//!): {:?}",
        l.undocumented
    );
    for (n, layer) in LAYERS.iter().enumerate() {
        let doc = fs::read_to_string(src().join(layer).join("mod.rs")).unwrap();
        let tag = format!("Layer {} of {}", n + 1, LAYERS.len());
        assert!(
            doc.starts_with(&format!("//! {tag}")),
            "src/{layer}/mod.rs should start with `//! {tag}`"
        );
    }
}

#[test]
fn dependencies_point_down_and_keep_to_each_layers_may_use_line() {
    let l = layout();
    let mut wrong = Vec::new();
    for (layer, list) in &l.may_use {
        for entry in list {
            let to = entry.split("::").next().unwrap();
            if rank(to) >= rank(layer) {
                wrong.push(format!(
                    "src/{layer}/mod.rs says it may use `{entry}`, which is not below it"
                ));
            }
        }
    }
    for ((layer, module), targets) in &l.uses {
        for (tl, tm) in targets {
            if tl == layer {
                continue;
            }
            let list = &l.may_use[layer];
            let allowed = list.iter().any(|e| e == tl || *e == format!("{tl}::{tm}"));
            if !allowed || rank(tl) > rank(layer) {
                wrong.push(format!(
                    "src/{layer}/{module}.rs uses `{tl}::{tm}`, but src/{layer}/mod.rs says: May use: {}",
                    list.join(", ")
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn modules_have_no_circle() {
    let l = layout();
    // Depth-first search for a back edge; the circle is reported as the path around it.
    fn visit<'a>(
        m: &'a Module,
        uses: &'a BTreeMap<Module, BTreeSet<Module>>,
        state: &mut BTreeMap<&'a Module, u8>,
        stack: &mut Vec<&'a Module>,
    ) -> Option<Vec<String>> {
        state.insert(m, 1);
        stack.push(m);
        for t in uses.get(m).into_iter().flatten() {
            match state.get(t) {
                Some(1) => {
                    let from = stack.iter().position(|s| *s == t).unwrap();
                    let mut c: Vec<String> = stack[from..].iter().map(|(a, b)| format!("{a}::{b}")).collect();
                    c.push(format!("{}::{}", t.0, t.1));
                    return Some(c);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(t, uses, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(m, 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in l.uses.keys() {
        if !state.contains_key(m) {
            let mut stack = Vec::new();
            if let Some(c) = visit(m, &l.uses, &mut state, &mut stack) {
                panic!("a circle of modules: {}", c.join(" -> "));
            }
        }
    }
}
