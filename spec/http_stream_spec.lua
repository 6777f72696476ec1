-- luasrv.http's streamed request bodies: routes with stream_body read
-- their body with r:body_reader() a piece at a time. curl uploads
-- (--data-binary @file, -T, chunked, 1 GiB from a pipe), raw sockets for
-- the limits, the deadline and pipelining.
local H = require "helper"
local T = H.T

local ROOT, quote, readfile = H.ROOT, H.quote, H.try_read_file

-- runs a shell command, bounded; its stdout
local function sh (cmd)
  local p = io.popen("timeout -k 2 120 sh -c " .. quote(cmd) .. " 2>&1")
  local out = p:read("a")
  p:close()
  return out
end

-- the server: /save writes the body to SAVE (a piece at a time), /count
-- counts it and says how much memory the process ever held; /head reads
-- 10 bytes only; /whole is an ordinary route (r.body)
local SOURCE = ([[
package.path = %q .. "/lua/?.lua;" .. package.path
local http = require "luasrv.http"
local luasrv = require "luasrv"
local app = http.router()
local STREAM = { stream_body = true }
local function peak_kib ()
  local f = io.open("/proc/self/status")
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmHWM:%%s*(%%d+)"))
end
app:post("/save", function (r)
  local f = assert(io.open(os.getenv("SAVE"), "wb"))
  local n, pieces = 0, 0
  for piece in r:body_reader(16384) do
    assert(#piece <= 16384)
    f:write(piece)
    n, pieces = n + #piece, pieces + 1
  end
  f:close()
  return "saved " .. n .. "\n"
end, { stream_body = true, max_body = 1000000 })
app:put("/save", function (r)
  local f = assert(io.open(os.getenv("SAVE"), "wb"))
  for piece in r:body_reader() do f:write(piece) end
  f:close()
  return "put\n"
end, { stream_body = true, max_body = 1000000 })
local function count (r)
  local n, read = 0, r:body_reader()
  for _ = 1, 1e7 do
    local piece, err = read()
    if not piece then
      if err then luasrv.log("body failed: " .. err) end
      break
    end
    n = n + #piece
  end
  return "bytes " .. n .. " peak " .. peak_kib() .. "\n"
end
local BIG = { stream_body = true, max_body = 2 ^ 31, body_timeout = 100 }
app:post("/count", count, BIG)
app:put("/count", count, BIG)
app:post("/limited", count, STREAM)
app:post("/head", function (r)
  local piece = r:body_reader(10)()
  return "first " .. piece .. "\n"
end, STREAM)
app:post("/raises", function (r)
  r:body_reader(3)()
  error("this handler fails on purpose")
end, STREAM)
app:post("/whole", function (r) return "whole " .. #r.body .. "\n" end)
return app:handler{ max_body = 100000, body_timeout = %s }
]]):format(ROOT, 1 * H.scale)

H.for_models(function (model)
  describe("streamed request bodies (" .. model .. ")", function ()
    local srv, save, big

    before_each(function ()
      local dir = H.tmpdir()
      save = dir .. "/saved"
      srv = H.start{ model = model, source = SOURCE, tcp = true,
                     env = { SAVE = save } }
      big = dir .. "/big"
      local t = {}
      for i = 1, 300000 do t[i] = string.char((i * 7 + i // 256) % 256) end
      local f = assert(io.open(big, "wb"))
      f:write(table.concat(t))
      f:close()
    end)

    local function url (path)
      return quote("http://127.0.0.1:" .. srv.tcp.port .. path)
    end

    local function curl (args)
      return sh("curl -sS --max-time 60 " .. args)
    end

    -- a raw client and what it got until the server closed
    local function raw (s)
      local c = H.connect(srv, 5)
      c:send(s)
      local data, _, partial = c:receive("a")
      return data or partial or ""
    end

    it("takes --data-binary @file past max_body, in pieces of the size asked",
      function ()
      assert.equal("saved 300000\n",
        curl("--data-binary @" .. quote(big) .. " " .. url("/save")))
      assert.equal(readfile(big), readfile(save))
    end)

    it("takes -T (PUT, Expect: 100-continue) and a chunked upload",
      function ()
      assert.equal("put\n", curl("-H 'Expect: 100-continue' -T " ..
        quote(big) .. " " .. url("/save")))
      assert.equal(readfile(big), readfile(save))
      os.remove(save)
      assert.equal("saved 300000\n", curl("-H 'Transfer-Encoding: chunked' " ..
        "--data-binary @" .. quote(big) .. " " .. url("/save")))
      assert.equal(readfile(big), readfile(save))
    end)

    it("keeps r.body for a route without stream_body", function ()
      assert.equal("whole 5\n", curl("--data-binary hello " .. url("/whole")))
    end)

    it("refuses a Content-Length over max_body with 413 before the handler",
      function ()
      local got = raw("POST /limited HTTP/1.1\r\nHost: x\r\n" ..
        "Content-Length: 100001\r\n\r\n")
      assert.truthy(got:find("^HTTP/1.1 413 "), got)
    end)

    it("answers 413 when a chunked body passes max_body", function ()
      local chunk = string.rep("a", 60000)
      local got = raw("POST /limited HTTP/1.1\r\nHost: x\r\n" ..
        "Transfer-Encoding: chunked\r\n\r\n" ..
        ("%x\r\n%s\r\n"):format(#chunk, chunk):rep(2) .. "0\r\n\r\n")
      assert.truthy(got:find("^HTTP/1.1 413 "), got)
      assert.truthy(H.eventually(function ()
        return srv:stderr():find("body failed: too large", 1, true)
      end, 5))
    end)

    it("answers 400 to a bad chunk", function ()
      local got = raw("POST /limited HTTP/1.1\r\nHost: x\r\n" ..
        "Transfer-Encoding: chunked\r\n\r\nzz\r\n")
      assert.truthy(got:find("^HTTP/1.1 400 "), got)
    end)

    it("answers 408 to a body not whole within body_timeout", function ()
      local got = raw("POST /limited HTTP/1.1\r\nHost: x\r\n" ..
        "Content-Length: 100\r\n\r\n0123456789")
      assert.truthy(got:find("^HTTP/1.1 408 "), got)
    end)

    it("answers the next pipelined request after a streamed body",
      function ()
      local got = raw("POST /limited HTTP/1.1\r\nHost: x\r\n" ..
        "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n" ..
        "POST /limited HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nwxyz" ..
        "GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      assert.truthy(got:find("bytes 5 ", 1, true), got)
      assert.truthy(got:find("bytes 4 ", 1, true), got)
      assert.truthy(got:find("HTTP/1.1 404 ", 1, true), got)
    end)

    it("closes after a handler that left its body unread", function ()
      local got = raw("POST /head HTTP/1.1\r\nHost: x\r\n" ..
        "Content-Length: 50\r\n\r\n" .. string.rep("x", 50) ..
        "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
      assert.truthy(got:find("first xxxxxxxxxx", 1, true), got)
      assert.truthy(got:find("Connection: close", 1, true), got)
      assert.falsy(got:find("404", 1, true), got)
    end)

    it("answers 500 and closes when a handler raises with its body unread",
      function ()
      local got = raw("POST /raises HTTP/1.1\r\nHost: x\r\n" ..
        "Content-Length: 20\r\n\r\n" .. string.rep("y", 20) ..
        "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
      assert.truthy(got:find("^HTTP/1.1 500 "), got)
      assert.truthy(got:find("Connection: close", 1, true), got)
      assert.equal(1, H.count(got, "HTTP/1.1 ", true), got)
    end)

    it("takes 1 GiB from a pipe, chunked and with a Content-Length, " ..
      "in bounded memory", function ()
      local with_length = "-H 'Transfer-Encoding:' " ..
        "-H 'Content-Length: 1073741824' "
      for _, extra in ipairs{ "", with_length } do
        local out = sh("head -c 1073741824 /dev/zero | curl -sS " ..
          "--max-time 100 -T - " .. extra .. url("/count"))
        local n, peak = out:match("bytes (%d+) peak (%d+)\n$")
        assert.equal("1073741824", n, out)
        io.stderr:write(("[%s] 1 GiB upload%s: peak RSS %d KiB\n"):format(
          model, extra ~= "" and " (Content-Length)" or " (chunked)",
          tonumber(peak)))
        -- AddressSanitizer keeps freed memory in quarantine (256 MiB):
        -- there the bytes are checked, the bound is the normal build's
        if not os.getenv("ASAN_OPTIONS") then
          assert.is_true(tonumber(peak) < 64 * 1024, "peak " .. peak .. " KiB")
        end
      end
    end)
  end)
end)
