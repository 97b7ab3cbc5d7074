//! Layer 7 of 7, the top: the boundary with the program, where all of errshim's `extern`
//! functions are. The exported hooks, one declaration each (`hooks`); the real functions they
//! call, found at load time (`real`); the constructor and destructor (`init`).
//!
//! May use: `text`, `sys`, `policy`, `observe`, `report`, `handle`.

#[cfg(not(test))]
pub mod hooks;
#[cfg(not(test))]
pub mod init;
pub mod real;
