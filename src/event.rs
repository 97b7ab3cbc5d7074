//! One event: what was called, what the kernel answered, what errshim did about it, and the
//! socket's context. Formatted as one text line into a stack buffer.

use crate::errno::Name;
use crate::fmtbuf::StackBuf;
use crate::rules::{Action, Call};
use crate::sockinfo::{Addr, Kind};
use crate::timefmt::Utc;
use core::fmt::Write;

/// The arguments of an interposed call that an event reports. Raw pointers are the caller's
/// own iovec array, read only while the call is still in progress.
#[derive(Clone, Copy)]
pub struct CallArgs {
    pub fd: i32,
    /// `how` for shutdown.
    pub how: i32,
    /// Byte count for plain buffers.
    pub len: usize,
    /// The iovec array of readv/writev/recvmsg/sendmsg, and its length.
    pub iov: *const libc::iovec,
    pub iovcnt: usize,
    pub flags: i32,
    /// The kind the fd table remembered (for close, where the descriptor is already gone).
    pub kind_hint: Kind,
}

impl CallArgs {
    pub const fn fd(fd: i32) -> Self {
        CallArgs {
            fd,
            how: 0,
            len: 0,
            iov: core::ptr::null(),
            iovcnt: 0,
            flags: 0,
            kind_hint: Kind::Unknown,
        }
    }

    pub const fn buf(fd: i32, len: usize, flags: i32) -> Self {
        let mut a = Self::fd(fd);
        a.len = len;
        a.flags = flags;
        a
    }

    pub const fn iov(fd: i32, iov: *const libc::iovec, iovcnt: usize, flags: i32) -> Self {
        let mut a = Self::fd(fd);
        a.iov = iov;
        a.iovcnt = iovcnt;
        a.flags = flags;
        a
    }

    /// Total bytes the iovec array asks for (slow path only).
    pub fn iov_len(&self) -> usize {
        if self.iov.is_null() || self.iovcnt > 1024 {
            return 0;
        }
        // SAFETY: the caller passed iov with iovcnt entries to the call that is in progress.
        let iov = unsafe { core::slice::from_raw_parts(self.iov, self.iovcnt) };
        iov.iter().fold(0usize, |a, v| a.saturating_add(v.iov_len))
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
}

fn shutdown_how(how: i32) -> Option<&'static str> {
    match how {
        libc::SHUT_RD => Some("SHUT_RD"),
        libc::SHUT_WR => Some("SHUT_WR"),
        libc::SHUT_RDWR => Some("SHUT_RDWR"),
        _ => None,
    }
}

fn write_args<const N: usize>(ev: &Event<'_>, b: &mut StackBuf<N>) {
    let a = &ev.args;
    let _ = write!(b, "{}(fd={}", ev.entry, a.fd);
    let _ = match ev.call {
        Call::Close => Ok(()),
        Call::Shutdown => match shutdown_how(a.how) {
            Some(h) => write!(b, ", {h}"),
            None => write!(b, ", how={}", a.how),
        },
        Call::Readv | Call::Writev => write!(b, ", iovcnt={}, len={}", a.iovcnt, a.iov_len()),
        Call::Recvmsg | Call::Sendmsg => write!(b, ", len={}", a.iov_len()),
        _ => write!(b, ", len={}", a.len),
    };
    if a.flags != 0 {
        let _ = write!(b, ", flags={:#x}", a.flags);
    }
    b.push(b")");
}

fn write_addr<const N: usize>(b: &mut StackBuf<N>, key: &str, addr: &Option<Addr>) {
    let _ = write!(b, " {key}=");
    match addr {
        Some(a) => a.write_to(b),
        None => b.push(b"?"),
    }
}

/// `errshim 2026-11-21T10:00:00.123456Z pid=812 tid=812 comm=nginx shutdown(fd=7, SHUT_WR) = -1
/// ENOTCONN -> ignored, returned 0 | tcp4 local=127.0.0.1:8080 peer=? rule=1`
pub fn write_text<const N: usize>(ev: &Event<'_>, b: &mut StackBuf<N>) {
    let _ = write!(b, "errshim {} pid={} tid={} comm=", ev.time, ev.pid, ev.tid);
    b.push_escaped(ev.comm);
    b.push(b" ");
    write_args(ev, b);
    let _ = write!(b, " = {} {} -> ", ev.ret, Name(ev.errno));
    let _ = b.write_str(match ev.action {
        Action::Pass => "passed",
        Action::Log => "logged",
        Action::Ignore | Action::Quiet => "ignored",
        Action::Map(_) => "mapped",
    });
    let _ = write!(b, ", returned {}", ev.returned);
    if ev.returned == -1 {
        let _ = write!(b, " {}", Name(ev.returned_errno));
    }
    let _ = write!(b, " | {}", ev.kind.name());
    if ev.kind.is_socket() {
        write_addr(b, "local", &ev.local);
        write_addr(b, "peer", &ev.peer);
    }
    let _ = write!(b, " rule={}", ev.rule);
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

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
        }
    }

    fn line(ev: &Event<'_>) -> String {
        let mut b = StackBuf::<1024>::new();
        write_text(ev, &mut b);
        String::from_utf8(b.finish_line().to_vec()).unwrap()
    }

    #[test]
    fn shutdown_line() {
        assert_eq!(
            line(&sample()),
            "errshim 2026-11-21T10:00:00.123456Z pid=812 tid=813 comm=nginx shutdown(fd=7, SHUT_WR) = -1 ENOTCONN -> ignored, returned 0 | tcp4 local=127.0.0.1:8080 peer=? rule=1\n"
        );
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
        let l = line(&ev);
        assert!(l.contains("comm=a\\x20b\\x0ac __read_chk(fd=3, len=64) = -1 ENOTCONN -> mapped, returned -1 ECONNRESET | not-a-socket rule=1\n"), "{l}");
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
        assert_eq!(CallArgs::iov(3, iov.as_ptr(), 2, 0).iov_len(), 10);
    }
}
