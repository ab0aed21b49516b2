// Small DOM helpers. Text always goes in as text nodes (never parsed as markup), so data from
// the API cannot inject anything; attributes are set one by one.

import { t, has, lang } from "./i18n.js";

let uid = 0;

const SPECIFIC = new Set([
  "invalid_iin_bin",
  "invalid_phone",
  "invalid_email",
  "invalid_contract_number",
  "weak_password",
  "too_long",
]);

/** Creates an element: h("button", {class: "btn", onclick: fn, type: "submit"}, "text", child). */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") {
      el.addEventListener(k.slice(2), v);
    } else if (k === "class") {
      el.className = v;
    } else if (v === true) {
      el.setAttribute(k, "");
    } else {
      el.setAttribute(k, String(v));
    }
  }
  append(el, children);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** Creates an SVG element (attributes only, no handlers): svg("rect", {x: 0, height: 40}).
 * Geometry goes in attributes, never in a style, so the CSP's style-src stays strict. */
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** Replaces an element's children. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A unique id for label/input pairs. */
export function nextId(prefix) {
  uid += 1;
  return `${prefix}-${uid}`;
}

/** The text for an API error: the dictionary's, in the current language, else the server's. */
export function errorText(err) {
  if (!err) return t("app.error_generic");
  if (err.code === "network") return t("app.error_network");
  if (err.code === "too_many_requests") return t("app.retry_after", { secs: err.retryAfter || 60 });
  if (has("err." + err.code)) {
    // For these the server's Russian text is the more specific one (it says which rule failed).
    if (lang() === "ru" && err.message && SPECIFIC.has(err.code)) {
      return err.message.charAt(0).toUpperCase() + err.message.slice(1);
    }
    return t("err." + err.code);
  }
  if (err.status >= 500 || !err.message) return t("app.error_generic");
  return err.message;
}

/**
 * A labelled form field with an error slot under it:
 * field({name, label, type, required, placeholder, hint, autocomplete, value, inputmode}).
 * Returns the wrapper; `.input` is the control.
 */
export function field(opts) {
  const id = nextId("f-" + opts.name);
  const errId = id + "-err";
  const hintId = id + "-hint";
  const input = h(opts.tag || "input", {
    id,
    name: opts.name,
    type: opts.tag ? null : opts.type || "text",
    required: !!opts.required,
    placeholder: opts.placeholder ? t(opts.placeholder) : null,
    autocomplete: opts.autocomplete || null,
    inputmode: opts.inputmode || null,
    maxlength: opts.maxlength || null,
    readonly: !!opts.readonly,
    "aria-describedby": [opts.hint ? hintId : "", errId].join(" ").trim(),
  });
  if (opts.value !== undefined && opts.value !== null) input.value = opts.value;
  const wrap = h(
    "div",
    { class: "field", "data-field": opts.name },
    // The star sits beside the label, not in it: the control's name stays the bare label.
    h("div", { class: "label-row" }, h("label", { for: id }, t(opts.label)), opts.required ? h("span", { class: "req", "aria-hidden": "true" }, "*") : null),
    input,
    h("p", { class: "field-error", id: errId, role: "alert", hidden: true }),
    opts.hint ? h("p", { class: "hint", id: hintId }, t(opts.hint)) : null,
    opts.after || null,
  );
  wrap.input = input;
  return wrap;
}

/** A checkbox with its label. */
export function checkbox(name, label, checked) {
  const id = nextId("c-" + name);
  const input = h("input", { type: "checkbox", id, name, checked: !!checked });
  const wrap = h("div", { class: "check", "data-field": name }, input, h("label", { for: id }, t(label)));
  wrap.input = input;
  return wrap;
}

/** A form-level message box (errors and successes), announced to screen readers. */
export function notice(kind, text) {
  return h("div", { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

/**
 * Wires a form: clears errors, runs `validate` (returns {field: key} of client-side problems),
 * then `submit` (async). An ApiError with a `field` that the form has is shown under that
 * field; any other error in the form's message box.
 */
export function wireForm(form, { validate, submit, box }) {
  form.noValidate = true;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(form, box);
    const problems = validate ? validate() : {};
    const names = Object.keys(problems).filter((k) => problems[k]);
    if (names.length) {
      for (const n of names) showFieldError(form, n, t(problems[n]));
      focusField(form, names[0]);
      return;
    }
    const button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    form.setAttribute("aria-busy", "true");
    try {
      await submit();
    } catch (err) {
      if (err && err.field && form.querySelector(`[data-field="${cssEscape(err.field)}"]`)) {
        showFieldError(form, err.field, errorText(err));
        focusField(form, err.field);
      } else if (box) {
        mount(box, notice("error", errorText(err)));
        box.focus();
      }
    } finally {
      if (button) button.disabled = false;
      form.removeAttribute("aria-busy");
    }
  });
}

function cssEscape(s) {
  return String(s).replace(/[^a-zA-Z0-9_-]/g, "");
}

export function clearErrors(form, box) {
  for (const p of form.querySelectorAll(".field-error")) {
    p.hidden = true;
    p.textContent = "";
  }
  for (const i of form.querySelectorAll("[aria-invalid]")) i.removeAttribute("aria-invalid");
  for (const f of form.querySelectorAll(".field.has-error")) f.classList.remove("has-error");
  if (box) box.replaceChildren();
}

export function showFieldError(form, name, text) {
  const wrap = form.querySelector(`[data-field="${cssEscape(name)}"]`);
  if (!wrap) return;
  wrap.classList.add("has-error");
  const p = wrap.querySelector(".field-error");
  if (p) {
    p.textContent = text;
    p.hidden = false;
  }
  const input = wrap.querySelector("input, select, textarea");
  if (input) input.setAttribute("aria-invalid", "true");
}

function focusField(form, name) {
  const sel = `[data-field="${cssEscape(name)}"]`;
  const input = form.querySelector(`${sel} input, ${sel} select, ${sel} textarea`);
  if (input) input.focus();
}
