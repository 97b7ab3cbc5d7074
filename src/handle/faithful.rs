//! Kernel-faithful faults: where Linux itself could give a fault's result, and what errshim
//! does so that the rest of what the program sees agrees with it. The README's fault table
//! says the same per fault and socket kind; a rule with `unfaithful` skips all of this.
//!
//! Only reached when a rule fires (never on a call no rule matches); the system calls made
//! here are errshim's own, gated like every other (`raw::allowed`), and leave errno alone.

use crate::observe::sockinfo;
use crate::policy::faults::ends_connection;
use crate::policy::rules::Call;
use crate::report::event::CallArgs;
use crate::sys::raw;
use crate::sys::socket::Kind;
use core::sync::atomic::{AtomicU8, Ordering::Relaxed};

/// TCP states (`TCP_INFO`'s `tcpi_state`).
pub const ESTABLISHED: u8 = 1;
const FIN_WAIT1: u8 = 4;
const FIN_WAIT2: u8 = 5;
pub const CLOSE_WAIT: u8 = 8;

pub fn is_read(call: Call) -> bool {
    matches!(
        call,
        Call::Read | Call::Readv | Call::Recv | Call::Recvfrom | Call::Recvmsg
    )
}

/// How readiness is brought back in line after a cut transfer: the option and the value it
/// had, written back unchanged (the kernel re-checks readiness and wakes waiters: an edge for
/// edge-triggered epoll).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nudge {
    /// `SO_RCVLOWAT`: what is still queued wakes a reader (`tcp_set_rcvlowat`).
    Readable,
    /// `TCP_NOTSENT_LOWAT`: free send space wakes a writer (`sk_write_space`).
    Writable,
}

/// A short transfer the kernel could have made.
#[derive(Clone, Copy, Debug)]
pub struct Short {
    /// The least the kernel would have moved (a blocking read waits for `SO_RCVLOWAT` bytes).
    pub floor: usize,
    pub nudge: Nudge,
}

/// Whether the call does not wait: a non-blocking descriptor or `MSG_DONTWAIT`.
pub fn nonblocking(args: &CallArgs) -> bool {
    args.flags & libc::MSG_DONTWAIT != 0 || raw::status_flags(args.fd).is_ok_and(|f| f & libc::O_NONBLOCK != 0)
}

/// 0: not asked yet; 1: the kernel re-checks readiness when the options are set; 2: it may not.
static NUDGES: AtomicU8 = AtomicU8::new(0);

/// Whether setting `SO_RCVLOWAT` and `TCP_NOTSENT_LOWAT` wakes waiters on this kernel: Linux
/// 5.10 and later (checked on 6.18; the readable nudge is older, 4.18). Asked once.
fn kernel_nudges() -> bool {
    match NUDGES.load(Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let yes = raw::kernel_version().is_some_and(|v| v >= (5, 10));
            NUDGES.store(if yes { 1 } else { 2 }, Relaxed);
            yes
        }
    }
}

/// Where a short read or write is something Linux does, and how to keep it so:
/// - TCP only: the kernel never cuts a datagram or a seqpacket message, and a unix stream read
///   ends only where a write ended (errshim cannot see those boundaries);
/// - a read: while the peer can still send (no FIN received: the rest of a stream could arrive
///   later), not with `MSG_WAITALL`; at least `SO_RCVLOWAT` bytes on a blocking socket; what
///   stays queued then wakes the reader as newly arrived data would;
/// - a write: a non-blocking one (a blocking write is cut only by a signal or `SO_SNDTIMEO`),
///   on a connection that can still send; the writer is then woken as by an ACK that freed
///   space.
pub fn short(call: Call, args: &CallArgs) -> Option<Short> {
    let fd = args.fd;
    if !raw::allowed() || !sockinfo::probe_kind(fd).is_tcp() {
        return None;
    }
    let state = raw::tcp_info(fd)?.state;
    let nonblocking = nonblocking(args);
    if nonblocking && !kernel_nudges() {
        return None;
    }
    if is_read(call) {
        if !matches!(state, ESTABLISHED | FIN_WAIT1 | FIN_WAIT2) || args.flags & libc::MSG_WAITALL != 0 {
            return None;
        }
        let lowat = raw::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVLOWAT).ok()?;
        Some(Short {
            floor: if nonblocking { 1 } else { lowat.max(1) as usize },
            nudge: Nudge::Readable,
        })
    } else {
        if !nonblocking || !matches!(state, ESTABLISHED | CLOSE_WAIT) {
            return None;
        }
        Some(Short {
            floor: 1,
            nudge: Nudge::Writable,
        })
    }
}

/// After a cut transfer: wake whoever waits for the rest (see `Nudge`).
/// The value is read again just before it is written back (the program may have set it since
/// the plan was made). A writer is also looked at with a zero-timeout poll first: a socket
/// that is not writable is then marked as waiting for space, as the kernel marks it when it
/// cuts a write itself, so that the ACK that frees space wakes the writer.
pub fn nudge(fd: i32, n: Nudge) {
    let (level, name) = match n {
        Nudge::Readable => (libc::SOL_SOCKET, libc::SO_RCVLOWAT),
        Nudge::Writable => {
            raw::poll_writable(fd);
            (libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT)
        }
    };
    if let Ok(v) = raw::getsockopt_int(fd, level, name) {
        let _ = raw::setsockopt_int(fd, level, name, v);
    }
}

/// How an end of file is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eof {
    /// A stream: `shutdown(SHUT_RD)`, then the real call, which the kernel answers with 0 (and
    /// every later read too, and readiness says readable, as after the peer's FIN).
    ShutRead,
    /// A datagram socket: 0 without reading, as for a zero-length datagram (the queued ones
    /// stay).
    EmptyDatagram,
}

/// Where an end of file is something Linux does:
/// - a TCP or unix stream socket with nothing queued to read (the kernel gives queued data
///   before an end of file), made true by `shutdown(SHUT_RD)` (on a unix stream the peer then
///   sees its writes fail with EPIPE, as when a program shuts its reading down); on TCP only
///   while established. What the peer sends later is still read, as Linux does after SHUT_RD;
/// - a datagram or seqpacket socket, on a call that asks for no sender address (a real
///   zero-length datagram would have one).
pub fn eof(call: Call, args: &CallArgs) -> Option<Eof> {
    let fd = args.fd;
    if !raw::allowed() {
        return None;
    }
    match sockinfo::probe_kind(fd) {
        k if k.is_tcp() || k == Kind::UnixStream => {
            if args.flags & libc::MSG_PEEK != 0 || raw::queued_to_read(fd) != Ok(0) {
                return None;
            }
            // Not once this side has sent its FIN (FIN_WAIT1/2): the peer's kernel would answer
            // the data it then sends with an RST after SHUT_RD.
            if k.is_tcp() && raw::tcp_info(fd)?.state != ESTABLISHED {
                return None;
            }
            Some(Eof::ShutRead)
        }
        Kind::Udp4 | Kind::Udp6 | Kind::UnixDgram | Kind::UnixSeqpacket => {
            let asks_address = match (call, args.buffers) {
                (Call::Recvfrom, _) => !args.addr.is_null(),
                (Call::Recvmsg, crate::report::event::Buffers::Msg(m)) => {
                    crate::sys::memory::read::<libc::msghdr>(m as usize).is_none_or(|h| !h.msg_name.is_null())
                }
                _ => false,
            };
            (!asks_address).then_some(Eof::EmptyDatagram)
        }
        _ => None,
    }
}

/// Makes the stream's end of file true (see `Eof::ShutRead`).
pub fn shut_read(fd: i32) -> bool {
    raw::shutdown(fd, libc::SHUT_RD).is_ok()
}

/// How an injected errno is made one Linux could give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Errno {
    /// As it is: an error that leaves the socket as it was (ENOBUFS, a UDP socket's ICMP
    /// errors, EINTR of a blocking call, a dead connection's errors).
    AsIs,
    /// EAGAIN of a non-blocking TCP call: readiness is then signalled again, as when data or
    /// space came right after.
    Nudge(Nudge),
    /// An error that ends a TCP connection: the connection is aborted for real (an RST, as
    /// `reset`), the error that leaves pending is taken back at once, so that every later call
    /// sees a connection reset and done with (reads: 0; writes: EPIPE; see `settle_as_reset`).
    Abort,
}

/// Whether Linux's `close` of a descriptor of this kind can fail with `e` (having closed it): a
/// socket's never fails (`sock_close` has no error to give); a file's may, at its flush: EIO,
/// ENOSPC, EDQUOT (NFS and the like write back there) or EINTR.
pub fn close_errno(kind: Kind, e: i32) -> bool {
    !kind.is_socket() && matches!(e, libc::EIO | libc::ENOSPC | libc::EDQUOT | libc::EINTR)
}

/// Where Linux gives errno `e` to this call, and what keeps the rest true (`Errno`); None:
/// nowhere here, so it is not injected:
/// - EAGAIN/EWOULDBLOCK: a non-blocking call on TCP (on other kinds nothing could wake an
///   edge-triggered program again);
/// - EINTR: a blocking call (interrupted by a signal handler);
/// - errors that end a connection: an established or closing TCP connection (made true:
///   `Errno::Abort`), or one already dead (as it is); on UDP only ECONNREFUSED, EHOSTUNREACH
///   and ENETUNREACH (an ICMP error, the socket unchanged: on a connected socket, or a send's
///   lack of a route); never on unix sockets, whose
///   peer alone ends them;
/// - `shutdown`: only ENOTCONN (the one error of a socket that is one, with a valid `how`);
/// - any other errno: as it is. (`close`: `close_errno`.)
pub fn errno(call: Call, args: &CallArgs, e: i32) -> Option<Errno> {
    let fd = args.fd;
    if call == Call::Shutdown && e != libc::ENOTCONN {
        return None;
    }
    // connect, accept, splice and the mmsg calls have their own checks (`failure::errno_fits`,
    // `injected_attempt`); sendfile is a write.
    if matches!(
        call,
        Call::Close | Call::Connect | Call::Accept | Call::Splice | Call::Sendmmsg | Call::Recvmmsg
    ) {
        return Some(Errno::AsIs);
    }
    let again = e == libc::EAGAIN || e == libc::EWOULDBLOCK;
    let udp_icmp = matches!(e, libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH);
    if !again && e != libc::EINTR && !ends_connection(e) && !udp_icmp {
        return Some(Errno::AsIs);
    }
    if !raw::allowed() {
        return None;
    }
    if e == libc::EINTR {
        // A blocking read is interrupted only while it waits: with nothing queued.
        let waits = !is_read(call) || sockinfo::probe_kind(fd) == Kind::NotSocket || raw::queued_to_read(fd) == Ok(0);
        return (!nonblocking(args) && waits).then_some(Errno::AsIs);
    }
    let kind = sockinfo::probe_kind(fd);
    if kind.is_udp() {
        // An ICMP error reaches only a connected socket (without IP_RECVERR); a sendto's
        // routing errors (no route) come to any.
        let routing = !is_read(call) && e != libc::ECONNREFUSED;
        return (udp_icmp && (routing || sockinfo::peer_addr(fd).is_some())).then_some(Errno::AsIs);
    }
    if !kind.is_tcp() {
        return None;
    }
    let state = raw::tcp_info(fd)?.state;
    let read = is_read(call);
    // A zero-length read returns 0 whatever the socket's state (sock_read_iter).
    if read && args.request().bytes() == Some(0) && !matches!(call, Call::Recv | Call::Recvfrom | Call::Recvmsg) {
        return None;
    }
    if again {
        let live = if read {
            matches!(state, ESTABLISHED | FIN_WAIT1 | FIN_WAIT2)
        } else {
            matches!(state, ESTABLISHED | CLOSE_WAIT)
        };
        if !live || !nonblocking(args) || !kernel_nudges() || (read && raw::queued_to_read(fd) != Ok(0)) {
            return None;
        }
        let nudge = if is_read(call) {
            Nudge::Readable
        } else {
            Nudge::Writable
        };
        return Some(Errno::Nudge(nudge));
    }
    if !ends_connection(e) {
        return None;
    }
    // Per call family: a read never gets EPIPE, a write on a dead connection gets EPIPE (not
    // ENOTCONN), shutdown only ENOTCONN.
    let fits = match call {
        Call::Shutdown => e == libc::ENOTCONN,
        _ if read => e != libc::EPIPE,
        _ => e != libc::ENOTCONN,
    };
    if !fits {
        return None;
    }
    const CLOSE: u8 = 7;
    match state {
        // A read: not past the peer's FIN (Linux then gives 0, even after an RST), and not with
        // data queued (Linux gives it before the error; the abort would drop it).
        CLOSE_WAIT if read => None,
        _ if read && raw::queued_to_read(fd) != Ok(0) => None,
        ESTABLISHED | FIN_WAIT1 | FIN_WAIT2 | CLOSE_WAIT => Some(Errno::Abort),
        CLOSE => Some(Errno::AsIs),
        _ => None,
    }
}

/// After an abort made for an injected errno: the error it left pending (ECONNRESET) is
/// errshim's, not the program's; taken back (`SO_ERROR`, read here only) so that the program's
/// next call sees the dead connection, not a second error.
pub fn take_back_error(fd: i32) {
    let _ = raw::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR);
}

/// After an abort: `shutdown(SHUT_RDWR)` (which answers ENOTCONN but marks both directions
/// shut), so that reads give 0 and poll says IN|OUT|HUP|RDHUP, as after a peer's RST (an
/// aborted socket would read ENOTCONN and poll OUT|HUP).
pub fn settle_as_reset(fd: i32) {
    let _ = raw::shutdown(fd, libc::SHUT_RDWR);
}

/// An injected EPIPE of the write family raises SIGPIPE, as the kernel's does, unless the
/// call said `MSG_NOSIGNAL` (to this thread, as the kernel sends it).
pub fn sigpipe(call: Call, args: &CallArgs) {
    if !is_read(call) && !matches!(call, Call::Shutdown | Call::Close) && args.flags & libc::MSG_NOSIGNAL == 0 {
        raw::raise_in_thread(libc::SIGPIPE);
    }
}
