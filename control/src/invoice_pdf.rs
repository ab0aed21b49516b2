//! Invoice PDFs (`GET /invoices/{id}/pdf`), written in Rust with an embedded font.
//!
//! Why this way: the customer's name, the labels and the service names are Cyrillic, and the
//! 14 standard PDF fonts have no Cyrillic glyphs. So the document embeds DejaVu Sans (Debian's
//! `fonts-dejavu-core`, Bitstream Vera licence, shipped in `control/assets/fonts/` with its
//! licence text), subset to the glyphs used, as a CID font (`Identity-H`) with a `ToUnicode`
//! map so that viewers, search and `pdftotext` get the text back.
//!
//! The layout is one or more A4 pages: the kind's Russian title with the number and date, the
//! parties (supplier, payer, account, contract — the number the registration form asks for —
//! and IIN/BIN), the period, a table of lines and the total.

use std::collections::BTreeMap;

use pdf_writer::types::{CidFontType, FontFlags, SystemInfo};
use pdf_writer::{Content, Filter, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

use crate::billing::Invoice;
use crate::error::ControlError;
use crate::money::format_tenge_human;

/// DejaVu Sans, regular (Debian fonts-dejavu-core 2.37).
const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

const PAGE_W: f32 = 595.0;
const PAGE_H: f32 = 842.0;
const MARGIN: f32 = 50.0;
const BOTTOM: f32 = 60.0;

/// The parties and references printed on the invoice besides the invoice record itself.
#[derive(Debug, Clone, Copy)]
pub struct InvoiceParties<'a> {
    /// The provider (supplier).
    pub supplier: &'a str,
    /// The payer: ФИО or the organisation.
    pub customer_name: &'a str,
    /// The account number (лицевой счёт).
    pub account_number: &'a str,
    /// The contract number as billing has it (ESF section E, item 27.3).
    pub contract_number: &'a str,
    /// The payer's IIN/BIN.
    pub iin_bin: &'a str,
}

/// A run of text at a position, before glyph encoding.
struct Run {
    page: usize,
    x: f32,
    y: f32,
    size: f32,
    text: String,
}

/// A horizontal rule.
struct Rule {
    page: usize,
    y: f32,
}

/// Lays out text in points with the font's advances.
struct Layout<'f> {
    face: &'f ttf_parser::Face<'f>,
    runs: Vec<Run>,
    rules: Vec<Rule>,
    page: usize,
    y: f32,
}

impl Layout<'_> {
    fn width(&self, text: &str, size: f32) -> f32 {
        let upem = f32::from(self.face.units_per_em().max(1));
        text.chars()
            .map(|c| {
                let g = self.face.glyph_index(c).unwrap_or(ttf_parser::GlyphId(0));
                f32::from(self.face.glyph_hor_advance(g).unwrap_or(0))
            })
            .sum::<f32>()
            * size
            / upem
    }

    /// Moves down by `h`, starting a new page when the bottom margin is reached.
    fn advance(&mut self, h: f32) {
        self.y -= h;
        if self.y < BOTTOM {
            self.page += 1;
            self.y = PAGE_H - MARGIN - h;
        }
    }

    fn text(&mut self, x: f32, size: f32, text: &str) {
        self.runs.push(Run {
            page: self.page,
            x,
            y: self.y,
            size,
            text: text.to_owned(),
        });
    }

    fn right(&mut self, right_edge: f32, size: f32, text: &str) {
        let w = self.width(text, size);
        self.text(right_edge - w, size, text);
    }

    fn rule(&mut self) {
        self.rules.push(Rule {
            page: self.page,
            y: self.y,
        });
    }

    /// Splits text into lines no wider than `max` (by words; a word longer than a line is cut).
    fn wrap(&self, text: &str, size: f32, max: f32) -> Vec<String> {
        let mut lines = Vec::new();
        let mut cur = String::new();
        for word in text.split_whitespace() {
            let candidate = if cur.is_empty() {
                word.to_owned()
            } else {
                format!("{cur} {word}")
            };
            if self.width(&candidate, size) <= max {
                cur = candidate;
                continue;
            }
            if !cur.is_empty() {
                lines.push(std::mem::take(&mut cur));
            }
            let mut piece = String::new();
            for c in word.chars() {
                piece.push(c);
                if self.width(&piece, size) > max {
                    piece.pop();
                    lines.push(std::mem::take(&mut piece));
                    piece.push(c);
                }
            }
            cur = piece;
        }
        if !cur.is_empty() || lines.is_empty() {
            lines.push(cur);
        }
        lines
    }
}

/// `2026-11-24` → `24.11.2026` (anything else is printed as it is).
fn ru_date(iso: &str) -> String {
    let parts: Vec<&str> = iso.split('-').collect();
    match parts.as_slice() {
        [y, m, d] => format!("{d}.{m}.{y}"),
        _ => iso.to_owned(),
    }
}

/// Renders the invoice as a PDF document.
pub fn render(invoice: &Invoice, parties: &InvoiceParties<'_>) -> Result<Vec<u8>, ControlError> {
    let face = ttf_parser::Face::parse(FONT, 0)
        .map_err(|e| ControlError::Pdf(format!("embedded font: {e}")))?;
    let mut l = Layout {
        face: &face,
        runs: Vec::new(),
        rules: Vec::new(),
        page: 0,
        y: PAGE_H - MARGIN,
    };
    let right = PAGE_W - MARGIN;
    let title = format!(
        "{} № {} от {}",
        invoice.kind.title(),
        invoice.number,
        ru_date(&invoice.issued_on)
    );
    for line in l.wrap(&title, 16.0, right - MARGIN) {
        l.advance(20.0);
        l.text(MARGIN, 16.0, &line);
    }
    if let Some(n) = &invoice.corrects_number {
        l.advance(16.0);
        l.text(MARGIN, 10.0, &format!("Исправляет счёт-фактуру № {n}"));
    }
    l.advance(10.0);
    let fields = [
        ("Поставщик", parties.supplier.to_owned()),
        ("Плательщик", parties.customer_name.to_owned()),
        ("ИИН/БИН", parties.iin_bin.to_owned()),
        ("Лицевой счёт", parties.account_number.to_owned()),
        (
            "Договор (раздел E, п. 27.3)",
            format!("№ {}", parties.contract_number),
        ),
        (
            "Период",
            format!(
                "с {} по {}",
                ru_date(&invoice.period_from),
                ru_date(&invoice.period_to)
            ),
        ),
    ];
    let label_w = 170.0;
    for (label, value) in fields {
        let lines = l.wrap(&value, 10.0, right - MARGIN - label_w);
        for (i, line) in lines.iter().enumerate() {
            l.advance(15.0);
            if i == 0 {
                l.text(MARGIN, 10.0, &format!("{label}:"));
            }
            l.text(MARGIN + label_w, 10.0, line);
        }
    }
    l.advance(24.0);
    l.text(MARGIN, 10.0, "№");
    l.text(MARGIN + 30.0, 10.0, "Наименование");
    l.right(right, 10.0, "Сумма");
    l.advance(5.0);
    l.rule();
    let desc_w = right - MARGIN - 30.0 - 110.0;
    for (i, line) in invoice.lines.iter().enumerate() {
        let wrapped = l.wrap(&line.description, 10.0, desc_w);
        for (j, part) in wrapped.iter().enumerate() {
            l.advance(15.0);
            if j == 0 {
                l.text(MARGIN, 10.0, &(i + 1).to_string());
                l.right(right, 10.0, &format_tenge_human(line.amount_tiyn));
            }
            l.text(MARGIN + 30.0, 10.0, part);
        }
    }
    l.advance(6.0);
    l.rule();
    l.advance(16.0);
    l.text(MARGIN + 30.0, 11.0, "Итого к оплате:");
    l.right(right, 11.0, &format_tenge_human(invoice.amount_tiyn));
    let lines_sum: i64 = invoice.lines.iter().map(|x| x.amount_tiyn).sum();
    if lines_sum != invoice.amount_tiyn && !invoice.lines.is_empty() {
        l.advance(14.0);
        l.text(
            MARGIN + 30.0,
            8.0,
            &format!("Сумма строк: {}", format_tenge_human(lines_sum)),
        );
    }
    l.advance(30.0);
    l.text(
        MARGIN,
        8.0,
        "Сформировано в личном кабинете. Суммы в тенге; 1 ₸ = 100 тиын.",
    );
    let pages = l.page + 1;
    let Layout { runs, rules, .. } = l;
    write_pdf(&face, &runs, &rules, pages, &title)
}

fn write_pdf(
    face: &ttf_parser::Face<'_>,
    runs: &[Run],
    rules: &[Rule],
    pages: usize,
    title: &str,
) -> Result<Vec<u8>, ControlError> {
    // Glyphs used → subset ids (CIDs). Glyph 0 (.notdef) stands for characters without a glyph.
    let mut remapper = subsetter::GlyphRemapper::new();
    let mut to_unicode: BTreeMap<u16, char> = BTreeMap::new();
    for run in runs {
        for c in run.text.chars() {
            let g = face.glyph_index(c).map_or(0, |g| g.0);
            let cid = remapper.remap(g);
            if g != 0 {
                to_unicode.entry(cid).or_insert(c);
            }
        }
    }
    let subset = subsetter::subset(FONT, 0, &remapper)
        .map_err(|e| ControlError::Pdf(format!("font subset: {e:?}")))?;
    let upem = f32::from(face.units_per_em().max(1));
    let scale = |v: f32| v * 1000.0 / upem;
    // `remapped_gids` yields the old glyph of each new id in new-id order: the CID widths.
    let widths: Vec<f32> = remapper
        .remapped_gids()
        .map(|old| {
            scale(f32::from(
                face.glyph_hor_advance(ttf_parser::GlyphId(old))
                    .unwrap_or(0),
            ))
        })
        .collect();

    let mut next = 1;
    let mut alloc = || {
        let r = Ref::new(next);
        next += 1;
        r
    };
    let catalog = alloc();
    let tree = alloc();
    let info = alloc();
    let type0 = alloc();
    let cid_font = alloc();
    let descriptor = alloc();
    let font_file = alloc();
    let cmap = alloc();
    let page_refs: Vec<(Ref, Ref)> = (0..pages).map(|_| (alloc(), alloc())).collect();
    let font_name = Name(b"F1");
    let base = Name(b"QRGNAA+DejaVuSans");

    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids(page_refs.iter().map(|(p, _)| *p))
        .count(i32::try_from(pages).unwrap_or(i32::MAX));
    pdf.document_info(info)
        .title(TextStr(title))
        .producer(TextStr("Qorgan"));

    for (i, (page_id, content_id)) in page_refs.iter().enumerate() {
        let mut page = pdf.page(*page_id);
        page.media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H));
        page.parent(tree);
        page.contents(*content_id);
        page.resources().fonts().pair(font_name, type0);
        page.finish();

        let mut content = Content::new();
        content.set_line_width(0.6);
        for rule in rules.iter().filter(|r| r.page == i) {
            content.move_to(MARGIN, rule.y);
            content.line_to(PAGE_W - MARGIN, rule.y);
            content.stroke();
        }
        for run in runs.iter().filter(|r| r.page == i) {
            let mut encoded = Vec::with_capacity(run.text.len() * 2);
            for c in run.text.chars() {
                let g = face.glyph_index(c).map_or(0, |g| g.0);
                let cid = remapper.get(g).unwrap_or(0);
                encoded.extend_from_slice(&cid.to_be_bytes());
            }
            content.begin_text();
            content.set_font(font_name, run.size);
            content.next_line(run.x, run.y);
            content.show(Str(&encoded));
            content.end_text();
        }
        pdf.stream(*content_id, &content.finish());
    }

    let system = SystemInfo {
        registry: Str(b"Adobe"),
        ordering: Str(b"Identity"),
        supplement: 0,
    };
    pdf.type0_font(type0)
        .base_font(base)
        .encoding_predefined(Name(b"Identity-H"))
        .descendant_font(cid_font)
        .to_unicode(cmap);
    let mut cid = pdf.cid_font(cid_font);
    cid.subtype(CidFontType::Type2)
        .base_font(base)
        .system_info(system)
        .font_descriptor(descriptor)
        .default_width(0.0)
        .cid_to_gid_map_predefined(Name(b"Identity"));
    cid.widths().consecutive(0, widths.iter().copied());
    cid.finish();

    let bbox = face.global_bounding_box();
    pdf.font_descriptor(descriptor)
        .name(base)
        .flags(FontFlags::NON_SYMBOLIC)
        .bbox(Rect::new(
            scale(f32::from(bbox.x_min)),
            scale(f32::from(bbox.y_min)),
            scale(f32::from(bbox.x_max)),
            scale(f32::from(bbox.y_max)),
        ))
        .italic_angle(face.italic_angle())
        .ascent(scale(f32::from(face.ascender())))
        .descent(scale(f32::from(face.descender())))
        .cap_height(scale(f32::from(
            face.capital_height().unwrap_or(face.ascender()),
        )))
        .stem_v(80.0)
        .font_file2(font_file);

    let mut unicode = pdf_writer::types::UnicodeCmap::new(Name(b"Custom"), system);
    for (cid, c) in &to_unicode {
        unicode.pair(*cid, *c);
    }
    pdf.cmap(cmap, &unicode.finish());

    let compressed = deflate(&subset);
    pdf.stream(font_file, &compressed)
        .filter(Filter::FlateDecode)
        .pair(
            Name(b"Length1"),
            i32::try_from(subset.len()).unwrap_or(i32::MAX),
        );

    Ok(pdf.finish())
}

/// Stored ("uncompressed") deflate inside a zlib wrapper: keeps the dependency tree free of a
/// compressor while the stream stays a valid `FlateDecode`. The subset font is small (tens of
/// KiB) so compression would gain little.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 65_535 * 5 + 11);
    out.extend_from_slice(&[0x78, 0x01]);
    let mut chunks = data.chunks(65_535).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        out.push(u8::from(last));
        let len = u16::try_from(chunk.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::{InvoiceKind, InvoiceLine};

    fn invoice(kind: InvoiceKind, lines: usize) -> Invoice {
        Invoice {
            id: 1,
            account_id: 1,
            kind,
            number: "2026-000417".to_owned(),
            issued_on: "2026-11-01".to_owned(),
            period_from: "2026-10-01".to_owned(),
            period_to: "2026-10-31".to_owned(),
            amount_tiyn: 1_512_345 * i64::try_from(lines).unwrap_or(1),
            lines: (0..lines)
                .map(|i| InvoiceLine {
                    description: format!(
                        "Доступ в интернет «Бизнес 100», строка {i}, с очень длинным описанием, которое не помещается в одну строку таблицы"
                    ),
                    amount_tiyn: 1_512_345,
                })
                .collect(),
            corrects_number: (kind == InvoiceKind::Correction).then(|| "2026-000400".to_owned()),
            created_at: 0,
        }
    }

    const PARTIES: InvoiceParties<'static> = InvoiceParties {
        supplier: "ТОО «Qorgan Телеком»",
        customer_name: "Жанұзақова Әсем Серікқызы",
        account_number: "4445",
        contract_number: "4445/10",
        iin_bin: "900101300811",
    };

    /// Text of a PDF through poppler's pdftotext, or `None` when it is not installed.
    fn pdftotext(pdf: &[u8]) -> Option<String> {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("invoice.pdf");
        std::fs::write(&path, pdf).expect("write");
        let out = std::process::Command::new("pdftotext")
            .arg("-enc")
            .arg("UTF-8")
            .arg(&path)
            .arg("-")
            .output()
            .ok()?;
        assert!(
            out.status.success(),
            "pdftotext failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(String::from_utf8(out.stdout).expect("utf8"))
    }

    #[test]
    fn the_pdf_carries_the_number_the_cyrillic_name_and_the_kinds_title() {
        for kind in [
            InvoiceKind::Notice,
            InvoiceKind::Invoice,
            InvoiceKind::OneTime,
            InvoiceKind::Correction,
        ] {
            let pdf = render(&invoice(kind, 3), &PARTIES).expect("render");
            assert!(pdf.starts_with(b"%PDF-"));
            let Some(text) = pdftotext(&pdf) else {
                eprintln!(
                    "pdftotext not installed (Debian poppler-utils): skipping the text check"
                );
                return;
            };
            assert!(text.contains("2026-000417"), "{text}");
            assert!(text.contains("Жанұзақова Әсем Серікқызы"), "{text}");
            assert!(text.contains(kind.title()), "{kind:?}: {text}");
            assert!(text.contains("4445/10"), "{text}");
            assert!(text.contains("01.10.2026"), "{text}");
            assert!(
                text.contains("45\u{a0}370,35\u{a0}₸") || text.contains("45 370,35 ₸"),
                "{text}"
            );
        }
    }

    #[test]
    fn long_invoices_flow_onto_more_pages() {
        let pdf = render(&invoice(InvoiceKind::Invoice, 80), &PARTIES).expect("render");
        let count = String::from_utf8_lossy(&pdf)
            .matches("/Type /Page ")
            .count()
            + String::from_utf8_lossy(&pdf)
                .matches("/Type /Page\n")
                .count();
        assert!(count >= 3, "expected several pages, found {count}");
        if let Some(text) = pdftotext(&pdf) {
            assert!(text.contains("строка 79"));
        }
    }

    #[test]
    fn stored_deflate_is_a_valid_zlib_stream() {
        // Adler-32 of "Wikipedia" is 0x11E60398.
        let z = deflate(b"Wikipedia");
        assert_eq!(&z[z.len() - 4..], &[0x11, 0xE6, 0x03, 0x98]);
        assert_eq!(z.len(), 2 + 5 + 9 + 4);
        let big = vec![7u8; 70_000];
        assert_eq!(deflate(&big).len(), 2 + 5 + 65_535 + 5 + 4_465 + 4);
    }

    #[test]
    fn dates_print_in_russian_order() {
        assert_eq!(ru_date("2026-11-24"), "24.11.2026");
        assert_eq!(ru_date("soon"), "soon");
    }

    /// Render time (run with `--ignored --nocapture`).
    #[test]
    #[ignore = "measurement"]
    fn invoice_render_time() {
        let inv = invoice(InvoiceKind::Invoice, 5);
        let n = 50u32;
        let start = std::time::Instant::now();
        let mut bytes = 0;
        for _ in 0..n {
            bytes = render(&inv, &PARTIES).expect("render").len();
        }
        let per = start.elapsed() / n;
        println!("invoice PDF: {per:?} per render, {bytes} bytes");
    }
}
