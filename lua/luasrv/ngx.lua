--[==[ luasrv.ngx -- enough of OpenResty's `ngx` API, on luasrv's own
primitives, for OpenResty's pure-Lua drivers (lua-resty-redis, -memcached,
-dns, -websocket) to run unmodified in luasrv handlers.

  require "luasrv.ngx"                  -- installs the global `ngx`
  local redis = require "resty.redis"   -- or Debian's name, "nginx.redis"

What it maps onto:
  ngx.socket.tcp/udp     luasrv.connect connections (the same keep-alive
                         pool, the same waits: the event model yields,
                         the others block the request); the tcp object
                         is luasrv.ngxc's, in C (src/lngxsock.c)
  ngx.sleep              luasrv.sleep
  ngx.thread.*           luasrv.spawn / wait / kill
  ngx.shared.DICT        luasrv.shared.DICT (--shared NAME:SIZE)
  ngx.re.*               PCRE2, through lua-rex-pcre2
  digests, base64, now   luasrv.ngxc (C, OpenSSL's libcrypto)

It also installs what the drivers require from LuaJIT and Lua 5.1: the
modules "bit", "table.new", "table.clear", a "ffi" that only makes char
buffers, and a global `unpack`. A package searcher finds `resty.X` and
`nginx.X` in /usr/share/lua/5.1 (where Debian's lua-nginx-* packages put
them), in $LUASRV_NGX_PATH (directories separated by `:`) and in
/usr/local/openresty/lualib; the two names give the same module.

A name of ngx that is not provided raises "ngx.NAME is not supported by
luasrv" instead of reading as nil. doc/ngx.md lists every name.
]==]

local luasrv = require "luasrv"
local C = require "luasrv.ngxc"
local join = C.join

local byte, char, find, format, sub, gsub, lower, rep =
  string.byte, string.char, string.find, string.format, string.sub,
  string.gsub, string.lower, string.rep
local concat, unpack = table.concat, table.unpack
local mtype, floor = math.type, math.floor
local getinfo, getlocal, dgetmt = debug.getinfo, debug.getlocal,
  debug.getmetatable

if type(rawget(_G, "ngx")) == "table" and rawget(rawget(_G, "ngx"), "luasrv") then
  return rawget(_G, "ngx")  -- installed already in this state
end


-- t raises for a name it lacks: "PREFIXNAME is not supported by luasrv"
local function strict (t, prefix)
  return setmetatable(t, { __index = function (_, k)
    error(prefix .. tostring(k) .. " is not supported by luasrv", 2)
  end })
end

local function not_yet (name)
  return function ()
    error(name .. " is not supported by luasrv yet", 2)
  end
end

local ngx = {}


--[==[ {====================================================== the request

ngx.ctx, ngx.worker.id and the threads need the request that runs the
calling code. luasrv does not name it to Lua, but every request's code
runs below a hook called with the request (handle(req), setup(req),
finish(req)), and a thread spawned by ngx.thread.spawn below a function
given the request: the outermost frame of the running coroutine whose
first argument is a luasrv request (a luasrv.conn with a server) is the
one.
]==]
local function is_req (v)
  if type(v) ~= "userdata" then return false end
  local mt = dgetmt(v)
  return mt ~= nil and mt.__name == "luasrv.conn" and v.server ~= nil
end

local MAX_DEPTH = 250

local function current_req ()
  local found
  for level = 3, MAX_DEPTH do
    local info = getinfo(level, "u")
    if not info then break end
    if info.nparams and info.nparams >= 1 then
      local _, v = getlocal(level, 1)
      if is_req(v) then found = v end
    end
  end
  return found
end

-- outside a request, ngx.ctx is one table for the Lua state
local state_ctx = {}
local CTX_FIELD = "luasrv_ngx_ctx"

local function get_ctx ()
  local req = current_req()
  if not req then return state_ctx end
  local ctx = req[CTX_FIELD]
  if ctx == nil then
    ctx = {}
    req[CTX_FIELD] = ctx
  end
  return ctx
end

local function set_ctx (t)
  if type(t) ~= "table" then
    error("ngx.ctx must be a table", 3)
  end
  local req = current_req()
  if req then req[CTX_FIELD] = t else state_ctx = t end
end

-- }======================================================


-- {====================================================== sockets

local RECV_CHUNK = 65536

-- ms (nil, 0 = luasrv's --timeout) -> seconds for conn:settimeout
local function secs (ms)
  if not ms or ms <= 0 then return nil end
  return ms / 1000
end

--[[ A timeout argument as ngx reads it (lua_tonumber): a number, or a
string of one; anything else is 0, the default, without an error (a
driver that passes the wrong argument gets the default timeout in
OpenResty, so it does here). Returns ms, or false for the default.
]]
local function check_ms (ms, n, fname)
  ms = tonumber(ms)
  if ms and ms >= 2^31 then
    error(format("bad argument #%d to '%s' (bad timeout value)", n, fname), 3)
  end
  return ms and ms > 0 and ms or false
end

-- the text of a value ngx sends: LuaJIT's number format, ngx's booleans
local function piece (v, fname)
  local tv = type(v)
  if tv == "string" then return v end
  if tv == "number" then
    if mtype(v) == "float" and v == floor(v) and v > -2^53 and v < 2^53 then
      return format("%d", v)
    end
    return mtype(v) == "float" and format("%.14g", v) or tostring(v)
  end
  if tv == "boolean" then return v and "true" or "false" end
  if v == C.null then return "null" end
  error(format("bad argument #1 to '%s' (bad data type %s found)", fname, tv),
        4)
end

local function flatten (t, out, fname, depth)
  if depth > 100 then error("send: table nested too deep", 4) end
  for i = 1, #t do
    local v = t[i]
    if type(v) == "table" then flatten(v, out, fname, depth + 1)
    else out[#out + 1] = piece(v, fname) end
  end
end

local function data_of (data, fname)
  if type(data) == "string" then return data end
  if type(data) == "table" then
    -- the common case, an array of strings and integers (a driver's
    -- request), is joined in C
    local s = join(data)
    if s then return s end
    local out = {}
    flatten(data, out, fname, 1)
    return concat(out)
  end
  if data == nil then
    error(format("bad argument #1 to '%s' (string, number, boolean, nil, " ..
                 "or array table expected, got nil)", fname), 3)
  end
  return piece(data, fname)
end

-- ngx's error texts are lower case ("connection refused")
local function errtext (err)
  if err == nil then return "closed" end
  return lower(err)
end

--[[ ngx.socket.tcp's object is luasrv.ngxc's (src/lngxsock.c): connect,
send, receive, receiveany, settimeout(s), setkeepalive, getreusedtimes
and close are C methods on the connection, its reads cut from the
connection's own buffer. The methods a driver calls rarely are here.
]]
local tcp = C.tcp_methods

C.sock_format(function (data) return data_of(data, "send") end)


--[[ tcpsock:sslhandshake(reused_session, server_name, ssl_verify,
send_status_req) on conn:starttls. As in OpenResty, the certificate is
verified only when ssl_verify is true: against the PEM file
$LUASRV_NGX_SSL_TRUSTED_CERTIFICATE names (lua_ssl_trusted_certificate's
part), else the system's CA store, and against server_name (default: the
host given to connect). server_name is also the SNI sent. luasrv resumes
sessions by itself, so reused_session changes nothing and the session
returned is a token; send_status_req (OCSP) is ignored. A socket that is
TLS already (one taken from the pool) succeeds at once.
]]
local TRUSTED = os.getenv("LUASRV_NGX_SSL_TRUSTED_CERTIFICATE")
if TRUSTED == "" then TRUSTED = nil end
local SESSION_MT = { __name = "ngx.ssl.session",
                     __tostring = function () return "ngx.ssl.session" end }
local TLS_OPTS = {}
local sock_state, sock_drop, scan = C.sock_state, C.sock_drop, C.scan

function tcp:sslhandshake (reused, name, verify)
  if name ~= nil and type(name) ~= "string" then
    error("bad argument #2 to 'sslhandshake' (string expected, got " ..
          type(name) .. ")", 2)
  end
  local c, ct, req = sock_state(self)
  if not c then return nil, "closed" end
  if req then return nil, "not supported on the request's socket" end
  if not c.tls then
    -- conn:starttls reads its options before it waits: one table will do
    TLS_OPTS.verify, TLS_OPTS.sni = verify and true or false, name
    TLS_OPTS.ca = verify and TRUSTED or nil
    c:settimeout(secs(ct or nil))
    local ok, err = c:starttls(TLS_OPTS)
    if not ok then
      sock_drop(self)  -- closed by the failure
      return nil, errtext(err)
    end
  end
  if reused == false then return true end
  return setmetatable({}, SESSION_MT)
end


--[[ tcpsock:receiveuntil(pattern [, { inclusive = true }]) -> iterator.
iterator() returns the bytes up to the next occurrence of pattern and
drops the pattern (keeps it with inclusive); iterator(size) returns them
size bytes at a time, then nil once the pattern is reached. A failure
returns nil, err, the bytes received before it. The search is
luasrv.ngxc.scan's, on the connection's buffer.
]]
function tcp:receiveuntil (pattern, opts)
  if type(pattern) ~= "string" or pattern == "" then
    error("bad argument #1 to 'receiveuntil' (pattern is empty)", 2)
  end
  local inclusive = type(opts) == "table" and opts.inclusive and true
  local reached = false  -- sized reads: the last chunk was returned
  return function (size)
    if size ~= nil then
      size = tonumber(size)
      if not size or size < 1 then
        error("bad argument #1 to iterator (bad size)", 2)
      end
      size = floor(size)
    end
    if reached then
      reached = false
      return nil
    end
    local data, hit, partial = scan(self, pattern, inclusive, size)
    if not data then return nil, hit, partial end
    if size and hit then
      if data == "" then return nil end
      reached = true
    end
    return data
  end
end


function tcp:setoption ()
  return nil, "setoption is not supported by luasrv"
end


--[[ A socket's methods, in a table of their own: a driver calls one for
every read and write, and an __index that is a table costs no Lua call.
A name the table lacks raises "PREFIXNAME is not supported by luasrv".
]]
local function methods (mt, prefix)
  local t = {}
  for k, v in pairs(mt) do
    if sub(k, 1, 2) ~= "__" then t[k] = v end
  end
  return strict(t, prefix)
end

strict(tcp, "tcpsock:")


-- UDP: a connected luasrv udp:// socket; one send, one datagram
local udp = {}

local function new_udp ()
  return setmetatable({ c = false, rt = false }, udp)
end


function udp:setpeername (host, port)
  if type(host) ~= "string" then
    error("bad argument #1 to 'setpeername' (string expected)", 2)
  end
  if sub(host, 1, 5) == "unix:" then
    return nil, "unix datagram sockets are not supported by luasrv"
  end
  local p = tonumber(port)
  if not p or p ~= floor(p) or p < 0 or p > 65535 then
    error("bad argument #2 to 'setpeername' (bad port number)", 2)
  end
  local h = host
  if find(h, ":", 1, true) and byte(h, 1) ~= 91 then h = "[" .. h .. "]" end
  if self.c then self.c:close(); self.c = false end
  local c, err = luasrv.connect("udp://" .. h .. ":" .. floor(p),
                                { timeout = secs(self.rt or nil) })
  if not c then return nil, errtext(err) end
  self.c = c
  c:settimeout(secs(self.rt or nil))
  return 1
end


function udp:send (data)
  local s = data_of(data, "send")
  local c = self.c
  if not c then return nil, "closed" end
  local ok, err = c:write(s)
  if ok then ok, err = c:flush() end
  if not ok then return nil, errtext(err) end
  return 1
end


-- udpsock:receive([size]): one datagram, cut to size (default 8192)
function udp:receive (size)
  local n = size == nil and 8192 or tonumber(size)
  if not n or n < 0 then
    error("bad argument #1 to 'receive' (bad size)", 2)
  end
  local c = self.c
  if not c then return nil, "closed" end
  local d, err = c:recv(RECV_CHUNK)
  if not d then
    if err == nil then return "" end  -- an empty datagram
    return nil, errtext(err)
  end
  if #d > n then d = sub(d, 1, floor(n)) end
  return d
end


function udp:settimeout (ms)
  self.rt = check_ms(ms, 1, "settimeout")
  if self.c then self.c:settimeout(secs(self.rt or nil)) end
end


function udp:close ()
  local c = self.c
  if not c then return nil, "closed" end
  self.c = false
  c:close()
  return 1
end


udp.__index = methods(udp, "udpsock:")
udp.__name = "ngx.socket.udp"


ngx.socket = strict({
  tcp = C.tcp,
  stream = C.tcp,
  udp = new_udp,
  connect = function (host, port, opts)
    local s = C.tcp()
    local ok, err = s:connect(host, port, opts)
    if not ok then return nil, err end
    return s
  end,
}, "ngx.socket.")

-- }======================================================


-- {====================================================== time, log

ngx.sleep = function (s)
  local n = tonumber(s)
  if not n or n < 0 then
    error("bad argument #1 to 'sleep' (bad sleep time)", 2)
  end
  luasrv.sleep(n)
end

ngx.now = function () return floor(C.now() * 1000) / 1000 end
ngx.time = function () return os.time() end
ngx.update_time = function () end
ngx.today = function () return os.date("%Y-%m-%d") end
ngx.localtime = function () return os.date("%Y-%m-%d %H:%M:%S") end
ngx.utctime = function () return os.date("!%Y-%m-%d %H:%M:%S") end

local function check_time (t, fname)
  local n = tonumber(t)
  if not n then
    error("bad argument #1 to '" .. fname .. "' (number expected)", 3)
  end
  return floor(n)
end

local DAYS = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" }
local MONTHS = { "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug",
                 "Sep", "Oct", "Nov", "Dec" }

-- os.date's %a and %b follow the locale; HTTP's are English
local function gmt (t, fmt)
  local d = os.date("!*t", t)
  return format(fmt, DAYS[d.wday], d.day, MONTHS[d.month], d.year, d.hour,
                d.min, d.sec)
end

ngx.http_time = function (t)
  return gmt(check_time(t, "http_time"), "%s, %02d %s %04d %02d:%02d:%02d GMT")
end

ngx.cookie_time = function (t)
  return gmt(check_time(t, "cookie_time"), "%s, %02d-%s-%04d %02d:%02d:%02d GMT")
end

-- days since 1970-01-01 of a civil date (Howard Hinnant's algorithm)
local function days_from_civil (y, m, d)
  if m <= 2 then y = y - 1 end
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

ngx.parse_http_time = function (s)
  if type(s) ~= "string" then return nil end
  local d, mon, y, h, mi, sec =
    s:match("^%a+, (%d%d?)[ -](%a%a%a)[ -](%d+) (%d%d):(%d%d):(%d%d) GMT$")
  if not d then
    mon, d, h, mi, sec, y =  -- asctime
      s:match("^%a+ (%a%a%a) +(%d%d?) (%d%d):(%d%d):(%d%d) (%d%d%d%d)$")
  end
  if not d then return nil end
  local m
  for i, name in ipairs(MONTHS) do if name == mon then m = i end end
  if not m then return nil end
  y = tonumber(y)
  if y < 100 then y = y + (y < 70 and 2000 or 1900) end
  return days_from_civil(y, m, tonumber(d)) * 86400 + tonumber(h) * 3600 +
         tonumber(mi) * 60 + tonumber(sec)
end

local LEVELS = { [0] = "stderr", "emerg", "alert", "crit", "error", "warn",
                 "notice", "info", "debug" }
for i, name in pairs{ [0] = "STDERR", "EMERG", "ALERT", "CRIT", "ERR",
                      "WARN", "NOTICE", "INFO", "DEBUG" } do
  ngx[name] = i
end

-- ngx.log(level, ...): the values joined without separators, as ngx does,
-- as one luasrv.log line "[LEVEL] ..."; DEBUG is dropped
ngx.log = function (level, ...)
  if mtype(level) ~= "integer" or not LEVELS[level] then
    error("bad argument #1 to 'log' (bad log level)", 2)
  end
  if level == ngx.DEBUG then return end
  local n, out = select("#", ...), {}
  for i = 1, n do
    local v = select(i, ...)
    if type(v) == "table" then
      local mt = getmetatable(v)
      if not (mt and mt.__tostring) then
        error("bad argument #" .. (i + 1) .. " to 'log' (expected table " ..
              "to have __tostring metamethod)", 2)
      end
    end
    out[i] = v == C.null and "null" or tostring(v)
  end
  luasrv.log("[" .. LEVELS[level] .. "] " .. concat(out))
end

-- }======================================================


-- {====================================================== strings

ngx.null = C.null
ngx.md5 = C.md5
ngx.md5_bin = C.md5_bin
ngx.sha1_bin = C.sha1_bin
ngx.hmac_sha1 = C.hmac_sha1
ngx.crc32_short = C.crc32
ngx.crc32_long = C.crc32
ngx.encode_base64 = C.encode_base64
ngx.decode_base64 = C.decode_base64

local function hexbyte (c) return format("%%%02X", byte(c)) end

-- escape_uri(s [, type]): type 2 (default) escapes all but A-Za-z0-9-._~,
-- type 0 (a whole URI) only spaces, controls, "#%?", non-ASCII
ngx.escape_uri = function (s, kind)
  if s == nil then return "" end
  s = tostring(s)
  if kind == 0 then return (gsub(s, "[%c %%#?\128-\255]", hexbyte)) end
  return (gsub(s, "[^%w%-%._~]", hexbyte))
end

ngx.unescape_uri = function (s)
  if s == nil then return "" end
  s = gsub(tostring(s), "+", " ")
  return (gsub(s, "%%(%x%x)", function (h) return char(tonumber(h, 16)) end))
end

ngx.encode_args = function (args)
  if type(args) ~= "table" then
    error("bad argument #1 to 'encode_args' (table expected, got " ..
          type(args) .. ")", 2)
  end
  local keys = {}
  for k in pairs(args) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  local out = {}
  local esc = ngx.escape_uri
  local function add (k, v)
    if v == true then out[#out + 1] = esc(k)
    elseif v ~= false then out[#out + 1] = esc(k) .. "=" .. esc(v) end
  end
  for _, k in ipairs(keys) do
    local v = args[k]
    if v == nil then v = args[tonumber(k)] end
    if type(v) == "table" then
      for _, x in ipairs(v) do add(k, x) end
    else
      add(k, v)
    end
  end
  return concat(out, "&")
end

ngx.decode_args = function (s, max)
  max = max or 100
  local t, n = {}, 0
  local unesc = ngx.unescape_uri
  for pair in (tostring(s)):gmatch("[^&]+") do
    if max > 0 and n >= max then break end
    n = n + 1
    local k, v = pair:match("^([^=]*)=(.*)$")
    if k then k, v = unesc(k), unesc(v) else k, v = unesc(pair), true end
    local old = t[k]
    if old == nil then t[k] = v
    elseif type(old) == "table" then old[#old + 1] = v
    else t[k] = { old, v } end
  end
  return t
end

local SQL = { ["\0"] = "\\0", ["\b"] = "\\b", ["\n"] = "\\n", ["\r"] = "\\r",
              ["\t"] = "\\t", ["\26"] = "\\Z", ["\\"] = "\\\\",
              ["'"] = "\\'", ['"'] = '\\"' }

ngx.quote_sql_str = function (s)
  return "'" .. gsub(tostring(s), "[%z\b\n\r\t\26\\'\"]", SQL) .. "'"
end

-- }======================================================


-- {====================================================== ngx.re

local re = {}
local rex_ok, rex = pcall(require, "rex_pcre2")
local F = rex_ok and rex.flags() or {}
local cache, ncache = {}, 0
local CACHE_MAX = 1024

local OPT = { i = "CASELESS", m = "MULTILINE", s = "DOTALL", x = "EXTENDED",
              u = "UTF", U = "UTF", a = "ANCHORED", D = "DUPNAMES",
              J = "ALT_BSUX" }

local function compile (regex, opts, fname)
  if not rex_ok then
    error("ngx.re needs lua-rex-pcre2 (apt-get install lua-rex-pcre2)", 3)
  end
  if type(regex) ~= "string" then
    error("bad argument #2 to '" .. fname .. "' (string expected)", 3)
  end
  opts = opts or ""
  local key = opts .. "/" .. regex
  local r = cache[key]
  if r then return r end
  local cf = 0
  for ch in opts:gmatch(".") do
    if OPT[ch] then cf = cf | F[OPT[ch]]
    elseif ch == "d" then
      error("ngx.re option \"d\" (DFA) is not supported by luasrv", 3)
    elseif ch ~= "j" and ch ~= "o" then
      error("bad argument #3 to '" .. fname .. "' (unknown flag \"" .. ch ..
            "\")", 3)
    end
  end
  local ok, compiled = pcall(rex.new, regex, cf)
  if not ok then return nil, "failed to compile regex \"" .. regex .. "\": " ..
    tostring(compiled) end
  if ncache >= CACHE_MAX then cache, ncache = {}, 0 end
  cache[key], ncache = compiled, ncache + 1
  return compiled
end


local function captures (subj, s, e, t, res)
  local m = res or {}
  if res then for k in pairs(res) do res[k] = nil end end
  m[0] = sub(subj, s, e)
  for k, v in pairs(t) do m[k] = v end
  return m
end


local function check_subject (subj, fname)
  if type(subj) == "number" then return tostring(subj) end
  if type(subj) ~= "string" then
    error("bad argument #1 to '" .. fname .. "' (string expected, got " ..
          type(subj) .. ")", 3)
  end
  return subj
end


re.match = function (subj, regex, opts, ctx, res)
  subj = check_subject(subj, "match")
  local r, err = compile(regex, opts, "match")
  if not r then return nil, err end
  local s, e, t = r:tfind(subj, ctx and ctx.pos or 1)
  if not s then return nil end
  if ctx then ctx.pos = e + 1 end
  return captures(subj, s, e, t, res)
end


re.find = function (subj, regex, opts, ctx, nth)
  subj = check_subject(subj, "find")
  local r, err = compile(regex, opts, "find")
  if not r then return nil, nil, err end
  local s, e, off = r:exec(subj, ctx and ctx.pos or 1)
  if not s then return nil end
  if ctx then ctx.pos = e + 1 end
  nth = nth or 0
  if nth == 0 then return s, e end
  local a, b = off[2 * nth - 1], off[2 * nth]
  if not a then return nil end
  return a, b
end


re.gmatch = function (subj, regex, opts)
  subj = check_subject(subj, "gmatch")
  local r, err = compile(regex, opts, "gmatch")
  if not r then return nil, err end
  local pos, done = 1, false
  return function ()
    if done or pos > #subj + 1 then return nil end
    local s, e, t = r:tfind(subj, pos)
    if not s then done = true; return nil end
    pos = e >= s and e + 1 or s + 1
    return captures(subj, s, e, t)
  end
end


-- "$0 ${1} $name $$" -> a function of the captures table
local function template (tpl)
  local parts, i = {}, 1
  while i <= #tpl do
    local d = find(tpl, "$", i, true)
    if not d then parts[#parts + 1] = sub(tpl, i); break end
    if d > i then parts[#parts + 1] = sub(tpl, i, d - 1) end
    local nx = sub(tpl, d + 1, d + 1)
    if nx == "$" then
      parts[#parts + 1] = "$"
      i = d + 2
    else
      local name, j = tpl:match("^{([%w_]+)}()", d + 1)
      if not name then name, j = tpl:match("^(%d+)()", d + 1) end
      if not name then
        error("failed to compile the replacement template: invalid " ..
              "capturing variable name at \"" .. sub(tpl, d) .. "\"", 4)
      end
      parts[#parts + 1] = { tonumber(name) or name }
      i = j
    end
  end
  return function (m)
    local out = {}
    for k, p in ipairs(parts) do
      if type(p) == "table" then
        local v = m[p[1]]
        out[k] = v or ""
      else out[k] = p end
    end
    return concat(out)
  end
end


local function substitute (subj, regex, repl, opts, global, fname)
  subj = check_subject(subj, fname)
  local r, err = compile(regex, opts, fname)
  if not r then return nil, nil, err end
  local f
  if type(repl) == "function" then
    f = function (m) return piece(repl(m), fname) end
  elseif type(repl) == "string" or type(repl) == "number" then
    f = template(tostring(repl))
  else
    error("bad argument #3 to '" .. fname .. "' (string or function " ..
          "expected)", 2)
  end
  local out, pos, n = {}, 1, 0
  while pos <= #subj + 1 do
    local s, e, t = r:tfind(subj, pos)
    if not s then break end
    out[#out + 1] = sub(subj, pos, s - 1)
    out[#out + 1] = f(captures(subj, s, e, t))
    n = n + 1
    if e >= s then pos = e + 1
    else
      out[#out + 1] = sub(subj, s, s)
      pos = s + 1
    end
    if not global then break end
  end
  out[#out + 1] = sub(subj, pos)
  return concat(out), n
end


re.sub = function (subj, regex, repl, opts)
  return substitute(subj, regex, repl, opts, false, "sub")
end

re.gsub = function (subj, regex, repl, opts)
  return substitute(subj, regex, repl, opts, true, "gsub")
end

ngx.re = strict(re, "ngx.re.")

-- }======================================================


-- {====================================================== threads, shared

local function pass (...) return ... end

-- req is there for current_req: fn must not be a tail call, which would
-- take this frame off the stack
local function thread_main (req, fn, ...)
  local _ = req
  return pass(fn(...))
end

ngx.thread = strict({
  spawn = function (fn, ...)
    if type(fn) ~= "function" then
      error("bad argument #1 to 'spawn' (function expected, got " ..
            type(fn) .. ")", 2)
    end
    return luasrv.spawn(thread_main, current_req() or false, fn, ...)
  end,
  wait = luasrv.wait,
  kill = luasrv.kill,
}, "ngx.thread.")

--[[ ngx.shared.NAME: the --shared dictionary NAME, through methods with
ngx's results: get returns no flags (luasrv has none), a failed add or
replace returns false (luasrv: nil), get_keys is keys. The methods luasrv
has no equivalent for raise.
]]
local function false_fail (ok, ...)
  if ok == nil then return false, ... end
  return ok, ...
end

local DICT_PASS = { "set", "incr", "delete", "ttl", "flush_all",
                    "free_space", "capacity" }

local function dict_proxy (d, name)
  local p = {}
  for _, m in ipairs(DICT_PASS) do
    local f = d[m]
    p[m] = function (_, ...) return f(d, ...) end
  end
  local get, add, replace, keys = d.get, d.add, d.replace, d.keys
  p.get = function (_, k) return (get(d, k)) end
  p.add = function (_, ...) return false_fail(add(d, ...)) end
  p.replace = function (_, ...) return false_fail(replace(d, ...)) end
  p.get_keys = function (_, max) return keys(d, max) end
  return setmetatable(p, {
    __index = function (_, k)
      error("ngx.shared." .. name .. ":" .. tostring(k) ..
            " is not supported by luasrv", 2)
    end,
    __tostring = function () return "ngx.shared." .. name end,
  })
end

ngx.shared = setmetatable({}, { __index = function (t, name)
  local ok, d = pcall(function () return luasrv.shared[name] end)
  if not ok or d == nil then return nil end
  local p = dict_proxy(d, name)
  rawset(t, name, p)
  return p
end })

-- ngx.timer on luasrv.timer: the same premature first argument, the
-- same "too many timers" refusal; ngx returns a true value, not the handle
local function ngx_timer (make)
  return function (delay, fn, ...)
    local h, err = make(delay, fn, ...)
    if h == nil then return nil, err end
    return 1
  end
end

ngx.timer = strict({
  at = ngx_timer(luasrv.timer.at),
  every = ngx_timer(luasrv.timer.every),
  running_count = function ()
    local running = luasrv.timer.count()
    return running
  end,
  pending_count = function ()
    local _, pending = luasrv.timer.count()
    return pending
  end,
}, "ngx.timer.")

-- }======================================================


-- {====================================================== worker, config

local worker_id  -- this state's worker, learnt from its first request

local function workers ()
  local f = io.open("/proc/self/cmdline", "rb")
  local s = f and f:read("a") or ""
  if f then f:close() end
  local args = {}
  for a in s:gmatch("[^%z]+") do args[#args + 1] = a end
  for i, a in ipairs(args) do
    local v = a:match("^%-%-workers=(%d+)$")
    if v then return tonumber(v) end
    if a == "--workers" and tonumber(args[i + 1]) then
      return tonumber(args[i + 1])
    end
  end
  return 1
end

local nworkers

ngx.worker = strict({
  id = function ()
    local req = current_req()
    if req then worker_id = req.server.worker - 1 end
    return worker_id
  end,
  count = function ()
    nworkers = nworkers or workers()
    return nworkers
  end,
  pid = C.getpid,
  exiting = C.exiting,
}, "ngx.worker.")

ngx.config = strict({
  subsystem = "stream",
  debug = false,
  ngx_lua_version = 10025,
  nginx_version = 1021004,
  prefix = function () return "" end,
  nginx_configure = function () return "" end,
}, "ngx.config.")

ngx.get_phase = function ()
  return current_req() and "content" or "init_worker"
end

ngx.OK, ngx.ERROR, ngx.AGAIN, ngx.DONE, ngx.DECLINED = 0, -1, -2, -4, -5

local function the_req (fname)
  local req = current_req()
  if not req then
    error(fname .. ": no request (it works only while a request runs)", 3)
  end
  return req
end

local function output (fname, nl, ...)
  local req = the_req(fname)
  local out = {}
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    if type(v) == "table" then flatten(v, out, fname, 1)
    elseif v == nil then out[#out + 1] = "nil"
    else out[#out + 1] = piece(v, fname) end
  end
  if nl then out[#out + 1] = "\n" end
  local ok, err = req:write(concat(out))
  if not ok then return nil, errtext(err) end
  return 1
end

-- the stream subsystem's output: the request's connection
ngx.print = function (...) return output("ngx.print", false, ...) end
ngx.say = function (...) return output("ngx.say", true, ...) end
ngx.flush = function ()
  local ok, err = the_req("ngx.flush"):flush()
  if not ok then return nil, errtext(err) end
  return 1
end

-- ngx.req.socket(): the request's connection as a cosocket (the stream
-- subsystem's raw socket; the same with or without `raw`)
ngx.req = strict({
  socket = function ()
    return C.req_socket(the_req("ngx.req.socket"))
  end,
}, "ngx.req.")

ngx.luasrv = luasrv.version

-- }======================================================


-- {====================================================== LuaJIT, Lua 5.1

-- bit: LuaJIT's BitOp, 32-bit results as signed integers
local function toint (x)
  if mtype(x) == "integer" then return x end
  x = tonumber(x)
  if not x then error("bad argument to bit operation (number expected)", 3) end
  x = math.fmod(x, 2^32)
  return floor(x + 0.5) | 0
end

local function tobit (x)
  x = toint(x) & 0xffffffff
  return x >= 0x80000000 and x - 0x100000000 or x
end

local function fold (op, init)
  return function (a, ...)
    local r = toint(a)
    for i = 1, select("#", ...) do r = op(r, toint((select(i, ...)))) end
    return tobit(r)
  end
end

local bit = {
  tobit = tobit,
  bnot = function (x) return tobit(~toint(x)) end,
  band = fold(function (a, b) return a & b end),
  bor = fold(function (a, b) return a | b end),
  bxor = fold(function (a, b) return a ~ b end),
  lshift = function (x, n) return tobit(toint(x) << (toint(n) & 31)) end,
  rshift = function (x, n)
    return tobit((toint(x) & 0xffffffff) >> (toint(n) & 31))
  end,
  arshift = function (x, n) return tobit(tobit(x) // (1 << (toint(n) & 31))) end,
  rol = function (x, n)
    x, n = toint(x) & 0xffffffff, toint(n) & 31
    return tobit((x << n) | (x >> (32 - n)))
  end,
  ror = function (x, n)
    x, n = toint(x) & 0xffffffff, toint(n) & 31
    return tobit((x >> n) | (x << (32 - n)))
  end,
  bswap = function (x)
    x = toint(x) & 0xffffffff
    return tobit(((x & 0xff) << 24) | ((x & 0xff00) << 8) |
                 ((x >> 8) & 0xff00) | (x >> 24))
  end,
  tohex = function (x, n)
    n = n or 8
    local up = n < 0
    n = math.min(math.abs(n), 8)
    local s = format(up and "%08X" or "%08x", toint(x) & 0xffffffff)
    return sub(s, 9 - n)
  end,
}

local table_new = C.table_new  -- presized, as LuaJIT's
local function table_clear (t)
  for k in pairs(t) do t[k] = nil end
end
table.new = table.new or table_new
table.clear = table.clear or table_clear

-- ffi: only what lua-resty-websocket uses, a char[?] buffer and ffi.string
local buf_type = setmetatable({}, { __name = "ctype<char[?]>" })
local ffi = strict({
  typeof = function (t)
    if t ~= "char[?]" then
      error("ffi.typeof(\"" .. tostring(t) .. "\") is not supported by " ..
            "luasrv (only char[?] buffers)", 2)
    end
    return buf_type
  end,
  new = function (t, n)
    if t ~= buf_type and t ~= "char[?]" then
      error("ffi.new is not supported by luasrv (only char[?] buffers)", 2)
    end
    return { n = n }
  end,
  string = function (b, n)
    if type(b) == "string" then return sub(b, 1, n) end
    n = n or b.n
    local out = {}
    for i = 0, n - 1, 4096 do
      local last = math.min(i + 4095, n - 1)
      local t = {}
      for j = i, last do t[j - i + 1] = (b[j] or 0) & 0xff end
      out[#out + 1] = char(unpack(t))
    end
    return concat(out)
  end,
}, "ffi.")

if rawget(_G, "unpack") == nil then _G.unpack = table.unpack end

package.preload["bit"] = package.preload["bit"] or function () return bit end
package.preload["table.new"] = function () return table.new end
package.preload["table.clear"] = function () return table.clear end
package.preload["ffi"] = package.preload["ffi"] or function () return ffi end
-- ngx.semaphore is luasrv.semaphore: new(n) -> sema; wait(timeout) ->
-- true | nil, "timeout"; post(n); count()
package.preload["ngx.semaphore"] = function ()
  return { new = function (n) return luasrv.semaphore.new(n) end }
end

-- }======================================================


-- {====================================================== drivers

local ROOTS = {}
for dir in (os.getenv("LUASRV_NGX_PATH") or ""):gmatch("[^:]+") do
  ROOTS[#ROOTS + 1] = dir
end
ROOTS[#ROOTS + 1] = "/usr/share/lua/5.1"
ROOTS[#ROOTS + 1] = "/usr/local/openresty/lualib"

local function driver_file (prefix, rest)
  local rel = gsub(rest, "%.", "/") .. ".lua"
  local dirs = prefix == "resty" and { "resty", "nginx" } or { "nginx", "resty" }
  for _, root in ipairs(ROOTS) do
    for _, d in ipairs(dirs) do
      local p = root .. "/" .. d .. "/" .. rel
      local f = io.open(p, "r")
      if f then f:close(); return p end
    end
  end
end

-- resty.X and nginx.X: the same file, loaded once under both names
local function searcher (name)
  local prefix, rest = name:match("^(%a+)%.(.+)$")
  if prefix ~= "resty" and prefix ~= "nginx" then return nil end
  local other = (prefix == "resty" and "nginx." or "resty.") .. rest
  if package.loaded[other] ~= nil then
    return function () return package.loaded[other] end, ":" .. other
  end
  local path = driver_file(prefix, rest)
  if not path then
    return "\n\tno driver '" .. rest .. "' under resty/ or nginx/ in " ..
           concat(ROOTS, ", ") .. " (luasrv.ngx)"
  end
  return function (modname, p)
    local chunk, err = loadfile(p)
    if not chunk then error(err, 0) end
    local m = chunk(modname, p)
    if m == nil then m = true end
    package.loaded[other] = m
    return m
  end, path
end

package.searchers[#package.searchers + 1] = searcher

-- }======================================================


setmetatable(ngx, {
  __index = function (_, k)
    if k == "ctx" then return get_ctx() end
    error("ngx." .. tostring(k) .. " is not supported by luasrv", 2)
  end,
  __newindex = function (t, k, v)
    if k == "ctx" then return set_ctx(v) end
    rawset(t, k, v)
  end,
})

_G.ngx = ngx
return ngx
