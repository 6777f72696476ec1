-- bench/udp_bench.lua -- luasrv's datagram handler for bench/run's UDP
-- workload (d): the reply is the datagram itself.
return { handle = function(req)
  req:write(req.request)
end }
