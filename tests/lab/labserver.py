#!/usr/bin/env python3
"""The lab's server: listens on ADDR PORT, says "listening"; for each connection, reads a
line, answers "welcome\n", then reads until the end and closes. `--backlog N --no-accept`:
listens with that backlog and never accepts (its accept queue fills)."""

import signal
import socket
import sys
import threading


def serve(conn):
    try:
        f = conn.makefile("rb")
        if f.readline():
            conn.sendall(b"welcome\n")
        while conn.recv(65536):
            pass
    except OSError:
        pass
    finally:
        conn.close()


def main():
    addr, port = sys.argv[1], int(sys.argv[2])
    backlog = int(sys.argv[sys.argv.index("--backlog") + 1]) if "--backlog" in sys.argv else 16
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(backlog)
    print("listening", flush=True)
    if "--no-accept" in sys.argv:
        signal.pause()  # until the lab ends it
        return
    while True:
        conn, _ = s.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
