-- luasrv.http's deadlines: a request head must come whole within
-- header_timeout and a body within body_timeout, else 408 and close, so
-- slow clients (slowloris) cannot hold a model's every worker, child or
-- thread. Raw sockets trickle the bytes; every loop is bounded in count
-- and time.
local H = require "helper"
local T = H.T

local HEADER_TIMEOUT = 1 * H.scale
local BODY_TIMEOUT = 1 * H.scale
local TRICKLE = 0.25 * H.scale          -- seconds between trickled lines
local TRICKLE_FOR = 8 * H.scale         -- how long a slow client goes on

local ROOT = H.ROOT

-- the handler: luasrv.http with short deadlines
local SOURCE = ([[
package.path = %q .. "/lua/?.lua;" .. package.path
local http = require "luasrv.http"
return http.handler(function (r)
  return "hello " .. #r.body .. "\n"
end, { header_timeout = %s, body_timeout = %s, keepalive_timeout = %s })
]]):format(ROOT, HEADER_TIMEOUT, BODY_TIMEOUT, 0.5 * H.scale)

-- what limits the concurrent requests of each model to 2 (sync: 1)
local LIMITS = {
  fork = { "--max-children", "2" },
  thread = { "--max-threads", "2" },
  event = {},
  sync = {},
}

local function start (model)
  return H.start{ model = model, source = SOURCE, tcp = true,
                  args = LIMITS[model] }
end

-- a raw client, closed when the test ends
local connect = H.connect

-- the status of what c has received so far (nil: nothing yet), without
-- waiting
local function status_of (c)
  c:settimeout(0)
  local data, _, partial = c:receive("a")
  c.got = (c.got or "") .. (data or partial or "")
  return tonumber(c.got:match("^HTTP/1%.1 (%d%d%d) "))
end

-- true once the server has closed c (after what it sent)
local function closed (c)
  c:settimeout(0)
  local data, err, partial = c:receive("a")
  c.got = (c.got or "") .. (data or partial or "")
  return data ~= nil or err == "closed"
end

-- Trickles a line to each slow client every TRICKLE seconds, for up to
-- TRICKLE_FOR seconds, until done() is true. Returns done()'s value.
local function trickle (slow, line, done)
  local deadline = T.now() + TRICKLE_FOR
  while T.now() < deadline do
    local v = done()
    if v then return v end
    for _, c in ipairs(slow) do
      if not c.gone then
        local ok = c:send(line)
        if not ok then c.gone = true end
      end
    end
    T.sleep(TRICKLE)
  end
  return done()
end


H.for_models(function (model)
  describe("http deadlines", function ()
    it("answers 408 to a head trickled past header_timeout, and serves" ..
       " the others once it is freed", function ()
      local srv = start(model)
      -- twice as many slow clients as the model runs at once: they take
      -- every worker, child or thread twice over
      local slow = {}
      for i = 1, 4 do
        local c = connect(srv)
        c:send("GET / HTTP/1.1\r\nHost: x\r\n")
        slow[i] = c
      end
      local normal = connect(srv)
      normal:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
      local served = trickle(slow, "X-Slow: 1\r\n", function ()
        return status_of(normal)
      end)
      assert.equals(200, served, "the normal request was not served " ..
        "while slow clients trickled their heads")
      assert.matches("\r\n\r\nhello 0\n$", normal.got)
      -- each slow client gets its 408 and is closed (bounded wait)
      local all = trickle(slow, "X-Slow: 1\r\n", function ()
        for _, c in ipairs(slow) do
          if status_of(c) ~= 408 then return false end
        end
        return true
      end)
      assert.is_true(all, "a slow client did not get 408")
      for _, c in ipairs(slow) do
        assert.matches("\r\nConnection: close\r\n", c.got)
        assert.is_true(H.eventually(function () return closed(c) end, 2))
      end
    end)

    it("answers 408 to a later request's head trickled past" ..
       " header_timeout", function ()
      local srv = start(model)
      local c = connect(srv)
      c:send("GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n")
      local got408 = trickle({ c }, "X-Slow: 1\r\n", function ()
        status_of(c)                        -- collects what came in c.got
        return c.got:find("HTTP/1.1 408 ", 1, true) ~= nil
      end)
      assert.is_true(got408, "no 408 after the first answer: " ..
        tostring(c.got))
      assert.matches("^HTTP/1%.1 200 OK\r\n", c.got)
    end)

    it("answers 408 to a body trickled past body_timeout", function ()
      local srv = start(model)
      for _, head in ipairs{
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
      } do
        local c = connect(srv)
        c:send(head)
        local chunked = head:find("chunked", 1, true)
        local status = trickle({ c }, chunked and "1\r\nx\r\n" or "x",
          function () return status_of(c) end)
        assert.equals(408, status, head)
        c:close()
      end
    end)

    it("serves a head and a body that come in pieces in time", function ()
      local srv = start(model)
      local c = connect(srv)
      for _, piece in ipairs{ "POST / HTTP/1.1\r\n", "Host: x\r\n",
          "Content-Length: 3\r\n\r\n", "a", "b", "c" } do
        c:send(piece)
        T.sleep(0.05)
      end
      c:settimeout(5)
      assert.equals("HTTP/1.1 200 OK", c:receive("l"))
    end)

    it("closes an idle kept-alive connection without a word", function ()
      local srv = start(model)
      local c = connect(srv)
      c:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
      local closed_now = H.eventually(function () return closed(c) end, 5)
      assert.is_true(closed_now)
      assert.matches("^HTTP/1%.1 200 OK\r\n", c.got)
      assert.equals(1, H.count(c.got, "HTTP/1.1 ", true))
    end)
  end)
end)
