//! Link options for `liberrshim.so`: what every process start pays for the library, kept small
//! (the README's "Performance" has the figures, `scripts/bench --help` the method).

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    // No C start files (crti/crtn, crtbeginS/crtendS): errshim has no `_init`/`_fini`, and
    // their transactional-memory and gmon hooks and `__cxa_finalize` call at unload add
    // dynamic symbol lookups and a page of code to fault in to every process start. The one
    // symbol they provide that is needed, `__dso_handle`, is defined in `src/lib.rs`.
    println!("cargo:rustc-cdylib-link-arg=-nostartfiles");
    // Never unloaded, as a preloaded library never is: the start files' `__cxa_finalize` call
    // is what would unregister, at `dlclose`, the fork handlers errshim registers under its
    // `__dso_handle` (and std's thread-local destructors), so a library loaded with `dlopen`
    // and closed must stay mapped, or the next fork's child jumps into unmapped code.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    // Each loadable segment starts on a page of its own: the relocated data (RELRO) then takes
    // as few pages as its size needs, rather than one more for where the code happened to end
    // (every page written at start-up is a page fault in every process). GNU ld ignores it.
    // `zig cc` (cargo-zigbuild, the portable build of `scripts/package`) refuses it.
    if !linker_is_zig() {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,separate-loadable-segments");
    }
    // errshim's own calls of its own exported functions (a hook calling itself once its real
    // function is resolved, std calling `syscall` or `close`) bound at link time: no dynamic
    // symbol lookup for them at each start. They reached errshim's hooks before too, unless the
    // program itself defines such a function, and then errshim's calls reach its hook, which
    // passes them on to the real function as usual.
    // `zig cc` knows only `-Bsymbolic`, the same here: errshim exports functions alone.
    if linker_is_zig() {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-Bsymbolic");
    } else {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-Bsymbolic-functions");
    }
    glibc_versions();
    symbol_order();
}

/// Whether the linker is cargo-zigbuild's `zig cc` wrapper.
fn linker_is_zig() -> bool {
    std::env::var("RUSTC_LINKER").is_ok_and(|l| l.contains("zigcc"))
}

/// The glibc version names under which errshim exports the hooks of functions that older
/// glibcs lack (`close_range` and `closefrom` came in 2.34, `fcntl64` in 2.28; see `hook!`'s
/// `since` in `src/interpose/hooks.rs`): a version script that defines them, beside the one
/// rustc writes for the exported symbols. It names no symbol: the `.symver` directives in the
/// code put each hook under its version.
fn glibc_versions() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let script = out.join("glibc-versions.map");
    std::fs::write(&script, "GLIBC_2.28 { };\nGLIBC_2.34 { } GLIBC_2.28;\n").expect("writing the version script");
    println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={}", script.display());
}

/// The code that runs at every start (`.init_array`) in one stretch at the front of `.text`:
/// errshim's constructor comes first by itself (`src/lib.rs`), and Rust's standard library adds
/// an `.init_array` function of its own (it saves argc and argv), which the linker would put
/// wherever its input order says, one more page of code to fault in. lld's
/// `--symbol-ordering-file` places it first. The symbol's name (mangled with the standard
/// library's crate hash) is read from the toolchain's `libstd` rlib. Only with the toolchain's
/// own lld (Rust 1.90 and later on x86_64 Linux, when neither a linker nor linker flags were
/// chosen): another linker may not know the option, and then the order is simply the default.
fn symbol_order() {
    let target = std::env::var("TARGET").unwrap_or_default();
    if target != "x86_64-unknown-linux-gnu" || std::env::var_os("RUSTC_LINKER").is_some() {
        return;
    }
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if flags.contains("linker") || flags.contains("link-self-contained") {
        return;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    if !rustc_at_least(&rustc, 1, 90) {
        return;
    }
    let Some(sysroot) = output(&rustc, &["--print", "sysroot"]) else {
        return;
    };
    let lib = Path::new(sysroot.trim()).join("lib/rustlib").join(&target).join("lib");
    let Some(symbol) = std_init_symbol(&lib) else {
        return;
    };
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("symbol-order.txt");
    if std::fs::write(&out, format!("{symbol}\n")).is_err() {
        return;
    }
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,--symbol-ordering-file={}",
        out.display()
    );
    println!("cargo:rustc-cdylib-link-arg=-Wl,--no-warn-symbol-ordering");
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let o = std::process::Command::new(program).args(args).output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn rustc_at_least(rustc: &str, major: u32, minor: u32) -> bool {
    let Some(v) = output(rustc, &["--version"]) else {
        return false;
    };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let mut nums = v.split_whitespace().nth(1).unwrap_or("").split('.');
    let mut next = || nums.next().and_then(|n| n.parse::<u32>().ok()).unwrap_or(0);
    (next(), next()) >= (major, minor)
}

/// The mangled name of std's `ARGV_INIT_ARRAY::init_wrapper`, found in the `libstd-*.rlib`.
fn std_init_symbol(lib: &Path) -> Option<String> {
    let rlib = std::fs::read_dir(lib)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("libstd-") && name.ends_with(".rlib")
        })?;
    let bytes = std::fs::read(rlib).ok()?;
    let tail = b"ARGV_INIT_ARRAY12init_wrapper";
    let end = bytes.windows(tail.len()).position(|w| w == tail)? + tail.len();
    // Back to the start of the symbol: "_RNv", over the characters a v0 name is made of.
    let start = bytes[..end]
        .iter()
        .rposition(|&c| !(c.is_ascii_alphanumeric() || c == b'_'))
        .map_or(0, |i| i + 1);
    let name = std::str::from_utf8(&bytes[start..end]).ok()?;
    name.starts_with("_RNv").then(|| name.to_string())
}
