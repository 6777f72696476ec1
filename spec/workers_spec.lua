-- The master and its workers (SPEC §4, --workers): startup, the worker
-- number, a worker that dies is replaced, a worker that keeps dying backs
-- off, SIGHUP reloads without losing a connection and survives a broken
-- script, server:shutdown() stops every worker, --pidfile, --user.
local H = require "helper"
local T = H.T

-- the children of pid, from /proc (the workers of a master)
local children = H.children


-- waits until fn() is true, up to secs; returns its last value
local eventually = H.eventually


local ask = H.ask_line


local writefile = H.write_file


-- a handler that answers "VERSION WORKER" after sleeping as asked; "exit"
-- makes the worker exit with status 3 (from service_actions, which runs in
-- the worker in every model: a fork model handler runs in a child)
local function versioned (version)
  return ([[
local luasrv = require "luasrv"
local flag = os.getenv("EXIT_FLAG")
return {
  handle = function (req)
    local line = req:read("l")
    if line == "exit" and flag then io.open(flag, "w"):close() end
    local secs = tonumber(line)
    if secs then luasrv.sleep(secs) end
    req:write("%s ", req.server.worker, "\n")
  end,
  service_actions = function ()
    local f = flag and io.open(flag)
    if f then f:close(); os.remove(flag); os.exit(3) end
  end,
}
]]):format(version)
end


H.for_models(function (model)

  it("--workers 2: two workers serve, numbered 1 and 2", function ()
    local srv = H.start{ model = model, source = versioned("v1"),
                         args = { "--workers", "2" } }
    assert.equals(2, #children(srv.pid))
    -- slow requests side by side: a busy worker leaves the next to the other
    local seen = {}
    local deadline = T.now() + 5 * H.scale
    while not (seen["1"] and seen["2"]) and T.now() < deadline do
      local cs = {}
      for i = 1, 4 do
        cs[i] = srv:connect()
        cs[i]:settimeout(3 * H.scale)
        cs[i]:send("0.2\n")
      end
      for i = 1, 4 do
        local r = assert(cs[i]:receive())
        seen[r:match("^v1 (%d+)$")] = true
        cs[i]:close()
      end
    end
    assert.is_true(seen["1"] and seen["2"])
    assert.is_nil(next(seen, nil) and seen["3"])
    assert.equals(1, H.count(srv:stderr(), "listening on", true))
  end)

  it("a worker that dies is replaced and logged with its signal", function ()
    local srv = H.start{ model = model, source = versioned("v1"),
                         args = { "--workers", "2" } }
    local before = children(srv.pid)
    assert.equals(2, #before)
    os.execute("kill -9 " .. before[1])
    assert.truthy(srv:wait_stderr("worker %d %(pid " .. before[1] ..
      "%) was killed by signal 9 %(SIGKILL%); starting a new one", 3 * H.scale))
    local after = eventually(function ()
      local k = children(srv.pid)
      return #k == 2 and k[1] ~= before[1] and k
    end, 2)
    assert.truthy(after)
    for _ = 1, 4 do assert.matches("^v1 [12]$", ask(srv, "0")) end
  end)

  it("a worker that exits with a status is replaced; others keep serving",
     function ()
    local dir = H.tmpdir()
    local srv = H.start{ model = model, source = versioned("v1"),
                         env = { EXIT_FLAG = dir .. "/exit" } }
    assert.equals("v1 1", ask(srv, "exit"))
    assert.truthy(srv:wait_stderr("exited with status 3; starting a new one",
                                  3 * H.scale, true))
    assert.equals("v1 1", eventually(function () return ask(srv, "0") end, 2))
    assert.is_true(srv:alive())
  end)

  it("a worker that keeps dying at start backs off instead of spinning",
     function ()
    local dir = H.tmpdir()
    local mark = dir .. "/crash"
    local srv = H.start{ model = model, source = ([[
return {
  init = function ()
    local f = io.open(%q)
    if f then f:close(); os.exit(5) end
  end,
  handle = function (req) req:write("up\n") end,
}]]):format(mark) }
    writefile(mark, "")
    os.execute("kill -9 " .. children(srv.pid)[1])
    T.sleep(1.5 * H.scale)
    -- a spinning master would have restarted it hundreds of times
    local restarts = H.count(srv:stderr(), "exited with status 5", true)
    assert.is_true(restarts >= 2 and restarts <= 8, "restarts: " .. restarts)
    assert.truthy(srv:stderr():find("keeps dying: restarting it in", 1, true))
    os.remove(mark)
    assert.equals("up", eventually(function () return ask(srv, "") end, 7))
  end)

  it("SIGHUP: new requests run the new script, an in-flight one finishes "
     .. "on the old, no connection fails", function ()
    local dir = H.tmpdir()
    local script = dir .. "/handler.lua"
    writefile(script, versioned("v1"))
    local srv = H.start{ model = model, script = script,
                         args = { "--workers", "2" } }
    assert.matches("^v1 ", ask(srv, "0"))
    local slow = srv:connect()
    slow:settimeout(5 * H.scale)
    slow:send("0.6\n")
    T.sleep(0.1)
    writefile(script, versioned("v2"))
    srv:signal("HUP")
    -- a client loop across the reload: every request answered
    local failures, v2, n = 0, 0, 0
    local deadline = T.now() + 1.5 * H.scale
    while T.now() < deadline and n < 2000 do
      local r = ask(srv, "0")
      n = n + 1
      if not r then failures = failures + 1
      elseif r:find("^v2 ") then v2 = v2 + 1 end
    end
    assert.equals(0, failures)
    assert.is_true(v2 > 0)
    assert.matches("^v1 ", slow:receive())
    assert.truthy(srv:wait_stderr("reloaded " .. script, 1, true))
    assert.matches("^v2 ", ask(srv, "0"))
    -- the old generation leaves once its last request is done
    assert.truthy(eventually(function () return #children(srv.pid) == 2 end, 3))
    assert.equals(0, srv:stop())
  end)

  it("SIGHUP with a broken script: the error is logged, the old code serves",
     function ()
    local dir = H.tmpdir()
    local script = dir .. "/handler.lua"
    writefile(script, versioned("v1"))
    local srv = H.start{ model = model, script = script }
    writefile(script, "return { handle = function (req) req:write(1 end }")
    srv:signal("HUP")
    assert.truthy(srv:wait_stderr("reload failed: the old code keeps serving",
                                  3 * H.scale, true))
    assert.truthy(srv:stderr():find("luasrv: error: [^\n]*handler.lua:1:"))
    assert.equals("v1 1", ask(srv, "0"))
    -- a fixed script reloads
    writefile(script, versioned("v3"))
    srv:signal("HUP")
    assert.equals("v3 1", eventually(function ()
      local r = ask(srv, "0")
      return r == "v3 1" and r
    end, 3))
  end)

  it("server:shutdown() in one worker stops the whole server", function ()
    local srv = H.start{ model = model, args = { "--workers", "2" },
      source = [[return { handle = function (req)
        req:write("bye\n"); req.server:shutdown() end }]] }
    assert.equals("bye", ask(srv, ""))
    assert.equals(0, srv:wait(3 * H.scale))
    assert.equals(0, #children(srv.pid))
  end)

  it("a worker failing init at start: exit 1, one error line, no listening "
     .. "line", function ()
    local code, _, err = T.run{ "{script}", "--tcp", "127.0.0.1:0",
      "--model", model, "--workers", "3",
      source = "return { init = function () error('no db') end, "
        .. "handle = function () end }" }
    assert.equals(1, code)
    assert.equals(1, #H.error_lines(err))
    assert.is_nil(err:find("listening on", 1, true))
  end)

end)


describe("process options", function ()

  it("--pidfile holds the master's pid while it runs, removed at exit",
     function ()
    local dir = H.tmpdir()
    local pidfile = dir .. "/luasrv.pid"
    local srv = H.start{ script = H.fixture("echo.lua"),
                         args = { "--pidfile", pidfile, "--workers", "2" } }
    local f = assert(io.open(pidfile))
    assert.equals(srv.pid, tonumber(f:read("l")))
    f:close()
    assert.equals(0, srv:stop())
    assert.is_false(H.exists(pidfile))
  end)

  it("--user: an unknown user is refused before serving", function ()
    local code, _, err = T.run{ H.fixture("echo.lua"), "--tcp",
      "127.0.0.1:0", "--user", "no-such-user-here" }
    assert.equals(1, code)
    assert.equals("luasrv: error: --user: no user 'no-such-user-here'\n", err)
  end)

  local is_root = io.popen("id -u"):read("l") == "0"
  local it_root = is_root and it or pending
  it_root("--user nobody: workers run as nobody, the master removes the "
          .. "socket file", function ()
    local dir = H.tmpdir()
    os.execute("chmod 755 " .. dir)
    local path, script = dir .. "/s.sock", dir .. "/uid.lua"
    -- the workers load the script as nobody: it must be readable
    writefile(script, [[return { handle = function (req)
        local f = io.open("/proc/self/status")
        local uid = f:read("a"):match("Uid:%s*(%d+)")
        f:close()
        req:write(uid, "\n")
      end }]])
    os.execute("chmod 644 " .. script)
    local srv = H.start{ unix = path, script = script,
                         args = { "--user", "nobody" } }
    local c = srv:connect("unix")
    local uid = io.popen("id -u nobody"):read("l")
    assert.equals(uid, c:receive())
    assert.equals(uid, io.popen("stat -c %u '" .. path .. "'"):read("l"))
    assert.equals(0, srv:stop())
    assert.is_false(H.exists(path))
  end)

end)
