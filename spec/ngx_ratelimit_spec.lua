-- luasrv.ratelimit's Redis backend (lua-resty-redis on luasrv.ngx): two
-- luasrv instances (separate masters, separate ports) behind a real
-- haproxy, one redis-server: the global limit holds exactly, for
-- requests that arrive at once. Also the limiter alone: refusal, refill,
-- and a Redis that cannot be reached.
local H = require "helper"
local N = require "ngx_helper"
local socket = require "socket"

local have = N.have("redis-server") and N.have("haproxy")
local maybe = have and it or pending

local function redis ()
  return (H.redis_server())
end

local APP = [[
local ratelimit = require "luasrv.ratelimit"
local name = os.getenv("INSTANCE")
local app = { handle = function (req)
  req:write("welcome from ", name, "\n")
end }
-- one bucket for every client that sends a line; the spec's probes of
-- haproxy's port (a connect, then a close) count in another
return ratelimit.wrap(app, {
  rate = 0.001, burst = tonumber(os.getenv("BURST")),
  key = function (req) return req:read("l") and "global" or "probe" end,
  prefix = os.getenv("PREFIX"),
  message = "limited by " .. name .. "\n",
  redis = { host = "127.0.0.1", port = tonumber(os.getenv("REDIS_PORT")) },
})
]]

local function haproxy (front, backs)
  local cfg = os.tmpname()
  local f = assert(io.open(cfg, "w"))
  f:write("global\n  maxconn 200\n",
          "defaults\n  mode tcp\n  timeout connect 2s\n",
          "  timeout client 10s\n  timeout server 10s\n",
          "frontend f\n  bind 127.0.0.1:", front, "\n  default_backend b\n",
          "backend b\n  balance roundrobin\n")
  for i, p in ipairs(backs) do
    f:write("  server s", i, " 127.0.0.1:", p, "\n")
  end
  f:close()
  H.defer(function () os.remove(cfg) end)
  N.daemon("haproxy -db -f " .. cfg)
  N.wait_port(front)
end

H.for_models(function (model)
  describe("luasrv.ratelimit with redis", function ()
    maybe("holds one limit exactly across two instances behind haproxy",
          function ()
      local rport = redis()
      local burst = 12
      local backs = {}
      for _, name in ipairs{ "A", "B" } do
        local s = N.start{ model = model, source = APP,
          args = { "--workers", "2" },
          env = { INSTANCE = name, BURST = tostring(burst),
                  PREFIX = "rl:" .. model .. ":",
                  REDIS_PORT = tostring(rport) } }
        backs[#backs + 1] = s.tcp.port
      end
      local front = H.free_port()
      haproxy(front, backs)
      -- 40 clients at once: all connected and sent before any reads
      local clients = {}
      for i = 1, 40 do
        local c = assert(socket.connect("127.0.0.1", front))
        c:settimeout(10)
        clients[i] = c
      end
      for _, c in ipairs(clients) do c:send("x\n") end
      local welcome, limited, by = 0, 0, {}
      for _, c in ipairs(clients) do
        local line = c:receive("*l")
        c:close()
        local w = line and line:match("^welcome from (%a)$")
        local l = line and line:match("^limited by (%a)$")
        if w then welcome = welcome + 1; by[w] = true
        elseif l then limited = limited + 1; by[l] = true end
      end
      assert.equals(burst, welcome, "welcome " .. welcome .. ", limited " .. limited)
      assert.equals(40 - burst, limited)
      assert.is_true(by.A and by.B, "both instances served")
    end)

    maybe("the limiter alone: refuses with the wait, refills, reports a lost Redis",
          function ()
      local rport = redis()
      local srv = N.start{ model = model, source = N.RUNNER,
                           env = { REDIS_PORT = tostring(rport) } }
      local res = N.ask(srv, [[
        local ratelimit = require "luasrv.ratelimit"
        local lim = ratelimit.new{ rate = 10, burst = 2, prefix = "PFX:",
          redis = { port = tonumber(os.getenv("REDIS_PORT")) } }
        local a, b = lim:incoming("k"), lim:incoming("k")
        local c, wait = lim:incoming("k")
        local other = lim:incoming("other")
        ngx.sleep(0.15)
        local d = lim:incoming("k")
        local dead = ratelimit.new{ rate = 1, redis = { port = 1 } }
        local e, err = dead:incoming("k")
        return a, b, c, wait > 0 and wait <= 0.1 + 1e-6, other, d, e, err ]],
        { PFX = model })
      assert.same({ true, true, false, true, true, true, nil,
                    "redis: connection refused", n = 8 }, res)
    end)
  end)
end)
