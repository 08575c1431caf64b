//! Private Dovecot + Postfix per test (being built).
