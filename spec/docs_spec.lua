-- The documentation runs as shown. README.md and doc/*.md mark each
-- fenced block in its info string:
--
--   ```lua quote=scripts/x.lua   the block is that file, verbatim
--   ```lua file=NAME [check]     saved as NAME for the page's transcripts
--                                (check: `luasrv --check` must accept it)
--   ```lua sketch                a fragment: not compiled, not run
--   ```lua                       any other Lua block must compile
--   ```sh run [crlf] [pending]   a transcript: each "$ " line is run (a
--                                trailing \ continues it), the lines
--                                below it are its output
--   ```sh norun                  a command to read, not run here
--   ```log [pending]             right after a transcript: lines its
--                                servers log, in this order, a traceback
--                                shown whole (any client port of
--                                127.0.0.1 matches any other)
--
-- A transcript runs from the repository root with build/luasrv replaced
-- by the binary under test, its ports (127.0.0.1:PORT, and those numbers
-- elsewhere in it) by free ones and /tmp/ by a temporary directory. A
-- command ending in & starts a server: the lines below it are its
-- startup lines (the root warning aside). Other commands' output
-- (stdout and stderr) must equal the lines below them, where "..."
-- matches any text and a JSON line is compared as JSON (any key order;
-- "..." as a value matches any value). crlf drops the \r of CRLF line
-- ends first. Servers stop when their block ends.
local H = require "helper"
local T = H.T
local cjson = require "cjson"

local readfile = H.read_file

local writefile = H.write_file

local pages = { "README.md" }
do
  local p = io.popen("ls doc/*.md")
  for name in p:lines() do pages[#pages + 1] = name end
  p:close()
end


-- {====================================================== parsing

local function parse_attrs (s)
  local a = {}
  for word in s:gmatch("%S+") do
    local k, v = word:match("^([%w_]+)=(.*)$")
    if k then a[k] = v else a[word] = true end
  end
  return a
end

-- The fenced blocks of a page: { lang, attrs, text, line }
local function blocks_of (text)
  local list, cur, n = {}, nil, 0
  for line in (text .. "\n"):gmatch("(.-)\n") do
    n = n + 1
    if cur then
      if line == "```" then
        cur.text = table.concat(cur.lines, "\n") .. (#cur.lines > 0 and "\n" or "")
        list[#list + 1] = cur
        cur = nil
      else
        cur.lines[#cur.lines + 1] = line
      end
    else
      local lang, rest = line:match("^```(%S*)%s*(.-)%s*$")
      if lang then
        cur = { lang = lang, attrs = parse_attrs(rest), lines = {}, line = n }
      end
    end
  end
  assert(cur == nil, "a fenced block is not closed")
  return list
end

-- The steps of a transcript: { cmd, expect = { lines } }
local function steps_of (block)
  local steps, i, lines = {}, 1, block.lines
  while i <= #lines do
    local line = lines[i]
    local cmd = line:match("^%$ (.*)$")
    assert(cmd, ("line %d of the block: %q is not a command"):format(i, line))
    while cmd:match("\\$") and i < #lines do
      i = i + 1
      cmd = cmd:gsub("\\$", "") .. " " .. lines[i]:gsub("^%s+", "")
    end
    local step = { cmd = cmd, expect = {} }
    i = i + 1
    while i <= #lines and not lines[i]:match("^%$ ") do
      step.expect[#step.expect + 1] = lines[i]
      i = i + 1
    end
    steps[#steps + 1] = step
  end
  return steps
end

-- }======================================================


-- {====================================================== comparing

local function ellipsis_match (expect, actual)
  if not expect:find("...", 1, true) then return expect == actual end
  local parts = {}
  for piece in (expect .. "..."):gmatch("(.-)%.%.%.") do
    parts[#parts + 1] = piece:gsub("%W", "%%%0")
  end
  return actual:match("^" .. table.concat(parts, ".-") .. "$") ~= nil
end

local function json_equal (e, a)
  if e == "..." then return true end
  if type(e) ~= type(a) then return false end
  if type(e) ~= "table" then return e == a end
  for k, v in pairs(e) do
    if not json_equal(v, a[k]) then return false end
  end
  for k in pairs(a) do
    if e[k] == nil then return false end
  end
  return true
end

local function line_matches (expect, actual)
  if expect == actual or ellipsis_match(expect, actual) then return true end
  if expect:match("^[%[{]") then
    local ok1, e = pcall(cjson.decode, expect)
    local ok2, a = pcall(cjson.decode, actual)
    return ok1 and ok2 and json_equal(e, a)
  end
  return false
end

local function split_lines (s)
  local t = {}
  if s == "" then return t end
  if s:sub(-1) ~= "\n" then s = s .. "\n" end
  for line in s:gmatch("(.-)\n") do t[#t + 1] = line end
  return t
end

-- asserts that output (a string) shows as the expected lines
local function assert_shows (expect, output, what)
  local got = split_lines(output)
  local ok = #got == #expect
  for i = 1, math.max(#got, #expect) do
    if not (expect[i] and got[i] and line_matches(expect[i], got[i])) then
      ok = false
    end
  end
  assert(ok, ("%s\nexpected:\n%s\ngot:\n%s"):format(what,
    table.concat(expect, "\n"), output))
end

-- }======================================================


-- {====================================================== running

local TOOLS = { "socat", "curl", "redis-cli", "logger", "busted", "od" }

local function have (tool)
  return os.execute("command -v " .. tool .. " >/dev/null 2>&1") == true
end

local function missing_tool (text)
  for _, tool in ipairs(TOOLS) do
    if text:find("%f[%w-]" .. tool:gsub("%-", "%%-") .. "%f[^%w-]") and
       not have(tool) then
      return tool
    end
  end
end

local quote = H.quote

-- what a transcript's text becomes here: free ports, a temporary /tmp,
-- the binary under test, the page's files
local function localizer (block, dir, files)
  local ports, text = {}, block.text
  for name, f in pairs(files) do
    if text:find(name, 1, true) then text = text .. f.text end
  end
  for port in text:gmatch("127%.0%.0%.1:(%d+)") do
    if port ~= "0" and not ports[port] then ports[port] = tostring(H.free_port()) end
  end
  return function (s)
    s = s:gsub("%f[%d](%d+)%f[%D]", function (n) return ports[n] end)
    s = s:gsub("/tmp/", dir .. "/")
    s = s:gsub("%f[%w/]build/luasrv%f[^%w/]", T.bin)
    for name in pairs(files) do
      s = s:gsub("%f[%w_./-]" .. name:gsub("%p", "%%%0") .. "%f[^%w_./-]",
                 dir .. "/" .. name)
    end
    return s
  end
end

-- "A=1 B=2 prog arg ..." (no quoting): env, argv
local function split_command (cmd)
  local env, argv = {}, {}
  for word in cmd:gmatch("%S+") do
    local k, v = word:match("^([%u_][%u%d_]*)=(.*)$")
    if k and #argv == 0 then env[k] = v else argv[#argv + 1] = word end
  end
  return env, argv
end

local function startup_lines (srv)
  local t = {}
  for _, line in ipairs(split_lines(srv:stderr())) do
    if not line:find("handlers run as root", 1, true) then t[#t + 1] = line end
  end
  return table.concat(t, "\n")
end

local function run_server (step, cmd, servers)
  local env, argv = split_command(cmd:gsub("%s*&$", ""))
  assert(argv[1] == T.bin, "a server line starts with build/luasrv: " .. cmd)
  local args, srv = {}, nil
  if argv[2] == "--config" then  -- build/luasrv --config FILE [OPTIONS]
    for i = 4, #argv do args[#args + 1] = argv[i] end
    srv = T.start{ config = argv[3], args = args, env = env }
  else
    for i = 3, #argv do args[#args + 1] = argv[i] end
    srv = T.start{ script = argv[2], args = args, env = env }
  end
  H.defer(function () srv:stop() end)
  servers[#servers + 1] = srv
  return srv
end

-- true if the lines of expect appear one after the other in text
local function logged (expect, text)
  local function norm (l) return (l:gsub("127%.0%.0%.1:%d+", "127.0.0.1:PORT")) end
  local got = split_lines(text)
  for start = 1, #got - #expect + 1 do
    local ok = true
    for i, e in ipairs(expect) do
      if not line_matches(norm(e), norm(got[start + i - 1])) then ok = false; break end
    end
    local after = got[start + #expect]
    if ok and not (after and after:match("^\t")) then return true end
  end
  return false
end

local function run_block (block, files, dir)
  local here = localizer(block, dir, files)
  local servers = {}
  for name, f in pairs(files) do  -- the page's files, with this block's ports
    writefile(dir .. "/" .. name, (here(f.text)))
  end
  for _, step in ipairs(steps_of(block)) do
    local cmd = here(step.cmd)
    local expect = {}
    for i, e in ipairs(step.expect) do expect[i] = here(e) end
    if cmd:match("&$") then
      local srv = run_server(step, cmd, servers)
      assert_shows(expect, startup_lines(srv), "$ " .. step.cmd)
    else
      local p = io.popen("timeout 30 bash -c " .. quote(cmd) .. " </dev/null 2>&1")
      local out = p:read("a")
      p:close()
      if block.attrs.crlf then out = out:gsub("\r\n", "\n") end
      assert_shows(expect, out, "$ " .. step.cmd)
    end
  end
  if block.log and not block.log.attrs.pending then
    local function all () local t = {}
      for _, srv in ipairs(servers) do t[#t + 1] = srv:stderr() end
      return table.concat(t)
    end
    local expect = {}
    for i, e in ipairs(block.log.lines) do expect[i] = here(e) end
    local ok = H.eventually(function () return logged(expect, all()) end, 5)
    assert(ok, ("the servers did not log:\n%s\nthey logged:\n%s"):format(
      table.concat(expect, "\n"), all()))
  end
end

-- }======================================================


for _, page in ipairs(pages) do
  local blocks = blocks_of(readfile(page))
  for i, b in ipairs(blocks) do  -- a log block belongs to the transcript before it
    if b.lang == "log" then
      assert(blocks[i - 1] and blocks[i - 1].attrs.run,
             page .. ":" .. b.line .. ": a log block follows a transcript")
      blocks[i - 1].log = b
    end
  end

  describe(page, function ()
    local files, dir = {}, nil
    setup(function ()
      dir = T.tmpdir()
      for _, b in ipairs(blocks) do
        if b.attrs.file then
          files[b.attrs.file] = { text = b.text, path = dir .. "/" .. b.attrs.file }
          writefile(files[b.attrs.file].path, b.text)
        end
      end
    end)
    teardown(function () T.rmrf(dir) end)

    for _, b in ipairs(blocks) do
      local where = ("%s:%d"):format(page, b.line)
      if b.lang == "lua" and b.attrs.quote then
        it(where .. " quotes " .. b.attrs.quote .. " verbatim", function ()
          assert.equals(readfile(b.attrs.quote), b.text)
        end)
      elseif b.lang == "lua" and not b.attrs.sketch then
        it(where .. " is Lua that compiles", function ()
          assert(load(b.text, "=" .. where))
        end)
      end
      if b.attrs.check then
        it(where .. " passes luasrv --check", function ()
          local code, _, err = T.run{ "--check", files[b.attrs.file].path }
          assert.equals(0, code, err)
        end)
      end
      if b.lang == "sh" and not (b.attrs.run or b.attrs.norun) then
        it(where .. " says whether it runs", function ()
          error("label the block `sh run` (a transcript) or `sh norun`")
        end)
      end
      if b.lang == "sh" and b.attrs.run then
        local tool = missing_tool(b.text)
        if b.log and b.log.attrs.pending then
          pending(("%s:%d logs as shown (pending)"):format(page, b.log.line))
        end
        if b.attrs.pending or tool then
          pending(where .. " runs as shown (" ..
            (tool and tool .. " is not installed" or "pending") .. ")")
        else
          it(where .. " runs as shown", function ()
            run_block(b, files, T.tmpdir())
          end)
        end
      end
    end

    -- every saved file is used by a transcript or checked
    for _, b in ipairs(blocks) do
      if b.attrs.file and not b.attrs.check then
        it(("%s:%d: %s is run"):format(page, b.line, b.attrs.file), function ()
          local used = false
          for _, r in ipairs(blocks) do
            if r.attrs.run and r.text:find(b.attrs.file, 1, true) then used = true end
          end
          assert(used, b.attrs.file .. " is saved but no transcript runs it")
        end)
      end
    end
  end)
end


-- {====================================================== links

-- GitHub's anchors: lower case, punctuation dropped, spaces as hyphens
local function anchors_of (text)
  local set, seen = {}, {}
  local fenced = false
  for line in (text .. "\n"):gmatch("(.-)\n") do
    if line:match("^```") then fenced = not fenced end
    local h = not fenced and line:match("^#+%s+(.-)%s*$")
    if h then
      local a = h:lower():gsub("[^%w%s_-]", ""):gsub("%s", "-")
      if seen[a] then
        seen[a] = seen[a] + 1
        a = a .. "-" .. seen[a]
      else
        seen[a] = 0
      end
      set[a] = true
    end
  end
  return set
end

describe("the docs", function ()
  for _, page in ipairs(pages) do
    it(page .. ": every link inside the repository leads somewhere", function ()
      local text = readfile(page)
      local base = page:match("^(.*/)") or ""
      for target in text:gmatch("%]%(([^)%s]+)%)") do
        if not target:match("^%a+://") then
          local path, anchor = target:match("^([^#]*)#?(.*)$")
          local file = path == "" and page or base .. path
          file = file:gsub("[^/]+/%.%./", "")
          assert(not file:match("^%.%./"), page .. ": " .. target ..
                 " points outside the repository")
          assert(H.exists(file), page .. ": no file " .. file)
          if anchor ~= "" then
            assert(anchors_of(readfile(file))[anchor],
                   page .. ": no heading #" .. anchor .. " in " .. file)
          end
        end
      end
    end)
  end

  it("README is short and reaches the read formats and timeouts in one click",
     function ()
    local readme = readfile("README.md")
    local n = select(2, readme:gsub("\n", ""))
    assert(n <= 210, "README.md has " .. n .. " lines")
    assert.truthy(readme:find("(doc/handlers.md#reading)", 1, true))
    assert.truthy(readme:find("(doc/handlers.md#timeouts)", 1, true))
  end)
end)

-- }======================================================
