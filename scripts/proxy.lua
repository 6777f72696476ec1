-- proxy.lua -- a TCP proxy: every connection is relayed, byte for byte, to
-- an upstream named by the environment. Needs the event model (the default):
-- each direction is a light thread (luasrv.spawn), and only the event model
-- runs them at the same time.
--
--   redis-server --port 6379 --save '' --appendonly no &
--   LUASRV_UPSTREAM=tcp://127.0.0.1:6379 luasrv scripts/proxy.lua \
--     --tcp 127.0.0.1:6380 --timeout 0
--   redis-benchmark -p 6380 -t set,get -n 100000 -q
--
-- Environment:
--   LUASRV_UPSTREAM          where to connect: tcp://HOST:PORT or unix:PATH
--                            (required)
--   LUASRV_PROXY_TIMEOUT     seconds a side may stay idle (no byte read)
--                            before both are closed; default: the server's
--                            --timeout (0 = never)
--   LUASRV_PROXY_CONNECT_TIMEOUT  seconds for the upstream connect (5)
--
-- client -> upstream runs in a spawned thread, upstream -> client in the
-- request. Whichever side ends first (EOF, an error, the idle timeout)
-- closes both connections, which ends the other direction at once; the
-- request ends when both have. There is no half-close: a client that
-- shuts down its sending side gets the connection closed.
local luasrv = require "luasrv"

local UPSTREAM = os.getenv("LUASRV_UPSTREAM")
local IDLE = tonumber(os.getenv("LUASRV_PROXY_TIMEOUT") or "")
local CONNECT_TIMEOUT = tonumber(os.getenv("LUASRV_PROXY_CONNECT_TIMEOUT") or "") or 5
local CHUNK = 256 * 1024  -- recv returns what has arrived, up to this

if not UPSTREAM or UPSTREAM == "" then
  error("proxy.lua: set LUASRV_UPSTREAM, e.g. tcp://127.0.0.1:6379", 0)
end

-- Copies from -> to until one fails; returns why it stopped.
local function pump (from, to)
  while true do
    local data, err = from:recv(CHUNK)
    if not data then return err or "eof" end
    local ok, werr = to:write(data)
    if ok then ok, werr = to:flush() end
    if not ok then return werr end
  end
end

local proxy = {}

function proxy.init (server)
  if server.model ~= "event" then
    error("proxy.lua needs the event model (--model event): the other " ..
          "models cannot run both directions at once", 0)
  end
end

function proxy.handle (req)
  local up, err = luasrv.connect(UPSTREAM, { timeout = CONNECT_TIMEOUT })
  if not up then
    luasrv.log("proxy: upstream " .. UPSTREAM .. ": " .. err)
    return
  end
  if IDLE then
    req:settimeout(IDLE)
    up:settimeout(IDLE)
  end
  local function close_both ()
    up:close()
    req:close()
  end
  local writer = luasrv.spawn(function ()
    pump(req, up)
    close_both()
  end)
  pump(up, req)
  close_both()
  luasrv.wait(writer)
end

return proxy
