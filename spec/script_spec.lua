-- The handler script (SPEC §2): both styles, --check, load errors, the
-- luasrv and cjson modules, init, and state that persists across requests.
local H = require "helper"
local T = H.T
local cjson = require "cjson"

local ECHO = H.fixture("echo.lua")
local GLOBALS = H.fixture("globals.lua")
local SYNTAX = H.fixture("syntax_error.lua")
local NO_HANDLE = H.fixture("no_handle.lua")


local function pat (s) return (s:gsub("%p", "%%%0")) end


-- a server that must not start: exit 1 and exactly one error line,
-- matching pattern; no traceback, no listening line
local function fails_to_start (model, pattern, run)
  run = run or {}
  run[#run + 1] = "--tcp"; run[#run + 1] = "127.0.0.1:0"
  run[#run + 1] = "--model"; run[#run + 1] = model
  run.timeout = run.timeout or 5
  local code, _, err = T.run(run)
  assert.equals(1, code, err)
  local errs = H.error_lines(err)
  assert.equals(1, #errs, err)
  assert.matches(pattern, errs[1])
  assert.falsy(err:find("stack traceback", 1, true), err)
  assert.falsy(err:find("listening on", 1, true), err)
  return errs[1]
end


local function ask (srv, kind)
  local c = srv:connect(kind)
  local line, err = c:receive()
  c:close()
  return line, err
end


H.for_models(function (model)

  describe("styles", function ()
    it("a script that returns a table of hooks", function ()
      local srv = H.start{ model = model, source = [[
        return { handle = function (req) req:write("table style\n") end }
      ]] }
      assert.equals("table style", ask(srv))
    end)

    it("a script that defines its hooks as globals", function ()
      local srv = H.start{ model = model, script = GLOBALS }
      assert.equals("globals 1 1", ask(srv))
    end)
  end)

  describe("--check", function ()
    it("prints 'luasrv: SCRIPT: ok' to stderr and exits 0", function ()
      for _, script in ipairs{ ECHO, GLOBALS } do
        local code, out, err = T.run{ "--check", script }
        assert.equals(0, code, err)
        assert.equals("", out)
        assert.equals("luasrv: " .. script .. ": ok\n", err)
      end
    end)

    it("exits 1 with file:line on a syntax error", function ()
      local code, _, err = T.run{ "--check", SYNTAX }
      assert.equals(1, code)
      local errs = H.error_lines(err)
      assert.equals(1, #errs, err)
      assert.matches("^luasrv: error: " .. pat(SYNTAX) .. ":3: ", errs[1])
      assert.falsy(err:find(": ok", 1, true))
    end)

    it("exits 1 naming 'handle' when there is none", function ()
      local code, _, err = T.run{ "--check", NO_HANDLE }
      assert.equals(1, code)
      local errs = H.error_lines(err)
      assert.equals(1, #errs, err)
      assert.matches("handle", errs[1])
    end)
  end)

  describe("load errors", function ()
    it("a syntax error: exit 1, 'luasrv: error: FILE:LINE: ...'", function ()
      local line = fails_to_start(model,
        "^luasrv: error: " .. pat(SYNTAX) .. ":3: .+", { SYNTAX })
      assert.matches("near", line)
    end)

    it("an error raised while the script runs: exit 1 with FILE:LINE: MSG",
    function ()
      local code, _, err, script = T.run{ timeout = 5,
        "--tcp", "127.0.0.1:0", "--model", model,
        source = "local x = 1\nerror('cannot start here')\n" }
      assert.equals(1, code)
      local errs = H.error_lines(err)
      assert.equals(1, #errs, err)
      assert.equals("luasrv: error: " .. script .. ":2: cannot start here",
                    errs[1])
    end)

    it("no handle: exit 1 with an error line that names 'handle'",
    function ()
      fails_to_start(model, "^luasrv: error: .*handle", { NO_HANDLE })
    end)

    it("a handle that is not a function: exit 1 naming 'handle'",
    function ()
      local code, _, err = T.run{ timeout = 5, "--tcp", "127.0.0.1:0",
        "--model", model, source = "return { handle = 42 }" }
      assert.equals(1, code)
      local errs = H.error_lines(err)
      assert.equals(1, #errs, err)
      assert.matches("handle", errs[1])
    end)

    it("a script file that does not exist: exit 1 naming it", function ()
      fails_to_start(model, "^luasrv: error: .*" .. pat("spec/no/such.lua"),
                     { "spec/no/such.lua" })
    end)

    it("init raising: exit 1 with FILE:LINE: MSG", function ()
      local code, _, err, script = T.run{ timeout = 5,
        "--tcp", "127.0.0.1:0", "--model", model, source = [[
return {
  init = function () error("no database") end,
  handle = function () end,
}]] }
      assert.equals(1, code)
      local errs = H.error_lines(err)
      assert.equals(1, #errs, err)
      assert.matches("^luasrv: error: .*" .. pat(script) ..
                     ":2: no database", errs[1])
    end)
  end)

  describe("modules", function ()
    it('require "cjson" works in the handler', function ()
      local srv = H.start{ model = model, source = [[
        local cjson = require "cjson"
        return { handle = function (req)
          req:write(cjson.encode({ list = { 1, 2, 3 }, ok = true }), "\n")
        end }
      ]] }
      assert.same({ list = { 1, 2, 3 }, ok = true },
                  cjson.decode((ask(srv))))
    end)

    it('require "luasrv": sleep waits, now is monotonic seconds', function ()
      local srv = H.start{ model = model, source = [[
        local luasrv = require "luasrv"
        return { handle = function (req)
          local t0 = luasrv.now()
          luasrv.sleep(0.2)
          local t1 = luasrv.now()
          req:write(math.type(t0) or type(t0), " ", t1 - t0, "\n")
        end }
      ]] }
      local elapsed, line = H.elapsed(ask, srv)
      local kind, dt = line:match("^(%S+) (%S+)$")
      assert.equals("float", kind)
      dt = tonumber(dt)
      assert.is_true(dt >= 0.19 and dt < 1, line)
      assert.is_true(elapsed >= 0.19, "the client waited " .. elapsed)
    end)

    it("luasrv.log writes 'luasrv: ' and its arguments joined by spaces",
    function ()
      local srv = H.start{ model = model, source = [[
        local luasrv = require "luasrv"
        return { handle = function (req)
          luasrv.log("hello", 42, nil, true, 1.5)
          req:write("logged\n")
        end }
      ]] }
      assert.equals("logged", ask(srv))
      assert.is_true(srv:wait_stderr("\nluasrv: hello 42 nil true 1.5\n",
                                     2, true), srv:stderr())
    end)
  end)

  describe("state", function ()
    it("init runs once, before the first request, with the server",
    function ()
      local srv = H.start{ model = model, source = [[
        local luasrv = require "luasrv"
        local ready = "no"
        return {
          init = function (server)
            luasrv.log("init", type(server))
            ready = "yes"
          end,
          handle = function (req) req:write("ready ", ready, "\n") end,
        }
      ]] }
      for _ = 1, 3 do assert.equals("ready yes", ask(srv)) end
      assert.equals(1, H.count(srv:stderr(), "luasrv: init table\n", true),
                    srv:stderr())
    end)

    it("the collector runs in generational mode; a script may change it",
    function ()
      -- collectgarbage(mode) returns the mode it replaces
      local srv = H.start{ model = model, source = [[
        local at_load = collectgarbage("incremental")
        return { handle = function (req)
          local now = collectgarbage("incremental")
          req:write(at_load, " ", now, "\n")
        end }
      ]] }
      assert.equals("generational incremental", ask(srv))
    end)

    if model == "sync" or model == "event" then
      it("globals and upvalues persist across requests", function ()
        local srv = H.start{ model = model, script = GLOBALS }
        assert.equals("globals 1 1", ask(srv))
        assert.equals("globals 2 2", ask(srv))
        assert.equals("globals 3 3", ask(srv))
      end)
    end
  end)
end)
