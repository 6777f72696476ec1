-- luasrv.ngx's own behaviour, from handlers: the cosocket methods'
-- results as OpenResty gives them (partial data, receiveuntil, keep-alive
-- refusals, UDP), ngx.ctx per request, ngx.re on PCRE2, the string, time
-- and digest functions, the LuaJIT modules, and the clear errors for
-- what is not provided. The peer is a second luasrv whose handler writes
-- what it is told.
local H = require "helper"
local N = require "ngx_helper"

-- the peer: reads one line, `return DATA, ACTION` in Lua; writes DATA,
-- then ACTION: "close" (the default), "hold" (2 s, then close) or "echo"
-- (every later line back, until the end); a datagram comes back upper-cased
local PEER = [[
local luasrv = require "luasrv"
return { handle = function (req)
  if req.server.transport == "udp" then
    req:write(req.request:upper())
    return
  end
  local line = req:read("l")
  if not line then return end
  local data, act = load("return " .. line)()
  req:write(data)
  req:flush()
  if act == "hold" then luasrv.sleep(2)
  elseif act == "echo" then
    for l in req:lines("L") do req:write(l) req:flush() end
  end
end }
]]

local PRE = [[
PEER = tonumber(os.getenv("PEER_PORT"))
PEER_UDP = tonumber(os.getenv("PEER_UDP"))
PEER_UNIX = os.getenv("PEER_UNIX")
function esc (s)
  if type(s) ~= "string" then return s end
  return (s:gsub("\r", "<CR>"):gsub("\n", "<LF>"))
end
function peer (data, act, ms)
  local s = ngx.socket.tcp()
  s:settimeout(ms or 2000)
  assert(s:connect("127.0.0.1", PEER))
  assert(s:send(string.format("%q", data):gsub("\n", "n") .. ", " ..
                string.format("%q", act or "close") .. "\n"))
  return s
end
]]

H.for_models(function (model)
  describe("luasrv.ngx", function ()
    local srv
    local function ask (body) return N.ask(srv, body) end

    before_each(function ()
      local p = H.start{ model = "event", source = PEER, tcp = true,
                         udp = true, unix = true, args = { "--grace", "0.1" } }
      srv = N.start{ model = model, source = N.HEAD .. PRE .. H.RUNNER,
                     args = { "--shared", "cache:1m", "--workers", "2" },
                     env = { PEER_PORT = tostring(p.tcp.port),
                             PEER_UDP = tostring(p.udp.port),
                             PEER_UNIX = p.unix.path } }
    end)

    describe("tcp sockets", function ()
      it("receives lines without CR, counts, the rest, and partial data at the end",
         function ()
        local res = ask [[
          local s = peer("one\r\nt\rwo\nthreefour\r\nfive\r\nlast")
          local a = s:receive()
          local b = s:receive("*l")
          local c = s:receive(5)
          local d = s:receive(0)
          local e = s:receive("*l")
          local f, g = s:receive(4), s:receive("*a")
          local h, herr, hpart = s:receive()
          return a, b, c, d, e, f, esc(g), h, herr, hpart ]]
        assert.same({ "one", "two", "three", "", "four", "five",
                      "<CR><LF>last", nil, "closed", "", n = 10 }, res)
      end)

      it("returns what came before a close, and before a timeout",
         function ()
        local res = ask [[
          local s = peer("partial line")
          local a, aerr, apart = s:receive()
          local t = peer("abc", "hold", 200)
          local b, berr, bpart = t:receive(10)
          local c, cerr, cpart = t:receive(10)
          t:close()
          local u = peer("xyz", "hold", 200)
          local d, derr, dpart = u:receive("*a")
          u:close()
          return a, aerr, apart, b, berr, bpart, c, cerr, cpart, d, derr, dpart ]]
        assert.same({ nil, "closed", "partial line", nil, "timeout", "abc",
                      nil, "timeout", "", nil, "timeout", "xyz", n = 12 }, res)
      end)

      it("iterates with receiveuntil: whole, inclusive, by size", function ()
        local res = ask [[
          local s = peer("one--btwo--b--bthree")
          local r = s:receiveuntil("--b")
          local a, b, c = r(), r(), r()
          local d, derr, dpart = r()
          local t = peer("head\r\n\r\nbody")
          local h = t:receiveuntil("\r\n\r\n", { inclusive = true })()
          local body = t:receive("*a")
          local u = peer("abcdefg--b-rest")
          local it = u:receiveuntil("--b")
          local parts = {}
          for _ = 1, 10 do
            local x, err = it(3)
            if not x then parts[#parts + 1] = tostring(err) break end
            parts[#parts + 1] = x
          end
          local rest = u:receive("*a")
          return a, b, c, d, derr, dpart, esc(h), body, table.concat(parts, "|"), rest ]]
        assert.same({ "one", "two", "", nil, "closed", "three",
                      "head<CR><LF><CR><LF>", "body", "abc|def|g|nil", "-rest",
                      n = 10 }, res)
      end)

      it("sends strings, numbers, booleans and nested tables; receiveany",
         function ()
        local res = ask [[
          local s = peer("", "echo")
          local n = s:send({ "a", 1, { 2.5, true, { "b" } }, 3.0, "\n" })
          local line = s:receive()
          s:send("xyz\n")
          local any = s:receiveany(2)
          local rest = s:receiveany(100)
          local ok, err = pcall(s.send, s, { {} , function () end })
          s:close()
          return n, line, any, esc(rest), ok, err:match("bad data type function") ]]
        assert.same({ 12, "a12.5trueb3", "xy", "z<LF>", false,
                      "bad data type function", n = 6 }, res)
      end)

      it("sends an array of strings and integers as one string", function ()
        local res = ask [[
          local s = peer("", "echo")
          local n = s:send({ "*", -12, ":", 0, ":", math.maxinteger, ":",
                             math.mininteger, "\n" })
          local line = s:receive()
          local many = {}
          for i = 1, 100 do many[i] = i % 2 == 0 and "x" or i end
          many[101] = "\n"
          local m = s:send(many)
          local line2 = s:receive()
          s:close()
          return n, line, m, #line2, line2:sub(1, 8) ]]
        assert.same({ 48, "*-12:0:9223372036854775807:-9223372036854775808",
                      146, 145, "1x3x5x7x", n = 5 }, res)
      end)

      it("reads counts given as strings and floats; raises ngx's errors " ..
         "for bad arguments", function ()
        local res = ask [[
          local s = peer("abcdefgh")
          local a, b, c = s:receive("3"), s:receive(2.9), s:receive(0.5)
          local function err (f, ...)
            local ok, e = pcall(f, ...)
            return ok and "no error" or (tostring(e):gsub("^.-:%d+: ", ""))
          end
          local t = ngx.socket.tcp()
          return a, b, c, err(s.receive, s, -1), err(s.receive, s, "*x"),
            err(s.receiveany, s, 0), err(t.connect, t, "127.0.0.1", 70000),
            err(t.connect, t, "127.0.0.1", PEER, { pool_size = 0 }),
            err(t.connect, t, 1), err(t.settimeout, t, 2^31),
            err(s.setkeepalive, s, 0, 0), s:receive("*a") ]]
        assert.same({ "abc", "de", "",
          "bad argument #1 to 'receive' (bad pattern argument)",
          "bad argument #1 to 'receive' (bad pattern argument: *x)",
          "bad argument #1 to 'receiveany' (bad max argument)",
          "bad argument #2 to 'connect' (bad port number: 70000)",
          "bad argument #3 to 'connect' (bad \"pool_size\" option value)",
          "bad argument #1 to 'connect' (string expected, got number)",
          "bad argument #1 to 'settimeout' (bad timeout value)",
          "bad argument #2 to 'setkeepalive' (bad pool size)",
          "fgh", n = 12 }, res)
      end)

      it("pools: reuse counts, refuses unread data, names pools", function ()
        local res = ask [[
          local function once (opts)
            local s = ngx.socket.tcp()
            assert(s:connect("127.0.0.1", PEER, opts))
            local n = s:getreusedtimes()
            return s, n
          end
          local s1, n1 = once()
          assert(s1:send("'x', 'echo'\n"))
          assert(s1:receive(1) == "x")
          local k1 = s1:setkeepalive(10000, 2)
          local s2, n2 = once()
          local s3, n3 = once({ pool = "other" })
          assert(s2:send("ping\n"))
          ngx.sleep(0.05)
          assert(s2:receiveany(1) == "p")
          local k2, k2err = s2:setkeepalive()
          local k3, k3err = s2:setkeepalive()
          s3:close()
          local c1, c1err = s3:close()
          return k1, n1, n2, n3, k2, k2err, k3, k3err, c1, c1err ]]
        assert.same({ 1, 0, 1, 0, nil, "unread data in buffer", nil, "closed",
                      nil, "closed", n = 10 }, res)
      end)

      it("connects to Unix sockets; a refused connect is an error value",
         function ()
        local res = ask [[
          local s = ngx.socket.tcp()
          assert(s:connect("unix:" .. PEER_UNIX))
          s:send("'over unix'\n")
          local line = s:receive("*a")
          local t = ngx.socket.tcp()
          local ok, err = t:connect("127.0.0.1", 1)
          local c, cerr = ngx.socket.connect("127.0.0.1", 1)
          return line, ok, err, c, cerr ]]
        assert.same({ "over unix", nil, "connection refused", nil,
                      "connection refused", n = 5 }, res)
      end)

      it("sslhandshake needs a connection; other methods are not supported; " ..
         "takes any timeout",
         function ()
        local res = ask [[
          local s = ngx.socket.tcp()
          local a, aerr = s:sslhandshake()
          local ok, err = pcall(function () return s:bind("127.0.0.1") end)
          s:settimeout({})
          local c = s:connect("127.0.0.1", PEER)
          s:close()
          return a, aerr, ok, err, c ]]
        assert.is_nil(res[1])
        assert.equals("closed", res[2])  -- spec/ngx_tls_spec.lua has the rest
        assert.is_false(res[3])
        assert.matches("tcpsock:bind is not supported by luasrv", res[4])
        -- a timeout that is not a number is the default, as ngx reads it
        assert.equals(1, res[5])
      end)
    end)

    it("udp sockets: setpeername, send, receive one datagram", function ()
      local res = ask [[
        local u = ngx.socket.udp()
        u:settimeout(2000)
        assert(u:setpeername("127.0.0.1", PEER_UDP))
        assert(u:send({ "hello ", "datagram" }))
        local d = u:receive()
        assert(u:send("abcdef"))
        local cut = u:receive(3)
        u:close()
        local v = ngx.socket.udp()
        v:settimeout(200)
        assert(v:setpeername("127.0.0.1", 9))
        v:send("x")
        local none, err = v:receive()
        return d, cut, none, err ]]
      assert.same({ "HELLO DATAGRAM", "ABC", nil, "connection refused",
                    n = 4 }, res)
    end)

    it("keeps ngx.ctx per request, shared with the request's threads",
       function ()
      local body = [[
        local before = ngx.ctx.n
        ngx.ctx.n = (before or 0) + 1
        local t = ngx.thread.spawn(function () return ngx.ctx.n end)
        local ok, seen = ngx.thread.wait(t)
        ngx.ctx = { replaced = true }
        return before, ok, seen, ngx.ctx.replaced ]]
      for _ = 1, 3 do
        assert.same({ nil, true, 1, true, n = 4 }, ask(body))
      end
    end)

    it("ngx.re: match, find, gmatch, sub, gsub on PCRE", function ()
      local res = ask [==[
        local m = ngx.re.match("key=val; x", [[(?<k>\w+)=(\w+)(z)?]], "jo")
        local ctx = { pos = 1 }
        local m2 = ngx.re.match("a1b22c333", [[\d+]], "", ctx)
        local m3 = ngx.re.match("a1b22c333", [[\d+]], "", ctx)
        local f1, f2 = ngx.re.find("hello world", [[(o)\s(w)]], "", nil, 2)
        local words = {}
        for w in ngx.re.gmatch("one two  three", [[(\w+)]]) do words[#words + 1] = w[1] end
        local s1, n1 = ngx.re.sub("hello", "l", "[$0]")
        local s2, n2 = ngx.re.gsub("hello world", [[(\w+)]], "<${1}>$$")
        local s3 = ngx.re.gsub("abc", "b*", "-")
        local s4 = ngx.re.gsub("a1b2", [[\d]], function (c) return c[0] * 2 end)
        local ci = ngx.re.match("HeLLo", "hello", "i")
        local none = ngx.re.match("abc", "x")
        local bad, err = ngx.re.match("abc", "(")
        return m[0], m[1], m.k, m[2], m[3], m2[0], m3[0], ctx.pos, f1, f2,
               table.concat(words, ","), s1, n1, s2, n2, s3, s4, ci[0], none,
               bad, err:match("^failed to compile regex") ]==]
      assert.same({ "key=val", "key", "key", "val", false, "1", "22", 6, 7, 7,
                    "one,two,three", "he[l]lo", 1, "<hello>$ <world>$", 2,
                    "-a--c-", "a2b4", "HeLLo", nil, nil,
                    "failed to compile regex", n = 21 }, res)
    end)

    it("strings, digests, base64, times", function ()
      local res = ask [[
        local function hex (s) return (s:gsub(".", function (c) return string.format("%02x", c:byte()) end)) end
        return ngx.escape_uri("a b&c/é~"), ngx.unescape_uri("a%20b+c%2F"),
               ngx.encode_args({ b = "x y", a = true, c = { 1, 2 }, d = false }),
               ngx.decode_args("a=1&b&c=x%20y&a=2").a[2],
               ngx.quote_sql_str("it's \"q\"\n\\"),
               ngx.md5("abc"), hex(ngx.sha1_bin("abc")),
               hex(ngx.hmac_sha1("key", "The quick brown fox jumps over the lazy dog")),
               ngx.crc32_short("The quick brown fox jumps over the lazy dog"),
               ngx.encode_base64("ab"), ngx.encode_base64("ab", true),
               ngx.decode_base64("YWI="), ngx.decode_base64("YWI"),
               ngx.decode_base64("Y$I="),
               ngx.http_time(0), ngx.cookie_time(86400 * 365),
               ngx.parse_http_time("Thu, 18 Nov 2010 11:27:35 GMT"),
               math.abs(ngx.now() - os.time()) < 2, ngx.time() == os.time(),
               #ngx.today(), #ngx.localtime(), #ngx.utctime() ]]
      assert.same({ "a%20b%26c%2F%C3%A9~", "a b c/", "a&b=x%20y&c=1&c=2", "2",
        [['it\'s \"q\"\n\\']],
        "900150983cd24fb0d6963f7d28e17f72",
        "a9993e364706816aba3e25717850c26c9cd0d89d",
        "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9",
        0x414fa339, "YWI=", "YWI", "ab", "ab", nil,
        "Thu, 01 Jan 1970 00:00:00 GMT", "Fri, 01-Jan-1971 00:00:00 GMT",
        1290079655, true, true, 10, 19, 19, n = 22 }, res)
    end)

    it("ngx.null, ngx.shared, ngx.worker, ngx.config, ngx.log, ngx.sleep",
       function ()
      local res = ask [[
        local cjson = require "cjson"
        local d = ngx.shared.cache
        d:set("k", 1)
        local n = d:incr("k", 2)
        local a, aerr = d:add("k", 5)
        local v, flags = d:get("k")
        assert(a == false and aerr == "exists" and v == 3 and flags == nil)
        assert(d:get_keys()[1] == "k")
        assert(not pcall(function () return d.lpush end))
        ngx.log(ngx.ERR, "from ngx.log: ", 42, " ", true)
        ngx.log(ngx.DEBUG, "not shown")
        local t0 = luasrv.now()
        ngx.sleep(0.05)
        return ngx.null == cjson.null, n, ngx.shared.undeclared,
               ngx.worker.id() >= 0 and ngx.worker.id() < 2, ngx.worker.count(),
               ngx.worker.pid() > 1, ngx.worker.exiting(), ngx.config.subsystem,
               ngx.config.ngx_lua_version >= 9011, luasrv.now() - t0 >= 0.04,
               ngx.get_phase() ]]
      assert.same({ true, 3, nil, true, 2, true, false, "stream", true, true,
                    "content", n = 11 }, res)
      assert.is_true(H.eventually(function ()
        return srv:stderr():find("[error] from ngx.log: 42 true", 1, true)
      end, 2) ~= nil)
      assert.is_nil(srv:stderr():find("not shown", 1, true))
    end)

    it("bit, table.new, table.clear, unpack, ffi buffers, driver names",
       function ()
      local res = ask [[
        local bit = require "bit"
        local new, clear = require "table.new", require "table.clear"
        local t = new(4, 0)
        t[1], t.x = 1, 2
        clear(t)
        local ffi = require "ffi"
        local buf = ffi.new(ffi.typeof("char[?]"), 3)
        buf[0], buf[1], buf[2] = 104, 105, 0x121
        local ok = pcall(function () return ffi.cdef end)
        return bit.band(0xff, 0x0f), bit.bor(1, 2, 4), bit.bxor(5, 1),
               bit.lshift(1, 31), bit.rshift(-1, 28), bit.arshift(-256, 4),
               bit.tobit(0xffffffff), bit.tohex(255, 4), bit.bnot(0),
               next(t), unpack({ 1, 2 }), ffi.string(buf, 3), ok,
               require "resty.redis" == require "nginx.redis",
               require "nginx.dns.resolver" == require "resty.dns.resolver" ]]
      assert.same({ 15, 7, 4, -2147483648, 15, -16, -1, "00ff", -1, nil,
                    1, "hi!", false, true, true, n = 15 }, res)
    end)

    it("writes with ngx.say and ngx.print, reads with ngx.req.socket",
       function ()
      local s = N.start{ model = model, body = [[
        return { handle = function (req)
          local sock = ngx.req.socket()
          local line = sock:receive()
          local head = sock:receiveuntil("--")()
          ngx.say("got ", line, " ", 1, { 2.0, { true } }, ngx.null, nil)
          ngx.print(head, "!")
          ngx.flush()
          local ok, err = sock:setkeepalive()
          ngx.say(tostring(ok), " ", err)
        end }
      ]] }
      local c = s:connect()
      c:send("hello\nhead--")
      assert.equals("got hello 12truenullnil", c:receive())
      assert.equals("head!nil not supported on the request's socket",
                    c:receive())
    end)

    it("ngx.req.socket reads from the request's own buffer: req:read " ..
       "goes on after it", function ()
      local s = N.start{ model = model, body = [[
        return { handle = function (req)
          local sock = ngx.req.socket()
          local head = sock:receiveuntil("--")()
          local any = sock:receiveany(2)
          req:write(head, "|", any, "|", req:read("l") or "nil", "\n")
        end }
      ]] }
      local c = s:connect()
      c:send("head--abcd\n")
      assert.equals("head|ab|cd", c:receive())
    end)

    it("raises a clear error for what is not provided", function ()
      local res = ask [[
        local function err (f) local ok, e = pcall(f) return (tostring(e):gsub("^.-:%d+: ", "")) end
        return err(function () return ngx.var.uri end),
               err(function () return ngx.req.get_headers() end),
               err(function () return ngx.timer.nope end),
               err(function () return ngx.socket.nope end),
               err(function () return ngx.re.split end) ]]
      assert.same({ "ngx.var is not supported by luasrv",
                    "ngx.req.get_headers is not supported by luasrv",
                    "ngx.timer.nope is not supported by luasrv",
                    "ngx.socket.nope is not supported by luasrv",
                    "ngx.re.split is not supported by luasrv", n = 5 }, res)
    end)

    it("ngx.timer and ngx.semaphore are luasrv's timers and semaphores",
    function ()
      local res = ask [[
        local semaphore = require "ngx.semaphore"
        local sema = semaphore.new(0)
        sema:post(2)
        local a = sema:wait(0)
        local n = sema:count()
        local ok = ngx.timer.at(60, function (premature) end)
        local pending = ngx.timer.pending_count()
        local running = ngx.timer.running_count()
        return a, n, ok, pending, running, pcall(ngx.timer.at, "x", print) ]]
      assert.equals(true, res[1])
      assert.equals(1, res[2])
      if model == "fork" then   -- a fork-model request makes no timers
        assert.is_nil(res[3])
      else
        assert.equals(1, res[3])
        assert.is_true(res[4] >= 1)
      end
      assert.equals(0, res[5])
      assert.equals(false, res[6])
    end)
  end)
end)
