-- Running out of memory: a Lua state at its --memory-limit, or a worker
-- whose heap has nothing left (ulimit -v). New clients must never take the
-- worker down with them: a client the core cannot even start a request
-- for is refused (logged, at most once a second), and the others go on;
-- a worker that cannot allocate at all says so and is replaced.
local H = require "helper"
local T = H.T

-- fill(): fills the state with small blocks until an allocation fails,
-- so that it is left just under its limit, holding it all in HOLD.
local FILL = [[
local luasrv = require "luasrv"
local function fill ()
  HOLD = {}
  for _, size in ipairs{ 65536, 1024, 16 } do
    local s = ("x"):rep(size - 1)
    pcall(function ()
      for i = 1, 1e9 do HOLD = { s .. i, HOLD } end
    end)
  end
end
]]


-- Sends "ping" on n new connections; returns the replies (false: none).
local function pings (srv, n)
  local cs, got = {}, {}
  for i = 1, n do
    cs[i] = srv:connect()
    cs[i]:settimeout(3 * H.scale)
    cs[i]:send("ping\n")
  end
  for i = 1, n do
    got[i] = cs[i]:receive() or false
    cs[i]:close()
  end
  return got
end


local function worker_pids (srv)
  local pids = {}
  for _, c in ipairs(H.children(srv.pid)) do pids[#pids + 1] = c end
  return pids
end


-- Lets process pid map at most mb megabytes more than it maps now
-- (ulimit -v, set from outside with prlimit).
local function limit_heap (pid, mb)
  local f = assert(io.open("/proc/" .. pid .. "/status"))
  local kb = assert(tonumber(f:read("a"):match("VmSize:%s*(%d+)")))
  f:close()
  local bytes = (kb + mb * 1024) * 1024
  assert(os.execute(("prlimit --pid %d --as=%d:%d"):format(pid, bytes, bytes)))
end


H.for_models(function (model)

  it("--memory-limit: a state full of held data refuses new clients, "
     .. "logged once a second, and the worker lives on", function ()
    local args = { "--memory-limit", "50m" }
    -- one state, so that the one that is full is the one that serves
    if model == "thread" then args = { "--max-threads", "1",
                                       "--memory-limit", "50m" } end
    local srv = H.start{ model = model, args = args, source = FILL .. [[
return {
  init = fill,
  handle = function (req) req:write("pong ", req:read("l"), "\n") end,
}]] }
    local before = worker_pids(srv)
    -- what the collector finds may let a request through now and then;
    -- most have no room
    local refused = 0
    for i, r in ipairs(pings(srv, 10)) do
      assert.is_true(r == false or r == "pong ping", i .. ": " .. tostring(r))
      if r == false then refused = refused + 1 end
    end
    assert.is_true(refused >= 5, refused .. " of 10 refused")
    assert.truthy(srv:wait_stderr("out of memory (--memory-limit): refused "
                                  .. "a client of 127.0.0.1:", 3, true))
    assert.is_nil(srv:stderr():find("PANIC", 1, true))
    assert.is_true(srv:alive())
    assert.same(before, worker_pids(srv))
    local n = H.count(srv:stderr(), "out of memory (--memory-limit)", true)
    assert.is_true(n >= 1 and n <= 3, n .. " log lines")
  end)

  if model == "event" then
    it("--memory-limit: while one request holds the state full, new clients "
       .. "are refused and the others served on; then all are served",
       function ()
      local srv = H.start{ model = model, args = { "--memory-limit", "50m" },
        source = FILL .. [[
return {
  handle = function (req)
    local line = req:read("l")
    if line == "fill" then
      fill()
      luasrv.sleep(1)
      HOLD = nil
      collectgarbage()
    end
    req:write("pong ", line, "\n")
  end,
}]] }
      local holder = srv:connect()
      holder:settimeout(10 * H.scale)
      holder:send("fill\n")
      assert.truthy(H.eventually(function ()
        return pings(srv, 1)[1] == false
      end, 3))
      assert.same({ false, false, false }, pings(srv, 3))
      assert.equals("pong fill", holder:receive())
      assert.same({ "pong ping", "pong ping", "pong ping" }, pings(srv, 3))
      assert.truthy(srv:stderr():find("out of memory (--memory-limit)", 1,
                                      true))
      assert.is_true(srv:alive())
    end)
  end

  it("a worker whose heap is exhausted (ulimit -v) says so and exits; the "
     .. "master starts a fresh one that serves", function ()
    -- AddressSanitizer's and ThreadSanitizer's allocators map their own
    -- memory: under an address space limit they fail themselves before
    -- the program's malloc can
    if os.getenv("ASAN_OPTIONS") or os.getenv("TSAN_OPTIONS") then
      pending("not under a sanitizer")
      return
    end
    local srv = H.start{ model = model, source = [[
return {
  handle = function (req)
    local line = req:read("l")
    if line == "hog" then
      HOLD = {}
      local sizes = { 1 << 20, 65536, 1024, 16 }
      for _, size in ipairs(sizes) do
        local s = ("x"):rep(size - 1)
        pcall(function ()
          for i = 1, 1e9 do HOLD = { s .. i, HOLD } end
        end)
      end
    end
    req:write("pong ", tostring(line), "\n")
  end,
}]] }
    local before = worker_pids(srv)
    for _, pid in ipairs(before) do limit_heap(pid, 300) end
    local c = srv:connect()
    c:settimeout(20 * H.scale)
    c:send("hog\n")
    c:receive()
    c:close()
    if model == "fork" then
      -- the child that filled its heap is gone with it: nothing to replace
      assert.same({ "pong ping" }, pings(srv, 1))
      return
    end
    pings(srv, 2)  -- the worker cannot start these
    -- the worker logs it and exits (in every model: nothing on the way
    -- may abort for want of memory), and is replaced
    assert.truthy(srv:wait_stderr("the worker is out of memory", 5, true),
                  srv:stderr())
    assert.truthy(srv:wait_stderr("starting a new one", 5, true))
    assert.is_true(H.eventually(function ()
      return pings(srv, 1)[1] == "pong ping"
    end, 10 * H.scale), srv:stderr())
    assert.are_not.same(before, worker_pids(srv))
    assert.is_true(srv:alive())
  end)

end)
