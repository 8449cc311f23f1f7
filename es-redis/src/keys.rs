//! Where the relay writes and the source reads: key names and layout.

/// Which streams the relay writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// One stream for the whole log ([`Keys::all`]). Sources read it.
    #[default]
    All,
    /// One stream per aggregate type (`{prefix}{AggregateType}`), and a head key holding the
    /// last published position (the relay's resume point). No source can read the whole log
    /// back from this layout.
    PerType,
    /// Both: the whole-log stream and the per-type streams, written together by one script
    /// (atomic in Redis), so a crash never leaves one without the other. The resume point is
    /// the whole-log stream's last id.
    Both,
}

impl Layout {
    pub(crate) fn writes_all(self) -> bool {
        !matches!(self, Layout::PerType)
    }

    pub(crate) fn writes_per_type(self) -> bool {
        !matches!(self, Layout::All)
    }

    pub(crate) fn script_name(self) -> &'static str {
        match self {
            Layout::All => "all",
            Layout::PerType => "per-type",
            Layout::Both => "both",
        }
    }
}

/// The key names, all under one prefix (default `events:`):
///
/// | key | what |
/// |---|---|
/// | `{prefix}{AggregateType}` | per-type stream ([`Layout::PerType`], [`Layout::Both`]) |
/// | `{prefix}$all` | the whole log ([`Layout::All`], [`Layout::Both`]); consumer groups of broker-side consumers live on it |
/// | `{prefix}$head` | last published position ([`Layout::PerType`] only) |
/// | `{prefix}$parked:{consumer}` | hash of a broker-side consumer's parked events, by position |
///
/// Keys starting with `$` cannot clash with an aggregate type unless a type's name starts
/// with `$`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Self::new("events:")
    }
}

impl Keys {
    /// Keys under `prefix` (`events:` by default; tests use a unique one).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The stream of one aggregate type: `{prefix}{aggregate_type}`.
    pub fn per_type(&self, aggregate_type: &str) -> String {
        format!("{}{aggregate_type}", self.prefix)
    }

    /// The whole-log stream: `{prefix}$all`.
    pub fn all(&self) -> String {
        format!("{}$all", self.prefix)
    }

    /// The head key of [`Layout::PerType`]: `{prefix}$head`.
    pub fn head(&self) -> String {
        format!("{}$head", self.prefix)
    }

    /// The hash of `consumer`'s parked events: `{prefix}$parked:{consumer}`.
    pub fn parked(&self, consumer: &str) -> String {
        format!("{}$parked:{consumer}", self.prefix)
    }
}
