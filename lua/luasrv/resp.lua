-- luasrv.resp -- the Redis protocol (RESP2) for luasrv handlers: parsing
-- requests, encoding replies and serving a connection.
--
--   local resp = require "luasrv.resp"
--   function M.handle (req)
--     resp.serve(req, function (argv, n)         -- argv[1 .. n]: the words
--       if argv[1] == "PING" then return "+PONG\r\n" end
--       return resp.error("ERR unknown command")
--     end)
--   end
--
-- Three layers, each usable alone:
--   * encoders: resp.status, resp.error, resp.int, resp.bulk, resp.array
--     return the bytes of one reply (resp.OK, resp.NULL, resp.PONG are
--     ready-made);
--   * parsers, pure functions of a string: resp.parse_inline (a telnet-style
--     command line), resp.parse_header ("*N\r\n") and resp.parse_bulks (the
--     "$LEN\r\ndata\r\n" elements of an array, resumable when the input
--     ends in the middle);
--   * resp.serve(req, dispatch), the loop that reads commands from a luasrv
--     connection and writes what dispatch returns.
--
-- It knows nothing of commands or of a keyspace. Protocol errors are
-- worded as Redis words them ("ERR Protocol error: ...").
local M = {}

local byte, sub, find, match = string.byte, string.sub, string.find,
  string.match
local concat, mtype, tostring = table.concat, math.type, tostring

M.MAX_ARGS = 1024 * 1024         -- elements in one array (as Redis)
M.MAX_BULK = 64 * 1024 * 1024    -- bytes in one element (Redis: 512 MB)
M.INLINE_MAX = 64 * 1024         -- an inline command (as Redis; serve: --max-line)

local PROTOCOL = "ERR Protocol error: "
M.PROTOCOL = PROTOCOL


--[[ Encoders

The "$LEN\r\n" and ":N\r\n" of small numbers come from tables built once,
not from a number formatted per reply. ]]

local BULK_HEADER, INT_REPLY = {}, {}
for i = 0, 1024 do BULK_HEADER[i] = "$" .. i .. "\r\n" end
for i = -2, 1024 do INT_REPLY[i] = ":" .. i .. "\r\n" end

M.OK = "+OK\r\n"
M.PONG = "+PONG\r\n"
M.NULL = "$-1\r\n"            -- the null bulk string
M.NULL_ARRAY = "*-1\r\n"
M.EMPTY_ARRAY = "*0\r\n"

-- CR and LF end a simple string: they would break the frame
local function one_line (s)
  if find(s, "[\r\n]") then s = s:gsub("[\r\n]", " ") end
  return s
end

function M.status (s) return "+" .. one_line(s) .. "\r\n" end

function M.error (msg) return "-" .. one_line(msg) .. "\r\n" end

-- An integer reply. n must be an integer (math.type): a float has no RESP
-- integer form, and ":1e+17" makes clients give up on the connection.
function M.int (n)
  local r = INT_REPLY[n]
  if r then return r end
  if mtype(n) ~= "integer" then
    error(("resp.int: integer expected, got %s"):format(
      mtype(n) or type(n)), 2)
  end
  return ":" .. n .. "\r\n"
end

-- A bulk string; nil gives the null bulk string.
function M.bulk (s)
  if s == nil then return "$-1\r\n" end
  local len = #s
  return (BULK_HEADER[len] or "$" .. len .. "\r\n") .. s .. "\r\n"
end

-- The header of an array of n elements, to be followed by their replies.
function M.array_header (n)
  if mtype(n) ~= "integer" then
    error(("resp.array_header: integer expected, got %s"):format(
      mtype(n) or type(n)), 2)
  end
  return "*" .. n .. "\r\n"
end

-- An array of bulk strings items[1 .. n] (n: #items when not given); nil
-- items are null bulk strings.
function M.array (items, n)
  n = n or #items
  local t = { "*" .. n .. "\r\n" }
  for i = 1, n do
    local s = items[i]
    if s == nil then
      t[i + 1] = "$-1\r\n"
    else
      local len = #s
      t[i + 1] = (BULK_HEADER[len] or "$" .. len .. "\r\n") .. s .. "\r\n"
    end
  end
  return concat(t)
end


--[[ Parsers ]]

-- s as an integer as Redis reads one ("12", "-3"; not " 12", "+1", "012",
-- "1.0", nor out of the 64-bit range), or nil
local function to_int (s)
  if #s > 20 or not (find(s, "^%-?[1-9]%d*$") or s == "0") then
    return nil
  end
  local n = math.tointeger(tonumber(s))
  if n == nil or tostring(n) ~= s then return nil end
  return n
end
M.to_int = to_int

-- the count of "*N" or "$N" (a "\r" at its end allowed), or nil
local function header_count (line)
  if byte(line, -1) == 13 then line = sub(line, 1, -2) end   -- "\r"
  return to_int(sub(line, 2))
end

local ESCAPES = { n = "\n", r = "\r", t = "\t", b = "\b", a = "\a" }

-- a quoted word starting at line[i] (the quote); the word and the index
-- after the closing quote, or nil when it is left open or not followed by
-- a space (as Redis's sdssplitargs)
local function quoted_word (line, i)
  local q, buf, j, n = sub(line, i, i), {}, i + 1, #line
  while true do
    local c = sub(line, j, j)
    if c == "" then return nil end
    if c == q then break end
    if q == '"' and c == "\\" and find(line, "^x%x%x", j + 1) then
      buf[#buf + 1] = string.char(tonumber(sub(line, j + 2, j + 3), 16))
      j = j + 3
    elseif c == "\\" and j < n
        and (q == '"' or sub(line, j + 1, j + 1) == "'") then
      local e = sub(line, j + 1, j + 1)   -- in '...' only \' escapes
      buf[#buf + 1] = q == '"' and ESCAPES[e] or e
      j = j + 1
    else
      buf[#buf + 1] = c
    end
    j = j + 1
  end
  if j < n and not find(line, "^%s", j + 1) then return nil end
  return concat(buf), j + 1
end

-- Splits an inline command line (without its "\n"; a "\r" at the end is
-- dropped) into words: bare words, "double quoted" (with \n \r \t \" \\
-- \xHH escapes) or 'single quoted' (with \'). Returns the words and their
-- count, or nil, err when a quote is left open.
function M.parse_inline (line)
  if byte(line, -1) == 13 then line = sub(line, 1, -2) end   -- "\r"
  local words, i, n = {}, 1, 0
  while true do
    i = find(line, "%S", i)
    if not i then return words, n end
    local c, word = byte(line, i), nil
    if c == 34 or c == 39 then                               -- " or '
      word, i = quoted_word(line, i)
      if word == nil then
        return nil, PROTOCOL .. "unbalanced quotes in request"
      end
    else
      local j = find(line, "%s", i) or #line + 1
      word, i = sub(line, i, j - 1), j
    end
    n = n + 1
    words[n] = word
  end
end

-- The counts of "$N" headers as the patterns below capture them, so the
-- usual header costs one table access, not a tonumber.
local NUMBER = {}
for i = 0, 1024 do NUMBER[tostring(i)] = i end

-- Parses the array header "*N\r\n" at buf[pos]. Returns N (0 for a null
-- or negative count) and the position after the header; false when buf
-- ends before the header does; nil, err when it is not a valid header.
function M.parse_header (buf, pos)
  local digits, after = match(buf, "^%*(%d+)\r\n()", pos)
  local n = NUMBER[digits]
  if n and n <= M.MAX_ARGS then return n, after end
  if byte(buf, pos) ~= 42 then                               -- "*"
    if pos > #buf then return false end
    return nil, PROTOCOL .. ("expected '*', got '%s'"):format(
      sub(buf, pos, pos))
  end
  local nl = find(buf, "\n", pos, true)
  if nl == nil then
    if #buf - pos > 32 then
      return nil, PROTOCOL .. "invalid multibulk length"
    end
    return false
  end
  n = header_count(sub(buf, pos, nl - 1))
  if n == nil or n > M.MAX_ARGS then
    return nil, PROTOCOL .. "invalid multibulk length"
  end
  return n < 0 and 0 or n, nl + 1
end

-- Parses elements i .. n of an array from buf at pos into argv[i .. n].
-- Returns the position after them; or false, i, p, missing when buf ends
-- first (element i starts at p; missing: the bytes element i still lacks,
-- with its "\r\n", once its header is complete); or nil, err for a
-- protocol error. Call it again with the same i and more input from p.
function M.parse_bulks (buf, pos, i, n, argv)
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
        if size - pos > 32 then
          return nil, PROTOCOL .. "invalid bulk length"
        end
        return false, i, pos
      end
      len = header_count(sub(buf, pos, nl - 1))
      if len == nil or len < 0 or len > M.MAX_BULK then
        return nil, PROTOCOL .. "invalid bulk length"
      end
      data = nl + 1
    end
    -- the "\r\n" after the data is skipped, not checked, as Redis does
    local crlf = data + len
    if crlf + 1 > size then return false, i, pos, crlf + 1 - size end
    argv[i] = sub(buf, data, crlf - 1)
    pos, i = crlf + 2, i + 1
  end
  return pos
end


--[[ Serving a connection

The reading is the core's (require "luasrv.respc", lresp.c): one call per
command queues the previous command's reply on the connection and parses
the next command from what the connection buffered, into argv. It only
waits when no whole command is buffered, and the replies queued go out
before that wait: a pipelined batch is answered by one write. An inline
command longer than --max-line is refused. ]]

local respc   -- luasrv's C half, loaded by the first serve (only luasrv
              -- has it: the parsers above work in any Lua)

-- Serves commands on req until the client leaves, dispatch says "quit" or
-- the client breaks the protocol (answered with the error, then the end).
-- dispatch(argv, n) gets the words argv[1 .. n] (n >= 1; argv is reused
-- for the next command, so keep its strings, not the table) and returns
-- the reply's bytes, and "quit" as a second value to end the connection
-- once the reply is sent. Returns nil, err: err is nil at EOF, "closed",
-- "timeout" or the protocol error. A dispatch that raises ends the
-- connection once the replies before it are sent.
function M.serve (req, dispatch)
  if respc == nil then respc = require "luasrv.respc" end
  local command = respc.command
  local argv, reply, quit = {}, false, nil   -- false: no reply yet
  local n, err
  while true do
    n, err = command(req, argv, reply)
    if n == nil then break end
    reply, quit = dispatch(argv, n)
    if quit == "quit" then
      req:write(reply)
      break
    end
  end
  if err and find(err, "^ERR ") then req:write(M.error(err)) end
  return nil, err
end

return M
