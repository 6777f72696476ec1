-- counter.lua -- Unix datagram: counts the datagrams this state served.
local served = 0
function handle (req)
  served = served + 1
  req:write(("%s #%d"):format(req.request, served))
end
