--[[ spec/helper.lua: what the project's specs share on top of luasrv.test.
Set as busted's helper in .busted, so it runs once before every spec file;
it registers itself as package.loaded.helper, so `require "helper"` in a
spec returns this same table.

  H.T              luasrv.test
  H.models         models to run the model-independent specs under:
                   $LUASRV_MODELS ("sync,event"), default { "sync" }
  H.model          the first of them: what H.start uses unless told
  H.scale          $LUASRV_TIME_SCALE (default 1): multiplies the upper
                   bounds of "it exits at once" checks, for slow builds
                   (ASan)
  H.for_models(fn) describe("model M", fn(M)) for each model
  H.fixture(name)  path of spec/fixtures/NAME
  H.start(opts)    T.start with opts.model defaulted, stopped when the
                   test ends (call it inside an `it`)
  H.connect(srv[, secs])  srv:connect(), closed when the test ends; with
                   secs, its timeout is secs * H.scale
  H.defer(fn)      run fn when the current test ends, pass or fail
  H.tmpdir()       T.tmpdir(), removed when the current test ends
  H.with_server(opts, fn)  start, fn(srv), always stop
  H.SER            Lua source defining `ser(...)`: handler scripts write
                   ser(values) back, the spec reads them with H.unser
  H.unser(s)       table.pack of the values ser wrote
  H.RUNNER         handler source: runs the line of Lua a client sends as
                   the body of function(req, luasrv, URL) (URL: $UPSTREAM)
                   and writes its results back with ser
  H.ask(srv, body) sends body (one line) to a RUNNER server, returns its
                   results, packed (H.unser)
  H.versioned(v)   handler source: answers every line with "V LINE" for as
                   long as the client stays (which code serves, in reloads)
  H.ask_line(srv, line[, secs])  sends line on a new connection, returns
                   the line it gets back (or nil, err after secs, default 3,
                   times H.scale)
  H.resp_command(...)  a RESP request (an array of bulk strings) from words
  H.lines(s), H.count(s, pattern, plain), H.error_lines(s)
  H.exists(path), H.is_socket(path)
  H.elapsed(fn, ...)  seconds fn took, then its results
  H.free_port(), H.children(pid), H.eventually(fn, secs)
  H.output(cmd)    a shell command's output, its standard error with it
                   (unless cmd redirects that itself)
  H.http_get(port, path)  status code and body of GET PATH on 127.0.0.1:PORT
                   (curl, 5 s at most; code 0 when nothing answered)
  H.redis_server([opts])  Debian's redis-server on a free loopback port, no
                   persistence, accepting: its port and pid. opts.tls =
                   DIR: TLS only, with DIR's server.pem/.key and ca.pem
                   (tls_certs), no client certificates asked for. Stopped
                   when the test ends; with opts.keep, by H.kill(pid)
  H.kill(pid)      stops a process the spec started (SIGCONT, SIGTERM)
  H.write_file(path, s), H.read_file(path)  a whole file, as bytes
  H.try_read_file(path)  the same, or nil if it cannot be opened
  H.ROOT           the repository root (where busted runs)
  H.quote(s)       s quoted for sh
]]

local T = require "luasrv.test"

local H = { T = T }

-- busted's describe lives in the spec files' environment, not in this
-- file's: fetch it from busted's api when called
local function busted_fn (name)
  local f = rawget(_G, name)
  if f then return f end
  return require("busted")[name]
end


-- cleanups run when the current test ends, pass or fail (busted's own
-- `finally` keeps only the last function given in a test)
local deferred = {}

function H.defer (fn)
  deferred[#deferred + 1] = fn
end

local function run_deferred ()
  local list = deferred
  deferred = {}
  for i = #list, 1, -1 do pcall(list[i]) end
end

function H.tmpdir ()
  local dir = T.tmpdir()
  H.defer(function () T.rmrf(dir) end)
  return dir
end

local function split (s, sep)
  local t = {}
  for w in s:gmatch("[^" .. sep .. "]+") do t[#t + 1] = w end
  return t
end

H.models = split(os.getenv("LUASRV_MODELS") or "sync", ", ")
H.model = H.models[1]
H.fixtures = "spec/fixtures/"
H.scale = tonumber(os.getenv("LUASRV_TIME_SCALE")) or 1


function H.fixture (name)
  return H.fixtures .. name
end


function H.for_models (fn)
  for _, m in ipairs(H.models) do
    busted_fn("describe")("model " .. m, function () fn(m) end)
  end
end


function H.start (opts)
  opts = opts or {}
  if opts.model == nil then opts.model = H.model end
  local srv = T.start(opts)
  H.defer(function () srv:stop() end)
  return srv
end


function H.connect (srv, secs)
  local c = srv:connect()
  H.defer(function () c:close() end)
  if secs then c:settimeout(secs * H.scale) end
  return c
end


function H.with_server (opts, fn)
  if opts.model == nil then opts.model = H.model end
  local srv = T.start(opts)
  local ok, err = pcall(fn, srv)
  srv:stop()
  if not ok then error(err, 0) end
  return srv
end


H.SER = [[
local function ser (...)
  local t, out = table.pack(...), {}
  for i = 1, t.n do
    local v = t[i]
    out[i] = type(v) == "string" and string.format("%q", v) or tostring(v)
  end
  return "return " .. table.concat(out, ", ")
end
]]


function H.unser (s)
  assert(type(s) == "string", "no reply")
  local f = assert(load(s, "=reply", "t", {}))
  return table.pack(f())
end


-- the client sends a line of Lua, the body of function(req, luasrv, URL)
-- with URL = $UPSTREAM; its results are written back with ser
H.RUNNER = H.SER .. [[
local luasrv = require "luasrv"
return { handle = function (req)
  local body = req:read("l")
  local f = assert(load("local req, luasrv, URL = ... " .. body))
  req:write(ser(f(req, luasrv, os.getenv("UPSTREAM"))), "\n")
end }
]]


-- runs body in a request of srv (a RUNNER); returns its results, packed
function H.ask (srv, body)
  local c = srv:connect()
  assert(c:send(body:gsub("\n", " ") .. "\n"))
  local line, err = c:receive("l")
  c:close()
  assert(line, "no reply: " .. tostring(err) .. "\n" .. srv:stderr())
  return H.unser(line)
end


function H.versioned (version)
  return ([[
return { handle = function (req)
  for line in req:lines() do req:write(%q, " ", line, "\n") end
end }]]):format(version)
end


function H.ask_line (srv, line, secs)
  local c = srv:connect()
  c:settimeout((secs or 3) * H.scale)
  c:send(line .. "\n")
  local r, err = c:receive()
  c:close()
  return r, err
end


function H.resp_command (...)
  local t = { "*" .. select("#", ...) .. "\r\n" }
  for _, w in ipairs({ ... }) do
    t[#t + 1] = "$" .. #w .. "\r\n" .. w .. "\r\n"
  end
  return table.concat(t)
end


function H.lines (s)
  local t = {}
  for line in s:gmatch("[^\n]+") do t[#t + 1] = line end
  return t
end


function H.count (s, pattern, plain)
  local n, i = 0, 1
  while true do
    local a, b = s:find(pattern, i, plain)
    if not a then return n end
    n, i = n + 1, math.max(b + 1, a + 1)
  end
end


function H.error_lines (s)
  local t = {}
  for _, line in ipairs(H.lines(s)) do
    if line:find("^luasrv: error: ") then t[#t + 1] = line end
  end
  return t
end


local function test (flag, path)
  return os.execute("test " .. flag .. " '" .. path:gsub("'", "'\\''") ..
    "'") == true
end

function H.exists (path) return test("-e", path) end
function H.is_socket (path) return test("-S", path) end


-- a TCP port on 127.0.0.1 that was free a moment ago
-- A port no one listens on, below the kernel's range for outgoing
-- connections: a port the kernel picked for a bind to port 0 and freed
-- may be taken at once as the source port of some client's connection
-- (the parallel spec processes make many), and then the server's bind
-- fails with "Address already in use".
local function ephemeral_low ()
  local f = io.open("/proc/sys/net/ipv4/ip_local_port_range")
  local low = f and tonumber(f:read("n"))
  if f then f:close() end
  return low or 32768
end

function H.free_port ()
  local socket = require "socket"
  local low = ephemeral_low()
  if low > 11000 then
    for _ = 1, 50 do
      local port = math.random(10000, low - 1)
      local s = socket.tcp()
      if s:bind("127.0.0.1", port) then
        s:close()
        return port
      end
      s:close()
    end
  end
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end


function H.http_get (port, path)
  local p = io.popen(("curl -s --max-time 5 -w '\\n%%{http_code}' "
                      .. "http://127.0.0.1:%d%s"):format(port, path))
  local out = p:read("a")
  p:close()
  local body, code = out:match("^(.*)\n(%d+)$")
  return tonumber(code), body
end


-- the pids whose parent is pid (a master's workers), sorted, from /proc
function H.children (pid)
  local kids = {}
  local p = io.popen("cat /proc/[0-9]*/stat 2>/dev/null")
  for line in p:lines() do
    -- "PID (COMM) STATE PPID ...": COMM may hold spaces and parens
    local cpid, ppid = line:match("^(%d+) %(.*%) %a (%d+) ")
    if cpid and tonumber(ppid) == pid then kids[#kids + 1] = tonumber(cpid) end
  end
  p:close()
  table.sort(kids)
  return kids
end


-- polls fn() until it returns a true value, for up to secs * H.scale;
-- returns its last value
function H.eventually (fn, secs)
  local deadline = T.now() + secs * H.scale
  repeat
    local v = fn()
    if v then return v end
    T.sleep(0.05)
  until T.now() > deadline
  return fn()
end


function H.write_file (path, s)
  local f = assert(io.open(path, "wb"))
  assert(f:write(s))
  f:close()
end


function H.read_file (path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end


function H.output (cmd)
  local p = io.popen(cmd:find("2>", 1, true) and cmd or cmd .. " 2>&1")
  local out = p:read("a")
  p:close()
  return out
end


function H.try_read_file (path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end


H.ROOT = io.popen("pwd"):read("l")


function H.quote (s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end


function H.kill (pid)
  os.execute(("kill -CONT %d 2>/dev/null; kill %d 2>/dev/null"):format(pid, pid))
end


function H.redis_server (opts)
  opts = opts or {}
  local port, d = H.free_port(), opts.tls
  local args = d and ("--port 0 --tls-port %d --tls-cert-file %s/server.pem " ..
    "--tls-key-file %s/server.key --tls-ca-cert-file %s/ca.pem " ..
    "--tls-auth-clients no --dir %s"):format(port, d, d, d, d)
    or ("--port %d"):format(port)
  local f = assert(io.popen("exec redis-server --bind 127.0.0.1 " .. args ..
    " --save '' --appendonly no >/dev/null 2>&1 </dev/null & echo $!"))
  local pid = assert(tonumber(f:read("l")), "could not start redis-server")
  f:close()
  if not opts.keep then H.defer(function () H.kill(pid) end) end
  local socket = require "socket"
  local up = H.eventually(function ()
    local c = socket.connect("127.0.0.1", port)
    if c then c:close() end
    return c ~= nil
  end, 5)
  if not up then
    H.kill(pid)
    error("redis-server did not start on 127.0.0.1:" .. port)
  end
  return port, pid
end


function H.elapsed (fn, ...)
  local t0 = T.now()
  local r = table.pack(fn(...))
  return T.now() - t0, table.unpack(r, 1, r.n)
end


-- run the cleanups at the end of each test; stop whatever is left running
-- when the suite ends
local ok, busted = pcall(require, "busted")
if ok and type(busted) == "table" and busted.subscribe then
  busted.subscribe({ "test", "end" }, function ()
    run_deferred()
    return nil, true
  end)
  busted.subscribe({ "suite", "end" }, function ()
    run_deferred()
    T.cleanup()
    return nil, true
  end)
end

package.loaded.helper = H
return H
