//! The crate's one error type.

use crate::store::Account;

/// Everything that can go wrong in the control plane: storage and mail failures, and the
/// domain outcomes a use case may refuse with (the API maps each to a status and a code).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// sled failed (I/O, corruption reported by sled itself).
    #[error("storage failure")]
    Storage(#[from] sled::Error),
    /// A stored value could not be decoded.
    #[error("corrupt record in tree {tree}")]
    Corrupt {
        /// The tree holding it.
        tree: &'static str,
        /// Why it could not be decoded.
        #[source]
        source: serde_json::Error,
    },
    /// A stored value has a schema version this build does not know.
    #[error("record in tree {tree} has unknown schema version {version}")]
    UnknownVersion {
        /// The tree holding it.
        tree: &'static str,
        /// The version byte found.
        version: u8,
    },
    /// A value could not be encoded (a bug; kept as an error rather than a panic).
    #[error("cannot encode a record")]
    Encode(#[source] serde_json::Error),
    /// File-system work outside sled (the mail folder).
    #[error("i/o failure on {path}")]
    Io {
        /// The path involved.
        path: std::path::PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The mail transport could not be set up from `mail.smtp`.
    #[error("invalid mail.smtp `{url}`")]
    MailConfig {
        /// The configured URL.
        url: String,
        /// lettre's reason.
        #[source]
        source: lettre::transport::smtp::Error,
    },
    /// An email could not be built (bad address in the outbox).
    #[error("cannot build email {id}: {reason}")]
    MailBuild {
        /// The outbox id.
        id: u64,
        /// What lettre said.
        reason: String,
    },
    /// The HTTP client for captcha verification could not be built.
    #[error("cannot build the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// The HTTP listener failed.
    #[error("http server failure")]
    Serve(#[source] std::io::Error),
    /// A metric could not be registered (a name registered twice in the registry).
    #[error("cannot register metrics")]
    Metrics(#[from] prometheus::Error),
    /// `App::open` was called outside a Tokio runtime.
    #[error("the control plane must be opened inside a Tokio runtime")]
    NoRuntime,
    /// A blocking task panicked or was cancelled.
    #[error("background task failed")]
    Join(#[source] tokio::task::JoinError),
    /// Password hashing failed (parameters or a malformed stored hash).
    #[error("password hashing failed: {0}")]
    Hash(String),

    /// The operator tried to provision an account number that exists; carries the stored record.
    #[error("account {} already exists", .0.account_number)]
    AccountExists(Box<Account>),
    /// The contract number (by key) belongs to another account.
    #[error("contract number already belongs to account {account_number}")]
    ContractTaken {
        /// The account holding it.
        account_number: String,
    },
    /// A network overlaps one that is already mapped.
    #[error("{cidr} overlaps {other_cidr} of account {account_number}")]
    NetworkOverlap {
        /// The requested network.
        cidr: String,
        /// The network it overlaps.
        other_cidr: String,
        /// The account that holds the other network.
        account_number: String,
    },
    /// No such record (account, user, service).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Registration: contract and IIN/BIN do not name one provisioned account.
    #[error("contract and iin/bin do not match a provisioned account")]
    ContractNotMatched,
    /// Registration: the account already has a cabinet.
    #[error("the account already has a cabinet")]
    AlreadyRegistered,
    /// A sub-user's email is in use.
    #[error("email already in use")]
    EmailTaken,
    /// A reset or confirmation token is unknown, used or expired.
    #[error("token invalid, used or expired")]
    TokenInvalid,
    /// The user record changed between read and write (another request won); retry.
    #[error("concurrent change")]
    Conflict,

    /// Billing: an open request of this kind already exists (a second disconnection request
    /// for the same service).
    #[error("an open {0} request already exists")]
    AlreadyRequested(&'static str),
    /// Billing: too many statistics requests are still queued for the account.
    #[error("{open} requests are still open (at most {max})")]
    TooManyOpen {
        /// Open requests now.
        open: usize,
        /// The limit.
        max: usize,
    },
    /// Billing: the operator posted a record whose unique key exists with other content (an
    /// invoice number of the account).
    #[error("{what} {key} already exists with other content")]
    Duplicate {
        /// What kind of record.
        what: &'static str,
        /// Its key.
        key: String,
    },
    /// The payment gateway could not be reached or answered nonsense.
    #[error("payment gateway failure")]
    Gateway(#[from] crate::payments::GatewayError),
    /// The resolver refused a policy (overlapping networks: the store refuses them first).
    #[error("policy not published: {0}")]
    Policy(String),
    /// An invoice PDF could not be rendered (the embedded font could not be subset).
    #[error("cannot render the invoice pdf: {0}")]
    Pdf(String),
}
