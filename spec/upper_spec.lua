-- spec/upper_spec.lua: scripts/upper.lua, tested through the real binary.
-- Run it alone with `busted spec/upper_spec.lua`.
local T = require "luasrv.test"

describe("upper", function ()
  local srv
  setup(function () srv = T.start{ script = "scripts/upper.lua", tcp = true } end)
  teardown(function () srv:stop() end)

  it("shouts every line back", function ()
    local c = srv:connect()
    c:send("hello\nworld\n")
    assert.equals("HELLO", c:receive())
    assert.equals("WORLD", c:receive())
  end)
end)
