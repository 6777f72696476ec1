-- scripts/jsonrpc.lua, driven by socat (Debian's socat) over TCP, Unix
-- stream and UDP: socat sends the request lines and prints the replies.
local H = require "helper"
local cjson = require "cjson"

local SCRIPT = "scripts/jsonrpc.lua"

local quote = H.quote

-- sends the lines through `socat OPTS - TARGET`; socat's output and
-- whether it exited 0
local function socat (srv, opts, target, lines)
  local path = srv.dir .. "/socat.in"
  local f = assert(io.open(path, "wb"))
  f:write(table.concat(lines, "\n"), "\n")
  f:close()
  local p = io.popen(("timeout -k 2 20 socat %s - %s < %s 2>&1")
    :format(opts, quote(target), quote(path)))
  local out = p:read("a")
  return out, p:close()
end

-- every reply line, decoded
local function decode_lines (out)
  local t = {}
  for _, line in ipairs(H.lines(out)) do t[#t + 1] = cjson.decode(line) end
  return t
end

local function result (id, value)
  return { jsonrpc = "2.0", id = id, result = value }
end

local function rpc_error (id, code, message, data)
  return { jsonrpc = "2.0", id = id == nil and cjson.null or id,
           error = { code = code, message = message, data = data } }
end

-- one session: requests and the replies they must get, in order
local SESSION = {
  '{"jsonrpc":"2.0","id":1,"method":"add","params":[1,2,3.5]}',
  '{"id":"two","method":"echo","params":[{"nested":["a",true]}]}',
  'this is not JSON',
  '{"id":3,"method":"nosuch"}',
  '{"id":4,"method":"add","params":[1,"x"]}',
  '{"method":"echo","params":["a notification: no reply"]}',
  '',
  '{"id":5,"method":"echo","params":["still here"]}',
}

local function check_session (replies)
  assert.equals(6, #replies)
  assert.same(result(1, 6.5), replies[1])
  assert.same(result("two", { nested = { "a", true } }), replies[2])
  local parse = replies[3]
  assert.equals(-32700, parse.error.code)
  assert.equals("Parse error", parse.error.message)
  assert.equals(cjson.null, parse.id)
  assert.same(rpc_error(3, -32601, "Method not found", "nosuch"), replies[4])
  assert.same(rpc_error(4, -32602, "Invalid params",
    "param 2 is not a number"), replies[5])
  assert.same(result(5, "still here"), replies[6])
end


H.for_models(function (model)
  describe("jsonrpc.lua with socat", function ()
    local srv
    before_each(function ()
      srv = H.start{ model = model, script = SCRIPT, tcp = true, unix = true,
                     udp = true }
    end)

    it("answers a session over TCP, going on after malformed JSON",
       function ()
      local out, ok = socat(srv, "-t 5", "TCP:127.0.0.1:" ..
        srv.tcp.port, SESSION)
      assert.is_true(ok, out)
      check_session(decode_lines(out))
    end)

    it("answers the same session over a Unix socket", function ()
      local out, ok = socat(srv, "-t 5", "UNIX-CONNECT:" .. srv.unix.path,
        SESSION)
      assert.is_true(ok, out)
      check_session(decode_lines(out))
    end)

    it("answers batches and refuses invalid requests", function ()
      local out = socat(srv, "-t 5", "TCP:127.0.0.1:" .. srv.tcp.port, {
        '[{"id":1,"method":"add","params":[2,3]},{"method":"echo",' ..
          '"params":[0]},{"id":2,"method":"echo","params":[null]}]',
        '[]',
        '[1]',
        '{"id":6,"jsonrpc":"1.0","method":"echo","params":[1]}',
        '{"id":7,"method":"add","params":"12"}',
        '{"id":8,"method":"time"}',
      })
      local r = decode_lines(out)
      assert.equals(6, #r, out)
      assert.same({ result(1, 5), result(2, cjson.null) }, r[1])
      assert.same(rpc_error(nil, -32600, "Invalid Request"), r[2])
      assert.same({ rpc_error(nil, -32600, "Invalid Request") }, r[3])
      assert.same(rpc_error(6, -32600, "Invalid Request"), r[4])
      assert.same(rpc_error(7, -32602, "Invalid params",
        "params must be an array or an object"), r[5])
      assert.equals(8, r[6].id)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", r[6].result.utc)
      assert.is_true(math.abs(r[6].result.unix - os.time()) < 60)
    end)

    -- cjson decodes numbers beyond the double range (1e400) and the NaN
    -- and Infinity literals, but cannot write them back
    it("answers numbers out of range with an error and goes on", function ()
      local c = srv:connect(srv.tcp)
      c:send(table.concat({
        '{"id":1,"method":"add","params":[1e308,1e308]}',
        '{"id":2,"method":"echo","params":[1e400]}',
        '{"id":1e400,"method":"echo","params":[1]}',
        '{"id":NaN,"method":"echo","params":[1]}',
        '{"id":3,"method":"echo","params":[[-Infinity, "x"]]}',
        '[{"id":4,"method":"echo","params":[NaN]},' ..
          '{"id":5,"method":"echo","params":["fine"]}]',
        '{"id":6,"method":"echo","params":["still here"]}',
        "" }, "\n"))
      local r = {}
      for i = 1, 7 do
        local line, err = c:receive()
        assert(line, ("reply %d: %s"):format(i, err))
        r[i] = cjson.decode(line)
      end
      local function out_of_range (reply, id)
        assert.equals(id, reply.id)
        assert.equals(-32603, reply.error.code)
        assert.equals("Internal error", reply.error.message)
        assert.matches("not representable in JSON", reply.error.data)
      end
      out_of_range(r[1], 1)
      out_of_range(r[2], 2)
      assert.same(rpc_error(nil, -32600, "Invalid Request"), r[3])
      assert.same(rpc_error(nil, -32600, "Invalid Request"), r[4])
      out_of_range(r[5], 3)
      out_of_range(r[6][1], 4)
      assert.same(result(5, "fine"), r[6][2])
      assert.same(result(6, "still here"), r[7])
    end)

    it("answers one request per UDP datagram", function ()
      local out, ok = socat(srv, "-t 0.5", "UDP:127.0.0.1:" .. srv.udp.port,
        { '{"id":9,"method":"add","params":[40,2]}' })
      assert.is_true(ok, out)
      assert.same({ result(9, 42) }, decode_lines(out))
    end)
  end)
end)
