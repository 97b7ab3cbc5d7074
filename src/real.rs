//! The real functions behind the hooks, found with `dlsym(RTLD_NEXT)`: all of them eagerly in
//! the constructor, and one at a time on first use by hooks that run before it (another
//! library's constructor). A resolved address is a relaxed atomic load from then on.

use crate::inject;
use crate::rules::Call;
use core::ffi::CStr;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// `repr(C)` with the address first: the assembly trampolines (`hooks::syscall`) load it
/// from the static's own address.
#[repr(C)]
pub struct RealFn {
    addr: AtomicUsize,
    name: &'static CStr,
    /// The call whose hook calls this function (the read and write families).
    call: Option<Call>,
}

impl RealFn {
    pub const fn new(name: &'static CStr, call: Option<Call>) -> Self {
        RealFn {
            addr: AtomicUsize::new(0),
            name,
            call,
        }
    }

    /// The address of the next definition of this symbol, or 0 if there is none.
    #[inline(always)]
    pub fn get(&self) -> usize {
        match self.addr.load(Relaxed) {
            0 => self.resolve(),
            a => a,
        }
    }

    /// The address if already resolved, else 0.
    #[inline(always)]
    pub fn loaded(&self) -> usize {
        self.addr.load(Relaxed)
    }

    #[cold]
    #[inline(never)]
    pub fn resolve(&self) -> usize {
        // SAFETY: name is NUL-terminated; RTLD_NEXT finds the definition after this library.
        let a = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr()) } as usize;
        self.addr.store(a, Relaxed);
        a
    }

    pub fn name(&self) -> &'static CStr {
        self.name
    }
}

macro_rules! real_fns {
    ($($id:ident = $sym:literal $(, $call:ident)?;)*) => {
        $(pub static $id: RealFn = RealFn::new($sym, real_fns!(@call $($call)?));)*
        pub static ALL: &[&RealFn] = &[$(&$id),*];
    };
    (@call $call:ident) => { Some(Call::$call) };
    (@call) => { None };
}

real_fns! {
    READ = c"read", Read;
    WRITE = c"write", Write;
    READV = c"readv", Readv;
    WRITEV = c"writev", Writev;
    RECV = c"recv", Recv;
    RECVFROM = c"recvfrom", Recvfrom;
    RECVMSG = c"recvmsg", Recvmsg;
    SEND = c"send", Send;
    SENDTO = c"sendto", Sendto;
    SENDMSG = c"sendmsg", Sendmsg;
    SHUTDOWN = c"shutdown";
    CLOSE = c"close";
    READ_CHK = c"__read_chk", Read;
    RECV_CHK = c"__recv_chk", Recv;
    RECVFROM_CHK = c"__recvfrom_chk", Recvfrom;
    SOCKET = c"socket";
    SOCKETPAIR = c"socketpair";
    ACCEPT = c"accept";
    ACCEPT4 = c"accept4";
    DUP = c"dup";
    DUP2 = c"dup2";
    DUP3 = c"dup3";
    CONNECT = c"connect";
    LISTEN = c"listen";
    FCLOSE = c"fclose";
    CLOSE_RANGE = c"close_range";
    CLOSEFROM = c"closefrom";
    FCNTL = c"fcntl";
    FCNTL64 = c"fcntl64";
    SYSCALL = c"syscall";
    VFORK = c"vfork";
    CLONE = c"clone";
    PRCTL = c"prctl";
    SETUID = c"setuid";
    SETEUID = c"seteuid";
    SETREUID = c"setreuid";
    SETRESUID = c"setresuid";
}

/// Functions an older glibc does not have (`close_range` and `closefrom` came in 2.34,
/// `fcntl64` in 2.28): their absence is not worth a warning.
const OPTIONAL: [&CStr; 3] = [c"close_range", c"closefrom", c"fcntl64"];

/// Resolves every real symbol, and names each that has no next definition (but for the
/// optional ones). Then tells
/// `inject` which read- and write-family calls may take the plain path, which calls the
/// resolved address unchecked: those whose every real function was found.
pub fn resolve_all(mut missing: impl FnMut(&'static CStr)) {
    let mut unresolved = 0;
    for f in ALL {
        if f.resolve() == 0 {
            unresolved |= f.call.map_or(0, Call::bit);
            if !OPTIONAL.contains(&f.name) {
                missing(f.name);
            }
        }
    }
    inject::set_unresolved_calls(unresolved);
}
