//! Real networks in a box: every scenario of the network lab (`tests/lab/netlab.py`: client,
//! middlebox and server in network namespaces, nftables on the middlebox), over IPv4 and IPv6,
//! under errshim's default rules with JSON events. Each asserts what the kernel gave the
//! program, that the program sees the same without errshim (but for the suppressed ENOTCONN),
//! and what errshim named, with the evidence its cause rests on.

mod common;

use common::*;
use serde_json::{json, Value};
use std::process::Command;
use std::sync::Mutex;

/// Whether the lab can run here: root, and the tools. Outside CI a missing piece skips loudly.
fn lab_ready() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        assert!(!in_ci(), "the network lab needs root in CI");
        eprintln!("\n*** SKIPPED: the network lab needs root (network namespaces) ***\n");
        return false;
    }
    ["ip", "nft", "conntrack", "ss", "python3"]
        .iter()
        .all(|t| require_tool(t))
}

/// One run of a scenario: `lib` None runs the client without errshim.
fn run_lab(scenario: &str, family: u8, lib: Option<&str>, extra: &[&str]) -> Value {
    let script = manifest_dir().join("tests/lab/netlab.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .args([
            "run",
            scenario,
            "--family",
            &family.to_string(),
            "--lib",
            lib.unwrap_or(""),
        ])
        .args(extra)
        .env_remove("ERRSHIM_RULES");
    let out = cmd.output().expect("running netlab.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "netlab {scenario} v{family} failed ({}):\n{stderr}\n{stdout}",
        out.status
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("netlab's JSON: {e}\n{stdout}"))
}

/// What a scenario must give: the failing call's errno per family, errshim's cause, and words
/// its text must have.
struct Expect {
    call: &'static str,
    errno4: &'static str,
    errno6: &'static str,
    cause: &'static str,
    text: &'static [&'static str],
}

/// Runs `scenario` over IPv4 and IPv6, with and without errshim, all four at once (they spend
/// their time waiting for the kernel's timers), and checks each.
fn scenario(name: &'static str, want: Expect, check: fn(u8, &Value)) {
    if !lab_ready() {
        return;
    }
    let lib = lib().to_string_lossy().into_owned();
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for family in [4u8, 6] {
            for preload in [true, false] {
                let (lib, results) = (&lib, &results);
                s.spawn(move || {
                    let r = run_lab(name, family, preload.then_some(lib.as_str()), &[]);
                    results.lock().unwrap().push((family, preload, r));
                });
            }
        }
    });
    let results = results.into_inner().unwrap();
    for family in [4u8, 6] {
        let get = |preload: bool| {
            &results
                .iter()
                .find(|(f, p, _)| *f == family && *p == preload)
                .expect("every run")
                .2
        };
        let (with, without) = (get(true), get(false));
        let what = format!("{name} over IPv{family}");
        let (p, bare) = (&with["program"], &without["program"]);
        assert_eq!(with["client_exit"], 0, "{what}: {with:#}");
        // What the kernel gave the program, with errshim and without.
        let errno = if family == 4 { want.errno4 } else { want.errno6 };
        assert_eq!(p[want.call], errno, "{what}: {with:#}");
        assert_eq!(bare[want.call], errno, "{what} without errshim: {without:#}");
        // The same, call by call, but for the shutdown whose ENOTCONN the default rule hides.
        for (k, v) in bare.as_object().unwrap() {
            if k == "shutdown" {
                assert_eq!(v, "ENOTCONN", "{what}: the kernel's shutdown: {without:#}");
                assert_eq!(p[k], "ok", "{what}: errshim's default rule: {with:#}");
            } else {
                assert_eq!(&p[k], v, "{what}: {k} with and without errshim");
            }
        }
        // One event, the shutdown's, named right.
        let events = with["events"].as_array().unwrap();
        assert_eq!(events.len(), 1, "{what}: {with:#}");
        let ev = &events[0];
        assert_eq!(ev["call"], "shutdown", "{what}: {ev:#}");
        assert_eq!(ev["errno"], "ENOTCONN", "{what}: {ev:#}");
        assert_eq!(ev["action"], "ignore", "{what}: {ev:#}");
        assert_eq!(ev["kind"], if family == 4 { "tcp4" } else { "tcp6" }, "{what}: {ev:#}");
        let server = if family == 4 {
            "10.231.2.2:8080"
        } else {
            "[fd00:e5:2::2]:8080"
        };
        assert_eq!(ev["peer"], server, "{what}: {ev:#}");
        assert_eq!(ev["state"], "CLOSE", "{what}: {ev:#}");
        assert_eq!(ev["cause"], want.cause, "{what}: {ev:#}");
        let text = ev["cause_text"].as_str().unwrap();
        for w in want.text {
            assert!(text.contains(w), "{what}: the text lacks {w:?}: {text}");
        }
        // The failure before the shutdown is in the history, with its call.
        let first = format!("first_error={}:{errno}", want.call);
        assert!(
            ev["history"].as_array().unwrap().iter().any(|h| h == first.as_str()),
            "{what}: {first} missing: {ev:#}"
        );
        // The evidence is there for every TCP connection that got anywhere.
        for k in [
            "retransmits",
            "probes",
            "backoff",
            "total_retrans",
            "bytes_retrans",
            "rtt_us",
        ] {
            assert!(ev[k].is_u64(), "{what}: {k}: {ev:#}");
        }
        check(family, ev);
    }
}

const NO_RST: &str = "no RST was involved";

#[test]
fn blackhole_with_a_user_timeout() {
    scenario(
        "blackhole",
        Expect {
            call: "recv",
            errno4: "ETIMEDOUT",
            errno6: "ETIMEDOUT",
            cause: "timeout_user",
            text: &["TCP_USER_TIMEOUT expired", NO_RST],
        },
        |_, ev| {
            assert_eq!(ev["user_timeout_ms"], 1000, "{ev:#}");
            assert_eq!(ev["keepalive"], "off", "{ev:#}");
            assert!(ev["retransmits"].as_u64() >= Some(1), "{ev:#}");
            // 1000 bytes sent once and retransmitted: the retransmissions apart.
            assert!(ev["bytes_retrans"].as_u64() >= Some(1000), "{ev:#}");
            assert_eq!(ev["bytes_sent"], 1006, "hello, and the 1000 bytes, each once: {ev:#}");
        },
    );
}

fn retransmission(ev: &Value) {
    assert!(ev["retransmits"].as_u64() >= Some(2), "{ev:#}");
    assert_eq!(ev["probes"], 0, "{ev:#}");
    assert_eq!(ev["user_timeout_ms"], 0, "{ev:#}");
    assert!(ev["bytes_retrans"].as_u64() >= Some(2000), "{ev:#}");
}

#[test]
fn silent_drop_towards_the_server() {
    scenario(
        "drop-to-server",
        Expect {
            call: "recv",
            errno4: "ETIMEDOUT",
            errno6: "ETIMEDOUT",
            cause: "timeout_retransmit",
            text: &["never acknowledged", "tcp_retries2", NO_RST],
        },
        |_, ev| retransmission(ev),
    );
}

#[test]
fn silent_drop_towards_the_client() {
    scenario(
        "drop-to-client",
        Expect {
            call: "recv",
            errno4: "ETIMEDOUT",
            errno6: "ETIMEDOUT",
            cause: "timeout_retransmit",
            text: &["never acknowledged", NO_RST],
        },
        |_, ev| retransmission(ev),
    );
}

#[test]
fn keepalive_death() {
    scenario(
        "keepalive",
        Expect {
            call: "recv",
            errno4: "ETIMEDOUT",
            errno6: "ETIMEDOUT",
            cause: "timeout_keepalive",
            text: &["keepalive probes went unanswered", NO_RST],
        },
        |_, ev| {
            assert_eq!(ev["keepalive"], "1/1/1", "{ev:#}");
            assert_eq!(ev["retransmits"], 0, "{ev:#}");
            assert!(ev["probes"].as_u64() >= Some(1), "{ev:#}");
            assert_eq!(ev["bytes_retrans"], 0, "{ev:#}");
        },
    );
}

#[test]
fn reset_by_a_middlebox() {
    scenario(
        "middlebox-rst",
        Expect {
            call: "recv",
            errno4: "ECONNRESET",
            errno6: "ECONNRESET",
            cause: "peer_reset",
            // The evidence cannot tell the server's RST from the firewall's: both are named.
            text: &["the server aborted the connection", "or a middlebox"],
        },
        |_, ev| {
            assert!(ev.get("user_timeout_ms").is_none(), "not a timeout: {ev:#}");
            assert_eq!(ev["retransmits"], 0, "{ev:#}");
        },
    );
}

#[test]
fn icmp_host_unreachable_at_connect() {
    scenario(
        "icmp-host",
        Expect {
            call: "connect",
            errno4: "EHOSTUNREACH",
            errno6: "EHOSTUNREACH",
            cause: "unreachable",
            text: &["ICMP", "Check the routes and the firewalls"],
        },
        |_, ev| assert!(ev["history"].as_array().unwrap().iter().any(|h| h == "connect_failed")),
    );
}

#[test]
fn icmp_administratively_prohibited_at_connect() {
    scenario(
        "icmp-admin",
        Expect {
            call: "connect",
            errno4: "EHOSTUNREACH",
            // ICMPv6's "administratively prohibited" is EACCES
            errno6: "EACCES",
            cause: "unreachable",
            text: &["administratively prohibited"],
        },
        |_, _| {},
    );
}

#[test]
fn icmp_port_unreachable_at_connect() {
    scenario(
        "icmp-port",
        Expect {
            call: "connect",
            errno4: "ECONNREFUSED",
            errno6: "ECONNREFUSED",
            cause: "connect_failed",
            text: &["the connect was refused", "ICMP port unreachable"],
        },
        |_, _| {},
    );
}

#[test]
fn icmp_on_an_established_connection() {
    scenario(
        "icmp-established",
        Expect {
            call: "recv",
            // The ICMP error is kept as the connection's soft error and given when the
            // retransmissions run out, instead of ETIMEDOUT.
            errno4: "EHOSTUNREACH",
            errno6: "EHOSTUNREACH",
            cause: "unreachable",
            text: &["ICMP"],
        },
        |_, ev| assert!(ev["retransmits"].as_u64() >= Some(1), "{ev:#}"),
    );
}

#[test]
fn nat_that_forgets_the_flow() {
    scenario(
        "nat-forgets",
        Expect {
            call: "recv",
            errno4: "ETIMEDOUT",
            errno6: "ETIMEDOUT",
            cause: "timeout_user",
            text: &["silently dropped", NO_RST],
        },
        |_, ev| assert!(ev["retransmits"].as_u64() >= Some(1), "{ev:#}"),
    );
}

#[test]
fn listener_whose_accept_queue_is_full() {
    scenario(
        "backlog",
        Expect {
            call: "connect",
            errno4: "ETIMEDOUT",
            errno6: "ETIMEDOUT",
            cause: "connect_failed",
            text: &["the connect timed out", "accept queue is full"],
        },
        // The SYN was retransmitted before the kernel gave up.
        |_, ev| assert!(ev["retransmits"].as_u64() >= Some(1), "{ev:#}"),
    );
}

/// The same diagnosis in the text format, and on the failing read itself when a rule adds
/// logging to the default (`+recv:*:log`).
#[test]
fn text_lines_and_the_failing_read() {
    if !lab_ready() {
        return;
    }
    let lib = lib().to_string_lossy().into_owned();
    let r = run_lab("blackhole", 6, Some(&lib), &["--format", "text"]);
    let lines: Vec<&str> = r["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{r:#}");
    let l = lines[0];
    for w in [
        " shutdown(fd=",
        " = -1 ENOTCONN -> ignored, returned 0 | tcp6 ",
        " peer=[fd00:e5:2::2]:8080 ",
        " state=CLOSE ",
        " user_timeout_ms=1000 keepalive=off ",
        "history=connected,timeout_seen,first_error=recv:ETIMEDOUT | cause=timeout_user: TCP_USER_TIMEOUT expired",
    ] {
        assert!(l.contains(w), "{w:?} not in {l}");
    }
    let r = run_lab("keepalive", 4, Some(&lib), &["--rules", "+recv:*:log"]);
    let ev = r["events"].as_array().unwrap();
    let calls: Vec<&str> = ev.iter().map(|e| e["call"].as_str().unwrap()).collect();
    assert_eq!(calls, ["recv", "shutdown"], "{r:#}");
    assert_eq!(ev[0]["errno"], "ETIMEDOUT");
    assert_eq!(ev[0]["action"], "log");
    assert_eq!(ev[0]["cause"], "timeout_keepalive", "{:#}", ev[0]);
    assert_eq!(ev[0]["keepalive"], "1/1/1");
    assert_eq!(ev[1]["cause"], "timeout_keepalive", "{:#}", ev[1]);
}

/// `errshim replay` (issue 17, item 5): a run where the kernel produced the failures (a
/// middlebox's RST, a black hole, ICMP port unreachable, a full accept queue) is recorded with
/// JSON events, the log turned into fault rules, and the same client run again against the
/// same server over a plain loopback (`--plain`: no middlebox, no condition) under those rules:
/// the program gets the same errno from the same call, errshim injected it (the path did
/// nothing), and the reset is a real RST.
#[test]
fn replayed_failures_are_the_same_over_loopback() {
    if !lab_ready() {
        return;
    }
    let lib = lib().to_string_lossy().into_owned();
    // (scenario, rules to record with, the failing call, its errno, the fault replay gives)
    let cases: [(&str, &str, &str, &str, &str); 4] = [
        // The default rules: the recv's failure is only in the suppressed shutdown's history.
        ("middlebox-rst", "", "recv", "ECONNRESET", "reset"),
        // The failing recv logged itself, and the shutdown after it.
        // Replayed as a stall as long as the path was silent, which ends in ETIMEDOUT.
        ("blackhole", "+recv:*:log", "recv", "ETIMEDOUT", "stall="),
        ("icmp-port", "", "connect", "ECONNREFUSED", "ECONNREFUSED"),
        ("backlog", "", "connect", "ETIMEDOUT", "ETIMEDOUT"),
    ];
    let dir = TempDir::new("lab-replay");
    std::thread::scope(|s| {
        for (name, rules, call, errno, fault) in cases {
            let (lib, dir) = (&lib, &dir);
            s.spawn(move || {
                let extra: &[&str] = if rules.is_empty() { &[] } else { &["--rules", rules] };
                let rec = run_lab(name, 4, Some(lib), extra);
                assert_eq!(rec["program"][call], errno, "{name}: the kernel's failure: {rec:#}");
                let log = dir.path(&format!("{name}.log"));
                let lines: Vec<&str> = rec["lines"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l.as_str().unwrap())
                    .collect();
                std::fs::write(&log, lines.join("\n") + "\n").unwrap();
                let r = Cmd::new(manifest_dir().join("scripts/errshim"))
                    .args(["--lib", lib, "replay"])
                    .arg_path(&log)
                    .run();
                r.assert_ok();
                let faults = r.stdout.trim();
                assert!(
                    faults.starts_with(&format!("{call}:{fault}")),
                    "{name}: {}",
                    r.describe()
                );
                if call == "recv" {
                    // hello and the 1000 bytes out, welcome in: the recv after them, on port 8080.
                    assert!(faults.contains(":port=8080:after_bytes=1014:"), "{name}: {faults}");
                }
                let again = run_lab(name, 4, Some(lib), &["--plain", "--faults", faults]);
                assert_eq!(
                    again["program"], rec["program"],
                    "{name}: replayed with {faults}: {again:#}\nrecorded: {rec:#}"
                );
                let ev = again["events"].as_array().unwrap();
                let injected: Vec<&Value> = ev.iter().filter(|e| e["injected"] == true).collect();
                // A stall may be two injections: where it began, and its end (the failing call);
                // one where the call that began it waited it out.
                let n = injected.len();
                assert!(n == 1 || (n == 2 && fault == "stall="), "{name}: {again:#}");
                let inj = injected[injected.len() - 1];
                assert_eq!(
                    (&inj["call"], &inj["errno"]),
                    (&json!(call), &json!(errno)),
                    "{name}: {inj:#}"
                );
                assert!(inj["fault"].as_str().unwrap().starts_with(fault), "{name}: {inj:#}");
                assert_eq!(inj["peer"], "127.0.0.1:8080", "{name}: over loopback: {inj:#}");
                if call == "recv" {
                    // The client's second recv, as when the path failed it (the first read the welcome).
                    assert_eq!(injected[0]["k"], 2, "{name}: {inj:#}");
                }
                if fault == "reset" {
                    assert!(
                        inj["history"].as_array().unwrap().iter().any(|h| h == "reset_injected"),
                        "{inj:#}"
                    );
                }
            });
        }
    });
}
