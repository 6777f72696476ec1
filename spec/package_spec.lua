-- The Debian package: `make deb` builds it (debhelper; lintian finds no
-- error), apt-get installs it, the installed server serves with the
-- installed example configuration (through systemd where systemd runs
-- the machine), lua5.4 finds the installed modules, and purging it
-- leaves nothing behind. Runs once per test run, whatever the models,
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

local function q (s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function readfile (path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function lines_of (s)
  local t = {}
  for line in s:gmatch("[^\n]+") do t[#t + 1] = line end
  return t
end

-- KEY=VALUE lines as systemd's EnvironmentFile= reads them: # comments,
-- a value in double quotes taken as it is
local function envfile (text)
  local env = {}
  for _, line in ipairs(lines_of(text)) do
    local k, v = line:match("^%s*([%a_][%w_]*)=(.*)$")
    if k then env[k] = v:match('^"(.*)"$') or v end
  end
  return env
end

local function words (s)
  local t = {}
  for w in (s or ""):gmatch("%S+") do t[#t + 1] = w end
  return t
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
    if os.execute("command -v logrotate >/dev/null") then
      ok, out = sh("logrotate -d /etc/logrotate.d/luasrv")
      assert(ok, out)
    end
  end)

  it("serves with the installed example configuration", function ()
    need("installed")
    local conf = envfile(assert(readfile("/etc/luasrv/example.conf")))
    assert.equals("/usr/share/luasrv/scripts/echo.lua", conf.LUASRV_SCRIPT)
    -- the example's port, swapped for a free one (tests run side by side)
    local opts, port = conf.LUASRV_OPTS:gsub("127%.0%.0%.1:%d+",
                                             "127.0.0.1:" .. H.free_port())
    assert.equals(1, port, "the example listens on 127.0.0.1:PORT")
    port = tonumber(opts:match("127%.0%.0%.1:(%d+)"))
    if H.exists("/run/systemd/system") then
      -- an instance of the template unit: luasrv@NAME reads NAME.conf
      local name = "pkgspec" .. port
      local f = assert(io.open("/etc/luasrv/" .. name .. ".conf", "w"))
      f:write("LUASRV_SCRIPT=", conf.LUASRV_SCRIPT, '\nLUASRV_OPTS="', opts, '"\n')
      f:close()
      H.defer(function ()
        sh("systemctl stop luasrv@" .. name)
        os.remove("/etc/luasrv/" .. name .. ".conf")
      end)
      local ok, out = sh("systemctl start luasrv@" .. name)
      assert(ok, out .. select(2, sh("journalctl -n 20 -u luasrv@" .. name)))
      ok, out = sh("systemctl is-active luasrv@" .. name)
      assert(ok, out)
      -- not as root: the user systemd makes (DynamicUser=)
      local _, pid = sh("systemctl show -p MainPID --value luasrv@" .. name)
      local status = readfile("/proc/" .. tonumber(pid) .. "/status") or ""
      local uid = status:match("\nUid:%s+(%d+)")
      assert.is_truthy(uid and uid ~= "0", status)
      -- reload is SIGHUP, and systemd hears when it is done
      ok, out = sh("systemctl reload luasrv@" .. name)
      assert(ok, out)
      assert.is_truthy(H.eventually(function ()
        return select(2, sh("systemctl show -p StatusText --value luasrv@" ..
                            name)) == "serving (reloaded)\n"
      end, 5))
    else
      -- no systemd here: what the unit's ExecStart runs
      local bin = T.bin
      T.bin = "/usr/bin/luasrv"
      H.defer(function () T.bin = bin end)
      H.start{ model = false, script = conf.LUASRV_SCRIPT, args = words(opts) }
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
    for _, b in ipairs(blocks("doc/operations.md", "ini")) do
      if b == table.concat(example, "\n") .. "\n" then found = true end
    end
    assert.is_true(found, table.concat(example, "\n"))
  end)
end)


-- The sample units for a make install (/usr/local) are valid for the
-- systemd here: every directive known, every value parsed.
describe("contrib/systemd", function ()
  local have = os.execute("command -v systemd-analyze >/dev/null") == true
  local it_ = have and it or pending
  it_("the sample units pass systemd-analyze verify", function ()
    local dir = T.tmpdir()
    H.defer(function () T.rmrf(dir) end)
    local bin = T.bin:match("^/") and T.bin or os.getenv("PWD") .. "/" .. T.bin
    for _, unit in ipairs { "luasrv.service", "luasrv.socket" } do
      local text = assert(readfile("contrib/systemd/" .. unit))
      local f = assert(io.open(dir .. "/" .. unit, "w"))
      f:write((text:gsub("/usr/local/bin/luasrv", bin)))
      f:close()
    end
    local ok, out = sh("systemd-analyze verify " .. q(dir .. "/luasrv.service")
                       .. " " .. q(dir .. "/luasrv.socket"))
    assert(ok and out == "", out)
  end)
end)
