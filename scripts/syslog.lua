-- syslog.lua -- a syslog receiver: RFC 5424 and RFC 3164 (BSD) messages,
-- written out as JSON lines, one per message.
--
--   luasrv scripts/syslog.lua --udp 127.0.0.1:5514 --unixgram /tmp/log.sock
--   logger -n 127.0.0.1 -P 5514 -d --rfc5424 -t myapp hello
--   logger -u /tmp/log.sock -t myapp hello
--
-- Datagram listeners (UDP, Unix datagram) take one message per datagram.
-- Stream listeners (TCP, Unix stream) take RFC 6587 framing: octet counting
-- ("LEN MSG", logger --octet-count) or one message per line.
--
-- Output: the file named by $SYSLOG_FILE (appended to), else stdout. Each
-- line is a JSON object with the fields the message has:
--   priority, facility, severity   <PRI> and its names ("local3", "warning")
--   format                         "rfc5424", "rfc3164" or "none" (no PRI)
--   timestamp, hostname, app_name, procid, msgid, message
--   structured_data                { SD-ID = { PARAM = "value" } } (5424)
--   from, transport                the sender's address, the listener kind
-- "-" (an RFC 5424 nil value) leaves its field out. A message without
-- <PRI> is user.notice (13), all of it the message, as RFC 3164 says.
-- A stream line longer than --max-line is one record of its first 8 KiB,
-- with truncated = true and length = the line's length; the rest of the
-- line is dropped. Bytes that are not UTF-8 are written as U+FFFD, so
-- every output line is valid JSON.
local cjson = require "cjson"

local FACILITIES = { [0] = "kern", "user", "mail", "daemon", "auth",
  "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp", "ntp",
  "security", "console", "solaris-cron", "local0", "local1", "local2",
  "local3", "local4", "local5", "local6", "local7" }

local SEVERITIES = { [0] = "emerg", "alert", "crit", "err", "warning",
  "notice", "info", "debug" }

local MAX_FRAME = 1024 * 1024   -- octet-counted frames larger are refused
local HEAD_MAX = 8 * 1024       -- what is kept of a line that is cut


--[[ Parsing ]]

-- "-" is RFC 5424's nil value
local function value (s)
  if s == "-" then return nil end
  return s
end

-- the message text: without a UTF-8 BOM and trailing line ends
local function message_text (s)
  if s:sub(1, 3) == "\239\187\191" then s = s:sub(4) end
  return (s:gsub("[\r\n]+$", ""))
end

-- RFC 5424 STRUCTURED-DATA at s[i..]: the table and the index after it,
-- or nil when it is malformed
local function parse_sd (s, i)
  if s:sub(i, i) == "-" then return nil, i + 1 end
  local sd = {}
  while s:sub(i, i) == "[" do
    local id, j = s:match("^([^%s=%]\"]+)()", i + 1)
    if not id then return nil end
    local params = {}
    i = j
    while s:sub(i, i) == " " do
      local name, k = s:match('^([^%s=%]"]+)="()', i + 1)
      if not name then return nil end
      local buf = {}
      while true do                      -- the value, with \" \\ \] escapes
        local c = s:sub(k, k)
        if c == "" then return nil end
        if c == '"' then break end
        if c == "\\" and s:find('^["\\%]]', k + 1) then
          k = k + 1
          c = s:sub(k, k)
        end
        buf[#buf + 1] = c
        k = k + 1
      end
      params[name] = table.concat(buf)
      i = k + 1
    end
    if s:sub(i, i) ~= "]" then return nil end
    sd[id] = params
    i = i + 1
  end
  return sd, i
end

-- "<PRI>VERSION TIMESTAMP HOST APP PROCID MSGID SD [MSG]", after <PRI>
local function parse_5424 (entry, rest)
  local version, ts, host, app, procid, msgid, sd_at =
    rest:match("^(%d%d?%d?) (%S+) (%S+) (%S+) (%S+) (%S+) ()")
  if not version then return false end
  local sd, after = parse_sd(rest, sd_at)
  if after == nil then return false end
  entry.format = "rfc5424"
  entry.version = tonumber(version)
  entry.timestamp, entry.hostname = value(ts), value(host)
  entry.app_name, entry.procid, entry.msgid = value(app), value(procid),
    value(msgid)
  entry.structured_data = sd
  entry.message = message_text(rest:sub(after):gsub("^ ", ""))
  return true
end

-- "<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG", after <PRI>; HOST is absent
-- in what local senders write (logger -u), TAG may be absent too
local function parse_3164 (entry, rest)
  entry.format = "rfc3164"
  local ts, after = rest:match("^(%a%a%a [ %d]%d %d%d:%d%d:%d%d) (.*)$")
  if not ts then
    entry.message = message_text(rest)
    return
  end
  entry.timestamp = ts
  local first, more = after:match("^(%S+) (.*)$")
  if first and not first:find("[:%[]") then   -- not a tag: the host name
    entry.hostname, after = first, more
  end
  local tag, pid, msg = after:match("^([^%s:%[]+)%[([^%]]*)%]: ?(.*)$")
  if not tag then tag, msg = after:match("^([^%s:%[]+): ?(.*)$") end
  entry.app_name, entry.procid = tag, pid
  entry.message = message_text(msg or after)
end

-- one syslog message as a table of fields
local function parse (text)
  local entry = {}
  local pri, rest = text:match("^<(%d%d?%d?)>(.*)$")
  pri = tonumber(pri)
  if pri == nil or pri > 191 then
    entry.format, entry.message, pri = "none", message_text(text), 13
  elseif not parse_5424(entry, rest) then
    parse_3164(entry, rest)
  end
  entry.priority = pri
  entry.facility = FACILITIES[pri >> 3]
  entry.severity = SEVERITIES[pri & 7]
  return entry
end


--[[ Output ]]

local out = io.stdout

local M = {}

function M.init ()
  local path = os.getenv("SYSLOG_FILE")
  if path and path ~= "" and path ~= "-" then
    out = assert(io.open(path, "a"))
  end
end

local REPLACEMENT = "\239\191\189"   -- U+FFFD

-- s with each byte that does not belong to a UTF-8 sequence replaced by
-- U+FFFD (cjson writes strings as they are, valid or not)
local function to_utf8 (s)
  if utf8.len(s) then return s end
  local parts, i = {}, 1
  while true do
    local ok, bad = utf8.len(s, i)
    if ok then
      parts[#parts + 1] = s:sub(i)
      return table.concat(parts)
    end
    parts[#parts + 1] = s:sub(i, bad - 1)
    parts[#parts + 1] = REPLACEMENT
    i = bad + 1
  end
end

-- t with its string keys and values (and those of its tables) as UTF-8
local function clean (t)
  local out = {}
  for k, v in pairs(t) do
    if type(v) == "string" then v = to_utf8(v)
    elseif type(v) == "table" then v = clean(v) end
    out[type(k) == "string" and to_utf8(k) or k] = v
  end
  return out
end

-- writes one entry as a JSON line, at once (one write: lines stay whole
-- when several processes or threads share the output)
local function emit (req, entry)
  entry.from = tostring(req.client_address)
  entry.transport = req.server.transport
  out:write(cjson.encode(clean(entry)) .. "\n")
  out:flush()
end


--[[ Hooks ]]

--[[ Streams: what the core has buffered for req, after what the cut of an
overlong line received past that line's end (pending) ]]

local Stream = {}
Stream.__index = Stream

local function stream (req)
  return setmetatable({ req = req, pending = "" }, Stream)
end

-- n bytes (fewer at the end of the stream), or nil at its end
function Stream:read (n)
  local p = self.pending
  if p == "" then return self.req:read(n) end
  if #p >= n then
    self.pending = p:sub(n + 1)
    return p:sub(1, n)
  end
  self.pending = ""
  return p .. (self.req:read(n - #p) or "")
end

-- After the core refused a line as too long (it keeps the bytes): reads
-- and drops the rest of it, keeping what follows its "\n". Returns the
-- line's first HEAD_MAX bytes (head: those already read) and its length.
function Stream:cut (head)
  local len = #head
  while true do
    local s = self.req:recv()
    if s == nil then break end          -- the stream ended, or timed out
    local nl = s:find("\n", 1, true)
    if nl then
      self.pending = s:sub(nl + 1)
      s = s:sub(1, nl - 1)
    end
    len = len + #s
    if #head < HEAD_MAX then head = head .. s:sub(1, HEAD_MAX - #head) end
    if nl then break end
  end
  return head:sub(1, HEAD_MAX), len
end

-- the rest of a line without its "\n" (nil at the end of the stream); for
-- a line longer than --max-line, its head, "cut" and its length
function Stream:line ()
  local p = self.pending
  if p ~= "" then
    local nl = p:find("\n", 1, true)
    if nl then
      self.pending = p:sub(nl + 1)
      return p:sub(1, nl - 1)
    end
    self.pending = ""
  end
  local rest, err = self.req:read("l")
  if rest then return p .. rest end
  if err ~= "line too long" then return p ~= "" and p or nil end
  local head, len = self:cut(p)
  return head, "cut", len
end

-- the next message on a stream, framed as RFC 6587 says: a frame that
-- starts with a digit is octet counted ("LEN SP MSG"), any other runs to
-- the end of its line. nil at the end, or on a framing error; for a line
-- longer than --max-line, its head and its length
local function read_frame (st)
  local c = st:read(1)
  if c == nil then return nil end
  if c == "\n" then return "" end
  if not c:find("^%d") then
    local rest, cut, len = st:line()
    if cut then return c .. rest, len + 1 end
    return c .. (rest or "")
  end
  local digits = c
  while true do                       -- the length, up to its space
    c = st:read(1)
    if c == nil or #digits > 7 then return nil end
    if c == " " then break end
    if not c:find("^%d") then return nil end
    digits = digits .. c
  end
  local len = tonumber(digits)
  if len > MAX_FRAME then return nil end
  local frame = st:read(len)
  if frame == nil or #frame < len then return nil end
  return frame
end

function M.handle (req)
  local transport = req.server.transport
  if transport == "udp" or transport == "unixgram" then
    return emit(req, parse(req.request))
  end
  local st = stream(req)
  while true do
    local frame, cut_length = read_frame(st)
    if frame == nil then return end
    if cut_length then
      local entry = parse(frame)
      entry.truncated, entry.length = true, cut_length
      emit(req, entry)
    elseif frame:find("%S") then
      emit(req, parse(frame))
    end
  end
end

function M.server_close ()
  if out ~= io.stdout then out:close() end
end

return M
