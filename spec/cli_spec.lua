-- The command line and the process (SPEC §1): --help, --version, usage
-- errors, --once, server:shutdown(), signals, SIGPIPE.
local H = require "helper"
local T = H.T

local ECHO = H.fixture("echo.lua")

-- "started\n" flushed at once, then sleeps SECS, then "done\n"
local function sleeper (secs)
  return ([[
local luasrv = require "luasrv"
return { handle = function (req)
  req:write("started\n"):flush()
  luasrv.sleep(%s)
  req:write("done\n")
end }]]):format(secs)
end


local function try_connect (srv, kind)
  local ok, c = pcall(srv.connect, srv, kind)
  if ok then return c end
end


describe("options", function ()
  it("--help prints the usage to stdout and exits 0", function ()
    local code, out, err = T.run{ "--help" }
    assert.equals(0, code)
    assert.matches("usage: luasrv", out)
    for _, opt in ipairs{ "--tcp", "--udp", "--unix", "--unixgram",
                          "--model", "--timeout", "--once", "--check" } do
      assert.truthy(out:find(opt, 1, true), opt)
    end
    assert.equals("", err)
  end)

  it("--version prints 'luasrv VERSION' to stdout and exits 0", function ()
    local code, out, err = T.run{ "--version" }
    assert.equals(0, code)
    assert.matches("^luasrv %d+%.%d+", out)
    assert.equals("", err)
  end)

  local usage_errors = {
    { "a bad option", { ECHO, "--tcp", "127.0.0.1:0", "--bogus" }, "--bogus" },
    { "no script", { "--tcp", "127.0.0.1:0" } },
    { "no arguments", {} },
    { "no listener", { ECHO } },
    { "an option without its value", { ECHO, "--tcp" }, "--tcp" },
    { "a bad number", { ECHO, "--tcp", "127.0.0.1:0", "--timeout", "soon" },
      "--timeout" },
    { "an unknown model", { ECHO, "--tcp", "127.0.0.1:0", "--model", "nope" },
      "nope" },
  }
  for _, u in ipairs(usage_errors) do
    it(u[1] .. " is a usage error: exit 2 with the usage", function ()
      local args = { timeout = 5 }
      for i, a in ipairs(u[2]) do args[i] = a end
      local code, out, err = T.run(args)
      assert.equals(2, code, err)
      assert.truthy(err:find("usage: luasrv", 1, true), err)
      assert.equals("", out)
      if u[3] then assert.truthy(err:find(u[3], 1, true), err) end
      assert.falsy(err:find("listening on", 1, true))
    end)
  end
end)


describe("usage errors say what was meant", function ()
  local hints = {
    { { "--worker", "2" },
      "luasrv: unknown option '--worker' (did you mean --workers?)" },
    { { "--timout=3" },
      "luasrv: unknown option '--timout' (did you mean --timeout?)" },
    { { "--shared", "cache" }, "luasrv: bad value 'cache' for --shared "
      .. "(expected NAME:SIZE, e.g. --shared cache:10m)" },
    { { "--workers", "0" }, "luasrv: bad value '0' for --workers "
      .. "(expected a whole number from 1 to 1024)" },
    { { "--tcp", "localhost" }, "luasrv: missing port in address "
      .. "'localhost' (expected HOST:PORT, e.g. localhost:9000)" },
    { { "--udp", "127.0.0.1:" }, "luasrv: missing port in address "
      .. "'127.0.0.1:' (expected HOST:PORT)" },
  }
  for _, h in ipairs(hints) do
    it(table.concat(h[1], " ") .. ": " .. h[2]:match("^luasrv: (.*)$"),
       function ()
      local args = { ECHO, "--tcp", "127.0.0.1:0", timeout = 5 }
      for _, a in ipairs(h[1]) do args[#args + 1] = a end
      local code, out, err = T.run(args)
      assert.equals(2, code, err)
      assert.equals("", out)
      local lines = H.lines(err)
      assert.equals(h[2], lines[1])
      assert.equals("usage: luasrv SCRIPT [OPTIONS]", lines[2])
    end)
  end

  it("--help says a bare port listens on every interface", function ()
    local _, out = T.run{ "--help" }
    assert.truthy(out:find("PORT or :PORT alone listens on every interface",
                           1, true), out)
  end)
end)


describe("the startup lines", function ()
  -- every interface of an empty network namespace: nothing can reach it
  local netns = os.execute("unshare -n true 2>/dev/null") == true
  local it_netns = netns and it or pending

  it_netns("a bare port shows it listens on every interface", function ()
    local p = io.popen("unshare -n timeout 2 '" .. T.bin .. "' " .. ECHO ..
                       " --tcp 0 --tcp '[::]:0' --once 2>&1")
    local out = p:read("a")
    p:close()
    local lines = H.lines(out)
    assert.matches("^luasrv: listening on tcp://0%.0%.0%.0:%d+ %(every "
                   .. "IPv4 interface%)$", lines[1])
    assert.matches("^luasrv: listening on tcp://%[::%]:%d+ %(every "
                   .. "IPv6 interface%)$", lines[2])
  end)

  local root = io.popen("id -u"):read("l") == "0"
  local it_root = root and it or pending
  local warning = "luasrv: warning: handlers run as root; --user USER drops that"

  it_root("as root, the warning comes once, after the startup lines",
          function ()
    local srv = H.start{ script = ECHO, tcp = 2, args = { "--workers", "2" } }
    assert.truthy(srv:wait_stderr(warning, 3 * H.scale, true))
    local lines = H.lines(srv:stderr())
    assert.matches("^luasrv: listening on ", lines[1])
    assert.matches("^luasrv: listening on ", lines[2])
    assert.equals(warning, lines[3])
    assert.equals(1, H.count(srv:stderr(), warning, true))
  end)

  it_root("with --quiet the warning is the only line; a failed start has "
          .. "none", function ()
    local srv = H.start{ script = ECHO, wait = false,
                         args = { "--tcp", "127.0.0.1:0", "--quiet" } }
    assert.truthy(srv:wait_stderr(warning, 3 * H.scale, true))
    srv:stop()
    assert.equals(warning .. "\n", srv:stderr())
    local code, _, err = T.run{ H.fixture("syntax_error.lua"), "--tcp",
                                "127.0.0.1:0" }
    assert.equals(1, code)
    assert.falsy(err:find("as root", 1, true), err)
    assert.equals(1, #H.lines(err), err)
  end)
end)


H.for_models(function (model)
  describe("--once", function ()
    it("serves exactly one connection, then exits 0", function ()
      local srv = H.start{ model = model, script = ECHO, args = { "--once" } }
      local first = srv:connect()
      local second = srv:connect()              -- waits in the backlog
      assert(first:send("one\n"))
      assert.equals("one", first:receive())
      assert(second:send("two\n"))
      first:close()
      assert.equals(0, srv:wait(3))
      second:settimeout(1)
      assert.is_nil((second:receive()))
    end)

    it("serves exactly one datagram, then exits 0", function ()
      local srv = H.start{ model = model, script = ECHO, udp = true,
                           args = { "--once" } }
      local c = srv:connect("udp")
      assert(c:send("one"))
      assert.equals("one", c:receive())
      assert.equals(0, srv:wait(3))
      c:settimeout(0.3)
      c:send("two")
      assert.is_nil((c:receive()))
    end)
  end)

  describe("server:shutdown()", function ()
    it("from inside a handler: the request completes, then exit 0 at once",
    function ()
      local srv = H.start{ model = model, source = [[
return { handle = function (req)
  local line = req:read("l")
  if line == "stop" then
    req:write("stopping\n")
    req.server:shutdown()
    req:write("still here\n")
  else
    req:write("echo ", line, "\n")
  end
end }]] }
      local c = srv:connect()
      assert(c:send("hello\n"))
      assert.equals("echo hello", c:receive())
      c = srv:connect()
      assert(c:send("stop\n"))
      assert.equals("stopping", c:receive())
      assert.equals("still here", c:receive())
      assert.same({ nil, "closed" }, { c:receive() })
      local dt, code = H.elapsed(srv.wait, srv, 3)
      assert.equals(0, code)
      assert.is_true(dt < 0.45 * H.scale, "exit took " .. dt .. " s")
    end)
  end)

  describe("signals", function ()
    it("SIGTERM when idle: exit 0 at once", function ()
      local srv = H.start{ model = model, script = ECHO }
      T.sleep(0.1)
      srv:signal("TERM")
      local dt, code = H.elapsed(srv.wait, srv, 3)
      assert.equals(0, code)
      assert.is_true(dt < 0.45 * H.scale, "exit took " .. dt .. " s")
    end)

    it("SIGINT when idle: exit 0", function ()
      local srv = H.start{ model = model, script = ECHO }
      srv:signal("INT")
      assert.equals(0, srv:wait(3))
    end)

    it("SIGTERM during a request: it completes, no new request is served, "
       .. "exit 0", function ()
      local srv = H.start{ model = model, source = sleeper(0.6) }
      local c = srv:connect()
      assert.equals("started", c:receive())
      srv:signal("TERM")
      T.sleep(0.1)
      local late = try_connect(srv)
      assert.equals("done", c:receive())
      assert.same({ nil, "closed" }, { c:receive() })
      assert.equals(0, srv:wait(3))
      if late then
        late:settimeout(1)
        assert.is_nil((late:receive()))
      end
    end)

    it("--grace 1: a request still running after the grace is cut",
    function ()
      local srv = H.start{ model = model, source = sleeper(10),
                           args = { "--grace", "1" } }
      local c = srv:connect()
      assert.equals("started", c:receive())
      srv:signal("TERM")
      local dt, code = H.elapsed(srv.wait, srv, 4)
      assert.is_number(code)
      assert.is_true(code < 128, "killed by signal " .. code - 128)
      assert.is_true(dt >= 0.8 and dt < 2.5 * H.scale,
                     "exit took " .. dt .. " s")
      c:settimeout(1)
      local line = c:receive()
      assert.are_not.equal("done", line)
    end)

    it("a second SIGINT exits at once with 130", function ()
      local srv = H.start{ model = model, source = sleeper(10) }
      local c = srv:connect()
      assert.equals("started", c:receive())
      srv:signal("INT")
      assert.is_nil(srv:wait(0.4))               -- graceful: still waiting
      srv:signal("INT")
      local dt, code = H.elapsed(srv.wait, srv, 3)
      assert.equals(130, code)
      assert.is_true(dt < 1 * H.scale, "exit took " .. dt .. " s")
    end)

    it("SIGPIPE does not kill it: a client gone before a big write",
    function ()
      local srv = H.start{ model = model, args = { "--timeout", "2" },
                           source = [[
local luasrv = require "luasrv"
local chunk = string.rep("x", 65536)
return { handle = function (req)
  local line = req:read("l")
  if line ~= "big" then req:write("echo ", line, "\n") return end
  luasrv.sleep(0.3)                    -- the client has closed by now
  for i = 1, 200 do
    local ok, err = req:write(chunk)
    if ok then ok, err = req:flush() end
    if not ok then luasrv.log("write failed", i, err) return end
  end
  luasrv.log("write never failed")
end }]] }
      local c = srv:connect()
      assert(c:send("big\n"))
      c:close()
      assert.is_true(srv:wait_stderr("luasrv: write failed", 5, true),
                     srv:stderr())
      assert.is_true(srv:alive())
      c = srv:connect()
      assert(c:send("still alive\n"))
      assert.equals("echo still alive", c:receive())
    end)
  end)
end)
