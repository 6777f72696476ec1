-- bench/peers/luv_echo.lua -- a libuv (luv) echo server: the Lua
-- event-library peer of bench/run, as a user of Debian's lua-luv would
-- write it.
--
--   lua5.4 luv_echo.lua tcp HOST:PORT | unix PATH | udp HOST:PORT
--
-- Streams echo each chunk read as it comes (no line parsing), with
-- back-pressure: past 1 MiB queued, reading pauses until the queue drains.
-- Prints "luv_echo: listening on tcp://HOST:PORT" (udp://..., unix:PATH) to
-- stderr, exits 0 on SIGTERM/SIGINT.

local uv = require "luv"

local HIGH_WATER = 1024 * 1024

local function split_address(text)
  local host, port = text:match("^%[?(.-)%]?:(%d+)$")
  assert(host, "bad address " .. text)
  return host ~= "" and host or "0.0.0.0", tonumber(port)
end

local function announce(where)
  io.stderr:write("luv_echo: listening on ", where, "\n")
  io.stderr:flush()
end

local function serve_client(client)
  local on_read
  on_read = function(err, data)
    if err or not data then
      if not client:is_closing() then client:close() end
      return
    end
    client:write(data)
    if client:get_write_queue_size() > HIGH_WATER then
      client:read_stop()
      client:write("", function(werr)  -- runs once the queue has drained
        if not werr and not client:is_closing() then
          client:read_start(on_read)
        end
      end)
    end
  end
  client:read_start(on_read)
end

local function listen_stream(server, make_client)
  assert(server:listen(511, function(err)
    if err then return end
    local client = make_client()
    if server:accept(client) then serve_client(client) else client:close() end
  end))
end

local function serve_tcp(text)
  local server = uv.new_tcp()
  assert(server:bind(split_address(text)))
  listen_stream(server, function()
    local c = uv.new_tcp()
    c:nodelay(true)
    return c
  end)
  local a = server:getsockname()
  local host = a.family == "inet6" and "[" .. a.ip .. "]" or a.ip
  announce(("tcp://%s:%d"):format(host, a.port))
end

local function serve_unix(path)
  os.remove(path)
  local server = uv.new_pipe(false)
  assert(server:bind(path))
  listen_stream(server, function() return uv.new_pipe(false) end)
  announce("unix:" .. path)
end

local function serve_udp(text)
  local udp = uv.new_udp()
  assert(udp:bind(split_address(text)))
  udp:recv_start(function(err, data, addr)
    if not err and data and addr then udp:try_send(data, addr.ip, addr.port) end
  end)
  local a = udp:getsockname()
  announce(("udp://%s:%d"):format(a.ip, a.port))
end

local function on_stop(transport, text)
  for _, name in ipairs { "sigterm", "sigint" } do
    local sig = uv.new_signal()
    sig:start(name, function()
      if transport == "unix" then os.remove(text) end
      os.exit(0)
    end)
  end
end

local transport, text = arg[1], arg[2]
local serve = ({ tcp = serve_tcp, unix = serve_unix, udp = serve_udp })[transport]
if not serve or not text then
  io.stderr:write("usage: lua5.4 luv_echo.lua tcp HOST:PORT | unix PATH | udp HOST:PORT\n")
  os.exit(2)
end
serve(text)
on_stop(transport, text)
uv.run()
