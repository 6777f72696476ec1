-- OpenResty's lua-resty-dns (Debian's lua-nginx-dns, unmodified) in
-- luasrv handlers through luasrv.ngx (UDP and TCP sockets, bit, ngx.re),
-- against a real dnsmasq serving a test zone on a free loopback port:
-- A, AAAA, SRV, TXT, a name that does not exist, and an answer too big
-- for UDP that the resolver fetches again over TCP.
local H = require "helper"
local N = require "ngx_helper"

local have = N.have("dnsmasq")
local maybe = have and it or pending

local BIG = 15  -- TXT records of big.test: about 900 bytes, over UDP's 512

local port, pid, log

local function dnsmasq ()
  if pid and os.execute("kill -0 " .. pid .. " 2>/dev/null") == true then
    return port
  end
  port = H.free_port()
  local args = {
    "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
    "--port", port, "--listen-address", "127.0.0.1", "--bind-interfaces",
    "--pid-file=", "--user=root", "--log-queries", "--log-facility=-",
    "--address=/a.test/127.0.0.7", "--address=/a.test/::7",
    "--txt-record=t.test,hello world",
    "--srv-host=_sip._tcp.s.test,target.test,5060,10,20",
  }
  for i = 1, BIG do
    args[#args + 1] = "--txt-record=big.test,record-" .. i ..
      "-padding-padding-padding-padding-padding"
  end
  for i, a in ipairs(args) do args[i] = N.quote(a) end
  log = os.tmpname()
  local f = assert(io.popen("exec " .. table.concat(args, " ") .. " >" ..
    log .. " 2>&1 </dev/null & echo $!"))
  pid = tonumber(f:read("l"))
  f:close()
  N.wait_port(port)
  return port
end

teardown(function ()
  if pid then os.execute("kill " .. pid) end
  if log then os.remove(log) end
end)

local PRE = [[
resolver = require "resty.dns.resolver"
PORT = tonumber(os.getenv("DNS_PORT"))
function client ()
  return assert(resolver:new{ nameservers = { { "127.0.0.1", PORT } },
                              retrans = 2, timeout = 2000 })
end
]]

H.for_models(function (model)
  describe("resty.dns.resolver", function ()
    local srv
    local function ask (body) return N.ask(srv, body) end

    before_each(function ()
      if have then
        srv = N.start{ model = model, env = { DNS_PORT = tostring(dnsmasq()) },
                       source = N.HEAD .. PRE .. H.RUNNER }
      end
    end)

    maybe("answers A and AAAA queries", function ()
      local res = ask [[
        local r = client()
        local a = assert(r:query("a.test", { qtype = r.TYPE_A }))
        local aaaa = assert(r:query("a.test", { qtype = r.TYPE_AAAA }))
        return #a, a[1].address, a[1].type, a[1].name,
               #aaaa, aaaa[1].address, aaaa[1].type,
               resolver.compress_ipv6_addr(aaaa[1].address) ]]
      assert.same({ 1, "127.0.0.7", 1, "a.test",
                    1, "0:0:0:0:0:0:0:7", 28, "::7", n = 8 }, res)
    end)

    maybe("answers SRV and TXT queries", function ()
      local res = ask [[
        local r = client()
        local srv = assert(r:query("_sip._tcp.s.test", { qtype = r.TYPE_SRV }))
        local txt = assert(r:query("t.test", { qtype = r.TYPE_TXT }))
        local s = srv[1]
        return s.target, s.port, s.priority, s.weight, txt[1].txt ]]
      assert.same({ "target.test", 5060, 10, 20, "hello world", n = 5 }, res)
    end)

    maybe("reports a name that does not exist", function ()
      local res = ask [[
        local r = client()
        local ans, err = r:query("nowhere.test", { qtype = r.TYPE_A })
        return ans and #ans, ans and ans.errcode, ans and ans.errstr, err ]]
      -- dnsmasq without upstreams answers REFUSED (5) for names it has not
      -- configured
      assert.equals(0, res[1])
      assert.is_number(res[2])
      assert.is_string(res[3])
    end)

    maybe("fetches an answer truncated over UDP again over TCP", function ()
      local res = ask [[
        local r = client()
        local ans = assert(r:query("big.test", { qtype = r.TYPE_TXT }))
        local seen = {}
        for _, rr in ipairs(ans) do seen[#seen + 1] = rr.txt:match("^record%-(%d+)") end
        table.sort(seen, function (a, b) return tonumber(a) < tonumber(b) end)
        return #ans, table.concat(seen, ",") ]]
      local all = {}
      for i = 1, BIG do all[i] = tostring(i) end
      assert.same({ BIG, table.concat(all, ","), n = 2 }, res)
      -- dnsmasq answers TCP in a child process of its own: the query
      -- came twice, once over UDP (dnsmasq's pid), once over TCP (another)
      local pids = {}
      for p in N.read(log):gmatch("dnsmasq%[(%d+)%]: query%[TXT%] big%.test") do
        pids[#pids + 1] = tonumber(p)
      end
      assert.is_true(#pids >= 2)
      assert.equals(pid, pids[#pids - 1])
      assert.not_equals(pid, pids[#pids])
    end)

    maybe("reports a nameserver that does not answer", function ()
      local res = ask [[
        local r = assert(resolver:new{ nameservers = { { "127.0.0.1", 9 } },
                                       retrans = 1, timeout = 200 })
        local ans, err = r:query("a.test")
        return ans, err ]]
      assert.is_nil(res[1])
      -- port 9 (discard) has no listener on loopback: the ICMP error
      -- comes back as "connection refused", or the wait times out
      assert.matches("failed to receive reply from UDP server 127%.0%.0%.1:9: ", res[2])
    end)
  end)
end)
