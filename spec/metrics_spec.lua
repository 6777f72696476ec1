-- --metrics (Prometheus text format, served by the master, scraped with
-- curl) and --access-log: the counts match what the spec did, across
-- workers, in every model.
local H = require "helper"
local T = H.T
local C = require "tls_certs"
local socket = require "socket"

local free_port = H.free_port

-- sums a metric over its workers: { requests = n, ... }
local function scrape (port)
  local text = select(2, H.http_get(port, "/metrics")) or ""
  local sums = {}
  for name, labels, v in text:gmatch("\n?([%w_]+){([^}]*)} ([%d.e+-]+)") do
    local key = name
    local le = labels:match('le="([^"]+)"')
    if le then key = name .. "@" .. le end
    sums[key] = (sums[key] or 0) + tonumber(v)
  end
  return sums, text
end

-- runs a shell command; its output
local function run (cmd)
  local p = io.popen(cmd)
  local out = p:read("a")
  p:close()
  return out
end

-- the value of the line name{labels} of text exactly, as a number; nil
-- when there is no such line
local function value (text, name, labels)
  local v = text:match("\n" .. name:gsub("%p", "%%%0") .. "{"
    .. labels:gsub("%p", "%%%0") .. "} ([%d.e+-]+)\n")
  return tonumber(v)
end

-- polls /metrics until ok(text) or 5 s; the last text
local function scrape_until (port, ok)
  local text
  H.eventually(function ()
    text = select(2, scrape(port))
    return ok(text)
  end, 5 * H.scale)
  return text
end

local SCRIPT = [[
return {
  verify_request = function (addr, server) return true end,
  handle = function (req)
    local line = req:read("l")
    if line == "boom" then error("boom") end
    req:write(line, "\n")
  end,
}]]

-- the first client is refused: counted in a shared dictionary, as a
-- thread model's second state (a client that comes while the first one's
-- thread is busy) has a count of its own
local REFUSE = [[
local luasrv = require "luasrv"
return {
  verify_request = function () return luasrv.shared.m:incr("n", 1, 0) ~= 1 end,
  handle = function (req) req:write(req:read("l"), "\n") end,
}]]

H.for_models(function (model)

  it("counts requests, errors, bytes and durations across 2 workers",
     function ()
    local port = free_port()
    local srv = H.start{ model = model, source = SCRIPT,
      args = { "--workers", "2", "--metrics", "127.0.0.1:" .. port,
               "--access-log" } }
    assert.truthy(srv:stderr():find("metrics on http://127.0.0.1:" .. port
                                    .. "/metrics", 1, true))
    local n = 12
    for i = 1, n do
      local c = srv:connect()
      c:settimeout(5 * H.scale)
      c:send("hello" .. i .. "\n")
      assert.equals("hello" .. i, c:receive())
      c:close()
    end
    local c = srv:connect()
    c:send("boom\n")
    c:settimeout(5 * H.scale)
    assert.is_nil((c:receive()))
    c:close()
    local sums, text
    local deadline = T.now() + 5 * H.scale
    repeat  -- a request is counted when its flow ends, after the reply
      sums, text = scrape(port)
      if (sums.luasrv_requests_total or 0) < n + 1 then T.sleep(0.05) end
    until (sums.luasrv_requests_total or 0) >= n + 1 or T.now() > deadline
    assert.equals(n + 1, sums.luasrv_requests_total, text)
    assert.equals(n + 1, sums.luasrv_connections_total)
    assert.equals(1, sums.luasrv_request_errors_total)
    assert.equals(0, sums.luasrv_connections_open)
    -- "helloI\n" for each, "boom\n"
    local bytes_in = 5
    for i = 1, n do bytes_in = bytes_in + #("hello" .. i) + 1 end
    assert.equals(bytes_in, sums.luasrv_received_bytes_total)
    assert.equals(bytes_in - 5, sums.luasrv_sent_bytes_total)
    assert.equals(n + 1, sums["luasrv_request_duration_seconds_bucket@+Inf"])
    assert.equals(n + 1, sums.luasrv_request_duration_seconds_count)
    assert.truthy(text:find('# TYPE luasrv_request_duration_seconds histogram',
                            1, true))
    assert.truthy(text:find('luasrv_requests_total{worker="2"}', 1, true))
    -- one access line per request
    local err = srv:stderr()
    assert.equals(n, H.count(err, "luasrv: access 127.0.0.1:%d+ tcp in=%d+ "
                                  .. "out=%d+ time=[%d.]+ ok\n"))
    assert.equals(1, H.count(err, "luasrv: access 127.0.0.1:%d+ tcp in=5 "
                                  .. "out=0 time=[%d.]+ error\n"))
  end)

  it("counts refused requests and open connections", function ()
    local port = free_port()
    local srv = H.start{ model = model, source = REFUSE,
                         args = { "--metrics", "127.0.0.1:" .. port,
                                  "--shared", "m:1m" } }
    local refused = srv:connect()
    refused:settimeout(5 * H.scale)
    refused:send("x\n")
    assert.is_nil((refused:receive()))
    local held = srv:connect()
    held:settimeout(5 * H.scale)
    held:send("y\n")
    assert.equals("y", held:receive())
    local sums
    local deadline = T.now() + 5 * H.scale
    repeat
      sums = scrape(port)
      if (sums.luasrv_requests_refused_total or 0) < 1 then T.sleep(0.05) end
    until (sums.luasrv_requests_refused_total or 0) >= 1 or T.now() > deadline
    assert.equals(1, sums.luasrv_requests_refused_total)
  end)


  it("gauges Lua memory per worker, connections per listener and the "
     .. "shared dictionaries' use", function ()
    local port = free_port()
    local srv = H.start{ model = model, tcp = true, unix = true, source = [[
local luasrv = require "luasrv"
return { handle = function (req)
  for line in req:lines() do
    if line == "fill" then
      for i = 1, 50 do luasrv.shared.cache:set("k" .. i, ("v"):rep(100)) end
    end
    req:write(line, "\n")
  end
end }]], args = { "--metrics", "127.0.0.1:" .. port, "--shared", "cache:1m" } }
    local sums, text = scrape(port)
    assert.equals(0, sums.luasrv_shared_keys)
    assert.equals(sums.luasrv_shared_bytes, sums.luasrv_shared_free_bytes)
    local held = { srv:connect("unix") }
    held[1]:settimeout(5 * H.scale)
    held[1]:send("fill\n")
    assert.equals("fill", held[1]:receive())
    -- (the sync model serves one at a time: these wait in the queue,
    -- which counts for TCP)
    for i = 2, 4 do held[i] = srv:connect("tcp") end
    sums, text = scrape(port)
    local tcp = srv.listeners[1].address
    assert.equals("3", text:match('luasrv_listener_connections{listener="'
      .. tcp:gsub("%p", "%%%0") .. '"} (%d+)'), text)
    assert.equals("1", text:match('luasrv_listener_connections{listener="unix:'
      .. srv.unix.path:gsub("%p", "%%%0") .. '"} (%d+)'), text)
    assert.equals(50, sums.luasrv_shared_keys)
    assert.is_true(sums.luasrv_shared_free_bytes < sums.luasrv_shared_bytes - 5000)
    for i = 1, 4 do held[i]:close() end
    -- a request that ended reported its state's memory
    local deadline = T.now() + 5 * H.scale
    repeat
      sums, text = scrape(port)
      if (sums.luasrv_lua_memory_bytes or 0) == 0 or
         (sums.luasrv_listener_connections or 0) > 0 then T.sleep(0.05) end
    until ((sums.luasrv_lua_memory_bytes or 0) > 0 and
           sums.luasrv_listener_connections == 0) or T.now() > deadline
    assert.is_true(sums.luasrv_lua_memory_bytes > 10000, text)
    assert.equals(0, sums.luasrv_listener_connections, text)
  end)


  it("counts TLS handshakes per listener and worker: ok and failed",
     function ()
    local d = C.dir()
    local port = free_port()
    local srv = H.start{ model = model, tcp = true, source = [[
return { handle = function (req) req:write(req:read("l"), "\n") end }]],
      args = { "--workers", "2", "--tls", "127.0.0.1:0",
               "--tls-cert", d .. "/server.pem", "--tls-key", d .. "/server.key",
               "--metrics", "127.0.0.1:" .. port, "--timeout", "5" } }
    local tls = srv:stderr():match("listening on (tls://127%.0%.0%.1:%d+)")
    local tcp = srv.listeners[1].address
    local function hs (text, result)
      local n = 0
      for w = 1, 2 do
        n = n + assert(value(text, "luasrv_tls_handshakes_total",
          ('worker="%d",listener="%s",result="%s"'):format(w, tls, result)),
          text)
      end
      return n
    end
    -- before any client: the --tls listener shows, at 0; the plain one not
    local _, text = scrape(port)
    assert.equals(0, hs(text, "ok"))
    assert.equals(0, hs(text, "failed"))
    assert.truthy(text:find("# TYPE luasrv_tls_handshakes_total counter\n",
                            1, true), text)
    assert.falsy(text:find('listener="' .. tcp .. '",result', 1, true), text)
    -- three clients that complete the handshake
    local tport = tonumber(tls:match(":(%d+)$"))
    for i = 1, 3 do
      local out = run(("printf 'hi%d\\n' | timeout 10 openssl s_client "
        .. "-connect 127.0.0.1:%d -ign_eof -CAfile %s/ca.pem 2>&1"):format(
        i, tport, d))
      assert.truthy(out:find("\nhi" .. i .. "\n", 1, true), out)
    end
    -- one that speaks plaintext: closed, one line in the log
    local c = assert(socket.connect("127.0.0.1", tport))
    c:settimeout(5 * H.scale)
    c:send("GET / HTTP/1.0\r\n\r\n")
    c:receive("*a")  -- (an alert at most) until the server closes it
    c:close()
    assert.truthy(srv:wait_stderr("TLS handshake failed", 5 * H.scale, true),
                  srv:stderr())
    text = scrape_until(port, function (t)
      return hs(t, "ok") == 3 and hs(t, "failed") == 1 end)
    assert.equals(3, hs(text, "ok"))
    assert.equals(1, hs(text, "failed"))
    -- a plaintext client of the plain listener is no handshake
    c = srv:connect("tcp")
    c:settimeout(5 * H.scale)
    c:send("plain\n")
    assert.equals("plain", c:receive())
    c:close()
    text = select(2, scrape(port))
    assert.equals(3, hs(text, "ok"))
    assert.equals(1, hs(text, "failed"))
    assert.falsy(text:find('listener="' .. tcp .. '",result', 1, true), text)
  end)

  it("counts a STARTTLS handshake under its plain listener", function ()
    local d = C.dir()
    local port = free_port()
    local srv = H.start{ model = model, script = "scripts/smtp_starttls.lua",
      args = { "--tcp", "127.0.0.1:0", "--tls-cert", d .. "/server.pem",
               "--tls-key", d .. "/server.key", "--timeout", "5",
               "--metrics", "127.0.0.1:" .. port } }
    local tcp = srv.listeners[1].address
    local labels = 'worker="1",listener="' .. tcp .. '",result="ok"'
    -- no --tls listener and no STARTTLS yet: no such series
    local _, text = scrape(port)
    assert.is_nil(value(text, "luasrv_tls_handshakes_total", labels), text)
    local out = run(("(sleep 0.3; printf 'EHLO me\\r\\nQUIT\\r\\n') | "
      .. "timeout 10 openssl s_client -starttls smtp -connect 127.0.0.1:%d "
      .. "-CAfile %s/ca.pem -verify_return_error -crlf -ign_eof 2>&1")
      :format(srv.tcp.port, d))
    assert.matches("Verify return code: 0 (ok)", out, 1, true)
    text = scrape_until(port, function (t)
      return value(t, "luasrv_tls_handshakes_total", labels) == 1 end)
    assert.equals(1, value(text, "luasrv_tls_handshakes_total", labels), text)
    assert.equals(0, value(text, "luasrv_tls_handshakes_total",
      'worker="1",listener="' .. tcp .. '",result="failed"'), text)
  end)

  it("gauges timers pending and running per worker, and counts their runs",
     function ()
    local up = assert(socket.bind("127.0.0.1", 0))
    local _, uport = up:getsockname()
    up:settimeout(5 * H.scale)
    H.defer(function () up:close() end)
    local port = free_port()
    -- each worker: three "every" timers and an "at" one cancelled stay
    -- pending; an "at" timer runs at once and waits for the spec's word
    local srv = H.start{ model = model, source = [[
local luasrv = require "luasrv"
local up = os.getenv("UP")
return {
  init = function ()
    for i = 1, 3 do luasrv.timer.every(3600, function () end) end
    assert(luasrv.timer.at(3600, function () end):cancel())
    luasrv.timer.at(0, function (premature)
      if premature then return end
      local c = assert(luasrv.connect(up, { timeout = 10 }))
      c:write("waiting\n")
      c:read("l")
      c:close()
    end)
  end,
  handle = function (req) req:write(req:read("l"), "\n") end,
}]], env = { UP = "tcp://127.0.0.1:" .. uport },
      args = { "--workers", "2", "--metrics", "127.0.0.1:" .. port } }
    local held = {}
    for i = 1, 2 do
      held[i] = assert(up:accept())
      held[i]:settimeout(5 * H.scale)
      assert.equals("waiting", held[i]:receive())
    end
    local function gauge (text, w, state)
      return value(text, "luasrv_timers",
                   ('worker="%d",state="%s"'):format(w, state))
    end
    local _, text = scrape(port)
    assert.truthy(text:find("# TYPE luasrv_timers gauge\n", 1, true), text)
    for w = 1, 2 do
      assert.equals(3, gauge(text, w, "pending"), text)
      assert.equals(1, gauge(text, w, "running"), text)
      assert.equals(1, value(text, "luasrv_timer_runs_total",
                             ('worker="%d"'):format(w)), text)
    end
    for i = 1, 2 do
      held[i]:send("go\n")
      held[i]:close()
    end
    text = scrape_until(port, function (t)
      return gauge(t, 1, "running") == 0 and gauge(t, 2, "running") == 0 end)
    for w = 1, 2 do
      assert.equals(3, gauge(text, w, "pending"), text)
      assert.equals(0, gauge(text, w, "running"), text)
      assert.equals(1, value(text, "luasrv_timer_runs_total",
                             ('worker="%d"'):format(w)), text)
    end
  end)


  it("a worker that dies with timers pending and a client connected: its "
     .. "replacement's counts, not the sum", function ()
    local port = free_port()
    local srv = H.start{ model = model, source = [[
local luasrv = require "luasrv"
return {
  init = function ()
    for i = 1, 3 do luasrv.timer.every(3600, function () end) end
  end,
  handle = function (req)
    req:read("l")
    req:write("ok\n")
  end,
}]], args = { "--metrics", "127.0.0.1:" .. port } }
    local labels = 'worker="1",state="pending"'
    local _, text = scrape(port)
    assert.equals(3, value(text, "luasrv_timers", labels), text)
    local held = srv:connect()  -- its handler waits for a line
    assert.truthy(H.eventually(function ()
      return value(select(2, scrape(port)), "luasrv_connections_open",
                   'worker="1"') == 1 end, 5 * H.scale))
    local worker = H.children(srv.pid)[1]
    os.execute("kill -KILL " .. worker)
    assert.truthy(srv:wait_stderr("starting a new one", 5 * H.scale, true),
                  srv:stderr())
    -- the replacement serves: its init has made its timers
    assert.truthy(H.eventually(function ()
      local kids = H.children(srv.pid)
      return #kids == 1 and kids[1] ~= worker end, 5 * H.scale))
    local c = srv:connect()
    c:settimeout(5 * H.scale)
    c:send("x\n")
    assert.equals("ok", c:receive())
    c:close()
    text = select(2, scrape(port))
    assert.equals(3, value(text, "luasrv_timers", labels), text)
    assert.truthy(H.eventually(function ()
      text = select(2, scrape(port))
      return value(text, "luasrv_connections_open", 'worker="1"') == 0
    end, 5 * H.scale), text)
    held:close()
  end)

end)

describe("--metrics", function ()
  it("an address in use: exit 1 with one error line", function ()
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    local code, _, err = T.run{ H.fixture("echo.lua"), "--tcp", "127.0.0.1:0",
                                "--metrics", "127.0.0.1:" .. port }
    s:close()
    assert.equals(1, code)
    assert.equals(1, #H.error_lines(err))
    assert.truthy(err:find("luasrv: error: --metrics: cannot listen on tcp://"
                           .. "127.0.0.1:" .. port, 1, true), err)
  end)
end)
