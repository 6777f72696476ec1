-- The hooks (SPEC §2): their order and error rules, verify_request,
-- handle_error and its default, service_actions, server_close. The hooks
-- are observed through luasrv.log lines on stderr and what the handler
-- writes back.
local H = require "helper"

-- every hook logs "luasrv: hook NAME ..."; BODY is spliced into the table
local function hooks_script (body)
  return [[
local luasrv = require "luasrv"
local function log (...) luasrv.log("hook", ...) end
return {
]] .. body .. "\n}\n"
end


-- the "hook ..." lines of stderr, without the "luasrv: hook " prefix
local function hook_lines (srv)
  local t = {}
  for _, line in ipairs(H.lines(srv:stderr())) do
    local h = line:match("^luasrv: hook (.*)$")
    if h then t[#t + 1] = h end
  end
  return t
end


local function index_of (list, value)
  for i, v in ipairs(list) do if v == value then return i end end
end


H.for_models(function (model)

  it("runs init, verify_request, setup, handle, finish in that order, and "
     .. "server_close at shutdown", function ()
    local srv = H.start{ model = model, source = hooks_script [[
  init = function (server) log("init", type(server)) end,
  verify_request = function (addr, server)
    log("verify_request", tostring(addr), server.transport)
    return true
  end,
  setup = function (req) log("setup") end,
  handle = function (req) log("handle"); req:write("done\n") end,
  finish = function (req) log("finish") end,
  server_close = function (server) log("server_close", type(server)) end,
]] }
    local ports = {}
    for i = 1, 2 do
      local c = srv:connect()
      ports[i] = select(2, c:getsockname())
      assert.equals("done", c:receive())
      assert.same({ nil, "closed" }, { c:receive() })
      c:close()
    end
    assert.equals(0, srv:stop())
    assert.same({
      "init table",
      "verify_request 127.0.0.1:" .. ports[1] .. " tcp",
      "setup", "handle", "finish",
      "verify_request 127.0.0.1:" .. ports[2] .. " tcp",
      "setup", "handle", "finish",
      "server_close table",
    }, hook_lines(srv))
  end)

  it("runs finish when handle raised, then closes the connection; "
     .. "handle_error is called", function ()
    local srv = H.start{ model = model, source = hooks_script [[
  setup = function (req) log("setup") end,
  handle = function (req)
    log("handle")
    req:write("partial\n")
    error("handle failed")
  end,
  finish = function (req) log("finish"); req:write("finish\n") end,
  handle_error = function (req, err) log("handle_error") end,
]] }
    local c = srv:connect()
    assert.equals("partial", c:receive())
    assert.equals("finish", c:receive())
    assert.same({ nil, "closed" }, { c:receive() })
    assert.is_true(srv:wait_stderr("luasrv: hook handle_error", 2, true))
    local hooks = hook_lines(srv)
    assert.equals(4, #hooks, srv:stderr())
    assert.same({ "setup", "handle" }, { hooks[1], hooks[2] })
    assert.is_truthy(index_of(hooks, "finish"))
    assert.is_true(index_of(hooks, "handle_error") > 2)
  end)

  it("does not run handle or finish when setup raised; handle_error is "
     .. "called and the connection closed", function ()
    local srv = H.start{ model = model, source = hooks_script [[
  setup = function (req) log("setup"); error("setup failed") end,
  handle = function (req) log("handle") end,
  finish = function (req) log("finish") end,
  handle_error = function (req, err) log("handle_error") end,
]] }
    local c = srv:connect()
    assert.same({ nil, "closed" }, { c:receive() })
    assert.is_true(srv:wait_stderr("luasrv: hook handle_error", 2, true))
    -- a second request shows the first one is over
    c = srv:connect()
    assert.same({ nil, "closed" }, { c:receive() })
    assert.is_true(srv:wait_stderr("handle_error\n.*handle_error\n", 2))
    assert.same({ "setup", "handle_error", "setup", "handle_error" },
                hook_lines(srv))
  end)

  it("calls handle_error when finish raised", function ()
    local srv = H.start{ model = model, source = hooks_script [[
  handle = function (req) log("handle"); req:write("done\n") end,
  finish = function (req) log("finish"); error("finish failed") end,
  handle_error = function (req, err)
    log("handle_error", tostring(err):match("finish failed"))
  end,
]] }
    local c = srv:connect()
    assert.equals("done", c:receive())
    assert.same({ nil, "closed" }, { c:receive() })
    assert.is_true(srv:wait_stderr("luasrv: hook handle_error", 2, true))
    assert.same({ "handle", "finish", "handle_error finish failed" },
                hook_lines(srv))
  end)

  it("verify_request returning false closes the connection without "
     .. "calling the other hooks", function ()
    local srv = H.start{ model = model, source = hooks_script [[
  verify_request = function (addr, server)
    n = (n or 0) + 1
    log("verify_request", n)
    return n ~= 1
  end,
  setup = function (req) log("setup") end,
  handle = function (req) log("handle"); req:write("served\n") end,
  finish = function (req) log("finish") end,
  handle_error = function (req, err) log("handle_error") end,
]] }
    local c = srv:connect()
    assert.same({ nil, "closed" }, { c:receive() })
    c = srv:connect()
    assert.equals("served", c:receive())
    assert.same({ "verify_request 1", "verify_request 2", "setup", "handle",
                  "finish" }, hook_lines(srv))
  end)

  it("verify_request returning false drops a datagram", function ()
    local srv = H.start{ model = model, udp = true, source = hooks_script [[
  verify_request = function (addr, server)
    n = (n or 0) + 1
    log("verify_request", n, server.transport)
    return n ~= 1
  end,
  handle = function (req) log("handle"); req:write("got ", req.request) end,
]] }
    local c = srv:connect("udp")
    c:settimeout(0.3)
    assert(c:send("one"))
    assert.same({ nil, "timeout" }, { c:receive() })
    assert(c:send("two"))
    assert.equals("got two", c:receive())
    assert.same({ "verify_request 1 udp", "verify_request 2 udp", "handle" },
                hook_lines(srv))
  end)

  it("handle_error gets the req and an err holding the message and a "
     .. "traceback", function ()
    local srv = H.start{ model = model, source = hooks_script [[
  handle = function (req)
    req.mark = "marked"
    error("boom")
  end,
  handle_error = function (req, err)
    local text = tostring(err)
    if type(err) == "table" then
      text = tostring(err.message) .. "\n" .. tostring(err.traceback)
    end
    log("handle_error", req.mark, "<<" .. text .. ">>")
  end,
]] }
    local c = srv:connect()
    assert.same({ nil, "closed" }, { c:receive() })
    assert.is_true(srv:wait_stderr(">>", 2, true))
    local err = srv:stderr()
    local text = err:match("luasrv: hook handle_error marked <<(.-)>>")
    assert.is_truthy(text, err)
    assert.truthy(text:find(srv.script .. ":6: boom", 1, true), text)
    assert.truthy(text:find("stack traceback:", 1, true), text)
  end)

  it("by default logs 'luasrv: error handling request from ADDR: MSG' and "
     .. "the traceback", function ()
    local srv = H.start{ model = model, source =
      "return { handle = function (req)\n  error('boom')\nend }\n" }
    local c = srv:connect()
    local port = select(2, c:getsockname())
    assert.same({ nil, "closed" }, { c:receive() })
    assert.is_true(srv:wait_stderr("stack traceback:", 2, true))
    local lines = H.lines(srv:stderr())
    local want = "luasrv: error handling request from 127.0.0.1:" .. port ..
                 ": " .. srv.script .. ":2: boom"
    local i = index_of(lines, want)
    assert.is_truthy(i, srv:stderr())
    assert.truthy(lines[i + 1]:find("stack traceback:", 1, true),
                  srv:stderr())
  end)

  it("an erroring request does not stop the others", function ()
    local srv = H.start{ model = model, tcp = true, udp = true, source = [[
return { handle = function (req)
  if req.server.transport == "udp" then
    if req.request == "boom" then error("udp boom") end
    req:write("udp ", req.request)
    return
  end
  local line = req:read("l")
  if line == "boom" then error("tcp boom") end
  req:write("tcp ", line, "\n")
end }]] }
    local bad = srv:connect("tcp")
    local good = srv:connect("tcp")             -- waits behind the bad one
    assert(bad:send("boom\n"))
    assert(good:send("fine\n"))
    assert.same({ nil, "closed" }, { bad:receive() })
    assert.equals("tcp fine", good:receive())
    assert.equals("tcp again", (function ()
      local c = srv:connect("tcp"); c:send("again\n"); return c:receive()
    end)())
    local u = srv:connect("udp")
    u:settimeout(0.3)
    assert(u:send("boom"))
    assert.same({ nil, "timeout" }, { u:receive() })
    u:settimeout(5)
    assert(u:send("fine"))
    assert.equals("udp fine", u:receive())
    assert.is_true(srv:alive())
    assert.equals(2, H.count(srv:stderr(), "luasrv: error handling request",
                             true))
  end)

  it("calls service_actions about every 0.5 s while serving", function ()
    local srv = H.start{ model = model, source = hooks_script [[
  service_actions = function (server) log("tick", type(server)) end,
  handle = function (req) end,
]] }
    local t0 = H.T.now()
    H.T.sleep(1.6)
    local ticks = H.count(srv:stderr(), "luasrv: hook tick table\n", true)
    local dt = H.T.now() - t0
    assert.is_true(ticks >= math.floor(dt / 0.5) - 1 and
                   ticks <= math.ceil(dt / 0.5) + 1,
                   ticks .. " ticks in " .. dt .. " s")
  end)

  it("calls server_close once, after the last request", function ()
    local srv = H.start{ model = model, source = hooks_script [[
  handle = function (req) log("handle"); req:write("ok\n") end,
  server_close = function (server) log("server_close") end,
]] }
    for _ = 1, 2 do assert.equals("ok", srv:connect():receive()) end
    assert.same({ "handle", "handle" }, hook_lines(srv))
    srv:signal("TERM")
    assert.equals(0, srv:wait(5))
    assert.same({ "handle", "handle", "server_close" }, hook_lines(srv))
  end)
end)
