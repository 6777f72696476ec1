-- luasrv.ratelimit -- a token bucket per key (the client's IP address) in
-- a shared dictionary, so every worker, thread and forked child of the
-- server counts against the same bucket.
--
--   local ratelimit = require "luasrv.ratelimit"
--   return ratelimit.wrap({ handle = function (req) ... end },
--                         { rate = 10, burst = 20, dict = "ratelimit" })
--
--   luasrv app.lua --tcp 127.0.0.1:8080 --workers 4 --shared ratelimit:1m
--
-- A client may make `burst` requests at once, then `rate` per second: the
-- bucket holds `burst` tokens, refills at `rate` tokens a second, and each
-- request (connection, or datagram) takes one. The algorithm is GCRA (the
-- "theoretical arrival time" form of a token bucket): one number per
-- client, updated with the dictionary's atomic incr, so concurrent workers
-- never admit more than the bucket holds (two requests racing on a bucket
-- that was idle may each reset it: at most one extra token, once).
--
-- Keys never expire: the dictionary's LRU eviction makes room for new
-- clients when it is full (a 1m dictionary holds about 10,000 clients);
-- an evicted client starts again with a full bucket.
--
-- With `redis = { host = H, port = P }` in place of `dict`, the buckets
-- live in that Redis instead (through lua-resty-redis on luasrv.ngx), so
-- one limit holds across luasrv instances on any number of machines.
local luasrv = require "luasrv"

local M = {}
local Limiter = {}
Limiter.__index = Limiter

--[[ The Redis backend: the same bucket (GCRA) in one Redis key per
client, updated by a script that Redis runs atomically, on Redis's own
clock (TIME): every luasrv instance that uses the same Redis counts
against the same bucket, exactly. Keys expire once their bucket is full
again. It talks to Redis through OpenResty's lua-resty-redis on
luasrv.ngx, pooled.
]]
-- In whole microseconds (exact in Redis's doubles, written with %.0f):
-- %.14g, Lua 5.1's tostring, would round a timestamp in milliseconds to
-- 0.1 ms, and those errors add up over a burst.
local GCRA = [[
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local interval, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new = tat + interval
if new - now > limit then
  return { 0, string.format('%.0f', new - limit - now) }
end
redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX',
           math.ceil((new - now) / 1000) + 1)
return { 1, '0' }
]]

local RedisLimiter = {}
RedisLimiter.__index = RedisLimiter

local function redis_limiter (rate, burst, opts)
  local r = opts.redis
  assert(type(r) == "table", "ratelimit: redis must be a table " ..
         "({ host = ..., port = ... } or { path = ... })")
  require "luasrv.ngx"
  local redis = require "resty.redis"
  local sha = ngx.sha1_bin(GCRA):gsub(".", function (c)
    return string.format("%02x", c:byte())
  end)
  return setmetatable({
    redis = redis, sha = sha, prefix = opts.prefix or "rl:",
    host = r.path and "unix:" .. r.path or (r.host or "127.0.0.1"),
    port = r.port or 6379, timeout = (r.timeout or 1) * 1000,
    pool_size = r.pool_size or 100,
    -- microseconds, as the script counts
    interval = math.floor(1e6 / rate + 0.5),
    limit = math.floor(1e6 / rate + 0.5) * math.floor(burst),
  }, RedisLimiter)
end

-- limiter:incoming(key) -> true | false, seconds | nil, err (Redis failed)
function RedisLimiter:incoming (key)
  local r = self.redis:new()
  r:set_timeout(self.timeout)
  local ok, err
  if self.host:sub(1, 5) == "unix:" then ok, err = r:connect(self.host)
  else ok, err = r:connect(self.host, self.port) end
  if not ok then return nil, "redis: " .. tostring(err) end
  local k = self.prefix .. key
  local res
  res, err = r:evalsha(self.sha, 1, k, self.interval, self.limit)
  if not res and err and err:find("^NOSCRIPT") then
    res, err = r:eval(GCRA, 1, k, self.interval, self.limit)
  end
  if not res then
    r:close()
    return nil, "redis: " .. tostring(err)
  end
  r:set_keepalive(60000, self.pool_size)
  if res[1] == 1 then return true end
  return false, tonumber(res[2]) / 1e6
end


--[[ ratelimit.new{ rate = R, burst = B, dict = NAME [, prefix = "rl:"] }
or ratelimit.new{ rate = R, burst = B, redis = { host =, port = } }
]]
function M.new (opts)
  assert(type(opts) == "table", "ratelimit.new: options table expected")
  local rate, burst = tonumber(opts.rate), tonumber(opts.burst or opts.rate)
  assert(rate and rate > 0, "ratelimit: rate must be > 0")
  assert(burst and burst >= 1, "ratelimit: burst must be >= 1")
  if opts.redis ~= nil then return redis_limiter(rate, burst, opts) end
  local name = opts.dict or "ratelimit"
  local dict = rawget(luasrv.shared, name)  -- indexing would raise
  if not dict then
    error("ratelimit: no shared dictionary '" .. name .. "' (start the " ..
          "server with --shared " .. name .. ":1m)", 2)
  end
  return setmetatable({ dict = dict, interval = 1 / rate,
                        limit = burst / rate, prefix = opts.prefix or "rl:" },
                      Limiter)
end

-- limiter:incoming(key) -> true | false, seconds until a token is there
function Limiter:incoming (key)
  local d, i, k = self.dict, self.interval, self.prefix .. key
  local now = luasrv.now()
  for _ = 1, 3 do
    local tat = d:incr(k, i)
    if tat == nil then  -- a new client: a full bucket, less this request
      if d:add(k, now + i) then return true end
      -- another worker added it first: count on it
    elseif tat - i < now then  -- idle long enough to be full again
      d:set(k, now + i)
      return true
    elseif tat - now <= self.limit + 1e-9 then
      return true
    else
      d:incr(k, -i)  -- refused: give the token back
      return false, tat - self.limit - now
    end
  end
  return true  -- the dictionary keeps losing the key (full): let it pass
end

-- The key of a request: its client's host, or "unix" for Unix sockets.
local function client_key (req)
  local a = req.client_address
  return a and a.host or "unix"
end

--[[ ratelimit.wrap(hooks, opts) -> a hooks table where handle first takes
a token for the client; a client over its limit gets opts.message
("rate limited\n") and its connection is closed, without the wrapped
handle running. The other hooks are the wrapped ones (setup and finish
run for refused requests too). opts: rate, burst, dict, prefix as for
new; key = function (req) -> string, the client's IP by default.
]]
function M.wrap (hooks, opts)
  local lim = M.new(opts)
  local key = opts.key or client_key
  local message = opts.message or "rate limited\n"
  local inner = hooks.handle
  assert(type(inner) == "function", "ratelimit.wrap: hooks.handle missing")
  local wrapped = {}
  for k, v in pairs(hooks) do wrapped[k] = v end
  wrapped.handle = function (req)
    local ok, err = lim:incoming(key(req))
    if ok == nil then  -- the Redis backend failed: let the request pass
      luasrv.log("ratelimit: " .. tostring(err))
    elseif not ok then
      if message ~= "" then req:write(message) end
      req:close()
      return
    end
    return inner(req)
  end
  wrapped.limiter = lim
  return wrapped
end

return M
