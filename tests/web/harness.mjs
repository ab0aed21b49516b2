// Test harness: runs a real `qorgan serve` on loopback with a temporary config and data dir,
// provisions through the operator API, reads the emails the server writes as .eml files, and
// drives Debian's Chromium through playwright-core (no browser download).

import { execFile, spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
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

/** The low end of the kernel's ephemeral port range (32768 when it cannot be read). */
function ephemeralLow() {
  try {
    const low = parseInt(fs.readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8"), 10);
    return Number.isInteger(low) && low > 2048 ? low : 32768;
  } catch {
    return 32768;
  }
}

/** Ports freePort has handed out in this process. */
const handedOut = new Set();

/** A free TCP port on 127.0.0.1, picked below the ephemeral range: a port from `listen(0)` comes
 * from the range outgoing connections of concurrent work also draw from, and was seen taken
 * between the pick and the server's bind ("Address already in use"). Same rule as
 * tests/lib/free_ports.py; a port is handed out once per process. */
export async function freePort() {
  const high = ephemeralLow();
  const low = Math.max(1024, high - 12000);
  for (let attempt = 0; attempt < 1000; attempt++) {
    const port = low + Math.floor(Math.random() * (high - low));
    if (handedOut.has(port)) continue;
    const free = await new Promise((resolve) => {
      const srv = net.createServer();
      srv.once("error", () => resolve(false));
      srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
    });
    if (free) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`no free port in ${low}..${high}`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A TOML section from a flat object of strings, numbers and booleans (JSON strings are TOML
 * basic strings). */
function tomlSection(name, values) {
  const lines = Object.entries(values).map(([k, v]) => `${k} = ${JSON.stringify(v)}`);
  return `\n[${name}]\n${lines.join("\n")}\n`;
}

/** Starts the server; resolves when /health answers. Options: `captcha`, the keys of the
 * `[captcha]` section (provider, site_key, secret, verify_url, script_url); without it the
 * built-in default (no captcha). */
export async function startServer({ captcha = null } = {}) {
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
${captcha ? tomlSection("captcha", captcha) : ""}`;
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

/**
 * A local stand-in for Google's reCAPTCHA on 127.0.0.1 (the tests never reach Google):
 * `scriptUrl` serves an `api.js` whose `grecaptcha` ({render, getResponse, reset}) draws an
 * "I'm not a robot" checkbox and answers `token` once it is ticked (calling the `onload`
 * callback of its query, like the real one in explicit-render mode); `verifyUrl` is a
 * siteverify that answers {"success": true} only for `secret` + `token`, and only while
 * `accept` is true (set it to false to play a refused or expired token). Every verification's
 * form is kept in `verifications`.
 */
export async function startCaptchaStandIn({ secret, token }) {
  const script = `(() => {
  const TOKEN = ${JSON.stringify(token)};
  const boxes = [];
  const me = document.currentScript ? new URL(document.currentScript.src) : null;
  const onload = me ? me.searchParams.get("onload") : null;
  window.grecaptcha = {
    render(container, params) {
      const id = boxes.length;
      const root = document.createElement("div");
      root.className = "stand-in-recaptcha";
      root.dataset.sitekey = params.sitekey;
      const box = document.createElement("input");
      box.type = "checkbox";
      box.id = "stand-in-recaptcha-" + id;
      const label = document.createElement("label");
      label.htmlFor = box.id;
      label.textContent = "I'm not a robot";
      box.addEventListener("change", () => {
        if (box.checked && typeof params.callback === "function") params.callback(TOKEN);
      });
      root.append(box, label);
      container.appendChild(root);
      boxes.push(box);
      return id;
    },
    getResponse(id = 0) {
      return boxes[id] && boxes[id].checked ? TOKEN : "";
    },
    reset(id = 0) {
      if (boxes[id]) boxes[id].checked = false;
    },
  };
  if (onload && typeof window[onload] === "function") setTimeout(() => window[onload](), 0);
})();
`;
  const standIn = {
    accept: true,
    verifications: [],
    scriptUrl: "",
    verifyUrl: "",
    origin: "",
    close: () =>
      new Promise((resolve) => {
        srv.close(() => resolve());
        srv.closeAllConnections(); // kept-alive sockets (the browser's, the server's client)
      }),
  };
  const srv = http.createServer((req, res) => {
    const url = new URL(req.url, "http://127.0.0.1");
    if (req.method === "GET" && url.pathname === "/recaptcha/api.js") {
      res.writeHead(200, { "Content-Type": "text/javascript; charset=utf-8", "Cache-Control": "no-store" });
      res.end(script);
      return;
    }
    if (req.method === "POST" && url.pathname === "/recaptcha/api/siteverify") {
      let body = "";
      req.setEncoding("utf8");
      req.on("data", (chunk) => (body += chunk));
      req.on("end", () => {
        const form = Object.fromEntries(new URLSearchParams(body));
        standIn.verifications.push(form);
        const success = standIn.accept && form.secret === secret && form.response === token;
        res.writeHead(200, { "Content-Type": "application/json" });
        res.end(JSON.stringify(success ? { success, hostname: "127.0.0.1" } : { success, "error-codes": ["invalid-input-response"] }));
      });
      return;
    }
    res.writeHead(404, { "Content-Type": "text/plain" });
    res.end("not found");
  });
  await new Promise((resolve, reject) => {
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", resolve);
  });
  standIn.origin = `http://127.0.0.1:${srv.address().port}`;
  standIn.scriptUrl = standIn.origin + "/recaptcha/api.js";
  standIn.verifyUrl = standIn.origin + "/recaptcha/api/siteverify";
  return standIn;
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
