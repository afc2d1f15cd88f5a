//! Helpers shared by the real-plugin tests.
