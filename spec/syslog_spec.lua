-- scripts/syslog.lua, fed by util-linux's logger (RFC 5424 and RFC 3164,
-- over UDP, TCP, Unix datagram and Unix stream) and by socat for a message
-- logger cannot send (one without <PRI>).
local H = require "helper"
local T = H.T
local cjson = require "cjson"

local SCRIPT = "scripts/syslog.lua"

local quote = H.quote

-- runs logger with the words given; its output and whether it exited 0
local function logger (args)
  local words = {}
  for i, a in ipairs(args) do words[i] = quote(a) end
  local p = io.popen("timeout -k 2 10 logger " .. table.concat(words, " ") ..
    " 2>&1 </dev/null")
  local out = p:read("a")
  return out, p:close()
end

-- waits until read() has n lines (5 s at most); them, decoded
local function wait_entries (read, n)
  local deadline = T.now() + 5
  local lines
  repeat
    lines = H.lines(read())
    if #lines >= n then break end
    T.sleep(0.02)
  until T.now() > deadline
  local entries = {}
  for i, line in ipairs(lines) do entries[i] = cjson.decode(line) end
  return entries
end

-- this machine's name as logger writes it (up to the first dot)
local function short_hostname ()
  local p = io.popen("uname -n")
  local name = p:read("l")
  p:close()
  return (name:match("^[^.]+"))
end


H.for_models(function (model)
  describe("syslog.lua with logger", function ()
    local srv
    local function stdout () return srv:stdout() end
    before_each(function ()
      srv = H.start{ model = model, script = SCRIPT, udp = true, tcp = true,
                     unix = true, unixgram = true }
    end)

    it("parses RFC 5424 over UDP, structured data included", function ()
      local out, ok = logger{ "-n", "127.0.0.1", "-P", srv.udp.port, "-d",
        "--rfc5424", "-t", "myapp", "--msgid", "ID47", "-i",
        "--sd-id", "ex@32473", "--sd-param", 'eventID="1011"',
        "-p", "local3.warning", "hello 5424" }
      assert.is_true(ok, out)
      local e = wait_entries(stdout, 1)[1]
      assert.is_table(e, srv:stdout())
      assert.equals("rfc5424", e.format)
      assert.equals(19 * 8 + 4, e.priority)
      assert.equals("local3", e.facility)
      assert.equals("warning", e.severity)
      assert.equals(1, e.version)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d", e.timestamp)
      assert.equals(short_hostname(), e.hostname)
      assert.equals("myapp", e.app_name)
      assert.matches("^%d+$", e.procid)
      assert.equals("ID47", e.msgid)
      assert.same({ eventID = "1011" }, e.structured_data["ex@32473"])
      assert.equals("hello 5424", e.message)
      assert.equals("udp", e.transport)
      assert.matches("^127%.0%.0%.1:%d+$", e.from)
    end)

    it("leaves RFC 5424 nil values out", function ()
      assert.is_true((select(2, logger{ "-n", "127.0.0.1", "-P",
        srv.udp.port, "-d", "--rfc5424=notime,nohost", "-t", "t",
        "no time" })))
      local e = wait_entries(stdout, 1)[1]
      assert.equals("rfc5424", e.format)
      assert.is_nil(e.timestamp)
      assert.is_nil(e.hostname)
      assert.is_nil(e.msgid)
      assert.equals("t", e.app_name)
      assert.equals("no time", e.message)
    end)

    it("parses RFC 3164 over UDP", function ()
      assert.is_true((select(2, logger{ "-n", "127.0.0.1", "-P",
        srv.udp.port, "-d", "--rfc3164", "-t", "bsd", "-p", "mail.err",
        "hello 3164" })))
      local e = wait_entries(stdout, 1)[1]
      assert.equals("rfc3164", e.format)
      assert.equals(2 * 8 + 3, e.priority)
      assert.equals("mail", e.facility)
      assert.equals("err", e.severity)
      assert.matches("^%u%l%l [ %d]%d %d%d:%d%d:%d%d$", e.timestamp)
      assert.equals(short_hostname(), e.hostname)
      assert.equals("bsd", e.app_name)
      assert.equals("hello 3164", e.message)
    end)

    it("takes local messages on a Unix datagram socket (logger -u)",
       function ()
      assert.is_true((select(2, logger{ "-u", srv.unixgram.path, "-i",
        "-t", "local", "-p", "auth.info", "from a pipe" })))
      assert.is_true((select(2, logger{ "-u", srv.unixgram.path,
        "--rfc5424", "-t", "local5424", "second" })))
      local e = wait_entries(stdout, 2)
      assert.equals(2, #e, srv:stdout())
      -- in the fork model each datagram has a child of its own: either may
      -- write first
      if e[1].app_name ~= "local" then e[1], e[2] = e[2], e[1] end
      -- the local format has no host name: "<38>Mmm dd hh:mm:ss TAG[PID]: "
      assert.equals("rfc3164", e[1].format)
      assert.equals("auth", e[1].facility)
      assert.equals("info", e[1].severity)
      assert.is_nil(e[1].hostname)
      assert.equals("local", e[1].app_name)
      assert.matches("^%d+$", e[1].procid)
      assert.equals("from a pipe", e[1].message)
      assert.equals("unixgram", e[1].transport)
      assert.equals("rfc5424", e[2].format)
      assert.equals("local5424", e[2].app_name)
      assert.equals("second", e[2].message)
    end)

    it("reads TCP streams, newline framed and octet counted", function ()
      local port = srv.tcp.port
      assert.is_true((select(2, logger{ "-n", "127.0.0.1", "-P", port, "-T",
        "-t", "lines", "framed by a newline" })))
      assert.is_true((select(2, logger{ "-n", "127.0.0.1", "-P", port, "-T",
        "--octet-count", "-t", "counted", "framed by its length" })))
      local e = wait_entries(stdout, 2)
      assert.equals(2, #e, srv:stdout())
      table.sort(e, function (a, b) return a.app_name > b.app_name end)
      assert.equals("framed by a newline", e[1].message)
      assert.equals("framed by its length", e[2].message)
      assert.equals("tcp", e[2].transport)
    end)

    it("reads a Unix stream socket (logger -u)", function ()
      assert.is_true((select(2, logger{ "-u", srv.unix.path, "-t", "st",
        "over a stream" })))
      local e = wait_entries(stdout, 1)[1]
      assert.equals("over a stream", e.message)
      assert.equals("unix", e.transport)
    end)

    it("turns a line longer than --max-line into one record, cut",
       function ()
      local c = srv:connect(srv.tcp)
      -- 200 KB on one line (the default --max-line is 64 KiB), without and
      -- with <PRI>, each followed by a message in the same packet
      local long = ("x"):rep(200 * 1024)
      assert(c:send(long .. "\n<13>after it\n<13>" .. long .. "\n"))
      assert(c:send("<14>and another\n"))
      local e = wait_entries(stdout, 4)
      assert.equals(4, #e, #srv:stdout() .. " bytes of output")
      for _, i in ipairs({ 1, 3 }) do
        assert.is_true(e[i].truncated, i)
        assert.equals(i == 1 and #long or #long + 4, e[i].length)
        assert.matches("^x+$", e[i].message)
        assert.is_true(#e[i].message < #long)
      end
      assert.same({ "none", "user" }, { e[1].format, e[3].facility })
      assert.same({ "after it", "and another" }, { e[2].message, e[4].message })
      assert.is_nil(e[2].truncated)
    end)

    it("reads what follows a cut line in the same packet (--max-line 100)",
       function ()
      local small = H.start{ model = model, script = SCRIPT, tcp = true,
                             args = { "--max-line", "100" } }
      local c = small:connect()
      local batch = {}
      for i = 1, 20 do
        batch[#batch + 1] = ("y"):rep(i * 37) .. "\n<13>n" .. i .. "\n"
      end
      assert(c:send(table.concat(batch)))
      local e = wait_entries(function () return small:stdout() end, 40)
      assert.equals(40, #e)
      -- a line is cut when the core refuses it: the lines received with
      -- the end of a cut one are parsed here, whole
      local cuts = 0
      for i = 1, 20 do
        local long, msg = e[2 * i - 1], e[2 * i]
        if long.truncated then
          cuts = cuts + 1
          assert.equals(i * 37, long.length)
          assert.is_true(i * 37 > 100)
        end
        assert.equals(("y"):rep(i * 37):sub(1, #long.message), long.message)
        assert.equals("n" .. i, msg.message)
      end
      assert.is_true(cuts > 0)
    end)

    it("writes invalid UTF-8 as U+FFFD, so every line is valid JSON",
       function ()
      local bad = { "\255\254", "\192\175", "\226\130", "\237\160\128",
                    "ok \226\130\172" }
      local c = srv:connect(srv.tcp)
      for _, b in ipairs(bad) do
        assert(c:send("<13>Jan  2 03:04:05 h\255st t\254g: " .. b .. "\n"))
      end
      local e = wait_entries(stdout, #bad)
      assert.equals(#bad, #e)
      for _, line in ipairs(H.lines(srv:stdout())) do
        assert.truthy(utf8.len(line), line)
      end
      local R = "\239\191\189"   -- U+FFFD
      assert.same({ R .. R, R .. R, R .. R, R .. R .. R, "ok \226\130\172" },
        { e[1].message, e[2].message, e[3].message, e[4].message,
          e[5].message })
      assert.equals("h" .. R .. "st", e[1].hostname)
    end)

    it("takes a message without <PRI> as user.notice (socat)", function ()
      local p = io.popen("printf 'no priority here' | timeout 10 socat -u " ..
        "- UDP:127.0.0.1:" .. srv.udp.port)
      p:read("a")
      assert.is_true((p:close()))
      local e = wait_entries(stdout, 1)[1]
      assert.same({ "none", 13, "user", "notice", "no priority here" },
        { e.format, e.priority, e.facility, e.severity, e.message })
    end)
  end)

  it("appends to $SYSLOG_FILE when it is set", function ()
    local dir = H.tmpdir()
    local path = dir .. "/messages.jsonl"
    local srv = H.start{ model = model, script = SCRIPT, udp = true,
                         env = { SYSLOG_FILE = path } }
    for i = 1, 3 do
      assert.is_true((select(2, logger{ "-n", "127.0.0.1", "-P",
        srv.udp.port, "-d", "-t", "f", "line " .. i })))
      wait_entries(function ()      -- one at a time: UDP may reorder
        local f = io.open(path)
        local s = f and f:read("a") or ""
        if f then f:close() end
        return s
      end, i)
    end
    srv:stop()
    local f = assert(io.open(path))
    local text = f:read("a")
    f:close()
    local messages = {}
    for i, line in ipairs(H.lines(text)) do
      messages[i] = cjson.decode(line).message
    end
    assert.same({ "line 1", "line 2", "line 3" }, messages)
    assert.equals("", srv:stdout())
  end)
end)
