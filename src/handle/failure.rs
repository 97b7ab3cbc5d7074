//! What happens after an interposed call failed, and the bookkeeping calls that are too long
//! for a hook's body. The hooks call these on their cold paths; a read or write that succeeded
//! never gets here.
//!
//! Discipline: errno is read first thing; a per-thread guard sends nested calls (from anything
//! the shim itself calls) straight back with the real result; nothing here unwinds into the
//! hook (a panic, which would be a bug, is caught and the real result returned unchanged); the
//! errno the program sees is set last. A failure that no rule matches costs no system call.
//! Caller memory is read only where `memory` says it may be. Under a seccomp filter
//! (`raw::allowed` false) rules still decide, from what the table knows, but no event is built
//! (it would need system calls).

use crate::handle;
use crate::handle::faithful;
use crate::handle::fault::Injection;
use crate::observe::cause::{self, hist, Cause, Facts};
use crate::observe::conntable::{self, RecordCopy};
use crate::observe::sockinfo;
use crate::policy::faults::Fault;
use crate::policy::rules::{self, Action, Call};
use crate::report::event::{self, Buffers, CallArgs, Context, Event, Injected};
use crate::sys::socket::{Addr, Kind};
use crate::text::fmtbuf::StackBuf;
use crate::{
    report::backtrace, report::digest, report::logger, report::rate, report::summary, sys::errno, sys::memory,
    sys::process, sys::raw,
};
use core::cell::Cell;
use core::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

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
    // One look-up of the thread-local (each costs a call into the dynamic loader).
    DEPTH
        .try_with(|d| {
            let depth = d.get();
            if depth >= 2 {
                return None;
            }
            d.set(depth + 1);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok();
            d.set(depth);
            r
        })
        .ok()
        .flatten()
}

/// `errno_before` from a hook that did not read it: only calls that no rule turns into a
/// success skip reading it (see `handle::armed`).
pub const ERRNO_UNKNOWN: i32 = -1;

/// What a failure is about: an open descriptor, or one that `close` just released (whose
/// record was taken before the real close: the number may be another's by now).
#[derive(Clone, Copy)]
enum Target {
    Open,
    Closed(RecordCopy),
}

/// Called by a hook whose real call returned `ret` < 0. `errno_before` is errno as it was
/// before the real call. Returns what the hook returns, with errno set accordingly.
#[cold]
#[inline(never)]
pub fn after_failure(call: Call, entry: &'static str, args: CallArgs, ret: isize, errno_before: i32) -> isize {
    failure(call, entry, &args, Target::Open, ret, errno_before)
}

/// `close` failed; `closed` is the record it had.
#[cold]
#[inline(never)]
pub fn after_close(closed: RecordCopy, fd: i32, ret: isize, errno_before: i32) -> isize {
    failure(
        Call::Close,
        "close",
        &CallArgs::fd(fd),
        Target::Closed(closed),
        ret,
        errno_before,
    )
}

fn failure(call: Call, entry: &'static str, args: &CallArgs, target: Target, ret: isize, errno_before: i32) -> isize {
    let err = errno::get();
    let Some(cfg) = handle::config() else {
        return ret;
    };
    if cfg.rules.is_empty() {
        return ret;
    }
    let verdict = guarded(|| handle(cfg, call, entry, args, target, ret, err));
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
    // 0 from a non-empty read of a stream socket: the peer's FIN arrived. The call succeeded,
    // so the kernel has just read its iovec array or msghdr (`requested(true)`).
    if let Some(rec) = conntable::get(args.fd) {
        let kind = Kind::from_u8(rec.kind.load(Relaxed));
        let stream = kind.is_tcp() || matches!(kind, Kind::UnixStream | Kind::UnixSeqpacket | Kind::Unknown);
        if stream && rec.is_live() && args.requested(true).is_some_and(|n| n > 0) {
            rec.add_history(hist::READ_EOF, None);
        }
        rec.note_call(call);
    }
    ret
}

/// `connect` or `accept` (`entry`: the symbol) on `fd` failed with `r`: an event where a rule
/// names the call, for failures that end the attempt (not a non-blocking connect in progress,
/// nor an accept with nothing queued: see `Call::fails_for_real`). errno as the real call left
/// it, or as a `map=` rule says.
#[cold]
#[inline(never)]
pub fn after_attempt_failed(call: Call, entry: &'static str, fd: i32, r: isize) -> isize {
    if !call.fails_for_real(errno::get()) {
        return r;
    }
    after_failure(call, entry, CallArgs::fd(fd), r, ERRNO_UNKNOWN)
}

/// `splice(fd_in, ..., fd_out, ...)` failed with `r`. Linux wants a pipe at one end at least,
/// so at most one end is a socket, and the event is about that end: `fd_in` where the table
/// says it is a socket, or (while a rule names splice and errshim may make system calls) its
/// `fstat` does; else `fd_out`, which is then the socket if either is. No system call when no
/// rule names splice.
#[cold]
#[inline(never)]
pub fn after_splice(fd_in: i32, fd_out: i32, len: usize, flags: u32, r: isize) -> isize {
    let err = errno::get();
    // Only where a rule could match this very failure is the kernel asked (a failure no rule
    // matches makes no system call).
    let named = handle::config().is_some_and(|c| {
        c.rules
            .iter()
            .any(|r| r.calls.contains(Call::Splice) && r.errnos.matches(err))
    });
    let socket_in = match Kind::from_u8(conntable::live_kind(fd_in)) {
        k if k.is_socket() => true,
        _ if Kind::from_u8(conntable::live_kind(fd_out)).is_socket() => false,
        _ => named && raw::allowed() && raw::fstat(fd_in).is_ok_and(|st| st.is(libc::S_IFSOCK)),
    };
    let fd = if socket_in { fd_in } else { fd_out };
    errno::set(err);
    after_failure(
        Call::Splice,
        "splice",
        CallArgs::buf(fd, len, flags as i32),
        r,
        ERRNO_UNKNOWN,
    )
}

/// `getsockopt(fd, SOL_SOCKET, SO_ERROR)` returned 0: the value the kernel wrote (its int,
/// when `*len`, which the kernel wrote back, says all 4 bytes of it were) is why a
/// non-blocking connect failed, if the table says one is pending and not known to have
/// completed, and the kernel shows no completed handshake (no round trip measured, no byte
/// moved; a reset or a broken pipe is always an established connection's). Then the record
/// notes the failed connect, as a failed blocking connect does, and the failure goes through
/// the rules as `connect`'s, at the entry point `getsockopt`; the program keeps its result,
/// its value and its errno. An established connection's error is kept in its history (the
/// program consumed it here). What is reported is only what the program read (errshim reads
/// SO_ERROR itself only to take back the error its own abort left, `faithful`).
#[cold]
#[inline(never)]
pub fn after_so_error(fd: i32, val: *mut libc::c_void, len: *mut libc::socklen_t) {
    // SAFETY: the call succeeded, so `len` was valid and the kernel has just written it...
    let n = unsafe { len.read_unaligned() };
    if n < 4 || val.is_null() {
        return;
    }
    // SAFETY: ...and the first `n` (at least 4) bytes of `val`: the int.
    let v = unsafe { val.cast::<i32>().read_unaligned() };
    if v <= 0 {
        return;
    }
    let Some(rec) = conntable::get(fd).filter(|r| r.is_live()) else {
        return;
    };
    let gen = rec.gen();
    // The error a stall's end left pending (errshim's abort: ECONNRESET) is the stall's:
    // ETIMEDOUT for one that ends as a timeout. Taken, as the kernel's would be.
    let w = handle::timer::StallWord(rec.stall[0].load(Acquire));
    if w.gen() == gen && w.phase() == handle::timer::STALL_TIMED_OUT {
        let ended = w.with_phase(handle::timer::STALL_ENDED);
        if rec.stall[0].compare_exchange(w.0, ended.0, AcqRel, Relaxed).is_ok() && !w.resets() {
            // SAFETY: the kernel has just written these 4 bytes (see above).
            unsafe { val.cast::<i32>().write_unaligned(libc::ETIMEDOUT) };
        }
        return;
    }
    let h = rec.history();
    let pending = h & hist::CONNECT_PENDING != 0 && h & (hist::CONNECTED | hist::CONNECT_FAILED) == 0;
    // The error of a connection that was established (a reset, a timeout of the path, which
    // the program learns here as haproxy does) is no failed connect: the kernel shows a
    // completed handshake (a measured round trip) or data moved. Kept for later events.
    let established = !pending
        || matches!(v, libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED)
        || (raw::allowed()
            && raw::tcp_info(fd).is_some_and(|t| {
                t.evidence.rtt_us > 0 || t.bytes_received.is_some_and(|b| b > 0) || t.bytes_sent.is_some_and(|b| b > 0)
            }));
    if established {
        if pending {
            rec.add_history(hist::CONNECTED, Some(gen));
        }
        rec.note_error(v, gen);
        return;
    }
    if process::may_write() && rec.gen() == gen {
        rec.connect_errno.store(v as u16, Relaxed);
    }
    rec.add_history(hist::CONNECT_FAILED, Some(gen));
    let errno_now = errno::get();
    errno::set(v);
    let _ = after_attempt_failed(Call::Connect, event::SO_ERROR_ENTRY, fd, -1);
    errno::set(errno_now);
}

/// A `getpeername` that failed with ENOTCONN, answered instead from the peer errshim
/// remembered at `accept` or `connect` (the `remembered` action): only for a TCP socket whose
/// record still describes it (`conntable::checked`, as for an event), which errshim saw
/// accepted or connected (not a connect still pending, whose address is no peer yet), with a
/// peer of its family; and only where the caller's `*alen` and the bytes of `addr` to be
/// written are proven writable (`memory`; system calls of errshim's, so not under a seccomp
/// filter). Then it writes what the kernel's getpeername writes: min(`*alen`, the address's
/// length) bytes of the address, and its full length into `*alen` (a short buffer truncates).
/// Whether it answered; if not, nothing of the caller's was changed.
fn remembered_peer(args: &CallArgs, err: i32) -> bool {
    if err != libc::ENOTCONN || !raw::allowed() {
        return false;
    }
    let kind = sockinfo::probe_kind(args.fd);
    if !kind.is_tcp() {
        return false;
    }
    let local = sockinfo::local_addr(args.fd);
    let Some(rec) = conntable::checked(args.fd, kind, local.as_ref()) else {
        return false;
    };
    let gen = rec.gen();
    let established = rec.history() & (hist::ACCEPTED | hist::CONNECTED) != 0;
    // A link-local IPv6 peer needs its scope, which errshim does not keep.
    let peer = rec
        .peer()
        .filter(|p| established && !matches!(p, Addr::V6(ip, _) if ip.is_unicast_link_local()));
    // The peer's words were read between two looks at the generation: another thread's close
    // and reuse of the number in between would show (its record is rewritten under a new one).
    core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
    if rec.gen() != gen || !rec.is_live() {
        return false;
    }
    let Some((ss, full)) = peer.and_then(|p| p.to_storage()) else {
        return false;
    };
    if !matches!(
        (kind, i32::from(ss.ss_family)),
        (Kind::Tcp4, libc::AF_INET) | (Kind::Tcp6, libc::AF_INET6)
    ) {
        return false;
    }
    let alen = args.alen as usize;
    // *alen: read after a probe, then proven writable by storing it back unchanged.
    let Some(room) = memory::read::<libc::socklen_t>(alen).map(|r| r as i32) else {
        return false;
    };
    if room < 0 || !memory::write(alen, room as libc::socklen_t) {
        return false;
    }
    let n = (room as usize).min(full);
    // SAFETY: `ss` holds `full` bytes of the address, and n <= full.
    let bytes = unsafe { core::slice::from_raw_parts((&ss as *const libc::sockaddr_storage).cast::<u8>(), n) };
    memory::copy_out(args.addr as usize, bytes) && memory::write(alen, full as libc::socklen_t)
}

/// `connect` returned `r`: remember the peer it was aimed at and how it went. errno untouched.
///
/// The address is read only where the kernel has just read it: it copies the address first
/// thing (after looking the descriptor up), so any result but EBADF (no descriptor), ENOTSOCK
/// (older kernels look the socket up first), EFAULT and EINVAL (the copy failed, or the
/// length is wrong) proves it readable, for `alen` bytes (at most a sockaddr_storage).
#[inline(never)]
pub fn after_connect(fd: i32, addr: *const libc::sockaddr, alen: libc::socklen_t, r: i32) {
    let err = if r == 0 { 0 } else { errno::get() };
    if !process::may_write() || matches!(err, libc::EBADF | libc::ENOTSOCK | libc::EFAULT | libc::EINVAL) {
        return;
    }
    let Some(rec) = conntable::get(fd) else {
        return;
    };
    let peer = proven_addr(addr, alen as usize, alen as usize);
    let kind = Kind::from_u8(rec.kind.load(Relaxed));
    if let Some(Addr::Family(libc::AF_UNSPEC)) = peer {
        // A disconnect, not a connection: once it worked, the socket is unconnected again and
        // its record starts over (no peer, no history to answer or name causes from).
        if r == 0 && rec.is_live() {
            conntable::start(fd, kind, 0, None);
        }
        return;
    }
    // Linux lets a socket whose connect failed connect again: a new attempt, a new history
    // (the old attempt's ICMP or refusal says nothing about the new connection).
    if !rec.is_live() || rec.history() & hist::CONNECT_FAILED != 0 {
        conntable::start(fd, if rec.is_live() { kind } else { Kind::Unknown }, 0, None);
    }
    rec.number_connection();
    // An unspecified address (0.0.0.0, ::) is the kernel's way to this host; where it really
    // went is not that address, so it is not remembered (getpeername says it while it can).
    let unspecified = match &peer {
        Some(Addr::V4(ip, _)) => ip.is_unspecified(),
        Some(Addr::V6(ip, _)) => ip.is_unspecified() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_unspecified()),
        _ => true,
    };
    if !unspecified {
        rec.set_peer(peer.as_ref());
    }
    match err {
        0 | libc::EISCONN => rec.add_history(hist::CONNECTED, None),
        libc::EINPROGRESS | libc::EALREADY | libc::EINTR | libc::EAGAIN => rec.add_history(hist::CONNECT_PENDING, None),
        e => {
            rec.connect_errno.store(e as u16, Relaxed);
            rec.add_history(hist::CONNECT_FAILED, None);
        }
    }
}

/// `listen` succeeded on `fd`: whether its accepts may be lent an address buffer
/// (`hooks::lend_accept_buffer`). A listener is made once in a process's life, so this is
/// where errshim looks, once per process, whether a seccomp filter exists (three system calls
/// the loader itself made) and asks the kernel the listener's family and protocol (two
/// `getsockopt`s, which change nothing): only TCP and unix stream or seqpacket sockets, whose
/// accept cannot fail for the address (see `lend_accept_buffer`), are lent one.
#[cold]
#[inline(never)]
pub fn after_listen(fd: i32) {
    if !process::may_write() || !raw::allowed() || !raw::free_of_filters() {
        return;
    }
    let Some(rec) = conntable::get(fd).filter(|r| r.is_live()) else {
        return;
    };
    let gen = rec.gen();
    let opt = |name| raw::getsockopt_int(fd, libc::SOL_SOCKET, name).ok();
    let lends = match (opt(libc::SO_DOMAIN), opt(libc::SO_PROTOCOL)) {
        (Some(libc::AF_INET | libc::AF_INET6), Some(libc::IPPROTO_TCP)) => true,
        (Some(libc::AF_UNIX), _) => matches!(opt(libc::SO_TYPE), Some(libc::SOCK_STREAM | libc::SOCK_SEQPACKET)),
        _ => false,
    };
    if lends {
        rec.add_history(hist::LENDS_ADDRESS, Some(gen));
    }
}

/// Decodes an address the kernel has just read or written, `len` bytes of it, never more than
/// `room` (the caller's buffer) nor a sockaddr_storage.
fn proven_addr(addr: *const libc::sockaddr, len: usize, room: usize) -> Option<Addr> {
    let n = len.min(room).min(core::mem::size_of::<libc::sockaddr_storage>());
    if addr.is_null() || n < core::mem::size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: the kernel has just read or written these `n` bytes of the caller's buffer.
    let ss = unsafe { storage_copy(addr, n) };
    Addr::from_storage(&ss, n)
}

/// A connect fault rule filters on `port=` or `peer=`: the address `fd` is about to be
/// connected to becomes its record's peer before the rules are asked (what `after_connect`
/// does after the call), so that the filters select the connect by its target. The caller's
/// buffer is read only after the kernel reported every byte of it readable (`memory`); under a
/// seccomp filter, where nothing is probed, such rules do not fire anyway.
#[cold]
#[inline(never)]
pub fn note_connect_target(fd: i32, addr: *const libc::sockaddr, alen: libc::socklen_t) {
    let n = (alen as usize).min(core::mem::size_of::<libc::sockaddr_storage>());
    if !raw::allowed() || !process::may_write() || n < 2 || !memory::readable(addr as usize, n) {
        return;
    }
    // SAFETY: the kernel has just reported these n bytes readable.
    let ss = unsafe { storage_copy(addr, n) };
    let peer = Addr::from_storage(&ss, n);
    let ip = match &peer {
        Some(Addr::V4(ip, _)) => !ip.is_unspecified(),
        Some(Addr::V6(ip, _)) => !ip.is_unspecified(),
        _ => false,
    };
    if let Some(rec) = conntable::get(fd).filter(|r| r.is_live() && ip) {
        rec.set_peer(peer.as_ref());
    }
}

/// `accept`/`accept4` on `listener` returned `new`: a connection errshim has seen from its
/// start, with the peer the kernel handed back (valid even when it was reset before accept).
/// The kernel wrote `*alen` (the address's full length) and min(`room`, that length) bytes of
/// the address: only those are read, and only when `room` (the buffer's length before the
/// call) is known.
#[inline(never)]
pub fn after_accept(
    listener: i32,
    new: i32,
    addr: *mut libc::sockaddr,
    alen: *mut libc::socklen_t,
    room: Option<libc::socklen_t>,
) {
    let peer = room.and_then(|room| {
        // SAFETY: the call succeeded with an address wanted: the kernel wrote *alen.
        let full = unsafe { *alen } as usize;
        proven_addr(addr, full, room as usize)
    });
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
    conntable::start(new, kind, hist::ACCEPTED, ip_peer.as_ref());
}

/// The descriptor's kind, asked at most once per event: of the kernel while errshim may make
/// system calls, else from the table (what a hook saw when the socket was made).
struct LazyKind<'a> {
    fd: i32,
    target: &'a Target,
    err: i32,
    kind: Option<Kind>,
}

impl LazyKind<'_> {
    fn get(&mut self) -> Kind {
        *self.kind.get_or_insert_with(|| match self.target {
            // Linux releases the descriptor even when close fails, so never ask the kernel
            // about the number again (another thread may own it by now): EBADF means it was
            // not open; otherwise the kind is what the record said.
            Target::Closed(_) if self.err == libc::EBADF => Kind::NotOpen,
            Target::Closed(c) if c.is_live() => c.kind(),
            Target::Closed(_) => Kind::Unknown,
            Target::Open if raw::allowed() => sockinfo::probe_kind(self.fd),
            Target::Open => Kind::from_u8(conntable::live_kind(self.fd)),
        })
    }

    /// The kind for an event's context: as asked already, else what the table knows of a
    /// socket (`context` checks it against the kernel's answers it gets anyway, and asks
    /// again where they disagree), else asked.
    fn for_event(&mut self) -> Kind {
        if let Some(k) = self.kind {
            return k;
        }
        if let Target::Open = self.target {
            let known = Kind::from_u8(conntable::live_kind(self.fd));
            if known.is_socket() && !matches!(known, Kind::Unknown | Kind::OtherSocket) {
                self.kind = Some(known);
                return known;
            }
        }
        self.get()
    }
}

/// Whether a socket of kind `kind` can have the local address `local` (None: cannot tell).
fn family_fits(kind: Kind, local: Option<&Addr>) -> bool {
    match local {
        None => true,
        Some(Addr::V4(..)) => matches!(kind, Kind::Tcp4 | Kind::Udp4),
        Some(Addr::V6(..)) => matches!(kind, Kind::Tcp6 | Kind::Udp6),
        Some(Addr::UnixPath(..) | Addr::UnixAbstract(..) | Addr::UnixUnnamed) => {
            matches!(kind, Kind::UnixStream | Kind::UnixDgram | Kind::UnixSeqpacket)
        }
        Some(Addr::Family(_)) => matches!(kind, Kind::OtherSocket),
    }
}

/// Inline, with all it calls on the way to a held-back event: one frame for the failure path
/// (an event nothing writes costs under 500 instructions; `scripts/bench`'s storm).
#[inline(always)]
fn handle(
    cfg: &crate::policy::config::Config,
    call: Call,
    entry: &'static str,
    args: &CallArgs,
    target: Target,
    ret: isize,
    err: i32,
) -> Verdict {
    let rec = note_before(&target, args.fd, err);
    let verdict = decide_and_report(cfg, call, entry, args, &target, ret, err);
    // A failure a rule turned into a success (the suppressed ENOTCONN) is none the program
    // saw: it is not kept as a first error.
    note_after(rec, call, err, !matches!(verdict, Verdict::Succeed(_)));
    verdict
}

/// The open descriptor's record, with `err`'s history bit noted before the failure is
/// reported (the event of this very failure shows it); `note_after` notes the rest.
#[inline(always)]
fn note_before(target: &Target, fd: i32, err: i32) -> Option<(&'static conntable::Record, u32)> {
    let rec = match target {
        Target::Open => conntable::get(fd).map(|r| (r, r.gen())),
        Target::Closed(_) => None,
    };
    if let Some((r, gen)) = rec {
        r.note_error(err, gen);
    }
    rec
}

/// After the failure was reported: the errno's first failure, where the program saw it
/// (`seen`), and the call (the history of later events).
#[inline(always)]
fn note_after(rec: Option<(&'static conntable::Record, u32)>, call: Call, err: i32, seen: bool) {
    if let Some((r, gen)) = rec {
        if seen {
            r.note_first_error(call, err, gen);
        }
        r.note_call(call);
    }
}

/// The rule's verdict on the failure, and its event.
#[inline(always)]
fn decide_and_report(
    cfg: &crate::policy::config::Config,
    call: Call,
    entry: &'static str,
    args: &CallArgs,
    target: &Target,
    ret: isize,
    err: i32,
) -> Verdict {
    let mut kind = LazyKind {
        fd: args.fd,
        target,
        err,
        kind: None,
    };
    let decision = rules::decide(&cfg.rules, call, err, || kind.get());
    if call == Call::Shutdown
        && err == libc::ENOTCONN
        && !decision.is_some_and(|(_, r)| matches!(r.action, Action::Ignore | Action::Quiet))
    {
        unsuppressed_enotconn(cfg);
    }
    let Some((index, rule)) = decision else {
        return Verdict::Keep;
    };
    let mut action = rule.action;
    // A read that ends like end of file writes what the kernel writes at end of file; where
    // that cannot be done safely, the failure is kept (and logged).
    if matches!(action, Action::Ignore | Action::Quiet) && !eof_outputs(call, args) {
        action = Action::Log;
    }
    // A connect failure the program read from SO_ERROR: its getsockopt succeeded, and what it
    // got stays the kernel's; any rule that acts logs.
    if entry == event::SO_ERROR_ENTRY && action != Action::Pass {
        action = Action::Log;
    }
    if action == Action::Remembered && !remembered_peer(args, err) {
        action = Action::Log;
    }
    let (verdict, returned, returned_errno) = match action {
        Action::Pass | Action::Log => (Verdict::Keep, ret, err),
        Action::Ignore | Action::Quiet | Action::Remembered => (Verdict::Succeed(0), 0, 0),
        Action::Map(e) => (Verdict::Fail(e), -1, e),
    };
    // An event that nothing consumes (log off, no summary, no metrics) is not even built.
    let consumed = logger::writes_events() || cfg.counts();
    if action.logs() && consumed && raw::allowed() {
        let outcome = Outcome {
            ret,
            err,
            returned,
            returned_errno,
        };
        report(cfg, call, entry, args, &mut kind, outcome, action, index, None);
    }
    verdict
}

/// Whether this process said that its rules replaced the default ones.
static SAID_REPLACED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// A shutdown failed with ENOTCONN and the rules did not suppress it: if that is because
/// `ERRSHIM_RULES` replaced the default rules, say so, once per process (and not again in a
/// forked child of one that said it), where it matters rather than in every process of a
/// tree that starts (a program started through shell shims is dozens of processes).
#[cold]
fn unsuppressed_enotconn(cfg: &crate::policy::config::Config) {
    if SAID_REPLACED.load(Relaxed) {
        return;
    }
    let Some(line) = cfg.replaced_default() else {
        return;
    };
    if process::may_write() {
        SAID_REPLACED.store(true, Relaxed);
    }
    log::warn!("{line}");
}

/// Before a failed read is reported as end of file: what the kernel writes at end of file
/// besides the return value, written here (it wrote nothing for the failure). `recvfrom`
/// with an address buffer: its length 0 (a stream socket's end of file has no sender; without
/// a length pointer the kernel would have failed with EFAULT, so that is kept); `recvmsg`: no
/// name, no control data, no flags. Each field is probed before it is written. Whether it was
/// done (always, for the other calls).
#[inline(always)]
fn eof_outputs(call: Call, args: &CallArgs) -> bool {
    !matches!(call, Call::Recvfrom | Call::Recvmsg) || eof_outputs_of_receive(call, args)
}

#[inline(never)]
fn eof_outputs_of_receive(call: Call, args: &CallArgs) -> bool {
    match (call, args.buffers) {
        (Call::Recvfrom, _) if !args.addr.is_null() => {
            !args.alen.is_null() && raw::allowed() && memory::write(args.alen as usize, 0 as libc::socklen_t)
        }
        (Call::Recvmsg, Buffers::Msg(m)) => {
            if !raw::allowed() {
                return false;
            }
            let Some(h) = memory::read::<libc::msghdr>(m as usize) else {
                return false;
            };
            let m = m as *mut libc::msghdr;
            // SAFETY: field addresses within the msghdr just read; written through `memory`.
            let (namelen, controllen, flags) = unsafe {
                (
                    core::ptr::addr_of_mut!((*m).msg_namelen),
                    core::ptr::addr_of_mut!((*m).msg_controllen),
                    core::ptr::addr_of_mut!((*m).msg_flags),
                )
            };
            (h.msg_name.is_null() || memory::write(namelen as usize, 0 as libc::socklen_t))
                && memory::write(controllen as usize, 0usize)
                && memory::write(flags as usize, 0 as libc::c_int)
        }
        _ => true,
    }
}

/// What the call returned and what the program got.
#[derive(Clone, Copy)]
struct Outcome {
    ret: isize,
    err: i32,
    returned: isize,
    returned_errno: i32,
}

/// Builds the event with its context and writes it (and counts it for the summary). Inline:
/// an event held back by the rate limit ends here, and its arguments stay in registers.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn report(
    cfg: &crate::policy::config::Config,
    call: Call,
    entry: &'static str,
    args: &CallArgs,
    kind: &mut LazyKind,
    o: Outcome,
    action: Action,
    rule: usize,
    injected: Option<Injected>,
) {
    // Who consumes this event: its line (unless the log is off or the rate limit holds it
    // back), the summary and the metrics (which count every event, so they need its cause).
    // Nothing is gathered for an event that nothing consumes.
    let logs = logger::writes_events();
    let counts = cfg.counts() && process::may_write();
    if !logs && !counts {
        return;
    }
    let now = raw::coarse_ms();
    let errno_key = if o.ret < 0 { o.err as u16 } else { 0 };
    let kind_key = rate::kind(call as u8, errno_key, rule, injected.is_some());
    let admission = if logs {
        rate::admit(cfg.log_rate, kind_key, now, process::may_write())
    } else {
        rate::Admission {
            write: false,
            held: 0,
            held_ms: 0,
        }
    };
    if !admission.write && !counts {
        return;
    }
    let facts = Reported {
        call,
        entry,
        o,
        action,
        rule,
        injected,
        errno_key,
        kind_key,
        now,
    };
    gather_and_emit(cfg, args, kind.target, kind.for_event(), &facts, admission, counts);
}

/// What `report` hands on to the part that gathers an event's context.
#[derive(Clone, Copy)]
struct Reported {
    call: Call,
    entry: &'static str,
    o: Outcome,
    action: Action,
    rule: usize,
    injected: Option<Injected>,
    errno_key: u16,
    kind_key: u32,
    now: u64,
}

/// Gathers the context of an event that something consumes, counts it, writes its line.
/// Out of line: an event that nothing consumes never enters this frame.
#[inline(never)]
fn gather_and_emit(
    cfg: &crate::policy::config::Config,
    args: &CallArgs,
    target: &Target,
    kind: Kind,
    r: &Reported,
    admission: rate::Admission,
    counts: bool,
) {
    let mut kind = kind;
    let (mut ctx, local, peer) = context(r.call, args, target, &mut kind, r.o.err);
    if r.injected.is_some() {
        // This very call's injection: the sentence of the cause, not of the connection's past.
        ctx.cause = Some(Cause::Injected);
        ctx.cause_text = "";
    }
    let ev = Event {
        time: raw::wall_clock(),
        pid: process::pid(),
        tid: process::tid(),
        comm: process::comm(),
        call: r.call,
        entry: r.entry,
        args: *args,
        ret: r.o.ret,
        errno: r.o.err,
        action: r.action,
        rule: r.rule,
        returned: r.o.returned,
        returned_errno: r.o.returned_errno,
        kind,
        local,
        peer,
        ctx: &ctx,
        backtrace: &[],
        injected: r.injected,
    };
    if counts {
        if r.injected.is_some() {
            summary::count_injection(r.rule);
        }
        let key = summary::Key {
            call: r.call as u8,
            errno: r.errno_key,
            action: if r.injected.is_some() {
                summary::INJECT
            } else {
                action_index(r.action)
            },
            cause: ctx.cause.map_or(0, Cause::index),
        };
        summary::count(key, peer.as_ref());
    }
    if admission.held > 0 {
        rate::write_held(cfg.format, r.kind_key, admission.held, admission.held_ms);
    }
    if !admission.write {
        digest::maybe(cfg, r.now);
        return;
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
    digest::maybe(cfg, r.now);
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
    inject_into(call, entry, args, Target::Open, inj, errno_before, perform)
}

/// The same for `close`, whose record was taken before.
#[cold]
#[inline(never)]
pub fn injected_close(
    closed: RecordCopy,
    fd: i32,
    inj: Injection,
    errno_before: i32,
    perform: &mut dyn FnMut(usize) -> isize,
) -> isize {
    inject_into(
        Call::Close,
        "close",
        CallArgs::fd(fd),
        Target::Closed(closed),
        inj,
        errno_before,
        perform,
    )
}

fn inject_into(
    call: Call,
    entry: &'static str,
    args: CallArgs,
    target: Target,
    inj: Injection,
    errno_before: i32,
    perform: &mut dyn FnMut(usize) -> isize,
) -> isize {
    let fd = args.fd;
    // A short transfer needs a copy of the caller's iovec array or msghdr; one that cannot be
    // read safely is not shortened: the call is made as asked, as if no rule had fired.
    // Under a seccomp filter, a fault that needs a system call of errshim's is not made.
    // A reset aborts only a connection there is (see `reset_connection`).
    // Where Linux could not give the fault's result, it is not injected either (unless the
    // rule says `unfaithful`): `faithful` says where it could, and what keeps it so.
    let mut inj = inj;
    let mut short_plan = None;
    let mut eof_plan = None;
    let mut errno_plan = None;
    let mut rate_wait = 0;
    let mut stalled = None;
    let mut raise_sigpipe = false;
    let unfaithful = inj.unfaithful;
    let not_injected = match inj.fault {
        Fault::Short(_) if unfaithful => !shortenable(&args),
        Fault::Short(_) => {
            short_plan = faithful::short(call, &args);
            let cut = short_plan.is_some_and(|plan| {
                // A blocking read waits for SO_RCVLOWAT bytes: never fewer.
                inj.limit = inj.limit.max(plan.floor);
                args.request().bytes().is_some_and(|n| inj.limit < n) && shortenable(&args)
            });
            !cut
        }
        Fault::Eof if unfaithful => !eof_outputs(call, &args),
        Fault::Eof => {
            eof_plan = faithful::eof(call, &args);
            match eof_plan {
                Some(faithful::Eof::EmptyDatagram) => !eof_outputs(call, &args),
                Some(faithful::Eof::ShutRead) => !faithful::shut_read(fd),
                None => true,
            }
        }
        Fault::Delay(_) => !raw::allowed(),
        Fault::Rate(_) if !raw::allowed() => true,
        Fault::Rate(bps) => {
            // Wait until the connection's direction is back under the rate; move at most a
            // tenth of a second's worth where Linux could cut (as `short`).
            rate_wait = pace_wait_ns(call, fd, bps);
            short_plan = if unfaithful { None } else { faithful::short(call, &args) };
            let cut = short_plan.is_some_and(|plan| {
                inj.limit = inj.limit.max(plan.floor);
                args.request().bytes().is_some_and(|n| inj.limit < n) && shortenable(&args)
            });
            if !cut {
                (inj.limit, short_plan) = (usize::MAX, None);
            }
            rate_wait == 0 && !cut
        }
        Fault::Reset => !raw::allowed() || !reset_connection(&target, fd, inj.rule),
        Fault::Stall { ns, reset } => {
            match stall_step(call, &args, &target, inj.rule, ns, reset, errno_before, perform) {
                StallStep::NotMade => true,
                // A call within a stall that began earlier: no event of its own.
                StallStep::Within(r, e) if inj.k == 0 => {
                    errno::set(if r < 0 { e } else { errno_before });
                    return r;
                }
                StallStep::Within(r, e) => {
                    stalled = Some((r, e));
                    false
                }
                StallStep::Ended(e) => {
                    stalled = Some((-1, e));
                    false
                }
            }
        }
        Fault::SlowClose(ns) => {
            !matches!(target, Target::Closed(c) if c.kind().is_tcp())
                || !raw::allowed()
                || !slow_close_fits(fd)
                || !handle::timer::hold_close(fd, ns)
        }
        Fault::Errno(_) if unfaithful => inj.wait > 0 && !raw::allowed(),
        Fault::Errno(e) if call == Call::Close => {
            // What the descriptor is: the record taken at close, else the kernel's answer.
            let kind = match &target {
                Target::Closed(c) if c.is_live() => c.kind(),
                _ if raw::allowed() => sockinfo::probe_kind(fd),
                _ => Kind::Unknown,
            };
            errno_plan = faithful::close_errno(kind, e).then_some(faithful::Errno::AsIs);
            errno_plan.is_none()
        }
        Fault::Errno(e) => {
            errno_plan = faithful::errno(call, &args, e);
            (inj.wait > 0 && !raw::allowed()) || !errno_fits(call, &args, e) || errno_plan.is_none()
        }
    };
    if not_injected {
        // (k 0: a call within a stall, which took nothing of `max=`.)
        if inj.k != 0 {
            crate::handle::fault::not_injected(&inj);
        }
        errno::set(errno_before);
        let r = perform(usize::MAX);
        return account(call, entry, args, target, r, errno::get(), errno_before);
    }
    // What the call gives back: performed or not, and its result.
    let (performed, ret, err) = match inj.fault {
        Fault::Errno(e) => {
            if inj.wait > 0 {
                raw::sleep_ns(inj.wait);
            }
            if call == Call::Close {
                // Linux always releases the descriptor: close it, then report the error.
                perform(usize::MAX);
            }
            match errno_plan {
                // The connection ends for real (after the wait, see `faithful::Errno::Abort`),
                // and the error the abort left pending is taken back at once.
                Some(faithful::Errno::Abort) if reset_connection(&target, fd, inj.rule) => {
                    faithful::take_back_error(fd);
                }
                Some(faithful::Errno::Nudge(n)) => faithful::nudge(fd, n),
                _ => {}
            }
            // An EPIPE of the write family raises SIGPIPE, as the kernel's does: after the
            // injection is reported (the signal may end the program).
            raise_sigpipe = e == libc::EPIPE && errno_plan.is_some();
            (false, -1, e)
        }
        Fault::Eof if eof_plan == Some(faithful::Eof::ShutRead) => {
            // The kernel's own answer after the shutdown: 0, as at the peer's FIN.
            errno::set(errno_before);
            let r = perform(usize::MAX);
            (true, r, errno::get())
        }
        Fault::Eof => (false, 0, errno_before),
        Fault::Short(_) | Fault::Rate(_) => {
            if rate_wait > 0 {
                raw::sleep_ns(rate_wait);
                errno::set(errno_before);
            }
            let r = perform(inj.limit);
            let err = errno::get();
            // What stays queued (or the space left) wakes the program as the kernel would.
            if let Some(plan) = short_plan.filter(|_| r > 0) {
                faithful::nudge(fd, plan.nudge);
            }
            (true, r, err)
        }
        Fault::Delay(ns) => {
            raw::sleep_ns(ns);
            errno::set(errno_before);
            let r = perform(usize::MAX);
            (true, r, errno::get())
        }
        Fault::Reset | Fault::SlowClose(_) => {
            errno::set(errno_before);
            let r = perform(usize::MAX);
            (true, r, errno::get())
        }
        // What `stall_step` made: a read of what was queued before the stall, or the errno.
        Fault::Stall { .. } => match stalled {
            Some((r, e)) if r >= 0 => (true, r, e),
            Some((r, e)) => (false, r, e),
            None => (false, -1, libc::EAGAIN),
        },
    };
    // A short transfer or a delay lets the real call happen, which failed or found end of
    // file: the cut or the wait changed nothing of that result, which is the kernel's and goes
    // through the rules as any real one (once), never as an injection. (A reset's failures are
    // its own doing: they stay the injection's.)
    let read_family = matches!(
        call,
        Call::Read | Call::Readv | Call::Recv | Call::Recvfrom | Call::Recvmsg
    );
    if matches!(inj.fault, Fault::Short(_) | Fault::Delay(_) | Fault::Rate(_)) && (ret < 0 || (ret == 0 && read_family))
    {
        crate::handle::fault::not_injected(&inj);
        return account(call, entry, args, target, ret, err, errno_before);
    }
    let outcome = Outcome {
        ret,
        err,
        returned: ret,
        returned_errno: err,
    };
    let report_injection = || report_injected(call, entry, &args, &target, &inj, outcome);
    if performed && ret < 0 {
        // A call that failed after a reset: the injection's doing, reported as the injection
        // and kept in the history; no rule suppresses or maps it (as no injected errno) and
        // nothing reports it again.
        let rec = note_before(&target, fd, err);
        report_injection();
        note_after(rec, call, err, true);
        errno::set(err);
        return ret;
    }
    report_injection();
    if !performed {
        if raise_sigpipe {
            faithful::sigpipe(call, &args);
        }
        errno::set(if ret < 0 { err } else { errno_before });
        return ret;
    }
    account(call, entry, args, target, ret, err, errno_before)
}

/// Reports an injection: its event (what the call gave, `o`), and the fault mode's startup line
/// before the first.
fn report_injected(call: Call, entry: &'static str, args: &CallArgs, target: &Target, inj: &Injection, o: Outcome) {
    let Some(cfg) = handle::config().filter(|_| raw::allowed()) else {
        return;
    };
    let _ = guarded(|| {
        let mut kind = LazyKind {
            fd: args.fd,
            target,
            err: o.err,
            kind: None,
        };
        let inj_ev = Injected {
            fault: inj.fault,
            k: inj.k,
        };
        // The fault mode's startup line, where a rule acts: before the first injection.
        if cfg.log != crate::policy::config::LogDest::Off {
            crate::handle::fault::say_startup(cfg);
        }
        report(
            cfg,
            call,
            entry,
            args,
            &mut kind,
            o,
            Action::Log,
            inj.rule,
            Some(inj_ev),
        );
    });
}

/// `rate=`: how long to wait before this call so that its direction of the connection (bytes
/// in for reads, out for writes) stays at most `bps` since the connection began; 0: under it.
fn pace_wait_ns(call: Call, fd: i32, bps: u64) -> u64 {
    let Some(rec) = conntable::get(fd).filter(|r| r.is_live()) else {
        return 0;
    };
    let moved = if faithful::is_read(call) {
        &rec.bytes_in
    } else {
        &rec.bytes_out
    }
    .load(Relaxed);
    let age_ms = conntable::now_ms().saturating_sub(rec.created_ms.load(Relaxed));
    let due_ms = moved.saturating_mul(1000) / bps.max(1);
    due_ms.saturating_sub(age_ms).saturating_mul(1_000_000)
}

/// What a `stall=` makes of a call on its connection (`stall_step`).
enum StallStep {
    /// Not a TCP connection that can stall, or its stall is over: the call as asked.
    NotMade,
    /// Within the stall: the result (a read of bytes queued before it began, or -1) and errno.
    Within(isize, i32),
    /// The stall's end, made true: the connection aborted, and the errno it ends with.
    Ended(i32),
}

/// `stall=D` (rule `rule`) on `fd`'s TCP connection, from the call that fires it: for D no new
/// data moves either way, as when the path drops every segment. A read gets what was queued
/// when the stall began, then nothing; a write is taken by no buffer (as a full one). A call
/// that does not wait fails with EAGAIN; one that waits waits, until the stall ends or the
/// socket's SO_RCVTIMEO or SO_SNDTIMEO passes (EAGAIN, as the kernel's). At its end the
/// connection is aborted for real, as a retransmission timeout (ETIMEDOUT) or the peer's RST
/// (`reset`: ECONNRESET) would end it; the call that meets the end fails with that errno, and
/// later ones get what the kernel then gives (reads 0, writes EPIPE).
#[allow(clippy::too_many_arguments)]
fn stall_step(
    call: Call,
    args: &CallArgs,
    target: &Target,
    rule: usize,
    ns: u64,
    reset: bool,
    errno_before: i32,
    perform: &mut dyn FnMut(usize) -> isize,
) -> StallStep {
    use handle::timer::{StallWord, STALL_ACTIVE as ACTIVE, STALL_ENDED as ENDED, STALL_TIMED_OUT as TIMED_OUT};
    let fd = args.fd;
    if !raw::allowed() || !matches!(target, Target::Open) {
        return StallStep::NotMade;
    }
    let Some(rec) = conntable::get(fd).filter(|r| r.is_live()) else {
        return StallStep::NotMade;
    };
    let gen = rec.gen();
    let word = |phase: u64| StallWord::new(gen, reset, rule, phase).0;
    let w = rec.stall[0].load(Acquire);
    let errno = if reset { libc::ECONNRESET } else { libc::ETIMEDOUT };
    // The timer ended it (the connection is aborted, its error pending, as after a real RST
    // or timeout): this call gets the stall's errno, which it takes, as the kernel's would.
    let timed_out = || {
        let took = rec.stall[0]
            .compare_exchange(word(TIMED_OUT), word(ENDED), AcqRel, Relaxed)
            .is_ok();
        if took {
            faithful::take_back_error(fd);
        }
        took
    };
    let end_ms = if w == word(ACTIVE) {
        rec.stall[1].load(Relaxed)
    } else if w == word(TIMED_OUT) {
        return if timed_out() {
            StallStep::Ended(errno)
        } else {
            StallStep::NotMade
        };
    } else if StallWord(w).gen() == gen && StallWord(w).phase() == ENDED {
        return StallStep::NotMade;
    } else {
        // Only a connection whose segments could go unanswered: a TCP socket connected to its
        // peer, not yet closed.
        let state = sockinfo::probe_kind(fd)
            .is_tcp()
            .then(|| raw::tcp_info(fd))
            .flatten()
            .map(|i| i.state);
        if !matches!(state, Some(faithful::ESTABLISHED | faithful::CLOSE_WAIT)) {
            return StallStep::NotMade;
        }
        // In CLOSE_WAIT the peer's FIN is in: nothing more can come, so reads get all that is
        // queued and then the kernel's end of file (as much as "all").
        let queued = if state == Some(faithful::CLOSE_WAIT) {
            u64::MAX
        } else {
            raw::queued_to_read(fd).unwrap_or(0).max(0) as u64
        };
        let end = conntable::now_ms().saturating_add(ns.div_ceil(1_000_000));
        rec.stall[1].store(end, Relaxed);
        rec.stall[2].store(queued, Relaxed);
        if rec.stall[0]
            .compare_exchange(w, word(ACTIVE), Release, Acquire)
            .is_err()
        {
            // Another thread's call began (or ended) it first.
            return StallStep::NotMade;
        }
        // The timer ends it on time, also while the program waits in poll or epoll.
        handle::timer::stall_began(fd, StallWord(word(ACTIVE)), end);
        if queued == 0 {
            hide_arrivals(fd);
        }
        end
    };
    let read = faithful::is_read(call);
    let now = conntable::now_ms();
    if now < end_ms {
        let queued = rec.stall[2].load(Relaxed);
        if read && queued > 0 {
            errno::set(errno_before);
            let r = perform(queued.min(usize::MAX as u64) as usize);
            let e = errno::get();
            if r > 0 && args.flags & libc::MSG_PEEK == 0 {
                let took = |q: u64| q.saturating_sub(r as u64);
                let before = rec.stall[2].fetch_update(Relaxed, Relaxed, |q| Some(took(q)));
                if before.is_ok_and(|q| took(q) == 0) {
                    hide_arrivals(fd);
                }
            }
            return StallStep::Within(r, e);
        }
        if faithful::nonblocking(args) {
            return StallStep::Within(-1, libc::EAGAIN);
        }
        let left_ns = (end_ms - now).saturating_mul(1_000_000);
        let timeout = raw::sock_timeout_ns(fd, if read { libc::SO_RCVTIMEO } else { libc::SO_SNDTIMEO });
        let wait = if timeout > 0 { left_ns.min(timeout) } else { left_ns };
        match stall_wait(fd, read, wait, timeout > 0) {
            Waited::Done if timeout > 0 && timeout < left_ns => return StallStep::Within(-1, libc::EAGAIN),
            Waited::Done => {}
            Waited::Interrupted => return StallStep::Within(-1, libc::EINTR),
            // Shut down by the program meanwhile: the kernel's answer to the call now.
            Waited::Shut => return StallStep::NotMade,
        }
        // Closed, and the number given to another socket, while this call waited: the
        // timer ends the old socket through its copy; the new one is not touched.
        if rec.gen() != gen {
            return StallStep::Ended(errno);
        }
    }
    // The end, once: whichever call (or the timer) meets it first.
    if rec.stall[0]
        .compare_exchange(word(ACTIVE), word(ENDED), AcqRel, Relaxed)
        .is_err()
    {
        return if timed_out() {
            StallStep::Ended(errno)
        } else {
            StallStep::NotMade
        };
    }
    if reset_connection(target, fd, rule) {
        faithful::take_back_error(fd);
    }
    StallStep::Ended(errno)
}

/// Whether a close may send its FIN later: a connected TCP socket (a listener would keep
/// listening while held; a socket never connected has no FIN to send) without SO_LINGER (its
/// close waits, or resets, and the held copy's close would wait in errshim's timer).
fn slow_close_fits(fd: i32) -> bool {
    let connected = raw::tcp_info(fd).is_some_and(|i| matches!(i.state, faithful::ESTABLISHED | faithful::CLOSE_WAIT));
    connected && raw::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_LINGER) == Ok(0)
}

/// How a blocking call's wait within a stall ended.
enum Waited {
    /// Its time passed.
    Done,
    /// A signal's handler ran that does not restart calls (or the socket has a timeout, with
    /// which Linux never restarts one): EINTR, as the kernel's wait would give.
    Interrupted,
    /// The program shut the direction down meanwhile (another thread's `shutdown`).
    Shut,
}

/// Waits `ns` within a stall, in slices of at most 20 ms, as a blocking call would wait: a
/// `shutdown` of its direction ends it, and so does a signal whose handler would interrupt
/// the kernel's own wait (a handler without SA_RESTART, or any, on a socket with a timeout).
fn stall_wait(fd: i32, read: bool, ns: u64, timed: bool) -> Waited {
    let shut = if read { hist::SHUT_RD } else { hist::SHUT_WR };
    let start = raw::monotonic_ns();
    loop {
        let spent = raw::monotonic_ns().saturating_sub(start);
        if spent >= ns {
            return Waited::Done;
        }
        if conntable::get(fd).is_some_and(|r| r.history() & shut != 0) {
            return Waited::Shut;
        }
        if raw::nanosleep_once((ns - spent).min(20_000_000)) && (timed || raw::some_handler_interrupts()) {
            return Waited::Interrupted;
        }
    }
}

/// Within a stall, once what was queued when it began is read: what arrives afterwards makes
/// the socket readable to no poll, select or epoll, as if it had not arrived (SO_RCVLOWAT as
/// high as the kernel takes it; the stall ends with the connection aborted, so it is never
/// set back). Without it a level-triggered program would be told readable and get EAGAIN.
fn hide_arrivals(fd: i32) {
    let _ = raw::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVLOWAT, i32::MAX);
}

/// `reset`: aborts the TCP connection behind `fd` for real (`connect(AF_UNSPEC)`: the kernel
/// sends an RST), where the kernel answers that with an RST (established or half-closed; not
/// a listener, which the same call would stop listening, nor a connect in progress or a
/// closed socket). First the record of an open descriptor keeps the rule and
/// the byte counts the abort is about to zero (`Record::note_reset_injected`). Whether it
/// aborted.
fn reset_connection(target: &Target, fd: i32, rule: usize) -> bool {
    const ESTABLISHED: u8 = 1;
    const SYN_RECV: u8 = 3;
    const FIN_WAIT1: u8 = 4;
    const FIN_WAIT2: u8 = 5;
    const CLOSE_WAIT: u8 = 8;
    let kind = sockinfo::probe_kind(fd);
    let Some(info) = kind.is_tcp().then(|| raw::tcp_info(fd)).flatten() else {
        return false;
    };
    if !matches!(info.state, ESTABLISHED | SYN_RECV | FIN_WAIT1 | FIN_WAIT2 | CLOSE_WAIT) {
        return false;
    }
    if let Target::Open = target {
        if let Some(rec) = conntable::checked(fd, kind, sockinfo::local_addr(fd).as_ref()) {
            let bytes = [info.bytes_received, info.bytes_sent, info.evidence.bytes_retrans];
            rec.note_reset_injected(rec.gen(), rule, bytes);
        }
    }
    let aborted = raw::abort_connection(fd).is_ok();
    if aborted {
        faithful::settle_as_reset(fd);
    }
    aborted
}

/// Whether Linux could fail this call with `e` where errshim fails it: EAGAIN on sendfile,
/// splice and the mmsg calls only where the call would not wait (a non-blocking socket,
/// `MSG_DONTWAIT`, `SPLICE_F_NONBLOCK`); asked of the kernel, so not under a seccomp filter.
/// Any other errno of `faults::call_errnos`, and any for the other calls, as it is.
fn errno_fits(call: Call, args: &CallArgs, e: i32) -> bool {
    if e != libc::EAGAIN || !matches!(call, Call::Sendfile | Call::Splice | Call::Sendmmsg | Call::Recvmmsg) {
        return true;
    }
    let dontwait = match call {
        Call::Sendmmsg | Call::Recvmmsg => args.flags & libc::MSG_DONTWAIT != 0,
        Call::Splice => args.flags & libc::SPLICE_F_NONBLOCK as i32 != 0,
        _ => false,
    };
    dontwait || (raw::allowed() && raw::status_flags(args.fd).is_ok_and(|f| f & libc::O_NONBLOCK != 0))
}

/// `connect` or `accept` (`entry`: the symbol) on `fd`: fault rule `inj` chose the call.
/// `perform` is the hook's own way of the call (the real function once, its bookkeeping, its
/// failure through the rules); `target`, connect's address and length as the caller passed
/// them (not read unless probed). Returns what the hook returns, errno set.
///
/// - `delay`: waits, then performs; an injection unless the real call then fails for real
///   (`Call::fails_for_real`: its failure is the kernel's, reported by `perform`).
/// - An errno (after `delay=`'s wait): made only where Linux itself could return it, else the
///   call is performed as if no rule had fired (`connect_fault`, `accept_fault`).
#[cold]
#[inline(never)]
pub fn injected_attempt(
    call: Call,
    entry: &'static str,
    fd: i32,
    target: (*const libc::sockaddr, libc::socklen_t),
    inj: Injection,
    errno_before: i32,
    perform: &mut dyn FnMut() -> isize,
) -> isize {
    let args = CallArgs::fd(fd);
    let performed = |perform: &mut dyn FnMut() -> isize| {
        crate::handle::fault::not_injected(&inj);
        errno::set(errno_before);
        perform()
    };
    // Every fault here needs system calls of errshim's (a wait, a look at the socket).
    if !raw::allowed() {
        return performed(perform);
    }
    let (ret, err, returned_errno) = match inj.fault {
        Fault::Delay(ns) => {
            raw::sleep_ns(ns);
            errno::set(errno_before);
            let r = perform();
            let err = errno::get();
            if r < 0 && call.fails_for_real(err) {
                crate::handle::fault::not_injected(&inj);
                errno::set(err);
                return r;
            }
            (r, err, err)
        }
        Fault::Errno(e) => {
            let made = match call {
                Call::Connect => connect_fault(fd, target, &inj, e),
                _ => accept_fault(fd, &inj, e),
            };
            match made {
                Some(returned) => (-1, e, returned),
                None => return performed(perform),
            }
        }
        // The grammar gives these calls no other fault.
        Fault::Short(_) | Fault::Eof | Fault::Reset | Fault::Rate(_) | Fault::Stall { .. } | Fault::SlowClose(_) => {
            return performed(perform)
        }
    };
    let outcome = Outcome {
        ret,
        err,
        returned: ret,
        returned_errno,
    };
    report_injected(call, entry, &args, &Target::Open, &inj, outcome);
    errno::set(if ret < 0 { returned_errno } else { errno_before });
    ret
}

/// accept's errno `e`, without accepting: the connection stays queued for the next accept.
/// Only on a listener (SO_ACCEPTCONN), where Linux gives these errnos (the descriptor and the
/// socket are allocated before the queue is looked at; ECONNABORTED: a queued connection was
/// aborted, and the next one is this one). The errno the program sees, or None: not made.
fn accept_fault(fd: i32, inj: &Injection, e: i32) -> Option<i32> {
    if raw::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN) != Ok(1) {
        return None;
    }
    if inj.wait > 0 {
        raw::sleep_ns(inj.wait);
    }
    Some(e)
}

/// connect's errno `e` on a TCP socket that is not connected (TCP_INFO says CLOSE, and no
/// connect of its own is pending), at an address the socket's family takes (probed, copied),
/// without a SYN to it. What the program sees, or None (nothing changed: the call is made):
/// - ECONNREFUSED: the kernel refuses a connect of the socket itself, to a port on the local
///   address it would send from that errshim holds bound but not listening
///   (`refused_locally`): a blocking connect fails with ECONNREFUSED; a non-blocking one says
///   EINPROGRESS and then has SO_ERROR ECONNREFUSED and POLLOUT|POLLERR|POLLHUP, as Linux.
/// - ETIMEDOUT (blocking sockets only: a non-blocking connect's timeout needs a SYN that goes
///   unanswered, so none is made): the wait (the SYN retries), then the same refusal,
///   returned as ETIMEDOUT; the socket is left as a timed-out connect leaves it.
/// - ENETUNREACH, EHOSTUNREACH (no route, an unreachable route), EADDRNOTAVAIL (no free local
///   port): Linux returns them at once, blocking or not, before the socket changes: so does
///   errshim, without connecting.
///
/// The record then has the failed connect's history (its peer, `connect_errno`), marked
/// `CONNECT_INJECTED` with the rule.
fn connect_fault(fd: i32, target: (*const libc::sockaddr, libc::socklen_t), inj: &Injection, e: i32) -> Option<i32> {
    let kind = sockinfo::probe_kind(fd);
    let (ss, len) = probed_address(target)?;
    let peer = Addr::from_storage(&ss, len)?;
    let fits = matches!((kind, peer), (Kind::Tcp4, Addr::V4(..)) | (Kind::Tcp6, Addr::V6(..)));
    if !fits || raw::tcp_info(fd).map(|t| t.state) != Some(TCP_CLOSE) {
        return None;
    }
    let rec = conntable::checked(fd, kind, sockinfo::local_addr(fd).as_ref());
    // A non-blocking connect that failed or is failing leaves the socket "connecting": Linux
    // then answers its next connect from that (its error, or ECONNABORTED), never anew.
    if rec.is_some_and(|r| r.history() & (hist::CONNECT_PENDING | hist::CONNECTED) != 0) {
        return None;
    }
    let blocking = raw::status_flags(fd).ok()? & libc::O_NONBLOCK == 0;
    if e == libc::ETIMEDOUT && !blocking {
        return None;
    }
    if inj.wait > 0 {
        raw::sleep_ns(inj.wait);
    }
    let returned = match e {
        libc::ECONNREFUSED | libc::ETIMEDOUT => {
            let want = if blocking {
                libc::ECONNREFUSED
            } else {
                libc::EINPROGRESS
            };
            if refused_locally(fd, &ss, len)? != want {
                return None;
            }
            if e == libc::ETIMEDOUT {
                libc::ETIMEDOUT
            } else {
                want
            }
        }
        other => other,
    };
    // A socket whose connect failed before makes a new attempt, with a new history (as in
    // `after_connect`).
    if conntable::get(fd).is_none_or(|r| !r.is_live() || r.history() & hist::CONNECT_FAILED != 0) {
        conntable::start(fd, kind, 0, None);
    }
    if let Some(r) = conntable::get(fd).filter(|r| r.is_live()) {
        r.note_connect_injected(r.gen(), inj.rule, e, Some(&peer), returned == libc::EINPROGRESS);
    }
    Some(returned)
}

/// A copy of connect's address, `len` bytes (an IP address's size at least, a
/// sockaddr_storage's at most), if the kernel says the memory can be read.
fn probed_address((addr, len): (*const libc::sockaddr, libc::socklen_t)) -> Option<(libc::sockaddr_storage, usize)> {
    let len = len as usize;
    let ip_sized = core::mem::size_of::<libc::sockaddr_in>()..=core::mem::size_of::<libc::sockaddr_storage>();
    if addr.is_null() || !ip_sized.contains(&len) || !memory::readable(addr as usize, len) {
        return None;
    }
    // SAFETY: just probed readable for `len` bytes, at most a sockaddr_storage.
    Some((unsafe { storage_copy(addr, len) }, len))
}

/// The first `n` bytes (at most a sockaddr_storage's) of the address at `addr`, zero after.
///
/// # Safety
/// `addr` is readable for `n` bytes.
unsafe fn storage_copy(addr: *const libc::sockaddr, n: usize) -> libc::sockaddr_storage {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut ss: libc::sockaddr_storage = unsafe { core::mem::zeroed() };
    let n = n.min(core::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: as the caller vouches; the copy holds n bytes.
    unsafe {
        core::ptr::copy_nonoverlapping(
            addr.cast::<u8>(),
            (&mut ss as *mut libc::sockaddr_storage).cast::<u8>(),
            n,
        )
    };
    ss
}

/// Connects `fd` (a TCP socket in CLOSE) to a port that refuses, so that the kernel itself
/// fails it as a refused connect to `target`: a socket of errshim's (O_CLOEXEC, closed before
/// returning) bound, not listening, to the local address the kernel would send from to
/// `target` (a UDP socket's connect finds the route and sends nothing; loopback where there is
/// none), so the socket's local address is the one a real attempt gives. No packet leaves the
/// host. The raw connect's errno (0 if it connected, which a port no one listens on cannot),
/// or None when the refuser could not be made.
fn refused_locally(fd: i32, target: &libc::sockaddr_storage, len: usize) -> Option<i32> {
    let family = i32::from(target.ss_family);
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut src: libc::sockaddr_storage = unsafe { core::mem::zeroed() };
    let route = raw::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC).ok()?;
    let found = raw::connect(route, target, len).and_then(|_| raw::sockname(route, false, &mut src));
    raw::close(route);
    let slen = match found {
        Ok(n) => n,
        Err(_) => loopback(family, &mut src)?,
    };
    set_port(&mut src, 0);
    let refuser = raw::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC).ok()?;
    let mut at = src;
    let refused = raw::bind(refuser, &src, slen)
        .and_then(|_| raw::sockname(refuser, false, &mut at))
        .map(|n| match raw::connect(fd, &at, n) {
            Ok(()) => 0,
            Err(e) => e,
        });
    raw::close(refuser);
    refused.ok()
}

/// The loopback address of `family` into `ss`, and its length.
fn loopback(family: i32, ss: &mut libc::sockaddr_storage) -> Option<usize> {
    let a = match family {
        libc::AF_INET => Addr::V4(core::net::Ipv4Addr::LOCALHOST, 0),
        libc::AF_INET6 => Addr::V6(core::net::Ipv6Addr::LOCALHOST, 0),
        _ => return None,
    };
    let (s, n) = a.to_storage()?;
    *ss = s;
    Some(n)
}

/// Sets the port of an IPv4 or IPv6 address.
fn set_port(ss: &mut libc::sockaddr_storage, port: u16) {
    let p = (ss as *mut libc::sockaddr_storage).cast::<u8>();
    // sin_port and sin6_port both follow the 2-byte family, in network order.
    // SAFETY: within the storage.
    unsafe { core::ptr::copy_nonoverlapping(port.to_be_bytes().as_ptr(), p.add(2), 2) };
}

/// A call that really ran returned `ret` (errno `err`): account for it as the hook would have.
fn account(
    call: Call,
    entry: &'static str,
    args: CallArgs,
    target: Target,
    ret: isize,
    err: i32,
    errno_before: i32,
) -> isize {
    let fd = args.fd;
    if ret < 0 {
        errno::set(err);
        return failure(call, entry, &args, target, ret, errno_before);
    }
    match call {
        Call::Read | Call::Readv | Call::Recv | Call::Recvfrom | Call::Recvmsg => {
            if ret == 0 {
                errno::set(err);
                return after_read(call, entry, args, 0, errno_before);
            }
            conntable::count_in(fd, ret as u64, call);
        }
        Call::Write | Call::Writev | Call::Send | Call::Sendto | Call::Sendmsg | Call::Sendfile => {
            conntable::count_out(fd, ret as u64, call)
        }
        Call::Shutdown => conntable::note_shutdown(fd, args.how),
        // A count of messages, not bytes: only the call is noted (as the hook notes it).
        Call::Sendmmsg | Call::Recvmmsg => conntable::count_out(fd, 0, call),
        // The splice hook counts both its ends; connect and accept have their own path
        // (`injected_attempt`); no fault reaches getpeername (`Call::takes_faults`).
        Call::Close | Call::Connect | Call::Accept | Call::Splice | Call::Getpeername => {}
    }
    errno::set(err);
    ret
}

/// Whether the call's buffers can be copied to be cut short (the iovec array, the msghdr).
fn shortenable(args: &CallArgs) -> bool {
    match args.buffers {
        Buffers::Plain => true,
        Buffers::Iov(iov, n) => n <= 0 || iov_copy(iov, n).is_some(),
        Buffers::Msg(m) => memory::read::<libc::msghdr>(m as usize)
            .is_some_and(|h| iov_copy(h.msg_iov, h.msg_iovlen.min(i32::MAX as usize) as i32).is_some()),
    }
}

/// At most 64 iovecs are used when a transfer is cut short.
const SHORT_IOV: usize = 64;

/// A probed copy of the first (at most 64) iovecs of the caller's array.
fn iov_copy(iov: *const libc::iovec, cnt: i32) -> Option<([libc::iovec; SHORT_IOV], usize)> {
    let n = (cnt.max(0) as usize).min(SHORT_IOV);
    let mut copy = [libc::iovec {
        iov_base: core::ptr::null_mut(),
        iov_len: 0,
    }; SHORT_IOV];
    if n > 0 {
        let bytes = n * core::mem::size_of::<libc::iovec>();
        if iov.is_null() || !memory::readable(iov as usize, bytes) {
            return None;
        }
        // SAFETY: just probed readable; the copy is ours.
        unsafe { core::ptr::copy_nonoverlapping(iov, copy.as_mut_ptr(), n) };
    }
    Some((copy, n))
}

/// Runs `f` with an iovec array cut down to at most `limit` bytes (a copy on the stack: the
/// caller's array is untouched). More than 64 entries: only the first 64 are used. An array
/// that cannot be read is passed on as it was (the kernel answers for it).
pub fn short_iov(
    iov: *const libc::iovec,
    cnt: i32,
    limit: usize,
    f: impl FnOnce(*const libc::iovec, i32) -> isize,
) -> isize {
    if limit == usize::MAX {
        return f(iov, cnt);
    }
    let Some((src, n)) = iov_copy(iov, cnt) else {
        return f(iov, cnt);
    };
    let mut copy = src;
    let mut left = limit;
    let mut used = 0;
    for v in &src[..n] {
        if left == 0 {
            break;
        }
        copy[used] = libc::iovec {
            iov_base: v.iov_base,
            iov_len: v.iov_len.min(left),
        };
        left -= copy[used].iov_len;
        used += 1;
    }
    f(copy.as_ptr(), used as i32)
}

/// Runs `f` with a copy of `msg` whose iovecs carry at most `limit` bytes. For recvmsg
/// (`receive`), what the kernel writes into the copy's header (flags, name and control lengths)
/// is copied back, each field probed first; sendmsg's header is only read. A msghdr that cannot
/// be read is passed on as it was.
pub fn short_msg(
    msg: *mut libc::msghdr,
    limit: usize,
    receive: bool,
    f: impl FnOnce(*mut libc::msghdr) -> isize,
) -> isize {
    if limit == usize::MAX {
        return f(msg);
    }
    let Some(mut m) = memory::read::<libc::msghdr>(msg as usize) else {
        return f(msg);
    };
    short_iov(
        m.msg_iov,
        m.msg_iovlen.min(i32::MAX as usize) as i32,
        limit,
        |iov, n| {
            m.msg_iov = iov as *mut libc::iovec;
            m.msg_iovlen = n as usize;
            let r = f(&mut m);
            if r >= 0 && receive {
                // SAFETY: field addresses within the caller's msghdr (read above); the stores go
                // through `memory::write`, which probes each first.
                let (flags, namelen, controllen) = unsafe {
                    (
                        core::ptr::addr_of_mut!((*msg).msg_flags) as usize,
                        core::ptr::addr_of_mut!((*msg).msg_namelen) as usize,
                        core::ptr::addr_of_mut!((*msg).msg_controllen) as usize,
                    )
                };
                memory::write(flags, m.msg_flags);
                memory::write(namelen, m.msg_namelen);
                memory::write(controllen, m.msg_controllen);
            }
            r
        },
    )
}

pub fn action_index(a: Action) -> u8 {
    match a {
        Action::Pass => 0,
        Action::Log => 1,
        Action::Ignore => 2,
        Action::Quiet => 3,
        Action::Map(_) => 4,
        // 5: an injection (`summary::INJECT`).
        Action::Remembered => 6,
    }
}

#[inline(never)]
fn emit(cfg: &crate::policy::config::Config, ev: &Event<'_>) {
    let mut line = StackBuf::<4096>::new();
    match cfg.format {
        crate::policy::config::Format::Text => event::write_text(ev, &mut line),
        crate::policy::config::Format::Json => event::write_json(ev, &mut line),
    }
    if logger::is_journal() {
        // journald: the line as MESSAGE, and the event's facts as fields of their own.
        let mut fields = StackBuf::<4800>::new();
        event::write_journal_fields(ev, &mut fields);
        logger::journal_message(&mut fields, line.as_bytes());
        logger::event_fields(fields.as_bytes());
        return;
    }
    logger::event(line.finish_line());
}

/// What is known about the connection, from the table and from the kernel (calls that change
/// nothing the program sees next: `fstat`, `getsockname`, `getpeername`, `TCP_INFO`, `poll`).
fn context(
    call: Call,
    args: &CallArgs,
    target: &Target,
    kind: &mut Kind,
    err: i32,
) -> (Context, Option<Addr>, Option<Addr>) {
    let mut ctx = Context::default();
    let mut evidence = None;
    let (copy, local, peer, has_peer) = match target {
        Target::Closed(c) => {
            let c = c.is_live().then_some(*c);
            (c, None, c.and_then(|c| c.peer()), false)
        }
        Target::Open if kind.is_socket() => {
            let local = sockinfo::local_addr(args.fd);
            let inet = matches!(*kind, Kind::Tcp4 | Kind::Tcp6 | Kind::Udp4 | Kind::Udp6);
            let mut tcp = inet.then(|| raw::tcp_info(args.fd)).flatten();
            // A kind from the table that the kernel's answers contradict is asked of the
            // kernel: TCP_INFO refused on a TCP socket or given on a UDP one, no local address
            // (not a socket any more) or one of another family, a unix socket of another type.
            let contradicted = kind.is_tcp() != tcp.is_some()
                || local.is_none()
                || !family_fits(*kind, local.as_ref())
                || (!inet && !sockinfo::type_fits(args.fd, *kind));
            if contradicted {
                *kind = sockinfo::probe_kind(args.fd);
                tcp = kind.is_tcp().then(|| raw::tcp_info(args.fd)).flatten();
                if !kind.is_socket() {
                    return (ctx, None, None);
                }
            }
            let copy = current_record(args.fd, *kind, local.as_ref());
            // getpeername fails with ENOTCONN on a TCP socket that is closed, listening or
            // still connecting, so it is not asked; a TCP socket in any other state has the
            // one peer it connected to or was accepted from, which the table keeps.
            let remembered = copy.and_then(|c| c.peer());
            let live_peer = match tcp.map(|t| t.state) {
                Some(TCP_CLOSE | TCP_SYN_SENT | TCP_LISTEN) => None,
                Some(_) if remembered.is_some() => remembered,
                _ => sockinfo::peer_addr(args.fd),
            };
            let peer = remembered.or(live_peer);
            if let Some(t) = tcp {
                ctx.state = Some(t.state);
                ctx.bytes_received = t.bytes_received;
                ctx.bytes_sent = t.bytes_sent;
                evidence = Some(t.evidence);
            }
            ctx.pending_error = raw::poll_error(args.fd);
            (copy, local, peer, live_peer.is_some())
        }
        Target::Open => return (ctx, None, None),
    };
    ctx.history = copy.map_or(0, |c| c.history);
    // After an injected reset: the counts from just before it (the abort zeroed the kernel's),
    // also for a descriptor closed since.
    let before_reset = copy.and_then(|c| c.bytes_before_reset());
    if let Some([received, sent, retrans]) = before_reset {
        ctx.bytes_received = received;
        ctx.bytes_sent = sent;
        if let Some(e) = evidence.as_mut() {
            e.bytes_retrans = retrans;
        }
    }
    if let Some(r) = copy {
        let created = r.created_ms;
        ctx.age_ms = (created != 0).then(|| conntable::now_ms().saturating_sub(created));
        if conntable::counting() {
            ctx.bytes_in = Some(r.bytes_in);
            ctx.bytes_out = Some(r.bytes_out);
            ctx.last_call = r.last_call();
        }
        ctx.connect_errno = i32::from(r.connect_errno);
        ctx.errors = r.errors;
    }
    // A pending connect that later moved data, or whose socket the kernel now shows in a state
    // only a completed connect reaches (haproxy completes its connects with poll and
    // SO_ERROR, which no hook sees), did complete: the kernel's state overrides stale history.
    let moved = ctx.byte_counts().iter().any(|(_, b)| b.is_some_and(|n| n > 0));
    let completed = ctx
        .state
        .is_some_and(|s| !matches!(s, TCP_SYN_SENT | TCP_CLOSE | TCP_LISTEN));
    if ctx.history & hist::CONNECT_PENDING != 0 && (moved || completed) {
        ctx.history |= hist::CONNECTED;
        // Kept, for the connection's later events (after a reset the state no longer tells).
        if let (Target::Open, Some(r)) = (target, conntable::get(args.fd)) {
            if process::may_write() && copy.is_some() && r.is_live() {
                r.add_history(hist::CONNECTED, None);
            }
        }
    }
    // A connect that completed is no longer pending.
    if ctx.history & hist::CONNECTED != 0 {
        ctx.history &= !hist::CONNECT_PENDING;
    }
    let history = ctx.history;
    let kind = *kind;
    // The evidence of a TCP socket that got anywhere (not of one never connected, whose
    // times since the last send would count from boot).
    let established_once = history & (hist::CONNECTED | hist::ACCEPTED | hist::PAIRED) != 0;
    ctx.evidence = evidence.filter(|e| {
        let state = ctx.state.unwrap_or(TCP_CLOSE);
        state != TCP_LISTEN && (state != TCP_CLOSE || established_once || e.retransmits > 0 || e.total_retrans > 0)
    });
    if ctx.evidence.is_some() && cause::timed_out(err, history) {
        ctx.timeouts = Some(raw::tcp_timeouts(args.fd));
    }
    if kind.is_socket() || call == Call::Close {
        let facts = Facts {
            call: Some(call),
            errno: err,
            kind: Some(kind),
            history,
            tcp_state: ctx.state,
            pending_error: ctx.pending_error.unwrap_or(false),
            has_peer,
            evidence: ctx.evidence.as_ref(),
            timeouts: ctx.timeouts.as_ref(),
            bytes_received: ctx.bytes_received,
            connect_errno: ctx.connect_errno,
            reset_rule: copy.map_or(0, |c| c.reset_rule),
        };
        let c = cause::classify(&facts);
        ctx.cause = Some(c);
        ctx.cause_text = c.text_of(&facts);
    }
    (ctx, local, peer)
}

/// Linux's TCP states in which a socket has no peer for `getpeername`.
const TCP_SYN_SENT: u8 = 2;
const TCP_CLOSE: u8 = 7;
const TCP_LISTEN: u8 = 10;

/// The record for the socket now behind `fd`, checked against the kernel (`Record::fits`,
/// one `fstat`); a record that does not fit starts again as "met late".
fn current_record(fd: i32, kind: Kind, local: Option<&Addr>) -> Option<RecordCopy> {
    // None: closed or reused meanwhile, nothing known for sure.
    let c = conntable::checked(fd, kind, local)?.copy();
    c.is_live().then_some(c)
}
