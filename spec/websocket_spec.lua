-- luasrv.http's r:websocket() and lua/luasrv/websocket.lua (RFC 6455):
-- Node's ws package (npm, installed by tools/ngx-fixtures) as the real
-- client, then raw sockets for what ws will not send, one group per area
-- of the Autobahn test suite: framing, pings, reserved bits, opcodes,
-- fragmentation, UTF-8, close handling; and the handshake's refusals.
local H = require "helper"
local T = H.T

local ROOT = H.ROOT
local BUILD = os.getenv("BUILD") or "build"

-- Node's ws: ngx_helper runs tools/ngx-fixtures once, which installs it
local N = require "ngx_helper"
local quote, fixtures = N.quote, N.node_path
local maybe = N.have("node") and it or pending

-- the server: /ws echoes (the text "close" makes it close with 4001);
-- /ws-ping has ping_interval; messages over 1000 bytes are refused
local SOURCE = ([[
package.path = %q .. "/lua/?.lua;" .. package.path
local http = require "luasrv.http"
local luasrv = require "luasrv"
local app = http.router()
local function echo (ws)
  for _ = 1, 100000 do
    local data, typ, code = ws:recv()
    if not data then return end
    if typ == "text" then
      if data == "close" then return ws:close(4001, "asked") end
      ws:send_text(data)
    elseif typ == "binary" then ws:send_binary(data)
    elseif typ == "close" then return end
  end
end
app:get("/ws", function (r)
  local ws = r:websocket{ protocols = { "chat", "other" },
    max_payload = 100000 }
  if ws then echo(ws) end
end)
app:get("/ws-small", function (r)
  local ws = r:websocket{ max_payload = 1000 }
  if ws then echo(ws) end
end)
app:get("/ws-ping", function (r)
  local ws = r:websocket{ ping_interval = 0.3 }
  if ws then echo(ws) end
end)
app:get("/ws-refused", function (r)
  local ws, err = r:websocket()
  if not ws then luasrv.log("refused: " .. err) end
end)
return app:handler()
]]):format(ROOT)

-- Node's ws client in MODE against srv's PATH; with ca, over wss:// on
-- srv's --tls listener, checking the certificate against ca
local function node (srv, path, mode, ca)
  local url = ca and ("wss://localhost:" .. srv.tls.port .. path)
              or ("ws://127.0.0.1:" .. srv.tcp.port .. path)
  local cmd = (ca and "WS_CA=" .. quote(ca) .. " " or "") ..
    "NODE_PATH=" .. quote(fixtures()) .. " timeout -k 2 30 node " ..
    "spec/fixtures/ws_client.js " .. quote(url) .. " " .. mode .. " 2>&1"
  local p = io.popen(cmd)
  local out = p:read("a")
  p:close()
  local cjson = require "cjson"
  local ok, v = pcall(cjson.decode, out)
  assert(ok, "node said: " .. out .. " (" .. cmd .. ")")
  return v
end

--[[ a raw client ]]

local KEY = "dGhlIHNhbXBsZSBub25jZQ=="          -- RFC 6455 1.3's example
local ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

local function handshake (path, extra)
  return "GET " .. path .. " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n" ..
    "Connection: Upgrade\r\nSec-WebSocket-Key: " .. KEY ..
    "\r\nSec-WebSocket-Version: 13\r\n" .. (extra or "") .. "\r\n"
end

local MASK = "\x37\xfa\x21\x3d"

local function masked (s)
  local t = {}
  for i = 1, #s do
    t[i] = string.char(s:byte(i) ~ MASK:byte((i - 1) % 4 + 1))
  end
  return table.concat(t)
end

-- a client frame: opcode, payload, fin (true), rsv bits (0), masked (true)
local function frame (opcode, payload, fin, rsv, unmasked)
  local n = #payload
  local b1 = (fin == false and 0 or 0x80) | ((rsv or 0) << 4) | opcode
  local m = unmasked and 0 or 0x80
  local head
  if n < 126 then head = string.char(b1, m | n)
  elseif n < 65536 then head = string.pack(">BBI2", b1, m | 126, n)
  else head = string.pack(">BBI8", b1, m | 127, n) end
  if unmasked then return head .. payload end
  return head .. MASK .. masked(payload)
end

local function close_frame (code, reason)
  return frame(8, string.pack(">I2", code) .. (reason or ""))
end

-- reads the response head of the handshake: status, head
local function read_head (c)
  local lines = {}
  for _ = 1, 50 do
    local line = assert(c:receive("l"))
    if line == "" or line == "\r" then break end
    lines[#lines + 1] = line
  end
  return tonumber(lines[1]:match("^HTTP/1%.1 (%d+)")),
    table.concat(lines, "\n")
end

-- reads one server frame: opcode, payload, fin
local function read_frame (c)
  local h, err = c:receive(2)
  if not h then return nil, err end
  local b1, b2 = h:byte(1, 2)
  assert(b2 & 0x80 == 0, "a server frame is never masked")
  local n = b2 & 0x7f
  if n == 126 then n = string.unpack(">I2", assert(c:receive(2)))
  elseif n == 127 then n = string.unpack(">I8", assert(c:receive(8))) end
  local payload = n > 0 and assert(c:receive(n)) or ""
  return b1 & 0xf, payload, b1 & 0x80 ~= 0
end

-- the close the server sends: its code (nil for none); then the
-- connection must end
local function expect_close (c)
  local op, payload = read_frame(c)
  assert.equal(8, op)
  local code = #payload >= 2 and string.unpack(">I2", payload) or nil
  local more, err = c:receive(1)
  assert.is_nil(more)
  assert.equal("closed", err)
  return code
end

H.for_models(function (model)
  describe("WebSocket (" .. model .. ")", function ()
    local srv

    before_each(function ()
      srv = H.start{ model = model, source = SOURCE, tcp = true }
    end)

    -- an upgraded raw client on path
    local function open (path, extra)
      local c = H.connect(srv, 5)
      c:send(handshake(path or "/ws", extra))
      local status, head = read_head(c)
      assert.equal(101, status, head)
      return c, head
    end

    describe("with Node's ws", function ()
      maybe("echoes text and binary (a 64-bit length)", function ()
        local t = node(srv, "/ws", "text")
        assert.same({ data = "héllo wörld", isBinary = false }, t)
        local b = node(srv, "/ws", "binary")
        assert.same({ same = true, length = 70000, isBinary = true }, b)
      end)

      maybe("reassembles a fragmented message, a ping between fragments",
        function ()
        assert.same({ data = "fragmented" }, node(srv, "/ws", "fragmented"))
      end)

      maybe("answers a ping with a pong of its payload", function ()
        assert.same({ pong = "are you there" }, node(srv, "/ws", "ping"))
      end)

      maybe("echoes the client's close code; closes with its own", function ()
        assert.same({ code = 4000, reason = "" }, node(srv, "/ws", "close"))
        assert.same({ code = 4001, reason = "asked" },
          node(srv, "/ws", "server_close"))
      end)

      maybe("picks the first of its subprotocols the client offers", function ()
        assert.same({ protocol = "chat" }, node(srv, "/ws", "protocol"))
      end)

      maybe("pings an idle client every ping_interval", function ()
        local r = node(srv, "/ws-ping", "pings")
        assert.is_true(r.pings >= 2, "pings: " .. tostring(r.pings))
      end)

      maybe("echoes 10,000 messages sent at once, none lost, in order",
        function ()
        assert.same({ got = 10000, bad = 0 }, node(srv, "/ws", "many"))
      end)
    end)

    describe("the handshake", function ()
      it("answers 101 with the accept key of RFC 6455", function ()
        local _, head = open("/ws")
        assert.truthy(head:find("Sec-WebSocket-Accept: " .. ACCEPT, 1, true))
        assert.truthy(head:find("Upgrade: websocket", 1, true))
        assert.falsy(head:find("Sec-WebSocket-Protocol", 1, true))
      end)

      it("takes frames sent with the handshake, in one segment", function ()
        local c = H.connect(srv, 5)
        c:send(handshake("/ws") .. frame(1, "early"))
        assert.equal(101, (read_head(c)))
        local op, payload = read_frame(c)
        assert.equal(1, op)
        assert.equal("early", payload)
      end)

      local function refused (req)
        local c = H.connect(srv, 5)
        c:send(req)
        return read_head(c)
      end

      it("refuses what is not an upgrade: 426, 400", function ()
        local status, head = refused(
          "GET /ws-refused HTTP/1.1\r\nHost: x\r\n\r\n")
        assert.equal(426, status)
        assert.truthy(head:find("Upgrade: websocket", 1, true))
        status = refused((handshake("/ws-refused"):gsub("Connection: Upgrade",
          "Connection: keep-alive")))
        assert.equal(400, status)
        status, head = refused((handshake("/ws-refused"):gsub("Version: 13",
          "Version: 8")))
        assert.equal(426, status)
        assert.truthy(head:find("Sec-WebSocket-Version: 13", 1, true))
        status = refused((handshake("/ws-refused"):gsub(KEY, "short")))
        assert.equal(400, status)
        status = refused((handshake("/ws-refused"):gsub("HTTP/1.1",
          "HTTP/1.0")))
        assert.equal(400, status)
        assert.truthy(H.eventually(function ()
          return srv:stderr():find("refused: bad Sec-WebSocket-Key", 1, true)
        end, 5))
      end)
    end)

    describe("framing", function ()
      it("takes 7-bit, 16-bit and 64-bit lengths, and a frame byte by byte",
        function ()
        local c = open()
        for _, n in ipairs{ 0, 125, 126, 65535, 65536 } do
          c:send(frame(2, string.rep("b", n)))
          local op, payload = read_frame(c)
          assert.equal(2, op)
          assert.equal(n, #payload)
        end
        local f = frame(1, "slow")
        for i = 1, #f do c:send(f:sub(i, i)); T.sleep(0.01) end
        local op, payload = read_frame(c)
        assert.equal(1, op)
        assert.equal("slow", payload)
      end)

      it("closes with 1002 on an unmasked client frame", function ()
        local c = open()
        c:send(frame(1, "plain", true, 0, true))
        assert.equal(1002, expect_close(c))
      end)

      it("closes with 1009 on a message over max_payload", function ()
        local c = open("/ws-small")
        c:send(frame(1, string.rep("a", 1001)))
        assert.equal(1009, expect_close(c))
        c = open("/ws-small")
        c:send(frame(1, string.rep("a", 600), false) ..
          frame(0, string.rep("a", 600)))
        assert.equal(1009, expect_close(c))
      end)

      it("closes with 1009 on the header of a fragment that takes the " ..
        "message over max_payload, before its payload comes", function ()
        local c = open("/ws-small")
        local f = frame(0, string.rep("a", 600))
        c:send(frame(1, string.rep("a", 600), false) .. f:sub(1, 8))
        assert.equal(1009, expect_close(c))
      end)
    end)

    describe("pings", function ()
      it("answers a ping of 125 bytes with its payload; a message after",
        function ()
        local c = open()
        local p = string.rep("p", 125)
        c:send(frame(9, p) .. frame(1, "after"))
        local op, payload = read_frame(c)
        assert.equal(10, op)
        assert.equal(p, payload)
        op, payload = read_frame(c)
        assert.equal(1, op)
        assert.equal("after", payload)
      end)

      it("closes with 1002 on a ping over 125 bytes", function ()
        local c = open()
        c:send(frame(9, string.rep("p", 126)))
        assert.equal(1002, expect_close(c))
      end)

      it("takes an unsolicited pong", function ()
        local c = open()
        c:send(frame(10, "hi") .. frame(1, "still here"))
        local op, payload = read_frame(c)
        assert.equal(1, op)
        assert.equal("still here", payload)
      end)
    end)

    describe("reserved bits and opcodes", function ()
      for _, rsv in ipairs{ 1, 2, 4, 7 } do
        it("closes with 1002 on reserved bits " .. rsv, function ()
          local c = open()
          c:send(frame(1, "x", true, rsv))
          assert.equal(1002, expect_close(c))
        end)
      end

      for _, op in ipairs{ 3, 7, 11, 15 } do
        it("closes with 1002 on opcode " .. op, function ()
          local c = open()
          c:send(frame(op, "x"))
          assert.equal(1002, expect_close(c))
        end)
      end
    end)

    describe("fragmentation", function ()
      it("reassembles fragments with a ping between them", function ()
        local c = open()
        c:send(frame(1, "Hel", false) .. frame(9, "p") .. frame(0, "lo", false)
          .. frame(0, "!"))
        local op, payload = read_frame(c)
        assert.equal(10, op)
        assert.equal("p", payload)
        op, payload = read_frame(c)
        assert.equal(1, op)
        assert.equal("Hello!", payload)
      end)

      it("closes with 1002 on a continuation with no message", function ()
        local c = open()
        c:send(frame(0, "x"))
        assert.equal(1002, expect_close(c))
      end)

      it("closes with 1002 on a new message inside a fragmented one",
        function ()
        local c = open()
        c:send(frame(1, "a", false) .. frame(1, "b"))
        assert.equal(1002, expect_close(c))
      end)

      it("closes with 1002 on a fragmented ping", function ()
        local c = open()
        c:send(frame(9, "a", false))
        assert.equal(1002, expect_close(c))
      end)
    end)

    describe("UTF-8", function ()
      it("takes a code point split between fragments", function ()
        local c = open()
        local s = "κόσμε"
        c:send(frame(1, s:sub(1, 3), false) .. frame(0, s:sub(4)))
        local op, payload = read_frame(c)
        assert.equal(1, op)
        assert.equal(s, payload)
      end)

      for name, s in pairs{ surrogate = "\xce\xba\xed\xa0\x80",
          overlong = "\xc0\xaf", ["over U+10FFFF"] = "\xf4\x90\x80\x80",
          truncated = "ab\xe2\x82" } do
        it("closes with 1007 on text that is not UTF-8: " .. name, function ()
          local c = open()
          c:send(frame(1, s))
          assert.equal(1007, expect_close(c))
        end)
      end

      it("takes a 4-byte code point split between fragments, a ping amid",
        function ()
        local c = open()
        c:send(frame(1, "a\xf0\x9f", false) .. frame(9, "p") ..
          frame(0, "\x98", false) .. frame(0, "\x80z"))
        local op, payload = read_frame(c)
        assert.equal(10, op)
        assert.equal("p", payload)
        op, payload = read_frame(c)
        assert.equal(1, op)
        assert.equal("a\xf0\x9f\x98\x80z", payload)
      end)

      it("takes text sent one byte a fragment", function ()
        local c = open()
        local s = "κόσμε \xf0\x9f\x98\x80"
        local t = {}
        for i = 1, #s do
          t[i] = frame(i == 1 and 1 or 0, s:sub(i, i), i == #s)
        end
        c:send(table.concat(t))
        local op, payload = read_frame(c)
        assert.equal(1, op)
        assert.equal(s, payload)
      end)

      -- the final fragment is never sent: the server must not wait for it
      for name, s in pairs{ ["a byte never valid"] = "ok\xff",
          overlong = "ab\xc0\xaf", ["3-byte overlong"] = "\xe0\x80\xaf",
          surrogate = "\xed\xa0\x80", ["over U+10FFFF"] = "\xf4\x90\x80\x80",
          ["a lead then ASCII"] = "\xc3(" } do
        it("closes with 1007 on a first fragment that is not UTF-8 (" ..
          name .. ") before the rest comes", function ()
          local c = open()
          c:send(frame(1, s, false))
          assert.equal(1007, expect_close(c))
        end)
      end

      it("closes with 1007 on a surrogate split between fragments",
        function ()
        local c = open()
        c:send(frame(1, "x\xed", false) .. frame(0, "\xb0\x80", false))
        assert.equal(1007, expect_close(c))
      end)

      it("closes with 1007 on a message whose last fragment ends mid code " ..
        "point", function ()
        local c = open()
        c:send(frame(1, "\xe2\x82", false) .. frame(0, "\xac\xe2"))
        assert.equal(1007, expect_close(c))
      end)

      it("takes binary that is not UTF-8", function ()
        local c = open()
        c:send(frame(2, "\xff\xfe"))
        local op, payload = read_frame(c)
        assert.equal(2, op)
        assert.equal("\xff\xfe", payload)
      end)
    end)

    describe("close handling", function ()
      for _, code in ipairs{ 1000, 1001, 1003, 1007, 1011, 1014, 3000, 4999 } do
        it("echoes close code " .. code .. " and ends", function ()
          local c = open()
          c:send(close_frame(code, "why"))
          assert.equal(code, expect_close(c))
        end)
      end

      it("answers an empty close with an empty close", function ()
        local c = open()
        c:send(frame(8, ""))
        assert.is_nil(expect_close(c))
      end)

      for _, code in ipairs{ 0, 999, 1004, 1005, 1006, 1015, 1016, 2000,
          2999, 5000, 65535 } do
        it("closes with 1002 on close code " .. code, function ()
          local c = open()
          c:send(close_frame(code))
          assert.equal(1002, expect_close(c))
        end)
      end

      it("closes with 1002 on a close payload of 1 byte", function ()
        local c = open()
        c:send(frame(8, "\3"))
        assert.equal(1002, expect_close(c))
      end)

      it("closes with 1007 on a close reason that is not UTF-8", function ()
        local c = open()
        c:send(close_frame(1000, "\xff"))
        assert.equal(1007, expect_close(c))
      end)

      it("sends nothing after its close", function ()
        local c = open()
        c:send(close_frame(1000) .. frame(1, "late"))
        assert.equal(1000, expect_close(c))
      end)

      it("closes its side first when it starts the close", function ()
        local c = open()
        c:send(frame(1, "close"))
        local op, payload = read_frame(c)
        assert.equal(8, op)
        assert.equal(4001, string.unpack(">I2", payload))
        assert.equal("asked", payload:sub(3))
        c:send(close_frame(4001))
        local more, err = c:receive(1)
        assert.is_nil(more)
        assert.equal("closed", err)
      end)
    end)
  end)

  describe("WebSocket over TLS (wss://, " .. model .. ")", function ()
    -- Node's ws checks the server's certificate against the test CA
    maybe("echoes text, binary, fragments, pings and 10,000 messages",
          function ()
      local C = require "tls_certs"
      local d = C.dir()
      local srv = H.start{ model = model, source = SOURCE, args = {
        "--tls", "127.0.0.1:0", "--tls-cert", d .. "/server.pem",
        "--tls-key", d .. "/server.key" } }
      local ca = d .. "/ca.pem"
      assert.same({ data = "héllo wörld", isBinary = false },
                  node(srv, "/ws", "text", ca))
      local b = node(srv, "/ws", "binary", ca)
      assert.same({ same = true, length = 70000, isBinary = true }, b)
      assert.same({ data = "fragmented" }, node(srv, "/ws", "fragmented", ca))
      assert.same({ pong = "are you there" }, node(srv, "/ws", "ping", ca))
      assert.same({ code = 4000, reason = "" }, node(srv, "/ws", "close", ca))
      assert.same({ got = 10000, bad = 0 }, node(srv, "/ws", "many", ca))
    end)
  end)
end)

-- the frame functions alone, in this Lua (no server): luasrv.websocket
-- without luasrv.ngxc uses its Lua mask
describe("luasrv.websocket's frame functions", function ()
  package.path = ROOT .. "/lua/?.lua;" .. package.path
  local ws = require "luasrv.websocket"

  it("masks as RFC 6455 5.3 says, at every length and alignment", function ()
    local key = "\x37\xfa\x21\x3d"
    for n = 0, 300 do
      local t = {}
      for i = 1, n do t[i] = string.char((i * 31 + n) % 256) end
      local s = table.concat(t)
      assert.equal(masked(s), ws.lua_mask(s, key), "length " .. n)
      assert.equal(s, ws.lua_mask(ws.lua_mask(s, key), key))
    end
  end)

  it("reads back the header of the frames it makes", function ()
    for _, n in ipairs{ 0, 1, 125, 126, 65535, 65536, 70000 } do
      local payload = string.rep("z", n)
      local f = ws.frame(2, payload, false, "abcd")
      local opcode, fin, key, len, p = ws.parse_header(f, 1)
      assert.same({ 2, false, "abcd", n }, { opcode, fin, key, len })
      assert.equal(payload, ws.lua_mask(f:sub(p), key))
      assert.is_nil(ws.parse_header(f:sub(1, p - 2), 1))   -- not whole yet
    end
  end)

  it("refuses the headers no frame may have", function ()
    local function code (b1, b2)
      local ok, c = ws.parse_header(string.char(b1, b2) .. "\0\200abcd", 1)
      assert.is_false(ok)
      return c
    end
    assert.equal(1002, code(0xC1, 0x80))       -- RSV1
    assert.equal(1002, code(0x83, 0x80))       -- opcode 3
    assert.equal(1002, code(0x09, 0x80))       -- fragmented ping
    assert.equal(1002, code(0x89, 0xFE))       -- ping of 126+ bytes
    local ok, c = ws.parse_header("\x82\xFF\x80" .. string.rep("\0", 7) ..
      "abcd", 1)                               -- a length over 2^63
    assert.same({ false, 1002 }, { ok, c })
  end)

  it("reads close payloads and knows the codes that may be sent", function ()
    assert.same({ 1000, "bye" }, { ws.parse_close("\3\232bye") })
    assert.same({ nil, 1005 }, { ws.parse_close("") })
    local ok, c = ws.parse_close("\3")
    assert.same({ false, 1002 }, { ok, c })
    assert.equal(1002, select(2, ws.parse_close("\3\237")))       -- 1005
    assert.equal(1007, select(2, ws.parse_close("\3\232\xff")))
    for _, c in ipairs{ 1000, 1003, 1007, 1014, 3000, 4999 } do
      assert.is_true(ws.valid_close_code(c), c)
    end
    for _, c in ipairs{ 999, 1004, 1005, 1006, 1015, 2999, 5000 } do
      assert.is_false(ws.valid_close_code(c), c)
    end
  end)
end)
