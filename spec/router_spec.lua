-- luasrv.http.router over raw sockets: exact paths, ":name" and "*name"
-- captures (one, several, percent-decoded), HEAD on a GET pattern, the
-- order patterns are tried in, 404 and 405 with Allow for pattern routes.
local H = require "helper"

local APP = [[
local http = require "luasrv.http"
local app = http.router()
local function show (r)
  local keys = {}
  for k in pairs(r.params) do keys[#keys + 1] = k end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do out[#out + 1] = k .. "=" .. r.params[k] end
  return 200, { ["Content-Type"] = "text/plain" },
    r.method .. " " .. table.concat(out, ",") .. "\n"
end
app:get("/one/:id", show)
app:get("/two/:a/and/:b", show)
app:post("/one/:id", function () return 201, {}, "posted\n" end)
app:get("/files/*rest", show)
app:get("/exact", show)
app:any("/any/:x", show)
return app:handler()
]]

H.for_models(function ()
  describe("luasrv.http.router", function ()
    local srv

    before_each(function ()
      srv = H.start{ source = APP, tcp = true }
    end)

    -- one request on its own connection: status line, Allow, body
    local function get (method, path)
      local c = srv:connect()
      c:send(method .. " " .. path .. " HTTP/1.1\r\nHost: x\r\n" ..
             "Connection: close\r\n\r\n")
      local status = c:receive()
      local allow, len
      while true do
        local l = assert(c:receive())
        if l == "" then break end
        allow = allow or l:match("^Allow: (.*)$")
        len = len or tonumber(l:match("^Content%-Length: (%d+)$"))
      end
      local body = (method ~= "HEAD" and len and len > 0) and c:receive(len)
                   or ""
      c:close()
      return status:match("^HTTP/1%.1 (%d+)"), body, allow
    end

    it("captures one segment, several, the rest, decoded", function ()
      assert.same({ "200", "GET id=42\n" }, { get("GET", "/one/42") })
      assert.same({ "200", "GET id=a b\n" }, { get("GET", "/one/a%20b") })
      assert.same({ "200", "GET a=x,b=y%\n" },
                  { get("GET", "/two/x/and/y%25") })
      assert.same({ "200", "GET rest=a/b/c\n" },
                  { get("GET", "/files/a/b/c") })
      assert.same({ "200", "GET \n" }, { get("GET", "/exact") })
      assert.same({ "200", "DELETE x=1\n" }, { get("DELETE", "/any/1") })
    end)

    it("runs a GET pattern for HEAD, the method's route first", function ()
      assert.same({ "200", "" }, { get("HEAD", "/one/7") })
      assert.same({ "201", "posted\n" }, { get("POST", "/one/7") })
    end)

    it("answers 404, and 405 with Allow for a pattern's path", function ()
      assert.equals("404", (get("GET", "/one")))
      assert.equals("404", (get("GET", "/one/1/2")))
      local status, _, allow = get("PUT", "/one/1")
      assert.equals("405", status)
      assert.equals("GET, HEAD, POST", allow)
    end)
  end)
end)
