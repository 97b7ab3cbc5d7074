//! `errshim explain LOG`: the digest of errshim's log. Real logs first: a Python program
//! (`tests/fixtures/explain_traffic.py`) whose socket calls the kernel fails on loopback, run
//! under liberrshim.so in the text format and in JSON, each digest checked against the counts
//! the program's run is known to give and against errshim's own exit summary in the same log,
//! and the two formats against each other. Then hand-made inputs for what real runs rarely
//! give: nothing, garbage, a cut last line, huge held-back counts, IPv6 and unix peers, hours
//! of events, prefixes of syslog, journald and docker, fields and causes still to come.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The default rule, and a log line for each failure of these calls.
const RULES: &str = "+read,recv,send,write,connect:*:log";
/// The fixture's one UDP sendto fails, injected.
const FAULTS: &str = "sendto:ENOBUFS:nth=1:fd=udp";

fn wrapper() -> Cmd {
    Cmd::new(manifest_dir().join("scripts/errshim"))
}

/// Runs the fixture under errshim with `resets` resetting clients; its stderr (errshim's lines
/// and the program's own) goes to `dir/FORMAT.log`, which is returned.
fn traffic(dir: &TempDir, format: &str, resets: u32, rate_limited: bool) -> PathBuf {
    let log = dir.path(&format!("{format}.log"));
    let mut cmd = Cmd::new("python3")
        .arg_path(&manifest_dir().join("tests/fixtures/explain_traffic.py"))
        .args([resets.to_string()])
        .shim()
        .env("ERRSHIM_FORMAT", format)
        .env("ERRSHIM_RULES", RULES)
        .env("ERRSHIM_FAULTS", FAULTS)
        .env("ERRSHIM_SEED", "7")
        .env("ERRSHIM_SUMMARY", "1")
        .stderr_file(&log);
    if rate_limited {
        cmd = cmd.default_rate();
    }
    let r = cmd.run();
    r.assert_ok();
    log
}

/// `errshim explain ARGS` through the wrapper, which must succeed.
fn explain(args: &[&str]) -> Run {
    let r = wrapper().args(["explain"]).args(args).run();
    assert_eq!(r.code, Some(0), "errshim explain {args:?}:\n{}", r.describe());
    r
}

fn digest(log: &Path) -> Value {
    let out = digest_text(log);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("--json is not JSON ({e}):\n{out}"))
}

/// `--json`'s text (numbers beyond 64 bits are exact there).
fn digest_text(log: &Path) -> String {
    explain(&["--json", "--top", "50", log.to_str().unwrap()]).stdout
}

/// A digest of `text` (a log made here), as JSON.
fn digest_of(dir: &TempDir, name: &str, text: &str) -> Value {
    let p = dir.path(name);
    std::fs::write(&p, text).unwrap();
    digest(&p)
}

/// `rows` (an array of objects) as `key fields joined by spaces -> count`.
fn rows(v: &Value, keys: &[&str]) -> BTreeMap<String, u64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|r| {
            let k: Vec<String> = keys
                .iter()
                .map(|k| match &r[*k] {
                    Value::String(s) => s.clone(),
                    Value::Null => "null".into(),
                    other => other.to_string(),
                })
                .collect();
            (k.join(" "), r["count"].as_u64().unwrap())
        })
        .collect()
}

fn map(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

/// errshim's exit summaries in a log, both formats: counts by `call errno action cause`, and
/// the events they total.
fn summaries(log: &Path) -> (BTreeMap<String, u64>, u64) {
    let text = std::fs::read_to_string(log).unwrap();
    let (mut counts, mut total) = (BTreeMap::new(), 0);
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("errshim summary ") {
            let f: BTreeMap<&str, &str> = rest.split(' ').filter_map(|w| w.split_once('=')).collect();
            if let Some(n) = f.get("count").filter(|_| f.contains_key("call")) {
                let key = format!("{} {} {} {}", f["call"], f["errno"], f["action"], f["cause"]);
                *counts.entry(key).or_insert(0) += n.parse::<u64>().unwrap();
            } else if let Some(n) = f.get("events") {
                total += n.parse::<u64>().unwrap();
            }
        } else if l.starts_with("{\"summary\"") {
            let s: Value = serde_json::from_str(l).unwrap();
            total += s["summary"]["events"].as_u64().unwrap();
            for c in s["summary"]["counts"].as_array().unwrap() {
                let key = format!("{} {} {} {}", c["call"], c["errno"], c["action"], c["cause"]).replace('"', "");
                *counts.entry(key).or_insert(0) += c["count"].as_u64().unwrap();
            }
        }
    }
    (counts, total)
}

/// The digest's counts as errshim's summary has them: `call errno action cause`.
fn as_summary(d: &Value) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for c in d["calls"].as_array().unwrap() {
        for (cause, n) in c["causes"].as_object().unwrap() {
            let key = format!("{} {} {} {cause}", c["call"], c["errno"], c["action"]).replace('"', "");
            *out.entry(key).or_insert(0) += n.as_u64().unwrap();
        }
    }
    out
}

/// What both formats of one run must agree on.
fn comparable(d: &Value) -> Value {
    let mut causes = d["causes"].clone();
    for c in causes.as_array_mut().unwrap() {
        c.as_object_mut().unwrap().remove("advice");
    }
    serde_json::json!({
        "events": d["events"],
        "causes": causes,
        "calls": d["calls"],
        "peers": d["peers"],
        "prefixes": d["prefixes"],
        "injected": d["injected"],
        "processes": d["processes"].as_array().unwrap().len(),
        "summaries": d["summaries"],
        "fault_seeds": d["fault_seeds"].as_array().unwrap().iter().map(|s| s["seed"].clone()).collect::<Vec<_>>(),
        "skipped": d["lines"]["skipped"],
    })
}

/// The fixture's run in each format: its log, the log's digest, and both as text for a
/// failure's message.
fn both_formats(dir: &TempDir, resets: u32, rate_limited: bool) -> Vec<(PathBuf, Value, String)> {
    ["text", "json"]
        .into_iter()
        .map(|format| {
            let log = traffic(dir, format, resets, rate_limited);
            let d = digest(&log);
            let ctx = format!(
                "{format} log:\n{}\ndigest: {d:#}",
                std::fs::read_to_string(&log).unwrap()
            );
            (log, d, ctx)
        })
        .collect()
}

/// The program's own lines in a log.
fn program_lines(log: &Path) -> u64 {
    let text = std::fs::read_to_string(log).unwrap();
    text.lines().filter(|l| l.starts_with("traffic: ")).count() as u64
}

#[test]
fn real_logs_give_the_same_digest_in_both_formats() {
    if !require_tool("python3") {
        return;
    }
    let dir = TempDir::new("explain-real");
    let mut seen = Vec::new();
    for (log, d, ctx) in both_formats(&dir, 3, false) {
        assert_eq!(d["explain_version"], 1, "{ctx}");
        // 3 resets: recv and shutdown each; ::1 and the dual-stack listener: shutdown; 2 connects
        // refused; the socketpair's send; the child's shutdown; the injected sendto.
        assert_eq!(
            d["events"],
            serde_json::json!({"total": 13, "real": 12, "injected": 1, "held_back": 0}),
            "{ctx}"
        );
        assert_eq!(d["lines"]["events"], 13, "{ctx}");
        assert_eq!(d["lines"]["faults"], 1, "the fault rules' startup line: {ctx}");
        assert_eq!(
            d["lines"]["skipped"],
            program_lines(&log),
            "the program's own lines: {ctx}"
        );
        assert_eq!(d["lines"]["truncated"], 0, "{ctx}");
        let causes = rows(&d["causes"], &["cause"]);
        assert_eq!(
            causes,
            map(&[("peer_reset", 9), ("connect_failed", 2), ("never_connected", 1)]),
            "{ctx}"
        );
        let pct: Vec<f64> = d["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["percent"].as_f64().unwrap())
            .collect();
        assert_eq!(pct, [75.0, 16.7, 8.3], "{ctx}");
        let reset = &d["causes"][0];
        assert_eq!(
            reset["sides"],
            serde_json::json!({"accepted": 8, "socketpair": 1}),
            "{ctx}"
        );
        assert_eq!(
            reset["calls"],
            serde_json::json!({"shutdown": 5, "recv": 3, "send": 1}),
            "{ctx}"
        );
        assert!(
            reset["advice"][0]
                .as_str()
                .unwrap()
                .starts_with("on connections the program accepted (clients)"),
            "{ctx}"
        );
        assert_eq!(d["causes"][1]["sides"], serde_json::json!({"connected": 2}), "{ctx}");
        assert_eq!(
            rows(&d["calls"], &["call", "errno", "action"]),
            map(&[
                ("shutdown ENOTCONN ignore", 6),
                ("recv ECONNRESET log", 3),
                ("connect ECONNREFUSED log", 2),
                ("send EPIPE log", 1),
                ("sendto ENOBUFS inject", 1),
            ]),
            "{ctx}"
        );
        // 127.0.0.1: the 3 resetting clients (2 events each), the mapped IPv6 client, the 2
        // refused ports; ::1; the socketpair; the child's socket, which has no peer.
        assert_eq!(
            rows(&d["peers"], &["peer", "family", "ports"]),
            map(&[
                ("127.0.0.1 ipv4 6", 9),
                ("::1 ipv6 1", 1),
                ("(unnamed) unix 0", 1),
                ("(unknown) unknown 0", 1),
            ]),
            "{ctx}"
        );
        assert_eq!(
            rows(&d["prefixes"], &["prefix"]),
            map(&[("127.0.0.0/24", 9), ("::/64", 1)]),
            "IPv4-mapped counts as IPv4; unix and unknown peers have no prefix: {ctx}"
        );
        assert_eq!(
            rows(&d["injected"], &["call", "errno", "fault"]),
            map(&[("sendto ENOBUFS ENOBUFS", 1)]),
            "{ctx}"
        );
        assert_eq!(d["fault_seeds"][0]["seed"], "7", "{ctx}");
        assert_eq!(
            d["processes"].as_array().unwrap().len(),
            2,
            "the program and its child: {ctx}"
        );
        assert_eq!(
            d["summaries"],
            serde_json::json!({"processes": 2, "events": 13, "dropped_lines": 0, "missing": 0}),
            "{ctx}"
        );
        // errshim's own summary in the same log counts the same, kind by kind.
        let (by_kind, total) = summaries(&log);
        assert_eq!(total, 13, "{ctx}");
        assert_eq!(as_summary(&d), by_kind, "{ctx}");
        let chart = &d["per_minute"];
        assert_eq!(chart["minutes_per_row"], 1, "{ctx}");
        let minutes = chart["rows"].as_array().unwrap();
        assert!((1..=2).contains(&minutes.len()), "a run of a second or so: {ctx}");
        let sum = |k: &str| minutes.iter().map(|r| r[k].as_u64().unwrap()).sum::<u64>();
        assert_eq!((sum("events"), sum("injected")), (12, 1), "{ctx}");
        let (first, last) = (
            d["time"]["first"].as_str().unwrap(),
            d["time"]["last"].as_str().unwrap(),
        );
        assert!(first.ends_with('Z') && first <= last, "{ctx}");

        // The text digest says the same to a person.
        let t = explain(&[log.to_str().unwrap()]).stdout;
        for want in [
            "13 events: 12 real, 1 injected by errshim's faults",
            "2 process(es): pid ",
            "By cause (real events)",
            "What it means, what to do",
            "peer_reset (9: shutdown 5, recv 3, send 1): the peer, or a middlebox",
            "- on connections the program accepted (clients): clients that went away",
            "connect_failed (2: connect 2): an outgoing connect was refused",
            "Top prefixes (/24, /64)",
            "Events per minute (UTC)",
            "+1 injected",
            "Injected by errshim's fault rules (not the network)",
            "seed 7 (pid ",
            "errshim's own summaries: 13 events in 2 process(es), 0 line(s) dropped",
        ] {
            assert!(t.contains(want), "the text digest lacks {want:?}:\n{t}");
        }
        let row = |prefix: &str| {
            t.lines()
                .find(|l| l.trim_start().starts_with(prefix))
                .map(str::split_whitespace)
        };
        let reset_row: Vec<&str> = row("peer_reset ").unwrap().collect();
        assert_eq!(reset_row[..3], ["peer_reset", "9", "75.0%"], "{t}");
        let peer_row: Vec<&str> = row("127.0.0.1 ").unwrap().collect();
        assert_eq!(peer_row, ["127.0.0.1", "ipv4", "9", "6", "port(s)"], "{t}");
        assert!(
            t.lines()
                .any(|l| l.contains(" 12 \u{2588}") && l.ends_with("+1 injected"))
                || t.lines().filter(|l| l.contains('\u{2588}')).count() == 2,
            "a bar for the minute's events: {t}"
        );
        seen.push(comparable(&d));
    }
    assert_eq!(seen[0], seen[1], "the text and the JSON log of the same run");
}

/// Under the default rate limit (10 lines per kind in 5 s) most lines of a storm are held back
/// and said as `... N more like this`: explain counts them, and its totals are errshim's own.
#[test]
fn held_back_lines_count_in_the_totals() {
    if !require_tool("python3") {
        return;
    }
    let dir = TempDir::new("explain-held");
    let mut seen = Vec::new();
    for (log, d, ctx) in both_formats(&dir, 40, true) {
        let (by_kind, total) = summaries(&log);
        assert_eq!(total, 87, "{ctx}");
        assert_eq!(d["events"]["total"], 87, "{ctx}");
        assert_eq!(d["summaries"]["events"], 87, "{ctx}");
        assert_eq!(d["summaries"]["missing"], 0, "{ctx}");
        let held = d["events"]["held_back"].as_u64().unwrap();
        assert!(held > 0 && d["lines"]["held_back_lines"].as_u64().unwrap() > 0, "{ctx}");
        assert_eq!(d["lines"]["events"].as_u64().unwrap() + held, 87, "{ctx}");
        // Each kind's held-back events take the cause its lines had: one cause a kind here.
        assert_eq!(as_summary(&d), by_kind, "{ctx}");
        assert_eq!(
            rows(&d["causes"], &["cause"]),
            map(&[("peer_reset", 83), ("connect_failed", 2), ("never_connected", 1)]),
            "{ctx}"
        );
        let chart: u64 = d["per_minute"]["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["events"].as_u64().unwrap())
            .sum();
        assert_eq!(chart, 86, "{ctx}");
        let t = explain(&[log.to_str().unwrap()]).stdout;
        assert!(
            t.contains(&format!(
                "87 events: 86 real, 1 injected by errshim's faults; {held} of them held back by the rate limit"
            )),
            "{t}"
        );
        assert!(t.contains("held back, whose peers the log does not say"), "{t}");
        seen.push((d["events"]["total"].clone(), d["causes"].clone(), d["calls"].clone()));
    }
    let strip = |c: &Value| -> Value {
        c.as_array()
            .unwrap()
            .iter()
            .map(|c| serde_json::json!([c["cause"], c["count"], c["percent"]]))
            .collect()
    };
    assert_eq!(seen[0].0, seen[1].0);
    assert_eq!(strip(&seen[0].1), strip(&seen[1].1), "causes in both formats");
    assert_eq!(
        rows(&seen[0].2, &["call", "errno", "action"]),
        rows(&seen[1].2, &["call", "errno", "action"])
    );
}

/// Standard input (`-` or no LOG), gzip'd logs, several logs at once, `--top`, and the
/// errors: a LOG that cannot be opened, a bad option.
#[test]
fn reads_stdin_gzip_and_several_logs() {
    if !require_tool("python3") || !require_tool("gzip") {
        return;
    }
    let dir = TempDir::new("explain-inputs");
    let log = traffic(&dir, "json", 3, false);
    let text = std::fs::read(&log).unwrap();
    for args in [&["--json"][..], &["--json", "-"][..]] {
        let r = wrapper().args(["explain"]).args(args).stdin(&text).run();
        assert_eq!(r.code, Some(0), "{}", r.describe());
        let d: Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(d["events"]["total"], 13, "{}", r.stdout);
        assert_eq!(d["inputs"][0]["name"], "(stdin)");
    }
    let gz = dir.path("json.log.gz");
    let out = std::fs::File::create(&gz).unwrap();
    let status = std::process::Command::new("gzip")
        .args(["-c"])
        .arg(&log)
        .stdout(out)
        .status()
        .unwrap();
    assert!(status.success());
    let d = digest(&gz);
    assert_eq!(d["events"]["total"], 13, "{d:#}");
    assert!(d["warnings"].as_array().unwrap().is_empty(), "{d:#}");
    // A gzip'd log cut short: what came before the cut, and a warning.
    let all = std::fs::read(&gz).unwrap();
    let cut = dir.path("cut.log.gz");
    std::fs::write(&cut, &all[..all.len() - 20]).unwrap();
    let d = digest(&cut);
    assert!(d["events"]["total"].as_u64().unwrap() <= 13, "{d:#}");
    assert!(
        d["warnings"][0].as_str().unwrap().contains("the input ends early"),
        "{d:#}"
    );
    // Two logs add up; --top cuts each list.
    let r = explain(&["--json", "--top", "1", log.to_str().unwrap(), gz.to_str().unwrap()]);
    let d: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(d["events"]["total"], 26, "{}", r.stdout);
    assert_eq!(d["inputs"].as_array().unwrap().len(), 2);
    assert_eq!(d["peers"].as_array().unwrap().len(), 1);
    assert_eq!(d["peers"][0]["count"], 18, "{}", r.stdout);
    assert_eq!(d["calls"].as_array().unwrap().len(), 1);

    let missing = wrapper().args(["explain", "/nonexistent/errshim.log"]).run();
    assert_eq!(missing.code, Some(2), "{}", missing.describe());
    assert!(
        missing.stderr.contains("cannot open /nonexistent/errshim.log"),
        "{}",
        missing.stderr
    );
    let bad = wrapper().args(["explain", "--top", "0", log.to_str().unwrap()]).run();
    assert_eq!(bad.code, Some(2), "{}", bad.describe());
    let help = explain(&["--help"]).stdout;
    for key in [
        "--json",
        "--top N",
        "--causes",
        "explain_version",
        "per_minute",
        "held_back",
    ] {
        assert!(help.contains(key), "explain --help lacks {key}: {help}");
    }
}

/// Without python3 the wrapper says so in one line and exits 2.
#[test]
fn without_python3_one_clear_line() {
    let dir = TempDir::new("explain-nopython");
    let bin = dir.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // What the wrapper needs of PATH, and no python3.
    for tool in ["bash", "dirname"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        let path = String::from_utf8(found.stdout).unwrap();
        std::os::unix::fs::symlink(path.trim(), bin.join(tool)).unwrap();
    }
    let r = wrapper()
        .args(["explain", "/dev/null"])
        .env("PATH", bin.to_str().unwrap())
        .run();
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert_eq!(
        r.stderr,
        "errshim: explain needs python3 (3.5 or later), which is not installed (Debian, Ubuntu: apt-get install python3)\n"
    );
}

/// README's cause table and explain's advice table name the same causes.
#[test]
fn every_cause_of_the_readme_has_advice_and_no_other() {
    if !require_tool("python3") {
        return;
    }
    let readme = std::fs::read_to_string(manifest_dir().join("README.md")).unwrap();
    let table = &readme[readme.find("### Causes").expect("README has a Causes section")..];
    let table = &table[..table[4..].find("\n#").map_or(table.len(), |i| i + 4)];
    let documented: Vec<&str> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    assert!(documented.len() >= 22, "README's cause table: {documented:?}");
    let r = explain(&["--causes", "--json"]);
    let all: Value = serde_json::from_str(&r.stdout).unwrap();
    let known: Vec<String> = all["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            for k in ["meaning", "advice"] {
                assert!(c[k].as_str().is_some_and(|s| s.len() > 20), "{c}: {k}");
            }
            c["cause"].as_str().unwrap().to_string()
        })
        .collect();
    for code in &documented {
        assert!(
            known.iter().any(|k| k == code),
            "explain has no advice for README's cause `{code}`"
        );
    }
    for code in &known {
        assert!(
            documented.contains(&code.as_str()),
            "explain advises on `{code}`, which README's cause table does not have"
        );
    }
    let t = explain(&["--causes"]).stdout;
    assert!(
        t.contains("too_many_files: EMFILE or ENFILE") && t.contains("LimitNOFILE="),
        "{t}"
    );
}

/// A log of lines written by hand in errshim's formats, as `errshim explain` meets them in logs
/// users send: `n` events of `errshim shutdown` text lines with `peer`, `minute` apart.
fn text_event(ts: &str, pid: u32, call: &str, errno: &str, peer: &str, cause: &str) -> String {
    format!(
        "errshim {ts} pid={pid} tid={pid} comm=nginx {call}(fd=7, SHUT_WR) = -1 {errno} -> ignored, returned 0 | tcp4 local=10.0.0.1:443 peer={peer} rule=1 | state=CLOSE pending_error=yes age_ms=5 bytes_received=18 bytes_sent=64 history=accepted | cause={cause}: the text"
    )
}

#[test]
fn nothing_and_garbage_are_no_events() {
    if !require_tool("python3") {
        return;
    }
    let dir = TempDir::new("explain-garbage");
    let d = digest_of(&dir, "empty.log", "");
    assert_eq!(d["events"]["total"], 0, "{d:#}");
    assert_eq!(d["lines"]["read"], 0, "{d:#}");
    assert!(d["per_minute"]["rows"].as_array().unwrap().is_empty());
    assert_eq!(d["time"]["first"], Value::Null);
    let p = dir.path("empty.log");
    let t = explain(&[p.to_str().unwrap()]).stdout;
    assert!(t.contains("No errshim events in the input"), "{t}");

    let garbage = dir.path("garbage.log");
    let mut bytes = b"a line of the program's\n\n{\"not\":\"errshim\"}\n[1,2,3]\n{\"ts\":\"x\"\n".to_vec();
    bytes.extend_from_slice(b"\x00\xff\xfe\x1b[2J binary\r\nerrshim 2026-99-99 not a line\nerrshim summary\n");
    bytes.extend_from_slice(b"errshim 2026-11-21T10:00:00.000001Z pid=1 tid=1 comm=x something new\n");
    bytes.extend_from_slice(b"errshim: warn: \x1b[2J\x1b]0;forged\x07 title\n");
    std::fs::write(&garbage, &bytes).unwrap();
    let d = digest(&garbage);
    assert_eq!(d["events"]["total"], 0, "{d:#}");
    assert_eq!(d["lines"]["read"], 10, "{d:#}");
    assert_eq!(d["lines"]["skipped"], 9, "{d:#}");
    assert_eq!(d["lines"]["diagnostics"], 1, "{d:#}");
    let t = explain(&[garbage.to_str().unwrap()]).stdout;
    assert!(
        !t.contains('\u{1b}') && !t.contains('\u{7}'),
        "nothing of the input reaches the terminal raw: {t}"
    );
    assert!(t.contains("1x warn: \\x1b[2J\\x1b]0;forged\\x07 title"), "{t}");

    // A line of the program's nested past any parser's recursion limit is skipped, not fatal;
    // text lines name entry points, which count under the call JSON names.
    let mut deep = format!("{{\"x\":{}{}}}\n", "[".repeat(100_000), "]".repeat(100_000));
    for entry in ["sendfile64", "getsockopt"] {
        deep.push_str(&text_event(
            "2026-11-21T10:00:00.000001Z",
            1,
            entry,
            "EPIPE",
            "10.0.0.5:1",
            "peer_reset",
        ));
        deep.push('\n');
    }
    let d = digest_of(&dir, "deep.log", &deep);
    assert_eq!(d["events"]["total"], 2, "{d:#}");
    assert_eq!(d["lines"]["skipped"], 1, "{d:#}");
    let calls: Vec<&str> = d["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["call"].as_str().unwrap())
        .collect();
    assert!(calls.contains(&"sendfile") && calls.contains(&"connect"), "{calls:?}");
}

#[test]
fn cut_lines_count_with_what_they_say() {
    if !require_tool("python3") {
        return;
    }
    let dir = TempDir::new("explain-cut");
    let full = text_event(
        "2026-11-21T10:00:00.000001Z",
        9,
        "shutdown",
        "ENOTCONN",
        "192.0.2.1:5000",
        "peer_reset",
    );
    let json = r#"{"ts":"2026-11-21T10:00:01.000000Z","pid":9,"tid":9,"comm":"nginx","call":"send","fd":3,"len":10,"ret":-1,"errno":"EPIPE","action":"log","returned":-1,"kind":"tcp4","local":"10.0.0.1:443","peer":"192.0.2.2:5001","state":"CLOSE","history":["accepted"],"cause":"peer_reset","cause_text":"the client aborted"#;
    // A text line cut inside its cause (errshim's buffer marks a cut with `...`), a JSON line
    // cut inside its cause text, and a JSON line cut before its call, which is no event.
    let cut_text = format!("{}...", &full[..full.find("cause=").unwrap() + 9]);
    let log = format!("{full}\n{cut_text}\n{json}\n{}\n", &json[..60]);
    let d = digest_of(&dir, "cut.log", &log);
    assert_eq!(d["events"]["total"], 3, "{d:#}");
    assert_eq!(d["lines"]["truncated"], 2, "{d:#}");
    assert_eq!(d["lines"]["skipped"], 1, "{d:#}");
    assert_eq!(
        rows(&d["causes"], &["cause"]),
        map(&[("peer_reset", 2), ("null", 1)]),
        "a cause cut in its code is not said: {d:#}"
    );
    assert_eq!(
        rows(&d["calls"], &["call", "errno", "action"]),
        map(&[("shutdown ENOTCONN ignore", 2), ("send EPIPE log", 1)]),
        "{d:#}"
    );
    assert_eq!(rows(&d["prefixes"], &["prefix"]), map(&[("192.0.2.0/24", 3)]), "{d:#}");
}

#[test]
fn huge_held_back_counts_ipv6_and_unix_peers() {
    if !require_tool("python3") {
        return;
    }
    let dir = TempDir::new("explain-peers");
    let ts = "2026-11-21T10:00:00.000001Z";
    let mut log = String::new();
    for peer in [
        "[2001:db8:1:2::5]:51000",
        "[2001:db8:1:2:ffff::9]:51001",
        "[2001:db8:1:3::5]:51002",
        "[::ffff:192.0.2.7]:80",
        "[fe80::1%eth0]:80",
        "192.0.2.9:81",
        "/run/app.sock",
        "@abstract\\x20name",
        "(unnamed)",
        "?",
    ] {
        log += &text_event(ts, 1, "shutdown", "ENOTCONN", peer, "peer_reset");
        log.push('\n');
    }
    log += "errshim 2026-11-21T10:00:04.000000Z pid=1 tid=1 comm=nginx ... 18446744073709551615 more like this in the last 5 s: shutdown ENOTCONN rule=1\n";
    log += r#"{"ts":"2026-11-21T10:00:05.000000Z","pid":1,"tid":1,"comm":"nginx","held_back":1000000000000000000000,"seconds":5,"like_call":"shutdown","like_errno":"ENOTCONN","like_rule":1}"#;
    log.push('\n');
    let d = digest_of(&dir, "peers.log", &log);
    let exact = digest_text(&dir.path("peers.log"));
    let held = 18446744073709551615u128 + 1000000000000000000000u128;
    assert!(exact.contains(&format!("\"total\": {},", held + 10)), "{exact}");
    assert!(exact.contains(&format!("\"held_back\": {}\n", held)), "{exact}");
    assert_eq!(d["causes"][0]["percent"], 100.0, "{d:#}");
    assert_eq!(
        rows(&d["peers"], &["peer", "family"]),
        map(&[
            ("2001:db8:1:2::5 ipv6", 1),
            ("2001:db8:1:2:ffff::9 ipv6", 1),
            ("2001:db8:1:3::5 ipv6", 1),
            ("192.0.2.7 ipv4", 1),
            ("fe80::1 ipv6", 1),
            ("192.0.2.9 ipv4", 1),
            ("/run/app.sock unix", 1),
            ("@abstract name unix", 1),
            ("(unnamed) unix", 1),
            ("(unknown) unknown", 1),
        ]),
        "{d:#}"
    );
    assert_eq!(
        rows(&d["prefixes"], &["prefix"]),
        map(&[
            ("2001:db8:1:2::/64", 2),
            ("2001:db8:1:3::/64", 1),
            ("192.0.2.0/24", 2),
            ("fe80::/64", 1),
        ]),
        "{d:#}"
    );
    let t = explain(&[dir.path("peers.log").to_str().unwrap()]).stdout;
    assert!(t.contains("1,018,446,744,073,709,551,625 events"), "{t}");
    let rows_with_bars = t.lines().filter(|l| l.starts_with("  2026-11-21 10:00 ")).count();
    assert_eq!(rows_with_bars, 1, "{t}");
}

/// Six hours of events, and a day and more: one row for several minutes, at most 30 rows,
/// every event in one of them.
#[test]
fn long_spans_are_charted_in_wider_rows() {
    if !require_tool("python3") {
        return;
    }
    let dir = TempDir::new("explain-chart");
    for (hours, per_row, unit) in [
        (6u32, 15u64, "15 minutes"),
        (50, 120, "2 hours"),
        (24 * 400, 14 * 1440, "14 days"),
    ] {
        let mut log = String::new();
        let mut n = 0;
        let start = 1_795_255_200u64; // 2026-11-21T10:00:00Z
        let mut t = start;
        while t < start + u64::from(hours) * 3600 {
            let ts = timestamp(t);
            log += &text_event(&ts, 2, "shutdown", "ENOTCONN", "192.0.2.1:1", "peer_reset");
            log.push('\n');
            n += 1;
            t += if hours > 100 { 86_400 } else { 7 * 60 };
        }
        let d = digest_of(&dir, "hours.log", &log);
        let chart = &d["per_minute"];
        let rows = chart["rows"].as_array().unwrap();
        assert_eq!(chart["minutes_per_row"], per_row, "{hours} h: {chart}");
        assert!(rows.len() <= 30 && rows.len() >= 20, "{hours} h: {} rows", rows.len());
        let sum: u64 = rows.iter().map(|r| r["events"].as_u64().unwrap()).sum();
        assert_eq!(sum, n, "{hours} h");
        let t = explain(&["--ascii", dir.path("hours.log").to_str().unwrap()]).stdout;
        assert!(t.contains(&format!("Events per {unit} (UTC)")), "{t}");
        assert!(t.lines().any(|l| l.ends_with('#')), "{t}");
    }
}

/// `2026-11-21T10:00:00.000001Z` for seconds since 1970 (UTC), as errshim writes times.
fn timestamp(secs: u64) -> String {
    let days = secs / 86_400;
    let (h, m, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.000001Z")
}

/// Lines behind syslog's and journald's prefixes, inside journalctl's and docker's JSON,
/// fields and causes this version does not know, errshim's diagnostics, and a summary that
/// counted more events than the log has.
#[test]
fn prefixes_wrappers_new_fields_and_summaries() {
    if !require_tool("python3") {
        return;
    }
    let dir = TempDir::new("explain-wrapped");
    let ts = "2026-11-21T10:00:00.000001Z";
    let plain = text_event(ts, 3, "shutdown", "ENOTCONN", "198.51.100.1:1", "peer_reset");
    let timeout = r#"{"ts":"2026-11-21T10:00:01.000000Z","pid":3,"tid":3,"comm":"nginx","call":"read","fd":4,"len":10,"ret":-1,"errno":"ETIMEDOUT","action":"log","returned":-1,"kind":"tcp4","local":"10.0.0.1:1","peer":"198.51.100.2:5432","retransmits":15,"probes":0,"backoff":7,"total_retrans":20,"bytes_retrans":3000,"last_data_sent_ms":900000,"last_data_recv_ms":5,"last_ack_recv_ms":900000,"rtt_us":2000,"user_timeout_ms":0,"first_errors":["ETIMEDOUT"],"history":["connected"],"cause":"timeout_retransmit","cause_text":"x","rule":2}"#;
    let keepalive = text_event(ts, 3, "recv", "ETIMEDOUT", "198.51.100.3:1", "timeout_keepalive").replace(
        "age_ms=5",
        "age_ms=5 retransmits=0 probes=9 rtt_us=1200 last_data_recv_ms=7300000",
    );
    let lines = [
        format!("<13>errshim[3]: {plain}"),
        format!("Nov 21 10:00:00 host nginx[3]: {timeout}"),
        format!("2026-11-21T10:00:00.5+00:00 host errshim[3]: {keepalive}"),
        serde_json::json!({"MESSAGE": plain, "_PID": "3", "__REALTIME_TIMESTAMP": "1"}).to_string(),
        serde_json::json!({"log": format!("{timeout}\n"), "stream": "stderr"}).to_string(),
        text_event(ts, 3, "shutdown", "ENOTCONN", "198.51.100.4:1", "a_cause_to_come"),
        "errshim: config error: unknown errno 'ENOTCON' in rule 1 of ERRSHIM_RULES".to_string(),
        "errshim: warn: cannot open the ERRSHIM_LOG file /x".to_string(),
        "errshim: info: loaded into pid 3".to_string(),
        "errshim summary pid=3 comm=nginx events=9 dropped_lines=2".to_string(),
        "errshim summary count=9 call=shutdown errno=ENOTCONN action=ignore cause=peer_reset".to_string(),
    ];
    let d = digest_of(&dir, "wrapped.log", &(lines.join("\n") + "\n"));
    assert_eq!(d["events"]["total"], 6, "{d:#}");
    assert_eq!(d["lines"]["skipped"], 0, "{d:#}");
    assert_eq!(d["lines"]["diagnostics"], 3, "{d:#}");
    assert_eq!(d["lines"]["summaries"], 2, "{d:#}");
    assert_eq!(
        rows(&d["causes"], &["cause"]),
        map(&[
            ("peer_reset", 2),
            ("timeout_retransmit", 2),
            ("timeout_keepalive", 1),
            ("a_cause_to_come", 1)
        ]),
        "{d:#}"
    );
    let advice = |code: &str| -> String {
        let c = d["causes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["cause"] == code)
            .unwrap();
        c["advice"].to_string() + c["meaning"].as_str().unwrap_or("")
    };
    assert!(advice("timeout_keepalive").contains("TCP_KEEPIDLE"), "{d:#}");
    assert!(advice("timeout_retransmit").contains("TCP_USER_TIMEOUT"), "{d:#}");
    assert!(advice("a_cause_to_come").contains("does not know"), "{d:#}");
    assert_eq!(
        d["summaries"],
        serde_json::json!({"processes": 1, "events": 9, "dropped_lines": 2, "missing": 3}),
        "{d:#}"
    );
    let diags = rows(&d["diagnostics"], &["level", "text"]);
    assert_eq!(
        diags,
        map(&[
            ("config error unknown errno 'ENOTCON' in rule 1 of ERRSHIM_RULES", 1),
            ("warn cannot open the ERRSHIM_LOG file /x", 1)
        ]),
        "info lines are counted, not listed: {d:#}"
    );
    let t = explain(&[dir.path("wrapped.log").to_str().unwrap()]).stdout;
    assert!(t.contains("the log lacks 3 of those events"), "{t}");
    assert!(t.contains("1x config error: unknown errno 'ENOTCON'"), "{t}");
}

/// The script is Python 3.5 (Debian 9's): Python's own parser, told to accept 3.5's grammar
/// only, finds no f-string, annotation or walrus in it. Where an older interpreter is installed
/// (3.5 or 3.6 on PATH, or pyenv's), it also runs there and gives the same digest.
#[test]
fn the_script_is_python_3_5() {
    if !require_tool("python3") {
        return;
    }
    let script = manifest_dir().join("scripts/errshim-explain");
    let r = Cmd::new("python3")
        .args([
            "-c",
            "import ast, sys\nassert sys.version_info >= (3, 8), 'feature_version needs Python 3.8'\n\
             ast.parse(open(sys.argv[1]).read(), filename=sys.argv[1], feature_version=(3, 5))",
        ])
        .arg_path(&script)
        .run();
    assert_eq!(r.code, Some(0), "not Python 3.5's grammar:\n{}", r.describe());

    let dir = TempDir::new("explain-old-python");
    let log = format!(
        "{}\n{}\n",
        text_event("2026-11-21T10:00:00.000001Z", 4, "shutdown", "ENOTCONN", "[2001:db8::1]:1", "peer_reset"),
        "errshim 2026-11-21T10:09:00.000000Z pid=4 tid=4 comm=nginx ... 5 more like this in the last 5 s: shutdown ENOTCONN rule=1"
    );
    let p = dir.path("old.log");
    std::fs::write(&p, log).unwrap();
    let now = Cmd::new("python3")
        .arg_path(&script)
        .args(["--json"])
        .arg_path(&p)
        .run();
    now.assert_ok();
    let on_path = ["python3.5", "python3.6"].into_iter().filter_map(|name| {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .ok()?;
        Some(PathBuf::from(String::from_utf8(found.stdout).ok()?.trim()))
    });
    let pyenv = std::fs::read_dir("/root/.pyenv/versions")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            ["3.5", "3.6"]
                .iter()
                .any(|v| e.file_name().to_string_lossy().starts_with(v))
        })
        .map(|e| e.path().join("bin/python3"));
    let mut old: Vec<PathBuf> = on_path.chain(pyenv).filter(|p| p.is_absolute() && p.exists()).collect();
    // A pyenv shim on PATH runs only the version pyenv has selected.
    old.retain(|py| Cmd::new(py).args(["-c", "pass"]).run().code == Some(0));
    if old.is_empty() {
        eprintln!("note: no Python 3.5 or 3.6 here; the grammar check above stands for them");
    }
    for py in old {
        let r = Cmd::new(&py)
            .arg_path(&script)
            .args(["--json"])
            .arg_path(&p)
            .env("LC_ALL", "C")
            .run();
        assert_eq!(r.code, Some(0), "{}: {}", py.display(), r.describe());
        assert_eq!(r.stdout, now.stdout, "{} gives another digest", py.display());
        let t = Cmd::new(&py).arg_path(&script).arg_path(&p).env("LC_ALL", "C").run();
        assert!(t.stdout.contains("6 events"), "{}: {}", py.display(), t.describe());
    }
}

/// Held-back injections count with the injected events, under their fault rule's fault; a
/// held-back kind no line of which is in the log counts, its cause not said.
#[test]
fn held_back_injections_and_kinds_without_lines() {
    if !require_tool("python3") {
        return;
    }
    let dir = TempDir::new("explain-held-faults");
    let log = [
        "errshim 2026-11-21T10:00:00.000001Z pid=5 tid=5 comm=srv send(fd=4, len=10) = -1 ECONNRESET (INJECTED) -> inject ECONNRESET, returned -1 ECONNRESET | tcp4 local=127.0.0.1:1 peer=127.0.0.1:2 fault_rule=1 k=1 | history=accepted | cause=injected: errshim injected this",
        "errshim 2026-11-21T10:00:05.000001Z pid=5 tid=5 comm=srv ... 5 more like this in the last 5 s: send ECONNRESET fault_rule=1",
        r#"{"ts":"2026-11-21T10:00:06.000000Z","pid":5,"tid":5,"comm":"srv","held_back":4,"seconds":5,"like_call":"read","like_errno":"EIO","like_rule":3}"#,
    ]
    .join("\n");
    let d = digest_of(&dir, "faults.log", &log);
    assert_eq!(
        d["events"],
        serde_json::json!({"total": 10, "real": 4, "injected": 6, "held_back": 9}),
        "{d:#}"
    );
    assert_eq!(
        rows(&d["injected"], &["call", "errno", "fault"]),
        map(&[("send ECONNRESET ECONNRESET", 6)]),
        "{d:#}"
    );
    assert_eq!(rows(&d["causes"], &["cause"]), map(&[("null", 4)]), "{d:#}");
    assert_eq!(
        rows(&d["calls"], &["call", "errno", "action"]),
        map(&[("send ECONNRESET inject", 6), ("read EIO ?", 4)]),
        "{d:#}"
    );
    assert_eq!(
        (d["process_count"].clone(), d["processes"][0]["events"].clone()),
        (1.into(), 10.into())
    );
    let t = explain(&[dir.path("faults.log").to_str().unwrap()]).stdout;
    assert!(t.contains("send  ECONNRESET  fault ECONNRESET  6"), "{t}");
}
