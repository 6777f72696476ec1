-- http.static (lua/luasrv/http/static.lua): files under a root, driven by
-- curl: media types, ETag and Last-Modified with conditional requests,
-- ranges, HEAD, directories, and traversal attempts (encoded, NUL,
-- symlinks out of the root).
local H = require "helper"
local T = H.T

local ROOT, quote = H.ROOT, H.quote
local writefile, readfile = H.write_file, H.try_read_file

local SOURCE = [[
package.path = %q .. "/lua/?.lua;" .. package.path
local http = require "luasrv.http"
local app = http.router()
local root = os.getenv("WWW")
app:get("/s/*path", http.static(root, { index = "index.html" }))
app:get("/plain/*path", http.static(root))
app:get("/list/*path", http.static(root, { listing = true }))
return app:handler()
]]

-- the tree: files, a directory with an index and one without, links
-- inside and out, a loop of links
local function make_tree (dir)
  local www = dir .. "/www"
  local bin = {}
  for i = 1, 300000 do bin[i] = string.char((i * 7 + i // 256) % 256) end
  bin = table.concat(bin)
  assert(os.execute("mkdir -p " .. quote(www .. "/sub") .. " " ..
    quote(www .. "/bare") .. " " .. quote(dir .. "/outside")))
  writefile(www .. "/hello.txt", "hello\n")
  writefile(www .. "/page.html", "<p>hi</p>\n")
  writefile(www .. "/data.json", "{}\n")
  writefile(www .. "/blob.unknownext", "?")
  writefile(www .. "/big.bin", bin)
  writefile(www .. "/sub/index.html", "index\n")
  writefile(www .. "/bare/a <b>.txt", "a\n")
  writefile(dir .. "/outside/secret", "secret\n")
  writefile(dir .. "/www-evil", "sibling\n")
  local links = {
    { "hello.txt", www .. "/inside-link" },
    { "sub", www .. "/sub-link" },
    { dir .. "/outside/secret", www .. "/abs-out" },
    { "../outside/secret", www .. "/rel-out" },
    { "../outside", www .. "/dir-out" },
    { "../www-evil", www .. "/prefix-out" },
    { "loop2", www .. "/loop1" },
    { "loop1", www .. "/loop2" },
  }
  for _, l in ipairs(links) do
    assert(os.execute("ln -s " .. quote(l[1]) .. " " .. quote(l[2])))
  end
  return www, bin
end

H.for_models(function (model)
  describe("http.static (" .. model .. ")", function ()
    local srv, www, bin

    before_each(function ()
      local dir = H.tmpdir()
      www, bin = make_tree(dir)
      srv = H.start{ model = model, source = SOURCE:format(ROOT), tcp = true,
                     env = { WWW = www } }
    end)

    -- curl with args (a string, already quoted) on path: status, headers
    -- (lower-case names), body
    local function get (path, args)
      local hfile, bfile = srv.dir .. "/h", srv.dir .. "/b"
      os.remove(hfile); os.remove(bfile)
      os.execute("timeout -k 2 20 curl -sS --max-time 10 --path-as-is -D " ..
        quote(hfile) .. " -o " .. quote(bfile) .. " " .. (args or "") .. " " ..
        quote("http://127.0.0.1:" .. srv.tcp.port .. path))
      local head = readfile(hfile) or ""
      local status = tonumber(head:match("^HTTP/1%.1 (%d+)"))
      local headers = {}
      for k, v in head:gmatch("([%w%-]+): ([^\r\n]*)") do
        headers[k:lower()] = v
      end
      return status, headers, readfile(bfile) or ""
    end

    it("serves a file with its type, ETag and Last-Modified", function ()
      local status, h, body = get("/s/hello.txt")
      assert.equal(200, status)
      assert.equal("hello\n", body)
      assert.equal("text/plain", h["content-type"])
      assert.equal("6", h["content-length"])
      assert.truthy(h.etag:find('^"%x+%-6"$'), h.etag)
      assert.truthy(h["last-modified"]:find(
        "^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$"))
      assert.equal("bytes", h["accept-ranges"])
      assert.equal("text/html",
        (select(2, get("/s/page.html"))["content-type"]))
      assert.equal("application/json",
        (select(2, get("/s/data.json"))["content-type"]))
      assert.equal("application/octet-stream",
        (select(2, get("/s/blob.unknownext"))["content-type"]))
    end)

    it("sends a file bigger than its chunks whole; HEAD without it", function ()
      local status, h, body = get("/s/big.bin")
      assert.equal(200, status)
      assert.equal(#bin, #body)
      assert.is_true(body == bin)
      status, h, body = get("/s/big.bin", "-I")
      assert.equal(200, status)
      assert.equal(tostring(#bin), h["content-length"])
      -- (curl -I writes the head to the body's file too: no more than it)
      assert.is_true(#body < 1000)
    end)

    it("answers 304 to If-None-Match and If-Modified-Since", function ()
      local _, h = get("/s/hello.txt")
      local status, h2, body = get("/s/hello.txt",
        "-H " .. quote("If-None-Match: \"x\", " .. h.etag))
      assert.equal(304, status)
      assert.equal("", body)
      assert.equal(h.etag, h2.etag)
      assert.equal(304, (get("/s/hello.txt", "-H 'If-None-Match: *'")))
      assert.equal(200, (get("/s/hello.txt", "-H 'If-None-Match: \"other\"'")))
      assert.equal(304, (get("/s/hello.txt",
        "-H " .. quote("If-Modified-Since: " .. h["last-modified"]))))
      assert.equal(200, (get("/s/hello.txt",
        "-H 'If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT'")))
      -- If-None-Match wins over If-Modified-Since
      assert.equal(200, (get("/s/hello.txt", "-H 'If-None-Match: \"other\"' " ..
        "-H " .. quote("If-Modified-Since: " .. h["last-modified"]))))
    end)

    it("answers a single range with 206, past the end with 416", function ()
      local status, h, body = get("/s/big.bin", "-r 1000-1999")
      assert.equal(206, status)
      assert.equal("bytes 1000-1999/300000", h["content-range"])
      assert.is_true(body == bin:sub(1001, 2000))
      status, h, body = get("/s/big.bin", "-r -10")
      assert.equal(206, status)
      assert.equal("bytes 299990-299999/300000", h["content-range"])
      assert.is_true(body == bin:sub(-10))
      status, h, body = get("/s/big.bin", "-r 299000-")
      assert.equal(206, status)
      assert.equal(1000, #body)
      status, h, body = get("/s/big.bin", "-r 299999-400000")
      assert.equal(206, status)
      assert.equal(1, #body)
      status, h = get("/s/big.bin", "-r 300000-")
      assert.equal(416, status)
      assert.equal("bytes */300000", h["content-range"])
      -- several ranges: the whole file
      status, h, body = get("/s/big.bin", "-r 0-1,5-6")
      assert.equal(200, status)
      assert.equal(#bin, #body)
    end)

    it("takes If-Range: the range when it matches, else the whole file",
      function ()
      local _, h = get("/s/big.bin", "-I")
      assert.equal(206, (get("/s/big.bin", "-r 0-9 -H " ..
        quote("If-Range: " .. h.etag))))
      assert.equal(206, (get("/s/big.bin", "-r 0-9 -H " ..
        quote("If-Range: " .. h["last-modified"]))))
      local status, _, body = get("/s/big.bin", "-r 0-9 -H 'If-Range: \"old\"'")
      assert.equal(200, status)
      assert.equal(#bin, #body)
    end)

    it("refuses .. and NUL, however encoded, with 400", function ()
      for _, p in ipairs{ "/s/../www-evil", "/s/sub/../../www-evil",
          "/s/%2e%2e/www-evil", "/s/%2E%2e%2fwww-evil", "/s/..%2fwww-evil",
          "/s/sub%2f..%2f..%2fwww-evil", "/s/hello.txt%00.html" } do
        local status, _, body = get(p)
        assert.equal(400, status, p)
        assert.falsy(body:find("sibling", 1, true), p)
      end
      -- encoded twice: a name, not a way out
      assert.equal(404, (get("/s/%252e%252e/www-evil")))
    end)

    it("follows links inside the root, not out of it", function ()
      local status, _, body = get("/s/inside-link")
      assert.equal(200, status)
      assert.equal("hello\n", body)
      assert.equal("index\n", select(3, get("/s/sub-link/index.html")))
      for _, p in ipairs{ "/s/abs-out", "/s/rel-out", "/s/dir-out/secret",
          "/s/prefix-out", "/s/loop1" } do
        status, _, body = get(p)
        assert.equal(404, status, p)
        assert.falsy(body:find("secret", 1, true) or
          body:find("sibling", 1, true), p)
      end
    end)

    it("serves a directory's index, lists only when asked, redirects " ..
      "without the final slash", function ()
      local status, h = get("/s/sub")
      assert.equal(301, status)
      assert.equal("/s/sub/", h.location)
      assert.equal("index\n", select(3, get("/s/sub/")))
      assert.equal(403, (get("/plain/sub/")))
      assert.equal(403, (get("/s/bare/")))
      local body
      status, h, body = get("/list/bare/")
      assert.equal(200, status)
      assert.equal("text/html; charset=utf-8", h["content-type"])
      assert.truthy(body:find("a &lt;b&gt;.txt", 1, true), body)
      assert.truthy(body:find('href="a%20%3Cb%3E.txt"', 1, true), body)
    end)

    it("serves GET and HEAD only", function ()
      local status, h = get("/s/hello.txt", "-X POST")
      assert.equal(405, status)
      assert.truthy(h.allow:find("GET", 1, true))
    end)
  end)
end)
