#!/usr/bin/env python3
"""bench/peers/py_echo.py -- Python socketserver echo peers for bench/run.

What a user would otherwise write with the standard library:

  py_echo.py KIND TRANSPORT ADDRESS [line|bulk]
    KIND       plain (TCPServer & co), threading (ThreadingMixIn),
               forking (ForkingMixIn)
    TRANSPORT  tcp HOST:PORT, udp HOST:PORT, unix PATH
    line       echo line by line (StreamRequestHandler), the default
    bulk       echo whatever recv() returns (BaseRequestHandler)

Prints "py_echo: listening on tcp://HOST:PORT" (udp://..., unix:PATH) to
stderr once listening, and exits 0 on SIGTERM/SIGINT.  Settings made to
match luasrv's defaults, so the comparison is about the engine: listen
backlog 511 (socketserver's is 5), at most 100 forked children (40),
daemon threads.
"""

import os
import signal
import socketserver
import sys


class LineEcho(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line)


class BulkEcho(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:
                break
            self.request.sendall(data)


class DatagramEcho(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        sock.sendto(data, self.client_address)


BASES = {
    "tcp": socketserver.TCPServer,
    "udp": socketserver.UDPServer,
    "unix": socketserver.UnixStreamServer,
}
MIXINS = {
    "plain": (),
    "threading": (socketserver.ThreadingMixIn,),
    "forking": (socketserver.ForkingMixIn,),
}


def server_class(kind, transport):
    bases = MIXINS[kind] + (BASES[transport],)
    attrs = {
        "allow_reuse_address": True,
        "request_queue_size": 511,
        "daemon_threads": True,
        "block_on_close": False,
        "max_children": 100,
    }
    return type("EchoServer", bases, attrs)


def parse_address(transport, text):
    if transport == "unix":
        if os.path.exists(text):
            os.unlink(text)
        return text
    host, _, port = text.rpartition(":")
    return (host.strip("[]") or "0.0.0.0", int(port))


def announce(transport, server):
    if transport == "unix":
        where = "unix:" + server.server_address
    else:
        host, port = server.server_address[:2]
        where = "%s://%s:%d" % (transport, host, port)
    print("py_echo: listening on " + where, file=sys.stderr, flush=True)


def main(argv):
    if len(argv) not in (4, 5) or argv[1] not in MIXINS \
            or argv[2] not in BASES:
        print(__doc__, file=sys.stderr)
        return 2
    kind, transport, text = argv[1:4]
    style = argv[4] if len(argv) == 5 else "line"
    if transport == "udp":
        handler = DatagramEcho
    else:
        handler = BulkEcho if style == "bulk" else LineEcho
    server = server_class(kind, transport)(parse_address(transport, text),
                                           handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    announce(transport, server)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()
        if transport == "unix" and os.path.exists(text):
            os.unlink(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
