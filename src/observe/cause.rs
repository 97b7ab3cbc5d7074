//! Naming the most probable cause of a failure from what errshim remembered about the
//! connection (its history) and what the kernel still says (TCP state, pending error).
//! Pure functions: the facts go in, a cause code and one sentence come out.
//!
//! The kernel facts behind each rule are in shared/docs/linux-socket-errors.md: `shutdown`
//! and the read family fail with ENOTCONN exactly when a TCP socket is in state CLOSE (or,
//! for reads, LISTEN); a reset leaves ECONNRESET pending (POLLERR) until one call consumes it.

use crate::policy::rules::Call;
use crate::sys::raw::{Evidence, Timeouts};
use crate::sys::socket::Kind;

/// History bits kept per connection.
pub mod hist {
    /// `connect` returned 0, or a pending connect later proved established (a successful I/O).
    pub const CONNECTED: u32 = 1 << 0;
    /// `connect` returned EINPROGRESS (or EALREADY).
    pub const CONNECT_PENDING: u32 = 1 << 1;
    /// `connect` failed (ECONNREFUSED, ETIMEDOUT, ...).
    pub const CONNECT_FAILED: u32 = 1 << 2;
    /// Returned by `accept`/`accept4`.
    pub const ACCEPTED: u32 = 1 << 3;
    /// `listen` succeeded on it.
    pub const LISTENING: u32 = 1 << 4;
    /// A read returned 0: the peer's FIN arrived.
    pub const READ_EOF: u32 = 1 << 5;
    /// A `shutdown` succeeded on it (SHUT_RD/WR/RDWR in the `SHUT_*` bits).
    pub const SHUTDOWN: u32 = 1 << 6;
    pub const SHUT_RD: u32 = 1 << 7;
    pub const SHUT_WR: u32 = 1 << 8;
    /// A call failed with ECONNRESET.
    pub const RESET_SEEN: u32 = 1 << 9;
    /// A call failed with EPIPE.
    pub const EPIPE_SEEN: u32 = 1 << 10;
    /// Created by `socketpair` (connected from birth).
    pub const PAIRED: u32 = 1 << 11;
    /// Created by a hook (`socket`, `socketpair`, `accept`): its history is complete.
    pub const TRACKED: u32 = 1 << 12;
    /// Learnt about at event time (inherited, or created where no hook sees it).
    pub const LATE: u32 = 1 << 13;
    /// A call failed with ETIMEDOUT: the kernel gave up on a silent path.
    pub const TIMEOUT_SEEN: u32 = 1 << 14;
    /// A call failed with an errno of `is_unreachable`: an ICMP error from the path (or no
    /// route here).
    pub const UNREACH_SEEN: u32 = 1 << 15;
    /// A listener the kernel confirmed (at `listen`) as TCP or unix stream or seqpacket: its
    /// `accept` may be given errshim's own address buffer (see `hooks::lend_accept_buffer`).
    pub const LENDS_ADDRESS: u32 = 1 << 16;
    /// A `reset` fault of errshim's aborted the connection (the record keeps the rule and the
    /// byte counts from just before): what follows is the injection's doing, not the peer's.
    pub const RESET_INJECTED: u32 = 1 << 17;
    /// A fault rule of errshim's failed its `connect` (no SYN reached the peer): what follows
    /// is the injection's doing.
    pub const CONNECT_INJECTED: u32 = 1 << 18;
}

/// The errnos that say the path could not reach the host (an ICMP error, or no route).
/// ICMPv6's "administratively prohibited" is EACCES, which a security module gives too: see
/// `icmp_prohibited`.
pub fn is_unreachable(errno: i32) -> bool {
    matches!(
        errno,
        libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN | libc::ENETDOWN | libc::ENONET
    )
}

/// EACCES that came from the path: only IPv6 (ICMPv4's prohibited is EHOSTUNREACH), and only
/// where a segment is known to have left (a security module refuses before anything is sent).
/// A failed connect clears the counts of segments sent (`tcp_disconnect`) but not the SYN's
/// retransmissions; an ICMP error that came at once leaves neither, and then errshim cannot
/// tell (`denied`'s text says both).
fn icmp_prohibited(errno: i32, f: &Facts) -> bool {
    errno == libc::EACCES
        && f.kind == Some(Kind::Tcp6)
        && f.evidence.is_some_and(|e| e.segs_out > 0 || e.retransmits > 0)
}

/// A refusal by this host's own policy: EPERM (netfilter dropped or rejected the packet on
/// its way out), EACCES not from the path (SELinux, AppArmor, Landlock, a cgroup program).
fn denied(errno: i32, f: &Facts) -> bool {
    errno == libc::EPERM || (errno == libc::EACCES && !icmp_prohibited(errno, f))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    NeverConnected,
    PeerReset,
    PeerClosed,
    ConnectFailed,
    ShutDownBefore,
    UdpUnconnected,
    Listener,
    /// ENOTCONN from `close`, which Linux never returns.
    NotFromKernel,
    Unknown,
    /// A fault rule made this happen.
    Injected,
    /// Errnos that are not about the connection's end: what they mean.
    WouldBlock,
    Interrupted,
    InvalidArgument,
    BadDescriptor,
    BadAddress,
    MessageTooLong,
    NoBufferSpace,
    TooManyFiles,
    /// The kernel gave up retransmitting unacknowledged data (or a SYN it had answered).
    TimeoutRetransmit,
    /// Keepalive probes went unanswered.
    TimeoutKeepalive,
    /// `TCP_USER_TIMEOUT` expired.
    TimeoutUser,
    /// An ICMP error from the path (host or network unreachable, administratively prohibited),
    /// or no route here.
    Unreachable,
    /// ECONNREFUSED on UDP: the peer answered a datagram with ICMP port unreachable.
    PortUnreachable,
    /// EPERM or EACCES from this host's own policy (a firewall rule, a security module).
    Denied,
}

impl Cause {
    /// Every cause, in declaration order (so `ALL[c as usize] == c`).
    pub const ALL: [Cause; 24] = [
        Cause::NeverConnected,
        Cause::PeerReset,
        Cause::PeerClosed,
        Cause::ConnectFailed,
        Cause::ShutDownBefore,
        Cause::UdpUnconnected,
        Cause::Listener,
        Cause::NotFromKernel,
        Cause::Unknown,
        Cause::Injected,
        Cause::WouldBlock,
        Cause::Interrupted,
        Cause::InvalidArgument,
        Cause::BadDescriptor,
        Cause::BadAddress,
        Cause::MessageTooLong,
        Cause::NoBufferSpace,
        Cause::TooManyFiles,
        Cause::TimeoutRetransmit,
        Cause::TimeoutKeepalive,
        Cause::TimeoutUser,
        Cause::Unreachable,
        Cause::PortUnreachable,
        Cause::Denied,
    ];

    /// The cause an errno has whatever the connection's state, for those that are not about
    /// its end.
    pub fn of_errno(errno: i32) -> Option<Cause> {
        Some(match errno {
            libc::EAGAIN => Cause::WouldBlock,
            libc::EINTR => Cause::Interrupted,
            libc::EINVAL => Cause::InvalidArgument,
            libc::EBADF => Cause::BadDescriptor,
            libc::EFAULT => Cause::BadAddress,
            libc::EMSGSIZE => Cause::MessageTooLong,
            libc::ENOBUFS | libc::ENOMEM => Cause::NoBufferSpace,
            libc::EMFILE | libc::ENFILE => Cause::TooManyFiles,
            _ => return None,
        })
    }

    /// 1-based index for compact storage (0 means "no cause").
    pub fn index(self) -> u8 {
        self as u8 + 1
    }

    pub fn from_index(i: u8) -> Option<Cause> {
        Self::ALL.get((i as usize).checked_sub(1)?).copied()
    }

    pub fn code(self) -> &'static str {
        match self {
            Cause::NeverConnected => "never_connected",
            Cause::PeerReset => "peer_reset",
            Cause::PeerClosed => "peer_closed",
            Cause::ConnectFailed => "connect_failed",
            Cause::ShutDownBefore => "shut_down_before",
            Cause::UdpUnconnected => "udp_unconnected",
            Cause::Listener => "listener",
            Cause::NotFromKernel => "not_from_kernel",
            Cause::Unknown => "unknown",
            Cause::Injected => "injected",
            Cause::WouldBlock => "would_block",
            Cause::Interrupted => "interrupted",
            Cause::InvalidArgument => "invalid_argument",
            Cause::BadDescriptor => "bad_descriptor",
            Cause::BadAddress => "bad_address",
            Cause::MessageTooLong => "message_too_long",
            Cause::NoBufferSpace => "no_buffer_space",
            Cause::TooManyFiles => "too_many_files",
            Cause::TimeoutRetransmit => "timeout_retransmit",
            Cause::TimeoutKeepalive => "timeout_keepalive",
            Cause::TimeoutUser => "timeout_user",
            Cause::Unreachable => "unreachable",
            Cause::PortUnreachable => "port_unreachable",
            Cause::Denied => "denied",
        }
    }

    /// The sentence for a connection with this history: "the client" only where errshim saw
    /// it accepted, "the server" where it saw it connected, "the peer" otherwise.
    pub fn text_for(self, history: u32, errno: i32) -> &'static str {
        let accepted = history & hist::ACCEPTED != 0;
        let connected = history & (hist::CONNECTED | hist::CONNECT_PENDING) != 0;
        match self {
            Cause::ConnectFailed if errno == libc::ECONNREFUSED => "the connect was refused: nothing listens at that address and port (the host answered with an RST), or a firewall rejected it (an RST, or ICMP port unreachable). Check that the server runs and listens there",
            Cause::ConnectFailed if errno == libc::ETIMEDOUT => "the connect timed out: no answer to the SYN (net.ipv4.tcp_syn_retries): the host is down, a firewall drops the packets, or the listener's accept queue is full (check its listen backlog and net.core.somaxconn)",

            Cause::PeerReset if history & hist::LISTENING != 0 => "a client reset its connection before the program accepted it: harmless (the client gave up while waiting in the accept queue; a full or slow queue makes more of these)",
            Cause::PeerReset if accepted => "the client aborted the connection (RST), or a middlebox on the path reset it: clients that go away mid-connection (a closed tab, a phone changing networks) do this all day; harmless at close (a lingering close lets a client read the whole response before it resets)",
            Cause::PeerReset if connected => "the server aborted the connection (RST), or a middlebox on the path reset it (a load balancer's or NAT's idle timeout: keep this side's keepalive or idle time below the path's)",
            Cause::PeerClosed if accepted => "the client's orderly close had already finished on both sides (FIN exchanged) before this call: harmless at shutdown or close; elsewhere the program used the connection after its end of file",
            Cause::PeerClosed if connected => "the server's orderly close had already finished on both sides (FIN exchanged) before this call: harmless at shutdown or close; elsewhere the program used the connection after its end of file",
            other => other.text(),
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Cause::NeverConnected => "no successful connect or accept was seen on this socket: it was never connected (harmless at close; elsewhere the program used a socket before or without connecting it)",
            Cause::PeerReset => "the peer aborted the connection (RST), or a middlebox on the path reset it",
            Cause::PeerClosed => "the orderly close had already finished on both sides (FIN exchanged) before this call: harmless at shutdown or close",
            Cause::ConnectFailed => "the connect was refused or never completed",
            Cause::ShutDownBefore => "an earlier shutdown on this descriptor had already torn it down (a listener or an unfinished connect): harmless, the second shutdown has nothing left to do",
            Cause::UdpUnconnected => "a UDP socket with no connected peer: send with an address (sendto), or connect the socket first",
            Cause::Listener => "a listening socket has no peer to read from or shut down: a bug in the caller (harmless at close)",
            Cause::NotFromKernel => "Linux never returns ENOTCONN from close (a socket's close gives 0 or EBADF): another interposer or wrapper library produced it, or errno was read after a call that had succeeded",
            Cause::Unknown => "not enough is known about this descriptor (inherited, or created where errshim could not see it): preload errshim into the process that makes the socket to see its history",
            Cause::Injected => "errshim injected this on purpose (a fault rule of ERRSHIM_FAULTS or the control file)",
            Cause::WouldBlock => "a non-blocking call found nothing to do yet (no data to read, no room to write, no connection to accept): wait for readiness and retry; not an error of the connection",
            Cause::Interrupted => "a signal arrived during the call: retry it (SA_RESTART restarts most calls); not an error of the connection",
            Cause::InvalidArgument => "an argument the kernel refused (flags, length, or a call this socket's state or type does not allow): a bug in the caller, not the network",
            Cause::BadDescriptor => "the descriptor is not open (closed already, perhaps by another thread, or never opened): a bug in the caller",
            Cause::BadAddress => "a buffer or address pointer outside the process's memory: a bug in the caller",
            Cause::MessageTooLong => "the datagram is larger than the socket or the path allows (a UDP payload over 65,507 bytes, or over the path MTU with don't-fragment set)",
            Cause::NoBufferSpace => "the kernel is short of memory for socket buffers (or a queue is full): transient under memory pressure; check the host's memory and net.core buffer limits",
            Cause::TooManyFiles => "the process (EMFILE) or the system (ENFILE) has no descriptor left: raise RLIMIT_NOFILE (ulimit -n, LimitNOFILE=) or find the descriptor leak",
            Cause::TimeoutRetransmit => "the kernel retransmitted data that was never acknowledged until it gave up (net.ipv4.tcp_retries2): the path silently dropped the packets (a firewall or NAT that lost the flow's state, a load balancer past its idle timeout) or the host vanished; no RST was involved. Keep idle connections below the path's idle timeout (keepalive), or set TCP_USER_TIMEOUT to fail sooner",
            Cause::TimeoutKeepalive => "keepalive probes went unanswered until the kernel gave up (SO_KEEPALIVE, TCP_KEEPIDLE/INTVL/CNT): the host vanished, or the path silently dropped the idle flow (a NAT or load balancer idle timeout); no RST was involved. Probe more often than the path's idle timeout if it forgets idle flows",
            Cause::TimeoutUser => "TCP_USER_TIMEOUT expired: data or keepalive probes went unacknowledged for longer than the program allows; the path silently dropped the packets or the host vanished; no RST was involved. Raise TCP_USER_TIMEOUT if the path is only slow",
            Cause::Unreachable => "the host or its network is unreachable: a router or firewall on the path answered with ICMP (host or network unreachable, or administratively prohibited: EACCES over IPv6), or this host has no route. Check the routes and the firewalls between the two hosts",
            Cause::PortUnreachable => "the peer answered an earlier datagram with ICMP port unreachable: nothing listens on that port there (a connected UDP socket hears of it on its next call). Check that the peer's service runs and listens on that port",
            Cause::Denied => "this host's own policy refused the call: a firewall rule on this host (EPERM: netfilter dropped or rejected the packet on its way out) or a security module (EACCES: SELinux, AppArmor, Landlock, a cgroup program). Check the host's firewall rules and the audit log",
        }
    }

    /// The sentence for these facts: `text_for`, or where the kernel's evidence says more
    /// than the history (a reset of a connection that never received a byte, or one that came
    /// while the kernel was retransmitting), the sentence for that.
    pub fn text_of(self, f: &Facts) -> &'static str {
        let connected = f.history & (hist::CONNECTED | hist::CONNECT_PENDING) != 0;
        let accepted = f.history & hist::ACCEPTED != 0;
        let e = f.evidence.copied().unwrap_or_default();
        match self {
            Cause::PeerReset if !accepted && connected && f.bytes_received == Some(0) && f.history & hist::LISTENING == 0 => "the server, or a middlebox, reset the connection before sending a byte: a listener whose accept queue was full (net.ipv4.tcp_abort_on_overflow), a server that dropped the connection before answering (a crash, a limit, a close with unread data), or a firewall rejecting the flow with an RST. Check the server's logs and its listen backlog (net.core.somaxconn)",
            Cause::PeerReset if e.retransmits > 0 || e.probes > 0 => "an RST ended the connection while the kernel was still retransmitting or probing (the path had gone silent): a host that came back without the connection (it rebooted), a NAT or load balancer that forgot the flow and rejects it, or a firewall. Keep idle connections below the path's idle timeout (keepalive)",
            Cause::Denied if f.kind == Some(Kind::Tcp6) && (f.errno == libc::EACCES || f.connect_errno == libc::EACCES) => "refused by this host's policy (a security module: SELinux, AppArmor, Landlock, a cgroup program) or by a router or firewall on the path answering ICMPv6 \"administratively prohibited\" (both are EACCES, and no segment is known to have left): check the audit log, then the firewalls on the path",
            Cause::Denied if f.kind.is_some_and(Kind::is_unix) => "the socket file's permissions refused it (EACCES; a security module can too): check the owner and mode of the socket and of its directory",
            Cause::TimeoutRetransmit if e.probes > 0 && e.retransmits == 0 => "the peer had closed its receive window (it stopped reading) and the kernel's window probes went unanswered until it gave up (net.ipv4.tcp_retries2): the peer hung or vanished, or the path dropped the flow; no RST was involved. Look at the peer: a stuck reader",
            // The later calls on a socket whose connect failed say ENOTCONN or EPIPE: the
            // sentence is the connect's.
            Cause::ConnectFailed if f.connect_errno != 0 => self.text_for(f.history, f.connect_errno),
            Cause::Injected if f.history & hist::RESET_INJECTED != 0 => {
                RESET_BY_RULE.get(usize::from(f.reset_rule).wrapping_sub(1)).copied().unwrap_or(self.text())
            }
            Cause::Injected if f.history & hist::CONNECT_INJECTED != 0 => {
                CONNECT_BY_RULE.get(usize::from(f.reset_rule).wrapping_sub(1)).copied().unwrap_or(self.text())
            }
            other => other.text_for(f.history, f.errno),
        }
    }
}

/// The sentence for the later failures of a connection that a fault rule's `reset` aborted,
/// by the rule's number (1 to `MAX_RULES`).
macro_rules! reset_texts {
    ($($n:literal)*) => {
        [$(concat!(
            "errshim's fault rule ",
            $n,
            " (reset) reset this connection earlier (an RST it sent with connect(AF_UNSPEC)): this failure follows from the injection, not from the peer or the path"
        )),*]
    };
}

const RESET_BY_RULE: [&str; crate::policy::faults::MAX_RULES] = reset_texts!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);

/// The same for a socket whose connect a fault rule failed.
macro_rules! connect_texts {
    ($($n:literal)*) => {
        [$(concat!(
            "errshim's fault rule ",
            $n,
            " failed this socket's connect earlier (no SYN reached the peer): this failure follows from the injection, not from the peer or the path"
        )),*]
    };
}

const CONNECT_BY_RULE: [&str; crate::policy::faults::MAX_RULES] =
    connect_texts!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);

/// TCP states as `TCP_INFO` reports them (include/net/tcp_states.h).
pub const TCP_CLOSE: u8 = 7;
pub const TCP_LISTEN: u8 = 10;

pub fn tcp_state_name(s: u8) -> &'static str {
    match s {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "?",
    }
}

/// Everything the classification looks at.
#[derive(Clone, Copy, Debug, Default)]
pub struct Facts<'a> {
    pub call: Option<Call>,
    pub errno: i32,
    pub kind: Option<Kind>,
    pub history: u32,
    /// `TCP_INFO`'s state, for TCP sockets that are still open.
    pub tcp_state: Option<u8>,
    /// `poll` reported POLLERR: an error (a reset) is pending and not yet consumed.
    pub pending_error: bool,
    /// The kernel still reports a peer address (`getpeername` works).
    pub has_peer: bool,
    /// `TCP_INFO`'s retransmission and keepalive state (TCP sockets that got anywhere).
    pub evidence: Option<&'a Evidence>,
    /// The socket's own timeouts (asked only where the errno or the history is a timeout).
    pub timeouts: Option<&'a Timeouts>,
    /// `TCP_INFO`'s count of bytes received.
    pub bytes_received: Option<u64>,
    /// errno of the failed `connect` (0: none).
    pub connect_errno: i32,
    /// The fault rule (1-based) whose `reset` aborted the connection or whose errno failed its
    /// connect (0: none).
    pub reset_rule: u8,
}

/// Whether these facts are about a timeout (so that `timeouts` is worth asking for).
pub fn timed_out(errno: i32, history: u32) -> bool {
    errno == libc::ETIMEDOUT || history & hist::TIMEOUT_SEEN != 0
}

/// Which limit ended a connection that timed out: `TCP_USER_TIMEOUT` when the program set
/// it (it overrides both others), keepalive when it is on and only probes were out (no
/// retransmission), else the retransmission (or zero-window probe) limit. The kernel clears
/// `unacked` and `backoff` when it aborts (it purges the write queue), so they cannot tell.
fn timeout_kind(f: &Facts) -> Cause {
    let t = f.timeouts.copied().unwrap_or_default();
    if t.user_timeout_ms.is_some_and(|ms| ms > 0) {
        return Cause::TimeoutUser;
    }
    let e = f.evidence.copied().unwrap_or_default();
    if t.keepalive.is_some() && e.retransmits == 0 {
        return Cause::TimeoutKeepalive;
    }
    Cause::TimeoutRetransmit
}

pub fn classify(f: &Facts) -> Cause {
    use hist::*;
    let h = f.history;
    let has = |bits: u32| h & bits != 0;
    if f.call == Some(Call::Close) && f.errno == libc::ENOTCONN {
        return Cause::NotFromKernel;
    }
    if let Some(c) = Cause::of_errno(f.errno) {
        return c;
    }
    let kind = f.kind.unwrap_or(Kind::Unknown);
    match f.call {
        Some(Call::Connect) if is_unreachable(f.errno) || icmp_prohibited(f.errno, f) => return Cause::Unreachable,
        Some(Call::Connect) if denied(f.errno, f) => return Cause::Denied,
        Some(Call::Connect) => return Cause::ConnectFailed,
        // A connection the client reset before the program accepted it.
        Some(Call::Accept) if f.errno == libc::ECONNABORTED => return Cause::PeerReset,
        Some(Call::Accept) => return Cause::Unknown,
        _ => {}
    }
    // errshim aborted this connection itself, or failed its connect: ENOTCONN, EPIPE,
    // ECONNRESET... are its doing.
    if has(RESET_INJECTED | CONNECT_INJECTED) {
        return Cause::Injected;
    }
    // A plain byte, 0 when unknown (TCP states start at 1): compared as an `Option<u8>`, the
    // optimiser may compare both bytes at once, and a None's payload byte is undefined
    // (memcheck reports it).
    let state = f.tcp_state.unwrap_or(0);
    if kind.is_udp() && f.errno == libc::ECONNREFUSED {
        return Cause::PortUnreachable;
    }
    if kind.is_udp() && !f.has_peer && !has(CONNECTED) {
        return Cause::UdpUnconnected;
    }
    if state == TCP_LISTEN {
        return Cause::Listener;
    }
    let established_once = has(CONNECTED | ACCEPTED | PAIRED);
    if has(SHUTDOWN) && !established_once && (has(LISTENING) || has(CONNECT_PENDING)) {
        return Cause::ShutDownBefore;
    }
    // An ICMP error: at connect it fails the connect; on a connection it is kept as a soft
    // error and given instead of ETIMEDOUT when the retransmissions run out.
    if is_unreachable(f.errno)
        || has(UNREACH_SEEN)
        || icmp_prohibited(f.errno, f)
        || (!established_once && icmp_prohibited(f.connect_errno, f))
    {
        return Cause::Unreachable;
    }
    if denied(f.errno, f) || (!established_once && denied(f.connect_errno, f)) {
        return Cause::Denied;
    }
    if !established_once && has(CONNECT_FAILED | CONNECT_PENDING) {
        return Cause::ConnectFailed;
    }
    if timed_out(f.errno, h) {
        return timeout_kind(f);
    }
    if f.errno == libc::ECONNRESET || has(RESET_SEEN) || (f.pending_error && established_once) {
        return Cause::PeerReset;
    }
    // CLOSE after the peer's FIN needs our own FIN too (or an RST): without a shutdown(SHUT_WR)
    // the read's 0 came after a reset whose error the program consumed (SO_ERROR).
    let our_fin_or_open = has(SHUT_WR) || state != TCP_CLOSE;
    if has(READ_EOF) && established_once && our_fin_or_open {
        return Cause::PeerClosed;
    }
    if has(TRACKED) && !established_once && !has(LISTENING) {
        return Cause::NeverConnected;
    }
    if established_once && state == TCP_CLOSE {
        // Closed without a FIN errshim saw: an abort whose error someone else consumed.
        return Cause::PeerReset;
    }
    if has(EPIPE_SEEN) && established_once {
        return Cause::PeerReset;
    }
    Cause::Unknown
}

/// Writes the history bits as `connect=ok,accepted,read_eof,shutdown=SHUT_WR,...`.
pub fn write_history(h: u32, out: &mut impl core::fmt::Write) -> core::fmt::Result {
    use hist::*;
    let names: [(u32, &str); 15] = [
        (CONNECTED, "connected"),
        (CONNECT_PENDING, "connect_pending"),
        (CONNECT_FAILED, "connect_failed"),
        (ACCEPTED, "accepted"),
        (PAIRED, "socketpair"),
        (LISTENING, "listening"),
        (READ_EOF, "read_eof"),
        (RESET_SEEN, "reset_seen"),
        (EPIPE_SEEN, "epipe_seen"),
        (TIMEOUT_SEEN, "timeout_seen"),
        (UNREACH_SEEN, "unreachable_seen"),
        (RESET_INJECTED, "reset_injected"),
        (CONNECT_INJECTED, "connect_injected"),
        (LATE, "seen_late"),
        (0, ""),
    ];
    let mut first = true;
    let mut sep = |out: &mut dyn core::fmt::Write| -> core::fmt::Result {
        if !first {
            out.write_str(",")?;
        }
        first = false;
        Ok(())
    };
    for (bit, name) in names {
        if bit != 0 && h & bit != 0 {
            sep(out)?;
            out.write_str(name)?;
        }
    }
    if h & SHUTDOWN != 0 {
        sep(out)?;
        out.write_str(match (h & SHUT_RD != 0, h & SHUT_WR != 0) {
            (true, true) => "shutdown=SHUT_RDWR",
            (true, false) => "shutdown=SHUT_RD",
            _ => "shutdown=SHUT_WR",
        })?;
    }
    if first {
        out.write_str("none")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::hist::*;
    use super::*;

    fn facts(call: Call, errno: i32, kind: Kind, history: u32, state: Option<u8>, pending: bool) -> Facts<'static> {
        Facts {
            call: Some(call),
            errno,
            kind: Some(kind),
            history,
            tcp_state: state,
            pending_error: pending,
            ..Facts::default()
        }
    }

    #[test]
    fn timeouts_and_unreachable() {
        let ev = |retransmits: u8, probes: u8| Evidence {
            retransmits,
            probes,
            ..Evidence::default()
        };
        let timed = |errno: i32, history: u32, e: Evidence, t: Timeouts| {
            classify(&Facts {
                call: Some(Call::Shutdown),
                errno,
                kind: Some(Kind::Tcp6),
                history,
                tcp_state: Some(TCP_CLOSE),
                evidence: Some(&e),
                timeouts: Some(&t),
                ..Facts::default()
            })
        };
        let conn = TRACKED | CONNECTED;
        let ka = Timeouts {
            user_timeout_ms: Some(0),
            keepalive: Some((1, 1, 1)),
        };
        let ut = Timeouts {
            user_timeout_ms: Some(1000),
            keepalive: None,
        };
        let none = Timeouts::default();
        // The read that timed out, and the shutdown after it.
        assert_eq!(timed(libc::ETIMEDOUT, conn, ev(2, 0), none), Cause::TimeoutRetransmit);
        assert_eq!(
            timed(libc::ENOTCONN, conn | TIMEOUT_SEEN, ev(2, 0), none),
            Cause::TimeoutRetransmit
        );
        assert_eq!(
            timed(libc::ENOTCONN, conn | TIMEOUT_SEEN, ev(0, 1), ka),
            Cause::TimeoutKeepalive
        );
        assert_eq!(
            timed(libc::EPIPE, conn | TIMEOUT_SEEN, ev(0, 1), ut),
            Cause::TimeoutUser
        );
        assert_eq!(
            timed(libc::ENOTCONN, conn | TIMEOUT_SEEN, ev(3, 0), ut),
            Cause::TimeoutUser
        );
        // Keepalive on, but data was being retransmitted: retransmission.
        assert_eq!(
            timed(libc::ENOTCONN, conn | TIMEOUT_SEEN, ev(3, 0), ka),
            Cause::TimeoutRetransmit
        );
        // Probes with keepalive off: zero-window probes, the retransmission limit.
        assert_eq!(timed(libc::ETIMEDOUT, conn, ev(0, 3), none), Cause::TimeoutRetransmit);
        // A connect that timed out stays a failed connect.
        assert_eq!(
            timed(libc::ENOTCONN, TRACKED | CONNECT_FAILED | TIMEOUT_SEEN, ev(1, 0), none),
            Cause::ConnectFailed
        );
        // ICMP: at connect, and as the soft error given when retransmissions run out.
        assert_eq!(
            timed(libc::ENOTCONN, TRACKED | CONNECT_FAILED | UNREACH_SEEN, ev(1, 0), none),
            Cause::Unreachable
        );
        assert_eq!(timed(libc::EHOSTUNREACH, conn, ev(2, 0), none), Cause::Unreachable);
        let connect = |errno: i32, kind: Kind| {
            classify(&Facts {
                call: Some(Call::Connect),
                errno,
                kind: Some(kind),
                ..Facts::default()
            })
        };
        assert_eq!(
            connect(libc::EACCES, Kind::Tcp6),
            Cause::Denied,
            "no segment known to have left"
        );
        let f = Facts {
            call: Some(Call::Connect),
            errno: libc::EACCES,
            kind: Some(Kind::Tcp6),
            ..Facts::default()
        };
        assert!(Cause::Denied.text_of(&f).contains("ICMPv6"), "both possibilities named");
        let sent = Evidence {
            segs_out: 1,
            ..Evidence::default()
        };
        let prohibited = Facts {
            call: Some(Call::Connect),
            errno: libc::EACCES,
            kind: Some(Kind::Tcp6),
            evidence: Some(&sent),
            ..Facts::default()
        };
        assert_eq!(classify(&prohibited), Cause::Unreachable, "ICMPv6 prohibited the SYN");
        let v4 = Facts {
            kind: Some(Kind::Tcp4),
            ..prohibited
        };
        assert_eq!(classify(&v4), Cause::Denied, "ICMPv4's prohibited is EHOSTUNREACH");
        assert_eq!(
            connect(libc::EPERM, Kind::Tcp4),
            Cause::Denied,
            "netfilter on the way out"
        );
        assert_eq!(connect(libc::ENETUNREACH, Kind::Tcp4), Cause::Unreachable);
        assert_eq!(connect(libc::ECONNREFUSED, Kind::Tcp4), Cause::ConnectFailed);
        let udp_send = Facts {
            call: Some(Call::Send),
            errno: libc::ECONNREFUSED,
            kind: Some(Kind::Udp6),
            history: TRACKED | CONNECTED,
            ..Facts::default()
        };
        assert_eq!(classify(&udp_send), Cause::PortUnreachable);
    }

    #[test]
    fn texts_follow_the_evidence() {
        fn f(history: u32, received: Option<u64>, e: &Evidence, connect_errno: i32) -> Facts<'_> {
            Facts {
                call: Some(Call::Shutdown),
                errno: libc::ENOTCONN,
                kind: Some(Kind::Tcp4),
                history,
                tcp_state: Some(TCP_CLOSE),
                evidence: Some(e),
                bytes_received: received,
                connect_errno,
                ..Facts::default()
            }
        }
        let reset = TRACKED | CONNECTED | RESET_SEEN;
        let quiet = Evidence::default();
        assert!(Cause::PeerReset
            .text_of(&f(reset, Some(0), &quiet, 0))
            .contains("before sending a byte"));
        assert!(Cause::PeerReset
            .text_of(&f(reset, Some(10), &quiet, 0))
            .starts_with("the server aborted"));
        let busy = Evidence {
            retransmits: 2,
            ..quiet
        };
        assert!(Cause::PeerReset
            .text_of(&f(reset, Some(10), &busy, 0))
            .contains("still retransmitting"));
        let failed = TRACKED | CONNECT_FAILED;
        assert!(Cause::ConnectFailed
            .text_of(&f(failed, None, &quiet, libc::ETIMEDOUT))
            .contains("timed out"));
        assert!(Cause::ConnectFailed
            .text_of(&f(failed, None, &quiet, libc::ECONNREFUSED))
            .contains("refused"));
        for c in Cause::ALL {
            assert!(!c.text().is_empty() && c.code().bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
    }

    #[test]
    fn recipes() {
        let t = TRACKED;
        let enotconn = libc::ENOTCONN;
        // A: never connected.
        assert_eq!(
            classify(&facts(Call::Shutdown, enotconn, Kind::Tcp4, t, Some(7), false)),
            Cause::NeverConnected
        );
        // A, UDP.
        assert_eq!(
            classify(&facts(Call::Shutdown, enotconn, Kind::Udp4, t, None, false)),
            Cause::UdpUnconnected
        );
        // B: FIN exchange finished.
        let b = t | CONNECTED | SHUTDOWN | SHUT_WR | READ_EOF;
        assert_eq!(
            classify(&facts(Call::Shutdown, enotconn, Kind::Tcp4, b, Some(7), false)),
            Cause::PeerClosed
        );
        // C: the reset's error consumed by the program's own SO_ERROR, then a read gave 0.
        assert_eq!(
            classify(&facts(
                Call::Write,
                libc::EPIPE,
                Kind::Tcp4,
                t | CONNECTED | READ_EOF,
                Some(7),
                false
            )),
            Cause::PeerReset
        );
        // C: reset consumed by a read, or still pending.
        assert_eq!(
            classify(&facts(
                Call::Shutdown,
                enotconn,
                Kind::Tcp4,
                t | CONNECTED | RESET_SEEN,
                Some(7),
                false
            )),
            Cause::PeerReset
        );
        assert_eq!(
            classify(&facts(
                Call::Shutdown,
                enotconn,
                Kind::Tcp4,
                t | CONNECTED,
                Some(7),
                true
            )),
            Cause::PeerReset
        );
        // D: reset before accept.
        assert_eq!(
            classify(&facts(
                Call::Shutdown,
                enotconn,
                Kind::Tcp4,
                t | ACCEPTED,
                Some(7),
                true
            )),
            Cause::PeerReset
        );
        // E: refused, blocking or not (the pending ECONNREFUSED is not a reset).
        assert_eq!(
            classify(&facts(
                Call::Shutdown,
                enotconn,
                Kind::Tcp4,
                t | CONNECT_FAILED,
                Some(7),
                false
            )),
            Cause::ConnectFailed
        );
        assert_eq!(
            classify(&facts(
                Call::Shutdown,
                enotconn,
                Kind::Tcp4,
                t | CONNECT_PENDING,
                Some(7),
                true
            )),
            Cause::ConnectFailed
        );
        // F: SYN_SENT torn down by a first shutdown.
        let f = t | CONNECT_PENDING | SHUTDOWN | SHUT_RD | SHUT_WR;
        assert_eq!(
            classify(&facts(Call::Shutdown, enotconn, Kind::Tcp4, f, Some(7), false)),
            Cause::ShutDownBefore
        );
        // G: listener torn down, and a live listener.
        let g = t | LISTENING | SHUTDOWN | SHUT_RD | SHUT_WR;
        assert_eq!(
            classify(&facts(Call::Shutdown, enotconn, Kind::Tcp4, g, Some(7), false)),
            Cause::ShutDownBefore
        );
        assert_eq!(
            classify(&facts(Call::Read, enotconn, Kind::Tcp4, t | LISTENING, Some(10), false)),
            Cause::Listener
        );
        // close: never from the kernel.
        assert_eq!(
            classify(&facts(Call::Close, enotconn, Kind::Tcp4, t | CONNECTED, None, false)),
            Cause::NotFromKernel
        );
        // Nothing known.
        assert_eq!(
            classify(&facts(Call::Shutdown, enotconn, Kind::Tcp4, LATE, Some(7), false)),
            Cause::Unknown
        );
    }

    #[test]
    fn errnos_not_about_the_end_say_what_they_mean_whatever_the_history() {
        let t = TRACKED | CONNECTED;
        for (errno, cause) in [
            (libc::EAGAIN, Cause::WouldBlock),
            (libc::EINTR, Cause::Interrupted),
            (libc::EINVAL, Cause::InvalidArgument),
            (libc::EBADF, Cause::BadDescriptor),
            (libc::EFAULT, Cause::BadAddress),
            (libc::EMSGSIZE, Cause::MessageTooLong),
            (libc::ENOBUFS, Cause::NoBufferSpace),
            (libc::EMFILE, Cause::TooManyFiles),
            (libc::ENFILE, Cause::TooManyFiles),
        ] {
            for h in [t, t | RESET_SEEN, CONNECT_PENDING, LATE] {
                let f = facts(Call::Recv, errno, Kind::Tcp4, h, Some(1), true);
                assert_eq!(classify(&f), cause, "errno {errno}, history {h:#x}");
            }
        }
        // ENOTCONN, ECONNRESET, EPIPE stay about the connection's end.
        assert_eq!(Cause::of_errno(libc::ENOTCONN), None);
        assert_eq!(Cause::of_errno(libc::ECONNRESET), None);
    }

    #[test]
    fn texts_speak_of_the_client_only_for_accepted_connections() {
        let accepted = Cause::PeerReset.text_for(TRACKED | ACCEPTED, 0);
        let connected = Cause::PeerReset.text_for(TRACKED | CONNECTED, 0);
        let unknown = Cause::PeerReset.text_for(LATE, 0);
        assert!(
            accepted.starts_with("the client aborted") && accepted.contains("middlebox"),
            "{accepted}"
        );
        assert!(
            connected.starts_with("the server aborted") && !connected.contains("client"),
            "{connected}"
        );
        assert!(
            unknown.starts_with("the peer aborted") && unknown.contains("middlebox"),
            "{unknown}"
        );
        assert!(Cause::PeerClosed
            .text_for(CONNECTED, 0)
            .starts_with("the server's orderly close"));
        for c in Cause::ALL {
            for e in [0, libc::ECONNREFUSED, libc::ETIMEDOUT] {
                let t = c.text_for(CONNECTED, e);
                assert!(!t.contains("client"), "{c:?}: {t}");
            }
        }
        let refused = Cause::ConnectFailed.text_for(CONNECT_FAILED, libc::ECONNREFUSED);
        assert!(refused.contains("nothing listens"), "{refused}");
        let before_accept = Cause::PeerReset.text_for(TRACKED | LISTENING, libc::ECONNABORTED);
        assert!(before_accept.contains("before the program accepted"), "{before_accept}");
    }

    #[test]
    fn what_follows_an_injected_reset_is_the_injections_doing() {
        let h = TRACKED | ACCEPTED | RESET_SEEN | RESET_INJECTED;
        for (call, errno) in [
            (Call::Shutdown, libc::ENOTCONN),
            (Call::Send, libc::EPIPE),
            (Call::Read, libc::ECONNRESET),
        ] {
            let f = Facts {
                reset_rule: 16,
                ..facts(call, errno, Kind::Tcp4, h, Some(TCP_CLOSE), false)
            };
            assert_eq!(classify(&f), Cause::Injected, "{call:?} {errno}");
            let t = Cause::Injected.text_of(&f);
            assert!(
                t.starts_with("errshim's fault rule 16 (reset) reset this connection earlier"),
                "{t}"
            );
        }
        let f = facts(Call::Read, libc::EAGAIN, Kind::Tcp4, h, Some(TCP_CLOSE), false);
        assert_eq!(classify(&f), Cause::WouldBlock, "EAGAIN still means EAGAIN");
        assert_eq!(
            classify(&facts(
                Call::Shutdown,
                libc::ENOTCONN,
                Kind::Tcp4,
                h & !RESET_INJECTED,
                Some(TCP_CLOSE),
                false
            )),
            Cause::PeerReset
        );
        assert!(Cause::Injected
            .text_of(&facts(Call::Send, libc::EIO, Kind::Tcp4, TRACKED, None, false))
            .starts_with("errshim injected this on purpose"));
        let mut s = String::new();
        write_history(h, &mut s).unwrap();
        assert_eq!(s, "accepted,reset_seen,reset_injected");
    }

    #[test]
    fn indexes_round_trip() {
        for (i, c) in Cause::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            assert_eq!(Cause::from_index(c.index()), Some(*c));
        }
        assert_eq!(Cause::from_index(0), None);
        assert_eq!(Cause::from_index(Cause::ALL.len() as u8 + 1), None);
    }

    #[test]
    fn history_text() {
        let mut s = String::new();
        write_history(TRACKED | CONNECTED | READ_EOF | SHUTDOWN | SHUT_WR, &mut s).unwrap();
        assert_eq!(s, "connected,read_eof,shutdown=SHUT_WR");
        let mut s = String::new();
        write_history(TRACKED, &mut s).unwrap();
        assert_eq!(s, "none");
    }
}
