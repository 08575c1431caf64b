//! deskmail-proto (being built).
