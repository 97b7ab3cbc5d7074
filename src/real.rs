//! The real functions behind the hooks, found with `dlsym(RTLD_NEXT)`: all of them eagerly in
//! the constructor, and one at a time on first use by hooks that run before it (another
//! library's constructor). A resolved address is a relaxed atomic load from then on.

use core::ffi::CStr;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

pub struct RealFn {
    name: &'static CStr,
    addr: AtomicUsize,
}

impl RealFn {
    pub const fn new(name: &'static CStr) -> Self {
        RealFn {
            name,
            addr: AtomicUsize::new(0),
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
    ($($id:ident = $sym:literal;)*) => {
        $(pub static $id: RealFn = RealFn::new($sym);)*
        pub static ALL: &[&RealFn] = &[$(&$id),*];
    };
}

real_fns! {
    READ = c"read";
    WRITE = c"write";
    READV = c"readv";
    WRITEV = c"writev";
    RECV = c"recv";
    RECVFROM = c"recvfrom";
    RECVMSG = c"recvmsg";
    SEND = c"send";
    SENDTO = c"sendto";
    SENDMSG = c"sendmsg";
    SHUTDOWN = c"shutdown";
    CLOSE = c"close";
    READ_CHK = c"__read_chk";
    RECV_CHK = c"__recv_chk";
    RECVFROM_CHK = c"__recvfrom_chk";
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
}

/// Resolves every real symbol; returns the names that have no next definition.
pub fn resolve_all() -> impl Iterator<Item = &'static CStr> {
    ALL.iter().filter(|f| f.resolve() == 0).map(|f| f.name())
}
