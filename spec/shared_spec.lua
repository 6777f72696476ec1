-- Shared dictionaries (--shared NAME:SIZE, luasrv.shared.NAME): one zone
-- of shared memory seen by every worker, thread and forked child; it
-- outlives a reload and a worker's death.
local H = require "helper"
local T = H.T

-- Each request is one line of Lua, run with d = luasrv.shared.d (and
-- tiny = luasrv.shared.tiny); the reply is ser(its results).
local EVAL = H.SER .. [[
local luasrv = require "luasrv"
local env = setmetatable({ d = luasrv.shared.d,
                           tiny = rawget(luasrv.shared, "tiny"),  -- optional
                           luasrv = luasrv }, { __index = _G })
return {
  handle = function (req)
    local line = req:read("l")
    env.worker = req.server.worker
    local f = assert(load(line, "=req", "t", env))
    req:write(ser(f()), "\n")
  end,
}
]]


local function ask (srv, code)
  local c = srv:connect()
  c:settimeout(5 * H.scale)
  c:send(code:gsub("\n", " ") .. "\n")  -- one line
  local r = c:receive()
  c:close()
  return H.unser(r)
end


-- n requests in rounds of `width` connections open at once
local function flood (srv, code, n, width)
  local done, replies = 0, {}
  while done < n do
    local cs = {}
    for i = 1, math.min(width, n - done) do
      cs[i] = srv:connect()
      cs[i]:settimeout(10 * H.scale)
      cs[i]:send(code .. "\n")
    end
    for i = 1, #cs do
      replies[#replies + 1] = assert(cs[i]:receive())
      cs[i]:close()
    end
    done = done + #cs
  end
  return replies
end


local children = H.children


local eventually = H.eventually


local writefile = H.write_file


H.for_models(function (model)

  local function start (args)
    local a = { "--shared", "d:1m" }
    for _, v in ipairs(args or {}) do a[#a + 1] = v end
    return H.start{ model = model, source = EVAL, args = a }
  end

  it("a value set by one request is read by the next", function ()
    local srv = start()
    assert.same({ n = 3, true, nil, false }, ask(srv, "return d:set('k', 'v')"))
    assert.equals("v", ask(srv, "return d:get('k')")[1])
    assert.is_nil(ask(srv, "return d:get('nope')")[1])
    assert.equals(1, ask(srv, "return d:get('nope') == nil and 1")[1])
    -- an unknown dictionary: rawget gives nil (indexing raises, below);
    -- a dictionary prints its name
    assert.equals("nil luasrv.shared.d", ask(srv,
      "return tostring(rawget(luasrv.shared, 'nope')) .. ' ' .. tostring(d)")[1])
  end)

  it("values keep their types: integer, float, boolean, string", function ()
    local srv = start()
    ask(srv, "d:set('i', 42) d:set('f', 42.0) d:set('t', true) " ..
             "d:set('b', false) d:set('s', '42') d:set('e', '') " ..
             "d:set('bin', '\\0\\1\\255')")
    local r = ask(srv, "local t = {} for _, k in ipairs{'i','f','t','b','s','e'}" ..
      " do local v = d:get(k) t[#t+1] = type(v) == 'number' and math.type(v)" ..
      " or type(v) end return table.unpack(t)")
    assert.same({ n = 6, "integer", "float", "boolean", "boolean", "string",
                  "string" }, r)
    r = ask(srv, "return d:get('i'), d:get('f'), d:get('t'), d:get('b'), " ..
                 "d:get('s'), d:get('bin')")
    assert.same({ n = 6, 42, 42.0, true, false, "42", "\0\1\255" }, r)
    assert.equals(math.mininteger, ask(srv,
      "d:set('m', math.maxinteger) return (d:incr('m', 1))")[1])
  end)

  it("add, replace, delete, incr: their results and errors", function ()
    local srv = start()
    assert.same({ n = 3, nil, "not found", false },
                ask(srv, "return d:replace('k', 1)"))
    assert.same({ n = 3, true, nil, false }, ask(srv, "return d:add('k', 1)"))
    assert.same({ n = 3, nil, "exists", false }, ask(srv, "return d:add('k', 2)"))
    assert.same({ n = 3, true, nil, false }, ask(srv, "return d:replace('k', 3)"))
    assert.equals(3, ask(srv, "return d:get('k')")[1])
    assert.same({ n = 3, 13, nil, false }, ask(srv, "return d:incr('k', 10)"))
    assert.same({ n = 3, 13.5, nil, false }, ask(srv, "return d:incr('k', 0.5)"))
    assert.same({ n = 3, nil, "not found", false },
                ask(srv, "return d:incr('n', 1)"))
    assert.same({ n = 3, 6, nil, false }, ask(srv, "return d:incr('n', 1, 5)"))
    ask(srv, "d:set('s', 'x')")
    assert.same({ n = 3, nil, "not a number", false },
                ask(srv, "return d:incr('s', 1)"))
    assert.same({ n = 1, true }, ask(srv, "return d:delete('k')"))
    assert.is_nil(ask(srv, "return d:get('k')")[1])
    assert.same({ n = 3, nil, "empty key", false },
                ask(srv, "return d:set('', 1)"))
    assert.same({ n = 3, nil, "key too long", false },
                ask(srv, "return d:set(('x'):rep(70000), 1)"))
    assert.matches("bad argument #2 to 'set' %(string, number, boolean or nil",
      ask(srv, "return select(2, pcall(function () d:set('k', {}) end))")[1])
    -- set to nil deletes
    ask(srv, "d:set('z', 1) d:set('z', nil)")
    assert.is_nil(ask(srv, "return d:get('z')")[1])
  end)

  it("keys, flush_all, free_space", function ()
    local srv = start()
    local cap = ask(srv, "return d:free_space(), d:capacity()")
    assert.equals(cap[1], cap[2])
    assert.is_true(cap[2] > 1000000 and cap[2] <= 1048576)
    ask(srv, "for i = 1, 10 do d:set('k' .. i, i) end")
    assert.equals(10, ask(srv, "return #d:keys()")[1])
    assert.equals(3, ask(srv, "return #d:keys(3)")[1])
    assert.is_true(ask(srv, "return d:free_space()")[1] < cap[1])
    ask(srv, "d:flush_all()")
    assert.same({ n = 3, 0, cap[1], nil },
                ask(srv, "return #d:keys(0), d:free_space(), d:get('k1')"))
  end)

  it("ttl: items expire, ttl() tells the seconds left", function ()
    local srv = start()
    ask(srv, "d:set('short', 'x', 0.3) d:set('long', 'y')")
    local r = ask(srv, "return d:ttl('short'), d:ttl('long'), d:ttl('none')")
    assert.is_true(r[1] > 0 and r[1] <= 0.3)
    assert.equals(0, r[2])
    assert.is_nil(r[3])
    assert.equals("x", ask(srv, "return d:get('short')")[1])
    T.sleep(0.45)
    assert.same({ n = 4, nil, "y", nil, "not found" }, ask(srv,
      "return d:get('short'), d:get('long'), d:ttl('short')"))
    -- an expired key is absent for add; incr's init_ttl applies to a new key
    assert.same({ n = 3, true, nil, false }, ask(srv, "return d:add('short', 1)"))
    assert.equals(1, ask(srv, "return (d:incr('c', 1, 0, 0.3))")[1])
    T.sleep(0.45)
    assert.is_nil(ask(srv, "return d:get('c')")[1])
  end)

  it("--shared tiny:12k: the least recently used go to make room (forcible)",
     function ()
    local srv = start{ "--shared", "tiny:12k" }
    local r = ask(srv, [[
local forced
for i = 1, 100 do
  local ok, err, forcible = tiny:set('k' .. i, ('v'):rep(500))
  assert(ok, err)
  if i % 10 == 0 then tiny:get('k1') end
  forced = forced or forcible and i
end
return forced, tiny:get('k2'), #tiny:get('k100'), #tiny:get('k1'),
       #tiny:keys(0) < 100]])
    assert.is_number(r[1])
    assert.is_true(r[1] > 10 and r[1] < 30, "first forcible at " .. r[1])
    assert.is_nil(r[2])
    assert.equals(500, r[3])
    assert.equals(500, r[4])
    assert.is_true(r[5])
    -- one item bigger than the zone: no memory
    assert.same({ n = 3, nil, "no memory", false },
                ask(srv, "return tiny:set('big', ('x'):rep(20000))"))
    assert.equals(500, ask(srv, "return #tiny:get('k100')")[1])
  end)

  it("--workers 2: 200 requests from concurrent clients, every incr counted",
     function ()
    local srv = start{ "--workers", "2" }
    local replies = flood(srv, "luasrv.sleep(0.01) d:incr('w' .. worker, 1, 0)" ..
                               " return d:incr('total', 1, 0)", 200, 8)
    assert.equals(200, #replies)
    local r = ask(srv, "return d:get('total'), d:get('w1'), d:get('w2')")
    assert.equals(200, r[1])
    assert.equals(200, (r[2] or 0) + (r[3] or 0))
    assert.is_true((r[2] or 0) > 0 and (r[3] or 0) > 0,
                   "both workers wrote: " .. tostring(r[2]) .. " " .. tostring(r[3]))
  end)

  it("contention: 2 workers, concurrent loops of incr, an exact total",
     function ()
    local srv = start{ "--workers", "2" }
    flood(srv, "for i = 1, 1000 do d:incr('n', 1, 0) d:incr('f', 0.5, 0) end",
          40, 8)
    local r = ask(srv, "return d:get('n'), d:get('f')")
    assert.same({ n = 2, 40000, 20000.0 }, r)
  end)

  it("the data survives a reload (SIGHUP) and a worker killed with -9",
     function ()
    local dir = H.tmpdir()
    local script = dir .. "/handler.lua"
    writefile(script, EVAL)
    local srv = H.start{ model = model, script = script,
                         args = { "--shared", "d:1m", "--workers", "2" } }
    ask(srv, "d:set('keep', 'me') d:incr('n', 5, 0)")
    writefile(script, "-- v2\n" .. EVAL)
    srv:signal("HUP")
    assert.truthy(srv:wait_stderr("reloaded " .. script, 5 * H.scale, true))
    assert.same({ n = 2, "me", 5 }, ask(srv, "return d:get('keep'), d:get('n')"))
    local kids = children(srv.pid)
    assert.is_true(#kids >= 2)
    os.execute("kill -9 " .. table.concat(kids, " "))
    assert.truthy(srv:wait_stderr("killed by signal 9", 5 * H.scale, true))
    local r = eventually(function ()
      local ok, res = pcall(ask, srv, "return d:get('keep'), d:incr('n', 1)")
      return ok and res
    end, 5)
    assert.same({ n = 4, "me", 6, nil, false }, r)
  end)

  it("a write in a request is seen later, whatever ran it (fork: a child)",
     function ()
    local srv = start()
    for i = 1, 3 do
      local r = ask(srv, "G = (G or 0) + 1 return d:incr('n', 1, 0), G")
      assert.equals(i, r[1])
      -- a fork model child's Lua state dies with it; the zone does not
      if model == "fork" then assert.equals(1, r[2]) end
    end
  end)

end)


describe("--shared", function ()

  it("is checked: NAME:SIZE, a sane size, a name once", function ()
    local ok = "return { handle = function () end }"
    local code, _, err = T.run{ source = ok, "--tcp", "127.0.0.1:0",
                                "--shared", "nosize" }
    assert.equals(2, code)
    assert.matches("bad value 'nosize' for %-%-shared", err)
    code, _, err = T.run{ source = ok, "--tcp", "127.0.0.1:0",
                          "--shared", "d:10x" }
    assert.equals(2, code)
    code, _, err = T.run{ source = ok, "--tcp", "127.0.0.1:0",
                          "--shared", "d:1k" }
    assert.equals(1, code)
    assert.matches("luasrv: error: %-%-shared d: size must be", err)
    code, _, err = T.run{ source = ok, "--tcp", "127.0.0.1:0",
                          "--shared", "d:1m", "--shared", "d:2m" }
    assert.equals(1, code)
    assert.matches("defined twice", err)
    code, _, err = T.run{ source = ok, "--tcp", "127.0.0.1:0",
                          "--shared", "a-b:1m" }
    assert.equals(1, code)
    assert.matches("bad name", err)
  end)

  it("an undeclared name raises where it is indexed, saying what to do; "
     .. "pairs() lists the declared ones", function ()
    local code, _, err = T.run{ "{script}", "--tcp", "127.0.0.1:0", source = [[
local luasrv = require "luasrv"
local hits = luasrv.shared.hits
return { handle = function () end }]] }
    assert.equals(1, code)
    assert.truthy(err:find("handler.lua:2: luasrv.shared.hits: no such "
      .. "dictionary (start the server with --shared hits:SIZE)\n", 1, true),
      err)
    assert.equals(1, #H.error_lines(err), err)
    local srv = H.start{ args = { "--shared", "b:64k", "--shared", "a:64k" },
      source = [[
local luasrv = require "luasrv"
return {
  handle = function (req)
    local names = {}
    for name in pairs(luasrv.shared) do names[#names + 1] = name end
    table.sort(names)
    req:write(table.concat(names, ","), " ",
              tostring(rawget(luasrv.shared, "hits")), "\n")
    luasrv.shared.hits:incr("n", 1)
  end,
  handle_error = function (req, e) req:write(e:match("^[^\n]*"), "\n") end,
}]] }
    local c = srv:connect()
    c:settimeout(3 * H.scale)
    assert.equals("a,b nil", c:receive())
    assert.matches("handler.lua:9: luasrv.shared.hits: no such dictionary "
                   .. "%(start the server with %-%-shared hits:SIZE%)$",
                   c:receive())
  end)

  it("is there in --check and at load time", function ()
    local code, _, err = T.run{ "--check", "{script}", "--shared", "cache:64k",
      source = [[local d = require("luasrv").shared.cache
                 assert(d:set("k", 1)) assert(d:get("k") == 1)
                 return { handle = function () end }]] }
    assert.equals(0, code, err)
  end)

end)
