//! scripts/errshim: the wrapper users run, and its demo.

mod common;
use common::*;

fn wrapper() -> Cmd {
    Cmd::new(manifest_dir().join("scripts/errshim"))
}

fn lib_arg() -> String {
    lib().display().to_string()
}

#[test]
fn help_documents_every_option() {
    let r = wrapper().args(["--help"]).run();
    r.assert_ok();
    for opt in [
        "--rules SPEC",
        "--log DEST",
        "--strict",
        "--lib PATH",
        "--check",
        "--call DESC",
        "demo",
        "explain [--json] [--top N]",
        "replay [--control FILE] [--all]",
        "ERRSHIM_LOG_LEVEL",
    ] {
        assert!(r.stdout.contains(opt), "--help must mention {opt}");
    }
}

#[test]
fn runs_a_command_with_rules_and_log_options() {
    let dir = TempDir::new("wrapper");
    let log = dir.path("e.log");
    let scen = program("scenarios");
    let r = wrapper()
        .args([
            "--lib",
            &lib_arg(),
            "--rules",
            "shutdown:ENOTCONN:log",
            "--log",
            log.to_str().unwrap(),
            "--",
        ])
        .arg_path(&scen)
        .args(["never_connected"])
        .run();
    r.assert_ok();
    assert_eq!(
        result_of(&r, "never_connected shutdown"),
        (-1, libc::ENOTCONN),
        "log leaves the result"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let ev = events(&text);
    assert_eq!(ev.len(), 1, "{text}");
    assert!(ev[0].contains("-> logged, returned -1 ENOTCONN"), "{}", ev[0]);
}

#[test]
fn keeps_an_existing_ld_preload_behind_errshim() {
    let r = wrapper()
        .args(["--lib", &lib_arg(), "sh", "-c", "echo \"$LD_PRELOAD\""])
        .env("LD_PRELOAD", "/nonexistent/other.so")
        .run();
    assert_eq!(r.stdout.trim(), format!("{}:/nonexistent/other.so", lib_arg()));
}

#[test]
fn strict_option_stops_on_a_bad_rule() {
    let scen = program("scenarios");
    let r = wrapper()
        .args(["--lib", &lib_arg(), "--strict", "--rules", "shutdown:ENOTCON:ignore"])
        .arg_path(&scen)
        .args(["never_connected"])
        .run();
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert!(r.stderr.contains("did you mean ENOTCONN?"), "{}", r.stderr);
}

#[test]
fn check_explains_a_valid_configuration() {
    let r = wrapper()
        .args([
            "--lib",
            &lib_arg(),
            "--check",
            "--rules",
            "read:ENOTCONN:map=ECONNRESET;close,shutdown:ENOTCONN:ignore",
        ])
        .run();
    assert_eq!(r.code, Some(0), "{}", r.describe());
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains("rule 1: read failing with ENOTCONN on fd=sock: fail with ECONNRESET instead, log an event"),
        "{all}"
    );
    assert!(
        all.contains("rule 2: shutdown,close failing with ENOTCONN on fd=sock: report success (0) and log an event"),
        "{all}"
    );
    assert!(all.contains("check: configuration OK"), "{all}");
}

#[test]
fn check_explains_fault_rules_and_fault_options_reach_the_program() {
    let r = wrapper()
        .args([
            "--lib",
            &lib_arg(),
            "--check",
            "--faults",
            "send:ECONNRESET:nth=3;read:short=10:p=0.5",
            "--seed",
            "7",
        ])
        .run();
    assert_eq!(r.code, Some(0), "{}", r.describe());
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains(
            "fault rule 1: send on fd=sock: fail with ECONNRESET without performing it, where Linux could (a TCP connection, aborted for real first; UDP for ICMP errors; not unix sockets); only matching call number 3"
        ),
        "{all}"
    );
    assert!(
        all.contains("fault rule 2: read on fd=sock: transfer at most 10 bytes, where Linux could (TCP: reads while the peer can still send, non-blocking writes; the rest then wakes the program); with probability 0.5000"),
        "{all}"
    );
    assert!(all.contains("seed: 7"), "{all}");

    let scen = program("scenarios");
    let r = wrapper()
        .args([
            "--lib",
            &lib_arg(),
            "--faults",
            "shutdown:EIO:nth=1:unfaithful",
            "--seed",
            "3",
        ])
        .arg_path(&scen)
        .args(["never_connected"])
        .run();
    assert_eq!(
        result_of(&r, "never_connected shutdown"),
        (-1, libc::EIO),
        "{}",
        r.describe()
    );
    assert!(
        r.stderr
            .contains("faults: 1 rule(s), seed=3 (ERRSHIM_SEED=3 replays this program and every process it forks)"),
        "{}",
        r.stderr
    );
}

/// A configuration that makes errshim act in named programs only (the README's recipe for a
/// service started through a script) is valid, also though `--check` probes with another
/// program; a mistake in it is still found.
#[test]
fn check_accepts_a_configuration_limited_to_other_programs() {
    let r = wrapper()
        .args(["--lib", &lib_arg(), "--check"])
        .env("ERRSHIM_ONLY_CMDS", "gunicorn,python3")
        .run();
    assert_eq!(r.code, Some(0), "{}", r.describe());
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(all.contains("check: configuration OK"), "{all}");
    assert!(all.contains("gunicorn"), "the check says where errshim acts: {all}");
    let r = wrapper()
        .args(["--lib", &lib_arg(), "--check"])
        .env("ERRSHIM_ONLY_CMDS", "gunicorn")
        .env("ERRSHIM_SKIP_CMDS", "bash")
        .env("ERRSHIM_RULES", "shutdown:ENOTCONN:ingore")
        .run();
    assert_eq!(r.code, Some(1), "{}", r.describe());
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(all.contains("unknown action 'ingore'"), "{all}");
    assert!(all.contains("ERRSHIM_SKIP_CMDS"), "both set is an error: {all}");
}

#[test]
fn check_reports_errors_from_the_environment() {
    let r = wrapper()
        .args(["--lib", &lib_arg(), "--check"])
        .env("ERRSHIM_RULES", "shutdown:ENOTCONN:ingore")
        .run();
    assert_eq!(r.code, Some(1), "{}", r.describe());
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains("unknown action 'ingore' in rule 1 of ERRSHIM_RULES"),
        "{all}"
    );
    assert!(all.contains("check: configuration has errors"), "{all}");
}

#[test]
fn warns_about_statically_linked_commands() {
    let bin = cc("static_hello", "static_hello", &["-O2", "-static"]);
    let r = wrapper().args(["--lib", &lib_arg()]).arg_path(&bin).run();
    r.assert_ok();
    assert_eq!(r.stdout, "static hello\n");
    assert!(
        r.stderr.contains("is statically linked: LD_PRELOAD cannot work there"),
        "{}",
        r.stderr
    );
    let c = wrapper().args(["--lib", &lib_arg(), "--check"]).arg_path(&bin).run();
    assert_eq!(c.code, Some(1), "--check with a static command fails: {}", c.describe());

    let dynamic = wrapper().args(["--lib", &lib_arg(), "true"]).run();
    assert!(!dynamic.stderr.contains("statically"), "{}", dynamic.stderr);
}

/// The README's first command: the demo shows a real ENOTCONN from shutdown() without
/// errshim, and the same run with errshim suppressing it and logging the event.
#[test]
fn demo_shows_the_failure_and_its_suppression() {
    if !require_tool("python3") {
        return;
    }
    let r = wrapper().args(["--lib", &lib_arg(), "demo"]).run();
    r.assert_ok();
    let (without, with) = r.stdout.split_once("== 2.").expect("two parts");
    assert!(
        without.contains(
            "client reset the connection; shutdown(SHUT_WR) failed: [Errno 107] Transport endpoint is not connected"
        ),
        "{without}"
    );
    assert!(without.contains("1 failed shutdown(s)"), "{without}");
    assert!(events(without).is_empty());
    assert!(
        with.contains("client reset the connection; shutdown(SHUT_WR) ok"),
        "{with}"
    );
    assert!(with.contains("0 failed shutdown(s)"), "{with}");
    let ev = events(with);
    assert_eq!(ev.len(), 1, "{with}");
    assert!(
        ev[0].contains("comm=python3 shutdown(fd=")
            && ev[0].contains("SHUT_WR) = -1 ENOTCONN -> ignored, returned 0 | tcp4 local=127.0.0.1:"),
        "{}",
        ev[0]
    );
}

#[test]
fn check_says_when_rules_replace_the_default_and_plus_adds_to_it() {
    let check = |rules: &str| {
        let r = wrapper().args(["--lib", &lib_arg(), "--check", "--rules", rules]).run();
        assert_eq!(r.code, Some(0), "{}", r.describe());
        format!("{}{}", r.stdout, r.stderr)
    };
    let replaced = check("*:*:log");
    assert!(
        replaced.contains("ERRSHIM_RULES replaces the default rules: shutdown's ENOTCONN is no longer suppressed"),
        "{replaced}"
    );
    let added = check("+*:*:log");
    assert!(!added.contains("replaces the default"), "{added}");
    assert!(
        added.contains("rule 1: shutdown,close failing with ENOTCONN on fd=sock: report success (0)")
            && added.contains("rule 2: any call failing with any errno on fd=sock: leave the result, log an event"),
        "{added}"
    );
}

#[test]
fn check_names_the_socket_calls_errshim_does_not_see() {
    let prog = program("unseen");
    let r = wrapper().args(["--lib", &lib_arg(), "--check"]).arg_path(&prog).run();
    assert_eq!(r.code, Some(0), "a note, not a failure: {}", r.describe());
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains(&format!(
            "note: {} (or a library it loads) calls tee, vmsplice, which errshim does not interpose",
            prog.display()
        )),
        "the calls hooked since issue 16 (sendfile, recvmmsg) are not named: {all}"
    );
    assert!(
        all.contains(
            "calls recvmmsg, sendfile: errshim's rules and events cover them, its fault rules do not act on them"
        ),
        "{all}"
    );
    // A program that makes none of them gets no such note.
    let plain = program("scenarios");
    let r = wrapper().args(["--lib", &lib_arg(), "--check"]).arg_path(&plain).run();
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(
        !format!("{}{}", r.stdout, r.stderr).contains("does not interpose"),
        "{}",
        r.describe()
    );
}

/// `--check --call DESC`: per fault rule, whether it injects into the described call, or the
/// first of its options that excludes it; a bad description is a configuration error.
#[test]
fn check_call_says_which_option_excludes_a_call() {
    let faults = "write:reset:after_bytes=100000:port=80;read:EIO:fd=udp;write:EIO:conn=2:nth=3;write:EIO:p=0.25";
    let check = |call: &str| {
        let r = wrapper()
            .args(["--lib", &lib_arg(), "--check", "--faults", faults, "--call", call])
            .run();
        (r.code, format!("{}{}", r.stdout, r.stderr))
    };
    let (code, all) = check("write fd=tcp port=80 bytes=150000");
    assert_eq!(code, Some(0), "{all}");
    let d = "'write fd=tcp port=80 bytes=150000'";
    for want in [
        format!("fault rule 1 on {d}: matches (k=1), injected"),
        format!("fault rule 2 on {d}: not injected: write is not one of its calls"),
        format!("fault rule 3 on {d}: not injected: conn=2 (the call is on connection 1)"),
        format!("fault rule 4 on {d}: matches (k=1), injected with probability 0.2500"),
    ] {
        assert!(all.contains(&want), "{want}\nin\n{all}");
    }
    let (_, all) = check("write fd=tcp port=80 bytes=10 conn=2 k=3");
    assert!(all.contains("fault rule 1 on 'write fd=tcp port=80 bytes=10 conn=2 k=3': matches (k=3), not injected: after_bytes=100000 (bytes=10 before it)"), "{all}");
    assert!(
        all.contains("fault rule 3 on 'write fd=tcp port=80 bytes=10 conn=2 k=3': matches (k=3), injected"),
        "{all}"
    );
    let (code, all) = check("write fd=tpc");
    assert_eq!(code, Some(1), "{all}");
    assert!(
        all.contains("unknown fd kind 'fd=tpc' in ERRSHIM_CHECK_CALL; did you mean tcp?"),
        "{all}"
    );
    let r = wrapper().args(["--lib", &lib_arg(), "--call", "read", "true"]).run();
    assert_eq!(r.code, Some(2), "--call without --check: {}", r.describe());
}
