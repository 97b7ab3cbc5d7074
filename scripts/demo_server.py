#!/usr/bin/env python3
"""A small keep-alive HTTP server on 127.0.0.1, for `scripts/errshim demo`.

Two clients each send a request and read the reply. The first then closes politely; the second
aborts (SO_LINGER {1, 0} + close, which sends RST), as a browser or load balancer does when a
user goes away. After each reply the server waits for the client's next move, then ends the
connection the way nginx's lingering close does: shutdown(SHUT_WR), then close(). On the
aborted connection Linux has already moved the socket to CLOSE, so shutdown() fails with
ENOTCONN: harmless noise that errshim's default rule suppresses and explains.
"""
import select
import socket
import struct
import sys
import threading


def client(port, abort, done):
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(b"GET / HTTP/1.0\r\nHost: demo\r\n\r\n")
    reply = b""
    while not reply.endswith(b"hello\n"):
        chunk = c.recv(4096)
        if not chunk:
            break
        reply += chunk
    if abort:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    done.set()


def main():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    print(f"server: listening on 127.0.0.1:{port}", flush=True)
    failures = 0
    for n, abort in enumerate([False, True], start=1):
        done = threading.Event()
        t = threading.Thread(target=client, args=(port, abort, done))
        t.start()
        conn, peer = srv.accept()
        conn.recv(4096)
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nhello\n")
        done.wait()
        # Wait for the client's next move (FIN or RST) without consuming it.
        select.select([conn], [], [], 10)
        how = "reset the connection" if abort else "closed politely"
        try:
            conn.shutdown(socket.SHUT_WR)
            print(f"server: request {n} from {peer[0]}:{peer[1]}: client {how}; shutdown(SHUT_WR) ok", flush=True)
        except OSError as e:
            failures += 1
            print(f"server: request {n} from {peer[0]}:{peer[1]}: client {how}; shutdown(SHUT_WR) failed: {e}", flush=True)
        conn.close()
        t.join()
    print(f"server: done, {failures} failed shutdown(s)", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
