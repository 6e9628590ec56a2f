"""`auditor data`: small synthetic datasets in the challenge's shard format, made from text on this machine."""
