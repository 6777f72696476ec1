-- SIGUSR2: the master starts the binary now on disk on the same sockets,
-- waits until its workers serve, then drains and exits; a binary that
-- cannot start leaves the old one serving.
local H = require "helper"
local T = H.T
local socket = require "socket"

local readfile = H.try_read_file

local function writefile (path, s, mode)
  H.write_file(path, s)
  if mode then os.execute("chmod " .. mode .. " " .. H.quote(path)) end
end

-- replaces path as a package manager does: a new file renamed over it
local function swap (path, content_from)
  assert(os.execute(("cp '%s' '%s.new' && mv '%s.new' '%s'")
                    :format(content_from, path, path, path)))
end

local function alive (pid)
  return os.execute("kill -0 " .. pid .. " 2>/dev/null") == true
end

-- a copy of the binary under test in dir: the one the server runs from
local function private_binary (dir)
  local bin = dir .. "/luasrv"
  assert(os.execute(("cp '%s' '%s'"):format(T.bin, bin)))
  local saved = T.bin
  T.bin = bin
  H.defer(function () T.bin = saved end)
  return bin, saved
end

-- one request on a new connection: true, or false and why
local function request (port, i)
  local c, err = socket.connect("127.0.0.1", port)
  if not c then return false, "connect: " .. tostring(err) end
  c:settimeout(5 * H.scale)
  local ok, serr = c:send("r" .. i .. "\n")
  local line, rerr = c:receive()
  c:close()
  if not ok then return false, "send: " .. tostring(serr) end
  if line ~= "r" .. i then return false, "reply: " .. tostring(line or rerr) end
  return true
end

-- three requests in flight at once (connected and sent before any reply
-- is read); the failures appended to list
local function batch (port, i, list)
  local cs = {}
  for k = 1, 3 do
    local c, err = socket.connect("127.0.0.1", port)
    if not c then list[#list + 1] = i .. "." .. k .. ": connect: " .. err
    else
      c:settimeout(5 * H.scale)
      c:send("r" .. i .. "." .. k .. "\n")
      cs[k] = c
    end
  end
  for k, c in pairs(cs) do
    local line, err = c:receive()
    if line ~= "r" .. i .. "." .. k then
      list[#list + 1] = i .. "." .. k .. ": reply: " .. tostring(line or err)
    end
    c:close()
  end
end


H.for_models(function (model)
  it("replacing the binary and SIGUSR2 under a client loop: 0 failed "
     .. "requests; the old master drains and exits", function ()
    local dir = H.tmpdir()
    local bin, original = private_binary(dir)
    local pidfile, admin, mport = dir .. "/luasrv.pid", dir .. "/admin.sock",
                                  H.free_port()
    local usock = dir .. "/u.sock"
    local srv = H.start{ model = model, script = H.fixture("echo.lua"),
      tcp = true, unix = usock,
      args = { "--workers", "2", "--pidfile", pidfile, "--grace", "30",
               "--admin", admin, "--metrics", "127.0.0.1:" .. mport } }
    local port, old = srv.listeners[1].port, srv.pid
    local new_pid
    H.defer(function ()
      if new_pid then os.execute("kill -TERM " .. new_pid .. " 2>/dev/null") end
    end)
    -- a connection the old code holds over the upgrade: it drains
    local held = srv:connect()
    held:settimeout(5 * H.scale)
    held:send("before\n")
    assert.equals("before", held:receive())
    local failures, n, upgraded_at = {}, 0, nil
    local deadline = T.now() + 20 * H.scale
    while T.now() < deadline do
      n = n + 1
      batch(port, n, failures)
      if n == 100 then
        swap(bin, original)
        assert.is_true(srv:signal("USR2"))
      end
      if n > 100 and not upgraded_at and
         srv:stderr():find("drains and exits", 1, true) then
        upgraded_at = n
      end
      -- 100 more batches while the old generation drains
      if upgraded_at and n >= upgraded_at + 100 then break end
      if n >= 1000 then break end
    end
    assert.same({}, failures)
    assert.truthy(upgraded_at, srv:stderr())
    new_pid = tonumber(readfile(pidfile))
    assert.truthy(new_pid and new_pid ~= old, readfile(pidfile))
    assert.truthy(srv:stderr():find("the new binary (pid " .. new_pid
                                    .. ") serves", 1, true), srv:stderr())
    assert.is_nil(readfile(pidfile .. ".oldbin"))
    assert.is_true(alive(new_pid))
    -- the console's and the metrics' sockets were passed on too
    local code, out = T.run{ "ctl", admin, "status" }
    assert.equals(0, code)
    assert.equals(new_pid, tonumber(out:match('^{"pid":(%d+)')))
    assert.equals("ok\n", select(2, H.http_get(mport, "/healthz")))
    -- the held connection is still answered by the old worker; once it
    -- leaves, the old master exits
    assert(held:send("after\n"))
    assert.equals("after", held:receive())
    assert.is_true(alive(old))
    held:close()
    assert.equals(0, srv:wait(10 * H.scale))
    assert.is_true(H.is_socket(usock))  -- the old master left it to the new
    local u = require("socket.unix")()
    assert(u:connect(usock))
    u:settimeout(5)
    u:send("unix\n")
    assert.equals("unix", u:receive())
    u:close()
    for i = 1, 100 do
      local ok, why = request(port, -i)
      if not ok then failures[#failures + 1] = -i .. ": " .. why end
    end
    assert.same({}, failures)
    os.execute("kill -TERM " .. new_pid)
    assert.truthy(H.eventually(function () return not alive(new_pid) end, 10))
    new_pid = nil
    assert.is_nil(readfile(pidfile))
    assert.is_false(H.exists(admin))
    assert.is_false(H.exists(usock))  -- the new master removed its files
  end)

  it("systemd's notifications: the old master hands the new one's MAINPID "
     .. "over once it serves; then the new one speaks for the service",
     function ()
    local dir = H.tmpdir()
    local bin, original = private_binary(dir)
    -- what systemd's notify socket would receive, in order
    local path = dir .. "/notify"
    local ns = require("socket.unix").dgram()
    assert(ns:bind(path))
    ns:settimeout(5 * H.scale)
    H.defer(function () ns:close() end)
    local function none ()  -- nothing more is queued
      ns:settimeout(0)
      local msg = ns:receive()
      ns:settimeout(5 * H.scale)
      return msg == nil, msg
    end
    local srv = H.start{ model = model, script = H.fixture("echo.lua"),
      args = { "--workers", "2" }, env = { NOTIFY_SOCKET = path } }
    local old, new = srv.pid, nil
    H.defer(function ()
      if new then os.execute("kill -TERM " .. new .. " 2>/dev/null") end
    end)
    assert.equals("READY=1\nMAINPID=" .. old .. "\nSTATUS=serving",
                  ns:receive())
    swap(bin, original)
    assert.is_true(srv:signal("USR2"))
    local msg = assert(ns:receive())
    new = tonumber(msg:match("^STATUS=upgrading: the new binary %(pid (%d+)%) "
                             .. "starts$"))
    assert.truthy(new, msg)
    -- the new master says nothing while it is not systemd's main process
    -- (NotifyAccess=main would refuse it): the old one does, once the new
    -- one's workers serve, and waits at exit until systemd has read it
    assert.equals(("MAINPID=%d\nREADY=1\nSTATUS=upgraded: pid %d serves")
                  :format(new, new), ns:receive())
    assert.equals("BARRIER=1", ns:receive())
    assert.equals(0, srv:wait(10 * H.scale))
    assert.is_true(none())  -- the old master's stop is not the service's
    -- the new master is the main process now: a reload, a stop
    assert.is_true(alive(new))
    os.execute("kill -HUP " .. new)
    assert.matches("^RELOADING=1\nMONOTONIC_USEC=%d+$", ns:receive())
    assert.equals("READY=1\nSTATUS=serving (reloaded)", ns:receive())
    os.execute("kill -TERM " .. new)
    assert.equals("STOPPING=1", ns:receive())
    assert.truthy(H.eventually(function () return not alive(new) end, 10))
    new = nil
    assert.is_true(none())
  end)
end)


describe("SIGUSR2", function ()
  it("a stop while the new binary starts stops both", function ()
    local dir = H.tmpdir()
    local bin = private_binary(dir)
    local pidfile = dir .. "/luasrv.pid"
    local srv = H.start{ script = H.fixture("echo.lua"),
                         args = { "--pidfile", pidfile } }
    writefile(dir .. "/slow", "#!/bin/sh\nexec sleep 30\n", "755")
    swap(bin, dir .. "/slow")
    assert.is_true(srv:signal("USR2"))
    assert.truthy(srv:wait_stderr("upgrading: starting", 5, true))
    assert.truthy(H.eventually(function () return #H.children(srv.pid) == 2 end,
                               5))
    local kids = H.children(srv.pid)
    assert.is_true(srv:signal("TERM"))
    assert.equals(0, srv:wait(10))
    assert.matches("the upgrade is abandoned; the new binary %(pid %d+%) "
                   .. "stops too", srv:stderr())
    for _, pid in ipairs(kids) do
      assert.truthy(H.eventually(function () return not alive(pid) end, 5))
    end
    assert.is_nil(readfile(pidfile))
    assert.is_nil(readfile(pidfile .. ".oldbin"))
  end)

  it("a new binary that cannot start: the old one serves on and says why",
     function ()
    local dir = H.tmpdir()
    local bin = private_binary(dir)
    local pidfile = dir .. "/luasrv.pid"
    local srv = H.start{ script = H.fixture("echo.lua"),
                         args = { "--pidfile", pidfile } }
    local port = srv.listeners[1].port
    writefile(dir .. "/broken", "#!/bin/sh\necho broken >&2\nexit 1\n", "755")
    swap(bin, dir .. "/broken")
    assert.is_true(srv:signal("USR2"))
    local why = "upgrade failed: the new binary " .. bin .. " (pid "
    assert.truthy(srv:wait_stderr(why, 10, true), srv:stderr())
    assert.matches("exited with status 1 before it served; the old binary "
                   .. "keeps serving", srv:stderr(), 1, true)
    assert.truthy(srv:stderr():find("broken\n", 1, true))
    for i = 1, 20 do assert.truthy(request(port, i)) end
    assert.equals(tostring(srv.pid), readfile(pidfile):match("%d+"))
    assert.is_nil(readfile(pidfile .. ".oldbin"))
    -- a binary that is not there at all
    os.remove(bin)
    assert.is_true(srv:signal("USR2"))
    assert.truthy(srv:wait_stderr("cannot run " .. bin, 10, true),
                  srv:stderr())
    assert.truthy(srv:wait_stderr("exited with status 127 before it served",
                                  10, true), srv:stderr())
    assert.truthy(request(port, 99))
    -- a worker given SIGUSR2 (pkill -USR2 luasrv) is not killed by it
    local worker = H.children(srv.pid)[1]
    os.execute("kill -USR2 " .. worker)
    assert.truthy(request(port, 100))
    assert.same({ worker }, H.children(srv.pid))
    assert.falsy(srv:stderr():find("killed by signal", 1, true), srv:stderr())
    assert.equals(0, srv:stop())
  end)
end)
