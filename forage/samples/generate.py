#!/usr/bin/env python3
"""Writes Forage's bundled sample sources (deterministic: run it again, get the same bytes).

Five feeds with distinct topics in the three formats Forage reads (RSS 2.0, Atom, JSON Feed
1.1), a folder of Markdown notes, and sources.opml listing them. Run from anywhere:
    python3 forage/samples/generate.py
"""
import json
import os
import random
from datetime import datetime, timedelta, timezone
from xml.sax.saxutils import escape, quoteattr

HERE = os.path.dirname(os.path.abspath(__file__))
FEEDS = os.path.join(HERE, "feeds")
ITEMS_PER_FEED = 42
EPOCH = datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc)

TOPICS = {
    "rust": {
        "title": "Rust Systems Weekly",
        "site": "https://rust.example.org",
        "subjects": ["the borrow checker", "async runtimes", "const generics", "unsafe code audits",
                     "error handling with thiserror", "zero-copy parsing", "SIMD intrinsics",
                     "cargo workspaces", "trait objects", "lock-free queues", "embedded HALs",
                     "compile times", "the 2024 edition", "WebAssembly targets"],
        "verbs": ["A practical guide to", "What we learned from", "Benchmarking", "Rethinking",
                  "Debugging", "A deep dive into"],
        "facts": ["The post walks through a real codebase and measures every change.",
                  "It ends with a checklist you can apply to your own crates.",
                  "Several surprising compiler diagnostics are explained along the way.",
                  "The author compares three approaches and explains the trade-offs.",
                  "Profiles show where the time actually goes."],
    },
    "databases": {
        "title": "Storage Engines Digest",
        "site": "https://db.example.org",
        "subjects": ["B-tree page splits", "LSM compaction", "write-ahead logging", "MVCC snapshots",
                     "query planners", "columnar storage", "SQLite in production", "fsync semantics",
                     "secondary indexes", "vector search indexes", "Raft-replicated logs",
                     "crash recovery", "bloom filters", "cost-based optimisation"],
        "verbs": ["How", "Understanding", "The hidden cost of", "Testing", "Designing around",
                  "Lessons from operating"],
        "facts": ["The article includes a crash-consistency test you can run locally.",
                  "Benchmarks compare the approach with a plain sequential scan.",
                  "It explains why the obvious fix loses data after a power cut.",
                  "A small reference implementation accompanies the write-up.",
                  "Diagrams show the on-disk layout byte by byte."],
    },
    "ml": {
        "title": "Applied Machine Learning Notes",
        "site": "https://ml.example.org",
        "subjects": ["sentence embeddings", "contrastive learning", "Thompson sampling",
                     "off-policy evaluation", "gradient checkpointing", "tokenizer quirks",
                     "small language models", "retrieval-augmented generation", "active learning",
                     "calibration curves", "multi-armed bandits", "distillation",
                     "preference data", "evaluation leakage"],
        "verbs": ["An introduction to", "Pitfalls of", "Scaling", "Measuring", "Revisiting",
                  "A field guide to"],
        "facts": ["The notebook reproduces every figure from a fixed seed.",
                  "It contrasts the textbook method with what works on small data.",
                  "Results are reported with confidence intervals, not single runs.",
                  "The authors share the ablations that did not work.",
                  "A short appendix covers the maths behind the update rule."],
    },
    "climate": {
        "title": "Climate and Energy Brief",
        "site": "https://climate.example.org",
        "subjects": ["offshore wind", "grid-scale batteries", "heat pumps", "glacier retreat",
                     "carbon capture", "ocean heat content", "green hydrogen", "rooftop solar",
                     "permafrost thaw", "urban heat islands", "methane leaks", "reforestation",
                     "sea-level projections", "drought monitoring"],
        "verbs": ["New data on", "The economics of", "Mapping", "Why experts debate",
                  "Field report:", "Ten years of"],
        "facts": ["Satellite observations are combined with ground measurements.",
                  "The brief summarises a peer-reviewed study in plain language.",
                  "Regional differences turn out to matter more than the global average.",
                  "Costs have fallen faster than most forecasts assumed.",
                  "Open data sets used in the analysis are linked at the end."],
    },
    "space": {
        "title": "Orbital Mechanics Log",
        "site": "https://space.example.org",
        "subjects": ["reusable boosters", "lunar landers", "exoplanet atmospheres", "solar sails",
                     "the James Webb telescope", "Mars sample return", "cubesat constellations",
                     "gravitational waves", "asteroid deflection", "ion thrusters",
                     "radio astronomy", "space debris", "Europa's ocean", "orbital refuelling"],
        "verbs": ["Inside", "The physics of", "Tracking", "A timeline of", "What comes next for",
                  "Explaining"],
        "facts": ["Mission engineers describe the hardest decisions they faced.",
                  "The piece explains the orbital manoeuvres with simple sketches.",
                  "Telemetry from the latest flight is analysed step by step.",
                  "It compares the plan with earlier missions that failed.",
                  "Amateur observers contributed some of the measurements."],
    },
}


def entries(key, rng):
    t = TOPICS[key]
    seen = set()
    out = []
    while len(out) < ITEMS_PER_FEED:
        title = f"{rng.choice(t['verbs'])} {rng.choice(t['subjects'])}"
        if title in seen:
            title = f"{title}, part {sum(1 for s in seen if s.startswith(title)) + 2}"
        seen.add(title)
        n = len(out)
        summary = " ".join(rng.sample(t["facts"], rng.randint(1, 3)))
        date = EPOCH + timedelta(days=n * 2, hours=rng.randint(0, 20))
        out.append({"n": n, "title": title, "summary": summary, "date": date,
                    "url": f"{t['site']}/posts/{n:03d}", "guid": f"{key}-{n:03d}"})
    return out


def rss(key, items, html):
    t = TOPICS[key]
    parts = [f'<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0">\n<channel>\n'
             f"<title>{escape(t['title'])}</title>\n<link>{t['site']}</link>\n"
             f"<description>Sample feed about {key}</description>\n"]
    for it in items:
        desc = f"<![CDATA[<p>{it['summary']}</p>]]>" if html else escape(it["summary"])
        parts.append(f"<item>\n<title>{escape(it['title'])}</title>\n<link>{it['url']}</link>\n"
                     f"<guid isPermaLink=\"false\">{it['guid']}</guid>\n"
                     f"<pubDate>{it['date'].strftime('%a, %d %b %Y %H:%M:%S +0000')}</pubDate>\n"
                     f"<description>{desc}</description>\n</item>\n")
    parts.append("</channel>\n</rss>\n")
    return "".join(parts)


def atom(key, items):
    t = TOPICS[key]
    updated = items[-1]["date"].strftime("%Y-%m-%dT%H:%M:%SZ")
    parts = [f'<?xml version="1.0" encoding="UTF-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">\n'
             f"<title>{escape(t['title'])}</title>\n<id>{t['site']}/</id>\n<updated>{updated}</updated>\n"
             f'<link href="{t["site"]}/"/>\n']
    for it in items:
        d = it["date"].strftime("%Y-%m-%dT%H:%M:%SZ")
        parts.append(f"<entry>\n<title>{escape(it['title'])}</title>\n<id>urn:forage:{it['guid']}</id>\n"
                     f'<link rel="alternate" href="{it["url"]}"/>\n<published>{d}</published>\n'
                     f"<updated>{d}</updated>\n<author><name>{key.title()} Desk</name></author>\n"
                     f"<summary>{escape(it['summary'])}</summary>\n</entry>\n")
    parts.append("</feed>\n")
    return "".join(parts)


def json_feed(key, items):
    t = TOPICS[key]
    doc = {"version": "https://jsonfeed.org/version/1.1", "title": t["title"], "home_page_url": t["site"],
           "items": [{"id": it["guid"], "url": it["url"], "title": it["title"],
                      "content_text": it["summary"], "summary": it["summary"],
                      "date_published": it["date"].strftime("%Y-%m-%dT%H:%M:%SZ"),
                      "authors": [{"name": "ML Desk"}]} for it in items]}
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


NOTES = [
    ("reading-list", "Reading list", "Papers to read this month: a survey of learned indexes, "
     "the original Thompson sampling paper, and a study of heat pump adoption."),
    ("garden", "Garden log", "Tomatoes planted along the south wall. The compost needs turning every week."),
    ("bread", "Sourdough notes", "Hydration at 75 percent gives an open crumb. Retard the dough overnight."),
    ("cycling", "Cycling routes", "The river loop is forty kilometres and mostly flat. Avoid the bridge on weekends."),
    ("chess", "Chess openings", "The Caro-Kann is solid against e4. Study the endgames before new openings."),
    ("photography", "Photography tips", "Shoot in the hour after sunrise. A polariser helps with water reflections."),
    ("music", "Practice journal", "Scales at 90 bpm, then the second movement slowly. Record and listen back."),
    ("travel", "Trip ideas", "Night trains across the Alps. Book the sleeper cabins three months ahead."),
    ("cooking", "Weeknight recipes", "Lentil soup with cumin and lemon. Roast vegetables on one tray."),
    ("books", "Books finished", "A history of longitude, and a novel about a lighthouse keeper."),
    ("projects", "Side projects", "A tiny feed reader with a bandit that learns which sources I like."),
    ("habits", "Habits", "Walk after lunch. No screens after ten. Write three lines in this journal."),
]


def write(path, text):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def main():
    rng = random.Random(20250106)
    write(os.path.join(FEEDS, "rust.xml"), rss("rust", entries("rust", rng), html=True))
    write(os.path.join(FEEDS, "databases.atom"), atom("databases", entries("databases", rng)))
    write(os.path.join(FEEDS, "ml.json"), json_feed("ml", entries("ml", rng)))
    write(os.path.join(FEEDS, "climate.xml"), rss("climate", entries("climate", rng), html=False))
    write(os.path.join(FEEDS, "space.atom"), atom("space", entries("space", rng)))
    notes = os.path.join(FEEDS, "notes")
    os.makedirs(notes, exist_ok=True)
    for name, title, body in NOTES:
        write(os.path.join(notes, f"{name}.md"), f"# {title}\n\n{body}\n")
    outlines = [("Rust Systems Weekly", "file://feeds/rust.xml"),
                ("Storage Engines Digest", "file://feeds/databases.atom"),
                ("Applied Machine Learning Notes", "file://feeds/ml.json"),
                ("Climate and Energy Brief", "file://feeds/climate.xml"),
                ("Orbital Mechanics Log", "file://feeds/space.atom"),
                ("Notes", "folder://feeds/notes")]
    body = "".join(f"    <outline type=\"rss\" text={quoteattr(t)} xmlUrl={quoteattr(u)}/>\n" for t, u in outlines)
    write(os.path.join(HERE, "sources.opml"),
          '<?xml version="1.0" encoding="UTF-8"?>\n<opml version="2.0">\n<head><title>Forage samples</title></head>\n'
          "<body>\n  <outline text=\"Samples\">\n" + body + "  </outline>\n</body>\n</opml>\n")


if __name__ == "__main__":
    main()
