//! deskmail-mailconn (being built).
