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
use crate::event::{self, CallArgs, Context, Event};
use crate::fmtbuf::StackBuf;
use crate::rules::{self, Action, Call, Rule};
use crate::sockinfo::{self, Addr, Kind};
use crate::{backtrace, errno, init, logger, summary, sys, timefmt};
use core::cell::Cell;
use core::sync::atomic::Ordering::Relaxed;

thread_local! {
    /// Set while this thread runs errshim's own code.
    static BUSY: Cell<bool> = const { Cell::new(false) };
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

/// Runs `f` as errshim's own code: not re-entered from nested calls, never unwinding.
fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    let entered = BUSY
        .try_with(|b| {
            let free = !b.get();
            b.set(true);
            free
        })
        .unwrap_or(false);
    if !entered {
        return None;
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok();
    let _ = BUSY.try_with(|b| b.set(false));
    r
}

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
            errno::set(errno_before);
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
        let (ctx, local, peer) = context(call, args, kind, err);
        let ev = Event {
            time: timefmt::now(),
            pid: sys::getpid(),
            tid: sys::gettid(),
            comm: init::comm(),
            call,
            entry,
            args: *args,
            ret,
            errno: err,
            action: rule.action,
            rule: index,
            returned,
            returned_errno,
            kind,
            local,
            peer,
            ctx,
            backtrace: &[],
        };
        if cfg.summary {
            let key = summary::Key {
                call: call as u8,
                errno: err as u16,
                action: action_index(rule.action),
                cause: ctx.cause.map_or(0, Cause::index),
            };
            summary::count(key, peer.as_ref());
        }
        if cfg.backtrace {
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
    if let Some(r) = rec {
        r.note_call(call);
    }
    verdict
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
        let rec = conntable::get(args.fd).inspect(|r| validate(r, args.fd, kind));
        if let Some(r) = rec {
            ctx.history = r.history.load(Relaxed);
        }
        let live_peer = sockinfo::peer_addr(args.fd);
        let peer = rec.and_then(Record::peer).or(live_peer);
        if kind.is_tcp() {
            ctx.state = sys::tcp_state(args.fd);
        }
        ctx.pending_error = sys::poll_error(args.fd);
        (rec, sockinfo::local_addr(args.fd), peer, live_peer.is_some())
    } else {
        return (ctx, None, None);
    };
    if let Some(r) = rec {
        let created = r.created_ms.load(Relaxed);
        ctx.age_ms = (created != 0).then(|| conntable::now_ms().saturating_sub(created));
        ctx.bytes_in = r.bytes_in.load(Relaxed);
        ctx.bytes_out = r.bytes_out.load(Relaxed);
        ctx.last_call = r.last_call();
        ctx.connect_errno = i32::from(r.connect_errno.load(Relaxed));
        ctx.first_error = i32::from(r.first_error.load(Relaxed));
    }
    let mut history = ctx.history;
    // A pending connect that later moved data did complete.
    if history & hist::CONNECT_PENDING != 0 && ctx.bytes_in + ctx.bytes_out > 0 {
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
/// behind the hooks' back, starts again as "met late".
fn validate(rec: &Record, fd: i32, kind: Kind) {
    let Some((_, ino)) = sys::identity(fd) else {
        return;
    };
    let known = rec.ino.load(Relaxed);
    if !rec.is_live() || (known != 0 && known != ino) {
        rec.start_late(kind, ino);
    } else if known == 0 {
        rec.ino.store(ino, Relaxed);
    }
}
