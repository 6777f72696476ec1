-- scripts/resp.lua, driven by the real Redis clients from Debian's
-- redis-tools: redis-cli for the commands, redis-benchmark for load and
-- pipelining. Commands that depend on state go through one redis-cli
-- connection (its stdin), so they hold in every model: a fork child keeps
-- its state for the connection it serves, and a thread keeps its state.
local H = require "helper"
local T = H.T

local SCRIPT = "scripts/resp.lua"

local quote = H.quote

-- runs a shell command, bounded in time; its output (stdout and stderr)
-- and whether it exited 0
local function sh (cmd, stdin_path)
  local p = io.popen("timeout -k 2 30 " .. cmd ..
    (stdin_path and (" < " .. quote(stdin_path)) or " < /dev/null") ..
    " 2>&1")
  local out = p:read("a")
  local ok = p:close()
  return out, ok
end

local function start (model, ...)
  return H.start{ model = model, script = SCRIPT, tcp = true,
                  args = { "--timeout", "0", ... } }
end

-- redis-cli --no-raw against srv: args is a list of words, or a string of
-- commands (one a line) sent on one connection
local function cli (srv, args)
  local port = srv.listeners[1].port
  local base = "redis-cli --no-raw -p " .. port
  if type(args) == "table" then
    local words = {}
    for i, a in ipairs(args) do words[i] = quote(a) end
    return sh(base .. " " .. table.concat(words, " "))
  end
  local path = srv.dir .. "/cli.in"
  local f = assert(io.open(path, "wb"))
  f:write(args)
  f:close()
  return sh(base, path)
end

-- the lines of s with the trailing newline gone
local function lines (s) return H.lines(s) end

-- a RESP request from words
local resp = H.resp_command

-- redis-benchmark's "NAME: N requests per second" lines as { NAME = N }
local function benchmark_rates (out)
  local rates = {}
  for line in out:gmatch("[^\r\n]+") do
    local name, rps = line:match("^%s*(%u+): ([%d.]+) requests per second")
    if name then rates[name] = tonumber(rps) end
  end
  return rates
end


H.for_models(function (model)
  describe("resp.lua with redis-cli", function ()
    local srv
    before_each(function () srv = start(model) end)

    it("answers PING, PING msg and ECHO", function ()
      assert.equals("PONG\n", (cli(srv, { "ping" })))
      assert.equals('"hi there"\n', (cli(srv, { "ping", "hi there" })))
      assert.equals('"a\\r\\nb"\n', (cli(srv, { "echo", "a\r\nb" })))
    end)

    it("SET, GET, DEL, EXISTS, MSET, MGET on one connection", function ()
      local out, ok = cli(srv, table.concat({
        "set k v1", "get k", "get missing", "set k v2", "get k",
        "exists k missing k", "mset a 1 b 2", "mget a missing b",
        "del k a missing", "exists k a b", "dbsize", "" }, "\n"))
      assert.is_true(ok, out)
      assert.same({ "OK", '"v1"', "(nil)", "OK", '"v2"', "(integer) 2",
        "OK", '1) "1"', "2) (nil)", '3) "2"', "(integer) 2", "(integer) 1",
        "(integer) 1" }, lines(out))
    end)

    it("SET NX, XX and GET options", function ()
      local out = cli(srv, table.concat({
        "set k v nx", "set k w nx", "get k", "set new v xx", "exists new",
        "set k w xx", "set k z get", "get k", "set k v nx xx", "" }, "\n"))
      assert.same({ "OK", "(nil)", '"v"', "(nil)", "(integer) 0", "OK",
        '"w"', '"z"', "(error) ERR syntax error" }, lines(out))
    end)

    it("INCR, INCRBY, DECR and their errors", function ()
      local out = cli(srv, table.concat({
        "incr n", "incrby n 41", "decr n", "decrby n 10", "get n",
        "set s abc", "incr s", "incrby n 1.5", "set big 9223372036854775807",
        "incr big", "rpush l x", "incr l", "get l", "" }, "\n"))
      assert.same({ "(integer) 1", "(integer) 42", "(integer) 41",
        "(integer) 31", '"31"', "OK",
        "(error) ERR value is not an integer or out of range",
        "(error) ERR value is not an integer or out of range", "OK",
        "(error) ERR increment or decrement would overflow", "(integer) 1",
        "(error) WRONGTYPE Operation against a key holding the wrong kind" ..
        " of value",
        "(error) WRONGTYPE Operation against a key holding the wrong kind" ..
        " of value" }, lines(out))
    end)

    it("EXPIRE, TTL, PTTL, PERSIST and SET EX/PX", function ()
      local out = cli(srv, table.concat({
        "set k v", "ttl k", "ttl missing", "expire k 100", "ttl k",
        "persist k", "ttl k", "set e v ex 50", "ttl e", "set p v px 5000",
        "pttl p", "expire missing 10", "set x v ex 0", "set x v ex abc",
        "expire e 0", "exists e", "" }, "\n"))
      local l = lines(out)
      assert.same({ "OK", "(integer) -1", "(integer) -2", "(integer) 1",
        "(integer) 100", "(integer) 1", "(integer) -1", "OK",
        "(integer) 50", "OK" }, { table.unpack(l, 1, 10) })
      local pttl = tonumber(l[11]:match("^%(integer%) (%d+)$"))
      assert.is_true(pttl and pttl > 4000 and pttl <= 5000, l[11])
      assert.same({ "(integer) 0",
        "(error) ERR invalid expire time in 'set' command",
        "(error) ERR value is not an integer or out of range",
        "(integer) 1", "(integer) 0" }, { table.unpack(l, 12) })
    end)

    it("refuses expiry times out of range, as Redis does", function ()
      local out = cli(srv, table.concat({
        "set a b ex 99999999999999999", "set a b px 9223372036854775807",
        "set a b ex 9223372036854775", "exists a", "set e v",
        "expire e 9223372036854775807", "pexpire e 9223372036854775807",
        "expire e -9223372036854775807", "ttl e",
        "expire e 9000000000000000", "ttl e", "pttl e", "" }, "\n"))
      local l = lines(out)
      assert.same({ "(error) ERR invalid expire time in 'set' command",
        "(error) ERR invalid expire time in 'set' command",
        "(error) ERR invalid expire time in 'set' command",
        "(integer) 0", "OK",
        "(error) ERR invalid expire time in 'expire' command",
        "(error) ERR invalid expire time in 'pexpire' command",
        "(error) ERR invalid expire time in 'expire' command",
        "(integer) -1", "(integer) 1", "(integer) 9000000000000000" },
        { table.unpack(l, 1, 11) })
      local pttl = math.tointeger(tonumber(l[12]:match("^%(integer%) (%d+)$")))
      assert.is_true(pttl and pttl > 9000000000000000000 - 5000 and
        pttl <= 9000000000000000000, l[12])
      assert.equals(12, #l, out)
    end)

    it("INCRBY and DECRBY refuse to leave the 64-bit range", function ()
      local out = cli(srv, table.concat({
        "set n 1", "incrby n 9223372036854775807",
        "decrby n -9223372036854775808", "incrby n 99999999999999999999",
        "set m -9223372036854775808", "decr m", "incrby m 1", "get n", "" },
        "\n"))
      assert.same({ "OK", "(error) ERR increment or decrement would overflow",
        "(error) ERR decrement would overflow",
        "(error) ERR value is not an integer or out of range", "OK",
        "(error) ERR increment or decrement would overflow",
        "(integer) -9223372036854775807", '"1"' }, lines(out))
    end)

    it("lists: LPUSH, RPUSH, LRANGE, LLEN, LPOP, RPOP, TYPE", function ()
      local out = cli(srv, table.concat({
        "rpush l b c", "lpush l a", "lrange l 0 -1", "lrange l -2 10",
        "llen l", "lpop l", "rpop l", "type l", "rpop l", "type l",
        "set s v", "type s", "lpush s x", "" }, "\n"))
      assert.same({ "(integer) 2", "(integer) 3", '1) "a"', '2) "b"',
        '3) "c"', '1) "b"', '2) "c"', "(integer) 3", '"a"', '"c"', "list",
        '"b"', "none", "OK", "string",
        "(error) WRONGTYPE Operation against a key holding the wrong kind" ..
        " of value" }, lines(out))
    end)

    it("KEYS with glob patterns and FLUSHALL", function ()
      local out = cli(srv, "mset user:1 a user:2 b item:1 c\nkeys user:*\n" ..
        "keys *:[1]\nflushall\ndbsize\nkeys *\n")
      local l = lines(out)
      -- KEYS lists in no particular order: sort each reply's names
      local function names (i, j)
        local t = {}
        for k = i, j do t[#t + 1] = l[k]:match('^%d%) "(.-)"$') end
        table.sort(t)
        return t
      end
      assert.equals(8, #l, out)
      assert.equals("OK", l[1])
      assert.same({ "user:1", "user:2" }, names(2, 3))
      assert.same({ "item:1", "user:1" }, names(4, 5))
      assert.same({ "OK", "(integer) 0", "(empty array)" },
        { l[6], l[7], l[8] })
    end)

    it("gives Redis's errors for unknown commands and wrong arity",
       function ()
      assert.equals("(error) ERR unknown command 'foo', with args " ..
        "beginning with: 'bar' 'baz' \n", (cli(srv, { "foo", "bar", "baz" })))
      assert.equals("(error) ERR unknown command 'nope', with args " ..
        "beginning with: \n", (cli(srv, { "nope" })))
      assert.equals("(error) ERR wrong number of arguments for 'get' " ..
        "command\n", (cli(srv, { "GET" })))
      assert.equals("(error) ERR wrong number of arguments for 'set' " ..
        "command\n", (cli(srv, { "set", "k" })))
      assert.equals("(error) ERR wrong number of arguments for 'mset' " ..
        "command\n", (cli(srv, { "mset", "a", "1", "b" })))
    end)

    it("answers COMMAND, CONFIG GET, SELECT and QUIT", function ()
      local count = tonumber((cli(srv, { "command", "count" }))
        :match("^%(integer%) (%d+)\n$"))
      assert.is_true(count and count >= 30)
      assert.equals('1) "save"\n2) ""\n', (cli(srv, { "config", "get",
        "save" })))
      assert.equals("(empty array)\n",
        (cli(srv, { "config", "get", "nosuch" })))
      assert.equals("OK\n", (cli(srv, { "select", "0" })))
      assert.equals("(error) ERR DB index is out of range\n",
        (cli(srv, { "select", "3" })))
      assert.equals("OK\n", (cli(srv, { "quit" })))
    end)

    it("takes inline commands, as telnet sends them (socat)", function ()
      local path = srv.dir .. "/inline"
      local f = assert(io.open(path, "wb"))
      f:write('PING\r\nset k "two words\\x21"\r\nGET k\r\nQUIT\r\n')
      f:close()
      local out, ok = sh("socat -t 5 - TCP:127.0.0.1:" ..
        srv.listeners[1].port, path)
      assert.is_true(ok, out)
      assert.equals("+PONG\r\n+OK\r\n$10\r\ntwo words!\r\n+OK\r\n", out)
    end)
  end)

  describe("resp.lua over a raw socket", function ()
    it("answers a pipeline of 2000 commands in order", function ()
      local srv = start(model)
      local c = srv:connect()
      local batch = {}
      for i = 1, 1000 do
        batch[#batch + 1] = resp("SET", "k" .. i, "v" .. i)
        batch[#batch + 1] = resp("GET", "k" .. i)
      end
      assert(c:send(table.concat(batch)))
      for i = 1, 1000 do
        assert.equals("+OK", c:receive())
        assert.equals("$" .. #("v" .. i), c:receive())
        assert.equals("v" .. i, c:receive())
      end
    end)

    it("answers a pipeline whose replies outgrow the socket buffers",
    function ()
      local srv = start(model)
      local c = srv:connect()
      local value = ("v"):rep(65536)
      local batch = { resp("SET", "k", value) }
      for i = 1, 100 do batch[#batch + 1] = resp("GET", "k") end
      assert(c:send(table.concat(batch)))   -- 6.5 MB of replies
      assert.equals("+OK", c:receive())
      for i = 1, 100 do
        assert.equals("$65536", c:receive(), i)
        assert.is_true(c:receive(65538) == value .. "\r\n", i)
      end
    end)

    it("closes the connection after a protocol error", function ()
      local srv = start(model)
      local c = srv:connect()
      c:send(resp("PING") .. "*1\r\n+foo\r\n" .. resp("PING"))
      assert.equals("+PONG", c:receive())
      assert.equals("-ERR Protocol error: expected '$', got '+'",
        c:receive())
      assert.same({ nil, "closed" }, { c:receive() })
    end)

    it("refuses an inline command longer than --max-line", function ()
      local srv = start(model, "--max-line", "100")
      local c = srv:connect()
      c:send("ECHO " .. ("x"):rep(50) .. "\r\nECHO " .. ("y"):rep(200) ..
        "\r\n")
      assert.equals("$50", c:receive())
      assert.equals(("x"):rep(50), c:receive())
      assert.equals("-ERR Protocol error: too big inline request", c:receive())
      assert.same({ nil, "closed" }, { c:receive() })
    end)

    it("answers every integer reply with digits, never a float", function ()
      local srv = start(model)
      local c = srv:connect()
      c:send(resp("SET", "a", "b", "EX", "99999999999999999") ..
        resp("SET", "e", "v") .. resp("EXPIRE", "e", "9223372036854775807") ..
        resp("TTL", "a") .. resp("TTL", "e") .. resp("PTTL", "e") ..
        resp("PEXPIRE", "e", "4611686018427387903") .. resp("TTL", "e") ..
        resp("PTTL", "e") .. resp("DBSIZE") .. resp("INCR", "n"))
      local want = { "^%-ERR invalid expire time in 'set' command$", "^%+OK$",
        "^%-ERR invalid expire time in 'expire' command$", "^:%-2$", "^:%-1$",
        "^:%-1$", "^:1$", "^:461168601842738%d$", "^:461168601842738%d%d%d%d$",
        "^:1$", "^:1$" }
      for i, pattern in ipairs(want) do
        local line = c:receive()
        assert.matches(pattern, line, 1, false, i)
      end
    end)

    it("expires keys lazily when touched", function ()
      local srv = start(model)
      local c = srv:connect()
      c:send(resp("SET", "k", "v", "PX", "100") .. resp("GET", "k"))
      assert.equals("+OK", c:receive())
      assert.equals("$1", c:receive())
      assert.equals("v", c:receive())
      T.sleep(0.2)
      c:send(resp("GET", "k") .. resp("EXISTS", "k") .. resp("TTL", "k"))
      assert.equals("$-1", c:receive())
      assert.equals(":0", c:receive())
      assert.equals(":-2", c:receive())
    end)

    -- service_actions runs in the worker's state: in the fork model the
    -- keys live in the child, in the thread model in a busy thread's state
    if model == "sync" or model == "event" then
      it("purges expired keys from service_actions", function ()
        local srv = start(model)
        local c = srv:connect()
        c:send(resp("SET", "k", "v", "PX", "50") .. resp("DBSIZE"))
        assert.equals("+OK", c:receive())
        assert.equals(":1", c:receive())
        c:close()                -- sync: let the worker get back to its loop
        T.sleep(1.2)
        c = srv:connect()
        c:send(resp("DBSIZE"))   -- DBSIZE counts keys not yet deleted
        assert.equals(":0", c:receive())
      end)
    end
  end)

  describe("resp.lua with redis-benchmark", function ()
    -- sync serves one connection at a time: the benchmark's other clients
    -- would wait for ever, so it gets one client
    local clients = model == "sync" and "1" or "10"

    it("runs SET, GET and INCR, plain and pipelined (-P 16)", function ()
      local srv = start(model)
      local port = srv.listeners[1].port
      for _, pipeline in ipairs({ "", " -P 16" }) do
        local out, ok = sh(("redis-benchmark -p %d -c %s -n 2000 -q " ..
          "-t set,get,incr%s"):format(port, clients, pipeline))
        assert.is_true(ok, out)
        local rates = benchmark_rates(out)
        for _, name in ipairs({ "SET", "GET", "INCR" }) do
          assert.is_true((rates[name] or 0) > 0, name .. " in:\n" .. out)
        end
      end
      -- the benchmark's INCRs all went to one key: 2 x 2000 of them
      if model == "sync" or model == "event" then
        assert.equals('"4000"\n', (cli(srv, { "get", "counter:__rand_int__" })))
      end
    end)
  end)
end)
