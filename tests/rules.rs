//! The rules at work on errors that the real kernel produces (recipes from
//! shared/docs/linux-socket-errors.md), in C programs and in Python.

mod common;
use common::*;

const ENOTCONN: i32 = libc::ENOTCONN;
const EILSEQ: i32 = libc::EILSEQ;

fn scenarios() -> std::path::PathBuf {
    program("scenarios")
}

/// Recipes A (never connected, TCP and UDP), B (finished FIN exchange), C (reset by unread
/// data), D (reset before accept), E (refused connect), G (torn-down listener): `shutdown`
/// fails with ENOTCONN without errshim, and with the default rules it returns 0, leaves errno
/// alone and logs exactly one event naming the call and the socket.
#[test]
fn default_rules_suppress_kernel_enotconn_from_shutdown() {
    let cases = [
        (
            "never_connected shutdown",
            "shutdown(fd=3, SHUT_RDWR)",
            "tcp4",
            "never_connected",
        ),
        ("fin shutdown", "SHUT_RDWR)", "tcp4", "peer_closed"),
        ("reset shutdown", "SHUT_WR)", "tcp4", "peer_reset"),
        ("reset_before_accept shutdown", "SHUT_WR)", "tcp4", "peer_reset"),
        ("refused shutdown", "SHUT_RDWR)", "tcp4", "connect_failed"),
        ("listener shutdown_again", "SHUT_RDWR)", "tcp4", "shut_down_before"),
        ("udp shutdown", "SHUT_RDWR)", "udp4", "udp_unconnected"),
    ];
    for (step, call_text, kind, cause) in cases {
        let scenario = step.split(' ').next().unwrap();
        let bare = Cmd::new(scenarios()).args([scenario]).run();
        bare.assert_ok();
        assert_eq!(result_of(&bare, step), (-1, ENOTCONN), "without errshim: {step}");
        assert!(bare.events().is_empty());

        let shim = Cmd::new(scenarios()).args([scenario]).shim().run();
        shim.assert_ok();
        assert_eq!(
            result_of(&shim, step),
            (0, EILSEQ),
            "with errshim, errno must be as before the call: {step}"
        );
        let ev = shim.events();
        assert_eq!(ev.len(), 1, "{step}: one event expected:\n{}", shim.describe());
        let e = ev[0];
        assert!(e.contains(call_text), "{step}: {e}");
        assert!(e.contains(" = -1 ENOTCONN -> ignored, returned 0 | "), "{step}: {e}");
        assert!(e.contains(&format!("| {kind} local=")), "{step}: {e}");
        assert!(e.contains(" rule=1 | "), "{step}: {e}");
        assert!(
            e.contains(&format!(" | cause={cause}: ")),
            "{step}: expected cause {cause}: {e}"
        );
        assert!(e.contains("comm=scenarios "), "{e}");
        // Everything else the program saw is unchanged.
        let strip = |r: &Run| {
            r.stdout
                .lines()
                .filter(|l| !l.starts_with(step))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(&bare), strip(&shim), "{step}: other calls must be unaffected");
    }
}

/// The event line carries a timestamp, pid, tid and the local address the kernel still knows.
#[test]
fn event_line_fields() {
    let r = Cmd::new(scenarios()).args(["reset"]).shim().run();
    let ev = r.events();
    assert_eq!(ev.len(), 1, "{}", r.describe());
    let e = ev[0];
    let ts = e.split(' ').nth(1).unwrap();
    assert_eq!(ts.len(), "2026-11-21T10:00:00.123456Z".len(), "{e}");
    assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{e}");
    let pid = e.split(" pid=").nth(1).unwrap().split(' ').next().unwrap();
    let tid = e.split(" tid=").nth(1).unwrap().split(' ').next().unwrap();
    assert!(
        pid.parse::<u32>().is_ok() && pid == tid,
        "single-threaded: tid == pid: {e}"
    );
    assert!(e.contains("local=127.0.0.1:"), "{e}");
}

/// `ERRSHIM_RULES=` (set but empty): exactly what the program sees without errshim, nothing
/// logged, for every scenario (including calls that succeed, fail, and errno afterwards).
#[test]
fn empty_rules_are_pure_pass_through() {
    let all = [
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
    let bare = Cmd::new(scenarios()).args(all).run();
    bare.assert_ok();
    let shim = Cmd::new(scenarios()).args(all).shim().env("ERRSHIM_RULES", "").run();
    shim.assert_ok();
    let norm = |s: &str| {
        s.lines()
            .filter(|l| !l.contains("local="))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(norm(&bare.stdout), norm(&shim.stdout));
    assert!(shim.stderr.is_empty(), "nothing logged: {}", shim.stderr);
}

/// `fd=` filters decide by the descriptor's kind: the default (sockets) leaves a pipe's EPIPE
/// and a non-socket's ENOTSOCK alone; `fd=any` reaches them; `fd=unix` and `fd=tcp` split.
#[test]
fn fd_filters() {
    let r = Cmd::new(scenarios())
        .args(["notsock"])
        .shim()
        .env("ERRSHIM_RULES", "*:*:log")
        .run();
    assert!(
        r.events().is_empty(),
        "default fd=sock must not touch pipes: {}",
        r.stderr
    );

    let r = Cmd::new(scenarios())
        .args(["notsock"])
        .shim()
        .env("ERRSHIM_RULES", "*:*:log:fd=any")
        .run();
    let ev = r.events();
    assert_eq!(ev.len(), 3, "{}", r.describe());
    assert!(
        ev[0].contains("write(fd=") && ev[0].contains("= -1 EPIPE -> logged, returned -1 EPIPE | not-a-socket rule=1"),
        "{}",
        ev[0]
    );
    assert!(ev[1].contains("shutdown(") && ev[1].contains("ENOTSOCK"), "{}", ev[1]);
    assert!(
        ev[2].contains("close(fd=1000000) = -1 EBADF") && ev[2].contains("| not-open"),
        "{}",
        ev[2]
    );
    assert_eq!(
        result_of(&r, "notsock write"),
        (-1, libc::EPIPE),
        "log leaves the result"
    );

    // AF_UNIX: an unconnected stream socket's write fails with ENOTCONN.
    let rules = "write:ENOTCONN:map=EPIPE:fd=tcp;write:ENOTCONN:map=ECONNRESET:fd=unix";
    let r = Cmd::new(scenarios())
        .args(["unix", "never_connected"])
        .shim()
        .env("ERRSHIM_RULES", rules)
        .run();
    assert_eq!(result_of(&r, "unix write"), (-1, libc::ECONNRESET));
    let ev = r.events();
    assert_eq!(ev.len(), 1, "{}", r.describe());
    assert!(
        ev[0].contains("-> mapped, returned -1 ECONNRESET | unix-stream local=(unnamed) peer=? rule=2"),
        "{}",
        ev[0]
    );
}

/// First match wins; `pass` stops later rules; `quiet` suppresses without a log line.
#[test]
fn first_match_wins_pass_and_quiet() {
    let r = Cmd::new(scenarios())
        .args(["never_connected"])
        .shim()
        .env("ERRSHIM_RULES", "shutdown:ENOTCONN:pass;shutdown,read:ENOTCONN:ignore")
        .run();
    assert_eq!(result_of(&r, "never_connected shutdown"), (-1, ENOTCONN));
    assert_eq!(
        result_of(&r, "never_connected read"),
        (0, EILSEQ),
        "ignore on read = end of file, errno untouched"
    );
    assert_eq!(r.events().len(), 1, "{}", r.describe());

    let r = Cmd::new(scenarios())
        .args(["never_connected"])
        .shim()
        .env("ERRSHIM_RULES", "shutdown:ENOTCONN:quiet")
        .run();
    assert_eq!(result_of(&r, "never_connected shutdown"), (0, EILSEQ));
    assert!(r.stderr.is_empty(), "quiet logs nothing: {}", r.stderr);

    // read takes the careful path only because a rule may turn its failure into a success:
    // errno from before the call is what the program sees.
    let r = Cmd::new(scenarios())
        .args(["never_connected"])
        .shim()
        .env("ERRSHIM_RULES", "read:ENOTCONN:quiet")
        .run();
    assert_eq!(result_of(&r, "never_connected read"), (0, EILSEQ));
    assert_eq!(result_of(&r, "never_connected shutdown"), (-1, ENOTCONN));
    // Nothing logged; but these rules replaced the default, and the shutdown's ENOTCONN came
    // through: that is said, once.
    assert!(r.events().is_empty(), "quiet logs nothing: {}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("replaces the default rules"), "{}", r.stderr);
}

/// `map=` and `log` on `read` of a never-connected TCP socket, from a program built with
/// `-O2 -D_FORTIFY_SOURCE=2`, whose calls go to `__read_chk`, `__recv_chk`, `__recvfrom_chk`.
#[test]
fn fortified_entry_points() {
    let bin = cc("fortify", "fortify", &["-O2", "-D_FORTIFY_SOURCE=2"]);
    let bare = Cmd::new(&bin).run();
    assert_eq!(result_of(&bare, "fortify read"), (-1, ENOTCONN));

    let r = Cmd::new(&bin)
        .shim()
        .env(
            "ERRSHIM_RULES",
            "read:ENOTCONN:map=ECONNRESET;recv,recvfrom:ENOTCONN:log",
        )
        .run();
    r.assert_ok();
    assert_eq!(result_of(&r, "fortify read"), (-1, libc::ECONNRESET));
    assert_eq!(result_of(&r, "fortify recv"), (-1, ENOTCONN));
    assert_eq!(result_of(&r, "fortify recvfrom"), (-1, ENOTCONN));
    let ev = r.events();
    assert_eq!(ev.len(), 3, "{}", r.describe());
    assert!(
        ev[0].contains("__read_chk(fd=3, len=64) = -1 ENOTCONN -> mapped, returned -1 ECONNRESET | tcp4"),
        "{}",
        ev[0]
    );
    assert!(
        ev[1].contains("__recv_chk(fd=3, len=64) = -1 ENOTCONN -> logged, returned -1 ENOTCONN | tcp4"),
        "{}",
        ev[1]
    );
    assert!(
        ev[2].contains("__recvfrom_chk(fd=3, len=64) = -1 ENOTCONN -> logged"),
        "{}",
        ev[2]
    );
}

const PY_READ: &str = r#"
import os, socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    os.read(s.fileno(), 100)
    print("read ok")
except OSError as e:
    print("read errno", e.errno)
try:
    s.recv(100)
    print("recv ok")
except OSError as e:
    print("recv errno", e.errno)
try:
    s.shutdown(socket.SHUT_RDWR)
    print("shutdown ok")
except OSError as e:
    print("shutdown errno", e.errno)
s.close()
"#;

/// The same from Python: `os.read` goes through `read`, `socket.recv` through `recv`, and
/// `socket.shutdown` raises `OSError(107)` without errshim but not with the default rules.
#[test]
fn python_read_recv_shutdown() {
    if !require_tool("python3") {
        return;
    }
    let bare = Cmd::new("python3").args(["-c", PY_READ]).run();
    assert_eq!(
        bare.stdout,
        "read errno 107\nrecv errno 107\nshutdown errno 107\n",
        "{}",
        bare.describe()
    );

    let rules = "read:ENOTCONN:map=ECONNRESET;recv:ENOTCONN:log;shutdown:ENOTCONN:ignore";
    let r = Cmd::new("python3")
        .args(["-c", PY_READ])
        .shim()
        .env("ERRSHIM_RULES", rules)
        .run();
    r.assert_ok();
    assert_eq!(
        r.stdout,
        "read errno 104\nrecv errno 107\nshutdown ok\n",
        "{}",
        r.describe()
    );
    let ev = r.events();
    assert_eq!(ev.len(), 3, "{}", r.describe());
    assert!(
        ev[0].contains("comm=python3 read(fd=3, len=100) = -1 ENOTCONN -> mapped, returned -1 ECONNRESET | tcp4"),
        "{}",
        ev[0]
    );
    assert!(
        ev[1].contains("recv(fd=3, len=100) = -1 ENOTCONN -> logged, returned -1 ENOTCONN"),
        "{}",
        ev[1]
    );
    assert!(
        ev[2].contains("shutdown(fd=3, SHUT_RDWR) = -1 ENOTCONN -> ignored, returned 0"),
        "{}",
        ev[2]
    );
}

/// `ERRSHIM_RULES='+RULES'` adds rules after the default one: the default suppression stays
/// (rule 1) and the added rule logs the rest. Without the `+` the rules replace the default,
/// and a warning at startup says that shutdown's ENOTCONN is no longer suppressed.
#[test]
fn added_rules_keep_the_default_and_a_replacement_says_so() {
    let script = r#"
import errno, socket
s = socket.socket()
try:
    s.shutdown(socket.SHUT_WR)
    print("shutdown ok")
except OSError as e:
    print("shutdown", errno.errorcode[e.errno])
u = socket.socket()
try:
    u.send(b"x")
    print("send ok")
except OSError as e:
    print("send", errno.errorcode[e.errno])
"#;
    let run = |rules: &str| {
        Cmd::new("python3")
            .args(["-c", script])
            .shim()
            .env("ERRSHIM_RULES", rules)
            .run()
    };
    let bare = Cmd::new("python3").args(["-c", script]).run();
    bare.assert_ok();
    let send_errno = bare.stdout.lines().nth(1).unwrap().to_string();
    assert!(
        bare.stdout.starts_with("shutdown ENOTCONN\nsend E"),
        "{}",
        bare.describe()
    );

    let added = run("+*:*:log");
    added.assert_ok();
    assert_eq!(
        added.stdout,
        format!("shutdown ok\n{send_errno}\n"),
        "{}",
        added.describe()
    );
    let ev = added.events();
    assert_eq!(ev.len(), 2, "{}", added.describe());
    assert!(
        ev[0].contains("shutdown(") && ev[0].contains("-> ignored") && ev[0].contains(" rule=1 "),
        "{}",
        ev[0]
    );
    assert!(
        ev[1].contains("send(") && ev[1].contains("-> logged") && ev[1].contains(" rule=2 "),
        "{}",
        ev[1]
    );
    assert!(
        !added.stderr.contains("replaces the default rules"),
        "{}",
        added.describe()
    );

    let replaced = run("*:*:log");
    replaced.assert_ok();
    assert_eq!(
        replaced.stdout,
        bare.stdout,
        "the suppression is gone: {}",
        replaced.describe()
    );
    let warnings: Vec<&str> = replaced
        .stderr
        .lines()
        .filter(|l| l.contains("replaces the default rules"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", replaced.describe());
    assert!(
        warnings[0].starts_with(
            "errshim: warn: ERRSHIM_RULES replaces the default rules: shutdown's ENOTCONN is no longer suppressed"
        ) && warnings[0].contains("ERRSHIM_RULES='+...'"),
        "{}",
        warnings[0]
    );
    // Replacing on purpose, keeping the suppression, or no rules at all: nothing said.
    for rules in ["shutdown:ENOTCONN:quiet", "close,shutdown:ENOTCONN:ignore;*:*:log", ""] {
        let r = run(rules);
        assert!(!r.stderr.contains("replaces the default"), "{rules}: {}", r.describe());
    }
}

/// `connect` and `accept` failures are events where a rule names them: a refused connect (the
/// kernel's ECONNREFUSED from a loopback port nothing listens on) and an accept with no
/// descriptor left (EMFILE, from a full descriptor table); a non-blocking connect in progress
/// and an accept with nothing queued are how those calls are used, not events. `map=` works;
/// `ignore` is refused by the grammar (there is no success to give).
#[test]
fn connect_and_accept_failures_are_events_where_a_rule_names_them() {
    let script = r#"
import errno, os, resource, socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
c = socket.socket()
print("connect", errno.errorcode.get(c.connect_ex(("127.0.0.1", port)), "ok"))
n = socket.socket(); n.setblocking(False)
print("nonblocking", errno.errorcode.get(n.connect_ex(("127.0.0.1", port)), "ok"))
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(4); srv.setblocking(False)
try:
    srv.accept()
except BlockingIOError as e:
    print("accept", errno.errorcode[e.errno])
k = socket.socket(); k.connect(srv.getsockname())
top = max(int(f) for f in os.listdir("/proc/self/fd"))
resource.setrlimit(resource.RLIMIT_NOFILE, (top + 2, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
fill = []
try:
    while True:
        fill.append(socket.socket())
except OSError:
    pass
try:
    srv.accept()
except OSError as e:
    print("accept", errno.errorcode[e.errno])
"#;
    let bare = Cmd::new("python3").args(["-c", script]).run();
    bare.assert_ok();
    let expected = "connect ECONNREFUSED\nnonblocking EINPROGRESS\naccept EAGAIN\naccept EMFILE\n";
    assert_eq!(bare.stdout, expected, "{}", bare.describe());
    let r = Cmd::new("python3")
        .args(["-c", script])
        .shim()
        .env("ERRSHIM_RULES", "+connect,accept:*:log")
        .run();
    r.assert_ok();
    assert_eq!(r.stdout, expected, "{}", r.describe());
    let ev = r.events();
    assert_eq!(ev.len(), 2, "{}", r.describe());
    assert!(
        ev[0].contains(" connect(fd=")
            && ev[0].contains(") = -1 ECONNREFUSED -> logged, returned -1 ECONNREFUSED | tcp4")
            && ev[0].contains("history=connect_failed,connect=ECONNREFUSED")
            && ev[0].contains("| cause=connect_failed: the connect was refused: nothing listens"),
        "{}",
        ev[0]
    );
    assert!(
        ev[1].contains(" accept4(fd=")
            && ev[1].contains(") = -1 EMFILE -> logged")
            && ev[1].contains("state=LISTEN")
            && ev[1].contains("| cause=too_many_files: "),
        "the line is written even with no descriptor left: {}",
        ev[1]
    );
    // map= changes what the program sees; the default rules alone say nothing of either.
    let mapped = Cmd::new("python3")
        .args(["-c", script])
        .shim()
        .env("ERRSHIM_RULES", "+connect:ECONNREFUSED:map=ETIMEDOUT")
        .run();
    assert!(
        mapped.stdout.starts_with("connect ETIMEDOUT\n"),
        "{}",
        mapped.describe()
    );
    let default = Cmd::new("python3").args(["-c", script]).shim().run();
    assert_eq!(default.stdout, expected);
    assert!(default.events().is_empty(), "{}", default.describe());
    let refused = Cmd::new("true")
        .shim()
        .env("ERRSHIM_RULES", "connect:ECONNREFUSED:ignore")
        .run();
    assert!(
        refused.stderr.contains("action 'ignore' not allowed on connect"),
        "{}",
        refused.describe()
    );
}
