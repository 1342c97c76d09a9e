"""`make bench`: referral throughput and latency on this machine, each figure beside a raw
Redis relay measured in the same run (see bench/README.md)."""
