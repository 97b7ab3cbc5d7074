//! Host safety: errshim must never change what a program experiences beyond what its rules
//! say. Each test runs real C programs (tests/fixtures) as child processes, on loopback only,
//! with and without liberrshim.so preloaded, and compares.
//!
//! - the real function is called exactly once per call (a counting interposer behind errshim);
//! - errno is left alone by suppressed failures and set as the rules say otherwise;
//! - logging to stderr does not recurse through the program's own stderr writes, and a broken
//!   stderr never gets the program killed by errshim's SIGPIPE;
//! - calls from another library's constructor, before errshim's constructor, pass through;
//! - fork in a threaded program: no deadlock, the child's events carry the child's pid;
//! - pthread_cancel of threads blocked in hooked calls unwinds through the hooks;
//! - a daemon that closes every descriptor keeps its log, and no log byte lands in its fds.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const EILSEQ: i32 = libc::EILSEQ;
const ENOTCONN: i32 = libc::ENOTCONN;
const EBADF: i32 = libc::EBADF;
const EPIPE: i32 = libc::EPIPE;
const ECONNRESET: i32 = libc::ECONNRESET;
const SIGPIPE: i32 = libc::SIGPIPE;

fn host_safety() -> PathBuf {
    program("host_safety")
}

/// The value of the whitespace-separated `key=value` token in `line`.
fn val<'a>(line: &'a str, key: &str) -> &'a str {
    let k = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(k.as_str()))
        .unwrap_or_else(|| panic!("no {key}= in line: {line}"))
}

fn num(line: &str, key: &str) -> i64 {
    val(line, key)
        .parse()
        .unwrap_or_else(|_| panic!("{key}= is not a number in line: {line}"))
}

/// The one line of `text` that starts with `prefix` followed by a space or `=`.
fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    let found: Vec<&str> = text
        .lines()
        .filter(|l| l.strip_prefix(prefix).is_some_and(|rest| rest.starts_with([' ', '='])))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one line starting with '{prefix}' in:\n{text}"
    );
    found[0]
}

/// (ret, errno) of the fixture line "<step> ret=<r> errno=<n>".
fn ret_errno(text: &str, step: &str) -> (i64, i32) {
    let l = line(text, step);
    (num(l, "ret"), num(l, "errno") as i32)
}

/// All "<scenario> <step> ret=.. errno=.." lines of a fixture's output, by step.
fn results(text: &str) -> BTreeMap<String, (i64, i32)> {
    text.lines()
        .filter(|l| l.contains(" ret=") && l.contains(" errno="))
        .map(|l| {
            let step = l.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
            (step, (num(l, "ret"), num(l, "errno") as i32))
        })
        .collect()
}

/// The interposer's "name=count" file.
fn counts(path: &Path) -> BTreeMap<String, u64> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("no interposer counts in {}: {e}", path.display()));
    text.lines()
        .map(|l| {
            let (k, v) = l.split_once('=').expect("name=count");
            (k.to_string(), v.parse().expect("count"))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. The real function is called exactly once
// ---------------------------------------------------------------------------------------------

/// How often `host_safety counts` calls each function: one failing call (never-connected TCP
/// socket: ENOTCONN for the read family, EPIPE for the write family) and one succeeding call
/// (connected unix socket pair) each; shutdown fails three times and succeeds once; close fails
/// once (EBADF) and succeeds three times.
const EXPECTED_COUNTS: [(&str, u64); 12] = [
    ("shutdown", 4),
    ("close", 4),
    ("read", 2),
    ("write", 2),
    ("readv", 2),
    ("writev", 2),
    ("recv", 2),
    ("recvfrom", 2),
    ("recvmsg", 2),
    ("send", 2),
    ("sendto", 2),
    ("sendmsg", 2),
];

/// A counting interposer preloaded after errshim receives errshim's calls to the "real"
/// functions: each count must equal the number of calls the program made, with errshim in
/// front (default rules: failing shutdowns ignored; log-everything rules; map rules) and
/// without. errshim's own log lines must not go through `write` either (the write count would
/// grow with the number of events).
#[test]
fn real_function_called_exactly_once() {
    let interposer = shared_lib("interposer");
    let dir = TempDir::new("counts");
    let expected: BTreeMap<String, u64> = EXPECTED_COUNTS.iter().map(|&(k, v)| (k.to_string(), v)).collect();

    let run = |shim: bool, rules: Option<&str>, tag: &str| {
        let out = dir.path(tag);
        let mut c = Cmd::new(host_safety()).args(["counts"]).env("INTERPOSER_OUT", &out);
        if shim {
            c = c.shim();
        }
        if let Some(r) = rules {
            c = c.env("ERRSHIM_RULES", r);
        }
        let r = c.also_preload(interposer.clone()).run();
        r.assert_ok();
        assert_eq!(
            counts(&out),
            expected,
            "real calls per function ({tag}):\n{}",
            r.describe()
        );
        r
    };

    let bare = run(false, None, "bare");
    let bare_results = results(&bare.stdout);
    assert_eq!(bare_results.len(), 28, "{}", bare.describe());
    assert_eq!(bare_results["counts shutdown_fail_rdwr"], (-1, ENOTCONN));
    assert_eq!(bare_results["counts read_fail"], (-1, ENOTCONN));
    assert_eq!(bare_results["counts write_fail"], (-1, EPIPE));
    assert_eq!(bare_results["counts close_fail"], (-1, EBADF));
    assert!(bare.events().is_empty());

    // Default rules: the three failing shutdowns are reported as successes, errno untouched;
    // every other result is exactly what the program got without errshim.
    let dflt = run(true, None, "default");
    let mut want = bare_results.clone();
    for step in ["shutdown_fail_rd", "shutdown_fail_wr", "shutdown_fail_rdwr"] {
        want.insert(format!("counts {step}"), (0, EILSEQ));
    }
    assert_eq!(results(&dflt.stdout), want, "{}", dflt.describe());
    let ev = dflt.events();
    assert_eq!(ev.len(), 3, "{}", dflt.describe());
    assert!(
        ev.iter()
            .all(|e| e.contains("shutdown(fd=3, SHUT_") && e.contains("-> ignored, returned 0")),
        "{ev:#?}"
    );

    // Log every failure of every call: 14 failing calls, 14 events, results unchanged.
    let all = run(true, Some("*:*:log:fd=any"), "log_all");
    assert_eq!(results(&all.stdout), bare_results, "{}", all.describe());
    assert_eq!(all.events().len(), 14, "{}", all.describe());

    // Map: the read family's ENOTCONN becomes ECONNRESET; still one real call each.
    let mapped = run(
        true,
        Some("read,recv,recvfrom,readv,recvmsg,shutdown:ENOTCONN:map=ECONNRESET"),
        "map",
    );
    let m = results(&mapped.stdout);
    for step in ["read_fail", "recv_fail", "recvfrom_fail", "readv_fail", "recvmsg_fail"] {
        assert_eq!(m[&format!("counts {step}")], (-1, ECONNRESET), "{step}");
    }
    assert_eq!(mapped.events().len(), 8, "{}", mapped.describe());
}

/// errshim finds the real functions without `dlsym` (the same search `dlsym(RTLD_NEXT)` makes,
/// done directly, because every process start pays for it): with a counting interposer behind
/// errshim, every address must be the interposer's where it defines the function and libc's
/// elsewhere, exactly what `dlsym` says; at debug level errshim checks each against `dlsym` and
/// warns on any difference.
#[test]
fn real_functions_are_found_as_dlsym_finds_them() {
    let interposer = shared_lib("interposer");
    let dir = TempDir::new("lookup");
    for with_interposer in [false, true] {
        let mut c = Cmd::new(host_safety())
            .args(["counts"])
            .env("INTERPOSER_OUT", dir.path("counts"))
            .shim()
            .env("ERRSHIM_LOG_LEVEL", "debug");
        if with_interposer {
            c = c.also_preload(interposer.clone());
        }
        let r = c.run();
        r.assert_ok();
        assert!(
            r.stderr
                .contains("errshim: debug: real functions resolved; each checked against dlsym"),
            "{}",
            r.describe()
        );
        assert!(!r.stderr.contains("the direct lookup of"), "{}", r.stderr);
        if with_interposer {
            assert_eq!(
                counts(&dir.path("counts"))["read"],
                2,
                "the interposer saw errshim's calls"
            );
        }
    }
}

/// An interposer whose close() really closes and then reports ENOTCONN (the only way close()
/// can yield ENOTCONN on Linux). With the default rules (`fd=sock`) errshim reports success for
/// a socket's close and logs it; a pipe's close keeps the interposer's -1/ENOTCONN. Either way
/// the real close ran exactly once per call, and every descriptor really is closed.
#[test]
fn buggy_interposer_close_enotconn_socket_ignored_pipe_untouched() {
    let interposer = shared_lib("interposer");
    let dir = TempDir::new("close-enotconn");
    let run = |shim: bool, tag: &str| {
        let out = dir.path(tag);
        let mut c = Cmd::new(host_safety())
            .args(["close_enotconn"])
            .env("INTERPOSER_OUT", &out)
            .env("INTERPOSER_CLOSE_ENOTCONN", "1");
        if shim {
            c = c.shim();
        }
        let r = c.also_preload(interposer.clone()).run();
        r.assert_ok();
        assert_eq!(counts(&out)["close"], 3, "({tag}) {}", r.describe());
        for fd in ["fcntl_tcp", "fcntl_unix", "fcntl_pipe"] {
            assert_eq!(
                ret_errno(&r.stdout, &format!("close_enotconn {fd}")),
                (-1, EBADF),
                "({tag}) descriptor not closed: {fd}"
            );
        }
        r
    };

    let bare = run(false, "bare");
    for step in ["close_tcp", "close_unix", "close_pipe"] {
        assert_eq!(
            ret_errno(&bare.stdout, &format!("close_enotconn {step}")),
            (-1, ENOTCONN)
        );
    }

    let shim = run(true, "shim");
    let fds = line(&shim.stdout, "close_enotconn fds");
    let (tcp, unix, pipe) = (num(fds, "tcp"), num(fds, "unix"), num(fds, "pipe"));
    assert_eq!(ret_errno(&shim.stdout, "close_enotconn close_tcp"), (0, EILSEQ));
    assert_eq!(ret_errno(&shim.stdout, "close_enotconn close_unix"), (0, EILSEQ));
    assert_eq!(
        ret_errno(&shim.stdout, "close_enotconn close_pipe"),
        (-1, ENOTCONN),
        "a pipe is not a socket: the default rules must leave its close alone"
    );
    let ev = shim.events();
    assert_eq!(ev.len(), 2, "{}", shim.describe());
    assert!(
        ev[0].contains(&format!("close(fd={tcp}) = -1 ENOTCONN -> ignored, returned 0 | tcp4 ")),
        "{}",
        ev[0]
    );
    assert!(
        ev[1].contains(&format!(
            "close(fd={unix}) = -1 ENOTCONN -> ignored, returned 0 | unix-stream "
        )),
        "{}",
        ev[1]
    );
    assert!(!shim.stderr.contains(&format!("close(fd={pipe})")));
}

// ---------------------------------------------------------------------------------------------
// 2. errno
// ---------------------------------------------------------------------------------------------

/// errno after a failing shutdown (never-connected TCP socket), with errno set to a sentinel
/// before it: an ignored failure leaves the sentinel (EILSEQ, and 0), `log` leaves the kernel's
/// ENOTCONN, `map=ECONNRESET` gives -1/ECONNRESET.
#[test]
fn errno_preserved_or_set_as_the_rule_says() {
    // (ERRSHIM_RULES, preload errshim, result with EILSEQ before, result with 0 before)
    type Case<'a> = (Option<&'a str>, bool, (i64, i32), (i64, i32));
    let cases: [Case; 4] = [
        (None, false, (-1, ENOTCONN), (-1, ENOTCONN)),
        (None, true, (0, EILSEQ), (0, 0)),
        (Some("shutdown:ENOTCONN:log"), true, (-1, ENOTCONN), (-1, ENOTCONN)),
        (
            Some("shutdown:ENOTCONN:map=ECONNRESET"),
            true,
            (-1, ECONNRESET),
            (-1, ECONNRESET),
        ),
    ];
    for (rules, shim, eilseq, zero) in cases {
        let mut c = Cmd::new(host_safety()).args(["errno"]);
        if shim {
            c = c.shim();
        }
        if let Some(r) = rules {
            c = c.env("ERRSHIM_RULES", r);
        }
        let r = c.run();
        r.assert_ok();
        let what = format!("rules={rules:?} shim={shim}\n{}", r.describe());
        assert_eq!(ret_errno(&r.stdout, "errno shutdown_eilseq"), eilseq, "{what}");
        assert_eq!(ret_errno(&r.stdout, "errno shutdown_zero"), zero, "{what}");
        assert_eq!(r.events().len(), if shim { 2 } else { 0 }, "{what}");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Recursion and a hostile stderr
// ---------------------------------------------------------------------------------------------

/// The log goes to stderr while the program itself writes to stderr through the hooked
/// write(): N program lines and N failing writes to a descriptor that is not open give exactly
/// N events (none for the program's own stderr writes), the N program lines arrive intact, and
/// every stderr line is whole (an event, a diagnostic, or a program line).
#[test]
fn stderr_log_and_programs_own_stderr_writes() {
    const N: usize = 50;
    let r = Cmd::new(host_safety())
        .args(["stderr_bad", &N.to_string()])
        .shim()
        .env("ERRSHIM_RULES", "write:EBADF:log:fd=any")
        .env("ERRSHIM_LOG_LEVEL", "debug")
        .run();
    r.assert_ok();
    let l = line(&r.stdout, "stderr_bad writes");
    assert_eq!(num(l, "good"), N as i64, "{}", r.describe());
    assert_eq!(num(l, "bad_ebadf"), N as i64, "{}", r.describe());
    let ev = r.events();
    assert_eq!(ev.len(), N, "{}", r.describe());
    for e in &ev {
        assert!(
            e.contains(" write(fd=1000000, len=1) = -1 EBADF -> logged, returned -1 EBADF | not-open rule=1"),
            "{e}"
        );
    }
    for i in 0..N {
        let want = format!("program stderr line {i} of {N}");
        assert_eq!(
            r.stderr.lines().filter(|l| *l == want).count(),
            1,
            "{want}\n{}",
            r.describe()
        );
    }
    for l in r.stderr.lines() {
        assert!(
            l.starts_with("errshim 2") || l.starts_with("errshim: ") || l.starts_with("program stderr line "),
            "torn or unexpected stderr line: {l:?}"
        );
    }
}

/// Runs `host_safety broken_stage1 MODE 20`: the program re-executes itself with stderr a pipe
/// whose read end is closed, so errshim's copy of stderr is broken from the start and each of
/// its log writes (and its startup diagnostics) fails with EPIPE. Rules make errshim log the
/// program's failing shutdowns (mapped, so its work is visible) and writes.
fn broken_stderr(mode: &str, shim: bool) -> Run {
    let mut c = Cmd::new(host_safety()).args(["broken_stage1", mode, "20"]);
    if shim {
        c = c
            .shim()
            .env(
                "ERRSHIM_RULES",
                "shutdown:ENOTCONN:map=ECONNRESET;write:EBADF,EPIPE:log:fd=any",
            )
            .env("ERRSHIM_LOG_LEVEL", "debug");
    }
    c.run()
}

/// SIGPIPE left at its default action: errshim's failed log writes must not kill the program
/// (it must reach its own write to the broken stderr), and that write of the program's own kills
/// it with SIGPIPE exactly as it does without errshim.
#[test]
fn broken_stderr_default_sigpipe_same_fate_as_without_errshim() {
    let bare = broken_stderr("default", false);
    let shim = broken_stderr("default", true);
    assert_eq!(bare.signal, Some(SIGPIPE), "{}", bare.describe());
    assert_eq!(
        (shim.code, shim.signal),
        (bare.code, bare.signal),
        "{}",
        shim.describe()
    );
    for (r, errno) in [(&bare, ENOTCONN), (&shim, ECONNRESET)] {
        let l = line(&r.stdout, "broken_stage2 after_events");
        assert_eq!(num(l, "shutdowns"), 20, "{}", r.describe());
        assert_eq!(num(l, "bad_writes"), 20, "{}", r.describe());
        assert_eq!(num(l, "last_errno"), errno as i64, "{}", r.describe());
        assert!(!r.stdout.contains("own_write"), "{}", r.describe());
    }
}

/// A SIGPIPE handler that counts: none while only errshim's log writes fail, then exactly one
/// per write of the program's own (errshim logging that failed write must not add a second).
#[test]
fn broken_stderr_sigpipe_handler_sees_only_the_programs_own() {
    let bare = broken_stderr("count", false);
    let shim = broken_stderr("count", true);
    for r in [&bare, &shim] {
        r.assert_ok();
        assert_eq!(
            num(line(&r.stdout, "broken_stage2 after_events"), "sigpipes"),
            0,
            "{}",
            r.describe()
        );
        let own = line(&r.stdout, "broken_stage2 own_write");
        assert_eq!(
            (num(own, "ret"), num(own, "errno"), num(own, "sigpipes")),
            (-1, EPIPE as i64, 1),
            "{}",
            r.describe()
        );
        let own2 = line(&r.stdout, "broken_stage2 own_write2");
        assert_eq!(num(own2, "sigpipes"), 2, "{}", r.describe());
    }
    assert_eq!(
        num(line(&shim.stdout, "broken_stage2 after_events"), "last_errno"),
        ECONNRESET as i64,
        "errshim did not handle the shutdowns: {}",
        shim.describe()
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Another library's constructor, before errshim's
// ---------------------------------------------------------------------------------------------

fn ctor_main() -> PathBuf {
    let lib = shared_lib("ctor_lib");
    let dir = lib.parent().unwrap().display().to_string();
    cc(
        "ctor_main",
        "ctor_main",
        &[
            "-O2",
            &format!("-L{dir}"),
            "-Wl,--no-as-needed",
            "-lctor_lib",
            &format!("-Wl,-rpath,{dir}"),
        ],
    )
}

/// ctor_main links against libctor_lib.so, whose constructor makes a failing shutdown and a
/// successful write. glibc runs initialisers in reverse load order, dependencies first: the
/// preloaded liberrshim.so is loaded before the program's DT_NEEDED libraries and nothing
/// depends on it, so libctor_lib's constructor runs *before* errshim's (checked below with
/// LD_DEBUG=files). Its calls already bind to errshim's hooks, which, uninitialised, are pure
/// pass-through: the results are exactly those without errshim, and no event is logged for
/// them. main's own failing shutdown, after errshim's constructor, is ignored and logged.
#[test]
fn calls_from_another_librarys_constructor_before_errshim_init() {
    let exe = ctor_main();

    let order = Cmd::new(&exe).shim().env("LD_DEBUG", "files").run();
    order.assert_ok();
    let inits: Vec<&str> = order
        .stderr
        .lines()
        .filter_map(|l| l.split("calling init: ").nth(1))
        .collect();
    let pos = |name: &str| {
        inits
            .iter()
            .position(|p| p.ends_with(name))
            .unwrap_or_else(|| panic!("no init of {name} in LD_DEBUG output: {inits:#?}"))
    };
    assert!(
        pos("/libctor_lib.so") < pos("/liberrshim.so"),
        "this glibc runs errshim's constructor first; the test's premise changed: {inits:#?}"
    );

    let bare = Cmd::new(&exe).run();
    let shim = Cmd::new(&exe).shim().run();
    for r in [&bare, &shim] {
        r.assert_ok();
        assert_eq!(
            ret_errno(&r.stdout, "ctor shutdown"),
            (-1, ENOTCONN),
            "{}",
            r.describe()
        );
        assert_eq!(ret_errno(&r.stdout, "ctor write"), (4, EILSEQ), "{}", r.describe());
        assert_eq!(ret_errno(&r.stdout, "ctor read"), (4, 0), "{}", r.describe());
        assert_eq!(ret_errno(&r.stdout, "ctor stdout"), (37, 0), "{}", r.describe());
        assert!(r.stdout.contains("ctor_lib constructor wrote this line\n"));
        let ran = line(&r.stdout, "ctor ran=1");
        assert_eq!(val(ran, "read"), "ctor");
    }
    assert_eq!(
        val(line(&shim.stdout, "ctor ran=1"), "binding"),
        "liberrshim.so",
        "the constructor's calls did not go through errshim's hooks"
    );
    assert_eq!(ret_errno(&bare.stdout, "main shutdown"), (-1, ENOTCONN));
    assert_eq!(
        ret_errno(&shim.stdout, "main shutdown"),
        (0, EILSEQ),
        "{}",
        shim.describe()
    );
    let main_fd = num(line(&shim.stdout, "main sock_fd"), "sock_fd");
    let ev = shim.events();
    assert_eq!(ev.len(), 1, "{}", shim.describe());
    assert!(
        ev[0].contains(&format!(
            "shutdown(fd={main_fd}, SHUT_RDWR) = -1 ENOTCONN -> ignored, returned 0 | tcp4 "
        )),
        "{}",
        ev[0]
    );
}

// ---------------------------------------------------------------------------------------------
// 5. fork in a threaded program
// ---------------------------------------------------------------------------------------------

const FORK_THREADS: usize = 4;
const FORK_CHILDREN: usize = 100;

/// Checks a `fork_threads` run; returns (parent pid, child pids, thread shutdowns).
fn check_fork_run(r: &Run) -> (i64, Vec<i64>, i64) {
    r.assert_ok();
    let done = line(&r.stdout, "fork_threads done");
    assert_eq!(num(done, "children_ok"), FORK_CHILDREN as i64, "{}", r.describe());
    let parent = num(done, "pid");
    let children: Vec<i64> = r
        .out_lines("fork_threads child ")
        .iter()
        .map(|l| {
            assert_eq!(
                (num(l, "ret"), num(l, "errno")),
                (0, EILSEQ as i64),
                "child's shutdown not ignored: {l}"
            );
            num(l, "pid")
        })
        .collect();
    assert_eq!(children.len(), FORK_CHILDREN, "{}", r.describe());
    for l in r.out_lines("fork_threads reaped ") {
        assert!(l.ends_with("exited=1 code=0 signaled=0"), "child did not exit 0: {l}");
    }
    (parent, children, num(done, "thread_shutdowns"))
}

fn child_event_ok(e: &str, pid: i64) -> bool {
    e.contains(&format!(" pid={pid} tid={pid} "))
        && e.contains("shutdown(fd=")
        && e.contains("= -1 ENOTCONN -> ignored, returned 0 | tcp4 ")
}

/// Threads fail shutdowns in a loop (each one logged) while the main thread forks 100 times;
/// each child fails a shutdown of its own, which is ignored and logged with the child's pid,
/// then `_exit(0)`s. No deadlock (the harness's watchdog), every child exits 0, and not an
/// event is lost or duplicated: one per child, one per thread iteration.
///
/// stderr is a file here: through a pipe, the threads' flood of events outruns the test's
/// reader, and errshim, which never blocks the program to log, drops lines into a full pipe.
#[test]
fn fork_in_threaded_program_logs_with_childs_pid() {
    let dir = TempDir::new("fork-stderr");
    let r = Cmd::new(host_safety())
        .args(["fork_threads", &FORK_THREADS.to_string(), &FORK_CHILDREN.to_string()])
        .shim()
        .stderr_file(&dir.path("stderr"))
        .run();
    let (parent, children, thread_shutdowns) = check_fork_run(&r);
    let ev = r.events();
    for &pid in &children {
        let mine: Vec<_> = ev.iter().filter(|e| e.contains(&format!(" pid={pid} "))).collect();
        assert_eq!(mine.len(), 1, "events of child {pid}: {mine:#?}");
        assert!(child_event_ok(mine[0], pid), "{}", mine[0]);
    }
    let parents = ev.iter().filter(|e| e.contains(&format!(" pid={parent} "))).count();
    assert_eq!(parents as i64, thread_shutdowns);
    assert_eq!(ev.len(), children.len() + parents);
}

/// The same with `ERRSHIM_LOG=<dir>/log-%p.txt`: each child writes its event to its own file,
/// opened after the fork, never into the parent's file (which holds exactly the threads' events).
#[test]
fn fork_in_threaded_program_per_process_log_files() {
    let dir = TempDir::new("fork-logs");
    let r = Cmd::new(host_safety())
        .args(["fork_threads", &FORK_THREADS.to_string(), &FORK_CHILDREN.to_string()])
        .shim()
        .env("ERRSHIM_LOG", dir.path("log-%p.txt"))
        .run();
    let (parent, children, thread_shutdowns) = check_fork_run(&r);
    assert!(r.events().is_empty(), "{}", r.describe());
    let read = |pid: i64| {
        std::fs::read_to_string(dir.path(&format!("log-{pid}.txt"))).unwrap_or_else(|e| panic!("log of {pid}: {e}"))
    };
    for &pid in &children {
        let text = read(pid);
        let ev = events(&text);
        assert_eq!(ev.len(), 1, "log of child {pid}:\n{text}");
        assert!(child_event_ok(ev[0], pid), "{}", ev[0]);
    }
    let text = read(parent);
    let ev = events(&text);
    assert_eq!(ev.len() as i64, thread_shutdowns);
    assert!(ev.iter().all(|e| e.contains(&format!(" pid={parent} "))));
    let files = std::fs::read_dir(&dir.0).unwrap().count();
    assert_eq!(files, children.len() + 1);
}

// ---------------------------------------------------------------------------------------------
// 6. pthread_cancel
// ---------------------------------------------------------------------------------------------

/// Threads blocked in read() on a pipe and in recv() on a socket pair are cancelled: glibc's
/// forced unwind passes through errshim's hook frames, the cleanup handlers run, pthread_join
/// returns PTHREAD_CANCELED and the process exits 0. Built at -O0, -O2, -O2 with
/// _FORTIFY_SOURCE (the __read_chk/__recv_chk hooks) and -O2 -fexceptions; each with and
/// without errshim (whose profile is that of this test: debug or release).
#[test]
fn pthread_cancel_of_threads_blocked_in_hooked_calls() {
    let variants: [(&str, &[&str], i64); 4] = [
        ("cancel-O0", &["-U_FORTIFY_SOURCE", "-O0"], 0),
        ("cancel-O2", &["-U_FORTIFY_SOURCE", "-O2"], 0),
        (
            "cancel-O2-fortify",
            &["-U_FORTIFY_SOURCE", "-D_FORTIFY_SOURCE=2", "-O2"],
            2,
        ),
        (
            "cancel-O2-fexceptions",
            &["-U_FORTIFY_SOURCE", "-O2", "-fexceptions"],
            0,
        ),
    ];
    for (name, flags, fortify) in variants {
        let exe = cc("cancel", name, flags);
        for shim in [false, true] {
            let mut c = Cmd::new(&exe);
            if shim {
                c = c.shim();
            }
            let r = c.run();
            let what = format!("{name} shim={shim}\n{}", r.describe());
            assert_eq!((r.code, r.signal), (Some(0), None), "{what}");
            assert_eq!(
                num(line(&r.stdout, "cancel fortify_level"), "fortify_level"),
                fortify,
                "{what}"
            );
            let object = if shim { "liberrshim.so" } else { "libc.so.6" };
            for sym in ["read", "recv", "__read_chk", "__recv_chk"] {
                assert!(
                    r.stdout.contains(&format!("cancel binding {sym}={object}\n")),
                    "{sym} not bound to {object}: {what}"
                );
            }
            for t in ["read", "recv"] {
                let l = line(&r.stdout, &format!("cancel {t}"));
                assert!(l.ends_with("joined=1 canceled=1 cleanup=1"), "{t}: {what}");
                assert!(
                    matches!(val(l, "blocked"), "1" | "-1"),
                    "thread never blocked in {t}: {what}"
                );
            }
            assert!(!r.stdout.contains("returned"), "{what}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 7. A daemon that closes every descriptor
// ---------------------------------------------------------------------------------------------

const CLOSEALL_SOCKETS: usize = 5;

/// Runs `closeall` and returns its result file and the run.
fn closeall(dir: &TempDir, tag: &str, shim: bool, log: Option<&Path>) -> (String, Run) {
    let res = dir.path(&format!("result-{tag}.txt"));
    let mut c = Cmd::new(program("closeall"))
        .args([res.as_os_str()])
        .args([CLOSEALL_SOCKETS.to_string()]);
    if shim {
        c = c.shim();
    }
    if let Some(l) = log {
        c = c.env("ERRSHIM_LOG", l);
    }
    let r = c.run();
    let text = std::fs::read_to_string(&res).unwrap_or_default();
    assert_eq!(r.code, Some(0), "{tag}:\n{text}\n{}", r.describe());
    assert!(text.ends_with("done\n"), "{tag}:\n{text}");
    (text, r)
}

fn list(text: &str, key: &str) -> Vec<i64> {
    let p = format!("{key}=");
    let l = text
        .lines()
        .find_map(|l| l.strip_prefix(p.as_str()))
        .unwrap_or_else(|| panic!("no {key}= in:\n{text}"));
    l.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect()
}

/// What every closeall run must show, with or without errshim: each close() of a descriptor
/// that was not open failed with EBADF (and nothing else), the descriptors that were open
/// closed with 0, exactly as without errshim; the new descriptors start at 0; nothing at all
/// arrived on fds 0-3; and afterwards no descriptor is open that the program did not open:
/// errshim keeps none of its own (it opens one for each line and closes it again), so there is
/// nothing for a close-all to miss and nothing to keep a caller waiting for EOF.
fn check_closeall(text: &str, baseline: &str) {
    let counters = line(text, "unopened_ok=0");
    assert_eq!(num(counters, "other"), 0, "{text}");
    assert_eq!(
        list(text, "closed_ok"),
        list(baseline, "closed_ok"),
        "close() of open descriptors differs from the run without errshim:\n{text}"
    );
    let limit = num(line(text, "limit"), "limit");
    let closed = list(text, "closed_ok").len() as i64;
    assert_eq!(num(counters, "ebadf"), limit - closed, "{text}");
    assert!(text.contains("\nfds pair_a=0,1 pair_b=2,3 result=4\n"), "{text}");
    assert_eq!(num(line(text, "leaked"), "leaked"), 0, "{text}");
    assert!(
        list(text, "foreign").is_empty(),
        "a descriptor survived the close-all:\n{text}"
    );
    assert!(list(text, "open_but_ebadf").is_empty(), "{text}");
}

/// The failing shutdowns the program reports (fd numbers), all ignored with errno untouched
/// when `shim`.
fn closeall_shutdowns(text: &str, shim: bool) -> Vec<i64> {
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("shutdown ")).collect();
    for l in &lines {
        let want = if shim { (0, EILSEQ) } else { (-1, ENOTCONN) };
        assert_eq!((num(l, "ret"), num(l, "errno") as i32), want, "{l}\n{text}");
    }
    lines.iter().map(|l| num(l, "fd")).collect()
}

/// One event per failing shutdown, naming its descriptor, in order.
fn check_closeall_events(ev: &[&str], fds: &[i64], pid: i64) {
    assert_eq!(ev.len(), fds.len(), "{ev:#?}");
    for (e, fd) in ev.iter().zip(fds) {
        assert!(
            e.contains(&format!(" pid={pid} "))
                && e.contains(&format!(
                    "shutdown(fd={fd}, SHUT_RDWR) = -1 ENOTCONN -> ignored, returned 0 | tcp4 "
                )),
            "{e}"
        );
    }
}

/// (a) `ERRSHIM_LOG=<dir>/log-%p.txt`: the file is opened for each line, so the close-all
/// meets no descriptor of errshim's; the file holds one correct event per failing shutdown,
/// before and after the close-all, nothing goes to stderr, and no byte lands in the program's
/// descriptors.
#[test]
fn close_all_daemon_log_file() {
    let dir = TempDir::new("closeall-file");
    let (baseline, _) = closeall(&dir, "bare", false, None);
    check_closeall(&baseline, &baseline);
    assert_eq!(closeall_shutdowns(&baseline, false).len(), CLOSEALL_SOCKETS);

    let logs = TempDir::new("closeall-logs");
    let (text, r) = closeall(&dir, "file", true, Some(&logs.path("log-%p.txt")));
    check_closeall(&text, &baseline);
    let early = line(&text, "early_shutdown");
    assert_eq!((num(early, "ret"), num(early, "errno") as i32), (0, EILSEQ), "{text}");
    let mut fds = vec![num(early, "fd")];
    fds.extend(closeall_shutdowns(&text, true));
    assert_eq!(fds.len(), CLOSEALL_SOCKETS + 1);
    let pid = num(line(&text, "pid"), "pid");
    let log = std::fs::read_to_string(logs.path(&format!("log-{pid}.txt"))).unwrap();
    check_closeall_events(&events(&log), &fds, pid);
    assert!(r.events().is_empty(), "{}", r.describe());
}

/// (b) Log to stderr: the event before the close-all reaches the captured stderr; after it,
/// fd 2 is one of the program's own sockets, not the stderr errshim was loaded with, so no
/// line is written anywhere (they are counted as dropped) and nothing lands in the program's
/// descriptors.
#[test]
fn close_all_daemon_log_stderr() {
    let dir = TempDir::new("closeall-stderr");
    let (baseline, _) = closeall(&dir, "bare", false, None);
    let (text, r) = closeall(&dir, "stderr", true, None);
    check_closeall(&text, &baseline);
    assert_eq!(closeall_shutdowns(&text, true).len(), CLOSEALL_SOCKETS);
    let pid = num(line(&text, "pid"), "pid");
    let early = num(line(&text, "early_shutdown"), "fd");
    check_closeall_events(&r.events(), &[early], pid);
}
