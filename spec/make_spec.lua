-- The Makefile's dependency lists: make run installs what building and
-- running need, and nothing that starts a service (redis-server, haproxy
-- take ports the examples may use); make test installs the test tools.
local H = require "helper"

-- the packages the target's tools/install-deps line names (make -n: shown,
-- not run)
local function installs (target)
  local build = H.T.bin:match("^(.*)/luasrv$") or "build"
  local p = io.popen(("make -n -s %s BUILD='%s' 2>&1"):format(target, build))
  local out = p:read("a")
  p:close()
  local line = out:match("tools/install%-deps ([^\n]*)")
  assert(line, "no install-deps line in make -n " .. target .. ":\n" .. out)
  local set = {}
  for pkg in line:gmatch("%S+") do set[pkg] = true end
  return set
end

describe("make run", function ()
  it("installs the build and run dependencies only", function ()
    local pkgs = installs("run")
    for _, p in ipairs{ "gcc", "make", "pkg-config", "liblua5.4-dev",
                        "lua-cjson" } do
      assert.is_true(pkgs[p], p)
    end
    for _, p in ipairs{ "redis-server", "haproxy", "nginx", "lua-busted",
                        "wrk" } do
      assert.is_nil(pkgs[p], p)
    end
  end)
end)

describe("make test", function ()
  it("installs the test tools as well", function ()
    local pkgs = installs("test")
    for _, p in ipairs{ "liblua5.4-dev", "lua-cjson", "lua-busted",
                        "redis-server", "haproxy" } do
      assert.is_true(pkgs[p], p)
    end
  end)
end)
