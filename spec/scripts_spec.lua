-- The scripts that ship in scripts/, run as the README shows them: each
-- served by the real binary and asked through tools/lsend, under every
-- model. (spec/docs_spec.lua checks that the docs quote them verbatim.)
local H = require "helper"
local T = H.T

local readfile = H.read_file

-- runs tools/lsend ADDRESS [DATA] with stdin; returns its output, status
local function lsend (address, data, stdin)
  local dir = H.tmpdir()
  local input = dir .. "/in"
  local f = assert(io.open(input, "wb"))
  f:write(stdin or "")
  f:close()
  local cmd = ("tools/lsend '%s'%s < '%s' 2>&1"):format(address,
    data and (" '" .. data .. "'") or "", input)
  local p = io.popen(cmd)
  local out = p:read("a")
  local ok = p:close()
  return out, ok
end

local readme = readfile("README.md")

local examples = {
  { script = "upper.lua", kind = "tcp", stdin = "hello\nworld\n",
    expect = "HELLO\nWORLD\n" },
  { script = "reverse.lua", kind = "udp", data = "stressed",
    expect = "desserts" },
  { script = "sum.lua", kind = "unix", stdin = "[1, 2, 3.5]\n[]\n",
    expect = '{"sum":6.5}\n{"sum":0}\n' },
  { script = "counter.lua", kind = "unixgram", data = "ping",
    expect = "ping #1", again = "ping #2" },
}

H.for_models(function (model)
  for _, ex in ipairs(examples) do
    it(ex.script .. " on " .. ex.kind .. " answers as the README says",
       function ()
      local srv = H.start{ model = model, script = "scripts/" .. ex.script,
                           [ex.kind] = true }
      local address = srv.listeners[1].address
      local out, ok = lsend(address, ex.data, ex.stdin)
      assert.is_true(ok, out)
      assert.equals(ex.expect, out)
      if ex.again and model ~= "fork" then  -- fork children forget
        assert.equals(ex.again, (lsend(address, ex.data, ex.stdin)))
      end
    end)
  end

  it("echo.lua serves all four listener kinds at once", function ()
    local srv = H.start{ model = model, script = "scripts/echo.lua",
      tcp = true, udp = true, unix = true, unixgram = true }
    for _, l in ipairs(srv.listeners) do
      local dgram = l.transport == "udp" or l.transport == "unixgram"
      local out = lsend(l.address, dgram and "one datagram" or nil,
                        not dgram and "a\nb\n" or nil)
      assert.equals(dgram and "one datagram" or "a\nb\n", out)
    end
  end)
end)

describe("README", function ()
  it("starts with the two set-up commands", function ()
    local first = readme:match("```\n(.-)```")
    assert.matches("^make run", first)
    assert.matches("\nmake test", first)
  end)

  it("lsend fails with a message when nobody listens", function ()
    local out, ok = lsend("tcp://127.0.0.1:1", "x")
    assert.is_falsy(ok)
    assert.matches("^lsend: tcp://127.0.0.1:1: ", out)
  end)
end)
