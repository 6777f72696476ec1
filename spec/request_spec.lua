-- The request object (SPEC §3): client_address, req.server, req.request,
-- and fields a handler stores on req.
local H = require "helper"
local cjson = require "cjson"

-- answers every request with a JSON object describing it
local DESCRIBE = [[
local cjson = require "cjson"
local function describe (req)
  local a, s = req.client_address, req.server
  return cjson.encode{
    host = a.host or cjson.null, port = a.port or cjson.null,
    one = a[1] or cjson.null, two = a[2] or cjson.null,
    path = a.path or cjson.null, str = tostring(a),
    address = s.address, transport = s.transport, model = s.model,
    worker = s.worker, shutdown = type(s.shutdown),
    request = type(req.request),
    request_str = type(req.request) == "string" and req.request or cjson.null,
  }
end
return { handle = function (req)
  if req.server.transport == "tcp" or req.server.transport == "unix" then
    req:read("l")
  end
  req:write(describe(req), "\n")
end }
]]


local function ask (srv, kind)
  local c = srv:connect(kind)
  assert(c:send("hi\n"))
  local line = assert(c:receive())
  local _, port = c:getsockname()
  c:close()
  return cjson.decode(line), tonumber(port), c
end


H.for_models(function (model)
  describe("client_address", function ()
    it("tcp: host, port, [1], [2] and tostring 127.0.0.1:PORT", function ()
      local srv = H.start{ model = model, source = DESCRIBE }
      local d, port = ask(srv, "tcp")
      assert.equals("127.0.0.1", d.host)
      assert.equals(port, d.port)
      assert.equals("127.0.0.1", d.one)
      assert.equals(port, d.two)
      assert.equals("127.0.0.1:" .. port, d.str)
      assert.equals(cjson.null, d.path)
    end)

    it("tcp over IPv6: tostring [::1]:PORT", function ()
      local srv = H.start{ model = model, tcp6 = true, source = DESCRIBE }
      local d, port = ask(srv, "tcp6")
      assert.equals("::1", d.host)
      assert.equals(port, d.port)
      assert.equals("::1", d.one)
      assert.equals(port, d.two)
      assert.equals("[::1]:" .. port, d.str)
    end)

    it("udp: host and port of the sender", function ()
      local srv = H.start{ model = model, udp = true, source = DESCRIBE }
      local d, port = ask(srv, "udp")
      assert.equals("127.0.0.1", d.host)
      assert.equals(port, d.port)
      assert.equals(port, d.two)
      assert.equals("127.0.0.1:" .. port, d.str)
    end)

    it("unix: path is \"\" for an unnamed client, tostring unix:",
    function ()
      local srv = H.start{ model = model, unix = true, source = DESCRIBE }
      local d = ask(srv, "unix")
      assert.equals("", d.path)
      assert.equals("unix:", d.str)
      assert.equals(cjson.null, d.host)
    end)

    it("unixgram: path is the sender's, tostring unix:PATH", function ()
      local srv = H.start{ model = model, unixgram = true, source = DESCRIBE }
      local c = srv:connect("unixgram")
      assert(c:send("hi"))
      local d = cjson.decode((assert(c:receive())))
      assert.equals(c.path, d.path)
      assert.equals("unix:" .. c.path, d.str)
    end)
  end)

  describe("req.server", function ()
    it("has the listener's address, transport, model, worker, shutdown",
    function ()
      local srv = H.start{ model = model, source = DESCRIBE, tcp = true,
                           udp = true, unix = true, unixgram = true }
      for _, kind in ipairs{ "tcp", "udp", "unix", "unixgram" } do
        local l = srv[kind]
        local d = ask(srv, kind)
        assert.equals(l.address, d.address)
        assert.equals(kind, d.transport)
        assert.equals(model, d.model)
        assert.equals(1, d.worker)
        assert.equals("function", d.shutdown)
      end
    end)
  end)

  describe("req.request", function ()
    it("is the datagram's bytes on a datagram listener", function ()
      local srv = H.start{ model = model, source = DESCRIBE, udp = true,
                           unixgram = true }
      for _, kind in ipairs{ "udp", "unixgram" } do
        local c = srv:connect(kind)
        assert(c:send("data\0gram"))
        local d = cjson.decode((assert(c:receive())))
        assert.equals("string", d.request)
        assert.equals("data\0gram", d.request_str)
      end
    end)

    it("is the connection on a stream listener, with the same methods",
    function ()
      local srv = H.start{ model = model, tcp = true, unix = true, source = [[
return { handle = function (req)
  local conn = req.request
  local line = conn:read("l")
  conn:write("conn got ", line, "\n"):flush()
  req:write("req too\n")
end }]] }
      for _, kind in ipairs{ "tcp", "unix" } do
        local c = srv:connect(kind)
        assert(c:send("hello\n"))
        assert.equals("conn got hello", c:receive())
        assert.equals("req too", c:receive())
      end
    end)
  end)

  it("keeps fields a handler stores on req from setup to handle and finish",
  function ()
    local srv = H.start{ model = model, tcp = true, udp = true, source = [[
return {
  setup = function (req) req.greeting = "hello from setup" end,
  handle = function (req)
    req.seen = req.greeting
    req:write(req.greeting)
  end,
  finish = function (req) req:write(" / ", req.seen, "\n") end,
}]] }
    assert.equals("hello from setup / hello from setup",
                  srv:connect("tcp"):receive())
    local u = srv:connect("udp")
    assert(u:send("x"))
    assert.equals("hello from setup / hello from setup\n", u:receive())
  end)

  it("gives each request a fresh req", function ()
    local srv = H.start{ model = model, source = [[
return { handle = function (req)
  req:write(tostring(req.mark), "\n")
  req.mark = "set"
end }]] }
    assert.equals("nil", srv:connect():receive())
    assert.equals("nil", srv:connect():receive())
  end)
end)
