//! Hosts that do unusual but legal things: errshim must never crash, hang, kill, leak or lie in
//! them. One test per way it once did (each of these failed on the release build 90efbb6:
//! `ERRSHIM_TEST_LIB=<that build's liberrshim.so> cargo test --test hostile` shows it), each
//! comparing the program with and without errshim. The fixture is `tests/fixtures/hostile.c`;
//! its output is read through a `syscall` instruction of its own, which no preload sees.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const EILSEQ: i32 = libc::EILSEQ;
const EFAULT: i32 = libc::EFAULT;

fn hostile() -> PathBuf {
    program("hostile")
}

/// The "<mode> <step> ret=<r> errno=<n>" lines of a run, by step.
fn results(r: &Run) -> BTreeMap<String, (i64, i32)> {
    r.stdout
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (_, step) = (w.next()?, w.next()?);
            let ret = l
                .split_whitespace()
                .find_map(|t| t.strip_prefix("ret="))?
                .parse()
                .ok()?;
            let errno = l
                .split_whitespace()
                .find_map(|t| t.strip_prefix("errno="))?
                .parse()
                .ok()?;
            Some((step.to_string(), (ret, errno)))
        })
        .collect()
}

/// The JSON event lines of a run's stderr, parsed.
fn json_events(r: &Run) -> Vec<serde_json::Value> {
    r.stderr
        .lines()
        .filter(|l| l.starts_with("{\"ts\""))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn value<'a>(line: &'a str, key: &str) -> &'a str {
    let k = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(k.as_str()))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

fn run(args: &[&str], shim: bool, env: &[(&str, &str)]) -> Run {
    let mut c = Cmd::new(hostile()).args(args).timeout(Duration::from_secs(30));
    if shim {
        c = c.shim();
    }
    for (k, v) in env {
        c = c.env(k, v);
    }
    c.run()
}

/// Runs `args` without errshim and then under each configuration: the program must live
/// (exit 0, no signal) and see exactly what it saw without errshim, but for `expect`'s
/// changes. Returns the runs with errshim.
fn same_as_kernel(args: &[&str], configs: &[&[(&str, &str)]]) -> Vec<Run> {
    let bare = run(args, false, &[]);
    bare.assert_ok();
    let want = results(&bare);
    assert!(!want.is_empty(), "{}", bare.describe());
    configs
        .iter()
        .map(|env| {
            let r = run(args, true, env);
            let what = format!("{args:?} with {env:?}\n{}", r.describe());
            assert_eq!((r.code, r.signal), (Some(0), None), "the program died: {what}");
            assert_eq!(results(&r), want, "the program saw something else: {what}");
            r
        })
        .collect()
}

/// Configurations in which errshim changes no result for these calls.
const PASS_THROUGH: &[&[(&str, &str)]] = &[
    &[("ERRSHIM_RULES", "")],
    &[("ERRSHIM_RULES", "*:*:log:fd=any")],
    &[("ERRSHIM_RULES", "*:*:log:fd=any"), ("ERRSHIM_FORMAT", "json")],
    &[
        ("ERRSHIM_RULES", ""),
        ("ERRSHIM_FAULTS", "*:short;*:EIO:nth=1000000000000:fd=any"),
    ],
    &[("ERRSHIM_COUNT", "1"), ("ERRSHIM_RULES", "*:*:log:fd=any")],
];

/// Item 1: `sendmsg`/`recvmsg` with a msghdr pointer the kernel answers EFAULT for (unmapped,
/// an inaccessible page, a header that runs into one, a kernel address), and a valid header
/// with an invalid iovec pointer: -1 EFAULT as without errshim, never SIGSEGV, with every
/// rule set, logging, and a fault rule that reads the header before the call. The events say
/// the length is unknown rather than read it.
#[test]
fn invalid_msghdr_pointers_get_efault() {
    let runs = same_as_kernel(&["badmsg"], PASS_THROUGH);
    let bare = results(&run(&["badmsg"], false, &[]));
    assert_eq!(bare["sendmsg_guard"], (-1, EFAULT));
    assert_eq!(bare["recvmsg_nc_low"], (-1, EFAULT));
    let logged: Vec<&str> = runs[1].events();
    assert!(
        logged.iter().any(|e| e.contains("recvmsg(fd=") && e.contains("len=?")),
        "{logged:#?}"
    );
}

/// Item 2: `readv`/`writev` with an invalid iovec pointer, under rules that log every failure
/// (whose events sum the iovecs): EFAULT or the socket's own errno, as without errshim.
#[test]
fn invalid_iovec_pointers_are_never_read() {
    let runs = same_as_kernel(&["badiov"], PASS_THROUGH);
    let ev = runs[1].events();
    assert!(
        ev.iter().any(|e| e.contains("readv(fd=") && e.contains("len=?")),
        "{ev:#?}"
    );
}

/// Item 3: `connect` with an invalid address pointer (EFAULT) or a length beyond any address
/// (EINVAL): errshim reads the address only where the kernel has just read it.
#[test]
fn connect_with_invalid_address_pointers() {
    let default: &[(&str, &str)] = &[];
    let mut configs = PASS_THROUGH.to_vec();
    configs.push(default);
    // The default rule changes the never-connected shutdowns: compare those separately.
    let bare = results(&run(&["badconnect"], false, &[]));
    assert_eq!(bare["connect_guard"], (-1, EFAULT));
    assert_eq!(bare["connect_long"], (-1, libc::EINVAL));
    for env in configs {
        let r = run(&["badconnect"], true, env);
        assert_eq!((r.code, r.signal), (Some(0), None), "{env:?}: {}", r.describe());
        for (step, got) in results(&r) {
            let want = bare[&step];
            if step.starts_with("shutdown") && env.is_empty() {
                assert_eq!(got, (0, EILSEQ), "{step}: the default rule");
            } else {
                assert_eq!(got, want, "{step} {env:?}");
            }
        }
    }
}

/// Item 4: `accept`/`accept4` with an address buffer shorter than the peer's address, at the
/// very end of a page followed by an inaccessible one. The kernel writes what fits and sets
/// `*addrlen` to the full length; errshim reads no more than both allow, so it neither faults
/// nor takes bytes from past the buffer for the peer (an IPv6 peer into a sockaddr_in).
#[test]
fn accept_into_a_short_address_buffer() {
    for v in ["4", "6"] {
        let bare = run(&["shortaccept", v], false, &[]);
        bare.assert_ok();
        let r = run(&["shortaccept", v], true, &[("ERRSHIM_FORMAT", "json")]);
        assert_eq!((r.code, r.signal), (Some(0), None), "IPv{v}: {}", r.describe());
        assert_eq!(results(&r)["shutdown"], (0, EILSEQ), "IPv{v}: {}", r.describe());
        let accepts: Vec<&str> = r.out_lines("shortaccept accept");
        let bare_accepts: Vec<&str> = bare.out_lines("shortaccept accept");
        assert_eq!(accepts, bare_accepts, "what accept returned");
        let ev = json_events(&r);
        assert_eq!(ev.len(), 2, "{}", r.describe());
        for e in ev {
            let peer = e["peer"].as_str().unwrap_or("?").to_string();
            assert!(
                !peer.contains("eeee") && !peer.contains("238."),
                "bytes from past the buffer: {peer}"
            );
            // Nothing but the truth: the peer is unknown, or the loopback address it was.
            assert!(
                peer == "?" || peer.starts_with("127.0.0.1:") || peer.starts_with("[::1]:"),
                "IPv{v}: {e}"
            );
        }
    }
}

/// Item 5: `ERRSHIM_LOG` names a FIFO that nobody reads: every line is dropped at once (a
/// non-blocking open fails with ENXIO), the program never waits.
#[test]
fn log_to_a_fifo_without_a_reader_never_blocks() {
    let dir = TempDir::new("fifo");
    let fifo = dir.path("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let start = Instant::now();
    let r = run(
        &["events", "500"],
        true,
        &[("ERRSHIM_LOG", fifo.to_str().unwrap()), ("ERRSHIM_SUMMARY", "1")],
    );
    r.assert_ok();
    assert!(r.stdout.contains("events done n=500"), "{}", r.describe());
    assert!(start.elapsed() < Duration::from_secs(20));
    assert!(r.events().is_empty());
    // What could not be written is counted, and said once at exit on stderr.
    let said: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("could not be written"))
        .collect();
    assert_eq!(said.len(), 1, "{}", r.stderr);
    let n: u64 = said[0].split_whitespace().find_map(|w| w.parse().ok()).unwrap();
    assert!(n >= 500, "{}", said[0]);
}

/// A pipe as stderr that nobody reads, filled before the program starts: every event line is
/// dropped, the program runs to its end. Returns the run and what the pipe held.
fn run_with_full_stderr(args: &[&str], env: &[(&str, &str)]) -> (Run, usize) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut p = [0i32; 2];
    // SAFETY: p holds two descriptors.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both are ours from here on.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
    // SAFETY: shrink it to a page and fill it, without blocking.
    unsafe {
        libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, 4096);
        let fl = libc::fcntl(wr.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(wr.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        while libc::write(wr.as_raw_fd(), b"x".as_ptr().cast(), 1) == 1 {}
        libc::fcntl(wr.as_raw_fd(), libc::F_SETFL, fl);
    }
    let mut cmd = clean_command(hostile());
    cmd.args(args).env("LD_PRELOAD", lib());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::from(wr));
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("the program blocked on its full stderr (errshim waited to log)");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    use std::io::Read;
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let mut held = Vec::new();
    // SAFETY: non-blocking read of what is there.
    unsafe {
        let fl = libc::fcntl(rd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(rd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    let _ = std::fs::File::from(rd).read_to_end(&mut held);
    use std::os::unix::process::ExitStatusExt;
    (
        Run {
            code: status.code(),
            signal: status.signal(),
            stdout: out,
            stderr: String::new(),
        },
        held.len(),
    )
}

/// Item 6: stderr (the default destination) is a pipe that nobody reads, already full (a
/// stalled log collector): the program makes 2,000 failing calls, each an event, and runs to its
/// end; what was written to the pipe is only what was there before (nothing waits, nothing is
/// half-written into it).
#[test]
fn full_stderr_pipe_never_blocks() {
    let (r, held) = run_with_full_stderr(&["events", "2000"], &[("ERRSHIM_RULES", "*:*:log:fd=any")]);
    assert_eq!((r.code, r.signal), (Some(0), None), "{}", r.describe());
    assert!(r.stdout.contains("events done n=2000"), "{}", r.stdout);
    assert_eq!(held, 4096, "only the bytes that filled the pipe");
}

/// Item 7: `ERRSHIM_CONTROL` names a FIFO: errshim refuses it (one error line) instead of
/// waiting in the constructor for a writer.
#[test]
fn control_file_that_is_a_fifo() {
    let dir = TempDir::new("control-fifo");
    let fifo = dir.path("control");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let r = run(&["events", "3"], true, &[("ERRSHIM_CONTROL", fifo.to_str().unwrap())]);
    r.assert_ok();
    let errs: Vec<&str> = r.stderr.lines().filter(|l| l.contains("ERRSHIM_CONTROL")).collect();
    assert_eq!(errs.len(), 1, "{}", r.stderr);
    assert!(errs[0].contains("not a regular file"), "{}", errs[0]);
}

/// Item 9: a program that installs a seccomp filter allowing only its own calls (the way
/// OpenSSH's pre-auth child does), through `prctl` or glibc's `syscall()` (what libseccomp
/// uses), then makes failing socket calls of every family under a rule that logs everything:
/// errshim makes no system call of its own from then on, so the filter never kills the
/// process; the rules still decide (the default rule's suppressed shutdown).
#[test]
fn seccomp_filtered_process_is_never_killed() {
    for how in ["prctl", "syscall"] {
        for rules in ["*:*:log:fd=any", "close,shutdown:ENOTCONN:ignore;*:*:log:fd=any"] {
            let r = run(&["seccomp", how], true, &[("ERRSHIM_RULES", rules)]);
            let what = format!("{how} {rules}\n{}", r.describe());
            assert_eq!(r.signal, None, "killed (SIGSYS is 31): {what}");
            r.assert_ok();
            assert!(r.stdout.contains("seccomp done"), "{what}");
            let res = results(&r);
            assert_eq!(res["read"], (-1, libc::ENOTCONN), "{what}");
            let shut = if rules.starts_with("close") {
                (0, EILSEQ)
            } else {
                (-1, libc::ENOTCONN)
            };
            assert_eq!(res["shutdown"], shut, "{what}");
        }
    }
    // Without errshim, the same filter lets the program finish: the test's premise.
    run(&["seccomp", "prctl"], false, &[]).assert_ok();
}

/// A stall's timer thread ends before the program installs a filter, also one given to every
/// thread (TSYNC) that would kill the process for the timer's calls at the stall's end.
#[test]
fn a_stall_timer_is_gone_before_a_seccomp_filter() {
    for how in ["prctl", "tsync"] {
        let r = run(
            &["stall_seccomp", how],
            true,
            &[("ERRSHIM_FAULTS", "recv:stall=300ms:conn=1:max=1")],
        );
        let what = format!("{how}\n{}", r.describe());
        assert_eq!(r.signal, None, "killed (SIGSYS is 31): {what}");
        r.assert_ok();
        assert!(r.stdout.contains("threads=2"), "the timer ran: {what}");
        assert!(r.stdout.contains("stall_seccomp done"), "{what}");
        assert_eq!(results(&r)["recv"], (1, libc::EILSEQ), "{what}");
        assert_eq!(results(&r)["wait"], (-1, libc::EAGAIN), "{what}");
    }
}

/// The same with the filter inherited: the parent installs it and execs the program, which
/// loads errshim under it. The filter allows what exec, the dynamic loader and the program
/// itself call, and kills for anything else (getsockopt, poll, getpid, ...).
#[test]
fn seccomp_filter_inherited_at_exec() {
    let prog = hostile();
    let p = prog.to_str().unwrap();
    for rules in ["*:*:log:fd=any", "close,shutdown:ENOTCONN:ignore"] {
        let r = run(
            &["exec_filtered", p, "filtered_calls"],
            true,
            &[("ERRSHIM_RULES", rules)],
        );
        let what = format!("{rules}\n{}", r.describe());
        assert_eq!(r.signal, None, "killed (SIGSYS is 31): {what}");
        r.assert_ok();
        assert!(r.stdout.contains("filtered_calls done"), "{what}");
    }
    // ERRSHIM_SECCOMP=trust: the user says this filter allows errshim's calls; it does not,
    // so the process dies: the strict default is what keeps it alive.
    let r = run(
        &["exec_filtered", p, "filtered_calls"],
        true,
        &[("ERRSHIM_RULES", "*:*:log:fd=any"), ("ERRSHIM_SECCOMP", "trust")],
    );
    assert_eq!(r.signal, Some(libc::SIGSYS), "{}", r.describe());
    run(&["exec_filtered", p, "filtered_calls"], false, &[]).assert_ok();
}

/// errshim loaded with `dlopen` (a plugin host, a test harness) rather than preloaded, under a
/// seccomp filter that refuses only `fstat`, which glibc 2.33 and later never make: errshim's
/// start-up makes the calls the program's glibc makes (`newfstatat`), learnt from the glibc it
/// finds even when libc comes before it in the loader's list. Then `dlclose` and `fork`: what
/// errshim registered for fork (with a summary and a control file) must not outlive it, or the
/// child jumps into unmapped code.
#[test]
fn loaded_with_dlopen_under_a_filter_then_unloaded() {
    let dir = TempDir::new("dlopen");
    let control = dir.path("control");
    std::fs::write(&control, "").unwrap();
    let l = lib();
    let configs: [&[(&str, &str)]; 3] = [
        &[],
        &[("ERRSHIM_SUMMARY", "1")],
        &[("ERRSHIM_SUMMARY", "1"), ("ERRSHIM_CONTROL", control.to_str().unwrap())],
    ];
    for env in configs {
        let r = run(&["dlopen", l.to_str().unwrap()], false, env);
        let what = format!("{env:?}\n{}", r.describe());
        assert_eq!(r.signal, None, "killed (SIGSYS is 31): {what}");
        r.assert_ok();
        assert!(r.stdout.contains("dlopen loaded"), "{what}");
        assert!(
            r.stdout.contains("dlopen child exited=1 code=7 signal=0"),
            "the child of a fork after dlclose: {what}"
        );
    }
}

/// Item 10: a socket closed where no hook sees it (a `syscall` instruction), its number
/// reused by `open()` of a file: a fault rule for TCP sockets never hits the file (the table's
/// record is checked against the kernel before a fault is injected).
#[test]
fn fault_for_tcp_never_hits_a_reused_number() {
    let dir = TempDir::new("rawclose");
    let file = dir.path("data");
    let r = run(
        &["rawclose", file.to_str().unwrap()],
        true,
        &[
            ("ERRSHIM_FAULTS", "write:EIO:fd=tcp"),
            ("ERRSHIM_RULES", "*:*:log:fd=any"),
        ],
    );
    r.assert_ok();
    assert!(r.stdout.contains("rawclose reused same=1"), "{}", r.describe());
    assert_eq!(results(&r)["write"], (5, EILSEQ), "{}", r.describe());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "data\nmore\n");
    assert!(!r.stderr.contains("INJECTED"), "{}", r.stderr);
}

/// Item 11: `ignore` on recvfrom/recvmsg. On a UDP socket 0 would be an empty datagram with a
/// sender the kernel never reported: the rule does not apply there, the program gets the
/// kernel's ECONNREFUSED. On a TCP socket, the failure after a reset becomes end of file with
/// what the kernel writes at end of file: no sender (length 0), no control data, no flags.
#[test]
fn ignore_never_fakes_a_datagram_and_ends_like_eof() {
    let bare = run(&["recv_refused"], false, &[]);
    bare.assert_ok();
    let r = run(
        &["recv_refused"],
        true,
        &[(
            "ERRSHIM_RULES",
            "recvfrom,recvmsg:ECONNREFUSED,ECONNRESET:ignore:fd=any",
        )],
    );
    r.assert_ok();
    let line = |run: &Run, step: &str| {
        run.out_lines(&format!("recv_refused {step} "))
            .first()
            .copied()
            .unwrap_or("")
            .to_string()
    };
    for step in ["udp_recvfrom", "udp_recvmsg"] {
        assert_eq!(line(&r, step), line(&bare, step), "{step}: {}", r.describe());
        assert_eq!(value(&line(&r, step), "errno"), libc::ECONNREFUSED.to_string());
    }
    let from = line(&r, "tcp_recvfrom");
    assert_eq!(
        (value(&from, "ret"), value(&from, "errno"), value(&from, "fromlen")),
        ("0", "84", "0"),
        "{from}"
    );
    let msg = line(&r, "tcp_recvmsg");
    assert_eq!(
        (
            value(&msg, "ret"),
            value(&msg, "namelen"),
            value(&msg, "controllen"),
            value(&msg, "flags")
        ),
        ("0", "0", "0", "0"),
        "{msg}"
    );
    assert_eq!(
        value(&line(&bare, "tcp_recvmsg"), "errno"),
        libc::ECONNRESET.to_string()
    );
}

/// Item 12: after `close_range(3, ~0U, 0)` (through libc and through `syscall()`), the
/// program's own dups of stderr on the highest numbers below 1024 close with 0 and are
/// closed: errshim holds no number of its own that could be mistaken for one of them.
#[test]
fn program_descriptors_after_close_range_are_the_programs() {
    for shim in [false, true] {
        let r = run(&["closerange_dup"], shim, &[("ERRSHIM_RULES", "*:*:log:fd=any")]);
        r.assert_ok();
        let l = r.out_lines("closerange_dup closes=");
        assert_eq!(
            l,
            vec!["closerange_dup closes=72 bad=0"],
            "shim={shim}\n{}",
            r.describe()
        );
    }
}

/// Item 14: a successful `dup2` onto the highest free numbers below 1024 (where errshim used
/// to keep a descriptor after an event) leaves errno as it was, with RLIMIT_NOFILE at the
/// common 1024 (where there is no free number above to move a descriptor to).
#[test]
fn dup2_onto_high_numbers_keeps_errno() {
    let run = |shim: bool| {
        let mut c = Cmd::new("sh")
            .args(["-c", "ulimit -n 1024 && exec \"$0\" dup2_errno"])
            .arg_path(&hostile());
        if shim {
            c = c.shim();
        }
        let r = c.run();
        r.assert_ok();
        r
    };
    let bare = results(&run(false));
    assert_eq!(bare.len(), 10, "{bare:?}");
    let r = run(true);
    for (step, got) in results(&r) {
        if step == "shutdown" {
            assert_eq!(got, (0, EILSEQ));
        } else {
            assert_eq!(got, bare[&step], "{step}: {}", r.describe());
            assert_eq!(got.1, EILSEQ, "{step}");
        }
    }
}

/// Item 16: a process that drops privileges (a forked worker becoming nobody) still logs to
/// its own `%p` file in a root-owned directory: errshim prepares the file, for the new user,
/// at the `setuid`.
#[test]
fn worker_that_drops_privileges_keeps_its_log() {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(!in_ci(), "CI runs as root");
        eprintln!("\n*** SKIPPED: needs root (to drop privileges) ***\n");
        return;
    }
    let dir = TempDir::new("setuid-logs");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let template = dir.path("e-%p.log");
    let r = run(&["setuid_child"], true, &[("ERRSHIM_LOG", template.to_str().unwrap())]);
    r.assert_ok();
    let child = r.out_lines("setuid_child child");
    assert_eq!(child.len(), 1, "{}", r.describe());
    assert_eq!((value(child[0], "ret"), value(child[0], "uid")), ("0", "65534"));
    let pid = value(child[0], "pid");
    let log = std::fs::read_to_string(dir.path(&format!("e-{pid}.log"))).unwrap_or_default();
    let ev = events(&log);
    assert_eq!(
        ev.len(),
        1,
        "the child's event, in its own file:\n{log}\n{}",
        r.describe()
    );
    assert!(ev[0].contains(&format!(" pid={pid} ")), "{}", ev[0]);
    // Where it still cannot be created, the warning names the file, the user and the cause.
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o700)).unwrap();
    let sub = dir.path("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap();
    let r = run(
        &["setuid_child"],
        true,
        &[("ERRSHIM_LOG", sub.join("x/e-%p.log").to_str().unwrap())],
    );
    r.assert_ok();
    let pid = value(r.out_lines("setuid_child child")[0], "pid").to_string();
    let warn: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("cannot open the ERRSHIM_LOG file"))
        .collect();
    assert!(
        warn.iter()
            .any(|w| w.contains(&format!("/x/e-{pid}.log as uid 65534 (euid 65534): EACCES"))),
        "{}",
        r.stderr
    );
}

/// Item 17: a log path with a byte that is not UTF-8 makes a file with that very byte in its
/// name, and a newline in a variable's value cannot forge a line of errshim's diagnostics.
#[test]
fn values_are_bytes_and_diagnostics_are_escaped() {
    use std::os::unix::ffi::OsStrExt;
    let dir = TempDir::new("bytes");
    let mut path = dir.0.as_os_str().as_bytes().to_vec();
    path.extend_from_slice(b"/log-\xff.txt");
    let path = std::ffi::OsStr::from_bytes(&path).to_os_string();
    let r = Cmd::new(hostile())
        .args(["events", "2"])
        .shim()
        .env("ERRSHIM_LOG", &path)
        .env("ERRSHIM_FORMAT", "text\nerrshim: error: forged")
        .run();
    r.assert_ok();
    let names: Vec<Vec<u8>> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    assert_eq!(names, vec![b"log-\xff.txt".to_vec()], "the path as given");
    assert!(
        !r.stderr.lines().any(|l| l.starts_with("errshim: error: forged")),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("'text\\x0aerrshim: error: forged'"), "{}", r.stderr);
}

/// Item 18: with `ERRSHIM_SUMMARY=1`, a process with nothing to report writes no summary (and so
/// no per-process log file): 30 forked children without an event leave nothing behind.
#[test]
fn no_summary_from_a_process_without_events() {
    let dir = TempDir::new("summaries");
    let template = dir.path("e-%p.log");
    let r = run(
        &["forkmany", "30"],
        true,
        &[("ERRSHIM_SUMMARY", "1"), ("ERRSHIM_LOG", template.to_str().unwrap())],
    );
    r.assert_ok();
    let files: Vec<_> = std::fs::read_dir(&dir.0).unwrap().collect();
    assert!(files.is_empty(), "{files:?}");
    // A process with an event still writes its summary.
    let r = run(
        &["events", "3"],
        true,
        &[("ERRSHIM_SUMMARY", "1"), ("ERRSHIM_LOG", template.to_str().unwrap())],
    );
    r.assert_ok();
    let files: Vec<PathBuf> = std::fs::read_dir(&dir.0).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        text.contains("errshim summary pid=") && text.contains(" events=3 "),
        "{text}"
    );
}

/// A log line cut short (the file may not grow: RLIMIT_FSIZE, as a full disk would) does not
/// glue the next line onto it, and errshim's writes never raise SIGXFSZ, which would kill the
/// program: the cut line is ended by a newline before the next whole line.
#[test]
fn cut_log_line_is_ended_and_never_raises_sigxfsz() {
    let dir = TempDir::new("fsize");
    let log = dir.path("e.log");
    let r = run(&["fsize"], true, &[("ERRSHIM_LOG", log.to_str().unwrap())]);
    assert_eq!((r.code, r.signal), (Some(0), None), "{}", r.describe());
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text:?}");
    assert_eq!(lines[0].len(), 100, "cut at the limit: {text:?}");
    assert!(
        lines[1].starts_with("errshim 2") && lines[1].contains("shutdown("),
        "{text:?}"
    );
    assert!(text.ends_with('\n'));
}

/// `close_range` and `closefrom` cost what is in use, not RLIMIT_NOFILE: with the limit at its
/// maximum (a million in common container runtimes), 200 calls of close_range(3, ~0U) cost
/// errshim no more than a few instructions each, counted exactly by callgrind.
#[test]
fn close_range_cost_follows_what_is_in_use() {
    if !require_tool("valgrind") {
        return;
    }
    let dir = TempDir::new("closerange-cost");
    let instructions = |shim: bool| -> u64 {
        let out = dir.path(&format!("cg-{shim}"));
        let mut c = Cmd::new("valgrind")
            .args(["--tool=callgrind", &format!("--callgrind-out-file={}", out.display())])
            .arg_path(&hostile())
            .args(["closerange_loop", "200"])
            .timeout(Duration::from_secs(300));
        if shim {
            c = c.env("LD_PRELOAD", lib());
        }
        let r = c.run();
        r.assert_ok();
        let text = std::fs::read_to_string(&out).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("summary: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no callgrind summary:\n{}", r.stderr))
    };
    let (bare, shim) = (instructions(false), instructions(true));
    assert!(
        shim < bare + 2_000_000,
        "errshim adds {} instructions to 200 close_range calls (bare {bare})",
        shim - bare.min(shim)
    );
}

/// A Python server with an accepted connection runs a subprocess (`subprocess.run`, which uses
/// `vfork` on Linux: the child runs on the server's memory until it execs, and closes every
/// descriptor but 0-2 on its way). Then the client resets; the server's failing shutdown is an
/// event.
const VFORK_SERVER: &str = r#"
import socket, struct, subprocess, sys
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(4)
c = socket.create_connection(l.getsockname())
s, peer = l.accept()
for _ in range(int(sys.argv[1])):
    subprocess.run(["true"], check=True)
c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
c.close()
try:
    s.recv(1)
except OSError as e:
    print("recv errno", e.errno)
try:
    s.shutdown(socket.SHUT_RDWR)
    print("shutdown ok")
except OSError as e:
    print("shutdown errno", e.errno)
print("peer", peer[1], flush=True)
"#;

/// Item 13: what the vfork children did to their own descriptors must change nothing of the
/// parent's: the connection's event still knows it was accepted and from which peer.
#[test]
fn vfork_children_change_nothing_of_the_parents() {
    if !require_tool("python3") {
        return;
    }
    for n in ["0", "1", "5"] {
        let r = Cmd::new("python3")
            .args(["-c", VFORK_SERVER, n])
            .shim()
            .env("ERRSHIM_FORMAT", "json")
            .env("ERRSHIM_RULES", "close,shutdown:ENOTCONN:ignore;*:ECONNRESET:log")
            .run();
        r.assert_ok();
        assert!(r.stdout.contains("shutdown ok"), "{}", r.describe());
        let port = r.out_lines("peer ")[0].trim_start_matches("peer ").trim().to_string();
        let ev = json_events(&r);
        let shut = ev
            .iter()
            .find(|e| e["call"] == "shutdown")
            .unwrap_or_else(|| panic!("{}", r.describe()));
        let history: Vec<&str> = shut["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap())
            .collect();
        assert!(
            history.contains(&"accepted") && !history.contains(&"seen_late"),
            "{n} subprocesses: {shut}"
        );
        assert_eq!(shut["peer"], format!("127.0.0.1:{port}"), "{n} subprocesses: {shut}");
        assert_eq!(shut["cause"], "peer_reset", "{shut}");
    }
}

const CLOSERS: [&str; 7] = ["asm", "uring", "syscall", "close_range", "fclose", "dup2", "asm_dup2"];
const REUSERS: [&str; 10] = [
    "socket",
    "asm_socket",
    "open",
    "pipe",
    "eventfd",
    "epoll",
    "fcntl",
    "accept",
    "scm_rights",
    "udp",
];

/// The kind the new descriptor really has (as errshim names kinds).
fn true_kind(closer: &str, reuser: &str) -> &'static str {
    let replaced = closer.ends_with("dup2");
    match reuser {
        "open" | "pipe" => "not-a-socket",
        "udp" => "udp4",
        _ if replaced => "unix-stream",
        "eventfd" | "epoll" => "not-a-socket",
        "accept" => "tcp4",
        "scm_rights" => "unix-dgram",
        _ => "unix-stream",
    }
}

/// One notion of identity, against every way a number is reused behind the hooks: a connected
/// TCP socket with a history (an event, a peer) is closed where no hook sees it (a syscall
/// instruction, io_uring) or where one does (glibc's syscall(), close_range through it, fclose,
/// dup2 over it, and dup2 by a syscall instruction), and its number is taken by every kind of
/// descriptor (sockets through hooks and not, files, pipes, eventfd, epoll, F_DUPFD, accept,
/// SCM_RIGHTS, UDP). Then: every event on the new descriptor names its true kind and nothing of
/// the old connection (no `connected`, not its peer), and a fault rule for TCP sockets fires
/// only where the new descriptor is one (what the program gets is otherwise exactly what it
/// gets without errshim).
#[test]
fn identity_survives_every_reuse_behind_the_hooks() {
    for closer in CLOSERS {
        for reuser in REUSERS {
            let args = ["identity", closer, reuser];
            let what = format!("{closer}/{reuser}");
            let bare = run(&args, false, &[]);
            bare.assert_ok();
            let r = run(
                &args,
                true,
                &[("ERRSHIM_RULES", "*:*:log:fd=any"), ("ERRSHIM_FORMAT", "json")],
            );
            r.assert_ok();
            assert_eq!(results(&r), results(&bare), "{what}: results");
            let fd: i64 = value(r.out_lines("identity new ")[0], "fd").parse().unwrap();
            let evs = json_events(&r);
            let old = evs
                .iter()
                .find(|e| e["call"] == "recv")
                .unwrap_or_else(|| panic!("{what}: the old socket's event\n{}", r.describe()));
            let old_peer = old["peer"].as_str().unwrap().to_string();
            assert!(old_peer.starts_with("127.0.0.1:"), "{what}: {old}");
            let new: Vec<&serde_json::Value> = evs.iter().filter(|e| e["fd"] == fd && e["call"] != "recv").collect();
            let failed = ["read", "shutdown", "write"]
                .iter()
                .filter(|s| results(&bare)[**s].0 < 0)
                .count();
            assert!(failed >= 2, "{what}: the calls fail\n{}", bare.describe());
            assert_eq!(new.len(), failed, "{what}: an event per failed call\n{}", r.describe());
            for e in new {
                assert_eq!(e["kind"], true_kind(closer, reuser), "{what}: {e}");
                let history: Vec<&str> = e["history"]
                    .as_array()
                    .map(|h| h.iter().filter_map(|w| w.as_str()).collect())
                    .unwrap_or_default();
                assert!(!history.contains(&"connected"), "{what}: the old history: {e}");
                assert_ne!(e["peer"].as_str(), Some(old_peer.as_str()), "{what}: the old peer: {e}");
            }

            let f = run(
                &args,
                true,
                &[("ERRSHIM_RULES", ""), ("ERRSHIM_FAULTS", "read,write:EIO:fd=tcp")],
            );
            f.assert_ok();
            let (got, mut want) = (results(&f), results(&bare));
            if true_kind(closer, reuser) == "tcp4" {
                want.insert("read".into(), (-1, libc::EIO));
                want.insert("write".into(), (-1, libc::EIO));
            }
            assert_eq!(
                got,
                want,
                "{what}: a TCP fault rule on a {}\n{}",
                true_kind(closer, reuser),
                f.describe()
            );
        }
    }
}
