-- ratelimit.lua -- a line echo behind a per-client-IP rate limit
-- (lua/luasrv/ratelimit.lua): each client may open BURST connections at
-- once, then RATE per second, counted across all workers in the shared
-- dictionary "ratelimit". A client over its limit reads "rate limited"
-- and is disconnected.
--
--   luasrv scripts/ratelimit.lua --tcp 127.0.0.1:9999 --workers 2 \
--     --shared ratelimit:1m
--   for i in $(seq 8); do echo hi | tools/lsend tcp://127.0.0.1:9999; done
--   # 5 times "hi", then "rate limited" until a token is back
--
-- Environment: LUASRV_RATE (tokens a second, default 1), LUASRV_BURST
-- (default 5).
local ratelimit = require "luasrv.ratelimit"

local echo = {}

function echo.handle (req)
  for line in req:lines("L") do req:write(line) end
end

return ratelimit.wrap(echo, {
  rate = tonumber(os.getenv("LUASRV_RATE")) or 1,
  burst = tonumber(os.getenv("LUASRV_BURST")) or 5,
  dict = "ratelimit",
})
