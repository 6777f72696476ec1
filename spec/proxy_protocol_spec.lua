-- --proxy-protocol: a stream client behind a proxy is the client the
-- PROXY header names (v1 text, v2 binary), proven with raw headers and
-- with a real haproxy (send-proxy, send-proxy-v2) in front; a connection
-- without a valid header is closed with one log line, no hook runs.
local H = require "helper"
local T = H.T
local socket = require "socket"

local WHO = [[
local luasrv = require "luasrv"
return {
  verify_request = function (addr) luasrv.log("verify", tostring(addr)) return true end,
  handle = function (req)
    local line = req:read("l")
    req:write(tostring(req.client_address), " ", line or "-", "\n")
  end,
}]]

local function ask_raw (srv, bytes)
  local c = srv:connect()
  c:settimeout(5 * H.scale)
  c:send(bytes)
  local r, err = c:receive()
  c:close()
  return r, err
end

local function v2 (ip, port)
  local a, b, cc, d = ip:match("(%d+)%.(%d+)%.(%d+)%.(%d+)")
  return "\r\n\r\n\0\r\nQUIT\n" .. "\x21\x11\0\12" ..
    string.char(tonumber(a), tonumber(b), tonumber(cc), tonumber(d)) ..
    "\127\0\0\1" .. string.pack(">I2I2", port, 80)
end

local free_port = H.free_port

H.for_models(function (model)

  it("v1 and v2 headers set client_address before verify_request", function ()
    local srv = H.start{ model = model, source = WHO,
                         args = { "--proxy-protocol" } }
    assert.equals("203.0.113.7:4242 hello",
      ask_raw(srv, "PROXY TCP4 203.0.113.7 127.0.0.1 4242 80\r\nhello\n"))
    assert.equals("[2001:db8::5]:6000 six",
      ask_raw(srv, "PROXY TCP6 2001:db8::5 ::1 6000 80\r\nsix\n"))
    assert.equals("198.51.100.9:5151 bin",
      ask_raw(srv, v2("198.51.100.9", 5151) .. "bin\n"))
    -- UNKNOWN: the proxy speaks for itself, the real peer stays
    assert.matches("^127%.0%.0%.1:%d+ own$",
      ask_raw(srv, "PROXY UNKNOWN\r\nown\n"))
    assert.truthy(srv:stderr():find("luasrv: verify 203.0.113.7:4242\n", 1, true))
  end)

  it("a header split across packets is waited for", function ()
    local srv = H.start{ model = model, source = WHO,
                         args = { "--proxy-protocol" } }
    local c = srv:connect()
    c:settimeout(5 * H.scale)
    c:send("PROXY TCP4 10.1.1.1 ")
    T.sleep(0.1)
    c:send("10.2.2.2 1000 2000\r\nlate\n")
    assert.equals("10.1.1.1:1000 late", c:receive())
  end)

  it("no header, or a bad one: closed with a log line, no hook runs",
     function ()
    local srv = H.start{ model = model, source = WHO,
                         args = { "--proxy-protocol" } }
    assert.is_nil((ask_raw(srv, "GET / HTTP/1.0\r\n\r\n")))
    assert.is_nil((ask_raw(srv, "PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\nx\n")))
    assert.truthy(srv:wait_stderr("closed a connection from 127.0.0.1:%d+: bad "
      .. "PROXY protocol header: the connection does not start with one", 3))
    assert.truthy(srv:wait_stderr("bad PROXY protocol header: v1 bad port", 3,
                                  true))
    assert.is_nil(srv:stderr():find("luasrv: verify", 1, true))
  end)

  for _, mode in ipairs { "send-proxy", "send-proxy-v2" } do
    it("behind a real haproxy (" .. mode .. "): the client is haproxy's client",
       function ()
      local srv = H.start{ model = model, source = WHO,
                           args = { "--proxy-protocol" } }
      local dir = H.tmpdir()
      local port = free_port()
      local cfg = dir .. "/haproxy.cfg"
      local f = assert(io.open(cfg, "w"))
      f:write(([[
defaults
  mode tcp
  timeout connect 5s
  timeout client 10s
  timeout server 10s
frontend fe
  bind 127.0.0.1:%d
  default_backend be
backend be
  server s1 127.0.0.1:%d %s
]]):format(port, srv.tcp.port, mode))
      f:close()
      local h = io.popen("exec haproxy -f '" .. cfg .. "' -db 2>&1 & echo $!")
      local pid = tonumber(h:read("l"))
      H.defer(function () os.execute("kill " .. pid .. " 2>/dev/null"); h:close() end)
      local c
      local deadline = T.now() + 5 * H.scale
      repeat
        c = socket.connect("127.0.0.1", port)
        if not c then T.sleep(0.05) end
      until c or T.now() > deadline
      assert.truthy(c, "haproxy did not start")
      c:settimeout(5 * H.scale)
      local _, me = c:getsockname()
      c:send("through haproxy\n")
      assert.equals("127.0.0.1:" .. me .. " through haproxy", c:receive())
      c:close()
    end)
  end

end)
