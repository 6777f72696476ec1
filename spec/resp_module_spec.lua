-- luasrv.resp (lua/luasrv/resp.lua): its parsers and encoders as pure
-- functions, then resp.serve through the real binary, with a handler that
-- answers every command with its own words, so what the parser made of the
-- bytes comes back to the client: partial input, pipelined arrays, inline
-- commands and bad frames.
local H = require "helper"
local T = H.T
local resp = require "luasrv.resp"

-- a RESP request from words
local frame = H.resp_command

-- inline command lines and their words: for resp.parse_inline, and the
-- same lines through resp.serve (whose reading is C: both must agree)
local INLINE = {
  { "PING", { "PING" } },
  { "PING\r", { "PING" } },
  { "  set   k  v  ", { "set", "k", "v" } },
  { 'set k "two words\\x21\\n"', { "set", "k", "two words!\n" } },
  { "set k 'it\\'s' '\\n'", { "set", "k", "it's", "\\n" } },
  { 'echo "" "\\q\\x4" "\\x4a\\"\\\\"', { "echo", "", "qx4", 'J"\\' } },
  { "a\rb\tc", { "a", "b", "c" } },
  { "", {} },
  { "\r", {} },
}
local INLINE_BAD = { 'set k "open', "set k 'open", 'echo "a"b', 'echo "a\\"' }

describe("luasrv.resp parsers", function ()
  describe("parse_inline", function ()
    for _, c in ipairs(INLINE) do
      it(("splits %q"):format(c[1]), function ()
        local words, n = resp.parse_inline(c[1])
        assert.same(c[2], words)
        assert.equals(#c[2], n)
      end)
    end

    for _, line in ipairs(INLINE_BAD) do
      it(("refuses %q"):format(line), function ()
        assert.same({ nil, "ERR Protocol error: unbalanced quotes in request" },
          { resp.parse_inline(line) })
      end)
    end
  end)

  describe("parse_header", function ()
    it("reads *N and says where the elements start", function ()
      assert.same({ 3, 5 }, { resp.parse_header("*3\r\n$3\r\n", 1) })
      assert.same({ 12, 8 }, { resp.parse_header("xx*12\r\n", 3) })
      assert.same({ 0, 6 }, { resp.parse_header("*-1\r\n", 1) })
      assert.same({ 2000, 8 }, { resp.parse_header("*2000\r\n", 1) })
    end)

    it("wants more input for a header cut short", function ()
      for _, s in ipairs({ "", "*", "*3", "*3\r", "*1000" }) do
        assert.equals(false, resp.parse_header(s, 1), s)
      end
    end)

    it("refuses bad counts", function ()
      local e = "ERR Protocol error: invalid multibulk length"
      for _, s in ipairs({ "*x\r\n", "*1.5\r\n", "*2000000\r\n",
                           "*" .. ("1"):rep(40) }) do
        assert.same({ nil, e }, { resp.parse_header(s, 1) }, s)
      end
      assert.same({ nil, "ERR Protocol error: expected '*', got '$'" },
        { resp.parse_header("$3\r\n", 1) })
    end)
  end)

  describe("parse_bulks", function ()
    it("parses pipelined elements and says where the next array starts",
       function ()
      local buf = frame("SET", "k", "a\r\nb") .. frame("GET", "k")
      local argv = {}
      local n, pos = resp.parse_header(buf, 1)
      pos = resp.parse_bulks(buf, pos, 1, n, argv)
      assert.same({ "SET", "k", "a\r\nb" }, argv)
      n, pos = resp.parse_header(buf, pos)
      argv = {}
      assert.equals(#buf + 1, resp.parse_bulks(buf, pos, 1, n, argv))
      assert.same({ "GET", "k" }, argv)
    end)

    it("resumes where the input was cut, at every byte", function ()
      local words = { "SET", "key", ("v"):rep(2000) }
      local whole = frame(table.unpack(words))
      for cut = 1, #whole - 1 do
        local argv = {}
        local n, pos = resp.parse_header(whole, 1)
        if n == false or pos > cut + 1 then goto next end
        do
          local part = whole:sub(1, cut)
          local after, i, p, missing = resp.parse_bulks(part, pos, 1, n, argv)
          assert.equals(false, after, cut)
          if missing then assert.is_true(missing > 0) end
          -- what is left of the part, then the rest
          local buf = part:sub(p) .. whole:sub(cut + 1)
          assert.equals(#buf + 1, resp.parse_bulks(buf, 1, i, n, argv))
          assert.same(words, argv)
        end
        ::next::
      end
    end)

    it("refuses bad elements", function ()
      local cases = {
        { "+foo\r\n", "expected '$', got '+'" },
        { "$-5\r\n", "invalid bulk length" },
        { "$abc\r\n", "invalid bulk length" },
        { "$" .. (64 * 1024 * 1024 + 1) .. "\r\n", "invalid bulk length" },
        { "$" .. ("9"):rep(40), "invalid bulk length" },
      }
      for _, c in ipairs(cases) do
        assert.same({ nil, "ERR Protocol error: " .. c[2] },
          { resp.parse_bulks(c[1], 1, 1, 1, {}) }, c[1])
      end
    end)
  end)
end)

describe("luasrv.resp encoders", function ()
  it("encode each kind of reply", function ()
    assert.equals("+OK\r\n", resp.OK)
    assert.equals("+QUEUED\r\n", resp.status("QUEUED"))
    assert.equals("-ERR a  b\r\n", resp.error("ERR a\r\nb"))
    assert.equals(":0\r\n", resp.int(0))
    assert.equals(":-9223372036854775808\r\n", resp.int(math.mininteger))
    assert.equals("$0\r\n\r\n", resp.bulk(""))
    assert.equals("$4\r\na\r\nb\r\n", resp.bulk("a\r\nb"))
    assert.equals("$-1\r\n", resp.bulk(nil))
    assert.equals("*3\r\n$1\r\na\r\n$-1\r\n$1\r\nc\r\n",
      resp.array({ "a", nil, "c" }, 3))
    assert.equals("*0\r\n", resp.array({}))
  end)

  it("refuses a float where RESP wants an integer", function ()
    for _, v in ipairs({ 1e17, 1.5, 0 / 0, math.huge, "1" }) do
      assert.has_error(function () resp.int(v) end)
      assert.has_error(function () resp.array_header(v) end)
    end
  end)
end)


-- a handler whose every reply is the array of the command's words (a word
-- over 100 bytes comes back as its length and its last byte, so a client
-- that sends megabytes before it reads does not wait for its own echo);
-- QUIT ends the connection
local ECHO_WORDS = [[
local resp = require "luasrv.resp"
return { handle = function (req)
  resp.serve(req, function (argv, n)
    if argv[1] == "QUIT" then return resp.OK, "quit" end
    if argv[1] == "RAISE" then error("command failed: " .. argv[2]) end
    local words = {}
    for i = 1, n do
      local w = argv[i]
      words[i] = #w > 100 and #w .. " bytes, " .. w:sub(-1) or w
    end
    return resp.array(words, n)
  end)
end }
]]

-- reads one reply of the echo handler from c: the words, or the error or
-- status line
local function read_reply (c)
  local line, err = c:receive()
  if not line then return nil, err end
  local n = line:match("^%*(%d+)$")
  if not n then return line end
  local words = {}
  for i = 1, tonumber(n) do
    local len = assert(tonumber(assert(c:receive()):match("^%$(%d+)$")))
    words[i] = assert(c:receive(len + 2)):sub(1, len)
  end
  return words
end

H.for_models(function (model)
  describe("resp.serve", function ()
    local srv
    before_each(function ()
      srv = H.start{ model = model, source = ECHO_WORDS, tcp = true,
                     args = { "--timeout", "5" } }
    end)

    it("reads an array cut at every byte", function ()
      local whole = frame("SET", "k", "a\r\nb") .. frame("PING")
      local c = srv:connect()
      for cut = 1, #whole - 1 do
        c:send(whole:sub(1, cut))
        T.sleep(0.003)
        c:send(whole:sub(cut + 1))
        assert.same({ "SET", "k", "a\r\nb" }, read_reply(c), cut)
        assert.same({ "PING" }, read_reply(c), cut)
      end
    end)

    it("reads a pipeline of arrays and inline commands in order", function ()
      local c = srv:connect()
      local batch, want = {}, {}
      for i = 1, 300 do
        local big = ("x"):rep(i * 331) .. i % 10   -- up to ~100 KB
        batch[#batch + 1] = frame("SET", "k" .. i, big)
        want[#want + 1] = { "SET", "k" .. i, #big .. " bytes, " .. i % 10 }
        batch[#batch + 1] = "GET k" .. i .. "\r\n"
        want[#want + 1] = { "GET", "k" .. i }
        batch[#batch + 1] = frame()     -- "*0": nothing, no reply
      end
      assert(c:send(table.concat(batch)))
      for i = 1, #want do
        local got = read_reply(c)
        assert.same(want[i], got, i)
      end
    end)

    it("sends the replies before a command that raises, then ends",
    function ()
      local c = srv:connect()
      c:send(frame("A") .. frame("B") .. frame("RAISE", "x") .. frame("C"))
      assert.same({ "A" }, read_reply(c))
      assert.same({ "B" }, read_reply(c))
      assert.same({ nil, "closed" }, { c:receive() })
      assert.truthy(srv:wait_stderr("command failed: x", 3, true))
    end)

    it("takes inline commands as telnet sends them", function ()
      local c = srv:connect()
      c:send('ECHO "a b" \'c\'\r\n\r\nPING\nQUIT\r\n')
      assert.same({ "ECHO", "a b", "c" }, read_reply(c))
      assert.same({ "PING" }, read_reply(c))
      assert.equals("+OK", read_reply(c))
      assert.same({ nil, "closed" }, { c:receive() })
    end)

    it("splits inline commands as resp.parse_inline does", function ()
      local c = srv:connect()
      local batch = {}
      for _, case in ipairs(INLINE) do batch[#batch + 1] = case[1] .. "\n" end
      c:send(table.concat(batch) .. frame("PING"))
      for _, case in ipairs(INLINE) do
        if #case[2] > 0 then   -- an empty line has no reply
          assert.same(case[2], read_reply(c), case[1])
        end
      end
      assert.same({ "PING" }, read_reply(c))
      c:close()   -- sync serves one connection at a time
      for _, line in ipairs(INLINE_BAD) do
        c = srv:connect()
        c:send(line .. "\r\n")
        assert.equals("-ERR Protocol error: unbalanced quotes in request",
          read_reply(c), line)
        assert.same({ nil, "closed" }, { c:receive() })
      end
    end)

    local bad = {
      { "*1\r\n+foo\r\n", "expected '$', got '+'" },
      { "*abc\r\n", "invalid multibulk length" },
      { "*2000000\r\n", "invalid multibulk length" },
      { "*1\r\n$-5\r\n", "invalid bulk length" },
      { "*1\r\n$" .. ("9"):rep(40), "invalid bulk length" },
      { 'SET k "open\r\n', "unbalanced quotes in request" },
    }
    for _, b in ipairs(bad) do
      for _, after in ipairs({ false, true }) do
        it(("answers %q%s with its error and closes"):format(b[1],
            after and " after a command in the same packet" or ""),
           function ()
          local c = srv:connect()
          c:send((after and frame("PING") or "") .. b[1])
          if after then assert.same({ "PING" }, read_reply(c)) end
          assert.equals("-ERR Protocol error: " .. b[2], read_reply(c))
          assert.same({ nil, "closed" }, { c:receive() })
          local other = srv:connect()   -- the others are still served
          other:send(frame("PING"))
          assert.same({ "PING" }, read_reply(other))
        end)
      end
    end
  end)

  describe("resp.serve's limits", function ()
    it("refuses an inline command longer than --max-line after an array",
       function ()
      local srv = H.start{ model = model, source = ECHO_WORDS, tcp = true,
                           args = { "--timeout", "5", "--max-line", "100" } }
      local c = srv:connect()
      c:send(frame("PING") .. "ECHO " .. ("y"):rep(200) .. "\r\n")
      assert.same({ "PING" }, read_reply(c))
      assert.equals("-ERR Protocol error: too big inline request",
        read_reply(c))
      assert.same({ nil, "closed" }, { c:receive() })
    end)

    it("says so when dispatch returns no string, after the replies before",
       function ()
      local srv = H.start{ model = model, tcp = true, source = [[
local resp = require "luasrv.resp"
return { handle = function (req)
  resp.serve(req, function (argv) if argv[1] == "PING" then return resp.PONG end end)
end }
]] }
      local c = srv:connect()
      c:send(frame("PING") .. frame("NOPE") .. frame("PING"))
      assert.equals("+PONG", c:receive())
      assert.same({ nil, "closed" }, { c:receive() })
      assert.truthy(srv:wait_stderr("dispatch returned nil, not a string", 3,
        true))
    end)
  end)
end)
