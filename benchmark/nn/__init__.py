"""Filled by later issues (see ARCHITECTURE section 2)."""
