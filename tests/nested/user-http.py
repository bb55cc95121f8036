#!/usr/bin/env python3
"""HTTP server for the user-mode NAT scenarios (tests/nested/user-scenarios.sh).

Serves, on ADDR:PORT (HTTP/1.0, one request per connection, a thread each):
  GET  /big.bin  the file DIR/big.bin
  POST /up       reads the body (Content-Length bytes) and writes its sha256
                 and length to DIR/up.sha256 ("HEX LEN")
Writes DIR/ready once it listens.

Only socket, threading and hashlib are imported: in the nested L1 VM every
module comes over 9p under TCG, and http.server's imports take too long.

Usage: user-http.py ADDR PORT DIR
"""
import hashlib
import socket
import sys
import threading


def main():
    addr, port, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]

    def reply(conn, status, data):
        head = "HTTP/1.0 %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
        conn.sendall((head % (status, len(data))).encode() + data)

    def serve(conn):
        try:
            req = b""
            while b"\r\n\r\n" not in req and len(req) < 65536:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                req += chunk
            head, _, rest = req.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            parts = lines[0].split()
            method = parts[0] if parts else b""
            path = parts[1] if len(parts) >= 2 else b""
            if method == b"GET" and path == b"/big.bin":
                with open(root + "/big.bin", "rb") as f:
                    reply(conn, "200 OK", f.read())
            elif method == b"POST" and path == b"/up":
                length = 0
                for line in lines[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        length = int(v.strip())
                h = hashlib.sha256(rest[:length])
                got = len(rest[:length])
                while got < length:
                    chunk = conn.recv(min(65536, length - got))
                    if not chunk:
                        break
                    h.update(chunk)
                    got += len(chunk)
                with open(root + "/up.sha256", "w") as f:
                    f.write("%s %d\n" % (h.hexdigest(), got))
                reply(conn, "200 OK", b"ok\n")
            else:
                reply(conn, "404 Not Found", b"not found\n")
        except (OSError, ValueError):
            pass
        finally:
            conn.close()

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(64)
    with open(root + "/ready", "w") as f:
        f.write("ready\n")
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
