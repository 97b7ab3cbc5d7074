//! A call that succeeds costs no extra system call: errshim's syscalls are a constant at
//! startup, whatever the number of successful calls the program makes.

mod common;
use common::*;

/// Number of system calls strace saw the program make.
fn syscalls(preload: bool, n: u32) -> usize {
    let dir = TempDir::new("strace");
    let out = dir.path("trace");
    let mut c = Cmd::new("strace").args(["-f", "-qq", "-o"]).arg_path(&out);
    if preload {
        c = c.args(["-E"]).args([format!("LD_PRELOAD={}", lib().display())]);
    }
    let r = c.arg_path(&program("pingpong")).args([n.to_string()]).run();
    r.assert_ok();
    assert_eq!(r.stdout, "ok\n");
    std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("resumed>"))
        .count()
}

#[test]
fn successful_calls_make_no_extra_syscalls() {
    if !require_tool("strace") {
        return;
    }
    let (bare_small, bare_big) = (syscalls(false, 50), syscalls(false, 550));
    let (shim_small, shim_big) = (syscalls(true, 50), syscalls(true, 550));
    // 500 extra rounds: 10 I/O calls on each of two connections, 5 churn calls.
    assert!(
        bare_big - bare_small >= 500 * 25,
        "the fixture makes the calls: {bare_small} -> {bare_big}"
    );
    assert_eq!(
        shim_big - shim_small,
        bare_big - bare_small,
        "errshim must add no syscall per successful call (bare {bare_small}->{bare_big}, errshim {shim_small}->{shim_big})"
    );
    assert!(
        shim_small >= bare_small,
        "errshim's constant startup cost: {}",
        shim_small - bare_small
    );
}
