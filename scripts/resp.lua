-- resp.lua -- a small Redis-compatible server speaking RESP2.
--
--   luasrv scripts/resp.lua --tcp 127.0.0.1:6379 --timeout 0
--   redis-cli -p 6379 set greeting hello     # OK
--   redis-cli -p 6379 get greeting           # hello
--
-- Strings (GET SET MGET MSET INCR ...), lists (LPUSH RPUSH LPOP RPOP LRANGE
-- LLEN), keys (DEL EXISTS EXPIRE TTL KEYS TYPE ...) and the server commands
-- redis-cli and redis-benchmark use (PING COMMAND CONFIG GET INFO ...).
-- Error replies are worded as Redis words them.
--
-- The protocol (RESP arrays, inline commands as telnet sends them,
-- pipelining answered with one write per batch) is the module luasrv.resp,
-- in lua/luasrv/resp.lua; this script is the keyspace and the commands.
--
-- The keyspace lives in the Lua state. With the event model and one worker
-- (luasrv's defaults) there is one keyspace for every client. With
-- --workers N, or the thread model, each Lua state has its own keyspace
-- (a client sees the one of the state serving it); with the fork model a
-- child's writes are lost when it exits. Use the defaults.
--
-- Expiry is lazy (a key past its deadline is deleted when touched) plus a
-- sweep of the keys that have a deadline from service_actions (every 0.5 s).
-- Deadlines are whole milliseconds of the monotonic clock (so EXPIREAT/PXAT
-- are not offered); a time whose deadline would leave the 64-bit range is
-- refused, as Redis refuses it.
local luasrv = require "luasrv"
local resp = require "luasrv.resp"

local OK, NULL, PONG = resp.OK, resp.NULL, resp.PONG
local int, bulk, array, status = resp.int, resp.bulk, resp.array,
  resp.status
local to_int = resp.to_int

local err = resp.error
local INT_ERR = err("ERR value is not an integer or out of range")
local WRONGTYPE = err("WRONGTYPE Operation against a key holding the " ..
  "wrong kind of value")
local SYNTAX_ERR = err("ERR syntax error")


--[[ The keyspace ]]

local db = {}        -- key -> value: a string, or a list (see below)
local expires = {}   -- key -> deadline in now_ms() milliseconds
local nkeys = 0      -- number of keys in db, for DBSIZE

-- the monotonic clock in whole milliseconds: an integer, so deadlines and
-- what TTL answers stay integers
local function now_ms ()
  return math.floor(luasrv.now() * 1000)
end

local function delete (key)
  if db[key] == nil then return false end
  db[key], expires[key] = nil, nil
  nkeys = nkeys - 1
  return true
end

-- the value of key, or nil (deleting it first if its deadline has passed)
local function lookup (key)
  local v = db[key]
  if v == nil then return nil end
  local deadline = expires[key]
  if deadline and deadline <= now_ms() then
    delete(key)
    return nil
  end
  return v
end

-- stores value; keep_ttl = true leaves an existing deadline in place
local function store (key, value, keep_ttl)
  if db[key] == nil then nkeys = nkeys + 1 end
  db[key] = value
  if not keep_ttl then expires[key] = nil end
end

local function flush_all ()
  db, expires, nkeys = {}, {}, 0
end

-- deletes every key whose deadline has passed
local function purge_expired ()
  local now = now_ms()
  for key, deadline in pairs(expires) do
    if deadline <= now then delete(key) end   -- clearing during pairs is ok
  end
end


--[[ Lists: a deque { first = i, last = j, [i] .. [j] = items } ]]

local function new_list () return { first = 1, last = 0 } end
local function is_list (v) return type(v) == "table" end
local function list_len (l) return l.last - l.first + 1 end

local function list_push (l, item, left)
  if left then
    l.first = l.first - 1
    l[l.first] = item
  else
    l.last = l.last + 1
    l[l.last] = item
  end
end

local function list_pop (l, left)
  if list_len(l) == 0 then return nil end
  local i = left and l.first or l.last
  local item = l[i]
  l[i] = nil
  if left then l.first = i + 1 else l.last = i - 1 end
  return item
end



--[[ Arguments ]]

-- a Redis glob (* ? [abc] [^a-z] \x) as an anchored Lua pattern
local function glob_to_pattern (glob)
  local out, i = { "^" }, 1
  while i <= #glob do
    local c = glob:sub(i, i)
    if c == "*" then out[#out + 1] = ".*"
    elseif c == "?" then out[#out + 1] = "."
    elseif c == "[" and glob:find("]", i + 1, true) then
      local j = glob:find("]", i + 1, true)
      local set = glob:sub(i + 1, j - 1):gsub("^!", "^")
      out[#out + 1] = "[" .. set:gsub("%%", "%%%%") .. "]"
      i = j
    elseif c == "\\" and i < #glob then
      i = i + 1
      out[#out + 1] = "%" .. glob:sub(i, i)
    else
      out[#out + 1] = c:gsub("%W", "%%%0")
    end
    i = i + 1
  end
  out[#out + 1] = "$"
  return table.concat(out)
end

local function glob_match (glob, s)
  if glob == "*" then return true end
  local ok, found = pcall(string.find, s, glob_to_pattern(glob))
  return ok and found ~= nil
end


--[[ Commands: commands[name] = { arity = A, fn = function (argv, n) }
A is Redis's arity: the count of words with the name, or -min when a
command takes a variable number. fn returns the bytes of the reply, and
"quit" as a second value to close the connection. ]]

local commands = {}

local function command (name, arity, fn)
  commands[name] = { name = name, arity = arity, fn = fn,
    min = arity > 0 and arity or -arity,     -- words allowed, with the name
    max = arity > 0 and arity or math.huge }
end

-- Redis's limit for a time in seconds: its milliseconds must fit 64 bits
local MAX_SECONDS = math.maxinteger // 1000

local function invalid_expire (name)
  return err(("ERR invalid expire time in '%s' command"):format(name))
end

-- the deadline ms milliseconds from now, or nil when it would not fit
local function deadline_in (ms)
  local now = now_ms()
  if ms > math.maxinteger - now then return nil end
  return now + ms
end

local function wrong_args (name)
  return err(("ERR wrong number of arguments for '%s' command"):format(name))
end


-- Connection and server

command("ping", -1, function (argv, n)
  if n == 1 then return PONG end
  if n > 2 then return wrong_args("ping") end
  return bulk(argv[2])
end)

command("echo", 2, function (argv) return bulk(argv[2]) end)

command("quit", -1, function () return OK, "quit" end)

command("select", 2, function (argv)
  local index = to_int(argv[2])
  if index == nil then return INT_ERR end
  if index ~= 0 then return err("ERR DB index is out of range") end
  return OK
end)

-- like Redis, counts the expired keys that were not deleted yet
command("dbsize", 1, function () return int(nkeys) end)

local function flush_command ()
  flush_all()
  return OK
end
command("flushall", -1, flush_command)
command("flushdb", -1, flush_command)

-- what CONFIG GET answers; redis-benchmark asks for save and appendonly
local config = { save = "", appendonly = "no", databases = "1",
                 maxmemory = "0", timeout = "0" }

command("config", -2, function (argv, n)
  local sub = argv[2]:lower()
  if sub == "get" and n >= 3 then
    local out = {}
    for name, value in pairs(config) do
      for i = 3, n do
        if glob_match(argv[i]:lower(), name) then
          out[#out + 1] = name
          out[#out + 1] = value
          break
        end
      end
    end
    return array(out)
  elseif sub == "resetstat" and n == 2 then
    return OK
  end
  return err(("ERR unknown subcommand or wrong number of arguments " ..
    "for '%s'. Try CONFIG HELP."):format(argv[2]))
end)

command("info", -1, function ()
  local nexpires = 0
  for _ in pairs(expires) do nexpires = nexpires + 1 end
  return bulk(table.concat({
    "# Server", "redis_version:7.0.0",
    "luasrv_version:" .. tostring(luasrv.version), "", "# Keyspace",
    nkeys > 0 and ("db0:keys=%d,expires=%d,avg_ttl=0"):format(nkeys,
      nexpires) or "",
    "" }, "\r\n"))
end)

-- COMMAND's description of one command (name, arity, flags, first key,
-- last key, step), the part of Redis's reply that clients read
local function command_info (cmd)
  return "*6\r\n" .. bulk(cmd.name) .. int(cmd.arity) ..
    "*0\r\n:0\r\n:0\r\n:0\r\n"
end

command("command", -1, function (argv, n)
  local sub = n >= 2 and argv[2]:lower() or nil
  if sub == nil then
    local list = {}
    for _, cmd in pairs(commands) do list[#list + 1] = command_info(cmd) end
    return resp.array_header(#list) .. table.concat(list)
  elseif sub == "count" then
    local count = 0
    for _ in pairs(commands) do count = count + 1 end
    return int(count)
  elseif sub == "info" then
    local list = { resp.array_header(n - 2) }
    for i = 3, n do
      local cmd = commands[argv[i]:lower()]
      list[#list + 1] = cmd and command_info(cmd) or resp.NULL_ARRAY
    end
    return table.concat(list)
  elseif sub == "docs" then
    return resp.EMPTY_ARRAY   -- no documentation: an empty map
  end
  return err(("ERR unknown subcommand '%s'. Try COMMAND HELP.")
    :format(argv[2]))
end)


-- Strings

-- SET key value [NX|XX] [GET] [EX s|PX ms|KEEPTTL]
command("set", -3, function (argv, n)
  local key, cond, get, deadline, keep_ttl = argv[2], nil, false, nil, false
  local i = 4
  while i <= n do
    local opt = argv[i]:upper()
    if (opt == "NX" or opt == "XX") and not cond then
      cond = opt
    elseif opt == "GET" then
      get = true
    elseif opt == "KEEPTTL" and not deadline then
      keep_ttl = true
    elseif (opt == "EX" or opt == "PX") and not deadline and not keep_ttl
        and i < n then
      i = i + 1
      local t = to_int(argv[i])
      if t == nil then return INT_ERR end
      if t <= 0 or (opt == "EX" and t > MAX_SECONDS) then
        return invalid_expire("set")
      end
      deadline = deadline_in(opt == "EX" and t * 1000 or t)
      if deadline == nil then return invalid_expire("set") end
    else
      return SYNTAX_ERR
    end
    i = i + 1
  end
  local old = lookup(key)
  if get and is_list(old) then return WRONGTYPE end
  if (cond == "NX" and old ~= nil) or (cond == "XX" and old == nil) then
    return get and bulk(old) or NULL
  end
  store(key, argv[3], keep_ttl)
  if deadline then expires[key] = deadline end
  if get then return bulk(old) end
  return OK
end)

command("get", 2, function (argv)
  local v = lookup(argv[2])
  if is_list(v) then return WRONGTYPE end
  return bulk(v)
end)

command("mget", -2, function (argv, n)
  local out = {}
  for i = 2, n do
    local v = lookup(argv[i])
    out[i - 1] = type(v) == "string" and v or nil
  end
  return array(out, n - 1)
end)

command("mset", -3, function (argv, n)
  if n % 2 == 0 then return wrong_args("mset") end
  for i = 2, n, 2 do store(argv[i], argv[i + 1]) end
  return OK
end)

-- adds by to the integer at key (0 when missing), keeping its deadline
local function incr_by (key, by)
  local v = lookup(key)
  if is_list(v) then return WRONGTYPE end
  local current = 0
  if v ~= nil then
    current = to_int(v)
    if current == nil then return INT_ERR end
  end
  if (by > 0 and current > math.maxinteger - by)
      or (by < 0 and current < math.mininteger - by) then
    return err("ERR increment or decrement would overflow")
  end
  local new = current + by
  store(key, tostring(new), true)
  return int(new)
end

command("incr", 2, function (argv) return incr_by(argv[2], 1) end)
command("decr", 2, function (argv) return incr_by(argv[2], -1) end)

command("incrby", 3, function (argv)
  local by = to_int(argv[3])
  if by == nil then return INT_ERR end
  return incr_by(argv[2], by)
end)

command("decrby", 3, function (argv)
  local by = to_int(argv[3])
  if by == nil then return INT_ERR end
  if by == math.mininteger then
    return err("ERR decrement would overflow")
  end
  return incr_by(argv[2], -by)
end)


-- Keys

command("del", -2, function (argv, n)
  local count = 0
  for i = 2, n do
    if lookup(argv[i]) ~= nil and delete(argv[i]) then count = count + 1 end
  end
  return int(count)
end)
command("unlink", -2, commands.del.fn)

command("exists", -2, function (argv, n)
  local count = 0
  for i = 2, n do
    if lookup(argv[i]) ~= nil then count = count + 1 end
  end
  return int(count)
end)

command("type", 2, function (argv)
  local v = lookup(argv[2])
  return status(v == nil and "none" or is_list(v) and "list" or "string")
end)

command("keys", 2, function (argv)
  purge_expired()
  local out = {}
  for key in pairs(db) do
    if glob_match(argv[2], key) then out[#out + 1] = key end
  end
  return array(out)
end)

-- EXPIRE / PEXPIRE key time [NX|XX|GT|LT]; scale: milliseconds per unit.
-- A time may be negative (the key is deleted), but not so far from 0 that
-- its deadline leaves the 64-bit range (Redis's checks, in its order).
local function expire_command (name, scale)
  command(name, -3, function (argv, n)
    local key, t = argv[2], nil
    local cond = n >= 4 and argv[4]:upper() or nil
    if n > 4 or (cond and not (cond == "NX" or cond == "XX" or cond == "GT"
        or cond == "LT")) then
      return err("ERR Unsupported option " .. argv[n])
    end
    t = to_int(argv[3])
    if t == nil then return INT_ERR end
    if scale == 1000 and (t > MAX_SECONDS or t < -MAX_SECONDS) then
      return invalid_expire(name)
    end
    local deadline = deadline_in(t * scale)
    if deadline == nil then return invalid_expire(name) end
    if lookup(key) == nil then return int(0) end
    local old = expires[key]
    if (cond == "NX" and old) or (cond == "XX" and not old)
        or (cond == "GT" and (not old or deadline <= old))
        or (cond == "LT" and old and deadline >= old) then
      return int(0)
    end
    if t <= 0 then delete(key) else expires[key] = deadline end
    return int(1)
  end)
end
expire_command("expire", 1000)
expire_command("pexpire", 1)

-- TTL / PTTL key: -2 no such key, -1 no deadline, else the time left
local function ttl_command (name, ms)
  command(name, 2, function (argv)
    local key = argv[2]
    if lookup(key) == nil then return int(-2) end
    local deadline = expires[key]
    if not deadline then return int(-1) end
    local left = deadline - now_ms()
    if left < 0 then left = 0 end
    return int(ms and left or (left + 500) // 1000)
  end)
end
ttl_command("ttl", false)
ttl_command("pttl", true)

command("persist", 2, function (argv)
  if lookup(argv[2]) == nil or not expires[argv[2]] then return int(0) end
  expires[argv[2]] = nil
  return int(1)
end)


-- Lists

local function push_command (name, left)
  command(name, -3, function (argv, n)
    local l = lookup(argv[2])
    if l ~= nil and not is_list(l) then return WRONGTYPE end
    if l == nil then
      l = new_list()
      store(argv[2], l)
    end
    for i = 3, n do list_push(l, argv[i], left) end
    return int(list_len(l))
  end)
end
push_command("lpush", true)
push_command("rpush", false)

local function pop_command (name, left)
  command(name, 2, function (argv)
    local l = lookup(argv[2])
    if l ~= nil and not is_list(l) then return WRONGTYPE end
    if l == nil then return NULL end
    local item = list_pop(l, left)
    if list_len(l) == 0 then delete(argv[2]) end  -- Redis drops empty lists
    return bulk(item)
  end)
end
pop_command("lpop", true)
pop_command("rpop", false)

command("llen", 2, function (argv)
  local l = lookup(argv[2])
  if l ~= nil and not is_list(l) then return WRONGTYPE end
  return int(l and list_len(l) or 0)
end)

command("lrange", 4, function (argv)
  local start, stop = to_int(argv[3]), to_int(argv[4])
  if start == nil or stop == nil then return INT_ERR end
  local l = lookup(argv[2])
  if l ~= nil and not is_list(l) then return WRONGTYPE end
  if l == nil then return resp.EMPTY_ARRAY end
  local len = list_len(l)
  if start < 0 then start = math.max(len + start, 0) end
  if stop < 0 then stop = len + stop end
  stop = math.min(stop, len - 1)
  local count = math.max(stop - start + 1, 0)
  local items = {}
  for i = 1, count do items[i] = l[l.first + start + i - 1] end
  return array(items, count)
end)


--[[ Dispatch

The command a client named, in any case. Clients send names in capitals
(redis-benchmark, most libraries) or in small letters (redis-cli): both
are keys of by_name, so the usual lookup is one table access with no
string.lower. Other spellings ("Get") are lowered, and remembered while
the cache stays small. ]]

local by_name, cached_spellings = {}, 0
for name, cmd in pairs(commands) do
  by_name[name], by_name[name:upper()] = cmd, cmd
end

local function find_command (name)
  local cmd = by_name[name]
  if cmd then return cmd end
  cmd = commands[name:lower()]
  if cmd and cached_spellings < 1024 then
    by_name[name] = cmd
    cached_spellings = cached_spellings + 1
  end
  return cmd
end

-- Redis's message for a command it does not know: the arguments, quoted,
-- until 128 bytes of them are shown
local function unknown_command (argv, n)
  local args = {}
  local len = 0
  for i = 2, n do
    if len >= 128 then break end
    local shown = "'" .. argv[i]:sub(1, 128 - len) .. "' "
    args[#args + 1] = shown
    len = len + #shown
  end
  return err(("ERR unknown command '%s', with args beginning with: %s")
    :format(argv[1]:sub(1, 128), table.concat(args)))
end

-- the reply to the command in argv[1 .. n] (n >= 1), and "quit" to end
-- the connection
local function dispatch (argv, n)
  local cmd = by_name[argv[1]]
  if cmd and n >= cmd.min and n <= cmd.max then   -- the usual case
    return cmd.fn(argv, n)
  end
  cmd = find_command(argv[1])
  if cmd == nil then return unknown_command(argv, n) end
  if n < cmd.min or n > cmd.max then return wrong_args(cmd.name) end
  return cmd.fn(argv, n)
end


--[[ Hooks ]]

local M = {}

-- Serves commands until the client leaves, QUITs or breaks the protocol
-- (luasrv.resp answers a protocol error, then ends the connection).
function M.handle (req)
  resp.serve(req, dispatch)
end

function M.service_actions ()
  purge_expired()
end

return M
