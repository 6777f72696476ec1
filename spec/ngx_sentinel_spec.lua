-- OpenResty's lua-resty-redis-connector (Debian's
-- lua-nginx-redis-connector, unmodified) with Redis Sentinel, in luasrv
-- handlers through luasrv.ngx: one master, one replica and three
-- sentinels on loopback (redis-server and redis-server --sentinel). The
-- spec kills the master; Sentinel promotes the replica; the handler
-- answers every request meanwhile, with an error during the failover,
-- then writes to the new master. NGX_SPEC_VERBOSE=1 prints the window.
local H = require "helper"
local N = require "ngx_helper"

local have = N.have("redis-server") and N.have("redis-cli")
local maybe = have and it or pending

local function cli (port, cmd)
  local f = assert(io.popen("redis-cli -p " .. port .. " " .. cmd ..
                            " 2>/dev/null"))
  local out = f:read("a")
  f:close()
  return out
end

-- the value after FIELD in `SENTINEL master mymaster`'s reply
local function field (port, name)
  return cli(port, "sentinel master mymaster"):match(name .. "\n([^\n]*)")
end

local function start_cluster ()
  local dir = H.T.tmpdir()
  local master, replica = H.free_port(), H.free_port()
  -- --dir: a replica writes the master's snapshot to its directory
  local redis = "redis-server --bind 127.0.0.1 --save '' --appendonly no " ..
                "--dir " .. N.quote(dir) .. " --port "
  local mpid = N.daemon(redis .. master)
  N.wait_port(master)
  N.daemon(redis .. replica .. " --replicaof 127.0.0.1 " .. master)
  -- a sentinel learns the replicas from the master's INFO, at once and
  -- then every 10 s: start them once the replica is there
  assert(H.eventually(function ()
    return cli(master, "info replication"):find("connected_slaves:1", 1, true)
  end, 10), "the replica did not connect")
  local sentinels = {}
  for i = 1, 3 do
    local port = H.free_port()
    local conf = dir .. "/sentinel" .. i .. ".conf"
    local f = assert(io.open(conf, "w"))
    f:write("port ", port, "\nbind 127.0.0.1\n",
            "sentinel monitor mymaster 127.0.0.1 ", master, " 2\n",
            "sentinel down-after-milliseconds mymaster 500\n",
            "sentinel failover-timeout mymaster 3000\n")
    f:close()
    N.daemon("redis-server " .. conf .. " --sentinel --dir " .. N.quote(dir))
    sentinels[i] = port
  end
  -- every sentinel knows the replica and the two others
  assert(H.eventually(function ()
    for _, p in ipairs(sentinels) do
      if field(p, "num%-slaves") ~= "1" or
         field(p, "num%-other%-sentinels") ~= "2" then return false end
    end
    return true
  end, 15), "the sentinels did not find each other")
  return { master = master, replica = replica, mpid = mpid,
           sentinels = sentinels }
end

local PRE = [[
connector = require "resty.redis.connector"
SENTINELS = {}
for p in os.getenv("SENTINELS"):gmatch("%d+") do
  SENTINELS[#SENTINELS + 1] = { host = "127.0.0.1", port = tonumber(p) }
end
function write ()
  local c = connector.new{ connect_timeout = 200, read_timeout = 500,
                           master_name = "mymaster", sentinels = SENTINELS }
  local r, err = c:connect()
  if not r then return "ERR", tostring(err) end
  local ok, werr = r:set("failover:k", "v")
  if not ok then r:close() return "ERR", tostring(werr) end
  local port = tonumber(r:info("server"):match("tcp_port:(%d+)"))
  c:set_keepalive(r)
  return "OK", port
end
]]

for _, model in ipairs(H.models) do
  if model == "event" or model == "sync" then
    describe("model " .. model .. " resty.redis.connector with Sentinel", function ()
      maybe("keeps answering while Sentinel promotes the replica", function ()
        local cl = start_cluster()
        local srv = N.start{ model = model, source = N.HEAD .. PRE .. H.RUNNER,
          env = { SENTINELS = table.concat(cl.sentinels, ",") } }
        assert.same({ "OK", cl.master, n = 2 }, N.ask(srv, "return write()"))
        local t0 = H.T.now()
        os.execute("kill -9 " .. cl.mpid)
        local failed, total, window, last, errs = 0, 0, nil, nil, {}
        while H.T.now() - t0 < 20 * H.scale do
          last = N.ask(srv, "return write()")  -- raises if no reply
          total = total + 1
          if last[1] == "OK" and last[2] == cl.replica then
            window = H.T.now() - t0
            break
          end
          failed = failed + 1
          errs[tostring(last[2])] = true
          H.T.sleep(0.05)
        end
        assert.is_number(window, "no write reached the replica; last: " ..
                         tostring(last[1]) .. " " .. tostring(last[2]))
        if os.getenv("NGX_SPEC_VERBOSE") then
          local e = {}
          for k in pairs(errs) do e[#e + 1] = k end
          print(("%s: failover window %.2f s: %d of %d requests failed (%s)")
                :format(model, window, failed, total, table.concat(e, "; ")))
        end
        -- and it stays there
        assert.same({ "OK", cl.replica, n = 2 }, N.ask(srv, "return write()"))
      end)
    end)
  end
end
