// Seed 5.2.5 «DNS-фильтрация»: the account's filter settings (on/off, categories, the block mode
// and the block page's address), its own block and allow lists (plain text, one rule a line, any
// supported list syntax, with the server's verdict on each rejected line), the networks the
// provider maps to the account, the statistics of a period (totals, a bar chart by day, blocks by
// category, the most blocked names) and the log of changes, over /api/v1/dns-filter*.

import { api, apiText } from "./api.js";
import { t } from "./i18n.js";
import { h, svg, mount, field, notice, wireForm, errorText, nextId } from "./dom.js";
import { count, percent, date, dateTime, dayMonth } from "./format.js";
import { gated, table, fill, periodForm, word } from "./sections.js";

const MODES = ["nxdomain", "null_ip", "refused", "custom_ip"];

/** The two own lists: their API path and dictionary keys. */
const LISTS = {
  blocklist: { label: "dnsf.blocklist", placeholder: "dnsf.blocklist_ph", save: "dnsf.save_blocklist", rulesKey: "blocklist_rules" },
  allowlist: { label: "dnsf.allowlist", placeholder: "dnsf.allowlist_ph", save: "dnsf.save_allowlist", rulesKey: "allowlist_rules" },
};

/** At most this many rejected lines are listed (the count says how many more). */
const REJECTED_SHOWN = 100;

/** At most this many day labels under the chart, so that they never overlap on a phone. */
const DAY_LABELS = 10;

export function view() {
  return gated("/dns-filter", "sec.dns.title", "sec.dns.intro", () => {
    const settings = api("GET", "/dns-filter");
    const audit = auditPanel();
    const changed = () => audit.reload();
    const syntaxId = nextId("list-syntax");
    return h(
      "div",
      { class: "dns" },
      settingsPanel(settings, changed),
      h(
        "section",
        { class: "panel", "data-part": "lists" },
        h("h2", {}, t("dnsf.lists")),
        h("p", { class: "muted small" }, t("dnsf.lists_hint")),
        h("p", { class: "muted small", id: syntaxId }, t("dnsf.list_hint")),
        h("div", { class: "grid-2 dns-lists" }, listForm("blocklist", settings, syntaxId, changed), listForm("allowlist", settings, syntaxId, changed)),
      ),
      networksPanel(),
      statsPanel(),
      audit.el,
    );
  });
}

// ------------------------------------------------------------------ settings

function settingsPanel(settings, onSaved) {
  const body = h("div", {}, h("p", { class: "loading" }, t("app.loading")));
  Promise.all([settings, api("GET", "/dns-filter/categories")])
    .then(([current, catalog]) => mount(body, settingsForm(current, (catalog && catalog.categories) || [], onSaved)))
    .catch((err) => mount(body, notice("error", errorText(err))));
  return h("section", { class: "panel", "data-part": "settings" }, h("h2", {}, t("dnsf.settings")), body);
}

function settingsForm(current, catalog, onSaved) {
  const msg = h("div", { class: "form-box", tabindex: "-1" });

  // On/off: a checkbox announced as a switch (Space toggles it).
  const enabledId = nextId("dns-enabled");
  const enabled = h("input", { type: "checkbox", role: "switch", class: "switch", id: enabledId, name: "enabled", checked: !!current.enabled, "aria-describedby": enabledId + "-hint" });
  const enabledRow = h(
    "div",
    { class: "switch-row", "data-field": "enabled" },
    h("div", { class: "check" }, enabled, h("label", { for: enabledId }, t("dnsf.enabled"))),
    h("p", { class: "hint", id: enabledId + "-hint" }, t("dnsf.enabled_hint")),
  );

  // Categories: one checkbox each, with the size of its lists.
  const chosen = new Set(current.categories || []);
  const boxes = catalog.map((c) => {
    const id = nextId("cat-" + c.name);
    const input = h("input", { type: "checkbox", id, name: "categories", value: c.name, checked: chosen.has(c.name) });
    const sizes = [t("dnsf.cat_domains", { n: count(c.domains) })];
    if (c.patterns) sizes.push(t("dnsf.cat_patterns", { n: count(c.patterns) }));
    const el = h(
      "div",
      { class: "check cat", "data-category": c.name },
      input,
      h("label", { for: id }, h("span", { class: "cat-name" }, word("dnsf.cat.", c.name)), h("span", { class: "cat-size" }, sizes.join(", "))),
    );
    return { input, el };
  });
  const cats = h(
    "fieldset",
    { class: "fieldset field cats", "data-field": "categories" },
    h("legend", {}, t("dnsf.categories")),
    boxes.length ? h("div", { class: "cat-list" }, boxes.map((b) => b.el)) : h("p", { class: "empty" }, t("dnsf.no_categories")),
    h("p", { class: "field-error", role: "alert", hidden: true }),
  );

  // The block mode, with what it does, and the block page's address for custom_ip.
  const modeId = nextId("dns-mode");
  const modeHint = h("p", { class: "hint", id: modeId + "-hint" });
  const mode = h(
    "select",
    { id: modeId, name: "block_mode", "aria-describedby": `${modeId}-hint ${modeId}-err` },
    MODES.map((m) => h("option", { value: m, selected: m === current.block_mode }, t("dnsf.mode." + m))),
  );
  const modeField = h(
    "div",
    { class: "field", "data-field": "block_mode" },
    h("label", { for: modeId }, t("dnsf.block_mode")),
    mode,
    h("p", { class: "field-error", id: modeId + "-err", role: "alert", hidden: true }),
    modeHint,
  );
  const ip = field({
    name: "custom_ip",
    label: "dnsf.custom_ip",
    placeholder: "dnsf.custom_ip_ph",
    hint: "dnsf.custom_ip_hint",
    autocomplete: "off",
    required: true,
    value: (current.custom_ip || []).join(", "),
  });
  const sync = () => {
    modeHint.textContent = t("dnsf.mode_hint." + mode.value);
    ip.hidden = mode.value !== "custom_ip";
  };
  mode.addEventListener("change", sync);
  sync();

  const stamp = h("p", { class: "muted small", "data-updated": "" });
  const showStamp = (s) => mount(stamp, s && s.updated_at ? t("dnsf.updated", { when: dateTime(s.updated_at) }) : null);
  showStamp(current);

  const form = h(
    "form",
    { class: "form", "data-form": "settings" },
    msg,
    enabledRow,
    cats,
    h("div", { class: "grid-2" }, modeField, ip),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "btn btn-primary" }, t("dnsf.save"))),
    stamp,
  );
  wireForm(form, {
    box: msg,
    submit: async () => {
      const body = {
        enabled: enabled.checked,
        categories: boxes.filter((b) => b.input.checked).map((b) => b.input.value),
        block_mode: mode.value,
      };
      // The address goes only with the mode that uses it: a hidden field never blocks a save.
      if (mode.value === "custom_ip") body.custom_ip = ip.input.value.split(/[\s,;]+/).filter(Boolean);
      const saved = await api("PUT", "/dns-filter", body);
      showStamp(saved);
      mount(msg, notice("success", t("dnsf.saved")));
      msg.focus();
      onSaved();
    },
  });
  return form;
}

// ------------------------------------------------------------------ own lists

function listForm(kind, settings, syntaxId, onSaved) {
  const keys = LISTS[kind];
  const resultId = nextId("list-result");
  const msg = h("div", { class: "form-box list-result", id: resultId, tabindex: "-1" });
  const text = field({ tag: "textarea", name: kind, label: keys.label, placeholder: keys.placeholder });
  const area = text.input;
  area.classList.add("list-text");
  area.rows = 10;
  area.spellcheck = false;
  area.setAttribute("autocapitalize", "off");
  area.setAttribute("wrap", "off");
  area.setAttribute("aria-describedby", `${syntaxId} ${area.getAttribute("aria-describedby")} ${resultId}`);
  area.disabled = true;
  const rules = h("p", { class: "muted small", "data-rules": kind });
  const showRules = (n) => mount(rules, typeof n === "number" ? t("dnsf.rules_now", { n: count(n) }) : null);

  settings.then((s) => showRules(s && s[keys.rulesKey])).catch(() => {});
  apiText("GET", `/dns-filter/${kind}`)
    .then((body) => {
      area.value = typeof body === "string" ? body : "";
    })
    .catch((err) => mount(msg, notice("error", errorText(err))))
    .finally(() => {
      area.disabled = false;
    });

  const form = h(
    "form",
    { class: "form", "data-form": kind },
    text,
    rules,
    msg,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "btn btn-primary" }, t(keys.save))),
  );
  wireForm(form, {
    box: msg,
    submit: async () => {
      const res = await apiText("PUT", `/dns-filter/${kind}`, area.value);
      const saved = res && typeof res.rules === "number" ? res.rules : 0;
      const rejected = (res && Array.isArray(res.rejected) && res.rejected) || [];
      // The server lists the first rejected lines and counts them all.
      const total = res && typeof res.rejected_count === "number" ? Math.max(res.rejected_count, rejected.length) : rejected.length;
      mount(msg, notice("success", t("dnsf.rules_saved", { n: count(saved) })), total ? rejectedList(rejected, total, area) : null);
      showRules(saved);
      msg.focus();
      onSaved();
    },
  });
  return form;
}

/** The lines the server did not take: line number (a button that selects the line in the
 * textarea), the text and the reason. */
function rejectedList(rows, total, area) {
  const shown = rows.slice(0, REJECTED_SHOWN);
  return h(
    "div",
    { class: "rejected", "data-rejected": total },
    h("p", { class: "rejected-title" }, t("dnsf.rejected", { n: count(total) })),
    h(
      "ul",
      {},
      shown.map((r) =>
        h(
          "li",
          { "data-line": r.line },
          h("button", { type: "button", class: "linkish line-no", onclick: () => selectLine(area, r.line) }, t("dnsf.line", { n: r.line })),
          " ",
          h("code", {}, r.text),
          " — ",
          h("span", { class: "reason" }, r.reason),
        ),
      ),
    ),
    total > shown.length ? h("p", { class: "muted small" }, t("dnsf.rejected_more", { n: count(total - shown.length) })) : null,
  );
}

/** Focuses the textarea with its line `n` (1-based) selected. */
function selectLine(area, n) {
  const lines = area.value.split("\n");
  area.focus();
  if (!(n >= 1 && n <= lines.length)) return;
  let start = 0;
  for (let i = 0; i < n - 1; i++) start += lines[i].length + 1;
  area.setSelectionRange(start, start + lines[n - 1].length);
}

// ------------------------------------------------------------------ networks

function networksPanel() {
  const body = h("div", {});
  fill(body, "/dns-filter/networks", (data) =>
    table((data && data.networks) || [], [
      { label: "dnsf.col_network", value: (r) => h("code", {}, r.cidr) },
      { label: "dnsf.col_added", value: (r) => date(r.created_at) },
    ], "dnsf.no_networks"),
  );
  return h("section", { class: "panel", "data-part": "networks" }, h("h2", {}, t("dnsf.networks")), h("p", { class: "muted small" }, t("dnsf.networks_hint")), body);
}

// ------------------------------------------------------------------ statistics

function statsPanel() {
  const body = h("div", { class: "dns-stats" });
  const load = (query) => fill(body, "/dns-filter/stats" + query, statsView);
  // The last 7 days, today included (Asia/Almaty).
  const period = periodForm(load, { days: 6 });
  load(period.query());
  return h("section", { class: "panel", "data-part": "stats" }, h("h2", {}, t("dnsf.stats")), period.form, body);
}

function statsView(s) {
  const blocked = s.blocked || 0;
  return h(
    "div",
    {},
    h(
      "dl",
      { class: "kv kv-3 totals" },
      h("div", { "data-total": "queries" }, h("dt", {}, t("dnsf.queries")), h("dd", {}, count(s.queries || 0))),
      h("div", { "data-total": "blocked" }, h("dt", {}, t("dnsf.blocked")), h("dd", {}, count(blocked))),
      h("div", { "data-total": "share" }, h("dt", {}, t("dnsf.share")), h("dd", {}, percent(blocked, s.queries || 0))),
    ),
    chart(s.days || []),
    h(
      "div",
      { class: "grid-2" },
      h(
        "div",
        { "data-part": "by-category" },
        h("h3", {}, t("dnsf.by_category")),
        table(s.by_category || [], [
          { label: "dnsf.col_category", value: (r) => word("dnsf.cat.", r.category) },
          { label: "dnsf.col_blocked", value: (r) => count(r.blocked), num: true },
          { label: "dnsf.col_share", value: (r) => percent(r.blocked, blocked), num: true },
        ], "dnsf.none_blocked"),
      ),
      h(
        "div",
        { "data-part": "top-blocked" },
        h("h3", {}, t("dnsf.top_blocked")),
        table(s.top_blocked || [], [
          { label: "dnsf.col_domain", value: (r) => h("code", { class: "domain" }, r.domain) },
          { label: "dnsf.col_count", value: (r) => count(r.count), num: true },
        ], "dnsf.none_blocked"),
      ),
    ),
  );
}

/** Queries and blocked names by day: one small SVG a day (its bars' geometry in attributes, so
 * nothing needs an inline style), day labels as text under it, and the same figures as a table
 * for screen readers and keyboard users. */
function chart(days) {
  if (!days.length) return null;
  const max = Math.max(1, ...days.map((d) => d.queries || 0));
  const every = Math.ceil(days.length / DAY_LABELS);
  // Past a month the bars touch (each keeps a margin inside its own box).
  const dense = days.length > 31;
  const height = (n) => (n > 0 ? Math.max(1, Math.round((n / max) * 1000) / 10) : 0);
  const bar = (d) => {
    const q = height(d.queries || 0);
    const b = height(d.blocked || 0);
    const title = t("dnsf.bar_title", { day: date(d.date), queries: count(d.queries || 0), blocked: count(d.blocked || 0) });
    return h(
      "div",
      { class: "chart-bar", "data-date": d.date },
      svg(
        "svg",
        { viewBox: "0 0 10 100", preserveAspectRatio: "none" },
        svg("title", {}, title),
        svg("rect", { class: "bar-queries", x: 1, y: 100 - q, width: 8, height: q }),
        svg("rect", { class: "bar-blocked", x: 1, y: 100 - b, width: 8, height: b }),
      ),
    );
  };
  // The labels count back from the last day, so that the newest one is always named.
  const label = (d, i) => h("div", { class: "chart-label" }, (days.length - 1 - i) % every === 0 ? dayMonth(d.date) : "");
  return h(
    "figure",
    { class: "chart" },
    h("figcaption", { class: "chart-head" }, h("span", { class: "strong" }, t("dnsf.chart")), legend()),
    h(
      "div",
      { class: "chart-plot", "aria-hidden": "true" },
      h("span", { class: "chart-max" }, count(max)),
      h("div", { class: dense ? "chart-bars dense" : "chart-bars" }, days.map(bar)),
      h("div", { class: dense ? "chart-labels dense" : "chart-labels" }, days.map(label)),
    ),
    h(
      "details",
      { class: "chart-table" },
      h("summary", {}, t("dnsf.by_day_table")),
      table(days, [
        { label: "dnsf.col_day", value: (r) => date(r.date) },
        { label: "dnsf.col_queries", value: (r) => count(r.queries || 0), num: true },
        { label: "dnsf.col_blocked", value: (r) => count(r.blocked || 0), num: true },
      ]),
    ),
  );
}

function legend() {
  return h(
    "span",
    { class: "legend" },
    h("span", {}, h("span", { class: "swatch swatch-queries", "aria-hidden": "true" }), t("dnsf.legend_queries")),
    h("span", {}, h("span", { class: "swatch swatch-blocked", "aria-hidden": "true" }), t("dnsf.legend_blocked")),
  );
}

// ------------------------------------------------------------------ audit log

function auditPanel() {
  const body = h("div", {});
  const reload = () =>
    fill(body, "/dns-filter/audit", (data) =>
      table((data && data.entries) || [], [
        { label: "dnsf.col_when", value: (r) => dateTime(r.at) },
        { label: "dnsf.col_who", value: (r) => r.user || "—" },
        { label: "dnsf.col_what", value: (r) => word("dnsf.action.", r.action) },
        { label: "dnsf.col_details", value: (r) => r.summary || "—" },
      ], "dnsf.no_audit"),
    );
  reload();
  return { el: h("section", { class: "panel", "data-part": "audit" }, h("h2", {}, t("dnsf.audit")), body), reload };
}
