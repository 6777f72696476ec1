-- Stream I/O of the request object (SPEC §3): every read format and its
-- EOF, too-long and timeout cases as a data-driven table, then write
-- buffering, flush, close, closed connections and misuse.
--
-- Each case runs BODY (a Lua block ending in `return ...`) as the handler
-- of a fresh server; the handler writes the values back with ser() and the
-- spec compares them with EXPECT (a table.pack), or CHECK(values, srv)
-- looks at them. The client sends INPUT and
-- then shuts down its sending side (EOF), unless KEEP_OPEN; or CLIENT(c)
-- does the talking and returns the reply.
local H = require "helper"
local T = H.T

local X40 = string.rep("x", 40)
local BODY_LINE = H.count(H.SER, "\n", true) + 4   -- see source() below

local function P (...) return table.pack(...) end

-- trickles a byte every 0.25 s, never a newline, until the reply comes
local function trickle (c)
  local buf, t0 = "", T.now()
  c:settimeout(0.25)
  while T.now() - t0 < 4 do
    c:send("a")
    local data, err, partial = c.sock:receive("*a", buf)
    if data then return data end
    -- a byte sent as the server closed, unread there, resets the
    -- connection ("closed"): the reply that came before it still counts
    if err ~= "timeout" then
      if partial ~= nil and partial ~= "" then return partial end
      return nil, err
    end
    buf = partial or buf
  end
  return nil, "the server never answered"
end


local function send_later (first, delay, second, close)
  return function (c)
    assert(c:send(first))
    T.sleep(delay)
    assert(c:send(second))
    if close then c:shutdown("send") end
    return c:receive("*a")
  end
end


local cases = {
  -- "l" and "L"
  { name = '"l" reads a line without its end', input = "hello\nworld\n",
    body = 'return req:read("l")', expect = P("hello") },
  { name = '"L" reads a line with its end', input = "hello\nworld\n",
    body = 'return req:read("L")', expect = P("hello\n") },
  { name = 'no format means "l"', input = "hello\nworld\n",
    body = 'return req:read()', expect = P("hello") },
  { name = '"l" and "L" on empty lines', input = "\n\nx\n",
    body = 'return req:read("l", "L", "l")', expect = P("", "\n", "x") },
  { name = '"l" at EOF gives nil', input = "",
    body = 'return req:read("l")', expect = P(nil) },
  { name = '"l" after the last line gives nil', input = "one\n",
    body = 'return req:read("l", "l", "l")', expect = P("one", nil) },
  { name = '"l" reads a last line without a newline', input = "one\ntwo",
    body = 'return req:read("l", "l")', expect = P("one", "two") },
  { name = '"L" reads a last line without a newline', input = "one\ntwo",
    body = 'return req:read("L", "L", "L")', expect = P("one\n", "two", nil)
  },
  { name = '"L" is 8-bit clean', input = "a\0b\r\255\n",
    body = 'return req:read("L")', expect = P("a\0b\r\255\n") },
  { name = '"l" reads a line that comes in pieces',
    client = send_later("hel", 0.2, "lo\n"),
    body = 'return req:read("l")', expect = P("hello") },
  { name = '"l" reads a 60,000-byte line under the default limit',
    input = string.rep("y", 60000) .. "\n",
    body = 'return #req:read("l")', expect = P(60000) },

  -- "a"
  { name = '"a" reads all until EOF', input = "x\ny\n\nz",
    body = 'return req:read("a")', expect = P("x\ny\n\nz") },
  { name = '"a" waits for EOF across pieces',
    client = send_later("ab", 0.2, "cd", true),
    body = 'return req:read("a")', expect = P("abcd") },
  { name = '"a" at EOF gives ""', input = "",
    body = 'return req:read("a")', expect = P("") },
  { name = '"a" after "a" gives ""', input = "all",
    body = 'return req:read("a", "a")', expect = P("all", "") },
  { name = '"a" reads a megabyte', input = string.rep("0123456789", 100000),
    body = 'return #req:read("a")', expect = P(1000000) },

  -- n
  { name = "n reads n bytes", input = "abcdef",
    body = 'return req:read(4)', expect = P("abcd") },
  { name = "n waits for all n bytes",
    client = send_later("ab", 0.2, "cd"),
    body = 'return req:read(4)', expect = P("abcd") },
  { name = "n gives fewer when EOF comes first", input = "ab",
    body = 'return req:read(4)', expect = P("ab") },
  { name = "n at EOF gives nil", input = "",
    body = 'return req:read(4)', expect = P(nil) },

  -- several formats
  { name = "several formats give several values", input = "one\ntwo\nrest",
    body = 'return req:read("l", "L", "a")', expect = P("one", "two\n", "rest")
  },
  { name = "n then a line", input = "abcdef\nxyz",
    body = 'return req:read(3, "l", 1)', expect = P("abc", "def", "x") },
  { name = 'n then "a" at EOF gives ""', input = "x",
    body = 'return req:read(1, "a")', expect = P("x", "") },
  { name = "values read so far, then nil at EOF", input = "ab",
    body = 'return req:read(2, "l", "l")', expect = P("ab", nil) },

  -- recv
  { name = "recv(max) returns at most max bytes", input = "abcdef",
    body = 'return req:recv(3)', expect = P("abc") },
  { name = "recv returns what is there without waiting for max",
    input = "abc", keep_open = true, args = { "--timeout", "3" },
    body = 'return req:recv(100)', expect = P("abc") },
  { name = "recv waits for the first byte",
    client = function (c)
      T.sleep(0.2)
      assert(c:send("xyz"))
      return c:receive("*a")
    end,
    body = 'return req:recv(100)', expect = P("xyz"), min_time = 0.19 },
  { name = "recv returns buffered bytes first", input = "line\nrest",
    body = 'return req:read("l"), req:recv(100), req:recv(100)',
    expect = P("line", "rest", nil) },
  { name = "recv at EOF gives nil", input = "",
    body = 'return req:recv(10)', expect = P(nil) },

  -- recv(max, fn, state, same)
  { name = "recv with same: exactly those bytes give true and are consumed",
    input = "hello", body = 'return req:recv(100, nil, nil, "hello"), '
      .. 'req:recv(100)', expect = P(true, nil) },
  { name = "recv with same: other bytes of its length give a string",
    input = "hellx", body = 'return req:recv(100, nil, nil, "hello")',
    expect = P("hellx") },
  { name = "recv with same: a prefix of it gives the prefix",
    input = "hel", keep_open = true, args = { "--timeout", "3" },
    body = 'return req:recv(100, nil, nil, "hello")', expect = P("hel") },
  { name = "recv with same: a prefix, then the rest, gives two strings",
    client = send_later("hel", 0.2, "lo", true),
    body = 'return req:recv(100, nil, nil, "hello"), '
      .. 'req:recv(100, nil, nil, "hello")', expect = P("hel", "lo") },
  { name = "recv with same: bytes beyond it give them all, as a string",
    input = "hellohello", body = 'return req:recv(100, nil, nil, "hello")',
    expect = P("hellohello") },
  { name = "recv with same: it again after the first is consumed",
    input = "hello", body = 'return req:read(1), '
      .. 'req:recv(100, nil, nil, "ello"), req:recv(100, nil, nil, "ello")',
    expect = P("h", true, nil) },
  { name = "recv with same longer than max gives max bytes",
    input = "hello", body = 'return req:recv(3, nil, nil, "hello")',
    expect = P("hel") },
  { name = "recv with same at EOF gives nil", input = "",
    body = 'return req:recv(10, nil, nil, "x")', expect = P(nil) },
  { name = "recv with same: a non-string raises", input = "",
    body = [[local ok, err = pcall(function ()
               return req:recv(10, nil, nil, 5)
             end)
             return ok, err]],
    check = function (r)
      assert.is_false(r[1])
      assert.matches(": bad argument #4 to 'recv' %(string expected, got "
                     .. "number%)$", r[2])
    end },

  -- lines
  { name = 'lines() iterates "l"', input = "a\nb\nc",
    body = [[local t = {}
             for l in req:lines() do t[#t + 1] = l end
             return table.concat(t, "|")]], expect = P("a|b|c") },
  { name = 'lines("L") keeps the ends', input = "a\nb\nc",
    body = [[local t = {}
             for l in req:lines("L") do t[#t + 1] = l end
             return table.concat(t, "|")]], expect = P("a\n|b\n|c") },
  { name = "lines(n) iterates n-byte chunks", input = "abcde",
    body = [[local t = {}
             for l in req:lines(2) do t[#t + 1] = l end
             return table.concat(t, "|")]], expect = P("ab|cd|e") },
  { name = "lines raises on an error, like io.lines",
    input = "ok\n" .. X40 .. "\n", args = { "--max-line", "16" },
    body = [[local t = {}
             local ok, err = pcall(function ()
               for l in req:lines() do t[#t + 1] = l end
             end)
             return table.concat(t, "|"), ok,
                    (tostring(err):match("line too long"))]],
    expect = P("ok", false, "line too long") },

  -- --max-line
  { name = 'a line under --max-line is read', input = "short\n",
    args = { "--max-line", "16" },
    body = 'return req:read("l")', expect = P("short") },
  { name = '"l" longer than --max-line: nil, "line too long"',
    input = X40 .. "\n", args = { "--max-line", "16" },
    body = 'return req:read("l")', expect = P(nil, "line too long") },
  { name = '"L" longer than --max-line: nil, "line too long"',
    input = X40 .. "\n", args = { "--max-line", "16" },
    body = 'return req:read("L")', expect = P(nil, "line too long") },
  { name = "values read so far, then nil, msg",
    input = "ok\n" .. X40 .. "\n", args = { "--max-line", "16" },
    body = 'return req:read("l", "l")', expect = P("ok", nil, "line too long")
  },
  { name = "a line too long without a newline yet",
    input = X40, keep_open = true,
    args = { "--max-line", "16", "--timeout", "3" },
    body = 'return req:read("l")', expect = P(nil, "line too long"),
    max_time = 2 },

  -- timeouts
  { name = '--timeout: "l" gives nil, "timeout"', input = "", keep_open = true,
    args = { "--timeout", "1" },
    body = 'return req:read("l")', expect = P(nil, "timeout"),
    min_time = 0.9, max_time = 3 },
  { name = "--timeout: n with some bytes gives nil, \"timeout\"",
    input = "abc", keep_open = true, args = { "--timeout", "1" },
    body = 'local v, err = req:read(10); return v, err',
    expect = P(nil, "timeout"), min_time = 0.9, max_time = 3 },
  { name = "--timeout: recv gives nil, \"timeout\"",
    input = "", keep_open = true, args = { "--timeout", "1" },
    body = 'return req:recv(10)', expect = P(nil, "timeout"),
    min_time = 0.9, max_time = 3 },
  { name = "--timeout: recv with same gives nil, \"timeout\"",
    input = "", keep_open = true, args = { "--timeout", "1" },
    body = 'return req:recv(10, nil, nil, "x")', expect = P(nil, "timeout"),
    min_time = 0.9, max_time = 3 },
  { name = "--timeout: recv with same after a prefix gives the prefix",
    input = "hel", keep_open = true, args = { "--timeout", "1" },
    body = 'return req:recv(10, nil, nil, "hello"), '
      .. 'req:recv(10, nil, nil, "lo")', expect = P("hel", nil, "timeout"),
    min_time = 0.9, max_time = 3 },
  { name = "--timeout bounds a whole read, not each wait",
    client = trickle, args = { "--timeout", "1" },
    body = 'return req:read("l")', expect = P(nil, "timeout"),
    min_time = 0.9, max_time = 3 },
  { name = "req:settimeout(0.2) overrides the server's timeout",
    input = "", keep_open = true,
    body = 'req:settimeout(0.2); return req:read("l")',
    expect = P(nil, "timeout"), min_time = 0.15, max_time = 1.5 },
  { name = "req:settimeout(nil) goes back to the server's timeout",
    input = "", keep_open = true, args = { "--timeout", "1" },
    body = 'req:settimeout(0.2); req:settimeout(nil); return req:read("l")',
    expect = P(nil, "timeout"), min_time = 0.9, max_time = 3 },
  { name = "a read after a timeout still works",
    client = send_later("", 0.5, "late\n"),
    body = [[req:settimeout(0.2)
             local a, err = req:read("l")
             req:settimeout(2)
             return a, err, req:read("l")]],
    expect = P(nil, "timeout", "late") },

  -- misuse raises
  { name = 'req:read("x") raises "bad argument #1 to \'read\' (invalid '
           .. 'format)"', input = "",
    body = [[local ok, err = pcall(function () return req:read("x") end)
             return ok, err]],
    check = function (r, srv)
      assert.is_false(r[1])
      assert.equals(srv.script .. ":" .. BODY_LINE ..
                    ": bad argument #1 to 'read' (invalid format)", r[2])
    end },
  { name = "req:write({}) raises", input = "",
    body = [[local ok, err = pcall(function () return req:write({}) end)
             return ok, err]],
    check = function (r)
      assert.is_false(r[1])
      assert.matches(":" .. BODY_LINE .. ": bad argument #1 to 'write' "
                     .. "%(string expected, got table%)$", r[2])
    end },
}


local function source (case)
  return H.SER .. [[
local luasrv = require "luasrv"
return { handle = function (req)
  local function run ()
]] .. case.body .. [[

  end
  req:write(ser(run()))
end }
]]
end


local function run_case (case, model)
  local srv = H.start{ model = model, source = source(case),
                       args = case.args }
  local c = srv:connect()
  local t0 = T.now()
  local reply, err
  if case.client then
    reply, err = case.client(c)
  else
    if case.input ~= "" then assert(c:send(case.input)) end
    if not case.keep_open then c:shutdown("send") end
    reply, err = c:receive("*a")
  end
  local dt = T.now() - t0
  assert(reply, "no reply (" .. tostring(err) .. "); stderr:\n" ..
                srv:stderr())
  if case.check then
    case.check(H.unser(reply), srv)
  else
    assert.same(case.expect, H.unser(reply))
  end
  if case.min_time then
    assert.is_true(dt >= case.min_time, "took only " .. dt .. " s")
  end
  if case.max_time then
    assert.is_true(dt <= case.max_time * H.scale,
                   "took " .. dt .. " s")
  end
end


H.for_models(function (model)
  describe("req:read", function ()
    for _, case in ipairs(cases) do
      it(case.name, function () run_case(case, model) end)
    end
  end)

  describe("req:write", function ()
    it("buffers until flush", function ()
      local srv = H.start{ model = model, source = [[
local luasrv = require "luasrv"
return { handle = function (req)
  req:write("a")
  luasrv.sleep(0.6)
  req:write("b"):flush()
  luasrv.sleep(0.6)
  req:write("c")
end }]] }
      local c = srv:connect()
      c:settimeout(0.3)
      assert.same({ nil, "timeout" }, { c:receive(1) })   -- "a" is held
      c:settimeout(2)
      local dt, ab = H.elapsed(c.receive, c, 2)
      assert.equals("ab", ab)
      assert.is_true(dt < 0.6, "flush took " .. dt)
      assert.equals("c", c:receive("*a"))
    end)

    it("sends what is buffered before a read that must wait", function ()
      local srv = H.start{ model = model, source = [[
return { handle = function (req)
  req:write("ping\n")
  local line = req:read("l")
  req:write("got ", line, "\n")
end }]] }
      local c = srv:connect()
      c:settimeout(2)
      assert.equals("ping", c:receive())
      assert(c:send("pong\n"))
      assert.equals("got pong", c:receive())
    end)

    it("takes strings and numbers, returns req; flush returns req",
    function ()
      local srv = H.start{ model = model, source = [[
return { handle = function (req)
  local r = req:write("int ", 42, " float ", 2.5, " ")
  local f = req:flush()
  req:write(r == req and "write:req " or "write:other ",
            f == req and "flush:req" or "flush:other")
end }]] }
      assert.equals("int 42 float 2.5 write:req flush:req",
                    srv:connect():receive("*a"))
    end)

    it("sends everything written at the end of the request", function ()
      local srv = H.start{ model = model, source = [[
return { handle = function (req)
  for i = 1, 1000 do req:write(string.rep("z", 99), "\n") end
end }]] }
      local all = srv:connect():receive("*a")
      assert.equals(100000, #all)
    end)
  end)

  describe("req:close", function ()
    it("flushes and closes at once; methods then return nil, \"closed\"",
    function ()
      local srv = H.start{ model = model, source = H.SER .. [[
local luasrv = require "luasrv"
return { handle = function (req)
  req:write("bye")
  req:close()
  luasrv.sleep(1)
  luasrv.log("read", ser(req:read("l")))
  luasrv.log("recv", ser(req:recv(1)))
  luasrv.log("write", ser(req:write("x")))
  luasrv.log("flush", ser(req:flush()))
  luasrv.log("close", ser(req:close()))
  luasrv.log("done")
end }]] }
      local c = srv:connect()
      local dt, all = H.elapsed(c.receive, c, "*a")
      assert.equals("bye", all)
      assert.is_true(dt < 0.8, "EOF came after " .. dt .. " s")
      assert.is_true(srv:wait_stderr("luasrv: done", 3, true))
      local err = srv:stderr()
      for _, m in ipairs{ "read", "recv", "write", "flush", "close" } do
        assert.truthy(err:find("luasrv: " .. m .. ' return nil, "closed"\n',
                               1, true), err)
      end
    end)

    it("methods on a connection the peer closed return nil, not raise",
    function ()
      local srv = H.start{ model = model, source = H.SER .. [[
local luasrv = require "luasrv"
return { handle = function (req)
  local line = req:read("l")
  luasrv.sleep(0.3)                    -- the client is gone by now
  local r = table.pack(req:read("l"))
  luasrv.log("after", line, ser(table.unpack(r, 1, r.n)))
end }]] }
      local c = srv:connect()
      assert(c:send("last\n"))
      c:close()
      assert.is_true(srv:wait_stderr("luasrv: after last return nil", 3,
                                     true), srv:stderr())
      assert.falsy(srv:stderr():find("error handling request", 1, true))
    end)
  end)
end)
