"use strict";
// Shared by sdk3.js and sdk4.js: the venue's address from the environment,
// bounded waits, and one JSON report on stdout for the Python test to judge.
// Every wait has a deadline; the whole script has one too (DEADLINE_MS).

const DEADLINE_MS = 90_000;

function venueFromEnv() {
  const url = process.env.VENUE_URL; // https://127.0.0.1:PORT (TLS; NODE_EXTRA_CA_CERTS trusts its CA)
  const keyId = process.env.VENUE_KEY;
  const secret = process.env.VENUE_SECRET;
  if (!url || !keyId || !secret) throw new Error("VENUE_URL, VENUE_KEY and VENUE_SECRET are required");
  return { url: url.replace(/\/$/, ""), keyId, secret, wss: url.replace(/^http/, "ws").replace(/\/$/, "") };
}

async function waitFor(what, check, timeoutMs = 15_000, everyMs = 100) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

function eventPromise(what, register, timeoutMs = 15_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
    register((value) => {
      clearTimeout(timer);
      resolve(value);
    });
  });
}

// Runs `steps` (name -> async fn) in order; each result (or error) goes in the report.
async function run(steps) {
  const report = {};
  const killer = setTimeout(() => {
    report.__deadline = `script ran past ${DEADLINE_MS} ms`;
    process.stdout.write(JSON.stringify(report) + "\n");
    process.exit(3);
  }, DEADLINE_MS);
  for (const [name, fn] of Object.entries(steps)) {
    try {
      report[name] = { ok: true, value: (await fn(report)) ?? null };
    } catch (err) {
      report[name] = { ok: false, error: String((err && err.stack) || err) };
    }
  }
  clearTimeout(killer);
  process.stdout.write(JSON.stringify(report) + "\n");
  process.exit(0); // streams' reconnect timers must not keep the process alive
}

module.exports = { venueFromEnv, waitFor, eventPromise, run };
