"""The parts of bench/compare.py: targets (sink, relays, Postfix, the peer, heed), load, report."""
