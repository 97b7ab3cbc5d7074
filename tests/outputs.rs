//! Where events go and what else errshim writes: syslog datagrams, the exit summary, and
//! backtraces.

mod common;
use common::*;
use std::os::unix::net::UnixDatagram;

fn scenarios() -> std::path::PathBuf {
    program("scenarios")
}

/// `ERRSHIM_LOG=syslog:PATH`: one datagram per event, in the form journald and rsyslog accept.
#[test]
fn syslog_one_datagram_per_event() {
    let dir = TempDir::new("syslog");
    let path = dir.path("log.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let rules = "shutdown,read,write:*:log";
    let r = Cmd::new(scenarios())
        .args(["never_connected"])
        .shim()
        .env("ERRSHIM_RULES", rules)
        .env("ERRSHIM_LOG", format!("syslog:{}", path.display()))
        .run();
    r.assert_ok();
    assert!(r.stderr.is_empty(), "events go to syslog, not stderr: {}", r.stderr);
    sock.set_nonblocking(true).unwrap();
    let mut grams = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = sock.recv(&mut buf) {
        grams.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    // read (ENOTCONN), write (EPIPE), shutdown (ENOTCONN): the child has exited, so all are queued.
    assert_eq!(grams.len(), 3, "{grams:?}");
    for g in &grams {
        assert!(g.starts_with("<13>errshim["), "{g}");
        assert!(g.contains("]: errshim 20"), "{g}");
        assert!(!g.ends_with('\n'), "a datagram carries no newline: {g:?}");
    }
    assert!(
        grams[2].contains("shutdown(fd=3, SHUT_RDWR) = -1 ENOTCONN -> logged"),
        "{}",
        grams[2]
    );
}

/// No syslog socket: one warning, and events go to stderr instead.
#[test]
fn syslog_missing_falls_back_to_stderr() {
    let r = Cmd::new(scenarios())
        .args(["never_connected"])
        .shim()
        .env("ERRSHIM_LOG", "syslog:/nonexistent/errshim-test.sock")
        .run();
    r.assert_ok();
    let warn: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("no syslog socket at /nonexistent/errshim-test.sock"))
        .collect();
    assert_eq!(warn.len(), 1, "{}", r.stderr);
    assert_eq!(r.events().len(), 1, "{}", r.stderr);
}

/// Totals in a text summary: (events=, sum of the rows' counts, rows).
fn text_summary(stderr: &str) -> (u64, u64, Vec<String>) {
    let head = stderr
        .lines()
        .find(|l| l.starts_with("errshim summary pid="))
        .expect("summary head");
    let events: u64 = head
        .split(" events=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let rows: Vec<String> = stderr
        .lines()
        .filter(|l| l.starts_with("errshim summary count="))
        .map(str::to_string)
        .collect();
    let sum = rows
        .iter()
        .map(|l| {
            l["errshim summary count=".len()..]
                .split(' ')
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    (events, sum, rows)
}

/// `ERRSHIM_SUMMARY=1`: at exit, counts by call, errno, action and cause that add up to the
/// events logged, and the peers with the most events.
#[test]
fn summary_counts_equal_the_events() {
    let all = ["never_connected", "fin", "reset", "refused", "listener", "udp", "unix"];
    let rules = "shutdown:ENOTCONN:ignore;read,write:*:log:fd=any";
    let r = Cmd::new(scenarios())
        .args(all)
        .shim()
        .env("ERRSHIM_RULES", rules)
        .env("ERRSHIM_SUMMARY", "1")
        .run();
    r.assert_ok();
    let n_events = r.events().len() as u64;
    assert!(n_events >= 8, "{}", r.stderr);
    let (events, sum, rows) = text_summary(&r.stderr);
    assert_eq!(events, n_events, "{}", r.stderr);
    assert_eq!(sum, n_events, "{}", r.stderr);
    let shutdown_events = r.events().iter().filter(|e| e.contains(" shutdown(")).count();
    let row = rows
        .iter()
        .find(|l| l.contains("call=shutdown errno=ENOTCONN action=ignore cause=peer_closed"))
        .expect("a row per cause");
    assert!(row.starts_with("errshim summary count=1 "), "{row}");
    let shutdown_sum: u64 = rows
        .iter()
        .filter(|l| l.contains(" call=shutdown "))
        .map(|l| {
            l["errshim summary count=".len()..]
                .split(' ')
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(shutdown_sum, shutdown_events as u64);
    // The connected scenarios had a peer: the reset and fin connections' peers are listed.
    let peers: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("errshim summary peer=127.0.0.1:"))
        .collect();
    let event_peers: std::collections::BTreeSet<&str> = r
        .events()
        .iter()
        .flat_map(|e| e.split(' ').filter(|w| w.starts_with("peer=127.0.0.1:")))
        .collect();
    assert!(event_peers.len() >= 2, "{}", r.stderr);
    assert_eq!(peers.len(), event_peers.len(), "{}", r.stderr);

    // The same as one JSON object.
    let j = Cmd::new(scenarios())
        .args(all)
        .shim()
        .env("ERRSHIM_RULES", rules)
        .env("ERRSHIM_SUMMARY", "1")
        .env("ERRSHIM_FORMAT", "json")
        .run();
    let line = j
        .stderr
        .lines()
        .find(|l| l.starts_with("{\"summary\":"))
        .expect("json summary");
    if require_tool("python3") {
        // Events, their sum over the rows, and the peers: listed as many times as this run's
        // events name distinct IP peers (each run has its own ports, and two scenarios of one
        // run may get the same port in turn, so the text run's count is no reference).
        let check = Cmd::new("python3")
            .args([
                "-c",
                "import json,sys\n\
                 lines=[json.loads(l) for l in sys.stdin if l.startswith('{')]\n\
                 s=[l['summary'] for l in lines if 'summary' in l][0]\n\
                 ev=[l for l in lines if 'ts' in l]\n\
                 peers={e['peer'] for e in ev if e.get('peer') and e['peer'][0] in '0123456789['}\n\
                 print(s['events'], sum(c['count'] for c in s['counts']), len(s['peers']), len(ev), len(peers))",
            ])
            .stdin(j.stderr.as_bytes())
            .run();
        check.assert_ok();
        let n_json = j.stderr.lines().filter(|l| l.starts_with("{\"ts\":")).count();
        let f: Vec<&str> = check.stdout.split_whitespace().collect();
        assert_eq!(
            f[..4],
            [
                n_json.to_string(),
                n_json.to_string(),
                f[4].to_string(),
                n_json.to_string()
            ],
            "{line}"
        );
        assert!(
            f[4].parse::<usize>().unwrap() >= 2,
            "the reset and fin peers at least: {line}"
        );
    }
}

/// A forked child's summary counts its own events, and the parent's its own.
#[test]
fn summary_per_process_after_fork() {
    let dir = TempDir::new("summary-fork");
    let log = dir.path("log-%p.txt");
    let r = Cmd::new(program("outputs"))
        .args(["fork"])
        .shim()
        .env("ERRSHIM_SUMMARY", "1")
        .env("ERRSHIM_LOG", log.to_str().unwrap())
        .run();
    r.assert_ok();
    let pid_of = |who: &str| {
        r.stdout
            .lines()
            .find(|l| l.starts_with(who))
            .unwrap()
            .split("pid=")
            .nth(1)
            .unwrap()
            .to_string()
    };
    for (who, expected) in [("parent", 2), ("child", 2)] {
        let text = std::fs::read_to_string(dir.path(&format!("log-{}.txt", pid_of(who)))).unwrap();
        assert_eq!(events(&text).len(), expected, "{who}: {text}");
        let (n, sum, _) = text_summary(&text);
        assert_eq!((n, sum), (expected as u64, expected as u64), "{who}: {text}");
    }
}

/// `ERRSHIM_BACKTRACE=1`: the event names the function that made the failing call.
#[test]
fn backtrace_names_the_callers_function() {
    let bin = cc("outputs", "outputs_rdynamic", &["-O2", "-rdynamic"]);
    let r = Cmd::new(&bin).args(["bt"]).shim().env("ERRSHIM_BACKTRACE", "1").run();
    r.assert_ok();
    let ev = r.events();
    assert_eq!(ev.len(), 1, "{}", r.stderr);
    let bt = ev[0].split(" | backtrace=").nth(1).expect("a backtrace");
    let frames: Vec<&str> = bt.split(',').collect();
    assert!(
        frames[0].starts_with("outputs_rdynamic:errshim_fixture_failing_shutdown+0x"),
        "{bt}"
    );
    assert!(frames.iter().any(|f| f.starts_with("outputs_rdynamic:main+0x")), "{bt}");
    assert!(!bt.contains("liberrshim"), "errshim's own frames are left out: {bt}");

    // Without symbols in the dynamic table: module+offset.
    let plain = Cmd::new(program("outputs"))
        .args(["bt"])
        .shim()
        .env("ERRSHIM_BACKTRACE", "1")
        .run();
    let e = plain.events()[0].to_string();
    assert!(e.contains(" | backtrace=outputs+0x"), "{e}");

    // JSON: an array.
    let j = Cmd::new(&bin)
        .args(["bt"])
        .shim()
        .env("ERRSHIM_BACKTRACE", "1")
        .env("ERRSHIM_FORMAT", "json")
        .run();
    let line = j.stderr.lines().find(|l| l.starts_with("{\"ts\":")).unwrap();
    assert!(
        line.contains("\"backtrace\":[\"outputs_rdynamic:errshim_fixture_failing_shutdown+0x"),
        "{line}"
    );
    // Off by default.
    let off = Cmd::new(&bin).args(["bt"]).shim().run();
    assert!(!off.stderr.contains("backtrace"), "{}", off.stderr);
}
