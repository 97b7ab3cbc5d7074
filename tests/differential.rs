//! Differential test against the kernel: a preloaded errshim must be invisible to the program
//! except where a rule says otherwise: same return values, same errno, same bytes, same
//! descriptors, same signals, same exit status.
//!
//! `tests/fixtures/difftest.c` runs random but reproducible sequences of every interposed call
//! (read, write, readv, writev, recv, send, recvfrom, sendto, recvmsg, sendmsg, the `__*_chk`
//! entry points, shutdown, close, socket, socketpair, accept, accept4, connect, listen, dup,
//! dup2, dup3, fcntl(F_DUPFD*), fdopen+fclose, close_range, closefrom and raw `syscall()`
//! closes and dups) with valid and invalid arguments on a pool of descriptors of every kind, and
//! prints one observation line per call (result, errno against a sentinel set before the call,
//! SIGPIPEs, digests of every buffer the kernel may write). A sequence depends only on the seed
//! and its index. The test runs the driver without errshim twice (the outputs must be
//! identical: the driver is deterministic), then with errshim preloaded in each configuration
//! below, and compares with the baseline exactly, or, for the default rules, with the baseline
//! transformed as the rule says (a failing `shutdown`/`close` of a socket with ENOTCONN returns
//! 0 with errno as it was before the call). Each configuration is its own test, so they run in
//! parallel.
//!
//! The configurations (one test each):
//! - `ERRSHIM_RULES=` (no rules: pure pass-through): identical;
//! - no ERRSHIM_* variable (the default rule `close,shutdown:ENOTCONN:ignore`): the transformed
//!   baseline;
//! - `ERRSHIM_RULES='*:*:log:fd=any'` (every failure logged): identical;
//! - `ERRSHIM_FAULTS='*:EIO:nth=1000000000000'` (a fault rule consulted on every call that never
//!   fires) and `ERRSHIM_COUNT=1`, each with the default rules: the transformed baseline;
//! - `*:*:log:fd=any` with the log going to a full pipe nobody reads, to a FIFO nobody opens
//!   (`ERRSHIM_LOG`), to a pipe whose reader is gone (EPIPE: the program must see no SIGPIPE),
//!   and with the program started with stderr closed: identical, and the run must finish (the
//!   driver gives each batch of sequences an alarm and stops after two hung batches).
//!
//! On a mismatch the test prints the configuration, the seed, how many sequences differ and
//! where they first differ (grouped by call, crashes apart), the first differing sequence from
//! both runs and the command lines that replay it. A batch that crashes (`B.. sig=11 at=..`)
//! goes on in a new process after the sequence that died, so one bug does not hide the others.
//!
//! Left out because the kernel itself does not give the same answer twice (see difftest.c):
//! on TCP, a write whose buffer turns invalid part-way on an established connection, and a read
//! into such a buffer while more is queued than fits before the bad byte, print `=skip` (how
//! many bytes get through depends on page-fragment allocation); ports are masked; descriptor
//! numbers near the descriptor limit are not used.
//!
//! Environment (for a dedicated longer run, e.g.
//! `DIFF_SEQUENCES=2000000 DIFF_SEED=$RANDOM cargo test --release --test differential`):
//! - `DIFF_SEQUENCES`: sequences per configuration (default 100000);
//! - `DIFF_SEED`: the seed (default 20261121);
//! - `DIFF_MAXLEN`: at most this many calls per sequence (default 8).
//!
//! `ERRSHIM_TEST_LIB=/path/liberrshim.so` runs it against another build (tests/common).

mod common;
use common::*;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const DEFAULT_SEQUENCES: u64 = 100_000;
const DEFAULT_SEED: u64 = 20261121;
const DEFAULT_MAXLEN: u32 = 8;
/// Sequences per batch process in the driver (`BATCH` in difftest.c).
const BATCH: u64 = 100;
/// Every failure of every hooked call logged: the most events, results unchanged.
const LOG_ALL: &str = "*:*:log:fd=any";

struct Params {
    seed: u64,
    count: u64,
    maxlen: u32,
}

fn params() -> &'static Params {
    static P: OnceLock<Params> = OnceLock::new();
    P.get_or_init(|| {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
            match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => v
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={v} is not a whole number")),
                _ => default,
            }
        }
        Params {
            seed: var("DIFF_SEED", DEFAULT_SEED),
            count: var("DIFF_SEQUENCES", DEFAULT_SEQUENCES),
            maxlen: var("DIFF_MAXLEN", DEFAULT_MAXLEN),
        }
    })
}

fn driver() -> PathBuf {
    program("difftest")
}

fn driver_args() -> Vec<String> {
    let p = params();
    vec![
        p.seed.to_string(),
        "0".into(),
        p.count.to_string(),
        p.maxlen.to_string(),
    ]
}

/// Generous: a run that takes this long is hung, not slow.
fn timeout() -> Duration {
    Duration::from_secs(300 + params().count.saturating_mul(600) / 100_000)
}

/// One run of the driver.
struct Outcome {
    status: String,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

fn outcome(run: Run, start: Instant) -> Outcome {
    let status = match (run.code, run.signal) {
        (Some(c), _) => format!("exit={c}"),
        (None, Some(s)) => format!("signal={s}"),
        _ => "unknown".into(),
    };
    Outcome {
        status,
        stdout: run.stdout,
        stderr: run.stderr,
        elapsed: start.elapsed(),
    }
}

/// The driver through the harness, with or without errshim, with these ERRSHIM_* variables.
fn run_cmd(shim: bool, env: &[(&str, &str)]) -> Outcome {
    let start = Instant::now();
    let mut c = Cmd::new(driver()).args(driver_args()).timeout(timeout());
    if shim {
        c = c.shim();
    }
    for (k, v) in env {
        c = c.env(k, v);
    }
    outcome(c.run(), start)
}

/// The driver with errshim preloaded where the harness cannot go: stderr is `stderr`, and with
/// `close_stderr` descriptor 2 is closed before exec. Same care as `Cmd`: no inherited ERRSHIM_*
/// or LD_PRELOAD, its own process group, killed on timeout.
fn run_custom(env: &[(&str, &str)], stderr: Stdio, close_stderr: bool) -> Outcome {
    let start = Instant::now();
    let mut cmd = clean_command(driver());
    cmd.env("LD_PRELOAD", lib());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(driver_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    cmd.process_group(0);
    if close_stderr {
        // SAFETY: only close(2), which is async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::close(2);
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().expect("spawn difftest");
    drop(cmd); // the parent's copy of the stderr descriptor, if any, goes now
    let mut so = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let limit = timeout();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if start.elapsed() > limit {
            // SAFETY: signals the process group made for this child.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            let out = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
            let tail: Vec<&str> = out.lines().rev().take(20).collect();
            panic!(
                "difftest timed out after {limit:?} (hung?); last lines of its output:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    let status = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit={c}"),
        (None, Some(s)) => format!("signal={s}"),
        _ => "unknown".into(),
    };
    Outcome {
        status,
        stdout,
        stderr: String::new(),
        elapsed: start.elapsed(),
    }
}

/// What a line belongs to: a sequence (its call lines and its S/E lines) or a batch.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Key {
    Seq(u64),
    Batch(u64),
    Other,
}

fn key_of(line: &str) -> Key {
    let digits = |s: &str| -> Option<u64> {
        let n: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
        n.parse().ok()
    };
    if let Some(rest) = line.strip_prefix('S').or_else(|| line.strip_prefix('E')) {
        return digits(rest).map_or(Key::Other, Key::Seq);
    }
    if let Some(rest) = line.strip_prefix('B') {
        return digits(rest).map_or(Key::Other, Key::Batch);
    }
    if line.starts_with(|c: char| c.is_ascii_digit()) {
        return digits(line).map_or(Key::Other, Key::Seq);
    }
    Key::Other
}

fn group(text: &str) -> BTreeMap<Key, Vec<&str>> {
    let mut m: BTreeMap<Key, Vec<&str>> = BTreeMap::new();
    for l in text.lines() {
        m.entry(key_of(l)).or_default().push(l);
    }
    m
}

fn show(lines: Option<&Vec<&str>>, limit: usize) -> String {
    match lines {
        None => "    (nothing: the sequence did not run, or its output was lost)\n".into(),
        Some(v) => {
            let mut s: String = v.iter().take(limit).map(|l| format!("    {l}\n")).collect();
            if v.len() > limit {
                s += &format!("    ... {} more lines\n", v.len() - limit);
            }
            s
        }
    }
}

/// Why `got` is not `expected`, for a human: the first differing sequence with both versions,
/// how many differ, and how to replay it. `None` when they are identical.
fn difference(config: &str, env: &[(&str, &str)], note: &str, expected: &str, got: &Outcome) -> Option<String> {
    if got.stdout == expected && got.status == "exit=0" {
        return None;
    }
    let env_desc = env_desc(env, note);
    let p = params();
    let mut r = format!(
        "configuration `{config}` ({env_desc}) differs from the expected output\n\
         seed={} sequences={} maxlen={}; driver status {} after {:.1}s\n",
        p.seed,
        p.count,
        p.maxlen,
        got.status,
        got.elapsed.as_secs_f64()
    );
    let (e, g) = (group(expected), group(&got.stdout));
    let keys: std::collections::BTreeSet<Key> = e.keys().chain(g.keys()).copied().collect();
    let differing: Vec<Key> = keys.into_iter().filter(|k| e.get(k) != g.get(k)).collect();
    let seqs = differing.iter().filter(|k| matches!(k, Key::Seq(_))).count();
    let batches: Vec<String> = differing
        .iter()
        .filter(|k| matches!(k, Key::Batch(_)))
        .filter_map(|k| g.get(k).and_then(|v| v.first()).map(|l| l.to_string()))
        .collect();
    r += &format!(
        "{seqs} of {} sequences differ; {} batch line(s) differ",
        p.count,
        batches.len()
    );
    if !batches.is_empty() {
        let shown: Vec<&str> = batches.iter().take(5).map(String::as_str).collect();
        r += &format!(
            " (errshim: {}{})",
            shown.join(", "),
            if batches.len() > 5 { ", ..." } else { "" }
        );
    }
    r += "\n";
    r += &kinds_of_difference(&e, &g, &differing);
    // The first differing line decides which sequence to show.
    let (el, gl): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), got.stdout.lines().collect());
    let i = el
        .iter()
        .zip(gl.iter())
        .position(|(a, b)| a != b)
        .unwrap_or(el.len().min(gl.len()));
    let at = el.get(i).or(gl.get(i)).copied().unwrap_or("");
    r += &format!(
        "first difference at line {}:\n    expected: {}\n    errshim:  {}\n",
        i + 1,
        el.get(i).copied().unwrap_or("(end of output)"),
        gl.get(i).copied().unwrap_or("(end of output)")
    );
    let k = match key_of(at) {
        Key::Seq(s) => Some(s),
        // A batch line: its first sequence that differs, else the batch's first.
        Key::Batch(b) => differing
            .iter()
            .find_map(|k| match k {
                Key::Seq(s) if *s >= b && *s < b + BATCH => Some(*s),
                _ => None,
            })
            .or(Some(b)),
        Key::Other => None,
    };
    if let Some(s) = k {
        r += &format!(
            "--- sequence {s}, expected ---\n{}--- sequence {s}, with errshim ---\n{}",
            show(e.get(&Key::Seq(s)), 40),
            show(g.get(&Key::Seq(s)), 40)
        );
        let b = s / BATCH * BATCH;
        let bl = |m: &BTreeMap<Key, Vec<&str>>| {
            m.get(&Key::Batch(b))
                .and_then(|v| v.first())
                .copied()
                .unwrap_or("(none)")
                .to_string()
        };
        r += &format!("its batch: expected `{}`, errshim `{}`\n", bl(&e), bl(&g));
        let vars: String = env.iter().map(|(k, v)| format!("{k}='{v}' ")).collect();
        let cmd = format!("{vars}LD_PRELOAD={} {} {}", lib().display(), driver().display(), p.seed);
        r += &format!(
            "replay alone:     {cmd} {s} 1 {}\nreplay its batch: {cmd} {b} {BATCH} {}{}\n",
            p.maxlen,
            p.maxlen,
            if note.is_empty() {
                String::new()
            } else {
                format!("   ({note})")
            }
        );
    }
    if !got.stderr.is_empty() {
        let tail: Vec<&str> = got.stderr.lines().rev().take(8).collect();
        r += &format!(
            "stderr (last lines):\n{}\n",
            tail.into_iter()
                .rev()
                .map(|l| format!("    {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Some(r)
}

/// The differing sequences sorted by where they first differ (the call, and the signal when a
/// call crashed), most frequent first, with an example of each: one bug that kills many
/// batches must not hide the others.
fn kinds_of_difference(e: &BTreeMap<Key, Vec<&str>>, g: &BTreeMap<Key, Vec<&str>>, differing: &[Key]) -> String {
    let mut kinds: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for k in differing.iter().filter(|k| matches!(k, Key::Seq(_))) {
        let (ev, gv) = (
            e.get(k).map_or(&[][..], |v| &v[..]),
            g.get(k).map_or(&[][..], |v| &v[..]),
        );
        let i = ev
            .iter()
            .zip(gv.iter())
            .position(|(a, b)| a != b)
            .unwrap_or(ev.len().min(gv.len()));
        let (label, example) = match (gv.get(i), ev.get(i)) {
            (None, _) if gv.is_empty() => ("did not run (its batch died before it)".to_string(), String::new()),
            (None, Some(x)) => ("output ends early".to_string(), format!("expected: {x}")),
            (Some(l), _) => {
                let call = l.split(' ').nth(1).unwrap_or("");
                let what = if let Some(at) = l.find(" !sig") {
                    format!("{call} crashed ({})", &l[at + 2..])
                } else if l.starts_with('E') {
                    "descriptor table at the end".to_string()
                } else if l.starts_with('S') {
                    format!("sequence status ({})", l.split(' ').nth(1).unwrap_or(""))
                } else {
                    format!("{call} result")
                };
                (what, format!("errshim: {l}"))
            }
            (None, None) => ("differs".to_string(), String::new()),
        };
        let ent = kinds.entry(label).or_insert((0, example));
        ent.0 += 1;
    }
    let mut v: Vec<(String, (usize, String))> = kinds.into_iter().collect();
    v.sort_by_key(|b| std::cmp::Reverse(b.1 .0));
    let mut r = String::from("where the differing sequences first differ:\n");
    for (label, (n, ex)) in v.iter().take(12) {
        r += &format!(
            "  {n:>7} x {label}{}\n",
            if ex.is_empty() {
                String::new()
            } else {
                format!("   e.g. {ex}")
            }
        );
    }
    r
}

/// The baseline: the driver without errshim, twice, identical.
fn baseline() -> &'static str {
    static B: OnceLock<Result<String, String>> = OnceLock::new();
    let r = B.get_or_init(|| {
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| run_cmd(false, &[]));
            let b = s.spawn(|| run_cmd(false, &[]));
            (a.join(), b.join())
        });
        let (a, b) = match (a, b) {
            (Ok(a), Ok(b)) => (a, b),
            _ => return Err("a baseline run failed (see its panic above)".into()),
        };
        eprintln!(
            "differential: baseline {} sequences: {:.1}s and {:.1}s",
            params().count,
            a.elapsed.as_secs_f64(),
            b.elapsed.as_secs_f64()
        );
        if a.status != "exit=0" || !a.stdout.ends_with("done\n") {
            return Err(format!("the baseline run failed: {}\n{}", a.status, a.stderr));
        }
        if let Some(d) = difference("baseline twice", &[], "no preload", &a.stdout, &b) {
            return Err(format!("the driver is not deterministic without errshim:\n{d}"));
        }
        Ok(a.stdout)
    });
    match r {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

const SOCKET_KINDS: [&str; 8] = ["tcp4", "tcp6", "udp4", "udp6", "ustream", "udgram", "useq", "sock"];

/// The baseline as the default rule `close,shutdown:ENOTCONN:ignore` makes it: a close() or
/// shutdown() of a socket that failed with ENOTCONN returns 0, with errno left at the sentinel
/// the driver set before the call. Nothing else changes.
fn with_default_rules(base: &str) -> String {
    let mut out = String::with_capacity(base.len());
    for line in base.lines() {
        out += &default_rule_line(line);
        out.push('\n');
    }
    out
}

fn default_rule_line(line: &str) -> String {
    let mut t = line.split(' ');
    let (_id, call, fd) = (t.next(), t.next(), t.next().unwrap_or(""));
    let kind = fd.split_once(':').map_or("", |(_, k)| k);
    if !matches!(call, Some("close") | Some("shutdown")) || !SOCKET_KINDS.contains(&kind) {
        return line.to_string();
    }
    let pat = format!(" =-1 e{} s", libc::ENOTCONN);
    let Some(at) = line.find(&pat) else {
        return line.to_string();
    };
    let rest = &line[at + pat.len()..];
    let sentinel: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    format!("{} =0 e{sentinel} s{sentinel}{}", &line[..at], &rest[sentinel.len()..])
}

fn check(config: &str, env: &[(&str, &str)], note: &str, expected: &str, got: Outcome) {
    eprintln!(
        "differential: {config}: {} sequences in {:.1}s ({})",
        params().count,
        got.elapsed.as_secs_f64(),
        got.status
    );
    if let Some(d) = difference(config, env, note, expected, &got) {
        panic!("{d}");
    }
}

fn env_desc(env: &[(&str, &str)], note: &str) -> String {
    let mut d: Vec<String> = env.iter().map(|(k, v)| format!("{k}='{v}'")).collect();
    if d.is_empty() {
        d.push("no ERRSHIM_* variable".into());
    }
    if !note.is_empty() {
        d.push(note.into());
    }
    d.join(" ")
}

/// The run first, then the baseline: the runs of the other tests overlap with the baseline's.
fn check_cmd(config: &str, env: &[(&str, &str)], default_rules: bool) {
    let got = run_cmd(true, env);
    let base = baseline();
    let expected = if default_rules {
        with_default_rules(base)
    } else {
        base.to_string()
    };
    check(config, env, "", &expected, got);
}

#[test]
fn baseline_is_deterministic() {
    let b = baseline();
    assert!(b.lines().filter(|l| l.starts_with('E')).count() as u64 > params().count * 9 / 10);
}

#[test]
fn default_rule_transformation() {
    let s = libc::ENOTCONN;
    assert_eq!(
        default_rule_line(&format!("7.2 shutdown 9:tcp4 WR =-1 e{s} s84 p1")),
        "7.2 shutdown 9:tcp4 WR =0 e84 s84 p1"
    );
    assert_eq!(
        default_rule_line(&format!("7.2 close 9:ustream =-1 e{s} s0")),
        "7.2 close 9:ustream =0 e0 s0"
    );
    for same in [
        format!("7.2 shutdown 9:pipe WR =-1 e{s} s84"),
        format!("7.2 shutdown 9:tcp4 WR =-1 e9 s{s}"),
        format!("7.2 recv 9:tcp4 buf 1 0 =-1 e{s} s0"),
        format!("7.2 sys_close 9:tcp4 =-1 e{s} s0"),
        "E7 fds=tt cx=- bl=- io=bbb".to_string(),
    ] {
        assert_eq!(default_rule_line(&same), same);
    }
}

/// `ERRSHIM_RULES=` (set but empty): pure pass-through.
#[test]
fn rules_empty_is_pure_pass_through() {
    check_cmd("rules empty", &[("ERRSHIM_RULES", "")], false);
}

/// No ERRSHIM_* variable: only the default rule's effect.
#[test]
fn default_rules_only_suppress_enotconn() {
    check_cmd("default rules", &[], true);
}

/// Every failure logged, results unchanged.
#[test]
fn logging_every_failure_changes_nothing() {
    check_cmd("log everything", &[("ERRSHIM_RULES", LOG_ALL)], false);
}

/// A fault rule consulted on every call that never fires (with the default rules).
#[test]
fn fault_rule_that_never_fires_changes_nothing() {
    check_cmd(
        "fault rule never firing",
        &[("ERRSHIM_FAULTS", "*:EIO:nth=1000000000000")],
        true,
    );
}

/// Per-call byte counting (with the default rules).
#[test]
fn byte_counting_changes_nothing() {
    check_cmd("ERRSHIM_COUNT=1", &[("ERRSHIM_COUNT", "1")], true);
}

/// A pipe made as small as the kernel allows, then filled until a write would block.
fn full_pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: plain system calls on descriptors this function creates and owns.
    unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK), 0);
        let (r, w) = (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]));
        libc::fcntl(fds[1], libc::F_SETPIPE_SZ, 4096);
        let chunk = [b'x'; 4096];
        for len in [4096usize, 1] {
            while libc::write(fds[1], chunk.as_ptr().cast(), len) > 0 {}
        }
        assert_eq!(*libc::__errno_location(), libc::EAGAIN, "filling the pipe");
        // The child's stderr blocks like any stderr: only errshim can keep from blocking.
        libc::fcntl(fds[1], libc::F_SETFL, 0);
        (r, w)
    }
}

/// Log to a full pipe that nobody reads: errshim must never block to log.
#[test]
fn log_to_full_stderr_pipe_never_blocks() {
    let (_read_end, write_end) = full_pipe();
    let env = [("ERRSHIM_RULES", LOG_ALL)];
    let got = run_custom(&env, Stdio::from(write_end), false);
    check(
        "log to a full stderr pipe",
        &env,
        "stderr: a full pipe",
        baseline(),
        got,
    );
}

/// Log to a FIFO that nobody opens for reading: errshim must never block to log.
#[test]
fn log_to_fifo_without_reader_never_blocks() {
    let dir = TempDir::new("difftest-fifo");
    let fifo = dir.path("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) },
        0,
        "mkfifo {}",
        fifo.display()
    );
    let log = fifo.to_str().unwrap();
    let env = [("ERRSHIM_RULES", LOG_ALL), ("ERRSHIM_LOG", log)];
    let got = run_cmd(true, &env);
    check("log to a FIFO without reader", &env, "", baseline(), got);
}

/// Started with stderr closed (the driver reopens 0-2 on /dev/null if closed, as daemons do).
#[test]
fn closed_stderr_changes_nothing() {
    let env = [("ERRSHIM_RULES", LOG_ALL)];
    let got = run_custom(&env, Stdio::null(), true);
    check("closed stderr", &env, "started with fd 2 closed", baseline(), got);
}

/// Log to a pipe whose reader is gone: errshim's writes fail with EPIPE, and the program must
/// never see the SIGPIPE (the driver counts SIGPIPEs per call, or dies of them at SIG_DFL).
#[test]
fn log_to_broken_stderr_pipe_changes_nothing() {
    let mut fds = [0; 2];
    // SAFETY: pipe2 into a local array; both ends are owned right away.
    let (read_end, write_end) = unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    };
    drop(read_end);
    let env = [("ERRSHIM_RULES", LOG_ALL)];
    let got = run_custom(&env, Stdio::from(write_end), false);
    check(
        "log to a broken stderr pipe",
        &env,
        "stderr: a pipe without reader",
        baseline(),
        got,
    );
}
