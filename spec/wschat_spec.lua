-- scripts/wschat.lua: a WebSocket chat room on queues. Node's ws package
-- (installed by tools/ngx-fixtures into BUILD/ngx/node) drives several
-- clients (spec/fixtures/wschat_client.js); raw sockets check a slow
-- reader and the leave of a client that just goes away. The room needs
-- the event model; the others are refused (the script says why).
local H = require "helper"

local ROOT = H.ROOT
local BUILD = os.getenv("BUILD") or "build"
local SCRIPT = "scripts/wschat.lua"

-- Node's ws: ngx_helper runs tools/ngx-fixtures once, which installs it
local N = require "ngx_helper"
local quote, fixtures = N.quote, N.node_path
local maybe = N.have("node") and it or pending

-- a raw client that joins as name: the connection, after the 101
local function join (srv, name)
  local c = H.connect(srv)
  c:settimeout(5)
  c:send("GET /chat?name=" .. name .. " HTTP/1.1\r\nHost: x\r\n" ..
    "Upgrade: websocket\r\nConnection: Upgrade\r\n" ..
    "Sec-WebSocket-Version: 13\r\n" ..
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
  assert.matches("^HTTP/1%.1 101 ", assert(c:receive("l")))
  for _ = 1, 20 do
    if assert(c:receive("l")) == "" then break end
  end
  return c
end

-- a masked text frame (a zero mask: the payload as it is)
local function text (s)
  assert(#s < 126)
  return string.char(0x81, 0x80 | #s) .. "\0\0\0\0" .. s
end

-- the next server frame's payload (a text frame is asserted)
local function recv_text (c)
  local h = assert(c:receive(2))
  local b1, n = h:byte(1, 2)
  assert.equals(0x81, b1)
  if n == 126 then n = string.unpack(">I2", assert(c:receive(2))) end
  return n > 0 and assert(c:receive(n)) or ""
end

local function has (list, s)
  for _, v in ipairs(list) do if v == s then return true end end
  return false
end

describe("scripts/wschat.lua", function ()
  maybe("sends each message to every other client; a client that leaves "
    .. "is removed (Node's ws, 5 clients)", function ()
    local srv = H.start{ model = "event", script = SCRIPT, tcp = true }
    local N = 5
    local p = io.popen("NODE_PATH=" .. quote(fixtures()) ..
      " timeout -k 2 30 node spec/fixtures/wschat_client.js " ..
      quote("ws://127.0.0.1:" .. srv.tcp.port) .. " " .. N)
    local out = p:read("a")
    p:close()
    local ok, v = pcall(require("cjson").decode, out)
    assert(ok, "node said: " .. out)
    assert.is_nil(v.error, out)
    assert.equals(1000, v.code)
    local got = v.got
    for i = 2, N do                   -- c0's hello reached every other
      assert.is_true(has(got[i], "<c0> hello from c0"), out)
    end
    assert.is_false(has(got[1], "<c0> hello from c0"), out) -- not itself
    assert.is_true(has(got[1], "* in the room: c0, c1, c2, c3, c4"), out)
    assert.is_true(has(got[1], "* in the room: c0, c1, c2, c3"), out)
    for _, i in ipairs{ 1, 3, 4 } do  -- c1's "after": to c0, c2, c3
      assert.is_true(has(got[i], "<c1> after"), out)
      assert.is_true(has(got[i], "* c4 left"), out)
    end
    assert.is_false(has(got[2], "<c1> after"), out)
    assert.is_false(has(got[N], "<c1> after"), out) -- c4 had left
    -- only c0 asked /who: nobody else got its answers
    for i = 2, N do
      for _, m in ipairs(got[i]) do
        assert.is_nil(m:find("in the room", 1, true), out)
      end
    end
  end)

  it("removes a client whose connection just goes away (no close frame)",
    function ()
    local srv = H.start{ model = "event", script = SCRIPT, tcp = true }
    local a = join(srv, "ann")
    local b = join(srv, "bob")
    assert.equals("* bob joined", recv_text(a))
    b:close()
    assert.equals("* bob left", recv_text(a))
    a:send(text("/who"))
    assert.equals("* in the room: ann", recv_text(a))
  end)

  it("a client that does not read delays nobody else", function ()
    local srv = H.start{ model = "event", script = SCRIPT, tcp = true }
    local lazy = join(srv, "lazy")    -- never reads
    local a = join(srv, "ann")
    local b = join(srv, "bob")
    assert.equals("* bob joined", recv_text(a))
    local big = ("x"):rep(120)
    for i = 1, 300 do                 -- ~37 KB to lazy, unread
      a:send(text(big))
      assert.equals("<ann> " .. big, recv_text(b), "message " .. i)
    end
    lazy:close()
  end)

  it("answers GET / with help, and refuses a plain GET /chat", function ()
    local srv = H.start{ model = "event", script = SCRIPT, tcp = true }
    local c = H.connect(srv)
    c:settimeout(5)
    c:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.matches("^HTTP/1%.1 200 ", assert(c:receive("l")))
    c:send("GET /chat HTTP/1.1\r\nHost: x\r\n\r\n")
    local line
    for _ = 1, 30 do                  -- skip the first response
      line = assert(c:receive("l"))
      if line:match("^HTTP/") then break end
    end
    assert.matches("^HTTP/1%.1 426 ", line)
  end)

  for _, model in ipairs{ "sync", "fork", "thread" } do
    it("refuses the " .. model .. " model, saying why", function ()
      local code, _, err = H.T.run{ SCRIPT, "--tcp", "127.0.0.1:0",
        "--model", model }
      assert.equals(1, code)
      assert.matches("needs the event model", err)
    end)
  end
end)
