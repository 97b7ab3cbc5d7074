//! Fault mode (`ERRSHIM_FAULTS`, `ERRSHIM_SEED`, `ERRSHIM_CONTROL`) on real sockets: which calls
//! each trigger hits, reproducible randomness, what an injected fault does (and does not do) to
//! the data, real resets, delays, switching faults while a program runs, descriptors that must
//! never be hit, configuration errors, and what is logged and counted.
//!
//! The fixture is `tests/fixtures/faults.c`: it prints every call's result and what the peer
//! really received, so each test knows exactly which calls were injected.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const EIO: i32 = libc::EIO;

fn fixture() -> PathBuf {
    program("faults")
}

/// Runs the fixture with errshim and these variables.
fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = Cmd::new(fixture()).args(args).shim();
    for (k, v) in env {
        c = c.env(k, v);
    }
    c.run()
}

/// Runs the fixture under the fault rules `spec`, with a fixed seed.
fn with_faults(spec: &str, args: &[&str]) -> Run {
    run(args, &[("ERRSHIM_FAULTS", spec), ("ERRSHIM_SEED", "1")])
}

/// One line "send <i> <tag> ret=<r> errno=<e>" of `faults sends`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Sent {
    i: usize,
    tag: char,
    ret: i64,
    errno: i32,
}

fn sent(r: &Run) -> Vec<Sent> {
    r.out_lines("send ")
        .iter()
        .map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            Sent {
                i: w[1].parse().unwrap(),
                tag: w[2].chars().next().unwrap(),
                ret: num(l, "ret="),
                errno: num(l, "errno=") as i32,
            }
        })
        .collect()
}

/// The numbers of the calls that failed.
fn failed(r: &Run) -> Vec<usize> {
    sent(r).iter().filter(|s| s.ret < 0).map(|s| s.i).collect()
}

/// The byte values that arrived at the receiving end `tag` (`u` or `t`), in order.
fn received(r: &Run, tag: char) -> Vec<u64> {
    let prefix = format!("received {tag} ");
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no '{prefix}' in output:\n{}", r.describe()));
    let bytes = line.split("bytes=").nth(1).unwrap();
    bytes
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect()
}

/// The number after `key` (e.g. `ret=`, ` k=`) in a line.
fn num(line: &str, key: &str) -> i64 {
    let rest = line.split(key).nth(1).unwrap_or_else(|| panic!("no '{key}' in {line}"));
    let end = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
        .map_or(rest.len(), |(i, _)| i);
    rest[..end].parse().unwrap_or_else(|_| panic!("bad '{key}' in {line}"))
}

/// The value of `key` in a "key=value" output line (up to the next space).
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let rest = line
        .split(&format!("{key}="))
        .nth(1)
        .unwrap_or_else(|| panic!("no '{key}=' in {line}"));
    rest.split(' ').next().unwrap()
}

/// The fixture's line that starts with `step` (followed by a space).
fn step<'a>(r: &'a Run, step: &str) -> &'a str {
    let prefix = format!("{step} ");
    r.stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no '{step}' in output:\n{}", r.describe()))
}

/// (ret, errno) of a fixture step.
fn result(r: &Run, name: &str) -> (i64, i32) {
    let l = step(r, name);
    (num(l, "ret="), num(l, "errno=") as i32)
}

/// Injection events (text format).
fn injections(text: &str) -> Vec<&str> {
    events(text)
        .into_iter()
        .filter(|e| e.contains(" (INJECTED) -> inject "))
        .collect()
}

/// Event lines but the startup line.
fn events_but_startup(text: &str) -> Vec<&str> {
    events(text).into_iter().filter(|e| !e.contains(" faults: ")).collect()
}

/// The exit summary's rows, `errshim summary count=...`.
fn summary_rows(r: &Run) -> Vec<&str> {
    r.stderr
        .lines()
        .filter(|l| l.starts_with("errshim summary count="))
        .collect()
}

/// Every stderr line as JSON (`ERRSHIM_FORMAT=json`).
fn json_lines(r: &Run) -> Vec<serde_json::Value> {
    r.stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The startup line that names the seed: said by each process where a rule acts, before its
/// first injection (a forked child whose parent said it first does not repeat it), all alike.
fn startup_line(text: &str) -> &str {
    let lines: Vec<&str> = events(text).into_iter().filter(|e| e.contains(" faults: ")).collect();
    assert!(!lines.is_empty(), "a startup line expected:\n{text}");
    let said = |l: &str| l.split(" faults: ").nth(1).unwrap().to_string();
    assert!(lines.iter().all(|l| said(l) == said(lines[0])), "{lines:?}");
    let first_injection = text.lines().position(|l| l.contains(" (INJECTED) -> inject "));
    let first_startup = text.lines().position(|l| l.contains(" faults: "));
    assert!(
        first_startup <= first_injection || first_injection.is_none(),
        "said before the first injection:\n{text}"
    );
    lines[0]
}

/// The entry point an event names: `send` in `... comm=faults send(fd=3, ...`.
fn entry(event: &str) -> &str {
    event
        .split(" comm=faults ")
        .nth(1)
        .and_then(|r| r.split('(').next())
        .unwrap_or_else(|| panic!("no call in {event}"))
}

/// What the real call returned, from `... ) = <ret> ...`.
fn event_ret(event: &str) -> i64 {
    num(event, ") = ")
}

// --- 1. triggers ------------------------------------------------------------------------------

/// Every trigger and their combinations, on 1-byte sends over an AF_UNIX socketpair: exactly the
/// listed call numbers fail with EIO, every other call sends its byte, the peer receives exactly
/// the bytes of the calls that were not injected (an injected send sends nothing), and each
/// injection is one event with `fault_rule=1 k=<call number>` (every call matches the rule).
#[test]
fn triggers_hit_exactly_the_calls_they_name() {
    let all = |a: usize, b: usize| (a..=b).collect::<Vec<_>>();
    let cases: Vec<(&str, Vec<usize>)> = vec![
        ("send:EIO", all(1, 20)),
        ("send:EIO:nth=5", vec![5]),
        ("send:EIO:when=7", vec![7]),
        ("send:EIO:when=15+", all(15, 20)),
        ("send:EIO:when=3+4", vec![3, 7, 11, 15, 19]),
        ("send:EIO:when=4..8", all(4, 8)),
        ("send:EIO:when=2..12+5", vec![2, 7, 12]),
        ("send:EIO:when=18..40+1", all(18, 20)),
        ("send:EIO:after=17", vec![18, 19, 20]),
        ("send:EIO:max=3", vec![1, 2, 3]),
        ("send:EIO:after=2:when=1+2:max=2", vec![3, 5]),
        ("send:EIO:when=5+3:max=2", vec![5, 8]),
        ("send:EIO:after=5:max=2", vec![6, 7]),
        ("send:EIO:nth=6:after=4", vec![6]),
        ("send:EIO:nth=4:after=4", vec![]),
        ("send:EIO:nth=3:when=1..5", vec![3]),
        ("send:EIO:nth=7:when=1..5", vec![]),
        ("send:EIO:after=3:when=2..9+2:max=3", vec![4, 6, 8]),
        ("send:EIO:p=0", vec![]),
        ("send:EIO:p=1:when=19+", vec![19, 20]),
        ("recv:EIO", vec![]),
    ];
    for (spec, expect) in cases {
        let r = with_faults(spec, &["sends", "20", "u"]);
        r.assert_ok();
        let s = sent(&r);
        assert_eq!(s.len(), 20, "{spec}: {}", r.describe());
        assert_eq!(failed(&r), expect, "{spec}:\n{}", r.describe());
        for x in &s {
            let want = if expect.contains(&x.i) { (-1, EIO) } else { (1, 0) };
            assert_eq!((x.ret, x.errno), want, "{spec}: call {}", x.i);
        }
        let not_injected: Vec<u64> = s.iter().filter(|x| x.ret == 1).map(|x| x.i as u64).collect();
        assert_eq!(received(&r, 'u'), not_injected, "{spec}: the peer got other bytes");
        let ev = injections(&r.stderr);
        let ks: Vec<usize> = ev.iter().map(|e| num(e, " k=") as usize).collect();
        assert_eq!(ks, expect, "{spec}: events:\n{}", r.stderr);
        for e in ev {
            assert!(
                e.contains(" send(fd=3, len=1, flags=0x4000) = -1 EIO (INJECTED) -> inject EIO, returned -1 EIO | unix-stream "),
                "{spec}: {e}"
            );
            assert!(e.contains(" fault_rule=1 k="), "{spec}: {e}");
        }
    }
}

/// Every rule whose filters match a call counts it, even when an earlier rule injects; the first
/// rule that triggers injects. Rule 1 hits calls 1, 4, 7, 10 (EIO); rule 2 hits odd k, and its
/// k=1 and k=7 are taken by rule 1, so it injects at 3, 5, 9, 11 (ENOBUFS) with k = the call
/// number.
#[test]
fn every_matching_rule_counts_first_trigger_injects() {
    let r = with_faults("send:EIO:when=1..10+3;send:ENOBUFS:when=1+2", &["sends", "12", "u"]);
    r.assert_ok();
    let got: Vec<(usize, i32)> = sent(&r).iter().filter(|s| s.ret < 0).map(|s| (s.i, s.errno)).collect();
    let (eio, reset) = (EIO, libc::ENOBUFS);
    assert_eq!(
        got,
        vec![
            (1, eio),
            (3, reset),
            (4, eio),
            (5, reset),
            (7, eio),
            (9, reset),
            (10, eio),
            (11, reset)
        ],
        "{}",
        r.describe()
    );
    let ev: Vec<(i64, i64)> = injections(&r.stderr)
        .iter()
        .map(|e| (num(e, " fault_rule="), num(e, " k=")))
        .collect();
    assert_eq!(
        ev,
        vec![(1, 1), (2, 3), (1, 4), (2, 5), (1, 7), (2, 9), (1, 10), (2, 11)]
    );
    assert_eq!(received(&r, 'u'), vec![2, 6, 8, 12]);
}

/// Filters decide which calls a rule counts: with sends alternating between a socketpair (odd
/// calls) and a TCP connection (even calls), k counts only the calls that pass `fd=`/`peer=`.
#[test]
fn filters_decide_which_calls_count() {
    let cases: Vec<(&str, Vec<usize>)> = vec![
        // TCP calls are 2, 4, ..., 20 (k = 1..10); k = 2, 4, ... are calls 4, 8, ...
        ("send:EIO:fd=tcp:when=2+2", vec![4, 8, 12, 16, 20]),
        // unix calls are 1, 3, 5, ...; the third is call 5.
        ("send:EIO:fd=unix:nth=3", vec![5]),
        ("send:EIO:fd=udp", vec![]),
        ("send:EIO:peer=127.0.0.1:when=1..2", vec![2, 4]),
        ("send:EIO:peer=127.0.0.0/8:after=8", vec![18, 20]),
        ("send:EIO:peer=10.0.0.0/8", vec![]),
        ("send:EIO:fd=sock:when=19+", vec![19, 20]),
    ];
    for (spec, expect) in cases {
        let r = with_faults(spec, &["sends", "20", "ut"]);
        r.assert_ok();
        assert_eq!(failed(&r), expect, "{spec}:\n{}", r.describe());
        let s = sent(&r);
        for tag in ['u', 't'] {
            let ok: Vec<u64> = s
                .iter()
                .filter(|x| x.tag == tag && x.ret == 1)
                .map(|x| x.i as u64)
                .collect();
            assert_eq!(received(&r, tag), ok, "{spec}: {tag}");
        }
        assert_eq!(injections(&r.stderr).len(), expect.len(), "{spec}: {}", r.stderr);
    }
    // port=: the listener's port is the client's peer port (and the accepted end's local one).
    for (spec, expect) in [
        ("send:EIO:port=PORT:when=1..2", vec![2, 4]),
        ("send:EIO:port=PORT:after=9", vec![20]),
        ("send:EIO:port=1", vec![]),
    ] {
        let r = on_free_port(|port| {
            let spec = spec.replace("PORT", &port.to_string());
            with_faults(&spec, &["sends", "20", "ut", "1", &port.to_string()])
        });
        r.assert_ok();
        assert_eq!(failed(&r), expect, "{spec}:\n{}", r.describe());
    }
    // The kind in the event is the filtered one.
    let r = with_faults("send:EIO:fd=tcp:nth=1", &["sends", "4", "ut"]);
    let ev = injections(&r.stderr);
    assert_eq!(ev.len(), 1, "{}", r.stderr);
    assert!(
        ev[0].contains("| tcp4 local=127.0.0.1:") && ev[0].contains(" peer=127.0.0.1:"),
        "{}",
        ev[0]
    );
    assert!(ev[0].contains(" fault_rule=1 k=1 "), "{}", ev[0]);
}

/// Runs `f` with a loopback port that was free a moment ago; the fixture exits with 98 when it
/// was taken in between, and then another is tried.
fn on_free_port(f: impl Fn(u16) -> Run) -> Run {
    for _ in 0..10 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let r = f(port);
        if r.code != Some(98) {
            return r;
        }
    }
    panic!("no free loopback port in 10 tries");
}

// --- 2. seeds -----------------------------------------------------------------------------------

fn p_run(spec: &str, args: &[&str], seed: Option<&str>) -> Run {
    let mut env = vec![("ERRSHIM_FAULTS", spec)];
    if let Some(s) = seed {
        env.push(("ERRSHIM_SEED", s));
    }
    let r = run(args, &env);
    r.assert_ok();
    r
}

/// The seed from `... seed=S (ERRSHIM_SEED=S replays this program and every process it forks)`.
fn seed_of(text: &str) -> u64 {
    let line = startup_line(text);
    let s = field(line, "seed").trim_end_matches(',');
    assert!(
        line.ends_with(&format!(
            " (ERRSHIM_SEED={s} replays this program and every process it forks)"
        )),
        "{line}"
    );
    s.parse().unwrap()
}

/// `p=0.3` over 300 calls: the same seed gives the same injected calls (and the same events),
/// another seed gives others; a run without ERRSHIM_SEED names its seed in the startup line, and
/// that seed replays it exactly.
#[test]
fn same_seed_same_injections() {
    let spec = "send:EIO:p=0.3";
    let args = ["sends", "300", "u"];
    let a = p_run(spec, &args, Some("42"));
    let b = p_run(spec, &args, Some("42"));
    let c = p_run(spec, &args, Some("43"));
    let fa = failed(&a);
    assert!((45..=135).contains(&fa.len()), "p=0.3 of 300: {} injections", fa.len());
    assert_eq!(fa, failed(&b), "same seed, same calls");
    assert_ne!(fa, failed(&c), "another seed, other calls");
    let ks = |r: &Run| {
        injections(&r.stderr)
            .iter()
            .map(|e| num(e, " k=") as usize)
            .collect::<Vec<_>>()
    };
    assert_eq!(ks(&a), fa, "events name the injected calls");
    assert_eq!(seed_of(&a.stderr), 42);

    let d = p_run(spec, &args, None);
    let seed = seed_of(&d.stderr);
    let e = p_run(spec, &args, Some(&seed.to_string()));
    assert_eq!(failed(&d), failed(&e), "ERRSHIM_SEED={seed} replays the run");
    assert_eq!(seed_of(&e.stderr), seed);
    let f = p_run(spec, &args, None);
    assert_ne!(seed_of(&f.stderr), seed, "each run picks its own seed");
}

/// The seed covers every random choice: the byte counts of random `short` faults too.
#[test]
fn same_seed_same_short_counts() {
    let spec = "send:short:p=0.5:unfaithful;send:EIO:p=0.2";
    let args = ["sends", "100", "u", "64"];
    let a = p_run(spec, &args, Some("5"));
    let b = p_run(spec, &args, Some("5"));
    let c = p_run(spec, &args, Some("6"));
    assert_eq!(sent(&a), sent(&b));
    assert_ne!(sent(&a), sent(&c));
    let s = sent(&a);
    let shorts: Vec<i64> = s.iter().filter(|x| x.ret > 0 && x.ret < 64).map(|x| x.ret).collect();
    assert!(shorts.len() >= 10, "{shorts:?}");
    assert!(
        shorts.iter().collect::<std::collections::BTreeSet<_>>().len() > 3,
        "random counts: {shorts:?}"
    );
    assert!(s.iter().any(|x| x.ret == -1 && x.errno == EIO));
    assert!(s.iter().all(|x| x.ret == -1 || (1..=64).contains(&x.ret)));
    // The counts are true: the peer received exactly the sum.
    let total: i64 = s.iter().filter(|x| x.ret > 0).map(|x| x.ret).sum();
    assert_eq!(received(&a, 'u').len() as i64, total);
    assert_eq!(
        injections(&a.stderr).len(),
        shorts.len() + s.iter().filter(|x| x.ret < 0).count()
    );
}

/// The decision for the k-th matching call of a rule depends only on (seed, rule, k): the TCP
/// calls of a run that interleaves them with unix calls (which the rule does not count) are
/// injected exactly where a run of TCP calls alone is.
#[test]
fn decisions_depend_on_k_only() {
    let spec = "send:EIO:p=0.3:fd=tcp";
    let alone = p_run(spec, &["sends", "200", "t"], Some("9"));
    let mixed = p_run(spec, &["sends", "400", "ut"], Some("9"));
    let a = failed(&alone);
    assert!(!a.is_empty());
    // In the mixed run the k-th TCP call is call 2k.
    let m: Vec<usize> = failed(&mixed).iter().map(|i| i / 2).collect();
    assert!(failed(&mixed).iter().all(|i| i % 2 == 0), "unix calls are never hit");
    assert_eq!(a, m);
}

/// `faults tree N K HOW` under `recv:ENOBUFS:p=0.5:fd=tcp` (each connection's one recv is
/// a coin toss): each process's injected connections, by who it is in the tree.
fn tree(n: usize, k: usize, how: &str, seed: Option<&str>) -> (Run, BTreeMap<String, Vec<usize>>) {
    let (n, k) = (n.to_string(), k.to_string());
    let r = p_run("recv:ENOBUFS:p=0.5:fd=tcp", &["tree", &n, &k, how], seed);
    let mut by_who: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for l in r.out_lines("process ") {
        by_who.insert(l.split(' ').nth(1).unwrap().to_string(), Vec::new());
    }
    for l in r.out_lines("conn ") {
        let w: Vec<&str> = l.split(' ').collect();
        if num(l, "ret=") < 0 {
            assert_eq!(num(l, "errno="), libc::ENOBUFS as i64, "{l}");
            by_who.get_mut(w[1]).unwrap().push(w[2].parse().unwrap());
        }
    }
    // Each process's events are its injections, numbered by its own calls from 1.
    for l in r.out_lines("process ") {
        let (who, pid) = (l.split(' ').nth(1).unwrap(), field(l, "pid"));
        let ks: Vec<usize> = injections(&r.stderr)
            .iter()
            .filter(|e| field(e, "pid") == pid)
            .map(|e| num(e, " k=") as usize)
            .collect();
        assert_eq!(ks, by_who[who], "{who}'s events:\n{}", r.stderr);
    }
    (r, by_who)
}

/// Forked workers draw their own decisions: each process's stream comes from its parent's and
/// its number among its parent's forks, so siblings (and a grandchild) differ from each other
/// and from the root, while the same seed replays every process of the tree, and the root
/// decides as it would without children. Unset, the seed the startup line names replays the
/// tree just as well.
#[test]
fn forked_workers_differ_and_one_seed_replays_the_tree() {
    let (a, da) = tree(4, 24, "fork", Some("7"));
    let (_, db) = tree(4, 24, "fork", Some("7"));
    let whos: Vec<&str> = da.keys().map(String::as_str).collect();
    assert_eq!(whos, ["1", "1.1", "2", "3", "4", "root"], "{}", a.describe());
    assert_eq!(da, db, "the same seed replays every process of the tree");
    let all: Vec<&Vec<usize>> = da.values().collect();
    for (i, x) in all.iter().enumerate() {
        assert!((3..=21).contains(&x.len()), "p=0.5 of 24: {da:?}");
        for y in &all[i + 1..] {
            assert_ne!(x, y, "no two processes of the tree decide alike: {da:?}");
        }
    }
    let (_, alone) = tree(0, 24, "fork", Some("7"));
    assert_eq!(alone["root"], da["root"], "forking changes nothing of the parent's");
    let (_, dc) = tree(4, 24, "fork", Some("8"));
    assert!(
        da.iter().all(|(w, d)| dc[w] != *d),
        "another seed, other decisions everywhere"
    );
    assert_eq!(seed_of(&a.stderr), 7, "every startup line names the tree's seed");

    let (d, dd) = tree(4, 24, "fork", None);
    let seed = seed_of(&d.stderr).to_string();
    let (_, de) = tree(4, 24, "fork", Some(&seed));
    assert_eq!(dd, de, "ERRSHIM_SEED={seed} from the startup line replays the tree");
}

/// A program started by exec (after vfork, or by posix_spawn) cannot be told where it is in
/// the tree without something the program would see, so it begins again from the seed: with
/// ERRSHIM_SEED, each exec'd worker decides as the root, the same in every run; unset, each
/// picks its own seed and names it. The root's own decisions are untouched by its vforks.
#[test]
fn programs_started_by_exec_begin_again_from_the_seed() {
    let (_, alone) = tree(0, 24, "fork", Some("7"));
    for how in ["vfork", "spawn"] {
        let (r, d) = tree(3, 24, how, Some("7"));
        let whos: Vec<&str> = d.keys().map(String::as_str).collect();
        assert_eq!(whos, ["1", "2", "3", "root"], "{how}: {}", r.describe());
        assert!(
            d.values().all(|x| *x == alone["root"]),
            "{how}: every exec'd program starts from ERRSHIM_SEED: {d:?}"
        );
        seed_of(&r.stderr);

        let (r, d) = tree(3, 24, how, None);
        let seeds: std::collections::BTreeSet<&str> = events(&r.stderr)
            .into_iter()
            .filter(|e| e.contains(" faults: "))
            .map(|e| field(e, "seed"))
            .collect();
        assert_eq!(
            seeds.len(),
            4,
            "{how}: each program picks and names its own: {}",
            r.stderr
        );
        let distinct: std::collections::BTreeSet<&Vec<usize>> = d.values().collect();
        assert_eq!(distinct.len(), 4, "{how}: {d:?}");
    }
}

// --- 3. short on both sides ------------------------------------------------------------------------

/// (bytes, calls, short_calls, sha256) of the fixture's "writer ..." or "reader ..." line.
fn side(r: &Run, who: &str) -> (i64, i64, i64, String) {
    let l = step(r, who);
    (
        num(l, "bytes="),
        num(l, "calls="),
        num(l, "short_calls="),
        field(l, "sha256").to_string(),
    )
}

/// 50 MiB through TCP from a forked writer (write-all loop over write, send, writev, sendmsg,
/// sendto) to a reader (read-all loop over read, recv, readv, recvmsg, recvfrom), both
/// non-blocking and driven by edge-triggered epoll as nginx is (a short read is taken to have
/// drained the socket, a short write to have filled it), with `*:short` on both sides: every
/// call is cut short, the counts are true, nothing stalls (the rest wakes the program as the
/// kernel would), and the SHA-256 of what arrived equals that of what was sent and of the same
/// stream without errshim.
#[test]
fn short_transfers_keep_the_stream_intact() {
    let sha = Cmd::new(fixture()).args(["sha256", "abc"]).run();
    assert_eq!(
        sha.stdout.trim(),
        "sha256=ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "the fixture's SHA-256 is right"
    );
    let bytes = (50 << 20).to_string();
    let bare = Cmd::new(fixture()).args(["etstream", &bytes]).run();
    bare.assert_ok();
    let reference = side(&bare, "writer").3;
    assert_eq!(side(&bare, "reader").3, reference);

    let start = Instant::now();
    // stderr a file: the events outrun a pipe's reader, and errshim drops what a full pipe
    // cannot take rather than block.
    let dir = TempDir::new("short-stream");
    let r = Cmd::new(fixture())
        .args(["etstream", &bytes])
        .shim()
        .env("ERRSHIM_FAULTS", "*:short:fd=tcp")
        .env("ERRSHIM_SEED", "3")
        .env("ERRSHIM_LOG_RATE", "0")
        .stderr_file(&dir.path("stderr"))
        .timeout(Duration::from_secs(120))
        .run();
    r.assert_ok();
    let (wb, wcalls, wshort, wsha) = side(&r, "writer");
    let (rb, rcalls, rshort, rsha) = side(&r, "reader");
    assert_eq!((wb, rb), (50 << 20, 50 << 20), "{}", r.stdout);
    assert_eq!(wsha, reference, "the writer sent the reference stream");
    assert_eq!(rsha, reference, "the reader received it intact");
    eprintln!(
        "50 MiB with short faults: {:?}, writer {wcalls} calls ({wshort} short), reader {rcalls} calls ({rshort} short)",
        start.elapsed()
    );

    // Events by process: the writer's are those of its write calls.
    let ev = injections(&r.stderr);
    startup_line(&r.stderr);
    let writer_pid = field(ev.iter().find(|e| e.contains(" write(fd=")).unwrap(), "pid");
    let (w_ev, r_ev): (Vec<&str>, Vec<&str>) = ev.iter().partition(|e| field(e, "pid") == writer_pid);
    // Most writes are cut (not those of 1 byte, nor what the kernel itself cut, which is then
    // no injection); every read that is cut is an injection, and none that found end of file.
    assert!(
        w_ev.len() as i64 <= wshort && w_ev.len() as i64 > wshort / 2,
        "{} {wshort}",
        w_ev.len()
    );
    assert!(wshort > 1000 && wcalls > wshort, "{wcalls} {wshort}");
    assert!(
        r_ev.len() as i64 <= rshort && r_ev.len() as i64 > rcalls / 2,
        "{} {rcalls}",
        r_ev.len()
    );
    let by_entry = |evs: &[&str]| {
        let mut m = BTreeMap::new();
        for e in evs {
            assert!(e.contains(" (INJECTED) -> inject short, returned "), "{e}");
            assert!(e.contains(" | tcp4 local=127.0.0.1:"), "{e}");
            let (len, ret) = (num(e, "len="), event_ret(e));
            assert!(ret < len && ret >= 0, "cut below the length asked for: {e}");
            assert!(
                e.contains(&format!(", returned {ret} | ")),
                "the true count is returned: {e}"
            );
            *m.entry(entry(e).to_string()).or_insert(0) += 1;
        }
        m.into_keys().collect::<Vec<_>>()
    };
    assert_eq!(by_entry(&w_ev), ["send", "sendmsg", "sendto", "write", "writev"]);
    assert_eq!(by_entry(&r_ev), ["read", "readv", "recv", "recvfrom", "recvmsg"]);
    assert!(r_ev.iter().all(|e| event_ret(e) > 0), "end of file is no injection");

    // The same cuts without what keeps them faithful (`unfaithful`): the rest never wakes the
    // program, which waits for ever (the fixture gives up after 10 s).
    let r = Cmd::new(fixture())
        .args(["etstream", &bytes])
        .shim()
        .env("ERRSHIM_FAULTS", "*:short:fd=tcp:unfaithful")
        .env("ERRSHIM_LOG", "off")
        .timeout(Duration::from_secs(60))
        .run();
    // (The writer may die first, of the broken connection its stalled reader left: 99.)
    assert!(matches!(r.code, Some(4 | 99)), "{}", r.describe());
    assert!(r.stdout.contains("stalled "), "{}", r.stdout);
}

type Side = (i64, i64, i64, String);

/// 4 MiB through the fixture's `MODE` under the fault rules `spec` (log off): both sides saw
/// the stream that a run without errshim sends.
fn intact_stream(mode: &str, spec: &str) -> (Run, Side, Side) {
    let bytes = (4 << 20).to_string();
    let bare = Cmd::new(fixture()).args([mode, &bytes]).run();
    let r = Cmd::new(fixture())
        .args([mode, &bytes])
        .shim()
        .env("ERRSHIM_FAULTS", spec)
        .env("ERRSHIM_LOG", "off")
        .run();
    r.assert_ok();
    let (w, rd) = (side(&r, "writer"), side(&r, "reader"));
    assert_eq!(w.3, side(&bare, "writer").3);
    assert_eq!(rd.3, w.3);
    (r, w, rd)
}

/// `rate=`: 2 MiB through TCP at 4 MiB/s takes at least half a second (without errshim, a few
/// milliseconds), and arrives intact: paced, nothing lost. On the edge-triggered fixture too,
/// where the transfers are also cut to a tenth of a second's worth and nothing stalls.
#[test]
fn rate_paces_a_connection_and_loses_nothing() {
    for mode in ["stream", "etstream"] {
        let bytes = (2 << 20).to_string();
        let bare = Cmd::new(fixture()).args([mode, &bytes]).run();
        let start = Instant::now();
        let r = Cmd::new(fixture())
            .args([mode, &bytes])
            .shim()
            .env("ERRSHIM_FAULTS", "*:rate=4MiB/s:fd=tcp")
            .env("ERRSHIM_LOG", "off")
            .timeout(Duration::from_secs(60))
            .run();
        let took = start.elapsed();
        r.assert_ok();
        let (w, rd) = (side(&r, "writer"), side(&r, "reader"));
        assert_eq!(
            (w.3.as_str(), rd.3.as_str()),
            (side(&bare, "writer").3.as_str(), w.3.as_str())
        );
        assert!(took >= Duration::from_millis(450), "{mode}: {took:?}");
        if mode == "etstream" {
            assert!(
                w.1 >= (2 << 20) / (400 << 10),
                "{mode}: writes cut to 0.1 s: {}",
                r.stdout
            );
        }
        eprintln!("{mode}: 2 MiB at 4 MiB/s in {took:?}");
    }
}

/// Blocking sockets: a read is cut (the kernel returns what has arrived), a write never is
/// (Linux cuts a blocking write only when a signal interrupts it or SO_SNDTIMEO expires).
#[test]
fn blocking_writes_are_never_cut() {
    let (r, w, rd) = intact_stream("stream", "*:short:fd=tcp");
    assert_eq!(w.2, 0, "no write cut: {}", r.stdout);
    assert!(rd.2 > (4 << 20) / 65536, "reads cut: {}", r.stdout);
}

/// Where Linux never gives a short transfer, `short` injects nothing: a unix socketpair (its
/// reads end only where writes ended), blocking TCP sends; `unfaithful` cuts them anyway.
#[test]
fn short_acts_only_where_linux_could_cut() {
    for pattern in ["u", "t"] {
        let r = with_faults("send:short", &["sends", "20", pattern, "64"]);
        r.assert_ok();
        assert!(sent(&r).iter().all(|x| x.ret == 64), "{}", r.stdout);
        assert_eq!(injections(&r.stderr).len(), 0, "{}", r.stderr);
        assert_eq!(received(&r, pattern.chars().next().unwrap()).len(), 20 * 64);
        let r = with_faults("send:short:unfaithful", &["sends", "20", pattern, "64"]);
        r.assert_ok();
        assert!(sent(&r).iter().all(|x| x.ret < 64), "{}", r.stdout);
        assert_eq!(injections(&r.stderr).len(), 20, "{}", r.stderr);
    }
}

/// The same with the families named explicitly and a fixed cut (`short=N`), which makes every
/// call of both sides move at most N bytes.
#[test]
fn short_n_caps_every_transfer() {
    let spec = "write,send,writev,sendmsg,sendto:short=4000:fd=tcp;read,recv,readv,recvmsg,recvfrom:short=3000:fd=tcp";
    let (r, w, rd) = intact_stream("etstream", spec);
    // 64 chunks of 64 KiB, each in writes of at most 4000 bytes; reads of at most 3000 while
    // the writer sends (once its FIN is in, what is queued is read uncut, as the kernel gives
    // everything then).
    assert!(w.1 >= 64 * 17 && w.2 >= 64 * 16, "{}", r.stdout);
    assert!(rd.1 >= (3 << 20) / 3000, "{}", r.stdout);
}

// --- 4. what an injected fault does to the data ----------------------------------------------------

/// On a TCP connection, errors that leave a socket as it was (ENOMEM, ENOBUFS,
/// EINVAL): an injected read error consumes nothing (the bytes stay queued and the next read
/// returns them); an injected `eof` returns 0 where nothing is queued and leaves errno; an
/// injected write error sends nothing; an injected shutdown error does not shut down (the next
/// write still works); an injected close error still releases the descriptor.
#[test]
fn injected_errors_consume_and_send_nothing() {
    // A socket's shutdown fails only with ENOTCONN and its close never: EINVAL and EIO there
    // are unfaithful, asked for as such (`close_and_shutdown_fail_only_as_linux_could` below).
    let spec = "read:ENOMEM:nth=1;recv:eof:when=1..2;write:ENOBUFS:nth=3;shutdown:EINVAL:nth=1:unfaithful;close:EIO:nth=5:unfaithful";
    let r = with_faults(spec, &["consume"]);
    r.assert_ok();
    let data = |s: &str| field(step(&r, s), "data").to_string();
    assert_eq!(result(&r, "write_hello"), (5, libc::EILSEQ));
    assert_eq!(r.out_lines("queued_before_error=5").len(), 1, "{}", r.stdout);
    assert_eq!(result(&r, "read_error"), (-1, libc::ENOMEM));
    assert_eq!(
        r.out_lines("queued_after_error=5").len(),
        1,
        "nothing consumed: {}",
        r.stdout
    );
    assert_eq!(result(&r, "read_after_error").0, 5);
    assert_eq!(data("read_after_error"), "hello");
    assert_eq!(
        (result(&r, "recv_queued").0, data("recv_queued")),
        (5, "world".to_string()),
        "no end of file before queued data"
    );
    assert_eq!(result(&r, "recv_eof"), (0, libc::EILSEQ), "eof leaves errno as it was");
    assert_eq!(result(&r, "recv_after_eof").0, 0, "and stays");
    assert_eq!(result(&r, "write_lost"), (-1, libc::ENOBUFS));
    assert_eq!(result(&r, "shutdown_error"), (-1, libc::EINVAL), "the injected error");
    assert_eq!(result(&r, "write_after"), (5, libc::EILSEQ), "no SHUT_WR was done");
    assert_eq!(result(&r, "shutdown_real"), (0, libc::EILSEQ));
    assert_eq!(
        r.out_lines("rest=").first().copied(),
        Some("rest=after end=0"),
        "the peer got 'after' and then end of file, never 'lost'"
    );
    assert_eq!(result(&r, "close_error"), (-1, EIO));
    assert_eq!(
        result(&r, "fcntl_after_close"),
        (-1, libc::EBADF),
        "closed all the same"
    );

    let ev = injections(&r.stderr);
    let summary: Vec<String> = ev
        .iter()
        .map(|e| {
            format!(
                "{} {} rule={} k={}",
                entry(e),
                e.split(" (INJECTED) -> inject ")
                    .nth(1)
                    .unwrap()
                    .split(',')
                    .next()
                    .unwrap(),
                num(e, " fault_rule="),
                num(e, " k=")
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "read ENOMEM rule=1 k=1",
            "recv eof rule=2 k=2",
            "write ENOBUFS rule=3 k=3",
            "shutdown EINVAL rule=4 k=1",
            "close EIO rule=5 k=5"
        ],
        "{}",
        r.stderr
    );
    assert!(
        ev[1].contains(", len=64) = 0 (INJECTED) -> inject eof, returned 0 | tcp4"),
        "{}",
        ev[1]
    );
    assert!(
        ev[4].contains("close(fd=5) = -1 EIO (INJECTED) -> inject EIO, returned -1 EIO | tcp4"),
        "{}",
        ev[4]
    );
    assert_eq!(
        events(&r.stderr).len(),
        ev.len() + 1,
        "nothing else logged: {}",
        r.stderr
    );
}

/// Errors that end a connection end it for real, as Linux's do: after an injected ECONNRESET
/// on a send, the peer got an RST, the next send fails with the kernel's EPIPE (no second
/// error pending), and the shutdown with its ENOTCONN (suppressed by the default rule). An
/// injected EPIPE raises SIGPIPE as the kernel's does (the fixture ignores it; with the default
/// action the program dies of it), and EAGAIN is given only to a non-blocking call.
#[test]
fn errors_that_end_a_connection_end_it() {
    let r = with_faults("send:ECONNRESET:nth=1", &["reset"]);
    r.assert_ok();
    assert_eq!(result(&r, "client_send"), (-1, libc::ECONNRESET), "{}", r.describe());
    assert_eq!(result(&r, "server_read"), (-1, libc::ECONNRESET), "the peer got a RST");
    assert_eq!(
        result(&r, "client_send_again"),
        (-1, libc::EPIPE),
        "the kernel's, once dead"
    );
    assert_eq!(result(&r, "client_shutdown"), (0, libc::EILSEQ));
    let ev = injections(&r.stderr);
    assert_eq!(ev.len(), 1, "{}", r.stderr);
    assert!(
        ev[0].contains("-> inject ECONNRESET, returned -1 ECONNRESET"),
        "{}",
        ev[0]
    );

    // EPIPE with SIGPIPE at its default action: the program dies of it, as of the kernel's.
    let py = "import signal, socket\n\
              signal.signal(signal.SIGPIPE, signal.SIG_DFL)\n\
              l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(1)\n\
              c = socket.create_connection(l.getsockname()); s, _ = l.accept()\n\
              c.send(b'y')\n\
              print('survived', flush=True)\n";
    let bare = Cmd::new("python3").args(["-c", py]).run();
    assert!(bare.stdout.contains("survived"), "{}", bare.describe());
    let r = Cmd::new("python3")
        .args(["-c", py])
        .shim()
        .env("ERRSHIM_FAULTS", "send:EPIPE:nth=1")
        .run();
    assert_eq!(r.signal, Some(libc::SIGPIPE), "{}", r.describe());
    assert!(!r.stdout.contains("survived"), "{}", r.describe());

    // UDP: an ICMP error reaches a connected socket only.
    let udp = "import socket\n\
               a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(('127.0.0.1', 0))\n\
               b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b.bind(('127.0.0.1', 0))\n\
               b.sendto(b'x', a.getsockname()); b.sendto(b'y', a.getsockname())\n\
               print('unconnected', a.recvfrom(10)[0])\n\
               a.connect(b.getsockname())\n\
               try: print('connected', a.recv(10))\n\
               except OSError as e: print('connected', e.errno)\n";
    let r = Cmd::new("python3")
        .args(["-c", udp])
        .shim()
        .env("ERRSHIM_FAULTS", "recvfrom,recv:ECONNREFUSED")
        .run();
    r.assert_ok();
    assert_eq!(r.stdout, "unconnected b'x'\nconnected 111\n", "{}", r.describe());

    // EAGAIN: not on the blocking sends of this fixture.
    let r = with_faults("send:EAGAIN", &["sends", "5", "t", "8"]);
    r.assert_ok();
    assert!(sent(&r).iter().all(|x| x.ret == 8), "{}", r.stdout);
    assert_eq!(injections(&r.stderr).len(), 0, "{}", r.stderr);
}

/// Linux's close of a socket never fails, and its shutdown fails only with ENOTCONN: those
/// rules inject nothing there: the calls succeed as asked.
#[test]
fn close_and_shutdown_fail_only_as_linux_could() {
    let py = r#"import os, socket, sys
l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(1)
c = socket.create_connection(l.getsockname()); s, _ = l.accept()
def attempt(f):
    try: f(); return 'ok'
    except OSError as e: return str(e.errno)
print('shutdown', attempt(lambda: c.shutdown(socket.SHUT_WR)), 'peer', s.recv(10))
print('close', attempt(c.close))
"#;
    let r = Cmd::new("python3")
        .args(["-c", py])
        .shim()
        .env("ERRSHIM_FAULTS", "shutdown:EINVAL;close:EIO")
        .run();
    r.assert_ok();
    assert_eq!(r.stdout, "shutdown ok peer b''\nclose ok\n", "{}", r.describe());
    assert_eq!(injections(&r.stderr).len(), 0, "{}", r.stderr);
    // A file's close (`fd=any`) does fail: `nonsock_descriptors_need_fd_any` above.
}

/// An injected EPIPE's SIGPIPE is the kernel's: SI_USER from this process and its user, not
/// tgkill's SI_TKILL (seen with the signal blocked and taken by `sigtimedwait`).
#[test]
fn an_injected_epipe_raises_the_kernels_sigpipe() {
    let py = r#"import signal, socket, os, sys, json
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGPIPE])
l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(1)
c = socket.create_connection(l.getsockname()); s, _ = l.accept()
if sys.argv[1] == 'kernel':
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\0\0\0\0\0\0\0'); s.close()
    try: c.send(b'y')
    except OSError: pass
try: c.send(b'y'); e = 0
except OSError as x: e = x.errno
i = signal.sigtimedwait([signal.SIGPIPE], 0)
print(json.dumps([e, i.si_code, i.si_pid == os.getpid(), i.si_uid == os.getuid()] if i else [e]))
"#;
    let kernel = Cmd::new("python3").args(["-c", py, "kernel"]).run();
    kernel.assert_ok();
    assert_eq!(kernel.stdout.trim(), "[32, 0, true, true]", "{}", kernel.describe());
    let r = Cmd::new("python3")
        .args(["-c", py, "injected"])
        .shim()
        .env("ERRSHIM_FAULTS", "send:EPIPE:nth=1")
        .run();
    r.assert_ok();
    assert_eq!(r.stdout.trim(), kernel.stdout.trim(), "{}", r.describe());
}

// --- 5. reset ---------------------------------------------------------------------------------------

/// `reset` aborts the connection for real: the send then gets the kernel's own error, the peer's
/// read fails with ECONNRESET, a later send gets the kernel's EPIPE, and this side's shutdown
/// fails with the kernel's ENOTCONN, which the default rule suppresses and logs (not as an
/// injection). With no rules the program sees that ENOTCONN.
#[test]
fn reset_aborts_the_connection() {
    let env = [
        ("ERRSHIM_FAULTS", "send:reset:nth=1"),
        ("ERRSHIM_SEED", "1"),
        ("ERRSHIM_SUMMARY", "1"),
    ];
    let r = run(&["reset"], &env);
    r.assert_ok();
    let (ret, err) = result(&r, "client_send");
    assert_eq!(ret, -1, "{}", r.describe());
    assert!(
        err == libc::ECONNRESET || err == libc::EPIPE,
        "a send on an aborted connection: {}",
        r.describe()
    );
    assert_eq!(result(&r, "server_read"), (-1, libc::ECONNRESET), "the peer got a RST");
    assert_eq!(
        result(&r, "client_send_again"),
        (-1, libc::EPIPE),
        "not injected: the kernel's own"
    );
    assert_eq!(
        result(&r, "client_shutdown"),
        (0, libc::EILSEQ),
        "the default rule suppresses the kernel's ENOTCONN"
    );
    let ev = injections(&r.stderr);
    assert_eq!(ev.len(), 1, "{}", r.stderr);
    let name = if err == libc::ECONNRESET { "ECONNRESET" } else { "EPIPE" };
    assert!(
        ev[0].contains(&format!(
            "send(fd=4, len=1) = -1 {name} (INJECTED) -> inject reset, returned -1 {name} | tcp4 "
        )),
        "{}",
        ev[0]
    );
    assert!(ev[0].contains(" fault_rule=1 k=1 | state=CLOSE "), "{}", ev[0]);
    let shut: Vec<&str> = events(&r.stderr)
        .into_iter()
        .filter(|e| e.contains(" shutdown("))
        .collect();
    assert_eq!(shut.len(), 1, "{}", r.stderr);
    let s = shut[0];
    assert!(
        s.contains("shutdown(fd=4, SHUT_WR) = -1 ENOTCONN -> ignored, returned 0 | tcp4 "),
        "{s}"
    );
    assert!(!s.contains("INJECTED") && s.contains(" rule=1 | state=CLOSE "), "{s}");
    assert!(
        s.contains(" | cause=injected: errshim's fault rule 1 (reset) reset this connection earlier "),
        "{s}"
    );
    let rows = summary_rows(&r);
    assert!(
        rows.contains(&format!("errshim summary count=1 call=send errno={name} action=inject cause=injected").as_str()),
        "{rows:?}"
    );
    assert!(
        rows.contains(&"errshim summary count=1 call=shutdown errno=ENOTCONN action=ignore cause=injected"),
        "{rows:?}"
    );
    assert_eq!(rows.len(), 2, "{rows:?}");

    let bare = run(&["reset"], &[env[0], env[1], ("ERRSHIM_RULES", "")]);
    bare.assert_ok();
    assert_eq!(
        result(&bare, "client_shutdown"),
        (-1, libc::ENOTCONN),
        "the kernel's own"
    );
    assert_eq!(result(&bare, "server_read"), (-1, libc::ECONNRESET));
    assert_eq!(injections(&bare.stderr).len(), 1);
    assert_eq!(
        events(&bare.stderr).len(),
        2,
        "startup and the injection: {}",
        bare.stderr
    );
}

/// After an injected reset the connection's history says so, and every later event of it (a
/// send's EPIPE, shutdown's ENOTCONN) names errshim's fault rule as the cause, not the peer,
/// with the byte counts from just before the reset (the abort zeroes the kernel's): the
/// client had received "hello" (5 bytes) and sent "x" (1). The failing send is one event, the
/// injection's, put through no rule. In JSON the same. A reset where there is no connection
/// to abort (a unix socket) injects nothing.
#[test]
fn an_injected_reset_is_the_cause_of_what_follows() {
    let env = [
        ("ERRSHIM_FAULTS", "send:reset:nth=2"),
        ("ERRSHIM_SEED", "1"),
        ("ERRSHIM_RULES", "+*:ECONNRESET,EPIPE:log"),
    ];
    let r = run(&["reset"], &env);
    r.assert_ok();
    assert_eq!(result(&r, "client_hello"), (5, libc::EILSEQ));
    assert_eq!(result(&r, "client_send"), (1, libc::EILSEQ));
    assert_eq!(result(&r, "client_send_again"), (-1, libc::ECONNRESET));
    let ev = events_but_startup(&r.stderr);
    assert_eq!(
        ev.len(),
        2,
        "the injection and the shutdown, nothing twice:\n{}",
        r.stderr
    );
    let (inj, shut) = (ev[0], ev[1]);
    assert!(
        inj.contains(" send(fd=4, len=1) = -1 ECONNRESET (INJECTED) -> inject reset, returned -1 ECONNRESET | tcp4 "),
        "{inj}"
    );
    assert!(
        inj.contains(" | cause=injected: errshim injected this on purpose"),
        "this call's own injection: {inj}"
    );
    assert!(
        shut.contains(" shutdown(fd=4, SHUT_WR) = -1 ENOTCONN -> ignored, returned 0 | tcp4 "),
        "{shut}"
    );
    assert!(
        shut.contains(" | cause=injected: errshim's fault rule 1 (reset) reset this connection earlier "),
        "{shut}"
    );
    for e in [inj, shut] {
        assert!(
            e.contains(" bytes_received=5 bytes_sent=1 "),
            "the counts before the reset: {e}"
        );
        assert!(e.contains(" bytes_retrans=0 "), "{e}");
        let history = field(e, "history");
        assert!(history.starts_with("connected,"), "{history}");
        assert!(history.split(',').any(|w| w == "reset_injected"), "{history}");
    }
    assert!(
        field(shut, "history").contains("first_error=send:ECONNRESET"),
        "the reset's failure is kept: {shut}"
    );

    let mut json = env.to_vec();
    json.push(("ERRSHIM_FORMAT", "json"));
    let r = run(&["reset"], &json);
    r.assert_ok();
    let objs = json_lines(&r);
    let shut = objs.iter().find(|o| o["call"] == "shutdown").expect("shutdown event");
    assert_eq!(shut["cause"], "injected", "{shut}");
    assert_eq!(shut["action"], "ignore", "{shut}");
    assert!(shut.get("injected").is_none(), "not an injection itself: {shut}");
    assert!(
        shut["cause_text"]
            .as_str()
            .unwrap()
            .starts_with("errshim's fault rule 1 (reset) "),
        "{shut}"
    );
    assert_eq!(
        (shut["bytes_received"].as_u64(), shut["bytes_sent"].as_u64()),
        (Some(5), Some(1))
    );
    assert!(
        shut["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w == "reset_injected"),
        "{shut}"
    );

    let r = with_faults("send:reset:nth=1", &["sends", "3", "u"]);
    r.assert_ok();
    assert_eq!(failed(&r), Vec::<usize>::new(), "{}", r.describe());
    assert_eq!(received(&r, 'u'), [1, 2, 3]);
    assert!(injections(&r.stderr).is_empty(), "{}", r.stderr);
}

/// A fault that lets the real call happen (`short`, `delay`) on a read that finds end of file
/// or a reset: the result is the kernel's, so there is no injection; the failure is one real
/// event (where a rule logs it), with the peer's cause. Such a call takes none of `max=`: the
/// read with data after them is the one cut short.
#[test]
fn a_real_result_is_never_an_injection() {
    for (spec, fault) in [("read:short:max=1", "short"), ("read:delay=1ms:max=1", "delay=1ms")] {
        let r = run(
            &["ends"],
            &[
                ("ERRSHIM_FAULTS", spec),
                ("ERRSHIM_SEED", "1"),
                ("ERRSHIM_RULES", "+read:ECONNRESET:log"),
                ("ERRSHIM_SUMMARY", "1"),
            ],
        );
        r.assert_ok();
        assert_eq!(result(&r, "read_eof").0, 0, "{spec}: {}", r.describe());
        assert_eq!(result(&r, "read_reset"), (-1, libc::ECONNRESET), "{spec}");
        let data = result(&r, "read_data").0;
        let ev = events_but_startup(&r.stderr);
        assert_eq!(ev.len(), 2, "{spec}: one real event, one injection:\n{}", r.stderr);
        assert!(
            ev[0].contains(", len=64) = -1 ECONNRESET -> logged, returned -1 ECONNRESET | tcp4 "),
            "{spec}: {}",
            ev[0]
        );
        assert!(
            ev[0].contains(" rule=2 | ") && ev[0].contains(" | cause=peer_reset: the client aborted"),
            "{}",
            ev[0]
        );
        assert!(
            ev[1].contains(&format!(
                " = {data} (INJECTED) -> inject {fault}, returned {data} | tcp4 "
            )),
            "{spec}: {}",
            ev[1]
        );
        assert!(
            ev[1].contains(" fault_rule=1 k=3 "),
            "{spec}: the third read: {}",
            ev[1]
        );
        if fault == "short" {
            assert!((1..11).contains(&data), "cut short: {data}");
        } else {
            assert_eq!(data, 11);
        }
        let rows = summary_rows(&r);
        assert_eq!(rows.len(), 2, "{spec}: {rows:?}");
        assert!(
            rows.contains(&"errshim summary count=1 call=read errno=ECONNRESET action=log cause=peer_reset"),
            "{spec}: {rows:?}"
        );
    }
}

// --- 6. delay ---------------------------------------------------------------------------------------

/// `delay=50ms` makes the call take at least 50 ms (CLOCK_MONOTONIC in the fixture), then
/// performs it; the next call is not delayed.
#[test]
fn delay_waits_then_performs() {
    let r = with_faults("send:delay=50ms:nth=1", &["delay"]);
    r.assert_ok();
    let first = step(&r, "send 1");
    assert_eq!(num(first, "ret="), 1, "performed: {first}");
    let us = num(first, "us=");
    assert!(us >= 50_000, "delayed by at least 50 ms: {first}");
    assert!(us < 10_000_000, "and not absurdly long: {first}");
    assert_eq!(num(step(&r, "send 2"), "ret="), 1);
    assert_eq!(received(&r, 'u').len(), 2, "both bytes arrived");
    let ev = injections(&r.stderr);
    assert_eq!(ev.len(), 1, "{}", r.stderr);
    assert!(
        ev[0].contains("send(fd=3, len=1) = 1 (INJECTED) -> inject delay=50ms, returned 1 | unix-stream "),
        "{}",
        ev[0]
    );
}

// --- 7. the control file ------------------------------------------------------------------------------

/// A fixture running in the background, its output read line by line as it comes.
struct Live {
    child: Child,
    stdin: Option<ChildStdin>,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
    out_seen: Vec<String>,
    err_seen: Vec<String>,
}

impl Live {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Live {
        let mut cmd = clean_command(fixture());
        cmd.args(args);
        cmd.env("LD_PRELOAD", lib());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        let lines = |r: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for l in BufReader::new(r).lines() {
                    let Ok(l) = l else { break };
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            });
            rx
        };
        let out = lines(Box::new(child.stdout.take().unwrap()));
        let err = lines(Box::new(child.stderr.take().unwrap()));
        Live {
            stdin: child.stdin.take(),
            child,
            out,
            err,
            out_seen: Vec::new(),
            err_seen: Vec::new(),
        }
    }

    /// The next stdout line that satisfies `pred`, within `within`.
    fn wait_out(&mut self, within: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok(l) => {
                    self.out_seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(_) => self.fail(what),
            }
        }
    }

    /// Waits for a stderr line that satisfies `pred` (lines already seen count too).
    fn wait_err(&mut self, within: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
        if let Some(l) = self.err_seen.iter().find(|l| pred(l)) {
            return l.clone();
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.err.recv_timeout(left) {
                Ok(l) => {
                    self.err_seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(_) => self.fail(what),
            }
        }
    }

    fn send(&mut self, line: &str) {
        let s = self.stdin.as_mut().expect("stdin");
        writeln!(s, "{line}").unwrap();
        s.flush().unwrap();
    }

    /// One send, now: (ret, errno).
    fn probe(&mut self) -> (i64, i32) {
        self.send("probe");
        let l = self.wait_out(Duration::from_secs(10), "a probe answer", |l| l.starts_with("probe "));
        (num(&l, "ret="), num(&l, "errno=") as i32)
    }

    fn fail(&mut self, what: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        while let Ok(l) = self.out.recv_timeout(Duration::from_millis(200)) {
            self.out_seen.push(l);
        }
        while let Ok(l) = self.err.try_recv() {
            self.err_seen.push(l);
        }
        panic!(
            "timed out waiting for {what}\n--- stdout ---\n{}\n--- stderr (last 20) ---\n{}",
            self.out_seen.join("\n"),
            self.err_seen[self.err_seen.len().saturating_sub(20)..].join("\n")
        );
    }

    /// Ends the fixture with "quit" and returns its exit code, with all remaining stderr read.
    fn finish(mut self) -> (Option<i32>, Vec<String>, Vec<String>) {
        self.send("quit");
        self.wait_out(Duration::from_secs(10), "done", |l| l == "done");
        drop(self.stdin.take());
        // It printed "done" and returns from main; its alarm() bounds this wait in any case.
        let status = self.child.wait().unwrap();
        while let Ok(l) = self.err.recv_timeout(Duration::from_secs(5)) {
            self.err_seen.push(l);
        }
        let out = std::mem::take(&mut self.out_seen);
        let err = std::mem::take(&mut self.err_seen);
        (status.code(), out, err)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Replaces the control file at once (write a sibling, rename), so errshim never reads half a file.
fn write_control(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The control file switches faults on and off in a running program (same pid throughout):
/// rules take effect within the polling interval, comments and newlines separate rules, each
/// new set starts counting from k=1, malformed content prints one error line and keeps the
/// previous rules, and an empty or missing file means no faults.
#[test]
fn control_file_switches_faults_while_running() {
    let dir = TempDir::new("control");
    let path = dir.path("faults.ctl");
    let p = path.to_str().unwrap();
    let wait = Duration::from_secs(10);
    let mut live = Live::start(&["control"], &[("ERRSHIM_CONTROL", p), ("ERRSHIM_SEED", "1")]);
    let ready = live.wait_out(wait, "ready", |l| l.starts_with("ready pid="));
    let pid = field(&ready, "pid").to_string();
    live.wait_out(wait, "sends working (no control file yet)", |l| {
        l.starts_with("state errno=0 ")
    });
    assert_eq!(live.probe(), (1, 0));

    // On.
    write_control(&path, "send:EIO\n");
    live.wait_out(wait, "sends failing with EIO", |l| l.starts_with("state errno=5 "));
    // Another set, with comments and blank lines.
    write_control(
        &path,
        "# a comment\n\nsend:ENOBUFS   # trailing comment\nrecv:EIO:fd=tcp\n",
    );
    live.wait_out(wait, "sends failing with ENOBUFS", |l| {
        l.starts_with(&format!("state errno={} ", libc::ENOBUFS))
    });

    // Malformed: one error line, and the previous rules stay.
    write_control(&path, "send:ECONNRESTE\n");
    let err = live.wait_err(wait, "the control file's error line", |l| {
        l.starts_with("errshim: error: ")
    });
    assert!(
        err.starts_with(&format!("errshim: error: ERRSHIM_CONTROL {p}: ")),
        "{err}"
    );
    assert!(
        err.contains("'ECONNRESTE'") && err.contains("did you mean ECONNRESET?"),
        "{err}"
    );
    assert!(err.ends_with("; keeping the previous fault rules"), "{err}");
    // Keep calling for well over the polling interval: still the previous rules, no second line.
    let until = Instant::now() + Duration::from_millis(350);
    while Instant::now() < until {
        assert_eq!(live.probe(), (-1, libc::ENOBUFS), "the previous rules stay");
    }

    // Empty: no faults.
    write_control(&path, "");
    live.wait_out(wait, "sends working again (empty file)", |l| {
        l.starts_with("state errno=0 ")
    });

    // A new set counts from 1: nth=3 hits the third send after the change, once.
    write_control(&path, "send:ENOMEM:nth=3");
    live.wait_out(wait, "the third send failing", |l| {
        l.starts_with(&format!("state errno={} ", libc::ENOMEM))
    });
    live.wait_out(wait, "sends working after nth=3", |l| l.starts_with("state errno=0 "));

    // On again, then the file removed: no faults.
    write_control(&path, "send:EIO");
    live.wait_out(wait, "sends failing with EIO again", |l| {
        l.starts_with("state errno=5 ")
    });
    std::fs::remove_file(&path).unwrap();
    live.wait_out(wait, "sends working (file removed)", |l| {
        l.starts_with("state errno=0 ")
    });
    assert_eq!(live.probe(), (1, 0));

    let (code, out, err) = live.finish();
    assert_eq!(code, Some(0), "{out:?}");
    let err_text = err.join("\n");
    // (A warning that some event lines were dropped may follow: the program fails sends in a
    // loop faster than this test reads its stderr, and errshim never waits for a full pipe.)
    let errors: Vec<&String> = err.iter().filter(|l| l.starts_with("errshim: error: ")).collect();
    assert_eq!(errors.len(), 1, "one error line for the malformed file: {errors:?}");
    let startup = startup_line(&err_text);
    assert!(
        startup.contains(&format!(" faults: 0 rule(s) and the control file {p}, seed=1 ")),
        "{startup}"
    );
    let ev = injections(&err_text);
    assert!(ev.iter().all(|e| field(e, "pid") == pid), "one process throughout");
    for f in ["EIO", "ENOBUFS"] {
        assert!(ev.iter().any(|e| e.contains(&format!("-> inject {f}, "))), "{f}");
    }
    let epipe: Vec<&&str> = ev.iter().filter(|e| e.contains("-> inject ENOMEM, ")).collect();
    assert_eq!(epipe.len(), 1, "nth=3 injects once");
    assert!(epipe[0].contains(" fault_rule=1 k=3 "), "{}", epipe[0]);
    assert!(
        ev.iter()
            .filter(|e| e.contains("-> inject ECONNRESET, "))
            .all(|e| e.contains(" fault_rule=1 ")),
        "comments and blank lines are not rules"
    );
}

// --- 8. descriptors that are not sockets ------------------------------------------------------------

/// Output steps of `faults nonsock` that failed with EIO.
fn eio_steps(r: &Run) -> Vec<String> {
    r.stdout
        .lines()
        .filter(|l| l.contains(" ret=-1 errno=5"))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect()
}

/// `*:EIO` (default fd=sock) never touches a pipe, a file or the program's stderr, while every
/// socket call fails (and sends nothing); with `fd=any` the pipe, the file and the program's
/// own writes to fd 2 fail too, and errshim's log still gets every event, on stderr or in a file.
#[test]
fn faults_never_hit_files_pipes_or_the_log() {
    let dir = TempDir::new("nonsock");
    let d = dir.0.to_str().unwrap();
    let r = with_faults("*:EIO", &["nonsock", d]);
    r.assert_ok();
    assert_eq!(result(&r, "pipe_write").0, 5);
    assert_eq!(field(step(&r, "pipe_read"), "data"), "hello");
    assert_eq!(result(&r, "file_write").0, 4);
    assert_eq!(field(step(&r, "file_read"), "data"), "data");
    assert_eq!(result(&r, "file_close"), (0, libc::EILSEQ));
    assert_eq!(result(&r, "stderr_write").0, 20);
    assert!(r.stderr.contains("program stderr line\n"), "{}", r.stderr);
    // A socket's shutdown and close never fail with EIO in Linux: counted, not injected.
    let sock = ["sock_send", "sock_write", "sock_read"];
    assert_eq!(eio_steps(&r), sock, "{}", r.stdout);
    assert_eq!(result(&r, "sock_queued").0, 0, "the injected sends sent nothing");
    assert_eq!(result(&r, "sock_fcntl_after_close"), (-1, libc::EBADF));
    let ev = injections(&r.stderr);
    assert_eq!(ev.len(), 3, "{}", r.stderr);
    assert!(ev.iter().all(|e| e.contains(" | unix-stream ")), "{}", r.stderr);
    let ks: Vec<i64> = ev.iter().map(|e| num(e, " k=")).collect();
    assert_eq!(ks, [1, 2, 3], "pipes and files are not even counted");

    let r = with_faults("*:EIO:fd=any", &["nonsock", d]);
    r.assert_ok();
    let all = [
        "pipe_write",
        "pipe_read",
        "file_write",
        "file_read",
        "file_close",
        "stderr_write",
        "sock_send",
        "sock_write",
        "sock_read",
    ];
    assert_eq!(eio_steps(&r), all, "{}", r.stdout);
    assert!(
        !r.stderr.contains("program stderr line"),
        "the program's write to fd 2 was not done"
    );
    let ev = injections(&r.stderr);
    assert_eq!(ev.len(), all.len(), "errshim's log got every event: {}", r.stderr);
    assert!(
        ev.iter()
            .any(|e| e.contains(" write(fd=2, len=20) = -1 EIO (INJECTED)")),
        "{}",
        r.stderr
    );

    let log = dir.path("errshim.log");
    let r = run(
        &["nonsock", d],
        &[
            ("ERRSHIM_FAULTS", "*:EIO:fd=any"),
            ("ERRSHIM_SEED", "1"),
            ("ERRSHIM_LOG", log.to_str().unwrap()),
        ],
    );
    r.assert_ok();
    assert_eq!(eio_steps(&r), all, "{}", r.stdout);
    assert!(r.stderr.is_empty(), "events go to the file: {}", r.stderr);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(injections(&text).len(), all.len(), "{text}");
    assert_eq!(events(&text).len(), all.len() + 1, "and the startup line: {text}");
}

// --- 9. configuration errors --------------------------------------------------------------------------

/// A malformed ERRSHIM_FAULTS gives exactly one line naming the variable, the rule, the token
/// and (where one is close) a suggestion; the program runs with no faults at all. With
/// ERRSHIM_STRICT=1 it stops at startup with status 2.
#[test]
fn config_errors_name_rule_and_token() {
    let cases = [
        (
            "send:ECONNRESTE",
            "unknown fault (an errno name, short[=N], delay=DURATION, reset, eof, rate=RATE, stall=DURATION, slow_close=DURATION) 'ECONNRESTE' in rule 1 of ERRSHIM_FAULTS ('send:ECONNRESTE'); did you mean ECONNRESET?",
        ),
        (
            "send:EIO;recv:EIO:nht=2",
            "unknown option 'nht=2' in rule 2 of ERRSHIM_FAULTS ('recv:EIO:nht=2'); did you mean nth?",
        ),
        (
            "send:EIO:conn_nht=2",
            "unknown option 'conn_nht=2' in rule 1 of ERRSHIM_FAULTS ('send:EIO:conn_nht=2'); did you mean conn_nth?",
        ),
        ("send:delay=5ms~1x", "bad jitter (e.g. delay=20ms~5ms) '1x' in rule 1"),
        (
            "sned:EIO",
            "unknown call 'sned' in rule 1 of ERRSHIM_FAULTS ('sned:EIO'); did you mean send?",
        ),
        (
            "send:EIO:fd=tpc",
            "unknown fd kind 'tpc' in rule 1 of ERRSHIM_FAULTS ('send:EIO:fd=tpc'); did you mean tcp?",
        ),
        ("send:shrot", "'shrot' in rule 1 of ERRSHIM_FAULTS ('send:shrot'); did you mean short?"),
        ("send:EIO:when=5..2", "bad when= (A, A+, A+S, A..B, A..B+S) '5..2' in rule 1 of ERRSHIM_FAULTS"),
        ("send:delay=5parsecs", "bad duration (e.g. 250us, 20ms, 1s) '5parsecs' in rule 1"),
        ("send:EIO:p=1.5", "expected a probability from 0 to 1 '1.5' in rule 1"),
        ("send:EIO:max=0", "expected a whole number >= 1 '0' in rule 1"),
        (
            "send:eof",
            "eof applies to the read family only (read, readv, recv, recvfrom, recvmsg), not 'send' in rule 1 of ERRSHIM_FAULTS ('send:eof')",
        ),
        ("read,close:short", "short applies to the read and write families only, not 'close' in rule 1"),
        ("send", "incomplete fault rule (CALLS:FAULT[:OPTION...]) 'send' in rule 1"),
    ];
    for (spec, want) in cases {
        let r = run(&["sends", "3", "u"], &[("ERRSHIM_FAULTS", spec)]);
        r.assert_ok();
        let lines: Vec<&str> = r.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{spec}: exactly one line:\n{}", r.stderr);
        let l = lines[0];
        assert!(l.starts_with("errshim: config error: "), "{spec}: {l}");
        assert!(l.contains(want), "{spec}: expected '{want}' in\n{l}");
        assert!(l.contains("ERRSHIM_FAULTS"), "{spec}: {l}");
        assert!(l.ends_with("; injecting no faults"), "{spec}: {l}");
        assert_eq!(failed(&r), Vec::<usize>::new(), "{spec}: no faults");
        assert_eq!(received(&r, 'u'), [1, 2, 3], "{spec}");
    }

    let r = run(
        &["sends", "3", "u"],
        &[("ERRSHIM_FAULTS", "send:ECONNRESTE"), ("ERRSHIM_STRICT", "1")],
    );
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert!(r.stdout.is_empty());
    assert!(
        r.stderr
            .contains("errshim: ERRSHIM_STRICT=1 and 1 configuration error(s): stopping with exit status 2"),
        "{}",
        r.stderr
    );

    // A bad seed: one line, and a random seed is used (and named).
    let r = run(
        &["sends", "3", "u"],
        &[("ERRSHIM_FAULTS", "send:EIO:nth=2"), ("ERRSHIM_SEED", "x1")],
    );
    r.assert_ok();
    let errs: Vec<&str> = r.stderr.lines().filter(|l| l.starts_with("errshim: ")).collect();
    assert_eq!(errs.len(), 1, "{}", r.stderr);
    assert!(errs[0].contains("'x1' in ERRSHIM_SEED"), "{}", errs[0]);
    assert_eq!(failed(&r), [2], "the faults still apply");
    seed_of(&r.stderr);
}

// --- 10. events and the summary ------------------------------------------------------------------------

/// Injection events carry INJECTED, the fault, fault_rule and k (text), or action inject,
/// injected, fault, k and rule (JSON); the exit summary counts exactly the injections.
#[test]
fn events_and_summary_count_injections() {
    let spec = "send:EIO:when=2..10+2;send:short=1:nth=3:unfaithful;send:delay=1ms:nth=5";
    let args = ["sends", "12", "u", "4"];
    let env = [
        ("ERRSHIM_FAULTS", spec),
        ("ERRSHIM_SEED", "1"),
        ("ERRSHIM_SUMMARY", "1"),
    ];
    let r = run(&args, &env);
    r.assert_ok();
    let rets: Vec<i64> = sent(&r).iter().map(|s| s.ret).collect();
    assert_eq!(rets, [4, -1, 1, -1, 4, -1, 4, -1, 4, -1, 4, 4], "{}", r.stdout);
    assert_eq!(received(&r, 'u').len(), 4 * 6 + 1, "the true counts arrived");
    let ev = injections(&r.stderr);
    let got: Vec<(i64, i64)> = ev.iter().map(|e| (num(e, " fault_rule="), num(e, " k="))).collect();
    assert_eq!(got, [(1, 2), (2, 3), (1, 4), (3, 5), (1, 6), (1, 8), (1, 10)]);
    let mid = |e: &str| {
        e.split(" comm=faults ")
            .nth(1)
            .unwrap()
            .split(" | ")
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        mid(ev[0]),
        "send(fd=3, len=4, flags=0x4000) = -1 EIO (INJECTED) -> inject EIO, returned -1 EIO"
    );
    assert_eq!(
        mid(ev[1]),
        "send(fd=3, len=4, flags=0x4000) = 1 (INJECTED) -> inject short=1, returned 1"
    );
    assert_eq!(
        mid(ev[3]),
        "send(fd=3, len=4, flags=0x4000) = 4 (INJECTED) -> inject delay=1ms, returned 4"
    );
    for e in &ev {
        assert!(e.contains(" | cause=injected: errshim injected this on purpose"), "{e}");
        assert!(!e.contains(" rule="), "fault_rule, not rule: {e}");
    }
    // The summary: 7 events, all injections; 5 of them EIO.
    let head = r
        .stderr
        .lines()
        .find(|l| l.starts_with("errshim summary pid="))
        .expect("summary");
    assert_eq!(num(head, " events="), 7, "{head}");
    let rows = summary_rows(&r);
    assert!(
        rows.contains(&"errshim summary count=5 call=send errno=EIO action=inject cause=injected"),
        "{rows:?}"
    );
    let injected: i64 = rows
        .iter()
        .filter(|l| l.contains(" action=inject "))
        .map(|l| num(l, "count="))
        .sum();
    assert_eq!(injected, 7, "{rows:?}");
    assert_eq!(
        rows.len(),
        2,
        "EIO, and the short and delay that returned counts: {rows:?}"
    );

    // JSON.
    let mut env_json = env.to_vec();
    env_json.push(("ERRSHIM_FORMAT", "json"));
    let r = run(&args, &env_json);
    r.assert_ok();
    let objs = json_lines(&r);
    let start = &objs[0];
    assert_eq!(
        (start["fault_rules"].as_u64(), start["seed"].as_u64()),
        (Some(3), Some(1)),
        "{start}"
    );
    let evs: Vec<&serde_json::Value> = objs.iter().filter(|o| o.get("call").is_some()).collect();
    assert_eq!(evs.len(), 7);
    let got: Vec<(u64, u64, String)> = evs
        .iter()
        .map(|o| {
            assert_eq!(o["action"], "inject", "{o}");
            assert_eq!(o["injected"], true, "{o}");
            assert_eq!(o["call"], "send", "{o}");
            assert_eq!(o["cause"], "injected", "{o}");
            assert_eq!(o["kind"], "unix-stream", "{o}");
            (
                o["rule"].as_u64().unwrap(),
                o["k"].as_u64().unwrap(),
                o["fault"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(u64, u64, String)> = [
        (1, 2, "EIO"),
        (2, 3, "short=1"),
        (1, 4, "EIO"),
        (3, 5, "delay=1ms"),
        (1, 6, "EIO"),
        (1, 8, "EIO"),
        (1, 10, "EIO"),
    ]
    .iter()
    .map(|&(r, k, f)| (r, k, f.to_string()))
    .collect();
    assert_eq!(got, want);
    assert_eq!(
        (evs[0]["ret"].as_i64(), evs[0]["errno"].as_str()),
        (Some(-1), Some("EIO"))
    );
    assert_eq!(evs[0]["returned"].as_i64(), Some(-1));
    assert_eq!(
        (evs[1]["ret"].as_i64(), evs[1]["returned"].as_i64()),
        (Some(1), Some(1))
    );
    let summary = &objs.last().unwrap()["summary"];
    assert_eq!(summary["events"], 7, "{summary}");
    let counts = summary["counts"].as_array().unwrap();
    let inject: u64 = counts
        .iter()
        .filter(|c| c["action"] == "inject")
        .map(|c| c["count"].as_u64().unwrap())
        .sum();
    assert_eq!(inject, 7, "{summary}");
    assert!(
        counts
            .iter()
            .any(|c| c["errno"] == "EIO" && c["count"] == 5 && c["cause"] == "injected"),
        "{summary}"
    );
}

// --- connect, accept, sendfile, splice, the mmsg calls ------------------------------------------

/// Runs `tests/fixtures/callfaults.c` with errshim, under the fault rules `spec` (none if empty).
fn callfaults(spec: &str, args: &[&str]) -> Run {
    let mut c = Cmd::new(program("callfaults"))
        .args(args)
        .shim()
        .env("ERRSHIM_SEED", "1");
    if !spec.is_empty() {
        c = c.env("ERRSHIM_FAULTS", spec);
    }
    let r = c.run();
    r.assert_ok();
    r
}

/// The fixture's lines about the socket after its connect, the listener's left out.
fn after_connect(r: &Run) -> Vec<&str> {
    r.stdout.lines().filter(|l| !l.starts_with("listener ")).collect()
}

/// An injected ECONNREFUSED leaves the socket exactly as the kernel's own refusal does
/// (compared with a connect to a port bound but not listening): a blocking connect fails with
/// ECONNREFUSED; a non-blocking one says EINPROGRESS, then poll gives POLLOUT|POLLERR|POLLHUP
/// and SO_ERROR ECONNREFUSED; the same local address (the wildcard after a blocking failure,
/// loopback while a non-blocking one's error is pending), getpeername ENOTCONN, send EPIPE.
/// No SYN reached the target: its listener's queue stays empty. One injection event, with the
/// peer the program aimed at and the failed connect in the history, marked as injected.
#[test]
fn connect_refused_is_the_kernels_own_refusal_without_a_syn() {
    for how in ["block", "nonblock"] {
        for family in ["4", "6"] {
            let args = ["connect", how, family];
            let real = callfaults("", &["refused", how, family]);
            let inj = callfaults("connect:ECONNREFUSED", &args);
            let ctx = format!("{how} IPv{family}:\n{}\n{}", real.describe(), inj.describe());
            let port = |r: &Run| num(step(r, "local"), "port=");
            assert!(port(&real) > 0 && port(&inj) > 0, "{ctx}");
            let same = |l: &str| !l.starts_with("local ");
            let want: Vec<&str> = after_connect(&real).into_iter().filter(|l| same(l)).collect();
            let got: Vec<&str> = after_connect(&inj).into_iter().filter(|l| same(l)).collect();
            assert_eq!(got, want, "{ctx}");
            assert_eq!(
                field(step(&inj, "local"), "any"),
                field(step(&real, "local"), "any"),
                "{ctx}"
            );
            assert_eq!(step(&inj, "listener"), "listener queued=0", "no SYN reached it: {ctx}");
            let (ret, errno) = result(&inj, "connect");
            if how == "block" {
                assert_eq!((ret, errno), (-1, libc::ECONNREFUSED), "{ctx}");
            } else {
                assert_eq!((ret, errno), (-1, libc::EINPROGRESS), "{ctx}");
                assert_eq!(
                    step(&inj, "poll"),
                    "poll revents=0x1c",
                    "POLLOUT|POLLERR|POLLHUP: {ctx}"
                );
                assert_eq!(step(&inj, "so_error"), "so_error 111", "{ctx}");
            }
            let evs = injections(&inj.stderr);
            assert_eq!(evs.len(), 1, "{ctx}");
            let returned = if how == "block" { "ECONNREFUSED" } else { "EINPROGRESS" };
            let e = evs[0];
            assert!(
                e.contains(&format!(
                    "= -1 ECONNREFUSED (INJECTED) -> inject ECONNREFUSED, returned -1 {returned} "
                )) && e.contains(" fault_rule=1 k=1 ")
                    && e.contains("history=")
                    && e.contains("connect_failed,connect_injected")
                    && e.contains("cause=injected"),
                "{ctx}"
            );
            let target = if family == "4" {
                "peer=127.0.0.1:"
            } else {
                "peer=[::1]:"
            };
            assert!(e.contains(target), "{ctx}");
            // Nothing else is reported: not the send's EPIPE (no rule logs it), not SO_ERROR.
            assert_eq!(events_but_startup(&inj.stderr).len(), 1, "{ctx}");
        }
    }
}

/// ETIMEDOUT: a blocking connect fails after the wait given (as after the kernel's SYN
/// retries), the socket left as a timed-out connect leaves it, no SYN sent; a non-blocking one
/// is not injected (its timeout needs a SYN that goes unanswered): the real connect is made.
/// ENETUNREACH and EHOSTUNREACH come at once, blocking or not, the socket untouched (no port).
/// `delay=` makes the real connect, late.
#[test]
fn connect_timeouts_unreachables_and_delays() {
    let r = callfaults("connect:ETIMEDOUT:delay=30ms", &["connect", "block", "4"]);
    assert_eq!(result(&r, "connect"), (-1, libc::ETIMEDOUT), "{}", r.describe());
    assert_eq!(step(&r, "listener"), "listener queued=0");
    assert_eq!(field(step(&r, "local"), "any"), "1");
    let evs = injections(&r.stderr);
    assert!(
        evs.len() == 1 && evs[0].contains("-> inject ETIMEDOUT, returned -1 ETIMEDOUT"),
        "{}",
        r.stderr
    );
    let age = num(evs[0], "age_ms=");
    assert!(age >= 25, "waited first: {}", evs[0]);

    let r = callfaults("connect:ETIMEDOUT:delay=30ms", &["connect", "nonblock", "4"]);
    assert_eq!(result(&r, "connect"), (-1, libc::EINPROGRESS), "{}", r.describe());
    assert_eq!(step(&r, "so_error"), "so_error 0", "connected for real");
    assert_eq!(step(&r, "listener"), "listener queued=1");
    assert!(injections(&r.stderr).is_empty(), "{}", r.stderr);

    for (e, name) in [(libc::ENETUNREACH, "ENETUNREACH"), (libc::EHOSTUNREACH, "EHOSTUNREACH")] {
        for how in ["block", "nonblock"] {
            let r = callfaults(&format!("connect:{name}"), &["connect", how, "6"]);
            assert_eq!(result(&r, "connect"), (-1, e), "{name} {how}: {}", r.describe());
            assert_eq!(step(&r, "local"), "local port=0 any=1", "untouched");
            assert_eq!(step(&r, "listener"), "listener queued=0");
            assert!(!r.stdout.contains("so_error 111"));
            let evs = injections(&r.stderr);
            assert!(evs.len() == 1 && evs[0].contains(&format!("-> inject {name}, returned -1 {name}")));
        }
    }

    let r = callfaults("connect:delay=20ms", &["connect", "block", "4"]);
    assert_eq!(result(&r, "connect"), (0, libc::EILSEQ), "{}", r.describe());
    assert_eq!(step(&r, "listener"), "listener queued=1");
    let evs = injections(&r.stderr);
    assert!(
        evs.len() == 1 && evs[0].contains(") = 0 (INJECTED) -> inject delay=20ms, returned 0"),
        "{}",
        r.stderr
    );
}

/// An injected accept failure does not accept: the connection stays queued, and the next
/// accept returns that very connection (its peer is the client's address). accept4 alike.
#[test]
fn accept_faults_leave_the_connection_queued() {
    for (errno, name) in [
        (libc::ECONNABORTED, "ECONNABORTED"),
        (libc::EMFILE, "EMFILE"),
        (libc::ENFILE, "ENFILE"),
        (libc::ENOBUFS, "ENOBUFS"),
    ] {
        for (flavour, entry) in [("0", "accept"), ("4", "accept4")] {
            let r = callfaults(&format!("accept:{name}:nth=1"), &["accept", flavour]);
            let ctx = format!("{entry} {name}: {}", r.describe());
            assert_eq!(result(&r, "accept1"), (-1, errno), "{ctx}");
            let second = step(&r, "accept2");
            assert!(num(second, "ret=") >= 0 && second.ends_with("same=1"), "{ctx}");
            let evs = injections(&r.stderr);
            assert_eq!(evs.len(), 1, "{ctx}");
            assert!(
                evs[0].contains(&format!(" {entry}(fd="))
                    && evs[0].contains(&format!("-> inject {name}, returned -1 {name}"))
                    && evs[0].contains("state=LISTEN"),
                "{ctx}"
            );
        }
    }
    // A delayed accept accepts (late); the second fails at once, accepting nothing.
    let r = callfaults("accept:delay=10ms:nth=1;accept:EMFILE:nth=2", &["accept", "4"]);
    assert!(num(step(&r, "accept1"), "ret=") >= 0, "{}", r.describe());
    assert_eq!(step(&r, "accept2"), "accept2 ret=-1 errno=24 same=0");
    let evs = injections(&r.stderr);
    assert!(evs.len() == 2 && evs[0].contains("inject delay=10ms") && evs[1].contains("fault_rule=2 k=2"));
}

/// sendfile, splice (about its socket end) and the mmsg calls: an injected errno moves
/// nothing; EAGAIN only where the call would not wait (on a blocking socket the rule does not
/// inject and the data goes); a delay moves all of it, late; a reset aborts the connection.
#[test]
fn sendfile_splice_and_mmsg_faults() {
    // (rules, mode, the calls' (name, ret, errno), bytes the peer got (MAX: not asked), event)
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, i64, i32)], usize, &'a str);
    let cases: [Case; 7] = [
        (
            "sendfile:EPIPE",
            "sendfile",
            &[("sendfile", -1, libc::EPIPE)],
            0,
            "inject EPIPE",
        ),
        ("sendfile64:EAGAIN", "sendfile", &[("sendfile", 5, libc::EILSEQ)], 5, ""),
        (
            "sendfile:reset",
            "sendfile",
            &[("sendfile", -1, libc::ECONNRESET)],
            0,
            "inject reset",
        ),
        (
            "splice:ECONNRESET",
            "splice",
            &[("splice", -1, libc::ECONNRESET)],
            0,
            "splice(fd=",
        ),
        (
            "splice:delay=1ms",
            "splice",
            &[("splice", 5, libc::EILSEQ)],
            5,
            "inject delay=1ms",
        ),
        (
            "sendmmsg:ENOBUFS:nth=1",
            "mmsg",
            &[("sendmmsg", -1, libc::ENOBUFS), ("recvmmsg", -1, libc::EAGAIN)],
            usize::MAX,
            "sendmmsg(fd=",
        ),
        (
            "recvmmsg:ECONNREFUSED",
            "mmsg",
            &[("sendmmsg", 3, libc::EILSEQ), ("recvmmsg", -1, libc::ECONNREFUSED)],
            usize::MAX,
            "recvmmsg(fd=",
        ),
    ];
    for (spec, mode, steps, received, event) in cases {
        let r = callfaults(spec, &[mode]);
        let ctx = format!("{spec}: {}", r.describe());
        for &(name, ret, errno) in steps {
            assert_eq!(result(&r, name), (ret, errno), "{name} {ctx}");
        }
        if received != usize::MAX {
            assert_eq!(step(&r, "received"), format!("received n={received}"), "{ctx}");
        }
        let evs = injections(&r.stderr);
        if event.is_empty() {
            assert!(evs.is_empty(), "not injected: {ctx}");
        } else {
            assert!(evs.len() == 1 && evs[0].contains(event), "{ctx}");
        }
    }
}

/// The grammar refuses what Linux cannot return on these calls, naming the rule and the token.
#[test]
fn errnos_these_calls_cannot_return_are_refused() {
    for (spec, want) in [
        (
            "connect:EIO",
            "connect cannot return this errno as a fault (only ECONNREFUSED, ETIMEDOUT, ENETUNREACH, EHOSTUNREACH, EADDRNOTAVAIL) 'EIO' in rule 1 of ERRSHIM_FAULTS ('connect:EIO')",
        ),
        ("send:EIO;accept4:EPIPE", "accept cannot return this errno as a fault (only ECONNABORTED, EMFILE, ENFILE, ENOBUFS, ENOMEM) 'EPIPE' in rule 2"),
        ("sendfile:EBADF", "sendfile cannot return this errno"),
        ("connect:reset", "reset needs a connection; connect and accept take an errno or delay= only, not 'connect' in rule 1"),
        ("sendmmsg:short", "short is not made on connect, accept, splice or the mmsg calls, not 'sendmmsg'"),
    ] {
        let r = callfaults(spec, &["mmsg"]);
        assert!(r.stderr.contains(want), "{spec}: expected '{want}' in\n{}", r.stderr);
        assert!(r.stderr.contains("; injecting no faults"), "{spec}");
        assert_eq!(result(&r, "sendmmsg"), (3, libc::EILSEQ), "{spec}: no faults");
    }
}

/// `port=` and `peer=` select a connect by the address it is given: only the connect to that
/// port (or peer) is refused, the others connect.
#[test]
fn port_and_peer_select_a_connect_by_its_target() {
    let py = r#"import socket, sys
a = socket.socket(); a.bind(('127.0.0.1', 0)); a.listen(4)
b = socket.socket(); b.bind(('127.0.0.2', 0)); b.listen(4)
print('ports', a.getsockname()[1], b.getsockname()[1], flush=True)
for l in (a, b, a):
    try: socket.create_connection(l.getsockname()).close(); print('connected')
    except OSError as e: print(e.errno)
"#;
    let bare = Cmd::new("python3").args(["-c", py]).run();
    bare.assert_ok();
    let ports: Vec<u16> = bare
        .stdout
        .lines()
        .next()
        .unwrap()
        .split(' ')
        .skip(1)
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(ports.len(), 2, "{}", bare.describe());
    // The ports change from run to run: the rule names the second listener's address.
    for rule in [
        "connect:ECONNREFUSED:peer=127.0.0.2",
        "connect:ECONNREFUSED:peer=127.0.0.2/32:max=1",
    ] {
        let r = Cmd::new("python3")
            .args(["-c", py])
            .shim()
            .env("ERRSHIM_FAULTS", rule)
            .run();
        r.assert_ok();
        let got: Vec<&str> = r.stdout.lines().skip(1).collect();
        assert_eq!(got, ["connected", "111", "connected"], "{rule}: {}", r.describe());
    }
    let py_port = py.replace("a.bind(('127.0.0.1', 0))", "a.bind(('127.0.0.1', int(sys.argv[1])))");
    let port = free_port();
    let r = Cmd::new("python3")
        .args(["-c", &py_port, &port.to_string()])
        .shim()
        .env("ERRSHIM_FAULTS", format!("connect:ECONNREFUSED:port={port}"))
        .run();
    r.assert_ok();
    let got: Vec<&str> = r.stdout.lines().skip(1).collect();
    assert_eq!(got, ["111", "connected", "111"], "{}", r.describe());
}

// --- 11. per-connection, byte and time triggers ---------------------------------------------------

/// `faults conns N M LEN` under `spec`: per connection, the numbers of its sends that failed,
/// with their errno (every one must be the rule's).
const NONE: Vec<usize> = Vec::new();

fn conn_failures(spec: &str, n: usize, m: usize, len: usize) -> (Run, Vec<Vec<usize>>) {
    let r = with_faults(spec, &["conns", &n.to_string(), &m.to_string(), &len.to_string()]);
    r.assert_ok();
    let mut per = vec![Vec::new(); n];
    for l in r.out_lines("send ") {
        let w: Vec<&str> = l.split(' ').collect();
        let (c, j): (usize, usize) = (w[1].parse().unwrap(), w[2].parse().unwrap());
        if num(l, "ret=") < 0 {
            assert_eq!(num(l, "errno=") as i32, EIO, "{l}");
            per[c - 1].push(j);
        }
    }
    (r, per)
}

/// `conn_nth=N` counts each connection's matching calls from 1, also when the next connection
/// gets the same descriptor numbers; `after`, `max` and the process-wide k still apply.
#[test]
fn conn_nth_hits_the_nth_call_of_every_connection() {
    let (_, per) = conn_failures("send:EIO:conn_nth=2:fd=tcp", 3, 4, 10);
    assert_eq!(per, [vec![2], vec![2], vec![2]]);
    let (_, per) = conn_failures("send:EIO:conn_nth=3:max=2", 3, 4, 10);
    assert_eq!(per, [vec![3], vec![3], NONE], "max= over the process");
    // The process-wide count: calls 1 to 6 spared, so connection 1's third is not hit.
    let (r, per) = conn_failures("send:EIO:conn_nth=3:after=6", 3, 4, 10);
    assert_eq!(per, [NONE, vec![3], vec![3]]);
    let ks: Vec<i64> = injections(&r.stderr).iter().map(|e| num(e, " k=")).collect();
    assert_eq!(ks, [7, 11], "k stays the rule's count over the process");
    // A filter that excludes a call keeps it out of the connection's count too: the reads of
    // the accepted end are not sends.
    let (_, per) = conn_failures("send,read:EIO:conn_nth=2:fd=tcp:port=1", 2, 3, 10);
    assert_eq!(per, [NONE; 2], "port=1 matches nothing");
}

/// `conn=N`: connections are numbered as errshim sees them connect or accepted (the fixture's
/// connecting end, then its accepted end: 1 and 2 for its first connection, 3 and 4 for the
/// second); the listener and the socketpairs have no number.
#[test]
fn conn_picks_one_connection_of_the_process() {
    let (_, per) = conn_failures("send:EIO:conn=3", 3, 3, 10);
    assert_eq!(per, [NONE, vec![1, 2, 3], NONE]);
    let (_, per) = conn_failures("send:EIO:conn=5:nth=2", 3, 3, 10);
    assert_eq!(
        per,
        [NONE, NONE, vec![2]],
        "nth= counts among the calls conn= lets through"
    );
    let (_, per) = conn_failures("send:EIO:conn=2", 3, 3, 10);
    assert_eq!(per, [NONE; 3], "the accepted end sends nothing");
    let r = with_faults("send:EIO:conn=1", &["sends", "3", "u"]);
    assert!(
        failed(&r).is_empty(),
        "a socketpair is no numbered connection: {}",
        r.stdout
    );
}

/// `after_bytes=N`: from the first call that starts with at least N bytes moved on its
/// connection (in and out, counted by the hooks), on each connection anew.
#[test]
fn after_bytes_waits_for_the_connections_bytes() {
    let (r, per) = conn_failures("send:EIO:after_bytes=2500", 2, 5, 1000);
    assert_eq!(per, [vec![4, 5], vec![4, 5]], "3000 bytes sent before the 4th");
    assert_eq!(r.out_lines("read 1 ")[0], "read 1 count=3000");
    let (_, per) = conn_failures("send:EIO:after_bytes=2500:max=1", 2, 5, 1000);
    assert_eq!(per, [vec![4], NONE]);
    let (_, per) = conn_failures("send:EIO:after_bytes=0", 1, 2, 1000);
    assert_eq!(per, [vec![1, 2]], "0: from the first call");
    // A reset mid-stream: the data already sent arrived, the rest never went.
    let r = with_faults("send:reset:after_bytes=2000:max=1:fd=tcp", &["conns", "1", "4", "1000"]);
    let rets: Vec<i64> = r.out_lines("send 1 ").iter().map(|l| num(l, "ret=")).collect();
    assert_eq!(rets[..2], [1000, 1000], "{}", r.describe());
    assert!(rets[2] < 0, "the reset connection refuses the third: {}", r.describe());
    assert_eq!(
        r.out_lines("read 1 ")[0],
        "read 1 count=2000",
        "what was sent before arrived"
    );
    assert_eq!(injections(&r.stderr).len(), 1, "{}", r.stderr);
}

/// `from=` and `for=`: a window measured from errshim's start in the process (the fixture
/// times its sends from its own `main`, a little later): calls well inside fail, calls well
/// outside do not.
#[test]
fn time_windows_from_and_for() {
    let r = with_faults("send:EIO:from=150ms:for=150ms", &["paced", "40", "10"]);
    r.assert_ok();
    let mut inside = 0;
    for l in r.out_lines("send ") {
        let ms: f64 = field(l, "ms").parse().unwrap();
        let failed = num(l, "ret=") < 0;
        if !(120.0..=305.0).contains(&ms) {
            assert!(!failed, "outside the window: {l}\n{}", r.stdout);
        } else if (155.0..270.0).contains(&ms) {
            assert!(failed, "inside the window: {l}\n{}", r.stdout);
            inside += 1;
        }
    }
    assert!(inside >= 3, "{}", r.stdout);
    let r = with_faults("send:EIO:from=1h", &["sends", "5", "u"]);
    assert!(failed(&r).is_empty());
    let r = with_faults("send:EIO:for=1h", &["sends", "5", "u"]);
    assert_eq!(failed(&r), [1, 2, 3, 4, 5]);
    let r = with_faults("send:EIO:for=0s", &["sends", "5", "u"]);
    assert!(failed(&r).is_empty(), "a window of no time never fires");
}

/// `delay=D~J`: each delay drawn uniformly in [D-J, D+J], the same for the same seed, named in
/// the event as the delay waited.
#[test]
fn delay_with_jitter() {
    let spec = "send:delay=6ms~4ms";
    let delays = |seed: &str| {
        let r = run(
            &["sends", "12", "u"],
            &[("ERRSHIM_FAULTS", spec), ("ERRSHIM_SEED", seed)],
        );
        r.assert_ok();
        assert_eq!(received(&r, 'u').len(), 12, "every byte sent");
        injections(&r.stderr)
            .iter()
            .map(|e| {
                let d = e.split("inject delay=").nth(1).unwrap().split(',').next().unwrap();
                let us: u64 = match d.strip_suffix("ms") {
                    Some(ms) => ms.parse::<u64>().unwrap() * 1000,
                    None => d.strip_suffix("us").unwrap().parse().unwrap(),
                };
                us
            })
            .collect::<Vec<u64>>()
    };
    let a = delays("1");
    assert_eq!(a.len(), 12);
    assert!(a.iter().all(|us| (2000..=10_000).contains(us)), "{a:?}");
    assert!(a.iter().any(|&us| us != a[0]), "jitter varies: {a:?}");
    assert_eq!(a, delays("1"), "reproducible");
    assert_ne!(a, delays("2"));
    let r = with_faults("send:delay=2ms~3ms", &["sends", "1", "u"]);
    assert!(r.stderr.contains("jitter larger than the delay"), "{}", r.stderr);
}

/// The proof of what each rule did: per rule in force, the calls it matched and the faults it
/// injected, in the exit summary (text and JSON) and the metrics, also for a process whose
/// rules matched without injecting.
#[test]
fn summary_and_metrics_count_each_rules_matches_and_injections() {
    let dir = TempDir::new("rule-counts");
    let metrics = dir.path("m.prom");
    let spec = "send:EIO:max=2;read:EIO:port=1;send:EIO:nth=1000";
    let env = |format: &'static str| {
        [
            ("ERRSHIM_FAULTS", spec),
            ("ERRSHIM_SEED", "1"),
            ("ERRSHIM_SUMMARY", "1"),
            ("ERRSHIM_FORMAT", format),
        ]
    };
    let mut e = env("text").to_vec();
    let m = metrics.to_str().unwrap().to_string();
    e.push(("ERRSHIM_METRICS", &m));
    let r = run(&["sends", "5", "u"], &e);
    r.assert_ok();
    assert_eq!(failed(&r), [1, 2]);
    let rows: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("errshim summary fault_rule="))
        .collect();
    assert_eq!(
        rows,
        [
            "errshim summary fault_rule=1 matched=5 fired=2",
            "errshim summary fault_rule=2 matched=0 fired=0",
            "errshim summary fault_rule=3 matched=5 fired=0",
        ],
        "{}",
        r.stderr
    );
    let prom = std::fs::read_to_string(&metrics).unwrap();
    for want in [
        "errshim_fault_matched_total{comm=\"faults\",pid=",
        "\",rule=\"1\"} 5\n",
        "\",rule=\"3\"} 5\n",
        "# TYPE errshim_fault_fired_total counter\n",
    ] {
        assert!(prom.contains(want), "{want:?} in\n{prom}");
    }
    let fired: Vec<&str> = prom
        .lines()
        .filter(|l| l.starts_with("errshim_fault_fired_total{"))
        .collect();
    assert!(
        fired[0].ends_with("rule=\"1\"} 2") && fired[1].ends_with("rule=\"2\"} 0"),
        "{fired:?}"
    );

    let r = run(&["sends", "5", "u"], &env("json"));
    let summary = json_lines(&r)
        .into_iter()
        .find(|v| v.get("summary").is_some())
        .expect("summary");
    let rules = &summary["summary"]["fault_rules"];
    assert_eq!(
        rules[0],
        serde_json::json!({"rule": 1, "matched": 5, "fired": 2}),
        "{summary}"
    );
    assert_eq!(rules[2], serde_json::json!({"rule": 3, "matched": 5, "fired": 0}));

    // Matches without any injection (so without events) are still worth a summary.
    let r = run(
        &["sends", "3", "u"],
        &[("ERRSHIM_FAULTS", "send:EIO:nth=1000"), ("ERRSHIM_SUMMARY", "1")],
    );
    let head = r
        .stderr
        .lines()
        .find(|l| l.starts_with("errshim summary pid="))
        .expect("summary");
    assert_eq!(num(head, " events="), 0, "{head}");
    assert!(
        r.stderr.contains("errshim summary fault_rule=1 matched=3 fired=0"),
        "{}",
        r.stderr
    );
}

// --- 12. stall and slow close ------------------------------------------------------------------

/// Runs a Python program under errshim with `faults`; its last stdout line is JSON.
fn python_json(py: &str, faults: Option<&str>) -> (Run, serde_json::Value) {
    let mut c = Cmd::new("python3").args(["-c", py]);
    if let Some(f) = faults {
        c = c.shim().env("ERRSHIM_FAULTS", f).env("ERRSHIM_SEED", "1");
    }
    let r = c.run();
    r.assert_ok();
    let last = r.stdout.lines().last().unwrap_or("").to_string();
    let v = serde_json::from_str(&last).unwrap_or_else(|e| panic!("{e}: {}", r.describe()));
    (r, v)
}

/// One process, both ends on loopback: the client (connection 1, numbered at its connect) and
/// the accepted end (connection 2), served by a thread that reads whatever arrives.
const STALL_PRELUDE: &str = "import socket, threading, time, json, select, struct, errno
l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(1)
c = socket.create_connection(l.getsockname()); s, _ = l.accept()
out = {}
def serve(t0):
    got = b''
    try:
        while True:
            d = s.recv(100)
            if not d: out['server'] = ['eof', got.decode(), time.monotonic() - t0]; return
            got += d
    except OSError as e: out['server'] = ['err', e.errno, got.decode(), time.monotonic() - t0]
s.sendall(b'hello')
select.select([c], [], [])\n";

/// `stall=D` on a blocking connection: the read that starts it gets what was already queued,
/// nothing sent afterwards arrives (a read with SO_RCVTIMEO gives the kernel's EAGAIN after
/// its timeout), a send waits out the stall, and the stall ends as a retransmission timeout
/// does: ETIMEDOUT, the peer reset, then the kernel's end of file. Each end is an injection.
#[test]
fn a_stall_holds_both_directions_then_times_out() {
    let py = format!(
        "{STALL_PRELUDE}\
t0 = time.monotonic()
out['first'] = [c.recv(100).decode(), time.monotonic() - t0]
th = threading.Thread(target=serve, args=(t0,)); th.start()
s.sendall(b'during')
c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack('ll', 0, 200000))
t = time.monotonic()
try: out['timeo'] = ['data', c.recv(100).decode()]
except OSError as e: out['timeo'] = [e.errno, time.monotonic() - t]
try: c.send(b'x'); out['send'] = ['sent']
except OSError as e: out['send'] = [e.errno, time.monotonic() - t0]
out['after'] = c.recv(100).decode()
th.join(); print(json.dumps(out))\n"
    );
    let rule = "recv:stall=800ms:conn=1:max=1";
    let (r, v) = python_json(&py, Some(rule));
    let ctx = r.describe();
    assert_eq!(v["first"][0], "hello", "what was queued is read at once: {ctx}");
    assert!(v["first"][1].as_f64().unwrap() < 0.3, "{ctx}");
    assert_eq!(v["timeo"][0], libc::EAGAIN, "'during' is held back; SO_RCVTIMEO: {ctx}");
    let timeo = v["timeo"][1].as_f64().unwrap();
    assert!((0.19..0.6).contains(&timeo), "the socket's own timeout, {timeo}: {ctx}");
    assert_eq!(v["send"][0], libc::ETIMEDOUT, "{ctx}");
    let end = v["send"][1].as_f64().unwrap();
    assert!(
        (0.78..2.0).contains(&end),
        "the send waited out the stall, {end}: {ctx}"
    );
    assert_eq!(v["after"], "", "the kernel's end of file after the abort: {ctx}");
    assert_eq!(v["server"][0], "err", "{ctx}");
    assert_eq!(v["server"][1], libc::ECONNRESET, "the peer is reset at the end: {ctx}");
    assert_eq!(v["server"][2], "", "nothing of the send reached the peer: {ctx}");
    assert!(v["server"][3].as_f64().unwrap() >= 0.75, "{ctx}");
    let inj = injections(&r.stderr);
    assert_eq!(inj.len(), 2, "{}", r.stderr);
    assert!(inj[0].contains("-> inject stall=800ms, returned 5"), "{}", inj[0]);
    assert!(
        inj[1].contains("send(") && inj[1].contains("returned -1 ETIMEDOUT"),
        "{}",
        inj[1]
    );

    // Without errshim: everything arrives, at once.
    let (_, bare) = python_json(
        &py.replace("out['after'] = c.recv(100).decode()\n", "c.close()\n"),
        None,
    );
    assert_eq!(bare["timeo"][0], "data", "{bare}");
    assert_eq!(bare["send"][0], "sent", "{bare}");
    assert_eq!(bare["server"][0], "eof", "{bare}");
}

/// The same stall on a non-blocking socket, ending with `then=reset`: reads and writes fail
/// with EAGAIN while it lasts (what the peer sent meanwhile never arrives, nor makes the socket
/// readable), then the read that
/// meets its end fails with ECONNRESET, as at the peer's RST, and the peer is reset too.
#[test]
fn a_stall_on_a_nonblocking_socket_ends_with_a_reset() {
    let py = format!(
        "{STALL_PRELUDE}\
c.setblocking(False)
t0 = time.monotonic()
out['first'] = c.recv(100).decode()
th = threading.Thread(target=serve, args=(t0,)); th.start()
s.sendall(b'during')
try: c.send(b'x'); out['send'] = 'sent'
except OSError as e: out['send'] = e.errno
seen, again, ready = [], 0, 0
while time.monotonic() - t0 < 5:
    ready += len(select.select([c], [], [], 0.05)[0])
    try:
        d = c.recv(100); seen.append(d.decode())
        if not d: break
    except BlockingIOError: again += 1; time.sleep(0.02)
    except OSError as e: out['end'] = [e.errno, time.monotonic() - t0]; break
out['seen'] = seen; out['again'] = again; out['ready'] = ready
th.join(); print(json.dumps(out))\n"
    );
    let (r, v) = python_json(&py, Some("recv:stall=600ms:then=reset:conn=1:max=1"));
    let ctx = r.describe();
    assert_eq!(v["first"], "hello", "{ctx}");
    assert_eq!(v["send"], libc::EAGAIN, "{ctx}");
    assert_eq!(
        v["seen"],
        serde_json::json!([]),
        "nothing sent during the stall arrives: {ctx}"
    );
    assert!(v["again"].as_u64().unwrap() >= 3, "{ctx}");
    // What the peer sent during the stall makes the socket readable to no select: only its
    // end does (a level-triggered program does not spin on EAGAIN).
    assert_eq!(v["ready"], 1, "{ctx}");
    assert_eq!(v["end"][0], libc::ECONNRESET, "{ctx}");
    assert!((0.58..2.0).contains(&v["end"][1].as_f64().unwrap()), "{ctx}");
    assert_eq!(v["server"][1], libc::ECONNRESET, "{ctx}");
    let inj = injections(&r.stderr);
    assert_eq!(inj.len(), 2, "{}", r.stderr);
    assert!(
        inj[1].contains("stall=600ms:then=reset, returned -1 ECONNRESET"),
        "{}",
        inj[1]
    );
}

/// A call waiting out a stall waits as a blocking call would (found by review): another
/// thread's `shutdown` ends it with the kernel's end of file, a signal handler without
/// SA_RESTART interrupts it, and a descriptor closed and its number reused meanwhile leaves the
/// new connection untouched. A listener's close is never held by `slow_close`.
#[test]
fn a_stalled_wait_ends_as_a_blocking_calls_would() {
    let prelude = "import socket, threading, signal, time, json, errno
l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(8)
c = socket.create_connection(l.getsockname()); s, _ = l.accept()
out = {}
t0 = time.monotonic()
def reader():
    try: out['A'] = repr(c.recv(100))
    except OSError as e: out['A'] = errno.errorcode[e.errno]
    out['at'] = time.monotonic() - t0
";
    let cases = [
        // The program's own pause, so that the reader waits first; either way it ends early.
        // (The third reader waits out the stall on the old socket, as a real recv would.)
        ("t = threading.Thread(target=reader); t.start(); time.sleep(0.3)\nc.shutdown(socket.SHUT_RDWR); t.join()", "A", "b''"),
        ("class Alarm(Exception): pass\ndef h(*a): raise Alarm\nsignal.signal(signal.SIGALRM, h); signal.alarm(1)\ntry: reader()\nexcept Alarm: out['A'] = 'alarm'; out['at'] = time.monotonic() - t0", "A", "alarm"),
        ("t = threading.Thread(target=reader); t.start(); time.sleep(0.3)\nc.close(); c2 = socket.create_connection(l.getsockname()); s2, _ = l.accept()\nc2.send(b'ping'); out['new'] = repr(s2.recv(10)); t.join(); out['at'] = 0", "new", "b'ping'"),
    ];
    for (body, key, want) in cases {
        let py = format!("{prelude}{body}\nprint(json.dumps(out))\n");
        let (r, v) = python_json(&py, Some("recv:stall=4s:conn=1"));
        assert_eq!(v[key], want, "{body}: {}", r.describe());
        assert!(v["at"].as_f64().unwrap() < 3.0, "{body}: {}", r.describe());
    }
    let py = "import socket, json
l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(8); addr = l.getsockname(); l.close()
try: socket.create_connection(addr, timeout=1); out = 'connected'
except OSError as e: out = e.errno
print(json.dumps(out))
";
    let (r, v) = python_json(py, Some("close:slow_close=2s"));
    assert_eq!(
        v,
        libc::ECONNREFUSED,
        "a closed listener refuses at once: {}",
        r.describe()
    );
}

#[test]
fn stall_and_slow_close_are_refused_where_they_cannot_be() {
    for (spec, token) in [
        ("recv:stall=1s:fd=udp", "fd=udp"),
        ("recv:stall=1s:fd=unix", "fd=unix"),
        ("connect:stall=1s", "connect"),
        ("recv:delay=1ms:then=reset", "then=reset"),
        ("recv:stall=1s:then=rest", "rest"),
        ("recv:stall=0s", "0s"),
        ("read:slow_close=1s", "read"),
    ] {
        let r = Cmd::new("true")
            .shim()
            .env("ERRSHIM_FAULTS", spec)
            .env("ERRSHIM_STRICT", "1")
            .run();
        assert_ne!(r.code, Some(0), "{spec}: {}", r.describe());
        assert!(r.stderr.contains(&format!("'{token}'")), "{spec}: {}", r.stderr);
    }
}

/// `slow_close=D`: the close returns at once and the peer reads its end of file D later, also
/// while the program makes no call at all (errshim's timer sends the FIN); without the rule,
/// at once.
#[test]
fn a_slow_close_delays_the_peers_end_of_file() {
    let py = r#"import socket, select, time, json
l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(1)
c = socket.create_connection(l.getsockname()); s, _ = l.accept()
c.send(b'bye'); t0 = time.monotonic(); c.close(); closed = time.monotonic() - t0
got = s.recv(10)
select.select([s], [], [], 5)
eof = s.recv(10)
print(json.dumps({'closed': closed, 'got': got.decode(), 'eof': eof.decode(), 'at': time.monotonic() - t0}))
"#;
    let (r, v) = python_json(py, Some("close:slow_close=700ms:conn=1"));
    let ctx = r.describe();
    assert!(v["closed"].as_f64().unwrap() < 0.1, "close returns at once: {ctx}");
    assert_eq!((v["got"].as_str(), v["eof"].as_str()), (Some("bye"), Some("")), "{ctx}");
    let at = v["at"].as_f64().unwrap();
    assert!((0.69..1.5).contains(&at), "the FIN came {at} s later: {ctx}");
    let inj = injections(&r.stderr);
    assert_eq!(inj.len(), 1, "{}", r.stderr);
    assert!(
        inj[0].contains("close(fd=") && inj[0].contains("-> inject slow_close=700ms, returned 0"),
        "{}",
        inj[0]
    );
    let (_, bare) = python_json(py, None);
    assert!(bare["at"].as_f64().unwrap() < 0.3, "{bare}");
}

/// A program that waits in epoll (edge-triggered) or select while its connection stalls is
/// woken when the stall ends, as by the kernel's own timeout or the peer's RST: errshim's timer
/// aborts the connection on time. The read then gets the stall's errno.
#[test]
fn a_stall_wakes_a_waiting_program_when_it_ends() {
    let py = format!(
        "{STALL_PRELUDE}import sys
c.setblocking(False)
if sys.argv[1] == 'epoll':
    ep = select.epoll(); ep.register(c.fileno(), select.EPOLLIN | select.EPOLLET | select.EPOLLRDHUP)
    ep.poll(1)
t0 = time.monotonic()
out['first'] = c.recv(100).decode()
if sys.argv[1] == 'epoll': ready = len(ep.poll(5))
else: ready = len(select.select([c], [], [], 5)[0])
out['woken'] = [ready, time.monotonic() - t0]
try: c.recv(100); out['read'] = 'data'
except OSError as e: out['read'] = e.errno
print(json.dumps(out))\n"
    );
    for (mode, rule, errno) in [
        ("epoll", "recv:stall=600ms:then=reset:conn=1:max=1", libc::ECONNRESET),
        ("select", "recv:stall=600ms:conn=1:max=1", libc::ETIMEDOUT),
    ] {
        let r = Cmd::new("python3")
            .args(["-c", &py, mode])
            .shim()
            .env("ERRSHIM_FAULTS", rule)
            .run();
        r.assert_ok();
        let v: serde_json::Value = serde_json::from_str(r.stdout.lines().last().unwrap_or("")).unwrap();
        let ctx = format!("{mode}: {}", r.describe());
        assert_eq!(v["first"], "hello", "{ctx}");
        assert_eq!(v["woken"][0], 1, "{ctx}");
        let at = v["woken"][1].as_f64().unwrap();
        assert!((0.58..1.5).contains(&at), "woken at {at} s: {ctx}");
        assert_eq!(v["read"], errno, "{ctx}");
    }
}
