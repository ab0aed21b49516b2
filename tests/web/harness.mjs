// Test harness: runs a real `qorgan serve` on loopback with a temporary config and data dir,
// provisions through the operator API, reads the emails the server writes as .eml files, and
// drives Debian's Chromium through playwright-core (no browser download).

import { execFile, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, "..", "..");
export const screenshotDir = path.join(here, "screenshots");

export const VIEWPORTS = [
  { name: "desktop", width: 1280, height: 800 },
  { name: "phone", width: 390, height: 844 },
];

const OPERATOR_TOKEN = "web-test-operator-token-" + process.pid;

/** A free TCP port on 127.0.0.1 (bound to 0, then released). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Starts the server; resolves when /health answers. */
export async function startServer() {
  const bin = process.env.QORGAN_BIN || path.join(repoRoot, "target", "debug", "qorgan");
  if (!fs.existsSync(bin)) throw new Error(`qorgan binary not found at ${bin}: run tests/web/run.sh (it builds it)`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "qorgan-web-"));
  const [http, metrics, dns] = [await freePort(), await freePort(), await freePort()];
  const base = `http://127.0.0.1:${http}`;
  const config = `
[dns]
listen = ["127.0.0.1:${dns}"]
upstreams = ["127.0.0.1:9"]

[http]
listen = "127.0.0.1:${http}"
public_url = "${base}"

[metrics]
listen = "127.0.0.1:${metrics}"

[storage]
data_dir = ${JSON.stringify(path.join(dir, "data"))}

[operator]
token = "${OPERATOR_TOKEN}"

[payments]
secret = "web-test-payments-secret"

[mail]
smtp = ""

[log]
level = "warn"
`;
  const cfgPath = path.join(dir, "qorgan.toml");
  fs.writeFileSync(cfgPath, config);
  const logPath = path.join(dir, "server.log");
  const log = fs.openSync(logPath, "a");
  const child = spawn(bin, ["serve", "--config", cfgPath], { cwd: repoRoot, stdio: ["ignore", log, log] });
  let exited = null;
  child.on("exit", (code, signal) => {
    exited = { code, signal };
  });
  for (let i = 0; i < 300; i++) {
    if (exited) throw new Error(`qorgan exited early (${JSON.stringify(exited)}):\n${fs.readFileSync(logPath, "utf8")}`);
    try {
      const r = await fetch(base + "/health");
      if (r.ok) break;
    } catch {
      // not listening yet
    }
    if (i === 299) throw new Error("qorgan did not answer /health within 30 s:\n" + fs.readFileSync(logPath, "utf8"));
    await sleep(100);
  }
  return {
    base,
    dnsPort: dns,
    dir,
    mailDir: path.join(dir, "data", "mail"),
    logPath,
    async stop() {
      if (!exited) {
        child.kill("SIGTERM");
        for (let i = 0; i < 150 && !exited; i++) await sleep(100);
        if (!exited) child.kill("SIGKILL");
      }
      fs.closeSync(log);
      if (!process.env.KEEP_TMP) fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Asks the server's DNS listener with the real `dig`; resolves to {status, output}
 * (status: NOERROR, NXDOMAIN, ... or null when no answer came). */
export function dig(server, name, type = "A") {
  const args = ["@127.0.0.1", "-p", String(server.dnsPort), name, type, "+time=2", "+tries=1"];
  return new Promise((resolve, reject) => {
    execFile("dig", args, { timeout: 10000 }, (err, stdout, stderr) => {
      if (err && err.code === "ENOENT") {
        reject(new Error("dig not found: apt-get install -y bind9-dnsutils"));
        return;
      }
      // dig exits 9 when no reply came: that is a result (status null), not a harness failure.
      resolve({ status: /status: ([A-Z]+)/.exec(stdout)?.[1] ?? null, output: stdout + stderr });
    });
  });
}

/** Calls the operator API (billing integration) with the configured token. */
export async function operator(server, method, apiPath, body) {
  const r = await fetch(server.base + "/api/v1/operator" + apiPath, {
    method,
    headers: { Authorization: `Bearer ${OPERATOR_TOKEN}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`operator ${method} ${apiPath}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Decodes one .eml the server wrote: headers and the (base64 or plain) text body. */
export function parseEml(raw) {
  const split = raw.search(/\r?\n\r?\n/);
  const head = raw.slice(0, split).replace(/\r?\n[ \t]+/g, " ");
  const bodyRaw = raw.slice(split).trim();
  const headers = {};
  for (const line of head.split(/\r?\n/)) {
    const i = line.indexOf(":");
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  const b64 = /base64/i.test(headers["content-transfer-encoding"] || "");
  const body = b64 ? Buffer.from(bodyRaw.replace(/\s+/g, ""), "base64").toString("utf8") : bodyRaw;
  return { headers, body };
}

/** Waits (≤ 10 s) for an email to `to` whose body matches `pattern`; returns the body. */
export async function waitForMail(server, to, pattern) {
  for (let i = 0; i < 100; i++) {
    if (fs.existsSync(server.mailDir)) {
      const files = fs.readdirSync(server.mailDir).filter((f) => f.endsWith(".eml")).sort().reverse();
      for (const f of files) {
        const { headers, body } = parseEml(fs.readFileSync(path.join(server.mailDir, f), "utf8"));
        if ((headers.to || "").toLowerCase().includes(to.toLowerCase()) && pattern.test(body)) return body;
      }
    }
    await sleep(100);
  }
  throw new Error(`no email to ${to} matching ${pattern} in ${server.mailDir}`);
}

/** Launches Chromium with a fresh profile. */
export async function launchBrowser() {
  const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
  if (!fs.existsSync(executablePath)) {
    throw new Error(`Chromium not found at ${executablePath}: apt-get install -y chromium (or set CHROMIUM)`);
  }
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "qorgan-web-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport: { width: 1280, height: 800 },
    locale: "ru-RU",
    timezoneId: "UTC",
  });
  return {
    context,
    async close() {
      await context.close();
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Collects console errors, page errors and CSP violations of a page. */
export function watchProblems(page) {
  const problems = [];
  page.on("console", (msg) => {
    // An API answering 4xx is logged by the browser as a failed resource: that is the
    // expected answer to a wrong password or an anonymous GET /me, not a page problem.
    if (msg.type() === "error" && !/^Failed to load resource: the server responded with a status of 4\d\d/.test(msg.text())) {
      problems.push("console: " + msg.text());
    }
  });
  page.on("pageerror", (err) => problems.push("pageerror: " + err.message));
  return problems;
}

/** Screenshots the page at both viewports (restoring the desktop size afterwards). With
 * `scrollTo` (a locator), each shot starts at that element, just under the sticky top bar. */
export async function shoot(page, name, { scrollTo = null } = {}) {
  fs.mkdirSync(screenshotDir, { recursive: true });
  const files = [];
  for (const vp of VIEWPORTS) {
    await page.setViewportSize({ width: vp.width, height: vp.height });
    await page.waitForTimeout(150);
    if (scrollTo) {
      await scrollTo.evaluate((el) => {
        const bar = document.querySelector(".topbar");
        window.scrollTo(0, el.getBoundingClientRect().top + window.scrollY - (bar ? bar.offsetHeight : 0) - 12);
      });
    }
    const file = path.join(screenshotDir, `${name}-${vp.width}x${vp.height}.png`);
    await page.screenshot({ path: file, fullPage: false });
    files.push(file);
  }
  await page.setViewportSize({ width: 1280, height: 800 });
  return files;
}
