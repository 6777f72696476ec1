-- --tls listeners, proven with real clients: openssl s_client (SNI picks
-- the certificate, ALPN, client certificates), curl against
-- scripts/http.lua (keep-alive reuse, a chunked upload), Python's ssl
-- module, redis-cli --tls against scripts/resp.lua; a plaintext, garbage
-- or silent client is closed with one log line and no hook runs; bad
-- certificate files stop the start with one error line naming the file.
local H = require "helper"
local T = H.T
local C = require "tls_certs"

local INFO = [[
local luasrv = require "luasrv"
return {
  setup = function (req) luasrv.log("setup ran") end,
  handle = function (req)
    local line = req:read("l")
    local t = req.tls
    local p = t and t.peer
    req:write("transport=", req.server.transport, " version=", t.version,
      " sni=", tostring(t.sni), " alpn=", tostring(t.alpn),
      " resumed=", tostring(t.resumed), " peer=", p and p.subject or "nil",
      " issuer=", p and p.issuer or "nil", " serial=", p and p.serial or "nil",
      " fp=", p and p.fingerprint or "nil", " expiry=", p and p.expiry or "nil",
      " worker=", req.server.worker, " line=", tostring(line), "\n")
  end,
}]]

local function tls_args (d, more)
  local args = { "--tls", "127.0.0.1:0",
    "--tls-cert", d .. "/server.pem", "--tls-key", d .. "/server.key",
    "--tls-cert", d .. "/wild.pem", "--tls-key", d .. "/wild.key",
    "--timeout", "5" }
  for _, a in ipairs(more or {}) do args[#args + 1] = a end
  return args
end

-- runs a shell command; its output (stdout and stderr)
local run = H.output

-- openssl s_client to srv's listener with flags, sending line; its output
local function s_client (srv, flags, line)
  return run(("printf '%s\\n' | timeout 10 openssl s_client -connect " ..
    "127.0.0.1:%d -ign_eof %s"):format(line or "hi", srv.tls.port, flags))
end

H.for_models(function (model)

  it("serves TLS 1.3: req.tls, SNI picks the certificate, ALPN", function ()
    local d = C.dir()
    local srv = H.start{ model = model, source = INFO,
      args = tls_args(d, { "--tls-alpn", "h2,http/1.1" }) }
    assert.matches("listening on tls://127%.0%.0%.1:%d+", srv:stderr())
    local out = s_client(srv, "-servername localhost -CAfile " .. d ..
      "/ca.pem -verify_return_error -alpn http/1.1")
    assert.matches("Verify return code: 0 %(ok%)", out)
    assert.matches("subject=CN = localhost", out)
    assert.matches("ALPN protocol: http/1.1", out)
    assert.matches("transport=tls version=TLSv1.3 sni=localhost " ..
      "alpn=http/1.1 resumed=false peer=nil", out)
    assert.matches("line=hi", out, 1, true)
    -- the wildcard certificate for a name under example.test
    out = s_client(srv, "-servername www.example.test -CAfile " .. d ..
      "/ca.pem -verify_return_error -alpn h2,http/1.1")
    assert.matches("subject=CN = %*%.example%.test", out)
    assert.matches("Verify return code: 0 %(ok%)", out)
    assert.matches("ALPN protocol: h2", out)  -- the server's order
    -- no SNI, or one no certificate names: the first pair
    out = s_client(srv, "-noservername -CAfile " .. d .. "/ca.pem")
    assert.matches("subject=CN = localhost", out)
    assert.matches("sni=nil alpn=nil", out)
    out = s_client(srv, "-servername nobody.test -CAfile " .. d .. "/ca.pem")
    assert.matches("subject=CN = localhost", out)
    -- TLS 1.1 is refused by default
    out = s_client(srv, "-tls1_1 -CAfile " .. d .. "/ca.pem")
    assert.not_matches("transport=tls", out)
  end)

  it("closes plaintext, garbage and silent clients with a log line, no hook",
     function ()
    local d = C.dir()
    local srv = H.start{ model = model, source = INFO,
      args = tls_args(d, { "--timeout", "1" }) }
    local c = srv:connect("tls")
    c:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    local r, err = c:receive("a")
    assert.is_true(r == nil or r == "" or not r:find("HTTP/1"), tostring(r))
    assert(srv:wait_stderr("TLS handshake failed", 5))
    -- a silent client is closed at --timeout
    local s = srv:connect("tls")
    s:settimeout(6)
    local t0 = T.now()
    r, err = s:receive("a")
    assert.is_true(T.now() - t0 < 5 * H.scale)
    -- garbage, many times at once: the log line is rate-limited
    for _ = 1, 8 do
      local g = srv:connect("tls")
      g:send(string.rep("\22\3\1\0\5garbage", 20))
      g:receive("a")
      g:close()
    end
    T.sleep(0.2)
    local n = H.count(srv:stderr(), "TLS handshake failed", true)
    assert.is_true(n >= 1 and n <= 4, srv:stderr())
    assert.equals(0, H.count(srv:stderr(), "setup ran", true))
    assert.equals(0, H.count(srv:stderr(), "error handling", true))
  end)

  it("checks client certificates (--tls-verify-client)", function ()
    local d = C.dir()
    local srv = H.start{ model = model, source = INFO, args = tls_args(d,
      { "--tls-client-ca", d .. "/ca.pem", "--tls-verify-client", "required" }) }
    local out = s_client(srv, "-CAfile " .. d .. "/ca.pem -cert " .. d ..
      "/client.pem -key " .. d .. "/client.key")
    assert.matches("peer=CN=alice issuer=CN=luasrv test CA serial=%x+ " ..
      "fp=%x%x:[%x:]+ expiry=%a+ +%d+ [%d:]+ %d+ GMT", out)
    -- no certificate, and one from another CA: refused
    out = s_client(srv, "-CAfile " .. d .. "/ca.pem")
    assert.not_matches("transport=tls", out)
    out = s_client(srv, "-CAfile " .. d .. "/ca.pem -cert " .. d ..
      "/evil.pem -key " .. d .. "/evil.key")
    assert.not_matches("transport=tls", out)
    assert(srv:wait_stderr("TLS handshake failed", 5))
    assert.equals(1, H.count(srv:stderr(), "setup ran", true))  -- alice's
    srv:stop()
    -- optional: no certificate is served, peer nil
    srv = H.start{ model = model, source = INFO, args = tls_args(d,
      { "--tls-client-ca", d .. "/ca.pem", "--tls-verify-client", "optional" }) }
    out = s_client(srv, "-CAfile " .. d .. "/ca.pem")
    assert.matches("transport=tls .* peer=nil", out)
    out = s_client(srv, "-CAfile " .. d .. "/ca.pem -cert " .. d ..
      "/client.pem -key " .. d .. "/client.key")
    assert.matches("peer=CN=alice", out)
  end)

  it("serves scripts/http.lua to curl: keep-alive, chunked upload", function ()
    local d = C.dir()
    local srv = H.start{ model = model, script = "scripts/http.lua",
      args = tls_args(d) }
    local url = ("https://localhost:%d"):format(srv.tls.port)
    local out = run(("curl -sv --cacert %s/ca.pem %s/hello %s/hello 2>%s/v")
      :format(d, url, url, srv.dir))
    local verbose = C.read(srv.dir .. "/v")
    assert.equals("hello\nhello\n", out)
    assert.matches("Re-using existing connection", verbose, 1, true)
    assert.matches("SSL connection using TLSv1.3", verbose)
    local body = string.rep("0123456789", 3000)
    local f = io.open(srv.dir .. "/body", "w")
    f:write(body)
    f:close()
    out = run(("curl -s --cacert %s/ca.pem -H 'Transfer-Encoding: chunked' " ..
      "--data-binary @%s/body %s/echo"):format(d, srv.dir, url))
    assert.equals(body, out)
  end)

  it("resumes a session on any worker (shared ticket keys)", function ()
    local d = C.dir()
    local srv = H.start{ model = model, source = INFO,
      args = tls_args(d, { "--workers", "2" }) }
    local sess = srv.dir .. "/sess"
    local out = s_client(srv, "-CAfile " .. d .. "/ca.pem -sess_out " .. sess)
    local first = assert(out:match("worker=(%d)"), out)
    assert.matches("resumed=false", out)
    local other = false
    for _ = 1, 30 do
      out = s_client(srv, "-CAfile " .. d .. "/ca.pem -sess_in " .. sess)
      assert.matches("\nReused, TLSv1.3", out)
      assert.matches("resumed=true", out)
      if out:match("worker=(%d)") ~= first then other = true; break end
    end
    assert.is_true(other, "every resumed session was on worker " .. first)
  end)

  it("rotates the session ticket keys; a session lives across one rotation",
     function ()
    local d = C.dir()
    local srv = H.start{ model = model, source = INFO,
      args = tls_args(d, { "--tls-ticket-rotate", "2" }) }
    local sess = srv.dir .. "/sess"
    local function resume ()
      return s_client(srv, "-CAfile " .. d .. "/ca.pem -sess_in " .. sess)
    end
    local t0 = T.now()
    s_client(srv, "-CAfile " .. d .. "/ca.pem -sess_out " .. sess)
    assert.matches("\nReused, TLSv1.3", resume())
    -- one rotation later the key is the previous one: still resumed
    T.sleep(math.max(0, t0 + 2.6 - T.now()))
    assert.matches("\nReused, TLSv1.3", resume())
    -- two rotations later, gone: a full handshake
    T.sleep(math.max(0, t0 + 6.5 - T.now()))
    local out = resume()
    assert.matches("\nNew, TLSv1.3", out)
    assert.matches("resumed=false", out)
  end)

  it("upgrades with STARTTLS (scripts/smtp_starttls.lua)", function ()
    local d = C.dir()
    local srv = H.start{ model = model, script = "scripts/smtp_starttls.lua",
      args = { "--tcp", "127.0.0.1:0", "--tls-cert", d .. "/server.pem",
               "--tls-key", d .. "/server.key", "--timeout", "5" } }
    local out = run(("(sleep 0.3; printf 'EHLO me\\r\\nMAIL FROM:<a@b.test>\\r\\n" ..
      "QUIT\\r\\n') | timeout 10 openssl s_client -starttls smtp -connect " ..
      "127.0.0.1:%d -CAfile %s/ca.pem -verify_return_error -crlf -ign_eof")
      :format(srv.tcp.port, d))
    assert.matches("Verify return code: 0 (ok)", out, 1, true)
    assert.matches("New, TLSv1.3", out, 1, true)
    -- over TLS: EHLO offers STARTTLS no more, mail is accepted
    local after = out:match("\n%-%-%-\n(250%-luasrv.*)$") or out
    assert.not_matches("STARTTLS", after, 1, true)
    assert.matches("250 OK\r?\n221 bye", after)
    -- in plain text, mail is refused
    local c = srv:connect("tcp")
    assert.equals("220 luasrv ESMTP", c:receive())
    c:send("MAIL FROM:<a@b.test>\r\n")
    assert.equals("530 issue STARTTLS first", c:receive())
  end)

  it("req:starttls(opts): its own certificate and ALPN, clear errors",
     function ()
    local d = C.dir()
    local up = H.start{ model = model, source = ([[
local luasrv = require "luasrv"
local D = %q
local OPTS = {
  default = nil,
  other = { cert = D .. "/other.pem", key = D .. "/other.key", alpn = "x-test,x-two" },
  missing = { cert = D .. "/nope.pem" },
}
return { handle = function (req)
  local what = req:read("l")
  if what == "typo" then
    local ok, err = pcall(req.starttls, req, { ca = "ca.pem" })
    return req:write(tostring(ok), " ", err, "\n")
  end
  req:write("go\n")
  local ok, err = req:starttls(OPTS[what])
  if not ok then return luasrv.log("starttls failed: " .. err) end
  req:write("alpn=", tostring(req.tls.alpn), "\n")
end }]]):format(d), args = { "--tls-cert", d .. "/server.pem",
                            "--tls-key", d .. "/server.key" } }
    local srv = H.start{ model = model, source = H.RUNNER }
    local r = H.ask(srv, ([[
      local function upgrade (what, sni)
        local c = assert(luasrv.connect("tcp://127.0.0.1:%d"))
        c:write(what, "\n")
        c:read("l")
        local ok, err = c:starttls({ ca = "%s/ca.pem", sni = sni, alpn = "x-two" })
        if not ok then return err end
        local line = c:read("l")
        local subject = c.tls.peer.subject
        c:close()
        return subject .. " " .. line
      end
      local c = assert(luasrv.connect("tcp://127.0.0.1:%d"))
      c:write("typo\n")
      local typo = c:read("l")
      c:close()
      return upgrade("default", "localhost"), upgrade("other", "other.test"),
             typo, upgrade("missing", "localhost")]]):format(up.tcp.port, d,
                                                              up.tcp.port))
    assert.equals("CN=localhost alpn=nil", r[1])
    assert.equals("CN=other.test alpn=x-two", r[2])
    assert.matches("^false .*bad option 'ca' to 'starttls'", r[3])  -- a client option
    assert.is_string(r[4])  -- the handshake never came: the server hung up
    assert(up:wait_stderr("starttls failed: cert " .. d .. "/nope.pem: " ..
                          "No such file or directory", 5, true), up:stderr())
  end)

  it("SIGHUP reloads the certificate; no request fails", function ()
    local d = C.dir()
    local dir = T.tmpdir()
    H.defer(function () os.execute("rm -rf " .. dir) end)
    C.sh(("cp %s/server.pem %s/cert.pem && cp %s/server.key %s/key.pem")
      :format(d, dir, d, dir))
    local srv = H.start{ model = model, script = "scripts/http.lua",
      args = { "--tls", "127.0.0.1:0", "--tls-cert", dir .. "/cert.pem",
               "--tls-key", dir .. "/key.pem", "--grace", "5" } }
    local function serial ()
      return run(("echo | timeout 10 openssl s_client -connect 127.0.0.1:%d " ..
        "-servername localhost 2>/dev/null | openssl x509 -noout -serial")
        :format(srv.tls.port))
    end
    assert.equals("serial=65\n", serial())
    local sess = dir .. "/sess"
    s_client(srv, "-CAfile " .. d .. "/ca.pem -sess_out " .. sess)
    -- requests all along the reload
    local loop = io.popen(("for i in $(seq 60); do curl -s -o /dev/null -w " ..
      "'%%{http_code}\\n' --cacert %s/ca.pem https://localhost:%d/hello || " ..
      "echo FAIL; sleep 0.02; done"):format(d, srv.tls.port))
    T.sleep(0.3)
    C.sh(("cp %s/server2.pem %s/cert.pem && cp %s/server2.key %s/key.pem")
      :format(d, dir, d, dir))
    srv:signal("HUP")
    assert(srv:wait_stderr("reloaded", 10), srv:stderr())
    local codes = loop:read("a")
    loop:close()
    assert.equals(60, H.count(codes, "200\n", true), codes)
    assert.equals("serial=66\n", serial())
    -- a session from before the reload resumes after it
    assert.matches("\nReused, TLSv1.3",
      s_client(srv, "-CAfile " .. d .. "/ca.pem -sess_in " .. sess))
    -- a certificate that does not load: the old one keeps serving
    C.sh("echo garbage > " .. dir .. "/cert.pem")
    srv:signal("HUP")
    assert(srv:wait_stderr("reload failed", 10), srv:stderr())
    assert.matches("reload failed.*cert%.pem", srv:stderr())
    assert.equals("serial=66\n", serial())
  end)

  it("a reload whose script fails leaves the old certificates to the old " ..
     "workers, respawned ones too", function ()
    local d = C.dir()
    local dir = T.tmpdir()
    H.defer(function () os.execute("rm -rf " .. dir) end)
    C.sh(("cp %s/server.pem %s/cert.pem && cp %s/server.key %s/key.pem")
      :format(d, dir, d, dir))
    local srv = H.start{ model = model,
      source = "return { handle = function (req) req:write('old\\n') end }",
      args = { "--tls", "127.0.0.1:0", "--tls-cert", dir .. "/cert.pem",
               "--tls-key", dir .. "/key.pem", "--workers", "1" } }
    local function subject ()
      return run(("echo | timeout 10 openssl s_client -connect 127.0.0.1:%d " ..
        "-servername localhost 2>/dev/null | openssl x509 -noout -subject")
        :format(srv.tls.port))
    end
    assert.equals("subject=CN = localhost\n", subject())
    -- new certificates that load, and a script that does not
    C.sh(("cp %s/other.pem %s/cert.pem && cp %s/other.key %s/key.pem")
      :format(d, dir, d, dir))
    local f = assert(io.open(srv.script, "w"))
    f:write("return { handle = function (req) oops oops end }\n")
    f:close()
    srv:signal("HUP")
    assert(srv:wait_stderr("reload failed", 10), srv:stderr())
    assert.equals("subject=CN = localhost\n", subject())
    -- the old generation's worker dies: the one that replaces it is of
    -- the old generation, with the certificates the master read for it
    -- (a worker reads the script from its file when it starts: put the
    -- good one back; the new certificate stays on disk)
    f = assert(io.open(srv.script, "w"))
    f:write("return { handle = function (req) req:write('old\\n') end }\n")
    f:close()
    local kids = H.children(srv.pid)
    assert.equals(1, #kids)
    os.execute("kill -KILL " .. kids[1])
    assert(srv:wait_stderr("starting a new one", 10), srv:stderr())
    assert(H.eventually(function ()
      local now = H.children(srv.pid)
      return #now == 1 and now[1] ~= kids[1]
    end, 10), srv:stderr() .. table.concat(H.children(srv.pid), ","))
    assert(H.eventually(function ()
      return subject() ~= ""
    end, 10))
    assert.equals("subject=CN = localhost\n", subject())
  end)

  it("reads --proxy-protocol's header and runs verify_request before the " ..
     "handshake", function ()
    local d = C.dir()
    local srv = H.start{ model = model, source = [[
local luasrv = require "luasrv"
return {
  verify_request = function (addr)
    luasrv.log("verify " .. tostring(addr))
    return addr.host ~= "10.9.9.9"
  end,
  handle = function (req)
    req:read("l")
    req:write("from ", tostring(req.client_address), " over ", req.tls.version, "\n")
  end,
}]], args = tls_args(d, { "--proxy-protocol" }) }
    local py = [[python3 -c '
import socket, ssl, sys
ctx = ssl.create_default_context(cafile="%s/ca.pem")
s = socket.create_connection(("127.0.0.1", %d), timeout=5)
s.sendall(b"PROXY TCP4 %s 127.0.0.1 5555 443\r\n")
try:
    t = ctx.wrap_socket(s, server_hostname="localhost")
    t.sendall(b"hi\n")
    print(t.recv(4096).decode(), end="")
except (ssl.SSLError, OSError) as e:
    print("refused", type(e).__name__)
']]
    local out = run(py:format(d, srv.tls.port, "10.1.2.3"))
    assert.equals("from 10.1.2.3:5555 over TLSv1.3\n", out)
    -- refused by verify_request: closed before any TLS, so no handshake log
    out = run(py:format(d, srv.tls.port, "10.9.9.9"))
    assert.matches("^refused", out)
    assert(srv:wait_stderr("verify 10.9.9.9:5555", 5, true))
    assert.equals(0, H.count(srv:stderr(), "TLS handshake failed", true))
  end)

  it("serves Python's ssl module", function ()
    local d = C.dir()
    local srv = H.start{ model = model, source = INFO, args = tls_args(d) }
    local out = run(([[python3 -c '
import socket, ssl
ctx = ssl.create_default_context(cafile="%s/ca.pem")
with socket.create_connection(("127.0.0.1", %d), timeout=5) as s:
    with ctx.wrap_socket(s, server_hostname="localhost") as t:
        t.sendall(b"from python\n")
        print(t.version(), t.recv(4096).decode())
']]):format(d, srv.tls.port))
    assert.matches("^TLSv1.3 transport=tls version=TLSv1.3 sni=localhost", out)
    assert.matches("line=from python", out, 1, true)
  end)

  it("req:recv with same compares the decrypted bytes", function ()
    local d = C.dir()
    local srv = H.start{ model = model, args = tls_args(d),
      script = H.fixture("recv_same.lua") }
    local out = run(([[python3 -c '
import socket, ssl, time
ctx = ssl.create_default_context(cafile="%s/ca.pem")
with socket.create_connection(("127.0.0.1", %d), timeout=5) as s:
    with ctx.wrap_socket(s, server_hostname="localhost") as t:
        f = t.makefile("rb")
        for m in (b"ping\n", b"ping\n", b"pong\n", b"ping\nping\n", b"ping\n"):
            t.sendall(m)
            print(f.readline().decode().strip())
            time.sleep(0.05)
']]):format(d, srv.tls.port))
    assert.equals("same\nsame\nother 5\nother 10\nsame\n", out)
  end)

  it("serves scripts/resp.lua to redis-cli --tls", function ()
    local d = C.dir()
    local srv = H.start{ model = model, script = "scripts/resp.lua",
      args = tls_args(d) }
    local cli = ("timeout 10 redis-cli --tls --cacert %s/ca.pem -h 127.0.0.1 -p %d ")
      :format(d, srv.tls.port)
    assert.equals("PONG\n", run(cli .. "PING"))
    -- one connection (the fork model's children share no data)
    assert.equals("OK\nv\n", run("printf 'SET k v\\nGET k\\n' | " .. cli))
  end)

end)

describe("--tls options", function ()

  it("serves TLS on a socket systemd passed", function ()
    local d = C.dir()
    local dir = T.tmpdir()
    H.defer(function () os.execute("rm -rf " .. dir) end)
    local port = H.free_port()
    os.execute(("systemd-socket-activate -l 127.0.0.1:%d %s scripts/echo.lua " ..
      "--tls 127.0.0.1:%d --tls-cert %s/server.pem --tls-key %s/server.key --once " ..
      ">/dev/null 2>%s/err </dev/null & echo $! >%s/pid"):format(port, T.bin,
      port, d, d, dir, dir))
    local function read (name)
      local f = io.open(dir .. "/" .. name)
      local s = f and f:read("a") or ""
      if f then f:close() end
      return s
    end
    for _ = 1, 250 do
      if read("err"):find("Listening on", 1, true) and read("pid") ~= "" then break end
      T.sleep(0.02)
    end
    local pid = assert(tonumber(read("pid")))
    H.defer(function () os.execute("kill " .. pid .. " 2>/dev/null") end)
    local out = run(("(printf 'activated\\n'; sleep 1) | timeout 10 openssl " ..
      "s_client -connect 127.0.0.1:%d -CAfile %s/ca.pem -verify_return_error")
      :format(port, d))
    assert.matches("activated", out, 1, true)
    assert.matches("listening on tls://127.0.0.1:" .. port, C.read(dir .. "/err"), 1, true)
  end)

  it("bad files stop the start with one error line naming the file", function ()
    local d = C.dir()
    local cases = {
      { d .. "/nope.pem", d .. "/server.key", "nope.pem" },
      { d .. "/server.pem", d .. "/client.key", "does not match" },
      { d .. "/server.ext", d .. "/server.key", "server.ext" },
      { d .. "/server.pem", d .. "/server.ext", "server.ext" },
    }
    for _, case in ipairs(cases) do
      local code, _, err = T.run{ "{script}", "--tls", "127.0.0.1:0",
        "--tls-cert", case[1], "--tls-key", case[2],
        source = "return { handle = function () end }" }
      assert.equals(1, code)
      local lines = H.error_lines(err)
      assert.equals(1, #lines, err)
      assert.matches(case[3], lines[1], 1, true)
      assert.equals(0, H.count(err, "listening on", true))
    end
    local code, _, err = T.run{ "{script}", "--tls", "127.0.0.1:0",
      source = "return { handle = function () end }" }
    assert.equals(2, code)
    assert.matches("--tls needs a certificate", err, 1, true)
  end)

  it("TLS 1.3 prefers AES-128-GCM, and ChaCha20 for a client that asks for it first",
     function ()
    local d = C.dir()
    local srv = H.start{ model = model, source = INFO, args = tls_args(d) }
    local function cipher (suites)
      local out = s_client(srv, "-tls1_3 -servername localhost -CAfile " ..
        d .. "/ca.pem -verify_return_error" ..
        (suites and " -ciphersuites " .. suites or ""))
      assert.matches("line=hi", out, 1, true)
      return out:match("Cipher is (%S+)")
    end
    -- OpenSSL's own order (AES-256 first): the server's order wins
    assert.equals("TLS_AES_128_GCM_SHA256", cipher(nil))
    assert.equals("TLS_CHACHA20_POLY1305_SHA256",
      cipher("TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"))
    assert.equals("TLS_AES_256_GCM_SHA384", cipher("TLS_AES_256_GCM_SHA384"))
  end)

  it("--tls-ciphersuites sets the TLS 1.3 suites, from a config file too",
     function ()
    local d = C.dir()
    local conf = T.tmpdir() .. "/tls.conf"
    local f = assert(io.open(conf, "w"))
    f:write("tls-ciphersuites TLS_CHACHA20_POLY1305_SHA256\n")
    f:close()
    local srv = H.start{ model = model, source = INFO, config = conf,
      args = tls_args(d) }
    local out = s_client(srv, "-tls1_3 -servername localhost -CAfile " .. d ..
      "/ca.pem -verify_return_error")
    assert.matches("Cipher is TLS_CHACHA20_POLY1305_SHA256", out, 1, true)
    assert.matches("line=hi", out, 1, true)
    -- a client that offers only a suite the list leaves out: no handshake
    out = s_client(srv, "-tls1_3 -ciphersuites TLS_AES_128_GCM_SHA256 " ..
      "-servername localhost -CAfile " .. d .. "/ca.pem")
    assert.not_matches("line=hi", out, 1, true)
    assert(srv:wait_stderr("TLS handshake failed", 5), srv:stderr())
    -- a list OpenSSL does not accept: one error line, exit 1
    local code, _, err = T.run{ "{script}", "--tls", "127.0.0.1:0",
      "--tls-cert", d .. "/server.pem", "--tls-key", d .. "/server.key",
      "--tls-ciphersuites", "TLS_NOPE",
      source = "return { handle = function () end }" }
    assert.equals(1, code)
    assert.equals("luasrv: error: --tls-ciphersuites TLS_NOPE: no cipher match\n",
                  err)
  end)

end)
