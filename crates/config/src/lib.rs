//! deskmail-config (being built).
