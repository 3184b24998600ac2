"""Persistence of accounts and order records behind one interface (base.OrderStore)."""
