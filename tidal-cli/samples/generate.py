#!/usr/bin/env python3
"""Generates signals.ndjson, the sample `tidal demo` ingests. Deterministic (fixed seed).

40 users browse 200 articles in sessions; each session numbers its signals (session_seq),
and every line carries an idempotency key, so ingesting the file twice changes nothing.
Users lean towards a few topics, so the aggregates and hard negatives have structure.
"""
import json
import random

rng = random.Random(8)
TOPICS = ["rust", "databases", "ml", "climate", "space"]
ARTICLES = [(f"article-{i}", TOPICS[i % len(TOPICS)]) for i in range(1, 201)]
lines = []
n = 0
for u in range(1, 41):
    user = f"user-{u}"
    liked = set(rng.sample(TOPICS, 2))
    for s in range(1, rng.randint(2, 5) + 1):
        session = f"{user}-s{s}"
        for article, topic in rng.sample(ARTICLES, rng.randint(5, 15)):
            events = [("impression", 1.0)]
            if topic in liked and rng.random() < 0.7:
                events += [("click", 1.0), ("dwell", round(rng.uniform(20, 300), 1))]
                if rng.random() < 0.5:
                    events.append(("like", 1.0))
                if rng.random() < 0.2:
                    events.append(("rating", float(rng.randint(6, 10))))
            elif rng.random() < 0.4:
                events.append((rng.choice(["skip", "dislike"]), 1.0))
            for kind, value in events:
                n += 1
                lines.append({"user": user, "session": session, "item": article,
                              "kind": kind, "value": value, "source": f"feed-{topic}",
                              "context": f"{session}-slate", "idempotency_key": f"demo-{n}"})
# Number each session's signals 1, 2, 3... in file order (the SeqNo).
counters = {}
out = []
for sig in lines:
    key = (sig["user"], sig["session"])
    counters[key] = counters.get(key, 0) + 1
    sig = {**sig, "session_seq": counters[key]}
    out.append(json.dumps(sig, separators=(",", ":")))
with open("signals.ndjson", "w") as f:
    f.write("\n".join(out) + "\n")
print(f"{len(out)} signals")
