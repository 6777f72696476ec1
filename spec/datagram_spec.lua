-- Datagram listeners (SPEC §3), udp and unixgram alike: the reply is one
-- datagram sent after finish, nothing is sent when nothing was written,
-- big datagrams arrive whole, req:read works over the datagram's bytes.
local H = require "helper"

local BIG = 65507                      -- the largest UDP payload over IPv4


H.for_models(function (model)
  for _, kind in ipairs{ "udp", "unixgram" } do
    describe(kind, function ()
      local function start (source)
        return H.start{ model = model, [kind] = true, source = source }
      end

      it("sends what setup, handle and finish wrote as one datagram, "
         .. "after finish", function ()
        local srv = start [[
return {
  setup = function (req) req:write("setup ") end,
  handle = function (req) req:write("handle ", req.request, " ") end,
  finish = function (req) req:write("finish") end,
}]]
        local c = srv:connect(kind)
        assert(c:send("one"))
        assert.equals("setup handle one finish", c:receive())
        c:settimeout(0.3)
        assert.same({ nil, "timeout" }, { c:receive() })
        c:settimeout(5)
        assert(c:send("two"))                     -- and again
        assert.equals("setup handle two finish", c:receive())
      end)

      it("flush does not send a separate datagram", function ()
        local srv = start [[
return { handle = function (req)
  req:write("a"):flush()
  req:write("b")
end }]]
        local c = srv:connect(kind)
        assert(c:send("x"))
        assert.equals("ab", c:receive())
      end)

      it("sends nothing when nothing was written", function ()
        local srv = start [[
local luasrv = require "luasrv"
return { handle = function (req)
  luasrv.log("handled", req.request)
  if req.request == "answer" then req:write("answered") end
end }]]
        local c = srv:connect(kind)
        c:settimeout(0.3)
        assert(c:send("silent"))
        assert.is_true(srv:wait_stderr("luasrv: handled silent", 2, true))
        assert.same({ nil, "timeout" }, { c:receive() })
        assert(c:send("answer"))                  -- the next one is answered
        c:settimeout(5)
        assert.equals("answered", c:receive())
      end)

      it("reads a " .. BIG .. "-byte datagram whole and sends it back whole",
      function ()
        local srv = start [[
return { handle = function (req) req:write(req.request) end }]]
        local c = srv:connect(kind)
        local data = {}
        for i = 1, BIG do data[i] = string.char(i % 251) end
        data = table.concat(data)
        assert(c:send(data))
        local back = c:receive()
        assert.equals(BIG, back and #back)
        assert.is_true(back == data, "the bytes differ")
      end)

      it("req:read reads the datagram's bytes", function ()
        local srv = start(H.SER .. [[
return { handle = function (req)
  req:write(ser(req:read("l", "L", 3, "l", "a", "a", "l", 1)))
end }]])
        local c = srv:connect(kind)
        assert(c:send("one\ntwo\nabcdef\nrest"))
        assert.same(table.pack("one", "two\n", "abc", "def", "rest", "",
                               nil), H.unser(c:receive()))
      end)

      it("req:lines and req:recv read the datagram's bytes", function ()
        local srv = start(H.SER .. [[
return { handle = function (req)
  local first = req:recv(2)
  local t = {}
  for l in req:lines() do t[#t + 1] = l end
  req:write(ser(first, table.concat(t, "|"), req:recv(10)))
end }]])
        local c = srv:connect(kind)
        assert(c:send("a\nb\nc"))
        assert.same(table.pack("a\n", "b|c", nil), H.unser(c:receive()))
      end)

      it("a handler that waits still has its datagram while others come",
      function ()
        local srv = start(H.SER .. [[
local luasrv = require "luasrv"
return { handle = function (req)
  local head = req:read(5)   -- only reads before the wait: no req.request
  if head ~= "slow " then
    req:write(head, req:read("a"))
    return
  end
  luasrv.sleep(0.3)
  req:write(ser(head, req:read("a"), req.request))
end }]])
        local c = srv:connect(kind)
        for i = 1, 3 do              -- a request object to reuse, warm
          assert(c:send("warm " .. i))
          assert.equals("warm " .. i, c:receive())
        end
        assert(c:send("slow datagram"))
        H.T.sleep(0.05)
        local others = srv:connect(kind)
        for i = 1, 5 do assert(others:send(("x"):rep(20) .. i)) end
        local got, want = {}, {}
        for i = 1, 5 do   -- in any order: fork and thread serve at once
          got[#got + 1] = others:receive()
          want[i] = ("x"):rep(20) .. i
        end
        table.sort(got)
        assert.same(want, got)
        assert.same(table.pack("slow ", "datagram", "slow datagram"),
          H.unser(c:receive()))
      end)

      it("an empty datagram is a request too", function ()
        local srv = start [[
return { handle = function (req) req:write("got ", #req.request) end }]]
        local c = srv:connect(kind)
        assert(c:send(""))
        assert.equals("got 0", c:receive())
      end)
    end)
  end
end)
