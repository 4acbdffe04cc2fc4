"""Templates for documents read by LPSE and LKPP management, in Bahasa Indonesia (notices, reports)."""
