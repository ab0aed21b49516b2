//! Outgoing mail: the texts (Russian, text/plain UTF-8) and the background sender that drains
//! the persisted outbox.
//!
//! An email is never sent from a request handler: the handler writes it into the outbox in the
//! same store transaction as the change it reports, and wakes the sender. The sender delivers
//! through SMTP (lettre) when `mail.smtp` is set, else writes an RFC 5322 `.eml` file under
//! `<data_dir>/mail/`; failures are retried with exponential backoff up to `mail.max_attempts`.
//! A delivered email's body is erased from the outbox (it may carry a password): the copy that
//! stays is the one the recipient got.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Attachment as MailAttachment, Body, Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::error::ControlError;
use crate::metrics::Metrics;
use crate::store::{MailStatus, NewEmail, OutboxEmail, Store};
use crate::{now_ms, now_secs};

/// Joins the configured public base URL and a path (the base may end in `/`).
pub fn link(public_url: &str, path_and_query: &str) -> String {
    format!("{}{}", public_url.trim_end_matches('/'), path_and_query)
}

/// The welcome email of seed Рисунок 6: the login link and the two credential lines.
pub fn welcome(to: &str, public_url: &str, login: &str, password: &str) -> NewEmail {
    NewEmail {
        to: to.to_owned(),
        subject: "Регистрация в личном кабинете".to_owned(),
        body: format!(
            "Поздравляем Вас с успешной регистрацией в личном кабинете!\n\
             \n\
             Для входа в систему перейдите по ссылке: {url}\n\
             \n\
             Данные для входа в систему\n\
             Имя пользователя: {login}\n\
             Пароль: {password}\n\
             \n\
             В целях безопасности рекомендуем Вам сменить пароль в разделе \
             «Мой профиль» -> «Сменить пароль».\n",
            url = link(public_url, "/"),
        ),
    }
}

/// The password reset email: a single-use link that expires.
pub fn reset(to: &str, public_url: &str, token: &str, ttl_secs: u64) -> NewEmail {
    NewEmail {
        to: to.to_owned(),
        subject: "Восстановление пароля в личном кабинете".to_owned(),
        body: format!(
            "Здравствуйте!\n\
             \n\
             Кто-то (возможно, Вы) запросил восстановление пароля в личном кабинете.\n\
             Чтобы задать новый пароль, перейдите по ссылке:\n\
             {url}\n\
             \n\
             Ссылка действует {minutes} мин. и только один раз. Если Вы не запрашивали \
             восстановление, просто проигнорируйте это письмо: пароль останется прежним.\n",
            url = link(public_url, &format!("/reset-password?token={token}")),
            minutes = ttl_secs / 60,
        ),
    }
}

/// The sub-user invitation: the confirmation link, and the credential lines when the password
/// was generated.
pub fn sub_user(
    to: &str,
    public_url: &str,
    token: &str,
    generated_password: Option<&str>,
) -> NewEmail {
    let credentials = match generated_password {
        Some(p) => format!("\nДанные для входа в систему\nИмя пользователя: {to}\nПароль: {p}\n"),
        None => String::new(),
    };
    NewEmail {
        to: to.to_owned(),
        subject: "Подтверждение email для личного кабинета".to_owned(),
        body: format!(
            "Здравствуйте!\n\
             \n\
             Для Вас создан пользователь личного кабинета. Чтобы подтвердить email и \
             включить вход, перейдите по ссылке:\n\
             {url}\n\
             {credentials}\n\
             Вход в личный кабинет: {login_url}\n",
            url = link(public_url, &format!("/confirm-email?token={token}")),
            login_url = link(public_url, "/"),
        ),
    }
}

/// A password generated for an existing sub-user by the user above it.
pub fn new_password(to: &str, public_url: &str, password: &str) -> NewEmail {
    NewEmail {
        to: to.to_owned(),
        subject: "Новый пароль для личного кабинета".to_owned(),
        body: format!(
            "Здравствуйте!\n\
             \n\
             Для Вас сгенерирован новый пароль личного кабинета.\n\
             \n\
             Данные для входа в систему\n\
             Имя пользователя: {to}\n\
             Пароль: {password}\n\
             \n\
             Вход в личный кабинет: {url}\n",
            url = link(public_url, "/"),
        ),
    }
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Folder(PathBuf),
}

/// The background sender. Build it with [`MailSender::new`], then `tokio::spawn(sender.run(..))`.
pub struct MailSender {
    store: Store,
    transport: Transport,
    from: Mailbox,
    max_attempts: u32,
    backoff_base: Duration,
    notify: Arc<Notify>,
    metrics: Metrics,
}

impl MailSender {
    /// Sets up delivery from `[mail]`: SMTP for `smtp://` and `smtps://` URLs, else the mail
    /// folder `<data_dir>/mail/` (created here, so a permission problem shows at startup).
    pub fn new(
        config: &qorgan_config::Config,
        store: Store,
        notify: Arc<Notify>,
        backoff_base: Duration,
        metrics: Metrics,
    ) -> Result<Self, ControlError> {
        let from: Mailbox =
            config
                .mail
                .from
                .parse()
                .map_err(|e: lettre::address::AddressError| ControlError::MailBuild {
                    id: 0,
                    reason: format!("mail.from: {e}"),
                })?;
        let transport = if config.mail.smtp.is_empty() {
            let dir = config.storage.data_dir.join("mail");
            std::fs::create_dir_all(&dir).map_err(|source| ControlError::Io {
                path: dir.clone(),
                source,
            })?;
            Transport::Folder(dir)
        } else {
            let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(&config.mail.smtp)
                .map_err(|source| ControlError::MailConfig {
                    url: config.mail.smtp.clone(),
                    source,
                })?;
            Transport::Smtp(builder.timeout(Some(Duration::from_secs(15))).build())
        };
        Ok(Self {
            store,
            transport,
            from,
            max_attempts: config.mail.max_attempts,
            backoff_base,
            notify,
            metrics,
        })
    }

    /// Delivers due emails until `cancel` fires; sleeps until the next retry is due or a new
    /// email is queued (the notify).
    pub async fn run(self, cancel: CancellationToken) {
        let mut last_purge = 0i64;
        loop {
            let now = now_ms();
            let wait = match self.store.due_emails(now, 32) {
                Ok((due, next)) => {
                    let had_work = !due.is_empty();
                    for email in due {
                        if cancel.is_cancelled() {
                            return;
                        }
                        self.attempt(email).await;
                    }
                    if had_work {
                        continue;
                    }
                    next.map_or(30_000, |n| (n - now).clamp(10, 30_000))
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox");
                    5_000
                }
            };
            let now_s = now_secs();
            if now_s - last_purge > 600 {
                last_purge = now_s;
                if let Err(e) = self.store.purge_expired(now_s) {
                    tracing::warn!(error = %e, "cannot purge expired sessions and tokens");
                }
            }
            let wait = Duration::from_millis(u64::try_from(wait).unwrap_or(1_000));
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.notify.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn attempt(&self, mut email: OutboxEmail) {
        email.attempts += 1;
        match self.deliver(&email).await {
            Ok(()) => {
                email.status = MailStatus::Sent;
                email.sent_at = Some(now_secs());
                email.last_error = None;
                email.body.clear();
                if let Err(e) = self.store.billing().remove_attachments(email.id) {
                    tracing::warn!(id = email.id, error = %e, "cannot drop the attachments of a sent email");
                }
                self.metrics.mail_delivered.inc();
                tracing::info!(id = email.id, "email delivered");
            }
            Err(reason) => {
                self.metrics.mail_attempt_failures.inc();
                if email.attempts >= self.max_attempts {
                    email.status = MailStatus::Failed;
                    tracing::error!(id = email.id, attempts = email.attempts, %reason, "email given up");
                } else {
                    let factor = 1u32
                        .checked_shl(email.attempts.saturating_sub(1).min(20))
                        .unwrap_or(u32::MAX);
                    let delay = self
                        .backoff_base
                        .saturating_mul(factor)
                        .min(Duration::from_secs(3600));
                    email.next_attempt_ms =
                        now_ms() + i64::try_from(delay.as_millis()).unwrap_or(3_600_000);
                    tracing::warn!(id = email.id, attempts = email.attempts, %reason, ?delay, "email delivery failed; will retry");
                }
                email.last_error = Some(reason);
            }
        }
        if let Err(e) = self.store.update_email(&email) {
            tracing::error!(id = email.id, error = %e, "cannot record email delivery state");
        }
    }

    fn build(&self, email: &OutboxEmail) -> Result<Message, String> {
        let to: Mailbox = email
            .to
            .parse()
            .map_err(|e| format!("bad recipient: {e}"))?;
        let body = Body::new_with_encoding(email.body.clone(), ContentTransferEncoding::Base64)
            .map_err(|_| "cannot encode body".to_owned())?;
        let domain = self.from.email.domain().to_owned();
        let files = self
            .store
            .billing()
            .attachments(email.id)
            .map_err(|e| format!("cannot read attachments: {e}"))?;
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject.clone())
            .message_id(Some(format!("<qorgan.{}@{}>", email.id, domain)));
        if files.is_empty() {
            return builder
                .header(ContentType::TEXT_PLAIN)
                .body(body)
                .map_err(|e| format!("cannot build message: {e}"));
        }
        // With attachments (the statistics CSV): multipart/mixed, the text part first.
        let mut parts = MultiPart::mixed().singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .body(body),
        );
        for f in files {
            let content_type = ContentType::parse(&f.content_type)
                .map_err(|e| format!("attachment content type: {e}"))?;
            let content =
                Body::new_with_encoding(f.content.into_bytes(), ContentTransferEncoding::Base64)
                    .map_err(|_| "cannot encode attachment".to_owned())?;
            parts = parts.singlepart(MailAttachment::new(f.filename).body(content, content_type));
        }
        builder
            .multipart(parts)
            .map_err(|e| format!("cannot build message: {e}"))
    }

    async fn deliver(&self, email: &OutboxEmail) -> Result<(), String> {
        let message = self.build(email)?;
        match &self.transport {
            Transport::Smtp(smtp) => smtp
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Transport::Folder(dir) => {
                let bytes = message.formatted();
                let name = format!("{:020}.eml", email.id);
                let tmp = dir.join(format!(".{name}.tmp"));
                let path = dir.join(name);
                tokio::fs::write(&tmp, &bytes)
                    .await
                    .map_err(|e| format!("{}: {e}", tmp.display()))?;
                tokio::fs::rename(&tmp, &path)
                    .await
                    .map_err(|e| format!("{}: {e}", path.display()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welcome_email_carries_the_two_exact_lines_and_the_configured_link() {
        let e = welcome(
            "a@b.kz",
            "https://cabinet.example.kz/",
            "4445",
            "Secr3tPassw0rd",
        );
        assert!(e.body.lines().any(|l| l == "Имя пользователя: 4445"));
        assert!(e.body.lines().any(|l| l == "Пароль: Secr3tPassw0rd"));
        assert!(e.body.contains("по ссылке: https://cabinet.example.kz/\n"));
    }

    #[test]
    fn sub_user_email_has_credentials_only_when_generated() {
        let with = sub_user("s@b.kz", "http://x", "TOKEN", Some("Gen3rated"));
        assert!(with.body.lines().any(|l| l == "Имя пользователя: s@b.kz"));
        assert!(with.body.lines().any(|l| l == "Пароль: Gen3rated"));
        assert!(with.body.contains("http://x/confirm-email?token=TOKEN"));
        let without = sub_user("s@b.kz", "http://x", "TOKEN", None);
        assert!(!without.body.contains("Пароль:"));
    }

    #[tokio::test]
    async fn folder_transport_writes_an_rfc5322_file_and_marks_the_email_sent() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut config = qorgan_config::Config::default();
        config.storage.data_dir = dir.path().to_owned();
        let store = Store::temporary().expect("store");
        let registry = prometheus::Registry::new();
        let metrics = Metrics::new(&registry).expect("metrics");
        let queued = store
            .queue_email(
                welcome("a@b.kz", "http://x", "4445", "Pw-1234567890"),
                now_secs(),
            )
            .expect("queue");
        let sender = MailSender::new(
            &config,
            store.clone(),
            Arc::new(Notify::new()),
            Duration::from_millis(10),
            metrics,
        )
        .expect("sender");
        let cancel = CancellationToken::new();
        let task = tokio::spawn(sender.run(cancel.clone()));
        let path = dir
            .path()
            .join("mail")
            .join(format!("{:020}.eml", queued.id));
        for _ in 0..200 {
            if path.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cancel.cancel();
        task.await.expect("join");
        let text = std::fs::read_to_string(&path).expect("eml written");
        assert!(text.contains("To: a@b.kz"), "{text}");
        assert!(
            text.contains("Content-Type: text/plain; charset=utf-8"),
            "{text}"
        );
        assert!(text.contains("Content-Transfer-Encoding: base64"), "{text}");
        let stored = store.outbox().expect("outbox");
        assert_eq!(stored[0].status, MailStatus::Sent);
        assert!(
            stored[0].body.is_empty(),
            "the password leaves the store once delivered"
        );
    }
}
