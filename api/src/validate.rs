//! TODO(skeleton): filled in by the data-model work.
