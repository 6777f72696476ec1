-- daytime.lua -- RFC 867 daytime: the date and time as one line of text,
-- sent when a client connects (TCP) or for any datagram (UDP).
local function daytime ()
  return os.date("!%A, %B %d, %Y %H:%M:%S-UTC\r\n")
end

return { handle = function (req)
  req:write(daytime())   -- TCP: then the connection closes; UDP: the reply
end }
