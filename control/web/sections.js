// The sections of seed 5.2.1–5.2.4 and 5.2.6 (Услуги, Подключение услуг, Запросы, История
// платежей, Счета-фактуры, Пополнение баланса) and the helpers the sections share (5.2.5
// DNS-фильтрация lives in dnsfilter.js). Each asks the server's OpenAPI document whether its
// endpoint exists: when it does not (that part of the API has not landed on this server), the
// section says it is coming instead of showing anything invented; when it does, the section
// shows the API's own data.

import { api, offers } from "./api.js";
import { t, has } from "./i18n.js";
import { h, mount, field, notice, wireForm, errorText } from "./dom.js";
import { money, date, todayIso, bytes } from "./format.js";

function header(titleKey, introKey) {
  return h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, t(titleKey)), h("p", { class: "muted" }, t(introKey)));
}

function soon() {
  return h(
    "section",
    { class: "panel soon", "data-state": "soon" },
    h("span", { class: "icon icon-clock", "aria-hidden": "true" }),
    h("div", {}, h("h2", {}, t("sec.soon.title")), h("p", { class: "muted" }, t("sec.soon.text"))),
  );
}

/** Renders `build()` when the server offers `path`, else the "coming soon" panel. */
export function gated(path, titleKey, introKey, build) {
  const holder = h("div", {}, h("p", { class: "loading" }, t("app.loading")));
  offers(path).then((yes) => mount(holder, yes ? build() : soon()));
  return h("div", { "data-section": path }, header(titleKey, introKey), holder);
}

/** A table from column specs [{label, value(row), num?}] (labels are dictionary keys). */
export function table(rows, cols, emptyKey = "sec.empty") {
  if (!rows.length) return h("p", { class: "empty" }, t(emptyKey));
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "table stack" },
      h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, t(c.label))))),
      h("tbody", {}, rows.map((r) => h("tr", { "data-id": r.id ?? null }, cols.map((c) => h("td", { "data-label": t(c.label), class: c.num ? "num" : null }, c.value(r)))))),
    ),
  );
}

/** A dictionary word for an enum value, else the value itself. */
export function word(prefix, value) {
  return has(prefix + value) ? t(prefix + value) : String(value ?? "—");
}

/** A from/to period form (inclusive ISO dates) that calls `onPeriod(query)`; extra controls
 * (e.g. a kind select) go before the button. */
export function periodForm(onPeriod, { days = 90, extra = null, extraQuery = null } = {}) {
  const from = field({ name: "from", label: "sec.period_from", type: "date", value: todayIso(-days) });
  const to = field({ name: "to", label: "sec.period_to", type: "date", value: todayIso() });
  const msg = h("div", { class: "form-box" });
  const form = h("form", { class: "filters" }, from, to, extra, h("div", { class: "field field-button" }, h("button", { type: "submit", class: "btn btn-primary" }, t("sec.show"))), msg);
  const query = () => {
    const q = new URLSearchParams({ from: from.input.value, to: to.input.value });
    if (extraQuery) extraQuery(q);
    return "?" + q.toString();
  };
  wireForm(form, {
    box: msg,
    validate: () => ({
      from: !from.input.value ? "v.required" : from.input.value > to.input.value ? "v.period" : null,
      to: to.input.value ? null : "v.required",
    }),
    submit: () => onPeriod(query()),
  });
  return { form, query, from, to };
}

/** Loads `path` into `out` through `render(data)`, errors shown in place. */
export async function fill(out, path, render) {
  mount(out, h("p", { class: "loading" }, t("app.loading")));
  try {
    mount(out, render(await api("GET", path)));
  } catch (err) {
    mount(out, notice("error", errorText(err)));
  }
}

// ------------------------------------------------------------------ 5.2.1 Услуги

/** «Ваши услуги»: the list; choosing one shows its usage for a period and the disconnect request. */
export function services(ctx) {
  return gated("/services", "sec.services.title", "sec.services.intro", () => {
    const list = h("section", { class: "panel" }, h("p", { class: "loading" }, t("app.loading")));
    const detail = h("div", {});
    const show = (svc) => mount(detail, serviceDetail(ctx, svc, reload));
    const reload = () =>
      fill(list, "/services", (rows) =>
        table(rows, [
          { label: "svc.col_name", value: (r) => h("button", { type: "button", class: "linkish", onclick: () => show(r), "aria-label": t("svc.details_of", { name: r.name }) }, r.name) },
          { label: "svc.col_kind", value: (r) => word("svc.kind.", r.kind) },
          { label: "svc.col_fee", value: (r) => money(r.monthly_fee_tiyn), num: true },
          { label: "svc.col_status", value: (r) => h("span", { class: `status status-${r.status}` }, word("svc.status.", r.status)) },
          { label: "svc.col_since", value: (r) => date(r.created_at) },
        ], "svc.empty"),
      );
    reload();
    return h("div", {}, list, detail);
  });
}

function serviceDetail(ctx, svc, reload) {
  const usage = h("div", {});
  const load = (query) =>
    fill(usage, `/services/${svc.id}/usage${query}`, (u) =>
      h(
        "div",
        {},
        h(
          "dl",
          { class: "kv kv-4" },
          h("div", {}, h("dt", {}, t("svc.usage_period")), h("dd", {}, `${date(u.from)} — ${date(u.to)}`)),
          h("div", {}, h("dt", {}, t("svc.usage_in")), h("dd", {}, bytes(u.bytes_in))),
          h("div", {}, h("dt", {}, t("svc.usage_out")), h("dd", {}, bytes(u.bytes_out))),
          h("div", {}, h("dt", {}, t("svc.usage_amount")), h("dd", {}, money(u.amount_tiyn))),
        ),
        table(u.records || [], [
          { label: "svc.usage_period", value: (r) => `${date(r.period_start)} — ${date(r.period_end)}` },
          { label: "svc.usage_desc", value: (r) => r.description || "—" },
          { label: "svc.usage_in", value: (r) => bytes(r.bytes_in), num: true },
          { label: "svc.usage_out", value: (r) => bytes(r.bytes_out), num: true },
          { label: "svc.usage_amount", value: (r) => money(r.amount_tiyn), num: true },
        ]),
      ),
    );
  const period = periodForm(load, { days: 30 });
  load(period.query());

  const msg = h("div", { class: "form-box", tabindex: "-1" });
  const comment = field({ name: "comment", label: "svc.disconnect_comment", maxlength: 500 });
  const disconnect = h("form", { class: "form" }, msg, comment, h("div", { class: "actions" }, h("button", { type: "submit", class: "btn btn-danger" }, t("svc.disconnect"))));
  wireForm(disconnect, {
    box: msg,
    submit: async () => {
      await api("POST", `/services/${svc.id}/disconnect-request`, { comment: comment.input.value.trim() || null });
      mount(disconnect, notice("success", t("svc.disconnect_done")));
      reload();
    },
  });
  return h(
    "section",
    { class: "panel", "data-service": svc.id },
    h("h2", { tabindex: "-1" }, t("svc.usage"), ": ", svc.name),
    period.form,
    usage,
    svc.status === "active" ? h("div", { class: "subpanel" }, h("h3", {}, t("svc.disconnect")), disconnect) : null,
  );
}

/** «Подключение услуг»: a connect request; the server adds the account number. */
export function connect(ctx) {
  return gated("/service-requests", "sec.connect.title", "sec.connect.intro", () => {
    const msg = h("div", { class: "form-box", tabindex: "-1" });
    const config = field({ name: "configuration", tag: "textarea", label: "conn.config", placeholder: "conn.config_ph", required: true, maxlength: 2000 });
    const form = h("form", { class: "form panel" }, msg, config, h("div", { class: "actions" }, h("button", { type: "submit", class: "btn btn-primary" }, t("conn.submit"))));
    const list = h("section", { class: "panel" });
    const reload = () => fill(list, "/service-requests", (rows) => h("div", {}, h("h2", {}, t("conn.list")), requestsTable(rows)));
    wireForm(form, {
      box: msg,
      validate: () => ({ configuration: config.input.value.trim() ? null : "v.required" }),
      submit: async () => {
        await api("POST", "/service-requests", { configuration: { description: config.input.value.trim() } });
        config.input.value = "";
        mount(msg, notice("success", t("conn.done", { account: ctx.me.account_number })));
        reload();
      },
    });
    reload();
    return h("div", {}, form, list);
  });
}

function requestsTable(rows) {
  return table(rows, [
    { label: "conn.col_date", value: (r) => date(r.created_at) },
    { label: "conn.col_kind", value: (r) => word("req.kind.", r.kind) },
    { label: "conn.col_text", value: (r) => (r.configuration && typeof r.configuration.description === "string" ? r.configuration.description : r.comment || "—") },
    { label: "conn.col_status", value: (r) => word("req.status.", r.status) },
  ]);
}

// ------------------------------------------------------------------ 5.2.2 Запросы

/** «Запросы»: detailed usage statistics for a period, sent to the registration email. */
export function requests(ctx) {
  return gated("/stats-requests", "sec.requests.title", "sec.requests.intro", () => {
    const msg = h("div", { class: "form-box", tabindex: "-1" });
    const select = h("select", { id: "stats-service", name: "service_id", required: true });
    const svcField = h("div", { class: "field", "data-field": "service_id" }, h("label", { for: "stats-service" }, t("stats.service")), select, h("p", { class: "field-error", role: "alert", hidden: true }));
    const list = h("section", { class: "panel" });
    const reload = () =>
      fill(list, "/stats-requests", (rows) =>
        h(
          "div",
          {},
          h("h2", {}, t("stats.list")),
          table(rows, [
            { label: "conn.col_date", value: (r) => date(r.created_at) },
            { label: "svc.usage_period", value: (r) => `${date(r.from)} — ${date(r.to)}` },
            { label: "stats.email", value: (r) => r.email_to },
            { label: "conn.col_status", value: (r) => word("stats.status.", r.status) },
          ]),
        ),
      );
    const period = periodForm(async (query) => {
      const q = new URLSearchParams(query.slice(1));
      await api("POST", "/stats-requests", { service_id: Number(select.value), from: q.get("from"), to: q.get("to") });
      mount(msg, notice("success", t("stats.done")));
      reload();
    }, { days: 30, extra: svcField });
    period.form.querySelector("button[type=submit]").textContent = t("stats.submit");
    api("GET", "/services")
      .then((rows) => {
        mount(select, rows.map((r) => h("option", { value: r.id }, r.name)));
        if (!rows.length) mount(msg, notice("error", t("svc.empty")));
      })
      .catch((err) => mount(msg, notice("error", errorText(err))));
    reload();
    return h("div", {}, h("section", { class: "panel" }, msg, period.form), list);
  });
}

// ------------------------------------------------------------------ 5.2.3 История платежей

export function payments() {
  return gated("/payments", "sec.payments.title", "sec.payments.intro", () => {
    const out = h("section", { class: "panel" });
    const load = (query) =>
      fill(out, "/payments" + query, (rows) =>
        table(rows, [
          { label: "pay.col_date", value: (r) => date(r.paid_at) },
          { label: "pay.col_amount", value: (r) => money(r.amount_tiyn), num: true },
          { label: "pay.col_source", value: (r) => word("pay.source.", r.source) },
          { label: "pay.col_desc", value: (r) => r.description || "—" },
          { label: "pay.col_ref", value: (r) => r.reference || "—" },
        ]),
      );
    const period = periodForm(load, { days: 365 });
    load(period.query());
    return h("div", {}, h("section", { class: "panel" }, period.form), out);
  });
}

// ------------------------------------------------------------------ 5.2.4 Счета-фактуры

const INVOICE_KINDS = ["notice", "invoice", "one_time", "correction"];

export function invoices() {
  return gated("/invoices", "sec.invoices.title", "sec.invoices.intro", () => {
    const out = h("section", { class: "panel" });
    const kind = h("select", { id: "invoice-kind", name: "kind" }, h("option", { value: "" }, t("sec.kind_all")), INVOICE_KINDS.map((k) => h("option", { value: k }, t("kind." + k))));
    const kindField = h("div", { class: "field", "data-field": "kind" }, h("label", { for: "invoice-kind" }, t("sec.kind")), kind);
    const load = (query) =>
      fill(out, "/invoices" + query, (rows) =>
        table(rows, [
          { label: "inv.col_number", value: (r) => r.number },
          { label: "inv.col_kind", value: (r) => word("kind.", r.kind) },
          { label: "inv.col_issued", value: (r) => date(r.issued_on) },
          { label: "inv.col_period", value: (r) => `${date(r.period_from)} — ${date(r.period_to)}` },
          { label: "inv.col_amount", value: (r) => money(r.amount_tiyn), num: true },
          {
            label: "inv.pdf",
            value: (r) =>
              /^\/(?!\/)/.test(r.pdf_url || "")
                ? h("a", { href: r.pdf_url, class: "btn btn-secondary btn-small", download: "", "aria-label": t("inv.pdf_label", { number: r.number }) }, "PDF")
                : "—",
          },
        ]),
      );
    const period = periodForm(load, { days: 365, extra: kindField, extraQuery: (q) => kind.value && q.set("kind", kind.value) });
    load(period.query());
    return h("div", {}, h("section", { class: "panel" }, period.form), out);
  });
}

// ------------------------------------------------------------------ 5.2.6 Пополнение баланса

/** An amount in tenge → POST /topups {amount_tiyn} → the gateway's payment page. */
export function topup() {
  return gated("/topups", "sec.topup.title", "sec.topup.intro", () => {
    const msg = h("div", { class: "form-box", tabindex: "-1" });
    const amount = field({ name: "amount_tiyn", label: "topup.amount", type: "text", inputmode: "decimal", required: true, placeholder: "topup.amount_ph", hint: "topup.note" });
    const form = h("form", { class: "form panel narrow" }, msg, amount, h("div", { class: "actions" }, h("button", { type: "submit", class: "btn btn-primary" }, t("topup.pay"))));
    const tiyn = () => {
      const m = /^(\d{1,9})(?:[.,](\d{1,2}))?$/.exec(amount.input.value.replace(/[\s\u00a0\u202f]/g, ""));
      return m ? Number(m[1]) * 100 + Number((m[2] || "0").padEnd(2, "0")) : null;
    };
    wireForm(form, {
      box: msg,
      validate: () => ({ amount_tiyn: tiyn() ? null : "topup.bad_amount" }),
      submit: async () => {
        const order = await api("POST", "/topups", { amount_tiyn: tiyn() });
        const url = order && typeof order.payment_url === "string" ? order.payment_url : "";
        // Only a page of this cabinet or an http(s) gateway: never a script URL.
        if (/^(https?:\/\/|\/(?!\/))/i.test(url)) location.assign(url);
        else mount(msg, notice("error", order && order.error ? order.error : t("app.error_generic")));
      },
    });
    return form;
  });
}
