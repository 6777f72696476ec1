-- OpenResty's lua-resty-websocket client (Debian's lua-nginx-websocket,
-- unmodified) in luasrv handlers through luasrv.ngx (receiveuntil for
-- the handshake, ngx.re, base64, bit and the ffi char buffers), against
-- Node's ws (spec/fixtures/ngx_ws_server.js): text, binary, ping/pong
-- both ways, close both ways.
local H = require "helper"
local N = require "ngx_helper"

local have = N.have("node")
local maybe = have and it or pending

local port, pid

local function ws_server ()
  if pid and os.execute("kill -0 " .. pid .. " 2>/dev/null") == true then
    return port
  end
  N.fixtures()
  local log = os.tmpname()
  local f = assert(io.popen("NODE_PATH=" .. N.quote(N.node_modules) ..
    " exec node spec/fixtures/ngx_ws_server.js >" .. log ..
    " 2>&1 </dev/null & echo $!"))
  pid = tonumber(f:read("l"))
  f:close()
  port = H.eventually(function ()
    return tonumber(N.read(log):match("listening (%d+)"))
  end, 10)
  os.remove(log)
  assert(port, "the ws server did not start")
  return port
end

teardown(function ()
  if pid then os.execute("kill " .. pid) end
end)

local PRE = [[
client = require "resty.websocket.client"
URL = "ws://127.0.0.1:" .. os.getenv("WS_PORT")
function connect (path)
  local wb = assert(client:new{ timeout = 2000 })
  assert(wb:connect(URL .. (path or "/")))
  return wb
end
]]

H.for_models(function (model)
  describe("resty.websocket.client", function ()
    local srv
    local function ask (body) return N.ask(srv, body) end

    before_each(function ()
      if have then
        srv = N.start{ model = model, env = { WS_PORT = tostring(ws_server()) },
                       source = N.HEAD .. PRE .. H.RUNNER }
      end
    end)

    maybe("shakes hands and exchanges text frames", function ()
      local res = ask [[
        local wb = connect("/chat?room=1")
        assert(wb:send_text("hello"))
        local d1, t1 = wb:recv_frame()
        local long = string.rep("0123456789", 3000)
        assert(wb:send_text(long))
        local d2, t2 = wb:recv_frame()
        assert(wb:send_text("path"))
        local d3 = wb:recv_frame()
        wb:close()
        return d1, t1, d2 == long, t2, d3 ]]
      assert.same({ "hello", "text", true, "text", "/chat?room=1", n = 5 }, res)
    end)

    maybe("exchanges binary frames", function ()
      local res = ask [[
        local wb = connect()
        local t = {}
        for i = 0, 255 do t[#t + 1] = string.char(i) end
        local bytes = table.concat(t):rep(4)
        assert(wb:send_binary(bytes))
        local d, typ = wb:recv_frame()
        wb:close()
        return d == bytes, #d, typ ]]
      assert.same({ true, 1024, "binary", n = 3 }, res)
    end)

    maybe("pings and pongs both ways", function ()
      local res = ask [[
        local wb = connect()
        assert(wb:send_ping("abc"))
        local d1, t1 = wb:recv_frame()
        assert(wb:send_text("ping-me"))
        local d2, t2 = wb:recv_frame()
        assert(wb:send_pong(d2))
        local d3, t3 = wb:recv_frame()
        wb:close()
        return d1, t1, d2, t2, d3, t3 ]]
      assert.same({ "abc", "pong", "srv", "ping", "got pong srv", "text",
                    n = 6 }, res)
    end)

    maybe("closes: the server's close frame, and its answer to ours",
          function ()
      local res = ask [[
        local wb = connect()
        assert(wb:send_text("close-me"))
        local d1, t1, code1 = wb:recv_frame()
        wb:close()
        local wb2 = connect()
        assert(wb2:send_close(1000, "done"))
        local d2, t2, code2 = wb2:recv_frame()
        local d3, t3, err3 = wb2:recv_frame()
        return d1, t1, code1, d2, t2, code2, d3, err3 ~= nil ]]
      assert.same({ "bye", "close", 4000, "done", "close", 1000, nil, true,
                    n = 8 }, res)
    end)

    maybe("wss:// to a plain-text server fails with the TLS error", function ()
      local res = ask [[
        local wb = assert(client:new{ timeout = 2000 })
        return wb:connect("wss://127.0.0.1:" .. os.getenv("WS_PORT") .. "/") ]]
      assert.is_nil(res[1])
      -- wss:// itself: spec/ngx_tls_spec.lua
      assert.matches("^ssl handshake failed: ", res[2])
    end)
  end)
end)
