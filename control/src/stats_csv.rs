//! The detailed usage statistics that a statistics request (seed 5.2.2) emails as a CSV file.
//!
//! RFC 4180: comma-separated, fields with commas, quotes or line breaks quoted, CRLF line
//! ends, UTF-8. Text that billing typed (service and usage descriptions) is hostile input for a
//! spreadsheet: a cell starting with `=`, `+`, `-`, `@`, tab or CR would be run as a formula
//! when opened, so such text gets a leading `'` (OWASP "CSV injection").

use crate::billing::{parse_date, Attachment, Billing, Period, StatsRequest, UsageRecord};
use crate::error::ControlError;
use crate::money::format_tenge;
use crate::store::{NewEmail, Service, Store};

/// The CSV header line.
pub const HEADER: &str =
    "period_start,period_end,service,description,bytes_in,bytes_out,amount_tiyn,amount_kzt";

/// Quotes a field when needed.
fn field(out: &mut String, value: &str) {
    if value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

/// A text cell: neutralises formula triggers, then quotes.
fn text(out: &mut String, value: &str) {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        field(out, &format!("'{value}"));
    } else {
        field(out, value);
    }
}

/// The CSV of a service's usage rows (header first; an empty period gives the header alone).
pub fn usage_csv(service: &Service, rows: &[UsageRecord]) -> String {
    let mut out = String::with_capacity(64 + rows.len() * 96);
    out.push_str(HEADER);
    out.push_str("\r\n");
    for r in rows {
        field(&mut out, &r.period_start);
        out.push(',');
        field(&mut out, &r.period_end);
        out.push(',');
        text(&mut out, &service.name);
        out.push(',');
        text(&mut out, &r.description);
        out.push(',');
        out.push_str(&r.bytes_in.to_string());
        out.push(',');
        out.push_str(&r.bytes_out.to_string());
        out.push(',');
        out.push_str(&r.amount_tiyn.to_string());
        out.push(',');
        out.push_str(&format_tenge(r.amount_tiyn));
        out.push_str("\r\n");
    }
    out
}

/// The attachment's file name: `usage-<service id>-<from>-<to>.csv`.
pub fn file_name(request: &StatsRequest) -> String {
    format!(
        "usage-{}-{}-{}.csv",
        request.service_id, request.from, request.to
    )
}

/// The email that carries the statistics (the CSV goes with it as an attachment).
pub fn stats_email(request: &StatsRequest, service: &Service, rows: usize) -> NewEmail {
    NewEmail {
        to: request.email_to.clone(),
        subject: format!(
            "Детальная статистика: {} за {} — {}",
            service.name, request.from, request.to
        ),
        body: format!(
            "Здравствуйте!\n\nВо вложении — детальная статистика по услуге «{}» за период с {} по {} \
(файл {}, строк: {rows}).\nФормат: CSV (UTF-8), суммы в тиынах и в тенге.\n\n\
Это письмо отправлено автоматически по запросу из личного кабинета.\n",
            service.name,
            request.from,
            request.to,
            file_name(request)
        ),
    }
}

/// The MIME type of the attachment.
pub const CONTENT_TYPE: &str = "text/csv; charset=utf-8";

/// The background job's pass: builds the CSV of every queued statistics request and queues
/// its email with the attachment (or marks it failed when its service is gone). Returns how
/// many requests finished.
pub fn run_queued(store: &Store, billing: &Billing, now: i64) -> Result<usize, ControlError> {
    let mut done = 0;
    for request in billing.queued_stats_requests()? {
        let service = store
            .services(request.account_id)?
            .into_iter()
            .find(|s| s.id == request.service_id);
        let dates = parse_date("from", &request.from)
            .and_then(|from| parse_date("to", &request.to).map(|to| Period { from, to }));
        let outcome = match (service, dates) {
            (Some(service), Ok(period)) => {
                let rows = billing.usage(service.id, period)?;
                let csv = usage_csv(&service, &rows);
                Ok((
                    stats_email(&request, &service, rows.len()),
                    vec![Attachment {
                        filename: file_name(&request),
                        content_type: CONTENT_TYPE.to_owned(),
                        content: csv,
                    }],
                ))
            }
            (None, _) => Err("услуга не найдена".to_owned()),
            (_, Err(r)) => Err(r.message),
        };
        if billing.finish_stats_request(&request, outcome, now)? {
            done += 1;
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::StatsStatus;
    use crate::store::ServiceStatus;

    fn service(name: &str) -> Service {
        Service {
            id: 5,
            account_id: 1,
            kind: "internet".to_owned(),
            name: name.to_owned(),
            monthly_fee_tiyn: 0,
            status: ServiceStatus::Active,
            created_at: 0,
        }
    }

    fn row(description: &str, amount: i64) -> UsageRecord {
        UsageRecord {
            id: 1,
            service_id: 5,
            period_start: "2026-10-01".to_owned(),
            period_end: "2026-10-31".to_owned(),
            bytes_in: 1_000,
            bytes_out: 20,
            amount_tiyn: amount,
            description: description.to_owned(),
        }
    }

    #[test]
    fn rows_follow_the_header_with_crlf_and_both_amount_forms() {
        let csv = usage_csv(&service("Бизнес 100"), &[row("трафик", 150_000)]);
        assert_eq!(
            csv,
            format!(
                "{HEADER}\r\n2026-10-01,2026-10-31,Бизнес 100,трафик,1000,20,150000,1500.00\r\n"
            )
        );
    }

    #[test]
    fn commas_quotes_and_line_breaks_are_quoted() {
        let csv = usage_csv(&service("Тариф \"А\", ночной"), &[row("две\nстроки", 1)]);
        assert!(csv.contains("\"Тариф \"\"А\"\", ночной\""), "{csv}");
        assert!(csv.contains("\"две\nстроки\""), "{csv}");
    }

    #[test]
    fn formula_triggers_in_text_are_neutralised() {
        let csv = usage_csv(&service("=HYPERLINK(\"x\")"), &[row("@SUM(A1)", -5)]);
        assert!(csv.contains("\"'=HYPERLINK(\"\"x\"\")\""), "{csv}");
        assert!(csv.contains(",'@SUM(A1),"), "{csv}");
        assert!(csv.contains(",-5,-0.05\r\n"), "numbers stay numbers: {csv}");
    }

    #[test]
    fn the_email_names_the_service_period_and_file() {
        let req = StatsRequest {
            id: 9,
            account_id: 1,
            user_id: 2,
            service_id: 5,
            from: "2026-10-01".to_owned(),
            to: "2026-10-31".to_owned(),
            email_to: "a@b.kz".to_owned(),
            status: StatsStatus::Queued,
            error: None,
            created_at: 0,
            finished_at: None,
        };
        let mail = stats_email(&req, &service("Бизнес 100"), 3);
        assert_eq!(mail.to, "a@b.kz");
        assert!(mail.subject.contains("Бизнес 100"));
        assert!(mail.body.contains("usage-5-2026-10-01-2026-10-31.csv"));
        assert!(mail.body.contains("строк: 3"));
    }

    #[test]
    fn the_job_mails_each_queued_request_once_with_its_csv() {
        let store = Store::temporary().expect("store");
        let acc = store
            .create_account(
                crate::store::NewAccount {
                    account_number: "1".to_owned(),
                    contract_number: "A".to_owned(),
                    contract_key: "A".to_owned(),
                    iin_bin: "940140000385".to_owned(),
                    name: "x".to_owned(),
                    company: None,
                },
                0,
            )
            .expect("account");
        let svc = store
            .add_service(acc.id, "internet".to_owned(), "Бизнес 100".to_owned(), 0, 0)
            .expect("service");
        let db = sled::Config::new().temporary(true).open().expect("db");
        let billing = Billing::open(&db).expect("billing");
        let d = |s: &str| parse_date("d", s).expect("date");
        let oct = Period {
            from: d("2026-10-01"),
            to: d("2026-10-31"),
        };
        billing
            .add_usage(svc.id, oct, 5, 6, 700, "трафик".to_owned())
            .expect("usage");
        billing
            .queue_stats_request(acc.id, 9, svc.id, oct, "a@b.kz", 1)
            .expect("q");
        billing
            .queue_stats_request(acc.id, 9, 999, oct, "a@b.kz", 1)
            .expect("q");
        assert_eq!(run_queued(&store, &billing, 2).expect("run"), 2);
        assert_eq!(run_queued(&store, &billing, 3).expect("run"), 0);
        let reqs = billing.stats_requests(acc.id).expect("list");
        let sent: Vec<_> = reqs
            .iter()
            .filter(|r| r.status == StatsStatus::Sent)
            .collect();
        assert_eq!(sent.len(), 1);
        assert_eq!(
            reqs.iter()
                .filter(|r| r.status == StatsStatus::Failed)
                .count(),
            1
        );
        let mail_id = db
            .open_tree("outbox")
            .expect("t")
            .iter()
            .next()
            .expect("one")
            .expect("r")
            .0;
        let id = u64::from_be_bytes(<[u8; 8]>::try_from(&mail_id[..8]).expect("8"));
        let files = billing.attachments(id).expect("att");
        assert_eq!(files.len(), 1);
        assert!(
            files[0].content.contains(",трафик,5,6,700,7.00"),
            "{:?}",
            files[0]
        );
    }
}
