//! A value set once, by the constructor, and read lock-free afterwards from any thread and from
//! signal handlers.
//!
//! `once_cell::sync::OnceCell` (and `std::sync::OnceLock`) would do, but their first `set`
//! goes through a general initialisation routine (which parks racing initialisers on a wait
//! queue) that sits far from the constructor's code: one more page of code to fault in at every
//! process start, for a race that cannot happen here (only the constructor sets these).

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU8, Ordering::*};

pub struct SetOnce<T> {
    /// EMPTY, WRITING (a `set` is storing the value) or READY.
    state: AtomicU8,
    value: UnsafeCell<MaybeUninit<T>>,
}

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const READY: u8 = 2;

// SAFETY: the value is written once, by the one `set` that moved the state from EMPTY, before
// the state becomes READY (release); readers read it only after seeing READY (acquire), and
// never mutably.
unsafe impl<T: Send + Sync> Sync for SetOnce<T> {}

impl<T> SetOnce<T> {
    pub const fn new() -> Self {
        SetOnce {
            state: AtomicU8::new(EMPTY),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// Stores `v` if nothing was stored yet; gives it back otherwise. Never waits.
    pub fn set(&self, v: T) -> Result<(), T> {
        if self.state.compare_exchange(EMPTY, WRITING, Acquire, Relaxed).is_err() {
            return Err(v);
        }
        // SAFETY: this call alone moved the state from EMPTY, so nothing else writes the value
        // and no reader reads it before READY.
        unsafe { (*self.value.get()).write(v) };
        self.state.store(READY, Release);
        Ok(())
    }

    #[inline(always)]
    pub fn get(&self) -> Option<&T> {
        if self.state.load(Acquire) == READY {
            // SAFETY: READY is stored only after the value was written (see `set`).
            Some(unsafe { (*self.value.get()).assume_init_ref() })
        } else {
            None
        }
    }
}

impl<T> Default for SetOnce<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_once_then_read() {
        let c = SetOnce::<Vec<u8>>::new();
        assert!(c.get().is_none());
        assert!(c.set(b"first".to_vec()).is_ok());
        assert_eq!(c.set(b"second".to_vec()), Err(b"second".to_vec()));
        assert_eq!(c.get().map(Vec::as_slice), Some(&b"first"[..]));
    }
}
