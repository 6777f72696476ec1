-- bench/bulk_bench.lua -- luasrv's handler for bench/run's bulk workload
-- (f): echoes whatever arrives, up to 64 KiB at a time, flushing each piece.
return { handle = function(req)
  while true do
    local d = req:recv(65536)
    if not d then break end
    req:write(d)
    req:flush()
  end
end }
