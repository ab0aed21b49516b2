//! Control-plane metrics, registered once in the caller's Prometheus registry (the `/metrics`
//! listener belongs to the binary). Labels are closed sets; never an account or a user.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::error::ControlError;

/// Handles to the control plane's counters (cheap to clone).
#[derive(Clone)]
pub struct Metrics {
    /// Login attempts by result: `ok`, `failed`, `throttled`, `unconfirmed`.
    pub logins: IntCounterVec,
    /// Cabinets claimed by registration.
    pub registrations: IntCounter,
    /// Emails delivered (SMTP or mail folder).
    pub mail_delivered: IntCounter,
    /// Failed delivery attempts (each retry counts).
    pub mail_attempt_failures: IntCounter,
    /// Problems the last ledger reconciliation found (balances that differ from their ledger
    /// plus orphaned payments, orders and ledger rows); anything above 0 wants an operator.
    pub ledger_mismatches: IntGauge,
}

impl Metrics {
    /// Creates and registers the counters.
    pub fn new(registry: &Registry) -> Result<Self, ControlError> {
        let m = Self {
            logins: IntCounterVec::new(
                Opts::new(
                    "qorgan_cabinet_logins_total",
                    "Cabinet login attempts by result",
                ),
                &["result"],
            )?,
            registrations: IntCounter::new(
                "qorgan_cabinet_registrations_total",
                "Cabinets claimed by registration",
            )?,
            mail_delivered: IntCounter::new("qorgan_mail_delivered_total", "Emails delivered")?,
            mail_attempt_failures: IntCounter::new(
                "qorgan_mail_attempt_failures_total",
                "Failed email delivery attempts",
            )?,
            ledger_mismatches: IntGauge::new(
                "qorgan_ledger_mismatches",
                "Balance mismatches and orphaned payment records at the last ledger reconciliation",
            )?,
        };
        registry.register(Box::new(m.logins.clone()))?;
        registry.register(Box::new(m.registrations.clone()))?;
        registry.register(Box::new(m.mail_delivered.clone()))?;
        registry.register(Box::new(m.mail_attempt_failures.clone()))?;
        registry.register(Box::new(m.ledger_mismatches.clone()))?;
        Ok(m)
    }
}
