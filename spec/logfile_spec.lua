-- --log-file FILE and SIGUSR1: the error log (with the access lines) goes
-- to FILE; a rotation renames it and SIGUSR1 reopens it in the master and
-- every worker, and not one line is lost or written twice.
local H = require "helper"
local T = H.T
local socket = require "socket"

local readfile = H.try_read_file

-- waits (bounded) until path exists and holds pattern (plain)
local function wait_file (path, pattern, secs)
  local deadline = T.now() + secs * H.scale
  repeat
    local s = readfile(path)
    if s and s:find(pattern, 1, true) then return s end
    socket.sleep(0.001)
  until T.now() > deadline
  return nil
end

local LOGGER = [[
local luasrv = require "luasrv"
return { handle = function (req)
  local line = req:read("l")
  luasrv.log("req", line)
  req:write(line, "\n")
end }]]


local function client (port, line)
  local c = assert(socket.connect("127.0.0.1", port))
  c:settimeout(5 * H.scale)
  assert(c:send(line .. "\n"))
  return c
end


describe("--log-file", function ()
  it("gets the startup lines instead of stderr; a bad path is an error",
     function ()
    local dir = H.tmpdir()
    local log, port = dir .. "/error.log", H.free_port()
    local srv = H.start{ source = LOGGER, wait = false,
      args = { "--tcp", "127.0.0.1:" .. port, "--log-file", log } }
    assert.truthy(wait_file(log, "listening on tcp://127.0.0.1:" .. port, 5))
    local c = client(port, "one")
    assert.equals("one", c:receive())
    c:close()
    assert.truthy(wait_file(log, "luasrv: req one", 5))
    assert.equals(0, srv:stop())
    assert.equals("", srv:stderr())
    local code, _, err = T.run{ "--tcp", "127.0.0.1:0", "--log-file",
                                dir .. "/no/such/dir/x.log", source = LOGGER }
    assert.equals(1, code)
    assert.matches("--log-file " .. dir .. "/no/such/dir/x.log: No such file",
                   err, 1, true)
  end)
end)


H.for_models(function (model)
  it("SIGUSR1 1,000 times under load: every request's lines are in the "
     .. "rotated files exactly once", function ()
    local dir = H.tmpdir()
    local log, port = dir .. "/error.log", H.free_port()
    local srv = H.start{ model = model, source = LOGGER, wait = false,
      args = { "--tcp", "127.0.0.1:" .. port, "--log-file", log,
               "--workers", "2", "--access-log" } }
    assert.truthy(wait_file(log, "listening on", 5))
    local rotations, id = 1000, 0
    for i = 1, rotations do
      id = id + 1
      local a = client(port, "id" .. id)      -- in flight over the rotation
      assert(os.rename(log, dir .. "/error.log." .. i))
      assert.is_true(srv:signal("USR1"))
      -- the master reopened: a fresh file, its first line its own
      assert.truthy(wait_file(log, "SIGUSR1: reopened", 5), "rotation " .. i)
      id = id + 1
      local b = client(port, "id" .. id)
      assert.equals("id" .. (id - 1), a:receive())
      assert.equals("id" .. id, b:receive())
      a:close()
      b:close()
    end
    -- once the workers had time to reopen, their lines are in the new file
    socket.sleep(0.2)
    for _ = 1, 4 do
      id = id + 1
      local c = client(port, "id" .. id)
      assert.equals("id" .. id, c:receive())
      c:close()
    end
    assert.truthy(wait_file(log, "luasrv: req id" .. id .. "\n", 5))
    assert.equals(0, srv:stop())
    local seen, access, reopened, holding = {}, 0, 0, 0
    for i = 1, rotations + 1 do
      local s = readfile(i <= rotations and dir .. "/error.log." .. i or log)
      for n in s:gmatch("luasrv: req id(%d+)\n") do
        n = tonumber(n)
        seen[n] = (seen[n] or 0) + 1
      end
      access = access + H.count(s, "luasrv: access ", true)
      if s:find("luasrv: req id", 1, true) then holding = holding + 1 end
      reopened = reopened + H.count(s, "SIGUSR1: reopened", true)
    end
    assert.equals(rotations, reopened)
    -- the workers reopened along: their lines are spread over the files
    assert.is_true(holding > rotations / 2, holding .. " files")
    assert.equals(id, access)
    local missing, twice = {}, {}
    for n = 1, id do
      if seen[n] == nil then missing[#missing + 1] = n
      elseif seen[n] > 1 then twice[#twice + 1] = n end
    end
    assert.same({}, missing)
    assert.same({}, twice)
    assert.equals("", srv:stderr())
  end)
end)
