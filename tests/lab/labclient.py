#!/usr/bin/env python3
"""The lab's client (run under errshim): connects to ADDR PORT, says "hello", reads the
server's "welcome", says "ready" and waits for "go" on stdin (the lab changes the path
meanwhile); then does what --after says (send-recv: sends 1000 bytes and reads; recv: only
reads, an idle connection), then shuts the socket down and closes it, as servers and clients
do at the end of a connection. Prints one JSON line: each call's result ("ok", or the errno's
name). A failed connect is followed by the same shutdown and close.

--user-timeout MS   TCP_USER_TIMEOUT
--keepalive I/N/C   SO_KEEPALIVE with TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT
--hold              connect, say "connected", and hold the connection until stdin ends
"""

import errno
import json
import socket
import sys


def opt(name, default=None):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def name_of(e):
    return errno.errorcode.get(e.errno, str(e.errno))


def main():
    addr, port = sys.argv[1], int(sys.argv[2])
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    ut = opt("--user-timeout")
    if ut:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(ut))
    ka = opt("--keepalive")
    if ka:
        idle, intvl, cnt = (int(x) for x in ka.split("/"))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, intvl)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, cnt)
    out = {}
    try:
        s.connect((addr, port))
        out["connect"] = "ok"
    except OSError as e:
        out["connect"] = name_of(e)
    if "--hold" in sys.argv:
        print("connected" if out["connect"] == "ok" else json.dumps(out), flush=True)
        sys.stdin.read()
        return
    if out["connect"] == "ok":
        s.sendall(b"hello\n")
        got = b""
        while not got.endswith(b"\n"):
            chunk = s.recv(100)
            if not chunk:
                break
            got += chunk
        out["welcome"] = got.decode(errors="replace").strip()
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            sys.exit("no go")
        after = opt("--after", "send-recv")
        if after == "send-recv":
            try:
                s.send(b"x" * 1000)
                out["send"] = "ok"
            except OSError as e:
                out["send"] = name_of(e)
        try:
            data = s.recv(100)
            out["recv"] = "ok" if data else "eof"
        except OSError as e:
            out["recv"] = name_of(e)
    try:
        s.shutdown(socket.SHUT_RDWR)
        out["shutdown"] = "ok"
    except OSError as e:
        out["shutdown"] = name_of(e)
    s.close()
    print(json.dumps(out, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
