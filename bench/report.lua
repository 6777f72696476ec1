-- bench/report.lua -- turns bench/run's raw measurements into the table
-- and the results JSON.
--
--   lua5.4 bench/report.lua META.json RAW.jsonl OUT.json
--
-- RAW has one JSON object per loadgen run ({"workload","server","rep", and
-- loadgen's fields}) or per server that could not run ({"na": why}).
-- Each (workload, server) point is the median of its repetitions, field by
-- field; errors are summed.  The ratio is to the C reference ("ref") in the
-- same run: the median of the ratios of the repetitions run side by side.
-- The thread and fork models' ratios are to the C reference in the same
-- model (ref-thread, ref-fork) when it ran; those two are to ref.
-- The targets: what luasrv aims at, in the same run as its reference.

local cjson = require "cjson"

local TARGETS = {  -- event model, one worker: ratio to ref (g: bytes/conn)
  a = 0.80, b = 0.75, c = 0.90, d = 0.90, e = 0.80, f = 0.80,
  i = 0.90, i16 = 0.80,   -- against redis-server
}
-- The server a workload's ratios are to: the C echo server, but for RESP
-- (i, i16) redis-server.
local REFERENCE = { i = "redis", i16 = "redis" }
-- (j, j16) the TCP proxy (scripts/proxy.lua) against haproxy in TCP mode.
TARGETS.j, TARGETS.j16 = 0.70, 0.70
REFERENCE.j, REFERENCE.j16 = "haproxy", "haproxy"
-- (h) HTTP hello (scripts/http.lua) against nginx with its Lua module.
TARGETS.h, REFERENCE.h = 1.10, "nginx-lua"
-- (hj) GET /json (http.json) against nginx + Lua encoding it with cjson.
TARGETS.hj, REFERENCE.hj = 1.00, "nginx-lua"
-- (t, t1) the same over TLS 1.3: keep-alive, and a full handshake per request.
TARGETS.t, REFERENCE.t = 1.00, "nginx-lua"
TARGETS.t1, REFERENCE.t1 = 0.95, "nginx-lua"
-- (ta, tf) TLS echo and bulk (a and f over TLS 1.3) against the C server's
-- TLS mode; (tg) idle TLS connections against nginx: at most 16 KiB each
-- and no more than nginx's.
TARGETS.ta, REFERENCE.ta = 0.85, "ref-tls"
TARGETS.tf, REFERENCE.tf = 0.85, "ref-tls"
REFERENCE.tg = "nginx-lua"
-- (k) WebSocket echo (scripts/http.lua's /ws) against nginx + Lua
-- running lua-resty-websocket's server; (l) a 1 MiB static file
-- (http.static) against nginx's static module.
TARGETS.k, REFERENCE.k = 1.00, "nginx-ws"
TARGETS.l, REFERENCE.l = 0.90, "nginx-static"
-- (m) HTTP + one pooled Redis GET through resty.redis (scripts/http_redis.lua
-- on luasrv.ngx) against nginx with its Lua module running the same driver.
TARGETS.m, REFERENCE.m = 1.00, "nginx-lua"
local REFERENCE_NAMES = { redis = "redis-server",
  ["ref-tls"] = "the C reference over TLS (refserver --tls)",
  ["nginx-lua"] = "nginx + ngx_http_lua_module",
  ["nginx-ws"] = "nginx + lua-resty-websocket",
  ["nginx-static"] = "nginx's static module (sendfile on)" }
-- Workloads whose table adds the server's CPU time per request (µs: the
-- server CPU's busy fraction over the rate).
local CPU_PER_REQUEST = { h = true, hj = true, k = true, l = true, t = true, t1 = true,
  ta = true, tf = true }
-- The thread and fork models against the C reference built the same way.
local SAME_MODEL = { thread = "ref-thread", fork = "ref-fork" }
local function reference (w) return REFERENCE[w] or "ref" end

-- The reference of server s in workload w: its own model's C server when
-- that was measured in this run, else the workload's reference.
local function reference_of (points, w, s)
  local own = not REFERENCE[w] and SAME_MODEL[s]
  local p = own and points[w .. " " .. own]
  if p and p.value then return own end
  return reference(w)
end
local RSS_TARGET, RSS_LIMIT = 2048, 4096
local RSS_TARGETS = { tg = 16384 }  -- and no more than the reference's
local COMPARISONS = {  -- model against the peer a user would otherwise pick
  { "a", "thread", "py-threading", 1.5 },
  { "f", "thread", "py-threading", 1.5 },
  { "c", "fork", "py-forking", 3.0 },
  { "a1", "sync", "py-plain", 1.5 },
  { "a", "event", "luv", nil },
  { "f", "event", "luv", nil },
}
local UNITS = { rps = "req/s", mbps = "MB/s", rss = "B/conn" }

local function read_file(path)
  local f = assert(io.open(path))
  local s = f:read("a")
  f:close()
  return s
end

local function median(list)
  if #list == 0 then return nil end
  table.sort(list)
  local n = #list
  if n % 2 == 1 then return list[(n + 1) // 2] end
  return (list[n // 2] + list[n // 2 + 1]) / 2
end

-- Groups the raw records by (workload, server), in the order met.
local function load_raw(path)
  local points, order = {}, {}
  for line in io.lines(path) do
    if line:match("^{") then
      local r = cjson.decode(line)
      for k, v in pairs(r) do  -- cjson reads every number as a float
        if math.type(v) == "float" and v == math.floor(v) and v < 2^53 then
          r[k] = math.tointeger(v)
        end
      end
      local key = r.workload .. " " .. r.server
      local p = points[key]
      if not p then
        p = { workload = r.workload, server = r.server, reps = {} }
        points[key] = p
        order[#order + 1] = p
      end
      if r.na then p.na = r.na else p.reps[#p.reps + 1] = r end
    end
  end
  return order, points
end

local function bytes_per_conn(r)
  if not r.held or r.held == 0 then return nil end
  return (r.rss_after_kib - r.rss_before_kib) * 1024 / r.held
end

local function field_median(reps, f)
  local vals = {}
  for _, r in ipairs(reps) do
    local v = type(f) == "function" and f(r) or r[f]
    if type(v) == "number" then vals[#vals + 1] = v end
  end
  return median(vals)
end

-- Fills in a point's medians and its value in the workload's metric.
local function summarise(p, metric)
  if #p.reps == 0 then return end
  for _, f in ipairs { "rps", "mbps", "p50_us", "p99_us", "srv_cpu", "cpu" } do
    p[f] = field_median(p.reps, f)
  end
  p.errors = 0
  for _, r in ipairs(p.reps) do p.errors = p.errors + (r.errors or 0) end
  local get = metric == "rss" and bytes_per_conn or function(r)
    return r[metric]
  end
  p.by_rep = {}
  for _, r in ipairs(p.reps) do p.by_rep[r.rep] = get(r) end
  p.value = field_median(p.reps, get)
  if p.srv_cpu and p.rps and p.rps > 0 then
    p.cpu_us_per_req = p.srv_cpu * 1e6 / p.rps
  end
  if metric == "rss" then p.held = field_median(p.reps, "held") end
end

-- The median of the per-repetition ratios: repetitions are interleaved, so
-- rep i of a server ran next to rep i of ref, on the same machine state.
local function paired_ratio(p, ref)
  local ratios = {}
  for rep, v in pairs(p.by_rep) do
    local rv = ref.by_rep[rep]
    if rv and rv > 0 then ratios[#ratios + 1] = v / rv end
  end
  return median(ratios) or p.value / ref.value
end

local function check_target(p, ref, metric)
  if p.value == nil then return end
  if metric == "rss" then
    if p.server ~= "event" then return end
    local limit = RSS_TARGETS[p.workload] or RSS_TARGET
    p.target = ("<=%d B"):format(limit)
    p.met = p.value <= limit
    if RSS_TARGETS[p.workload] then
      if ref and ref.value and ref.value > 0 and ref.server ~= p.server then
        p.ratio = p.value / ref.value  -- bytes: lower is better
        p.ref_server = ref.server
        p.target = p.target .. (", <=%s"):format(ref.server)
        p.met = p.met and p.value <= ref.value
      end
    else
      p.within_hard_limit = p.value <= RSS_LIMIT
    end
    return
  end
  if ref and ref.value and ref.value > 0 and p.server ~= ref.server then
    p.ratio = paired_ratio(p, ref)
    p.ref_server = ref.server
  end
  local t = p.server == "event" and TARGETS[p.workload]
  if t and p.ratio then
    p.target = (">=%.2f"):format(t)
    p.met = p.ratio >= t
  end
end

-- ---- formatting ----

local function thousands(n)
  local s = ("%d"):format(math.floor(n + 0.5))
  repeat
    local k
    s, k = s:gsub("^(-?%d+)(%d%d%d)", "%1,%2")
  until k == 0
  return s
end

local function show_value(p, metric)
  if p.value == nil then return "n/a" end
  if metric == "mbps" then return ("%.1f %s"):format(p.value, UNITS[metric]) end
  return thousands(p.value) .. " " .. UNITS[metric]
end

local function num(v, fmt)
  return v and (fmt):format(v) or "-"
end

local ROW = "%-3s %-27s %-13s %16s %9s %9s %6s %5s %5s %7s  %s"

local function print_row(w, desc, p, metric)
  if p.na or p.value == nil then
    print(("%-3s %-27s %-13s n/a (%s)"):format(w, desc, p.server,
      p.na or "no data"))
    return
  end
  local target = p.target and (p.target .. (p.met and " ok" or " MISS")) or ""
  local is_ref = p.server == reference(p.workload) or
                 p.server == "ref-thread" or p.server == "ref-fork"
  if is_ref and (p.cpu or 0) >= 0.95 and (p.srv_cpu or 1) < 0.90 then
    target = "loadgen-bound"  -- the client, not the server, set the pace
  end
  print(ROW:format(w, desc, p.server, show_value(p, metric),
    num(p.p50_us, "%.0f"), num(p.p99_us, "%.0f"), thousands(p.errors),
    num(p.srv_cpu, "%.2f"), num(p.cpu, "%.2f"), num(p.ratio, "%.2f"), target))
end

local function print_table(meta, order, wl)
  print(("luasrv bench  %s  %s, %d cpus, kernel %s  reps=%d  %gs+%gs warmup%s")
    :format(meta.date, meta.cpu, meta.cpus, meta.kernel, meta.reps,
      meta.duration, meta.warmup, meta.quick and "  (quick)" or ""))
  print(("luasrv: %s (%s)"):format(meta.luasrv, meta.luasrv_version))
  print(ROW:format("", "workload", "server", "value", "p50 us", "p99 us",
    "errors", "srv", "lg", "vs ref", "target"))
  local last
  for _, p in ipairs(order) do
    local w = wl[p.workload] or { desc = "?", metric = "rps" }
    local same = last == p.workload
    print_row(same and "" or p.workload, same and "" or w.desc, p, w.metric)
    last = p.workload
  end
  -- workloads whose ratios are not to the C echo server, by reference
  local by_ref, refs, seen = {}, {}, {}
  for _, p in ipairs(order) do
    local r = REFERENCE[p.workload]
    if r and not seen[p.workload] then
      seen[p.workload] = true
      if not by_ref[r] then by_ref[r] = {}; refs[#refs + 1] = r end
      table.insert(by_ref[r], p.workload)
    end
  end
  for _, r in ipairs(refs) do
    print(("%s: \"vs ref\" is to %s"):format(table.concat(by_ref[r], ", "),
      REFERENCE_NAMES[r] or r))
  end
  -- server CPU per request, where it says more than the rate
  local cpu_lines = {}
  for _, p in ipairs(order) do
    if CPU_PER_REQUEST[p.workload] and p.cpu_us_per_req then
      cpu_lines[#cpu_lines + 1] = ("%s %s %.1f"):format(p.workload, p.server,
        p.cpu_us_per_req)
    end
  end
  if #cpu_lines > 0 then
    print("server CPU us per request: " .. table.concat(cpu_lines, ", "))
  end
  -- thread and fork rows: to their own model's C server, where it ran
  local own, other = {}, {}
  for _, p in ipairs(order) do
    if SAME_MODEL[p.server] and p.ratio then
      local to = p.ref_server
      local list = to == SAME_MODEL[p.server] and own or other
      list[#list + 1] = p.workload .. " " .. p.server
    end
  end
  if #own > 0 then
    print(("%s: \"vs ref\" is to ref-thread / ref-fork, the C server "
      .. "in the same model"):format(table.concat(own, ", ")))
  end
  if #other > 0 then
    print(("%s: \"vs ref\" is to ref (its own model's C server did not "
      .. "run)"):format(table.concat(other, ", ")))
  end
end

local function compare(points)
  local out = {}
  for _, c in ipairs(COMPARISONS) do
    local w, a, b, t = c[1], c[2], c[3], c[4]
    local pa, pb = points[w .. " " .. a], points[w .. " " .. b]
    local r = { workload = w, server = a, peer = b, target = t }
    if not (pa or pb) then goto next end
    if pa and pb and pa.value and pb.value and pb.value > 0 then
      r.ratio = paired_ratio(pa, pb)
      if t then r.met = r.ratio >= t end
    end
    out[#out + 1] = r
    ::next::
  end
  return out
end

local function print_comparisons(list)
  if #list == 0 then return end
  print("")
  print("model vs peer      ratio  target")
  for _, r in ipairs(list) do
    print(("%-3s %-6s/%-13s %5s  %s"):format(r.workload, r.server, r.peer,
      num(r.ratio, "%.2f"),
      r.target and (">=%.1f%s"):format(r.target,
        r.ratio and (r.met and " ok" or " MISS") or "") or ""))
  end
end

-- ---- main ----

local meta_path, raw_path, out_path = arg[1], arg[2], arg[3]
local meta = cjson.decode(read_file(meta_path))
local wl = {}
for _, w in ipairs(meta.workloads) do wl[w.id] = w end
local order, points = load_raw(raw_path)
for _, p in ipairs(order) do
  summarise(p, (wl[p.workload] or {}).metric or "rps")
end
for _, p in ipairs(order) do
  local metric = (wl[p.workload] or {}).metric or "rps"
  local to = reference_of(points, p.workload, p.server)
  check_target(p, points[p.workload .. " " .. to], metric)
end
local comparisons = compare(points)
print_table(meta, order, wl)
print_comparisons(comparisons)
for _, p in ipairs(order) do p.by_rep = nil end  -- was for paired_ratio
local f = assert(io.open(out_path, "w"))
f:write(cjson.encode { meta = meta, results = order,
  comparisons = comparisons }, "\n")
f:close()
io.stderr:write("bench/run: results in ", out_path, "\n")
