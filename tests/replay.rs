//! `errshim replay LOG`: the fault rules made from a JSON log's real failures, from hand-made
//! logs (each the events errshim writes, cut to the fields replay reads), checked against the
//! library under test. The lab's real failures, replayed over loopback, are in tests/lab.rs.

mod common;

use common::*;
use serde_json::{json, Value};

/// A JSON event of a TCP connection the program made to port 8080, with `fields` over it.
fn event(fields: Value) -> Value {
    let mut e = json!({
        "ts": "2026-12-01T10:00:00.000001Z", "pid": 7, "tid": 7, "comm": "client",
        "call": "shutdown", "fd": 3, "how": "SHUT_RDWR", "ret": -1, "errno": "ENOTCONN",
        "action": "ignore", "returned": 0, "kind": "tcp4", "local": "10.0.0.2:40000",
        "peer": "10.0.0.9:8080", "state": "CLOSE", "age_ms": 40, "bytes_received": 8,
        "bytes_sent": 1006, "history": ["connected"], "cause": "peer_reset", "rule": 1,
    });
    for (k, v) in fields.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

/// `errshim --lib LIB replay ARGS` on `events` (JSON lines, amid a line of the program's).
fn replay(events: &[Value], args: &[&str]) -> Run {
    let mut log = String::from("server: starting\n");
    for e in events {
        log += &format!("{e}\n");
    }
    Cmd::new(manifest_dir().join("scripts/errshim"))
        .args(["--lib"])
        .arg_path(&lib())
        .args(["replay"])
        .args(args)
        .stdin(log.as_bytes())
        .run()
}

/// The ERRSHIM_FAULTS value a replay printed (it must succeed).
fn rules_of(events: &[Value], args: &[&str]) -> (String, String) {
    let r = replay(events, args);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    (r.stdout.trim_end().to_string(), r.stderr)
}

#[test]
fn a_reset_in_the_history_of_the_suppressed_shutdown_is_a_real_rst_at_its_byte() {
    let ev = event(json!({"history": ["connected", "reset_seen", "first_error=recv:ECONNRESET"]}));
    let (rules, err) = rules_of(&[ev], &[]);
    // hello (6) + welcome (8) + 1000 bytes: the recv after them.
    assert_eq!(rules, "recv:reset:fd=tcp:port=8080:after_bytes=1014:max=1", "{err}");
    assert!(err.contains("recv ECONNRESET (peer_reset) on 1 connection"), "{err}");
}

#[test]
fn the_first_failure_of_a_connection_is_replayed_what_follows_is_not() {
    let recv = event(
        json!({"call": "recv", "errno": "ETIMEDOUT", "action": "log", "cause": "timeout_user",
                            "history": ["connected", "timeout_seen"], "bytes_in": 14, "bytes_out": 1000}),
    );
    let shut = event(json!({"cause": "timeout_user",
                            "history": ["connected", "timeout_seen", "first_error=recv:ETIMEDOUT"]}));
    let (rules, err) = rules_of(&[recv, shut], &[]);
    // errshim's own byte counts (ERRSHIM_COUNT=1) before the kernel's.
    assert_eq!(rules, "recv:ETIMEDOUT:fd=tcp:port=8080:after_bytes=1014:max=1", "{err}");
    assert!(
        err.contains("left out 1: later failures of a connection already replayed"),
        "{err}"
    );
}

/// A transfer's ETIMEDOUT with the kernel's evidence of how long the path had been silent (its
/// last ACK) is replayed as a stall that long, which ends in ETIMEDOUT as the real one did; a
/// library without stall= gets the errno.
#[test]
fn a_timeout_with_its_silence_is_a_stall_as_long() {
    let recv = event(
        json!({"call": "recv", "errno": "ETIMEDOUT", "action": "log", "cause": "timeout_user",
                            "history": ["connected", "timeout_seen"], "last_ack_recv_ms": 1388}),
    );
    let (rules, err) = rules_of(std::slice::from_ref(&recv), &[]);
    assert_eq!(
        rules, "recv:stall=1388ms:fd=tcp:port=8080:after_bytes=1014:max=1",
        "{err}"
    );
    let (rules, err) = rules_of(&[recv], &["--without", "stall"]);
    assert_eq!(rules, "recv:ETIMEDOUT:fd=tcp:port=8080:after_bytes=1014:max=1", "{err}");
}

#[test]
fn an_accepted_connection_is_selected_by_its_local_port_and_equal_failures_are_one_rule() {
    let evs: Vec<Value> = (0..3)
        .map(|i| {
            event(
                json!({"call": "send", "errno": "EPIPE", "action": "log", "local": "10.0.0.9:80",
                         "peer": format!("192.0.2.{i}:5000{i}"), "kind": "tcp6",
                         "history": ["accepted", "epipe_seen"], "bytes_received": 100, "bytes_sent": 0}),
            )
        })
        .collect();
    let (rules, err) = rules_of(&evs, &[]);
    // EPIPE is not what a reset gives a send (ECONNRESET): the errno, which errshim's faithful
    // fault gives with a real abort.
    assert_eq!(rules, "send:EPIPE:fd=tcp:port=80:after_bytes=100:max=3", "{err}");
}

#[test]
fn injected_suppressed_and_the_programs_own_failures_are_left_out() {
    let injected = event(
        json!({"call": "recv", "errno": "ECONNRESET", "action": "inject", "injected": true,
                                "fault": "reset", "k": 2, "cause": "injected", "fd": 4}),
    );
    let after_reset = event(json!({"fd": 5, "history": ["connected", "reset_injected"], "cause": "injected"}));
    let harmless = event(json!({"fd": 6, "history": ["connected", "reset_seen"], "local": "10.0.0.2:40001"}));
    let own = event(
        json!({"call": "write", "errno": "EBADF", "action": "log", "cause": "bad_descriptor",
                           "kind": "not-open", "fd": 9}),
    );
    let r = replay(
        &[injected.clone(), after_reset.clone(), harmless.clone(), own.clone()],
        &[],
    );
    assert_eq!(r.code, Some(1), "nothing to replay: {}", r.describe());
    assert_eq!(r.stdout, "", "{}", r.describe());
    for w in [
        "left out 2: injected by errshim",
        "suppressed as harmless (shutdown ENOTCONN: --all",
        "not on a socket (not-open)",
        "no real failure to replay",
    ] {
        assert!(r.stderr.contains(w), "{w:?}: {}", r.describe());
    }
    // --all: the suppressed shutdown's own reset, replayed as one.
    let (rules, err) = rules_of(&[injected, harmless], &["--all"]);
    assert_eq!(rules, "shutdown:reset:fd=tcp:port=8080:after_bytes=1014:max=1", "{err}");
}

#[test]
fn a_connect_failure_takes_as_long_as_it_took() {
    let timed_out = event(
        json!({"age_ms": 3050, "cause": "connect_failed", "bytes_received": 0, "bytes_sent": 0,
                                 "history": ["connect_failed", "connect=ETIMEDOUT", "first_error=connect:ETIMEDOUT"]}),
    );
    let refused = event(
        json!({"fd": 4, "age_ms": 1, "cause": "connect_failed", "local": "10.0.0.2:40002",
                               "history": ["connect_failed", "first_error=connect:ECONNREFUSED"]}),
    );
    let (rules, err) = rules_of(&[timed_out, refused], &[]);
    // port=: the connect's target (the library selects a connect by the address it is given).
    assert_eq!(
        rules, "connect:ETIMEDOUT:fd=tcp:port=8080:delay=3050ms:max=1;connect:ECONNREFUSED:fd=tcp:port=8080:max=1",
        "{err}"
    );
}

#[test]
fn what_the_library_refuses_is_dropped_and_said() {
    // ICMPv6's administratively prohibited: EACCES at connect, which no connect fault gives.
    let ev = event(json!({"cause": "unreachable", "history": ["connect_failed", "first_error=connect:EACCES"]}));
    let r = replay(std::slice::from_ref(&ev), &[]);
    assert_eq!(r.code, Some(1), "{}", r.describe());
    assert!(r.stderr.contains("dropped, the library refuses it: connect:EACCES:fd=tcp:port=8080:max=1 (errshim: config error: connect cannot return this errno"), "{}", r.describe());
    // Unchecked, it stays.
    let (rules, _) = rules_of(&[ev], &["--no-check"]);
    assert_eq!(rules, "connect:EACCES:fd=tcp:port=8080:max=1");
}

#[test]
fn at_most_16_rules_places_merge_first_then_the_rarest_go() {
    // 20 places on one port: one rule at the earliest, for all 20.
    let evs: Vec<Value> = (0..20)
        .map(|i| {
            event(json!({"fd": 10 + i, "bytes_sent": 100 * (i + 1), "bytes_received": 0,
                         "history": ["connected", "first_error=recv:ECONNRESET"]}))
        })
        .collect();
    let (rules, err) = rules_of(&evs, &[]);
    assert_eq!(rules, "recv:reset:fd=tcp:port=8080:after_bytes=100:max=20", "{err}");
    assert!(err.contains("places merged: the earliest kept"), "{err}");
    // 18 ports, port 1 twice: 16 kept, the two rarest latest dropped.
    let mut evs: Vec<Value> = (1..=18)
        .map(|p| {
            event(json!({"fd": 10 + p, "peer": format!("10.0.0.9:{p}"),
                         "history": ["connected", "first_error=recv:ECONNRESET"]}))
        })
        .collect();
    evs.push(event(
        json!({"fd": 99, "peer": "10.0.0.9:1", "history": ["connected", "first_error=recv:ECONNRESET"]}),
    ));
    let (rules, err) = rules_of(&evs, &[]);
    let rules: Vec<&str> = rules.split(';').collect();
    assert_eq!(rules.len(), 16, "{rules:?}");
    assert_eq!(rules[0], "recv:reset:fd=tcp:port=1:after_bytes=1014:max=2");
    assert_eq!(rules[15], "recv:reset:fd=tcp:port=16:after_bytes=1014:max=1");
    for p in [17, 18] {
        let w = format!("dropped, over 16 rules: recv:reset:fd=tcp:port={p}:after_bytes=1014:max=1");
        assert!(err.contains(&w), "{w}: {err}");
    }
}

#[test]
fn a_control_file_the_library_reads_and_a_value_without_newer_options() {
    let dir = TempDir::new("replay");
    let ctl = dir.path("faults");
    let ev = event(json!({"history": ["connected", "first_error=recv:ECONNRESET"]}));
    let (rules, _) = rules_of(std::slice::from_ref(&ev), &["--control", ctl.to_str().unwrap()]);
    let text = std::fs::read_to_string(&ctl).unwrap();
    assert!(
        text.starts_with("# errshim replay of stdin\n# recv ECONNRESET (peer_reset)"),
        "{text}"
    );
    assert!(text.ends_with(&format!("\n{rules}\n")), "{text}");
    // The library takes the file as its control file.
    let r = Cmd::new("true")
        .shim()
        .env("ERRSHIM_CONTROL", &ctl)
        .env("ERRSHIM_STRICT", "1")
        .env("ERRSHIM_LOG_LEVEL", "info")
        .run();
    r.assert_ok();
    assert!(!r.stderr.contains("error"), "{}", r.describe());
    let (rules, _) = rules_of(std::slice::from_ref(&ev), &["--without", "after_bytes"]);
    assert_eq!(rules, "recv:reset:fd=tcp:port=8080:max=1");
    let r = replay(&[ev], &["--without", "conn_nth"]);
    assert_eq!(r.code, Some(2), "{}", r.describe());
}

#[test]
fn text_events_and_held_back_lines_are_said() {
    let ev = event(json!({"history": ["connected", "first_error=recv:ECONNRESET"]}));
    let held = json!({"ts": "2026-12-01T10:00:05.000001Z", "pid": 7, "comm": "client", "held_back": 40,
                      "like_call": "shutdown", "like_errno": "ENOTCONN", "like_rule": 1});
    let text = "errshim 2026-12-01T10:00:00.000001Z pid=7 tid=7 comm=client recv(fd=3, len=100) = -1 ECONNRESET -> logged | tcp4 local=10.0.0.2:40000 peer=10.0.0.9:8080 rule=2 | cause=peer_reset: x";
    let log = format!("{text}\n{ev}\n{held}\n");
    let r = Cmd::new(manifest_dir().join("scripts/errshim-replay"))
        .args(["--no-check", "-"])
        .stdin(log.as_bytes())
        .run();
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert_eq!(r.stdout, "recv:reset:fd=tcp:port=8080:after_bytes=1014:max=1\n");
    assert!(r.stderr.contains("1 text event(s) left out"), "{}", r.describe());
    assert!(
        r.stderr.contains("40 event(s) the rate limit held back"),
        "{}",
        r.describe()
    );
}
