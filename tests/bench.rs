//! scripts/bench, the side-by-side benchmark: a `--quick` run (tiny counts) goes through every
//! part, exits 0, prints one well-formed table and writes the same results as JSON, and leaves
//! no temporary file or server behind. What the figures are is never asserted: timings on a
//! shared machine are not a test.

mod common;
use common::*;

use serde_json::Value;
use std::time::Duration;

const COLUMNS: [&str; 8] = [
    "benchmark",
    "mode",
    "median",
    "spread (min..max)",
    "vs none",
    "in-process",
    "target",
    "status",
];

const MICRO: [(&str, &str); 7] = [
    ("unix-rw", "unix write+read"),
    ("tcp-rw", "tcp write+read"),
    ("unix-sendrecv", "unix send+recv"),
    ("tcp-sendrecv", "tcp send+recv"),
    ("unix-vec", "unix writev+readv"),
    ("tcp-vec", "tcp writev+readv"),
    ("churn", "tcp connection churn"),
];
const MICRO_MODES: [(&str, &str); 8] = [
    ("none", "no preload"),
    ("floor", "floor: C pass-through"),
    ("default", "errshim, default rules"),
    ("count", "errshim, ERRSHIM_COUNT=1"),
    ("faults", "errshim, faults p=0"),
    ("faults-eval", "errshim, faults nth=10^12"),
    ("libfiu", "libfiu, p=0"),
    ("strace", "strace --inject"),
];
const CALLGRIND_MODES: [(&str, &str); 8] = [
    ("none", "no preload"),
    ("default", "errshim, default rules"),
    ("count", "errshim, ERRSHIM_COUNT=1"),
    ("faults-other", "errshim, faults on shutdown only"),
    ("faults", "errshim, faults p=0"),
    ("faults-eval", "errshim, faults nth=10^12"),
    ("faults-drawn", "errshim, faults p=1e-9"),
    ("libfiu", "libfiu, p=0"),
];
const MACRO: [(&str, &str); 4] = [
    ("nginx", "nginx static 1 KiB"),
    ("nginx-resets", "nginx 1 KiB, a third of clients reset"),
    ("redis-set", "redis SET"),
    ("redis-get", "redis GET"),
];
const MACRO_MODES: [(&str, &str); 2] = [("none", "no preload"), ("errshim", "errshim, json log")];
const STORM_MODES: [(&str, &str); 4] = [
    ("none", "no preload"),
    ("off", "errshim, ERRSHIM_LOG=off"),
    ("held", "errshim, default rate limit (lines held back)"),
    ("logged", "errshim, every event logged (ERRSHIM_LOG_RATE=0)"),
];
const STORM_LABEL: &str = "socket+shutdown+close, one event";
const START_MODES: [(&str, &str); 4] = [
    ("empty", "empty preload (reference)"),
    ("none", "no preload"),
    ("default", "errshim, default rules"),
    ("disable", "errshim, ERRSHIM_DISABLE=1"),
];

/// One expected row: section, benchmark, label, unit, mode, mode label, the tool it needs.
struct Want {
    section: &'static str,
    bench: &'static str,
    title: String,
    unit: &'static str,
    mode: &'static str,
    mode_label: &'static str,
    needs: Option<&'static str>,
    target: Option<f64>,
}

fn expected_rows(with_macro: bool) -> Vec<Want> {
    let mut v = Vec::new();
    for (bench, label) in MICRO {
        for (mode, mode_label) in MICRO_MODES {
            v.push(Want {
                section: "micro",
                bench,
                title: format!("{label} (ns/call)"),
                unit: "ns/call",
                mode,
                mode_label,
                needs: match mode {
                    "libfiu" => Some("fiu-run"),
                    "strace" => Some("strace"),
                    _ => None,
                },
                target: match mode {
                    "default" => Some(1.02),
                    "faults" | "faults-eval" => Some(1.05),
                    _ => None,
                },
            });
        }
    }
    for (mode, mode_label) in CALLGRIND_MODES {
        v.push(Want {
            section: "instructions",
            bench: "unix-rw",
            title: "unix write+read (callgrind, instr/call)".into(),
            unit: "instr/call",
            mode,
            mode_label,
            needs: Some(if mode == "libfiu" { "fiu-run" } else { "valgrind" }),
            target: match mode {
                "default" => Some(40.0),
                "faults" | "faults-eval" => Some(60.0),
                _ => None,
            },
        });
    }
    for (mode, mode_label) in START_MODES {
        v.push(Want {
            section: "start",
            bench: "start",
            title: "process start (fork+exec of /bin/true) (us/start)".into(),
            unit: "us/start",
            mode,
            mode_label,
            needs: None,
            target: matches!(mode, "default" | "disable").then_some(1.05),
        });
    }
    for (mode, mode_label) in START_MODES {
        v.push(Want {
            section: "start-instructions",
            bench: "start",
            title: "process start (callgrind, instr/start)".into(),
            unit: "instr/start",
            mode,
            mode_label,
            needs: Some("valgrind"),
            target: None,
        });
    }
    for (section, tool, unit, targets) in [
        ("storm-instructions", "valgrind", "instr/event", [500.0, 500.0, 4000.0]),
        ("storm-syscalls", "strace", "syscalls/event", [0.0, 0.0, 6.0]),
    ] {
        for (i, (mode, mode_label)) in STORM_MODES.into_iter().enumerate() {
            v.push(Want {
                section,
                bench: "storm",
                title: if tool == "valgrind" {
                    format!("{STORM_LABEL} (callgrind, {unit})")
                } else {
                    format!("{STORM_LABEL} (strace -c, {unit})")
                },
                unit,
                mode,
                mode_label,
                needs: Some(tool),
                target: i.checked_sub(1).map(|t| targets[t]),
            });
        }
    }
    for (mode, mode_label) in STORM_MODES {
        v.push(Want {
            section: "storm-time",
            bench: "storm",
            title: format!("{STORM_LABEL} (us/event)"),
            unit: "us/event",
            mode,
            mode_label,
            needs: None,
            target: None,
        });
    }
    if with_macro {
        for (bench, label) in MACRO {
            for (mode, mode_label) in MACRO_MODES {
                v.push(Want {
                    section: "macro",
                    bench,
                    title: format!("{label} (req/s)"),
                    unit: "req/s",
                    mode,
                    mode_label,
                    needs: None,
                    target: (mode == "errshim").then_some(if bench == "nginx-resets" { 0.97 } else { 0.98 }),
                });
            }
        }
    }
    v
}

fn num(row: &Value, key: &str) -> f64 {
    let v = row[key]
        .as_f64()
        .unwrap_or_else(|| panic!("'{key}' must be a number in {row}"));
    assert!(v.is_finite(), "'{key}' must be finite in {row}");
    v
}

/// Processes whose command line mentions `needle` (the run's temporary directory).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(format!("{}: {cmdline}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

#[test]
fn quick_run_prints_a_table_and_json_and_leaves_nothing_behind() {
    if !require_tool("cc") || !require_tool("python3") {
        return;
    }
    // Missing here (outside CI): the script skips those parts loudly and the rows say so.
    let optional: Vec<&str> = ["valgrind", "strace", "fiu-run"]
        .into_iter()
        .filter(|t| require_tool(t))
        .collect();
    // (every tool checked, so that each missing one is named)
    let with_macro = ["nginx", "wrk", "redis-server", "redis-benchmark"]
        .into_iter()
        .fold(true, |all, t| require_tool(t) & all);
    if !with_macro {
        eprintln!("\n*** scripts/bench runs with --no-macro: nginx, wrk or redis is missing ***\n");
    }

    let dir = TempDir::new("bench");
    let tmp = dir.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let json_path = dir.path("bench.json");
    let mut cmd = Cmd::new(manifest_dir().join("scripts/bench"))
        .args(["--quick", "--no-install", "--json"])
        .arg_path(&json_path)
        .env("TMPDIR", &tmp)
        .env("CARGO_TARGET_DIR", target_dir().parent().unwrap())
        // the first run builds the release library: allow for that, the run itself is ~15 s
        .timeout(Duration::from_secs(400));
    if !with_macro {
        cmd = cmd.args(["--no-macro"]);
    }
    let r = cmd.run();
    r.assert_ok();

    // Nothing left behind: no temporary file, no process running from the temporary dir.
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "scripts/bench left temporary files: {left:?}");
    let procs = processes_mentioning(&tmp.display().to_string());
    assert!(procs.is_empty(), "scripts/bench left processes running: {procs:?}");

    // Progress on stderr, one line per step.
    for step in [
        "[1/7] tools",
        "[2/7] build",
        "[3/7] micro",
        "[4/7] instruction",
        "[5/7] process start",
        "[6/7] event storm",
        "[7/7] servers",
    ] {
        assert!(
            r.stderr.contains(step),
            "no progress line '{step}' on stderr:\n{}",
            r.describe()
        );
    }

    let wants = expected_rows(with_macro);
    let skipped_mode = |w: &Want| w.needs.is_some_and(|t| !optional.contains(&t));

    // The table: a header with every column, a rule, then one line per row.
    let lines: Vec<&str> = r.stdout.lines().collect();
    let head = lines
        .iter()
        .position(|l| l.starts_with("benchmark "))
        .unwrap_or_else(|| panic!("no table header on stdout:\n{}", r.stdout));
    let mut at = 0;
    for c in COLUMNS {
        let p = lines[head][at..]
            .find(c)
            .unwrap_or_else(|| panic!("column '{c}' missing or out of order in '{}'", lines[head]));
        at += p + c.len();
    }
    assert!(lines[head + 1].starts_with("---"), "a rule under the header");
    let body: Vec<&str> = lines[head + 2..]
        .iter()
        .copied()
        .take_while(|l| !l.starts_with("targets:") && !l.starts_with("SKIPPED"))
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(body.len(), wants.len(), "one table line per row:\n{}", r.stdout);
    let mut title = "";
    for (line, w) in body.iter().zip(&wants) {
        if line.starts_with(&w.title) {
            title = &w.title;
        }
        assert_eq!(title, w.title, "rows of '{}' in order: '{line}'", w.title);
        let rest = line[w.title.len().min(line.len())..].trim_start();
        let rest = rest
            .strip_prefix(w.mode_label)
            .unwrap_or_else(|| panic!("mode '{}' in '{line}'", w.mode_label));
        let cells: Vec<&str> = rest.split_whitespace().collect();
        if skipped_mode(w) {
            assert_eq!(cells.first(), Some(&"skipped"), "'{line}'");
            continue;
        }
        let median: f64 = cells[0]
            .parse()
            .unwrap_or_else(|_| panic!("a number as median in '{line}'"));
        assert!(median > 0.0, "'{line}'");
        let vs = cells[2];
        let delta = matches!(
            w.section,
            "instructions" | "start-instructions" | "storm-instructions" | "storm-syscalls"
        );
        if delta {
            assert_eq!(cells[1], "exact", "'{line}'");
            vs.parse::<f64>()
                .unwrap_or_else(|_| panic!("extra instructions in '{line}'"));
        } else {
            let (lo, hi) = cells[1]
                .split_once("..")
                .unwrap_or_else(|| panic!("min..max in '{line}'"));
            let (lo, hi): (f64, f64) = (lo.parse().unwrap(), hi.parse().unwrap());
            assert!(lo <= median && median <= hi, "min <= median <= max in '{line}'");
            vs.strip_suffix('x')
                .unwrap()
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("a ratio in '{line}'"));
        }
        // The in-process ratio: micro rows, except under strace (which traces both sides).
        let in_process = w.section == "micro" && w.mode != "strace";
        let cells = if in_process {
            cells[3]
                .strip_suffix('x')
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("an in-process ratio in '{line}'"));
            [&cells[..3], &cells[4..]].concat()
        } else {
            cells
        };
        match w.target {
            // The storm's targets are judged on the event alone, said after the status.
            Some(_) if w.section.starts_with("storm-") => {
                assert_eq!(cells.len(), 8, "target, status and the event's own figure in '{line}'");
                assert!(["ok", "MISSED"].contains(&cells[5]), "status in '{line}'");
                assert!(cells[6] == "(event" && cells[7].ends_with(')'), "'{line}'");
            }
            Some(_) => {
                assert_eq!(cells.len(), 6, "target (two words) and status in '{line}'");
                assert!(["ok", "MISSED"].contains(&cells[5]), "status in '{line}'");
            }
            None => assert_eq!(cells.len(), 3, "no target in '{line}'"),
        }
    }

    let judged = wants.iter().filter(|w| w.target.is_some() && !skipped_mode(w)).count();
    assert!(
        r.stdout.contains(&format!(" of {judged} met")),
        "a line counting the targets met:\n{}",
        r.stdout
    );

    // The JSON: the same rows, with numbers.
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).expect("valid JSON");
    assert_eq!(doc["columns"], serde_json::json!(COLUMNS));
    assert_eq!(doc["config"]["quick"], Value::Bool(true));
    assert_eq!(doc["config"]["macro"], Value::Bool(with_macro));
    assert!(
        doc["machine"]["cores"].as_u64().is_some_and(|n| n >= 1),
        "{}",
        doc["machine"]
    );
    let rounds = |section: &str| match section {
        "micro" => doc["config"]["rounds"].as_u64().unwrap() as usize,
        "macro" => doc["config"]["macro_rounds"].as_u64().unwrap() as usize,
        "start" => doc["config"]["start_rounds"].as_u64().unwrap() as usize,
        "storm-time" => doc["config"]["storm_rounds"].as_u64().unwrap() as usize,
        _ => 1,
    };
    let rows = doc["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), wants.len(), "rows: {rows:#?}");
    for (row, w) in rows.iter().zip(&wants) {
        let what = format!("{}/{}/{}", w.section, w.bench, w.mode);
        assert_eq!(row["section"], w.section, "{what}");
        assert_eq!(row["benchmark"], w.bench, "{what}");
        assert_eq!(row["mode"], w.mode, "{what}");
        assert_eq!(row["mode_label"], w.mode_label, "{what}");
        assert_eq!(row["unit"], w.unit, "{what}");
        if skipped_mode(w) {
            assert!(row["skipped"].is_string() && row["value"].is_null(), "{what}: {row}");
            continue;
        }
        assert!(row["skipped"].is_null(), "{what}: {row}");
        let (value, min, max) = (num(row, "value"), num(row, "min"), num(row, "max"));
        assert!(value > 0.0 && min <= value && value <= max, "{what}: {row}");
        num(row, "q1");
        num(row, "q3");
        let samples = row["samples"].as_array().unwrap();
        assert_eq!(samples.len(), rounds(w.section), "{what}: one sample per round: {row}");
        assert!(
            samples.iter().all(|s| s.as_f64().is_some_and(|x| x > 0.0)),
            "{what}: {row}"
        );
        let vs = num(row, "vs_none");
        match w.section {
            "instructions" => {
                assert_eq!(row["vs_none_kind"], "delta", "{what}");
                let totals = row["totals"].as_array().unwrap();
                assert_eq!(totals.len(), 2, "{what}: instruction totals at both counts");
                assert!(
                    totals[0].as_u64().unwrap() < totals[1].as_u64().unwrap(),
                    "{what}: {row}"
                );
                if w.mode == "none" {
                    assert_eq!(vs, 0.0, "{what}");
                }
            }
            "storm-instructions" | "storm-syscalls" => {
                assert_eq!(row["vs_none_kind"], "delta", "{what}");
                if w.mode == "none" {
                    assert_eq!(vs, 0.0, "{what}");
                } else {
                    let alone = num(row, "event_alone");
                    assert!(
                        alone <= vs + 1e-9,
                        "{what}: the event alone costs no more than the loop: {row}"
                    );
                }
            }
            "start-instructions" => {
                assert_eq!(row["vs_none_kind"], "delta", "{what}");
                if w.mode == "empty" {
                    assert_eq!(vs, 0.0, "{what}");
                }
            }
            _ => {
                assert_eq!(row["vs_none_kind"], "ratio", "{what}");
                assert!(vs > 0.0, "{what}: {row}");
                // The reference row: "none", or for process start the empty preload.
                let reference = if w.section == "start" { "empty" } else { "none" };
                if w.mode == reference {
                    assert!((vs - 1.0).abs() < 1e-9, "{what}: {row}");
                }
                if w.section == "micro" && w.mode != "strace" {
                    assert!(num(row, "in_process") > 0.0, "{what}: {row}");
                    let pairs = row["in_process_samples"].as_array().unwrap();
                    assert_eq!(pairs.len(), rounds("micro"), "{what}: one ratio per run: {row}");
                } else {
                    assert!(row.get("in_process").is_none(), "{what}: {row}");
                }
            }
        }
        match w.target {
            Some(limit) => {
                assert_eq!(num(row, "target_limit"), limit, "{what}");
                assert!(row["target"].is_string() && row["met"].is_boolean(), "{what}: {row}");
            }
            None => assert!(row["target"].is_null() && row["met"].is_null(), "{what}: {row}"),
        }
    }
    let skipped = doc["skipped"].as_array().unwrap();
    if in_ci() {
        assert!(skipped.is_empty(), "CI runs every part: {skipped:?}");
    }
}
