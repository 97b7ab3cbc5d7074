//! The kernel's words for sockets, decoded from what it reports: a descriptor's kind (from
//! `socket()`'s arguments or `SO_TYPE`/`SO_DOMAIN`/`SO_PROTOCOL`) and a socket address (from a
//! `sockaddr` the kernel filled in). Plain values, no system calls.

use crate::text::fmtbuf::StackBuf;
use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr};

/// A descriptor's kind. Stored as one byte in the fd table, 0 meaning "not known".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Unknown = 0,
    Tcp4,
    Tcp6,
    Udp4,
    Udp6,
    UnixStream,
    UnixDgram,
    UnixSeqpacket,
    OtherSocket,
    NotSocket,
    NotOpen,
}

impl Kind {
    #[inline]
    pub fn from_u8(v: u8) -> Kind {
        use Kind::*;
        match v {
            1 => Tcp4,
            2 => Tcp6,
            3 => Udp4,
            4 => Udp6,
            5 => UnixStream,
            6 => UnixDgram,
            7 => UnixSeqpacket,
            8 => OtherSocket,
            9 => NotSocket,
            10 => NotOpen,
            _ => Unknown,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Unknown => "unknown",
            Kind::Tcp4 => "tcp4",
            Kind::Tcp6 => "tcp6",
            Kind::Udp4 => "udp4",
            Kind::Udp6 => "udp6",
            Kind::UnixStream => "unix-stream",
            Kind::UnixDgram => "unix-dgram",
            Kind::UnixSeqpacket => "unix-seqpacket",
            Kind::OtherSocket => "socket",
            Kind::NotSocket => "not-a-socket",
            Kind::NotOpen => "not-open",
        }
    }

    pub fn is_socket(self) -> bool {
        self.is_tcp() || self.is_udp() || self.is_unix() || self == Kind::OtherSocket
    }
    pub fn is_tcp(self) -> bool {
        matches!(self, Kind::Tcp4 | Kind::Tcp6)
    }
    pub fn is_udp(self) -> bool {
        matches!(self, Kind::Udp4 | Kind::Udp6)
    }
    pub fn is_unix(self) -> bool {
        matches!(self, Kind::UnixStream | Kind::UnixDgram | Kind::UnixSeqpacket)
    }

    /// The kind a successful `socket(domain, type, protocol)` created, from its arguments alone.
    pub fn from_socket_args(domain: i32, ty: i32, protocol: i32) -> Kind {
        let ty = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
        match (domain, ty, protocol) {
            (libc::AF_INET, libc::SOCK_STREAM, 0 | libc::IPPROTO_TCP) => Kind::Tcp4,
            (libc::AF_INET6, libc::SOCK_STREAM, 0 | libc::IPPROTO_TCP) => Kind::Tcp6,
            (libc::AF_INET, libc::SOCK_DGRAM, 0 | libc::IPPROTO_UDP) => Kind::Udp4,
            (libc::AF_INET6, libc::SOCK_DGRAM, 0 | libc::IPPROTO_UDP) => Kind::Udp6,
            (libc::AF_UNIX, libc::SOCK_STREAM, _) => Kind::UnixStream,
            (libc::AF_UNIX, libc::SOCK_DGRAM, _) => Kind::UnixDgram,
            (libc::AF_UNIX, libc::SOCK_SEQPACKET, _) => Kind::UnixSeqpacket,
            _ => Kind::OtherSocket,
        }
    }
}

/// A socket address as the kernel reported it, kept by value so events need no heap.
#[derive(Clone, Copy)]
pub enum Addr {
    V4(Ipv4Addr, u16),
    V6(Ipv6Addr, u16),
    /// A filesystem path (bytes without the terminating NUL).
    UnixPath([u8; 108], usize),
    /// An abstract socket name (shown with a leading `@`).
    UnixAbstract([u8; 107], usize),
    UnixUnnamed,
    Family(i32),
}

impl Addr {
    /// Decodes `len` bytes of a sockaddr filled in by the kernel.
    pub fn from_storage(ss: &libc::sockaddr_storage, len: usize) -> Option<Addr> {
        let family = i32::from(ss.ss_family);
        // SAFETY: sockaddr_storage is large and aligned enough for every sockaddr type, and the
        // kernel wrote a sockaddr of `family` into it.
        unsafe {
            match family {
                libc::AF_INET if len >= core::mem::size_of::<libc::sockaddr_in>() => {
                    let sin = &*(ss as *const _ as *const libc::sockaddr_in);
                    let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                    Some(Addr::V4(ip, u16::from_be(sin.sin_port)))
                }
                libc::AF_INET6 if len >= core::mem::size_of::<libc::sockaddr_in6>() => {
                    let sin6 = &*(ss as *const _ as *const libc::sockaddr_in6);
                    let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                    Some(Addr::V6(ip, u16::from_be(sin6.sin6_port)))
                }
                libc::AF_UNIX => {
                    let sun = &*(ss as *const _ as *const libc::sockaddr_un);
                    let off = core::mem::size_of::<libc::sa_family_t>();
                    let n = len.saturating_sub(off).min(sun.sun_path.len());
                    let path = core::slice::from_raw_parts(sun.sun_path.as_ptr() as *const u8, n);
                    match path.first() {
                        None => Some(Addr::UnixUnnamed),
                        Some(0) => {
                            let mut name = [0u8; 107];
                            let m = (n - 1).min(name.len());
                            name[..m].copy_from_slice(&path[1..1 + m]);
                            Some(Addr::UnixAbstract(name, m))
                        }
                        Some(_) => {
                            let m = path.iter().position(|&b| b == 0).unwrap_or(n);
                            let mut p = [0u8; 108];
                            p[..m].copy_from_slice(&path[..m]);
                            Some(Addr::UnixPath(p, m))
                        }
                    }
                }
                _ => Some(Addr::Family(family)),
            }
        }
    }

    /// An IP address as the kernel's `getpeername` writes it (`sockaddr_in`, or `sockaddr_in6`
    /// with no flow label nor scope), and its length; None for other addresses.
    pub fn to_storage(self) -> Option<(libc::sockaddr_storage, usize)> {
        // SAFETY: an all-zero sockaddr_storage is valid.
        let mut ss: libc::sockaddr_storage = unsafe { core::mem::zeroed() };
        let p = (&mut ss as *mut libc::sockaddr_storage).cast::<u8>();
        let len = match self {
            Addr::V4(ip, port) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: port.to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(ip).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than, and aligned for, a sockaddr_in.
                unsafe { p.cast::<libc::sockaddr_in>().write(sin) };
                core::mem::size_of::<libc::sockaddr_in>()
            }
            Addr::V6(ip, port) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: port.to_be(),
                    sin6_flowinfo: 0,
                    sin6_addr: libc::in6_addr { s6_addr: ip.octets() },
                    sin6_scope_id: 0,
                };
                // SAFETY: as for sockaddr_in.
                unsafe { p.cast::<libc::sockaddr_in6>().write(sin6) };
                core::mem::size_of::<libc::sockaddr_in6>()
            }
            _ => return None,
        };
        Some((ss, len))
    }

    /// Writes the address with path bytes as they are (for JSON, which escapes them itself).
    pub fn write_to_raw<const N: usize>(&self, out: &mut StackBuf<N>) {
        match self {
            Addr::UnixPath(p, n) => out.push(p.get(..*n).unwrap_or(&[])),
            Addr::UnixAbstract(p, n) => {
                out.push(b"@");
                out.push(p.get(..*n).unwrap_or(&[]));
            }
            other => other.write_to(out),
        }
    }

    /// Writes the address for a text line; path bytes are escaped by the caller's buffer.
    pub fn write_to<const N: usize>(&self, out: &mut StackBuf<N>) {
        use core::fmt::Write;
        let _ = match self {
            Addr::V4(ip, port) => {
                write_v4(ip, out);
                out.byte(b':');
                out.u((*port).into());
                Ok(())
            }
            Addr::V6(ip, port) => {
                out.byte(b'[');
                write_v6(ip, out);
                out.push(b"]:");
                out.u((*port).into());
                Ok(())
            }
            Addr::UnixPath(p, n) => {
                out.push_escaped(p.get(..*n).unwrap_or(&[]));
                Ok(())
            }
            Addr::UnixAbstract(p, n) => {
                out.push(b"@");
                out.push_escaped(p.get(..*n).unwrap_or(&[]));
                Ok(())
            }
            Addr::UnixUnnamed => write!(out, "(unnamed)"),
            Addr::Family(f) => write!(out, "(family {f})"),
        };
    }
}

/// An IPv4 address as `Ipv4Addr`'s `Display` writes it, without `core::fmt`.
fn write_v4<const N: usize>(ip: &Ipv4Addr, out: &mut StackBuf<N>) {
    for (i, o) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.byte(b'.');
        }
        out.u(o.into());
    }
}

/// An IPv6 address as `Ipv6Addr`'s `Display` writes it (RFC 5952: lowercase, the longest run
/// of two or more zero groups as `::`, the first of equal runs; IPv4-mapped as
/// `::ffff:a.b.c.d`), without `core::fmt`.
fn write_v6<const N: usize>(ip: &Ipv6Addr, out: &mut StackBuf<N>) {
    if let Some(v4) = ip.to_ipv4_mapped() {
        out.push(b"::ffff:");
        return write_v4(&v4, out);
    }
    let g = ip.segments();
    let (mut best, mut best_len, mut run, mut run_len) = (0, 0, 0, 0);
    for (i, &s) in g.iter().enumerate() {
        if s == 0 {
            if run_len == 0 {
                run = i;
            }
            run_len += 1;
            if run_len > best_len {
                (best, best_len) = (run, run_len);
            }
        } else {
            run_len = 0;
        }
    }
    let groups = |out: &mut StackBuf<N>, part: &[u16]| {
        for (i, &s) in part.iter().enumerate() {
            if i > 0 {
                out.byte(b':');
            }
            out.hex_digits(s.into());
        }
    };
    if best_len > 1 {
        groups(out, g.get(..best).unwrap_or(&[]));
        out.push(b"::");
        groups(out, g.get(best + best_len..).unwrap_or(&[]));
    } else {
        groups(out, &g);
    }
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut b = StackBuf::<160>::new();
        self.write_to(&mut b);
        f.write_str(core::str::from_utf8(b.as_bytes()).unwrap_or("?"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_core_writes_them() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut v6: Vec<Ipv6Addr> = [
            "::",
            "::1",
            "1::",
            "1:0:0:1:0:0:0:1",
            "1:0:1:0:1:0:1:0",
            "0:0:1:0:0:1:0:0",
            "::ffff:10.1.2.3",
            "::10.1.2.3",
            "fe80::1:2",
            "2001:db8::ff00:42:8329",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:0",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        for _ in 0..2000 {
            // Groups of zeroes, often: runs of every length in every place.
            let g: [u16; 8] = core::array::from_fn(|_| {
                let r = next();
                if r % 3 == 0 {
                    (r >> 8) as u16
                } else {
                    0
                }
            });
            v6.push(Ipv6Addr::from(g));
        }
        for ip in v6 {
            for port in [0u16, 8080, 65535] {
                let mut b = StackBuf::<80>::new();
                Addr::V6(ip, port).write_to(&mut b);
                assert_eq!(b.as_bytes(), format!("[{ip}]:{port}").as_bytes());
            }
        }
        for _ in 0..500 {
            let ip = Ipv4Addr::from((next() >> 16) as u32);
            let port = next() as u16;
            let mut b = StackBuf::<40>::new();
            Addr::V4(ip, port).write_to(&mut b);
            assert_eq!(b.as_bytes(), format!("{ip}:{port}").as_bytes());
        }
    }

    #[test]
    fn kinds_from_socket_args() {
        let k = Kind::from_socket_args;
        assert_eq!(k(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0), Kind::Tcp4);
        assert_eq!(k(libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_UDP), Kind::Udp6);
        assert_eq!(k(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0), Kind::UnixSeqpacket);
        assert_eq!(
            k(libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_SCTP),
            Kind::OtherSocket
        );
        for v in 0..=11u8 {
            assert_eq!(Kind::from_u8(v) as u8, if v <= 10 { v } else { 0 });
        }
    }
}
