//! Linux errno names and numbers (generated from the kernel headers' asm-generic/errno*.h,
//! expressed through the `libc` constants so a mismatch cannot compile).

/// An errno name stored in place (no pointer): the table then needs no relocation when the
/// library loads, and takes no page of writable memory in every process.
#[derive(Clone, Copy)]
pub struct ErrName([u8; 16]);

impl ErrName {
    const fn new(s: &str) -> ErrName {
        let b = s.as_bytes();
        assert!(b.len() < 16);
        let mut a = [0u8; 16];
        let mut i = 0;
        while i < b.len() {
            a[i] = b[i];
            i += 1;
        }
        ErrName(a)
    }

    pub fn as_str(&self) -> &str {
        let n = self.0.iter().position(|&c| c == 0).unwrap_or(16);
        let bytes = self.0.get(..n).unwrap_or(&[]);
        // SAFETY: made by `new` from a `&str` with no NUL (the names are ASCII), so the bytes
        // before the first NUL are that string.
        unsafe { core::str::from_utf8_unchecked(bytes) }
    }
}

const fn n(s: &str) -> ErrName {
    ErrName::new(s)
}

/// Canonical names first; the aliases after them only serve name lookups.
pub static ERRNO_NAMES: &[(i32, ErrName)] = &[
    (libc::EPERM, n("EPERM")),
    (libc::ENOENT, n("ENOENT")),
    (libc::ESRCH, n("ESRCH")),
    (libc::EINTR, n("EINTR")),
    (libc::EIO, n("EIO")),
    (libc::ENXIO, n("ENXIO")),
    (libc::E2BIG, n("E2BIG")),
    (libc::ENOEXEC, n("ENOEXEC")),
    (libc::EBADF, n("EBADF")),
    (libc::ECHILD, n("ECHILD")),
    (libc::EAGAIN, n("EAGAIN")),
    (libc::ENOMEM, n("ENOMEM")),
    (libc::EACCES, n("EACCES")),
    (libc::EFAULT, n("EFAULT")),
    (libc::ENOTBLK, n("ENOTBLK")),
    (libc::EBUSY, n("EBUSY")),
    (libc::EEXIST, n("EEXIST")),
    (libc::EXDEV, n("EXDEV")),
    (libc::ENODEV, n("ENODEV")),
    (libc::ENOTDIR, n("ENOTDIR")),
    (libc::EISDIR, n("EISDIR")),
    (libc::EINVAL, n("EINVAL")),
    (libc::ENFILE, n("ENFILE")),
    (libc::EMFILE, n("EMFILE")),
    (libc::ENOTTY, n("ENOTTY")),
    (libc::ETXTBSY, n("ETXTBSY")),
    (libc::EFBIG, n("EFBIG")),
    (libc::ENOSPC, n("ENOSPC")),
    (libc::ESPIPE, n("ESPIPE")),
    (libc::EROFS, n("EROFS")),
    (libc::EMLINK, n("EMLINK")),
    (libc::EPIPE, n("EPIPE")),
    (libc::EDOM, n("EDOM")),
    (libc::ERANGE, n("ERANGE")),
    (libc::EDEADLK, n("EDEADLK")),
    (libc::ENAMETOOLONG, n("ENAMETOOLONG")),
    (libc::ENOLCK, n("ENOLCK")),
    (libc::ENOSYS, n("ENOSYS")),
    (libc::ENOTEMPTY, n("ENOTEMPTY")),
    (libc::ELOOP, n("ELOOP")),
    (libc::ENOMSG, n("ENOMSG")),
    (libc::EIDRM, n("EIDRM")),
    (libc::ECHRNG, n("ECHRNG")),
    (libc::EL2NSYNC, n("EL2NSYNC")),
    (libc::EL3HLT, n("EL3HLT")),
    (libc::EL3RST, n("EL3RST")),
    (libc::ELNRNG, n("ELNRNG")),
    (libc::EUNATCH, n("EUNATCH")),
    (libc::ENOCSI, n("ENOCSI")),
    (libc::EL2HLT, n("EL2HLT")),
    (libc::EBADE, n("EBADE")),
    (libc::EBADR, n("EBADR")),
    (libc::EXFULL, n("EXFULL")),
    (libc::ENOANO, n("ENOANO")),
    (libc::EBADRQC, n("EBADRQC")),
    (libc::EBADSLT, n("EBADSLT")),
    (libc::EBFONT, n("EBFONT")),
    (libc::ENOSTR, n("ENOSTR")),
    (libc::ENODATA, n("ENODATA")),
    (libc::ETIME, n("ETIME")),
    (libc::ENOSR, n("ENOSR")),
    (libc::ENONET, n("ENONET")),
    (libc::ENOPKG, n("ENOPKG")),
    (libc::EREMOTE, n("EREMOTE")),
    (libc::ENOLINK, n("ENOLINK")),
    (libc::EADV, n("EADV")),
    (libc::ESRMNT, n("ESRMNT")),
    (libc::ECOMM, n("ECOMM")),
    (libc::EPROTO, n("EPROTO")),
    (libc::EMULTIHOP, n("EMULTIHOP")),
    (libc::EDOTDOT, n("EDOTDOT")),
    (libc::EBADMSG, n("EBADMSG")),
    (libc::EOVERFLOW, n("EOVERFLOW")),
    (libc::ENOTUNIQ, n("ENOTUNIQ")),
    (libc::EBADFD, n("EBADFD")),
    (libc::EREMCHG, n("EREMCHG")),
    (libc::ELIBACC, n("ELIBACC")),
    (libc::ELIBBAD, n("ELIBBAD")),
    (libc::ELIBSCN, n("ELIBSCN")),
    (libc::ELIBMAX, n("ELIBMAX")),
    (libc::ELIBEXEC, n("ELIBEXEC")),
    (libc::EILSEQ, n("EILSEQ")),
    (libc::ERESTART, n("ERESTART")),
    (libc::ESTRPIPE, n("ESTRPIPE")),
    (libc::EUSERS, n("EUSERS")),
    (libc::ENOTSOCK, n("ENOTSOCK")),
    (libc::EDESTADDRREQ, n("EDESTADDRREQ")),
    (libc::EMSGSIZE, n("EMSGSIZE")),
    (libc::EPROTOTYPE, n("EPROTOTYPE")),
    (libc::ENOPROTOOPT, n("ENOPROTOOPT")),
    (libc::EPROTONOSUPPORT, n("EPROTONOSUPPORT")),
    (libc::ESOCKTNOSUPPORT, n("ESOCKTNOSUPPORT")),
    (libc::EOPNOTSUPP, n("EOPNOTSUPP")),
    (libc::EPFNOSUPPORT, n("EPFNOSUPPORT")),
    (libc::EAFNOSUPPORT, n("EAFNOSUPPORT")),
    (libc::EADDRINUSE, n("EADDRINUSE")),
    (libc::EADDRNOTAVAIL, n("EADDRNOTAVAIL")),
    (libc::ENETDOWN, n("ENETDOWN")),
    (libc::ENETUNREACH, n("ENETUNREACH")),
    (libc::ENETRESET, n("ENETRESET")),
    (libc::ECONNABORTED, n("ECONNABORTED")),
    (libc::ECONNRESET, n("ECONNRESET")),
    (libc::ENOBUFS, n("ENOBUFS")),
    (libc::EISCONN, n("EISCONN")),
    (libc::ENOTCONN, n("ENOTCONN")),
    (libc::ESHUTDOWN, n("ESHUTDOWN")),
    (libc::ETOOMANYREFS, n("ETOOMANYREFS")),
    (libc::ETIMEDOUT, n("ETIMEDOUT")),
    (libc::ECONNREFUSED, n("ECONNREFUSED")),
    (libc::EHOSTDOWN, n("EHOSTDOWN")),
    (libc::EHOSTUNREACH, n("EHOSTUNREACH")),
    (libc::EALREADY, n("EALREADY")),
    (libc::EINPROGRESS, n("EINPROGRESS")),
    (libc::ESTALE, n("ESTALE")),
    (libc::EUCLEAN, n("EUCLEAN")),
    (libc::ENOTNAM, n("ENOTNAM")),
    (libc::ENAVAIL, n("ENAVAIL")),
    (libc::EISNAM, n("EISNAM")),
    (libc::EREMOTEIO, n("EREMOTEIO")),
    (libc::EDQUOT, n("EDQUOT")),
    (libc::ENOMEDIUM, n("ENOMEDIUM")),
    (libc::EMEDIUMTYPE, n("EMEDIUMTYPE")),
    (libc::ECANCELED, n("ECANCELED")),
    (libc::ENOKEY, n("ENOKEY")),
    (libc::EKEYEXPIRED, n("EKEYEXPIRED")),
    (libc::EKEYREVOKED, n("EKEYREVOKED")),
    (libc::EKEYREJECTED, n("EKEYREJECTED")),
    (libc::EOWNERDEAD, n("EOWNERDEAD")),
    (libc::ENOTRECOVERABLE, n("ENOTRECOVERABLE")),
    (libc::ERFKILL, n("ERFKILL")),
    (libc::EHWPOISON, n("EHWPOISON")),
    (libc::EWOULDBLOCK, n("EWOULDBLOCK")),
    (libc::EDEADLOCK, n("EDEADLOCK")),
    (libc::ENOTSUP, n("ENOTSUP")),
];
