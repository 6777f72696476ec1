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
-- Requests arrive as RESP arrays ("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n") or as
-- inline commands ("GET k\r\n", what telnet sends). Pipelining costs
-- nothing extra: replies are only buffered by req:write, and the core sends
-- them when the next read has to wait for the client, so a batch of
-- pipelined commands is answered with one write.
--
-- The keyspace lives in the Lua state. With the event model and one worker
-- (luasrv's defaults) there is one keyspace for every client. With
-- --workers N, or the thread model, each Lua state has its own keyspace
-- (a client sees the one of the state serving it); with the fork model a
-- child's writes are lost when it exits. Use the defaults.
--
-- Expiry is lazy (a key past its deadline is deleted when touched) plus a
-- sweep of the keys that have a deadline from service_actions (every 0.5 s).
-- Deadlines use the monotonic clock, so EXPIREAT/PXAT are not offered.
local luasrv = require "luasrv"

local MAX_ARGS = 1024 * 1024         -- elements in one request (as Redis)
local MAX_BULK = 64 * 1024 * 1024    -- bytes in one argument (Redis: 512 MB)

local INT_ERR = "ERR value is not an integer or out of range"
local WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong " ..
  "kind of value"
local SYNTAX_ERR = "ERR syntax error"


--[[ The keyspace ]]

local db = {}        -- key -> value: a string, or a list (see below)
local expires = {}   -- key -> deadline in luasrv.now() seconds
local nkeys = 0      -- number of keys in db, for DBSIZE

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
  if deadline and deadline <= luasrv.now() then
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
  local now = luasrv.now()
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


--[[ Replies

Each reply is one string given to req:write where that is cheap: the core
takes a single string on its fast path. The "$LEN\r\n" and ":N\r\n" of
small numbers come from tables built once, not from a number formatted per
reply. ]]

local BULK_HEADER, INT_REPLY = {}, {}
for i = 0, 1024 do BULK_HEADER[i] = "$" .. i .. "\r\n" end
for i = -2, 1024 do INT_REPLY[i] = ":" .. i .. "\r\n" end

local function reply_ok (req) req:write("+OK\r\n") end
local function reply_status (req, s) req:write("+" .. s .. "\r\n") end
local function reply_error (req, msg) req:write("-" .. msg .. "\r\n") end

local function reply_int (req, n)
  req:write(INT_REPLY[n] or ":" .. n .. "\r\n")
end

local function reply_bulk (req, s)
  if s == nil then return req:write("$-1\r\n") end
  local len = #s
  if len <= 64 then   -- one short string: cheaper than three writes
    return req:write(BULK_HEADER[len] .. s .. "\r\n")
  end
  req:write(BULK_HEADER[len] or "$" .. len .. "\r\n", s, "\r\n")
end

-- an array of n bulk strings (nil items are null bulks)
local function reply_array (req, items, n)
  n = n or #items
  req:write("*" .. n .. "\r\n")
  for i = 1, n do reply_bulk(req, items[i]) end
end


--[[ Arguments ]]

-- s as an integer, strictly as Redis reads one ("12", "-3"; not " 12",
-- "+1", "012", "1.0"), or nil
local function to_int (s)
  if not (s:find("^%-?[1-9]%d*$") or s == "0") or #s > 20 then return nil end
  local n = math.tointeger(tonumber(s))
  if n == nil or tostring(n) ~= s then return nil end  -- out of range
  return n
end

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


--[[ Commands: commands[name] = { arity = A, fn = function (req, argv, n) }
A is Redis's arity: the count of words with the name, or -min when a
command takes a variable number. fn writes the reply; it returns "quit" to
close the connection. ]]

local commands = {}

local function command (name, arity, fn)
  commands[name] = { name = name, arity = arity, fn = fn,
    min = arity > 0 and arity or -arity,     -- words allowed, with the name
    max = arity > 0 and arity or math.huge }
end

-- The command a client named, in any case. Clients send names in capitals
-- (redis-benchmark, most libraries) or in small letters (redis-cli): both
-- are keys of by_name, filled once the table above is, so the usual lookup
-- is one table access with no string.lower. Other spellings ("Get") are
-- lowered, and remembered while the cache stays small.
local by_name, cached_spellings = {}, 0

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


-- Connection and server

command("ping", -1, function (req, argv, n)
  if n == 1 then return req:write("+PONG\r\n") end
  if n > 2 then
    return reply_error(req, "ERR wrong number of arguments for 'ping' command")
  end
  if n == 2 then return reply_bulk(req, argv[2]) end
  reply_status(req, "PONG")
end)

command("echo", 2, function (req, argv) reply_bulk(req, argv[2]) end)

command("quit", -1, function (req)
  reply_ok(req)
  return "quit"
end)

command("select", 2, function (req, argv)
  local index = to_int(argv[2])
  if index == nil then return reply_error(req, INT_ERR) end
  if index ~= 0 then
    return reply_error(req, "ERR DB index is out of range")
  end
  reply_ok(req)
end)

-- like Redis, counts the expired keys that were not deleted yet
command("dbsize", 1, function (req) reply_int(req, nkeys) end)

local function flush_command (req)
  flush_all()
  reply_ok(req)
end
command("flushall", -1, flush_command)
command("flushdb", -1, flush_command)

-- what CONFIG GET answers; redis-benchmark asks for save and appendonly
local config = { save = "", appendonly = "no", databases = "1",
                 maxmemory = "0", timeout = "0" }

command("config", -2, function (req, argv, n)
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
    return reply_array(req, out)
  elseif sub == "resetstat" and n == 2 then
    return reply_ok(req)
  end
  reply_error(req, ("ERR unknown subcommand or wrong number of arguments " ..
    "for '%s'. Try CONFIG HELP."):format(argv[2]))
end)

command("info", -1, function (req)
  local nexpires = 0
  for _ in pairs(expires) do nexpires = nexpires + 1 end
  reply_bulk(req, table.concat({
    "# Server", "redis_version:7.0.0",
    "luasrv_version:" .. tostring(luasrv.version), "", "# Keyspace",
    nkeys > 0 and ("db0:keys=%d,expires=%d,avg_ttl=0"):format(nkeys,
      nexpires) or "",
    "" }, "\r\n"))
end)

-- COMMAND's description of one command (name, arity, flags, first key,
-- last key, step), the part of Redis's reply that clients read
local function command_info (req, cmd)
  req:write("*6\r\n")
  reply_bulk(req, cmd.name)
  reply_int(req, cmd.arity)
  req:write("*0\r\n:0\r\n:0\r\n:0\r\n")
end

command("command", -1, function (req, argv, n)
  local sub = n >= 2 and argv[2]:lower() or nil
  if sub == nil then
    local list = {}
    for _, cmd in pairs(commands) do list[#list + 1] = cmd end
    req:write("*", #list, "\r\n")
    for _, cmd in ipairs(list) do command_info(req, cmd) end
  elseif sub == "count" then
    local count = 0
    for _ in pairs(commands) do count = count + 1 end
    reply_int(req, count)
  elseif sub == "info" then
    req:write("*", n - 2, "\r\n")
    for i = 3, n do
      local cmd = commands[argv[i]:lower()]
      if cmd then command_info(req, cmd) else req:write("*-1\r\n") end
    end
  elseif sub == "docs" then
    req:write("*0\r\n")   -- no documentation: an empty map
  else
    reply_error(req, ("ERR unknown subcommand '%s'. Try COMMAND HELP.")
      :format(argv[2]))
  end
end)


-- Strings

-- SET key value [NX|XX] [GET] [EX s|PX ms|KEEPTTL]
command("set", -3, function (req, argv, n)
  local key, cond, get, ttl, keep_ttl = argv[2], nil, false, nil, false
  local i = 4
  while i <= n do
    local opt = argv[i]:upper()
    if (opt == "NX" or opt == "XX") and not cond then
      cond = opt
    elseif opt == "GET" then
      get = true
    elseif opt == "KEEPTTL" and not ttl then
      keep_ttl = true
    elseif (opt == "EX" or opt == "PX") and not ttl and not keep_ttl
        and i < n then
      i = i + 1
      local t = to_int(argv[i])
      if t == nil then return reply_error(req, INT_ERR) end
      if t <= 0 then
        return reply_error(req, "ERR invalid expire time in 'set' command")
      end
      ttl = opt == "EX" and t or t / 1000
    else
      return reply_error(req, SYNTAX_ERR)
    end
    i = i + 1
  end
  local old = lookup(key)
  if get and is_list(old) then return reply_error(req, WRONGTYPE) end
  if (cond == "NX" and old ~= nil) or (cond == "XX" and old == nil) then
    return get and reply_bulk(req, old) or reply_bulk(req, nil)
  end
  store(key, argv[3], keep_ttl)
  if ttl then expires[key] = luasrv.now() + ttl end
  if get then return reply_bulk(req, old) end
  reply_ok(req)
end)

command("get", 2, function (req, argv)
  local v = lookup(argv[2])
  if is_list(v) then return reply_error(req, WRONGTYPE) end
  reply_bulk(req, v)
end)

command("mget", -2, function (req, argv, n)
  local out = {}
  for i = 2, n do
    local v = lookup(argv[i])
    out[i - 1] = type(v) == "string" and v or nil
  end
  reply_array(req, out, n - 1)
end)

command("mset", -3, function (req, argv, n)
  if n % 2 == 0 then
    return reply_error(req, "ERR wrong number of arguments for 'mset' command")
  end
  for i = 2, n, 2 do store(argv[i], argv[i + 1]) end
  reply_ok(req)
end)

-- adds by to the integer at key (0 when missing), keeping its deadline
local function incr_by (req, key, by)
  local v = lookup(key)
  if is_list(v) then return reply_error(req, WRONGTYPE) end
  local current = 0
  if v ~= nil then
    current = to_int(v)
    if current == nil then return reply_error(req, INT_ERR) end
  end
  if (by > 0 and current > math.maxinteger - by)
      or (by < 0 and current < math.mininteger - by) then
    return reply_error(req, "ERR increment or decrement would overflow")
  end
  local new = current + by
  store(key, tostring(new), true)
  reply_int(req, new)
end

command("incr", 2, function (req, argv) incr_by(req, argv[2], 1) end)
command("decr", 2, function (req, argv) incr_by(req, argv[2], -1) end)

command("incrby", 3, function (req, argv)
  local by = to_int(argv[3])
  if by == nil then return reply_error(req, INT_ERR) end
  incr_by(req, argv[2], by)
end)

command("decrby", 3, function (req, argv)
  local by = to_int(argv[3])
  if by == nil then return reply_error(req, INT_ERR) end
  if by == math.mininteger then
    return reply_error(req, "ERR decrement would overflow")
  end
  incr_by(req, argv[2], -by)
end)


-- Keys

command("del", -2, function (req, argv, n)
  local count = 0
  for i = 2, n do
    if lookup(argv[i]) ~= nil and delete(argv[i]) then count = count + 1 end
  end
  reply_int(req, count)
end)
command("unlink", -2, commands.del.fn)

command("exists", -2, function (req, argv, n)
  local count = 0
  for i = 2, n do
    if lookup(argv[i]) ~= nil then count = count + 1 end
  end
  reply_int(req, count)
end)

command("type", 2, function (req, argv)
  local v = lookup(argv[2])
  reply_status(req, v == nil and "none" or is_list(v) and "list" or "string")
end)

command("keys", 2, function (req, argv)
  purge_expired()
  local out = {}
  for key in pairs(db) do
    if glob_match(argv[2], key) then out[#out + 1] = key end
  end
  reply_array(req, out)
end)

-- EXPIRE / PEXPIRE key time [NX|XX|GT|LT]; scale: seconds per unit
local function expire_command (name, scale)
  command(name, -3, function (req, argv, n)
    local key, t = argv[2], to_int(argv[3])
    if t == nil then return reply_error(req, INT_ERR) end
    local cond = n >= 4 and argv[4]:upper() or nil
    if n > 4 or (cond and not (cond == "NX" or cond == "XX" or cond == "GT"
        or cond == "LT")) then
      return reply_error(req, "ERR Unsupported option " .. argv[n])
    end
    if lookup(key) == nil then return reply_int(req, 0) end
    local old, deadline = expires[key], luasrv.now() + t * scale
    if (cond == "NX" and old) or (cond == "XX" and not old)
        or (cond == "GT" and (not old or deadline <= old))
        or (cond == "LT" and old and deadline >= old) then
      return reply_int(req, 0)
    end
    if t <= 0 then delete(key) else expires[key] = deadline end
    reply_int(req, 1)
  end)
end
expire_command("expire", 1)
expire_command("pexpire", 0.001)

-- TTL / PTTL key: -2 no such key, -1 no deadline, else the time left
local function ttl_command (name, ms)
  command(name, 2, function (req, argv)
    local key = argv[2]
    if lookup(key) == nil then return reply_int(req, -2) end
    local deadline = expires[key]
    if not deadline then return reply_int(req, -1) end
    local left = math.floor((deadline - luasrv.now()) * 1000 + 0.5)
    reply_int(req, ms and left or (left + 500) // 1000)
  end)
end
ttl_command("ttl", false)
ttl_command("pttl", true)

command("persist", 2, function (req, argv)
  if lookup(argv[2]) == nil or not expires[argv[2]] then
    return reply_int(req, 0)
  end
  expires[argv[2]] = nil
  reply_int(req, 1)
end)


-- Lists

local function push_command (name, left)
  command(name, -3, function (req, argv, n)
    local l = lookup(argv[2])
    if l ~= nil and not is_list(l) then return reply_error(req, WRONGTYPE) end
    if l == nil then
      l = new_list()
      store(argv[2], l)
    end
    for i = 3, n do list_push(l, argv[i], left) end
    reply_int(req, list_len(l))
  end)
end
push_command("lpush", true)
push_command("rpush", false)

local function pop_command (name, left)
  command(name, 2, function (req, argv)
    local l = lookup(argv[2])
    if l ~= nil and not is_list(l) then return reply_error(req, WRONGTYPE) end
    if l == nil then return reply_bulk(req, nil) end
    local item = list_pop(l, left)
    if list_len(l) == 0 then delete(argv[2]) end  -- Redis drops empty lists
    reply_bulk(req, item)
  end)
end
pop_command("lpop", true)
pop_command("rpop", false)

command("llen", 2, function (req, argv)
  local l = lookup(argv[2])
  if l ~= nil and not is_list(l) then return reply_error(req, WRONGTYPE) end
  reply_int(req, l and list_len(l) or 0)
end)

command("lrange", 4, function (req, argv)
  local start, stop = to_int(argv[3]), to_int(argv[4])
  if start == nil or stop == nil then return reply_error(req, INT_ERR) end
  local l = lookup(argv[2])
  if l ~= nil and not is_list(l) then return reply_error(req, WRONGTYPE) end
  if l == nil then return req:write("*0\r\n") end
  local len = list_len(l)
  if start < 0 then start = math.max(len + start, 0) end
  if stop < 0 then stop = len + stop end
  stop = math.min(stop, len - 1)
  local count = math.max(stop - start + 1, 0)
  req:write("*", count, "\r\n")
  for i = start, start + count - 1 do reply_bulk(req, l[l.first + i]) end
end)


--[[ Dispatch ]]

for name, cmd in pairs(commands) do
  by_name[name], by_name[name:upper()] = cmd, cmd
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
  local msg = ("ERR unknown command '%s', with args beginning with: %s")
    :format(argv[1]:sub(1, 128), table.concat(args))
  return (msg:gsub("[\r\n]", " "))
end

-- runs the command in argv[1 .. n] (n >= 1); "quit" to end the connection
local function dispatch (req, argv, n)
  local cmd = find_command(argv[1])
  if cmd == nil then return reply_error(req, unknown_command(argv, n)) end
  local arity = cmd.arity
  if (arity > 0 and n ~= arity) or n < -arity then
    return reply_error(req, ("ERR wrong number of arguments for '%s' command")
      :format(cmd.name))
  end
  return cmd.fn(req, argv, n)
end


--[[ Reading requests ]]

local PROTOCOL = "ERR Protocol error: "

-- splits an inline command line into words: bare words, "double quoted"
-- (with \n \r \t \" \\ \xHH escapes) or 'single quoted' (with \'); nil if
-- a quote is left open
local ESCAPES = { n = "\n", r = "\r", t = "\t", b = "\b", a = "\a" }

local function split_inline (line)
  local words, i, n = {}, 1, #line
  while true do
    i = line:find("%S", i)
    if not i then return words end
    local q = line:sub(i, i)
    if q == '"' or q == "'" then
      local buf, j = {}, i + 1
      while true do
        local c = line:sub(j, j)
        if c == "" then return nil end            -- unbalanced quotes
        if c == q then break end
        if q == '"' and c == "\\" and line:find("^x%x%x", j + 1) then
          buf[#buf + 1] = string.char(tonumber(line:sub(j + 2, j + 3), 16))
          j = j + 3
        elseif c == "\\" and j < n
            and (q == '"' or line:sub(j + 1, j + 1) == "'") then
          local e = line:sub(j + 1, j + 1)   -- in '...' only \' escapes
          buf[#buf + 1] = q == '"' and ESCAPES[e] or e
          j = j + 1
        else
          buf[#buf + 1] = c
        end
        j = j + 1
      end
      words[#words + 1] = table.concat(buf)
      i = j + 1
    else
      local j = line:find("%s", i) or n + 1
      words[#words + 1] = line:sub(i, j - 1)
      i = j
    end
  end
end

--[[ How commands are read

A command that starts when nothing is left over here is read the usual way:
its first line with req:read("l"), so the core enforces --max-line, and an
inline command (what telnet sends) never goes further. When that line
starts a RESP array, the rest of what the client sent (req:recv: what the
core has buffered, up to 16 KiB; it only waits when there is nothing) is
taken into a Lua string, and the array, and the RESP arrays pipelined after
it, are parsed from that string: a pipelined batch costs two calls into
the core, not three per command. A bulk string that is still missing more
than 64 KiB is read by the core in one piece (req:read(n)), not gathered
16 KiB at a time. An inline command that follows RESP arrays in the same
packet is limited to 64 KiB, as in Redis (the core's limit is --max-line,
which a handler cannot see). ]]

local match, find, sub, byte = string.match, string.find, string.sub,
  string.byte

local INLINE_MAX = 64 * 1024    -- an inline command parsed here (as Redis)
local BIG = 64 * 1024           -- missing more: the core reads it at once

-- The counts of RESP headers: "*3\r" as req:read("l") returns it (ARRAY_LEN)
-- and "3" as the patterns below capture it (NUMBER), so the usual header
-- costs one table access, not a tonumber. Others go through header_count.
local ARRAY_LEN, NUMBER = {}, {}
for i = 0, 64 do ARRAY_LEN["*" .. i .. "\r"] = i end
for i = 0, 1024 do NUMBER[tostring(i)] = i end

-- the count in a "*N" or "$N" line (a "\r" at its end allowed), or nil
local function header_count (line)
  if byte(line, -1) == 13 then line = sub(line, 1, -2) end   -- "\r"
  return to_int(sub(line, 2))
end

-- the words of an inline command line and their count, or nil, err
local function inline_command (line)
  if byte(line, -1) == 13 then line = sub(line, 1, -2) end   -- "\r"
  local words = split_inline(line)
  if words == nil then
    return nil, PROTOCOL .. "unbalanced quotes in request"
  end
  return words, #words
end

-- Parses bulk strings i .. n of an array from buf at pos into argv.
-- Returns the position after them; or false, i, p, missing when buf ends
-- first (bulk i starts at p; missing: the bytes bulk i still lacks, with
-- its "\r\n", once its header is there); or nil, err for a protocol error.
local function parse_bulks (buf, pos, i, n, argv)
  local size = #buf
  while i <= n do
    local digits, data = match(buf, "^%$(%d+)\r\n()", pos)
    local len = NUMBER[digits]
    if len == nil then   -- not all there, not "$N\r\n", or N > 1024
      if pos > size then return false, i, pos end
      if byte(buf, pos) ~= 36 then                           -- "$"
        return nil, PROTOCOL .. ("expected '$', got '%s'")
          :format(sub(buf, pos, pos))
      end
      local nl = find(buf, "\n", pos, true)
      if nl == nil then
        if size - pos > 32 then return nil, PROTOCOL .. "invalid bulk length" end
        return false, i, pos
      end
      len = header_count(sub(buf, pos, nl - 1))
      if len == nil or len < 0 or len > MAX_BULK then
        return nil, PROTOCOL .. "invalid bulk length"
      end
      data = nl + 1
    end
    local crlf = data + len   -- the "\r\n" after the data (not checked)
    if crlf + 1 > size then return false, i, pos, crlf + 1 - size end
    argv[i] = sub(buf, data, crlf - 1)
    pos, i = crlf + 2, i + 1
  end
  return pos
end

-- What is left of buf from pos, with more of the request after it; or
-- nil, err. missing: how much more is needed, when known.
local function more (req, buf, pos, missing)
  local s, err
  if missing and missing > BIG then
    s, err = req:read(missing)
  else
    s, err = req:recv()
  end
  if s == nil then return nil, err or "closed" end
  return sub(buf, pos) .. s
end


--[[ Hooks ]]

local M = {}

-- Serves commands until the client leaves, QUITs or breaks the protocol.
-- buf[pos .. size] is what was received and not yet parsed; argv is reused
-- for every RESP array (its words past n are cleared), so a command costs
-- no new table.
function M.handle (req)
  local read = req.read   -- looked up once, not through __index per call
  local argv, last_n = {}, 0
  local buf, pos, size = "", 1, 0
  local words, n, err
  while true do
    words, err = argv, nil
    if pos > size then   -- nothing left here: the core reads the line
      local line
      line, err = read(req, "l")
      if line == nil then break end
      n = ARRAY_LEN[line]
      if n == nil then
        if byte(line, 1) == 42 then                          -- "*"
          n = header_count(line)
          if n == nil or n > MAX_ARGS then
            err = PROTOCOL .. "invalid multibulk length"
            break
          end
        else
          words, n = inline_command(line)
          if words == nil then err = n break end
        end
      end
      buf, pos, size = "", 1, 0
    else
      -- "*N\r\n", N < 10, told from its bytes: no string is made
      local c1, c2, c3, c4 = byte(buf, pos, pos + 3)
      local digits, after
      if c4 == 10 and c3 == 13 and c1 == 42 and c2 >= 48 and c2 <= 57 then
        n, pos = c2 - 48, pos + 4
      else
        digits, after = match(buf, "^%*(%d+)\r\n()", pos)
        n = NUMBER[digits]
      end
      if n then
        if digits then pos = after end
      else   -- not all there, not "*N\r\n" with N <= 1024, or inline
        local nl = find(buf, "\n", pos, true)
        local star = byte(buf, pos) == 42
        if nl == nil then
          if star and size - pos > 32 then
            err = PROTOCOL .. "invalid multibulk length"
            break
          elseif size - pos >= INLINE_MAX then
            err = PROTOCOL .. "too big inline request"
            break
          end
          buf, err = more(req, buf, pos)
          if buf == nil then break end
          pos, size = 1, #buf
          goto continue
        end
        local line = sub(buf, pos, nl - 1)
        pos = nl + 1
        if star then
          n = header_count(line)
          if n == nil or n > MAX_ARGS then
            err = PROTOCOL .. "invalid multibulk length"
            break
          end
        elseif #line > INLINE_MAX then
          err = PROTOCOL .. "too big inline request"
          break
        else
          words, n = inline_command(line)
          if words == nil then err = n break end
        end
      end
    end
    if words == argv then
      if n < 0 then n = 0 end
      if n < last_n then
        for i = n + 1, last_n do argv[i] = nil end
      end
      last_n = n
      local i = 1
      while i <= n do   -- the usual case: "$N\r\n", N < 100, all here
        local c1, c2, c3, c4, c5 = byte(buf, pos, pos + 4)
        local data
        if c1 ~= 36 or c2 == nil or c2 < 48 or c2 > 57 then break end
        local len = c2 - 48
        if c3 == 13 and c4 == 10 then                       -- "$N\r\n"
          data = pos + 4
        elseif c4 == 13 and c5 == 10 and c2 ~= 48 and c3 >= 48
            and c3 <= 57 then                                -- "$NN\r\n"
          len, data = len * 10 + c3 - 48, pos + 5
        else
          break
        end
        if data + len + 1 > size then break end
        argv[i] = sub(buf, data, data + len - 1)
        pos, i = data + len + 2, i + 1
      end
      while i <= n do   -- the others, fetching more until all are here
        local after, p, missing
        after, i, p, missing = parse_bulks(buf, pos, i, n, argv)
        if after then pos = after break end
        if after == nil then err = i break end
        buf, err = more(req, buf, p, missing)
        if buf == nil then break end
        pos, size = 1, #buf
      end
      if err then break end
    end
    if n > 0 then
      local cmd = by_name[words[1]]
      if cmd and n >= cmd.min and n <= cmd.max then   -- the usual case
        if cmd.fn(req, words, n) == "quit" then return end
      elseif dispatch(req, words, n) == "quit" then
        return
      end
    end
    ::continue::
  end
  if err == "line too long" then      -- longer than --max-line
    err = PROTOCOL .. "too big inline request"
  end
  if err and find(err, "^ERR ") then reply_error(req, err) end
  -- closed, timeout or a protocol error: end the connection
end

function M.service_actions ()
  purge_expired()
end

return M
