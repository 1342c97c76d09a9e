"""Redis streams, the only way the services talk to each other.

- `topology`: the streams, the consumer groups that read them, where an event is published,
  provisioning (groups at id 0), connecting and publishing.
- `consumer`: the one consumer every service uses and its per-entry policy (bounded deliveries,
  transient errors retried in place, reclaiming a dead consumer's entries, handing back on stop).
- `dead_letters`: how an entry becomes a dead letter, and listing, finding, replaying, discarding them.
- `janitor`: trimming what every group acknowledged and forgetting consumers long gone.
- `report`: what an operator looks at.
"""
