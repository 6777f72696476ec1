--[[ spec/tls_certs.lua: a throw-away CA and certificates for the TLS specs,
made with the openssl command in a temporary directory the first time a
spec asks (ECDSA P-256; nothing here is committed or outlives the run).

  local C = require "tls_certs"
  local d = C.dir()    -- the directory; files:
    ca.pem                    the test CA
    server.pem/.key           CN=localhost, SAN localhost and 127.0.0.1
    server2.pem/.key          the same names, another certificate
    wild.pem/.key             CN=*.example.test, SAN *.example.test
    client.pem/.key           a client certificate, CN=alice, by the CA
    evil-ca.pem, evil.pem/.key   another CA and a client certificate by it
    expired.pem/.key          CN=localhost by the CA, expired in 2020
    other.pem/.key            CN=other.test (a wrong name for localhost)
    named.pem/.key            CN=localhost, SAN localhost only (no IP)
  C.sh(cmd)            runs a shell command, quiet; raises on failure
  C.read(path)         a file's text
]]

local T = require "luasrv.test"

local C = {}
local dir

function C.sh (cmd)
  local ok = os.execute(cmd .. " >/dev/null 2>&1")
  assert(ok, "failed: " .. cmd)
end

function C.read (path)
  local f = assert(io.open(path))
  local s = f:read("a")
  f:close()
  return s
end

local function write (path, s)
  local f = assert(io.open(path, "w"))
  f:write(s)
  f:close()
end

local serial = 100

local function key (name)
  C.sh(("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 " ..
        "-out %s/%s.key"):format(dir, name))
end

local function make_ca (name, cn)
  key(name)
  C.sh(("openssl req -x509 -new -key %s/%s.key -subj '/CN=%s' -days 2 " ..
        "-out %s/%s.pem"):format(dir, name, cn, dir, name))
end

local function leaf (name, cn, ext, ca)
  key(name)
  serial = serial + 1
  write(dir .. "/" .. name .. ".ext", ext)
  C.sh(("openssl req -new -key %s/%s.key -subj '/CN=%s' -out %s/%s.csr")
    :format(dir, name, cn, dir, name))
  C.sh(("openssl x509 -req -in %s/%s.csr -CA %s/%s.pem -CAkey %s/%s.key " ..
        "-set_serial %d -days 2 -extfile %s/%s.ext -out %s/%s.pem")
    :format(dir, name, dir, ca, dir, ca, serial, dir, name, dir, name))
end

-- a certificate valid only in the past, signed by the CA (openssl ca)
local function expired ()
  key("expired")
  write(dir .. "/expired.ext", "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
  C.sh(("openssl req -new -key %s/expired.key -subj '/CN=localhost' " ..
        "-out %s/expired.csr"):format(dir, dir))
  os.execute("mkdir -p " .. dir .. "/cadb")
  write(dir .. "/cadb/index.txt", "")
  write(dir .. "/cadb/serial", "4000\n")
  write(dir .. "/ca.cnf", ([[
[ca]
default_ca = test
[test]
dir = %s/cadb
database = $dir/index.txt
serial = $dir/serial
new_certs_dir = $dir
default_md = sha256
policy = any
copy_extensions = none
[any]
commonName = supplied
]]):format(dir))
  C.sh(("openssl ca -batch -config %s/ca.cnf -cert %s/ca.pem -keyfile " ..
        "%s/ca.key -in %s/expired.csr -startdate 20200101000000Z " ..
        "-enddate 20200102000000Z -extfile %s/expired.ext -out %s/expired.pem")
    :format(dir, dir, dir, dir, dir, dir))
end

function C.dir ()
  if dir then return dir end
  dir = T.tmpdir()
  make_ca("ca", "luasrv test CA")
  make_ca("evil-ca", "some other CA")
  leaf("server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\n", "ca")
  leaf("server2", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\n", "ca")
  leaf("wild", "*.example.test", "subjectAltName=DNS:*.example.test\n", "ca")
  leaf("other", "other.test", "subjectAltName=DNS:other.test\n", "ca")
  leaf("named", "localhost", "subjectAltName=DNS:localhost\n", "ca")
  leaf("client", "alice", "extendedKeyUsage=clientAuth\n", "ca")
  leaf("evil", "mallory", "extendedKeyUsage=clientAuth\n", "evil-ca")
  expired()
  return dir
end

return C
