//! Where in a process tree errshim acts (ERRSHIM_ONLY_CMDS, ERRSHIM_SKIP_CMDS), and what it
//! refuses to do in secure-execution mode.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;

/// A Python parent whose own failing shutdown shows whether errshim acts in it, then runs the
/// C child (through exec, so the child loads errshim afresh).
const PARENT: &str = r#"
import os, socket, subprocess, sys
s = socket.socket()
try:
    s.shutdown(socket.SHUT_RDWR)
    print("parent shutdown ok", flush=True)
except OSError as e:
    print("parent shutdown errno", e.errno, flush=True)
s.close()
r = subprocess.run([sys.argv[1], "never_connected"], capture_output=True, text=True)
sys.stdout.write(r.stdout)
sys.stderr.write(r.stderr)
print("child exit", r.returncode, flush=True)
"#;

fn tree(vars: &[(&str, &str)], child: &std::path::Path) -> Run {
    let mut c = Cmd::new("python3").args(["-c", PARENT]).arg_path(child).shim();
    for (k, v) in vars {
        c = c.env(k, v);
    }
    c.run()
}

fn parent_ok(r: &Run) -> bool {
    r.stdout.contains("parent shutdown ok")
}

fn child_ok(r: &Run) -> bool {
    r.stdout.contains("never_connected shutdown ret=0 ")
}

#[test]
fn only_and_skip_choose_the_processes_errshim_acts_in() {
    if !require_tool("python3") {
        return;
    }
    let child = program("scenarios");
    let all = tree(&[], &child);
    assert!(parent_ok(&all) && child_ok(&all), "{}", all.describe());
    assert_eq!(all.events().len(), 2);

    for vars in [
        [("ERRSHIM_ONLY_CMDS", "scenarios")],
        [("ERRSHIM_SKIP_CMDS", "python3, sh")],
    ] {
        let r = tree(&vars, &child);
        assert!(
            !parent_ok(&r),
            "{vars:?}: the parent is a pure pass-through:\n{}",
            r.describe()
        );
        assert!(r.stdout.contains("parent shutdown errno 107"), "{}", r.describe());
        assert!(child_ok(&r), "{vars:?}: the child after exec acts:\n{}", r.describe());
        let ev = r.events();
        assert_eq!(ev.len(), 1, "{vars:?}: only the child logs:\n{}", r.stderr);
        assert!(ev[0].contains("comm=scenarios "), "{}", ev[0]);
    }

    let r = tree(&[("ERRSHIM_ONLY_CMDS", "nginx")], &child);
    assert!(!parent_ok(&r) && !child_ok(&r), "{}", r.describe());
    assert!(
        r.stderr.is_empty(),
        "not a word from a process errshim does not act in: {}",
        r.stderr
    );

    // Both set: one error line per process, and errshim acts everywhere.
    let r = tree(
        &[("ERRSHIM_ONLY_CMDS", "scenarios"), ("ERRSHIM_SKIP_CMDS", "python3")],
        &child,
    );
    assert!(parent_ok(&r) && child_ok(&r), "{}", r.describe());
    // One line per process (Python starts helpers of its own too), every one the same.
    let errs: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("errshim: config error"))
        .collect();
    assert!(errs.len() >= 2, "{}", r.stderr);
    assert!(
        errs.iter()
            .all(|l| l.contains("cannot be set together with 'ERRSHIM_SKIP_CMDS' in ERRSHIM_ONLY_CMDS")),
        "{}",
        r.stderr
    );
}

/// Program names longer than the kernel's 15-byte comm match by argv[0].
#[test]
fn long_program_names_match_by_argv0() {
    let dir = TempDir::new("longname");
    let long = dir.path("scenarios_with_a_long_name");
    std::fs::hard_link(program("scenarios"), &long).unwrap();
    let r = Cmd::new(&long)
        .args(["never_connected"])
        .shim()
        .env("ERRSHIM_ONLY_CMDS", "scenarios_with_a_long_name")
        .run();
    assert_eq!(
        result_of(&r, "never_connected shutdown"),
        (0, libc::EILSEQ),
        "{}",
        r.describe()
    );
    assert_eq!(r.events().len(), 1);
}

/// Removes a file when dropped (the library copied into a trusted directory).
struct Remove(std::path::PathBuf);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// In secure-execution mode (here: a setuid program run by root, so real and effective user
/// differ) nothing from the environment may change what the privileged program does or send
/// its data elsewhere: errshim ignores every ERRSHIM_* variable (fault rules, rules, log files,
/// syslog sockets, the control file, backtraces, even ERRSHIM_DISABLE), says so once, and works
/// with its defaults. The loader only preloads such programs with libraries from its trusted
/// directories that have the set-user-ID bit, so a copy is put there for the test.
#[test]
fn secure_execution_mode_ignores_the_environment() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(!in_ci(), "CI runs as root");
        eprintln!("\n*** SKIPPED: secure-execution test needs root (to make a setuid program) ***\n");
        return;
    }
    let trusted = ["/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu"]
        .into_iter()
        .find(|d| std::path::Path::new(d).is_dir());
    let Some(trusted) = trusted else {
        assert!(!in_ci(), "no trusted library directory");
        eprintln!("\n*** SKIPPED: no /usr/lib/x86_64-linux-gnu ***\n");
        return;
    };
    let name = format!("liberrshim-secure-test-{}.so", std::process::id());
    let installed = Remove(std::path::Path::new(trusted).join(&name));
    std::fs::copy(lib(), &installed.0).unwrap();
    std::fs::set_permissions(&installed.0, std::fs::Permissions::from_mode(0o4755)).unwrap();

    let dir = TempDir::new("secure");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let prog = dir.path("scenarios_setuid");
    std::fs::copy(program("scenarios"), &prog).unwrap();
    let nobody = 65534;
    std::os::unix::fs::chown(&prog, Some(nobody), None).unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o4755)).unwrap();

    let log = dir.path("must-not-exist.log");
    let control = dir.path("control");
    std::fs::write(&control, "shutdown:EIO\n").unwrap();
    // A syslog socket the privileged program could send to: nothing may arrive.
    let sock_path = dir.path("syslog.sock");
    let syslog = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o777)).unwrap();
    syslog.set_nonblocking(true).unwrap();
    let variables = [
        ("ERRSHIM_FAULTS", "write:EIO:fd=any".to_string()),
        (
            "ERRSHIM_RULES",
            "shutdown:ENOTCONN:map=EPIPE;*:*:log:fd=any".to_string(),
        ),
        ("ERRSHIM_CONTROL", control.display().to_string()),
        ("ERRSHIM_BACKTRACE", "1".to_string()),
        ("ERRSHIM_DISABLE", "1".to_string()),
    ];
    let run = |log_to: String| {
        let mut c = Cmd::new(&prog)
            .args(["never_connected"])
            .env("LD_PRELOAD", &name)
            .env("ERRSHIM_LOG", &log_to);
        for (k, v) in &variables {
            c = c.env(k, v);
        }
        let r = c.run();
        r.assert_ok();
        r
    };
    for log_to in [log.display().to_string(), format!("syslog:{}", sock_path.display())] {
        let r = run(log_to.clone());
        let what = format!("ERRSHIM_LOG={log_to}\n{}", r.describe());
        assert!(!log.exists(), "no log file is opened in secure-execution mode");
        let mut buf = [0u8; 512];
        assert!(
            syslog.recv(&mut buf).is_err(),
            "a datagram reached the syslog socket: {what}"
        );
        // The program's own writes work (no fault rule), the kernel's results stand except
        // where the default rule acts (so errshim was loaded), which ERRSHIM_RULES did not
        // replace.
        assert_eq!(result_of(&r, "never_connected read"), (-1, libc::ENOTCONN), "{what}");
        assert_eq!(result_of(&r, "never_connected write"), (-1, libc::EPIPE), "{what}");
        assert_eq!(result_of(&r, "never_connected shutdown"), (0, libc::EILSEQ), "{what}");
        assert_eq!(result_of(&r, "never_connected close"), (0, libc::EILSEQ), "{what}");
        let ev = r.events();
        assert_eq!(ev.len(), 1, "the default rule's one event, to stderr: {what}");
        assert!(!ev[0].contains("backtrace="), "{what}");
        let warn: Vec<&str> = r
            .stderr
            .lines()
            .filter(|l| l.contains("secure-execution mode"))
            .collect();
        assert_eq!(warn.len(), 1, "said once: {what}");
        for (k, _) in variables.iter().chain([&("ERRSHIM_LOG", String::new())]) {
            assert!(warn[0].contains(k), "{k} not named: {}", warn[0]);
        }
    }

    // The same program, not setuid: the file is used.
    let plain = dir.path("scenarios_plain");
    std::fs::copy(program("scenarios"), &plain).unwrap();
    let r = Cmd::new(&plain)
        .args(["never_connected"])
        .shim()
        .env("ERRSHIM_LOG", log.to_str().unwrap())
        .run();
    r.assert_ok();
    assert_eq!(events(&std::fs::read_to_string(&log).unwrap()).len(), 1);
}
