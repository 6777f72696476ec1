-- chat_latency.lua -- broadcast latency of scripts/chat.lua on loopback:
-- client a sends a line, client b waits until it sees it; N rounds, each
-- bounded by a 2 s read timeout. Prints the median, p90 and max.
--
--   build/luasrv scripts/chat.lua --tcp 127.0.0.1:7000 &
--   lua5.4 bench/experiments/chat_latency.lua 7000 200
local socket = require "socket"
local port = assert(tonumber(arg[1]), "usage: chat_latency.lua PORT [N]")
local N = tonumber(arg[2] or 200)

local function join (nick)
  local c = assert(socket.connect("127.0.0.1", port))
  c:settimeout(2)
  assert(c:send(nick .. "\n"))
  return c
end

local a, b = join("a"), join("b")
socket.sleep(0.1)
b:settimeout(0.2)
while b:receive("*l") do end  -- the joins
b:settimeout(2)
local t = {}
for i = 1, N do
  local t0 = socket.gettime()
  assert(a:send("m" .. i .. "\n"))
  repeat
    local line = assert(b:receive("*l"))
  until line:find("m" .. i .. "$")
  t[#t + 1] = (socket.gettime() - t0) * 1000
end
table.sort(t)
print(("median %.2f ms, p90 %.2f ms, max %.2f ms over %d lines")
  :format(t[N // 2], t[N * 9 // 10], t[N], N))
