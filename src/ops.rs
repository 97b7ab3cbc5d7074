//! What happens after an interposed call failed, and the bookkeeping calls that are too long
//! for a hook's body. The hooks call these on their cold paths; a read or write that succeeded
//! never gets here.
//!
//! Discipline: errno is read first thing; a per-thread guard sends nested calls (from anything
//! the shim itself calls) straight back with the real result; nothing here unwinds into the
//! hook (a panic, which would be a bug, is caught and the real result returned unchanged); the
//! errno the program sees is set last. A failure that no rule matches costs no system call.

use crate::cause::{self, hist, Cause, Facts};
use crate::conntable::{self, Record};
use crate::event::{self, CallArgs, Context, Event, Injected};
use crate::faults::Fault;
use crate::fmtbuf::StackBuf;
use crate::inject::Injection;
use crate::rules::{self, Action, Call, Rule};
use crate::sockinfo::{self, Addr, Kind};
use crate::{backtrace, errno, init, logger, summary, sys, timefmt};
use core::cell::Cell;
use core::sync::atomic::Ordering::Relaxed;

thread_local! {
    /// How deeply this thread is inside errshim's own code: 1 while handling a failure, 2 while
    /// a signal handler that interrupted that handling makes a failing call of its own.
    static DEPTH: Cell<u8> = const { Cell::new(0) };
}

/// Whether this thread is already inside errshim's own code (a signal handler interrupted it).
fn nested() -> bool {
    DEPTH.try_with(|d| d.get() > 1).unwrap_or(true)
}

/// What the program gets back.
enum Verdict {
    /// The real result and errno, unchanged.
    Keep,
    /// This return value, with errno as it was before the call.
    Succeed(isize),
    /// -1 with this errno.
    Fail(i32),
}

/// Runs `f` as errshim's own code, never unwinding. A call that a signal handler makes while
/// this thread is already in here gets the rules too (the handling is reentrant: stack buffers,
/// atomics, raw syscalls); one level deeper, calls go straight to the real function, so nothing
/// can recurse.
fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    let entered = DEPTH
        .try_with(|d| {
            let depth = d.get();
            if depth >= 2 {
                return false;
            }
            d.set(depth + 1);
            true
        })
        .unwrap_or(false);
    if !entered {
        return None;
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok();
    let _ = DEPTH.try_with(|d| d.set(d.get().saturating_sub(1)));
    r
}

/// `errno_before` from a hook that did not read it: only calls that no rule turns into a
/// success skip reading it (see `inject::armed`).
pub const ERRNO_UNKNOWN: i32 = -1;

/// Called by a hook whose real call returned `ret` < 0. `errno_before` is errno as it was
/// before the real call. Returns what the hook returns, with errno set accordingly.
#[cold]
#[inline(never)]
pub fn after_failure(call: Call, entry: &'static str, args: CallArgs, ret: isize, errno_before: i32) -> isize {
    let err = errno::get();
    let Some(cfg) = init::config() else {
        return ret;
    };
    if cfg.rules.is_empty() {
        return ret;
    }
    let verdict = guarded(|| handle(cfg, &cfg.rules, call, entry, &args, ret, err));
    match verdict {
        Some(Verdict::Succeed(v)) => {
            // ERRNO_UNKNOWN only in a race at startup (a call that began before the
            // constructor armed the calls that rules may turn into successes).
            errno::set(if errno_before == ERRNO_UNKNOWN {
                err
            } else {
                errno_before
            });
            v
        }
        Some(Verdict::Fail(e)) => {
            errno::set(e);
            -1
        }
        Some(Verdict::Keep) | None => {
            errno::set(err);
            ret
        }
    }
}

/// A read-family call returned 0 or failed.
#[cold]
#[inline(never)]
pub fn after_read(call: Call, entry: &'static str, args: CallArgs, ret: isize, errno_before: i32) -> isize {
    if ret < 0 {
        return after_failure(call, entry, args, ret, errno_before);
    }
    // 0 from a non-empty read of a stream socket: the peer's FIN arrived.
    if let Some(rec) = conntable::get(args.fd) {
        let kind = Kind::from_u8(rec.kind.load(Relaxed));
        let stream = kind.is_tcp() || matches!(kind, Kind::UnixStream | Kind::UnixSeqpacket | Kind::Unknown);
        if stream && rec.is_live() && args.requested() > 0 {
            rec.add_history(hist::READ_EOF);
        }
        rec.note_call(call);
    }
    ret
}

/// Reads the address a caller passed (connect) or got back (accept), without trusting its
/// length beyond the storage.
fn addr_from_raw(addr: *const libc::sockaddr, len: usize) -> Option<Addr> {
    if addr.is_null() || len < core::mem::size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut ss: libc::sockaddr_storage = unsafe { core::mem::zeroed() };
    let n = len.min(core::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: the caller's sockaddr holds at least `len` bytes; we copy at most the storage size.
    unsafe {
        core::ptr::copy_nonoverlapping(
            addr.cast::<u8>(),
            (&mut ss as *mut libc::sockaddr_storage).cast::<u8>(),
            n,
        )
    };
    Addr::from_storage(&ss, n)
}

/// `connect` returned `r`: remember the peer it was aimed at and how it went. errno untouched.
#[inline(never)]
pub fn after_connect(fd: i32, addr: *const libc::sockaddr, alen: libc::socklen_t, r: i32) {
    let Some(rec) = conntable::get(fd) else {
        return;
    };
    let err = if r == 0 { 0 } else { errno::get() };
    let peer = addr_from_raw(addr, alen as usize);
    if let Some(Addr::Family(libc::AF_UNSPEC)) = peer {
        return; // a disconnect, not a connection
    }
    if !rec.is_live() {
        rec.start(Kind::Unknown, 0, None);
    }
    if matches!(peer, Some(Addr::V4(..) | Addr::V6(..))) {
        rec.set_peer(peer.as_ref());
    }
    match err {
        0 | libc::EISCONN => rec.add_history(hist::CONNECTED),
        libc::EINPROGRESS | libc::EALREADY | libc::EINTR | libc::EAGAIN => rec.add_history(hist::CONNECT_PENDING),
        e => {
            rec.connect_errno.store(e as u16, Relaxed);
            rec.add_history(hist::CONNECT_FAILED);
        }
    }
    if r != 0 {
        errno::set(err);
    }
}

/// `accept`/`accept4` on `listener` returned `new`: a connection errshim has seen from its
/// start, with the peer the kernel handed back (valid even when it was reset before accept).
#[inline(never)]
pub fn after_accept(listener: i32, new: i32, addr: *mut libc::sockaddr, alen: *mut libc::socklen_t) {
    let Some(rec) = conntable::get(new) else {
        return;
    };
    let len = if alen.is_null() {
        0
    } else {
        // SAFETY: on success the kernel wrote the address length through alen.
        unsafe { *alen as usize }
    };
    let peer = addr_from_raw(addr, len);
    let from_listener = conntable::get(listener)
        .filter(|l| l.is_live())
        .map(|l| Kind::from_u8(l.kind.load(Relaxed)));
    let kind = match (from_listener, &peer) {
        (Some(k), _) if k != Kind::Unknown => k,
        (_, Some(Addr::V4(..))) => Kind::Tcp4,
        (_, Some(Addr::V6(..))) => Kind::Tcp6,
        (_, Some(Addr::UnixPath(..) | Addr::UnixAbstract(..) | Addr::UnixUnnamed)) => Kind::UnixStream,
        _ => Kind::Unknown,
    };
    let ip_peer = peer.filter(|p| matches!(p, Addr::V4(..) | Addr::V6(..)));
    rec.start(kind, hist::ACCEPTED, ip_peer.as_ref());
}

/// The descriptor's kind, asked of the kernel at most once per event.
struct LazyKind<'a> {
    call: Call,
    args: &'a CallArgs,
    err: i32,
    kind: Option<Kind>,
}

impl LazyKind<'_> {
    fn get(&mut self) -> Kind {
        *self.kind.get_or_insert_with(|| {
            if self.call != Call::Close {
                return sockinfo::probe_kind(self.args.fd);
            }
            // Linux releases the descriptor even when close fails, so never ask the kernel
            // about the number again (another thread may own it by now): EBADF means it was not
            // open; otherwise the kind is what the connection table remembered.
            if self.err == libc::EBADF {
                return Kind::NotOpen;
            }
            closed_record(self.args).map_or(Kind::Unknown, |r| Kind::from_u8(r.kind.load(Relaxed)))
        })
    }
}

/// The record of a descriptor that a failing `close` just released, if it still describes it
/// (it was live when forgotten, and no new socket has taken the number since).
fn closed_record(args: &CallArgs) -> Option<&'static Record> {
    let live = args.history & (hist::TRACKED | hist::LATE) != 0;
    conntable::get(args.fd).filter(|r| live && r.history.load(Relaxed) == 0)
}

fn handle(
    cfg: &crate::config::Config,
    rules: &[Rule],
    call: Call,
    entry: &'static str,
    args: &CallArgs,
    ret: isize,
    err: i32,
) -> Verdict {
    let rec = if call == Call::Close {
        None
    } else {
        conntable::get(args.fd)
    };
    if let Some(r) = rec {
        r.note_error(err);
    }
    let mut kind = LazyKind {
        call,
        args,
        err,
        kind: None,
    };
    let decision = rules::decide(rules, call, err, || kind.get());
    let Some((index, rule)) = decision else {
        if let Some(r) = rec {
            r.note_call(call);
        }
        return Verdict::Keep;
    };
    let (verdict, returned, returned_errno) = match rule.action {
        Action::Pass | Action::Log => (Verdict::Keep, ret, err),
        Action::Ignore | Action::Quiet => (Verdict::Succeed(0), 0, 0),
        Action::Map(e) => (Verdict::Fail(e), -1, e),
    };
    if rule.action.logs() {
        let kind = kind.get();
        let outcome = Outcome {
            ret,
            err,
            returned,
            returned_errno,
        };
        report(cfg, call, entry, args, kind, outcome, rule.action, index, None);
    }
    if let Some(r) = rec {
        r.note_call(call);
    }
    verdict
}

/// What the call returned and what the program got.
#[derive(Clone, Copy)]
struct Outcome {
    ret: isize,
    err: i32,
    returned: isize,
    returned_errno: i32,
}

/// Builds the event with its context and writes it (and counts it for the summary).
#[allow(clippy::too_many_arguments)]
fn report(
    cfg: &crate::config::Config,
    call: Call,
    entry: &'static str,
    args: &CallArgs,
    kind: Kind,
    o: Outcome,
    action: Action,
    rule: usize,
    injected: Option<Injected>,
) {
    let (mut ctx, local, peer) = context(call, args, kind, o.err);
    if injected.is_some() {
        ctx.cause = Some(Cause::Injected);
    }
    let ev = Event {
        time: timefmt::now(),
        pid: sys::getpid(),
        tid: sys::gettid(),
        comm: init::comm(),
        call,
        entry,
        args: *args,
        ret: o.ret,
        errno: o.err,
        action,
        rule,
        returned: o.returned,
        returned_errno: o.returned_errno,
        kind,
        local,
        peer,
        ctx,
        backtrace: &[],
        injected,
    };
    if cfg.summary {
        let key = summary::Key {
            call: call as u8,
            errno: if o.ret < 0 { o.err as u16 } else { 0 },
            action: if injected.is_some() {
                summary::INJECT
            } else {
                action_index(action)
            },
            cause: ctx.cause.map_or(0, Cause::index),
        };
        summary::count(key, peer.as_ref());
    }
    // The unwinder is not async-signal-safe: no backtrace for a call that interrupted errshim.
    if cfg.backtrace && !nested() {
        backtrace::with_frames(|frames| {
            emit(
                cfg,
                &Event {
                    backtrace: frames,
                    ..ev
                },
            )
        });
    } else {
        emit(cfg, &ev);
    }
}

/// A fault rule chose this call. Performs it (or not) as the fault says, logs the injection,
/// and returns what the hook returns. `perform(limit)` makes the real call, transferring at most
/// `limit` bytes (usize::MAX: as asked).
#[cold]
#[inline(never)]
pub fn injected(
    call: Call,
    entry: &'static str,
    args: CallArgs,
    inj: Injection,
    errno_before: i32,
    perform: &mut dyn FnMut(usize) -> isize,
) -> isize {
    let fd = args.fd;
    // What the call gives back: performed or not, and its result.
    let (performed, ret, err) = match inj.fault {
        Fault::Errno(e) => {
            if call == Call::Close {
                // Linux always releases the descriptor: close it, then report the error.
                perform(usize::MAX);
            }
            (false, -1, e)
        }
        Fault::Eof => (false, 0, errno_before),
        Fault::Short(_) => {
            let r = perform(inj.limit);
            (true, r, errno::get())
        }
        Fault::Delay(ns) => {
            sys::sleep_ns(ns);
            // Whatever the sleep left in errno is errshim's, not the program's.
            errno::set(errno_before);
            let r = perform(usize::MAX);
            (true, r, errno::get())
        }
        Fault::Reset => {
            if sockinfo::probe_kind(fd).is_tcp() {
                let _ = sys::abort_connection(fd);
            }
            errno::set(errno_before);
            let r = perform(usize::MAX);
            (true, r, errno::get())
        }
    };
    if let Some(cfg) = init::config() {
        let _ = guarded(|| {
            let kind = if call == Call::Close {
                LazyKind {
                    call,
                    args: &args,
                    err,
                    kind: None,
                }
                .get()
            } else {
                sockinfo::probe_kind(fd)
            };
            let outcome = Outcome {
                ret,
                err,
                returned: ret,
                returned_errno: err,
            };
            let inj_ev = Injected {
                fault: inj.fault,
                k: inj.k,
            };
            report(
                cfg,
                call,
                entry,
                &args,
                kind,
                outcome,
                Action::Log,
                inj.rule,
                Some(inj_ev),
            );
        });
    }
    if !performed {
        errno::set(if ret < 0 { err } else { errno_before });
        return ret;
    }
    // The call really ran: account for it as the hook would have.
    if ret < 0 {
        errno::set(err);
        return after_failure(call, entry, args, ret, errno_before);
    }
    match call {
        Call::Read | Call::Readv | Call::Recv | Call::Recvfrom | Call::Recvmsg => {
            if ret == 0 {
                errno::set(err);
                return after_read(call, entry, args, 0, errno_before);
            }
            conntable::count_in(fd, ret as u64, call);
        }
        Call::Write | Call::Writev | Call::Send | Call::Sendto | Call::Sendmsg => {
            conntable::count_out(fd, ret as u64, call)
        }
        Call::Shutdown => conntable::note_shutdown(fd, args.how),
        Call::Close => {}
    }
    errno::set(err);
    ret
}

/// Runs `f` with an iovec array cut down to at most `limit` bytes (a copy on the stack: the
/// caller's array is untouched). More than 64 entries: only the first 64 are used.
pub fn short_iov(
    iov: *const libc::iovec,
    cnt: usize,
    limit: usize,
    f: impl FnOnce(*const libc::iovec, usize) -> isize,
) -> isize {
    if limit == usize::MAX || iov.is_null() {
        return f(iov, cnt);
    }
    let mut copy = [libc::iovec {
        iov_base: core::ptr::null_mut(),
        iov_len: 0,
    }; 64];
    // SAFETY: the caller passed iov with cnt entries.
    let src = unsafe { core::slice::from_raw_parts(iov, cnt.min(64)) };
    let mut left = limit;
    let mut n = 0;
    for v in src {
        if left == 0 {
            break;
        }
        copy[n] = libc::iovec {
            iov_base: v.iov_base,
            iov_len: v.iov_len.min(left),
        };
        left -= copy[n].iov_len;
        n += 1;
    }
    f(copy.as_ptr(), n)
}

/// Runs `f` with a copy of `msg` whose iovecs carry at most `limit` bytes; what the kernel
/// writes into the copy's header (flags, name and control lengths) is copied back.
pub fn short_msg(msg: *mut libc::msghdr, limit: usize, f: impl FnOnce(*mut libc::msghdr) -> isize) -> isize {
    if limit == usize::MAX || msg.is_null() {
        return f(msg);
    }
    // SAFETY: the caller passed a valid msghdr.
    let mut m = unsafe { *msg };
    short_iov(m.msg_iov, m.msg_iovlen, limit, |iov, n| {
        m.msg_iov = iov as *mut libc::iovec;
        m.msg_iovlen = n;
        let r = f(&mut m);
        // SAFETY: as above; only the fields the kernel reports back are restored.
        unsafe {
            (*msg).msg_flags = m.msg_flags;
            (*msg).msg_namelen = m.msg_namelen;
            (*msg).msg_controllen = m.msg_controllen;
        }
        r
    })
}

pub fn action_index(a: Action) -> u8 {
    match a {
        Action::Pass => 0,
        Action::Log => 1,
        Action::Ignore => 2,
        Action::Quiet => 3,
        Action::Map(_) => 4,
    }
}

fn emit(cfg: &crate::config::Config, ev: &Event<'_>) {
    let mut line = StackBuf::<4096>::new();
    match cfg.format {
        crate::config::Format::Text => event::write_text(ev, &mut line),
        crate::config::Format::Json => event::write_json(ev, &mut line),
    }
    logger::event(line.finish_line());
}

/// What is known about the connection, from the table and from the kernel (calls that change
/// nothing the program sees next: `fstat`, `getsockname`, `getpeername`, `TCP_INFO`, `poll`).
fn context(call: Call, args: &CallArgs, kind: Kind, err: i32) -> (Context, Option<Addr>, Option<Addr>) {
    let mut ctx = Context::default();
    let (rec, local, peer, has_peer) = if call == Call::Close {
        let rec = closed_record(args);
        ctx.history = if rec.is_some() { args.history } else { 0 };
        (rec, None, rec.and_then(Record::peer), false)
    } else if kind.is_socket() {
        let local = sockinfo::local_addr(args.fd);
        let rec = conntable::get(args.fd).inspect(|r| validate(r, args.fd, kind, local.as_ref()));
        if let Some(r) = rec {
            ctx.history = r.history.load(Relaxed);
        }
        let live_peer = sockinfo::peer_addr(args.fd);
        let peer = rec.and_then(Record::peer).or(live_peer);
        if let Some(t) = kind.is_tcp().then(|| sys::tcp_info(args.fd)).flatten() {
            ctx.state = Some(t.state);
            ctx.bytes_received = t.bytes_received;
            ctx.bytes_sent = t.bytes_sent;
        }
        ctx.pending_error = sys::poll_error(args.fd);
        (rec, local, peer, live_peer.is_some())
    } else {
        return (ctx, None, None);
    };
    if let Some(r) = rec {
        let created = r.created_ms.load(Relaxed);
        ctx.age_ms = (created != 0).then(|| conntable::now_ms().saturating_sub(created));
        if conntable::counting() {
            ctx.bytes_in = Some(r.bytes_in.load(Relaxed));
            ctx.bytes_out = Some(r.bytes_out.load(Relaxed));
            ctx.last_call = r.last_call();
        }
        ctx.connect_errno = i32::from(r.connect_errno.load(Relaxed));
        ctx.first_error = i32::from(r.first_error.load(Relaxed));
    }
    let mut history = ctx.history;
    // A pending connect that later moved data did complete.
    let moved = ctx.byte_counts().iter().any(|(_, b)| b.is_some_and(|n| n > 0));
    if history & hist::CONNECT_PENDING != 0 && moved {
        history |= hist::CONNECTED;
    }
    if kind.is_socket() || call == Call::Close {
        ctx.cause = Some(cause::classify(&Facts {
            call: Some(call),
            errno: err,
            kind: Some(kind),
            history,
            tcp_state: ctx.state,
            pending_error: ctx.pending_error.unwrap_or(false),
            has_peer,
        }));
    }
    (ctx, local, peer)
}

/// Makes sure the record describes the socket now behind `fd`: the inode it had at its first
/// event must still be the one there; a record that is not live, or whose socket was replaced
/// behind the hooks' back, starts again as "met late". At the first event no inode is known
/// yet, so a record that cannot be this socket's is not trusted either (`could_be`).
fn validate(rec: &Record, fd: i32, kind: Kind, local: Option<&Addr>) {
    let Some((_, ino)) = sys::identity(fd) else {
        return;
    };
    let known = rec.ino.load(Relaxed);
    if !rec.is_live() || (known != 0 && known != ino) || (known == 0 && !could_be(rec, kind, local)) {
        rec.start_late(kind, ino);
    } else if known == 0 {
        rec.ino.store(ino, Relaxed);
    }
}

/// Whether a record whose socket's inode is not known yet can describe the socket now behind
/// the descriptor (one closed and one created by raw syscalls leave the record in place). A
/// socket's kind never changes, and a TCP or UDP socket that was once connected or accepted
/// keeps its local port (only a UDP `connect(AF_UNSPEC)` gives it back, and then the record's
/// peer is stale anyway): an "established" record on a socket without one is another socket's.
fn could_be(rec: &Record, kind: Kind, local: Option<&Addr>) -> bool {
    let was = Kind::from_u8(rec.kind.load(Relaxed));
    if was != Kind::Unknown && was != kind {
        return false;
    }
    let established = rec.history.load(Relaxed) & (hist::CONNECTED | hist::ACCEPTED) != 0;
    !(established && matches!(local, Some(Addr::V4(_, 0) | Addr::V6(_, 0))))
}
