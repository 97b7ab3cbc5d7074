//! Load-time initialisation: resolve the real symbols, read the environment once, set up the
//! log. Until this has run (another library's constructor calling a hooked function), and when
//! `ERRSHIM_DISABLE=1`, every hook is a pure pass-through.

use crate::config::{self, Config};
use crate::fmtbuf::StackBuf;
use crate::rules::Call;
use crate::{backtrace, conntable, inject, logger, real, rules, summary, sys};
use core::fmt::Write;
use once_cell::sync::OnceCell;

static CONFIG: OnceCell<Config> = OnceCell::new();
static COMM: OnceCell<([u8; 16], usize)> = OnceCell::new();

/// The configuration, once the constructor has finished; `None` before that or when disabled.
#[inline(always)]
pub fn config() -> Option<&'static Config> {
    CONFIG.get()
}

/// The program's name (the main thread's `comm` when errshim was loaded).
pub fn comm() -> &'static [u8] {
    COMM.get().and_then(|(b, n)| b.get(..*n)).unwrap_or(b"?")
}

fn diag_line(args: core::fmt::Arguments<'_>) {
    let mut b = StackBuf::<1024>::new();
    let _ = b.write_fmt(args);
    logger::diag(b.finish_line());
}

extern "C" {
    /// glibc's basename of argv[0].
    static program_invocation_short_name: *const core::ffi::c_char;
}

fn argv0_basename() -> String {
    // SAFETY: glibc sets this before any constructor runs; it is NUL-terminated or null.
    let p = unsafe { program_invocation_short_name };
    if p.is_null() {
        return String::new();
    }
    // SAFETY: as above.
    unsafe { core::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn init() {
    let missing = real::resolve_all();
    crate::errno::learn_location();
    let vars: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned())))
        .filter(|(k, _)| k.starts_with("ERRSHIM_"))
        .collect();
    let get = |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    if config::disabled(&get) {
        return;
    }
    let mut name = [0u8; 16];
    let n = sys::thread_name(&mut name);
    let _ = COMM.set((name, n));
    let comm_str = String::from_utf8_lossy(comm()).into_owned();
    let argv0 = argv0_basename();
    if !config::acts_in(&get, &[comm_str.as_str(), argv0.as_str()]) {
        return; // ERRSHIM_ONLY_CMDS / ERRSHIM_SKIP_CMDS: a pure pass-through in this process
    }
    let names: Vec<String> = vars.iter().map(|(k, _)| k.clone()).collect();
    let (mut cfg, errors) = config::from_lookup(&get, &names);
    // SAFETY: getauxval only reads the auxiliary vector.
    let secure = unsafe { libc::getauxval(libc::AT_SECURE) } != 0;
    let dropped = if secure {
        config::restrict_for_secure_mode(&mut cfg)
    } else {
        Vec::new()
    };

    conntable::init();
    // The diagnostics logger first: setting up the destination may need to warn.
    if log::set_logger(&logger::DIAG_LOGGER).is_ok() {
        log::set_max_level(cfg.level);
    }
    logger::init(&cfg.log);
    for e in &errors {
        diag_line(format_args!("{e}"));
    }
    for what in &dropped {
        log::warn!("secure-execution mode (setuid, setgid or file capabilities): ignoring {what}");
    }
    if cfg.strict && !errors.is_empty() {
        diag_line(format_args!(
            "errshim: ERRSHIM_STRICT=1 and {} configuration error(s): stopping with exit status 2",
            errors.len()
        ));
        // SAFETY: ends the process at startup, as strict mode asks.
        unsafe { libc::_exit(2) };
    }
    for name in &missing {
        log::warn!("no real {:?} after errshim; that call fails with ENOSYS", name);
    }

    log::info!(
        "errshim {} loaded into pid {} ({})",
        env!("CARGO_PKG_VERSION"),
        sys::getpid(),
        String::from_utf8_lossy(comm())
    );
    for line in cfg.describe() {
        log::info!("{line}");
    }
    if cfg.backtrace {
        backtrace::prepare();
    }
    // Byte counts run on the careful path: arm the calls that move data.
    conntable::set_counting(cfg.count);
    let data_calls = Call::ALL.iter().filter(|c| !matches!(c, Call::Shutdown | Call::Close));
    let counted = if cfg.count {
        data_calls.fold(0, |m, c| m | c.bit())
    } else {
        0
    };
    inject::set_config_calls(rules::succeeding_calls(&cfg.rules) | counted);
    if cfg.faults.n > 0 || cfg.control.is_some() {
        let seed = cfg.seed.unwrap_or_else(sys::random_u64);
        inject::init(&cfg.faults, seed);
        if let Some(path) = &cfg.control {
            inject::watch(path);
        }
        startup_line(&cfg, seed);
    }
    if cfg.summary {
        // A forked child's summary counts its own events only.
        // SAFETY: registers a handler that only stores zeros into atomics.
        unsafe { libc::pthread_atfork(None, None, Some(child_after_fork)) };
    }
    let _ = CONFIG.set(cfg);
}

/// Says, next to the events, that faults are active and with which seed, so any run can be
/// replayed with ERRSHIM_SEED.
fn startup_line(cfg: &Config, seed: u64) {
    let mut b = StackBuf::<1024>::new();
    let (pid, n) = (sys::getpid(), cfg.faults.n);
    let control = cfg.control.as_deref().unwrap_or("");
    match cfg.format {
        config::Format::Text => {
            let _ = write!(
                b,
                "errshim {} pid={pid} tid={} comm=",
                crate::timefmt::now(),
                sys::gettid()
            );
            b.push_escaped(comm());
            let _ = write!(b, " faults: {n} rule(s)");
            if !control.is_empty() {
                let _ = write!(b, " and the control file {control}");
            }
            let _ = write!(b, ", seed={seed} (ERRSHIM_SEED={seed} replays this run)");
        }
        config::Format::Json => {
            let mut o = crate::json::Obj::new(&mut b);
            o.fmt_str("ts", |t| {
                let _ = write!(t, "{}", crate::timefmt::now());
            });
            o.num("pid", pid)
                .str("comm", comm())
                .num("fault_rules", n)
                .str("control", control.as_bytes())
                .num("seed", seed);
            o.end();
        }
    }
    logger::event(b.finish_line());
}

extern "C" fn child_after_fork() {
    summary::reset();
}

/// At exit: the summary, when asked for.
extern "C" fn destructor() {
    let _ = std::panic::catch_unwind(|| {
        if let Some(cfg) = config().filter(|c| c.summary) {
            summary::report(cfg.format, comm());
        }
    });
}

#[used]
#[link_section = ".fini_array"]
static DESTRUCTOR: extern "C" fn() = destructor;

extern "C" fn constructor() {
    // Never take the host down: a bug here leaves errshim as a pass-through.
    let _ = std::panic::catch_unwind(init);
}

#[used]
#[link_section = ".init_array"]
static CONSTRUCTOR: extern "C" fn() = constructor;
