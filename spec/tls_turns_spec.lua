-- The event model takes a --tls listener's new connections one a turn of
-- its loop (doc/models.md): the key exchange of a burst of new clients
-- runs between the events of the connections already served, not all
-- ahead of them. The event model only: in the others a handshake runs in
-- its connection's own process or thread, so none waits for another's.
local H = require "helper"
local C = require "tls_certs"
local socket = require "socket"

-- Counts the TLS connections taken (verify_request runs as each is taken,
-- before its handshake). A plain client's "spin PATH" holds the loop (it
-- says so first) until the file PATH exists; any other line is answered
-- with the count.
local SOURCE = [[
local luasrv = require "luasrv"
local taken = 0
return {
  verify_request = function (_, server)
    if server.transport == "tls" then taken = taken + 1 end
    return true
  end,
  handle = function (req)
    while true do
      local line = req:read("l")
      if line == nil then return end
      local path = line:match("^spin (.+)$")
      if path then
        req:write("spinning\n")
        req:flush()
        local t = luasrv.now() + 10   -- bounded
        while luasrv.now() < t do
          local f = io.open(path)
          if f then f:close(); break end
        end
        req:write("spun\n")
      else
        req:write(taken, "\n")
      end
    end
  end }]]

describe("model event", function ()
  it("takes a burst of new TLS clients one a turn, between the others' events", function ()
    local d = C.dir()
    local srv = H.start{ model = "event", source = SOURCE, tcp = true,
      listeners = 2,
      args = { "--tls", "127.0.0.1:0", "--tls-cert", d .. "/server.pem",
               "--tls-key", d .. "/server.key", "--timeout", "10" } }
    local spinner, asker = H.connect(srv, 5), H.connect(srv, 5)
    asker:send("count\n")
    assert.equals("0", asker:receive())  -- both served, idle in the loop
    local flag = H.tmpdir() .. "/go"
    spinner:send("spin " .. flag .. "\n")
    assert.equals("spinning", spinner:receive())  -- the loop is held
    local burst = {}
    for i = 1, 20 do                     -- they wait in the backlog
      local s = socket.tcp()
      s:settimeout(5)
      assert(s:connect("127.0.0.1", srv.tls.port))
      burst[i] = s
    end
    H.defer(function () for _, s in ipairs(burst) do s:close() end end)
    asker:send("count\n")                -- ready after the listener
    socket.sleep(0.05)                   -- (its bytes are in the socket)
    H.write_file(flag, "")               -- the loop goes on
    assert.equals("spun", spinner:receive())
    local seen = tonumber(asker:receive())
    -- all 20 are taken at the end; the asker was answered after at most
    -- the first of them (the listener was ready first), not after all 20
    assert.is_true(seen <= 2, "the asker waited for " .. tostring(seen) ..
                   " new TLS connections")
    H.eventually(function ()
      asker:send("count\n")
      return asker:receive() == "20"
    end, 5)
  end)
end)
