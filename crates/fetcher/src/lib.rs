//! deskmail-fetcher (being built).
