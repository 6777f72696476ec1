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
local cjson = require "cjson"

local FACILITIES = { [0] = "kern", "user", "mail", "daemon", "auth",
  "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp", "ntp",
  "security", "console", "solaris-cron", "local0", "local1", "local2",
  "local3", "local4", "local5", "local6", "local7" }

local SEVERITIES = { [0] = "emerg", "alert", "crit", "err", "warning",
  "notice", "info", "debug" }

local MAX_FRAME = 1024 * 1024   -- octet-counted frames larger are refused


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

-- writes one entry as a JSON line, at once (one write: lines stay whole
-- when several processes or threads share the output)
local function emit (req, entry)
  entry.from = tostring(req.client_address)
  entry.transport = req.server.transport
  out:write(cjson.encode(entry) .. "\n")
  out:flush()
end


--[[ Hooks ]]

-- the next message on a stream, framed as RFC 6587 says: a frame that
-- starts with a digit is octet counted ("LEN SP MSG"), any other runs to
-- the end of its line. nil at the end, or on a framing error
local function read_frame (req)
  local c = req:read(1)
  if c == nil then return nil end
  if c == "\n" then return "" end
  if not c:find("^%d") then
    return c .. (req:read("l") or "")
  end
  local digits = c
  while true do                       -- the length, up to its space
    c = req:read(1)
    if c == nil or #digits > 7 then return nil end
    if c == " " then break end
    if not c:find("^%d") then return nil end
    digits = digits .. c
  end
  local len = tonumber(digits)
  if len > MAX_FRAME then return nil end
  local frame = req:read(len)
  if frame == nil or #frame < len then return nil end
  return frame
end

function M.handle (req)
  local transport = req.server.transport
  if transport == "udp" or transport == "unixgram" then
    return emit(req, parse(req.request))
  end
  while true do
    local frame = read_frame(req)
    if frame == nil then return end
    if frame:find("%S") then emit(req, parse(frame)) end
  end
end

function M.server_close ()
  if out ~= io.stdout then out:close() end
end

return M
