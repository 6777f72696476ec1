-- luasrv.connect("tls://...") against real TLS servers the spec starts:
-- openssl s_server and Debian's redis-server on its --tls-port.
-- Verification is on by default: an untrusted CA, a wrong host name and
-- an expired certificate each fail with OpenSSL's reason; conn.tls; the
-- keep-alive pool keeps TLS connections under the TLS options.
local H = require "helper"
local T = H.T
local C = require "tls_certs"

-- starts a command in the background; returns its pid (killed at the end)
local function spawn (cmd, log)
  local p = io.popen(("sh -c 'echo $$; exec %s' >%s 2>&1 &"):format(cmd, log))
  p:close()
  local pid
  for _ = 1, 100 do
    local f = io.open(log)
    local first = f and f:read("l")
    if f then f:close() end
    pid = tonumber(first)
    if pid then break end
    T.sleep(0.02)
  end
  assert(pid, "could not start " .. cmd)
  H.defer(function () os.execute("kill " .. pid .. " 2>/dev/null") end)
  return pid
end

-- waits until 127.0.0.1:port accepts
local function wait_port (port)
  local socket = require "socket"
  for _ = 1, 250 do
    local c = socket.tcp()
    c:settimeout(0.2)
    if c:connect("127.0.0.1", port) then c:close(); return end
    c:close()
    T.sleep(0.02)
  end
  error("nothing listens on " .. port)
end

-- openssl s_server reversing each line, with cert (a name in C.dir())
local function s_server (cert, flags)
  local d, port = C.dir(), H.free_port()
  local log = os.tmpname()
  H.defer(function () os.remove(log) end)
  spawn(("openssl s_server -accept 127.0.0.1:%d -cert %s/%s.pem -key %s/%s.key " ..
         "-rev -quiet %s"):format(port, d, cert, d, cert, flags or ""), log)
  wait_port(port)
  return port, log
end

H.for_models(function (model)

  local function runner ()
    return H.start{ model = model, source = H.RUNNER, args = { "--timeout", "10" } }
  end

  it("talks TLS to openssl s_server with verification on", function ()
    local d = C.dir()
    local port = s_server("server")
    local srv = runner()
    local r = H.ask(srv, ([[
      local c, err = luasrv.connect("tls://localhost:%d", { ca = "%s/ca.pem" })
      if not c then return nil, err end
      c:write("hello tls\n")
      local line = c:read("l")
      local t = c.tls
      c:close()
      return line, t.version, t.sni, t.cipher ~= nil, t.peer.subject
    ]]):format(port, d))
    assert.same({ "slt olleh", "TLSv1.3", "localhost", true, "CN=localhost", n = 5 }, r)
  end)

  it("resumes the session when it connects again", function ()
    local d = C.dir()
    local port = s_server("server")
    local srv = runner()
    local r = H.ask(srv, ([[
      local resumed = {}
      for i = 1, 3 do
        local c = assert(luasrv.connect("tls://localhost:%d", { ca = "%s/ca.pem" }))
        c:write("abc\n")
        c:read("l")
        resumed[i] = c.tls.resumed
        c:close()
      end
      return table.unpack(resumed)]]):format(port, d))
    assert.same({ false, true, true, n = 3 }, r)
  end)

  it("fails with OpenSSL's reason: untrusted CA, wrong name, expired", function ()
    local d = C.dir()
    local port = s_server("server")
    local srv = runner()
    -- the system's store does not know the test CA
    local r = H.ask(srv, ([[
      return luasrv.connect("tls://localhost:%d")]]):format(port))
    assert.is_nil(r[1])
    assert.matches("^certificate verify failed: unable to get local issuer certificate", r[2])
    -- a name the certificate does not hold
    r = H.ask(srv, ([[
      return luasrv.connect("tls://127.0.0.1:%d", { ca = "%s/ca.pem", sni = "other.test" })]])
      :format(port, d))
    assert.is_nil(r[1])
    assert.matches("^certificate verify failed: hostname mismatch", r[2])
    -- an IP address is checked against the certificate's IP names
    r = H.ask(srv, ([[
      local c, err = luasrv.connect("tls://127.0.0.1:%d", { ca = "%s/ca.pem" })
      if c then c:close() end
      return c ~= nil, err]]):format(port, d))
    assert.same({ true, nil, n = 2 }, r)
    -- an expired certificate
    local eport = s_server("expired")
    r = H.ask(srv, ([[
      return luasrv.connect("tls://localhost:%d", { ca = "%s/ca.pem" })]]):format(eport, d))
    assert.is_nil(r[1])
    assert.matches("^certificate verify failed: certificate has expired", r[2])
    -- verify = false takes any certificate
    r = H.ask(srv, ([[
      local c, err = luasrv.connect("tls://localhost:%d", { verify = false })
      if not c then return nil, err end
      c:write("abc\n")
      local line = c:read("l")
      c:close()
      return line]]):format(eport))
    assert.same({ "cba", n = 1 }, r)
    -- a session made without verification is never offered with it
    r = H.ask(srv, ([[
      return luasrv.connect("tls://localhost:%d", { ca = "%s/ca.pem" })]]):format(eport, d))
    assert.is_nil(r[1])
    assert.matches("^certificate verify failed: certificate has expired", r[2])
  end)

  it("offers ALPN and a client certificate", function ()
    local d = C.dir()
    local port, log = s_server("server", "-alpn h2 -Verify 1 -CAfile " .. d .. "/ca.pem")
    local srv = runner()
    local r = H.ask(srv, ([[
      local c, err = luasrv.connect("tls://localhost:%d", { ca = "%s/ca.pem",
        alpn = { "h2", "http/1.1" }, cert = "%s/client.pem", key = "%s/client.key" })
      if not c then return nil, err end
      c:write("x\n")
      local line = c:read("l")
      local alpn = c.tls.alpn
      c:close()
      return line, alpn, c.tls == nil]]):format(port, d, d, d))
    assert.same({ "x", "h2", true, n = 3 }, r)
    local s = C.read(log)
    assert.matches("CN = alice", s, 1, true)
  end)

  it("upgrades an outbound connection with conn:starttls", function ()
    local d = C.dir()
    local smtp = H.start{ model = model, script = "scripts/smtp_starttls.lua",
      args = { "--tcp", "127.0.0.1:0", "--tls-cert", d .. "/server.pem",
               "--tls-key", d .. "/server.key" } }
    local srv = runner()
    local r = H.ask(srv, ([[
      local c = assert(luasrv.connect("tcp://127.0.0.1:%d"))
      local greeting = c:read("l")
      c:write("STARTTLS\r\n")
      local go = c:read("l")
      local ok, err = c:starttls({ ca = "%s/ca.pem", sni = "localhost" })
      if not ok then return nil, err end
      local again = { c:starttls() }
      c:write("EHLO me\r\n")
      local first = c:read("l")
      c:write("QUIT\r\n")
      local bye
      repeat bye = c:read("l") until bye == nil or bye:match("^221")
      local version = c.tls.version
      c:close()
      return greeting, go, ok == c, version, first, bye, again[1], again[2]
    ]]):format(smtp.tcp.port, d))
    assert.same({ "220 luasrv ESMTP\r", "220 ready to start TLS\r", true,
      "TLSv1.3", "250-luasrv\r", "221 bye\r", nil, "already TLS", n = 8 }, r)
    -- an untrusted certificate: nil and OpenSSL's reason, the connection closed
    r = H.ask(srv, ([[
      local c = assert(luasrv.connect("tcp://127.0.0.1:%d"))
      c:read("l")
      c:write("STARTTLS\r\n")
      c:read("l")
      local ok, err = c:starttls({ sni = "localhost" })
      return ok, err, (c:write("x"))]]):format(smtp.tcp.port))
    assert.is_nil(r[1])
    assert.matches("^certificate verify failed", r[2])
    assert.is_nil(r[3])
  end)

  it("conn:starttls verifies the host given to connect, or its IP address",
     function ()
    local d = C.dir()
    -- a plain protocol that upgrades after "x"; the certificate names
    -- localhost and no IP address
    local up = H.start{ model = model, source = [[
return { handle = function (req)
  if req:read("l") ~= "x" then return end
  req:write("go\n")
  if not req:starttls() then return end
  req:write("sni=", tostring(req.tls.sni), "\n")
end }]], args = { "--tls-cert", d .. "/named.pem", "--tls-key", d .. "/named.key" } }
    local srv = runner()
    local r = H.ask(srv, ([[
      local function upgrade (url)
        local c = assert(luasrv.connect(url))
        c:write("x\n")
        c:read("l")
        local ok, err = c:starttls({ ca = "%s/ca.pem" })
        if not ok then return err end
        local sni = c:read("l")
        c:close()
        return sni
      end
      local c = assert(luasrv.connect("tcp://localhost:%d"))
      assert(c:setkeepalive())
      c = assert(luasrv.connect("tcp://localhost:%d"))
      local reused = c:getreusedtimes()
      c:write("x\n")
      c:read("l")
      local ok, err = c:starttls({ ca = "%s/ca.pem" })
      local pooled = ok and c:read("l") or err
      c:close()
      return upgrade("tcp://localhost:%d"), upgrade("tcp://127.0.0.1:%d"),
             reused, pooled]]):format(d, up.tcp.port, up.tcp.port, d,
                                      up.tcp.port, up.tcp.port))
    -- by name; by IP address; made to the name, pooled and taken again
    assert.same({ "sni=localhost",
      "certificate verify failed: IP address mismatch", 1, "sni=localhost",
      n = 4 }, r)
  end)

  it("talks to redis-server --tls-port and pools the connection", function ()
    local d = C.dir()
    local port = H.redis_server{ tls = d }
    local srv = runner()
    local r = H.ask(srv, ([[
      local url, opts = "tls://localhost:%d", { ca = "%s/ca.pem" }
      local c, err = luasrv.connect(url, opts)
      if not c then return nil, err end
      c:write("SET tlskey hello\r\nGET tlskey\r\n")
      local a, b, v = c:read("l", "l", "l")
      assert(c:setkeepalive())
      local c2 = assert(luasrv.connect(url, opts))
      local reused = c2:getreusedtimes()
      c2:write("PING\r\n")
      local pong = c2:read("l")
      c2:close()
      local c3 = assert(luasrv.connect(url, { ca = "%s/ca.pem", sni = "localhost" }))
      local other = c3:getreusedtimes()
      c3:close()
      return a, v, reused, pong, other, c2.tls == nil]]):format(port, d, d))
    assert.same({ "+OK\r", "hello\r", 1, "+PONG\r", 0, true, n = 6 }, r)
  end)

end)

describe("model fork", function ()

  it("a child leaves the session of its parent's pooled connection alone", function ()
    local d = C.dir()
    local port = H.redis_server{ tls = d }
    local url = ("tls://localhost:%d"):format(port)
    local ca = d .. "/ca.pem"
    local srv = H.start{ model = "fork", source = ([[
local luasrv = require "luasrv"
local url, opts = %q, { ca = %q }
return {
  init = function ()  -- the worker pools a connection before any fork
    local c = assert(luasrv.connect(url, opts))
    c:write("PING\r\n")
    c:read("l")
    assert(c:setkeepalive())
  end,
  handle = function (req)
    req:read("l")
    local c = assert(luasrv.connect(url, opts))  -- the parent's is not ours
    luasrv.sleep(0.3)
    c:write("CLIENT LIST\r\n")
    local head = c:read("l")
    local list = c:read(tonumber(head:match("%%d+")) + 2)
    local _, n = list:gsub("id=", "")
    req:write(n, " ", c:getreusedtimes(), "\n")
    c:close()
  end,
}]]):format(url, ca) }
    local c = srv:connect()
    c:send("go\n")
    assert.equals("2 0", c:receive())  -- the pooled one is still open
  end)

end)

