-- Faults under load (issue 5): a SIGTERM loses none of the requests the
-- server had accepted; kill -9 of one worker leaves the other worker's
-- clients untouched and a replacement serves within a second.
local H = require "helper"
local T = H.T

-- a line echo that names the process serving it: "PID LINE"
local ECHO_PID = [[
local f = io.open("/proc/self/stat")
local pid = f:read("a"):match("^(%d+)")
f:close()
return { handle = function (req)
  for line in req:lines() do req:write(pid, " ", line, "\n") end
end }
]]

H.for_models(function (model)

  it("SIGTERM under load: every accepted request is answered, exit 0",
     function ()
    -- sync serves one connection at a time: the others are not accepted
    local n = model == "sync" and 1 or 20
    local srv = H.start{ model = model, source = [[
local luasrv = require "luasrv"
return { handle = function (req)
  local line = req:read("l")
  luasrv.log("started", line)
  luasrv.sleep(0.4)
  req:write("done ", line, "\n")
end }]] }
    local cs = {}
    for i = 1, n do
      cs[i] = srv:connect()
      cs[i]:settimeout(10 * H.scale)
      cs[i]:send(i .. "\n")
    end
    -- every request is in its handler: then the signal
    local deadline = T.now() + 5 * H.scale
    while H.count(srv:stderr(), "luasrv: started ", true) < n and
          T.now() < deadline do
      T.sleep(0.02)
    end
    assert.equals(n, H.count(srv:stderr(), "luasrv: started ", true))
    srv:signal("TERM")
    for i = 1, n do assert.equals("done " .. i, cs[i]:receive()) end
    assert.equals(0, srv:wait(5 * H.scale))
  end)

  it("kill -9 of one worker: the other worker's clients go on, a new "
     .. "worker serves within a second", function ()
    local srv = H.start{ model = model, source = ECHO_PID,
                         args = { "--workers", "2" } }
    -- the pid in each reply is the worker's: the script read it when the
    -- worker loaded it (fork children inherit it)
    local function worker_of (pid) return pid end
    local held, by = {}, {}
    local deadline = T.now() + 5 * H.scale
    -- sync: a held connection keeps its worker busy, so at most 2
    local want = model == "sync" and 2 or 8
    repeat
      local c = srv:connect()
      c:settimeout(3 * H.scale)
      c:send("hi\n")
      local pid = tonumber(assert(c:receive()):match("^(%d+) hi$"))
      local w = worker_of(pid)
      by[w] = by[w] or {}
      table.insert(by[w], c)
      held[#held + 1] = c
    until #held >= want or T.now() > deadline
    -- kill a worker that holds clients if the other one does too; the
    -- kernel may have given every client to one worker: kill the other
    local workers = {}
    local p = io.popen("cat /proc/[0-9]*/stat 2>/dev/null")
    for line in p:lines() do
      local cpid, ppid = line:match("^(%d+) %(.*%) %a (%d+) ")
      if cpid and tonumber(ppid) == srv.pid then
        workers[#workers + 1] = tonumber(cpid)
      end
    end
    p:close()
    assert.equals(2, #workers)
    local victim, survivor
    if by[workers[1]] and by[workers[2]] then
      victim, survivor = workers[1], workers[2]
    else
      survivor = by[workers[1]] and workers[1] or workers[2]
      victim = survivor == workers[1] and workers[2] or workers[1]
    end
    assert.truthy(by[survivor], "the surviving worker holds clients")
    os.execute("kill -9 " .. victim)
    T.sleep(0.1)
    -- the survivor's clients are unaffected
    for i, c in ipairs(by[survivor]) do
      c:send("again " .. i .. "\n")
      assert.matches("^%d+ again " .. i .. "$", c:receive())
    end
    -- a replacement is up within a second: new clients are all served
    local t0 = T.now()
    assert.truthy(srv:wait_stderr("was killed by signal 9", 2 * H.scale,
                                  true))
    local served = 0
    for i = 1, 20 do
      local c = srv:connect()
      c:settimeout(3 * H.scale)
      c:send("new\n")
      if c:receive() then served = served + 1 end
      c:close()
    end
    assert.equals(20, served)
    assert.is_true(T.now() - t0 < 2 * H.scale)
    assert.equals(0, srv:stop())
  end)

end)
