-- lua/luasrv/ratelimit.lua and scripts/ratelimit.lua (docs-spawn.md): a
-- per-client token bucket in a shared dictionary, counted across workers.
local H = require "helper"

-- one connection: "hi" back, or "rate limited"
local function try (srv)
  local c = srv:connect()
  c:send("hi\n")
  local line = c:receive()
  c:close()
  return line
end

local function start (env, workers)
  return H.start{ model = "event", script = "scripts/ratelimit.lua",
                  args = { "--workers", tostring(workers or 2),
                           "--shared", "ratelimit:1m" },
                  env = env }
end

describe("scripts/ratelimit.lua", function ()
  it("lets a burst through, refuses the rest, refills at the rate",
     function ()
    local srv = start({ LUASRV_RATE = "2", LUASRV_BURST = "5" }, 2)
    local got = {}
    for i = 1, 9 do got[i] = try(srv) end
    -- 5 served at once; what came after within the same fraction of a
    -- second refused (at 2/s, a token needs 0.5 s)
    local served = 0
    for i = 1, 5 do if got[i] == "hi" then served = served + 1 end end
    assert.equals(5, served, table.concat(got, ","))
    for i = 7, 9 do assert.equals("rate limited", got[i]) end
    H.T.sleep(1.1)  -- two tokens back
    assert.equals("hi", try(srv))
    assert.equals("hi", try(srv))
    assert.equals("rate limited", try(srv))
  end)

  it("counts one bucket for all the workers", function ()
    local srv = start({ LUASRV_RATE = "0.5", LUASRV_BURST = "6" }, 2)
    local served, refused = 0, 0
    for _ = 1, 16 do
      local r = try(srv)
      if r == "hi" then served = served + 1
      elseif r == "rate limited" then refused = refused + 1 end
    end
    assert.equals(6, served)
    assert.equals(10, refused)
  end)

  it("needs the shared dictionary", function ()
    local code, _, err = H.T.run{ "--check", "scripts/ratelimit.lua" }
    assert.equals(1, code)
    assert.matches("no shared dictionary 'ratelimit'", err)
  end)
end)

describe("luasrv.ratelimit", function ()
  it("limits each key on its own and says when to retry", function ()
    local srv = H.start{ model = "event", args = { "--shared", "rl:1m" },
      source = H.SER .. [[
        local ratelimit = require "luasrv.ratelimit"
        local lim = ratelimit.new{ rate = 1, burst = 2, dict = "rl" }
        return { handle = function (req)
          local out = {}
          for _, k in ipairs{ "a", "a", "a", "b" } do
            local ok, wait = lim:incoming(k)
            out[#out + 1] = ok and "ok" or string.format("wait%.0f", wait)
          end
          req:write(ser(table.concat(out, " ")), "\n")
        end }]] }
    local c = srv:connect()
    c:send("x\n")
    assert.same({ "ok ok wait1 ok", n = 1 }, H.unser(c:receive()))
  end)
end)
