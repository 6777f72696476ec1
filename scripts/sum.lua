-- sum.lua -- Unix stream: a JSON array per line, its sum as JSON.
local cjson = require "cjson"
return { handle = function (req)
  for line in req:lines() do
    local sum = 0
    for _, n in ipairs(cjson.decode(line)) do sum = sum + n end
    req:write(cjson.encode({ sum = sum }), "\n")
  end
end }
