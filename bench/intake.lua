-- wrk script for bench/intake.py: POSTs pre-signed Stripe events, each body once (distinct event ids).
-- wrk -s bench/intake.lua URL -- <bodies file> <threads>; the file has "signature<TAB>body" lines.
local threads = {}
local sigs, bodies = {}, {}
local counter = 0

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  local nthreads = tonumber(args[2])
  local i = 0
  for l in io.lines(args[1]) do
    if i % nthreads == tid then
      local tab = string.find(l, "\t", 1, true)
      sigs[#sigs + 1] = string.sub(l, 1, tab - 1)
      bodies[#bodies + 1] = string.sub(l, tab + 1)
    end
    i = i + 1
  end
end

function request()
  counter = counter + 1
  local k = ((counter - 1) % #bodies) + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json", ["Stripe-Signature"] = sigs[k]}, bodies[k])
end

function done(summary, latency, requests)
  local p = {}
  for _, q in ipairs({50, 90, 99}) do p[#p + 1] = string.format('"p%d": %.3f', q, latency:percentile(q) / 1000) end
  io.write(string.format('BENCH {"requests": %d, "duration_s": %.3f, "non_2xx": %d, "socket_errors": %d, %s}\n',
    summary.requests, summary.duration / 1e6, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    table.concat(p, ", ")))
end
