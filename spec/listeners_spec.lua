-- Listeners (SPEC §1): every kind, the startup lines, port 0, IPv6, host
-- names, several listeners for one script, Unix socket files, bind errors.
local H = require "helper"
local T = H.T
local socket = require "socket"
local unix = require "socket.unix"

local ECHO = H.fixture("echo.lua")
local TRANSPORT = H.fixture("transport.lua")


local function echoes (srv, kind, msg)
  local c = srv:connect(kind)
  assert(c:send(msg .. "\n"))
  assert.equals(msg, c:receive())
  c:close()
end


local function echoes_dgram (srv, kind, msg)
  local c = srv:connect(kind)
  assert(c:send(msg))
  assert.equals(msg, c:receive())
  c:close()
end


local function has_line (s, line)
  return s:find("\n" .. line .. "\n", 1, true) ~= nil
      or s:sub(1, #line + 1) == line .. "\n"
end


H.for_models(function (model)

  it("tcp on 127.0.0.1 with port 0 prints the port bound and serves on it",
  function ()
    local srv = H.start{ script = ECHO, tcp = true, model = model }
    assert.equals(1, #srv.listeners)
    assert.equals("tcp", srv.tcp.transport)
    assert.equals("127.0.0.1", srv.tcp.host)
    assert.is_true(srv.tcp.port > 0)
    assert.is_true(has_line(srv:stderr(),
      "luasrv: listening on tcp://127.0.0.1:" .. srv.tcp.port))
    echoes(srv, "tcp", "hello over tcp")
  end)

  it("tcp on [::1] prints tcp://[::1]:PORT and serves IPv6 clients",
  function ()
    local srv = H.start{ script = ECHO, tcp6 = true, model = model }
    assert.equals("::1", srv.tcp.host)
    assert.equals("tcp://[::1]:" .. srv.tcp.port, srv.tcp.address)
    assert.is_true(srv.tcp.port > 0)
    echoes(srv, "tcp6", "hello over tcp6")
  end)

  it("resolves a host name (localhost) and prints the address bound",
  function ()
    local srv = H.start{ script = ECHO, tcp = "localhost:0", model = model }
    local a = srv.tcp.address
    assert.is_truthy(a == "tcp://127.0.0.1:" .. srv.tcp.port
      or a == "tcp://[::1]:" .. srv.tcp.port, a)
    assert.is_true(srv.tcp.port > 0)
    echoes(srv, "tcp", "hello localhost")
  end)

  it("udp: prints udp://127.0.0.1:PORT and answers datagrams", function ()
    local srv = H.start{ script = ECHO, udp = true, model = model }
    assert.equals("udp://127.0.0.1:" .. srv.udp.port, srv.udp.address)
    assert.is_true(srv.udp.port > 0)
    echoes_dgram(srv, "udp", "hello over udp")
  end)

  it("udp on [::1]", function ()
    local srv = H.start{ script = ECHO, udp6 = true, model = model }
    assert.equals("udp://[::1]:" .. srv.udp.port, srv.udp.address)
    echoes_dgram(srv, "udp6", "hello over udp6")
  end)

  it("unix: prints unix:PATH and serves on it", function ()
    local srv = H.start{ script = ECHO, unix = true, model = model }
    local path = srv.dir .. "/s1.sock"
    assert.equals("unix:" .. path, srv.unix.address)
    assert.equals(path, srv.unix.path)
    assert.is_true(H.is_socket(path))
    echoes(srv, "unix", "hello over unix")
  end)

  it("unixgram: prints unixgram:PATH and answers datagrams", function ()
    local srv = H.start{ script = ECHO, unixgram = true, model = model }
    local path = srv.dir .. "/g1.sock"
    assert.equals("unixgram:" .. path, srv.unixgram.address)
    assert.is_true(H.is_socket(path))
    echoes_dgram(srv, "unixgram", "hello over unixgram")
  end)

  it("serves several listeners of every kind from one script, one startup "
     .. "line each in command-line order", function ()
    local srv = H.start{ script = TRANSPORT, model = model, tcp = true,
      tcp6 = true, udp = true, unix = true, unixgram = true }
    local kinds = {}
    for i, l in ipairs(srv.listeners) do kinds[i] = l.transport end
    assert.same({ "tcp", "tcp", "udp", "unix", "unixgram" }, kinds)
    assert.equals("::1", srv.listeners[2].host)
    assert.equals(5, H.count(srv:stderr(), "luasrv: listening on ", true))
    for i, l in ipairs(srv.listeners) do
      local c = srv:connect(i)
      if l.transport == "udp" or l.transport == "unixgram" then
        assert(c:send("x"))
        assert.equals(l.transport .. " " .. l.address .. "\n", c:receive())
      else
        assert.equals(l.transport .. " " .. l.address, c:receive())
      end
      c:close()
    end
  end)

  it("two tcp listeners on different ports", function ()
    local srv = H.start{ script = TRANSPORT, model = model, tcp = 2 }
    assert.equals(2, #srv.listeners)
    assert.are_not.equal(srv.listeners[1].port, srv.listeners[2].port)
    for i, l in ipairs(srv.listeners) do
      assert.equals("tcp " .. l.address, srv:connect(i):receive())
    end
  end)

  it("replaces a stale unix socket file nobody listens on", function ()
    local dir = H.tmpdir()
    local path = dir .. "/stale.sock"
    local s = assert(unix.stream())
    assert(s:bind(path))
    assert(s:listen())
    s:close()                                   -- the file stays behind
    assert.is_true(H.is_socket(path))
    local srv = H.start{ script = ECHO, unix = path, model = model }
    assert.equals("unix:" .. path, srv.unix.address)
    echoes(srv, "unix", "fresh")
  end)

  it("refuses a unix path a live server holds: exit 1, one error line "
     .. "naming the path, the live server untouched", function ()
    local srv = H.start{ script = ECHO, unix = true, unixgram = true,
                         model = model }
    local path = srv.unix.path
    local code, _, err = T.run{ ECHO, "--unix", path, "--model", model,
                                timeout = 5 }
    assert.equals(1, code)
    local errs = H.error_lines(err)
    assert.equals(1, #errs, err)
    assert.truthy(errs[1]:find(path, 1, true), errs[1])
    assert.is_true(H.is_socket(path))
    echoes(srv, "unix", "still mine")
    -- the same for a unixgram path
    code, _, err = T.run{ ECHO, "--unixgram", srv.unixgram.path,
                          "--model", model, timeout = 5 }
    assert.equals(1, code)
    assert.truthy(err:find("luasrv: error: [^\n]*" ..
      srv.unixgram.path:gsub("%p", "%%%0")), err)
    assert.is_true(H.is_socket(srv.unixgram.path))
    echoes_dgram(srv, "unixgram", "still mine too")
  end)

  it("does not remove a regular file at the unix path: exit 1", function ()
    local dir = H.tmpdir()
    local path = dir .. "/not-a-socket"
    local f = assert(io.open(path, "w"))
    f:write("precious")
    f:close()
    local code, _, err = T.run{ ECHO, "--unix", path, "--model", model,
                                timeout = 5 }
    assert.equals(1, code)
    assert.equals(1, #H.error_lines(err), err)
    f = assert(io.open(path))
    assert.equals("precious", f:read("a"))
    f:close()
  end)

  it("removes the unix socket files it created when it exits", function ()
    local srv = H.start{ script = ECHO, unix = true, unixgram = true,
                         model = model }
    local p1, p2 = srv.unix.path, srv.unixgram.path
    assert.is_true(H.is_socket(p1) and H.is_socket(p2))
    echoes(srv, "unix", "bye")
    srv:signal("TERM")
    assert.equals(0, srv:wait(5))
    assert.is_false(H.exists(p1))
    assert.is_false(H.exists(p2))
  end)

  it("tcp address in use: exit 1 with one error line naming the address",
  function ()
    local s = assert(socket.tcp())
    assert(s:bind("127.0.0.1", 0))
    assert(s:listen(4))
    H.defer(function () s:close() end)
    local _, port = s:getsockname()
    local code, _, err = T.run{ ECHO, "--tcp", "127.0.0.1:" .. port,
                                "--model", model, timeout = 5 }
    assert.equals(1, code)
    local errs = H.error_lines(err)
    assert.equals(1, #errs, err)
    assert.truthy(errs[1]:find("127.0.0.1:" .. port, 1, true), errs[1])
    assert.truthy(errs[1]:lower():find("in use", 1, true), errs[1])
    assert.falsy(err:find("listening on", 1, true))
  end)

  it("udp address in use: exit 1 naming the address", function ()
    local s = assert(socket.udp())
    assert(s:setsockname("127.0.0.1", 0))
    H.defer(function () s:close() end)
    local _, port = s:getsockname()
    local code, _, err = T.run{ ECHO, "--udp", "127.0.0.1:" .. port,
                                "--model", model, timeout = 5 }
    assert.equals(1, code)
    local errs = H.error_lines(err)
    assert.equals(1, #errs, err)
    assert.truthy(errs[1]:find("127.0.0.1:" .. port, 1, true), errs[1])
  end)

  it("binds again at once to a tcp port whose connections are in "
     .. "TIME_WAIT (SO_REUSEADDR)", function ()
    local srv = H.start{ script = ECHO, tcp = true, model = model }
    local port = srv.tcp.port
    local c = srv:connect()
    c:send("a\nquit\n")                         -- the server closes first
    assert.equals("a", c:receive())
    assert.same({ nil, "closed" }, { c:receive() })
    c:close()
    assert.equals(0, srv:stop())
    local again = H.start{ script = ECHO, tcp = "127.0.0.1:" .. port,
                           model = model }
    assert.equals(port, again.tcp.port)
    echoes(again, "tcp", "again")
  end)
end)
