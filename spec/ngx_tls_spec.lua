-- luasrv.ngx over TLS: tcpsock:sslhandshake on a raw ngx.socket.tcp
-- against openssl s_server (a session object or true; ssl_verify off by
-- default as in OpenResty, on against $LUASRV_NGX_SSL_TRUSTED_CERTIFICATE
-- with server_name checked), OpenResty's lua-resty-websocket client
-- (Debian's, unmodified) over wss:// against Node's ws on https, a raw
-- socket to redis-server's --tls-port (pooled: a second handshake on a
-- reused TLS socket succeeds at once), and ngx.worker.exiting() turning
-- true once the worker stops, in requests and timers' premature runs.
local H = require "helper"
local N = require "ngx_helper"
local C = require "tls_certs"
local T = H.T

-- openssl s_server reversing each line, with cert (a name in C.dir())
local function s_server (cert)
  local d, port = C.dir(), H.free_port()
  N.daemon(("openssl s_server -accept 127.0.0.1:%d -cert %s/%s.pem " ..
            "-key %s/%s.key -rev -quiet"):format(port, d, cert, d, cert))
  N.wait_port(port)
  return port
end

local have_node = N.have("node")
local maybe_node = have_node and it or pending

local function wss_server ()
  local d = C.dir()
  N.fixtures()
  local _, log = N.daemon("env NODE_PATH=" .. N.quote(N.node_modules) ..
    " WSS_CERT=" .. d .. "/server.pem WSS_KEY=" .. d .. "/server.key" ..
    " node spec/fixtures/ngx_wss_server.js")
  local port = H.eventually(function ()
    return tonumber(N.read(log):match("listening (%d+)"))
  end, 10)
  assert(port, "the wss server did not start: " .. N.read(log))
  return port
end

H.for_models(function (model)

  local function runner ()
    return N.start{ model = model, source = N.RUNNER,
      env = { LUASRV_NGX_SSL_TRUSTED_CERTIFICATE = C.dir() .. "/ca.pem" } }
  end

  it("tcpsock:sslhandshake against openssl s_server", function ()
    local port = s_server("server")
    local srv = runner()
    local r = N.ask(srv, [[
      local sock = ngx.socket.tcp()
      sock:settimeout(5000)
      assert(sock:connect("127.0.0.1", PORT))
      local sess, err = sock:sslhandshake(nil, "localhost", true)
      if not sess then return nil, err end
      assert(sock:send("hello tls\n"))
      local line = sock:receive("*l")
      sock:close()
      local s2 = ngx.socket.tcp()
      assert(s2:connect("localhost", PORT))
      local ok = s2:sslhandshake(false, "localhost", true)
      s2:send("abc\n")
      local line2 = s2:receive()
      s2:close()
      return type(sess), tostring(sess), line, ok, line2 ]], { PORT = port })
    assert.same({ "table", "ngx.ssl.session", "slt olleh", true, "cba", n = 5 }, r)
  end)

  it("ssl_verify: off by default, on checks the CA and server_name", function ()
    local good, expired = s_server("server"), s_server("expired")
    local srv = runner()
    local r = N.ask(srv, [[
      local function shake (port, name, verify)
        local sock = ngx.socket.tcp()
        sock:settimeout(5000)
        assert(sock:connect("127.0.0.1", port))
        local ok, err = sock:sslhandshake(nil, name, verify)
        if not ok then return err, sock:send("x") end
        sock:send("ok\n")
        local line = sock:receive()
        sock:close()
        return line
      end
      local a = shake(EXPIRED)
      local b, sent = shake(EXPIRED, "localhost", true)
      local c = shake(GOOD, "other.test", true)
      local d = shake(GOOD, "other.test", false)
      return a, b, sent, c, d ]], { GOOD = good, EXPIRED = expired })
    assert.equals("ko", r[1])
    assert.matches("^certificate verify failed: certificate has expired", r[2])
    assert.is_nil(r[3])  -- a failed handshake closes the socket
    assert.matches("^certificate verify failed: hostname mismatch", r[4])
    assert.equals("ko", r[5])
  end)

  maybe_node("resty.websocket.client talks wss:// to Node's ws", function ()
    local port = wss_server()
    local srv = runner()
    local r = N.ask(srv, [[
      local client = require "resty.websocket.client"
      local wb = assert(client:new{ timeout = 5000 })
      local ok, err = wb:connect("wss://127.0.0.1:" .. PORT .. "/",
                                 { ssl_verify = true })
      if not ok then return nil, err end
      assert(wb:send_text("over tls"))
      local data, typ = wb:recv_frame()
      wb:close()
      return data, typ ]], { PORT = port })
    assert.same({ "over tls", "text", n = 2 }, r)
  end)

  it("ngx.worker.exiting() is true once the worker stops", function ()
    local srv = N.start{ model = model, args = { "--grace", "10" }, body = [[
local luasrv = require "luasrv"
return { init = function ()
  assert(ngx.timer.at(60, function (premature)
    luasrv.log("premature", premature, "exiting", ngx.worker.exiting())
  end))
end, handle = function (req)
  local what = req:read("l")
  if what == "wait" then
    req:write("waiting\n")
    req:flush()
    luasrv.sleep(1.5)
  end
  req:write(tostring(ngx.worker.exiting()), "\n")
end }]] }
    local c = srv:connect()
    c:send("now\n")
    assert.equals("false", c:receive())
    c:close()
    c = srv:connect()
    c:send("wait\n")
    assert.equals("waiting", c:receive())
    srv:signal("TERM")
    c:settimeout(8)
    assert.equals("true", c:receive())
    assert(srv:wait_stderr("premature true exiting true", 5, true), srv:stderr())
  end)

  it("tcpsock:sslhandshake to redis-server --tls-port", function ()
    local d = C.dir()
    local port = H.redis_server{ tls = d }
    local srv = runner()
    local r = N.ask(srv, [[
      local sock = ngx.socket.tcp()
      sock:settimeout(5000)
      assert(sock:connect("127.0.0.1", PORT))
      local ok, err = sock:sslhandshake(false, "localhost", true)
      if not ok then return nil, err end
      sock:send({ "PING\r\n", "SET ngxtls ", 42, "\r\n", "GET ngxtls\r\n" })
      local a, b, _, v = sock:receive(), sock:receive(), sock:receive(),
                         sock:receive()
      assert(sock:setkeepalive())
      local again = ngx.socket.tcp()
      assert(again:connect("127.0.0.1", PORT))
      local reused = again:getreusedtimes()
      local ok2 = again:sslhandshake(false, "localhost", true)
      again:send("PING\r\n")
      local pong = again:receive()
      again:close()
      return ok, a, b, v, reused, ok2, pong ]], { PORT = port })
    assert.same({ true, "+PONG", "+OK", "42", 1, true, "+PONG", n = 7 }, r)
  end)

end)
