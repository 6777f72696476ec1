-- http.lua -- an HTTP/1.1 server: a few routes, JSON through cjson.
--
--   luasrv scripts/http.lua --tcp 127.0.0.1:8080
--   curl http://127.0.0.1:8080/hello                  # hello
--   curl http://127.0.0.1:8080/json                   # {"message":"hello"}
--   curl http://127.0.0.1:8080/items/42               # {"id":42,"name":"item 42"}
--   curl --data-binary 'some text' http://127.0.0.1:8080/echo   # some text
--   curl http://127.0.0.1:8080/stream                 # 3 lines, sent chunked
--   curl http://127.0.0.1:8080/static/http.md         # a file under doc/
--   ws://127.0.0.1:8080/ws                            # WebSocket echo
--
-- The protocol (keep-alive, pipelining, chunked bodies, HEAD, limits and
-- error statuses) is the module luasrv.http, in lua/luasrv/http.lua; this
-- script only routes. Requests on one connection are answered in order;
-- a body is limited to HTTP_MAX_BODY bytes (default 1 MiB). /static/
-- serves the files under HTTP_STATIC_ROOT (default: the doc/ directory
-- of the tree this script is in, found from its place).

-- Find lua/luasrv/http.lua from this script's own place (scripts/../lua),
-- so `luasrv scripts/http.lua` works from any directory.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = here .. "/../lua/?.lua;" .. package.path

local http = require "luasrv.http"
local luasrv = require "luasrv"

local app = http.router()

-- GET /hello: plain text (a string alone is a 200 text/plain response)
app:get("/hello", function ()
  return "hello\n"
end)

-- GET /json: a JSON object
app:get("/json", function ()
  return http.json{ message = "hello" }
end)

-- GET /items/:id: a JSON object built from the path; 404 for ids that are
-- not numbers
app:get("/items/:id", function (r)
  local id = math.tointeger(tonumber(r.params.id))
  if not id then
    return http.json({ error = "no such item" }, 404)
  end
  return http.json{ id = id, name = "item " .. id, query = r.args }
end)

-- POST /echo: the body back, with its content type
app:post("/echo", function (r)
  return 200, { ["Content-Type"] = r.headers["Content-Type"] or
    "application/octet-stream" }, r.body
end)

-- GET /headers: the request headers as JSON (names in lower case)
app:get("/headers", function (r)
  local t = {}
  for k, v in pairs(r.headers) do t[k] = v end
  return http.json(t)
end)

-- GET /stream: a body written piece by piece, sent chunked (HTTP/1.1)
app:get("/stream", function (r)
  r:start(200, { ["Content-Type"] = "text/plain" })
  local n = math.min(math.tointeger(tonumber(r.args.n)) or 3, 100)
  for i = 1, n do
    r:write("line ", i, "\n")
    r:flush()                       -- each line goes out at once
    if r.args.sleep then luasrv.sleep(0.01) end
  end
end)

-- GET /static/...: files under HTTP_STATIC_ROOT (ETag, ranges, HEAD, 304;
-- no listings; `..` and links out of the root refused). Without it: the
-- doc/ directory of a source tree, or of an installed one
-- (PREFIX/share/doc/luasrv/doc beside PREFIX/share/luasrv/scripts); no
-- /static/ route when neither is there.
local static = os.getenv("HTTP_STATIC_ROOT") and
  http.static(os.getenv("HTTP_STATIC_ROOT"))
for _, dir in ipairs{ here .. "/../doc", here .. "/../../doc/luasrv/doc" } do
  if static then break end
  local ok, h = pcall(http.static, dir)
  if ok then static = h end
end
if static then app:get("/static/*path", static) end

-- GET /ws: a WebSocket echo: each text or binary message comes back as
-- it came (pings are answered by luasrv.websocket itself)
app:get("/ws", function (r)
  local ws = r:websocket()
  if not ws then return end  -- not a WebSocket handshake: answered already
  while true do
    local data, typ = ws:recv()
    if not data or typ == "close" then return end
    if typ == "text" then
      if not ws:send_text(data) then return end
    elseif typ == "binary" then
      if not ws:send_binary(data) then return end
    end
  end
end)

-- GET /error: a handler that raises: the client gets a 500
app:get("/error", function ()
  error("this handler fails on purpose")
end)

return app:handler{ max_body = tonumber(os.getenv("HTTP_MAX_BODY")) }
