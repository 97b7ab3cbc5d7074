//! Real servers, unmodified, under errshim on loopback: nginx and redis-server from Debian's
//! packages (`.ci/run` installs nginx-light, redis-server and redis-tools). Each runs in its own
//! temporary directory with its own configuration and port, and is stopped at the end even when
//! the test fails (a guard kills its process group). The clients are written here, in Rust.
//!
//! - `nginx_static_files_resets_and_shutdown_enotconn`: concurrent clients fetch static files,
//!   some resetting mid-request or mid-response; every complete request is answered correctly;
//!   a deterministic recipe makes nginx's own `shutdown()` fail with ENOTCONN, which nginx logs
//!   without errshim and which errshim suppresses and logs instead.
//! - `redis_short_transfers_and_resets`: redis-server with every read and write on TCP cut short
//!   (`read,write:short:fd=tcp`) under a load of SET/GET (pipelined, binary values up to 300 KB)
//!   and of clients that reset mid-command or mid-reply: every reply correct, no crash.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Running a server
// ---------------------------------------------------------------------------------------------

/// A server in its own process group: the whole group is killed when this is dropped, whatever
/// happened to the test.
struct Server {
    child: Child,
    what: &'static str,
    logs: Vec<PathBuf>,
}

impl Server {
    /// Starts `cmd` in `dir` with no inherited ERRSHIM_* or LD_PRELOAD, and errshim preloaded
    /// with `env` when `shim`. stdout and stderr go to files in `dir`.
    fn start(mut cmd: Command, what: &'static str, dir: &TempDir, shim: bool, env: &[(&str, &str)]) -> Server {
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("ERRSHIM_") || k == "LD_PRELOAD" {
                cmd.env_remove(k);
            }
        }
        if shim {
            cmd.env("LD_PRELOAD", lib()).env("ERRSHIM_LOG_RATE", "0");
            for (k, v) in env {
                cmd.env(k, v);
            }
        }
        let out = dir.path(&format!("{what}.stdout"));
        let err = dir.path(&format!("{what}.stderr"));
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .current_dir(&dir.0)
            .process_group(0);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {what}: {e}"));
        Server {
            child,
            what,
            logs: vec![out, err],
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Its own output and logs, for failure messages.
    fn describe(&self) -> String {
        self.logs
            .iter()
            .map(|p| {
                format!(
                    "--- {} ---\n{}",
                    p.display(),
                    std::fs::read_to_string(p).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Panics (with the server's output) if it has exited.
    fn assert_alive(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!("{} exited: {st:?}\n{}", self.what, self.describe());
        }
    }

    /// A connection to 127.0.0.1:`port`, retried while the server starts (bounded). Err: the
    /// server exited first (with its output), e.g. because another process took the port.
    fn connect(&mut self, port: u16) -> Result<TcpStream, String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
                return Ok(s);
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!("{} exited: {st:?}\n{}", self.what, self.describe()));
            }
            assert!(
                Instant::now() < deadline,
                "{} never listened on {port}\n{}",
                self.what,
                self.describe()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (bounded) for the server to exit on its own.
    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit\n{}",
                self.what,
                self.describe()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signals the process group created for this server (SIGCONT first, in case
            // a test stopped one of its processes).
            unsafe {
                libc::kill(-self.pid(), libc::SIGCONT);
                libc::kill(-self.pid(), libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

/// Starts a server on a free port (`start(port)`) and waits until it accepts connections; if it
/// exits first because another process took the port in between, tries another port.
fn retry_port(mut start: impl FnMut(u16) -> Server) -> (Server, u16) {
    on_free_port(|port| {
        let mut server = start(port);
        match server.connect(port) {
            Ok(_) => Some(server),
            Err(e) if e.contains("Address already in use") => None,
            Err(e) => panic!("{e}"),
        }
    })
}

/// Deterministic bytes (all 256 values, CR and LF included).
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// The program found at `path`, or else on PATH; None (after a loud skip message, or a failure
/// in CI) when missing.
fn tool(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    if p.exists() {
        return Some(p.to_path_buf());
    }
    let name = p.file_name().unwrap().to_str().unwrap();
    require_tool(name).then(|| PathBuf::from(name))
}

/// The lines of errshim's per-process logs in `dir` (`errshim-<pid>.log`), by file.
fn errshim_logs(dir: &TempDir) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(&dir.0)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name()?.to_str()?.to_string();
            name.starts_with("errshim-")
                .then(|| (name, std::fs::read_to_string(&p).unwrap()))
        })
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------
// nginx
// ---------------------------------------------------------------------------------------------

const FILES: [(&str, usize); 5] = [
    ("empty", 0),
    ("small", 1000),
    ("page", 65536),
    ("medium", 300_000),
    ("big", 2_000_000),
];

fn file_content(i: usize) -> Vec<u8> {
    bytes(i as u64 + 1, FILES[i].1)
}

fn nginx_conf(dir: &Path, port: u16, sendfile: bool) -> String {
    let d = dir.display();
    let sendfile = if sendfile { "on" } else { "off" };
    format!(
        "worker_processes 1;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log info;\n\
         user root;\n\
         events {{ worker_connections 512; }}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   sendfile {sendfile};\n\
         \x20   client_body_temp_path {d}/client_body;\n\
         \x20   proxy_temp_path {d}/proxy;\n\
         \x20   fastcgi_temp_path {d}/fastcgi;\n\
         \x20   uwsgi_temp_path {d}/uwsgi;\n\
         \x20   scgi_temp_path {d}/scgi;\n\
         \x20   server {{\n\
         \x20       listen 127.0.0.1:{port};\n\
         \x20       root {d}/www;\n\
         \x20       lingering_close always;\n\
         \x20       location = /discard {{ return 200 \"ok\\n\"; }}\n\
         \x20   }}\n\
         }}\n"
    )
}

/// One response read from `r`: (status, body), the body by Content-Length.
fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<(u32, Vec<u8>)> {
    let mut status = String::new();
    r.read_line(&mut status)?;
    let code: u32 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status:?}")))?;
    let mut len = None;
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        if h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse::<usize>().ok();
            }
        }
    }
    let len = len.ok_or_else(|| std::io::Error::other("no Content-Length"))?;
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok((code, body))
}

/// What the load's clients saw.
#[derive(Default, Debug)]
struct Load {
    complete: usize,
    correct: usize,
    resets: usize,
    failures: Vec<String>,
}

/// Counts a complete request: status 200 and exactly the bytes of file `want`.
fn check(load: &mut Load, what: &str, got: std::io::Result<(u32, Vec<u8>)>, want: usize) {
    load.complete += 1;
    match got {
        Ok((200, body)) if body == file_content(want) => load.correct += 1,
        Ok((code, body)) => load
            .failures
            .push(format!("{what}: status {code}, {} bytes", body.len())),
        Err(e) => load.failures.push(format!("{what}: {e}")),
    }
}

/// One client thread: `n` requests of mixed kinds.
fn nginx_client(port: u16, t: usize, n: usize) -> Load {
    let mut load = Load::default();
    for i in 0..n {
        let f = (t * 7 + i * 3) % FILES.len();
        let path = format!("/{}", FILES[f].0);
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        match (t + i) % 5 {
            // One request, Connection: close.
            0 | 1 => {
                write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
                let mut r = BufReader::new(s);
                let got = read_response(&mut r);
                check(&mut load, &path, got, f);
                let mut rest = Vec::new();
                let _ = r.read_to_end(&mut rest);
                if !rest.is_empty() {
                    load.failures
                        .push(format!("{path}: {} bytes after the response", rest.len()));
                }
            }
            // Two requests on a keep-alive connection.
            2 => {
                let g = (f + 1) % FILES.len();
                let path2 = format!("/{}", FILES[g].0);
                write!(
                    s,
                    "GET {path} HTTP/1.1\r\nHost: x\r\n\r\nGET {path2} HTTP/1.1\r\nHost: x\r\n\r\n"
                )
                .unwrap();
                let mut r = BufReader::new(s);
                let got = read_response(&mut r);
                check(&mut load, &path, got, f);
                let got = read_response(&mut r);
                check(&mut load, &path2, got, g);
                let _ = r.get_ref().shutdown(Shutdown::Both);
            }
            // Reset in the middle of the request.
            3 => {
                write!(s, "GET /big HTTP/1.1\r\nHost: x\r\n").unwrap();
                abort_connection(s);
                load.resets += 1;
            }
            // Reset in the middle of the response.
            _ => {
                write!(s, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                let mut buf = vec![0; 20_000];
                let _ = s.read(&mut buf);
                abort_connection(s);
                load.resets += 1;
            }
        }
    }
    load
}

/// The process's state letter from /proc (`T`: stopped).
fn proc_state(pid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .and_then(|(_, r)| r.trim().chars().next())
        .unwrap_or('?')
}

/// The children of `pid` (from /proc/*/stat).
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            stat.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<i32>().ok())
                == Some(pid)
        })
        .collect()
}

/// The deterministic recipe for nginx's own `shutdown() failed (107: ...)`: a POST to a
/// location that answers without reading the body, with only half the body sent. nginx answers
/// and waits to discard the rest (lingering close). The worker is stopped (SIGSTOP, and its
/// state seen as `T`), the client sends the rest of the body and resets the connection, and the
/// worker continues: it reads the body's end (still queued before the RST), finishes the
/// request, and calls shutdown(SHUT_WR) on a socket the RST has already moved to CLOSE.
fn discard_then_reset(port: u16, worker: i32) -> Result<(), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /discard HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 100\r\n\r\n{}",
        "a".repeat(50)
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !(got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"ok\n")) {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("no answer to the POST: {:?}", String::from_utf8_lossy(&got)));
        }
        got.extend_from_slice(&buf[..n]);
    }
    if !got.starts_with(b"HTTP/1.1 200 ") {
        return Err(format!("POST answered {:?}", String::from_utf8_lossy(&got)));
    }
    // SAFETY: signals the nginx worker this test started.
    unsafe { libc::kill(worker, libc::SIGSTOP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while proc_state(worker) != 'T' {
        if Instant::now() > deadline {
            // SAFETY: as above.
            unsafe { libc::kill(worker, libc::SIGCONT) };
            return Err("the worker did not stop".into());
        }
        std::thread::yield_now();
    }
    s.write_all("b".repeat(50).as_bytes()).unwrap();
    abort_connection(s);
    // SAFETY: as above.
    unsafe { libc::kill(worker, libc::SIGCONT) };
    Ok(())
}

/// What one nginx run showed.
struct NginxRun {
    load: Load,
    error_log: String,
    errshim_logs: Vec<(String, String)>,
    worker: i32,
}

const DISCARD_RESETS: usize = 10;

/// nginx serving FILES from `dir`, under errshim (with `env` and its log in `dir`) when `shim`.
fn start_nginx(nginx: &Path, dir: &TempDir, shim: bool, sendfile: bool, env: &[(&str, &str)]) -> (Server, u16) {
    std::fs::create_dir(dir.path("www")).unwrap();
    for (i, (name, _)) in FILES.iter().enumerate() {
        std::fs::write(dir.path("www").join(name), file_content(i)).unwrap();
    }
    let conf = dir.path("nginx.conf");
    let errshim_log = dir.path("errshim-%p.log").display().to_string();
    let mut env = env.to_vec();
    env.push(("ERRSHIM_LOG", errshim_log.as_str()));
    // A free port, and another one if some other process takes it before nginx binds it.
    retry_port(|port| {
        std::fs::write(&conf, nginx_conf(&dir.0, port, sendfile)).unwrap();
        let mut cmd = Command::new(nginx);
        cmd.arg("-p")
            .arg(&dir.0)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.path("error.log"))
            .args(["-g", "daemon off;"]);
        let mut server = Server::start(cmd, "nginx", dir, shim, &env);
        server.logs.push(dir.path("error.log"));
        server
    })
}

fn run_nginx(nginx: &Path, shim: bool) -> NginxRun {
    let dir = TempDir::new(if shim { "nginx-shim" } else { "nginx-bare" });
    let (mut server, port) = start_nginx(nginx, &dir, shim, false, &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let worker = loop {
        let c = children(server.pid());
        if c.len() == 1 {
            break c[0];
        }
        server.assert_alive();
        assert!(
            Instant::now() < deadline,
            "no single nginx worker: {c:?}\n{}",
            server.describe()
        );
        std::thread::yield_now();
    };

    // Concurrent clients, some resetting.
    let threads: Vec<_> = (0..8)
        .map(|t| std::thread::spawn(move || nginx_client(port, t, 25)))
        .collect();
    let mut load = Load::default();
    for th in threads {
        let l = th.join().unwrap();
        load.complete += l.complete;
        load.correct += l.correct;
        load.resets += l.resets;
        load.failures.extend(l.failures);
    }
    // The recipe for nginx's own failing shutdown.
    for _ in 0..DISCARD_RESETS {
        if let Err(e) = discard_then_reset(port, worker) {
            panic!("{e}\n{}", server.describe());
        }
    }
    // A last request: the worker went on after all of that.
    let mut load_last = nginx_client(port, 0, 1);
    assert_eq!(
        (load_last.complete, load_last.correct),
        (1, 1),
        "{:?}",
        load_last.failures
    );
    load.failures.append(&mut load_last.failures);
    server.assert_alive();

    // Graceful stop.
    // SAFETY: signals the nginx master this test started.
    unsafe { libc::kill(server.pid(), libc::SIGQUIT) };
    let status = server.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "nginx exit: {status:?}\n{}", server.describe());
    let error_log = std::fs::read_to_string(dir.path("error.log")).unwrap();
    NginxRun {
        load,
        error_log,
        errshim_logs: errshim_logs(&dir),
        worker,
    }
}

const NGINX_SHUTDOWN_FAILED: &str = "shutdown() failed (107: Transport endpoint is not connected)";

/// nginx (master and one worker, `lingering_close always`, its own prefix, port, error log at
/// `info`), run unmodified without and with errshim (default rules, `ERRSHIM_LOG=<dir>/
/// errshim-%p.log`). Eight concurrent clients make 200 connections: single requests,
/// keep-alive pairs, resets in the middle of a request, resets in the middle of a 2 MB
/// response. Then, ten times, the deterministic recipe of `discard_then_reset`, which makes
/// nginx's own shutdown(SHUT_WR) fail with ENOTCONN. Both runs: every complete request answered
/// with status 200 and exactly the file's bytes, the worker alive to the end, a clean exit, no
/// alert, crit or emerg in nginx's log. Without errshim nginx logs `shutdown() failed (107: ...)`
/// at least ten times; with errshim it logs it never, and errshim's log for the worker holds at
/// least ten `shutdown(fd=N, SHUT_WR) = -1 ENOTCONN -> ignored` events with nginx's name, its
/// listening address and the cause peer_reset.
#[test]
fn nginx_static_files_resets_and_shutdown_enotconn() {
    let Some(nginx) = tool("/usr/sbin/nginx") else {
        return;
    };
    let start = Instant::now();
    let runs = [run_nginx(&nginx, false), run_nginx(&nginx, true)];
    for (r, tag) in runs.iter().zip(["without errshim", "with errshim"]) {
        assert!(r.load.failures.is_empty(), "{tag}: {:#?}", r.load.failures);
        assert_eq!(r.load.correct, r.load.complete, "{tag}");
        assert!(r.load.complete >= 150 && r.load.resets >= 40, "{tag}: {:?}", r.load);
        for bad in ["[alert]", "[crit]", "[emerg]", "exited on signal"] {
            assert!(!r.error_log.contains(bad), "{tag}: {bad}\n{}", r.error_log);
        }
    }
    let [bare, shim] = runs;
    let failed = |log: &str| log.lines().filter(|l| l.contains(NGINX_SHUTDOWN_FAILED)).count();
    assert!(
        failed(&bare.error_log) >= DISCARD_RESETS,
        "the recipe makes nginx's shutdown fail without errshim:\n{}",
        bare.error_log
    );
    assert!(bare.errshim_logs.is_empty());
    assert_eq!(failed(&shim.error_log), 0, "{}", shim.error_log);

    let worker_log = format!("errshim-{}.log", shim.worker);
    let mut ignored = 0;
    for (name, text) in &shim.errshim_logs {
        for l in text.lines() {
            assert!(l.starts_with("errshim 2") && l.contains(" comm=nginx "), "{name}: {l}");
        }
        if *name == worker_log {
            ignored = events(text)
                .iter()
                .filter(|e| {
                    e.contains(", SHUT_WR) = -1 ENOTCONN -> ignored, returned 0 | tcp4 local=127.0.0.1:")
                        && e.contains(" | cause=peer_reset: ")
                })
                .count();
        }
    }
    assert!(
        ignored >= DISCARD_RESETS,
        "{ignored} ignored shutdowns in {worker_log}: {:#?}",
        shim.errshim_logs
    );
    eprintln!(
        "nginx: {:?}; {} complete requests correct and {} resets per run; nginx's own '{NGINX_SHUTDOWN_FAILED}': \
         {} lines without errshim, {} with; errshim suppressed and logged {ignored}",
        start.elapsed(),
        shim.load.complete,
        shim.load.resets,
        failed(&bare.error_log),
        failed(&shim.error_log),
    );
}

// ---------------------------------------------------------------------------------------------
// redis
// ---------------------------------------------------------------------------------------------

#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

fn read_reply(r: &mut impl BufRead) -> std::io::Result<Reply> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\r\n") {
        return Err(std::io::Error::other(format!(
            "bad reply line {:?}",
            String::from_utf8_lossy(&line)
        )));
    }
    let text = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    let n = || {
        text.parse::<i64>()
            .map_err(|_| std::io::Error::other(format!("bad number {text:?}")))
    };
    Ok(match line[0] {
        b'+' => Reply::Simple(text.clone()),
        b'-' => Reply::Error(text.clone()),
        b':' => Reply::Int(n()?),
        b'$' => match n()? {
            -1 => Reply::Bulk(None),
            len => {
                let mut body = vec![0; len as usize + 2];
                r.read_exact(&mut body)?;
                body.truncate(len as usize);
                Reply::Bulk(Some(body))
            }
        },
        b'*' => Reply::Array((0..n()?.max(0)).map(|_| read_reply(r)).collect::<Result<_, _>>()?),
        _ => return Err(std::io::Error::other(format!("bad reply {text:?}"))),
    })
}

fn value_for(t: usize, i: usize) -> Vec<u8> {
    let len = if i % 50 == 49 {
        300_000
    } else {
        1 + (t * 7919 + i * 104_729) % 70_000
    };
    bytes((t * 100_000 + i) as u64, len)
}

const REDIS_WRITERS: usize = 6;
const REDIS_KEYS: usize = 200;

/// SETs and GETs of binary values over one connection, ten at a time pipelined; every reply
/// checked. Returns the problems.
fn redis_writer(port: u16, t: usize) -> (usize, Vec<String>) {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut bad = Vec::new();
    let mut checked = 0;
    for batch in (0..REDIS_KEYS).collect::<Vec<_>>().chunks(10) {
        let mut out = Vec::new();
        for &i in batch {
            out.extend(resp(&[b"SET", format!("k:{t}:{i}").as_bytes(), &value_for(t, i)]));
        }
        w.write_all(&out).unwrap();
        for &i in batch {
            match read_reply(&mut r) {
                Ok(Reply::Simple(s)) if s == "OK" => checked += 1,
                other => bad.push(format!("SET k:{t}:{i}: {other:?}")),
            }
        }
        let mut out = Vec::new();
        for &i in batch {
            out.extend(resp(&[b"GET", format!("k:{t}:{i}").as_bytes()]));
        }
        w.write_all(&out).unwrap();
        for &i in batch {
            match read_reply(&mut r) {
                Ok(Reply::Bulk(Some(v))) if v == value_for(t, i) => checked += 1,
                Ok(Reply::Bulk(v)) => bad.push(format!("GET k:{t}:{i}: {:?} bytes", v.map(|v| v.len()))),
                other => bad.push(format!("GET k:{t}:{i}: {other:?}")),
            }
        }
    }
    (checked, bad)
}

const BIG: usize = 2_000_000;

/// Clients that reset: in the middle of a command (a SET whose value is half sent), or in the
/// middle of a reply (a GET of a 2 MB value, 100 bytes read). Returns how many.
fn redis_resetter(port: u16, t: usize, n: usize) -> usize {
    for i in 0..n {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        if (t + i).is_multiple_of(2) {
            let cmd = resp(&[b"SET", format!("r:{t}:{i}").as_bytes(), &bytes(7, 100_000)]);
            s.write_all(&cmd[..cmd.len() / 2]).unwrap();
        } else {
            s.write_all(&resp(&[b"GET", b"big"])).unwrap();
            let mut buf = [0u8; 100];
            let _ = s.read_exact(&mut buf);
        }
        abort_connection(s);
    }
    n
}

fn redis_cli(cli: &Path, port: u16, args: &[&str]) -> String {
    let out = Command::new(cli)
        .args(["-p", &port.to_string()])
        .args(args)
        .env_remove("LD_PRELOAD")
        .output()
        .expect("redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// redis-server (`--port N --bind 127.0.0.1 --save '' --appendonly no --dir <dir>`) under
/// errshim with `ERRSHIM_FAULTS='read,write:short:fd=tcp'` and the exit summary: six clients
/// SET and GET 200 keys each (binary values up to 300 KB, ten commands pipelined at a time) while
/// two others reset 80 connections in the middle of a command or of a 2 MB reply. Every reply is
/// correct (each SET +OK, each GET exactly the value), the server never crashes (alive
/// throughout, PING answered, DBSIZE exactly the keys set, a clean exit on SHUTDOWN NOSAVE, no
/// crash report in its log), and errshim's log holds short reads and short writes of
/// redis-server, as many as its exit summary counts.
#[test]
fn redis_short_transfers_and_resets() {
    let Some(redis) = tool("/usr/bin/redis-server") else {
        return;
    };
    let Some(cli) = tool("/usr/bin/redis-cli") else {
        return;
    };
    let dir = TempDir::new("redis");
    let errshim_log = dir.path("errshim-%p.log").display().to_string();
    let env = [
        ("ERRSHIM_FAULTS", "read,write:short:fd=tcp"),
        ("ERRSHIM_SEED", "11"),
        ("ERRSHIM_SUMMARY", "1"),
        ("ERRSHIM_LOG", errshim_log.as_str()),
    ];
    // A free port, and another one if some other process takes it before redis binds it.
    let (mut server, port) = retry_port(|port| {
        let mut cmd = Command::new(&redis);
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir.0)
            .arg("--logfile")
            .arg(dir.path("redis.log"));
        let mut server = Server::start(cmd, "redis-server", &dir, true, &env);
        server.logs.push(dir.path("redis.log"));
        server
    });
    let start = Instant::now();
    {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        w.write_all(&resp(&[b"PING"])).unwrap();
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Simple("PONG".into()));
        w.write_all(&resp(&[b"SET", b"big", &bytes(99, BIG)])).unwrap();
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Simple("OK".into()));
    }

    let writers: Vec<_> = (0..REDIS_WRITERS)
        .map(|t| std::thread::spawn(move || redis_writer(port, t)))
        .collect();
    let resetters: Vec<_> = (0..2)
        .map(|t| std::thread::spawn(move || redis_resetter(port, t, 40)))
        .collect();
    let mut checked = 0;
    let mut bad = Vec::new();
    for w in writers {
        let (c, b) = w.join().unwrap();
        checked += c;
        bad.extend(b);
    }
    let resets: usize = resetters.into_iter().map(|t| t.join().unwrap()).sum();
    server.assert_alive();
    assert!(bad.is_empty(), "{bad:#?}\n{}", server.describe());
    assert_eq!(checked, 2 * REDIS_WRITERS * REDIS_KEYS);

    // The big value is still intact, and nothing else was stored.
    {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        w.write_all(&resp(&[b"GET", b"big"])).unwrap();
        assert!(
            read_reply(&mut r).unwrap() == Reply::Bulk(Some(bytes(99, BIG))),
            "big value changed"
        );
    }
    assert_eq!(redis_cli(&cli, port, &["PING"]), "PONG");
    assert_eq!(
        redis_cli(&cli, port, &["DBSIZE"]),
        (REDIS_WRITERS * REDIS_KEYS + 1).to_string(),
        "only the keys set completely"
    );
    server.assert_alive();
    let _ = Command::new(&cli)
        .args(["-p", &port.to_string(), "SHUTDOWN", "NOSAVE"])
        .env_remove("LD_PRELOAD")
        .output();
    let status = server.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "redis-server exit: {status:?}\n{}", server.describe());
    let log = std::fs::read_to_string(dir.path("redis.log")).unwrap();
    for crash in ["crashed by signal", "Guru Meditation", "ASSERTION FAILED"] {
        assert!(!log.contains(crash), "{crash}\n{log}");
    }
    assert!(log.contains("ready to exit, bye bye"), "{log}");

    let logs = errshim_logs(&dir);
    assert_eq!(
        logs.len(),
        1,
        "one redis-server process: {:?}",
        logs.iter().map(|l| &l.0).collect::<Vec<_>>()
    );
    let text = &logs[0].1;
    let ev = events(text);
    let injected: Vec<&&str> = ev
        .iter()
        .filter(|e| e.contains(" (INJECTED) -> inject short, returned "))
        .collect();
    for e in &injected {
        assert!(
            e.contains(" comm=redis-server ") && e.contains(" | tcp4 local=127.0.0.1:"),
            "{e}"
        );
    }
    let reads = injected
        .iter()
        .filter(|e| e.contains(" comm=redis-server read(fd="))
        .count();
    let writes = injected
        .iter()
        .filter(|e| e.contains(" comm=redis-server write(fd="))
        .count();
    assert!(
        reads > 0 && writes > 0 && reads + writes == injected.len(),
        "{reads} {writes}"
    );
    let summary_injected: i64 = text
        .lines()
        .filter(|l| l.starts_with("errshim summary count=") && l.contains(" action=inject "))
        .map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("count="))
                .unwrap()
                .parse::<i64>()
                .unwrap()
        })
        .sum();
    assert_eq!(
        summary_injected,
        injected.len() as i64,
        "the exit summary counts every injection"
    );
    eprintln!(
        "redis: {:?}; {checked} replies checked, {resets} connections reset mid-command or mid-reply; {reads} short \
         reads and {writes} short writes injected into redis-server",
        start.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Kernel-faithful faults: real servers serve every byte under every short and delay rule
// ---------------------------------------------------------------------------------------------

/// The short and delay configurations each server is run under (every hooked call, the read
/// family alone, the write family alone, one-byte cuts, delays, both mixed).
const FAITHFUL: [&str; 6] = [
    "read,readv,recv,recvfrom,recvmsg:short",
    "write,writev,send,sendto,sendmsg:short",
    "*:short",
    "*:short=1:p=0.3",
    "*:delay=1ms:p=0.05",
    "*:short:p=0.5;*:delay=300us:p=0.1",
];

/// How many injections errshim's logs in `dir` hold.
fn injections_in(dir: &TempDir) -> usize {
    errshim_logs(dir)
        .iter()
        .map(|(_, t)| {
            events(t)
                .iter()
                .filter(|e| e.contains(" (INJECTED) -> inject "))
                .count()
        })
        .sum()
}

/// Four client threads of `nginx_client` (single requests, keep-alive pairs, resets mid-request
/// and mid-response) against `port`: what they saw.
fn http_load(port: u16) -> Load {
    let threads: Vec<_> = (0..4)
        .map(|t| std::thread::spawn(move || nginx_client(port, t, 10)))
        .collect();
    let mut load = Load::default();
    for th in threads {
        let l = th.join().unwrap();
        load.complete += l.complete;
        load.correct += l.correct;
        load.resets += l.resets;
        load.failures.extend(l.failures);
    }
    load
}

/// nginx (edge-triggered epoll, master and worker talking over a unix socketpair), with
/// `sendfile` off and on, under each FAITHFUL rule set: every complete response is the file,
/// byte for byte (none stalls: a 30 s read timeout would fail it), the rule acted (injections
/// logged), nginx stops on SIGQUIT (its master/worker channel intact) and logs no alert,
/// crit, emerg or short channel message.
#[test]
fn nginx_serves_every_byte_under_faithful_short_and_delay() {
    let Some(nginx) = tool("/usr/sbin/nginx") else {
        return;
    };
    for sendfile in [false, true] {
        // With sendfile on, its own cuts too (a write, cut where a non-blocking one may be).
        let own: &[&str] = if sendfile {
            &["sendfile:short", "sendfile:short=1:p=0.3;*:short"]
        } else {
            &[]
        };
        for &spec in FAITHFUL.iter().chain(own) {
            let start = Instant::now();
            let dir = TempDir::new("nginx-faithful");
            let env = [("ERRSHIM_FAULTS", spec), ("ERRSHIM_SEED", "7")];
            let (mut server, port) = start_nginx(&nginx, &dir, true, sendfile, &env);
            let load = http_load(port);
            server.assert_alive();
            let what = format!("sendfile {sendfile}, ERRSHIM_FAULTS={spec}");
            assert!(
                load.failures.is_empty() && load.correct == load.complete && load.complete >= 24,
                "{what}: {load:?}\n{}",
                server.describe()
            );
            // SAFETY: signals the nginx master this test started.
            unsafe { libc::kill(server.pid(), libc::SIGQUIT) };
            let status = server.wait_exit(Duration::from_secs(30));
            assert!(status.success(), "{what}: nginx exit {status:?}\n{}", server.describe());
            let log = std::fs::read_to_string(dir.path("error.log")).unwrap();
            for bad in ["[alert]", "[crit]", "[emerg]", "returned not enough data"] {
                assert!(!log.contains(bad), "{what}: {bad}\n{log}");
            }
            let n = injections_in(&dir);
            assert!(n > 0, "{what}: no injection");
            eprintln!(
                "nginx {what}: {} responses byte-exact, {} resets, {n} injections, {:?}",
                load.correct,
                load.resets,
                start.elapsed()
            );
        }
    }
}

/// nginx (edge-triggered epoll) with one connection stalled at its response (`stall=800ms`): the client gets
/// nothing, then its connection ends at the stall's end, when errshim's timer aborts it and so
/// wakes nginx, which fails the call it makes then with the stall's errno (its log says which)
/// and closes; the next connection is served as usual.
#[test]
fn nginx_is_woken_when_a_stalled_connection_ends() {
    let Some(nginx) = tool("/usr/sbin/nginx") else {
        return;
    };
    for (then, said) in [
        ("reset", "(104: Connection reset by peer)"),
        ("timeout", "(110: Connection timed out)"),
    ] {
        let dir = TempDir::new("nginx-stall");
        // On the response (the test's port probe before it makes no write).
        let spec = format!("writev:stall=800ms:then={then}:max=1");
        let env = [("ERRSHIM_FAULTS", spec.as_str()), ("ERRSHIM_SEED", "7")];
        let (mut server, port) = start_nginx(&nginx, &dir, true, false, &env);
        let path = format!("/{}", FILES[0].0);
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let start = Instant::now();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut got = Vec::new();
        let end = s.read_to_end(&mut got);
        let at = start.elapsed();
        let what = format!(
            "then={then}: {end:?} after {at:?}, {} bytes\n{}",
            got.len(),
            server.describe()
        );
        assert!(got.is_empty(), "{what}");
        assert_eq!(
            end.err().map(|e| e.kind()),
            Some(std::io::ErrorKind::ConnectionReset),
            "{what}"
        );
        assert!(
            at >= Duration::from_millis(780) && at < Duration::from_secs(5),
            "{what}"
        );
        let load = nginx_client(port, 0, 3);
        assert!(
            load.failures.is_empty() && load.correct == load.complete,
            "{what}: {load:?}"
        );
        server.assert_alive();
        let log = std::fs::read_to_string(dir.path("error.log")).unwrap();
        assert!(log.contains(said), "{what}\n{log}");
        // SAFETY: signals the nginx master this test started.
        unsafe { libc::kill(server.pid(), libc::SIGQUIT) };
        assert!(server.wait_exit(Duration::from_secs(30)).success(), "{what}");
    }
}

/// haproxy (HTTP mode, logging each request to a UDP syslog socket of the test's) in front of
/// an nginx without errshim, under each FAITHFUL rule set: every complete response is the
/// file, byte for byte (2 MB ones included); every log datagram arrives whole (Linux never cuts
/// a datagram, so neither does `short`); haproxy stops on SIGUSR1.
#[test]
fn haproxy_relays_every_byte_under_faithful_short_and_delay() {
    let Some(haproxy) = tool("/usr/sbin/haproxy") else {
        return;
    };
    let Some(nginx) = tool("/usr/sbin/nginx") else {
        return;
    };
    let backend_dir = TempDir::new("haproxy-backend");
    let (_backend, backend_port) = start_nginx(&nginx, &backend_dir, false, true, &[]);
    for spec in FAITHFUL {
        let start = Instant::now();
        let dir = TempDir::new("haproxy-faithful");
        let syslog = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let log_port = syslog.local_addr().unwrap().port();
        let errshim_log = dir.path("errshim-%p.log").display().to_string();
        let env = [
            ("ERRSHIM_FAULTS", spec),
            ("ERRSHIM_SEED", "7"),
            ("ERRSHIM_LOG", errshim_log.as_str()),
        ];
        let conf = dir.path("haproxy.cfg");
        let (mut server, port) = retry_port(|port| {
            let text = format!(
                "global\n    log 127.0.0.1:{log_port} local0\n\
                 defaults\n    mode http\n    log global\n    option httplog\n\
                 \x20   timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
                 frontend f\n    bind 127.0.0.1:{port}\n    default_backend b\n\
                 backend b\n    server s1 127.0.0.1:{backend_port}\n"
            );
            std::fs::write(&conf, text).unwrap();
            let mut cmd = Command::new(&haproxy);
            cmd.arg("-db").arg("-f").arg(&conf);
            Server::start(cmd, "haproxy", &dir, true, &env)
        });
        let load = http_load(port);
        server.assert_alive();
        let what = format!("ERRSHIM_FAULTS={spec}");
        assert!(
            load.failures.is_empty() && load.correct == load.complete && load.complete >= 24,
            "{what}: {load:?}\n{}",
            server.describe()
        );
        // SAFETY: signals the haproxy this test started (soft stop: it finishes, logs, exits).
        unsafe { libc::kill(server.pid(), libc::SIGUSR1) };
        let status = server.wait_exit(Duration::from_secs(30));
        assert!(
            status.success(),
            "{what}: haproxy exit {status:?}\n{}",
            server.describe()
        );
        // Every datagram haproxy sent is in the socket's queue by now.
        syslog.set_nonblocking(true).unwrap();
        let mut lines = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = syslog.recv(&mut buf) {
            lines.push(String::from_utf8_lossy(&buf[..n]).trim_end().to_string());
        }
        // Request lines end with the quoted request, haproxy's own with a full stop.
        for l in &lines {
            assert!(
                l.starts_with('<') && l.contains(" haproxy[") && (l.ends_with('"') || l.ends_with('.')),
                "{what}: a cut log line {l:?}"
            );
        }
        let requests = lines.iter().filter(|l| l.ends_with('"')).count();
        assert!(requests >= load.complete, "{what}: {requests} request log lines");
        let n = injections_in(&dir);
        assert!(n > 0, "{what}: no injection");
        eprintln!(
            "haproxy {what}: {} responses byte-exact, {} whole log datagrams, {n} injections, {:?}",
            load.correct,
            lines.len(),
            start.elapsed()
        );
    }
}

/// redis-server under each FAITHFUL rule set: two clients SET and GET 200 binary values each
/// (up to 300 KB, pipelined): every reply exact, a clean exit on SHUTDOWN NOSAVE.
#[test]
fn redis_answers_every_byte_under_faithful_short_and_delay() {
    let Some(redis) = tool("/usr/bin/redis-server") else {
        return;
    };
    let Some(cli) = tool("/usr/bin/redis-cli") else {
        return;
    };
    for spec in FAITHFUL {
        let start = Instant::now();
        let dir = TempDir::new("redis-faithful");
        let errshim_log = dir.path("errshim-%p.log").display().to_string();
        let env = [
            ("ERRSHIM_FAULTS", spec),
            ("ERRSHIM_SEED", "7"),
            ("ERRSHIM_LOG", errshim_log.as_str()),
        ];
        let (mut server, port) = retry_port(|port| {
            let mut cmd = Command::new(&redis);
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&dir.0);
            Server::start(cmd, "redis-server", &dir, true, &env)
        });
        let writers: Vec<_> = (0..2)
            .map(|t| std::thread::spawn(move || redis_writer(port, t)))
            .collect();
        let mut checked = 0;
        let mut bad = Vec::new();
        for w in writers {
            let (c, b) = w.join().unwrap();
            checked += c;
            bad.extend(b);
        }
        server.assert_alive();
        let what = format!("ERRSHIM_FAULTS={spec}");
        assert!(bad.is_empty(), "{what}: {bad:#?}\n{}", server.describe());
        assert_eq!(checked, 2 * 2 * REDIS_KEYS, "{what}");
        let _ = Command::new(&cli)
            .args(["-p", &port.to_string(), "SHUTDOWN", "NOSAVE"])
            .env_remove("LD_PRELOAD")
            .output();
        let status = server.wait_exit(Duration::from_secs(30));
        assert!(
            status.success(),
            "{what}: redis-server exit {status:?}\n{}",
            server.describe()
        );
        let n = injections_in(&dir);
        assert!(n > 0, "{what}: no injection");
        eprintln!(
            "redis {what}: {checked} replies exact, {n} injections, {:?}",
            start.elapsed()
        );
    }
}
