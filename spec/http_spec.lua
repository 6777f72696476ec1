-- scripts/http.lua (and lua/luasrv/http.lua under it), driven by curl and
-- wrk (Debian's curl and wrk) and by raw sockets for what curl will not
-- send: malformed requests, oversized headers, pipelined requests.
local H = require "helper"
local T = H.T
local cjson = require "cjson"

local SCRIPT = "scripts/http.lua"
local MAX_BODY = 65536          -- HTTP_MAX_BODY for the server under test

local quote = H.quote

local function have (cmd)
  return os.execute("command -v " .. cmd .. " >/dev/null 2>&1") == true
end

-- runs a shell command (bounded by timeout); its stdout, stderr, success
local function sh (dir, cmd)
  local err = dir .. "/cmd.err"
  local p = io.popen("timeout -k 2 20 " .. cmd .. " 2>" .. quote(err))
  local out = p:read("a")
  local ok = p:close()
  local f = io.open(err, "rb")
  local e = f and f:read("a") or ""
  if f then f:close() end
  return out, e, ok
end

-- curl with its arguments, quoted; its stdout, stderr and success
local function curl (srv, ...)
  local args = { "curl", "-sS", "--max-time", "10" }
  for _, a in ipairs{ ... } do args[#args + 1] = quote(a) end
  return sh(srv.dir, table.concat(args, " "))
end

local function url (srv, path)
  return "http://127.0.0.1:" .. srv.tcp.port .. path
end

-- a file of n bytes with every byte value in it; its path and contents
local function make_file (dir, name, n)
  local t = {}
  for i = 1, n do t[i] = string.char((i * 7 + i // 256) % 256) end
  local s = table.concat(t)
  local path = dir .. "/" .. name
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
  return path, s
end

-- reads one response from a raw client: status, headers (lower-case
-- names), body (nil for a HEAD request)
local function read_response (c, head)
  local line, err = c:receive("l")
  assert(line, "no status line: " .. tostring(err))
  local status = tonumber(line:match("^HTTP/1%.1 (%d%d%d) "))
  assert(status, "bad status line: " .. line)
  local headers = {}
  while true do
    line = assert(c:receive("l"))
    if line == "" then break end
    local k, v = line:match("^([^:]+): (.*)$")
    headers[k:lower()] = v
  end
  if head then return status, headers end
  local body
  if headers["transfer-encoding"] == "chunked" then
    local parts = {}
    while true do
      local size = tonumber(assert(c:receive("l")), 16)
      if size == 0 then assert.equals("", c:receive("l")); break end
      parts[#parts + 1] = assert(c:receive(size))
      assert.equals("", c:receive("l"))
    end
    body = table.concat(parts)
  else
    local n = tonumber(headers["content-length"])
    body = n > 0 and assert(c:receive(n)) or ""
  end
  return status, headers, body
end

-- a raw client, closed when the test ends: a kept-alive connection left
-- open would hold the sync model's only worker
local connect = H.connect

-- true when the server has closed the client's connection. With half,
-- the client half-closes first, as a client done sending would: a server
-- draining a refused body (its lingering close, up to 1 s) then sees EOF
-- at once.
local function closed (c, half)
  if half then c:shutdown("send") end
  local data, err = c:receive("a")
  return data == "" or err == "closed" or (data == nil and err ~= "timeout")
end


H.for_models(function (model)
  describe("http.lua", function ()
    local srv
    setup(function ()
      srv = T.start{ model = model, script = SCRIPT, tcp = true,
                     env = { HTTP_MAX_BODY = tostring(MAX_BODY) } }
    end)
    teardown(function () srv:stop() end)

    it("answers text, JSON and route parameters (curl)", function ()
      local out, err, ok = curl(srv, "-i", url(srv, "/hello"))
      assert.is_true(ok, err)
      assert.matches("^HTTP/1%.1 200 OK\r\n", out)
      assert.matches("\r\nContent%-Length: 6\r\n", out)
      assert.matches("\r\nDate: %a%a%a, %d%d %a%a%a %d%d%d%d " ..
        "%d%d:%d%d:%d%d GMT\r\n", out)
      assert.matches("\r\n\r\nhello\n$", out)
      out = curl(srv, url(srv, "/json"))
      assert.same({ message = "hello" }, cjson.decode(out))
      out = curl(srv, url(srv, "/items/42?x=1"))
      assert.same({ id = 42, name = "item 42", query = { x = "1" } },
        cjson.decode(out))
    end)

    it("keeps the connection alive: curl reuses it", function ()
      local out, err, ok = curl(srv, "-v", url(srv, "/hello"),
        url(srv, "/json"), url(srv, "/items/7"))
      assert.is_true(ok, err)
      assert.equals(2, H.count(err, "Re-using existing connection", true),
        err)
      assert.equals('hello\n{"message":"hello"}', out:sub(1, 25))
    end)

    it("echoes a POST body and a chunked upload (curl)", function ()
      local path, data = make_file(srv.dir, "body.bin", 50000)
      local out, err, ok = curl(srv, "--data-binary", "@" .. path,
        url(srv, "/echo"))
      assert.is_true(ok, err)
      assert.is_true(out == data, "the body came back changed")
      out, err, ok = curl(srv, "-v", "-H", "Transfer-Encoding: chunked",
        "--data-binary", "@" .. path, url(srv, "/echo"))
      assert.is_true(ok, err)
      assert.matches("> Transfer%-Encoding: chunked", err)
      assert.is_true(out == data, "the chunked body came back changed")
    end)

    it("answers HEAD with the headers of GET and no body", function ()
      local out, err, ok = curl(srv, "-I", url(srv, "/hello"))
      assert.is_true(ok, err)
      assert.matches("^HTTP/1%.1 200 OK\r\n", out)
      assert.matches("\r\nContent%-Length: 6\r\n", out)
      assert.matches("\r\n\r\n$", out)
      -- no body really follows: the next response on the connection
      -- starts right after the head
      local c = connect(srv)
      c:send("HEAD /json HTTP/1.1\r\nHost: x\r\n\r\n" ..
        "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
      local status, headers = read_response(c, true)
      assert.equals(200, status)
      assert.equals("19", headers["content-length"])
      local status2, _, body = read_response(c)
      assert.equals(200, status2)
      assert.equals("hello\n", body)
    end)

    it("answers 404 and 405 (curl)", function ()
      local fmt = "%{http_code}"
      assert.equals("404", (curl(srv, "-o", "/dev/null", "-w", fmt,
        url(srv, "/nowhere"))))
      assert.equals("404", (curl(srv, "-o", "/dev/null", "-w", fmt,
        url(srv, "/items/abc"))))
      local out = curl(srv, "-i", "-X", "DELETE", url(srv, "/hello"))
      assert.matches("^HTTP/1%.1 405 ", out)
      assert.matches("\r\nAllow: GET, HEAD\r\n", out)
    end)

    it("answers 413 to a body over the limit (curl, chunked)", function ()
      local path = make_file(srv.dir, "big.bin", MAX_BODY + 1)
      local out = curl(srv, "-o", "/dev/null", "-w", "%{http_code}",
        "--data-binary", "@" .. path, url(srv, "/echo"))
      assert.equals("413", out)
      -- a chunked body that grows past the limit: 413, then close
      local c = connect(srv)
      local chunk = ("x"):rep(40000)
      c:send("POST /echo HTTP/1.1\r\nHost: x\r\n" ..
        "Transfer-Encoding: chunked\r\n\r\n" ..
        ("%x\r\n%s\r\n"):format(#chunk, chunk):rep(2))
      local status, headers = read_response(c)
      assert.equals(413, status)
      assert.equals("close", headers.connection)
      assert.is_true(closed(c, true))
    end)

    it("answers 400 to a malformed request, then closes", function ()
      for _, bad in ipairs{
        "GARBAGE\r\n\r\n",
        "GET /\r\n\r\n",                                   -- HTTP/0.9
        "GET / HTTP/1.1\r\n\r\n",                          -- no Host
        "GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n" ..
          "Transfer-Encoding: chunked\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n" ..
          "Content-Length: 4\r\n\r\nabcd",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked" ..
          "\r\n\r\nzz\r\n",
      } do
        local c = connect(srv)
        c:send(bad)
        local status, headers, body = read_response(c)
        assert.equals(400, status, bad)
        assert.equals("close", headers.connection)
        assert.equals("Bad Request\n", body)
        assert.is_true(closed(c, bad:find("chunked")), bad)
      end
    end)

    it("answers 505, 414, 417 and 501 where they belong", function ()
      for request, want in pairs{
        ["GET / HTTP/2.0\r\nHost: x\r\n\r\n"] = 505,
        ["GET /" .. ("a"):rep(9000) .. " HTTP/1.1\r\nHost: x\r\n\r\n"] = 414,
        ["POST /echo HTTP/1.1\r\nHost: x\r\nExpect: tea\r\n\r\n"] = 417,
        ["POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip" ..
          "\r\n\r\n"] = 501,
      } do
        local c = connect(srv)
        c:send(request)
        assert.equals(want, (read_response(c)))
        assert.is_true(closed(c))
      end
    end)

    it("answers 431 to too many or too long header lines", function ()
      local many = {}
      for i = 1, 150 do many[i] = "X-H" .. i .. ": v\r\n" end
      for _, headers in ipairs{ table.concat(many),
                                "X-Long: " .. ("v"):rep(10000) .. "\r\n" } do
        local c = connect(srv)
        c:send("GET /hello HTTP/1.1\r\nHost: x\r\n" .. headers .. "\r\n")
        local status, h = read_response(c)
        assert.equals(431, status)
        assert.equals("close", h.connection)
        assert.is_true(closed(c))
      end
    end)

    it("parses bare LF, empty lines first, a head in pieces, odd spacing",
       function ()
      local c = connect(srv)
      -- bare LF line ends, after two empty lines
      c:send("\r\n\nGET /headers HTTP/1.1\nHost: x\nX-A:  spaced \t\n\n")
      local s, _, b = read_response(c)
      assert.equals(200, s)
      local h = cjson.decode(b)
      assert.equals("spaced", h["x-a"])
      -- the same head twice (the second one is remembered), then one
      -- that differs by a byte: each gets its own headers
      for _, v in ipairs{ "1", "1", "2" } do
        c:send("GET /headers HTTP/1.1\r\nHost: x\r\nX-V: " .. v ..
          "\r\n\r\n")
        s, _, b = read_response(c)
        assert.equals(200, s)
        assert.equals(v, cjson.decode(b)["x-v"])
      end
      -- a head in pieces, a repeated header in it
      for _, piece in ipairs{ "GET /head", "ers HTTP/1.1\r\nHo", "st: x\r",
          "\nX-R: a\r\nX-R: b\r\n", "\r\n" } do
        c:send(piece)
        require("socket").sleep(0.02)
      end
      s, _, b = read_response(c)
      assert.equals(200, s)
      assert.equals("a, b", cjson.decode(b)["x-r"])
      -- empty lines alone in a segment, the request in the next one
      c:send("\r\n\r\n")
      require("socket").sleep(0.05)
      c:send("GET /headers HTTP/1.1\r\nHost: x\r\nX-E: e\r\n\r\n")
      s, _, b = read_response(c)
      assert.equals(200, s)
      assert.equals("e", cjson.decode(b)["x-e"])
    end)

    it("answers a head seen before as the first time", function ()
      -- twice each, on new connections: the second is a remembered head
      for _ = 1, 2 do
        local c = connect(srv)
        c:send("GET /items/7?x=1&x=2 HTTP/1.1\r\nHost: x\r\n" ..
          "Connection: close\r\n\r\n")
        local s, h, b = read_response(c)
        assert.equals(200, s)
        assert.equals("close", h.connection)
        assert.same({ id = 7, name = "item 7", query = { x = { "1", "2" } } },
          cjson.decode(b))
        assert.is_true(closed(c))
      end
      for _ = 1, 2 do
        local c = connect(srv)
        c:send("GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" ..
          "HEAD /hello HTTP/1.0\r\n\r\n")
        local s, h, b = read_response(c)
        assert.equals(200, s)
        assert.equals("keep-alive", h.connection)
        assert.equals("hello\n", b)
        s, h = read_response(c, true)
        assert.equals(200, s)
        assert.equals("close", h.connection)
        assert.equals("6", h["content-length"])
        assert.is_true(closed(c))
      end
    end)

    it("answers many different heads, past what it remembers", function ()
      local c = connect(srv)
      for i = 1, 600 do         -- more than the 256 heads remembered
        c:send(("GET /items/%d HTTP/1.1\r\nHost: x\r\nX-N: %d\r\n\r\n")
          :format(i % 300, i))
        local s, _, b = read_response(c)
        assert.equals(200, s)
        assert.equals(i % 300, cjson.decode(b).id)
      end
    end)

    it("refuses a CR or NUL inside a header and five empty lines", function ()
      for _, bad in ipairs{
        "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\n X-Folded: a\r\n\r\n",
        "\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
      } do
        local c = connect(srv)
        c:send(bad)
        assert.equals(400, (read_response(c)), bad)
        assert.is_true(closed(c), bad)
      end
    end)

    it("answers pipelined requests in order", function ()
      local c = connect(srv)
      c:send("GET /items/1 HTTP/1.1\r\nHost: x\r\n\r\n" ..
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n" ..
        "Content-Length: 5\r\n\r\nabcde" ..
        "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      local s1, _, b1 = read_response(c)
      local s2, h2, b2 = read_response(c)
      local s3, h3, b3 = read_response(c)
      assert.same({ 200, 200, 200 }, { s1, s2, s3 })
      assert.equals(1, cjson.decode(b1).id)
      assert.equals("abcde", b2)
      assert.equals("text/plain", h2["content-type"])
      assert.equals("hello\n", b3)
      assert.equals("close", h3.connection)
      assert.is_true(closed(c))
    end)

    it("keeps HTTP/1.0 alive only when asked", function ()
      local c = connect(srv)
      c:send("GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
      local s, h, b = read_response(c)
      assert.equals(200, s)
      assert.equals("keep-alive", h.connection)
      assert.equals("hello\n", b)
      c:send("GET /json HTTP/1.0\r\n\r\n")
      s, h = read_response(c)
      assert.equals(200, s)
      assert.equals("close", h.connection)
      assert.is_true(closed(c))
    end)

    it("streams a chunked response; a failing handler gets 500",
       function ()
      local out, err, ok = curl(srv, url(srv, "/stream?n=5"))
      assert.is_true(ok, err)
      assert.equals("line 1\nline 2\nline 3\nline 4\nline 5\n", out)
      local c = connect(srv)
      c:send("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n" ..
        "GET /error HTTP/1.1\r\nHost: x\r\n\r\n" ..
        "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
      local s, h, b = read_response(c)
      assert.equals(200, s)
      assert.equals("chunked", h["transfer-encoding"])
      assert.equals("line 1\nline 2\nline 3\n", b)
      assert.equals(500, (read_response(c)))
      s, _, b = read_response(c)          -- the connection goes on
      assert.equals(200, s)
      assert.equals("hello\n", b)
      assert.is_true(srv:wait_stderr("this handler fails on purpose", 2,
        true))
    end)

    it("serves a short wrk run without errors", function ()
      if not have("wrk") then
        pending("wrk is not installed (Debian package wrk)")
        return
      end
      -- sync serves one connection at a time: a kept-alive connection
      -- holds the worker, so one connection only
      local conns = model == "sync" and 1 or 10
      local out, err, ok = sh(srv.dir, ("wrk -t1 -c%d -d1s %s")
        :format(conns, quote(url(srv, "/hello"))))
      assert.is_true(ok, out .. err)
      local requests = tonumber(out:match("(%d+) requests in"))
      assert.is_true(requests and requests > 0, out)
      assert.is_nil(out:find("Socket errors", 1, true), out)
      assert.is_nil(out:find("Non-2xx", 1, true), out)
    end)

    it("serves doc/ under /static/ (curl): whole, a range, no '..'",
      function ()
      local f = assert(io.open("doc/http.md", "rb"))
      local file = f:read("a")
      f:close()
      local out, err, ok = curl(srv, url(srv, "/static/http.md"))
      assert.is_true(ok, err)
      assert.equals(file, out)
      out = curl(srv, "-i", "-r", "10-19", url(srv, "/static/http.md"))
      assert.matches("^HTTP/1%.1 206 ", out)
      assert.equals(file:sub(11, 20), out:match("\r\n\r\n(.*)$"))
      out = curl(srv, "-s", "-o", "/dev/null", "-w", "%{http_code}",
        "--path-as-is", url(srv, "/static/../Makefile"))
      assert.equals("400", out)
      out = curl(srv, "-s", "-o", "/dev/null", "-w", "%{http_code}",
        url(srv, "/static/no-such-file"))
      assert.equals("404", out)
    end)

    it("echoes WebSocket messages on /ws (a raw handshake and frames)",
      function ()
      local c = connect(srv)
      c:send("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n" ..
        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" ..
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
      local s, h = read_response(c, true)
      assert.equals(101, s)
      assert.equals("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", h["sec-websocket-accept"])
      -- a masked text frame "Hello" (the RFC's example, 5.7), twice
      local frame = "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
      c:send(frame .. frame)
      assert.equals("\x81\x05Hello", c:receive(7))
      assert.equals("\x81\x05Hello", c:receive(7))
      -- a close (1000, masked with a zero key): the server answers it
      c:send("\x88\x82\0\0\0\0\x03\xe8")
      assert.equals("\x88\x02\x03\xe8", c:receive(4))
      assert.is_true(closed(c))
    end)
  end)
end)
