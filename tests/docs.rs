//! The README against the code: every variable of the configuration's table, with its
//! default, every wrapper option, every cause code is in it (every layer folder of `src/` in DEVELOPMENT.md),
//! and it stays short enough to be read (at most 32,000 bytes).

use std::fs;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    fs::read_to_string(root().join("README.md")).unwrap()
}

/// The `(name, default, ...)` rows of `VARIABLES` in src/policy/config.rs, read as text.
fn variables() -> Vec<(String, String)> {
    let src = fs::read_to_string(root().join("src/policy/config.rs")).unwrap();
    let table = &src[src.find("pub const VARIABLES").unwrap()..];
    let table = &table[..table.find("\n];").unwrap()];
    let mut out = Vec::new();
    for (i, _) in table.match_indices("\"ERRSHIM_") {
        let row = &table[i + 1..];
        let name = &row[..row.find('"').unwrap()];
        let next = row[name.len() + 1..].trim_start_matches([',', ' ', '\n']);
        let default = match next.strip_prefix('"') {
            Some(d) => d[..d.find('"').unwrap()].to_string(),
            None => {
                assert!(next.starts_with("rules::DEFAULT_RULES"), "{name}: {next:.40}");
                "close,shutdown:ENOTCONN:ignore".to_string()
            }
        };
        out.push((name.to_string(), default));
    }
    assert!(out.len() >= 10, "parsed {out:?}");
    out
}

#[test]
fn readme_is_at_most_32000_bytes() {
    let n = readme().len();
    assert!(n <= 32_000, "README.md is {n} bytes; the limit is 32,000");
}

#[test]
fn every_variable_is_documented_with_its_default() {
    let r = readme();
    let vars = variables();
    for (name, default) in &vars {
        let row = r
            .lines()
            .find(|l| l.starts_with(&format!("| `{name}` |")))
            .unwrap_or_else(|| panic!("README has no table row for {name}"));
        let shown = if default.is_empty() {
            "none".to_string()
        } else {
            format!("`{default}`")
        };
        assert!(
            row.contains(&format!("| {shown} |")) || row.contains(&format!("| {default} |")),
            "README's row for {name} does not give its default {shown}: {row}"
        );
    }
    // And no row for a variable the code does not have.
    for l in r.lines().filter(|l| l.starts_with("| `ERRSHIM_")) {
        let name = l.split('`').nth(1).unwrap();
        assert!(
            vars.iter().any(|(n, _)| n == name),
            "README documents {name}, which the code does not read"
        );
    }
}

#[test]
fn every_wrapper_option_is_documented() {
    let out = std::process::Command::new(root().join("scripts/errshim"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let r = readme();
    let mut n = 0;
    // The option lines of --help: `  --name ...`.
    for line in help.lines().filter(|l| l.starts_with("  --")) {
        let opt = line.split_whitespace().next().unwrap();
        if opt == "--help" {
            continue;
        }
        n += 1;
        assert!(
            r.contains(&format!("`{opt}")),
            "README does not document the wrapper's {opt}"
        );
    }
    assert!(n >= 8, "found only {n} options in --help:\n{help}");
}

#[test]
fn every_cause_and_layer_is_documented() {
    let r = readme();
    let cause = fs::read_to_string(root().join("src/observe/cause.rs")).unwrap();
    let mut n = 0;
    for l in cause.lines() {
        // `Cause::X => "code",` in the code-name table
        if let Some(code) = l.trim().strip_prefix("Cause::").and_then(|t| t.split('"').nth(1)) {
            if code.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                n += 1;
                assert!(
                    r.contains(&format!("| `{code}` |")),
                    "README's cause table lacks `{code}`"
                );
            }
        }
    }
    assert!(n >= 9, "found only {n} cause codes in src/observe/cause.rs");
    // The layout is for developers: DEVELOPMENT.md, which the README points to.
    let dev = fs::read_to_string(root().join("DEVELOPMENT.md")).unwrap();
    assert!(r.contains("(DEVELOPMENT.md)"), "README points to DEVELOPMENT.md");
    for e in fs::read_dir(root().join("src")).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            assert!(
                dev.contains(&format!("`src/{name}/`")),
                "DEVELOPMENT.md's layout lacks src/{name}/"
            );
        }
    }
}
