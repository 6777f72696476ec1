-- scripts/daytime.lua (RFC 867), asked by socat over TCP and UDP.
local H = require "helper"

-- socat's output for `socat OPTS - TARGET` with stdin; and its success
local function socat (opts, target, stdin)
  local p = io.popen(("printf '%s' | timeout -k 2 10 socat %s - %s 2>&1")
    :format(stdin, opts, target))
  local out = p:read("a")
  return out, p:close()
end

-- true when s is the daytime line of a moment within 2 s of now
local function is_now (s)
  local now = os.time()
  for t = now - 2, now + 2 do
    if s == os.date("!%A, %B %d, %Y %H:%M:%S-UTC\r\n", t) then return true end
  end
  return false
end

H.for_models(function (model)
  it("tells the time over TCP, then closes", function ()
    local srv = H.start{ model = model, script = "scripts/daytime.lua",
                         tcp = true }
    local out, ok = socat("-t 5", "TCP:127.0.0.1:" .. srv.tcp.port, "")
    assert.is_true(ok, out)
    assert.matches("^%u%l+, %u%l+ %d%d, %d%d%d%d %d%d:%d%d:%d%d%-UTC\r\n$",
      out)
    assert.is_true(is_now(out), out)
  end)

  it("answers any UDP datagram with the time", function ()
    local srv = H.start{ model = model, script = "scripts/daytime.lua",
                         udp = true }
    local out, ok = socat("-t 0.5", "UDP:127.0.0.1:" .. srv.udp.port, "?")
    assert.is_true(ok, out)
    assert.is_true(is_now(out), out)
  end)
end)
