-- POST /orchestrate system.echo with "async": true: answered 202 once the job is filed (the
-- intake's batch committed); the workers drain the queue meanwhile.
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@(.*/)") .. "?.lua"
require "report"
wrk.method = "POST"
wrk.path = "/orchestrate"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"intent":"system.echo","inputs":{"hello":"world","n":42},"async":true}'
