use std::fmt;

/// The stable id of an inbound mail at its source, carried as the AMQP `message_id`:
/// `imap:<mailbox>:<uidvalidity>:<uid>` or `pop3:<mailbox>:<uidl>`. The router treats an id
/// it has already processed as done, so re-fetching a mail never makes a second article.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct SourceId(String);

impl SourceId {
    pub fn imap(mailbox: &str, uid_validity: u32, uid: u32) -> Self {
        Self(format!("imap:{mailbox}:{uid_validity}:{uid}"))
    }

    pub fn pop3(mailbox: &str, uidl: &str) -> Self {
        Self(format!("pop3:{mailbox}:{uidl}"))
    }

    /// Any other source (tests, replays), kept as given.
    pub fn other(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_of_the_design() {
        assert_eq!(SourceId::imap("mbx1", 7, 42).as_str(), "imap:mbx1:7:42");
        assert_eq!(SourceId::pop3("mbx1", "000001a").as_str(), "pop3:mbx1:000001a");
    }
}
