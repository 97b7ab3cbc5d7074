//! What a descriptor is and which addresses it has, read from the kernel on the slow path only
//! (after a call failed), with calls that never change what the program sees next:
//! `getsockopt(SO_TYPE/SO_DOMAIN/SO_PROTOCOL)`, `getsockname`, `getpeername`. Never `SO_ERROR`.

use crate::sys::raw;
use crate::sys::socket::{Addr, Kind};

/// Asks the kernel what `fd` is. Costs up to three `getsockopt` syscalls: slow path only.
pub fn probe_kind(fd: i32) -> Kind {
    let ty = match raw::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE) {
        Ok(t) => t,
        Err(libc::ENOTSOCK) => return Kind::NotSocket,
        Err(libc::EBADF) => return Kind::NotOpen,
        Err(_) => return Kind::Unknown,
    };
    let domain = raw::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).unwrap_or(-1);
    let protocol = raw::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL).unwrap_or(-1);
    Kind::from_socket_args(domain, ty, protocol)
}

/// Whether the socket at `fd` has the type (stream, datagram, seqpacket) that `kind` says
/// (one `getsockopt`), for kinds the family does not settle.
pub fn type_fits(fd: i32, kind: Kind) -> bool {
    let want = match kind {
        Kind::UnixStream => libc::SOCK_STREAM,
        Kind::UnixDgram => libc::SOCK_DGRAM,
        Kind::UnixSeqpacket => libc::SOCK_SEQPACKET,
        _ => return true,
    };
    raw::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE) == Ok(want)
}

fn name(fd: i32, peer: bool) -> Option<Addr> {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut ss: libc::sockaddr_storage = unsafe { core::mem::zeroed() };
    let len = raw::sockname(fd, peer, &mut ss).ok()?;
    Addr::from_storage(&ss, len.min(core::mem::size_of::<libc::sockaddr_storage>()))
}

pub fn local_addr(fd: i32) -> Option<Addr> {
    name(fd, false)
}

pub fn peer_addr(fd: i32) -> Option<Addr> {
    name(fd, true)
}
