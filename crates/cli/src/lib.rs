//! deskmail-cli (being built).
