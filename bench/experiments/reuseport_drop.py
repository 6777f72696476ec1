#!/usr/bin/env python3
"""reuseport_drop.py -- why luasrv's workers share one listening socket.

A reload replaces the workers. With one SO_REUSEPORT socket per worker, the
old worker's socket closes, and the connections the kernel had already
queued on it are reset. With one shared socket (luasrv's choice) the queue
outlives every worker. This measures both on 127.0.0.1: N clients connect
while two listeners exist, then one listener goes away as an old worker's
would, and we count the clients that are never served.

    python3 bench/experiments/reuseport_drop.py [N]
"""
import socket, sys

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200


def listener(port=0, reuseport=False):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.listen(N * 2)
    return s


def served(listeners, clients):
    """Accepts what is queued on the listeners left, answers, counts."""
    ok = 0
    for l in listeners:
        l.setblocking(False)
        while True:
            try:
                c, _ = l.accept()
            except BlockingIOError:
                break
            c.sendall(b"x")
            c.close()
    for c in clients:
        try:
            c.settimeout(1)
            if c.recv(1) == b"x":
                ok += 1
        except OSError:
            pass
        c.close()
    return ok


def run(reuseport):
    a = listener(0, reuseport)
    port = a.getsockname()[1]
    # the second worker: its own socket (reuseport) or the same one (shared)
    b = listener(port, True) if reuseport else a
    clients = []
    for _ in range(N):
        c = socket.create_connection(("127.0.0.1", port))
        clients.append(c)
    # the reload: the old worker goes away
    if reuseport:
        a.close()
        left = [b]
    else:
        left = [a]  # the shared socket stays open in the master
    ok = served(left, clients)
    for l in left:
        l.close()
    return N - ok


lost_shared = run(False)
lost_reuseport = run(True)
print(f"{N} connections queued during a reload:")
print(f"  one shared socket:           {lost_shared} lost")
print(f"  SO_REUSEPORT, one per worker: {lost_reuseport} lost")
