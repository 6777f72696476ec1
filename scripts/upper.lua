-- upper.lua -- TCP: every line comes back in capitals.
return { handle = function (req)
  for line in req:lines() do
    req:write(line:upper(), "\n")
  end
end }
