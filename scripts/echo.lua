-- echo.lua -- a line echo for every listener kind.
-- Stream listeners (tcp, unix): each line the client sends comes back.
-- Datagram listeners (udp, unixgram): each datagram comes back whole.
--
--   luasrv scripts/echo.lua --tcp 127.0.0.1:9999
--   printf 'hello\n' | tools/lsend tcp://127.0.0.1:9999
local echo = {}

function echo.handle(req)
  if req.server.transport == "udp" or req.server.transport == "unixgram" then
    req:write(req.request)  -- the reply datagram, sent after finish
    return
  end
  for line in req:lines("L") do
    req:write(line)
  end
end

return echo
