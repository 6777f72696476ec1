-- Outbound connections (docs-connect.md): luasrv.connect to tcp, unix and
-- udp upstreams, its failures (refused, timeout, names), upstreams that
-- close, the keep-alive pool, and the event loop staying responsive while
-- a handler waits on a slow upstream. Loopback only: the upstreams are a
-- second luasrv (event model) or sockets the spec holds itself.
local H = require "helper"
local T = H.T
local socket = require "socket"
local unix = require "socket.unix"

-- the upstream: answers each line with "up:LINE"; "slow" after a second;
-- "bye" closes after "one\ntwo" (no newline at the end); "later" is
-- answered, then 0.2 s later followed by a line nobody asked for
local UPSTREAM = [[
local luasrv = require "luasrv"
return { handle = function (req)
  for line in req:lines() do
    if line == "slow" then luasrv.sleep(1) end
    if line == "later" then
      req:write("up:later\n")
      req:flush()
      luasrv.sleep(0.2)
      line = "stray"
    end
    if line == "bye" then req:write("one\ntwo") return end
    req:write("up:", line, "\n")
    req:flush()
  end
end }
]]

local UDP_UPSTREAM = [[
return { handle = function (req) req:write("got:", req.request) end }
]]

-- the server under test runs H.RUNNER: the client sends a line of Lua, the
-- body of function(req, luasrv, URL); its results are written back
local RUNNER = H.RUNNER


local function upstream (opts)
  opts.model = "event"
  opts.source = opts.source or UPSTREAM
  return H.start(opts)
end


-- starts the server under test with env UPSTREAM = url
local function runner (model, url, args)
  return H.start{ model = model, source = RUNNER, env = { UPSTREAM = url },
                  args = args }
end


local ask = H.ask


local function tcp_url (srv)
  return "tcp://127.0.0.1:" .. srv.tcp.port
end


-- a port nothing listens on
-- a port nobody listens on, for the rest of the test: bound but never
-- listening, so a connect is refused, and no other socket (another spec's
-- listener, or this connect's own source port) can take it meanwhile
local function closed_port ()
  local s = assert(socket.tcp())
  assert(s:bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  H.defer(function () s:close() end)
  return port
end


local ROUNDTRIP = [[
local c, err = luasrv.connect(URL)
if not c then return nil, err end
c:write("hello\n")
local line = c:read("l")
c:write("again\n")
local line2 = c:recv(100)
c:close()
return line, (line2:gsub("\n", "NL"))
]]


H.for_models(function (model)
  describe("luasrv.connect", function ()
    it("relays a line to a tcp upstream and back", function ()
      local up = upstream{ tcp = true }
      local r = ask(runner(model, tcp_url(up)), ROUNDTRIP)
      assert.same({ "up:hello", "up:againNL", n = 2 }, r)
    end)

    it("connects to an IPv6 literal", function ()
      local up = upstream{ tcp6 = true }
      local r = ask(runner(model, "tcp://[::1]:" .. up.tcp.port), ROUNDTRIP)
      assert.same({ "up:hello", "up:againNL", n = 2 }, r)
    end)

    it("connects to a unix socket", function ()
      local up = upstream{ unix = true }
      local r = ask(runner(model, "unix:" .. up.unix.path), ROUNDTRIP)
      assert.same({ "up:hello", "up:againNL", n = 2 }, r)
    end)

    it("resolves the host name localhost", function ()
      local up = upstream{ tcp = true }
      local r = ask(runner(model, "tcp://localhost:" .. up.tcp.port),
                    ROUNDTRIP)
      assert.same({ "up:hello", "up:againNL", n = 2 }, r)
    end)

    it("returns nil, 'connection refused' for a closed port", function ()
      local srv = runner(model, "tcp://127.0.0.1:" .. closed_port())
      local r = ask(srv, "return luasrv.connect(URL)")
      assert.same({ nil, "connection refused", n = 2 }, r)
      r = ask(srv, "return luasrv.connect('unix:/nonexistent/x.sock')")
      assert.same({ nil, "no such file or directory", n = 2 }, r)
    end)

    it("returns nil, 'name not resolved: ...' for an unknown name", function ()
      local srv = runner(model, "tcp://no-such-host.invalid:80")
      local r = ask(srv, "return luasrv.connect(URL, { timeout = 3 })")
      assert.is_nil(r[1])
      assert.is_truthy(r[2]:find("^name not resolved: no%-such%-host%.invalid")
                       or r[2] == "timeout", r[2])
    end)

    it("raises on a malformed url", function ()
      local srv = runner(model, "nope")
      local r = ask(srv, "return pcall(luasrv.connect, URL)")
      assert.is_false(r[1])
      assert.is_truthy(r[2]:find("bad url", 1, true), r[2])
    end)

    it("times out connecting to a listener whose backlog is full", function ()
      -- backlog 0: the kernel queues one connection, then drops SYNs
      local l = assert(socket.tcp())
      assert(l:bind("127.0.0.1", 0))
      assert(l:listen(0))
      H.defer(function () l:close() end)
      local _, port = l:getsockname()
      for _ = 1, 4 do
        local c = socket.tcp()
        c:settimeout(0)
        c:connect("127.0.0.1", port)
        H.defer(function () c:close() end)
      end
      T.sleep(0.1)
      local srv = runner(model, "tcp://127.0.0.1:" .. port)
      local t0 = T.now()
      local r = ask(srv, "return luasrv.connect(URL, { timeout = 0.3 })")
      assert.same({ nil, "timeout", n = 2 }, r)
      assert.is_true(T.now() - t0 < 2 * H.scale)
    end)

    it("times out connecting to a unix socket whose backlog is full",
       function ()
      local dir = T.tmpdir()
      local path = dir .. "/full.sock"
      local l = assert(unix())
      assert(l:bind(path))
      assert(l:listen(0))
      H.defer(function () l:close(); T.rmrf(dir) end)
      for _ = 1, 4 do
        local c = unix()
        c:settimeout(0)
        c:connect(path)
        H.defer(function () c:close() end)
      end
      local srv = runner(model, "unix:" .. path)
      local r = ask(srv, "return luasrv.connect(URL, { timeout = 0.3 })")
      assert.same({ nil, "timeout", n = 2 }, r)
    end)

    it("reads what is left, then nil, when the upstream closes", function ()
      local up = upstream{ tcp = true }
      local r = ask(runner(model, tcp_url(up)), [[
        local c = luasrv.connect(URL)
        c:write("bye\n")
        local a, b, x = c:read("l", "l", "l")
        return a, b, x, c:read("a"), c:recv(), c:read(3)
      ]])
      assert.same({ "one", "two", nil, "", nil, nil, n = 6 }, r)
    end)

    it("times out a read as requests do (settimeout)", function ()
      local l = assert(socket.bind("127.0.0.1", 0))  -- accepts, never answers
      H.defer(function () l:close() end)
      local _, port = l:getsockname()
      local r = ask(runner(model, "tcp://127.0.0.1:" .. port), [[
        local c = luasrv.connect(URL)
        c:settimeout(0.2)
        c:write("anyone?\n")
        local t0 = luasrv.now()
        local line, err = c:read("l")
        return line, err, luasrv.now() - t0 >= 0.15
      ]])
      assert.same({ nil, "timeout", true, n = 3 }, r)
    end)

    it("talks udp: a flush is a datagram, a read takes one", function ()
      local up = upstream{ udp = true, source = UDP_UPSTREAM }
      local r = ask(runner(model, "udp://127.0.0.1:" .. up.udp.port), [[
        local c = luasrv.connect(URL)
        c:settimeout(2)
        c:write("ping", 1)
        local d = c:recv()
        c:write("a\nb")
        local x, y = c:read("l", "l")
        c:write("whole")
        local w = c:read("a")
        return d, x, y, w
      ]])
      assert.same({ "got:ping1", "got:a", "b", "got:whole", n = 4 }, r)
    end)

    it("udp to a closed port: the read fails with 'connection refused'",
       function ()
      local r = ask(runner(model, "udp://127.0.0.1:" .. closed_port()), [[
        local c = luasrv.connect(URL)
        c:settimeout(1)
        c:write("x")
        return c:read("a")
      ]])
      assert.same({ nil, "Connection refused", n = 2 }, r)
    end)

    it("serves requests with a connection made in init", function ()
      local up = upstream{ tcp = true }
      local srv = H.start{ model = model, env = { UPSTREAM = tcp_url(up) },
        source = [[
        local luasrv = require "luasrv"
        local c
        return {
          init = function () c = assert(luasrv.connect(os.getenv("UPSTREAM"))) end,
          handle = function (req)
            c:write(req:read("l"), "\n")
            req:write(c:read("l"), "\n")
          end }
      ]] }
      for i = 1, 2 do
        local cl = srv:connect()
        cl:send("n" .. i .. "\n")
        assert.equals("up:n" .. i, cl:receive())
        cl:close()
      end
    end)
  end)

  describe("the keep-alive pool", function ()
    local REUSE = [[
      local c = assert(luasrv.connect(URL))
      c:write("x\n")
      c:read("l")
      return c:getreusedtimes(), c:setkeepalive(), c:read("l")
    ]]

    it("reuses a connection across requests (not in fork)", function ()
      local up = upstream{ tcp = true }
      local srv = runner(model, tcp_url(up))
      local counts = {}
      for i = 1, 3 do
        local r = ask(srv, REUSE)
        assert.same({ true, nil, "closed" }, { r[2], r[3], r[4] })
        counts[i] = r[1]
      end
      if model == "fork" then
        assert.same({ 0, 0, 0 }, counts)  -- a child's pool dies with it
      elseif model == "thread" then
        assert.equals(0, counts[1])       -- states are pooled too
      else
        assert.same({ 0, 1, 2 }, counts)
      end
    end)

    it("discards a pooled connection the upstream closed", function ()
      local up = upstream{ tcp = true, args = { "--timeout", "0.2" } }
      local srv = runner(model, tcp_url(up))
      assert.equals(0, ask(srv, REUSE)[1])
      T.sleep(0.5)  -- the upstream closed the idle connection
      local r = ask(srv, REUSE)
      assert.same({ 0, true }, { r[1], r[2] })
    end)

    it("discards a pooled connection the upstream wrote to while idle",
       function ()
      local up = upstream{ tcp = true }
      local r = ask(runner(model, tcp_url(up)), [[
        local c = assert(luasrv.connect(URL))
        c:write("later\n")
        local a = c:read("l")
        local ok = c:setkeepalive()
        luasrv.sleep(0.5) --[=[ "up:stray" came meanwhile ]=]
        local d = assert(luasrv.connect(URL))
        d:write("x\n")
        return a, ok, d:getreusedtimes(), d:read("l")
      ]])
      assert.same({ "up:later", true, 0, "up:x", n = 4 }, r)
    end)

    it("closes instead of pooling with unread input", function ()
      local up = upstream{ tcp = true }
      local r = ask(runner(model, tcp_url(up)), [[
        local c = assert(luasrv.connect(URL))
        c:write("x\ny\n")
        c:read(3)
        luasrv.sleep(0.1)
        c:read(1) --[=[ "up:y" is there now, unread ]=]
        local ok, err = c:setkeepalive()
        return ok, err, luasrv.connect(URL):getreusedtimes()
      ]])
      assert.same({ nil, "unread input", 0, n = 3 }, r)
    end)

    it("closes idle connections after idle_secs", function ()
      local up = upstream{ tcp = true }
      local r = ask(runner(model, tcp_url(up)), [[
        local c = assert(luasrv.connect(URL))
        assert(c:setkeepalive(0.1))
        luasrv.sleep(0.3)
        return luasrv.connect(URL):getreusedtimes()
      ]])
      assert.same({ 0, n = 1 }, r)
    end)

    it("keeps at most pool_size idle connections per key", function ()
      local up = upstream{ tcp = true }
      local r = ask(runner(model, tcp_url(up)), [[
        local a, b = luasrv.connect(URL), luasrv.connect(URL)
        a:setkeepalive(60, 1)
        b:setkeepalive(60, 1)
        local x, y = luasrv.connect(URL), luasrv.connect(URL)
        return x:getreusedtimes(), y:getreusedtimes()
      ]])
      assert.same({ 1, 0, n = 2 }, r)
    end)

    it("refuses a request's own connection", function ()
      local r = ask(runner(model, "x"), "return pcall(req.setkeepalive, req)")
      assert.is_false(r[1])
      assert.is_truthy(r[2]:find("luasrv.connect", 1, true), r[2])
    end)
  end)
end)


describe("model event", function ()
  it("serves other clients while a handler waits on a slow upstream",
     function ()
    local up = upstream{ tcp = true }
    local srv = runner("event", tcp_url(up))
    local slow = srv:connect()
    slow:send([[local c = luasrv.connect(URL) c:write("slow\n") return c:read("l")]]
              .. "\n")
    T.sleep(0.1)
    local t0 = T.now()
    assert.same({ 42, n = 1 }, ask(srv, "return 42"))
    assert.is_true(T.now() - t0 < 0.5 * H.scale)
    assert.same({ "up:slow", n = 1 }, H.unser(slow:receive("l")))
  end)

  it("serves other clients while a name is looked up", function ()
    local up = upstream{ tcp = true }
    local srv = runner("event", "tcp://localhost:" .. up.tcp.port)
    local t0 = T.now()
    for _ = 1, 5 do
      assert.same({ "up:hello", "up:againNL", n = 2 }, ask(srv, ROUNDTRIP))
    end
    assert.is_true(T.now() - t0 < 2 * H.scale)
  end)
end)
