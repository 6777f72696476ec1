-- The concurrency models (SPEC §4) through the real binary: which
-- requests run at the same time, what a Lua state keeps between requests,
-- errors confined to their request, graceful stops with requests in
-- flight, the --max-children/--max-threads/--max-connections limits, and
-- no zombie processes. Runs under each model of $LUASRV_MODELS; what a
-- model is expected to do is in the tables below. Nothing here assumes
-- srv.pid is the process that runs the model: processes are looked for
-- among all its descendants.
local H = require "helper"
local T = H.T

-- requests run at the same time (sync: one after the other)
local CONCURRENT = { sync = false, fork = true, thread = true, event = true }

-- the option that limits concurrent requests, per model
local LIMIT_OPT = { fork = "--max-children", thread = "--max-threads",
                    event = "--max-connections" }

-- handler: reads the seconds to sleep, sleeps, replies "START END" on the
-- monotonic clock (CLOCK_MONOTONIC: comparable across processes)
local SLEEPER = [[
local luasrv = require "luasrv"
return { handle = function (req)
  local secs = tonumber(req:read("l")) or 0.3
  local t0 = luasrv.now()
  luasrv.sleep(secs)
  req:write(string.format("%.6f %.6f\n", t0, luasrv.now()))
end }]]


-- Connects n clients, then sends each the same request; returns the
-- seconds until the last reply and the {start, end} span of each.
local function burst (srv, n, secs)
  local cs, spans = {}, {}
  for i = 1, n do cs[i] = srv:connect() end
  local t0 = T.now()
  for i = 1, n do assert(cs[i]:send(secs .. "\n")) end
  for i = 1, n do
    local line, err = cs[i]:receive()
    assert(line, "request " .. i .. " got no reply: " .. tostring(err))
    local a, b = line:match("^(%S+) (%S+)$")
    spans[i] = { tonumber(a), tonumber(b) }
  end
  return T.now() - t0, spans
end


-- The largest number of spans open at one time.
local function max_overlap (spans)
  local ev = {}
  for _, s in ipairs(spans) do
    ev[#ev + 1] = { s[1], 1 }
    ev[#ev + 1] = { s[2], -1 }
  end
  table.sort(ev, function (a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]  -- an end before a start at the same instant
  end)
  local cur, max = 0, 0
  for _, e in ipairs(ev) do
    cur = cur + e[2]
    if cur > max then max = cur end
  end
  return max
end


-- Every process descending from pid: { {pid=, ppid=, state=}, ... }.
local function descendants (pid)
  local p = assert(io.popen("cat /proc/[0-9]*/stat 2>/dev/null"))
  local procs, children = {}, {}
  for line in p:lines() do
    local id, st, ppid = line:match("^(%d+) %(.*%) (%a) (%d+)")
    if id then
      local r = { pid = tonumber(id), state = st, ppid = tonumber(ppid) }
      procs[#procs + 1] = r
      children[r.ppid] = children[r.ppid] or {}
      table.insert(children[r.ppid], r)
    end
  end
  p:close()
  local out, queue = {}, { pid }
  while #queue > 0 do
    local id = table.remove(queue)
    for _, r in ipairs(children[id] or {}) do
      out[#out + 1] = r
      queue[#queue + 1] = r.pid
    end
  end
  return out
end


local function zombies (pid)
  local n = 0
  for _, r in ipairs(descendants(pid)) do
    if r.state == "Z" then n = n + 1 end
  end
  return n
end


-- Polls fn() until it returns true, for up to secs: H.eventually, with
-- the arguments in this file's order.
local function eventually (secs, fn) return H.eventually(fn, secs) end


H.for_models(function (model)

  it("10 clients of a 0.3 s handler: " .. (CONCURRENT[model] and
     "served at the same time" or "served one after the other"), function ()
    local srv = H.start{ model = model, source = SLEEPER }
    local dt, spans = burst(srv, 10, 0.3)
    if CONCURRENT[model] then
      assert.is_true(dt < 5 * 0.3 * H.scale, "10 requests took " .. dt .. " s")
      assert.is_true(max_overlap(spans) >= 5, "overlap " .. max_overlap(spans))
    else
      assert.is_true(dt >= 2.5, "10 requests took " .. dt .. " s")
      assert.equals(1, max_overlap(spans))
    end
  end)

  it("a limit of 2 concurrent requests: never more, none refused",
  function ()
    local args = {}
    if LIMIT_OPT[model] then args = { LIMIT_OPT[model], "2" } end
    local limit = LIMIT_OPT[model] and 2 or 1
    local srv = H.start{ model = model, source = SLEEPER, args = args }
    local dt, spans = burst(srv, 6, 0.3)
    assert.equals(limit, max_overlap(spans))
    assert.is_true(dt >= 6 / limit * 0.3 * 0.9, "6 requests took " .. dt .. " s")
  end)

  if LIMIT_OPT[model] then
    it("a limit of 1 serialises requests: they wait, none refused",
    function ()
      local srv = H.start{ model = model, source = SLEEPER,
                           args = { LIMIT_OPT[model], "1" } }
      local dt, spans = burst(srv, 4, 0.2)
      assert.equals(1, max_overlap(spans))
      assert.is_true(dt >= 4 * 0.2 * 0.9, "4 requests took " .. dt .. " s")
    end)

    for _, n in ipairs{ 1, 2, 5 } do
      it(LIMIT_OPT[model] .. " " .. n .. ": exactly " .. n .. " handlers run "
         .. "at once, the other clients wait", function ()
        local srv = H.start{ model = model, source = SLEEPER,
                             args = { LIMIT_OPT[model], tostring(n) } }
        local _, spans = burst(srv, 3 * n, 0.3)
        assert.equals(n, max_overlap(spans))
      end)
    end
  end

  it("state: an upvalue persists in a state across requests"
     .. (model == "fork" and " (not in fork: each child's changes are lost)"
         or ""), function ()
    local args = {}
    -- with one thread every request runs in the same state
    if model == "thread" then args = { "--max-threads", "1" } end
    local srv = H.start{ model = model, args = args, source = [[
local n = 0
return { handle = function (req) n = n + 1; req:write(n, "\n") end }]] }
    local got = {}
    for i = 1, 3 do got[i] = srv:connect():receive() end
    if model == "fork" then
      assert.same({ "1", "1", "1" }, got)
    else
      assert.same({ "1", "2", "3" }, got)
    end
  end)

  it("loads the script and runs init once per state, not per request",
  function ()
    local args = {}
    if model == "thread" then args = { "--max-threads", "3" } end
    local srv = H.start{ model = model, args = args, source = [[
local luasrv = require "luasrv"
luasrv.log("loaded")
return {
  init = function () luasrv.log("init") end,
  handle = function (req) luasrv.sleep(0.05); req:write("ok\n") end,
}]] }
    for _ = 1, 4 do
      local cs = {}
      for i = 1, 5 do cs[i] = srv:connect() end
      for i = 1, 5 do assert.equals("ok", cs[i]:receive()) end
    end
    local loaded = H.count(srv:stderr(), "luasrv: loaded\n", true)
    local inits = H.count(srv:stderr(), "luasrv: init\n", true)
    assert.equals(loaded, inits)
    if model == "thread" then
      assert.is_true(loaded >= 1 and loaded <= 3, loaded .. " states")
    else
      assert.equals(1, loaded)
    end
  end)

  it("an error in one request ends that request only", function ()
    local srv = H.start{ model = model, source = [[
local luasrv = require "luasrv"
return { handle = function (req)
  local line = req:read("l")
  if line == "boom" then error("boom requested") end
  luasrv.sleep(0.3)
  req:write("fine ", line, "\n")
end }]] }
    local slow = srv:connect()
    assert(slow:send("slow\n"))
    local bad = srv:connect()
    assert(bad:send("boom\n"))
    if CONCURRENT[model] then  -- the error comes while slow is served
      assert.same({ nil, "closed" }, { bad:receive() })
    end
    assert.equals("fine slow", slow:receive())
    assert.same({ nil, "closed" }, { bad:receive() })
    local after = srv:connect()
    assert(after:send("after\n"))
    assert.equals("fine after", after:receive())
    assert.is_true(srv:wait_stderr("error handling request from .*boom "
                                   .. "requested", 2))
    assert.equals(1, H.count(srv:stderr(), "boom requested", true))
    assert.is_true(srv:alive())
  end)

  it("SIGTERM with requests in flight: they complete, then exit 0",
  function ()
    local srv = H.start{ model = model, source = [[
local luasrv = require "luasrv"
return { handle = function (req)
  req:write("started\n"):flush()
  luasrv.sleep(0.5)
  req:write("done\n")
end }]] }
    local n = CONCURRENT[model] and 3 or 1
    local cs = {}
    for i = 1, n do
      cs[i] = srv:connect()
      assert.equals("started", cs[i]:receive())
    end
    srv:signal("TERM")
    for i = 1, n do
      assert.equals("done", cs[i]:receive())
      assert.same({ nil, "closed" }, { cs[i]:receive() })
    end
    assert.equals(0, srv:wait(3))
    assert.equals(0, zombies(srv.pid))
  end)

  it("SIGTERM to the whole process group (as ^C or systemd): the request "
     .. "in flight completes, then exit 0", function ()
    local srv = H.start{ model = model, source = [[
local luasrv = require "luasrv"
return { handle = function (req)
  req:write("started\n"):flush()
  luasrv.sleep(0.5)
  req:write("done\n")
end }]] }
    if not srv.setsid then return end  -- no group of its own to signal
    local c = srv:connect()
    assert.equals("started", c:receive())
    assert.is_true(os.execute("kill -s TERM -- -" .. srv.pid) == true)
    assert.equals("done", c:receive())
    assert.equals(0, srv:wait(3))
  end)

  it("server:shutdown() in one request: others in flight complete, no new "
     .. "request is served, exit 0", function ()
    local srv = H.start{ model = model, source = [[
local luasrv = require "luasrv"
return { handle = function (req)
  local line = req:read("l")
  if line == "stop" then
    req.server:shutdown()
    req:write("stopping\n")
    return
  end
  req:write("started\n"):flush()
  luasrv.sleep(0.5)
  req:write("done ", line, "\n")
end }]] }
    local slow
    if CONCURRENT[model] then
      slow = srv:connect()
      assert(slow:send("slow\n"))
      assert.equals("started", slow:receive())
    end
    local c = srv:connect()
    assert(c:send("stop\n"))
    assert.equals("stopping", c:receive())
    if slow then assert.equals("done slow", slow:receive()) end
    local code = srv:wait(3)
    assert.equals(0, code)
  end)

  it("no zombies and no leftover processes after many requests", function ()
    local srv = H.start{ model = model, source = [[
return { handle = function (req) req:write("ok ", req:read("l"), "\n") end }]],
                         args = { "--max-children", "4" } }
    local deadline = T.now() + 10
    for round = 1, 15 do
      if T.now() > deadline then break end
      local cs = {}
      for i = 1, 6 do
        cs[i] = srv:connect()
        assert(cs[i]:send(round .. "." .. i .. "\n"))
      end
      for i = 1, 6 do
        assert.equals("ok " .. round .. "." .. i, cs[i]:receive())
        cs[i]:close()
      end
    end
    -- children are reaped at once: none is left, not even a zombie (a
    -- master, if any, has one worker process)
    assert.is_true(eventually(2, function ()
      return #descendants(srv.pid) <= 1
    end), #descendants(srv.pid) .. " processes left")
    assert.equals(0, zombies(srv.pid))
    assert.is_true(srv:alive())
  end)
end)


describe("fork model", function ()
  local run = false
  for _, m in ipairs(H.models) do run = run or m == "fork" end
  if not run then return end

  it("--max-children 3 under sustained load: the children alive never "
     .. "exceed the limit", function ()
    local srv = H.start{ model = "fork", source = SLEEPER,
                         args = { "--max-children", "3" } }
    local cs = {}
    for i = 1, 9 do
      cs[i] = srv:connect()
      assert(cs[i]:send("0.2\n"))
    end
    local most = 0
    local deadline = T.now() + 0.6
    while T.now() < deadline do
      local n = 0
      for _, r in ipairs(descendants(srv.pid)) do
        if r.state ~= "Z" then n = n + 1 end
      end
      if n > most then most = n end
      T.sleep(0.01)
    end
    for i = 1, 9 do assert.truthy(cs[i]:receive()) end
    -- the children, and the worker if srv.pid is a master
    assert.is_true(most >= 3 and most <= 4, most .. " processes at once")
  end)

  it("a child that dies of a signal ends its request only", function ()
    local srv = H.start{ model = "fork", source = [[
return { handle = function (req)
  local line = req:read("l")
  if line == "die" then
    os.execute("kill -KILL $PPID")  -- the shell's parent: this child
  end
  req:write("alive ", line, "\n")
end }]] }
    local c = srv:connect()
    assert(c:send("die\n"))
    assert.is_nil((c:receive()))
    c = srv:connect()
    assert(c:send("again\n"))
    assert.equals("alive again", c:receive())
    assert.is_true(eventually(2, function () return zombies(srv.pid) == 0 end))
  end)
end)
