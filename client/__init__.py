"""The peer-to-peer side: the boss (splits, hands out, joins) and the workers (encode)."""
