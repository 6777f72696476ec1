-- OpenResty's lua-resty-memcached (Debian's lua-nginx-memcached,
-- unmodified) in luasrv handlers through luasrv.ngx, against a real
-- memcached on a free loopback port.
local H = require "helper"
local N = require "ngx_helper"

local have = N.have("memcached")
local maybe = have and it or pending

local port, pid

local function memcached ()
  if pid and os.execute("kill -0 " .. pid .. " 2>/dev/null") == true then
    return port
  end
  port = H.free_port()
  local f = assert(io.popen("exec memcached -l 127.0.0.1 -p " .. port ..
    " -U 0 -m 16 -u root >/dev/null 2>&1 </dev/null & echo $!"))
  pid = tonumber(f:read("l"))
  f:close()
  N.wait_port(port)
  return port
end

teardown(function ()
  if pid then os.execute("kill -CONT " .. pid .. "; kill " .. pid) end
end)

local PRE = [[
memcached = require "resty.memcached"
PORT = tonumber(os.getenv("MEMCACHED_PORT"))
function client (ms)
  local m = assert(memcached:new())
  m:set_timeout(ms or 2000)
  assert(m:connect("127.0.0.1", PORT))
  return m
end
]]

H.for_models(function (model)
  describe("resty.memcached", function ()
    local srv
    local function ask (body) return N.ask(srv, body, { PFX = model }) end

    before_each(function ()
      if have then
        srv = N.start{ model = model,
                       env = { MEMCACHED_PORT = tostring(memcached()) },
                       source = N.HEAD .. PRE .. H.RUNNER }
      end
    end)

    maybe("stores and fetches: set, get with flags, add, replace, delete",
          function ()
      local res = ask [[
        local m = client()
        m:delete("PFX:a")
        local s = m:set("PFX:a", "hello world", 60, 7)
        local v, flags = m:get("PFX:a")
        local miss, merr = m:get("PFX:none")
        local a1, a1err = m:add("PFX:a", "x")
        local r = m:replace("PFX:a", "bye")
        local v2 = m:get("PFX:a")
        local d = m:delete("PFX:a")
        local gone = m:get("PFX:a")
        m:close()
        return s, v, flags, miss, merr, a1, a1err, r, v2, d, gone ]]
      assert.same({ 1, "hello world", "7", nil, nil, nil, "NOT_STORED", 1,
                    "bye", 1, nil, n = 11 }, res)
    end)

    maybe("stores binary values with CRLF inside, and many keys at once",
          function ()
      local res = ask [[
        local m = client()
        local blob = "a\r\nEND\r\n\0b" .. string.rep("x", 100000)
        m:set("PFX:b1", blob)
        m:set("PFX:b2", "two")
        local t = m:get({ "PFX:b1", "PFX:b2", "PFX:b3" })
        m:close()
        return t["PFX:b1"][1] == blob, t["PFX:b2"][1], t["PFX:b3"] ]]
      assert.same({ true, "two", nil, n = 3 }, res)
    end)

    maybe("counts with incr and decr, and checks-and-sets with gets and cas",
          function ()
      local res = ask [[
        local m = client()
        m:set("PFX:n", "10")
        local i = m:incr("PFX:n", 5)
        local d = m:decr("PFX:n", 3)
        local v, flags, cas = m:gets("PFX:n")
        local c1 = m:cas("PFX:n", "100", cas)
        local c2, c2err = m:cas("PFX:n", "200", cas)
        local final = m:get("PFX:n")
        local ver = m:version()
        m:close()
        return i, d, v, c1, c2, c2err, final, type(ver) ]]
      assert.same({ "15", "12", "12", 1, nil, "EXISTS", "100", "string",
                    n = 8 }, res)
    end)

    maybe("reuses pooled connections: get_reused_times counts up", function ()
      local res = ask [[
        local function once ()
          local m = client()
          local n = m:get_reused_times()
          assert(m:set("PFX:k", "v"))
          assert(m:set_keepalive(10000, 4))
          return n
        end
        return once(), once(), once() ]]
      assert.same({ 0, 1, 2, n = 3 }, res)
    end)

    maybe("times out against a stalled memcached", function ()
      memcached()
      os.execute("kill -STOP " .. pid)
      H.defer(function () os.execute("kill -CONT " .. pid) end)
      local res = ask [[
        local m = client(300)
        local v, flags, err = m:get("PFX:k")
        m:close()
        return v, flags, err ]]
      os.execute("kill -CONT " .. pid)
      assert.same({ nil, nil, "timeout", n = 3 }, res)
    end)
  end)
end)
