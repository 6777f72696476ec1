-- --config FILE: options one a line, the command line over the file,
-- FILE:LINE errors, and SIGHUP re-reading the file.
local H = require "helper"
local T = H.T

-- answers every line with TAG and the worker's number
local function tagger (tag)
  return ([[
return { handle = function (req)
  for line in req:lines() do req:write("%s ", req.server.worker, "\n") end
end }]]):format(tag)
end


local write = H.write_file


local function ask (srv, which)
  local c = srv:connect(which)
  c:send("x\n")
  local line = c:receive()
  c:close()
  return line
end


describe("--config", function ()
  local dir
  before_each(function () dir = T.tmpdir() end)
  after_each(function () T.rmrf(dir) end)

  it("a bad line is an error naming FILE:LINE and what was meant",
     function ()
    local conf = dir .. "/x.conf"
    write(conf, "# a comment\n\ntcp 127.0.0.1:0\nworker 4\n")
    local code, out, err = T.run{ "--config", conf, H.fixture("echo.lua") }
    assert.equals(2, code)
    assert.equals("", out)
    assert.equals("luasrv: " .. conf .. ":4: unknown option '--worker' "
      .. "(did you mean --workers?)\n", err)
    write(conf, "--tcp=127.0.0.1:0\n  timeout soon\n")
    code, _, err = T.run{ "--config", conf, H.fixture("echo.lua") }
    assert.equals(2, code)
    assert.matches(conf .. ":2: bad value 'soon' for --timeout", err, 1, true)
    code, _, err = T.run{ "--config", dir .. "/none.conf" }
    assert.equals(2, code)
    assert.matches("--config " .. dir .. "/none.conf: No such file", err, 1,
                   true)
  end)

  it("--check --config loads the script the file names", function ()
    local conf = dir .. "/ok.conf"
    write(conf, "script " .. H.fixture("echo.lua") .. "\ntcp 127.0.0.1:0\n"
          .. "log-file " .. dir .. "/x.log\n")
    local code, _, err = T.run{ "--check", "--config", conf }
    assert.equals(0, code, err)
    assert.matches("echo.lua: ok", err, 1, true)
    write(conf, "script " .. dir .. "/missing.lua\n")
    code = T.run{ "--check", "--config", conf }
    assert.equals(1, code)
  end)

  it("serves what the file says; the command line overrides it", function ()
    local conf, port = dir .. "/s.conf", H.free_port()
    write(dir .. "/a.lua", tagger("a"))
    write(conf, table.concat({
      "# the server", "script " .. dir .. "/a.lua",
      "tcp 127.0.0.1:" .. port, "--workers 2", "timeout=5", "" }, "\n"))
    local srv = H.start{ config = conf }
    assert.equals("tcp://127.0.0.1:" .. port, srv.listeners[1].address)
    assert.matches("^a [12]$", ask(srv))
    srv:stop()
    -- a listener on the command line replaces the file's; so does a script
    write(dir .. "/b.lua", tagger("b"))
    srv = H.start{ config = conf, script = dir .. "/b.lua",
                   args = { "--tcp", "127.0.0.1:0", "--workers", "1" } }
    H.eventually(function () return #H.children(srv.pid) == 1 end, 5)
    assert.equals(1, #srv.listeners)
    assert.not_equals(port, srv.listeners[1].port)
    assert.equals("b 1", ask(srv))
  end)

  it("SIGHUP re-reads it: script and listeners change, --workers needs a "
     .. "restart", function ()
    local conf = dir .. "/r.conf"
    local p1, p2 = H.free_port(), H.free_port()
    write(dir .. "/a.lua", tagger("a"))
    write(dir .. "/b.lua", tagger("b"))
    write(conf, "script " .. dir .. "/a.lua\ntcp 127.0.0.1:" .. p1 .. "\n")
    local srv = H.start{ config = conf }
    assert.equals("a 1", ask(srv))
    local long = ("x"):rep(40)
    local c0 = srv:connect()
    c0:settimeout(5)
    c0:send(long .. "\n")
    assert.equals("a 1", c0:receive())  -- no limit hit yet
    c0:close()
    write(conf, "script " .. dir .. "/b.lua\ntcp 127.0.0.1:" .. p2 ..
          "\nworkers 3\nmax-line 16\n")
    srv:signal("HUP")
    assert.truthy(srv:wait_stderr("reloaded " .. dir .. "/b.lua", 5, true),
                  srv:stderr())
    assert.matches("--workers changed in " .. conf .. ": needs a restart",
                   srv:stderr(), 1, true)
    assert.matches("listening on tcp://127.0.0.1:" .. p2, srv:stderr(), 1,
                   true)
    assert.matches("closed tcp://127.0.0.1:" .. p1, srv:stderr(), 1, true)
    local c = assert(require("socket").connect("127.0.0.1", p2))
    c:settimeout(5)
    c:send("x\n")
    assert.equals("b 1", c:receive())
    -- a handler option of the file took effect: the line is too long now
    c:send(long .. "\n")
    assert.is_nil((c:receive()))
    c:close()
    assert.truthy(srv:wait_stderr("line too long", 5, true), srv:stderr())
    -- one worker: the old one has gone (it exits as soon as it is idle)
    assert.truthy(H.eventually(function ()
      return #H.children(srv.pid) == 1
    end, 5), "old worker still there")
    -- a bad line: the reload fails, the running configuration goes on
    write(conf, "script " .. dir .. "/a.lua\ntcp 127.0.0.1:" .. p2 ..
          "\ntimout 3\n")
    srv:signal("HUP")
    assert.truthy(srv:wait_stderr(conf .. ":3: unknown option '--timout'", 5,
                                  true), srv:stderr())
    assert.matches("reload failed: the old code keeps serving", srv:stderr())
    c = assert(require("socket").connect("127.0.0.1", p2))
    c:settimeout(5)
    c:send("x\n")
    assert.equals("b 1", c:receive())
    c:close()
  end)
end)
