-- --admin PATH and `luasrv ctl PATH COMMAND`: status, workers, reload
-- (answered once the new code serves, or why not), drain, and the
-- commands a worker answers itself: connections and eval.
local H = require "helper"
local T = H.T
local json = require "cjson"

local writefile = H.write_file

local versioned = H.versioned

local function ctl (sock, ...)
  return T.run{ "ctl", sock, ... }
end

local function ask (srv)
  return (H.ask_line(srv, "x", 5))
end


H.for_models(function (model)
  it("status, workers, reload and drain", function ()
    local dir = H.tmpdir()
    local sock, script = dir .. "/admin.sock", dir .. "/handler.lua"
    writefile(script, versioned("v1"))
    local srv = H.start{ model = model, script = script,
                         args = { "--workers", "2", "--admin", sock } }
    local p = io.popen("stat -c %a " .. sock)
    assert.equals("600", p:read("l"))
    p:close()
    assert.equals("v1 x", ask(srv))

    -- a request is counted when it ends: once the worker has seen the
    -- client's close, which may come after the client has its answer
    local code, out, err, st
    H.eventually(function ()
      code, out, err = ctl(sock, "status")
      assert.equals(0, code, err)
      st = json.decode(out)
      return st.requests == 1
    end, 5)
    assert.equals(srv.pid, st.pid)
    assert.equals(2, #st.workers)
    assert.equals(1, st.requests)

    code, out = ctl(sock, "workers")
    assert.equals(0, code)
    local lines = H.lines(out)
    assert.equals(3, #lines)
    assert.matches("^ID +PID +GEN +STATE +CONNECTIONS +REQUESTS$", lines[1])
    local pids = {}
    for i = 2, 3 do
      local id, pid = lines[i]:match("^(%d+) +(%d+) +1 +serving ")
      assert.truthy(id, lines[i])
      pids[#pids + 1] = tonumber(pid)
    end
    table.sort(pids)
    assert.same(H.children(srv.pid), pids)

    -- reload answers once the new code serves
    writefile(script, versioned("v2"))
    code, out = ctl(sock, "reload")
    assert.equals(0, code)
    assert.equals("reloaded " .. script .. ": 2 workers serve the new code\n",
                  out)
    assert.equals("v2 x", ask(srv))
    -- or why it failed; the old code serves on
    writefile(script, "return {")
    code, out, err = ctl(sock, "reload")
    assert.equals(1, code)
    assert.equals("", out)
    assert.matches("^luasrv: error: reload failed: worker 1 of the new code "
                   .. "exited with status 1", err)
    assert.equals("v2 x", ask(srv))

    code, _, err = ctl(sock, "bogus")
    assert.equals(1, code)
    assert.matches("unknown command 'bogus'", err, 1, true)

    code, out = ctl(sock, "drain")
    assert.equals(0, code)
    assert.matches("^stopping", out)
    assert.equals(0, srv:wait(10))
    assert.is_false(H.exists(sock))
  end)
end)


-- A handler with state of its own: a counter module, a global and a
-- shared dictionary, all changed by each line a client sends.
local COUNTER = [[
local counter = { n = 0 }
package.loaded.counter = counter
hits = 0
local seen = require("luasrv").shared.seen
return { handle = function (req)
  for line in req:lines() do
    counter.n = counter.n + 1
    hits = hits + 1
    seen:set("last", line)
    req:write("ok ", line, "\n")
  end
end }]]

H.for_models(function (model)
  it("connections and eval run inside a worker", function ()
    local dir = H.tmpdir()
    local sock = dir .. "/admin.sock"
    local srv = H.start{ model = model, source = COUNTER,
                         args = { "--admin", sock, "--shared", "seen:64k" } }
    -- a client held open, waiting to read its next line
    local c = H.connect(srv, 5)
    c:send("one\n")
    assert.equals("ok one", c:receive())
    c:send("two\n")
    assert.equals("ok two", c:receive())

    local code, out, err = ctl(sock, "connections")
    assert.equals(0, code, err)
    local lines = H.lines(out)
    assert.matches("^CLIENT +LISTENER +AGE +IN +OUT +WAITS$", lines[1])
    if model == "fork" then
      -- a fork worker's clients are its children's: counted, not listed
      assert.matches("^worker 1 %(pid %d+, fork%): 0 connections; 1 child "
                     .. "serving a client each", lines[#lines])
    else
      assert.equals(3, #lines, out)
      local client, listener, age, nin, nout, waits = lines[2]:match(
        "^(%S+) +(%S+) +([%d.]+) +(%d+) +(%d+) +(%S+)$")
      assert.truthy(client, lines[2])
      assert.matches("^127%.0%.0%.1:%d+$", client)
      assert.equals("tcp://127.0.0.1:" .. srv.listeners[1].port, listener)
      assert.truthy(tonumber(age) >= 0 and tonumber(age) < 60)
      assert.equals("8", nin)
      assert.equals("14", nout)
      assert.equals("read", waits)
      assert.matches("^worker 1 %(pid %d+, " .. model .. "%): 1 connection$",
                     lines[3])
    end

    -- the held client was served throughout; a busy blocking worker runs
    -- an eval once its request ends, so end it
    c:send("three\n")
    assert.equals("ok three", c:receive())
    c:close()

    -- eval sees the handler's state: its module, its globals, the
    -- shared dictionaries
    code, out, err = ctl(sock, "eval", "1", "return require('counter').n, "
                         .. "hits, require('luasrv').shared.seen:get('last')")
    assert.equals(0, code, err)
    if model == "fork" then  -- the children counted, not the worker
      assert.equals("0\t0\tthree\n", out)
    else
      assert.equals("3\t3\tthree\n", out)
    end
    code, out = ctl(sock, "eval", "1", "hits = 40 return hits + 2")
    assert.equals(0, code)
    assert.equals("42\n", out)
    code, out = ctl(sock, "eval", "1", "return")
    assert.equals(0, code)
    assert.equals("\n", out)
    -- an eval may sleep (a task of its own in the event model)
    code, out, err = ctl(sock, "eval", "1",
                         "require('luasrv').sleep(0.1) return 'woke'")
    assert.equals(0, code, err)
    assert.equals("woke\n", out)
    -- errors: the message and a traceback; a chunk that does not compile
    code, out, err = ctl(sock, "eval", "1", "error('boom')")
    assert.equals(1, code)
    assert.equals("", out)
    assert.matches("^luasrv: error: eval:1: boom\nstack traceback:", err)
    code, _, err = ctl(sock, "eval", "1", "return +")
    assert.equals(1, code)
    assert.matches("^luasrv: error: eval:1: unexpected symbol", err)
    -- a runaway chunk is stopped, and the worker serves on
    if model == "event" or model == "sync" then
      code, _, err = ctl(sock, "eval", "1", "while true do end")
      assert.equals(1, code)
      assert.matches("^luasrv: error: eval stopped: it ran past 5 s\n", err)
      assert.equals("1\n", select(2, ctl(sock, "eval", "1", "return 1")))
    end
    -- no such worker
    code, _, err = ctl(sock, "eval", "3", "return 1")
    assert.equals(1, code)
    assert.equals("luasrv: error: no worker '3' (workers are 1 to 1; see "
                  .. "workers)\n", err)
    code, _, err = ctl(sock, "connections", "x")
    assert.equals(1, code)
    assert.matches("no worker 'x'", err, 1, true)
  end)
end)


H.for_models(function (model)
  it("eval while a client is held; two workers; a long result is cut",
     function ()
    local dir = H.tmpdir()
    local sock = dir .. "/admin.sock"
    local srv = H.start{ model = model, source = COUNTER,
                         args = { "--admin", sock, "--shared", "seen:64k",
                                  "--workers", "2" } }
    local code, out, err = ctl(sock, "connections")
    assert.equals(0, code, err)
    assert.equals(2, H.count(out, "\nworker %d %(pid %d+, " .. model .. "%)"))
    code, out = ctl(sock, "eval", "2", "return #('x'):rep(10)")
    assert.equals(0, code)
    assert.equals("10\n", out)
    code, out = ctl(sock, "eval", "1", "return ('x'):rep(100000)")
    assert.equals(0, code)
    assert.truthy(#out < 70000)
    assert.matches("^xxxx", out)
    assert.matches("\n%(cut at 64 KiB%)\n$", out)

    -- clients held (a sync worker serves one at a time: two)
    local held = {}
    H.defer(function () for _, c in ipairs(held) do c:close() end end)
    for i = 1, model == "sync" and 2 or 4 do
      local c = srv:connect()
      c:settimeout(5 * H.scale)
      c:send("h" .. i .. "\n")
      assert.equals("ok h" .. i, c:receive())
      held[i] = c
    end
    -- event and fork workers answer at once; a sync worker, or a thread
    -- worker whose first thread serves a client, once that request ends
    local p = io.popen(("%s ctl %s eval 1 'return \"now\"' 2>&1; echo rc=$?")
                       :format(T.bin, sock))
    if model == "event" or model == "fork" then
      assert.equals("now", p:read("l"))
      assert.equals("rc=0", p:read("l"))
    end
    -- (the ctl process holds copies of the clients' sockets: shut down)
    for _, c in ipairs(held) do c.sock:shutdown("both") end
    if model == "sync" or model == "thread" then
      assert.equals("now", p:read("l"))
      assert.equals("rc=0", p:read("l"))
    end
    p:close()
  end)
end)


describe("luasrv ctl shared", function ()
  it("lists the dictionaries, a dictionary's keys and a key's value",
     function ()
    local dir = H.tmpdir()
    local sock = dir .. "/admin.sock"
    local srv = H.start{ args = { "--admin", sock, "--shared", "cache:64k",
                                  "--shared", "hits:16k" }, source = [[
local cache = require("luasrv").shared.cache
return { handle = function (req)
  req:read("l")
  cache:set("name", "a \"b\"\n")
  cache:set("n", 42)
  cache:set("pi", 3.5, 60)
  cache:set("yes", true)
  req:write("done\n")
end }]] }
    local c = srv:connect()
    c:settimeout(5)
    c:send("x\n")
    assert.equals("done", c:receive())
    c:close()
    local code, out = ctl(sock, "shared")
    assert.equals(0, code)
    local lines = H.lines(out)
    assert.matches("^NAME +BYTES +FREE +KEYS$", lines[1])
    assert.matches("^cache +%d+ +%d+ +4$", lines[2])
    assert.matches("^hits +%d+ +%d+ +0$", lines[3])
    code, out = ctl(sock, "shared", "cache")
    assert.equals(0, code)
    local keys = H.lines(out)
    table.sort(keys)
    assert.same({ '"n"', '"name"', '"pi"', '"yes"' }, keys)
    assert.equals('"a \\"b\\"\\010"\n', select(2, ctl(sock, "shared", "cache",
                                                       "name")))
    assert.equals("42\n", select(2, ctl(sock, "shared", "cache", "n")))
    assert.matches("^3%.5 %(expires in %d+%.%d+ s%)\n$",
                   select(2, ctl(sock, "shared", "cache", "pi")))
    assert.equals("true\n", select(2, ctl(sock, "shared", "cache", "yes")))
    local err
    code, _, err = ctl(sock, "shared", "cache", "nope")
    assert.equals(1, code)
    assert.equals("luasrv: error: cache: no such key\n", err)
    code, _, err = ctl(sock, "shared", "other")
    assert.equals(1, code)
    assert.matches("no dictionary 'other'", err, 1, true)
  end)
end)


describe("luasrv ctl", function ()
  it("a socket nobody serves: exit 1 and why; no command: usage, exit 2",
     function ()
    local code, _, err = ctl("/nonexistent/admin.sock", "status")
    assert.equals(1, code)
    assert.matches("cannot connect to /nonexistent/admin.sock", err, 1, true)
    code, _, err = T.run{ "ctl" }
    assert.equals(2, code)
    assert.matches("usage: luasrv ctl SOCKET COMMAND", err, 1, true)
  end)
end)


-- v1 or v2 answers each line; "slow" keeps the connection for a while
local function slow_versioned (version)
  return ([[
local luasrv = require "luasrv"
return { handle = function (req)
  for line in req:lines() do
    if line == "slow" then luasrv.sleep(1.5) end
    req:write(%q, " ", line, "\n")
  end
end }]]):format(version)
end

-- one connection at a time per worker, whatever the model
local ONE = { sync = {}, event = { "--max-connections", "1" },
              fork = { "--max-children", "1" }, thread = { "--max-threads", "1" } }

H.for_models(function (model)
  it("once reload has answered, no client goes to the old code, even to an "
     .. "old worker that has not yet run its stop signal", function ()
    local dir = H.tmpdir()
    local sock, script = dir .. "/admin.sock", dir .. "/handler.lua"
    writefile(script, slow_versioned("v1"))
    local args = { "--admin", sock }
    for _, a in ipairs(ONE[model]) do args[#args + 1] = a end
    local srv = H.start{ model = model, script = script, args = args }
    assert.equals("v1 x", ask(srv))
    local old = H.children(srv.pid)
    assert.equals(1, #old)
    -- the old worker is frozen: the master's SIGTERM waits for it
    assert(os.execute("kill -STOP " .. old[1]))
    H.defer(function () os.execute("kill -CONT " .. old[1] .. " 2>/dev/null") end)
    writefile(script, slow_versioned("v2"))
    local code, out, err = ctl(sock, "reload")
    assert.equals(0, code, err)
    assert.equals("reloaded " .. script .. ": 1 worker serves the new code\n",
                  out)
    -- the new worker is busy with a, so b waits in the listening queue
    local a = H.connect(srv, 10)
    assert(a:send("slow\n"))
    T.sleep(0.3)
    local b = H.connect(srv, 10)
    assert(b:send("x\n"))
    T.sleep(0.2)
    -- the old worker wakes with b queued and its stop signal to run
    assert(os.execute("kill -CONT " .. old[1]))
    assert.equals("v2 slow", a:receive())
    a:close()                   -- the new worker's one connection ends
    local line, e = b:receive()
    assert.equals("v2 x", line, tostring(e) .. "\n" .. srv:stderr())
  end)
end)
