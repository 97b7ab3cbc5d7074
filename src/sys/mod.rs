//! Layer 2 of 7: the kernel's interface, as errshim uses it. Raw system calls made with inline
//! `syscall` instructions, never through the program's libc, and withheld under a seccomp
//! filter (`raw`); errno and its names (`errno`, `errno_table`); reading the caller's memory
//! only where that is proven safe (`memory`); which process and program the hooks run in, vfork
//! children included (`process`); sockets' kinds and addresses as the kernel reports them
//! (`socket`); a value set once (`once`).
//!
//! May use: `text`.

pub mod errno;
pub mod errno_table;
pub mod memory;
pub mod once;
pub mod process;
pub mod raw;
pub mod socket;
