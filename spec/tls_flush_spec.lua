-- TLS records that OpenSSL writes by itself (session tickets, the
-- close_notify) wait to leave with the connection's next write; these
-- specs prove that nothing is left waiting when the peer is: a handler
-- that writes and then waits for the client's answer, tickets that reach
-- a client whose request is still being read, and a large answer to a
-- slow reader that ends with its close_notify. Clients are Python's ssl
-- module, in every model.
local H = require "helper"
local C = require "tls_certs"

local run = H.output

local function start (model, source)
  local d = C.dir()
  return H.start{ model = model, source = source,
    args = { "--tls", "127.0.0.1:0", "--tls-cert", d .. "/server.pem",
             "--tls-key", d .. "/server.key", "--timeout", "10" } }, d
end

-- python3 running body with s a TLS socket to srv (d the certificates'
-- directory); what it prints
local function python (srv, d, body, opts)
  return run(([[timeout 20 python3 -c '
import socket, ssl, time
ctx = ssl.create_default_context(cafile="%s/ca.pem")
raw = socket.create_connection(("127.0.0.1", %d), timeout=5)
s = ctx.wrap_socket(raw, server_hostname="localhost", %s)
%s
']]):format(d, srv.tls.port, opts or "suppress_ragged_eofs=True", body))
end

H.for_models(function (model)

  it("sends what a handler wrote before it waits for the client's answer", function ()
    local srv, d = start(model, [[
return { handle = function (req)
  req:write("name?\n")            -- the first write: the tickets go with it
  local name = req:read("l")
  req:write("hello ", tostring(name), "\n", "again?\n")
  local more = req:read("l")
  req:write("bye ", tostring(more), "\n")
end }]])
    local out = python(srv, d, [[
f = s.makefile("rwb", buffering=0)
print(f.readline().decode(), end="")
s.sendall(b"alice\n")
print(f.readline().decode(), end="")
print(f.readline().decode(), end="")
s.sendall(b"bob\n")
print(f.readline().decode(), end="")
print(repr(s.recv(10)))]])
    assert.equals("name?\nhello alice\nagain?\nbye bob\nb''\n", out)
  end)

  it("gives the tickets to a client whose request is still being read", function ()
    local srv, d = start(model, [[
return { handle = function (req)
  local line = req:read("l")
  req:write("got ", tostring(line), "\n")
end }]])
    local out = python(srv, d, [[
s.sendall(b"part")               # no end of line: the handler keeps reading
s.settimeout(1)
try:
    s.recv(100)                   # takes in the tickets, then times out
except socket.timeout:
    pass
print("ticket", s.session is not None and s.session.has_ticket)
s.settimeout(5)
s.sendall(b"ial\n")
print(s.recv(100).decode(), end="")]])
    assert.equals("ticket True\ngot partial\n", out)
  end)

  it("ends a large answer to a slow reader with its close_notify", function ()
    local srv, d = start(model, [[
return { handle = function (req)
  req:read("l")
  req:write(("0123456789abcdef"):rep(65536))    -- 1 MiB, then the socket is full
  req:flush()
  req:write(("x"):rep(15999), "\n")           -- one record, sent with the close
end }]])
    local out = run(([[timeout 60 python3 -c '
import socket, ssl, time
ctx = ssl.create_default_context(cafile="%s/ca.pem")
for i in range(5):
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a slow reader
    raw.settimeout(10)
    raw.connect(("127.0.0.1", %d))
    s = ctx.wrap_socket(raw, server_hostname="localhost",
                        suppress_ragged_eofs=False)
    s.sendall(b"go\n")
    time.sleep(0.2)
    n, last = 0, b""
    while True:
        b = s.recv(65536)         # a close without close_notify raises
        if not b:
            break
        n += len(b)
        last = (last + b)[-3:]
    print(n, repr(last))
    s.close()
']]):format(d, srv.tls.port))
    assert.equals(("%d b'xx\\n'\n"):format(1048576 + 16000):rep(5), out)
  end)


end)
