//! PostgreSQL database per test (being built).
