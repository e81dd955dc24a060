//! Parsers for /proc sources.
