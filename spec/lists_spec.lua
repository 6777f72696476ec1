-- Lists in the shared dictionaries (luasrv.shared.NAME:lpush, rpush,
-- lpop, rpop, llen): the queue that crosses workers and processes.
-- Loopback only, every wait bounded.
local H = require "helper"

local SCRIPT = H.SER .. [[
local luasrv = require "luasrv"
local q = luasrv.shared.q
return { handle = function (req)
  for line in req:lines() do
    local cmd, arg = line:match("^(%S+) ?(.*)$")
    if cmd == "run" then
      local f = assert(load("local q = ... " .. arg))
      req:write(ser(f(q)), "\n")
    elseif cmd == "push" then
      req:write(ser(q:rpush("jobs", arg)), "\n")
    elseif cmd == "pop" then
      req:write(ser(q:lpop("jobs")), "\n")
    end
  end
end }
]]

local function start (model, workers)
  return H.start{ model = model, source = SCRIPT,
                  args = { "--shared", "q:4m", "--workers", workers or 1 } }
end

local function run (c, body)
  assert(c:send("run " .. body:gsub("\n", " ") .. "\n"))
  return H.unser(assert(c:receive()))
end


H.for_models(function (model)
  describe("shared dictionary lists", function ()
    it("push at either end, pop from either end, count", function ()
      local c = start(model):connect()
      assert.same({ 1, 2, 3, 3, n = 4 }, run(c, [[
        return q:rpush("l", "b"), q:lpush("l", 1), q:rpush("l", 2.5),
               q:llen("l")]]))
      assert.same({ 1, 2.5, "b", nil, 0, n = 5 },
                  run(c, [[return q:lpop("l"), q:rpop("l"), q:lpop("l"),
                                  q:lpop("l"), q:llen("l")]]))
    end)

    it("keeps lists and values apart: nil, 'value not a list'", function ()
      local c = start(model):connect()
      assert.same({ nil, "value not a list", nil, "value not a list",
                    nil, "value not a list", "x", n = 7 }, run(c, [[
        q:set("v", "x")
        local a, ae = q:lpush("v", 1)
        local b, be = q:rpop("v")
        local l, le = q:llen("v")
        return a, ae, b, be, l, le, q:get("v")]]))
      assert.same({ nil, "value is a list", false, n = 3 }, run(c, [[
        q:rpush("l", 1)
        local a, ae = q:get("l")
        return a, ae, (pcall(q.rpush, q, "l", nil))]]))
    end)

    it("counts a list in free_space and gives the room back", function ()
      local c = start(model):connect()
      local r = run(c, [[
        local before = q:free_space()
        for i = 1, 100 do q:rpush("big", string.rep("x", 1000)) end
        local full = q:free_space()
        while q:lpop("big") do end
        return before - full > 100000, q:free_space() == before]])
      assert.same({ true, true, n = 2 }, r)
    end)

    it("loses and duplicates nothing: 8 pushing, 2 popping, 2 workers",
       function ()
      -- (a connection is a request: sync serves one at a time per worker)
      local srv = start(model, 2)
      local N, pushers = 100, {}
      local got, count = {}, 0
      for i = 1, 8 do
        pushers[i] = srv:connect()
        local lines = {}
        for j = 1, N do lines[j] = ("push c%d-%d\n"):format(i, j) end
        assert(pushers[i]:send(table.concat(lines)))
        pushers[i]:shutdown("send")
      end
      local deadline = os.time() + 30 * H.scale
      while count < 8 * N and os.time() < deadline do
        for _ = 1, 2 do  -- two poppers, each a batch of 20 pops
          local c = srv:connect()
          assert(c:send(string.rep("pop\n", 20)))
          c:shutdown("send")
          for _ = 1, 20 do
            local v = H.unser(assert(c:receive()))[1]
            if v then
              assert.is_nil(got[v], "popped twice: " .. tostring(v))
              got[v] = true
              count = count + 1
            end
          end
          c:close()
        end
      end
      for i = 1, 8 do  -- every push was answered with the list's length
        for _ = 1, N do assert.is_number(H.unser(assert(pushers[i]:receive()))[1]) end
      end
      assert.equal(8 * N, count)
      for i = 1, 8 do for j = 1, N do assert.is_true(got[("c%d-%d"):format(i, j)]) end end
    end)
  end)
end)
