-- scripts/proxy.lua (docs-spawn.md): a TCP proxy built on luasrv.spawn.
-- Bytes both ways, either side closing closes the other, a refused
-- upstream, and redis-benchmark through it to a real redis-server (when
-- redis-server and redis-benchmark are installed: Debian redis-server,
-- redis-tools). Loopback only, bounded.
local H = require "helper"
local socket = require "socket"

local function have (cmd)
  return os.execute("command -v " .. cmd .. " >/dev/null 2>&1") == true
end

local free_port = H.free_port

-- the upstream: echoes each line upper-cased; "quit" closes
local UPSTREAM = [[
return { handle = function (req)
  for line in req:lines() do
    if line == "quit" then req:write("bye\n") return end
    req:write(line:upper(), "\n")
    req:flush()
  end
end }
]]

local function proxy (url, args)
  return H.start{ model = "event", script = "scripts/proxy.lua",
                  env = { LUASRV_UPSTREAM = url }, args = args }
end

local function up_url (srv) return "tcp://127.0.0.1:" .. srv.tcp.port end


describe("scripts/proxy.lua", function ()
  it("relays lines both ways", function ()
    local up = H.start{ model = "event", source = UPSTREAM }
    local p = proxy(up_url(up))
    local c = p:connect()
    for i = 1, 20 do
      c:send("line " .. i .. "\n")
      assert.equals("LINE " .. i, c:receive())
    end
  end)

  it("relays a megabyte each way, byte for byte", function ()
    local up = H.start{ model = "event", source = [[
      return { handle = function (req)
        local n = 0
        while n < 1048576 do
          local s = req:recv(65536)
          if not s then return end
          n = n + #s
          req:write(s)
        end
      end }]] }
    local p = proxy(up_url(up))
    local c = p:connect()
    local chunk = {}
    for i = 0, 1023 do chunk[#chunk + 1] = string.char(i % 256) end
    local data = string.rep(table.concat(chunk), 1024)
    local got = {}
    c:settimeout(0)
    local sent, n = 1, 0
    local t0 = H.T.now()
    while n < #data and H.T.now() - t0 < 10 do
      if sent <= #data then
        local last = c.sock:send(data, sent, math.min(#data, sent + 65535))
        if last then sent = last + 1 end
      end
      local s, _, partial = c.sock:receive(65536)
      s = s or partial
      if s and #s > 0 then got[#got + 1] = s; n = n + #s end
      socket.sleep(0.001)
    end
    assert.equals(#data, n)
    assert.is_true(table.concat(got) == data)
  end)

  it("keeps both directions going under backpressure (--timeout 0)",
     function ()
    -- the client writes 4 MB before it reads anything: the proxy's writes
    -- to the client stall while its reads from the client still go on,
    -- both on the same connection, in two light threads
    local up = H.start{ model = "event", source = [[
      return { handle = function (req)
        while true do
          local s = req:recv(65536)
          if not s then return end
          req:write(s)
          if not req:flush() then return end
        end
      end }]] }
    local p = proxy(up_url(up), { "--timeout", "0" })
    local c = p:connect()
    local data = string.rep("0123456789abcdef", 4 * 65536)  -- 4 MiB
    c:settimeout(0)
    local sent, n, got = 1, 0, {}
    local t0 = H.T.now()
    local reading_from = t0 + 0.5
    while n < #data and H.T.now() - t0 < 20 do
      if sent <= #data then
        local last, _, partial = c.sock:send(data, sent,
                                             math.min(#data, sent + 65535))
        last = last or partial
        if last and last >= sent then sent = last + 1 end
      end
      if H.T.now() >= reading_from then
        local s, _, partial = c.sock:receive(65536)
        s = s or partial
        if s and #s > 0 then got[#got + 1] = s; n = n + #s end
      end
      socket.sleep(0.001)
    end
    assert.equals(#data, n)
    assert.is_true(table.concat(got) == data)
  end)

  it("closes the client when the upstream closes", function ()
    local up = H.start{ model = "event", source = UPSTREAM }
    local p = proxy(up_url(up))
    local c = p:connect()
    c:send("quit\n")
    assert.equals("bye", c:receive())
    local s, err = c:receive()
    assert.is_nil(s)
    assert.equals("closed", err)
  end)

  it("closes the upstream when the client closes", function ()
    local up = H.start{ model = "event", source = [[
      local luasrv = require "luasrv"
      return { handle = function (req)
        local t0 = luasrv.now()
        local s, err = req:read("a")
        luasrv.log(string.format("upstream saw %q after %.1f", s, luasrv.now() - t0))
      end }]] }
    local p = proxy(up_url(up), { "--timeout", "30" })
    local c = p:connect()
    c:send("partial")
    H.T.sleep(0.1)
    c:close()
    assert.is_true(up:wait_stderr('upstream saw "partial" after 0.1', 3),
                   up:stderr())
  end)

  it("closes the client when the upstream refuses", function ()
    local p = proxy("tcp://127.0.0.1:" .. free_port())
    local c = p:connect()
    local s, err = c:receive()
    assert.is_nil(s)
    assert.equals("closed", err)
    assert.is_true(p:wait_stderr("proxy: upstream tcp://127.0.0.1:%d+: " ..
                                 "connection refused", 3))
  end)

  it("closes both after LUASRV_PROXY_TIMEOUT of silence", function ()
    local up = H.start{ model = "event", source = UPSTREAM }
    local p = H.start{ model = "event", script = "scripts/proxy.lua",
                       env = { LUASRV_UPSTREAM = up_url(up),
                               LUASRV_PROXY_TIMEOUT = "0.3" } }
    local c = p:connect()
    c:send("x\n")
    assert.equals("X", c:receive())
    local t0 = H.T.now()
    local s, err = c:receive()
    local secs = H.T.now() - t0
    assert.is_nil(s)
    assert.equals("closed", err)
    assert.is_true(secs > 0.25 and secs < 0.3 + 0.5 * H.scale, "took " .. secs)
  end)

  it("refuses to start in a model that cannot run both directions",
     function ()
    local code, _, err = H.T.run{ "scripts/proxy.lua", "--tcp",
      "127.0.0.1:0", "--model", "sync",
      env = { LUASRV_UPSTREAM = "tcp://127.0.0.1:1" } }
    assert.equals(1, code)
    assert.matches("needs the event model", err)
  end)

  describe("with redis-server upstream and redis-benchmark", function ()
    local ok = have("redis-server") and have("redis-benchmark")
    local redis_port
    local maybe = ok and it or pending

    local function start_redis ()
      redis_port = H.redis_server()
    end

    local function bench (port, extra)
      local f = io.popen("timeout 60 redis-benchmark -h 127.0.0.1 -p " ..
        port .. " -t set,get -n 2000 -q " .. (extra or "") ..
        " 2>&1 </dev/null; echo rc=$?")
      local out = f:read("a"):gsub("\r", "\n")
      f:close()
      return out
    end

    maybe("serves SET and GET, one at a time and pipelined (-P 16)",
          function ()
      start_redis()
      local p = proxy("tcp://127.0.0.1:" .. redis_port, { "--timeout", "0" })
      for _, extra in ipairs{ "", "-P 16" } do
        local out = bench(p.tcp.port, extra)
        assert.matches("rc=0", out)
        assert.matches("SET: [%d.]+ requests per second", out)
        assert.matches("GET: [%d.]+ requests per second", out)
      end
      -- the data went through to the real server
      local s = assert(socket.connect("127.0.0.1", p.tcp.port))
      s:settimeout(5)
      s:send("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n")
      assert.equals("+OK", s:receive())
      s:close()
      local r = assert(socket.connect("127.0.0.1", redis_port))
      r:settimeout(5)
      r:send("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
      assert.equals("$5", r:receive())
      assert.equals("hello", r:receive())
      r:close()
    end)
  end)
end)
