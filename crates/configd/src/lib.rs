//! deskmail-configd (being built).
