-- spec/park_spec.lua: a kept-alive HTTP connection between two requests
-- waits in req:recv with a continuation. In the event model, once it is
-- idle for a moment, it parks: its coroutine ends and its continuation
-- runs in another when the next request comes. In every model the
-- connection must behave as one that waited in place: its requests in
-- order, the request object the same, max_requests and keepalive_timeout
-- counted across the waits, finish and the access log once at its end,
-- and a stop closing it at once instead of waiting for the grace.
local H = require "helper"
local T = H.T

local SOURCE = [[
local http = require "luasrv.http"
local luasrv = require "luasrv"
local hooks = http.handler(function (r)
  local req = r.req
  req.count = (req.count or 0) + 1    -- a field of the request object
  return "n=" .. req.count .. " " .. r.path .. "\n"
end, { max_requests = 3, keepalive_timeout = tonumber(os.getenv("KT")) })
hooks.finish = function (req)
  luasrv.log("finish after " .. tostring(req.count) .. " requests")
end
return hooks
]]

local function get (path, close)
  return "GET " .. path .. " HTTP/1.1\r\nHost: x\r\n"
    .. (close and "Connection: close\r\n" or "") .. "\r\n"
end

-- one response: status line, the Connection header (or nil), body
local function response (c)
  local status = assert(c:receive("l"))
  local connection, length
  while true do
    local line = assert(c:receive("l"))
    if line == "" then break end
    local k, v = line:match("^([^:]+):%s*(.*)$")
    if k:lower() == "content-length" then length = tonumber(v) end
    if k:lower() == "connection" then connection = v end
  end
  return status, connection, assert(c:receive(length))
end

local function start (model, kt, args)
  local a = { "--access-log" }
  for _, v in ipairs(args or {}) do a[#a + 1] = v end
  local env = kt and { KT = tostring(kt) } or nil
  return H.start{ model = model, source = SOURCE, args = a, env = env }
end

H.for_models(function (model)
  it("serves the requests that come after idle spells, in order, on one "
     .. "request object, then closes at max_requests", function ()
    local srv = start(model)
    local c = srv:connect()
    c:settimeout(5 * H.scale)
    c:send(get("/a"))
    assert.same({ "HTTP/1.1 200 OK", nil, "n=1 /a\n" }, { response(c) })
    T.sleep(0.1)                -- idle: parked in the event model
    c:send(get("/b") .. get("/c"))  -- two at once: pipelined
    assert.same({ "HTTP/1.1 200 OK", nil, "n=2 /b\n" }, { response(c) })
    assert.same({ "HTTP/1.1 200 OK", "close", "n=3 /c\n" }, { response(c) })
    assert.is_nil((c:receive("l")))   -- max_requests: closed
    assert.truthy(srv:wait_stderr("finish after 3 requests", 5, true))
    assert.equals(1, H.count(srv:stderr(), "finish after", true))
  end)

  for _, kt in ipairs{ false, 5 } do
  it("serves the same request again after an idle spell, alone or "
     .. "pipelined with itself" .. (kt and ", with keepalive_timeout" or ""),
     function ()
    local srv = start(model, kt or nil)
    local c = srv:connect()
    c:settimeout(5 * H.scale)
    c:send(get("/a"))
    assert.same({ "HTTP/1.1 200 OK", nil, "n=1 /a\n" }, { response(c) })
    T.sleep(0.1)                -- idle: parked in the event model
    c:send(get("/a"))           -- the bytes of the last head again
    assert.same({ "HTTP/1.1 200 OK", nil, "n=2 /a\n" }, { response(c) })
    T.sleep(0.1)
    c:send(get("/a") .. get("/a"))
    assert.same({ "HTTP/1.1 200 OK", "close", "n=3 /a\n" }, { response(c) })
    assert.is_nil((c:receive("l")))   -- max_requests: closed
    assert.truthy(srv:wait_stderr("finish after 3 requests", 5, true))
  end)
  end

  it("gives recv's same bytes as true across idle spells, and other "
     .. "bytes as a string", function ()
    local srv = H.start{ model = model, script = H.fixture("recv_same.lua") }
    local c = srv:connect()
    c:settimeout(5 * H.scale)
    local replies = {}
    for _, msg in ipairs{ "ping\n", "ping\n", "pong\n", "ping\nping\n",
                          "ping\n" } do
      c:send(msg)
      replies[#replies + 1] = assert(c:receive("l"))
      T.sleep(0.1)              -- idle: parked in the event model
    end
    c:shutdown("send")
    assert.same({ "same", "same", "other 5", "other 10", "same" }, replies)
    assert.is_nil((c:receive("l")))
  end)

  it("logs the connection once in the access log, with all its bytes "
     .. "and its whole time", function ()
    local srv = start(model)
    local c = srv:connect()
    c:settimeout(5 * H.scale)
    local sent = 0
    for i = 1, 3 do
      local req = get("/p" .. i, i == 3)
      sent = sent + #req
      c:send(req)
      response(c)
      if i < 3 then T.sleep(0.1) end
    end
    assert.truthy(srv:wait_stderr("access ", 5, true))
    local lines = {}
    for l in srv:stderr():gmatch("[^\n]*access [^\n]*") do lines[#lines + 1] = l end
    assert.equals(1, #lines)
    assert.equals(sent, tonumber(lines[1]:match(" in=(%d+)")))
    assert.is_true(tonumber(lines[1]:match(" time=([%d.]+)")) >= 0.2,
      lines[1])
    assert.truthy(lines[1]:match(" ok$"), lines[1])
  end)

  it("closes a connection idle past keepalive_timeout, without a word, "
     .. "and runs finish", function ()
    local srv = start(model, 0.3)
    local c = srv:connect()
    c:settimeout(5 * H.scale)
    c:send(get("/a"))
    response(c)
    local t0 = T.now()
    local line, err = c:receive("l")
    assert.is_nil(line)
    assert.equals("closed", err)
    assert.is_true(T.now() - t0 >= 0.25)
    assert.truthy(srv:wait_stderr("finish after 1 requests", 5, true))
  end)

  it("closes an idle kept-alive connection at once on stop, not at the "
     .. "end of the grace", function ()
    local srv = start(model, nil, { "--grace", "30" })
    local c = srv:connect()
    c:settimeout(10 * H.scale)
    c:send(get("/a"))
    response(c)
    T.sleep(0.1)
    local t0 = T.now()
    srv:signal("TERM")
    assert.is_nil((c:receive("l")))   -- closed by the server
    assert.is_not_nil(srv:wait(10 * H.scale))
    assert.is_true(T.now() - t0 < 10 * H.scale)
    assert.truthy(srv:stderr():find("finish after 1 requests", 1, true))
  end)
end)
