//! The shipped library where legacy servers run: the portable build of `scripts/package`
//! (glibc 2.17 and later) in a real Debian 11 userland (glibc 2.31), the `.deb` installed and
//! removed there with dpkg, the tarball unpacked anywhere, lintian on the `.deb`, and the
//! wrapper's `--check` naming a glibc too old for a library built on a newer system.
//!
//! The Debian 11 root is made with `debootstrap --variant=minbase --include=python3 bullseye`
//! when missing and kept between runs (`ERRSHIM_BULLSEYE_ROOT`, default
//! `/var/cache/errshim-test/bullseye`). Programs run in it under `chroot`, in a mount namespace
//! of their own with `/proc` mounted (as on a real system: errshim reads `/proc/self/status`).
//! Needs root; outside CI a test that cannot run says so and skips, in CI it fails.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// The tarball and the `.deb`, built by `scripts/package` once per test binary run.
fn packages() -> Option<&'static (PathBuf, PathBuf)> {
    static P: OnceLock<Option<(PathBuf, PathBuf)>> = OnceLock::new();
    P.get_or_init(|| {
        for tool in ["cargo-zigbuild", "dpkg-deb", "objdump", "strip"] {
            if !require_tool(tool) {
                return None;
            }
        }
        let out = std::process::Command::new(manifest_dir().join("scripts/package"))
            .current_dir(manifest_dir())
            .output()
            .expect("running scripts/package");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "scripts/package failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let paths: Vec<PathBuf> = stdout.lines().map(PathBuf::from).collect();
        assert_eq!(
            paths.len(),
            2,
            "scripts/package prints the tarball and the .deb: {stdout}"
        );
        assert!(
            paths[0].to_string_lossy().ends_with("-x86_64-linux-gnu.tar.gz"),
            "{paths:?}"
        );
        assert!(paths[1].to_string_lossy().ends_with("_amd64.deb"), "{paths:?}");
        Some((paths[0].clone(), paths[1].clone()))
    })
    .as_ref()
}

fn version() -> String {
    let toml = std::fs::read_to_string(manifest_dir().join("Cargo.toml")).unwrap();
    let line = toml.lines().find(|l| l.starts_with("version = ")).unwrap();
    line.split('"').nth(1).unwrap().to_string()
}

/// The tarball unpacked once per test binary run: its top directory.
fn unpacked() -> Option<&'static PathBuf> {
    static U: OnceLock<Option<PathBuf>> = OnceLock::new();
    U.get_or_init(|| {
        let (tar, _) = packages()?;
        let dir = target_dir().join("tmp").join("portable-unpacked");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Cmd::new("tar")
            .args(["-xzf"])
            .arg_path(tar)
            .args(["-C"])
            .arg_path(&dir)
            .run()
            .assert_ok();
        Some(dir.join(format!("errshim-{}-x86_64-linux-gnu", version())))
    })
    .as_ref()
}

/// The portable library, from the tarball.
fn portable_lib() -> Option<PathBuf> {
    Some(unpacked()?.join("lib/errshim/liberrshim.so"))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Skips loudly outside CI, fails in CI.
fn cannot_run(why: &str) {
    assert!(!in_ci(), "{why} (required in CI)");
    eprintln!("\n*** SKIPPED: {why} ***\n");
}

/// The Debian 11 root, made when missing (once per machine: it is kept).
fn bullseye() -> Option<&'static PathBuf> {
    static R: OnceLock<Option<PathBuf>> = OnceLock::new();
    R.get_or_init(|| {
        let root = PathBuf::from(
            std::env::var_os("ERRSHIM_BULLSEYE_ROOT").unwrap_or_else(|| "/var/cache/errshim-test/bullseye".into()),
        );
        if root.join("usr/bin/python3").exists() {
            return Some(root);
        }
        if !is_root() {
            cannot_run("the Debian 11 tests need root (debootstrap, chroot, mount)");
            return None;
        }
        if !require_tool("debootstrap") {
            return None;
        }
        let tmp = root.with_extension("building");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(root.parent().unwrap()).unwrap();
        eprintln!(
            "making the Debian 11 root {} with debootstrap (about 2 minutes) ...",
            root.display()
        );
        let r = Cmd::new("debootstrap")
            .args(["--variant=minbase", "--include=python3", "bullseye"])
            .arg_path(&tmp)
            .args(["http://deb.debian.org/debian"])
            .timeout(Duration::from_secs(1200))
            .run();
        if r.code != Some(0) {
            let why = format!("debootstrap of Debian 11 failed:\n{}", r.describe());
            let _ = std::fs::remove_dir_all(&tmp);
            cannot_run(&why);
            return None;
        }
        std::fs::rename(&tmp, &root).unwrap();
        Some(root)
    })
    .as_ref()
}

/// Both the root and the packages, or None (skipped, said why).
fn setup() -> Option<(&'static PathBuf, &'static (PathBuf, PathBuf))> {
    if !is_root() {
        cannot_run("the Debian 11 tests need root (chroot, mount)");
        return None;
    }
    let root = bullseye()?;
    let pkgs = packages()?;
    Some((root, pkgs))
}

/// A directory of this test's inside the root (`/tmp/errshim-…` there), removed afterwards.
struct RootDir {
    host: PathBuf,
    inside: String,
}

impl RootDir {
    fn new(root: &Path, tag: &str) -> RootDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let inside = format!("/tmp/errshim-{tag}-{}-{n}", std::process::id());
        let host = root.join(inside.trim_start_matches('/'));
        let _ = std::fs::remove_dir_all(&host);
        std::fs::create_dir_all(&host).unwrap();
        RootDir { host, inside }
    }
    fn put(&self, name: &str, from: &Path) -> String {
        std::fs::copy(from, self.host.join(name)).unwrap();
        format!("{}/{name}", self.inside)
    }
    fn write(&self, name: &str, text: &str) -> String {
        std::fs::write(self.host.join(name), text).unwrap();
        format!("{}/{name}", self.inside)
    }
}

impl Drop for RootDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.host);
    }
}

/// `sh -c SCRIPT` inside the root: a mount namespace of its own, `/proc` mounted, chroot.
fn in_root(root: &Path, script: &str) -> Run {
    Cmd::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -t proc proc \"$1/proc\" && exec chroot \"$1\" /bin/sh -c \"$2\"",
            "sh",
        ])
        .arg_path(root)
        .args([script])
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C")
        .timeout(Duration::from_secs(120))
        .run()
}

/// The kernel-made recipes and a small server with misbehaving clients, for Python 3.9. Prints
/// what the program saw, one line per step.
const PROGRAM: &str = r#"
import ctypes, socket, struct, sys, threading

libc = ctypes.CDLL(None)
print("symbols close_range=%s closefrom=%s" % (hasattr(libc, "close_range"), hasattr(libc, "closefrom")))

def shutdown(s, label):
    try:
        s.shutdown(socket.SHUT_WR)
        print(label, "shutdown ok")
    except OSError as e:
        print(label, "shutdown failed errno=%d" % e.errno)

# A: shutdown on a socket that never connected: ENOTCONN from the kernel.
a = socket.socket()
shutdown(a, "A")
a.close()

# B: the peer resets (SO_LINGER 0, then close: RST on loopback before close returns), the
# server's recv gets ECONNRESET, then shutdown gets ENOTCONN (the socket is CLOSE).
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(8)
c = socket.create_connection(ls.getsockname())
s, _ = ls.accept()
c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
c.close()
try:
    s.recv(10)
    print("B recv ok")
except OSError as e:
    print("B recv failed errno=%d" % e.errno)
shutdown(s, "B")
s.close()

# C: a server answering clients, some of which misbehave: one resets mid-request, one
# connects and leaves at once, one behaves.
def serve(n):
    failed = 0
    for _ in range(n):
        conn, _ = ls.accept()
        try:
            data = conn.recv(100)
            if data:
                conn.sendall(b"reply:" + data)
        except OSError as e:
            print("C server recv failed errno=%d" % e.errno)
        try:
            conn.shutdown(socket.SHUT_WR)
        except OSError as e:
            failed += 1
        conn.close()
    print("C server done shutdown_failed=%d" % failed)

# The misbehaving clients first, so that each has reset its connection before the server
# accepts it (deterministic); then the server, and a client that behaves.
bad = socket.create_connection(ls.getsockname())
bad.send(b"partial")
bad.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
bad.close()
gone = socket.create_connection(ls.getsockname())
gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
gone.close()
t = threading.Thread(target=serve, args=(3,))
t.start()
good = socket.create_connection(ls.getsockname())
good.sendall(b"hello")
reply = good.recv(100).decode()
good.close()
t.join()
# Printed after the server thread is done, so that its lines and this one never interleave.
print("C client got", reply)
print("done")
"#;

fn json_events(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .filter(|v: &serde_json::Value| v.get("call").is_some())
        .collect()
}

#[test]
fn portable_library_needs_glibc_2_17_at_most() {
    let Some(lib) = portable_lib() else { return };
    let p = Cmd::new("objdump").args(["-p"]).arg_path(&lib).run();
    p.assert_ok();
    let refs: Vec<&str> = p
        .stdout
        .split("Version References:")
        .nth(1)
        .expect("version references")
        .lines()
        .filter_map(|l| l.split_whitespace().last().filter(|w| w.starts_with("GLIBC_")))
        .collect();
    assert!(refs.contains(&"GLIBC_2.2.5"), "{refs:?}");
    for v in &refs {
        let minor: u32 = v
            .trim_start_matches("GLIBC_2.")
            .split('.')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(minor <= 17, "the portable library requires {v}: {refs:?}");
    }
    // The hooks of functions older glibcs lack are exported under hidden versions only.
    let t2 = Cmd::new("objdump").args(["-T"]).arg_path(&lib).run();
    for name in ["close_range", "closefrom", "fcntl64"] {
        let line = t2
            .stdout
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")))
            .unwrap_or_else(|| panic!("{name} is not exported:\n{}", t2.stdout));
        assert!(line.contains("(GLIBC_2."), "{name} must be a hidden version: {line}");
    }
    assert!(!p.stdout.contains("libgcc_s"), "no libgcc_s.so.1 needed:\n{}", p.stdout);
}

#[test]
fn shipped_library_runs_real_programs_in_debian_11() {
    let Some((root, _)) = setup() else { return };
    let Some(portable) = portable_lib() else { return };
    let d = RootDir::new(root, "lib");
    let lib = d.put("liberrshim.so", &portable);
    let prog = d.write("program.py", PROGRAM);
    // glibc 2.31 there, really.
    let v = in_root(root, "ldd --version | head -1");
    assert!(v.stdout.contains("2.31"), "{}", v.describe());

    // A program that makes no socket call: starts, exits 0, says nothing.
    let quiet = in_root(root, &format!("LD_PRELOAD={lib} /bin/true"));
    assert_eq!(quiet.code, Some(0), "{}", quiet.describe());
    assert_eq!(quiet.stderr, "", "no warnings at startup: {}", quiet.describe());

    let without = in_root(root, &format!("python3 {prog}"));
    without.assert_ok();
    let log = format!("{}/events.log", d.inside);
    let with = in_root(
        root,
        &format!("LD_PRELOAD={lib} ERRSHIM_FORMAT=json ERRSHIM_LOG={log} python3 {prog}"),
    );
    with.assert_ok();
    let enotconn = libc::ENOTCONN;
    // Without errshim, the kernel's ENOTCONN; with it, the default rule's success.
    for step in ["A", "B"] {
        assert!(
            without
                .stdout
                .contains(&format!("{step} shutdown failed errno={enotconn}")),
            "{}",
            without.describe()
        );
        assert!(
            with.stdout.contains(&format!("{step} shutdown ok")),
            "{}",
            with.describe()
        );
    }
    let reset = format!("B recv failed errno={}", libc::ECONNRESET);
    assert!(
        without.stdout.contains(&reset) && with.stdout.contains(&reset),
        "{}",
        with.describe()
    );
    assert!(with.stdout.contains("C client got reply:hello"), "{}", with.describe());
    // The reset clients' ECONNRESET reaches the server's recv as it would without errshim (no
    // rule for recv); the shutdowns after them fail without errshim and not with it.
    let recv = |r: &Run| r.stdout.lines().filter(|l| l.starts_with("C server recv")).count();
    assert_eq!(recv(&with), 2, "{}", with.describe());
    assert_eq!(recv(&without), 2, "{}", without.describe());
    assert!(
        without.stdout.contains("C server done shutdown_failed=2"),
        "{}",
        without.describe()
    );
    assert!(
        with.stdout.contains("C server done shutdown_failed=0"),
        "{}",
        with.describe()
    );
    // Symbols the old glibc does not have are not there with errshim either.
    let symbols = "symbols close_range=False closefrom=False";
    assert!(
        without.stdout.contains(symbols) && with.stdout.contains(symbols),
        "{}",
        with.describe()
    );

    let text = std::fs::read_to_string(d.host.join("events.log")).expect("the event log");
    let events = json_events(&text);
    let shutdowns: Vec<_> = events
        .iter()
        .filter(|e| e["call"] == "shutdown" && e["errno"] == "ENOTCONN")
        .collect();
    assert!(
        shutdowns.iter().all(|e| e["action"] == "ignore" && e["returned"] == 0),
        "{text}"
    );
    let causes: Vec<&str> = shutdowns.iter().map(|e| e["cause"].as_str().unwrap()).collect();
    assert!(causes.contains(&"never_connected"), "recipe A: {text}");
    assert_eq!(
        causes.iter().filter(|c| **c == "peer_reset").count(),
        3,
        "recipe B and the two reset clients: {text}"
    );
    let b = shutdowns
        .iter()
        .find(|e| e["cause"] == "peer_reset" && e["history"].as_array().unwrap().iter().any(|h| h == "accepted"))
        .unwrap_or_else(|| panic!("an accepted connection reset by its peer: {text}"));
    assert_eq!(b["state"], "CLOSE", "{b}");
    assert!(b["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{b}");
}

#[test]
fn deb_installs_runs_and_removes_cleanly_in_debian_11() {
    let Some((root, (_, deb))) = setup() else { return };
    // One installer at a time in the shared root (another test run on this machine may be at
    // it), and no package left by an interrupted run.
    let lock = std::fs::File::create(root.join("var/lib/dpkg/errshim-test.lock")).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor this test owns; released when `lock` is dropped.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let _ = in_root(root, "dpkg -r errshim >/dev/null 2>&1");
    let d = RootDir::new(root, "deb");
    let pkg = d.put("errshim.deb", deb);
    let prog = d.write("program.py", PROGRAM);
    let inst = in_root(root, &format!("dpkg -i {pkg}"));
    assert_eq!(inst.code, Some(0), "{}", inst.describe());
    let files = in_root(root, "dpkg -L errshim");
    files.assert_ok();
    let listed: Vec<String> = files.stdout.lines().map(str::to_string).collect();
    for f in [
        "/usr/bin/errshim",
        "/usr/lib/errshim/liberrshim.so",
        "/usr/lib/errshim/errshim-explain",
        "/usr/lib/errshim/errshim-replay",
        "/usr/share/man/man1/errshim.1.gz",
    ] {
        assert!(listed.iter().any(|l| l == f), "{f} not installed: {listed:?}");
    }

    let ver = in_root(root, "errshim --version");
    assert_eq!(
        ver.stdout.trim(),
        format!("errshim {}", version()),
        "{}",
        ver.describe()
    );
    // The installed command finds the installed library: no cargo, no checkout there.
    let run = in_root(root, &format!("errshim -- python3 {prog}"));
    run.assert_ok();
    assert!(
        run.stdout.contains("A shutdown ok") && run.stdout.contains("B shutdown ok"),
        "{}",
        run.describe()
    );
    let ev = run.events();
    assert!(
        ev.iter()
            .any(|l| l.contains("shutdown(fd=") && l.contains("ENOTCONN -> ignored") && l.contains("cause=peer_reset")),
        "{}",
        run.describe()
    );
    // The installed command finds the installed explain, which runs on Debian 11's Python 3.9.
    let log = d.write("events.log", &run.stderr);
    let explained = in_root(root, &format!("errshim explain --json {log}"));
    explained.assert_ok();
    let digest: serde_json::Value =
        serde_json::from_str(&explained.stdout).unwrap_or_else(|e| panic!("{e}: {}", explained.describe()));
    assert_eq!(digest["events"]["total"], ev.len(), "{}", explained.stdout);
    assert!(
        digest["causes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["cause"] == "peer_reset"),
        "{}",
        explained.stdout
    );
    let check = in_root(root, "errshim --check /bin/true");
    assert_eq!(check.code, Some(0), "{}", check.describe());
    assert!(check.stderr.contains("configuration OK"), "{}", check.describe());
    let man = in_root(root, "zcat /usr/share/man/man1/errshim.1.gz | head -1");
    assert!(
        man.stdout.contains(&format!("errshim {}", version())),
        "{}",
        man.describe()
    );

    let rm = in_root(root, "dpkg -r errshim");
    assert_eq!(rm.code, Some(0), "{}", rm.describe());
    for f in &listed {
        let p = root.join(f.trim_start_matches('/'));
        let kept = p.is_file() || (f.contains("errshim") && p.exists());
        assert!(!kept, "dpkg -r left {f} behind");
    }
    let gone = in_root(root, "dpkg -s errshim");
    assert_ne!(gone.code, Some(0), "still known to dpkg: {}", gone.describe());
}

#[test]
fn deb_passes_lintian() {
    let Some((_, deb)) = packages() else { return };
    if !require_tool("lintian") {
        return;
    }
    let r = Cmd::new("lintian")
        .args(["--fail-on", "error", "--no-tag-display-limit"])
        .arg_path(deb)
        .timeout(Duration::from_secs(300))
        .run();
    assert_eq!(r.code, Some(0), "lintian found errors:\n{}", r.describe());
    assert!(!r.stdout.lines().any(|l| l.starts_with("E:")), "{}", r.describe());
}

#[test]
fn tarball_works_unpacked_anywhere() {
    let Some((tar, _)) = packages() else { return };
    let t = TempDir::new("portable-tar");
    let somewhere = t.0.join("some where");
    std::fs::create_dir_all(&somewhere).unwrap();
    Cmd::new("tar")
        .args(["-xzf"])
        .arg_path(tar)
        .args(["-C"])
        .arg_path(&somewhere)
        .run()
        .assert_ok();
    let top = somewhere.join(format!("errshim-{}-x86_64-linux-gnu", version()));
    for f in [
        "bin/errshim",
        "lib/errshim/liberrshim.so",
        "lib/errshim/errshim-explain",
        "lib/errshim/errshim-replay",
        "share/man/man1/errshim.1.gz",
        "share/doc/errshim/README.md",
        "share/doc/errshim/LICENSE-MIT",
        "share/doc/errshim/LICENSE-APACHE",
    ] {
        assert!(top.join(f).is_file(), "{f} missing from the tarball");
    }
    let cmd = top.join("bin/errshim");
    let v = Cmd::new(&cmd).args(["--version"]).run();
    assert_eq!(v.stdout.trim(), format!("errshim {}", version()), "{}", v.describe());
    // On this machine, from a directory with a space in its name, with no checkout around.
    let r = Cmd::new(&cmd)
        .args([
            "--",
            "python3",
            "-c",
            "import socket; s = socket.socket(); s.shutdown(socket.SHUT_WR); print('ok')",
        ])
        .run();
    r.assert_ok();
    assert_eq!(r.stdout.trim(), "ok");
    assert!(
        r.events()
            .iter()
            .any(|l| l.contains("ENOTCONN -> ignored") && l.contains("cause=never_connected")),
        "{}",
        r.describe()
    );
    // Its explain, found beside it, digests that event.
    let e = Cmd::new(&cmd).args(["explain"]).stdin(r.stderr.as_bytes()).run();
    e.assert_ok();
    assert!(
        e.stdout.contains("1 event: 1 real, 0 injected") && e.stdout.contains("never_connected (1: shutdown 1)"),
        "{}",
        e.describe()
    );
    // And in the Debian 11 root.
    let Some((root, _)) = setup() else { return };
    let d = RootDir::new(root, "tar");
    let inside_tar = d.put("errshim.tar.gz", tar);
    let r = in_root(
        root,
        &format!(
            "cd {0} && tar -xzf {inside_tar} && {0}/errshim-{1}-x86_64-linux-gnu/bin/errshim -- python3 -c \
             'import socket; s = socket.socket(); s.shutdown(socket.SHUT_WR); print(\"ok\")'",
            d.inside,
            version()
        ),
    );
    r.assert_ok();
    assert!(
        r.events().iter().any(|l| l.contains("ENOTCONN -> ignored")),
        "{}",
        r.describe()
    );
}

/// A library built on this (newer) system, copied into the old one: `--check COMMAND` says
/// that COMMAND's glibc is too old for it, names what is missing, and fails.
#[test]
fn check_says_when_the_glibc_is_too_old() {
    let Some((root, _)) = setup() else { return };
    let d = RootDir::new(root, "check");
    let local = d.put("liberrshim.so", &lib());
    let wrapper = d.put("errshim", &manifest_dir().join("scripts/errshim"));
    let r = in_root(root, &format!("{wrapper} --lib {local} --check /bin/true"));
    assert_eq!(r.code, Some(1), "{}", r.describe());
    assert!(
        r.stderr.contains("runs with glibc 2.31, older than") && r.stderr.contains("it lacks GLIBC_2.3"),
        "{}",
        r.describe()
    );
    // The portable library passes the same check there.
    let Some(portable) = portable_lib() else { return };
    let portable = d.put("portable.so", &portable);
    let r = in_root(root, &format!("{wrapper} --lib {portable} --check /bin/true"));
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(!r.stderr.contains("older than"), "{}", r.describe());
}

/// On this glibc, which has `close_range`, `closefrom` and `fcntl64`: a program's calls reach
/// errshim's hooks (they carry the version), while an unversioned lookup (`dlsym`, as ctypes
/// makes it) finds libc's own function, as without errshim.
#[test]
fn hidden_versions_keep_unversioned_lookups_as_without_errshim() {
    let script = r#"
import ctypes
libc = ctypes.CDLL("libc.so.6")
every = ctypes.CDLL(None)
for name in ("close_range", "closefrom", "fcntl64"):
    if not hasattr(libc, name):
        print(name, "absent")
        continue
    a = ctypes.cast(getattr(every, name), ctypes.c_void_p).value
    b = ctypes.cast(getattr(libc, name), ctypes.c_void_p).value
    print(name, "libc's" if a == b else "another's")
"#;
    let without = Cmd::new("python3").args(["-c", script]).run();
    without.assert_ok();
    let with = Cmd::new("python3").args(["-c", script]).shim().run();
    with.assert_ok();
    assert_eq!(with.stdout, without.stdout, "{}", with.describe());
    assert!(with.stdout.contains("close_range libc's"), "{}", with.describe());
    // And a program's own call of close_range (CPython's os.closerange makes one) binds to
    // errshim's hook, as the dynamic loader reports.
    let r = Cmd::new("python3")
        .args(["-c", "import os; os.closerange(1000, 1001)"])
        .env("LD_DEBUG", "bindings")
        .shim()
        .run();
    r.assert_ok();
    let binding = r
        .stderr
        .lines()
        .find(|l| l.contains("normal symbol `close_range'"))
        .unwrap_or_else(|| panic!("no binding of close_range: {}", r.describe()));
    assert!(
        binding.contains("liberrshim.so") && binding.contains("[GLIBC_2.34]"),
        "{binding}"
    );
}
