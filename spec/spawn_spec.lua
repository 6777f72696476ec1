-- Light threads (docs-spawn.md): luasrv.spawn, wait, kill; errors; the
-- request waiting for its threads; in the event model, threads that run at
-- the same time as the request. Loopback only, every wait bounded.
local H = require "helper"

-- H.RUNNER: the client sends a line of Lua, the body of
-- function(req, luasrv); its results are written back (H.ask)
local RUNNER = H.RUNNER
local ask = H.ask

local function runner (model)
  return H.start{ model = model, source = RUNNER }
end


H.for_models(function (model)
  describe("luasrv.spawn", function ()
    it("runs a function with arguments; wait returns true and its results",
       function ()
      local r = ask(runner(model), [[
        local t = luasrv.spawn(function (a, b) return a + b, "x", nil end, 2, 3)
        return luasrv.wait(t)]])
      assert.same({ true, 5, "x", nil, n = 4 }, r)
    end)

    it("returns a thread's error from wait as false, msg", function ()
      local r = ask(runner(model), [[
        local t = luasrv.spawn(function () error("boom") end)
        local ok, err = luasrv.wait(t)
        return ok, tostring(err):match("boom") ~= nil]])
      assert.same({ false, true, n = 2 }, r)
    end)

    it("waits for a thread only once", function ()
      local r = ask(runner(model), [[
        local t = luasrv.spawn(function () return 1 end)
        luasrv.wait(t)
        return luasrv.wait(t)]])
      assert.same({ false, "already waited or killed", n = 2 }, r)
    end)

    it("kills nothing that has ended: nil, 'already terminated'", function ()
      local r = ask(runner(model), [[
        local t = luasrv.spawn(function () return 1 end)
        luasrv.sleep(0.05)
        local a, b = luasrv.kill(t)
        return a, b, luasrv.kill(t)]])
      assert.same({ nil, "already terminated", nil,
                    "already waited or killed", n = 4 }, r)
    end)

    it("refuses what is not a thread, and a thread of another request",
       function ()
      local srv = H.start{ model = model, source = H.SER .. [[
        local luasrv = require "luasrv"
        local saved
        return { handle = function (req)
          local line = req:read("l")
          if line == "save" then
            saved = luasrv.spawn(function () return 1 end)
            luasrv.wait(saved)
            req:write(ser(true), "\n")
          else
            local ok1, e1 = pcall(luasrv.wait, {})
            local ok2, e2 = pcall(luasrv.kill, saved)
            -- (fork: saved was lost with the child that set it)
            local want = saved and "not a thread of this request" or
                         "luasrv.thread expected"
            req:write(ser(ok1, ok2, tostring(e2):match(want) ~= nil), "\n")
          end
        end }]] }
      local c = srv:connect()
      c:send("save\n")
      assert.same({ true, n = 1 }, H.unser(c:receive()))
      c:close()
      c = srv:connect()
      c:send("other\n")
      assert.same({ false, false, true, n = 3 }, H.unser(c:receive()))
    end)

    it("ends the request only after its threads end", function ()
      local srv = H.start{ model = model, source = [[
        local luasrv = require "luasrv"
        return { handle = function (req)
          luasrv.spawn(function ()
            luasrv.sleep(0.2)
            req:write("late\n")
          end)
          req:write("early\n")
          req:flush()
        end }]] }
      local c = srv:connect()
      local t0 = H.T.now()
      local all = c:receive("a")
      local secs = H.T.now() - t0
      if model == "event" then
        assert.equals("early\nlate\n", all)
      else  -- the thread ran to its end inside spawn
        assert.equals("late\nearly\n", all)
      end
      assert.is_true(secs >= 0.18, "took " .. secs)
    end)

    it("logs an error nobody waited for, with a traceback", function ()
      local srv = runner(model)
      local r = ask(srv, [[
        luasrv.spawn(function () error("lost thread error") end)
        return 1]])
      assert.same({ 1, n = 1 }, r)
      assert.is_true(srv:wait_stderr("error in a thread of the request: " ..
        "[^\n]*lost thread error\nstack traceback:", 3))
      -- the server goes on
      assert.same({ 2, n = 1 }, ask(srv, "return 2"))
    end)

    it("does not log an error that wait returned", function ()
      local srv = runner(model)
      ask(srv, [[
        local t = luasrv.spawn(function () error("collected error") end)
        return luasrv.wait(t)]])
      ask(srv, "return 1")
      assert.is_nil(srv:stderr():find("collected error", 1, true))
    end)
  end)
end)


describe("luasrv.spawn in the event model", function ()
  it("runs threads at the same time: two 0.3 s sleeps take 0.3 s",
     function ()
    local srv = runner("event")
    local c = srv:connect()
    local t0 = H.T.now()
    c:send([[local a = luasrv.spawn(luasrv.sleep, 0.3) ]] ..
           [[local b = luasrv.spawn(luasrv.sleep, 0.3) ]] ..
           [[return luasrv.wait(a), luasrv.wait(b)]] .. "\n")
    local r = H.unser(c:receive())
    local secs = H.T.now() - t0
    assert.same({ true, true, n = 2 }, r)
    assert.is_true(secs >= 0.28 and secs < 0.3 + 0.2 * H.scale,
                   "took " .. secs)
  end)

  it("wait returns when the first of several threads ends", function ()
    local srv = runner("event")
    local t0 = H.T.now()
    local r = ask(srv, [[
      local slow = luasrv.spawn(function () luasrv.sleep(0.5) return "slow" end)
      local fast = luasrv.spawn(function () luasrv.sleep(0.1) return "fast" end)
      local a = table.pack(luasrv.wait(slow, fast))
      local b = table.pack(luasrv.wait(slow, fast))
      return a[2], b[2] ]])
    local secs = H.T.now() - t0
    assert.same({ "fast", "slow", n = 2 }, r)
    assert.is_true(secs >= 0.48 and secs < 0.5 + 0.3 * H.scale, "took " .. secs)
  end)

  it("spawn runs the thread at once, until it first waits", function ()
    local r = ask(runner("event"), [[
      local log = {}
      local t = luasrv.spawn(function ()
        log[#log + 1] = "thread start"
        luasrv.sleep(0.05)
        log[#log + 1] = "thread end"
      end)
      log[#log + 1] = "after spawn"
      luasrv.wait(t)
      return table.concat(log, ",")]])
    assert.same({ "thread start,after spawn,thread end", n = 1 }, r)
  end)

  it("kills a waiting thread: it never resumes, the request ends at once",
     function ()
    local srv = runner("event")
    local t0 = H.T.now()
    local r = ask(srv, [[
      local done = false
      local t = luasrv.spawn(function () luasrv.sleep(5) done = true end)
      local k = table.pack(luasrv.kill(t))
      local w = table.pack(luasrv.wait(t))
      luasrv.sleep(0.1)
      return k[1], w[1], w[2], done, tostring(t):match("killed") ~= nil]])
    local secs = H.T.now() - t0
    assert.same({ true, false, "already waited or killed", false, true,
                  n = 5 }, r)
    assert.is_true(secs < 1 * H.scale, "took " .. secs)
  end)

  it("kills a thread waiting for input; closing wakes a reader", function ()
    local srv = H.start{ model = "event", source = H.SER .. [[
      local luasrv = require "luasrv"
      return { handle = function (req)
        local cmd = req:read("l")
        if cmd == "kill" then
          local t = luasrv.spawn(function () return req:read("l") end)
          req:write(ser(luasrv.kill(t)), "\n")
        else  -- a thread reads; the request closes under it
          local out
          local t = luasrv.spawn(function () return req:read("l") end)
          luasrv.sleep(0.1)
          local t0 = luasrv.now()
          req:flush()
          local sock = req
          sock:close()
          local r = table.pack(luasrv.wait(t))
          luasrv.log("reader got", tostring(r[1]), tostring(r[2]),
                     tostring(r[3]), string.format("%.2f", luasrv.now() - t0))
        end
      end }]], args = { "--timeout", "30" } }
    local c = srv:connect()
    c:send("kill\n")
    assert.same({ true, n = 1 }, H.unser(c:receive()))
    c:close()
    c = srv:connect()
    c:send("close\n")
    assert.is_true(srv:wait_stderr("reader got true nil closed 0.0", 3),
                   srv:stderr())
  end)

  it("lets a thread spawn threads, all joined by the request", function ()
    local r = ask(runner("event"), [[
      local n = 0
      local t = luasrv.spawn(function ()
        for i = 1, 3 do
          luasrv.spawn(function () luasrv.sleep(0.05 * i) n = n + 1 end)
        end
        return "spawned"
      end)
      local _, what = luasrv.wait(t)
      return what, n]])
    assert.same({ "spawned", 0, n = 2 }, r)
  end)

  it("serves other connections while a request waits for its threads",
     function ()
    local srv = H.start{ model = "event", source = [[
      local luasrv = require "luasrv"
      return { handle = function (req)
        local line = req:read("l")
        if line == "slow" then
          luasrv.wait(luasrv.spawn(luasrv.sleep, 1))
        end
        req:write(line, "\n")
      end }]] }
    local slow = srv:connect()
    slow:send("slow\n")
    local t0 = H.T.now()
    local c = srv:connect()
    c:send("quick\n")
    assert.equals("quick", c:receive())
    assert.is_true(H.T.now() - t0 < 0.5 * H.scale)
    assert.equals("slow", slow:receive())
  end)

  it("refuses a thread waiting for itself", function ()
    local r = ask(runner("event"), [[
      local me
      me = luasrv.spawn(function ()
        luasrv.sleep(0.01)
        return pcall(luasrv.wait, me)
      end)
      local _, ok, err = luasrv.wait(me)
      return ok, tostring(err):match("cannot wait for itself") ~= nil]])
    assert.same({ false, true, n = 2 }, r)
  end)
end)
