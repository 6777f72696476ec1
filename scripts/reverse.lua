-- reverse.lua -- UDP: each datagram comes back reversed.
return { handle = function (req)
  req:write(req.request:reverse())
end }
