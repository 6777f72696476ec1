#!/usr/bin/env python3
"""tls_idle.py -- the memory an idle TLS connection costs a server.

  bench/experiments/tls_idle.py --port P --pid PID --ca CA.pem [-n 5000] [--plain]

Opens n TLS connections (TLS 1.3) to 127.0.0.1:P, sends one keep-alive
GET /hello on each and reads the answer, then holds them all idle; prints
the server process PID's RSS before and after (VmRSS of /proc/PID/status)
and the growth per connection. The client keeps its sockets in one
process and uses non-blocking handshakes a few hundred at a time.
"""
import argparse, select, socket, ssl, sys, time

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument("--plain", action="store_true", help="TCP, no TLS")
    a = ap.parse_args()
    ctx = ssl.create_default_context(cafile=a.ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    req = b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n"
    before = rss_kib(a.pid)
    conns = []
    deadline = time.time() + 300
    batch = 200
    while len(conns) < a.n and time.time() < deadline:
        group = []
        for _ in range(min(batch, a.n - len(conns))):
            s = socket.create_connection(("127.0.0.1", a.port), timeout=30)
            t = s if a.plain else ctx.wrap_socket(s, server_hostname="localhost")
            group.append(t)
        for t in group:
            t.sendall(req)
        for t in group:
            data = b""
            while b"hello\n" not in data:
                chunk = t.recv(4096)
                if not chunk:
                    sys.exit("server closed a connection")
                data += chunk
        conns.extend(group)
    time.sleep(2)
    after = rss_kib(a.pid)
    per = (after - before) * 1024 / max(len(conns), 1)
    print(f"connections {len(conns)} rss_before_kib {before} rss_after_kib {after} "
          f"per_conn_bytes {per:.0f}")
    for t in conns:
        t.close()

main()
