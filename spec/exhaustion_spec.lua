-- spec/exhaustion_spec.lua: out of descriptors, the thread model still
-- makes a state for every connection it accepted. Each handler thread
-- owns a Lua state; the script and the modules it requires are read from
-- disk once per process, so a state made when the clients hold every
-- descriptor needs no file.
local H = require "helper"
local T = H.T

local HOLD = [[
local cjson = require "cjson"
local mod = require "exh_mod"
return { handle = function (req)
  for line in req:lines() do req:write(cjson.encode({ mod.tag(line) }), "\n") end
end }
]]

local MOD = [[
#!shebang lines are skipped as luaL_loadfile does
local M = {}
function M.tag (s) return "<" .. s .. ">" end
return M
]]

for _, model in ipairs(H.models) do
  if model == "thread" then
    describe("model thread, ulimit -n 64", function ()
      it("serves every connection it accepted: none waits for a state",
      function ()
        local dir = H.tmpdir()
        local f = assert(io.open(dir .. "/exh_mod.lua", "w"))
        f:write(MOD)
        f:close()
        local wrapper = dir .. "/luasrv-ulimit"
        f = assert(io.open(wrapper, "w"))
        f:write("#!/bin/sh\nulimit -n 64\nexec '", T.bin, "' \"$@\"\n")
        f:close()
        os.execute("chmod +x '" .. wrapper .. "'")
        local bin = T.bin
        T.bin = wrapper
        local ok, srv = pcall(H.start, { model = model, source = HOLD,
          env = { LUA_PATH = dir .. "/?.lua;;" },
          args = { "--max-threads", "300", "--timeout", "30" } })
        T.bin = bin
        assert(ok, srv)
        local held = {}
        for i = 1, 150 do
          local c = srv:connect()
          c:send("hi\n")
          held[i] = c
        end
        -- the clients the server accepted get their reply (the others
        -- are turned away by the out-of-descriptors path, or wait in the
        -- backlog); before, most accepted clients waited for a thread
        -- whose state could not open the script
        local served, done = 0, {}
        local deadline = T.now() + 4 * H.scale
        repeat
          for i, c in ipairs(held) do
            if not done[i] then
              c:settimeout(0)
              local line, err = c:receive()
              if line == '["<hi>"]' then served, done[i] = served + 1, true
              elseif err == "closed" then done[i] = true end
            end
          end
          T.sleep(0.05)
        until served >= 40 or T.now() > deadline
        -- 64 descriptors, less the server's own: about 50 clients
        assert.is_true(served >= 40, served .. " served\n" .. srv:stderr())
        assert.is_nil(srv:stderr():find("error", 1, true), srv:stderr())
      end)
    end)
  end
end

describe("script loading", function ()
  it("keeps line numbers right after a '#' first line", function ()
    local code, _, err = T.run{ "--check", "{script}",
      source = "#!/usr/bin/env luasrv\nlocal x = = 1\n" }
    assert.equals(1, code)
    assert.matches(":2: unexpected symbol near '='", err)
  end)

  it("names a missing script as before", function ()
    local code, _, err = T.run{ "--check", "/nonexistent/handler.lua" }
    assert.equals(1, code)
    assert.matches("cannot open /nonexistent/handler.lua", err)
  end)
end)
