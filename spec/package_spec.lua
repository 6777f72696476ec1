-- The Debian package: `make deb` builds it (debhelper; lintian finds no
-- error), apt-get installs it, the installed server serves with the
-- installed example configuration file, as the unit runs it (through
-- systemd where systemd runs the machine: reload, log rotation, a binary
-- upgrade on reinstall), lua5.4 finds the installed modules, and purging
-- it leaves nothing behind. Runs once per test run, whatever the models,
-- as root on Debian only: it installs and removes a system package.
local H = require "helper"
local T = H.T
local socket = require "socket"

local function sh (cmd)
  local p = io.popen("(" .. cmd .. ") 2>&1")
  local out = p:read("a")
  local ok = p:close()
  return ok == true, out
end

local q = H.quote

local readfile = H.try_read_file

local function lines_of (s)
  local t = {}
  for line in s:gmatch("[^\n]+") do t[#t + 1] = line end
  return t
end

-- The lines of a luasrv --config file that are not comments or blank
local function config_lines (text)
  local t = {}
  for _, line in ipairs(lines_of(text)) do
    if not line:match("^%s*#") and line:match("%S") then t[#t + 1] = line end
  end
  return t
end

-- polls path until its text matches pattern; the text, or nil
local function file_matches (path, pattern, secs)
  local text
  H.eventually(function ()
    text = readfile(path)
    return text and text:find(pattern)
  end, secs)
  return text and text:find(pattern) and text or nil
end

local function systemctl_show (prop, unit)
  return (select(2, sh("systemctl show -p " .. prop .. " --value " .. unit))
    :gsub("\n$", ""))
end

-- Why this machine cannot run the spec, or nil
local function unfit ()
  local _, uid = sh("id -u")
  if uid ~= "0\n" then return "needs root (it installs a package)" end
  if not H.exists("/etc/debian_version") then return "needs Debian" end
  local _, status = sh("dpkg-query -W -f='${Status}' luasrv")
  if status:find("installed", 1, true) and not status:find("not-installed", 1, true) then
    return "the luasrv package is installed here: this spec would purge it"
  end
end

-- One run at a time on a machine: the package is system-wide. The lock
-- is a directory holding the pid of the busted process that made it.
local LOCK = "/run/lock/luasrv-package-spec"

local function take_lock ()
  local me = io.popen("echo $PPID"):read("l")
  local function mine ()
    local f = assert(io.open(LOCK .. "/pid", "w"))
    f:write(me, "\n")
    f:close()
    return true
  end
  if os.execute("mkdir " .. LOCK .. " 2>/dev/null") then return mine() end
  local pid = tonumber(readfile(LOCK .. "/pid") or "")
  if pid and os.execute("kill -0 " .. pid .. " 2>/dev/null") then return false end
  -- left by a run that died
  if os.execute("rm -rf " .. LOCK .. " && mkdir " .. LOCK) then return mine() end
  return false
end

local APT = "DEBIAN_FRONTEND=noninteractive apt-get -y -q " ..
            "-o DPkg::Lock::Timeout=60 --no-install-recommends "

-- What the package installs (a sample of each kind) and where
local INSTALLED = {
  "/usr/bin/luasrv",
  "/usr/share/lua/5.4/luasrv/http.lua",
  "/usr/share/lua/5.4/luasrv/test.lua",
  "/usr/share/luasrv/scripts/echo.lua",
  "/usr/share/luasrv/scripts/http.lua",
  "/usr/share/man/man1/luasrv.1.gz",
  "/usr/share/doc/luasrv/README.md",
  "/usr/share/doc/luasrv/doc/operations.md",
  "/usr/share/doc/luasrv/copyright",
  "/lib/systemd/system/luasrv@.service",
  "/lib/systemd/system/luasrv@.socket",
  "/etc/luasrv/example.conf",
  "/etc/logrotate.d/luasrv",
}

local unfit_why = unfit()
if not unfit_why and not take_lock() then
  unfit_why = "another run of this spec holds " .. LOCK
end

describe("the Debian package", function ()
  if unfit_why then
    pending("make deb, install, serve, purge: skipped, " .. unfit_why)
    return
  end

  local dir, deb, installed
  local version = (readfile("src/cli.h") or ""):match(
    '#define LUASRV_VERSION "([^"]+)"')

  setup(function () dir = T.tmpdir() end)

  teardown(function ()
    if installed then sh(APT .. "purge luasrv") end
    os.execute("rm -rf " .. LOCK)
    if dir then T.rmrf(dir) end
  end)

  local function need (what)
    if what == "deb" then assert(deb, "the package was not built") end
    if what == "installed" then assert(installed, "the package is not installed") end
  end

  it("make deb builds it with debhelper; lintian reports no error", function ()
    local _, before = sh("git status --porcelain --ignored 2>/dev/null")
    local ok, out = sh("env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u BUILD " ..
                       "nice make -s deb DEBDIR=" .. q(dir))
    assert(ok, out)
    assert.is_nil(out:find("\nE: ", 1, true), out)
    deb = dir .. "/luasrv_" .. version .. "_" ..
          io.popen("dpkg --print-architecture"):read("l") .. ".deb"
    assert.is_true(H.exists(deb), out)
    -- nothing was written into the tree
    local _, after = sh("git status --porcelain --ignored 2>/dev/null")
    assert.equals(before, after)
    -- its Depends: what the tools found the binary links, and lua-cjson
    local _, depends = sh("dpkg-deb -f " .. q(deb) .. " Depends")
    assert.matches("liblua5%.4%-0", depends)
    assert.matches("libc6", depends)
    assert.matches("lua%-cjson", depends)
  end)

  it("apt-get installs it: binary, modules, scripts, man page, docs, units, "
     .. "example configuration and logrotate snippet as conffiles", function ()
    need("deb")
    local ok, out = sh(APT .. "install " .. q(deb))
    installed = true
    assert(ok, out)
    for _, f in ipairs(INSTALLED) do
      assert.is_true(H.exists(f), f .. " is not installed")
    end
    local _, v = sh("/usr/bin/luasrv --version")
    assert.matches("^luasrv " .. version:gsub("%p", "%%%0") .. " ", v)
    local conffiles = readfile("/var/lib/dpkg/info/luasrv.conffiles") or ""
    assert.truthy(conffiles:find("/etc/luasrv/example.conf", 1, true), conffiles)
    assert.truthy(conffiles:find("/etc/logrotate.d/luasrv", 1, true), conffiles)
    -- what the man page's FILES and SEE ALSO name is there
    local _, man = sh("zcat /usr/share/man/man1/luasrv.1.gz")
    local named = 0
    for path in man:gmatch("%.I (/usr/share/[%w/._-]+)") do
      assert.is_true(H.exists(path), "the man page names " .. path)
      named = named + 1
    end
    for path in man:match("%.SH SEE ALSO\n(.*)$"):gmatch("(/usr/[%w/._-]+)") do
      assert.is_true(H.exists(path), "SEE ALSO names " .. path)
      named = named + 1
    end
    assert.is_true(named >= 4, man)
    -- the units are valid for this systemd (directives, the binary)
    if os.execute("command -v systemd-analyze >/dev/null") then
      ok, out = sh("systemd-analyze verify /lib/systemd/system/luasrv@.service "
                   .. "/lib/systemd/system/luasrv@.socket")
      assert(ok and out == "", out)
    end
  end)

  it("luasrv --check --config passes on the installed example, and refuses "
     .. "a file in the environment-file format", function ()
    need("installed")
    local ok, out = sh("/usr/bin/luasrv --check --config /etc/luasrv/example.conf")
    assert(ok, out)
    assert.equals("luasrv: /usr/share/luasrv/scripts/echo.lua: ok\n", out)
    -- no conversion of the LUASRV_SCRIPT=/LUASRV_OPTS= format: the check
    -- (the unit's ExecStartPre=) names the line
    local old = dir .. "/old.conf"
    local f = assert(io.open(old, "w"))
    f:write("# before\nLUASRV_SCRIPT=/usr/share/luasrv/scripts/echo.lua\n",
            'LUASRV_OPTS="--tcp 127.0.0.1:9999"\n')
    f:close()
    ok, out = sh("/usr/bin/luasrv --check --config " .. q(old))
    assert.is_false(ok)
    assert.equals("luasrv: " .. old .. ":2: unknown option '--LUASRV_SCRIPT'\n", out)
  end)

  it("serves with the installed example configuration as the unit runs it, "
     .. "and the logrotate snippet rotates its log", function ()
    need("installed")
    local example = config_lines(assert(readfile("/etc/luasrv/example.conf")))
    local script, tcp = 0, 0
    for _, line in ipairs(example) do
      if line == "script /usr/share/luasrv/scripts/echo.lua" then script = script + 1 end
      if line:match("^tcp 127%.0%.0%.1:%d+$") then tcp = tcp + 1 end
    end
    assert.equals(1, script, table.concat(example, "\n"))
    assert.equals(1, tcp, "the example listens on 127.0.0.1:PORT")
    -- the example's port, swapped for a free one (tests run side by side)
    local port = H.free_port()
    local name = "pkgspec" .. port
    local log = "/var/log/luasrv/" .. name .. ".log"
    local state = dir .. "/logrotate.state"
    local function logtext () return readfile(log) or "(no " .. log .. ")" end
    local listening = "listening on tcp://127%.0%.0%.1:" .. port
    if H.exists("/run/systemd/system") then
      -- an instance of the template unit: luasrv@NAME reads NAME.conf
      local unit = "luasrv@" .. name .. ".service"
      local conf = "/etc/luasrv/" .. name .. ".conf"
      local function write_conf (extra)
        local f = assert(io.open(conf, "w"))
        for _, line in ipairs(example) do
          f:write((line:gsub("^tcp 127%.0%.0%.1:%d+$", "tcp 127.0.0.1:" .. port)), "\n")
        end
        f:write(extra or "")
        f:close()
      end
      write_conf()
      H.defer(function ()
        sh("systemctl stop " .. unit)
        os.remove(conf)
        sh("rm -f " .. log .. "*")
      end)
      local function journal () return select(2, sh("journalctl -n 20 -u " .. unit)) end
      local ok, out = sh("systemctl start " .. unit)
      assert(ok, out .. journal())
      ok, out = sh("systemctl is-active " .. unit)
      assert(ok, out)
      -- not as root: the user systemd makes (DynamicUser=)
      local pid = tonumber(systemctl_show("MainPID", unit))
      local status = readfile("/proc/" .. pid .. "/status") or ""
      local uid = status:match("\nUid:%s+(%d+)")
      assert.is_truthy(uid and uid ~= "0", status)
      -- the log is the unit's --log-file, in its LogsDirectory=
      assert(file_matches(log, listening, 5), logtext() .. journal())
      -- reload: the check, then SIGHUP, and systemd hears when it is done
      ok, out = sh("systemctl reload " .. unit)
      assert(ok, out .. journal())
      assert.is_truthy(H.eventually(function ()
        return systemctl_show("StatusText", unit) == "serving (reloaded)"
      end, 5), systemctl_show("StatusText", unit))
      -- a bad line fails the reload at the check; the server is not touched
      write_conf("worker 2\n")
      ok, out = sh("systemctl reload " .. unit)
      assert.is_false(ok, out)
      local said = conf .. ":" .. (#example + 1) .. ": unknown option '--worker'"
      assert.is_truthy(H.eventually(function ()
        return journal():find(said, 1, true)
      end, 5), journal())
      assert.equals(pid, tonumber(systemctl_show("MainPID", unit)))
      write_conf()
      -- logrotate renames the log and SIGUSR1 makes the instance reopen it
      ok, out = sh("logrotate -f -s " .. q(state) .. " /etc/logrotate.d/luasrv")
      assert(ok, out)
      assert.is_true(H.exists(log .. ".1"), out)
      assert(file_matches(log, "SIGUSR1: reopened " .. log:gsub("%p", "%%%0"), 5),
             logtext())
      -- a reinstall is an upgrade: SIGUSR2, a new main pid on the same sockets
      ok, out = sh(APT .. "install --reinstall " .. q(deb))
      assert(ok, out)
      assert.truthy(out:find(unit .. " upgraded: pid ", 1, true), out)
      assert.is_truthy(H.eventually(function ()
        local now = tonumber(systemctl_show("MainPID", unit))
        return now and now ~= 0 and now ~= pid
      end, 10), out)
      ok, out = sh("systemctl is-active " .. unit)
      assert(ok, out .. journal())
    else
      -- no systemd here: what the unit's ExecStart runs, with the
      -- command line's listener in place of the file's
      assert(os.execute("mkdir -p /var/log/luasrv"))
      H.defer(function () sh("rm -f " .. log .. "*") end)
      local bin = T.bin
      T.bin = "/usr/bin/luasrv"
      H.defer(function () T.bin = bin end)
      local srv = H.start{ model = false, config = "/etc/luasrv/example.conf",
                           wait = false,
                           args = { "--tcp", "127.0.0.1:" .. port, "--log-file", log } }
      assert(file_matches(log, listening, 5), logtext() .. srv:stderr())
      -- the snippet would rotate that log, then signal the instances (it
      -- renames the file: no copytruncate); -d does nothing
      local ok, out = sh("logrotate -d -f -s " .. q(state) .. " /etc/logrotate.d/luasrv")
      assert(ok, out)
      assert.truthy(out:find("renaming " .. log .. " to " .. log .. ".1\n", 1, true), out)
      assert.truthy(out:find("running postrotate script", 1, true), out)
      assert.truthy(out:find("systemctl kill --kill-whom=main --signal=USR1 'luasrv@*.service'",
                             1, true), out)
      assert.is_nil(out:find("copying ", 1, true), out)
    end
    local c = assert(socket.connect("127.0.0.1", port))
    c:settimeout(5 * H.scale)
    assert(c:send("from the package\n"))
    assert.equals("from the package", c:receive("*l"))
    c:close()
  end)

  it("lua5.4 and the installed luasrv find the installed modules", function ()
    need("installed")
    -- luasrv.http runs inside luasrv only (it requires the built-in
    -- "luasrv"); lua5.4 finds it, and loads luasrv.test (for busted)
    local ok, out = sh("cd / && env -u LUA_PATH -u LUA_PATH_5_4 -u LUA_INIT " ..
      "lua5.4 -e 'print(package.searchpath(\"luasrv.http\", package.path)) " ..
      "print(require \"luasrv.test\".timeout)'")
    assert(ok, out)
    assert.equals("/usr/share/lua/5.4/luasrv/http.lua\n5\n", out)
    -- the shipped HTTP handler: luasrv.http and cjson, from the packages
    local bin = T.bin
    T.bin = "/usr/bin/luasrv"
    H.defer(function () T.bin = bin end)
    local srv = H.start{ model = false, script = "/usr/share/luasrv/scripts/http.lua" }
    local c = srv:connect()
    assert(c:send("GET /json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    local reply = c:receive("a")
    assert.matches("^HTTP/1%.1 200 ", reply)
    assert.matches('{"message":"hello"}', reply, 1, true)
  end)

  it("apt-get purge removes every file it installed", function ()
    need("installed")
    local _, list = sh("dpkg-query -L luasrv")
    local ok, out = sh(APT .. "purge luasrv")
    assert(ok, out)
    installed = false
    local _, status = sh("dpkg-query -W -f='${Status}' luasrv")
    assert.is_nil(status:find("ok installed", 1, true), status)
    local n = 0
    for _, path in ipairs(lines_of(list)) do
      -- directories the package shares with others stay
      if path:find("luasrv", 1, true) then
        assert.is_false(H.exists(path), path .. " is still there")
        n = n + 1
      end
    end
    assert.is_true(n >= #INSTALLED, list)
    for _, d in ipairs { "/etc/luasrv", "/var/log/luasrv", "/usr/share/luasrv",
                         "/usr/share/doc/luasrv" } do
      assert.is_false(H.exists(d), d .. " is still there")
    end
  end)
end)


-- What the docs show of the package is what it ships (runs anywhere).
describe("the package's docs", function ()
  local function blocks (page, lang)
    local t = {}
    for body in assert(readfile(page)):gmatch("\n```" .. lang .. "\n(.-\n)```") do
      t[#t + 1] = body
    end
    return t
  end

  it("doc/deploy.md shows the template and socket units verbatim", function ()
    local shown = {}
    for _, b in ipairs(blocks("doc/deploy.md", "ini")) do
      local unit = b:match("^# (luasrv@%.%a+) %-%-")
      if unit then shown[unit] = b end
    end
    for _, unit in ipairs { "luasrv@.service", "luasrv@.socket" } do
      assert.equals(readfile("contrib/systemd/" .. unit), shown[unit])
    end
  end)

  it("doc/operations.md shows the settings of example.conf", function ()
    local example = {}
    for _, line in ipairs(lines_of(assert(readfile("contrib/systemd/example.conf")))) do
      if not line:match("^#") then example[#example + 1] = line end
    end
    local found = false
    for _, b in ipairs(blocks("doc/operations.md", "conf")) do
      if b == table.concat(example, "\n") .. "\n" then found = true end
    end
    assert.is_true(found, table.concat(example, "\n"))
  end)
end)


-- make install's units: the package's template and socket units with
-- make install's paths, valid for the systemd here (every directive
-- known, every value parsed, every program there), and what they run
-- works: the installed binary checks the installed example.conf.
describe("make install's systemd units", function ()
  local have = os.execute("command -v systemd-analyze >/dev/null") == true
  local it_ = have and it or pending
  it_("are contrib/systemd's with PREFIX's paths and pass systemd-analyze "
      .. "verify", function ()
    local dir = H.tmpdir()
    -- the default PREFIX (another would rebuild the binary in place)
    local build = T.bin:match("^(.*)/luasrv$") or "build"
    local function make (target)
      return sh("env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s " .. target
                .. " DESTDIR=" .. q(dir) .. " BUILD=" .. q(build))
    end
    local ok, out = make("install")
    assert(ok, out)
    local units = dir .. "/usr/local/lib/systemd/system/"
    local conf = dir .. "/usr/local/etc/luasrv/example.conf"
    local service = assert(readfile(units .. "luasrv@.service"))
    assert.truthy(service:find("\nExecStart=/usr/local/bin/luasrv --config "
      .. "/usr/local/etc/luasrv/%i.conf --log-file /var/log/luasrv/%i.log\n",
      1, true), service)
    assert.equals("script /usr/local/share/luasrv/scripts/echo.lua",
                  assert(readfile(conf)):match("\n(script [^\n]*)"))
    -- nothing else differs from the package's files but the paths
    local function unpath (text)
      return (text:gsub("/usr/local/etc/", "/etc/"):gsub("/usr/local/", "/usr/"))
    end
    for _, f in ipairs { "luasrv@.service", "luasrv@.socket" } do
      assert.equals(assert(readfile("contrib/systemd/" .. f)),
                    unpath(assert(readfile(units .. f))))
    end
    assert.equals(assert(readfile("contrib/systemd/example.conf")),
                  unpath(assert(readfile(conf))))
    -- as if DESTDIR were /: every path the units and example.conf name
    -- is rewritten into it (the man page too, which
    -- Documentation= names: MANPATH finds it)
    local root = dir .. "/verify"
    os.execute("mkdir -p " .. q(root))
    local function relocate (from, to)
      local f = assert(io.open(to, "w"))
      f:write((assert(readfile(from)):gsub("/usr/local/", dir .. "/usr/local/")))
      f:close()
    end
    relocate(units .. "luasrv@.service", root .. "/luasrv@.service")
    relocate(units .. "luasrv@.socket", root .. "/luasrv@.socket")
    relocate(conf, root .. "/example.conf")
    ok, out = sh("MANPATH=" .. q(dir .. "/usr/local/share/man") .. ": "
                 .. "systemd-analyze verify " .. q(root .. "/luasrv@.service")
                 .. " " .. q(root .. "/luasrv@.socket"))
    assert(ok and out == "", out)
    -- its ExecStartPre=: the installed binary takes the installed example
    ok, out = sh(q(dir .. "/usr/local/bin/luasrv") .. " --check --config "
                 .. q(root .. "/example.conf"))
    assert(ok, out)
    assert.equals("luasrv: " .. dir .. "/usr/local/share/luasrv/scripts/"
                  .. "echo.lua: ok\n", out)
    ok, out = make("uninstall")
    assert(ok, out)
    assert.is_false(H.exists(units .. "luasrv@.service"))
    assert.is_false(H.exists(units .. "luasrv@.socket"))
    assert.is_false(H.exists(conf))
  end)
end)
