-- luasrv.test itself (issue 6, "for users' own specs"), run against a
-- stand-in binary (spec/fixtures/fake_luasrv) so that what is checked here
-- is the module's process and socket handling, not luasrv.
local H = require "helper"
local T = H.T

local FAKE = H.fixture("fake_luasrv")
local SCRIPT = H.fixture("echo.lua")          -- the stand-in ignores it


describe("luasrv.test", function ()
  local real_bin
  before_each(function () real_bin = T.bin; T.bin = FAKE end)
  after_each(function () T.bin = real_bin end)

  it("starts the binary, parses every kind of startup line, connects to "
     .. "each listener and stops it", function ()
    local srv = T.start{ script = SCRIPT, tcp = true, tcp6 = true,
                         udp = true, unix = true, unixgram = true }
    H.defer(function () srv:stop(1) end)
    assert.is_number(srv.pid)
    local kinds = {}
    for i, l in ipairs(srv.listeners) do kinds[i] = l.transport end
    assert.same({ "tcp", "tcp", "udp", "unix", "unixgram" }, kinds)
    assert.equals("127.0.0.1", srv.tcp.host)
    assert.is_true(srv.tcp.port > 0)
    assert.equals("tcp://127.0.0.1:" .. srv.tcp.port, srv.tcp.address)
    assert.equals("::1", srv.tcp6.host)
    assert.equals("tcp://[::1]:" .. srv.tcp6.port, srv.tcp6.address)
    assert.equals(srv.dir .. "/s1.sock", srv.unix.path)
    assert.equals("unixgram:" .. srv.dir .. "/g1.sock", srv.unixgram.address)
    for _, kind in ipairs{ "tcp", "tcp6", "unix" } do
      local c = srv:connect(kind)
      assert(c:send(kind .. "\n"))
      assert.equals(kind, c:receive())
      assert(c:send("quit\n"))
      assert.same({ nil, "closed" }, { c:receive() })
    end
    for _, kind in ipairs{ "udp", "unixgram" } do
      local c = srv:connect(kind)
      assert(c:send(string.rep("d", 65507)))
      assert.equals(65507, #c:receive())
      c:settimeout(0.1)
      assert.same({ nil, "timeout" }, { c:receive() })
    end
    local dir = srv.dir
    assert.equals(128 + 15, srv:stop())           -- Lua dies of SIGTERM
    assert.equals(128 + 15, srv:stop())           -- twice is fine
    assert.is_false(srv:alive())
    assert.is_false(H.exists(dir))
    assert.matches("listening on unixgram:", srv:stderr())  -- kept
  end)

  it("gives the server no copy of the spec's own sockets", function ()
    local a = T.start{ script = SCRIPT }
    H.defer(function () a:stop(1) end)
    local held = a:connect()
    local b = T.start{ script = SCRIPT }
    H.defer(function () b:stop(1) end)
    local p = assert(io.popen("ls -l /proc/" .. b.pid .. "/fd"))
    local fds = p:read("a")
    p:close()
    assert.equals(1, H.count(fds, "socket:", true), fds)  -- its listener
    held:close()
  end)

  it("runs the server in its own process group, killed whole by stop",
  function ()
    local srv = T.start{ script = SCRIPT }
    local f = assert(io.open("/proc/" .. srv.pid .. "/stat"))
    local pgrp = f:read("a"):match("%)%s+%a%s+%d+%s+(%d+)")
    f:close()
    assert.equals(srv.pid, tonumber(pgrp))
    srv:stop(1)
  end)

  it("stop sends SIGKILL when SIGTERM is not enough", function ()
    local srv = T.start{ script = SCRIPT, env = { FAKE_IGNORE_TERM = "1" } }
    srv:signal("TERM")
    assert.is_nil(srv:wait(0.3))
    local dt, code = H.elapsed(srv.stop, srv, 0.5)
    assert.equals(128 + 9, code)
    assert.is_true(dt >= 0.4 and dt < 3, dt)
  end)

  it("wait gives nil on timeout, then the exit code", function ()
    local srv = T.start{ script = SCRIPT, unix = true }
    H.defer(function () srv:stop(1) end)
    assert.is_nil(srv:wait(0.2))
    assert.is_true(srv:alive())
    assert.is_true(srv:signal("SIGHUP"))
    assert.equals(128 + 1, srv:wait(3))
    assert.equals(128 + 1, srv:wait(0))
    assert.is_false(srv:signal("HUP"))
  end)

  it("waits for the startup lines", function ()
    local dt, srv = H.elapsed(T.start, { script = SCRIPT,
                                         args = { "--sleep", "0.3" } })
    H.defer(function () srv:stop(1) end)
    assert.is_true(dt >= 0.3, dt)
    assert.equals(1, #srv.listeners)
  end)

  it("wait = false returns at once; srv:ready waits", function ()
    local srv = T.start{ script = SCRIPT, wait = false,
                         args = { "--sleep", "0.3" } }
    H.defer(function () srv:stop(1) end)
    assert.same({}, srv.listeners)
    assert.is_true(srv:ready(3))
    assert.equals("tcp", srv.listeners[1].transport)
  end)

  it("raises with the server's stderr when it exits before listening",
  function ()
    local ok, err = pcall(T.start, { script = SCRIPT, args = { "--bogus" } })
    assert.is_false(ok)
    assert.matches("exited %(2%) before listening", err)
    assert.matches("unknown option %-%-bogus", err)
  end)

  it("wait_stderr finds text, and gives false after its timeout",
  function ()
    local srv = T.start{ script = SCRIPT }
    H.defer(function () srv:stop(1) end)
    assert.is_true(srv:wait_stderr("listening on tcp://", 1, true))
    local dt, found = H.elapsed(srv.wait_stderr, srv, "never", 0.2)
    assert.is_false(found)
    assert.is_true(dt >= 0.2 and dt < 1, dt)
  end)

  it("run returns exit code, stdout and stderr; {script} is replaced",
  function ()
    local code, out, err = T.run{ "--help" }
    assert.equals(0, code)
    assert.equals("usage: luasrv SCRIPT [OPTIONS]\n", out)
    assert.equals("", err)
    local script
    code, out, err, script = T.run{ "--check", "{script}", source = "x" }
    assert.equals(0, code)
    assert.equals("luasrv: " .. script .. ": ok\n", err)
    code, out, err = T.run{ script = SCRIPT, "--bogus" }
    assert.equals(2, code)
    assert.matches("unknown option %-%-bogus", err)
  end)

  it("run kills a binary that does not finish: 124", function ()
    local dt, code = H.elapsed(T.run, { script = SCRIPT, "--tcp",
                                         "127.0.0.1:0", timeout = 0.5 })
    assert.equals(124, code)
    assert.is_true(dt < 3, dt)
  end)

  it("T.cleanup stops what is left and removes temp dirs", function ()
    local srv = T.start{ script = SCRIPT }
    local dir = T.tmpdir()
    T.cleanup()
    assert.is_false(srv:alive())
    assert.is_false(H.exists(srv.dir))
    assert.is_false(H.exists(dir))
  end)
end)
