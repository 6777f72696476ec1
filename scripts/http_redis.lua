-- http_redis.lua -- an HTTP endpoint backed by Redis, through OpenResty's
-- resty.redis driver running unmodified on luasrv.ngx.
--
--   redis-server --port 6379 &
--   LUASRV_NGX_PATH=/path/to/drivers luasrv scripts/http_redis.lua \
--     --tcp 127.0.0.1:8080
--   redis-cli set greeting hello
--   curl http://127.0.0.1:8080/get/greeting   # {"value":"hello","key":"greeting"}
--   curl http://127.0.0.1:8080/get/nothing    # {"value":null,"key":"nothing"}
--
-- REDIS_HOST and REDIS_PORT (default 127.0.0.1:6379) name the server.
-- Connections to Redis are pooled: each request takes one from luasrv's
-- keep-alive pool and gives it back (set_keepalive), so a steady load opens
-- no new connections. An unreachable Redis answers 502 with the reason.
-- The driver is found as resty.redis or Debian's nginx.redis (see
-- doc/ngx.md for where luasrv.ngx looks).

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = here .. "/../lua/?.lua;" .. package.path

local http = require "luasrv.http"
require "luasrv.ngx"
local redis = require "resty.redis"

local HOST = os.getenv("REDIS_HOST") or "127.0.0.1"
local PORT = tonumber(os.getenv("REDIS_PORT")) or 6379
local POOL = { pool_size = 64 }

local app = http.router()

-- GET /get/:key: the key's value as JSON (null when the key is missing)
app:get("/get/:key", function (r)
  local key = r.params.key
  local red = redis:new()
  red:set_timeout(1000)
  local ok, err = red:connect(HOST, PORT, POOL)
  if not ok then
    return http.json({ error = "redis: " .. err }, 502)
  end
  local v
  v, err = red:get(key)
  if not v then
    red:close()
    return http.json({ error = "redis: " .. err }, 502)
  end
  red:set_keepalive(10000, 64)
  -- a missing key is ngx.null, which cjson writes as null
  return http.json{ key = key, value = v }
end)

return app:handler()
