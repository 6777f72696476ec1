-- scripts/http_redis.lua: luasrv.http + luasrv.ngx + OpenResty's
-- resty.redis (Debian's lua-nginx-redis, unmodified) against a real
-- redis-server on a free loopback port, driven by curl.
local H = require "helper"
local N = require "ngx_helper"
local socket = require "socket"
local cjson = require "cjson"

local SCRIPT = "scripts/http_redis.lua"
local have = N.have("redis-server") and N.have("curl")
local maybe = have and it or pending

-- one redis-server for the file: its port
local function redis () return (N.redis()) end
teardown(N.redis_stop)

-- one inline command to the redis-server; its reply line
local function command (line)
  local c = assert(socket.connect("127.0.0.1", redis()))
  c:settimeout(5)
  assert(c:send(line .. "\r\n"))
  local reply = assert(c:receive("*l"))
  c:close()
  return reply
end

-- the value of field name in INFO's answer, a number
local function info (name)
  local c = assert(socket.connect("127.0.0.1", redis()))
  c:settimeout(5)
  assert(c:send("INFO\r\n"))
  local len = tonumber(assert(c:receive("*l")):match("^%$(%d+)"))
  local body = assert(c:receive(len + 2))
  c:close()
  return tonumber(body:match(name .. ":(%d+)"))
end

-- curl on urls (one connection, kept alive): status codes and bodies
local function get (srv, ...)
  local args = {}
  for i, path in ipairs{ ... } do
    args[i] = N.quote("http://127.0.0.1:" .. srv.tcp.port .. path)
  end
  local p = io.popen("timeout -k 2 20 curl -sS --max-time 10 " ..
    "-w '\\n%{http_code}\\n' " .. table.concat(args, " ") .. " 2>&1")
  local out = p:read("a")
  p:close()
  local res = {}
  for body, code in out:gmatch("(.-)\n(%d%d%d)\n") do
    res[#res + 1] = { status = tonumber(code), body = body }
  end
  assert(#res == select("#", ...), "curl: " .. out)
  return res
end

local function server (model, redis_port)
  return N.start{ model = model, script = SCRIPT,
                  env = { REDIS_PORT = tostring(redis_port) } }
end

H.for_models(function (model)
  describe("scripts/http_redis.lua", function ()
    maybe("answers a key's value as JSON, null for a missing key",
          function ()
      assert.equal("+OK", command("SET " .. model .. ":greeting hello"))
      command("DEL " .. model .. ":nothing")
      local srv = server(model, redis())
      local res = get(srv, "/get/" .. model .. ":greeting",
                      "/get/" .. model .. ":nothing")
      assert.equal(200, res[1].status)
      assert.same({ key = model .. ":greeting", value = "hello" },
                  cjson.decode(res[1].body))
      assert.equal(200, res[2].status)
      local t = cjson.decode(res[2].body)
      assert.equal(model .. ":nothing", t.key)
      assert.equal(cjson.null, t.value)
    end)

    maybe("gives its Redis connection back to the pool between requests",
          function ()
      if model == "fork" then return end  -- a process per connection
      command("SET " .. model .. ":pooled yes")
      local srv = server(model, redis())
      get(srv, "/get/" .. model .. ":pooled")  -- the pool's connection
      local before = info("total_connections_received")
      local paths = {}
      for i = 1, 20 do paths[i] = "/get/" .. model .. ":pooled" end
      local res = get(srv, table.unpack(paths))
      for i = 1, 20 do
        assert.equal(200, res[i].status)
        assert.equal("yes", cjson.decode(res[i].body).value)
      end
      -- 20 requests on one HTTP connection, no new Redis connection
      -- (our own INFO connection is the one more)
      assert.equal(before + 1, info("total_connections_received"))
    end)

    maybe("answers 502 with the reason when Redis cannot be reached",
          function ()
      local srv = server(model, H.free_port())
      local res = get(srv, "/get/k", "/get/k")
      for i = 1, 2 do
        assert.equal(502, res[i].status)
        assert.matches("^redis: connection refused",
                       cjson.decode(res[i].body).error)
      end
    end)
  end)
end)
