-- spec/memory_spec.lua: the event model gives back what a burst of
-- connections left pooled once it is idle, so its RSS does not climb
-- round after round (coroutines, small blocks, buffers, then malloc_trim);
-- and a kept-alive HTTP connection waiting for its next request holds
-- little Lua state: parked, it has no coroutine (no stack, no call
-- frames), only its request object, the reader and the loop's state.
local H = require "helper"
local T = H.T
local socket = require "socket"

local function rss (pid)
  local f = io.open("/proc/" .. pid .. "/status")
  if not f then return nil end
  local kb = f:read("a"):match("VmRSS:%s*(%d+)")
  f:close()
  return tonumber(kb)
end

local ECHO = [[return { handle = function (req)
  for line in req:lines() do req:write(line, "\n") end end }]]

for _, model in ipairs(H.models) do
  if model == "event" then
    describe("model event", function ()
      it("returns to its first burst's RSS after five bursts of 2,000 "
         .. "abandoned connections", function ()
        -- AddressSanitizer keeps freed memory in quarantine: RSS says
        -- nothing about what the server gives back there
        if os.getenv("ASAN_OPTIONS") then
          pending("not under AddressSanitizer")
          return
        end
        local srv = H.start{ model = model, source = ECHO,
          args = { "--max-connections", "5000", "--log-level", "debug" } }
        local worker = H.children(srv.pid)[1]
        local first, last
        for round = 1, 5 do
          local held = {}
          for i = 1, 2000 do
            local c = assert(socket.connect("127.0.0.1", srv.tcp.port))
            c:send("hello\n")
            held[i] = c
          end
          held[#held]:settimeout(5)
          assert.equals("hello", held[#held]:receive())
          T.sleep(0.2)
          first = first or rss(worker)
          for _, c in ipairs(held) do c:close() end
          -- idle for a whole service tick: the pools are trimmed
          local n = round
          assert.truthy(H.eventually(function ()
            return H.count(srv:stderr(), "idle: pools trimmed", true) >= n
          end, 5), srv:stderr():sub(-2000))
          last = rss(worker)
        end
        assert.is_true(last <= first + 1024,
          ("RSS %d kB after the fifth burst, %d kB at the first"):format(last, first))
      end)

      it("holds under 1.5 KiB of Lua heap per idle kept-alive connection "
         .. "of scripts/http.lua", function ()
        local dir = T.tmpdir()
        H.defer(function () T.rmrf(dir) end)
        local sock = dir .. "/admin.sock"
        local srv = H.start{ model = model, script = "scripts/http.lua",
          tcp = true, args = { "--admin", sock, "--timeout", "0" } }
        local function heap ()   -- bytes, after a full collection
          local code, out, err = T.run{ "ctl", sock, "eval", "1",
            "collectgarbage() collectgarbage() "
            .. "return math.floor(collectgarbage('count') * 1024)" }
          assert.equals(0, code, err)
          return assert(tonumber(out), out)
        end
        local function hello ()   -- a connection that got its answer
          local c = assert(socket.connect("127.0.0.1", srv.tcp.port))
          c:settimeout(5 * H.scale)
          c:send("GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            .. "User-Agent: memory_spec\r\n\r\n")
          assert.equals("HTTP/1.1 200 OK", c:receive())
          repeat local line = assert(c:receive()) until line == ""
          assert.equals("hello\n", c:receive(6))
          return c
        end
        hello():close()         -- the head cache and the pools are made
        local before, held, n = heap(), {}, 300
        for i = 1, n do held[i] = hello() end
        T.sleep(0.1)            -- idle: parked
        local per = (heap() - before) / n
        for _, c in ipairs(held) do c:close() end
        assert.is_true(per < 1536,
          ("%.0f bytes of Lua heap per idle connection"):format(per))
      end)
    end)
  end
end
