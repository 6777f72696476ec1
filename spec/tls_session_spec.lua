-- TLS 1.3 session tickets are used once (RFC 8446, appendix C.4): a
-- client that resumes must be given a fresh ticket on that connection, or
-- its next connection is a full handshake. Proven with openssl s_client
-- chaining its sessions: each connection resumes with the ticket the one
-- before it got, in every model.
local H = require "helper"
local C = require "tls_certs"

local ECHO = [[
return { handle = function (req)
  local line = req:read("l")
  req:write("resumed=", tostring(req.tls.resumed), " line=", tostring(line), "\n")
end }]]

local run = H.output

H.for_models(function (model)

  it("gives a resumed TLS 1.3 session a new ticket; the chain resumes", function ()
    local d = C.dir()
    local srv = H.start{ model = model, source = ECHO,
      args = { "--tls", "127.0.0.1:0", "--tls-cert", d .. "/server.pem",
               "--tls-key", d .. "/server.key", "--timeout", "5" } }
    local function s_client (flags)
      return run(("printf 'hi\\n' | timeout 10 openssl s_client -connect " ..
        "127.0.0.1:%d -CAfile %s/ca.pem -ign_eof -msg %s"):format(
        srv.tls.port, d, flags))
    end
    local sess = srv.dir .. "/sess"
    local out = s_client("-sess_out " .. sess .. "0")
    assert.matches("\nNew, TLSv1.3", out)
    assert.matches("resumed=false line=hi", out, 1, true)
    for i = 1, 3 do
      out = s_client(("-sess_in %s%d -sess_out %s%d"):format(sess, i - 1,
        sess, i))
      assert.matches("\nReused, TLSv1.3", out)
      assert.matches("resumed=true line=hi", out, 1, true)
      assert.matches("NewSessionTicket", out, 1, true)
    end
  end)

end)
