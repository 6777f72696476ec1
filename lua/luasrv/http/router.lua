--[==[ luasrv.http.router -- the router of luasrv.http: routes by method
and path, ":name" and "*name" captures, 404 and 405 with Allow.

  local http = require "luasrv.http"
  local app = http.router()          -- the same as require("luasrv.http.router").new()
  app:get("/items/:id", function (r) return http.json{ id = r.params.id } end)
  return app:handler()

Exact paths are one table lookup; patterns are tried in the order they
were added. HEAD runs the GET route. It knows nothing of the protocol:
dispatch(r) is a handler like any other, and handler() hands it to
luasrv.http.
]==]

local http = require "luasrv.http"

local find, gsub, match = string.find, string.gsub, string.match
local concat = table.concat

local M = {}

local Router = {}
Router.__index = Router

local TEXT = { ["Content-Type"] = "text/plain; charset=utf-8" }

-- "/items/:id/*rest" -> "^/items/([^/]+)/(.*)$", { "id", "rest" }
local function compile (path)
  local names = {}
  local pattern = gsub(path, "([^/]+)", function (seg)
    local kind, name = match(seg, "^([:*])([%w_]+)$")
    if kind then
      names[#names + 1] = name
      return kind == ":" and "([^/]+)" or "(.*)"
    end
    return (gsub(seg, "[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
  end)
  return "^" .. pattern .. "$", names
end

-- A new router; opts are handler()'s default luasrv.http options.
function M.new (opts)
  return setmetatable({ exact = {}, exact_opts = {}, patterns = {},
    opts = opts }, Router)
end

-- Adds a route: method ("GET", ...; "*" for any) and a path, where
-- ":name" matches one segment and "*name" the rest of the path. ropts:
-- the route's options: stream_body = true (the handler reads the body
-- with r:body_reader()), max_body and body_timeout (over the server's).
function Router:route (method, path, fn, ropts)
  assert(type(fn) == "function", "route: a function is expected")
  if ropts and ropts.stream_body then self.streams = true end
  if find(path, "[:*]") then
    local pattern, names = compile(path)
    self.patterns[#self.patterns + 1] = { method = method, path = path,
      pattern = pattern, names = names, fn = fn, opts = ropts }
  else
    local byMethod = self.exact[path] or {}
    byMethod[method] = fn
    self.exact[path] = byMethod
    if ropts then
      local o = self.exact_opts[path] or {}
      o[method] = ropts
      self.exact_opts[path] = o
    end
  end
  return self
end

for _, m in ipairs{ "get", "post", "put", "delete", "patch", "options" } do
  local method = m:upper()
  Router[m] = function (self, path, fn, ropts)
    return self:route(method, path, fn, ropts)
  end
end

function Router:any (path, fn, ropts)
  return self:route("*", path, fn, ropts)
end

-- The options of the route r would run (nil for none): r's method, then
-- "*", among the exact paths, then the patterns in order.
function Router:route_opts (r)
  local method, path = r.method, r.path
  local byMethod = self.exact[path]
  if byMethod then
    if byMethod[method] or byMethod["*"] then
      local o = self.exact_opts[path]
      return o and (o[method] or (not byMethod[method] and o["*"])) or nil
    end
  end
  for _, route in ipairs(self.patterns) do
    local m = route.method
    if (m == method or m == "*") and find(path, route.pattern) then
      return route.opts
    end
  end
  return nil
end

-- the function for a method among those of a path; HEAD falls back to GET
local function pick (byMethod, method)
  return byMethod[method] or (method == "HEAD" and byMethod.GET)
    or byMethod["*"]
end

-- The allowed methods of a path, for 405's Allow header
local function allowed (methods)
  local list = {}
  for m in pairs(methods) do list[#list + 1] = m end
  if methods.GET and not methods.HEAD then list[#list + 1] = "HEAD" end
  table.sort(list)
  return concat(list, ", ")
end

-- The function of the first pattern route for path and method (r's),
-- its captures set in r.params; or nil and methods, where the methods
-- whose pattern matches the path are collected (methods is made on the
-- first need). A route with one capture (the usual "/items/:id") is
-- matched without a table of captures.
local function find_pattern (self, r, path, method, methods)
  local patterns = self.patterns
  for i = 1, #patterns do
    local route = patterns[i]
    local m = route.method
    if m == method or m == "*" or (method == "HEAD" and m == "GET") then
      local names = route.names
      if #names == 1 then
        local cap = match(path, route.pattern)
        if cap then
          if find(cap, "%", 1, true) then cap = http.unescape(cap) end
          local params = rawget(r, "params")
          -- made with its one entry: no table grows
          if params == nil then r.params = { [names[1]] = cap }
          else params[names[1]] = cap end
          return route.fn
        end
      else
        local caps = { match(path, route.pattern) }
        if caps[1] then
          local params = r.params
          for j, name in ipairs(names) do
            params[name] = http.unescape(caps[j])
          end
          return route.fn
        end
      end
    elseif not (methods and methods[m]) and find(path, route.pattern) then
      methods = methods or {}
      methods[m] = true
    end
  end
  return nil, methods
end

-- Finds the route of r and runs it: 404 when no path matches, 405 (with
-- Allow) when the path matches but not the method.
function Router:dispatch (r)
  local byMethod = self.exact[r.path]
  local methods = nil    -- the methods the path has, for a 405
  if byMethod then
    local fn = byMethod[r.method] or pick(byMethod, r.method)
    if fn then return fn(r) end
    methods = {}
    for m in pairs(byMethod) do methods[m] = true end
  end
  if self.patterns[1] then
    local fn
    fn, methods = find_pattern(self, r, r.path, r.method, methods)
    if fn then return fn(r) end
  end
  if methods and next(methods) then
    return 405, { ["Content-Type"] = "text/plain; charset=utf-8",
      Allow = allowed(methods) }, "Method Not Allowed\n"
  end
  if self.not_found then return self.not_found(r) end
  return 404, TEXT, "Not Found\n"
end

-- The hooks table of a script served by this router.
function Router:handler (opts)
  local router, exact, dispatch = self, self.exact, self.dispatch
  opts = opts or self.opts
  if self.streams then        -- which requests stream their body
    local o = {}
    for k, v in pairs(opts or {}) do o[k] = v end
    o.stream_body = function (r)
      local ro = router:route_opts(r)
      return ro and ro.stream_body and ro or false
    end
    opts = o
  end
  -- the usual cases inline: an exact path, else a pattern route (unless
  -- dispatch was replaced); what is left (404, 405) is dispatch's
  local patterns = self.patterns
  local inline = dispatch == Router.dispatch
  return http.handler(function (r)
    local path, method = r.path, r.method
    local byMethod = exact[path]
    local fn = byMethod and byMethod[method]
    if fn then return fn(r) end
    if inline and not byMethod and patterns[1] then
      fn = find_pattern(router, r, path, method)
      if fn then return fn(r) end
    end
    return dispatch(router, r)
  end, opts)
end

return M
