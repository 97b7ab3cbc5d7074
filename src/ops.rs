//! What happens after an interposed call failed: the only place where errshim does work. The
//! hooks call `after_failure` on their cold path; a call that succeeded never gets here.
//!
//! Discipline: errno is read first thing; a per-thread guard sends nested calls (from anything
//! the shim itself calls) straight back with the real result; nothing here unwinds into the
//! hook (a panic, which would be a bug, is caught and the real result returned unchanged); the
//! errno the program sees is set last.

use crate::errno;
use crate::event::{self, CallArgs, Event};
use crate::fmtbuf::StackBuf;
use crate::rules::{self, Action, Call, Rule};
use crate::sockinfo::{self, Kind};
use crate::{init, logger, sys, timefmt};
use core::cell::Cell;

thread_local! {
    /// Set while this thread runs errshim's own code.
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// What the program gets back.
enum Verdict {
    /// The real result and errno, unchanged.
    Keep,
    /// This return value, with errno as it was before the call.
    Succeed(isize),
    /// -1 with this errno.
    Fail(i32),
}

/// Called by a hook whose real call returned `ret` < 0. `errno_before` is errno as it was
/// before the real call. Returns what the hook returns, with errno set accordingly.
#[cold]
#[inline(never)]
pub fn after_failure(call: Call, entry: &'static str, args: CallArgs, ret: isize, errno_before: i32) -> isize {
    let err = errno::get();
    let Some(cfg) = init::config() else {
        return ret;
    };
    if cfg.rules.is_empty() {
        return ret;
    }
    let entered = BUSY
        .try_with(|b| {
            let free = !b.get();
            b.set(true);
            free
        })
        .unwrap_or(false);
    if !entered {
        errno::set(err);
        return ret;
    }
    let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        handle(&cfg.rules, call, entry, &args, ret, err)
    }));
    let _ = BUSY.try_with(|b| b.set(false));
    match verdict {
        Ok(Verdict::Succeed(v)) => {
            errno::set(errno_before);
            v
        }
        Ok(Verdict::Fail(e)) => {
            errno::set(e);
            -1
        }
        Ok(Verdict::Keep) | Err(_) => {
            errno::set(err);
            ret
        }
    }
}

/// The descriptor's kind, asked of the kernel at most once per event.
struct LazyKind<'a> {
    call: Call,
    args: &'a CallArgs,
    err: i32,
    kind: Option<Kind>,
}

impl LazyKind<'_> {
    fn get(&mut self) -> Kind {
        *self.kind.get_or_insert_with(|| {
            if self.call != Call::Close {
                return sockinfo::probe_kind(self.args.fd);
            }
            // Linux releases the descriptor even when close fails, so never ask the kernel
            // about the number again (another thread may own it by now): EBADF means it was not
            // open; otherwise the kind is what the fd table remembered.
            if self.err == libc::EBADF {
                Kind::NotOpen
            } else {
                self.args.kind_hint
            }
        })
    }
}

fn handle(rules: &[Rule], call: Call, entry: &'static str, args: &CallArgs, ret: isize, err: i32) -> Verdict {
    let mut kind = LazyKind {
        call,
        args,
        err,
        kind: None,
    };
    let Some((index, rule)) = rules::decide(rules, call, err, || kind.get()) else {
        return Verdict::Keep;
    };
    let (verdict, returned, returned_errno) = match rule.action {
        Action::Pass | Action::Log => (Verdict::Keep, ret, err),
        Action::Ignore | Action::Quiet => (Verdict::Succeed(0), 0, 0),
        Action::Map(e) => (Verdict::Fail(e), -1, e),
    };
    if rule.action.logs() {
        let kind = kind.get();
        let live = kind.is_socket() && call != Call::Close;
        let ev = Event {
            time: timefmt::now(),
            pid: sys::getpid(),
            tid: sys::gettid(),
            comm: init::comm(),
            call,
            entry,
            args: *args,
            ret,
            errno: err,
            action: rule.action,
            rule: index,
            returned,
            returned_errno,
            kind,
            local: if live { sockinfo::local_addr(args.fd) } else { None },
            peer: if live { sockinfo::peer_addr(args.fd) } else { None },
        };
        let mut line = StackBuf::<1024>::new();
        event::write_text(&ev, &mut line);
        logger::event(line.finish_line());
    }
    verdict
}
