//! Reliability under load: signals, threads, hostile descriptor handling, connection churn and
//! memcheck. Each test runs real C programs (tests/fixtures) under liberrshim.so on loopback,
//! bounded in count and time, and checks that errshim never harms its host: no deadlock or
//! crash, every byte accounted for, every event logged where it belongs and nowhere else, memory
//! bounded, no invalid memory access.
//!
//! - `signal_handlers_log_into_full_pipes_while_threads_fail` (sigstorm.c): handlers write to
//!   self-pipes at thousands per second, their EAGAIN failures logged from inside the handler;
//! - `signal_handler_calls_get_the_rules` (sighandler.c): calls from a handler that interrupted
//!   errshim's own failure handling get the rules too;
//! - `eight_threads_injected_faults_summary_equals_log` (threads.c): fault rules at p=0.01,
//!   retried by the program; the exit summary, the log and the program agree exactly;
//! - `echo_under_load_every_stream_intact_with_short_transfers` (echo.c): 16 clients, 100 MiB
//!   (`STRESS_ECHO_BYTES`), short transfers on the server and the clients, SHA-256 per stream;
//! - `descriptor_chaos_*` (fdchaos.c): close-all, dup2 storms over errshim's descriptors,
//!   close_range(3, ~0), socket churn; the log keeps working and never leaks;
//! - `connection_churn_memory_stays_bounded` (churn.c): 100,000 connections
//!   (`STRESS_CHURN_CONNECTIONS`), peak RSS with and without errshim;
//! - `memcheck_fixtures_under_errshim`: valgrind memcheck over the fixtures with errshim loaded.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The number after `key=` in a line (`key` preceded by a space or at the start).
fn num(line: &str, key: &str) -> i64 {
    let k = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(k.as_str()))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {key}= in line: {line}"))
}

/// The text after `key=` up to the next space.
fn word<'a>(line: &'a str, key: &str) -> &'a str {
    let k = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(k.as_str()))
        .unwrap_or_else(|| panic!("no {key}= in line: {line}"))
}

/// The one line of `text` that starts with `prefix` followed by a space or `=`.
fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    let found: Vec<&str> = text
        .lines()
        .filter(|l| l.strip_prefix(prefix).is_some_and(|r| r.starts_with([' ', '='])))
        .collect();
    assert_eq!(found.len(), 1, "expected one line starting with '{prefix}' in:\n{text}");
    found[0]
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An environment variable that scales a test up (the default fits the test budget).
fn scale(var: &str, default: u64) -> u64 {
    match std::env::var(var) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}={v} is not a whole number")),
        Err(_) => default,
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Signals
// ---------------------------------------------------------------------------------------------

/// Handler counters printed by sigstorm: (calls, written, eagain, other, errno_bad, drained).
fn handler_counts(out: &str, name: &str) -> [i64; 6] {
    let l = line(out, name);
    ["calls", "written", "eagain", "other", "errno_bad", "drained"].map(|k| num(l, k))
}

/// SIGALRM every 50 us (setitimer) runs a handler in one thread, queued real-time signals run
/// another in four threads that loop over failing socket calls, and both handlers write one
/// byte to a non-blocking pipe of one page that fills up: the EAGAIN rule
/// (`write:EAGAIN:log:fd=any`) makes errshim build and write events from inside the handlers,
/// while `*:*:log` and the default rule log every failing socket call of the threads.
/// No deadlock (the harness's timeout), no crash, and everything adds up:
/// - each handler's calls = successful writes + EAGAIN failures, nothing else, with errno
///   untouched by a successful write and EAGAIN after a failed one;
/// - every byte written into a pipe was read out of it;
/// - the pipes really filled (EAGAIN > 0 in both), so logging really ran inside handlers;
/// - SIGALRM's handler only ever interrupts calls that succeed: each of its EAGAIN failures is
///   exactly one event; the real-time signal's handler interrupts errshim's own failure path
///   too, where errshim's per-thread guard passes a nested call through unlogged, so its events
///   are at most its failures;
/// - every failing socket call of the threads is exactly one well-formed event, with the result
///   the rules say (the ignored shutdowns leave errno as it was).
#[test]
fn signal_handlers_log_into_full_pipes_while_threads_fail() {
    let dir = TempDir::new("sigstorm");
    let log = dir.path("events.log");
    let (n_alrm, n_usr1) = (10_000, 20_000);
    let start = Instant::now();
    let r = Cmd::new(program("sigstorm"))
        .args([n_alrm.to_string(), n_usr1.to_string(), "40".to_string()])
        .shim()
        .env(
            "ERRSHIM_RULES",
            "close,shutdown:ENOTCONN:ignore;write:EAGAIN:log:fd=any;*:*:log",
        )
        .env("ERRSHIM_LOG", &log)
        .timeout(Duration::from_secs(90))
        .run();
    r.assert_ok();
    let out = &r.stdout;
    assert!(out.ends_with("done\n"), "{}", r.describe());
    let pipes = line(out, "pipes");
    let (fd_a, fd_b) = (num(pipes, "a"), num(pipes, "b"));
    let a = handler_counts(out, "alrm");
    let b = handler_counts(out, "usr1");
    let sent = num(line(out, "sent"), "usr1");
    let io = line(out, "io");
    let (cycles, shutdowns, sends, recvs) = (num(io, "cycles"), num(io, "shutdown"), num(io, "send"), num(io, "recv"));
    assert!(
        a[0] >= n_alrm,
        "SIGALRM handler ran {} times, wanted {n_alrm}:\n{out}",
        a[0]
    );
    assert_eq!(
        (sent, b[0]),
        (n_usr1, n_usr1),
        "every queued signal handled once:\n{out}"
    );
    for (name, c) in [("alrm", a), ("usr1", b)] {
        let [calls, written, eagain, other, errno_bad, drained] = c;
        assert_eq!(
            calls,
            written + eagain,
            "{name}: every call wrote or got EAGAIN:\n{out}"
        );
        assert_eq!((other, errno_bad), (0, 0), "{name}: wrong result or errno:\n{out}");
        assert_eq!(written, drained, "{name}: bytes written = bytes read out:\n{out}");
        assert!(eagain > 0, "{name}: the pipe never filled:\n{out}");
    }
    assert_eq!(
        num(io, "bad"),
        0,
        "a failing socket call returned something else:\n{out}"
    );
    assert!(
        cycles > 0 && shutdowns == cycles && sends == cycles && recvs == cycles,
        "{io}"
    );

    let text = read(&log);
    let pipe_event =
        |fd: i64| format!(" write(fd={fd}, len=1) = -1 EAGAIN -> logged, returned -1 EAGAIN | not-a-socket rule=2");
    let (pa, pb) = (pipe_event(fd_a), pipe_event(fd_b));
    let (mut ev_a, mut ev_b, mut ev_recv, mut ev_send, mut ev_shut) = (0i64, 0i64, 0i64, 0i64, 0i64);
    let mut lines = 0;
    for l in text.lines() {
        lines += 1;
        assert!(
            l.starts_with("errshim 2") && l.contains(" comm=sigstorm "),
            "malformed line: {l:?}"
        );
        if l.ends_with(&pa) {
            ev_a += 1;
        } else if l.ends_with(&pb) {
            ev_b += 1;
        } else if l.contains(", len=1) = -1 ENOTCONN -> logged, returned -1 ENOTCONN | tcp4 ")
            && l.contains(" recv(fd=")
        {
            ev_recv += 1;
        } else if l.contains(", len=1, flags=0x4000) = -1 EPIPE -> logged, returned -1 EPIPE | tcp4 ") {
            ev_send += 1;
        } else if l.contains(", SHUT_RDWR) = -1 ENOTCONN -> ignored, returned 0 | tcp4 ") {
            ev_shut += 1;
        } else {
            panic!("unexpected line: {l}");
        }
        if l.contains(" | tcp4 ") {
            assert!(l.contains(" | cause=never_connected: "), "{l}");
        }
    }
    assert_eq!(ev_a, a[2], "one event per EAGAIN of the SIGALRM handler");
    assert!(
        ev_b <= b[2],
        "the real-time handler: {ev_b} events for {} EAGAINs",
        b[2]
    );
    assert_eq!(
        (ev_recv, ev_send, ev_shut),
        (recvs, sends, shutdowns),
        "one event per failing call"
    );
    eprintln!(
        "sigstorm: {:?}; SIGALRM handler {} calls ({} EAGAIN, {ev_a} events); real-time handler {} calls ({} EAGAIN, \
         {ev_b} events, {} passed through unlogged inside errshim's own failure path); {cycles} socket cycles, \
         {} events; {lines} log lines",
        start.elapsed(),
        a[0],
        a[2],
        b[0],
        b[2],
        b[2] - ev_b,
        ev_recv + ev_send + ev_shut,
    );
}

/// A failing call made by a signal handler gets the rules like any other call: under the default
/// rule, each shutdown() of a never-connected TCP socket in the handler returns 0 with errno
/// untouched, while the interrupted thread is busy with failing shutdowns of its own.
///
/// The signal often lands while the thread is inside errshim's own failure handling: the guard
/// in `ops::guarded` lets that one level of nesting through (it used to pass such calls straight
/// to the real function: about two thirds of 5,000 handler calls got -1/ENOTCONN).
#[test]
fn signal_handler_calls_get_the_rules() {
    let r = Cmd::new(program("sighandler"))
        .args(["5000"])
        .shim()
        .env("ERRSHIM_LOG", "off")
        .run();
    r.assert_ok();
    let l = line(&r.stdout, "handler");
    assert_eq!((num(l, "ok"), num(l, "failed"), num(l, "other")), (5000, 0, 0), "{l}");
}

// ---------------------------------------------------------------------------------------------
// 2. Threads
// ---------------------------------------------------------------------------------------------

/// Eight threads, 50,000 messages each over their own socketpair and TCP connection, with fault
/// rules at p=0.01 on send/recv (ECONNRESET) and writev/readv (EINTR) and the exit summary on.
/// The program retries exactly those errors: no crash, every message arrives intact, and three
/// independent counts agree exactly: the failures the program saw, the injection events in the
/// log, and the exit summary's `action=inject` rows (whose `events=` total is the number of
/// event lines, none dropped).
#[test]
fn eight_threads_injected_faults_summary_equals_log() {
    let dir = TempDir::new("threads");
    let log = dir.path("events.log");
    let start = Instant::now();
    let r = Cmd::new(program("threads"))
        .args(["8", "50000"])
        .shim()
        .env(
            "ERRSHIM_FAULTS",
            "send,recv:ECONNRESET:p=0.01:unfaithful;writev,readv:EINTR:p=0.01:fd=tcp:unfaithful",
        )
        .env("ERRSHIM_SUMMARY", "1")
        .env("ERRSHIM_SEED", "7")
        .env("ERRSHIM_LOG", &log)
        .timeout(Duration::from_secs(120))
        .run();
    r.assert_ok();
    assert_eq!(r.out_lines("thread ").len(), 8, "{}", r.describe());
    let total = line(&r.stdout, "total");
    let (resets, eintrs, calls) = (num(total, "econnreset"), num(total, "eintr"), num(total, "calls"));
    assert_eq!(num(total, "bad"), 0, "{}", r.stdout);

    let text = read(&log);
    let ev = events(&text);
    let startup: Vec<&&str> = ev
        .iter()
        .filter(|e| e.contains(" faults: 2 rule(s), seed=7 "))
        .collect();
    assert_eq!(startup.len(), 1, "one startup line");
    let injected: Vec<&&str> = ev.iter().filter(|e| e.contains(" (INJECTED) -> inject ")).collect();
    assert_eq!(injected.len() + 1, ev.len(), "only the startup line and injections");
    let count = |what: &str| injected.iter().filter(|e| e.contains(what)).count() as i64;
    let ev_resets = count("= -1 ECONNRESET (INJECTED) -> inject ECONNRESET, returned -1 ECONNRESET");
    let ev_eintrs = count("= -1 EINTR (INJECTED) -> inject EINTR, returned -1 EINTR");
    assert_eq!(ev_resets + ev_eintrs, injected.len() as i64);
    assert_eq!(
        (ev_resets, ev_eintrs),
        (resets, eintrs),
        "events = failures the program saw"
    );

    let head = line(&text, "errshim summary pid");
    assert_eq!(num(head, "events"), injected.len() as i64, "{head}");
    assert_eq!(num(head, "dropped_lines"), 0, "{head}");
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("errshim summary count="))
        .collect();
    let sum = |errno: &str| -> i64 {
        rows.iter()
            .filter(|l| word(l, "errno") == errno && word(l, "action") == "inject")
            .map(|l| num(l, "count"))
            .sum()
    };
    assert!(rows.iter().all(|l| word(l, "action") == "inject"), "{rows:#?}");
    assert_eq!((sum("ECONNRESET"), sum("EINTR")), (resets, eintrs), "{rows:#?}");
    let calls_seen: BTreeSet<&str> = rows.iter().map(|l| word(l, "call")).collect();
    assert_eq!(
        calls_seen,
        BTreeSet::from(["readv", "recv", "send", "writev"]),
        "{rows:#?}"
    );
    let rate = (resets + eintrs) as f64 / calls as f64;
    assert!((0.005..0.02).contains(&rate), "injection rate {rate} for p=0.01");
    eprintln!(
        "threads: {:?}; {calls} calls by 8 threads, {resets} ECONNRESET + {eintrs} EINTR injected and retried; \
         summary, log and program agree",
        start.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Data integrity under load
// ---------------------------------------------------------------------------------------------

/// A child process that is killed with its whole process group when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: signals the process group this test created for the child.
            unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        }
        let _ = self.0.wait();
    }
}

/// Injection events of a per-process log, by entry point.
fn injection_entries(text: &str) -> (usize, BTreeSet<String>) {
    let inj: Vec<&str> = events(text)
        .into_iter()
        .filter(|e| e.contains(" (INJECTED) -> inject short, returned "))
        .collect();
    let entries = inj
        .iter()
        .map(|e| {
            e.split(" comm=echo ")
                .nth(1)
                .and_then(|r| r.split('(').next())
                .unwrap_or("?")
                .to_string()
        })
        .collect();
    (inj.len(), entries)
}

/// A threaded echo server and 16 concurrent clients, each in its own process under errshim with
/// the default rules plus `*:short:fd=tcp:unfaithful`: every read and write family call on both
/// sides is cut to a random length, blocking writes too (which Linux cuts only on a signal: the
/// faithful cuts are tested in faults.rs and servers.rs). The clients move 100 MiB in total (`STRESS_ECHO_BYTES` sets another
/// size); each stream comes back intact: byte for byte against the generated stream, the
/// SHA-256 of what was received equals that of what was sent, the server echoed every byte.
#[test]
fn echo_under_load_every_stream_intact_with_short_transfers() {
    let total = scale("STRESS_ECHO_BYTES", 100 << 20);
    let clients = 16;
    let bin = program("echo");
    let sha = Cmd::new(&bin).args(["sha256", "abc"]).run();
    assert_eq!(
        sha.stdout.trim(),
        "sha256=ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "the fixture's SHA-256 is right"
    );
    let dir = TempDir::new("echo");
    let start = Instant::now();
    let mut cmd = Command::new(&bin);
    cmd.args(["server", &clients.to_string()]);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("ERRSHIM_") || k == "LD_PRELOAD" {
            cmd.env_remove(k);
        }
    }
    cmd.env("LD_PRELOAD", lib())
        .env("ERRSHIM_LOG_RATE", "0")
        .env("ERRSHIM_FAULTS", "*:short:fd=tcp:unfaithful")
        .env("ERRSHIM_SEED", "5")
        .env("ERRSHIM_LOG", dir.path("server-%p.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut server = Guard(cmd.spawn().expect("spawn echo server"));
    let stdout = server.0.stdout.take().unwrap();
    let stderr = server.0.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let err_reader = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let port_line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the server's port line");
    let port = port_line.strip_prefix("port=").expect("port=").to_string();

    let r = Cmd::new(&bin)
        .args(["clients", &port, &clients.to_string(), &total.to_string()])
        .shim()
        .env("ERRSHIM_FAULTS", "*:short:fd=tcp:unfaithful")
        .env("ERRSHIM_SEED", "6")
        .env("ERRSHIM_LOG", dir.path("clients-%p.log"))
        .timeout(Duration::from_secs(150))
        .run();
    r.assert_ok();
    let server_line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server's final line");
    let status = server.0.wait().expect("server exit");
    let server_err = err_reader.join().unwrap();
    assert!(status.success(), "server: {status:?}\n{server_err}");
    assert_eq!(
        server_line,
        format!("server conns={clients} bytes={total} bad=0"),
        "{server_err}"
    );

    let lines = r.out_lines("client ");
    assert_eq!(lines.len(), clients, "{}", r.describe());
    let mut hashes = BTreeSet::new();
    let mut moved = 0;
    for (i, l) in lines.iter().enumerate() {
        let want = total as i64 / clients as i64 + i64::from((i as u64) < total % clients as u64);
        assert_eq!((num(l, "sent"), num(l, "received")), (want, want), "{l}");
        assert_eq!(num(l, "first_mismatch"), -1, "a byte changed: {l}");
        assert_eq!(num(l, "bad"), 0, "{l}");
        assert_eq!(word(l, "sha_sent"), word(l, "sha_received"), "{l}");
        hashes.insert(word(l, "sha_received").to_string());
        moved += num(l, "received");
    }
    assert_eq!(hashes.len(), clients, "each client has its own stream");
    assert_eq!(moved, total as i64);

    // Both sides really were cut short, by every call of both families.
    let logs: Vec<(String, String)> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (p.file_name().unwrap().to_string_lossy().into_owned(), read(&p))
        })
        .collect();
    let side = |prefix: &str| {
        let texts: Vec<&(String, String)> = logs.iter().filter(|(n, _)| n.starts_with(prefix)).collect();
        assert_eq!(
            texts.len(),
            1,
            "one {prefix} log: {:?}",
            logs.iter().map(|l| &l.0).collect::<Vec<_>>()
        );
        let text = &texts[0].1;
        for e in events(text) {
            assert!(
                e.contains(" (INJECTED) -> inject short, returned ") || e.contains(" faults: 1 rule(s)"),
                "only injections: {e}"
            );
        }
        injection_entries(text)
    };
    let (n_server, server_calls) = side("server-");
    let (n_clients, client_calls) = side("clients-");
    assert_eq!(server_calls, BTreeSet::from(["read".to_string(), "write".to_string()]));
    let want: BTreeSet<String> = ["readv", "recv", "send", "writev"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(client_calls, want);
    eprintln!(
        "echo: {} MiB through 16 clients in {:?}, SHA-256 equal for every stream; {n_server} short transfers \
         injected in the server, {n_clients} in the clients",
        total >> 20,
        start.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Descriptor chaos
// ---------------------------------------------------------------------------------------------

const CHAOS_CYCLES: i64 = 2000;

/// Failing shutdowns fdchaos makes: one per cycle, one per low storm (every 10th cycle), one
/// per number of each high storm (every 25th cycle, 71 numbers).
fn chaos_shutdowns() -> i64 {
    let storms = |every: i64| (CHAOS_CYCLES + every - 1) / every;
    CHAOS_CYCLES + storms(10) + storms(25) * 71
}

/// Runs fdchaos; returns its result file and the run.
fn chaos(dir: &TempDir, tag: &str, mode: &str, shim: bool, log: Option<&Path>) -> (String, Run) {
    let res = dir.path(&format!("result-{tag}.txt"));
    let mut c = Cmd::new(program("fdchaos"))
        .arg_path(&res)
        .args([CHAOS_CYCLES.to_string(), mode.to_string()]);
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

/// What every fdchaos run must show: all its checks passed (storms, own descriptors, witness
/// socket, data file), every failing shutdown gave what the rules say, and no errshim byte in its
/// result file. Returns the descriptors open at the end that the program did not open, with what
/// they are.
fn check_chaos(text: &str, shim: bool) -> Vec<(i64, String)> {
    let sh = line(text, "shutdowns");
    assert_eq!(num(sh, "shutdowns"), chaos_shutdowns(), "{text}");
    let want = if shim { "ok" } else { "enotconn" };
    assert_eq!(num(sh, want), chaos_shutdowns(), "{text}");
    assert_eq!(num(sh, "other"), 0, "{text}");
    let bad = line(text, "storm_bad");
    for k in ["storm_bad", "own_close_bad", "witness_bad", "data_bad"] {
        assert_eq!(num(bad, k), 0, "{k}:\n{text}");
    }
    assert!(num(bad, "witness_records") > CHAOS_CYCLES && num(bad, "data_records") == CHAOS_CYCLES);
    assert!(
        !text.contains("errshim"),
        "errshim's bytes in the program's result file:\n{text}"
    );
    let foreign: Vec<&str> = text
        .lines()
        .filter(|l| *l == "foreign" || l.starts_with("foreign "))
        .collect();
    assert_eq!(foreign.len(), 1, "{text}");
    foreign[0]
        .split_whitespace()
        .skip(1)
        .map(|w| {
            let (fd, target) = w.split_once('=').unwrap();
            (fd.parse().unwrap(), target.to_string())
        })
        .collect()
}

/// The shutdown events of a log: exactly `n`, each naming the program's pid.
fn check_chaos_events(text: &str, n: i64, result: &str) {
    let pid = num(line(result, "pid"), "pid");
    let ev = events(text);
    assert_eq!(ev.len() as i64, n, "events");
    for e in ev {
        assert!(
            e.contains(&format!(" pid={pid} "))
                && e.contains(", SHUT_RDWR) = -1 ENOTCONN -> ignored, returned 0 | tcp4 ")
                && e.contains(" | cause=never_connected: no successful connect or accept was seen on this socket: it was never connected"),
            "{e}"
        );
    }
}

/// File log (`ERRSHIM_LOG`), with close_range(3, ~0) every 100 cycles, and each time the
/// program at once takes every high number itself (fcntl(F_DUPFD), then dup2 over half of
/// them): its close() of each succeeds and really closes (the socket's peer sees end of file).
/// Meanwhile dup2 storms over 0-2 and over the top 71 numbers. errshim opens the log file for
/// each line and closes it again, so none of this can touch it: the file gets every one of the
/// failing shutdowns' events, nothing reaches stderr, no errshim byte lands in the program's
/// witness socket, pipes, data or result files, and at the end no descriptor is open that the
/// program did not open. The same program without errshim passes the same checks (its
/// shutdowns fail with ENOTCONN).
#[test]
fn descriptor_chaos_log_file_survives_close_range_and_dup2_storms() {
    let dir = TempDir::new("fdchaos-file");
    let (bare, _) = chaos(&dir, "bare", "close_range", false, None);
    assert!(check_chaos(&bare, false).is_empty(), "{bare}");

    let logs = TempDir::new("fdchaos-logs");
    let template = logs.path("log-%p.txt");
    let (text, r) = chaos(&dir, "file", "close_range", true, Some(&template));
    assert_eq!(num(line(&text, "close_ranges"), "close_ranges"), CHAOS_CYCLES / 100);
    let foreign = check_chaos(&text, true);
    assert!(
        foreign.is_empty(),
        "descriptors the program did not open: {foreign:?}\n{text}"
    );
    let pid = num(line(&text, "pid"), "pid");
    let log_path = logs.path(&format!("log-{pid}.txt"));
    check_chaos_events(&read(&log_path), chaos_shutdowns(), &text);
    assert!(r.events().is_empty(), "{}", r.describe());
    eprintln!(
        "fdchaos (file): {} events, 20 close_range calls, {} dup2s onto high numbers",
        chaos_shutdowns(),
        (CHAOS_CYCLES + 24) / 25 * 71
    );
}

/// Log to stderr. The program closes every descriptor at the start and puts /dev/null on 0-2,
/// then dup2s its witness socket over 0-2 again and again: fd 2 is never again the stderr
/// errshim was loaded with, so no line is written anywhere (not into the witness socket, which
/// holds exactly the program's records), nothing reaches the test's stderr, and no descriptor
/// of errshim's is left open; the same with close_range storms.
#[test]
fn descriptor_chaos_stderr_log_storms_and_close_range() {
    let dir = TempDir::new("fdchaos-stderr");
    for mode in ["storm", "close_range"] {
        let (text, r) = chaos(&dir, mode, mode, true, None);
        let foreign = check_chaos(&text, true);
        assert!(foreign.is_empty(), "{mode}: {foreign:?}\n{text}");
        assert!(r.events().is_empty(), "{mode}: {}", r.describe());
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Connection churn
// ---------------------------------------------------------------------------------------------

/// (connection count, VmRSS kB, VmHWM kB) at each checkpoint of churn.
fn rss_points(out: &str) -> Vec<(i64, i64, i64)> {
    out.lines()
        .filter(|l| l.starts_with("rss "))
        .map(|l| (num(l, "at"), num(l, "vmrss_kb"), num(l, "vmhwm_kb")))
        .collect()
}

/// 100,000 short TCP connections (`STRESS_CHURN_CONNECTIONS`), each aborted by the client
/// (SO_LINGER 0), so the server end's shutdown fails with ENOTCONN: one event per connection
/// under the default rules, logged to a file. Without and with errshim (at the same time): the
/// log holds exactly one event per connection; errshim's peak RSS (VmHWM) stays within 16 MiB
/// of the bare program's, and it does not grow with the number of connections (from the first
/// tenth to the end, within 1 MiB of the bare program's growth).
#[test]
fn connection_churn_memory_stays_bounded() {
    let n = scale("STRESS_CHURN_CONNECTIONS", 100_000);
    let dir = TempDir::new("churn");
    let log = dir.path("events.log");
    let bin = program("churn");
    let start = Instant::now();
    let bare = {
        let bin = bin.clone();
        std::thread::spawn(move || {
            Cmd::new(bin)
                .args([n.to_string()])
                .timeout(Duration::from_secs(120))
                .run()
        })
    };
    let shim = Cmd::new(&bin)
        .args([n.to_string()])
        .shim()
        .env("ERRSHIM_LOG", &log)
        .timeout(Duration::from_secs(120))
        .run();
    let bare = bare.join().unwrap();
    bare.assert_ok();
    shim.assert_ok();
    let n = n as i64;
    for (r, failed, ok) in [(&bare, n, 0), (&shim, 0, n)] {
        let l = line(&r.stdout, "connections");
        assert_eq!(num(l, "connections"), n, "{l}");
        assert_eq!(
            (num(l, "shutdown_failed"), num(l, "shutdown_ok"), num(l, "bad")),
            (failed, ok, 0),
            "{l}"
        );
    }
    let file = std::fs::File::open(&log).unwrap();
    let mut count = 0i64;
    for l in BufReader::new(file).lines() {
        let l = l.unwrap();
        assert!(
            l.starts_with("errshim 2")
                && l.contains(", SHUT_WR) = -1 ENOTCONN -> ignored, returned 0 | tcp4 local=127.0.0.1:")
                && l.contains(" | cause=peer_reset: "),
            "{l}"
        );
        count += 1;
    }
    assert_eq!(count, n, "one event per connection");

    let (b, s) = (rss_points(&bare.stdout), rss_points(&shim.stdout));
    assert_eq!((b.len(), s.len()), (3, 3), "{}\n{}", bare.stdout, shim.stdout);
    let (b_hwm, s_hwm) = (b[2].2, s[2].2);
    let (b_growth, s_growth) = (b[2].2 - b[0].2, s[2].2 - s[0].2);
    eprintln!(
        "churn: {n} connections in {:?}; peak RSS (VmHWM) without errshim {b_hwm} kB, with errshim {s_hwm} kB \
         (+{} kB); growth from {} to {n} connections: {b_growth} kB without, {s_growth} kB with; {count} events",
        start.elapsed(),
        s_hwm - b_hwm,
        b[0].0
    );
    assert!(
        s_hwm <= b_hwm + 16 * 1024,
        "peak RSS {s_hwm} kB with errshim, {b_hwm} kB without"
    );
    assert!(
        s_growth <= b_growth + 1024,
        "RSS grows with connections: {s:?} vs {b:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Memory safety
// ---------------------------------------------------------------------------------------------

const VALGRIND: [&str; 4] = [
    "-q",
    "--error-exitcode=99",
    "--leak-check=full",
    "--errors-for-leak-kinds=definite",
];

/// Runs `prog args` under valgrind memcheck (with errshim preloaded into the program when
/// `shim`), with these variables.
fn memcheck(prog: &Path, args: &[&str], env: &[(&str, &str)], shim: bool, stdin: Option<&[u8]>) -> Run {
    let mut c = Cmd::new("valgrind")
        .args(VALGRIND)
        .arg_path(prog)
        .args(args)
        .timeout(Duration::from_secs(120));
    if shim {
        c = c.shim();
    }
    for (k, v) in env {
        c = c.env(k, v);
    }
    if let Some(data) = stdin {
        c = c.stdin(data);
    }
    c.run()
}

/// The fixtures of the test suite under valgrind memcheck with errshim loaded (valgrind passes
/// LD_PRELOAD on to the program): scenarios (every kernel recipe, default rules; and every
/// failure logged in JSON with the summary), context (every cause), faults in several modes
/// (probabilistic errors and short sends, a 2 MB stream cut short on both sides, the consume
/// checks, a real reset with backtraces, the control file re-read inside hooks), and small runs
/// of the stress fixtures (threads with faults and summary, signal storm, connection churn,
/// descriptor chaos with close_range). Each exits as it does without valgrind, with no invalid
/// read or write and no definite leak (valgrind's exit status would be 99). A program with a
/// real invalid read and leak shows that this command line does catch them.
#[test]
fn memcheck_fixtures_under_errshim() {
    if !require_tool("valgrind") {
        return;
    }
    let control = memcheck(&program("vg_bad"), &[], &[], false, None);
    assert_eq!(control.code, Some(99), "{}", control.describe());
    assert!(
        control.stderr.contains("Invalid read of size 1") && control.stderr.contains("definitely lost"),
        "{}",
        control.describe()
    );

    let dir = TempDir::new("memcheck");
    let ctl = dir.path("faults.ctl");
    std::fs::write(&ctl, "# on\nsend:EIO:p=0.5\n").unwrap();
    let ctl = ctl.display().to_string();
    let chaos_res = dir.path("chaos.txt").display().to_string();
    let chaos_log = dir.path("chaos-%p.log").display().to_string();
    let scenarios = [
        "never_connected",
        "fin",
        "reset",
        "reset_before_accept",
        "refused",
        "listener",
        "udp",
        "unix",
        "notsock",
    ];
    let contexts = [
        "never_connected",
        "fin",
        "reset",
        "reset_before_accept",
        "refused",
        "refused_nb",
        "syn_sent",
        "listener_torn",
        "listener_read",
        "udp",
        "reuse_fclose",
        "reuse_fclose_raw",
        "reuse_raw",
        "reuse_raw_noevent",
        "observe",
    ];
    let log_all = [
        ("ERRSHIM_RULES", "*:*:log:fd=any"),
        ("ERRSHIM_FORMAT", "json"),
        ("ERRSHIM_SUMMARY", "1"),
    ];
    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<&'a str>,
        Vec<(&'a str, &'a str)>,
        Option<&'a [u8]>,
    );
    let cases: Vec<Case> = vec![
        ("scenarios default rules", "scenarios", scenarios.to_vec(), vec![], None),
        (
            "scenarios log all, json, summary",
            "scenarios",
            scenarios.to_vec(),
            log_all.to_vec(),
            None,
        ),
        (
            "context log all",
            "context",
            contexts.to_vec(),
            vec![("ERRSHIM_RULES", "*:*:log:fd=any")],
            None,
        ),
        (
            "faults sends",
            "faults",
            vec!["sends", "60", "ut", "16"],
            vec![
                (
                    "ERRSHIM_FAULTS",
                    "send:EIO:p=0.3:unfaithful;send:short:p=0.3:unfaithful;recv:ECONNRESET:p=0.1:unfaithful",
                ),
                ("ERRSHIM_SUMMARY", "1"),
            ],
            None,
        ),
        (
            "faults stream short",
            "faults",
            vec!["stream", "2000000"],
            vec![("ERRSHIM_FAULTS", "*:short:fd=tcp"), ("ERRSHIM_SEED", "3")],
            None,
        ),
        (
            "faults consume",
            "faults",
            vec!["consume"],
            vec![(
                "ERRSHIM_FAULTS",
                "read:ECONNRESET:nth=1:unfaithful;recv:eof:nth=1:unfaithful;write:EPIPE:nth=3:unfaithful;shutdown:ENOTCONN:nth=1:unfaithful;close:EIO:nth=2:unfaithful",
            )],
            None,
        ),
        (
            "faults reset, backtraces",
            "faults",
            vec!["reset"],
            vec![("ERRSHIM_FAULTS", "send:reset:nth=1"), ("ERRSHIM_BACKTRACE", "1")],
            None,
        ),
        (
            "faults control file",
            "faults",
            vec!["control"],
            // The control file injects nothing here: at info level the fault mode says so at
            // startup, which shows that errshim was loaded.
            vec![("ERRSHIM_CONTROL", ctl.as_str()), ("ERRSHIM_LOG_LEVEL", "info")],
            Some(b"probe\nprobe\nprobe\nquit\n"),
        ),
        (
            "threads",
            "threads",
            vec!["4", "1000"],
            vec![
                (
                    "ERRSHIM_FAULTS",
                    "send,recv:ECONNRESET:p=0.01:unfaithful;writev,readv:EINTR:p=0.01:fd=tcp:unfaithful",
                ),
                ("ERRSHIM_SUMMARY", "1"),
            ],
            None,
        ),
        (
            "sigstorm",
            "sigstorm",
            vec!["200", "400", "20"],
            vec![(
                "ERRSHIM_RULES",
                "close,shutdown:ENOTCONN:ignore;write:EAGAIN:log:fd=any;*:*:log",
            )],
            None,
        ),
        ("churn", "churn", vec!["2000"], vec![], None),
        (
            "fdchaos close_range",
            "fdchaos",
            vec![chaos_res.as_str(), "300", "close_range"],
            vec![("ERRSHIM_LOG", chaos_log.as_str())],
            None,
        ),
    ];
    let start = Instant::now();
    for (what, prog, args, env, stdin) in &cases {
        let bin = program(prog);
        let plain = {
            let mut c = Cmd::new(&bin).args(args).shim();
            for (k, v) in env {
                c = c.env(k, v);
            }
            if let Some(data) = stdin {
                c = c.stdin(data);
            }
            c.run()
        };
        let r = memcheck(&bin, args, env, true, *stdin);
        assert_eq!(
            r.code,
            plain.code,
            "{what}: exit status under valgrind\n{}",
            r.describe()
        );
        for bad in [
            "Invalid read",
            "Invalid write",
            "Invalid free",
            "uninitialised",
            "definitely lost in",
        ] {
            assert!(!r.stderr.contains(bad), "{what}: {bad}\n{}", r.describe());
        }
        if !env.iter().any(|(k, _)| *k == "ERRSHIM_LOG") {
            assert!(
                r.stderr
                    .lines()
                    .any(|l| l.starts_with("errshim ") || l.starts_with("{\"")),
                "{what}: errshim was loaded and logged\n{}",
                r.describe()
            );
        }
    }
    eprintln!(
        "memcheck: {} fixture runs clean under valgrind with errshim in {:?}",
        cases.len(),
        start.elapsed()
    );
}
