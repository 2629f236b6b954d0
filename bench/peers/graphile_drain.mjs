// Graphile Worker queue drain; run through bench/peers/graphile_drain (which makes the database).
// Env: DATABASE_URL (an empty database), JOBS, GRAPHILE_DIR (its node_modules' parent),
// CONCURRENCY (24), POOL (25), LOCAL_QUEUE (500), BATCH_DELAY (0: completeJobBatchDelay and
// failJobBatchDelay), PG_POSTMASTER_PID (optional: PostgreSQL CPU per job from /proc).
import { readFileSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const env = (k, d) => (process.env[k] === undefined || process.env[k] === "" ? d : process.env[k]);
const url = env("DATABASE_URL");
const jobs = Number(env("JOBS", 100000));
const concurrency = Number(env("CONCURRENCY", 24));
const pool = Number(env("POOL", 25));
const localQueue = Number(env("LOCAL_QUEUE", 500));
const batchDelay = Number(env("BATCH_DELAY", 0));
const deadlineS = Number(env("DEADLINE", Math.max(120, jobs / 200)));
const req = createRequire(env("GRAPHILE_DIR") + "/package.json");
const gw = await import(pathToFileURL(req.resolve("graphile-worker")).href);
const pg = req("pg");
const VERSION = JSON.parse(
  readFileSync(env("GRAPHILE_DIR") + "/node_modules/graphile-worker/package.json", "utf8"),
).version;

// CPU seconds of the whole PostgreSQL cluster: the postmaster with the children it reaped,
// plus the live children (backends, walwriter, checkpointer, autovacuum).
function pgCpu() {
  const pm = env("PG_POSTMASTER_PID", "");
  if (!pm) return null;
  const tick = 100; // USER_HZ on Linux
  const stat = (pid) => {
    const raw = readFileSync(`/proc/${pid}/stat`, "utf8");
    return raw.slice(raw.lastIndexOf(")") + 2).split(" ");
  };
  try {
    const f = stat(pm);
    let t = +f[11] + +f[12] + +f[13] + +f[14];
    for (const p of readdirSync("/proc")) {
      if (!/^\d+$/.test(p)) continue;
      try {
        const c = stat(p);
        if (c[1] === pm) t += +c[11] + +c[12];
      } catch {}
    }
    return t / tick;
  } catch {
    return null;
  }
}

const logger = new gw.Logger(() => (level, message) => {
  if (level === "error" || level === "warning") console.error(`graphile ${level}: ${message}`);
});

await gw.runMigrations({ connectionString: url, logger });
const client = new pg.Client({ connectionString: url });
await client.connect();
await client.query("CHECKPOINT");
let t = performance.now();
const BATCH = 10000;
for (let done = 0; done < jobs; done += BATCH) {
  const n = Math.min(BATCH, jobs - done);
  await client.query(
    `SELECT count(*) FROM graphile_worker.add_jobs(ARRAY(
       SELECT ROW('noop', json_build_object('n', i), NULL, NULL, NULL, NULL, NULL, NULL)::graphile_worker.job_spec
       FROM generate_series($1::int, $2::int) i))`,
    [done + 1, done + n],
  );
}
const enqueueS = (performance.now() - t) / 1000;
await client.query("ANALYZE graphile_worker._private_jobs");
const left = async () =>
  (await client.query("SELECT count(*)::int AS n FROM graphile_worker._private_jobs")).rows[0].n;
if ((await left()) !== jobs) throw new Error("enqueue did not leave JOBS jobs");
// Done: no job row left. The index on id makes this cheap as rows go.
const empty = async () =>
  (await client.query("SELECT NOT EXISTS (SELECT 1 FROM graphile_worker._private_jobs ORDER BY id LIMIT 1) AS e"))
    .rows[0].e;

let ran = 0;
const cpu0 = pgCpu();
const own0 = process.cpuUsage();
t = performance.now();
const runner = await gw.run({
  connectionString: url,
  concurrency,
  maxPoolSize: pool,
  noHandleSignals: true,
  logger,
  taskList: { noop: async () => { ran++; } },
  preset: {
    worker: {
      localQueue: { size: localQueue },
      completeJobBatchDelay: batchDelay,
      failJobBatchDelay: batchDelay,
    },
  },
});
const deadline = t + deadlineS * 1000;
for (;;) {
  if (await empty()) break;
  if (performance.now() > deadline) {
    console.error(`graphile: ${await left()} jobs left after ${deadlineS} s`);
    process.exit(1);
  }
  await new Promise((r) => setTimeout(r, 20));
}
const secs = (performance.now() - t) / 1000;
const cpu1 = pgCpu();
const own = process.cpuUsage(own0);
await runner.stop();
const failed = (await client.query("SELECT count(*)::int AS n FROM graphile_worker._private_jobs")).rows[0].n;
await client.end();
if (ran < jobs || failed) {
  console.error(`graphile: ran ${ran} of ${jobs}, ${failed} left`);
  process.exit(1);
}
const ms = (s) => ((s * 1000) / jobs).toFixed(3);
console.log(
  `peer=graphile-worker version=${VERSION} jobs=${jobs} seconds=${secs.toFixed(2)} ` +
    `jobs_per_s=${Math.round(jobs / secs)} enqueue_seconds=${enqueueS.toFixed(2)} ` +
    `pg_cpu_ms_per_job=${cpu0 === null || cpu1 === null ? "-" : ms(cpu1 - cpu0)} ` +
    `worker_cpu_ms_per_job=${ms((own.user + own.system) / 1e6)} ` +
    `settings=concurrency:${concurrency},pool:${pool},localQueue:${localQueue},batchDelay:${batchDelay}`,
);
