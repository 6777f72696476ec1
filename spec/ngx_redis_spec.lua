-- OpenResty's lua-resty-redis (Debian's lua-nginx-redis, unmodified) in
-- luasrv handlers through luasrv.ngx, against a real redis-server on a
-- free loopback port: commands, pipelines, transactions, pub/sub,
-- keep-alive pooling, a stalled server's timeout; in the event model
-- also concurrent requests of one handler through light threads.
local H = require "helper"
local N = require "ngx_helper"

local have = N.have("redis-server")
local maybe = have and it or pending

-- one redis-server for the file; pid: its process (the stall specs stop it)
local pid
local function redis ()
  local port
  port, pid = N.redis()
  return port
end
teardown(N.redis_stop)

-- globals: the bodies the clients send are chunks of their own
local PRE = [[
redis = require "resty.redis"
PORT = tonumber(os.getenv("REDIS_PORT"))
function client (ms)
  local r = redis:new()
  r:set_timeout(ms or 2000)
  assert(r:connect("127.0.0.1", PORT))
  return r
end
]]

local function server (model)
  return N.start{ model = model, env = { REDIS_PORT = tostring(redis()) },
                  source = N.HEAD .. PRE .. H.RUNNER }
end

H.for_models(function (model)
  describe("resty.redis", function ()
    local srv
    local function ask (body) return N.ask(srv, body, { PFX = model }) end

    before_each(function () if have then srv = server(model) end end)

    maybe("runs commands: ngx.null for a missing key, errors as values",
          function ()
      local res = ask [[
        local r = client()
        local a = r:set("PFX:k", "v")
        local b = r:get("PFX:k")
        local c = r:get("PFX:missing") == ngx.null
        r:del("PFX:h")
        local d = r:hmset("PFX:h", "f1", "1", "f2", "2")
        local e = table.concat(r:hgetall("PFX:h"), ",")
        local f, ferr = r:lpush("PFX:k", "x")
        local g = r:incrby("PFX:n", 5)
        r:del("PFX:n")
        r:close()
        return a, b, c, d, e, f, ferr, g ]]
      assert.same({ "OK", "v", true, "OK", "f1,1,f2,2", false,
        "WRONGTYPE Operation against a key holding the wrong kind of value",
        5, n = 8 }, res)
    end)

    maybe("pipelines with init_pipeline and commit_pipeline", function ()
      local res = ask [[
        local r = client()
        r:del("PFX:p", "PFX:s")
        r:init_pipeline()
        r:set("PFX:s", "x")
        r:incr("PFX:p")
        r:incr("PFX:p")
        r:get("PFX:s")
        r:lpush("PFX:s", "y")
        local t = r:commit_pipeline()
        r:close()
        return #t, t[1], t[2], t[3], t[4], t[5][1], t[5][2] ]]
      assert.same({ 5, "OK", 1, 2, "x", false,
        "WRONGTYPE Operation against a key holding the wrong kind of value",
        n = 7 }, res)
    end)

    maybe("runs transactions: MULTI/EXEC, and a WATCH that aborts one",
          function ()
      local res = ask [[
        local r, w = client(), client()
        r:del("PFX:t")
        local m = r:multi()
        local q = r:set("PFX:t", "1")
        r:incr("PFX:t")
        local x = r:exec()
        r:watch("PFX:t")
        w:set("PFX:t", "changed")
        r:multi()
        r:set("PFX:t", "mine")
        local aborted = r:exec() == ngx.null
        local v = r:get("PFX:t")
        r:close() w:close()
        return m, q, x[1], x[2], aborted, v ]]
      assert.same({ "OK", "QUEUED", "OK", 2, true, "changed", n = 6 }, res)
    end)

    maybe("subscribes and reads the published messages with read_reply",
          function ()
      local res = ask [[
        local s, p = client(), client()
        local sub = s:subscribe("PFX:ch")
        local n1 = p:publish("PFX:ch", "one")
        p:publish("PFX:ch", "two")
        local m1, m2 = s:read_reply(), s:read_reply()
        s:unsubscribe("PFX:ch")
        s:close() p:close()
        return sub[1], sub[2], n1, m1[1], m1[3], m2[3] ]]
      assert.same({ "subscribe", model .. ":ch", 1, "message", "one", "two",
                    n = 6 }, res)
    end)

    maybe("reuses pooled connections: get_reused_times counts up", function ()
      local res = ask [[
        local function once ()
          local r = client()
          local n = r:get_reused_times()
          assert(r:ping())
          assert(r:set_keepalive(10000, 4))
          return n
        end
        return once(), once(), once() ]]
      assert.same({ 0, 1, 2, n = 3 }, res)
    end)

    if model == "event" or model == "sync" then
      maybe("keeps a pooled connection from one request to the next",
            function ()
        local body = [[
          local r = client()
          local n = r:get_reused_times()
          r:ping()
          r:set_keepalive(10000, 4)
          return n ]]
        ask(body)
        local res = ask(body)
        assert.is_true(res[1] > 0)
      end)
    end

    maybe("times out against a stalled server and keeps serving", function ()
      local p = redis()
      os.execute("kill -STOP " .. pid)
      H.defer(function () os.execute("kill -CONT " .. pid) end)
      local res = ask [[
        local r = client(300)
        local t0 = luasrv.now()
        local v, err = r:get("PFX:k")
        local dt = luasrv.now() - t0
        r:close()
        return v, err, dt ]]
      os.execute("kill -CONT " .. pid)
      assert.is_nil(res[1])
      assert.equals("timeout", res[2])
      assert.is_true(res[3] >= 0.25, "returned after " .. res[3] .. " s")
      assert.equals(p, redis())
      assert.same({ "PONG", n = 1 }, ask [[ return client():ping() ]])
    end)

    if model == "event" then
      maybe("reads pub/sub in a spawned light thread while the request publishes",
            function ()
        local res = ask [[
          local got = {}
          local t = ngx.thread.spawn(function ()
            local s = client()
            s:subscribe("PFX:th")
            for _ = 1, 3 do
              local m, err = s:read_reply()
              if not m then return nil, err end
              got[#got + 1] = m[3]
            end
            s:close()
            return #got
          end)
          local p = client()
          local n = 0
          for _ = 1, 200 do
            n = p:publish("PFX:th", "a")
            if n > 0 then break end
            ngx.sleep(0.01)
          end
          p:publish("PFX:th", "b")
          p:publish("PFX:th", "c")
          local ok, count = ngx.thread.wait(t)
          p:close()
          return n, ok, count, table.concat(got, ",") ]]
        assert.same({ 1, true, 3, "a,b,c", n = 4 }, res)
      end)

      maybe("waits on five BLPOPs at once in light threads", function ()
        local res = ask [[
          local th = {}
          for i = 1, 5 do
            th[i] = ngx.thread.spawn(function ()
              local r = client(3000)
              local v = r:blpop("PFX:q" .. i, 2)
              r:close()
              return v[2]
            end)
          end
          local p = client()
          for i = 5, 1, -1 do p:rpush("PFX:q" .. i, "v" .. i) end
          p:close()
          local out = {}
          for i = 1, 5 do
            local ok, v = ngx.thread.wait(th[i])
            out[i] = tostring(v)
          end
          return table.concat(out, ",") ]]
        assert.same({ "v1,v2,v3,v4,v5", n = 1 }, res)
      end)

      maybe("serves other requests while one waits on a stalled server",
            function ()
        os.execute("kill -STOP " .. pid)
        H.defer(function () os.execute("kill -CONT " .. pid) end)
        local slow = srv:connect()
        slow:send([[local r = client(1500) return r:get("PFX:k")]] .. "\n")
        local res = ask [[ return 6 * 7 ]]
        assert.same({ 42, n = 1 }, res)
        local line = slow:receive("l")
        os.execute("kill -CONT " .. pid)
        assert.same({ nil, "timeout", n = 2 }, H.unser(line))
      end)
    end
  end)
end)
