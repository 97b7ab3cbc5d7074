//! Connection context and cause diagnosis, on situations the real kernel produces on loopback
//! (recipes A-G of shared/docs/linux-socket-errors.md), in C programs and in Python, with every
//! JSON event parsed by a real JSON parser:
//! - each cause, with the TCP state, the peer the program really connected to or accepted from,
//!   the history and the byte counts the program moved: by default the kernel's (`TCP_INFO`),
//!   with `ERRSHIM_COUNT=1` also the hooks' own and the last call;
//! - records never leak across descriptor reuse, whether the old socket was closed by glibc's
//!   `fclose` or by a raw syscall, and the new one created through a hook or behind its back;
//! - observing changes nothing the program sees (pending resets, SO_ERROR, later calls);
//! - JSON strings stay valid whatever bytes a program name or a socket path holds;
//! - the text format carries the same context as the JSON.

mod common;
use common::*;
use serde_json::Value;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

const ENOTCONN: i32 = libc::ENOTCONN;
const ECONNRESET: i32 = libc::ECONNRESET;
const EPIPE: i32 = libc::EPIPE;

/// Log every failure of the calls the scenarios fail (no `close` rule: closes succeed).
const LOG_IO: &str = "shutdown,read,recv,write,send:*:log";

fn context_bin() -> PathBuf {
    program("context")
}

/// Runs the context fixture with `args` under errshim, JSON format, the given rules, the hooks
/// counting bytes (`ERRSHIM_COUNT=1`).
fn run_json(args: &[&str], rules: &str) -> Run {
    run_json_counted(args, rules, true)
}

fn run_json_counted(args: &[&str], rules: &str, count: bool) -> Run {
    let r = Cmd::new(context_bin())
        .args(args)
        .shim()
        .env("ERRSHIM_FORMAT", "json")
        .env("ERRSHIM_RULES", rules)
        .env("ERRSHIM_COUNT", if count { "1" } else { "0" })
        .run();
    r.assert_ok();
    r
}

/// Every line errshim wrote to stderr, parsed as JSON (its own diagnostics, `errshim: ...`,
/// are the only other lines it writes; the fixtures write nothing else there when they pass).
fn json_events(r: &Run) -> Vec<Value> {
    r.stderr
        .lines()
        .filter(|l| !l.starts_with("errshim: "))
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("not a JSON object ({e}): {l:?}\n{}", r.describe()))
        })
        .collect()
}

/// The value of `key=` on the fixture's "<scenario> info ..." line.
fn info(r: &Run, scenario: &str, key: &str) -> String {
    let prefix = format!("{scenario} info ");
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no '{prefix}' line:\n{}", r.describe()));
    let k = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(k.as_str()))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
        .to_string()
}

fn info_fd(r: &Run, scenario: &str, key: &str) -> i64 {
    info(r, scenario, key).parse().expect("fd number")
}

/// The one event of `call` on `fd`.
fn the_event<'a>(evs: &'a [Value], call: &str, fd: i64) -> &'a Value {
    let found: Vec<&Value> = evs.iter().filter(|e| e["call"] == call && e["fd"] == fd).collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one {call} event on fd {fd} expected in {evs:#?}"
    );
    found[0]
}

/// The fixture's result lines, without the "info" lines (which hold port numbers).
fn results(stdout: &str) -> Vec<&str> {
    stdout.lines().filter(|l| !l.contains(" info ")).collect()
}

/// What an event must say.
struct Want<'a> {
    errno: &'a str,
    kind: &'a str,
    cause: &'a str,
    /// `None`: no `state` field (not a TCP socket, or a closed descriptor).
    state: Option<&'a str>,
    /// `None`: `peer` is null.
    peer: Option<String>,
    /// With `ERRSHIM_COUNT=1`; without it the same less the `last_call=` word.
    history: &'a [&'a str],
    /// What the program moved: the hooks' counts with `ERRSHIM_COUNT=1`, and the kernel's
    /// `bytes_received` and `bytes_sent` where there is a TCP state.
    bytes_in: u64,
    bytes_out: u64,
    /// `None`: no `pending_error` field.
    pending_error: Option<bool>,
    /// Whether errshim saw the socket created (then `age_ms` is there), or met it late.
    tracked: bool,
}

/// Checks an event of a run with `ERRSHIM_COUNT=1`.
fn check(ev: &Value, w: &Want<'_>, what: &str) {
    check_mode(ev, w, what, true)
}

fn check_mode(ev: &Value, w: &Want<'_>, what: &str, counted: bool) {
    let ctx = format!("{what}: {ev:#}");
    assert_eq!(ev["errno"], w.errno, "errno, {ctx}");
    assert_eq!(ev["ret"], -1, "ret, {ctx}");
    assert_eq!(ev["kind"], w.kind, "kind, {ctx}");
    assert_eq!(ev["cause"], w.cause, "cause, {ctx}");
    assert!(
        ev["cause_text"].as_str().is_some_and(|t| t.len() > 20),
        "cause_text, {ctx}"
    );
    match w.state {
        Some(s) => assert_eq!(ev["state"], s, "state, {ctx}"),
        None => assert!(ev.get("state").is_none(), "no state expected, {ctx}"),
    }
    match &w.peer {
        Some(p) => assert_eq!(ev["peer"], p.as_str(), "peer, {ctx}"),
        None => assert!(ev["peer"].is_null(), "peer must be null, {ctx}"),
    }
    let history: Vec<&str> = ev["history"]
        .as_array()
        .unwrap_or_else(|| panic!("history array, {ctx}"))
        .iter()
        .map(|v| v.as_str().expect("history words are strings"))
        .collect();
    let want_history: Vec<&str> = w
        .history
        .iter()
        .copied()
        .filter(|h| counted || !h.starts_with("last_call="))
        .collect();
    assert_eq!(history, want_history, "history, {ctx}");
    if counted {
        assert_eq!(ev["bytes_in"], w.bytes_in, "bytes_in, {ctx}");
        assert_eq!(ev["bytes_out"], w.bytes_out, "bytes_out, {ctx}");
    } else {
        assert!(
            ev.get("bytes_in").is_none() && ev.get("bytes_out").is_none(),
            "no hook counts, {ctx}"
        );
    }
    // The kernel's own figures, for every TCP socket still open: the same bytes here, where
    // the fixtures read everything that arrived, and the peer's FIN counts as one byte received.
    if w.state.is_some() {
        let fin = u64::from(w.history.contains(&"read_eof"));
        assert_eq!(ev["bytes_received"], w.bytes_in + fin, "bytes_received, {ctx}");
        assert_eq!(ev["bytes_sent"], w.bytes_out, "bytes_sent, {ctx}");
    } else {
        assert!(
            ev.get("bytes_received").is_none() && ev.get("bytes_sent").is_none(),
            "no kernel counts, {ctx}"
        );
    }
    match w.pending_error {
        Some(p) => assert_eq!(ev["pending_error"], p, "pending_error, {ctx}"),
        None => assert!(ev.get("pending_error").is_none(), "no pending_error expected, {ctx}"),
    }
    if w.tracked {
        // Created by this very run a moment ago: a small non-negative number of milliseconds.
        assert!(ev["age_ms"].as_u64().is_some_and(|a| a < 60_000), "age_ms, {ctx}");
    } else {
        assert!(ev.get("age_ms").is_none(), "a socket met late has no age, {ctx}");
    }
    assert!(ev["pid"].as_i64().is_some_and(|p| p > 0), "pid, {ctx}");
    assert_eq!(ev["pid"], ev["tid"], "single-threaded, {ctx}");
}

/// One scenario of the context fixture: the event expected for one call on the descriptor the
/// fixture names in its "info fd=" line.
struct Case {
    scenario: &'static str,
    call: &'static str,
    want: fn(&Run) -> Want<'static>,
}

fn peer_of(r: &Run, scenario: &str) -> Option<String> {
    Some(info(r, scenario, "peer"))
}

/// Every cause the diagnosis names for a failure the kernel really produced: for each recipe,
/// the event's cause, TCP state, peer (the address the fixture printed from its own `connect`
/// argument or `accept` result, although the kernel forgot it by then), history, byte counts
/// (the fixture moves known numbers of bytes first) and pending error. Logging changes no
/// result the program sees: its result lines are the same with and without errshim.
#[test]
fn every_cause_from_real_kernel_situations() {
    let cases: Vec<Case> = vec![
        // A: never connected; the read before the shutdown shows up as the last call.
        Case {
            scenario: "never_connected",
            call: "read",
            want: |_| Want {
                errno: "ENOTCONN",
                kind: "tcp4",
                cause: "never_connected",
                state: Some("CLOSE"),
                peer: None,
                history: &["none"],
                bytes_in: 0,
                bytes_out: 0,
                pending_error: Some(false),
                tracked: true,
            },
        },
        Case {
            scenario: "never_connected",
            call: "shutdown",
            want: |_| Want {
                errno: "ENOTCONN",
                kind: "tcp4",
                cause: "never_connected",
                state: Some("CLOSE"),
                peer: None,
                history: &["none", "first_error=read:ENOTCONN", "last_call=read"],
                bytes_in: 0,
                bytes_out: 0,
                pending_error: Some(false),
                tracked: true,
            },
        },
        // B, on the accepted end: 11 bytes in, 7 out, our FIN, the peer's FIN (read 0).
        Case {
            scenario: "fin",
            call: "shutdown",
            want: |r| Want {
                errno: "ENOTCONN",
                kind: "tcp4",
                cause: "peer_closed",
                state: Some("CLOSE"),
                peer: peer_of(r, "fin"),
                history: &["accepted", "read_eof", "shutdown=SHUT_WR", "last_call=read"],
                bytes_in: 11,
                bytes_out: 7,
                pending_error: Some(false),
                tracked: true,
            },
        },
        // C, on the connecting end: 5 bytes in, 3 out, then the peer's RST.
        Case {
            scenario: "reset",
            call: "read",
            want: |r| Want {
                errno: "ECONNRESET",
                kind: "tcp4",
                cause: "peer_reset",
                state: Some("CLOSE"),
                peer: peer_of(r, "reset"),
                history: &["connected", "reset_seen", "last_call=write"],
                bytes_in: 5,
                bytes_out: 3,
                // This very read consumed the error.
                pending_error: Some(false),
                tracked: true,
            },
        },
        Case {
            scenario: "reset",
            call: "shutdown",
            want: |r| Want {
                errno: "ENOTCONN",
                kind: "tcp4",
                cause: "peer_reset",
                state: Some("CLOSE"),
                peer: peer_of(r, "reset"),
                history: &[
                    "connected",
                    "reset_seen",
                    "first_error=read:ECONNRESET",
                    "last_call=read",
                ],
                bytes_in: 5,
                bytes_out: 3,
                pending_error: Some(false),
                tracked: true,
            },
        },
        Case {
            scenario: "reset",
            call: "write",
            want: |r| Want {
                errno: "EPIPE",
                kind: "tcp4",
                cause: "peer_reset",
                state: Some("CLOSE"),
                peer: peer_of(r, "reset"),
                history: &[
                    "connected",
                    "reset_seen",
                    "epipe_seen",
                    "first_error=read:ECONNRESET",
                    "first_error=shutdown:ENOTCONN",
                    "last_call=shutdown",
                ],
                bytes_in: 5,
                bytes_out: 3,
                pending_error: Some(false),
                tracked: true,
            },
        },
        // D: reset before accept; the reset is still pending when shutdown fails.
        Case {
            scenario: "reset_before_accept",
            call: "shutdown",
            want: |r| Want {
                errno: "ENOTCONN",
                kind: "tcp4",
                cause: "peer_reset",
                state: Some("CLOSE"),
                peer: peer_of(r, "reset_before_accept"),
                history: &["accepted"],
                bytes_in: 0,
                bytes_out: 0,
                pending_error: Some(true),
                tracked: true,
            },
        },
        Case {
            scenario: "reset_before_accept",
            call: "read",
            want: |r| Want {
                errno: "ECONNRESET",
                kind: "tcp4",
                cause: "peer_reset",
                state: Some("CLOSE"),
                peer: peer_of(r, "reset_before_accept"),
                history: &[
                    "accepted",
                    "reset_seen",
                    "first_error=shutdown:ENOTCONN",
                    "last_call=shutdown",
                ],
                bytes_in: 0,
                bytes_out: 0,
                pending_error: Some(false),
                tracked: true,
            },
        },
        // E: refused, blocking (the error was returned by connect) and non-blocking (pending).
        Case {
            scenario: "refused",
            call: "shutdown",
            want: |r| Want {
                errno: "ENOTCONN",
                kind: "tcp4",
                cause: "connect_failed",
                state: Some("CLOSE"),
                peer: peer_of(r, "refused"),
                // The failed connect went through errshim's failure path, which notes the call.
                history: &[
                    "connect_failed",
                    "connect=ECONNREFUSED",
                    "first_error=connect:ECONNREFUSED",
                    "last_call=connect",
                ],
                bytes_in: 0,
                bytes_out: 0,
                pending_error: Some(false),
                tracked: true,
            },
        },
        Case {
            scenario: "refused_nb",
            call: "shutdown",
            want: |r| Want {
                errno: "ENOTCONN",
                kind: "tcp4",
                cause: "connect_failed",
                state: Some("CLOSE"),
                peer: peer_of(r, "refused_nb"),
                history: &["connect_pending"],
                bytes_in: 0,
                bytes_out: 0,
                pending_error: Some(true),
                tracked: true,
            },
        },
        // F: a connect stuck in SYN_SENT, torn down by a first shutdown (which leaves
        // ECONNRESET pending), then a second one.
        Case {
            scenario: "syn_sent",
            call: "shutdown",
            want: |r| Want {
                errno: "ENOTCONN",
                kind: "tcp4",
                cause: "shut_down_before",
                state: Some("CLOSE"),
                peer: peer_of(r, "syn_sent"),
                history: &["connect_pending", "shutdown=SHUT_RDWR", "last_call=shutdown"],
                bytes_in: 0,
                bytes_out: 0,
                pending_error: Some(true),
                tracked: true,
            },
        },
        // G: a listener torn down by a first shutdown, then a second one.
        Case {
            scenario: "listener_torn",
            call: "shutdown",
            want: |_| Want {
                errno: "ENOTCONN",
                kind: "tcp4",
                cause: "shut_down_before",
                state: Some("CLOSE"),
                peer: None,
                history: &["listening", "shutdown=SHUT_RDWR", "last_call=shutdown"],
                bytes_in: 0,
                bytes_out: 0,
                pending_error: Some(false),
                tracked: true,
            },
        },
        // A live listener: read gives ENOTCONN.
        Case {
            scenario: "listener_read",
            call: "read",
            want: |_| Want {
                errno: "ENOTCONN",
                kind: "tcp4",
                cause: "listener",
                state: Some("LISTEN"),
                peer: None,
                history: &["listening"],
                bytes_in: 0,
                bytes_out: 0,
                pending_error: Some(false),
                tracked: true,
            },
        },
        // A, UDP: 9 bytes to itself and back, then shutdown of the unconnected socket.
        Case {
            scenario: "udp",
            call: "shutdown",
            want: |_| Want {
                errno: "ENOTCONN",
                kind: "udp4",
                cause: "udp_unconnected",
                state: None,
                peer: None,
                history: &["none", "last_call=recvfrom"],
                bytes_in: 9,
                bytes_out: 9,
                pending_error: Some(false),
                tracked: true,
            },
        },
    ];

    let mut seen_causes = std::collections::BTreeSet::new();
    let mut scenarios: Vec<&str> = cases.iter().map(|c| c.scenario).collect();
    scenarios.dedup();
    for (scenario, counted) in scenarios.iter().flat_map(|s| [(*s, true), (*s, false)]) {
        let bare = Cmd::new(context_bin()).args([scenario]).run();
        bare.assert_ok();
        let r = run_json_counted(&[scenario], LOG_IO, counted);
        assert_eq!(
            results(&r.stdout),
            results(&bare.stdout),
            "{scenario}: logging must not change what the program sees"
        );
        let evs = json_events(&r);
        let fd = info_fd(&r, scenario, "fd");
        let mine: Vec<&Case> = cases.iter().filter(|c| c.scenario == scenario).collect();
        assert_eq!(
            evs.len(),
            mine.len(),
            "{scenario}: one event per failing call:\n{}",
            r.describe()
        );
        for case in mine {
            let ev = the_event(&evs, case.call, fd);
            let want = (case.want)(&r);
            check_mode(
                ev,
                &want,
                &format!("{scenario} {} counted={counted}", case.call),
                counted,
            );
            assert_eq!(ev["action"], "log");
            assert_eq!(ev["returned"], -1);
            assert_eq!(ev["comm"], "context");
            assert_eq!(ev["rule"], 1);
            seen_causes.insert(want.cause);
        }
    }
    // The peer of the reset-before-accept connection is the client's own address, which
    // accept() returned although the connection was already gone.
    let r = run_json(&["reset_before_accept"], LOG_IO);
    assert_eq!(
        info(&r, "reset_before_accept", "peer"),
        info(&r, "reset_before_accept", "client_local")
    );
    // Local addresses the kernel still reports, in CLOSE too.
    let r = run_json(&["udp"], LOG_IO);
    assert_eq!(json_events(&r)[0]["local"], info(&r, "udp", "local").as_str());
    // What the fixture saw: the non-blocking refusal is still pending for the program itself.
    let r = run_json(&["refused_nb"], LOG_IO);
    assert_eq!(
        result_of(&r, "refused_nb so_error"),
        (libc::ECONNREFUSED as i64, libc::EILSEQ)
    );
    assert_eq!(
        seen_causes.into_iter().collect::<Vec<_>>(),
        [
            "connect_failed",
            "listener",
            "never_connected",
            "peer_closed",
            "peer_reset",
            "shut_down_before",
            "udp_unconnected"
        ]
    );
}

/// ENOTCONN from `close`, which only another interposer can produce (the counting interposer
/// preloaded behind errshim really closes and then reports ENOTCONN): the default rule ignores
/// it, and the event says `not_from_kernel`, with the peer the socket had been connected to,
/// the bytes it sent and its history, although the descriptor is gone by the time of the event.
#[test]
fn close_enotconn_is_not_from_kernel() {
    let interposer = shared_lib("interposer");
    let run = |shim: bool| {
        let mut c = Cmd::new(context_bin())
            .args(["close_enotconn"])
            .env("INTERPOSER_CLOSE_ENOTCONN", "1")
            .env("ERRSHIM_COUNT", "1")
            .env("ERRSHIM_FORMAT", "json");
        if shim {
            c = c.shim();
        }
        let r = c.also_preload(interposer.clone()).run();
        r.assert_ok();
        r
    };
    let bare = run(false);
    assert_eq!(result_of(&bare, "close_enotconn close"), (-1, ENOTCONN));
    let r = run(true);
    assert_eq!(result_of(&r, "close_enotconn close"), (0, libc::EILSEQ));
    let evs = json_events(&r);
    let fd = info_fd(&r, "close_enotconn", "fd");
    let ev = the_event(&evs, "close", fd);
    check(
        ev,
        &Want {
            errno: "ENOTCONN",
            kind: "tcp4",
            cause: "not_from_kernel",
            state: None,
            peer: Some(info(&r, "close_enotconn", "peer")),
            history: &["connected", "last_call=send"],
            bytes_in: 0,
            bytes_out: 6,
            pending_error: None,
            tracked: true,
        },
        "close_enotconn",
    );
    assert_eq!(ev["action"], "ignore");
    assert_eq!(ev["returned"], 0);
    assert!(ev["local"].is_null(), "the descriptor is gone: no local address: {ev}");
    // Every close in the program went through the interposer; each event is the right socket's.
    for e in &evs {
        assert_eq!(e["call"], "close", "{e}");
        assert_eq!(e["cause"], "not_from_kernel", "{e}");
    }
}

const PY_CONTEXT: &str = r#"
import socket, struct

def exactly(s, n):
    got = b""
    while len(got) < n:
        part = s.recv(n - len(got))
        assert part, "unexpected EOF"
        got += part
    return got

# Recipe B on the accepted end: 13 bytes in, 21 out, our FIN, then the peer's.
l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
l.bind(("127.0.0.1", 0))
l.listen(4)
c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
c.connect(l.getsockname())
s, (ip, port) = l.accept()
print(f"fin info fd={s.fileno()} peer={ip}:{port}", flush=True)
c.sendall(b"x" * 13)
exactly(s, 13)
s.sendall(b"y" * 21)
exactly(c, 21)
s.shutdown(socket.SHUT_WR)
assert c.recv(100) == b""
c.close()
assert s.recv(100) == b""
try:
    s.shutdown(socket.SHUT_RDWR)
    print("fin shutdown ok", flush=True)
except OSError as e:
    print(f"fin shutdown errno {e.errno}", flush=True)
s.close()

# Recipe C on the connecting end: 6 bytes in, 4 out, then the server aborts (SO_LINGER 0).
c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
addr = l.getsockname()
c.connect(addr)
s, _ = l.accept()
print(f"reset info fd={c.fileno()} peer={addr[0]}:{addr[1]}", flush=True)
c.sendall(b"q" * 4)
s.sendall(b"r" * 6)
exactly(c, 6)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
try:
    c.recv(100)
    print("reset recv ok", flush=True)
except OSError as e:
    print(f"reset recv errno {e.errno}", flush=True)
try:
    c.shutdown(socket.SHUT_WR)
    print("reset shutdown ok", flush=True)
except OSError as e:
    print(f"reset shutdown errno {e.errno}", flush=True)
c.close()
l.close()
"#;

/// The same from Python, whose sockets go through `connect`, `accept4` (with an address),
/// `send`, `recv` and `shutdown`: a finished FIN exchange on the accepted end and a reset on
/// the connecting end, each with its peer, history and byte counts. Logging leaves Python's
/// exceptions exactly as they are without errshim.
#[test]
fn python_peer_closed_and_peer_reset() {
    if !require_tool("python3") {
        return;
    }
    let bare = Cmd::new("python3").args(["-c", PY_CONTEXT]).run();
    bare.assert_ok();
    let r = Cmd::new("python3")
        .args(["-c", PY_CONTEXT])
        .shim()
        .env("ERRSHIM_COUNT", "1")
        .env("ERRSHIM_FORMAT", "json")
        .env("ERRSHIM_RULES", LOG_IO)
        .run();
    r.assert_ok();
    assert_eq!(results(&r.stdout), results(&bare.stdout));
    assert_eq!(
        results(&r.stdout),
        [
            "fin shutdown errno 107",
            "reset recv errno 104",
            "reset shutdown errno 107"
        ],
        "{}",
        r.describe()
    );
    let evs = json_events(&r);
    assert_eq!(evs.len(), 3, "{}", r.describe());
    for e in &evs {
        assert_eq!(e["comm"], "python3", "{e}");
    }
    let fin = the_event(&evs, "shutdown", info_fd(&r, "fin", "fd"));
    check(
        fin,
        &Want {
            errno: "ENOTCONN",
            kind: "tcp4",
            cause: "peer_closed",
            state: Some("CLOSE"),
            peer: Some(info(&r, "fin", "peer")),
            history: &["accepted", "read_eof", "shutdown=SHUT_WR", "last_call=recv"],
            bytes_in: 13,
            bytes_out: 21,
            pending_error: Some(false),
            tracked: true,
        },
        "python fin",
    );
    let fd = info_fd(&r, "reset", "fd");
    let reset_recv = the_event(&evs, "recv", fd);
    check(
        reset_recv,
        &Want {
            errno: "ECONNRESET",
            kind: "tcp4",
            cause: "peer_reset",
            state: Some("CLOSE"),
            peer: Some(info(&r, "reset", "peer")),
            history: &["connected", "reset_seen", "last_call=recv"],
            bytes_in: 6,
            bytes_out: 4,
            pending_error: Some(false),
            tracked: true,
        },
        "python reset recv",
    );
    let reset_shutdown = the_event(&evs, "shutdown", fd);
    check(
        reset_shutdown,
        &Want {
            errno: "ENOTCONN",
            kind: "tcp4",
            cause: "peer_reset",
            state: Some("CLOSE"),
            peer: Some(info(&r, "reset", "peer")),
            history: &[
                "connected",
                "reset_seen",
                "first_error=recv:ECONNRESET",
                "last_call=recv",
            ],
            bytes_in: 6,
            bytes_out: 4,
            pending_error: Some(false),
            tracked: true,
        },
        "python reset shutdown",
    );
}

/// The new socket's events in a reuse scenario: (read, shutdown), after checking that the fixture
/// really got the old number back and that nothing of the old connection shows.
fn reuse_events(scenario: &str) -> (Run, Value, Value) {
    let r = run_json(&[scenario], LOG_IO);
    let (old, new) = (info_fd(&r, scenario, "old_fd"), info_fd(&r, scenario, "new_fd"));
    assert_eq!(old, new, "the fixture must get the old number back");
    let old_peer = info(&r, scenario, "old_peer");
    let evs = json_events(&r);
    for e in evs.iter().filter(|e| e["call"] != "recv") {
        assert_ne!(e["peer"], old_peer.as_str(), "{scenario}: the old peer leaked: {e}");
    }
    let read = the_event(&evs, "read", new).clone();
    let shutdown = the_event(&evs, "shutdown", new).clone();
    (r, read, shutdown)
}

/// A socket closed where no `close` hook sees it (`fclose(fdopen(fd))`, glibc's internal close)
/// and a new socket under the same number: through the hooked `socket()` it is a fresh, never
/// connected socket; created behind every hook (raw syscall) it is a socket met late. Either
/// way no old peer, history or bytes. The raw variant is the one that shows the `fclose` hook
/// forgot the record: nothing else would have.
#[test]
fn no_leak_across_reuse_after_fclose() {
    let (r, read, shutdown) = reuse_events("reuse_fclose");
    assert_eq!(result_of(&r, "reuse_fclose fclose"), (0, libc::EILSEQ));
    let fresh = |history: &'static [&'static str]| Want {
        errno: "ENOTCONN",
        kind: "tcp4",
        cause: "never_connected",
        state: Some("CLOSE"),
        peer: None,
        history,
        bytes_in: 0,
        bytes_out: 0,
        pending_error: Some(false),
        tracked: true,
    };
    check(&read, &fresh(&["none"]), "reuse_fclose read");
    check(
        &shutdown,
        &fresh(&["none", "first_error=read:ENOTCONN", "last_call=read"]),
        "reuse_fclose shutdown",
    );

    let (_, read, shutdown) = reuse_events("reuse_fclose_raw");
    let late = |history: &'static [&'static str]| Want {
        errno: "ENOTCONN",
        kind: "tcp4",
        cause: "unknown",
        state: Some("CLOSE"),
        peer: None,
        history,
        bytes_in: 0,
        bytes_out: 0,
        pending_error: Some(false),
        tracked: false,
    };
    check(&read, &late(&["seen_late"]), "reuse_fclose_raw read");
    check(
        &shutdown,
        &late(&["seen_late", "last_call=read"]),
        "reuse_fclose_raw shutdown",
    );
}

/// Reuse behind every hook's back: `syscall(SYS_close)` then `syscall(SYS_socket)` getting the
/// same number. Whether or not errshim had already met the old socket at an event (and so knew
/// its inode), the new socket's events say `seen_late` and show no old peer, history or bytes.
#[test]
fn no_leak_across_reuse_behind_every_hook() {
    let late = |history: &'static [&'static str]| Want {
        errno: "ENOTCONN",
        kind: "tcp4",
        cause: "unknown",
        state: Some("CLOSE"),
        peer: None,
        history,
        bytes_in: 0,
        bytes_out: 0,
        pending_error: Some(false),
        tracked: false,
    };
    for scenario in ["reuse_raw", "reuse_raw_noevent"] {
        let (r, read, shutdown) = reuse_events(scenario);
        check(&read, &late(&["seen_late"]), &format!("{scenario} read"));
        check(
            &shutdown,
            &late(&["seen_late", "last_call=read"]),
            &format!("{scenario} shutdown"),
        );
        if scenario == "reuse_raw" {
            // The old socket's own event (a recv that would block) did describe the old one.
            let evs = json_events(&r);
            let old = evs.iter().find(|e| e["call"] == "recv").expect("old recv event");
            assert_eq!(old["errno"], "EAGAIN");
            assert_eq!(old["peer"], info(&r, scenario, "old_peer").as_str());
            assert_eq!(old["state"], "ESTABLISHED");
            assert_eq!(
                (old["bytes_in"].as_u64(), old["bytes_out"].as_u64()),
                (Some(4), Some(8))
            );
        }
    }
}

/// Logging every call (`*:*:log`) changes nothing the program sees: after a reset that errshim
/// logged while it was still pending, the program's read still gets ECONNRESET and its writes
/// get what they get without errshim; and after such an event the program's own
/// `getsockopt(SO_ERROR)` still returns ECONNRESET (errshim looked with poll, never SO_ERROR).
/// The program's whole output is the same with and without errshim.
#[test]
fn observing_changes_nothing() {
    let bare = Cmd::new(context_bin()).args(["observe"]).run();
    bare.assert_ok();
    let r = run_json(&["observe"], "*:*:log");
    assert_eq!(r.stdout, bare.stdout, "the program's whole output");
    for step in ["a_shutdown", "b_shutdown"] {
        assert_eq!(result_of(&r, &format!("observe {step}")), (-1, ENOTCONN));
    }
    assert_eq!(result_of(&r, "observe a_read"), (-1, ECONNRESET));
    assert_eq!(result_of(&r, "observe a_write"), (-1, EPIPE));
    assert_eq!(result_of(&r, "observe a_write_again"), (-1, EPIPE));
    assert_eq!(
        result_of(&r, "observe b_so_error"),
        (ECONNRESET as i64, libc::EILSEQ),
        "SO_ERROR still holds the reset after errshim's event"
    );
    assert_eq!(result_of(&r, "observe b_so_error_again"), (0, libc::EILSEQ));
    assert_eq!(result_of(&r, "observe b_read"), (0, libc::EILSEQ));
    assert_eq!(result_of(&r, "observe b_write"), (-1, EPIPE));

    let evs = json_events(&r);
    let calls: Vec<&str> = evs.iter().map(|e| e["call"].as_str().unwrap()).collect();
    assert_eq!(
        calls,
        ["shutdown", "read", "write", "write", "shutdown", "write"],
        "{}",
        r.describe()
    );
    // Both shutdowns were logged while the reset was pending.
    for i in [0, 4] {
        assert_eq!(evs[i]["pending_error"], true, "{}", evs[i]);
        assert_eq!(evs[i]["cause"], "peer_reset", "{}", evs[i]);
        assert_eq!(evs[i]["history"], serde_json::json!(["connected", "last_call=write"]));
    }
    // Connection b: the program consumed the reset itself (SO_ERROR, which errshim sees it
    // read, and keeps), so its read returned 0; the write's EPIPE is still diagnosed as the
    // reset it is, not as an orderly close (the socket is in CLOSE although this end never
    // sent its FIN).
    let b_write = &evs[5];
    assert_eq!(
        b_write["history"],
        serde_json::json!([
            "connected",
            "read_eof",
            "reset_seen",
            "epipe_seen",
            "first_error=shutdown:ENOTCONN",
            "last_call=read"
        ])
    );
    assert_eq!(b_write["state"], "CLOSE");
    assert_eq!(b_write["cause"], "peer_reset", "{b_write}");
}

/// Bytes that are not valid in a JSON string as they are, or not UTF-8 at all, in the program's
/// name (comm: the first 15 bytes of the executable's name) and in AF_UNIX addresses (a path
/// and an abstract name): every line still parses, and the strings decode to the original bytes,
/// with U+FFFD for the invalid ones. The text format escapes the same bytes as `\xNN`.
#[test]
fn json_strings_escaped_whatever_the_bytes() {
    let dir = TempDir::new("escape");
    let exe_name: &[u8] = b"a\"b\\c d\xffe-context";
    let exe = dir.0.join(std::ffi::OsStr::from_bytes(exe_name));
    // A hard link, not a copy: a copy is open for writing for a moment, and a child that
    // another test thread forks meanwhile would inherit that descriptor and make our exec
    // fail with ETXTBSY.
    std::fs::hard_link(context_bin(), &exe).unwrap();
    let mut sock_path = dir.0.as_os_str().as_bytes().to_vec();
    sock_path.extend_from_slice(b"/s\"o\\ck \xfe\x01\n.sock");
    assert!(
        sock_path.len() < 100,
        "socket path too long for sun_path: {sock_path:?}"
    );
    let abstract_name: &[u8] = b"ab\"s\\t \xfd\x02\t\x7f";
    let args = [
        std::ffi::OsStr::new("unix_path"),
        std::ffi::OsStr::from_bytes(&sock_path),
        std::ffi::OsStr::from_bytes(abstract_name),
    ];
    let run = |format: &str| {
        let r = Cmd::new(&exe)
            .args(args)
            .shim()
            .env("ERRSHIM_FORMAT", format)
            .env("ERRSHIM_RULES", "*:*:log")
            .run();
        r.assert_ok();
        r
    };
    let r = run("json");
    assert_eq!(result_of(&r, "unix_path write_path"), (-1, ENOTCONN));
    assert_eq!(result_of(&r, "unix_path write_abstract"), (-1, ENOTCONN));
    let evs = json_events(&r);
    assert_eq!(evs.len(), 2, "{}", r.describe());
    let comm = String::from_utf8_lossy(&exe_name[..15]).into_owned();
    assert_eq!(comm, "a\"b\\c d\u{fffd}e-conte");
    let locals = [
        String::from_utf8_lossy(&sock_path).into_owned(),
        format!("@{}", String::from_utf8_lossy(abstract_name)),
    ];
    for (e, local) in evs.iter().zip(&locals) {
        assert_eq!(e["comm"], comm.as_str(), "{e}");
        assert_eq!(e["kind"], "unix-stream", "{e}");
        assert_eq!(e["local"], local.as_str(), "{e}");
        assert_eq!(e["errno"], "ENOTCONN", "{e}");
        assert!(e["peer"].is_null(), "{e}");
    }
    // Raw control bytes never reach the log line: one event, one line.
    assert!(!r.stderr.contains('\u{1}') && !r.stderr.contains('\u{7f}'));

    let t = run("text");
    let ev = t.events();
    assert_eq!(ev.len(), 2, "{}", t.describe());
    for e in &ev {
        assert!(e.contains(" comm=a\"b\\x5cc\\x20d\\xffe-conte write(fd="), "{e}");
    }
    assert!(
        ev[0].contains("local=") && ev[0].contains("/s\"o\\x5cck\\x20\\xfe\\x01\\x0a.sock peer=?"),
        "{}",
        ev[0]
    );
    assert!(
        ev[1].contains(" local=@ab\"s\\x5ct\\x20\\xfd\\x02\\x09\\x7f peer=?"),
        "{}",
        ev[1]
    );
}

/// The text format (the default) carries the same context as the JSON: for recipes B and C,
/// each text line's `| state=... pending_error=... age_ms=... bytes_received=... bytes_sent=...
/// bytes_in=... bytes_out=... history=... | cause=CODE: sentence` parts say what the JSON of the
/// same run says; without `ERRSHIM_COUNT=1` the hooks' counts and the last call are left out.
#[test]
fn text_format_carries_the_same_context() {
    // Round-trip times and the times since the last segment differ from run to run.
    let timeless = |line: &str| -> String {
        let mut out = String::new();
        for (i, word) in line.split(' ').enumerate() {
            if i > 0 {
                out.push(' ');
            }
            match word.split_once('=') {
                Some(("rtt_us", _)) => out.push_str("rtt_us=RTT"),
                Some((k, _)) if k.starts_with("last_") && k.ends_with("_ms") => {
                    out.push_str(k);
                    out.push_str("=MS");
                }
                _ => out.push_str(word),
            }
        }
        out
    };
    let text_run = |scenario: &str, count: &str| {
        let r = Cmd::new(context_bin())
            .args([scenario])
            .shim()
            .env("ERRSHIM_RULES", LOG_IO)
            .env("ERRSHIM_COUNT", count)
            .run();
        r.assert_ok();
        r
    };
    let plain = text_run("reset", "0");
    let ev = plain.events();
    assert_eq!(ev.len(), 3, "{}", plain.describe());
    assert!(
        timeless(ev[1]).ends_with(
            " bytes_received=5 bytes_sent=3 retransmits=0 probes=0 backoff=0 unacked=0 total_retrans=0 \
             bytes_retrans=0 rtt_us=RTT last_data_sent_ms=MS last_data_recv_ms=MS last_ack_recv_ms=MS \
             history=connected,reset_seen,first_error=read:ECONNRESET \
             | cause=peer_reset: the server aborted the connection (RST), or a middlebox on the path reset it \
             (a load balancer's or NAT's idle timeout: keep this side's keepalive or idle time below the path's)"
        ),
        "{}",
        ev[1]
    );
    let r = text_run("reset", "1");
    let ev = r.events();
    assert_eq!(ev.len(), 3, "{}", r.describe());
    let fd = info_fd(&r, "reset", "fd");
    let peer = info(&r, "reset", "peer");
    let shutdown = ev[1];
    assert!(
        shutdown.contains(&format!(
            " shutdown(fd={fd}, SHUT_WR) = -1 ENOTCONN -> logged, returned -1 ENOTCONN | tcp4 local=127.0.0.1:"
        )),
        "{shutdown}"
    );
    assert!(
        shutdown.contains(&format!(" peer={peer} rule=1 | state=CLOSE pending_error=no age_ms=")),
        "{shutdown}"
    );
    assert!(
        timeless(shutdown).ends_with(
            " bytes_received=5 bytes_sent=3 bytes_in=5 bytes_out=3 retransmits=0 probes=0 backoff=0 unacked=0 \
             total_retrans=0 bytes_retrans=0 rtt_us=RTT last_data_sent_ms=MS last_data_recv_ms=MS \
             last_ack_recv_ms=MS history=connected,reset_seen,first_error=read:ECONNRESET,last_call=read \
             | cause=peer_reset: the server aborted the connection (RST), or a middlebox on the path reset it \
             (a load balancer's or NAT's idle timeout: keep this side's keepalive or idle time below the path's)"
        ),
        "{shutdown}"
    );

    // Every event of B and C, text against JSON.
    for scenario in ["fin", "reset"] {
        let text = text_run(scenario, "1");
        let json = run_json(&[scenario], LOG_IO);
        let (tev, jev) = (text.events(), json_events(&json));
        assert_eq!(tev.len(), jev.len(), "{scenario}");
        for (t, j) in tev.iter().zip(&jev) {
            let history: Vec<&str> = j["history"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let pending = if j["pending_error"] == true { "yes" } else { "no" };
            let (head, tail) = t
                .split_once(" | state=")
                .unwrap_or_else(|| panic!("no state part: {t}"));
            assert!(head.contains(&format!(" {}(fd=", j["call"].as_str().unwrap())), "{t}");
            // Ports differ between the two runs: each line's peer is its own run's.
            assert!(
                head.contains(&format!(" peer={} ", info(&text, scenario, "peer"))),
                "{t}"
            );
            assert_eq!(j["peer"], info(&json, scenario, "peer").as_str());
            let expect_start = format!("{} pending_error={pending} age_ms=", j["state"].as_str().unwrap());
            assert!(tail.starts_with(&expect_start), "{t}");
            let evidence: String = [
                "retransmits",
                "probes",
                "backoff",
                "unacked",
                "total_retrans",
                "bytes_retrans",
            ]
            .iter()
            .map(|k| format!(" {k}={}", j[*k]))
            .collect();
            let expect_end = format!(
                " bytes_received={} bytes_sent={} bytes_in={} bytes_out={}{evidence} rtt_us=RTT last_data_sent_ms=MS \
                 last_data_recv_ms=MS last_ack_recv_ms=MS history={} | cause={}: {}",
                j["bytes_received"],
                j["bytes_sent"],
                j["bytes_in"],
                j["bytes_out"],
                history.join(","),
                j["cause"].as_str().unwrap(),
                j["cause_text"].as_str().unwrap()
            );
            assert!(
                timeless(t).ends_with(&expect_end),
                "{t}\nexpected to end with: {expect_end}"
            );
            let age = tail[expect_start.len()..].split(' ').next().unwrap();
            assert!(age.parse::<u64>().is_ok(), "age_ms is a number: {t}");
        }
    }
}

/// The kernel's state overrides stale history: a non-blocking connect completed with `poll`
/// and `SO_ERROR` (haproxy's way; no hook sees it) is connected, not `connect_pending` or
/// `connect_failed`. Errnos that are not about the end get their own cause (EAGAIN:
/// `would_block`), and a reset's text names the client only on an accepted connection and the
/// server on one the program made.
#[test]
fn kernel_state_overrides_stale_history_and_texts_name_the_right_side() {
    let script = r#"
import errno, select, socket, struct
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
c = socket.socket(); c.setblocking(False)
print("connect", errno.errorcode.get(c.connect_ex(srv.getsockname()), "ok"))
select.select([], [c], [], 10)
print("so_error", c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
try:
    c.recv(10)
except BlockingIOError as e:
    print("recv", errno.errorcode[e.errno])
conn, _ = srv.accept()
# The server end aborts: an RST to the client, which reads ECONNRESET.
conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); conn.close()
select.select([c], [], [], 10)
try:
    c.recv(10)
except ConnectionResetError as e:
    print("recv", errno.errorcode[e.errno])
# And the other way round: a client that aborts an accepted connection.
d = socket.socket(); d.connect(srv.getsockname()); conn2, _ = srv.accept()
d.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); d.close()
select.select([conn2], [], [], 10)
try:
    conn2.recv(10)
except ConnectionResetError as e:
    print("recv", errno.errorcode[e.errno])
"#;
    let r = Cmd::new("python3")
        .args(["-c", script])
        .shim()
        .env("ERRSHIM_RULES", "+recv:EAGAIN,ECONNRESET:log")
        .run();
    r.assert_ok();
    assert_eq!(
        r.stdout,
        "connect EINPROGRESS\nso_error 0\nrecv EAGAIN\nrecv ECONNRESET\nrecv ECONNRESET\n",
        "{}",
        r.describe()
    );
    let ev = r.events();
    assert_eq!(ev.len(), 3, "{}", r.describe());
    assert!(
        ev[0].contains(" = -1 EAGAIN -> logged")
            && ev[0].contains("state=ESTABLISHED")
            && ev[0].contains("history=connected ")
            && ev[0].contains("| cause=would_block: a non-blocking call found nothing to do yet"),
        "{}",
        ev[0]
    );
    assert!(
        ev[1].contains(" = -1 ECONNRESET -> logged")
            && ev[1].contains("history=connected,")
            // The server reset it before sending anything: the text says what does that.
            && ev[1].contains("| cause=peer_reset: the server, or a middlebox, reset the connection before sending a byte"),
        "{}",
        ev[1]
    );
    assert!(
        ev[2].contains("history=accepted,")
            && ev[2].contains("| cause=peer_reset: the client aborted the connection (RST), or a middlebox"),
        "{}",
        ev[2]
    );
}
