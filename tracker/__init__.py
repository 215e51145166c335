"""The tracker: authenticates peers, lists live workers for bosses, keeps the audit log."""
