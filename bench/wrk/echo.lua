-- POST /orchestrate system.echo (a read intent: no idempotency key, every request is a job).
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@(.*/)") .. "?.lua"
require "report"
wrk.method = "POST"
wrk.path = "/orchestrate"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"intent":"system.echo","inputs":{"hello":"world","n":42}}'
