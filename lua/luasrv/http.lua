--[==[ luasrv.http -- HTTP/1.1 for luasrv handlers: a request parser, a
response writer with keep-alive and pipelining; http.router() gives the
router of luasrv.http.router (lua/luasrv/http/router.lua).

  local http = require "luasrv.http"

  -- one function for every request:
  return http.handler(function (r)
    return 200, { ["Content-Type"] = "text/plain" }, "hello\n"
  end)

  -- or a router:
  local app = http.router()
  app:get("/hello", function (r) return "hello\n" end)
  app:get("/items/:id", function (r) return http.json{ id = r.params.id } end)
  app:post("/echo", function (r) return 200, {}, r.body end)
  return app:handler()

The parser is pure Lua over a buffer of its own (see "Reading a
request" below): one req:recv per head, plain finds, and heads seen
before recalled by their bytes. The whole body is read (up to max_body)
before the handler runs, unless opts.stream_body (true, or a function of
the request returning true or the route's options: the router makes it
from the routes' { stream_body = true }) says the handler reads it
itself, with r:body_reader(). r:websocket() upgrades the connection
(luasrv.websocket has the frames); http.static(root) serves files
(luasrv.http.static).

Deadlines: a request head must arrive whole within header_timeout (10 s;
for the first request of a connection, counted from its start; for a
later one, from its first byte, the wait for which is keepalive_timeout),
and a body within body_timeout (60 s) of the end of its head. Past it the
client gets 408 and the connection closes; a connection that sent
nothing of a new request is closed without a word. So a slow client
(slowloris) holds a sync worker, a fork child or a thread for at most
header_timeout once its request has begun.

What a handler gets, `r`:
  r.method    "GET", "POST", ... (case-sensitive, as sent)
  r.target    the request target as sent: "/items/7?x=1"
  r.path      the path part, still percent-encoded: "/items/7"
  r.query     the query string after "?", or nil
  r.args      the query decoded: { x = "1" }; a key given twice maps to a
              list of its values
  r.version   "1.1" or "1.0"
  r.headers   name -> value; any case works (r.headers["content-type"],
              r.headers["Content-Type"]); a repeated header's values are
              joined with ", " ("; " for Cookie)
  r:header_values(name)  every value of a header, in order (a list)
  r.body      the request body ("" when there is none; false when the
              route streams it: r:body_reader([chunk]) is an iterator
              over its pieces)
  r:websocket([opts])  the handshake, then a luasrv.websocket connection
  r.params    the router's captures (":id" -> r.params.id, decoded)
  r.req       the luasrv request (r.req.client_address, r.req.server);
              do not read from it: the module reads ahead (pipelined
              requests) into a buffer of its own

What a handler returns:
  status, headers, body   body a string (or nil); headers a table whose
                          values are strings, numbers or lists of strings
                          (one header line each)
  body                    a string alone: 200, text/plain; charset=utf-8
  http.json(value [, status [, headers]])  a JSON response (without
                          headers, its headers table is read-only)
  nothing                 200 with an empty body, unless it streamed

Streaming: r:start(status, headers) then r:write(...) as often as needed
(r:flush() sends what is buffered now). With HTTP/1.1 the body goes out
chunked (unless the headers give a Content-Length); with HTTP/1.0 it goes
out as it is and the connection closes after it.

The server adds Date, Content-Length (or Transfer-Encoding: chunked) and
Connection when it closes (or "keep-alive" for an HTTP/1.0 client that
asked for it), and Server (opts.server, false for none). A handler that
raises gets a 500 (logged with its traceback) when nothing was sent yet;
when it was streaming, the connection is cut so the client sees the body
is incomplete.
]==]

local cjson = require "cjson"
local luasrv = require "luasrv"
local now = luasrv.now
local PARKED = luasrv.PARKED

local byte, char, find, format, gsub, lower, match, sub =
  string.byte, string.char, string.find, string.format, string.gsub,
  string.lower, string.match, string.sub
local concat, tonumber, tostring, type = table.concat, tonumber, tostring,
  type
local time = os.time

local M = {}

local JSON, TEXT     -- frozen headers tables (see fixed_head)

-- Limits and settings; http.serve's opts override them one by one.
M.defaults = {
  max_request_line = 8192,   -- bytes in the request line, else 414
  max_header_line = 8192,    -- bytes in one header line, else 431
  max_header_size = 32768,   -- bytes in all the header lines, else 431
  max_headers = 100,         -- header lines, else 431
  max_body = 1024 * 1024,    -- bytes in a request body, else 413
  max_requests = 1000,       -- requests on one connection, then it closes
  keepalive_timeout = nil,   -- seconds to wait for the next request on a
                             -- kept-alive connection (nil: --timeout's)
  header_timeout = 10,       -- seconds for a whole request head, else 408
  body_timeout = 60,         -- seconds for a whole request body, else 408
  linger = 1,                -- seconds to drain a body left unread
  server = "luasrv",         -- the Server header (false: none)
}

M.reasons = {
  [100] = "Continue", [101] = "Switching Protocols",
  [200] = "OK", [201] = "Created", [202] = "Accepted",
  [204] = "No Content", [206] = "Partial Content",
  [301] = "Moved Permanently", [302] = "Found", [303] = "See Other",
  [304] = "Not Modified", [307] = "Temporary Redirect",
  [308] = "Permanent Redirect",
  [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden",
  [404] = "Not Found", [405] = "Method Not Allowed",
  [406] = "Not Acceptable", [408] = "Request Timeout", [409] = "Conflict",
  [410] = "Gone", [411] = "Length Required",
  [412] = "Precondition Failed", [413] = "Content Too Large",
  [414] = "URI Too Long", [415] = "Unsupported Media Type",
  [417] = "Expectation Failed", [422] = "Unprocessable Content",
  [429] = "Too Many Requests", [431] = "Request Header Fields Too Large",
  [500] = "Internal Server Error", [501] = "Not Implemented",
  [502] = "Bad Gateway", [503] = "Service Unavailable",
  [504] = "Gateway Timeout", [505] = "HTTP Version Not Supported",
}


--[[ Small helpers ]]

-- "l" strips the "\n" only: a "\r" before it stays
local function strip_cr (line)
  if byte(line, -1) == 13 then return sub(line, 1, -2) end
  return line
end

-- s without the spaces and tabs around it (linear: no backtracking)
local function trim (s)
  local i = find(s, "[^ \t]")
  if not i then return "" end
  local j = #s
  local b = byte(s, j)
  while b == 32 or b == 9 do
    j = j - 1
    b = byte(s, j)
  end
  return sub(s, i, j)
end

local function hex_to_char (h) return char(tonumber(h, 16)) end

-- "%41%2F" -> "A/"; plus = true also turns "+" into " " (query strings)
function M.unescape (s, plus)
  if plus and find(s, "+", 1, true) then s = gsub(s, "+", " ") end
  if not find(s, "%", 1, true) then return s end
  return (gsub(s, "%%(%x%x)", hex_to_char))
end

local function char_to_hex (c) return format("%%%02X", byte(c)) end

-- percent-encodes everything but the unreserved characters of RFC 3986
function M.escape (s)
  return (gsub(s, "[^%w%-%._~]", char_to_hex))
end

-- "a=1&b=x+y&a=2" -> { a = { "1", "2" }, b = "x y" }
function M.parse_query (q)
  local args = {}
  for pair in q:gmatch("[^&]+") do
    local k, v = match(pair, "^([^=]*)=?(.*)$")
    k, v = M.unescape(k, true), M.unescape(v, true)
    local old = args[k]
    if old == nil then args[k] = v
    elseif type(old) == "table" then old[#old + 1] = v
    else args[k] = { old, v } end
  end
  return args
end

-- The Date header, computed once a second. English names by hand: the
-- C locale's, whatever the process's locale is.
local DAYS = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" }
local MONTHS = { "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug",
                 "Sep", "Oct", "Nov", "Dec" }
local date_time, date_line = nil, nil

-- time t as HTTP writes dates (IMF-fixdate, UTC): "Sun, 06 Nov 1994
-- 08:49:37 GMT"; also luasrv.http.static's Last-Modified (internal)
function M.http_date (t)
  local d = os.date("!*t", t)
  return format("%s, %02d %s %d %02d:%02d:%02d GMT", DAYS[d.wday], d.day,
    MONTHS[d.month], d.year, d.hour, d.min, d.sec)
end

local function date_header ()
  local now = os.time()
  if now ~= date_time then
    date_time = now
    date_line = "Date: " .. M.http_date(now) .. "\r\n"
  end
  return date_line
end

-- "HTTP/1.1 200 OK\r\n", made once per status
local status_lines = {}

local function status_line (status)
  local line = status_lines[status]
  if not line then
    if math.type(status) ~= "integer" or status < 100 or status > 999 then
      error("invalid HTTP status: " .. tostring(status), 0)
    end
    line = format("HTTP/1.1 %d %s\r\n", status, M.reasons[status] or
      "Status " .. status)
    status_lines[status] = line
  end
  return line
end

-- true for the statuses that never have a body
local function bodyless (status)
  return status < 200 or status == 204 or status == 304
end

-- a header table with case-insensitive reads: keys are stored in lower
-- case, and a read with another case looks up the lower-case key
local headers_mt = {
  __index = function (t, k)
    if type(k) == "string" then
      local l = lower(k)
      if l ~= k then return rawget(t, l) end
    end
    return nil
  end,
  __newindex = function (t, k, v)
    rawset(t, type(k) == "string" and lower(k) or k, v)
  end,
}

-- does the comma-separated list (lower case) hold the token?
local function has_token (list, token)
  for t in list:gmatch("[^,%s]+") do
    if t == token then return true end
  end
  return false
end

-- header names are tokens (RFC 9110 5.6.2)
local NOT_TOKEN = "[^%w!#$%%&'*+.^_`|~%-]"
-- (the line as read: the "\r" before the "\n" is still there, or not)
local HEADER_LINE = "^([%w!#$%%&'*+.^_`|~%-]+):[ \t]*([^%z\r]*)\r?$"


--[[ The request object ]]

local Request = {}
Request.__index = Request

-- every value of a header, in the order received
function Request:header_values (name)
  local key = lower(name)
  local list = self._multi and self._multi[key]
  if list then return { table.unpack(list) } end
  local v = rawget(self.headers, key)
  return v and { v } or {}
end

-- the JSON body, decoded; nil and a message when it is not JSON
function Request:json ()
  local ok, v = pcall(cjson.decode, self.body)
  if ok then return v end
  return nil, v
end


--[[ Reading a request.
The reader keeps a Lua-side buffer over the connection: req:recv hands
over what the core has buffered (up to 64 KiB) in one call, and what
follows a head (a body, the next pipelined requests) stays in the buffer
for the next phase. So a request whose head came in one segment costs
one recv, and a batch of pipelined requests one recv for all of them.

A head is parsed with plain string.find at positions (a C call costs the
same for 5 bytes or 500; Lua's pattern matcher costs per byte). And heads
repeat: a client sends the same request line and header lines again and
again, so a parsed head is remembered, keyed by its bytes (heads without
a body, up to 2 KiB, 256 of them per Lua state): the next identical head
costs one table lookup instead of its parse.

Each phase returns its values, or nil and a status to answer (400, 408,
413, ...) before closing, or nil alone when the connection has ended
(EOF, an idle timeout, or a read that failed): close without a word. ]]

local RECV_MAX = 65536
local HEAD_CACHE_MAX, HEAD_CACHE_SIZE = 2048, 256

local function fail (status, r) return nil, status, r end

-- A reader over conn (anything with luasrv's recv, read, write and
-- settimeout). idle is the timeout of a wait for a new request
-- (keepalive_timeout, or nil: the connection's own); last the head cache's
-- entry of the last request when it was all the buffer held. Every
-- kept-alive connection holds one while it waits, so it has eight fields
-- at most (a ninth doubles its hash part): conn's methods other than recv
-- are looked up where used.
local function new_reader (conn, opts)
  return { conn = conn, buf = "", pos = 1, recv = conn.recv,
    idle = opts.keepalive_timeout, timeout = nil, last = false,
    stream = false }
end

-- Sets the timeout of the next wait: what is left until deadline, or the
-- idle timeout without one. The connection is only told when it changes.
-- Returns false when the deadline has passed.
local function set_wait (rd, deadline)
  local t = rd.idle
  if deadline then
    t = deadline - now()
    if t <= 0 then return false end
  end
  if t ~= rd.timeout then
    rd.conn:settimeout(t)
    rd.timeout = t
  end
  return true
end

local resume       -- a parked connection's continuation (serve_requests)

-- Appends what the connection has next to the buffer (waiting for it, up
-- to deadline). Returns true, or nil and "timeout", the read's error, or
-- nothing at EOF. pst: the wait for a new request may park with this
-- state (serve_requests): then PARKED. same (with an empty buffer only):
-- when what came is exactly it, true, true and the buffer stays empty.
local function fill (rd, deadline, pst, same)
  if (deadline or rd.timeout ~= rd.idle) and not set_wait(rd, deadline) then
    return nil, "timeout"
  end
  local buf, pos = rd.buf, rd.pos
  if pos > #buf then rd.buf, buf = "", "" end  -- not held through the wait
  local data, err = rd.recv(rd.conn, RECV_MAX, pst and resume, pst, same)
  if data == true then return true, true end
  if not data or data == PARKED then return data, err end
  if pos <= #buf then data = sub(buf, pos) .. data end
  rd.buf, rd.pos = data, 1
  return true
end

-- How a failed wait ends a request: a timeout after some of it came is a
-- 408, anything else closes without a word.
local function lost (err, started)
  if err == "timeout" and started then return fail(408) end
  return nil
end

-- The position of the last byte of the head that starts at pos in buf
-- (its lines up to an empty one), if it is all there. The usual CRLF end
-- first (one memchr); the parse finds an earlier bare-LF end, if any.
local function head_end (buf, pos)
  local e = find(buf, "\r\n\r\n", pos, true)
  if e then return e + 3 end
  local _, e2 = find(buf, "\n\r?\n", pos)
  return e2
end

-- Waits until the buffer holds a whole head from rd.pos; returns its end
-- (head_end). Refuses a head that grows past max (431), or whose first
-- line is longer than max_line (long: 414 for a request line). started:
-- whether bytes of this request had come before (a timeout is then 408).
local function wait_head (rd, deadline, max_line, long, max, started)
  while true do
    local buf, pos = rd.buf, rd.pos
    local e = head_end(buf, pos)
    if e then return e end
    local have = #buf - pos + 1
    if have > max_line + 1 then
      local nl = find(buf, "\n", pos, true)
      if not nl or nl - pos > max_line + 1 then return fail(long) end
    end
    if have > max then return fail(431) end
    local ok, err = fill(rd, deadline)
    if not ok then return lost(err, started or have > 0) end
    started = true
  end
end

-- A line from the buffer (without its "\n"; a "\r" stays), waiting for it
-- up to deadline; nil and "line too long" past max bytes.
local function read_line (rd, deadline, max)
  while true do
    local buf, pos = rd.buf, rd.pos
    local e = find(buf, "\n", pos, true)
    if e then
      if e - pos > max then return nil, "line too long" end
      rd.pos = e + 1
      return sub(buf, pos, e - 1)
    end
    if #buf - pos + 1 > max then return nil, "line too long" end
    local ok, err = fill(rd, deadline)
    if not ok then return nil, err end
  end
end

-- n bytes: from the buffer, and what it lacks in one read of the
-- connection (waiting up to deadline). nil and the read's error when the
-- connection ends first.
local function read_bytes (rd, n, deadline)
  local buf, pos = rd.buf, rd.pos
  local have = #buf - pos + 1
  if have >= n then
    rd.pos = pos + n
    return sub(buf, pos, pos + n - 1)
  end
  local part = have > 0 and sub(buf, pos) or ""
  rd.buf, rd.pos = "", 1
  if not set_wait(rd, deadline) then return nil, "timeout" end
  local rest, err = rd.conn:read(n - have)
  if not rest or #rest < n - have then return nil, err end
  return part .. rest
end

-- The request line at pos of the head s. Returns method, target, version
-- ("1.0" or "1.1") and the position after the line; or fails.
local function parse_request_line (s, pos, opts)
  local e = find(s, "\n", pos, true)
  if e - pos > opts.max_request_line then return fail(414) end
  -- the usual line first: "GET /path HTTP/1.1", printable ASCII
  local method, target, minor = match(s,
    "^(%u+) (/[!-~]*) HTTP/1%.([01])\r?\n", pos)
  if not method then
    local line = strip_cr(sub(s, pos, e - 1))
    local major
    method, target, major, minor =
      match(line, "^([^%s%c]+) ([^%s%c]+) HTTP/(%d+)%.(%d+)$")
    if not method or find(method, NOT_TOKEN) then return fail(400) end
    if major ~= "1" then
      return fail(#major == 1 and #minor == 1 and 505 or 400)
    end
  end
  return method, target, minor == "0" and "1.0" or "1.1", e + 1  -- 1.2+: 1.1
end

-- The target: origin form ("/p?q"), absolute form or "*" (OPTIONS).
-- Returns the path and the query (or nil), or fails.
local function split_target (method, target)
  local path, query = target, nil
  local q = find(target, "?", 1, true)
  if q then path, query = sub(target, 1, q - 1), sub(target, q + 1) end
  if find(target, "#", 1, true) then
    return fail(400)                 -- a fragment is never sent
  end
  if byte(path) ~= 47 then                    -- not "/...": 47 = "/"
    local p = match(path, "^[%a][%w+.%-]*://[^/]*(.*)$")
    if p then path = p ~= "" and p or "/"
    elseif not (path == "*" and method == "OPTIONS") then
      return fail(400)
    end
  end
  return path, query
end

-- header names as sent -> their lower case, for the names already seen to
-- be tokens (RFC 9110 5.6.2): a known name costs one lookup
local field_keys, nkeys = {}, 0

local function field_key (name)
  local key = field_keys[name]
  if key then return key end
  if name == "" or find(name, NOT_TOKEN) then return nil end
  key = lower(name)
  if nkeys < 1000 then             -- bounded: names are the client's
    field_keys[name], nkeys = key, nkeys + 1
  end
  return key
end

-- A field's value from i to j of s, without the spaces and tabs around it.
local function field_value (s, i, j)
  local b, b2 = byte(s, i, i + 1)
  if b == 32 and b2 ~= 32 and b2 ~= 9 then    -- the usual one space
    i = i + 1
  else
    while (b == 32 or b == 9) and i <= j do
      i = i + 1
      b = byte(s, i)
    end
  end
  b = byte(s, j)
  while (b == 32 or b == 9) and j >= i do
    j = j - 1
    b = byte(s, j)
  end
  return sub(s, i, j)
end

-- Adds a field to headers; a repeated one is joined, and every value
-- kept in multi (made on the first need: returned).
local function add_field (headers, multi, key, value)
  local old = headers[key]
  if old == nil then
    headers[key] = value
    return multi
  end
  headers[key] = old .. (key == "cookie" and "; " or ", ") .. value
  multi = multi or {}
  local list = multi[key]
  if not list then
    list = { old }
    multi[key] = list
  end
  list[#list + 1] = value
  return multi
end

-- The header lines (or trailer lines) of the head s from pos, into
-- headers, up to the empty line. A token, the colon, the value: no space
-- before the colon, no folded lines, no CR or NUL in the value (all
-- refused, RFC 9112). Returns the position after the empty line and the
-- repeated fields' values (or nil); or fails.
local function parse_fields (s, pos, opts, headers)
  local start, n, multi = pos, 0, nil
  local max_line, max_size, max_n = opts.max_header_line,
    opts.max_header_size, opts.max_headers
  local nul = find(s, "\0", pos, true)
  local cr = find(s, "\r", pos, true) or #s + 1   -- the next CR
  while true do
    local e = find(s, "\n", pos, true)   -- there: the head is whole
    local last = e - 1            -- the line's last byte, CR aside
    if cr == last then last = last - 1
    elseif cr < last then return fail(400) end   -- a CR inside
    if last < pos then            -- the empty line: the end
      if nul and nul < e then return fail(400) end
      return e + 1, multi
    end
    n = n + 1
    if n > max_n or last - pos >= max_line or e - start > max_size then
      return fail(431)
    end
    local c = find(s, ":", pos, true)
    if not c or c > last then return fail(400) end
    local key = field_key(sub(s, pos, c - 1))
    if not key then return fail(400) end
    multi = add_field(headers, multi, key, field_value(s, c + 1, last))
    pos = e + 1
    if cr < pos then cr = find(s, "\r", pos, true) or #s + 1 end
  end
end

-- Host, and whether the connection stays open after this request: sets
-- r.keepalive; fails on a missing or repeated Host in HTTP/1.1.
local function check_head (r, headers, multi)
  -- HTTP/1.1 needs exactly one Host (RFC 9112 3.2)
  if r.version == "1.1" and (headers.host == nil or (multi and
      multi.host)) then
    return fail(400)
  end
  local connection = headers.connection
  if connection then
    connection = lower(connection)
    if r.version == "1.1" then
      r.keepalive = not has_token(connection, "close")
    else
      r.keepalive = has_token(connection, "keep-alive")
    end
  elseif r.version ~= "1.1" then
    r.keepalive = false
  end
  return true
end

-- The Content-Length value: the length (a string of digits), or fails.
-- "5, 5" (a repeated header) is fine when every value is the same.
local function content_length (cl)
  if not find(cl, "^%d+$") then
    local first = match(cl, "^(%d+)")
    if not first then return fail(400) end
    for v in cl:gmatch("[^,]+") do
      if trim(v) ~= first then return fail(400) end
    end
    cl = first
  end
  return match(cl, "^0*(%d+)$")
end

-- The trailer fields after the last chunk, read and dropped.
local function read_trailer (rd, opts, deadline)
  while true do                   -- the usual case first: no trailer
    local buf, pos = rd.buf, rd.pos
    local e = find(buf, "\n", pos, true)
    if e then
      if e == pos or (e == pos + 1 and byte(buf, pos) == 13) then
        rd.pos = e + 1
        return true
      end
      break
    end
    if #buf - pos + 1 > opts.max_header_line then break end
    local ok, err = fill(rd, deadline)
    if not ok then return lost(err, true) end
  end
  local e, status = wait_head(rd, deadline, opts.max_header_line, 431,
    opts.max_header_size, true)
  if not e then return nil, status end
  local pos = rd.pos
  local stop
  stop, status = parse_fields(sub(rd.buf, pos, e), 1, opts, {})
  if not stop then return nil, status end
  rd.pos = pos + stop - 1
  return true
end

-- A chunked body: the chunks joined, or fails.
local function read_chunked (rd, opts, deadline)
  local parts, total, max = {}, 0, opts.max_body
  while true do      -- bounded: each chunk brings a byte, total <= max
    local line, err = read_line(rd, deadline, opts.max_header_line)
    if not line then
      if err == "line too long" then return fail(400) end
      return lost(err, true)
    end
    -- size [; extensions]: the extensions are ignored
    local hex, rest = match(line, "^(%x+)[ \t]*(.-)\r?$")
    if not hex or (rest ~= "" and byte(rest) ~= 59) then   -- 59 = ";"
      return fail(400)
    end
    hex = match(hex, "^0*(.*)$")
    if #hex > 8 then return fail(413) end
    local size = hex == "" and 0 or tonumber(hex, 16)
    if size == 0 then
      local ok, status = read_trailer(rd, opts, deadline)
      if not ok then return nil, status end
      return concat(parts)
    end
    total = total + size
    if total > max then return fail(413) end
    local data
    data, err = read_bytes(rd, size, deadline)
    if not data then return lost(err, true) end
    parts[#parts + 1] = data
    local crlf
    crlf, err = read_line(rd, deadline, 1)
    if crlf ~= "" and crlf ~= "\r" then
      if crlf == nil and err ~= "line too long" then
        return lost(err, true)
      end
      return fail(400)
    end
  end
end

-- 100 Continue, to a client that waits for it before it sends the body
local CONTINUE = "HTTP/1.1 100 Continue\r\n\r\n"

-- The framing and the body: chunked, or Content-Length bytes, or none.
-- Sets r.body; returns true, or fails (r.unread when the rest of the body
-- may still be coming). The whole body must come within body_timeout.
local function read_body (rd, r, headers, opts)
  local te, cl, expect = headers["transfer-encoding"],
    headers["content-length"], headers.expect
  if expect then
    if lower(expect) ~= "100-continue" then return fail(417) end
    expect = r.version == "1.1"
  end
  if not (te or cl) then return true end
  local deadline = opts.body_timeout
  if deadline and deadline > 0 then deadline = now() + deadline
  else deadline = nil end
  local body, status
  if te then
    -- both framings at once is how requests are smuggled: refused
    if cl or r.version == "1.0" then return fail(400) end
    if lower(te) ~= "chunked" then return fail(501) end
    if expect then r.req:write(CONTINUE) end
    body, status = read_chunked(rd, opts, deadline)
    if not body then
      r.unread = true   -- the rest of the body may still be coming
      return nil, status
    end
  else
    cl, status = content_length(cl)
    if not cl then return nil, status end
    if #cl > 15 or tonumber(cl) > opts.max_body then
      r.unread = not expect
      return fail(413)
    end
    local n = tonumber(cl)
    if n == 0 then return true end
    if expect then r.req:write(CONTINUE) end
    local err
    body, err = read_bytes(rd, n, deadline)
    if not body then
      r.unread = true
      return lost(err, true)
    end
  end
  r.body = body
  return true
end

--[[ Streaming bodies: routes with stream_body read their body with
r:body_reader() while the handler runs, a piece at a time, instead of
having it read whole before. The framing is checked as read_body checks
it; what is read goes through the connection's buffer, never more than
one recv (64 KiB) of it at a time. ]]

-- Checks the framing of a body to stream and sets r._body, its state:
-- left (bytes of the body or of the chunk being read), chunked, total,
-- max, deadline, continue (100 Continue still to send), done; or fails.
-- route: true, or the route's options (their max_body and body_timeout
-- over opts').
local function stream_body (rd, r, headers, opts, route)
  local te, cl, expect = headers["transfer-encoding"],
    headers["content-length"], headers.expect
  if expect then
    if lower(expect) ~= "100-continue" then return fail(417) end
    expect = r.version == "1.1"
  end
  local max = type(route) == "table" and route.max_body or opts.max_body
  local st = { left = 0, total = 0, max = max, continue = expect,
    done = false }
  if te then
    if cl or r.version == "1.0" then return fail(400) end
    if lower(te) ~= "chunked" then return fail(501) end
    st.chunked = true
  elseif cl then
    local status
    cl, status = content_length(cl)
    if not cl then return nil, status end
    if #cl > 15 or tonumber(cl) > max then
      r.unread = not expect
      return fail(413)
    end
    st.left = tonumber(cl)
  end
  if st.left == 0 and not st.chunked then st.done = true end
  local t = opts.body_timeout
  if type(route) == "table" and route.body_timeout then
    t = route.body_timeout
  end
  if t and t > 0 then st.deadline = now() + t end
  r._body, r.body = st, false
  rd.stream = st        -- (for serve_requests: a field, not an __index)
  return true
end

-- The size line of the next chunk: sets st.left, or st.done after the
-- last chunk's trailer. true, or nil and the status to answer (nil: the
-- connection ended).
local function next_chunk (rd, st, opts)
  if st.crlf then
    local crlf, err = read_line(rd, st.deadline, 1)
    if crlf ~= "" and crlf ~= "\r" then
      if crlf == nil and err ~= "line too long" then
        return lost(err, true)
      end
      return fail(400)
    end
    st.crlf = false
  end
  local line, err = read_line(rd, st.deadline, opts.max_header_line)
  if not line then
    if err == "line too long" then return fail(400) end
    return lost(err, true)
  end
  local hex, rest = match(line, "^(%x+)[ \t]*(.-)\r?$")
  if not hex or (rest ~= "" and byte(rest) ~= 59) then return fail(400) end
  hex = match(hex, "^0*(.*)$")
  if #hex > 8 then return fail(413) end
  local size = hex == "" and 0 or tonumber(hex, 16)
  if size == 0 then
    local ok, status = read_trailer(rd, opts, st.deadline)
    if not ok then return nil, status end
    st.done = true
    return true
  end
  st.total = st.total + size
  if st.total > st.max then return fail(413) end
  st.left, st.crlf = size, true
  return true
end

-- The next piece of a streamed body, up to n bytes; nil at its end; or
-- nil, false and the status to answer (nil: the connection ended).
local function body_piece (rd, st, n, opts)
  if st.chunked and st.left == 0 and not st.done then
    local ok, status = next_chunk(rd, st, opts)
    if not ok then return nil, false, status end
  end
  if st.done then return nil end
  local buf, pos = rd.buf, rd.pos
  if pos > #buf then
    local ok, err = fill(rd, st.deadline)
    if not ok then
      local _, status = lost(err, true)
      return nil, false, status
    end
    buf, pos = rd.buf, rd.pos
  end
  local have = #buf - pos + 1
  if have < n then n = have end
  if st.left < n then n = st.left end
  rd.pos = pos + n
  st.left = st.left - n
  if st.left == 0 and not st.chunked then st.done = true end
  return sub(buf, pos, pos + n - 1)
end

local ERRORS = { [400] = "bad body", [408] = "timeout", [413] = "too large" }

-- An iterator over the body of a stream_body route: each call returns
-- the next piece (up to chunk bytes, 64 KiB by default) and nil at the
-- end; or nil and "timeout", "too large", "bad body" or "closed" (the
-- server then answers 408, 413 or 400 itself and closes). Without
-- stream_body, the body already read, in one piece.
function Request:body_reader (chunk)
  chunk = chunk or RECV_MAX
  local st = self._body
  if not st then
    local body = self.body
    return function ()
      local b = body
      body = nil
      if b == "" then return nil end
      return b
    end
  end
  local rd, opts = self._rd, self._opts
  return function ()
    if st.status ~= nil then return nil, st.err end
    if st.continue then
      st.continue = false
      self.req:write(CONTINUE)
    end
    local piece, _, status = body_piece(rd, st, chunk, opts)
    if rd.timeout ~= nil then        -- the handler's writes: --timeout
      rd.conn:settimeout(nil)
      rd.timeout = nil
    end
    if piece == nil and not st.done then
      st.status = status or false
      st.err = ERRORS[status] or "closed"
      return nil, st.err
    end
    return piece
  end
end

-- A request from a remembered head (below) holds only the head's entry,
-- _e: its fields are read from the entry (its headers table is made on
-- first use and kept in the request). The index of each in an entry:
local ENTRY = { method = 1, target = 2, path = 3, query = 4, version = 5,
  keepalive = 6 }

-- The headers table of a request from its entry e, on first use: the
-- request's own, made from e's keys and values.
local function entry_headers (r, e)
  local h = {}
  for j = 8, e[7], 2 do h[e[j]] = e[j + 1] end
  setmetatable(h, headers_mt)
  r.headers = h
  return h
end

-- The Request metatable of a connection. The fields every request of it
-- shares sit in a table behind __index, over the defaults of the others
-- (one table for all the connections served with opts, over Request);
-- r.args and r.params are made on their first use, and a remembered
-- head's fields too. So a request is built with only its own fields: each
-- costs in a constructor.
local function request_mt (conn, opts, rd)
  local defaults = opts._defaults    -- the metatable of shared
  if not defaults then
    defaults = { __index = setmetatable({ _opts = opts, last = false,
      unread = false, _multi = false, _started = false, keepalive = true,
      body = "", _e = false, _body = false }, Request) }
    opts._defaults = defaults
  end
  local shared = setmetatable({ req = conn, _rd = rd }, defaults)
  return { __index = function (r, k)
    local e = r._e                  -- a field of every request: no loop
    if e then
      local i = ENTRY[k]
      if i then                 -- read again from e each time: storing it
        local v = e[i]          -- in r would grow r's table, dearer
        if v == false and i == 4 then return nil end    -- no query
        return v
      end
      if k == "headers" then return entry_headers(r, e) end
    end
    local v = shared[k]
    if v ~= nil then return v end
    if k == "args" then
      local q = r.query
      v = q and M.parse_query(q) or {}
      r.args = v
    elseif k == "params" then
      v = {}
      r.params = v
    end
    return v
  end }
end

-- The parsed heads, by their bytes (see above), in opts._heads (the
-- limits they were checked against are opts'): method, target, path,
-- query (or false), version, keepalive, then the index of the last value
-- and the keys and values. Only heads whose every rule could be checked
-- at parse time: no body framing, no Expect, no repeated field.
local function remember (opts, head, r, headers)
  local heads = opts._heads
  if heads.n >= HEAD_CACHE_SIZE then
    heads = { n = 0 }
    opts._heads = heads
  end
  local e = { r.method, r.target, r.path, r.query or false, r.version,
    r.keepalive, 0 }
  local n = 7
  for k, v in pairs(headers) do
    e[n + 1], e[n + 2] = k, v
    n = n + 2
  end
  e[7] = n
  e.head = head              -- what rd.last's request is compared with
  heads[head] = e
  heads.n = heads.n + 1
end

-- A request from a remembered head (its other fields are made on first
-- use; the router reads these two).
local function recall (e, mt)
  return setmetatable({ _e = e, _started = false, method = e[1],
    path = e[3], params = nil }, mt)  -- (room for a route's params)
end

-- The head s (whole, from the buffer at start), parsed: the request; or
-- fails. Sets rd.pos after the head (which may end before s does, at a
-- bare-LF empty line) and remembers the head when it can.
local function parse_head (rd, s, start, opts, mt)
  local method, target, version, pos = parse_request_line(s, 1, opts)
  if not method then return nil, target end
  local path, query = split_target(method, target)
  if not path then return nil, query end
  local headers = {}
  local r = setmetatable({ method = method, target = target, path = path,
    query = query, version = version, headers = headers, keepalive = true,
    _started = false, _e = false }, mt)
  local stop, multi = parse_fields(s, pos, opts, headers)
  if not stop then return nil, multi end
  rd.pos = start + stop - 1
  if multi then r._multi = multi end
  -- (headers gets its case-insensitive metatable at the end: until then,
  -- a missing header is a plain miss, not a call)
  local ok, status = check_head(r, headers, multi)
  if not ok then return nil, status, r end
  if stop > #s and not multi and #s <= HEAD_CACHE_MAX and
      not (headers["transfer-encoding"] or headers["content-length"] or
           headers.expect) then
    remember(opts, s, r, headers)
  end
  return r, headers
end

-- Skips up to 4 empty lines before a request line (RFC 9112), waiting for
-- more when the buffer holds nothing else. Returns true, or fails.
local function skip_empty_lines (rd, deadline)
  local skipped = 0
  while true do
    local buf, pos = rd.buf, rd.pos
    local b = byte(buf, pos)
    if b == 10 or (b == 13 and byte(buf, pos + 1) == 10) then
      skipped = skipped + 1
      if skipped > 4 then return fail(400) end
      rd.pos = pos + (b == 10 and 1 or 2)
    elseif b and (b ~= 13 or pos < #buf) then
      return true
    else                          -- nothing (or a lone CR) buffered: wait
      local ok, err = fill(rd, deadline)
      if not ok then return lost(err, b or skipped > 0) end
    end
  end
end

-- A request whose head is not the one just looked up (tried: the head
-- string cut from tried_buf at tried_pos, or nil): the empty lines before
-- it, the rest of the head (within header_timeout), its parse (or the
-- remembered one), then the body.
local function read_new_head (rd, opts, mt, deadline, tried, tried_buf,
                              tried_pos)
  local ok, status = skip_empty_lines(rd, deadline)
  if not ok then return nil, status end
  local buf, pos = rd.buf, rd.pos
  local e = head_end(buf, pos)
  if not e then
    -- the head came in pieces: the rest within header_timeout
    local t = opts.header_timeout
    if not deadline and t and t > 0 then deadline = now() + t end
    e, status = wait_head(rd, deadline, opts.max_request_line, 414,
      opts.max_request_line + opts.max_header_size + 2, true)
    if not e then return nil, status end
    buf, pos = rd.buf, rd.pos
  end
  local s = tried
  if tried_pos ~= pos or tried_buf ~= buf then
    s = sub(buf, pos, e)
    local cached = opts._heads[s]
    if cached then
      rd.pos = e + 1
      if pos == 1 and e == #buf then rd.last = cached end
      return recall(cached, mt)
    end
  end
  local r, headers, partial = parse_head(rd, s, pos, opts, mt)
  if not r then return nil, headers, partial end
  local streams = opts.stream_body
  if streams and streams ~= true and (headers["transfer-encoding"] or
      headers["content-length"]) then
    streams = streams(r)
  end
  if streams then
    ok, status = stream_body(rd, r, headers, opts, streams)
  else
    ok, status = read_body(rd, r, headers, opts)
  end
  if not ok then return nil, status, r end
  setmetatable(headers, headers_mt)
  return r
end

-- One request: the request; or nil and a status to answer (with the
-- partial request); or nil. The usual case first, inline: wait for what
-- comes next, and find in it the connection's last head again (one string
-- comparison) or a head seen before (one lookup). Anything else is
-- read_new_head's. deadline: when the head must have come, for the
-- connection's first request (header_timeout from the connection's
-- start); later ones have keepalive_timeout for their first byte, then
-- header_timeout for the rest of the head. pst: serve_requests' state
-- when that wait for a first byte may park: then nil, nil, nil, PARKED.
local function read_request (rd, opts, mt, deadline, pst)
  local buf, pos = rd.buf, rd.pos
  if pos > #buf then
    if deadline or rd.timeout ~= rd.idle then
      local e = rd.last
      local ok, v = fill(rd, deadline, not deadline and pst, e and e.head)
      if ok == PARKED then return nil, nil, nil, ok end
      if not ok then return lost(v, false) end
      if v then return recall(e, mt) end   -- exactly the last head
      buf, pos = rd.buf, rd.pos
    else                        -- (fill, inline)
      local err
      local e = rd.last         -- true: the bytes were exactly its head
      rd.buf = ""               -- not held through the wait
      buf, err = rd.recv(rd.conn, RECV_MAX, pst and resume, pst,
        e and e.head)
      if buf == true then
        return setmetatable({ _e = e, _started = false, method = e[1],
          path = e[3], params = nil }, mt)    -- (recall, inline)
      end
      if not buf then return lost(err, false) end
      if buf == PARKED then return nil, nil, nil, buf end
      pos = 1
      rd.buf, rd.pos = buf, 1
    end
  end
  local e = rd.last
  if e and buf == e.head and pos == 1 then
    rd.pos = #buf + 1
    return setmetatable({ _e = e, _started = false, method = e[1],
      path = e[3], params = nil }, mt)        -- (recall, inline)
  end
  e = find(buf, "\r\n\r\n", pos, true)
  if not e then return read_new_head(rd, opts, mt, deadline) end
  e = e + 3
  local s = sub(buf, pos, e)
  local cached = opts._heads[s]
  if not cached then
    return read_new_head(rd, opts, mt, deadline, s, buf, pos)
  end
  rd.pos = e + 1
  if pos == 1 and e == #buf then rd.last = cached end
  return recall(cached, mt)
end


--[[ Writing a response ]]

local RESERVED = { ["content-length"] = true, ["transfer-encoding"] = true,
  connection = true, date = true }

-- header names a handler used, checked once: name -> its lower case
local checked_names, nchecked = {}, 0

local function check_name (name)
  local key = checked_names[name]
  if key then return key end
  if type(name) ~= "string" or name == "" or find(name, NOT_TOKEN) then
    error("invalid header name: " .. format("%q", tostring(name)), 0)
  end
  key = lower(name)
  if nchecked < 1000 then          -- bounded: names built per request
    checked_names[name], nchecked = key, nchecked + 1
  end
  return key
end

-- one header line, checked
local function header_line (name, v)
  v = tostring(v)
  if find(v, "[\r\n%z]") then         -- would split the response
    error("invalid value for header " .. name, 0)
  end
  return name .. ": " .. v .. "\r\n"
end

-- the header lines of a handler's table, as one string; then the
-- handler's Content-Length, whether it asked to close, and whether it
-- gave a Date
local function handler_headers (headers)
  local lines, length, close, has_date = "", nil, false, false
  for name, value in pairs(headers) do
    local key = check_name(name)
    if RESERVED[key] then
      if key == "content-length" then length = tostring(value)
      elseif key == "connection" then
        close = has_token(lower(tostring(value)), "close")
      elseif key == "date" then
        has_date = true
        lines = lines .. header_line(name, value)
      end
    elseif type(value) == "table" then      -- one line per value
      for i = 1, #value do lines = lines .. header_line(name, value[i]) end
    else
      lines = lines .. header_line(name, value)
    end
  end
  return lines, length, close, has_date
end

-- the head of a response: status line, the handler's headers, then ours.
-- framing is "length" (with length), "chunked", or "close" (the body runs
-- until the connection closes). Returns the head, and whether to keep the
-- connection open. (Strings joined with `..` in one expression: one
-- allocation, cheaper than a table and table.concat for so few.)
local function response_head (r, opts, status, headers, framing, length)
  local lines, user_length, close, has_date = "", nil, false, false
  if headers then
    lines, user_length, close, has_date = handler_headers(headers)
  end
  local keep = r.keepalive and not close and not r.last
  local frame = ""
  if bodyless(status) then
    -- no framing at all
  elseif framing == "length" then
    -- a HEAD handler may give the Content-Length its GET would have
    if r.method == "HEAD" and user_length and length == 0 then
      length = user_length
    end
    frame = "Content-Length: " .. length .. "\r\n"
  elseif framing == "chunked" then
    frame = "Transfer-Encoding: chunked\r\n"
  else
    keep = false
  end
  local connection = ""
  if not keep then
    connection = "Connection: close\r\n"
  elseif r.version == "1.0" then
    connection = "Connection: keep-alive\r\n"
  end
  return status_line(status) .. lines .. (has_date and "" or date_header())
    .. opts.server_line .. frame .. connection .. "\r\n", keep
end

-- a whole response with a string body; returns whether to keep the
-- connection open
local function send_response (conn, r, opts, status, headers, body)
  body = body or ""
  local head, keep = response_head(r, opts, status, headers, "length", #body)
  if r.method == "HEAD" or bodyless(status) or body == "" then
    conn:write(head)
  else
    conn:write(head, body)
  end
  return keep
end

-- Before closing a connection whose client may still be sending a body:
-- closing with unread data would reset the connection and could destroy
-- the response before the client reads it. Drains for a while (nginx's
-- lingering close).
local function linger (conn, opts)
  if not (opts.linger and opts.linger > 0) then return end
  conn:flush()
  conn:settimeout(opts.linger)
  local deadline, drained = luasrv.now() + opts.linger, 0
  while luasrv.now() < deadline and drained < 16 * opts.max_body do
    local data = conn:recv(65536)
    if not data then break end
    drained = drained + #data
  end
end

-- the server's own answer to a request it refused; the connection closes
local function send_error (conn, status, r, opts)
  local reason = M.reasons[status] or "Error"
  r = r or { method = "GET", version = "1.1" }
  r.keepalive = false
  send_response(conn, r, opts, status,
    { ["Content-Type"] = "text/plain; charset=utf-8" }, reason .. "\n")
  if r.unread then linger(conn, opts) end
end

-- Streaming: r:start(status, headers), r:write(...), r:flush()

function Request:start (status, headers)
  if self._started then error("response already started", 2) end
  status = status or 200
  self._started = true
  local framing = "close"
  if self.version == "1.1" then framing = "chunked" end
  -- a Content-Length given by the handler: the body goes out as written
  if headers then
    for k, v in pairs(headers) do
      if lower(tostring(k)) == "content-length" then
        framing, self._length = "length", tostring(v)
      end
    end
  end
  self._framing = framing
  self._nobody = self.method == "HEAD" or bodyless(status)
  local head, keep = response_head(self, self._opts, status, headers,
    framing, self._length)
  self._keep = keep
  self.req:write(head)
  return self
end

function Request:write (...)
  if not self._started then self:start() end
  if self._nobody then return self end
  local data = select("#", ...) == 1 and tostring((...)) or concat({ ... })
  if data == "" then return self end  -- an empty chunk would end the body
  if self._framing == "chunked" then
    self.req:write(format("%x\r\n", #data), data, "\r\n")
  else
    self.req:write(data)
  end
  return self
end

function Request:flush ()
  self.req:flush()
  return self
end

-- r:sendfile(file [, offset [, length]]) -> true | nil, err: the bytes of
-- file (a path or a luasrv.openfile object) from offset, length of them
-- (default: to the end), as the body or the next part of it, without
-- passing through Lua. Not started: 200 with a Content-Length. Started
-- chunked: one chunk. A failure part way cuts the connection.
function Request:sendfile (file, offset, length)
  offset = offset or 0
  if length == nil then
    local f = file
    if type(file) == "string" then
      local err
      f, err = luasrv.openfile(file)
      if not f then return nil, err end
      file = f  -- opened once: what is sent is what was measured
    end
    local st, err = f:stat()
    if not st then return nil, err end
    length = st.size - offset
    if length < 0 then return nil, "offset past the end of the file" end
  end
  if not self._started then
    self:start(200, { ["Content-Length"] = length })
  end
  if self._nobody or length == 0 then return true end
  local chunked = self._framing == "chunked"
  if chunked then self.req:write(format("%x\r\n", length)) end
  local ok, err = self.req:sendfile(file, offset, length)
  if not ok then
    self.keepalive = false
    self.req:close()
    return nil, err
  end
  if chunked then self.req:write("\r\n") end
  return true
end

--[[ WebSocket: r:websocket([opts]) (luasrv.websocket has the rest) ]]

-- Refuses an upgrade: the answer, and the connection closes after it.
local function refuse_upgrade (r, status, headers, why)
  r.keepalive = false
  headers["Content-Type"] = "text/plain; charset=utf-8"
  send_response(r.req, r, r._opts, status, headers,
    (M.reasons[status] or "Error") .. "\n")
  r._started, r._framing, r._keep = true, "length", false
  return nil, why
end

-- The subprotocol: the first of the server's (opts.protocols) that the
-- client offered, or nil.
local function pick_protocol (r, protocols)
  local offered = r.headers["sec-websocket-protocol"]
  if not (offered and protocols) then return nil end
  local set = {}
  for p in offered:gmatch("[^,%s]+") do set[p] = true end
  for _, p in ipairs(protocols) do
    if set[p] then return p end
  end
  return nil
end

-- Upgrades the connection to a WebSocket (RFC 6455 4.2): checks the
-- handshake, answers 101, and returns the luasrv.websocket connection;
-- or answers 400 / 426 and returns nil and why. The connection ends with
-- the handler.
function Request:websocket (opts)
  if self._started then error("response already started", 2) end
  local h = self.headers
  if self.method ~= "GET" or self.version ~= "1.1" then
    return refuse_upgrade(self, 400, {}, "a WebSocket upgrade is a GET " ..
      "in HTTP/1.1")
  end
  if not (h.upgrade and has_token(lower(h.upgrade), "websocket")) then
    return refuse_upgrade(self, 426, { Upgrade = "websocket",
      Connection = "Upgrade" }, "no Upgrade: websocket")
  end
  if not (h.connection and has_token(lower(h.connection), "upgrade")) then
    return refuse_upgrade(self, 400, {}, "no Connection: Upgrade")
  end
  if h["sec-websocket-version"] ~= "13" then
    return refuse_upgrade(self, 426, { ["Sec-WebSocket-Version"] = "13" },
      "Sec-WebSocket-Version is not 13")
  end
  local websocket = require "luasrv.websocket"
  local key = h["sec-websocket-key"]
  if not websocket.valid_key(key) then
    return refuse_upgrade(self, 400, {}, "bad Sec-WebSocket-Key")
  end
  if h["content-length"] or h["transfer-encoding"] then
    return refuse_upgrade(self, 400, {}, "a body in a WebSocket upgrade")
  end
  opts = opts or {}
  local protocol = pick_protocol(self, opts.protocols)
  local conn, rd = self.req, self._rd
  conn:write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" ..
    "Connection: Upgrade\r\nSec-WebSocket-Accept: " ..
    websocket.accept_key(key) .. "\r\n" ..
    (protocol and "Sec-WebSocket-Protocol: " .. protocol .. "\r\n" or "") ..
    "\r\n")
  self._started, self._framing, self._keep = true, "upgrade", false
  -- what the client sent after the handshake is the WebSocket's
  local rest = ""
  if rd then
    if rd.pos <= #rd.buf then rest = sub(rd.buf, rd.pos) end
    rd.buf, rd.pos, rd.last = "", 1, false
    rd.timeout = false        -- the WebSocket sets its own
  end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.protocol = protocol
  return websocket.new(conn, rest, o)
end

-- after a handler that streamed: the last chunk; whether to keep alive
local function finish_stream (conn, r)
  if r._framing == "chunked" and not r._nobody then
    conn:write("0\r\n\r\n")
  end
  return r._keep
end


--[[ Running a handler ]]

local function traceback (err)
  return debug.traceback(tostring(err), 2)
end


-- The headers tables of http.json and of a handler that returns a string
-- alone: read-only, so that their header lines can be made once.
local function frozen (t)
  return setmetatable({}, { __index = t,
    __newindex = function () error("this headers table is read-only", 2) end,
    __pairs = function () return next, t, nil end })
end
JSON = frozen{ ["Content-Type"] = "application/json" }
TEXT = frozen{ ["Content-Type"] = "text/plain; charset=utf-8" }
local CONTENT_TYPE = { [JSON] = "Content-Type: application/json\r\n",
  [TEXT] = "Content-Type: text/plain; charset=utf-8\r\n" }

-- The head of a 200 answer with one of the frozen headers tables that
-- keeps the connection open, by body length: what response_head gives an
-- HTTP/1.1 keep-alive request, built once a second (the Date changes) for
-- at most 64 lengths per table. The common case of a handler returning a
-- string or http.json(value).
local function fixed_head (opts, headers, length)
  local heads = opts._fixed_heads
  if heads.time ~= time() then
    heads = { time = time(), date = date_header(), n = 0, [JSON] = {},
      [TEXT] = {} }
    opts._fixed_heads = heads
  end
  local date = heads.date
  local byLength = heads[headers]
  local head = byLength[length]
  if not head then
    head = status_line(200) .. CONTENT_TYPE[headers] .. date ..
      opts.server_line .. "Content-Length: " .. length .. "\r\n\r\n"
    if heads.n < 128 then byLength[length], heads.n = head, heads.n + 1 end
  end
  return head
end

-- Writes the response to r from what its handler returned; whether to
-- keep the connection open. last: whether r is the last request the
-- connection may carry.
local function respond (conn, r, opts, write, last, status, headers, body)
  if r._started then return finish_stream(conn, r) end
  if status == nil then return send_response(conn, r, opts, 200, nil, "") end
  local kind = type(status)
  if kind == "string" then body, headers, status = status, TEXT, 200
  elseif kind == "number" and type(body) ~= "string" and body ~= nil then
    if type(body) == "table" then body = concat(body)
    else body = tostring(body) end
  end
  -- the usual answer: 200, a frozen headers table, a kept-alive HTTP/1.1
  local ctype = status == 200 and CONTENT_TYPE[headers]
  local e = r._e
  local keep, version, method
  if e then keep, version, method = e[6], e[5], e[1]
  else keep, version, method = r.keepalive, r.version, r.method end
  if ctype and body and body ~= "" and keep and not last and
      version == "1.1" and method ~= "HEAD" then
    local heads, length = opts._fixed_heads, #body
    if heads.time ~= time() then
      heads = { time = time(), date = date_header(), n = 0, [JSON] = {},
        [TEXT] = {} }
      opts._fixed_heads = heads
    end
    local byLength = heads[headers]
    local head = byLength[length]
    if not head then
      head = status_line(200) .. ctype .. heads.date .. opts.server_line ..
        "Content-Length: " .. length .. "\r\n\r\n"
      if heads.n < 128 then byLength[length], heads.n = head, heads.n + 1 end
    end
    write(conn, head, body)
    return true
  end
  local ok, sent = pcall(send_response, conn, r, opts, status, headers, body)
  if not ok then     -- a bad status or header: the handler's mistake
    luasrv.log(("error handling %s %s: %s"):format(r.method, r.target,
      sent))
    return send_response(conn, r, opts, 500, TEXT, "Internal Server Error\n")
  end
  return sent
end

-- Stack slots that serving a request takes beyond serve's frame (with a
-- route handler that returns a string). A coroutine's stack starts at 40
-- slots and doubles when a call needs more: to 80, then to 160 in the
-- first request, and a kept-alive connection waiting in place for its
-- next one (a busy one: an idle one parks) kept all of it (2.6 KiB; the
-- collector left it so, measured with scripts/http.lua). Made room for at once, it is 1.5 KiB: string.byte
-- makes room for its results first (at each connection: the collector
-- shrinks the stack of a coroutine pooled between connections).
local STACK_ROOM = 77
local ROOM = ("\0"):rep(STACK_ROOM)

local serve_loop

-- A parked connection's continuation (req:recv's): its next request came.
-- (Without byte(ROOM): the coroutine is the loop's, and making room each
-- time cost more than its growth, about 1,400 instructions a resume.)
-- It parked light (serve_requests): its reader and requests' metatable
-- are made again (the wait's timeout is still the idle one).
function resume (conn, st)
  if not st[2] then
    local opts = st[3][1]
    local rd = new_reader(conn, opts)
    rd.last, rd.timeout = st[1], rd.idle
    st[1], st[2] = rd, request_mt(conn, opts, rd)
  end
  return serve_loop(conn, st)
end

-- The requests of a connection, read and answered in order until the
-- connection ends or must close. st holds the loop's state, an array (a
-- parked connection keeps it: the smallest table): [1] the reader, [2]
-- the requests' metatable, [3] the server's { opts, handler, parks }
-- (parks false: http.serve, which returns when the connection ends), [4]
-- conn.write, [5] the requests served, [6] the request in its handler
-- (or false), [7] the first head's deadline. So after a handler raised
-- (st[6] is its request) serve can answer 500 and call this again to go
-- on (one xpcall per connection, not one per request), and a connection
-- that waits for its next request with nothing buffered can park: it
-- returns recv's token, and the core calls resume(conn, st) when the
-- request comes (in the event model, the connection then holds no
-- coroutine while it waits). A parked st holds the reader's last in [1]
-- and false in [2]: no reader, no metatable (~500 B a connection), made
-- again at resume.
local function serve_requests (st)
  local rd, mt, srv, write = st[1], st[2], st[3], st[4]
  local opts, handler = srv[1], srv[2]
  local conn, max, pst = rd.conn, opts.max_requests, srv[3] and st or nil
  for n = st[5] + 1, max do
    st[5] = n
    local r, status, partial, parked = read_request(rd, opts, mt, st[7],
      pst)
    st[7] = nil
    if rd.timeout ~= nil then     -- the handler runs with the server's
      conn:settimeout(nil)
      rd.timeout = nil
    end
    if not r then
      if parked then          -- resume reads it; only st is kept
        st[5], st[1], st[2] = n - 1, rd.last, false
      end
      if status then send_error(conn, status, partial, opts) end
      return parked
    end
    if n == max then r.last = true end
    st[6] = r
    local headers, body
    status, headers, body = handler(r)
    st[6] = false
    local sb = rd.stream
    if sb then                  -- a streamed body: failed, or left unread
      rd.stream = false
      if sb.status ~= nil then
        if sb.status and not r._started then
          send_error(conn, sb.status, r, opts)
        end
        return
      end
      if not sb.done then
        r.keepalive, r.unread = false, true
      end
    end
    if not respond(conn, r, opts, write, n == max, status, headers, body)
    then
      if sb and not sb.done then linger(conn, opts) end
      return
    end
  end
end


--[[ The public API ]]

-- the defaults with opts over them, and what is computed from them
local function options (opts)
  if opts and opts._merged then return opts end
  local o = { _merged = true }
  for k, v in pairs(M.defaults) do o[k] = v end
  for k, v in pairs(opts or {}) do o[k] = v end
  o.server_line = o.server and "Server: " .. o.server .. "\r\n" or ""
  o._heads = { n = 0 }
  o._fixed_heads = { time = false }
  return o
end

-- The deadline of a connection's first head, from now: nil for none.
local function first_deadline (opts)
  local t = opts.header_timeout
  if t and t > 0 then return now() + t end
  return nil
end


-- Serves the connection of st (serve_requests) until it ends, must close
-- or parks (then it returns the park token).
function serve_loop (conn, st)
  local rd, opts = st[1], st[3][1]
  while true do                   -- once more after each handler's error
    local ok, err = xpcall(serve_requests, traceback, st)
    if ok then return err end
    local r = st[6]
    if not r then error(err, 0) end       -- not the handler's
    st[6] = false
    luasrv.log(("error handling %s %s from %s: %s"):format(r.method,
      r.target, tostring(conn.client_address), err))
    if r._started then
      return                  -- cut: the client sees an unfinished body
    end
    local sb = rd.stream       -- a streamed body: failed, or not all read
    if sb then
      rd.stream = false
      if sb.status then return send_error(conn, sb.status, r, opts) end
      if not sb.done then r.keepalive, r.unread = false, true end
    end
    if not send_response(conn, r, opts, 500, TEXT,
        "Internal Server Error\n") or st[5] >= opts.max_requests then
      return
    end
  end
end

-- Serves HTTP on the luasrv request conn: reads requests and answers each
-- with srv's handler, in order (srv: st[3] of serve_requests); returns
-- the park token when it parks.
local function serve (conn, srv)
  byte(ROOM, 1, -1)
  local opts = srv[1]
  local rd = new_reader(conn, opts)
  local st = { rd, request_mt(conn, opts, rd), srv, conn.write, 0, false,
    first_deadline(opts) }
  return serve_loop(conn, st)
end

-- Serves HTTP on conn until the connection ends or must close.
function M.serve (conn, handler, opts)
  serve(conn, { options(opts), handler, false })
end

-- the reader of each connection read with M.read_request
local readers = setmetatable({}, { __mode = "k" })

-- Reads one request from conn (anything with luasrv's recv, read, write
-- and settimeout): the request table; or nil and the status to answer
-- (400, 408, 413, 414, 431, 501, 505) with the partial request; or nil
-- alone when the connection has ended. What follows the request (the next
-- pipelined ones) stays buffered for the next call with the same conn.
function M.read_request (conn, opts)
  opts = options(opts)
  local rd = readers[conn]
  local deadline
  if not rd then
    rd = new_reader(conn, opts)
    readers[conn] = rd
    deadline = first_deadline(opts)
  end
  if rd.opts ~= opts then       -- heads are checked against opts' limits
    rd.opts, rd.mt, rd.last = opts, request_mt(conn, opts, rd), false
  end
  local r, status, partial = read_request(rd, opts, rd.mt, deadline)
  if rd.timeout ~= nil then
    conn:settimeout(nil)
    rd.timeout = nil
  end
  return r, status, partial
end

-- The hooks table of a script whose every request runs handler(r).
function M.handler (handler, opts)
  local srv = { options(opts), handler, true }
  -- (the handle hook returns what serve returns: the flow parks the
  -- connection on req:recv's token)
  return { handle = function (conn) return serve(conn, srv) end }
end

-- A JSON response: status (200), headers plus the Content-Type.
function M.json (value, status, headers)
  if not headers then return status or 200, JSON, cjson.encode(value) end
  local h = { ["Content-Type"] = "application/json" }
  for k, v in pairs(headers) do h[k] = v end
  return status or 200, h, cjson.encode(value)
end


-- A route handler serving the files under root (luasrv.http.static).
function M.static (root, opts)
  return require("luasrv.http.static").new(root, opts, M)
end

-- A router (luasrv.http.router): app:get(path, fn), ..., app:handler().
function M.router (opts)
  return require("luasrv.http.router").new(opts)
end

return M
