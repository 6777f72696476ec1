-- bench/echo_bench.lua -- luasrv's line-echo handler for bench/run's stream
-- workloads (a, b, c, e, g): every line read is written back; the writes are
-- buffered and go out when the next read has to wait.
return { handle = function(req)
  for line in req:lines("L") do req:write(line) end
end }
