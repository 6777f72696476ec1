-- jsonrpc.lua -- JSON-RPC 2.0 over JSON lines: one request per line, one
-- reply per line, on TCP and Unix stream listeners (and one request per
-- datagram on UDP and Unix datagram listeners).
--
--   luasrv scripts/jsonrpc.lua --tcp 127.0.0.1:4000 --unix /tmp/rpc.sock
--   echo '{"jsonrpc":"2.0","id":1,"method":"add","params":[1,2]}' |
--     socat - TCP:127.0.0.1:4000          # {"jsonrpc":"2.0","id":1,"result":3}
--
-- Methods: echo(value) returns value; add(n, ...) returns the sum;
-- time() returns { unix = seconds, utc = "2024-01-02T03:04:05Z" }.
--
-- A request is an object { "id": ..., "method": "...", "params": [...] }
-- ("jsonrpc":"2.0" may be left out; any other version is refused).
-- A request without "id" is a notification: it runs, nothing is answered.
-- An array of requests is a batch, answered by an array. Errors use the
-- JSON-RPC 2.0 codes; after a malformed line the connection goes on.
--
-- lua-cjson 2.1.0 limits: numbers are written with 14 significant digits
-- (use string ids, or integer ids below 10^14), and an empty JSON array
-- inside a value comes back as {}. It reads numbers JSON cannot write back
-- (1e400, NaN, Infinity): such an id is an invalid request, and a result
-- holding one is answered with an Internal error.
local cjson = require "cjson"

local PARSE_ERROR = -32700
local INVALID_REQUEST = -32600
local METHOD_NOT_FOUND = -32601
local INVALID_PARAMS = -32602
local INTERNAL_ERROR = -32603

local MESSAGES = {
  [PARSE_ERROR] = "Parse error",
  [INVALID_REQUEST] = "Invalid Request",
  [METHOD_NOT_FOUND] = "Method not found",
  [INVALID_PARAMS] = "Invalid params",
  [INTERNAL_ERROR] = "Internal error",
}


--[[ Methods: each takes the params table, returns the result or raises
invalid_params(why) ]]

-- raised by a method for bad params: a table, told apart from a crash
local function invalid_params (why)
  error({ code = INVALID_PARAMS, data = why }, 0)
end

local methods = {}

function methods.echo (params)
  if #params ~= 1 then invalid_params("echo takes one value") end
  return params[1]
end

function methods.add (params)
  if params[1] == nil and next(params) ~= nil then
    invalid_params("add takes an array of numbers")
  end
  local sum = 0
  for i, n in ipairs(params) do
    if type(n) ~= "number" then
      invalid_params(("param %d is not a number"):format(i))
    end
    sum = sum + n
  end
  return sum
end

function methods.time (params)
  if next(params) ~= nil then invalid_params("time takes no params") end
  return { unix = os.time(), utc = os.date("!%Y-%m-%dT%H:%M:%SZ") }
end


--[[ Replies ]]

local function result_reply (id, result)
  return { jsonrpc = "2.0", id = id, result = result }
end

local function error_reply (id, code, data)
  return { jsonrpc = "2.0", id = id == nil and cjson.null or id,
           error = { code = code, message = MESSAGES[code], data = data } }
end


--[[ Requests ]]

local function is_finite (n)
  return n == n and n ~= math.huge and n ~= -math.huge
end

local function is_valid_id (id)
  local t = type(id)
  return id == nil or id == cjson.null or t == "string"
    or (t == "number" and is_finite(id))
end

-- runs one decoded request; its reply, or nil for a notification
local function call (request)
  if type(request) ~= "table" or type(request.method) ~= "string"
      or (request.jsonrpc ~= nil and request.jsonrpc ~= "2.0")
      or not is_valid_id(request.id) then
    local id = type(request) == "table" and is_valid_id(request.id)
      and request.id or nil
    return error_reply(id, INVALID_REQUEST)
  end
  local id, params = request.id, request.params
  if params == nil or params == cjson.null then params = {} end
  local method = methods[request.method]
  local reply
  if not method then
    reply = error_reply(id, METHOD_NOT_FOUND, request.method)
  elseif type(params) ~= "table" then
    reply = error_reply(id, INVALID_PARAMS, "params must be an array or " ..
      "an object")
  else
    local ok, result = pcall(method, params)
    if ok then
      reply = result_reply(id, result == nil and cjson.null or result)
    elseif type(result) == "table" then
      reply = error_reply(id, result.code, result.data)
    else
      reply = error_reply(id, INTERNAL_ERROR, tostring(result))
    end
  end
  if id == nil then return nil end   -- a notification: no reply
  return reply
end

-- a batch (a JSON array of requests): the list of replies, or nil when
-- they were all notifications
local function call_batch (batch)
  if #batch == 0 then return error_reply(nil, INVALID_REQUEST) end
  local replies = {}
  for _, request in ipairs(batch) do
    replies[#replies + 1] = call(request)
  end
  if #replies == 0 then return nil end
  return replies
end

-- one reply as JSON text; a result cjson cannot write (a NaN or infinite
-- number in it) becomes an Internal error for the same id
local function encode (reply)
  local ok, text = pcall(cjson.encode, reply)
  if ok then return text end
  return cjson.encode(error_reply(reply.id, INTERNAL_ERROR,
    "result not representable in JSON: " .. text:gsub("^.-: ", "")))
end

-- the reply line (with its "\n") to one line of text, or nil
local function answer (text)
  if not text:find("%S") then return nil end   -- blank lines are ignored
  local ok, request = pcall(cjson.decode, text)
  local reply
  if not ok then
    reply = error_reply(nil, PARSE_ERROR, (request:gsub("^.-: ", "")))
  elseif type(request) == "table" and request[1] ~= nil then
    reply = call_batch(request)
  elseif type(request) == "table" and next(request) == nil
      and text:find("^%s*%[") then
    reply = error_reply(nil, INVALID_REQUEST)    -- "[]", an empty batch
  else
    reply = call(request)
  end
  if reply == nil then return nil end
  if reply.jsonrpc then return encode(reply) .. "\n" end
  local parts = {}   -- a batch: each reply on its own, so one cannot spoil
  for i, r in ipairs(reply) do parts[i] = encode(r) end     -- the others
  return "[" .. table.concat(parts, ",") .. "]\n"
end


--[[ Hooks ]]

local M = {}

function M.handle (req)
  local transport = req.server.transport
  if transport == "udp" or transport == "unixgram" then
    local reply = answer(req.request)
    if reply then req:write(reply) end
    return
  end
  while true do
    local line, err = req:read("l")
    if line == nil then
      if err == "line too long" then   -- the rest of it cannot be read
        req:write(cjson.encode(error_reply(nil, INVALID_REQUEST,
          "line too long")), "\n")
      end
      return
    end
    local reply = answer(line)
    if reply then req:write(reply) end
  end
end

return M
