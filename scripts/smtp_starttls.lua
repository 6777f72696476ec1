-- smtp_starttls.lua -- enough SMTP to show STARTTLS: a 220 greeting, EHLO
-- that offers STARTTLS until the session is encrypted, STARTTLS (220,
-- then TLS on the same connection with the server's certificates), and
-- a mail transaction that is accepted only over TLS and then discarded.
-- It delivers nothing: it is a demonstration of req:starttls.
--
--   luasrv scripts/smtp_starttls.lua --tcp 127.0.0.1:2525 \
--     --tls-cert cert.pem --tls-key key.pem
--   openssl s_client -starttls smtp -connect 127.0.0.1:2525 -crlf

local function reply (req, ...)
  req:write(...)
  return req:flush()
end

local function data (req)
  reply(req, "354 end with <CRLF>.<CRLF>\r\n")
  for line in req:lines() do
    if line == "." or line == ".\r" then return true end
  end
  return false
end

local commands = {}

function commands.EHLO (req)
  return reply(req, "250-luasrv\r\n", req.tls and "" or "250-STARTTLS\r\n",
               "250-8BITMIME\r\n", "250 SIZE 1048576\r\n")
end

function commands.HELO (req)
  return reply(req, "250 luasrv\r\n")
end

function commands.STARTTLS (req)
  if req.tls then return reply(req, "503 already encrypted\r\n") end
  reply(req, "220 ready to start TLS\r\n")
  return req:starttls()  -- nil, msg: the connection is closed
end

function commands.MAIL (req)
  if not req.tls then return reply(req, "530 issue STARTTLS first\r\n") end
  return reply(req, "250 OK\r\n")
end

function commands.RCPT (req)
  if not req.tls then return reply(req, "530 issue STARTTLS first\r\n") end
  return reply(req, "250 OK\r\n")
end

function commands.DATA (req)
  if not req.tls then return reply(req, "530 issue STARTTLS first\r\n") end
  if not data(req) then return nil end
  return reply(req, "250 OK: discarded\r\n")
end

function commands.NOOP (req)
  return reply(req, "250 OK\r\n")
end

function commands.RSET (req)
  return reply(req, "250 OK\r\n")
end

return {
  handle = function (req)
    reply(req, "220 luasrv ESMTP\r\n")
    for line in req:lines() do
      local verb = (line:match("^(%a+)") or ""):upper()
      if verb == "QUIT" then
        reply(req, "221 bye\r\n")
        return
      end
      local f = commands[verb]
      if not f then
        reply(req, "500 unknown command\r\n")
      elseif not f(req) then
        return  -- the client went away
      end
    end
  end,
}
