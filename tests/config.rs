//! Configuration from the environment: every error case gives one clear line on stderr naming
//! the variable, the rule and the token (with a suggestion where a valid name is close), the
//! program runs on with that variable's default, and only strict mode stops it.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;

fn scenarios() -> std::path::PathBuf {
    program("scenarios")
}

fn run_with(vars: &[(&str, &str)]) -> Run {
    let mut c = Cmd::new(scenarios()).args(["never_connected"]).shim();
    for (k, v) in vars {
        c = c.env(k, v);
    }
    c.run()
}

/// Lines errshim printed about its configuration.
fn config_lines(r: &Run) -> Vec<&str> {
    r.stderr
        .lines()
        .filter(|l| l.starts_with("errshim: config error"))
        .collect()
}

/// Environment variables for one run.
type Vars = &'static [(&'static str, &'static str)];

/// (variables, substrings the single error line must contain).
const BAD: &[(Vars, &[&str])] = &[
    (
        &[("ERRSHIM_RULES", "close,shutdown:ENOTCON:ignore")],
        &[
            "unknown errno 'ENOTCON' in rule 1 of ERRSHIM_RULES",
            "did you mean ENOTCONN?",
            "using the default rules",
        ],
    ),
    (
        &[("ERRSHIM_RULES", "read:EPIPE:log;shutdwon:ENOTCONN:ignore")],
        &[
            "unknown call 'shutdwon' in rule 2 of ERRSHIM_RULES",
            "did you mean shutdown?",
        ],
    ),
    (
        &[("ERRSHIM_RULES", "shutdown:ENOTCONN:ingore")],
        &["unknown action 'ingore' in rule 1", "did you mean ignore?"],
    ),
    (
        &[("ERRSHIM_RULES", "shutdown:ENOTCONN:mpa=EPIPE")],
        &["unknown action 'mpa=EPIPE'", "did you mean map=ERRNO?"],
    ),
    (
        &[("ERRSHIM_RULES", "read:ENOTCONN:map=ECONNRESTE")],
        &["unknown errno 'ECONNRESTE'", "did you mean ECONNRESET?"],
    ),
    (
        &[("ERRSHIM_RULES", "shutdown:ENOTCONN:ignore:fd=tpc")],
        &["unknown fd kind 'tpc'", "did you mean tcp?"],
    ),
    (
        &[("ERRSHIM_RULES", "shutdown:ENOTCONN:ignore:df=tcp")],
        &["unknown option 'df=tcp'", "did you mean fd=sock|tcp|udp|unix|any?"],
    ),
    (
        &[("ERRSHIM_RULES", "shutdown:ENOTCONN")],
        &[
            "incomplete rule 'shutdown:ENOTCONN' in rule 1",
            "a rule is CALLS:ERRNOS:ACTION[:OPTION...]",
        ],
    ),
    (
        &[("ERRSHIM_RULES", "write,send:EPIPE:ignore")],
        &["'write' in rule 1 of ERRSHIM_RULES", "unsent bytes were written"],
    ),
    (&[("ERRSHIM_RULES", "read:0:log")], &["unknown errno '0'"]),
    (
        &[("ERRSHIM_LOG", "stdrr")],
        &[
            "'stdrr' in ERRSHIM_LOG",
            "did you mean stderr?",
            "using the default 'stderr'",
        ],
    ),
    (
        &[("ERRSHIM_LOG_LEVEL", "inof")],
        &["unknown level 'inof' in ERRSHIM_LOG_LEVEL", "did you mean info?"],
    ),
    (
        &[("ERRSHIM_STRICT", "maybe")],
        &["expected 1 or 0, got 'maybe' in ERRSHIM_STRICT"],
    ),
    (
        &[("ERRSHIM_RULSE", "*:*:log")],
        &["unknown variable 'ERRSHIM_RULSE'", "did you mean ERRSHIM_RULES?"],
    ),
];

#[test]
fn each_error_is_one_line_and_the_program_runs_on_with_the_default() {
    for (vars, wanted) in BAD {
        let r = run_with(vars);
        assert_eq!(r.code, Some(0), "{vars:?}: the program must run on:\n{}", r.describe());
        let lines = config_lines(&r);
        assert_eq!(lines.len(), 1, "{vars:?}: exactly one line:\n{}", r.stderr);
        for w in *wanted {
            assert!(lines[0].contains(w), "{vars:?}: '{w}' missing in: {}", lines[0]);
        }
        // The faulty variable fell back to its default, so the default rules still act.
        assert_eq!(
            result_of(&r, "never_connected shutdown"),
            (0, libc::EILSEQ),
            "{vars:?}\n{}",
            r.describe()
        );
        assert_eq!(
            r.events().len(),
            1,
            "{vars:?}: the default rule logs the shutdown:\n{}",
            r.stderr
        );
    }
}

#[test]
fn strict_mode_stops_at_startup_with_status_2() {
    let r = run_with(&[("ERRSHIM_STRICT", "1"), ("ERRSHIM_RULES", "shutdown:ENOTCON:ignore")]);
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert!(r.stdout.is_empty(), "main must not have run: {}", r.stdout);
    assert_eq!(config_lines(&r).len(), 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("ERRSHIM_STRICT=1 and 1 configuration error(s): stopping with exit status 2"),
        "{}",
        r.stderr
    );

    let ok = run_with(&[("ERRSHIM_STRICT", "1"), ("ERRSHIM_RULES", "shutdown:ENOTCONN:ignore")]);
    assert_eq!(
        ok.code,
        Some(0),
        "a valid configuration runs in strict mode:\n{}",
        ok.describe()
    );
}

#[test]
fn disable_is_pure_pass_through_and_parses_nothing() {
    let bare = Cmd::new(scenarios()).args(["never_connected"]).run();
    let r = run_with(&[
        ("ERRSHIM_DISABLE", "1"),
        ("ERRSHIM_RULES", "this is not a rule"),
        ("ERRSHIM_STRICT", "1"),
    ]);
    assert_eq!(r.code, Some(0));
    assert_eq!(r.stdout, bare.stdout);
    assert!(r.stderr.is_empty(), "{}", r.stderr);
}

#[test]
fn log_off_still_applies_rules() {
    let r = run_with(&[("ERRSHIM_LOG", "off")]);
    assert_eq!(result_of(&r, "never_connected shutdown"), (0, libc::EILSEQ));
    assert!(r.stderr.is_empty(), "{}", r.stderr);
}

#[test]
fn info_level_prints_the_effective_configuration_once() {
    let r = run_with(&[
        ("ERRSHIM_LOG_LEVEL", "info"),
        ("ERRSHIM_RULES", "read:ENOTCONN:map=ECONNRESET:fd=tcp;shutdown:*:log"),
    ]);
    let info: Vec<&str> = r.stderr.lines().filter(|l| l.starts_with("errshim: info:")).collect();
    assert!(info[0].contains("loaded into pid"), "{info:?}");
    assert!(
        info.contains(
            &"errshim: info: rule 1: read failing with ENOTCONN on fd=tcp: fail with ECONNRESET instead, log an event"
        ),
        "{info:?}"
    );
    assert!(
        info.contains(
            &"errshim: info: rule 2: shutdown failing with any errno on fd=sock: leave the result, log an event"
        ),
        "{info:?}"
    );
    assert!(info.contains(&"errshim: info: log: stderr"), "{info:?}");
    assert_eq!(info.iter().filter(|l| l.contains("rule 1:")).count(), 1);
    // Default level (warn) prints nothing of the sort.
    assert!(!run_with(&[]).stderr.contains("errshim: info"));
}

#[test]
fn log_file_per_pid_0600_append_only() {
    let dir = TempDir::new("logfile");
    let template = dir.path("events-%p.log");
    let r = run_with(&[("ERRSHIM_LOG", template.to_str().unwrap())]);
    r.assert_ok();
    assert!(r.stderr.is_empty(), "events go to the file, not stderr: {}", r.stderr);
    let files: Vec<_> = std::fs::read_dir(&dir.0).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
    let pid: u32 = name
        .trim_start_matches("events-")
        .trim_end_matches(".log")
        .parse()
        .expect("pid in the name");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let ev = events(&text);
    assert_eq!(ev.len(), 1, "{text}");
    assert!(ev[0].contains(&format!(" pid={pid} ")), "{}", ev[0]);
    let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // Appends: a second run adds to an existing file instead of truncating it.
    let fixed = dir.path("events.log");
    run_with(&[("ERRSHIM_LOG", fixed.to_str().unwrap())]).assert_ok();
    run_with(&[("ERRSHIM_LOG", fixed.to_str().unwrap())]).assert_ok();
    assert_eq!(events(&std::fs::read_to_string(&fixed).unwrap()).len(), 2);
}

#[test]
fn log_file_is_never_opened_through_a_symlink() {
    let dir = TempDir::new("symlink");
    let victim = dir.path("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let link = dir.path("events.log");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let r = run_with(&[("ERRSHIM_LOG", link.to_str().unwrap())]);
    assert_eq!(r.code, Some(0));
    assert_eq!(
        result_of(&r, "never_connected shutdown"),
        (0, libc::EILSEQ),
        "rules still act"
    );
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "precious\n",
        "the symlink target is untouched"
    );
    let warn: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("errshim: warn: cannot open the ERRSHIM_LOG file"))
        .collect();
    assert_eq!(warn.len(), 1, "one warning, naming the cause:\n{}", r.stderr);
    assert!(warn[0].contains("ELOOP"), "{}", warn[0]);
}
