-- spec/memory_spec.lua: the event model gives back what a burst of
-- connections left pooled once it is idle, so its RSS does not climb
-- round after round (coroutines, small blocks, buffers, then malloc_trim);
-- and a kept-alive HTTP connection waiting for its next request holds
-- little Lua state: parked, it has no coroutine (no stack, no call
-- frames), no reader and no request metatable: only its request object
-- and the loop's state (an array of 7); and
-- a burst of TLS handshakes leaves no holes of their buffers in its RSS.
local H = require "helper"
local T = H.T
local socket = require "socket"

local function quote (s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function rss (pid)
  local f = io.open("/proc/" .. pid .. "/status")
  if not f then return nil end
  local kb = f:read("a"):match("VmRSS:%s*(%d+)")
  f:close()
  return tonumber(kb)
end

-- Python's ssl: 8 TLS connections, one GET /hello each, closed (the
-- server's first handshakes load what every later one uses); "warm", then
-- once the file GO is there (30 s at most), N connections (at most 256 handshakes at once,
-- as bench/loadgen --hold); "held N" when all have their answer, and
-- they are kept until the server closes them (30 s at most).
local HOLD_TLS = [[
import asyncio, os, ssl, sys
port, n, go = int(sys.argv[1]), int(sys.argv[2]), sys.argv[4]
ctx = ssl.create_default_context(cafile=sys.argv[3])
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
gate = asyncio.Semaphore(256)
async def one():
    async with gate:
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                             server_hostname="localhost")
        w.write(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await r.readuntil(b"hello\n")
    return r, w
async def main():
    for r, w in await asyncio.wait_for(asyncio.gather(*[one() for _ in range(8)]), 30):
        w.close()
    print("warm", flush=True)
    for _ in range(1500):
        if os.path.exists(go): break
        await asyncio.sleep(0.02)
    held = await asyncio.wait_for(asyncio.gather(*[one() for _ in range(n)]), 60)
    print("held", len(held), flush=True)
    try:
        await asyncio.wait_for(asyncio.gather(*[r.read() for r, _ in held]), 30)
    except asyncio.TimeoutError:
        pass
asyncio.run(main())
]]

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

      it("holds under 900 B of Lua heap per idle kept-alive connection "
         .. "of scripts/http.lua", function ()
        local dir = H.tmpdir()
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
        -- idle: parked after two of the loop's ticks (tens of ms; more on
        -- a loaded machine)
        local per
        H.eventually(function ()
          per = (heap() - before) / n
          return per < 900
        end, 3)
        for _, c in ipairs(held) do c:close() end
        assert.is_true(per < 900,
          ("%.0f bytes of Lua heap per idle connection"):format(per))
      end)

      it("gives the heap holes of a burst of 600 TLS handshakes back: "
         .. "under 22 KiB of RSS per idle connection", function ()
        -- with them: 29-35 KiB (256 handshakes at once, ~50 KB each); an
        -- idle connection of scripts/http.lua itself holds ~19 KiB
        if os.getenv("ASAN_OPTIONS") then
          pending("not under AddressSanitizer")
          return
        end
        local C = require "tls_certs"
        local d, n = C.dir(), 600
        local srv = H.start{ model = model, script = "scripts/http.lua",
          args = { "--tls", "127.0.0.1:0", "--tls-cert", d .. "/server.pem",
                   "--tls-key", d .. "/server.key", "--tls-min-version", "1.3",
                   "--timeout", "0", "--max-connections", "5000" } }
        local worker = H.children(srv.pid)[1]
        local dir = T.tmpdir()
        H.defer(function () T.rmrf(dir) end)
        local go = dir .. "/go"
        local py = io.popen(("python3 -c %s %d %d %s %s"):format(quote(HOLD_TLS),
          srv.tls.port, n, quote(d .. "/ca.pem"), quote(go)))
        H.defer(function () srv:stop() py:close() end)
        assert.equals("warm", py:read("l"))
        local before = rss(worker)
        H.write_file(go, "")
        assert.equals("held " .. n, py:read("l"))
        -- a burst's holes go back when its last handshake ends, or at
        -- the next service tick (0.5 s) if the last time was < 1 s ago
        local per
        H.eventually(function ()
          per = (rss(worker) - before) * 1024 / n
          return per < 22 * 1024
        end, 3)
        assert.is_true(per < 22 * 1024,
          ("%.0f bytes of RSS per idle TLS connection"):format(per))
      end)
    end)
  end
end
