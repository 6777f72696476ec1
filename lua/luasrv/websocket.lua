--[==[ luasrv.websocket -- WebSocket (RFC 6455), the server side: frames,
the handshake's accept key, and a connection object over a luasrv
connection. luasrv.http's r:websocket() does the handshake and hands the
connection here; the frame functions are pure and can be used alone.

  app:get("/ws", function (r)
    local ws = assert(r:websocket{ protocols = { "chat" } })
    while true do
      local data, typ, code = ws:recv()
      if not data then break end              -- closed, timeout, error
      if typ == "text" then ws:send_text(data)
      elseif typ == "binary" then ws:send_binary(data)
      elseif typ == "close" then break end    -- answered already
    end
  end)

The connection object:
  ws:recv()   data, type: "text", "binary", "ping" (answered with a pong
              already), "pong", or "close" (data is the reason, the third
              value the code; the close is answered already); nil and
              "closed", "timeout" or what went wrong (the connection has
              then been closed with the right code: 1002 for a protocol
              error, 1007 for text that is not UTF-8, 1009 for a message
              over max_payload)
  ws:send_text(s), ws:send_binary(s), ws:ping([s]), ws:pong([s])
              true, or nil and an error; each sends now
  ws:close([code [, reason]])  the close handshake: sends a close frame,
              waits up to close_timeout for the peer's, closes
  ws.protocol  the subprotocol chosen (or nil)

Options (r:websocket's opts):
  protocols     the subprotocols the server speaks, preferred first
  max_payload   bytes in one message (all its fragments), else close 1009
                (1 MiB)
  timeout       seconds recv waits for a frame (nil: --timeout)
  ping_interval seconds of silence after which recv sends a ping; when
                another interval passes without a byte from the peer, the
                connection is dead: closed, and recv returns nil, "timeout"
  close_timeout seconds ws:close waits for the peer's close frame (5)

Messages are reassembled from their fragments before recv returns them;
control frames between fragments are handled as they come. Text is
checked to be UTF-8 as each fragment comes: a fragment with an invalid
sequence fails the connection (1007) at once, while a code point split
between two fragments is whole again in the next.
]==]

-- (luasrv.ngxc and luasrv are the binary's: without them, as in a plain
-- lua5.4, the frame functions still work, for tests)
local has_ngxc, ngxc = pcall(require, "luasrv.ngxc")
if not has_ngxc then ngxc = {} end
local function now () return require("luasrv").now() end

local byte, char, sub, pack, unpack, rep = string.byte, string.char,
  string.sub, string.pack, string.unpack, string.rep
local concat = table.concat
local utf8len = utf8.len

local M = {}

M.defaults = {
  max_payload = 1024 * 1024,
  timeout = nil,
  ping_interval = nil,
  close_timeout = 5,
}

local GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

-- The Sec-WebSocket-Accept value for a Sec-WebSocket-Key
function M.accept_key (key)
  return ngxc.encode_base64(ngxc.sha1_bin(key .. GUID))
end

-- Is key a valid Sec-WebSocket-Key (16 bytes, base64: 24 characters)?
function M.valid_key (key)
  if type(key) ~= "string" or #key ~= 24 then return false end
  local raw = ngxc.decode_base64(key)
  return raw ~= nil and #raw == 16
end

M.TEXT, M.BINARY, M.CLOSE, M.PING, M.PONG, M.CONTINUATION =
  0x1, 0x2, 0x8, 0x9, 0xA, 0x0
local TYPES = { [0x1] = "text", [0x2] = "binary", [0x8] = "close",
  [0x9] = "ping", [0xA] = "pong" }

--[[ Masking. In C (luasrv.ngxc's mask): in Lua it is the cost of a
small message (4 us for 64 bytes, 60 MB/s for big ones, where the rest of
a frame costs about 1 us). The Lua one, kept for luasrv.ngxc without
mask: 8 bytes at a time: string.unpack and pack of 16
64-bit integers per call (128 bytes), each XORed with the key repeated
twice; the tail byte by byte. ]]

local BLOCK_FMT = "<" .. rep("i8", 16)
local block = load([[
  local unpack, pack, fmt = ...
  return function (s, i, k)
    local a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14,
      a15, a16 = unpack(fmt, s, i)
    return pack(fmt, a1 ~ k, a2 ~ k, a3 ~ k, a4 ~ k, a5 ~ k, a6 ~ k,
      a7 ~ k, a8 ~ k, a9 ~ k, a10 ~ k, a11 ~ k, a12 ~ k, a13 ~ k, a14 ~ k,
      a15 ~ k, a16 ~ k)
  end]])(unpack, pack, BLOCK_FMT)

-- data XORed with the 4-byte key (masking and unmasking are the same)
function M.lua_mask (data, key)
  local n = #data
  if n == 0 then return data end
  local k4 = unpack("<I4", key)
  local k8 = k4 | (k4 << 32)
  local parts, np, i = {}, 0, 1
  while i + 127 <= n do
    np = np + 1
    parts[np] = block(data, i, k8)
    i = i + 128
  end
  while i + 7 <= n do
    np = np + 1
    parts[np] = pack("<i8", unpack("<i8", data, i) ~ k8)
    i = i + 8
  end
  -- the tail (under 8 bytes): i - 1 is a multiple of 8, so the key
  -- starts again at its first byte
  if i <= n then
    local k = { byte(key, 1, 4) }
    local t = {}
    for j = i, n do
      t[#t + 1] = char(byte(data, j) ~ k[(j - i) % 4 + 1])
    end
    np = np + 1
    parts[np] = concat(t)
  end
  return concat(parts)
end

-- luasrv.ngxc's mask in C when there (1 GB/s and more), else the Lua one
M.mask = ngxc.mask or M.lua_mask

--[[ Frames ]]

-- A frame: opcode, payload, fin (default true), mask key (4 bytes: a
-- client's frame; nil: a server's, unmasked).
function M.frame (opcode, payload, fin, key)
  payload = payload or ""
  local n = #payload
  local b1 = (fin == false and 0 or 0x80) | opcode
  local m = key and 0x80 or 0
  local head
  if n < 126 then head = char(b1, m | n)
  elseif n < 65536 then head = pack(">BBI2", b1, m | 126, n)
  else head = pack(">BBI8", b1, m | 127, n) end
  if key then return head .. key .. M.mask(payload, key) end
  return head .. payload
end

-- The header of a frame at pos of buf: opcode, fin, the mask key (or
-- nil), the payload length, and the position of the payload. nil when
-- buf does not hold the whole header yet; false, the code to close with
-- and why for a header no frame may have (RFC 6455 5.2, 5.5).
function M.parse_header (buf, pos)
  local b1, b2 = byte(buf, pos, pos + 1)
  if not b2 then return nil end
  local fin, rsv, opcode = b1 & 0x80 ~= 0, b1 & 0x70, b1 & 0xF
  local n = b2 & 0x7F
  local p = pos + 2
  if n == 126 then
    if #buf < p + 1 then return nil end
    n = unpack(">I2", buf, p)
    p = p + 2
  elseif n == 127 then
    if #buf < p + 7 then return nil end
    n = unpack(">i8", buf, p)
    if n < 0 then return false, 1002, "payload length over 2^63" end
    p = p + 8
  end
  local key
  if b2 & 0x80 ~= 0 then
    if #buf < p + 3 then return nil end
    key = sub(buf, p, p + 3)
    p = p + 4
  end
  if rsv ~= 0 then return false, 1002, "reserved bits set" end
  if not TYPES[opcode] and opcode ~= 0 then
    return false, 1002, "unknown opcode " .. opcode
  end
  if opcode >= 8 then
    if not fin then return false, 1002, "fragmented control frame" end
    if n > 125 then return false, 1002, "control frame over 125 bytes" end
  end
  return opcode, fin, key, n, p
end

-- May code be sent in a close frame (RFC 6455 7.4; 1012-1014 since
-- registered with IANA)? 1004-1006 and 1015 never; 1016-2999 are
-- reserved; 3000-4999 are the libraries' and applications'.
function M.valid_close_code (code)
  return math.type(code) == "integer" and ((code >= 1000 and code <= 1003)
    or (code >= 1007 and code <= 1014) or (code >= 3000 and code <= 4999))
end

-- A close frame's payload: code and reason; or nil, 1005 (no code) for
-- an empty one; or false, the code to close with and why.
function M.parse_close (payload)
  if payload == "" then return nil, 1005 end
  if #payload == 1 then return false, 1002, "close payload of 1 byte" end
  local code = unpack(">I2", payload)
  if not M.valid_close_code(code) then
    return false, 1002, "invalid close code " .. code
  end
  local reason = sub(payload, 3)
  if not utf8len(reason) then
    return false, 1007, "close reason not UTF-8"
  end
  return code, reason
end

-- The payload of a close frame with code and reason
function M.close_payload (code, reason)
  if not code then return "" end
  return pack(">I2", code) .. (reason or "")
end

--[[ The connection. Its frames go through luasrv.ngxc's ws_recv and
ws_send (lws.c), which read a whole frame from the connection's input
buffer (checked, unmasked, its text checked as UTF-8 fragment by
fragment) and write one with its header in one piece: done here in Lua,
the frames of a small message cost more than the rest of the server. ]]

local ws_recv, ws_send, ws_unread = ngxc.ws_recv, ngxc.ws_send,
  ngxc.ws_unread
local maxinteger = math.maxinteger

local WS = {}
WS.__index = WS

-- A WebSocket on the luasrv connection conn, with buffered the bytes
-- already read past the handshake. opts: see the head of this file.
function M.new (conn, buffered, opts)
  local o = {}
  for k, v in pairs(M.defaults) do o[k] = v end
  for k, v in pairs(opts or {}) do o[k] = v end
  local max = o.max_payload
  o.max_payload = max >= maxinteger and maxinteger or math.floor(max)
  if buffered and buffered ~= "" then assert(ws_unread(conn, buffered)) end
  return setmetatable({ conn = conn, opts = o, closed = false,
    close_sent = false, timeout = false, pinged = false,
    recv_timeout = o.ping_interval or o.timeout,
    protocol = o.protocol }, WS)
end

-- Sets the connection's timeout for the next wait (only when it changes)
local function set_timeout (self, t)
  if t ~= self.timeout then
    self.conn:settimeout(t)
    self.timeout = t
  end
end

-- Sends a frame now; true, or nil and the error.
local function send (self, opcode, payload, fin)
  if self.close_sent then return nil, "closed" end
  if opcode == M.CLOSE then self.close_sent = true end
  return ws_send(self.conn, opcode, payload, fin)
end

-- Fails the connection: a close frame with code, then the end of it.
-- Returns nil and reason (what recv returns).
local function fail (self, code, reason)
  if not self.close_sent then send(self, M.CLOSE, M.close_payload(code)) end
  self.closed = true
  self.conn:close()
  return nil, reason
end

-- What to do after a ws_recv that brought no frame (payload nil or
-- false, err, got: what it returned), t the wait's timeout (nil: recv's,
-- with ping_interval's ping when the peer is silent): true to read
-- again (after that ping), or nil and the error (after failing the
-- connection for a bad frame).
local function missed (self, t, payload, err, got)
  if payload == false then return fail(self, err, got) end  -- code, why
  if got then self.pinged = false end     -- a byte came: alive
  if err ~= "timeout" or t or not self.opts.ping_interval or self.pinged then
    return nil, err
  end
  self.pinged = true
  local ok, werr = self:ping("")
  if not ok then return nil, werr end
  return true
end

-- The next frame, in a message of type kind (0: none begun) that may
-- still grow by max bytes, state its UTF-8 state so far: payload
-- (unmasked), opcode, fin, the UTF-8 state after it; or nil and an error.
-- t: the wait's timeout (nil: recv's).
local function read_frame (self, t, max, kind, state)
  while true do       -- bounded: a ping, then the peer is dead or talks
    set_timeout(self, t or self.recv_timeout)
    local payload, opcode, fin, st = ws_recv(self.conn, max, kind, state)
    if payload then
      self.pinged = false
      return payload, opcode, fin, st
    end
    local again, err = missed(self, t, payload, opcode, fin)
    if not again then return nil, err end
  end
end

-- A close frame from the peer: answered (with its code), and the end.
-- Returns what recv returns: the reason, "close", the code.
local function peer_close (self, payload)
  local code, reason, why = M.parse_close(payload)
  if code == false then return fail(self, reason, why) end
  if not self.close_sent then
    send(self, M.CLOSE, M.close_payload(code))
  end
  self.closed = true
  self.conn:close()
  if code then return reason, "close", code end
  return "", "close", 1005
end

-- recv's end when read_frame brought no frame but err
local function recv_failed (self, err)
  if self.closed then return nil, err end
  if err == "timeout" then
    if self.opts.ping_interval then return fail(self, 1001, "timeout") end
    return nil, "timeout"
  end
  self.closed = true          -- the peer went away without a close
  self.conn:close()
  return nil, err
end

-- recv past its first frame (payload ... st; payload nil: none yet):
-- control frames, fragments, and waits that brought no frame.
local function recv_more (self, payload, opcode, fin, st)
  local max = self.opts.max_payload
  local parts, size, kind, state = nil, 0, 0, 0
  while true do        -- bounded: each frame is read from the peer
    if payload == nil then
      payload, opcode, fin, st = read_frame(self, nil, max - size, kind,
        state)
      if not payload then return recv_failed(self, opcode) end
    end
    if opcode < 8 then            -- data (ws_recv checked the sequence)
      if fin and kind == 0 then return payload, TYPES[opcode] end
      if kind == 0 then kind, parts = opcode, {} end
      parts[#parts + 1] = payload
      size, state = size + #payload, st
      if fin then return concat(parts), TYPES[kind] end
    elseif opcode == M.CLOSE then return peer_close(self, payload)
    elseif opcode == M.PING then
      send(self, M.PONG, payload)
      if kind == 0 then return payload, "ping" end
    elseif kind == 0 then return payload, "pong"
    end
    -- (a ping or pong amid a fragmented message: answered, the message
    -- goes on)
    payload = nil
  end
end

-- The next message or control frame (see the head of this file). The
-- usual case, a message in one frame, is read here; recv_more does the
-- rest.
function WS:recv ()
  if self.closed then return nil, "closed" end
  local t = self.recv_timeout
  if t ~= self.timeout then set_timeout(self, t) end
  local payload, opcode, fin, st = ws_recv(self.conn, self.opts.max_payload,
    0, 0)
  if payload and fin and opcode < 8 then
    if self.pinged then self.pinged = false end
    return payload, TYPES[opcode]
  end
  if payload then
    self.pinged = false
  else
    local again, err = missed(self, nil, payload, opcode, fin)
    if not again then return recv_failed(self, err) end
  end
  return recv_more(self, payload or nil, opcode, fin, st)
end

function WS:send_text (s)
  if self.close_sent then return nil, "closed" end
  return ws_send(self.conn, 1, s)
end

function WS:send_binary (s)
  if self.close_sent then return nil, "closed" end
  return ws_send(self.conn, 2, s)
end


function WS:ping (s)
  if s and #s > 125 then error("ping payload over 125 bytes", 2) end
  return send(self, M.PING, s)
end

function WS:pong (s)
  if s and #s > 125 then error("pong payload over 125 bytes", 2) end
  return send(self, M.PONG, s)
end

-- The close handshake from this side: a close frame, then the peer's
-- (data frames before it are dropped), up to close_timeout; then the end.
function WS:close (code, reason)
  if self.closed then return nil, "closed" end
  if code ~= nil and not M.valid_close_code(code) then
    error("invalid close code: " .. tostring(code), 2)
  end
  if reason and #reason > 123 then error("close reason over 123 bytes", 2) end
  local ok, err = send(self, M.CLOSE, M.close_payload(code, reason))
  if ok then
    local deadline = now() + (self.opts.close_timeout or 5)
    local kind, state = 0, 0   -- of a fragmented message being dropped
    for _ = 1, 1000 do         -- bounded: frames until the peer's close
      local t = deadline - now()
      if t <= 0 then break end
      local payload, opcode, fin, st = read_frame(self, t, maxinteger, kind,
        state)
      if not payload or opcode == M.CLOSE then break end
      if opcode < 8 then
        if fin then kind, state = 0, 0
        else kind, state = kind ~= 0 and kind or opcode, st end
      end
    end
  end
  self.closed = true
  self.conn:close()
  if not ok then return nil, err end
  return true
end

return M
