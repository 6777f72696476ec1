-- luasrv.semaphore and luasrv.queue (doc/api.md): waiting for another
-- task of the same state. In the event model requests and light threads
-- wait for each other; in the blocking models nobody else can run during
-- a wait, so it times out (or, with no timeout, fails at once).
-- Loopback only, every wait bounded.
local H = require "helper"
local socket = require "socket"

local ask = H.ask

-- a RUNNER whose requests share one semaphore (SEM) and one queue (Q, of
-- capacity 2), as globals of the state
local SHARED = H.SER .. [[
local luasrv = require "luasrv"
SEM = luasrv.semaphore.new()
Q = luasrv.queue.new(2)
ORDER = {}
return { handle = function (req)
  local body = req:read("l")
  local f = assert(load("local req, luasrv = ... " .. body))
  req:write(ser(f(req, luasrv)), "\n")
end }
]]


H.for_models(function (model)
  local event = model == "event"

  describe("luasrv.semaphore", function ()
    it("takes what was posted, counts, and times out when empty", function ()
      local srv = H.start{ model = model, source = SHARED }
      local r = ask(srv, [[
        local s = luasrv.semaphore.new(1)
        local a = s:wait()
        local c0 = s:count()
        s:post(2)
        local t0 = luasrv.now()
        local b, d = s:wait(0), s:wait(0)
        local e, why = s:wait(0.2)
        return a, c0, b, d, e, why, luasrv.now() - t0 >= 0.15]])
      assert.same({ true, 0, true, true, nil, "timeout", true, n = 7 }, r)
    end)

    it("refuses a negative count or timeout", function ()
      local r = ask(H.start{ model = model, source = SHARED }, [[
        local s = luasrv.semaphore.new()
        return pcall(luasrv.semaphore.new, -1), pcall(s.wait, s, -1),
               pcall(s.post, s, -2)]])
      assert.equal(false, r[1])
      assert.equal(false, r[2])
      assert.equal(false, r[3])
    end)

    if not event then
      it("fails at once a wait nobody can end: nil, 'deadlock'", function ()
        local r = ask(H.start{ model = model, source = SHARED }, [[
          local s = luasrv.semaphore.new()
          local t0 = luasrv.now()
          local ok, err = s:wait()
          local th = luasrv.spawn(function () return s:wait() end)
          local _, tok, terr = luasrv.wait(th)
          return ok, err, true, tok, terr, luasrv.now() - t0 < 1]])
        assert.same({ nil, "deadlock", true, nil, "deadlock", true, n = 6 }, r)
      end)
    end

    if event then
      it("wakes its waiters first come, first served", function ()
        local r = ask(H.start{ model = model, source = SHARED }, [[
          local s, order, th = luasrv.semaphore.new(), {}, {}
          for i = 1, 5 do
            th[i] = luasrv.spawn(function ()
              assert(s:wait(5)); order[#order + 1] = i end)
          end
          local waiting = s:count()
          s:post(2)
          luasrv.sleep(0.05)
          s:post(3)
          for i = 1, 5 do luasrv.wait(th[i]) end
          return waiting, table.concat(order, ","), s:count()]])
        assert.same({ -5, "1,2,3,4,5", 0, n = 3 }, r)
      end)

      it("wakes requests in the order they came, across connections",
         function ()
        local srv = H.start{ model = model, source = SHARED }
        local cs = {}
        for i = 1, 4 do
          cs[i] = srv:connect()
          cs[i]:send(("assert(SEM:wait(5)) ORDER[#ORDER + 1] = %d return %d\n")
                     :format(i, i))
          assert(H.eventually(function ()
            return ask(srv, "return SEM:count()")[1] == -i end, 2))
        end
        ask(srv, "SEM:post(4)")
        for i = 1, 4 do assert.same({ i, n = 1 }, H.unser(cs[i]:receive())) end
        assert.same({ "1,2,3,4", n = 1 },
                    ask(srv, "return table.concat(ORDER, ',')"))
      end)

      it("drops a waiter whose client vanished; its unit goes to the next",
         function ()
        local srv = H.start{ model = model, source = SHARED }
        local gone = srv:connect()
        gone:send("return SEM:wait(10)\n")
        assert(H.eventually(function ()
          return ask(srv, "return SEM:count()")[1] == -1 end, 2))
        gone.sock:setoption("linger", { on = true, timeout = 0 })
        gone:close()  -- a reset
        assert(H.eventually(function ()
          return ask(srv, "return SEM:count()")[1] == 0 end, 2))
        ask(srv, "SEM:post(1)")
        assert.same({ true, n = 1 }, ask(srv, "return SEM:wait(1)"))
      end)

      it("gives back a unit granted to a light thread killed before it ran",
         function ()
        local r = ask(H.start{ model = model, source = SHARED }, [[
          local s = luasrv.semaphore.new()
          local a = luasrv.spawn(function () return s:wait(5) end)
          local b = luasrv.spawn(function () return s:wait(5) end)
          s:post(1)
          luasrv.kill(a)
          return select(2, luasrv.wait(b)), s:count()]])
        assert.same({ true, 0, n = 2 }, r)
      end)

      it("lets a stop cut a request that waits for ever", function ()
        local srv = H.start{ model = model, source = SHARED,
                             args = { "--grace", "0.3" } }
        local c = srv:connect()
        c:send("return SEM:wait()\n")
        assert(H.eventually(function ()
          return ask(srv, "return SEM:count()")[1] == -1 end, 2))
        assert.is_true(srv:signal("TERM"))
        assert.is_true(srv:wait_stderr("cutting 1 request short", 5, true))
        assert.is_true(srv:wait(5) ~= nil)
      end)

      it("keeps a client that only shut its sending side down waiting",
         function ()
        local srv = H.start{ model = model, source = SHARED }
        local c = srv:connect()
        c:send("return SEM:wait(5)\n")
        c:shutdown("send")
        assert(H.eventually(function ()
          return ask(srv, "return SEM:count()")[1] == -1 end, 2))
        socket.sleep(0.1)
        assert.same({ -1, n = 1 }, ask(srv, "return SEM:count()"))
        ask(srv, "SEM:post(1)")
        assert.same({ true, n = 1 }, H.unser(c:receive()))
      end)
    end
  end)

  describe("luasrv.queue", function ()
    it("keeps order, counts, refuses nil, and pops after close", function ()
      local r = ask(H.start{ model = model, source = SHARED }, [[
        local q = luasrv.queue.new()
        for i = 1, 3 do q:push(i) end
        local n = q:len()
        local a = q:pop()
        q:close()
        local p, perr = q:push(4)
        local b, c = q:pop(), q:pop()
        local d, derr = q:pop()
        return n, a, b, c, p, perr, d, derr, pcall(q.push, q, nil)]])
      assert.same({ 3, 1, 2, 3, nil, "closed", nil, "closed", false },
                  { table.unpack(r, 1, 9) })
    end)

    it("times out a push when full and a pop when empty", function ()
      local r = ask(H.start{ model = model, source = SHARED }, [[
        local q = luasrv.queue.new(1)
        q:push("a")
        local p, perr = q:push("b", 0.1)
        local x = q:pop()
        local y, yerr = q:pop(0.1)
        return p, perr, x, y, yerr, q:len()]])
      assert.same({ nil, "timeout", "a", nil, "timeout", 0, n = 6 }, r)
    end)

    if not event then
      it("fails at once a pop nobody can end: nil, 'deadlock'", function ()
        local r = ask(H.start{ model = model, source = SHARED }, [[
          local q = luasrv.queue.new(1)
          local a, aerr = q:pop()
          q:push(1)
          return a, aerr, q:push(2)]])
        assert.same({ nil, "deadlock", nil, "deadlock", n = 4 }, r)
      end)
    end

    if event then
      it("makes a producer wait while the queue is full (backpressure)",
         function ()
        local r = ask(H.start{ model = model, source = SHARED }, [[
          local q, pushed = luasrv.queue.new(1), 0
          local th = luasrv.spawn(function ()
            for i = 1, 4 do assert(q:push(i, 5)); pushed = pushed + 1 end
          end)
          luasrv.sleep(0.1)
          local before = pushed
          local got = {}
          for _ = 1, 4 do got[#got + 1] = q:pop(5) end
          luasrv.wait(th)
          return before, table.concat(got, ","), pushed]])
        assert.same({ 1, "1,2,3,4", 4, n = 3 }, r)
      end)

      it("tells waiting poppers and pushers 'closed' on close", function ()
        local srv = H.start{ model = model, source = SHARED }
        local popper = srv:connect()
        popper:send("QQ = luasrv.queue.new() return QQ:pop(5)\n")
        assert(H.eventually(function () return ask(srv, "return QQ ~= nil")[1] end, 2))
        local r = ask(srv, [[
          local full = luasrv.queue.new(1)
          full:push(1)
          local th = luasrv.spawn(function () return full:push(2, 5) end)
          full:close()
          QQ:close()
          return luasrv.wait(th)]])
        assert.same({ true, nil, "closed", n = 3 }, r)
        assert.same({ nil, "closed", n = 2 }, H.unser(popper:receive()))
      end)

      it("passes values between requests through a shared queue", function ()
        local srv = H.start{ model = model, source = SHARED }
        local c = srv:connect()
        c:send("local t = {} for i = 1, 3 do t[i] = Q:pop(5) end " ..
               "return table.concat(t, ',')\n")
        for i = 1, 3 do ask(srv, ("assert(Q:push(%d, 5))"):format(i)) end
        assert.same({ "1,2,3", n = 1 }, H.unser(c:receive()))
      end)
    end
  end)
end)
