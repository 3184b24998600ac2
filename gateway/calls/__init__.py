"""The use cases: authentication and the order calls, over a store. Transport-free."""
