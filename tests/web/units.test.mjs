// Browser-free checks of the cabinet's modules under node: money and date formatting, the
// client-side IIN/BIN rule against CABINET.md §1 vectors, and the dictionaries (every key the
// code uses exists, and Kazakh and English have every Russian key).

import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const web = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "control", "web");
const i18n = await import(path.join(web, "i18n.js"));
const format = await import(path.join(web, "format.js"));

test("money is tenge from integer tiyn with thousands separators and the ₸ sign", () => {
  i18n.setLang("ru");
  const ws = /[\s\u00a0\u202f]/.source;
  assert.match(format.money(142500), new RegExp(`^1${ws}425${ws}₸$`));
  assert.match(format.money(150000), new RegExp(`^1${ws}500${ws}₸$`));
  assert.match(format.money(-150000), new RegExp(`^−1${ws}500${ws}₸$`));
  assert.match(format.money(123456789), new RegExp(`^1${ws}234${ws}567,89${ws}₸$`));
  assert.match(format.money(5), new RegExp(`^0,05${ws}₸$`));
  assert.match(format.money(0), new RegExp(`^0${ws}₸$`));
  assert.equal(format.money(undefined), "—");
  i18n.setLang("kk");
  assert.match(format.money(123456789), new RegExp(`^1${ws}234${ws}567,89${ws}₸$`));
  i18n.setLang("en");
  assert.match(format.money(123456789), new RegExp(`^1,234,567\\.89${ws}₸$`));
  i18n.setLang("ru");
});

test("dates are dd.mm.yyyy; timestamps are shown in Asia/Almaty, bare dates are not shifted", () => {
  assert.equal(format.date("2026-11-24"), "24.11.2026");
  // 20:30 UTC is already the next day in Almaty (UTC+5).
  assert.equal(format.date("2026-11-24T20:30:00Z"), "25.11.2026");
  assert.equal(format.date("2026-11-24T18:59:59+00:00"), "24.11.2026");
  assert.equal(format.date("2026-01-01T00:30:00+05:00"), "01.01.2026");
  assert.equal(format.date(""), "—");
});

test("DNS filter figures: counts with thousands separators, shares, Almaty times, day labels", () => {
  const ws = /[\s\u00a0\u202f]/.source;
  i18n.setLang("ru");
  assert.match(format.count(51234), new RegExp(`^51${ws}234$`));
  assert.match(format.count(1234567), new RegExp(`^1${ws}234${ws}567$`));
  assert.equal(format.count(0), "0");
  assert.match(format.percent(20, 100), new RegExp(`^20${ws}%$`));
  assert.match(format.percent(1, 8), new RegExp(`^12,5${ws}%$`));
  assert.equal(format.percent(0, 0), "—", "no share of nothing");
  i18n.setLang("kk");
  assert.match(format.count(51234), new RegExp(`^51${ws}234$`));
  i18n.setLang("en");
  assert.equal(format.count(51234), "51,234");
  assert.equal(format.percent(1, 8), "12.5%");
  i18n.setLang("ru");
  // 10:00 UTC is 15:00 in Almaty (UTC+5); 20:30 UTC is already the next day there.
  assert.equal(format.dateTime("2026-12-02T10:00:00Z"), "02.12.2026 15:00");
  assert.equal(format.dateTime("2026-11-24T20:30:00Z"), "25.11.2026 01:30");
  assert.equal(format.dateTime("2026-01-01T00:05:00+05:00"), "01.01.2026 00:05");
  assert.equal(format.dateTime(null), "—");
  assert.equal(format.dayMonth("2026-12-02"), "02.12");
});

test("the IIN/BIN check mirrors CABINET.md §1: exactly 12 digits and the two-pass check digit", () => {
  for (const ok of ["940140000385", "990140004654", "871008401427", "061211600012", "900101300811", "961141000023"]) {
    assert.equal(format.iinProblem(ok), null, ok);
  }
  assert.equal(format.iinProblem("940140000386"), "v.iin_check");
  assert.equal(format.iinProblem("871008401428"), "v.iin_check");
  assert.equal(format.iinProblem("821214240092"), "v.iin_check", "both passes give 10");
  assert.equal(format.iinProblem("87100840142"), "v.iin_len");
  assert.equal(format.iinProblem("8710084014270"), "v.iin_len", "more than 12 is wrong too");
  assert.equal(format.iinProblem("8710 0840-1427"), null, "spaces and dashes are ignored");
});

test("phones follow the KZ mobile pattern", () => {
  for (const ok of ["+7 701 234 56 78", "87012345678", "7 (747) 123-45-67"]) assert.ok(format.phoneOk(ok), ok);
  for (const bad of ["+7 727 237 77 77", "+7 900 123 45 67", "12345"]) assert.ok(!format.phoneOk(bad), bad);
});

test("every dictionary key used by the page exists, in all three languages", () => {
  const ru = Object.keys(i18n.DICTS.ru);
  for (const code of ["kk", "en"]) {
    const keys = Object.keys(i18n.DICTS[code]);
    assert.deepEqual(ru.filter((k) => !keys.includes(k)), [], `${code} lacks keys`);
    assert.deepEqual(keys.filter((k) => !ru.includes(k)), [], `${code} has extra keys`);
    for (const k of keys) assert.ok(i18n.DICTS[code][k].trim(), `${code}.${k} is empty`);
  }
  const used = new Set();
  for (const f of fs.readdirSync(web).filter((f) => f.endsWith(".js") && f !== "i18n.js")) {
    const src = fs.readFileSync(path.join(web, f), "utf8");
    // t("key"), and the option keys that field()/checkbox() pass to t(): label, placeholder, hint.
    for (const m of src.matchAll(/\bt\("([a-z0-9_.]+)"/g)) used.add(m[1]);
    for (const m of src.matchAll(/\b(?:label|placeholder|hint): "([a-z0-9_.]+)"/g)) used.add(m[1]);
    for (const m of src.matchAll(/checkbox\("[a-z_]+", "([a-z0-9_.]+)"/g)) used.add(m[1]);
    for (const m of src.matchAll(/(?:gated\("[^"]+", |header\()"([a-z0-9_.]+)"(?:, "([a-z0-9_.]+)")?/g)) {
      used.add(m[1]);
      if (m[2]) used.add(m[2]);
    }
  }
  assert.ok(used.size > 100, `found ${used.size} keys: the scan works`);
  assert.deepEqual([...used].filter((k) => !k.endsWith(".") && !ru.includes(k)), []);
});

test("the markup holds no visible text: every word comes from the dictionaries", () => {
  const html = fs.readFileSync(path.join(web, "index.html"), "utf8");
  const body = html.slice(html.indexOf("<body>"));
  assert.equal(body.replace(/<[^>]*>/g, "").trim(), "");
});
