//! deskmail-sender (being built).
