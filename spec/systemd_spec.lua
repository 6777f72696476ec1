-- systemd: socket activation (LISTEN_FDS/LISTEN_PID, through the real
-- systemd-socket-activate) and the readiness protocol ($NOTIFY_SOCKET):
-- READY=1 once serving, RELOADING=1 then READY=1 around a reload,
-- STOPPING=1 at shutdown.
local H = require "helper"
local T = H.T
local socket = require "socket"
local unix = require "socket.unix"

local free_port = H.free_port

local function readfile (path) return H.try_read_file(path) or "" end

-- starts luasrv under systemd-socket-activate in the background; the
-- activator execs luasrv with the listening socket on the first client
local function activate (dir, listen, args)
  local cmd = { "systemd-socket-activate", "-l", listen, T.bin, "scripts/echo.lua" }
  for _, a in ipairs(args or {}) do cmd[#cmd + 1] = a end
  for i, a in ipairs(cmd) do cmd[i] = "'" .. a .. "'" end
  os.execute(table.concat(cmd, " ") .. " >/dev/null 2>'" .. dir ..
             "/err' </dev/null & echo $! >'" .. dir .. "/pid'")
  local deadline = T.now() + 5 * H.scale
  while not readfile(dir .. "/err"):find("Listening on", 1, true) and
        T.now() < deadline do
    T.sleep(0.02)
  end
  return tonumber(readfile(dir .. "/pid"))
end

local function wait_gone (pid)
  local deadline = T.now() + 5 * H.scale
  while os.execute("kill -0 " .. pid .. " 2>/dev/null") and T.now() < deadline do
    T.sleep(0.05)
  end
  return not os.execute("kill -0 " .. pid .. " 2>/dev/null")
end

describe("socket activation", function ()

  it("with no listener option, serves the socket systemd passed", function ()
    local dir = H.tmpdir()
    local port = free_port()
    local pid = activate(dir, "127.0.0.1:" .. port, { "--once" })
    H.defer(function () os.execute("kill " .. pid .. " 2>/dev/null") end)
    local c = assert(socket.connect("127.0.0.1", port))
    c:settimeout(5 * H.scale)
    c:send("activated\n")
    assert.equals("activated", c:receive())
    c:close()
    assert.is_true(wait_gone(pid))
    assert.truthy(readfile(dir .. "/err"):find(
      "luasrv: listening on tcp://127.0.0.1:" .. port, 1, true))
  end)

  it("a --unix option naming the passed socket uses it and leaves the "
     .. "file to systemd; other options bind as usual", function ()
    local dir = H.tmpdir()
    local path = dir .. "/act.sock"
    local pid = activate(dir, path, { "--unix", path, "--tcp",
                                      "127.0.0.1:0", "--once" })
    H.defer(function () os.execute("kill " .. pid .. " 2>/dev/null") end)
    local c = unix.stream()
    assert(c:connect(path))
    c:settimeout(5 * H.scale)
    c:send("via unix\n")
    assert.equals("via unix", c:receive())
    c:close()
    assert.is_true(wait_gone(pid))
    local err = readfile(dir .. "/err")
    assert.truthy(err:find("listening on unix:" .. path, 1, true), err)
    assert.truthy(err:find("listening on tcp://127.0.0.1:", 1, true), err)
    assert.is_nil(err:find("matches no listener", 1, true))
    assert.is_true(H.is_socket(path))  -- systemd's file: we leave it
  end)

end)

describe("readiness notification", function ()

  it("READY=1 with MAINPID, RELOADING=1 and READY=1 around SIGHUP, "
     .. "STOPPING=1 at SIGTERM", function ()
    local dir = H.tmpdir()
    local path = dir .. "/notify"
    local s = unix.dgram()
    assert(s:bind(path))
    s:settimeout(5 * H.scale)
    H.defer(function () s:close() end)
    local srv = H.start{ script = H.fixture("echo.lua"),
                         env = { NOTIFY_SOCKET = path } }
    local msg = assert(s:receive())
    assert.matches("^READY=1\nMAINPID=" .. srv.pid .. "\n", msg)
    srv:signal("HUP")
    assert.matches("^RELOADING=1\nMONOTONIC_USEC=%d+$", assert(s:receive()))
    assert.matches("^READY=1\n", assert(s:receive()))
    srv:signal("TERM")
    assert.equals("STOPPING=1", assert(s:receive()))
    assert.equals(0, srv:wait(5 * H.scale))
  end)

end)
