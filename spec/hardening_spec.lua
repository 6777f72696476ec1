-- Hardening (issue 5): limits that keep one bad request or client from
-- hurting the others: --memory-limit, --allow/--deny, bad option values.
local H = require "helper"
local T = H.T

local function ask (srv, line, which)
  local c = srv:connect(which)
  c:settimeout(5 * H.scale)
  c:send(line .. "\n")
  local r, err = c:receive()
  c:close()
  return r, err
end


H.for_models(function (model)

  it("--memory-limit: a request that grows a huge table fails with 'not "
     .. "enough memory'; the next request is served", function ()
    local srv = H.start{ model = model, args = { "--memory-limit", "16m" },
      source = [[
return {
  handle = function (req)
    if req:read("l") == "big" then
      local t = {}
      for i = 1, 1e8 do t[i] = ("x"):rep(64) .. i end
    end
    req:write("fine\n")
  end,
  handle_error = function (req, err)
    req:write("error: ", err:match("^[^\n]*"), "\n")
  end,
}]] }
    assert.equals("error: not enough memory", ask(srv, "big"))
    assert.equals("fine", ask(srv, "small"))
    assert.equals("error: not enough memory", ask(srv, "big"))
    assert.equals("fine", ask(srv, "small"))
    assert.is_true(srv:alive())
  end)

  it("--deny: a refused client is closed before any Lua runs, and logged",
     function ()
    local srv = H.start{ model = model, args = { "--deny", "127.0.0.0/8" },
      source = [[
local luasrv = require "luasrv"
return {
  verify_request = function () luasrv.log("lua ran"); return true end,
  handle = function (req) req:write("served\n") end,
}]] }
    local c = srv:connect()
    c:settimeout(3 * H.scale)
    c:send("x\n")
    assert.is_nil((c:receive()))
    assert.truthy(srv:wait_stderr("refused (--allow/--deny) a client from "
                                  .. "127.0.0.1:", 2, true))
    assert.is_nil(srv:stderr():find("lua ran", 1, true))
  end)

  it("--allow ADDR --deny all: the allowed client is served; IPv6 refused",
     function ()
    local srv = H.start{ model = model, tcp = true, tcp6 = true,
      args = { "--allow", "127.0.0.1", "--deny", "all" },
      source = [[return { handle = function (req) req:write("served\n") end }]] }
    assert.equals("served", ask(srv, "x", "tcp"))
    local r, err = ask(srv, "x", "tcp6")
    assert.is_nil(r, err)
    assert.truthy(srv:wait_stderr("a client from [::1]:", 2, true))
  end)

  it("--deny ::ffff:127.0.0.2 refuses the IPv4 client 127.0.0.2 (a mapped "
     .. "rule is an IPv4 rule)", function ()
    local socket = require "socket"
    local srv = H.start{ model = model, args = { "--deny", "::ffff:127.0.0.2" },
      source = [[return { handle = function (req) req:write("served\n") end }]] }
    local function from (ip)
      local c = assert(socket.tcp())
      assert(c:bind(ip, 0))
      c:settimeout(3 * H.scale)
      assert(c:connect("127.0.0.1", srv.tcp.port))
      c:send("x\n")
      local r = c:receive()
      c:close()
      return r
    end
    assert.is_nil(from("127.0.0.2"))
    assert.truthy(srv:wait_stderr("refused (--allow/--deny) a client from "
                                  .. "127.0.0.2:", 2, true))
    assert.equals("served", from("127.0.0.1"))
  end)

  it("--deny on UDP drops the datagram; --allow serves it", function ()
    local src = [[return { handle = function (req) req:write("pong") end }]]
    local srv = H.start{ model = model, udp = true, source = src,
                         args = { "--deny", "127.0.0.1/32" } }
    local c = srv:connect("udp")
    c:settimeout(0.5)
    c:send("ping")
    assert.is_nil((c:receive()))
    srv:stop()
    srv = H.start{ model = model, udp = true, source = src,
                   args = { "--allow", "127.0.0.1/32" } }
    c = srv:connect("udp")
    c:settimeout(3 * H.scale)
    c:send("ping")
    assert.equals("pong", c:receive())
  end)

end)


-- Descriptor exhaustion: the event and thread models hold every client's
-- descriptor in the worker (sync serves one at a time, fork hands them to
-- children), so they are the ones that can run out.
for _, model in ipairs(H.models) do
  if model == "event" or model == "thread" then
    describe("model " .. model, function ()
      it("out of descriptors: turns clients away without spinning, logs at "
         .. "most once a second, serves again when load drops", function ()
        local dir = H.tmpdir()
        local wrapper = dir .. "/luasrv-ulimit"
        local f = assert(io.open(wrapper, "w"))
        f:write("#!/bin/sh\nulimit -n 64\nexec '", T.bin, "' \"$@\"\n")
        f:close()
        os.execute("chmod +x '" .. wrapper .. "'")
        local bin = T.bin
        T.bin = wrapper
        local ok, srv = pcall(H.start, { model = model,
          source = [[return { handle = function (req)
            for line in req:lines() do req:write(line, "\n") end end }]] })
        T.bin = bin
        assert(ok, srv)
        local held, t0 = {}, T.now()
        for i = 1, 200 do
          local c = srv:connect()
          c:settimeout(2 * H.scale)
          held[i] = c
        end
        T.sleep(1.2)
        local err = srv:stderr()
        local lines = H.count(err, "out of file descriptors", true)
        assert.is_true(lines >= 1, err)
        assert.is_true(lines <= (T.now() - t0) + 1.5, err)
        -- no spinning: little CPU over a second of exhaustion
        local function cpu ()
          local total = 0
          local p = io.popen("cat /proc/" .. srv.pid .. "/task/*/stat "
            .. "/proc/[0-9]*/task/*/stat 2>/dev/null")
          for line in p:lines() do
            local pid, ppid, ut, st = line:match(
              "^(%d+) %(.*%) %a (%d+)" .. (" %S+"):rep(9) .. " (%d+) (%d+)")
            if pid and (tonumber(pid) == srv.pid or tonumber(ppid) == srv.pid)
            then total = total + ut + st end
          end
          p:close()
          return total
        end
        local before = cpu()
        T.sleep(1)
        assert.is_true(cpu() - before < 50, "ticks: " .. (cpu() - before))
        assert.is_true(srv:alive())
        for _, c in ipairs(held) do c:close() end
        local served
        local deadline = T.now() + 5 * H.scale
        repeat
          local r = ask(srv, "again")
          served = r == "again"
          if not served then T.sleep(0.1) end
        until served or T.now() > deadline
        assert.is_true(served)
      end)
    end)
  end
end


describe("option values", function ()

  local bad = {
    { "--memory-limit", "lots" }, { "--memory-limit", "0" },
    { "--memory-limit", "12q" }, { "--allow", "10.0.0.0/99" },
    { "--deny", "example.com" }, { "--deny", "::ffff:0:0/64" },
  }
  for _, args in ipairs(bad) do
    it("refuses " .. table.concat(args, " ") .. " with usage (exit 2)",
       function ()
      local code, _, err = T.run{ H.fixture("echo.lua"), "--tcp",
                                  "127.0.0.1:0", args[1], args[2] }
      assert.equals(2, code)
      assert.truthy(err:find("usage: luasrv", 1, true))
      assert.truthy(err:find(args[2], 1, true))
    end)
  end

  it("accepts --memory-limit with k, m and g suffixes", function ()
    for _, v in ipairs { "900000", "512k", "64M", "1g" } do
      local code, _, err = T.run{ "--check", H.fixture("echo.lua"),
                                  "--memory-limit", v }
      assert.equals(0, code, err)
    end
  end)

end)


-- Slow clients: many connections that trickle one byte a second hold
-- neither the worker nor a normal client up, and each is closed when its
-- read passes --timeout. The event model takes 1,000; thread and fork as
-- many as their limits allow (sync serves one connection at a time).
local slow_counts = { event = 1000, thread = 100, fork = 50 }

local function fd_limit ()
  local p = io.popen("sh -c 'ulimit -n'")
  local n = tonumber(p:read("l")) or 1024
  p:close()
  return n
end

for _, model in ipairs(H.models) do
  local n = slow_counts[model]
  if n then
    n = math.min(n, fd_limit() - 100)
    describe("model " .. model, function ()
      it(("%d clients trickling a byte a second: a normal client is served "
          .. "at once, the slow ones are cut at --timeout"):format(n),
         function ()
        local srv = H.start{ model = model, args = {
            "--timeout", "2", "--max-threads", "200", "--max-children", "100",
          }, source = [[return { handle = function (req)
            local line, err = req:read("l")
            req:write(line or err, "\n")
          end }]] }
        local slow = {}
        for i = 1, n do
          local c = srv:connect()
          c:settimeout(0)
          slow[i] = c
        end
        -- a second of trickling, then a normal client among them
        local t0 = T.now()
        for _ = 1, 2 do
          for _, c in ipairs(slow) do c.sock:send("x") end
          T.sleep(0.5)
        end
        local dt, reply = H.elapsed(function ()
          local c = srv:connect()
          c:settimeout(5 * H.scale)
          c:send("hello\n")
          return c:receive()
        end)
        assert.equals("hello", reply)
        assert.is_true(dt < 1.0 * H.scale, "normal client took " .. dt .. " s")
        -- keep trickling past the timeout: each slow read still times out
        while T.now() - t0 < 2.5 do
          for _, c in ipairs(slow) do c.sock:send("x") end
          T.sleep(0.5)
        end
        local cut = 0
        local deadline = T.now() + 3 * H.scale
        for _, c in ipairs(slow) do
          c:settimeout(math.max(0.01, deadline - T.now()))
          local r = c:receive()
          if r == "timeout" then cut = cut + 1 end
        end
        assert.equals(n, cut)
        assert.is_true(srv:alive())
      end)
    end)
  end
end


H.for_models(function (model)
  it("--cpu-limit: a handler that loops forever gets 'cpu limit exceeded' "
     .. "through handle_error; other requests are served", function ()
    local srv = H.start{ model = model, args = { "--cpu-limit", "0.3" },
      source = [[
return {
  handle = function (req)
    if req:read("l") == "spin" then while true do end end
    req:write("fine\n")
  end,
  handle_error = function (req, err)
    req:write("error: ", err:match("cpu limit exceeded") or err, "\n")
  end,
}]] }
    local spinner = srv:connect()
    spinner:settimeout(5 * H.scale)
    spinner:send("spin\n")
    if model ~= "sync" then  -- the others serve while one spins
      assert.equals("fine", ask(srv, "hello"))
    end
    assert.equals("error: cpu limit exceeded", spinner:receive())
    assert.equals("fine", ask(srv, "hello"))
  end)
end)


for _, model in ipairs(H.models) do
  -- sync serves one connection at a time: the others wait unaccepted
  if model ~= "sync" then
    describe("model " .. model, function ()
      it("--max-per-source 2: a third connection from one address is closed "
         .. "and logged; one more fits once one ends", function ()
        local srv = H.start{ model = model, args = { "--max-per-source", "2" },
          source = [[return { handle = function (req)
            for line in req:lines() do req:write(line, "\n") end end }]] }
        local a, b = srv:connect(), srv:connect()
        for _, c in ipairs { a, b } do
          c:settimeout(3 * H.scale)
          c:send("hi\n")
          assert.equals("hi", c:receive())
        end
        local third = srv:connect()
        third:settimeout(3 * H.scale)
        third:send("hi\n")
        assert.is_nil((third:receive()))
        assert.truthy(srv:wait_stderr("refused (--max-per-source) a client "
                                      .. "from 127.0.0.1:", 2, true))
        a:close()
        local served
        local deadline = T.now() + 3 * H.scale
        repeat  -- the worker learns of the close when the handler ends
          local r = ask(srv, "again")
          served = r == "again"
          if not served then T.sleep(0.05) end
        until served or T.now() > deadline
        assert.is_true(served)
        assert.equals("still", (function ()
          b:send("still\n")
          return b:receive()
        end)())
      end)
    end)
  end
end


H.for_models(function (model)
  it("a datagram from an unbound Unix socket: client_address.path is \"\"",
     function ()
    local srv = H.start{ model = model, unixgram = true, source = [[
local luasrv = require "luasrv"
return { handle = function (req)
  luasrv.log("path", ("%q"):format(req.client_address.path),
             tostring(req.client_address))
end }]] }
    local c = srv:connect("unixgram", { bind = false })
    c:send("hello")
    assert.truthy(srv:wait_stderr('luasrv: path "" unix:\n', 3 * H.scale, true),
                  srv:stderr())
  end)
end)
