//! Load-time initialisation: resolve the real symbols, read the environment once, set up the
//! table and the log. Until this has run (another library's constructor calling a hooked
//! function), and when `ERRSHIM_DISABLE=1`, every hook is a pure pass-through.
//!
//! Every process pays for this, also the ones that never make a socket call (`sh` starting
//! `/bin/true`), so it is kept to what the hooks need: the symbols (`dlsym`), a scan of the
//! environment that allocates nothing unless an `ERRSHIM_*` variable is set, the descriptor
//! table (one `prlimit64`, one `mmap`) and one `fstat` of fd 2. Everything else waits for the
//! first event: the program's name, and whether a seccomp filter forbids errshim's own system
//! calls (`raw::allowed`).

use crate::handle::{self, armed};
use crate::policy::config::{self, Config};
use crate::policy::rules::Call;
use crate::report::{digest, rate};
use crate::sys::process;
use crate::text::fmtbuf::StackBuf;
use crate::{
    handle::fault, interpose::real, observe::conntable, policy::rules, report::backtrace, report::logger,
    report::summary, sys::memory, sys::raw,
};
use core::ffi::{c_char, CStr};
use core::fmt::Write;

fn diag_line(args: core::fmt::Arguments<'_>) {
    let mut b = StackBuf::<1024>::new();
    let _ = b.write_fmt(args);
    logger::diag(b.finish_line());
}

extern "C" {
    static environ: *const *const c_char;
}

/// The entries of `environ` that start with `prefix`, as bytes; allocates nothing. Each entry is
/// compared byte by byte (a mismatch, the NUL included, stops it): most are not errshim's,
/// and measuring each would read all of the environment.
#[link_section = ".text.errshim_startup"]
fn environment(prefix: &'static [u8]) -> impl Iterator<Item = &'static [u8]> {
    // SAFETY: environ is the process's NUL-terminated array of NUL-terminated strings; nothing
    // changes it while the constructor runs.
    let mut p = unsafe { environ };
    core::iter::from_fn(move || loop {
        if p.is_null() {
            return None;
        }
        // SAFETY: as above.
        let entry = unsafe { *p };
        if entry.is_null() {
            return None;
        }
        // SAFETY: stays within the array, which ends with a null entry.
        p = unsafe { p.add(1) };
        // SAFETY: as above; no byte past the entry's NUL is read.
        if prefix
            .iter()
            .enumerate()
            .all(|(k, &c)| unsafe { *entry.add(k) } as u8 == c)
        {
            // SAFETY: as above.
            return Some(unsafe { CStr::from_ptr(entry) }.to_bytes());
        }
    })
}

/// The value of the environment variable `name` (given with its '='), without allocating.
#[link_section = ".text.errshim_startup"]
fn env_value(name_eq: &'static [u8]) -> Option<&'static [u8]> {
    environment(name_eq).next().map(|e| &e[name_eq.len()..])
}

/// The `ERRSHIM_*` variables, as bytes: a scan of `environ` that allocates only when one is
/// found.
#[link_section = ".text.errshim_startup"]
fn scan_environment() -> Vec<(Vec<u8>, Vec<u8>)> {
    environment(b"ERRSHIM_")
        .filter_map(|s| {
            let eq = s.iter().position(|&c| c == b'=')?;
            Some((s[..eq].to_vec(), s[eq + 1..].to_vec()))
        })
        .collect()
}

#[link_section = ".text.errshim_startup"]
fn init() {
    memory::learn_main_stack();
    real::resolve_all(false, |name| {
        // Said once the destination is set up, below; rare (a libc without the function).
        MISSING.with_slot(name);
    });
    crate::sys::errno::learn_location();
    // SAFETY: getauxval only reads the auxiliary vector.
    let secure = unsafe { libc::getauxval(libc::AT_SECURE) } != 0;
    // ERRSHIM_DISABLE=1: nothing more, not even a copy of the other variables.
    if !secure && env_value(b"ERRSHIM_DISABLE=").and_then(config::truth) == Some(true) {
        return;
    }
    let vars = scan_environment();
    // In secure-execution mode (setuid, setgid, file capabilities) nothing from the
    // environment is used: an unprivileged caller's variables must not change what a
    // privileged program does, nor send its data elsewhere.
    let (cfg, errors) = if secure || vars.is_empty() {
        (Config::defaults(), Vec::new())
    } else {
        match configure(&vars) {
            Some(c) => c,
            None => return, // disabled, or not for this program (ONLY/SKIP_CMDS)
        }
    };

    // Before any system call that is gated (the first one looks at the seccomp state).
    raw::trust_inherited_filter(cfg.trust_seccomp);
    conntable::init();
    // The diagnostics logger first: setting up the destination may need to warn.
    if log::set_logger(&logger::DIAG_LOGGER).is_ok() {
        log::set_max_level(cfg.level);
    }
    logger::init(&cfg.log);
    if !errors.is_empty() || (secure && !vars.is_empty()) || MISSING.any() || log::log_enabled!(log::Level::Info) {
        say_at_start(&cfg, &errors, secure, &vars);
    }
    // Byte counts run on the careful path: arm the calls that move data.
    conntable::set_counting(cfg.count);
    let data_calls = Call::ALL.iter().filter(|c| {
        !matches!(
            c,
            Call::Shutdown | Call::Close | Call::Connect | Call::Accept | Call::Getpeername
        )
    });
    let counted = if cfg.count {
        data_calls.fold(0, |m, c| m | c.bit())
    } else {
        0
    };
    armed::set_config_calls(rules::succeeding_calls(&cfg.rules) | counted);
    if cfg.fault_set().n > 0 || cfg.control.is_some() || cfg.counts() || cfg.backtrace {
        start_extras(&cfg);
    } else if cfg.log_rate.is_some() && cfg.log != config::LogDest::Off {
        // A forked child's rate-limit windows and held-back lines are its own.
        // SAFETY: registers a handler that only stores into atomics.
        unsafe { libc::pthread_atfork(None, None, Some(child_after_fork)) };
    }
    handle::set_config(cfg);
}

/// The configuration from the `ERRSHIM_*` variables that are set; None when errshim does not
/// act in this process (`ERRSHIM_DISABLE=1`, `ERRSHIM_ONLY_CMDS`, `ERRSHIM_SKIP_CMDS`). Out of
/// line: most processes have no such variable, and its frame is large.
#[inline(never)]
fn configure(vars: &[(Vec<u8>, Vec<u8>)]) -> Option<(Config, Vec<config::ConfigError>)> {
    let get = |name: &str| {
        vars.iter()
            .find(|(k, _)| k.as_slice() == name.as_bytes())
            .map(|(_, v)| v.clone())
    };
    if config::disabled(&get) {
        return None;
    }
    if get("ERRSHIM_ONLY_CMDS").is_some() || get("ERRSHIM_SKIP_CMDS").is_some() {
        let names = [process::comm(), process::argv0().unwrap_or(b"")];
        if !config::acts_in(&get, &names) {
            return None;
        }
    }
    let names: Vec<Vec<u8>> = vars.iter().map(|(k, _)| k.clone()).collect();
    Some(config::from_lookup(&get, &names))
}

/// What errshim says when it loads: configuration errors (and strict mode's exit), what
/// secure-execution mode ignored, real functions that are missing, and at info level the
/// effective configuration.
#[inline(never)]
fn say_at_start(cfg: &Config, errors: &[config::ConfigError], secure: bool, vars: &[(Vec<u8>, Vec<u8>)]) {
    for e in errors {
        diag_line(format_args!("{e}"));
    }
    if secure && !vars.is_empty() {
        let mut names = StackBuf::<1024>::new();
        for (i, (k, _)) in vars.iter().enumerate() {
            let _ = write!(
                names,
                "{}{}",
                if i > 0 { ", " } else { "" },
                crate::text::escape::Esc(k)
            );
        }
        log::warn!(
            "secure-execution mode (setuid, setgid or file capabilities): ignoring {} (the defaults apply)",
            core::str::from_utf8(names.as_bytes()).unwrap_or("?")
        );
    }
    if cfg.strict && !errors.is_empty() {
        diag_line(format_args!(
            "errshim: ERRSHIM_STRICT=1 and {} configuration error(s): stopping with exit status 2",
            errors.len()
        ));
        // SAFETY: ends the process at startup, as strict mode asks.
        unsafe { libc::_exit(2) };
    }
    // At info level (`errshim --check`); otherwise where it bites: see
    // `failure::unsuppressed_enotconn`.
    if let Some(line) = cfg.replaced_default().filter(|_| log::log_enabled!(log::Level::Info)) {
        log::warn!("{line}");
    }
    MISSING.each(|name| log::warn!("no real {:?} after errshim; that call fails with ENOSYS", name));
    if log::log_enabled!(log::Level::Debug) {
        // Resolve again, each symbol also with dlsym: any difference is reported.
        real::resolve_all(true, |_| {});
        log::debug!("real functions resolved; each checked against dlsym (a difference is a warning)");
    }
    log::info!(
        "errshim {} loaded into pid {} ({})",
        env!("CARGO_PKG_VERSION"),
        raw::getpid(),
        crate::text::escape::Esc(process::comm())
    );
    if log::log_enabled!(log::Level::Info) {
        for line in cfg.describe() {
            log::info!("{line}");
        }
    }
}

/// Fault rules, the control file, the exit summary and backtraces: set up when configured.
#[inline(never)]
fn start_extras(cfg: &Config) {
    if cfg.backtrace {
        backtrace::prepare();
    }
    if cfg.fault_set().n > 0 || cfg.control.is_some() {
        let seed = cfg.seed.or_else(raw::random_u64).unwrap_or_else(fallback_seed);
        fault::init(cfg.fault_set(), seed);
        if let Some(path) = &cfg.control {
            fault::watch(path);
        }
        // Said where a rule acts: at the process's first injection (a program started
        // through shell scripts and shims then says it once, not once per process), or now
        // when diagnostics are asked for (ERRSHIM_LOG_LEVEL=info, as `errshim --check` does).
        if cfg.level >= log::LevelFilter::Info {
            fault::say_startup(cfg);
        }
    }
    if cfg.counts() {
        summary::enable();
    }
    let faults = cfg.fault_set().n > 0 || cfg.control.is_some();
    if faults || cfg.counts() || cfg.log_rate.is_some() {
        // A forked child's summary counts its own events only, its rate-limit windows and
        // held-back lines are its own, a reload the parent had begun is not the child's, and
        // its fault decisions come from its own stream, numbered by the parent's forks.
        // SAFETY: registers handlers that only load and store atomics.
        unsafe { libc::pthread_atfork(faults.then_some(before_fork), None, Some(child_after_fork)) };
    }
}

/// A seed when the kernel gives no random bits: the clock and the pid.
fn fallback_seed() -> u64 {
    let t = crate::sys::raw::wall_clock();
    crate::policy::faults::mix(t.secs as u64 ^ (t.nanos as u64) << 20 ^ raw::getpid() as u64)
}

/// Names of real functions the constructor did not find, kept until the log is set up.
struct Missing {
    names: [core::sync::atomic::AtomicPtr<c_char>; 8],
}

impl Missing {
    fn with_slot(&self, name: &'static CStr) {
        use core::sync::atomic::Ordering::Relaxed;
        for slot in &self.names {
            let p = name.as_ptr() as *mut c_char;
            if slot
                .compare_exchange(core::ptr::null_mut(), p, Relaxed, Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }

    fn any(&self) -> bool {
        use core::sync::atomic::Ordering::Relaxed;
        self.names.iter().any(|s| !s.load(Relaxed).is_null())
    }

    fn each(&self, mut f: impl FnMut(&CStr)) {
        use core::sync::atomic::Ordering::Relaxed;
        for slot in &self.names {
            let p = slot.load(Relaxed);
            if !p.is_null() {
                // SAFETY: only 'static CStr pointers are stored.
                f(unsafe { CStr::from_ptr(p) });
            }
        }
    }
}

static MISSING: Missing = Missing {
    names: [const { core::sync::atomic::AtomicPtr::new(core::ptr::null_mut()) }; 8],
};

extern "C" fn before_fork() {
    fault::before_fork();
}

extern "C" fn child_after_fork() {
    summary::reset();
    rate::reset();
    fault::child_after_fork();
}

/// At exit: the summary, when asked for (and only from a process that had something to say),
/// and how many lines could not be written, if any.
#[link_section = ".text.errshim_startup"]
extern "C" fn destructor() {
    let Some(cfg) = handle::config() else {
        return;
    };
    // Nothing to say (the common case): return without touching the stack pages and code that
    // saying it takes.
    if (cfg.counts() && summary::any()) || logger::dropped() > 0 || rate::held_total() > 0 {
        at_exit(cfg);
    }
}

#[inline(never)]
fn at_exit(cfg: &'static Config) {
    let _ = std::panic::catch_unwind(|| {
        digest::at_exit(cfg);
        logger::report_dropped();
    });
}

#[used]
#[link_section = ".fini_array"]
static DESTRUCTOR: extern "C" fn() = destructor;

#[link_section = ".text.errshim_startup"]
extern "C" fn constructor() {
    // Never take the host down: a bug here leaves errshim as a pass-through.
    std::panic::set_hook(Box::new(panic_line));
    let _ = std::panic::catch_unwind(init);
}

/// What a panic of errshim's says (a bug: errshim's paths are meant to be panic-free; each is
/// caught where errshim's code was entered, and the call goes on as it would without errshim).
/// std's default hook would write its message through the program's `write` (waiting on a
/// full pipe), read `RUST_BACKTRACE` (also in secure-execution mode) and, with it set, read
/// ELF files for a backtrace. One diagnostic line instead, written as every other one is.
fn panic_line(info: &std::panic::PanicHookInfo<'_>) {
    let (file, line) = info.location().map_or(("?", 0), |l| (l.file(), l.line()));
    diag_line(format_args!(
        "errshim: error: internal error at {file}:{line}; the call went on as without errshim"
    ));
}

#[used]
#[link_section = ".init_array"]
static CONSTRUCTOR: extern "C" fn() = constructor;
