//! Fuzzing every configuration parser (unit tests only): `ERRSHIM_RULES` (`rules::parse_rules`),
//! `ERRSHIM_FAULTS` and control-file text (`faults::parse`, the latter after the same
//! line/comment handling as `handle::fault`), durations (`faults::parse_duration`), `when=`
//! (`faults::parse_when`), addresses in `peer=`, and the whole environment
//! (`config::from_lookup`).
//!
//! Inputs are random strings and mutations of valid specifications (byte flips, inserted
//! separators and keywords, deletions, truncations, duplications, splices, unicode, huge
//! numbers, case changes), from a small deterministic PRNG, so every failure replays. The
//! property: no input panics, and each is either a valid configuration (checked for internal
//! consistency) or an error that names a token occurring in the input (and, where the error
//! names its rule, a rule text occurring in the input). Valid addresses always parse in `peer=`
//! and match themselves, and plain durations and `when=` values parse to exactly their value.
//!
//! `cargo test` runs a short fuzz (50,000 inputs); the long run (at least 1,000,000 inputs) is
//! `cargo test --release --lib fuzz -- --ignored --nocapture`.

use crate::policy::config::{self, ConfigError};
use crate::policy::faults::{self, Fault, MAX_RULES};
use crate::policy::rules::{self, Action, Call, CallSet, ErrnoSet, FdFilter};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// xorshift64*: deterministic and seedable.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(faults::mix(seed) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }

    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

const RULE_SEEDS: &[&str] = &[
    rules::DEFAULT_RULES,
    "close,shutdown:ENOTCONN:ignore;*:ECONNRESET,EPIPE:log",
    "shutdown:ENOTCONN:quiet",
    "read,recv:ENOTCONN:map=ECONNRESET:fd=tcp",
    "shutdown:ENOTCONN:pass:fd=unix;shutdown:ENOTCONN:ignore",
    "*:*:log:fd=any",
    "",
    " read,__read_chk:ENOTCONN,104:map=ECONNRESET:fd=tcp ; *:*:log:fd=any;",
    "write:EPIPE:log;send:EPIPE:map=ECONNRESET",
    "__recv_chk,__recvfrom_chk:EWOULDBLOCK:log:fd=udp",
    "readv,recvmsg,recvfrom:eagain,4:quiet:fd=sock",
    "writev,sendmsg,sendto:EPIPE:log:fd=unix:fd=any",
    "write:EAGAIN:log:fd=any;*:*:log",
];

const FAULT_SEEDS: &[&str] = &[
    "recv,read:ECONNRESET:p=0.01:fd=tcp",
    "write,send,writev:short;read,recv:short",
    "send:reset:nth=3:port=8080",
    "shutdown:ENOTCONN:when=2+2:max=5",
    "read:EIO:p=0.5",
    "read,recv:ECONNRESET:p=0.5:after=2:max=3:fd=tcp:port=8080:peer=127.0.0.0/8",
    "write:short=7",
    "*:delay=20ms",
    "read:eof:p=1",
    "*:short",
    "*:eof",
    "send:EIO:when=2..10+2;send:short=1:nth=3;send:delay=1ms:nth=5",
    "read:EIO:peer=[::1]",
    "recv:EAGAIN:peer=::ffff:10.0.0.0/104:after=1",
    "close:EIO:nth=2",
    "readv,writev,recvmsg,sendmsg:short=4000:fd=unix",
    "*:delay=250us:p=0.001",
    "send,recv:ECONNRESET:p=0.01;writev,readv:EINTR:p=0.01:fd=tcp",
    "sendto,recvfrom:reset:when=1..3:fd=udp:peer=192.168.0.1/24",
    "write:reset:after_bytes=100000:conn=2;read:EIO:conn_nth=3:from=5s:for=10s;send:delay=20ms~5ms",
];

const CONTROL_SEEDS: &[&str] = &[
    "# faults\nread:EIO:p=0.5\n",
    "send:EIO:when=1..10+3 # comment\nsend:ECONNRESET:when=1+2\n\n",
    "",
    "\n\n#only a comment\n",
    "write:short;read:short\r\nrecv:eof:nth=2\n",
];

const DURATIONS: &[&str] = &[
    "250us", "20ms", "1s", "100ns", "2m", "1.5ms", "0s", "3µs", "59m", " 7ms ",
];
const WHENS: &[&str] = &[
    "3",
    "3+",
    "3+4",
    "2..5",
    "2..9+3",
    "1",
    "18446744073709551615",
    "1..1+1",
];

/// Separators, keywords and troublemakers that mutations insert.
const PIECES: &[&str] = &[
    ":",
    ";",
    ",",
    "=",
    "*",
    "..",
    "+",
    "/",
    "[",
    "]",
    "#",
    "\n",
    "\r\n",
    "\r",
    " ",
    "\t",
    "%p",
    "µs",
    "é",
    "😀",
    "\u{0}",
    "\u{feff}",
    "\u{202e}",
    "ß",
    "İ",
    "K",
    "18446744073709551616",
    "99999999999999999999999999",
    "18446744073709551615",
    "4294967296",
    "-1",
    "0",
    "1e309",
    "1e-400",
    "NaN",
    "inf",
    "-0",
    "0x10",
    "+5",
    ".",
    "1.",
    ".5",
    "ENOTCONN",
    "enotconn",
    "EWOULDBLOCK",
    "4095",
    "4096",
    "read",
    "__read_chk",
    "write",
    "close",
    "shutdown",
    "fd=",
    "p=",
    "nth=",
    "when=",
    "after=",
    "max=",
    "port=",
    "peer=",
    "conn=",
    "conn_nth=",
    "after_bytes=",
    "from=",
    "for=",
    "~",
    "short=",
    "delay=",
    "stall=",
    "slow_close=",
    "then=",
    "timeout",
    "map=",
    "ignore",
    "quiet",
    "log",
    "pass",
    "reset",
    "eof",
    "short",
    "tcp",
    "unix",
    "any",
    "sock",
    "65535",
    "65536",
    "::",
    "ffff",
    "/129",
    "/33",
    "%eth0",
    "ERRSHIM_",
];

/// A random string from pieces and random characters.
fn random_text(rng: &mut Rng) -> String {
    let mut s = String::new();
    for _ in 0..rng.below(12) {
        if rng.one_in(3) {
            s.push(random_char(rng));
        } else {
            let piece: &&str = rng.pick(PIECES);
            s.push_str(piece);
        }
    }
    s
}

fn random_char(rng: &mut Rng) -> char {
    match rng.below(4) {
        0 => (b' ' + rng.below(95) as u8) as char,
        1 => char::from_u32(rng.below(0x80) as u32).unwrap_or('?'),
        2 => char::from_u32(0x80 + rng.below(0x800) as u32).unwrap_or('?'),
        _ => char::from_u32(rng.below(0x11_0000) as u32).unwrap_or('\u{fffd}'),
    }
}

/// A char boundary of `s`, uniformly among them.
fn boundary(rng: &mut Rng, s: &str) -> usize {
    let b: Vec<usize> = s.char_indices().map(|(i, _)| i).chain([s.len()]).collect();
    *rng.pick(&b)
}

/// One mutation of `s`.
fn mutate_once(rng: &mut Rng, s: &str, seeds: &[&str]) -> String {
    match rng.below(11) {
        // Flip a bit of a byte (whatever is not UTF-8 afterwards becomes U+FFFD).
        0 if !s.is_empty() => {
            let mut b = s.as_bytes().to_vec();
            let i = rng.below(b.len());
            b[i] ^= 1 << rng.below(8);
            String::from_utf8_lossy(&b).into_owned()
        }
        // Insert a piece.
        1 | 2 => {
            let at = boundary(rng, s);
            format!("{}{}{}", &s[..at], rng.pick(PIECES), &s[at..])
        }
        // Delete a range.
        3 => {
            let (a, b) = (boundary(rng, s), boundary(rng, s));
            let (a, b) = (a.min(b), a.max(b));
            format!("{}{}", &s[..a], &s[b..])
        }
        // Truncate.
        4 => s[..boundary(rng, s)].to_string(),
        // Duplicate a range somewhere else.
        5 => {
            let (a, b) = (boundary(rng, s), boundary(rng, s));
            let (a, b) = (a.min(b), a.max(b));
            let at = boundary(rng, s);
            format!("{}{}{}", &s[..at], &s[a..b], &s[at..])
        }
        // Splice with another seed.
        6 => {
            let other = rng.pick(seeds);
            let (a, b) = (boundary(rng, s), boundary(rng, other));
            format!("{}{}", &s[..a], &other[b..])
        }
        // Replace the numbers with a huge one.
        7 => {
            let huge = rng.pick(&[
                "18446744073709551616",
                "99999999999999999999",
                "340282366920938463463374607431768211456",
            ]);
            let mut out = String::new();
            let mut in_num = false;
            for c in s.chars() {
                if c.is_ascii_digit() {
                    if !in_num {
                        out.push_str(huge);
                    }
                    in_num = true;
                } else {
                    in_num = false;
                    out.push(c);
                }
            }
            out
        }
        // Change case.
        8 => match rng.below(3) {
            0 => s.to_uppercase(),
            1 => s.to_lowercase(),
            _ => s
                .chars()
                .map(|c| if rng.one_in(2) { c.to_ascii_uppercase() } else { c })
                .collect(),
        },
        // Replace a character with a random one.
        9 if !s.is_empty() => {
            let chars: Vec<(usize, char)> = s.char_indices().collect();
            let (at, c) = *rng.pick(&chars);
            format!("{}{}{}", &s[..at], random_char(rng), &s[at + c.len_utf8()..])
        }
        // Insert random characters.
        _ => {
            let at = boundary(rng, s);
            let junk: String = (0..1 + rng.below(4)).map(|_| random_char(rng)).collect();
            format!("{}{}{}", &s[..at], junk, &s[at..])
        }
    }
}

/// A seed (sometimes several joined) mutated 0 to 4 times, or a random string.
fn input(rng: &mut Rng, seeds: &[&str], sep: &str) -> String {
    if rng.one_in(8) {
        return random_text(rng);
    }
    let mut s = rng.pick(seeds).to_string();
    for _ in 0..rng.below(3) {
        if rng.one_in(3) {
            s.push_str(sep);
            let seed: &&str = rng.pick(seeds);
            s.push_str(seed);
        }
    }
    for _ in 0..rng.below(5) {
        s = mutate_once(rng, &s, seeds);
    }
    // Keep inputs to a sane size (the control file is at most 4 KiB anyway).
    if s.len() > 2048 {
        let mut end = 2048;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn non_empty_parts(s: &str) -> usize {
    s.split(';').filter(|p| !p.trim().is_empty()).count()
}

// --- the checks ---------------------------------------------------------------------------

fn check_rules(s: &str) {
    match rules::parse_rules(s) {
        Ok(rs) => {
            assert_eq!(rs.len(), non_empty_parts(s), "{s:?}");
            for r in &rs {
                assert!(!r.text.is_empty() && s.contains(&*r.text), "{s:?}: {r:?}");
                assert!(r.calls.bits() != 0, "{s:?}: no calls");
                if let ErrnoSet::List(l) = &r.errnos {
                    assert!(!l.is_empty() && l.iter().all(|e| (1..4096).contains(e)), "{s:?}: {l:?}");
                }
                if let Action::Map(e) = r.action {
                    assert!((1..4096).contains(&e), "{s:?}");
                }
                if matches!(r.action, Action::Ignore | Action::Quiet) {
                    assert!(!r.calls.iter().any(Call::is_write_family), "{s:?}: ignore on a write");
                }
            }
        }
        Err(e) => {
            assert!(
                s.contains(e.token.as_str()),
                "{s:?}: token {:?} not in the input",
                e.token
            );
            assert!(
                s.contains(e.rule_text.as_str()),
                "{s:?}: rule {:?} not in the input",
                e.rule_text
            );
            assert!(
                e.rule >= 1 && e.rule <= non_empty_parts(s),
                "{s:?}: rule number {}",
                e.rule
            );
            assert!(!e.problem.is_empty());
        }
    }
}

/// What a valid fault set must satisfy.
fn check_fault_set(s: &str, set: &faults::FaultSet) {
    assert!(set.n <= MAX_RULES, "{s:?}");
    for r in set.rules() {
        assert!(
            r.calls.bits() != 0 && r.calls.bits() & !CallSet::ANY.bits() == 0,
            "{s:?}"
        );
        match r.fault {
            Fault::Eof => assert!(
                r.calls.iter().all(|c| matches!(
                    c,
                    Call::Read | Call::Readv | Call::Recv | Call::Recvfrom | Call::Recvmsg
                )),
                "{s:?}: {r:?}"
            ),
            Fault::Short(_) | Fault::Rate(_) => assert!(
                !r.calls.contains(Call::Shutdown) && !r.calls.contains(Call::Close),
                "{s:?}: {r:?}"
            ),
            Fault::Errno(e) => assert!((1..4096).contains(&e), "{s:?}"),
            Fault::Delay(ns) => assert!(ns + r.jitter < 3_600_000_000_000 && r.jitter <= ns, "{s:?}"),
            Fault::Reset => {}
            Fault::Stall { ns, .. } => assert!(
                (1..3_600_000_000_000).contains(&ns)
                    && !r.calls.contains(Call::Shutdown)
                    && !r.calls.contains(Call::Close)
                    && !matches!(r.fd, FdFilter::Udp | FdFilter::Unix),
                "{s:?}: {r:?}"
            ),
            Fault::SlowClose(ns) => assert!(
                (1..3_600_000_000_000).contains(&ns) && r.calls.iter().all(|c| c == Call::Close),
                "{s:?}: {r:?}"
            ),
        }
        if let Some(w) = r.when {
            assert!(
                w.first >= 1 && w.last >= w.first && w.step >= 1 && w.hits(w.first),
                "{s:?}: {w:?}"
            );
        }
        if let Some(n) = r.nth {
            assert!(n >= 1, "{s:?}");
        }
        if let Some(m) = r.max {
            assert!(m >= 1, "{s:?}");
        }
        if let Some(p) = r.port {
            assert!(p >= 1, "{s:?}");
        }
        if let Some(p) = r.peer {
            assert!(p.prefix <= if p.ip.is_ipv4() { 32 } else { 128 }, "{s:?}");
            assert!(p.matches(p.ip), "{s:?}: {p:?} does not match its own address");
        }
        let _ = faults::explain(r);
        let mut d = String::new();
        faults::describe(r.fault, &mut d).unwrap();
        assert!(!d.is_empty());
    }
}

fn check_faults(s: &str) {
    match faults::parse(s) {
        Ok(set) => {
            assert_eq!(set.n, non_empty_parts(s), "{s:?}");
            check_fault_set(s, &set);
        }
        Err(e) => check_fault_error(s, &e),
    }
}

fn check_fault_error(s: &str, e: &faults::FaultError) {
    assert!(
        s.contains(e.token.as_str()),
        "{s:?}: token {:?} not in the input",
        e.token.as_str()
    );
    assert!(
        s.contains(e.rule_text.as_str()),
        "{s:?}: rule {:?} not in the input",
        e.rule_text.as_str()
    );
    assert!(e.rule >= 1, "{s:?}");
    let text = e.to_string();
    assert!(text.contains(e.problem));
}

/// Control-file text, as `handle::fault` turns it into a rule list: lines, `#` comments, `;`.
fn check_control(text: &str) {
    let mut joined = String::new();
    for line in text.lines() {
        joined.push_str(line.split('#').next().unwrap_or(""));
        joined.push(';');
    }
    match faults::parse(&joined) {
        Ok(set) => check_fault_set(text, &set),
        Err(e) => check_fault_error(text, &e),
    }
}

fn check_duration(s: &str) {
    if let Some(v) = faults::parse_duration(s) {
        assert!(v < 3_600_000_000_000, "{s:?}: {v}");
        let t = s.trim();
        assert!(
            ["ns", "us", "µs", "ms", "s", "m"].iter().any(|u| t.ends_with(u)),
            "{s:?}"
        );
    }
}

fn check_when(s: &str) {
    if let Some(w) = faults::parse_when(s) {
        assert!(
            w.first >= 1 && w.last >= w.first && w.step >= 1 && w.hits(w.first),
            "{s:?}: {w:?}"
        );
    }
}

/// A fuzzed `peer=` value in a rule.
fn check_peer(addr: &str) {
    check_faults(&format!("read:EIO:peer={addr}"));
}

/// A valid address, as the README documents it (`peer=ADDR` or `peer=ADDR/PREFIX`, IPv4 or
/// IPv6, IPv6 with or without brackets): it parses, with that address and prefix, and the
/// filter matches the address.
fn check_valid_peer(rng: &mut Rng) {
    let ip: IpAddr = match rng.below(4) {
        0 => Ipv4Addr::from(rng.next() as u32).into(),
        1 => Ipv6Addr::from(u128::from(rng.next()) << 64 | u128::from(rng.next())).into(),
        2 => Ipv6Addr::from(u128::from(rng.next() as u16) << 112 | u128::from(rng.next() as u8)).into(),
        _ => Ipv4Addr::from(rng.next() as u32).to_ipv6_mapped().into(),
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = rng.one_in(2).then(|| rng.below(max + 1));
    let text = match (ip, rng.one_in(2)) {
        (IpAddr::V6(v6), true) => format!("[{v6}]"),
        _ => ip.to_string(),
    };
    let value = match prefix {
        Some(p) => format!("{text}/{p}"),
        None => text,
    };
    let after = if rng.one_in(2) { ":after=1" } else { "" };
    let spec = format!("recv:EIO:peer={value}{after}");
    let set = faults::parse(&spec).unwrap_or_else(|e| panic!("{spec:?}: a valid address is refused: {e}"));
    let p = set.rules[0].peer.unwrap_or_else(|| panic!("{spec:?}: no peer"));
    assert_eq!((p.ip, p.prefix as usize), (ip, prefix.unwrap_or(max)), "{spec:?}");
    assert!(p.matches(ip), "{spec:?}");
    assert_eq!(set.rules[0].after, u64::from(!after.is_empty()), "{spec:?}");
}

/// A plain duration and `when=` parse to exactly their value.
fn check_exact_numbers(rng: &mut Rng) {
    let n = rng.below(1_000_000) as u64;
    let (unit, scale) = *rng.pick(&[("ns", 1u64), ("us", 1_000), ("ms", 1_000_000), ("s", 1_000_000_000)]);
    let v = n * scale;
    let got = faults::parse_duration(&format!("{n}{unit}"));
    assert_eq!(got, (v < 3_600_000_000_000).then_some(v), "{n}{unit}");
    let (a, b, step) = (
        1 + rng.below(1000) as u64,
        rng.below(1000) as u64,
        1 + rng.below(9) as u64,
    );
    let w = faults::parse_when(&format!("{a}..{}+{step}", a + b)).unwrap();
    assert_eq!((w.first, w.last, w.step), (a, a + b, step));
}

const BOOLS: &[&str] = &["1", "0", "true", "false", "yes", "no", "on", "off", "", "maybe", "2"];
const LOGS: &[&str] = &[
    "stderr",
    "off",
    "syslog",
    "syslog:/dev/log",
    "/tmp/e-%p.log",
    "./e.log",
    "stdrr",
    "",
    "syslog:",
];
const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace", "inof", ""];

/// A random environment: some of the known variables (and typos of them), fuzzed values.
fn check_config(rng: &mut Rng) {
    let mut map: HashMap<String, String> = HashMap::new();
    for _ in 0..rng.below(7) {
        let (name, _, _) = *rng.pick(config::VARIABLES);
        let name = if rng.one_in(10) {
            mutate_once(rng, name, &[name])
        } else {
            name.to_string()
        };
        let value = match name.as_str() {
            "ERRSHIM_RULES" => input(rng, RULE_SEEDS, ";"),
            "ERRSHIM_FAULTS" => input(rng, FAULT_SEEDS, ";"),
            "ERRSHIM_LOG" => input(rng, LOGS, ""),
            "ERRSHIM_LOG_LEVEL" => input(rng, LEVELS, ""),
            "ERRSHIM_FORMAT" => input(rng, &["text", "json", "jsno"], ""),
            "ERRSHIM_SEED" => input(rng, &["7", "18446744073709551615", "x", ""], ""),
            "ERRSHIM_ONLY_CMDS" | "ERRSHIM_SKIP_CMDS" => input(rng, &["nginx", "nginx,redis-server", "", ","], ","),
            _ => input(rng, BOOLS, ""),
        };
        map.insert(name, value);
    }
    let names: Vec<Vec<u8>> = map.keys().map(|k| k.as_bytes().to_vec()).collect();
    let get = |k: &str| map.get(k).map(|v| v.as_bytes().to_vec());
    let (cfg, errors) = config::from_lookup(&get, &names);
    let mut per_var: HashMap<&str, usize> = HashMap::new();
    for e in &errors {
        check_config_error(e, &map);
        *per_var.entry(e.var.as_str()).or_default() += 1;
    }
    for (var, n) in &per_var {
        assert!(*n <= 1, "{n} errors for {var}: {errors:#?}");
    }
    let failed = |v: &str| per_var.contains_key(v);
    match map.get("ERRSHIM_RULES") {
        Some(v) if !failed("ERRSHIM_RULES") => assert_eq!(cfg.rules, rules::parse_rules(v).unwrap()),
        _ => assert_eq!(cfg.rules, rules::parse_rules(rules::DEFAULT_RULES).unwrap()),
    }
    match map.get("ERRSHIM_FAULTS") {
        Some(v) if !failed("ERRSHIM_FAULTS") => assert_eq!(*cfg.fault_set(), faults::parse(v).unwrap()),
        _ => assert_eq!(cfg.fault_set().n, 0),
    }
    if failed("ERRSHIM_LOG") || !map.contains_key("ERRSHIM_LOG") {
        assert_eq!(cfg.log, config::LogDest::Stderr);
    }
    let _ = cfg.describe();
}

/// An error names its variable, and a token from that variable's value (or the name of a
/// variable that is set, for unknown names and conflicting variables).
fn check_config_error(e: &ConfigError, map: &HashMap<String, String>) {
    let value = map
        .get(&e.var)
        .unwrap_or_else(|| panic!("error for a variable that is not set: {e:?}"));
    assert!(
        value.contains(&e.token) || map.contains_key(&e.token),
        "token {:?} is neither in {}={value:?} nor a variable: {e:?}",
        e.token,
        e.var
    );
    if let Some(r) = &e.rule {
        assert!(value.contains(&r.rule_text), "{e:?}");
    }
    if let Some((_, text)) = &e.rule_text {
        assert!(value.contains(text.as_str()), "{e:?}");
    }
    let line = e.to_string();
    assert!(
        line.starts_with("errshim: config error: ") && line.contains(&crate::text::escape::esc(&e.var).to_string()),
        "{line}"
    );
    // One line, whatever the input: control characters are escaped.
    assert!(!line.chars().any(char::is_control), "{line:?}");
}

/// Runs `n` inputs from `seed`, round robin over the parsers. Returns the number run.
fn fuzz(seed: u64, n: u64) -> u64 {
    let mut rng = Rng::new(seed);
    for i in 0..n {
        match i % 9 {
            0 => check_rules(&input(&mut rng, RULE_SEEDS, ";")),
            1 | 2 => check_faults(&input(&mut rng, FAULT_SEEDS, ";")),
            3 => check_control(&input(&mut rng, CONTROL_SEEDS, "\n")),
            4 => {
                check_duration(&input(&mut rng, DURATIONS, ""));
                check_when(&input(&mut rng, WHENS, ""));
            }
            5 => check_peer(&input(
                &mut rng,
                &[
                    "127.0.0.1",
                    "127.0.0.0/8",
                    "[::1]",
                    "::1/128",
                    "[::ffff:127.0.0.1]/104",
                    "0.0.0.0/0",
                ],
                "",
            )),
            6 => check_valid_peer(&mut rng),
            7 => check_exact_numbers(&mut rng),
            _ => check_config(&mut rng),
        }
    }
    n
}

#[test]
fn short_fuzz_of_every_parser() {
    assert_eq!(fuzz(1, 50_000), 50_000);
}

/// The long run: `cargo test --release --lib fuzz -- --ignored --nocapture`
/// (`FUZZ_INPUTS` and `FUZZ_SEED` change the count and the seed).
#[test]
#[ignore]
fn long_fuzz_of_every_parser() {
    let var = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let (n, seed) = (var("FUZZ_INPUTS", 1_000_000), var("FUZZ_SEED", 2));
    let start = std::time::Instant::now();
    let done = fuzz(seed, n);
    eprintln!(
        "fuzz: {done} inputs (seed {seed}) in {:?}, no panic, every property held",
        start.elapsed()
    );
    assert!(done >= n);
}

#[test]
fn the_checks_can_fail() {
    // A property violation is caught: a token that is not in the input.
    let r = std::panic::catch_unwind(|| {
        check_fault_error("read:EIO", &faults::parse("read:EXX").unwrap_err());
    });
    assert!(r.is_err());
    // Mutations change their input and stay valid UTF-8 (they are &str by construction).
    let mut rng = Rng::new(9);
    let changed = (0..100).filter(|_| mutate_once(&mut rng, "read:EIO:p=0.5", FAULT_SEEDS) != "read:EIO:p=0.5");
    assert!(changed.count() > 80);
}

/// IPv6 peers in the forms the README documents (`peer=ADDR`, `peer=ADDR/PREFIX`), with and
/// without brackets, followed by other options or not.
#[test]
fn ipv6_peers_as_documented() {
    for (spec, ip, prefix, after) in [
        ("read:EIO:peer=::1", "::1", 128, 0),
        ("read:EIO:peer=[::1]", "::1", 128, 0),
        ("read:EIO:peer=[::1]/128:after=2", "::1", 128, 2),
        ("read:EIO:peer=fe80::1/64:after=3:fd=tcp", "fe80::1", 64, 3),
        ("read:EIO:peer=::ffff:10.0.0.0/104:after=1", "::ffff:10.0.0.0", 104, 1),
        ("read:EIO:after=4:peer=2001:db8::/32", "2001:db8::", 32, 4),
    ] {
        let set = faults::parse(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
        let r = set.rules[0];
        let p = r.peer.unwrap();
        assert_eq!(
            (p.ip, p.prefix, r.after),
            (ip.parse::<IpAddr>().unwrap(), prefix, after),
            "{spec}"
        );
    }
    assert!(
        faults::parse("read:EIO:peer=::1:nth").is_err(),
        "a typo after an address is still one"
    );
    let e = faults::parse("read:EIO:peer=10.0.0.1:nht=3").unwrap_err();
    assert_eq!(e.token.as_str(), "nht=3");
}
