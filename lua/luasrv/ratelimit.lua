-- luasrv.ratelimit -- a token bucket per key (the client's IP address) in
-- a shared dictionary, so every worker, thread and forked child of the
-- server counts against the same bucket.
--
--   local ratelimit = require "luasrv.ratelimit"
--   return ratelimit.wrap({ handle = function (req) ... end },
--                         { rate = 10, burst = 20, dict = "ratelimit" })
--
--   luasrv app.lua --tcp :8080 --workers 4 --shared ratelimit:1m
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
local luasrv = require "luasrv"

local M = {}
local Limiter = {}
Limiter.__index = Limiter

-- ratelimit.new{ rate = R, burst = B, dict = NAME [, prefix = "rl:"] }
function M.new (opts)
  assert(type(opts) == "table", "ratelimit.new: options table expected")
  local rate, burst = tonumber(opts.rate), tonumber(opts.burst or opts.rate)
  assert(rate and rate > 0, "ratelimit: rate must be > 0")
  assert(burst and burst >= 1, "ratelimit: burst must be >= 1")
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
    if not lim:incoming(key(req)) then
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
