--[[ spec/ngx_helper.lua: what the luasrv.ngx specs share.

  N.fixtures()     runs tools/ngx-fixtures once (OpenResty's drivers from
                   Debian's lua-nginx-* packages, Node's ws) and returns
                   the directory of the drivers' Lua files
  N.have(cmd)      cmd is on PATH
  N.daemon(cmd)    starts a shell command in the background (its output in
                   a log file), killed when the test ends; returns its pid
                   and the log's path
  N.wait_port(port [, secs])  until 127.0.0.1:port accepts TCP
  N.start(opts)    H.start with the drivers' path in the environment and
                   opts.body (the handler, run after require "luasrv.ngx")
  N.RUNNER         a handler that runs each line of Lua a client sends
                   (H.RUNNER after require "luasrv.ngx")
  N.ask(srv, body [, subst])  H.ask, with each key of subst replaced in
                   body by its value
]]
local H = require "helper"
local socket = require "socket"

local N = {}

local function sh_quote (s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
N.quote = sh_quote


local function abspath (p)
  local f = assert(io.popen("cd " .. sh_quote(p) .. " && pwd"))
  local out = f:read("l")
  f:close()
  return out
end


function N.fixtures ()
  if not N.lua then
    local dir = (os.getenv("BUILD") or "build") .. "/ngx"
    assert(os.execute("tools/ngx-fixtures " .. sh_quote(dir)) == true,
           "tools/ngx-fixtures failed")
    N.dir = abspath(dir)
    N.lua = N.dir .. "/lua"
    N.node_modules = N.dir .. "/node/node_modules"
  end
  return N.lua
end


function N.have (cmd)
  return os.execute("command -v " .. cmd .. " >/dev/null 2>&1") == true
end


-- NODE_PATH for Node's ws (tools/ngx-fixtures installs it with the rest)
function N.node_path ()
  N.fixtures()
  return N.node_modules
end


-- One redis-server for a spec file, started on first use (again if it
-- died): its port and pid. N.redis_stop() in the file's teardown.
local redis_port, redis_pid

function N.redis ()
  if not (redis_pid and
          os.execute("kill -0 " .. redis_pid .. " 2>/dev/null") == true) then
    redis_port, redis_pid = H.redis_server{ keep = true }
  end
  return redis_port, redis_pid
end

function N.redis_stop ()
  if redis_pid then H.kill(redis_pid) end
  redis_pid = nil
end


local logdir

function N.daemon (cmd)
  logdir = logdir or H.T.tmpdir()
  local log = logdir .. "/daemon." .. tostring(H.T.now()):gsub("%.", "") ..
              ".log"
  local f = assert(io.popen("exec " .. cmd .. " >" .. sh_quote(log) ..
                            " 2>&1 </dev/null & echo $!"))
  local pid = tonumber(f:read("l"))
  f:close()
  assert(pid, "could not start: " .. cmd)
  H.defer(function ()
    os.execute("kill -CONT " .. pid .. " 2>/dev/null; kill " .. pid ..
               " 2>/dev/null")
  end)
  return pid, log
end


function N.read (path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end


function N.wait_port (port, secs)
  local ok = H.eventually(function ()
    local s = socket.connect("127.0.0.1", port)
    if s then s:close() return true end
    return false
  end, secs or 5)
  assert(ok, "nothing listens on 127.0.0.1:" .. port)
end


N.HEAD = 'require "luasrv.ngx"\n'
N.RUNNER = N.HEAD .. H.RUNNER


function N.start (opts)
  local env = opts.env or {}
  env.LUASRV_NGX_PATH = N.fixtures()
  opts.env = env
  if opts.body then
    opts.source = N.HEAD .. opts.body
    opts.body = nil
  end
  return H.start(opts)
end


function N.ask (srv, body, subst)
  for k, v in pairs(subst or {}) do body = body:gsub(k, v) end
  return H.ask(srv, body)
end


return N
