-- luasrv.timer (doc/api.md): functions that run later, outside any
-- request, in the worker (or thread-model state) that made them. What the
-- timers see is written to a shared dictionary, which every model's
-- requests can read (a fork model's requests run in children).
-- Loopback only, every wait bounded; times are checked only against
-- generous sanity bounds.
local H = require "helper"
local socket = require "socket"

local SHARED = { "--shared", "t:1m" }

-- a handler whose init is INIT; a request runs a line of Lua with
-- d = luasrv.shared.t and replies ser(its results)
local function script (init)
  return H.SER .. [[
local luasrv = require "luasrv"
local d = luasrv.shared.t
return {
  init = function ()
    ]] .. init .. [[
  end,
  handle = function (req)
    local body = req:read("l")
    local f = assert(load("local req, luasrv, d = ... " .. body))
    req:write(ser(f(req, luasrv, d)), "\n")
  end,
}
]]
end

local function start (model, init, args, env)
  local a = { table.unpack(SHARED) }
  for _, v in ipairs(args or {}) do a[#a + 1] = v end
  return H.start{ model = model, source = script(init), args = a, env = env }
end

local function get (srv, key)
  return H.ask(srv, ("return d:get(%q)"):format(key))[1]
end


H.for_models(function (model)
  describe("luasrv.timer", function ()
    it("runs a function later with premature = false and its arguments",
       function ()
      local srv = start(model, [[
        local t0 = luasrv.now()
        assert(luasrv.timer.at(0.2, function (premature, a, b)
          d:set("late", luasrv.now() - t0)
          d:set("args", tostring(premature) .. " " .. a .. " " .. b)
        end, "x", 42))
        d:set("count", table.concat({ luasrv.timer.count() }, " "))]])
      assert.equal("0 1", get(srv, "count"))
      assert(H.eventually(function () return get(srv, "late") end, 3))
      local late = get(srv, "late")
      assert.equal("false x 42", get(srv, "args"))
      assert.is_true(late >= 0.19 and late < 3, tostring(late))
      assert.same({ 0, 0, n = 2 }, H.ask(srv, "return luasrv.timer.count()"))
    end)

    it("may sleep, and keeps the shared dictionaries", function ()
      local srv = start(model, [[
        luasrv.timer.at(0, function ()
          luasrv.sleep(0.05)
          d:incr("n", 1, 0)
        end)]])
      -- (thread: init, and so the timer, runs in each handler state)
      assert(H.eventually(function () return (get(srv, "n") or 0) >= 1 end, 3))
    end)

    it("may connect, as a request does", function ()
      local up = H.start{ model = "event", source = [[
        return { handle = function (req)
          req:write((req:read("l") or ""):upper(), "\n") end }]] }
      local l = up.listeners[1]
      local srv = start(model, [[
        luasrv.timer.at(0, function ()
          local c = assert(luasrv.connect(os.getenv("UPSTREAM"), { timeout = 2 }))
          c:write("from a timer\n")
          d:set("reply", c:read("l"))
          c:close()
        end)]], nil, { UPSTREAM = ("tcp://%s:%d"):format(l.host, l.port) })
      assert(H.eventually(function () return get(srv, "reply") end, 3))
      assert.equal("FROM A TIMER", get(srv, "reply"))
    end)

    it("fires on time while a request runs elsewhere", function ()
      -- sync serves one request at a time, timers between them; thread
      -- timers run on their state's thread when it is idle
      if model == "sync" or model == "thread" then return end
      local srv = start(model, [[
        local t0 = luasrv.now()
        luasrv.timer.at(0.3, function () d:set("late", luasrv.now() - t0) end)]])
      local long = srv:connect()
      long:send("luasrv.sleep(1.5) return 1\n")
      assert(H.eventually(function () return get(srv, "late") end, 3))
      local late = get(srv, "late")
      assert.is_true(late >= 0.29 and late < 1.4, tostring(late))
      assert.same({ 1, n = 1 }, H.unser(long:receive()))
    end)

    it("keeps the period of 'every' under load (drift over 100 ticks)",
       function ()
      local srv = start(model, [[
        local t0, n = nil, 0
        luasrv.timer.every(0.01, function ()
          n = n + 1
          if n == 1 then t0 = luasrv.now() end
          if n == 101 then d:set("span", luasrv.now() - t0) end
        end)]])
      local deadline = socket.gettime() + 10 * H.scale
      local served = 0
      while not get(srv, "span") and socket.gettime() < deadline do
        H.ask(srv, "local s = 0 for i = 1, 20000 do s = s + i end return s")
        served = served + 1
      end
      local span = get(srv, "span")
      assert.is_number(span)
      io.stderr:write(("\n[timer drift, %s] 100 ticks of 10 ms took %.1f ms " ..
        "(drift %+.2f ms/tick) while serving %d requests\n")
        :format(model, span * 1000, (span - 1) * 10, served))
      assert.is_true(span >= 0.99 and span < 5, tostring(span))
    end)

    if model == "event" then
      it("skips an 'every' tick while its last run still runs", function ()
        local srv = start(model, [[
          luasrv.timer.every(0.02, function ()
            local now = d:incr("running", 1, 0)
            d:set("most", math.max(now, d:get("most") or 0))
            d:incr("runs", 1, 0)
            luasrv.sleep(0.07)
            d:incr("running", -1)
          end)]])
        assert(H.eventually(function () return (get(srv, "runs") or 0) >= 4 end, 3))
        assert.equal(1, get(srv, "most"))
      end)
    end

    it("can be cancelled before it runs, and from within its own run",
       function ()
      local srv = start(model, [[
        local h = luasrv.timer.at(0.05, function () d:set("ran", true) end)
        d:set("c1", h:cancel())
        d:set("c2", select(2, h:cancel()))
        local e
        e = luasrv.timer.every(0.02, function ()
          d:incr("every", 1, 0)
          d:set("c3", e:cancel())
        end)]])
      assert(H.eventually(function () return get(srv, "every") end, 3))
      socket.sleep(0.2)
      assert.same({ true, "expired", nil, 1, true, n = 5 }, H.ask(srv, [[
        return d:get("c1"), d:get("c2"), d:get("ran"), d:get("every"),
               d:get("c3")]]))
    end)

    it("logs an error with its traceback; 'every' keeps its schedule",
       function ()
      local srv = start(model, [[
        luasrv.timer.every(0.02, function ()
          local n = d:incr("n", 1, 0)
          if n == 2 then error("tick two failed") end
        end)]])
      assert(H.eventually(function () return (get(srv, "n") or 0) >= 5 end, 3))
      assert.is_true(srv:wait_stderr("error in a timer: .*tick two failed", 2))
      assert.is_true(srv:wait_stderr("stack traceback", 2, true))
    end)

    it("refuses past --max-timers: nil, 'too many timers'", function ()
      local srv = start(model, [[
        local r = {}
        for i = 1, 4 do
          local h, err = luasrv.timer.at(30, function () end)
          r[i] = h and "ok" or err
        end
        d:set("made", table.concat(r, ","))]], { "--max-timers", "3" })
      assert.equal("ok,ok,ok,too many timers", get(srv, "made"))
    end)

    for _, sig in ipairs{ "TERM", "HUP" } do
      it("runs pending timers once with premature = true on SIG" .. sig,
         function ()
        local srv = start(model, [[
          luasrv.timer.at(60, function (premature)
            io.stderr:write("premature=", tostring(premature), "\n")
            local h, err = luasrv.timer.at(0, function () end)
            io.stderr:write("then: ", tostring(err), "\n")
          end)]], sig == "HUP" and { "--workers", "1" } or nil)
        assert.is_true(srv:signal(sig))
        assert.is_true(srv:wait_stderr("premature=true", 5, true))
        assert.is_true(srv:wait_stderr("then: process exiting", 5, true))
        if sig == "HUP" then  -- the new generation has a timer of its own
          assert.is_true(srv:wait_stderr("reloaded", 5, true))
        end
      end)
    end

    if model == "event" then
      it("runs as a task on the loop: spawns and waits for light threads",
         function ()
        local srv = start(model, [[
          luasrv.timer.at(0, function ()
            local th = luasrv.spawn(function () luasrv.sleep(0.02) return 7 end)
            d:set("got", select(2, luasrv.wait(th)))
          end)]])
        assert(H.eventually(function () return get(srv, "got") == 7 end, 3))
      end)

      it("can be made from a request, and wakes a waiting request", function ()
        local srv = start(model, "SEM = luasrv.semaphore.new()")
        local r = H.ask(srv, [[
          local t0 = luasrv.now()
          luasrv.timer.at(0.1, function () SEM:post() end)
          return SEM:wait(3), luasrv.now() - t0 >= 0.09]])
        assert.same({ true, true, n = 2 }, r)
      end)
    end

    if model == "fork" then
      it("cannot be made in a request (it runs in a child)", function ()
        local srv = start(model, "")
        assert.same({ nil, "no timers in a fork model request (make them in init)",
                      n = 2 }, H.ask(srv, "return luasrv.timer.at(0, print)"))
      end)

      it("made in init cannot be cancelled from a request (a child's copy): "
         .. "it says so and the worker's timer still runs", function ()
        local srv = start(model, [[
          TM = luasrv.timer.at(0.5, function ()
            luasrv.shared.t:set("ran", true)
          end)]])
        assert.same({ nil, "the timer runs in the worker: a fork model "
                      .. "request cannot cancel it", n = 2 },
                    H.ask(srv, "return TM:cancel()"))
        assert.same({ "luasrv.timer (the worker's)", n = 1 },
                    H.ask(srv, "return (tostring(TM):match('^[^:]+'))"))
        assert(H.eventually(function () return get(srv, "ran") == true end, 3))
        assert.is_nil(srv:stderr():find("signal", 1, true), srv:stderr())
      end)
    end
  end)
end)
