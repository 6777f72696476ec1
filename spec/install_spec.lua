-- make install / make uninstall into a DESTDIR: the binary, the Lua
-- modules where lua5.4 looks, the shipped scripts, the man page and the
-- documentation where the man page says it is.
local H = require "helper"
local T = H.T

describe("make install", function ()
  it("installs into DESTDIR and uninstall removes it all", function ()
    local dir = H.tmpdir()
    local build = T.bin:match("^(.*)/luasrv$") or "build"
    local function make (target)
      local p = io.popen(("make -s %s DESTDIR='%s' BUILD='%s' 2>&1"):format(
        target, dir, build))
      local out = p:read("a")
      return p:close(), out
    end
    local ok, out = make("install")
    assert.is_true(ok, out)
    local root = dir .. "/usr/local"
    for _, f in ipairs { "/bin/luasrv", "/share/lua/5.4/luasrv/test.lua",
                         "/share/luasrv/scripts/echo.lua",
                         "/share/man/man1/luasrv.1",
                         "/share/doc/luasrv/README.md",
                         "/share/doc/luasrv/doc/reference.md",
                         "/share/doc/luasrv/bench/README.md" } do
      assert.is_true(H.exists(root .. f), f)
    end
    local p = io.popen("'" .. root .. "/bin/luasrv' --version")
    assert.matches("^luasrv %d", p:read("l"))
    p:close()
    -- the man page is well-formed roff: every option of --help is in it
    local f = assert(io.open(root .. "/share/man/man1/luasrv.1"))
    local man = f:read("a")
    f:close()
    p = io.popen("'" .. root .. "/bin/luasrv' --help")
    for opt in p:read("a"):gmatch("%-%-([%w-]+)") do
      assert.truthy(man:find("\\-\\-" .. (opt:gsub("%-", "\\-")), 1, true),
                    "man page lacks --" .. opt)
    end
    p:close()
    -- every page of doc/ is installed, and SEE ALSO points at them
    p = io.popen("ls doc/*.md")
    for page in p:lines() do
      assert.is_true(H.exists(root .. "/share/doc/luasrv/" .. page), page)
    end
    p:close()
    local see_also = man:match("%.SH SEE ALSO\n(.*)$")
    for path in see_also:gmatch("/usr/local(/[%w/._-]+)") do
      assert.is_true(H.exists(root .. path), "SEE ALSO names " .. path)
    end
    assert.truthy(see_also:find("/usr/local/share/doc/luasrv/README.md", 1, true))
    ok, out = make("uninstall")
    assert.is_true(ok, out)
    assert.is_false(H.exists(root .. "/bin/luasrv"))
    assert.is_false(H.exists(root .. "/share/lua/5.4/luasrv"))
    assert.is_false(H.exists(root .. "/share/doc/luasrv"))
  end)
end)
