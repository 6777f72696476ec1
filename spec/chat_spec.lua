-- scripts/chat.lua (docs-spawn.md): lines broadcast to every connection of
-- the worker, joins and leaves, a client that stops reading does not hold
-- up the others. Loopback only, bounded.
local H = require "helper"

local function join (srv, nick)
  local c = srv:connect()
  c:settimeout(3)
  assert.equals("name? ", c:receive(6))
  c:send(nick .. "\n")
  assert.equals("* " .. nick .. " joined", c:receive())
  return c
end

describe("scripts/chat.lua", function ()
  it("broadcasts each line to every member, the sender too", function ()
    local srv = H.start{ model = "event", script = "scripts/chat.lua" }
    local a = join(srv, "ann")
    local b = join(srv, "bob")
    assert.equals("* bob joined", a:receive())
    a:send("hello\n")
    assert.equals("<ann> hello", a:receive())
    assert.equals("<ann> hello", b:receive())
    b:send("hi ann\n")
    assert.equals("<bob> hi ann", a:receive())
    assert.equals("<bob> hi ann", b:receive())
    b:send("/who\n")
    assert.equals("* in the room: ann, bob", b:receive())
    b:close()
    assert.equals("* bob left", a:receive())
  end)

  it("keeps order and loses nothing across 200 lines from 3 senders",
     function ()
    local srv = H.start{ model = "event", script = "scripts/chat.lua" }
    local cs = { join(srv, "c1") }
    cs[2] = join(srv, "c2")
    assert.equals("* c2 joined", cs[1]:receive())
    cs[3] = join(srv, "c3")
    assert.equals("* c3 joined", cs[1]:receive())
    assert.equals("* c3 joined", cs[2]:receive())
    for i = 1, 200 do
      local k = (i - 1) % 3 + 1
      cs[k]:send(("m%d\n"):format(i))
    end
    for k = 1, 3 do
      local last = {}
      for _ = 1, 200 do
        local line = assert(cs[k]:receive())
        local from, i = line:match("^<c(%d)> m(%d+)$")
        assert.is_not_nil(from, line)
        i = tonumber(i)
        -- per sender, in order
        assert.is_true(i > (last[from] or 0), line)
        last[from] = i
      end
    end
  end)

  it("a member that does not read does not hold up the others", function ()
    local srv = H.start{ model = "event", script = "scripts/chat.lua",
                         args = { "--timeout", "30" } }
    local a = join(srv, "ann")
    local lazy = join(srv, "lazy")  -- never reads again
    assert.equals("* lazy joined", a:receive())
    local big = string.rep("x", 4000)
    local t0 = H.T.now()
    for _ = 1, 100 do  -- 400 KB towards lazy, more than socket buffers
      a:send(big .. "\n")
      assert.equals("<ann> " .. big, a:receive())
    end
    assert.is_true(H.T.now() - t0 < 5 * H.scale)
    lazy:close()
  end)

  it("refuses a model without light threads running together", function ()
    local code, _, err = H.T.run{ "scripts/chat.lua", "--tcp",
      "127.0.0.1:0", "--model", "thread" }
    assert.equals(1, code)
    assert.matches("needs the event model", err)
  end)
end)
