//! deskmail-pop3 (being built).
