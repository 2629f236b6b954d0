// The dashboard in a real browser (Debian's Chromium through playwright-core), driven by
// tests/api/ui.rs, which runs the server, makes the keys and jobs, and opens the gate when
// this script says `open-gate` (and answers `ok` on stdin). Prints `PASS` at the end.
import { createRequire } from "node:module";
import { createInterface } from "node:readline";
import { mkdirSync } from "node:fs";

const env = process.env;
const { chromium } = createRequire(import.meta.url)(env.PLAYWRIGHT_CORE);
// The server runs under a base path (server.base_path): every link must carry it.
const base = env.BASE;
const prefix = new URL(base).pathname;
const shots = env.SHOTS;
mkdirSync(shots, { recursive: true });
const lines = createInterface({ input: process.stdin });
const stdin = lines[Symbol.asyncIterator]();

function check(ok, what) {
  if (!ok) throw new Error("failed: " + what);
}

async function signIn(context, key) {
  const page = await context.newPage();
  await page.goto(base + "/ui");
  check(page.url().endsWith("/ui/sign-in"), "a visitor without a session is sent to sign in");
  await page.fill("#api_key", key);
  await Promise.all([page.waitForURL(base + "/ui"), page.click("button[type=submit]")]);
  return page;
}

const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"] });
try {
  // A wrong key is refused on the page.
  const stranger = await browser.newContext();
  const refused = await stranger.newPage();
  await refused.goto(base + "/ui/sign-in");
  await refused.fill("#api_key", "orch_not-a-key");
  await refused.click("button[type=submit]");
  await refused.waitForSelector(".error");
  await stranger.close();

  // The operator: overview with counts, then the jobs list filtered, then the running job.
  const admin = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await signIn(admin, env.ADMIN_KEY);
  const cookie = (await admin.cookies()).find((c) => c.name === "orch_session");
  check(cookie && cookie.httpOnly && cookie.sameSite === "Strict", "the session cookie is HttpOnly, SameSite=Strict");
  await page.waitForSelector("[data-count=running]");
  check(Number(await page.textContent("[data-count=running]")) >= 2, "the overview counts running jobs");
  const captions = await page.locator("figcaption").allTextContents();
  check(captions.some((c) => c.includes("Last 24 hours: 20 jobs, failure rate 30.0 %")), `the 24 h chart: ${captions}`);
  const titles = await page.locator("svg.chart title").allTextContents();
  check(titles.filter((t) => t.endsWith("7 succeeded, 3 failed")).length === 4, "two hours drawn in each chart");
  check(titles.length === 24 + 168, `every hour of both charts has a bar (${titles.length})`);
  const engines = await page.locator(".engines h3").allTextContents();
  check(engines.join() === "Flows,MCP servers,SSH hosts", `engine health for operators: ${engines}`);
  await page.screenshot({ path: shots + "/overview.png", fullPage: true });

  // Search by idempotency key: the one job that has it opens.
  await page.goto(base + "/ui/jobs");
  await page.fill("input[name=q]", "order-42");
  await Promise.all([page.waitForURL(base + `/ui/jobs/${env.KEYED_JOB}`), page.click(".filters button")]);

  await page.goto(base + "/ui/jobs");
  await page.fill("input[name=intent]", "test.gate");
  await Promise.all([page.waitForURL(/intent=test.gate/), page.click(".filters button")]);
  const rows = await page.locator("table.jobs tbody tr").count();
  check(rows === 1, `one test.gate job listed (saw ${rows})`);
  await page.screenshot({ path: shots + "/jobs.png", fullPage: true });
  await Promise.all([page.waitForURL(/\/ui\/jobs\/job_/), page.click(`a[href="${prefix}/ui/jobs/${env.GATED_JOB}"]`)]);
  check((await page.textContent("#status")).trim() === "running", "the job page shows it running");
  await page.waitForFunction(() => document.querySelectorAll("#timeline li").length >= 2);
  await page.evaluate(() => { window.notReloaded = true; });

  // The job finishes while the page is open: it changes without a reload.
  console.log("open-gate");
  check((await stdin.next()).value === "ok", "the test opened the gate");
  await page.waitForFunction(() => document.getElementById("status").textContent === "succeeded", null, { timeout: 20000 });
  check(await page.evaluate(() => window.notReloaded === true), "the page was not reloaded");
  await page.waitForFunction(() => document.getElementById("result").textContent.includes("echo"), null, { timeout: 20000 });
  await page.screenshot({ path: shots + "/job.png", fullPage: true });

  // Cancelling the held job through its page.
  await page.goto(base + `/ui/jobs/${env.HELD_JOB}`);
  await Promise.all([page.waitForURL(base + `/ui/jobs/${env.HELD_JOB}`), page.click("button.danger")]);
  await page.waitForFunction(() => document.getElementById("status").textContent === "cancelled", null, { timeout: 20000 });

  // A form without the session's token is refused, and changes nothing.
  const forged = await admin.request.post(base + `/ui/jobs/${env.OTHER_JOB}/cancel`, { form: { csrf: "forged" } });
  check(forged.status() === 403, `a CSRF-less post is refused (got ${forged.status()})`);

  // A failed job: its attempts with their errors, then Retry, and it succeeds live.
  await page.goto(base + `/ui/jobs/${env.BROKEN_JOB}`);
  check((await page.textContent("table.attempts")).includes("broken: planned failure on attempt 1"), "the attempt's error is shown");
  await Promise.all([page.waitForURL(base + `/ui/jobs/${env.BROKEN_JOB}`), page.click("#retry-job")]);
  await page.waitForFunction(() => document.getElementById("status").textContent === "succeeded", null, { timeout: 20000 });
  // The timeline is replayed from the stream (it may still be arriving): wait for the retry.
  await page.waitForFunction(() => document.getElementById("timeline").textContent.includes("retried"), null, { timeout: 20000 });

  // Bulk cancel of the selected jobs: tick two, count, confirm.
  await page.goto(base + "/ui/jobs?intent=test.pick");
  const picked = page.locator("table.jobs tbody input[type=checkbox]");
  check((await picked.count()) === 2, "two test.pick jobs listed");
  await picked.nth(0).check();
  await picked.nth(1).check();
  await Promise.all([page.waitForURL(/\/ui\/jobs\/bulk\?.*action=cancel/), page.click("#cancel-selected")]);
  check((await page.textContent("#bulk-count")).trim() === "2", "two selected jobs to cancel");
  await Promise.all([page.waitForURL(/status=cancelled/), page.click("#confirm-bulk")]);

  // Bulk cancel by filter: the count first, then every matching job is cancelled.
  await page.goto(base + "/ui/jobs?intent=test.bulk");
  await Promise.all([page.waitForURL(/bulk\?action=cancel/), page.click("#bulk-cancel")]);
  check((await page.textContent("#bulk-count")).trim() === "3", "three jobs to cancel, counted before confirming");
  await Promise.all([page.waitForURL(/status=cancelled/), page.click("#confirm-bulk")]);
  const listed = async (query, n) => {
    for (let i = 0; i < 100 && (await page.locator("table.jobs tbody tr").count()) !== n; i++) {
      await page.waitForTimeout(100);
      await page.goto(base + "/ui/jobs?" + query);
    }
    return page.locator("table.jobs tbody tr").count();
  };
  check((await listed("intent=test.bulk&status=cancelled", 3)) === 3, "all three are cancelled");
  check((await listed("intent=test.pick&status=cancelled", 2)) === 2, "both selected jobs are cancelled");

  // Bulk retry by filter: the three cancelled jobs go back to the queue.
  await page.goto(base + "/ui/jobs?intent=test.bulk&status=cancelled");
  await Promise.all([page.waitForURL(/bulk\?action=retry/), page.click("#bulk-retry")]);
  check((await page.textContent("#bulk-count")).trim() === "3", "three jobs to retry");
  await Promise.all([page.waitForURL(/\/ui\/jobs\?intent=test.bulk/), page.click("#confirm-bulk")]);
  check((await listed("intent=test.bulk&status=cancelled", 0)) === 0, "none is cancelled any more");

  // Callbacks: the exhausted delivery is listed; retry it, then every exhausted one to its host.
  const row = `tr[data-job="${env.UNDELIVERED_JOB}"]`;
  await page.goto(base + "/ui/callbacks?host=127.0.0.1");
  check((await page.textContent(row)).includes("exhausted"), "the exhausted delivery is listed");
  await page.screenshot({ path: shots + "/callbacks.png", fullPage: true });
  await Promise.all([page.waitForURL(/\/ui\/callbacks\?host=127.0.0.1/), page.click(`${row} button`)]);
  check((await page.textContent(`${row} .retries`)).trim() === "1", "one manual retry");
  // It fails again (nothing listens); then the host-wide retry sends it once more.
  for (let i = 0; i < 100 && !(await page.textContent(row)).includes("exhausted"); i++) {
    await page.waitForTimeout(100);
    await page.reload();
  }
  await Promise.all([page.waitForURL(/\/ui\/callbacks\?host=127.0.0.1/), page.click("#retry-host")]);
  check((await page.textContent(`${row} .retries`)).trim() === "2", "the host-wide retry reached it");
  // And from the job's page, where its attempts are listed.
  await page.goto(base + `/ui/jobs/${env.UNDELIVERED_JOB}`);
  for (let i = 0; i < 100 && (await page.locator("#retry-callback").count()) === 0; i++) {
    await page.waitForTimeout(100);
    await page.reload();
  }
  check((await page.locator("table.deliveries tbody tr").count()) >= 2, "the delivery's attempts are listed");
  await Promise.all([page.waitForURL(base + `/ui/jobs/${env.UNDELIVERED_JOB}`), page.click("#retry-callback")]);

  // Keys: create one (shown once, and it works), revoke it (and it stops working).
  await page.click(`nav a[href='${prefix}/ui/keys']`);
  await page.fill("input[name=name]", "robot");
  await page.fill("input[name=scopes]", "memory.*");
  await page.click(`form[action='${prefix}/ui/keys'] button`);
  const secret = (await page.textContent("#new-key")).trim();
  check(secret.startsWith("orch_"), "the new key is shown once");
  const withKey = (key) => fetch(base + "/tools", { headers: { authorization: "Bearer " + key } });
  check((await withKey(secret)).status === 200, "the new key works");
  await page.screenshot({ path: shots + "/keys.png", fullPage: true });
  await Promise.all([page.waitForURL(base + "/ui/keys"), page.click("button[aria-label='Revoke robot']")]);
  check((await page.locator("tr", { hasText: "robot" }).textContent()).includes("revoked"), "the key is listed as revoked");
  check((await withKey(secret)).status === 401, "the revoked key no longer works");

  // A read-only key: no action buttons, payloads hidden.
  const readerContext = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const reader = await signIn(readerContext, env.READER_KEY);
  await reader.goto(base + `/ui/jobs/${env.OTHER_JOB}`);
  check((await reader.locator("button.danger").count()) === 0, "a read-only key sees no cancel button");
  check((await reader.textContent("main")).includes("jobs:read:payloads"), "payloads are hidden without jobs:read:payloads");
  await reader.screenshot({ path: shots + "/job-phone-read-only.png", fullPage: true });
  check((await reader.locator(`nav a[href='${prefix}/ui/keys']`).count()) === 0, "no Keys tab without keys:admin");
  await reader.goto(base + "/ui");
  check((await reader.locator(".engines").count()) === 0, "engine health needs ops:read");
  await reader.goto(base + "/ui/jobs");
  check((await reader.locator("table.jobs input[type=checkbox]").count()) === 0, "a read-only key cannot select jobs");
  const keysPage = await reader.goto(base + "/ui/keys");
  check(keysPage.status() === 403, "the keys page needs keys:admin");

  // Signing out ends the session.
  await Promise.all([page.waitForURL(base + "/ui/sign-in"), page.click(".who button")]);
  await page.goto(base + "/ui");
  check(page.url().endsWith("/ui/sign-in"), "after signing out the dashboard asks to sign in again");
  console.log("PASS");
} finally {
  await browser.close();
  lines.close();
}
