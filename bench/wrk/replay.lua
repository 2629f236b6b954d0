-- POST /orchestrate with one fixed Idempotency-Key: every request after the first is a replay.
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@(.*/)") .. "?.lua"
require "report"
wrk.method = "POST"
wrk.path = "/orchestrate"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Idempotency-Key"] = "bench-replay-key"
wrk.body = '{"intent":"system.echo","inputs":{"replay":true}}'
