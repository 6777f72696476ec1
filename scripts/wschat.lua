-- wschat.lua -- a WebSocket chat room on luasrv.http: every text message
-- a client sends goes to every other client connected to the same worker.
-- Needs the event model (the default): all the room's connections are
-- coroutines of one worker.
--
--   luasrv scripts/wschat.lua --tcp 127.0.0.1:8090
--   ws://127.0.0.1:8090/chat?name=ann    # from a browser or Node's ws
--
-- A client gives its name in the query (?name=..., 32 characters at most;
-- "guest-N" without one). Each text message it sends becomes
-- "<name> message" for every other client; joins and leaves are announced
-- to the others as "* name joined" / "* name left"; "/who" answers the
-- sender alone with "* in the room: a, b, c". Binary messages are
-- ignored. GET / without an upgrade answers a line of help.
--
-- Why the event model: a chat room is many connections, most of them
-- idle, that wake each other. In sync, fork and thread every open
-- WebSocket holds the worker, the child or the thread until it closes
-- (sync would serve one client at a time); a fork child has its own copy
-- of the room; and a queue cannot wake a task of another thread's or
-- process's Lua state (a wait there ends with "deadlock"). So init
-- refuses the other models.
--
-- Each client has a queue (luasrv.queue) and a writer, a light thread
-- (luasrv.spawn) that sends what the queue holds: a broadcast pushes to
-- every queue and returns at once, a slow reader delays nobody else, and
-- no one polls (the writer waits in the queue's pop). A queue is capped
-- (MAX_QUEUE messages; beyond it the client is dropped).
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = here .. "/../lua/?.lua;" .. package.path

local http = require "luasrv.http"
local luasrv = require "luasrv"

local MAX_QUEUE = 1000
local PING_INTERVAL = tonumber(os.getenv("WSCHAT_PING")) or 30
local room = {}        -- member -> true; member { name, queue, closed }
local guests = 0

local function drop (m)
  m.closed = true
  m.queue:close()      -- the writer's pop returns nil, "closed"
end

local function send (m, text)
  if m.closed then return end
  if m.queue:len() >= MAX_QUEUE then   -- cannot keep up: drop it
    m.kicked = true
    drop(m)
    return
  end
  m.queue:push(text)
end

-- to everyone but the sender (nil: to everyone)
local function broadcast (text, from)
  for m in pairs(room) do
    if m ~= from then send(m, text) end
  end
end

local function writer (ws, conn, m)
  while true do
    local text = m.queue:pop()          -- waits for the next message
    if not text or m.closed then break end
    if not ws:send_text(text) then break end
  end
  m.closed = true
  -- a client dropped for its backlog: closing the connection also ends
  -- the reader (its recv fails)
  if m.kicked then conn:close() end
end

local function who ()
  local names = {}
  for o in pairs(room) do names[#names + 1] = o.name end
  table.sort(names)
  return "* in the room: " .. table.concat(names, ", ")
end

local app = http.router()

app:get("/", function ()
  return "a WebSocket chat room: ws://this-host/chat?name=you\n"
end)

app:get("/chat", function (r)
  -- a client silent for PING_INTERVAL seconds is pinged; one that does
  -- not answer within as long again is gone (recv returns nil)
  local ws = r:websocket{ ping_interval = PING_INTERVAL }
  if not ws then return end           -- not a handshake: answered already
  local name = (r.args.name or ""):gsub("[%c<>*]", ""):sub(1, 32)
  if name == "" then
    guests = guests + 1
    name = "guest-" .. guests
  end
  local m = { name = name, queue = luasrv.queue.new(), closed = false }
  broadcast("* " .. name .. " joined")
  room[m] = true
  local w = luasrv.spawn(writer, ws, r.req, m)
  while not m.closed do
    local data, typ = ws:recv()
    if not data or typ == "close" then break end
    if typ == "text" then
      if data == "/who" then send(m, who())
      elseif data ~= "" then broadcast("<" .. name .. "> " .. data, m) end
    end
  end
  room[m] = nil
  drop(m)
  broadcast("* " .. name .. " left")
  luasrv.wait(w)
  ws:close()  -- a no-op when the client closed first
end)

local handler = app:handler()

function handler.init (server)
  if server.model ~= "event" then
    error("wschat.lua needs the event model (--model event)", 0)
  end
end

return handler
