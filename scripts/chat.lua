-- chat.lua -- a line-based chat room: every line a client sends goes to
-- every client connected to the same worker. Needs the event model (the
-- default): all the room's connections are coroutines of one worker.
--
--   luasrv scripts/chat.lua --tcp 127.0.0.1:7000
--   socat - TCP:127.0.0.1:7000      # in two terminals; type lines
--
-- The first line a client sends is its name ("nick"). Then each line
-- becomes "<nick> line" for everyone (the sender too); joins and leaves
-- are announced as "* nick joined" / "* nick left". "/who" lists the room.
--
-- Scope: one room per worker. With --workers N each worker has its own
-- room (a client sees only those the kernel gave to the same worker); run
-- one worker for one room.
--
-- Each connection has a writer: a light thread (luasrv.spawn) that sends
-- what others put in its queue (luasrv.queue), so a slow reader delays
-- nobody else. The writer waits in the queue's pop and is woken by the
-- next line; the queue is capped (MAX_QUEUE lines; beyond it the client
-- is dropped).
local luasrv = require "luasrv"

local MAX_QUEUE = 1000
local room = {}        -- req -> member { nick, queue, closed }

local function drop (m)
  m.closed = true
  m.queue:close()  -- the writer's pop returns nil, "closed"
end

local function send (m, line)
  if m.closed then return end
  if m.queue:len() >= MAX_QUEUE then  -- cannot keep up: drop it
    drop(m)
    return
  end
  m.queue:push(line)
end

local function broadcast (line)
  for _, m in pairs(room) do send(m, line) end
end

local function writer (req, m)
  while not m.closed do
    local line = m.queue:pop()  -- waits for the next line
    if not line or m.closed then break end
    local lines = { line }
    while m.queue:len() > 0 do lines[#lines + 1] = m.queue:pop() end
    req:write(table.concat(lines, "\n"), "\n")
    if not req:flush() then break end
  end
  m.closed = true
  req:close()  -- also ends the reader: its read fails with "closed"
end

local chat = {}

function chat.init (server)
  if server.model ~= "event" then
    error("chat.lua needs the event model (--model event)", 0)
  end
end

function chat.handle (req)
  req:write("name? ")
  local nick = req:read("l")
  if not nick or nick == "" then return end
  nick = nick:gsub("[%c]", ""):sub(1, 32)
  local m = { nick = nick, queue = luasrv.queue.new(), closed = false }
  room[req] = m
  broadcast("* " .. nick .. " joined")
  local w = luasrv.spawn(writer, req, m)
  while not m.closed do
    local line = req:read("l")
    if not line then break end
    if line == "/who" then
      local names = {}
      for _, o in pairs(room) do names[#names + 1] = o.nick end
      table.sort(names)
      send(m, "* in the room: " .. table.concat(names, ", "))
    elseif line ~= "" then
      broadcast("<" .. nick .. "> " .. line)
    end
  end
  room[req] = nil
  broadcast("* " .. nick .. " left")
  drop(m)
  luasrv.wait(w)
end

return chat
