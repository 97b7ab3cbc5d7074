//! Layer 4 of 7: what errshim knows about a descriptor, gathered so that observing never
//! changes what the program sees next. What a descriptor is and its addresses, asked of the
//! kernel on the slow path only (`sockinfo`); the table of the program's sockets, with each one's
//! history, counts and peer (`conntable`); the probable cause of a failure, from those facts
//! (`cause`).
//!
//! May use: `text`, `sys`, `policy`.

pub mod cause;
pub mod conntable;
pub mod sockinfo;
