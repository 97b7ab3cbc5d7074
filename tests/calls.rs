//! The calls errshim sees since issue 16, on failures the real kernel produces on loopback
//! (tests/fixtures/calls.c): `sendfile`/`sendfile64` and `splice` into a socket the peer
//! reset, `splice` out of one, `sendmmsg`/`recvmmsg` (success, unconnected sockets, ICMP's
//! refusal on a connected UDP socket), `getpeername` after the client reset (with and without
//! the `remembered` action), `accept(fd, NULL, NULL)` and `accept4` whose events still carry
//! the peer (and, under a seccomp filter, the caller's exact arguments), a non-blocking
//! connect whose failure the program reads from `SO_ERROR` (the fixture and a real `curl`).
//! Each runs with and without errshim: the program's results are the same, but where a rule
//! says otherwise (`remembered`).

mod common;
use common::*;
use serde_json::Value;

fn calls_bin() -> std::path::PathBuf {
    program("calls")
}

/// The fixture's result lines, without the "info" lines (ports, descriptor numbers) and the
/// lines that print addresses.
fn results(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| !l.contains(" info ") && !l.contains("bytes=") && !l.contains(" whole len="))
        .collect()
}

/// The value of `key=` on the fixture's "<scenario> info ..." lines.
fn info(r: &Run, key: &str) -> String {
    let k = format!("{key}=");
    r.stdout
        .lines()
        .filter(|l| l.contains(" info "))
        .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix(k.as_str())))
        .unwrap_or_else(|| panic!("no info {key}= in:\n{}", r.describe()))
        .to_string()
}

/// Runs `scenario` without errshim and with it (JSON events, `rules`, and `env`), checks that
/// both succeed, and returns both.
fn both(scenario: &str, rules: &str, env: &[(&str, &str)]) -> (Run, Run) {
    let bare = Cmd::new(calls_bin()).args([scenario]).run();
    bare.assert_ok();
    let mut c = Cmd::new(calls_bin())
        .args([scenario])
        .shim()
        .env("ERRSHIM_FORMAT", "json")
        .env("ERRSHIM_RULES", rules);
    for (k, v) in env {
        c = c.env(k, v);
    }
    let shim = c.run();
    shim.assert_ok();
    (bare, shim)
}

/// Runs `scenario` both ways and checks that the program saw the same results.
fn same(scenario: &str, rules: &str) -> (Run, Vec<Value>) {
    let (bare, shim) = both(scenario, rules, &[]);
    assert_eq!(results(&bare.stdout), results(&shim.stdout), "{}", shim.describe());
    let evs = json_events(&shim);
    (shim, evs)
}

fn json_events(r: &Run) -> Vec<Value> {
    r.stderr
        .lines()
        .filter(|l| !l.starts_with("errshim: "))
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}\n{}", r.describe())))
        .collect()
}

fn fd(r: &Run, key: &str) -> i64 {
    info(r, key).parse().expect("a descriptor number")
}

/// The one event of `call` on `fd` with `errno`.
fn event<'a>(evs: &'a [Value], call: &str, fd: i64, errno: &str) -> &'a Value {
    let found: Vec<&Value> = evs
        .iter()
        .filter(|e| e["call"] == call && e["fd"] == fd && e["errno"] == errno)
        .collect();
    assert_eq!(found.len(), 1, "one {call} {errno} event on fd {fd} in {evs:#?}");
    found[0]
}

#[test]
fn sendfile_and_sendfile64_into_a_reset_socket() {
    let (r, evs) = same("sendfile", "+*:ECONNRESET,EPIPE:log");
    assert!(r
        .stdout
        .contains("sendfile sendfile ret=-1 errno=104\nsendfile sendfile64 ret=-1 errno=32\n"));
    let c = fd(&r, "fd");
    let peer = info(&r, "peer");
    for errno in ["ECONNRESET", "EPIPE"] {
        let e = event(&evs, "sendfile", c, errno);
        assert_eq!(e["peer"], peer.as_str(), "{e:#}");
        assert_eq!(e["cause"], "peer_reset", "{e:#}");
        assert_eq!(e["len"], 100, "{e:#}");
        assert_eq!(e["kind"], "tcp4");
    }
    assert_eq!(evs.len(), 2, "{evs:#?}");
    // The text line shows the entry point.
    let t = Cmd::new(calls_bin())
        .args(["sendfile"])
        .shim()
        .env("ERRSHIM_RULES", "+sendfile:EPIPE:log")
        .run();
    let lines = t.events();
    assert!(
        lines.len() == 1
            && lines[0].contains(" sendfile64(fd=")
            && lines[0].contains(", len=100) = -1 EPIPE -> logged"),
        "{}",
        t.describe()
    );
}

#[test]
fn splice_events_are_about_the_socket_end() {
    let (r, evs) = same("splice", "+splice:*:log");
    let out = fd(&r, "out_fd");
    let e = event(&evs, "splice", out, "ECONNRESET");
    assert_eq!(
        (&e["peer"], &e["cause"]),
        (&Value::from(info(&r, "peer")), &Value::from("peer_reset"))
    );
    let inp = fd(&r, "in_fd");
    let e = event(&evs, "splice", inp, "ECONNRESET");
    assert_eq!(e["peer"], info(&r, "client").as_str(), "{e:#}");
    assert_eq!(e["history"][0], "accepted", "{e:#}");
    assert_eq!(evs.len(), 2, "{evs:#?}");
}

#[test]
fn mmsg_calls_succeed_unchanged_and_their_failures_are_events() {
    let (r, evs) = same("mmsg", "+*:*:log");
    assert!(
        r.stdout
            .contains("mmsg sendmmsg_ok ret=2 errno=0\nmmsg recvmmsg_ok ret=2 errno=0\nmmsg received len0=3 len1=3\n"),
        "{}",
        r.describe()
    );
    let e = event(&evs, "sendmmsg", fd(&r, "unconnected_udp"), "EDESTADDRREQ");
    assert_eq!(
        (&e["kind"], &e["cause"], &e["vlen"]),
        (&"udp4".into(), &"udp_unconnected".into(), &1.into())
    );
    let e = event(&evs, "recvmmsg", fd(&r, "unconnected_tcp"), "ENOTCONN");
    assert_eq!(e["cause"], "never_connected", "{e:#}");
    let e = event(&evs, "recvmmsg", fd(&r, "refused_udp"), "ECONNREFUSED");
    assert_eq!(e["peer"], info(&r, "refused_peer").as_str(), "{e:#}");
    assert_eq!(
        e["cause"], "port_unreachable",
        "ICMP port unreachable from loopback: {e:#}"
    );
    assert_eq!(evs.len(), 3, "nothing for the successes: {evs:#?}");
    // A fault rule naming every call leaves the mmsg calls alone: `*` there names the calls
    // faults can be faithful on.
    let (bare, faulted) = both("mmsg", "", &[("ERRSHIM_FAULTS", "*:EIO")]);
    assert_eq!(
        results(&bare.stdout),
        results(&faulted.stdout),
        "{}",
        faulted.describe()
    );
    // Named, they take the errnos Linux gives there (tests/faults.rs), and not others.
    let e = Cmd::new("true").shim().env("ERRSHIM_FAULTS", "sendmmsg:EIO").run();
    assert!(
        e.stderr.contains("sendmmsg cannot return this errno as a fault"),
        "{}",
        e.describe()
    );
}

#[test]
fn getpeername_after_the_client_reset() {
    // Without a rule naming it: ENOTCONN, and `*` does not log it.
    let (r, evs) = same("getpeername", "+*:*:log");
    assert!(
        r.stdout.contains("getpeername whole ret=-1 errno=107\n"),
        "{}",
        r.describe()
    );
    assert!(evs.iter().all(|e| e["call"] != "getpeername"), "{evs:#?}");
    // Named: each failure is an event with the peer errshim remembered.
    let (r, evs) = same("getpeername", "+getpeername:*:log");
    let s = fd(&r, "fd");
    let on_s: Vec<&Value> = evs.iter().filter(|e| e["fd"] == s).collect();
    assert_eq!(on_s.len(), 6, "{evs:#?}");
    for e in on_s {
        assert_eq!(
            (&e["errno"], &e["action"]),
            (&"ENOTCONN".into(), &"log".into()),
            "{e:#}"
        );
        assert_eq!(e["peer"], info(&r, "client").as_str(), "{e:#}");
        assert_eq!(e["cause"], "peer_reset", "{e:#}");
    }
    // remembered: the program gets the address errshim remembered, as the kernel would have
    // written it (a short buffer: what fits, and the full length); an invalid pointer, or a
    // connect that never completed, gets the real error.
    let (bare, shim) = both("getpeername", "+getpeername:ENOTCONN:remembered", &[]);
    let got = &shim.stdout;
    let client = info(&shim, "client");
    assert!(
        got.contains("getpeername whole ret=0 errno=0\ngetpeername whole len=16 family=2\n"),
        "{}",
        shim.describe()
    );
    assert_eq!(info(&shim, "answered"), client);
    let short = |r: &Run, step: &str| {
        let p = format!("getpeername {step} len=");
        r.stdout
            .lines()
            .find(|l| l.starts_with(&p))
            .unwrap_or_else(|| panic!("{p}: {}", r.describe()))
            .to_string()
    };
    assert!(got.contains("getpeername short ret=0 errno=0\n"), "{}", shim.describe());
    assert_eq!(
        short(&shim, "short").replace(" short ", " "),
        short(&shim, "live_short").replace(" live_short ", " "),
        "the kernel's truncation, on the live connection"
    );
    assert!(short(&shim, "short").ends_with("aaaaaaaa") && short(&shim, "short").contains(" len=16 "));
    for step in [
        "bad_addr",
        "bad_len",
        "readonly_addr",
        "readonly_len",
        "never_connected",
    ] {
        let line = format!("getpeername {step} ret=-1 errno=107\n");
        assert!(
            bare.stdout.contains(&line) && got.contains(&line),
            "{step}: {}",
            shim.describe()
        );
    }
    assert!(got.contains("getpeername readonly_len len=16\n"));
    let evs = json_events(&shim);
    let answered: Vec<&Value> = evs.iter().filter(|e| e["action"] == "remembered").collect();
    assert_eq!(answered.len(), 2, "{evs:#?}");
    assert!(answered
        .iter()
        .all(|e| e["returned"] == 0 && e["peer"] == client.as_str()));
    assert_eq!(
        evs.iter()
            .filter(|e| e["action"] == "log" && e["returned"] == -1)
            .count(),
        5,
        "the real error, logged: {evs:#?}"
    );
    // Only on getpeername.
    let refused = Cmd::new("true")
        .shim()
        .env("ERRSHIM_RULES", "read:ENOTCONN:remembered")
        .run();
    assert!(
        refused.stderr.contains("action 'remembered' not allowed on read")
            && refused.stderr.contains("in rule 1 of ERRSHIM_RULES"),
        "{}",
        refused.describe()
    );
}

#[test]
fn accept_without_an_address_still_knows_the_peer() {
    let (r, evs) = same("accept_null", "+recv:*:log");
    assert!(r.stdout.contains("accept_null cloexec s1=0 s2=1\n"), "{}", r.describe());
    for (s, peer) in [("s1", "peer1"), ("s2", "peer2")] {
        let e = event(&evs, "recv", fd(&r, s), "ECONNRESET");
        assert_eq!(e["peer"], info(&r, peer).as_str(), "{e:#}");
        assert_eq!(e["cause"], "peer_reset", "{e:#}");
    }
}

/// Under a seccomp filter errshim knows of, accept gets the caller's NULL; before it, errshim's
/// buffer (strace shows what the kernel got).
#[test]
fn accept_under_seccomp_gets_the_callers_arguments() {
    if !require_tool("strace") {
        return;
    }
    let dir = TempDir::new("accept-seccomp");
    let trace = dir.path("trace");
    let r = Cmd::new("strace")
        .args(["-f", "-qq", "-e", "trace=accept,accept4", "-o"])
        .arg_path(&trace)
        .args(["-E", &format!("LD_PRELOAD={}", lib().display())])
        .arg_path(&calls_bin())
        .args(["accept_seccomp"])
        .run();
    r.assert_ok();
    let t = std::fs::read_to_string(&trace).unwrap();
    let accepts: Vec<&str> = t.lines().filter(|l| l.contains("accept(")).collect();
    assert_eq!(accepts.len(), 2, "{t}");
    assert!(accepts[0].contains("accept(3, {sa_family=AF_INET"), "{t}");
    assert!(accepts[1].contains("accept(3, NULL, NULL)"), "{t}");
}

/// A filter the process was started under, which refuses an accept with an address wanted:
/// errshim finds it at `listen` and passes the caller's NULL, so the program's accepts succeed
/// as they do without errshim (lending its buffer there made them fail with EPERM).
#[test]
fn accept_under_an_inherited_filter_gets_the_callers_arguments() {
    let (r, _) = same("accept_inherited_filter", "");
    assert!(
        r.stdout.contains("accept_under_filter accept ret=") && !r.stdout.contains("errno=1\n"),
        "{}",
        r.describe()
    );
    assert!(!r.stdout.contains("ret=-1"), "{}", r.describe());
}

#[test]
fn a_nonblocking_connect_refused_is_a_connect_event_via_so_error() {
    let (r, evs) = same("so_error", "+connect:*:log");
    assert!(
        r.stdout.contains("so_error value=111 len=4\n") && r.stdout.contains("so_error again value=0\n"),
        "{}",
        r.describe()
    );
    let e = event(&evs, "connect", fd(&r, "fd"), "ECONNREFUSED");
    assert_eq!(e["peer"], info(&r, "peer").as_str(), "{e:#}");
    assert_eq!(e["cause"], "connect_failed", "{e:#}");
    assert_eq!(
        e["history"],
        serde_json::json!(["connect_pending", "connect_failed", "connect=ECONNREFUSED"])
    );
    assert_eq!(
        evs.len(),
        1,
        "not the reset of the established one, nor a value of 0: {evs:#?}"
    );
    // The text line names the entry point; map= only logs there; the default rules say nothing.
    let t = Cmd::new(calls_bin())
        .args(["so_error"])
        .shim()
        .env("ERRSHIM_RULES", "+connect:ECONNREFUSED:map=ETIMEDOUT")
        .run();
    assert_eq!(results(&t.stdout), results(&r.stdout), "{}", t.describe());
    let lines = t.events();
    assert!(
        lines.len() == 1
            && lines[0]
                .contains(" getsockopt(fd=3, SO_ERROR) = -1 ECONNREFUSED -> logged, returned -1 ECONNREFUSED | tcp4"),
        "{}",
        t.describe()
    );
    let d = Cmd::new(calls_bin()).args(["so_error"]).shim().run();
    assert!(d.events().is_empty(), "{}", d.describe());
}

/// A real curl to a closed port: exit 7 with and without errshim, and with it a connect event
/// with ECONNREFUSED, which curl learnt from SO_ERROR.
#[test]
fn curl_to_a_closed_port() {
    if !require_tool("curl") {
        return;
    }
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/");
    let args = ["-sS", "--max-time", "20", url.as_str()];
    let bare = Cmd::new("curl").args(args).run();
    let shim = Cmd::new("curl")
        .args(args)
        .shim()
        .env("ERRSHIM_RULES", "+*:*:log")
        .run();
    assert_eq!(bare.code, Some(7), "{}", bare.describe());
    assert_eq!(
        (shim.code, &shim.stdout),
        (Some(7), &bare.stdout),
        "{}",
        shim.describe()
    );
    let lines = shim.events();
    assert!(!lines.is_empty(), "{}", shim.describe());
    let refused: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains(" getsockopt(fd=") && l.contains(" = -1 ECONNREFUSED -> logged"))
        .collect();
    assert_eq!(refused.len(), 1, "{}", shim.describe());
    assert!(
        refused[0].contains(&format!("peer=127.0.0.1:{port} ")) && refused[0].contains("cause=connect_failed"),
        "{}",
        refused[0]
    );
    // curl's own message is the same, but for errshim's lines.
    let own = |r: &Run| {
        r.stderr
            .lines()
            .filter(|l| !l.starts_with("errshim "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(own(&bare), own(&shim));
}
