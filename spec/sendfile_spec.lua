-- req:sendfile and luasrv.openfile, through http.static and a raw route,
-- driven by curl and raw sockets: multi-MiB downloads byte-exact (sha256)
-- over TCP, a Unix socket and TLS (which copies through the output
-- buffer), ranges, a client that stops reading (cut by --timeout while
-- others are served), a file truncated while it is sent, the bytes in
-- the access log, and the method's refusals.
local H = require "helper"
local T = H.T
local C = require "tls_certs"

local ROOT = H.ROOT
local MiB = 1048576

local quote = H.quote

local function sh (cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  p:close()
  return out
end

local function sha256 (path)
  return sh("sha256sum " .. quote(path)):match("^(%x+)")
end

-- bytes first..last (1-based) of path, into a new file; its path
local function slice (path, first, last, to)
  local f = assert(io.open(path, "rb"))
  f:seek("set", first - 1)
  local s = f:read(last - first + 1)
  f:close()
  local o = assert(io.open(to, "wb"))
  o:write(s)
  o:close()
  return to
end

-- A file of n bytes that no run of zeros hides (made from urandom).
local function random_file (path, n)
  assert(os.execute(("head -c %d /dev/urandom > %s"):format(n, quote(path))))
end

local SOURCE = [[
package.path = %q .. "/lua/?.lua;" .. package.path
local http = require "luasrv.http"
local luasrv = require "luasrv"
local www = os.getenv("WWW")
local app = http.router()
app:get("/s/*path", http.static(www))
-- req:sendfile by path: /raw/NAME?OFFSET,LENGTH
app:get("/raw/:name", function (r)
  local off, len = (r.query or ""):match("^(%%d+),(%%d+)$")
  off, len = tonumber(off) or 0, tonumber(len)
  local f = assert(luasrv.openfile(www .. "/" .. r.params.name))
  len = len or f:stat().size - off
  f:close()
  r:start(200, { ["Content-Length"] = len })
  local ok, err = r.req:sendfile(www .. "/" .. r.params.name, off, len)
  if not ok then luasrv.log("sendfile failed: " .. err) r.req:close() end
end)
-- luasrv.http's r:sendfile: /h/NAME (200 and its length), /hc/NAME
-- (started first without a length: one chunk), /ho/NAME?OFFSET (an
-- opened file, from OFFSET to its end)
app:get("/h/:name", function (r)
  assert(r:sendfile(www .. "/" .. r.params.name))
end)
app:get("/hc/:name", function (r)
  r:start(200, { ["Content-Type"] = "application/octet-stream" })
  r:write("<")
  assert(r:sendfile(www .. "/" .. r.params.name))
  r:write(">")
end)
app:get("/ho/:name", function (r)
  local f = assert(luasrv.openfile(www .. "/" .. r.params.name))
  assert(r:sendfile(f, tonumber(r.query)))
  f:close()
end)
return app:handler()
]]

H.for_models(function (model)
  describe("req:sendfile (" .. model .. ")", function ()
    local dir, www

    before_each(function ()
      dir = T.tmpdir()
      H.defer(function () os.execute("rm -rf " .. quote(dir)) end)
      www = dir .. "/www"
      assert(os.execute("mkdir -p " .. quote(www)))
      random_file(www .. "/big.bin", 5 * MiB + 12345)
      random_file(www .. "/small.bin", 3000)
    end)

    local function start (args)
      return H.start{ model = model, source = SOURCE:format(ROOT),
        env = { WWW = www }, args = args }
    end

    -- curl url into a file (more: options, quoted); the file's path and
    -- curl's "code size" line
    local function curl (url, more)
      local out = dir .. "/out"
      os.remove(out)
      local info = sh("timeout -k 2 30 curl -sS --max-time 25 -o " ..
        quote(out) .. " -w '%{http_code} %{size_download}' " ..
        (more or "") .. " " .. quote(url))
      return out, info
    end

    it("sends multi-MiB files byte-exact over TCP and a Unix socket, " ..
      "whole and in ranges, and counts them in the access log", function ()
      local srv = start{ "--tcp", "127.0.0.1:0", "--unix", dir .. "/s.sock",
        "--access-log" }
      local base = "http://127.0.0.1:" .. srv.tcp.port
      local big = www .. "/big.bin"
      for _, path in ipairs{ "/s/big.bin", "/raw/big.bin" } do
        local out, info = curl(base .. path)
        assert.equal("200 " .. (5 * MiB + 12345), info, path)
        assert.equal(sha256(big), sha256(out), path)
      end
      local out, info = curl("http://localhost/s/big.bin",
        "--unix-socket " .. quote(dir .. "/s.sock"))
      assert.equal("200 " .. (5 * MiB + 12345), info)
      assert.equal(sha256(big), sha256(out))
      -- ranges: an offset and a length, across chunk and page bounds
      for _, r in ipairs{ { 1, 1000000 }, { 4097, 3 * MiB + 7 },
          { 5 * MiB, 5 * MiB + 12345 }, { 70000, 70000 } } do
        out, info = curl(base .. "/s/big.bin", "-r " .. (r[1] - 1) .. "-" ..
          (r[2] - 1))
        assert.equal("206 " .. (r[2] - r[1] + 1), info)
        assert.equal(sha256(slice(big, r[1], r[2], dir .. "/want")),
          sha256(out))
      end
      out, info = curl(base .. "/raw/big.bin?12345,2000000")
      assert.equal("200 2000000", info)
      assert.equal(sha256(slice(big, 12346, 2012345, dir .. "/want")),
        sha256(out))
      -- a small file goes out with its head in one write: the same bytes
      out, info = curl(base .. "/s/small.bin")
      assert.equal("200 3000", info)
      assert.equal(sha256(www .. "/small.bin"), sha256(out))
      -- the access log counts the file's bytes: head and body
      local want = 5 * MiB + 12345
      assert.truthy(H.eventually(function ()
        for n in srv:stderr():gmatch("access [^\n]* out=(%d+)") do
          n = tonumber(n)
          if n > want and n < want + 1000 then return true end
        end
      end, 5), srv:stderr())
    end)

    it("luasrv.http's r:sendfile: the whole body with its length, one "
       .. "chunk of a chunked body, from an offset; HEAD sends no body",
       function ()
      local srv = start{ "--tcp", "127.0.0.1:0" }
      local base = "http://127.0.0.1:" .. srv.tcp.port
      local big = www .. "/big.bin"
      local out, info = curl(base .. "/h/big.bin", "-D " .. quote(dir .. "/hd"))
      assert.equal("200 " .. (5 * MiB + 12345), info)
      assert.equal(sha256(big), sha256(out))
      assert.matches("Content%-Length: " .. (5 * MiB + 12345),
                     C.read(dir .. "/hd"))
      out, info = curl(base .. "/hc/small.bin", "-D " .. quote(dir .. "/hd"))
      assert.equal("200 3002", info)
      assert.matches("Transfer%-Encoding: chunked", C.read(dir .. "/hd"))
      local got = C.read(out)
      assert.equal("<" .. C.read(www .. "/small.bin") .. ">", got)
      out, info = curl(base .. "/ho/big.bin?1000000")
      assert.equal("200 " .. (4 * MiB + 12345 + 48576), info)
      assert.equal(sha256(slice(big, 1000001, 5 * MiB + 12345, dir .. "/want")),
                   sha256(out))
      out, info = curl(base .. "/h/big.bin", "-I")
      assert.equal("200 0", info)
      -- the connection carries the next request after each of them
      out, info = curl(base .. "/h/small.bin")
      assert.equal("200 3000", info)
    end)

    it("sends a file over TLS byte-exact, a chunk at a time", function ()
      local d = C.dir()
      local srv = start{ "--tls", "127.0.0.1:0", "--tls-cert",
        d .. "/server.pem", "--tls-key", d .. "/server.key" }
      local base = "https://localhost:" .. srv.tls.port
      local more = "--cacert " .. quote(d .. "/ca.pem") ..
        " --resolve localhost:" .. srv.tls.port .. ":127.0.0.1"
      local big = www .. "/big.bin"
      local out, info = curl(base .. "/s/big.bin", more)
      assert.equal("200 " .. (5 * MiB + 12345), info)
      assert.equal(sha256(big), sha256(out))
      out, info = curl(base .. "/s/big.bin", more .. " -r 100000-2200000")
      assert.equal("206 2100001", info)
      assert.equal(sha256(slice(big, 100001, 2200001, dir .. "/want")),
        sha256(out))
      out, info = curl(base .. "/raw/small.bin", more)
      assert.equal("200 3000", info)
      assert.equal(sha256(www .. "/small.bin"), sha256(out))
    end)

    -- a raw client asking for path: the head read, then nothing more
    local function stalled_get (srv, path)
      local c = srv:connect()
      assert(c:send("GET " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\n"))
      local line = c:receive("l")
      assert.equal("HTTP/1.1 200 OK", line)
      return c
    end

    -- what is left on c until it ends: bytes, and how it ended
    local function drain (c)
      c:settimeout(10)
      local n = 0
      for _ = 1, 100000 do         -- bounded: 64 KiB a pass
        local data, err, partial = c.sock:receive(65536)
        n = n + #(data or partial or "")
        if not data then return n, err end
      end
      return n, "too much"
    end

    it("cuts a client that stops reading after --timeout; others are " ..
      "served meanwhile", function ()
      -- sparse: more than loopback's buffers hold, and no disk
      assert(os.execute("truncate -s 64M " .. quote(www .. "/huge.bin")))
      local srv = start{ "--tcp", "127.0.0.1:0", "--timeout", "1",
        "--workers", "2" }
      local c = stalled_get(srv, "/s/huge.bin")
      local out, info = curl("http://127.0.0.1:" .. srv.tcp.port ..
        "/s/small.bin")
      assert.equal("200 3000", info)
      assert.equal(sha256(www .. "/small.bin"), sha256(out))
      T.sleep(2.5)                    -- past the timeout, still not reading
      local n, how = drain(c)
      assert.equal("closed", how)
      assert.is_true(n < 64 * MiB, n)
      out, info = curl("http://127.0.0.1:" .. srv.tcp.port .. "/raw/big.bin")
      assert.equal("200 " .. (5 * MiB + 12345), info)
      assert.equal(sha256(www .. "/big.bin"), sha256(out))
    end)

    it("ends the connection when the file is truncated while sent, and " ..
      "serves the next one", function ()
      assert(os.execute("truncate -s 64M " .. quote(www .. "/huge.bin")))
      local srv = start{ "--tcp", "127.0.0.1:0", "--timeout", "10" }
      for _, path in ipairs{ "/s/huge.bin", "/raw/huge.bin" } do
        assert(os.execute("truncate -s 64M " .. quote(www .. "/huge.bin")))
        local c = stalled_get(srv, path)
        T.sleep(0.3)                  -- the server waits on a full socket
        assert(os.execute("truncate -s 1M " .. quote(www .. "/huge.bin")))
        local n, how = drain(c)
        assert.equal("closed", how, path)
        assert.is_true(n < 64 * MiB, path)
        c:close()
      end
      assert.truthy(H.eventually(function ()
        return srv:stderr():find("file shrank while being sent: " .. www ..
          "/huge.bin", 1, true) and
          srv:stderr():find("sendfile failed: file truncated", 1, true)
      end, 5), srv:stderr())
      local out, info = curl("http://127.0.0.1:" .. srv.tcp.port ..
        "/s/big.bin")
      assert.equal("200 " .. (5 * MiB + 12345), info)
      assert.equal(sha256(www .. "/big.bin"), sha256(out))
    end)
  end)
end)

describe("req:sendfile and luasrv.openfile", function ()
  it("refuse what they cannot send, with nothing sent", function ()
    local dir = H.tmpdir()
    local f = assert(io.open(dir .. "/ten", "wb"))
    f:write("0123456789")
    f:close()
    assert(os.execute("ln -s ten " .. quote(dir .. "/link") ..
      " && mkdir " .. quote(dir .. "/sub") ..
      " && ln -s sub " .. quote(dir .. "/sublink")))
    local srv = H.start{ source = H.RUNNER, env = { D = dir } }
    local function ask (code)
      return H.ask(srv, "local D = os.getenv('D') " .. code)
    end
    -- by path, with an offset and a length; by file object
    local c = srv:connect()
    assert(c:send("local D = os.getenv('D') req:sendfile(D .. '/ten', 2, 3)" ..
      " req:write('|') req:sendfile(luasrv.openfile(D .. '/ten'), 8)" ..
      " req:write('|') return 1\n"))
    assert.equal("234|89|", c:receive(7))
    c:close()
    local r = ask("local a, b = req:sendfile(D .. '/ten', 5, 6) return a, b")
    assert.same({ n = 2, nil, "file truncated" }, r)
    r = ask("local a, b = req:sendfile(D .. '/sub') return a, b")
    assert.same({ n = 2, nil, "not a regular file" }, r)
    r = ask("local a, b = req:sendfile(D .. '/none') return a, b")
    assert.same({ n = 2, nil, dir .. "/none: No such file or directory" }, r)
    r = ask("local f = luasrv.openfile(D .. '/ten') f:close() " ..
      "local a, b = req:sendfile(f) return a, b, tostring(f), (f:close())")
    assert.same({ n = 4, nil, "closed", "luasrv.file (closed)", nil }, r)
    r = ask("return pcall(function () return req:sendfile(D .. '/ten', -1) end)")
    assert.is_false(r[1])
    assert.matches("bad argument #2 to 'sendfile' %(must be >= 0%)", r[2])
    -- stat: lfs.attributes' names, of the open file
    r = ask("local s = luasrv.openfile(D .. '/ten'):stat() " ..
      "return s.mode, s.size, type(s.modification), type(s.ino)")
    assert.same({ n = 4, "file", 10, "number", "number" }, r)
    -- symlinks = false: no link anywhere in the path
    r = ask("local a, b = luasrv.openfile(D .. '/link', { symlinks = false })" ..
      " local c, d = luasrv.openfile(D .. '/sublink/x', { symlinks = false })" ..
      " return a, b, c, d, luasrv.openfile(D .. '/link'):stat().size")
    assert.is_nil(r[1])
    assert.equal(dir .. "/link: Too many levels of symbolic links", r[2])
    assert.is_nil(r[3])
    assert.matches("^" .. dir:gsub("%p", "%%%0") .. "/sublink/x: ", r[4])
    assert.equal(10, r[5])
  end)
end)
