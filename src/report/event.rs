//! One event: what was called, what the kernel answered, what errshim did about it, and what
//! is known about the connection. Formatted as one text line or one JSON object, on the stack.

use crate::observe::cause::{self, Cause};
use crate::policy::rules::{Action, Call};
use crate::sys::errno::Name;
use crate::sys::socket::{Addr, Kind};
use crate::text::fmtbuf::StackBuf;
use crate::text::json;
use crate::text::timefmt::Utc;
use core::fmt::Write;

/// The arguments of an interposed call that an event reports, as the caller passed them. The
/// pointers are the caller's and are never trusted: they are read only where the kernel has
/// just proven them valid (`proven`: the call succeeded) or after a probe (`memory`).
#[derive(Clone, Copy)]
pub struct CallArgs {
    pub fd: i32,
    /// `how` for shutdown.
    pub how: i32,
    /// Byte count for plain buffers.
    pub len: usize,
    pub buffers: Buffers,
    pub flags: i32,
    /// recvfrom's address buffer and its length (null: none).
    pub addr: *mut libc::sockaddr,
    pub alen: *mut libc::socklen_t,
}

/// Where a call's data is.
#[derive(Clone, Copy)]
pub enum Buffers {
    /// One buffer of `CallArgs::len` bytes (or none: shutdown, close).
    Plain,
    /// An iovec array and its count as passed (readv, writev).
    Iov(*const libc::iovec, i32),
    /// A msghdr (recvmsg, sendmsg).
    Msg(*const libc::msghdr),
}

/// At most this many iovecs are summed (the kernel's own limit, UIO_MAXIOV).
const MAX_IOV: usize = 1024;

impl CallArgs {
    pub const fn fd(fd: i32) -> Self {
        CallArgs {
            fd,
            how: 0,
            len: 0,
            buffers: Buffers::Plain,
            flags: 0,
            addr: core::ptr::null_mut(),
            alen: core::ptr::null_mut(),
        }
    }

    pub const fn buf(fd: i32, len: usize, flags: i32) -> Self {
        let mut a = Self::fd(fd);
        a.len = len;
        a.flags = flags;
        a
    }

    pub const fn iov(fd: i32, iov: *const libc::iovec, iovcnt: i32) -> Self {
        let mut a = Self::fd(fd);
        a.buffers = Buffers::Iov(iov, iovcnt);
        a
    }

    pub const fn msg(fd: i32, msg: *const libc::msghdr, flags: i32) -> Self {
        let mut a = Self::fd(fd);
        a.buffers = Buffers::Msg(msg);
        a.flags = flags;
        a
    }

    pub const fn with_from(mut self, addr: *mut libc::sockaddr, alen: *mut libc::socklen_t) -> Self {
        self.addr = addr;
        self.alen = alen;
        self
    }

    /// The iovec count for readv/writev, as passed.
    pub fn iovcnt(&self) -> Option<i32> {
        match self.buffers {
            Buffers::Iov(_, n) => Some(n),
            _ => None,
        }
    }

    /// The byte count the call asked for, whichever form its buffer had: None when it cannot be
    /// read safely (an invalid iovec or msghdr pointer, too many iovecs). `proven`: the call
    /// succeeded, so the kernel has just read the iovec array and the msghdr, and they are read
    /// without a probe (no system call).
    pub fn requested(&self, proven: bool) -> Option<usize> {
        match self.buffers {
            Buffers::Plain => Some(self.len),
            Buffers::Iov(iov, n) => iov_total(iov, n.max(0) as usize, proven),
            Buffers::Msg(m) => {
                let h = read_caller(m, proven)?;
                iov_total(h.msg_iov, h.msg_iovlen, proven)
            }
        }
    }

    /// What the call asked for, in two words, to be summed only if needed.
    pub fn request(&self) -> Request {
        match self.buffers {
            Buffers::Plain => Request::len(self.len),
            Buffers::Iov(iov, n) => Request {
                ptr: iov as usize,
                n: n.max(0) as isize,
            },
            Buffers::Msg(m) => Request { ptr: m as usize, n: -1 },
        }
    }
}

/// A copy of the caller's `T`: directly where the kernel just proved it readable, else after a
/// probe.
fn read_caller<T: Copy>(p: *const T, proven: bool) -> Option<T> {
    if p.is_null() {
        return None;
    }
    if proven {
        // SAFETY: the kernel has just read it for the call that succeeded.
        return Some(unsafe { core::ptr::read_unaligned(p) });
    }
    crate::sys::memory::read(p as usize)
}

/// The total length of `n` iovecs at `iov` (see `read_caller`).
fn iov_total(iov: *const libc::iovec, n: usize, proven: bool) -> Option<usize> {
    if n == 0 {
        return Some(0);
    }
    if n > MAX_IOV || iov.is_null() {
        return None;
    }
    if !proven && !crate::sys::memory::readable(iov as usize, n * core::mem::size_of::<libc::iovec>()) {
        return None;
    }
    // SAFETY: readable, as just established (proven by the kernel, or probed).
    let v = unsafe { core::slice::from_raw_parts(iov, n) };
    Some(v.iter().fold(0usize, |a, v| a.saturating_add(v.iov_len)))
}

/// What a call asked for, cheap to pass along: its byte count (`ptr` 0), an iovec array of
/// `n` entries, or a msghdr (`n` -1), whose total is worked out (with probes) only when a
/// `short` fault needs it.
#[derive(Clone, Copy)]
pub struct Request {
    ptr: usize,
    n: isize,
}

impl Request {
    /// A call with no buffer (shutdown, close).
    pub const NONE: Request = Request::len(0);

    pub const fn len(n: usize) -> Request {
        Request { ptr: 0, n: n as isize }
    }

    /// The byte count, if it can be read safely (see `CallArgs::requested`).
    pub fn bytes(self) -> Option<usize> {
        match (self.ptr, self.n) {
            (0, n) => Some(n as usize),
            (p, -1) => CallArgs::msg(0, p as *const libc::msghdr, 0).requested(false),
            (p, n) => iov_total(p as *const libc::iovec, n as usize, false),
        }
    }
}

/// What errshim knows about the connection at the time of the event.
#[derive(Clone, Copy, Default)]
pub struct Context {
    /// `TCP_INFO` state, for open TCP sockets.
    pub state: Option<u8>,
    /// POLLERR: an error is pending (sockets still open).
    pub pending_error: Option<bool>,
    /// Milliseconds since errshim saw the socket created or accepted.
    pub age_ms: Option<u64>,
    /// `TCP_INFO`'s byte counts, for open TCP sockets: what the kernel moved, whichever way
    /// the program asked (also `sendfile`, `splice`, io_uring).
    pub bytes_received: Option<u64>,
    pub bytes_sent: Option<u64>,
    /// Bytes through errshim's own hooks on this socket (only with `ERRSHIM_COUNT=1`).
    pub bytes_in: Option<u64>,
    pub bytes_out: Option<u64>,
    /// `cause::hist` bits.
    pub history: u32,
    /// The hooked call made on it before this one (only with `ERRSHIM_COUNT=1`).
    pub last_call: Option<Call>,
    pub connect_errno: i32,
    /// The first failure of each errno on the connection.
    pub errors: crate::observe::conntable::Errors,
    /// `TCP_INFO`'s retransmission and keepalive state, for TCP sockets that got anywhere.
    pub evidence: Option<crate::sys::raw::Evidence>,
    /// The socket's own timeouts, for an event whose cause is a timeout.
    pub timeouts: Option<crate::sys::raw::Timeouts>,
    pub cause: Option<Cause>,
    /// The cause's sentence for these facts ("": the one its history gives).
    pub cause_text: &'static str,
}

impl Context {
    /// The sentence for `cause`: the one chosen with the kernel's evidence, else the one the
    /// history gives.
    pub fn cause_text(&self, cause: Cause, errno: i32) -> &'static str {
        if self.cause_text.is_empty() {
            cause.text_for(self.history, errno)
        } else {
            self.cause_text
        }
    }

    /// The byte counts known, by field name, in the order the formats write them.
    pub fn byte_counts(&self) -> [(&'static str, Option<u64>); 4] {
        [
            ("bytes_received", self.bytes_received),
            ("bytes_sent", self.bytes_sent),
            ("bytes_in", self.bytes_in),
            ("bytes_out", self.bytes_out),
        ]
    }
}

pub struct Event<'a> {
    pub time: Utc,
    pub pid: i32,
    pub tid: i32,
    pub comm: &'a [u8],
    pub call: Call,
    /// The symbol the program called (`__read_chk` for a fortified `read`).
    pub entry: &'a str,
    pub args: CallArgs,
    pub ret: isize,
    pub errno: i32,
    pub action: Action,
    pub rule: usize,
    /// What the program got: the return value, and the errno when that is -1.
    pub returned: isize,
    pub returned_errno: i32,
    pub kind: Kind,
    pub local: Option<Addr>,
    pub peer: Option<Addr>,
    pub ctx: &'a Context,
    /// Return addresses already formatted (`module+0xoff` or `module:symbol+0xoff`), if asked for.
    pub backtrace: &'a [StackBuf<160>],
    /// Set when errshim injected this (a fault rule); then `rule` is the fault rule's number.
    pub injected: Option<Injected>,
}

#[derive(Clone, Copy, Debug)]
pub struct Injected {
    pub fault: crate::policy::faults::Fault,
    /// The call's number among the fault rule's matching calls.
    pub k: u64,
}

fn shutdown_how(how: i32) -> Option<&'static str> {
    match how {
        libc::SHUT_RD => Some("SHUT_RD"),
        libc::SHUT_WR => Some("SHUT_WR"),
        libc::SHUT_RDWR => Some("SHUT_RDWR"),
        _ => None,
    }
}

fn action_word(a: Action) -> &'static str {
    match a {
        Action::Pass => "passed",
        Action::Log => "logged",
        Action::Ignore | Action::Quiet => "ignored",
        Action::Map(_) => "mapped",
        Action::Remembered => "remembered",
    }
}

/// The entry point of a `connect` failure that the program learnt from
/// `getsockopt(SOL_SOCKET, SO_ERROR)` (a non-blocking connect): the line shows
/// `getsockopt(fd=N, SO_ERROR)`, with the connect's errno as the result.
pub const SO_ERROR_ENTRY: &str = "getsockopt";

fn write_args<const N: usize>(ev: &Event<'_>, b: &mut StackBuf<N>) {
    let a = &ev.args;
    b.s(ev.entry);
    b.push(b"(fd=");
    b.i(a.fd.into());
    match ev.call {
        Call::Connect if ev.entry == SO_ERROR_ENTRY => b.push(b", SO_ERROR"),
        Call::Close | Call::Connect | Call::Accept | Call::Getpeername => {}
        Call::Sendmmsg | Call::Recvmmsg => {
            b.push(b", vlen=");
            b.u(a.len as u64);
        }
        Call::Shutdown => match shutdown_how(a.how) {
            Some(h) => {
                b.push(b", ");
                b.s(h);
            }
            None => {
                b.push(b", how=");
                b.i(a.how.into());
            }
        },
        Call::Readv | Call::Writev => {
            b.push(b", iovcnt=");
            b.i(a.iovcnt().unwrap_or(0).into());
            b.push(b", len=");
            write_len(b, a);
        }
        _ => {
            b.push(b", len=");
            write_len(b, a);
        }
    }
    if a.flags != 0 {
        b.push(b", flags=");
        b.hex(a.flags as u32 as u64);
    }
    b.byte(b')');
}

/// The length asked for, or `?` where it cannot be read safely (an invalid iovec or msghdr).
fn write_len<const N: usize>(b: &mut StackBuf<N>, a: &CallArgs) {
    match a.requested(false) {
        Some(n) => b.u(n as u64),
        None => b.push(b"?"),
    }
}

fn write_addr<const N: usize>(b: &mut StackBuf<N>, key: &str, addr: &Option<Addr>) {
    b.byte(b' ');
    b.s(key);
    b.byte(b'=');
    match addr {
        Some(a) => a.write_to(b),
        None => b.push(b"?"),
    }
}

/// ` key=value` for each number known.
fn write_pairs<const N: usize>(b: &mut StackBuf<N>, pairs: &[(&str, Option<u64>)]) {
    for (key, v) in pairs {
        if let Some(v) = v {
            b.byte(b' ');
            b.s(key);
            b.byte(b'=');
            b.u(*v);
        }
    }
}

/// Keepalive as the program set it: `IDLE/INTERVAL/COUNT` (seconds, seconds, probes), or `off`.
fn write_keepalive<const N: usize>(t: &crate::sys::raw::Timeouts, b: &mut StackBuf<N>) {
    match t.keepalive {
        Some((idle, intvl, cnt)) => {
            b.u(idle.into());
            b.byte(b'/');
            b.u(intvl.into());
            b.byte(b'/');
            b.u(cnt.into());
        }
        None => b.push(b"off"),
    }
}

/// History as words, with the connect errno, first error and last call folded in.
fn write_history_words<const N: usize>(c: &Context, out: &mut StackBuf<N>) {
    let _ = cause::write_history(c.history, out);
    if c.connect_errno != 0 {
        out.push(b",connect=");
        Name(c.connect_errno).write_to(out);
    }
    for (call, errno) in c.errors.iter() {
        out.push(b",first_error=");
        if let Some(call) = call {
            out.s(call.name());
            out.byte(b':');
        }
        Name(errno).write_to(out);
    }
    if let Some(l) = c.last_call {
        out.push(b",last_call=");
        out.s(l.name());
    }
}

/// `errshim 2026-11-21T10:00:00.123456Z pid=812 tid=812 comm=nginx shutdown(fd=7, SHUT_WR) = -1
/// ENOTCONN -> ignored, returned 0 | tcp4 local=127.0.0.1:8080 peer=10.0.0.5:51234 rule=1 |
/// state=CLOSE pending_error=no age_ms=5 bytes_received=18 bytes_sent=64 history=accepted,read_eof |
/// cause=peer_closed: the orderly close ...`
/// The event as journald fields (native protocol: `KEY=value` lines), after the `MESSAGE`,
/// `PRIORITY` and `SYSLOG_IDENTIFIER` that `logger::journal_message` writes: `ERRSHIM_CALL`,
/// `ERRSHIM_FD`, `ERRSHIM_ERRNO`, `ERRSHIM_ACTION`, `ERRSHIM_RULE`, `ERRSHIM_KIND`,
/// `ERRSHIM_LOCAL`, `ERRSHIM_PEER`, `ERRSHIM_STATE`, `ERRSHIM_CAUSE`, `ERRSHIM_INJECTED`
/// (those that apply). Values never hold a newline: addresses are escaped like the text line.
pub fn write_journal_fields<const N: usize>(ev: &Event<'_>, b: &mut StackBuf<N>) {
    let _ = writeln!(b, "ERRSHIM_CALL={}", ev.call.name());
    let _ = writeln!(b, "ERRSHIM_FD={}", ev.args.fd);
    if ev.ret < 0 {
        let _ = writeln!(b, "ERRSHIM_ERRNO={}", Name(ev.errno));
    }
    let action = if ev.injected.is_some() {
        "inject"
    } else {
        action_word(ev.action)
    };
    let _ = writeln!(b, "ERRSHIM_ACTION={action}");
    let _ = writeln!(b, "ERRSHIM_RULE={}", ev.rule);
    let _ = writeln!(b, "ERRSHIM_KIND={}", ev.kind.name());
    for (key, a) in [("ERRSHIM_LOCAL", &ev.local), ("ERRSHIM_PEER", &ev.peer)] {
        if let Some(a) = a {
            let _ = write!(b, "{key}=");
            a.write_to(b);
            b.push(b"\n");
        }
    }
    if let Some(s) = ev.ctx.state {
        let _ = writeln!(b, "ERRSHIM_STATE={}", cause::tcp_state_name(s));
    }
    if let Some(c) = ev.ctx.cause {
        let _ = writeln!(b, "ERRSHIM_CAUSE={}", c.code());
    }
    if ev.injected.is_some() {
        b.push(b"ERRSHIM_INJECTED=1\n");
    }
}

pub fn write_text<const N: usize>(ev: &Event<'_>, b: &mut StackBuf<N>) {
    // Written piece by piece, without `core::fmt`: see `StackBuf::u`.
    b.push(b"errshim ");
    ev.time.write_to(b);
    b.push(b" pid=");
    b.i(ev.pid.into());
    b.push(b" tid=");
    b.i(ev.tid.into());
    b.push(b" comm=");
    b.push_escaped(ev.comm);
    b.byte(b' ');
    write_args(ev, b);
    b.push(b" = ");
    b.i(ev.ret as i64);
    if ev.ret < 0 {
        b.byte(b' ');
        Name(ev.errno).write_to(b);
    }
    match &ev.injected {
        Some(inj) => {
            b.push(b" (INJECTED) -> inject ");
            let _ = crate::policy::faults::describe(inj.fault, b);
        }
        None => {
            b.push(b" -> ");
            b.s(action_word(ev.action));
        }
    }
    b.push(b", returned ");
    b.i(ev.returned as i64);
    if ev.returned == -1 {
        b.byte(b' ');
        Name(ev.returned_errno).write_to(b);
    }
    b.push(b" | ");
    b.s(ev.kind.name());
    if ev.kind.is_socket() {
        write_addr(b, "local", &ev.local);
        write_addr(b, "peer", &ev.peer);
    }
    match &ev.injected {
        Some(inj) => {
            b.push(b" fault_rule=");
            b.u(ev.rule as u64);
            b.push(b" k=");
            b.u(inj.k);
        }
        None => {
            b.push(b" rule=");
            b.u(ev.rule as u64);
        }
    }
    let c = &ev.ctx;
    if ev.kind.is_socket() || c.history != 0 {
        b.push(b" |");
        if let Some(s) = c.state {
            b.push(b" state=");
            b.s(cause::tcp_state_name(s));
        }
        if let Some(p) = c.pending_error {
            b.push(if p { b" pending_error=yes" } else { b" pending_error=no" });
        }
        if let Some(a) = c.age_ms {
            b.push(b" age_ms=");
            b.u(a);
        }
        write_pairs(b, &c.byte_counts());
        if let Some(e) = &c.evidence {
            write_pairs(b, &e.fields());
        }
        if let Some(t) = &c.timeouts {
            if let Some(ms) = t.user_timeout_ms {
                b.push(b" user_timeout_ms=");
                b.u(ms.into());
            }
            b.push(b" keepalive=");
            write_keepalive(t, b);
        }
        b.push(b" history=");
        write_history_words(c, b);
    }
    if let Some(cause) = c.cause {
        b.push(b" | cause=");
        b.s(cause.code());
        b.push(b": ");
        b.s(c.cause_text(cause, ev.errno));
    }
    if !ev.backtrace.is_empty() {
        b.push(b" | backtrace=");
        for (i, f) in ev.backtrace.iter().enumerate() {
            if i > 0 {
                b.byte(b',');
            }
            b.push_escaped(f.as_bytes());
        }
    }
}

/// One JSON object with the field names `ts`, `pid`, `tid`, `comm`, `call`, `fd`, `how`, `len`,
/// `ret`, `errno`, `action`, `returned`, `kind`, `local`, `peer`, `state`, `pending_error`,
/// `age_ms`, `bytes_received`, `bytes_sent`, `bytes_in`, `bytes_out`, `history`, `cause`,
/// `cause_text` (where they apply), plus `rule` and, when asked for, `backtrace`.
pub fn write_json<const N: usize>(ev: &Event<'_>, b: &mut StackBuf<N>) {
    let mut o = json::Obj::new(b);
    o.fmt_str("ts", |t| ev.time.write_to(t));
    o.num("pid", ev.pid).num("tid", ev.tid).str("comm", ev.comm);
    o.str("call", ev.call.name().as_bytes()).num("fd", ev.args.fd);
    match ev.call {
        Call::Shutdown => {
            match shutdown_how(ev.args.how) {
                Some(h) => o.str("how", h.as_bytes()),
                None => o.num("how", ev.args.how),
            };
        }
        Call::Close | Call::Connect | Call::Accept | Call::Getpeername => {}
        Call::Sendmmsg | Call::Recvmmsg => {
            o.num("vlen", ev.args.len);
        }
        _ => {
            match ev.args.requested(false) {
                Some(n) => o.num("len", n),
                None => o.null("len"),
            };
        }
    }
    o.num("ret", ev.ret);
    if ev.ret < 0 {
        o.fmt_str("errno", |t| Name(ev.errno).write_to(t));
    }
    match &ev.injected {
        Some(inj) => {
            o.str("action", b"inject").bool("injected", true);
            o.fmt_str("fault", |t| {
                let _ = crate::policy::faults::describe(inj.fault, t);
            });
            o.num("k", inj.k);
        }
        None => {
            o.fmt_str("action", |t| {
                let _ = match ev.action {
                    Action::Pass => t.write_str("pass"),
                    Action::Log => t.write_str("log"),
                    Action::Ignore => t.write_str("ignore"),
                    Action::Quiet => t.write_str("quiet"),
                    Action::Map(e) => write!(t, "map={}", Name(e)),
                    Action::Remembered => t.write_str("remembered"),
                };
            });
        }
    }
    o.num("returned", ev.returned);
    o.str("kind", ev.kind.name().as_bytes());
    if ev.kind.is_socket() {
        for (key, addr) in [("local", &ev.local), ("peer", &ev.peer)] {
            match addr {
                Some(a) => {
                    o.fmt_str(key, |t| a.write_to_raw(t));
                }
                None => {
                    o.null(key);
                }
            }
        }
    }
    let c = &ev.ctx;
    if let Some(s) = c.state {
        o.str("state", cause::tcp_state_name(s).as_bytes());
    }
    if let Some(p) = c.pending_error {
        o.bool("pending_error", p);
    }
    if let Some(a) = c.age_ms {
        o.num("age_ms", a);
    }
    if ev.kind.is_socket() || c.history != 0 {
        o.nums(&c.byte_counts());
        if let Some(e) = &c.evidence {
            o.nums(&e.fields());
        }
        if let Some(t) = &c.timeouts {
            if let Some(ms) = t.user_timeout_ms {
                o.num("user_timeout_ms", u64::from(ms));
            }
            o.fmt_str("keepalive", |b| write_keepalive(t, b));
        }
        o.raw("history", |t| {
            let mut words = StackBuf::<256>::new();
            write_history_words(c, &mut words);
            t.push(b"[");
            for (i, w) in words.as_bytes().split(|&x| x == b',').enumerate() {
                if i > 0 {
                    t.push(b",");
                }
                t.push(b"\"");
                json::escape_into(t, w);
                t.push(b"\"");
            }
            t.push(b"]");
        });
    }
    if let Some(cause) = c.cause {
        o.str("cause", cause.code().as_bytes())
            .str("cause_text", c.cause_text(cause, ev.errno).as_bytes());
    }
    o.num("rule", ev.rule);
    if !ev.backtrace.is_empty() {
        o.raw("backtrace", |t| {
            t.push(b"[");
            for (i, f) in ev.backtrace.iter().enumerate() {
                if i > 0 {
                    t.push(b",");
                }
                t.push(b"\"");
                json::escape_into(t, f.as_bytes());
                t.push(b"\"");
            }
            t.push(b"]");
        });
    }
    o.end();
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    static NO_CONTEXT: Context = Context {
        state: None,
        pending_error: None,
        age_ms: None,
        bytes_received: None,
        bytes_sent: None,
        bytes_in: None,
        bytes_out: None,
        history: 0,
        last_call: None,
        connect_errno: 0,
        errors: crate::observe::conntable::Errors(0),
        evidence: None,
        timeouts: None,
        cause: None,
        cause_text: "",
    };

    fn sample() -> Event<'static> {
        Event {
            time: Utc {
                secs: 1_795_255_200,
                nanos: 123_456_000,
            },
            pid: 812,
            tid: 813,
            comm: b"nginx",
            call: Call::Shutdown,
            entry: "shutdown",
            args: CallArgs {
                how: libc::SHUT_WR,
                ..CallArgs::fd(7)
            },
            ret: -1,
            errno: libc::ENOTCONN,
            action: Action::Ignore,
            rule: 1,
            returned: 0,
            returned_errno: 0,
            kind: Kind::Tcp4,
            local: Some(Addr::V4(Ipv4Addr::LOCALHOST, 8080)),
            peer: None,
            ctx: &NO_CONTEXT,
            backtrace: &[],
            injected: None,
        }
    }

    fn text(ev: &Event<'_>) -> String {
        let mut b = StackBuf::<2048>::new();
        write_text(ev, &mut b);
        String::from_utf8(b.finish_line().to_vec()).unwrap()
    }

    fn json_of(ev: &Event<'_>) -> String {
        let mut b = StackBuf::<2048>::new();
        write_json(ev, &mut b);
        String::from_utf8(b.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn shutdown_line() {
        assert_eq!(
            text(&sample()),
            "errshim 2026-11-21T10:00:00.123456Z pid=812 tid=813 comm=nginx shutdown(fd=7, SHUT_WR) = -1 ENOTCONN -> ignored, returned 0 | tcp4 local=127.0.0.1:8080 peer=? rule=1 | history=none\n"
        );
    }

    #[test]
    fn context_and_cause() {
        let mut ev = sample();
        ev.peer = Some(Addr::V4(Ipv4Addr::new(10, 0, 0, 5), 51234));
        let ctx = Context {
            state: Some(7),
            pending_error: Some(false),
            age_ms: Some(5),
            bytes_received: Some(18),
            bytes_sent: Some(64),
            bytes_in: None,
            bytes_out: None,
            history: cause::hist::TRACKED | cause::hist::ACCEPTED | cause::hist::READ_EOF,
            last_call: Some(Call::Recv),
            connect_errno: 0,
            cause: Some(Cause::PeerClosed),
            ..Context::default()
        };
        ev.ctx = &ctx;
        let t = text(&ev);
        assert!(t.contains("peer=10.0.0.5:51234 rule=1 | state=CLOSE pending_error=no age_ms=5 bytes_received=18 bytes_sent=64 history=accepted,read_eof,last_call=recv | cause=peer_closed: the client's orderly close"), "{t}");
        let j = json_of(&ev);
        assert!(j.starts_with("{\"ts\":\"2026-11-21T10:00:00.123456Z\",\"pid\":812,\"tid\":813,\"comm\":\"nginx\",\"call\":\"shutdown\",\"fd\":7,\"how\":\"SHUT_WR\",\"ret\":-1,\"errno\":\"ENOTCONN\",\"action\":\"ignore\",\"returned\":0,\"kind\":\"tcp4\",\"local\":\"127.0.0.1:8080\",\"peer\":\"10.0.0.5:51234\",\"state\":\"CLOSE\",\"pending_error\":false,\"age_ms\":5,\"bytes_received\":18,\"bytes_sent\":64,\"history\":[\"accepted\",\"read_eof\",\"last_call=recv\"],\"cause\":\"peer_closed\",\"cause_text\":\"the client's orderly close"), "{j}");
        assert!(j.ends_with("\"rule\":1}"), "{j}");
    }

    #[test]
    fn mapped_read_line_with_hostile_comm() {
        let mut ev = sample();
        ev.comm = b"a b\nc";
        ev.call = Call::Read;
        ev.entry = "__read_chk";
        ev.args = CallArgs::buf(3, 64, 0);
        ev.action = Action::Map(libc::ECONNRESET);
        ev.returned = -1;
        ev.returned_errno = libc::ECONNRESET;
        ev.kind = Kind::NotSocket;
        let l = text(&ev);
        assert!(l.contains("comm=a\\x20b\\x0ac __read_chk(fd=3, len=64) = -1 ENOTCONN -> mapped, returned -1 ECONNRESET | not-a-socket rule=1\n"), "{l}");
        let j = json_of(&ev);
        assert!(j.contains("\"comm\":\"a b\\nc\",\"call\":\"read\",\"fd\":3,\"len\":64,\"ret\":-1,\"errno\":\"ENOTCONN\",\"action\":\"map=ECONNRESET\",\"returned\":-1,\"kind\":\"not-a-socket\",\"rule\":1}"), "{j}");
    }

    #[test]
    fn iov_lengths() {
        let mut x = [0u8; 10];
        let iov = [
            libc::iovec {
                iov_base: x.as_mut_ptr().cast(),
                iov_len: 4,
            },
            libc::iovec {
                iov_base: x.as_mut_ptr().cast(),
                iov_len: 6,
            },
        ];
        assert_eq!(CallArgs::iov(3, iov.as_ptr(), 2).requested(false), Some(10));
        assert_eq!(CallArgs::iov(3, iov.as_ptr(), 2).requested(true), Some(10));
        assert_eq!(CallArgs::iov(3, iov.as_ptr(), 0).requested(false), Some(0));
        assert_eq!(CallArgs::iov(3, iov.as_ptr(), -1).requested(false), Some(0));
        assert_eq!(CallArgs::iov(3, 4096 as *const libc::iovec, 2).requested(false), None);
        assert_eq!(CallArgs::iov(3, iov.as_ptr(), 1025).requested(false), None);
        let mh = libc::msghdr {
            msg_name: core::ptr::null_mut(),
            msg_namelen: 0,
            msg_iov: iov.as_ptr() as *mut libc::iovec,
            msg_iovlen: 2,
            msg_control: core::ptr::null_mut(),
            msg_controllen: 0,
            msg_flags: 0,
        };
        assert_eq!(CallArgs::msg(3, &mh, 0).requested(false), Some(10));
        assert_eq!(CallArgs::msg(3, 4096 as *const libc::msghdr, 0).requested(false), None);
        assert_eq!(CallArgs::msg(3, core::ptr::null(), 0).requested(false), None);
    }
}
