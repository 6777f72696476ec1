-- /healthz, /readyz and /status on the --metrics listener, and
-- --drain-delay: /readyz says 503 before the listeners close.
local H = require "helper"
local T = H.T
local json = require "cjson"

-- status code and body of GET path on the metrics port
local get = H.http_get

-- "started" once a request is in, then sleeps SECS before answering
local SLOW = [[
local luasrv = require "luasrv"
return { handle = function (req)
  local line = req:read("l")
  if line == "slow" then req:write("started\n"):flush(); luasrv.sleep(2) end
  req:write(line, "\n")
end }]]

local function echo (srv)
  return (H.ask_line(srv, "hi", 5))
end


H.for_models(function (model)
  it("/healthz and /readyz say 200 while every worker serves; /status "
     .. "lists the workers and counts", function ()
    local port = H.free_port()
    local srv = H.start{ model = model, source = SLOW,
      args = { "--workers", "2", "--metrics", "127.0.0.1:" .. port } }
    assert.same({ 200, "ok\n" }, { get(port, "/healthz") })
    assert.same({ 200, "ready\n" }, { get(port, "/readyz") })
    for _ = 1, 5 do assert.equals("hi", echo(srv)) end
    local code, body = get(port, "/status")
    assert.equals(200, code)
    local st = json.decode(body)
    assert.equals(srv.pid, st.pid)
    assert.equals("serving", st.state)
    assert.equals(1, st.generation)
    assert.equals(model, st.model)
    local pids = {}
    for _, w in ipairs(st.workers) do
      pids[#pids + 1] = w.pid
      assert.equals("serving", w.state)
      assert.equals(1, w.generation)
    end
    table.sort(pids)
    assert.same(H.children(srv.pid), pids)
    assert.equals(5, st.requests)
    assert.equals(0, st.connections)
    assert.equals(404, (get(port, "/nope")))
    -- a reload: generation 2 serves
    srv:signal("HUP")
    assert.truthy(srv:wait_stderr("reloaded", 5, true))
    assert.truthy(H.eventually(function ()
      local s = json.decode(select(2, get(port, "/status")))
      return s.generation == 2 and #s.workers == 2
    end, 5))
  end)

  it("/readyz says 503 while the server stops; /healthz 200 while a "
     .. "worker still drains", function ()
    local port = H.free_port()
    local srv = H.start{ model = model, source = SLOW,
      args = { "--metrics", "127.0.0.1:" .. port, "--grace", "10" } }
    local c = srv:connect()
    c:settimeout(5 * H.scale)
    c:send("slow\n")
    assert.equals("started", c:receive())
    srv:signal("TERM")
    assert.same({ 503, "stopping\n" }, { get(port, "/readyz") })
    assert.same({ 200, "ok\n" }, { get(port, "/healthz") })
    assert.equals("slow", c:receive())
    assert.equals(0, srv:wait(5))
  end)

  it("--drain-delay: /readyz says 503 first while the listeners still "
     .. "serve, then the server stops", function ()
    local port = H.free_port()
    local srv = H.start{ model = model, source = SLOW,
      args = { "--metrics", "127.0.0.1:" .. port, "--drain-delay", "1.5" } }
    local t0 = T.now()
    srv:signal("TERM")
    assert.truthy(srv:wait_stderr("draining", 2, true))
    assert.same({ 503, "draining\n" }, { get(port, "/readyz") })
    assert.equals("hi", echo(srv))  -- a new client is still served
    assert.equals("draining", json.decode(select(2, get(port, "/status"))).state)
    assert.equals(0, srv:wait(5))
    assert.is_true(T.now() - t0 >= 1.4)
  end)
end)
