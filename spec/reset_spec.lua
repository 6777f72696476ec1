-- A client that resets its connection (RST, SO_LINGER 0) while the
-- handler still writes or reads: every failure reads "closed", whatever
-- the kernel said first (ECONNRESET, then EPIPE), in every model.
local H = require "helper"
local T = H.T

local HANDLER = [[
local luasrv = require "luasrv"
return { handle = function (req)
  local mode = req:read("l")
  -- a read waits for the reset; a write fills the socket's buffers (the
  -- client reads nothing) and is waiting when the reset arrives
  if mode == "read" then luasrv.sleep(0.3) end
  for i = 1, 4 do
    local ok, err
    if mode == "write" then
      ok, err = req:write(("x"):rep(4 << 20))
      if ok then ok, err = req:flush() end
    else
      ok, err = req:read("l")
    end
    luasrv.log(mode .. " " .. i .. ": " .. tostring(err))
  end
end }]]


-- Connects, sends line, then resets the connection.
local function send_and_reset (srv, line)
  local c = srv:connect()
  assert(c:send(line .. "\n"))
  T.sleep(0.1)
  assert(c.sock:setoption("linger", { on = true, timeout = 0 }))
  c:close()
end


H.for_models(function (model)

  for _, mode in ipairs{ "write", "read" } do
    it("a " .. mode .. " on a connection the client reset fails with "
       .. "'closed'", function ()
      local srv = H.start{ model = model, source = HANDLER }
      send_and_reset(srv, mode)
      assert.truthy(srv:wait_stderr(mode .. " 4: ", 5, true), srv:stderr())
      for i = 1, 4 do
        local err = srv:stderr():match(mode .. " " .. i .. ": ([^\n]*)")
        if mode == "read" and err == "nil" then err = "closed" end  -- EOF
        assert.equals("closed", err, srv:stderr())
      end
    end)
  end

end)
