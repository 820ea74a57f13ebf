-- wrk script for the hello-world side of bench/intake.py: plain GETs, the same summary line.
function done(summary, latency, requests)
  local p = {}
  for _, q in ipairs({50, 90, 99}) do p[#p + 1] = string.format('"p%d": %.3f', q, latency:percentile(q) / 1000) end
  io.write(string.format('BENCH {"requests": %d, "duration_s": %.3f, "non_2xx": %d, "socket_errors": %d, %s}\n',
    summary.requests, summary.duration / 1e6, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    table.concat(p, ", ")))
end
