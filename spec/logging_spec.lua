-- --log-format json, --log-level and --quiet: what reaches stderr.
local H = require "helper"
local T = H.T
local cjson = require "cjson"

local SCRIPT = [[
local luasrv = require "luasrv"
return { handle = function (req)
  luasrv.log("handled", "a \"quoted\"\tline")
  if req:read("l") == "boom" then error("kaboom") end
  req:write("ok\n")
end }]]

local function wait_for (srv, pattern)
  local deadline = T.now() + 5 * H.scale
  while not srv:stderr():find(pattern) and T.now() < deadline do T.sleep(0.02) end
  return srv:stderr():find(pattern) ~= nil
end

describe("logging", function ()

  it("--log-format json: one JSON object per line with time, level, pid, msg",
     function ()
    local srv = H.start{ source = SCRIPT, tcp = "127.0.0.1:0", wait = false,
                         args = { "--log-format", "json" } }
    assert.is_true(wait_for(srv, '"msg":"listening on tcp://127%.0%.0%.1:%d+"'))
    local port = tonumber(srv:stderr():match('listening on tcp://127%.0%.0%.1:(%d+)'))
    local socket = require "socket"
    for _, line in ipairs { "fine", "boom" } do
      local c = assert(socket.connect("127.0.0.1", port))
      c:settimeout(5 * H.scale)
      c:send(line .. "\n")
      c:receive()
      c:close()
    end
    assert.is_true(wait_for(srv, "kaboom"))
    local levels = {}
    for _, line in ipairs(H.lines(srv:stderr())) do
      local ok, obj = pcall(cjson.decode, line)
      assert.is_true(ok, "not JSON: " .. line)
      assert.is_number(obj.time)
      assert.is_number(obj.pid)
      assert.is_string(obj.msg)
      levels[obj.level] = true
      if obj.msg:find("^handled") then
        assert.equals('handled a "quoted"\tline', obj.msg)
      end
    end
    assert.is_true(levels.info and levels.error and true or false)
    -- a multi-line message (the traceback) stays one JSON line
    assert.truthy(srv:stderr():find('error handling request from 127.0.0.1:%d+: '
      .. '[^"]*kaboom\\nstack traceback:'))
  end)

  it("--log-level warn drops info (startup lines, luasrv.log), keeps errors",
     function ()
    for _, args in ipairs { { "--log-level", "warn" }, { "--quiet" } } do
      local srv = H.start{ source = SCRIPT, tcp = "127.0.0.1:0", wait = false,
                           args = args }
      T.sleep(0.5 * H.scale)
      assert.is_nil(srv:stderr():find("listening on", 1, true))
      assert.is_true(srv:alive())
      srv:stop()
    end
    local code, _, err = T.run{ "{script}", "--tcp", "127.0.0.1:0", "--quiet",
      source = "return { init = function () error('no db') end, handle = function () end }" }
    assert.equals(1, code)
    assert.equals(1, #H.error_lines(err))
  end)

  it("a bad --log-level or --log-format is a usage error (exit 2)",
     function ()
    local code, _, err = T.run{ H.fixture("echo.lua"), "--tcp", "127.0.0.1:0",
                                "--log-level", "loud" }
    assert.equals(2, code)
    assert.truthy(err:find("bad value 'loud' for --log-level", 1, true))
    code, _, err = T.run{ H.fixture("echo.lua"), "--tcp", "127.0.0.1:0",
                          "--log-format", "xml" }
    assert.equals(2, code)
  end)

end)
