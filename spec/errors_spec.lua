-- spec/errors_spec.lua: how a connection's end and a handler's error are
-- logged. An idle or vanished client ends a `for line in req:lines()`
-- loop quietly (one info line); a real failure still raises; a traceback
-- shows the user's frames, not luasrv's own.
local H = require "helper"
local socket = require "socket"

local LINES = [[
local function shout (s)
  if s == "boom" then error("boom!") end
  return s:upper()
end
return { handle = function (req)
  for line in req:lines() do req:write(shout(line), "\n") end
  req:write("loop ended\n")
end }
]]

-- a TCP connection reset by the client: SO_LINGER 0, then close
local function reset (srv)
  local c = srv:connect()
  c:send("hello\n")
  assert.equals("HELLO", c:receive())
  c.sock:setoption("linger", { on = true, timeout = 0 })
  c.sock:close()
end

H.for_models(function (model)
  describe("a lines loop", function ()
    it("ends quietly when the client stays idle past --timeout", function ()
      local srv = H.start{ source = LINES, model = model,
                           args = { "--timeout", "0.3" } }
      local c = srv:connect()
      c:send("hi\n")
      assert.equals("HI", c:receive())
      assert.equals("loop ended", c:receive())   -- the loop ended, no raise
      assert.truthy(srv:wait_stderr("ended: idle past its timeout", 3, true))
      local err = srv:stderr()
      assert.falsy(err:find("error handling", 1, true))
      assert.falsy(err:find("traceback", 1, true))
      assert.matches("luasrv: connection from 127%.0%.0%.1:%d+ ended: idle " ..
                     "past its timeout", err)
    end)

    it("ends quietly when the client resets the connection", function ()
      local srv = H.start{ source = LINES, model = model }
      reset(srv)
      assert.truthy(srv:wait_stderr("ended: reset by the client", 3, true))
      assert.falsy(srv:stderr():find("error handling", 1, true))
    end)

    it("ends quietly at EOF, with no log line at all", function ()
      local srv = H.start{ source = LINES, model = model }
      local c = srv:connect()
      c:send("a\n")
      c:shutdown("send")
      assert.equals("A", c:receive())
      assert.equals("loop ended", c:receive())
      socket.sleep(0.1)
      assert.falsy(srv:stderr():find("ended:", 1, true))
    end)

    it("still raises on a partial line followed by a stall", function ()
      local srv = H.start{ source = LINES, model = model,
                           args = { "--timeout", "0.3" } }
      local c = srv:connect()
      c:send("half a line")
      assert.truthy(srv:wait_stderr("error handling request", 3, true))
      assert.matches(": timeout\n", srv:stderr())
    end)

    it("still raises on a line past --max-line", function ()
      local srv = H.start{ source = LINES, model = model,
                           args = { "--max-line", "16" } }
      local c = srv:connect()
      c:send(("x"):rep(64) .. "\n")
      assert.truthy(srv:wait_stderr("line too long", 3, true))
    end)

    it("does not log the end at --quiet", function ()
      local port = H.free_port()
      local srv = H.start{ source = LINES, model = model, wait = false,
                           tcp = "127.0.0.1:" .. port,
                           args = { "--timeout", "0.3", "--quiet" } }
      local c = H.eventually(function ()
        return socket.connect("127.0.0.1", port)
      end, 5)
      c:settimeout(5)
      assert.equals("loop ended", c:receive())
      c:close()
      socket.sleep(0.1)
      assert.falsy(srv:stderr():find("ended:", 1, true))
    end)
  end)

  describe("a traceback", function ()
    it("shows the handler's frames and none of luasrv's", function ()
      local srv = H.start{ source = LINES, model = model }
      local c = srv:connect()
      c:send("boom\n")
      assert.truthy(srv:wait_stderr("stack traceback:", 3, true))
      H.eventually(function ()
        return srv:stderr():find("in function <", 1, true)
      end, 2)
      local err = srv:stderr()
      assert.matches("error handling request from [^:]+:%d+: [^\n]*:2: boom!", err)
      assert.matches("in upvalue 'shout'", err)
      assert.falsy(err:find("xpcall", 1, true))
      assert.falsy(err:find("\tflow:", 1, true))
      assert.falsy(err:find("[C]: in ?", 1, true))
    end)

    it("of a failing service hook shows only the hook's frames", function ()
      local srv = H.start{ model = model, source = [[
        local n = 0
        return {
          handle = function (req) end,
          service_actions = function ()
            n = n + 1
            if n == 1 then error("tick failed") end
          end,
        }]] }
      assert.truthy(srv:wait_stderr("error in service_actions", 3, true))
      socket.sleep(0.1)
      local err = srv:stderr()
      assert.matches("tick failed", err)
      assert.falsy(err:find("[C]: in ?", 1, true))
      assert.falsy(err:find("xpcall", 1, true))
    end)
  end)
end)
