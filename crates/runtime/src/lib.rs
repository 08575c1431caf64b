//! deskmail-runtime (being built).
