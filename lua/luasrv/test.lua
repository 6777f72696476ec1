--[==[ luasrv.test: start the real luasrv binary from a busted spec and talk
to it over real sockets. Plain LuaSocket underneath; no lua-posix needed.
It does not wrap busted: use it from any spec, or from a plain Lua script.

A complete spec for a line echo handler (handler.lua):

  local T = require "luasrv.test"
  describe("echo handler", function ()
    local srv
    setup(function () srv = T.start{ script = "handler.lua", tcp = true } end)
    teardown(function () srv:stop() end)
    it("echoes a line", function ()
      local c = srv:connect()
      c:send("hello\n")
      assert.equals("hello", c:receive())
    end)
  end)

The API:

  local T = require "luasrv.test"

  T.bin          the binary: $LUASRV_BIN, else ./build/luasrv if it exists,
                 else "luasrv" on PATH. Assign to override.
  T.timeout      default client timeout in seconds (5).

  local srv = T.start{
    script = "handler.lua",       -- or: source = "return { handle = ... }"
    tcp = true,                   -- 127.0.0.1:0; n = n listeners; "ADDR";
                                  -- or a list of those
    tcp6 = true,                  -- [::1]:0
    udp = true, udp6 = true,      -- 127.0.0.1:0, [::1]:0
    unix = true,                  -- a fresh path in srv.dir; or "PATH"
    unixgram = true,              -- same
    model = "sync",               -- adds --model sync
    args = { "--timeout", "1" },  -- more options, appended as given
    wait = true,                  -- wait for every "listening on" line
    wait_timeout = 5,             -- for that long
    env = { NAME = "value" },     -- extra environment variables
    config = "luasrv.conf",       -- starts "luasrv --config FILE [SCRIPT]":
                                  -- no script needed, no listener added
    listeners = 2,                -- startup lines to wait for (default:
                                  -- the listener options, 1 with config)
  }
  With no listener at all, tcp = true is assumed. Listener options are
  passed in the order tcp, tcp6, udp, udp6, unix, unixgram, then args.
  A server that dies before it listens makes T.start raise with its stderr.

  srv.pid, srv.dir (temp dir, removed by stop), srv.script, srv.argv
  srv:ready([timeout])  after wait = false: wait for the startup lines;
                 true, or false and why
  srv.listeners  { {transport=, host=, port=, path=, address=}, ... } in
                 the order of the startup lines; address is the text after
                 "listening on "
  srv.tcp, srv.tcp6, srv.udp, srv.udp6, srv.unix, srv.unixgram
                 the first listener of each kind (tcp/udp: any family;
                 tcp6/udp6: IPv6 only)

  local c = srv:connect([kind | index | listener [, opts]])
                 kind: "tcp", "tcp6", "udp", "udp6", "unix", "unixgram";
                 default: the first listener. Raises if it cannot connect.
                 opts.bind = false: an unbound unixgram client (it cannot
                 get replies). Clients are closed by srv:stop().
    c:send(s)    stream: LuaSocket's send; datagram: one datagram
    c:receive([pattern | n])  LuaSocket semantics ("l" and "a" accepted
                 for "*l" and "*a"); default "*l" on streams, one datagram
                 (up to 65,536 bytes) on datagram clients. nil, err on
                 timeout or close (nil, err, partial if partial ~= "").
    c:settimeout(s), c:shutdown("send"), c:close()
    c.sock (the LuaSocket object), c.path (bound unixgram client path),
    c:getsockname()

  srv:stderr(), srv:stdout()     what the server wrote so far
  srv:wait_stderr(pattern [, timeout [, plain]])  true once it appears
  srv:signal("TERM"|"INT"|"HUP"|"KILL"|...)
  srv:wait([timeout])            exit code (128+N for signal N), or nil
  srv:alive()
  srv:stop([timeout])  SIGTERM, wait up to timeout (5 s), then SIGKILL
                 (to the whole process group); closes the clients; removes
                 srv.dir (srv:stderr() still works); returns the exit code;
                 safe to call twice. Also the __close metamethod:
                 local srv <close> = T.start{...}

  local code, out, err = T.run{ "--check", "{script}", source = "..." }
                 runs the binary to completion (killed after opts.timeout,
                 default 10 s: then code 124). "{script}" is replaced by the
                 script path; with script/source and no "{script}", the
                 script is the first argument.
  T.tmpdir()     a fresh temp directory, removed by T.cleanup() or
                 T.rmrf(dir)
  T.parse_address("tcp://[::1]:80")  the listener table srv.listeners holds
  T.cleanup()    stops every server still running, removes temp dirs
  T.sleep(s), T.now()            LuaSocket sleep, monotonic clock
]==]

local socket = require "socket"
local unix = require "socket.unix"

local T = { timeout = 5 }

local has_system, system = pcall(require, "system")


local function exists (path)
  return os.execute("test -e " .. "'" .. path:gsub("'", "'\\''") .. "'")
    == true
end


local function default_bin ()
  local env = os.getenv("LUASRV_BIN")
  if env and env ~= "" then return env end
  if exists("build/luasrv") then return "build/luasrv" end
  return "luasrv"
end

T.bin = default_bin()


function T.now ()
  if has_system and system.monotime then return system.monotime() end
  return socket.gettime()
end


function T.sleep (s)
  socket.sleep(s)
end


local function quote (s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end


local function readfile (path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end


local function writefile (path, s)
  local f = assert(io.open(path, "wb"))
  assert(f:write(s))
  f:close()
end


-- temp dirs live under $TMPDIR with a fixed prefix; rmrf refuses others
local tmproot = (os.getenv("TMPDIR") or "/tmp"):gsub("/+$", "")
local tmpdirs = {}


local function rmrf (dir)
  if dir and dir:find("/luasrv%-test%.[%w]+$") then
    os.execute("rm -rf " .. quote(dir))
  end
  tmpdirs[dir] = nil
end


function T.tmpdir ()
  local p = assert(io.popen("mktemp -d " .. quote(tmproot ..
    "/luasrv-test.XXXXXX")))
  local dir = p:read("l")
  p:close()
  assert(dir and dir ~= "", "mktemp -d failed")
  tmpdirs[dir] = true
  return dir
end


T.rmrf = rmrf


-- The shell wrapper: print our pid, close every inherited descriptor above
-- 2 (LuaSocket sockets are not close-on-exec: a server holding a copy of a
-- client socket would hide the client's close), then exec the command.
-- bash, because dash cannot close descriptors above 9.
local WRAP = [[
[ -n "$LUASRV_TEST_PID" ] && echo $$
for f in /proc/$$/fd/*; do
  n=${f##*/}
  if [ "$n" -gt 2 ] 2>/dev/null; then eval "exec $n>&-"; fi
done
out=$1 err=$2; shift 2
unset LUASRV_TEST_PID
exec "$@" >"$out" 2>"$err" </dev/null
]]


local function command (env, out, err, argv)
  local parts = { "exec env" }
  for k, v in pairs(env or {}) do
    parts[#parts + 1] = quote(k .. "=" .. v)
  end
  parts[#parts + 1] = "bash -c " .. quote(WRAP) .. " luasrv-test"
  parts[#parts + 1] = quote(out)
  parts[#parts + 1] = quote(err)
  for _, a in ipairs(argv) do parts[#parts + 1] = quote(a) end
  return table.concat(parts, " ")
end


local function has_setsid ()
  if T._setsid == nil then
    T._setsid = os.execute("command -v setsid >/dev/null 2>&1") == true
  end
  return T._setsid
end


-- "tcp://127.0.0.1:41234", "tcp://[::1]:41234", "unix:/p", "unixgram:/p"
local function parse_address (addr)
  local tr, host, port = addr:match("^(%a+)://%[(.-)%]:(%d+)$")
  if not tr then tr, host, port = addr:match("^(%a+)://([^/]-):(%d+)$") end
  if tr then
    return { transport = tr, host = host, port = tonumber(port),
             address = addr }
  end
  local kind, path = addr:match("^(unixgram):(.*)$")
  if not kind then kind, path = addr:match("^(unix):(.*)$") end
  if kind then return { transport = kind, path = path, address = addr } end
  return { transport = "?", address = addr }
end

T.parse_address = parse_address


local function listening_lines (s)
  local t = {}
  for line in s:gmatch("[^\n]+") do
    local a = line:match("^luasrv: listening on (.+)$")
    -- "tcp://0.0.0.0:80 (every IPv4 interface)": the address alone
    a = a and (a:match("^(.-) %(every IPv[46] interface%)$") or a)
    if a then t[#t + 1] = a end
  end
  return t
end


local LISTENER_OPTS = { ["--tcp"] = true, ["--udp"] = true, ["--tls"] = true,
                        ["--unix"] = true, ["--unixgram"] = true }


--[[ Client ]]

local Client = {}
Client.__index = Client

local patterns = { l = "*l", a = "*a" }


function Client:send (s)
  return self.sock:send(s)
end


-- LuaSocket's nil, err, partial, with partial left out when it is ""
local function received (data, err, partial)
  if data then return data end
  if partial and partial ~= "" then return nil, err, partial end
  return nil, err
end


function Client:receive (p)
  if self.dgram then return received(self.sock:receive(p or 65536)) end
  return received(self.sock:receive(patterns[p] or p or "*l"))
end


function Client:settimeout (s)
  return self.sock:settimeout(s)
end


function Client:shutdown (how)
  return self.sock:shutdown(how or "both")
end


function Client:getsockname ()
  return self.sock:getsockname()
end


function Client:close ()
  if self.closed then return true end
  self.closed = true
  self.sock:close()
  if self.path then os.remove(self.path) end
  return true
end


local function new_client (srv, l, opts)
  opts = opts or {}
  local tr = l.transport
  local sock, ok, err
  local c = setmetatable({ transport = tr, listener = l }, Client)
  if tr == "tls" then tr = "tcp" end  -- the bytes only: the spec speaks TLS
  if tr == "tcp" or tr == "udp" then
    local v6 = l.host:find(":", 1, true)
    sock = assert((tr == "tcp" and (v6 and socket.tcp6 or socket.tcp)
      or (v6 and socket.udp6 or socket.udp))())
    sock:settimeout(opts.timeout or T.timeout)
    if tr == "tcp" then
      ok, err = sock:connect(l.host, l.port)
    else
      c.dgram = true
      ok, err = sock:setpeername(l.host, l.port)
    end
  elseif tr == "unix" then
    sock = assert(unix.stream())
    sock:settimeout(opts.timeout or T.timeout)
    ok, err = sock:connect(l.path)
  elseif tr == "unixgram" then
    sock = assert(unix.dgram())
    sock:settimeout(opts.timeout or T.timeout)
    c.dgram = true
    if opts.bind ~= false then
      srv.nclients = (srv.nclients or 0) + 1
      c.path = srv.dir .. "/client" .. srv.nclients .. ".sock"
      ok, err = sock:bind(c.path)
      if not ok then
        sock:close()
        error("cannot bind " .. c.path .. ": " .. tostring(err), 3)
      end
    end
    ok, err = sock:connect(l.path)
  else
    error("cannot connect to " .. tostring(l.address), 3)
  end
  c.sock = sock
  if not ok then
    c:close()
    error("cannot connect to " .. l.address .. ": " .. tostring(err), 3)
  end
  srv.clients[#srv.clients + 1] = c
  return c
end


--[[ Server ]]

local Server = {}
Server.__index = Server
local servers = {}     -- every server not yet stopped, for T.cleanup()


local function proc_state (pid)
  local f = io.open("/proc/" .. pid .. "/stat", "r")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s:match("%)%s+(%a)")
end


-- after stop, the files are gone with srv.dir: stop keeps their contents
function Server:stderr ()
  return self.errtext or readfile(self.errpath)
end


function Server:stdout ()
  return self.outtext or readfile(self.outpath)
end


-- true while the process runs (it is neither reaped nor a zombie)
function Server:alive ()
  if self.code then return false end
  local st = proc_state(self.pid)
  return st ~= nil and st ~= "Z" and st ~= "X"
end


function Server:wait_stderr (pattern, timeout, plain)
  local deadline = T.now() + (timeout or 5)
  while true do
    if self:stderr():find(pattern, 1, plain) then return true end
    if T.now() >= deadline then return false end
    if not self:alive() then     -- last chance: it may have just written
      return self:stderr():find(pattern, 1, plain) ~= nil
    end
    socket.sleep(0.01)
  end
end


function Server:signal (name)
  if not self:alive() then return false end
  name = tostring(name):gsub("^SIG", "")
  return os.execute("kill -s " .. name .. " " .. self.pid ..
    " 2>/dev/null") == true
end


local function reap (self)
  if not self.code then
    local _, how, n = self.proc:close()
    self.code = how == "signal" and 128 + n or n
  end
  return self.code
end


-- polls until the process is a zombie; false on timeout
local function wait_zombie (self, timeout)
  local deadline = T.now() + timeout
  while self:alive() do
    if T.now() >= deadline then return false end
    socket.sleep(0.01)
  end
  return true
end


function Server:wait (timeout)
  if self.code then return self.code end
  if not wait_zombie(self, timeout or 5) then return nil end
  return reap(self)
end


function Server:stop (timeout)
  if self.stopped then return self.code end
  self.stopped = true
  for _, c in ipairs(self.clients) do c:close() end
  if not self.code then
    if self:alive() then
      self:signal("TERM")
      if not wait_zombie(self, timeout or 5) then
        self:signal("KILL")
        wait_zombie(self, 5)
      end
    end
    -- leftover children (fork model): the zombie still holds the group
    if self.setsid then
      os.execute("kill -s KILL -- -" .. self.pid .. " 2>/dev/null")
    end
    reap(self)
  end
  servers[self] = nil
  self.errtext, self.outtext = readfile(self.errpath), readfile(self.outpath)
  rmrf(self.dir)
  return self.code
end

Server.__close = function (self) self:stop() end


local function add_listeners (argv, opt, value, default)
  if value == nil or value == false then return end
  local list = type(value) == "table" and value or { value }
  for _, v in ipairs(list) do
    if v == true then v = 1 end
    if math.type(v) == "integer" then
      for _ = 1, v do
        argv[#argv + 1] = opt
        argv[#argv + 1] = default()
      end
    else
      argv[#argv + 1] = opt
      argv[#argv + 1] = tostring(v)
    end
  end
end


local function expected_listeners (argv)
  local n = 0
  for _, a in ipairs(argv) do
    if LISTENER_OPTS[a] or LISTENER_OPTS[a:match("^(%-%-%w+)=") or ""] then
      n = n + 1
    end
  end
  return n
end


local function collect (srv, addrs)
  srv.listeners = {}
  for i, a in ipairs(addrs) do
    local l = parse_address(a)
    srv.listeners[i] = l
    local tr = l.transport
    srv[tr] = srv[tr] or l
    if l.host and l.host:find(":", 1, true) then
      srv[tr .. "6"] = srv[tr .. "6"] or l
    end
  end
end


-- Waits until n listening lines are on stderr; true, or false and why.
function Server:ready (timeout, n)
  n = n or self.nlisteners
  local deadline = T.now() + (timeout or 5)
  while true do
    local addrs = listening_lines(self:stderr())
    if #addrs >= n then collect(self, addrs); return true end
    if not self:alive() then
      return false, "luasrv exited (" .. tostring(self:wait(1)) ..
        ") before listening"
    end
    if T.now() >= deadline then
      return false, "luasrv did not print " .. n .. " listening line(s)"
    end
    socket.sleep(0.01)
  end
end


function Server:connect (which, opts)
  local l = which
  if which == nil then l = self.listeners[1]
  elseif type(which) == "number" then l = self.listeners[which]
  elseif type(which) == "string" then l = self[which] end
  if type(l) ~= "table" then
    error("no listener " .. tostring(which), 2)
  end
  return new_client(self, l, opts)
end


function T.start (opts)
  opts = opts or {}
  local dir = T.tmpdir()
  local srv = setmetatable({ dir = dir, clients = {}, listeners = {},
    errpath = dir .. "/stderr", outpath = dir .. "/stdout" }, Server)
  if opts.source then
    srv.script = dir .. "/handler.lua"
    writefile(srv.script, opts.source)
  else
    srv.script = opts.script
    if not srv.script and not opts.config then
      rmrf(dir); error("T.start: no script", 2)
    end
  end
  local argv = { T.bin, srv.script }
  if opts.config then argv = { T.bin, "--config", opts.config, srv.script } end
  local nu, ng = 0, 0
  add_listeners(argv, "--tcp", opts.tcp, function () return "127.0.0.1:0" end)
  add_listeners(argv, "--tcp", opts.tcp6, function () return "[::1]:0" end)
  add_listeners(argv, "--udp", opts.udp, function () return "127.0.0.1:0" end)
  add_listeners(argv, "--udp", opts.udp6, function () return "[::1]:0" end)
  add_listeners(argv, "--unix", opts.unix, function ()
    nu = nu + 1; return dir .. "/s" .. nu .. ".sock" end)
  add_listeners(argv, "--unixgram", opts.unixgram, function ()
    ng = ng + 1; return dir .. "/g" .. ng .. ".sock" end)
  if opts.model then
    argv[#argv + 1] = "--model"; argv[#argv + 1] = opts.model
  end
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = tostring(a) end
  if expected_listeners(argv) == 0 and not opts.config then
    table.insert(argv, 3, "--tcp"); table.insert(argv, 4, "127.0.0.1:0")
  end
  srv.argv = argv
  srv.nlisteners = opts.listeners or
    math.max(expected_listeners(argv), opts.config and 1 or 0)
  srv.setsid = has_setsid()
  if srv.setsid then table.insert(argv, 1, "setsid") end
  local env = { LUASRV_TEST_PID = "1" }
  for k, v in pairs(opts.env or {}) do env[k] = v end
  srv.proc = assert(io.popen(command(env, srv.outpath, srv.errpath, argv)))
  srv.pid = tonumber(srv.proc:read("l"))
  if not srv.pid then
    srv.proc:close(); rmrf(dir)
    error("T.start: could not start " .. T.bin, 2)
  end
  servers[srv] = true
  if opts.wait ~= false then
    local ok, why = srv:ready(opts.wait_timeout or 5)
    if not ok then
      local err = srv:stderr()
      srv:stop()
      error(why .. "\n" .. table.concat(argv, " ") .. "\nstderr:\n" .. err, 2)
    end
  end
  return srv
end


function T.run (opts)
  local dir = T.tmpdir()
  local script = opts.script
  if opts.source then
    script = dir .. "/handler.lua"
    writefile(script, opts.source)
  end
  local argv = { "timeout", "-k", "2", tostring(opts.timeout or 10), T.bin }
  local placed = false
  for _, a in ipairs(opts) do
    if a == "{script}" then a = assert(script, "no script"); placed = true end
    argv[#argv + 1] = tostring(a)
  end
  if script and not placed then table.insert(argv, 6, script) end
  local out, err = dir .. "/stdout", dir .. "/stderr"
  local _, how, n = os.execute(command(opts.env, out, err, argv))
  local code = how == "signal" and 128 + n or n
  local o, e = readfile(out), readfile(err)
  rmrf(dir)
  return code, o, e, script
end


function T.cleanup ()
  local list = {}
  for s in pairs(servers) do list[#list + 1] = s end
  for _, s in ipairs(list) do s:stop() end
  local dirs = {}
  for d in pairs(tmpdirs) do dirs[#dirs + 1] = d end
  for _, d in ipairs(dirs) do rmrf(d) end
end


return T
