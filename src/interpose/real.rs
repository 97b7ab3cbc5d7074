//! The real functions behind the hooks, found with `dlsym(RTLD_NEXT)`: all of them eagerly in
//! the constructor, and one at a time on first use by hooks that run before it (another
//! library's constructor). A resolved address is a relaxed atomic load from then on.

use crate::handle::armed;
use crate::policy::rules::Call;
use crate::sys::raw;
use core::ffi::CStr;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The address of one real function: `repr(C)`, one word, so that the assembly trampolines
/// (`interpose::hooks::syscall`) can load it from the static's own address. Its name and call
/// are in `SYMBOLS`; the address alone is zero until resolved, so all of them sit in `.bss` (pages
/// that a process's start does not have to copy).
#[repr(C)]
pub struct RealFn {
    addr: AtomicUsize,
}

/// What is known of a real function besides its address.
pub struct Symbol {
    pub f: &'static RealFn,
    /// The name, NUL-terminated, in the table itself (next to what the constructor reads
    /// anyway, rather than on a page of string constants of its own).
    name: [u8; 16],
    /// The name's GNU hash, computed at compile time.
    hash: u32,
    /// The call whose hook calls this function (the read and write families).
    pub call: Option<Call>,
}

impl RealFn {
    const fn new() -> Self {
        RealFn {
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

    /// The function, resolved now if need be; None if there is none.
    ///
    /// # Safety
    /// `F` is the function pointer type of this symbol's signature.
    #[inline(always)]
    pub unsafe fn resolved<F: Copy>(&self) -> Option<F> {
        match self.get() {
            0 => None,
            // SAFETY: as the caller promised; a non-zero address is the symbol's definition.
            a => Some(unsafe { as_fn(a) }),
        }
    }

    /// The function if already resolved.
    ///
    /// # Safety
    /// As for `resolved`.
    #[inline(always)]
    pub unsafe fn loaded_fn<F: Copy>(&self) -> Option<F> {
        match self.addr.load(Relaxed) {
            0 => None,
            // SAFETY: as the caller promised.
            a => Some(unsafe { as_fn(a) }),
        }
    }

    /// The function, known to be resolved.
    ///
    /// # Safety
    /// As for `resolved`, and the address is not zero (the constructor resolved it).
    #[inline(always)]
    pub unsafe fn loaded_unchecked<F: Copy>(&self) -> F {
        // SAFETY: as the caller promised.
        unsafe { as_fn(self.addr.load(Relaxed)) }
    }

    #[cold]
    #[inline(never)]
    pub fn resolve(&self) -> usize {
        let a = dlsym_next(self.name());
        self.addr.store(a, Relaxed);
        a
    }

    pub fn name(&self) -> &'static CStr {
        SYMBOLS
            .iter()
            .find(|s| core::ptr::eq(s.f, self))
            .map_or(c"?", Symbol::name)
    }
}

impl Symbol {
    pub fn name(&self) -> &CStr {
        CStr::from_bytes_until_nul(&self.name).unwrap_or(c"?")
    }
}

/// A function address as the function pointer type `F`.
///
/// # Safety
/// `F` is a function pointer type, of the signature of the function at `addr`.
#[inline(always)]
unsafe fn as_fn<F: Copy>(addr: usize) -> F {
    const { assert!(core::mem::size_of::<F>() == core::mem::size_of::<usize>()) };
    // SAFETY: same size; the caller vouches for the type.
    unsafe { core::mem::transmute_copy(&addr) }
}

/// A name of at most 15 bytes in a NUL-padded array (a longer one fails to compile).
const fn inline_name(name: &CStr) -> [u8; 16] {
    let b = name.to_bytes();
    assert!(b.len() < 16, "a real function's name is longer than 15 bytes");
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < b.len() {
        out[i] = b[i];
        i += 1;
    }
    out
}

/// `dlsym(RTLD_NEXT, name)`: the definition after this library's.
fn dlsym_next(name: &CStr) -> usize {
    // SAFETY: name is NUL-terminated; RTLD_NEXT finds the definition after this library.
    unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) as usize }
}

macro_rules! real_fns {
    ($($id:ident = $sym:literal $(, $call:ident)?;)*) => {
        $(pub static $id: RealFn = RealFn::new();)*
        pub static SYMBOLS: &[Symbol] = &[$(Symbol {
            f: &$id,
            name: inline_name($sym),
            hash: next::gnu_hash($sym.to_bytes()),
            call: real_fns!(@call $($call)?),
        }),*];
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
    SENDFILE = c"sendfile", Sendfile;
    SENDFILE64 = c"sendfile64", Sendfile;
    SENDMMSG = c"sendmmsg", Sendmmsg;
    RECVMMSG = c"recvmmsg", Recvmmsg;
    SPLICE = c"splice";
    GETPEERNAME = c"getpeername";
    GETSOCKOPT = c"getsockopt";
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
/// optional ones). Then tells `handle::armed` which read- and write-family calls may take the plain
/// path, which calls the resolved address unchecked: those whose every real function was found.
///
/// Every process pays for this when it starts, so the symbols are looked up directly, the way
/// `dlsym(RTLD_NEXT)` looks them up (`next::find`), without `dlsym`'s error machinery (which
/// costs it more than the lookup); a symbol the direct lookup cannot answer for sure is left to
/// `dlsym`. `check`: also ask `dlsym` for each and report any difference (debug level).
#[link_section = ".text.errshim_startup"]
pub fn resolve_all(check: bool, mut missing: impl FnMut(&'static CStr)) {
    let objects = next::objects_after_errshim();
    // glibc 2.33 and later define `fstat` in libc.so (older ones only `__fxstat`): which call
    // its `fstat` makes (see `raw::learn_libc`), learnt without calling into libc when the
    // lookup finds it. Not finding it proves nothing (errshim loaded with `dlopen` has libc
    // before it, not after; the lookup may be unsure): then glibc's version string decides.
    const FSTAT: &[u8] = b"fstat";
    let found = objects.as_ref().and_then(|o| o.find(FSTAT, next::gnu_hash(FSTAT)));
    raw::learn_libc(found.is_some());
    let mut unresolved = 0;
    for s in SYMBOLS {
        let (f, name) = (s.f, s.name());
        let fast = objects.as_ref().and_then(|o| o.find(name.to_bytes(), s.hash));
        let a = fast.unwrap_or_else(|| dlsym_next(name));
        f.addr.store(a, Relaxed);
        if check && fast.is_some() {
            let slow = dlsym_next(name);
            if slow != a {
                log::warn!("the direct lookup of {name:?} found {a:#x}, dlsym {slow:#x}; using dlsym's");
                f.addr.store(slow, Relaxed);
            }
        }
        if f.addr.load(Relaxed) == 0 {
            unresolved |= s.call.map_or(0, Call::bit);
            if !OPTIONAL.contains(&name) {
                missing(name);
            }
        }
    }
    armed::set_unresolved_calls(unresolved);
}

/// The lookup `dlsym(RTLD_NEXT, name)` makes from this library, done directly: the objects
/// after errshim's own in the dynamic loader's list (the order `dl_iterate_phdr` reports, the
/// order of the global scope for the objects loaded at start-up), and in each its dynamic
/// symbol table through its GNU (or SysV) hash table: the first object that defines the symbol
/// at its default version gives its address. Whatever the lookup cannot be sure of (a symbol
/// that is an IFUNC, an object without a hash table) makes it answer None, and `dlsym` decides.
mod next {
    use core::ffi::{c_int, c_void, CStr};

    /// An entry of a dynamic section (`Elf64_Dyn`).
    #[repr(C)]
    struct Dyn {
        tag: i64,
        val: u64,
    }

    const DT_NULL: i64 = 0;
    const DT_HASH: i64 = 4;
    const DT_STRTAB: i64 = 5;
    const DT_SYMTAB: i64 = 6;
    const DT_GNU_HASH: i64 = 0x6fff_fef5;
    const DT_VERSYM: i64 = 0x6fff_fff0;

    /// What a lookup needs of one object.
    #[derive(Clone, Copy)]
    struct Object {
        base: usize,
        symtab: *const libc::Elf64_Sym,
        strtab: *const u8,
        versym: *const u16,
        gnu_hash: *const u32,
        hash: *const u32,
    }

    pub struct Objects {
        list: [Object; 32],
        n: usize,
        /// An object after errshim's could not be read: no answer is sure.
        incomplete: bool,
    }

    struct Walk {
        objects: Objects,
        ours: usize,
        seen_ours: bool,
    }

    /// Address of something in this library, to recognise its object.
    fn here() -> usize {
        here as *const () as usize
    }

    #[link_section = ".text.errshim_startup"]
    pub fn objects_after_errshim() -> Option<Objects> {
        let mut w = Walk {
            objects: Objects {
                list: [Object {
                    base: 0,
                    symtab: core::ptr::null(),
                    strtab: core::ptr::null(),
                    versym: core::ptr::null(),
                    gnu_hash: core::ptr::null(),
                    hash: core::ptr::null(),
                }; 32],
                n: 0,
                incomplete: false,
            },
            ours: here(),
            seen_ours: false,
        };
        // SAFETY: the callback only reads the loader's program headers and dynamic sections.
        unsafe { libc::dl_iterate_phdr(Some(visit), &mut w as *mut Walk as *mut c_void) };
        (w.seen_ours && !w.objects.incomplete).then_some(w.objects)
    }

    #[link_section = ".text.errshim_startup"]
    unsafe extern "C" fn visit(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> c_int {
        // SAFETY: data is the Walk passed to dl_iterate_phdr; info is valid during the call.
        let (w, info) = unsafe { (&mut *(data as *mut Walk), &*info) };
        // SAFETY: the loader's program headers for this object.
        let phdrs = unsafe { core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
        let base = info.dlpi_addr as usize;
        if !w.seen_ours {
            w.seen_ours = phdrs.iter().any(|p| {
                let start = base + p.p_vaddr as usize;
                p.p_type == libc::PT_LOAD && (start..start + p.p_memsz as usize).contains(&w.ours)
            });
            return 0;
        }
        let Some(dynamic) = phdrs.iter().find(|p| p.p_type == libc::PT_DYNAMIC) else {
            return 0; // nothing it could define
        };
        // The vDSO defines only __vdso_* symbols, none of errshim's.
        // SAFETY: dlpi_name is a NUL-terminated string (possibly empty).
        let name = unsafe { CStr::from_ptr(info.dlpi_name) }.to_bytes();
        if name.starts_with(b"linux-vdso") || name.starts_with(b"linux-gate") {
            return 0;
        }
        let mut o = Object {
            base,
            symtab: core::ptr::null(),
            strtab: core::ptr::null(),
            versym: core::ptr::null(),
            gnu_hash: core::ptr::null(),
            hash: core::ptr::null(),
        };
        // The loader has relocated these addresses in place (on x86-64 and aarch64); an
        // entry below the load address is still an offset.
        let at = |v: u64| {
            let v = v as usize;
            if v < base {
                v + base
            } else {
                v
            }
        };
        let mut d = (base + dynamic.p_vaddr as usize) as *const Dyn;
        loop {
            // SAFETY: the dynamic section ends with a DT_NULL entry.
            let e = unsafe { &*d };
            match e.tag {
                DT_NULL => break,
                DT_SYMTAB => o.symtab = at(e.val) as *const libc::Elf64_Sym,
                DT_STRTAB => o.strtab = at(e.val) as *const u8,
                DT_HASH => o.hash = at(e.val) as *const u32,
                DT_GNU_HASH => o.gnu_hash = at(e.val) as *const u32,
                DT_VERSYM => o.versym = at(e.val) as *const u16,
                _ => {}
            }
            // SAFETY: within the dynamic section, before its DT_NULL.
            d = unsafe { d.add(1) };
        }
        let objects = &mut w.objects;
        if o.symtab.is_null()
            || o.strtab.is_null()
            || (o.gnu_hash.is_null() && o.hash.is_null())
            || objects.n == objects.list.len()
        {
            objects.incomplete = true;
            return 1;
        }
        objects.list[objects.n] = o;
        objects.n += 1;
        0
    }

    impl Objects {
        /// The address `dlsym(RTLD_NEXT, name)` gives, or None when the lookup cannot be sure
        /// (not found at all: `dlsym` says).
        #[link_section = ".text.errshim_startup"]
        pub fn find(&self, name: &[u8], hash: u32) -> Option<usize> {
            for o in &self.list[..self.n] {
                match o.lookup(name, hash) {
                    Lookup::Found(a) => return Some(a),
                    Lookup::Unsure => return None,
                    Lookup::Absent => {}
                }
            }
            None
        }
    }

    enum Lookup {
        Found(usize),
        Absent,
        Unsure,
    }

    /// The GNU hash of a symbol name (a `const fn`: the names' hashes are computed at compile
    /// time).
    pub const fn gnu_hash(name: &[u8]) -> u32 {
        let mut h = 5381u32;
        let mut i = 0;
        while i < name.len() {
            h = h.wrapping_mul(33).wrapping_add(name[i] as u32);
            i += 1;
        }
        h
    }

    #[link_section = ".text.errshim_startup"]
    fn sysv_hash(name: &[u8]) -> u32 {
        let mut h = 0u32;
        for &c in name {
            h = (h << 4).wrapping_add(c as u32);
            let g = h & 0xf000_0000;
            if g != 0 {
                h ^= g >> 24;
            }
            h &= !g;
        }
        h
    }

    impl Object {
        /// Whether symbol `i` is a definition of `name` at its default version.
        fn defines(&self, i: usize, name: &[u8]) -> Lookup {
            // SAFETY: i is an index the object's own hash table gave, within its symbol table.
            let sym = unsafe { &*self.symtab.add(i) };
            // The name in the string table: `name`'s bytes, then its NUL (compared byte by byte,
            // stopping at the first difference, so never past the string's own end).
            let sname = self.strtab.wrapping_add(sym.st_name as usize);
            for (k, &c) in name.iter().chain(&[0]).enumerate() {
                // SAFETY: st_name is an offset into the object's string table, and bytes up to
                // the string's NUL are read (a difference stops the loop at or before it).
                if unsafe { *sname.add(k) } != c {
                    return Lookup::Absent;
                }
            }
            let bind = sym.st_info >> 4;
            let ty = sym.st_info & 0xf;
            if sym.st_shndx == 0 || !(bind == 1 || bind == 2) {
                return Lookup::Absent; // undefined here, or local
            }
            // SAFETY: the version table has one entry per symbol.
            if !self.versym.is_null() && unsafe { *self.versym.add(i) } & 0x8000 != 0 {
                return Lookup::Absent; // a hidden (non-default) version
            }
            match ty {
                2 | 0 => Lookup::Found(self.base + sym.st_value as usize), // STT_FUNC, STT_NOTYPE
                _ => Lookup::Unsure,                                       // IFUNC, data, ...
            }
        }

        #[link_section = ".text.errshim_startup"]
        fn lookup(&self, name: &[u8], hash: u32) -> Lookup {
            if !self.gnu_hash.is_null() {
                return self.lookup_gnu(name, hash);
            }
            self.lookup_sysv(name)
        }

        #[link_section = ".text.errshim_startup"]
        fn lookup_gnu(&self, name: &[u8], h: u32) -> Lookup {
            let t = self.gnu_hash;
            // SAFETY: the GNU hash table's header, bloom filter, buckets and chains, as the
            // object's own loader-checked dynamic section describes them.
            unsafe {
                let (nbuckets, symoffset, bloom_size, shift) = (*t, *t.add(1), *t.add(2), *t.add(3));
                // The bloom filter's size is a power of two (as the dynamic loader assumes).
                if nbuckets == 0 {
                    return Lookup::Absent;
                }
                if !bloom_size.is_power_of_two() {
                    return Lookup::Unsure;
                }
                let bloom = t.add(4) as *const u64;
                let buckets = bloom.add(bloom_size as usize) as *const u32;
                let chains = buckets.add(nbuckets as usize);
                let word = *bloom.add(((h / 64) & (bloom_size - 1)) as usize);
                let mask = (1u64 << (h % 64)) | (1u64 << ((h >> shift) % 64));
                if word & mask != mask {
                    return Lookup::Absent;
                }
                let mut i = *buckets.add((h % nbuckets) as usize) as usize;
                if i < symoffset as usize {
                    return Lookup::Absent;
                }
                loop {
                    let ch = *chains.add(i - symoffset as usize);
                    if (ch | 1) == (h | 1) {
                        match self.defines(i, name) {
                            Lookup::Absent => {}
                            other => return other,
                        }
                    }
                    if ch & 1 != 0 {
                        return Lookup::Absent;
                    }
                    i += 1;
                }
            }
        }

        #[link_section = ".text.errshim_startup"]
        fn lookup_sysv(&self, name: &[u8]) -> Lookup {
            let t = self.hash;
            // SAFETY: the SysV hash table's header, buckets and chains.
            unsafe {
                let (nbucket, nchain) = (*t, *t.add(1));
                if nbucket == 0 {
                    return Lookup::Absent;
                }
                let buckets = t.add(2);
                let chains = buckets.add(nbucket as usize);
                let mut i = *buckets.add((sysv_hash(name) % nbucket) as usize);
                let mut steps = 0;
                while i != 0 && i < nchain && steps < nchain {
                    match self.defines(i as usize, name) {
                        Lookup::Absent => {}
                        other => return other,
                    }
                    i = *chains.add(i as usize);
                    steps += 1;
                }
                Lookup::Absent
            }
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn hashes() {
            // Values from the ELF GNU hash and SysV hash definitions.
            assert_eq!(super::gnu_hash(b""), 5381);
            assert_eq!(super::gnu_hash(b"printf"), 0x156b_2bb8);
            assert_eq!(super::sysv_hash(b"printf"), 0x077905a6);
        }
    }
}
