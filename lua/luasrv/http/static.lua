--[==[ luasrv.http.static -- files under a directory, as HTTP answers:
http.static(root [, opts]) is a route handler.

  local app = http.router()
  app:get("/static/*path", http.static("/srv/www"))   -- r.params.path
  app:get("/*path", http.static("/srv/www", { index = "index.html" }))

The file is the route's "*path" capture (decoded), or r.path without a
"*path". Content-Type from /etc/mime.types (Debian's media-types) by
extension; ETag ("mtime-size" in hex, as nginx's) and Last-Modified, with
If-None-Match and If-Modified-Since answered 304; one range of Range
answered 206 (416 when it is past the end; several ranges: the whole
file, 200), with If-Range; HEAD without reading the file.

Refused: a ".." segment and NUL (400), whatever their encoding (the path
is checked after decoding); a path that leads out of root through a
symlink (404, as if it were not there: the symlinks are resolved one by
one with lfs, Debian's lua-filesystem, and the result must still be under
root's own resolved path); anything but a regular file (404), and a
directory: its index file (opts.index), a listing (opts.listing = true),
or 403. A directory asked for without its final "/" is redirected (301).

Options: index (a file name, or nil), listing (false), mime_types (a
path: /etc/mime.types), default_type ("application/octet-stream"),
cache_control (a Cache-Control value, or nil).

A file is opened once, with no symlink allowed in its resolved path
(luasrv.openfile), and its attributes are those of the open file. Its
bytes go out with req:sendfile: sendfile(2) on a plain connection, a
bounded chunk at a time through the output buffer over TLS; never as a
Lua string, whatever the file's size.
]==]

local lfs_ok, lfs = pcall(require, "lfs")
local luasrv = require "luasrv"
local http = require "luasrv.http"

local NOFOLLOW = { symlinks = false }

local byte, find, format, gsub, lower, match, sub = string.byte,
  string.find, string.format, string.gsub, string.lower, string.match,
  string.sub
local concat = table.concat

local M = {}

local TEXT = { ["Content-Type"] = "text/plain; charset=utf-8" }

--[[ Media types ]]

local types_by_file = {}

-- extension (lower case) -> media type, from a mime.types file (read once
-- per path); an empty table when there is none
function M.mime_types (path)
  local t = types_by_file[path]
  if t then return t end
  t = {}
  local f = io.open(path, "r")
  if f then
    for line in f:lines() do
      local mtype, exts = match(line, "^([^#%s]+)%s+([^#]+)")
      if mtype then
        for ext in exts:gmatch("%S+") do
          if not t[lower(ext)] then t[lower(ext)] = mtype end
        end
      end
    end
    f:close()
  end
  types_by_file[path] = t
  return t
end

--[[ Dates: HTTP's IMF-fixdate, both ways, in UTC ]]

local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6,
  Jul = 7, Aug = 8, Sep = 9, Oct = 10, Nov = 11, Dec = 12 }

M.http_date = http.http_date  -- one formatter: the Date header's

-- days since 1970-01-01 of a civil date (Howard Hinnant's algorithm)
local function days_from_civil (y, m, d)
  if m <= 2 then y = y - 1 end
  local era = y // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

-- "Sun, 06 Nov 1994 08:49:37 GMT" -> seconds since the epoch; nil for
-- another form
function M.parse_http_date (s)
  local d, mon, y, h, mi, sec = match(s or "",
    "^%a%a%a, (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  local m = MONTHS[mon]
  if not m then return nil end
  return days_from_civil(tonumber(y), m, tonumber(d)) * 86400 +
    tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(sec)
end

--[[ Paths ]]

-- The segments of a decoded path, without the empty and "." ones; nil
-- for a ".." segment or a NUL anywhere.
function M.segments (path)
  if find(path, "\0", 1, true) then return nil end
  local list = {}
  for seg in path:gmatch("[^/]+") do
    if seg == ".." then return nil end
    if seg ~= "." then list[#list + 1] = seg end
  end
  return list
end

-- The path reached from the absolute directory dir by segs, with every
-- symlink on the way resolved (at most 40, as the kernel's limit): a
-- path without links, whose last part may not exist; nil and a message
-- for a loop of links.
function M.resolve (dir, segs)
  local parts = {}
  for seg in dir:gmatch("[^/]+") do parts[#parts + 1] = seg end
  local todo = {}
  for i = #segs, 1, -1 do todo[#todo + 1] = segs[i] end   -- a stack
  local links = 0
  while #todo > 0 do
    local seg = table.remove(todo)
    if seg == ".." then
      if #parts > 0 then parts[#parts] = nil end
    elseif seg ~= "." and seg ~= "" then
      parts[#parts + 1] = seg
      local p = "/" .. concat(parts, "/")
      local mode = lfs.symlinkattributes(p, "mode")
      if mode == "link" then
        links = links + 1
        if links > 40 then return nil, "too many levels of symbolic links" end
        local target = lfs.symlinkattributes(p, "target")
        parts[#parts] = nil
        if not target then return nil, "unreadable link" end
        if byte(target) == 47 then parts = {} end          -- absolute
        local tsegs = {}
        for s in target:gmatch("[^/]+") do tsegs[#tsegs + 1] = s end
        for i = #tsegs, 1, -1 do todo[#todo + 1] = tsegs[i] end
      elseif mode == nil then
        -- not there: nothing under it is either (a ".." after it, from a
        -- link, would not be resolved by the system either)
        for i = #todo, 1, -1 do
          if todo[i] == ".." then return nil, "no such file" end
          parts[#parts + 1] = todo[i]
        end
        todo = {}
      end
    end
  end
  return "/" .. concat(parts, "/")
end

-- is path root, or under it?
local function inside (root, path)
  if root == "/" then return true end
  return path == root or sub(path, 1, #root + 1) == root .. "/"
end

--[[ Answers ]]

local function html_escape (s)
  return (gsub(s, "[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;",
    [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }))
end

-- a directory's listing, as HTML
local function listing (r, dir, http)
  local names = {}
  for name in lfs.dir(dir) do
    if name ~= "." and name ~= ".." then
      local mode = lfs.attributes(dir .. "/" .. name, "mode")
      names[#names + 1] = mode == "directory" and name .. "/" or name
    end
    if #names >= 10000 then break end            -- bounded
  end
  table.sort(names)
  local title = html_escape(http.unescape(r.path))
  local t = { "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">",
    "<title>Index of ", title, "</title></head><body><h1>Index of ",
    title, "</h1><ul>\n" }
  for _, name in ipairs(names) do
    t[#t + 1] = format("<li><a href=\"%s\">%s</a></li>\n",
      html_escape((gsub(http.escape(name), "%%2F$", "/"))), html_escape(name))
  end
  t[#t + 1] = "</ul></body></html>\n"
  return 200, { ["Content-Type"] = "text/html; charset=utf-8" }, concat(t)
end

-- The range of a Range header over a file of size bytes: first, last
-- (0-based, inclusive); false for one past the end (416); nil for none
-- or one to ignore (not bytes, several ranges, malformed).
function M.parse_range (h, size)
  if not h then return nil end
  local a, b = match(h, "^%s*bytes%s*=%s*(%d*)%s*%-%s*(%d*)%s*$")
  if not a or (a == "" and b == "") then return nil end
  if #a > 15 or #b > 15 then return nil end
  local first, last
  if a == "" then                         -- the last b bytes
    local n = tonumber(b)
    if n == 0 then return false end
    first, last = math.max(size - n, 0), size - 1
  else
    first = tonumber(a)
    last = b == "" and size - 1 or math.min(tonumber(b), size - 1)
    if b ~= "" and tonumber(b) < first then return nil end
  end
  if first >= size then return false end
  return first, last
end

-- does If-None-Match's list hold etag (or "*")? Weak comparison.
local function etag_matches (list, etag)
  for tag in list:gmatch("[^,]+") do
    tag = match(tag, "^%s*(.-)%s*$")
    if tag == "*" or tag == etag or tag == "W/" .. etag then return true end
  end
  return false
end

-- The file at path (a resolved path, with no symlink in it), open, and
-- its attributes; nil when it is not there or not a regular file now.
-- Opened once: what the answer says (size, ETag) is what is sent, even
-- when the name is given to another file meanwhile, and a link put in
-- the path since it was resolved is refused, not followed.
local function open (path)
  local f = luasrv.openfile(path, NOFOLLOW)
  if not f then return nil end
  local attr = f:stat()
  if not (attr and attr.mode == "file") then
    f:close()
    return nil
  end
  return f, attr
end

-- M.http_date(mtime), remembered: most answers are of a few files
local dates, ndates = {}, 0
local function last_modified (mtime)
  local d = dates[mtime]
  if d then return d end
  if ndates >= 256 then dates, ndates = {}, 0 end   -- bounded
  d = M.http_date(mtime)
  dates[mtime], ndates = d, ndates + 1
  return d
end

-- Sends the file f (attributes attr) at path as the answer to r: a
-- 304, a 416, HEAD, or its bytes (all, or a range) with req:sendfile,
-- from the file to the socket without passing through Lua.
local function send_file (r, o, path, f, attr)
  local size, mtime = attr.size, attr.modification
  local etag = format("\"%x-%x\"", mtime, size)
  local headers = {
    ["Content-Type"] = o.types[lower(match(path, "%.([^./]+)$") or "")]
      or o.default_type,
    ["Last-Modified"] = last_modified(mtime), ETag = etag,
    ["Accept-Ranges"] = "bytes", ["Cache-Control"] = o.cache_control,
  }
  local h = r.headers
  local inm = h["if-none-match"]
  if inm then
    if etag_matches(inm, etag) then return 304, headers end
  else
    local ims = M.parse_http_date(h["if-modified-since"])
    if ims and mtime <= ims then return 304, headers end
  end
  local status, first, last = 200, 0, size - 1
  local range = h.range
  local if_range = h["if-range"]
  if range and if_range and if_range ~= etag and
      M.parse_http_date(if_range) ~= mtime then
    range = nil                      -- changed since: the whole file
  end
  if range then
    local a, b = M.parse_range(range, size)
    if a == false then
      headers["Content-Range"] = "bytes */" .. size
      headers["Content-Type"] = TEXT["Content-Type"]
      return 416, headers, "Range Not Satisfiable\n"
    elseif a then
      status, first, last = 206, a, b
      headers["Content-Range"] = format("bytes %d-%d/%d", a, b, size)
    end
  end
  local length = last - first + 1
  headers["Content-Length"] = length
  r:start(status, headers)
  if r.method == "HEAD" or length == 0 then return end
  local ok, err = r.req:sendfile(f, first, length)
  if ok then return end
  -- cut in the middle: the client has part of the body, and the
  -- connection cannot carry another answer
  r.req:close()
  if err == "file truncated" then
    error("file shrank while being sent: " .. path, 0)
  end
end

-- The route handler serving the files under root.
function M.new (root, opts, http)
  if not lfs_ok then
    error("http.static needs lfs (Debian package lua-filesystem)", 2)
  end
  opts = opts or {}
  local abs = root
  if byte(root) ~= 47 then abs = lfs.currentdir() .. "/" .. root end
  local segs = {}
  for seg in abs:gmatch("[^/]+") do segs[#segs + 1] = seg end
  local real = M.resolve("/", segs)
  if lfs.attributes(real, "mode") ~= "directory" then
    error("http.static: not a directory: " .. tostring(root), 2)
  end
  local base = real == "/" and "/" or real .. "/"
  local o = { index = opts.index, listing = opts.listing,
    default_type = opts.default_type or "application/octet-stream",
    types = M.mime_types(opts.mime_types or "/etc/mime.types"),
    cache_control = opts.cache_control }
  return function (r)
    if r.method ~= "GET" and r.method ~= "HEAD" then
      return 405, { ["Content-Type"] = TEXT["Content-Type"],
        Allow = "GET, HEAD" }, "Method Not Allowed\n"
    end
    local wanted = r.params.path or http.unescape(r.path)
    local segs = M.segments(wanted)
    if not segs then return 400, TEXT, "Bad Request\n" end
    -- the usual case first: a file reached with no symlink at all (the
    -- open refuses one anywhere), so under root without resolving
    if #segs > 0 then
      local path = base .. concat(segs, "/")
      local f, attr = open(path)
      if f then
        local _ <close> = f
        return send_file(r, o, path, f, attr)
      end
    end
    local path = M.resolve(real, segs)
    if not path or not inside(real, path) then
      return 404, TEXT, "Not Found\n"
    end
    local attr = lfs.attributes(path)
    if attr and attr.mode == "directory" then
      if byte(r.path, -1) ~= 47 then
        return 301, { Location = r.path .. "/" .. (r.query and "?" ..
          r.query or ""), ["Content-Type"] = TEXT["Content-Type"] },
          "Moved Permanently\n"
      end
      local dir = path
      if o.index then
        path = M.resolve(dir, { o.index })
        attr = path and inside(real, path) and lfs.attributes(path)
      else
        attr = nil
      end
      if not (attr and attr.mode == "file") then
        if o.listing then return listing(r, dir, http) end
        return 403, TEXT, "Forbidden\n"
      end
    end
    local f
    if attr and attr.mode == "file" then f, attr = open(path) end
    if not f then return 404, TEXT, "Not Found\n" end
    local _ <close> = f              -- closed however the answer ends
    return send_file(r, o, path, f, attr)
  end
end

return M
