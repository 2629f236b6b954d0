-- Shared by the wrk scripts that vary their requests: each thread gets an id (`tid`), its own
-- random seed, a random `run` number (unique text across runs) and a request counter `n`.
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end

function init(args)
  math.randomseed(os.time() * 1000 + tid)
  run = math.random(1, 1000000000)
  n = 0
end
