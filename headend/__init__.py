"""Placeholder: this package is built by a later issue (see ARCHITECTURE.md §2)."""
