-- The master's generations: a reload while older generations still drain
-- deploys the new code at once (up to four generations drain together,
-- past that the reload is refused and the log says why), and a master
-- killed outright leaves no worker holding the listening socket.
local H = require "helper"
local T = H.T

local children = H.children
local eventually = H.eventually


local writefile = H.write_file
local versioned = H.versioned
local ask = H.ask_line


-- a connection that stays open: it is served by the generation that took it
local function hold (srv)
  local c = srv:connect()
  c:settimeout(3 * H.scale)
  assert(c:send("hello\n"))
  return c, assert(c:receive())
end


-- a held connection on the code `version`: a new generation serves as
-- soon as it has loaded, and the one it replaces may still take a client
-- until the master has retired it, so the answer says which one took it
local function hold_on (srv, version)
  local deadline = T.now() + 3 * H.scale
  repeat
    local c, r = hold(srv)
    if r == version .. " hello" then return c end
    c:close()
    T.sleep(0.02)
  until T.now() > deadline
  error("no connection taken by " .. version)
end


-- once the master logged its n-th "reloaded" line
local function reloaded (srv, script, n)
  return eventually(function ()
    return H.count(srv:stderr(), "reloaded " .. script, true) >= n
  end, 3)
end


-- the reply of a new connection once it comes from `version`, within secs
local function serves (srv, version, secs)
  return eventually(function ()
    local r = ask(srv, "x")
    return r == version .. " x" and r
  end, secs)
end


H.for_models(function (model)

  describe("reload while older code drains", function ()
    it("a second and third SIGHUP deploy at once while a long connection "
       .. "stays on the first code", function ()
      local dir = H.tmpdir()
      local script = dir .. "/handler.lua"
      writefile(script, versioned("v1"))
      local srv = H.start{ model = model, script = script,
                           args = { "--grace", "30" } }
      local long, first = hold(srv)
      assert.equals("v1 hello", first)
      for i, v in ipairs{ "v2", "v3" } do
        writefile(script, versioned(v))
        assert.is_true(srv:signal("HUP"))
        assert.equals(v .. " x", serves(srv, v, 1))
        assert.truthy(reloaded(srv, script, i), srv:stderr())
        -- the connection taken by the first code still talks to it
        assert(long:send("still\n"))
        assert.equals("v1 still", long:receive())
      end
      local err = srv:stderr()
      assert.equals(2, H.count(err, "reloaded " .. script, true), err)
      assert.falsy(err:find("reload failed", 1, true), err)
      long:close()
      -- the drained generations leave: only the serving worker remains
      assert.truthy(eventually(function () return #children(srv.pid) == 1 end,
                               5))
      assert.equals(0, srv:stop())
    end)

    it("past four draining generations a reload is refused, and the log "
       .. "and systemd say why", function ()
      local dir = H.tmpdir()
      local script = dir .. "/handler.lua"
      local notify = dir .. "/notify.sock"
      local nsock = require("socket.unix").dgram()
      assert(nsock:bind(notify))
      nsock:settimeout(0)
      H.defer(function () nsock:close() end)
      writefile(script, versioned("v0"))
      local srv = H.start{ model = model, script = script,
                           args = { "--grace", "30" },
                           env = { NOTIFY_SOCKET = notify } }
      local status  -- the last STATUS= systemd was sent
      local function notified ()
        local msg = nsock:receive()
        while msg do
          status = msg:match("STATUS=([^\n]*)") or status
          msg = nsock:receive()
        end
        return status
      end
      local held = {}
      for i = 1, 4 do  -- each generation keeps one connection: it drains
        notified()
        held[i] = hold_on(srv, "v" .. (i - 1))
        writefile(script, versioned("v" .. i))
        assert.is_true(srv:signal("HUP"))
        assert.equals("v" .. i .. " x", serves(srv, "v" .. i, 1))
        assert.truthy(reloaded(srv, script, i), srv:stderr())
      end
      assert.is_true(srv:signal("HUP"))
      local why = "reload refused: 4 older generations are still draining "
                  .. "(at most 4); the current code keeps serving"
      assert.truthy(srv:wait_stderr(why, 3 * H.scale, true), srv:stderr())
      assert.equals("v4 x", ask(srv, "x"))
      assert.equals(why, eventually(function ()
        return notified() == why and why end, 2))
      -- once the oldest leaves, a reload goes through again
      held[1]:close()
      assert.truthy(eventually(function ()
        return #children(srv.pid) == 4 end, 5))
      writefile(script, versioned("v5"))
      assert.is_true(srv:signal("HUP"))
      assert.equals("v5 x", serves(srv, "v5", 1))
      for i = 2, 4 do
        assert(held[i]:send("on\n"))
        assert.equals("v" .. (i - 1) .. " on", held[i]:receive())
      end
    end)
  end)

  describe("a worker that dies", function ()
    it("is replaced by one running its generation's script, not the "
       .. "file's: edited without a reload, broken after a failed one",
       function ()
      local dir = H.tmpdir()
      local script = dir .. "/handler.lua"
      writefile(script, versioned("v1"))
      local srv = H.start{ model = model, script = script }
      assert.equals("v1 x", ask(srv, "x"))
      local function kill_worker ()
        local w = children(srv.pid)
        assert.equals(1, #w)
        os.execute("kill -9 " .. w[1])
        assert.truthy(eventually(function ()
          local now = children(srv.pid)
          return #now == 1 and now[1] ~= w[1] and ask(srv, "x")
        end, 5 * H.scale), srv:stderr())
      end
      -- edited, no SIGHUP: a crash does not deploy it
      writefile(script, versioned("v2"))
      kill_worker()
      assert.equals("v1 x", ask(srv, "x"))
      -- SIGHUP deploys it
      assert.is_true(srv:signal("HUP"))
      assert.truthy(reloaded(srv, script, 1), srv:stderr())
      assert.equals("v2 x", serves(srv, "v2", 3))
      -- broken on disk, the reload fails; a crash after it comes back on v2
      writefile(script, "return {")
      assert.is_true(srv:signal("HUP"))
      assert.truthy(srv:wait_stderr("reload failed", 5 * H.scale, true),
                    srv:stderr())
      assert.truthy(eventually(function ()
        return #children(srv.pid) == 1 end, 5 * H.scale))
      kill_worker()
      assert.equals("v2 x", ask(srv, "x"))
      assert.is_true(srv:alive())
    end)
  end)

  describe("a master killed outright", function ()
    it("its workers free the port at once and still answer their clients",
       function ()
      local port = H.free_port()
      local addr = "127.0.0.1:" .. port
      local old = H.start{ model = model, source = versioned("old"),
                           args = { "--tcp", addr, "--grace", "20" } }
      local held, first = hold(old)
      assert.equals("old hello", first)
      local workers = children(old.pid)
      assert.equals(1, #workers)
      H.defer(function () os.execute("kill -9 " .. workers[1] .. " 2>/dev/null") end)
      os.execute("kill -9 " .. old.pid)
      -- a new server binds the same port within a second (--grace is 20)
      local new, why
      local deadline = T.now() + 1 * H.scale
      repeat
        local ok, srv = pcall(H.start, { model = model, source = versioned("new"),
                                         args = { "--tcp", addr } })
        if ok then new = srv else why = srv; T.sleep(0.05) end
      until new or T.now() > deadline
      assert.truthy(new, why)
      assert.equals("new x", ask(new, "x"))
      -- the orphan goes on answering the client it had
      assert(held:send("still\n"))
      assert.equals("old still", held:receive())
      held:close()
    end)
  end)
end)
