//! `ERRSHIM_FAULTS` and the control file: fault rules, parsed without the heap (the control
//! file is re-read from inside hook paths, where nothing may allocate), and the decision, per
//! call, whether a rule injects.
//!
//! `CALLS:FAULT[:OPTION...]`, rules separated by `;`. Reproducible: the decision for the k-th
//! matching call of rule r depends only on (seed, r, k), through a counter-based generator.

// Errors carry their texts by value (no heap: the control file is parsed inside hook paths),
// so they are larger than clippy likes in a Result.
#![allow(clippy::result_large_err)]

use crate::policy::rules::{Call, CallSet, FdFilter};
use crate::sys::errno;
use crate::text::suggest;
use core::net::IpAddr;

pub const MAX_RULES: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Fail with this errno without performing the operation (close: after closing).
    Errno(i32),
    /// Transfer at most N bytes (0: a random count from 1 to len-1).
    Short(u64),
    /// Wait this many nanoseconds, then perform the call.
    Delay(u64),
    /// Abort the TCP connection for real (RST), then perform the call.
    Reset,
    /// Return 0 (end of file) without reading.
    Eof,
    /// `rate=`: pace the connection's reads (bytes in) and writes (bytes out), each at most
    /// this many bytes per second since the connection began; nothing is lost.
    Rate(u64),
    /// `stall=D`: from the call it fires on, the TCP connection moves no new data either way
    /// for this many nanoseconds; then it ends as a retransmission timeout ends one
    /// (ETIMEDOUT), or with `then=reset` as the peer's RST does (ECONNRESET).
    Stall { ns: u64, reset: bool },
    /// `slow_close=D` (close only): the close returns at once, and the peer sees the FIN this
    /// many nanoseconds later.
    SlowClose(u64),
}

/// `when=A..B+S`: calls A through B (inclusive), every S-th.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct When {
    pub first: u64,
    pub last: u64,
    pub step: u64,
}

impl When {
    #[cfg(test)]
    pub fn hits(&self, k: u64) -> bool {
        k >= self.first && k <= self.last && (k - self.first).is_multiple_of(self.step)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerFilter {
    pub ip: IpAddr,
    pub prefix: u8,
}

impl PeerFilter {
    pub fn matches(&self, ip: IpAddr) -> bool {
        match (self.ip, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => prefix_eq(&a.octets(), &b.octets(), self.prefix),
            (IpAddr::V6(a), IpAddr::V6(b)) => prefix_eq(&a.octets(), &b.octets(), self.prefix),
            (IpAddr::V6(a), IpAddr::V4(b)) | (IpAddr::V4(b), IpAddr::V6(a)) => {
                // An IPv4 address seen through an IPv6 socket (::ffff:a.b.c.d).
                a.to_ipv4_mapped().is_some_and(|m| {
                    let bits = if self.ip.is_ipv6() {
                        self.prefix.saturating_sub(96)
                    } else {
                        self.prefix
                    };
                    prefix_eq(&m.octets(), &b.octets(), bits)
                })
            }
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let bits = bits as usize;
    let full = bits / 8;
    if a.get(..full) != b.get(..full) {
        return false;
    }
    let rem = bits % 8;
    rem == 0 || {
        let mask = 0xffu8 << (8 - rem);
        a.get(full).map(|x| x & mask) == b.get(full).map(|x| x & mask)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultRule {
    pub calls: CallSet,
    pub fault: Fault,
    /// Probability as a threshold on a 64-bit draw; None: always.
    pub p: Option<u64>,
    pub nth: Option<u64>,
    pub when: Option<When>,
    pub after: u64,
    pub max: Option<u64>,
    pub fd: FdFilter,
    pub port: Option<u16>,
    pub peer: Option<PeerFilter>,
    /// `unfaithful`: inject wherever the rule matches, also where Linux never gives the
    /// fault's result (`handle::faithful` says where it does).
    pub unfaithful: bool,
    /// `delay=` after an errno: nanoseconds to wait before failing (0: at once). connect's
    /// ETIMEDOUT waits `SYN_TIMEOUT_NS` unless told.
    pub wait: u64,
    /// `conn=N`: only on the process's N-th connection (see `conntable::Record::conn_no`).
    pub conn: Option<u64>,
    /// `conn_nth=N`: only the N-th matching call on each connection.
    pub conn_nth: Option<u64>,
    /// `after_bytes=N`: only once N bytes (in and out) have moved on the connection.
    pub after_bytes: Option<u64>,
    /// `from=`, `for=`: only from this many ms after errshim's start, for this long.
    pub from_ms: u64,
    pub for_ms: Option<u64>,
    /// `delay=D~J`: the delay is uniform in [D-J, D+J] (ns; 0: exactly D).
    pub jitter: u64,
}

/// How many rules of a set may use `conn_nth=` (each keeps a counter in every connection's
/// record).
pub const MAX_CONN_COUNTED: usize = 4;

impl FaultRule {
    const NONE: FaultRule = FaultRule {
        calls: CallSet::ANY,
        fault: Fault::Eof,
        p: None,
        nth: None,
        when: None,
        after: 0,
        max: None,
        fd: FdFilter::Sock,
        port: None,
        peer: None,
        unfaithful: false,
        wait: 0,
        conn: None,
        conn_nth: None,
        after_bytes: None,
        from_ms: 0,
        for_ms: None,
        jitter: 0,
    };

    /// Whether `from=` or `for=` limits the rule to a time window.
    pub fn windowed(&self) -> bool {
        self.from_ms > 0 || self.for_ms.is_some()
    }

    /// Whether the window of `from=` and `for=` holds `ms` after errshim's start.
    pub fn in_window(&self, ms: u64) -> bool {
        ms >= self.from_ms && self.for_ms.is_none_or(|f| ms - self.from_ms < f)
    }

    /// Whether the k-th matching call is injected (ignoring `max`, which needs a counter).
    #[cfg(test)]
    pub fn triggers(&self, seed: u64, rule: usize, k: u64) -> bool {
        Triggers::of(self).fire(rule_key(seed, rule), k)
    }
}

/// A rule's triggers as plain integers (no `Option`s), precomputed when rules are installed:
/// the one implementation of nth, when, after and p, used on every matching call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Triggers {
    /// The matching-call numbers k that `after`, `nth` and the bounds of `when` allow, as the
    /// first one and their count minus one, so that one compare rejects every other k. None
    /// allowed: lo 0 (call numbers start at 1).
    lo: u64,
    span: u64,
    /// `when=`: its first call and step (0 and 1 without one).
    wfirst: u64,
    wstep: u64,
    /// No probability: every call that passes the other triggers.
    always: bool,
    /// Probability threshold on a 64-bit draw (when not `always`); 0 never fires.
    p: u64,
}

impl Triggers {
    pub const NONE: Triggers = Triggers {
        lo: 0,
        span: 0,
        wfirst: 0,
        wstep: 1,
        always: false,
        p: 0,
    };

    pub fn of(r: &FaultRule) -> Triggers {
        let (wfirst, wstep) = r.when.map_or((0, 1), |w| (w.first, w.step));
        let mut lo = r.after.saturating_add(1);
        let mut hi = u64::MAX;
        if let Some(nth) = r.nth {
            (lo, hi) = (lo.max(nth), hi.min(nth));
        }
        if let Some(w) = r.when {
            (lo, hi) = (lo.max(w.first), hi.min(w.last));
        }
        // `for=0`: a window that holds no call.
        let (lo, span) = if lo <= hi && r.for_ms != Some(0) {
            (lo, hi - lo)
        } else {
            (0, 0)
        };
        Triggers {
            lo,
            span,
            wfirst,
            wstep,
            always: r.p.is_none(),
            p: r.p.unwrap_or(0),
        }
    }

    /// Whether some matching call can fire at all. Not with `p=0`, nor when the counting
    /// triggers exclude every call (`nth=3` with `after=5`, a `when=` window that ends before
    /// `after`): such a rule is never consulted, so it costs the hooks nothing.
    pub fn can_fire(&self) -> bool {
        if (!self.always && self.p == 0) || self.lo == 0 {
            return false;
        }
        // From the range's first call to the first one on the step grid of `when`.
        let to_grid = (self.wstep - (self.lo - self.wfirst) % self.wstep) % self.wstep;
        to_grid <= self.span
    }

    /// Whether the k-th matching call fires, given the rule's key (`rule_key`). A k outside
    /// the range costs one compare.
    #[inline(always)]
    pub fn fire(&self, key: u64, k: u64) -> bool {
        self.in_range(k)
            && (self.wstep == 1 || (k - self.wfirst).is_multiple_of(self.wstep))
            && (self.always || (self.p != 0 && draw_below(key, k, self.p)))
    }

    /// Whether the k-th matching call may fire, for a caller that makes no call and keeps few
    /// registers (the hooks' quick consultation, `handle::fault::consult`): false only where
    /// `fire` is false. The `p` draw is inline and asks for the key only then (no draw is
    /// below a `p` of 0); a `when=` step is left to `fire`.
    #[inline(always)]
    pub fn may_fire(&self, key: impl FnOnce() -> u64, k: u64) -> bool {
        self.in_range(k) && (self.wstep != 1 || self.always || draw_keyed(key(), k, 0) < self.p)
    }

    /// Whether k is among the calls `after`, `nth` and the bounds of `when` allow.
    #[inline(always)]
    fn in_range(&self, k: u64) -> bool {
        k.wrapping_sub(self.lo) <= self.span
    }
}

/// The `p` draw; out of line, so that a caller's loop keeps no registers for its constants.
#[inline(never)]
fn draw_below(key: u64, k: u64, p: u64) -> bool {
    draw_keyed(key, k, 0) < p
}

/// Up to MAX_RULES rules, by value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultSet {
    pub rules: [FaultRule; MAX_RULES],
    pub n: usize,
}

impl FaultSet {
    pub const EMPTY: FaultSet = FaultSet {
        rules: [FaultRule::NONE; MAX_RULES],
        n: 0,
    };

    pub fn rules(&self) -> &[FaultRule] {
        &self.rules[..self.n.min(MAX_RULES)]
    }
}

/// A short text copied into a fixed buffer (no heap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Text {
    buf: [u8; 96],
    len: usize,
}

impl Text {
    pub fn new(s: &str) -> Text {
        let mut t = Text { buf: [0; 96], len: 0 };
        let mut end = s.len().min(t.buf.len());
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        t.buf[..end].copy_from_slice(&s.as_bytes()[..end]);
        t.len = end;
        t
    }
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultError {
    pub rule: usize,
    pub rule_text: Text,
    pub token: Text,
    pub problem: &'static str,
    pub suggestion: Option<&'static str>,
}

impl core::fmt::Display for FaultError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use crate::text::escape::esc;
        write!(
            f,
            "{} '{}' in fault rule {} ('{}')",
            self.problem,
            esc(self.token.as_str()),
            self.rule,
            esc(self.rule_text.as_str())
        )?;
        if let Some(s) = self.suggestion {
            write!(f, "; did you mean {s}?")?;
        }
        Ok(())
    }
}

/// How long a blocking connect takes to fail with ETIMEDOUT on Linux by default: the SYN and
/// its 6 retransmissions (net.ipv4.tcp_syn_retries = 6), 1 + 2 + 4 + ... + 64 s.
pub const SYN_TIMEOUT_NS: u64 = 127_000_000_000;

/// The errnos a fault may give each call that takes only some (the others take any): those
/// Linux returns from it where errshim can leave the state it leaves (connect(2), accept(2),
/// sendfile(2), splice(2), sendmmsg(2), recvmmsg(2), and the socket's own errors on a transfer),
/// with the refusal's text. The read and write families, shutdown and close take any errno.
pub fn call_errnos(c: Call) -> Option<(&'static [i32], &'static str)> {
    use libc::*;
    Some(match c {
        Call::Connect => (
            &[ECONNREFUSED, ETIMEDOUT, ENETUNREACH, EHOSTUNREACH, EADDRNOTAVAIL],
            "connect cannot return this errno as a fault (only ECONNREFUSED, ETIMEDOUT, ENETUNREACH, EHOSTUNREACH, EADDRNOTAVAIL)",
        ),
        Call::Accept => (
            &[ECONNABORTED, EMFILE, ENFILE, ENOBUFS, ENOMEM],
            "accept cannot return this errno as a fault (only ECONNABORTED, EMFILE, ENFILE, ENOBUFS, ENOMEM)",
        ),
        Call::Sendfile => (
            &[EAGAIN, EPIPE, ECONNRESET, ETIMEDOUT, EHOSTUNREACH, EIO, ENOMEM],
            "sendfile cannot return this errno as a fault (only EAGAIN, EPIPE, ECONNRESET, ETIMEDOUT, EHOSTUNREACH, EIO, ENOMEM)",
        ),
        Call::Splice => (
            &[EAGAIN, EPIPE, ECONNRESET, ETIMEDOUT, EHOSTUNREACH, ENOMEM],
            "splice cannot return this errno as a fault (only EAGAIN, EPIPE, ECONNRESET, ETIMEDOUT, EHOSTUNREACH, ENOMEM)",
        ),
        Call::Sendmmsg => (
            &[EAGAIN, EPIPE, ECONNRESET, ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ENETUNREACH, ENOBUFS, ENOMEM],
            "sendmmsg cannot return this errno as a fault (only EAGAIN, EPIPE, ECONNRESET, ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ENETUNREACH, ENOBUFS, ENOMEM)",
        ),
        Call::Recvmmsg => (
            &[EAGAIN, ECONNRESET, ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ENETUNREACH, ENOMEM],
            "recvmmsg cannot return this errno as a fault (only EAGAIN, ECONNRESET, ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ENETUNREACH, ENOMEM)",
        ),
        _ => return None,
    })
}

const FAULT_WORDS: [&str; 8] = [
    "short",
    "delay",
    "reset",
    "eof",
    "rate",
    "stall",
    "slow_close",
    "ECONNRESET",
];
const OPTION_WORDS: [&str; 17] = [
    "p",
    "then",
    "nth",
    "when",
    "after",
    "max",
    "fd",
    "port",
    "peer",
    "short",
    "unfaithful",
    "delay",
    "conn",
    "conn_nth",
    "after_bytes",
    "from",
    "for",
];

fn err(rule: usize, text: &str, token: &str, problem: &'static str, suggestion: Option<&'static str>) -> FaultError {
    FaultError {
        rule,
        rule_text: Text::new(text),
        token: Text::new(token),
        problem,
        suggestion,
    }
}

fn num(rule: usize, text: &str, v: &str, min: u64) -> Result<u64, FaultError> {
    match v.trim().parse::<u64>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(err(
            rule,
            text,
            v,
            if min > 0 {
                "expected a whole number >= 1"
            } else {
                "expected a whole number"
            },
            None,
        )),
    }
}

/// A number (digits, a point) followed by one of `units` (its name, its scale): the number
/// times the scale. For durations here and the configuration's intervals.
pub fn scaled(s: &str, units: &[(&str, f64)]) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    units.iter().find(|(u, _)| *u == unit).map(|(_, scale)| n * scale)
}

/// `250us`, `20ms`, `1s`, `100ns`, `2m` (minutes). Returns nanoseconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    let units = [
        ("ns", 1.0),
        ("us", 1e3),
        ("µs", 1e3),
        ("ms", 1e6),
        ("s", 1e9),
        ("m", 60e9),
    ];
    let v = scaled(s, &units)?;
    (0.0..3.6e12).contains(&v).then_some(v as u64)
}

/// A time window's bound: `500ms`, `5s`, `2m`, `1h` (also `us`, `ns`). Returns milliseconds
/// (the coarse clock's unit), rounded down.
pub fn parse_span_ms(s: &str) -> Option<u64> {
    let units = [
        ("ns", 1e-6),
        ("us", 1e-3),
        ("ms", 1.0),
        ("s", 1e3),
        ("m", 60e3),
        ("h", 3.6e6),
    ];
    let v = scaled(s, &units)?;
    (0.0..9.0e15).contains(&v).then_some(v as u64)
}

/// `delay=D` or `delay=D~J`: (D, J) in nanoseconds, J at most D (a delay is never negative) and
/// D+J under an hour.
fn parse_delay(rule: usize, text: &str, v: &str) -> Result<(u64, u64), FaultError> {
    let bad = |t: &str| err(rule, text, t, "bad duration (e.g. 250us, 20ms, 1s)", None);
    let (d, j) = v.split_once('~').unwrap_or((v, "0s"));
    let d = parse_duration(d).ok_or_else(|| bad(d))?;
    let j = parse_duration(j).ok_or_else(|| err(rule, text, j, "bad jitter (e.g. delay=20ms~5ms)", None))?;
    if j > d {
        return Err(err(
            rule,
            text,
            v,
            "jitter larger than the delay (the delay would be negative)",
            None,
        ));
    }
    if d + j >= 3_600_000_000_000 {
        return Err(bad(v));
    }
    Ok((d, j))
}

/// `stall=D`, `slow_close=D`: a duration above zero and under an hour.
fn positive_duration(rule: usize, text: &str, v: &str) -> Result<u64, FaultError> {
    match parse_duration(v) {
        Some(d) if d > 0 && d < 3_600_000_000_000 => Ok(d),
        _ => Err(err(
            rule,
            text,
            v,
            "bad duration (e.g. 500ms, 5s, 2m; above 0, under an hour)",
            None,
        )),
    }
}

/// A `delay=D~J` rule's delay for its k-th matching call: uniform in [D-J, D+J], drawn from the
/// rule's key and k (whole microseconds when D and J are).
pub fn jittered(d: u64, j: u64, key: u64, k: u64) -> u64 {
    if j == 0 {
        return d;
    }
    let unit = if d.is_multiple_of(1000) && j.is_multiple_of(1000) {
        1000
    } else {
        1
    };
    let (lo, width) = ((d - j) / unit, 2 * j / unit + 1);
    (lo + draw_keyed(key, k, 2) % width) * unit
}

/// `200KiB/s`, `1MB/s`, `500B/s`, `2MiB/s`: bytes per second (at least 1).
pub fn parse_rate(s: &str) -> Option<u64> {
    let units = [
        ("B/s", 1.0),
        ("KB/s", 1e3),
        ("MB/s", 1e6),
        ("GB/s", 1e9),
        ("KiB/s", 1024.0),
        ("MiB/s", 1_048_576.0),
        ("GiB/s", 1_073_741_824.0),
    ];
    let v = scaled(s, &units)?;
    (1.0..1.0e15).contains(&v).then_some(v as u64)
}

/// `A`, `A+`, `A+S`, `A..B`, `A..B+S` (strace's syntax).
pub fn parse_when(s: &str) -> Option<When> {
    let (range, step) = match s.split_once('+') {
        Some((r, "")) => (r, Some(1)),
        Some((r, st)) => (r, st.parse::<u64>().ok().filter(|&x| x >= 1)),
        None => (s, None),
    };
    let step = match step {
        Some(x) => x,
        None if s.contains('+') => return None,
        None => 0,
    };
    let (first, last) = match range.split_once("..") {
        Some((a, b)) => (a.parse::<u64>().ok()?, b.parse::<u64>().ok()?),
        None => {
            let a = range.parse::<u64>().ok()?;
            (a, if step == 0 { a } else { u64::MAX })
        }
    };
    (first >= 1 && last >= first).then_some(When {
        first,
        last,
        step: step.max(1),
    })
}

fn parse_peer(s: &str) -> Option<PeerFilter> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p.parse::<u8>().ok()?)),
        None => (s, None),
    };
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = prefix.unwrap_or(max);
    (prefix <= max).then_some(PeerFilter { ip, prefix })
}

fn is_read_family(c: Call) -> bool {
    matches!(
        c,
        Call::Read | Call::Readv | Call::Recv | Call::Recvfrom | Call::Recvmsg
    )
}

/// The options of a rule (what follows `CALLS:FAULT:`), split at `:`. An IPv6 address in
/// `peer=` has colons of its own: a `peer=` option also takes the fields after it that can only
/// be pieces of an address (hex digits, `.`, `[`, `]`, `/`, or empty: `peer=::1`,
/// `peer=[fe80::1]/64:after=2`). Slices of the rule text, no heap.
struct Options<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for Options<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let r = self.rest?;
        let (mut opt, mut tail) = match r.split_once(':') {
            Some((a, b)) => (a, Some(b)),
            None => (r, None),
        };
        if opt.trim_start().starts_with("peer=") {
            let address_piece = |f: &str| {
                f.bytes()
                    .all(|b| b.is_ascii_hexdigit() || matches!(b, b'.' | b'[' | b']' | b'/'))
            };
            while let Some(t) = tail {
                let (next, after) = match t.split_once(':') {
                    Some((a, b)) => (a, Some(b)),
                    None => (t, None),
                };
                if !address_piece(next.trim_end()) {
                    break;
                }
                opt = &r[..opt.len() + 1 + next.len()];
                tail = after;
            }
        }
        self.rest = tail;
        Some(opt.trim())
    }
}

fn parse_rule(n: usize, text: &str) -> Result<FaultRule, FaultError> {
    let mut fields = text.splitn(3, ':');
    let calls_field = fields.next().unwrap_or("");
    let Some(fault_field) = fields.next() else {
        return Err(err(
            n,
            text,
            text,
            "incomplete fault rule (CALLS:FAULT[:OPTION...])",
            None,
        ));
    };
    let calls = if calls_field.trim() == "*" {
        CallSet::ANY
    } else {
        let mut set = CallSet::EMPTY;
        for tok in calls_field.split(',').map(str::trim) {
            match Call::from_name(tok) {
                Some(c) => set = set.with(c),
                None => {
                    let names = Call::ALL.iter().map(|c| c.name());
                    return Err(err(n, text, tok, "unknown call", suggest::closest(tok, names)));
                }
            }
        }
        set
    };
    let f = fault_field.trim();
    let mut jitter = 0;
    let fault = match f {
        "reset" => Fault::Reset,
        "eof" => Fault::Eof,
        "short" => Fault::Short(0),
        _ if f.starts_with("short=") => Fault::Short(num(n, text, &f[6..], 1)?),
        _ if f.starts_with("rate=") => Fault::Rate(
            parse_rate(&f[5..])
                .ok_or_else(|| err(n, text, &f[5..], "bad rate (e.g. rate=200KiB/s, rate=1MB/s)", None))?,
        ),
        _ if f.starts_with("delay=") => {
            let (d, j) = parse_delay(n, text, &f[6..])?;
            jitter = j;
            Fault::Delay(d)
        }
        _ if f.starts_with("stall=") => Fault::Stall {
            ns: positive_duration(n, text, &f[6..])?,
            reset: false,
        },
        _ if f.starts_with("slow_close=") => Fault::SlowClose(positive_duration(n, text, &f[11..])?),
        _ => match errno::parse(f) {
            Some(e) => Fault::Errno(e),
            None => {
                let upper_hint = suggest::closest(f, errno::names());
                let word_hint = suggest::closest(f.split('=').next().unwrap_or(f), FAULT_WORDS);
                return Err(err(
                    n,
                    text,
                    f,
                    "unknown fault (an errno name, short[=N], delay=DURATION, reset, eof, rate=RATE, stall=DURATION, slow_close=DURATION)",
                    word_hint.or(upper_hint),
                ));
            }
        },
    };
    let mut r = FaultRule {
        calls,
        fault,
        jitter,
        ..FaultRule::NONE
    };
    let options = Options { rest: fields.next() };
    let mut wait_given = false;
    for opt in options {
        let (k, v) = opt.split_once('=').unwrap_or((opt, ""));
        match k {
            "p" => {
                let p: f64 = v
                    .parse()
                    .map_err(|_| err(n, text, v, "expected a probability from 0 to 1", None))?;
                if !(0.0..=1.0).contains(&p) {
                    return Err(err(n, text, v, "expected a probability from 0 to 1", None));
                }
                r.p = if p >= 1.0 {
                    None
                } else {
                    Some((p * 18_446_744_073_709_551_616.0) as u64)
                };
            }
            "nth" => r.nth = Some(num(n, text, v, 1)?),
            "when" => {
                r.when =
                    Some(parse_when(v).ok_or_else(|| err(n, text, v, "bad when= (A, A+, A+S, A..B, A..B+S)", None))?)
            }
            "after" => r.after = num(n, text, v, 0)?,
            "max" => r.max = Some(num(n, text, v, 1)?),
            "port" => {
                let p = num(n, text, v, 1)?;
                r.port = Some(u16::try_from(p).map_err(|_| err(n, text, v, "bad port", None))?);
            }
            "delay" => {
                if !matches!(r.fault, Fault::Errno(_)) {
                    return Err(err(
                        n,
                        text,
                        opt,
                        "delay= as an option only follows an errno (wait, then fail)",
                        None,
                    ));
                }
                r.wait =
                    parse_duration(v).ok_or_else(|| err(n, text, v, "bad duration (e.g. 250us, 20ms, 1s)", None))?;
                wait_given = true;
            }
            "peer" => {
                r.peer = Some(parse_peer(v).ok_or_else(|| err(n, text, v, "bad peer= (ADDR or ADDR/PREFIX)", None))?)
            }
            "unfaithful" if v.is_empty() => r.unfaithful = true,
            "then" => {
                let Fault::Stall { ns, .. } = r.fault else {
                    return Err(err(n, text, opt, "then= only follows stall=DURATION", None));
                };
                let reset = match v {
                    "timeout" => false,
                    "reset" => true,
                    _ => {
                        return Err(err(
                            n,
                            text,
                            v,
                            "a stall ends with then=timeout (ETIMEDOUT) or then=reset (ECONNRESET)",
                            suggest::closest(v, ["timeout", "reset"]),
                        ))
                    }
                };
                r.fault = Fault::Stall { ns, reset };
            }
            "conn" => r.conn = Some(num(n, text, v, 1)?),
            "conn_nth" => r.conn_nth = Some(num(n, text, v, 1)?),
            "after_bytes" => r.after_bytes = Some(num(n, text, v, 0)?),
            "from" | "for" => {
                let ms =
                    parse_span_ms(v).ok_or_else(|| err(n, text, v, "bad duration (e.g. 500ms, 5s, 2m, 1h)", None))?;
                if k == "from" {
                    r.from_ms = ms;
                } else {
                    r.for_ms = Some(ms);
                }
            }
            "fd" => {
                r.fd = match FdFilter::NAMES.iter().position(|&x| x == v) {
                    Some(i) => FdFilter::ALL[i],
                    None => return Err(err(n, text, v, "unknown fd kind", suggest::closest(v, FdFilter::NAMES))),
                }
            }
            _ => return Err(err(n, text, opt, "unknown option", suggest::closest(k, OPTION_WORDS))),
        }
    }
    // `*` names every hooked call: short and eof then mean every call they can act on (a list
    // that names another call explicitly is still an error below).
    if calls_field.trim() == "*" {
        r.calls = Call::ALL
            .iter()
            .filter(|c| c.in_fault_star())
            .filter(|c| match r.fault {
                Fault::Eof => is_read_family(**c),
                Fault::Short(_) | Fault::Rate(_) | Fault::Stall { .. } => !matches!(c, Call::Shutdown | Call::Close),
                Fault::SlowClose(_) => **c == Call::Close,
                _ => true,
            })
            .fold(CallSet::EMPTY, |s, c| s.with(*c));
    }
    if let Some(c) = r.calls.iter().find(|c| !c.takes_faults()) {
        return Err(err(
            n,
            text,
            c.name(),
            "faults on this call are not supported (getpeername)",
            None,
        ));
    }
    let attempt = |c: &Call| matches!(c, Call::Connect | Call::Accept);
    let bad_call = match r.fault {
        Fault::Eof => r.calls.iter().find(|c| !is_read_family(*c)).map(|c| {
            (
                c,
                "eof applies to the read family only (read, readv, recv, recvfrom, recvmsg), not",
            )
        }),
        Fault::Short(_) => r
            .calls
            .iter()
            .find(|c| !(c.in_fault_star() || *c == Call::Sendfile) || *c == Call::Shutdown || *c == Call::Close)
            .map(|c| {
                let problem = if matches!(c, Call::Shutdown | Call::Close) {
                    "short applies to the read and write families only, not"
                } else {
                    // sendfile is a write (its socket end cut as a write is); splice's socket
                    // may be either end, and the mmsg calls count messages, not bytes.
                    "short is not made on connect, accept, splice or the mmsg calls, not"
                };
                (c, problem)
            }),
        Fault::Reset => r.calls.iter().find(attempt).map(|c| {
            (
                c,
                "reset needs a connection; connect and accept take an errno or delay= only, not",
            )
        }),
        Fault::Errno(e) => r.calls.iter().find_map(|c| {
            call_errnos(c)
                .filter(|(ok, _)| !ok.contains(&e))
                .map(|(_, why)| (c, why))
        }),
        Fault::Delay(_) => None,
        Fault::Rate(_) => r
            .calls
            .iter()
            .find(|c| !(c.in_fault_star() || *c == Call::Sendfile) || *c == Call::Shutdown || *c == Call::Close)
            .map(|c| (c, "rate paces the read and write families only, not")),
        Fault::Stall { .. } => r
            .calls
            .iter()
            .find(|c| !c.in_fault_star() || *c == Call::Shutdown || *c == Call::Close)
            .map(|c| (c, "stall starts on the read and write families only, not")),
        Fault::SlowClose(_) => r
            .calls
            .iter()
            .find(|c| *c != Call::Close)
            .map(|c| (c, "slow_close applies to close only, not")),
    };
    if let Some((c, problem)) = bad_call {
        // An errno refused names the errno; a fault refused names the call.
        let token = if matches!(r.fault, Fault::Errno(_)) {
            f
        } else {
            c.name()
        };
        return Err(err(n, text, token, problem, None));
    }
    if r.fault == Fault::Errno(libc::ETIMEDOUT) && r.calls.contains(Call::Connect) && !wait_given {
        // A blocking connect times out only after the SYN retries: Linux's default, unless
        // told; a rule that names other calls too must say how long.
        if r.calls != CallSet::EMPTY.with(Call::Connect) {
            return Err(err(
                n,
                text,
                f,
                "connect's ETIMEDOUT comes after the SYN retries: with other calls in the rule, give delay= (e.g. delay=127s)",
                None,
            ));
        }
        r.wait = SYN_TIMEOUT_NS;
    }
    // A stall is a TCP connection's (its segments go unanswered): a datagram is lost or not,
    // and a unix socket has no path to stall.
    if matches!(r.fault, Fault::Stall { .. }) && matches!(r.fd, FdFilter::Udp | FdFilter::Unix) {
        return Err(err(
            n,
            text,
            text.find("fd=").map_or(text, |i| text[i..].split(':').next().unwrap_or(text)),
            "stall is refused (only a TCP connection stalls: a datagram is lost or not, and a unix socket has no network path) for",
            None,
        ));
    }
    // Linux never cuts a datagram or a seqpacket message, and a unix stream read ends only
    // where a write did: `short` acts on TCP (see `handle::faithful`).
    if matches!(r.fault, Fault::Short(_)) && !r.unfaithful && matches!(r.fd, FdFilter::Udp | FdFilter::Unix) {
        return Err(err(
            n,
            text,
            text.find("fd=").map_or(text, |i| text[i..].split(':').next().unwrap_or(text)),
            "short is refused (Linux never cuts a datagram or a seqpacket message, and a unix stream read ends only where a write ended; add :unfaithful to cut anyway) for",
            None,
        ));
    }
    Ok(r)
}

/// Parses fault rules; empty rules (`;;`, a trailing `;`) are skipped.
pub fn parse(spec: &str) -> Result<FaultSet, FaultError> {
    let mut set = FaultSet::EMPTY;
    for (i, text) in spec.split(';').map(str::trim).filter(|r| !r.is_empty()).enumerate() {
        if i >= MAX_RULES {
            return Err(err(i + 1, text, text, "too many fault rules (at most 16)", None));
        }
        set.rules[i] = parse_rule(i + 1, text)?;
        set.n = i + 1;
        if set.rules().iter().filter(|r| r.conn_nth.is_some()).count() > MAX_CONN_COUNTED {
            return Err(err(
                i + 1,
                text,
                "conn_nth",
                "too many rules with conn_nth (at most 4 in a set)",
                None,
            ));
        }
    }
    Ok(set)
}

/// SplitMix64's finaliser.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A rule's key: everything its random numbers depend on besides k.
pub fn rule_key(seed: u64, rule: usize) -> u64 {
    mix(mix(seed) ^ (rule as u64).wrapping_mul(0xd6e8_feb8_6659_fd93))
}

/// The stream of a process's `fork`-th child (1-based): its decisions' seed, from its place in
/// the process tree.
pub fn child_stream(parent: u64, fork: u64) -> u64 {
    mix(parent ^ mix(fork.wrapping_mul(0xe703_7ed1_a0b4_28db)))
}

#[inline]
pub fn draw_keyed(key: u64, k: u64, stream: u64) -> u64 {
    mix(key ^ k.wrapping_mul(0xa076_1d64_78bd_642f) ^ stream.wrapping_mul(0x8ebc_6af0_9c88_c6e3))
}

/// How many bytes a `short` fault lets through out of `len`, or None when it cannot shorten.
#[cfg(test)]
pub fn short_limit(fault_n: u64, len: usize, seed: u64, rule: usize, k: u64) -> Option<usize> {
    short_limit_keyed(fault_n, len, rule_key(seed, rule), k)
}

pub fn short_limit_keyed(fault_n: u64, len: usize, key: u64, k: u64) -> Option<usize> {
    if len < 2 {
        return None;
    }
    if fault_n > 0 {
        return ((fault_n as usize) < len).then_some(fault_n as usize);
    }
    Some(1 + (draw_keyed(key, k, 1) % (len as u64 - 1)) as usize)
}

/// The errnos that end a connection (which a faithful injection makes true, `handle::faithful`).
pub fn ends_connection(e: i32) -> bool {
    matches!(
        e,
        libc::ECONNRESET
            | libc::ETIMEDOUT
            | libc::EPIPE
            | libc::ENOTCONN
            | libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::ECONNABORTED
    )
}

/// One rule in words, for `--check` and `ERRSHIM_LOG_LEVEL=info` (configuration time only).
pub fn explain(r: &FaultRule) -> String {
    let calls: Vec<&str> = r.calls.iter().map(|c| c.name()).collect();
    let calls = if r.calls == CallSet::ANY {
        "every hooked call".to_string()
    } else {
        calls.join(",")
    };
    let what = match r.fault {
        Fault::Errno(e) if r.wait > 0 => format!(
            "wait {} ms, then fail with {} without performing it",
            r.wait / 1_000_000,
            errno::Name(e)
        ),
        Fault::Errno(e) => format!("fail with {} without performing it", errno::Name(e)),
        Fault::Short(0) => "transfer a random number of bytes from 1 to len-1".to_string(),
        Fault::Short(n) => format!("transfer at most {n} bytes"),
        Fault::Delay(ns) if r.jitter > 0 => format!(
            "wait {} to {} us (uniform), then perform it",
            (ns - r.jitter) / 1000,
            (ns + r.jitter) / 1000
        ),
        Fault::Delay(ns) => format!("wait {} us, then perform it", ns / 1000),
        Fault::Rate(bps) => format!("pace each direction of the connection to {bps} bytes/s (wait, and move at most a tenth of a second's worth where Linux could cut)"),
        Fault::Stall { ns, reset } => format!(
            "stall the TCP connection for {} ms (no new data either way), then end it with {}",
            ns / 1_000_000,
            if reset { "ECONNRESET (the peer's RST)" } else { "ETIMEDOUT (a retransmission timeout)" }
        ),
        Fault::SlowClose(ns) => format!("close at once; the peer sees the FIN {} ms later", ns / 1_000_000),
        Fault::Reset => "abort the TCP connection (RST), then perform it".to_string(),
        Fault::Eof => "return 0 (end of file) without reading".to_string(),
    };
    let what = match (r.fault, r.unfaithful) {
        (_, true) => format!("{what}, also where Linux never would (unfaithful)"),
        (Fault::Short(_), false) => format!(
            "{what}, where Linux could (TCP: reads while the peer can still send, non-blocking writes; the rest then wakes the program)"
        ),
        (Fault::Errno(e), false) => match e {
            libc::EAGAIN => format!("{what}, where Linux could (non-blocking TCP calls; readiness then signalled again)"),
            libc::EINTR => format!("{what}, where Linux could (blocking calls)"),
            _ if ends_connection(e) => format!(
                "{what}, where Linux could (a TCP connection, aborted for real first; UDP for ICMP errors; not unix sockets)"
            ),
            _ => what,
        },
        (Fault::Eof, false) => format!(
            "{what}, where Linux could (a stream with nothing queued, made true with shutdown(SHUT_RD); a datagram call that asks for no address)"
        ),
        _ => what,
    };
    let mut when = Vec::new();
    if let Some(p) = r.p {
        when.push(format!(
            "with probability {:.4}",
            p as f64 / 18_446_744_073_709_551_616.0
        ));
    }
    if let Some(n) = r.nth {
        when.push(format!("only matching call number {n}"));
    }
    if let Some(w) = r.when {
        let last = if w.last == u64::MAX {
            "on".to_string()
        } else {
            format!("to {}", w.last)
        };
        when.push(format!("matching calls {} {last}, every {}", w.first, w.step));
    }
    if r.after > 0 {
        when.push(format!("after the first {} matching calls", r.after));
    }
    if let Some(m) = r.max {
        when.push(format!("at most {m} times"));
    }
    if let Some(p) = r.port {
        when.push(format!("local or peer port {p}"));
    }
    if let Some(p) = r.peer {
        when.push(format!("peer in {}/{}", p.ip, p.prefix));
    }
    if let Some(c) = r.conn {
        when.push(format!("only on connection number {c}"));
    }
    if let Some(c) = r.conn_nth {
        when.push(format!("only matching call number {c} of each connection"));
    }
    if let Some(b) = r.after_bytes {
        when.push(format!("once {b} bytes have moved on the connection"));
    }
    if r.windowed() {
        let end = r
            .for_ms
            .map_or("on".to_string(), |f| format!("to {} ms", r.from_ms.saturating_add(f)));
        when.push(format!("from {} ms after errshim's start {end}", r.from_ms));
    }
    let when = if when.is_empty() {
        "every matching call".to_string()
    } else {
        when.join(", ")
    };
    format!("{calls} on fd={}: {what}; {when}", r.fd.name())
}

/// A call described for `errshim --check --call`: what each fault rule would do with it.
/// `CALL [fd=KIND] [port=N] [peer=ADDR] [conn=N] [conn_k=N] [k=N] [bytes=N] [at=DURATION]`:
/// the descriptor's kind (`tcp`, `udp`, `unix`, `file`, or an event's kind: `tcp6`,
/// `unix-dgram`, ...; default `tcp`), a local or peer port and the peer's address (none by
/// default), the connection's number (1) and the call's number on it (1), the call's number
/// among the rule's matching calls (1), the bytes moved on the connection before it (0) and
/// the time since errshim's start (0s). Configuration time only.
#[derive(Clone, Debug, PartialEq)]
pub struct CallProbe {
    pub call: Call,
    pub kind: crate::sys::socket::Kind,
    pub port: Option<u16>,
    pub peer: Option<IpAddr>,
    pub conn: u64,
    pub conn_k: u64,
    pub k: u64,
    pub bytes: u64,
    pub at_ms: u64,
}

const PROBE_WORDS: [&str; 8] = ["fd", "port", "peer", "conn", "conn_k", "k", "bytes", "at"];

/// What is wrong in a call description: the problem, the token, a suggestion.
pub type ProbeError = (&'static str, String, Option<&'static str>);

/// Parses a call description (see `CallProbe`).
pub fn parse_probe(s: &str) -> Result<CallProbe, ProbeError> {
    use crate::sys::socket::Kind;
    let mut words = s.split_whitespace();
    let name = words.next().ok_or((
        "empty call description (e.g. 'read fd=tcp port=80')",
        String::new(),
        None,
    ))?;
    let call = Call::from_name(name).ok_or_else(|| {
        let names = Call::ALL.iter().map(|c| c.name());
        ("unknown call", name.to_string(), suggest::closest(name, names))
    })?;
    let mut p = CallProbe {
        call,
        kind: Kind::Tcp4,
        port: None,
        peer: None,
        conn: 1,
        conn_k: 1,
        k: 1,
        bytes: 0,
        at_ms: 0,
    };
    let kinds = (0..=10u8).map(Kind::from_u8).filter(|k| *k != Kind::Unknown);
    for w in words {
        let (key, v) = w.split_once('=').unwrap_or((w, ""));
        let bad = |problem: &'static str| (problem, w.to_string(), None);
        let n = |min: u64| {
            v.parse::<u64>().ok().filter(|&n| n >= min).ok_or_else(|| {
                bad(if min > 0 {
                    "expected a whole number >= 1"
                } else {
                    "expected a whole number"
                })
            })
        };
        match key {
            "fd" => {
                p.kind = match v {
                    "tcp" => Kind::Tcp4,
                    "udp" => Kind::Udp4,
                    "unix" => Kind::UnixStream,
                    "file" => Kind::NotSocket,
                    _ => kinds.clone().find(|k| k.name() == v).ok_or_else(|| {
                        let names = ["tcp", "udp", "unix", "file"]
                            .into_iter()
                            .chain(kinds.clone().map(Kind::name));
                        ("unknown fd kind", w.to_string(), suggest::closest(v, names))
                    })?,
                }
            }
            "port" => p.port = Some(u16::try_from(n(1)?).map_err(|_| bad("bad port"))?),
            "peer" => {
                let a = v.trim_start_matches('[').trim_end_matches(']');
                p.peer = Some(a.parse().map_err(|_| bad("bad peer address"))?);
            }
            "conn" => p.conn = n(1)?,
            "conn_k" => p.conn_k = n(1)?,
            "k" => p.k = n(1)?,
            "bytes" => p.bytes = n(0)?,
            "at" => p.at_ms = parse_span_ms(v).ok_or_else(|| bad("bad duration (e.g. at=5s)"))?,
            _ => {
                return Err((
                    "unknown word in the call description",
                    w.to_string(),
                    suggest::closest(key, PROBE_WORDS),
                ))
            }
        }
    }
    Ok(p)
}

/// What rule `r` does with the described call: that it fires (or may, with `p=`), or the
/// first of its options that excludes the call, in the order the fault engine asks them
/// (configuration time only).
pub fn verdict(r: &FaultRule, c: &CallProbe) -> String {
    let ip = c.kind.is_tcp() || c.kind.is_udp();
    let excluded = |why: String| format!("not injected: {why}");
    if !r.calls.contains(c.call) {
        return excluded(format!("{} is not one of its calls", c.call.name()));
    }
    if !r.fd.matches(c.kind) {
        return excluded(format!("fd={} leaves out {}", r.fd.name(), c.kind.name()));
    }
    if !ip && (r.port.is_some() || r.peer.is_some()) {
        return excluded(format!(
            "port= and peer= need a TCP or UDP socket, not {}",
            c.kind.name()
        ));
    }
    if let Some(port) = r.port {
        if c.port != Some(port) {
            return excluded(format!(
                "port={port} (the call's port: {})",
                c.port.map_or("none".to_string(), |p| p.to_string())
            ));
        }
    }
    if let Some(pf) = r.peer {
        if !c.peer.is_some_and(|a| pf.matches(a)) {
            return excluded(format!(
                "peer={}/{} (the call's peer: {})",
                pf.ip,
                pf.prefix,
                c.peer.map_or("none".to_string(), |a| a.to_string())
            ));
        }
    }
    if r.conn.is_some_and(|n| n != c.conn) {
        return excluded(format!(
            "conn={} (the call is on connection {})",
            r.conn.unwrap_or(0),
            c.conn
        ));
    }
    let matched = format!("matches (k={})", c.k);
    let t = Triggers::of(r);
    if !t.can_fire() {
        return format!("{matched}, not injected: the rule can never fire (dropped)");
    }
    let but = |why: String| format!("{matched}, not injected: {why}");
    if c.k <= r.after {
        return but(format!("after={} spares it", r.after));
    }
    if r.nth.is_some_and(|n| n != c.k) {
        return but(format!("nth={}", r.nth.unwrap_or(0)));
    }
    if let Some(w) = r.when {
        if c.k < w.first || c.k > w.last || !(c.k - w.first).is_multiple_of(w.step) {
            return but("its when= leaves out this k".to_string());
        }
    }
    if r.conn_nth.is_some_and(|n| n != c.conn_k) {
        return but(format!(
            "conn_nth={} (the call is number {} on its connection)",
            r.conn_nth.unwrap_or(0),
            c.conn_k
        ));
    }
    if r.after_bytes.is_some_and(|n| c.bytes < n) {
        return but(format!(
            "after_bytes={} (bytes={} before it)",
            r.after_bytes.unwrap_or(0),
            c.bytes
        ));
    }
    if !r.in_window(c.at_ms) {
        return but(format!("from= and for= leave out at={}ms", c.at_ms));
    }
    match r.p {
        Some(p) => format!(
            "{matched}, injected with probability {:.4}",
            p as f64 / 18_446_744_073_709_551_616.0
        ),
        None => format!("{matched}, injected"),
    }
}

/// The fault as text for events: `ECONNRESET`, `short=17`, `delay=20ms`, `reset`, `eof`.
pub fn describe(f: Fault, out: &mut impl core::fmt::Write) -> core::fmt::Result {
    match f {
        Fault::Errno(e) => write!(out, "{}", errno::Name(e)),
        Fault::Short(0) => out.write_str("short"),
        Fault::Short(n) => write!(out, "short={n}"),
        Fault::Delay(ns) => {
            out.write_str("delay=")?;
            describe_ns(ns, out)
        }
        Fault::Rate(bps) => write!(out, "rate={bps}B/s"),
        Fault::Reset => out.write_str("reset"),
        Fault::Eof => out.write_str("eof"),
        Fault::Stall { ns, reset } => {
            out.write_str("stall=")?;
            describe_ns(ns, out)?;
            out.write_str(if reset { ":then=reset" } else { "" })
        }
        Fault::SlowClose(ns) => {
            out.write_str("slow_close=")?;
            describe_ns(ns, out)
        }
    }
}

/// A duration as the grammar writes it: `20ms`, `1s`.
fn describe_ns(ns: u64, out: &mut impl core::fmt::Write) -> core::fmt::Result {
    match ns {
        _ if ns.is_multiple_of(1_000_000_000) => write!(out, "{}s", ns / 1_000_000_000),
        _ if ns.is_multiple_of(1_000_000) => write!(out, "{}ms", ns / 1_000_000),
        _ if ns.is_multiple_of(1_000) => write!(out, "{}us", ns / 1_000),
        _ => write!(out, "{ns}ns"),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn faults_on_connect_accept_sendfile_splice_mmsg_are_named_and_star_leaves_them_out() {
        use super::Call;
        let calls = |spec: &str| super::parse(spec).unwrap_or_else(|e| panic!("{spec}: {e}")).rules[0].calls;
        for (spec, c) in [
            ("connect:ECONNREFUSED", Call::Connect),
            ("accept4:EMFILE", Call::Accept),
            ("accept:ECONNABORTED:nth=1", Call::Accept),
            ("sendfile64:EPIPE", Call::Sendfile),
            ("splice:delay=1ms", Call::Splice),
            ("sendmmsg,recvmmsg:ECONNREFUSED", Call::Recvmmsg),
            ("sendfile,splice,sendmmsg,recvmmsg:reset", Call::Splice),
            ("connect,accept:delay=20ms", Call::Connect),
        ] {
            assert!(calls(spec).contains(c), "{spec}");
        }
        // connect's ETIMEDOUT waits as long as Linux's SYN retries, unless told.
        assert_eq!(one("connect:ETIMEDOUT").wait, SYN_TIMEOUT_NS);
        assert_eq!(one("connect:ETIMEDOUT:delay=20ms").wait, 20_000_000);
        assert_eq!(one("connect:ECONNREFUSED").wait, 0);
        assert_eq!(one("read:ECONNRESET:delay=1ms").wait, 1_000_000);
        for (spec, token, problem) in [
            ("connect:EIO", "EIO", "connect cannot return this errno"),
            ("connect:EINPROGRESS", "EINPROGRESS", "connect cannot return"),
            ("read,accept:EPIPE", "EPIPE", "accept cannot return"),
            ("accept:EAGAIN", "EAGAIN", "accept cannot return"),
            ("sendfile:ENOTCONN", "ENOTCONN", "sendfile cannot return"),
            ("splice:EBADF", "EBADF", "splice cannot return"),
            ("sendmmsg:EIO", "EIO", "sendmmsg cannot return"),
            ("recvmmsg:EPIPE", "EPIPE", "recvmmsg cannot return"),
            ("connect:reset", "connect", "reset needs a connection"),
            ("accept:reset", "accept", "reset needs a connection"),
            ("connect:short", "connect", "short is not made"),
            ("splice:short", "splice", "short is not made"),
            ("sendmmsg:short=1", "sendmmsg", "short is not made"),
            ("splice:eof", "splice", "eof applies"),
            ("getpeername:ENOTCONN", "getpeername", "not supported"),
            (
                "read:delay=1ms:delay=2ms",
                "delay=2ms",
                "delay= as an option only follows an errno",
            ),
            ("connect:ETIMEDOUT:delay=soon", "soon", "bad duration"),
            ("connect,send:ETIMEDOUT", "ETIMEDOUT", "give delay="),
        ] {
            let e = super::parse(spec).unwrap_err();
            assert!(
                e.to_string().contains(problem) && e.token.as_str() == token && e.rule == 1,
                "{spec}: {e}"
            );
        }
        let star = calls("*:EIO");
        let named_only = Call::ALL.iter().filter(|c| !star.contains(**c)).count();
        assert_eq!(
            named_only, 7,
            "* leaves out connect, accept, sendfile, splice, the mmsg calls, getpeername"
        );
        assert!(!star.contains(Call::Connect) && !star.contains(Call::Sendmmsg));
        assert!(star.contains(Call::Read) && star.contains(Call::Close));
        assert!(!calls("*:delay=1ms").contains(Call::Connect) && !calls("*:short").contains(Call::Sendfile));
    }

    #[test]
    fn can_fire_agrees_with_firing() {
        let specs = [
            "*:EIO",
            "*:EIO:p=0",
            "*:EIO:p=0.5",
            "*:EIO:nth=3",
            "*:EIO:nth=3:after=3",
            "*:EIO:nth=4:after=3",
            "*:EIO:nth=5:when=2..9+3",
            "*:EIO:nth=6:when=2..9+3",
            "*:EIO:when=2..9+3:after=8",
            "*:EIO:when=2..9+3:after=7",
            "*:EIO:when=4..4:after=3",
            "*:EIO:when=4..4:after=4",
            "*:EIO:when=10:after=30",
            "*:EIO:nth=2:p=0",
        ];
        for spec in specs {
            let set = parse(spec).unwrap_or_else(|e| panic!("{spec}: {e:?}"));
            let t = Triggers::of(&set.rules()[0]);
            let fires = (1..=200).any(|k| Triggers { always: true, ..t }.fire(0, k) && (t.always || t.p != 0));
            assert_eq!(t.can_fire(), fires, "{spec}");
        }
    }
    use super::*;

    fn one(spec: &str) -> FaultRule {
        let s = parse(spec).unwrap();
        assert_eq!(s.n, 1);
        s.rules[0]
    }

    #[test]
    fn grammar() {
        let r = one("read,recv:ECONNRESET:p=0.5:after=2:max=3:fd=tcp:port=8080:peer=127.0.0.0/8");
        assert_eq!(r.fault, Fault::Errno(libc::ECONNRESET));
        assert!(r.calls.contains(Call::Read) && r.calls.contains(Call::Recv) && !r.calls.contains(Call::Write));
        assert_eq!((r.after, r.max, r.fd, r.port), (2, Some(3), FdFilter::Tcp, Some(8080)));
        assert!(r.p.unwrap() > (1u64 << 62) && r.p.unwrap() < (3u64 << 62));
        assert!(r.peer.unwrap().matches("127.1.2.3".parse().unwrap()));
        assert!(!r.peer.unwrap().matches("10.0.0.1".parse().unwrap()));
        assert_eq!(one("write:short=7").fault, Fault::Short(7));
        assert_eq!(one("*:delay=20ms").fault, Fault::Delay(20_000_000));
        assert_eq!(one("send:reset:nth=3").nth, Some(3));
        assert_eq!(one("read:eof:p=1").p, None);
        assert_eq!(one("read:eof:p=0").p, Some(0));
        assert_eq!(parse(" ; ").unwrap().n, 0);
    }

    #[test]
    fn when_syntax() {
        let w = |s: &str| parse_when(s).unwrap();
        let hits = |s: &str| (1..=12).filter(|&k| w(s).hits(k)).collect::<Vec<_>>();
        assert_eq!(hits("3"), vec![3]);
        assert_eq!(hits("3+"), vec![3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(hits("3+4"), vec![3, 7, 11]);
        assert_eq!(hits("2..5"), vec![2, 3, 4, 5]);
        assert_eq!(hits("2..9+3"), vec![2, 5, 8]);
        for bad in ["0", "5..2", "x", "3+0", "1..", ""] {
            assert!(parse_when(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn triggers_combine() {
        let r = one("read:EIO:after=2:when=1+2:max=9");
        let ks: Vec<u64> = (1..=10).filter(|&k| r.triggers(1, 1, k)).collect();
        assert_eq!(ks, vec![3, 5, 7, 9]);
        let r = one("read:EIO:nth=4");
        assert_eq!((1..=10).filter(|&k| r.triggers(1, 1, k)).collect::<Vec<_>>(), vec![4]);
    }

    #[test]
    fn probability_is_reproducible() {
        let r = one("read:EIO:p=0.3");
        let run = |seed| (1..=2000).filter(|&k| r.triggers(seed, 1, k)).collect::<Vec<_>>();
        let a = run(42);
        assert_eq!(a, run(42));
        assert_ne!(a, run(43));
        assert!((450..750).contains(&a.len()), "{}", a.len());
    }

    #[test]
    fn streams_follow_the_place_in_the_tree() {
        let r = one("read:EIO:p=0.5");
        let run = |stream| (1..=64).filter(|&k| r.triggers(stream, 1, k)).collect::<Vec<_>>();
        // The root, its first three forks, and the first fork of its first fork.
        let root = 42;
        let [a, b, c] = [1, 2, 3].map(|i| child_stream(root, i));
        let grandchild = child_stream(a, 1);
        let all = [root, a, b, c, grandchild].map(run);
        for (i, x) in all.iter().enumerate() {
            for y in &all[i + 1..] {
                assert_ne!(x, y, "every process of the tree decides differently");
            }
        }
        assert_eq!(child_stream(root, 2), b, "the same place, the same stream");
        assert_ne!(child_stream(43, 2), b);
    }

    #[test]
    fn rate_parses_units_and_applies_to_transfers() {
        assert_eq!(parse_rate("200KiB/s"), Some(204_800));
        assert_eq!(parse_rate("1MB/s"), Some(1_000_000));
        assert_eq!(parse_rate("1.5MiB/s"), Some(1_572_864));
        assert_eq!(parse_rate("0B/s"), None);
        assert_eq!(parse_rate("200KiB"), None);
        let set = parse("*:rate=1MB/s").unwrap();
        assert_eq!(set.rules()[0].fault, Fault::Rate(1_000_000));
        assert!(!set.rules()[0].calls.contains(Call::Close));
        assert!(parse("shutdown:rate=1MB/s")
            .unwrap_err()
            .to_string()
            .contains("rate paces"));
        assert!(parse("read:rate=fast").unwrap_err().to_string().contains("bad rate"));
    }

    #[test]
    fn short_is_refused_where_linux_never_cuts() {
        for spec in ["send:short:fd=udp", "read:short=10:fd=unix:p=0.5"] {
            let e = parse(spec).unwrap_err();
            assert!(e.token.as_str().starts_with("fd="), "{e}");
            assert!(e.to_string().contains("never cuts a datagram"), "{e}");
            assert!(e.to_string().contains("add :unfaithful"), "{e}");
        }
        let r = parse("send:short:fd=udp:unfaithful").unwrap();
        assert!(r.rules()[0].unfaithful);
        assert!(!parse("send:short").unwrap().rules()[0].unfaithful);
        assert!(explain(&parse("send:short").unwrap().rules()[0]).contains("where Linux could"));
        assert_eq!(
            parse("send:EIO:unfaithful=1").unwrap_err().token.as_str(),
            "unfaithful=1"
        );
    }

    #[test]
    fn errors_name_token_and_suggest() {
        let e = parse("read:ECONNRESTE").unwrap_err();
        assert_eq!((e.token.as_str(), e.suggestion), ("ECONNRESTE", Some("ECONNRESET")));
        let e = parse("read:shrot").unwrap_err();
        assert_eq!(e.suggestion, Some("short"));
        let e = parse("read:EIO:ppp=0.1").unwrap_err();
        assert_eq!((e.problem, e.token.as_str()), ("unknown option", "ppp=0.1"));
        let e = parse("read:EIO:p=1.5").unwrap_err();
        assert!(e.problem.contains("probability"));
        let e = parse("write:eof").unwrap_err();
        assert!(e.problem.starts_with("eof applies"));
        let e = parse("close:short").unwrap_err();
        assert_eq!(e.token.as_str(), "close");
        // `*` with short or eof: the calls they apply to, not an error.
        let r = one("*:short");
        assert!(r.calls.contains(Call::Writev) && r.calls.contains(Call::Recvmsg));
        assert!(!r.calls.contains(Call::Shutdown) && !r.calls.contains(Call::Close));
        let r = one("*:eof");
        assert!(r.calls.contains(Call::Read) && r.calls.contains(Call::Recvfrom) && !r.calls.contains(Call::Send));
        let every = one("*:EIO").calls;
        assert!(Call::ALL.iter().all(|c| every.contains(*c) == c.in_fault_star()));
        let e = parse("read:EIO;read:delay=5parsecs").unwrap_err();
        assert_eq!(e.rule, 2);
        assert!(parse("read").is_err());
        let too_many = vec!["read:EIO"; 17].join(";");
        assert!(parse(&too_many).is_err());
    }

    #[test]
    fn connection_byte_and_time_options() {
        let r = one("write:reset:conn=2:conn_nth=3:after_bytes=100000:from=1.5s:for=2m");
        assert_eq!((r.conn, r.conn_nth, r.after_bytes), (Some(2), Some(3), Some(100_000)));
        assert_eq!((r.from_ms, r.for_ms), (1500, Some(120_000)));
        assert!(!r.in_window(1499) && r.in_window(1500) && r.in_window(121_499) && !r.in_window(121_500));
        let open = one("read:EIO:from=1h");
        assert!(open.windowed() && !open.in_window(3_599_999) && open.in_window(u64::MAX));
        assert!(!one("read:EIO").windowed() && one("read:EIO").in_window(0));
        assert_eq!(one("read:EIO:after_bytes=0").after_bytes, Some(0));
        // A window of no time can never fire: the rule is dropped like `p=0`.
        assert!(!Triggers::of(&one("read:EIO:for=0s")).can_fire());
        assert!(Triggers::of(&one("read:EIO:for=1ms")).can_fire());
        for (spec, token, suggestion) in [
            ("read:EIO:conn_nht=2", "conn_nht=2", Some("conn_nth")),
            ("read:EIO:after_byte=9", "after_byte=9", Some("after_bytes")),
            ("read:EIO:fro=1s", "fro=1s", Some("from")),
            ("read:EIO:conn=0", "0", None),
            ("read:EIO:conn_nth=x", "x", None),
            ("read:EIO:from=5", "5", None),
            ("read:EIO:for=-1s", "-1s", None),
        ] {
            let e = parse(spec).unwrap_err();
            assert_eq!((e.token.as_str(), e.suggestion), (token, suggestion), "{spec}: {e}");
        }
        let five = ["read:EIO:conn_nth=1"; 5].join(";");
        let e = parse(&five).unwrap_err();
        assert_eq!((e.rule, e.token.as_str()), (5, "conn_nth"), "{e}");
        assert!(parse(&["read:EIO:conn_nth=1"; 4].join(";")).is_ok());
    }

    #[test]
    fn delay_jitter() {
        let r = one("send:delay=20ms~5ms");
        assert_eq!((r.fault, r.jitter), (Fault::Delay(20_000_000), 5_000_000));
        assert_eq!(one("send:delay=1ms~1ms").jitter, 1_000_000, "down to no delay at all");
        let e = parse("send:delay=1ms~2ms").unwrap_err();
        assert!(e.problem.contains("jitter larger"), "{e}");
        assert_eq!(parse("send:delay=20ms~5x").unwrap_err().token.as_str(), "5x");
        assert!(parse("send:delay=59m~2m").is_err(), "under an hour in all");
        let key = rule_key(7, 1);
        let ds: Vec<u64> = (1..=2000).map(|k| jittered(20_000_000, 5_000_000, key, k)).collect();
        assert!(ds
            .iter()
            .all(|d| (15_000_000..=25_000_000).contains(d) && d % 1000 == 0));
        assert!(
            ds.iter().any(|&d| d < 16_000_000) && ds.iter().any(|&d| d > 24_000_000),
            "spread"
        );
        let mean = ds.iter().sum::<u64>() / ds.len() as u64;
        assert!((19_500_000..20_500_000).contains(&mean), "{mean}");
        assert_eq!(
            ds,
            (1..=2000)
                .map(|k| jittered(20_000_000, 5_000_000, key, k))
                .collect::<Vec<_>>()
        );
        assert_ne!(
            ds[..20],
            (1..=20)
                .map(|k| jittered(20_000_000, 5_000_000, rule_key(8, 1), k))
                .collect::<Vec<_>>()[..]
        );
        assert_eq!(jittered(20_000_000, 0, key, 3), 20_000_000);
        assert!((1..500).all(|k| jittered(1000, 1000, key, k) <= 2000));
        assert!(
            (1..500).all(|k| jittered(7, 3, key, k).abs_diff(7) <= 3),
            "odd nanoseconds"
        );
        assert!(explain(&r).contains("wait 15000 to 25000 us"), "{}", explain(&r));
    }

    #[test]
    fn call_checks_name_the_option_that_excludes() {
        let call = |s: &str| parse_probe(s).unwrap();
        let v = |rule: &str, c: &str| verdict(&one(rule), &call(c));
        assert_eq!(v("read:EIO", "read"), "matches (k=1), injected");
        assert_eq!(v("read:EIO", "write"), "not injected: write is not one of its calls");
        assert_eq!(
            v("read:EIO:fd=unix", "read fd=tcp6"),
            "not injected: fd=unix leaves out tcp6"
        );
        assert_eq!(v("read:EIO:fd=any", "read fd=file"), "matches (k=1), injected");
        assert_eq!(
            v("read:EIO:port=80", "read"),
            "not injected: port=80 (the call's port: none)"
        );
        assert_eq!(
            v("read:EIO:port=80", "read port=80 fd=unix"),
            "not injected: port= and peer= need a TCP or UDP socket, not unix-stream"
        );
        assert_eq!(
            v("read:EIO:peer=10.0.0.0/8", "read peer=10.1.1.1"),
            "matches (k=1), injected"
        );
        assert!(v("read:EIO:peer=10.0.0.0/8", "read peer=[::1]").starts_with("not injected: peer=10.0.0.0/8"));
        assert_eq!(
            v("read:EIO:conn=2", "read conn=3"),
            "not injected: conn=2 (the call is on connection 3)"
        );
        assert_eq!(
            v("read:EIO:after=2", "read k=2"),
            "matches (k=2), not injected: after=2 spares it"
        );
        assert_eq!(v("read:EIO:nth=2", "read k=3"), "matches (k=3), not injected: nth=2");
        assert_eq!(
            v("read:EIO:when=2..9+3", "read k=4"),
            "matches (k=4), not injected: its when= leaves out this k"
        );
        assert_eq!(v("read:EIO:when=2..9+3", "read k=5"), "matches (k=5), injected");
        assert!(v("read:EIO:conn_nth=2", "read").contains("conn_nth=2 (the call is number 1 on its connection)"));
        assert_eq!(v("read:EIO:conn_nth=2", "read conn_k=2"), "matches (k=1), injected");
        assert!(v("read:EIO:after_bytes=10", "read bytes=9").ends_with("after_bytes=10 (bytes=9 before it)"));
        assert!(v("read:EIO:from=5s:for=1s", "read at=6s").ends_with("from= and for= leave out at=6000ms"));
        assert_eq!(v("read:EIO:from=5s:for=1s", "read at=5.5s"), "matches (k=1), injected");
        assert!(v("read:EIO:p=0", "read").ends_with("the rule can never fire (dropped)"));
        assert_eq!(
            v("read:EIO:p=0.5", "read"),
            "matches (k=1), injected with probability 0.5000"
        );
        for (bad, token, suggestion) in [
            ("raed", "raed", Some("read")),
            ("read fd=tpc", "fd=tpc", Some("tcp")),
            ("read prot=80", "prot=80", Some("port")),
            ("read port=0", "port=0", None),
            ("read peer=x", "peer=x", None),
            ("read at=5", "at=5", None),
            ("", "", None),
        ] {
            let (_, t, s) = parse_probe(bad).unwrap_err();
            assert_eq!((t.as_str(), s), (token, suggestion), "{bad}");
        }
    }

    #[test]
    fn short_limits() {
        assert_eq!(short_limit(5, 100, 1, 1, 1), Some(5));
        assert_eq!(short_limit(500, 100, 1, 1, 1), None);
        assert_eq!(short_limit(0, 1, 1, 1, 1), None);
        for k in 1..200 {
            let l = short_limit(0, 10, 7, 1, k).unwrap();
            assert!((1..10).contains(&l));
        }
    }

    #[test]
    fn durations_and_descriptions() {
        assert_eq!(parse_duration("250us"), Some(250_000));
        assert_eq!(parse_duration("1s"), Some(1_000_000_000));
        assert_eq!(parse_duration("1.5ms"), Some(1_500_000));
        assert_eq!(parse_duration("5"), None);
        let d = |f| {
            let mut s = String::new();
            describe(f, &mut s).unwrap();
            s
        };
        assert_eq!(d(Fault::Delay(20_000_000)), "delay=20ms");
        assert_eq!(d(Fault::Errno(libc::EPIPE)), "EPIPE");
        assert_eq!(d(Fault::Short(3)), "short=3");
    }
}
